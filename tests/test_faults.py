"""Cluster faults: each ends in one line and exit code 1 (2 for usage), in bounded time.

Real processes throughout: ``python -m tilesky.cli`` in a subprocess, real
Zarr stores, the local ``distributed`` cluster that tilesky starts, a fake
scheduler (a socket that accepts and never answers), a worker process
killed by its nanny at a memory limit and one killed with SIGKILL (as the
kernel's OOM killer does).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import psutil
import pytest
import zarr
from _cli import mute_listener

from tilesky.cluster import ClusterError, execution

pytestmark = pytest.mark.timeout(60)

#: Bounded waits for one CLI process on the loaded 2-core test machine.
RUN_TIMEOUT = 40


def _cli(*argv: str) -> list[str]:
    return [sys.executable, "-m", "tilesky.cli", *argv]


def _run(*argv: str, env: dict | None = None, timeout: float = RUN_TIMEOUT):
    return subprocess.run(
        _cli(*argv),
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        env=dict(os.environ, **(env or {})),
        timeout=timeout,
    )


def _assert_one_error_line(stderr: str, pattern: str) -> str:
    """Stderr is tilesky's own lines, one of them the error; no log, no traceback."""
    lines = stderr.strip().splitlines()
    assert "Traceback" not in stderr, stderr
    assert all(line.startswith("tilesky: ") for line in lines), stderr
    errors = [line for line in lines if line.startswith("tilesky: error: ")]
    assert len(errors) == 1, stderr
    assert re.search(pattern, errors[0]), errors[0]
    return errors[0]


def _noise_zarr(path: Path, shape=(300, 300), chunks=(100, 100)) -> Path:
    rng = np.random.default_rng(0)
    z = zarr.create_array(str(path), shape=shape, chunks=chunks, dtype="float32")
    z[:] = rng.normal(100.0, 5.0, shape).astype(np.float32)
    return path


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> Path:
    # One chunk: few tiles, so that a run with worker processes is short.
    return _noise_zarr(
        tmp_path_factory.mktemp("faults") / "scene.zarr", chunks=(300, 300)
    )


# -- --workers below 1 --------------------------------------------------------


@pytest.mark.parametrize("count", ["0", "-1"])
def test_workers_below_one_is_refused_at_once(scene, tmp_path, count):
    """A local cluster without workers would wait for one forever."""
    start = time.monotonic()
    proc = _run("run", str(scene), str(tmp_path / "out.zarr"), f"--workers={count}")
    assert time.monotonic() - start < 15
    assert proc.returncode == 2, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert re.search(r"--workers.*1 or more", last), proc.stderr
    assert not (tmp_path / "out.zarr").exists()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"n_workers": 0},
        {"n_workers": -1},
        {"n_workers": True},
        {"threads_per_worker": 0},
    ],
)
def test_execution_refuses_counts_below_one(kwargs):
    name = next(iter(kwargs))
    with pytest.raises(ValueError, match=rf"{name} must be a positive integer"):
        with execution(None, announce=lambda msg: None, **kwargs):
            pass


# -- listening sockets ----------------------------------------------------------


def _listening(pids) -> set[tuple[int, str, int]]:
    """(pid, ip, port) of every listening inet socket of these processes."""
    found = set()
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            for conn in psutil.Process(pid).net_connections(kind="inet"):
                if conn.status == psutil.CONN_LISTEN:
                    found.add((pid, conn.laddr.ip, conn.laddr.port))
    return found


def _tree(pid: int) -> list[int]:
    try:
        return [pid, *(p.pid for p in psutil.Process(pid).children(recursive=True))]
    except psutil.Error:
        return []


def _is_loopback(ip: str) -> bool:
    return ip == "::1" or ip.startswith("127.")


@pytest.mark.parametrize("workers", [[], ["--workers", "2"]], ids=["default", "2"])
def test_a_run_listens_on_loopback_only(scene, tmp_path, workers):
    """Every socket a run listens on, in its process and its workers', is
    on 127.0.0.1 (distributed binds an in-process worker's HTTP server,
    health and metrics, to every interface unless told otherwise)."""
    proc = subprocess.Popen(
        _cli("run", str(scene), str(tmp_path / "out.zarr"), "--no-report", *workers),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    seen: set[tuple[int, str, int]] = set()
    deadline = time.monotonic() + RUN_TIMEOUT
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            seen |= _listening(_tree(proc.pid))
            time.sleep(0.05)
    finally:
        proc.kill()
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    # The scheduler's dashboard at least (and each worker process's sockets).
    assert len(seen) >= (2 if not workers else 6), seen
    assert all(_is_loopback(ip) for _, ip, _ in seen), seen


@pytest.mark.parametrize("n_workers", [None, 1])
def test_cluster_without_dashboard_listens_on_loopback_only(n_workers):
    """Without a dashboard the scheduler still serves health and metrics over
    HTTP (distributed's default: port 8787 on every interface)."""
    me = os.getpid()
    before = _listening(_tree(me))
    with execution(
        None, n_workers=n_workers, dashboard=False, announce=lambda msg: None
    ) as ctx:
        assert ctx.client.submit(sum, [1, 2]).result(timeout=30) == 3
        opened = _listening(_tree(me)) - before
    assert opened, "the cluster opened no listening socket"
    assert all(_is_loopback(ip) for _, ip, _ in opened), opened


# -- a scheduler that never answers --------------------------------------------


@pytest.fixture
def mute_server():
    """tcp://127.0.0.1:PORT that accepts connections and never sends a byte."""
    with mute_listener() as (port, _):
        yield f"tcp://127.0.0.1:{port}"


def test_scheduler_that_never_answers_ends_in_one_line(scene, tmp_path, mute_server):
    start = time.monotonic()
    proc = _run(
        "run",
        str(scene),
        str(tmp_path / "out.zarr"),
        "--scheduler",
        mute_server,
        env={"DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT": "3s"},
        timeout=30,
    )
    assert time.monotonic() - start < 20
    assert proc.returncode == 1, proc.stderr
    line = _assert_one_error_line(proc.stderr, r"did not answer within 3 s")
    assert mute_server in line
    assert not (tmp_path / "out.zarr").exists()


def test_execution_bounds_the_wait_for_a_mute_scheduler(mute_server):
    import dask

    start = time.monotonic()
    with dask.config.set({"distributed.comm.timeouts.connect": "2s"}):
        with pytest.raises(ClusterError, match="did not answer within 2 s"):
            with execution(mute_server, announce=lambda msg: None):
                pass
    assert time.monotonic() - start < 15


# -- an error inside a task -----------------------------------------------------


@pytest.fixture(scope="module")
def corrupt_scene(tmp_path_factory) -> Path:
    """A Zarr image with one chunk file truncated after it was written.

    8400 x 8400 pixels: above the size whose first pass (any finite pixel)
    tilesky reduces in its own process, so the read fails inside a task on
    the cluster. Nearly constant, it compresses to a few kilobytes.
    """
    path = tmp_path_factory.mktemp("corrupt") / "scene.zarr"
    image = np.zeros((8400, 8400), np.uint8)
    image[::7, ::5] = 3
    z = zarr.create_array(str(path), shape=image.shape, chunks=(2100, 2100), dtype="u1")
    z[:] = image
    chunk = path / "c" / "2" / "2"
    chunk.write_bytes(chunk.read_bytes()[:10])
    return path


@pytest.mark.parametrize("workers", [[], ["--workers", "1"]], ids=["default", "1"])
def test_task_error_on_the_local_cluster_is_one_line(corrupt_scene, tmp_path, workers):
    """distributed logs each failed task with its traceback ("Compute Failed")
    on the worker's stderr, which is the run's own."""
    out = tmp_path / "out.zarr"
    proc = _run("run", str(corrupt_scene), str(out), "--no-report", *workers)
    assert proc.returncode == 1, proc.stderr
    assert "Compute Failed" not in proc.stderr
    _assert_one_error_line(proc.stderr, r"cannot read rows 4200:6300.*may be corrupt")


# -- a worker that dies ---------------------------------------------------------


def test_worker_killed_at_its_memory_limit_gives_a_memory_hint(tmp_path):
    """The nanny kills its worker at ``terminate`` x the memory limit.

    The limit set here (450 MB of resident memory) is about 180 MB above a
    worker process that has imported tilesky (measured: 270 MB), which a
    4500 x 4500 run exceeds in its first stages (it peaks at 825 MB).
    """
    from distributed.worker_memory import parse_memory_limit

    scene = _noise_zarr(tmp_path / "scene.zarr", (4500, 4500), (1500, 1500))
    # The limit of the one single-threaded worker process of --workers 1.
    limit = parse_memory_limit("auto", 1, logger=None)
    env = {
        "DASK_DISTRIBUTED__WORKER__MEMORY__TERMINATE": str(450 * 2**20 / limit),
        "DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES": "0",
    }
    out = tmp_path / "out.zarr"
    proc = _run("run", str(scene), str(out), "--no-report", "--workers", "1", env=env)
    assert proc.returncode == 1, proc.stderr
    assert "KilledWorker" not in proc.stderr
    assert "marked as failed" not in proc.stderr
    _assert_one_error_line(
        proc.stderr, r"a worker died .*\(out of memory\?\).*--resume"
    )


def test_worker_killed_by_a_signal_gives_a_memory_hint(tmp_path):
    """SIGKILL, as the kernel's OOM killer sends, while the worker has tasks."""
    scene = _noise_zarr(tmp_path / "scene.zarr", (3000, 3000), (1000, 1000))
    err_path = tmp_path / "stderr.txt"
    env = dict(os.environ, DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES="0")
    argv = ["run", str(scene), str(tmp_path / "out.zarr"), "--no-report"]
    with open(err_path, "w") as err:
        proc = subprocess.Popen(
            _cli(*argv, "--workers", "1"),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
            env=env,
        )
        try:
            port = _wait_for(
                lambda: re.search(
                    r"dashboard: http://127.0.0.1:(\d+)/", err_path.read_text()
                ),
                proc,
            ).group(1)
            _wait_for(lambda: _processing(port), proc)
            workers = [
                p
                for p in psutil.Process(proc.pid).children(recursive=True)
                if any("spawn_main" in part for part in p.cmdline())
            ]
            assert len(workers) == 1, workers
            os.kill(workers[0].pid, signal.SIGKILL)
            code = proc.wait(timeout=RUN_TIMEOUT)
        finally:
            proc.kill()
            proc.wait(timeout=30)
    stderr = err_path.read_text()
    assert code == 1, stderr
    assert "KilledWorker" not in stderr
    assert "marked as failed" not in stderr
    _assert_one_error_line(stderr, r"a worker died .*\(out of memory\?\)")


def _processing(port: str) -> int:
    """Tasks the scheduler has handed to workers (its dashboard's counts)."""
    url = f"http://127.0.0.1:{port}/json/counts.json"
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.load(response)["processing"]


def _wait_for(predicate, proc: subprocess.Popen, timeout: float = 20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the run ended before the worker was killed"
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    pytest.fail(f"timed out after {timeout} s")

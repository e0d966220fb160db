"""A scheduler or worker lost mid-run: one line, the store kept, --resume finishes.

Real processes: a ``dask scheduler`` and a ``dask worker`` on loopback, a
``tilesky run --scheduler`` against them, SIGKILL for the scheduler or the
worker (as a lost node or the OOM killer would) once checkpoints hold blocks.
Before issue 21 the scheduler's loss gave "internal error:
FutureCancelledError" and the store, with its checkpoints, was deleted.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
import zarr
from _cli import noise_zarr, one_error_line, run_cli

pytestmark = pytest.mark.timeout(300)

BIN = Path(sys.executable).parent
ARGS = ("--no-report", "--chunks", "500")
#: Nothing listens beyond 127.0.0.1.
LOOPBACK = ("--host", "127.0.0.1", "--no-dashboard")
RUN = (sys.executable, "-m", "tilesky.cli", "run")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _work_blocks(out: Path) -> int:
    try:
        return sum(1 for f in (out / "_work").rglob("c/*/*") if f.is_file())
    except OSError:
        return 0


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> Path:
    return noise_zarr(tmp_path_factory.mktemp("lost") / "scene.zarr", (3000, 3000), 9)


@pytest.fixture(scope="module")
def fresh(scene, tmp_path_factory):
    """The outputs of one uninterrupted threads run, which both cases must equal.

    Started in the background at once so that it overlaps the first case's
    cluster run (one worker thread); call the fixture's value to wait for it.
    """
    out = tmp_path_factory.mktemp("fresh") / "fresh.zarr"
    err = tempfile.TemporaryFile()
    proc = subprocess.Popen(
        [*RUN, str(scene), str(out), *ARGS, "--scheduler", "threads"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=err,
    )
    done: dict[str, np.ndarray] = {}

    def wait() -> dict[str, np.ndarray]:
        if not done:
            code = proc.wait(timeout=200)
            err.seek(0)
            assert code == 0, err.read().decode()
            group = zarr.open_group(str(out), mode="r")
            done.update({name: arr[...] for name, arr in group.arrays()})
        return done

    try:
        yield wait
    finally:
        proc.kill()
        proc.wait(timeout=30)
        err.close()


@pytest.mark.parametrize("victim", ["scheduler", "worker"])
def test_lost_cluster_keeps_the_store_for_resume(scene, fresh, tmp_path, victim):
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    env = dict(os.environ, DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES="0")
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    procs = [
        subprocess.Popen(
            [BIN / "dask", "scheduler", *LOOPBACK, "--port", str(port)],
            env=env,
            **quiet,
        )
    ]
    out = tmp_path / "out.zarr"
    err_path = tmp_path / "run.err"
    try:
        procs.append(
            subprocess.Popen(
                [BIN / "dask", "worker", address, "--nthreads", "1", *LOOPBACK],
                env=env,
                **quiet,
            )
        )
        with open(err_path, "w") as err:
            run = subprocess.Popen(
                [*RUN, str(scene), str(out), *ARGS, "--scheduler", address],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
            )
        procs.append(run)
        deadline = time.monotonic() + 150
        while _work_blocks(out) < 2:
            assert run.poll() is None, err_path.read_text()
            assert time.monotonic() < deadline, "no checkpoint blocks in 150 s"
            time.sleep(0.01)
        if victim == "scheduler":
            procs[0].send_signal(signal.SIGKILL)
        else:
            nanny = psutil.Process(procs[1].pid)
            children = nanny.children(recursive=True)
            workers = [c for c in children if "spawn_main" in " ".join(c.cmdline())]
            assert len(workers) == 1, children
            workers[0].send_signal(signal.SIGKILL)
        start = time.monotonic()
        code = run.wait(timeout=120)
        assert time.monotonic() - start < 90
    finally:
        for proc in procs:
            proc.kill()
            proc.wait(timeout=30)
    stderr = err_path.read_text()
    assert code == 1, stderr
    assert "ERROR" not in stderr, stderr
    line = one_error_line(stderr)
    want = (
        "lost the connection to the Dask scheduler"
        if victim == "scheduler"
        else (r"a worker died .*\(out of memory\?\)")
    )
    assert re.search(want, line) and "--resume" in line, line
    group = zarr.open_group(str(out), mode="r")
    assert group.attrs["tilesky_status"] == "running"
    kept = _work_blocks(out)
    assert kept >= 2
    resume = ("run", str(scene), str(out), *ARGS, "--scheduler", "threads", "--resume")
    proc = run_cli(*resume)
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"\(\d+ blocks written, [1-9]\d* reused\)", proc.stderr)
    group = zarr.open_group(str(out), mode="r")
    want = fresh()
    assert sorted(name for name, _ in group.arrays()) == sorted(want)
    for name, values in want.items():
        assert np.array_equal(group[name][...], values, equal_nan=True), name

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
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
import zarr

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
    path = tmp_path_factory.mktemp("lost") / "scene.zarr"
    rng = np.random.default_rng(9)
    image = rng.normal(100.0, 5.0, (3000, 3000)).astype(np.float32)
    z = zarr.create_array(str(path), shape=image.shape, chunks=(500, 500), dtype="f4")
    z[:] = image
    return path


def _cli(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tilesky.cli", "run", *argv],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=200,
    )


@pytest.mark.parametrize("victim", ["scheduler", "worker"])
def test_lost_cluster_keeps_the_store_for_resume(scene, tmp_path, victim):
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
    assert "Traceback" not in stderr and "ERROR" not in stderr, stderr
    lines = stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("tilesky: error: ")]
    assert len(errors) == 1 and all(x.startswith("tilesky: ") for x in lines), stderr
    want = (
        "lost the connection to the Dask scheduler"
        if victim == "scheduler"
        else (r"a worker died .*\(out of memory\?\)")
    )
    assert re.search(want, errors[0]) and "--resume" in errors[0], errors[0]
    group = zarr.open_group(str(out), mode="r")
    assert group.attrs["tilesky_status"] == "running"
    kept = _work_blocks(out)
    assert kept >= 2
    proc = _cli(str(scene), str(out), *ARGS, "--scheduler", "threads", "--resume")
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"\(\d+ blocks written, [1-9]\d* reused\)", proc.stderr)
    fresh = tmp_path / "fresh.zarr"
    assert _cli(str(scene), str(fresh), *ARGS, "--scheduler", "threads").returncode == 0
    a, b = zarr.open_group(str(out), mode="r"), zarr.open_group(str(fresh), mode="r")
    for name, arr in b.arrays():
        assert np.array_equal(a[name][...], arr[...], equal_nan=True), name

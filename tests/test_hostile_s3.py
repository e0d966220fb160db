"""Object stores that never answer end in one line, in bounded time (issue 21).

A real socket server on 127.0.0.1 accepts every connection and never sends a
byte; a real ``tilesky run`` reads its input from, or writes its output to,
that "S3 endpoint". Before, botocore's defaults (60 s reads, 5 attempts under
s3fs's 5 retries, for each of many calls) kept it waiting for many minutes.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time

import numpy as np
import pytest
import zarr
from _cli import mute_listener

pytest.importorskip("s3fs")
pytestmark = pytest.mark.timeout(180)

#: A short read timeout given by the user; the attempts and retries over it
#: are s3fs's 5 retries of one botocore attempt each (not 5 x 5).
READ_TIMEOUT = 2


@pytest.fixture
def mute_endpoint():
    """http://127.0.0.1:PORT that accepts connections and never answers."""
    with mute_listener() as (port, held):
        yield f"http://127.0.0.1:{port}", held


def _run(*argv: str) -> tuple[subprocess.CompletedProcess, float]:
    env = dict(
        os.environ,
        AWS_ACCESS_KEY_ID="tilesky-test",
        AWS_SECRET_ACCESS_KEY="tilesky-test-secret",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_CONFIG_FILE="/nonexistent/aws-config",
        AWS_SHARED_CREDENTIALS_FILE="/nonexistent/aws-credentials",
    )
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "tilesky.cli", "run", *argv],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        env=env,
        timeout=170,
    )
    return proc, time.monotonic() - start


@pytest.mark.parametrize("side", ["input", "output"])
def test_mute_s3_endpoint_ends_in_one_line(tmp_path, mute_endpoint, side):
    endpoint, held = mute_endpoint
    local = tmp_path / "scene.zarr"
    z = zarr.create_array(str(local), shape=(300, 300), chunks=(150, 150), dtype="f4")
    z[:] = np.random.default_rng(0).normal(100.0, 5.0, (300, 300)).astype("f4")
    remote = (
        "s3://tilesky-mute/scene.zarr"
        if side == "input"
        else "s3://tilesky-mute/out.zarr"
    )
    source, out = (
        (remote, str(tmp_path / "out.zarr"))
        if side == "input"
        else (str(local), remote)
    )
    proc, elapsed = _run(
        source,
        out,
        "--scheduler",
        "threads",
        "--no-report",
        "--storage-option",
        f"endpoint_url={endpoint}",
        "--storage-option",
        f"config_kwargs.read_timeout={READ_TIMEOUT}",
    )
    assert held, "the run never connected to the endpoint"
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert "Traceback" not in proc.stderr
    assert len(lines) == 1 and lines[0].startswith("tilesky: error: "), proc.stderr
    assert re.search(
        r"object store at http://127.0.0.1:\d+ .*did not answer within 12 s", lines[0]
    )
    assert elapsed < 40, (elapsed, lines)
    assert not (tmp_path / "out.zarr").exists()

"""A full filesystem ends in one line and exit 1, and the run resumes (issue 21).

A real tiny filesystem (a 3 MB tmpfs, where the test may mount one) and, on
any machine, a file-size limit (RLIMIT_FSIZE, so writes fail with EFBIG as a
full quota would) in a real ``tilesky run`` process.
"""

from __future__ import annotations

import contextlib
import resource
import shutil
import signal
import subprocess
from pathlib import Path

import numpy as np
import pytest
import zarr
from _cli import noise_zarr, one_error_line, run_cli

pytestmark = pytest.mark.timeout(240)

ARGS = ("--no-report", "--chunks", "500")


def _run(*argv: str, limit: int | None = None) -> subprocess.CompletedProcess:
    def limited():  # in the child, before exec
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return run_cli("run", *argv, timeout=180, preexec_fn=limited if limit else None)


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> Path:
    return noise_zarr(tmp_path_factory.mktemp("disk") / "scene.zarr", (1000, 1000), 5)


@pytest.fixture(scope="module")
def fresh(scene, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("fresh") / "out.zarr"
    proc = _run(str(scene), str(out), *ARGS, "--scheduler", "threads")
    assert proc.returncode == 0, proc.stderr
    group = zarr.open_group(str(out), mode="r")
    return {name: arr[...] for name, arr in group.arrays()}


def _assert_same(out: Path, fresh: dict) -> None:
    group = zarr.open_group(str(out), mode="r")
    assert group.attrs["tilesky_status"] == "complete"
    got = {name: arr[...] for name, arr in group.arrays()}
    assert sorted(got) == sorted(fresh)
    for name, want in fresh.items():
        assert np.array_equal(got[name], want, equal_nan=True), name


@pytest.fixture
def tiny_fs(tmp_path):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    mount = shutil.which("mount")
    cmd = [mount or "mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mnt)]
    if mount is None or subprocess.run(cmd, capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (the RLIMIT_FSIZE case still runs)")
    try:
        yield mnt
    finally:
        with contextlib.suppress(Exception):
            subprocess.run(["umount", "-l", str(mnt)], check=False, timeout=30)


@pytest.mark.parametrize(
    "workers", [["--scheduler", "threads"], []], ids=["threads", "local"]
)
def test_full_tmpfs_is_one_line_then_resume_finishes(scene, fresh, tiny_fs, workers):
    out = tiny_fs / "out.zarr"
    proc = _run(str(scene), str(out), *ARGS, *workers)
    assert proc.returncode == 1, proc.stderr
    line = one_error_line(proc.stderr)
    assert "no space left writing" in line and "--resume" in line, line
    # Space freed (the filesystem grows): the run continues where it stopped.
    remount = ["mount", "-o", "remount,size=300m", str(tiny_fs)]
    subprocess.run(remount, check=True, capture_output=True)
    proc = _run(str(scene), str(out), *ARGS, *workers, "--resume")
    assert proc.returncode == 0, proc.stderr
    _assert_same(out, fresh)


def test_file_size_limit_is_one_line_then_resume_finishes(scene, fresh, tmp_path):
    out = tmp_path / "out.zarr"
    args = (str(scene), str(out), *ARGS, "--scheduler", "threads")
    proc = _run(*args, limit=256 * 1024)
    assert proc.returncode == 1, proc.stderr
    line = one_error_line(proc.stderr)
    assert "no space left writing" in line and "File too large" in line, line
    proc = _run(*args, "--resume")
    assert proc.returncode == 0, proc.stderr
    _assert_same(out, fresh)

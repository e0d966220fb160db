"""Inputs, outputs and settings that lie: stale metadata, foreign stores, rival runs.

Each case here once gave a silently wrong result or an internal error
(issue 21); now each is read correctly or refused in one line.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import zarr

from tilesky import estimate_background
from tilesky.cli import main

pytestmark = pytest.mark.timeout(120)


def _noise(shape, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).normal(10.0, 1.0, shape).astype(np.float32)


def test_stale_consolidated_metadata_is_not_trusted(tmp_path):
    """Consolidated metadata saying 120x120 over a 240x240 array: all of it is read."""
    path = str(tmp_path / "scene.zarr")
    group = zarr.open_group(path, mode="w")
    group.create_array("scene", shape=(120, 120), dtype="f4", chunks=(60, 60))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        zarr.consolidate_metadata(path)
    image = _noise((240, 240))
    image[130:, 130:] += 50.0
    array = zarr.open_group(path, mode="r+", use_consolidated=False)["scene"]
    array.resize((240, 240))
    array[...] = image
    ds = estimate_background(path)
    assert ds.background.shape == (240, 240)
    assert float(ds.background.values[200, 200]) > 40.0


# -- one writer per output ---------------------------------------------------


def _run(argv, capsys) -> tuple[int, list[str]]:
    capsys.readouterr()
    code = main(argv)
    return code, capsys.readouterr().err.strip().splitlines()


@pytest.fixture
def unfinished(tmp_path, capsys):
    """A finished run turned back into an unfinished one, and its input."""
    from astropy.io import fits

    scene = tmp_path / "scene.fits"
    fits.PrimaryHDU(_noise((90, 90))).writeto(scene)
    out = tmp_path / "out.zarr"
    code, err = _run(["run", str(scene), str(out), "--scheduler", "threads"], capsys)
    assert code == 0, err
    assert not (out / ".tilesky-lock").exists()
    zarr.open_group(str(out), mode="r+").attrs["tilesky_status"] = "running"
    return scene, out


def _hold_lock(out: Path, pid: int) -> None:
    record = {"pid": pid, "host": socket.gethostname(), "time": 0.0, "run": "x"}
    (out / ".tilesky-lock").write_text(json.dumps(record))


@pytest.mark.parametrize("flag", ["--resume", "--overwrite"])
def test_second_writer_is_refused(unfinished, capsys, flag):
    scene, out = unfinished
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        _hold_lock(out, holder.pid)
        before = sorted(p.name for p in out.rglob("*"))
        argv = ["run", str(scene), str(out), "--scheduler", "threads", flag]
        code, err = _run(argv, capsys)
        assert code == 1
        assert len(err) == 1, err
        assert f"is being written by another run (process {holder.pid}" in err[0]
        assert sorted(p.name for p in out.rglob("*")) == before
    finally:
        holder.kill()
        holder.wait()


def test_stale_lock_of_a_dead_process_is_taken_over(unfinished, capsys):
    scene, out = unfinished
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    _hold_lock(out, dead.pid)
    argv = ["run", str(scene), str(out), "--scheduler", "threads", "--resume"]
    code, err = _run(argv, capsys)
    assert code == 0, err
    assert zarr.open_group(str(out), mode="r").attrs["tilesky_status"] == "complete"
    assert not (out / ".tilesky-lock").exists()


def test_concurrent_runs_on_one_output(tmp_path):
    """Two real processes on the same output: one runs, the other refuses."""
    scene = tmp_path / "scene.zarr"
    group = zarr.open_group(str(scene), mode="w")
    group.create_array("scene", shape=(1500, 1500), dtype="f4", chunks=(500, 500))
    group["scene"][...] = _noise((1500, 1500))
    out = tmp_path / "out.zarr"
    argv = [sys.executable, "-m", "tilesky.cli", "run", str(scene), str(out)]
    argv += ["--scheduler", "threads", "--no-report"]
    first = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not (out / ".tilesky-lock").exists():
            assert first.poll() is None, first.stderr.read()
            assert time.monotonic() < deadline
            time.sleep(0.05)
        second = subprocess.run(
            [*argv, "--resume"], capture_output=True, text=True, timeout=60
        )
        assert first.wait(timeout=120) == 0, first.stderr.read()
    finally:
        first.kill()
    if second.returncode == 0:
        # The first run ended before the second looked: nothing to do.
        assert "already complete" in second.stderr or not second.stderr.strip()
    else:
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1, second.stderr
        assert "being written by another run" in lines[0]
    assert zarr.open_group(str(out), mode="r").attrs["tilesky_status"] == "complete"

"""--resume reuses only what it can verify (issue 21).

A real ``tilesky run`` process is killed (SIGKILL) once some checkpoints hold
blocks; then the input's pixels change in place (same shape, dtype, chunks
and Zarr metadata) or the checkpoint chunks on disk are damaged, and the run
is resumed. A changed input is refused in one line; a damaged checkpoint
block is recomputed, so the finished store equals a fresh run bit for bit.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import zarr

pytestmark = pytest.mark.timeout(240)

SHAPE = (2400, 2400)
ARGS = ("--scheduler", "threads", "--chunks", "400", "--no-report")


def _cli(*argv: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tilesky.cli", *argv],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=timeout,
    )


def _scene(path: Path) -> Path:
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[: SHAPE[0], : SHAPE[1]]
    image = rng.normal(100.0, 5.0, SHAPE) + 20.0 * yy / SHAPE[0]
    image[(yy - 900) ** 2 + (xx - 1300) ** 2 < 40**2] += 300.0
    z = zarr.create_array(str(path), shape=SHAPE, chunks=(400, 400), dtype="f4")
    z[:] = image.astype(np.float32)
    return path


def _work_chunks(out: Path) -> dict[str, list[Path]]:
    """Chunk files of each checkpoint of a run in progress."""
    found: dict[str, list[Path]] = {}
    try:
        for arr in sorted((out / "_work").iterdir()):
            files = [f for f in (arr / "c").rglob("*") if f.is_file()]
            if files:
                found[arr.name] = sorted(files)
    except OSError:
        return {}
    return found


def _killed_run(scene: Path, out: Path) -> dict[str, list[Path]]:
    """Start a run, SIGKILL it once two checkpoints hold blocks."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tilesky.cli", "run", str(scene), str(out), *ARGS],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 120
        while len(_work_chunks(out)) < 2:
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "no checkpoint blocks in 120 s"
            time.sleep(0.005)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        proc.kill()
        proc.wait(timeout=30)
        proc.stderr.close()
    group = zarr.open_group(str(out), mode="r")
    assert group.attrs["tilesky_status"] == "running"
    return _work_chunks(out)


def _arrays(out: Path) -> dict[str, np.ndarray]:
    group = zarr.open_group(str(out), mode="r")
    return {name: arr[...] for name, arr in group.arrays()}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The input and the outputs of one uninterrupted run on it."""
    tmp = tmp_path_factory.mktemp("resume")
    scene = _scene(tmp / "scene.zarr")
    out = tmp / "fresh.zarr"
    proc = _cli("run", str(scene), str(out), *ARGS)
    assert proc.returncode == 0, proc.stderr
    return scene, _arrays(out)


def test_resume_after_the_input_pixels_changed_is_refused(tmp_path):
    """Same shape, dtype, chunks and metadata; other pixels in one chunk."""
    scene = tmp_path / "scene.zarr"
    _scene(scene)
    out = tmp_path / "out.zarr"
    _killed_run(scene, out)
    meta = (scene / "zarr.json").read_bytes()
    z = zarr.open_array(str(scene), mode="r+")
    z[800:1200, 400:800] = z[800:1200, 400:800] + np.float32(50.0)
    assert (scene / "zarr.json").read_bytes() == meta
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    proc = _cli("run", str(scene), str(out), *ARGS, "--resume")
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    # The 400-pixel chunk changed lies across 2x2 of the run's 420-pixel tiles.
    assert re.search(r"input's pixels changed \(4 of 36 blocks differ\)", lines[0])
    assert "--overwrite" in lines[0]
    after = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    assert after == before
    assert zarr.open_group(str(out), mode="r").attrs["tilesky_status"] == "running"


@pytest.fixture(scope="module")
def killed(reference, tmp_path_factory):
    """One run on the reference input, SIGKILLed once two checkpoints hold blocks.

    The damage tests each resume a copy of it.
    """
    scene, _ = reference
    out = tmp_path_factory.mktemp("killed") / "out.zarr"
    chunks = _killed_run(scene, out)
    return out, {name: [f.relative_to(out) for f in fs] for name, fs in chunks.items()}


@pytest.mark.parametrize("damage", ["zeros", "garbage", "truncated"])
def test_damaged_checkpoint_blocks_are_recomputed(reference, killed, tmp_path, damage):
    """Every stored checkpoint chunk damaged: the resumed run equals a fresh one."""
    scene, want = reference
    source, chunks = killed
    out = tmp_path / "out.zarr"
    shutil.copytree(source, out)
    assert _work_chunks(out) == {
        name: [out / f for f in files] for name, files in chunks.items()
    }
    rng = np.random.default_rng(1)
    for files in chunks.values():
        for f in (out / rel for rel in files):
            size = f.stat().st_size
            if damage == "zeros":
                f.write_bytes(bytes(size))
            elif damage == "garbage":
                f.write_bytes(rng.integers(0, 256, size, dtype=np.uint8).tobytes())
            else:
                f.write_bytes(f.read_bytes()[: size // 2])
    proc = _cli("run", str(scene), str(out), *ARGS, "--resume")
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "damaged" in proc.stderr, proc.stderr
    got = _arrays(out)
    assert sorted(got) == sorted(want)
    for name, values in want.items():
        assert np.array_equal(got[name], values, equal_nan=True), name

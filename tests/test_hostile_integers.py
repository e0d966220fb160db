"""Integer images with a large offset keep their precision (issue 21).

Pixels of about 1e12 with a scatter of 100, stored as int64 or uint64 (Zarr,
FITS, numpy): float32 holds none of that scatter, so before the fix every run
said "constant". Now the median of the central window is removed in integer
arithmetic first; the run equals, bit for bit, the run on the float32
differences, tiled or whole.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import zarr

from tilesky import estimate_background

pytestmark = pytest.mark.timeout(180)

SHAPE = (480, 540)
OFFSET = 10**12
CLI = (sys.executable, "-m", "tilesky.cli", "run")


def _image(dtype) -> np.ndarray:
    rng = np.random.default_rng(7)
    yy, xx = np.mgrid[: SHAPE[0], : SHAPE[1]]
    sky = rng.normal(0.0, 100.0, SHAPE) + 0.5 * yy + 0.2 * xx
    sky[(yy - 200) ** 2 + (xx - 300) ** 2 < 15**2] += 3000.0
    return (OFFSET + np.round(sky)).astype(dtype)


def _write(path, image) -> str:
    if str(path).endswith(".fits"):
        from astropy.io import fits

        fits.PrimaryHDU(image).writeto(path)
    else:
        z = zarr.create_array(
            str(path), shape=SHAPE, chunks=(120, 180), dtype=image.dtype
        )
        z[:] = image
    return str(path)


@pytest.mark.parametrize(
    ("dtype", "suffix"),
    [("int64", ".zarr"), ("uint64", ".zarr"), ("int64", ".fits"), (">i8", ".fits")],
)
def test_cli_run_of_a_large_integer_offset(tmp_path, dtype, suffix):
    image = _image(dtype)
    scene = _write(tmp_path / f"scene{suffix}", image)
    out = tmp_path / "out.zarr"
    proc = subprocess.run(
        [*CLI, scene, str(out), "--scheduler", "threads", "--no-report"],
        capture_output=True,
        text=True,
        timeout=150,
    )
    assert proc.returncode == 0, proc.stderr
    group = zarr.open_group(str(out), mode="r")
    offset = group.attrs["input"]["offset"]
    assert abs(offset - OFFSET) < 1000
    background = group["background"][...]
    # The gradient (0.5 per row) survives; in float32 of 1e12 it would not.
    assert 150 < np.nanmedian(background[-20:]) - np.nanmedian(background[:20]) < 330


@pytest.mark.parametrize("dtype", ["int64", "uint64"])
def test_tiled_and_whole_equal_the_float32_differences(tmp_path, dtype):
    image = _image(dtype)
    path = _write(tmp_path / "scene.zarr", image)
    tiled = estimate_background(path, chunks=(120, 180))
    whole = estimate_background(image)
    offset = tiled.attrs["input"]["offset"]
    assert offset == whole.attrs["input"]["offset"]
    diff = (image.astype(np.int64) - np.int64(offset)).astype(np.float32)
    reference = estimate_background(diff)
    for name in ("background", "background_rms", "mask"):
        np.testing.assert_array_equal(whole[name].values, reference[name].values)
        np.testing.assert_allclose(
            tiled[name].values, reference[name].values, rtol=1e-5, atol=1e-3
        )
    np.testing.assert_array_equal(tiled.mask.values, whole.mask.values)


def test_small_integers_and_floats_are_read_as_before(tmp_path):
    small = np.arange(12, dtype=np.int32).reshape(3, 4) + 2**20
    from tilesky.io import open_image

    opened = open_image(small, box_size=1)
    assert "offset" not in opened.identity
    np.testing.assert_array_equal(opened.data.compute(), small.astype(np.float32))
    floats = (_image("int64") - OFFSET).astype(np.float64) + OFFSET
    assert "offset" not in open_image(floats, box_size=1).identity

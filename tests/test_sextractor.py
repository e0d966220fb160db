"""SExtractor-compatible mode against SEP itself (sep.Background)."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest

from tilesky.errors import ConfigError, InputError
from tilesky.sextractor import sextractor_background

sep = pytest.importorskip("sep")


def _scene(shape, seed, *, sources=300, nan_hole=False):
    rng = np.random.default_rng(seed)
    ny, nx = shape
    yy, xx = np.mgrid[:ny, :nx]
    img = 100 + 0.02 * xx + 0.01 * yy + 5 * np.sin(xx / 150.0)
    img = img + rng.normal(0, 3, shape)
    for _ in range(sources):
        y, x = rng.integers(0, ny), rng.integers(0, nx)
        img[max(0, y - 3) : y + 3, max(0, x - 3) : x + 3] += rng.uniform(10, 500)
    if nan_hole:
        img[: ny // 3, : nx // 4] = np.nan
    return img.astype(np.float32)


def _max_rel(a, b):
    return float(np.max(np.abs(a - b) / np.abs(b)))


CASES = [
    # shape, (bh, bw), (fh, fw), fthresh: partial edge meshes, non-square
    # boxes, no filter, a threshold, a single mesh row
    ((700, 900), (64, 64), (3, 3), 0.0),
    ((517, 383), (48, 32), (3, 5), 0.0),
    ((400, 400), (50, 50), (1, 1), 0.0),
    ((300, 650), (64, 64), (3, 3), 1.5),
    ((40, 500), (64, 64), (3, 3), 0.0),
]


@pytest.mark.parametrize(("shape", "box", "fsize", "fthresh"), CASES)
def test_matches_sep_whole_and_tiled(shape, box, fsize, fthresh):
    img = _scene(shape, seed=sum(shape))
    ref = sep.Background(
        img, bw=box[1], bh=box[0], fw=fsize[1], fh=fsize[0], fthresh=fthresh
    )
    back, rms = sextractor_background(
        img, box_size=box, filter_size=fsize, filter_threshold=fthresh
    )
    assert back.dtype == rms.dtype == np.float32
    assert _max_rel(back, ref.back()) <= 1e-5
    assert _max_rel(rms, ref.rms()) <= 1e-4
    # Tiled: chunks of whole boxes (and one cut off the grid, re-aligned).
    for chunks in ((box[0] * 2, box[1] * 3), (box[0] + 7, box[1])):
        tb, tr = da.compute(
            *sextractor_background(
                da.from_array(img, chunks=chunks),
                box_size=box,
                filter_size=fsize,
                filter_threshold=fthresh,
            )
        )
        np.testing.assert_array_equal(tb, back)
        np.testing.assert_array_equal(tr, rms)


def test_mask_and_nan_match_sep():
    img = _scene((600, 700), seed=3)
    mask = np.zeros(img.shape, bool)
    mask[100:260, 200:420] = True  # bad meshes: filled from their neighbours
    ref = sep.Background(img, mask=mask, bw=64, bh=64, fw=3, fh=3)
    back, rms = sextractor_background(img, mask, box_size=64, filter_size=3)
    assert _max_rel(back, ref.back()) <= 1e-5
    assert _max_rel(rms, ref.rms()) <= 1e-4
    # NaN pixels are left out as SEP leaves out masked ones.
    holed = img.copy()
    holed[mask] = np.nan
    nb, nr = sextractor_background(holed, box_size=64, filter_size=3)
    np.testing.assert_array_equal(nb, back)
    np.testing.assert_array_equal(nr, rms)
    tb, tr = da.compute(
        *sextractor_background(
            da.from_array(img, chunks=128),
            da.from_array(mask, chunks=128),
            box_size=64,
            filter_size=3,
        )
    )
    np.testing.assert_array_equal(tb, back)
    np.testing.assert_array_equal(tr, rms)


def test_differs_from_photutils_style_mesh():
    # The point of the mode: the histogram mode is not a clipped median.
    img = _scene((512, 512), seed=9, sources=2000)
    back, _ = sextractor_background(img, box_size=64)
    median = np.nanmedian(img.reshape(8, 64, 8, 64), axis=(1, 3))
    assert np.max(np.abs(back[32::64, 32::64] - median)) > 0.05


def test_bad_parameters():
    img = np.zeros((64, 64), np.float32)
    with pytest.raises(ConfigError, match="box_size"):
        sextractor_background(img, box_size=0)
    with pytest.raises(InputError, match="mask has shape"):
        sextractor_background(img, np.zeros((3, 3)))

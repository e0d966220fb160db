"""Mask kernels against scipy/astropy references and their halo rules."""

import numpy as np
import pytest
from astropy.convolution import Tophat2DKernel
from scipy import ndimage

from tilesky.kernels._mask import (
    dilate_depth,
    dilate_mask,
    gaussian_depth,
    size_filter,
    size_filter_depth,
    smooth,
    tophat_footprint,
)


def _tiles(shape, tile):
    for y0 in range(0, shape[0], tile[0]):
        for x0 in range(0, shape[1], tile[1]):
            yield y0, min(y0 + tile[0], shape[0]), x0, min(x0 + tile[1], shape[1])


def _tiled(func, image, depth, tile):
    out = None
    for y0, y1, x0, x1 in _tiles(image.shape, tile):
        ey0, ex0 = max(y0 - depth, 0), max(x0 - depth, 0)
        ey1, ex1 = min(y1 + depth, image.shape[0]), min(x1 + depth, image.shape[1])
        piece = func(image[ey0:ey1, ex0:ex1])
        if out is None:
            out = np.empty(image.shape, dtype=piece.dtype)
        out[y0:y1, x0:x1] = piece[y0 - ey0 : y1 - ey0, x0 - ex0 : x1 - ex0]
    return out


@pytest.mark.parametrize("radius", [1, 2, 3, 4, 7])
def test_tophat_matches_astropy(radius):
    assert np.array_equal(tophat_footprint(radius), Tophat2DKernel(radius).array > 0)


def test_smooth_equals_direct_normalized_convolution():
    rng = np.random.default_rng(0)
    img = rng.normal(size=(41, 37)).astype(np.float32)
    img[5:9, 10:20] = np.nan
    sigma = 1.7
    out = smooth(img, sigma)
    r = gaussian_depth(sigma)
    y, x = np.mgrid[-r : r + 1, -r : r + 1]
    k = np.exp(-0.5 * (x**2 + y**2) / sigma**2)
    cover = np.isfinite(img)
    num = ndimage.correlate(np.where(cover, img, 0).astype(float), k, mode="constant")
    den = ndimage.correlate(cover.astype(float), k, mode="constant")
    np.testing.assert_allclose(out, num / den, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("tile", [(7, 9), (16, 16), (41, 5)])
def test_smooth_tiles_exactly(tile):
    rng = np.random.default_rng(0)
    img = rng.normal(size=(53, 47)).astype(np.float32)
    img[20:30, :7] = np.nan
    whole = smooth(img, 2.0)
    tiled = _tiled(lambda a: smooth(a, 2.0), img, gaussian_depth(2.0), tile)
    assert np.array_equal(whole, tiled, equal_nan=True)


def test_dilate_matches_binary_dilation_and_tiles():
    rng = np.random.default_rng(0)
    m = rng.random((50, 61)) > 0.97
    for radius in (1, 2, 4):
        ref = ndimage.binary_dilation(m, structure=Tophat2DKernel(radius).array > 0)
        assert np.array_equal(dilate_mask(m, radius), ref)
        tiled = _tiled(
            lambda a, r=radius: dilate_mask(a, r), m, dilate_depth(radius), (8, 11)
        )
        assert np.array_equal(tiled, ref)


def test_size_filter_reference_and_tiles():
    rng = np.random.default_rng(1)
    m = rng.random((60, 70)) > 0.8
    for n in (1, 2, 3, 5, 8):
        labels, _ = ndimage.label(m, structure=np.ones((3, 3)))
        sizes = np.bincount(labels.ravel())
        ref = (sizes[labels] >= n) & m
        assert np.array_equal(size_filter(m, n), ref)
        tiled = _tiled(
            lambda a, n=n: size_filter(a, n), m, size_filter_depth(n), (6, 9)
        )
        assert np.array_equal(tiled, ref)

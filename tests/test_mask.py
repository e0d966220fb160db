"""Mask kernels against scipy/astropy references and their halo rules."""

import numpy as np
import pytest
from _reference_kernels import dilate_reference, smooth_reference
from astropy.convolution import Tophat2DKernel
from scipy import ndimage

from tilesky.config import Config
from tilesky.kernels._mask import (
    dilate_depth,
    dilate_mask,
    gaussian_depth,
    size_filter,
    size_filter_depth,
    smooth,
    tophat_footprint,
)

TRUNCATE = Config().smooth_truncate


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
    out = smooth(img, sigma, truncate=TRUNCATE)
    r = gaussian_depth(sigma, TRUNCATE)
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
    whole = smooth(img, 2.0, truncate=TRUNCATE)
    tiled = _tiled(
        lambda a: smooth(a, 2.0, truncate=TRUNCATE),
        img,
        gaussian_depth(2.0, TRUNCATE),
        tile,
    )
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


@pytest.mark.parametrize("n", [2, 3, 5, 9, 16, 17, 40])
def test_bounded_fill_is_the_labelled_rule(n):
    # n <= 16 takes the compiled bounded flood fill, larger n the labels:
    # both against the labelled groups on odd shapes and densities.
    rng = np.random.default_rng(n)
    for _ in range(40):
        shape = tuple(int(v) for v in rng.integers(1, 80, 2))
        m = rng.random(shape) < rng.uniform(0.02, 0.7)
        labels, _ = ndimage.label(m, structure=np.ones((3, 3)))
        ref = (np.bincount(labels.ravel())[labels] >= n) & m
        assert np.array_equal(size_filter(m, n), ref)


# -- numba kernels against their scipy references, bit for bit ---------------

_SHAPES = [(1, 1), (1, 23), (19, 1), (2, 3), (6, 5), (37, 29), (64, 71)]
_SIGMAS = [
    (0.3, 3.0),
    (0.3, 4.0),
    (0.8, 4.0),
    (1.7, 3.0),
    (2.12, 4.0),
    (3.0, 4.0),
    (6.0, 3.0),
    (6.0, 4.0),
]


def _bit_equal(fast, ref):
    return (
        fast.dtype == ref.dtype
        and fast.shape == ref.shape
        and np.array_equal(fast, ref, equal_nan=True)
        and np.array_equal(fast.view(np.uint32), ref.view(np.uint32))
    )


def _holey(rng, shape, dtype):
    img = (rng.normal(size=shape) * 50 + 3).astype(dtype)
    img[rng.random(shape) < 0.08] = np.nan
    img[rng.random(shape) < 0.01] = np.inf
    img[rng.random(shape) < 0.01] = -np.inf
    if shape[0] > 8 and shape[1] > 8:
        img[2:7, -6:] = np.nan  # a blank block touching the edge
    return img


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(("sigma", "truncate"), _SIGMAS)
def test_smooth_bit_identical_to_reference(dtype, sigma, truncate):
    rng = np.random.default_rng(int(sigma * 100 + truncate))
    for shape in _SHAPES:
        clean = rng.normal(size=shape).astype(dtype)
        holey = _holey(rng, shape, dtype)
        mask = rng.random(shape) < 0.15
        for img, m in ((clean, None), (holey, None), (clean, mask), (holey, mask)):
            fast = smooth(img, sigma, truncate=truncate, mask=m)
            ref = smooth_reference(img, sigma, truncate=truncate, mask=m)
            assert _bit_equal(fast, ref), (shape, m is not None)


def test_smooth_bit_identical_all_blank_and_signed_zeros():
    # -0.0 survives scipy's interior sums but becomes +0.0 where the zero
    # padding is added: the kernel must reproduce both.
    zeros = np.full((40, 41), -0.0, dtype=np.float32)
    t = {"truncate": TRUNCATE}
    ref = smooth_reference(zeros, 1.0, **t)
    assert np.signbit(ref).any() and not np.signbit(ref).all()
    assert _bit_equal(smooth(zeros, 1.0, **t), ref)
    blank = np.full((9, 12), np.nan, dtype=np.float32)
    assert _bit_equal(smooth(blank, 2.0, **t), smooth_reference(blank, 2.0, **t))
    everything = np.ones((9, 12), dtype=bool)
    img = np.ones((9, 12), dtype=np.float32)
    out = smooth(img, 2.0, mask=everything, **t)
    assert np.isnan(out).all()
    assert _bit_equal(out, smooth_reference(img, 2.0, mask=everything, **t))


def test_smooth_bit_identical_other_layouts_and_dtypes():
    rng = np.random.default_rng(3)
    base = rng.normal(size=(45, 38)) * 20
    base[10:14, 3:9] = np.nan
    inputs = [
        np.asfortranarray(base.astype(np.float32)),
        base.astype(np.float32)[::2, ::3],
        base.astype(">f4"),
        np.nan_to_num(base * 10).astype(np.int32),
        base.astype(np.float16),
    ]
    t = {"truncate": TRUNCATE}
    for img in inputs:
        assert _bit_equal(smooth(img, 1.5, **t), smooth_reference(img, 1.5, **t))
    row_mask = rng.random((1, 38)) < 0.3  # broadcast over rows
    assert _bit_equal(
        smooth(base, 2.0, mask=row_mask, **t),
        smooth_reference(base, 2.0, mask=row_mask, **t),
    )


def test_smooth_empty_and_invalid():
    out = smooth(np.zeros((0, 7), np.float32), 2.0, truncate=TRUNCATE)
    assert out.shape == (0, 7) and out.dtype == np.float32
    with pytest.raises(ValueError, match="image must be 2-D"):
        smooth(np.zeros(10), 2.0, truncate=TRUNCATE)
    # The config's bounds: smooth_sigma, fwhm and smooth_truncate are > 0.
    with pytest.raises(ValueError, match="sigma must be > 0"):
        smooth(np.zeros((5, 5)), 0.0, truncate=TRUNCATE)
    with pytest.raises(ValueError, match="truncate must be > 0"):
        smooth(np.zeros((5, 5)), 2.0, truncate=-1.0)


def test_smooth_tile_with_mask_equals_whole_image():
    rng = np.random.default_rng(4)
    img = _holey(rng, (61, 58), np.float64)
    mask = rng.random(img.shape) < 0.1
    sigma, truncate = 2.12, 3.0
    depth = gaussian_depth(sigma, truncate)
    whole = smooth(img, sigma, truncate=truncate, mask=mask)
    for y0, y1, x0, x1 in _tiles(img.shape, (16, 23)):
        ey0, ex0 = max(y0 - depth, 0), max(x0 - depth, 0)
        ey1, ex1 = min(y1 + depth, img.shape[0]), min(x1 + depth, img.shape[1])
        piece = smooth(
            img[ey0:ey1, ex0:ex1],
            sigma,
            truncate=truncate,
            mask=mask[ey0:ey1, ex0:ex1],
        )
        core = piece[y0 - ey0 : y1 - ey0, x0 - ex0 : x1 - ex0]
        assert _bit_equal(core, whole[y0:y1, x0:x1])


@pytest.mark.parametrize("radius", range(9))
def test_dilate_identical_to_reference(radius):
    rng = np.random.default_rng(radius)
    for shape in [(1, 1), (1, 13), (11, 1), (3, 4), (7, 9), (17, 17), (40, 53)]:
        for density in (0.01, 0.1, 0.5):
            m = rng.random(shape) < density
            # masked pixels on every edge and in the corners
            m[0, rng.integers(shape[1])] = True
            m[-1, rng.integers(shape[1])] = True
            m[rng.integers(shape[0]), 0] = True
            m[rng.integers(shape[0]), -1] = True
            m[-1, -1] = True
            fast = dilate_mask(m, radius)
            assert fast.dtype == bool
            assert np.array_equal(fast, dilate_reference(m, radius)), shape
    empty = np.zeros((6, 5), dtype=bool)
    assert not dilate_mask(empty, radius).any()


def test_dilate_other_inputs_match_reference():
    rng = np.random.default_rng(9)
    m = rng.random((30, 41)) < 0.05
    for mm, radius in [
        (np.asfortranarray(m), 3),
        (m[::2, ::3], 2),
        (m.astype(np.int64), 2),
        (m, 2.7),
        (m, -1),
        (m, 260),  # beyond the uint8 distance range
    ]:
        assert np.array_equal(dilate_mask(mm, radius), dilate_reference(mm, radius))
    assert dilate_mask(np.zeros((0, 4), bool), 3).shape == (0, 4)
    with pytest.raises(ValueError, match="mask must be 2-D"):
        dilate_mask(np.zeros(10, bool), 2)


@pytest.mark.parametrize(("sigma", "truncate"), [(0.8, 4.0), (2.12, 4.0), (6.0, 3.0)])
def test_smooth_passes_match_scipy_in_float64(sigma, truncate):
    # The float32 output hides most last-bit differences of the float64 sums,
    # so check the two passes and the edge-only denominator in float64, where
    # any other order of the additions shows.
    from tilesky.kernels._mask import (
        _correlate_axis0,
        _correlate_axis1,
        _ones_axis0,
        gaussian_kernel1d,
    )

    def two_passes(src, ny, nx):
        out = np.empty((ny, nx))
        padded = np.zeros(nx + 2 * r)
        zero = np.zeros(nx, dtype=src.dtype)
        for y in range(ny):
            _correlate_axis0(src, y, weights, zero, padded[r : r + nx])
            _correlate_axis1(padded, weights, out[y])
        return out

    def scipy_passes(src):
        src = src.astype(np.float64)
        once = ndimage.correlate1d(src, weights, axis=0, mode="constant")
        return ndimage.correlate1d(once, weights, axis=1, mode="constant")

    def bits(a):
        return a.view(np.uint64)

    rng = np.random.default_rng(5)
    weights = gaussian_kernel1d(sigma, truncate)
    r = weights.size // 2
    for ny, nx in [(3, 40), (45, 38)]:
        for dtype in (np.float32, np.float64, np.uint8):
            if dtype is np.uint8:  # the coverage of a partly blank image
                src = (rng.random((ny, nx)) < 0.7).astype(np.uint8)
            else:
                src = (rng.normal(size=(ny, nx)) * 100).astype(dtype)
            fast = two_passes(src, ny, nx)
            assert np.array_equal(bits(fast), bits(scipy_passes(src)))
        full = np.empty((ny, nx))
        padded = np.zeros(nx + 2 * r)
        for y in range(ny):
            padded[r : r + nx] = _ones_axis0(y, ny, weights)
            _correlate_axis1(padded, weights, full[y])
        assert np.array_equal(bits(full), bits(scipy_passes(np.ones((ny, nx)))))

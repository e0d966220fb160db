"""Ring-median kernel: footprint, bit-identity to scipy, NaN rule, caching."""

import os
import subprocess
import sys

import numpy as np
import pytest
from _reference_kernels import ring_median_reference
from astropy.convolution import Ring2DKernel
from numpy.testing import assert_array_equal
from scipy import ndimage

from tilesky.config import ConfigError, RingConfig
from tilesky.kernels._ring import ring_depth, ring_footprint, ring_median

RINGS = [(15, 5), (3, 2), (1, 1)]
DTYPES = [np.float32, np.float64]


def scipy_ring_median(image, radius_in, width):
    footprint = ring_footprint(radius_in, width)
    return ndimage.median_filter(image, footprint=footprint, mode="reflect")


def assert_bit_identical(result, expected):
    assert result.dtype == expected.dtype
    assert result.shape == expected.shape
    # Compare bits so that -0.0 vs 0.0 or two NaN payloads would show.
    bits = f"u{result.itemsize}"
    assert_array_equal(result.view(bits), expected.view(bits))


class TestFootprint:
    @pytest.mark.parametrize(
        ("radius_in", "width"),
        [(15, 5), (3, 2), (1, 1), (0, 1), (0, 4), (2, 7), (7, 1), (10, 10), (20, 3)],
    )
    def test_matches_astropy(self, radius_in, width):
        expected = Ring2DKernel(radius_in, width).array.astype(bool)
        result = ring_footprint(radius_in, width)
        assert result.dtype == bool
        assert result.shape == expected.shape
        assert_array_equal(result, expected)

    @pytest.mark.parametrize(("radius_in", "width"), RINGS)
    def test_depth_is_half_size(self, radius_in, width):
        footprint = ring_footprint(radius_in, width)
        depth = ring_depth(radius_in, width)
        assert footprint.shape == (2 * depth + 1, 2 * depth + 1)
        # The ring touches the edge of its box: no smaller halo would do.
        assert footprint[0].any()
        assert footprint[:, 0].any()

    def test_notebook_ring(self):
        assert ring_depth(15, 5) == 20
        assert ring_footprint(15, 5).sum() == 560

    @pytest.mark.parametrize(
        ("kwargs", "match"),
        [
            ({"radius_in": -1, "width": 5}, "radius_in must be an integer >= 0"),
            ({"radius_in": 15, "width": 0}, "width must be an integer >= 1"),
            ({"radius_in": 2.5, "width": 5}, "radius_in must be an integer"),
            ({"radius_in": 15, "width": True}, "width must be an integer"),
        ],
    )
    def test_invalid(self, kwargs, match):
        with pytest.raises(ValueError, match=match):
            ring_footprint(**kwargs)
        with pytest.raises(ValueError, match=match):
            ring_depth(**kwargs)
        with pytest.raises(ValueError, match=match):
            ring_median(np.zeros((4, 4)), **kwargs)

    @pytest.mark.parametrize(
        ("radius_in", "width"), [(-1, 5), (0, 5), (15, 0), (15, 1), (0, 1)]
    )
    def test_same_bounds_as_config(self, radius_in, width):
        # One rule: the kernel accepts exactly the rings the config accepts.
        try:
            RingConfig(radius_in=radius_in, width=width)
        except ConfigError:
            with pytest.raises(ValueError, match="must be an integer >= "):
                ring_depth(radius_in, width)
        else:
            assert ring_depth(radius_in, width) == radius_in + width


class TestMatchesScipy:
    @pytest.mark.parametrize("dtype", DTYPES)
    @pytest.mark.parametrize("shape", [(37, 53), (200, 131)])
    @pytest.mark.parametrize(("radius_in", "width"), RINGS)
    def test_random(self, dtype, shape, radius_in, width):
        rng = np.random.default_rng(0)
        image = rng.normal(size=shape).astype(dtype)
        result = ring_median(image, radius_in=radius_in, width=width)
        assert_bit_identical(result, scipy_ring_median(image, radius_in, width))

    def test_across_internal_tiles(self):
        # Larger than one internal tile in both directions, with ragged edges.
        rng = np.random.default_rng(0)
        image = rng.normal(size=(301, 587)).astype(np.float32)
        result = ring_median(image, radius_in=3, width=2)
        assert_bit_identical(result, scipy_ring_median(image, 3, 2))

    @pytest.mark.parametrize("dtype", DTYPES)
    @pytest.mark.parametrize(("radius_in", "width"), RINGS)
    def test_ties(self, dtype, radius_in, width):
        rng = np.random.default_rng(0)
        image = rng.integers(-3, 4, size=(61, 47)).astype(dtype)
        result = ring_median(image, radius_in=radius_in, width=width)
        assert_bit_identical(result, scipy_ring_median(image, radius_in, width))

    def test_constant_and_wide_range(self):
        rng = np.random.default_rng(0)
        image = rng.normal(size=(45, 39)) * 10.0 ** rng.integers(-30, 30, (45, 39))
        result = ring_median(image, radius_in=3, width=2)
        assert_bit_identical(result, scipy_ring_median(image, 3, 2))
        constant = np.full((20, 30), 7.25, dtype=np.float32)
        assert_bit_identical(ring_median(constant, radius_in=3, width=2), constant)

    @pytest.mark.parametrize(
        "shape", [(1, 1), (1, 7), (2, 3), (5, 4), (9, 1), (13, 17), (40, 3)]
    )
    @pytest.mark.parametrize(("radius_in", "width"), [(15, 5), (3, 2)])
    def test_smaller_than_footprint(self, shape, radius_in, width):
        rng = np.random.default_rng(0)
        image = rng.normal(size=shape).astype(np.float32)
        result = ring_median(image, radius_in=radius_in, width=width)
        expected = ring_median_reference(image, radius_in=radius_in, width=width)
        assert_bit_identical(result, expected)
        # scipy's 2-D reflect reads wrong memory once the ring reaches four
        # image sides past the edge, so compare with it only short of that.
        if 4 * min(shape) > ring_depth(radius_in, width) or min(shape) == 1:
            assert_bit_identical(result, scipy_ring_median(image, radius_in, width))

    def test_non_contiguous_input(self):
        rng = np.random.default_rng(0)
        base = rng.normal(size=(80, 90)).astype(np.float32)
        for image in (base.T, base[::2, 1::3], np.asfortranarray(base)):
            result = ring_median(image, radius_in=3, width=2)
            assert_bit_identical(result, scipy_ring_median(image, 3, 2))

    def test_integer_input_widens_exactly(self):
        rng = np.random.default_rng(0)
        image = rng.integers(-1000, 1000, size=(30, 40))
        result = ring_median(image, radius_in=3, width=2)
        assert result.dtype == np.float64
        expected = scipy_ring_median(image, 3, 2).astype(np.float64)
        assert_bit_identical(result, expected)
        assert ring_median(image.astype(np.int16), radius_in=1, width=1).dtype == (
            np.float32
        )


class TestNonFinite:
    @pytest.mark.parametrize(("radius_in", "width"), RINGS)
    def test_reference_matches_scipy_on_finite(self, radius_in, width):
        # The oracle itself, checked where scipy is valid.
        rng = np.random.default_rng(0)
        image = rng.integers(0, 9, size=(33, 29)).astype(np.float32)
        image += rng.normal(size=image.shape).astype(np.float32) * 0.5
        expected = scipy_ring_median(image, radius_in, width)
        result = ring_median_reference(image, radius_in=radius_in, width=width)
        assert_bit_identical(result, expected)

    @pytest.mark.parametrize("dtype", DTYPES)
    @pytest.mark.parametrize(("radius_in", "width"), RINGS)
    def test_against_reference(self, dtype, radius_in, width):
        rng = np.random.default_rng(0)
        image = rng.normal(size=(48, 57)).astype(dtype)
        image[rng.random(image.shape) < 0.15] = np.nan
        image[rng.random(image.shape) < 0.03] = np.inf
        image[rng.random(image.shape) < 0.03] = -np.inf
        # A hole wider than the ring, so some outputs see no finite value.
        image[10:40, 20:52] = np.nan
        result = ring_median(image, radius_in=radius_in, width=width)
        expected = ring_median_reference(image, radius_in=radius_in, width=width)
        assert_bit_identical(result, expected)
        if (radius_in, width) != (15, 5):
            assert np.isnan(result).any()
        assert np.isfinite(result).any()
        assert not np.isinf(result).any()

    def test_reference_rule_by_hand(self):
        # (1, 1) ring at (3, 3) holds 12 pixels; 3 are NaN, inf or -inf.
        image = np.arange(49, dtype=np.float64).reshape(7, 7)
        image[1, 3] = np.nan
        image[2, 2] = np.inf
        image[3, 5] = -np.inf
        footprint = ring_footprint(1, 1)
        window = image[1:6, 1:6][footprint]
        finite = np.sort(window[np.isfinite(window)])
        assert finite.size == 9
        expected = finite[finite.size // 2]
        assert ring_median(image, radius_in=1, width=1)[3, 3] == expected
        assert ring_median_reference(image, radius_in=1, width=1)[3, 3] == expected

    def test_across_internal_tiles(self):
        rng = np.random.default_rng(0)
        image = rng.normal(size=(150, 270)).astype(np.float32)
        image[rng.random(image.shape) < 0.3] = np.nan
        result = ring_median(image, radius_in=1, width=1)
        expected = ring_median_reference(image, radius_in=1, width=1)
        assert_bit_identical(result, expected)

    def test_all_nan(self):
        image = np.full((9, 11), np.nan, dtype=np.float32)
        result = ring_median(image, radius_in=3, width=2)
        assert result.dtype == np.float32
        assert np.isnan(result).all()

    def test_tiny_with_nan(self):
        image = np.array([[1.0, np.nan], [np.inf, 4.0]], dtype=np.float32)
        result = ring_median(image, radius_in=3, width=2)
        expected = ring_median_reference(image, radius_in=3, width=2)
        assert_bit_identical(result, expected)


def test_halo_makes_tile_exact():
    # The tiling contract: a chunk grown by ring_depth gives the exact interior.
    rng = np.random.default_rng(0)
    image = rng.normal(size=(90, 120)).astype(np.float32)
    full = ring_median(image, radius_in=3, width=2)
    depth = ring_depth(3, 2)
    block = image[30 - depth : 60 + depth, 40 - depth : 100 + depth]
    tile = ring_median(block, radius_in=3, width=2)[depth:-depth, depth:-depth]
    assert_bit_identical(tile, full[30:60, 40:100])


def test_shapes_and_errors():
    ring = {"radius_in": RingConfig().radius_in, "width": RingConfig().width}
    assert ring_median(np.zeros((0, 5), np.float32), **ring).shape == (0, 5)
    with pytest.raises(ValueError, match="image must be 2-D"):
        ring_median(np.zeros(10), **ring)
    with pytest.raises(ValueError, match="image must hold real numbers"):
        ring_median(np.zeros((5, 5), dtype=complex), **ring)


CACHE_PROBE = """
import numpy as np
from tilesky.kernels._ring import _ring_tile, ring_median
ring_median(np.ones((6, 5), dtype=np.float32), radius_in=1, width=1)
hits = sum(_ring_tile.stats.cache_hits.values())
misses = sum(_ring_tile.stats.cache_misses.values())
print(hits, misses)
"""


def test_compile_cache(tmp_path):
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path))

    def probe():
        done = subprocess.run(
            [sys.executable, "-c", CACHE_PROBE],
            env=env,
            capture_output=True,
            text=True,
            check=True,
            timeout=120,
        )
        return tuple(int(x) for x in done.stdout.split())

    assert probe() == (0, 1)
    assert any(tmp_path.rglob("*.nbi"))
    assert probe() == (1, 0)

"""Coarse-grid smoothfit against the per-pixel reference, and tiling exactness."""

import dataclasses
import itertools
import warnings

import numpy as np
import pytest
from _reference_kernels import smoothfit_binned_reference, smoothfit_reference
from scipy import ndimage

from tilesky.config import Config, ConfigError, SmoothFitConfig
from tilesky.kernels._mask import gaussian_depth
from tilesky.kernels._smoothfit import _grid_fit, smoothfit, smoothfit_depth

SF = Config().smoothfit


def _fit(image, mask=None, **params):
    """:func:`smoothfit` with the config's order, truncate and step unless given."""
    fit = {"order": SF.order, "truncate": SF.truncate, "step": SF.step}
    return smoothfit(image, mask, **{**fit, **params})


def _reference(image, mask=None, **params):
    """The per-pixel reference with the config's order and truncate unless given."""
    fit = {"order": SF.order, "truncate": SF.truncate}
    return smoothfit_reference(image, mask, **{**fit, **params})


def _scene(shape=(157, 203), seed=0, hole=(slice(55, 100), slice(85, 135))):
    """Noise on a gradient, a 25 % random mask and a NaN hole (45 x 50 px)."""
    rng = np.random.default_rng(seed)
    ny, nx = shape
    y, x = np.mgrid[0:ny, 0:nx]
    image = 10.0 + 0.02 * x - 0.01 * y + rng.normal(0.0, 1.0, shape)
    image = image.astype(np.float32)
    image[hole] = np.nan
    mask = rng.random(shape) < 0.25
    return image, mask


# -- (a) grid points are the per-pixel fit ---------------------------------


@pytest.mark.parametrize(
    ("order", "scale", "step"),
    [(2, 5.0, 6), (2, 20.0, 6), (2, 8.0, 5), (1, 5.0, 6), (0, 5.0, 10)],
)
def test_grid_points_match_reference(order, scale, step):
    image, mask = _scene()
    # A masked block wider than the window: NaN grid points and the
    # solver's low-order fallback around them.
    mask[100:150, 10:70] = True
    ref = _reference(image, mask, scale=scale, order=order, dtype=np.float64)[
        ::step, ::step
    ]
    grid, _ = _grid_fit(image, mask, scale=scale, order=order, truncate=4.0, step=step)
    # Grid index 0 is the point one step before the array.
    at_pixels = grid[1 : 1 + ref.shape[0], 1 : 1 + ref.shape[1]]
    if scale == 5.0 and order == 2:
        assert np.isnan(ref).any()
    np.testing.assert_array_equal(np.isnan(at_pixels), np.isnan(ref))
    # Relative to the data scale: inside masked blocks the fit is an
    # ill-conditioned extrapolation (about -3.5 against data near 10) where
    # summation-order rounding is amplified to ~1e-9 pointwise.
    scale_of_data = np.nanmax(np.abs(ref))
    np.testing.assert_allclose(
        at_pixels, ref, rtol=1e-9, atol=1e-9 * scale_of_data, equal_nan=True
    )
    # The public float32 result at grid pixels is the grid value itself.
    fast = _fit(image, mask, scale=scale, order=order, step=step)
    np.testing.assert_array_equal(fast[::step, ::step], at_pixels.astype(np.float32))


@pytest.mark.parametrize(
    ("order", "scale", "step", "binning"),
    [(2, 8.0, 6, 3), (2, 8.0, 6, 2), (1, 20.0, 10, 5), (0, 6.0, 6, 6), (2, 25.0, 6, 3)],
)
def test_binned_grid_points_match_direct_least_squares(order, scale, step, binning):
    # Odd shape: the last bin row and column are partial.
    image, mask = _scene(shape=(157, 203))
    ref = smoothfit_binned_reference(
        image,
        mask,
        scale=scale,
        order=order,
        truncate=4.0,
        step=step,
        binning=binning,
    )
    fast = _fit(image, mask, scale=scale, order=order, step=step, binning=binning)
    at_grid = fast[::step, ::step].astype(np.float64)
    np.testing.assert_array_equal(np.isnan(at_grid), np.isnan(ref))
    np.testing.assert_allclose(at_grid, ref, rtol=2e-6, atol=0, equal_nan=True)


def test_binning_keeps_the_fit_as_good():
    # The window is only widened by a 3-px box: against the known plane
    # under the noise, the binned fit is as accurate as the pixel fit.
    image, mask = _scene(shape=(240, 300), hole=(slice(0, 0), slice(0, 0)))
    y, x = np.mgrid[0:240, 0:300]
    truth = 10.0 + 0.02 * x - 0.01 * y
    pixel = _fit(image, mask, scale=25.0, step=6) - truth
    binned = _fit(image, mask, scale=25.0, step=6, binning=3) - truth
    assert not np.array_equal(pixel, binned)
    rms_pixel, rms_binned = np.std(pixel), np.std(binned)
    assert abs(rms_binned / rms_pixel - 1) < 0.05
    # Their difference is well below the fit's own noise.
    assert np.std(pixel - binned) < 0.3 * rms_pixel


def test_step_one_is_the_reference():
    image, mask = _scene((61, 77), seed=3, hole=(slice(20, 30), slice(5, 12)))
    fast = _fit(image, mask, scale=4.0, step=1)
    ref = _reference(image, mask, scale=4.0)
    np.testing.assert_allclose(fast, ref, rtol=2.0**-23, atol=0, equal_nan=True)


# -- (b) smooth fields: interpolation error below 1e-4 ------------------------

_NY, _NX = 240, 300
_Y, _X = np.mgrid[0:_NY, 0:_NX].astype(np.float64)


def _gauss(cy, cx, sigma):
    return np.exp(-((_X - cx) ** 2 + (_Y - cy) ** 2) / (2.0 * sigma**2))


def _blemish(cy, cx, width):
    # The notebook's blemish: sinc(r / (w pi)) = sin(r / w) / (r / w).
    return np.sinc(np.hypot(_X - cx, _Y - cy) / (width * np.pi))


SMOOTH_FIELDS = {
    "plane": 0.5 + 0.003 * _X - 0.002 * _Y,
    "quadratic": 1.0
    + 1e-5 * (_X - 150) ** 2
    - 2e-5 * (_X - 150) * (_Y - 120)
    + 1.5e-5 * (_Y - 120) ** 2,
    "gaussians": _gauss(90, 100, 60.0) - 0.7 * _gauss(170, 230, 80.0),
    "sincs": _blemish(110, 160, 60.0) - 0.6 * _blemish(200, 40, 80.0),
}


@pytest.mark.parametrize("name", list(SMOOTH_FIELDS))
def test_smooth_field_matches_reference(name):
    field = SMOOTH_FIELDS[name]
    image = field.astype(np.float32)
    mask = np.random.default_rng(1).random(image.shape) < 0.3
    fast = _fit(image, mask, scale=20.0)
    ref = _reference(image, mask, scale=20.0)
    assert np.isfinite(fast).all()
    assert np.abs(fast - ref).max() < 1e-4
    if name in ("plane", "quadratic"):
        # The order-2 fit and Keys interpolation both reproduce quadratics.
        np.testing.assert_allclose(fast, field, atol=1e-6)


# -- (c) tiling exactness ---------------------------------------------------


def _tiled(image, mask, tile, *, scale, step, binning=1):
    depth = smoothfit_depth(scale, SF.truncate, step=step)
    ny, nx = image.shape
    ty, tx = tile
    out = np.full(image.shape, -1.0, dtype=np.float32)
    for y0, x0 in itertools.product(range(0, ny, ty), range(0, nx, tx)):
        y1, x1 = min(y0 + ty, ny), min(x0 + tx, nx)
        hy0, hx0 = max(y0 - depth, 0), max(x0 - depth, 0)
        hy1, hx1 = min(y1 + depth, ny), min(x1 + depth, nx)
        assert hy0 % step == 0 and hx0 % step == 0
        part = _fit(
            image[hy0:hy1, hx0:hx1],
            mask[hy0:hy1, hx0:hx1],
            scale=scale,
            step=step,
            binning=binning,
        )
        out[y0:y1, x0:x1] = part[y0 - hy0 : y1 - hy0, x0 - hx0 : x1 - hx0]
    return out


@pytest.mark.parametrize(
    ("scale", "step", "tile"),
    [
        (5.0, 6, (30, 30)),
        (5.0, 6, (60, 90)),
        (5.0, 6, (18, 24)),  # smaller than the depth (36)
        (20.0, 6, (30, 30)),  # every tile smaller than the depth (96)
        (20.0, 6, (60, 90)),
        (6.0, 5, (30, 30)),
        (6.0, 10, (30, 60)),
    ],
)
def test_tiles_reproduce_whole_image_bit_for_bit(scale, step, tile):
    image, mask = _scene()
    whole = _fit(image, mask, scale=scale, step=step)
    assert np.isnan(whole).any() == (scale == 5.0)
    tiled = _tiled(image, mask, tile, scale=scale, step=step)
    np.testing.assert_array_equal(tiled, whole)  # NaN == NaN here


@pytest.mark.parametrize(
    ("scale", "step", "binning", "tile"),
    [
        (5.0, 6, 3, (18, 24)),  # smaller than the depth (36)
        (20.0, 6, 3, (30, 30)),
        (20.0, 6, 2, (60, 90)),
        (25.0, 30, 10, (60, 60)),  # the bridge's grid, tile < depth (150)
    ],
)
def test_binned_tiles_reproduce_whole_image_bit_for_bit(scale, step, binning, tile):
    image, mask = _scene()
    whole = _fit(image, mask, scale=scale, step=step, binning=binning)
    tiled = _tiled(image, mask, tile, scale=scale, step=step, binning=binning)
    np.testing.assert_array_equal(tiled, whole)


def test_short_halo_is_not_exact():
    # The depth is needed: one step less changes some pixels.
    image, mask = _scene()
    scale, step = 5.0, 6
    whole = _fit(image, mask, scale=scale, step=step)
    depth = smoothfit_depth(scale, SF.truncate, step=step) - 2 * step
    part = _fit(image[:, 60 - depth :], mask[:, 60 - depth :], scale=scale, step=step)
    assert not np.array_equal(part[:, depth : depth + 30], whole[:, 60:90])


def test_depth():
    assert smoothfit_depth(20.0, 4.0, step=6) == 96
    assert smoothfit_depth(SF.scale, SF.truncate, step=SF.step) == 114
    for scale, truncate, step in [(20.0, 4.0, 6), (5.0, 3.0, 5), (7.3, 4.0, 10)]:
        depth = smoothfit_depth(scale, truncate, step=step)
        assert depth % step == 0
        assert depth - step < gaussian_depth(scale, truncate) + 2 * step <= depth


# -- (d) docstring example, (e) holes ----------------------------------------


def test_plane_is_reproduced():
    y, x = np.mgrid[0:60, 0:50]
    plane = (0.01 * x + 0.02 * y).astype(np.float32)
    result = _fit(plane, scale=5.0)
    assert result.dtype == np.float32
    assert result.shape == plane.shape
    assert np.allclose(result, plane, atol=1e-4)


def test_masked_region_wider_than_window_is_nan_without_warnings():
    image, _ = _scene((200, 220), seed=5, hole=(slice(0, 0), slice(0, 0)))
    mask = np.zeros(image.shape, dtype=bool)
    mask[50:150, 60:170] = True
    scale, step = 5.0, 6
    radius = gaussian_depth(scale, SF.truncate)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = _fit(image, mask, scale=scale, step=step)
    # Chebyshev distance to the nearest unmasked pixel: the window is square.
    dist = ndimage.distance_transform_cdt(mask, metric="chessboard")
    assert np.isnan(result[dist >= radius + step]).all()
    assert np.isfinite(result[dist <= radius - step + 1]).all()
    assert np.isnan(result[100, 115])
    ref = _reference(image, mask, scale=scale)
    assert np.array_equal(np.isnan(ref), dist > radius)


def test_input_layouts_give_identical_results():
    image, mask = _scene((70, 90), seed=2, hole=(slice(10, 20), slice(30, 45)))
    expected = _fit(image, mask, scale=4.0)
    big = np.zeros((140, 90), dtype=np.float32)
    big[::2] = image
    view = big[::2]  # non-contiguous
    view.flags.writeable = False
    for variant in (image.astype(np.float64), image.astype(">f4"), view):
        np.testing.assert_array_equal(_fit(variant, mask, scale=4.0), expected)


def test_invalid_arguments():
    image = np.zeros((20, 20), dtype=np.float32)
    with pytest.raises(ValueError, match="step must be an integer >= 1"):
        _fit(image, scale=5.0, step=0)
    with pytest.raises(ValueError, match="step must be an integer >= 1"):
        smoothfit_depth(20.0, 4.0, step=2.5)
    with pytest.raises(ValueError, match="order must be 0, 1 or 2"):
        _fit(image, scale=5.0, order=3)
    with pytest.raises(ValueError, match="scale must be > 0"):
        _fit(image, scale=0.0)
    with pytest.raises(ValueError, match="truncate must be > 0"):
        _fit(image, scale=5.0, truncate=0.0)
    with pytest.raises(ValueError, match="mask shape"):
        _fit(image, np.zeros((20, 21), dtype=bool), scale=5.0)
    with pytest.raises(ValueError, match="binning must be an integer >= 1 that"):
        _fit(image, scale=5.0, step=6, binning=4)
    with pytest.raises(ValueError, match="binning must be an integer >= 1 that"):
        _fit(image, scale=5.0, step=6, binning=0)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("scale", 0.0),
        ("scale", -1.0),
        ("truncate", 0.0),
        ("order", 3),
        ("step", 0),
        ("binning", 4),
        ("binning", 0),
    ],
)
def test_same_bounds_as_config(field, value):
    # One rule: what SmoothFitConfig rejects, the kernel rejects too.
    params = dataclasses.asdict(SF)
    with pytest.raises(ConfigError, match=f"smoothfit.{field} must be"):
        SmoothFitConfig(**{**params, field: value})
    # The kernel's parameters, by the config's names.
    kernel = {k: params[k] for k in ("scale", "order", "truncate", "step", "binning")}
    with pytest.raises(ValueError, match=f"^{field} must be"):
        smoothfit(np.zeros((12, 12), np.float32), **{**kernel, field: value})


def test_bridge_blend_equals_the_numpy_expression():
    from tilesky.stages._smoothfit import _blend

    rng = np.random.default_rng(3)
    shape = (37, 53)
    value = rng.normal(1, 0.1, shape).astype(np.float32)
    weight = np.clip(rng.uniform(-0.3, 1.3, shape), 0, 1).astype(np.float32)
    bridge = rng.normal(1, 0.1, shape).astype(np.float32)
    value[rng.random(shape) < 0.1] = np.nan
    bridge[rng.random(shape) < 0.1] = np.nan
    with np.errstate(invalid="ignore"):
        blend = weight * value + (np.float32(1) - weight) * bridge
    want = np.where((weight > 0) & ~np.isnan(value), blend, bridge)
    want = np.where(np.isnan(bridge), value, want).astype(np.float32)
    got = np.empty(shape, np.float32)
    _blend(value, weight, bridge, got)
    np.testing.assert_array_equal(got, want)


def test_automatic_binning_divides_the_step_and_stays_small():
    # The largest divisor of the step up to an eighth of the scale: a user
    # who changes the step never meets a binning they did not set.
    assert (SF.fit_binning, SF.bridge_fit_binning) == (3, 10)
    assert SmoothFitConfig(step=16).fit_binning == 2
    assert SmoothFitConfig(step=7).fit_binning == 1
    assert SmoothFitConfig(scale=5.0).fit_binning == 1
    assert SmoothFitConfig(binning=2).fit_binning == 2
    assert SmoothFitConfig(bridge_scale=0.0).bridge_fit_binning == 1

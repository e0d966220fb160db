"""Survey skies: a noise model that follows depth, masks grown by size,
large holes bridged; each step exact on any tiling."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from tilesky import estimate_background
from tilesky.kernels._grow import grow_by_size, grow_depth
from tilesky.kernels._smoothfit import smoothfit
from tilesky.simulate import simulate_scene


@pytest.fixture(scope="module")
def ramp():
    """A 5x noise ramp across a 301x437 scene, with its inverse variance."""
    ds = simulate_scene((301, 437), seed=11, depth_variation=5.0).compute()
    weight = 1.0 / ds.noise_rms.values.astype(np.float64) ** 2
    return ds.scene.values, weight


@pytest.fixture(scope="module")
def uniform():
    return simulate_scene((301, 437), seed=11).compute().scene.values


def test_uniform_depth_keeps_the_global_noise_bit_for_bit(uniform):
    auto = estimate_background(uniform)
    flat = estimate_background(uniform, overrides=["noise_mode=global"])
    assert auto.attrs["noise_model"]["model"] == "uniform"
    assert auto.attrs["noise_model"]["rms_ratio"] < 1.5
    for name in ("background", "mask"):
        np.testing.assert_array_equal(auto[name].values, flat[name].values)


def test_varying_depth_is_detected_and_changes_the_masks(ramp):
    scene, _ = ramp
    auto = estimate_background(scene)
    flat = estimate_background(scene, overrides=["noise_mode=global"])
    model = auto.attrs["noise_model"]
    assert model["model"] == "local map"
    assert model["rms_ratio"] > 2.5
    # The global threshold masks noise on the shallow (right) side.
    right = np.s_[:, 300:]
    assert auto.mask.values[right].mean() < flat.mask.values[right].mean() - 0.05


@pytest.mark.parametrize("chunks", [(60, 90), (120, 150)])
def test_depth_models_are_exact_on_tiles(ramp, chunks):
    """The estimated map (a 30-px mesh, its fill, filter and interpolation)
    and the weight's map give the whole-image result on tiles smaller than
    the smooth fit's halo."""
    scene, weight = ramp
    for kw in ({}, {"weight": weight}):
        mono = estimate_background(scene, **kw)
        tiled = estimate_background(scene, chunks=chunks, **kw)
        assert tiled.attrs["noise_model"] == mono.attrs["noise_model"]
        np.testing.assert_array_equal(tiled.mask.values, mono.mask.values)
        np.testing.assert_array_equal(tiled.background.values, mono.background.values)


def test_weight_map_sets_thresholds_up_to_a_scale(ramp):
    scene, weight = ramp
    run = estimate_background(scene, weight=weight)
    assert run.attrs["noise_model"] == {"model": "weight"}
    # A weight map off by a constant (an exposure-time map, a forgotten
    # gain) gives the same masks: the level is measured on the whitened data.
    scaled = estimate_background(scene, weight=weight * 1234.5)
    agree = np.mean(scaled.mask.values == run.mask.values)
    assert agree > 0.9999
    # Without the weight map the threshold ignores depth: different masks.
    flat = estimate_background(scene, overrides=["noise_mode=global"])
    assert np.mean(flat.mask.values != run.mask.values) > 0.01


def _blobs(shape, seed):
    rng = np.random.default_rng(seed)
    return ndimage.gaussian_filter(rng.normal(size=shape), 6) > 0.03


def test_growth_follows_the_size_of_each_region():
    mask = np.zeros((201, 201), bool)
    yy, xx = np.mgrid[:201, :201]
    mask[(yy - 100) ** 2 + (xx - 60) ** 2 <= 20**2] = True  # radius 20
    mask[100, 170] = True  # a point source
    grown = grow_by_size(mask, factor=1.0, min_thickness=4, max_thickness=40)
    assert np.all(grown[mask])
    # The disc grows to about twice its radius (chamfer: within 6 %).
    along = np.flatnonzero(grown[100, :130])
    assert 60 - along[0] == pytest.approx(40, abs=3)
    assert 60 - along[0] == along[-1] - 60
    # The point source is thinner than min_thickness: untouched.
    assert grown[95:106, 160:181].sum() == 1


def _chamfer(shape):
    # 3-4 chamfer distance between every pair of pixels: 3 per axis step,
    # 4 per diagonal one, i.e. 3 max(|dy|, |dx|) + min(|dy|, |dx|).
    yy, xx = np.indices(shape).reshape(2, -1)
    dy = np.abs(yy[:, None] - yy[None, :])
    dx = np.abs(xx[:, None] - xx[None, :])
    return 3 * np.maximum(dy, dx) + np.minimum(dy, dx)


@pytest.mark.parametrize("factor", [0.5, 1.0, 2.5])
def test_growth_equals_its_definition_pixel_by_pixel(factor):
    # The compiled two-pass sweeps against the definition, all pairs: the
    # thickness is the chamfer distance to the nearest unmasked pixel
    # (capped; outside the array does not count), a pixel thick enough
    # reaches floor((1 + factor) * thickness) minus the distance.
    mask = _blobs((37, 53), seed=5)
    mask[:, :4] = True  # a region touching the edge
    mask[30, 40] = True  # thinner than min_thickness
    d = _chamfer(mask.shape)
    flat = mask.ravel()
    cap, low = 3 * 9, 3 * 2
    thick = np.where(flat, np.minimum(cap, d[:, ~flat].min(axis=1)), 0)
    start = np.where(thick < low, -1, np.floor((1.0 + factor) * thick)).astype(int)
    reach = (start[None, :] - d).max(axis=1)
    ref = (flat | (reach >= 0)).reshape(mask.shape)
    got = grow_by_size(mask, factor=factor, min_thickness=2, max_thickness=9)
    np.testing.assert_array_equal(got, ref)
    assert got.sum() > mask.sum()


@pytest.mark.parametrize("factor", [0.5, 1.0, 2.0])
def test_growth_is_exact_on_tiles_with_its_halo(factor):
    mask = _blobs((300, 410), seed=3)
    kw = {"factor": factor, "min_thickness": 4, "max_thickness": 24}
    whole = grow_by_size(mask, **kw)
    halo = grow_depth(factor, 24)
    for y0, y1, x0, x1 in [(0, 70, 0, 90), (70, 230, 90, 300), (230, 300, 300, 410)]:
        a, b = max(0, y0 - halo), min(300, y1 + halo)
        c, d = max(0, x0 - halo), min(410, x1 + halo)
        tile = grow_by_size(mask[a:b, c:d], **kw)
        np.testing.assert_array_equal(
            tile[y0 - a : y1 - a, x0 - c : x1 - c], whole[y0:y1, x0:x1]
        )
    # With a third of the halo a tile misses reach from outside it.
    short = halo // 3
    a, b, c, d = 70 - short, 230 + short, 90 - short, 300 + short
    tile = grow_by_size(mask[a:b, c:d], **kw)
    assert not np.array_equal(
        tile[70 - a : 230 - a, 90 - c : 300 - c], whole[70:230, 90:300]
    )


def test_order0_fade_does_not_extrapolate_a_sliver():
    """A quadratic fitted to the sliver of pixels a mostly masked window
    holds extrapolates wildly; the coverage-blended fit fades to the
    window's weighted mean there and stays near the sky."""
    rng = np.random.default_rng(0)
    _, xx = np.mgrid[:300, :300]
    sky = 1.0 + 0.002 * xx
    image = (sky + rng.normal(0, 0.1, sky.shape)).astype(np.float32)
    masked = xx >= 6  # only a 6-px strip is usable
    kw = {"scale": 25.0, "order": 2, "truncate": 4.0, "step": 6}
    plain = smoothfit(image, masked, **kw)
    bridged, weight = smoothfit(image, masked, coverage=(0.02, 0.15), order0=True, **kw)
    reached = np.isfinite(plain)
    assert np.max(np.abs(plain - sky)[reached]) > 50
    assert np.max(np.abs(bridged - sky)[reached]) < 2
    # Where the window is well covered nothing changes.
    far = np.ones_like(masked)
    np.testing.assert_array_equal(
        smoothfit(image, ~far, coverage=(0.02, 0.15), order0=True, **kw)[0],
        smoothfit(image, ~far, **kw),
    )
    assert weight.min() == 0 and weight.max() == 1


def test_bridge_is_exact_on_tiles():
    scene = simulate_scene((301, 437), seed=4).compute().scene.values.copy()
    yy, xx = np.mgrid[:301, :437]
    scene += (3.0 * np.exp(-((yy - 150) ** 2 + (xx - 200) ** 2) / 2 / 40**2)).astype(
        np.float32
    )
    over = ["smoothfit.bridge_scale=60", "source_mask.grow_factor=1.0"]
    mono = estimate_background(scene, overrides=over)
    tiled = estimate_background(scene, overrides=over, chunks=(60, 90))
    np.testing.assert_array_equal(tiled.mask.values, mono.mask.values)
    np.testing.assert_array_equal(tiled.background.values, mono.background.values)


@pytest.fixture(scope="module")
def smooth_disk():
    """A faint exponential disk (Re 25 px, centre 1.5 sigma) on a 500x500
    sky smooth on its scale (blemishes 300-600 px wide, <= 0.15)."""
    ds = simulate_scene(
        (500, 500),
        seed=4,
        blemish_width_range=(300.0, 600.0),
        blemish_amplitude_range=(0.0, 0.15),
    ).compute()
    yy, xx = np.mgrid[:500, :500]
    r = np.hypot(yy - 250.0, xx - 210.0)
    disk = 0.15 * np.exp(-1.678 * r / 25.0)
    return ds.scene.values + disk.astype(np.float32), r


_NO_CELLS = ["source_mask.extended_fraction=0"]


def _gate(limit):
    return [f"source_mask.auto_coarse_fraction={limit}"]


def test_coarse_gate_switches_on_only_where_the_sky_is_smooth(smooth_disk, uniform):
    from tilesky.backends import WholeImage
    from tilesky.config import Config
    from tilesky.pipeline import run_pipeline

    cfg = Config().with_overrides(_gate(0.15))
    scene, r = smooth_disk
    on = run_pipeline(scene, cfg, WholeImage())
    assert on.coarse_gate["extended"]
    # The disk (out to 1.8 Re) is masked only with the extended scales
    # (the binned cells, on by default, are left out here).
    plain = estimate_background(scene, overrides=_NO_CELLS)
    ring = r < 45
    assert np.asarray(on.arrays["mask"])[ring].mean() > 0.9
    assert plain.mask.values[ring].mean() < 0.4
    # On the notebook's blemishes (10 sigma over 100 px) the coarse scales
    # would mask the sky itself: the gate keeps the configured masks, bit
    # for bit.
    off = run_pipeline(uniform, cfg, WholeImage())
    assert not off.coarse_gate["extended"]
    assert off.coarse_gate["added_fraction"] > 0.15
    np.testing.assert_array_equal(
        np.asarray(off.arrays["mask"]), estimate_background(uniform).mask.values
    )
    no_gate = Config().with_overrides(_NO_CELLS)
    assert run_pipeline(uniform, no_gate, WholeImage()).coarse_gate is None
    # The decision and its evidence reach the result's attributes.
    ds = estimate_background(scene, chunks=None, overrides=_gate(0.15))
    assert ds.attrs["coarse_gate"] == on.coarse_gate
    assert "coarse_gate" not in plain.attrs


def test_coarse_gate_is_exact_on_tiles(smooth_disk):
    """The gate's fraction (a halo'd kernel and an exact sum) and the
    extended masks, on odd tiles smaller than their halo."""
    from tilesky.config import Config
    from tilesky.stages._source_mask import _params, depth, extended_config

    scene = smooth_disk[0][:301, :437]
    halo = depth(**_params(extended_config(Config())))
    assert halo > 90
    over = _gate(1.0)
    mono = estimate_background(scene, overrides=over)
    for chunks in [(60, 90), (97, 211)]:
        tiled = estimate_background(scene, overrides=over, chunks=chunks)
        np.testing.assert_array_equal(tiled.mask.values, mono.mask.values)
        np.testing.assert_array_equal(tiled.background.values, mono.background.values)
    # The extended masks are wider than the configured ones.
    assert mono.mask.values.mean() > estimate_background(scene).mask.values.mean()

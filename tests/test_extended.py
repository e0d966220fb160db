"""Extended sources found on binned cells (stages._extended, kernels._binned)."""

from __future__ import annotations

import numpy as np
import pytest

from tilesky import estimate_background
from tilesky.config import ConfigError, load_config
from tilesky.kernels._binned import (
    _correlate,
    _correlate_reference,
    _kernels,
    _solve,
    _solve_first,
    _surround,
    cell_means,
    detect_cells,
    detect_depth,
)
from tilesky.simulate import simulate_scene

OFF = ["source_mask.extended_fraction=0"]


@pytest.fixture(scope="module")
def faint_disk():
    """A 0.8 sigma exponential disk (Re 30 px) on a 301x437 sky smooth on
    its scale (blemishes 300-600 px wide, <= 0.15), and the radius map."""
    shape = (301, 437)
    ds = simulate_scene(
        shape,
        seed=4,
        blemish_width_range=(300.0, 600.0),
        blemish_amplitude_range=(0.0, 0.15),
    ).compute()
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    r = np.hypot(yy - 150.0, xx - 230.0)
    disk = 0.08 * np.exp(-1.678 * r / 30.0)
    return ds.scene.values + disk.astype(np.float32), r, ds.truth.values


@pytest.fixture(scope="module")
def notebook_sky():
    return simulate_scene((301, 437), seed=11).compute().scene.values


def test_a_faint_disk_is_masked_and_keeps_its_light(faint_disk):
    scene, r, truth = faint_disk
    on = estimate_background(scene)
    off = estimate_background(scene, overrides=OFF)
    gate = on.attrs["coarse_gate"]["extended_cells"]
    assert gate["used"] and gate["added_fraction"] < gate["limit"]
    inner = r < 30
    assert on.mask.values[inner].mean() > 0.95
    assert off.mask.values[inner].mean() < 0.5
    # Without the cells the background takes all the disk's light (and
    # more, with the notebook sources around it); with them, it keeps much
    # of it (a 0.8 sigma disk is masked out to ~1.5 Re).
    disk = 0.08 * np.exp(-1.678 * r / 30.0)
    ap = r < 4 * 30
    flux = disk[ap].sum()
    stolen_on = (on.background.values - truth)[ap].sum() / flux
    stolen_off = (off.background.values - truth)[ap].sum() / flux
    assert stolen_off > 1.0
    assert -0.2 < stolen_on < 0.75
    assert np.std(on.background.values - truth) < np.std(off.background.values - truth)


def test_the_notebook_sky_keeps_its_masks_bit_for_bit(notebook_sky):
    # Its blemishes (up to 10 sigma over ~100 px) are structure of the sky
    # itself on the cells' scales: they would be masked over much of the
    # image, so the gate leaves the run as it was.
    on = estimate_background(notebook_sky)
    gate = on.attrs["coarse_gate"]["extended_cells"]
    assert not gate["used"] and gate["added_fraction"] > gate["limit"]
    off = estimate_background(notebook_sky, overrides=OFF)
    np.testing.assert_array_equal(on.mask.values, off.mask.values)
    np.testing.assert_array_equal(on.background.values, off.background.values)
    assert "coarse_gate" not in off.attrs


@pytest.mark.parametrize(
    "extra",
    [
        [],
        ["noise_mode='local'"],
        ["source_mask.extended_grow=0.5", "source_mask.extended_max_thickness=60"],
    ],
)
def test_extended_cells_are_exact_on_tiles(faint_disk, extra):
    """Odd shape, tiles smaller than the cells' halo (1200+ px)."""
    scene = faint_disk[0]
    over = [*extra]
    mono = estimate_background(scene, overrides=over)
    assert mono.attrs["coarse_gate"]["extended_cells"]["used"]
    for chunks in [(60, 90), (97, 211)]:
        tiled = estimate_background(scene, overrides=over, chunks=chunks)
        np.testing.assert_array_equal(tiled.mask.values, mono.mask.values)
        np.testing.assert_array_equal(tiled.background.values, mono.background.values)
        assert tiled.attrs["coarse_gate"] == mono.attrs["coarse_gate"]


def test_extended_cells_are_exact_on_tiles_with_a_weight_map(faint_disk):
    scene = faint_disk[0].copy()
    weight = np.ones(scene.shape)
    weight[:, 200:] = 4.0
    scene[:150, :40] = np.nan
    mono = estimate_background(scene, weight=weight)
    assert mono.attrs["coarse_gate"]["extended_cells"]["used"]
    tiled = estimate_background(scene, weight=weight, chunks=(60, 90))
    np.testing.assert_array_equal(tiled.mask.values, mono.mask.values)
    np.testing.assert_array_equal(tiled.background.values, mono.background.values)


def test_cell_means_of_partial_boxes_with_mask_and_nan():
    rng = np.random.default_rng(1)
    data = rng.normal(size=(23, 17)).astype(np.float32)
    data[3, 4] = np.nan
    mask = rng.random(data.shape) < 0.3
    means, _, counts = cell_means(data, mask, box_size=(10, 6))
    assert means.shape == (3, 3)
    for i in range(3):
        for j in range(3):
            box = (slice(10 * i, 10 * i + 10), slice(6 * j, 6 * j + 6))
            ok = np.isfinite(data[box]) & ~mask[box]
            assert counts[i, j] == ok.sum()
            np.testing.assert_allclose(means[i, j], data[box][ok].mean(), rtol=1e-5)
    empty, _, n = cell_means(data, np.ones(data.shape, bool), box_size=(10, 6))
    assert np.isnan(empty).all() and (n == 0).all()


def test_quadratic_surround_follows_a_curved_sky_to_the_edges():
    yy, xx = np.mgrid[:40, :50].astype(np.float64)
    sky = 1.0 + 0.02 * xx - 0.01 * yy + 3e-4 * xx**2 + 2e-4 * xx * yy - 1e-4 * yy**2
    weights = np.ones(sky.shape)
    weights[10:20, 5:30] = 0.0  # a hole
    fit = _surround(sky, weights, 8.0, 3.0, order=2)
    np.testing.assert_allclose(fit, sky, atol=1e-8)
    # A plane cannot follow the curvature: the order matters.
    assert np.abs(_surround(sky, weights, 8.0, 3.0, order=1) - sky).max() > 1e-2


def test_solve_matches_numpy():
    rng = np.random.default_rng(3)
    a = rng.normal(size=(4, 4, 5, 6))
    b = rng.normal(size=(4, 5, 6))
    x = _solve([[a[i, j] for j in range(4)] for i in range(4)], list(b))
    ref = np.linalg.solve(
        np.moveaxis(a, (0, 1), (-2, -1)), np.moveaxis(b, 0, -1)[..., None]
    )[..., 0]
    np.testing.assert_allclose(np.stack(x, axis=-1), ref, rtol=1e-9, atol=1e-12)


def test_solve_first_equals_the_reference_solve_bit_for_bit():
    # The compiled per-cell elimination the pipeline runs against the
    # elementwise numpy one, on systems that need pivoting, singular ones
    # (all zero: no coverage) and NaN ones.
    rng = np.random.default_rng(4)
    n, shape = 6, (7, 9)
    a = rng.normal(size=(n, n, *shape))
    a[0, 0, 0, :] = 0.0  # a zero leading entry: the rows swap
    a[:, :, 1, 1] = 0.0  # singular
    a[2, 3, 2, 2] = np.nan
    a[:, 0, 3, 3] = a[:, 1, 3, 3]  # two equal columns
    b = rng.normal(size=(n, *shape))
    ref = _solve([[a[i, j] for j in range(n)] for i in range(n)], list(b))[0]
    index = np.arange(n * n).reshape(n, n)
    got = _solve_first(a.reshape(n * n, *shape), index, b)
    np.testing.assert_array_equal(got, ref)
    assert np.isnan(got[1, 1]) and np.isnan(got[2, 2])


@pytest.mark.parametrize("shape", [(83, 97), (5, 140), (140, 3), (1, 1)])
def test_correlate_equals_scipy_bit_for_bit(shape):
    # The compiled correlation against scipy.ndimage.correlate1d: the
    # symmetric, antisymmetric and general paths, kernels longer than the
    # axis, and the sign of zeros.
    rng = np.random.default_rng(5)
    a = rng.normal(size=shape)
    a[a > 1.5] = 0.0
    a[a < -1.5] = -0.0
    kernels = [k for s in (0.5, 2.0, 20.0) for k in _kernels(s, 3.0, 4)]
    kernels.append(rng.normal(size=7))
    for k in kernels:
        for axis in (0, 1):
            ref = _correlate_reference(a, k, axis)
            got = _correlate(a, k, axis)
            np.testing.assert_array_equal(got, ref)
            np.testing.assert_array_equal(np.signbit(got), np.signbit(ref))


def _cells(shape, amplitude, seed=0):
    rng = np.random.default_rng(seed)
    counts = np.full(shape, 100.0)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    disk = amplitude * np.exp(-np.hypot(yy - 30, xx - 40) / 3.0)
    values = 0.3 + 0.002 * xx + disk + rng.normal(size=shape) * 0.1 / 10
    return values, counts, np.full(shape, 0.01), np.hypot(yy - 30, xx - 40)


def test_detect_cells_finds_a_faint_disk_and_not_the_noise():
    kw = {
        "sigmas": (1.0, 2.0, 4.0),
        "surround": 20.0,
        "truncate": 3.0,
        "n_sigma": 4.0,
        "factor": 0.0,
        "max_thickness": 20,
    }
    values, counts, var, r = _cells((60, 80), 0.05)
    found = detect_cells(values, counts, var, **kw).astype(bool)
    assert found[r < 4].all()
    assert found[r > 20].mean() < 0.01
    noise, *_ = _cells((60, 80), 0.0, seed=5)
    assert detect_cells(noise, counts, var, **kw).sum() == 0
    grown = detect_cells(values, counts, var, **{**kw, "factor": 1.0})
    assert grown.sum() > found.sum()
    assert detect_depth(**{k: v for k, v in kw.items() if k != "n_sigma"}) >= 2 * 60


def test_notebook_preset_and_validation():
    assert load_config(preset="notebook").source_mask.extended_fraction == 0
    assert load_config().source_mask.extended_fraction > 0
    for bad in (
        "source_mask.extended_fraction=1.5",
        "source_mask.extended_sigma=[]",
        "source_mask.extended_n_sigma=0",
        "source_mask.extended_max_thickness=0",
    ):
        with pytest.raises(ConfigError, match=r"source_mask\.extended"):
            load_config(overrides=[bad])


def test_extended_cells_on_a_distributed_cluster(faint_disk):
    """The added-fraction reduction runs on a map computed from held
    inputs: on a cluster its blocks are tasks, not held results, and the
    reduction is still the monolithic one."""
    from distributed import Client, LocalCluster

    scene = faint_disk[0]
    mono = estimate_background(scene, chunks=None)
    with (
        LocalCluster(
            n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None
        ) as cluster,
        Client(cluster),
    ):
        tiled = estimate_background(scene, chunks=(97, 211))
    assert tiled.attrs["coarse_gate"]["extended_cells"]["used"]
    assert tiled.attrs["coarse_gate"] == mono.attrs["coarse_gate"]
    np.testing.assert_array_equal(tiled.background.values, mono.background.values)

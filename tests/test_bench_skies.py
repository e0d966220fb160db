"""The benchmark skies: seeded, consistent with their truth, metrics that measure."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.skies import SIGMA, build, residual_stats, score, stolen_flux

SHAPE = (300, 300)


@pytest.fixture(scope="module")
def mosaic():
    return build("mosaic", shape=SHAPE)


def test_same_seed_same_pixels_other_seed_other_pixels():
    a, b = build("lsb", shape=SHAPE), build("lsb", shape=SHAPE)
    np.testing.assert_array_equal(a.scene, b.scene)
    np.testing.assert_array_equal(a.catalogue["x"], b.catalogue["x"])
    c = build("lsb", shape=SHAPE, seed=5)
    assert not np.array_equal(a.catalogue["x"], c.catalogue["x"])


def test_scene_is_truth_plus_noise_plus_sources():
    sky = build("dither", shape=SHAPE)
    noise = sky.scene - sky.truth - sky.sources
    # Per exposure-count level, the scatter follows sigma0 / sqrt(n_exp).
    n_exp = np.rint(sky.weight * 0.2**2).astype(int)
    assert n_exp.min() == 1 and n_exp.max() > 3
    for n in np.unique(n_exp):
        sel = n_exp == n
        if sel.sum() > 2000:
            assert np.std(noise[sel]) == pytest.approx(0.2 / np.sqrt(n), rel=0.05)
    np.testing.assert_allclose(sky.weight, 1 / sky.sigma**2)


def test_ramp_varies_five_times():
    sky = build("ramp", shape=SHAPE)
    assert sky.sigma.max() / sky.sigma.min() == pytest.approx(5.0)
    assert sky.sigma.min() == pytest.approx(SIGMA)


def test_mosaic_footprint(mosaic):
    sky = mosaic
    assert sky.scene.shape != SHAPE and sky.scene.shape[0] != sky.scene.shape[1]
    nan = np.isnan(sky.scene)
    assert 0.1 < nan.mean() < 0.4
    assert np.all(sky.weight[nan] == 0) and np.all(sky.weight[~nan] > 0)
    assert set(sky.catalogue["kind"]) == {"disk", "gaussian", "sersic", "star"}


def test_stolen_flux_is_one_when_the_background_takes_the_sources(mosaic):
    sky = mosaic
    assert np.all(stolen_flux(sky, sky.truth) == 0)
    np.testing.assert_allclose(stolen_flux(sky, sky.truth + sky.extended), 1.0)
    half = stolen_flux(sky, sky.truth + 0.5 * sky.extended)
    np.testing.assert_allclose(half, 0.5)
    # Paired: against the background of the bare scene, not the truth.
    offset = sky.truth + 0.01
    row = score(sky, offset + 0.25 * sky.extended, offset)
    assert row["paired_disk_median"] == pytest.approx(0.25)
    assert row["paired_total"] == pytest.approx(0.25)
    assert row["stolen_total"] > 0.25


def test_residual_stats_over_finite_pixels(mosaic):
    sky = mosaic
    bkg = sky.truth + 0.02
    bkg[:5] = np.nan
    stats = residual_stats(sky, bkg)
    assert stats["rms"] == pytest.approx(0.0, abs=1e-12)
    assert stats["rms0"] == pytest.approx(0.02)
    assert stats["nan_covered"] == int(np.isfinite(sky.scene[:5]).sum()) > 0

"""The pipeline: monolithic reference, tiled runs, the tiling invariant."""

import numpy as np
import pytest
import xarray as xr

from tilesky import estimate_background
from tilesky.config import Config

NOISE_SIGMA = 0.1


def _assert_same(tiled: xr.Dataset, mono: xr.Dataset):
    assert np.array_equal(tiled.mask.values, mono.mask.values)
    for name in ("background", "background_rms", "subtracted"):
        a, b = tiled[name].values, mono[name].values
        assert np.array_equal(np.isnan(a), np.isnan(b)), name
        diff = np.nanmax(np.abs(a.astype(np.float64) - b))
        assert diff <= 1e-6 * NOISE_SIGMA, (name, diff)
    for name in ("background_mesh", "background_rms_mesh", "n_pixels_mesh"):
        np.testing.assert_array_equal(tiled[name].values, mono[name].values)


@pytest.fixture(scope="module")
def crop(scene_2000):
    return scene_2000.scene.values[:1531, :1999]


@pytest.fixture(scope="module", params=["global", "local"])
def noise_mode(request):
    return request.param


@pytest.fixture(scope="module")
def mono_1000(scene_1000, noise_mode):
    return estimate_background(
        scene_1000.scene.values, overrides=[f"noise_mode={noise_mode}"]
    )


@pytest.fixture(scope="module")
def mono_crop(crop, noise_mode):
    return estimate_background(crop, overrides=[f"noise_mode={noise_mode}"])


@pytest.mark.parametrize("chunks", [128, 384, (512, 256), 2000])
def test_tiling_invariant_1000(scene_1000, mono_1000, noise_mode, chunks):
    tiled = estimate_background(
        scene_1000.scene.values, chunks=chunks, overrides=[f"noise_mode={noise_mode}"]
    )
    _assert_same(tiled, mono_1000)


@pytest.mark.parametrize("chunks", [128, 384, (512, 256), 2000])
def test_tiling_invariant_odd_crop(crop, mono_crop, noise_mode, chunks):
    tiled = estimate_background(
        crop, chunks=chunks, overrides=[f"noise_mode={noise_mode}"]
    )
    _assert_same(tiled, mono_crop)


@pytest.mark.parametrize("chunks", [128, (512, 256)])
def test_tiling_invariant_with_tiled_meshes(crop, mono_crop, noise_mode, chunks):
    """Meshes above WHOLE_MESH_BYTES are filled, filtered and interpolated
    tile by tile with halos (small ones as one block): same result."""
    from tilesky.backends import _tiled as stages

    before = stages.WHOLE_MESH_BYTES
    stages.WHOLE_MESH_BYTES = 0
    try:
        tiled = estimate_background(
            crop, chunks=chunks, overrides=[f"noise_mode={noise_mode}"]
        )
    finally:
        stages.WHOLE_MESH_BYTES = before
    _assert_same(tiled, mono_crop)


def test_small_meshes_are_one_block_large_ones_tiled(monkeypatch):
    import dask.array as da

    from tilesky.backends import _tiled as stages
    from tilesky.estimators import make_estimator, make_sigma_clip
    from tilesky.kernels._mesh import mesh_statistics

    rng = np.random.default_rng(1)
    image = da.from_array(rng.normal(size=(120, 90)).astype(np.float32), chunks=30)
    kw = {
        "box_size": (10, 10),
        "exclude_percentile": 10.0,
        "sigma_clip": make_sigma_clip(3.0, 10),
        "bkg_estimator": make_estimator("sextractor", "bkg"),
        "bkg_rms_estimator": make_estimator("std", "rms"),
    }
    whole = stages.Tiled().mesh_stats(mesh_statistics, image, None, name="m", **kw)
    assert [m.numblocks for m in whole] == [(1, 1)] * 3
    assert [m.dtype for m in whole] == [np.float32, np.float32, np.int32]
    monkeypatch.setattr(stages, "WHOLE_MESH_BYTES", 0)
    tiled = stages.Tiled().mesh_stats(mesh_statistics, image, None, name="m", **kw)
    assert [m.numblocks for m in tiled] == [(4, 3)] * 3
    for a, b in zip(whole, tiled, strict=True):
        np.testing.assert_array_equal(a.compute(), b.compute())


def test_power_of_two_boxes_take_chunks_as_given(scene_1000):
    cfg = Config().with_overrides(["first_mesh.box_size=8", "final_mesh.box_size=4"])
    image = scene_1000.scene.values[:700, :900]
    mono = estimate_background(image, config=cfg)
    tiled = estimate_background(image, config=cfg, chunks=128)
    assert (
        tiled.background.data.chunks
        if hasattr(tiled.background.data, "chunks")
        else True
    )
    _assert_same(tiled, mono)


def test_default_background_tracks_truth(scene_1000, mono_1000):
    resid = mono_1000.background.values - scene_1000.truth.values
    assert np.nanstd(resid) < 0.006
    assert mono_1000.mask.values.mean() > 0.05


@pytest.mark.parametrize("chunks", [128, (512, 256)])
def test_tiling_invariant_notebook_preset(scene_1000, chunks):
    image = scene_1000.scene.values[:700, :810]
    mono = estimate_background(image, preset="notebook")
    tiled = estimate_background(image, preset="notebook", chunks=chunks)
    _assert_same(tiled, mono)
    resid = mono.background.values - scene_1000.truth.values[:700, :810]
    assert np.nanstd(resid) < 0.012


@pytest.mark.parametrize(
    "overrides",
    [
        ["final_mesh.interpolator=spline", "first_mesh.interpolator=spline"],
        ["final_mesh.bkg_estimator=sextractor", "final_mesh.bkg_rms_estimator=mad_std"],
        ["final_mesh.bkg_estimator=biweight", "n_rounds=1", "final_method=mesh"],
        ["final_mesh.bkg_estimator=mmm", "final_mesh.filter_threshold=1.0"],
    ],
    ids=["spline", "sextractor", "biweight-mesh", "mmm-threshold"],
)
def test_tiling_invariant_other_choices(scene_1000, overrides):
    image = scene_1000.scene.values[:450, :510]
    mono = estimate_background(image, overrides=overrides)
    tiled = estimate_background(image, overrides=overrides, chunks=(120, 90))
    assert np.array_equal(tiled.mask.values, mono.mask.values)
    for name in ("background", "background_rms"):
        np.testing.assert_allclose(
            tiled[name].values, mono[name].values, rtol=2e-7, atol=0, equal_nan=True
        )

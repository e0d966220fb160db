"""Tests of tilesky.simulate: chunk independence, notebook fidelity, Zarr output."""

import dask
import numpy as np
import pytest
import xarray as xr

from tilesky.simulate import simulate_scene, write_simulation
from tilesky.simulate._model import _model_from_attrs

IMAGE_VARS = ["scene", "truth", "sky"]

# The notebook's printed blemish table (seed 4, 1000 x 1000, 8 blemishes).
NOTEBOOK_BLEMISHES = np.array(
    [
        [252.98236238344396, 967.0298390136767, 30.8986097667555, 0.17316542149594816],
        [434.7915324044458, 547.2322491757224, 68.65712826436294, 0.07494858701310703],
        [779.3829217937524, 972.6843599648844, 34.41600579314996, 0.6007427213777693],
        [197.68507460025307, 714.8159936743647, 125.66529677142358, 0.1679721837184038],
        [862.9932355992222, 697.7288245972708, 73.61466468797977, 0.7333801675105699],
        [983.4006771753128, 216.08949558037637, 124.89773067815628, 0.4084438601520147],
        [163.8422414046987, 976.2744547762418, 108.6305985935061, 0.5279088234179203],
        [597.3339439328593, 6.230255204589863, 116.62892985816984, 0.937571583950942],
    ]
)


def _raise_on_compute(*args, **kwargs):
    msg = "graph construction must not compute"
    raise RuntimeError(msg)


def _direct_truth(ds, rows, cols, *, blemishes=True):
    """Gradient + untapered sinc sum, evaluated the notebook's way with numpy."""
    ny, nx = ds.attrs["shape"]
    gy, gx = ds.attrs["gradient"]
    row, col = np.meshgrid(rows, cols, indexing="ij")
    sky = np.zeros(row.shape)
    for cx, cy, w, a in zip(
        ds.blemish_x.values,
        ds.blemish_y.values,
        ds.blemish_width.values,
        ds.blemish_amplitude.values,
        strict=True,
    ):
        if not blemishes:
            break
        r = np.sqrt((row - cy) ** 2 + (col - cx) ** 2)
        sky = sky + a * np.sinc(r / (w * np.pi))
    return sky + ((gy * row) / ny + (gx * col) / nx)


@pytest.fixture(scope="module")
def notebook_scene():
    ds = simulate_scene((2000, 2000), seed=4, chunks=1000)
    return ds, ds[IMAGE_VARS].compute()


def test_graph_is_lazy_and_typed():
    with dask.config.set(scheduler=_raise_on_compute):
        ds = simulate_scene((300, 200), seed=3, chunks=(128, 64), depth_variation=2.0)
    for name in [*IMAGE_VARS, "noise_rms"]:
        var = ds[name]
        assert var.dims == ("y", "x")
        assert var.dtype == np.float32
        assert var.chunks == ((128, 128, 44), (64, 64, 64, 8))
    assert ds.attrs["tilesky_kind"] == "simulation"
    assert ds.attrs["tilesky_default_variable"] == "scene"
    assert ds.attrs["seed"] == 3
    assert ds.attrs["shape"] == [300, 200]
    assert ds.attrs["generator_version"] >= 1


@pytest.mark.parametrize("chunks", [256, 500])
def test_same_seed_identical_pixels_for_any_chunking(notebook_scene, chunks):
    _, ref = notebook_scene
    whole = simulate_scene((2000, 2000), seed=4, chunks=2000)[IMAGE_VARS].compute()
    other = simulate_scene((2000, 2000), seed=4, chunks=chunks)[IMAGE_VARS].compute()
    for name in IMAGE_VARS:
        np.testing.assert_array_equal(whole[name].values, ref[name].values)
        np.testing.assert_array_equal(other[name].values, ref[name].values)


def test_different_seed_differs():
    a = simulate_scene((64, 64), seed=1, chunks=64)["scene"].values
    b = simulate_scene((64, 64), seed=2, chunks=64)["scene"].values
    assert not np.array_equal(a, b)


@pytest.mark.parametrize("chunks", [(37, 101), (64, 64), (300, 3), (1000, 1000)])
def test_options_are_chunk_independent(chunks):
    kw = {"seed": 11, "depth_variation": 3.0, "blank_fraction": 0.25}
    ref = simulate_scene((300, 420), chunks=(300, 420), **kw)
    ds = simulate_scene((300, 420), chunks=chunks, **kw)
    for name in [*IMAGE_VARS, "noise_rms"]:
        np.testing.assert_array_equal(ds[name].values, ref[name].values)


def test_notebook_statistics(notebook_scene):
    ds, px = notebook_scene
    assert ds.sizes["source"] == 5000
    assert ds.sizes["blemish"] == 16
    noise = (px.sky - px.truth).values.astype(np.float64)
    assert abs(noise.std() / 0.1 - 1) < 0.01
    assert abs(noise.mean()) < 0.001
    flux, sx, sy = ds.flux.values, ds.x_stddev.values, ds.y_stddev.values
    assert flux.min() >= 0 and flux.max() <= 50 and flux.max() > 49
    for s in (sx, sy):
        assert s.min() >= 0 and s.max() <= 5 and s.max() > 4.9
    assert ds.theta.min() >= 0 and ds.theta.max() <= np.pi
    np.testing.assert_allclose(ds.re.values, np.sqrt(sx * sy))
    for c in (ds.x_mean.values, ds.y_mean.values):
        assert c.min() >= 2 and c.max() <= 1998
    assert ds.blemish_width.min() >= 30 and ds.blemish_width.max() <= 130
    assert ds.blemish_amplitude.min() >= 0 and ds.blemish_amplitude.max() <= 1
    # Sources only add light; their summed image is close to the summed flux.
    excess = (px.scene - px.sky).values.astype(np.float64)
    assert excess.min() > -1e-5
    assert abs(excess.sum() / flux.sum() - 1) < 0.01


def test_untapered_at_notebook_size(notebook_scene):
    # The farthest pixel pairs (image corners) still see the full sinc.
    ds, px = notebook_scene
    rows = np.array([0, 1, 1000, 1998, 1999])
    expected = _direct_truth(ds, rows, np.arange(2000)).astype(np.float32)
    np.testing.assert_allclose(px.truth.values[rows], expected, rtol=1e-6, atol=1e-6)


def test_blemishes_are_the_notebooks():
    ds = simulate_scene((1000, 1000), seed=4, n_blemishes=8, chunks=500)
    got = np.stack(
        [ds[k].values for k in ("blemish_x", "blemish_y", "blemish_width")]
        + [ds.blemish_amplitude.values],
        axis=1,
    )
    np.testing.assert_allclose(got, NOTEBOOK_BLEMISHES, rtol=1e-13)


def test_truth_equals_direct_numpy():
    ds = simulate_scene((200, 300), seed=7, n_blemishes=5, chunks=(64, 100))
    expected = _direct_truth(ds, np.arange(200), np.arange(300)).astype(np.float32)
    np.testing.assert_allclose(ds.truth.values, expected, rtol=1e-6, atol=1e-6)


def test_blemish_taper():
    kw = {"n_blemishes": 1, "n_sources": 0, "noise_sigma": 0.0}
    ds = simulate_scene(
        (64, 512),
        seed=5,
        chunks=(64, 100),
        blemish_radius=100.0,
        blemish_taper=100.0,
        **kw,
    )
    rows, cols = np.arange(64), np.arange(512)
    flat = _direct_truth(ds, rows, cols, blemishes=False)
    full = _direct_truth(ds, rows, cols)
    row, col = np.meshgrid(rows, cols, indexing="ij")
    r = np.hypot(row - ds.blemish_y.values[0], col - ds.blemish_x.values[0])
    truth = ds.truth.values
    np.testing.assert_allclose(truth[r <= 100], full[r <= 100], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(truth[r >= 200], flat[r >= 200], rtol=1e-6, atol=1e-6)
    mid = (r > 100) & (r < 200)
    assert mid.any()
    tapered, untapered = np.abs(truth - flat)[mid], np.abs(full - flat)[mid]
    assert np.all(tapered <= untapered + 1e-6)
    assert tapered.sum() < untapered.sum()


def test_sources_equal_astropy_gaussian2d():
    from astropy.modeling.models import Gaussian2D

    ds = simulate_scene(
        (70, 90), seed=9, n_sources=25, n_blemishes=0, noise_sigma=0.0, chunks=(32, 40)
    )
    yy, xx = np.mgrid[0:70, 0:90]
    expected = (1.0 * yy) / 70 + (0.25 * xx) / 90
    for i in range(ds.sizes["source"]):
        src = ds.isel(source=i)
        sx, sy = float(src.x_stddev), float(src.y_stddev)
        model = Gaussian2D(
            amplitude=float(src.flux) / (2 * np.pi * sx * sy),
            x_mean=float(src.x_mean),
            y_mean=float(src.y_mean),
            x_stddev=sx,
            y_stddev=sy,
            theta=float(src.theta),
        )
        expected = expected + model(xx, yy)
    np.testing.assert_allclose(
        ds.scene.values, expected.astype(np.float32), rtol=1e-6, atol=1e-6
    )


def test_tile_source_index_matches_brute_force():
    ds = simulate_scene((3000, 3000), seed=2, chunks=1000)
    model = _model_from_attrs(ds.attrs)
    assert model.spec.n_sources == ds.sizes["source"] == 11250
    np.testing.assert_array_equal(model.sources["flux"], ds.flux.values)
    for y0, y1, x0, x1 in [(1000, 1256, 700, 956), (0, 37, 2990, 3000), (5, 6, 5, 6)]:
        got = model.tile_sources(y0, y1, x0, x1)
        ix, iy = model.footprint(np.arange(model.spec.n_sources))
        hit = (ix[:, 0] < x1) & (ix[:, 1] >= x0) & (iy[:, 0] < y1) & (iy[:, 1] >= y0)
        np.testing.assert_array_equal(got, np.flatnonzero(hit))
        assert got.size < 0.05 * model.spec.n_sources


def test_counts_follow_notebook_density():
    assert simulate_scene((1000, 3000)).sizes["source"] == 3750
    assert simulate_scene((1000, 3000)).sizes["blemish"] == 12
    small = simulate_scene((100, 100))
    assert small.sizes["source"] == 13  # 12.5 rounds up
    assert small.sizes["blemish"] == 0


def test_depth_variation_and_blank_fraction():
    ds = simulate_scene(
        (300, 400),
        seed=12,
        chunks=128,
        depth_variation=3.0,
        blank_fraction=0.3,
        blank_angle=25.0,
    )
    px = ds.compute()
    blank = np.isnan(px.scene.values)
    assert abs(blank.mean() - 0.3) < 0.01
    np.testing.assert_array_equal(blank, np.isnan(px.sky.values))
    assert np.isfinite(px.truth.values).all()
    # The footprint is tilted: blank pixels sit in all four corners.
    assert blank[0, 0] and blank[0, -1] and blank[-1, 0] and blank[-1, -1]
    rms = px.noise_rms.values
    np.testing.assert_allclose(rms[:, 0], 0.1, rtol=1e-6)
    np.testing.assert_allclose(rms[:, -1], 0.3, rtol=1e-6)
    z = ((px.sky - px.truth) / px.noise_rms).values
    assert abs(np.nanstd(z) - 1) < 0.02


def test_invalid_parameters():
    with pytest.raises(ValueError, match="shape"):
        simulate_scene((0, 10))
    with pytest.raises(ValueError, match="seed"):
        simulate_scene((10, 10), seed=-1)
    with pytest.raises(ValueError, match="blank_fraction"):
        simulate_scene((10, 10), blank_fraction=1.0)
    with pytest.raises(ValueError, match="source_flux_range"):
        simulate_scene((10, 10), source_flux_range=(5, 1))


def test_write_round_trip(tmp_path):
    out = tmp_path / "sim.zarr"
    kw = {"shape": (96, 130), "seed": 21, "chunks": 64, "blank_fraction": 0.1}
    written = write_simulation(out, **kw)
    reopened = xr.open_zarr(out)
    expected = simulate_scene(kw["shape"], seed=21, chunks=64, blank_fraction=0.1)
    assert reopened.attrs["tilesky_kind"] == "simulation"
    assert reopened.attrs["tilesky_default_variable"] == "scene"
    assert reopened.attrs["seed"] == 21
    assert reopened.scene.chunks == ((64, 32), (64, 64, 2))
    for name in [*IMAGE_VARS, "x_mean", "flux", "blemish_width"]:
        np.testing.assert_array_equal(reopened[name].values, expected[name].values)
    np.testing.assert_array_equal(written.scene.values, expected.scene.values)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        write_simulation(out, **kw)
    again = write_simulation(out, overwrite=True, **{**kw, "seed": 22})
    assert again.attrs["seed"] == 22
    plain = tmp_path / "not_zarr"
    plain.mkdir()
    (plain / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not a Zarr store"):
        write_simulation(plain, overwrite=True, **kw)
    assert (plain / "notes.txt").exists()


def test_write_to_fsspec_url():
    url = "memory://tilesky-test-simulate/sim.zarr"
    ds = write_simulation(url, shape=(40, 50), seed=1, chunks=32, overwrite=True)
    assert ds.attrs["tilesky_kind"] == "simulation"
    expected = simulate_scene((40, 50), seed=1, chunks=50)
    np.testing.assert_array_equal(xr.open_zarr(url).scene.values, expected.scene.values)

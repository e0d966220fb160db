"""tilesky.quality_metrics and tilesky.to_fits: the CLI's extras as calls."""

from __future__ import annotations

import math

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS

import tilesky
from tilesky.errors import InputError, OutputExistsError
from tilesky.metrics import compute_metrics

SETS = ["final_mesh.box_size=16", "smoothfit.step=16"]


def _leaves(obj, prefix=""):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _leaves(v, f"{prefix}{k}.")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _leaves(v, f"{prefix}{i}.")
    else:
        yield prefix.rstrip("."), obj


def _assert_close(got, want, rtol):
    got, want = dict(_leaves(got)), dict(_leaves(want))
    assert got.keys() == want.keys()
    numbers = 0
    for key, value in want.items():
        if isinstance(value, float) and math.isfinite(value):
            assert got[key] == pytest.approx(value, rel=rtol, abs=1e-9), key
            numbers += 1
        else:
            assert got[key] == value, key
    assert numbers > 20


@pytest.fixture(scope="module")
def sim():
    return tilesky.simulate_scene((360, 400), seed=7).compute()


def test_quality_metrics_of_a_result_match_the_metrics_of_its_scene(sim):
    scene = sim.scene.values
    ds = tilesky.estimate_background(scene, chunks=200, overrides=SETS)
    got = tilesky.quality_metrics(ds, truth=sim.truth, sky=sim.sky, catalogue=sim)
    want = compute_metrics(
        scene,
        ds.background.data,
        ds.mask.data,
        truth=sim.truth.values,
        sky=sim.sky.values,
        catalogue=sim,
    )
    assert got["truth"] and got["bias"]["z"] is not None
    # The default scene is subtracted + background: the image up to
    # float32 rounding.
    _assert_close(got, want, rtol=1e-3)
    exact = tilesky.quality_metrics(ds, scene, truth=sim.truth, sky=sim.sky)
    assert exact["bias"] == want["bias"]
    _, points = tilesky.quality_metrics(ds, catalogue=sim, return_points=True)
    assert set(points) >= {"sources", "random"}


def test_quality_metrics_of_a_store_match_the_stored_ones(sim, tmp_path):
    src = tmp_path / "scene.fits"
    fits.PrimaryHDU(sim.scene.values).writeto(src)
    cfg = tilesky.load_config(overrides=SETS)
    run = tilesky.run_to_store(str(src), str(tmp_path / "run.zarr"), config=cfg)
    got = tilesky.quality_metrics(str(tmp_path / "run.zarr"))
    _assert_close(got, run.metrics, rtol=1e-3)


def test_quality_metrics_refuses_what_is_not_a_result():
    with pytest.raises(InputError, match=r"result must be the xarray\.Dataset"):
        tilesky.quality_metrics(np.zeros((10, 10)))
    ds = tilesky.estimate_background(
        np.random.default_rng(0).normal(size=(120, 150))
    ).drop_vars("subtracted")
    with pytest.raises(InputError, match="pass scene="):
        tilesky.quality_metrics(ds)
    with pytest.raises(InputError, match="scene has shape"):
        tilesky.quality_metrics(ds, np.zeros((5, 5)))


def _fits_input(path, scene):
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = [202.47, 47.19]
    wcs.wcs.crpix = [200.0, 180.0]
    wcs.wcs.cdelt = [-1e-4, 1e-4]
    header = wcs.to_header()
    for key, value in (
        ("OBJECT", "M51"),
        ("TELESCOP", "KPNO 0.9m"),
        ("EXPTIME", 600.0),
        ("DATE-OBS", "1987-04-05"),
        ("BUNIT", "ADU"),
    ):
        header[key] = value
    fits.PrimaryHDU(scene, header=header).writeto(path)


def test_to_fits_keeps_the_header_and_the_maps(sim, tmp_path):
    src = tmp_path / "m51.fits"
    _fits_input(src, sim.scene.values)
    ds = tilesky.estimate_background(str(src), overrides=SETS)
    out = tilesky.to_fits(ds, tmp_path / "out" / "sky.fits")
    with fits.open(out) as hdul:
        assert [h.name for h in hdul] == [
            "PRIMARY",
            "BACKGROUND",
            "RMS",
            "MASK",
            "SUBTRACTED",
        ]
        primary = hdul[0].header
        assert hdul[0].data is None
        assert primary["OBJECT"] == "M51" and primary["EXPTIME"] == 600.0
        assert primary["TSKYVER"] == tilesky.__version__
        assert len(primary["TSKYCFG"]) == 16
        for name, ext in (("background", "BACKGROUND"), ("subtracted", "SUBTRACTED")):
            np.testing.assert_array_equal(hdul[ext].data, ds[name].values)
            h = hdul[ext].header
            assert h["TSKYVAR"] == name and h["OBJECT"] == "M51"
            assert h["BUNIT"] == "ADU"
            np.testing.assert_allclose(WCS(h).wcs.crval, [202.47, 47.19])
        assert hdul["MASK"].data.dtype == np.uint8
        np.testing.assert_array_equal(hdul["MASK"].data, ds.mask.values)
        assert "BUNIT" not in hdul["MASK"].header
    # An existing file is refused and left as it was; overwrite replaces it.
    before = out.read_bytes()
    with pytest.raises(OutputExistsError, match="overwrite=True"):
        tilesky.to_fits(ds, out)
    assert out.read_bytes() == before
    ds2 = ds.drop_vars("subtracted")
    tilesky.to_fits(ds2, out, overwrite=True)
    assert "SUBTRACTED" not in [h.name for h in fits.open(out)]
    assert not list(out.parent.glob("*.partial"))


def test_to_fits_of_a_run_store(sim, tmp_path):
    src = tmp_path / "m51.fits"
    _fits_input(src, sim.scene.values)
    cfg = tilesky.load_config(overrides=SETS)
    tilesky.run_to_store(str(src), str(tmp_path / "run.zarr"), config=cfg)
    out = tilesky.to_fits(str(tmp_path / "run.zarr"), tmp_path / "sky.fits")
    header = fits.getheader(out, "RMS")
    assert header["TELESCOP"] == "KPNO 0.9m" and header["TSKYVAR"] == "background_rms"

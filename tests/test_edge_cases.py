"""Cases a first review found: float64 and masked inputs, user masks in the
noise estimate, spline with wide blank regions, resuming the wrong run."""

import numpy as np
import pytest

from tilesky import estimate_background
from tilesky.cli import main
from tilesky.pipeline import PipelineError


@pytest.fixture(scope="module")
def small(scene_1000):
    return scene_1000.scene.values[:300, :360].copy()


def test_float64_input_tiles_exactly_and_equals_float32(small):
    img64 = small.astype(np.float64)
    mono = estimate_background(img64)
    tiled = estimate_background(img64, chunks=90)
    assert mono.background.dtype == np.float32
    assert np.array_equal(tiled.mask.values, mono.mask.values)
    np.testing.assert_array_equal(tiled.background.values, mono.background.values)
    as32 = estimate_background(small)
    np.testing.assert_array_equal(mono.background.values, as32.background.values)


def test_masked_array_pixels_are_no_coverage_on_both_paths(small):
    hole = np.zeros(small.shape, bool)
    hole[100:120, 200:230] = True
    masked = np.ma.masked_array(small, mask=hole)
    mono = estimate_background(masked)
    tiled = estimate_background(masked, chunks=90)
    assert np.isnan(mono.background.values[hole]).all()
    np.testing.assert_array_equal(tiled.background.values, mono.background.values)


def test_user_mask_leaves_pixels_out_of_the_noise(small):
    img = small.copy()
    img[:40, :40] = 1e4  # saturated: would blow up the plain-std noise level
    user = np.zeros(img.shape, bool)
    user[:40, :40] = True
    with_mask = estimate_background(img, mask=user)
    clean = estimate_background(small)
    noise = with_mask.attrs["noise"]["first_mask"]["std"]
    assert noise < 2 * clean.attrs["noise"]["first_mask"]["std"]
    # And tiled agrees.
    tiled = estimate_background(img, mask=user, chunks=90)
    np.testing.assert_array_equal(tiled.background.values, with_mask.background.values)


def test_spline_with_a_blank_band_wider_than_its_reach_says_so(small):
    img = np.tile(small, (3, 1))[:900]
    img[60:840] = np.nan
    with pytest.raises(PipelineError, match="max_distance"):
        estimate_background(
            img,
            overrides=["final_mesh.interpolator=spline", "final_method=mesh"],
        )


def test_resume_refuses_a_run_of_another_input(small, tmp_path, capsys):
    from astropy.io import fits

    a, b = tmp_path / "a.fits", tmp_path / "b.fits"
    fits.PrimaryHDU(small).writeto(a)
    fits.PrimaryHDU(small[::-1].copy()).writeto(b)
    out = tmp_path / "run.zarr"
    base = ["--scheduler", "threads", "--no-report"]
    assert main(["run", str(a), str(out), *base]) == 0
    capsys.readouterr()
    assert main(["run", str(b), str(out), "--resume", *base]) == 1
    assert "different input" in capsys.readouterr().err
    assert main(["run", str(a), str(out), "--resume", *base]) == 0
    assert "already complete" in capsys.readouterr().err


def test_dataarray_input_keeps_its_dims_and_coords(small):
    import xarray as xr

    da_in = xr.DataArray(
        small,
        dims=("dec", "ra"),
        coords={
            "dec": np.linspace(2.0, 2.1, small.shape[0]),
            "ra": np.linspace(150.0, 150.1, small.shape[1]),
        },
    )
    ds = estimate_background(da_in)
    assert ds.background.dims == ("dec", "ra")
    np.testing.assert_array_equal(ds.ra.values, da_in.ra.values)
    np.testing.assert_array_equal(
        ds.background.values, estimate_background(small).background.values
    )

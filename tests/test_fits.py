"""Survey-like FITS inputs: WCS carried through, blank coverage, export."""

import warnings

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS

from tilesky import StoreError, estimate_background
from tilesky.cli import main
from tilesky.export import export_fits


def _tan_header(shape):
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [150.1, 2.2]
    w.wcs.crpix = [shape[1] / 2, shape[0] / 2]
    w.wcs.cdelt = [-0.00011, 0.00011]
    return w.to_header()


@pytest.fixture(scope="module")
def blank_scene(scene_1000):
    """The notebook scene with a tilted footprint (~30 % blank) and a blank strip."""
    img = scene_1000.scene.values[:600, :780].copy()
    ny, nx = img.shape
    y, x = np.mgrid[0:ny, 0:nx]
    # A rotated rectangle: pixels outside are no coverage.
    cy, cx, t = ny / 2, nx / 2, np.deg2rad(20)
    u = (x - cx) * np.cos(t) + (y - cy) * np.sin(t)
    v = -(x - cx) * np.sin(t) + (y - cy) * np.cos(t)
    outside = (np.abs(u) > 0.42 * nx) | (np.abs(v) > 0.4 * ny)
    img[outside] = np.nan
    img[:, 400:407] = np.nan
    frac = np.isnan(img).mean()
    assert 0.25 < frac < 0.4, frac
    return img


def test_big_endian_fits_with_blank_coverage_end_to_end(blank_scene, tmp_path, capsys):
    path = tmp_path / "mosaic.fits"
    hdu = fits.PrimaryHDU(
        blank_scene.astype(">f4"), header=_tan_header(blank_scene.shape)
    )
    hdu.writeto(path)
    out = tmp_path / "run.zarr"
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        assert (
            main(
                [
                    "run",
                    str(path),
                    str(out),
                    "--scheduler",
                    "threads",
                    "--chunks",
                    "240",
                ]
            )
            == 0
        )
    assert main(["export", str(out), "--fits", str(tmp_path / "fits")]) == 0
    capsys.readouterr()
    # Existing files: the API names its parameter, the command line its flag.
    with pytest.raises(StoreError, match=r"already exist; pass overwrite=True to"):
        export_fits(str(out), tmp_path / "fits")
    assert main(["export", str(out), "--fits", str(tmp_path / "fits")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("tilesky: error: ") and len(err.splitlines()) == 1, err
    assert err.endswith("already exist; pass --overwrite to replace them"), err
    blank = ~np.isfinite(blank_scene)
    with fits.open(tmp_path / "fits" / "background.fits") as hdul:
        bkg = hdul[0].data
        header = hdul[0].header
    assert bkg.shape == blank_scene.shape
    assert np.array_equal(np.isnan(bkg), blank)
    w_in, w_out = WCS(_tan_header(blank_scene.shape)), WCS(header)
    pix = np.array([[0, 0], [100.5, 37.25], [779, 599]])
    np.testing.assert_allclose(
        w_out.all_pix2world(pix, 0), w_in.all_pix2world(pix, 0), rtol=0, atol=1e-12
    )
    for name in ("rms", "subtracted", "mask"):
        with fits.open(tmp_path / "fits" / f"{name}.fits") as hdul:
            assert hdul[0].data.shape == blank_scene.shape
    # The same image through the API, monolithically: the tiled FITS run agrees.
    mono = estimate_background(blank_scene)
    np.testing.assert_array_equal(bkg, mono.background.values)


def test_weight_map_zero_means_no_coverage(scene_1000):
    img = scene_1000.scene.values[:300, :330]
    weight = np.ones_like(img)
    weight[:, :40] = 0
    ds = estimate_background(img, weight=weight)
    assert np.isnan(ds.background.values[:, :40]).all()
    assert np.isfinite(ds.background.values[:, 40:]).all()
    ref = img.copy()
    ref[:, :40] = np.nan
    # With one global noise level the weight map is coverage only: zero
    # weight is exactly NaN. (By default it is also the noise model, which
    # treats zero-weight pixels as infinitely noisy: nothing is detected in
    # them, even where the smoothing reaches into them.)
    flat = ["noise_mode=global"]
    np.testing.assert_array_equal(
        estimate_background(img, weight=weight, overrides=flat).background.values,
        estimate_background(ref, overrides=flat).background.values,
    )


def test_user_mask_is_honoured(scene_1000):
    img = scene_1000.scene.values[:300, :330]
    user = np.zeros(img.shape, bool)
    user[100:140, 100:160] = True
    ds = estimate_background(img, mask=user)
    assert ds.mask.values[user].all()
    assert np.isfinite(ds.background.values[user]).all()


def _small_scene(scene_1000):
    return scene_1000.scene.values[:270, :330].astype(np.float32)


def test_scaled_integer_fits_gives_the_float_background(scene_1000, tmp_path):
    img = _small_scene(scene_1000)
    bscale, bzero = 1e-4, 1.0
    ints = np.round((img - bzero) / bscale).astype(np.int16)
    path = tmp_path / "int.fits"
    hdu = fits.PrimaryHDU(ints)
    hdu.header["BSCALE"] = bscale
    hdu.header["BZERO"] = bzero
    hdu.writeto(path)
    with fits.open(path) as hdul:
        scaled = np.asarray(hdul[0].data, dtype=np.float32)
    expected = estimate_background(scaled)
    got = estimate_background(str(path), chunks=150)
    np.testing.assert_array_equal(got.background.values, expected.background.values)
    np.testing.assert_array_equal(got.mask.values, expected.mask.values)


@pytest.mark.parametrize("kind", ["gz", "fz"])
def test_compressed_fits_gives_the_same_background(scene_1000, tmp_path, kind):
    img = _small_scene(scene_1000)
    expected = estimate_background(img)
    if kind == "gz":
        path = tmp_path / "img.fits.gz"
        fits.PrimaryHDU(img).writeto(path)
    else:
        path = tmp_path / "img.fits.fz"
        comp = fits.CompImageHDU(
            img, compression_type="GZIP_2", quantize_level=0.0, tile_shape=(64, 64)
        )
        fits.HDUList([fits.PrimaryHDU(), comp]).writeto(path)
    got = estimate_background(str(path), chunks=150)
    np.testing.assert_array_equal(got.background.values, expected.background.values)
    np.testing.assert_array_equal(got.mask.values, expected.mask.values)

"""Survey data products as they ship (JWST/HST SCI, ERR, DQ, WHT) and exports."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from astropy.io import fits
from astropy.wcs import WCS

from tilesky.cli import main
from tilesky.io import open_image

SHAPE = (240, 300)
OVERRIDES = [
    "--set",
    "ring.radius_in=4",
    "--set",
    "ring.width=2",
    "--set",
    "first_mesh.box_size=20",
    "--set",
    "final_mesh.box_size=20",
    "--set",
    "smoothfit.step=10",
    "--set",
    "smoothfit.scale=12",
    "--set",
    "n_rounds=1",
]


def _wcs_header():
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [53.1, -27.8]
    w.wcs.crpix = [SHAPE[1] / 2, SHAPE[0] / 2]
    w.wcs.cd = [[-8.3e-6, 0], [0, 8.3e-6]]
    return w.to_header()


def _sky(seed=0):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[: SHAPE[0], : SHAPE[1]]
    return (0.3 + 1e-3 * x + 5e-4 * y + rng.normal(0, 0.05, SHAPE)).astype(">f4")


def _jwst_file(path, *, telescope="JWST", wht=True, err=True, dq=True):
    """An i2d-like file: empty PRIMARY with the observation keywords, then
    SCI, ERR, CON (3-D), WHT and DQ."""
    primary = fits.PrimaryHDU()
    ph = primary.header
    ph["TELESCOP"] = telescope
    ph["INSTRUME"] = "NIRCAM"
    ph["FILTER"] = "F200W"
    ph["OBJECT"] = "GOODS-S"
    ph["EXPTIME"] = 1288.5
    ph["DATE-OBS"] = "2023-01-02"
    ph["PROGRAM"] = "01180"
    sci = _sky()
    # Garbage where the pipeline said DO_NOT_USE (bit 0): it must not count.
    bad = np.zeros(SHAPE, bool)
    bad[100:140, 50:260] = True
    sci[bad] = 5000.0
    dq_data = np.where(bad, 1 | 4, 0).astype(">u4")
    # An informational flag (bit 2 alone) on other pixels: usable for JWST.
    dq_data[10:20, 100:110] = 4
    sci_hdr = _wcs_header()
    sci_hdr["BUNIT"] = "MJy/sr"
    sci_hdr["EXTVER"] = 1
    hdus = [primary, fits.ImageHDU(sci, header=sci_hdr, name="SCI")]
    if err:
        hdus.append(fits.ImageHDU(np.full(SHAPE, 0.05, ">f4"), name="ERR"))
    hdus.append(fits.ImageHDU(np.zeros((2, *SHAPE), ">i4"), name="CON"))
    if wht:
        w = np.full(SHAPE, 400.0, ">f4")
        w[:, :30] = 0  # no coverage
        hdus.append(fits.ImageHDU(w, name="WHT"))
    if dq:
        hdus.append(fits.ImageHDU(dq_data, name="DQ"))
    fits.HDUList(hdus).writeto(path, checksum=True)
    return bad


def _run(src, out, *extra):
    argv = ["run", str(src), str(out), "--scheduler", "threads", "--no-report"]
    return main([*argv, *OVERRIDES, *extra])


def test_jwst_product_runs_with_no_options_and_honours_dq(tmp_path, capsys):
    src = tmp_path / "jw_i2d.fits"
    bad = _jwst_file(src)
    out = tmp_path / "run.zarr"
    assert _run(src, out) == 0
    ds = xr.open_zarr(out)
    used = ds.attrs["input"]["products"]
    assert used == {"image": "SCI", "dq": "DQ", "dq_bits": 1, "weight": "WHT"}
    back = ds["background"].values
    # DQ DO_NOT_USE pixels are no coverage; the 5000-valued garbage did not
    # enter the statistics of the covered pixels next to it.
    assert np.isnan(back[bad]).all()
    assert np.isnan(back[:, :30]).all()  # WHT = 0
    near = back[90:100, 60:250]
    assert np.nanmax(np.abs(near - 0.3 - 0.1)) < 0.3
    # Informational DQ bits alone are not DO_NOT_USE.
    assert np.isfinite(back[10:20, 100:110]).all()
    # Exported maps keep the observation keywords and the WCS.
    fits_dir = tmp_path / "fits"
    assert main(["export", str(out), "--fits", str(fits_dir)]) == 0
    hdr = fits.getheader(fits_dir / "background.fits")
    for key, value in (
        ("TELESCOP", "JWST"),
        ("INSTRUME", "NIRCAM"),
        ("FILTER", "F200W"),
        ("OBJECT", "GOODS-S"),
        ("EXPTIME", 1288.5),
        ("DATE-OBS", "2023-01-02"),
        ("BUNIT", "MJy/sr"),
    ):
        assert hdr[key] == value, key
    assert WCS(hdr).wcs.ctype[0] == "RA---TAN"
    np.testing.assert_allclose(WCS(hdr).wcs.crval, [53.1, -27.8])
    # Layout and integrity keywords of the input do not travel.
    for key in ("EXTNAME", "EXTVER", "CHECKSUM", "DATASUM", "XTENSION"):
        assert key not in hdr, key
    assert hdr["TSKYVAR"] == "background"
    assert len(hdr["TSKYCFG"]) == 16
    assert "tilesky" in str(hdr["HISTORY"])
    mask_hdr = fits.getheader(fits_dir / "mask.fits")
    assert mask_hdr["OBJECT"] == "GOODS-S"
    assert "BUNIT" not in mask_hdr
    assert fits.getdata(fits_dir / "rms.fits").shape == SHAPE


def test_err_gives_the_weight_when_there_is_no_wht(tmp_path):
    src = tmp_path / "jw_cal.fits"
    _jwst_file(src, wht=False)
    image = open_image(str(src))
    assert image.identity["products"]["weight"] == "1/ERR**2"
    np.testing.assert_allclose(image.weight.compute(), 1 / 0.05**2, rtol=1e-5)


def test_hst_style_dq_any_nonzero_flag_is_unusable(tmp_path):
    src = tmp_path / "hst_flt.fits"
    bad = _jwst_file(src, telescope="HST", wht=False)
    image = open_image(str(src))
    data = image.data.compute()
    assert image.identity["products"]["dq_bits"] == 0xFFFFFFFF
    assert np.isnan(data[bad]).all()
    assert np.isnan(data[10:20, 100:110]).all()  # bit 2 counts for HST
    # dq_bits= chooses the bits.
    only = open_image(str(src), dq_bits=4).data.compute()
    assert np.isnan(only[10:20, 100:110]).all() and np.isnan(only[bad]).all()
    none = open_image(str(src), dq_bits=8).data.compute()
    assert np.isfinite(none).all()


def test_user_weight_wins_over_wht(tmp_path):
    src = tmp_path / "jw_i2d.fits"
    _jwst_file(src)
    weight = tmp_path / "w.fits"
    fits.PrimaryHDU(np.ones(SHAPE, ">f4")).writeto(weight)
    out = tmp_path / "run.zarr"
    assert _run(src, out, "--weight", str(weight)) == 0
    ds = xr.open_zarr(out)
    assert ds.attrs["input"]["products"]["weight"].startswith("weight=")
    # WHT's zero-weight columns are covered now.
    assert np.isfinite(ds["background"].values[:, :30]).all()


def test_plain_image_export_keeps_its_keywords(tmp_path):
    src = tmp_path / "plain.fits"
    hdr = _wcs_header()
    hdr["OBJECT"] = "M51"
    hdr["EXPOSURE"] = 600.0
    hdr["BUNIT"] = "ADU"
    hdr["BZERO"] = 0
    fits.PrimaryHDU(_sky(), header=hdr).writeto(src)
    out = tmp_path / "run.zarr"
    assert _run(src, out) == 0
    assert "products" not in xr.open_zarr(out).attrs["input"]
    assert main(["export", str(out), "--fits", str(tmp_path / "f")]) == 0
    got = fits.getheader(tmp_path / "f" / "subtracted.fits")
    assert got["OBJECT"] == "M51" and got["EXPOSURE"] == 600.0
    assert got["BUNIT"] == "ADU" and got["BITPIX"] == -32
    assert "BZERO" not in got
    # One WCS, not the input's CD matrix next to astropy's PC.
    assert not ({"CD1_1", "PC1_1"} <= set(got))


def test_header_warnings_print_once_per_file(tmp_path):
    import subprocess
    import sys

    src = tmp_path / "blank.fits"
    hdu = fits.PrimaryHDU(_sky().astype(">f4"))
    # BLANK on float data: astropy warns each time it opens the HDU.
    hdu.header["BLANK"] = -32768
    with pytest.warns(fits.verify.VerifyWarning, match="BLANK"):
        hdu.writeto(src)
    argv = [sys.executable, "-m", "tilesky.cli", "run", str(src)]
    argv += [str(tmp_path / "run.zarr"), "--scheduler", "threads", "--no-report"]
    done = subprocess.run(
        [*argv, *OVERRIDES], capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr.count("Invalid 'BLANK' keyword") == 1, done.stderr


def test_dq_bits_from_the_cli_and_the_config(tmp_path, capsys):
    # Bit 2 alone (informational for JWST) becomes unusable when asked for.
    src = tmp_path / "jw_i2d.fits"
    bad = _jwst_file(src)
    for n, (extra, bits) in enumerate(
        ((["--dq-bits", "0x4"], 4), (["--set", "dq_bits=5"], 5))
    ):
        out = tmp_path / f"run{n}.zarr"
        assert _run(src, out, *extra) == 0
        ds = xr.open_zarr(out)
        assert ds.attrs["input"]["products"]["dq_bits"] == bits
        assert ds.attrs["config"]["dq_bits"] == bits
        back = ds["background"].values
        assert np.isnan(back[10:20, 100:110]).all()
        assert np.isnan(back[bad]).all()
    # dq_bits=0: no DQ bit is unusable, the garbage is covered again.
    assert _run(src, tmp_path / "none.zarr", "--dq-bits", "0") == 0
    assert np.isfinite(
        xr.open_zarr(tmp_path / "none.zarr")["background"].values[bad]
    ).all()


@pytest.mark.parametrize("value", ["-1", "4294967296", "true", "1.5", "'x'"])
def test_bad_dq_bits_are_one_line_errors(tmp_path, capsys, value):
    src = tmp_path / "jw_i2d.fits"
    _jwst_file(src)
    out = tmp_path / "run.zarr"
    assert _run(src, out, "--set", f"dq_bits={value}") == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "dq_bits must be an integer from 0" in err
    assert not out.exists()


def test_bad_dq_bits_flag_is_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["run", "in.fits", "out.zarr", "--dq-bits", "some"])
    assert exit_.value.code == 2
    assert "--dq-bits: expects an integer bit mask" in capsys.readouterr().err

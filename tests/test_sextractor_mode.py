"""``tilesky run --preset sextractor``: SEP's numbers as a tiled run store."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from astropy.io import fits

from tilesky.cli import main
from tilesky.errors import ConfigError
from tilesky.sextractor_mode import SExtractorParams, estimate_sextractor

sep = pytest.importorskip("sep")


def _image(shape, seed, sources=400):
    rng = np.random.default_rng(seed)
    ny, nx = shape
    yy, xx = np.mgrid[:ny, :nx]
    img = 50 + 0.03 * xx - 0.02 * yy + 4 * np.cos(yy / 90.0) + rng.normal(0, 2, shape)
    for _ in range(sources):
        y, x = rng.integers(0, ny), rng.integers(0, nx)
        img[max(0, y - 2) : y + 3, max(0, x - 2) : x + 3] += rng.uniform(5, 800)
    return img.astype(np.float32)


def _max_rel(a, b):
    return float(np.max(np.abs(a - b) / np.abs(b)))


# shape, --set overrides, SEP's keywords
CASES = [
    ((600, 700), [], {"bw": 64, "bh": 64, "fw": 3, "fh": 3}),
    (
        (517, 383),
        ["box_size=[48, 32]", "filter_size=[3, 5]"],
        {"bw": 32, "bh": 48, "fw": 5, "fh": 3},
    ),
    (
        (450, 640),
        ["box_size=40", "filter_size=1", "filter_threshold=0.5"],
        {"bw": 40, "bh": 40, "fw": 1, "fh": 1, "fthresh": 0.5},
    ),
]


@pytest.mark.parametrize(("shape", "sets", "kw"), CASES)
def test_run_matches_sep_tiled_and_whole(tmp_path, capsys, shape, sets, kw):
    img = _image(shape, seed=sum(shape))
    mask = np.zeros(shape, bool)
    mask[60:140, 100:260] = True
    src, mask_path = tmp_path / "image.fits", tmp_path / "mask.fits"
    fits.PrimaryHDU(img).writeto(src)
    fits.PrimaryHDU(mask.astype(np.uint8)).writeto(mask_path)
    ref = sep.Background(img, mask=mask, **kw)
    out = tmp_path / "run.zarr"
    argv = ["run", str(src), str(out), "--preset", "sextractor", "--mask"]
    argv += [str(mask_path), "--scheduler", "threads", "--chunks", "150"]
    for s in sets:
        argv += ["--set", s]
    assert main(argv) == 0, capsys.readouterr().err
    ds = xr.open_zarr(out)
    assert ds.attrs["tilesky_status"] == "complete"
    assert ds.attrs["config"]["mode"] == "sextractor"
    assert ds["background"].data.numblocks != (1, 1)  # it did run tiled
    assert _max_rel(ds["background"].values, ref.back()) <= 1e-5
    assert _max_rel(ds["background_rms"].values, ref.rms()) <= 1e-4
    np.testing.assert_array_equal(ds["mask"].values, mask)
    np.testing.assert_allclose(
        ds["subtracted"].values, img - ds["background"].values, rtol=0, atol=1e-4
    )
    assert "metrics" in ds.attrs and (tmp_path / "run_report" / "report.html").exists()
    # Whole (numpy, no chunks) and tiled in memory: the same numbers.
    params = SExtractorParams.from_overrides(sets)
    whole = estimate_sextractor(img, params, mask=mask)
    assert isinstance(whole["background"].data, np.ndarray)
    np.testing.assert_array_equal(whole["background"].values, ds["background"].values)
    np.testing.assert_array_equal(
        whole["background_rms"].values, ds["background_rms"].values
    )


def test_export_of_a_sextractor_run(tmp_path):
    img = _image((300, 320), seed=5)
    src = tmp_path / "image.fits"
    hdr = fits.Header({"OBJECT": "NGC 1", "BUNIT": "ADU"})
    fits.PrimaryHDU(img, header=hdr).writeto(src)
    out = tmp_path / "run.zarr"
    argv = ["run", str(src), str(out), "--preset", "sextractor", "--no-report"]
    assert main([*argv, "--scheduler", "threads"]) == 0
    assert main(["export", str(out), "--fits", str(tmp_path / "fits")]) == 0
    ref = sep.Background(img)
    exported = fits.open(tmp_path / "fits" / "background.fits")[0]
    assert exported.header["OBJECT"] == "NGC 1"
    assert _max_rel(exported.data, ref.back()) <= 1e-5


def test_validate_refuses_a_sextractor_run_in_one_line(tmp_path, capsys):
    src = tmp_path / "image.fits"
    fits.PrimaryHDU(_image((200, 220), seed=6)).writeto(src)
    out = tmp_path / "run.zarr"
    argv = ["run", str(src), str(out), "--preset", "sextractor", "--no-report"]
    assert main([*argv, "--scheduler", "threads"]) == 0
    capsys.readouterr()
    assert main(["validate", str(out), "--scheduler", "threads"]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "'sextractor' run (--preset sextractor)" in err[0], err


@pytest.mark.parametrize(
    ("setting", "text"),
    [
        ("box_size=0", "box_size must be an integer >= 1"),
        ("filter_threshold=nan", "filter_threshold must be finite"),
        ("dq_bits=-2", "dq_bits must be an integer from 0"),
        ("ring.width=3", "the sextractor preset takes box_size, dq_bits"),
    ],
)
def test_bad_settings_are_one_line_errors(tmp_path, capsys, setting, text):
    src = tmp_path / "image.fits"
    fits.PrimaryHDU(_image((200, 200), seed=1)).writeto(src)
    out = tmp_path / "run.zarr"
    argv = ["run", str(src), str(out), "--preset", "sextractor", "--set", setting]
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and text in err, err
    assert not out.exists()


def test_the_library_dispatches_the_preset_to_the_mode():
    from tilesky import estimate_background

    image = _image((200, 200), seed=2)
    got = estimate_background(image, preset="sextractor", overrides=["box_size=32"])
    want = estimate_sextractor(image, SExtractorParams.from_overrides(["box_size=32"]))
    for name in ("background", "background_rms", "mask"):
        np.testing.assert_array_equal(got[name].values, want[name].values)
    assert got.attrs["config"] == want.attrs["config"]
    with pytest.raises(ConfigError, match="takes no config"):
        estimate_background(image, preset="sextractor", config="x.toml")

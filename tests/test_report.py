"""The HTML report: lazy downsampled maps, quality plots, config and metrics."""

import re
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("matplotlib")
da = pytest.importorskip("dask.array")
import dask  # noqa: E402
import xarray as xr  # noqa: E402
from matplotlib.image import imread  # noqa: E402

from tilesky._report_html import _fmt  # noqa: E402
from tilesky.metrics import compute_metrics  # noqa: E402
from tilesky.report import (  # noqa: E402
    _downsample,
    _Plotting,
    _save_map,
    _scatter_ylim,
    _write_png,
    write_report,
)

SHAPE = (97, 131)
CONFIG = {"mesh": {"box_size": 6, "filter_size": 3}, "ring": {"radius_in": 15}}


@pytest.fixture(scope="module")
def run():
    rng = np.random.default_rng(0)
    ny, nx = SHAPE
    yy, xx = np.indices(SHAPE)
    truth = 1.0 + 0.3 * yy / ny + 0.05 * np.sin(xx / 7.0)
    sky = truth + rng.normal(scale=0.1, size=SHAPE)
    mask = rng.random(SHAPE) < 0.05
    bkg = truth + 0.01 * rng.normal(size=SHAPE)
    bkg[:3, :5] = np.nan
    n = 40
    cat = {
        "x_mean": rng.uniform(0, nx, n),
        "y_mean": rng.uniform(0, ny, n),
        "flux": rng.uniform(0, 50, n),
        "re": rng.uniform(0.5, 5, n),
    }
    yx = ("y", "x")
    ds = xr.Dataset(
        {
            "background": (yx, da.from_array(bkg.astype(np.float32), chunks=30)),
            "mask": (yx, da.from_array(mask, chunks=30)),
            "subtracted": (
                yx,
                da.from_array((sky - bkg).astype(np.float32), chunks=30),
            ),
        },
        attrs={"config": CONFIG, "tilesky_version": "test"},
    )
    return {"ds": ds, "truth": truth, "sky": sky, "catalogue": cat, "bkg": bkg}


def _ref_block_mean(img, f):
    ny, nx = img.shape
    pad = np.full((-(-ny // f) * f, -(-nx // f) * f), np.nan)
    pad[:ny, :nx] = img
    blocks = pad.reshape(pad.shape[0] // f, f, pad.shape[1] // f, f)
    ok = np.isfinite(blocks)
    count = ok.sum(axis=(1, 3))
    total = np.where(ok, blocks, 0).sum(axis=(1, 3))
    out = np.full(count.shape, np.nan)
    out[count > 0] = total[count > 0] / count[count > 0]
    return out


def test_downsample_is_a_lazy_block_mean(run):
    bkg = run["bkg"]

    def refuse(*args, **kwargs):
        raise AssertionError("building the downsampled map must not compute")

    lazy = da.from_array(bkg, chunks=(30, 45))
    with dask.config.set(scheduler=refuse):
        small, factor = _downsample(lazy, 50)
    assert factor == 3 and small.shape == (33, 44)
    np.testing.assert_allclose(small.compute(), _ref_block_mean(bkg, 3), rtol=1e-12)
    same, one = _downsample(bkg, 200)
    assert one == 1 and same.shape == SHAPE


def test_report_writes_figures_and_html(run, tmp_path):
    ds = run["ds"]
    path = write_report(
        ds,
        tmp_path / "out",
        truth=run["truth"],
        sky=run["sky"],
        catalogue=run["catalogue"],
        max_pixels=50,
    )
    assert path == tmp_path / "out" / "report.html"
    text = path.read_text()
    sizes = {
        "input": (33, 44),
        "background": (33, 44),
        "mask": (33, 44),
        "residual": (33, 44),
        "subtracted": (33, 44),
        "scale": (450, 1000),
        "flux": (500, 1000),
        "radius": (500, 1000),
    }
    for name, size in sizes.items():
        img = imread(tmp_path / "out" / f"{name}.png")
        assert img.shape[:2] == size
        assert np.ptp(img[..., :3]) > 0  # not a blank image
        assert f"href='{name}.png'" in text
    assert text.count("src='data:image/png;base64,") == len(sizes)
    for name in ("input", "background", "mask", "residual", "subtracted"):
        panel = imread(tmp_path / "out" / f"{name}_panel.png")
        assert panel.shape[0] > 200 and np.ptp(panel[..., :3]) > 0
        assert f"href='{name}_panel.png'" in text
    # Each caption links to its own map.
    for title, name in (("Subtracted: scene", "subtracted"), ("Residual: bac", "res")):
        caption = re.search(f"<figcaption>{title}[^<]*\\(<a[^)]*\\)", text)
        assert caption and f"{name}" in caption.group(0), title
    assert "image units" in text and "asinh" in text
    # The background map: colours follow the downsampled values (origin lower).
    bg = imread(tmp_path / "out" / "background.png")[::-1]
    ref = _ref_block_mean(run["bkg"].astype(np.float32).astype(float), 3)
    lum = bg[..., :3].mean(axis=-1)
    ok = np.isfinite(ref) & (bg[..., 3] > 0)
    assert np.corrcoef(lum[ok], ref[ok])[0, 1] > 0.9
    assert bg[0, 0, 3] == 0  # the NaN corner stays transparent
    # Configuration and metrics are in the page.
    assert "mesh.box_size" in text and "ring.radius_in" in text
    metrics = compute_metrics(
        (ds["subtracted"].data.astype(np.float64) + ds["background"].data),
        ds["background"].data,
        ds["mask"].data,
        truth=run["truth"],
        sky=run["sky"],
        catalogue=run["catalogue"],
    )
    for value in (
        metrics["bias"]["z"],
        metrics["truth"]["all"]["rms"],
        metrics["sources"]["groups"]["random"]["mean"],
        metrics["scale"]["ratio"][0],
    ):
        assert _fmt(value) in text
    assert "bias.naive.notebook_z" in text
    # The verdict comes first; the full dump is collapsed; the run table
    # speaks words and units.
    assert text.index("<h2>Verdict</h2>") < text.index("<h2>Figures</h2>")
    assert text.index("<details><summary>All metrics") < text.index(
        "bias.naive.notebook_z"
    )


def test_run_table_labels_units_and_verdict(run, tmp_path):
    ds = run["ds"].copy()
    ds.attrs = {
        **ds.attrs,
        "noise": {"source_mask_round1": {"count": 10, "mean": 0.0, "std": 0.1}},
        "timings": {"ring_median": 1.5, "round2": 0.25, "total": 3.0},
        "wcs_header": {"BUNIT": "MJy/sr"},
        "trust": {"trusted": False, "message": "background may not be trusted: X"},
    }
    text = write_report(ds, tmp_path, max_pixels=40).read_text()
    run_table = text[text.index("<h2>Run</h2>") : text.index("<h2>Metrics</h2>")]
    assert "source_mask_round1" not in run_table and "count" not in run_table
    assert "noise for the thresholds, source masks, round 1" in run_table
    assert "time, ring median</th><td>1.50 s" in run_table
    assert "source masks and background, round 2</th><td>0.25 s" in run_table
    assert "MJy/sr" in text and "image units" not in text
    verdict = text[: text.index("<h2>Figures</h2>")]
    assert "class='warn'" in verdict and "may not be trusted: X" in verdict


def test_scatter_limits_hold_every_point():
    rng = np.random.default_rng(3)
    values = np.concatenate([rng.normal(size=1000), [40.0, -25.0]])
    lo, hi, linthresh = _scatter_ylim(values)
    assert lo < values.min() and hi > values.max()
    assert linthresh is not None and 1.0 < linthresh < 5.0
    lo, hi, linthresh = _scatter_ylim(rng.normal(size=1000))
    assert linthresh is None


@pytest.mark.filterwarnings("ignore:Consolidated metadata:UserWarning")
def test_report_from_a_store_uses_stored_metrics(run, tmp_path):
    ds = run["ds"]
    metrics = compute_metrics(
        ds["subtracted"].data + ds["background"].data,
        ds["background"].data,
        ds["mask"].data,
        widths=range(3, 12),
    )
    stored = ds.copy()
    stored.attrs = {**ds.attrs, "metrics": metrics, "tilesky_status": "complete"}
    url = str(tmp_path / "run.zarr")
    stored.to_zarr(url, consolidated=True)
    path = write_report(url, tmp_path / "rep", max_pixels=1000)
    text = path.read_text()
    assert imread(tmp_path / "rep" / "background.png").shape[:2] == SHAPE
    assert (tmp_path / "rep" / "scale.png").exists()
    assert not (tmp_path / "rep" / "flux.png").exists()
    assert "Subtracted: scene - background" in text
    assert _fmt(metrics["bias"]["z"]) in text
    # Only the stored widths: the report did not recompute the metrics.
    assert re.search(r"<tr><td>11</td>", text) and not re.search(
        r"<tr><td>12</td>", text
    )


def test_report_needs_matplotlib(run, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ImportError, match="pip install"):
        write_report(run["ds"], tmp_path)


def test_report_rejects_bad_arguments(run, tmp_path):
    with pytest.raises(ValueError, match="max_pixels"):
        write_report(run["ds"], tmp_path, max_pixels=0)
    with pytest.raises(ValueError, match="background"):
        write_report(xr.Dataset(), tmp_path)


def test_report_without_metrics_or_scene(tmp_path):
    ds = xr.Dataset(
        {"background": (("y", "x"), np.ones((20, 30)))}, attrs={"config": CONFIG}
    )
    text = write_report(ds, tmp_path).read_text()
    assert "No metrics" in text and "mesh.filter_size" in text
    assert imread(tmp_path / "background.png").shape[:2] == (20, 30)


@pytest.mark.parametrize(
    ("dtype", "factor"), [(np.float32, 2), (np.float64, 5), (bool, 4), (np.int16, 3)]
)
def test_downsample_matches_a_plain_block_mean(dtype, factor):
    rng = np.random.default_rng(0)
    img = rng.normal(size=(53, 71)) * 100
    if dtype is bool:
        img = img > 0
    elif np.dtype(dtype).kind == "f":
        img[:factor, :factor] = np.nan  # one block with no finite pixel
        img[10:13, 20:29] = np.nan
    img = img.astype(dtype)
    small, got = _downsample(da.from_array(img, chunks=(20, 30)), -(-71 // factor))
    assert got == factor
    out = small.compute()
    assert out.dtype == np.float64
    ref = _ref_block_mean(img.astype(np.float64), factor)
    np.testing.assert_allclose(out, ref, rtol=1e-12, equal_nan=True)
    if np.dtype(dtype).kind == "f":
        assert np.isnan(out[0, 0])


def _save(plt, path, img, cmap, vmin, vmax):
    _save_map(plt, path, img, cmap=cmap, vmin=vmin, vmax=vmax)
    return imread(path)


def test_maps_are_indexed_pngs_with_the_colours_of_imsave(tmp_path):
    from matplotlib import colormaps
    from matplotlib.image import imsave
    from PIL import Image

    plt = _Plotting()
    rng = np.random.default_rng(1)
    img = rng.normal(size=(40, 60))
    img[0, :3] = [-1.0, 1.0, 5.0]  # exactly at the limits, and above
    img[5, 5] = np.nan
    for cmap, lo, hi in (("viridis", -1.0, 1.0), ("RdBu_r", -2.0, 2.0)):
        got = _save(plt, tmp_path / "map.png", img, cmap, lo, hi)
        imsave(tmp_path / "ref.png", img, cmap=cmap, vmin=lo, vmax=hi, origin="lower")
        np.testing.assert_array_equal(got, imread(tmp_path / "ref.png"))
        with Image.open(tmp_path / "map.png") as png:
            assert png.mode == "P"
    assert got[::-1][5, 5, 3] == 0  # NaN is transparent
    # All 256 colours of RdBu_r and NaN do not fit a palette: 255 colours.
    ramp = np.tile(np.linspace(0.0, 1.0, 512), (4, 1))
    ramp[1, 7] = np.nan
    got = _save(plt, tmp_path / "ramp.png", ramp, "RdBu_r", 0.0, 1.0)
    with Image.open(tmp_path / "ramp.png") as png:
        assert png.mode == "P"
    coarse = colormaps["RdBu_r"].resampled(255)
    imsave(tmp_path / "ref.png", ramp, cmap=coarse, vmin=0, vmax=1, origin="lower")
    np.testing.assert_array_equal(got, imread(tmp_path / "ref.png"))
    assert len(np.unique(got.reshape(-1, 4), axis=0)) == 256


def test_write_png_is_lossless(tmp_path):
    from PIL import Image

    plt = _Plotting()
    rng = np.random.default_rng(2)
    rgba = rng.integers(0, 256, size=(30, 50, 4), dtype=np.uint8)
    opaque = rgba.copy()
    opaque[..., 3] = 255
    for mode, img in (("RGB", opaque), ("RGBA", rgba)):
        _write_png(plt, tmp_path / "x.png", img)
        with Image.open(tmp_path / "x.png") as png:
            assert png.mode == mode
            back = np.asarray(png.convert("RGBA"))
        np.testing.assert_array_equal(back, img)
    few = rgba[:, :1].repeat(50, axis=1)  # 30 colours
    _write_png(plt, tmp_path / "few.png", few)
    with Image.open(tmp_path / "few.png") as png:
        assert png.mode == "P"
        np.testing.assert_array_equal(np.asarray(png.convert("RGBA")), few)


def test_report_leaves_pyplot_alone(run, tmp_path):
    # In a fresh interpreter: another test of the session may import pyplot.
    store = tmp_path / "run.zarr"
    run["ds"].to_zarr(store, consolidated=False)
    code = (
        "import sys, xarray as xr\n"
        "from tilesky.report import write_report\n"
        f"ds = xr.open_zarr({str(store)!r}, consolidated=False)\n"
        f"write_report(ds, {str(tmp_path / 'rep')!r}, max_pixels=40)\n"
        "assert 'matplotlib.pyplot' not in sys.modules, 'pyplot was imported'\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "rep" / "report.html").exists()


def test_verdict_numbers_are_brief():
    from tilesky._report_html import _brief

    assert _brief(-0.00699577) == "-0.007"
    assert _brief(5.61234) == "5.61"
    assert _brief(None) == "–"

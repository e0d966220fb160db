"""Quality metrics: against direct numpy, identical for any chunking, mergeable."""

import itertools
import json
import math
import random

import numba
import numpy as np
import pytest

da = pytest.importorskip("dask.array")
import dask  # noqa: E402
from _reference_metrics import REFERENCES, exact_values, nb_digits, nb_limb_range  # noqa: E402
from scipy import stats  # noqa: E402
from scipy.ndimage import gaussian_filter  # noqa: E402

from tilesky.kernels._noise import moment_state, split_digits  # noqa: E402
from tilesky.metrics import (  # noqa: E402
    MetricsState,
    _block,
    compute_metrics,
    line_fit,
)
from tilesky.metrics._block import block_state  # noqa: E402
from tilesky.metrics._catalogue import read_catalogue  # noqa: E402
from tilesky.metrics._exact import (  # noqa: E402
    exact_float,
    grouped_moment_states,
    moment_state_of,
    nb_column_float,
    nb_digit_range,
    nb_to_float,
)
from tilesky.metrics._graph import metrics_graph  # noqa: E402
from tilesky.metrics._states import Spec  # noqa: E402
from tilesky.metrics._summary import summarize  # noqa: E402
from tilesky.metrics._table import KeyedTable  # noqa: E402

SHAPE = (97, 131)
EDGE = 10
BOX = 16


def _discs(rng, shape, n, rmin, rmax):
    mask = np.zeros(shape, bool)
    for _ in range(n):
        y, x = rng.uniform(0, shape[0]), rng.uniform(0, shape[1])
        r = rng.uniform(rmin, rmax)
        y0, x0 = int(max(y - r, 0)), int(max(x - r, 0))
        yy, xx = np.ogrid[y0 : int(y + r) + 1, x0 : int(x + r) + 1]
        disc = (yy - y) ** 2 + (xx - x) ** 2 <= r * r
        mask[y0 : y0 + disc.shape[0], x0 : x0 + disc.shape[1]] |= disc[
            : shape[0] - y0, : shape[1] - x0
        ]
    return mask


@pytest.fixture(scope="module")
def small():
    """A 97x131 scene with truth, sky, a disc mask, NaNs and a catalogue."""
    rng = np.random.default_rng(0)
    ny, nx = SHAPE
    yy, xx = np.indices(SHAPE)
    truth = 1.0 + 0.3 * yy / ny + 0.1 * np.sin(xx / 9.0)
    sky = truth + rng.normal(scale=0.1, size=SHAPE)
    n = 40
    x = rng.uniform(-1.0, nx + 0.4, n)
    y = rng.uniform(-1.0, ny + 0.4, n)
    # Boxes on chunk borders (30, 60, 90) and at the image corners.
    x[:6] = [29.6, 30.4, 59.5, 0.2, nx - 0.7, 89.5]
    y[:6] = [29.5, 60.2, 30.0, 0.3, ny - 0.6, 59.6]
    flux = rng.uniform(0, 50, n)
    re = rng.uniform(0.5, 5, n)
    sources = np.zeros(SHAPE)
    for i in range(n):
        sources += (
            flux[i]
            / (2 * np.pi * re[i] ** 2)
            * np.exp(-((yy - y[i]) ** 2 + (xx - x[i]) ** 2) / (2 * re[i] ** 2))
        )
    scene = sky + sources
    mask = _discs(rng, SHAPE, 25, 2, 6)
    bkg = truth + 0.02 * gaussian_filter(rng.normal(size=SHAPE), 4) + 0.002 * sources
    bkg[:4, :9] = np.nan
    scene[50, 70] = np.nan
    sky[20, 100] = np.nan
    cat = {"x_mean": x, "y_mean": y, "flux": flux, "re": re}
    return {
        "scene": scene,
        "background": bkg,
        "mask": mask,
        "truth": truth,
        "sky": sky,
        "catalogue": cat,
    }


def _run(d, **kw):
    kw = {"edge": EDGE, "bias_box_size": BOX, **kw}
    return compute_metrics(
        d["scene"],
        d["background"],
        d["mask"],
        truth=d["truth"],
        sky=d["sky"],
        catalogue=d["catalogue"],
        **kw,
    )


@pytest.fixture(scope="module")
def result(small):
    return _run(small, return_points=True)


# ---------------------------------------------------------------- numpy refs


def _ref_block_rms(values, bad, w):
    """The notebook's smoothsample_masked + std, written directly."""
    ny, nx = values.shape
    rows, cols = np.indices(values.shape)
    h = w / 2
    bad = bad | (rows < h) | (rows > ny - h) | (cols < h) | (cols > nx - h)
    by, bx = ny // w, nx // w
    v = values[: by * w, : bx * w].reshape(by, w, bx, w)
    b = bad[: by * w, : bx * w].reshape(by, w, bx, w).any(axis=(1, 3))
    means = v.mean(axis=(1, 3))[~b]
    return means.size, (means.std() if means.size >= 2 else None)


def _close(a, b, rtol=1e-12):
    if a is None or b is None:
        return a is None and b is None
    return math.isclose(a, b, rel_tol=rtol, abs_tol=1e-15)


def test_truth_metrics_match_numpy(small, result):
    m, _ = result
    d = small["background"] - small["truth"]
    for part, sub in (("all", d), ("interior", d[EDGE:-EDGE, EDGE:-EDGE])):
        f = sub[np.isfinite(sub)]
        got = m["truth"][part]
        assert got["n_pixels"] == f.size
        assert _close(got["mean"], f.mean())
        assert _close(got["std"], f.std())
        assert _close(got["rms"], np.sqrt(np.mean(f**2)))
        assert got["max"] == f.max() and got["min"] == f.min()
    assert m["truth"]["interior"]["edge"] == EDGE


def test_scale_matches_numpy(small, result):
    m, _ = result
    sc = m["scale"]
    resid = small["scene"] - small["background"]
    perfect = small["sky"] - small["truth"]
    bad = small["mask"] | ~np.isfinite(resid) | ~np.isfinite(perfect)
    assert sc["widths"] == list(range(3, 30))
    sigma = resid[~small["mask"] & np.isfinite(resid)].std()
    assert _close(sc["sigma"], sigma)
    assert sc["reference"] == "perfect"
    counted = 0
    for k, w in enumerate(sc["widths"]):
        n, rms = _ref_block_rms(resid, bad, w)
        _, prms = _ref_block_rms(perfect, bad, w)
        assert sc["n_blocks"][k] == n
        assert _close(sc["rms"][k], rms)
        assert _close(sc["perfect"][k], prms)
        assert _close(sc["ideal"][k], sigma / w)
        if rms is not None:
            counted += 1
            assert _close(sc["ratio"][k], rms / prms)
            assert _close(sc["ratio_ideal"][k], rms / (sigma / w))
    assert counted >= 8


def test_scale_without_sky_uses_ideal_fall(small):
    m = compute_metrics(
        small["scene"],
        small["background"],
        small["mask"],
        widths=[4, 7],
        noise_sigma=0.1,
    )["scale"]
    assert m["reference"] == "ideal" and m["perfect"] is None
    assert m["sigma"] == 0.1 and m["sigma_source"] == "noise_sigma"
    resid = small["scene"] - small["background"]
    bad = small["mask"] | ~np.isfinite(resid)
    for k, w in enumerate((4, 7)):
        _, rms = _ref_block_rms(resid, bad, w)
        assert _close(m["ratio"][k], rms / (0.1 / w))


def test_bias_matches_numpy(small, result):
    m, _ = result
    b = m["bias"]
    bkg, mask = small["background"], small["mask"]
    cov = np.isfinite(bkg)
    bm, bu = bkg[cov & mask], bkg[cov & ~mask]
    assert b["n_masked"] == bm.size and b["n_unmasked"] == bu.size
    assert _close(b["mean_masked"], bm.mean())
    assert _close(b["mean_unmasked"], bu.mean())
    assert _close(b["difference_global"], bm.mean() - bu.mean())
    d, wgt = [], []
    for y0 in range(0, SHAPE[0], BOX):
        for x0 in range(0, SHAPE[1], BOX):
            sb = (slice(y0, y0 + BOX), slice(x0, x0 + BOX))
            on_m, on_u = (cov & mask)[sb], (cov & ~mask)[sb]
            if on_m.any() and on_u.any():
                d.append(bkg[sb][on_m].mean() - bkg[sb][on_u].mean())
                wgt.append(on_m.sum())
    d, wgt = np.array(d), np.array(wgt, float)
    est = (wgt * d).sum() / wgt.sum()
    se = np.sqrt(len(d) / (len(d) - 1) * ((wgt * (d - est)) ** 2).sum()) / wgt.sum()
    assert b["n_blocks"] == len(d) > 10
    assert _close(b["difference"], est, 1e-9)
    assert _close(b["stderr"], se, 1e-9)
    assert _close(b["z"], est / se, 1e-9)
    # The notebook's numbers, reproduced for comparison.
    nb_m = bm.mean() / (np.sqrt(bm.size) * bm.std())
    nb_u = bu.mean() / (np.sqrt(bu.size) * bu.std())
    assert _close(b["naive"]["notebook_stderr_masked"], nb_m)
    assert _close(
        b["naive"]["notebook_z"], (bm.mean() - bu.mean()) / np.hypot(nb_m, nb_u)
    )
    iid = np.sqrt(bm.var() / bm.size + bu.var() / bu.size)
    assert _close(b["naive"]["iid_stderr"], iid)


def _ref_box(img, y, x):
    ny, nx = img.shape
    box = img[max(0, y - 1) : min(ny, y + 2), max(0, x - 1) : min(nx, x + 2)]
    f = box[np.isfinite(box)]
    return f.mean() if f.size else np.nan


def test_sources_match_numpy(small, result):
    m, pts = result
    cat, mask = small["catalogue"], small["mask"]
    resid = small["background"] - small["truth"]
    ny, nx = SHAPE
    src = pts["sources"]
    n_inside = 0
    for i in range(cat["x_mean"].size):
        x, y = int(np.rint(cat["x_mean"][i])), int(np.rint(cat["y_mean"][i]))
        if not (0 <= x < nx and 0 <= y < ny):
            assert not src["valid"][i] and np.isnan(src["residual"][i])
            continue
        n_inside += 1
        assert src["valid"][i]
        np.testing.assert_allclose(
            src["residual"][i], _ref_box(resid, y, x), rtol=1e-12
        )
        np.testing.assert_allclose(
            src["background"][i], _ref_box(small["background"], y, x), rtol=1e-12
        )
        assert src["masked"][i] == mask[y, x]
    assert m["sources"]["n_sources_inside"] == n_inside
    rnd = pts["random"]
    assert rnd["x"].size == 5 * cat["x_mean"].size == m["sources"]["n_random"]
    assert rnd["x"].min() >= 2 and rnd["x"].max() <= nx - 3
    for i in range(rnd["x"].size):
        x, y = rnd["x"][i], rnd["y"][i]
        box_masked = mask[y - 1 : y + 2, x - 1 : x + 2].any()
        assert rnd["kept"][i] == (not box_masked)
        np.testing.assert_allclose(
            rnd["residual"][i], _ref_box(resid, y, x), rtol=1e-12
        )
    assert set(rnd["flux"]) <= set(cat["flux"]) and set(rnd["re"]) <= set(cat["re"])
    # Group statistics and fits from the per-source values.
    groups = m["sources"]["groups"]
    masked = src["valid"] & src["masked"]
    for name, sel, v, flux in (
        ("masked", masked, src["residual"], cat["flux"]),
        ("unmasked", src["valid"] & ~src["masked"], src["residual"], cat["flux"]),
        ("random", rnd["kept"], rnd["residual"], rnd["flux"]),
    ):
        g = groups[name]
        sel = sel & np.isfinite(v)  # a box wholly in the NaN corner has no value
        assert g["n"] == sel.sum() >= 3
        assert _close(g["mean"], v[sel].mean())
        assert _close(g["std"], v[sel].std(ddof=1))
        ref = stats.linregress(flux[sel], v[sel])
        assert _close(g["fit_flux"]["slope"], ref.slope, 1e-9)
        assert _close(g["fit_flux"]["intercept"], ref.intercept, 1e-9)
        assert _close(g["fit_flux"]["slope_err"], ref.stderr, 1e-9)
        assert _close(g["fit_flux"]["intercept_err"], ref.intercept_stderr, 1e-9)
    assert m["sources"]["quantity"] == "residual"


def test_line_fit_edge_cases():
    assert line_fit([1, 2], [3, 4])["slope"] is None
    assert line_fit([1, 1, 1], [3, 4, 5])["slope"] is None
    fit = line_fit([0, 1, 2, np.nan], [1.0, 3.0, 5.0, 7.0])
    assert fit["n"] == 3 and fit["slope"] == pytest.approx(2.0)
    assert fit["slope_err"] == pytest.approx(0.0, abs=1e-12)


def test_metrics_are_strict_json(result):
    m, _ = result
    json.dumps(m, allow_nan=False)


# ------------------------------------------------------------- invariance


@pytest.mark.parametrize("chunks", [30, (60, 90), (17, 23), -1])
def test_identical_for_any_chunking(small, result, chunks):
    ref, ref_pts = result
    lazy = {
        k: da.from_array(v, chunks=chunks) for k, v in small.items() if k != "catalogue"
    }
    lazy["catalogue"] = small["catalogue"]
    got, pts = _run(lazy, return_points=True)
    assert got == ref
    for group in ("sources", "random"):
        for key, arr in ref_pts[group].items():
            np.testing.assert_array_equal(pts[group][key], arr)


def test_mixed_numpy_and_dask_inputs(small, result):
    mixed = dict(small)
    mixed["background"] = da.from_array(small["background"], chunks=(40, 50))
    mixed["scene"] = da.from_array(small["scene"], chunks=(30, 30))
    assert _run(mixed) == result[0]


def test_graph_is_named_and_lazy(small):
    spec = Spec(SHAPE, (3, 7), EDGE, BOX, True, False, False)
    arrays = {
        "scene": da.from_array(small["scene"], chunks=30),
        "background": da.from_array(small["background"], chunks=30),
        "mask": da.from_array(small["mask"], chunks=30),
        "truth": da.from_array(small["truth"], chunks=30),
    }

    def refuse(*args, **kwargs):
        raise AssertionError("the graph must not compute while it is built")

    with dask.config.set(scheduler=refuse):
        graph = metrics_graph(arrays, spec, None)
    ours = [k for k in dict(graph.__dask_graph__()) if str(k).startswith("metrics-")]
    assert sum(str(k).startswith("metrics-block") for k in ours) == 4 * 5
    assert str(graph.key).startswith("metrics-merge")


def _chunk_states(d, spec, cat, ys, xs):
    positions = cat.positions()
    states = []
    for y0, y1 in itertools.pairwise(ys):
        for x0, x1 in itertools.pairwise(xs):
            sb = (slice(y0, y1), slice(x0, x1))
            states.append(
                block_state(
                    spec,
                    (y0, x0),
                    d["scene"][sb],
                    d["background"][sb],
                    d["mask"][sb],
                    d["truth"][sb],
                    d["sky"][sb],
                    positions,
                )
            )
    return states


def test_merge_in_any_order_is_identical(small, result):
    spec = Spec(SHAPE, tuple(range(3, 30)), EDGE, BOX, True, True, True)
    cat = read_catalogue(small["catalogue"], SHAPE, None, 0)
    states = _chunk_states(small, spec, cat, [0, 23, 61, 97], [0, 44, 45, 100, 131])
    ref = summarize(_fold(states), spec, cat, None)
    assert ref[0] == result[0]
    rng = random.Random(1)
    for _ in range(3):
        shuffled = states[:]
        rng.shuffle(shuffled)
        assert summarize(_fold(shuffled), spec, cat, None)[0] == ref[0]
    # A balanced tree instead of a left fold.
    level = states[:]
    while len(level) > 1:
        level = [_fold(level[i : i + 2]) for i in range(0, len(level), 2)]
    assert summarize(level[0], spec, cat, None)[0] == ref[0]
    # Partially merged states still hold the straddling blocks, unfinished.
    partial = _fold(states[:3])
    assert any(t.keys.size for t in partial.scale.pending)


def _fold(states) -> MetricsState:
    out = states[0]
    for s in states[1:]:
        out = out.merge(s)
    return out


def test_merge_refuses_incompatible_states(small):
    spec = Spec(SHAPE, (3,), EDGE, BOX, False, False, False)
    other = Spec(SHAPE, (4,), EDGE, BOX, False, False, False)
    a = block_state(spec, (0, 0), small["scene"], small["background"], small["mask"])
    b = block_state(other, (0, 0), small["scene"], small["background"], small["mask"])
    with pytest.raises(ValueError, match="widths"):
        a.merge(b)


# ---------------------------------------------------------------- exactness


def test_exact_sums_are_split_independent():
    rng = np.random.default_rng(3)
    x = rng.normal(size=3000) * 10.0 ** rng.integers(-30, 30, 3000)
    x[::7] *= -1
    ref = math.fsum(x)
    keys = np.zeros(x.size, dtype=np.int64)
    no_counts = np.zeros((0, x.size), dtype=np.int64)
    whole = KeyedTable.combine([KeyedTable(keys, (exact_values(x),), no_counts)])
    total = exact_float(whole.sums[0])[0]
    assert abs(total - ref) <= math.ulp(ref)
    for cuts in ([100, 2000], [1, 2, 3, 2999], [1500]):
        parts = [
            KeyedTable(keys[p], (exact_values(x[p]),), no_counts[:, p])
            for p in np.split(np.arange(x.size), cuts)
        ]
        merged = KeyedTable.combine(parts[::-1])
        assert exact_float(merged.sums[0])[0] == total
    # Each value alone comes back exactly, whatever its sign and size.
    tiny = np.array([5e-324, -2.5e-310, 1e308, -3.0, 0.0])
    np.testing.assert_array_equal(exact_float(exact_values(tiny)), tiny)


def test_fast_moment_state_equals_reference():
    rng = np.random.default_rng(4)
    v = rng.normal(size=(60, 70)) * 10.0 ** rng.integers(-8, 8, (60, 70))
    v[3, 4] = np.nan
    mask = rng.random(v.shape) < 0.3
    assert moment_state_of(v) == moment_state(v)
    assert moment_state_of(v, drop=mask) == moment_state(v, mask=mask)
    assert moment_state_of(v, keep=mask) == moment_state(v, mask=~mask)


# ------------------------------------------------------------ significance


def _smooth_scene(seed, bias=0.0, n=512):
    """A smooth (correlated) background; ``bias`` added under a disc mask."""
    rng = np.random.default_rng(seed)
    field = gaussian_filter(rng.normal(size=(n, n)), 12, mode="wrap")
    field *= 0.05 / field.std()
    field += 0.3 * np.arange(n)[:, None] / n
    mask = _discs(rng, (n, n), 400, 2, 7)
    return field + bias * mask, mask


def test_bias_significance_is_calibrated_without_bias():
    z, iid_z = [], []
    for seed in range(16):
        bkg, mask = _smooth_scene(seed)
        b = compute_metrics(bkg, bkg, mask, widths=())["bias"]
        assert b["n_blocks"] == 64
        z.append(b["z"])
        iid_z.append(b["naive"]["iid_z"])
    z, iid_z = np.abs(z), np.abs(iid_z)
    # Blocks are nearly independent: |z| behaves like a standard normal.
    assert (z < 3).sum() >= 15
    assert 0.3 < np.median(z) < 1.3
    # Treating correlated pixels as independent overstates it badly.
    assert np.median(iid_z) > 4 * np.median(z)
    assert (iid_z > 3).sum() >= 8


def test_bias_significance_detects_injected_bias():
    bias = 0.03
    bkg, mask = _smooth_scene(100, bias=bias)
    b = compute_metrics(bkg, bkg, mask, widths=())["bias"]
    assert b["z"] > 6
    assert abs(b["difference"] - bias) < 3 * b["stderr"]
    # The same scene without the bias is not significant.
    bkg0, _ = _smooth_scene(100)
    b0 = compute_metrics(bkg0, bkg0, mask, widths=())["bias"]
    assert abs(b0["z"]) < 3
    assert b["stderr"] == pytest.approx(b0["stderr"], rel=0.2)


# -------------------------------------------------------------- validation


def test_errors_name_the_parameter(small):
    s, b, m = small["scene"], small["background"], small["mask"]
    with pytest.raises(ValueError, match="scene must be a non-empty 2-D"):
        compute_metrics(s[:10], b, m)
    with pytest.raises(ValueError, match="widths"):
        compute_metrics(s, b, m, widths=[0, 3])
    with pytest.raises(ValueError, match="bias_box_size"):
        compute_metrics(s, b, m, bias_box_size=1)
    with pytest.raises(ValueError, match="noise_sigma"):
        compute_metrics(s, b, m, noise_sigma=-1.0)
    with pytest.raises(ValueError, match="'re'"):
        compute_metrics(s, b, m, catalogue={"x_mean": [1], "y_mean": [1], "flux": [1]})


def test_without_truth_sources_use_background(small):
    m, pts = compute_metrics(
        small["scene"],
        small["background"],
        None,
        catalogue=small["catalogue"],
        n_random=10,
        widths=[5],
        return_points=True,
    )
    assert m["truth"] is None and m["sources"]["quantity"] == "background"
    assert m["sources"]["n_random"] == 10
    assert m["sources"]["groups"]["masked"]["n"] == 0
    np.testing.assert_array_equal(pts["sources"]["value"], pts["sources"]["background"])


# ------------------------------------------- one-pass kernels vs the former path


def _variant(d, name):
    """The small scene in another form: missing inputs, float32, extremes."""
    d = dict(d)
    if name == "float32":
        for k in ("scene", "background", "truth", "sky"):
            d[k] = d[k].astype(np.float32)
    elif name == "no_truth":
        d["truth"] = d["sky"] = None
    elif name == "no_sky_no_mask":
        d["sky"], d["mask"] = None, None
    elif name == "no_catalogue":
        d["catalogue"] = None
    elif name == "extreme":
        # Digits over many positions (the general float path), signs,
        # subnormals, zeros and infinities.
        rng = np.random.default_rng(5)
        d["scene"] = d["scene"] * 10.0 ** rng.integers(-30, 30, SHAPE)
        d["scene"][3, 3], d["scene"][4, 4], d["scene"][5, 5] = 5e-320, -1e300, 0.0
        d["scene"][6, 6] = -np.inf
        d["sky"] = d["sky"] * 10.0 ** rng.integers(-12, 12, SHAPE)
    return d


def _metrics_json(d, chunks, **kw):
    arrays = {k: v for k, v in d.items() if k != "catalogue"}
    if chunks is not None:
        arrays = {
            k: None if v is None else da.from_array(v, chunks=chunks)
            for k, v in arrays.items()
        }
    m, pts = compute_metrics(
        arrays["scene"],
        arrays["background"],
        arrays["mask"],
        truth=arrays["truth"],
        sky=arrays["sky"],
        catalogue=d["catalogue"],
        return_points=True,
        **{"edge": EDGE, "bias_box_size": BOX, **kw},
    )
    # JSON text: tells -0.0 from 0.0, which == on floats does not.
    return json.dumps(m, sort_keys=True, allow_nan=False), pts


def _former(monkeypatch):
    for name, reference in REFERENCES.items():
        monkeypatch.setattr(_block, name, reference)


@pytest.mark.parametrize(
    ("variant", "chunks", "options"),
    [
        ("full", None, {}),
        ("full", (17, 23), {}),
        ("full", ((50, 0, 47), (29, 1, 101)), {}),
        # Chunk (0, 0) is the all-NaN corner of the background.
        ("full", ((4, 93), (9, 122)), {"bias_box_size": 3}),
        ("float32", 40, {}),
        ("no_truth", None, {"widths": [1, 2, 5, 3, 5, 40, 200]}),
        ("no_sky_no_mask", (30, 64), {"widths": [4, 9, 2], "noise_sigma": 0.1}),
        ("no_catalogue", None, {"widths": [], "bias_box_size": 7, "edge": 0}),
        ("extreme", None, {"widths": [1, 3, 4, 8]}),
        ("extreme", (13, 27), {"widths": [1, 3, 4, 8]}),
    ],
)
def test_one_pass_equals_former_path(small, monkeypatch, variant, chunks, options):
    d = _variant(small, variant)
    got, pts = _metrics_json(d, chunks, **options)
    whole, _ = _metrics_json(d, None, **options)
    assert got == whole
    with monkeypatch.context() as mp:
        _former(mp)
        ref, ref_pts = _metrics_json(d, chunks, **options)
    assert got == ref
    if ref_pts is not None:
        for group in ("sources", "random"):
            for key, arr in ref_pts[group].items():
                np.testing.assert_array_equal(pts[group][key], arr)


def test_one_pass_states_equal_former_states(small, monkeypatch):
    """Merged states, integer for integer, with boxes and blocks cut by chunks."""
    spec = Spec(SHAPE, (1, 3, 4, 7, 16, 29), EDGE, BOX, True, True, True)
    cat = read_catalogue(small["catalogue"], SHAPE, None, 0)
    cuts = ([0, 29, 30, 61, 97], [0, 44, 45, 100, 131])
    new = _fold(_chunk_states(small, spec, cat, *cuts))
    with monkeypatch.context() as mp:
        _former(mp)
        old = _fold(_chunk_states(small, spec, cat, *cuts))
    _assert_settled(new)
    for field in ("all", "interior", "max_all", "min_all", "max_interior"):
        assert getattr(new.truth, field) == getattr(old.truth, field)
    assert new.truth.min_interior == old.truth.min_interior
    for field in ("pixels", "resid", "perfect"):
        assert getattr(new.scale, field) == getattr(old.scale, field)
    assert (new.bias.masked, new.bias.unmasked) == (old.bias.masked, old.bias.unmasked)
    for name in ("keys", "n_masked", "n_unmasked", "mean_masked", "mean_unmasked"):
        np.testing.assert_array_equal(getattr(new.bias, name), getattr(old.bias, name))
    for name in ("keys", "resid", "bkg", "centre_masked", "n_masked_box"):
        np.testing.assert_array_equal(
            getattr(new.sources, name), getattr(old.sources, name)
        )


def _assert_settled(state):
    assert not any(t.keys.size for t in state.scale.pending)
    assert state.bias.pending.keys.size == 0 and state.sources.pending.keys.size == 0


def test_boxes_spanning_three_chunks(small, result):
    """Chunks 1 px wide: a 3x3 box then lies in three chunks on that axis."""
    # Source 0 is centred on pixel (30, 30).
    chunks = ((29, 1, 67), (29, 1, 1, 100))
    lazy = {
        k: da.from_array(v, chunks=chunks) for k, v in small.items() if k != "catalogue"
    }
    lazy["catalogue"] = small["catalogue"]
    assert _run(lazy) == result[0]


@numba.njit
def _split_digits_all(values):
    out = np.empty((4, values.size), np.int64)
    for i in range(values.size):
        out[0, i], out[1, i], out[2, i], out[3, i] = split_digits(values[i])
    return out


def _special_floats():
    tiny = np.finfo(np.float64).tiny
    big = np.finfo(np.float64).max
    below_tiny = tiny * (1 - 2**-52)
    odd = [0.0, -0.0, np.inf, -np.inf, np.nan, 5e-324, -5e-324, tiny, -tiny]
    return np.array([*odd, below_tiny, big, -big, 1.0, -1.0, 2.0**-26, 1.5, -0.1])


def test_bit_split_equals_split_digits():
    rng = np.random.default_rng(6)
    bits = rng.integers(-(2**63), 2**63 - 1, 200_000, dtype=np.int64)
    values = np.concatenate([bits.view(np.float64), _special_floats()])
    q, d = nb_digits(values)
    np.testing.assert_array_equal(np.vstack([q, d]), _split_digits_all(values))


@numba.njit
def _column_floats(limbs, q0s):
    """The general path, column by column: the reference of the shortcut."""
    k, n = limbs.shape
    out = np.empty(n)
    for c in range(n):
        buf = np.zeros(k + 6, np.int64)
        buf[3 : 3 + k] = limbs[:, c]
        out[c] = nb_column_float(buf, k, q0s[c])
    return out


@pytest.mark.parametrize("k", [0, 1, 2, 3, 4, 5])
def test_register_float_equals_general_path(k):
    rng = np.random.default_rng(k)
    n = 20_000
    # Digit sums of every size, up to past the shortcut's limits (2**36 on
    # the top digit, 2**60 below), of both signs, some columns mostly zero.
    mag = rng.integers(1, 63, size=(k, n))
    limbs = (rng.random((k, n)) * 2.0**mag).astype(np.int64)
    limbs *= rng.choice([-1, 1], size=(k, n))
    limbs[:, ::5] = 0
    if k:
        limbs[-1, 1::5] = 0
        limbs[0, 2::5] = 1
        edge = limbs[:, 3::5]
        limbs[:, 3::5] = (1 << 60) - rng.integers(0, 2, size=edge.shape)
    # Positions from subnormal sums (0, 1) to overflowing ones (81).
    q0s = rng.integers(0, 82, n)
    q0s[::7] = 0
    got = np.empty(n)
    for q0 in np.unique(q0s):
        got[q0s == q0] = nb_to_float(np.ascontiguousarray(limbs[:, q0s == q0]), q0)
    want = _column_floats(limbs, q0s)
    np.testing.assert_array_equal(got, want)
    assert np.array_equal(np.signbit(got), np.signbit(want))


def test_grouped_moments_equal_moment_state():
    rng = np.random.default_rng(7)
    v = rng.normal(size=5000) * 10.0 ** rng.integers(-200, 200, 5000)
    odd = np.concatenate([_special_floats(), [1e300, -1e200, 1e-170, 3e-310]])
    v[: odd.size] = odd  # squares that overflow, underflow or are subnormal
    group = rng.integers(0, 5, v.size)
    states = grouped_moment_states(v, group, 6)
    for g in range(6):
        assert states[g] == moment_state(v[group == g])


def test_digit_range_equals_scan():
    rng = np.random.default_rng(8)
    cases = [
        rng.normal(size=(40, 50)) * 10.0 ** rng.integers(-300, 300, (40, 50)),
        np.full((3, 4), np.nan),
        np.zeros((2, 2)),
        _special_floats().reshape(1, -1),
        np.array([[5e-324, -np.inf, 0.0]]),
    ]
    for v in cases:
        got = nb_digit_range(v)
        want = nb_limb_range(v, np.zeros((1, 1), bool), 0)
        if want[1] < 0:
            assert got[1] < 0
        else:
            assert got == want

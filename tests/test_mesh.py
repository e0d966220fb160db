"""Mesh statistics and mesh filter against photutils' Background2D."""

import warnings

import numpy as np
import pytest
from astropy.stats import SigmaClip as AstropySigmaClip
from photutils.background import Background2D
from photutils.background import MedianBackground as PhotMedian
from photutils.background import SExtractorBackground as PhotSExtractor
from photutils.background import StdBackgroundRMS as PhotStd
from photutils.utils._stats import nanmedian as phot_nanmedian
from scipy.ndimage import generic_filter

from tilesky.estimators import (
    BiweightLocationBackground,
    BiweightScaleBackgroundRMS,
    MADStdBackgroundRMS,
    MedianBackground,
    ModeEstimatorBackground,
    SExtractorBackground,
    SigmaClip,
    StdBackgroundRMS,
    make_sigma_clip,
)
from tilesky.kernels._mesh import filter_depth, filter_mesh, mesh_shape, mesh_statistics

RTOL = 1e-6

ESTIMATORS = {
    "median": (MedianBackground(), PhotMedian),
    "sextractor": (SExtractorBackground(), PhotSExtractor),
}

# (shape, box_size, exclude_percentile): non-multiple shapes need a high
# exclude_percentile for the partial edge boxes to be kept.
GEOMETRIES = [
    ((120, 90), 10, 50.0),
    ((123, 97), 10, 90.0),
    ((61, 47), 6, 90.0),
    ((123, 97), (7, 5), 90.0),
]


def _scene(shape, rng, dtype=np.float64):
    """Gradient + ripple + noise + a few bright blobs (sigma clipping bites)."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    img = 100.0 + 0.3 * yy - 0.2 * xx + 5.0 * np.sin(xx / 9.0)
    img += rng.normal(0.0, 2.0, shape)
    for _ in range(12):
        cy, cx = rng.uniform(0, shape[0]), rng.uniform(0, shape[1])
        img += 60.0 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 8.0)
    return img.astype(dtype)


def _blob_mask(shape, rng, fraction):
    """Discs of random radius until about ``fraction`` of pixels are masked."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    mask = np.zeros(shape, bool)
    while mask.mean() < fraction:
        cy, cx = rng.uniform(0, shape[0]), rng.uniform(0, shape[1])
        mask |= (yy - cy) ** 2 + (xx - cx) ** 2 < rng.uniform(2, 14) ** 2
    return mask


def _rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
    a, b = a[~np.isnan(a)], b[~np.isnan(b)]
    np.testing.assert_array_equal(a[b == 0], 0.0)  # e.g. the std of one pixel
    a, b = a[b != 0], b[b != 0]
    return float(np.max(np.abs(a - b) / np.abs(b), initial=0.0))


# astropy's SigmaClip(sigma=3) has maxiters=5; both sides get the same object
CLIP = AstropySigmaClip(sigma=3)


# photutils' Background2D defaults, the parity tests' reference: what a call
# below does not set explicitly.
PHOTUTILS_STATS = {
    "exclude_percentile": 10.0,
    "sigma_clip": make_sigma_clip(3.0, maxiters=10),
    "bkg_estimator": SExtractorBackground(),
    "bkg_rms_estimator": StdBackgroundRMS(),
}
PHOTUTILS_FILTER = {"filter_size": 3, "filter_threshold": None}


def _stats(data, mask=None, **params):
    return mesh_statistics(data, mask, **{**PHOTUTILS_STATS, **params})


def _filter(mesh, **params):
    return filter_mesh(mesh, **{**PHOTUTILS_FILTER, **params})


def _background2d(data, box, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Background2D(
            data, box, sigma_clip=CLIP, bkg_rms_estimator=PhotStd(), **kwargs
        )


def test_mesh_shape_and_depth():
    assert mesh_shape((120, 90), 10) == (12, 9)
    assert mesh_shape((123, 97), 10) == (13, 10)
    assert mesh_shape((123, 97), (7, 5)) == (18, 20)
    assert mesh_shape((3, 4), 10) == (1, 1)
    assert filter_depth(1) == (0, 0)
    assert filter_depth(5) == (2, 2)
    assert filter_depth((3, 5)) == (1, 2)


@pytest.mark.parametrize("est_name", list(ESTIMATORS))
@pytest.mark.parametrize(("shape", "box", "exclude"), GEOMETRIES, ids=str)
def test_filtered_meshes_match_photutils(shape, box, exclude, est_name):
    rng = np.random.default_rng(0)
    dtype = np.float32 if est_name == "sextractor" and box == 10 else np.float64
    data = _scene(shape, rng, dtype)
    mask = rng.random(shape) < 0.03
    ours_est, phot_est = ESTIMATORS[est_name]
    bkg, rms, n_good = _stats(
        data,
        mask,
        box_size=box,
        exclude_percentile=exclude,
        sigma_clip=CLIP,
        bkg_estimator=ours_est,
    )
    assert not np.isnan(bkg).any()  # no excluded box: no NaN filling needed
    assert bkg.dtype == rms.dtype == dtype
    global_min = float(np.nanmin(bkg))
    threshold_value = float(np.median(bkg))
    worst = 0.0
    for filter_size in (1, 3, 5, (3, 5)):
        for threshold in (None, threshold_value):
            ref = _background2d(
                data,
                box,
                mask=mask,
                exclude_percentile=exclude,
                filter_size=filter_size,
                filter_threshold=threshold,
                bkg_estimator=phot_est(),
            )
            kwargs = {"filter_size": filter_size, "filter_threshold": threshold}
            fb = _filter(bkg, **kwargs, global_min=global_min)
            fr = _filter(rms, **kwargs, threshold_mesh=bkg, global_min=global_min)
            assert fb.dtype == ref.background_mesh.dtype
            worst = max(worst, _rel(fb, ref.background_mesh))
            worst = max(worst, _rel(fr, ref.background_rms_mesh))
            np.testing.assert_array_equal(n_good, ref.n_pixels_mesh)
    assert worst <= RTOL


@pytest.mark.parametrize("est_name", list(ESTIMATORS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_raw_statistics_match_photutils(dtype, est_name):
    """Pre-fill statistics with excluded boxes: photutils' internals."""
    rng = np.random.default_rng(0)
    shape, box = (123, 97), 10
    data = _scene(shape, rng, dtype)
    data[5, 7] = np.nan  # non-finite pixels are masked automatically
    data[60, 3] = np.inf
    mask = _blob_mask(shape, rng, 0.35)
    ours_est, phot_est = ESTIMATORS[est_name]
    for exclude in (0.0, 10.0, 50.0, 90.0, 100.0):
        bkg, rms, n_good = _stats(
            data,
            mask,
            box_size=box,
            exclude_percentile=exclude,
            sigma_clip=CLIP,
            bkg_estimator=ours_est,
        )
        if exclude == 0.0:
            # ngood <= (1 - 0) * box_npixels always holds: every box excluded,
            # which photutils reports as an error.
            with pytest.raises(ValueError, match="All boxes contain"):
                _background2d(data, box, mask=mask, exclude_percentile=exclude)
            assert np.isnan(bkg).all() and np.isnan(rms).all()
            continue
        ref = _background2d(
            data, box, mask=mask, exclude_percentile=exclude, bkg_estimator=phot_est()
        )
        assert np.isnan(bkg).any() or exclude == 100.0
        assert _rel(bkg, ref._bkg_stats) <= RTOL
        assert _rel(rms, ref._bkgrms_stats) <= RTOL
        np.testing.assert_array_equal(n_good, ref._ngood)
        assert n_good.dtype == np.int32


class _NumpyMedian(MedianBackground):
    """The median estimator by its numpy path (a subclass is not fused)."""


class _NumpyStd(StdBackgroundRMS):
    """The std estimator by its numpy path."""


FUSED_CLIPS = [
    make_sigma_clip(3.0, maxiters=10),
    None,
    SigmaClip(sigma=2.5, maxiters=None, cenfunc="mean"),
    SigmaClip(sigma_lower=2.0, sigma_upper=4.0, stdfunc="mad_std", maxiters=3),
]


def _fused_and_numpy_path(data, mask, params):
    """The default median + std (compiled) and the same through numpy."""
    fused = mesh_statistics(
        data, mask, bkg_estimator="median", bkg_rms_estimator="std", **params
    )
    numpy_path = mesh_statistics(
        data,
        mask,
        bkg_estimator=_NumpyMedian(),
        bkg_rms_estimator=_NumpyStd(),
        **params,
    )
    return fused, numpy_path


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("clip", FUSED_CLIPS, ids=repr)
def test_fused_median_std_equals_the_numpy_path(clip, dtype):
    """The compiled clip + median + std pass is the clip, then the estimators,
    bit for bit: ties, NaN, masks, partial boxes and excluded boxes."""
    rng = np.random.default_rng(5)
    kept = 0
    for trial in range(12):
        shape = tuple(int(n) for n in rng.integers(7, 80, 2))
        data = _scene(shape, rng, dtype)
        if trial % 3 == 0:
            data = np.round(data / 4.0).astype(dtype)  # many equal values
        data[rng.random(shape) < 0.03] = np.nan
        mask = rng.random(shape) < 0.2
        box = tuple(int(b) for b in rng.integers(2, 13, 2))
        exclude = float(rng.choice([10.0, 50.0, 90.0, 100.0]))
        params = {"box_size": box, "exclude_percentile": exclude, "sigma_clip": clip}
        fused, numpy_path = _fused_and_numpy_path(data, mask, params)
        for ours, ref in zip(fused, numpy_path, strict=True):
            assert ours.dtype == ref.dtype
            assert ours.tobytes() == ref.tobytes()
        kept += int(np.isfinite(fused[0]).sum())
    assert kept > 100  # the comparison is not of NaN meshes


@pytest.mark.parametrize("box", [(1, 1), (6, 6), (10, 10), (13, 11), (70, 70)])
def test_fused_median_std_box_sizes_and_signed_zeros(box):
    """Every sort path of the compiled pass (the network, lanes left unused
    at the right edge, a quicksort past the network's size) against the
    numpy path, on boxes full of +0.0 and -0.0. numpy's median partitions
    (not a stable sort), so which zero it returns is its own; the values
    must agree, bit for bit once zeros are +0.0."""
    rng = np.random.default_rng(11)
    shape = (3 * box[0] + 1, 11 * box[1] + 3)
    data = _scene(shape, rng, np.float32)
    zero = rng.random(shape) < 0.6
    data[zero] = np.where(rng.random(int(zero.sum())) < 0.5, -0.0, 0.0)
    mask = rng.random(shape) < 0.1
    for clip in (FUSED_CLIPS[0], None):
        params = {"box_size": box, "exclude_percentile": 50.0, "sigma_clip": clip}
        fused, numpy_path = _fused_and_numpy_path(data, mask, params)
        for ours, ref in zip(fused, numpy_path, strict=True):
            assert (ours + 0).tobytes() == (ref + 0).tobytes()
        assert np.isfinite(fused[0]).sum() > 10
        assert (fused[0] == 0).sum() > 0


def test_photutils_estimator_clipping_is_stripped():
    rng = np.random.default_rng(0)
    data = _scene((60, 50), rng)
    ours = _stats(data, box_size=10, bkg_estimator=SExtractorBackground())
    theirs = _stats(data, box_size=10, bkg_estimator=PhotSExtractor())
    named = _stats(data, box_size=10, bkg_estimator="sextractor")
    for a, b, c in zip(ours, theirs, named, strict=True):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, c)


def test_dtype_rules():
    rng = np.random.default_rng(0)
    ints = rng.integers(90, 110, (40, 30)).astype(np.int16)
    bkg, rms, n_good = _stats(ints, box_size=10, sigma_clip=None)
    assert bkg.dtype == rms.dtype == np.float32
    assert n_good.dtype == np.int32 and (n_good == 100).all()
    f32 = ints.astype(np.float32)
    b32, _, _ = _stats(f32, box_size=10, bkg_estimator=BiweightLocationBackground())
    assert b32.dtype == np.float32


TILE_CASES = [
    ((120, 90), 10, (20, 30)),
    ((123, 97), 10, (30, 40)),
    ((123, 97), (7, 5), (14, 25)),
    ((61, 47), 6, (6, 6)),
]
TILE_ESTIMATORS = [
    (SExtractorBackground(), StdBackgroundRMS()),
    (BiweightLocationBackground(), BiweightScaleBackgroundRMS()),
    (ModeEstimatorBackground(), MADStdBackgroundRMS()),
]


@pytest.mark.parametrize(("shape", "box", "tile"), TILE_CASES, ids=str)
@pytest.mark.parametrize("estimators", TILE_ESTIMATORS, ids=lambda e: type(e[0]).name)
def test_tiles_reproduce_whole_image(shape, box, tile, estimators):
    """Box-aligned tiles, concatenated, equal the whole image bit for bit."""
    rng = np.random.default_rng(0)
    data = _scene(shape, rng, np.float32)
    data[rng.random(shape) < 0.01] = np.nan
    mask = _blob_mask(shape, rng, 0.2)
    kwargs = {
        "box_size": box,
        "exclude_percentile": 50.0,
        "bkg_estimator": estimators[0],
        "bkg_rms_estimator": estimators[1],
    }
    whole = _stats(data, mask, **kwargs)
    by, bx = np.broadcast_to(box, 2)
    ty, tx = tile
    assert ty % by == 0 and tx % bx == 0
    rows = []
    for y0 in range(0, shape[0], ty):
        cols = []
        for x0 in range(0, shape[1], tx):
            sl = np.s_[y0 : y0 + ty, x0 : x0 + tx]
            part = _stats(data[sl], mask[sl], **kwargs)
            ms = np.s_[y0 // by : -(-(y0 + ty) // by), x0 // bx : -(-(x0 + tx) // bx)]
            for w, p in zip(whole, part, strict=True):
                np.testing.assert_array_equal(p, w[ms])
            cols.append(part)
        rows.append([np.concatenate(c, axis=1) for c in zip(*cols, strict=True)])
    stitched = [np.concatenate(r, axis=0) for r in zip(*rows, strict=True)]
    for w, s in zip(whole, stitched, strict=True):
        assert w.dtype == s.dtype
        np.testing.assert_array_equal(s, w)
    assert np.isnan(whole[0]).any() and not np.isnan(whole[0]).all()


def _generic_median(mesh, size):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return generic_filter(
            mesh, phot_nanmedian, size=size, mode="constant", cval=np.nan
        )


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("size", [3, 5, (3, 5), (5, 1), 7])
def test_filter_equals_generic_filter(size, dtype):
    rng = np.random.default_rng(0)
    mesh = rng.normal(100.0, 10.0, (17, 23)).astype(dtype)
    mesh[rng.random(mesh.shape) < 0.15] = np.nan
    mesh[:6, :6] = np.nan  # all-NaN windows stay NaN
    ref = _generic_median(mesh, size)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = _filter(mesh, filter_size=size)
    assert got.dtype == mesh.dtype
    np.testing.assert_array_equal(got, ref)


def test_filter_threshold_semantics():
    rng = np.random.default_rng(0)
    bkg = rng.normal(100.0, 10.0, (15, 12))
    rms = rng.normal(5.0, 1.0, (15, 12))
    full_bkg, full_rms = _generic_median(bkg, 3), _generic_median(rms, 3)
    threshold = 105.0
    above = bkg > threshold
    got = _filter(bkg, filter_threshold=threshold)
    np.testing.assert_array_equal(got, np.where(above, full_bkg, bkg))
    got = _filter(rms, filter_threshold=threshold, threshold_mesh=bkg)
    np.testing.assert_array_equal(got, np.where(above, full_rms, rms))
    # below the global minimum (or None): everything is filtered
    np.testing.assert_array_equal(_filter(bkg, filter_threshold=0.0), full_bkg)
    np.testing.assert_array_equal(_filter(bkg), full_bkg)
    # a tile's local minimum may be above the threshold; the global one decides
    np.testing.assert_array_equal(
        _filter(bkg, filter_threshold=threshold, global_min=threshold + 1), full_bkg
    )
    # nothing above the threshold: unchanged
    np.testing.assert_array_equal(_filter(bkg, filter_threshold=1e9), bkg)
    np.testing.assert_array_equal(_filter(bkg, filter_size=1), bkg)


def test_filter_with_excluded_boxes_matches_photutils():
    """Excluded boxes filled by photutils' own IDW, then our filter."""
    rng = np.random.default_rng(0)
    data = _scene((120, 90), rng)
    mask = _blob_mask(data.shape, rng, 0.3)
    threshold = 110.0
    ref = _background2d(
        data,
        10,
        mask=mask,
        filter_size=3,
        filter_threshold=threshold,
        bkg_estimator=PhotMedian(),
    )
    bkg, rms, _ = _stats(
        data, mask, box_size=10, sigma_clip=CLIP, bkg_estimator=MedianBackground()
    )
    assert np.isnan(bkg).any()
    filled_bkg = ref._interpolate_grid(bkg)
    filled_rms = ref._interpolate_grid(rms)
    kwargs = {"filter_threshold": threshold, "global_min": float(np.nanmin(bkg))}
    fb = _filter(filled_bkg, **kwargs)
    fr = _filter(filled_rms, threshold_mesh=filled_bkg, **kwargs)
    assert _rel(fb, ref.background_mesh) <= RTOL
    assert _rel(fr, ref.background_rms_mesh) <= RTOL


@pytest.mark.parametrize("size", [3, (5, 3)])
@pytest.mark.parametrize("threshold", [None, 100.0])
def test_filter_tiles_with_halo(size, threshold):
    rng = np.random.default_rng(0)
    bkg = rng.normal(100.0, 10.0, (19, 14)).astype(np.float32)
    rms = rng.normal(5.0, 1.0, bkg.shape).astype(np.float32)
    gmin = float(bkg.min())
    kwargs = {"filter_size": size, "filter_threshold": threshold, "global_min": gmin}
    whole_b = _filter(bkg, **kwargs)
    whole_r = _filter(rms, threshold_mesh=bkg, **kwargs)
    dy, dx = filter_depth(size)
    for y0 in range(0, 19, 4):
        for x0 in range(0, 14, 5):
            y1, x1 = min(19, y0 + 4), min(14, x0 + 5)
            hy0, hx0 = max(0, y0 - dy), max(0, x0 - dx)
            halo = np.s_[hy0 : y1 + dy, hx0 : x1 + dx]
            core = np.s_[y0 - hy0 : y1 - hy0, x0 - hx0 : x1 - hx0]
            tb = _filter(bkg[halo], **kwargs)[core]
            tr = _filter(rms[halo], threshold_mesh=bkg[halo], **kwargs)[core]
            np.testing.assert_array_equal(tb, whole_b[y0:y1, x0:x1])
            np.testing.assert_array_equal(tr, whole_r[y0:y1, x0:x1])


def test_validation_errors():
    data = np.ones((20, 20))
    with pytest.raises(ValueError, match="box_size must be"):
        _stats(data, box_size=0)
    with pytest.raises(ValueError, match="box_size must be"):
        _stats(data, box_size=(2, 3, 4))
    with pytest.raises(ValueError, match="exclude_percentile must be between"):
        _stats(data, box_size=5, exclude_percentile=101)
    with pytest.raises(ValueError, match="mask must have the shape"):
        _stats(data, np.zeros((5, 5), bool), box_size=5)
    with pytest.raises(ValueError, match="data must be a 2D array"):
        _stats(np.ones(5), box_size=5)
    with pytest.raises(ValueError, match="'mean', 'median'"):
        _stats(data, box_size=5, bkg_estimator="average")
    with pytest.raises(ValueError, match="filter_size must be one or two"):
        _filter(data, filter_size=4)
    with pytest.raises(ValueError, match="threshold_mesh must have the shape"):
        _filter(data, filter_threshold=1.0, threshold_mesh=np.ones((3, 3)))

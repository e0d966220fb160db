"""Estimators and sigma clipping against photutils / astropy."""

import pickle
import warnings

import numpy as np
import photutils.background as pb
import pytest
from astropy.stats import SigmaClip as AstropySigmaClip

import tilesky.estimators as est
from tilesky.estimators import (
    BKG_ESTIMATORS,
    RMS_ESTIMATORS,
    BiweightLocationBackground,
    BiweightScaleBackgroundRMS,
    MedianBackground,
    ModeEstimatorBackground,
    SigmaClip,
    as_sigma_clip,
    make_estimator,
    make_sigma_clip,
)
from tilesky.estimators._rows import MAD_TO_SIGMA

RTOL = 1e-6

ALL_ESTIMATORS = [
    *(cls() for cls in BKG_ESTIMATORS.values()),
    *(cls() for cls in RMS_ESTIMATORS.values()),
    ModeEstimatorBackground(median_factor=2.5, mean_factor=1.5),
    BiweightLocationBackground(c=4.0, M=100.0),
    BiweightScaleBackgroundRMS(c=6.0),
    BiweightScaleBackgroundRMS(M=101.0),
]


def _photutils_twin(estimator):
    """The photutils estimator with the same parameters and no clipping."""
    cls = getattr(pb, type(estimator).__name__)
    return cls(**estimator.params, sigma_clip=None)


def _boxes(dtype, rng):
    """(nboxes, npix) data with NaN holes and the awkward rows."""
    x = rng.normal(100.0, 5.0, (300, 150)) + rng.exponential(3.0, (300, 150)) ** 2
    x[rng.random(x.shape) < 0.2] = np.nan
    x[3] = np.nan  # all NaN
    x[4] = np.nan
    x[4, 7] = 3.0  # one value
    x[5] = np.nan
    x[5, :4] = 2.0  # constant: std = MAD = 0
    x[6, ::2] = 50.0  # half the values identical: MAD = 0 or skewed
    return x.astype(dtype)


def _rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert np.array_equal(np.isnan(a), np.isnan(b))
    ok = ~np.isnan(a)
    scale = np.maximum(np.abs(b[ok]), np.finfo(np.float32).tiny)
    return float(np.max(np.abs(a[ok] - b[ok]) / scale, initial=0.0))


def _quiet(func, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return func(*args, **kwargs)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("estimator", ALL_ESTIMATORS, ids=repr)
def test_matches_photutils(estimator, dtype):
    data = _boxes(dtype, np.random.default_rng(0))
    ref = _quiet(_photutils_twin(estimator), data, axis=-1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no all-NaN / divide warnings
        got = estimator(data, axis=-1)
    assert got.shape == ref.shape
    assert got.dtype == np.asarray(ref).dtype
    assert _rel(got, ref) <= RTOL
    assert np.isnan(got[3])


@pytest.mark.parametrize("estimator", ALL_ESTIMATORS[:9], ids=repr)
def test_axis_none_and_tuple(estimator):
    rng = np.random.default_rng(0)
    data = rng.normal(10.0, 2.0, (4, 6, 5))
    data[rng.random(data.shape) < 0.1] = np.nan
    twin = _photutils_twin(estimator)
    scalar = estimator(data)
    assert np.ndim(scalar) == 0
    assert _rel(scalar, _quiet(twin, data)) <= RTOL
    assert _rel(estimator(data, axis=(0, 2)), _quiet(twin, data, axis=(0, 2))) <= RTOL
    assert _rel(estimator(data, axis=0), _quiet(twin, data, axis=0)) <= RTOL


@pytest.mark.parametrize("estimator", ALL_ESTIMATORS, ids=repr)
def test_all_nan_no_warning(estimator):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert np.isnan(estimator(np.full(7, np.nan)))
        out = estimator(np.full((3, 0), np.nan), axis=-1)
    assert out.shape == (3,)
    assert np.all(np.isnan(out))


@pytest.mark.parametrize("estimator", ALL_ESTIMATORS, ids=repr)
def test_pickle_repr_equality(estimator):
    clone = pickle.loads(pickle.dumps(estimator))
    assert clone == estimator
    assert hash(clone) == hash(estimator)
    rebuilt = eval(repr(estimator), vars(est))
    assert rebuilt == estimator
    assert type(rebuilt) is type(estimator)
    data = np.random.default_rng(0).normal(size=(5, 40))
    np.testing.assert_array_equal(rebuilt(data, axis=1), estimator(data, axis=1))


def test_params_distinguish():
    assert ModeEstimatorBackground() != ModeEstimatorBackground(median_factor=2.5)
    assert BiweightLocationBackground() != BiweightScaleBackgroundRMS(c=6.0)
    assert (
        repr(BiweightLocationBackground())
        == "BiweightLocationBackground(c=6.0, M=None)"
    )


def test_masked_array_input():
    data = np.ma.array([1.0, 2.0, 100.0, 3.0], mask=[0, 0, 1, 0])
    assert MedianBackground()(data) == 2.0


def test_registry_and_make_estimator():
    assert list(BKG_ESTIMATORS) == [
        "mean",
        "median",
        "mode",
        "sextractor",
        "biweight",
        "mmm",
    ]
    assert list(RMS_ESTIMATORS) == ["std", "mad_std", "biweight"]
    assert make_estimator("median") == MedianBackground()
    assert make_estimator("biweight", kind="rms", c=6.0) == BiweightScaleBackgroundRMS(
        c=6.0
    )
    assert make_estimator("mode", median_factor=2.5).median_factor == 2.5
    for name, cls in BKG_ESTIMATORS.items():
        assert cls.name == name
    for name, cls in RMS_ESTIMATORS.items():
        assert cls.name == name


def test_make_estimator_errors():
    with pytest.raises(ValueError, match="'std', 'mad_std', 'biweight'"):
        make_estimator("MAD", kind="rms")
    with pytest.raises(ValueError, match="bkg_estimator name '__import__'"):
        make_estimator("__import__")
    with pytest.raises(ValueError, match="kind must be 'bkg' or 'rms'"):
        make_estimator("median", kind="background")
    with pytest.raises(ValueError, match="invalid parameters"):
        make_estimator("median", c=3.0)
    with pytest.raises(ValueError, match="c must be a finite number > 0"):
        make_estimator("biweight", c=-1.0)


# --- sigma clipping --------------------------------------------------------

CLIPS = [
    {"sigma": 3.0, "maxiters": 10},
    {"sigma": 2.0, "maxiters": None},
    {"sigma": 2.5, "maxiters": 1},
    {"sigma": 2.5, "cenfunc": "mean", "stdfunc": "mad_std", "maxiters": 3},
    {"sigma_lower": 1.5, "sigma_upper": 2.5, "stdfunc": "mad_std"},
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kwargs", CLIPS, ids=str)
def test_sigma_clip_matches_astropy(kwargs, dtype):
    data = _boxes(dtype, np.random.default_rng(1))
    astro = AstropySigmaClip(**kwargs)
    ref, ref_lo, ref_hi = _quiet(astro, data, axis=-1, masked=False, return_bounds=True)
    ours = as_sigma_clip(astro)
    assert isinstance(ours, SigmaClip)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = ours(data, axis=-1)
        lo, hi = ours.bounds(data, axis=-1)
    assert got.dtype == data.dtype
    # identical NaN pattern: the same pixels are clipped
    np.testing.assert_array_equal(got, ref)
    np.testing.assert_allclose(lo, ref_lo, rtol=1e-12)
    np.testing.assert_allclose(hi, ref_hi, rtol=1e-12)


def test_sigma_clip_axes_and_infinite():
    rng = np.random.default_rng(2)
    data = rng.normal(size=(6, 50))
    data[0, 0] = 40.0
    data[1, 3] = np.inf
    clip = make_sigma_clip()
    rows = clip(data, axis=1)
    assert np.isnan(rows[0, 0]) and np.isnan(rows[1, 3])
    np.testing.assert_array_equal(clip(data.T, axis=0), rows.T)
    flat = clip(data, axis=None)
    assert flat.shape == data.shape
    np.testing.assert_array_equal(flat.ravel(), clip(data.ravel(), axis=0))


def test_sigma_clip_default_is_photutils_default():
    from photutils.background.core import SIGMA_CLIP

    default = make_sigma_clip()
    assert (SIGMA_CLIP.sigma, SIGMA_CLIP.maxiters) == (default.sigma, default.maxiters)
    assert as_sigma_clip(AstropySigmaClip(sigma=3, maxiters=10)) == default
    assert pickle.loads(pickle.dumps(default)) == default
    assert eval(repr(default), vars(est)) == default
    assert as_sigma_clip(None) is None


def test_sigma_clip_errors():
    with pytest.raises(ValueError, match="cenfunc"):
        SigmaClip(cenfunc="mode")
    with pytest.raises(ValueError, match="maxiters"):
        SigmaClip(maxiters=0)
    with pytest.raises(ValueError, match="sigma must be"):
        SigmaClip(sigma=-3)
    with pytest.raises(ValueError, match="grow"):
        as_sigma_clip(AstropySigmaClip(grow=2))
    with pytest.raises(ValueError, match="make_sigma_clip"):
        as_sigma_clip(3.0)


# -- the compiled clipping bounds against the whole-array numpy path -----------


@pytest.mark.parametrize("cenfunc", ["median", "mean"])
@pytest.mark.parametrize("stdfunc", ["std", "mad_std"])
@pytest.mark.parametrize("maxiters", [None, 1, 3, 10])
def test_clip_bounds_equal_the_numpy_path_bit_for_bit(cenfunc, stdfunc, maxiters):
    from _reference_kernels import sigma_clip_bounds_reference

    from tilesky.kernels._clip import clip_bounds

    rng = np.random.default_rng(7)
    for n in (1, 2, 5, 8, 9, 36, 100, 128, 129, 300, 900):
        rows = rng.normal(1.0, 0.1, (40, n))
        # Outliers, ties, non-finite values, and a row with none finite.
        rows[rng.random(rows.shape) < 0.1] += 5.0
        rows[::7] = np.round(rows[::7], 1)
        rows[rng.random(rows.shape) < 0.05] = np.nan
        rows[rng.random(rows.shape) < 0.02] = np.inf
        rows[3] = np.nan
        for data in (rows, rows.astype(np.float32)):
            for lo, hi in ((3.0, 3.0), (2.0, 4.0)):
                want = sigma_clip_bounds_reference(
                    data, lo, hi, maxiters, cenfunc, stdfunc
                )
                got = clip_bounds(
                    data,
                    lo,
                    hi,
                    -1 if maxiters is None else maxiters,
                    cenfunc == "median",
                    stdfunc == "std",
                    MAD_TO_SIGMA,
                )
                np.testing.assert_array_equal(got[0], want[0])
                np.testing.assert_array_equal(got[1], want[1])

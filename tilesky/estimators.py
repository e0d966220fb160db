"""Callable background and background-RMS estimators, and sigma clipping.

The estimators follow photutils' calling convention, ``estimator(data,
axis=None)``, on data in which masked or clipped pixels are NaN: NaN values are
ignored and an all-NaN slice gives NaN, without any warning. They reproduce
photutils' estimators applied with ``sigma_clip=None`` (same formulas, same
dtypes), are vectorised over the leading axes, keep no state beyond their
constructor arguments (thread-safe, picklable) and have a ``repr`` that
rebuilds them.

Sigma clipping is done once per mesh box, before both estimators, by a
`SigmaClip` that reproduces astropy's fast ``SigmaClip`` path (the one
photutils' ``Background2D`` uses) without its warnings or mutable state.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np

__all__ = [
    "BKG_ESTIMATORS",
    "RMS_ESTIMATORS",
    "BackgroundEstimator",
    "BackgroundRMSEstimator",
    "BiweightLocationBackground",
    "BiweightScaleBackgroundRMS",
    "MADStdBackgroundRMS",
    "MMMBackground",
    "MeanBackground",
    "MedianBackground",
    "ModeEstimatorBackground",
    "SExtractorBackground",
    "SigmaClip",
    "StdBackgroundRMS",
    "as_sigma_clip",
    "make_estimator",
    "make_sigma_clip",
]

#: 1 / Phi^-1(3/4): converts a median absolute deviation to a Gaussian sigma.
MAD_TO_SIGMA = 1.482602218505602


# ---------------------------------------------------------------------------
# NaN-ignoring row statistics on 2D (nrows, n) arrays; reductions always run
# over a C-contiguous last axis without dtype casting, so each row's result
# does not depend on which other rows share the array (tile invariance).


def _as_rows(data: Any, axis: int | tuple[int, ...] | None):
    """Return a C-contiguous float (nrows, n) view/copy and the output shape."""
    if isinstance(data, np.ma.MaskedArray):
        data = data.astype(np.result_type(data.dtype, np.float32)).filled(np.nan)
    data = np.asarray(data)
    if data.dtype.kind != "f":
        data = data.astype(np.float64)
    if axis is None:
        return np.ascontiguousarray(data.reshape(1, -1)), None
    order = _axis_order(axis, data.ndim)
    keep = order[: data.ndim - len(_axes(axis))]
    moved = np.transpose(data, order)
    out_shape = moved.shape[: len(keep)]
    n = math.prod(moved.shape[len(keep) :])
    return np.ascontiguousarray(moved.reshape(math.prod(out_shape), n)), out_shape


def _axes(axis: int | tuple[int, ...]) -> tuple[int, ...]:
    return (int(axis),) if np.ndim(axis) == 0 else tuple(int(a) for a in axis)


def _axis_order(axis: int | tuple[int, ...], ndim: int) -> tuple[int, ...]:
    """Axis permutation that moves the reduced ``axis`` to the end."""
    axes = []
    for a in _axes(axis):
        if not -ndim <= a < ndim:
            msg = f"axis {a} is out of bounds for an array of dimension {ndim}"
            raise ValueError(msg)
        axes.append(a % ndim)
    if len(set(axes)) != len(axes):
        msg = f"axis {axis!r} repeats an axis; pass each axis once"
        raise ValueError(msg)
    keep = tuple(a for a in range(ndim) if a not in axes)
    return keep + tuple(axes)


def _finish(values: np.ndarray, out_shape: tuple[int, ...] | None):
    if out_shape is None:
        return values[0]
    return values.reshape(out_shape)


def _nan_count(rows: np.ndarray) -> np.ndarray:
    return np.count_nonzero(~np.isnan(rows), axis=-1)


def _nanmean(rows: np.ndarray, count: np.ndarray) -> np.ndarray:
    # Same arithmetic as numpy.nanmean: sum in the data dtype, then divide by
    # the integer count in float64 and cast back.
    total = np.where(np.isnan(rows), 0, rows).sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (total / count).astype(rows.dtype, copy=False)


def _nanstd(rows: np.ndarray, count: np.ndarray, mean: np.ndarray) -> np.ndarray:
    dev = np.where(np.isnan(rows), 0, rows - mean[:, None])
    sq = (dev * dev).sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        var = (sq / count).astype(rows.dtype, copy=False)
    return np.sqrt(var)


def _nanmedian(rows: np.ndarray, count: np.ndarray) -> np.ndarray:
    ordered = np.sort(rows, axis=-1)  # NaN sorts last
    if ordered.shape[-1] == 0:
        return np.full(ordered.shape[0], np.nan, dtype=rows.dtype)
    low = np.maximum((count - 1) // 2, 0)
    high = np.maximum(count // 2, 0)
    a = np.take_along_axis(ordered, low[:, None], axis=-1)[:, 0]
    b = np.take_along_axis(ordered, high[:, None], axis=-1)[:, 0]
    with np.errstate(over="ignore", invalid="ignore"):
        med = np.where(low == high, a, (a + b) / 2)
    med[count == 0] = np.nan
    return med


def _nanmad(rows: np.ndarray, count: np.ndarray, median: np.ndarray) -> np.ndarray:
    return _nanmedian(np.abs(rows - median[:, None]), count)


# ---------------------------------------------------------------------------
# Estimators


class _Estimator:
    """Shared machinery: parameters, call convention, repr, equality."""

    name: ClassVar[str] = ""
    _param_names: ClassVar[tuple[str, ...]] = ()

    def __call__(self, data: Any, axis: int | tuple[int, ...] | None = None) -> Any:
        rows, out_shape = _as_rows(data, axis)
        return _finish(self._rows(rows), out_shape)

    def _rows(self, rows: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    @property
    def params(self) -> dict[str, Any]:
        """Constructor arguments, as a dict (for configuration records)."""
        return {p: getattr(self, p) for p in self._param_names}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"{type(self).__name__}({args})"

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self.params == other.params

    def __hash__(self) -> int:
        return hash((type(self).__name__, *self.params.items()))


class BackgroundEstimator(_Estimator):
    """Base class of the background (location) estimators."""


class BackgroundRMSEstimator(_Estimator):
    """Base class of the background RMS (scale) estimators."""


def _finite_float(name: str, value: Any, *, positive: bool = False) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        out = math.nan
    if not math.isfinite(out) or (positive and out <= 0):
        need = "a finite number > 0" if positive else "a finite number"
        msg = f"{name} must be {need}, got {value!r}; pass e.g. {name}=6.0"
        raise ValueError(msg)
    return out


def _optional_float(name: str, value: Any) -> float | None:
    return None if value is None else _finite_float(name, value)


class MeanBackground(BackgroundEstimator):
    """Background as the NaN-ignoring mean.

    Examples
    --------
    >>> import numpy as np
    >>> MeanBackground()(np.array([[1.0, 2.0, np.nan], [np.nan] * 3]), axis=1)
    array([1.5, nan])
    """

    name = "mean"

    def _rows(self, rows: np.ndarray) -> np.ndarray:
        return _nanmean(rows, _nan_count(rows))


class MedianBackground(BackgroundEstimator):
    """Background as the NaN-ignoring median.

    Examples
    --------
    >>> import numpy as np
    >>> float(MedianBackground()(np.array([1.0, 5.0, np.nan, 2.0])))
    2.0
    """

    name = "median"

    def _rows(self, rows: np.ndarray) -> np.ndarray:
        return _nanmedian(rows, _nan_count(rows))


class ModeEstimatorBackground(BackgroundEstimator):
    """Background as ``median_factor * median - mean_factor * mean``.

    Parameters
    ----------
    median_factor, mean_factor : float, optional
        The multiplicative factors (photutils' defaults 3 and 2).

    Examples
    --------
    >>> import numpy as np
    >>> est = ModeEstimatorBackground(median_factor=2.5, mean_factor=1.5)
    >>> float(est(np.array([1.0, 2.0, 6.0])))
    0.5
    """

    name = "mode"
    _param_names = ("median_factor", "mean_factor")

    def __init__(self, median_factor: float = 3.0, mean_factor: float = 2.0) -> None:
        self.median_factor = _finite_float("median_factor", median_factor)
        self.mean_factor = _finite_float("mean_factor", mean_factor)

    def _rows(self, rows: np.ndarray) -> np.ndarray:
        count = _nan_count(rows)
        median = _nanmedian(rows, count)
        mean = _nanmean(rows, count)
        return self.median_factor * median - self.mean_factor * mean


class MMMBackground(ModeEstimatorBackground):
    """DAOPHOT MMM background, ``3 * median - 2 * mean``.

    Examples
    --------
    >>> import numpy as np
    >>> float(MMMBackground()(np.array([1.0, 2.0, 6.0])))
    0.0
    """

    name = "mmm"
    _param_names = ()

    def __init__(self) -> None:
        super().__init__(median_factor=3.0, mean_factor=2.0)


class SExtractorBackground(BackgroundEstimator):
    """SourceExtractor background, photutils' rule.

    ``2.5 * median - 1.5 * mean``, except the mean where the (population)
    standard deviation is 0 and the median where
    ``|mean - median| / std >= 0.3``.

    Examples
    --------
    >>> import numpy as np
    >>> est = SExtractorBackground()
    >>> round(float(est(np.array([1.0, 2.0, 2.0, 3.0, 2.5]))), 6)
    1.85
    >>> float(est(np.array([1.0, 2.0, 2.0, 3.0, 9.0])))  # skewed: the median
    2.0
    """

    name = "sextractor"

    def _rows(self, rows: np.ndarray) -> np.ndarray:
        count = _nan_count(rows)
        median = _nanmedian(rows, count)
        mean = _nanmean(rows, count)
        std = _nanstd(rows, count, mean)
        result = 2.5 * median - 1.5 * mean
        flat = std == 0
        with np.errstate(invalid="ignore", divide="ignore"):
            skewed = (np.abs(mean - median) / std >= 0.3) & ~flat
        result[flat] = mean[flat]
        result[skewed] = median[skewed]
        return result


def _biweight_terms(rows: np.ndarray, c: float, M: float | None):
    """What both biweight statistics start from, per row (NaN ignored):
    count, location (median or ``M``), deviations from it, MAD and
    ``u = deviation / (c * MAD)``."""
    x = rows.astype(np.float64)
    count = _nan_count(x)
    median = _nanmedian(x, count)
    loc = median if M is None else np.full_like(median, M)
    dev = x - loc[:, None]
    mad = _nanmad(x, count, median)
    with np.errstate(invalid="ignore", divide="ignore"):
        u = dev / (c * mad[:, None])
    return count, loc, dev, mad, u


class BiweightLocationBackground(BackgroundEstimator):
    """Background as the biweight location (computed in float64).

    Parameters
    ----------
    c : float, optional
        Tuning constant (default 6).
    M : float or None, optional
        Initial location guess; the median when None.

    Examples
    --------
    >>> import numpy as np
    >>> float(BiweightLocationBackground()(np.array([1.0, 2.0, 3.0])))
    2.0
    """

    name = "biweight"
    _param_names = ("c", "M")

    def __init__(self, c: float = 6.0, M: float | None = None) -> None:
        self.c = _finite_float("c", c, positive=True)
        self.M = _optional_float("M", M)

    def _rows(self, rows: np.ndarray) -> np.ndarray:
        _, loc, dev, mad, u = _biweight_terms(rows, self.c, self.M)
        with np.errstate(invalid="ignore", divide="ignore"):
            weight = (1.0 - u * u) ** 2
            weight[np.abs(u) >= 1] = 0.0
            num = np.where(np.isnan(weight), 0.0, dev * weight).sum(axis=-1)
            den = np.where(np.isnan(weight), 0.0, weight).sum(axis=-1)
            value = loc + num / den
        return np.where(mad == 0, loc, value)


class StdBackgroundRMS(BackgroundRMSEstimator):
    """Background RMS as the NaN-ignoring (population) standard deviation.

    Examples
    --------
    >>> import numpy as np
    >>> float(StdBackgroundRMS()(np.array([1.0, 3.0, np.nan])))
    1.0
    """

    name = "std"

    def _rows(self, rows: np.ndarray) -> np.ndarray:
        count = _nan_count(rows)
        return _nanstd(rows, count, _nanmean(rows, count))


class MADStdBackgroundRMS(BackgroundRMSEstimator):
    """Background RMS as 1.4826 times the median absolute deviation.

    Examples
    --------
    >>> import numpy as np
    >>> round(float(MADStdBackgroundRMS()(np.array([1.0, 2.0, 4.0]))), 4)
    1.4826
    """

    name = "mad_std"

    def _rows(self, rows: np.ndarray) -> np.ndarray:
        count = _nan_count(rows)
        return _nanmad(rows, count, _nanmedian(rows, count)) * MAD_TO_SIGMA


class BiweightScaleBackgroundRMS(BackgroundRMSEstimator):
    """Background RMS as the biweight scale (computed in float64).

    The sample size is the number of non-NaN values (astropy's
    ``modify_sample_size=False``).

    Parameters
    ----------
    c : float, optional
        Tuning constant (default 9).
    M : float or None, optional
        Location; the median when None.

    Examples
    --------
    >>> import numpy as np
    >>> round(float(BiweightScaleBackgroundRMS()(np.array([1.0, 2.0, 3.0]))), 4)
    0.8374
    """

    name = "biweight"
    _param_names = ("c", "M")

    def __init__(self, c: float = 9.0, M: float | None = None) -> None:
        self.c = _finite_float("c", c, positive=True)
        self.M = _optional_float("M", M)

    def _rows(self, rows: np.ndarray) -> np.ndarray:
        count, _, dev, mad, u = _biweight_terms(rows, self.c, self.M)
        with np.errstate(invalid="ignore", divide="ignore"):
            inside = np.abs(u) < 1  # NaN compares False
            u2 = u * u
            f1 = np.where(inside, dev * dev * (1.0 - u2) ** 4, 0.0).sum(axis=-1)
            f2 = np.where(inside, (1.0 - u2) * (1.0 - 5.0 * u2), 0.0).sum(axis=-1)
            var = count * f1 / (f2 * f2)
        return np.sqrt(np.where(mad == 0, 0.0, var))


BKG_ESTIMATORS: dict[str, type[BackgroundEstimator]] = {
    "mean": MeanBackground,
    "median": MedianBackground,
    "mode": ModeEstimatorBackground,
    "sextractor": SExtractorBackground,
    "biweight": BiweightLocationBackground,
    "mmm": MMMBackground,
}
RMS_ESTIMATORS: dict[str, type[BackgroundRMSEstimator]] = {
    "std": StdBackgroundRMS,
    "mad_std": MADStdBackgroundRMS,
    "biweight": BiweightScaleBackgroundRMS,
}


def make_estimator(name: str, kind: str = "bkg", **params: Any) -> _Estimator:
    """Build an estimator from its registry name.

    Parameters
    ----------
    name : str
        A key of `BKG_ESTIMATORS` (``kind="bkg"``) or `RMS_ESTIMATORS`
        (``kind="rms"``).
    kind : {"bkg", "rms"}, optional
        Which registry to look ``name`` up in.
    **params
        Constructor arguments (e.g. ``c=6.0`` for "biweight").

    Returns
    -------
    estimator : BackgroundEstimator or BackgroundRMSEstimator

    Examples
    --------
    >>> make_estimator("biweight", kind="rms", c=6.0)
    BiweightScaleBackgroundRMS(c=6.0, M=None)
    """
    registries = {"bkg": BKG_ESTIMATORS, "rms": RMS_ESTIMATORS}
    if kind not in registries:
        msg = f"kind must be 'bkg' or 'rms', got {kind!r}"
        raise ValueError(msg)
    registry = registries[kind]
    if name not in registry:
        param = "bkg_estimator" if kind == "bkg" else "bkg_rms_estimator"
        msg = (
            f"unknown {param} name {name!r}; valid names are "
            f"{', '.join(repr(k) for k in registry)}"
        )
        raise ValueError(msg)
    try:
        return registry[name](**params)
    except TypeError as exc:
        msg = f"invalid parameters {params!r} for {kind} estimator {name!r}: {exc}"
        raise ValueError(msg) from exc


# ---------------------------------------------------------------------------
# Sigma clipping


class SigmaClip:
    """Iterative sigma clipping along an axis, NaN in for NaN out.

    Reproduces astropy's ``SigmaClip(...)(data, axis=..., masked=False)`` fast
    path (the one photutils' ``Background2D`` runs per box): statistics in
    float64; each iteration computes the centre (median or mean) and the
    spread (population std or MAD-std) of the values still kept, keeps those
    within ``[centre - sigma_lower * std, centre + sigma_upper * std]``, and
    stops when nothing changes, nothing is left or after ``maxiters``
    iterations; the last bounds are then applied to the input (non-finite
    values are always dropped). The output keeps the input shape (also for
    ``axis=None``) and never warns.

    Parameters
    ----------
    sigma : float, optional
        Clipping threshold in standard deviations.
    sigma_lower, sigma_upper : float or None, optional
        Separate lower / upper thresholds; ``sigma`` when None.
    maxiters : int or None, optional
        Maximum number of iterations; None iterates to convergence.
    cenfunc : {"median", "mean"}, optional
    stdfunc : {"std", "mad_std"}, optional

    Examples
    --------
    >>> import numpy as np
    >>> x = np.array([[1.0, 2.0, 3.0, 2.0, 1.0, 2.0, 3.0, 2.0, 100.0]])
    >>> SigmaClip(sigma=2.0)(x, axis=-1)[0, -1]
    np.float64(nan)
    """

    def __init__(
        self,
        sigma: float = 3.0,
        *,
        sigma_lower: float | None = None,
        sigma_upper: float | None = None,
        maxiters: int | None = 10,
        cenfunc: str = "median",
        stdfunc: str = "std",
    ) -> None:
        self.sigma = _finite_float("sigma", sigma, positive=True)
        self.sigma_lower = _optional_float("sigma_lower", sigma_lower)
        self.sigma_upper = _optional_float("sigma_upper", sigma_upper)
        if maxiters is not None and (
            isinstance(maxiters, bool) or int(maxiters) != maxiters or maxiters < 1
        ):
            msg = f"maxiters must be an integer >= 1 or None, got {maxiters!r}"
            raise ValueError(msg)
        self.maxiters = None if maxiters is None else int(maxiters)
        if cenfunc not in ("median", "mean"):
            msg = f"cenfunc must be 'median' or 'mean', got {cenfunc!r}"
            raise ValueError(msg)
        if stdfunc not in ("std", "mad_std"):
            msg = f"stdfunc must be 'std' or 'mad_std', got {stdfunc!r}"
            raise ValueError(msg)
        self.cenfunc = cenfunc
        self.stdfunc = stdfunc

    _param_names = (
        "sigma",
        "sigma_lower",
        "sigma_upper",
        "maxiters",
        "cenfunc",
        "stdfunc",
    )

    @property
    def params(self) -> dict[str, Any]:
        """Constructor arguments, as a dict."""
        return {p: getattr(self, p) for p in self._param_names}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"SigmaClip({args})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SigmaClip) and self.params == other.params

    def __hash__(self) -> int:
        return hash(("SigmaClip", *self.params.items()))

    def __call__(self, data: Any, axis: int | tuple[int, ...] | None = -1) -> Any:
        """Return a float copy of ``data`` with clipped values set to NaN."""
        data = np.asarray(data)
        if data.dtype.kind != "f":
            data = data.astype(np.float64)
        rows, _ = _as_rows(data, axis)
        lower, upper = self._row_bounds(rows)
        with np.errstate(invalid="ignore"):
            keep = (rows >= lower[:, None]) & (rows <= upper[:, None])
        clipped = np.where(keep, rows, np.nan)
        if axis is None:
            return clipped.reshape(data.shape)
        order = _axis_order(axis, data.ndim)
        moved_shape = tuple(data.shape[a] for a in order)
        return np.transpose(clipped.reshape(moved_shape), np.argsort(order))

    def bounds(
        self, data: Any, axis: int | tuple[int, ...] | None = -1
    ) -> tuple[Any, Any]:
        """Return the final (lower, upper) clipping bounds along ``axis``."""
        rows, out_shape = _as_rows(data, axis)
        lower, upper = self._row_bounds(rows)
        return _finish(lower, out_shape), _finish(upper, out_shape)

    def _row_bounds(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        # Clipping only ever removes values from the low and high ends, so on
        # each sorted row the kept values are a window [lo, hi) that shrinks.
        s = np.sort(np.where(np.isfinite(rows), rows, np.nan).astype(np.float64), -1)
        nrows, n = s.shape
        lo = np.zeros(nrows, dtype=np.intp)
        hi = _nan_count(s).astype(np.intp)
        lower = np.full(nrows, np.nan)
        upper = np.full(nrows, np.nan)
        sig_lo = self.sigma if self.sigma_lower is None else self.sigma_lower
        sig_hi = self.sigma if self.sigma_upper is None else self.sigma_upper
        idx = np.arange(n)
        active = np.flatnonzero(hi > 0)
        iteration = 0
        while active.size:
            sub, start, stop = s[active], lo[active], hi[active]
            count = stop - start
            inside = (idx >= start[:, None]) & (idx < stop[:, None])
            if self.cenfunc == "median" or self.stdfunc == "mad_std":
                median = _window_median(sub, start, count)
            if self.cenfunc == "mean" or self.stdfunc == "std":
                mean = np.where(inside, sub, 0.0).sum(axis=-1) / count
            centre = median if self.cenfunc == "median" else mean
            if self.stdfunc == "std":
                dev = np.where(inside, sub - mean[:, None], 0.0)
                std = np.sqrt((dev * dev).sum(axis=-1) / count)
            else:
                absdev = np.where(inside, np.abs(sub - median[:, None]), np.inf)
                absdev.sort(axis=-1)
                std = _window_median(absdev, np.zeros_like(start), count) * MAD_TO_SIGMA
            b_lo = centre - sig_lo * std
            b_hi = centre + sig_hi * std
            lower[active], upper[active] = b_lo, b_hi
            below = np.count_nonzero(sub < b_lo[:, None], axis=-1)
            not_above = np.count_nonzero(sub <= b_hi[:, None], axis=-1)
            new_start = np.maximum(start, below)
            new_stop = np.minimum(stop, not_above)
            new_count = np.maximum(new_stop - new_start, 0)
            lo[active], hi[active] = new_start, new_stop
            iteration += 1
            if self.maxiters is not None and iteration >= self.maxiters:
                break
            active = active[(new_count != count) & (new_count != 0)]
        return lower, upper


def _window_median(s: np.ndarray, start: np.ndarray, count: np.ndarray) -> np.ndarray:
    """Median of the sorted windows ``s[i, start[i]:start[i] + count[i]]``."""
    a = np.take_along_axis(s, (start + (count - 1) // 2)[:, None], axis=-1)[:, 0]
    b = np.take_along_axis(s, (start + count // 2)[:, None], axis=-1)[:, 0]
    return np.where(count % 2 == 1, a, 0.5 * (a + b))


def make_sigma_clip(sigma: float = 3.0, maxiters: int | None = 10) -> SigmaClip:
    """Return the sigma clipping photutils' ``Background2D`` uses by default.

    Parameters
    ----------
    sigma : float, optional
        Clipping threshold in standard deviations (photutils: 3).
    maxiters : int or None, optional
        Maximum number of iterations (photutils: 10).

    Returns
    -------
    SigmaClip
        Median-centred, standard-deviation-scaled clipping.

    Examples
    --------
    >>> make_sigma_clip()
    SigmaClip(sigma=3.0, sigma_lower=None, sigma_upper=None, maxiters=10, \
cenfunc='median', stdfunc='std')
    """
    return SigmaClip(sigma=sigma, maxiters=maxiters)


def as_sigma_clip(sigma_clip: Any) -> Callable[..., np.ndarray] | None:
    """Normalise a ``sigma_clip`` argument.

    None and `SigmaClip` pass through; an ``astropy.stats.SigmaClip`` with
    string ``cenfunc``/``stdfunc`` and no ``grow`` becomes the equivalent
    `SigmaClip`; any other callable is returned unchanged and must accept
    ``(data, axis=-1)`` and return a same-shape float array with NaN for
    clipped values.

    Examples
    --------
    >>> from astropy.stats import SigmaClip as AstropySigmaClip
    >>> as_sigma_clip(AstropySigmaClip(sigma=2.5, maxiters=5)).sigma
    2.5
    """
    if sigma_clip is None or isinstance(sigma_clip, SigmaClip):
        return sigma_clip
    from astropy.stats import SigmaClip as AstropySigmaClip

    if isinstance(sigma_clip, AstropySigmaClip):
        if (
            sigma_clip.cenfunc in ("median", "mean")
            and sigma_clip.stdfunc in ("std", "mad_std")
            and not sigma_clip.grow
        ):
            maxiters = sigma_clip.maxiters
            if maxiters is None or (
                isinstance(maxiters, float) and math.isinf(maxiters)
            ):
                maxiters = None
            # astropy stores sigma_lower/upper = sigma when not given
            sigma = sigma_clip.sigma
            lower, upper = sigma_clip.sigma_lower, sigma_clip.sigma_upper
            return SigmaClip(
                sigma=sigma,
                sigma_lower=None if lower == sigma else lower,
                sigma_upper=None if upper == sigma else upper,
                maxiters=maxiters,
                cenfunc=sigma_clip.cenfunc,
                stdfunc=sigma_clip.stdfunc,
            )
        msg = (
            f"sigma_clip={sigma_clip!r} uses custom cenfunc/stdfunc or grow, "
            "which tilesky cannot reproduce; use tilesky.estimators.SigmaClip "
            "(cenfunc 'median'/'mean', stdfunc 'std'/'mad_std')"
        )
        raise ValueError(msg)
    if callable(sigma_clip):
        return sigma_clip
    msg = (
        f"sigma_clip must be None, a SigmaClip or a callable, got {sigma_clip!r}; "
        "use tilesky.estimators.make_sigma_clip(sigma=3.0)"
    )
    raise ValueError(msg)

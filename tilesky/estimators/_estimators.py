"""The background (location) and background-RMS (scale) estimators, by name."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from tilesky.estimators._rows import (
    MAD_TO_SIGMA,
    _as_rows,
    _finish,
    _finite_float,
    _nan_count,
    _nanmad,
    _nanmean,
    _nanmedian,
    _nanstd,
    _optional_float,
)


class _Estimator:
    """Shared machinery: parameters, call convention, repr, equality."""

    name: ClassVar[str] = ""
    _param_names: ClassVar[tuple[str, ...]] = ()

    def __call__(self, data: Any, axis: int | tuple[int, ...] | None = None) -> Any:
        """The statistic of ``data`` along ``axis``, NaN values ignored.

        Parameters
        ----------
        data : array_like
            The values; masked entries of a masked array count as NaN.
        axis : int or tuple of int, optional
            The axes to reduce; None: all of them.

        Returns
        -------
        numpy.ndarray or numpy scalar
            One value per remaining index (a scalar for ``axis=None``), of
            the data's float dtype; NaN where every value is NaN.
        """
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
        A new estimator of that name with those parameters.

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

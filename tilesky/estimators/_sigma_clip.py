"""Sigma clipping: astropy's fast path, without its warnings or mutable state."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from tilesky.estimators._rows import (
    MAD_TO_SIGMA,
    _as_rows,
    _axis_order,
    _finish,
    _finite_float,
    _optional_float,
)
from tilesky.kernels._clip import clip_bounds


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
        """Return a float copy of ``data`` with clipped values set to NaN.

        Parameters
        ----------
        data : array_like
            The values.
        axis : int or tuple of int or None, optional
            The axes clipped together (statistics per remaining index);
            None: all of them.

        Returns
        -------
        numpy.ndarray
            ``data``'s shape; clipped and non-finite values are NaN.
        """
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
        """Return the final (lower, upper) clipping bounds along ``axis``.

        Parameters
        ----------
        data : array_like
            The values.
        axis : int or tuple of int or None, optional
            As in ``__call__``.

        Returns
        -------
        lower, upper : numpy.ndarray or float
            The bounds of the last iteration, one per remaining index (NaN
            where no value is finite).
        """
        rows, out_shape = _as_rows(data, axis)
        lower, upper = self._row_bounds(rows)
        return _finish(lower, out_shape), _finish(upper, out_shape)

    def _walk_params(self) -> tuple[float, float, int, bool, bool, float]:
        """The arguments of ``kernels._clip.clip_bounds`` after ``rows``."""
        sig_lo = self.sigma if self.sigma_lower is None else self.sigma_lower
        sig_hi = self.sigma if self.sigma_upper is None else self.sigma_upper
        return (
            float(sig_lo),
            float(sig_hi),
            -1 if self.maxiters is None else self.maxiters,
            self.cenfunc == "median",
            self.stdfunc == "std",
            MAD_TO_SIGMA,
        )

    def _row_bounds(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        # Clipping only ever removes values from the low and high ends, so on
        # each sorted row the kept values are a window that shrinks: the
        # compiled kernel walks it row by row with numpy's arithmetic.
        rows = np.ascontiguousarray(rows)
        if rows.dtype not in (np.float32, np.float64):
            rows = rows.astype(np.float64)
        return clip_bounds(rows, *self._walk_params())


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

    Parameters
    ----------
    sigma_clip : SigmaClip, astropy.stats.SigmaClip, callable or None
        What the caller passed.

    Returns
    -------
    callable or None
        The clipping to apply per box; None: no clipping.

    Raises
    ------
    ValueError
        An astropy ``SigmaClip`` tilesky cannot reproduce, or not a callable.

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

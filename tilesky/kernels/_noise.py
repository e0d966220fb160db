"""Exact, mergeable sums for global noise levels.

A global noise level (the standard deviation of a residual, optionally
sigma-clipped) is a reduction over the whole image. Floating-point sums
depend on the order of addition, so a reduction tree that follows the
chunking would give slightly different thresholds for different chunkings,
and a mask pixel sitting on the threshold could flip. tilesky's sums are
exact instead: each float64 value is split into an integer mantissa and a
power of two, mantissas are accumulated per exponent with integer-valued
float64 bincounts (exact below 2**26 values per tile), and the per-tile state
is one Python integer, the sum in units of ``2**-UNIT_EXP``. Merging states
is integer addition, so the final mean and standard deviation are the same
bits for any chunking or reduction order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

__all__ = ["MomentState", "clip_bounds", "moment_state", "moments"]

#: Sum unit exponent: values are summed as integers times 2**-UNIT_EXP.
UNIT_EXP = 1160
_HALF = 1 << 26


def _exact_sum(values: np.ndarray) -> int:
    """Exact sum of float64 ``values`` as an integer in units of 2**-UNIT_EXP."""
    values = np.asarray(values, dtype=np.float64).ravel()
    values = values[values != 0.0]
    if values.size == 0:
        return 0
    if values.size >= 1 << 26:
        half = values.size // 2
        return _exact_sum(values[:half]) + _exact_sum(values[half:])
    mant, expo = np.frexp(values)
    # mant * 2**53 is an exact integer below 2**53 in magnitude: split it in
    # two 26/27-bit halves so bincount's float64 accumulators stay exact.
    m = (mant * 2.0**53).astype(np.int64)
    hi = m >> 26
    lo = m - (hi << 26)
    emin = int(expo.min())
    idx = (expo - emin).astype(np.intp)
    s_hi = np.bincount(idx, weights=hi.astype(np.float64))
    s_lo = np.bincount(idx, weights=lo.astype(np.float64))
    total = 0
    for k in np.flatnonzero((s_hi != 0) | (s_lo != 0)):
        e = emin + int(k) - 53 + UNIT_EXP
        ints = int(s_hi[k]) * _HALF + int(s_lo[k])
        # frexp exponents are >= -1073, so e >= 34: the shift is exact.
        total += ints << e
    return total


@dataclass(frozen=True)
class MomentState:
    """Mergeable exact state: count, sum and sum of squares."""

    count: int = 0
    sum: int = 0
    sumsq: int = 0

    def __add__(self, other: MomentState) -> MomentState:
        return MomentState(
            self.count + other.count, self.sum + other.sum, self.sumsq + other.sumsq
        )


def moment_state(
    values: np.ndarray,
    *,
    lower: float = -math.inf,
    upper: float = math.inf,
    mask: np.ndarray | None = None,
) -> MomentState:
    """The state of the finite ``values`` within ``[lower, upper]``.

    ``mask`` (True = leave out) excludes further pixels.
    """
    v = np.asarray(values, dtype=np.float64)
    keep = np.isfinite(v) & (v >= lower) & (v <= upper)
    if mask is not None:
        keep &= ~np.asarray(mask, dtype=bool)
    v = v[keep]
    return MomentState(int(v.size), _exact_sum(v), _exact_sum(v * v))


def moments(state: MomentState) -> tuple[int, float, float]:
    """``(count, mean, std)`` of a state, each correctly rounded from exact sums.

    The standard deviation is the population one (``ddof=0``), as numpy's and
    astropy's sigma clipping use. An empty state gives NaNs.
    """
    n = state.count
    if n == 0:
        return 0, math.nan, math.nan
    unit = Fraction(1, 1 << UNIT_EXP)
    s1 = Fraction(state.sum) * unit
    s2 = Fraction(state.sumsq) * unit
    mean = s1 / n
    var = s2 / n - mean * mean
    var = max(var, Fraction(0))
    return n, float(mean), math.sqrt(float(var))


def clip_bounds(mean: float, std: float, sigma: float) -> tuple[float, float]:
    """The interval kept by one sigma-clipping iteration about the mean."""
    return mean - sigma * std, mean + sigma * std

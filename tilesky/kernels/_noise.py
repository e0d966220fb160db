"""Exact, mergeable sums for global noise levels.

A global noise level (the standard deviation of a residual, optionally
sigma-clipped) is a reduction over the whole image. Floating-point sums
depend on the order of addition, so a reduction tree that follows the
chunking would give slightly different thresholds for different chunkings,
and a mask pixel sitting on the threshold could flip. tilesky's sums are
exact instead: each float64 value is split (:func:`split_digits`) into three
base-2**26 integer digits at a global digit position, digits are added as
int64 per position in one compiled pass, and the per-tile state is one
Python integer, the sum in units of ``2**-UNIT_EXP``. Merging states is
integer addition, so the final mean and standard deviation are the same bits
for any chunking or reduction order. ``tilesky.metrics`` uses the same
digits for its keyed block sums.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

import numba
import numpy as np

__all__ = [
    "LIMB",
    "N_POS",
    "OFFSET",
    "MomentState",
    "clip_bounds",
    "moment_state",
    "moments",
    "split_digits",
]

#: Sum unit exponent: values are summed as integers times 2**-UNIT_EXP.
UNIT_EXP = 1160
_HALF = 1 << 26
#: Digit width in bits.
LIMB = 26
LIMB_MASK = (1 << LIMB) - 1
#: frexp exponents are >= -1073, so digit positions e - 53 + OFFSET are >= 0.
OFFSET = 1126
#: Digit positions of any float64 (q <= 80) and the two above.
N_POS = 84


@numba.njit(cache=True, nogil=True)
def split_digits(v):
    """Digits ``(q, d0, d1, d2)``: ``v = (d0 + d1 B + d2 B**2) * B**q * 2**-OFFSET``.

    ``B = 2**LIMB``; ``d0`` and ``d1`` are in ``[0, 2**27)``, ``d2`` is signed
    below ``2**26`` in magnitude; ``q = -1`` for zero and non-finite values.
    """
    if v == 0.0 or not math.isfinite(v):
        return -1, 0, 0, 0
    mant, e = math.frexp(v)
    m = np.int64(mant * 9007199254740992.0)
    pos = e + (OFFSET - 53)
    q = pos // LIMB
    scale = np.int64(1) << (pos - q * LIMB)
    lo = (m & LIMB_MASK) * scale
    hi = (m >> LIMB) * scale
    return q, lo & LIMB_MASK, (lo >> LIMB) + (hi & LIMB_MASK), hi >> LIMB


@numba.njit(cache=True, nogil=True)
def _moment_digits(values, lower, upper, drop, use_drop):
    """Count and per-position digit totals of kept values and their squares."""
    acc = np.zeros((2, N_POS), np.int64)
    count = 0
    n = values.shape[0]
    for i in range(n):
        v = values[i]
        if not (math.isfinite(v) and v >= lower and v <= upper):
            continue
        if use_drop and drop[i]:
            continue
        count += 1
        for k in range(2):
            w = v if k == 0 else v * v
            q, d0, d1, d2 = split_digits(w)
            if q >= 0:
                acc[k, q] += d0
                acc[k, q + 1] += d1
                acc[k, q + 2] += d2
    return count, acc


def digits_to_units(acc_row: np.ndarray) -> int:
    """Per-position digit totals as one integer in units of 2**-UNIT_EXP."""
    return sum(
        int(a) << (LIMB * k - OFFSET + UNIT_EXP)
        for k, a in enumerate(acc_row.tolist())
        if a
    )


def _exact_sum(values: np.ndarray) -> int:
    """Exact sum of float64 ``values`` as an integer in units of 2**-UNIT_EXP.

    The plain numpy reference (frexp and bincount) for the compiled
    :func:`moment_state`.
    """
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

    ``mask`` (True = leave out) excludes further pixels. One compiled pass;
    equal, integer for integer, to :func:`_exact_sum` of the kept values.
    """
    v = np.ascontiguousarray(values, dtype=np.float64).ravel()
    if mask is None:
        drop, use_drop = np.zeros(1, dtype=np.bool_), False
    else:
        drop = np.ascontiguousarray(mask, dtype=np.bool_).ravel()
        use_drop = True
    count, acc = _moment_digits(v, float(lower), float(upper), drop, use_drop)
    return MomentState(int(count), digits_to_units(acc[0]), digits_to_units(acc[1]))


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

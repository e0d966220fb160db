"""Exact, mergeable sums for global noise levels.

A global noise level (the standard deviation of a residual, optionally
sigma-clipped) is a reduction over the whole image. Floating-point sums
depend on the order of addition, so a reduction tree that follows the
chunking would give slightly different thresholds for different chunkings,
and a mask pixel sitting on the threshold could flip. tilesky's sums are
exact instead, and the per-tile state is Python integers: the count, the
sum and the sum of squares in units of ``2**-UNIT_EXP``. Merging states is
integer addition, so the final mean and standard deviation are the same bits
for any chunking or reduction order.

:func:`moment_state` reads each value's bit pattern, ``v = ±M * 2**E`` with
an integer significand ``M``, and adds ``M`` (and the significand of
``v * v``) into int64 bins, one per sign and exponent, in one compiled pass
over the block in its own dtype and layout; the few used bins become the
integers at the end. :func:`split_digits` splits a value into three
base-2**26 digits at a global digit position instead; ``tilesky.metrics``
sums those for its keyed block sums, and the test oracle
``moment_state_reference`` (``tests/_reference_kernels.py``) sums them for
:func:`moment_state`, which it matches integer for integer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

import numba
import numpy as np
from llvmlite import ir
from numba.core import types
from numba.extending import intrinsic

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


@intrinsic
def _bits(typingctx, x):
    """The IEEE bit pattern of a float32 (as int32) or float64 (as int64)."""
    if isinstance(x, types.Float) and x.bitwidth in (32, 64):
        width = x.bitwidth

        def codegen(context, builder, signature, args):
            return builder.bitcast(args[0], ir.IntType(width))

        return getattr(types, f"int{width}")(x), codegen
    return None


# A finite value is v = M * 2**E with M = significand (implicit bit set unless
# subnormal) and E = max(field, 1) - BIAS, field the biased exponent bits.
# Bins are indexed by the sign and exponent bits together, so every bin sums
# non-negative significands of one sign and one E; the signs are applied when
# the bins become integers.
_F32_BIAS = 150
_F64_BIAS = 1075
# A bin entry grows by less than 2**27 per value (float32: M and the 24-bit
# halves of M*M are below 2**24; float64: M's 26-bit low and 27-bit high
# parts), so int64 bins are exact up to 2**36 values. Larger blocks are cut
# in parts below that; tiles are ~2**20 to 2**26 values.
_MAX_VALUES = 1 << 35


@numba.njit(cache=True, nogil=True)
def _bins_f32(values, lo, hi, drop, use_drop):
    """Count, and per sign-and-exponent bins of M, M*M % 2**24, M*M >> 24."""
    acc = np.zeros((512, 4), np.int64)
    count = 0
    ny, nx = values.shape
    for i in range(ny):
        for j in range(nx):
            v = values[i, j]
            # Branch-free: a random mask would mispredict. A value left out
            # adds zeros (inf and NaN fail the finite bounds lo, hi).
            keep = np.int64(v >= lo) & np.int64(v <= hi)
            if use_drop:
                keep &= np.int64(drop[i, j]) ^ 1
            count += keep
            b = np.int64(_bits(v))
            field = (b >> 23) & 0xFF
            m = ((b & 0x7FFFFF) | (np.int64(field != 0) << 23)) & -keep
            # v*v is exact in float64: M*M * 2**(2E), M*M below 2**48.
            mm = m * m
            k = np.uint64((b >> 23) & 0x1FF)
            acc[k, 0] += m
            acc[k, 1] += mm & 0xFFFFFF
            acc[k, 2] += mm >> 24
    return count, acc


@numba.njit(cache=True, nogil=True)
def _bins_f64(values, lo, hi, drop, use_drop):
    """Count, and bins of M >> 26, M % 2**26 for ``v`` (sign and exponent)
    and for the float64 ``v * v`` (exponent)."""
    acc = np.zeros((4096, 4), np.int64)
    count = 0
    ny, nx = values.shape
    for i in range(ny):
        for j in range(nx):
            v = values[i, j]
            keep = np.int64(v >= lo) & np.int64(v <= hi)
            if use_drop:
                keep &= np.int64(drop[i, j]) ^ 1
            count += keep
            b = _bits(v)
            field = (b >> 52) & 0x7FF
            m = ((b & 0xFFFFFFFFFFFFF) | (np.int64(field != 0) << 52)) & -keep
            k = np.uint64((b >> 52) & 0xFFF)
            acc[k, 0] += m >> 26
            acc[k, 1] += m & 0x3FFFFFF
            # The rounded float64 square, as the digit path sums it: it may
            # underflow to zero, or overflow to inf and then add nothing.
            w = v * v
            bw = _bits(w)
            field = (bw >> 52) & 0x7FF
            keep_w = keep & np.int64(field != 0x7FF)
            m = ((bw & 0xFFFFFFFFFFFFF) | (np.int64(field != 0) << 52)) & -keep_w
            k = np.uint64(field)
            acc[k, 2] += m >> 26
            acc[k, 3] += m & 0x3FFFFFF
    return count, acc


def _state_of_bins(count: int, acc: np.ndarray, float32: bool) -> MomentState:
    """Bins of :func:`_bins_f32` or :func:`_bins_f64` in units of 2**-UNIT_EXP."""
    exp_bits, bias = (8, _F32_BIAS) if float32 else (11, _F64_BIAS)
    top = (1 << exp_bits) - 1
    total = total_sq = 0
    rows = acc.tolist()
    for k in np.flatnonzero(acc.any(axis=1)).tolist():
        a0, a1, a2, a3 = rows[k]
        e = max(k & top, 1) - bias
        if float32:
            s, sq = a0, (a2 << 24) + a1
            sq_shift = 2 * e + UNIT_EXP
        else:
            s, sq = (a0 << 26) + a1, (a2 << 26) + a3
            sq_shift = e + UNIT_EXP
        total += (-s if k >> exp_bits else s) << (e + UNIT_EXP)
        total_sq += sq << sq_shift
    return MomentState(int(count), total, total_sq)


def _kept_range(lower: float, upper: float, dtype) -> tuple | None:
    """The finite ``dtype`` values ``v`` with ``lower <= v <= upper`` (compared
    in float64) as a closed ``(lo, hi)`` range of ``dtype``; None if empty.

    With finite ends, the kernels need no separate finiteness test, and
    float32 values compare in float32.
    """
    if math.isnan(lower) or math.isnan(upper):
        return None
    big = float(np.finfo(dtype).max)
    lower, upper = max(lower, -big), min(upper, big)
    if lower > upper:
        return None
    lo, hi = dtype(lower), dtype(upper)
    # Compared as Python floats: a numpy float32 scalar would round the bound.
    if float(lo) < lower:
        lo = np.nextafter(lo, dtype(np.inf))
    if float(hi) > upper:
        hi = np.nextafter(hi, dtype(-np.inf))
    return (lo, hi) if lo <= hi else None


def _state_2d(values, lo, hi, drop) -> MomentState:
    if values.size > _MAX_VALUES:
        axis = 0 if values.shape[0] > 1 else 1
        half = values.shape[axis] // 2
        state = MomentState()
        for part in (slice(None, half), slice(half, None)):
            cut = (part, slice(None)) if axis == 0 else (slice(None), part)
            sub = None if drop is None else drop[cut]
            state = state + _state_2d(values[cut], lo, hi, sub)
        return state
    float32 = values.dtype == np.float32
    kernel = _bins_f32 if float32 else _bins_f64
    if drop is None:
        count, acc = kernel(values, lo, hi, np.zeros((1, 1), np.uint8), False)
    else:
        count, acc = kernel(values, lo, hi, drop, True)
    return _state_of_bins(count, acc, float32)


def moment_state(
    values: np.ndarray,
    *,
    lower: float = -math.inf,
    upper: float = math.inf,
    mask: np.ndarray | None = None,
) -> MomentState:
    """The exact state of the finite ``values`` within ``[lower, upper]``.

    Parameters
    ----------
    values : array_like
        Any shape and layout. Native float32 and float64 are read in place
        in one compiled pass; other dtypes are converted to float64 first.
    lower, upper : float
        Values are kept where ``lower <= v <= upper``, compared in float64.
    mask : array_like of bool, optional
        True leaves a value out. The shape of ``values``, or the same size
        (then matched in C order).

    Returns
    -------
    MomentState
        Count, sum and sum of squares (``v * v`` rounded to float64, which
        is exact for float32 input) in units of ``2**-UNIT_EXP``; equal,
        integer for integer, to the exact sum of the kept values.

    Examples
    --------
    >>> x = np.array([1.5, np.nan, -0.25, 4.0], dtype=np.float32)
    >>> moments(moment_state(x, upper=2.0))
    (2, 0.625, 0.875)
    """
    arr = np.asarray(values)
    if arr.dtype != np.float32 and arr.dtype != np.float64:
        # Other dtypes and byte orders: the float64 copy the digit path made.
        arr = arr.astype(np.float64)
    drop = None
    if mask is not None:
        drop = np.asarray(mask)
        if drop.dtype != np.bool_:
            drop = drop.astype(np.bool_)
        if drop.shape != arr.shape:
            if drop.size != arr.size:
                msg = (
                    f"mask has shape {drop.shape} but values have shape "
                    f"{arr.shape}; pass a mask of the values' shape"
                )
                raise ValueError(msg)
            drop = drop.reshape(arr.shape)
        # 0/1 bytes: the kernels use the mask as an integer, branch-free.
        drop = drop.view(np.uint8)
    kept = _kept_range(float(lower), float(upper), arr.dtype.type)
    if arr.size == 0 or kept is None:
        return MomentState()
    # A 2-D view of any 1-D or 2-D input, strided or not, without a copy; sums
    # do not depend on the order, so F order is read transposed.
    if arr.ndim == 2 and not arr.flags.c_contiguous and arr.T.flags.c_contiguous:
        arr = arr.T
        drop = None if drop is None else drop.T
    elif arr.ndim != 2:
        shape = (1, arr.size) if arr.ndim < 2 else (-1, arr.shape[-1])
        arr = arr.reshape(shape)
        drop = None if drop is None else drop.reshape(shape)
    return _state_2d(arr, *kept, drop)


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

"""Exact sums of float64 values as integer digits, and their compiled helpers.

The metrics are the same bits for any chunking because every sum is exact. A
float64 value is split into signed base-2**26 digits at fixed global
positions (:func:`split_bits`, read off the bit pattern, gives the digits of
:func:`~tilesky.kernels._noise.split_digits`), and digits are added as
integers (:class:`ExactSums`), so a block that straddles chunks gets the same
sum from its pieces as from one piece. A sum becomes a float
(:func:`exact_float`) through the unique base-2**26 expansion of its value:
the float is a function of the exact sum only, whatever the split. Per-block
means are then deterministic, and sums over blocks or pixels go through the
exact :class:`~tilesky.kernels._noise.MomentState` (:func:`moment_state_of`,
:func:`grouped_moment_states`).

numpy and numba only: no dask, no metric states. The ``nb_*`` functions are
compiled and called from the per-chunk passes of :mod:`._passes`.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numba
import numpy as np
from llvmlite import ir
from numba.core import types
from numba.extending import intrinsic

from tilesky.kernels._noise import (
    LIMB,
    N_POS,
    OFFSET,
    MomentState,
    moment_state,
    split_digits,
)

__all__ = [
    "ExactSums",
    "digit_sums",
    "exact_concat",
    "exact_float",
    "grouped_moment_states",
    "moment_state_of",
    "native_float",
    "nb_add_digits",
    "nb_add_moment",
    "nb_column_float",
    "nb_digit_range",
    "nb_float4",
    "nb_to_float",
    "split_bits",
    "states_of_digits",
    "zero_sums",
]

_LIMB_MASK = (1 << LIMB) - 1
# Digit sums below these keep _nb_sum_float's two int64 words from overflow.
_FIT = 1 << 60
_FIT_TOP = 1 << 36
_BASE = float(1 << LIMB)
# 2**e for every e with 2**e a float64 (subnormal ones included).
_POW2 = np.ldexp(1.0, np.arange(-1074, 1024))


@intrinsic
def _f64_bits(typingctx, x):
    """The IEEE bit pattern of a float64, as int64."""
    if isinstance(x, types.Float) and x.bitwidth == 64:

        def codegen(context, builder, signature, args):
            return builder.bitcast(args[0], ir.IntType(64))

        return types.int64(x), codegen
    return None


@intrinsic
def _f64_from_bits(typingctx, x):
    """The float64 with bit pattern ``x`` (int64)."""
    if isinstance(x, types.Integer) and x.bitwidth == 64:

        def codegen(context, builder, signature, args):
            return builder.bitcast(args[0], ir.DoubleType())

        return types.float64(x), codegen
    return None


@numba.njit(cache=True, nogil=True, inline="always")
def split_bits(v):
    """:func:`split_digits` of ``v``, read off the bits for normal numbers.

    Same digits: ``frexp`` gives the significand with its implicit bit and the
    exponent ``field - 1022``; zero, subnormal and non-finite values go to
    :func:`split_digits` itself.
    """
    b = _f64_bits(v)
    field = (b >> 52) & 0x7FF
    if field == 0 or field == 0x7FF:
        return split_digits(v)
    m = (b & 0xFFFFFFFFFFFFF) | (np.int64(1) << 52)
    if b < 0:
        m = -m
    pos = field - 1022 + (OFFSET - 53)
    q = pos // LIMB
    scale = np.int64(1) << (pos - q * LIMB)
    lo = (m & _LIMB_MASK) * scale
    hi = (m >> LIMB) * scale
    return q, lo & _LIMB_MASK, (lo >> LIMB) + (hi & _LIMB_MASK), hi >> LIMB


@dataclass(frozen=True, eq=False)
class ExactSums:
    """Exact sums of float64 values, one per column, as base-2**26 integer digits.

    Column ``m`` holds ``sum_k limbs[k, m] * 2**(26 * (q0 + k) - 1126)``.
    Digits are int64 and may exceed the base before :func:`exact_float`
    normalises them; adding two states is adding their aligned digits.

    Parameters
    ----------
    q0 : int
        Position of the lowest digit.
    limbs : numpy.ndarray
        int64 digits, shape ``(digits, columns)``.
    """

    q0: int
    limbs: np.ndarray

    @property
    def size(self) -> int:
        """Number of columns (sums)."""
        return int(self.limbs.shape[1])


def zero_sums(size: int) -> ExactSums:
    return ExactSums(0, np.zeros((0, size), dtype=np.int64))


@numba.njit(cache=True, nogil=True)
def nb_column_float(buf, k, q0):
    """The float of the exact sum whose digits at positions ``q0 ..`` are in
    ``buf[3 : 3 + k]`` (``buf[: k + 6]`` otherwise zero; it is overwritten)."""
    # Three spare digits each side: room for carries, four digits to read.
    sign = 1.0
    for rnd in range(2):
        for r in range(k + 5):
            carry = buf[r] >> LIMB
            buf[r] -= carry * (1 << LIMB)
            buf[r + 1] += carry
        if rnd == 0 and buf[k + 5] < 0:
            sign = -1.0
            for r in range(k + 6):
                buf[r] = -buf[r]
        elif rnd == 0:
            break
    # Digits are now the unique base-2**26 expansion of |sum| at global
    # positions: the float built from the leading four is the same for any
    # split of the sum, and for any q0 and k that hold it.
    top = k + 5
    while top > 3 and buf[top] == 0:
        top -= 1
    f = 0.0
    for d in range(4):
        f = f * float(1 << LIMB) + buf[top - d]
    return sign * math.ldexp(f, LIMB * (q0 + top - 6) - OFFSET)


@numba.njit(cache=True, nogil=True, inline="always")
def nb_float4(s0, s1, s2, s3, q0):
    """``(fits, value)``: :func:`nb_column_float` of the digit sums
    ``s0 .. s3`` at positions ``q0 ..``, computed in registers.

    The sum ``S`` is held exactly as ``H * 2**52 + L`` (``0 <= L < 2**52``)
    in two int64, ``|S|`` is cut into its base-B digits ``e0 .. e4``, and the
    leading four are read as the general path reads them: the same float
    for the same sum. ``fits`` is False when the digit sums are too large
    for the two words.
    """
    if abs(s0) >= _FIT or abs(s1) >= _FIT or abs(s2) >= _FIT or abs(s3) >= _FIT_TOP:
        return False, 0.0
    lo = s0 + ((s1 & _LIMB_MASK) << LIMB)
    hi = (s1 >> LIMB) + s2 + (s3 << LIMB) + (lo >> (2 * LIMB))
    lo &= (1 << (2 * LIMB)) - 1
    sign = 1.0
    if hi < 0:
        sign = -1.0
        if lo:
            hi, lo = -hi - 1, (1 << (2 * LIMB)) - lo
        else:
            hi = -hi
    e0, e1 = lo & _LIMB_MASK, lo >> LIMB
    e2, e3, e4 = hi & _LIMB_MASK, (hi >> LIMB) & _LIMB_MASK, hi >> (2 * LIMB)
    # The leading digit and the three below it (zeros below position 0).
    if e4:
        t, a, b, c, d = 4, e4, e3, e2, e1
    elif e3:
        t, a, b, c, d = 3, e3, e2, e1, e0
    elif e2:
        t, a, b, c, d = 2, e2, e1, e0, 0
    elif e1:
        t, a, b, c, d = 1, e1, e0, 0, 0
    else:
        t, a, b, c, d = 0, e0, 0, 0, 0
    f = ((float(a) * _BASE + b) * _BASE + c) * _BASE + d
    e = LIMB * (q0 + t - 3) - OFFSET
    # A product with an exact power of two rounds once, as ldexp does.
    if -1074 <= e <= 1023:
        return True, sign * (f * _POW2[e + 1074])
    return True, sign * math.ldexp(f, e)


@numba.njit(cache=True, nogil=True, inline="always")
def _nb_sum_float(buf, k, q0):
    """:func:`nb_column_float` of ``buf[3 : 3 + k]``, in registers when it
    can (:func:`nb_float4`)."""
    if k <= 4:
        fits, value = nb_float4(
            buf[3] if k > 0 else 0,
            buf[4] if k > 1 else 0,
            buf[5] if k > 2 else 0,
            buf[6] if k > 3 else 0,
            q0,
        )
        if fits:
            return value
    return nb_column_float(buf, k, q0)


@numba.njit(cache=True, nogil=True)
def nb_to_float(limbs, q0):
    k, n = limbs.shape
    out = np.empty(n)
    buf = np.zeros(k + 6, np.int64)
    for c in range(n):
        buf[:] = 0
        buf[3 : 3 + k] = limbs[:, c]
        out[c] = _nb_sum_float(buf, k, q0)
    return out


@numba.njit(cache=True, nogil=True, inline="always")
def nb_add_digits(acc, i, j, v, q0=0):
    """Add the digits of ``v`` to ``acc[i, j]``, whose entry ``k`` is digit
    position ``q0 + k`` (indexed, not sliced: a view per value would cost
    more than the sum)."""
    q, d0, d1, d2 = split_bits(v)
    if q >= 0:
        q -= q0
        acc[i, j, q] += d0
        acc[i, j, q + 1] += d1
        acc[i, j, q + 2] += d2


@numba.njit(cache=True, nogil=True, inline="always")
def nb_add_moment(count, acc, g, v):
    """Count finite ``v`` in group ``g``; add the digits of ``v`` and of the
    float64 ``v * v`` (as :func:`moment_state` sums them)."""
    if math.isfinite(v):
        count[g] += 1
        nb_add_digits(acc, g, 0, v)
        nb_add_digits(acc, g, 1, v * v)


@numba.njit(cache=True, nogil=True)
def _nb_grouped_moments(values, group, n_groups):
    count = np.zeros(n_groups, np.int64)
    acc = np.zeros((n_groups, 2, N_POS), np.int64)
    for i in range(values.size):
        nb_add_moment(count, acc, group[i], values[i])
    return count, acc


@functools.cache
def _unit_shift() -> int:
    # MomentState's integer unit, read off moment_state's own result.
    return moment_state(np.ones(1)).sum.bit_length() - 1


def _digits_to_int(row: list[int]) -> int:
    """Digit totals at positions 0.. as an integer in MomentState units."""
    total = sum(a << (LIMB * k) for k, a in enumerate(row) if a)
    shift = _unit_shift() - OFFSET
    return total << shift if shift >= 0 else total >> -shift


def states_of_digits(count: np.ndarray, acc: np.ndarray) -> list[MomentState]:
    """One :class:`MomentState` per group from :func:`_nb_grouped_moments`'
    counts and digit totals (``acc[g, 0]``: values, ``acc[g, 1]``: squares)."""
    rows = acc.tolist()
    return [
        MomentState(int(n), _digits_to_int(r[0]), _digits_to_int(r[1]))
        for n, r in zip(count.tolist(), rows, strict=True)
    ]


def grouped_moment_states(values, group, n_groups: int) -> list[MomentState]:
    """Exact moment states of the finite ``values`` per ``group`` in one pass;
    group ``g`` equals ``moment_state(values[group == g])`` integer for integer."""
    count, acc = _nb_grouped_moments(
        np.ascontiguousarray(values, dtype=np.float64),
        np.ascontiguousarray(group, dtype=np.int64),
        n_groups,
    )
    return states_of_digits(count, acc)


def moment_state_of(values, *, keep=None, drop=None) -> MomentState:
    """Exact :class:`MomentState` of the finite ``values`` (where ``keep`` / not
    ``drop``), from the shared compiled pass of ``kernels._noise``."""
    if keep is not None:
        drop = ~np.asarray(keep, dtype=bool)
    return moment_state(values, mask=drop)


def exact_concat(parts: list[ExactSums]) -> ExactSums:
    size = sum(p.size for p in parts)
    live = [p for p in parts if p.limbs.shape[0]]
    if not live:
        return zero_sums(size)
    lo = min(p.q0 for p in live)
    hi = max(p.q0 + p.limbs.shape[0] for p in live)
    limbs = np.zeros((hi - lo, size), dtype=np.int64)
    start = 0
    for p in parts:
        if p.limbs.shape[0]:
            limbs[p.q0 - lo : p.q0 - lo + p.limbs.shape[0], start : start + p.size] = (
                p.limbs
            )
        start += p.size
    return ExactSums(lo, limbs)


def exact_float(sums: ExactSums) -> np.ndarray:
    """A float64 per column, a function of the exact sum only (within 1 ulp)."""
    if sums.limbs.shape[0] == 0 or sums.size == 0:
        return np.zeros(sums.size)
    return nb_to_float(np.ascontiguousarray(sums.limbs), sums.q0)


def digit_sums(sums_rows: np.ndarray, q0: int, n_pos: int) -> ExactSums:
    """Digit rows from position ``q0`` on as :class:`ExactSums` (none: zeros)."""
    return ExactSums(q0, sums_rows) if n_pos else zero_sums(sums_rows.shape[1])


def native_float(values, *, contiguous: bool = True) -> np.ndarray:
    """``values`` as float32 or float64 (others become float64), C-contiguous
    unless not asked: the exact sums of float32 values need no float64 copy."""
    a = np.asarray(values)
    if a.dtype != np.float32:
        a = a.astype(np.float64, copy=False)
    return np.ascontiguousarray(a) if contiguous else a


@numba.njit(cache=True, nogil=True)
def nb_digit_range(values):
    """Lowest and highest digit position ``q`` of the finite non-zero values
    (``(1 << 30, -1)`` when there are none)."""
    # For finite |v| the bit pattern grows with the value: compare integers,
    # branch-free, so the loop vectorises.
    inf_bits = np.int64(0x7FF0000000000000)
    lo, hi = inf_bits, np.int64(0)
    for i in range(values.shape[0]):
        for j in range(values.shape[1]):
            v = np.float64(values[i, j])
            a = _f64_bits(v) & np.int64(0x7FFFFFFFFFFFFFFF)
            finite = a < inf_bits
            lo = min(lo, a if finite and a != 0 else inf_bits)
            hi = max(hi, a if finite else 0)
    if hi == 0:
        return 1 << 30, -1
    # q grows with |v| (it is frexp's exponent, cut in LIMB-bit steps).
    return split_bits(_f64_from_bits(lo))[0], split_bits(_f64_from_bits(hi))[0]

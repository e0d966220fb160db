"""Compiled kernels of the quality metrics: exact digit sums and one-pass block sums.

The numeric core of :mod:`tilesky.metrics`, in numpy and numba only: no dask,
no metric states. ``tilesky.metrics`` builds its mergeable states and its
graph on top of these functions.

The metrics are the same bits for any chunking because every sum here is
exact. A float64 value is split into signed base-2**26 digits at fixed global
positions (:func:`_split`, read off the bit pattern, gives the digits of
:func:`~tilesky.kernels._noise.split_digits`), and digits are added as
integers (:class:`ExactSums`), so a block that straddles chunks gets the same
sum from its pieces as from one piece. A sum becomes a float
(:func:`_exact_float`) through the unique base-2**26 expansion of its value:
the float is a function of the exact sum only, whatever the split. Per-block
means are then deterministic, and sums over blocks or pixels go through the
exact :class:`~tilesky.kernels._noise.MomentState` (:func:`_moment_state`,
:func:`_grouped_moment_states`).

Each chunk is read by a few compiled passes. The block sums of every width
come from one streamed pass (:func:`_nb_scale_pass`) that splits each pixel
once and keeps a ring of integral-image rows (one plane per digit position);
blocks lying wholly in the chunk become means and moment digits at once, and
only blocks cut by chunk borders are returned as digit columns.
:func:`_nb_bias_pass` sums the background per bias block under masked and
unmasked pixels, :func:`_nb_source_pass` the residual and background in each
source's 3x3 box, and :func:`_nb_extremes` finds the extremes of the
residual. The former per-position integral images (:func:`_exact_rects`) are
kept as the reference of the one-pass kernels, for the
``_*_state_reference`` paths of ``tilesky.metrics``, the tests and the
benchmark.
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

__all__ = ["ExactSums"]

_LIMB = LIMB
_LIMB_MASK = (1 << LIMB) - 1
_OFFSET = OFFSET
# Digit sums below these keep _nb_sum_float's two int64 words from overflow.
_FIT = 1 << 60
_FIT_TOP = 1 << 36
_BASE = float(1 << LIMB)
# 2**e for every e with 2**e a float64 (subnormal ones included).
_POW2 = np.ldexp(1.0, np.arange(-1074, 1024))
_N_POS = N_POS


# --------------------------------------------------------------------------
# Digits and exact sums
# --------------------------------------------------------------------------


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
def _split(v):
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
    pos = field - 1022 + (_OFFSET - 53)
    q = pos // _LIMB
    scale = np.int64(1) << (pos - q * _LIMB)
    lo = (m & _LIMB_MASK) * scale
    hi = (m >> _LIMB) * scale
    return q, lo & _LIMB_MASK, (lo >> _LIMB) + (hi & _LIMB_MASK), hi >> _LIMB


@dataclass(frozen=True, eq=False)
class ExactSums:
    """Exact sums of float64 values, one per column, as base-2**26 integer digits.

    Column ``m`` holds ``sum_k limbs[k, m] * 2**(26 * (q0 + k) - 1126)``.
    Digits are int64 and may exceed the base before :func:`_exact_float`
    normalises them; adding two states is adding their aligned digits.
    """

    q0: int
    limbs: np.ndarray

    @property
    def size(self) -> int:
        return int(self.limbs.shape[1])


def _zero_sums(size: int) -> ExactSums:
    return ExactSums(0, np.zeros((0, size), dtype=np.int64))


@numba.njit(cache=True, nogil=True)
def _keep(select, mode, i, j):
    # mode 0: every pixel; 1: where select; 2: where not select.
    return mode == 0 or select[i, j] == (mode == 1)


@numba.njit(cache=True, nogil=True)
def _nb_limb_range(values, select, mode):
    qmin, qmax = 1 << 30, -1
    for i in range(values.shape[0]):
        for j in range(values.shape[1]):
            if _keep(select, mode, i, j):
                q = split_digits(values[i, j])[0]
                if q >= 0:
                    qmin = min(qmin, q)
                    qmax = max(qmax, q)
    return qmin, qmax


@numba.njit(cache=True, nogil=True)
def _nb_limb_integral(values, select, mode, limb, out):
    """Integral image (``out[1:, 1:]``) of the digits at position ``limb``."""
    for i in range(values.shape[0]):
        row = 0
        for j in range(values.shape[1]):
            if _keep(select, mode, i, j):
                q, d0, d1, d2 = split_digits(values[i, j])
                if q == limb:
                    row += d0
                elif q == limb - 1:
                    row += d1
                elif q == limb - 2:
                    row += d2
            out[i + 1, j + 1] = out[i, j + 1] + row


@numba.njit(cache=True, nogil=True)
def _nb_rects(integral, ra, rb, ca, cb, out):
    for k in range(ra.size):
        out[k] = (
            integral[rb[k], cb[k]]
            - integral[ra[k], cb[k]]
            - integral[rb[k], ca[k]]
            + integral[ra[k], ca[k]]
        )


@numba.njit(cache=True, nogil=True)
def _nb_digits(values):
    q = np.empty(values.size, np.int64)
    d = np.empty((3, values.size), np.int64)
    for i in range(values.size):
        q[i], d[0, i], d[1, i], d[2, i] = _split(values[i])
    return q, d


@numba.njit(cache=True, nogil=True)
def _nb_column_float(buf, k, q0):
    """The float of the exact sum whose digits at positions ``q0 ..`` are in
    ``buf[3 : 3 + k]`` (``buf[: k + 6]`` otherwise zero; it is overwritten)."""
    # Three spare digits each side: room for carries, four digits to read.
    sign = 1.0
    for rnd in range(2):
        for r in range(k + 5):
            carry = buf[r] >> _LIMB
            buf[r] -= carry * (1 << _LIMB)
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
        f = f * float(1 << _LIMB) + buf[top - d]
    return sign * math.ldexp(f, _LIMB * (q0 + top - 6) - _OFFSET)


@numba.njit(cache=True, nogil=True, inline="always")
def _nb_float4(s0, s1, s2, s3, q0):
    """``(fits, value)``: :func:`_nb_column_float` of the digit sums
    ``s0 .. s3`` at positions ``q0 ..``, computed in registers.

    The sum ``S`` is held exactly as ``H * 2**52 + L`` (``0 <= L < 2**52``)
    in two int64, ``|S|`` is cut into its base-B digits ``e0 .. e4``, and the
    leading four are read as the general path reads them: the same float
    for the same sum. ``fits`` is False when the digit sums are too large
    for the two words.
    """
    if abs(s0) >= _FIT or abs(s1) >= _FIT or abs(s2) >= _FIT or abs(s3) >= _FIT_TOP:
        return False, 0.0
    lo = s0 + ((s1 & _LIMB_MASK) << _LIMB)
    hi = (s1 >> _LIMB) + s2 + (s3 << _LIMB) + (lo >> (2 * _LIMB))
    lo &= (1 << (2 * _LIMB)) - 1
    sign = 1.0
    if hi < 0:
        sign = -1.0
        if lo:
            hi, lo = -hi - 1, (1 << (2 * _LIMB)) - lo
        else:
            hi = -hi
    e0, e1 = lo & _LIMB_MASK, lo >> _LIMB
    e2, e3, e4 = hi & _LIMB_MASK, (hi >> _LIMB) & _LIMB_MASK, hi >> (2 * _LIMB)
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
    e = _LIMB * (q0 + t - 3) - _OFFSET
    # A product with an exact power of two rounds once, as ldexp does.
    if -1074 <= e <= 1023:
        return True, sign * (f * _POW2[e + 1074])
    return True, sign * math.ldexp(f, e)


@numba.njit(cache=True, nogil=True, inline="always")
def _nb_sum_float(buf, k, q0):
    """:func:`_nb_column_float` of ``buf[3 : 3 + k]``, in registers when it
    can (:func:`_nb_float4`)."""
    if k <= 4:
        fits, value = _nb_float4(
            buf[3] if k > 0 else 0,
            buf[4] if k > 1 else 0,
            buf[5] if k > 2 else 0,
            buf[6] if k > 3 else 0,
            q0,
        )
        if fits:
            return value
    return _nb_column_float(buf, k, q0)


@numba.njit(cache=True, nogil=True)
def _nb_to_float(limbs, q0):
    k, n = limbs.shape
    out = np.empty(n)
    buf = np.zeros(k + 6, np.int64)
    for c in range(n):
        buf[:] = 0
        buf[3 : 3 + k] = limbs[:, c]
        out[c] = _nb_sum_float(buf, k, q0)
    return out


@numba.njit(cache=True, nogil=True, inline="always")
def _nb_add_digits(acc, i, j, v, q0=0):
    """Add the digits of ``v`` to ``acc[i, j]``, whose entry ``k`` is digit
    position ``q0 + k`` (indexed, not sliced: a view per value would cost
    more than the sum)."""
    q, d0, d1, d2 = _split(v)
    if q >= 0:
        q -= q0
        acc[i, j, q] += d0
        acc[i, j, q + 1] += d1
        acc[i, j, q + 2] += d2


@numba.njit(cache=True, nogil=True, inline="always")
def _nb_add_moment(count, acc, g, v):
    """Count finite ``v`` in group ``g``; add the digits of ``v`` and of the
    float64 ``v * v`` (as :func:`moment_state` sums them)."""
    if math.isfinite(v):
        count[g] += 1
        _nb_add_digits(acc, g, 0, v)
        _nb_add_digits(acc, g, 1, v * v)


@numba.njit(cache=True, nogil=True)
def _nb_grouped_moments(values, group, n_groups):
    count = np.zeros(n_groups, np.int64)
    acc = np.zeros((n_groups, 2, _N_POS), np.int64)
    for i in range(values.size):
        _nb_add_moment(count, acc, group[i], values[i])
    return count, acc


@functools.cache
def _unit_shift() -> int:
    # MomentState's integer unit, read off moment_state's own result.
    return moment_state(np.ones(1)).sum.bit_length() - 1


def _digits_to_int(row: list[int]) -> int:
    """Digit totals at positions 0.. as an integer in MomentState units."""
    total = sum(a << (_LIMB * k) for k, a in enumerate(row) if a)
    shift = _unit_shift() - _OFFSET
    return total << shift if shift >= 0 else total >> -shift


def _states_of_digits(count: np.ndarray, acc: np.ndarray) -> list[MomentState]:
    """One :class:`MomentState` per group from :func:`_nb_grouped_moments`'
    counts and digit totals (``acc[g, 0]``: values, ``acc[g, 1]``: squares)."""
    rows = acc.tolist()
    return [
        MomentState(int(n), _digits_to_int(r[0]), _digits_to_int(r[1]))
        for n, r in zip(count.tolist(), rows, strict=True)
    ]


def _grouped_moment_states(values, group, n_groups: int) -> list[MomentState]:
    """Exact moment states of the finite ``values`` per ``group`` in one pass;
    group ``g`` equals ``moment_state(values[group == g])`` integer for integer."""
    count, acc = _nb_grouped_moments(
        np.ascontiguousarray(values, dtype=np.float64),
        np.ascontiguousarray(group, dtype=np.int64),
        n_groups,
    )
    return _states_of_digits(count, acc)


def _moment_state(values, *, keep=None, drop=None) -> MomentState:
    """Exact :class:`MomentState` of the finite ``values`` (where ``keep`` / not
    ``drop``), from the shared compiled pass of ``kernels._noise``."""
    if keep is not None:
        drop = ~np.asarray(keep, dtype=bool)
    return moment_state(values, mask=drop)


def _exact_values(values: np.ndarray) -> ExactSums:
    """One column per value."""
    q, d = _nb_digits(np.ascontiguousarray(np.ravel(values), dtype=np.float64))
    nz = q >= 0
    if not nz.any():
        return _zero_sums(q.size)
    qmin = int(q[nz].min())
    limbs = np.zeros((int(q[nz].max()) + 3 - qmin, q.size), dtype=np.int64)
    cols = np.flatnonzero(nz)
    row = q[nz] - qmin
    for k in range(3):
        limbs[row + k, cols] = d[k, nz]
    return ExactSums(qmin, limbs)


def _integral(values: np.ndarray) -> np.ndarray:
    ny, nx = values.shape
    out = np.zeros((ny + 1, nx + 1), dtype=np.int64)
    np.cumsum(values, axis=0, dtype=np.int64, out=out[1:, 1:])
    np.cumsum(out[1:, 1:], axis=1, out=out[1:, 1:])
    return out


def _rect(integral, ra, rb, ca, cb):
    return integral[rb, cb] - integral[ra, cb] - integral[rb, ca] + integral[ra, ca]


def _exact_rects(
    values: np.ndarray, rects: list[tuple], *, keep=None, drop=None
) -> list[ExactSums]:
    """Exact sums of ``values`` over rectangles ``(ra, rb, ca, cb)`` (local, half-open).

    Only pixels where ``keep`` (or not ``drop``) count. One integral image per
    digit position: a rectangle costs four look-ups whatever its size. The
    former path of the block sums, kept as the reference of the one-pass
    kernels (``_*_state_reference``).
    """
    v = np.ascontiguousarray(values, dtype=np.float64)
    if keep is not None:
        select, mode = np.ascontiguousarray(keep, dtype=bool), 1
    elif drop is not None:
        select, mode = np.ascontiguousarray(drop, dtype=bool), 2
    else:
        select, mode = np.zeros((1, 1), dtype=bool), 0
    qmin, qmax = _nb_limb_range(v, select, mode)
    if qmax < 0:
        return [_zero_sums(r[0].size) for r in rects]
    out = [np.zeros((qmax + 3 - qmin, r[0].size), dtype=np.int64) for r in rects]
    integral = np.zeros((v.shape[0] + 1, v.shape[1] + 1), dtype=np.int64)
    rects = [tuple(np.ascontiguousarray(e, dtype=np.int64) for e in r) for r in rects]
    for j in range(qmin, qmax + 3):
        _nb_limb_integral(v, select, mode, j, integral)
        for limbs, rect in zip(out, rects, strict=True):
            _nb_rects(integral, *rect, limbs[j - qmin])
    return [ExactSums(qmin, limbs) for limbs in out]


def _exact_concat(parts: list[ExactSums]) -> ExactSums:
    size = sum(p.size for p in parts)
    live = [p for p in parts if p.limbs.shape[0]]
    if not live:
        return _zero_sums(size)
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


def _exact_float(sums: ExactSums) -> np.ndarray:
    """A float64 per column, a function of the exact sum only (within 1 ulp)."""
    if sums.limbs.shape[0] == 0 or sums.size == 0:
        return np.zeros(sums.size)
    return _nb_to_float(np.ascontiguousarray(sums.limbs), sums.q0)


def _digits(sums_rows: np.ndarray, q0: int, n_pos: int) -> ExactSums:
    """Digit rows from position ``q0`` on as :class:`ExactSums` (none: zeros)."""
    return ExactSums(q0, sums_rows) if n_pos else _zero_sums(sums_rows.shape[1])


# --------------------------------------------------------------------------
# Per-chunk passes
# --------------------------------------------------------------------------


def _native_float(values, *, contiguous: bool = True) -> np.ndarray:
    """``values`` as float32 or float64 (others become float64), C-contiguous
    unless not asked: the exact sums of float32 values need no float64 copy."""
    a = np.asarray(values)
    if a.dtype != np.float32:
        a = a.astype(np.float64, copy=False)
    return np.ascontiguousarray(a) if contiguous else a


@numba.njit(cache=True, nogil=True)
def _nb_digit_range(values):
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
    return _split(_f64_from_bits(lo))[0], _split(_f64_from_bits(hi))[0]


@numba.njit(cache=True, nogil=True, inline="always")
def _nb_corner(cur, top, a, b, base, k, p):
    """Plane ``base + p`` of the rectangle between integral rows ``top`` and
    ``cur`` and columns ``a, b``; 0 for ``p >= k``."""
    if p >= k:
        return 0
    p += base
    return cur[b, p] - cur[a, p] - top[b, p] + top[a, p]


@numba.njit(cache=True, nogil=True)
def _nb_scale_pass(
    resid, perfect, has_perfect, mask, q0, n_pos, grid, ra, rb, rwhole, ca, cb, cwhole
):
    """Block sums of ``resid`` and ``perfect`` for every width in one pass.

    Rows are streamed once: each pixel's digits are split once, and a ring of
    the last integral-image rows (one plane per digit position of each field,
    plus the bad-pixel count) serves every rectangle ending on that row.
    ``grid[g]`` is ``(width, r_lo, r_hi, c_lo, c_hi)``: the ranges of the row
    blocks ``ra, rb, rwhole`` and column blocks ``ca, cb, cwhole`` of width
    ``g``. A block lying wholly in this chunk is finished here: without bad
    pixels its mean goes into the per-width moment digits (``count``,
    ``acc``; group ``g * n_field + field``), else it is dropped. The other
    blocks are returned as digit columns in the order their last row is
    read: ``pend`` (digit planes), ``pend_counts`` (pixels, bad pixels),
    ``pend_rc`` (row-block and column-block index).
    """
    h, w = resid.shape
    n_field = 2 if has_perfect else 1
    n_r = n_pos[0]
    n_pl = n_r + (n_pos[1] if has_perfect else 0) + 1
    n_g = grid.shape[0]
    depth, n_pend = 1, 0
    for g in range(n_g):
        n_whole_r, n_whole_c = 0, 0
        for i in range(grid[g, 1], grid[g, 2]):
            depth = max(depth, rb[i] - ra[i] + 1)
            n_whole_r += rwhole[i]
        for c in range(grid[g, 3], grid[g, 4]):
            n_whole_c += cwhole[c]
        n_rows, n_cols = grid[g, 2] - grid[g, 1], grid[g, 4] - grid[g, 3]
        n_pend += n_rows * n_cols - n_whole_r * n_whole_c
    count = np.zeros((n_g * n_field,), np.int64)
    acc = np.zeros((n_g * n_field, 2, _N_POS), np.int64)
    pend = np.zeros((n_pl - 1, n_pend), np.int64)
    pend_counts = np.zeros((2, n_pend), np.int64)
    pend_rc = np.zeros((2, n_pend), np.int64)
    # Integral rows y + 1 - depth .. y + 1 live at ring[(y + 1) % depth]; the
    # planes of one pixel are adjacent, so a corner is one or two cache lines.
    ring = np.zeros((depth, w + 1, n_pl), np.int64)
    run = np.zeros(n_pl, np.int64)
    buf = np.zeros(max(n_pos[0], n_pos[1]) + 6, np.int64)
    nxt = grid[:, 1].copy()
    slot = 0
    for y in range(h):
        prev, cur = ring[y % depth], ring[(y + 1) % depth]
        run[:] = 0
        for x in range(w):
            v = resid[y, x]
            bad = mask[y, x] or not math.isfinite(v)
            q, d0, d1, d2 = _split(v)
            if q >= 0:
                k = q - q0[0]
                run[k] += d0
                run[k + 1] += d1
                run[k + 2] += d2
            if has_perfect:
                v = perfect[y, x]
                bad = bad or not math.isfinite(v)
                q, d0, d1, d2 = _split(v)
                if q >= 0:
                    k = n_r + q - q0[1]
                    run[k] += d0
                    run[k + 1] += d1
                    run[k + 2] += d2
            run[n_pl - 1] += bad
            for p in range(n_pl):
                cur[x + 1, p] = prev[x + 1, p] + run[p]
        for g in range(n_g):
            i = nxt[g]
            if i == grid[g, 2] or rb[i] != y + 1:
                continue
            nxt[g] = i + 1
            top = ring[ra[i] % depth]
            area = grid[g, 0] * grid[g, 0]
            for c in range(grid[g, 3], grid[g, 4]):
                a, b = ca[c], cb[c]
                n_bad = _nb_corner(cur, top, a, b, 0, n_pl, n_pl - 1)
                if rwhole[i] and cwhole[c]:
                    if n_bad:
                        continue
                    base = 0
                    for f in range(n_field):
                        k = n_pos[f]
                        fits, total = False, 0.0
                        if k <= 4:
                            fits, total = _nb_float4(
                                _nb_corner(cur, top, a, b, base, k, 0),
                                _nb_corner(cur, top, a, b, base, k, 1),
                                _nb_corner(cur, top, a, b, base, k, 2),
                                _nb_corner(cur, top, a, b, base, k, 3),
                                q0[f],
                            )
                        if not fits:
                            buf[:] = 0
                            for p in range(k):
                                buf[3 + p] = _nb_corner(cur, top, a, b, base, k, p)
                            total = _nb_column_float(buf, k, q0[f])
                        _nb_add_moment(count, acc, g * n_field + f, total / area)
                        base += k
                else:
                    for p in range(n_pl - 1):
                        pend[p, slot] = _nb_corner(cur, top, a, b, 0, n_pl, p)
                    pend_counts[0, slot] = (rb[i] - ra[i]) * (b - a)
                    pend_counts[1, slot] = n_bad
                    pend_rc[0, slot] = i
                    pend_rc[1, slot] = c
                    slot += 1
    return count, acc, pend, pend_counts, pend_rc


@numba.njit(cache=True, nogil=True)
def _nb_bias_pass(bkg, mask, block_row, block_col, n_block_rows, n_block_cols):
    """Per block: digit totals and counts of the finite background under
    masked (field 0) and unmasked (field 1) pixels; digits from position
    ``q0`` (also returned) on."""
    n_blocks = n_block_rows * n_block_cols
    q0, q_top = _nb_digit_range(bkg)
    n_pos = max(q_top + 3 - q0, 0)
    acc = np.zeros((n_blocks, 2, n_pos), np.int64)
    counts = np.zeros((n_blocks, 2), np.int64)
    for y in range(bkg.shape[0]):
        first = block_row[y] * n_block_cols
        for x in range(bkg.shape[1]):
            v = np.float64(bkg[y, x])
            if not math.isfinite(v):
                continue
            b = first + block_col[x]
            f = 0 if mask[y, x] else 1
            counts[b, f] += 1
            _nb_add_digits(acc, b, f, v, q0)
    return q0, acc, counts


@numba.njit(cache=True, nogil=True)
def _nb_extremes(values, ya, yb, xa, xb):
    """Max and min of the finite values, everywhere and in rows ``[ya, yb)``
    by columns ``[xa, xb)``; ``-inf, inf`` when there are none."""
    mx, mn, mxi, mni = -math.inf, math.inf, -math.inf, math.inf
    for i in range(values.shape[0]):
        row_in = ya <= i < yb
        for j in range(values.shape[1]):
            v = values[i, j]
            if not math.isfinite(v):
                continue
            mx, mn = max(mx, v), min(mn, v)
            if row_in and xa <= j < xb:
                mxi, mni = max(mxi, v), min(mni, v)
    return mx, mn, mxi, mni


# Source table counts: pixels seen, expected pixels (from the centre's block),
# centre masked, masked pixels in the box, finite residual, finite background.
_SRC_NPIX, _SRC_EXPECT, _SRC_CMASK, _SRC_NMASK, _SRC_FRES, _SRC_FBKG = range(6)


@numba.njit(cache=True, nogil=True, inline="always")
def _nb_box(h, w, y, x):
    """Local row and column ranges of the 3x3 box at ``(y, x)`` in an
    ``h x w`` chunk."""
    return max(y - 1, 0), min(y + 2, h), max(x - 1, 0), min(x + 2, w)


@numba.njit(cache=True, nogil=True)
def _nb_source_pass(diff, has_diff, bkg, mask, ly, lx, expected, visit):
    """Counts (``_SRC_*`` rows) and digit sums (one row per box) of the
    residual and background over the part of each 3x3 box (centred at local
    ``ly, lx``) in the chunk.

    Boxes are read in the order ``visit`` (by row: neighbouring boxes share
    cached image rows), their pixels gathered once; the digits are added
    from the gathered values once their positions' range is known.
    """
    h, w = bkg.shape
    n = ly.size
    counts = np.zeros((6, n), np.int64)
    values = np.empty((9 * n, 2))
    owner = np.empty(9 * n, np.int64)
    q_lo = np.full(2, 1 << 30, np.int64)
    q_hi = np.full(2, -1, np.int64)
    m = 0
    for i in visit:
        ya, yb, xa, xb = _nb_box(h, w, ly[i], lx[i])
        for y in range(ya, yb):
            for x in range(xa, xb):
                d = diff[y, x] if has_diff else math.nan
                b = np.float64(bkg[y, x])
                counts[_SRC_NPIX, i] += 1
                if y == ly[i] and x == lx[i]:
                    counts[_SRC_EXPECT, i] = expected[i]
                    counts[_SRC_CMASK, i] = mask[y, x]
                counts[_SRC_NMASK, i] += mask[y, x]
                counts[_SRC_FRES, i] += math.isfinite(d)
                counts[_SRC_FBKG, i] += math.isfinite(b)
                values[m, 0], values[m, 1], owner[m] = d, b, i
                m += 1
                for f in range(2):
                    q = _split(values[m - 1, f])[0]
                    if q >= 0:
                        q_lo[f] = min(q_lo[f], q)
                        q_hi[f] = max(q_hi[f], q)
    n_pos = max(q_hi[0] + 3 - q_lo[0], 0), max(q_hi[1] + 3 - q_lo[1], 0)
    limbs_d = np.zeros((n, n_pos[0]), np.int64)
    limbs_b = np.zeros((n, n_pos[1]), np.int64)
    # Views with a unit middle axis, for the shared digit adder.
    acc_d = limbs_d.reshape((n, 1, n_pos[0]))
    acc_b = limbs_b.reshape((n, 1, n_pos[1]))
    for j in range(m):
        _nb_add_digits(acc_d, owner[j], 0, values[j, 0], q_lo[0])
        _nb_add_digits(acc_b, owner[j], 0, values[j, 1], q_lo[1])
    return counts, q_lo, limbs_d.T, limbs_b.T

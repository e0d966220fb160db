"""The compiled per-chunk passes of the metrics: each reads a chunk once.

The block sums of every width come from one streamed pass
(:func:`nb_scale_pass`) that splits each pixel once and keeps a ring of
integral-image rows (one plane per digit position); blocks lying wholly in
the chunk become means and moment digits at once, and only blocks cut by
chunk borders are returned as digit columns. :func:`nb_bias_pass` sums the
background per bias block under masked and unmasked pixels,
:func:`nb_source_pass` the residual and background in each source's 3x3 box,
and :func:`nb_extremes` finds the extremes of the residual. Sums are digit
sums of :mod:`._exact`; the slow per-digit-position reference of these
passes lives with the tests.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from tilesky.kernels._noise import N_POS
from tilesky.metrics._exact import (
    nb_add_digits,
    nb_add_moment,
    nb_column_float,
    nb_digit_range,
    nb_float4,
    split_bits,
)

__all__ = [
    "SRC_CMASK",
    "SRC_EXPECT",
    "SRC_FBKG",
    "SRC_FRES",
    "SRC_NMASK",
    "SRC_NPIX",
    "nb_bias_pass",
    "nb_extremes",
    "nb_scale_pass",
    "nb_source_pass",
]


@numba.njit(cache=True, nogil=True, inline="always")
def _nb_corner(cur, top, a, b, base, k, p):
    """Plane ``base + p`` of the rectangle between integral rows ``top`` and
    ``cur`` and columns ``a, b``; 0 for ``p >= k``."""
    if p >= k:
        return 0
    p += base
    return cur[b, p] - cur[a, p] - top[b, p] + top[a, p]


@numba.njit(cache=True, nogil=True)
def nb_scale_pass(
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
    acc = np.zeros((n_g * n_field, 2, N_POS), np.int64)
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
            q, d0, d1, d2 = split_bits(v)
            if q >= 0:
                k = q - q0[0]
                run[k] += d0
                run[k + 1] += d1
                run[k + 2] += d2
            if has_perfect:
                v = perfect[y, x]
                bad = bad or not math.isfinite(v)
                q, d0, d1, d2 = split_bits(v)
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
                            fits, total = nb_float4(
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
                            total = nb_column_float(buf, k, q0[f])
                        nb_add_moment(count, acc, g * n_field + f, total / area)
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
def nb_bias_pass(bkg, mask, block_row, block_col, n_block_rows, n_block_cols):
    """Per block: digit totals and counts of the finite background under
    masked (field 0) and unmasked (field 1) pixels; digits from position
    ``q0`` (also returned) on."""
    n_blocks = n_block_rows * n_block_cols
    q0, q_top = nb_digit_range(bkg)
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
            nb_add_digits(acc, b, f, v, q0)
    return q0, acc, counts


@numba.njit(cache=True, nogil=True)
def nb_extremes(values, ya, yb, xa, xb):
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
SRC_NPIX, SRC_EXPECT, SRC_CMASK, SRC_NMASK, SRC_FRES, SRC_FBKG = range(6)


@numba.njit(cache=True, nogil=True, inline="always")
def _nb_box(h, w, y, x):
    """Local row and column ranges of the 3x3 box at ``(y, x)`` in an
    ``h x w`` chunk."""
    return max(y - 1, 0), min(y + 2, h), max(x - 1, 0), min(x + 2, w)


@numba.njit(cache=True, nogil=True)
def nb_source_pass(diff, has_diff, bkg, mask, ly, lx, expected, visit):
    """Counts (``SRC_*`` rows) and digit sums (one row per box) of the
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
                counts[SRC_NPIX, i] += 1
                if y == ly[i] and x == lx[i]:
                    counts[SRC_EXPECT, i] = expected[i]
                    counts[SRC_CMASK, i] = mask[y, x]
                counts[SRC_NMASK, i] += mask[y, x]
                counts[SRC_FRES, i] += math.isfinite(d)
                counts[SRC_FBKG, i] += math.isfinite(b)
                values[m, 0], values[m, 1], owner[m] = d, b, i
                m += 1
                for f in range(2):
                    q = split_bits(values[m - 1, f])[0]
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
        nb_add_digits(acc_d, owner[j], 0, values[j, 0], q_lo[0])
        nb_add_digits(acc_b, owner[j], 0, values[j, 1], q_lo[1])
    return counts, q_lo, limbs_d.T, limbs_b.T

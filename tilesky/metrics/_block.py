"""The metric state of one chunk: each part of it from one compiled pass.

:func:`block_state` turns a chunk of the inputs (and the boxes of the sources
it holds part of) into a :class:`~._states.MetricsState`. Blocks and boxes
lying wholly in the chunk are finished here; the others are left pending in
keyed tables for the merge. ``scale_state``, ``bias_state`` and
``source_state`` are looked up when called, so the tests can swap in the
slow references of ``tests/_reference_metrics.py``.
"""

from __future__ import annotations

import itertools
import math

import numpy as np

from tilesky.kernels._noise import moment_state
from tilesky.metrics._exact import (
    ExactSums,
    digit_sums,
    moment_state_of,
    native_float,
    nb_digit_range,
    states_of_digits,
    zero_sums,
)
from tilesky.metrics._passes import (
    SRC_NPIX,
    nb_bias_pass,
    nb_extremes,
    nb_scale_pass,
    nb_source_pass,
)
from tilesky.metrics._states import (
    BiasState,
    MetricsState,
    ScaleState,
    SourceState,
    Spec,
    TruthState,
)
from tilesky.metrics._table import KeyedTable, axis_blocks

__all__ = ["bias_state", "block_state", "scale_state", "source_state", "truth_state"]


def truth_state(diff, origin, shape, edge) -> TruthState:
    """Truth state of one chunk of ``diff = background - truth``."""
    (y0, x0), (ny, nx) = origin, shape
    h, w = diff.shape
    inner = diff[
        max(edge - y0, 0) : max(min(ny - edge - y0, h), 0),
        max(edge - x0, 0) : max(min(nx - edge - x0, w), 0),
    ]

    def extremes(v):
        v = v[np.isfinite(v)]
        return (float(v.max()), float(v.min())) if v.size else (-math.inf, math.inf)

    found = nb_extremes(
        diff,
        max(edge - y0, 0),
        min(ny - edge - y0, h),
        max(edge - x0, 0),
        min(nx - edge - x0, w),
    )
    mx, mn, mxi, mni = (float(v) for v in found)
    # A zero extreme may be +0.0 or -0.0 by the order of comparison: numpy's.
    if mx == 0.0 or mn == 0.0:
        mx, mn = extremes(diff)
    if mxi == 0.0 or mni == 0.0:
        mxi, mni = extremes(inner)
    # The whole image is the interior plus four edge strips: exact states
    # add up, and the strips are small.
    ya, yb = max(edge - y0, 0), max(min(ny - edge - y0, h), 0)
    xa, xb = max(edge - x0, 0), max(min(nx - edge - x0, w), 0)
    inside = moment_state_of(inner)
    if 2 * inner.size >= diff.size:
        strips = (diff[:ya], diff[yb:], diff[ya:yb, :xa], diff[ya:yb, xb:])
        whole = sum((moment_state_of(v) for v in strips if v.size), inside)
    else:
        whole = moment_state_of(diff)
    return TruthState(whole, inside, mx, mn, mxi, mni)


# Empty block lists (indices, edges, whole): no widths still types the kernel.
_NONE = (np.zeros(0, np.int64),) * 3 + (np.zeros(0, bool),)


def _joined(parts: list[tuple]) -> tuple[np.ndarray, ...]:
    """:func:`axis_blocks` lists of all widths, end to end."""
    return tuple(
        np.concatenate([empty, *(p[j] for p in parts)]).astype(empty.dtype)
        for j, empty in enumerate(_NONE)
    )


def _digit_window(fields) -> tuple[np.ndarray, np.ndarray]:
    """Lowest digit position and number of positions of each field's values."""
    q0, n_pos = np.zeros(2, np.int64), np.zeros(2, np.int64)
    for f, values in enumerate(fields):
        qmin, qmax = nb_digit_range(values)
        if qmax >= 0:
            q0[f], n_pos[f] = qmin, qmax + 3 - qmin
    return q0, n_pos


def _scale_grid(origin, chunk_shape, spec: Spec):
    """The blocks of every width meeting the chunk, as :func:`nb_scale_pass`
    reads them: ``grid`` rows, the row-range ends per width, and the joined
    row and column block lists."""
    (y0, x0), (ny, nx), (h, w) = origin, spec.shape, chunk_shape
    rows = [axis_blocks(y0, y0 + h, ny, b, border=True) for b in spec.widths]
    cols = [axis_blocks(x0, x0 + w, nx, b, border=True) for b in spec.widths]
    r_end = np.cumsum([0] + [r[0].size for r in rows])
    c_end = np.cumsum([0] + [c[0].size for c in cols])
    grid = np.array(
        [spec.widths, r_end[:-1], r_end[1:], c_end[:-1], c_end[1:]], dtype=np.int64
    ).T.reshape(-1, 5)
    return grid, r_end, _joined(rows), _joined(cols)


def _pending_tables(
    pend, pend_counts, pend_rc, r_end, iy, ix, q0, n_pos, has_perfect, spec
):
    """The blocks :func:`nb_scale_pass` left pending, one table per width."""
    # Pending blocks come out in the order their last row is read: sorted by
    # width (stably), they are in key order within each width.
    g_of = np.searchsorted(r_end[1:], pend_rc[0], side="right")
    order = np.argsort(g_of, kind="stable")
    pend, pend_counts, pend_rc = (a[:, order] for a in (pend, pend_counts, pend_rc))
    bounds = np.searchsorted(g_of[order], np.arange(len(spec.widths) + 1))
    n_r = int(n_pos[0])
    pending = []
    for k, (lo, hi) in enumerate(itertools.pairwise(bounds.tolist())):
        n_bx = -(-spec.shape[1] // spec.widths[k])
        keys = iy[pend_rc[0, lo:hi]] * n_bx + ix[pend_rc[1, lo:hi]]
        sums = [digit_sums(pend[:n_r, lo:hi], int(q0[0]), n_r)]
        if has_perfect:
            sums.append(digit_sums(pend[n_r:, lo:hi], int(q0[1]), int(n_pos[1])))
        pending.append(KeyedTable(keys, tuple(sums), pend_counts[:, lo:hi]))
    return tuple(pending)


def scale_state(resid, perfect, mask, origin, spec: Spec) -> ScaleState:
    """Scale state of one chunk: blocks wholly inside it are finished at once
    (:func:`nb_scale_pass`), the others wait in ``pending``."""
    resid = np.ascontiguousarray(resid, dtype=np.float64)
    mask = np.ascontiguousarray(mask, dtype=bool)
    has_perfect = perfect is not None
    if has_perfect:
        perfect = np.ascontiguousarray(perfect, dtype=np.float64)
    q0, n_pos = _digit_window((resid, perfect) if has_perfect else (resid,))
    grid, r_end, (iy, ra, rb, cy), (ix, ca, cb, cx) = _scale_grid(
        origin, resid.shape, spec
    )
    count, acc, pend, pend_counts, pend_rc = nb_scale_pass(
        resid,
        perfect if has_perfect else np.zeros((1, 1)),
        has_perfect,
        mask,
        q0,
        n_pos,
        grid,
        ra,
        rb,
        cy,
        ca,
        cb,
        cx,
    )
    n_field = 2 if has_perfect else 1
    states = states_of_digits(count, acc)
    return ScaleState(
        spec.shape,
        spec.widths,
        moment_state_of(resid, drop=mask),
        tuple(states[0::n_field]),
        tuple(states[1::n_field]) if has_perfect else None,
        _pending_tables(
            pend, pend_counts, pend_rc, r_end, iy, ix, q0, n_pos, has_perfect, spec
        ),
    ).settle()


def bias_state(bkg, mask, origin, spec: Spec) -> BiasState:
    """Bias state of one chunk: per-block sums in one pass (:func:`nb_bias_pass`)."""
    (y0, x0), (ny, nx), b = origin, spec.shape, spec.bias_box_size
    h, w = bkg.shape
    iy, ra, rb, _ = axis_blocks(y0, y0 + h, ny, b, border=False)
    ix, ca, cb, _ = axis_blocks(x0, x0 + w, nx, b, border=False)
    mask = np.ascontiguousarray(mask, dtype=bool)
    native = native_float(bkg)
    q0, acc, counts = nb_bias_pass(
        native,
        mask,
        np.arange(y0, y0 + h, dtype=np.int64) // b - (y0 // b),
        np.arange(x0, x0 + w, dtype=np.int64) // b - (x0 // b),
        iy.size,
        ix.size,
    )
    sums = tuple(
        digit_sums(np.ascontiguousarray(acc[:, f].T), int(q0), acc.shape[2])
        for f in range(2)
    )
    r, c = np.divmod(np.arange(iy.size * ix.size), ix.size)
    table = KeyedTable(
        iy[r] * -(-nx // b) + ix[c],
        sums,
        np.stack([(rb - ra)[r] * (cb - ca)[c], counts[:, 0], counts[:, 1]]),
    )
    empty_i, empty_f = np.zeros(0, dtype=np.int64), np.zeros(0)
    return BiasState(
        spec.shape,
        b,
        # Non-finite values are left out by moment_state itself.
        moment_state(native, mask=~mask),
        moment_state(native, mask=mask),
        empty_i,
        empty_i,
        empty_i,
        empty_f,
        empty_f,
        table,
    ).settle()


def source_state(diff, bkg, mask, origin, spec: Spec, src) -> SourceState:
    """Source state of one chunk: the part of each box in it, one pass."""
    (y0, x0), (ny, nx) = origin, spec.shape
    keys, yc, xc = src
    order = np.argsort(keys, kind="stable")
    keys, yc, xc = keys[order], yc[order], xc[order]
    box_h = np.minimum(yc + 1, ny - 1) - np.maximum(yc - 1, 0) + 1
    box_w = np.minimum(xc + 1, nx - 1) - np.maximum(xc - 1, 0) + 1
    has_diff = diff is not None
    counts, q0, limbs_d, limbs_b = nb_source_pass(
        np.ascontiguousarray(diff, dtype=np.float64) if has_diff else np.zeros((1, 1)),
        has_diff,
        native_float(bkg),
        np.ascontiguousarray(mask, dtype=bool),
        (yc - y0).astype(np.int64),
        (xc - x0).astype(np.int64),
        (box_h * box_w).astype(np.int64),
        np.lexsort((xc, yc)),
    )
    # Boxes with no pixel here are not part of this chunk's table.
    seen = counts[SRC_NPIX] > 0
    sums = tuple(
        ExactSums(int(q), limbs[:, seen]) if limbs.shape[0] else zero_sums(seen.sum())
        for q, limbs in zip(q0.tolist(), (limbs_d, limbs_b), strict=True)
    )
    return SourceState.of_table(
        spec.shape, KeyedTable(keys[seen], sums, counts[:, seen])
    )


def block_state(
    spec: Spec, origin, scene, background, mask, truth=None, sky=None, src=None
) -> MetricsState:
    """The metric state of one block whose pixel (0, 0) is global ``origin``."""
    # Compiled passes read C-contiguous float32/float64 arrays: one copy of a
    # strided chunk here rather than one per pass.
    bkg = native_float(background)
    if mask is None:
        mask = np.zeros(bkg.shape, bool)
    mask = np.ascontiguousarray(mask, dtype=bool)

    def minus(a, b):
        # float64(a) - float64(b) in one pass, without float64 copies.
        return np.subtract(native_float(a, contiguous=False), b, dtype=np.float64)

    diff = perfect = None
    if truth is not None:
        t = native_float(truth, contiguous=False)
        diff = minus(bkg, t)
        if sky is not None:
            perfect = minus(sky, t)
    origin = (int(origin[0]), int(origin[1]))
    tstate = (
        truth_state(diff, origin, spec.shape, spec.edge) if spec.has_truth else None
    )
    sstate = None
    if spec.has_sources:
        if src is None:
            src = (np.zeros(0, dtype=np.int64),) * 3
        sstate = source_state(diff, bkg, mask, origin, spec, src)
    return MetricsState(
        tstate,
        scale_state(minus(scene, bkg), perfect, mask, origin, spec),
        bias_state(bkg, mask, origin, spec),
        sstate,
    )

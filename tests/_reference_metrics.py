"""Slow references of the metrics' one-pass kernels, for the tests and benchmark.

The former per-chunk path of ``tilesky.metrics``: one integral image per
digit position (:func:`exact_rects`), block by block, and the source boxes
pixel by pixel through a keyed table. ``*_state_reference`` take the
arguments of ``scale_state``, ``bias_state`` and ``source_state`` in
``tilesky.metrics._block`` and give the same states, integer for integer;
:func:`swapped_in` makes ``block_state`` use them.
"""

from __future__ import annotations

import contextlib

import numba
import numpy as np

from tilesky.kernels._noise import MomentState, split_digits
from tilesky.metrics import _block
from tilesky.metrics._exact import (
    ExactSums,
    moment_state_of,
    split_bits,
    zero_sums,
)
from tilesky.metrics._passes import (
    SRC_CMASK,
    SRC_EXPECT,
    SRC_FBKG,
    SRC_FRES,
    SRC_NMASK,
    SRC_NPIX,
)
from tilesky.metrics._states import BiasState, ScaleState, SourceState, Spec
from tilesky.metrics._table import KeyedTable, axis_blocks

# ----------------------------------------------------------- exact sums


@numba.njit(cache=True, nogil=True)
def _keep(select, mode, i, j):
    # mode 0: every pixel; 1: where select; 2: where not select.
    return mode == 0 or select[i, j] == (mode == 1)


@numba.njit(cache=True, nogil=True)
def nb_limb_range(values, select, mode):
    """Lowest and highest digit position of the selected values, by scanning
    every value's :func:`split_digits` (the reference of ``nb_digit_range``)."""
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
def nb_digits(values):
    """Digit position and digits of every value, by :func:`split_bits`."""
    q = np.empty(values.size, np.int64)
    d = np.empty((3, values.size), np.int64)
    for i in range(values.size):
        q[i], d[0, i], d[1, i], d[2, i] = split_bits(values[i])
    return q, d


def exact_values(values: np.ndarray) -> ExactSums:
    """One column per value."""
    q, d = nb_digits(np.ascontiguousarray(np.ravel(values), dtype=np.float64))
    nz = q >= 0
    if not nz.any():
        return zero_sums(q.size)
    qmin = int(q[nz].min())
    limbs = np.zeros((int(q[nz].max()) + 3 - qmin, q.size), dtype=np.int64)
    cols = np.flatnonzero(nz)
    row = q[nz] - qmin
    for k in range(3):
        limbs[row + k, cols] = d[k, nz]
    return ExactSums(qmin, limbs)


def integral_image(values: np.ndarray) -> np.ndarray:
    ny, nx = values.shape
    out = np.zeros((ny + 1, nx + 1), dtype=np.int64)
    np.cumsum(values, axis=0, dtype=np.int64, out=out[1:, 1:])
    np.cumsum(out[1:, 1:], axis=1, out=out[1:, 1:])
    return out


def rect_sum(integral, ra, rb, ca, cb):
    return integral[rb, cb] - integral[ra, cb] - integral[rb, ca] + integral[ra, ca]


def exact_rects(
    values: np.ndarray, rects: list[tuple], *, keep=None, drop=None
) -> list[ExactSums]:
    """Exact sums of ``values`` over rectangles ``(ra, rb, ca, cb)`` (local, half-open).

    Only pixels where ``keep`` (or not ``drop``) count. One integral image per
    digit position: a rectangle costs four look-ups whatever its size. The
    former path of the block sums, kept as the reference of the one-pass
    kernels (the ``*_state_reference`` functions below).
    """
    v = np.ascontiguousarray(values, dtype=np.float64)
    if keep is not None:
        select, mode = np.ascontiguousarray(keep, dtype=bool), 1
    elif drop is not None:
        select, mode = np.ascontiguousarray(drop, dtype=bool), 2
    else:
        select, mode = np.zeros((1, 1), dtype=bool), 0
    qmin, qmax = nb_limb_range(v, select, mode)
    if qmax < 0:
        return [zero_sums(r[0].size) for r in rects]
    out = [np.zeros((qmax + 3 - qmin, r[0].size), dtype=np.int64) for r in rects]
    integral = np.zeros((v.shape[0] + 1, v.shape[1] + 1), dtype=np.int64)
    rects = [tuple(np.ascontiguousarray(e, dtype=np.int64) for e in r) for r in rects]
    for j in range(qmin, qmax + 3):
        _nb_limb_integral(v, select, mode, j, integral)
        for limbs, rect in zip(out, rects, strict=True):
            _nb_rects(integral, *rect, limbs[j - qmin])
    return [ExactSums(qmin, limbs) for limbs in out]


# ------------------------------------------------------- per-chunk states


def scale_state_reference(resid, perfect, mask, origin, spec: Spec) -> ScaleState:
    """``_block.scale_state`` through one integral image per digit position
    (:func:`exact_rects`), block by block: the former path."""
    (y0, x0), (ny, nx) = origin, spec.shape
    h, w = resid.shape
    bad = mask | ~np.isfinite(resid)
    if perfect is not None:
        bad |= ~np.isfinite(perfect)
    ibad = integral_image(bad.astype(np.int32))
    rects, meta = [], []
    for width in spec.widths:
        iy, ra, rb, cy = axis_blocks(y0, y0 + h, ny, width, border=True)
        ix, ca, cb, cx = axis_blocks(x0, x0 + w, nx, width, border=True)
        nbad = rect_sum(ibad, ra[:, None], rb[:, None], ca[None, :], cb[None, :])
        # A whole block with a bad pixel can never count: drop it here.
        keep = ~(cy[:, None] & cx[None, :]) | (nbad == 0)
        r, c = np.nonzero(keep)
        keys = iy[r] * -(-nx // width) + ix[c]
        npix = (rb - ra)[r] * (cb - ca)[c]
        rects.append((ra[r], rb[r], ca[c], cb[c]))
        meta.append((keys, np.stack([npix, nbad[r, c]])))
    sums = [exact_rects(resid, rects)]
    if perfect is not None:
        sums.append(exact_rects(perfect, rects))
    pending = tuple(
        KeyedTable(keys, tuple(s[k] for s in sums), counts)
        for k, (keys, counts) in enumerate(meta)
    )
    n = len(spec.widths)
    return ScaleState(
        spec.shape,
        spec.widths,
        moment_state_of(resid, drop=mask),
        (MomentState(),) * n,
        (MomentState(),) * n if perfect is not None else None,
        pending,
    ).settle()


def bias_state_reference(bkg, mask, origin, spec: Spec) -> BiasState:
    """``_block.bias_state`` through :func:`exact_rects`: the former path."""
    (y0, x0), (ny, nx), b = origin, spec.shape, spec.bias_box_size
    h, w = bkg.shape
    covered = np.isfinite(bkg)
    on_m, on_u = covered & mask, covered & ~mask
    iy, ra, rb, _ = axis_blocks(y0, y0 + h, ny, b, border=False)
    ix, ca, cb, _ = axis_blocks(x0, x0 + w, nx, b, border=False)
    r, c = (g.ravel() for g in np.meshgrid(np.arange(iy.size), np.arange(ix.size)))
    rect = (ra[r], rb[r], ca[c], cb[c])
    counts = np.stack(
        [
            (rb - ra)[r] * (cb - ca)[c],
            rect_sum(integral_image(on_m.astype(np.int32)), *rect),
            rect_sum(integral_image(on_u.astype(np.int32)), *rect),
        ]
    )
    (sum_m,) = exact_rects(bkg, [rect], keep=on_m)
    (sum_u,) = exact_rects(bkg, [rect], keep=on_u)
    keys = iy[r] * -(-nx // b) + ix[c]
    empty_i, empty_f = np.zeros(0, dtype=np.int64), np.zeros(0)
    return BiasState(
        spec.shape,
        b,
        moment_state_of(bkg, keep=on_m),
        moment_state_of(bkg, keep=on_u),
        empty_i,
        empty_i,
        empty_i,
        empty_f,
        empty_f,
        KeyedTable(keys, (sum_m, sum_u), counts),
    ).settle()


def source_state_reference(diff, bkg, mask, origin, spec: Spec, src) -> SourceState:
    """``_block.source_state`` pixel by pixel through a keyed table: the former
    path."""
    (y0, x0), (ny, nx) = origin, spec.shape
    h, w = bkg.shape
    keys, yc, xc = src
    parts = []
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            ly, lx = yc + dy - y0, xc + dx - x0
            inside = (ly >= 0) & (ly < h) & (lx >= 0) & (lx < w)
            parts.append((keys[inside], ly[inside], lx[inside], dy == dx == 0))
    k = np.concatenate([p[0] for p in parts])
    ly = np.concatenate([p[1] for p in parts])
    lx = np.concatenate([p[2] for p in parts])
    centre = np.concatenate([np.full(p[0].size, p[3]) for p in parts])
    b = bkg[ly, lx]
    m = mask[ly, lx]
    d = diff[ly, lx] if diff is not None else np.full(k.size, np.nan)
    box_h = np.minimum(yc + 1, ny - 1) - np.maximum(yc - 1, 0) + 1
    box_w = np.minimum(xc + 1, nx - 1) - np.maximum(xc - 1, 0) + 1
    order = np.argsort(keys)
    at = np.searchsorted(keys[order], k[centre])
    expected = (box_h * box_w)[order][at]
    counts = np.zeros((6, k.size), dtype=np.int64)
    counts[SRC_NPIX] = 1
    counts[SRC_EXPECT, centre] = expected
    counts[SRC_CMASK] = centre & m
    counts[SRC_NMASK] = m
    counts[SRC_FRES] = np.isfinite(d)
    counts[SRC_FBKG] = np.isfinite(b)
    raw = KeyedTable(k, (exact_values(d), exact_values(b)), counts)
    return SourceState.of_table(spec.shape, KeyedTable.combine([raw]))


REFERENCES = {
    "scale_state": scale_state_reference,
    "bias_state": bias_state_reference,
    "source_state": source_state_reference,
}


@contextlib.contextmanager
def swapped_in():
    """Build the per-chunk states with the references while in the block."""
    saved = {name: getattr(_block, name) for name in REFERENCES}
    try:
        for name, ref in REFERENCES.items():
            setattr(_block, name, ref)
        yield
    finally:
        for name, fn in saved.items():
            setattr(_block, name, fn)

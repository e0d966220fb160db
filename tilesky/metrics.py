"""Quality metrics of a background estimate, as global reductions of small states.

The checks at the end of the reference notebook ("Check for bias", "Testing
for bias on real data", "RMS of the residual background as a function of
scale") become metrics that run unchanged on a small numpy image and on a
mosaic of 10**9 pixels: each dask block is reduced to a small mergeable state
(:class:`MetricsState`), the states are merged in a tree, and the merged state
is summarised. The image is never gathered.

The metrics are the same bits for any chunking. Block grids are global
(anchored at pixel (0, 0) of the image). Sums are exact: a float64 value is
split into signed base-2**26 digits at fixed global positions, and digits are
added as integers (:class:`ExactSums`), so a block that straddles chunks gets
the same sum from its pieces as from one piece. Per-block means are then a
deterministic function of the exact sum, and sums over blocks or pixels go
through the exact :class:`~tilesky.kernels._noise.MomentState`.

Each chunk is read by a few compiled passes: the block sums of every width
come from one streamed pass that splits each pixel once and keeps a ring of
integral-image rows (one plane per digit position); blocks lying wholly in
the chunk become means and moment digits at once, and only blocks cut by
chunk borders travel in the state. The former per-position integral images
are kept as ``_*_state_reference`` for the tests and the benchmark. The
compiled passes and the exact-sum helpers live in
:mod:`tilesky.kernels._metrics`; this module builds the states, merges them
and summarises them.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from fractions import Fraction
from typing import Any

import numpy as np

from tilesky.kernels._metrics import (
    _SRC_CMASK,
    _SRC_EXPECT,
    _SRC_FBKG,
    _SRC_FRES,
    _SRC_NMASK,
    _SRC_NPIX,
    ExactSums,
    _digits,
    _exact_concat,
    _exact_float,
    _exact_rects,
    _exact_values,
    _grouped_moment_states,
    _integral,
    _moment_state,
    _native_float,
    _nb_bias_pass,
    _nb_digit_range,
    _nb_extremes,
    _nb_scale_pass,
    _nb_source_pass,
    _rect,
    _states_of_digits,
    _zero_sums,
)
from tilesky.kernels._noise import (
    UNIT_EXP,
    MomentState,
    moment_state,
    moments,
)

__all__ = [
    "BiasState",
    "ExactSums",
    "MetricsState",
    "ScaleState",
    "SourceState",
    "TruthState",
    "compute_metrics",
    "line_fit",
]

# Defined with its kernels; documented and pickled as part of this module.
ExactSums.__module__ = __name__

log = logging.getLogger("tilesky")

_FANIN = 8


# --------------------------------------------------------------------------
# Exact keyed sums
# --------------------------------------------------------------------------


def _run_starts(sorted_keys: np.ndarray) -> np.ndarray:
    """Indices where a new key starts in a sorted array."""
    new = np.ones(sorted_keys.size, dtype=bool)
    new[1:] = sorted_keys[1:] != sorted_keys[:-1]
    return np.flatnonzero(new)


@dataclass(frozen=True, eq=False)
class _Table:
    """Exact sums and integer counts keyed by a global index (sorted, unique)."""

    keys: np.ndarray
    sums: tuple[ExactSums, ...]
    counts: np.ndarray

    @classmethod
    def empty(cls, n_fields: int, n_counts: int) -> _Table:
        return cls(
            np.zeros(0, dtype=np.int64),
            tuple(_zero_sums(0) for _ in range(n_fields)),
            np.zeros((n_counts, 0), dtype=np.int64),
        )

    def take(self, sel: np.ndarray) -> _Table:
        return _Table(
            self.keys[sel],
            tuple(ExactSums(s.q0, s.limbs[:, sel]) for s in self.sums),
            self.counts[:, sel],
        )

    @classmethod
    def combine(cls, tables: Iterable[_Table]) -> _Table:
        """Concatenate and add up entries with equal keys (integer, exact)."""
        tables = list(tables)
        keys = np.concatenate([t.keys for t in tables])
        n_fields = len(tables[0].sums)
        if keys.size == 0:
            return cls.empty(n_fields, tables[0].counts.shape[0])
        order = np.argsort(keys, kind="stable")
        sk = keys[order]
        starts = _run_starts(sk)
        sums = []
        for f in range(n_fields):
            cat = _exact_concat([t.sums[f] for t in tables])
            limbs = cat.limbs[:, order]
            if limbs.shape[0]:
                limbs = np.add.reduceat(limbs, starts, axis=1)
            else:
                limbs = np.zeros((0, starts.size), dtype=np.int64)
            sums.append(ExactSums(cat.q0, limbs))
        counts = np.concatenate([t.counts for t in tables], axis=1)[:, order]
        counts = np.add.reduceat(counts, starts, axis=1)
        return cls(sk[starts], tuple(sums), counts)


def _axis_blocks(lo: int, hi: int, n: int, w: int, *, border: bool):
    """Global blocks of width ``w`` meeting ``[lo, hi)`` on an axis of length ``n``.

    Returns global block indices, local half-open edges and whether each block
    lies wholly in ``[lo, hi)``. With ``border``, only whole blocks clear of the
    notebook's border mask (pixels ``< w/2`` or ``> n - w/2``) are kept.
    """
    idx = np.arange(lo // w, (hi - 1) // w + 1, dtype=np.int64) if hi > lo else []
    idx = np.asarray(idx, dtype=np.int64)
    start = idx * w
    stop = np.minimum(start + w, n)
    if border:
        keep = (2 * start >= w) & (2 * (start + w - 1) <= 2 * n - w)
        idx, start, stop = idx[keep], start[keep], stop[keep]
    a = np.maximum(start, lo) - lo
    b = np.minimum(stop, hi) - lo
    return idx, a, b, (start >= lo) & (stop <= hi)


def _block_extent(keys: np.ndarray, shape, w: int) -> np.ndarray:
    """In-image pixel count of global ``w``-blocks given by key."""
    nbx = -(-shape[1] // w)
    iy, ix = np.divmod(keys, nbx)
    hy = np.minimum((iy + 1) * w, shape[0]) - iy * w
    hx = np.minimum((ix + 1) * w, shape[1]) - ix * w
    return hy * hx


# --------------------------------------------------------------------------
# States
# --------------------------------------------------------------------------


def _check_same(a, b, names: tuple[str, ...]) -> None:
    for name in names:
        if getattr(a, name) != getattr(b, name):
            msg = (
                f"cannot merge metric states with different {name}: "
                f"{getattr(a, name)!r} != {getattr(b, name)!r}"
            )
            raise ValueError(msg)


@dataclass(frozen=True, eq=False)
class TruthState:
    """``background - truth`` over covered pixels, whole image and interior."""

    all: MomentState = field(default_factory=MomentState)
    interior: MomentState = field(default_factory=MomentState)
    max_all: float = -math.inf
    min_all: float = math.inf
    max_interior: float = -math.inf
    min_interior: float = math.inf

    def merge(self, other: TruthState) -> TruthState:
        return TruthState(
            self.all + other.all,
            self.interior + other.interior,
            max(self.max_all, other.max_all),
            min(self.min_all, other.min_all),
            max(self.max_interior, other.max_interior),
            min(self.min_interior, other.min_interior),
        )


@dataclass(frozen=True, eq=False)
class ScaleState:
    """Block means of the residual per width: exact moments plus pending blocks.

    ``pending[k]`` holds blocks of width ``widths[k]`` seen only in part (on
    chunk borders); fields (residual, perfect), counts (pixels, bad pixels).
    """

    shape: tuple[int, int]
    widths: tuple[int, ...]
    pixels: MomentState
    resid: tuple[MomentState, ...]
    perfect: tuple[MomentState, ...] | None
    pending: tuple[_Table, ...]

    def merge(self, other: ScaleState) -> ScaleState:
        _check_same(self, other, ("shape", "widths"))
        perfect = None
        if self.perfect is not None:
            perfect = tuple(
                a + b for a, b in zip(self.perfect, other.perfect, strict=True)
            )
        return ScaleState(
            self.shape,
            self.widths,
            self.pixels + other.pixels,
            tuple(a + b for a, b in zip(self.resid, other.resid, strict=True)),
            perfect,
            tuple(
                _Table.combine(p) for p in zip(self.pending, other.pending, strict=True)
            ),
        ).settle()

    def settle(self) -> ScaleState:
        """Fold the blocks that are now complete into the moments."""
        pending, done, group = list(self.pending), [], []
        for k, w in enumerate(self.widths):
            table = pending[k]
            finished = table.counts[0] == w * w
            if not finished.any():
                continue
            fin = table.take(finished)
            done.append(fin.take(fin.counts[1] == 0))
            group.append(np.full(done[-1].keys.size, k, dtype=np.int64))
            pending[k] = table.take(~finished)
        if not done:
            return self
        # All widths at once: one float conversion and one moment pass a field.
        group = np.concatenate(group)
        area = np.array([w * w for w in self.widths], dtype=np.float64)[group]
        fields = []
        for f in range(len(done[0].sums)):
            means = _exact_float(_exact_concat([t.sums[f] for t in done])) / area
            states = _grouped_moment_states(means, group, len(self.widths))
            old = self.resid if f == 0 else self.perfect
            fields.append(tuple(a + b for a, b in zip(old, states, strict=True)))
        return replace(
            self,
            resid=fields[0],
            perfect=fields[1] if self.perfect is not None else None,
            pending=tuple(pending),
        )


@dataclass(frozen=True, eq=False)
class BiasState:
    """Background under masked vs unmasked pixels: global moments and per block.

    Finished ``box_size`` blocks are kept as small sorted arrays (one row per
    block with both masked and unmasked covered pixels); ``pending`` holds
    blocks seen in part: fields (masked sum, unmasked sum), counts (pixels,
    masked, unmasked).
    """

    shape: tuple[int, int]
    box_size: int
    masked: MomentState
    unmasked: MomentState
    keys: np.ndarray
    n_masked: np.ndarray
    n_unmasked: np.ndarray
    mean_masked: np.ndarray
    mean_unmasked: np.ndarray
    pending: _Table

    def merge(self, other: BiasState) -> BiasState:
        _check_same(self, other, ("shape", "box_size"))
        cat = [
            np.concatenate([getattr(self, n), getattr(other, n)])
            for n in ("keys", "n_masked", "n_unmasked", "mean_masked", "mean_unmasked")
        ]
        order = np.argsort(cat[0], kind="stable")
        return BiasState(
            self.shape,
            self.box_size,
            self.masked + other.masked,
            self.unmasked + other.unmasked,
            *(c[order] for c in cat),
            _Table.combine([self.pending, other.pending]),
        ).settle()

    def settle(self) -> BiasState:
        """Move the blocks that are now complete to the per-block arrays."""
        t = self.pending
        done = t.counts[0] == _block_extent(t.keys, self.shape, self.box_size)
        if not done.any():
            return self
        fin = t.take(done)
        both = (fin.counts[1] > 0) & (fin.counts[2] > 0)
        fin = fin.take(both)
        cat = [
            np.concatenate([self.keys, fin.keys]),
            np.concatenate([self.n_masked, fin.counts[1]]),
            np.concatenate([self.n_unmasked, fin.counts[2]]),
            np.concatenate(
                [self.mean_masked, _exact_float(fin.sums[0]) / fin.counts[1]]
            ),
            np.concatenate(
                [self.mean_unmasked, _exact_float(fin.sums[1]) / fin.counts[2]]
            ),
        ]
        order = np.argsort(cat[0], kind="stable")
        return replace(
            self,
            keys=cat[0][order],
            n_masked=cat[1][order],
            n_unmasked=cat[2][order],
            mean_masked=cat[3][order],
            mean_unmasked=cat[4][order],
            pending=t.take(~done),
        )


@dataclass(frozen=True, eq=False)
class SourceState:
    """Mean residual and background in the 3x3 box of each source / random point.

    Keys are catalogue indices, then ``n_sources + i`` for random point ``i``.
    Finished boxes are kept as sorted arrays; ``pending`` holds boxes that
    straddle chunks and have not been seen whole yet.
    """

    shape: tuple[int, int]
    keys: np.ndarray
    resid: np.ndarray
    bkg: np.ndarray
    centre_masked: np.ndarray
    n_masked_box: np.ndarray
    pending: _Table

    def merge(self, other: SourceState) -> SourceState:
        _check_same(self, other, ("shape",))
        cat = [
            np.concatenate([getattr(self, n), getattr(other, n)])
            for n in ("keys", "resid", "bkg", "centre_masked", "n_masked_box")
        ]
        order = np.argsort(cat[0], kind="stable")
        return SourceState(
            self.shape,
            *(c[order] for c in cat),
            _Table.combine([self.pending, other.pending]),
        ).settle()

    @classmethod
    def of_table(cls, shape: tuple[int, int], table: _Table) -> SourceState:
        """The state of one chunk: every box pending in ``table``, then settled."""
        empty_i = np.zeros(0, dtype=np.int64)
        empty_f = np.zeros(0)
        return cls(
            shape, empty_i, empty_f, empty_f, np.zeros(0, dtype=bool), empty_i, table
        ).settle()

    def settle(self) -> SourceState:
        """Move the boxes that are now complete to the per-source arrays."""
        t = self.pending
        c = t.counts
        done = (c[_SRC_NPIX] == c[_SRC_EXPECT]) & (c[_SRC_EXPECT] > 0)
        if not done.any():
            return self
        fin = t.take(done)
        c = fin.counts
        with np.errstate(invalid="ignore", divide="ignore"):
            resid = np.where(
                c[_SRC_FRES] > 0, _exact_float(fin.sums[0]) / c[_SRC_FRES], np.nan
            )
            bkg = np.where(
                c[_SRC_FBKG] > 0, _exact_float(fin.sums[1]) / c[_SRC_FBKG], np.nan
            )
        cat = [
            np.concatenate([self.keys, fin.keys]),
            np.concatenate([self.resid, resid]),
            np.concatenate([self.bkg, bkg]),
            np.concatenate([self.centre_masked, c[_SRC_CMASK] > 0]),
            np.concatenate([self.n_masked_box, c[_SRC_NMASK]]),
        ]
        order = np.argsort(cat[0], kind="stable")
        return replace(
            self,
            keys=cat[0][order],
            resid=cat[1][order],
            bkg=cat[2][order],
            centre_masked=cat[3][order],
            n_masked_box=cat[4][order],
            pending=t.take(~done),
        )


@dataclass(frozen=True, eq=False)
class MetricsState:
    """All metric states of one block (or of merged blocks).

    ``merge`` is associative and commutative with bit-identical results: every
    sum inside is an integer, and arrays are kept sorted by global key.
    """

    truth: TruthState | None
    scale: ScaleState
    bias: BiasState
    sources: SourceState | None

    def merge(self, other: MetricsState) -> MetricsState:
        return MetricsState(
            None if self.truth is None else self.truth.merge(other.truth),
            self.scale.merge(other.scale),
            self.bias.merge(other.bias),
            None if self.sources is None else self.sources.merge(other.sources),
        )


# --------------------------------------------------------------------------
# Per-block kernel
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class _Spec:
    shape: tuple[int, int]
    widths: tuple[int, ...]
    edge: int
    bias_box_size: int
    has_truth: bool
    has_sky: bool
    has_sources: bool


def _truth_state(diff, origin, shape, edge) -> TruthState:
    (y0, x0), (ny, nx) = origin, shape
    h, w = diff.shape
    inner = diff[
        max(edge - y0, 0) : max(min(ny - edge - y0, h), 0),
        max(edge - x0, 0) : max(min(nx - edge - x0, w), 0),
    ]

    def extremes(v):
        v = v[np.isfinite(v)]
        return (float(v.max()), float(v.min())) if v.size else (-math.inf, math.inf)

    found = _nb_extremes(
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
    inside = _moment_state(inner)
    if 2 * inner.size >= diff.size:
        strips = (diff[:ya], diff[yb:], diff[ya:yb, :xa], diff[ya:yb, xb:])
        whole = sum((_moment_state(v) for v in strips if v.size), inside)
    else:
        whole = _moment_state(diff)
    return TruthState(whole, inside, mx, mn, mxi, mni)


def _scale_state_reference(resid, perfect, mask, origin, spec: _Spec) -> ScaleState:
    """:func:`_scale_state` through one integral image per digit position
    (:func:`_exact_rects`), block by block: the former path, kept for the
    tests and the benchmark."""
    (y0, x0), (ny, nx) = origin, spec.shape
    h, w = resid.shape
    bad = mask | ~np.isfinite(resid)
    if perfect is not None:
        bad |= ~np.isfinite(perfect)
    ibad = _integral(bad.astype(np.int32))
    rects, meta = [], []
    for width in spec.widths:
        iy, ra, rb, cy = _axis_blocks(y0, y0 + h, ny, width, border=True)
        ix, ca, cb, cx = _axis_blocks(x0, x0 + w, nx, width, border=True)
        nbad = _rect(ibad, ra[:, None], rb[:, None], ca[None, :], cb[None, :])
        # A whole block with a bad pixel can never count: drop it here.
        keep = ~(cy[:, None] & cx[None, :]) | (nbad == 0)
        r, c = np.nonzero(keep)
        keys = iy[r] * -(-nx // width) + ix[c]
        npix = (rb - ra)[r] * (cb - ca)[c]
        rects.append((ra[r], rb[r], ca[c], cb[c]))
        meta.append((keys, np.stack([npix, nbad[r, c]])))
    sums = [_exact_rects(resid, rects)]
    if perfect is not None:
        sums.append(_exact_rects(perfect, rects))
    pending = tuple(
        _Table(keys, tuple(s[k] for s in sums), counts)
        for k, (keys, counts) in enumerate(meta)
    )
    n = len(spec.widths)
    return ScaleState(
        spec.shape,
        spec.widths,
        _moment_state(resid, drop=mask),
        (MomentState(),) * n,
        (MomentState(),) * n if perfect is not None else None,
        pending,
    ).settle()


def _bias_state_reference(bkg, mask, origin, spec: _Spec) -> BiasState:
    """:func:`_bias_state` through :func:`_exact_rects`: the former path."""
    (y0, x0), (ny, nx), b = origin, spec.shape, spec.bias_box_size
    h, w = bkg.shape
    covered = np.isfinite(bkg)
    on_m, on_u = covered & mask, covered & ~mask
    iy, ra, rb, _ = _axis_blocks(y0, y0 + h, ny, b, border=False)
    ix, ca, cb, _ = _axis_blocks(x0, x0 + w, nx, b, border=False)
    r, c = (g.ravel() for g in np.meshgrid(np.arange(iy.size), np.arange(ix.size)))
    rect = (ra[r], rb[r], ca[c], cb[c])
    counts = np.stack(
        [
            (rb - ra)[r] * (cb - ca)[c],
            _rect(_integral(on_m.astype(np.int32)), *rect),
            _rect(_integral(on_u.astype(np.int32)), *rect),
        ]
    )
    (sum_m,) = _exact_rects(bkg, [rect], keep=on_m)
    (sum_u,) = _exact_rects(bkg, [rect], keep=on_u)
    keys = iy[r] * -(-nx // b) + ix[c]
    empty_i, empty_f = np.zeros(0, dtype=np.int64), np.zeros(0)
    return BiasState(
        spec.shape,
        b,
        _moment_state(bkg, keep=on_m),
        _moment_state(bkg, keep=on_u),
        empty_i,
        empty_i,
        empty_i,
        empty_f,
        empty_f,
        _Table(keys, (sum_m, sum_u), counts),
    ).settle()


# Empty block lists (indices, edges, whole): no widths still types the kernel.
_NONE = (np.zeros(0, np.int64),) * 3 + (np.zeros(0, bool),)


def _joined(parts: list[tuple]) -> tuple[np.ndarray, ...]:
    """:func:`_axis_blocks` lists of all widths, end to end."""
    return tuple(
        np.concatenate([empty, *(p[j] for p in parts)]).astype(empty.dtype)
        for j, empty in enumerate(_NONE)
    )


def _scale_state(resid, perfect, mask, origin, spec: _Spec) -> ScaleState:
    """Scale state of one chunk: blocks wholly inside it are finished at once
    (:func:`_nb_scale_pass`), the others wait in ``pending``."""
    (y0, x0), (ny, nx) = origin, spec.shape
    h, w = resid.shape
    resid = np.ascontiguousarray(resid, dtype=np.float64)
    mask = np.ascontiguousarray(mask, dtype=bool)
    has_perfect = perfect is not None
    if has_perfect:
        perfect = np.ascontiguousarray(perfect, dtype=np.float64)
    q0, n_pos = np.zeros(2, np.int64), np.zeros(2, np.int64)
    for f, values in enumerate((resid, perfect) if has_perfect else (resid,)):
        qmin, qmax = _nb_digit_range(values)
        if qmax >= 0:
            q0[f], n_pos[f] = qmin, qmax + 3 - qmin
    rows = [_axis_blocks(y0, y0 + h, ny, b, border=True) for b in spec.widths]
    cols = [_axis_blocks(x0, x0 + w, nx, b, border=True) for b in spec.widths]
    r_end = np.cumsum([0] + [r[0].size for r in rows])
    c_end = np.cumsum([0] + [c[0].size for c in cols])
    grid = np.array(
        [spec.widths, r_end[:-1], r_end[1:], c_end[:-1], c_end[1:]], dtype=np.int64
    ).T.reshape(-1, 5)
    iy, ra, rb, cy = _joined(rows)
    ix, ca, cb, cx = _joined(cols)
    count, acc, pend, pend_counts, pend_rc = _nb_scale_pass(
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
    states = _states_of_digits(count, acc)
    # Pending blocks come out in the order their last row is read: sorted by
    # width (stably), they are in key order within each width.
    g_of = np.searchsorted(r_end[1:], pend_rc[0], side="right")
    order = np.argsort(g_of, kind="stable")
    pend, pend_counts, pend_rc = (a[:, order] for a in (pend, pend_counts, pend_rc))
    bounds = np.searchsorted(g_of[order], np.arange(len(spec.widths) + 1))
    n_r = int(n_pos[0])
    pending = []
    for k, (lo, hi) in enumerate(itertools.pairwise(bounds.tolist())):
        n_bx = -(-nx // spec.widths[k])
        keys = iy[pend_rc[0, lo:hi]] * n_bx + ix[pend_rc[1, lo:hi]]
        sums = [_digits(pend[:n_r, lo:hi], int(q0[0]), n_r)]
        if has_perfect:
            sums.append(_digits(pend[n_r:, lo:hi], int(q0[1]), int(n_pos[1])))
        pending.append(_Table(keys, tuple(sums), pend_counts[:, lo:hi]))
    return ScaleState(
        spec.shape,
        spec.widths,
        _moment_state(resid, drop=mask),
        tuple(states[0::n_field]),
        tuple(states[1::n_field]) if has_perfect else None,
        tuple(pending),
    ).settle()


def _bias_state(bkg, mask, origin, spec: _Spec) -> BiasState:
    """Bias state of one chunk: per-block sums in one pass (:func:`_nb_bias_pass`)."""
    (y0, x0), (ny, nx), b = origin, spec.shape, spec.bias_box_size
    h, w = bkg.shape
    iy, ra, rb, _ = _axis_blocks(y0, y0 + h, ny, b, border=False)
    ix, ca, cb, _ = _axis_blocks(x0, x0 + w, nx, b, border=False)
    mask = np.ascontiguousarray(mask, dtype=bool)
    native = _native_float(bkg)
    q0, acc, counts = _nb_bias_pass(
        native,
        mask,
        np.arange(y0, y0 + h, dtype=np.int64) // b - (y0 // b),
        np.arange(x0, x0 + w, dtype=np.int64) // b - (x0 // b),
        iy.size,
        ix.size,
    )
    sums = tuple(
        _digits(np.ascontiguousarray(acc[:, f].T), int(q0), acc.shape[2])
        for f in range(2)
    )
    r, c = np.divmod(np.arange(iy.size * ix.size), ix.size)
    table = _Table(
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


def _source_state_reference(diff, bkg, mask, origin, spec: _Spec, src) -> SourceState:
    """:func:`_source_state` pixel by pixel through a keyed table: the former path."""
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
    counts[_SRC_NPIX] = 1
    counts[_SRC_EXPECT, centre] = expected
    counts[_SRC_CMASK] = centre & m
    counts[_SRC_NMASK] = m
    counts[_SRC_FRES] = np.isfinite(d)
    counts[_SRC_FBKG] = np.isfinite(b)
    raw = _Table(k, (_exact_values(d), _exact_values(b)), counts)
    return SourceState.of_table(spec.shape, _Table.combine([raw]))


def _source_state(diff, bkg, mask, origin, spec: _Spec, src) -> SourceState:
    """Source state of one chunk: the part of each box in it, one pass."""
    (y0, x0), (ny, nx) = origin, spec.shape
    keys, yc, xc = src
    order = np.argsort(keys, kind="stable")
    keys, yc, xc = keys[order], yc[order], xc[order]
    box_h = np.minimum(yc + 1, ny - 1) - np.maximum(yc - 1, 0) + 1
    box_w = np.minimum(xc + 1, nx - 1) - np.maximum(xc - 1, 0) + 1
    has_diff = diff is not None
    counts, q0, limbs_d, limbs_b = _nb_source_pass(
        np.ascontiguousarray(diff, dtype=np.float64) if has_diff else np.zeros((1, 1)),
        has_diff,
        _native_float(bkg),
        np.ascontiguousarray(mask, dtype=bool),
        (yc - y0).astype(np.int64),
        (xc - x0).astype(np.int64),
        (box_h * box_w).astype(np.int64),
        np.lexsort((xc, yc)),
    )
    # Boxes with no pixel here are not part of this chunk's table.
    seen = counts[_SRC_NPIX] > 0
    sums = tuple(
        ExactSums(int(q), limbs[:, seen]) if limbs.shape[0] else _zero_sums(seen.sum())
        for q, limbs in zip(q0.tolist(), (limbs_d, limbs_b), strict=True)
    )
    return SourceState.of_table(spec.shape, _Table(keys[seen], sums, counts[:, seen]))


def _block_state(
    spec: _Spec, origin, scene, background, mask, truth=None, sky=None, src=None
) -> MetricsState:
    """The metric state of one block whose pixel (0, 0) is global ``origin``."""
    # Compiled passes read C-contiguous float32/float64 arrays: one copy of a
    # strided chunk here rather than one per pass.
    bkg = _native_float(background)
    if mask is None:
        mask = np.zeros(bkg.shape, bool)
    mask = np.ascontiguousarray(mask, dtype=bool)

    def minus(a, b):
        # float64(a) - float64(b) in one pass, without float64 copies.
        return np.subtract(_native_float(a, contiguous=False), b, dtype=np.float64)

    diff = perfect = None
    if truth is not None:
        t = _native_float(truth, contiguous=False)
        diff = minus(bkg, t)
        if sky is not None:
            perfect = minus(sky, t)
    origin = (int(origin[0]), int(origin[1]))
    tstate = (
        _truth_state(diff, origin, spec.shape, spec.edge) if spec.has_truth else None
    )
    sstate = None
    if spec.has_sources:
        if src is None:
            src = (np.zeros(0, dtype=np.int64),) * 3
        sstate = _source_state(diff, bkg, mask, origin, spec, src)
    return MetricsState(
        tstate,
        _scale_state(minus(scene, bkg), perfect, mask, origin, spec),
        _bias_state(bkg, mask, origin, spec),
        sstate,
    )


def _merge_states(*states: MetricsState) -> MetricsState:
    out = states[0]
    for s in states[1:]:
        out = out.merge(s)
    return out


# --------------------------------------------------------------------------
# Summaries
# --------------------------------------------------------------------------


def _num(x) -> float | None:
    """A plain float, or None for NaN/inf (strict JSON)."""
    x = float(x)
    return x if math.isfinite(x) else None


def _ratio(a: float, b: float) -> float:
    return a / b if b and math.isfinite(b) else math.nan


def _rms_about_zero(state: MomentState) -> float:
    if state.count == 0:
        return math.nan
    return math.sqrt(float(Fraction(state.sumsq, state.count << UNIT_EXP)))


def line_fit(x, y) -> dict[str, Any]:
    """Ordinary least-squares line ``y = slope * x + intercept``, in closed form.

    Parameters
    ----------
    x, y : array_like
        Points; pairs with a non-finite member are left out.

    Returns
    -------
    dict
        ``n``, ``slope``, ``intercept`` and their standard errors
        ``slope_err``, ``intercept_err`` from the residual variance with
        ``n - 2`` degrees of freedom. Values are None below three points or
        when all ``x`` are equal.

    Examples
    --------
    >>> fit = line_fit([0, 1, 2, 3], [1.0, 3.1, 4.9, 7.0])
    >>> round(fit["slope"], 3), round(fit["intercept"], 3)
    (1.98, 1.03)
    """
    x = np.asarray(x, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    n = int(x.size)
    out: dict[str, Any] = dict.fromkeys(
        ("slope", "intercept", "slope_err", "intercept_err")
    )
    out["n"] = n
    if n < 3:
        return out
    xm, ym = x.mean(), y.mean()
    sxx = float(((x - xm) ** 2).sum())
    if sxx == 0.0:
        return out
    slope = float(((x - xm) * (y - ym)).sum()) / sxx
    intercept = ym - slope * xm
    s2 = float(((y - intercept - slope * x) ** 2).sum()) / (n - 2)
    out.update(
        slope=_num(slope),
        intercept=_num(intercept),
        slope_err=_num(math.sqrt(s2 / sxx)),
        intercept_err=_num(math.sqrt(s2 * (1.0 / n + xm * xm / sxx))),
    )
    return out


def _truth_summary(ts: TruthState, edge: int) -> dict[str, Any]:
    def part(m: MomentState, mx: float, mn: float) -> dict[str, Any]:
        n, mean, std = moments(m)
        return {
            "n_pixels": n,
            "mean": _num(mean),
            "std": _num(std),
            "rms": _num(_rms_about_zero(m)),
            "max": _num(mx),
            "min": _num(mn),
        }

    return {
        "all": part(ts.all, ts.max_all, ts.min_all),
        "interior": {
            **part(ts.interior, ts.max_interior, ts.min_interior),
            "edge": edge,
        },
    }


def _scale_summary(st: ScaleState, noise_sigma: float | None) -> dict[str, Any]:
    n_pix, _, pix_std = moments(st.pixels)
    sigma = pix_std if noise_sigma is None else float(noise_sigma)
    widths = np.array(st.widths, dtype=np.float64)

    def stats(states):
        ms = [moments(m) for m in states]
        n = [m[0] for m in ms]
        # One block has no scatter: report nothing rather than a zero.
        std = np.array([m[2] if m[0] >= 2 else math.nan for m in ms])
        mean = np.array([m[1] for m in ms])
        return n, mean, std

    n_blocks, mean, rms = stats(st.resid)
    ideal = sigma / widths
    with np.errstate(invalid="ignore", divide="ignore"):
        out: dict[str, Any] = {
            "widths": [int(w) for w in st.widths],
            "n_blocks": n_blocks,
            "rms": [_num(v) for v in rms],
            "mean": [_num(v) for v in mean],
            "sigma": _num(sigma),
            "sigma_source": "measured" if noise_sigma is None else "noise_sigma",
            "n_pixels": n_pix,
            "ideal": [_num(v) for v in ideal],
            "ratio_ideal": [_num(v) for v in rms / ideal],
            "perfect": None,
            "ratio_perfect": None,
        }
        if st.perfect is not None:
            _, _, perfect = stats(st.perfect)
            out["perfect"] = [_num(v) for v in perfect]
            out["ratio_perfect"] = [_num(v) for v in rms / perfect]
    out["reference"] = "perfect" if st.perfect is not None else "ideal"
    out["ratio"] = out["ratio_" + out["reference"]]
    return out


def _bias_summary(bs: BiasState) -> dict[str, Any]:
    n_m, mean_m, std_m = moments(bs.masked)
    n_u, mean_u, std_u = moments(bs.unmasked)
    d = bs.mean_masked - bs.mean_unmasked
    weight = bs.n_masked.astype(np.float64)
    nb = int(d.size)
    est = se = z = math.nan
    if nb >= 1:
        total = weight.sum()
        est = float((weight * d).sum() / total)
    if nb >= 2:
        # Cluster-robust (sandwich) error of a weighted mean of independent blocks.
        se = math.sqrt(nb / (nb - 1) * float(((weight * (d - est)) ** 2).sum())) / total
        z = est / se if se > 0 else math.nan
    with np.errstate(invalid="ignore", divide="ignore"):
        # The notebook's formula, kept for comparison: it is not an error at all.
        nb_err_m = mean_m / (math.sqrt(n_m) * std_m) if n_m and std_m else math.nan
        nb_err_u = mean_u / (math.sqrt(n_u) * std_u) if n_u and std_u else math.nan
        iid = math.sqrt(std_m**2 / n_m + std_u**2 / n_u) if n_m and n_u else math.nan
    diff = mean_m - mean_u
    return {
        "mean_masked": _num(mean_m),
        "mean_unmasked": _num(mean_u),
        "n_masked": n_m,
        "n_unmasked": n_u,
        "difference": _num(est),
        "stderr": _num(se),
        "z": _num(z),
        "n_blocks": nb,
        "box_size": bs.box_size,
        "difference_global": _num(diff),
        "method": (
            "per-block difference of mean background under masked and unmasked "
            "covered pixels, weighted by masked pixels; cluster-robust error "
            "over blocks"
        ),
        "naive": {
            "difference": _num(diff),
            "notebook_stderr_masked": _num(nb_err_m),
            "notebook_stderr_unmasked": _num(nb_err_u),
            "notebook_z": _num(_ratio(diff, math.hypot(nb_err_m, nb_err_u))),
            "iid_stderr": _num(iid),
            "iid_z": _num(_ratio(diff, iid)),
        },
    }


@dataclass(frozen=True)
class _Catalogue:
    """Source positions and the random control points, drawn at the driver."""

    x: np.ndarray
    y: np.ndarray
    flux: np.ndarray
    re: np.ndarray
    inside: np.ndarray
    yc: np.ndarray
    xc: np.ndarray
    rand_x: np.ndarray
    rand_y: np.ndarray
    rand_flux: np.ndarray
    rand_re: np.ndarray

    @property
    def n_sources(self) -> int:
        return int(self.x.size)

    def positions(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(keys, yc, xc)`` of every box to measure."""
        keys = np.concatenate(
            [
                np.flatnonzero(self.inside),
                self.n_sources + np.arange(self.rand_x.size),
            ]
        ).astype(np.int64)
        yc = np.concatenate([self.yc[self.inside], self.rand_y]).astype(np.int64)
        xc = np.concatenate([self.xc[self.inside], self.rand_x]).astype(np.int64)
        return keys, yc, xc


def _read_catalogue(catalogue, shape, n_random, seed) -> _Catalogue:
    cols = {}
    for name in ("x_mean", "y_mean", "flux", "re"):
        try:
            cols[name] = np.asarray(catalogue[name], dtype=np.float64).ravel()
        except (KeyError, TypeError):
            msg = (
                f"catalogue must map {name!r} to a 1-D array (needs x_mean, "
                f"y_mean, flux, re); got {type(catalogue).__name__} without it"
            )
            raise ValueError(msg) from None
    n = cols["x_mean"].size
    if any(c.size != n for c in cols.values()):
        sizes = {k: v.size for k, v in cols.items()}
        msg = f"catalogue columns must have equal lengths, got {sizes}"
        raise ValueError(msg)
    ny, nx = shape
    x, y = cols["x_mean"], cols["y_mean"]
    ok = np.isfinite(x) & np.isfinite(y)
    xc = np.where(ok, np.rint(np.where(ok, x, 0)), -1).astype(np.int64)
    yc = np.where(ok, np.rint(np.where(ok, y, 0)), -1).astype(np.int64)
    inside = ok & (xc >= 0) & (xc < nx) & (yc >= 0) & (yc < ny)
    if n_random is None:
        n_random = 5 * n
    if n == 0 or nx < 5 or ny < 5:
        n_random = 0
    rng = np.random.default_rng(seed)
    # The notebook's draws and ranges: the 3x3 box lies inside the image.
    i_flux = rng.integers(0, max(n, 1), n_random)
    i_re = rng.integers(0, max(n, 1), n_random)
    rand_x = rng.integers(2, max(nx - 2, 3), n_random)
    rand_y = rng.integers(2, max(ny - 2, 3), n_random)
    return _Catalogue(
        x,
        y,
        cols["flux"],
        cols["re"],
        inside,
        yc,
        xc,
        rand_x,
        rand_y,
        cols["flux"][i_flux] if n else np.zeros(0),
        cols["re"][i_re] if n else np.zeros(0),
    )


def _group_stats(v: np.ndarray, flux: np.ndarray, re: np.ndarray) -> dict[str, Any]:
    ok = np.isfinite(v)
    v, flux, re = v[ok], flux[ok], re[ok]
    n = int(v.size)
    std = float(v.std(ddof=1)) if n >= 2 else math.nan
    return {
        "n": n,
        "mean": _num(v.mean()) if n else None,
        "std": _num(std),
        "stderr": _num(std / math.sqrt(n)) if n >= 2 else None,
        "median": _num(np.median(v)) if n else None,
        "fit_flux": line_fit(flux, v),
        "fit_radius": line_fit(re, v),
    }


def _source_summary(ss: SourceState, cat: _Catalogue, has_truth: bool):
    ns = cat.n_sources
    nr = cat.rand_x.size
    resid, bkg = np.full(ns + nr, np.nan), np.full(ns + nr, np.nan)
    cmask = np.zeros(ns + nr, dtype=bool)
    nmask = np.zeros(ns + nr, dtype=np.int64)
    seen = np.zeros(ns + nr, dtype=bool)
    resid[ss.keys], bkg[ss.keys] = ss.resid, ss.bkg
    cmask[ss.keys], nmask[ss.keys], seen[ss.keys] = (
        ss.centre_masked,
        ss.n_masked_box,
        True,
    )
    value = resid if has_truth else bkg
    src_ok = seen[:ns]
    kept = seen[ns:] & (nmask[ns:] == 0)
    masked = src_ok & cmask[:ns]
    unmasked = src_ok & ~cmask[:ns]
    summary = {
        "quantity": "residual" if has_truth else "background",
        "n_sources": ns,
        "n_sources_inside": int(src_ok.sum()),
        "n_random": int(nr),
        "n_random_kept": int(kept.sum()),
        "groups": {
            "masked": _group_stats(
                value[:ns][masked], cat.flux[masked], cat.re[masked]
            ),
            "unmasked": _group_stats(
                value[:ns][unmasked], cat.flux[unmasked], cat.re[unmasked]
            ),
            "random": _group_stats(
                value[ns:][kept], cat.rand_flux[kept], cat.rand_re[kept]
            ),
        },
    }
    points = {
        "quantity": summary["quantity"],
        "sources": {
            "x": cat.x,
            "y": cat.y,
            "flux": cat.flux,
            "re": cat.re,
            "residual": resid[:ns],
            "background": bkg[:ns],
            "value": value[:ns],
            "masked": cmask[:ns],
            "valid": src_ok,
        },
        "random": {
            "x": cat.rand_x,
            "y": cat.rand_y,
            "flux": cat.rand_flux,
            "re": cat.rand_re,
            "residual": resid[ns:],
            "background": bkg[ns:],
            "value": value[ns:],
            "kept": kept,
        },
    }
    return summary, points


def _check_settled(state: MetricsState) -> None:
    left = sum(t.keys.size for t in state.scale.pending) + state.bias.pending.keys.size
    if state.sources is not None:
        left += state.sources.pending.keys.size
    if left:
        msg = f"internal error: {left} metric blocks were never seen whole"
        raise RuntimeError(msg)


def _summarize(state: MetricsState, spec: _Spec, cat, noise_sigma):
    _check_settled(state)
    metrics: dict[str, Any] = {
        "shape": list(spec.shape),
        "truth": None
        if state.truth is None
        else _truth_summary(state.truth, spec.edge),
        "scale": _scale_summary(state.scale, noise_sigma),
        "bias": _bias_summary(state.bias),
        "sources": None,
    }
    points = None
    if state.sources is not None:
        metrics["sources"], points = _source_summary(state.sources, cat, spec.has_truth)
    return metrics, points


# --------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------


def _unwrap(value):
    data = getattr(value, "data", None)
    if data is not None and hasattr(value, "dims"):
        return data
    return value


def _is_dask(value) -> bool:
    return hasattr(value, "dask") and hasattr(value, "chunks")


def _split_sources(positions, ybounds, xbounds) -> dict[int, np.ndarray]:
    """Which boxes each chunk holds part of: ``chunk id -> position indices``."""
    keys, yc, xc = positions
    ncy, ncx = len(ybounds) - 1, len(xbounds) - 1

    def chunk_of(v, bounds, n):
        return np.clip(np.searchsorted(bounds, v, side="right") - 1, 0, n - 1)

    def spanned(v, bounds, n):
        # (chunk, which boxes): the first and last chunk of every box, and the
        # middle one of the boxes spanning three (chunks under 3 px wide).
        first, last = chunk_of(v - 1, bounds, n), chunk_of(v + 1, bounds, n)
        every = np.ones(v.size, dtype=bool)
        return [(first, every), (last, every), (first + 1, last - first == 2)]

    ids, which = [], []
    index = np.arange(keys.size, dtype=np.int64)
    for r, on_r in spanned(yc, ybounds, ncy):
        for c, on_c in spanned(xc, xbounds, ncx):
            on = on_r & on_c
            ids.append((r * ncx + c)[on])
            which.append(index[on])
    ids, which = np.concatenate(ids), np.concatenate(which)
    pairs = np.unique(ids * max(keys.size, 1) + which)
    ids, which = np.divmod(pairs, max(keys.size, 1))
    starts = _run_starts(ids)
    return {
        int(ids[s]): which[s:e]
        for s, e in zip(starts, [*list(starts[1:]), ids.size], strict=True)
    }


def _metrics_graph(arrays: Mapping[str, Any], spec: _Spec, cat):
    """A ``dask.delayed`` object computing the merged :class:`MetricsState`."""
    import dask
    import dask.array as da
    from dask.base import tokenize

    ref = next(a for a in arrays.values() if _is_dask(a))
    chunks = ref.chunks
    lazy = {}
    for name, arr in arrays.items():
        if not _is_dask(arr):
            arr = da.from_array(np.asarray(arr), chunks=chunks)
        elif arr.chunks != chunks:
            log.info("metrics: rechunking %s to the chunks of the background", name)
            arr = arr.rechunk(chunks)
        lazy[name] = arr.to_delayed(optimize_graph=False)
    ybounds = np.cumsum((0, *chunks[0]))
    xbounds = np.cumsum((0, *chunks[1]))
    positions = cat.positions() if cat is not None else None
    split = _split_sources(positions, ybounds, xbounds) if positions else {}
    token = tokenize(*(lazy[n].tolist() for n in lazy), spec, positions)
    block = dask.delayed(_block_state, pure=True)
    merge = dask.delayed(_merge_states, pure=True)
    parts = []
    for i in range(len(chunks[0])):
        for j in range(len(chunks[1])):
            src = None
            if positions is not None:
                sel = split.get(i * len(chunks[1]) + j, np.zeros(0, dtype=np.int64))
                src = tuple(p[sel] for p in positions)
            parts.append(
                block(
                    spec,
                    (int(ybounds[i]), int(xbounds[j])),
                    *(lazy[n][i, j] if n in lazy else None for n in _INPUTS),
                    src,
                    dask_key_name=f"metrics-block-{token}-{i}-{j}",
                )
            )
    level = 0
    while len(parts) > 1:
        parts = [
            merge(
                *parts[k : k + _FANIN],
                dask_key_name=f"metrics-merge-{token}-{level}-{k}",
            )
            for k in range(0, len(parts), _FANIN)
        ]
        level += 1
    return parts[0]


_INPUTS = ("scene", "background", "mask", "truth", "sky")


def compute_metrics(
    scene,
    background,
    mask,
    *,
    truth=None,
    sky=None,
    catalogue=None,
    noise_sigma: float | None = None,
    edge: int = 50,
    widths: Iterable[int] = range(3, 30),
    n_random: int | None = None,
    seed: int = 0,
    bias_box_size: int = 64,
    return_points: bool = False,
) -> dict[str, Any] | tuple[dict[str, Any], dict[str, Any] | None]:
    """Quality metrics of a background estimate, computed tile by tile.

    Parameters
    ----------
    scene, background : array_like
        The image and its estimated background, 2-D numpy or dask arrays (or
        xarray DataArrays) of one shape. numpy input is one block; dask input
        is reduced block by block (tasks named ``metrics-block`` and
        ``metrics-merge``) in one ``dask.compute``.
    mask : array_like of bool or None
        Source mask used for the background (True = masked).
    truth : array_like, optional
        Noiseless sky: enables the residual ``background - truth`` metrics.
    sky : array_like, optional
        Noisy sky without sources: with ``truth``, ``sky - truth`` is the
        'perfect' reference for the RMS-versus-scale curve.
    catalogue : mapping or xarray.Dataset, optional
        1-D ``x_mean``, ``y_mean``, ``flux``, ``re`` (pixels, 0-based).
    noise_sigma : float, optional
        Pixel noise for the ideal ``sigma / w`` fall; by default the standard
        deviation of the unmasked residual pixels ``scene - background``.
    edge : int
        Pixels closer than this to an image edge are left out of the
        'interior' residual statistics.
    widths : iterable of int
        Block widths of the RMS-versus-scale curve.
    n_random : int, optional
        Random control points (default five per source).
    seed : int
        Seed of the random control points and of their flux/radius draws.
    bias_box_size : int
        Side of the global blocks of the bias significance.
    return_points : bool
        Also return the per-source values for plots.

    Returns
    -------
    dict or (dict, dict)
        JSON-serialisable metrics (NaN/inf become None): ``truth``, ``scale``,
        ``bias``, ``sources`` (see Notes). With ``return_points``, also
        ``{"quantity", "sources": {...}, "random": {...}}`` of numpy arrays
        (None without a catalogue).

    Notes
    -----
    ``truth`` (with truth): mean, std, RMS about zero, max and min of
    ``background - truth`` over covered pixels (both finite), for the whole
    image and for pixels at least ``edge`` px from every edge.

    ``scale``: for each width ``w``, the standard deviation (``rms``) of the
    means of ``scene - background`` in global ``w x w`` blocks anchored at
    (0, 0) that lie inside the image, have no bad pixel (masked, or a
    non-finite residual or perfect value) and, as in the notebook, are clear
    of a border of ``w / 2`` px (so the first row and column of blocks never
    count). ``perfect`` is the same for ``sky - truth`` in the same blocks;
    ``ideal`` is ``sigma / w``; ``ratio`` is against ``perfect`` when present,
    else against ``ideal``. Fewer than two blocks give None.

    ``bias``: mean background under masked and under unmasked covered pixels.
    Background pixels are strongly correlated (the map is smooth on the mesh
    scale), so ``std / sqrt(N)`` overstates the significance by orders of
    magnitude, and the notebook's ``mean / (sqrt(N) * std)`` is not an error
    at all. Instead, for each global ``bias_box_size`` block holding both
    masked and unmasked covered pixels, ``d_b`` is the mean background under
    its masked pixels minus that under its unmasked ones: a local comparison,
    insensitive to large-scale gradients. ``difference`` is the mean of
    ``d_b`` weighted by masked pixel counts ``n_b``, and ``stderr`` the
    cluster-robust error treating blocks (much larger than the correlation
    length) as independent:
    ``sqrt(B / (B - 1) * sum(n_b**2 (d_b - difference)**2)) / sum(n_b)``;
    ``z = difference / stderr``. The global ``difference_global`` and the
    notebook's and iid numbers are under ``naive`` for comparison only.

    ``sources`` (with a catalogue): the mean of ``background - truth`` (the
    background itself without truth) over the finite pixels of the 3x3 box
    centred on ``rint`` of each source position, clipped to the image (the
    notebook's slices ``y-1:y+1`` take 2x2 pixels); a source is 'masked'
    when its centre pixel is. Random points are drawn over the whole image
    (independent of chunking) as in the notebook and kept when no pixel of
    their box is masked (the notebook's ``.min()`` keeps any not wholly
    masked box). Per group: count, mean, std, standard error, median and OLS
    fits against flux and radius (:func:`line_fit`).

    Every sum is exact, so the metrics are identical for any chunking.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> scene = rng.normal(size=(120, 150))
    >>> m = compute_metrics(scene, np.zeros_like(scene), scene > 2.5, widths=[5, 10])
    >>> m["scale"]["n_blocks"], m["bias"]["n_blocks"]
    ([543, 82], 6)
    """
    for name, value in (("scene", scene), ("background", background)):
        if value is None:
            msg = f"{name} is required (a 2-D array), got None"
            raise ValueError(msg)
    arrays = {
        n: _unwrap(v)
        for n, v in zip(_INPUTS, (scene, background, mask, truth, sky), strict=True)
        if v is not None
    }
    shape = tuple(int(s) for s in np.shape(arrays["background"]))
    for name, arr in arrays.items():
        if np.ndim(arr) != 2 or tuple(np.shape(arr)) != shape or 0 in shape:
            msg = (
                f"{name} must be a non-empty 2-D array shaped like background "
                f"{shape}, got shape {tuple(np.shape(arr))}; pass matching arrays"
            )
            raise ValueError(msg)
    widths = tuple(int(w) for w in widths)
    if any(w < 1 for w in widths):
        msg = f"widths must be positive integers, got {widths}"
        raise ValueError(msg)
    for name, value, low in (("edge", edge, 0), ("bias_box_size", bias_box_size, 2)):
        if int(value) != value or value < low:
            msg = f"{name} must be an integer >= {low}, got {value!r}"
            raise ValueError(msg)
    if noise_sigma is not None and not noise_sigma > 0:
        msg = f"noise_sigma must be positive or None, got {noise_sigma!r}"
        raise ValueError(msg)
    if n_random is not None and n_random < 0:
        msg = f"n_random must be >= 0 or None (five per source), got {n_random!r}"
        raise ValueError(msg)
    if sky is not None and truth is None:
        log.info("metrics: sky is ignored without truth (perfect = sky - truth)")
        arrays.pop("sky")
    cat = None
    if catalogue is not None:
        cat = _read_catalogue(catalogue, shape, n_random, seed)
    spec = _Spec(
        shape,
        widths,
        int(edge),
        int(bias_box_size),
        truth is not None,
        "sky" in arrays,
        cat is not None,
    )
    if any(_is_dask(a) for a in arrays.values()):
        import dask

        (state,) = dask.compute(_metrics_graph(arrays, spec, cat))
    else:
        log.info("metrics: numpy input, one block of %s", shape)
        state = _block_state(
            spec,
            (0, 0),
            *(arrays.get(n) for n in _INPUTS),
            cat.positions() if cat is not None else None,
        )
    metrics, points = _summarize(state, spec, cat, noise_sigma)
    return (metrics, points) if return_points else metrics

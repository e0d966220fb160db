"""Mergeable metric states: what a chunk leaves behind, and how states add up.

Each dask block is reduced to a small :class:`MetricsState`, and states are
merged in a tree. ``merge`` is associative and commutative with bit-identical
results: every sum inside is an integer (:mod:`._exact`), arrays are kept
sorted by global key, and blocks seen only in part wait in keyed tables
(:mod:`._table`) until they are complete ("settled").
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np

from tilesky.kernels._noise import MomentState
from tilesky.metrics._exact import exact_concat, exact_float, grouped_moment_states
from tilesky.metrics._passes import (
    SRC_CMASK,
    SRC_EXPECT,
    SRC_FBKG,
    SRC_FRES,
    SRC_NMASK,
    SRC_NPIX,
)
from tilesky.metrics._table import KeyedTable, block_extent

__all__ = [
    "BiasState",
    "MetricsState",
    "ScaleState",
    "SourceState",
    "Spec",
    "TruthState",
    "merge_states",
]


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
    """``background - truth`` over covered pixels, whole image and interior.

    Parameters
    ----------
    all, interior : MomentState
        Exact moments over every covered pixel, and over those away from
        the edges.
    max_all, min_all, max_interior, min_interior : float
        Extremes over the same pixels.
    """

    all: MomentState = field(default_factory=MomentState)
    interior: MomentState = field(default_factory=MomentState)
    max_all: float = -math.inf
    min_all: float = math.inf
    max_interior: float = -math.inf
    min_interior: float = math.inf

    def merge(self, other: TruthState) -> TruthState:
        """The state of both blocks' pixels together (associative, commutative).

        Parameters
        ----------
        other : TruthState
            The state of other pixels, built for the same image.

        Returns
        -------
        TruthState
            The merged state.
        """
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

    Parameters
    ----------
    shape : (int, int)
        The image's shape.
    widths : tuple of int
        Block widths, in pixels.
    pixels : MomentState
        Moments of the residual over every unmasked pixel (the noise of a
        single pixel).
    resid : tuple of MomentState
        Moments of the finished blocks' mean residual, per width.
    perfect : tuple of MomentState or None
        The same for the ideal residual (sky minus truth), when known.
    pending : tuple of KeyedTable
        Blocks seen in part, per width.
    """

    shape: tuple[int, int]
    widths: tuple[int, ...]
    pixels: MomentState
    resid: tuple[MomentState, ...]
    perfect: tuple[MomentState, ...] | None
    pending: tuple[KeyedTable, ...]

    def merge(self, other: ScaleState) -> ScaleState:
        """The state of both blocks' pixels together (associative, commutative).

        Parameters
        ----------
        other : ScaleState
            The state of other pixels, built for the same image.

        Returns
        -------
        ScaleState
            The merged state, settled.
        """
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
                KeyedTable.combine(p)
                for p in zip(self.pending, other.pending, strict=True)
            ),
        ).settle()

    def settle(self) -> ScaleState:
        """Fold the blocks that are now complete into the moments.

        Returns
        -------
        ScaleState
            The same pixels, with no complete block left pending.
        """
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
            means = exact_float(exact_concat([t.sums[f] for t in done])) / area
            states = grouped_moment_states(means, group, len(self.widths))
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

    Parameters
    ----------
    shape : (int, int)
        The image's shape.
    box_size : int
        Side of the blocks, in pixels.
    masked, unmasked : MomentState
        Moments of the background under masked and under unmasked pixels.
    keys : numpy.ndarray
        Global keys of the finished blocks, sorted.
    n_masked, n_unmasked : numpy.ndarray
        Masked and unmasked covered pixels of each finished block.
    mean_masked, mean_unmasked : numpy.ndarray
        Mean background under them.
    pending : KeyedTable
        Blocks seen in part.
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
    pending: KeyedTable

    def merge(self, other: BiasState) -> BiasState:
        """The state of both blocks' pixels together (associative, commutative).

        Parameters
        ----------
        other : BiasState
            The state of other pixels, built for the same image.

        Returns
        -------
        BiasState
            The merged state, settled.
        """
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
            KeyedTable.combine([self.pending, other.pending]),
        ).settle()

    def settle(self) -> BiasState:
        """Move the blocks that are now complete to the per-block arrays.

        Returns
        -------
        BiasState
            The same pixels, with no complete block left pending.
        """
        t = self.pending
        done = t.counts[0] == block_extent(t.keys, self.shape, self.box_size)
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
                [self.mean_masked, exact_float(fin.sums[0]) / fin.counts[1]]
            ),
            np.concatenate(
                [self.mean_unmasked, exact_float(fin.sums[1]) / fin.counts[2]]
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

    Parameters
    ----------
    shape : (int, int)
        The image's shape.
    keys : numpy.ndarray
        Keys of the finished boxes, sorted.
    resid, bkg : numpy.ndarray
        Mean residual and mean background in each finished box.
    centre_masked : numpy.ndarray
        Whether the box's centre pixel is masked.
    n_masked_box : numpy.ndarray
        Masked pixels in the box.
    pending : KeyedTable
        Boxes seen in part.
    """

    shape: tuple[int, int]
    keys: np.ndarray
    resid: np.ndarray
    bkg: np.ndarray
    centre_masked: np.ndarray
    n_masked_box: np.ndarray
    pending: KeyedTable

    def merge(self, other: SourceState) -> SourceState:
        """The state of both blocks' pixels together (associative, commutative).

        Parameters
        ----------
        other : SourceState
            The state of other pixels, built for the same image.

        Returns
        -------
        SourceState
            The merged state, settled.
        """
        _check_same(self, other, ("shape",))
        cat = [
            np.concatenate([getattr(self, n), getattr(other, n)])
            for n in ("keys", "resid", "bkg", "centre_masked", "n_masked_box")
        ]
        order = np.argsort(cat[0], kind="stable")
        return SourceState(
            self.shape,
            *(c[order] for c in cat),
            KeyedTable.combine([self.pending, other.pending]),
        ).settle()

    @classmethod
    def of_table(cls, shape: tuple[int, int], table: KeyedTable) -> SourceState:
        """The state of one chunk: every box pending in ``table``, then settled.

        Parameters
        ----------
        shape : (int, int)
            The image's shape.
        table : KeyedTable
            The chunk's part of each box it touches.

        Returns
        -------
        SourceState
            The chunk's state.
        """
        empty_i = np.zeros(0, dtype=np.int64)
        empty_f = np.zeros(0)
        return cls(
            shape, empty_i, empty_f, empty_f, np.zeros(0, dtype=bool), empty_i, table
        ).settle()

    def settle(self) -> SourceState:
        """Move the boxes that are now complete to the per-source arrays.

        Returns
        -------
        SourceState
            The same pixels, with no complete box left pending.
        """
        t = self.pending
        c = t.counts
        done = (c[SRC_NPIX] == c[SRC_EXPECT]) & (c[SRC_EXPECT] > 0)
        if not done.any():
            return self
        fin = t.take(done)
        c = fin.counts
        with np.errstate(invalid="ignore", divide="ignore"):
            resid = np.where(
                c[SRC_FRES] > 0, exact_float(fin.sums[0]) / c[SRC_FRES], np.nan
            )
            bkg = np.where(
                c[SRC_FBKG] > 0, exact_float(fin.sums[1]) / c[SRC_FBKG], np.nan
            )
        cat = [
            np.concatenate([self.keys, fin.keys]),
            np.concatenate([self.resid, resid]),
            np.concatenate([self.bkg, bkg]),
            np.concatenate([self.centre_masked, c[SRC_CMASK] > 0]),
            np.concatenate([self.n_masked_box, c[SRC_NMASK]]),
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

    Parameters
    ----------
    truth : TruthState or None
        Residual against the truth, when there is one.
    scale : ScaleState
        RMS of block means against block width.
    bias : BiasState
        Background under masked against unmasked pixels.
    sources : SourceState or None
        Residual around catalogue sources and random points, with a catalogue.
    """

    truth: TruthState | None
    scale: ScaleState
    bias: BiasState
    sources: SourceState | None

    def merge(self, other: MetricsState) -> MetricsState:
        """The state of both blocks' pixels together (associative, commutative).

        Parameters
        ----------
        other : MetricsState
            The state of other pixels, built for the same image.

        Returns
        -------
        MetricsState
            The merged state.
        """
        return MetricsState(
            None if self.truth is None else self.truth.merge(other.truth),
            self.scale.merge(other.scale),
            self.bias.merge(other.bias),
            None if self.sources is None else self.sources.merge(other.sources),
        )


@dataclass(frozen=True)
class Spec:
    """What every block state of one ``compute_metrics`` call is built for."""

    shape: tuple[int, int]
    widths: tuple[int, ...]
    edge: int
    bias_box_size: int
    has_truth: bool
    has_sky: bool
    has_sources: bool


def merge_states(*states: MetricsState) -> MetricsState:
    """The merge of ``states``, left to right (any order gives the same bits)."""
    out = states[0]
    for s in states[1:]:
        out = out.merge(s)
    return out

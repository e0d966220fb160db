"""Global keys of the metrics: block grids anchored at pixel (0, 0), keyed sums.

Block grids are global, so a block cut by chunk borders has one key in every
chunk that holds part of it; a :class:`KeyedTable` carries the partial sums
of such blocks (exact, :mod:`._exact`) until the pieces are added up.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from tilesky.metrics._exact import ExactSums, exact_concat, zero_sums

__all__ = ["KeyedTable", "axis_blocks", "block_extent", "run_starts"]


def run_starts(sorted_keys: np.ndarray) -> np.ndarray:
    """Indices where a new key starts in a sorted array."""
    new = np.ones(sorted_keys.size, dtype=bool)
    new[1:] = sorted_keys[1:] != sorted_keys[:-1]
    return np.flatnonzero(new)


@dataclass(frozen=True, eq=False)
class KeyedTable:
    """Exact sums and integer counts keyed by a global index (sorted, unique)."""

    keys: np.ndarray
    sums: tuple[ExactSums, ...]
    counts: np.ndarray

    @classmethod
    def empty(cls, n_fields: int, n_counts: int) -> KeyedTable:
        return cls(
            np.zeros(0, dtype=np.int64),
            tuple(zero_sums(0) for _ in range(n_fields)),
            np.zeros((n_counts, 0), dtype=np.int64),
        )

    def take(self, sel: np.ndarray) -> KeyedTable:
        return KeyedTable(
            self.keys[sel],
            tuple(ExactSums(s.q0, s.limbs[:, sel]) for s in self.sums),
            self.counts[:, sel],
        )

    @classmethod
    def combine(cls, tables: Iterable[KeyedTable]) -> KeyedTable:
        """Concatenate and add up entries with equal keys (integer, exact)."""
        tables = list(tables)
        keys = np.concatenate([t.keys for t in tables])
        n_fields = len(tables[0].sums)
        if keys.size == 0:
            return cls.empty(n_fields, tables[0].counts.shape[0])
        order = np.argsort(keys, kind="stable")
        sk = keys[order]
        starts = run_starts(sk)
        sums = []
        for f in range(n_fields):
            cat = exact_concat([t.sums[f] for t in tables])
            limbs = cat.limbs[:, order]
            if limbs.shape[0]:
                limbs = np.add.reduceat(limbs, starts, axis=1)
            else:
                limbs = np.zeros((0, starts.size), dtype=np.int64)
            sums.append(ExactSums(cat.q0, limbs))
        counts = np.concatenate([t.counts for t in tables], axis=1)[:, order]
        counts = np.add.reduceat(counts, starts, axis=1)
        return cls(sk[starts], tuple(sums), counts)


def axis_blocks(lo: int, hi: int, n: int, w: int, *, border: bool):
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


def block_extent(keys: np.ndarray, shape, w: int) -> np.ndarray:
    """In-image pixel count of global ``w``-blocks given by key."""
    nbx = -(-shape[1] // w)
    iy, ix = np.divmod(keys, nbx)
    hy = np.minimum((iy + 1) * w, shape[0]) - iy * w
    hx = np.minimum((ix + 1) * w, shape[1]) - ix * w
    return hy * hx

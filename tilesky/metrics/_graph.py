"""The dask graph of the metrics: one task per chunk, then a tree of merges.

Tasks are named ``metrics-block-<token>-<i>-<j>`` (the state of chunk
``(i, j)``, :func:`~._block.block_state`) and ``metrics-merge-<token>-...``
(:func:`~._states.merge_states` of up to eight states); building the graph
computes nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np

from tilesky.metrics._block import block_state
from tilesky.metrics._catalogue import Catalogue
from tilesky.metrics._states import Spec, merge_states
from tilesky.metrics._table import run_starts

__all__ = ["INPUTS", "is_dask", "metrics_graph"]

log = logging.getLogger("tilesky")

# The array inputs of a block state, in block_state's argument order.
INPUTS = ("scene", "background", "mask", "truth", "sky")
_FANIN = 8


def is_dask(value) -> bool:
    """Whether ``value`` is a dask collection with chunks (a dask array)."""
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
    starts = run_starts(ids)
    return {
        int(ids[s]): which[s:e]
        for s, e in zip(starts, [*list(starts[1:]), ids.size], strict=True)
    }


def _delayed_chunks(arrays: Mapping[str, Any]):
    """Every input as a grid of delayed chunks, on the chunks of a dask input."""
    import dask.array as da

    ref = next(a for a in arrays.values() if is_dask(a))
    chunks = ref.chunks
    lazy = {}
    for name, arr in arrays.items():
        if not is_dask(arr):
            arr = da.from_array(np.asarray(arr), chunks=chunks)
        elif arr.chunks != chunks:
            log.info("metrics: rechunking %s to the chunks of the background", name)
            arr = arr.rechunk(chunks)
        lazy[name] = arr.to_delayed(optimize_graph=False)
    return lazy, chunks


def _block_tasks(lazy, chunks, spec: Spec, positions, token: str) -> list:
    """One ``metrics-block`` task per chunk, in row-major chunk order."""
    import dask

    ybounds = np.cumsum((0, *chunks[0]))
    xbounds = np.cumsum((0, *chunks[1]))
    split = _split_sources(positions, ybounds, xbounds) if positions else {}
    block = dask.delayed(block_state, pure=True)
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
                    *(lazy[n][i, j] if n in lazy else None for n in INPUTS),
                    src,
                    dask_key_name=f"metrics-block-{token}-{i}-{j}",
                )
            )
    return parts


def _merge_tree(parts: list, token: str):
    """``metrics-merge`` tasks of ``_FANIN`` states each, down to one."""
    import dask

    merge = dask.delayed(merge_states, pure=True)
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


def metrics_graph(arrays: Mapping[str, Any], spec: Spec, cat: Catalogue | None):
    """A ``dask.delayed`` object computing the merged metrics state.

    Parameters
    ----------
    arrays : mapping of str to array
        The inputs by name (:data:`INPUTS`), at least one a dask array; the
        others are chunked like the first dask one.
    spec : Spec
        What the states are built for.
    cat : Catalogue or None
        The sources and random points whose boxes are measured.

    Returns
    -------
    dask.delayed.Delayed
        The merged :class:`~._states.MetricsState`, not yet computed.
    """
    from dask.base import tokenize

    lazy, chunks = _delayed_chunks(arrays)
    positions = cat.positions() if cat is not None else None
    token = tokenize(*(lazy[n].tolist() for n in lazy), spec, positions)
    return _merge_tree(_block_tasks(lazy, chunks, spec, positions, token), token)

"""The tiled backend: each kernel per tile on dask arrays.

:class:`Tiled` runs the kernels that :class:`~tilesky.backends.WholeImage`
runs once, per tile through :func:`~tilesky.backends._tile_map.tile_map`,
each with the halo its stage declares, and computes global quantities as
reductions of small exact states. Both implement
:class:`~tilesky.backends.Backend`, so "the tiled result equals the
monolithic one" compares two executions of one description.
"""

from __future__ import annotations

import logging
import math
import weakref
from collections.abc import Mapping, Sequence
from typing import Any

import dask
import dask.array as da
import numpy as np
from dask.base import tokenize
from dask.core import flatten
from dask.highlevelgraph import HighLevelGraph

from tilesky.backends._clipping import advance, state_of_blocks
from tilesky.backends._protocol import Backend
from tilesky.backends._tile_map import TileInput, ZarrSource, crop_to, tile_map

__all__ = ["Tiled"]

log = logging.getLogger("tilesky")


def _local_kernel(*arrays, regions, out_region, func, dtype):
    out = np.asarray(func(*arrays), dtype=dtype)
    return crop_to(out, regions[0], out_region)


def _merge_layer(layer, dtype, n_cols, *blocks):
    """Layer ``layer`` of a stacked map's blocks (row-major), as one array."""
    rows = [blocks[k : k + n_cols] for k in range(0, len(blocks), n_cols)]
    return np.block([[b[layer] for b in row] for row in rows]).astype(dtype)


def _whole_layers(stacked: da.Array, dtypes, *, name: str) -> tuple[da.Array, ...]:
    """Each layer of the stacked maps ``stacked`` as a one-block array.

    One task per layer reads the tiles' blocks directly: slicing a layer
    out first would add a task per layer and tile. An explicit task rather
    than ``rechunk``: dask's slice optimization rewrote a slice of a
    rechunked array differently from one computation to the next, and a
    distributed scheduler warns that a key whose task changed "can cause
    failures and deadlocks".
    """
    _, ny, nx = stacked.numblocks
    blocks = [(stacked.name, 0, i, j) for i in range(ny) for j in range(nx)]
    out = []
    for layer, dtype in enumerate(dtypes):
        dtype = np.dtype(dtype)
        out_name = f"{name}-{tokenize(stacked.name, layer, dtype)}"
        graph = HighLevelGraph.from_collections(
            out_name,
            {(out_name, 0, 0): (_merge_layer, layer, dtype, nx, *blocks)},
            dependencies=[stacked],
        )
        chunks = tuple((int(n),) for n in stacked.shape[1:])
        out.append(da.Array(graph, out_name, chunks, meta=np.empty((0, 0), dtype)))
    return tuple(out)


def _stack_mesh(bkg, rms, n_good):
    # n_good < 2**24 (a box's pixel count) is exact in float32.
    return np.stack([bkg, rms, n_good.astype(np.float32)]).astype(np.float32)


def _mesh_kernel(image, mask, *, regions, out_region, func, kw):
    # The image region is box-aligned at its origin by construction.
    return _stack_mesh(*func(image, mask, **kw))


def _mesh_kernel_nomask(image, *, regions, out_region, func, kw):
    return _stack_mesh(*func(image, None, **kw))


def _to_pixels_kernel(*meshes, regions, out_region, func, dtype):
    out = func(
        *meshes,
        out_shape=out_region.shape,
        out_offset=out_region.origin,
        mesh_offset=regions[0].origin,
    )
    return np.asarray(out, dtype=dtype)


#: Mesh statistics up to this size (the three stacked maps; 16 MiB is a
#: 6000x6000 image with 6 x 6 boxes, 1e6 boxes) are filled, filtered and
#: handed to the interpolation as one block: each of those steps is then one
#: task instead of one per tile, where a tile's share takes a fraction of
#: the scheduler's millisecond per task; the result is the monolithic one by
#: construction. Larger meshes stay tiled, so that the filter's window stack
#: is spread over the workers rather than held by one.
WHOLE_MESH_BYTES = 16 * 2**20


#: Reductions of arrays up to this size (mesh maps read back from the store)
#: run in this process: a few milliseconds, against tens for a round trip
#: through a distributed scheduler.
LOCAL_REDUCTION_BYTES = 64 * 2**20


def _reduce(result: da.Array, source: da.Array):
    if source.nbytes <= LOCAL_REDUCTION_BYTES and not _in_cluster_memory(result):
        return result.compute(scheduler="sync")
    return result.compute()


def _held_groups(array: da.Array) -> list[list[int]] | None:
    """``array``'s block numbers grouped by the worker thread that should read them.

    For an array held in a cluster's memory: the blocks each worker holds,
    split into as many runs as it has threads. A clipping pass is then a
    task per group, scheduled where its blocks are, rather than a task per
    block. None when the placement is not known (not held, or no client).
    """
    from distributed import Future, wait

    from tilesky.cluster import current_client

    client = current_client()
    if client is None:
        return None
    graph = array.__dask_graph__()
    futures = [graph[key] for key in flatten(array.__dask_keys__())]
    # Held means every block is a kept result; a map computed from held
    # inputs has tasks there, whose placement is not known yet.
    if not all(isinstance(f, Future) for f in futures):
        return None
    try:
        # Every pass needs every block: waiting for them first costs the
        # first pass nothing but the round trip, and makes them placed.
        wait(futures)
        holders = client.who_has(futures)
        threads = client.nthreads()
    except Exception:  # placement is an optimization; per-block tasks still work
        return None
    by_worker: dict[str, list[int]] = {}
    for number, future in enumerate(futures):
        workers = holders.get(future.key) or ()
        if not workers:
            return None
        by_worker.setdefault(workers[0], []).append(number)
    groups = []
    for worker, numbers in by_worker.items():
        parts = min(max(int(threads.get(worker, 1)), 1), len(numbers))
        groups += [[int(n) for n in g] for g in np.array_split(numbers, parts)]
    return groups


def _in_cluster_memory(array: da.Array) -> bool:
    """Whether ``array``'s graph refers to results kept by a cluster."""
    try:
        from distributed import Future
    except ImportError:
        return False
    return any(isinstance(v, Future) for v in array.__dask_graph__().values())


class Tiled(Backend):
    """Run every step per tile on dask arrays.

    Parameters
    ----------
    store : RunStore, optional
        Where intermediates are materialized: the run store writes each
        checkpoint to its Zarr group and reads it back (or keeps it in
        memory and writes it behind), and tells this backend which arrays
        tiles may read straight from Zarr (``store.sources``). Without a
        store, checkpoints are persisted in the cluster's memory.
    cut_halos : bool, optional
        Send a neighbouring tile only the strips of a block its halo covers
        (see :func:`tile_map`). Default: when the current cluster's workers
        are separate processes (:func:`tilesky.cluster.blocks_travel`).
    """

    def __init__(self, *, store: Any = None, cut_halos: bool | None = None):
        self._store = store
        self._sources: Mapping[str, ZarrSource] = (
            store.sources if store is not None else {}
        )
        if cut_halos is None:
            from tilesky.cluster import blocks_travel, current_client

            cut_halos = blocks_travel(current_client())
        self._cut_halos = cut_halos
        # name -> (weak reference, bytes) of the arrays `hold` keeps in memory
        self._held: dict[str, tuple[weakref.ref, int]] = {}

    def _map(self, kernel, inputs, **kw) -> da.Array:
        return tile_map(
            kernel, inputs, cut_halos=self._cut_halos, sources=self._sources, **kw
        )

    def local(self, func, arrays: Sequence[da.Array], *, depth, dtype, name):
        d = (depth, depth) if isinstance(depth, int) else tuple(depth)
        return self._map(
            _local_kernel,
            [TileInput(a, depth=d) for a in arrays],
            name=name,
            dtype=dtype,
            kwargs={"func": func, "dtype": np.dtype(dtype)},
        )

    def mesh_stats(self, func, image, mask, *, box_size, name, checkpoint=None, **kw):
        by, bx = box_size
        out_chunks = tuple(
            tuple(-(-c // b) for c in chunks)
            for chunks, b in zip(image.chunks, (by, bx), strict=True)
        )
        for axis, (chunks, b) in enumerate(zip(image.chunks, (by, bx), strict=True)):
            if any(c % b for c in chunks[:-1]):
                msg = (
                    f"chunks {chunks} along axis {axis} are not multiples of the "
                    f"mesh box {b}; rechunk to a multiple of the box"
                )
                raise ValueError(msg)
        kw = {"box_size": (by, bx), **kw}
        inputs = [TileInput(image, up=(by, bx))]
        kernel = _mesh_kernel_nomask
        if mask is not None:
            inputs.append(TileInput(mask, up=(by, bx)))
            kernel = _mesh_kernel
        stacked = self._map(
            kernel,
            inputs,
            name=name,
            dtype=np.float32,
            out_chunks=out_chunks,
            leading=3,
            kwargs={"func": func, "kw": kw},
        )
        # One materialization for the three maps: slicing before it would
        # compute the box statistics once per map.
        if checkpoint is not None:
            stacked = self.checkpoint(checkpoint, stacked)
        if stacked.nbytes <= WHOLE_MESH_BYTES:
            return _whole_layers(
                stacked, (np.float32, np.float32, np.int32), name="mesh-merge"
            )
        return stacked[0], stacked[1], stacked[2].astype(np.int32)

    def to_pixels(self, func, meshes, *, like, box_size, depth, dtype, name, pixels=()):
        d = (depth, depth) if isinstance(depth, int) else tuple(depth)
        inputs = [TileInput(m, depth=d, down=tuple(box_size)) for m in meshes]
        # Full-resolution inputs come without a halo, after the meshes.
        inputs += [TileInput(p) for p in pixels]
        return self._map(
            _to_pixels_kernel,
            inputs,
            name=name,
            dtype=dtype,
            out_chunks=like.chunks,
            out_shape=tuple(like.shape),
            kwargs={"func": func, "dtype": np.dtype(dtype)},
        )

    def clipped_moments(self, array, *, clip, maxiters, mask=None):
        # Every clipping pass in one computation: one synchronization. Each
        # pass is a task per block (per worker thread for an array held in a
        # cluster's memory: see _held_groups) and one task that sums their
        # states and gives the next pass its bounds, inside the graph.
        # Passes after convergence do nothing.
        blocks = array.to_delayed().ravel()
        masks = mask.to_delayed().ravel() if mask is not None else [None] * len(blocks)
        groups = _held_groups(array) or [[k] for k in range(len(blocks))]
        token = tokenize(array.name, mask.name if mask is not None else None, clip)
        part = dask.delayed(state_of_blocks, pure=True)
        step = dask.delayed(advance, pure=True)
        # A pass's outcome is (step, bounds of the next pass): one task per
        # pass after the block states, since the passes are a chain of round
        # trips through the scheduler.
        outcome = (None, (-math.inf, math.inf))
        for i in range((maxiters if clip is not None else 0) + 1):
            states = [
                part(
                    [blocks[n] for n in group],
                    [masks[n] for n in group],
                    outcome,
                    dask_key_name=(f"noise-block-{token}", i, k),
                )
                for k, group in enumerate(groups)
            ]
            outcome = step(
                states, outcome, clip, dask_key_name=(f"noise-step-{token}", i)
            )
        return tuple(outcome.compute()[0])[:3]

    def nanmin(self, array) -> float:
        with np.errstate(all="ignore"):
            return float(_reduce(da.nanmin(array), array))

    def nanmax(self, array) -> float:
        with np.errstate(all="ignore"):
            return float(_reduce(da.nanmax(array), array))

    def any(self, array) -> bool:
        return bool(_reduce(da.any(array), array))

    def checkpoint(self, name: str, array: da.Array, *, resumable: bool = True):
        if self._store is not None:
            return self._store.checkpoint(name, array, resumable=resumable)
        return array.persist()

    def checkpoint_many(self, arrays):
        if self._store is not None:
            return self._store.checkpoint_many(arrays)
        names = list(arrays)
        return dict(zip(names, dask.persist(*arrays.values()), strict=True))

    def hold(self, array: da.Array) -> da.Array:
        # Held arrays share one budget (a quarter of the workers' memory, with
        # the store's kept checkpoints): each fitting alone would let a
        # 32768^2 run hold several 4 GiB images at once. One that does not
        # fit is recomputed (from the store's checkpoints) on each pass.
        from tilesky.cluster import current_client, holdable_bytes

        live = {n: v for n, v in self._held.items() if v[0]() is not None}
        self._held = live
        if array.name in live:
            return live[array.name][0]()
        client = current_client()
        used = sum(nbytes for _, nbytes in live.values())
        used += self._store.kept_bytes if self._store is not None else 0
        if used + array.nbytes > holdable_bytes(client):
            return array
        held = array.persist() if client is None else client.persist(array)
        self._held[held.name] = (weakref.ref(held), int(array.nbytes))
        return held

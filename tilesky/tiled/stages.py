"""Execution backends: the same pipeline steps, monolithic or tiled.

:class:`WholeImage` calls each numpy kernel once on the whole array: it is
the reference. :class:`Tiled` runs the same kernels per tile through
:func:`tilesky.tiled._overlap.tile_map`, each with the halo its parameters
require, and computes global quantities as reductions of small exact
states. The pipeline (``tilesky.pipeline``) is written once against the
methods both share, so "the tiled result equals the monolithic one" compares
two executions of one description.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence

import dask
import dask.array as da
import numpy as np
from dask.base import tokenize
from dask.core import flatten
from dask.highlevelgraph import HighLevelGraph

from tilesky.kernels._noise import MomentState, clip_bounds, moment_state, moments
from tilesky.tiled._overlap import TileInput, crop_to, tile_map

__all__ = ["Tiled", "WholeImage"]

log = logging.getLogger("tilesky")


def _local_kernel(*arrays, regions, out_region, func, kw, dtype):
    out = np.asarray(func(*arrays, **kw), dtype=dtype)
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


def _to_pixels_kernel(*meshes, regions, out_region, func, kw, dtype):
    out = func(
        *meshes,
        out_shape=out_region.shape,
        out_offset=out_region.origin,
        mesh_offset=regions[0].origin,
        **kw,
    )
    return np.asarray(out, dtype=dtype)


# -- sigma clipping of the noise: one step at a time, same for both backends.
# A step's value is (count, mean, std, done); ``done`` once a pass keeps the
# same number of pixels, keeps none, or no clipping was asked for.


def _clip_start(state: MomentState, clip: float | None) -> tuple:
    n, mean, std = moments(state)
    return (n, mean, std, n == 0 or clip is None)


def _clip_range(step: tuple, clip: float) -> tuple[float, float] | None:
    """The interval the next pass keeps, or None when clipping is done."""
    _, mean, std, done = step
    return None if done else clip_bounds(mean, std, clip)


def _clip_next(step: tuple, state: MomentState | None) -> tuple:
    if step[3]:
        return step
    n2, mean2, std2 = moments(state)
    if n2 == step[0] or n2 == 0:
        return (*step[:3], True)
    return (n2, mean2, std2, False)


def _state_of_blocks(blocks, mask_blocks, outcome):
    kept = outcome[1]
    if kept is None:
        return None
    return _sum_states(
        [
            moment_state(block, lower=kept[0], upper=kept[1], mask=mask_block)
            for block, mask_block in zip(blocks, mask_blocks, strict=True)
        ]
    )


def _advance(states, outcome, clip):
    """The outcome of a clipping pass: ``(step, bounds of the next pass)``."""
    previous = outcome[0]
    state = _sum_states(states)
    step = _clip_start(state, clip) if previous is None else _clip_next(previous, state)
    return step, _clip_range(step, clip)


def _sum_states(states):
    if states[0] is None:
        return None
    return sum(states, start=MomentState())


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
    from distributed import wait

    from tilesky.cluster import current_client

    client = current_client()
    if client is None or not _in_cluster_memory(array):
        return None
    graph = array.__dask_graph__()
    futures = [graph[key] for key in flatten(array.__dask_keys__())]
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


class WholeImage:
    """Run every step on the whole in-memory array (the reference)."""

    tiled = False

    def local(self, func, arrays, *, depth, dtype, name, **kw):
        return np.asarray(func(*arrays, **kw), dtype=dtype)

    def mesh_stats(self, func, image, mask, *, box_size, name, stage=None, **kw):
        bkg, rms, n_good = func(image, mask, box_size=box_size, **kw)
        # The same dtypes as the tiled path's stacked maps.
        return bkg.astype(np.float32), rms.astype(np.float32), n_good.astype(np.int32)

    def to_pixels(
        self, func, meshes, *, box_size, depth, shape, dtype, name, pixels=(), **kw
    ):
        return func(
            *meshes,
            *pixels,
            out_shape=tuple(shape),
            out_offset=(0, 0),
            mesh_offset=(0, 0),
            **kw,
        ).astype(dtype, copy=False)

    def clipped_moments(self, array, *, clip, maxiters, mask=None):
        step = _clip_start(moment_state(array, mask=mask), clip)
        for _ in range(maxiters if clip is not None else 0):
            kept = _clip_range(step, clip)
            if kept is None:
                break
            state = moment_state(array, lower=kept[0], upper=kept[1], mask=mask)
            step = _clip_next(step, state)
        return step[:3]

    def nanmin(self, array) -> float:
        return float(np.nanmin(array)) if np.isfinite(array).any() else math.nan

    def nanmax(self, array) -> float:
        return float(np.nanmax(array)) if np.isfinite(array).any() else math.nan

    def any(self, array) -> bool:
        return bool(np.any(array))

    def checkpoint(self, name: str, array, *, resumable: bool = True):
        return array

    def checkpoint_many(self, arrays):
        return dict(arrays)

    def hold(self, array):
        return array

    def release(self, array) -> None:
        return None


class Tiled:
    """Run every step per tile on dask arrays.

    Parameters
    ----------
    checkpoint : callable, optional
        ``checkpoint(name, array, *, resumable) -> array`` materializes an
        intermediate (the store writes it to the run's Zarr group and reads
        it back, or keeps it in memory and writes it behind, unless
        ``resumable`` is False); the default persists it in the cluster's
        memory.
    cut_halos : bool, optional
        Send a neighbouring tile only the strips of a block its halo covers
        (see :func:`tile_map`). Default: when the current cluster's workers
        are separate processes (:func:`tilesky.cluster.blocks_travel`).
    """

    tiled = True

    def __init__(
        self,
        *,
        checkpoint: Callable[..., da.Array] | None = None,
        checkpoint_many: Callable | None = None,
        cut_halos: bool | None = None,
    ):
        self._checkpoint = checkpoint
        self._checkpoint_many = checkpoint_many
        if cut_halos is None:
            from tilesky.cluster import blocks_travel, current_client

            cut_halos = blocks_travel(current_client())
        self._cut_halos = cut_halos

    def local(self, func, arrays: Sequence[da.Array], *, depth, dtype, name, **kw):
        d = (depth, depth) if isinstance(depth, int) else tuple(depth)
        inputs = [TileInput(a, depth=d) for a in arrays]
        return tile_map(
            _local_kernel,
            inputs,
            name=name,
            dtype=dtype,
            kwargs={"func": func, "kw": kw, "dtype": np.dtype(dtype)},
            cut_halos=self._cut_halos,
        )

    def mesh_stats(self, func, image, mask, *, box_size, name, stage=None, **kw):
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
        stacked = tile_map(
            kernel,
            inputs,
            name=name,
            dtype=np.float32,
            out_chunks=out_chunks,
            leading=3,
            kwargs={"func": func, "kw": kw},
            cut_halos=self._cut_halos,
        )
        # One materialization for the three maps: slicing before it would
        # compute the box statistics once per map.
        if stage is not None:
            stacked = self.checkpoint(f"{stage}_mesh_stats", stacked)
        if stacked.nbytes <= WHOLE_MESH_BYTES:
            return _whole_layers(
                stacked, (np.float32, np.float32, np.int32), name="mesh-merge"
            )
        return stacked[0], stacked[1], stacked[2].astype(np.int32)

    def to_pixels(
        self, func, meshes, *, box_size, depth, shape, dtype, name, pixels=(), **kw
    ):
        d = (depth, depth) if isinstance(depth, int) else tuple(depth)
        chunks = kw.pop("chunks")
        inputs = [TileInput(m, depth=d, down=tuple(box_size)) for m in meshes]
        # Full-resolution inputs come without a halo, after the meshes.
        inputs += [TileInput(p) for p in pixels]
        return tile_map(
            _to_pixels_kernel,
            inputs,
            name=name,
            dtype=dtype,
            out_chunks=chunks,
            out_shape=tuple(shape),
            kwargs={"func": func, "kw": kw, "dtype": np.dtype(dtype)},
            cut_halos=self._cut_halos,
        )

    def clipped_moments(self, array, *, clip, maxiters, mask=None):
        """Every clipping pass in one computation: one synchronization.

        Each pass is a task per block (per worker thread for an array held
        in a cluster's memory: see ``_held_groups``) and one task that sums
        their states and gives the next pass its bounds, inside the graph.
        Passes after convergence do nothing.
        """
        blocks = array.to_delayed().ravel()
        masks = mask.to_delayed().ravel() if mask is not None else [None] * len(blocks)
        groups = _held_groups(array) or [[k] for k in range(len(blocks))]
        token = tokenize(array.name, mask.name if mask is not None else None, clip)
        part = dask.delayed(_state_of_blocks, pure=True)
        advance = dask.delayed(_advance, pure=True)
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
            outcome = advance(
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
        """Materialize ``array`` (see the ``checkpoint`` parameter).

        ``resumable=False``: a resumed run can rebuild it cheaply, so the
        store need not write it when it keeps it in memory.
        """
        if self._checkpoint is not None:
            return self._checkpoint(name, array, resumable=resumable)
        return array.persist()

    def checkpoint_many(self, arrays):
        if self._checkpoint_many is not None:
            return self._checkpoint_many(arrays)
        if self._checkpoint is not None:
            return {n: self._checkpoint(n, a) for n, a in arrays.items()}
        names = list(arrays)
        return dict(zip(names, dask.persist(*arrays.values()), strict=True))

    def hold(self, array: da.Array) -> da.Array:
        """Keep ``array`` in the cluster's memory for repeated passes.

        Only when it takes at most a quarter of the workers' memory; a
        mosaic larger than that is re-read from the store on each pass.
        """
        from tilesky.cluster import current_client, holdable_bytes

        client = current_client()
        if array.nbytes > holdable_bytes(client):
            return array
        return array.persist() if client is None else client.persist(array)

    def release(self, array) -> None:
        del array

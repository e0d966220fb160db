"""The run store: one Zarr group per run, resumable, never mistaken for finished.

Layout (readable with ``xarray.open_zarr``)::

    OUT.zarr/
      background, background_rms, subtracted   float32 (y, x)
      mask                                      bool    (y, x)
      background_mesh, background_rms_mesh      float32 (y_mesh, x_mesh)
      n_pixels_mesh                             int32   (y_mesh, x_mesh)
      first_background_mesh, ...                the first mesh stage's maps
                                                (y_mesh_first, x_mesh_first)
      metrics.json                              the quality metrics
      _work/<name>                              checkpoints of a run in progress

Root attributes: ``tilesky_status`` (``"running"`` until the very last write,
then ``"complete"``), ``tilesky_version``, ``config``, ``input``, ``wcs_header``,
``timings``, ``noise``, ``metrics``.

Every array is written block by block (one task writes a tile's block of
every array written together), and a block that already exists in the store
is not computed again: a run that was killed continues with ``resume=True``
from the blocks it had written. Block writes are idempotent (same bytes
every time), so a block that a killed worker was writing is simply written
again. Local chunk writes are atomic (zarr writes a temporary file and
renames it), as are object-store PUTs.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import time
import uuid
import warnings
import weakref
from collections.abc import Mapping
from typing import Any

import dask
import dask.array as da
import numpy as np
import zarr
from zarr.core.sync import sync

from tilesky import _progress
from tilesky._checksums import (
    PIXELS_KEY,
    chunk_codecs,
    drop_damaged,
    pixel_checksums,
    refuse_changed_pixels,
)
from tilesky._lease import Lease
from tilesky._lock import (
    _check_lock,
    _lock_path,
    _path_exists,
    _path_is_empty,
    _release_lock,
)
from tilesky._version import __version__
from tilesky.backends._tile_map import ZarrSource
from tilesky.errors import OutputExistsError, StoreError, out_of_space
from tilesky.io._urls import bounded_options, probe_object_store

__all__ = [
    "OutputExistsError",
    "RunStore",
    "StoreError",
    "open_run",
    "run_status",
]

log = logging.getLogger("tilesky")

STATUS_KEY = "tilesky_status"
COMPLETE = "complete"
RUNNING = "running"
WORK = "_work"


def _open_group(url: str, mode: str, storage_options: dict | None):
    kw: dict[str, Any] = {"mode": mode}
    if storage_options and "://" in url:
        kw["storage_options"] = storage_options
    return zarr.open_group(store=url, **kw)


def run_status(url: str, *, storage_options: dict | None = None) -> str | None:
    """The status of the run store at ``url``.

    Parameters
    ----------
    url : str
        Path or fsspec URL of the store.
    storage_options : dict, optional
        fsspec options.

    Returns
    -------
    str or None
        ``"complete"``, ``"running"`` (unfinished), another value for a
        group that is not a tilesky run, or None when nothing is there.
    """
    storage_options = bounded_options(url, storage_options)
    probe_object_store(url, storage_options)
    try:
        group = _open_group(url, "r", storage_options)
    except (FileNotFoundError, KeyError, zarr.errors.GroupNotFoundError):
        return None
    except Exception as exc:
        msg = f"cannot read output {_display(url)!r}: {exc}"
        raise StoreError(msg) from None
    return str(group.attrs.get(STATUS_KEY, "unknown"))


def open_run(url: str, *, storage_options: dict | None = None):
    """Open a finished run; refuse an unfinished one.

    Parameters
    ----------
    url : str
        Path or fsspec URL of the store.
    storage_options : dict, optional
        fsspec options.

    Returns
    -------
    xarray.Dataset
        The outputs, read lazily, with the run's attributes.
    """
    import xarray as xr

    status = run_status(url, storage_options=storage_options)
    if status is None:
        msg = f"no tilesky run at {_display(url)!r}"
        raise StoreError(msg)
    if status not in (COMPLETE, RUNNING):
        msg = (
            f"{_display(url)!r} is not a tilesky run (an input store?); give the "
            "output of a tilesky run"
        )
        raise StoreError(msg)
    if status != COMPLETE:
        msg = (
            f"the run at {_display(url)!r} did not finish (status {status!r}); "
            "run it again with resume=True to continue it, or start it again"
        )
        raise StoreError(msg, params="resume")
    remote = _lock_path(str(url)) is None
    kw = {"storage_options": storage_options} if storage_options and remote else {}
    with warnings.catch_warnings():
        # The status is written before the metadata is consolidated; a run
        # stopped between the two is complete and opens without it.
        warnings.simplefilter("ignore", RuntimeWarning)
        return xr.open_zarr(url, consolidated=None, **kw)


def _write_block(block: np.ndarray, url: str, storage_options, path: str, region):
    # The run store is always Zarr v3: saying so spares every block write the
    # v2 metadata probes (four requests per block on an object store).
    arr = zarr.open_array(
        store=url,
        path=path,
        mode="r+",
        zarr_format=3,
        **({"storage_options": storage_options} if storage_options else {}),
    )
    with out_of_space(_display(url)):
        arr[region] = block
    return 1


def _write_blocks(blocks, url: str, storage_options, paths, regions) -> int:
    """Write one block of each of several arrays; the number written.

    A failing write fails the task: the blocks it wrote before stay in the
    store (a resumed run skips them) but are not counted as written.
    """
    return sum(
        _write_block(block, url, storage_options, path, region)
        for block, path, region in zip(blocks, paths, regions, strict=True)
    )


async def _keys_with_prefix(store, prefix: str) -> set[str]:
    return {key async for key in store.list_prefix(prefix)}


class RunStore:
    """A run's Zarr group.

    Parameters
    ----------
    url : str
        Local path or fsspec URL of the group.
    storage_options : dict, optional
        fsspec options (endpoint, credentials); never written to the store.
    """

    def __init__(self, url: str, *, storage_options: dict | None = None):
        self.url = str(url)
        # Options are the object store's (endpoint, credentials): a local
        # output, such as one beside an S3 input, takes none.
        remote = _lock_path(self.url) is None
        self.storage_options = (
            bounded_options(self.url, storage_options) if remote else {}
        )
        self.blocks_written = 0
        self.blocks_skipped = 0
        self.group = None
        # Block writes still running (futures) while the run goes on.
        self._pending: list = []
        # The checkpoint writes among them: a finishing run cancels those not
        # yet started, since nothing will read them.
        self._pending_work: list = []
        #: Bytes of this run's intermediates kept in the workers' memory.
        self.kept_bytes = 0
        #: Store paths whose arrays, when kept in the workers' memory, stay
        #: referenced in ``held`` (the metrics read the run's scene from
        #: there rather than from the input again); others are freed once
        #: the pipeline drops them.
        self.remember: frozenset[str] = frozenset()
        self.held: dict[str, da.Array] = {}
        #: What keeping every intermediate of this run in memory would take
        #: (set by the pipeline's driver); None: never keep.
        self.keep_bytes: int | None = None
        # Created empty by this object: no block of it exists yet.
        self._fresh = False
        self._run = uuid.uuid4().hex
        self._unlock: Any = lambda: None
        self._held_lease: Lease | None = None
        #: Arrays of this store (by dask name) that tiles may read from Zarr
        #: themselves (see :class:`~tilesky.backends.ZarrSource`).
        self.sources: dict[str, ZarrSource] = {}

    # -- life cycle -----------------------------------------------------------
    def create(
        self,
        *,
        overwrite: bool = False,
        resume: bool = False,
        attrs: Mapping[str, Any] | None = None,
        pixels: Mapping[str, da.Array] | None = None,
    ) -> bool:
        """Create the group, or reopen an unfinished one with ``resume``.

        Parameters
        ----------
        overwrite : bool, optional
            Replace an existing tilesky run (or empty directory).
        resume : bool, optional
            Continue an unfinished run at ``url``.
        attrs : mapping, optional
            Attributes of the new group.
        pixels : mapping of str to dask.array.Array, optional
            The input's arrays (image, weight map, mask): their block
            checksums are recorded in a new group, and a resumed one is
            refused when they changed.

        Returns
        -------
        bool
            True when the run must be computed, False when ``resume`` found a
            finished run with nothing left to do.
        """
        status = run_status(self.url, storage_options=self.storage_options)
        shown = _display(self.url)
        foreign = status not in (None, COMPLETE, RUNNING) or (
            status is None
            and _path_exists(self.url, self.storage_options)
            and (not overwrite or not _path_is_empty(self.url, self.storage_options))
        )
        if foreign:
            # Overwriting deletes everything under the path: only what
            # tilesky wrote (or nothing) may be deleted.
            msg = (
                f"output {shown!r} exists and is not a tilesky run; choose another "
                "path (overwrite=True replaces only a tilesky run or an empty "
                "directory)"
            )
            raise OutputExistsError(msg, params="overwrite")
        if status is not None and not overwrite:
            if resume:
                self.group = _open_group(self.url, "r+", self.storage_options)
                self._check_same_run(attrs, status)
                what = "finished" if status == COMPLETE else "started"
                refuse_changed_pixels(
                    self.group.attrs, pixels, _display(self.url), what
                )
                if status == RUNNING:
                    self._lock()
                return status == RUNNING
            kind = "a finished run" if status == COMPLETE else "an unfinished run"
            hint = (
                "overwrite=True to replace it"
                if status == COMPLETE
                else "resume=True to continue it or overwrite=True to replace it"
            )
            msg = f"output {shown!r} already exists ({kind}); pass {hint}"
            raise OutputExistsError(msg, params=("resume", "overwrite"))
        if status is not None or overwrite:
            # Refuse before deleting: another run may be writing there.
            _check_lock(self.url, shown)
            if _lock_path(self.url) is None:
                self._lease().check()
        recorded = {} if pixels is None else {PIXELS_KEY: pixel_checksums(pixels)}
        try:
            self.group = _open_group(self.url, "w", self.storage_options)
            self._fresh = True
        except Exception as exc:
            msg = f"cannot create output {shown!r}: {exc}"
            raise StoreError(msg) from None
        self._lock()
        with out_of_space(shown):
            self.group.attrs.update(
                {
                    STATUS_KEY: RUNNING,
                    "tilesky_version": __version__,
                    **dict(attrs or {}),
                    **recorded,
                }
            )
        return True

    def _lock(self) -> None:
        """One writer per output: a lock file (local) or a lease (object store)."""
        path = _lock_path(self.url)
        if path is None:
            lease = self._lease()
            lease.take()
            self._held_lease = lease
            self._unlock = weakref.finalize(self, lease.release)
            return
        record = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "time": time.time(),
            "run": self._run,
        }
        for _ in range(2):
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                _check_lock(self.url, _display(self.url))
                continue  # the stale lock was removed
            with os.fdopen(fd, "w") as f:
                json.dump(record, f)
            self._unlock = weakref.finalize(self, _release_lock, path, self._run)
            return
        msg = f"cannot lock output {_display(self.url)!r}: another run took it"
        raise StoreError(msg)

    def _lease(self) -> Lease:
        return Lease(self.url, self.storage_options, self._run, _display(self.url))

    def release(self) -> None:
        """Give up the output's lock (the run finished or failed)."""
        self._unlock()

    def _check_same_run(self, attrs: Mapping[str, Any] | None, status: str) -> None:
        """Refuse to resume a run started from other inputs or settings."""
        if attrs is None:
            return
        keys = ("config", "input", "mask_input", "weight_input", "tilesky_version")
        for key in keys:
            before = self.group.attrs.get(key)
            now = __version__ if key == "tilesky_version" else attrs.get(key)
            if json.dumps(_jsonable(before), sort_keys=True) != json.dumps(
                _jsonable(now), sort_keys=True
            ):
                what = "finished" if status == COMPLETE else "started"
                msg = (
                    f"cannot resume {_display(self.url)!r}: it was {what} with a "
                    f"different {key.replace('_', ' ')}; pass overwrite=True to "
                    "start again"
                )
                raise StoreError(msg, params="overwrite")

    def discard(self) -> None:
        """Delete the group (used when a new run fails before any block).

        A group that holds a block is kept (unfinished, resumable): a run
        that lost its scheduler cannot count the blocks its workers wrote.
        """
        import fsspec

        self.release()
        try:
            keys = sync(_keys_with_prefix(self.group.store, ""))
            if any("/c/" in key for key in keys):
                log.info("keeping unfinished output %s: it holds blocks", self.url)
                return
        except Exception:
            pass  # cannot list it: remove it as before
        try:
            fs, path = fsspec.core.url_to_fs(self.url, **self.storage_options)
            fs.rm(path, recursive=True)
        except Exception as exc:
            log.warning("could not remove unfinished output %s: %s", self.url, exc)

    def write_json(self, name: str, value: Any) -> None:
        """Write a JSON file beside the arrays (e.g. ``metrics.json``).

        Parameters
        ----------
        name : str
            File name inside the store.
        value : object
            JSON-serialisable value (numpy scalars and arrays included).
        """
        import fsspec

        text = json.dumps(_jsonable(value), indent=1, sort_keys=True)
        where = f"{self.url.rstrip('/')}/{name}"
        with out_of_space(_display(self.url)):
            with fsspec.open(where, "w", **self.storage_options) as f:
                f.write(text)

    def finish(
        self, attrs: Mapping[str, Any] | None = None, *, keep_work: bool = False
    ):
        """Write the last attributes, drop checkpoints, mark the run complete.

        Parameters
        ----------
        attrs : mapping, optional
            Attributes added to the group.
        keep_work : bool, optional
            Keep the checkpoints under ``_work/``.
        """
        self.drain()
        with out_of_space(_display(self.url)):
            if attrs:
                self.group.attrs.update(_jsonable(dict(attrs)))
            if self._held_lease is not None:
                self._held_lease.confirm()
            if not keep_work and WORK in self.group:
                del self.group[WORK]
            self.group.attrs[STATUS_KEY] = COMPLETE
            with warnings.catch_warnings():
                # Consolidated metadata is not yet in the v3 spec, but xarray
                # reads it and then opens the group with one request.
                warnings.simplefilter("ignore")
                zarr.consolidate_metadata(self.group.store)
        self.release()

    # -- arrays -----------------------------------------------------------------
    def _existing_blocks(self, path: str) -> set[tuple[int, ...]]:
        """Blocks of ``path`` in the store whose checksums hold.

        A damaged block (zeroed, overwritten, truncated) is deleted, so it
        is computed again rather than reused.
        """
        store = self.group.store
        prefix = f"{path}/c/"
        keys = sync(_keys_with_prefix(store, prefix))
        found = {}
        for key in keys:
            parts = key[len(prefix) :].split("/")
            try:
                found[key] = tuple(int(p) for p in parts)
            except ValueError:
                continue
        if self._fresh or not found:
            return set(found.values())
        damaged = drop_damaged(store, found, self.group[path], _display(self.url))
        return {index for key, index in found.items() if key not in damaged}

    def write_array(
        self,
        path: str,
        array: da.Array,
        *,
        dims: tuple[str, ...] | None = None,
        attrs: Mapping[str, Any] | None = None,
    ) -> da.Array:
        """Write ``array`` block by block, skipping blocks already stored.

        Parameters
        ----------
        path : str
            The array's path in the group.
        array : dask.array.Array
            The values.
        dims : tuple of str, optional
            Dimension names (for xarray).
        attrs : mapping, optional
            Attributes of the array.

        Returns
        -------
        dask.array.Array
            The stored array, read back lazily.
        """
        return self.write_arrays([(path, array, dims, attrs)])[0]

    def _target(self, path, array, dims, attrs):
        with out_of_space(_display(self.url)):
            return self._make_target(path, array, dims, attrs)

    def _make_target(self, path, array, dims, attrs):
        chunks = tuple(c[0] for c in array.chunks)
        fill = np.nan if array.dtype.kind == "f" else 0
        target = None
        if path in self.group and isinstance(self.group[path], zarr.Array):
            target = self.group[path]
            if (
                target.shape != array.shape
                or target.chunks != chunks
                or (target.dtype != array.dtype)
            ):
                del self.group[path]
                target = None
        if target is None:
            target = self.group.create_array(
                path,
                shape=array.shape,
                chunks=chunks,
                dtype=array.dtype,
                fill_value=fill,
                dimension_names=dims,
                config={"write_empty_chunks": True},
                compressors=chunk_codecs(work=path.startswith(f"{WORK}/")),
            )
        if attrs:
            target.attrs.update(_jsonable(dict(attrs)))
        return target

    def write_arrays(
        self, items, *, keep: bool = False, write_kept: bool = True
    ) -> list[da.Array]:
        """Write several arrays in one computation (shared inputs once).

        ``items`` holds ``(path, array, dims, attrs)`` tuples; returns the
        stored arrays, read back lazily.

        With ``keep``, on a cluster this process started or hosts (see
        :func:`tilesky.cluster.keeps_intermediates`), when the store
        was created by this object (no block exists yet) and the run's
        intermediates fit in memory (see ``keep_bytes``): the arrays are
        computed into the workers' memory and returned from there, and their
        blocks are written in the background (:meth:`drain` waits for the
        writes). The next stage then neither waits for the writes nor reads
        the blocks back. Checkpoint blocks (under ``_work/``) are written
        after any other ready task, in the pauses between stages. With the
        in-process worker, those still unwritten when the outputs are
        complete are skipped, since only a run killed before its end reads
        them; worker processes write them all (on the 6000x6000 benchmark
        every checkpoint block was written before the outputs were).
        With ``write_kept=False``, arrays kept in memory are not written at
        all (a copy of the input, which a resumed run reads again).

        Parameters
        ----------
        items : iterable of tuple
            ``(path, array, dims, attrs)`` as in :meth:`write_array`.
        keep : bool, optional
            Keep the arrays in the workers' memory where allowed (above).
        write_kept : bool, optional
            Write the blocks of arrays kept in memory.

        Returns
        -------
        list of dask.array.Array
            The stored arrays, in the order of ``items``.
        """
        arrays = [item[1] for item in items]
        client = self._keeping_client(arrays) if keep and self._fresh else None
        if client is not None:
            # Computing starts before the arrays' metadata is written.
            arrays = client.persist(arrays)
            self.held.update(
                (item[0], arr)
                for item, arr in zip(items, arrays, strict=True)
                if item[0] in self.remember
            )
            if not write_kept:
                return arrays
            targets = [self._target(*item) for item in items]
            existing = [set() for _ in items]
            work = all(item[0].startswith(f"{WORK}/") for item in items)
            tasks = self._write_tasks(arrays, targets, existing)
            futures = client.compute(tasks, priority=-1 if work else 0)
            self._pending.extend(futures)
            if work:
                self._pending_work.extend(futures)
            return arrays
        targets = [self._target(*item) for item in items]
        existing = [self._existing_blocks(t.path) for t in targets]
        tasks = self._write_tasks(arrays, targets, existing)
        if tasks:
            paths = ", ".join(item[0] for item in items)
            n_blocks = sum(
                int(np.prod(a.numblocks)) - len(done)
                for a, done in zip(arrays, existing, strict=True)
            )
            label = f"writing {paths} ({n_blocks} blocks)"
            self.blocks_written += sum(_progress.compute(*tasks, label=label))
        return [
            self._stored(target, item[1].chunks)
            for item, target in zip(items, targets, strict=True)
        ]

    def _keeping_client(self, arrays) -> Any | None:
        """The client to keep ``arrays`` with (see ``keeps_intermediates``), or None."""
        from tilesky.cluster import current_client, holdable_bytes, keeps_intermediates

        if self.keep_bytes is None:
            return None
        client = current_client()
        if client is None or not keeps_intermediates(client):
            return None
        # All or nothing: a run whose intermediates would not all fit keeps
        # none (a mosaic streams through the store), so memory stays bounded
        # by the tiles in flight. The count guards the estimate.
        budget = holdable_bytes(client)
        nbytes = sum(a.nbytes for a in arrays)
        if self.keep_bytes > budget or self.kept_bytes + nbytes > budget:
            return None
        self.kept_bytes += nbytes
        return client

    def _write_tasks(self, arrays, targets, existing) -> list:
        """One task per block position: it writes that block of every array.

        Arrays with the same block grid (the full-resolution maps and the
        mesh maps of one run: one block per tile) share their tasks, so a
        tile's outputs cost the scheduler one task instead of one per array.
        """
        groups: dict[tuple, list] = {}
        for array, target, done in zip(arrays, targets, existing, strict=True):
            bounds = [np.concatenate([[0], np.cumsum(c)]) for c in array.chunks]
            # Low-level fusion would rename tasks after the chain they fuse
            # ("getitem-mesh-stats-astype"); unfused, each task keeps its
            # stage's name on the dashboard, for a handful more tasks.
            with dask.config.set({"optimization.fuse.active": False}):
                blocks = array.to_delayed()
            for index in np.ndindex(*blocks.shape):
                if index in done:
                    self.blocks_skipped += 1
                    continue
                region = tuple(
                    slice(int(b[i]), int(b[i + 1]))
                    for b, i in zip(bounds, index, strict=True)
                )
                entry = (blocks[index], target.path, region)
                groups.setdefault((blocks.shape, index), []).append(entry)
        # Keys ("store-<unique>", i, j): the dashboard groups them as "store",
        # and two runs sharing a scheduler never share a key.
        names: dict[tuple, str] = {}
        tasks = []
        for (grid, index), entries in groups.items():
            name = names.setdefault(grid, f"store-{uuid.uuid4().hex}")
            tasks.append(
                dask.delayed(_write_blocks, pure=False)(
                    [e[0] for e in entries],
                    self.url,
                    self.storage_options or None,
                    [e[1] for e in entries],
                    [e[2] for e in entries],
                    dask_key_name=(name, *index),
                )
            )
        return tasks

    def _stored(self, target, chunks) -> da.Array:
        arr = da.from_zarr(target, chunks=chunks)
        if arr.ndim == 2:
            options = tuple(sorted(self.storage_options.items()))
            self.sources[arr.name] = ZarrSource(self.url, target.path, options)
        return arr

    def stored(self, path: str, chunks) -> da.Array:
        """The array written at ``path``, read lazily from the store.

        Parameters
        ----------
        path : str
            The array's path in the group.
        chunks : tuple
            The dask chunks to read it in.

        Returns
        -------
        dask.array.Array
            The stored values.
        """
        return self._stored(self.group[path], chunks)

    def drain(self, *, raise_errors: bool = True) -> None:
        """Wait for the block writes still running; count them.

        Checkpoint blocks not yet written are skipped: the run no longer
        needs them.

        Parameters
        ----------
        raise_errors : bool, optional
            Raise the first write error; False for a run that already failed
            and only needs its writes finished before it decides what to
            leave behind.
        """
        pending, self._pending = self._pending, []
        work, self._pending_work = self._pending_work, []
        if not pending:
            if not raise_errors:
                self.release()
            return
        from distributed import wait

        skipped = {f.key for f in work if f.status == "pending"}
        if skipped:
            work[0].client.cancel([f for f in work if f.key in skipped])
        # wait() raises once all are done if some were cancelled; every
        # future that did not finish is accounted for below.
        with contextlib.suppress(Exception):
            wait(pending)
        error = None
        unfinished = 0
        finished = []
        for future in pending:
            if future.status == "finished":
                finished.append(future)
            elif future.key in skipped and future.status == "cancelled":
                continue
            elif future.status == "error":
                error = error or future.exception()
            else:
                unfinished += 1
        if finished:
            # One gather, not a round trip to a worker per block.
            self.blocks_written += sum(finished[0].client.gather(finished))
        if error is None and unfinished:
            # Cancelled or lost with the cluster: the blocks may be missing.
            msg = (
                f"{unfinished} block write(s) to {_display(self.url)!r} did not "
                "finish (the cluster stopped?); run again with resume=True"
            )
            error = StoreError(msg, params="resume")
        if not raise_errors:
            # Only a run that failed drains without raising: it writes no more.
            self.release()
        if error is not None and raise_errors:
            raise error

    def checkpoint_many(
        self, arrays: Mapping[str, da.Array], *, resumable: bool = True
    ) -> dict[str, da.Array]:
        """Materialize several intermediates in one computation.

        Parameters
        ----------
        arrays : mapping of str to dask.array.Array
            The intermediates by checkpoint name.
        resumable : bool, optional
            False for intermediates a resumed run can rebuild cheaply: when
            kept in memory they are then not written.

        Returns
        -------
        dict of str to dask.array.Array
            The same names, materialized.
        """
        names = list(arrays)
        stored = self.write_arrays(
            [(f"{WORK}/{n}", arrays[n], None, None) for n in names],
            keep=True,
            write_kept=resumable,
        )
        return dict(zip(names, stored, strict=True))

    def checkpoint(
        self, name: str, array: da.Array, *, resumable: bool = True
    ) -> da.Array:
        """Materialize an intermediate under ``_work/``.

        Parameters
        ----------
        name : str
            The checkpoint's name.
        array : dask.array.Array
            The intermediate.
        resumable : bool, optional
            As in :meth:`checkpoint_many`.

        Returns
        -------
        dask.array.Array
            Read back lazily from the store, or kept in memory while its
            blocks are written (see :meth:`write_arrays`).
        """
        return self.checkpoint_many({name: array}, resumable=resumable)[name]


def _display(url: str) -> str:
    """The URL as it may be shown: without credentials."""
    from tilesky.io import strip_credentials

    return strip_credentials(url)


def _jsonable(value: Any) -> Any:
    """Make numpy scalars, tuples and NaN safe for JSON attributes."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value

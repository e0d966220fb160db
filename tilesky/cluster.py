"""Where the graph runs: a local cluster, an existing scheduler, or threads.

* ``scheduler=None``: a :class:`distributed.LocalCluster` sized to the
  machine: by default its scheduler and one worker run in this process with
  one thread per core, connected in memory (no port; other processes cannot
  submit work to it); with ``n_workers`` it starts that many worker
  processes (one thread each) and the scheduler listens on tcp. Scheduler
  and dashboard bind to 127.0.0.1 (an unauthenticated scheduler must not
  listen on every interface unless asked to, with ``host="0.0.0.0"``).
* ``"tcp://HOST:PORT"`` (or ``tls://``): connect to a running scheduler;
  TLS settings come from dask's own configuration (``distributed.comm.tls``).
* a path to a scheduler file (as written by ``dask scheduler
  --scheduler-file``).
* ``"threads"``: no cluster, dask's threaded scheduler in this process.

One in-process worker is the local default because every hot kernel
(numba with ``nogil``, numpy, scipy.ndimage, zarr's codecs) releases the
GIL: tiles then share one address space, halos and checkpoints are not
copied between processes, and nothing has to be imported or compiled again
in a worker. Starting the in-process cluster takes ~0.3 s on the 2-core
test machine against ~2.5 s for two worker processes that import tilesky.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import dask

from tilesky.errors import ClusterError

__all__ = [
    "ClusterError",
    "ExecutionContext",
    "current_client",
    "execution",
    "holdable_bytes",
    "keeps_intermediates",
    "thread_count",
]

log = logging.getLogger("tilesky")


@dataclass
class ExecutionContext:
    """What :func:`execution` set up."""

    kind: str
    client: object | None = None
    dashboard_link: str | None = None


#: distributed's nannies set ``MALLOC_TRIM_THRESHOLD_=65536`` in a worker's
#: environment so that freed memory goes back to the OS at once. Setting it
#: also turns off glibc's sliding mmap threshold: every tile-sized numpy
#: temporary (megabytes) is then a fresh mmap whose pages the kernel zeroes
#: one fault at a time. On a 6000x6000 run with one worker process that was
#: 17 of the worker's 46 CPU seconds in the kernel; without it the run is
#: about 1.4x as fast (49.4 -> 35.3 s, 54.2 -> 39.3 s in an A/B). Workers
#: of the local cluster start without it (the other thread caps stay);
#: arrays above glibc's 32 MiB mmap ceiling are still returned to the OS
#: when freed.
_WORKER_ENVIRON = {"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}


#: Clients of the local clusters started by :func:`execution`.
_LOCAL_CLIENTS: weakref.WeakSet = weakref.WeakSet()


def _cpu_count() -> int:
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except AttributeError:
        return max(os.cpu_count() or 1, 1)


@contextlib.contextmanager
def execution(
    scheduler: str | None = None,
    *,
    n_workers: int | None = None,
    threads_per_worker: int | None = None,
    memory_limit: str | None = "auto",
    host: str = "127.0.0.1",
    dashboard: bool = True,
    announce: Callable[[str], None] | None = None,
) -> Iterator[ExecutionContext]:
    """Context in which dask computations run where the user asked.

    Parameters
    ----------
    scheduler : str, optional
        ``None`` (local cluster), ``"threads"``, ``"tcp://..."`` / ``"tls://..."``,
        or a scheduler-file path.
    n_workers : int, optional
        Worker processes of the local cluster. Default: no worker process,
        one worker inside this process.
    threads_per_worker : int, optional
        Threads per local worker (default: one per core for the in-process
        worker, one for each worker process).
    memory_limit : str, optional
        Memory limit of each local worker (dask's syntax, ``"auto"`` shares
        the machine's memory).
    host : str
        Interface the local scheduler and dashboard bind to.
    dashboard : bool
        Serve the local cluster's dashboard (on ``host``, a free port).
    announce : callable, optional
        Called with a one-line message: the cluster, its workers and its
        dashboard address (default: print on stderr).

    Yields
    ------
    ExecutionContext
        ``kind`` (``"threads"``, ``"local"`` or ``"remote"``), the
        distributed client (None for threads) and the dashboard link.

    Raises
    ------
    ClusterError
        The local cluster cannot start or the scheduler cannot be reached.

    Examples
    --------
    >>> import dask.array as da
    >>> from tilesky.cluster import execution
    >>> with execution("threads") as ctx:
    ...     int(da.ones(10, chunks=5).sum().compute())
    10
    >>> ctx.kind
    'threads'
    """
    say = announce or (lambda msg: print(msg, file=sys.stderr))
    if scheduler == "threads":
        with dask.config.set(scheduler="threads"):
            yield ExecutionContext("threads")
        return

    from distributed import Client, LocalCluster

    if scheduler is None:
        processes = n_workers is not None
        workers = n_workers if processes else 1
        threads = threads_per_worker or (1 if processes else _cpu_count())
        # Worker processes talk tcp on ``host``. The in-process worker talks
        # to the scheduler and this client through memory (inproc): results
        # and intermediates are handed over without serialization, and
        # tilesky keeps small intermediates in its memory (see
        # keeps_intermediates). The dashboard is served on ``host``
        # either way.
        where = {"protocol": "tcp", "host": host} if processes else {}
        try:
            with dask.config.set(_WORKER_ENVIRON):
                cluster = LocalCluster(
                    n_workers=workers,
                    threads_per_worker=threads,
                    processes=processes,
                    dashboard_address=f"{host}:0" if dashboard else None,
                    **where,
                    memory_limit=memory_limit,
                    silence_logs=logging.ERROR,
                )
        except Exception as exc:
            msg = f"cannot start a local Dask cluster: {exc}"
            raise ClusterError(msg) from None
        client = Client(cluster)
        _LOCAL_CLIENTS.add(client)
        link = None
        if dashboard:
            # distributed builds the link from the scheduler's address, which
            # an in-process scheduler does not have: say where it listens.
            port = cluster.scheduler_info["services"]["dashboard"]
            shown = "127.0.0.1" if host in ("", "0.0.0.0") else host
            link = f"http://{shown}:{port}/status"
        what = (
            f"{workers} worker process(es)"
            if processes
            else f"one in-process worker, {threads} thread(s)"
        )
        say(
            f"tilesky: local cluster with {what}"
            + (f"; dashboard: {link}" if link else "")
        )
        try:
            yield ExecutionContext("local", client, link)
        finally:
            client.close()
            cluster.close()
        return

    kw: dict = {}
    if "://" in scheduler:
        kw["address"] = scheduler
    elif os.path.exists(scheduler):
        kw["scheduler_file"] = scheduler
    else:
        msg = (
            f"scheduler={scheduler!r} is neither 'threads', an address like "
            "tcp://HOST:PORT, nor an existing scheduler file"
        )
        raise ClusterError(msg, params="scheduler")
    try:
        client = Client(timeout="10s", **kw)
    except Exception as exc:
        msg = f"cannot connect to the Dask scheduler at {scheduler}: {exc}"
        raise ClusterError(msg) from None
    try:
        link = client.dashboard_link or None
        n_workers = len(client.nthreads())
    except Exception as exc:
        client.close()
        msg = f"the Dask scheduler at {scheduler} does not answer: {exc}"
        raise ClusterError(msg) from None
    where = (
        scheduler
        if "://" in scheduler
        else f"{client.scheduler.address} (scheduler file {scheduler})"
    )
    # Tasks wait for workers rather than fail, and an adaptive cluster only
    # grows once tasks arrive: say so instead of seeming to hang.
    workers = (
        f"{n_workers} worker(s)"
        if n_workers
        else "no workers yet (tasks wait until workers join)"
    )
    say(
        f"tilesky: connected to {where} with {workers}"
        + (f"; dashboard: {link}" if link else "; no dashboard")
    )
    try:
        yield ExecutionContext("remote", client, link)
    finally:
        client.close()


def current_client() -> Any | None:
    """The distributed client that ``dask.compute`` would use, if any.

    None under dask's local schedulers (``scheduler="threads"``/``"sync"``)
    or when no client exists.
    """
    if dask.config.get("scheduler", None) not in (None, "dask.distributed"):
        return None
    try:
        from distributed import default_client
    except ImportError:
        return None
    try:
        return default_client()
    except ValueError:
        return None


def thread_count() -> int:
    """Threads that will run tasks: the cluster's, else this machine's cores."""
    client = current_client()
    if client is not None:
        threads = sum(client.nthreads().values())
        if threads:
            return threads
    return int(dask.config.get("num_workers", None) or _cpu_count())


def keeps_intermediates(client: Any) -> bool:
    """Whether a run may keep its intermediates in ``client``'s workers.

    True for the local clusters :func:`execution` starts (in-process or
    with worker processes) and any cluster whose workers all run inside
    this process (``inproc``): the next stage then reads an intermediate
    from memory, without a write and a read back. A local worker process
    that dies (its nanny kills it at the memory limit) loses what it held,
    and dask recomputes that from the graph (tested). A run on an existing
    scheduler streams every intermediate through the store instead: such a
    cluster is shared and long-lived, its nodes may be preempted, and a
    lost worker then costs only its tiles in flight, the stored blocks
    being durable.
    """
    if client in _LOCAL_CLIENTS:
        return True
    return _all_in_this_process(client.scheduler_info().get("workers", {}))


def _all_in_this_process(workers) -> bool:
    """Whether there are workers and all run inside this process (``inproc``)."""
    return bool(workers) and all(addr.startswith("inproc://") for addr in workers)


def blocks_travel(client: Any | None) -> bool:
    """Whether a tile may run in another process than the blocks it reads.

    True when ``client``'s cluster has more than one worker and not all of
    them run inside this process: only then is it worth cutting the halo
    strips of a block where it is (see :mod:`tilesky.backends._tile_map`)
    rather than handing a neighbouring tile the whole block. Threads that
    share memory (dask's local schedulers, the in-process worker) pay for
    the extra tasks and gain nothing.
    """
    if client is None:
        return False
    workers = client.scheduler_info().get("workers", {})
    return len(workers) > 1 and not _all_in_this_process(workers)


def holdable_bytes(client: Any | None = None) -> int:
    """How many bytes of intermediates tilesky may keep in memory at once.

    A quarter of the workers' memory limits (with ``client``), or of this
    machine's available memory; the rest is left to the tiles being
    computed and to the data of other users of the cluster.
    """
    if client is not None:
        workers = client.scheduler_info().get("workers", {}).values()
        limit = sum(w.get("memory_limit") or 0 for w in workers)
        if limit:
            return limit // 4
    import psutil

    return int(psutil.virtual_memory().available) // 4

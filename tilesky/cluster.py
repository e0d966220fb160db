"""Where the graph runs: a local cluster, an existing scheduler, or threads.

* ``scheduler=None``: a :class:`distributed.LocalCluster` sized to the
  machine: by default its scheduler and one worker run in this process with
  one thread per core; with ``n_workers`` it starts that many worker
  processes (one thread each). Scheduler and dashboard bind to 127.0.0.1 (an
  unauthenticated scheduler must not listen on every interface unless asked
  to, with ``host="0.0.0.0"``).
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
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import dask

__all__ = ["ClusterError", "ExecutionContext", "execution"]

log = logging.getLogger("tilesky")


class ClusterError(RuntimeError):
    """The scheduler cannot be reached or started."""


@dataclass
class ExecutionContext:
    """What :func:`execution` set up."""

    kind: str
    client: object | None = None
    dashboard_link: str | None = None


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
        try:
            cluster = LocalCluster(
                n_workers=workers,
                threads_per_worker=threads,
                processes=processes,
                # In-process clusters default to the inproc transport, which
                # takes no host; tcp keeps the scheduler reachable on ``host``
                # by other clients, as with worker processes.
                protocol="tcp",
                host=host,
                dashboard_address=f"{host}:0" if dashboard else None,
                memory_limit=memory_limit,
                silence_logs=logging.ERROR,
            )
        except Exception as exc:
            msg = f"cannot start a local Dask cluster: {exc}"
            raise ClusterError(msg) from None
        client = Client(cluster)
        link = client.dashboard_link if dashboard else None
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
            f"--scheduler {scheduler!r} is neither 'threads', an address like "
            "tcp://HOST:PORT, nor an existing scheduler file"
        )
        raise ClusterError(msg)
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

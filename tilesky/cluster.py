"""Where the graph runs: a local cluster, an existing scheduler, or threads.

* ``scheduler=None``: a :class:`distributed.LocalCluster` sized to the
  machine: by default its scheduler and one worker run in this process with
  one thread per core, connected in memory (no port; other processes cannot
  submit work to it); with ``n_workers`` it starts that many worker
  processes (one thread each) and the scheduler listens on tcp. Every
  socket of the cluster (scheduler, nannies, workers, and the HTTP servers
  of scheduler and workers: dashboard, health, metrics) binds to 127.0.0.1:
  an unauthenticated scheduler must not listen on every interface unless
  asked to, with ``host="0.0.0.0"``.
* ``"tcp://HOST:PORT"`` (or ``tls://``): connect to a running scheduler;
  TLS settings come from dask's own configuration (``distributed.comm.tls``),
  and the wait for its answer is bounded by
  ``distributed.comm.timeouts.connect`` (30 s unless configured).
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

import asyncio
import contextlib
import functools
import json
import logging
import os
import sys
import threading
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
    "task_seconds",
    "thread_count",
]

log = logging.getLogger("tilesky")


@dataclass
class ExecutionContext:
    """What :func:`execution` set up.

    Parameters
    ----------
    kind : {"threads", "local", "remote"}
        Dask's threaded scheduler, a local cluster, or an existing scheduler.
    client : distributed.Client, optional
        The cluster's client (None for threads).
    dashboard_link : str, optional
        The dashboard's URL, when there is one.
    """

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


def _check_count(name: str, value: int | None) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        msg = f"{name} must be a positive integer (1 or more), got {value!r}"
        raise ValueError(msg)


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
    ValueError
        ``n_workers`` or ``threads_per_worker`` is not a positive integer.
    ClusterError
        The local cluster cannot start, the scheduler cannot be reached or
        does not answer, or (raised from the block) a task failed because
        the workers running it died.

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
    _check_count("n_workers", n_workers)
    _check_count("threads_per_worker", threads_per_worker)
    say = announce or (lambda msg: print(msg, file=sys.stderr))
    if scheduler == "threads":
        with dask.config.set(scheduler="threads"):
            yield ExecutionContext("threads")
    elif scheduler is None:
        with _local_cluster(
            n_workers=n_workers,
            threads_per_worker=threads_per_worker,
            memory_limit=memory_limit,
            host=host,
            dashboard=dashboard,
            say=say,
        ) as context:
            yield context
    else:
        with _remote_cluster(scheduler, say) as context:
            yield context


@contextlib.contextmanager
def _local_cluster(
    *,
    n_workers: int | None,
    threads_per_worker: int | None,
    memory_limit: str | None,
    host: str,
    dashboard: bool,
    say: Callable[[str], None],
) -> Iterator[ExecutionContext]:
    """Start a LocalCluster bound to ``host``, announce it, close it after."""
    from distributed import Client, LocalCluster

    processes = n_workers is not None
    workers = n_workers if processes else 1
    threads = threads_per_worker or (1 if processes else _cpu_count())
    # Worker processes talk tcp on ``host``. The in-process worker talks
    # to the scheduler and this client through memory (inproc): results
    # and intermediates are handed over without serialization, and
    # tilesky keeps small intermediates in its memory (see
    # keeps_intermediates). The dashboard is served on ``host``
    # either way.
    where: dict[str, Any] = (
        {"protocol": "tcp", "host": host}
        if processes
        else {"worker_class": _in_process_worker(host)}
    )
    try:
        with dask.config.set(_WORKER_ENVIRON):
            cluster = LocalCluster(
                n_workers=workers,
                threads_per_worker=threads,
                processes=processes,
                dashboard_address=f"{host}:0" if dashboard else None,
                # Without a dashboard the scheduler still serves health
                # and metrics over HTTP, by default on every interface.
                scheduler_kwargs={"dashboard_address": f"{host}:0"},
                **where,
                memory_limit=memory_limit,
                silence_logs=logging.ERROR,
            )
    except Exception as exc:
        msg = f"cannot start a local Dask cluster: {exc}"
        raise ClusterError(msg) from None
    client = Client(cluster)
    _LOCAL_CLIENTS.add(client)
    link = _local_dashboard_link(cluster, host) if dashboard else None
    what = (
        f"{workers} worker process(es)"
        if processes
        else f"one in-process worker, {threads} thread(s)"
    )
    say(
        f"tilesky: local cluster with {what}" + (f"; dashboard: {link}" if link else "")
    )
    try:
        with _quiet_task_failures(client), _explained_worker_deaths():
            yield ExecutionContext("local", client, link)
    finally:
        client.close()
        cluster.close()


def _local_dashboard_link(cluster: Any, host: str) -> str:
    """Where the local cluster's dashboard listens, as a URL."""
    # distributed builds the link from the scheduler's address, which
    # an in-process scheduler does not have: say where it listens.
    port = cluster.scheduler_info["services"]["dashboard"]
    shown = "127.0.0.1" if host in ("", "0.0.0.0") else host
    return f"http://{shown}:{port}/status"


@contextlib.contextmanager
def _remote_cluster(
    scheduler: str, say: Callable[[str], None]
) -> Iterator[ExecutionContext]:
    """Connect to a running scheduler (address or file), announce it, close after."""
    from distributed import Client

    address = _scheduler_address(scheduler)
    timeout = dask.config.get("distributed.comm.timeouts.connect")
    _await_handshake(scheduler, address, timeout)
    try:
        client = Client(address, timeout=timeout)
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
        scheduler if "://" in scheduler else f"{address} (scheduler file {scheduler})"
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
    with _quiet_lost_scheduler():
        try:
            with _explained_worker_deaths(where):
                yield ExecutionContext("remote", client, link)
        finally:
            client.close()


def _scheduler_address(scheduler: str) -> str:
    """The address ``--scheduler`` names: itself, or the scheduler file's."""
    if "://" in scheduler:
        return scheduler
    if not os.path.exists(scheduler):
        msg = (
            f"scheduler={scheduler!r} is neither 'threads', an address like "
            "tcp://HOST:PORT, nor an existing scheduler file"
        )
        raise ClusterError(msg, params="scheduler")
    try:
        with open(scheduler, encoding="utf-8") as f:
            return str(json.load(f)["address"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        msg = f"cannot read the scheduler address from {scheduler}: {exc!r}"
        raise ClusterError(msg) from None


def _await_handshake(scheduler: str, address: str, timeout: str | float) -> None:
    """Raise ClusterError unless ``address`` answers distributed's handshake.

    distributed bounds the TCP connect by ``timeout`` but then waits for the
    scheduler's handshake without limit: a server that accepts connections
    and never answers (a wrong port, a stopped or overloaded process) would
    hang the run. The probe runs on its own thread and event loop, so that it
    works whether or not the caller is inside one (a notebook).
    """
    from dask.utils import parse_timedelta
    from distributed.comm import connect
    from distributed.security import Security

    seconds = parse_timedelta(timeout, "s")
    args = Security().get_connection_args("client")
    outcome: list[BaseException | None] = []

    async def probe() -> None:
        # A second more than connect's own limit: a refused or unreachable
        # address then fails in connect and is reported as such.
        comm = await asyncio.wait_for(connect(address, seconds, **args), seconds + 1)
        await comm.close()

    def run() -> None:
        try:
            asyncio.run(probe())
        except BaseException as exc:  # reported on the caller's thread
            outcome.append(exc)
        else:
            outcome.append(None)

    thread = threading.Thread(target=run, name="tilesky-scheduler-probe", daemon=True)
    thread.start()
    thread.join(seconds + 10)
    error = outcome[0] if outcome else TimeoutError()
    if error is None:
        return
    if isinstance(error, TimeoutError):
        msg = (
            f"the Dask scheduler at {scheduler} did not answer within {seconds:g} s "
            "(is a Dask scheduler listening there? the wait is set by "
            "distributed.comm.timeouts.connect)"
        )
    else:
        msg = f"cannot connect to the Dask scheduler at {scheduler}: {error}"
    raise ClusterError(msg) from None


def _in_process_worker(host: str):
    """distributed's Worker with its HTTP server (health, metrics) on ``host``.

    A worker takes the interface of that server from its own address; an
    in-process worker has none (``inproc://``), and distributed then listens
    on every interface. ``LocalCluster(worker_dashboard_address=...)`` would
    bind it too but also serve the worker's Bokeh dashboard.
    """
    from distributed import Worker

    class InProcessWorker(Worker):
        def __init__(self, *args, **kwargs):
            if kwargs.get("dashboard_address") is None:
                kwargs["dashboard_address"] = f"{host}:0"
            super().__init__(*args, **kwargs)

    return InProcessWorker


class _DropRecords(logging.Filter):
    """Drops log records whose message starts with ``prefix``."""

    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not (isinstance(record.msg, str) and record.msg.startswith(self.prefix))


#: What distributed logs, with the traceback, about a failure that reaches
#: the caller anyway as the exception (which the CLI prints as one line): a
#: task's error (worker) and a task whose workers died (scheduler).
_TASK_FAILURE_LOGS = {
    "distributed.worker": "Compute Failed",
    "distributed.scheduler": "Task %s marked as failed because",
}


@functools.cache
def _quiet_worker_plugin() -> type:
    from distributed.diagnostics.plugin import WorkerPlugin

    class QuietTaskFailures(WorkerPlugin):
        """Drops the worker's "Compute Failed" records, in whichever process."""

        idempotent = True
        name = "tilesky-quiet-task-failures"

        def __init__(self) -> None:
            self.filter = _DropRecords(_TASK_FAILURE_LOGS["distributed.worker"])

        def setup(self, worker) -> None:
            logging.getLogger("distributed.worker").addFilter(self.filter)

        def teardown(self, worker) -> None:
            logging.getLogger("distributed.worker").removeFilter(self.filter)

    return QuietTaskFailures


@contextlib.contextmanager
def _quiet_task_failures(client: Any) -> Iterator[None]:
    """Silence distributed's logs of failed tasks in a local cluster.

    Its scheduler runs in this process; its workers run here or in worker
    processes, whose stderr is this process's.
    """
    logger = logging.getLogger("distributed.scheduler")
    dropped = _DropRecords(_TASK_FAILURE_LOGS["distributed.scheduler"])
    logger.addFilter(dropped)
    try:
        client.register_plugin(_quiet_worker_plugin()())
        yield
    finally:
        logger.removeFilter(dropped)


class _DropLostConnection(logging.Filter):
    """Drops the client's tracebacks of its failed reconnections."""

    def filter(self, record: logging.LogRecord) -> bool:
        import asyncio

        from distributed.comm import CommClosedError

        if str(record.msg).startswith("Failed to reconnect"):
            return False
        kind = record.exc_info[0] if record.exc_info else None
        lost = (asyncio.CancelledError, CommClosedError, OSError)
        return not (kind is not None and issubclass(kind, lost))


@contextlib.contextmanager
def _quiet_lost_scheduler() -> Iterator[None]:
    """A lost scheduler reaches the user as one line, not the client's logs."""
    logger = logging.getLogger("distributed.client")
    dropped = _DropLostConnection()
    logger.addFilter(dropped)
    try:
        yield
    finally:
        logger.removeFilter(dropped)


@contextlib.contextmanager
def _explained_worker_deaths(scheduler: str = "the local cluster") -> Iterator[None]:
    """Turn KilledWorker and a lost scheduler into ClusterErrors that say why."""
    from dask.utils import key_split
    from distributed.client import FutureCancelledError
    from distributed.scheduler import KilledWorker

    try:
        yield
    except FutureCancelledError as exc:
        if "connection" not in str(exc):
            raise
        msg = (
            f"lost the connection to the Dask scheduler {scheduler} (it stopped "
            "or the network failed); the blocks written so far are kept: run "
            "again with resume=True to continue"
        )
        raise ClusterError(msg, params="resume") from exc
    except KilledWorker as exc:
        msg = (
            f"a worker died while running a {key_split(exc.task)!r} task (out of "
            "memory?): try fewer threads or worker processes, smaller chunks=, "
            "or more memory per worker; an unfinished run can be continued with "
            "resume=True"
        )
        raise ClusterError(msg, params=("chunks", "resume")) from exc


def current_client() -> Any | None:
    """The distributed client that ``dask.compute`` would use, if any.

    Returns
    -------
    distributed.Client or None
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
    """Threads that will run tasks: the cluster's, else this machine's cores.

    Returns
    -------
    int
        The cluster's worker threads, or ``num_workers`` from dask's
        configuration, or this machine's usable cores.
    """
    client = current_client()
    if client is not None:
        threads = sum(client.nthreads().values())
        if threads:
            return threads
    return int(dask.config.get("num_workers", None) or _cpu_count())


@contextlib.contextmanager
def task_seconds() -> Iterator[dict[str, float]]:
    """Seconds the cluster's threads spent computing, by task name.

    Yields a dict filled when the block ends: for every task name (the key
    prefix, e.g. ``smoothfit`` or ``metrics-block``) the summed compute time
    of its tasks, largest first. The laps of a run's ``timings`` are wall
    time between submissions, which overlap asynchronous work; this is
    where the work went. Empty without a distributed client.

    Yields
    ------
    dict of str to float
        Filled on exit.
    """
    client = current_client()
    seconds: dict[str, float] = {}
    if client is None:
        yield seconds
        return
    from dask.utils import key_split
    from distributed import get_task_stream

    stream = get_task_stream(client)
    try:
        stream.__enter__()
    except Exception:  # no task stream on this scheduler: no breakdown
        yield seconds
        return
    # On an error the scheduler may be gone: nothing is asked of it then.
    yield seconds
    try:
        stream.__exit__(None, None, None)
    except Exception:
        return
    total: dict[str, float] = {}
    for task in stream.data:
        name = key_split(task["key"])
        for part in task.get("startstops", ()):
            if part["action"] == "compute":
                total[name] = total.get(name, 0.0) + part["stop"] - part["start"]
    for name, value in sorted(total.items(), key=lambda kv: -kv[1]):
        seconds[name] = round(value, 3)


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

    Parameters
    ----------
    client : distributed.Client
        The client the run computes with.

    Returns
    -------
    bool
        True for a local or all-in-process cluster.
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

    Parameters
    ----------
    client : distributed.Client, optional
        The cluster whose workers' memory limits count; None: this machine.

    Returns
    -------
    int
        The budget in bytes.
    """
    if client is not None:
        workers = client.scheduler_info().get("workers", {}).values()
        limit = sum(w.get("memory_limit") or 0 for w in workers)
        if limit:
            return limit // 4
    import psutil

    return int(psutil.virtual_memory().available) // 4

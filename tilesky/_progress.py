"""Progress of a whole run, shown only where someone watches.

:func:`show_progress` (the CLI enters it when stderr is a terminal, or with
``--progress``) shows one overall line on stderr for everything computed
inside it: a bar and a percentage that never go back (see
:class:`_Monotone`), the tasks done out of the tasks submitted so far, over
every graph (persists, computes and background writes alike), and the stage
of the last finished task (task names are the stages'). Under a distributed
client a scheduler plugin counts task transitions; with the threaded
scheduler a dask callback counts tasks. On a terminal the line is redrawn
in place twice a second; otherwise a line is printed when the stage
changes. Library code computes through :func:`compute`, whose label becomes
a line of its own. Everything goes to stderr so that stdout stays clean.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any

import dask

__all__ = ["compute", "progress_enabled", "show_progress"]

_ENABLED: ContextVar[bool] = ContextVar("tilesky_progress", default=False)

# Below this many seconds a threaded computation shows no bar: a checkpoint
# of a small image would otherwise leave a line per array.
_MIN_SECONDS = 1.0


@contextlib.contextmanager
def show_progress(enabled: bool = True) -> Iterator[None]:
    """Switch the overall progress line on (or off) in this context.

    Parameters
    ----------
    enabled : bool
        Whether computations inside the ``with`` block show progress.

    Examples
    --------
    >>> from tilesky._progress import progress_enabled, show_progress
    >>> with show_progress(True):
    ...     progress_enabled()
    True
    >>> progress_enabled()
    False
    """
    token = _ENABLED.set(bool(enabled))
    try:
        if enabled:
            with _overall(sys.stderr):
                yield
        else:
            yield
    finally:
        _ENABLED.reset(token)


class _Monotone:
    """The fraction of a run done, from counts whose total keeps growing.

    A run submits graph after graph, so ``done / total`` drops each time a
    stage submits its tasks. Here each update advances the fraction by the
    part of the bar still to fill that the tasks finished since the last
    update are of the tasks still to run, counted with a reserve for those
    not yet submitted (as many as seen so far): the fraction never
    decreases and never reaches 1 before the run ends (the last line shows
    100 %). With a total that never changes it is proportional to
    ``done / total``. The run's total is not known in advance (each stage
    builds its graph from the last one's results), so late stages move the
    bar less than early ones.
    """

    RESERVE = 1.0

    def __init__(self) -> None:
        self.fraction = 0.0
        self.done = 0

    def update(self, done: int, total: int) -> float:
        ahead = total - self.done + self.RESERVE * total
        if done > self.done and ahead > 0:
            step = min(1.0, (done - self.done) / ahead)
            self.fraction += (1.0 - self.fraction) * step
        self.done = max(self.done, done)
        return self.fraction


class _Line:
    """The overall progress line: counts in, text out."""

    def __init__(self, stream, tty: bool) -> None:
        self.stream, self.tty = stream, tty
        self.start = time.perf_counter()
        self.shown_stage: str | None = None
        self.width = 0
        self.progress = _Monotone()

    def text(self, done: int, total: int, stage: str, *, final: bool = False) -> str:
        frac = 1.0 if final and done >= total else self.progress.update(done, total)
        bar = "#" * int(30 * frac) + "-" * (30 - int(30 * frac))
        seconds = time.perf_counter() - self.start
        return (
            f"tilesky: [{bar}] {100 * frac:3.0f}% {done}/{total} tasks"
            f"{', ' + stage if stage else ''}, {seconds:.0f} s"
        )

    def show(self, done: int, total: int, stage: str, *, final: bool = False) -> None:
        text = self.text(done, total, stage, final=final)
        if self.tty:
            pad = " " * max(0, self.width - len(text))
            self.width = len(text)
            end = "\n" if final else ""
            self.stream.write(f"\r{text}{pad}{end}")
        elif final or (stage and stage != self.shown_stage):
            self.shown_stage = stage
            self.stream.write(text + "\n")
        self.stream.flush()

    def note(self, message: str) -> None:
        if self.tty and self.width:
            self.stream.write("\r" + " " * self.width + "\r")
            self.width = 0
        self.stream.write(f"tilesky: {message}\n")
        self.stream.flush()


_LINE: ContextVar[_Line | None] = ContextVar("tilesky_progress_line", default=None)
#: Seconds between two redraws of the line (tests sample faster).
_INTERVAL = float(os.environ.get("TILESKY_PROGRESS_INTERVAL", "0.5"))


@contextlib.contextmanager
def _overall(stream) -> Iterator[None]:
    from tilesky.cluster import current_client

    line = _Line(stream, bool(getattr(stream, "isatty", lambda: False)()))
    client = current_client()
    counts = _scheduler_counts(client) if client is not None else _thread_counts()
    stop = threading.Event()

    def redraw() -> None:
        while not stop.wait(_INTERVAL):
            with contextlib.suppress(Exception):
                line.show(*counts.read())

    token = _LINE.set(line)
    with counts:
        thread = threading.Thread(target=redraw, name="tilesky-progress", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()
            with contextlib.suppress(Exception):
                line.show(*counts.read(), final=True)
            _LINE.reset(token)


class _thread_counts(contextlib.AbstractContextManager):
    """Tasks of the threaded (or synchronous) scheduler, from a dask callback."""

    def __init__(self) -> None:
        from dask.callbacks import Callback
        from dask.utils import key_split

        counts = self
        self.done = self.total = 0
        self.stage = ""

        class Count(Callback):
            def _start_state(self, dsk, state):
                counts.total += len(state["ready"]) + len(state["waiting"])

            def _posttask(self, key, result, dsk, state, worker_id):
                counts.done += 1
                counts.stage = key_split(key)

        self.callback = Count()

    def __enter__(self):
        self.callback.register()
        return self

    def __exit__(self, *exc) -> None:
        self.callback.unregister()

    def read(self) -> tuple[int, int, str]:
        return self.done, self.total, self.stage


_PLUGIN = "tilesky-progress"


def _scheduler_plugin():
    from dask.utils import key_split
    from distributed.diagnostics.plugin import SchedulerPlugin

    class CountTasks(SchedulerPlugin):
        """Counts tasks submitted and finished on the scheduler."""

        name = _PLUGIN

        def __init__(self) -> None:
            self.total = self.done = 0
            self.stage = ""

        def transition(self, key, start, finish, *args, **kwargs) -> None:
            if start == "released" and finish != "forgotten":
                self.total += 1
            elif start == "processing" and finish in ("memory", "erred"):
                self.done += 1
                self.stage = key_split(key)

    return CountTasks()


def _read_plugin(dask_scheduler=None) -> tuple[int, int, str]:
    plugin = dask_scheduler.plugins.get(_PLUGIN)
    if plugin is None:
        return 0, 0, ""
    return plugin.done, plugin.total, plugin.stage


class _scheduler_counts(contextlib.AbstractContextManager):
    """Tasks of a distributed cluster, counted by a scheduler plugin."""

    def __init__(self, client) -> None:
        self.client = client

    def __enter__(self):
        # Counting starts afresh: a plugin of an earlier run is replaced.
        self.client.register_plugin(_scheduler_plugin(), name=_PLUGIN)
        return self

    def __exit__(self, *exc) -> None:
        with contextlib.suppress(Exception):
            self.client.unregister_scheduler_plugin(_PLUGIN)

    def read(self) -> tuple[int, int, str]:
        return tuple(self.client.run_on_scheduler(_read_plugin))


def progress_enabled() -> bool:
    """Whether :func:`compute` currently shows progress."""
    return _ENABLED.get()


def compute(*collections: Any, label: str | None = None) -> tuple:
    """``dask.compute(*collections)``, its label shown when progress is on.

    Parameters
    ----------
    *collections
        Dask collections (arrays, delayed objects).
    label : str, optional
        What is being computed, printed as a line of the progress display.

    Returns
    -------
    tuple
        The computed results, in order, as :func:`dask.compute` returns them.

    Examples
    --------
    >>> import dask.array as da
    >>> from tilesky._progress import compute
    >>> compute(da.ones(4, chunks=2).sum(), label="sum")
    (np.float64(4.0),)
    """
    if not _ENABLED.get():
        return dask.compute(*collections)
    line = _LINE.get()
    if label and line is not None:
        line.note(label)
    return dask.compute(*collections)

"""Progress bars for long computations, shown only where someone watches.

Library code computes through :func:`compute`, which is plain
:func:`dask.compute` unless progress was switched on with
:func:`show_progress` (the CLI does so when stderr is a terminal, or with
``--progress``). Then each computation announces itself on one stderr line
and shows a text bar: ``distributed.progress`` on the computation's futures
under a distributed client, :class:`dask.diagnostics.ProgressBar` otherwise.
Bars go to stderr so that stdout stays clean for anything piped.
"""

from __future__ import annotations

import contextlib
import sys
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
    """Switch progress bars on (or off) for computations in this context.

    Parameters
    ----------
    enabled : bool
        Whether :func:`compute` shows progress inside the ``with`` block.

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
        yield
    finally:
        _ENABLED.reset(token)


def progress_enabled() -> bool:
    """Whether :func:`compute` currently shows progress."""
    return _ENABLED.get()


def compute(*collections: Any, label: str | None = None) -> tuple:
    """``dask.compute(*collections)``, with a progress bar when enabled.

    Parameters
    ----------
    *collections
        Dask collections (arrays, delayed objects).
    label : str, optional
        What is being computed, printed on stderr before the bar.

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
    if label:
        print(f"tilesky: {label}", file=sys.stderr, flush=True)
    from tilesky.cluster import current_client

    client = current_client()
    if client is None:
        from dask.diagnostics import ProgressBar

        with ProgressBar(minimum=_MIN_SECONDS, out=sys.stderr):
            return dask.compute(*collections)

    from distributed import progress

    futures = client.compute(list(collections))
    # distributed's console bar writes to sys.stdout; it blocks until the
    # futures finish (or fail), so the redirection covers exactly the bar.
    with contextlib.redirect_stdout(sys.stderr):
        progress(futures, notebook=False, multi=False)
    return tuple(client.gather(futures))

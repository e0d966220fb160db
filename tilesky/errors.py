"""The errors a user can act on; the CLI prints them as one line.

Every such error is a :class:`TileskyError`. Its message names the library's
parameters (``scheduler='x'``, ``overwrite=True``, ``variable=``), never the
command line's flags; :attr:`TileskyError.params` lists the parameters it
names, so the ``tilesky`` command can say ``--scheduler``, ``--overwrite`` or
``--variable`` instead. The subclasses keep a builtin base (``ValueError``
or ``RuntimeError``) so that ``except ValueError`` callers keep working.

This module imports nothing from tilesky: any module can raise these.
"""

from __future__ import annotations

import contextlib
import errno
from collections.abc import Iterable, Iterator

__all__ = [
    "USER_ERRORS",
    "ClusterError",
    "ConfigError",
    "InputError",
    "OutputExistsError",
    "PipelineError",
    "StoreError",
    "TileskyError",
]


class TileskyError(Exception):
    """Base of the errors whose message is meant for the user.

    Parameters
    ----------
    message : str
        One readable line: what is wrong, with which value, and the fix.
    params : str or iterable of str, optional
        The parameters the message names. The message spells each as
        ``name=value``, ``name=True`` (a switch), ``name=`` or ``name``; the
        command line rewrites those spellings as its own flags.

    Attributes
    ----------
    params : tuple of str
        The parameters the message names.

    Examples
    --------
    >>> err = TileskyError("scheduler='x' is not an address", params="scheduler")
    >>> str(err), err.params
    ("scheduler='x' is not an address", ('scheduler',))
    """

    def __init__(self, message: str = "", *, params: str | Iterable[str] = ()) -> None:
        super().__init__(message)
        self.params: tuple[str, ...] = (
            (params,) if isinstance(params, str) else tuple(params)
        )


class ConfigError(TileskyError, ValueError):
    """A parameter is unknown, malformed or out of range.

    Parameters
    ----------
    message, params
        As in :class:`TileskyError`.
    """


class InputError(TileskyError, ValueError):
    """An input tilesky cannot use; the message is one readable line.

    Parameters
    ----------
    message, params
        As in :class:`TileskyError`; the message's whitespace (newlines
        included) is collapsed to single spaces.

    Examples
    --------
    >>> str(InputError("cannot open input 'x.fits':\\n no such file"))
    "cannot open input 'x.fits': no such file"
    """

    def __init__(self, message: str = "", *, params: str | Iterable[str] = ()) -> None:
        super().__init__(" ".join(str(message).split()), params=params)


class StoreError(TileskyError, ValueError):
    """The output store cannot be used (unreachable, unfinished, corrupt).

    Parameters
    ----------
    message, params
        As in :class:`TileskyError`.
    """


class OutputExistsError(StoreError):
    """The output exists and neither overwrite nor resume was asked for.

    Parameters
    ----------
    message, params
        As in :class:`TileskyError`.
    """


class PipelineError(TileskyError, ValueError):
    """The data cannot give a background with this configuration.

    Parameters
    ----------
    message, params
        As in :class:`TileskyError`.
    """


class ClusterError(TileskyError, RuntimeError):
    """The scheduler cannot be reached or started.

    Parameters
    ----------
    message, params
        As in :class:`TileskyError`.
    """


#: Exceptions whose message is meant for the user (no traceback).
USER_ERRORS = (
    TileskyError,
    FileExistsError,
    FileNotFoundError,
    PermissionError,
)


#: What a full filesystem (or quota, or file-size limit) raises as errno.
_NO_SPACE = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


@contextlib.contextmanager
def out_of_space(shown: str) -> Iterator[None]:
    """Turn "no space left" while writing ``shown`` into a one-line StoreError.

    Parameters
    ----------
    shown : str
        The output, as a message may show it (no credentials).

    Yields
    ------
    None
        The writes run inside the context.

    Examples
    --------
    >>> with out_of_space("out.zarr"):
    ...     raise OSError(errno.ENOSPC, "No space left on device")
    Traceback (most recent call last):
    ...
    tilesky.errors.StoreError: no space left writing 'out.zarr' (No space left ...
    """
    try:
        yield
    except OSError as exc:
        if exc.errno not in _NO_SPACE:
            raise
        msg = (
            f"no space left writing {shown!r} ({exc.strerror or exc}); free some "
            "space (or choose another output), then run again with resume=True "
            "to continue from the blocks already written"
        )
        raise StoreError(msg, params="resume") from None

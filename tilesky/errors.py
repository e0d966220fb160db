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

from collections.abc import Iterable

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

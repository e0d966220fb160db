"""The errors a user can act on; the CLI prints them as one line."""

from __future__ import annotations

from tilesky.cluster import ClusterError
from tilesky.config import ConfigError
from tilesky.io import InputError
from tilesky.pipeline import PipelineError
from tilesky.store import StoreError

__all__ = ["USER_ERRORS"]

#: Exceptions whose message is meant for the user (no traceback).
USER_ERRORS = (
    ConfigError,
    InputError,
    StoreError,
    PipelineError,
    ClusterError,
    FileExistsError,
    FileNotFoundError,
    PermissionError,
)

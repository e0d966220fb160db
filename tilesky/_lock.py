"""One writer per output: the lock file a run holds in its local store.

``OUT/.tilesky-lock`` records the owner's pid, host, start time and run id.
A second run on the same output is refused while the owner lives; the lock
of a process that is gone (on this host) is removed and taken over. Object
stores hold a lease object instead (:mod:`tilesky._lease`).
What is at an output path (nothing, an empty directory) is checked here
too: it decides whether ``overwrite`` may replace it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import time

from tilesky._lease import LEASE, _pid_alive
from tilesky.errors import StoreError

__all__ = ["LOCK"]

log = logging.getLogger("tilesky")

LOCK = ".tilesky-lock"


def _lock_path(url: str) -> str | None:
    """The lock file of a local store; None for object stores."""
    if "://" in url and not url.startswith("file://"):
        return None
    return os.path.join(url.removeprefix("file://"), LOCK)


def _check_lock(url: str, shown: str) -> None:
    """Refuse when a live run holds the lock; remove a stale one."""
    path = _lock_path(url)
    if path is None or not os.path.exists(path):
        return
    try:
        with open(path, encoding="utf-8") as f:
            owner = json.load(f)
        pid, host = int(owner["pid"]), str(owner["host"])
    except (OSError, ValueError, KeyError, TypeError):
        owner, pid, host = None, -1, ""
    if owner is not None and host == socket.gethostname() and not _pid_alive(pid):
        log.info("removing the stale lock of %s (process %d is gone)", shown, pid)
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)
        return
    if owner is None:
        msg = (
            f"output {shown!r} has an unreadable lock file {LOCK}; if no run is "
            "writing there, delete that file"
        )
        raise StoreError(msg)
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(owner.get("time", 0)))
    msg = (
        f"output {shown!r} is being written by another run (process {pid} on "
        f"{host}, since {since}); wait for it to end, or delete {LOCK} if it is gone"
    )
    raise StoreError(msg)


def _release_lock(path: str, run: str) -> None:
    """Remove the lock file if this run still holds it."""
    with contextlib.suppress(OSError, ValueError):
        with open(path, encoding="utf-8") as f:
            if json.load(f).get("run") != run:
                return
        os.remove(path)


def _path_exists(url: str, storage_options: dict | None) -> bool:
    import fsspec

    try:
        fs, path = fsspec.core.url_to_fs(url, **(storage_options or {}))
        return bool(fs.exists(path))
    except Exception:
        return False


def _path_is_empty(url: str, storage_options: dict | None) -> bool:
    """True when nothing is at ``url`` or it is an empty directory."""
    import fsspec

    try:
        fs, path = fsspec.core.url_to_fs(url, **(storage_options or {}))
        if not fs.exists(path):
            return True
        # A lock or lease alone is what a run that died before writing
        # anything leaves: the checks of both decide about those.
        names = {n.rstrip("/").rsplit("/", 1)[-1] for n in fs.ls(path, detail=False)}
        return fs.isdir(path) and not names - {LOCK, LEASE}
    except Exception:
        return True

"""One writer per output on object stores: a lease object with a run id.

An object store has no lock file, but it has create-if-absent (S3's
``If-None-Match: *``, fsspec's ``pipe_file(mode="create")``): the run that
creates ``OUT/.tilesky-lease`` holds the output. The lease records the
holder (run id, pid, host, time) and is renewed by a background thread
every third of :data:`LEASE_SECONDS`; a lease not renewed for that long
belongs to a run that is gone and is taken over. Before a run marks its
store complete it reads the lease back: a run whose lease was taken over
leaves the store unfinished (``resume`` continues it) rather than
declaring complete a store that another run may also have written.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
from typing import Any

from tilesky.errors import StoreError

__all__ = ["LEASE", "LEASE_SECONDS", "Lease"]

log = logging.getLogger("tilesky")

LEASE = ".tilesky-lease"
#: A lease not renewed for this long is stale. Long enough for a renewal
#: that waits out the object store's timeouts and retries; short enough
#: that a crashed run on another host blocks its output for two minutes.
LEASE_SECONDS = 120.0


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True
    return True


class Lease:
    """The lease of the object-store output at ``url``.

    Parameters
    ----------
    url : str
        The output's fsspec URL.
    storage_options : dict, optional
        Passed to fsspec.
    run : str
        This run's id.
    shown : str
        The output as messages name it.
    seconds : float, optional
        How long a lease lives without renewal.
    """

    def __init__(
        self,
        url: str,
        storage_options: dict | None,
        run: str,
        shown: str,
        *,
        seconds: float = LEASE_SECONDS,
    ) -> None:
        import fsspec

        self.fs, root = fsspec.core.url_to_fs(url, **(storage_options or {}))
        self.path = f"{root.rstrip('/')}/{LEASE}"
        self.run, self.shown, self.seconds = run, shown, seconds
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- reading --------------------------------------------------------------
    def holder(self) -> dict[str, Any] | None:
        """The lease's record; None when there is none (or it is unreadable)."""
        try:
            record = json.loads(self.fs.cat_file(self.path))
        except FileNotFoundError:
            return None
        except ValueError:
            return {}
        return record if isinstance(record, dict) else {}

    def _stale(self, record: dict[str, Any]) -> bool:
        """True when the holder is gone: not renewed in time, or a dead pid here."""
        try:
            age = time.time() - float(record["time"])
            pid, host = int(record["pid"]), str(record["host"])
        except (KeyError, TypeError, ValueError):
            return False  # unreadable: the user decides (the message says how)
        if host == socket.gethostname() and not _pid_alive(pid):
            return True
        # The holder's own clock: hosts' clocks may differ by seconds, well
        # inside the lease's two minutes.
        return age > float(record.get("seconds", self.seconds))

    def check(self) -> None:
        """Refuse when another live run holds the lease; remove a stale one."""
        record = self.holder()
        if record is None or record.get("run") == self.run:
            return
        if record and self._stale(record):
            log.info("taking over the stale lease of %s", self.shown)
            with contextlib.suppress(FileNotFoundError):
                self.fs.rm_file(self.path)
            return
        if not record:
            msg = (
                f"output {self.shown!r} has an unreadable lease {LEASE}; if no run "
                "is writing there, delete that object"
            )
            raise StoreError(msg)
        since = time.strftime(
            "%Y-%m-%d %H:%M:%S", time.localtime(float(record.get("time", 0)))
        )
        msg = (
            f"output {self.shown!r} is being written by another run (process "
            f"{record.get('pid')} on {record.get('host')}, lease renewed {since}); "
            f"wait for it to end, or delete {LEASE} there if it is gone"
        )
        raise StoreError(msg)

    # -- holding --------------------------------------------------------------
    def _record(self) -> bytes:
        record = {
            "run": self.run,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "time": time.time(),
            "seconds": self.seconds,
        }
        return json.dumps(record).encode()

    def _create(self) -> None:
        try:
            self.fs.pipe_file(self.path, self._record(), mode="create")
        except (TypeError, NotImplementedError):
            # A backend without create-if-absent: write, then read back. Two
            # runs starting in the same instant may both pass; the check
            # before completion still catches the one that lost.
            self.fs.pipe_file(self.path, self._record())
            if (self.holder() or {}).get("run") != self.run:
                raise FileExistsError(self.path) from None

    def take(self) -> None:
        """Hold the lease, taking over a stale one, and start renewing it."""
        for _ in range(2):
            try:
                self._create()
            except FileExistsError:
                self.check()  # raises unless the holder is gone (then removed)
                continue
            self._thread = threading.Thread(
                target=self._renew_loop, name="tilesky-lease", daemon=True
            )
            self._thread.start()
            return
        msg = f"cannot take the lease of output {self.shown!r}: another run took it"
        raise StoreError(msg)

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.seconds / 3):
            # A failed renewal is not fatal here: confirm() decides.
            with contextlib.suppress(Exception):
                if (self.holder() or {}).get("run") == self.run:
                    self.fs.pipe_file(self.path, self._record())

    def confirm(self) -> None:
        """Refuse to go on (to mark complete) when the lease is no longer ours."""
        record = self.holder()
        if record is not None and record.get("run") == self.run:
            return
        who = (
            f"process {record.get('pid')} on {record.get('host')}"
            if record
            else "nobody (it was deleted)"
        )
        msg = (
            f"output {self.shown!r}: this run's lease was taken over by {who}; "
            "the store is left unfinished (resume=True continues it when no "
            "other run writes there)"
        )
        raise StoreError(msg)

    def release(self) -> None:
        """Stop renewing and delete the lease if it is still ours."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        with contextlib.suppress(Exception):
            if (self.holder() or {}).get("run") == self.run:
                self.fs.rm_file(self.path)

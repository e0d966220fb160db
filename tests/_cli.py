"""Helpers for the tests that drive real ``tilesky`` processes.

Imported by test modules as ``from _cli import ...`` (pytest puts ``tests/``
on ``sys.path``).
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import zarr

#: ``python -m tilesky.cli``: the console script without relying on PATH.
CLI = (sys.executable, "-m", "tilesky.cli")


def run_cli(
    *argv: str,
    timeout: float = 200,
    env: dict[str, str] | None = None,
    **kwargs,
) -> subprocess.CompletedProcess:
    """Run ``tilesky ARGV`` to completion, text output captured, no stdin.

    ``env`` is added to this process's environment; further keywords go to
    ``subprocess.run``.
    """
    return subprocess.run(
        [*CLI, *argv],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        env=dict(os.environ, **(env or {})),
        timeout=timeout,
        **kwargs,
    )


def one_error_line(stderr: str) -> str:
    """The one ``tilesky: error:`` line of stderr that holds only tilesky's lines."""
    assert "Traceback" not in stderr, stderr
    lines = stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("tilesky: error: ")]
    assert len(errors) == 1 and all(x.startswith("tilesky: ") for x in lines), stderr
    return errors[0]


def noise_zarr(
    path: Path,
    shape: tuple[int, int],
    seed: int,
    chunks: tuple[int, int] = (500, 500),
) -> Path:
    """A float32 Zarr array of Gaussian noise (mean 100, sigma 5) at ``path``."""
    rng = np.random.default_rng(seed)
    image = rng.normal(100.0, 5.0, shape).astype(np.float32)
    z = zarr.create_array(str(path), shape=shape, chunks=chunks, dtype="f4")
    z[:] = image
    return path


@contextlib.contextmanager
def mute_listener() -> Iterator[tuple[int, list[socket.socket]]]:
    """A port on 127.0.0.1 that accepts every connection and never sends a byte.

    Yields the port and the list of accepted connections (held open until
    the block ends, so that a client waits on its read, not on a reset).
    """
    server = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept():
        server.settimeout(0.1)
        while not stop.is_set():
            with contextlib.suppress(TimeoutError, OSError):
                held.append(server.accept()[0])

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1], held
    finally:
        stop.set()
        thread.join(timeout=5)
        for conn in held:
            conn.close()
        server.close()

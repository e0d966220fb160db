"""Helpers shared by the benchmarks: run the CLI, sample memory."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

TILESKY = str(Path(sys.executable).with_name("tilesky"))


class PeakMemory:
    """Sample the summed RSS of a process tree until stopped."""

    def __init__(self, pid: int, interval: float = 0.1):
        self.pid = pid
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            root = psutil.Process(self.pid)
        except psutil.NoSuchProcess:
            return
        while not self._stop.is_set():
            total = 0
            try:
                procs = [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                break
            for p in procs:
                try:
                    total += p.memory_info().rss
                except psutil.NoSuchProcess:
                    pass
            self.peak = max(self.peak, total)
            time.sleep(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def run_cli(args: list[str], *, memory: bool = False) -> tuple[float, int, str]:
    """Run ``tilesky ARGS``; return (wall seconds, peak bytes, stderr)."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        [TILESKY, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    peak = 0
    if memory:
        with PeakMemory(proc.pid) as pm:
            _out, err = proc.communicate()
        peak = pm.peak
    else:
        _out, err = proc.communicate()
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"tilesky {' '.join(args)} failed:\n{err}")
    return wall, peak, err

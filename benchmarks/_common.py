"""Helpers shared by the benchmarks: one-thread set-up, timing, the record's
environment and JSON file, running the CLI, sampling memory.

Importing this module imports neither numpy nor numba, so a script can call
:func:`one_thread` after importing it and before importing them.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import threading
import time
from importlib.metadata import version
from pathlib import Path

import psutil

_THREAD_VARIABLES = (
    "NUMBA_NUM_THREADS",
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
)


def one_thread() -> None:
    """One thread for numba and BLAS: call before numpy or numba is imported."""
    for name in _THREAD_VARIABLES:
        os.environ[name] = "1"


def runs(repeat: int, func, *args, **kwargs) -> tuple[list[float], object]:
    """Call ``func`` ``repeat`` times; the seconds of each call and the last result."""
    seconds = []
    result = None
    for _ in range(repeat):
        start = time.perf_counter()
        result = func(*args, **kwargs)
        seconds.append(time.perf_counter() - start)
    return seconds, result


def timed(func, *args, **kwargs) -> tuple[float, object]:
    """One call of ``func``: its seconds and its result."""
    seconds, result = runs(1, func, *args, **kwargs)
    return seconds[0], result


def cpu_seconds(process: psutil.Process) -> float:
    """CPU time (user + system) a process has used so far."""
    times = process.cpu_times()
    return times.user + times.system


def environment() -> dict:
    """The ``versions`` and ``machine`` entries every benchmark record carries."""
    packages = ("tilesky", "numpy", "scipy", "numba", "dask")
    return {
        "versions": {
            "python": platform.python_version(),
            **{name: version(name) for name in packages},
        },
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "cpu_count": os.cpu_count(),
            "load_average": list(os.getloadavg()),
        },
    }


def write_record(path: Path, record: dict) -> None:
    """Write a benchmark's JSON record (with :func:`environment`) to ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**record, **environment()}, indent=2) + "\n")
    print(f"wrote {path}")


def blob_image(
    size: int,
    *,
    seed: int = 0,
    n_blobs: int,
    sigma: tuple[float, float],
    flux: tuple[float, float],
):
    """Unit noise, a gentle gradient and ``n_blobs`` Gaussian sources (float32).

    Blob widths and fluxes are drawn uniformly from the ``sigma`` and ``flux``
    ranges. numpy is imported here, so that importing this module still
    leaves :func:`one_thread` a chance to act first.
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    image = rng.normal(0.0, 1.0, size=(size, size)).astype(np.float32)
    image += 0.5 * (xx + yy) / size
    for _ in range(n_blobs):
        y0, x0 = rng.uniform(0, size, 2)
        width = rng.uniform(*sigma)
        amplitude = rng.uniform(*flux)
        r2 = (yy - y0) ** 2 + (xx - x0) ** 2
        image += (amplitude * np.exp(-r2 / (2 * width**2))).astype(np.float32)
    return image


TILESKY = str(Path(sys.executable).with_name("tilesky"))


class PeakMemory:
    """Sample the summed RSS of a process tree until stopped.

    Also keeps each process's CPU time (user + system) as last sampled:
    ``cpu_root`` for the process itself (with a local cluster: the client
    and the scheduler), ``cpu_children`` for the rest (worker processes,
    and multiprocessing's resource tracker, which uses next to none). A
    process's CPU after its last sample is missed (at most ``interval``).
    """

    def __init__(self, pid: int, interval: float = 0.1):
        self.pid = pid
        self.interval = interval
        self.peak = 0
        self._cpu: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @property
    def cpu_root(self) -> float:
        return self._cpu.get(self.pid, 0.0)

    @property
    def cpu_children(self) -> float:
        return sum(t for pid, t in self._cpu.items() if pid != self.pid)

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
                    self._cpu[p.pid] = cpu_seconds(p)
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


class PeakSampler:
    """The largest value of ``sample()``, taken every ``interval`` seconds in a
    background thread between ``__enter__`` and ``__exit__`` (and at both)."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> int:
        raise NotImplementedError

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, self.sample())

    def __enter__(self):
        self.peak = self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.sample())


def run_cli(
    args: list[str], *, memory: bool = False, cpu: dict | None = None
) -> tuple[float, int, str]:
    """Run ``tilesky ARGS``; return (wall seconds, peak bytes, stderr).

    With ``cpu`` (a dict), the process tree is sampled and ``cpu`` receives
    the CPU seconds of the tilesky process (``"tilesky"``) and of its
    children (``"workers"``).
    """
    start = time.perf_counter()
    proc = subprocess.Popen(
        [TILESKY, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    peak = 0
    if memory or cpu is not None:
        with PeakMemory(proc.pid) as pm:
            _out, err = proc.communicate()
        peak = pm.peak
        if cpu is not None:
            cpu["tilesky"] = round(pm.cpu_root, 2)
            cpu["workers"] = round(pm.cpu_children, 2)
    else:
        _out, err = proc.communicate()
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"tilesky {' '.join(args)} failed:\n{err}")
    return wall, peak, err

"""Is the on-disk cache of the numba kernels cold (a first run compiles)?

Every kernel is compiled with ``cache=True``: the first run on an install
compiles them (tens of seconds on the 2-core test machine) and writes the
machine code next to the sources (``__pycache__``); later runs load it.
Where the package directory is read-only (a system or container install),
numba itself falls back to a per-user directory (``~/.cache/numba``-like,
from the platform's user cache location), and ``NUMBA_CACHE_DIR`` moves
the cache anywhere: this check asks numba's own cache objects where their
index files are, so it follows all three.
"""

from __future__ import annotations

import importlib

__all__ = ["kernels_cache_cold", "warm_kernels"]

#: Modules whose kernels every ``tilesky run`` compiles.
_RUN_MODULES = (
    "tilesky.kernels._ring",
    "tilesky.kernels._mask",
    "tilesky.kernels._noise",
    "tilesky.kernels._clip",
    "tilesky.kernels._binned",
    "tilesky.kernels._grow",
    "tilesky.metrics._passes",
)


def _has_index(dispatcher) -> bool:
    cache_file = dispatcher._cache._cache_file
    try:
        # Empty when the index is missing, stale (source changed) or was
        # written by another numba version.
        return bool(cache_file._load_index())
    except Exception:  # numba internals moved: existence of the file suffices
        import os

        return os.path.exists(getattr(cache_file, "_index_path", ""))


def kernels_cache_cold(modules: tuple[str, ...] = _RUN_MODULES) -> bool:
    """Whether some module's kernels have no valid cached machine code.

    Cheap: reads one small index file per kernel, compiles nothing.

    Parameters
    ----------
    modules : tuple of str
        Modules whose ``cache=True`` numba kernels are checked.

    Returns
    -------
    bool
        True when at least one module has no kernel with a valid cache
        index (the next run compiles).
    """
    for name in modules:
        module = importlib.import_module(name)
        kernels = [
            obj
            for obj in vars(module).values()
            if getattr(getattr(obj, "_cache", None), "_cache_file", None) is not None
        ]
        if kernels and not any(_has_index(k) for k in kernels):
            return True
    return False


def warm_kernels() -> float:
    """Compile (or load) the kernels of a run now, on a small simulated scene.

    Runs the default and the notebook configurations whole and tiled, and
    the quality metrics with truth and a catalogue, so that the first real
    run finds the machine code cached. ``make`` calls it after installing
    (``python -m tilesky.kernels._cache``): the compile time is paid at
    install, where waiting is expected.

    Returns
    -------
    float
        Seconds it took (about the compile time when the cache was cold).
    """
    import time

    import dask

    from tilesky import estimate_background, simulate_scene
    from tilesky.metrics import compute_metrics

    start = time.perf_counter()
    with dask.config.set(scheduler="sync"):
        ds = simulate_scene((300, 330), seed=1, chunks=150).compute()
        scene = ds.scene.values
        catalogue = {c: ds[c].values for c in ("x_mean", "y_mean", "flux", "re")}
        for preset in ("default", "notebook"):
            for chunks in (None, 150):
                run = estimate_background(scene, preset=preset, chunks=chunks)
        compute_metrics(
            scene,
            run.background.values,
            run["mask"].values,
            truth=ds.truth.values,
            sky=ds.sky.values,
            catalogue=catalogue,
            return_points=True,
        )
    return time.perf_counter() - start


if __name__ == "__main__":
    was_cold = kernels_cache_cold()
    seconds = warm_kernels()
    state = "compiled" if was_cold else "loaded (already cached)"
    print(f"tilesky: numba kernels {state} in {seconds:.1f} s")

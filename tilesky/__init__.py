"""tilesky: tiled, distributed sky-background estimation with quality metrics.

The one entry point is :func:`estimate_background`; :func:`quality_metrics`
and :func:`to_fits` give its result's metrics and FITS files;
:func:`simulate_scene` makes the reference notebook's scene with its truth.
Errors a user can act on are :class:`TileskyError` subclasses, defined in
:mod:`tilesky.errors`.

Names are imported on first use, so ``tilesky --version`` and a Dask worker
unpickling one kernel do not pay for the whole stack.
"""

from __future__ import annotations

import importlib
from typing import Any

from tilesky._version import __version__

__all__ = [
    "ClusterError",
    "Config",
    "ConfigError",
    "InputError",
    "OutputExistsError",
    "PipelineError",
    "StoreError",
    "TileskyError",
    "__version__",
    "estimate_background",
    "load_config",
    "quality_metrics",
    "run_to_store",
    "sextractor_background",
    "simulate_scene",
    "to_fits",
    "write_simulation",
]

_LAZY = {
    "Config": "tilesky.config",
    "load_config": "tilesky.config",
    "estimate_background": "tilesky._dispatch",
    "run_to_store": "tilesky._dispatch",
    "quality_metrics": "tilesky.results",
    "to_fits": "tilesky.results",
    "sextractor_background": "tilesky.sextractor",
    "simulate_scene": "tilesky.simulate",
    "write_simulation": "tilesky.simulate",
    **dict.fromkeys(
        (
            "TileskyError",
            "ClusterError",
            "ConfigError",
            "InputError",
            "OutputExistsError",
            "PipelineError",
            "StoreError",
        ),
        "tilesky.errors",
    ),
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        msg = f"module 'tilesky' has no attribute {name!r}"
        raise AttributeError(msg)
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)

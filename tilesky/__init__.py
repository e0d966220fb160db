"""tilesky: tiled, distributed sky-background estimation with quality metrics.

The one entry point is :func:`estimate_background`; :func:`simulate_scene`
makes the reference notebook's scene with its truth.
"""

from tilesky._dispatch import estimate_background, run_to_store
from tilesky._version import __version__
from tilesky.config import Config, load_config
from tilesky.simulate import simulate_scene, write_simulation

__all__ = [
    "Config",
    "__version__",
    "estimate_background",
    "load_config",
    "run_to_store",
    "simulate_scene",
    "write_simulation",
]

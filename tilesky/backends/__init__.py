"""Execution backends: one protocol, a whole-image reference and a tiled one.

- :class:`Backend` (``_protocol.py``): the operations a stage may ask for.
- :class:`WholeImage` (``_whole.py``): each kernel once on numpy arrays; the
  reference.
- :class:`Tiled` (``_tiled.py``): each kernel per tile on dask arrays,
  through :func:`tile_map` (``_tile_map.py``: halos, mesh/pixel scaling,
  edge cuts, tiles reading from Zarr).
- ``_clipping.py``: the exact sigma-clipping steps both backends share.
"""

from tilesky.backends._protocol import Backend
from tilesky.backends._tile_map import Region, TileInput, ZarrSource, tile_map
from tilesky.backends._tiled import Tiled
from tilesky.backends._whole import WholeImage

__all__ = [
    "Backend",
    "Region",
    "TileInput",
    "Tiled",
    "WholeImage",
    "ZarrSource",
    "tile_map",
]

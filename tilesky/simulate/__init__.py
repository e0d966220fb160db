"""The reference notebook's pathological scene, generated lazily at any size.

The scene is a gradient, sinc-function blemishes, Gaussian noise and elliptical
Gaussian sources (``complex_background_notebook``, "Create the nasty sky
background" and "Add some random sources"). Pixels are produced tile by tile in
a dask graph and depend only on the seed and the image shape, never on the
chunking: the same seed gives bit-identical pixels for any chunks.

- ``_spec.py``: the constants, the frozen spec and the checks of every
  keyword of :func:`simulate_scene`.
- ``_model.py``: the catalogues drawn from the seed, the blank footprint's
  geometry and the spatial index of sources (no pixel work).
- ``_render.py``: the pixels of one tile: compiled blemish and source
  renderers and the block-seeded noise.
- ``_scene.py``: :func:`simulate_scene` (one task per tile) and
  :func:`write_simulation`.
"""

from __future__ import annotations

from tilesky.simulate._scene import simulate_scene, write_simulation
from tilesky.simulate._spec import GENERATOR_VERSION, NOISE_BLOCK

__all__ = ["GENERATOR_VERSION", "NOISE_BLOCK", "simulate_scene", "write_simulation"]

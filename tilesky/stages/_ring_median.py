"""Ring median stage: the scene minus its ring median, smoothed.

The ring median (``Ring2DKernel(radius_in, width)`` footprint) removes the
smooth sky and the extended blemishes; the smoothed difference is the first
mask's detection map. One task per tile does the three steps, on the sum of
their halos.
"""

from __future__ import annotations

import functools

import numpy as np

from tilesky.config import Config
from tilesky.kernels._mask import gaussian_depth, smooth
from tilesky.kernels._ring import ring_depth, ring_median
from tilesky.stages._stage import LocalStage

__all__ = ["NAME", "depth", "ring_smoothed", "stage"]

NAME = "ring-median"


def ring_smoothed(scene, *, radius_in, width, sigma, truncate):
    """``scene`` minus its ring median, Gaussian-smoothed with ``sigma``."""
    ring = ring_median(scene, radius_in=radius_in, width=width)
    difference = (scene.astype(np.float32) - ring).astype(np.float32)
    return smooth(difference, sigma, truncate=truncate)


def depth(*, radius_in: int, width: int, sigma: float, truncate: float) -> int:
    """Halo: the ring's outer radius plus the smoothing kernel's radius."""
    return ring_depth(radius_in, width) + gaussian_depth(sigma, truncate)


def stage(cfg: Config) -> LocalStage:
    """The stage with ``cfg``'s ring and first-mask smoothing."""
    params = {
        "radius_in": cfg.ring.radius_in,
        "width": cfg.ring.width,
        "sigma": cfg.first_mask.smooth_sigma,
        "truncate": cfg.smooth_truncate,
    }
    kernel = functools.partial(ring_smoothed, **params)
    return LocalStage(NAME, kernel, depth(**params), np.float32)

"""First mask: the ring-median detection map thresholded and dilated.

Pixels where the smoothed ``scene - ring`` exceeds ``n_sigma`` times the
noise (a global level, or a local noise map) are sources; they are dilated
with a circular top-hat, and the user's mask is OR-ed in.
"""

from __future__ import annotations

import functools

import numpy as np

from tilesky.config import Config
from tilesky.kernels._mask import dilate_depth, dilate_mask
from tilesky.stages._stage import LocalStage, threshold_inputs

__all__ = ["NAME", "apply", "depth", "first_mask"]

NAME = "source-mask"


def first_mask(smoothed, *coverage, n_sigma, radius, noise, scaled=False):
    """Detections dilated by ``radius``, OR every coverage mask given.

    ``noise`` is a number (global level) or, when None, the first array of
    ``coverage`` is the local noise map. ``scaled``: the next array is a
    relative depth map the level is multiplied by.
    """
    if noise is None:
        noise, *coverage = coverage
    if scaled:
        depth, *coverage = coverage
        noise = noise * depth
    with np.errstate(invalid="ignore"):
        detected = np.isfinite(smoothed) & (smoothed > n_sigma * noise)
    out = dilate_mask(detected, radius)
    for m in coverage:
        out |= m
    return out


def depth(*, radius: int) -> int:
    """Halo: the dilation radius (the threshold is pointwise)."""
    return dilate_depth(radius)


def apply(backend, smoothed, noise, depth_map, user_mask, *, cfg: Config):
    """The first mask of ``smoothed``, given its ``noise``.

    ``noise`` is the global noise (a dict with ``std``) or a local noise map
    (an array on the image's grid); ``depth_map`` (or None) scales the
    global level pixel by pixel.
    """
    fm = cfg.first_mask
    inputs, level, scaled = threshold_inputs(smoothed, noise, depth_map, user_mask)
    kernel = functools.partial(
        first_mask,
        n_sigma=fm.n_sigma,
        radius=fm.dilate_radius,
        noise=level,
        scaled=scaled,
    )
    stage = LocalStage(NAME, kernel, depth(radius=fm.dilate_radius), bool)
    return stage(backend, *inputs)

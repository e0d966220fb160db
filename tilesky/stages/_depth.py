"""Depth model: how the noise level varies across the image.

Survey stacks are not equally deep everywhere (dithers, chip gaps, mosaic
overlaps). A threshold at ``n_sigma`` times one global noise then masks
noise where the image is shallow and misses faint sources where it is
deep. The depth model is a map ``d`` of the *relative* noise level; every
threshold becomes ``n_sigma * level * d`` with ``level`` the global noise of
the whitened image ``x / d``, one scale measured from the data, so a weight
map need only be right up to a constant.

- With a weight map (inverse variance; an exposure-time map is the same up
  to the scale), ``d = 1 / sqrt(weight)``.
- Without one, the noise is measured on a coarse mesh (``depth_mesh``) of
  the first round's residual outside the first mask. Where the filtered
  mesh RMS varies by less than ``depth_ratio`` (max / min) the depth is
  uniform and the global noise is kept, exactly as ``noise_mode="global"``;
  otherwise the mesh RMS, interpolated to pixels, is ``d``.

The decision is a global step on the small mesh (it computes); the map is
a mesh stage and its interpolation, tiled exactly like the backgrounds.
"""

from __future__ import annotations

import numpy as np

from tilesky.config import Config
from tilesky.stages._mesh import mesh_maps
from tilesky.stages._stage import LocalStage

__all__ = ["NAME", "estimated_depth", "weight_depth", "whitened"]

NAME = "depth"


def _inverse_sqrt(weight):
    with np.errstate(divide="ignore", invalid="ignore"):
        d = 1.0 / np.sqrt(weight.astype(np.float64))
    return np.where(np.isfinite(d) & (d > 0), d, np.nan).astype(np.float32)


def _divide(values, depth):
    with np.errstate(divide="ignore", invalid="ignore"):
        return (values / depth).astype(np.float32)


def weight_depth(backend, weight, *, cfg: Config):
    """``1 / sqrt(weight)`` when the run has a weight map and the noise
    mode follows depth, else None."""
    if weight is None or cfg.noise_mode != "auto":
        return None
    return LocalStage(NAME, _inverse_sqrt, 0, np.float32)(backend, weight)


def whitened(backend, values, depth):
    """``values / depth`` (``values`` itself without a depth map)."""
    if depth is None:
        return values
    return LocalStage("whiten", _divide, 0, np.float32)(backend, values, depth)


def estimated_depth(backend, residual, mask, depth, *, cfg: Config):
    """``(depth map or None, evidence)`` for the rounds.

    A depth map from the weight is kept as it is. Otherwise the coarse
    mesh RMS of ``residual`` outside ``mask`` decides (see the module
    docstring). ``evidence`` records the model chosen and why, for the
    run's attrs and report.
    """
    if cfg.noise_mode != "auto":
        return None, {"model": cfg.noise_mode}
    if depth is not None:
        return depth, {"model": "weight"}
    from tilesky.stages._interpolate import to_pixels

    m = cfg.depth_mesh
    meshes = mesh_maps(backend, residual, mask, m, label="depth")
    low, high = backend.nanmin(meshes.rms), backend.nanmax(meshes.rms)
    ratio = float(high / low) if low > 0 else float("inf")
    evidence = {"rms_min": float(low), "rms_max": float(high), "rms_ratio": ratio}
    if ratio < cfg.depth_ratio:
        return None, {"model": "uniform", **evidence}
    _, rms = to_pixels(
        backend, meshes, m, like=residual, label="depth", maps=("background_rms",)
    )
    # Materialized once for the rounds' thresholds; a weight's map is a
    # pointwise function of the weight and is not worth writing.
    return backend.checkpoint("depth_map", rms), {"model": "local map", **evidence}

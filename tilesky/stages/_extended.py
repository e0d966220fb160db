"""Extended, low-surface-brightness sources found on a binned image.

A faint disk a fraction of a sigma per pixel bright is lost twice by the
pixel-scale masks: no pixel passes their threshold, and the first mesh
background, smooth on a few boxes only, takes its light before the
residual is looked at. Here, once, in the first round:

1. the scene outside the round's mask is binned into the cells of a mesh
   grid anchored at (0, 0) (``first_mesh.box_size``): block means, counts
   and the mean pixel variance (from the round's noise model), a mesh
   statistics step, exact per tile;
2. on the cell map (:func:`~tilesky.kernels._binned.detect_cells`, a local
   step with its halo in cells): the local plane of a wide window is the
   sky, Gaussian means at ``extended_sigma`` minus that plane are
   thresholded at ``extended_n_sigma`` in their own noise, the plane is
   refitted without the detections and the detection repeated; each
   region then grows by its size (``extended_grow``; by default 0, the
   footprint of the multi-scale means, which widens with the source, is
   the mask: wider growth leaves holes the fit bridges worse);
3. the cells go back to pixels (each pixel its cell's value) and are ORed
   into every round's mask.

The data decide whether it is used: when the cells add more than
``extended_fraction`` of the covered image to the round's mask, what they
follow is the sky itself (blemishes, scattered light on those scales) and
masking it would leave holes no fit can bridge; then nothing changes. The
fraction is an exact global mean; the decision and its evidence go into
the run's ``coarse_gate`` attrs.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from tilesky.config import Config
from tilesky.kernels._binned import (
    cell_means,
    detect_cells,
    detect_depth,
    upsample_cells,
)
from tilesky.stages._stage import LocalStage

__all__ = ["NAME", "combine", "detect", "enabled"]

NAME = "extended"


def enabled(cfg: Config) -> bool:
    """Whether the run looks for extended sources on binned cells."""
    return cfg.source_mask.extended_fraction > 0


def _square(x):
    return np.square(x.astype(np.float32))


def _added(extended, mask, scene):
    added = extended & ~mask
    return np.where(np.isfinite(scene), added, np.nan).astype(np.float32)


def _detect_kernel(values, counts, *variance, scale, params):
    var = variance[0] * scale if variance else np.full(values.shape, scale)
    return detect_cells(values, counts, var, **params)


def _params(cfg: Config) -> tuple[tuple[int, int], dict]:
    sm = cfg.source_mask
    box = tuple(cfg.first_mesh.box_size)
    cell = math.sqrt(box[0] * box[1])
    return box, {
        "sigmas": tuple(s / cell for s in sm.extended_sigma),
        "surround": sm.extended_surround / cell,
        "truncate": 3.0,
        "n_sigma": sm.extended_n_sigma,
        "factor": sm.extended_grow,
        "max_thickness": max(1, round(sm.extended_max_thickness / cell)),
    }


def detect(backend, scene, mask, noise, depth, gate, *, cfg: Config):
    """``(pixel mask or None, gate evidence)`` of the extended sources.

    ``scene`` is the statistics scene (user-masked pixels NaN), ``mask``
    the round's mask, ``noise`` the global noise (dict) or the local noise
    map, ``depth`` the relative depth map or None; ``gate`` the evidence
    of :func:`tilesky.stages._source_mask.coarse_gate` (or None), which
    the returned evidence extends.
    """
    evidence = dict(gate or {})
    limit = cfg.source_mask.extended_fraction
    box, params = _params(cfg)
    values, _, counts = backend.mesh_stats(
        cell_means, scene, mask, box_size=box, name=f"{NAME}-cells"
    )
    if isinstance(noise, dict):
        scale = float(noise["std"]) ** 2
        pixel_var = None if depth is None else depth
    else:
        scale, pixel_var = 1.0, noise
    variance = []
    if pixel_var is not None:
        sq = LocalStage(f"{NAME}-variance", _square, 0, np.float32)(backend, pixel_var)
        variance = [
            backend.mesh_stats(
                cell_means, sq, mask, box_size=box, name=f"{NAME}-variance-cells"
            )[0]
        ]
    kernel = functools.partial(_detect_kernel, scale=scale, params=params)
    halo = detect_depth(**{k: v for k, v in params.items() if k != "n_sigma"})
    cells = LocalStage(f"{NAME}-detect", kernel, halo, np.uint8)(
        backend, values, counts, *variance
    )
    pixels = backend.to_pixels(
        functools.partial(upsample_cells, box_size=box),
        [cells],
        like=scene,
        box_size=box,
        depth=0,
        dtype=bool,
        name=f"{NAME}-mask",
    )
    added = LocalStage(f"{NAME}-added", _added, 0, np.float32)(
        backend, pixels, mask, scene
    )
    _, fraction, _ = backend.clipped_moments(added, clip=None, maxiters=1)
    fraction = float(fraction)
    used = fraction < limit
    evidence["extended_cells"] = {
        "used": used,
        "added_fraction": fraction,
        "limit": limit,
    }
    return (pixels if used else None), evidence


def combine(backend, mask, extended):
    """``mask`` with the extended sources' cells (``extended`` may be None)."""
    if extended is None:
        return mask
    return LocalStage(f"{NAME}-or", np.logical_or, 0, bool)(backend, mask, extended)

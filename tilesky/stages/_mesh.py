"""Mesh background stage (Background2D semantics), low-resolution part.

Boxes of ``box_size`` anchored at pixel (0, 0); per box a sigma-clipped
background and RMS (boxes with more than ``exclude_percentile`` % masked
pixels are excluded); excluded boxes are filled by inverse distance from
their neighbours within ``max_distance`` boxes; both maps are then
median-filtered. :func:`mesh_background` adds the interpolation to pixels
(:mod:`tilesky.stages._interpolate`).

Halos, in mesh cells: none for the statistics (tiles are whole boxes),
``fill_depth(max_distance)`` for the fill, ``filter_depth(filter_size)`` for
the filter.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from tilesky.config import MeshConfig
from tilesky.errors import PipelineError
from tilesky.estimators import make_estimator, make_sigma_clip
from tilesky.kernels._idw import fill_depth, fill_mesh_nans
from tilesky.kernels._mesh import filter_depth, filter_mesh, mesh_statistics
from tilesky.stages._stage import LocalStage

__all__ = ["MeshMaps", "filter_pair", "mesh_background", "mesh_maps"]


@dataclass(frozen=True)
class MeshMaps:
    """The mesh stage's low-resolution maps.

    ``raw_background`` is before fill and filter (NaN in excluded boxes);
    ``background`` and ``rms`` are filled and filtered; ``n_good`` counts
    each box's usable pixels.
    """

    raw_background: Any
    background: Any
    rms: Any
    n_good: Any

    def outputs(self) -> dict[str, Any]:
        """The maps a run stores, by their store names."""
        return {
            "background_mesh": self.background,
            "background_rms_mesh": self.rms,
            "n_pixels_mesh": self.n_good,
        }


def filter_pair(mesh, threshold_mesh, *, filter_size, filter_threshold, global_min):
    """``mesh`` median-filtered where ``threshold_mesh`` exceeds the threshold."""
    return filter_mesh(
        mesh,
        filter_size=filter_size,
        filter_threshold=filter_threshold,
        threshold_mesh=threshold_mesh,
        global_min=global_min,
    ).astype(np.float32)


def _statistics(backend, image, mask, m: MeshConfig, label: str):
    return backend.mesh_stats(
        mesh_statistics,
        image,
        mask,
        box_size=m.box_size,
        name="mesh-stats",
        checkpoint=f"{label}_mesh_stats",
        exclude_percentile=m.exclude_percentile,
        sigma_clip=make_sigma_clip(m.sigma_clip, m.sigma_clip_maxiters),
        bkg_estimator=make_estimator(m.bkg_estimator, "bkg"),
        bkg_rms_estimator=make_estimator(m.bkg_rms_estimator, "rms"),
    )


def _no_usable_box(m: MeshConfig, label: str) -> PipelineError:
    threshold = (1 - m.exclude_percentile / 100.0) * m.box_size[0] * m.box_size[1]
    msg = (
        f"every mesh box of the {label} stage has <= {threshold:g} usable pixels "
        f"(box_size={m.box_size}, exclude_percentile={m.exclude_percentile}); "
        "raise exclude_percentile or check the mask and coverage"
    )
    return PipelineError(msg)


def mesh_maps(backend, image, mask, m: MeshConfig, *, label: str) -> MeshMaps:
    """Box statistics of ``image`` outside ``mask``, filled and filtered.

    ``label`` names the stage in messages and checkpoints (``first``,
    ``round1``, ...).
    """
    bkg_raw, rms_raw, n_good = _statistics(backend, image, mask, m, label)
    global_min = backend.nanmin(bkg_raw)
    if math.isnan(global_min):
        raise _no_usable_box(m, label)
    fill = LocalStage(
        "mesh-fill",
        functools.partial(
            fill_mesh_nans,
            n_neighbors=m.fill_n_neighbors,
            power=1.0,
            regularization=0.0,
            max_distance=m.max_distance,
        ),
        fill_depth(m.max_distance),
        np.float32,
    )
    median = LocalStage(
        "mesh-filter",
        functools.partial(
            filter_pair,
            filter_size=m.filter_size,
            filter_threshold=m.filter_threshold,
            global_min=global_min,
        ),
        filter_depth(m.filter_size),
        np.float32,
    )
    bkg_filled, rms_filled = fill(backend, bkg_raw), fill(backend, rms_raw)
    held = backend.checkpoint_many(
        {
            f"{label}_bkg_mesh": median(backend, bkg_filled, bkg_filled),
            f"{label}_rms_mesh": median(backend, rms_filled, bkg_filled),
        }
    )
    return MeshMaps(
        bkg_raw, held[f"{label}_bkg_mesh"], held[f"{label}_rms_mesh"], n_good
    )


def mesh_background(
    backend,
    image,
    mask,
    m: MeshConfig,
    *,
    label: str,
    maps: tuple[str, ...] = ("background", "background_rms"),
    fallback=None,
    coverage=None,
):
    """The mesh stage end to end: ``(background, background_rms, MeshMaps)``.

    Only the full-resolution ``maps`` named are interpolated (the others
    are None). See :func:`tilesky.stages._interpolate.to_pixels` for
    ``fallback`` and ``coverage``.
    """
    from tilesky.stages._interpolate import to_pixels

    meshes = mesh_maps(backend, image, mask, m, label=label)
    background, rms = to_pixels(
        backend,
        meshes,
        m,
        like=image,
        label=label,
        maps=maps,
        fallback=fallback,
        coverage=coverage,
    )
    return background, rms, meshes

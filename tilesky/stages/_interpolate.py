"""Interpolation stage: mesh maps back to full resolution.

``interpolator = "idw"``: inverse distance over the ``n_neighbors`` nearest
usable boxes within ``max_distance`` boxes (halo: ``idw_depth`` mesh cells);
excluded boxes are left out again first. ``"spline"``: photutils' cubic
spline on the filled mesh (halo: ``spline_depth()`` cells of the
prefilter), which needs every box filled.

Two extras run in the same task: a ``fallback`` full-resolution map whose
NaN holes take the mesh interpolation (the smooth fit, where its window
held no unmasked pixel), and a ``coverage`` scene outside whose finite
pixels the result is NaN (the outputs: no background where no data).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np

from tilesky.config import MeshConfig
from tilesky.errors import PipelineError
from tilesky.kernels._idw import idw_depth, idw_interpolate
from tilesky.kernels._spline import spline_depth, spline_interpolate
from tilesky.stages._mesh import MeshMaps
from tilesky.stages._stage import LocalStage

__all__ = ["NAME", "covered", "fill_holes", "restore_excluded", "to_pixels"]

NAME = "interpolate"


def restore_excluded(filtered, raw):
    """``filtered`` with NaN again where the raw mesh box was excluded."""
    return np.where(np.isnan(raw), np.float32(np.nan), filtered).astype(np.float32)


def covered(*inputs, interp, out_shape, out_offset, mesh_offset):
    """``interp``'s map, NaN where the scene (last of ``inputs``) has no data."""
    *rest, scene = inputs
    values = interp(
        *rest, out_shape=out_shape, out_offset=out_offset, mesh_offset=mesh_offset
    )
    return np.where(np.isfinite(scene), values, np.float32(np.nan)).astype(np.float32)


def fill_holes(mesh, primary, *, interp, out_shape, out_offset, mesh_offset):
    """``primary`` with its NaN pixels taken from the mesh interpolation."""
    holes = np.isnan(primary)
    if not holes.any():
        return primary.astype(np.float32, copy=False)
    fallback = interp(
        mesh, out_shape=out_shape, out_offset=out_offset, mesh_offset=mesh_offset
    )
    return np.where(holes, fallback, primary).astype(np.float32)


def _idw_sources(backend, meshes: MeshMaps, m: MeshConfig):
    # max_distance is configured in boxes; the pixel kernel takes pixels.
    reach = m.max_distance * max(m.box_size)
    interp = functools.partial(
        idw_interpolate,
        box_size=m.box_size,
        n_neighbors=m.n_neighbors,
        power=m.power,
        regularization=m.regularization,
        max_distance=reach,
    )
    restore = LocalStage("mesh-restore", restore_excluded, 0, np.float32)
    sources = [
        restore(backend, mesh, meshes.raw_background)
        for mesh in (meshes.background, meshes.rms)
    ]
    return sources, idw_depth(reach, m.box_size), lambda _src: interp


def _spline_sources(backend, meshes: MeshMaps, m: MeshConfig, label: str):
    if backend.any(np.isnan(meshes.background)):
        msg = (
            f"the {label} mesh has boxes farther than max_distance="
            f"{m.max_distance:g} boxes from any usable box (a large blank or "
            "masked region); the spline needs every box filled: raise "
            "max_distance or use interpolator='idw', which leaves such regions NaN"
        )
        raise PipelineError(msg)

    def interp_for(src) -> Callable:
        return functools.partial(
            spline_interpolate,
            box_size=m.box_size,
            mesh_global_shape=tuple(meshes.background.shape),
            clip_range=(backend.nanmin(src), backend.nanmax(src)),
        )

    return [meshes.background, meshes.rms], spline_depth(), interp_for


def to_pixels(
    backend,
    meshes: MeshMaps,
    m: MeshConfig,
    *,
    like,
    label: str,
    maps: tuple[str, ...] = ("background", "background_rms"),
    fallback=None,
    coverage=None,
):
    """``(background, background_rms)`` at full resolution on ``like``'s grid.

    A map not named in ``maps`` is None. ``fallback`` applies to the
    background only; ``coverage`` to both.
    """
    if m.interpolator == "idw":
        sources, depth, interp_for = _idw_sources(backend, meshes, m)
    else:
        sources, depth, interp_for = _spline_sources(backend, meshes, m, label)
    out = []
    for name, src in zip(("background", "background_rms"), sources, strict=True):
        if name not in maps:
            out.append(None)
            continue
        func, pixels = interp_for(src), ()
        if fallback is not None and name == "background":
            func = functools.partial(fill_holes, interp=func)
            pixels = (fallback,)
        if coverage is not None:
            func = functools.partial(covered, interp=func)
            pixels = (*pixels, coverage)
        out.append(
            backend.to_pixels(
                func,
                [src],
                like=like,
                box_size=m.box_size,
                depth=depth,
                dtype=np.float32,
                name=NAME,
                pixels=pixels,
            )
        )
    return tuple(out)

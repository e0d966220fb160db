"""The background pipeline: the notebook's stages, once, for any backend.

Stages (names as in the reference notebook and the design brief):

1. ring median of the scene;
2. first mask: ``scene - ring`` smoothed, thresholded at ``n_sigma`` times
   its noise, dilated;
3. mesh background (Background2D semantics) with the first mask;
4. ``n_rounds`` times: multi-scale masks on ``scene - background``, then the
   final background (mesh, or the smooth masked fit) with that mask.

The same code drives :class:`~tilesky.tiled.stages.WholeImage` (the
monolithic reference) and :class:`~tilesky.tiled.stages.Tiled` (dask).
"""

from __future__ import annotations

import functools
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tilesky.config import Config, MeshConfig
from tilesky.errors import PipelineError
from tilesky.estimators import make_estimator, make_sigma_clip
from tilesky.kernels._interp import (
    fill_depth,
    fill_mesh_nans,
    idw_depth,
    idw_interpolate,
    spline_depth,
    spline_interpolate,
)
from tilesky.kernels._mask import (
    dilate_depth,
    dilate_mask,
    fwhm_to_sigma,
    gaussian_depth,
    size_filter,
    size_filter_depth,
    smooth,
)
from tilesky.kernels._mesh import filter_depth, filter_mesh, mesh_statistics
from tilesky.kernels._ring import ring_depth, ring_median
from tilesky.kernels._smoothfit import smoothfit, smoothfit_depth

__all__ = ["PipelineError", "PipelineResult", "run_pipeline"]

log = logging.getLogger("tilesky")


@dataclass
class PipelineResult:
    """Arrays (numpy or dask) and scalars produced by one pipeline run."""

    arrays: dict[str, Any] = field(default_factory=dict)
    mesh_arrays: dict[str, Any] = field(default_factory=dict)
    first_mesh_arrays: dict[str, Any] = field(default_factory=dict)
    noise: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)


# -- stage kernels (module-level so they pickle to workers) ---------------


def _ring_smoothed(scene, *, radius_in, width, sigma, truncate):
    """``scene`` minus its ring median, smoothed: the first mask's detection map.

    One task per tile for the three steps, on the sum of their halos.
    """
    ring = ring_median(scene, radius_in=radius_in, width=width)
    difference = (scene.astype(np.float32) - ring).astype(np.float32)
    return smooth(difference, sigma, truncate=truncate)


def _noise_and_coverage(more: tuple, with_noise: bool) -> tuple:
    """A mask kernel's extra inputs: the noise map (or None), then coverage masks."""
    return (more[0], more[1:]) if with_noise else (None, more)


def _first_mask(smoothed, *more, n_sigma, radius, level=None, with_noise=False):
    """Detections dilated, OR a coverage mask (last in ``more``, if given)."""
    noise, coverage = _noise_and_coverage(more, with_noise)
    noise = level if noise is None else noise
    with np.errstate(invalid="ignore"):
        detected = np.isfinite(smoothed) & (smoothed > n_sigma * noise)
    out = dilate_mask(detected, radius)
    for m in coverage:
        out |= m
    return out


def _scale_mask(
    residual,
    noise=None,
    *,
    sigma,
    truncate,
    n_sigma,
    n_pixels,
    radius,
    level=None,
):
    noise = level if noise is None else noise
    smoothed = smooth(residual, sigma, truncate=truncate)
    with np.errstate(invalid="ignore"):
        detected = np.isfinite(smoothed) & (smoothed > n_sigma * noise)
    return dilate_mask(size_filter(detected, n_pixels), radius)


def _scale_masks(
    residual,
    *more,
    scales,
    truncate,
    n_sigma,
    n_pixels,
    level=None,
    with_noise=False,
):
    """Union of the multi-scale masks (and a coverage mask, last in ``more``).

    One task per tile for all scales: each scale is computed on the halo of
    the widest one, which is exact since a deeper halo only adds pixels
    that scale does not reach.
    """
    noise, coverage = _noise_and_coverage(more, with_noise)
    out = np.zeros(residual.shape, dtype=bool)
    for sigma, radius in scales:
        out |= _scale_mask(
            residual,
            noise,
            sigma=sigma,
            truncate=truncate,
            n_sigma=n_sigma,
            n_pixels=n_pixels,
            radius=radius,
            level=level,
        )
    for m in coverage:
        out |= m
    return out


def _masked(values, mask):
    return np.where(mask, np.float32(np.nan), values).astype(np.float32)


def _filter_pair(mesh, threshold_mesh, *, filter_size, filter_threshold, global_min):
    return filter_mesh(
        mesh,
        filter_size=filter_size,
        filter_threshold=filter_threshold,
        threshold_mesh=threshold_mesh,
        global_min=global_min,
    ).astype(np.float32)


def _restore_excluded(filtered, raw):
    return np.where(np.isnan(raw), np.float32(np.nan), filtered).astype(np.float32)


def _covered(*inputs, interp, out_shape, out_offset, mesh_offset):
    """``interp``'s map, NaN where the scene (last of ``inputs``) has no data."""
    *rest, scene = inputs
    values = interp(
        *rest, out_shape=out_shape, out_offset=out_offset, mesh_offset=mesh_offset
    )
    return np.where(np.isfinite(scene), values, np.float32(np.nan)).astype(np.float32)


def _subtract(scene, background):
    return (scene - background).astype(np.float32)


def _fill_holes(mesh, primary, *, interp, out_shape, out_offset, mesh_offset):
    """``primary`` with its NaN pixels taken from the mesh interpolation."""
    holes = np.isnan(primary)
    if not holes.any():
        return primary.astype(np.float32, copy=False)
    fallback = interp(
        mesh, out_shape=out_shape, out_offset=out_offset, mesh_offset=mesh_offset
    )
    return np.where(holes, fallback, primary).astype(np.float32)


def _smoothfit_kernel(scene, mask, *, scale, order, truncate, step):
    return smoothfit(
        scene, mask, scale=scale, order=order, truncate=truncate, step=step
    )


# -- helpers ----------------------------------------------------------------


def _global_noise(backend, array, *, clip: float | None, maxiters: int = 5, mask=None):
    """Standard deviation of ``array``'s finite pixels, optionally sigma-clipped.

    Clipping is about the mean (each pass is one exact reduction) and stops
    when an iteration keeps the same pixels or after ``maxiters`` passes.
    The array is held in memory for the passes when it fits.
    """
    held = backend.hold(array)
    n, mean, std = backend.clipped_moments(
        held, clip=clip, maxiters=maxiters, mask=mask
    )
    backend.release(held)
    if n == 0:
        msg = "no finite, unmasked pixels left to estimate the noise from"
        raise PipelineError(msg)
    if not std > 0:
        msg = "the noise of the image is zero: a constant image has no sky to estimate"
        raise PipelineError(msg)
    return {"count": n, "mean": mean, "std": std}


def _mesh_background(
    backend,
    image,
    mask,
    m: MeshConfig,
    *,
    shape,
    chunks,
    label,
    want_background=True,
    want_rms=True,
    fallback_for=None,
    coverage=None,
):
    """Background2D-like mesh stage: stats, fill, filter, interpolate.

    Only the full-resolution maps asked for are interpolated. With
    ``fallback_for`` (a full-resolution background with NaN holes) the
    background map is that array with its holes filled from the mesh, and
    tiles without holes skip the interpolation. With ``coverage`` (the
    scene), both maps are NaN where it is not finite, in the same task.
    """
    stats_kw = {
        "exclude_percentile": m.exclude_percentile,
        "sigma_clip": make_sigma_clip(m.sigma_clip, m.sigma_clip_maxiters),
        "bkg_estimator": make_estimator(m.bkg_estimator, "bkg"),
        "bkg_rms_estimator": make_estimator(m.bkg_rms_estimator, "rms"),
    }
    bkg_raw, rms_raw, n_good = backend.mesh_stats(
        mesh_statistics,
        image,
        mask,
        box_size=m.box_size,
        name="mesh-stats",
        stage=label,
        **stats_kw,
    )
    global_min = backend.nanmin(bkg_raw)
    if math.isnan(global_min):
        threshold = (1 - m.exclude_percentile / 100.0) * m.box_size[0] * m.box_size[1]
        msg = (
            f"every mesh box of the {label} stage has <= {threshold:g} usable pixels "
            f"(box_size={m.box_size}, exclude_percentile={m.exclude_percentile}); "
            "raise exclude_percentile or check the mask and coverage"
        )
        raise PipelineError(msg)
    fill = functools.partial(
        fill_mesh_nans,
        n_neighbors=m.fill_n_neighbors,
        power=1.0,
        regularization=0.0,
        max_distance=m.max_distance,
    )
    fdepth = fill_depth(m.max_distance)
    bkg_f = backend.local(
        fill, [bkg_raw], depth=fdepth, dtype=np.float32, name="mesh-fill"
    )
    rms_f = backend.local(
        fill, [rms_raw], depth=fdepth, dtype=np.float32, name="mesh-fill"
    )
    filt = functools.partial(
        _filter_pair,
        filter_size=m.filter_size,
        filter_threshold=m.filter_threshold,
        global_min=global_min,
    )
    depth = filter_depth(m.filter_size)
    bkg_mesh = backend.local(
        filt, [bkg_f, bkg_f], depth=depth, dtype=np.float32, name="mesh-filter"
    )
    rms_mesh = backend.local(
        filt, [rms_f, bkg_f], depth=depth, dtype=np.float32, name="mesh-filter"
    )
    held = backend.checkpoint_many(
        {f"{label}_bkg_mesh": bkg_mesh, f"{label}_rms_mesh": rms_mesh}
    )
    bkg_mesh, rms_mesh = held[f"{label}_bkg_mesh"], held[f"{label}_rms_mesh"]

    to_pix = {"chunks": chunks} if backend.tiled else {}
    if m.interpolator == "idw":
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
        depth = idw_depth(reach, m.box_size)
        sources = [
            backend.local(
                _restore_excluded,
                [mesh, bkg_raw],
                depth=0,
                dtype=np.float32,
                name="mesh-restore",
            )
            for mesh in (bkg_mesh, rms_mesh)
        ]
    else:
        interp = None
        depth = spline_depth()
        sources = [bkg_mesh, rms_mesh]
        if backend.any(np.isnan(bkg_mesh)):
            msg = (
                f"the {label} mesh has boxes farther than max_distance="
                f"{m.max_distance:g} boxes from any usable box (a large blank or "
                "masked region); the spline needs every box filled: raise "
                "max_distance or use interpolator='idw', which leaves such regions NaN"
            )
            raise PipelineError(msg)
    maps = []
    for src, wanted in zip(sources, (want_background, want_rms), strict=True):
        if not wanted:
            maps.append(None)
            continue
        if interp is None:
            func = functools.partial(
                spline_interpolate,
                box_size=m.box_size,
                mesh_global_shape=tuple(bkg_mesh.shape),
                clip_range=(backend.nanmin(src), backend.nanmax(src)),
            )
        else:
            func = interp
        pixels = ()
        if fallback_for is not None and src is sources[0]:
            func = functools.partial(_fill_holes, interp=func)
            pixels = (fallback_for,)
        if coverage is not None:
            func = functools.partial(_covered, interp=func)
            pixels = (*pixels, coverage)
        maps.append(
            backend.to_pixels(
                func,
                [src],
                box_size=m.box_size,
                depth=depth,
                shape=shape,
                dtype=np.float32,
                name="interpolate",
                pixels=pixels,
                **to_pix,
            )
        )
    meshes = {
        "background_mesh": bkg_mesh,
        "background_rms_mesh": rms_mesh,
        "n_pixels_mesh": n_good,
    }
    return maps[0], maps[1], meshes


def run_pipeline(
    scene, config: Config, backend, *, coverage_mask=None
) -> PipelineResult:
    """Run every stage of ``config`` on ``scene`` with ``backend``.

    Parameters
    ----------
    scene : 2-D numpy or dask array
        Non-finite pixels are no coverage; computed in float32.
    config : Config
    backend : WholeImage or Tiled
    coverage_mask : 2-D bool array, optional
        True where pixels must be ignored (user mask); they are treated as
        masked in every stage but still receive a background.

    Returns
    -------
    PipelineResult
    """
    cfg = config
    result = PipelineResult()
    shape = tuple(int(s) for s in scene.shape)
    chunks = getattr(scene, "chunks", None)
    t0 = time.perf_counter()

    def lap(name):
        nonlocal t0
        now = time.perf_counter()
        result.timings[name] = round(now - t0, 4)
        t0 = now

    # Everything runs in float32 (the outputs' type), whatever the input, so
    # both backends subtract, compare and sum the same values.
    scene = scene.astype(np.float32)
    if not backend.any(np.isfinite(scene)):
        msg = "the image has no finite pixels (all NaN or inf): nothing to estimate"
        raise PipelineError(msg)
    # Read (and, for a compressed or remote input, decode) the input once.
    # Kept in memory, it is not written: a resumed run reads the input again.
    scene = backend.checkpoint("scene", scene, resumable=False)
    # Statistics (ring median, noise levels) leave the user's mask out; the
    # masked pixels still receive a background.
    if coverage_mask is not None:
        stats_scene = backend.local(
            _masked, [scene, coverage_mask], depth=0, dtype=np.float32, name="scene"
        )
    else:
        stats_scene = scene

    # 1. ring median and the first mask
    fm = cfg.first_mask
    smoothed = backend.local(
        functools.partial(
            _ring_smoothed,
            radius_in=cfg.ring.radius_in,
            width=cfg.ring.width,
            sigma=fm.smooth_sigma,
            truncate=cfg.smooth_truncate,
        ),
        [stats_scene],
        depth=ring_depth(cfg.ring.radius_in, cfg.ring.width)
        + gaussian_depth(fm.smooth_sigma, cfg.smooth_truncate),
        dtype=np.float32,
        name="ring-median",
    )
    smoothed = backend.checkpoint("first_smoothed", smoothed)
    lap("ring_median")

    first_kw = {"n_sigma": fm.n_sigma, "radius": fm.dilate_radius}
    if cfg.noise_mode == "global":
        noise = _global_noise(
            backend,
            smoothed,
            clip=fm.noise_sigma_clip,
            maxiters=fm.noise_sigma_clip_maxiters,
        )
        result.noise["first_mask"] = noise
        mask_inputs = [smoothed]
        first_kw["level"] = noise["std"]
    else:
        _, local_rms, _ = _mesh_background(
            backend,
            smoothed,
            None,
            cfg.first_mesh,
            shape=shape,
            chunks=chunks,
            label="first_noise",
            want_background=False,
        )
        mask_inputs = [smoothed, local_rms]
        first_kw["with_noise"] = True
    if coverage_mask is not None:
        mask_inputs.append(coverage_mask)
    mask = backend.local(
        functools.partial(_first_mask, **first_kw),
        mask_inputs,
        depth=dilate_depth(fm.dilate_radius),
        dtype=bool,
        name="source-mask",
    )
    mask = backend.checkpoint("first_mask", mask)
    lap("first_mask")

    # 2. first mesh background; its RMS map is needed only as local noise.
    local = cfg.noise_mode == "local"
    background, background_rms, meshes = _mesh_background(
        backend,
        scene,
        mask,
        cfg.first_mesh,
        shape=shape,
        chunks=chunks,
        label="first",
        want_rms=local,
    )
    background = backend.checkpoint("first_background", background)
    if local:
        background_rms = backend.checkpoint("first_background_rms", background_rms)
    result.first_mesh_arrays = meshes
    lap("first_mesh")

    # 3. rounds of multi-scale masks and final background
    sm = cfg.source_mask
    for rnd in range(cfg.n_rounds):
        # The RMS map is an output of the last round, and local noise for the
        # next one; otherwise nobody reads it.
        want_rms = local or rnd == cfg.n_rounds - 1
        # Held in memory (when it fits) for the noise passes and the masks.
        residual = backend.hold(
            backend.local(
                _subtract,
                [stats_scene, background],
                depth=0,
                dtype=np.float32,
                name="residual",
            )
        )
        if cfg.noise_mode == "global":
            noise = _global_noise(
                backend,
                residual,
                clip=sm.noise_sigma_clip,
                maxiters=sm.noise_sigma_clip_maxiters,
            )
            result.noise[f"source_mask_round{rnd + 1}"] = noise
            noise_inputs: list = []
            level = noise["std"]
        else:
            noise_inputs = [background_rms]
            level = None
        scales = [
            (fwhm_to_sigma(fwhm), radius)
            for fwhm, radius in zip(sm.fwhm, sm.tophat_radius, strict=True)
        ]
        depth = max(
            gaussian_depth(sigma, cfg.smooth_truncate)
            + size_filter_depth(sm.n_pixels)
            + dilate_depth(radius)
            for sigma, radius in scales
        )
        coverage = [coverage_mask] if coverage_mask is not None else []
        mask = backend.local(
            functools.partial(
                _scale_masks,
                scales=scales,
                truncate=cfg.smooth_truncate,
                n_sigma=sm.n_sigma,
                n_pixels=sm.n_pixels,
                level=level,
                with_noise=bool(noise_inputs),
            ),
            [residual, *noise_inputs, *coverage],
            depth=depth,
            dtype=bool,
            name="source-mask",
        )
        mask = backend.checkpoint(f"mask_round{rnd + 1}", mask)

        fit = None
        if cfg.final_method == "smoothfit":
            sf = cfg.smoothfit
            fit = backend.local(
                functools.partial(
                    _smoothfit_kernel,
                    scale=sf.scale,
                    order=sf.order,
                    truncate=sf.truncate,
                    step=sf.step,
                ),
                [scene, mask],
                depth=smoothfit_depth(sf.scale, sf.truncate, step=sf.step),
                dtype=np.float32,
                name="smoothfit",
            )
        # With the smooth fit, the mesh background only fills the fit's holes
        # (masked regions wider than its window), having the wider reach.
        background, background_rms, meshes = _mesh_background(
            backend,
            scene,
            mask,
            cfg.final_mesh,
            shape=shape,
            chunks=chunks,
            label=f"round{rnd + 1}",
            want_rms=want_rms,
            fallback_for=fit,
            # The last round's maps are outputs: no background where no data.
            coverage=scene if rnd == cfg.n_rounds - 1 else None,
        )
        if rnd < cfg.n_rounds - 1:
            background = backend.checkpoint(f"background_round{rnd + 1}", background)
            if want_rms:
                background_rms = backend.checkpoint(
                    f"background_rms_round{rnd + 1}", background_rms
                )
        # The last round's maps are materialized by writing the outputs: a
        # checkpoint would write and read them once more.
        lap(f"round{rnd + 1}")

    subtracted = backend.local(
        _subtract, [scene, background], depth=0, dtype=np.float32, name="store"
    )
    result.arrays = {
        "background": background,
        "background_rms": background_rms,
        "mask": mask,
        "subtracted": subtracted,
    }
    result.mesh_arrays = meshes
    return result

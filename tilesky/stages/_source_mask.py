"""Multi-scale source masks: the residual smoothed at several FWHMs.

At each scale the residual (``scene - background``) is smoothed, thresholded
at ``n_sigma`` times the noise, cleaned of groups smaller than ``n_pixels``
(8-connected) and dilated with that scale's top-hat; the masks of all
scales and the user's mask are OR-ed. One task per tile computes every
scale on the halo of the widest, which is exact: a deeper halo only adds
pixels a scale does not reach.

With ``auto_coarse_fraction > 0`` the data decide whether the coarse
(extended-source) scales and a wider growth are used (:func:`coarse_gate`):
a global step, the exact mean of a halo'd per-pixel map, run once on the
first round's residual.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from tilesky.config import Config
from tilesky.kernels._grow import grow_by_size, grow_depth
from tilesky.kernels._mask import (
    dilate_depth,
    dilate_mask,
    fwhm_to_sigma,
    gaussian_depth,
    size_filter,
    size_filter_depth,
    smooth,
)
from tilesky.stages._stage import LocalStage, threshold_inputs

__all__ = [
    "NAME",
    "apply",
    "coarse_gate",
    "depth",
    "extended_config",
    "growth",
    "scale_mask",
    "scale_masks",
    "scales",
]

NAME = "source-mask"


def scale_mask(residual, noise, *, sigma, truncate, n_sigma, n_pixels, radius):
    """The mask of one scale: smoothed, thresholded, size-filtered, dilated."""
    smoothed = smooth(residual, sigma, truncate=truncate)
    with np.errstate(invalid="ignore"):
        detected = np.isfinite(smoothed) & (smoothed > n_sigma * noise)
    return dilate_mask(size_filter(detected, n_pixels), radius)


def scale_masks(
    residual,
    *coverage,
    scales,
    truncate,
    n_sigma,
    n_pixels,
    noise,
    scaled=False,
    grow=None,
):
    """Union of the masks of every ``(sigma, radius)`` scale and ``coverage``.

    ``noise`` is a number (global level) or, when None, the first array of
    ``coverage`` is the local noise map. ``scaled``: the next array is a
    relative depth map the level is multiplied by. ``grow`` (keywords of
    :func:`~tilesky.kernels._grow.grow_by_size`) widens the detections by
    the size of each region before the coverage masks are added.
    """
    if noise is None:
        noise, *coverage = coverage
    if scaled:
        depth_map, *coverage = coverage
        noise = noise * depth_map
    out = np.zeros(residual.shape, dtype=bool)
    fine = [sc for sc in scales if sc[1] >= 0]
    for sigma, radius, relative in fine:
        out |= scale_mask(
            residual,
            noise,
            sigma=sigma,
            truncate=truncate,
            n_sigma=n_sigma * relative,
            n_pixels=n_pixels,
            radius=radius,
        )
    # Coarse scales see the residual without what the fine ones found, so
    # a smoothed point source does not pass for extended light.
    coarse = np.zeros(residual.shape, dtype=bool)
    for sigma, _, relative in (sc for sc in scales if sc[1] < 0):
        smoothed = smooth(residual, sigma, truncate=truncate, mask=out)
        with np.errstate(invalid="ignore"):
            coarse |= np.isfinite(smoothed) & (smoothed > n_sigma * relative * noise)
    out |= size_filter(coarse, n_pixels)
    if grow is not None:
        out = grow_by_size(out, **grow)
    for m in coverage:
        out |= m
    return out


def scales(cfg: Config) -> list[tuple[float, int, float]]:
    """``(Gaussian sigma, top-hat radius, threshold factor)`` of each scale.

    The configured scales threshold at ``n_sigma`` times the noise of the
    unsmoothed residual (factor 1). The coarse scales (``coarse_fwhm``)
    threshold at ``coarse_n_sigma`` times the noise *of the smoothed map*,
    the pixel noise times the Gaussian's L2 norm ``1 / (2 sqrt(pi) sigma)``
    for uncorrelated noise: that is what lets a disc of a fraction of a
    sigma per pixel, spread over thousands of pixels, be found. They add no
    top-hat (radius -1 marks them): their detections grow by size.
    """
    sm = cfg.source_mask
    fine = [
        (fwhm_to_sigma(fwhm), radius, 1.0)
        for fwhm, radius in zip(sm.fwhm, sm.tophat_radius, strict=True)
    ]
    coarse = []
    for fwhm in sm.coarse_fwhm:
        sigma = fwhm_to_sigma(fwhm)
        norm = 1.0 / (2.0 * math.sqrt(math.pi) * sigma)
        coarse.append((sigma, -1, sm.coarse_n_sigma * norm / sm.n_sigma))
    return fine + coarse


def growth(cfg: Config) -> dict | None:
    """Keywords of the size-dependent growth, or None when it is off."""
    sm = cfg.source_mask
    if sm.grow_factor <= 0:
        return None
    return {
        "factor": sm.grow_factor,
        "min_thickness": sm.grow_min_thickness,
        "max_thickness": sm.grow_max_thickness,
    }


def depth(*, scales, truncate: float, n_pixels: int, grow: dict | None = None) -> int:
    """Halo: the widest scale's smoothing + connectivity + dilation reach,
    plus the growth's reach (it runs on their union)."""
    fine = max(
        gaussian_depth(sigma, truncate)
        + size_filter_depth(n_pixels)
        + dilate_depth(radius)
        for sigma, radius, _ in scales
        if radius >= 0
    )
    # A coarse scale reads the fine mask within its kernel's reach.
    coarse = [gaussian_depth(s, truncate) for s, radius, _ in scales if radius < 0]
    detect = fine + max(coarse) + size_filter_depth(n_pixels) if coarse else fine
    if grow is None:
        return detect
    return detect + grow_depth(grow["factor"], grow["max_thickness"])


def extended_config(cfg: Config) -> Config:
    """``cfg`` with the coarse scales and growth the data may switch on."""
    sm = cfg.source_mask
    coarse = tuple(dict.fromkeys(sm.coarse_fwhm + sm.auto_coarse_fwhm))
    return cfg.with_overrides(
        [
            f"source_mask.coarse_fwhm={list(coarse)}",
            f"source_mask.grow_factor={sm.auto_grow_factor}",
            f"source_mask.grow_max_thickness={sm.auto_grow_max_thickness}",
        ]
    )


def _params(cfg: Config) -> dict:
    return {
        "scales": scales(cfg),
        "truncate": cfg.smooth_truncate,
        "n_pixels": cfg.source_mask.n_pixels,
        "grow": growth(cfg),
    }


def _added(residual, *coverage, base, extended):
    """1 where the extended masks add to the configured ones, 0 elsewhere,
    NaN off the footprint."""
    added = scale_masks(residual, *coverage, **extended) & ~scale_masks(
        residual, *coverage, **base
    )
    return np.where(np.isfinite(residual), added, np.nan).astype(np.float32)


def coarse_gate(backend, residual, noise, depth_map, user_mask, *, cfg: Config):
    """Whether the rounds use :func:`extended_config`, and the evidence.

    A global step: the fraction of the covered image that the coarse
    scales and the wider growth add to the first round's mask. A sky that
    is smooth on those scales (a flat-fielded survey frame) leaves them
    only the faint extended sources, a small fraction; structure of the
    sky itself on those scales (blemishes, scattered light of several
    sigma) is picked up over much of the image, and masking it would leave
    holes no fit can bridge, so then the configured masks stay.
    """
    limit = cfg.source_mask.auto_coarse_fraction
    if limit <= 0:
        return {"extended": False}
    inputs, level, scaled = threshold_inputs(residual, noise, depth_map, None)
    common = {"n_sigma": cfg.source_mask.n_sigma, "noise": level, "scaled": scaled}
    base, extended = _params(cfg), _params(extended_config(cfg))
    kernel = functools.partial(
        _added, base={**common, **base}, extended={**common, **extended}
    )
    halo = max(depth(**base), depth(**extended))
    added = LocalStage("coarse-gate", kernel, halo, np.float32)(backend, *inputs)
    _, fraction, _ = backend.clipped_moments(added, clip=None, maxiters=1)
    fraction = float(fraction)
    return {"extended": fraction < limit, "added_fraction": fraction, "limit": limit}


def apply(backend, residual, noise, depth_map, user_mask, gate=None, *, cfg: Config):
    """The round's mask of ``residual``; ``noise`` and ``depth_map`` as in
    the first mask; ``gate`` (:func:`coarse_gate`) may switch on the
    extended-source scales."""
    if gate is not None and gate.get("extended"):
        cfg = extended_config(cfg)
    sm = cfg.source_mask
    inputs, level, scaled = threshold_inputs(residual, noise, depth_map, user_mask)
    params = _params(cfg)
    kernel = functools.partial(
        scale_masks, n_sigma=sm.n_sigma, noise=level, scaled=scaled, **params
    )
    return LocalStage(NAME, kernel, depth(**params), bool)(backend, *inputs)

"""Multi-scale source masks: the residual smoothed at several FWHMs.

At each scale the residual (``scene - background``) is smoothed, thresholded
at ``n_sigma`` times the noise, cleaned of groups smaller than ``n_pixels``
(8-connected) and dilated with that scale's top-hat; the masks of all
scales and the user's mask are OR-ed. One task per tile computes every
scale on the halo of the widest, which is exact: a deeper halo only adds
pixels a scale does not reach.
"""

from __future__ import annotations

import functools

import numpy as np

from tilesky.config import Config
from tilesky.kernels._mask import (
    dilate_depth,
    dilate_mask,
    fwhm_to_sigma,
    gaussian_depth,
    size_filter,
    size_filter_depth,
    smooth,
)
from tilesky.stages._stage import LocalStage

__all__ = ["NAME", "apply", "depth", "scale_mask", "scale_masks", "scales"]

NAME = "source-mask"


def scale_mask(residual, noise, *, sigma, truncate, n_sigma, n_pixels, radius):
    """The mask of one scale: smoothed, thresholded, size-filtered, dilated."""
    smoothed = smooth(residual, sigma, truncate=truncate)
    with np.errstate(invalid="ignore"):
        detected = np.isfinite(smoothed) & (smoothed > n_sigma * noise)
    return dilate_mask(size_filter(detected, n_pixels), radius)


def scale_masks(residual, *coverage, scales, truncate, n_sigma, n_pixels, noise):
    """Union of the masks of every ``(sigma, radius)`` scale and ``coverage``.

    ``noise`` is a number (global level) or, when None, the first array of
    ``coverage`` is the local noise map.
    """
    if noise is None:
        noise, *coverage = coverage
    out = np.zeros(residual.shape, dtype=bool)
    for sigma, radius in scales:
        out |= scale_mask(
            residual,
            noise,
            sigma=sigma,
            truncate=truncate,
            n_sigma=n_sigma,
            n_pixels=n_pixels,
            radius=radius,
        )
    for m in coverage:
        out |= m
    return out


def scales(cfg: Config) -> list[tuple[float, int]]:
    """``(Gaussian sigma, top-hat radius)`` of each configured scale."""
    sm = cfg.source_mask
    return [
        (fwhm_to_sigma(fwhm), radius)
        for fwhm, radius in zip(sm.fwhm, sm.tophat_radius, strict=True)
    ]


def depth(*, scales, truncate: float, n_pixels: int) -> int:
    """Halo: the widest scale's smoothing + connectivity + dilation reach."""
    return max(
        gaussian_depth(sigma, truncate)
        + size_filter_depth(n_pixels)
        + dilate_depth(radius)
        for sigma, radius in scales
    )


def apply(backend, residual, noise, user_mask, *, cfg: Config):
    """The round's mask of ``residual``; ``noise`` as in the first mask."""
    sm = cfg.source_mask
    inputs = [residual]
    if isinstance(noise, dict):
        level = noise["std"]
    else:
        level = None
        inputs.append(noise)
    if user_mask is not None:
        inputs.append(user_mask)
    params = {
        "scales": scales(cfg),
        "truncate": cfg.smooth_truncate,
        "n_pixels": sm.n_pixels,
    }
    kernel = functools.partial(scale_masks, n_sigma=sm.n_sigma, noise=level, **params)
    return LocalStage(NAME, kernel, depth(**params), bool)(backend, *inputs)

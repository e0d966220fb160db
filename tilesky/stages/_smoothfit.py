"""Smooth fit stage: a masked, Gaussian-weighted local polynomial fit.

At each point, the polynomial of ``order`` that best fits the unmasked
pixels under a Gaussian window of ``scale`` px, solved on a grid of
``step`` px and interpolated (see :mod:`tilesky.kernels._smoothfit`).
Where the window holds no unmasked pixel the fit is NaN; the mesh
background fills those holes.
"""

from __future__ import annotations

import functools

import numpy as np

from tilesky.config import Config
from tilesky.kernels._smoothfit import smoothfit, smoothfit_depth
from tilesky.stages._stage import LocalStage

__all__ = ["NAME", "depth", "fit", "stage"]

NAME = "smoothfit"


def fit(scene, mask, *, scale, order, truncate, step):
    """The smooth fit of ``scene`` outside ``mask``."""
    return smoothfit(
        scene, mask, scale=scale, order=order, truncate=truncate, step=step
    )


def depth(*, scale: float, truncate: float, step: int) -> int:
    """Halo: the window's radius plus two grid steps, rounded to the grid."""
    return smoothfit_depth(scale, truncate, step=step)


def stage(cfg: Config) -> LocalStage:
    """The stage with ``cfg.smoothfit``'s parameters."""
    sf = cfg.smoothfit
    kernel = functools.partial(
        fit, scale=sf.scale, order=sf.order, truncate=sf.truncate, step=sf.step
    )
    halo = depth(scale=sf.scale, truncate=sf.truncate, step=sf.step)
    return LocalStage(NAME, kernel, halo, np.float32)

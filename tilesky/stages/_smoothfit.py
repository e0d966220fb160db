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
from numba import njit

from tilesky.config import Config
from tilesky.kernels._smoothfit import smoothfit, smoothfit_depth
from tilesky.stages._stage import LocalStage

__all__ = [
    "BRIDGE_NAME",
    "NAME",
    "bridge_stage",
    "bridged_fit",
    "depth",
    "fit",
    "stage",
]

NAME = "smoothfit"
BRIDGE_NAME = "smoothfit-bridge"


def fit(scene, mask, *, scale, order, truncate, step, binning=1):
    """The smooth fit of ``scene`` outside ``mask``."""
    return smoothfit(
        scene,
        mask,
        scale=scale,
        order=order,
        truncate=truncate,
        step=step,
        binning=binning,
    )


def bridged_fit(
    scene, mask, bridge, *, scale, order, truncate, step, coverage, binning=1
):
    """The fit, blended into ``bridge`` where its window is short of pixels."""
    value, weight = smoothfit(
        scene,
        mask,
        scale=scale,
        order=order,
        truncate=truncate,
        step=step,
        coverage=coverage,
        binning=binning,
    )
    out = np.empty(value.shape, dtype=np.float32)
    _blend(value, weight, np.asarray(bridge, dtype=np.float32), out)
    return out


@njit(cache=True, nogil=True)
def _blend(value, weight, bridge, out):  # pragma: no cover - numba
    # float32 throughout, as numpy's expression on float32 arrays.
    one = np.float32(1)
    for y in range(value.shape[0]):
        for x in range(value.shape[1]):
            v, w, b = value[y, x], weight[y, x], bridge[y, x]
            if b != b:
                # No bridge (a hole wider than even its window): the fit
                # where it has one, else NaN for the mesh to fill.
                out[y, x] = v
            elif w > 0 and v == v:
                out[y, x] = w * v + (one - w) * b
            else:
                # The fit where it has a value and some weight; the bridge
                # elsewhere.
                out[y, x] = b


def _bridge(scene, mask, *, scale, order, truncate, step, coverage, binning=1):
    value, _ = smoothfit(
        scene,
        mask,
        scale=scale,
        order=order,
        truncate=truncate,
        step=step,
        coverage=coverage,
        order0=True,
        binning=binning,
    )
    return value


def bridge_stage(cfg: Config) -> LocalStage | None:
    """The wide, low-order fit that bridges large masked regions, or None."""
    sf = cfg.smoothfit
    if sf.bridge_scale <= 0:
        return None
    kernel = functools.partial(
        _bridge,
        scale=sf.bridge_scale,
        order=sf.bridge_order,
        truncate=sf.truncate,
        step=sf.bridge_step,
        coverage=(sf.coverage_low, sf.coverage_high),
        binning=sf.bridge_fit_binning,
    )
    halo = depth(scale=sf.bridge_scale, truncate=sf.truncate, step=sf.bridge_step)
    return LocalStage(BRIDGE_NAME, kernel, halo, np.float32)


def depth(*, scale: float, truncate: float, step: int) -> int:
    """Halo: the window's radius plus two grid steps, rounded to the grid."""
    return smoothfit_depth(scale, truncate, step=step)


def stage(cfg: Config) -> LocalStage:
    """The stage with ``cfg.smoothfit``'s parameters.

    With a bridge (``bridge_scale > 0``) its kernel reads
    ``(scene, mask, bridge)``, else ``(scene, mask)``.
    """
    sf = cfg.smoothfit
    params = {
        "scale": sf.scale,
        "order": sf.order,
        "truncate": sf.truncate,
        "step": sf.step,
        "binning": sf.fit_binning,
    }
    if sf.bridge_scale > 0:
        coverage = (sf.coverage_low, sf.coverage_high)
        kernel = functools.partial(bridged_fit, coverage=coverage, **params)
    else:
        kernel = functools.partial(fit, **params)
    halo = depth(scale=sf.scale, truncate=sf.truncate, step=sf.step)
    return LocalStage(NAME, kernel, halo, np.float32)

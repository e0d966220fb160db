"""Pointwise steps (no halo): the user's mask applied, scene minus background."""

from __future__ import annotations

import numpy as np

from tilesky.stages._stage import LocalStage

__all__ = ["masked_scene", "residual", "subtracted"]


def masked(values, mask):
    """``values`` with NaN where ``mask`` is true (no coverage for statistics)."""
    return np.where(mask, np.float32(np.nan), values).astype(np.float32)


def subtract(scene, background):
    """``scene - background`` in float32."""
    return (scene - background).astype(np.float32)


def masked_scene(backend, scene, user_mask):
    """The scene the statistics see: the user's masked pixels left out.

    Those pixels still receive a background; only statistics (ring median,
    noise levels) skip them.
    """
    if user_mask is None:
        return scene
    return LocalStage("scene", masked, 0, np.float32)(backend, scene, user_mask)


#: The residual a round's masks are detected on, held for its passes.
residual = LocalStage("residual", subtract, 0, np.float32)

#: The ``subtracted`` output, computed as the outputs are stored.
subtracted = LocalStage("store", subtract, 0, np.float32)

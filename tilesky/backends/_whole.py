"""The whole-image backend: every kernel once on whole numpy arrays.

This is the reference the tiled backend is tested against: the tiling
invariant says a tiled run gives these results for any chunking.
"""

from __future__ import annotations

import math

import numpy as np

from tilesky.backends._clipping import clip_next, clip_range, clip_start
from tilesky.backends._protocol import Backend
from tilesky.kernels._noise import moment_state

__all__ = ["WholeImage"]


class WholeImage(Backend):
    """Run every step on the whole in-memory array (the reference)."""

    def local(self, func, arrays, *, depth, dtype, name):
        return np.asarray(func(*arrays), dtype=dtype)

    def mesh_stats(self, func, image, mask, *, box_size, name, checkpoint=None, **kw):
        bkg, rms, n_good = func(image, mask, box_size=box_size, **kw)
        # The same dtypes as the tiled path's stacked maps.
        return bkg.astype(np.float32), rms.astype(np.float32), n_good.astype(np.int32)

    def to_pixels(self, func, meshes, *, like, box_size, depth, dtype, name, pixels=()):
        return func(
            *meshes,
            *pixels,
            out_shape=tuple(like.shape),
            out_offset=(0, 0),
            mesh_offset=(0, 0),
        ).astype(dtype, copy=False)

    def clipped_moments(self, array, *, clip, maxiters, mask=None):
        step = clip_start(moment_state(array, mask=mask), clip)
        for _ in range(maxiters if clip is not None else 0):
            kept = clip_range(step, clip)
            if kept is None:
                break
            state = moment_state(array, lower=kept[0], upper=kept[1], mask=mask)
            step = clip_next(step, state)
        return step[:3]

    def nanmin(self, array) -> float:
        return float(np.nanmin(array)) if np.isfinite(array).any() else math.nan

    def nanmax(self, array) -> float:
        return float(np.nanmax(array)) if np.isfinite(array).any() else math.nan

    def any(self, array) -> bool:
        return bool(np.any(array))

    def checkpoint(self, name, array, *, resumable=True):
        return array

    def checkpoint_many(self, arrays):
        return dict(arrays)

    def hold(self, array):
        return array

"""What a stage is: a numpy kernel, its halo, its dtype and its task name."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["LocalStage", "threshold_inputs"]


@dataclass(frozen=True)
class LocalStage:
    """A kernel applied around every pixel: one :meth:`Backend.local` call.

    Parameters
    ----------
    name : str
        Task-name prefix: what the dashboard shows for this stage.
    kernel : callable
        ``kernel(*arrays) -> array``, numpy in and out, with every parameter
        bound (a module-level function or a ``functools.partial`` of one, so
        it pickles to workers).
    depth : int
        Halo in pixels: how far from a pixel the kernel reads. A tile's
        result equals the whole-image result when it sees this much around.
    dtype : numpy dtype
        The result's dtype, given so dask never probes the kernel.
    """

    name: str
    kernel: Callable[..., np.ndarray]
    depth: int
    dtype: Any

    def __call__(self, backend, *arrays):
        """Run the stage on ``arrays`` (one grid) with ``backend``.

        Parameters
        ----------
        backend : Backend
            Where the kernel runs (whole image or per tile).
        *arrays : Array
            The kernel's inputs, on one grid.

        Returns
        -------
        Array
            The kernel's output on that grid, of the stage's dtype.
        """
        return backend.local(
            self.kernel, arrays, depth=self.depth, dtype=self.dtype, name=self.name
        )


def threshold_inputs(image, noise, depth, user_mask):
    """The arrays and noise keywords of a thresholding stage.

    ``noise`` is the global noise (a dict with ``std``) or a local noise map
    (an array on the image's grid); ``depth`` an optional relative depth map
    the global level is scaled by. Returns ``(arrays, level, scaled)`` in
    the order the mask kernels read them: ``image``, the noise map (when
    ``level`` is None), the depth map (when ``scaled``), the user's mask.
    """
    arrays = [image]
    if isinstance(noise, dict):
        level = noise["std"]
    else:
        level = None
        arrays.append(noise)
    scaled = depth is not None and level is not None
    if scaled:
        arrays.append(depth)
    if user_mask is not None:
        arrays.append(user_mask)
    return arrays, level, scaled

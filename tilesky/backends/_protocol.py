"""The contract every execution backend meets.

The pipeline (:mod:`tilesky.pipeline`) and the stages (:mod:`tilesky.stages`)
are written once against this protocol. :class:`~tilesky.backends.WholeImage`
implements it by calling each kernel once on whole numpy arrays: it is the
reference. :class:`~tilesky.backends.Tiled` implements it per tile on dask
arrays. Nothing outside a backend asks which one runs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

__all__ = ["Backend"]

#: A full-resolution or mesh-resolution 2-D array of the backend's kind
#: (numpy for the whole-image backend, dask for the tiled one).
Array = Any


@runtime_checkable
class Backend(Protocol):
    """Operations a stage may ask for; each backend gives them one meaning.

    Kernels are numpy functions; a backend decides only where and on what
    rectangle they run. ``name`` is the task-name prefix (the stage on the
    dashboard); ``depth`` is the halo a kernel needs, in the units of the
    arrays it reads.
    """

    def local(
        self,
        func: Callable[..., np.ndarray],
        arrays: Sequence[Array],
        *,
        depth: int,
        dtype: Any,
        name: str,
    ) -> Array:
        """``func(*arrays)`` pixel by pixel, each pixel seeing ``depth`` around it.

        All arrays share one grid; the result has that grid and ``dtype``.
        """

    def mesh_stats(
        self,
        func: Callable[..., tuple[np.ndarray, np.ndarray, np.ndarray]],
        image: Array,
        mask: Array | None,
        *,
        box_size: tuple[int, int],
        name: str,
        checkpoint: str | None = None,
        **kw: Any,
    ) -> tuple[Array, Array, Array]:
        """Per-box ``(background, rms, n_good)`` maps of ``func`` over mesh boxes.

        Boxes are anchored at pixel (0, 0); maps are float32, float32, int32.
        ``checkpoint`` names the materialization of the three maps, if any.
        """

    def to_pixels(
        self,
        func: Callable[..., np.ndarray],
        meshes: Sequence[Array],
        *,
        like: Array,
        box_size: tuple[int, int],
        depth: int,
        dtype: Any,
        name: str,
        pixels: Sequence[Array] = (),
    ) -> Array:
        """Mesh maps to a full-resolution map on the grid of ``like``.

        ``func(*mesh_windows, *pixels, out_shape, out_offset, mesh_offset)``;
        ``depth`` is the halo in mesh cells; ``pixels`` are full-resolution
        inputs read without a halo.
        """

    def clipped_moments(
        self,
        array: Array,
        *,
        clip: float | None,
        maxiters: int,
        mask: Array | None = None,
    ) -> tuple[int, float, float]:
        """Exact ``(count, mean, std)`` of the finite pixels, sigma-clipped.

        The same bits for any backend and chunking (exact integer sums).
        """

    def nanmin(self, array: Array) -> float:
        """Smallest finite value (NaN when there is none)."""

    def nanmax(self, array: Array) -> float:
        """Largest finite value (NaN when there is none)."""

    def any(self, array: Array) -> bool:
        """Whether any element of ``array`` is true."""

    def checkpoint(self, name: str, array: Array, *, resumable: bool = True) -> Array:
        """Materialize an intermediate (``resumable=False``: cheap to rebuild)."""

    def checkpoint_many(self, arrays: Mapping[str, Array]) -> dict[str, Array]:
        """Materialize several intermediates in one computation."""

    def hold(self, array: Array) -> Array:
        """Keep ``array`` at hand for repeated passes (when memory allows)."""

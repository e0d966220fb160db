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

        Parameters
        ----------
        func : callable
            The kernel: numpy arrays in (the inputs with their halo), one
            array out (the same rectangle, halo included).
        arrays : sequence of Array
            The inputs, on one grid.
        depth : int
            The halo ``func`` needs, in pixels.
        dtype : dtype
            The result's dtype.
        name : str
            Task-name prefix.

        Returns
        -------
        Array
            The result on the inputs' grid.
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

        Parameters
        ----------
        func : callable
            ``func(image, mask, box_size=..., **kw)`` on a rectangle of whole
            boxes, giving its three maps.
        image : Array
            The full-resolution image.
        mask : Array or None
            Pixels to leave out (True), on the image's grid.
        box_size : (int, int)
            Mesh box size in pixels.
        name : str
            Task-name prefix.
        checkpoint : str, optional
            Checkpoint name of the three maps; None: not materialized.
        **kw
            More keywords of ``func``.

        Returns
        -------
        tuple of Array
            The background, RMS and good-pixel-count maps, one cell per box.
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

        Parameters
        ----------
        func : callable
            The interpolation kernel, called as above.
        meshes : sequence of Array
            Mesh maps, one cell per box.
        like : Array
            Full-resolution array whose grid (shape, chunks) the result takes.
        box_size : (int, int)
            Mesh box size in pixels.
        depth : int
            Halo of ``func``, in mesh cells.
        dtype : dtype
            The result's dtype.
        name : str
            Task-name prefix.
        pixels : sequence of Array, optional
            Full-resolution inputs of ``func``.

        Returns
        -------
        Array
            The full-resolution map.
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

        Parameters
        ----------
        array : Array
            The values.
        clip : float or None
            Clipping threshold in sigma about the mean; None: no clipping.
        maxiters : int
            Most clipping passes.
        mask : Array, optional
            Pixels to leave out (True).

        Returns
        -------
        tuple
            ``(count, mean, std)`` of the values kept by the last pass.
        """

    def nanmin(self, array: Array) -> float:
        """Smallest finite value (NaN when there is none).

        Parameters
        ----------
        array : Array
            The values.

        Returns
        -------
        float
            The value, computed now.
        """

    def nanmax(self, array: Array) -> float:
        """Largest finite value (NaN when there is none).

        Parameters
        ----------
        array : Array
            The values.

        Returns
        -------
        float
            The value, computed now.
        """

    def any(self, array: Array) -> bool:
        """Whether any element of ``array`` is true.

        Parameters
        ----------
        array : Array
            The values.

        Returns
        -------
        bool
            The answer, computed now.
        """

    def checkpoint(self, name: str, array: Array, *, resumable: bool = True) -> Array:
        """Materialize an intermediate.

        Parameters
        ----------
        name : str
            The intermediate's name (its checkpoint in a run store).
        array : Array
            The intermediate.
        resumable : bool, optional
            False when a resumed run can rebuild it cheaply, so that a store
            keeping it in memory need not write it.

        Returns
        -------
        Array
            The same values, computed (or being computed) once.
        """

    def checkpoint_many(self, arrays: Mapping[str, Array]) -> dict[str, Array]:
        """Materialize several intermediates in one computation.

        Parameters
        ----------
        arrays : mapping of str to Array
            The intermediates by name.

        Returns
        -------
        dict of str to Array
            The same names, materialized.
        """

    def hold(self, array: Array) -> Array:
        """Keep ``array`` at hand for repeated passes (when memory allows).

        Parameters
        ----------
        array : Array
            The array the next passes read.

        Returns
        -------
        Array
            The same values, held in memory or (too large) as given.
        """

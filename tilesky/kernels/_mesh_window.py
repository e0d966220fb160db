"""Mesh geometry shared by the mesh-to-image kernels (:mod:`._idw`, :mod:`._spline`).

Geometry (photutils' own): the image has shape ``(ny, nx)``, boxes are
``box_size = (by, bx)``, the mesh has shape ``(ceil(ny/by), ceil(nx/bx))`` and
mesh cell ``(j, i)`` is centred on pixel ``(j*by + (by-1)/2, i*bx + (bx-1)/2)``,
partial edge boxes included. Every kernel takes *global* offsets: ``mesh[0, 0]``
is global mesh cell ``mesh_offset`` and ``out[0, 0]`` is global pixel
``out_offset``, so the same call runs on the whole image (offsets 0) or on one
tile whose mesh block carries the halo given by the matching ``*_depth``
function (:func:`mesh_window` cuts that block).
"""

from __future__ import annotations

import numpy as np

__all__ = ["Pair", "as_mesh", "check_block", "int_pair", "mesh_window"]

#: A box size or shape: one integer for both axes, or ``(ny, nx)``.
Pair = int | tuple[int, int]


def int_pair(name: str, value, *, minimum: int) -> tuple[int, int]:
    """``value`` as a pair of integers >= ``minimum``; a scalar is repeated."""
    arr = np.atleast_1d(np.asarray(value))
    if arr.size == 1:
        arr = np.repeat(arr, 2)
    if arr.shape != (2,) or not np.all(arr == np.round(arr)) or np.any(arr < minimum):
        msg = (
            f"{name} must be an integer or a pair of integers >= {minimum}, "
            f"got {value!r}; pass e.g. {name}=(6, 6)."
        )
        raise ValueError(msg)
    return int(arr[0]), int(arr[1])


def as_mesh(mesh) -> np.ndarray:
    """``mesh`` as a 2-D array; a ValueError naming ``mesh`` otherwise."""
    mesh = np.asarray(mesh)
    if mesh.ndim != 2:
        msg = f"mesh must be 2-D, got shape {mesh.shape}; pass the (ny, nx) mesh."
        raise ValueError(msg)
    return mesh


def mesh_window(
    out_offset: tuple[int, int],
    out_shape: tuple[int, int],
    *,
    box_size: Pair,
    depth: int,
    mesh_shape: tuple[int, int],
) -> tuple[slice, slice]:
    """Global mesh slices a tile needs: its boxes plus ``depth`` cells, clipped.

    Parameters
    ----------
    out_offset, out_shape : pair of int
        Global pixel offset and shape of the tile.
    box_size : int or pair of int
        Box size ``(by, bx)``.
    depth : int
        Mesh halo, e.g. :func:`~tilesky.kernels._idw.idw_depth`,
        :func:`~tilesky.kernels._idw.fill_depth` or
        :func:`~tilesky.kernels._spline.spline_depth`.
    mesh_shape : pair of int
        Global mesh shape.

    Returns
    -------
    tuple of slice
        ``mesh[window]`` is the block to pass, with ``mesh_offset =
        (window[0].start, window[1].start)``.

    Examples
    --------
    >>> mesh_window((12, 0), (6, 5), box_size=6, depth=1, mesh_shape=(4, 3))
    (slice(1, 4, None), slice(0, 2, None))
    """
    box = int_pair("box_size", box_size, minimum=1)
    window = []
    for o, n, b, g in zip(out_offset, out_shape, box, mesh_shape, strict=True):
        first, last = o // b, (o + max(n, 1) - 1) // b
        window.append(slice(max(first - depth, 0), min(last + depth + 1, g)))
    return tuple(window)


def check_block(mesh, out_offset, out_shape, mesh_offset, box) -> None:
    """Raise unless the mesh block holds every box of the output block."""
    for axis in range(2):
        first = out_offset[axis] // box[axis]
        last = (out_offset[axis] + max(out_shape[axis], 1) - 1) // box[axis]
        lo, hi = mesh_offset[axis], mesh_offset[axis] + mesh.shape[axis]
        if first < lo or last >= hi:
            msg = (
                f"mesh block covers cells [{lo}, {hi}) along axis {axis} but "
                f"the output needs [{first}, {last}]; cut the block with "
                "mesh_window() and pass its start as mesh_offset."
            )
            raise ValueError(msg)

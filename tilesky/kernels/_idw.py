"""Bounded inverse-distance weighting: mesh holes, and mesh to pixels.

photutils 3.0 deprecates its background interpolators; :func:`idw_interpolate`
gives the results of its ``BkgIDWInterpolator`` and :func:`fill_mesh_nans`
those of ``Background2D._interpolate_grid``, with a neighbour search bounded
by ``max_distance`` so that a tile needs only a finite mesh halo
(:func:`idw_depth`, :func:`fill_depth`). The neighbour rule and its compiled
walk are in :mod:`tilesky.kernels._idw_walk`; the mesh geometry and
:func:`~tilesky.kernels._mesh_window.mesh_window` in
:mod:`tilesky.kernels._mesh_window`.
"""

from __future__ import annotations

import math

import numpy as np

from tilesky.kernels._idw_walk import idw_grid
from tilesky.kernels._mesh_window import Pair, as_mesh, check_block, int_pair

__all__ = ["fill_depth", "fill_mesh_nans", "idw_depth", "idw_interpolate"]


def _check_idw_params(n_neighbors, power, regularization, max_distance) -> None:
    if int(n_neighbors) != n_neighbors or n_neighbors < 1:
        msg = f"n_neighbors must be a positive integer, got {n_neighbors!r}."
        raise ValueError(msg)
    for name, value in (("power", power), ("regularization", regularization)):
        if not (np.isfinite(value) and value >= 0):
            msg = f"{name} must be finite and >= 0, got {value!r}."
            raise ValueError(msg)
    if not (np.isfinite(max_distance) and max_distance > 0):
        msg = (
            f"max_distance must be finite and > 0, got {max_distance!r}; it "
            "bounds the IDW search (pixels for images, cells for meshes)."
        )
        raise ValueError(msg)


def _reach_cells(max_distance: float, box: int) -> int:
    # |offset| of the farthest cell whose centre can lie within max_distance
    # of some pixel of a box: |dj|*box - (box-1)/2 <= max_distance.
    return math.floor((max_distance + 0.5 * (box - 1)) / box)


def fill_depth(max_distance: float) -> int:
    """Mesh halo (cells) that makes :func:`fill_mesh_nans` exact on a tile.

    A NaN cell only uses cells within ``max_distance`` cells, hence within
    ``floor(max_distance)`` rows and columns.

    Examples
    --------
    >>> fill_depth(2.5)
    2
    """
    _check_idw_params(1, 0.0, 0.0, max_distance)
    return math.floor(max_distance)


def fill_mesh_nans(
    mesh: np.ndarray,
    *,
    n_neighbors: int,
    power: float,
    regularization: float,
    max_distance: float,
) -> np.ndarray:
    """Fill the NaN cells of a mesh by bounded IDW of its valid cells.

    photutils' ``Background2D._interpolate_grid``, with a bounded, canonical
    neighbour set: distances are in mesh cells, neighbours are the
    ``n_neighbors`` nearest valid cells within ``max_distance`` cells, all
    cells tied with the k-th included; weights ``1/(d**power +
    regularization)``.

    Parameters
    ----------
    mesh : 2-D array
        Mesh values, NaN for excluded boxes.
    n_neighbors, power, regularization : int, float, float
        IDW parameters; photutils' ``_interpolate_grid`` uses 10, 1.0 and 0.0
        (the pipeline passes ``MeshConfig.fill_n_neighbors``, 1.0, 0.0).
    max_distance : float
        Search radius in mesh cells (``MeshConfig.max_distance``); the tile
        halo is :func:`fill_depth`.

    Returns
    -------
    numpy.ndarray
        A copy of ``mesh`` (its float dtype, float64 otherwise) with NaN cells
        filled; cells with no valid cell within reach stay NaN.

    Notes
    -----
    On a tile, pass the mesh block with :func:`fill_depth` cells of halo and
    keep the interior: it equals the whole-mesh result bit for bit. It differs
    from photutils only where the k-th and (k+1)-th distances tie (photutils
    keeps an arbitrary k of them) or where fewer than ``n_neighbors`` valid
    cells lie within ``max_distance``.

    Examples
    --------
    >>> mesh = np.array([[1.0, np.nan, 3.0]])
    >>> fill_mesh_nans(mesh, n_neighbors=2, power=1.0, regularization=0.0,
    ...                max_distance=16.0).tolist()
    [[1.0, 2.0, 3.0]]
    """
    _check_idw_params(n_neighbors, power, regularization, max_distance)
    mesh = as_mesh(mesh)
    dtype = mesh.dtype if mesh.dtype.kind == "f" else np.dtype(np.float64)
    vals = np.ascontiguousarray(mesh, dtype=np.float64)
    out = vals.copy()
    if np.isnan(vals).any():
        idw_grid(
            vals,
            0,
            0,
            out,
            0,
            0,
            1,
            1,
            int(n_neighbors),
            float(power),
            float(regularization),
            float(max_distance),
            True,
        )
    return out.astype(dtype, copy=False)


def idw_depth(max_distance: float, box_size: Pair) -> int:
    """Mesh halo (cells) that makes :func:`idw_interpolate` exact on a tile.

    The farthest useful cell from a box lies ``floor((max_distance +
    (b-1)/2) / b)`` cells away along an axis of box length ``b``; the larger
    of the two axes is returned.

    Examples
    --------
    >>> idw_depth(96.0, 6)
    16
    """
    by, bx = int_pair("box_size", box_size, minimum=1)
    max_distance = float(max_distance)
    _check_idw_params(1, 0.0, 0.0, max_distance)
    return max(_reach_cells(max_distance, by), _reach_cells(max_distance, bx))


def idw_interpolate(
    mesh: np.ndarray,
    *,
    box_size: Pair,
    out_shape: tuple[int, int],
    out_offset: tuple[int, int] = (0, 0),
    mesh_offset: tuple[int, int] = (0, 0),
    n_neighbors: int,
    power: float,
    regularization: float,
    max_distance: float,
) -> np.ndarray:
    """Interpolate the valid mesh cells to pixels by bounded IDW.

    photutils' ``BkgIDWInterpolator`` (Shepard IDW from the centres of the
    non-excluded meshes, weights ``1/(d**power + regularization)`` with ``d``
    in pixels), with the k nearest searched within ``max_distance`` pixels and
    ties at the k-th distance all included.

    Parameters
    ----------
    mesh : 2-D array
        Block of the global mesh whose ``[0, 0]`` is global cell
        ``mesh_offset``; NaN marks excluded cells (no data point there). As
        photutils does, pass the filled and filtered mesh with the excluded
        cells set back to NaN.
    box_size : int or pair of int
        Box size ``(by, bx)`` in pixels.
    out_shape : pair of int
        Shape of the output pixel block.
    out_offset, mesh_offset : pair of int
        Global pixel of ``out[0, 0]``; global mesh cell of ``mesh[0, 0]``.
    n_neighbors, power, regularization : int, float, float
        IDW parameters, photutils' names and meaning.
    max_distance : float
        Search radius in **pixels**, between a pixel and a mesh-box centre
        (the pipeline passes ``MeshConfig.max_distance * max(box_size)``).

    Returns
    -------
    numpy.ndarray
        float32 of shape ``out_shape``; NaN where no valid cell is in reach.

    Notes
    -----
    Tile rule: the mesh block must hold the cells of the output's boxes plus
    :func:`idw_depth` cells around them (clipped at the mesh edge, see
    :func:`~tilesky.kernels._mesh_window.mesh_window`); the result then
    equals the whole-image one exactly.
    A pixel on a mesh centre takes that cell's value (photutils' ``conf_dist``
    rule). The result differs from photutils only where the k-th and (k+1)-th
    distances tie (photutils keeps an arbitrary k of them) or where fewer than
    ``n_neighbors`` valid cells lie within ``max_distance``. Work is about
    ``n_neighbors`` steps per pixel.

    Examples
    --------
    Row 1 of an image with 3x3 boxes passes through both mesh centres:

    >>> mesh = np.array([[1.0, 3.0]])
    >>> idw_interpolate(mesh, box_size=3, out_shape=(1, 6), out_offset=(1, 0),
    ...                 n_neighbors=2, power=1.0, regularization=0.0,
    ...                 max_distance=48.0)
    array([[1.4      , 1.       , 1.6666666, 2.3333333, 3.       , 2.6      ]],
          dtype=float32)
    """
    box = int_pair("box_size", box_size, minimum=1)
    out_shape = int_pair("out_shape", out_shape, minimum=0)
    out_offset = int_pair("out_offset", out_offset, minimum=0)
    mesh_offset = int_pair("mesh_offset", mesh_offset, minimum=0)
    max_distance = float(max_distance)
    _check_idw_params(n_neighbors, power, regularization, max_distance)
    mesh = as_mesh(mesh)
    check_block(mesh, out_offset, out_shape, mesh_offset, box)
    out = np.empty(out_shape, dtype=np.float32)
    if out.size:
        idw_grid(
            np.ascontiguousarray(mesh, dtype=np.float64),
            mesh_offset[0],
            mesh_offset[1],
            out,
            out_offset[0],
            out_offset[1],
            box[0],
            box[1],
            int(n_neighbors),
            float(power),
            float(regularization),
            float(max_distance),
            False,
        )
    return out

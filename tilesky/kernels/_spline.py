"""Cubic-spline interpolation of a NaN-free mesh to pixels.

photutils' default ``BkgZoomInterpolator`` (``scipy.ndimage.zoom`` with
``order=3, mode='reflect', grid_mode=True``) evaluated on any pixel block:
the prefilter's reach is unbounded but decays geometrically, so a tile needs
the finite mesh halo :func:`spline_depth` for a result equal to the
whole-image one within float32 rounding. Mesh geometry and
:func:`~tilesky.kernels._mesh_window.mesh_window` are in
:mod:`tilesky.kernels._mesh_window`.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage, sparse

from tilesky.kernels._mesh_window import Pair, as_mesh, check_block, int_pair

__all__ = ["spline_depth", "spline_interpolate"]

# Pole of the cubic B-spline prefilter (see spline_depth for the bound).
_SPLINE_POLE = 2.0 - math.sqrt(3.0)
_SPLINE_RTOL = 1e-12


def spline_depth() -> int:
    """Mesh halo (cells) for :func:`spline_interpolate` on a tile.

    The cubic prefilter reaches every cell, but with pole ``z = 2 - sqrt(3)``
    a cell ``n`` away moves a 1-D coefficient by at most ``2*sqrt(3)/(1-z) *
    z**n * ptp``; in 2-D, with the other axis' filter gain (3) and range
    growth (3), at most ``28.4 * z**n * ptp(mesh)``. ``n = 24`` puts that
    below ``1e-12 * ptp(mesh)`` (measured: ~1e-15). Two more cells cover the
    evaluation's support (a pixel of box ``j`` uses coefficients
    ``j-2 .. j+2``).

    Examples
    --------
    >>> spline_depth()
    26
    """
    bound = 2.0 * 3.0 * 2.0 * math.sqrt(3.0) / (1.0 - _SPLINE_POLE)
    n = math.ceil(math.log(_SPLINE_RTOL / bound) / math.log(_SPLINE_POLE))
    return n + 2


def _reflect(index: np.ndarray, size: int) -> np.ndarray:
    # scipy's 'reflect' (half-sample symmetric, d c b a | a b c d) extension,
    # any number of periods.
    index = np.mod(index, 2 * size)
    return np.where(index >= size, 2 * size - 1 - index, index)


def _bspline_weights(offset: int, n: int, box: int):
    """Global coefficient indices (n, 4) and cubic B-spline weights of pixels."""
    cell, inbox = np.divmod(np.arange(offset, offset + n), box)
    # Mesh coordinate of a pixel is (y + 0.5)/box - 0.5 (zoom's grid_mode);
    # using only the in-box offset keeps the weights tile-independent.
    u = (inbox + 0.5) / box - 0.5
    shift = np.floor(u)
    t = u - shift
    first = cell + shift.astype(np.int64) - 1
    t2, t3 = t * t, t * t * t
    weights = np.stack(
        [
            (1.0 - t) ** 3 / 6.0,
            (3.0 * t3 - 6.0 * t2 + 4.0) / 6.0,
            (-3.0 * t3 + 3.0 * t2 + 3.0 * t + 1.0) / 6.0,
            t3 / 6.0,
        ],
        axis=1,
    )
    return first[:, None] + np.arange(4), weights


def spline_interpolate(
    mesh: np.ndarray,
    *,
    box_size: Pair,
    out_shape: tuple[int, int],
    out_offset: tuple[int, int] = (0, 0),
    mesh_offset: tuple[int, int] = (0, 0),
    mesh_global_shape: tuple[int, int],
    clip_range: tuple[float, float] | None = None,
) -> np.ndarray:
    """Interpolate a NaN-free mesh to pixels with a cubic spline.

    photutils' default ``BkgZoomInterpolator``: ``scipy.ndimage.zoom(mesh,
    box_size, order=3, mode='reflect', grid_mode=True)`` cropped to the image,
    then clipped to ``clip_range``.

    Parameters
    ----------
    mesh : 2-D array
        NaN-free block of the global mesh (fill it with
        :func:`~tilesky.kernels._idw.fill_mesh_nans` first); ``mesh[0, 0]``
        is cell ``mesh_offset``.
    box_size : int or pair of int
        Box size ``(by, bx)`` in pixels.
    out_shape : pair of int
        Shape of the output pixel block.
    out_offset, mesh_offset : pair of int
        Global pixel of ``out[0, 0]``; global mesh cell of ``mesh[0, 0]``.
    mesh_global_shape : pair of int
        Shape of the whole mesh, where the 'reflect' edge rule applies.
    clip_range : (float, float), optional
        ``(min, max)`` of the *global* mesh, a reduction the caller makes
        once (photutils' ``clip=True``); ``None`` leaves the spline unclipped.

    Returns
    -------
    numpy.ndarray
        float32 of shape ``out_shape``.

    Notes
    -----
    Tile rule: the block must hold the output's boxes plus :func:`spline_depth`
    cells (clipped at the mesh edge, see
    :func:`~tilesky.kernels._mesh_window.mesh_window`). Along an axis the block
    covers entirely (always, for meshes of up to ``spline_depth() + 1`` cells)
    the coefficients are scipy's, as in zoom. Otherwise the block is extended
    by 'reflect' beyond the global edge and its other borders are a truncation
    whose error at the output is below ``1e-12 * ptp(mesh)``; tiled therefore
    equals monolithic within float32 rounding. Evaluation is separable (two
    sparse products with four B-spline weights per output row and column), in
    float64.

    Examples
    --------
    >>> mesh = np.array([[0.0, 1.0], [2.0, 3.0]])
    >>> out = spline_interpolate(mesh, box_size=2, out_shape=(4, 4),
    ...                          mesh_global_shape=(2, 2), clip_range=(0, 3))
    >>> out.shape, out.dtype.name, float(out[0, 0]), float(out[-1, -1])
    ((4, 4), 'float32', 0.0, 3.0)
    """
    box = int_pair("box_size", box_size, minimum=1)
    out_shape = int_pair("out_shape", out_shape, minimum=0)
    out_offset = int_pair("out_offset", out_offset, minimum=0)
    mesh_offset = int_pair("mesh_offset", mesh_offset, minimum=0)
    gshape = int_pair("mesh_global_shape", mesh_global_shape, minimum=1)
    mesh = as_mesh(mesh)
    check_block(mesh, out_offset, out_shape, mesh_offset, box)
    if any(o + s > g for o, s, g in zip(mesh_offset, mesh.shape, gshape, strict=True)):
        msg = (
            f"mesh block at {mesh_offset} with shape {mesh.shape} exceeds "
            f"mesh_global_shape={gshape}; pass the shape of the whole mesh."
        )
        raise ValueError(msg)
    if 0 in out_shape:
        return np.empty(out_shape, dtype=np.float32)
    out = _spline_float64(mesh, box, out_shape, out_offset, mesh_offset, gshape)
    if clip_range is not None:
        np.clip(out, clip_range[0], clip_range[1], out=out)
    return out.astype(np.float32, order="C")


def _spline_float64(mesh, box, out_shape, out_offset, mesh_offset, gshape, depth=None):
    """Unclipped float64 spline of a block; ``depth`` overrides the halo."""
    depth = spline_depth() if depth is None else depth
    take, weights = [], []
    for axis in range(2):
        b, o, n, g = box[axis], out_offset[axis], out_shape[axis], gshape[axis]
        idx, w = _bspline_weights(o, n, b)
        if mesh_offset[axis] == 0 and mesh.shape[axis] == g:
            # Whole axis present: scipy's own 'reflect' prefilter, as zoom
            # does (it is inexact on axes shorter than ~8 cells, and photutils
            # is the reference), then 'reflect' coefficient indices.
            take.append(np.arange(g))
            idx = _reflect(idx, g)
        else:
            # Reflect-extend the block by the halo; the spline coefficients
            # near its border are wrong but spline_depth() cells away.
            start = o // b - depth
            cells = np.arange(start, (o + n - 1) // b + depth + 1)
            local = _reflect(cells, g) - mesh_offset[axis]
            if local.min() < 0 or local.max() >= mesh.shape[axis]:
                msg = (
                    f"mesh block along axis {axis} lacks the spline halo of "
                    f"{depth} cells; cut it with mesh_window(..., "
                    "depth=spline_depth())."
                )
                raise ValueError(msg)
            take.append(local)
            idx = idx - start
        weights.append(
            sparse.csr_array(
                (w.ravel(), idx.ravel(), np.arange(0, w.size + 1, 4)),
                shape=(n, len(take[-1])),
            )
        )
    ext = np.asarray(mesh[np.ix_(*take)], dtype=np.float64)
    if np.isnan(ext).any():
        msg = "mesh contains NaN; fill excluded cells with fill_mesh_nans() first."
        raise ValueError(msg)
    coeff = ndimage.spline_filter(ext, order=3, mode="reflect", output=np.float64)
    wy, wx = weights
    return (wx @ (wy @ coeff).T).T

"""SExtractor-compatible background and RMS maps, whole or tiled.

:func:`sextractor_background` gives the maps ``sep.Background(data, mask,
bw=..., bh=..., fw=..., fh=..., fthresh=...)`` gives (SEP reproduces
SExtractor's ``BACKGROUND`` check image), for pipelines migrating from
SExtractor or SEP. The algorithm is described in
:mod:`tilesky.kernels._sextractor`.

Tiled, on a dask array: the mesh statistics run per chunk (chunks are
multiples of the box, so no mesh straddles two), the mesh grid (one value per
box, small) is filled, filtered and given its spline derivatives in one
global step, as SExtractor's splines span the whole grid, and every chunk then
interpolates its own pixels from that grid. The result equals the in-memory
one bit for bit.
"""

from __future__ import annotations

import math
from typing import Any

import dask
import dask.array as da
import numpy as np

from tilesky.errors import ConfigError, InputError

__all__ = ["sextractor_background"]


def _pair(name: str, value: Any) -> tuple[int, int]:
    pair = (value, value) if np.ndim(value) == 0 else tuple(value)
    if len(pair) != 2 or not all(
        isinstance(v, int | np.integer) and not isinstance(v, bool) and v >= 1
        for v in pair
    ):
        msg = (
            f"{name} must be an integer >= 1 or a pair (ny, nx) of them, got {value!r}"
        )
        raise ConfigError(msg, params=name)
    return int(pair[0]), int(pair[1])


def _grid(back, sigma, filter_size, filter_threshold):
    from tilesky.kernels._sextractor import fill_and_filter, y_derivatives

    back, sigma = fill_and_filter(
        back, sigma, filter_size[0], filter_size[1], float(filter_threshold)
    )
    return back, sigma, y_derivatives(back), y_derivatives(sigma)


def _pixels(grid, dgrid, box, row0, nrows, col0, ncols, width):
    from tilesky.kernels._sextractor import spline_rows, x_geometry

    lo, dxs = x_geometry(width, box[1], grid.shape[1])
    return spline_rows(
        grid,
        dgrid,
        box[0],
        row0,
        nrows,
        lo[col0 : col0 + ncols],
        dxs[col0 : col0 + ncols],
    )


def _prepare(image: Any, mask: Any):
    lazy = isinstance(image, da.Array)
    lib = da if lazy else np
    if not lazy:
        image = np.asarray(image)
    if image.ndim != 2 or min(image.shape) == 0:
        msg = f"image has shape {tuple(image.shape)}; pass a non-empty 2-D image"
        raise InputError(msg, params="image")
    if image.dtype.kind not in "iuf":
        msg = f"image has dtype {image.dtype}; pass an image of numbers"
        raise InputError(msg, params="image")
    # SEP computes in float32: so do the statistics, and NaN is no coverage.
    image = image.astype(np.float32)
    bad = ~lib.isfinite(image)
    if mask is not None:
        if tuple(mask.shape) != tuple(image.shape):
            msg = (
                f"mask has shape {tuple(mask.shape)} but the image has shape "
                f"{tuple(image.shape)}; give a mask of the image's shape"
            )
            raise InputError(msg, params="mask")
        given = mask if lazy and isinstance(mask, da.Array) else np.asarray(mask)
        bad = bad | (given != 0)
    return image, bad, lazy


def sextractor_background(
    image: Any,
    mask: Any = None,
    *,
    box_size: int | tuple[int, int] = 64,
    filter_size: int | tuple[int, int] = 3,
    filter_threshold: float = 0.0,
) -> tuple[Any, Any]:
    """SExtractor's background and background-RMS maps of ``image``.

    Parameters
    ----------
    image : array_like or dask.array.Array
        The 2-D image; NaN pixels are left out. A dask array is processed
        tile by tile (its chunks are re-cut to multiples of ``box_size`` if
        they are not).
    mask : array_like or dask.array.Array, optional
        True (non-zero) where pixels are left out, as SEP's ``mask`` with
        ``maskthresh=0``.
    box_size : int or (int, int)
        Mesh box ``(bh, bw)``: SExtractor's ``BACK_SIZE``, SEP's ``bh, bw``.
    filter_size : int or (int, int)
        Median filter ``(fh, fw)`` in meshes: ``BACK_FILTERSIZE``, SEP's
        ``fh, fw``.
    filter_threshold : float
        ``BACK_FILTERTHRESH``, SEP's ``fthresh``: a mesh is replaced by the
        filtered value only where they differ by at least this.

    Returns
    -------
    background, rms : numpy.ndarray or dask.array.Array
        float32 maps of the image's shape (dask arrays for a dask input).

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> back, rms = sextractor_background(rng.normal(10, 2, (128, 128)), box_size=32)
    >>> bool(abs(float(back.mean()) - 10) < 0.2), bool(abs(float(rms.mean()) - 2) < 0.2)
    (True, True)
    """
    from tilesky.kernels._sextractor import mesh_stats

    box = _pair("box_size", box_size)
    fsize = _pair("filter_size", filter_size)
    if not math.isfinite(float(filter_threshold)):
        msg = f"filter_threshold must be finite, got {filter_threshold!r}"
        raise ConfigError(msg, params="filter_threshold")
    image, bad, lazy = _prepare(image, mask)
    shape = image.shape
    if not lazy:
        back, sigma = mesh_stats(np.ascontiguousarray(image), bad, *box)
        back, sigma, dback, dsigma = _grid(back, sigma, fsize, filter_threshold)
        where = (0, shape[0], 0, shape[1], shape[1])
        return (
            _pixels(back, dback, box, *where),
            _pixels(sigma, dsigma, box, *where),
        )
    chunks = tuple(
        tuple(_aligned(c, b)) for c, b in zip(image.chunks, box, strict=True)
    )
    image, bad = image.rechunk(chunks), bad.rechunk(chunks)
    return _tiled(image, bad, box, fsize, filter_threshold)


def _aligned(chunks: tuple[int, ...], box: int) -> list[int]:
    """Chunk edges rounded up to multiples of ``box`` (the last may be short)."""
    total, size = sum(chunks), max(chunks)
    step = -(-size // box) * box
    edges = [step] * (total // step)
    if total % step:
        edges.append(total % step)
    return edges


def _tiled(image: da.Array, bad: da.Array, box, fsize, fthresh):
    from tilesky.kernels._sextractor import mesh_stats

    def stats(block, mask):
        back, sigma = mesh_stats(np.ascontiguousarray(block), mask, *box)
        return np.stack([back, sigma])

    mesh_chunks = tuple(
        tuple(-(-c // b) for c in cs) for cs, b in zip(image.chunks, box, strict=True)
    )
    meshes = da.map_blocks(
        stats,
        image,
        bad,
        dtype=np.float32,
        chunks=((2,), *mesh_chunks),
        new_axis=0,
        token="sextractor-mesh-stats",
    )
    grid = dask.delayed(_grid_of_stack, pure=True)(meshes, fsize, fthresh)
    width = image.shape[1]

    def interpolate(block, which, grid, block_info=None):
        (r0, r1), (c0, c1) = block_info[None]["array-location"]
        g = grid[which]
        return _pixels(g[0], g[1], box, r0, r1 - r0, c0, c1 - c0, width)

    maps = []
    for which, name in ((0, "sextractor-background"), (1, "sextractor-rms")):
        maps.append(
            da.map_blocks(
                interpolate,
                image,
                which,
                grid,
                dtype=np.float32,
                token=name,
            )
        )
    return tuple(maps)


def _grid_of_stack(meshes: np.ndarray, fsize, fthresh):
    back, sigma, dback, dsigma = _grid(
        np.ascontiguousarray(meshes[0]), np.ascontiguousarray(meshes[1]), fsize, fthresh
    )
    return (back, dback), (sigma, dsigma)

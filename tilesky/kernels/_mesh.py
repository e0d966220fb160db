"""Mesh statistics and mesh median filter (photutils ``Background2D`` stage).

The box grid is anchored at pixel (0, 0). Boxes that run past the top or
right edge of the data are partial: they hold only the pixels that exist,
but the exclusion threshold still uses the full box size, exactly as
photutils' "extra row / extra column / corner" boxes. Every box is computed
independently from its own pixels (padded to the full box with NaN, in a
fixed row-major order), so running `mesh_statistics` on any region whose
origin is box-aligned gives bit for bit the matching slice of the
whole-image result: a tile needs no halo for this stage.

`filter_mesh` reproduces photutils' ``_filter_grid`` on a NaN-filled mesh.
Its halo is `filter_depth` mesh cells; the image edge is padded with NaN, so
a tile given its neighbours' cells (and nothing beyond the image edge) gives
the same values as the whole mesh. The decision to filter every box depends
on a global minimum, which a tile receives as ``global_min``.

numpy, and the compiled box kernel of :mod:`tilesky.kernels._clip`; never
imports dask.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from tilesky.estimators import (
    MedianBackground,
    SigmaClip,
    StdBackgroundRMS,
    as_sigma_clip,
    make_estimator,
)
from tilesky.kernels._clip import box_median_std

__all__ = ["filter_depth", "filter_mesh", "mesh_shape", "mesh_statistics"]

_MEDIAN = MedianBackground()

# Pixels per batch of boxes: bounds the float64 temporaries of sigma clipping
# (~10 arrays of this size) without changing any box's result.
_BATCH_PIXELS = 1 << 20


def _as_pair(name: str, value: Any, *, odd: bool = False) -> tuple[int, int]:
    arr = np.atleast_1d(np.asarray(value))
    ok = arr.ndim == 1 and arr.size in (1, 2) and arr.dtype.kind in "iuf"
    if ok:
        pair = np.broadcast_to(arr, (2,))
        ok = bool(np.all(pair == np.round(pair)) and np.all(pair >= 1))
    if ok and odd:
        ok = bool(np.all(pair % 2 == 1))
    if not ok:
        need = "odd integers >= 1" if odd else "integers >= 1"
        msg = (
            f"{name} must be one or two (ny, nx) {need}, got {value!r}; "
            f"pass e.g. {name}={'3' if odd else '64'} or {name}=({3 if odd else 64}, "
            f"{5 if odd else 32})"
        )
        raise ValueError(msg)
    return int(pair[0]), int(pair[1])


def mesh_shape(
    shape: tuple[int, int], box_size: int | tuple[int, int]
) -> tuple[int, int]:
    """Number of mesh boxes along (y, x): partial edge boxes count.

    Parameters
    ----------
    shape : tuple of int
        Data shape (ny, nx).
    box_size : int or tuple of int
        Box size, scalar or (ny, nx).

    Returns
    -------
    tuple of int
        ``(ceil(ny / box_ny), ceil(nx / box_nx))``.

    Examples
    --------
    >>> mesh_shape((123, 97), 10)
    (13, 10)
    """
    by, bx = _as_pair("box_size", box_size)
    ny, nx = (int(n) for n in shape)
    return -(-ny // by), -(-nx // bx)


def filter_depth(filter_size: int | tuple[int, int]) -> tuple[int, int]:
    """Halo of `filter_mesh`, in mesh cells along (y, x).

    Examples
    --------
    >>> filter_depth((3, 5))
    (1, 2)
    """
    fy, fx = _as_pair("filter_size", filter_size, odd=True)
    return fy // 2, fx // 2


def _strip_sigma_clip(estimator: Any, name: str, kind: str) -> Callable[..., Any]:
    """Accept a registry name, or a callable (photutils' own estimators too)."""
    if isinstance(estimator, str):
        return make_estimator(estimator, kind=kind)
    if not callable(estimator):
        msg = (
            f"{name} must be a callable estimator or a registry name, got "
            f"{estimator!r}; pass e.g. {name}='median'"
        )
        raise ValueError(msg)
    # As photutils does: clipping happens once per box before both estimators,
    # so an estimator's own sigma_clip (photutils' default) must not run again.
    if getattr(estimator, "sigma_clip", None) is not None:
        estimator = copy.copy(estimator)
        estimator.sigma_clip = None
    return estimator


def _box_rows(
    band: np.ndarray, bad: np.ndarray, by: int, bx: int, nbx: int
) -> np.ndarray:
    """Rows of box pixels (row-major in each box), NaN where bad or padding."""
    nby = -(-band.shape[0] // by)
    padded = np.full((nby * by, nbx * bx), np.nan, dtype=band.dtype)
    padded[: band.shape[0], : band.shape[1]] = np.where(bad, np.nan, band)
    boxes = padded.reshape(nby, by, nbx, bx).transpose(0, 2, 1, 3)
    return np.ascontiguousarray(boxes.reshape(nby * nbx, by * bx))


def mesh_statistics(
    data: np.ndarray,
    mask: np.ndarray | None = None,
    *,
    box_size: int | tuple[int, int],
    exclude_percentile: float,
    sigma_clip: Any,
    bkg_estimator: Any,
    bkg_rms_estimator: Any,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-box background, background RMS and good-pixel count.

    Reproduces photutils ``Background2D``'s ``_bkg_stats``, ``_bkgrms_stats``
    and ``_ngood`` (the mesh before NaN filling and median filtering).

    Parameters
    ----------
    data : 2D ndarray
        Image (or a box-aligned region of it). Non-finite pixels are masked.
    mask : 2D bool ndarray, optional
        True where a pixel is excluded (sources, bad pixels).
    box_size : int or tuple of int
        Box size, scalar or (ny, nx).
    exclude_percentile : float
        A box is excluded (NaN) when its count of unmasked, unclipped pixels
        is ``<= (1 - exclude_percentile / 100) * box_ny * box_nx`` (the full
        box size, also for partial boxes). Note that 0 therefore excludes
        every box, as in photutils (``MeshConfig.exclude_percentile``).
    sigma_clip : SigmaClip, astropy SigmaClip, callable or None
        Clipping applied once per box before both estimators, None for no
        clipping; the pipeline passes ``make_sigma_clip(MeshConfig.sigma_clip,
        MeshConfig.sigma_clip_maxiters)``.
    bkg_estimator, bkg_rms_estimator : callable or str
        Called as ``estimator(boxes, axis=-1)`` on (nboxes, box_npixels)
        arrays with NaN for excluded pixels; a registry name of
        `tilesky.estimators` is also accepted (``MeshConfig.bkg_estimator``,
        ``MeshConfig.bkg_rms_estimator``).

    Returns
    -------
    bkg_mesh, rms_mesh : 2D ndarray
        Shape `mesh_shape`; dtype of ``data`` if floating, else float32
        (photutils' rule); NaN for excluded boxes.
    n_good : 2D int32 ndarray
        Unmasked, unclipped pixels per box.

    Notes
    -----
    No halo: a region starting at a multiple of the box size, and cut at a
    multiple of it except at the image's top/right edge, gives exactly the
    matching slice of the whole-image meshes. Unlike photutils this never
    raises when every box is excluded (a tile may legitimately be fully
    masked); the caller checks that globally.

    Examples
    --------
    >>> import numpy as np
    >>> data = np.random.default_rng(0).normal(10.0, 1.0, (25, 20))
    >>> bkg, rms, n_good = mesh_statistics(
    ...     data, box_size=10, exclude_percentile=60, sigma_clip=None,
    ...     bkg_estimator="median", bkg_rms_estimator="std")
    >>> bkg.shape, int(n_good[2, 0])
    ((3, 2), 50)
    """
    data = np.asarray(data)
    if data.ndim != 2:
        msg = f"data must be a 2D array, got shape {data.shape}"
        raise ValueError(msg)
    if data.dtype.kind != "f":
        data = data.astype(np.float32)
    bad = ~np.isfinite(data)
    if mask is not None:
        mask = np.asarray(mask)
        if mask.shape != data.shape:
            msg = (
                f"mask must have the shape of data {data.shape}, got {mask.shape}; "
                "pass a boolean mask of the same shape or None"
            )
            raise ValueError(msg)
        bad |= mask.astype(bool)
    by, bx = _as_pair("box_size", box_size)
    if not 0 <= exclude_percentile <= 100:
        msg = (
            f"exclude_percentile must be between 0 and 100 (inclusive), got "
            f"{exclude_percentile!r}"
        )
        raise ValueError(msg)
    clip = as_sigma_clip(sigma_clip)
    bkg_est = _strip_sigma_clip(bkg_estimator, "bkg_estimator", "bkg")
    rms_est = _strip_sigma_clip(bkg_rms_estimator, "bkg_rms_estimator", "rms")

    nby, nbx = mesh_shape(data.shape, (by, bx))
    npix = by * bx
    threshold = (1 - (exclude_percentile / 100.0)) * npix
    bkg = np.full(nby * nbx, np.nan, dtype=data.dtype)
    rms = np.full(nby * nbx, np.nan, dtype=data.dtype)
    n_good = np.zeros(nby * nbx, dtype=np.int32)
    # The default (median and std after a SigmaClip) runs compiled, box by
    # box in place, with the same numbers as the general path below.
    if (
        (clip is None or type(clip) is SigmaClip)
        and type(bkg_est) is MedianBackground
        and type(rms_est) is StdBackgroundRMS
        and data.dtype in (np.float32, np.float64)
    ):
        walk = None if clip is None else clip._walk_params()
        return box_median_std(data, bad, (by, bx), walk, threshold)
    rows_per_batch = max(1, _BATCH_PIXELS // (nbx * npix)) if nbx else 1
    for j0 in range(0, nby, rows_per_batch):
        j1 = min(nby, j0 + rows_per_batch)
        ys = slice(j0 * by, min(data.shape[0], j1 * by))
        boxes = _box_rows(data[ys], bad[ys], by, bx, nbx)
        out = slice(j0 * nbx, j1 * nbx)
        if clip is not None:
            boxes = clip(boxes, axis=-1)
        good = np.count_nonzero(~np.isnan(boxes), axis=-1)
        n_good[out] = good
        keep = np.flatnonzero(good > threshold)
        if keep.size == 0:
            continue
        kept = boxes[keep]
        bkg[out][keep] = bkg_est(kept, axis=-1)
        rms[out][keep] = rms_est(kept, axis=-1)
    shape = (nby, nbx)
    return bkg.reshape(shape), rms.reshape(shape), n_good.reshape(shape)


def _nanmedian_filter(mesh: np.ndarray, fy: int, fx: int) -> np.ndarray:
    """``generic_filter(mesh, nanmedian, size, mode='constant', cval=nan)``."""
    dy, dx = fy // 2, fx // 2
    ny, nx = mesh.shape
    # scipy's generic_filter hands the window to the function as float64:
    # take the median there too, then cast back, for identical rounding.
    padded = np.full((ny + 2 * dy, nx + 2 * dx), np.nan)
    padded[dy : dy + ny, dx : dx + nx] = mesh
    windows = sliding_window_view(padded, (fy, fx))
    out = np.empty((ny, nx), dtype=np.float64)
    rows = max(1, _BATCH_PIXELS // max(1, nx * fy * fx))
    for i0 in range(0, ny, rows):
        i1 = min(ny, i0 + rows)
        stack = windows[i0:i1].reshape(i1 - i0, nx, fy * fx)
        out[i0:i1] = _MEDIAN(stack, axis=-1)
    return out.astype(mesh.dtype, copy=False)


def filter_mesh(
    mesh: np.ndarray,
    *,
    filter_size: int | tuple[int, int],
    filter_threshold: float | None,
    threshold_mesh: np.ndarray | None = None,
    global_min: float | None = None,
) -> np.ndarray:
    """Median-filter a NaN-filled mesh as photutils' ``_filter_grid`` does.

    Parameters
    ----------
    mesh : 2D ndarray
        The mesh to filter (background or RMS), excluded boxes already filled.
    filter_size : int or tuple of int
        Odd window size, scalar or (ny, nx); 1 means no filtering
        (``MeshConfig.filter_size``).
    filter_threshold : float or None
        ``MeshConfig.filter_threshold``. If None, or below ``global_min``,
        every box is filtered; otherwise only boxes where ``threshold_mesh >
        filter_threshold``.
    threshold_mesh : 2D ndarray, optional
        The NaN-filled *background* mesh that selects boxes to filter (also
        when filtering the RMS mesh); defaults to ``mesh``.
    global_min : float, optional
        Minimum of the unfilled background statistics over the whole image
        (photutils' ``nanmin(_bkg_stats)``). Defaults to the NaN-ignoring
        minimum of ``threshold_mesh``, which is the same number when
        ``threshold_mesh`` is the whole filled mesh; a tile must pass it.

    Returns
    -------
    2D ndarray
        Filtered mesh, same dtype as ``mesh``.

    Notes
    -----
    The window is a NaN-ignoring median with NaN padding outside ``mesh``
    (``scipy.ndimage.generic_filter(..., mode='constant', cval=nan)``), so a
    tile needs a halo of `filter_depth` cells from its neighbours and none
    beyond the image edge. Vectorised: a stack of shifted windows and one
    median per cell, identical to the generic_filter result.

    Examples
    --------
    >>> import numpy as np
    >>> mesh = np.array([[1.0, 1.0, 1.0], [1.0, 9.0, 1.0], [1.0, 1.0, 1.0]])
    >>> filter_mesh(mesh, filter_size=3, filter_threshold=None)[1, 1]
    np.float64(1.0)
    """
    mesh = np.asarray(mesh)
    if mesh.ndim != 2:
        msg = f"mesh must be a 2D array, got shape {mesh.shape}"
        raise ValueError(msg)
    if mesh.dtype.kind != "f":
        mesh = mesh.astype(np.float64)
    fy, fx = _as_pair("filter_size", filter_size, odd=True)
    if (fy, fx) == (1, 1):
        return mesh.copy()
    select = None
    if filter_threshold is not None:
        tmesh = mesh if threshold_mesh is None else np.asarray(threshold_mesh)
        if tmesh.shape != mesh.shape:
            msg = (
                f"threshold_mesh must have the shape of mesh {mesh.shape}, got "
                f"{tmesh.shape}; pass the NaN-filled background mesh"
            )
            raise ValueError(msg)
        if global_min is None:
            finite = tmesh[~np.isnan(tmesh)]
            global_min = finite.min() if finite.size else math.nan
        # photutils filters everything when the threshold is below the minimum
        if not filter_threshold < global_min:
            with np.errstate(invalid="ignore"):
                select = tmesh > filter_threshold
            if not select.any():
                return mesh.copy()
    filtered = _nanmedian_filter(mesh, fy, fx)
    if select is None:
        return filtered
    return np.where(select, filtered, mesh)

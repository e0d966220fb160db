"""Source-mask kernels: masked Gaussian smoothing, top-hat dilation, size filter.

Every function here is a pure numpy/numba kernel usable on a whole image,
paired with a ``*_depth`` function giving the halo (in pixels) a tile needs
so that running it on a tile plus halo reproduces the whole-image result
exactly.

Edges and blank pixels follow one rule: pixels outside the image or
non-finite count as *no coverage*. Smoothing is a normalized convolution
(``conv(x * w) / conv(w)`` with ``w`` the coverage), so values near an edge or
a blank region are averages of the covered pixels, not pulled towards zero
as astropy's ``convolve(boundary='fill')`` would pull them.

How the kernels are fast
------------------------
:func:`smooth` and :func:`dilate_mask` are numba kernels that reproduce their
scipy formulations bit for bit (``smooth_reference`` and ``dilate_reference``
in ``tests/_reference_kernels.py``). ``scipy.ndimage.correlate1d`` sees that
the Gaussian weights are symmetric and sums, per output pixel and in double
precision, ``in[0] * w[0]`` and then ``(in[-j] + in[+j]) * w[-j]`` for
``j = r .. 1``, the outermost pair first, with ``0.0`` outside the image. The numba
kernel does exactly these operations in this order, but vectorised across a row
instead of along the filter, streamed one output row at a time (no float64 copy
of the image, no full-size intermediate), and with the denominator (the
smoothed coverage) taken from a per-row table when every pixel is covered: it
then depends only on the distances to the edges. The disc dilation is a per-row
distance to the nearest masked pixel (capped at the radius) followed by an OR
over row offsets of ``distance <= half-width``.
"""

from __future__ import annotations

import math

import numba
import numpy as np
from scipy import ndimage

__all__ = [
    "dilate_depth",
    "dilate_mask",
    "fwhm_to_sigma",
    "gaussian_depth",
    "gaussian_kernel1d",
    "size_filter",
    "size_filter_depth",
    "smooth",
    "tophat_footprint",
]

_FWHM_TO_SIGMA = 1.0 / (2.0 * math.sqrt(2.0 * math.log(2.0)))


def fwhm_to_sigma(fwhm: float) -> float:
    """Gaussian sigma for a full width at half maximum."""
    return float(fwhm) * _FWHM_TO_SIGMA


def gaussian_depth(sigma: float, truncate: float) -> int:
    """Halo of :func:`smooth`: the kernel radius ``int(truncate * sigma + 0.5)``."""
    return int(truncate * float(sigma) + 0.5)


def gaussian_kernel1d(sigma: float, truncate: float) -> np.ndarray:
    """Normalized 1-D Gaussian weights of radius :func:`gaussian_depth`."""
    radius = gaussian_depth(sigma, truncate)
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    weights = np.exp(-0.5 * (x / sigma) ** 2)
    return weights / weights.sum()


# The smoothed coverage is a sum of positive weights; below this it is the
# rounding noise of pixels that have no covered neighbour at all.
_MIN_COVERAGE = 1e-12


@numba.njit(cache=True, nogil=True)
def _correlate_axis0(src, y, weights, zero_row, acc):  # pragma: no cover - numba
    # scipy's symmetric correlate1d along axis 0 at row y, 0.0 outside: the
    # centre term, then the pairs (y - j, y + j) from j = r down to 1. Each
    # pass runs along the row so it vectorises; per pixel the order of the
    # operations is scipy's, hence the same rounding.
    ny, nx = src.shape
    r = (weights.size - 1) // 2
    w0 = weights[r]
    row = src[y]
    for x in range(nx):
        acc[x] = np.float64(row[x]) * w0
    for j in range(r, 0, -1):
        lo = src[y - j] if y - j >= 0 else zero_row
        hi = src[y + j] if y + j < ny else zero_row
        wj = weights[r - j]
        for x in range(nx):
            acc[x] += (np.float64(lo[x]) + np.float64(hi[x])) * wj


@numba.njit(cache=True, nogil=True)
def _correlate_axis1(padded, weights, acc):  # pragma: no cover - numba
    # Same along a row; ``padded`` holds the row between r zeros on each side,
    # which is scipy's constant extension with cval 0.0.
    r = (weights.size - 1) // 2
    w0 = weights[r]
    nx = acc.size
    # Offsets go into slices, not indices: ``padded[x + k]`` would need
    # numba's negative-index check, which stops LLVM from vectorising.
    centre = padded[r : r + nx]
    for x in range(nx):
        acc[x] = centre[x] * w0
    for j in range(r, 0, -1):
        wj = weights[r - j]
        lo = padded[r - j : r - j + nx]
        hi = padded[r + j : r + j + nx]
        for x in range(nx):
            acc[x] += (lo[x] + hi[x]) * wj


@numba.njit(cache=True, nogil=True)
def _ones_axis0(y, ny, weights):  # pragma: no cover - numba
    # _correlate_axis0 on an all-ones image: the same for every pixel of row y.
    r = (weights.size - 1) // 2
    acc = 1.0 * weights[r]
    for j in range(r, 0, -1):
        lo = 1.0 if y - j >= 0 else 0.0
        hi = 1.0 if y + j < ny else 0.0
        acc += (lo + hi) * weights[r - j]
    return acc


@numba.njit(cache=True, nogil=True)
def _smooth_kernel(values, cover, full, weights, out):  # pragma: no cover - numba
    ny, nx = values.shape
    r = (weights.size - 1) // 2
    num_pad = np.zeros(nx + 2 * r)
    den_pad = np.zeros(nx + 2 * r)
    num = np.empty(nx)
    den = np.empty(nx)
    zero_values = np.zeros(nx, values.dtype)
    zero_cover = np.zeros(cover.shape[1], cover.dtype)
    held = np.nan  # the column sum that ``den`` was computed from
    nan32 = np.float32(np.nan)
    for y in range(ny):
        _correlate_axis0(values, y, weights, zero_values, num_pad[r : r + nx])
        _correlate_axis1(num_pad, weights, num)
        if full:
            # Fully covered: the coverage's column sum is one number per row
            # that depends only on the distances to the top and bottom edges,
            # so the denominator row is recomputed only when it changes
            # (2 r + 1 times at most), with the same operations as scipy.
            col = _ones_axis0(y, ny, weights)
            if not col == held:
                den_pad[r : r + nx] = col
                _correlate_axis1(den_pad, weights, den)
                held = col
        else:
            _correlate_axis0(cover, y, weights, zero_cover, den_pad[r : r + nx])
            _correlate_axis1(den_pad, weights, den)
        for x in range(nx):
            d = den[x]
            out[y, x] = np.float32(num[x] / d) if d > _MIN_COVERAGE else nan32


@numba.njit(cache=True, nogil=True)
def _all_finite(data):  # pragma: no cover - numba
    ny, nx = data.shape
    for y in range(ny):
        row = data[y]
        bad = False
        for x in range(nx):
            # v - v is NaN for NaN and for +-inf.
            bad |= not (row[x] - row[x] == 0)
        if bad:
            return False
    return True


@numba.njit(cache=True, nogil=True)
def _clean(data, mask, values, cover):  # pragma: no cover - numba
    ny, nx = data.shape
    for y in range(ny):
        for x in range(nx):
            v = data[y, x]
            ok = v - v == 0 and mask[y, x] == 0
            values[y, x] = v if ok else 0
            cover[y, x] = 1 if ok else 0


def smooth(
    image: np.ndarray,
    sigma: float,
    *,
    truncate: float,
    mask: np.ndarray | None = None,
) -> np.ndarray:
    """Gaussian-smooth the covered pixels of ``image`` (normalized convolution).

    Parameters
    ----------
    image : 2-D array
        Non-finite pixels are no coverage.
    sigma : float
        Gaussian sigma in pixels, > 0.
    truncate : float
        Kernel radius in sigmas, > 0 (``Config.smooth_truncate``); the halo
        is :func:`gaussian_depth`.
    mask : 2-D bool array, optional
        Extra pixels to leave out (True = excluded).

    Returns
    -------
    numpy.ndarray
        float32; NaN where no covered pixel lies within the kernel.

    Notes
    -----
    Separable passes (columns, then rows) in float64 with zeros outside the
    image, so each output pixel is the same fixed sum of the same inputs
    whether computed on the whole image or on a tile with a halo of
    :func:`gaussian_depth`: tiled results are identical. The numba kernel
    reproduces ``scipy.ndimage.correlate1d``'s operations in its order, so the
    result equals the scipy formulation (two ``correlate1d`` passes for the
    values and two for the coverage, ``mode="constant"``) bit for bit; float32
    input is read as is (no float64 copy). It runs on one thread and releases
    the GIL.

    Examples
    --------
    >>> import numpy as np
    >>> from tilesky.kernels._mask import smooth
    >>> out = smooth(np.ones((5, 6), np.float32), 1.0, truncate=4.0)
    >>> bool(np.allclose(out, 1.0))
    True
    """
    data = np.asarray(image)
    if data.ndim != 2:
        msg = f"image must be 2-D, got shape {data.shape}; pass one plane"
        raise ValueError(msg)
    # The bounds of tilesky.config (smooth_sigma, fwhm, smooth_truncate).
    for name, value in (("sigma", sigma), ("truncate", truncate)):
        if not value > 0:
            msg = f"{name} must be > 0, got {value!r}"
            raise ValueError(msg)
    if data.size == 0:
        return np.empty(data.shape, dtype=np.float32)
    # Exactly symmetric (the offsets are, and so each weight is computed the
    # same way on both sides), which is the case scipy's symmetric sum covers.
    weights = gaussian_kernel1d(sigma, truncate)
    if not (data.dtype.isnative and data.dtype.type in (np.float32, np.float64)):
        data = data.astype(np.float64)
    data = np.ascontiguousarray(data)
    extra = None
    if mask is not None:
        extra = np.broadcast_to(np.asarray(mask, dtype=bool), data.shape)
        if not extra.any():
            extra = None
    out = np.empty(data.shape, dtype=np.float32)
    if extra is None and _all_finite(data):
        no_cover = np.zeros((0, 0), dtype=np.uint8)
        _smooth_kernel(data, no_cover, True, weights, out)
        return out
    if extra is None:
        extra = np.zeros((1, 1), dtype=bool)
    extra = np.ascontiguousarray(np.broadcast_to(extra, data.shape)).view(np.uint8)
    values = np.empty_like(data)
    cover = np.empty(data.shape, dtype=np.uint8)
    _clean(data, extra, values, cover)
    _smooth_kernel(values, cover, False, weights, out)
    return out


def tophat_footprint(radius: int) -> np.ndarray:
    """Circular top-hat footprint: pixels with ``dy**2 + dx**2 <= radius**2``.

    This is the True set of astropy's ``Tophat2DKernel(radius)``.
    """
    r = int(radius)
    y, x = np.mgrid[-r : r + 1, -r : r + 1]
    return (y * y + x * x) <= r * r


def dilate_depth(radius: int) -> int:
    """Halo of :func:`dilate_mask`."""
    return int(radius)


@numba.njit(cache=True, nogil=True)
def _dilate_kernel(mask, half_widths, dist, out):  # pragma: no cover - numba
    ny, nx = mask.shape
    r = (half_widths.size - 1) // 2
    far = dist.dtype.type(r + 1)
    # dist: per row, the distance to the nearest masked pixel, capped at r + 1.
    # Offsets go from far to near so the nearest one is written last; the
    # selects are branch-free so each pass vectorises.
    for y in range(ny):
        row = mask[y]
        d = dist[y]
        for x in range(nx):
            d[x] = far
        for k in range(min(r, nx - 1), -1, -1):
            kk = dist.dtype.type(k)
            n = nx - k
            # Shifts as slices, not ``row[x + k]``: numba's negative-index
            # check on a computed index stops LLVM from vectorising.
            right = row[k:]
            left_of = d[:n]
            for x in range(n):
                left_of[x] = kk if right[x] != 0 else left_of[x]
            right_of = d[k:]
            for x in range(n):
                right_of[x] = kk if row[x] != 0 else right_of[x]
    # The disc row at offset dy is the run |dx| <= half_widths[dy]; outside
    # the image nothing is masked (scipy's border_value=0).
    for y in range(ny):
        o = out[y]
        for x in range(nx):
            o[x] = 0
        for dy in range(-r, r + 1):
            yy = y + dy
            if yy < 0 or yy >= ny:
                continue
            w = half_widths[dy + r]
            src = dist[yy]
            for x in range(nx):
                o[x] |= np.uint8(src[x] <= w)


def dilate_mask(mask: np.ndarray, radius: int) -> np.ndarray:
    """Grow ``mask`` by a circular top-hat of ``radius`` pixels.

    A pixel is masked when any masked pixel lies within ``radius`` of it.
    The notebook's ``convolve(mask, Tophat2DKernel(r)) >= 1/area`` differs
    for ``r=2`` (13 footprint pixels against an area of 12.57 leaves single
    masked pixels undilated); tilesky uses plain binary dilation.

    Notes
    -----
    Equal to ``scipy.ndimage.binary_dilation(mask,
    structure=tophat_footprint(radius))`` with nothing masked outside the
    image, so a tile with a halo of
    :func:`dilate_depth` gives the whole-image core. Computed by a numba
    kernel: per row the distance to the nearest masked pixel, then for each
    row offset of the disc a comparison with that row's half-width.

    Examples
    --------
    >>> import numpy as np
    >>> from tilesky.kernels._mask import dilate_mask
    >>> m = np.zeros((5, 5), bool); m[2, 2] = True
    >>> int(dilate_mask(m, 1).sum())
    5
    """
    mask = np.asarray(mask, dtype=bool)
    r = int(radius)
    if r <= 0:
        return mask.copy()
    if mask.ndim != 2:
        msg = f"mask must be 2-D, got shape {mask.shape}; pass one plane"
        raise ValueError(msg)
    if mask.size == 0:
        return mask.copy()
    # Half-width of each disc row, read off the footprint itself.
    half_widths = tophat_footprint(r).sum(axis=1) // 2
    # Distances are capped at r + 1, which the smallest of these must hold.
    dtype = next(t for t in (np.uint8, np.uint16, np.uint32) if r < np.iinfo(t).max)
    src = np.ascontiguousarray(mask).view(np.uint8)
    dist = np.empty(mask.shape, dtype=dtype)
    out = np.empty(mask.shape, dtype=bool)
    _dilate_kernel(src, half_widths.astype(dtype), dist, out.view(np.uint8))
    return out


def size_filter_depth(n_pixels: int) -> int:
    """Halo of :func:`size_filter`: ``n_pixels - 1``.

    Whether a pixel belongs to an 8-connected group of at least ``n`` pixels
    depends only on pixels within ``n - 1`` steps of it: such a group holds a
    connected subset of exactly ``n`` pixels containing the pixel, all within
    graph distance ``n - 1``.
    """
    return max(int(n_pixels) - 1, 0)


_EIGHT = np.ones((3, 3), dtype=bool)


def size_filter(mask: np.ndarray, n_pixels: int) -> np.ndarray:
    """Keep only 8-connected groups of at least ``n_pixels`` pixels.

    On a tile with a halo of :func:`size_filter_depth`, the core of the
    result equals the whole-image result: a group cut by the tile edge is
    still at least ``n_pixels`` strong inside the halo when it is in truth.

    For ``n_pixels <= 16`` each masked pixel asks a flood fill bounded at
    ``n_pixels`` pixels (a pixel in a large group stops after its first few
    neighbours), compiled; larger sizes label the groups
    (``scipy.ndimage.label``) and count them. Both are the same rule.
    """
    mask = np.asarray(mask, dtype=bool)
    if n_pixels <= 1:
        return mask.copy()
    if mask.ndim == 2 and n_pixels <= _BOUNDED_FILL_MAX:
        out = np.empty(mask.shape, dtype=bool)
        src = np.ascontiguousarray(mask).view(np.uint8)
        _bounded_fill(src, int(n_pixels), out.view(np.uint8))
        return out
    labels, count = ndimage.label(mask, structure=_EIGHT)
    if count == 0:
        return mask.copy()
    sizes = np.bincount(labels.ravel())
    keep = sizes >= n_pixels
    keep[0] = False
    return keep[labels]


#: Up to this group size the bounded flood fill (at most n^2 membership
#: checks a pixel) beats labelling the whole image.
_BOUNDED_FILL_MAX = 16


@numba.njit(cache=True, nogil=True)
def _bounded_fill(mask, n, out):  # pragma: no cover - numba
    ny, nx = mask.shape
    qy = np.empty(n, np.int64)
    qx = np.empty(n, np.int64)
    for y in range(ny):
        for x in range(nx):
            if not mask[y, x]:
                out[y, x] = 0
                continue
            # Breadth-first from (y, x), stopping once n pixels are found.
            qy[0], qx[0] = y, x
            found, head = 1, 0
            while head < found and found < n:
                cy, cx = qy[head], qx[head]
                head += 1
                for dy in range(-1, 2):
                    yy = cy + dy
                    if yy < 0 or yy >= ny:
                        continue
                    for dx in range(-1, 2):
                        xx = cx + dx
                        if xx < 0 or xx >= nx or not mask[yy, xx]:
                            continue
                        seen = False
                        for k in range(found):
                            if qy[k] == yy and qx[k] == xx:
                                seen = True
                                break
                        if not seen and found < n:
                            qy[found], qx[found] = yy, xx
                            found += 1
            out[y, x] = 1 if found >= n else 0

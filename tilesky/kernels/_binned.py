"""Kernels of extended-source detection on a binned image (a cell map).

A *cell* is one box of a mesh grid anchored at pixel (0, 0), as the mesh
backgrounds use, so every tile bins the same pixels into the same cells.
On the cell map (block means of the scene outside the compact-source mask,
their pixel counts and the mean pixel variance):

- a *surround*: the local plane fitted by weighted least squares in a wide
  Gaussian window (a local-linear normalized convolution), so a gradient
  or a smooth sky is followed up to the image edge without the bias an
  average of one-sided neighbours has there;
- at each detection scale, the Gaussian-weighted mean of the cells minus
  the surround, thresholded in units of that mean's own noise (computed
  from the cells' variances, so masked and shallow cells count less); a
  source a fraction of a sigma per pixel bright but spread over thousands
  of pixels stands out there;
- the surround fitted again without the detections and the detection
  repeated; each region it finds then grows by its own size
  (:func:`grow_by_size` on the cell map, ``factor`` 0: the footprint of
  the multi-scale means is the mask).

Every step is a direct weighted sum over a fixed window (``scipy.ndimage
.correlate1d``, constant 0 outside) or an elementwise operation, so a tile
with :func:`detect_depth` cells of halo reproduces the whole-map result bit
for bit.
"""

from __future__ import annotations

import numba
import numpy as np
from scipy import ndimage

from tilesky.kernels._grow import grow_by_size, grow_depth
from tilesky.kernels._mask import gaussian_depth

__all__ = [
    "cell_means",
    "detect_cells",
    "detect_depth",
    "upsample_cells",
]


def cell_means(data, mask=None, *, box_size):
    """Per cell: mean of the finite, unmasked pixels, a zero map and their count.

    The three maps of a mesh-statistics function (``Backend.mesh_stats``);
    a cell without such pixels has NaN mean and count 0.
    """
    by, bx = box_size
    ny, nx = data.shape
    my, mx = -(-ny // by), -(-nx // bx)
    values = np.zeros((my * by, mx * bx), dtype=np.float64)
    good = np.zeros((my * by, mx * bx), dtype=bool)
    ok = np.isfinite(data)
    if mask is not None:
        ok &= ~mask
    good[:ny, :nx] = ok
    values[:ny, :nx] = np.where(ok, data, 0.0)
    sums = values.reshape(my, by, mx, bx).sum(axis=(1, 3))
    counts = good.reshape(my, by, mx, bx).sum(axis=(1, 3))
    with np.errstate(invalid="ignore", divide="ignore"):
        means = np.where(counts > 0, sums / counts, np.nan)
    zeros = np.zeros(means.shape, dtype=np.float32)
    return means.astype(np.float32), zeros, counts.astype(np.int32)


def _radius(sigma: float, truncate: float) -> int:
    # The smoothing kernels' radius, at least one cell.
    return max(1, gaussian_depth(sigma, truncate))


def _kernels(sigma: float, truncate: float, order: int = 0) -> list[np.ndarray]:
    # Gaussian weights times (x / sigma)**k, k = 0 .. order.
    radius = _radius(sigma, truncate)
    x = np.arange(-radius, radius + 1, dtype=np.float64) / sigma
    g = np.exp(-0.5 * x**2)
    g /= g.sum()
    return [g * x**k for k in range(order + 1)]


def _symmetry(k: np.ndarray) -> int:
    # scipy.ndimage's own test: 1 symmetric, -1 antisymmetric, 0 neither
    if len(k) % 2 == 0:
        return 0
    r = len(k) // 2
    eps = np.finfo(np.float64).eps
    if all(abs(k[r + i] - k[r - i]) <= eps for i in range(1, r + 1)):
        return 1
    if all(abs(k[r + i] + k[r - i]) <= eps for i in range(1, r + 1)):
        return -1
    return 0


@numba.njit(cache=True, nogil=True)
def _correlate_padded(p, w, symmetry, axis, out):  # pragma: no cover - compiled
    # ``p`` is the input with ``r`` zeros either side along ``axis``; each
    # output element is scipy.ndimage.correlate1d's sum, term by term in
    # its order (so the same bits), with the loop over the other axis
    # innermost so it vectorizes.
    ny, nx = out.shape
    n = len(w)
    r = n // 2
    for y in range(ny):
        for x in range(nx):
            if axis == 0:
                centre = p[y + r, x] if symmetry != 0 else p[y + n - 1, x]
            else:
                centre = p[y, x + r] if symmetry != 0 else p[y, x + n - 1]
            out[y, x] = centre * (w[r] if symmetry != 0 else w[n - 1])
        if symmetry != 0:
            for j in range(r, 0, -1):
                wj = w[r - j]
                if axis == 0:
                    lo, hi = p[y + r - j], p[y + r + j]
                else:
                    lo, hi = p[y, r - j : r - j + nx], p[y, r + j : r + j + nx]
                if symmetry > 0:
                    for x in range(nx):
                        out[y, x] += (lo[x] + hi[x]) * wj
                else:
                    for x in range(nx):
                        out[y, x] += (lo[x] - hi[x]) * wj
        else:
            for k in range(n - 1):
                wk = w[k]
                src = p[y + k] if axis == 0 else p[y, k : k + nx]
                for x in range(nx):
                    out[y, x] += src[x] * wk
    return out


def _correlate(a, k, axis):
    """``scipy.ndimage.correlate1d(a, k, axis, mode="constant", cval=0)``
    for 2-D float64 ``a`` and an odd-length ``k``, bit for bit and faster
    (:func:`_correlate_reference` is scipy's)."""
    k = np.asarray(k, dtype=np.float64)
    if len(k) % 2 == 0:
        return _correlate_reference(a, k, axis)
    a = np.asarray(a, dtype=np.float64)
    r = len(k) // 2
    pad = [(0, 0), (0, 0)]
    pad[axis] = (r, r)
    p = np.pad(a, pad)
    return _correlate_padded(p, k, _symmetry(k), axis, np.empty(a.shape))


def _correlate_reference(a, k, axis):
    return ndimage.correlate1d(a, k, axis=axis, mode="constant", cval=0.0)


def _conv(a, ky, kx):
    return _correlate(_correlate(a, ky, axis=0), kx, axis=1)


def _solve(matrix, rhs):
    """Solutions of ``matrix[i][j] x[j] = rhs[i]`` per cell (lists of maps):
    Gaussian elimination with partial pivoting, elementwise across cells,
    so each cell's result depends on its own numbers only (NaN where the
    system is singular).

    The reference of :func:`_solve_first`, which the pipeline runs."""
    n = len(rhs)
    shape = rhs[0].shape
    a = np.stack([np.stack(row, axis=-1) for row in matrix], axis=-2)
    a = a.reshape(-1, n, n).copy()
    b = np.stack(rhs, axis=-1).reshape(-1, n).copy()
    idx = np.arange(a.shape[0])
    with np.errstate(invalid="ignore", divide="ignore"):
        for k in range(n):
            pivot = k + np.argmax(np.abs(a[:, k:, k]), axis=1)
            row, brow = a[idx, pivot].copy(), b[idx, pivot].copy()
            a[idx, pivot], b[idx, pivot] = a[:, k], b[:, k]
            a[:, k], b[:, k] = row, brow
            for i in range(k + 1, n):
                f = a[:, i, k] / a[:, k, k]
                a[:, i] -= f[:, None] * a[:, k]
                b[:, i] -= f * b[:, k]
        x = np.empty_like(b)
        for i in range(n - 1, -1, -1):
            acc = b[:, i].copy()
            for j in range(i + 1, n):
                acc -= a[:, i, j] * x[:, j]
            x[:, i] = acc / a[:, i, i]
    return [x[:, i].reshape(shape) for i in range(n)]


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _solve_first(moments, index, rhs):  # pragma: no cover - compiled
    """``x[0]`` of :func:`_solve` per cell, with the same operations in the
    same order (so the same bits), one cell at a time: the matrix is
    ``moments[index[i, j]]``, the right-hand side ``rhs[i]``."""
    n = index.shape[0]
    ny, nx = rhs.shape[1], rhs.shape[2]
    out = np.empty((ny, nx))
    a = np.empty((n, n))
    b = np.empty(n)
    x = np.empty(n)
    for yy in range(ny):
        for xx in range(nx):
            for i in range(n):
                b[i] = rhs[i, yy, xx]
                for j in range(n):
                    a[i, j] = moments[index[i, j], yy, xx]
            for k in range(n):
                # numpy's argmax: the first largest, or the first NaN
                p = k
                best = abs(a[k, k])
                if not np.isnan(best):
                    for i in range(k + 1, n):
                        v = abs(a[i, k])
                        if np.isnan(v):
                            p = i
                            break
                        if v > best:
                            best = v
                            p = i
                if p != k:
                    for j in range(n):
                        t = a[k, j]
                        a[k, j] = a[p, j]
                        a[p, j] = t
                    t = b[k]
                    b[k] = b[p]
                    b[p] = t
                for i in range(k + 1, n):
                    f = a[i, k] / a[k, k]
                    for j in range(n):
                        a[i, j] -= f * a[k, j]
                    b[i] -= f * b[k]
            for i in range(n - 1, -1, -1):
                acc = b[i]
                for j in range(i + 1, n):
                    acc -= a[i, j] * x[j]
                x[i] = acc / a[i, i]
            out[yy, xx] = x[0]
    return out


#: Exponents (of y, of x) of the local polynomials' terms, by order.
_TERMS = {
    0: [(0, 0)],
    1: [(0, 0), (1, 0), (0, 1)],
    2: [(0, 0), (1, 0), (0, 1), (2, 0), (1, 1), (0, 2)],
}


def _surround(values, weights, sigma, truncate, order=2):
    """The local polynomial's value at each cell, fitted by weighted least
    squares in a Gaussian window of ``sigma`` (order 0 where it is
    undetermined: too few cells, or all on a line)."""
    terms = _TERMS[order]
    g = _kernels(sigma, truncate, 2 * order)
    wv = weights * values
    pairs = sorted({(a[0] + b[0], a[1] + b[1]) for a in terms for b in terms})
    # Each sum is a pass down the columns then one along the rows
    # (:func:`_conv`); the column passes of one input and one power are
    # shared by every sum that needs them.
    columns = {}

    def conv(name, a, py, px):
        if (name, py) not in columns:
            columns[name, py] = _correlate(a, g[py], axis=0)
        return _correlate(columns[name, py], g[px], axis=1)

    moments = {p: conv("w", weights, *p) for p in pairs}
    rhs = [conv("wv", wv, py, px) for py, px in terms]
    with np.errstate(invalid="ignore", divide="ignore"):
        flat = rhs[0] / moments[0, 0]
    if order == 0:
        return flat
    index = np.array(
        [[pairs.index((a[0] + b[0], a[1] + b[1])) for b in terms] for a in terms]
    )
    fit = _solve_first(np.stack([moments[p] for p in pairs]), index, np.stack(rhs))
    return np.where(np.isfinite(fit), fit, flat)


def _detections(values, weights, excluded, *, sigmas, surround, truncate, n_sigma):
    # The sky plane comes off before the Gaussian means, which are then
    # unbiased at edges and holes, where their window is one-sided.
    plane = _surround(values, weights * ~excluded, surround, truncate)
    rest = weights * (values - plane)
    found = np.zeros(values.shape, dtype=bool)
    covered = weights > 0
    for sigma in sigmas:
        (g,) = _kernels(sigma, truncate)
        norm = _conv(weights, g, g)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = _conv(rest, g, g) / norm
            noise = np.sqrt(_conv(weights, g * g, g * g)) / norm
            found |= covered & (mean > n_sigma * noise)
    return found


def detect_cells(
    values,
    counts,
    variance,
    *,
    sigmas,
    surround,
    truncate,
    n_sigma,
    factor,
    max_thickness,
):
    """Extended sources on a cell map, each grown by its size (uint8 0/1).

    Parameters
    ----------
    values, counts, variance : 2-D arrays
        Cell means, their pixel counts and the mean pixel variance in each
        cell (a cell mean's variance is ``variance / counts``).
    sigmas : sequence of float
        Gaussian sigmas of the detection scales, in cells.
    surround : float
        Gaussian sigma of the local plane's window, in cells.
    truncate : float
        Kernel radius in sigmas.
    n_sigma : float
        Threshold, in units of each scale's noise.
    factor, max_thickness : float, int
        Growth of :func:`~tilesky.kernels._grow.grow_by_size` (in cells;
        every detected cell grows).
    """
    counts = np.asarray(counts, dtype=np.float64)
    variance = np.asarray(variance, dtype=np.float64)
    values = np.asarray(values, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        weights = counts / variance
    ok = np.isfinite(values) & np.isfinite(weights) & (counts > 0)
    weights = np.where(ok, weights, 0.0)
    values = np.where(ok, values, 0.0)
    kw = {"sigmas": sigmas, "surround": surround, "truncate": truncate}
    grow = {"factor": factor, "min_thickness": 1, "max_thickness": max_thickness}
    none = np.zeros(values.shape, dtype=bool)
    first = _detections(values, weights, none, n_sigma=n_sigma, **kw)
    first = grow_by_size(first, **{**grow, "factor": 0.0})
    found = _detections(values, weights, first, n_sigma=n_sigma, **kw)
    return grow_by_size(found, **grow).astype(np.uint8)


def detect_depth(*, sigmas, surround, truncate, factor, max_thickness) -> int:
    """Halo, in cells, of :func:`detect_cells`: two passes of the widest
    window and the growth (a safe bound: the first pass does not grow)."""
    window = max(_radius(s, truncate) for s in (*sigmas, surround))
    return 2 * (window + grow_depth(factor, max_thickness))


def upsample_cells(cells, *, box_size, out_shape, out_offset, mesh_offset):
    """Each pixel takes its cell's value (a ``Backend.to_pixels`` kernel)."""
    by, bx = box_size
    iy = (out_offset[0] + np.arange(out_shape[0])) // by - mesh_offset[0]
    ix = (out_offset[1] + np.arange(out_shape[1])) // bx - mesh_offset[1]
    return np.asarray(cells)[np.ix_(iy, ix)] > 0

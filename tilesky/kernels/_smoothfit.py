"""Masked Gaussian-weighted local polynomial fit (normalized convolution).

At a point ``p`` the background is the constant term of the polynomial of
order ``order`` (0, 1 or 2) in ``(q - p)`` that best fits the unmasked,
finite pixels ``q`` in the least-squares sense with weights ``G(q - p)``,
``G`` a Gaussian of sigma ``scale`` truncated at ``truncate * scale``.
Order 0 is normalized convolution (a masked Gaussian mean); order 2 follows
curvature, so a gradient or a blemish wider than the window is not
flattened the way a plain average flattens it.

:func:`smoothfit` solves that fit only on a coarse grid of points every
``step`` pixels and interpolates the grid values to every pixel with Keys
cubic convolution. The fitted surface is smooth on the scale of the window
(sigma ``scale`` >> ``step``), so the interpolation error is small (see
the Notes of :func:`smoothfit`), while the work drops from 29 full-resolution
161-tap correlations to moment sums at grid points only. The per-pixel
evaluation (``smoothfit_reference`` in ``tests/_reference_kernels.py``, the
test oracle) is what ``step=1`` reproduces.

Limits: features narrower than about ``scale`` (a blemish of width 30 px
against a 20 px window) are followed only partly; masked holes wider than
the window leave NaN (no unmasked pixel within reach) and holes of about the
window size are bridged by an extrapolated quadratic, which the solver falls
back to lower order for when the local system is ill-conditioned.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from tilesky.kernels._mask import gaussian_depth

__all__ = ["smoothfit", "smoothfit_depth"]

# Monomials (i, j) = powers of (dy, dx) for each order, constant term first.
_TERMS = {
    0: [(0, 0)],
    1: [(0, 0), (1, 0), (0, 1)],
    2: [(0, 0), (1, 0), (0, 1), (2, 0), (1, 1), (0, 2)],
}

# Coverage moments (i, j), i + j <= 4, in the layout the solver indexes
# through _IDX: entry (r, c) of the 6x6 normal matrix is moment
# _IDX[r, c] = term r + term c.
_MOMENTS = [(i, j) for i in range(5) for j in range(5) if i + j <= 4]
_MOMENT_INDEX = {m: k for k, m in enumerate(_MOMENTS)}
_IDX = np.zeros((6, 6), dtype=np.int64)
for _r, (_ri, _rj) in enumerate(_TERMS[2]):
    for _c, (_ci, _cj) in enumerate(_TERMS[2]):
        _IDX[_r, _c] = _MOMENT_INDEX[(_ri + _ci, _rj + _cj)]


def _check(scale, order, truncate, step, binning=1) -> None:
    # The bounds of tilesky.config.SmoothFitConfig.
    if not scale > 0:
        msg = f"scale must be > 0 pixels, got {scale!r}; pass a positive sigma"
        raise ValueError(msg)
    if not truncate > 0:
        msg = f"truncate must be > 0, got {truncate!r}; e.g. 4.0 (sigmas)"
        raise ValueError(msg)
    if order not in _TERMS:
        msg = f"order must be 0, 1 or 2, got {order!r}"
        raise ValueError(msg)
    if isinstance(step, bool) or not isinstance(step, int | np.integer) or step < 1:
        msg = f"step must be an integer >= 1, got {step!r}; e.g. 6 (pixels)"
        raise ValueError(msg)
    if (
        isinstance(binning, bool)
        or not isinstance(binning, int | np.integer)
        or binning < 1
        or step % binning
    ):
        msg = (
            f"binning must be an integer >= 1 that divides step={step!r}, "
            f"got {binning!r}"
        )
        raise ValueError(msg)


def smoothfit_depth(scale: float, truncate: float, *, step: int) -> int:
    """Halo in pixels a tile needs for :func:`smoothfit` to be exact.

    A pixel is interpolated from grid points at most ``2 * step`` pixels
    away, and each grid point sums pixels up to the window radius
    ``int(truncate * scale + 0.5)`` away; the sum is rounded up to a
    multiple of ``step`` so that a tile origin on the grid keeps its halo
    origin on the grid.

    Examples
    --------
    >>> from tilesky.kernels._smoothfit import smoothfit_depth
    >>> smoothfit_depth(25.0, 4.0, step=6)
    114
    """
    _check(scale, 0, truncate, step)
    need = gaussian_depth(scale, truncate) + 2 * step
    return -(-need // step) * step


def _weights(scale: float, truncate: float, power: int, binning: int = 1) -> np.ndarray:
    """Window weights ``G(u) u**power`` at the taps, ``u = offset / scale``.

    With ``binning = b`` a tap is a bin of ``b`` pixels: tap ``k`` sits at
    ``b * k + (b - 1) / 2`` pixels from the grid point (the bin's centre;
    grid points are the first pixels of bins), and bins whose centre lies
    beyond the window radius get weight zero. ``b = 1`` is the pixel window.
    """
    radius = gaussian_depth(scale, truncate)
    centre = (binning - 1) / 2
    reach = -(-(radius + int(centre)) // binning)
    offset = binning * np.arange(-reach, reach + 1, dtype=np.float64) + centre
    u = offset / scale
    return np.where(np.abs(offset) <= radius, np.exp(-0.5 * u * u) * u**power, 0.0)


@njit(cache=True, nogil=True)
def _bin_sums(data, cover, binning):  # pragma: no cover - numba
    # Sum of the usable values and their count in each binning x binning
    # bin, in one fixed order, so a tile's bins are the image's bins.
    ny, nx = data.shape
    nby = -(-ny // binning)
    nbx = -(-nx // binning)
    sums = np.zeros((nby, nbx))
    counts = np.zeros((nby, nbx))
    for y in range(ny):
        by = y // binning
        for x in range(nx):
            if cover[y, x]:
                bx = x // binning
                sums[by, bx] += data[y, x]
                counts[by, bx] += 1.0
    return sums, counts


@njit(cache=True, nogil=True)
def _solve_constant(moms, rhs, nterms, out):  # pragma: no cover - numba
    # moms: (n_moment_images, ny, nx) indexed through the 6x6 layout _IDX.
    ny, nx = out.shape
    a = np.empty((6, 6))
    b = np.empty(6)
    for y in range(ny):
        for x in range(nx):
            m00 = moms[0, y, x]
            if not m00 > 1e-12:
                out[y, x] = np.nan
                continue
            n = nterms
            while True:
                for r in range(n):
                    b[r] = rhs[r, y, x]
                    for c in range(n):
                        a[r, c] = moms[_IDX[r, c], y, x]
                ok = True
                # Gaussian elimination with partial pivoting.
                for k in range(n):
                    piv = k
                    for r in range(k + 1, n):
                        if abs(a[r, k]) > abs(a[piv, k]):
                            piv = r
                    if abs(a[piv, k]) <= 1e-9 * m00:
                        ok = False
                        break
                    if piv != k:
                        for c in range(n):
                            tmp = a[k, c]
                            a[k, c] = a[piv, c]
                            a[piv, c] = tmp
                        tmp = b[k]
                        b[k] = b[piv]
                        b[piv] = tmp
                    for r in range(k + 1, n):
                        f = a[r, k] / a[k, k]
                        for c in range(k, n):
                            a[r, c] -= f * a[k, c]
                        b[r] -= f * b[k]
                if ok:
                    for k in range(n - 1, -1, -1):
                        s = b[k]
                        for c in range(k + 1, n):
                            s -= a[k, c] * b[c]
                        b[k] = s / a[k, k]
                    out[y, x] = b[0]
                    break
                # Ill-conditioned (a hole or an edge): drop to a lower order.
                n = 3 if n == 6 else 1
                if n == 1:
                    out[y, x] = rhs[0, y, x] / m00
                    break


@njit(cache=True, nogil=True)
def _coverage_blend(  # pragma: no cover - numba
    grid, moms, rhs, full_y, full_x, low, high, order0, alpha
):
    # alpha: how much of the window's in-array weight is unmasked, mapped
    # linearly from [low, high] to [0, 1]. With order0, the fit fades to the
    # window's weighted mean (which cannot overshoot) as alpha falls, so a
    # large hole is bridged by the level around it, not by an extrapolated
    # curve.
    ny, nx = grid.shape
    for y in range(ny):
        for x in range(nx):
            full = full_y[y] * full_x[x]
            m00 = moms[0, y, x]
            c = m00 / full if full > 0.0 else 0.0
            t = (c - low) / (high - low)
            t = 0.0 if t < 0.0 else (1.0 if t > 1.0 else t)
            alpha[y, x] = t
            if order0 and m00 > 1e-12 and t < 1.0:
                grid[y, x] = t * grid[y, x] + (1.0 - t) * (rhs[0, y, x] / m00)


# -- coarse-grid evaluation ---------------------------------------------------
#
# Tiling exactness rests on three rules: grid points sit at multiples of
# `step` in the array's index space (the same global points in a tile whose
# origin is a multiple of `step`); every sum runs over taps in increasing k
# with the same weights; and a pixel outside the array or without coverage
# contributes an exact zero. Adding +-0.0 to an accumulator that started at
# +0.0 leaves it bit-for-bit unchanged, so padding with zeros is the same as
# skipping those pixels, and a tile reproduces the whole image wherever its
# halo holds every pixel in reach.


@njit(cache=True, nogil=True)
def _row_moments(data, cover, w, n_cov, n_dat, step, n_grid, pad):  # pragma: no cover
    """Sums along x at grid columns, for every row.

    ``xc[p, y, g] = sum_k c * w[p, k]`` (p < n_cov) and
    ``xf[p, y, g] = sum_k c * f * w[p, k]`` (p < n_dat) over the pixels
    ``x = (g - 1) * step + k``, ``|k| <= radius``.
    """
    ny, nx = data.shape
    radius = (w.shape[1] - 1) // 2
    x_start = -step - pad  # grid index 0 is the point at x = -step
    m_len = n_grid + 2 * (pad // step) + 1
    # Row decimated by phase: dc[rho, m] = c[x_start + rho + step * m], so a
    # tap k reads a contiguous slice for all grid columns at once.
    dc = np.zeros((step, m_len))
    df = np.zeros((step, m_len))
    xc = np.zeros((n_cov, ny, n_grid))
    xf = np.zeros((n_dat, ny, n_grid))
    for y in range(ny):
        for rho in range(step):
            for m in range(m_len):
                x = x_start + rho + step * m
                if 0 <= x < nx and cover[y, x]:
                    # A pixel's cover is True (1.0); a bin's, its count,
                    # with ``data`` then the sum of its values.
                    dc[rho, m] = cover[y, x]
                    df[rho, m] = data[y, x]
                else:
                    dc[rho, m] = 0.0
                    df[rho, m] = 0.0
        for k in range(-radius, radius + 1):
            j = pad + k
            rho = j % step
            q = j // step
            src_c = dc[rho, q : q + n_grid]
            src_f = df[rho, q : q + n_grid]
            for p in range(n_cov):
                wk = w[p, k + radius]
                dst = xc[p, y]
                for g in range(n_grid):
                    dst[g] += wk * src_c[g]
            for p in range(n_dat):
                wk = w[p, k + radius]
                dst = xf[p, y]
                for g in range(n_grid):
                    dst[g] += wk * src_f[g]
    return xc, xf


@njit(cache=True, nogil=True)
def _grid_moments(  # pragma: no cover - numba
    xc, xf, w, step, n_grid, mom_slot, mom_i, mom_j, term_i, term_j
):
    """Sums along y at grid rows: the solver's moment and right-hand sides."""
    ny = xc.shape[1]
    ngx = xc.shape[2]
    radius = (w.shape[1] - 1) // 2
    moms = np.zeros((15, n_grid, ngx))
    rhs = np.zeros((len(term_i), n_grid, ngx))
    for gy in range(n_grid):
        y_centre = (gy - 1) * step
        for k in range(-radius, radius + 1):
            y = y_centre + k
            if y < 0 or y >= ny:
                continue
            for m in range(len(mom_slot)):
                wk = w[mom_i[m], k + radius]
                src = xc[mom_j[m], y]
                dst = moms[mom_slot[m], gy]
                for g in range(ngx):
                    dst[g] += wk * src[g]
            for t in range(len(term_i)):
                wk = w[term_i[t], k + radius]
                src = xf[term_j[t], y]
                dst = rhs[t, gy]
                for g in range(ngx):
                    dst[g] += wk * src[g]
    return moms, rhs


def _in_array_weight(
    w0: np.ndarray, n: int, step: int, n_grid: int, binning: int = 1
) -> np.ndarray:
    """Sum of the 1-D window weights on pixels inside ``[0, n)`` at each grid
    point (a bin's weight counts once per pixel of it in the array)."""
    radius = (w0.size - 1) // 2
    centres = (np.arange(n_grid) - 1) * (step // binning)
    taps = centres[:, None] + np.arange(-radius, radius + 1)[None, :]
    pixels = np.clip(n - binning * taps, 0, binning)
    return np.where(taps >= 0, w0[None, :] * pixels, 0.0).sum(axis=1)


def _grid_fit(
    image,
    mask,
    *,
    scale,
    order,
    truncate,
    step,
    coverage=None,
    order0=False,
    binning=1,
):
    """Fitted values (float64) at grid points ``g * step``, g = -1, 0, ...

    Shape ``((ny - 1) // step + 4, (nx - 1) // step + 4)``: index 0 is the
    point one step before the array, the last the point two steps past the
    last grid point inside it (the 4-point interpolation stencil's reach).
    With ``coverage = (low, high)`` also the grid of coverage weights (see
    :func:`smoothfit`), else None.
    """
    data = np.asarray(image)
    if data.dtype not in (np.float32, np.float64):
        data = data.astype(np.float64)
    # float32 is read as is: widening to float64 in the kernel is exact.
    cover = np.isfinite(data)
    if mask is not None:
        cover &= ~np.asarray(mask, dtype=bool)
    ny, nx = data.shape
    ngy = (ny - 1) // step + 4
    ngx = (nx - 1) // step + 4
    if binning > 1:
        # The fit reads b x b bins (their sums and counts) at their centres.
        data, cover = _bin_sums(data, cover, binning)
    terms = _TERMS[order]
    n_cov = 2 * order + 1
    n_dat = order + 1
    w = np.stack([_weights(scale, truncate, p, binning) for p in range(n_cov)])
    reach = (w.shape[1] - 1) // 2
    bin_step = step // binning
    pad = -(-reach // bin_step) * bin_step
    xc, xf = _row_moments(data, cover, w, n_cov, n_dat, bin_step, ngx, pad)
    needed = [(i, j) for (i, j) in _MOMENTS if i + j <= 2 * order]
    slot, mi, mj = np.array([(_MOMENT_INDEX[m], *m) for m in needed]).T.copy()
    ti, tj = np.array(terms).T.copy()
    moms, rhs = _grid_moments(xc, xf, w, bin_step, ngy, slot, mi, mj, ti, tj)
    grid = np.empty((ngy, ngx))
    _solve_constant(moms, rhs, len(terms), grid)
    if coverage is None:
        return grid, None
    # The in-array weight is the window's for every grid point a tile's
    # core reads: its halo holds the whole window or the image ends there.
    full_y = _in_array_weight(w[0], ny, step, ngy, binning)
    full_x = _in_array_weight(w[0], nx, step, ngx, binning)
    alpha = np.empty((ngy, ngx))
    low, high = (float(v) for v in coverage)
    _coverage_blend(grid, moms, rhs, full_y, full_x, low, high, order0, alpha)
    return grid, alpha


def _keys_weights(step: int) -> np.ndarray:
    """Keys (a = -0.5) weights of grid points g0-1..g0+2 for each phase."""
    t = np.arange(step, dtype=np.float64) / step
    t2 = t * t
    t3 = t2 * t
    return np.stack(
        [
            0.5 * (-t3 + 2.0 * t2 - t),
            0.5 * (3.0 * t3 - 5.0 * t2 + 2.0),
            0.5 * (-3.0 * t3 + 4.0 * t2 + t),
            0.5 * (t3 - t2),
        ],
        axis=1,
    )


@njit(cache=True, nogil=True)
def _interpolate(grid, kw, step, out):  # pragma: no cover - numba
    ny, nx = out.shape
    ngy = grid.shape[0]
    along_x = np.empty((ngy, nx))
    for gy in range(ngy):
        for x in range(nx):
            g0 = x // step
            r = x - g0 * step
            s = 0.0
            for b in range(4):
                s += kw[r, b] * grid[gy, g0 + b]
            along_x[gy, x] = s
    for y in range(ny):
        gy0 = y // step
        ry = y - gy0 * step
        ty = ry / step
        for x in range(nx):
            s = 0.0
            for a in range(4):
                s += kw[ry, a] * along_x[gy0 + a, x]
            if s == s:
                out[y, x] = s
                continue
            # A NaN grid point in the 4x4 stencil: bilinear interpolation
            # renormalised over the finite points of the 2x2 cell (Keys
            # weights change sign, so their partial sums can vanish).
            gx0 = x // step
            tx = (x - gx0 * step) / step
            num = 0.0
            den = 0.0
            for a in range(2):
                wy = ty if a else 1.0 - ty
                for b in range(2):
                    wxy = wy * (tx if b else 1.0 - tx)
                    v = grid[gy0 + 1 + a, gx0 + 1 + b]
                    if wxy > 0.0 and v == v:
                        num += wxy * v
                        den += wxy
            out[y, x] = num / den if den > 0.0 else np.nan


def smoothfit(
    image: np.ndarray,
    mask: np.ndarray | None = None,
    *,
    scale: float,
    order: int,
    truncate: float,
    step: int,
    coverage: tuple[float, float] | None = None,
    order0: bool = False,
    binning: int = 1,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Masked local polynomial background of ``image``.

    Parameters
    ----------
    image : 2-D array
        Non-finite pixels are no coverage.
    mask : 2-D bool array, optional
        True for pixels to leave out of the fit (sources).
    scale : float
        Gaussian sigma of the weighting window, in pixels, > 0
        (``SmoothFitConfig.scale``).
    order : {0, 1, 2}
        Local polynomial order (``SmoothFitConfig.order``).
    truncate : float
        Window radius in units of ``scale``: ``int(truncate * scale + 0.5)``,
        > 0 (``SmoothFitConfig.truncate``).
    step : int
        Spacing in pixels of the grid the fit is solved on, >= 1
        (``SmoothFitConfig.step``); ``step=1`` solves it at every pixel.
    coverage : (low, high), optional
        Also return the coverage weight of every pixel: the fraction ``c``
        of the window's weight (inside the array) on usable pixels, mapped
        linearly from ``[low, high]`` onto ``[0, 1]`` (clipped).
    order0 : bool
        With ``coverage``: fade the fit to the window's weighted mean (order
        0) as the coverage weight drops from 1 to 0, so a hole is bridged
        by the level of the sky around it rather than by an extrapolated
        polynomial.
    binning : int
        Fit ``binning x binning`` bins (sums and counts of their usable
        pixels, placed at their centres) instead of pixels; it must divide
        ``step`` (``SmoothFitConfig.binning``). The window then reads
        ``binning**2`` times fewer values; the fit is that of the pixel
        window convolved with a ``binning``-px box, whose variance adds
        ``binning**2 / 12`` px**2 to ``scale**2`` (0.03 % of sigma for
        ``binning=3``, ``scale=25``).

    Returns
    -------
    numpy.ndarray or tuple of numpy.ndarray
        float32 background, the shape of ``image``; with ``coverage``, the
        pair ``(background, coverage weight)``.

    Notes
    -----
    The fit is solved at the points whose indices are multiples of ``step``
    in the array's own index space, plus the points the stencil reaches
    outside it (one before, two after the last inside; pixels outside the
    array are no coverage), and interpolated with separable Keys cubic
    convolution (a = -0.5) from the 4 x 4 nearest points. At grid points the
    result is the per-pixel fit to float64 rounding; between them it departs
    from it by the cubic interpolation error, which grows as ``step**3``: at
    ``step=6`` about 4e-5 of the amplitude of a Gaussian of sigma 60 px and
    6e-5 of that of the reference notebook's sinc blemish of width 30 px.

    A grid point with no usable pixel in its window is NaN. A pixel whose
    4 x 4 stencil holds a NaN point is interpolated bilinearly from the
    finite points of its 2 x 2 cell instead, and is NaN only if none of
    them carries weight: NaN marks holes wider than the window, not their
    surroundings.

    Tiling: a tile whose origin is a multiple of ``step`` in the image,
    given a halo of :func:`smoothfit_depth` pixels (clipped at the image
    edge), reproduces the whole-image result bit for bit: every sum has a
    fixed order of terms, and absent pixels add exact zeros.

    Examples
    --------
    >>> import numpy as np
    >>> from tilesky.kernels._smoothfit import smoothfit
    >>> y, x = np.mgrid[0:60, 0:50]
    >>> plane = (0.01 * x + 0.02 * y).astype(np.float32)
    >>> fit = smoothfit(plane, scale=5.0, order=2, truncate=4.0, step=6)
    >>> bool(np.allclose(fit, plane, atol=1e-4))
    True
    """
    _check(scale, order, truncate, step, binning)
    image = np.asarray(image)
    if image.ndim != 2:
        msg = f"image must be 2-D, got shape {image.shape}; pass one plane"
        raise ValueError(msg)
    if mask is not None and np.shape(mask) != image.shape:
        msg = (
            f"mask shape {np.shape(mask)} must equal image shape {image.shape}; "
            "pass a mask of the same shape or None"
        )
        raise ValueError(msg)
    out = np.empty(image.shape, dtype=np.float32)
    if image.size == 0:
        return out
    step = int(step)
    grid, alpha = _grid_fit(
        image,
        mask,
        scale=scale,
        order=order,
        truncate=truncate,
        step=step,
        coverage=coverage,
        order0=order0,
        binning=int(binning),
    )
    keys = _keys_weights(step)
    _interpolate(grid, keys, step, out)
    if alpha is None:
        return out
    weight = np.empty(image.shape, dtype=np.float32)
    _interpolate(alpha, keys, step, weight)
    return out, np.clip(weight, 0.0, 1.0)

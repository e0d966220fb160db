"""Slow, obviously correct versions of tilesky's compiled kernels: test oracles.

Each fast kernel in ``tilesky.kernels`` is tested bit for bit (or integer for
integer) against its reference here; ``benchmarks/`` times them against each
other (it puts this directory on ``sys.path``). The references reuse the
kernels' footprints, weights and solvers where those are the definition, and
replace only the machinery that makes the kernels fast.
"""

from __future__ import annotations

import math

import numba
import numpy as np
from scipy import ndimage

from tilesky.estimators._rows import MAD_TO_SIGMA
from tilesky.kernels._idw_walk import offset_table, walk
from tilesky.kernels._mask import gaussian_kernel1d, tophat_footprint
from tilesky.kernels._noise import (
    LIMB,
    N_POS,
    OFFSET,
    UNIT_EXP,
    MomentState,
    split_digits,
)
from tilesky.kernels._ring import _prepare_image, ring_footprint
from tilesky.kernels._smoothfit import (
    _MOMENT_INDEX,
    _MOMENTS,
    _TERMS,
    _check,
    _solve_constant,
    _weights,
)

__all__ = [
    "dilate_reference",
    "exact_sum",
    "idw_grid_reference",
    "moment_state_reference",
    "ring_median_reference",
    "sigma_clip_bounds_reference",
    "smooth_reference",
    "smoothfit_binned_reference",
    "smoothfit_reference",
]

_HALF = 1 << 26


# -- ring median ---------------------------------------------------------------


def ring_median_reference(image, *, radius_in: int, width: int) -> np.ndarray:
    """Slow, obviously correct ring median: the test oracle.

    Same rules as ``ring_median``, written without the rank machinery and
    without scipy: every footprint offset is gathered with explicitly
    reflected indices, the stack is sorted with non-finite values last, and
    position ``n_finite // 2`` is taken. Memory is ``footprint.sum()`` times
    the image, so keep images small.
    """
    footprint = ring_footprint(radius_in, width)
    image = _prepare_image(image)
    ny, nx = image.shape
    depth = footprint.shape[0] // 2

    def reflect(index, n):
        # Period 2 n: a b c | c b a | a b c ...
        index = np.mod(index, 2 * n)
        return np.where(index < n, index, 2 * n - 1 - index)

    planes = [
        image[np.ix_(reflect(np.arange(ny) + dy, ny), reflect(np.arange(nx) + dx, nx))]
        for dy, dx in np.argwhere(footprint) - depth
    ]
    values = np.stack(planes)
    values[~np.isfinite(values)] = np.nan
    values = np.sort(values, axis=0)
    n_finite = np.count_nonzero(np.isfinite(values), axis=0)
    picked = np.take_along_axis(values, (n_finite // 2)[None], axis=0)[0]
    return np.where(n_finite > 0, picked, np.nan).astype(image.dtype)


# -- sigma clipping ------------------------------------------------------------


def sigma_clip_bounds_reference(
    rows, sigma_lower, sigma_upper, maxiters, cenfunc, stdfunc
):
    """Sigma-clipping bounds of every row with whole-array numpy passes.

    The vectorised form of astropy's fast path that ``clip_bounds`` must
    equal bit for bit: on each sorted row the kept values are a window that
    only shrinks, and every sum runs over the whole row with zeros outside.
    """
    # Clipping only ever removes values from the low and high ends, so on
    # each sorted row the kept values are a window [lo, hi) that shrinks.
    s = np.sort(np.where(np.isfinite(rows), rows, np.nan).astype(np.float64), -1)
    nrows, n = s.shape
    lo = np.zeros(nrows, dtype=np.intp)
    hi = np.count_nonzero(~np.isnan(s), axis=-1).astype(np.intp)
    lower = np.full(nrows, np.nan)
    upper = np.full(nrows, np.nan)
    sig_lo, sig_hi = sigma_lower, sigma_upper
    idx = np.arange(n)
    active = np.flatnonzero(hi > 0)
    iteration = 0
    while active.size:
        sub, start, stop = s[active], lo[active], hi[active]
        count = stop - start
        inside = (idx >= start[:, None]) & (idx < stop[:, None])
        if cenfunc == "median" or stdfunc == "mad_std":
            median = _window_median(sub, start, count)
        if cenfunc == "mean" or stdfunc == "std":
            mean = np.where(inside, sub, 0.0).sum(axis=-1) / count
        centre = median if cenfunc == "median" else mean
        if stdfunc == "std":
            dev = np.where(inside, sub - mean[:, None], 0.0)
            std = np.sqrt((dev * dev).sum(axis=-1) / count)
        else:
            absdev = np.where(inside, np.abs(sub - median[:, None]), np.inf)
            absdev.sort(axis=-1)
            std = _window_median(absdev, np.zeros_like(start), count) * MAD_TO_SIGMA
        b_lo = centre - sig_lo * std
        b_hi = centre + sig_hi * std
        lower[active], upper[active] = b_lo, b_hi
        below = np.count_nonzero(sub < b_lo[:, None], axis=-1)
        not_above = np.count_nonzero(sub <= b_hi[:, None], axis=-1)
        new_start = np.maximum(start, below)
        new_stop = np.minimum(stop, not_above)
        new_count = np.maximum(new_stop - new_start, 0)
        lo[active], hi[active] = new_start, new_stop
        iteration += 1
        if maxiters is not None and iteration >= maxiters:
            break
        active = active[(new_count != count) & (new_count != 0)]
    return lower, upper


def _window_median(s: np.ndarray, start: np.ndarray, count: np.ndarray) -> np.ndarray:
    """Median of the sorted windows ``s[i, start[i]:start[i] + count[i]]``."""
    a = np.take_along_axis(s, (start + (count - 1) // 2)[:, None], axis=-1)[:, 0]
    b = np.take_along_axis(s, (start + count // 2)[:, None], axis=-1)[:, 0]
    return np.where(count % 2 == 1, a, 0.5 * (a + b))


# -- masks ---------------------------------------------------------------------


def smooth_reference(
    image: np.ndarray,
    sigma: float,
    *,
    truncate: float,
    mask: np.ndarray | None = None,
) -> np.ndarray:
    """scipy version of ``smooth``: its slow reference, equal to it bit for bit."""
    data = np.asarray(image, dtype=np.float64)
    weight = np.isfinite(data)
    if mask is not None:
        weight &= ~np.asarray(mask, dtype=bool)
    values = np.where(weight, data, 0.0)
    w = weight.astype(np.float64)
    kernel = gaussian_kernel1d(sigma, truncate)
    num = ndimage.correlate1d(values, kernel, axis=0, mode="constant", cval=0.0)
    num = ndimage.correlate1d(num, kernel, axis=1, mode="constant", cval=0.0)
    den = ndimage.correlate1d(w, kernel, axis=0, mode="constant", cval=0.0)
    den = ndimage.correlate1d(den, kernel, axis=1, mode="constant", cval=0.0)
    # den is a sum of positive weights; below ~1e-12 it is rounding noise of
    # pixels that have no covered neighbour at all.
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(den > 1e-12, num / den, np.nan)
    return out.astype(np.float32)


def dilate_reference(mask: np.ndarray, radius: int) -> np.ndarray:
    """scipy version of ``dilate_mask``: its slow, exact reference."""
    mask = np.asarray(mask, dtype=bool)
    if radius <= 0:
        return mask.copy()
    return ndimage.binary_dilation(mask, structure=tophat_footprint(radius))


# -- exact noise sums ----------------------------------------------------------


@numba.njit(cache=True, nogil=True)
def _moment_digits(values, lower, upper, drop, use_drop):
    """Count and per-position digit totals of kept values and their squares."""
    acc = np.zeros((2, N_POS), np.int64)
    count = 0
    n = values.shape[0]
    for i in range(n):
        v = values[i]
        if not (math.isfinite(v) and v >= lower and v <= upper):
            continue
        if use_drop and drop[i]:
            continue
        count += 1
        for k in range(2):
            w = v if k == 0 else v * v
            q, d0, d1, d2 = split_digits(w)
            if q >= 0:
                acc[k, q] += d0
                acc[k, q + 1] += d1
                acc[k, q + 2] += d2
    return count, acc


def _digits_to_units(acc_row: np.ndarray) -> int:
    """Per-position digit totals as one integer in units of 2**-UNIT_EXP."""
    return sum(
        int(a) << (LIMB * k - OFFSET + UNIT_EXP)
        for k, a in enumerate(acc_row.tolist())
        if a
    )


def exact_sum(values: np.ndarray) -> int:
    """Exact sum of float64 ``values`` as an integer in units of 2**-UNIT_EXP.

    The plain numpy reference (frexp and bincount) for the compiled
    ``moment_state``.
    """
    values = np.asarray(values, dtype=np.float64).ravel()
    values = values[values != 0.0]
    if values.size == 0:
        return 0
    if values.size >= 1 << 26:
        half = values.size // 2
        return exact_sum(values[:half]) + exact_sum(values[half:])
    mant, expo = np.frexp(values)
    # mant * 2**53 is an exact integer below 2**53 in magnitude: split it in
    # two 26/27-bit halves so bincount's float64 accumulators stay exact.
    m = (mant * 2.0**53).astype(np.int64)
    hi = m >> 26
    lo = m - (hi << 26)
    emin = int(expo.min())
    idx = (expo - emin).astype(np.intp)
    s_hi = np.bincount(idx, weights=hi.astype(np.float64))
    s_lo = np.bincount(idx, weights=lo.astype(np.float64))
    total = 0
    for k in np.flatnonzero((s_hi != 0) | (s_lo != 0)):
        e = emin + int(k) - 53 + UNIT_EXP
        ints = int(s_hi[k]) * _HALF + int(s_lo[k])
        # frexp exponents are >= -1073, so e >= 34: the shift is exact.
        total += ints << e
    return total


def moment_state_reference(
    values: np.ndarray,
    *,
    lower: float = -math.inf,
    upper: float = math.inf,
    mask: np.ndarray | None = None,
) -> MomentState:
    """``moment_state`` through a float64 copy and ``split_digits``.

    Each value is split in three base-2**26 digits at a global digit position
    and the digits are summed per position; the compiled ``moment_state``
    (per-exponent bins of the bit patterns) must agree integer for integer.
    """
    v = np.ascontiguousarray(values, dtype=np.float64).ravel()
    if mask is None:
        drop, use_drop = np.zeros(1, dtype=np.bool_), False
    else:
        drop = np.ascontiguousarray(mask, dtype=np.bool_).ravel()
        use_drop = True
    count, acc = _moment_digits(v, float(lower), float(upper), drop, use_drop)
    return MomentState(int(count), _digits_to_units(acc[0]), _digits_to_units(acc[1]))


# -- smooth fit ----------------------------------------------------------------


def smoothfit_reference(
    image: np.ndarray,
    mask: np.ndarray | None = None,
    *,
    scale: float,
    order: int,
    truncate: float,
    dtype=np.float32,
) -> np.ndarray:
    """Per-pixel fit from full-resolution separable moment images (slow).

    The reference ``smoothfit`` is tested against (``step=1`` reproduces
    it); ``dtype=np.float64`` keeps the solver's precision.
    """
    _check(scale, order, truncate, 1)
    data = np.asarray(image, dtype=np.float64)
    cover = np.isfinite(data)
    if mask is not None:
        cover &= ~np.asarray(mask, dtype=bool)
    c = cover.astype(np.float64)
    cf = np.where(cover, data, 0.0)
    terms = _TERMS[order]
    max_power = 2 * max(i + j for i, j in terms)
    needed = [(i, j) for (i, j) in _MOMENTS if i + j <= max_power]
    w = {p: _weights(scale, truncate, p) for p in range(max_power + 1)}
    # Row pass once per x-power, then column passes per moment.
    moms = np.zeros((len(_MOMENTS), *data.shape))
    row_c = {}
    for _i, j in needed:
        if j not in row_c:
            row_c[j] = ndimage.correlate1d(c, w[j], axis=1, mode="constant", cval=0.0)
    for i, j in needed:
        moms[_MOMENT_INDEX[(i, j)]] = ndimage.correlate1d(
            row_c[j], w[i], axis=0, mode="constant", cval=0.0
        )
    rhs = np.zeros((len(terms), *data.shape))
    row_f = {}
    for k, (i, j) in enumerate(terms):
        if j not in row_f:
            row_f[j] = ndimage.correlate1d(cf, w[j], axis=1, mode="constant", cval=0.0)
        rhs[k] = ndimage.correlate1d(row_f[j], w[i], axis=0, mode="constant", cval=0.0)
    out = np.empty(data.shape, dtype=np.float64)
    _solve_constant(moms, rhs, len(terms), out)
    return out.astype(dtype)


def smoothfit_binned_reference(
    image: np.ndarray,
    mask: np.ndarray | None = None,
    *,
    scale: float,
    order: int,
    truncate: float,
    step: int,
    binning: int,
) -> np.ndarray:
    """The binned fit at the grid pixels ``(i * step, j * step)``, directly.

    Each ``binning x binning`` bin is one sample at its centre holding the
    mean of its usable pixels, weighted by their count times the window's
    Gaussian; bins whose centre is within the window radius on both axes
    take part. The local polynomial is solved by least squares at each grid
    point (NaN without any usable bin); no separable sums, no grid sharing.
    """
    data = np.asarray(image, dtype=np.float64)
    cover = np.isfinite(data)
    if mask is not None:
        cover &= ~np.asarray(mask, dtype=bool)
    ny, nx = data.shape
    b = binning
    nby, nbx = -(-ny // b), -(-nx // b)
    padded = np.zeros((nby * b, nbx * b))
    count = np.zeros((nby * b, nbx * b))
    padded[:ny, :nx] = np.where(cover, data, 0.0)
    count[:ny, :nx] = cover
    sums = padded.reshape(nby, b, nbx, b).sum(axis=(1, 3))
    counts = count.reshape(nby, b, nbx, b).sum(axis=(1, 3))
    centre_y = b * np.arange(nby) + (b - 1) / 2
    centre_x = b * np.arange(nbx) + (b - 1) / 2
    radius = int(truncate * scale + 0.5)
    terms = _TERMS[order]
    out = np.full(((ny - 1) // step + 1, (nx - 1) // step + 1), np.nan)
    for gy in range(out.shape[0]):
        dy = (centre_y - gy * step) / scale
        rows = np.abs(centre_y - gy * step) <= radius
        for gx in range(out.shape[1]):
            dx = (centre_x - gx * step) / scale
            cols = np.abs(centre_x - gx * step) <= radius
            c = counts[np.ix_(rows, cols)]
            use = c > 0
            if not use.any():
                continue
            u, v = np.meshgrid(dy[rows], dx[cols], indexing="ij")
            w = np.exp(-0.5 * (u * u + v * v))[use] * c[use]
            f = sums[np.ix_(rows, cols)][use] / c[use]
            design = np.stack([u[use] ** i * v[use] ** j for i, j in terms], axis=1)
            normal = design.T @ (w[:, None] * design)
            out[gy, gx] = np.linalg.solve(normal, design.T @ (w * f))[0]
    return out


# -- inverse-distance weighting ------------------------------------------------


@numba.njit(cache=True, nogil=True)
def idw_grid_reference(
    vals, mj0, mi0, out, y0, x0, by, bx, k, power, reg, max_dist, only_nan
):
    """Bounded, tie-inclusive IDW of mesh block ``vals`` onto ``out`` in place.

    One ``walk`` per pixel along its ``offset_table``: the definition that
    ``tilesky.kernels._idw_walk.idw_grid`` matches bit for bit.
    """
    ny, nx = out.shape
    hy = math.floor((max_dist + 0.5 * (by - 1)) / by)
    hx = math.floor((max_dist + 0.5 * (bx - 1)) / bx)
    # NaN border of the reach: no bounds checks in the walk.
    pn = vals.shape[1] + 2 * hx
    padded = np.full((vals.shape[0] + 2 * hy) * pn, np.nan)
    for j in range(vals.shape[0]):
        for i in range(vals.shape[1]):
            padded[(j + hy) * pn + i + hx] = vals[j, i]
    # Most pixels find k neighbours in a disk holding ~4k cells: sort that
    # short table, and the full one only for pixels that run out of it.
    near = min(max_dist, math.sqrt(4.0 * k * by * bx / math.pi) + max(by, bx))
    for oy in range(by):
        r0 = (oy - y0) % by
        if r0 >= ny:
            continue
        for ox in range(bx):
            c0 = (ox - x0) % bx
            if c0 >= nx:
                continue
            nq, nflat, nw = offset_table(oy, ox, by, bx, near, pn, power, reg)
            fq, fflat, fw = nq, nflat, nw
            built = False
            for r in range(r0, ny, by):
                jj = (y0 + r) // by - mj0 + hy
                for c in range(c0, nx, bx):
                    if only_nan and not math.isnan(out[r, c]):
                        continue
                    base = jj * pn + (x0 + c) // bx - mi0 + hx
                    value, done = walk(padded, base, nq, nflat, nw, k)
                    if not done and near < max_dist:
                        # Same order, longer table: the walk is redone whole
                        # so the sum is the one a full-table walk gives.
                        if not built:
                            fq, fflat, fw = offset_table(
                                oy, ox, by, bx, max_dist, pn, power, reg
                            )
                            built = True
                        value, _ = walk(padded, base, fq, fflat, fw, k)
                    out[r, c] = value

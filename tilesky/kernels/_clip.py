"""Compiled sigma-clipping bounds: one pass per row instead of array passes.

:class:`tilesky.estimators.SigmaClip` reproduces astropy's fast path with
numpy on all rows at once, one full-array pass per operation and iteration.
:func:`clip_bounds` runs the same iteration row by row on the row's sorted
finite values, with the same arithmetic: the sums are numpy's pairwise
summation over the whole row (values outside the kept window contribute
exact zeros, as ``np.where(inside, x, 0).sum()`` has them), so the bounds
equal the numpy path's bit for bit (``tests/_reference_kernels.py`` holds
that path as ``sigma_clip_bounds_reference``).
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["clip_bounds", "clipped_median_std"]


@njit(cache=True, nogil=True)
def _leaf(a, lo, n, zero):  # pragma: no cover - numba
    # numpy's pairwise_sum below its block size: 8 accumulators, in the
    # array's own dtype (``zero`` is 0 of that dtype: float32 sums in float32).
    if n < 8:
        res = zero
        for i in range(lo, lo + n):
            res += a[i]
        return res
    r0, r1, r2, r3 = a[lo], a[lo + 1], a[lo + 2], a[lo + 3]
    r4, r5, r6, r7 = a[lo + 4], a[lo + 5], a[lo + 6], a[lo + 7]
    i = 8
    end = n - (n % 8)
    while i < end:
        j = lo + i
        r0 += a[j]
        r1 += a[j + 1]
        r2 += a[j + 2]
        r3 += a[j + 3]
        r4 += a[j + 4]
        r5 += a[j + 5]
        r6 += a[j + 6]
        r7 += a[j + 7]
        i += 8
    res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    while i < n:
        res += a[lo + i]
        i += 1
    return res


@njit(cache=True, nogil=True)
def _pairwise(a, lo, n, zero):  # pragma: no cover - numba
    # numpy's pairwise_sum: halves (rounded to 8) down to blocks of 128,
    # summed left + right. Written with an explicit stack: numba's cache
    # reloads a self-recursive function unsafely.
    if n <= 128:
        return _leaf(a, lo, n, zero)
    task_lo = np.empty(192, np.int64)
    task_n = np.empty(192, np.int64)
    task_join = np.empty(192, np.bool_)
    done = np.empty(64, a.dtype)
    sp, dp = 1, 0
    task_lo[0], task_n[0], task_join[0] = lo, n, False
    while sp > 0:
        sp -= 1
        t_lo, t_n, join = task_lo[sp], task_n[sp], task_join[sp]
        if join:
            dp -= 1
            done[dp - 1] = done[dp - 1] + done[dp]
        elif t_n <= 128:
            done[dp] = _leaf(a, t_lo, t_n, zero)
            dp += 1
        else:
            half = t_n // 2
            half -= half % 8
            task_lo[sp], task_n[sp], task_join[sp] = t_lo, t_n, True
            task_lo[sp + 1], task_n[sp + 1], task_join[sp + 1] = (
                t_lo + half,
                t_n - half,
                False,
            )
            task_lo[sp + 2], task_n[sp + 2], task_join[sp + 2] = t_lo, half, False
            sp += 3
    return done[0]


@njit(cache=True, nogil=True)
def _window_median(s, start, count):  # pragma: no cover - numba
    a = s[start + (count - 1) // 2]
    if count % 2 == 1:
        return a
    return 0.5 * (a + s[start + count // 2])


def _sorted_finite(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows as float64, sorted with non-finite values last (as NaN), and the
    number of finite values per row."""
    finite = np.isfinite(rows)
    # Sorting in the rows' own dtype gives the order of their float64 values
    # and moves half the bytes.
    ordered = np.sort(np.where(finite, rows, np.nan), axis=-1)
    return ordered.astype(np.float64), np.count_nonzero(finite, axis=-1)


def clip_bounds(
    rows: np.ndarray,
    sigma_lower: float,
    sigma_upper: float,
    maxiters: int,
    median_centre: bool,
    std_spread: bool,
    mad_to_sigma: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Final ``(lower, upper)`` clipping bounds of every row of ``rows``.

    ``maxiters < 0``: iterate to convergence. ``median_centre``: median
    (else mean) centre; ``std_spread``: population std (else MAD-std,
    ``mad_to_sigma`` times the median absolute deviation). Rows are sorted
    by numpy (non-finite values last, as NaN), then walked compiled.
    """
    ordered, counts = _sorted_finite(np.asarray(rows))
    return _walk(
        ordered,
        counts,
        float(sigma_lower),
        float(sigma_upper),
        int(maxiters),
        bool(median_centre),
        bool(std_spread),
        float(mad_to_sigma),
    )


def clipped_median_std(
    rows: np.ndarray,
    clip: tuple[float, float, int, bool, bool, float] | None,
    threshold: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Median and population std of each row's kept values, in one pass.

    The same numbers, bit for bit, as clipping the rows (values outside the
    final bounds set to NaN), counting what is left, and, on rows keeping
    more than ``threshold`` values, ``MedianBackground`` and
    ``StdBackgroundRMS``: each row is sorted once, the kept values are a
    window of the sorted row (the median is read off it), and the mean and
    std are summed in the row's own order and dtype, as numpy sums them.

    Parameters
    ----------
    rows : 2D float32 or float64 ndarray
        One row per box, NaN for excluded pixels.
    clip : tuple or None
        ``(sigma_lower, sigma_upper, maxiters, median_centre, std_spread,
        mad_to_sigma)`` as `clip_bounds` takes them; None: no clipping.
    threshold : float
        Rows keeping ``<= threshold`` values get NaN median and std.

    Returns
    -------
    median, std : 1D ndarray
        Dtype of ``rows``.
    n_kept : 1D int32 ndarray
        Values kept per row.
    """
    rows = np.ascontiguousarray(rows)
    ordered, counts = _sorted_finite(rows)
    clipping = clip is not None
    params = clip if clip is not None else (0.0, 0.0, 0, True, True, 0.0)
    median = np.full(rows.shape[0], np.nan, dtype=rows.dtype)
    std = np.full(rows.shape[0], np.nan, dtype=rows.dtype)
    n_kept = np.zeros(rows.shape[0], dtype=np.int32)
    _median_std_rows(
        rows,
        ordered,
        counts,
        clipping,
        float(params[0]),
        float(params[1]),
        int(params[2]),
        bool(params[3]),
        bool(params[4]),
        float(params[5]),
        float(threshold),
        rows.dtype.type(0),
        median,
        std,
        n_kept,
    )
    return median, std, n_kept


@njit(cache=True, nogil=True)
def _median_std_rows(
    rows,
    ordered,
    counts,
    clipping,
    sigma_lower,
    sigma_upper,
    maxiters,
    median_centre,
    std_spread,
    mad,
    threshold,
    zero,
    median,
    std,
    n_kept,
):  # pragma: no cover - numba
    nrows, n = rows.shape
    v = np.empty(n)
    w = np.empty(n, rows.dtype)
    # Casts to the rows' dtype go through a store, as numpy's astype does.
    cast = np.empty(1, rows.dtype)
    for r in range(nrows):
        nf = counts[r]
        if nf == 0:
            continue
        s = ordered[r]
        b_lo, b_hi = -np.inf, np.inf
        if clipping:
            b_lo, b_hi = _row_bounds(
                s,
                nf,
                v,
                sigma_lower,
                sigma_upper,
                maxiters,
                median_centre,
                std_spread,
                mad,
            )
        below = 0
        for i in range(nf):
            if s[i] < b_lo:
                below += 1
        kept = 0
        for i in range(n):
            x = rows[r, i]
            if x >= b_lo and x <= b_hi:
                w[i] = x
                kept += 1
            else:
                w[i] = zero
        n_kept[r] = kept
        if not kept > threshold:
            continue
        cast[0] = s[below + (kept - 1) // 2]
        a = cast[0]
        if kept % 2 == 1:
            median[r] = a
        else:
            cast[0] = s[below + kept // 2]
            b = cast[0]
            cast[0] = a + b
            median[r] = cast[0] / 2
        cast[0] = np.float64(_pairwise(w, 0, n, zero)) / kept
        mean = cast[0]
        for i in range(n):
            x = rows[r, i]
            if x >= b_lo and x <= b_hi:
                d = x - mean
                w[i] = d * d
            else:
                w[i] = zero
        cast[0] = np.float64(_pairwise(w, 0, n, zero)) / kept
        std[r] = np.sqrt(cast[0])


@njit(cache=True, nogil=True)
def _row_bounds(
    s, nf, v, sigma_lower, sigma_upper, maxiters, median_centre, std_spread, mad
):  # pragma: no cover - numba
    # One row: ``s`` sorted (its ``nf`` finite values first), ``v`` scratch of
    # s's length. Clipping only removes values from the ends, so the kept
    # values are the window s[lo:hi], which shrinks.
    n = s.shape[0]
    b_lo = b_hi = np.nan
    lo, hi, it = 0, nf, 0
    while True:
        count = hi - lo
        median = _window_median(s, lo, count)
        mean = 0.0
        if std_spread or not median_centre:
            for i in range(n):
                v[i] = s[i] if lo <= i < hi else 0.0
            mean = _pairwise(v, 0, n, 0.0) / count
        centre = median if median_centre else mean
        if std_spread:
            for i in range(n):
                d = s[i] - mean if lo <= i < hi else 0.0
                v[i] = d * d
            spread = np.sqrt(_pairwise(v, 0, n, 0.0) / count)
        else:
            for i in range(count):
                v[i] = abs(s[lo + i] - median)
            v[:count] = np.sort(v[:count])
            spread = _window_median(v, 0, count) * mad
        b_lo = centre - sigma_lower * spread
        b_hi = centre + sigma_upper * spread
        below = 0
        not_above = 0
        for i in range(nf):
            if s[i] < b_lo:
                below += 1
            if s[i] <= b_hi:
                not_above += 1
        new_lo = max(lo, below)
        new_hi = min(hi, not_above)
        new_count = max(new_hi - new_lo, 0)
        lo, hi = new_lo, new_hi
        it += 1
        if maxiters >= 0 and it >= maxiters:
            break
        if new_count == count or new_count == 0:
            break
    return b_lo, b_hi


@njit(cache=True, nogil=True)
def _walk(
    ordered, counts, sigma_lower, sigma_upper, maxiters, median_centre, std_spread, mad
):  # pragma: no cover - numba
    nrows, n = ordered.shape
    lower = np.full(nrows, np.nan)
    upper = np.full(nrows, np.nan)
    v = np.empty(n)
    for r in range(nrows):
        if counts[r] == 0:
            continue
        lower[r], upper[r] = _row_bounds(
            ordered[r],
            counts[r],
            v,
            sigma_lower,
            sigma_upper,
            maxiters,
            median_centre,
            std_spread,
            mad,
        )
    return lower, upper

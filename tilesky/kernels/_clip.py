"""Compiled sigma-clipping bounds: one pass per row instead of array passes.

:class:`tilesky.estimators.SigmaClip` reproduces astropy's fast path with
numpy on all rows at once, one full-array pass per operation and iteration.
:func:`clip_bounds` runs the same iteration row by row on the row's sorted
finite values, with the same arithmetic: the sums are numpy's pairwise
summation over the whole row (values outside the kept window contribute
exact zeros, as ``np.where(inside, x, 0).sum()`` has them), so the bounds
equal the numpy path's bit for bit (``tests/_reference_kernels.py`` holds
that path as ``sigma_clip_bounds_reference``).

:func:`box_median_std` is the default mesh statistics (clip, then median
and std) as one compiled pass per mesh box, read in place from the image;
``tests/test_mesh.py`` checks it against the numpy path bit for bit.
"""

from __future__ import annotations

import functools

import numpy as np
from numba import njit

__all__ = ["box_median_std", "clip_bounds"]


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


def _walk_args(clip) -> tuple[float, float, int, bool, bool, float]:
    params = clip if clip is not None else (0.0, 0.0, 0, True, True, 0.0)
    return (
        float(params[0]),
        float(params[1]),
        int(params[2]),
        bool(params[3]),
        bool(params[4]),
        float(params[5]),
    )


def box_median_std(
    data: np.ndarray,
    bad: np.ndarray,
    box_size: tuple[int, int],
    clip: tuple[float, float, int, bool, bool, float] | None,
    threshold: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Median and population std of each mesh box's kept pixels, in one pass.

    The same numbers, bit for bit, as cutting ``data`` into box rows (NaN
    where excluded or past the edge), clipping them (values outside the
    final bounds set to NaN), counting what is left, and, on boxes keeping
    more than ``threshold`` values, ``MedianBackground`` and
    ``StdBackgroundRMS``: each box's pixels are gathered and sorted once,
    its kept values are a window of the sorted box (the median is read off
    it), and the mean and std are summed in the box's own row-major order
    and dtype, as numpy sums them.

    Parameters
    ----------
    data : 2D float32 or float64 ndarray
        The image (or a box-aligned region); boxes are anchored at (0, 0)
        and those past the top or right edge are partial.
    bad : 2D bool ndarray
        True where a pixel is excluded (it must be True where ``data`` is
        not finite).
    box_size : (int, int)
        Box edges.
    clip : tuple or None
        ``(sigma_lower, sigma_upper, maxiters, median_centre, std_spread,
        mad_to_sigma)`` as `clip_bounds` takes them; None: no clipping.
    threshold : float
        Boxes keeping ``<= threshold`` values get NaN median and std.

    Returns
    -------
    median, std : 2D ndarray
        One value per box, dtype of ``data``.
    n_kept : 2D int32 ndarray
        Values kept per box.
    """
    by, bx = box_size
    nby, nbx = -(-data.shape[0] // by), -(-data.shape[1] // bx)
    median = np.full((nby, nbx), np.nan, dtype=data.dtype)
    std = np.full((nby, nbx), np.nan, dtype=data.dtype)
    n_kept = np.zeros((nby, nbx), dtype=np.int32)
    _median_std_boxes(
        data,
        bad.view(np.uint8),
        by,
        bx,
        _network(by * bx),
        clip is not None,
        _walk_args(clip),
        float(threshold),
        data.dtype.type(0),
        median,
        std,
        n_kept,
    )
    return median, std, n_kept


@njit(cache=True, nogil=True)
def _one_row(x, s, nf, v, w, cast, clipping, walk, threshold, zero):  # pragma: no cover
    # ``x``: the row in its order and dtype, NaN where excluded; ``s``: its
    # finite values sorted (the first ``nf``) as float64, as long as ``x``.
    # Returns (kept, median, std), NaN median and std at or below threshold.
    n = x.shape[0]
    cast[0] = np.nan
    median = std = cast[0]
    if nf == 0:
        return 0, median, std
    b_lo, b_hi = -np.inf, np.inf
    if clipping:
        b_lo, b_hi = _row_bounds(s, nf, v, *walk)
    below = 0
    for i in range(nf):
        if s[i] < b_lo:
            below += 1
    kept = 0
    for i in range(n):
        if x[i] >= b_lo and x[i] <= b_hi:
            w[i] = x[i]
            kept += 1
        else:
            w[i] = zero
    if not kept > threshold:
        return kept, median, std
    cast[0] = s[below + (kept - 1) // 2]
    a = cast[0]
    if kept % 2 == 1:
        median = a
    else:
        cast[0] = s[below + kept // 2]
        b = cast[0]
        cast[0] = a + b
        cast[0] = cast[0] / 2
        median = cast[0]
    cast[0] = np.float64(_pairwise(w, 0, n, zero)) / kept
    mean = cast[0]
    for i in range(n):
        if x[i] >= b_lo and x[i] <= b_hi:
            d = x[i] - mean
            w[i] = d * d
        else:
            w[i] = zero
    cast[0] = np.float64(_pairwise(w, 0, n, zero)) / kept
    cast[0] = np.sqrt(cast[0])
    return kept, median, cast[0]


#: Boxes sorted together, one per SIMD lane of the sorting network.
_LANES = 8

#: Largest box (pixels, padded to a power of two) sorted by the network;
#: beyond it the comparators (n log^2 n / 4) cost more than a quicksort.
_NETWORK_MAX = 4096


@functools.lru_cache(maxsize=16)
def _network(n: int) -> np.ndarray:
    """Batcher's odd-even merge sort for ``n`` values padded to a power of
    two: the comparators ``(i, j)``, ``i < j``, in order (empty above
    :data:`_NETWORK_MAX`: those boxes are sorted one by one)."""
    size = 1
    while size < n:
        size *= 2
    if size > _NETWORK_MAX:
        return np.zeros((0, 2), dtype=np.int64)
    pairs = []
    p = 1
    while p < size:
        k = p
        while k >= 1:
            for j in range(k % p, size - k, 2 * k):
                for i in range(min(k, size - j - k)):
                    if (i + j) // (2 * p) == (i + j + k) // (2 * p):
                        pairs.append((i + j, i + j + k))
            k //= 2
        p *= 2
    return np.array(pairs, dtype=np.int64).reshape(-1, 2)


@njit(cache=True, nogil=True)
def _sort_lanes(buf, pairs):  # pragma: no cover - numba
    # Every column of ``buf`` sorted by the network ``pairs``, the same
    # comparators for all lanes, no data-dependent branch (an insertion
    # sort per box was three quarters of the pass, measured at 2000^2).
    for c in range(pairs.shape[0]):
        a = buf[pairs[c, 0]]
        b = buf[pairs[c, 1]]
        for lane in range(_LANES):
            x = a[lane]
            y = b[lane]
            a[lane] = min(x, y)
            b[lane] = max(x, y)


@njit(cache=True, nogil=True)
def _restore_zero_signs(s, nf, x):  # pragma: no cover - numba
    # A sort may order +0.0 and -0.0 either way; a stable one keeps them in
    # the box's row-major order (``x``, NaN where excluded), as these are
    # the only distinct finite values that compare equal.
    z = 0
    while z < nf and s[z] < 0:
        z += 1
    for k in range(x.shape[0]):
        if x[k] == 0:
            s[z] = x[k]
            z += 1


@njit(cache=True, nogil=True)
def _median_std_boxes(
    data, bad, by, bx, pairs, clipping, walk, threshold, zero, median, std, n_kept
):  # pragma: no cover - numba
    ny, nx = data.shape
    nby, nbx = median.shape
    n = by * bx
    lanes = _LANES if pairs.shape[0] > 0 else 1
    size = 1
    while size < n:
        size *= 2
    buf = np.empty((size, lanes), data.dtype)
    xs = np.empty((lanes, n), data.dtype)
    nfs = np.zeros(lanes, np.int64)
    zeros = np.zeros(lanes, np.int64)
    s = np.empty(n)
    v = np.empty(n)
    w = np.empty(n, data.dtype)
    cast = np.empty(1, data.dtype)
    cast[0] = np.nan
    nan = cast[0]
    for j in range(nby):
        for i0 in range(0, nbx, lanes):
            # Each box's pixels row-major, NaN where excluded or past the
            # edge (the row `_box_rows` makes of it), and its finite values
            # in a lane of ``buf``, +inf after them.
            buf[:] = np.inf
            used = min(lanes, nbx - i0)
            for lane in range(used):
                i = i0 + lane
                x = xs[lane]
                nf = 0
                nz = 0
                for dy in range(by):
                    yy = j * by + dy
                    for dx in range(bx):
                        xx = i * bx + dx
                        k = dy * bx + dx
                        if yy < ny and xx < nx and not bad[yy, xx]:
                            val = data[yy, xx]
                            x[k] = val
                            buf[nf, lane] = val
                            nf += 1
                            nz += val == 0
                        else:
                            x[k] = nan
                nfs[lane] = nf
                zeros[lane] = nz
            if pairs.shape[0] > 0:
                _sort_lanes(buf, pairs)
            for lane in range(used):
                nf = nfs[lane]
                for k in range(nf):
                    s[k] = np.float64(buf[k, lane])
                if pairs.shape[0] == 0:
                    s[:nf].sort()
                if zeros[lane] > 0:
                    _restore_zero_signs(s, nf, xs[lane])
                s[nf:] = np.nan
                i = i0 + lane
                n_kept[j, i], median[j, i], std[j, i] = _one_row(
                    xs[lane], s, nf, v, w, cast, clipping, walk, threshold, zero
                )


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

"""Compiled walk of the bounded IDW kernels (:mod:`tilesky.kernels._idw`).

IDW neighbours are canonical, hence tile-independent: the ``n_neighbors``
nearest valid (non-NaN) mesh cells within ``max_distance``, *all* cells tied at
the k-th distance included, summed in (distance, global mesh index) order. The
candidate list only depends on a pixel's position inside its box, so it is
built once per in-box offset (:func:`offset_table`) and shared by every box;
tiled and monolithic results are then identical bit for bit. :func:`idw_grid`
walks the boxes of a pixel row together (SIMD lanes), each with the per-pixel
:func:`walk`'s own sums in the same order, so it equals the one-pixel-at-a-time
reference bit for bit.

Distances are in pixels with boxes ``(by, bx)``; ``fill_mesh_nans`` runs the
same walk with 1x1 boxes, so its distances are in mesh cells.
"""

from __future__ import annotations

import math

import numba
import numpy as np

__all__ = ["idw_grid", "offset_table", "walk"]


@numba.njit(cache=True, nogil=True)
def offset_table(oy, ox, by, bx, radius, pn, power, reg):
    """Cells within ``radius`` of in-box offset (oy, ox), in canonical order.

    Entries are flat offsets into a row-major array of width ``pn``, sorted by
    exact squared distance (half-integers) and, for ties, by (dj, di), i.e. by
    global mesh index. The table for a smaller radius is a prefix of it.
    """
    hy = math.floor((radius + 0.5 * (by - 1)) / by)
    hx = math.floor((radius + 0.5 * (bx - 1)) / bx)
    ncand = (2 * hy + 1) * (2 * hx + 1)
    cq = np.empty(ncand)
    cflat = np.empty(ncand, np.int64)
    m = 0
    for dj in range(-hy, hy + 1):
        dy = dj * by + 0.5 * (by - 1) - oy
        for di in range(-hx, hx + 1):
            dx = di * bx + 0.5 * (bx - 1) - ox
            q = dy * dy + dx * dx
            if math.sqrt(q) <= radius:
                cq[m] = q
                cflat[m] = dj * pn + di
                m += 1
    order = np.argsort(cq[:m], kind="mergesort")
    tq = cq[:m][order]
    tw = np.zeros(m)
    for t in range(m):
        if tq[t] > 0.0:
            tw[t] = 1.0 / (math.sqrt(tq[t]) ** power + reg)
    return tq, cflat[:m][order], tw


@numba.njit(cache=True, nogil=True)
def walk(padded, base, tq, tflat, tw, k):
    """IDW at one pixel along its table: (value, k reached or on a centre)."""
    count = 0
    kth = np.inf
    sw = 0.0
    swv = 0.0
    vmin = np.inf
    vmax = -np.inf
    for t in range(len(tq)):
        q = tq[t]
        if q > kth:
            break
        v = padded[base + tflat[t]]
        if math.isnan(v):
            continue
        if q == 0.0:
            # photutils' conf_dist rule: on a mesh centre, that mesh's value.
            return v, True
        sw += tw[t]
        swv += tw[t] * v
        vmin = min(vmin, v)
        vmax = max(vmax, v)
        count += 1
        if count == k:
            kth = q
    if sw > 0.0:
        # The clamp keeps a constant neighbourhood exactly constant, as
        # photutils' ptp == 0 shortcut does.
        return min(max(swv / sw, vmin), vmax), count >= k
    return np.nan, count >= k


# A row's lanes keep walking in step while more than 1/_RESUME_FRACTION of
# them still need cells, _RESUME_BATCH entries at a time, and the few left
# resume one by one: a lane step is far cheaper than a scalar one, but costs
# every lane. Fractions 4..16 and batches 1..4 timed alike (bench_idw.py).
_RESUME_FRACTION = 8
_RESUME_BATCH = 2


@numba.njit(cache=True, nogil=True)
def _offset_tables(by, bx, radius, pn, power, reg, k, need):
    """:func:`offset_table` of each needed in-box offset, one row per offset.

    Row ``o = oy*bx + ox`` holds the table of length ``size[o]`` followed by
    ``inf`` distances, at least one, so ``tq[o, size[o]]`` is a sentinel.
    ``first[o]`` is 1 when entry 0 is the box's own centre (distance 0, which
    :func:`walk` treats apart), else 0. ``stop[o]`` ends the tie group of the
    k-th entry from ``first[o]``: no walk can stop before it, so up to there a
    walk uses every valid cell it meets.
    """
    noff = by * bx
    empty = (np.empty(0), np.empty(0, np.int64), np.empty(0))
    tabs = [
        offset_table(o // bx, o % bx, by, bx, radius, pn, power, reg)
        if need[o]
        else empty
        for o in range(noff)
    ]
    width = 0
    for o in range(noff):
        width = max(width, len(tabs[o][0]))
    tq = np.full((noff, width + 1), np.inf)
    tflat = np.zeros((noff, width + 1), np.int64)
    tw = np.zeros((noff, width + 1))
    size = np.zeros(noff, np.int64)
    first = np.zeros(noff, np.int64)
    stop = np.zeros(noff, np.int64)
    for o in range(noff):
        q, f, w = tabs[o]
        m = len(q)
        size[o] = m
        tq[o, :m] = q
        tflat[o, :m] = f
        tw[o, :m] = w
        t0 = 1 if m > 0 and q[0] == 0.0 else 0
        s = m
        if t0 + k <= m:
            s = t0 + k
            while s < m and q[s] == q[t0 + k - 1]:
                s += 1
        first[o] = t0
        stop[o] = s
    return tq, tflat, tw, size, first, stop


@numba.njit(cache=True, nogil=True)
def _resume(padded, base, tq, tflat, tw, t, m, k, count, kth, sw, swv, vmin, vmax):
    """:func:`walk` from entry ``t > 0`` on, given its state at ``t``."""
    while t < m:
        q = tq[t]
        if q > kth:
            break
        v = padded[base + tflat[t]]
        w = tw[t]
        t += 1
        if math.isnan(v):
            continue
        sw += w
        swv += w * v
        vmin = min(vmin, v)
        vmax = max(vmax, v)
        count += 1
        if count == k:
            kth = q
    if sw > 0.0:
        return min(max(swv / sw, vmin), vmax), count >= k
    return np.nan, count >= k


@numba.njit(cache=True, nogil=True)
def _lane_step(seg, q, w, fk, sw, swv, vmin, vmax, cnt, kth):
    """One :func:`walk` step (entry at distance² ``q``) for every lane."""
    for n in range(len(seg)):
        v = seg[n]
        use = (v == v) & (q <= kth[n])
        # Adding +0.0 is exact: neither sum can be -0.0 (both start at +0.0).
        sw[n] += w if use else 0.0
        swv[n] += w * v if use else 0.0
        # numba's min(a, v) is exactly `v if v < a else a` (max: v > a).
        vmin[n] = v if use & (v < vmin[n]) else vmin[n]
        vmax[n] = v if use & (v > vmax[n]) else vmax[n]
        c = cnt[n] + (1.0 if use else 0.0)
        cnt[n] = c
        kth[n] = q if use & (c == fk) else kth[n]


@numba.njit(cache=True, nogil=True)
def idw_grid(vals, mj0, mi0, out, y0, x0, by, bx, k, power, reg, max_dist, only_nan):
    """Bounded, tie-inclusive IDW of mesh block ``vals`` onto ``out`` in place.

    The reference is one :func:`walk` per pixel along its :func:`offset_table`
    (``idw_grid_reference`` in ``tests/_reference_kernels.py``); this kernel
    equals it bit for bit, many pixels at a time. The pixels of one output row
    at one in-box column offset (one per box) share a table and read
    consecutive mesh cells: entry ``t`` of lane ``n`` is ``padded[base0 + n +
    tflat[t]]``. Their walks run in step over the lanes (SIMD), each lane with
    its own sums, in table order as in :func:`walk`, so each sum is the
    reference's. Up to ``stop`` no lane can stop, so that stretch only skips
    NaN cells; lanes that met a NaN there walk on in step while many do, then
    one by one with :func:`_resume`; a lane that runs out of the short table is
    redone on the full one, as the reference does.
    """
    ny, nx = out.shape
    hy = math.floor((max_dist + 0.5 * (by - 1)) / by)
    hx = math.floor((max_dist + 0.5 * (bx - 1)) / bx)
    pn = vals.shape[1] + 2 * hx
    padded = np.full((vals.shape[0] + 2 * hy) * pn, np.nan)
    for j in range(vals.shape[0]):
        for i in range(vals.shape[1]):
            padded[(j + hy) * pn + i + hx] = vals[j, i]
    near = min(max_dist, math.sqrt(4.0 * k * by * bx / math.pi) + max(by, bx))
    need = np.zeros(by * bx, np.bool_)
    for oy in range(by):
        for ox in range(bx):
            need[oy * bx + ox] = (oy - y0) % by < ny and (ox - x0) % bx < nx
    tq, tflat, tw, size, first, stop = _offset_tables(
        by, bx, near, pn, power, reg, k, need
    )
    full = [(tq[o, :0], tflat[o, :0], tw[o, :0]) for o in range(by * bx)]
    built = np.zeros(by * bx, np.bool_)
    lanes = (nx + bx - 1) // bx
    sw = np.empty(lanes)
    swv = np.empty(lanes)
    vmin = np.empty(lanes)
    vmax = np.empty(lanes)
    cnt = np.empty(lanes)
    kth = np.empty(lanes)
    fk = float(k)
    for r in range(ny):
        oy = (y0 + r) % by
        jj = (y0 + r) // by - mj0 + hy
        for ox in range(bx):
            c0 = (ox - x0) % bx
            if c0 >= nx:
                continue
            nl = (nx - c0 + bx - 1) // bx
            o = oy * bx + ox
            base0 = jj * pn + (x0 + c0) // bx - mi0 + hx
            oq, of, ow = tq[o], tflat[o], tw[o]
            t0, s, m = first[o], stop[o], size[o]
            for n in range(nl):
                sw[n] = 0.0
                swv[n] = 0.0
                vmin[n] = np.inf
                vmax[n] = -np.inf
                cnt[n] = 0.0
                kth[n] = np.inf
            t = t0
            todo = nl
            if only_nan:
                todo = 0
                for n in range(nl):
                    todo += 1 if math.isnan(out[r, c0 + n * bx]) else 0
                if todo == 0:
                    continue
            if todo * _RESUME_FRACTION > nl:
                for t in range(t0, s):
                    w = ow[t]
                    b = base0 + of[t]
                    # A slice: plain loads (indices known >= 0), not gathers.
                    seg = padded[b : b + nl]
                    for n in range(nl):
                        v = seg[n]
                        use = v == v
                        sw[n] += w if use else 0.0
                        swv[n] += w * v if use else 0.0
                        vmin[n] = v if use & (v < vmin[n]) else vmin[n]
                        vmax[n] = v if use & (v > vmax[n]) else vmax[n]
                        cnt[n] += 1.0 if use else 0.0
                # Entries t0+k-1 .. s-1 tie, so a lane with k valid cells
                # took its k-th at that distance.
                kq = oq[s - 1] if s > t0 else np.inf
                left = 0
                for n in range(nl):
                    done = cnt[n] >= fk
                    kth[n] = kq if done else np.inf
                    left += 0 if done else 1
                t = s
                while left * _RESUME_FRACTION > nl and t < m:
                    for _ in range(_RESUME_BATCH):
                        if t < m:
                            b = base0 + of[t]
                            _lane_step(
                                padded[b : b + nl],
                                oq[t],
                                ow[t],
                                fk,
                                sw,
                                swv,
                                vmin,
                                vmax,
                                cnt,
                                kth,
                            )
                            t += 1
                    left = 0
                    for n in range(nl):
                        left += 1 if oq[t] <= kth[n] else 0
            for n in range(nl):
                c = c0 + n * bx
                if only_nan and not math.isnan(out[r, c]):
                    continue
                base = base0 + n
                if t0 == 1:
                    v = padded[base + of[0]]
                    if not math.isnan(v):
                        # photutils' conf_dist rule, as in walk().
                        out[r, c] = v
                        continue
                if oq[t] > kth[n]:
                    # Finished in step (the common case): no call, which
                    # costs more than the whole walk did.
                    if sw[n] > 0.0:
                        out[r, c] = min(max(swv[n] / sw[n], vmin[n]), vmax[n])
                    else:
                        out[r, c] = np.nan
                    continue
                value, done = _resume(
                    padded,
                    base,
                    oq,
                    of,
                    ow,
                    t,
                    m,
                    k,
                    int(cnt[n]),
                    kth[n],
                    sw[n],
                    swv[n],
                    vmin[n],
                    vmax[n],
                )
                if not done and near < max_dist:
                    if not built[o]:
                        full[o] = offset_table(oy, ox, by, bx, max_dist, pn, power, reg)
                        built[o] = True
                    fq, fflat, fw = full[o]
                    value, _ = walk(padded, base, fq, fflat, fw, k)
                out[r, c] = value

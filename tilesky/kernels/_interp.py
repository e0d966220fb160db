"""Mesh-to-image interpolation kernels: bounded IDW and cubic spline.

photutils 3.0 deprecates its background interpolators; these kernels give
the same results with a reach bounded enough for tiles.

Geometry (photutils' own): the image has shape ``(ny, nx)``, boxes are
``box_size = (by, bx)``, the mesh has shape ``(ceil(ny/by), ceil(nx/bx))`` and
mesh cell ``(j, i)`` is centred on pixel ``(j*by + (by-1)/2, i*bx + (bx-1)/2)``,
partial edge boxes included. Every kernel takes *global* offsets: ``mesh[0, 0]``
is global mesh cell ``mesh_offset`` and ``out[0, 0]`` is global pixel
``out_offset``, so the same call runs on the whole image (offsets 0) or on one
tile whose mesh block carries the halo given by the matching ``*_depth``
function (:func:`mesh_window` cuts that block).

IDW neighbours are canonical, hence tile-independent: the ``n_neighbors``
nearest valid (non-NaN) mesh cells within ``max_distance``, *all* cells tied at
the k-th distance included, summed in (distance, global mesh index) order. The
candidate list only depends on a pixel's position inside its box, so it is
built once per in-box offset and shared by every box; tiled and monolithic
results are then identical bit for bit. The compiled kernel walks the boxes of
a pixel row together (SIMD lanes), each with the per-pixel walk's own sums in
the same order, so it equals the one-pixel-at-a-time reference bit for bit.
"""

from __future__ import annotations

import math

import numba
import numpy as np
from scipy import ndimage, sparse

__all__ = [
    "fill_depth",
    "fill_mesh_nans",
    "idw_depth",
    "idw_interpolate",
    "mesh_window",
    "spline_depth",
    "spline_interpolate",
]

_Pair = int | tuple[int, int]

# Default IDW reach, in boxes (fill: mesh cells; image: pixels = this * box).
_DEFAULT_REACH_BOXES = 16.0

# Pole of the cubic B-spline prefilter (see spline_depth for the bound).
_SPLINE_POLE = 2.0 - math.sqrt(3.0)
_SPLINE_RTOL = 1e-12


def _pair(name: str, value, *, minimum: int) -> tuple[int, int]:
    arr = np.atleast_1d(np.asarray(value))
    if arr.size == 1:
        arr = np.repeat(arr, 2)
    if arr.shape != (2,) or not np.all(arr == np.round(arr)) or np.any(arr < minimum):
        msg = (
            f"{name} must be an integer or a pair of integers >= {minimum}, "
            f"got {value!r}; pass e.g. {name}=(6, 6)."
        )
        raise ValueError(msg)
    return int(arr[0]), int(arr[1])


def _as_mesh(mesh) -> np.ndarray:
    mesh = np.asarray(mesh)
    if mesh.ndim != 2:
        msg = f"mesh must be 2-D, got shape {mesh.shape}; pass the (ny, nx) mesh."
        raise ValueError(msg)
    return mesh


def _check_idw_params(n_neighbors, power, regularization, max_distance) -> None:
    if int(n_neighbors) != n_neighbors or n_neighbors < 1:
        msg = f"n_neighbors must be a positive integer, got {n_neighbors!r}."
        raise ValueError(msg)
    for name, value in (("power", power), ("regularization", regularization)):
        if not (np.isfinite(value) and value >= 0):
            msg = f"{name} must be finite and >= 0, got {value!r}."
            raise ValueError(msg)
    if not (np.isfinite(max_distance) and max_distance > 0):
        msg = (
            f"max_distance must be finite and > 0, got {max_distance!r}; it "
            "bounds the IDW search (pixels for images, cells for meshes)."
        )
        raise ValueError(msg)


def _idw_max_distance(max_distance, box_size) -> float:
    if max_distance is None:
        return _DEFAULT_REACH_BOXES * max(box_size)
    return float(max_distance)


def _reach_cells(max_distance: float, box: int) -> int:
    # |offset| of the farthest cell whose centre can lie within max_distance
    # of some pixel of a box: |dj|*box - (box-1)/2 <= max_distance.
    return math.floor((max_distance + 0.5 * (box - 1)) / box)


@numba.njit(cache=True, nogil=True)
def _offset_table(oy, ox, by, bx, radius, pn, power, reg):
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
def _walk(padded, base, tq, tflat, tw, k):
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


@numba.njit(cache=True, nogil=True)
def _idw_grid_reference(
    vals, mj0, mi0, out, y0, x0, by, bx, k, power, reg, max_dist, only_nan
):
    """Bounded, tie-inclusive IDW of mesh block ``vals`` onto ``out`` in place.

    One :func:`_walk` per pixel. The definition :func:`_idw_grid` must match
    bit for bit; kept for the tests and ``benchmarks/bench_idw.py`` only.
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
            nq, nflat, nw = _offset_table(oy, ox, by, bx, near, pn, power, reg)
            fq, fflat, fw = nq, nflat, nw
            built = False
            for r in range(r0, ny, by):
                jj = (y0 + r) // by - mj0 + hy
                for c in range(c0, nx, bx):
                    if only_nan and not math.isnan(out[r, c]):
                        continue
                    base = jj * pn + (x0 + c) // bx - mi0 + hx
                    value, done = _walk(padded, base, nq, nflat, nw, k)
                    if not done and near < max_dist:
                        # Same order, longer table: the walk is redone whole
                        # so the sum is the one a full-table walk gives.
                        if not built:
                            fq, fflat, fw = _offset_table(
                                oy, ox, by, bx, max_dist, pn, power, reg
                            )
                            built = True
                        value, _ = _walk(padded, base, fq, fflat, fw, k)
                    out[r, c] = value


# A row's lanes keep walking in step while more than 1/_RESUME_FRACTION of
# them still need cells, _RESUME_BATCH entries at a time, and the few left
# resume one by one: a lane step is far cheaper than a scalar one, but costs
# every lane. Fractions 4..16 and batches 1..4 timed alike (bench_idw.py).
_RESUME_FRACTION = 8
_RESUME_BATCH = 2


@numba.njit(cache=True, nogil=True)
def _offset_tables(by, bx, radius, pn, power, reg, k, need):
    """:func:`_offset_table` of each needed in-box offset, one row per offset.

    Row ``o = oy*bx + ox`` holds the table of length ``size[o]`` followed by
    ``inf`` distances, at least one, so ``tq[o, size[o]]`` is a sentinel.
    ``first[o]`` is 1 when entry 0 is the box's own centre (distance 0, which
    :func:`_walk` treats apart), else 0. ``stop[o]`` ends the tie group of the
    k-th entry from ``first[o]``: no walk can stop before it, so up to there a
    walk uses every valid cell it meets.
    """
    noff = by * bx
    empty = (np.empty(0), np.empty(0, np.int64), np.empty(0))
    tabs = [
        _offset_table(o // bx, o % bx, by, bx, radius, pn, power, reg)
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
    """:func:`_walk` from entry ``t > 0`` on, given its state at ``t``."""
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
    """One :func:`_walk` step (entry at distance² ``q``) for every lane."""
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
def _idw_grid(vals, mj0, mi0, out, y0, x0, by, bx, k, power, reg, max_dist, only_nan):
    """:func:`_idw_grid_reference`, bit for bit, many pixels at a time.

    The pixels of one output row at one in-box column offset (one per box)
    share a table and read consecutive mesh cells: entry ``t`` of lane ``n``
    is ``padded[base0 + n + tflat[t]]``. Their walks run in step over the
    lanes (SIMD), each lane with its own sums, in table order as in
    :func:`_walk`, so each sum is the reference's. Up to ``stop`` no lane can
    stop, so that stretch only skips NaN cells; lanes that met a NaN there
    walk on in step while many do, then one by one with :func:`_resume`; a
    lane that runs out of the short table is redone on the full one, as the
    reference does.
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
                        # photutils' conf_dist rule, as in _walk.
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
                        full[o] = _offset_table(
                            oy, ox, by, bx, max_dist, pn, power, reg
                        )
                        built[o] = True
                    fq, fflat, fw = full[o]
                    value, _ = _walk(padded, base, fq, fflat, fw, k)
                out[r, c] = value


def fill_depth(max_distance: float = _DEFAULT_REACH_BOXES) -> int:
    """Mesh halo (cells) that makes :func:`fill_mesh_nans` exact on a tile.

    A NaN cell only uses cells within ``max_distance`` cells, hence within
    ``floor(max_distance)`` rows and columns.

    Examples
    --------
    >>> fill_depth(2.5)
    2
    """
    _check_idw_params(1, 0.0, 0.0, max_distance)
    return math.floor(max_distance)


def fill_mesh_nans(
    mesh: np.ndarray,
    *,
    n_neighbors: int = 10,
    power: float = 1.0,
    regularization: float = 0.0,
    max_distance: float = _DEFAULT_REACH_BOXES,
) -> np.ndarray:
    """Fill the NaN cells of a mesh by bounded IDW of its valid cells.

    photutils' ``Background2D._interpolate_grid``, with a bounded, canonical
    neighbour set: distances are in mesh cells, neighbours are the
    ``n_neighbors`` nearest valid cells within ``max_distance`` cells, all
    cells tied with the k-th included; weights ``1/(d**power +
    regularization)``.

    Parameters
    ----------
    mesh : 2-D array
        Mesh values, NaN for excluded boxes.
    n_neighbors, power, regularization : int, float, float
        IDW parameters (photutils' defaults for ``_interpolate_grid``).
    max_distance : float
        Search radius in mesh cells; the tile halo is :func:`fill_depth`.

    Returns
    -------
    numpy.ndarray
        A copy of ``mesh`` (its float dtype, float64 otherwise) with NaN cells
        filled; cells with no valid cell within reach stay NaN.

    Notes
    -----
    On a tile, pass the mesh block with :func:`fill_depth` cells of halo and
    keep the interior: it equals the whole-mesh result bit for bit. It differs
    from photutils only where the k-th and (k+1)-th distances tie (photutils
    keeps an arbitrary k of them) or where fewer than ``n_neighbors`` valid
    cells lie within ``max_distance``.

    Examples
    --------
    >>> mesh = np.array([[1.0, np.nan, 3.0]])
    >>> fill_mesh_nans(mesh, n_neighbors=2).tolist()
    [[1.0, 2.0, 3.0]]
    """
    _check_idw_params(n_neighbors, power, regularization, max_distance)
    mesh = _as_mesh(mesh)
    dtype = mesh.dtype if mesh.dtype.kind == "f" else np.dtype(np.float64)
    vals = np.ascontiguousarray(mesh, dtype=np.float64)
    out = vals.copy()
    if np.isnan(vals).any():
        _idw_grid(
            vals,
            0,
            0,
            out,
            0,
            0,
            1,
            1,
            int(n_neighbors),
            float(power),
            float(regularization),
            float(max_distance),
            True,
        )
    return out.astype(dtype, copy=False)


def idw_depth(max_distance: float | None, box_size: _Pair) -> int:
    """Mesh halo (cells) that makes :func:`idw_interpolate` exact on a tile.

    The farthest useful cell from a box lies ``floor((max_distance +
    (b-1)/2) / b)`` cells away along an axis of box length ``b``; the larger
    of the two axes is returned.

    Examples
    --------
    >>> idw_depth(96.0, 6)
    16
    """
    by, bx = _pair("box_size", box_size, minimum=1)
    max_distance = _idw_max_distance(max_distance, (by, bx))
    _check_idw_params(1, 0.0, 0.0, max_distance)
    return max(_reach_cells(max_distance, by), _reach_cells(max_distance, bx))


def mesh_window(
    out_offset: tuple[int, int],
    out_shape: tuple[int, int],
    *,
    box_size: _Pair,
    depth: int,
    mesh_shape: tuple[int, int],
) -> tuple[slice, slice]:
    """Global mesh slices a tile needs: its boxes plus ``depth`` cells, clipped.

    Parameters
    ----------
    out_offset, out_shape : pair of int
        Global pixel offset and shape of the tile.
    box_size : int or pair of int
        Box size ``(by, bx)``.
    depth : int
        Mesh halo, e.g. :func:`idw_depth`, :func:`fill_depth` or
        :func:`spline_depth`.
    mesh_shape : pair of int
        Global mesh shape.

    Returns
    -------
    tuple of slice
        ``mesh[window]`` is the block to pass, with ``mesh_offset =
        (window[0].start, window[1].start)``.

    Examples
    --------
    >>> mesh_window((12, 0), (6, 5), box_size=6, depth=1, mesh_shape=(4, 3))
    (slice(1, 4, None), slice(0, 2, None))
    """
    box = _pair("box_size", box_size, minimum=1)
    window = []
    for o, n, b, g in zip(out_offset, out_shape, box, mesh_shape, strict=True):
        first, last = o // b, (o + max(n, 1) - 1) // b
        window.append(slice(max(first - depth, 0), min(last + depth + 1, g)))
    return tuple(window)


def _check_block(mesh, out_offset, out_shape, mesh_offset, box) -> None:
    for axis in range(2):
        first = out_offset[axis] // box[axis]
        last = (out_offset[axis] + max(out_shape[axis], 1) - 1) // box[axis]
        lo, hi = mesh_offset[axis], mesh_offset[axis] + mesh.shape[axis]
        if first < lo or last >= hi:
            msg = (
                f"mesh block covers cells [{lo}, {hi}) along axis {axis} but "
                f"the output needs [{first}, {last}]; cut the block with "
                "mesh_window() and pass its start as mesh_offset."
            )
            raise ValueError(msg)


def idw_interpolate(
    mesh: np.ndarray,
    *,
    box_size: _Pair,
    out_shape: tuple[int, int],
    out_offset: tuple[int, int] = (0, 0),
    mesh_offset: tuple[int, int] = (0, 0),
    n_neighbors: int = 10,
    power: float = 1.0,
    regularization: float = 0.0,
    max_distance: float | None = None,
) -> np.ndarray:
    """Interpolate the valid mesh cells to pixels by bounded IDW.

    photutils' ``BkgIDWInterpolator`` (Shepard IDW from the centres of the
    non-excluded meshes, weights ``1/(d**power + regularization)`` with ``d``
    in pixels), with the k nearest searched within ``max_distance`` pixels and
    ties at the k-th distance all included.

    Parameters
    ----------
    mesh : 2-D array
        Block of the global mesh whose ``[0, 0]`` is global cell
        ``mesh_offset``; NaN marks excluded cells (no data point there). As
        photutils does, pass the filled and filtered mesh with the excluded
        cells set back to NaN.
    box_size : int or pair of int
        Box size ``(by, bx)`` in pixels.
    out_shape : pair of int
        Shape of the output pixel block.
    out_offset, mesh_offset : pair of int
        Global pixel of ``out[0, 0]``; global mesh cell of ``mesh[0, 0]``.
    n_neighbors, power, regularization : int, float, float
        IDW parameters, photutils' names and meaning.
    max_distance : float, optional
        Search radius in **pixels**, between a pixel and a mesh-box centre.
        Default ``16 * max(box_size)``.

    Returns
    -------
    numpy.ndarray
        float32 of shape ``out_shape``; NaN where no valid cell is in reach.

    Notes
    -----
    Tile rule: the mesh block must hold the cells of the output's boxes plus
    :func:`idw_depth` cells around them (clipped at the mesh edge, see
    :func:`mesh_window`); the result then equals the whole-image one exactly.
    A pixel on a mesh centre takes that cell's value (photutils' ``conf_dist``
    rule). The result differs from photutils only where the k-th and (k+1)-th
    distances tie (photutils keeps an arbitrary k of them) or where fewer than
    ``n_neighbors`` valid cells lie within ``max_distance``. Work is about
    ``n_neighbors`` steps per pixel.

    Examples
    --------
    Row 1 of an image with 3x3 boxes passes through both mesh centres:

    >>> mesh = np.array([[1.0, 3.0]])
    >>> idw_interpolate(mesh, box_size=3, out_shape=(1, 6), out_offset=(1, 0),
    ...                 n_neighbors=2)
    array([[1.4      , 1.       , 1.6666666, 2.3333333, 3.       , 2.6      ]],
          dtype=float32)
    """
    box = _pair("box_size", box_size, minimum=1)
    out_shape = _pair("out_shape", out_shape, minimum=0)
    out_offset = _pair("out_offset", out_offset, minimum=0)
    mesh_offset = _pair("mesh_offset", mesh_offset, minimum=0)
    max_distance = _idw_max_distance(max_distance, box)
    _check_idw_params(n_neighbors, power, regularization, max_distance)
    mesh = _as_mesh(mesh)
    _check_block(mesh, out_offset, out_shape, mesh_offset, box)
    out = np.empty(out_shape, dtype=np.float32)
    if out.size:
        _idw_grid(
            np.ascontiguousarray(mesh, dtype=np.float64),
            mesh_offset[0],
            mesh_offset[1],
            out,
            out_offset[0],
            out_offset[1],
            box[0],
            box[1],
            int(n_neighbors),
            float(power),
            float(regularization),
            float(max_distance),
            False,
        )
    return out


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
    box_size: _Pair,
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
        :func:`fill_mesh_nans` first); ``mesh[0, 0]`` is cell ``mesh_offset``.
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
    Tile rule: the block must hold the output's boxes plus
    :func:`spline_depth` cells (clipped at the mesh edge, see
    :func:`mesh_window`). Along an axis the block covers entirely (always, for
    meshes of up to ``spline_depth() + 1`` cells) the coefficients are
    scipy's, as in zoom. Otherwise the block is extended by 'reflect' beyond
    the global edge and its other borders are a truncation whose error at the
    output is below ``1e-12 * ptp(mesh)``; tiled therefore equals monolithic
    within float32 rounding. Evaluation is separable (two sparse products with
    four B-spline weights per output row and column), in float64.

    Examples
    --------
    >>> mesh = np.array([[0.0, 1.0], [2.0, 3.0]])
    >>> out = spline_interpolate(mesh, box_size=2, out_shape=(4, 4),
    ...                          mesh_global_shape=(2, 2), clip_range=(0, 3))
    >>> out.shape, out.dtype.name, float(out[0, 0]), float(out[-1, -1])
    ((4, 4), 'float32', 0.0, 3.0)
    """
    box = _pair("box_size", box_size, minimum=1)
    out_shape = _pair("out_shape", out_shape, minimum=0)
    out_offset = _pair("out_offset", out_offset, minimum=0)
    mesh_offset = _pair("mesh_offset", mesh_offset, minimum=0)
    gshape = _pair("mesh_global_shape", mesh_global_shape, minimum=1)
    mesh = _as_mesh(mesh)
    _check_block(mesh, out_offset, out_shape, mesh_offset, box)
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

"""SExtractor's background algorithm, as SEP implements it, in compiled kernels.

Facts taken from SEP's ``src/background.c`` (the SExtractor code SEP keeps),
re-implemented here; the arithmetic keeps SEP's float32/float64 split so the
maps agree with ``sep.Background`` to float32 rounding:

- per mesh: mean and standard deviation of the usable pixels; fewer than half
  the box usable: the mesh is bad. Pixels within mean +- 2 sigma give a
  second mean and sigma, which set a histogram of
  ``min(int(sqrt(2/pi) * 5 / 4 * n + 1), 4096)`` bins spanning mean +- 5 sigma;
- on the histogram, up to 100 rounds of 3-sigma clipping about the median
  (median interpolated inside its bin) until sigma moves by less than 1e-4
  (relative) or drops below 0.1 bin; the background is the mode
  ``2.5 median - 1.5 mean`` when ``|mean - median| < 0.3 sigma``, else the
  median; the RMS is the clipped sigma;
- bad meshes take the average of all the nearest good meshes (ties
  averaged); then a median filter whose window shrinks symmetrically at the
  grid edges replaces a mesh (background and RMS together) when
  ``|median - value| >= filter_threshold``;
- pixels: natural cubic splines through the mesh centres, along y for every
  mesh column (second derivatives precomputed), then along x through the
  row of y-interpolated nodes; pixels outside the outer centres extrapolate
  the outer segment.

Masked pixels are True in ``mask``; NaN pixels are unusable too.
"""

from __future__ import annotations

import math

import numba
import numpy as np

__all__ = [
    "fill_and_filter",
    "mesh_stats",
    "spline_rows",
    "x_geometry",
    "y_derivatives",
]

_F = np.float32
_NSIGMA = 5.0
_MAX_LEVELS = 4096
_MIN_MODE_PIXELS = 4.0
_BAD = -1e30


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _mesh_moments(block, mask, y0, y1, x0, x1, lo, hi, use_cuts):
    """Count, mean and sigma (float64) of the usable pixels in a mesh."""
    total = 0.0
    total_sq = 0.0
    n = 0
    for y in range(y0, y1):
        for x in range(x0, x1):
            if mask[y, x]:
                continue
            pix = np.float64(block[y, x])
            if use_cuts:
                if not (pix <= hi and pix >= lo):
                    continue
            elif not pix > _BAD:
                continue
            total += pix
            total_sq += pix * pix
            n += 1
    mean = total / n
    var = total_sq / n - mean * mean
    sigma = math.sqrt(var) if var > 0.0 else 0.0
    return n, mean, sigma


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _histogram_guess(histo, nlevels, qzero, qscale, start_mean):
    """SExtractor's clipped mode and sigma of one mesh's histogram."""
    hcut = nlevels - 1
    top = nlevels - 1
    lcut = 0
    sig = 10.0 * top
    sig1 = 1.0
    mea = start_mean
    med = start_mean
    rounds = 100
    while True:
        rounds -= 1
        if rounds < 0 or not (sig >= 0.1) or not (abs(sig / sig1 - 1.0) > 1e-4):
            break
        sig1 = sig
        total = 0
        mea = 0.0
        sig = 0.0
        lowsum = 0
        highsum = 0
        ilow = lcut
        ihigh = hcut
        for i in range(lcut, hcut + 1):
            if lowsum < highsum:
                lowsum += histo[ilow]
                ilow += 1
            else:
                highsum += histo[ihigh]
                ihigh -= 1
            count = histo[i]
            total += count
            weighted = np.float64(count) * i
            mea += weighted
            sig += weighted * i
        if ihigh >= 0:
            peak = max(histo[ilow], histo[ihigh])
            med = ihigh + 0.5 + (np.float64(highsum) - lowsum) / (2.0 * peak)
        else:
            med = 0.0
        if total:
            mea /= np.float64(total)
            sig = sig / total - mea * mea
        sig = math.sqrt(sig) if sig > 0.0 else 0.0
        f = med - 3.0 * sig
        lcut = int(f + 0.5) if f > 0.0 else 0
        f = med + 3.0 * sig
        if f < top:
            lcut_hi = int(f + 0.5) if f > 0.0 else int(f - 0.5)
            hcut = lcut_hi
        else:
            hcut = top
    qz = np.float64(qzero)
    qs = np.float64(qscale)
    if abs(sig) > 0.0:
        if abs((mea - med) / sig) < 0.3:
            back = qz + (2.5 * med - 1.5 * mea) * qs
        else:
            back = qz + med * qs
    else:
        back = qz + mea * qs
    return _F(back), _F(sig * qs)


@numba.njit(cache=True, nogil=True, error_model="numpy")
def mesh_stats(block, mask, bh, bw):
    """Background and sigma of every mesh of ``block`` (bad meshes: -1e30).

    ``block`` starts on the mesh grid; its last row/column of meshes may be
    partial (the image edge), as in SExtractor.
    """
    ny, nx = block.shape
    mny = (ny - 1) // bh + 1
    mnx = (nx - 1) // bw + 1
    back = np.empty((mny, mnx), np.float32)
    sigma = np.empty((mny, mnx), np.float32)
    step = math.sqrt(2.0 / math.pi) * _NSIGMA / _MIN_MODE_PIXELS
    for j in range(mny):
        y0 = j * bh
        y1 = min(y0 + bh, ny)
        for i in range(mnx):
            x0 = i * bw
            x1 = min(x0 + bw, nx)
            n, mean, sig = _mesh_moments(block, mask, y0, y1, x0, x1, 0.0, 0.0, False)
            if np.float32(n) < np.float32((x1 - x0) * (y1 - y0) * 0.5):
                back[j, i] = _BAD
                sigma[j, i] = _BAD
                continue
            lo = np.float64(np.float32(mean - 2.0 * sig))
            hi = np.float64(np.float32(mean + 2.0 * sig))
            n, mean, sig = _mesh_moments(block, mask, y0, y1, x0, x1, lo, hi, True)
            nlevels = min(int(step * n + 1), _MAX_LEVELS)
            qscale = _F(2 * _NSIGMA * sig / nlevels) if sig > 0.0 else _F(1.0)
            qzero = _F(mean - _NSIGMA * sig)
            cste = _F(0.499999 - np.float64(qzero / qscale))
            histo = np.zeros(nlevels, np.int64)
            for y in range(y0, y1):
                for x in range(x0, x1):
                    if mask[y, x]:
                        continue
                    v = block[y, x] / qscale + cste
                    if not (v > -(2.0**31) and v < 2.0**31):
                        continue  # NaN or far out
                    b = int(v)  # C's truncation toward zero
                    if b >= 0 and b < nlevels:
                        histo[b] += 1
            back[j, i], sigma[j, i] = _histogram_guess(
                histo, nlevels, qzero, qscale, _F(mean)
            )
    return back, sigma


@numba.njit(cache=True, nogil=True)
def _median(values):
    s = np.sort(values)
    n = s.size
    if n < 2:
        return s[0]
    if n & 1:
        return s[n // 2]
    return (s[n // 2 - 1] + s[n // 2]) / _F(2.0)


@numba.njit(cache=True, nogil=True)
def fill_and_filter(back, sigma, fh, fw, fthresh):
    """Fill bad meshes from their nearest good ones, then median-filter.

    Returns new ``(back, sigma)`` float32 grids; all-bad grids give 0 and 1.
    """
    ny, nx = back.shape
    b = back.copy()
    s = sigma.copy()
    for py in range(ny):
        for px in range(nx):
            if back[py, px] > _BAD:
                continue
            d2min = _F(1e30)
            val = _F(0.0)
            sval = _F(0.0)
            nmin = 0
            for y in range(ny):
                for x in range(nx):
                    if back[y, x] > _BAD:
                        d2 = _F((x - px) * (x - px) + (y - py) * (y - py))
                        if d2 < d2min:
                            val = back[y, x]
                            sval = sigma[y, x]
                            nmin = 1
                            d2min = d2
                        elif d2 == d2min:
                            val += back[y, x]
                            sval += sigma[y, x]
                            nmin += 1
            b[py, px] = val / _F(nmin) if nmin else _F(0.0)
            s[py, px] = sval / _F(nmin) if nmin else _F(1.0)
    out_b = b.copy()
    out_s = s.copy()
    hy = fh // 2
    hx = fw // 2
    for py in range(ny):
        ry = min(hy, ny - py - 1, py)
        for px in range(nx):
            rx = min(hx, nx - px - 1, px)
            wb = b[py - ry : py + ry + 1, px - rx : px + rx + 1].copy().ravel()
            med = _median(wb)
            if abs(med - b[py, px]) >= fthresh:
                ws = s[py - ry : py + ry + 1, px - rx : px + rx + 1].copy().ravel()
                out_b[py, px] = med
                out_s[py, px] = _median(ws)
    return out_b, out_s


@numba.njit(cache=True, nogil=True)
def _spline_second(values, out):
    """Natural-spline second derivatives (divided by 6) of equally spaced nodes."""
    n = values.size
    out[0] = 0.0
    if n < 2:
        return
    u = np.zeros(max(n - 1, 1), np.float32)
    for k in range(1, n - 1):
        temp = _F(-1.0) / (out[k - 1] + _F(4.0))
        out[k] = temp
        temp *= u[k - 1] - _F(6.0) * (
            values[k + 1] + values[k - 1] - _F(2.0) * values[k]
        )
        u[k] = temp
    out[n - 1] = 0.0
    for k in range(n - 2, 0, -1):
        out[k] = (out[k] * out[k + 1] + u[k]) / _F(6.0)


@numba.njit(cache=True, nogil=True)
def y_derivatives(grid):
    """Second derivatives along y of every mesh column (SEP's ``dback``)."""
    ny, nx = grid.shape
    d = np.zeros((ny, nx), np.float32)
    column = np.empty(ny, np.float32)
    dcol = np.empty(ny, np.float32)
    for x in range(nx):
        for y in range(ny):
            column[y] = grid[y, x]
        if ny > 1:
            _spline_second(column, dcol)
        else:
            dcol[0] = 0.0
        for y in range(ny):
            d[y, x] = dcol[y]
    return d


@numba.njit(cache=True, nogil=True)
def x_geometry(width, bw, nbx):
    """Left node and offset of every pixel column, as SEP's row loop steps them."""
    lo = np.zeros(width, np.int64)
    dxs = np.zeros(width, np.float32)
    xstep = _F(1.0) / _F(bw)
    change = bw // 2
    dx = (xstep - _F(1.0)) / _F(2.0)
    dx0 = _F((bw + 1) % 2) * xstep / _F(2.0)
    left = 0
    x = 0
    i = 0
    for p in range(width):
        if i == change and x > 0 and x < nbx - 1:
            left += 1
            dx = dx0
        lo[p] = left
        dxs[p] = dx
        if i == bw:
            x += 1
            i = 0
        i += 1
        dx += xstep
    return lo, dxs


@numba.njit(cache=True, nogil=True)
def spline_rows(grid, dgrid, bh, row0, nrows, lo, dxs):
    """Bicubic-spline values of rows ``row0:row0+nrows`` at columns ``lo``/``dxs``."""
    nby, nbx = grid.shape
    ncols = lo.size
    out = np.empty((nrows, ncols), np.float32)
    node = np.empty(nbx, np.float32)
    dnode = np.zeros(nbx, np.float32)
    for r in range(nrows):
        y = row0 + r
        if nby > 1:
            dy = _F(np.float64(_F(y) / _F(bh)) - 0.5)
            yl = int(dy)
            dy -= _F(yl)
            if yl >= nby - 1:
                yl = nby - 2
                dy += _F(1.0)
            cdy = _F(1.0) - dy
            dy3 = dy * dy * dy - dy
            cdy3 = cdy * cdy * cdy - cdy
            for x in range(nbx):
                node[x] = (
                    cdy * grid[yl, x]
                    + dy * grid[yl + 1, x]
                    + cdy3 * dgrid[yl, x]
                    + dy3 * dgrid[yl + 1, x]
                )
            if nbx > 1:
                _spline_second(node, dnode)
        else:
            for x in range(nbx):
                node[x] = grid[0, x]
                dnode[x] = dgrid[0, x]
        if nbx > 1:
            for c in range(ncols):
                k = lo[c]
                dx = dxs[c]
                cdx = _F(1.0) - dx
                out[r, c] = cdx * (node[k] + (cdx * cdx - _F(1.0)) * dnode[k]) + dx * (
                    node[k + 1] + (dx * dx - _F(1.0)) * dnode[k + 1]
                )
        else:
            for c in range(ncols):
                out[r, c] = node[0]
    return out

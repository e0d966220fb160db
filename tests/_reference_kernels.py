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

from tilesky.kernels._idw_walk import offset_table, walk

__all__ = ["idw_grid_reference"]


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

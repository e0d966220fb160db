"""Pixels of one tile: the compiled blemish and source renderers, the noise."""

from __future__ import annotations

import math
from decimal import Decimal, localcontext

import numba
import numpy as np

from tilesky.simulate._model import _SceneModel
from tilesky.simulate._spec import _NOISE_STREAM, NOISE_BLOCK


def _pio2_parts() -> tuple[float, float, float]:
    # pi/2 split into 32-bit heads so that k * head is exact for |k| < 2**21
    # (Cody-Waite reduction); the blemish arguments stay below 2e6 < 2**21 * pi/2.
    with localcontext() as ctx:
        ctx.prec = 60
        pio2 = Decimal("3.14159265358979323846264338327950288419716939937510582") / 2

        def head(x: float) -> float:
            m, e = math.frexp(x)
            return math.ldexp(math.floor(m * 2.0**32) / 2.0**32, e)

        h1 = head(float(pio2))
        h2 = head(float(pio2 - Decimal(h1)))
        return h1, h2, float(pio2 - Decimal(h1) - Decimal(h2))


_PIO2_1, _PIO2_2, _PIO2_3 = _pio2_parts()
_TWO_OVER_PI = 2.0 / math.pi
# Taylor coefficients: on |r| <= pi/4 the truncation error is below 1e-19.
_S1, _S2, _S3, _S4, _S5, _S6, _S7, _S8 = (
    (-1) ** n / math.factorial(2 * n + 1) for n in range(1, 9)
)
_C1, _C2, _C3, _C4, _C5, _C6, _C7, _C8, _C9 = (
    (-1) ** n / math.factorial(2 * n) for n in range(1, 10)
)


@numba.njit(inline="always")
def _sin(t):
    # Branch-free arithmetic sin (no libm call), so the blemish loop vectorises
    # and every lane and remainder iteration rounds identically.
    k = math.floor(t * _TWO_OVER_PI + 0.5)
    r = ((t - k * _PIO2_1) - k * _PIO2_2) - k * _PIO2_3
    z = r * r
    ps = z * (_S5 + z * (_S6 + z * (_S7 + z * _S8)))
    ps = r + r * (z * (_S1 + z * (_S2 + z * (_S3 + z * (_S4 + ps)))))
    pc = z * (_C5 + z * (_C6 + z * (_C7 + z * (_C8 + z * _C9))))
    pc = 1.0 + z * (_C1 + z * (_C2 + z * (_C3 + z * (_C4 + pc))))
    q = k - 4.0 * math.floor(k * 0.25)
    odd = q - 2.0 * math.floor(q * 0.5)
    return (ps * (1.0 - odd) + pc * odd) * (1.0 - 2.0 * math.floor(q * 0.5))


@numba.njit(cache=True, nogil=True)
def _add_blemishes(out, y0, x0, cx, cy, width, amp, r0, r1):
    ny, nx = out.shape
    inv_span = 1.0 / (r1 - r0)
    for i in range(ny):
        row = out[i]
        for k in range(cx.size):
            dy = float(y0 + i) - cy[k]
            rem = r1 * r1 - dy * dy
            if rem <= 0.0:
                continue
            half = math.sqrt(rem)
            j0 = max(math.floor(cx[k] - half) - x0, 0)
            j1 = min(math.ceil(cx[k] + half) - x0 + 1, nx)
            if j1 <= j0:
                continue
            ck, wk, ak = cx[k], width[k], amp[k]
            # A slice with a zero-based index lets LLVM vectorise the loop;
            # dx still comes from the global column so rounding is tile-free.
            seg, base = row[j0:j1], x0 + j0
            for m in range(seg.size):
                dx = float(base + m) - ck
                r = math.sqrt(dx * dx + dy * dy)
                t = r / wk
                s = _sin(t) / t if t != 0.0 else 1.0
                u = min(max((r - r0) * inv_span, 0.0), 1.0)
                seg[m] += ak * s * (1.0 - u * u * u * (10.0 + u * (6.0 * u - 15.0)))


@numba.njit(cache=True, nogil=True)
def _add_sources(out, y0, x0, xm, ym, amp, ca, cb, cc, ix, iy, scratch):
    ny, nx = out.shape
    for k in range(xm.size):
        a0, a1 = max(iy[k, 0], y0), min(iy[k, 1], y0 + ny - 1)
        b0, b1 = max(ix[k, 0], x0), min(ix[k, 1], x0 + nx - 1)
        if a0 > a1 or b0 > b1:
            continue
        for yy in range(a0, a1 + 1):
            dy = float(yy) - ym[k]
            # The whole footprint row is evaluated whatever the tile, so the
            # vector/remainder split of the exp loop never depends on chunking.
            for m in range(ix[k, 1] - ix[k, 0] + 1):
                dx = float(ix[k, 0] + m) - xm[k]
                q = ca[k] * dx * dx + cb[k] * dx * dy + cc[k] * dy * dy
                scratch[m] = amp[k] * math.exp(-q)
            row = out[yy - y0]
            for xx in range(b0, b1 + 1):
                row[xx - x0] += scratch[xx - ix[k, 0]]


def _noise_tile(model: _SceneModel, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    noise = np.empty((y1 - y0, x1 - x0))
    b = NOISE_BLOCK
    for by in range(y0 // b, (y1 - 1) // b + 1):
        for bx in range(x0 // b, (x1 - 1) // b + 1):
            seq = np.random.SeedSequence(
                model.spec.seed, spawn_key=(_NOISE_STREAM, by, bx)
            )
            block = np.random.default_rng(seq).standard_normal((b, b))
            ya, yb = max(y0, by * b), min(y1, (by + 1) * b)
            xa, xb = max(x0, bx * b), min(x1, (bx + 1) * b)
            noise[ya - y0 : yb - y0, xa - x0 : xb - x0] = block[
                ya - by * b : yb - by * b, xa - bx * b : xb - bx * b
            ]
    noise *= model.sigma_x[x0:x1]
    return noise


def _render_tile(model: _SceneModel, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    """Float32 stack (scene, truth, sky) of one tile, computed in float64."""
    spec = model.spec
    ny, nx = spec.shape
    rows = np.arange(y0, y1, dtype=np.float64)[:, None]
    cols = np.arange(x0, x1, dtype=np.float64)[None, :]
    truth = np.zeros((y1 - y0, x1 - x0))
    sel = model.tile_blemishes(y0, y1, x0, x1)
    if sel.any():
        bl = {k: np.ascontiguousarray(v[sel]) for k, v in model.blemishes.items()}
        r0 = spec.blemish_radius
        _add_blemishes(
            truth,
            y0,
            x0,
            bl["blemish_x"],
            bl["blemish_y"],
            bl["blemish_width"],
            bl["blemish_amplitude"],
            r0,
            r0 + spec.blemish_taper,
        )
    gy, gx = spec.gradient
    truth += (gy * rows) / ny + (gx * cols) / nx
    out = np.empty((3, y1 - y0, x1 - x0), dtype=np.float32)
    out[1] = truth
    if spec.noise_sigma > 0:
        truth += _noise_tile(model, y0, y1, x0, x1)
    sky = truth
    idx = model.tile_sources(y0, y1, x0, x1)
    source_img = np.zeros_like(sky)
    if idx.size:
        ix, iy = model.footprint(idx)
        _add_sources(
            source_img,
            y0,
            x0,
            model.sources["x_mean"][idx],
            model.sources["y_mean"][idx],
            model.amp[idx],
            model.ca[idx],
            model.cb[idx],
            model.cc[idx],
            ix,
            iy,
            np.empty(int((ix[:, 1] - ix[:, 0]).max()) + 1),
        )
    source_img += sky
    out[0], out[2] = source_img, sky
    if model.blank is not None:
        cx, cy, c, s, hu, hv = model.blank
        u = (cols - cx) * c + (rows - cy) * s
        v = (rows - cy) * c - (cols - cx) * s
        outside = (np.abs(u) > hu) | (np.abs(v) > hv)
        out[0][outside] = np.nan
        out[2][outside] = np.nan
    return out

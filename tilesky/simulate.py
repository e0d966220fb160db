"""The reference notebook's pathological scene, generated lazily at any size.

The scene is a gradient, sinc-function blemishes, Gaussian noise and elliptical
Gaussian sources (``complex_background_notebook``, "Create the nasty sky
background" and "Add some random sources"). Pixels are produced tile by tile in
a dask graph and depend only on the seed and the image shape, never on the
chunking: the same seed gives bit-identical pixels for any chunks.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass, fields
from decimal import Decimal, localcontext
from typing import Any

import dask.array as da
import fsspec
import numba
import numpy as np
import xarray as xr
from dask.base import tokenize
from dask.highlevelgraph import HighLevelGraph

from tilesky._version import __version__

__all__ = ["GENERATOR_VERSION", "NOISE_BLOCK", "simulate_scene", "write_simulation"]

#: Bumped whenever the pixels produced for a given seed and shape change.
GENERATOR_VERSION = 1
#: Side of the fixed global noise block grid; each block has its own seed.
NOISE_BLOCK = 512
_SOURCE_BIN = 256
# The notebook's densities: 5000 sources and 16 blemishes per 2000 x 2000 pixels.
_REF_PIXELS = 2000 * 2000
_REF_SOURCES = 5000
_REF_BLEMISHES = 16
_SOURCE_STREAM = 1
_NOISE_STREAM = 2


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


@dataclass(frozen=True)
class _SceneSpec:
    shape: tuple[int, int]
    seed: int
    noise_sigma: float
    n_sources: int
    n_blemishes: int
    gradient: tuple[float, float]
    blemish_width_range: tuple[float, float]
    blemish_amplitude_range: tuple[float, float]
    blemish_radius: float
    blemish_taper: float
    source_flux_range: tuple[float, float]
    source_stddev_range: tuple[float, float]
    source_edge: float
    source_truncate: float
    depth_variation: float
    blank_fraction: float
    blank_angle: float


def _clip_area(poly: np.ndarray, nx: int, ny: int) -> float:
    # Sutherland-Hodgman clip of a convex polygon by the image, then shoelace.
    pts = [tuple(p) for p in poly]
    for axis, bound, keep_below in (
        (0, -0.5, False),
        (0, nx - 0.5, True),
        (1, -0.5, False),
        (1, ny - 0.5, True),
    ):
        res = []
        for p, q in zip(pts, pts[1:] + pts[:1], strict=True):
            p_in = (p[axis] <= bound) if keep_below else (p[axis] >= bound)
            q_in = (q[axis] <= bound) if keep_below else (q[axis] >= bound)
            if p_in:
                res.append(p)
            if p_in != q_in:
                f = (bound - p[axis]) / (q[axis] - p[axis])
                res.append((p[0] + f * (q[0] - p[0]), p[1] + f * (q[1] - p[1])))
        pts = res
        if not pts:
            return 0.0
    x, y = np.array(pts).T
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def _blank_geometry(spec: _SceneSpec) -> tuple[float, ...] | None:
    """Rotated rectangle (cx, cy, cos, sin, hu, hv) leaving ``blank_fraction`` out."""
    if spec.blank_fraction == 0.0:
        return None
    ny, nx = spec.shape
    cx, cy = (nx - 1) / 2, (ny - 1) / 2
    c, s = (
        math.cos(math.radians(spec.blank_angle)),
        math.sin(math.radians(spec.blank_angle)),
    )
    target = (1.0 - spec.blank_fraction) * nx * ny

    def area(scale: float) -> float:
        hu, hv = scale * nx / 2, scale * ny / 2
        corners = [(-hu, -hv), (hu, -hv), (hu, hv), (-hu, hv)]
        poly = np.array([(cx + u * c - v * s, cy + u * s + v * c) for u, v in corners])
        return _clip_area(poly, nx, ny)

    lo, hi = 0.0, 1.0
    while area(hi) < target:
        lo, hi = hi, 2.0 * hi
    for _ in range(80):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if area(mid) < target else (lo, mid)
    scale = 0.5 * (lo + hi)
    return cx, cy, c, s, scale * nx / 2, scale * ny / 2


def _draw_catalogues(spec: _SceneSpec) -> tuple[dict, dict]:
    """Blemish and source catalogues drawn from the seed (no pixel work)."""
    ny, nx = spec.shape
    # Legacy stream in the notebook's draw order: with the notebook's size and
    # count the blemishes are exactly the notebook's (seed 4).
    rs = np.random.RandomState(spec.seed)
    nb = spec.n_blemishes
    (wlo, whi), (alo, ahi) = spec.blemish_width_range, spec.blemish_amplitude_range
    by, bx = ny * rs.random_sample(nb), nx * rs.random_sample(nb)
    blemishes = {
        "blemish_x": bx,
        "blemish_y": by,
        "blemish_width": wlo + (whi - wlo) * rs.random_sample(nb),
        "blemish_amplitude": alo + (ahi - alo) * rs.random_sample(nb),
    }
    rng = np.random.default_rng(
        np.random.SeedSequence(spec.seed, spawn_key=(_SOURCE_STREAM,))
    )
    n, e = spec.n_sources, spec.source_edge
    (flo, fhi), (slo, shi) = spec.source_flux_range, spec.source_stddev_range
    sources = {
        "x_mean": e + (nx - 2 * e) * rng.random(n),
        "y_mean": e + (ny - 2 * e) * rng.random(n),
        "flux": flo + (fhi - flo) * rng.random(n),
        "x_stddev": slo + (shi - slo) * rng.random(n),
        "y_stddev": slo + (shi - slo) * rng.random(n),
        "theta": np.pi * rng.random(n),
    }
    sources["re"] = np.sqrt(sources["x_stddev"] * sources["y_stddev"])
    return blemishes, sources


def _sigma_profile(spec: _SceneSpec) -> np.ndarray:
    """Noise sigma of each column, computed once for the whole width."""
    nx = spec.shape[1]
    u = np.arange(nx) / max(nx - 1, 1)
    return spec.noise_sigma * np.power(spec.depth_variation, u)


class _SceneModel:
    """Catalogues, per-source Gaussian coefficients and a spatial source index.

    Derived quantities are computed once for the whole catalogue, never per
    tile, so every tile sees the very same float64 values.
    """

    def __init__(self, spec: _SceneSpec) -> None:
        self.spec = spec
        ny, nx = spec.shape
        self.blemishes, self.sources = _draw_catalogues(spec)
        src = self.sources
        sx, sy, th = src["x_stddev"], src["y_stddev"], src["theta"]
        # A zero stddev (probability 2**-53 per draw) would be a delta of
        # infinite amplitude; such a source contributes nothing.
        ok = (sx > 0) & (sy > 0)
        ivx, ivy = 1.0 / np.where(ok, sx, 1.0) ** 2, 1.0 / np.where(ok, sy, 1.0) ** 2
        cos2, sin2, sin2t = np.cos(th) ** 2, np.sin(th) ** 2, np.sin(2 * th)
        self.amp = np.where(ok, src["flux"] / (2 * np.pi * np.where(ok, sx * sy, 1)), 0)
        self.ca = 0.5 * (cos2 * ivx + sin2 * ivy)
        self.cb = 0.5 * sin2t * (ivx - ivy)
        self.cc = 0.5 * (sin2 * ivx + cos2 * ivy)
        # Outside `half` the profile is below amp * exp(-source_truncate**2 / 2).
        self.half = np.maximum(spec.source_truncate * np.maximum(sx, sy), 1.5)
        self.half_max = float(self.half.max()) if self.half.size else 0.0
        self.nby, self.nbx = -(-ny // _SOURCE_BIN), -(-nx // _SOURCE_BIN)
        ybin = np.clip(src["y_mean"] // _SOURCE_BIN, 0, self.nby - 1).astype(np.int64)
        xbin = np.clip(src["x_mean"] // _SOURCE_BIN, 0, self.nbx - 1).astype(np.int64)
        key = ybin * self.nbx + xbin
        # Stable sort: inside a bin sources stay in catalogue order.
        self.order = np.argsort(key, kind="stable")
        self.bin_start = np.searchsorted(
            key[self.order], np.arange(self.nby * self.nbx + 1)
        )
        self.sigma_x = _sigma_profile(spec)
        self.blank = _blank_geometry(spec)

    def footprint(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Inclusive pixel ranges ``(ix, iy)``, shape (n, 2), of sources ``idx``."""
        h = self.half[idx]
        xm, ym = self.sources["x_mean"][idx], self.sources["y_mean"][idx]
        ix = np.stack([np.ceil(xm - h), np.floor(xm + h)], 1).astype(np.int64)
        iy = np.stack([np.ceil(ym - h), np.floor(ym + h)], 1).astype(np.int64)
        return ix, iy

    def tile_sources(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """Catalogue indices, ascending, of sources whose footprint meets the tile."""
        h, b, nbx = self.half_max, _SOURCE_BIN, self.nbx
        r0, r1 = max(int((y0 - h) // b), 0), min(int((y1 - 1 + h) // b), self.nby - 1)
        c0, c1 = max(int((x0 - h) // b), 0), min(int((x1 - 1 + h) // b), nbx - 1)
        starts = self.bin_start[np.arange(r0, r1 + 1) * nbx + c0]
        stops = self.bin_start[np.arange(r0, r1 + 1) * nbx + c1 + 1]
        parts = [self.order[i:j] for i, j in zip(starts, stops, strict=True)]
        idx = np.concatenate(parts) if parts else np.empty(0, np.int64)
        ix, iy = self.footprint(idx)
        hit = (ix[:, 0] < x1) & (ix[:, 1] >= x0) & (iy[:, 0] < y1) & (iy[:, 1] >= y0)
        return np.sort(idx[hit])

    def tile_blemishes(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """Mask of the blemishes whose tapered support reaches the tile."""
        bx, by = self.blemishes["blemish_x"], self.blemishes["blemish_y"]
        dx = np.maximum(np.maximum(x0 - bx, bx - (x1 - 1)), 0.0)
        dy = np.maximum(np.maximum(y0 - by, by - (y1 - 1)), 0.0)
        reach = self.spec.blemish_radius + self.spec.blemish_taper
        return dx * dx + dy * dy < reach * reach


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


def _pair(value: Any, name: str) -> tuple[float, float]:
    lo, hi = (float(v) for v in value)
    if not (math.isfinite(lo) and math.isfinite(hi) and 0 <= lo <= hi):
        msg = f"{name} must be a (low, high) pair with 0 <= low <= high, got {value!r}"
        raise ValueError(msg)
    return lo, hi


def _make_spec(**kw: Any) -> _SceneSpec:
    """Validate `simulate_scene` keywords (all but ``chunks``) into a spec."""
    shape = kw["shape"]
    shape_t = tuple(int(s) for s in np.atleast_1d(shape))
    if len(shape_t) != 2 or min(shape_t) < 1:
        msg = f"shape must be two positive sizes (ny, nx), got {shape!r}"
        raise ValueError(msg)
    area = shape_t[0] * shape_t[1] / _REF_PIXELS
    if kw["n_sources"] is None:
        kw["n_sources"] = math.floor(_REF_SOURCES * area + 0.5)
    if kw["n_blemishes"] is None:
        kw["n_blemishes"] = math.floor(_REF_BLEMISHES * area + 0.5)
    seed = kw["seed"]
    checks = {
        "seed": (
            isinstance(seed, int | np.integer) and 0 <= seed < 2**32,
            "an integer in [0, 2**32)",
        ),
        "noise_sigma": (kw["noise_sigma"] >= 0, ">= 0 (0 for a noiseless sky)"),
        "blemish_radius": (0 < kw["blemish_radius"] < 1e6, "in (0, 1e6) pixels"),
        "blemish_taper": (0 < kw["blemish_taper"] < 1e6, "in (0, 1e6) pixels"),
        "source_truncate": (kw["source_truncate"] >= 3, ">= 3 (sigmas), e.g. 8"),
        "source_edge": (
            0 <= 2 * kw["source_edge"] < min(shape_t),
            "in [0, min(shape) / 2)",
        ),
        "depth_variation": (0 < kw["depth_variation"] < 1e6, "> 0 (1 for none)"),
        "blank_fraction": (0 <= kw["blank_fraction"] < 1, "in [0, 1) (0 for none)"),
        "blank_angle": (math.isfinite(kw["blank_angle"]), "a finite angle in deg"),
    }
    for name in ("n_sources", "n_blemishes"):
        val = kw[name]
        checks[name] = (int(val) == val and val >= 0, "a non-negative integer or None")
    for name, (ok, requirement) in checks.items():
        if not ok:
            msg = f"{name} must be {requirement}, got {kw[name]!r}"
            raise ValueError(msg)
    for name in (
        "blemish_width_range",
        "blemish_amplitude_range",
        "source_flux_range",
        "source_stddev_range",
    ):
        kw[name] = _pair(kw[name], name)
    if kw["blemish_width_range"][0] < 1:
        msg = (
            f"blemish_width_range must be >= 1 pixel, got "
            f"{kw['blemish_width_range']!r}; use e.g. (30, 130)"
        )
        raise ValueError(msg)
    ints = ("seed", "n_sources", "n_blemishes")
    floats = {f.name for f in fields(_SceneSpec) if f.type == "float"}
    kw.update({k: int(kw[k]) for k in ints} | {k: float(kw[k]) for k in floats})
    kw["gradient"] = tuple(float(g) for g in kw["gradient"])
    return _SceneSpec(**{**kw, "shape": shape_t})


def _model_from_attrs(attrs: dict) -> _SceneModel:
    """Rebuild the scene model from a simulation's attrs (for checks and tools)."""
    spec = _make_spec(**{f.name: attrs[f.name] for f in fields(_SceneSpec)})
    return _SceneModel(spec)


def simulate_scene(
    shape: tuple[int, int] = (2000, 2000),
    *,
    seed: int = 4,
    chunks: Any = 1000,
    noise_sigma: float = 0.1,
    n_sources: int | None = None,
    n_blemishes: int | None = None,
    gradient: tuple[float, float] = (1.0, 0.25),
    blemish_width_range: tuple[float, float] = (30.0, 130.0),
    blemish_amplitude_range: tuple[float, float] = (0.0, 1.0),
    blemish_radius: float = 2900.0,
    blemish_taper: float = 500.0,
    source_flux_range: tuple[float, float] = (0.0, 50.0),
    source_stddev_range: tuple[float, float] = (0.0, 5.0),
    source_edge: float = 2.0,
    source_truncate: float = 8.0,
    depth_variation: float = 1.0,
    blank_fraction: float = 0.0,
    blank_angle: float = 20.0,
) -> xr.Dataset:
    """Make the notebook's pathological scene as a lazy, chunk-independent Dataset.

    Parameters
    ----------
    shape : tuple of int
        Image size ``(ny, nx)``.
    seed : int
        Seed in ``[0, 2**32)``; pixels depend only on ``seed``, ``shape`` and the
        scene parameters, never on ``chunks``.
    chunks : int, tuple or "auto"
        Dask chunks of the image variables (anything `dask.array.normalize_chunks`
        accepts).
    noise_sigma : float
        Standard deviation of the Gaussian pixel noise (at the left edge when
        ``depth_variation`` is not 1).
    n_sources, n_blemishes : int, optional
        Counts; by default the notebook's densities (5000 sources and 16
        blemishes per 2000 x 2000 pixels) rounded to the nearest integer.
    gradient : tuple of float
        ``(gy, gx)``: the sky gets ``gy * row / ny + gx * col / nx``.
    blemish_width_range, blemish_amplitude_range : tuple of float
        Uniform ranges of the sinc width ``w`` (>= 1 px) and amplitude ``a``;
        a blemish adds ``a * np.sinc(r / (w * pi))``, i.e. ``a sin(r/w) / (r/w)``.
    blemish_radius, blemish_taper : float
        A blemish is exact out to ``blemish_radius`` px, then tapered to zero
        (quintic smoothstep) at ``blemish_radius + blemish_taper`` px; each
        below 1e6. The defaults (2900 + 500) leave every blemish untapered on
        a 2000 x 2000 image, whose largest centre-pixel distance is 2829 px.
    source_flux_range, source_stddev_range : tuple of float
        Uniform ranges of the source total flux and of ``x_stddev``/``y_stddev``.
    source_edge : float
        Source centres are kept this many pixels from the image edges.
    source_truncate : float
        A source is evaluated on pixels within a square of half-width
        ``max(source_truncate * max(x_stddev, y_stddev), 1.5)`` px.
    depth_variation : float
        Noise sigma grows smoothly (geometrically) from ``noise_sigma`` at the
        left column to ``depth_variation * noise_sigma`` at the right one.
    blank_fraction : float
        Fraction of the image set to NaN in ``scene`` and ``sky``: outside a
        rectangle of the image's aspect, centred and rotated by ``blank_angle``
        degrees, scaled so that the blank area is this fraction (0: none).
    blank_angle : float
        Tilt of the footprint rectangle, in degrees.

    Returns
    -------
    xarray.Dataset
        Lazy float32 ``scene`` (sky + sources), ``truth`` (gradient +
        blemishes, never blanked) and ``sky`` (truth + noise) on ``(y, x)``;
        ``noise_rms`` on ``(y, x)`` when ``depth_variation != 1``; the source
        catalogue (``x_mean``, ``y_mean``, ``flux``, ``x_stddev``, ``y_stddev``,
        ``theta``, ``re``) on ``source`` and the blemish catalogue
        (``blemish_x``, ``blemish_y``, ``blemish_width``, ``blemish_amplitude``)
        on ``blemish``; the parameters in ``attrs``.

    Notes
    -----
    Blemishes come from ``numpy.random.RandomState(seed)`` in the notebook's
    draw order, so at the notebook's size and count they are the notebook's.
    Sources come from their own ``SeedSequence(seed)`` stream; noise from a
    fixed grid of ``NOISE_BLOCK``-square blocks, each seeded by
    ``(seed, block_y, block_x)``. Every tile evaluates sources and blemishes on
    global pixel coordinates and sums them in catalogue order in float64, so
    pixels are bit-identical for any chunking. With the defaults at 2000 x 2000
    every blemish covers the whole image untapered, as in the notebook.

    Examples
    --------
    >>> from tilesky.simulate import simulate_scene
    >>> ds = simulate_scene((200, 300), seed=1, chunks=100)
    >>> ds["scene"].shape, ds.sizes["source"], ds.sizes["blemish"]
    ((200, 300), 75, 0)
    """
    spec = _make_spec(
        shape=shape,
        seed=seed,
        noise_sigma=noise_sigma,
        n_sources=n_sources,
        n_blemishes=n_blemishes,
        gradient=gradient,
        blemish_width_range=blemish_width_range,
        blemish_amplitude_range=blemish_amplitude_range,
        blemish_radius=blemish_radius,
        blemish_taper=blemish_taper,
        source_flux_range=source_flux_range,
        source_stddev_range=source_stddev_range,
        source_edge=source_edge,
        source_truncate=source_truncate,
        depth_variation=depth_variation,
        blank_fraction=blank_fraction,
        blank_angle=blank_angle,
    )
    norm = da.core.normalize_chunks(chunks, spec.shape, dtype=np.float32)
    stack = _tile_stack(spec, norm)
    blemishes, sources = _draw_catalogues(spec)
    data_vars = _image_variables(spec, norm, stack)
    data_vars.update({key: (("source",), val) for key, val in sources.items()})
    data_vars.update({key: (("blemish",), val) for key, val in blemishes.items()})
    return xr.Dataset(data_vars, attrs=_scene_attrs(spec))


def _tile_stack(spec: _SceneSpec, norm: tuple) -> da.Array:
    """Lazy float32 (3, ny, nx) stack (scene, truth, sky), one task per tile."""
    token = tokenize(spec, norm, GENERATOR_VERSION)
    name, model_key = f"simulate-scene-{token}", f"simulate-model-{token}"
    # Workers rebuild the catalogue from the seed: the graph stays small
    # however many sources there are.
    dsk: dict[Any, Any] = {model_key: (_SceneModel, spec)}
    ybounds = np.cumsum((0, *norm[0]))
    xbounds = np.cumsum((0, *norm[1]))
    for i in range(len(norm[0])):
        for j in range(len(norm[1])):
            dsk[(name, 0, i, j)] = (
                _render_tile,
                model_key,
                int(ybounds[i]),
                int(ybounds[i + 1]),
                int(xbounds[j]),
                int(xbounds[j + 1]),
            )
    graph = HighLevelGraph.from_collections(name, dsk, dependencies=())
    return da.Array(graph, name, ((3,), *norm), dtype=np.float32)


def _image_variables(spec: _SceneSpec, norm: tuple, stack: da.Array) -> dict:
    """The (y, x) variables: scene, truth, sky and, with varying depth, noise_rms."""
    yx = ("y", "x")
    data_vars: dict[str, Any] = {
        "scene": (yx, stack[0], {"long_name": "sky + noise + sources"}),
        "truth": (yx, stack[1], {"long_name": "noiseless sky: gradient + blemishes"}),
        "sky": (yx, stack[2], {"long_name": "noisy sky without sources"}),
    }
    if spec.depth_variation != 1.0:
        row = da.from_array(_sigma_profile(spec).astype(np.float32), chunks=(norm[1],))
        rms = da.broadcast_to(row, spec.shape, chunks=norm)
        data_vars["noise_rms"] = (yx, rms, {"long_name": "true noise sigma"})
    return data_vars


def _scene_attrs(spec: _SceneSpec) -> dict[str, Any]:
    """What the dataset's attrs record: its kind, its generator and its spec."""
    return {
        "tilesky_kind": "simulation",
        "tilesky_default_variable": "scene",
        "generator": "tilesky.simulate",
        "generator_version": GENERATOR_VERSION,
        "tilesky_version": __version__,
        "noise_block": NOISE_BLOCK,
        **{k: list(v) if isinstance(v, tuple) else v for k, v in asdict(spec).items()},
    }


def _check_target(out: str, storage_options: dict | None, overwrite: bool) -> None:
    fs, path = fsspec.core.url_to_fs(out, **(storage_options or {}))
    if not fs.exists(path):
        return
    entries = fs.ls(path, detail=False) if fs.isdir(path) else [path]
    if not entries:
        return
    is_zarr = any(
        str(e).rstrip("/").rsplit("/", 1)[-1] in ("zarr.json", ".zgroup")
        for e in entries
    )
    if not overwrite:
        msg = f"out={out!r} already exists; pass overwrite=True to replace it"
        raise FileExistsError(msg)
    if not is_zarr:
        msg = (
            f"out={out!r} exists and is not a Zarr store; refusing to overwrite it, "
            "choose another path"
        )
        raise FileExistsError(msg)


def write_simulation(
    out: str,
    *,
    shape: tuple[int, int] = (2000, 2000),
    seed: int = 4,
    chunks: Any = 1000,
    storage_options: dict | None = None,
    overwrite: bool = False,
    **scene_kwargs: Any,
) -> xr.Dataset:
    """Write a simulated scene as one Zarr (v3) group, tile by tile.

    Parameters
    ----------
    out : str or path
        Local path or fsspec URL (``s3://``, ``memory://``...) of the group.
    shape, seed, chunks
        As in `simulate_scene`; ``chunks`` become the Zarr chunks and must be
        regular (all equal but the last).
    storage_options : dict, optional
        Passed to fsspec for URLs.
    overwrite : bool
        Replace an existing Zarr store at ``out``; otherwise an existing
        ``out`` raises `FileExistsError`.
    **scene_kwargs
        Any other keyword of `simulate_scene`.

    Returns
    -------
    xarray.Dataset
        The written group, reopened lazily with `xarray.open_zarr`.

    Notes
    -----
    Pixels are computed with the current dask scheduler (threads by default, or
    an active distributed client); no tile is held longer than its write.
    The group attrs carry ``tilesky_kind = "simulation"`` and
    ``tilesky_default_variable = "scene"``.

    Examples
    --------
    >>> import tempfile, os
    >>> from tilesky.simulate import write_simulation
    >>> path = os.path.join(tempfile.mkdtemp(), "sim.zarr")
    >>> ds = write_simulation(path, shape=(128, 128), seed=0, chunks=64)
    >>> ds.attrs["tilesky_kind"], ds["scene"].dtype
    ('simulation', dtype('float32'))
    """
    out = str(out)
    _check_target(out, storage_options, overwrite)
    ds = simulate_scene(shape, seed=seed, chunks=chunks, **scene_kwargs)
    with warnings.catch_warnings():
        # Consolidated metadata is an extension in Zarr v3; writing it lets a
        # plain xr.open_zarr(out) open the group without a fallback warning.
        warnings.filterwarnings("ignore", message="Consolidated metadata")
        ds.to_zarr(
            out,
            mode="w" if overwrite else "w-",
            zarr_format=3,
            consolidated=True,
            compute=True,
            storage_options=storage_options,
        )
    return xr.open_zarr(out, storage_options=storage_options)

"""The scene model: catalogues drawn from the seed, footprint geometry, source index."""

from __future__ import annotations

import math
from dataclasses import fields

import numpy as np

from tilesky.simulate._spec import (
    _SOURCE_BIN,
    _SOURCE_STREAM,
    _make_spec,
    _SceneSpec,
)


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


def _model_from_attrs(attrs: dict) -> _SceneModel:
    """Rebuild the scene model from a simulation's attrs (for checks and tools)."""
    spec = _make_spec(**{f.name: attrs[f.name] for f in fields(_SceneSpec)})
    return _SceneModel(spec)

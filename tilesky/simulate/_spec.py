"""The scene's parameters: constants, the validated spec and its checks."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

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

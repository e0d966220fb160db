"""Benchmark skies: survey-like variants of the notebook scene, with their truth.

Every sky starts from :func:`tilesky.simulate_scene` (gradient + sinc
blemishes + the notebook's Gaussian source population) and is then changed
with numpy only: the noise is rescaled to a depth map, extended sources are
added, a NaN footprint is cut. Each builder is seeded and returns a
:class:`Sky` holding the scene, the truth (noiseless background), the
noiseless source image, the true noise sigma, an optional inverse-variance
weight map and a catalogue of the extended sources for the stolen-flux
metric. The metric helpers (:func:`residual_stats`, :func:`stolen_flux`,
:func:`score`) score any background against a sky.

    from benchmarks.skies import build, score
    sky = build("lsb", shape=(1000, 1000))
    row = score(sky, my_background)

Names (``SKIES``): ``notebook4``, ``notebook11``, ``notebook23`` (the
notebook scene), ``ramp`` (noise sigma 5x across the field, smooth),
``dither`` (1-6 exposures, sharp steps), ``lsb`` (8 exponential disks on
the notebook's blemishes: degenerate, see :func:`lsb_survey`),
``lsb_survey`` (the same disks on a sky smooth on their scales),
``bright`` (5 bright extended galaxies: Gaussian and Sersic n=4), ``stars``
(bright stars with Moffat halos), ``mosaic`` (an odd shape with all of it and
a NaN footprint with chip gaps).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from tilesky import simulate_scene

__all__ = [
    "SIGMA",
    "SKIES",
    "Sky",
    "build",
    "residual_stats",
    "score",
    "stolen_flux",
    "stolen_total",
]

#: Pixel noise of the notebook scene; surface brightnesses are in its units.
SIGMA = 0.1
# Half-light radius of an exponential profile in scale lengths, and the
# Sersic n=4 b_n (Ciotti & Bertin 1999: b_n ~ 2n - 1/3 + 4/(405 n)).
_EXP_RE = 1.678347
_B4 = 2 * 4 - 1 / 3 + 4 / (405 * 4)


@dataclass
class Sky:
    """One benchmark sky and its truth.

    Parameters
    ----------
    name, title : str
        Short key (as in `SKIES`) and a one-line description.
    scene : numpy.ndarray
        float32 image: truth + noise + sources (NaN outside the footprint).
    truth : numpy.ndarray
        Noiseless background (gradient + blemishes), float64, never blanked.
    sources : numpy.ndarray
        Noiseless image of every source (notebook Gaussians and extended).
    sigma : numpy.ndarray
        True per-pixel noise sigma.
    weight : numpy.ndarray or None
        Inverse-variance weight map (0 = no coverage), when the sky has one.
    catalogue : dict of numpy.ndarray
        Extended sources: ``kind`` (``disk``, ``gaussian``, ``sersic``,
        ``star``), ``x``, ``y``, ``re`` (px), ``q`` (axis ratio), ``theta``
        (rad), ``sb0`` (central surface brightness in units of `SIGMA`),
        ``flux`` (in-image total of the rendered profile) and ``aperture``
        (radius in px of the stolen-flux aperture).
    bare : numpy.ndarray or None
        The same scene without the catalogued extended sources (same noise,
        same notebook sources), for the paired stolen-flux metric.
    extended : numpy.ndarray or None
        Noiseless image of the catalogued extended sources alone.
    params : dict
        What the builder was called with.
    """

    name: str
    title: str
    scene: np.ndarray
    truth: np.ndarray
    sources: np.ndarray
    sigma: np.ndarray
    weight: np.ndarray | None = None
    catalogue: dict = field(default_factory=dict)
    bare: np.ndarray | None = None
    extended: np.ndarray | None = None
    params: dict = field(default_factory=dict)


# --- profiles ---------------------------------------------------------------


def _box(shape, x, y, radius):
    ny, nx = shape
    y0, y1 = max(int(y - radius), 0), min(int(y + radius) + 2, ny)
    x0, x1 = max(int(x - radius), 0), min(int(x + radius) + 2, nx)
    return slice(y0, y1), slice(x0, x1)


def _radius(sl, x, y, q=1.0, theta=0.0):
    """Elliptical radius (major-axis units) on the pixels of slice ``sl``."""
    yy, xx = np.mgrid[sl]
    dx, dy = xx - x, yy - y
    c, s = math.cos(theta), math.sin(theta)
    u, v = dx * c + dy * s, -dx * s + dy * c
    return np.sqrt(u * u + (v / q) ** 2)


def _taper(r, r_max):
    """1 inside 0.75 r_max, smoothly 0 at r_max: no step at a truncation."""
    t = np.clip((r - 0.75 * r_max) / (0.25 * r_max), 0.0, 1.0)
    return 1.0 - t * t * (3.0 - 2.0 * t)


def _render(image, src: dict, footprint) -> float:
    """Add one extended source to ``image`` (in place); its flux on ``footprint``."""
    kind, x, y, re = src["kind"], src["x"], src["y"], src["re"]
    amp = src["sb0"] * SIGMA
    if kind == "disk":
        r_max = 10 * re
        profile = lambda r: amp * np.exp(-_EXP_RE * r / re)  # noqa: E731
    elif kind == "gaussian":
        sig = re / math.sqrt(2 * math.log(2))
        r_max = 6 * sig
        profile = lambda r: amp * np.exp(-0.5 * (r / sig) ** 2)  # noqa: E731
    elif kind == "sersic":
        r_max = 8 * re
        profile = lambda r: amp * np.exp(-_B4 * (r / re) ** 0.25)  # noqa: E731
    elif kind == "star":
        # re is the halo's Moffat alpha; the core is 8x narrower, the halo
        # holds ~half the light and falls as r**-5 (beta 2.5).
        core, beta = re / 8, src["beta"]
        r_max = 12 * re

        def profile(r):
            return amp * (
                (1 + (r / core) ** 2) ** -3.0 + 0.02 * (1 + (r / re) ** 2) ** -beta
            )
    else:
        msg = f"unknown source kind {kind!r}"
        raise ValueError(msg)
    sl = _box(image.shape, x, y, r_max)
    r = _radius(sl, x, y, src["q"], src["theta"])
    stamp = profile(r) * _taper(r, r_max)
    image[sl] += stamp
    return float(stamp[footprint[sl]].sum())


def _place(rng, shape, sizes, margin=0.3, spacing=1.5, tries=200):
    """Centres for sources of half-light radii ``sizes``, kept apart if possible."""
    ny, nx = shape
    out: list[tuple[float, float]] = []
    for re in sizes:
        best = None
        for _ in range(tries):
            m = min(margin * re, 0.2 * min(ny, nx))
            x, y = rng.uniform(m, nx - 1 - m), rng.uniform(m, ny - 1 - m)
            gap = min(
                (
                    math.hypot(x - ox, y - oy) / (spacing * (re + sizes[j]))
                    for j, (ox, oy) in enumerate(out)
                ),
                default=math.inf,
            )
            if best is None or gap > best[0]:
                best = (gap, x, y)
            if gap >= 1:
                break
        out.append(best[1:])
    return out


def _sources(rng, shape, kind, n, re_range, sb_range, *, q_range=(0.4, 1.0)):
    """Catalogue rows of ``n`` sources of one kind (log-uniform sizes)."""
    re = np.exp(rng.uniform(*np.log(re_range), n))
    sb = np.exp(rng.uniform(*np.log(sb_range), n))
    q = rng.uniform(*q_range, n)
    theta = rng.uniform(0, np.pi, n)
    beta = rng.uniform(2.5, 3.0, n)
    xy = _place(rng, shape, list(re))
    return [
        {
            "kind": kind,
            "x": xy[i][0],
            "y": xy[i][1],
            "re": float(re[i]),
            "q": float(q[i]),
            "theta": float(theta[i]),
            "sb0": float(sb[i]),
            "beta": float(beta[i]),
        }
        for i in range(n)
    ]


_APERTURE = {"disk": 4.0, "gaussian": 4.0, "sersic": 4.0, "star": 3.0}


def _catalogue(rows: list[dict]) -> dict:
    cat = {k: np.array([r[k] for r in rows]) for k in rows[0]} if rows else {}
    if rows:
        cat["aperture"] = np.array([_APERTURE[r["kind"]] * r["re"] for r in rows])
    return cat


# --- depth maps and footprints ----------------------------------------------


def _ramp_sigma(shape, factor=5.0):
    ny, nx = shape
    u = (
        np.arange(nx)[None, :] / max(nx - 1, 1)
        + np.arange(ny)[:, None] / max(ny - 1, 1)
    ) / 2
    return SIGMA * factor**u


def _dither_exposures(rng, shape, n_extra=5, cover=(0.55, 0.8)):
    """Exposure count: one covering all, plus ``n_extra`` shifted rectangles."""
    ny, nx = shape
    n = np.ones(shape)
    for _ in range(n_extra):
        fy, fx = rng.uniform(*cover, 2)
        h, w = int(fy * ny), int(fx * nx)
        y0, x0 = rng.integers(0, ny - h + 1), rng.integers(0, nx - w + 1)
        n[y0 : y0 + h, x0 : x0 + w] += 1
    return n


def _chip_gaps(shape, width=6):
    """Two vertical and one horizontal NaN gap, as between detector chips."""
    ny, nx = shape
    gaps = np.zeros(shape, bool)
    for x in (nx // 3, 2 * nx // 3):
        gaps[:, x : x + width] = True
    gaps[ny // 2 : ny // 2 + width, :] = True
    return gaps


# --- builders ---------------------------------------------------------------


def _base(shape, seed, **scene_kw):
    """truth, notebook sources, unit noise and the footprint from simulate_scene."""
    ds = simulate_scene(shape, seed=seed, chunks=max(shape), **scene_kw).compute()
    truth = ds.truth.values.astype(np.float64)
    sky = ds.sky.values.astype(np.float64)
    sources = ds.scene.values.astype(np.float64) - sky
    footprint = np.isfinite(sky)
    noise = np.where(footprint, sky - truth, 0.0) / SIGMA
    return truth, np.where(footprint, sources, 0.0), noise, footprint


def _assemble(
    name,
    title,
    shape,
    seed,
    *,
    sigma=None,
    weight=None,
    rows=(),
    scene_kw=None,
    gaps=False,
    params=None,
):
    truth, sources, noise, footprint = _base(shape, seed, **(scene_kw or {}))
    sigma = np.full(shape, SIGMA) if sigma is None else sigma
    if gaps:
        footprint &= ~_chip_gaps(shape)
    cat_rows = list(rows)
    extended = np.zeros(shape)
    for row in cat_rows:
        row["flux"] = _render(extended, row, footprint)
    bare = truth + noise * sigma + sources
    bare[~footprint] = np.nan
    scene = bare + extended
    sources += extended
    if weight is not None:
        weight = np.where(footprint, weight, 0.0)
    return Sky(
        name=name,
        title=title,
        scene=scene.astype(np.float32),
        truth=truth,
        sources=sources,
        sigma=sigma,
        weight=weight,
        catalogue=_catalogue(cat_rows),
        bare=bare.astype(np.float32) if cat_rows else None,
        extended=extended if cat_rows else None,
        params={"shape": list(shape), "seed": seed, **(params or {})},
    )


def _rng(seed, stream):
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(19, stream)))


def notebook(shape=(1000, 1000), seed=4) -> Sky:
    """The notebook scene (uniform noise 0.1, gradient, blemishes, Gaussians)."""
    return _assemble(f"notebook{seed}", f"notebook scene, seed {seed}", shape, seed)


def ramp(shape=(1000, 1000), seed=4, factor=5.0) -> Sky:
    """Noise sigma growing smoothly ``factor`` x along the diagonal; w = 1/sigma^2."""
    sigma = _ramp_sigma(shape, factor)
    return _assemble(
        "ramp",
        f"noise sigma {factor:g}x across the field, smooth ramp",
        shape,
        seed,
        sigma=sigma,
        weight=1 / sigma**2,
        params={"factor": factor},
    )


def dither(shape=(1000, 1000), seed=4, sigma0=0.2) -> Sky:
    """Depth from a dither pattern: 1-6 exposures, sigma = sigma0 / sqrt(n)."""
    n_exp = _dither_exposures(_rng(seed, 1), shape)
    return _assemble(
        "dither",
        "depth from a dither pattern (1-6 exposures, sharp steps)",
        shape,
        seed,
        sigma=sigma0 / np.sqrt(n_exp),
        weight=n_exp / sigma0**2,
        params={"sigma0": sigma0, "n_exp_range": [n_exp.min(), n_exp.max()]},
    )


def lsb(shape=(1000, 1000), seed=4, n=8) -> Sky:
    """``n`` exponential disks, Re 15-80 px, central SB 0.3-3 sigma per pixel."""
    rows = _sources(_rng(seed, 2), shape, "disk", n, (15, 80), (0.3, 3.0))
    return _assemble(
        "lsb",
        f"{n} low-surface-brightness exponential disks (Re 15-80, 0.3-3 sigma)",
        shape,
        seed,
        rows=rows,
    )


#: Blemishes of the survey-like LSB sky: sinc widths and amplitudes (see
#: :func:`lsb_survey`).
SURVEY_BLEMISH_WIDTH = (300.0, 600.0)
SURVEY_BLEMISH_AMPLITUDE = (0.0, 0.15)


def lsb_survey(shape=(1000, 1000), seed=4, n=8) -> Sky:
    """The disks of :func:`lsb` on a sky that is smooth on their scales.

    The notebook's blemishes (sinc widths 30-130 px, amplitudes up to 1.0,
    i.e. 10 sigma) change by several sigma across a disk's 4 Re aperture
    (60-320 px): no estimator can tell a faint disk from a blemish there,
    and even the true disk apertures as a mask cost more than the disks'
    light (``lsb`` is that degenerate case). A flat-fielded survey sky is
    smooth on galaxy scales: what is left is a gradient and large-scale
    structure (scattered light, flat-field residuals) at a small fraction
    of the noise per pixel. Here the same gradient, compact sources, noise
    and disks sit on blemishes of widths 300-600 px (the sinc's first zero
    at 940-1900 px) and amplitudes 0-0.15 (up to 1.5 sigma): across the
    largest aperture such a sky departs from a plane by at most
    ``a * r**2 / (6 w**2)``, 0.04 sigma, so the sky under a disk is
    predictable from the sky around it, as on real survey data.
    """
    rows = _sources(_rng(seed, 2), shape, "disk", n, (15, 80), (0.3, 3.0))
    return _assemble(
        "lsb_survey",
        f"{n} LSB disks (Re 15-80, 0.3-3 sigma) on a survey-smooth sky",
        shape,
        seed,
        rows=rows,
        scene_kw={
            "blemish_width_range": SURVEY_BLEMISH_WIDTH,
            "blemish_amplitude_range": SURVEY_BLEMISH_AMPLITUDE,
        },
        params={
            "blemish_width_range": list(SURVEY_BLEMISH_WIDTH),
            "blemish_amplitude_range": list(SURVEY_BLEMISH_AMPLITUDE),
        },
    )


def _bright_rows(rng, shape, n=5):
    kinds = ["gaussian" if i % 2 == 0 else "sersic" for i in range(n)]
    rows = []
    for kind in ("gaussian", "sersic"):
        k = kinds.count(kind)
        if kind == "gaussian":
            # Gaussian sigma 25-60 px, peak 5-30 sigma.
            rows += _sources(
                rng, shape, kind, k, (29.4, 70.6), (5, 30), q_range=(0.5, 1)
            )
        else:
            # Sersic n=4, Re 20-50 px, centre 300-1500 sigma (I_e 0.1-0.7 sigma).
            rows += _sources(
                rng, shape, kind, k, (20, 50), (300, 1500), q_range=(0.5, 1)
            )
    return rows


def bright(shape=(1000, 1000), seed=4, n=5) -> Sky:
    """``n`` bright extended galaxies: Gaussians (sigma 25-60 px) and Sersic n=4."""
    return _assemble(
        "bright",
        f"{n} bright extended galaxies (Gaussian sigma 25-60, Sersic n=4)",
        shape,
        seed,
        rows=_bright_rows(_rng(seed, 3), shape, n),
    )


def _star_rows(rng, shape, n=6):
    # Halo Moffat alpha 12-30 px (beta 2.5-3), peak 200-5000 sigma.
    return _sources(rng, shape, "star", n, (12, 30), (200, 5000), q_range=(1, 1))


def stars(shape=(1000, 1000), seed=4, n=6) -> Sky:
    """``n`` bright stars with Moffat cores and wide Moffat halos (beta 2.5-3)."""
    return _assemble(
        "stars",
        f"{n} bright stars with Moffat halos (beta 2.5-3)",
        shape,
        seed,
        rows=_star_rows(_rng(seed, 4), shape, n),
    )


def mosaic(shape=(911, 1237), seed=4, sigma0=0.2) -> Sky:
    """Odd shape, dither depth and weight, disks, galaxies, stars, NaN footprint."""
    rng = _rng(seed, 5)
    area = shape[0] * shape[1] / 1e6
    rows = _sources(rng, shape, "disk", round(8 * area), (15, 80), (0.3, 3.0))
    rows += _bright_rows(rng, shape, 5)
    rows += _star_rows(rng, shape, 6)
    n_exp = _dither_exposures(rng, shape)
    return _assemble(
        "mosaic",
        f"{shape[0]}x{shape[1]} mosaic: everything, rotated footprint, gaps",
        shape,
        seed,
        sigma=sigma0 / np.sqrt(n_exp),
        weight=n_exp / sigma0**2,
        rows=rows,
        scene_kw={"blank_fraction": 0.15, "blank_angle": 12.0},
        gaps=True,
        params={"sigma0": sigma0},
    )


#: Builders by name; each takes ``shape`` and ``seed`` keywords.
SKIES: dict[str, Callable[..., Sky]] = {
    "notebook4": lambda **kw: notebook(**{"seed": 4, **kw}),
    "notebook11": lambda **kw: notebook(**{"seed": 11, **kw}),
    "notebook23": lambda **kw: notebook(**{"seed": 23, **kw}),
    "ramp": ramp,
    "dither": dither,
    "lsb": lsb,
    "lsb_survey": lsb_survey,
    "bright": bright,
    "stars": stars,
    "mosaic": mosaic,
}


def build(
    name: str, *, shape: tuple[int, int] | None = None, seed: int | None = None
) -> Sky:
    """Build sky ``name`` (see `SKIES`); ``shape`` defaults to each builder's own.

    The mosaic keeps its odd aspect: a square ``shape`` (n, n) scales it to
    about n * n pixels.
    """
    if name not in SKIES:
        msg = f"unknown sky {name!r}; choose from {', '.join(SKIES)}"
        raise ValueError(msg)
    kw = {}
    if shape is not None:
        if name == "mosaic" and shape[0] == shape[1]:
            f = shape[0] / 1000
            shape = (round(911 * f), round(1237 * f))
        kw["shape"] = tuple(shape)
    if seed is not None and not name.startswith("notebook"):
        kw["seed"] = seed
    return SKIES[name](**kw)


# --- metrics ----------------------------------------------------------------


def residual_stats(sky: Sky, background: np.ndarray) -> dict:
    """RMS (std and about zero), mean and peak |.| of background - truth.

    Over pixels where the scene and the background are both finite;
    ``nan_covered`` counts scene pixels the background left NaN.
    """
    bkg = np.asarray(background, dtype=np.float64)
    ok = np.isfinite(sky.scene) & np.isfinite(bkg)
    res = bkg[ok] - sky.truth[ok]
    return {
        "rms": float(res.std()),
        "rms0": float(np.sqrt(np.mean(res**2))),
        "mean": float(res.mean()),
        "peak": float(np.abs(res).max()),
        "nan_covered": int(np.sum(np.isfinite(sky.scene) & ~np.isfinite(bkg))),
    }


def stolen_flux(
    sky: Sky, background: np.ndarray, reference: np.ndarray | None = None
) -> np.ndarray:
    """Per extended source: sum of (background - reference) over its aperture,
    divided by the extended-source light in that aperture.

    The aperture is a circle of ``catalogue["aperture"]`` px (4 Re for
    galaxies, 3 halo alphas for stars) over finite pixels; for an isolated
    source the divisor is its flux, and where apertures overlap it also
    holds the neighbours' light that the sum sees. ``reference`` is
    the truth by default; pass the same method's background of
    ``sky.bare`` for the paired measure, which leaves out every error the
    method makes without the source (mesh noise, absorbed notebook sources).
    1 means all the source's light went into the background; negative
    values mean the background dips below the reference there.
    """
    cat = sky.catalogue
    if not cat:
        return np.empty(0)
    ref = sky.truth if reference is None else np.asarray(reference, np.float64)
    res = np.asarray(background, dtype=np.float64) - ref
    ok = np.isfinite(res)
    out = []
    for x, y, rad in zip(cat["x"], cat["y"], cat["aperture"], strict=True):
        sl = _box(res.shape, x, y, rad)
        inside = (_radius(sl, x, y) <= rad) & ok[sl]
        out.append(float(res[sl][inside].sum() / sky.extended[sl][inside].sum()))
    return np.array(out)


def _apertures(sky: Sky) -> np.ndarray:
    union = np.zeros(sky.scene.shape, bool)
    cat = sky.catalogue
    for x, y, rad in zip(cat["x"], cat["y"], cat["aperture"], strict=True):
        sl = _box(union.shape, x, y, rad)
        union[sl] |= _radius(sl, x, y) <= rad
    return union


def stolen_total(
    sky: Sky, background: np.ndarray, reference: np.ndarray | None = None
) -> float:
    """Like :func:`stolen_flux` over the union of all apertures at once."""
    ref = sky.truth if reference is None else np.asarray(reference, np.float64)
    res = np.asarray(background, dtype=np.float64) - ref
    inside = _apertures(sky) & np.isfinite(res)
    return float(res[inside].sum() / sky.extended[inside].sum())


def score(
    sky: Sky, background: np.ndarray, bare_background: np.ndarray | None = None
) -> dict:
    """:func:`residual_stats` plus stolen-flux summaries by source kind.

    ``stolen_<kind>_median``/``_mean`` are against the truth; with
    ``bare_background`` (the method's background of ``sky.bare``), also
    ``paired_<kind>_median``/``_mean`` and the per-source ``paired`` list.
    """
    row = residual_stats(sky, background)
    measures = {"stolen": stolen_flux(sky, background)}
    if bare_background is not None:
        measures["paired"] = stolen_flux(sky, background, bare_background)
    kinds = sky.catalogue.get("kind")
    for key, values in measures.items():
        row[key] = [round(float(v), 4) for v in values]
        if values.size:
            ref = None if key == "stolen" else bare_background
            row[f"{key}_total"] = stolen_total(sky, background, ref)
        for kind in dict.fromkeys(kinds if values.size else ()):
            sel = values[kinds == kind]
            row[f"{key}_{kind}_median"] = float(np.median(sel))
            row[f"{key}_{kind}_mean"] = float(np.mean(sel))
    return row

"""Summaries: the merged metric states as a JSON-ready dict, and line fits.

Everything here runs once, on the driver, on the small merged state; NaN and
inf become None (strict JSON).
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Any

import numpy as np

from tilesky.kernels._noise import UNIT_EXP, MomentState, moments
from tilesky.metrics._catalogue import Catalogue
from tilesky.metrics._states import (
    BiasState,
    MetricsState,
    ScaleState,
    SourceState,
    Spec,
    TruthState,
)

__all__ = ["line_fit", "summarize"]


def _num(x) -> float | None:
    """A plain float, or None for NaN/inf (strict JSON)."""
    x = float(x)
    return x if math.isfinite(x) else None


def _ratio(a: float, b: float) -> float:
    return a / b if b and math.isfinite(b) else math.nan


def _rms_about_zero(state: MomentState) -> float:
    if state.count == 0:
        return math.nan
    return math.sqrt(float(Fraction(state.sumsq, state.count << UNIT_EXP)))


def line_fit(x, y) -> dict[str, Any]:
    """Ordinary least-squares line ``y = slope * x + intercept``, in closed form.

    Parameters
    ----------
    x, y : array_like
        Points; pairs with a non-finite member are left out.

    Returns
    -------
    dict
        ``n``, ``slope``, ``intercept`` and their standard errors
        ``slope_err``, ``intercept_err`` from the residual variance with
        ``n - 2`` degrees of freedom. Values are None below three points or
        when all ``x`` are equal.

    Examples
    --------
    >>> fit = line_fit([0, 1, 2, 3], [1.0, 3.1, 4.9, 7.0])
    >>> round(fit["slope"], 3), round(fit["intercept"], 3)
    (1.98, 1.03)
    """
    x = np.asarray(x, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    n = int(x.size)
    out: dict[str, Any] = dict.fromkeys(
        ("slope", "intercept", "slope_err", "intercept_err")
    )
    out["n"] = n
    if n < 3:
        return out
    xm, ym = x.mean(), y.mean()
    sxx = float(((x - xm) ** 2).sum())
    if sxx == 0.0:
        return out
    slope = float(((x - xm) * (y - ym)).sum()) / sxx
    intercept = ym - slope * xm
    s2 = float(((y - intercept - slope * x) ** 2).sum()) / (n - 2)
    out.update(
        slope=_num(slope),
        intercept=_num(intercept),
        slope_err=_num(math.sqrt(s2 / sxx)),
        intercept_err=_num(math.sqrt(s2 * (1.0 / n + xm * xm / sxx))),
    )
    return out


def _truth_summary(ts: TruthState, edge: int) -> dict[str, Any]:
    def part(m: MomentState, mx: float, mn: float) -> dict[str, Any]:
        n, mean, std = moments(m)
        return {
            "n_pixels": n,
            "mean": _num(mean),
            "std": _num(std),
            "rms": _num(_rms_about_zero(m)),
            "max": _num(mx),
            "min": _num(mn),
        }

    return {
        "all": part(ts.all, ts.max_all, ts.min_all),
        "interior": {
            **part(ts.interior, ts.max_interior, ts.min_interior),
            "edge": edge,
        },
    }


def _scale_summary(st: ScaleState, noise_sigma: float | None) -> dict[str, Any]:
    n_pix, _, pix_std = moments(st.pixels)
    sigma = pix_std if noise_sigma is None else float(noise_sigma)
    widths = np.array(st.widths, dtype=np.float64)

    def stats(states):
        ms = [moments(m) for m in states]
        n = [m[0] for m in ms]
        # One block has no scatter: report nothing rather than a zero.
        std = np.array([m[2] if m[0] >= 2 else math.nan for m in ms])
        mean = np.array([m[1] for m in ms])
        return n, mean, std

    n_blocks, mean, rms = stats(st.resid)
    ideal = sigma / widths
    with np.errstate(invalid="ignore", divide="ignore"):
        out: dict[str, Any] = {
            "widths": [int(w) for w in st.widths],
            "n_blocks": n_blocks,
            "rms": [_num(v) for v in rms],
            "mean": [_num(v) for v in mean],
            "sigma": _num(sigma),
            "sigma_source": "measured" if noise_sigma is None else "noise_sigma",
            "n_pixels": n_pix,
            "ideal": [_num(v) for v in ideal],
            "ratio_ideal": [_num(v) for v in rms / ideal],
            "perfect": None,
            "ratio_perfect": None,
        }
        if st.perfect is not None:
            _, _, perfect = stats(st.perfect)
            out["perfect"] = [_num(v) for v in perfect]
            out["ratio_perfect"] = [_num(v) for v in rms / perfect]
    out["reference"] = "perfect" if st.perfect is not None else "ideal"
    out["ratio"] = out["ratio_" + out["reference"]]
    return out


def _bias_summary(bs: BiasState) -> dict[str, Any]:
    n_m, mean_m, std_m = moments(bs.masked)
    n_u, mean_u, std_u = moments(bs.unmasked)
    d = bs.mean_masked - bs.mean_unmasked
    weight = bs.n_masked.astype(np.float64)
    nb = int(d.size)
    est = se = z = math.nan
    if nb >= 1:
        total = weight.sum()
        est = float((weight * d).sum() / total)
    if nb >= 2:
        # Cluster-robust (sandwich) error of a weighted mean of independent blocks.
        se = math.sqrt(nb / (nb - 1) * float(((weight * (d - est)) ** 2).sum())) / total
        z = est / se if se > 0 else math.nan
    with np.errstate(invalid="ignore", divide="ignore"):
        # The notebook's formula, kept for comparison: it is not an error at all.
        nb_err_m = mean_m / (math.sqrt(n_m) * std_m) if n_m and std_m else math.nan
        nb_err_u = mean_u / (math.sqrt(n_u) * std_u) if n_u and std_u else math.nan
        iid = math.sqrt(std_m**2 / n_m + std_u**2 / n_u) if n_m and n_u else math.nan
    diff = mean_m - mean_u
    return {
        "mean_masked": _num(mean_m),
        "mean_unmasked": _num(mean_u),
        "n_masked": n_m,
        "n_unmasked": n_u,
        "difference": _num(est),
        "stderr": _num(se),
        "z": _num(z),
        "n_blocks": nb,
        "box_size": bs.box_size,
        "difference_global": _num(diff),
        "method": (
            "per-block difference of mean background under masked and unmasked "
            "covered pixels, weighted by masked pixels; cluster-robust error "
            "over blocks"
        ),
        "naive": {
            "difference": _num(diff),
            "notebook_stderr_masked": _num(nb_err_m),
            "notebook_stderr_unmasked": _num(nb_err_u),
            "notebook_z": _num(_ratio(diff, math.hypot(nb_err_m, nb_err_u))),
            "iid_stderr": _num(iid),
            "iid_z": _num(_ratio(diff, iid)),
        },
    }


def _group_stats(v: np.ndarray, flux: np.ndarray, re: np.ndarray) -> dict[str, Any]:
    ok = np.isfinite(v)
    v, flux, re = v[ok], flux[ok], re[ok]
    n = int(v.size)
    std = float(v.std(ddof=1)) if n >= 2 else math.nan
    return {
        "n": n,
        "mean": _num(v.mean()) if n else None,
        "std": _num(std),
        "stderr": _num(std / math.sqrt(n)) if n >= 2 else None,
        "median": _num(np.median(v)) if n else None,
        "fit_flux": line_fit(flux, v),
        "fit_radius": line_fit(re, v),
    }


def _source_summary(ss: SourceState, cat: Catalogue, has_truth: bool):
    ns = cat.n_sources
    nr = cat.rand_x.size
    resid, bkg = np.full(ns + nr, np.nan), np.full(ns + nr, np.nan)
    cmask = np.zeros(ns + nr, dtype=bool)
    nmask = np.zeros(ns + nr, dtype=np.int64)
    seen = np.zeros(ns + nr, dtype=bool)
    resid[ss.keys], bkg[ss.keys] = ss.resid, ss.bkg
    cmask[ss.keys], nmask[ss.keys], seen[ss.keys] = (
        ss.centre_masked,
        ss.n_masked_box,
        True,
    )
    value = resid if has_truth else bkg
    src_ok = seen[:ns]
    kept = seen[ns:] & (nmask[ns:] == 0)
    masked = src_ok & cmask[:ns]
    unmasked = src_ok & ~cmask[:ns]
    summary = {
        "quantity": "residual" if has_truth else "background",
        "n_sources": ns,
        "n_sources_inside": int(src_ok.sum()),
        "n_random": int(nr),
        "n_random_kept": int(kept.sum()),
        "groups": {
            "masked": _group_stats(
                value[:ns][masked], cat.flux[masked], cat.re[masked]
            ),
            "unmasked": _group_stats(
                value[:ns][unmasked], cat.flux[unmasked], cat.re[unmasked]
            ),
            "random": _group_stats(
                value[ns:][kept], cat.rand_flux[kept], cat.rand_re[kept]
            ),
        },
    }
    points = {
        "quantity": summary["quantity"],
        "sources": {
            "x": cat.x,
            "y": cat.y,
            "flux": cat.flux,
            "re": cat.re,
            "residual": resid[:ns],
            "background": bkg[:ns],
            "value": value[:ns],
            "masked": cmask[:ns],
            "valid": src_ok,
        },
        "random": {
            "x": cat.rand_x,
            "y": cat.rand_y,
            "flux": cat.rand_flux,
            "re": cat.rand_re,
            "residual": resid[ns:],
            "background": bkg[ns:],
            "value": value[ns:],
            "kept": kept,
        },
    }
    return summary, points


def _check_settled(state: MetricsState) -> None:
    left = sum(t.keys.size for t in state.scale.pending) + state.bias.pending.keys.size
    if state.sources is not None:
        left += state.sources.pending.keys.size
    if left:
        msg = f"internal error: {left} metric blocks were never seen whole"
        raise RuntimeError(msg)


def summarize(
    state: MetricsState,
    spec: Spec,
    cat: Catalogue | None,
    noise_sigma: float | None,
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The metrics dict of a merged state, and the per-source points (or None).

    Every block and box must have been seen whole (a ``RuntimeError`` says
    otherwise: the merge missed a chunk).
    """
    _check_settled(state)
    metrics: dict[str, Any] = {
        "shape": list(spec.shape),
        "truth": None
        if state.truth is None
        else _truth_summary(state.truth, spec.edge),
        "scale": _scale_summary(state.scale, noise_sigma),
        "bias": _bias_summary(state.bias),
        "sources": None,
    }
    points = None
    if state.sources is not None:
        metrics["sources"], points = _source_summary(state.sources, cat, spec.has_truth)
    return metrics, points

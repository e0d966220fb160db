"""Whether a run's background can be trusted, from the metrics it computed.

A background that follows an extended object (a large galaxy absorbed into
the mesh) is higher under the masked pixels than under the unmasked ones in
the same blocks: the metrics' bias (per-block masked minus unmasked
background, with a cluster-robust error over blocks) then is positive, both
significant (``z``) and large in noise units. Thresholds come from
measurements on simulated scenes (notebook scene, seeds 1-12 at 600^2 and
4, 7, 19, 29 at 1000-2000^2, varying depth, bright stars: z <= 1.63 and
difference <= 0.037 sigma; a Gaussian galaxy of sigma 40-60 px and peak 20
sigma, one or five galaxies, 600^2 to 2000^2: z >= 2.37 and difference
>= 0.047 sigma).

Two more signs are reported: most of the image masked (too little sky), and
block means of the unmasked residual scattering far more than pure noise
would at large widths (structure left in the sky).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["trust_check"]

#: Significance and size (in units of the pixel noise) of the masked-minus-
#: unmasked background difference above which the background likely
#: follows an extended object.
BIAS_Z = 2.0
BIAS_SIGMA = 0.04
#: Fraction of covered pixels masked above which too little sky is left.
MASKED_FRACTION = 0.5
#: RMS of block means over the noise-only ideal, at widths >= RATIO_WIDTH
#: with at least RATIO_BLOCKS blocks (measured: <= 1.14 on plain scenes).
RATIO = 1.5
RATIO_WIDTH = 10
RATIO_BLOCKS = 20

#: What helps (measured on the 600^2 scene with a sigma-60 galaxy: residual
#: RMS 0.32 -> 0.14 with smoothfit.scale=60; larger source-mask scales alone
#: changed nothing, 0.32).
_ADVICE = (
    "try a smoother background (--set smoothfit.scale=60) or mask the object "
    "with --mask"
)


def _masked_fraction(bias: Mapping[str, Any]) -> float | None:
    n_m, n_u = bias.get("n_masked") or 0, bias.get("n_unmasked") or 0
    return n_m / (n_m + n_u) if n_m + n_u else None


def _max_ratio(scale: Mapping[str, Any]) -> float | None:
    widths = scale.get("widths") or []
    ratios = scale.get("ratio_ideal") or []
    blocks = scale.get("n_blocks") or [0] * len(widths)
    kept = [
        r
        for w, r, n in zip(widths, ratios, blocks, strict=False)
        if r is not None and w >= RATIO_WIDTH and n >= RATIO_BLOCKS
    ]
    return max(kept) if kept else None


def trust_check(metrics: Mapping[str, Any] | None) -> dict[str, Any]:
    """Say whether the background of a run may follow an extended object.

    Parameters
    ----------
    metrics : mapping or None
        The metrics of a run (:func:`tilesky.metrics.compute_metrics`, or a
        store's ``attrs["metrics"]``).

    Returns
    -------
    dict
        ``trusted`` (bool), ``message`` (one line: what is wrong and what to
        try, or that no sign was found), ``reasons`` (short codes:
        ``"bias"``, ``"masked_fraction"``, ``"large_scale_rms"``) and the
        numbers the decision used (``bias_z``, ``bias_sigma``,
        ``masked_fraction``, ``max_ratio``; None when not measured).

    Examples
    --------
    >>> m = {"bias": {"z": 3.0, "difference": 0.05, "n_masked": 1,
    ...      "n_unmasked": 3}, "scale": {"sigma": 0.1}}
    >>> trust_check(m)["reasons"]
    ['bias']
    """
    metrics = metrics or {}
    bias = metrics.get("bias") or {}
    scale = metrics.get("scale") or {}
    sigma = scale.get("sigma")
    z, diff = bias.get("z"), bias.get("difference")
    size = diff / sigma if diff is not None and sigma else None
    fraction = _masked_fraction(bias)
    ratio = _max_ratio(scale)
    found = []
    if z is not None and size is not None and z >= BIAS_Z and size >= BIAS_SIGMA:
        found.append(
            (
                "bias",
                f"the background under masked pixels is {size:.2f} sigma above "
                f"the unmasked ones (z = {z:.1f}): it likely follows an "
                "extended object",
            )
        )
    if fraction is not None and fraction > MASKED_FRACTION:
        found.append(
            ("masked_fraction", f"{100 * fraction:.0f} % of the image is masked")
        )
    if ratio is not None and ratio > RATIO:
        found.append(
            (
                "large_scale_rms",
                f"block means of the residual scatter {ratio:.1f}x more than "
                f"noise at widths >= {RATIO_WIDTH} px",
            )
        )
    if found:
        message = "background may not be trusted: " + "; ".join(
            text for _, text in found
        )
        message += f"; {_ADVICE}"
    else:
        message = "no sign that the background follows an extended object"
    return {
        "trusted": not found,
        "message": message,
        "reasons": [code for code, _ in found],
        "bias_z": z,
        "bias_sigma": size,
        "masked_fraction": fraction,
        "max_ratio": ratio,
    }

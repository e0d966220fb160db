"""Callable background and background-RMS estimators, and sigma clipping.

The estimators follow photutils' calling convention, ``estimator(data,
axis=None)``, on data in which masked or clipped pixels are NaN: NaN values are
ignored and an all-NaN slice gives NaN, without any warning. They reproduce
photutils' estimators applied with ``sigma_clip=None`` (same formulas, same
dtypes), are vectorised over the leading axes, keep no state beyond their
constructor arguments (thread-safe, picklable) and have a ``repr`` that
rebuilds them.

Sigma clipping is done once per mesh box, before both estimators, by a
`SigmaClip` that reproduces astropy's fast ``SigmaClip`` path (the one
photutils' ``Background2D`` uses) without its warnings or mutable state.

- ``_rows.py``: the NaN-ignoring row statistics every estimator reduces with.
- ``_estimators.py``: the estimator classes, their registries and
  :func:`make_estimator`.
- ``_sigma_clip.py``: :class:`SigmaClip`, :func:`make_sigma_clip` and
  :func:`as_sigma_clip`.
"""

from __future__ import annotations

from tilesky.estimators._estimators import (
    BKG_ESTIMATORS,
    RMS_ESTIMATORS,
    BackgroundEstimator,
    BackgroundRMSEstimator,
    BiweightLocationBackground,
    BiweightScaleBackgroundRMS,
    MADStdBackgroundRMS,
    MeanBackground,
    MedianBackground,
    MMMBackground,
    ModeEstimatorBackground,
    SExtractorBackground,
    StdBackgroundRMS,
    make_estimator,
)
from tilesky.estimators._sigma_clip import SigmaClip, as_sigma_clip, make_sigma_clip

__all__ = [
    "BKG_ESTIMATORS",
    "RMS_ESTIMATORS",
    "BackgroundEstimator",
    "BackgroundRMSEstimator",
    "BiweightLocationBackground",
    "BiweightScaleBackgroundRMS",
    "MADStdBackgroundRMS",
    "MMMBackground",
    "MeanBackground",
    "MedianBackground",
    "ModeEstimatorBackground",
    "SExtractorBackground",
    "SigmaClip",
    "StdBackgroundRMS",
    "as_sigma_clip",
    "make_estimator",
    "make_sigma_clip",
]

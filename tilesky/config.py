"""The single source of tilesky's parameter names, defaults and validation.

A run is described by one :class:`Config`: a tree of frozen dataclasses, one
per stage. Names follow photutils 3.0 where photutils has the concept
(``box_size``, ``filter_size``, ``filter_threshold``, ``exclude_percentile``,
``bkg_estimator``, ``bkg_rms_estimator``, ``n_sigma``, ``n_pixels``).

Configurations load from TOML (sections named like the fields below), take
``key=value`` overrides with dotted keys (``final_mesh.box_size=8``) and are
written into every run's store as a plain dict, so a run can be repeated.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from tilesky._config_values import (
    _choice,
    _dq_bits,
    _floats,
    _fraction,
    _maxiters,
    _number,
    _pair,
    _parse_value,
    _positive,
    _read_toml,
)
from tilesky.errors import ConfigError

__all__ = [
    "PRESETS",
    "Config",
    "ConfigError",
    "FirstMaskConfig",
    "MeshConfig",
    "RingConfig",
    "SmoothFitConfig",
    "SourceMaskConfig",
    "load_config",
]

BKG_ESTIMATOR_NAMES = ("mean", "median", "mode", "sextractor", "biweight", "mmm")
RMS_ESTIMATOR_NAMES = ("std", "mad_std", "biweight")
INTERPOLATORS = ("idw", "spline")
NOISE_MODES = ("auto", "global", "local")
FINAL_METHODS = ("mesh", "smoothfit")


#: Bounds that keep time and memory finite: more rounds than this never
#: change the mask, and a dilation footprint of (2r+1)^2 pixels beyond this
#: radius would need more memory than a tile.
MAX_ROUNDS = 20
MAX_DILATE_RADIUS = 256


@dataclass(frozen=True)
class RingConfig:
    """Ring-median filter: ``Ring2DKernel(radius_in, width)`` footprint.

    Parameters
    ----------
    radius_in : int
        Inner radius of the ring in pixels (>= 0; 0 is a filled disk).
    width : int
        Width of the ring in pixels (>= 1).
    """

    radius_in: int = 15
    width: int = 5

    def __post_init__(self) -> None:
        # The kernel's own bounds (kernels._ring): radius_in=0 is a filled disk.
        for name, low in (("radius_in", 0), ("width", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                msg = f"ring.{name} must be an integer >= {low}, got {value!r}"
                raise ConfigError(msg)


@dataclass(frozen=True)
class FirstMaskConfig:
    """First source mask: smooth ``scene - ring``, threshold, dilate.

    ``noise_sigma_clip=None`` takes the plain standard deviation of the
    smoothed difference as the global noise, as the notebook does; a number
    clips iteratively about the mean at that many sigma first.

    Parameters
    ----------
    smooth_sigma : float
        Gaussian sigma, in pixels, of the smoothing of ``scene - ring``.
    n_sigma : float
        Threshold in units of the noise (>= 0).
    dilate_radius : int
        Radius of the circular top-hat dilation, in pixels (>= 0).
    noise_sigma_clip : float or None
        Clipping threshold of the global noise estimate; None: no clipping.
    noise_sigma_clip_maxiters : int
        Most clipping iterations of that estimate.
    """

    smooth_sigma: float = 3.0
    n_sigma: float = 1.0
    dilate_radius: int = 2
    noise_sigma_clip: float | None = None
    noise_sigma_clip_maxiters: int = 5

    def __post_init__(self) -> None:
        _positive("first_mask.smooth_sigma", self.smooth_sigma)
        _positive("first_mask.n_sigma", self.n_sigma, allow_zero=True)
        _maxiters(
            "first_mask.noise_sigma_clip_maxiters", self.noise_sigma_clip_maxiters
        )
        if (
            isinstance(self.dilate_radius, bool)
            or not isinstance(self.dilate_radius, int)
            or not 0 <= self.dilate_radius <= MAX_DILATE_RADIUS
        ):
            msg = (
                "first_mask.dilate_radius must be an integer between 0 and "
                f"{MAX_DILATE_RADIUS}, "
                f"got {self.dilate_radius!r}"
            )
            raise ConfigError(msg)
        if self.noise_sigma_clip is not None:
            _positive("first_mask.noise_sigma_clip", self.noise_sigma_clip)


@dataclass(frozen=True)
class MeshConfig:
    """Background2D-like mesh stage plus tilesky's interpolation to pixels.

    ``sigma_clip`` is the clipping threshold in sigma (``None``: no clipping)
    applied per box with ``sigma_clip_maxiters`` iterations, photutils'
    ``SigmaClip(sigma=3, maxiters=10)`` by default. ``max_distance`` bounds
    the inverse-distance neighbour search, in boxes: it is what makes the
    interpolation local and hence exactly tileable (see ``kernels._idw``).

    Parameters
    ----------
    box_size : int or (int, int)
        Mesh box size ``(ny, nx)`` in pixels.
    filter_size : int or (int, int)
        Odd size, in boxes, of the median filter of the mesh.
    filter_threshold : float or None
        Filter only boxes above this background (photutils' rule); None: all.
    exclude_percentile : float
        Boxes with more than this percentage of masked pixels are excluded.
    sigma_clip : float or None
        Per-box clipping threshold in sigma; None: no clipping.
    sigma_clip_maxiters : int
        Most clipping iterations per box.
    bkg_estimator : str
        Name of the background estimator (`tilesky.estimators.BKG_ESTIMATORS`).
    bkg_rms_estimator : str
        Name of the RMS estimator (`tilesky.estimators.RMS_ESTIMATORS`).
    interpolator : {"idw", "spline"}
        Interpolation of the mesh to pixels.
    n_neighbors : int
        Neighbouring boxes of the inverse-distance interpolation.
    power, regularization : float
        The inverse-distance weights are ``1 / (d**power + regularization)``,
        ``d`` in boxes.
    max_distance : float
        Reach of the neighbour search, in boxes.
    fill_n_neighbors : int
        Neighbours used to fill excluded boxes.
    """

    box_size: tuple[int, int] = (6, 6)
    filter_size: tuple[int, int] = (3, 3)
    filter_threshold: float | None = None
    exclude_percentile: float = 90.0
    sigma_clip: float | None = 3.0
    sigma_clip_maxiters: int = 10
    bkg_estimator: str = "median"
    bkg_rms_estimator: str = "std"
    interpolator: str = "idw"
    n_neighbors: int = 20
    power: float = 0.0
    regularization: float = 30.0
    max_distance: float = 16.0
    fill_n_neighbors: int = 10

    def __post_init__(self) -> None:
        object.__setattr__(self, "box_size", _pair("box_size", self.box_size))
        object.__setattr__(self, "filter_size", _pair("filter_size", self.filter_size))
        if min(self.box_size) < 1:
            msg = f"box_size must be positive, got {self.box_size}"
            raise ConfigError(msg)
        if min(self.filter_size) < 1 or any(f % 2 == 0 for f in self.filter_size):
            msg = (
                f"filter_size must be odd and positive, got {self.filter_size}; "
                "use e.g. 3 or (3, 5)"
            )
            raise ConfigError(msg)
        if not 0 <= self.exclude_percentile <= 100:
            msg = (
                "exclude_percentile must be between 0 and 100 (inclusive), "
                f"got {self.exclude_percentile!r}"
            )
            raise ConfigError(msg)
        if self.sigma_clip is not None:
            _positive("sigma_clip", self.sigma_clip)
        if self.filter_threshold is not None:
            _number("filter_threshold", self.filter_threshold)
        if (
            isinstance(self.sigma_clip_maxiters, bool)
            or not isinstance(self.sigma_clip_maxiters, int)
            or self.sigma_clip_maxiters < 1
        ):
            msg = (
                "sigma_clip_maxiters must be an integer >= 1, "
                f"got {self.sigma_clip_maxiters!r}"
            )
            raise ConfigError(msg)
        _choice("bkg_estimator", self.bkg_estimator, BKG_ESTIMATOR_NAMES)
        _choice("bkg_rms_estimator", self.bkg_rms_estimator, RMS_ESTIMATOR_NAMES)
        _choice("interpolator", self.interpolator, INTERPOLATORS)
        for name in ("n_neighbors", "fill_n_neighbors"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                msg = f"{name} must be an integer >= 1, got {value!r}"
                raise ConfigError(msg)
        _positive("power", self.power, allow_zero=True)
        _positive("regularization", self.regularization, allow_zero=True)
        _positive("max_distance", self.max_distance)
        if self.max_distance > MAX_DISTANCE_BOXES:
            # The neighbour search's window grows with its square.
            msg = (
                f"max_distance must be at most {MAX_DISTANCE_BOXES} boxes, "
                f"got {self.max_distance!r}"
            )
            raise ConfigError(msg)


#: The reach of the mesh's neighbour search, in boxes, that keeps its
#: window's memory finite.
MAX_DISTANCE_BOXES = 1024


@dataclass(frozen=True)
class SourceMaskConfig:
    """Multi-scale source masks on ``scene - background``.

    For each ``fwhm[i]``: smooth with a Gaussian of that FWHM, threshold at
    ``n_sigma`` times the noise of the unsmoothed residual (as photutils'
    old ``make_source_mask`` did: sigma-clipped at ``noise_sigma_clip`` with
    at most ``noise_sigma_clip_maxiters`` passes, its default 5), keep
    8-connected groups of at least
    ``n_pixels``, dilate with a circular top-hat of ``tophat_radius[i]``;
    the scales are ORed.

    Parameters
    ----------
    fwhm : tuple of float
        FWHM, in pixels, of the smoothing at each scale.
    tophat_radius : tuple of int
        Dilation radius, in pixels, at each scale (as many as ``fwhm``).
    n_sigma : float
        Threshold in units of the noise (>= 0).
    n_pixels : int
        Smallest 8-connected group kept (>= 1).
    noise_sigma_clip : float or None
        Clipping threshold of the residual's noise; None: no clipping.
    noise_sigma_clip_maxiters : int
        Most clipping iterations of that estimate.
    coarse_fwhm : tuple of float
        FWHMs (px) of coarse detection scales, run on the residual without
        the fine scales' detections and thresholded at ``coarse_n_sigma``
        times the smoothed map's noise (empty: none; see
        ``stages._source_mask.scales``).
    coarse_n_sigma : float
        Threshold of the coarse scales, in the smoothed map's noise.
    grow_factor : float
        Each detected region grows by this factor times its thickness
        (distance from its edge; 0: no growth), so big sources get wide
        margins and point sources none (``kernels._grow``).
    grow_min_thickness : int
        Regions thinner than this (px) do not grow.
    grow_max_thickness : int
        Thickness is capped here (px), which bounds the growth and the halo.
    auto_coarse_fraction : float
        Extended-source detection decided from the data: in the first
        round, the masks with the coarse scales ``auto_coarse_fwhm`` and
        the growth ``auto_grow_factor`` / ``auto_grow_max_thickness`` are
        compared with the configured ones; when they add less than this
        fraction of the covered image the sky is smooth on those scales
        (what they find is sources) and every round uses them, else (they
        follow structure of the sky itself) the configured masks are kept.
        0: never (see ``stages._source_mask.coarse_gate``).
    auto_coarse_fwhm : tuple of float
        The coarse scales the data may switch on.
    auto_grow_factor : float
        The growth factor that goes with them.
    auto_grow_max_thickness : int
        Their growth's thickness cap (px).
    extended_fraction : float
        Extended sources found on binned cells (``stages._extended``): in
        the first round, cells of ``first_mesh.box_size`` whose Gaussian
        means stand above the local sky plane are masked, each grown by
        its size, in every round, unless they add this fraction or more of
        the covered image to the mask (then they follow the sky itself and
        nothing changes). 0: never.
    extended_sigma : tuple of float
        Gaussian sigmas (px) of the binned detection scales.
    extended_surround : float
        Gaussian sigma (px) of the window of the local sky plane.
    extended_n_sigma : float
        Threshold of the binned scales, in each scale's own noise.
    extended_grow : float
        Each binned detection grows by this factor times its thickness.
    extended_max_thickness : int
        Thickness cap (px) of that growth.
    """

    fwhm: tuple[float, ...] = (1.0, 3.0, 5.0)
    tophat_radius: tuple[int, ...] = (4, 2, 1)
    n_sigma: float = 1.5
    n_pixels: int = 3
    noise_sigma_clip: float | None = 3.0
    noise_sigma_clip_maxiters: int = 5
    coarse_fwhm: tuple[float, ...] = ()
    coarse_n_sigma: float = 4.0
    grow_factor: float = 0.5
    grow_min_thickness: int = 16
    grow_max_thickness: int = 48
    auto_coarse_fraction: float = 0.0
    auto_coarse_fwhm: tuple[float, ...] = (20.0, 40.0, 80.0)
    auto_grow_factor: float = 1.0
    auto_grow_max_thickness: int = 96
    extended_fraction: float = 0.3
    extended_sigma: tuple[float, ...] = (10.0, 20.0, 40.0)
    extended_surround: float = 200.0
    extended_n_sigma: float = 4.0
    extended_grow: float = 0.0
    extended_max_thickness: int = 200

    def __post_init__(self) -> None:
        object.__setattr__(self, "fwhm", _floats("source_mask.fwhm", self.fwhm))
        _positive("source_mask.grow_factor", self.grow_factor, allow_zero=True)
        coarse = _floats("source_mask.coarse_fwhm", self.coarse_fwhm)
        object.__setattr__(self, "coarse_fwhm", coarse)
        for f in coarse:
            _positive("source_mask.coarse_fwhm", f)
        _positive("source_mask.coarse_n_sigma", self.coarse_n_sigma)
        auto = _floats("source_mask.auto_coarse_fwhm", self.auto_coarse_fwhm)
        object.__setattr__(self, "auto_coarse_fwhm", auto)
        for f in auto:
            _positive("source_mask.auto_coarse_fwhm", f)
        _fraction("source_mask.auto_coarse_fraction", self.auto_coarse_fraction)
        ext = _floats("source_mask.extended_sigma", self.extended_sigma)
        object.__setattr__(self, "extended_sigma", ext)
        if not ext:
            raise ConfigError("source_mask.extended_sigma must not be empty")
        for f in ext:
            _positive("source_mask.extended_sigma", f)
        _positive("source_mask.extended_surround", self.extended_surround)
        _positive("source_mask.extended_n_sigma", self.extended_n_sigma)
        _positive("source_mask.extended_grow", self.extended_grow, allow_zero=True)
        _fraction("source_mask.extended_fraction", self.extended_fraction)
        _positive(
            "source_mask.auto_grow_factor", self.auto_grow_factor, allow_zero=True
        )
        for name, low in (
            ("grow_min_thickness", 1),
            ("grow_max_thickness", 1),
            ("auto_grow_max_thickness", 1),
            ("extended_max_thickness", 1),
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                msg = f"source_mask.{name} must be an integer >= {low}, got {value!r}"
                raise ConfigError(msg)
        radii = _floats("source_mask.tophat_radius", self.tophat_radius)
        if any(not r.is_integer() or r < 0 for r in radii):
            msg = (
                "source_mask.tophat_radius must be integers >= 0, "
                f"got {self.tophat_radius!r}"
            )
            raise ConfigError(msg)
        object.__setattr__(self, "tophat_radius", tuple(int(r) for r in radii))
        if len(self.fwhm) != len(self.tophat_radius) or not self.fwhm:
            msg = (
                "source_mask.fwhm and source_mask.tophat_radius must have the same, "
                f"non-zero length; got {len(self.fwhm)} and {len(self.tophat_radius)}"
            )
            raise ConfigError(msg)
        for f in self.fwhm:
            _positive("source_mask.fwhm", f)
        _positive("source_mask.n_sigma", self.n_sigma, allow_zero=True)
        if isinstance(self.n_pixels, bool) or not isinstance(self.n_pixels, int):
            msg = f"source_mask.n_pixels must be an integer >= 1, got {self.n_pixels!r}"
            raise ConfigError(msg)
        if self.n_pixels < 1:
            msg = f"source_mask.n_pixels must be an integer >= 1, got {self.n_pixels!r}"
            raise ConfigError(msg)
        if self.noise_sigma_clip is not None:
            _positive("source_mask.noise_sigma_clip", self.noise_sigma_clip)
        _maxiters(
            "source_mask.noise_sigma_clip_maxiters", self.noise_sigma_clip_maxiters
        )


@dataclass(frozen=True)
class SmoothFitConfig:
    """Masked Gaussian-weighted local polynomial fit at full resolution.

    Used as the final background when ``final_method = "smoothfit"``.
    ``scale`` is the Gaussian sigma of the weighting window in pixels,
    ``order`` the local polynomial order (0: normalized convolution,
    2: local quadratic), ``truncate`` the window radius in sigmas (the halo),
    ``step`` the spacing in pixels of the grid on which the fit is solved
    before cubic interpolation to every pixel (chunks are multiples of it).

    Masked regions are bridged from the sky around them: where less than
    ``coverage_high`` of the window's weight falls on usable pixels the fit
    is blended, down to ``coverage_low``, into a *bridge*: the same fit at
    the wider ``bridge_scale`` (order ``bridge_order``, solved every
    ``bridge_step`` px), itself fading to its window's weighted mean where
    it is short of pixels. ``bridge_scale = 0`` turns the bridge off.

    Parameters
    ----------
    scale : float
        Gaussian sigma of the weighting window, in pixels.
    order : {0, 1, 2}
        Order of the local polynomial.
    truncate : float
        Window radius in sigmas (the halo).
    step : int
        Spacing, in pixels, of the grid the fit is solved on.
    bridge_scale : float
        Gaussian sigma of the bridge's window, in pixels (0: no bridge).
    bridge_order : {0, 1, 2}
        Order of the bridge's local polynomial.
    bridge_step : int
        Spacing, in pixels, of the grid the bridge is solved on (chunks are
        multiples of it).
    coverage_low, coverage_high : float
        Window coverage (fraction of its weight on usable pixels) at which
        the fit is all bridge, and from which it is all fit.
    binning, bridge_binning : int or None
        The fit (the bridge) reads ``binning x binning`` bins of pixels
        (their sums and counts, at the bin centres) instead of single
        pixels: ``binning**2`` times less work for a window widened by a
        ``binning``-px box (sigma**2 + binning**2 / 12). Each must divide
        its grid step; 1 fits pixels. None (default): the largest divisor
        of the step not above an eighth of the scale, which widens the
        window by less than 0.07 % (3 for the fit, 10 for the bridge).
    """

    scale: float = 25.0
    order: int = 2
    truncate: float = 4.0
    step: int = 6
    bridge_scale: float = 100.0
    bridge_order: int = 1
    bridge_step: int = 30
    coverage_low: float = 0.02
    coverage_high: float = 0.15
    binning: int | None = None
    bridge_binning: int | None = None

    def __post_init__(self) -> None:
        _positive("smoothfit.scale", self.scale)
        _positive("smoothfit.bridge_scale", self.bridge_scale, allow_zero=True)
        if self.bridge_order not in (0, 1, 2):
            msg = f"smoothfit.bridge_order must be 0, 1 or 2, got {self.bridge_order!r}"
            raise ConfigError(msg)
        if (
            isinstance(self.bridge_step, bool)
            or not isinstance(self.bridge_step, int)
            or self.bridge_step < 1
        ):
            msg = "smoothfit.bridge_step must be an integer >= 1, got "
            msg += repr(self.bridge_step)
            raise ConfigError(msg)
        _number("smoothfit.coverage_low", self.coverage_low)
        _number("smoothfit.coverage_high", self.coverage_high)
        if not 0 <= self.coverage_low < self.coverage_high <= 1:
            msg = (
                "smoothfit.coverage_low and coverage_high must satisfy "
                f"0 <= low < high <= 1, got {self.coverage_low!r}, "
                f"{self.coverage_high!r}"
            )
            raise ConfigError(msg)
        if (
            isinstance(self.step, bool)
            or not isinstance(self.step, int)
            or self.step < 1
        ):
            msg = f"smoothfit.step must be an integer >= 1, got {self.step!r}"
            raise ConfigError(msg)
        _positive("smoothfit.truncate", self.truncate)
        if isinstance(self.order, bool) or self.order not in (0, 1, 2):
            msg = f"smoothfit.order must be 0, 1 or 2, got {self.order!r}"
            raise ConfigError(msg)
        for name, value, step in (
            ("binning", self.binning, "step"),
            ("bridge_binning", self.bridge_binning, "bridge_step"),
        ):
            grid = getattr(self, step)
            if value is None:
                continue
            if (
                isinstance(value, bool)
                or not isinstance(value, int)
                or value < 1
                or grid % value
            ):
                msg = (
                    f"smoothfit.{name} must be an integer >= 1 that divides "
                    f"smoothfit.{step}={grid}, got {value!r}"
                )
                raise ConfigError(msg)

    @property
    def fit_binning(self) -> int:
        """The fit's bin edge in pixels: ``binning``, or its automatic value."""
        return _auto_binning(self.binning, self.scale, self.step)

    @property
    def bridge_fit_binning(self) -> int:
        """The bridge's bin edge in pixels (``bridge_binning`` or automatic)."""
        return _auto_binning(self.bridge_binning, self.bridge_scale, self.bridge_step)


def _auto_binning(binning: int | None, scale: float, step: int) -> int:
    if binning is not None:
        return binning
    limit = max(1.0, scale / 8)
    return max(b for b in range(1, step + 1) if step % b == 0 and b <= limit)


def _depth_mesh_default() -> MeshConfig:
    # Boxes of 30 px hold ~600 unmasked pixels each: their RMS is good to a
    # few per cent, and the 5x5 median filter makes the map smooth on the
    # scale of 150 px. 30 divides the default chunk multiple.
    return MeshConfig(
        box_size=(30, 30),
        filter_size=(5, 5),
        exclude_percentile=50.0,
        bkg_rms_estimator="std",
        max_distance=8.0,
    )


def _first_mesh_default() -> MeshConfig:
    return MeshConfig(
        box_size=(10, 10),
        filter_size=(5, 5),
        exclude_percentile=90.0,
        power=1.0,
    )


@dataclass(frozen=True)
class Config:
    """The whole pipeline's configuration.

    Parameters
    ----------
    ring : RingConfig
        Ring-median footprint.
    first_mask : FirstMaskConfig
        The first mask's smoothing, threshold and dilation.
    first_mesh : MeshConfig
        The first mesh background (and the local noise map).
    source_mask : SourceMaskConfig
        The multi-scale masks of each round.
    final_mesh : MeshConfig
        The final mesh background (the smooth fit's hole filler).
    smoothfit : SmoothFitConfig
        The smooth masked fit.
    final_method : {"smoothfit", "mesh"}
        The final background of each round.
    n_rounds : int
        Rounds of (multi-scale masks, final background), at least 1.
    noise_mode : {"auto", "global", "local"}
        Thresholds from a noise model that follows depth (``auto``: the
        weight map if given, else a coarse noise map where the data show
        the depth varies, else one global level), one global level, or the
        local mesh RMS maps.
    smooth_truncate : float
        Gaussian smoothing kernels' radius, in sigmas.
    depth_mesh : MeshConfig
        The coarse mesh the ``auto`` noise model measures depth on.
    depth_ratio : float
        ``auto``: depth counts as varying when the filtered ``depth_mesh``
        RMS varies by at least this factor (max / min).
    dq_bits : int, optional
        Data-quality bits that make a pixel of a survey product's ``DQ``
        extension unusable (0 to 2**32 - 1); None: JWST's ``DO_NOT_USE``
        for JWST files, any flag otherwise (:mod:`tilesky.io._products`).

    Examples
    --------
    >>> from tilesky.config import Config
    >>> cfg = Config().with_overrides(["final_mesh.box_size=8", "noise_mode='local'"])
    >>> cfg.final_mesh.box_size, cfg.noise_mode
    ((8, 8), 'local')
    """

    ring: RingConfig = field(default_factory=RingConfig)
    first_mask: FirstMaskConfig = field(default_factory=FirstMaskConfig)
    first_mesh: MeshConfig = field(default_factory=_first_mesh_default)
    source_mask: SourceMaskConfig = field(default_factory=SourceMaskConfig)
    final_mesh: MeshConfig = field(default_factory=MeshConfig)
    smoothfit: SmoothFitConfig = field(default_factory=SmoothFitConfig)
    final_method: str = "smoothfit"
    n_rounds: int = 2
    noise_mode: str = "auto"
    smooth_truncate: float = 4.0
    depth_mesh: MeshConfig = field(default_factory=_depth_mesh_default)
    depth_ratio: float = 1.5
    dq_bits: int | None = None

    def __post_init__(self) -> None:
        _choice("final_method", self.final_method, FINAL_METHODS)
        _choice("noise_mode", self.noise_mode, NOISE_MODES)
        if isinstance(self.n_rounds, bool) or not isinstance(self.n_rounds, int):
            msg = f"n_rounds must be an integer >= 1, got {self.n_rounds!r}"
            raise ConfigError(msg)
        if not 1 <= self.n_rounds <= MAX_ROUNDS:
            # Each round rewrites every checkpoint; the mask converges in 2-3.
            msg = (
                f"n_rounds must be an integer between 1 and {MAX_ROUNDS}, "
                f"got {self.n_rounds!r}"
            )
            raise ConfigError(msg)
        _positive("smooth_truncate", self.smooth_truncate)
        _number("depth_ratio", self.depth_ratio)
        if not self.depth_ratio >= 1:
            msg = f"depth_ratio must be a number >= 1, got {self.depth_ratio!r}"
            raise ConfigError(msg)
        _dq_bits(self.dq_bits)

    # -- (de)serialisation ------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """A JSON/TOML-friendly nested dict (tuples become lists).

        Returns
        -------
        dict
            One entry per field; sections are dicts of their fields.
        """

        def plain(value: Any) -> Any:
            if isinstance(value, tuple):
                return [plain(v) for v in value]
            return value

        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if dataclasses.is_dataclass(value):
                out[f.name] = {
                    g.name: plain(getattr(value, g.name)) for g in fields(value)
                }
            else:
                out[f.name] = plain(value)
        return out

    @classmethod
    def from_dict(
        cls, data: Mapping[str, Any], *, base: Config | None = None
    ) -> Config:
        """Build a config from a nested mapping, starting from ``base``.

        Parameters
        ----------
        data : mapping
            Top-level keys and sections (mappings of a section's keys), as
            :meth:`to_dict` writes them; keys left out keep ``base``'s values.
        base : Config, optional
            The configuration to change; the defaults when None.

        Returns
        -------
        Config
            ``base`` with ``data`` applied.

        Raises
        ------
        ConfigError
            An unknown key or section, or a value out of range.
        """
        base = base if base is not None else cls()
        changes: dict[str, Any] = {}
        known = {f.name: f for f in fields(cls)}
        for key, value in data.items():
            if key not in known:
                msg = (
                    f"unknown configuration key {key!r}; known keys: {', '.join(known)}"
                )
                raise ConfigError(msg)
            current = getattr(base, key)
            if dataclasses.is_dataclass(current):
                if not isinstance(value, Mapping):
                    msg = (
                        f"configuration section {key!r} must be a table, got {value!r}"
                    )
                    raise ConfigError(msg)
                sub_known = {f.name for f in fields(current)}
                unknown = set(value) - sub_known
                if unknown:
                    msg = (
                        f"unknown key(s) {', '.join(sorted(map(repr, unknown)))} in "
                        f"[{key}]; known keys: {', '.join(sorted(sub_known))}"
                    )
                    raise ConfigError(msg)
                try:
                    changes[key] = replace(current, **dict(value))
                except TypeError as exc:
                    raise ConfigError(f"[{key}]: {exc}") from None
            else:
                changes[key] = value
        try:
            return replace(base, **changes)
        except TypeError as exc:
            raise ConfigError(str(exc)) from None

    def with_overrides(self, pairs: Iterable[str]) -> Config:
        """Apply ``key=value`` overrides; values use TOML syntax.

        A bare word that is not valid TOML is taken as a string, so
        ``noise_mode=local`` works as well as ``noise_mode="local"``.

        Parameters
        ----------
        pairs : iterable of str
            ``key=value`` or ``section.key=value`` strings.

        Returns
        -------
        Config
            A new configuration with the overrides applied.
        """
        nested: dict[str, Any] = {}
        for pair in pairs:
            key, sep, raw = pair.partition("=")
            key = key.strip()
            if not sep or not key:
                msg = f"overrides expects key=value strings, got {pair!r}"
                raise ConfigError(msg, params="overrides")
            value = _parse_value(raw.strip())
            parts = key.split(".")
            if len(parts) > 2:
                msg = (
                    f"configuration key {key!r} is nested too deeply (use section.key)"
                )
                raise ConfigError(msg)
            if len(parts) == 2:
                nested.setdefault(parts[0], {})[parts[1]] = value
            else:
                nested[parts[0]] = value
        return Config.from_dict(nested, base=self)

    @property
    def box_sizes(self) -> list[tuple[int, int]]:
        """Every grid the pipeline anchors at (0, 0); chunks must be multiples."""
        sizes = [self.first_mesh.box_size, self.final_mesh.box_size]
        if self.noise_mode == "auto":
            sizes.append(self.depth_mesh.box_size)
        if self.final_method == "smoothfit":
            sizes.append((self.smoothfit.step, self.smoothfit.step))
            if self.smoothfit.bridge_scale > 0:
                step = self.smoothfit.bridge_step
                sizes.append((step, step))
        return sizes

    @property
    def chunk_multiple(self) -> tuple[int, int]:
        """Chunk edges must be multiples of this (lcm of the mesh boxes)."""
        ys, xs = zip(*self.box_sizes, strict=True)
        return (math.lcm(*ys), math.lcm(*xs))


#: Named starting points. ``notebook`` is the reference notebook's
#: sequence (ring median, first mask, box-10 mesh with IDW, multi-scale
#: masks, box-6 mesh with IDW). ``default`` keeps its masks and replaces the
#: last mesh + IDW step by the masked local quadratic fit, iterated twice
#: with the multi-scale masks: residual RMS against the truth about 0.35x
#: the notebook's on its scene (benchmarks/quality.py).
PRESETS: dict[str, Config] = {
    "notebook": Config(
        final_method="mesh",
        n_rounds=1,
        noise_mode="global",
        source_mask=SourceMaskConfig(grow_factor=0.0, extended_fraction=0.0),
    ),
    "default": Config(),
}


def load_config(
    path: str | Path | None = None,
    *,
    preset: str | None = None,
    overrides: Iterable[str] = (),
) -> Config:
    """Load a configuration: preset, then TOML file, then ``key=value`` overrides.

    Parameters
    ----------
    path : str or Path, optional
        A TOML file whose tables are the sections of :class:`Config`.
    preset : str, optional
        Name of a starting point in :data:`PRESETS` (default ``"default"``).
    overrides : iterable of str
        ``section.key=value`` strings, applied last.

    Returns
    -------
    Config
        The validated configuration.
    """
    data = None if path is None else _read_toml(path)
    # A file's ``preset = "..."`` is its starting point; preset= wins.
    named = data.pop("preset", None) if data is not None else None
    name = preset or named or "default"
    if name == "sextractor":
        msg = (
            "the sextractor preset is a run mode of its own: use "
            "tilesky.sextractor_mode.estimate_sextractor or run_sextractor"
        )
        raise ConfigError(msg)
    if not isinstance(name, str) or name not in PRESETS:
        where = f" in {str(path)!r}" if name == named else ""
        msg = (
            f"unknown preset {name!r}{where}; choose one of "
            f"{', '.join(sorted(PRESETS))}"
        )
        raise ConfigError(msg)
    cfg = PRESETS[name]
    if data is not None:
        cfg = Config.from_dict(data, base=cfg)
    return cfg.with_overrides(overrides)

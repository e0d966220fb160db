"""Sky grid lines on the report's map panels, for inputs with a celestial WCS.

The panels keep their pixel axes (what DS9 and the arrays use); where the
input has a celestial WCS, lines of constant longitude and latitude are
drawn over the map and labelled (right ascension and declination in
sexagesimal; galactic, ecliptic and other frames in degrees), so a rotated,
flipped or distorted WCS still reads correctly. The lines are contours of the world
coordinates evaluated on a coarse grid of input pixels (the WCS is smooth
on the scale of a panel's pixels), so no plotting projection is needed and
the object API of matplotlib is enough.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["GridLine", "axis_names", "celestial_wcs", "draw_sky_grid", "grid_levels"]

#: Grid spacings: declination in arcseconds, right ascension in seconds of
#: time (the steps a sky atlas uses).
_DEC_STEPS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200,
              18000, 36000, 72000, 108000)  # fmt: skip
_RA_STEPS = (0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800,
             3600, 7200, 14400)  # fmt: skip
#: Points per side of the grid the world coordinates are evaluated on.
_SAMPLES = 96
_COLOUR = "tab:orange"


@dataclass(frozen=True)
class GridLine:
    """One drawn line: ``"lon"`` or ``"lat"``, its value (deg) and label."""

    axis: str
    level: float
    label: str
    vertices: tuple[np.ndarray, ...]


def celestial_wcs(header_text: str | None) -> Any:
    """The celestial WCS of a stored header, or None when it has none."""
    if not header_text:
        return None
    from astropy.io import fits
    from astropy.wcs import WCS, FITSFixedWarning

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FITSFixedWarning)
            wcs = WCS(fits.Header.fromstring(header_text)).celestial
    except Exception:  # a header astropy cannot read has no grid to draw
        return None
    return wcs if wcs.has_celestial and wcs.naxis == 2 else None


def _step(span: float, steps: tuple[float, ...], lines: int = 5) -> float:
    """The smallest step giving at most about ``lines`` lines over ``span``."""
    for s in steps:
        if span / s <= lines:
            return float(s)
    return float(steps[-1])


def grid_levels(lo: float, hi: float, step: float) -> np.ndarray:
    """Multiples of ``step`` strictly inside ``(lo, hi)``."""
    first = np.ceil(lo / step)
    last = np.floor(hi / step)
    levels = np.arange(first, last + 1) * step
    return levels[(levels > lo) & (levels < hi)]


def _world(wcs, extent: tuple[float, float, float, float]):
    x0, x1, y0, y1 = extent
    xs = np.linspace(x0, x1, _SAMPLES)
    ys = np.linspace(y0, y1, _SAMPLES)
    xx, yy = np.meshgrid(xs, ys)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ra, dec = wcs.pixel_to_world_values(xx, yy)
    lon = wcs.wcs.lng if wcs.wcs.lng >= 0 else 0
    if lon == 1:
        ra, dec = dec, ra
    return xx, yy, np.asarray(ra, float), np.asarray(dec, float)


def _degrees(deg: float, step_deg: float, sign: bool) -> str:
    digits = max(0, int(np.ceil(-np.log10(step_deg) - 1e-9)))
    return f"{deg:{'+' if sign else ''}.{digits}f}\N{DEGREE SIGN}"


def axis_names(wcs) -> tuple[str, str]:
    """The names of the longitude and latitude lines (``RA``, ``Dec``...)."""
    ctype = wcs.wcs.ctype[max(wcs.wcs.lng, 0)].upper()
    if ctype.startswith("RA"):
        return "RA", "Dec"
    if ctype.startswith("GLON"):
        return "l", "b"
    if ctype.startswith("ELON"):
        return "ecliptic lon", "ecliptic lat"
    return "lon", "lat"


def _ra_label(deg: float, step_s: float) -> str:
    from astropy import units as u
    from astropy.coordinates import Angle

    digits = 0 if step_s >= 1 else 1
    return Angle(deg % 360, u.deg).to_string(
        unit=u.hour, sep="hms", precision=digits, pad=True
    )


def _dec_label(deg: float) -> str:
    from astropy import units as u
    from astropy.coordinates import Angle

    return Angle(deg, u.deg).to_string(
        unit=u.deg, sep=("\N{DEGREE SIGN}", "\u2032", "\u2033"), precision=0, pad=True,
        alwayssign=True,
    )  # fmt: skip


def _contours(ax, xx, yy, values, levels, labels) -> list[tuple[float, str, tuple]]:
    ok = np.isfinite(values)
    if len(levels) == 0 or ok.sum() < 4:
        return []
    cs = ax.contour(
        xx,
        yy,
        np.ma.masked_invalid(values),
        levels=levels,
        colors=_COLOUR,
        linewidths=0.7,
        linestyles="solid",
        alpha=0.85,
    )
    texts = ax.clabel(cs, fmt=dict(zip(cs.levels, labels, strict=True)), fontsize=8)
    for text in texts:
        # Readable over any colour map.
        text.set_color("black")
        text.set_bbox({"facecolor": "white", "alpha": 0.75, "edgecolor": "none",
                       "pad": 0.5})  # fmt: skip
    out = []
    for level, label, segs in zip(cs.levels, labels, cs.allsegs, strict=True):
        out.append((float(level), label, tuple(np.asarray(s) for s in segs)))
    return out


def draw_sky_grid(ax, wcs, extent: tuple[float, float, float, float]) -> list[GridLine]:
    """Draw longitude/latitude lines over the pixel ``extent`` of ``ax``.

    Parameters
    ----------
    ax : matplotlib.axes.Axes
        A panel whose data coordinates are the input's 0-based pixels.
    wcs : astropy.wcs.WCS
        The input's celestial WCS.
    extent : tuple of float
        The pixel range the panel shows.

    Returns
    -------
    list of GridLine
        The lines drawn, with their vertices in pixels (for checks).
    """
    xx, yy, ra, dec = _world(wcs, extent)
    if not np.isfinite(ra).any():
        return []
    # Longitude relative to the panel's centre, so a field across 0h (or
    # l = 0) is one continuous range.
    centre = float(np.nanmedian(ra))
    rel = (ra - centre + 180.0) % 360.0 - 180.0
    equatorial = axis_names(wcs)[0] == "RA"
    # Equatorial longitudes step in seconds of time, others in arcseconds.
    unit = 240.0 if equatorial else 3600.0
    lon_step = _step(
        (np.nanmax(rel) - np.nanmin(rel)) * unit,
        _RA_STEPS if equatorial else _DEC_STEPS,
    )
    levels = grid_levels(
        (centre + np.nanmin(rel)) * unit, (centre + np.nanmax(rel)) * unit, lon_step
    )
    rel_levels = (levels / unit - centre + 180.0) % 360.0 - 180.0
    order = np.argsort(rel_levels)
    rel_levels, levels = rel_levels[order], levels[order]
    if equatorial:
        labels = [_ra_label(v / unit, lon_step) for v in levels]
    else:
        labels = [_degrees((v / unit) % 360, lon_step / unit, False) for v in levels]
    lines = []
    for level, label, segs in _contours(ax, xx, yy, rel, rel_levels, labels):
        lines.append(GridLine("lon", (level + centre) % 360.0, label, segs))
    lat_step = _step((np.nanmax(dec) - np.nanmin(dec)) * 3600.0, _DEC_STEPS)
    levels = grid_levels(np.nanmin(dec) * 3600.0, np.nanmax(dec) * 3600.0, lat_step)
    if equatorial:
        labels = [_dec_label(v / 3600.0) for v in levels]
    else:
        labels = [_degrees(v / 3600.0, lat_step / 3600.0, True) for v in levels]
    for level, label, segs in _contours(ax, xx, yy, dec, levels / 3600.0, labels):
        lines.append(GridLine("lat", level, label, segs))
    return lines

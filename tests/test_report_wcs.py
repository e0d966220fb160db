"""Sky grid lines on the report's panels, from the input's celestial WCS."""

import re

import numpy as np
import pytest

pytest.importorskip("matplotlib")
import xarray as xr
from astropy.wcs import WCS

from tilesky._report_wcs import (
    axis_names,
    celestial_wcs,
    draw_sky_grid,
    grid_levels,
)
from tilesky.report import _Plotting, write_report

SHAPE = (300, 400)


def _wcs(ctype=("RA---TAN", "DEC--TAN"), crval=(0.01, -30.0), angle=30.0):
    w = WCS(naxis=2)
    w.wcs.ctype = list(ctype)
    w.wcs.crval = list(crval)
    w.wcs.crpix = [SHAPE[1] / 2, SHAPE[0] / 2]
    scale = 0.4 / 3600
    c, s = np.cos(np.radians(angle)), np.sin(np.radians(angle))
    w.wcs.cd = [[-scale * c, scale * s], [scale * s, scale * c]]
    return w


def _lines(wcs):
    fig, _ = _Plotting().figure((5, 4))
    ax = fig.subplots()
    extent = (-0.5, SHAPE[1] - 0.5, -0.5, SHAPE[0] - 0.5)
    return draw_sky_grid(ax, celestial_wcs(wcs.to_header().tostring()), extent)


def test_lines_follow_the_wcs_across_ra_zero_with_rotation():
    # The field straddles RA = 0h and is rotated: each line's vertices,
    # taken back through the WCS, lie on the line's own RA or Dec.
    wcs = _wcs()
    lines = _lines(wcs)
    lon = [g for g in lines if g.axis == "lon"]
    lat = [g for g in lines if g.axis == "lat"]
    assert len(lon) >= 2 and len(lat) >= 2
    levels = sorted(((g.level + 180) % 360) - 180 for g in lon)
    assert levels[0] < 0 < levels[-1]  # lines on both sides of 0h
    for g in lines:
        xy = np.concatenate(g.vertices)
        assert len(xy) >= 2
        ra, dec = wcs.pixel_to_world_values(xy[:, 0], xy[:, 1])
        if g.axis == "lon":
            off = ((ra - g.level + 180) % 360) - 180
            assert np.max(np.abs(off)) * 3600 < 0.05  # arcsec
            assert re.fullmatch(r"\d\dh\d\dm\d\ds", g.label), g.label
        else:
            assert np.max(np.abs(dec - g.level)) * 3600 < 0.05
            assert re.fullmatch(r"-\d\d°\d\d′\d\d″", g.label), g.label


def test_galactic_frames_are_labelled_in_degrees():
    wcs = _wcs(("GLON-CAR", "GLAT-CAR"), crval=(18.0, 0.0), angle=0.0)
    lines = _lines(wcs)
    assert axis_names(celestial_wcs(wcs.to_header().tostring())) == ("l", "b")
    assert {g.axis for g in lines} == {"lon", "lat"}
    assert all(g.label.endswith("°") for g in lines)
    assert any(g.label.startswith(("+", "-")) for g in lines if g.axis == "lat")


def test_no_celestial_wcs_no_grid():
    assert celestial_wcs(None) is None
    assert celestial_wcs("") is None
    linear = WCS(naxis=2)
    linear.wcs.ctype = ["LINEAR", "LINEAR"]
    assert celestial_wcs(linear.to_header().tostring()) is None


def test_grid_levels_are_multiples_inside_the_range():
    np.testing.assert_allclose(grid_levels(-7.0, 21.0, 5.0), [-5, 0, 5, 10, 15, 20])
    assert grid_levels(1.0, 2.0, 5.0).size == 0


def _dataset(header):
    rng = np.random.default_rng(1)
    bkg = (1 + 0.01 * rng.normal(size=SHAPE)).astype(np.float32)
    yx = ("y", "x")
    attrs = {"config": {}}
    if header is not None:
        attrs["wcs_header"] = header
    return xr.Dataset(
        {
            "background": (yx, bkg),
            "background_rms": (yx, np.full(SHAPE, 0.1, np.float32)),
            "subtracted": (yx, rng.normal(size=SHAPE).astype(np.float32)),
        },
        attrs=attrs,
    )


@pytest.mark.parametrize("with_wcs", [True, False])
def test_report_panels_carry_the_grid_only_with_a_wcs(tmp_path, with_wcs):
    header = _wcs().to_header().tostring() if with_wcs else None
    html = write_report(_dataset(header), tmp_path, max_pixels=200).read_text()
    assert ("sky coordinates from the input" in html) == with_wcs
    assert "Background RMS" in html
    assert (tmp_path / "background_rms_panel.png").exists()

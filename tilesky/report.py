"""An HTML report of a run: maps, quality plots, configuration and metrics.

Maps are block means of the lazy arrays (``dask.array.coarsen``), so a
mosaic is never loaded whole: only the small downsampled image reaches
matplotlib. matplotlib is optional (``pip install 'tilesky[plots]'``) and is
used through its object API with the Agg canvas (never ``pyplot``), so the
caller's backend is left alone and no pyplot global state is touched.

Rendering is kept cheap: block means are taken one block column at a time,
a map is written as an indexed PNG (one byte a pixel, the colours
``matplotlib.image.imsave`` would give), thousands of points are drawn as
marker-only lines (which also keeps the legend's placement fast), and
figures are written from the Agg buffer without an alpha channel, at a zlib
level that takes 40 % less time than the default for a few per cent more
bytes.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from tilesky._report_html import page
from tilesky._report_wcs import celestial_wcs
from tilesky.metrics import compute_metrics, line_fit

__all__ = ["write_report"]

log = logging.getLogger("tilesky")

_GROUPS = (
    ("unmasked", "black", "s"),
    ("masked", "red", "o"),
    # Drawn last, opaque enough to see over thousands of sources.
    ("random", "tab:cyan", "x"),
)


class _Plotting:
    """The few matplotlib (and Pillow, which it requires) names the report uses."""

    def __init__(self):
        try:
            import matplotlib
            from matplotlib.backends.backend_agg import FigureCanvasAgg
            from matplotlib.colors import AsinhNorm, Normalize
            from matplotlib.figure import Figure
            from PIL import Image
        except ImportError:
            msg = (
                "tilesky's report needs matplotlib, which is not installed; "
                "install it with `pip install 'tilesky[plots]'` or "
                "`pip install matplotlib`"
            )
            raise ImportError(msg) from None
        self.colormaps = matplotlib.colormaps
        self.Normalize = Normalize
        self.AsinhNorm = AsinhNorm
        self.Figure = Figure
        self.FigureCanvasAgg = FigureCanvasAgg
        self.Image = Image

    def figure(self, figsize: tuple[float, float]):
        fig = self.Figure(figsize=figsize, dpi=100)
        return fig, self.FigureCanvasAgg(fig)


# zlib level of the PNG files: the default, 6, takes 1.7 times as long for
# files 1-7 % smaller (measured on the demo scene's maps and figures).
_PNG_LEVEL = 4
# The look of scatter(s=8): markers 8 pt**2 in area, edges as wide as
# scatter() draws them (rcParams patch.linewidth for filled markers,
# lines.linewidth for "+").
_MARKER_SIZE = math.sqrt(8.0)
_MARKER_EDGE = {"s": 1.0, "o": 1.0, "+": 1.5, "x": 1.5}


def _indexed(rgba: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """The colour table and per-pixel indices of an image of <= 256 colours."""
    packed = np.ascontiguousarray(rgba, dtype=np.uint8).view(np.uint32)[..., 0]
    colours, index = np.unique(packed, return_inverse=True)
    if colours.size > 256:
        return None
    return colours, index.reshape(packed.shape).astype(np.uint8)


def _write_png(
    plt: _Plotting,
    path: Path,
    rgba: np.ndarray,
    indexed: tuple[np.ndarray, np.ndarray] | None = None,
    *,
    palette: bool = True,
) -> None:
    """Write an (ny, nx, 4) uint8 image losslessly, as small as cheaply possible.

    With ``palette``, an image of at most 256 colours (a colormapped map)
    becomes an indexed PNG with a transparency table (``indexed`` is
    ``_indexed(rgba)`` when already known). Otherwise the PNG is RGB when the
    image is opaque, else RGBA.
    """
    rgba = np.ascontiguousarray(rgba, dtype=np.uint8)
    if palette and indexed is None:
        indexed = _indexed(rgba)
    if palette and indexed is not None:
        colours, index = indexed
        image = plt.Image.fromarray(index, "P")
        table = colours.view(np.uint8).reshape(-1, 4)
        image.putpalette(table[:, :3].tobytes(), rawmode="RGB")
        if (table[:, 3] < 255).any():
            image.info["transparency"] = table[:, 3].tobytes()
    elif (rgba[..., 3] == 255).all():
        image = plt.Image.fromarray(np.ascontiguousarray(rgba[..., :3]), "RGB")
    else:
        image = plt.Image.fromarray(rgba, "RGBA")
    image.save(path, format="png", compress_level=_PNG_LEVEL)


def _save_figure(plt: _Plotting, canvas, path: Path) -> None:
    canvas.draw()
    # Anti-aliased lines, text and markers give thousands of colours: looking
    # for a palette would only cost time.
    _write_png(plt, path, np.asarray(canvas.buffer_rgba()), palette=False)


def _block_nanmean(x, axis=None):
    """NaN-aware mean over the block axes of ``x``, in float64.

    ``dask.array.coarsen`` calls this on each chunk reshaped to
    ``(ny, fy, nx, fx)`` with ``axis=(1, 3)`` (and once on a tiny array, with
    no axis, for the output type).
    """
    x = np.asarray(x)
    if axis != (1, 3) or x.ndim != 4:
        finite = np.isfinite(x)
        total = np.where(finite, x, 0.0).sum(axis=axis, dtype=np.float64)
        count = finite.sum(axis=axis)
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)
    # One pass per column of a block (fx strided views) instead of a reduction
    # over two short axes, which numpy runs several times slower.
    ny, fy, nx, fx = x.shape
    part = np.zeros((ny, fy, nx))
    count = np.zeros((ny, fy, nx), dtype=np.intp)
    for j in range(fx):
        column = x[..., j]
        finite = np.isfinite(column)
        part += np.where(finite, column, 0.0)
        count += finite
    total, count = part.sum(axis=1), count.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return total / count


def _downsample(arr, max_pixels: int):
    """Block mean (NaN-aware) of a 2-D array to at most ``max_pixels`` a side.

    Returns the lazy dask result (float64) and the integer factor. The image
    is padded with NaN to a multiple of the factor, so edge pixels are not
    dropped.
    """
    import dask.array as da

    x = arr if hasattr(arr, "dask") else da.from_array(np.asarray(arr))
    ny, nx = x.shape
    factor = max(1, -(-max(ny, nx) // max_pixels))
    if factor == 1:
        return x.astype(np.float64), factor
    if x.dtype.kind != "f":
        # The NaN padding needs a float; float32 holds a mask exactly.
        x = x.astype(np.float32 if x.dtype == bool else np.float64)
    pad = ((0, -ny % factor), (0, -nx % factor))
    if any(p[1] for p in pad):
        x = da.pad(x, pad, mode="constant", constant_values=np.nan)
    return da.coarsen(_block_nanmean, x, {0: factor, 1: factor}), factor


def _data(value):
    if value is None:
        return None
    data = getattr(value, "data", None)
    return data if data is not None and hasattr(value, "dims") else value


def _limits(img: np.ndarray, *, symmetric: bool) -> tuple[float, float]:
    v = img[np.isfinite(img)]
    if v.size == 0:
        return 0.0, 1.0
    if symmetric:
        top = float(np.percentile(np.abs(v), 99)) or 1.0
        return -top, top
    lo, hi = (float(p) for p in np.percentile(v, [1, 99]))
    return (lo, hi) if hi > lo else (lo - 0.5, lo + 0.5)


def _save_map(
    plt: _Plotting,
    path: Path,
    img: np.ndarray,
    *,
    cmap: str,
    vmin: float,
    vmax: float,
    norm=None,
) -> None:
    """Colour ``img`` pixel for pixel, origin lower, NaN transparent.

    ``norm`` (a matplotlib normalization) replaces the linear one of
    ``vmin``-``vmax``.
    """
    colormap = plt.colormaps[cmap]
    norm = norm if norm is not None else plt.Normalize(vmin=vmin, vmax=vmax)
    normed = norm(img[::-1])
    rgba = colormap(normed, bytes=True)
    indexed = _indexed(rgba)
    if indexed is None and colormap.N > 255:
        # All 256 colours plus the transparent one for NaN: one colour fewer
        # keeps the map an indexed PNG, a step finer than the eye can tell.
        rgba = colormap.resampled(255)(normed, bytes=True)
        indexed = _indexed(rgba)
    _write_png(plt, path, rgba, indexed)


def _units(ds) -> str:
    """The input's BUNIT from the stored header, else "image units"."""
    header = ds.attrs.get("wcs_header")
    value = None
    if isinstance(header, Mapping):
        value = header.get("BUNIT")
    elif isinstance(header, str) and "BUNIT" in header:
        try:
            from astropy.io import fits

            value = fits.Header.fromstring(header).get("BUNIT")
        except Exception:  # a header astropy cannot parse has no unit to show
            value = None
    return str(value).strip() if value and str(value).strip() else "image units"


def _stretch_limits(img: np.ndarray, stretch: str) -> tuple[float, float]:
    if stretch == "mask":
        return 0.0, 1.0
    if stretch == "asinh":
        v = img[np.isfinite(img)]
        if v.size == 0:
            return 0.0, 1.0
        lo, hi = (float(p) for p in np.percentile(v, [1, 99.5]))
        return (lo, hi) if hi > lo else (lo - 0.5, lo + 0.5)
    return _limits(img, symmetric=stretch == "symmetric")


def _norm(plt: _Plotting, stretch: str, lim: tuple[float, float]):
    if stretch != "asinh":
        return plt.Normalize(vmin=lim[0], vmax=lim[1])
    # Linear over the faint tenth of the range, logarithmic above: faint
    # sky structure and bright cores both visible.
    return plt.AsinhNorm(linear_width=0.1 * (lim[1] - lim[0]), vmin=lim[0], vmax=lim[1])


def _panel_figure(plt, path: Path, img, factor: int, style, label, wcs=None):
    """A map with pixel axes (input pixels) and a colorbar labelled in units.

    ``style`` is ``(cmap, norm, title)``. With a celestial ``wcs``, RA/Dec
    lines are drawn over the map (:mod:`tilesky._report_wcs`); the lines
    drawn are returned.
    """
    from tilesky._report_wcs import axis_names, draw_sky_grid

    cmap, norm, title = style
    ny, nx = img.shape
    aspect = ny / max(nx, 1)
    fig, canvas = plt.figure((6.4, max(2.5, min(9.0, 5.0 * aspect + 0.8))))
    ax = fig.subplots()
    extent = (-0.5, nx * factor - 0.5, -0.5, ny * factor - 0.5)
    image = ax.imshow(
        img,
        origin="lower",
        cmap=cmap,
        norm=norm,
        interpolation="nearest",
        extent=extent,
    )
    lines = draw_sky_grid(ax, wcs, extent) if wcs is not None else []
    ax.set_xlim(extent[0], extent[1])
    ax.set_ylim(extent[2], extent[3])
    names = f"; lines: {', '.join(axis_names(wcs))}" if lines else ""
    ax.set_xlabel("x (pixel)" + names)
    ax.set_ylabel("y (pixel)")
    ax.set_title(title)
    bar = fig.colorbar(image, ax=ax, label=label)
    if isinstance(norm, plt.AsinhNorm):
        # Ticks evenly spaced along the stretched bar, labelled in values:
        # the asinh scale's own ticks (powers of ten) crowd near zero.
        ticks = norm.inverse(np.linspace(0.0, 1.0, 6))
        bar.set_ticks(ticks, labels=[f"{t:.3g}" for t in ticks])
    fig.tight_layout()
    _save_figure(plt, canvas, path)
    return lines


def _scale_figure(plt: _Plotting, path: Path, scale: Mapping[str, Any]) -> None:
    def arr(key):
        return np.array([np.nan if v is None else v for v in scale[key]], float)

    w = np.array(scale["widths"], float)
    fig, canvas = plt.figure((10, 4.5))
    left, right = fig.subplots(1, 2)
    left.loglog(w, arr("rms"), "o-", label="scene - background")
    if scale.get("perfect"):
        left.loglog(w, arr("perfect"), "k-", label="perfect (sky - truth)")
    left.loglog(w, arr("ideal"), "k--", alpha=0.6, label="ideal sigma / w")
    for ax in (left, right):
        ax.set_xscale("log")
        ticks = [
            t for t in (1, 2, 3, 5, 10, 20, 30, 50, 100) if w.min() <= t <= w.max()
        ]
        ax.set_xticks(ticks, [str(t) for t in ticks])
        ax.set_xticks([], minor=True)
    left.set_xlabel("block width w (px)")
    left.set_ylabel("RMS of block means")
    left.legend()
    ref = scale.get("reference", "ideal")
    right.plot(w, arr("ratio"), "o-", label=f"ratio to {ref}")
    right.axhline(1.0, color="k", lw=1, label=ref)
    right.set_xlabel("block width w (px)")
    right.set_ylabel(f"RMS / {ref}")
    right.legend()
    fig.tight_layout()
    _save_figure(plt, canvas, path)


def _scatter_ylim(values: np.ndarray) -> tuple[float, float, float | None]:
    """y limits holding every point, and a symlog threshold for far outliers.

    A few far outliers switch the axis to symlog (linear within the 1-99
    percentile band) rather than squash the rest or leave them out.
    """
    lo, hi = float(values.min()), float(values.max())
    p1, p99 = (float(p) for p in np.percentile(values, [1, 99]))
    band = max(abs(p1), abs(p99)) or 1.0
    linthresh = band if hi - lo > 10 * (p99 - p1) > 0 else None
    pad = 0.05 * (hi - lo) or 1.0
    return lo - pad, hi + pad, linthresh


def _scatter_figure(plt: _Plotting, path: Path, points, xkey: str) -> None:
    quantity = points["quantity"]
    src, rnd = points["sources"], points["random"]
    groups = {
        "unmasked": (src[xkey], src["value"], src["valid"] & ~src["masked"]),
        "masked": (src[xkey], src["value"], src["valid"] & src["masked"]),
        "random": (rnd[xkey], rnd["value"], rnd["kept"]),
    }
    fig, canvas = plt.figure((10, 5))
    ax = fig.subplots()
    ys = []
    for name, color, marker in _GROUPS:
        x, y, sel = groups[name]
        x, y = x[sel], y[sel]
        ok = np.isfinite(x) & np.isfinite(y)
        x, y = x[ok], y[ok]
        ys.append(y)
        alpha = 0.8 if name == "random" else 0.4
        # A marker-only line, not scatter(): Agg stamps one marker image.
        ax.plot(
            x,
            y,
            linestyle="none",
            marker=marker,
            markersize=_MARKER_SIZE,
            markeredgewidth=_MARKER_EDGE[marker],
            color=color,
            alpha=alpha,
            label=name,
        )
        fit = line_fit(x, y)
        if fit["slope"] is not None:
            xf = np.linspace(0.0, float(x.max()), 10)
            ax.plot(xf, fit["intercept"] + fit["slope"] * xf, color=color, alpha=0.8)
    allv = np.concatenate(ys) if ys else np.zeros(0)
    if allv.size:
        lo, hi, linthresh = _scatter_ylim(allv)
        if linthresh is not None:
            ax.set_yscale("symlog", linthresh=linthresh)
        ax.set_ylim(lo, hi)
    ax.axhline(0.0, color="grey", lw=0.8)
    ax.set_xlabel("flux" if xkey == "flux" else "radius re (px)")
    ax.set_ylabel(f"mean {quantity} in 3x3 box")
    ax.set_title(f"{quantity} vs. {'flux' if xkey == 'flux' else 'radius'}")
    # Beside the axes: "best" placement tests every point against the legend
    # box, which on a survey catalogue (10^6 sources) takes longer than the
    # figure and has matplotlib warn on the terminal.
    legend = ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0))
    for handle in legend.legend_handles:
        handle.set_alpha(1.0)
    fig.tight_layout()
    _save_figure(plt, canvas, path)


def _open(run, storage_options):
    if isinstance(run, str | os.PathLike):
        from tilesky.store import open_run

        return open_run(os.fspath(run), storage_options=storage_options)
    if not hasattr(run, "data_vars") or "background" not in run:
        msg = (
            "run must be an xarray.Dataset with a 'background' variable or the "
            f"path of a run store, got {type(run).__name__}"
        )
        raise ValueError(msg)
    return run


def write_report(
    run,
    out_dir: str | os.PathLike,
    *,
    truth=None,
    sky=None,
    catalogue=None,
    metrics: Mapping[str, Any] | None = None,
    points: Mapping[str, Any] | None = None,
    scene=None,
    max_pixels: int = 1024,
    storage_options: dict | None = None,
) -> Path:
    """Write PNG figures and a self-contained ``report.html`` for a run.

    Parameters
    ----------
    run : xarray.Dataset or str or os.PathLike
        A run (``background``, optionally ``mask`` and ``subtracted``; the
        configuration in ``attrs["config"]``) or the path/URL of a run store.
    out_dir : str or os.PathLike
        Directory for the figures and ``report.html`` (created if needed).
    truth, sky : array_like, optional
        Noiseless and noisy source-free sky, for the residual map and metrics.
    catalogue : mapping or xarray.Dataset, optional
        Sources (``x_mean``, ``y_mean``, ``flux``, ``re``) for the
        residual-versus-flux and -radius plots.
    metrics : dict, optional
        Metrics from :func:`~tilesky.metrics.compute_metrics`; by default
        ``run.attrs["metrics"]``, else computed here.
    points : dict, optional
        Per-source values (``compute_metrics(..., return_points=True)``);
        computed here when a catalogue is given without them.
    scene : array_like, optional
        The image, for metrics computed here; by default
        ``subtracted + background`` when the run has ``subtracted``.
    max_pixels : int
        Largest side of the map images, in pixels.
    storage_options : dict, optional
        fsspec options for a run given by URL.

    Returns
    -------
    pathlib.Path
        The path of ``report.html``.

    Notes
    -----
    Maps are integer block means (NaN-aware, padded at the far edges) with
    ``origin="lower"``, written pixel for pixel: a map has
    ``ceil(n / factor)`` pixels a side; each map is also drawn as a panel
    with pixel axes and a colorbar in the input's units (``BUNIT``), and,
    when the input has a celestial WCS (``attrs["wcs_header"]``), lines of
    constant RA and Dec (or galactic l and b...) drawn and labelled over it.
    Colour scales: input image, 1-99.5 percentiles with an asinh stretch;
    background and background RMS, 1-99 percentiles, linear; residual and
    subtracted image, symmetric about zero at the 99th percentile of
    ``|value|``, linear.

    Examples
    --------
    >>> import numpy as np, xarray as xr, tempfile
    >>> bkg = np.ones((64, 80), dtype=np.float32)
    >>> ds = xr.Dataset({"background": (("y", "x"), bkg)}, attrs={"config": {}})
    >>> write_report(ds, tempfile.mkdtemp(), max_pixels=32).name
    'report.html'
    """
    if int(max_pixels) != max_pixels or max_pixels < 1:
        msg = f"max_pixels must be a positive integer, got {max_pixels!r}"
        raise ValueError(msg)
    plt = _Plotting()
    ds = _open(run, storage_options)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    truth, sky, scene = _data(truth), _data(sky), _data(scene)
    metrics, points = _metrics_and_points(
        ds, truth, sky, scene, catalogue, metrics, points
    )
    figures = _map_figures(plt, ds, truth, out, int(max_pixels))
    if metrics and metrics.get("scale") and metrics["scale"].get("widths"):
        _scale_figure(plt, out / "scale.png", metrics["scale"])
        figures.append(("scale", "RMS of block means versus block width", None))
    if points is not None:
        for key, name in (("flux", "flux"), ("re", "radius")):
            _scatter_figure(plt, out / f"{name}.png", points, key)
            figures.append(
                (
                    name,
                    f"{points['quantity']} in 3x3 boxes versus {name}, with OLS "
                    "lines (every point shown)",
                    None,
                )
            )
    path = out / "report.html"
    path.write_text(page(ds, out, figures, metrics), encoding="utf-8")
    log.info("report written to %s", path)
    return path


def _metrics_and_points(ds, truth, sky, scene, catalogue, metrics, points):
    """The run's metrics (stored, given, or computed here) and per-source points."""
    bkg = ds["background"].data
    mask = ds["mask"].data if "mask" in ds else None
    if metrics is None and ds.attrs.get("metrics"):
        metrics = ds.attrs["metrics"]
    if metrics is not None and (catalogue is None or points is not None):
        return metrics, points
    if scene is None and "subtracted" in ds:
        log.info("report: scene = subtracted + background")
        scene = ds["subtracted"].data.astype(np.float64) + bkg
    if scene is None:
        log.warning("report: no metrics (pass metrics= or scene=)")
        return metrics, points
    computed, pts = compute_metrics(
        scene,
        bkg,
        mask,
        truth=truth,
        sky=sky,
        catalogue=catalogue,
        return_points=True,
    )
    return (computed if metrics is None else metrics), (
        pts if points is None else points
    )


#: name, title, colormap, stretch ("asinh", "linear", "symmetric", "mask").
_MAPS = {
    "input": ("Input image", "gray_r", "asinh"),
    "background": ("Background", "viridis", "linear"),
    "background_rms": ("Background RMS", "magma", "linear"),
    "mask": ("Mask (fraction of masked pixels)", "Greys", "mask"),
    "residual": ("Residual: background - truth", "RdBu_r", "symmetric"),
    "subtracted": ("Subtracted: scene - background", "RdBu_r", "symmetric"),
}
_STRETCH = {
    "asinh": "asinh stretch of the 1-99.5 percentiles",
    "linear": "linear, 1-99 percentiles",
    "symmetric": "linear, symmetric about 0 at the 99th percentile of |value|",
    "mask": "linear, 0 (sky) to 1 (masked)",
}


def _map_figures(plt, ds, truth, out: Path, max_pixels: int) -> list[tuple]:
    """Write each map as a raw PNG and as a panel; their figure entries."""
    import dask

    bkg = ds["background"].data
    arrays = {}
    if "subtracted" in ds:
        arrays["input"] = ds["subtracted"].data.astype(np.float64) + bkg
    arrays["background"] = bkg
    if "background_rms" in ds:
        arrays["background_rms"] = ds["background_rms"].data
    if "mask" in ds:
        arrays["mask"] = ds["mask"].data
    if truth is not None:
        arrays["residual"] = bkg - truth
    if "subtracted" in ds:
        arrays["subtracted"] = ds["subtracted"].data
    small = {k: _downsample(a, max_pixels) for k, a in arrays.items()}
    computed = dask.compute(*(s[0] for s in small.values()))
    units = _units(ds)
    wcs = celestial_wcs(ds.attrs.get("wcs_header"))
    figures = []
    for (name, (_, factor)), img in zip(small.items(), computed, strict=True):
        title, cmap, stretch = _MAPS[name]
        img = np.asarray(img)
        lim = _stretch_limits(img, stretch)
        norm = _norm(plt, stretch, lim)
        _save_map(
            plt,
            out / f"{name}.png",
            img,
            cmap=cmap,
            vmin=lim[0],
            vmax=lim[1],
            norm=norm,
        )
        label = "masked fraction" if name == "mask" else units
        lines = _panel_figure(
            plt,
            out / f"{name}_panel.png",
            img,
            factor,
            (cmap, norm, title),
            label,
            wcs,
        )
        caption = (
            f"{title}; {img.shape[1]} x {img.shape[0]} px, block mean of "
            f"{factor} x {factor}; colour: {_STRETCH[stretch]} "
            f"({lim[0]:.4g} to {lim[1]:.4g} {label})"
        )
        if lines:
            caption += "; orange lines: sky coordinates from the input's WCS"
        figures.append((name, caption, f"{name}_panel"))
    return figures

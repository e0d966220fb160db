"""Injection check of a finished run: how well does its configuration recover
a known smooth pattern, and how much of a faint disk's light does it keep?

:func:`validate_run` reads a run store's input, mask, weight map, configuration
and tiles; adds to the image, tile by tile, a smooth pattern (two plane waves
of a few noise sigma) and a grid of exponential low-surface-brightness disks
(sizes x central surface brightnesses, in units of the run's noise); runs the
same configuration on the same tiles through :func:`tilesky.estimate_background`
twice (pattern alone, pattern and disks); and reports:

- pattern recovery: ``(bkg_pattern - bkg_original - pattern) / background_rms``
  over covered pixels (RMS and peak), where ``bkg_original`` is the stored
  background;
- flux kept per disk: ``1 - sum(bkg_both - bkg_pattern) / sum(disk light)``
  over a circle of ``APERTURE`` half-light radii. Pairing the two reruns
  leaves out what the background does without the disks, so a small faint
  disk is not drowned by the pattern's residual.

Everything injected is a function of global pixel coordinates and the seed
(pattern and disk parameters are drawn once, never per tile), so the injected
image is the same for any tiling. The results go into ``validation.json`` in
the run store and into its ``validation`` attribute.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from typing import Any

import dask
import dask.array as da
import numpy as np

from tilesky.errors import InputError, StoreError

__all__ = ["APERTURE", "Injection", "format_lines", "validate_run"]

log = logging.getLogger("tilesky")

#: Aperture radius of a disk, in half-light radii (96 % of its light).
APERTURE = 3.0
# Half-light radius of an exponential disk in scale lengths.
_EXP_RE = 1.678347
# Disks are drawn out to this many half-light radii (exp(-10) of the centre),
# then tapered to zero.
_DISK_EXTENT = 6.0
_SEED_STREAM = 1919


class Injection:
    """A seeded pattern and disk grid for an image of a given shape.

    Parameters
    ----------
    shape : (int, int)
        Image shape ``(ny, nx)``.
    sigma : float
        Noise level that amplitudes are given in.
    seed : int
        Seed of the pattern's directions and phases and of the disks'
        positions, axis ratios and angles.
    sizes : sequence of float
        Disk half-light radii in pixels.
    surface_brightness : sequence of float
        Disk central surface brightnesses in units of ``sigma``.
    amplitude : float
        Peak of the pattern in units of ``sigma`` (two waves of half that).
    cycles : float
        Pattern cycles across the image's longer side (wavelength at least
        128 px).

    Notes
    -----
    Disks sit on a grid with one cell per (size, brightness) pair, assigned
    by a seeded permutation and jittered inside their cells. Sizes whose
    aperture diameter exceeds half the image's shorter side are left out
    (``skipped_sizes``).
    """

    def __init__(
        self,
        shape: tuple[int, int],
        sigma: float,
        *,
        seed: int = 0,
        sizes: Sequence[float] = (10, 20, 40, 80),
        surface_brightness: Sequence[float] = (0.5, 1, 2, 4),
        amplitude: float = 2.0,
        cycles: float = 3.0,
    ) -> None:
        if not (math.isfinite(sigma) and sigma > 0):
            msg = f"the run's noise level must be positive and finite, got {sigma!r}"
            raise StoreError(msg)
        self.shape = (int(shape[0]), int(shape[1]))
        self.sigma = float(sigma)
        ny, nx = self.shape
        rng = np.random.default_rng(
            np.random.SeedSequence(seed, spawn_key=(_SEED_STREAM,))
        )
        self.amplitude = float(amplitude)
        self.wavelength = max(max(ny, nx) / cycles, 128.0)
        angle = rng.uniform(0, np.pi)
        self.angles = np.array([angle, angle + rng.uniform(np.pi / 3, 2 * np.pi / 3)])
        self.phases = rng.uniform(0, 2 * np.pi, 2)
        limit = min(ny, nx) / 2
        kept = [float(r) for r in sizes if 2 * APERTURE * r <= limit]
        self.skipped_sizes = [float(r) for r in sizes if 2 * APERTURE * r > limit]
        self.sizes = kept
        self.surface_brightness = [float(s) for s in surface_brightness]
        self.disks = self._grid(rng)

    def _grid(self, rng: np.random.Generator) -> list[dict[str, float]]:
        pairs = [(r, s) for r in self.sizes for s in self.surface_brightness]
        if not pairs:
            return []
        ny, nx = self.shape
        ncols = max(1, min(len(pairs), round(math.sqrt(len(pairs) * nx / ny))))
        nrows = -(-len(pairs) // ncols)
        order = rng.permutation(len(pairs))
        disks = []
        for cell, k in enumerate(order):
            re, sb = pairs[k]
            row, col = divmod(cell, ncols)
            jitter = rng.uniform(-0.15, 0.15, 2)
            disks.append(
                {
                    "re": re,
                    "sb_sigma": sb,
                    "y": (row + 0.5 + jitter[0]) * ny / nrows,
                    "x": (col + 0.5 + jitter[1]) * nx / ncols,
                    "q": float(rng.uniform(0.5, 1.0)),
                    "theta": float(rng.uniform(0, np.pi)),
                }
            )
        return disks

    # -- pixels ---------------------------------------------------------------
    def pattern(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """The pattern on rows ``y0:y1`` and columns ``x0:x1`` (float64).

        Parameters
        ----------
        y0, y1, x0, x1 : int
            The region, in global pixel coordinates of the image.

        Returns
        -------
        numpy.ndarray
            Shape ``(y1 - y0, x1 - x0)``.
        """
        yy = np.arange(y0, y1, dtype=np.float64)[:, None]
        xx = np.arange(x0, x1, dtype=np.float64)[None, :]
        out = np.zeros((y1 - y0, x1 - x0))
        k = 2 * np.pi / self.wavelength
        for angle, phase in zip(self.angles, self.phases, strict=True):
            out += np.sin(k * (xx * math.cos(angle) + yy * math.sin(angle)) + phase)
        return out * (0.5 * self.amplitude * self.sigma)

    def disk_light(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """The disks on rows ``y0:y1`` and columns ``x0:x1`` (float64).

        Parameters
        ----------
        y0, y1, x0, x1 : int
            The region, in global pixel coordinates of the image.

        Returns
        -------
        numpy.ndarray
            Shape ``(y1 - y0, x1 - x0)``.
        """
        out = np.zeros((y1 - y0, x1 - x0))
        for d in self.disks:
            reach = _DISK_EXTENT * d["re"]
            a0, a1 = max(int(d["y"] - reach), y0), min(int(d["y"] + reach) + 2, y1)
            b0, b1 = max(int(d["x"] - reach), x0), min(int(d["x"] + reach) + 2, x1)
            if a0 >= a1 or b0 >= b1:
                continue
            r = _elliptical_radius(a0, a1, b0, b1, d)
            t = np.clip((r - 0.75 * reach) / (0.25 * reach), 0.0, 1.0)
            taper = 1.0 - t * t * (3.0 - 2.0 * t)
            amp = d["sb_sigma"] * self.sigma
            profile = amp * np.exp(-_EXP_RE * r / d["re"]) * taper
            out[a0 - y0 : a1 - y0, b0 - x0 : b1 - x0] += profile
        return out

    def _map(self, func, chunks) -> da.Array:
        def block(block_info=None):
            (y0, y1), (x0, x1) = block_info[None]["array-location"]
            return func(y0, y1, x0, x1)

        return da.map_blocks(
            block, chunks=chunks, dtype=np.float64, meta=np.array((), np.float64)
        )

    def injected(self, image: da.Array, *, disks: bool = True) -> da.Array:
        """``image`` plus the pattern (and the disks), block by block, in its dtype.

        Parameters
        ----------
        image : dask.array.Array
            The run's input image.
        disks : bool
            Add the disks too (else the pattern alone).

        Returns
        -------
        dask.array.Array
            The injected image, chunked like ``image``.
        """

        def add(block, block_info=None):
            (y0, y1), (x0, x1) = block_info[0]["array-location"]
            extra = self.pattern(y0, y1, x0, x1)
            if disks:
                extra += self.disk_light(y0, y1, x0, x1)
            return (block.astype(np.float64) + extra).astype(block.dtype)

        return image.map_blocks(add, dtype=image.dtype, meta=np.array((), image.dtype))

    def describe(self) -> dict[str, Any]:
        """The injection's parameters, JSON-serialisable.

        Returns
        -------
        dict
            Noise sigma, pattern and disk parameters.
        """
        return {
            "sigma": self.sigma,
            "pattern": {
                "amplitude_sigma": self.amplitude,
                "wavelength_px": round(self.wavelength, 3),
                "angles_deg": [round(math.degrees(a), 3) for a in self.angles],
            },
            "sizes": self.sizes,
            "surface_brightness": self.surface_brightness,
            "skipped_sizes": self.skipped_sizes,
            "aperture_re": APERTURE,
        }


def _elliptical_radius(a0, a1, b0, b1, d) -> np.ndarray:
    dy = np.arange(a0, a1, dtype=np.float64)[:, None] - d["y"]
    dx = np.arange(b0, b1, dtype=np.float64)[None, :] - d["x"]
    c, s = math.cos(d["theta"]), math.sin(d["theta"])
    u, v = dx * c + dy * s, -dx * s + dy * c
    return np.sqrt(u * u + (v / d["q"]) ** 2)


def _aperture_slices(inj: Injection, d: dict) -> tuple[slice, slice, np.ndarray]:
    ny, nx = inj.shape
    rad = APERTURE * d["re"]
    a0, a1 = max(int(d["y"] - rad), 0), min(int(d["y"] + rad) + 2, ny)
    b0, b1 = max(int(d["x"] - rad), 0), min(int(d["x"] + rad) + 2, nx)
    dy = np.arange(a0, a1)[:, None] - d["y"]
    dx = np.arange(b0, b1)[None, :] - d["x"]
    return slice(a0, a1), slice(b0, b1), dx * dx + dy * dy <= rad * rad


def _measure(
    inj: Injection, with_pattern: da.Array, with_both: da.Array, old: da.Array,
    rms: da.Array,
) -> dict:  # fmt: skip
    """Pattern recovery over covered pixels; flux kept in each disk's aperture."""
    pattern = inj._map(inj.pattern, old.chunks)
    light = inj._map(inj.disk_light, old.chunks)
    err = (with_pattern.astype(np.float64) - old - pattern) / rms.astype(np.float64)
    err = da.where(da.isfinite(err), err, np.nan)
    change = with_both.astype(np.float64) - with_pattern
    apertures = [_aperture_slices(inj, d) for d in inj.disks]
    patches = [(change[ys, xs], light[ys, xs]) for ys, xs, _ in apertures]
    rms_err, peak_err, count, patches = dask.compute(
        da.sqrt(da.nanmean(err**2)), da.nanmax(da.fabs(err)), da.isfinite(err).sum(),
        patches,
    )  # fmt: skip
    disks = []
    for d, (_, _, inside), (dc, dl) in zip(inj.disks, apertures, patches, strict=True):
        ok = inside & np.isfinite(dc)
        total = float(dl[ok].sum())
        covered = total / max(float(dl[inside].sum()), 1e-300)
        kept = None
        if covered >= 0.5 and total > 0:
            kept = 1.0 - float(dc[ok].sum()) / total
        disks.append({**{k: round(v, 4) for k, v in d.items()}, "kept": kept})
    return {
        "pattern_rms_sigma": float(rms_err) if count else None,
        "pattern_peak_sigma": float(peak_err) if count else None,
        "pattern_pixels": int(count),
        "disks": disks,
    }


def _table(inj: Injection, disks: list[dict]) -> list[list[float | None]]:
    by_pair = {(d["re"], d["sb_sigma"]): d["kept"] for d in disks}
    return [[by_pair.get((r, s)) for s in inj.surface_brightness] for r in inj.sizes]


def _noise_level(rms: da.Array) -> float:
    values = rms.compute() if isinstance(rms, da.Array) else np.asarray(rms)
    values = values[np.isfinite(values) & (values > 0)]
    if values.size == 0:
        msg = "the run's background_rms has no positive finite value to scale by"
        raise StoreError(msg)
    return float(np.median(values))


def validate_run(
    run: str,
    *,
    seed: int = 0,
    sizes: Sequence[float] = (10, 20, 40, 80),
    surface_brightness: Sequence[float] = (0.5, 1, 2, 4),
    amplitude: float = 2.0,
    cycles: float = 3.0,
    storage_options: dict | None = None,
    write: bool = True,
) -> dict[str, Any]:
    """Inject a known pattern and faint disks into a run's input and rerun it.

    Parameters
    ----------
    run : str
        Path or fsspec URL of a finished run store.
    seed : int
        Seed of the injection (see :class:`Injection`).
    sizes, surface_brightness : sequence of float
        Disk half-light radii (px) and central surface brightnesses (in the
        run's noise sigma, the median of its ``background_rms``).
    amplitude, cycles : float
        Pattern peak (noise sigma) and cycles across the longer side.
    storage_options : dict, optional
        fsspec options of the run store and of its input.
    write : bool
        Write ``validation.json`` and the ``validation`` attribute into the
        run store.

    Returns
    -------
    dict
        ``injection`` (what was injected), ``pattern_rms_sigma``,
        ``pattern_peak_sigma``, ``disks`` (each with ``kept``, the fraction
        of its light left out of the background, paired against the
        pattern-only rerun; None when less than half of it lies on covered
        pixels), ``table`` (``kept`` by size (rows) and
        surface brightness (columns)), ``chunks`` and ``seconds``.

    Raises
    ------
    StoreError
        Not a finished run, or the run's input cannot be read again.

    Notes
    -----
    The rerun uses the run's configuration, tiles (the stored chunks), user
    mask and weight map given as paths; an input given as an in-memory array
    cannot be reread and is refused.
    """
    from tilesky._dispatch import estimate_background
    from tilesky.config import Config
    from tilesky.io import open_image
    from tilesky.store import open_run

    start = time.perf_counter()
    ds = open_run(run, storage_options=storage_options)
    mode = (ds.attrs.get("config") or {}).get("mode")
    if mode is not None:
        msg = (
            f"the run at {run!r} is a {mode!r} run (--preset {mode}); "
            "validate reruns the tilesky pipeline, so it checks runs of the "
            "default or notebook configuration"
        )
        raise StoreError(msg)
    ident = ds.attrs.get("input") or {}
    if ident.get("kind") not in ("zarr", "fits"):
        msg = (
            f"the run at {run!r} was made from {ident.get('source', 'an array')!r}, "
            "which cannot be read again; validate runs made from a file or URL"
        )
        raise StoreError(msg)
    chunks = tuple(int(c[0]) for c in ds.background.data.chunks)
    try:
        image = open_image(
            ident["source"],
            variable=ident.get("variable"),
            hdu=ident.get("hdu"),
            chunks=chunks,
            storage_options=storage_options,
        )
    except InputError as exc:
        msg = f"cannot reread the input of the run at {run!r}: {exc}"
        raise StoreError(msg) from None
    if image.identity.get("fingerprint") != ident.get("fingerprint"):
        msg = f"the input {ident['source']!r} changed since the run at {run!r}"
        raise StoreError(msg)
    cfg = Config.from_dict(ds.attrs["config"])
    inj = Injection(
        image.data.shape,
        _noise_level(ds.background_rms.data),
        seed=seed,
        sizes=sizes,
        surface_brightness=surface_brightness,
        amplitude=amplitude,
        cycles=cycles,
    )
    log.info(
        "validate: injecting %d disks and a pattern, tiles %s", len(inj.disks), chunks
    )
    reruns = [
        estimate_background(
            inj.injected(image.data, disks=disks),
            config=cfg,
            chunks=chunks,
            mask=ds.attrs.get("mask_input"),
            weight=ds.attrs.get("weight_input"),
            storage_options=storage_options,
        ).background.data
        for disks in (False, True)
    ]
    measured = _measure(inj, *reruns, ds.background.data, ds.background_rms.data)
    result = {
        "seed": seed,
        "injection": inj.describe(),
        **measured,
        "table": _table(inj, measured["disks"]),
        "chunks": list(chunks),
        "seconds": round(time.perf_counter() - start, 3),
    }
    if write:
        _write(run, result, storage_options)
    return result


def _write(run: str, result: dict, storage_options: dict | None) -> None:
    """``validation.json`` and a summary attribute, metadata consolidated again."""
    import warnings

    import zarr

    from tilesky.store import RunStore, _open_group

    RunStore(run, storage_options=storage_options).write_json("validation.json", result)
    group = _open_group(run, "r+", storage_options)
    summary = {
        k: result[k]
        for k in (
            "seed",
            "injection",
            "pattern_rms_sigma",
            "pattern_peak_sigma",
            "table",
            "chunks",
        )
    }
    group.attrs["validation"] = summary
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        zarr.consolidate_metadata(group.store)


def format_lines(result: dict) -> list[str]:
    """The CLI's lines: pattern recovery, then the kept-flux table.

    Parameters
    ----------
    result : dict
        What :func:`validate_run` returned (or ``validation.json``).

    Returns
    -------
    list of str
        Lines without a trailing newline.
    """
    inj = result["injection"]
    pat = inj["pattern"]
    rms, peak = result["pattern_rms_sigma"], result["pattern_peak_sigma"]
    lines = [
        f"pattern ({pat['amplitude_sigma']:g} sigma peak, wavelength "
        f"{pat['wavelength_px']:.0f} px) recovered to RMS "
        + ("n/a" if rms is None else f"{rms:.3f}")
        + " sigma, peak "
        + ("n/a" if peak is None else f"{peak:.3f}")
        + f" sigma (sigma = {inj['sigma']:.4g})"
    ]
    if not inj["sizes"]:
        lines.append("no disk fits this image; nothing to measure")
        return lines
    lines.append(
        "fraction of injected disk flux kept (rows: Re px; columns: centre SB / sigma)"
    )
    lines.append("        " + "".join(f"{s:>7g}" for s in inj["surface_brightness"]))
    for re, row in zip(inj["sizes"], result["table"], strict=True):
        cells = "".join(f"{'-':>7}" if v is None else f"{v:>7.2f}" for v in row)
        lines.append(f"  Re {re:<3g} {cells}")
    if inj["skipped_sizes"]:
        sizes = ", ".join(f"{s:g}" for s in inj["skipped_sizes"])
        lines.append(f"sizes {sizes} px skipped: their apertures do not fit the image")
    return lines


def positive_list(text: str) -> list[float]:
    """``"10,20,40"`` as floats > 0 (an argparse ``type``)."""
    import argparse

    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values or not all(math.isfinite(v) and v > 0 for v in values):
        msg = f"expects positive numbers separated by commas, got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return values


def _count(text: str) -> int:
    import argparse

    if not text.isdigit() or int(text) < 1:
        msg = f"expects a number of worker processes, 1 or more, got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return int(text)


def add_arguments(parser) -> None:
    """The ``tilesky validate`` options, on an argparse (sub)parser."""
    parser.add_argument("run", metavar="RUN.zarr")
    parser.add_argument("--seed", type=int, default=0, help="injection seed")
    parser.add_argument(
        "--sizes",
        type=positive_list,
        default=[10.0, 20.0, 40.0, 80.0],
        metavar="RE,...",
        help="disk half-light radii in px (default 10,20,40,80)",
    )
    parser.add_argument(
        "--sb",
        type=positive_list,
        default=[0.5, 1.0, 2.0, 4.0],
        metavar="SB,...",
        help="disk central surface brightness in noise sigma (default 0.5,1,2,4)",
    )
    parser.add_argument(
        "--amplitude",
        type=float,
        default=2.0,
        help="peak of the injected pattern in noise sigma (default 2)",
    )
    parser.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="tcp://HOST:PORT of a running Dask scheduler, a scheduler file, or "
        "'threads' (default: start a local cluster)",
    )
    parser.add_argument(
        "--workers",
        type=_count,
        metavar="N",
        help="worker processes of a local cluster",
    )


def run_cli(args, say, storage_options: dict | None) -> int:
    """``tilesky validate``: run :func:`validate_run`, print its lines."""
    from tilesky.cluster import execution
    from tilesky.io import strip_credentials
    from tilesky.store import open_run

    # A missing or unfinished run is refused before a cluster starts.
    open_run(args.run, storage_options=storage_options)
    with execution(args.scheduler, n_workers=args.workers, announce=say):
        result = validate_run(
            args.run,
            seed=args.seed,
            sizes=args.sizes,
            surface_brightness=args.sb,
            amplitude=args.amplitude,
            storage_options=storage_options,
        )
    for line in format_lines(result):
        say(f"tilesky: {line}")
    shown = strip_credentials(args.run).rstrip("/")
    say(
        f"tilesky: validation in {shown}/validation.json and the run's "
        f"'validation' attribute ({result['seconds']:.1f} s)"
    )
    return 0

"""Public entry points: choose monolithic or tiled execution, assemble results.

The output follows the input: a numpy array with ``chunks=None`` runs every
kernel once on the whole image (the reference path) and returns computed
arrays; a numpy array with ``chunks`` (or large enough for ``"auto"``, the
default, to tile it on this process's threads) runs tiled and returns
computed arrays, the same bits;
a dask array, an xarray DataArray or a path/URL runs tiled and returns a
lazily backed Dataset whose intermediates are already materialized.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import dask.array as da
import numpy as np
import xarray as xr

from tilesky._inputs import (
    Prepared,
    chunk_multiple,
    prepare,
    refuse_overlap,
    simulation_reference,
)
from tilesky._version import __version__
from tilesky.backends import Tiled, WholeImage
from tilesky.cluster import task_seconds, thread_count
from tilesky.config import Config, load_config
from tilesky.io import (
    DEFAULT_CHUNK,
    ImageInput,
    aligned_chunks,
    run_tiles,
    strip_credentials,
)
from tilesky.pipeline import PipelineResult, run_pipeline
from tilesky.store import WORK, RunStore

__all__ = [
    "RunResult",
    "estimate_background",
    "resolve_config",
    "run_to_store",
    "simulation_reference",
]

log = logging.getLogger("tilesky")


def resolve_config(
    config: Config | str | None = None,
    *,
    preset: str | None = None,
    overrides: Iterable[str] = (),
) -> Config:
    """A :class:`Config` from an object, a TOML path or a preset name.

    Parameters
    ----------
    config : Config or str, optional
        A configuration, or the path of a TOML file; default: ``preset``.
    preset : str, optional
        Starting configuration by name (``"default"``, ``"notebook"``).
    overrides : iterable of str
        ``section.key=value`` settings applied last.

    Returns
    -------
    Config
        The validated configuration.
    """
    if isinstance(config, Config):
        return config.with_overrides(overrides) if overrides else config
    return load_config(config, preset=preset, overrides=overrides)


def _dispatch(
    prepared: Prepared, cfg: Config, *, store: RunStore | None = None
) -> PipelineResult:
    """Run the pipeline on prepared inputs: the one place a backend is chosen.

    numpy inputs (the reference path) run on :class:`WholeImage`; dask
    inputs on :class:`Tiled`, checkpointing into ``store`` when given.
    """
    scene = prepared.scene
    if isinstance(scene, np.ndarray):
        log.info("running monolithically on a %s image", scene.shape)
        backend = WholeImage()
    else:
        log.info("running tiled: %s image in chunks %s", scene.shape, scene.chunksize)
        backend = Tiled(store=store)
    return run_pipeline(
        scene,
        cfg,
        backend,
        coverage_mask=prepared.user_mask,
        weight=prepared.weight,
    )


def _dataset(result: PipelineResult, cfg: Config, image: ImageInput) -> xr.Dataset:
    # A DataArray input keeps its dimension names and the coordinates that
    # live on them (e.g. sky coordinates), as xarray users expect.
    dims, coords = ("y", "x"), {}
    if image.coords:
        dims = tuple(image.coords["dims"])
        coords = {
            k: v for k, v in image.coords["coords"].items() if set(v.dims) <= set(dims)
        }
    data_vars: dict[str, Any] = {}
    for name, arr in result.arrays.items():
        data_vars[name] = (dims, arr)
    for name, arr in result.mesh_arrays.items():
        data_vars[name] = (("y_mesh", "x_mesh"), arr)
    for name, arr in result.first_mesh_arrays.items():
        data_vars[f"first_{name}"] = (("y_mesh_first", "x_mesh_first"), arr)
    attrs = {
        "tilesky_version": __version__,
        "config": cfg.to_dict(),
        "input": image.identity,
        "noise": result.noise,
        "noise_model": result.depth_model,
        "timings": result.timings,
    }
    if result.coarse_gate is not None:
        attrs["coarse_gate"] = result.coarse_gate
    if image.header:
        attrs["wcs_header"] = image.header
    return xr.Dataset(data_vars, coords=coords, attrs=attrs)


def _estimate_sextractor(data: Any, *, config: Any, overrides, chunks, **kw):
    """``preset="sextractor"``: the mode of its own, with the same inputs."""
    from tilesky.errors import ConfigError
    from tilesky.sextractor_mode import SExtractorParams, estimate_sextractor

    if config is not None:
        msg = "the sextractor preset takes no config; set its parameters by overrides"
        raise ConfigError(msg, params="config")
    params = SExtractorParams.from_overrides(overrides)
    return estimate_sextractor(
        data, params, chunks=None if chunks == "auto" else chunks, **kw
    )


def estimate_background(
    data: Any,
    *,
    config: Config | str | None = None,
    preset: str | None = None,
    overrides: Iterable[str] = (),
    chunks: int | tuple[int, int] | str | None = "auto",
    mask: Any = None,
    weight: Any = None,
    variable: str | None = None,
    hdu: int | str | None = None,
    storage_options: dict | None = None,
) -> xr.Dataset:
    """Estimate the sky background of an image, tile by tile when chunked.

    Parameters
    ----------
    data : numpy.ndarray, dask.array.Array, xarray.DataArray, str
        The image (2-D), or a path/fsspec URL of a Zarr store or FITS file.
    config : Config or str, optional
        A configuration object or a TOML file; default: the ``preset``.
    preset : str, optional
        Starting configuration by name (``"default"``, ``"notebook"``), or
        ``"sextractor"``: SExtractor's background
        (:func:`tilesky.sextractor_mode.estimate_sextractor`, whose
        parameters the ``overrides`` set; no ``config``).
    overrides : iterable of str
        ``section.key=value`` settings applied last.
    chunks : int, (int, int), "auto" or None
        Tile size; rounded up to a multiple of every mesh box. ``"auto"``
        (default): a numpy image that makes at least two tiles of
        :func:`tilesky.io.run_tiles` runs tiled on this process's threads
        (bit for bit the monolithic result, by the tiling invariant); a
        smaller one, or any image on one thread, runs monolithically.
        ``None``: a numpy array runs monolithically (the reference path).
        Lazy and file inputs keep their own chunks, aligned to the boxes.
    mask : array or str, optional
        True (non-zero) where pixels must be ignored (a user mask); they
        still receive a background.
    weight : array or str, optional
        A weight or exposure map; zero (or non-finite) weight means no
        coverage, and the outputs are NaN there.
    variable, hdu : optional
        Which array of a Zarr group / which FITS HDU to read.
    storage_options : dict, optional
        fsspec options for URLs.

    Returns
    -------
    xarray.Dataset
        ``background``, ``background_rms``, ``mask``, ``subtracted`` on
        ``(y, x)``; the final mesh maps on ``(y_mesh, x_mesh)`` and the first
        ones on ``(y_mesh_first, x_mesh_first)``; attributes ``config``,
        ``input``, ``noise`` and ``timings``.

    Examples
    --------
    >>> import numpy as np
    >>> from tilesky import estimate_background
    >>> rng = np.random.default_rng(0)
    >>> image = rng.normal(1.0, 0.1, (120, 150)).astype(np.float32)
    >>> ds = estimate_background(image)
    >>> abs(float(ds.background.mean()) - 1.0) < 0.01
    True
    """
    if preset == "sextractor":
        return _estimate_sextractor(
            data,
            config=config,
            overrides=overrides,
            chunks=chunks,
            mask=mask,
            weight=weight,
            variable=variable,
            hdu=hdu,
            storage_options=storage_options,
        )
    cfg = resolve_config(config, preset=preset, overrides=overrides)
    threads = thread_count()
    whole = isinstance(data, np.ndarray) and (
        chunks is None
        or (chunks == "auto" and not _tiles_pay(np.shape(data), cfg, threads))
    )
    auto = chunks == "auto"
    in_memory = isinstance(data, np.ndarray)
    prepared = prepare(
        data,
        cfg,
        whole=whole,
        chunks=None if auto else chunks,
        plan_tiles=auto and in_memory and not whole,
        threads=threads,
        mask=mask,
        weight=weight,
        variable=variable,
        hdu=hdu,
        storage_options=storage_options,
    )
    start = time.perf_counter()
    result = _dispatch(prepared, cfg)
    image = prepared.image
    ds = _dataset(result, cfg, image)
    if isinstance(data, np.ndarray):
        ds = ds.compute()
    ds.attrs["timings"]["total"] = round(time.perf_counter() - start, 4)
    return ds


def _tiles_pay(shape: tuple[int, ...], cfg: Config, threads: int) -> bool:
    """Whether an in-memory image runs faster tiled on ``threads`` threads.

    Tiling pays once the image makes at least two :func:`run_tiles` tiles
    for the threads there are; below that it would only add halos.
    """
    # Anything odd (not 2-D, empty) goes the reference way, which says why.
    if threads < 2 or len(shape) != 2 or min(shape) < 1:
        return False
    multiple = chunk_multiple(shape, cfg)
    start = aligned_chunks(shape, DEFAULT_CHUNK, multiple)
    tiles = run_tiles(tuple(shape), start, multiple, threads=threads)
    return tiles[0] < shape[0] or tiles[1] < shape[1]


@dataclass
class RunResult:
    """What :func:`run_to_store` did.

    Parameters
    ----------
    url : str
        The run store.
    computed : bool
        False when the store was already complete (``resume=True``) and
        nothing ran.
    outputs : dict of str to dask.array.Array
        Every stored output, read lazily from the store.
    metrics : dict
        The quality metrics (also in ``metrics.json`` and the attributes).
    points : object
        Per-source residuals of the metrics pass, for the report's plots.
    noise, timings : dict
        Noise levels of the thresholds, seconds per stage.
    blocks_written, blocks_skipped : int
        Blocks this run wrote, and blocks a resumed run found stored.
    """

    url: str
    computed: bool
    outputs: dict[str, da.Array] = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    points: Any = None
    noise: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)
    blocks_written: int = 0
    blocks_skipped: int = 0


#: Full-resolution float32 images a run keeps when its intermediates stay in
#: the workers' memory: scene, ring-median stage, mask and
#: background per round, the four outputs (masks count a quarter).
_KEPT_IMAGES = 12


def _store_attrs(cfg: Config, image: ImageInput, mask, weight, extra) -> dict:
    """The attributes that say what a run was made from."""
    attrs = {"config": cfg.to_dict(), "input": image.identity}
    if isinstance(mask, (str, os.PathLike)):
        attrs["mask_input"] = strip_credentials(os.fspath(mask))
    if isinstance(weight, (str, os.PathLike)):
        attrs["weight_input"] = strip_credentials(os.fspath(weight))
    if image.header:
        attrs["wcs_header"] = image.header
    attrs.update(extra or {})
    return attrs


def _output_items(result: PipelineResult) -> list[tuple]:
    """``(path, array, dims, attrs)`` of every output the store writes."""
    items = [(n, a, ("y", "x"), None) for n, a in result.arrays.items()]
    items += [(n, a, ("y_mesh", "x_mesh"), None) for n, a in result.mesh_arrays.items()]
    items += [
        (f"first_{n}", a, ("y_mesh_first", "x_mesh_first"), None)
        for n, a in result.first_mesh_arrays.items()
    ]
    return items


def _compute_into(store: RunStore, prepared: Prepared, cfg: Config, resume: bool):
    """Run the pipeline into ``store``: ``(result, items, outputs)``.

    Outputs are kept in memory when they fit: the metrics then read them
    from there while their blocks are written.
    """
    try:
        result = _dispatch(prepared, cfg, store=store)
        items = _output_items(result)
        stored = store.write_arrays(items, keep=True)
    except Exception:
        # A run that failed before writing anything leaves nothing behind; one
        # that wrote blocks stays marked "running" so it can be resumed.
        store.drain(raise_errors=False)
        if store.blocks_written == 0 and not resume:
            store.discard()
        raise
    outputs = {item[0]: arr for item, arr in zip(items, stored, strict=True)}
    return result, items, outputs


def _measure(store: RunStore, prepared: Prepared, outputs: dict, reference: dict):
    """The quality metrics of a run's outputs: ``(metrics, points)``."""
    from tilesky.metrics import compute_metrics

    scene = prepared.scene
    held = store.held.get(f"{WORK}/scene")
    # The pipeline's float32 copy of a float32 input has the same values:
    # reading it spares decoding the input again.
    same = scene.dtype.kind == "f" and scene.dtype.itemsize == 4
    if held is not None and same and scene.shape == held.shape:
        scene = held.rechunk(scene.chunks) if held.chunks != scene.chunks else held
    try:
        return compute_metrics(
            scene,
            outputs["background"],
            outputs["mask"],
            truth=reference.get("truth"),
            sky=reference.get("sky"),
            catalogue=reference.get("catalogue"),
            return_points=True,
        )
    except Exception:
        store.drain(raise_errors=False)
        raise


def run_to_store(
    source: Any,
    out: str,
    *,
    config: Config,
    chunks: int | tuple[int, int] | None = None,
    overwrite: bool = False,
    resume: bool = False,
    variable: str | None = None,
    hdu: int | str | None = None,
    mask: Any = None,
    weight: Any = None,
    storage_options: dict | None = None,
    out_storage_options: dict | None = None,
    extra_attrs: dict | None = None,
) -> RunResult:
    """Run the pipeline from ``source`` into the run store ``out``.

    Parameters
    ----------
    source : str, numpy.ndarray, dask.array.Array or xarray.DataArray
        The image, as for :func:`estimate_background`.
    out : str
        Path or fsspec URL of the run store (a Zarr group).
    config : Config
        The configuration (see :func:`resolve_config`).
    chunks : int or (int, int), optional
        Tile size; default: :func:`tilesky.io.run_tiles` of the input's
        chunks and the cluster's thread count (large tiles: less halo
        recomputed, fewer tasks).
    overwrite, resume : bool
        Replace an existing run, or continue an unfinished one.
    variable, hdu, mask, weight, storage_options
        As for :func:`estimate_background`.
    out_storage_options : dict, optional
        fsspec options for ``out``.
    extra_attrs : dict, optional
        More attributes for the store.

    Returns
    -------
    RunResult
        The opened store, its status and the arrays of the run.

    Notes
    -----
    Intermediates are checkpointed under ``out/_work`` so a killed run can
    be resumed with ``resume=True``; the store is marked complete last.
    """
    from tilesky._trust import trust_check

    start = time.perf_counter()
    prepared = prepare(
        source,
        config,
        chunks=chunks,
        plan_tiles=True,
        threads=thread_count(),
        mask=mask,
        weight=weight,
        variable=variable,
        hdu=hdu,
        storage_options=storage_options,
    )
    for what, given in (("input", source), ("mask", mask), ("weight", weight)):
        refuse_overlap(out, out_storage_options, what, given, storage_options)
    store = RunStore(out, storage_options=out_storage_options)
    attrs = _store_attrs(config, prepared.image, mask, weight, extra_attrs)
    pixels = prepared.pixel_arrays()
    if not store.create(overwrite=overwrite, resume=resume, attrs=attrs, pixels=pixels):
        log.info("%s is already complete: nothing to do", out)
        return RunResult(url=str(out), computed=False)
    # Checkpoints and outputs of one run: about twelve float32 images.
    store.remember = frozenset({f"{WORK}/scene"})
    store.keep_bytes = _KEPT_IMAGES * 4 * int(np.prod(prepared.scene.shape))
    with task_seconds() as work:
        result, items, outputs = _compute_into(store, prepared, config, resume)
        metrics_start = time.perf_counter()
        reference = simulation_reference(
            source, chunks=prepared.scene.chunks, storage_options=storage_options
        )
        metrics, points = _measure(store, prepared, outputs, reference)
        result.timings["metrics"] = round(time.perf_counter() - metrics_start, 4)
        store.drain()
    # From here on the outputs are read from the store: the result no longer
    # refers to intermediates kept in the worker's memory, which are freed.
    stored = {item[0]: store.stored(item[0], item[1].chunks) for item in items}
    result.timings["total"] = round(time.perf_counter() - start, 4)
    store.write_json("metrics.json", metrics)
    blocks = {"written": store.blocks_written, "skipped": store.blocks_skipped}
    store.finish(
        {
            "noise": result.noise,
            "noise_model": result.depth_model,
            **({"coarse_gate": result.coarse_gate} if result.coarse_gate else {}),
            "timings": result.timings,
            "task_seconds": work,
            "metrics": metrics,
            "blocks": blocks,
            "trust": trust_check(metrics),
        }
    )
    return RunResult(
        url=str(out),
        computed=True,
        outputs=stored,
        metrics=metrics,
        points=points,
        noise=result.noise,
        timings=result.timings,
        blocks_written=blocks["written"],
        blocks_skipped=blocks["skipped"],
    )

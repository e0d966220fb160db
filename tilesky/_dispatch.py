"""Public entry points: choose monolithic or tiled execution, assemble results.

The output follows the input: a numpy array without ``chunks`` runs every
kernel once on the whole image (the reference path) and returns computed
arrays; a numpy array with ``chunks`` runs tiled and returns computed arrays;
a dask array, an xarray DataArray or a path/URL runs tiled and returns a
lazily backed Dataset whose intermediates are already materialized.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable
from typing import Any

import dask
import dask.array as da
import fsspec
import numpy as np
import xarray as xr

from tilesky._version import __version__
from tilesky.backends import Tiled, WholeImage
from tilesky.cluster import thread_count
from tilesky.config import Config, load_config
from tilesky.io import (
    ImageInput,
    InputError,
    is_url,
    open_image,
    run_tiles,
    strip_credentials,
)
from tilesky.kernels._ring import ring_depth
from tilesky.pipeline import PipelineResult, run_pipeline
from tilesky.store import RunStore, StoreError

__all__ = ["estimate_background", "resolve_config", "run_to_store"]

log = logging.getLogger("tilesky")


def resolve_config(
    config: Config | str | None = None,
    *,
    preset: str | None = None,
    overrides: Iterable[str] = (),
) -> Config:
    """A :class:`Config` from an object, a TOML path or a preset name."""
    if isinstance(config, Config):
        return config.with_overrides(overrides) if overrides else config
    return load_config(config, preset=preset, overrides=overrides)


def _check_size(shape: tuple[int, ...], cfg: Config) -> None:
    """Refuse an image smaller than the ring footprint or a mesh box.

    Reflect padding would still give numbers, but an annulus wider than the
    image is filled with mirrored copies of the pixels (and sources) it is
    meant to exclude, and a mesh without one whole box has no statistics:
    the background would be silently wrong.
    """
    ring = 2 * ring_depth(cfg.ring.radius_in, cfg.ring.width) + 1
    meshes = (cfg.first_mesh.box_size, cfg.final_mesh.box_size)
    box = tuple(max(b[axis] for b in meshes) for axis in (0, 1))
    need = (max(ring, box[0]), max(ring, box[1]))
    if shape[0] >= need[0] and shape[1] >= need[1]:
        return
    msg = (
        f"the image {tuple(int(n) for n in shape)} is too small for this "
        f"configuration: it needs at least {need[0]}x{need[1]} pixels (ring-median "
        f"footprint {ring}x{ring} from ring.radius_in={cfg.ring.radius_in} and "
        f"ring.width={cfg.ring.width}; largest mesh box_size {box}); give a larger "
        "image or smaller settings, e.g. ring.radius_in=4 ring.width=2 "
        "first_mesh.box_size=4 final_mesh.box_size=4"
    )
    raise InputError(msg)


def _open_sized(source: Any, cfg: Config, **kwargs: Any) -> ImageInput:
    """:func:`open_image` with chunks aligned to the mesh boxes, size-checked."""
    try:
        image = open_image(source, box_size=cfg.chunk_multiple, **kwargs)
    except InputError:
        # open_image refuses an image smaller than the chunk multiple (the lcm
        # of the boxes, a size the user never chose); when that is the cause,
        # name the ring and box sizes instead. Only failures pay this reopen.
        try:
            shape = open_image(source, box_size=1, **kwargs).data.shape
        except InputError:
            shape = None
        if shape is not None and len(shape) == 2:
            _check_size(shape, cfg)
        raise
    _check_size(image.data.shape, cfg)
    return image


def _location(path: Any, storage_options: dict | None) -> tuple[str, str] | None:
    """``(protocol, normalized path)`` of a path or URL; None for arrays."""
    if not isinstance(path, (str, os.PathLike)):
        return None
    text = os.fspath(path)
    if is_url(text):
        try:
            fs, where = fsspec.core.url_to_fs(text, **(storage_options or {}))
        except Exception:  # opening it will say what is wrong
            return None
        protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
        if protocol not in ("file", "local"):
            return (protocol, "/" + where.strip("/"))
        text = where
    return ("file", os.path.realpath(os.path.expanduser(text)))


def _refuse_overlap(out, out_options, what: str, given, in_options) -> None:
    """Refuse an output that is, or holds, an input: creating it deletes that."""
    target, source = _location(out, out_options), _location(given, in_options)
    if target is None or source is None or target[0] != source[0]:
        return
    if target[0] != "file" and (out_options or {}) != (in_options or {}):
        return  # perhaps another endpoint: not provably the same object
    inside = source[1].startswith(target[1].rstrip("/") + "/")
    if source[1] == target[1] or inside:
        relation = "is" if source[1] == target[1] else "contains"
        msg = (
            f"output {strip_credentials(str(out))!r} {relation} the {what} "
            f"{strip_credentials(os.fspath(given))!r}; writing the run there would "
            "delete it: choose another output path"
        )
        raise StoreError(msg)


def _as_mask(mask, image: ImageInput, *, tiled: bool, storage_options=None):
    arr = _aux_map(mask, image, "mask", storage_options, tiled=tiled)
    if arr is None:
        return None
    if arr.dtype.kind not in "biuf":
        msg = f"mask must be boolean or numeric, got dtype {arr.dtype}"
        raise InputError(msg)
    if arr.dtype != bool:
        # A numeric mask: non-zero means masked; NaN counts as masked too.
        arr = (arr != 0) | (arr != arr)
    return arr


def _aux_map(source, image: ImageInput, what: str, storage_options, *, tiled: bool):
    """Open a mask or weight map given as an array or a path, shaped like the image."""
    if source is None:
        return None
    if isinstance(source, (str, os.PathLike)):
        # A mask may be stored as booleans; open_image refuses those as images.
        aux = open_image(
            os.fspath(source),
            chunks=image.data.chunksize,
            storage_options=storage_options,
            boolean=what == "mask",
        ).data
    elif isinstance(source, xr.DataArray):
        aux = source.data
    elif isinstance(source, da.Array):
        aux = source
    else:
        aux = np.asarray(source)
    if aux.dtype.kind not in "biuf":
        msg = (
            f"{what} must be boolean or numeric, got dtype {aux.dtype}; "
            f"give a {what} of numbers"
        )
        raise InputError(msg)
    if tuple(aux.shape) != tuple(image.data.shape):
        msg = (
            f"{what} has shape {tuple(aux.shape)} but the image has shape "
            f"{tuple(image.data.shape)}; give a {what} of the image's shape"
        )
        raise InputError(msg)
    if tiled:
        if isinstance(aux, da.Array):
            return aux.rechunk(image.data.chunks)
        return da.from_array(np.asarray(aux), chunks=image.data.chunks)
    return np.asarray(aux)


def _apply_weight(scene, weight):
    """Pixels of zero (or non-finite) weight are no coverage."""
    if weight is None:
        return scene
    lib = da if isinstance(scene, da.Array) else np
    with np.errstate(invalid="ignore"):
        covered = lib.isfinite(weight) & (weight > 0)
    return lib.where(covered, scene, np.float32(np.nan)).astype(scene.dtype)


def simulation_reference(source: Any, *, chunks=None, storage_options=None) -> dict:
    """Truth, noisy sky and source catalogue when ``source`` is a simulation.

    Returns an empty dict for any other input (real data have no truth).
    """
    if isinstance(source, xr.Dataset):
        ds = source
    elif isinstance(source, str):
        try:
            kw = {"storage_options": storage_options} if storage_options else {}
            ds = xr.open_zarr(source, consolidated=False, **kw)
        except Exception:  # not a Zarr group: no reference
            return {}
    else:
        return {}
    if ds.attrs.get("tilesky_kind") != "simulation":
        return {}
    ref: dict[str, Any] = {}
    for name in ("truth", "sky"):
        if name in ds:
            arr = ds[name].data
            if chunks is not None and isinstance(arr, da.Array):
                arr = arr.rechunk(chunks)
            ref[name] = arr
    cols = ("x_mean", "y_mean", "flux", "re")
    if all(c in ds for c in cols):
        # One read for the four columns: each ``.values`` would be a
        # computation of its own (a scheduler round trip on a cluster).
        columns = dask.compute(*(ds[c].data for c in cols), scheduler="sync")
        ref["catalogue"] = {
            c: np.asarray(v) for c, v in zip(cols, columns, strict=True)
        }
    ref["noise_sigma"] = ds.attrs.get("noise_sigma")
    return ref


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
        "timings": result.timings,
    }
    if image.header:
        attrs["wcs_header"] = image.header
    return xr.Dataset(data_vars, coords=coords, attrs=attrs)


def estimate_background(
    data: Any,
    *,
    config: Config | str | None = None,
    preset: str | None = None,
    overrides: Iterable[str] = (),
    chunks: int | tuple[int, int] | None = None,
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
        Starting configuration by name (``"default"``, ``"notebook"``).
    overrides : iterable of str
        ``section.key=value`` settings applied last.
    chunks : int or (int, int), optional
        Tile size; rounded up to a multiple of every mesh box. A numpy
        array without ``chunks`` runs monolithically (the reference).
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
    cfg = resolve_config(config, preset=preset, overrides=overrides)
    monolithic = isinstance(data, np.ndarray) and chunks is None
    image = _open_sized(
        data,
        cfg,
        variable=variable,
        hdu=hdu,
        chunks=chunks,
        storage_options=storage_options,
    )
    start = time.perf_counter()
    if monolithic:
        log.info("running monolithically on a %s image", image.data.shape)
        # The reader's conversion (dtype, masked pixels to NaN), in memory.
        scene, backend = np.asarray(image.data.compute()), WholeImage()
    else:
        log.info(
            "running tiled: %s image in chunks %s",
            image.data.shape,
            image.data.chunksize,
        )
        scene, backend = image.data, Tiled()
    tiled = not monolithic
    scene = _apply_weight(
        scene, _aux_map(weight, image, "weight", storage_options, tiled=tiled)
    )
    result = run_pipeline(
        scene,
        cfg,
        backend,
        coverage_mask=_as_mask(
            mask, image, tiled=tiled, storage_options=storage_options
        ),
    )
    ds = _dataset(result, cfg, image)
    if isinstance(data, np.ndarray):
        ds = ds.compute()
    ds.attrs["timings"]["total"] = round(time.perf_counter() - start, 4)
    return ds


#: Full-resolution float32 images a run keeps when its intermediates stay in
#: the workers' memory: scene, ring-median stage, mask and
#: background per round, the four outputs (masks count a quarter).
_KEPT_IMAGES = 12


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
) -> RunStore:
    """Run the pipeline from ``source`` into the run store ``out``.

    Without ``chunks`` the tiles are :func:`tilesky.io.run_tiles` of the
    input's chunks and the cluster's thread count (large tiles: less halo
    recomputed, fewer tasks).

    Intermediates are checkpointed under ``out/_work`` so a killed run can be
    resumed with ``resume=True``; the store is marked complete last.
    """
    start = time.perf_counter()
    opened = {"variable": variable, "hdu": hdu, "storage_options": storage_options}
    image = _open_sized(source, config, chunks=chunks, **opened)
    if chunks is None:
        tiles = run_tiles(
            image.data.shape,
            image.data.chunksize,
            config.chunk_multiple,
            threads=thread_count(),
        )
        if tiles != image.data.chunksize:
            image = _open_sized(source, config, chunks=tiles, **opened)
    scene = _apply_weight(
        image.data, _aux_map(weight, image, "weight", storage_options, tiled=True)
    )
    user_mask = _as_mask(mask, image, tiled=True, storage_options=storage_options)
    for what, given in (("input", source), ("mask", mask), ("weight", weight)):
        _refuse_overlap(out, out_storage_options, what, given, storage_options)
    store = RunStore(out, storage_options=out_storage_options)
    attrs = {"config": config.to_dict(), "input": image.identity}
    if isinstance(mask, (str, os.PathLike)):
        attrs["mask_input"] = strip_credentials(os.fspath(mask))
    if isinstance(weight, (str, os.PathLike)):
        attrs["weight_input"] = strip_credentials(os.fspath(weight))
    if image.header:
        attrs["wcs_header"] = image.header
    if extra_attrs:
        attrs.update(extra_attrs)
    if not store.create(overwrite=overwrite, resume=resume, attrs=attrs):
        log.info("%s is already complete: nothing to do", out)
        return store
    # Checkpoints and outputs of one run: about twelve float32 images.
    store.keep_bytes = _KEPT_IMAGES * 4 * int(np.prod(image.data.shape))
    try:
        result = run_pipeline(
            scene,
            config,
            Tiled(store=store),
            coverage_mask=user_mask,
        )
        items = [(n, a, ("y", "x"), None) for n, a in result.arrays.items()]
        items += [
            (n, a, ("y_mesh", "x_mesh"), None) for n, a in result.mesh_arrays.items()
        ]
        items += [
            (f"first_{n}", a, ("y_mesh_first", "x_mesh_first"), None)
            for n, a in result.first_mesh_arrays.items()
        ]
        # Kept in memory when they fit: the metrics then read them from
        # there while their blocks are written.
        stored = store.write_arrays(items, keep=True)
        outputs = {item[0]: arr for item, arr in zip(items, stored, strict=True)}
    except Exception:
        # A run that failed before writing anything leaves nothing behind; one
        # that wrote blocks stays marked "running" so it can be resumed.
        store.drain(raise_errors=False)
        if store.blocks_written == 0 and not resume:
            store.discard()
        raise
    metrics_start = time.perf_counter()
    reference = simulation_reference(
        source, chunks=image.data.chunks, storage_options=storage_options
    )
    from tilesky.metrics import compute_metrics

    try:
        metrics, store.points = compute_metrics(
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
    result.timings["metrics"] = round(time.perf_counter() - metrics_start, 4)
    store.drain()
    # From here on the outputs are read from the store: the result no longer
    # refers to intermediates kept in the worker's memory, which are freed.
    store.outputs = {item[0]: store.stored(item[0], item[1].chunks) for item in items}
    result.arrays = {n: store.outputs[n] for n in result.arrays}
    result.mesh_arrays = {n: store.outputs[n] for n in result.mesh_arrays}
    result.first_mesh_arrays = {
        n: store.outputs[f"first_{n}"] for n in result.first_mesh_arrays
    }
    result.timings["total"] = round(time.perf_counter() - start, 4)
    store.write_json("metrics.json", metrics)
    store.finish(
        {
            "noise": result.noise,
            "timings": result.timings,
            "metrics": metrics,
            "blocks": {
                "written": store.blocks_written,
                "skipped": store.blocks_skipped,
            },
        }
    )
    store.result = result
    store.reference = reference
    store.image = image
    return store

"""Public entry points: choose monolithic or tiled execution, assemble results.

The output follows the input: a numpy array without ``chunks`` runs every
kernel once on the whole image (the reference path) and returns computed
arrays; a numpy array with ``chunks`` runs tiled and returns computed arrays;
a dask array, an xarray DataArray or a path/URL runs tiled and returns a
lazily backed Dataset whose intermediates are already materialized.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Any

import dask.array as da
import numpy as np
import xarray as xr

from tilesky._version import __version__
from tilesky.config import Config, load_config
from tilesky.io import ImageInput, InputError, open_image, strip_credentials
from tilesky.pipeline import PipelineResult, run_pipeline
from tilesky.store import RunStore
from tilesky.tiled.stages import Tiled, WholeImage

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
    if isinstance(source, str):
        aux = open_image(
            source, chunks=image.data.chunksize, storage_options=storage_options
        ).data
    elif isinstance(source, xr.DataArray):
        aux = source.data
    else:
        aux = source
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


def _dataset(result: PipelineResult, cfg: Config, image: ImageInput) -> xr.Dataset:
    data_vars: dict[str, Any] = {}
    for name, arr in result.arrays.items():
        data_vars[name] = (("y", "x"), arr)
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
    return xr.Dataset(data_vars, attrs=attrs)


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
    image = open_image(
        data,
        variable=variable,
        hdu=hdu,
        chunks=chunks,
        box_size=cfg.chunk_multiple,
        storage_options=storage_options,
    )
    start = time.perf_counter()
    if monolithic:
        log.info("running monolithically on a %s image", image.data.shape)
        scene = np.asarray(data, dtype=image.data.dtype)
        scene = _apply_weight(
            scene, _aux_map(weight, image, "weight", storage_options, tiled=False)
        )
        result = run_pipeline(
            scene,
            cfg,
            WholeImage(),
            coverage_mask=_as_mask(
                mask, image, tiled=False, storage_options=storage_options
            ),
        )
    else:
        log.info(
            "running tiled: %s image in chunks %s",
            image.data.shape,
            image.data.chunksize,
        )
        scene = _apply_weight(
            image.data, _aux_map(weight, image, "weight", storage_options, tiled=True)
        )
        result = run_pipeline(
            scene,
            cfg,
            Tiled(),
            coverage_mask=_as_mask(
                mask, image, tiled=True, storage_options=storage_options
            ),
        )
    ds = _dataset(result, cfg, image)
    if isinstance(data, np.ndarray):
        ds = ds.compute()
    ds.attrs["timings"]["total"] = round(time.perf_counter() - start, 4)
    return ds


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

    Intermediates are checkpointed under ``out/_work`` so a killed run can be
    resumed with ``resume=True``; the store is marked complete last.
    """
    start = time.perf_counter()
    image = open_image(
        source,
        variable=variable,
        hdu=hdu,
        chunks=chunks,
        box_size=config.chunk_multiple,
        storage_options=storage_options,
    )
    scene = _apply_weight(
        image.data, _aux_map(weight, image, "weight", storage_options, tiled=True)
    )
    user_mask = _as_mask(mask, image, tiled=True, storage_options=storage_options)
    store = RunStore(out, storage_options=out_storage_options)
    attrs = {"config": config.to_dict(), "input": image.identity}
    if isinstance(mask, str):
        attrs["mask_input"] = strip_credentials(mask)
    if isinstance(weight, str):
        attrs["weight_input"] = strip_credentials(weight)
    if image.header:
        attrs["wcs_header"] = image.header
    if extra_attrs:
        attrs.update(extra_attrs)
    if not store.create(overwrite=overwrite, resume=resume, attrs=attrs):
        log.info("%s is already complete: nothing to do", out)
        return store
    try:
        result = run_pipeline(
            scene,
            config,
            Tiled(checkpoint=store.checkpoint),
            coverage_mask=user_mask,
        )
        for name, arr in result.arrays.items():
            store.write_array(name, arr, dims=("y", "x"))
        for name, arr in result.mesh_arrays.items():
            store.write_array(name, arr, dims=("y_mesh", "x_mesh"))
        for name, arr in result.first_mesh_arrays.items():
            store.write_array(
                f"first_{name}", arr, dims=("y_mesh_first", "x_mesh_first")
            )
    except Exception:
        # A run that failed before writing anything leaves nothing behind; one
        # that wrote blocks stays marked "running" so it can be resumed.
        if store.blocks_written == 0 and not resume:
            store.discard()
        raise
    result.timings["total"] = round(time.perf_counter() - start, 4)
    store.finish(
        {
            "noise": result.noise,
            "timings": result.timings,
            "blocks": {
                "written": store.blocks_written,
                "skipped": store.blocks_skipped,
            },
        }
    )
    store.result = result
    store.image = image
    return store

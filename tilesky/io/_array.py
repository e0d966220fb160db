"""In-memory inputs: numpy (and masked) arrays, dask arrays, xarray objects.

They are already arrays: opening one checks it, converts it to the working
dtype and rechunks it to box-aligned chunks, without computing anything.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import dask.array as da
import numpy as np
import xarray as xr
from dask.base import tokenize

from tilesky.errors import InputError
from tilesky.io._image import (
    ImageInput,
    check_shape,
    header_from_attrs,
    integer_offset,
    make_identity,
    pick_variable,
    reject,
    to_working,
    working_dtype,
)
from tilesky.io._tiles import aligned_chunks
from tilesky.io._urls import strip_credentials

__all__ = ["ARRAY_TYPES", "open_array"]

log = logging.getLogger(__name__)

#: The in-memory inputs :func:`open_array` opens.
ARRAY_TYPES = (xr.Dataset, xr.DataArray, da.Array, np.ndarray)

_PLANE_HINT = "select a plane, e.g. cube[0]"
_ANY_VARIABLE = "an array in a Zarr group or Dataset"


def open_array(
    source: xr.Dataset | xr.DataArray | da.Array | np.ndarray,
    variable: str | None,
    hdu: int | str | None,
    box: tuple[int, int],
    chunks: Any,
    boolean: bool = False,
) -> ImageInput:
    """Open one of :data:`ARRAY_TYPES` (see :func:`tilesky.io.open_image`)."""
    if isinstance(source, xr.Dataset):
        reject("hdu", hdu, "Dataset", "a FITS HDU")
        shapes = {str(k): v.shape for k, v in source.data_vars.items()}
        name = pick_variable(shapes, source.attrs, variable, "the Dataset")
        return _open_dataarray(source[name], box, chunks, source.attrs, boolean)
    if isinstance(source, xr.DataArray):
        kind = "DataArray"
    elif isinstance(source, da.Array):
        kind = "dask array"
    else:
        kind = "numpy array"
    reject("variable", variable, kind, _ANY_VARIABLE)
    reject("hdu", hdu, kind, "a FITS HDU")
    if isinstance(source, xr.DataArray):
        return _open_dataarray(source, box, chunks, {}, boolean)
    if isinstance(source, da.Array):
        identity = make_identity(
            "dask", f"<dask array {source.name}>", source.shape, source.dtype
        )
        identity["fingerprint"] = {"dask_name": source.name}
        data = _align_dask(source, "the dask array", box, chunks, _PLANE_HINT, boolean)
        return ImageInput(data, identity, None, None)
    return _open_numpy(source, box, chunks, boolean)


def _align_dask(
    arr: da.Array,
    what: str,
    box: tuple[int, int],
    chunks: Any,
    hint: str,
    boolean: bool = False,
) -> da.Array:
    check_shape(arr.shape, what, hint, box)
    target = working_dtype(arr.dtype, what, boolean)
    native = tuple(c[0] for c in arr.chunks)
    edges = aligned_chunks(arr.shape, native if chunks is None else chunks, box)
    offset = 0 if boolean else integer_offset(arr.dtype, arr.shape, _window(arr))
    if offset:
        log.info("%s: offset %d removed from its integer pixels", what, offset)
        arr = arr.map_blocks(to_working, target, offset, dtype=target)
    elif arr.dtype != target:
        # np.dtype(">f4") != np.dtype("<f4"), so this also fixes byte order.
        arr = arr.astype(target)
    log.debug("%s: chunks %s -> %s (box %s)", what, arr.chunksize, edges, box)
    return arr.rechunk(edges)


def _window(arr: da.Array):
    """``read(key)`` computing a window of a dask array (for integer_offset)."""
    return lambda key: arr[key].compute(scheduler="sync")


def _open_numpy(
    arr: np.ndarray, box: tuple[int, int], chunks: Any, boolean: bool = False
) -> ImageInput:
    what = "the numpy array"
    hint = _PLANE_HINT
    check_shape(arr.shape, what, hint, box)
    target = working_dtype(arr.dtype, what, boolean)
    identity = make_identity("numpy", "<numpy array>", arr.shape, arr.dtype)
    identity["fingerprint"] = {"token": tokenize(arr)}
    if isinstance(arr, np.ma.MaskedArray):
        # Masked pixels are unknown sky: NaN is how tilesky spells that.
        arr = np.ma.filled(arr.astype(target), np.nan)
    edges = aligned_chunks(arr.shape, chunks, box)
    name = f"tilesky-read-numpy-{identity['fingerprint']['token']}-{tokenize(edges)}"
    data = da.from_array(np.asarray(arr), chunks=edges, name=name)
    offset = 0 if boolean else integer_offset(arr.dtype, arr.shape, arr.__getitem__)
    if offset:
        identity["offset"] = offset
        log.info("%s: offset %d removed from its integer pixels", what, offset)
        data = data.map_blocks(to_working, target, offset, dtype=target)
    elif data.dtype != target:
        data = data.astype(target)
    return ImageInput(data, identity, None, None)


def _open_dataarray(
    arr: xr.DataArray,
    box: tuple[int, int],
    chunks: Any,
    parent_attrs: Mapping,
    boolean: bool = False,
) -> ImageInput:
    label = f"DataArray {arr.name!r}" if arr.name is not None else "the DataArray"
    if arr.ndim != 2:
        first = arr.dims[0] if arr.dims else "dim"
        msg = (
            f"{label} has dims {arr.dims} and shape {arr.shape}; tilesky needs a 2-D "
            f"image: select a plane, e.g. .isel({first}=0), or pick another variable="
        )
        raise InputError(msg, params="variable")
    source = arr.encoding.get("source")
    source = (
        strip_credentials(str(source)) if source else f"<xarray.DataArray {arr.name}>"
    )
    identity = make_identity(
        "xarray",
        source,
        arr.shape,
        arr.dtype,
        variable=None if arr.name is None else str(arr.name),
        dims=[str(d) for d in arr.dims],
    )
    values = arr.data
    if isinstance(values, da.Array):
        identity["fingerprint"] = {"dask_name": values.name}
        data = _align_dask(values, label, box, chunks, "", boolean)
    else:
        values = np.asarray(values)
        opened = _open_numpy(values, box, chunks, boolean)
        identity["fingerprint"] = opened.identity["fingerprint"]
        data = opened.data
    coords = {
        "dims": tuple(arr.dims),
        "name": arr.name,
        "coords": {str(k): v.variable for k, v in arr.coords.items()},
        "attrs": dict(arr.attrs),
    }
    header = header_from_attrs(arr.attrs, parent_attrs)
    return ImageInput(data, identity, header, coords)

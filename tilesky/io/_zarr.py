"""Zarr inputs (v2 or v3, local or fsspec URL): a store, group or array.

The graph has one reading task per chunk; each reads its section through
zarr, so a task's memory stays near its chunk.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import warnings
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
from dask.base import tokenize

from tilesky.errors import InputError
from tilesky.io._image import (
    ImageInput,
    check_shape,
    describe,
    header_from_attrs,
    integer_offset,
    key_text,
    lazy_read,
    make_identity,
    pick_variable,
    reject,
    to_working,
    working_dtype,
)
from tilesky.io._tiles import aligned_chunks
from tilesky.io._urls import raise_clean, secret_values

__all__ = ["open_zarr", "quiet_foreign_objects"]

log = logging.getLogger(__name__)


class _ZarrReader:
    """Array-like over a zarr array for :func:`dask.array.from_array`."""

    ndim = 2

    def __init__(
        self,
        array: Any,
        label: str,
        dtype: np.dtype,
        secrets: tuple[str, ...],
        offset: int = 0,
    ) -> None:
        self.array = array
        self.label = label
        self.shape = tuple(int(n) for n in array.shape)
        self.dtype = dtype
        self.secrets = secrets
        self.offset = offset

    def __getitem__(self, key: tuple[slice, slice]) -> np.ndarray:
        try:
            block = np.asarray(self.array[key])
        except Exception as exc:
            msg = (
                f"cannot read {key_text(key, self.shape)} of {self.label}: "
                f"{describe(exc)}; the store may be corrupt"
            )
            raise_clean(msg, exc, self.secrets)
        return to_working(block, self.dtype, self.offset)


def open_zarr(
    location: str,
    label: str,
    remote: bool,
    variable: str | None,
    box: tuple[int, int],
    chunks: Any,
    options: dict,
    boolean: bool = False,
) -> ImageInput:
    """Open the image in the Zarr store, group or array at ``location``.

    ``label`` names it in messages and the identity (a URL without
    credentials, or an absolute path); ``options`` are the fsspec storage
    options of a ``remote`` location. See :func:`tilesky.io.open_image`.
    """
    with quiet_foreign_objects():
        node = _open_node(location, label, remote, options)
        array, name, group_attrs = _pick_array(node, label, variable)

    what = f"Zarr array {name!r} of {label!r}" if name else f"Zarr array {label!r}"
    if name:
        hint, params = "choose a 2-D array with variable=", ("variable",)
    else:
        hint, params = "store one plane as its own array", ()
    check_shape(array.shape, what, hint, box, params=params)
    target = working_dtype(array.dtype, what, boolean)

    identity, attrs = _identity(array, label, name)
    native = getattr(array, "shards", None) or array.chunks
    edges = aligned_chunks(array.shape, native if chunks is None else chunks, box)
    secrets = secret_values(location, options)
    offset = 0 if boolean else integer_offset(array.dtype, array.shape, _raw(array))
    if offset:
        identity["offset"] = offset
        log.info("%s: offset %d removed from its integer pixels", what, offset)
    reader = _ZarrReader(array, what, target, secrets, offset)
    token = tokenize(label, name, identity["fingerprint"], edges, str(target), offset)
    data = lazy_read(reader, "zarr", token, edges, target)
    log.info("opened %s: shape %s, chunks %s", what, array.shape, edges)
    return ImageInput(data, identity, header_from_attrs(attrs, group_attrs), None)


def _raw(array: Any) -> Any:
    """``read(key)`` of the stored pixels, for :func:`integer_offset`."""

    def read(key: tuple[slice, slice]) -> np.ndarray:
        try:
            return np.asarray(array[key])
        except Exception as exc:
            msg = f"cannot read {key_text(key, array.shape)}: {describe(exc)}"
            raise InputError(msg) from exc

    return read


#: zarr warns once per file that is not part of the hierarchy (a README, a
#: report written beside the arrays): noise for a store that reads fine.
_FOREIGN_OBJECT = r"Object at .* is not recognized as a component of a Zarr"


@contextlib.contextmanager
def quiet_foreign_objects() -> Iterator[None]:
    """Silence zarr's warnings about stray non-Zarr files in a store."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_FOREIGN_OBJECT)
        yield


def _open_node(location: str, label: str, remote: bool, options: dict) -> Any:
    import zarr

    try:
        if remote:
            return zarr.open(store=location, mode="r", storage_options=options or None)
        return zarr.open(store=location, mode="r")
    except Exception as exc:
        msg = (
            f"cannot open input {label!r} as Zarr: {describe(exc)}; is it a Zarr store?"
        )
        raise InputError(msg) from exc


def _pick_array(
    node: Any, label: str, variable: str | None
) -> tuple[Any, str | None, Mapping]:
    """The array to read, its name in the group (None for a lone array)
    and the group's attributes."""
    import zarr

    if not isinstance(node, zarr.Group):
        reject("variable", variable, "single Zarr array", "an array in a Zarr group")
        return node, None, {}
    group_attrs = node.attrs.asdict()
    try:
        members = {name: arr.shape for name, arr in sorted(node.arrays())}
    except Exception as exc:
        msg = (
            f"cannot list the arrays of {label!r}: {describe(exc)}; "
            "the store may be corrupt"
        )
        raise InputError(msg) from exc
    if variable is not None and variable not in members and "/" in variable:
        with contextlib.suppress(Exception):
            if isinstance(node[variable], zarr.Array):
                members[variable] = node[variable].shape
    name = pick_variable(members, group_attrs, variable, f"Zarr group {label!r}")
    try:
        # Consolidated metadata may be stale (written before the array was
        # resized or rewritten): the array's own metadata is authoritative.
        array = zarr.open_array(
            store=node.store,
            path=node[name].path,
            mode="r",
            zarr_format=node.metadata.zarr_format,
        )
    except Exception as exc:
        msg = f"cannot open array {name!r} of {label!r}: {describe(exc)}"
        raise InputError(msg) from exc
    return array, name, group_attrs


def _identity(array: Any, label: str, name: str | None) -> tuple[dict, dict]:
    """The array's identity, fingerprinted by its metadata, and its attributes."""
    try:
        meta = array.metadata.to_dict()
        dims = getattr(array.metadata, "dimension_names", None)
    except Exception:
        meta, dims = {"shape": list(array.shape), "dtype": str(array.dtype)}, None
    attrs = array.attrs.asdict()
    dims = dims or attrs.get("_ARRAY_DIMENSIONS")
    digest = hashlib.sha256(json.dumps(meta, sort_keys=True, default=str).encode())
    identity = make_identity("zarr", label, array.shape, array.dtype, variable=name)
    identity["dims"] = [str(d) for d in dims] if dims else None
    identity["fingerprint"] = {"metadata_sha256": digest.hexdigest()}
    return identity, attrs

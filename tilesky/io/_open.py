"""The entry point: :func:`open_image` picks the reader for any input.

In-memory arrays go to :mod:`tilesky.io._array`; a path or URL is looked
up with fsspec and goes to the Zarr or FITS reader by its type, suffix or
first bytes.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import fsspec

from tilesky.errors import InputError
from tilesky.io._array import ARRAY_TYPES, open_array
from tilesky.io._fits import GZIP_MAGIC, open_fits
from tilesky.io._image import ImageInput, describe, reject
from tilesky.io._tiles import int_pair
from tilesky.io._urls import (
    bounded_options,
    is_url,
    probe_object_store,
    scrub,
    secret_values,
    strip_credentials,
)
from tilesky.io._zarr import open_zarr

__all__ = ["open_image"]

_FITS_SUFFIXES = (".fits", ".fit", ".fts", ".fz", ".fits.gz", ".fit.gz", ".fts.gz")


def open_image(
    source: Any,
    *,
    variable: str | None = None,
    hdu: int | str | None = None,
    chunks: int | tuple[int, int] | None = None,
    box_size: int | tuple[int, int] = 1,
    storage_options: dict | None = None,
    boolean: bool = False,
    dq_bits: int | None = None,
) -> ImageInput:
    """Open an image as a lazily read, box-aligned 2-D dask array.

    Parameters
    ----------
    source : array, DataArray, Dataset, str or os.PathLike
        A numpy (or masked) array, a dask array, an xarray DataArray or
        Dataset, or the path or fsspec URL of a Zarr store/array or FITS file.
    variable : str, optional
        Array to open in a Zarr group or Dataset. By default the one named by
        the ``tilesky_default_variable`` attribute, else ``scene``, ``image``,
        ``data`` or ``sci``, else the only 2-D array.
    hdu : int or str, optional
        FITS HDU index or EXTNAME. By default the first HDU with a 2-D image.
    chunks : int or (int, int), optional
        Chunk edge(s), rounded up to multiples of ``box_size``. By default the
        input's own chunks (dask, Zarr) rounded up, else :data:`DEFAULT_CHUNK`.
    box_size : int or (int, int)
        The mesh box ``(box_y, box_x)`` chunks must be multiples of.
    storage_options : dict, optional
        Passed to fsspec for URLs (e.g. ``endpoint_url``, ``key``, ``secret``
        for s3; s3fs also reads ``AWS_ENDPOINT_URL`` and the usual AWS
        variables itself). Never recorded in the identity.
    boolean : bool
        Accept boolean data and keep it boolean (for a mask opened like an
        image); by default a boolean array is refused as an image.
    dq_bits : int, optional
        For a FITS survey product (a ``SCI`` HDU with a ``DQ`` one): the DQ
        bits that make a pixel unusable. By default JWST's ``DO_NOT_USE``
        (1) for ``TELESCOP = 'JWST'``, else any non-zero DQ value; see
        :mod:`tilesky.io._products`.

    Returns
    -------
    ImageInput
        The lazy image and its identity, header and coordinates.

    Raises
    ------
    InputError
        If the input cannot be opened or is not a usable 2-D numeric image.

    Notes
    -----
    Integers and float16/float32 become float32; float64 stays float64. FITS
    data are scaled exactly as astropy scales them (BSCALE/BZERO, unsigned
    16/32/64-bit via BZERO, integer BLANK pixels to NaN) and converted to
    native byte order per chunk. Each FITS task opens the file itself (so the
    graph pickles for distributed workers) and reads its section through
    astropy's ``section``: for a tile-compressed HDU only the tiles under the
    chunk; for an uncompressed image its rows, in bands of whole rows of at
    most ~16 MiB (memory-mapped for a local file). A gzip stream cannot
    seek, so every task decompresses it (without keeping it) up to the end
    of the HDU, which astropy's open does, and again up to its rows: big
    gzip files are slow, prefer ``.fits.fz`` or Zarr. Pixel values are never
    computed here (all-NaN images are found later by the pipeline).

    Examples
    --------
    >>> import numpy as np
    >>> image = open_image(np.zeros((300, 400), dtype=">f4"), chunks=128, box_size=50)
    >>> image.data.chunksize, image.data.dtype, image.identity["kind"]
    ((150, 150), dtype('float32'), 'numpy')
    """
    box = int_pair(box_size, "box_size")
    if chunks is not None:
        int_pair(chunks, "chunks", whole=True)
    if storage_options is not None and not isinstance(storage_options, Mapping):
        msg = f"storage_options must be a dict, got {type(storage_options).__name__}"
        raise InputError(msg)
    options = dict(storage_options or {})

    if isinstance(source, ARRAY_TYPES):
        return open_array(source, variable, hdu, box, chunks, boolean)
    if isinstance(source, (str, os.PathLike)):
        text = os.fspath(source)
        options = bounded_options(text, options)
        probe_object_store(text, options)
        try:
            return _open_location(
                text, variable, hdu, box, chunks, options, boolean, dq_bits
            )
        except InputError as exc:
            clean = scrub(str(exc), secret_values(text, options))
            if clean != str(exc):
                # The cause's own text holds the credential: do not chain it.
                raise InputError(clean, params=exc.params) from None
            raise
    msg = (
        f"cannot use an input of type {type(source).__name__}; pass a numpy, dask or "
        "xarray array, or the path or URL of a Zarr store or FITS file"
    )
    raise InputError(msg)


def _open_location(
    text: str,
    variable: str | None,
    hdu: int | str | None,
    box: tuple[int, int],
    chunks: Any,
    options: dict,
    boolean: bool = False,
    dq_bits: int | None = None,
) -> ImageInput:
    from fsspec.implementations.local import LocalFileSystem

    remote = is_url(text)
    label = (
        strip_credentials(text) if remote else os.path.abspath(os.path.expanduser(text))
    )
    try:
        if remote:
            fs, path = fsspec.core.url_to_fs(text, **options)
        else:
            fs, path = fsspec.filesystem("file"), label
    except Exception as exc:
        msg = (
            f"cannot open input {label!r}: {describe(exc)}; "
            "check the URL and storage options"
        )
        raise InputError(msg) from exc
    if remote and isinstance(fs, LocalFileSystem):
        # file:// URLs are local files: memory-map them like plain paths.
        remote, label = False, path
    try:
        info = fs.info(path)
    except FileNotFoundError as exc:
        # Some filesystems (http) report an unreachable host as "not found".
        cause = exc.__cause__
        if isinstance(cause, OSError) and not isinstance(cause, FileNotFoundError):
            msg = f"cannot open input {label!r}: {describe(cause)}"
            raise InputError(msg) from exc
        raise InputError(_not_found(label, fs, path)) from exc
    except Exception as exc:
        msg = f"cannot open input {label!r}: {describe(exc)}"
        raise InputError(msg) from exc

    is_dir = info.get("type") == "directory"
    lower = path.rstrip("/").lower()
    if is_dir or lower.endswith(".zarr"):
        kind = "zarr"
    elif lower.endswith(_FITS_SUFFIXES):
        kind = "fits"
    else:
        kind = _sniff(fs, path, label)
    location = text if remote else label
    if kind == "zarr":
        reject("hdu", hdu, "Zarr", "a FITS HDU")
        return open_zarr(
            location, label, remote, variable, box, chunks, options, boolean
        )
    reject("variable", variable, "FITS", "an array in a Zarr group or Dataset")
    return open_fits(
        location, label, remote, fs, path, info, hdu, box, chunks, options, dq_bits
    )


def _not_found(label: str, fs: Any, path: str) -> str:
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    if protocol in ("s3", "s3a", "gs", "gcs", "az", "abfs", "adl"):
        bucket = path.split("/", 1)[0]
        try:
            bucket_ok = fs.exists(bucket)
        except Exception:
            bucket_ok = False
        if not bucket_ok:
            return (
                f"cannot open input {label!r}: bucket {bucket!r} does not exist or "
                "is not accessible; check the bucket name, endpoint and credentials"
            )
    return f"cannot open input {label!r}: no such file or directory"


def _sniff(fs: Any, path: str, label: str) -> str:
    try:
        with fs.open(path, "rb") as f:
            head = f.read(9)
    except Exception as exc:
        msg = f"cannot open input {label!r}: {describe(exc)}"
        raise InputError(msg) from exc
    if head.startswith(b"SIMPLE") or head.startswith(GZIP_MAGIC):
        return "fits"
    msg = (
        f"cannot open input {label!r}: it is neither a FITS file nor a Zarr store; "
        "pass a .fits/.fits.gz/.fits.fz file or a Zarr directory"
    )
    raise InputError(msg)

"""Open the images tilesky works on, lazily and with box-aligned chunks.

An input is a numpy array, a dask array, an xarray DataArray (or Dataset), a
Zarr store (v2 or v3; a local path or an fsspec URL such as ``s3://``,
``memory://`` or ``file://``) or a FITS file (local or URL; uncompressed,
``.fits.gz`` or tile-compressed ``.fits.fz``). :func:`open_image` turns any of
them into an :class:`ImageInput`: a 2-D dask array whose chunks are multiples
of the mesh box, the input's identity (for the run's store), its FITS header
and, for a DataArray, its coordinates.

Nothing here computes pixel values: Zarr and FITS inputs become graphs with
one reading task per chunk, each reading only its own section of the file.
Every problem with an input raises :class:`InputError` with one line that
names the input, the problem and the fix.

Modules: :mod:`~tilesky.io._open` (:func:`open_image`, choosing a reader),
:mod:`~tilesky.io._array` (numpy, dask and xarray inputs),
:mod:`~tilesky.io._zarr`, :mod:`~tilesky.io._fits`, :mod:`~tilesky.io._image`
(:class:`ImageInput` and the checks every reader shares),
:mod:`~tilesky.io._tiles` (box-aligned chunks, a run's tiles) and
:mod:`~tilesky.io._urls` (URLs, credentials, storage options).
"""

from __future__ import annotations

from tilesky.errors import InputError
from tilesky.io._image import ImageInput
from tilesky.io._open import open_image
from tilesky.io._tiles import DEFAULT_CHUNK, RUN_TILE, aligned_chunks, run_tiles
from tilesky.io._urls import is_url, parse_storage_options, strip_credentials

__all__ = [
    "DEFAULT_CHUNK",
    "RUN_TILE",
    "ImageInput",
    "InputError",
    "aligned_chunks",
    "is_url",
    "open_image",
    "parse_storage_options",
    "run_tiles",
    "strip_credentials",
]

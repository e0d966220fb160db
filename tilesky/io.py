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
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import logging
import math
import os
import re
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import dask.array as da
import fsspec
import numpy as np
import xarray as xr
from dask.base import tokenize

from tilesky.errors import InputError

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

log = logging.getLogger(__name__)

#: Chunk edge used when neither the caller nor the input chooses one.
DEFAULT_CHUNK = 1024

# Names tried, in order, for the image in a Zarr group or Dataset that has no
# ``tilesky_default_variable`` attribute.
_DEFAULT_VARIABLES = ("scene", "image", "data", "sci")
# Attributes that may hold a FITS header string (or a dict of cards) on a
# Zarr array/group or a DataArray/Dataset.
_HEADER_ATTRS = ("fits_header", "header", "wcs_header")
_FITS_SUFFIXES = (".fits", ".fit", ".fts", ".fz", ".fits.gz", ".fit.gz", ".fts.gz")
_GZIP_MAGIC = b"\x1f\x8b"
# Uncompressed FITS reads fetch whole rows, this many bytes at a time at most,
# so a task's memory stays near its chunk even for wide images.
_BAND_BYTES = 16 * 2**20
# Read-ahead block for remote FITS files: large enough to cover a header in
# one request, small enough not to fetch much beyond a band.
_REMOTE_BLOCK = 2 * 2**20

_URL_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://")
# user:password@ (the password may hold "/") or user@ right after the scheme.
_USERINFO_RE = re.compile(
    r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)(?:[^@/?#]*:[^@]*@|[^@/?#:]*@)"
)
_SECRET_QUERY_RE = re.compile(
    r"(?i)^(x-amz-|x-goog-|x-ms-)|sig|token|secret|passw|pwd|key|credential|auth|session|policy|^(se|sp|sv|sr|st|spr)$"
)
_SECRET_KEY_RE = re.compile(r"(?i)key|secret|token|passw|credential|auth|sas|sig")
_INT_RE = re.compile(r"^[+-]?\d+$")
_FLOAT_RE = re.compile(r"^[+-]?(\d+\.\d*|\.\d+|\d+)([eE][+-]?\d+)?$")


@dataclass(frozen=True, eq=False)
class ImageInput:
    """An opened input image.

    Attributes
    ----------
    data : dask.array.Array
        The image, 2-D ``(ny, nx)``, native-endian float32 (float64 when the
        input's values are float64), chunked regularly in multiples of the box
        size (the last chunk of each axis may be smaller).
    identity : dict
        JSON-serialisable description of the input: ``kind`` (``"numpy"``,
        ``"dask"``, ``"xarray"``, ``"zarr"`` or ``"fits"``), ``source`` (path or
        URL without credentials), ``variable``, ``hdu``, ``shape``, ``dtype`` (as
        stored) and ``fingerprint`` (cheap: metadata hashes, size, mtime, ETag).
        Never holds storage options.
    header : str or None
        The input's FITS header as a string (``Header.tostring()``), or a header
        found in a Zarr/xarray attribute (``fits_header``, ``header`` or
        ``wcs_header``), else None.
    coords : dict or None
        For a DataArray: ``dims``, ``name``, ``coords`` (name to
        ``xarray.Variable``) and ``attrs``, enough to rebuild a DataArray
        around a result. None otherwise.
    """

    data: da.Array
    identity: dict
    header: str | None
    coords: dict | None


# --------------------------------------------------------------------------
# small public helpers


def is_url(path: Any) -> bool:
    """Return True if ``path`` is a URL (``scheme://...``, fsspec chains too).

    Examples
    --------
    >>> is_url("s3://bucket/mosaic.zarr"), is_url("/data/image.fits")
    (True, False)
    """
    if isinstance(path, bytes):
        path = path.decode(errors="replace")
    if not isinstance(path, str):
        return False
    if _URL_RE.match(path):
        return True
    return "::" in path and any(_URL_RE.match(part) for part in path.split("::"))


def strip_credentials(url: str) -> str:
    """Remove user, password and secret query parameters from a URL.

    Examples
    --------
    >>> strip_credentials("s3://AKIA:se/cret@bucket/x.zarr")
    's3://bucket/x.zarr'
    >>> strip_credentials("https://host/x.fits?X-Amz-Signature=abc&version=2")
    'https://host/x.fits?version=2'
    """
    if "::" in url:
        return "::".join(strip_credentials(part) for part in url.split("::"))
    if not _URL_RE.match(url):
        return url
    url = _USERINFO_RE.sub(r"\g<scheme>", url)
    parts = urlsplit(url)
    if not parts.query:
        return url
    kept = [
        (k, v)
        for k, v in parse_qsl(parts.query, keep_blank_values=True)
        if not _SECRET_QUERY_RE.search(k)
    ]
    return urlunsplit(parts._replace(query=urlencode(kept)))


def parse_storage_options(pairs: list[str] | tuple[str, ...] | None) -> dict:
    """Turn ``key=value`` strings into fsspec storage options.

    Values that look like a bool (``true``/``false``, any case), an int or a
    float become one; dotted keys make nested dicts
    (``client_kwargs.region_name=eu-west-1``).

    Examples
    --------
    >>> parse_storage_options(["anon=false", "client_kwargs.region_name=eu-west-1"])
    {'anon': False, 'client_kwargs': {'region_name': 'eu-west-1'}}
    """
    options: dict[str, Any] = {}
    for pair in pairs or ():
        key, sep, raw = str(pair).partition("=")
        key = key.strip()
        if not sep or not key or any(not part for part in key.split(".")):
            msg = (
                f"storage option {pair!r} is not key=value; "
                "write it like endpoint_url=http://host:9000"
            )
            raise InputError(msg)
        node = options
        *parents, leaf = key.split(".")
        for name in parents:
            child = node.get(name)
            if not isinstance(child, dict):
                child = node[name] = {}
            node = child
        node[leaf] = _parse_scalar(raw.strip())
    return options


def _parse_scalar(text: str) -> Any:
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    if _INT_RE.match(text):
        return int(text)
    if _FLOAT_RE.match(text):
        return float(text)
    return text


def aligned_chunks(
    shape: tuple[int, ...],
    chunks: int | tuple[int, int] | None,
    box_size: int | tuple[int, int],
) -> tuple[int, int]:
    """Chunk edges rounded up to multiples of the box, for a 2-D ``shape``.

    Parameters
    ----------
    shape : tuple of int
        Image shape ``(ny, nx)``.
    chunks : int, (int, int) or None
        Requested chunk edge(s); None means :data:`DEFAULT_CHUNK`; -1 means a
        whole axis.
    box_size : int or (int, int)
        Mesh box ``(box_y, box_x)``.

    Returns
    -------
    tuple of int
        ``(chunk_y, chunk_x)``, each a multiple of the box edge, and no larger
        than the axis rounded up to a box multiple (one chunk then covers it).

    Examples
    --------
    >>> aligned_chunks((500, 700), 100, 6)
    (102, 102)
    >>> aligned_chunks((500, 700), (-1, 64), (10, 50))
    (500, 100)
    """
    box = _pair(box_size, "box_size")
    want = _pair(DEFAULT_CHUNK if chunks is None else chunks, "chunks", whole=True)
    if len(shape) != 2:
        msg = f"aligned_chunks needs a 2-D shape (ny, nx), got {tuple(shape)}"
        raise InputError(msg)
    edges = []
    for n, c, b in zip(shape, want, box, strict=True):
        c = n if c == -1 else c
        edges.append(max(b, min(_round_up(c, b), _round_up(n, b))))
    return (edges[0], edges[1])


#: Tile edge a run aims for when the caller gives none. The default
#: pipeline's widest halo is ~110 px (the smooth fit's window): a 1024-px tile
#: computes (1 + 2 * 110 / 1024)**2 = 1.47 times its own pixels, a 2048-px
#: tile 1.23 times, and has a quarter of the tasks to schedule.
RUN_TILE = 2048


def run_tiles(
    shape: tuple[int, int],
    chunks: tuple[int, int],
    box_size: int | tuple[int, int],
    *,
    threads: int = 1,
) -> tuple[int, int]:
    """The tiles a run uses when the caller chose none.

    Whole multiples of the input's (box-aligned) ``chunks``, about
    :data:`RUN_TILE` pixels a side, or of about that area when the input's
    chunks are long strips. An image with fewer such tiles than
    ``threads`` is cut into one row band per thread instead (a band has a
    halo on two sides only), as long as bands stay at least a quarter of
    :data:`RUN_TILE` high; otherwise the input's chunks are the tiles.

    Examples
    --------
    >>> run_tiles((6000, 6000), (1020, 1020), 30, threads=2)
    (2040, 2040)
    >>> run_tiles((2000, 2000), (1020, 1020), 30, threads=2)
    (1020, 2010)
    >>> run_tiles((2000, 2000), (1020, 1020), 30, threads=8)
    (1020, 1020)
    """
    ny, nx = (int(n) for n in shape)
    cy, cx = (int(c) for c in chunks)
    tx = min(max(1, round(RUN_TILE / cx)) * cx, nx)
    # Rows to make the area about RUN_TILE**2: a strip of chunks 16384 wide
    # gets ~256 rows, not 2048.
    ty = min(max(1, round(RUN_TILE * RUN_TILE / (tx * cy))) * cy, ny)
    tiles = aligned_chunks((ny, nx), (ty, tx), box_size)
    if -(-ny // tiles[0]) * -(-nx // tiles[1]) >= threads:
        return tiles
    band = -(-ny // max(1, threads))
    if band >= RUN_TILE // 4:
        return aligned_chunks((ny, nx), (band, nx), box_size)
    return aligned_chunks((ny, nx), tuple(chunks), box_size)


def _round_up(n: int, multiple: int) -> int:
    return -(-int(n) // multiple) * multiple


def _pair(value: Any, name: str, *, whole: bool = False) -> tuple[int, int]:
    items = (value, value) if np.ndim(value) == 0 else tuple(value)
    fix = "a positive int or a (ny, nx) pair of positive ints"
    if whole:
        fix += " (-1 for a whole axis)"
    ok = len(items) == 2 and all(
        isinstance(v, (int, np.integer))
        and not isinstance(v, (bool, np.bool_))
        and (v > 0 or (whole and v == -1))
        for v in items
    )
    if not ok:
        msg = f"{name}={value!r} is not valid; use {fix}"
        raise InputError(msg, params=name)
    return (int(items[0]), int(items[1]))


# --------------------------------------------------------------------------
# validation shared by every kind of input


def _describe(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    if len(text) > 300:
        text = text[:297] + "..."
    name = type(exc).__name__
    return f"{name}: {text}" if text else name


def _secret_values(url: str, options: Mapping) -> tuple[str, ...]:
    """Strings that must never appear in a message: credentials in the
    storage options and in the URL's user info or signed query."""
    found: set[str] = set()

    def walk(node: Any, sensitive: bool) -> None:
        if isinstance(node, Mapping):
            for k, v in node.items():
                walk(v, sensitive or bool(_SECRET_KEY_RE.search(str(k))))
        elif isinstance(node, str) and sensitive and len(node) >= 4:
            found.add(node)

    walk(options, False)
    for part in str(url).split("::"):
        m = _USERINFO_RE.match(part)
        if m:
            userinfo = part[len(m.group("scheme")) : m.end() - 1]
            found.update(p for p in userinfo.split(":", 1) if len(p) >= 4)
        query = urlsplit(part).query if _URL_RE.match(part) else ""
        for k, v in parse_qsl(query, keep_blank_values=True):
            if _SECRET_QUERY_RE.search(k) and len(v) >= 4:
                found.add(v)
    return tuple(sorted(found, key=len, reverse=True))


def _scrub(text: str, secrets: tuple[str, ...]) -> str:
    for secret in secrets:
        text = text.replace(secret, "***")
    return text


def _raise_clean(msg: str, exc: BaseException, secrets: tuple[str, ...]) -> None:
    clean = _scrub(msg, secrets)
    if clean != msg:
        # The cause's own text holds the credential: do not chain it.
        raise InputError(clean) from None
    raise InputError(msg) from exc


def _working_dtype(dtype: Any, what: str, boolean: bool = False) -> np.dtype:
    dtype = np.dtype(dtype)
    if boolean and dtype.kind == "b":
        return dtype
    if dtype.kind == "c":
        msg = (
            f"{what} has complex dtype {dtype}; tilesky needs real pixel values, "
            "pass e.g. the real part or np.abs(...) of it"
        )
        raise InputError(msg)
    if dtype.kind == "b":
        msg = (
            f"{what} has boolean dtype; tilesky needs numeric pixel values "
            "(a mask is not an image)"
        )
        raise InputError(msg)
    if dtype.kind not in "iuf":
        msg = (
            f"{what} has non-numeric dtype {dtype}; "
            "pass an image of integer or floating-point pixels"
        )
        raise InputError(msg)
    if dtype.kind == "f" and dtype.itemsize >= 8:
        return np.dtype(np.float64)
    return np.dtype(np.float32)


def _check_shape(
    shape: tuple,
    what: str,
    hint: str,
    box: tuple[int, int],
    *,
    params: tuple[str, ...] = (),
) -> None:
    shape = tuple(int(n) for n in shape)
    if len(shape) != 2:
        msg = (
            f"{what} has shape {shape} ({len(shape)}-D); tilesky needs a 2-D "
            f"image (ny, nx): {hint}"
        )
        raise InputError(msg, params=params)
    if min(shape) == 0:
        msg = f"{what} has shape {shape}: it is empty; pass an image with pixels"
        raise InputError(msg)
    if shape[0] < box[0] or shape[1] < box[1]:
        msg = (
            f"{what} has shape {shape}, smaller than box_size {box}; "
            "use a box_size no larger than the image"
        )
        raise InputError(msg)


def _header_from_attrs(*attr_maps: Mapping) -> str | None:
    for attrs in attr_maps:
        for name in _HEADER_ATTRS:
            value = attrs.get(name)
            if isinstance(value, str) and value.strip():
                return value
            if isinstance(value, Mapping) and value:
                from astropy.io import fits

                return fits.Header(list(value.items())).tostring()
    return None


def _pick_variable(
    shapes: Mapping[str, tuple], attrs: Mapping, variable: str | None, label: str
) -> str:
    available = ", ".join(f"{n} {tuple(s)}" for n, s in shapes.items()) or "none"
    if variable is not None:
        if variable not in shapes:
            msg = (
                f"variable={variable!r} not found in {label}; "
                f"available arrays: {available}"
            )
            raise InputError(msg, params="variable")
        return variable
    if not shapes:
        msg = f"{label} holds no arrays; point at a store or group that holds the image"
        raise InputError(msg)
    default = attrs.get("tilesky_default_variable")
    if default is not None:
        if default in shapes:
            return default
        msg = (
            f"{label} names {default!r} in its tilesky_default_variable attribute but "
            f"holds no such array; choose one with variable= (available: {available})"
        )
        raise InputError(msg, params="variable")
    for name in _DEFAULT_VARIABLES:
        if name in shapes:
            return name
    two_d = [n for n, s in shapes.items() if len(s) == 2]
    if len(two_d) == 1:
        return two_d[0]
    names = "/".join(_DEFAULT_VARIABLES)
    msg = (
        f"{label} holds several arrays and none is named {names}; "
        f"choose one with variable= (available: {available})"
    )
    raise InputError(msg, params="variable")


def _reject(option: str, value: Any, kind: str, applies: str) -> None:
    if value is not None:
        msg = (
            f"{option}={value!r} does not apply to a {kind} input; "
            f"{option}= selects {applies}"
        )
        raise InputError(msg, params=option)


# --------------------------------------------------------------------------
# the entry point


def open_image(
    source: Any,
    *,
    variable: str | None = None,
    hdu: int | str | None = None,
    chunks: int | tuple[int, int] | None = None,
    box_size: int | tuple[int, int] = 1,
    storage_options: dict | None = None,
    boolean: bool = False,
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

    Returns
    -------
    ImageInput

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
    box = _pair(box_size, "box_size")
    if chunks is not None:
        _pair(chunks, "chunks", whole=True)
    if storage_options is not None and not isinstance(storage_options, Mapping):
        msg = f"storage_options must be a dict, got {type(storage_options).__name__}"
        raise InputError(msg)
    options = dict(storage_options or {})

    if isinstance(source, xr.Dataset):
        _reject("hdu", hdu, "Dataset", "a FITS HDU")
        shapes = {str(k): v.shape for k, v in source.data_vars.items()}
        name = _pick_variable(shapes, source.attrs, variable, "the Dataset")
        return _open_dataarray(source[name], box, chunks, source.attrs, boolean)
    if isinstance(source, xr.DataArray):
        _reject(
            "variable", variable, "DataArray", "an array in a Zarr group or Dataset"
        )
        _reject("hdu", hdu, "DataArray", "a FITS HDU")
        return _open_dataarray(source, box, chunks, {}, boolean)
    if isinstance(source, da.Array):
        _reject(
            "variable", variable, "dask array", "an array in a Zarr group or Dataset"
        )
        _reject("hdu", hdu, "dask array", "a FITS HDU")
        identity = _identity(
            "dask", f"<dask array {source.name}>", source.shape, source.dtype
        )
        identity["fingerprint"] = {"dask_name": source.name}
        data = _align_dask(
            source,
            "the dask array",
            box,
            chunks,
            "select a plane, e.g. cube[0]",
            boolean,
        )
        return ImageInput(data, identity, None, None)
    if isinstance(source, np.ndarray):
        _reject(
            "variable", variable, "numpy array", "an array in a Zarr group or Dataset"
        )
        _reject("hdu", hdu, "numpy array", "a FITS HDU")
        return _open_numpy(source, box, chunks, boolean)
    if isinstance(source, (str, os.PathLike)):
        text = os.fspath(source)
        try:
            return _open_location(text, variable, hdu, box, chunks, options, boolean)
        except InputError as exc:
            clean = _scrub(str(exc), _secret_values(text, options))
            if clean != str(exc):
                # The cause's own text holds the credential: do not chain it.
                raise InputError(clean, params=exc.params) from None
            raise
    msg = (
        f"cannot use an input of type {type(source).__name__}; pass a numpy, dask or "
        "xarray array, or the path or URL of a Zarr store or FITS file"
    )
    raise InputError(msg)


def _identity(kind: str, source: str, shape: tuple, dtype: Any, **extra: Any) -> dict:
    identity = {
        "kind": kind,
        "source": source,
        "variable": None,
        "hdu": None,
        "shape": [int(n) for n in shape],
        "dtype": str(np.dtype(dtype)),
    }
    identity.update(extra)
    return identity


def _align_dask(
    arr: da.Array,
    what: str,
    box: tuple[int, int],
    chunks: Any,
    hint: str,
    boolean: bool = False,
) -> da.Array:
    _check_shape(arr.shape, what, hint, box)
    target = _working_dtype(arr.dtype, what, boolean)
    native = tuple(c[0] for c in arr.chunks)
    edges = aligned_chunks(arr.shape, native if chunks is None else chunks, box)
    if arr.dtype != target:
        # np.dtype(">f4") != np.dtype("<f4"), so this also fixes byte order.
        arr = arr.astype(target)
    log.debug("%s: chunks %s -> %s (box %s)", what, arr.chunksize, edges, box)
    return arr.rechunk(edges)


def _open_numpy(
    arr: np.ndarray, box: tuple[int, int], chunks: Any, boolean: bool = False
) -> ImageInput:
    what = "the numpy array"
    hint = "select a plane, e.g. cube[0]"
    _check_shape(arr.shape, what, hint, box)
    target = _working_dtype(arr.dtype, what, boolean)
    identity = _identity("numpy", "<numpy array>", arr.shape, arr.dtype)
    identity["fingerprint"] = {"token": tokenize(arr)}
    if isinstance(arr, np.ma.MaskedArray):
        # Masked pixels are unknown sky: NaN is how tilesky spells that.
        arr = np.ma.filled(arr.astype(target), np.nan)
    edges = aligned_chunks(arr.shape, chunks, box)
    name = f"tilesky-read-numpy-{identity['fingerprint']['token']}-{tokenize(edges)}"
    data = da.from_array(np.asarray(arr), chunks=edges, name=name)
    if data.dtype != target:
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
    identity = _identity(
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
    header = _header_from_attrs(arr.attrs, parent_attrs)
    return ImageInput(data, identity, header, coords)


# --------------------------------------------------------------------------
# paths and URLs


def _open_location(
    text: str,
    variable: str | None,
    hdu: int | str | None,
    box: tuple[int, int],
    chunks: Any,
    options: dict,
    boolean: bool = False,
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
            f"cannot open input {label!r}: {_describe(exc)}; "
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
            msg = f"cannot open input {label!r}: {_describe(cause)}"
            raise InputError(msg) from exc
        raise InputError(_not_found(label, fs, path)) from exc
    except Exception as exc:
        msg = f"cannot open input {label!r}: {_describe(exc)}"
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
        _reject("hdu", hdu, "Zarr", "a FITS HDU")
        return _open_zarr(
            location, label, remote, variable, box, chunks, options, boolean
        )
    _reject("variable", variable, "FITS", "an array in a Zarr group or Dataset")
    return _open_fits(
        location, label, remote, fs, path, info, hdu, box, chunks, options
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
        msg = f"cannot open input {label!r}: {_describe(exc)}"
        raise InputError(msg) from exc
    if head.startswith(b"SIMPLE") or head.startswith(_GZIP_MAGIC):
        return "fits"
    msg = (
        f"cannot open input {label!r}: it is neither a FITS file nor a Zarr store; "
        "pass a .fits/.fits.gz/.fits.fz file or a Zarr directory"
    )
    raise InputError(msg)


# --------------------------------------------------------------------------
# Zarr


def _lazy_read(reader, kind: str, token: str, edges, target) -> da.Array:
    """One task per chunk, each asking ``reader`` for its own section."""
    return da.from_array(
        reader,
        chunks=edges,
        name=f"tilesky-read-{kind}-{token}",
        lock=False,
        fancy=False,
        meta=np.empty((0, 0), dtype=target),
        inline_array=True,
    )


class _ZarrReader:
    """Array-like over a zarr array for :func:`dask.array.from_array`."""

    ndim = 2

    def __init__(
        self, array: Any, label: str, dtype: np.dtype, secrets: tuple[str, ...]
    ) -> None:
        self.array = array
        self.label = label
        self.shape = tuple(int(n) for n in array.shape)
        self.dtype = dtype
        self.secrets = secrets

    def __getitem__(self, key: tuple[slice, slice]) -> np.ndarray:
        try:
            block = np.asarray(self.array[key])
        except Exception as exc:
            msg = (
                f"cannot read {_key_text(key, self.shape)} of {self.label}: "
                f"{_describe(exc)}; the store may be corrupt"
            )
            _raise_clean(msg, exc, self.secrets)
        return block.astype(self.dtype, copy=False)


def _key_text(key: tuple[slice, ...], shape: tuple[int, ...]) -> str:
    (r0, r1, _), (c0, c1, _) = (k.indices(n) for k, n in zip(key, shape, strict=True))
    return f"rows {r0}:{r1}, columns {c0}:{c1}"


def _open_zarr(
    location: str,
    label: str,
    remote: bool,
    variable: str | None,
    box: tuple[int, int],
    chunks: Any,
    options: dict,
    boolean: bool = False,
) -> ImageInput:
    import zarr

    try:
        if remote:
            node = zarr.open(store=location, mode="r", storage_options=options or None)
        else:
            node = zarr.open(store=location, mode="r")
    except Exception as exc:
        msg = (
            f"cannot open input {label!r} as Zarr: {_describe(exc)}; "
            "is it a Zarr store?"
        )
        raise InputError(msg) from exc

    group_attrs: Mapping = {}
    if isinstance(node, zarr.Group):
        group_attrs = node.attrs.asdict()
        try:
            members = {name: arr.shape for name, arr in sorted(node.arrays())}
        except Exception as exc:
            msg = (
                f"cannot list the arrays of {label!r}: {_describe(exc)}; "
                "the store may be corrupt"
            )
            raise InputError(msg) from exc
        if variable is not None and variable not in members and "/" in variable:
            with contextlib.suppress(Exception):
                if isinstance(node[variable], zarr.Array):
                    members[variable] = node[variable].shape
        name = _pick_variable(members, group_attrs, variable, f"Zarr group {label!r}")
        try:
            array = node[name]
        except Exception as exc:
            msg = f"cannot open array {name!r} of {label!r}: {_describe(exc)}"
            raise InputError(msg) from exc
    else:
        _reject("variable", variable, "single Zarr array", "an array in a Zarr group")
        array, name = node, None

    what = f"Zarr array {name!r} of {label!r}" if name else f"Zarr array {label!r}"
    if name:
        hint, params = "choose a 2-D array with variable=", ("variable",)
    else:
        hint, params = "store one plane as its own array", ()
    _check_shape(array.shape, what, hint, box, params=params)
    target = _working_dtype(array.dtype, what, boolean)

    try:
        meta = array.metadata.to_dict()
        dims = getattr(array.metadata, "dimension_names", None)
    except Exception:
        meta, dims = {"shape": list(array.shape), "dtype": str(array.dtype)}, None
    attrs = array.attrs.asdict()
    dims = dims or attrs.get("_ARRAY_DIMENSIONS")
    digest = hashlib.sha256(json.dumps(meta, sort_keys=True, default=str).encode())
    identity = _identity("zarr", label, array.shape, array.dtype, variable=name)
    identity["dims"] = [str(d) for d in dims] if dims else None
    identity["fingerprint"] = {"metadata_sha256": digest.hexdigest()}

    native = getattr(array, "shards", None) or array.chunks
    edges = aligned_chunks(array.shape, native if chunks is None else chunks, box)
    reader = _ZarrReader(array, what, target, _secret_values(location, options))
    token = tokenize(label, name, identity["fingerprint"], edges, str(target))
    data = _lazy_read(reader, "zarr", token, edges, target)
    log.info("opened %s: shape %s, chunks %s", what, array.shape, edges)
    return ImageInput(data, identity, _header_from_attrs(attrs, group_attrs), None)


# --------------------------------------------------------------------------
# FITS


@contextlib.contextmanager
def _fits_file(location: str, remote: bool, options: dict) -> Iterator[Any]:
    """Open a FITS file (path or URL, maybe gzipped) as an HDUList."""
    from astropy.io import fits

    if not remote:
        # astropy memory-maps plain files and streams gzip ones itself.
        with fits.open(location, lazy_load_hdus=True) as hdul:
            yield hdul
        return
    fs, path = fsspec.core.url_to_fs(location, **options)
    kwargs = {}
    if not {"block_size", "default_block_size"} & options.keys():
        kwargs["block_size"] = _REMOTE_BLOCK
    if not {"cache_type", "default_cache_type"} & options.keys():
        kwargs["cache_type"] = "readahead"
    with contextlib.ExitStack() as stack:
        f = stack.enter_context(fs.open(path, "rb", **kwargs))
        magic = f.read(2)
        f.seek(0)
        if magic == _GZIP_MAGIC:
            f = stack.enter_context(gzip.GzipFile(fileobj=f, mode="rb"))
        yield stack.enter_context(fits.open(f, lazy_load_hdus=True))


class _FitsReader:
    """Array-like over one FITS image HDU; every read opens the file anew."""

    ndim = 2

    def __init__(
        self,
        location: str,
        remote: bool,
        options: dict,
        index: int,
        shape: tuple[int, int],
        dtype: np.dtype,
        banded: bool,
        row_bytes: int,
        label: str,
        secrets: tuple[str, ...],
    ) -> None:
        self.location = location
        self.remote = remote
        self.options = options
        self.index = index
        self.shape = shape
        self.dtype = dtype
        self.banded = banded
        self.row_bytes = row_bytes
        self.label = label
        self.secrets = secrets

    def __getitem__(self, key: tuple[slice, slice]) -> np.ndarray:
        rows, cols = (
            slice(*k.indices(n)) for k, n in zip(key, self.shape, strict=True)
        )
        try:
            with _fits_file(self.location, self.remote, self.options) as hdul:
                section = hdul[self.index].section
                if not self.banded:
                    # Tile-compressed: astropy decompresses only the tiles
                    # under the key. np.array copies to native order.
                    return np.array(section[rows, cols], dtype=self.dtype)
                # astropy seeks back to where the file stood after each read;
                # opening left it past the HDU's data, so on a gzip stream
                # every read would end by re-decompressing up to there. From
                # offset 0 that rewind is free.
                hdul.fileinfo(self.index)["file"].seek(0)
                return self._read_bands(section, rows, cols)
        except InputError:
            raise
        except Exception as exc:
            msg = (
                f"cannot read {_key_text((rows, cols), self.shape)} of "
                f"{self.label} (HDU {self.index}): {_describe(exc)}; "
                "the file may be truncated or corrupt"
            )
            _raise_clean(msg, exc, self.secrets)

    def _read_bands(self, section: Any, rows: slice, cols: slice) -> np.ndarray:
        # Whole rows are one contiguous read (a view for a memory-mapped,
        # unscaled file); astropy reads a partial row span row by row, a
        # Python call per row, and on a gzip stream each of those rewinds.
        # The assignment copies into native order, so no view of a memmap
        # outlives the file.
        out = np.empty((rows.stop - rows.start, cols.stop - cols.start), self.dtype)
        step = max(1, _BAND_BYTES // max(self.row_bytes, 1))
        for start in range(rows.start, rows.stop, step):
            stop = min(start + step, rows.stop)
            out[start - rows.start : stop - rows.start] = section[start:stop, :][
                :, cols
            ]
        return out


def _astropy_said(caught: list) -> str:
    """The first warning astropy gave while failing, as a message suffix."""
    for w in caught:
        text = str(w.message).strip().splitlines()
        if text:
            return f" (astropy: {text[0].strip()})"
    return ""


def _is_image_hdu(h: Any) -> bool:
    from astropy.io import fits

    return isinstance(
        h, (fits.PrimaryHDU, fits.ImageHDU, fits.CompImageHDU)
    ) and not isinstance(h, fits.GroupsHDU)


def _hdu_summary(hdul: Any) -> str:
    parts = []
    for i, h in enumerate(hdul):
        shape = tuple(h.shape) if _is_image_hdu(h) else None
        what = (
            f"image {shape}"
            if shape
            else ("no data" if _is_image_hdu(h) else type(h).__name__)
        )
        parts.append(f"{i} {h.name!r} {what}")
    return ", ".join(parts)


def _select_hdu(hdul: Any, hdu: int | str | None, label: str) -> int:
    if isinstance(hdu, str) and re.fullmatch(r"-?\d+", hdu.strip()):
        # A command line gives an index as a string too; numeric EXTNAMEs
        # are not a thing.
        hdu = int(hdu)
    if hdu is None:
        for i, h in enumerate(hdul):
            if _is_image_hdu(h) and len(h.shape) == 2:
                return i
        cubes = [(i, h) for i, h in enumerate(hdul) if _is_image_hdu(h) and h.shape]
        if cubes:
            i, h = cubes[0]
            msg = (
                f"{label} has no 2-D image HDU; HDU {i} ({h.name!r}) has shape "
                f"{tuple(h.shape)}: tilesky needs a 2-D image, choose one with hdu= "
                f"or write one plane as its own HDU (HDUs: {_hdu_summary(hdul)})"
            )
        else:
            msg = (
                f"{label} holds no image data (HDUs: {_hdu_summary(hdul)}); "
                "pass a FITS image"
            )
        raise InputError(msg, params="hdu" if cubes else ())
    try:
        index = hdul.index_of(hdu)
        h = hdul[index]
    except (KeyError, IndexError) as exc:
        msg = f"hdu={hdu!r} not found in {label}; available HDUs: {_hdu_summary(hdul)}"
        raise InputError(msg, params="hdu") from exc
    if not _is_image_hdu(h):
        msg = (
            f"hdu={hdu!r} of {label} is a {type(h).__name__}, not an image; "
            f"choose an image HDU with hdu= (HDUs: {_hdu_summary(hdul)})"
        )
        raise InputError(msg, params="hdu")
    if not h.shape:
        msg = (
            f"hdu={hdu!r} of {label} has no image data (NAXIS = 0); "
            f"choose an image HDU with hdu= (HDUs: {_hdu_summary(hdul)})"
        )
        raise InputError(msg, params="hdu")
    return index


def _data_end(hdul: Any, index: int) -> int | None:
    """Byte offset where the HDU's data end, from its headers (no padding)."""
    from astropy.io import fits

    h = hdul[index]
    start = hdul.fileinfo(index)["datLoc"]
    if isinstance(h, fits.CompImageHDU):
        table = getattr(h, "_bintable", None)
        if table is None:
            return None
        th = table.header
        return start + th["NAXIS1"] * th["NAXIS2"] + th.get("PCOUNT", 0)
    hdr = h.header
    return start + abs(hdr["BITPIX"]) // 8 * math.prod(h.shape)


def _open_fits(
    location: str,
    label: str,
    remote: bool,
    fs: Any,
    path: str,
    info: Mapping,
    hdu: int | str | None,
    box: tuple[int, int],
    chunks: Any,
    options: dict,
) -> ImageInput:
    from astropy.io import fits

    try:
        with fs.open(path, "rb") as f:
            gzipped = f.read(2) == _GZIP_MAGIC
    except Exception as exc:
        msg = f"cannot open input {label!r}: {_describe(exc)}"
        raise InputError(msg) from exc
    # astropy warns about a broken or truncated file before it fails (or
    # before tilesky's own truncation check does): on stderr that would be a
    # dozen lines around the one error line. Keep them for the message and
    # show them only if the file opens after all.
    with warnings.catch_warnings(record=True) as caught:
        try:
            with _fits_file(location, remote, options) as hdul:
                index = _select_hdu(hdul, hdu, repr(label))
                h = hdul[index]
                shape = tuple(int(n) for n in h.shape)
                what = f"HDU {index} ({h.name!r}) of {label!r}"
                _check_shape(
                    shape,
                    what,
                    "choose a 2-D image HDU with hdu=",
                    box,
                    params=("hdu",),
                )
                compressed = isinstance(h, fits.CompImageHDU)
                end = None if gzipped else _data_end(hdul, index)
                size = info.get("size")
                if end is not None and size is not None and int(size) < end:
                    msg = (
                        f"{label!r} is truncated: {what} needs {end} bytes but "
                        f"the file has {size}; re-copy or re-write the file"
                    )
                    raise InputError(msg)
                # A one-pixel read gives the dtype astropy's scaling produces.
                stored = h.section[0:1, 0:1].dtype
                header = h.header.tostring()
                bitpix = int(h.header["BITPIX"])
                extname = h.name
                sums = {
                    k.lower(): str(h.header[k])
                    for k in ("CHECKSUM", "DATASUM")
                    if k in h.header
                }
        except InputError:
            raise
        except Exception as exc:
            msg = (
                f"cannot open input {label!r} as FITS: {_describe(exc)}"
                f"{_astropy_said(caught)}; is it a valid, complete FITS file?"
            )
            raise InputError(msg) from exc
    for w in caught:
        warnings.showwarning(w.message, w.category, w.filename, w.lineno)

    target = _working_dtype(stored, what)
    header_digest = hashlib.sha256(header.encode()).hexdigest()
    fingerprint = {"header_sha256": header_digest, "size": info.get("size"), **sums}
    # The first change marker the filesystem offers (S3 ETag, local mtime...).
    for key in ("ETag", "etag", "mtime", "LastModified", "last_modified", "created"):
        if info.get(key) is not None:
            value = info[key]
            text = value.isoformat() if hasattr(value, "isoformat") else str(value)
            fingerprint[key.lower()] = text
            break
    identity = _identity(
        "fits", label, shape, stored, hdu=index, extname=extname, bitpix=bitpix
    )
    identity["fingerprint"] = fingerprint

    edges = aligned_chunks(shape, chunks, box)
    banded = not compressed
    row_bytes = shape[1] * abs(bitpix) // 8
    reader = _FitsReader(
        location,
        remote,
        options,
        index,
        shape,
        target,
        banded,
        row_bytes,
        repr(label),
        _secret_values(location, options),
    )
    token = tokenize(label, index, fingerprint, edges, str(target))
    data = _lazy_read(reader, "fits", token, edges, target)
    mode = "tiles" if compressed else "row bands"
    log.info("opened %s: shape %s, chunks %s, reads %s", what, shape, edges, mode)
    return ImageInput(data, identity, header, None)

"""FITS inputs (local or URL; uncompressed, ``.fits.gz`` or ``.fits.fz``).

Each reading task opens the file itself, so the graph pickles for
distributed workers, and reads its section through astropy's ``section``:
for a tile-compressed HDU only the tiles under the chunk; for an
uncompressed image its rows, in bands of whole rows (memory-mapped for a
local file). A gzip stream cannot seek, so every task decompresses it up to
its rows.
"""

from __future__ import annotations

import contextlib
import copy
import gzip
import hashlib
import logging
import math
import re
import threading
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import dask.array as da
import fsspec
import numpy as np
from dask.base import tokenize

from tilesky.errors import InputError
from tilesky.io._image import (
    ImageInput,
    check_shape,
    describe,
    integer_offset,
    key_text,
    lazy_read,
    make_identity,
    to_working,
    working_dtype,
)
from tilesky.io._products import (
    dq_bits_for,
    find_products,
    flagged,
    merged_header,
    weight_from_err,
)
from tilesky.io._tiles import aligned_chunks
from tilesky.io._urls import raise_clean, secret_values

__all__ = ["GZIP_MAGIC", "open_fits"]

log = logging.getLogger(__name__)

#: The first two bytes of a gzip stream.
GZIP_MAGIC = b"\x1f\x8b"
# Uncompressed FITS reads fetch whole rows, this many bytes at a time at most,
# so a task's memory stays near its chunk even for wide images.
_BAND_BYTES = 16 * 2**20
# Read-ahead block for remote FITS files: large enough to cover a header in
# one request, small enough not to fetch much beyond a band.
_REMOTE_BLOCK = 2 * 2**20


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
        if magic == GZIP_MAGIC:
            f = stack.enter_context(gzip.GzipFile(fileobj=f, mode="rb"))
        yield stack.enter_context(fits.open(f, lazy_load_hdus=True))


_QUIET_LOCK = threading.Lock()
_QUIET_DEPTH = 0
_QUIET_ENTRY: list = []


@contextlib.contextmanager
def _quiet_fits() -> Iterator[None]:
    """Silence astropy's FITS warnings while reading tasks run.

    Opening the file told the user once (:func:`_probe`); every task opens
    it again and would repeat them. ``warnings.catch_warnings`` swaps the
    process-wide filters and is not safe in concurrent reader threads, so
    one filter entry is shared by all the readers running at a time.
    """
    global _QUIET_DEPTH
    with _QUIET_LOCK:
        if _QUIET_DEPTH == 0:
            warnings.filterwarnings("ignore", module=r"astropy\.io\.fits")
            _QUIET_ENTRY[:] = [warnings.filters[0]]
        _QUIET_DEPTH += 1
    try:
        yield
    finally:
        with _QUIET_LOCK:
            _QUIET_DEPTH -= 1
            if _QUIET_DEPTH == 0 and _QUIET_ENTRY:
                # "ignore" leaves no trace in the warning registries, so
                # removing the entry restores the filters as they were.
                with contextlib.suppress(ValueError):
                    warnings.filters.remove(_QUIET_ENTRY.pop())


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
        # Removed from integer pixels (see integer_offset), with the stored
        # dtype they are read in first.
        self.offset = 0
        self.stored: np.dtype | None = None

    def __getitem__(self, key: tuple[slice, slice]) -> np.ndarray:
        rows, cols = (
            slice(*k.indices(n)) for k, n in zip(key, self.shape, strict=True)
        )
        try:
            with (
                _quiet_fits(),
                _fits_file(self.location, self.remote, self.options) as hdul,
            ):
                section = hdul[self.index].section
                if not self.banded:
                    # Tile-compressed: astropy decompresses only the tiles
                    # under the key. np.array copies to native order.
                    if self.offset:
                        block = np.asarray(section[rows, cols])
                        return to_working(block, self.dtype, self.offset)
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
                f"cannot read {key_text((rows, cols), self.shape)} of "
                f"{self.label} (HDU {self.index}): {describe(exc)}; "
                "the file may be truncated or corrupt"
            )
            raise_clean(msg, exc, self.secrets)

    def _read_bands(self, section: Any, rows: slice, cols: slice) -> np.ndarray:
        # Whole rows are one contiguous read (a view for a memory-mapped,
        # unscaled file); astropy reads a partial row span row by row, a
        # Python call per row, and on a gzip stream each of those rewinds.
        # The assignment copies into native order, so no view of a memmap
        # outlives the file.
        dtype = self.stored if self.offset else self.dtype
        out = np.empty((rows.stop - rows.start, cols.stop - cols.start), dtype)
        step = max(1, _BAND_BYTES // max(self.row_bytes, 1))
        for start in range(rows.start, rows.stop, step):
            stop = min(start + step, rows.stop)
            out[start - rows.start : stop - rows.start] = section[start:stop, :][
                :, cols
            ]
        return to_working(out, self.dtype, self.offset) if self.offset else out


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
        # A survey product's image is its SCI extension, wherever it sits.
        images = [
            i for i, h in enumerate(hdul) if _is_image_hdu(h) and len(h.shape) == 2
        ]
        for i in images:
            if hdul[i].name == "SCI":
                return i
        if images:
            return images[0]
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


@dataclass(frozen=True)
class _Hdu:
    """What opening the file tells about the image HDU to read."""

    index: int
    shape: tuple[int, int]
    what: str
    compressed: bool
    stored: np.dtype
    header: str
    bitpix: int
    extname: str
    sums: dict
    kept_header: str
    products: dict
    dq_bits: int


def open_fits(
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
    dq_bits: int | None = None,
) -> ImageInput:
    """Open an image HDU of the FITS file at ``location``.

    ``fs`` and ``path`` are its fsspec filesystem and path, ``info`` what
    ``fs.info`` said of it; ``label`` names it in messages and the identity.
    A ``SCI`` HDU brings its ``DQ``, ``WHT`` and ``ERR`` companions (see
    :mod:`tilesky.io._products`; ``dq_bits`` overrides the unusable DQ bits).
    See :func:`tilesky.io.open_image`.
    """
    try:
        with fs.open(path, "rb") as f:
            gzipped = f.read(2) == GZIP_MAGIC
    except Exception as exc:
        msg = f"cannot open input {label!r}: {describe(exc)}"
        raise InputError(msg) from exc
    h = _probe(location, label, remote, options, gzipped, info, hdu, box, dq_bits)
    target = working_dtype(h.stored, h.what)
    fingerprint = _fingerprint(h, info)
    identity = make_identity(
        "fits",
        label,
        h.shape,
        h.stored,
        hdu=h.index,
        extname=h.extname,
        bitpix=h.bitpix,
    )
    identity["fingerprint"] = fingerprint

    edges = aligned_chunks(h.shape, chunks, box)
    banded = not h.compressed
    row_bytes = h.shape[1] * abs(h.bitpix) // 8
    reader = _FitsReader(
        location,
        remote,
        options,
        h.index,
        h.shape,
        target,
        banded,
        row_bytes,
        repr(label),
        secret_values(location, options),
    )
    reader.stored = np.dtype(h.stored).newbyteorder("=")
    stored_reader = copy.copy(reader)
    stored_reader.dtype = reader.stored
    reader.offset = integer_offset(h.stored, h.shape, stored_reader.__getitem__)
    if reader.offset:
        identity["offset"] = reader.offset
        log.info("%s: offset %d removed from its integer pixels", h.what, reader.offset)
    token = tokenize(label, h.index, fingerprint, edges, str(target), reader.offset)
    data = lazy_read(reader, "fits", token, edges, target)
    mode = "tiles" if h.compressed else "row bands"
    log.info("opened %s: shape %s, chunks %s, reads %s", h.what, h.shape, edges, mode)
    if not h.products:
        return ImageInput(data, identity, h.kept_header, None)
    data, weight, used = _with_products(reader, h, edges, token, data)
    identity["products"] = used
    log.info("survey product %s: %s", h.what, used)
    return ImageInput(data, identity, h.kept_header, None, weight)


def _product_dtypes(hdul: Any, index: int, shape: tuple) -> dict:
    """``{EXTNAME: (index, dtype)}`` of the SCI HDU's DQ, WHT and ERR."""
    found = find_products(hdul, index, shape)
    return {
        name: (i, hdul[i].section[0:1, 0:1].dtype.newbyteorder("="))
        for name, i in found.items()
    }


def _companion(reader: _FitsReader, name: str, index: int, dtype, edges, token):
    """A lazily read DQ/WHT/ERR HDU, chunked like the image."""
    aux = copy.copy(reader)
    aux.index, aux.dtype, aux.offset = index, np.dtype(dtype), 0
    aux.row_bytes = reader.shape[1] * np.dtype(dtype).itemsize
    aux.label = f"{reader.label} ({name})"
    return lazy_read(aux, f"fits-{name.lower()}", token, edges, aux.dtype)


def _with_products(reader, h: _Hdu, edges, token, data):
    """The image with DQ-flagged pixels as NaN, the weight map, what was used."""
    used: dict[str, Any] = {"image": h.extname}
    if "DQ" in h.products:
        index, dtype = h.products["DQ"]
        dq = _companion(reader, "DQ", index, dtype, edges, token)
        bad = dq.map_blocks(flagged, h.dq_bits, dtype=bool)
        data = da.where(bad, np.float32(np.nan), data).astype(data.dtype)
        used |= {"dq": "DQ", "dq_bits": h.dq_bits}
    weight = None
    if "WHT" in h.products:
        index, _ = h.products["WHT"]
        weight = _companion(reader, "WHT", index, np.float32, edges, token)
        used["weight"] = "WHT"
    elif "ERR" in h.products:
        index, _ = h.products["ERR"]
        err = _companion(reader, "ERR", index, np.float32, edges, token)
        weight = err.map_blocks(weight_from_err, dtype=np.float32)
        used["weight"] = "1/ERR**2"
    return data, weight, used


def _probe(
    location: str,
    label: str,
    remote: bool,
    options: dict,
    gzipped: bool,
    info: Mapping,
    hdu: int | str | None,
    box: tuple[int, int],
    dq_bits: int | None = None,
) -> _Hdu:
    """Open the file once: pick the HDU, check it, read what the graph needs."""
    from astropy.io import fits

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
                check_shape(
                    shape,
                    what,
                    "choose a 2-D image HDU with hdu=",
                    box,
                    params=("hdu",),
                )
                end = None if gzipped else _data_end(hdul, index)
                size = info.get("size")
                if end is not None and size is not None and int(size) < end:
                    msg = (
                        f"{label!r} is truncated: {what} needs {end} bytes but "
                        f"the file has {size}; re-copy or re-write the file"
                    )
                    raise InputError(msg)
                found = _Hdu(
                    index=index,
                    shape=shape,
                    what=what,
                    compressed=isinstance(h, fits.CompImageHDU),
                    # A one-pixel read gives the dtype astropy's scaling produces.
                    stored=h.section[0:1, 0:1].dtype,
                    header=h.header.tostring(),
                    bitpix=int(h.header["BITPIX"]),
                    extname=h.name,
                    sums={
                        k.lower(): str(h.header[k])
                        for k in ("CHECKSUM", "DATASUM")
                        if k in h.header
                    },
                    kept_header=merged_header(hdul, index).tostring(),
                    products=_product_dtypes(hdul, index, shape),
                    dq_bits=dq_bits_for(hdul[0].header, dq_bits),
                )
        except InputError:
            raise
        except Exception as exc:
            msg = (
                f"cannot open input {label!r} as FITS: {describe(exc)}"
                f"{_astropy_said(caught)}; is it a valid, complete FITS file?"
            )
            raise InputError(msg) from exc
    for w in caught:
        warnings.showwarning(w.message, w.category, w.filename, w.lineno)
    return found


def _fingerprint(h: _Hdu, info: Mapping) -> dict:
    """Header hash, size, checksums and the filesystem's change marker."""
    header_digest = hashlib.sha256(h.header.encode()).hexdigest()
    fingerprint = {"header_sha256": header_digest, "size": info.get("size"), **h.sums}
    # The first change marker the filesystem offers (S3 ETag, local mtime...).
    for key in ("ETag", "etag", "mtime", "LastModified", "last_modified", "created"):
        if info.get(key) is not None:
            value = info[key]
            text = value.isoformat() if hasattr(value, "isoformat") else str(value)
            fingerprint[key.lower()] = text
            break
    return fingerprint

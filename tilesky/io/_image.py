"""The opened image, and the checks and helpers every reader shares.

An :class:`ImageInput` is what every reader returns. The checks here give
each kind of input the same one-line errors (shape, dtype, which variable),
and :func:`lazy_read` makes the one-task-per-chunk graph of the Zarr and
FITS readers.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import dask.array as da
import numpy as np

from tilesky.errors import InputError

__all__ = [
    "ImageInput",
    "check_shape",
    "describe",
    "header_from_attrs",
    "integer_offset",
    "key_text",
    "lazy_read",
    "make_identity",
    "pick_variable",
    "reject",
    "to_working",
    "working_dtype",
]

# Names tried, in order, for the image in a Zarr group or Dataset that has no
# ``tilesky_default_variable`` attribute.
_DEFAULT_VARIABLES = ("scene", "image", "data", "sci")
# Attributes that may hold a FITS header string (or a dict of cards) on a
# Zarr array/group or a DataArray/Dataset.
_HEADER_ATTRS = ("fits_header", "header", "wcs_header")


@dataclass(frozen=True, eq=False)
class ImageInput:
    """An opened input image.

    Parameters
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
    weight : dask.array.Array or None
        A weight map (inverse variance, zero = no coverage) that came with
        the input, chunked like ``data``: a survey product's ``WHT``
        extension, or ``1/ERR**2``. None when the input has none.
    """

    data: da.Array
    identity: dict
    header: str | None
    coords: dict | None
    weight: da.Array | None = None


def make_identity(
    kind: str, source: str, shape: tuple, dtype: Any, **extra: Any
) -> dict:
    """The identity fields every input has; ``extra`` adds or overrides some.

    ``fingerprint`` is left to the reader. See :class:`ImageInput`.

    Examples
    --------
    >>> make_identity("numpy", "<numpy array>", (2, 3), ">f4")["dtype"]
    '>f4'
    """
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


def describe(exc: BaseException) -> str:
    """An exception as one short line for a message: ``Type: text``.

    Examples
    --------
    >>> describe(OSError("disk\\n full"))
    'OSError: disk full'
    """
    text = " ".join(str(exc).split())
    if len(text) > 300:
        text = text[:297] + "..."
    name = type(exc).__name__
    return f"{name}: {text}" if text else name


def working_dtype(dtype: Any, what: str, boolean: bool = False) -> np.dtype:
    """The dtype tilesky computes in for input pixels of ``dtype``.

    float64 stays float64, other numbers become float32; booleans stay
    boolean when ``boolean`` (a mask). Complex, boolean (for an image) and
    non-numeric dtypes raise :class:`InputError` naming ``what``.

    Examples
    --------
    >>> working_dtype(">i2", "x"), working_dtype("f8", "x")
    (dtype('float32'), dtype('float64'))
    """
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


#: Integers beyond this magnitude are not all exact in float32.
_FLOAT32_EXACT = 2**24
#: The side of the central window whose median is an integer image's offset.
_OFFSET_WINDOW = 256


def integer_offset(dtype: Any, shape: tuple[int, ...], read: Any) -> int:
    """The offset removed from integer pixels before they become float32.

    float32 holds integers exactly only up to 2**24: pixels of about 1e12
    with a scatter of 100 would all round to a few values (a "constant"
    image). For 32- and 64-bit integers whose typical value is beyond that,
    the median of the image's central window (read with ``read(key)``) is
    removed in integer arithmetic first, so the differences keep their
    precision. The offset depends on the pixels only, never on the chunks:
    every reading of the image (tiled or whole) removes the same one.

    Parameters
    ----------
    dtype : numpy dtype
        The stored pixel type.
    shape : tuple of int
        The image's shape.
    read : callable
        ``read((rows, cols))`` returns that window of stored pixels.

    Returns
    -------
    int
        The offset, 0 when none is needed.
    """
    dtype = np.dtype(dtype)
    if dtype.kind not in "iu" or dtype.itemsize < 4:
        return 0
    key = tuple(
        slice(
            max(0, n // 2 - _OFFSET_WINDOW // 2), min(n, n // 2 + _OFFSET_WINDOW // 2)
        )
        for n in shape
    )
    sample = np.asarray(read(key))
    if sample.size == 0:
        return 0
    median = int(np.median(sample))
    return median if abs(median) > _FLOAT32_EXACT else 0


def to_working(block: np.ndarray, target: np.dtype, offset: int = 0) -> np.ndarray:
    """Stored pixels as ``target``, less ``offset`` (see :func:`integer_offset`).

    Examples
    --------
    >>> to_working(np.array([10**12, 10**12 + 3]), np.float32, 10**12)
    array([0., 3.], dtype=float32)
    """
    if not offset:
        return block.astype(target, copy=False)
    if block.dtype.kind == "u":
        # Modular difference: exact while |pixel - offset| < 2**63.
        diff = (block.astype(np.uint64) - np.uint64(offset)).view(np.int64)
    else:
        diff = block.astype(np.int64) - np.int64(offset)
    return diff.astype(target)


def check_shape(
    shape: tuple,
    what: str,
    hint: str,
    box: tuple[int, int],
    *,
    params: tuple[str, ...] = (),
) -> None:
    """Refuse a shape that is not 2-D, is empty or is smaller than ``box``.

    ``hint`` says how to pick a 2-D image from ``what``; ``params`` are the
    parameters it names.
    """
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


def header_from_attrs(*attr_maps: Mapping) -> str | None:
    """The first FITS header found in the attributes, as a header string.

    Looks for ``fits_header``, ``header`` or ``wcs_header``, holding a
    header string or a dict of cards, in each of ``attr_maps`` in turn.
    """
    for attrs in attr_maps:
        for name in _HEADER_ATTRS:
            value = attrs.get(name)
            if isinstance(value, str) and value.strip():
                return value
            if isinstance(value, Mapping) and value:
                from astropy.io import fits

                return fits.Header(list(value.items())).tostring()
    return None


def pick_variable(
    shapes: Mapping[str, tuple], attrs: Mapping, variable: str | None, label: str
) -> str:
    """The array of a group or Dataset to open (see :func:`open_image`).

    Parameters
    ----------
    shapes : Mapping
        Array name to shape, for every array ``label`` holds.
    attrs : Mapping
        The group's attributes (``tilesky_default_variable`` may name one).
    variable : str or None
        The caller's choice.
    label : str
        The group, as messages name it.

    Examples
    --------
    >>> pick_variable({"mask": (4, 4), "sci": (4, 4)}, {}, None, "the Dataset")
    'sci'
    """
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


def reject(option: str, value: Any, kind: str, applies: str) -> None:
    """Refuse ``option=value`` for an input of ``kind``, if it was given.

    ``applies`` says what the option selects, for the message.
    """
    if value is not None:
        msg = (
            f"{option}={value!r} does not apply to a {kind} input; "
            f"{option}= selects {applies}"
        )
        raise InputError(msg, params=option)


def lazy_read(
    reader: Any, kind: str, token: str, edges: tuple[int, int], target: np.dtype
) -> da.Array:
    """One task per chunk, each asking ``reader`` for its own section.

    ``reader`` is array-like (``shape``, ``ndim``, ``__getitem__`` with a
    pair of slices) and returns blocks of dtype ``target``; the graph holds
    it, not its data, so it must pickle for distributed workers.
    """
    return da.from_array(
        reader,
        chunks=edges,
        name=f"tilesky-read-{kind}-{token}",
        lock=False,
        fancy=False,
        meta=np.empty((0, 0), dtype=target),
        inline_array=True,
    )


def key_text(key: tuple[slice, ...], shape: tuple[int, ...]) -> str:
    """A block's place for a message: ``rows 0:50, columns 100:150``.

    Examples
    --------
    >>> key_text((slice(0, 50), slice(100, None)), (60, 150))
    'rows 0:50, columns 100:150'
    """
    (r0, r1, _), (c0, c1, _) = (k.indices(n) for k, n in zip(key, shape, strict=True))
    return f"rows {r0}:{r1}, columns {c0}:{c1}"

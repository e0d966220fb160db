"""Survey data products: the extensions that come with a ``SCI`` image.

JWST (``i2d``, ``cal``, ``rate``) and HST (``flt``, ``flc``, ``drz``,
``drc``) files put the observation keywords in an empty PRIMARY header and
the image in a ``SCI`` extension, next to ``ERR``, ``DQ``, ``WHT`` (and
``CON``/``CTX``, ``VAR_*``...) extensions of the same ``EXTVER``. tilesky
reads them as they ship:

- ``SCI`` is the image;
- ``DQ`` pixels with any of the unusable bits set are no coverage (NaN). For
  JWST (``TELESCOP = 'JWST'``) that is ``DO_NOT_USE``, bit 0 (value 1), which
  the JWST pipeline sets on every pixel it rejects (JWST DQ flag
  definitions, ``jwst.datamodels.dqflags``); for other files (HST's
  ``flt``/``flc``: cosmic rays, bad pixels, saturation...) any non-zero DQ
  value. ``dq_bits=`` of :func:`tilesky.io.open_image` chooses other bits;
- ``WHT`` is the weight map (inverse variance or exposure time; zero = no
  coverage); without one, ``ERR`` gives ``1 / ERR**2`` (zero where ERR is
  zero or not finite). A weight map the caller passes wins.

The FITS header a run keeps is the PRIMARY header's cards followed by the
image HDU's (which win), without the cards that describe an HDU's layout.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

__all__ = [
    "JWST_DO_NOT_USE",
    "STRUCTURAL",
    "dq_bits_for",
    "find_products",
    "is_structural",
    "is_wcs",
    "merged_header",
]

#: JWST's DO_NOT_USE data-quality bit.
JWST_DO_NOT_USE = 1
#: Every DQ bit (any non-zero value is unusable).
ALL_BITS = 0xFFFFFFFF

#: Keywords that describe an HDU's layout, encoding or integrity rather than
#: the observation: they are rebuilt (or no longer true) in another file.
STRUCTURAL = re.compile(
    r"^(SIMPLE|XTENSION|BITPIX|NAXIS\d*|EXTEND|PCOUNT|GCOUNT|GROUPS|BZERO|BSCALE"
    r"|BLANK|CHECKSUM|DATASUM|EXTNAME|EXTVER|EXTLEVEL|INHERIT|DATAMIN|DATAMAX"
    r"|TFIELDS|T(TYPE|FORM|UNIT|DIM|NULL|SCAL|ZERO|DISP)\d+|THEAP"
    r"|Z(IMAGE|CMPTYPE|BITPIX|NAXIS\d*|TILE\d+|NAME\d+|VAL\d+|SIMPLE|TENSION"
    r"|EXTEND|BLOCKED|PCOUNT|GCOUNT|HECKSUM|DATASUM|QUANTIZ|DITHER0|BLANK)"
    r")$"
)
#: WCS keywords (primary or alternate ``A``-``Z``), SIP and distortion terms:
#: an export writes the WCS astropy rebuilds, never a mix of old and new.
WCS = re.compile(
    r"^(WCSAXES|CTYPE\d|CRPIX\d|CRVAL\d|CDELT\d|CUNIT\d|CROTA\d|CD\d_\d|PC\d_\d"
    r"|PV\d_\d+|PS\d_\d+|CRDER\d|CSYER\d|LONPOLE|LATPOLE|RADESYS|RADECSYS"
    r"|EQUINOX|EPOCH|WCSNAME|MJDREF|(A|B|AP|BP)_(ORDER|\d+_\d+|DMAX)"
    r"|D2IMDIS\d|D2IMERR\d|CPDIS\d|CPERR\d|DP\d|DQ\d)[A-Z]?$"
)


def is_structural(key: str) -> bool:
    """True for a layout keyword (``BITPIX``, ``NAXIS2``, ``CHECKSUM``...)."""
    return bool(STRUCTURAL.match(key.upper()))


def is_wcs(key: str) -> bool:
    """True for a WCS keyword (``CRPIX1``, ``CD1_2``, ``A_ORDER``...)."""
    return bool(WCS.match(key.upper()))


def merged_header(hdul: Any, index: int) -> Any:
    """PRIMARY's observation cards, then the image HDU's own cards.

    For ``index == 0`` the image HDU's header, as it is.
    """
    from astropy.io import fits

    own = hdul[index].header
    if index == 0:
        return own
    out = fits.Header()
    for card in hdul[0].header.cards:
        if not (is_structural(card.keyword) or is_wcs(card.keyword)):
            out.append(card, end=True)
    # The image's cards win; commentary cards (HISTORY...) are appended.
    out.extend(own, update=True, unique=False)
    return out


def find_products(hdul: Any, index: int, shape: tuple[int, int]) -> dict[str, int]:
    """``{"DQ": i, "WHT": j, "ERR": k}``: the companions of a ``SCI`` HDU.

    Only image HDUs of the same ``EXTVER`` and shape count; an image HDU not
    named ``SCI`` has none.
    """
    sci = hdul[index]
    if sci.name != "SCI":
        return {}
    ver = sci.header.get("EXTVER", 1)
    found = {}
    for i, h in enumerate(hdul):
        if h.name in ("DQ", "WHT", "ERR") and h.name not in found:
            if h.header.get("EXTVER", 1) != ver:
                continue
            if tuple(int(n) for n in getattr(h, "shape", ())) == tuple(shape):
                found[h.name] = i
    return found


def dq_bits_for(header: Any, dq_bits: int | None) -> int:
    """The DQ bits that make a pixel unusable (see the module docstring)."""
    if dq_bits is not None:
        return int(dq_bits)
    if str(header.get("TELESCOP", "")).strip().upper() == "JWST":
        return JWST_DO_NOT_USE
    return ALL_BITS


def weight_from_err(err: np.ndarray) -> np.ndarray:
    """``1 / err**2`` where ``err`` is positive and finite, else 0."""
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        ok = np.isfinite(err) & (err > 0)
        w = np.where(ok, 1.0 / np.where(ok, err, 1) ** 2, 0)
    return w.astype(np.float32)


def flagged(dq: np.ndarray, bits: int) -> np.ndarray:
    """True where ``dq`` has any of ``bits`` set."""
    return (dq.astype(np.int64) & bits) != 0

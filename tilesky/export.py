"""Export a finished run's maps as FITS files with the input's header.

Each map keeps the input's observation keywords (OBJECT, TELESCOP,
INSTRUMENT, FILTER, EXPTIME, DATE-OBS, BUNIT...: every card of the input's
image HDU, and of its PRIMARY header for an extension, except those that
describe the HDU's layout or encoding), its celestial WCS as astropy
rebuilds it, and tilesky's provenance: ``TSKYVAR`` (the map), ``TSKYVER``
(the version), ``TSKYCFG`` (a hash of the configuration) and ``TSKYIN``
(the input) with a HISTORY line.

Each map is written with astropy's :class:`~astropy.io.fits.StreamingHDU`,
one band of tile rows at a time, so a mosaic larger than memory exports with
memory bounded by a band (tile height x image width).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS, FITSFixedWarning

from tilesky.errors import StoreError
from tilesky.store import open_run

__all__ = ["EXPORTS", "celestial_header", "config_hash", "export_fits", "map_header"]

log = logging.getLogger("tilesky")

#: Run variable -> FITS file stem.
EXPORTS = {
    "background": "background",
    "background_rms": "rms",
    "mask": "mask",
    "subtracted": "subtracted",
}


def celestial_header(header_text: str | None) -> fits.Header:
    """The celestial WCS keywords of a stored FITS header (empty if none).

    Parameters
    ----------
    header_text : str or None
        A header as ``Header.tostring()`` writes it, as a run store keeps it.

    Returns
    -------
    astropy.io.fits.Header
        Its celestial WCS, or an empty header when it has none.
    """
    if not header_text:
        return fits.Header()
    import warnings

    header = fits.Header.fromstring(header_text)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FITSFixedWarning)
            wcs = WCS(header)
            if not wcs.has_celestial:
                return fits.Header()
            return wcs.celestial.to_header(relax=True)
    except (ValueError, MemoryError, KeyError) as exc:
        # wcslib's errors (singular matrix, inconsistent axis types) are
        # ValueErrors spanning lines; the user fixes the input's keywords.
        text = " ".join(str(exc).split())
        text = text.split(": ", 1)[-1] if "wcslib" in text or "ERROR" in text else text
        msg = (
            f"the input's WCS cannot be used ({type(exc).__name__}: {text}); fix its "
            "CTYPEi/CDi_j/PCi_j/CDELTi keywords and run again"
        )
        raise StoreError(msg) from None


def config_hash(config: dict | None) -> str:
    """The first 16 hex digits of the SHA-256 of a run's configuration.

    Parameters
    ----------
    config : dict or None
        The run's configuration as stored (``Config.to_dict()``).

    Returns
    -------
    str
        16 hexadecimal digits, the same for equal configurations.

    Examples
    --------
    >>> config_hash({"n_rounds": 1}) == config_hash({"n_rounds": 1})
    True
    """
    text = json.dumps(config or {}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _observation_cards(header_text: str | None, name: str) -> fits.Header:
    """The input's cards that still describe the exported map."""
    from tilesky.io._products import is_structural, is_wcs

    out = fits.Header()
    if not header_text:
        return out
    for card in fits.Header.fromstring(header_text).cards:
        key = card.keyword
        if is_structural(key) or is_wcs(key) or key.startswith("TSKY"):
            continue
        if name == "mask" and key == "BUNIT":
            continue  # the mask is a flag, not in the image's unit
        out.append(card, end=True)
    return out


def map_header(
    attrs: dict, name: str, shape: tuple[int, int], bitpix: int = -32
) -> fits.Header:
    """The FITS header of the exported map ``name`` of a run with ``attrs``.

    Parameters
    ----------
    attrs : dict
        The run store's attributes (``wcs_header``, ``config``,
        ``tilesky_version``, ``input``).
    name : str
        A run variable (a key of :data:`EXPORTS`).
    shape : (int, int)
        The map's shape.
    bitpix : int
        The map's FITS BITPIX (-32 for float32, 8 for the uint8 mask).

    Returns
    -------
    astropy.io.fits.Header
        Layout, the input's observation keywords, its celestial WCS and
        tilesky's provenance.
    """
    header = fits.Header()
    header["SIMPLE"] = True
    header["BITPIX"] = bitpix
    header["NAXIS"] = 2
    header["NAXIS1"] = int(shape[1])
    header["NAXIS2"] = int(shape[0])
    text = attrs.get("wcs_header")
    header.extend(_observation_cards(text, name), unique=False)
    header.extend(celestial_header(text), update=True)
    version = str(attrs.get("tilesky_version", ""))
    digest = config_hash(attrs.get("config"))
    source = str((attrs.get("input") or {}).get("source", ""))
    header["TSKYVAR"] = (name, "tilesky run variable")
    header["TSKYVER"] = (version, "tilesky version")
    header["TSKYCFG"] = (digest, "tilesky configuration SHA-256 (16 hex digits)")
    if source:
        header.add_history(f"tilesky input: {source}")
    header.add_history(f"tilesky {version} {name} map, configuration {digest}")
    return header


def export_fits(
    run: str,
    out_dir: str | Path,
    *,
    overwrite: bool = False,
    storage_options: dict | None = None,
) -> list[Path]:
    """Write ``background``, ``rms``, ``mask`` and ``subtracted`` FITS files.

    Parameters
    ----------
    run : str
        Path or URL of a finished run store.
    out_dir : str or Path
        Directory for ``background.fits``, ``rms.fits``, ``mask.fits`` and
        ``subtracted.fits``.
    overwrite : bool
        Replace existing files.
    storage_options : dict, optional
        fsspec options for a run given as a URL.

    Returns
    -------
    list of Path
        The files written. Float maps are NaN where the input had no
        coverage; the mask is uint8 (1 = masked as a source).
    """
    ds = open_run(run, storage_options=storage_options)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    targets = [out / f"{stem}.fits" for stem in EXPORTS.values()]
    existing = [str(p) for p in targets if p.exists()]
    if existing and not overwrite:
        msg = (
            f"{', '.join(existing)} already exist; pass overwrite=True to replace them"
        )
        raise StoreError(msg, params="overwrite")
    written = []
    for name, path in zip(EXPORTS, targets, strict=True):
        var = ds[name]
        data = var.data
        dtype = np.uint8 if var.dtype == bool else np.dtype(">f4")
        bitpix = 8 if dtype == np.uint8 else -32
        header = map_header(dict(ds.attrs), name, var.shape, bitpix)
        tmp = path.with_suffix(".fits.partial")
        if tmp.exists():
            tmp.unlink()
        hdu = fits.StreamingHDU(str(tmp), header)
        try:
            bounds = np.cumsum((0, *data.chunks[0]))
            for start, stop in itertools.pairwise(bounds):
                band = np.asarray(data[start:stop].compute()).astype(dtype)
                hdu.write(band)
        finally:
            hdu.close()
        # Only a complete file gets the final name.
        tmp.replace(path)
        written.append(path)
        log.info("wrote %s", path)
    return written

"""Export a finished run's maps as FITS files carrying the input's WCS.

Each map is written with astropy's :class:`~astropy.io.fits.StreamingHDU`,
one band of tile rows at a time, so a mosaic larger than memory exports with
memory bounded by a band (tile height x image width).
"""

from __future__ import annotations

import itertools
import logging
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS, FITSFixedWarning

from tilesky.errors import StoreError
from tilesky.store import open_run

__all__ = ["EXPORTS", "celestial_header", "export_fits"]

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
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        wcs = WCS(header)
    if not wcs.has_celestial:
        return fits.Header()
    return wcs.celestial.to_header(relax=True)


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
    wcs_header = celestial_header(ds.attrs.get("wcs_header"))
    written = []
    for name, path in zip(EXPORTS, targets, strict=True):
        var = ds[name]
        data = var.data
        dtype = np.uint8 if var.dtype == bool else np.dtype(">f4")
        header = fits.Header()
        header["SIMPLE"] = True
        header["BITPIX"] = 8 if dtype == np.uint8 else -32
        header["NAXIS"] = 2
        header["NAXIS1"] = int(var.shape[1])
        header["NAXIS2"] = int(var.shape[0])
        header.extend(wcs_header, update=True)
        header["TSKYVAR"] = (name, "tilesky run variable")
        header["TSKYVER"] = (
            str(ds.attrs.get("tilesky_version", "")),
            "tilesky version",
        )
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

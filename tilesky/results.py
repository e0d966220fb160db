"""Python calls for what ``tilesky run`` and ``tilesky export`` add to a result.

:func:`quality_metrics` gives the metrics a run stores (bias, RMS versus
scale, residuals against the truth and under sources) for the dataset
:func:`tilesky.estimate_background` returns; :func:`to_fits` writes its maps
to one FITS file with the input's observation keywords, WCS and tilesky's
provenance, as ``tilesky export`` does for a run store.

The metrics function is not called ``tilesky.metrics``: that name is the
subpackage :mod:`tilesky.metrics`, which Python binds on the package as soon
as anything imports from it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from tilesky.errors import InputError, OutputExistsError

__all__ = ["quality_metrics", "to_fits"]

#: Run variable -> EXTNAME of :func:`to_fits`.
EXTNAMES = {
    "background": "BACKGROUND",
    "background_rms": "RMS",
    "mask": "MASK",
    "subtracted": "SUBTRACTED",
}


def _dataset(result: Any, storage_options: dict | None = None):
    if isinstance(result, str | os.PathLike):
        from tilesky.store import open_run

        return open_run(os.fspath(result), storage_options=storage_options)
    if not hasattr(result, "data_vars") or "background" not in result:
        msg = (
            "result must be the xarray.Dataset of estimate_background or the path "
            f"of a run store, got {type(result).__name__}"
        )
        raise InputError(msg, params="result")
    return result


def _data(value: Any) -> Any:
    if value is None:
        return None
    return value.data if hasattr(value, "dims") else value


def quality_metrics(
    result: Any,
    scene: Any = None,
    *,
    truth: Any = None,
    sky: Any = None,
    catalogue: Any = None,
    return_points: bool = False,
    storage_options: dict | None = None,
) -> dict[str, Any] | tuple[dict[str, Any], dict[str, Any] | None]:
    """The quality metrics of a background estimate, as a run stores them.

    Parameters
    ----------
    result : xarray.Dataset or str
        What :func:`tilesky.estimate_background` returned (``background``,
        ``mask``, ``subtracted``), or the path/URL of a run store.
    scene : array_like, optional
        The image; by default ``subtracted + background`` (the image up to
        float32 rounding).
    truth, sky : array_like, optional
        Noiseless and noisy source-free sky (a simulation's ``truth`` and
        ``sky``): the residual metrics against the truth.
    catalogue : mapping or xarray.Dataset, optional
        Sources (``x_mean``, ``y_mean``, ``flux``, ``re``): the residual
        under sources versus flux and radius.
    return_points : bool
        Also return the per-source values (for plots).
    storage_options : dict, optional
        fsspec options for a run store given by URL.

    Returns
    -------
    dict or (dict, dict or None)
        The metrics (see :func:`tilesky.metrics.compute_metrics`), and the
        per-source points with ``return_points``.

    Examples
    --------
    >>> import numpy as np
    >>> from tilesky import estimate_background
    >>> rng = np.random.default_rng(0)
    >>> ds = estimate_background(rng.normal(1.0, 0.1, (120, 150)).astype("f4"))
    >>> m = quality_metrics(ds)
    >>> sorted(m)[:3], bool(abs(m["scale"]["sigma"] - 0.1) < 0.01)
    (['bias', 'scale', 'shape'], True)
    """
    from tilesky.metrics import compute_metrics

    ds = _dataset(result, storage_options)
    background = ds["background"].data
    if scene is None:
        if "subtracted" not in ds:
            msg = "result has no 'subtracted' map: pass scene= (the image)"
            raise InputError(msg, params="scene")
        scene = ds["subtracted"].data + background
    scene = _data(scene)
    if tuple(np.shape(scene)) != tuple(background.shape):
        msg = (
            f"scene has shape {tuple(np.shape(scene))} but the background has "
            f"shape {tuple(background.shape)}"
        )
        raise InputError(msg, params="scene")
    mask = ds["mask"].data if "mask" in ds else None
    return compute_metrics(
        scene,
        background,
        mask,
        truth=_data(truth),
        sky=_data(sky),
        catalogue=catalogue,
        return_points=return_points,
    )


def to_fits(
    result: Any,
    path: str | os.PathLike,
    *,
    overwrite: bool = False,
    storage_options: dict | None = None,
) -> Path:
    """Write a result's maps to one FITS file, keeping the input's header.

    Parameters
    ----------
    result : xarray.Dataset or str
        What :func:`tilesky.estimate_background` returned, or the path/URL
        of a run store.
    path : str or os.PathLike
        The FITS file to write.
    overwrite : bool
        Replace an existing file.
    storage_options : dict, optional
        fsspec options for a run store given by URL.

    Returns
    -------
    pathlib.Path
        ``path``: an empty PRIMARY HDU with the input's observation keywords
        and tilesky's provenance (``TSKYVER``, ``TSKYCFG``, HISTORY), then
        the image extensions ``BACKGROUND``, ``RMS``, ``MASK`` (uint8, 1 =
        masked) and ``SUBTRACTED`` that the result has, each with the
        observation keywords, the input's celestial WCS and ``TSKYVAR``.

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> from astropy.io import fits
    >>> from tilesky import estimate_background
    >>> ds = estimate_background(np.random.default_rng(0).normal(size=(120, 150)))
    >>> out = to_fits(ds, os.path.join(tempfile.mkdtemp(), "sky.fits"))
    >>> [h.name for h in fits.open(out)]
    ['PRIMARY', 'BACKGROUND', 'RMS', 'MASK', 'SUBTRACTED']
    """
    from astropy.io import fits

    from tilesky.export import map_header
    from tilesky.io._products import is_structural

    ds = _dataset(result, storage_options)
    target = Path(path)
    if target.exists() and not overwrite:
        msg = f"{str(target)!r} already exists; pass overwrite=True to replace it"
        raise OutputExistsError(msg, params="overwrite")
    attrs = dict(ds.attrs)
    attrs.setdefault("tilesky_version", _version())
    shape = ds["background"].shape
    primary = fits.PrimaryHDU()
    for card in map_header(attrs, "background", shape).cards:
        if not (is_structural(card.keyword) or card.keyword == "TSKYVAR"):
            primary.header.append(card, end=True)
    hdus = [primary]
    for name, extname in EXTNAMES.items():
        if name not in ds:
            continue
        var = ds[name]
        data = np.asarray(var.values)
        data = data.astype(np.uint8 if data.dtype == bool else ">f4")
        header = fits.Header(
            [c for c in map_header(attrs, name, var.shape).cards
             if not is_structural(c.keyword)]
        )  # fmt: skip
        hdus.append(fits.ImageHDU(data, header=header, name=extname))
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".partial")
    fits.HDUList(hdus).writeto(tmp, overwrite=True)
    # Only a complete file gets the final name.
    tmp.replace(target)
    return target


def _version() -> str:
    from tilesky._version import __version__

    return __version__

"""The SExtractor run mode: ``tilesky run --preset sextractor``.

A run of this mode gives the background and RMS maps of SExtractor (as
``sep.Background(data, mask, bw, bh, fw, fh, fthresh)`` computes them; see
:func:`tilesky.sextractor_background`) in place of tilesky's pipeline, for
pipelines migrating from SExtractor or SEP that want the same numbers. There
is no ring median, no source mask and no rounds: SExtractor clips sources in
each mesh box itself. The inputs are read as for every run (FITS, Zarr, URLs;
a survey product's ``DQ`` flags and zero weight are no coverage; a user mask
is left out of the statistics), and the outputs are those of every run store
(``background``, ``background_rms``, ``mask``, which holds the user's mask,
``subtracted``), so ``tilesky report`` and ``tilesky export`` read it.

Parameters (``--set KEY=VALUE``): ``box_size`` (SExtractor's ``BACK_SIZE``,
default 64), ``filter_size`` (``BACK_FILTERSIZE``, default 3),
``filter_threshold`` (``BACK_FILTERTHRESH``, default 0) and ``dq_bits``.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, replace
from typing import Any

import dask.array as da
import numpy as np
import xarray as xr

from tilesky.errors import ConfigError

__all__ = ["PRESET", "SExtractorParams", "estimate_sextractor", "run_sextractor"]

#: The preset name that selects this mode.
PRESET = "sextractor"


@dataclass(frozen=True)
class SExtractorParams:
    """The SExtractor mode's parameters.

    Parameters
    ----------
    box_size : (int, int)
        Mesh box ``(bh, bw)``, SExtractor's ``BACK_SIZE``.
    filter_size : (int, int)
        Median filter in meshes ``(fh, fw)``, ``BACK_FILTERSIZE``.
    filter_threshold : float
        ``BACK_FILTERTHRESH``, SEP's ``fthresh``.
    dq_bits : int, optional
        DQ bits that make a survey product's pixel unusable (as
        :class:`tilesky.Config`'s ``dq_bits``).
    """

    box_size: tuple[int, int] = (64, 64)
    filter_size: tuple[int, int] = (3, 3)
    filter_threshold: float = 0.0
    dq_bits: int | None = None

    def __post_init__(self) -> None:
        from tilesky.config import Config
        from tilesky.sextractor import _pair

        object.__setattr__(self, "box_size", _pair("box_size", self.box_size))
        object.__setattr__(self, "filter_size", _pair("filter_size", self.filter_size))
        value = self.filter_threshold
        if isinstance(value, bool) or not isinstance(value, int | float):
            msg = f"filter_threshold must be a number, got {value!r}"
            raise ConfigError(msg)
        if not np.isfinite(value):
            msg = f"filter_threshold must be finite, got {value!r}"
            raise ConfigError(msg)
        Config(dq_bits=self.dq_bits)  # the same check as every run's

    @classmethod
    def from_overrides(cls, pairs: Iterable[str]) -> SExtractorParams:
        """The defaults with ``key=value`` overrides (values in TOML syntax).

        Parameters
        ----------
        pairs : iterable of str
            ``box_size=32``, ``filter_size=[3, 5]``, ``filter_threshold=0.1``,
            ``dq_bits=1``.

        Returns
        -------
        SExtractorParams
            The validated parameters.
        """
        from tilesky._config_values import _parse_value

        known = {"box_size", "filter_size", "filter_threshold", "dq_bits"}
        changes: dict[str, Any] = {}
        for pair in pairs:
            key, sep, raw = pair.partition("=")
            key = key.strip()
            if not sep or key not in known:
                msg = (
                    f"the sextractor preset takes {', '.join(sorted(known))} "
                    f"as key=value, got {pair!r}"
                )
                raise ConfigError(msg, params="overrides")
            value = _parse_value(raw.strip())
            changes[key] = tuple(value) if isinstance(value, list) else value
        return replace(cls(), **changes)

    def to_dict(self) -> dict[str, Any]:
        """The parameters as stored in a run's ``config`` attribute.

        Returns
        -------
        dict
            ``{"mode": "sextractor", "sextractor": {...}}``.
        """
        plain = {
            k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()
        }
        return {"mode": PRESET, "sextractor": plain}


def _opening(params: SExtractorParams):
    """A configuration that opens an input in chunks of whole mesh boxes.

    Only its box sizes (the chunk multiple, the smallest image) and
    ``dq_bits`` matter to :func:`tilesky._inputs.prepare`.
    """
    from tilesky.config import Config, MeshConfig, RingConfig

    mesh = MeshConfig(box_size=params.box_size)
    return Config(
        ring=RingConfig(radius_in=0, width=1),
        first_mesh=mesh,
        final_mesh=mesh,
        final_method="mesh",
        noise_mode="global",
        dq_bits=params.dq_bits,
    )


def _maps(prepared, params: SExtractorParams) -> dict[str, Any]:
    from tilesky.sextractor import sextractor_background

    scene = prepared.scene
    user = prepared.user_mask
    back, rms = sextractor_background(
        scene,
        user,
        box_size=params.box_size,
        filter_size=params.filter_size,
        filter_threshold=params.filter_threshold,
    )
    lib = da if isinstance(back, da.Array) else np
    if user is None:
        mask = lib.zeros(scene.shape, dtype=bool)
        if lib is da:
            mask = mask.rechunk(back.chunks)
    else:
        mask = user.astype(bool)
    return {
        "background": back,
        "background_rms": rms,
        "mask": mask,
        "subtracted": (scene.astype(np.float32) - back).astype(np.float32),
    }


def _prepare(source, params, *, whole, chunks, plan_tiles=False, **opened):
    from tilesky._inputs import prepare
    from tilesky.cluster import thread_count

    return prepare(
        source,
        _opening(params),
        whole=whole,
        chunks=chunks,
        plan_tiles=plan_tiles,
        threads=thread_count() if plan_tiles else 1,
        **opened,
    )


def estimate_sextractor(
    data: Any,
    params: SExtractorParams | None = None,
    *,
    chunks: int | tuple[int, int] | None = None,
    mask: Any = None,
    weight: Any = None,
    variable: str | None = None,
    hdu: int | str | None = None,
    storage_options: dict | None = None,
) -> xr.Dataset:
    """SExtractor's background of an image, as a run's dataset.

    Parameters
    ----------
    data : numpy.ndarray, dask.array.Array, xarray.DataArray or str
        The image or its path/URL, as for :func:`tilesky.estimate_background`;
        a numpy array without ``chunks`` is computed whole.
    params : SExtractorParams, optional
        Box, filter and threshold (default: SExtractor's defaults).
    chunks, mask, weight, variable, hdu, storage_options
        As for :func:`tilesky.estimate_background`.

    Returns
    -------
    xarray.Dataset
        ``background``, ``background_rms``, ``mask`` and ``subtracted`` on
        ``(y, x)``; attributes ``config`` and ``input``.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> ds = estimate_sextractor(rng.normal(5, 1, (256, 256)))
    >>> bool(abs(float(ds.background.mean()) - 5) < 0.1)
    True
    """
    params = params if params is not None else SExtractorParams()
    prepared = _prepare(
        data,
        params,
        whole=isinstance(data, np.ndarray) and chunks is None,
        chunks=chunks,
        mask=mask,
        weight=weight,
        variable=variable,
        hdu=hdu,
        storage_options=storage_options,
    )
    maps = _maps(prepared, params)
    attrs = {"config": params.to_dict(), "input": prepared.image.identity}
    if prepared.image.header:
        attrs["wcs_header"] = prepared.image.header
    ds = xr.Dataset({k: (("y", "x"), v) for k, v in maps.items()}, attrs=attrs)
    return ds.compute() if isinstance(data, np.ndarray) else ds


def run_sextractor(
    source: Any,
    out: str,
    params: SExtractorParams | None = None,
    *,
    chunks: int | tuple[int, int] | None = None,
    overwrite: bool = False,
    resume: bool = False,
    variable: str | None = None,
    hdu: int | str | None = None,
    mask: Any = None,
    weight: Any = None,
    storage_options: dict | None = None,
    out_storage_options: dict | None = None,
):
    """The SExtractor mode from ``source`` into the run store ``out``, tiled.

    Parameters
    ----------
    source : str, numpy.ndarray, dask.array.Array or xarray.DataArray
        The image, as for :func:`tilesky.run_to_store`.
    out : str
        Path or fsspec URL of the run store.
    params : SExtractorParams, optional
        Box, filter and threshold (default: SExtractor's defaults).
    chunks, overwrite, resume, variable, hdu, mask, weight : optional
        As for :func:`tilesky.run_to_store`.
    storage_options, out_storage_options : dict, optional
        fsspec options for the input and for ``out``.

    Returns
    -------
    tilesky._dispatch.RunResult
        The store, its status, outputs and metrics.
    """
    from tilesky._dispatch import RunResult
    from tilesky._inputs import refuse_overlap, simulation_reference
    from tilesky._trust import trust_check
    from tilesky.metrics import compute_metrics
    from tilesky.store import RunStore

    params = params if params is not None else SExtractorParams()
    start = time.perf_counter()
    prepared = _prepare(
        source,
        params,
        whole=False,
        chunks=chunks,
        plan_tiles=chunks is None,
        mask=mask,
        weight=weight,
        variable=variable,
        hdu=hdu,
        storage_options=storage_options,
    )
    for what, given in (("input", source), ("mask", mask), ("weight", weight)):
        refuse_overlap(out, out_storage_options, what, given, storage_options)
    store = RunStore(out, storage_options=out_storage_options)
    attrs = {"config": params.to_dict(), "input": prepared.image.identity}
    if prepared.image.header:
        attrs["wcs_header"] = prepared.image.header
    if not store.create(overwrite=overwrite, resume=resume, attrs=attrs):
        return RunResult(url=str(out), computed=False)
    maps = _maps(prepared, params)
    items = [(name, arr, ("y", "x"), None) for name, arr in maps.items()]
    try:
        stored = store.write_arrays(items)
        store.drain()
    except Exception:
        store.drain(raise_errors=False)
        if store.blocks_written == 0 and not resume:
            store.discard()
        raise
    outputs = {item[0]: arr for item, arr in zip(items, stored, strict=True)}
    timings = {"sextractor": round(time.perf_counter() - start, 4)}
    reference = simulation_reference(
        source, chunks=prepared.scene.chunks, storage_options=storage_options
    )
    metrics, points = compute_metrics(
        prepared.scene,
        outputs["background"],
        outputs["mask"],
        truth=reference.get("truth"),
        sky=reference.get("sky"),
        catalogue=reference.get("catalogue"),
        return_points=True,
    )
    timings["total"] = round(time.perf_counter() - start, 4)
    store.write_json("metrics.json", metrics)
    blocks = {"written": store.blocks_written, "skipped": store.blocks_skipped}
    store.finish(
        {
            "noise": {},
            "noise_model": {"model": PRESET},
            "timings": timings,
            "metrics": metrics,
            "blocks": blocks,
            "trust": trust_check(metrics),
        }
    )
    return RunResult(
        url=str(out),
        computed=True,
        outputs={n: store.stored(n, a.chunks) for n, a in maps.items()},
        metrics=metrics,
        points=points,
        timings=timings,
        blocks_written=blocks["written"],
        blocks_skipped=blocks["skipped"],
    )

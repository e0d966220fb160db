"""The public layer: the lazy Dataset of a scene, and its Zarr writer."""

from __future__ import annotations

import warnings
from dataclasses import asdict
from typing import Any

import dask.array as da
import fsspec
import numpy as np
import xarray as xr
from dask.base import tokenize
from dask.highlevelgraph import HighLevelGraph

from tilesky._version import __version__
from tilesky.simulate._model import _draw_catalogues, _SceneModel, _sigma_profile
from tilesky.simulate._render import _render_tile
from tilesky.simulate._spec import (
    GENERATOR_VERSION,
    NOISE_BLOCK,
    _make_spec,
    _SceneSpec,
)


def simulate_scene(
    shape: tuple[int, int] = (2000, 2000),
    *,
    seed: int = 4,
    chunks: Any = 1000,
    noise_sigma: float = 0.1,
    n_sources: int | None = None,
    n_blemishes: int | None = None,
    gradient: tuple[float, float] = (1.0, 0.25),
    blemish_width_range: tuple[float, float] = (30.0, 130.0),
    blemish_amplitude_range: tuple[float, float] = (0.0, 1.0),
    blemish_radius: float = 2900.0,
    blemish_taper: float = 500.0,
    source_flux_range: tuple[float, float] = (0.0, 50.0),
    source_stddev_range: tuple[float, float] = (0.0, 5.0),
    source_edge: float = 2.0,
    source_truncate: float = 8.0,
    depth_variation: float = 1.0,
    blank_fraction: float = 0.0,
    blank_angle: float = 20.0,
) -> xr.Dataset:
    """Make the notebook's pathological scene as a lazy, chunk-independent Dataset.

    Parameters
    ----------
    shape : tuple of int
        Image size ``(ny, nx)``.
    seed : int
        Seed in ``[0, 2**32)``; pixels depend only on ``seed``, ``shape`` and the
        scene parameters, never on ``chunks``.
    chunks : int, tuple or "auto"
        Dask chunks of the image variables (anything `dask.array.normalize_chunks`
        accepts).
    noise_sigma : float
        Standard deviation of the Gaussian pixel noise (at the left edge when
        ``depth_variation`` is not 1).
    n_sources, n_blemishes : int, optional
        Counts; by default the notebook's densities (5000 sources and 16
        blemishes per 2000 x 2000 pixels) rounded to the nearest integer.
    gradient : tuple of float
        ``(gy, gx)``: the sky gets ``gy * row / ny + gx * col / nx``.
    blemish_width_range, blemish_amplitude_range : tuple of float
        Uniform ranges of the sinc width ``w`` (>= 1 px) and amplitude ``a``;
        a blemish adds ``a * np.sinc(r / (w * pi))``, i.e. ``a sin(r/w) / (r/w)``.
    blemish_radius, blemish_taper : float
        A blemish is exact out to ``blemish_radius`` px, then tapered to zero
        (quintic smoothstep) at ``blemish_radius + blemish_taper`` px; each
        below 1e6. The defaults (2900 + 500) leave every blemish untapered on
        a 2000 x 2000 image, whose largest centre-pixel distance is 2829 px.
    source_flux_range, source_stddev_range : tuple of float
        Uniform ranges of the source total flux and of ``x_stddev``/``y_stddev``.
    source_edge : float
        Source centres are kept this many pixels from the image edges.
    source_truncate : float
        A source is evaluated on pixels within a square of half-width
        ``max(source_truncate * max(x_stddev, y_stddev), 1.5)`` px.
    depth_variation : float
        Noise sigma grows smoothly (geometrically) from ``noise_sigma`` at the
        left column to ``depth_variation * noise_sigma`` at the right one.
    blank_fraction : float
        Fraction of the image set to NaN in ``scene`` and ``sky``: outside a
        rectangle of the image's aspect, centred and rotated by ``blank_angle``
        degrees, scaled so that the blank area is this fraction (0: none).
    blank_angle : float
        Tilt of the footprint rectangle, in degrees.

    Returns
    -------
    xarray.Dataset
        Lazy float32 ``scene`` (sky + sources), ``truth`` (gradient +
        blemishes, never blanked) and ``sky`` (truth + noise) on ``(y, x)``;
        ``noise_rms`` on ``(y, x)`` when ``depth_variation != 1``; the source
        catalogue (``x_mean``, ``y_mean``, ``flux``, ``x_stddev``, ``y_stddev``,
        ``theta``, ``re``) on ``source`` and the blemish catalogue
        (``blemish_x``, ``blemish_y``, ``blemish_width``, ``blemish_amplitude``)
        on ``blemish``; the parameters in ``attrs``.

    Notes
    -----
    Blemishes come from ``numpy.random.RandomState(seed)`` in the notebook's
    draw order, so at the notebook's size and count they are the notebook's.
    Sources come from their own ``SeedSequence(seed)`` stream; noise from a
    fixed grid of ``NOISE_BLOCK``-square blocks, each seeded by
    ``(seed, block_y, block_x)``. Every tile evaluates sources and blemishes on
    global pixel coordinates and sums them in catalogue order in float64, so
    pixels are bit-identical for any chunking. With the defaults at 2000 x 2000
    every blemish covers the whole image untapered, as in the notebook.

    Examples
    --------
    >>> from tilesky.simulate import simulate_scene
    >>> ds = simulate_scene((200, 300), seed=1, chunks=100)
    >>> ds["scene"].shape, ds.sizes["source"], ds.sizes["blemish"]
    ((200, 300), 75, 0)
    """
    spec = _make_spec(
        shape=shape,
        seed=seed,
        noise_sigma=noise_sigma,
        n_sources=n_sources,
        n_blemishes=n_blemishes,
        gradient=gradient,
        blemish_width_range=blemish_width_range,
        blemish_amplitude_range=blemish_amplitude_range,
        blemish_radius=blemish_radius,
        blemish_taper=blemish_taper,
        source_flux_range=source_flux_range,
        source_stddev_range=source_stddev_range,
        source_edge=source_edge,
        source_truncate=source_truncate,
        depth_variation=depth_variation,
        blank_fraction=blank_fraction,
        blank_angle=blank_angle,
    )
    norm = da.core.normalize_chunks(chunks, spec.shape, dtype=np.float32)
    stack = _tile_stack(spec, norm)
    blemishes, sources = _draw_catalogues(spec)
    data_vars = _image_variables(spec, norm, stack)
    data_vars.update({key: (("source",), val) for key, val in sources.items()})
    data_vars.update({key: (("blemish",), val) for key, val in blemishes.items()})
    return xr.Dataset(data_vars, attrs=_scene_attrs(spec))


def _tile_stack(spec: _SceneSpec, norm: tuple) -> da.Array:
    """Lazy float32 (3, ny, nx) stack (scene, truth, sky), one task per tile."""
    token = tokenize(spec, norm, GENERATOR_VERSION)
    name, model_key = f"simulate-scene-{token}", f"simulate-model-{token}"
    # Workers rebuild the catalogue from the seed: the graph stays small
    # however many sources there are.
    dsk: dict[Any, Any] = {model_key: (_SceneModel, spec)}
    ybounds = np.cumsum((0, *norm[0]))
    xbounds = np.cumsum((0, *norm[1]))
    for i in range(len(norm[0])):
        for j in range(len(norm[1])):
            dsk[(name, 0, i, j)] = (
                _render_tile,
                model_key,
                int(ybounds[i]),
                int(ybounds[i + 1]),
                int(xbounds[j]),
                int(xbounds[j + 1]),
            )
    graph = HighLevelGraph.from_collections(name, dsk, dependencies=())
    return da.Array(graph, name, ((3,), *norm), dtype=np.float32)


def _image_variables(spec: _SceneSpec, norm: tuple, stack: da.Array) -> dict:
    """The (y, x) variables: scene, truth, sky and, with varying depth, noise_rms."""
    yx = ("y", "x")
    data_vars: dict[str, Any] = {
        "scene": (yx, stack[0], {"long_name": "sky + noise + sources"}),
        "truth": (yx, stack[1], {"long_name": "noiseless sky: gradient + blemishes"}),
        "sky": (yx, stack[2], {"long_name": "noisy sky without sources"}),
    }
    if spec.depth_variation != 1.0:
        row = da.from_array(_sigma_profile(spec).astype(np.float32), chunks=(norm[1],))
        rms = da.broadcast_to(row, spec.shape, chunks=norm)
        data_vars["noise_rms"] = (yx, rms, {"long_name": "true noise sigma"})
    return data_vars


def _scene_attrs(spec: _SceneSpec) -> dict[str, Any]:
    """What the dataset's attrs record: its kind, its generator and its spec."""
    return {
        "tilesky_kind": "simulation",
        "tilesky_default_variable": "scene",
        "generator": "tilesky.simulate",
        "generator_version": GENERATOR_VERSION,
        "tilesky_version": __version__,
        "noise_block": NOISE_BLOCK,
        **{k: list(v) if isinstance(v, tuple) else v for k, v in asdict(spec).items()},
    }


def _check_target(out: str, storage_options: dict | None, overwrite: bool) -> None:
    fs, path = fsspec.core.url_to_fs(out, **(storage_options or {}))
    if not fs.exists(path):
        return
    entries = fs.ls(path, detail=False) if fs.isdir(path) else [path]
    if not entries:
        return
    is_zarr = any(
        str(e).rstrip("/").rsplit("/", 1)[-1] in ("zarr.json", ".zgroup")
        for e in entries
    )
    if not overwrite:
        msg = f"out={out!r} already exists; pass overwrite=True to replace it"
        raise FileExistsError(msg)
    if not is_zarr:
        msg = (
            f"out={out!r} exists and is not a Zarr store; refusing to overwrite it, "
            "choose another path"
        )
        raise FileExistsError(msg)


def write_simulation(
    out: str,
    *,
    shape: tuple[int, int] = (2000, 2000),
    seed: int = 4,
    chunks: Any = 1000,
    storage_options: dict | None = None,
    overwrite: bool = False,
    **scene_kwargs: Any,
) -> xr.Dataset:
    """Write a simulated scene as one Zarr (v3) group, tile by tile.

    Parameters
    ----------
    out : str or path
        Local path or fsspec URL (``s3://``, ``memory://``...) of the group.
    shape, seed, chunks
        As in `simulate_scene`; ``chunks`` become the Zarr chunks and must be
        regular (all equal but the last).
    storage_options : dict, optional
        Passed to fsspec for URLs.
    overwrite : bool
        Replace an existing Zarr store at ``out``; otherwise an existing
        ``out`` raises `FileExistsError`.
    **scene_kwargs
        Any other keyword of `simulate_scene`.

    Returns
    -------
    xarray.Dataset
        The written group, reopened lazily with `xarray.open_zarr`.

    Notes
    -----
    Pixels are computed with the current dask scheduler (threads by default, or
    an active distributed client); no tile is held longer than its write.
    The group attrs carry ``tilesky_kind = "simulation"`` and
    ``tilesky_default_variable = "scene"``.

    Examples
    --------
    >>> import tempfile, os
    >>> from tilesky.simulate import write_simulation
    >>> path = os.path.join(tempfile.mkdtemp(), "sim.zarr")
    >>> ds = write_simulation(path, shape=(128, 128), seed=0, chunks=64)
    >>> ds.attrs["tilesky_kind"], ds["scene"].dtype
    ('simulation', dtype('float32'))
    """
    out = str(out)
    _check_target(out, storage_options, overwrite)
    ds = simulate_scene(shape, seed=seed, chunks=chunks, **scene_kwargs)
    with warnings.catch_warnings():
        # Consolidated metadata is an extension in Zarr v3; writing it lets a
        # plain xr.open_zarr(out) open the group without a fallback warning.
        warnings.filterwarnings("ignore", message="Consolidated metadata")
        ds.to_zarr(
            out,
            mode="w" if overwrite else "w-",
            zarr_format=3,
            consolidated=True,
            compute=True,
            storage_options=storage_options,
        )
    return xr.open_zarr(out, storage_options=storage_options)

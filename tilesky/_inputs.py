"""What a run reads: the image, the user's mask and weight map, and any truth.

:func:`prepare` opens the image with chunks aligned to the mesh boxes (or
whole, for the reference path), checks its size against the
configuration, and applies the weight map and the user's mask, so that both
entry points of :mod:`tilesky._dispatch` hand the pipeline the same inputs.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from typing import Any

import dask
import dask.array as da
import fsspec
import numpy as np
import xarray as xr

from tilesky.config import Config
from tilesky.errors import StoreError
from tilesky.io import (
    ImageInput,
    InputError,
    is_url,
    open_image,
    run_tiles,
    strip_credentials,
)
from tilesky.io._zarr import quiet_foreign_objects
from tilesky.kernels._ring import ring_depth

__all__ = [
    "Prepared",
    "chunk_multiple",
    "prepare",
    "refuse_overlap",
    "simulation_reference",
]


@dataclass(frozen=True)
class Prepared:
    """The inputs of one run, ready for the pipeline.

    ``scene`` is the image (numpy for the whole-image path, dask otherwise)
    with zero-weight pixels set to NaN; ``user_mask`` is True where the user
    asked pixels to be ignored (or None); ``weight`` the weight map on the
    image's grid (or None); ``image`` is the opened input (identity,
    header, coordinates).
    """

    image: ImageInput
    scene: Any
    user_mask: Any
    weight: Any = None

    def pixel_arrays(self) -> dict[str, Any]:
        """The arrays whose pixels a run depends on: image, weight, mask.

        Returns
        -------
        dict of str to array
            ``image`` (as read, before the weight blanks pixels), and
            ``weight`` and ``mask`` when the run has them.
        """
        arrays = {"image": self.image.data}
        if self.weight is not None:
            arrays["weight"] = self.weight
        if self.user_mask is not None:
            arrays["mask"] = self.user_mask
        return arrays


def prepare(
    source: Any,
    cfg: Config,
    *,
    whole: bool = False,
    chunks: Any = None,
    plan_tiles: bool = False,
    mask: Any = None,
    weight: Any = None,
    variable: str | None = None,
    hdu: int | str | None = None,
    storage_options: dict | None = None,
    threads: int = 1,
) -> Prepared:
    """Open ``source`` and its mask and weight map for a run of ``cfg``.

    ``whole``: numpy arrays for the whole-image backend. ``plan_tiles``
    (with ``chunks=None``): tiles of :func:`tilesky.io.run_tiles` for
    ``threads`` worker threads.
    """
    opened = {
        "variable": variable,
        "hdu": hdu,
        "storage_options": storage_options,
        "dq_bits": cfg.dq_bits,
    }
    image = _open_sized(source, cfg, chunks=chunks, whole=whole, **opened)
    if plan_tiles and chunks is None:
        tiles = run_tiles(
            image.data.shape,
            image.data.chunksize,
            chunk_multiple(image.data.shape, cfg),
            threads=threads,
        )
        if tiles != image.data.chunksize:
            # The first opening showed the file's warnings (astropy's header
            # fixes...); once per file is enough.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                image = _open_sized(source, cfg, chunks=tiles, **opened)
    # The reader's conversion (dtype, masked pixels to NaN), in memory.
    scene = np.asarray(image.data.compute()) if whole else image.data
    tiled = not whole
    if weight is None:
        # A survey product's own WHT (or 1/ERR**2), unless the caller gave one.
        weight = image.weight
    elif image.weight is not None:
        image.identity["products"]["weight"] = "weight= (the product's ignored)"
    weight_map = _aux_map(weight, image, "weight", storage_options, tiled=tiled)
    scene = _apply_weight(scene, weight_map)
    user_mask = _as_mask(mask, image, tiled=tiled, storage_options=storage_options)
    return Prepared(image, scene, user_mask, weight_map)


def _check_size(shape: tuple[int, ...], cfg: Config) -> None:
    """Refuse an image smaller than the ring footprint or a mesh box.

    Reflect padding would still give numbers, but an annulus wider than the
    image is filled with mirrored copies of the pixels (and sources) it is
    meant to exclude, and a mesh without one whole box has no statistics:
    the background would be silently wrong.
    """
    ring = 2 * ring_depth(cfg.ring.radius_in, cfg.ring.width) + 1
    ny, nx = (int(n) for n in shape)
    causes = []
    if ny < ring or nx < ring:
        causes.append(
            f"ring-median footprint {ring}x{ring} from "
            f"ring.radius_in={cfg.ring.radius_in} and ring.width={cfg.ring.width}"
        )
    for name in ("first_mesh", "final_mesh"):
        box = getattr(cfg, name).box_size
        if ny < box[0] or nx < box[1]:
            causes.append(f"{name}.box_size={box}")
    if not causes:
        return
    msg = (
        f"the image ({ny}, {nx}) is too small for this configuration: "
        f"{'; '.join(causes)} do not fit in it; give a larger image or smaller "
        "settings, e.g. ring.radius_in=4 ring.width=2 first_mesh.box_size=4 "
        "final_mesh.box_size=4"
    )
    raise InputError(msg)


def chunk_multiple(shape: tuple[int, ...], cfg: Config) -> tuple[int, int]:
    """Chunk multiple for an image of ``shape``: the boxes' lcm, capped at it.

    An axis shorter than the lcm is one chunk, which holds whole boxes of
    every grid (the last one partial, as the monolithic rule has it).
    """
    return tuple(min(b, int(n)) for b, n in zip(cfg.chunk_multiple, shape, strict=True))


def _open_sized(
    source: Any, cfg: Config, *, whole: bool = False, **kwargs: Any
) -> ImageInput:
    """:func:`open_image` with chunks aligned to the mesh boxes, size-checked.

    The chunk multiple (the lcm of the boxes) is a tiling constraint: the
    whole-image path reads the image as it is, and an image smaller than
    the lcm is one tile. Only the sizes the user set (ring, boxes) refuse
    an image, by :func:`_check_size`.
    """
    if whole:
        image = open_image(source, box_size=1, **kwargs)
        _check_size(image.data.shape, cfg)
        return image
    try:
        image = open_image(source, box_size=cfg.chunk_multiple, **kwargs)
    except InputError:
        # open_image refuses an image smaller than the chunk multiple, a
        # size the user never chose: find the image's shape, refuse it by
        # the ring and box sizes if they are the cause, else open it as one
        # tile along its short axes. Only such images pay this reopen.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                shape = open_image(source, box_size=1, **kwargs).data.shape
            except InputError:
                shape = None
        if shape is None or len(shape) != 2 or min(shape) == 0:
            raise
        _check_size(shape, cfg)
        box = chunk_multiple(shape, cfg)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            image = open_image(source, box_size=box, **kwargs)
    _check_size(image.data.shape, cfg)
    return image


def _location(path: Any, storage_options: dict | None) -> tuple[str, str] | None:
    """``(protocol, normalized path)`` of a path or URL; None for arrays."""
    if not isinstance(path, (str, os.PathLike)):
        return None
    text = os.fspath(path)
    if is_url(text):
        try:
            fs, where = fsspec.core.url_to_fs(text, **(storage_options or {}))
        except Exception:  # opening it will say what is wrong
            return None
        protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
        if protocol not in ("file", "local"):
            return (protocol, "/" + where.strip("/"))
        text = where
    return ("file", os.path.realpath(os.path.expanduser(text)))


def refuse_overlap(out, out_options, what: str, given, in_options) -> None:
    """Refuse an output that is, or holds, an input: creating it deletes that."""
    target, source = _location(out, out_options), _location(given, in_options)
    if target is None or source is None or target[0] != source[0]:
        return
    if target[0] != "file" and (out_options or {}) != (in_options or {}):
        return  # perhaps another endpoint: not provably the same object
    inside = source[1].startswith(target[1].rstrip("/") + "/")
    if source[1] == target[1] or inside:
        relation = "is" if source[1] == target[1] else "contains"
        msg = (
            f"output {strip_credentials(str(out))!r} {relation} the {what} "
            f"{strip_credentials(os.fspath(given))!r}; writing the run there would "
            "delete it: choose another output path"
        )
        raise StoreError(msg)


def _as_mask(mask, image: ImageInput, *, tiled: bool, storage_options=None):
    arr = _aux_map(mask, image, "mask", storage_options, tiled=tiled)
    if arr is None:
        return None
    if arr.dtype.kind not in "biuf":
        msg = f"mask must be boolean or numeric, got dtype {arr.dtype}"
        raise InputError(msg)
    if arr.dtype != bool:
        # A numeric mask: non-zero means masked; NaN counts as masked too.
        arr = (arr != 0) | (arr != arr)
    return arr


def _aux_map(source, image: ImageInput, what: str, storage_options, *, tiled: bool):
    """Open a mask or weight map given as an array or a path, shaped like the image."""
    if source is None:
        return None
    if isinstance(source, (str, os.PathLike)):
        # A mask may be stored as booleans; open_image refuses those as images.
        aux = open_image(
            os.fspath(source),
            chunks=image.data.chunksize,
            storage_options=storage_options,
            boolean=what == "mask",
        ).data
    elif isinstance(source, xr.DataArray):
        aux = source.data
    elif isinstance(source, da.Array):
        aux = source
    else:
        aux = np.asarray(source)
    if aux.dtype.kind not in "biuf":
        msg = (
            f"{what} must be boolean or numeric, got dtype {aux.dtype}; "
            f"give a {what} of numbers"
        )
        raise InputError(msg)
    if tuple(aux.shape) != tuple(image.data.shape):
        msg = (
            f"{what} has shape {tuple(aux.shape)} but the image has shape "
            f"{tuple(image.data.shape)}; give a {what} of the image's shape"
        )
        raise InputError(msg)
    if tiled:
        if isinstance(aux, da.Array):
            return aux.rechunk(image.data.chunks)
        return da.from_array(np.asarray(aux), chunks=image.data.chunks)
    return np.asarray(aux)


def _apply_weight(scene, weight):
    """Pixels of zero (or non-finite) weight are no coverage."""
    if weight is None:
        return scene
    lib = da if isinstance(scene, da.Array) else np
    with np.errstate(invalid="ignore"):
        covered = lib.isfinite(weight) & (weight > 0)
    return lib.where(covered, scene, np.float32(np.nan)).astype(scene.dtype)


def simulation_reference(source: Any, *, chunks=None, storage_options=None) -> dict:
    """Truth, noisy sky and source catalogue when ``source`` is a simulation.

    Returns an empty dict for any other input (real data have no truth).
    """
    if isinstance(source, xr.Dataset):
        ds = source
    elif isinstance(source, str):
        try:
            kw = {"storage_options": storage_options} if storage_options else {}
            with quiet_foreign_objects():
                ds = xr.open_zarr(source, consolidated=False, **kw)
        except Exception:  # not a Zarr group: no reference
            return {}
    else:
        return {}
    if ds.attrs.get("tilesky_kind") != "simulation":
        return {}
    ref: dict[str, Any] = {}
    for name in ("truth", "sky"):
        if name in ds:
            arr = ds[name].data
            if chunks is not None and isinstance(arr, da.Array):
                arr = arr.rechunk(chunks)
            ref[name] = arr
    cols = ("x_mean", "y_mean", "flux", "re")
    if all(c in ds for c in cols):
        # One read for the four columns: each ``.values`` would be a
        # computation of its own (a scheduler round trip on a cluster).
        columns = dask.compute(*(ds[c].data for c in cols), scheduler="sync")
        ref["catalogue"] = {
            c: np.asarray(v) for c, v in zip(cols, columns, strict=True)
        }
    ref["noise_sigma"] = ds.attrs.get("noise_sigma")
    return ref

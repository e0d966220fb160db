"""The public entry point of the metrics: checks, one reduction, the summary."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import numpy as np

from tilesky.metrics._block import block_state
from tilesky.metrics._catalogue import Catalogue, read_catalogue
from tilesky.metrics._graph import INPUTS, is_dask, metrics_graph
from tilesky.metrics._states import MetricsState, Spec
from tilesky.metrics._summary import summarize

__all__ = ["compute_metrics"]

log = logging.getLogger("tilesky")


def _unwrap(value):
    data = getattr(value, "data", None)
    if data is not None and hasattr(value, "dims"):
        return data
    return value


def _input_arrays(scene, background, mask, truth, sky):
    """The given inputs by name (xarray unwrapped), checked, and their shape."""
    for name, value in (("scene", scene), ("background", background)):
        if value is None:
            msg = f"{name} is required (a 2-D array), got None"
            raise ValueError(msg)
    arrays = {
        n: _unwrap(v)
        for n, v in zip(INPUTS, (scene, background, mask, truth, sky), strict=True)
        if v is not None
    }
    shape = tuple(int(s) for s in np.shape(arrays["background"]))
    for name, arr in arrays.items():
        if np.ndim(arr) != 2 or tuple(np.shape(arr)) != shape or 0 in shape:
            msg = (
                f"{name} must be a non-empty 2-D array shaped like background "
                f"{shape}, got shape {tuple(np.shape(arr))}; pass matching arrays"
            )
            raise ValueError(msg)
    return arrays, shape


def _checked_options(widths, edge, bias_box_size, noise_sigma, n_random):
    """The widths as a tuple of int, once every option is checked."""
    widths = tuple(int(w) for w in widths)
    if any(w < 1 for w in widths):
        msg = f"widths must be positive integers, got {widths}"
        raise ValueError(msg)
    for name, value, low in (("edge", edge, 0), ("bias_box_size", bias_box_size, 2)):
        if int(value) != value or value < low:
            msg = f"{name} must be an integer >= {low}, got {value!r}"
            raise ValueError(msg)
    if noise_sigma is not None and not noise_sigma > 0:
        msg = f"noise_sigma must be positive or None, got {noise_sigma!r}"
        raise ValueError(msg)
    if n_random is not None and n_random < 0:
        msg = f"n_random must be >= 0 or None (five per source), got {n_random!r}"
        raise ValueError(msg)
    return widths


def _merged_state(arrays, spec: Spec, cat: Catalogue | None) -> MetricsState:
    """The merged state: one ``dask.compute`` for dask input, one block else."""
    if any(is_dask(a) for a in arrays.values()):
        import dask

        (state,) = dask.compute(metrics_graph(arrays, spec, cat))
        return state
    log.info("metrics: numpy input, one block of %s", spec.shape)
    return block_state(
        spec,
        (0, 0),
        *(arrays.get(n) for n in INPUTS),
        cat.positions() if cat is not None else None,
    )


def compute_metrics(
    scene,
    background,
    mask,
    *,
    truth=None,
    sky=None,
    catalogue=None,
    noise_sigma: float | None = None,
    edge: int = 50,
    widths: Iterable[int] = range(3, 30),
    n_random: int | None = None,
    seed: int = 0,
    bias_box_size: int = 64,
    return_points: bool = False,
) -> dict[str, Any] | tuple[dict[str, Any], dict[str, Any] | None]:
    """Quality metrics of a background estimate, computed tile by tile.

    Parameters
    ----------
    scene, background : array_like
        The image and its estimated background, 2-D numpy or dask arrays (or
        xarray DataArrays) of one shape. numpy input is one block; dask input
        is reduced block by block (tasks named ``metrics-block`` and
        ``metrics-merge``) in one ``dask.compute``.
    mask : array_like of bool or None
        Source mask used for the background (True = masked).
    truth : array_like, optional
        Noiseless sky: enables the residual ``background - truth`` metrics.
    sky : array_like, optional
        Noisy sky without sources: with ``truth``, ``sky - truth`` is the
        'perfect' reference for the RMS-versus-scale curve.
    catalogue : mapping or xarray.Dataset, optional
        1-D ``x_mean``, ``y_mean``, ``flux``, ``re`` (pixels, 0-based).
    noise_sigma : float, optional
        Pixel noise for the ideal ``sigma / w`` fall; by default the standard
        deviation of the unmasked residual pixels ``scene - background``.
    edge : int
        Pixels closer than this to an image edge are left out of the
        'interior' residual statistics.
    widths : iterable of int
        Block widths of the RMS-versus-scale curve.
    n_random : int, optional
        Random control points (default five per source).
    seed : int
        Seed of the random control points and of their flux/radius draws.
    bias_box_size : int
        Side of the global blocks of the bias significance.
    return_points : bool
        Also return the per-source values for plots.

    Returns
    -------
    dict or (dict, dict)
        JSON-serialisable metrics (NaN/inf become None): ``truth``, ``scale``,
        ``bias``, ``sources`` (see Notes). With ``return_points``, also
        ``{"quantity", "sources": {...}, "random": {...}}`` of numpy arrays
        (None without a catalogue).

    Notes
    -----
    ``truth`` (with truth): mean, std, RMS about zero, max and min of
    ``background - truth`` over covered pixels (both finite), for the whole
    image and for pixels at least ``edge`` px from every edge.

    ``scale``: for each width ``w``, the standard deviation (``rms``) of the
    means of ``scene - background`` in global ``w x w`` blocks anchored at
    (0, 0) that lie inside the image, have no bad pixel (masked, or a
    non-finite residual or perfect value) and, as in the notebook, are clear
    of a border of ``w / 2`` px (so the first row and column of blocks never
    count). ``perfect`` is the same for ``sky - truth`` in the same blocks;
    ``ideal`` is ``sigma / w``; ``ratio`` is against ``perfect`` when present,
    else against ``ideal``. Fewer than two blocks give None.

    ``bias``: mean background under masked and under unmasked covered pixels.
    Background pixels are strongly correlated (the map is smooth on the mesh
    scale), so ``std / sqrt(N)`` overstates the significance by orders of
    magnitude, and the notebook's ``mean / (sqrt(N) * std)`` is not an error
    at all. Instead, for each global ``bias_box_size`` block holding both
    masked and unmasked covered pixels, ``d_b`` is the mean background under
    its masked pixels minus that under its unmasked ones: a local comparison,
    insensitive to large-scale gradients. ``difference`` is the mean of
    ``d_b`` weighted by masked pixel counts ``n_b``, and ``stderr`` the
    cluster-robust error treating blocks (much larger than the correlation
    length) as independent:
    ``sqrt(B / (B - 1) * sum(n_b**2 (d_b - difference)**2)) / sum(n_b)``;
    ``z = difference / stderr``. The global ``difference_global`` and the
    notebook's and iid numbers are under ``naive`` for comparison only.

    ``sources`` (with a catalogue): the mean of ``background - truth`` (the
    background itself without truth) over the finite pixels of the 3x3 box
    centred on ``rint`` of each source position, clipped to the image (the
    notebook's slices ``y-1:y+1`` take 2x2 pixels); a source is 'masked'
    when its centre pixel is. Random points are drawn over the whole image
    (independent of chunking) as in the notebook and kept when no pixel of
    their box is masked (the notebook's ``.min()`` keeps any not wholly
    masked box). Per group: count, mean, std, standard error, median and OLS
    fits against flux and radius (:func:`line_fit`).

    Every sum is exact, so the metrics are identical for any chunking.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> scene = rng.normal(size=(120, 150))
    >>> m = compute_metrics(scene, np.zeros_like(scene), scene > 2.5, widths=[5, 10])
    >>> m["scale"]["n_blocks"], m["bias"]["n_blocks"]
    ([543, 82], 6)
    """
    arrays, shape = _input_arrays(scene, background, mask, truth, sky)
    widths = _checked_options(widths, edge, bias_box_size, noise_sigma, n_random)
    if sky is not None and truth is None:
        log.info("metrics: sky is ignored without truth (perfect = sky - truth)")
        arrays.pop("sky")
    cat = None
    if catalogue is not None:
        cat = read_catalogue(catalogue, shape, n_random, seed)
    spec = Spec(
        shape,
        widths,
        int(edge),
        int(bias_box_size),
        truth is not None,
        "sky" in arrays,
        cat is not None,
    )
    metrics, points = summarize(
        _merged_state(arrays, spec, cat), spec, cat, noise_sigma
    )
    return (metrics, points) if return_points else metrics

"""NaN-ignoring row statistics on 2D (nrows, n) arrays, and argument checks.

Reductions always run over a C-contiguous last axis without dtype casting,
so each row's result does not depend on which other rows share the array
(tile invariance).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

#: 1 / Phi^-1(3/4): converts a median absolute deviation to a Gaussian sigma.
MAD_TO_SIGMA = 1.482602218505602


def _as_rows(data: Any, axis: int | tuple[int, ...] | None):
    """Return a C-contiguous float (nrows, n) view/copy and the output shape."""
    if isinstance(data, np.ma.MaskedArray):
        data = data.astype(np.result_type(data.dtype, np.float32)).filled(np.nan)
    data = np.asarray(data)
    if data.dtype.kind != "f":
        data = data.astype(np.float64)
    if axis is None:
        return np.ascontiguousarray(data.reshape(1, -1)), None
    order = _axis_order(axis, data.ndim)
    keep = order[: data.ndim - len(_axes(axis))]
    moved = np.transpose(data, order)
    out_shape = moved.shape[: len(keep)]
    n = math.prod(moved.shape[len(keep) :])
    return np.ascontiguousarray(moved.reshape(math.prod(out_shape), n)), out_shape


def _axes(axis: int | tuple[int, ...]) -> tuple[int, ...]:
    return (int(axis),) if np.ndim(axis) == 0 else tuple(int(a) for a in axis)


def _axis_order(axis: int | tuple[int, ...], ndim: int) -> tuple[int, ...]:
    """Axis permutation that moves the reduced ``axis`` to the end."""
    axes = []
    for a in _axes(axis):
        if not -ndim <= a < ndim:
            msg = f"axis {a} is out of bounds for an array of dimension {ndim}"
            raise ValueError(msg)
        axes.append(a % ndim)
    if len(set(axes)) != len(axes):
        msg = f"axis {axis!r} repeats an axis; pass each axis once"
        raise ValueError(msg)
    keep = tuple(a for a in range(ndim) if a not in axes)
    return keep + tuple(axes)


def _finish(values: np.ndarray, out_shape: tuple[int, ...] | None):
    if out_shape is None:
        return values[0]
    return values.reshape(out_shape)


def _nan_count(rows: np.ndarray) -> np.ndarray:
    return np.count_nonzero(~np.isnan(rows), axis=-1)


def _nanmean(rows: np.ndarray, count: np.ndarray) -> np.ndarray:
    # Same arithmetic as numpy.nanmean: sum in the data dtype, then divide by
    # the integer count in float64 and cast back.
    total = np.where(np.isnan(rows), 0, rows).sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (total / count).astype(rows.dtype, copy=False)


def _nanstd(rows: np.ndarray, count: np.ndarray, mean: np.ndarray) -> np.ndarray:
    dev = np.where(np.isnan(rows), 0, rows - mean[:, None])
    sq = (dev * dev).sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        var = (sq / count).astype(rows.dtype, copy=False)
    return np.sqrt(var)


def _nanmedian(rows: np.ndarray, count: np.ndarray) -> np.ndarray:
    ordered = np.sort(rows, axis=-1)  # NaN sorts last
    if ordered.shape[-1] == 0:
        return np.full(ordered.shape[0], np.nan, dtype=rows.dtype)
    low = np.maximum((count - 1) // 2, 0)
    high = np.maximum(count // 2, 0)
    a = np.take_along_axis(ordered, low[:, None], axis=-1)[:, 0]
    b = np.take_along_axis(ordered, high[:, None], axis=-1)[:, 0]
    with np.errstate(over="ignore", invalid="ignore"):
        med = np.where(low == high, a, (a + b) / 2)
    med[count == 0] = np.nan
    return med


def _nanmad(rows: np.ndarray, count: np.ndarray, median: np.ndarray) -> np.ndarray:
    return _nanmedian(np.abs(rows - median[:, None]), count)


def _finite_float(name: str, value: Any, *, positive: bool = False) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        out = math.nan
    if not math.isfinite(out) or (positive and out <= 0):
        need = "a finite number > 0" if positive else "a finite number"
        msg = f"{name} must be {need}, got {value!r}; pass e.g. {name}=6.0"
        raise ValueError(msg)
    return out


def _optional_float(name: str, value: Any) -> float | None:
    return None if value is None else _finite_float(name, value)

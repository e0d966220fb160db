"""The source catalogue of the metrics and its random control points.

Positions are rounded to the centre pixel of each 3x3 box, and the random
points are drawn once for the whole image, so neither depends on chunking.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Catalogue", "read_catalogue"]


@dataclass(frozen=True)
class Catalogue:
    """Source positions and the random control points, drawn at the driver."""

    x: np.ndarray
    y: np.ndarray
    flux: np.ndarray
    re: np.ndarray
    inside: np.ndarray
    yc: np.ndarray
    xc: np.ndarray
    rand_x: np.ndarray
    rand_y: np.ndarray
    rand_flux: np.ndarray
    rand_re: np.ndarray

    @property
    def n_sources(self) -> int:
        return int(self.x.size)

    def positions(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(keys, yc, xc)`` of every box to measure."""
        keys = np.concatenate(
            [
                np.flatnonzero(self.inside),
                self.n_sources + np.arange(self.rand_x.size),
            ]
        ).astype(np.int64)
        yc = np.concatenate([self.yc[self.inside], self.rand_y]).astype(np.int64)
        xc = np.concatenate([self.xc[self.inside], self.rand_x]).astype(np.int64)
        return keys, yc, xc


def read_catalogue(
    catalogue, shape: tuple[int, int], n_random: int | None, seed: int
) -> Catalogue:
    """The columns of ``catalogue``, their boxes in ``shape`` and the random
    control points (``n_random``, default five per source, drawn with ``seed``)."""
    cols = {}
    for name in ("x_mean", "y_mean", "flux", "re"):
        try:
            cols[name] = np.asarray(catalogue[name], dtype=np.float64).ravel()
        except (KeyError, TypeError):
            msg = (
                f"catalogue must map {name!r} to a 1-D array (needs x_mean, "
                f"y_mean, flux, re); got {type(catalogue).__name__} without it"
            )
            raise ValueError(msg) from None
    n = cols["x_mean"].size
    if any(c.size != n for c in cols.values()):
        sizes = {k: v.size for k, v in cols.items()}
        msg = f"catalogue columns must have equal lengths, got {sizes}"
        raise ValueError(msg)
    ny, nx = shape
    x, y = cols["x_mean"], cols["y_mean"]
    ok = np.isfinite(x) & np.isfinite(y)
    xc = np.where(ok, np.rint(np.where(ok, x, 0)), -1).astype(np.int64)
    yc = np.where(ok, np.rint(np.where(ok, y, 0)), -1).astype(np.int64)
    inside = ok & (xc >= 0) & (xc < nx) & (yc >= 0) & (yc < ny)
    if n_random is None:
        n_random = 5 * n
    if n == 0 or nx < 5 or ny < 5:
        n_random = 0
    rng = np.random.default_rng(seed)
    # The notebook's draws and ranges: the 3x3 box lies inside the image.
    i_flux = rng.integers(0, max(n, 1), n_random)
    i_re = rng.integers(0, max(n, 1), n_random)
    rand_x = rng.integers(2, max(nx - 2, 3), n_random)
    rand_y = rng.integers(2, max(ny - 2, 3), n_random)
    return Catalogue(
        x,
        y,
        cols["flux"],
        cols["re"],
        inside,
        yc,
        xc,
        rand_x,
        rand_y,
        cols["flux"][i_flux] if n else np.zeros(0),
        cols["re"][i_re] if n else np.zeros(0),
    )

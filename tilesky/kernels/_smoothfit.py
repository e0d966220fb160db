"""Masked Gaussian-weighted local polynomial fit (normalized convolution).

At every pixel ``p`` the background is the constant term of the polynomial
of order ``order`` (0, 1 or 2) in ``(x - p)`` that best fits the unmasked,
finite pixels ``q`` in the least-squares sense with weights
``G(q - p)``, ``G`` a Gaussian of sigma ``scale`` truncated at
``truncate * scale``. Order 0 is normalized convolution (a masked Gaussian
mean); order 2 follows curvature, so a gradient or a blemish wider than the
window is not flattened the way a plain average flattens it.

The sums are separable correlations of the coverage ``c`` and of ``c * f``
with ``G(u) u^i`` along each axis, so a tile needs a halo of
:func:`smoothfit_depth` pixels and then reproduces the whole-image result
to float64 rounding.

Limits: features narrower than about ``scale`` (a blemish of width 30 px
against a 20 px window) are followed only partly; masked holes wider than
the window leave NaN (no unmasked pixel within reach) and holes of about the
window size are bridged by an extrapolated quadratic, which the solver falls
back to lower order for when the local system is ill-conditioned.
"""

from __future__ import annotations

import numpy as np
from numba import njit
from scipy import ndimage

__all__ = ["smoothfit", "smoothfit_depth"]

# Monomials (i, j) = powers of (dy, dx) for each order, constant term first.
_TERMS = {
    0: [(0, 0)],
    1: [(0, 0), (1, 0), (0, 1)],
    2: [(0, 0), (1, 0), (0, 1), (2, 0), (1, 1), (0, 2)],
}


def smoothfit_depth(scale: float, truncate: float = 4.0) -> int:
    """Halo in pixels: the window radius ``int(truncate * scale + 0.5)``."""
    return int(truncate * float(scale) + 0.5)


def _weights(scale: float, truncate: float, power: int) -> np.ndarray:
    radius = smoothfit_depth(scale, truncate)
    u = np.arange(-radius, radius + 1, dtype=np.float64) / scale
    return np.exp(-0.5 * u * u) * u**power


def _moment(image: np.ndarray, wy: np.ndarray, wx: np.ndarray) -> np.ndarray:
    out = ndimage.correlate1d(image, wy, axis=0, mode="constant", cval=0.0)
    return ndimage.correlate1d(out, wx, axis=1, mode="constant", cval=0.0)


@njit(cache=True)
def _solve_constant(moms, rhs, nterms, out):  # pragma: no cover - numba
    # moms: (n_moment_images, ny, nx) indexed through the 6x6 layout below.
    ny, nx = out.shape
    a = np.empty((6, 6))
    b = np.empty(6)
    for y in range(ny):
        for x in range(nx):
            m00 = moms[0, y, x]
            if not m00 > 1e-12:
                out[y, x] = np.nan
                continue
            n = nterms
            while True:
                for r in range(n):
                    b[r] = rhs[r, y, x]
                    for c in range(n):
                        a[r, c] = moms[_IDX[r, c], y, x]
                ok = True
                # Gaussian elimination with partial pivoting.
                for k in range(n):
                    piv = k
                    for r in range(k + 1, n):
                        if abs(a[r, k]) > abs(a[piv, k]):
                            piv = r
                    if abs(a[piv, k]) <= 1e-9 * m00:
                        ok = False
                        break
                    if piv != k:
                        for c in range(n):
                            tmp = a[k, c]
                            a[k, c] = a[piv, c]
                            a[piv, c] = tmp
                        tmp = b[k]
                        b[k] = b[piv]
                        b[piv] = tmp
                    for r in range(k + 1, n):
                        f = a[r, k] / a[k, k]
                        for c in range(k, n):
                            a[r, c] -= f * a[k, c]
                        b[r] -= f * b[k]
                if ok:
                    for k in range(n - 1, -1, -1):
                        s = b[k]
                        for c in range(k + 1, n):
                            s -= a[k, c] * b[c]
                        b[k] = s / a[k, k]
                    out[y, x] = b[0]
                    break
                # Ill-conditioned (a hole or an edge): drop to a lower order.
                n = 3 if n == 6 else 1
                if n == 1:
                    out[y, x] = rhs[0, y, x] / m00
                    break


# Moment image index for each (row term, column term) pair of the 6x6 system:
# moment images are ordered as _MOMENTS below.
_MOMENTS = [(i, j) for i in range(5) for j in range(5) if i + j <= 4]
_MOMENT_INDEX = {m: k for k, m in enumerate(_MOMENTS)}
_IDX = np.zeros((6, 6), dtype=np.int64)
for _r, (_ri, _rj) in enumerate(_TERMS[2]):
    for _c, (_ci, _cj) in enumerate(_TERMS[2]):
        _IDX[_r, _c] = _MOMENT_INDEX[(_ri + _ci, _rj + _cj)]


def smoothfit(
    image: np.ndarray,
    mask: np.ndarray | None = None,
    *,
    scale: float = 20.0,
    order: int = 2,
    truncate: float = 4.0,
) -> np.ndarray:
    """Masked local polynomial background of ``image``.

    Parameters
    ----------
    image : 2-D array
        Non-finite pixels are no coverage.
    mask : 2-D bool array, optional
        True for pixels to leave out of the fit (sources).
    scale : float
        Gaussian sigma of the weighting window, in pixels.
    order : {0, 1, 2}
        Local polynomial order.
    truncate : float
        Window radius in units of ``scale`` (see :func:`smoothfit_depth`).

    Returns
    -------
    numpy.ndarray
        float32 background; NaN where the window holds no usable pixel.

    Examples
    --------
    >>> import numpy as np
    >>> from tilesky.kernels._smoothfit import smoothfit
    >>> y, x = np.mgrid[0:60, 0:50]
    >>> plane = (0.01 * x + 0.02 * y).astype(np.float32)
    >>> bool(np.allclose(smoothfit(plane, scale=5.0), plane, atol=1e-4))
    True
    """
    data = np.asarray(image, dtype=np.float64)
    cover = np.isfinite(data)
    if mask is not None:
        cover &= ~np.asarray(mask, dtype=bool)
    c = cover.astype(np.float64)
    cf = np.where(cover, data, 0.0)
    terms = _TERMS[order]
    max_power = 2 * max(i + j for i, j in terms)
    needed = [(i, j) for (i, j) in _MOMENTS if i + j <= max_power]
    w = {p: _weights(scale, truncate, p) for p in range(max_power + 1)}
    # Row pass once per x-power, then column passes per moment.
    moms = np.zeros((len(_MOMENTS), *data.shape))
    row_c = {}
    for _i, j in needed:
        if j not in row_c:
            row_c[j] = ndimage.correlate1d(c, w[j], axis=1, mode="constant", cval=0.0)
    for i, j in needed:
        moms[_MOMENT_INDEX[(i, j)]] = ndimage.correlate1d(
            row_c[j], w[i], axis=0, mode="constant", cval=0.0
        )
    rhs = np.zeros((len(terms), *data.shape))
    row_f = {}
    for k, (i, j) in enumerate(terms):
        if j not in row_f:
            row_f[j] = ndimage.correlate1d(cf, w[j], axis=1, mode="constant", cval=0.0)
        rhs[k] = ndimage.correlate1d(row_f[j], w[i], axis=0, mode="constant", cval=0.0)
    out = np.empty(data.shape, dtype=np.float64)
    _solve_constant(moms, rhs, len(terms), out)
    return out.astype(np.float32)

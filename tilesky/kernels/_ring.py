"""Ring-median kernel: the median over an annular footprint around each pixel.

This is the first stage of the pipeline and its hot loop. The kernel is pure
numpy + numba (no dask): the tiled wrapper calls :func:`ring_median` on each
chunk grown by :func:`ring_depth` pixels.

How it is fast
--------------
The image is cut into tiles. Inside a tile every pixel of the tile plus its
halo gets its exact rank among the tile's values (one ``np.argsort``), so the
ranks are unique integers in ``[0, M)``. A window position is then a set of
ranks held in a bitmap of ``M`` bits. Moving the window one pixel right only
touches the two ends of each contiguous run of the footprint (each ring row is
one or two runs), and the median is tracked incrementally: we keep a rank
``m`` and the number of window ranks below it, and walk the bitmap (64 ranks
per popcount) from the previous median to the new one. The selected rank maps
back to the tile's sorted values, so the output is one of the input floats,
bit for bit.
"""

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

__all__ = ["ring_depth", "ring_footprint", "ring_median"]

# Output tile shape of the rank transform. The halo is sorted once per tile, so
# tiles much larger than the halo keep the redundant sorting small, while the
# rank bitmap ((ny + 2 depth) * (nx + 2 depth) bits) stays inside L1 cache.
_TILE_NY = 128
_TILE_NX = 256

_U0 = np.uint64(0)
_U1 = np.uint64(1)
_U6 = np.uint64(6)
_U63 = np.uint64(63)
_UALL = np.uint64(0xFFFFFFFFFFFFFFFF)


def _check_ring_params(radius_in: int, width: int) -> None:
    # The bounds of tilesky.config.RingConfig: a filled disk (radius_in=0) is
    # a ring, a ring of no width is not.
    for name, value, low, hint in (
        ("radius_in", radius_in, 0, "use 0 for a filled disk"),
        ("width", width, 1, "the ring needs at least one pixel"),
    ):
        if isinstance(value, bool) or not isinstance(value, int | np.integer):
            msg = (
                f"{name} must be an integer number of pixels, got {value!r}; "
                "pass a whole number such as 15"
            )
            raise ValueError(msg)
        if value < low:
            msg = f"{name} must be an integer >= {low}, got {value}; {hint}"
            raise ValueError(msg)


def ring_footprint(radius_in: int, width: int) -> np.ndarray:
    """
    Boolean annular footprint, the True pixels of ``Ring2DKernel``.

    Parameters
    ----------
    radius_in : int
        Inner radius of the ring, in pixels (>= 0).
    width : int
        Width of the ring, in pixels (>= 1); the outer radius is
        ``radius_in + width``.

    Returns
    -------
    footprint : ndarray of bool, shape (2 R + 1, 2 R + 1)
        ``R = radius_in + width``. A pixel at offset ``(dy, dx)`` from the
        centre is True when ``radius_in**2 <= dx**2 + dy**2 <= R**2``.

    Notes
    -----
    Equal to ``astropy.convolution.Ring2DKernel(radius_in, width).array
    .astype(bool)``: astropy sizes the kernel as the odd integer at or above
    ``2 R`` and evaluates ``Ring2D`` at the pixel centres with both bounds
    inclusive.

    Examples
    --------
    >>> from tilesky.kernels._ring import ring_footprint
    >>> ring_footprint(1, 1).astype(int)
    array([[0, 0, 1, 0, 0],
           [0, 1, 1, 1, 0],
           [1, 1, 0, 1, 1],
           [0, 1, 1, 1, 0],
           [0, 0, 1, 0, 0]])
    """
    _check_ring_params(radius_in, width)
    radius_in = int(radius_in)
    radius_out = radius_in + int(width)
    offsets = np.arange(-radius_out, radius_out + 1)
    rr = offsets[:, None] ** 2 + offsets[None, :] ** 2
    return (rr >= radius_in**2) & (rr <= radius_out**2)


def ring_depth(radius_in: int, width: int) -> int:
    """
    Halo, in pixels, that a tile needs for an exact ring median.

    Parameters
    ----------
    radius_in : int
        Inner radius of the ring, in pixels.
    width : int
        Width of the ring, in pixels.

    Returns
    -------
    depth : int
        Half-size of :func:`ring_footprint`, ``radius_in + width``.

    Examples
    --------
    >>> from tilesky.kernels._ring import ring_depth
    >>> ring_depth(15, 5)
    20
    """
    _check_ring_params(radius_in, width)
    return int(radius_in) + int(width)


def _footprint_runs(footprint: np.ndarray) -> tuple[np.ndarray, ...]:
    """Row, first and last column of each contiguous run of True pixels."""
    rows, starts, stops = [], [], []
    for dy, row in enumerate(footprint):
        # Run boundaries are where the padded row switches value.
        edges = np.flatnonzero(np.diff(np.concatenate(([0], row.view(np.int8), [0]))))
        for start, end in zip(edges[::2], edges[1::2], strict=True):
            rows.append(dy)
            starts.append(start)
            stops.append(end - 1)
    return (
        np.asarray(rows, dtype=np.int64),
        np.asarray(starts, dtype=np.int64),
        np.asarray(stops, dtype=np.int64),
    )


@intrinsic
def _popcount(typingctx, x):
    sig = types.uint64(types.uint64)

    def codegen(context, builder, signature, args):
        return builder.ctpop(args[0])

    return sig, codegen


@intrinsic
def _ctz(typingctx, x):
    sig = types.uint64(types.uint64)

    def codegen(context, builder, signature, args):
        return builder.cttz(args[0], ir.Constant(ir.IntType(1), 0))

    return sig, codegen


@njit(cache=True, nogil=True, boundscheck=False)
def _ring_tile(
    region, order, rw, th, tw, rows, starts, stops, out, y0, x0, ranks, svals, bits
):
    """Ring median of one tile into ``out[y0:y0 + th, x0:x0 + tw]``.

    ``region`` is the tile plus its halo, flattened; ``out`` is the whole
    C-contiguous result, so that one compiled signature serves every tile.

    ``order`` is ``argsort(region)`` with every non-finite value set to NaN so
    that they sort last. Indices are unsigned in the hot loop because numba
    adds negative-index wraparound to every signed index, which costs about
    half the run time here.
    """
    m_total = region.shape[0]
    nfinite = 0
    for i in range(m_total):
        o = np.uint64(order[i])
        ranks[o] = i
        v = region[o]
        svals[i] = v
        if v == v:
            nfinite += 1
    has_nonfinite = nfinite < m_total
    ufinite = np.uint64(nfinite)

    nrun = rows.shape[0]
    # Flat offsets of the pixel leaving (one left of the run) and entering
    # (the run's last pixel) when the window steps one column right.
    off_out = np.empty(nrun, np.uint64)
    off_in = np.empty(nrun, np.uint64)
    for q in range(nrun):
        off_out[q] = rows[q] * rw + starts[q] - 1
        off_in[q] = rows[q] * rw + stops[q]
    nwords = (m_total + 63) >> 6

    for i in range(th):
        for w in range(nwords):
            bits[w] = _U0
        nfin = 0
        for q in range(nrun):
            row_base = (i + rows[q]) * rw
            for c in range(starts[q], stops[q] + 1):
                r = np.uint64(ranks[row_base + c])
                bits[r >> _U6] ^= _U1 << (r & _U63)
                if r < ufinite:
                    nfin += 1
        # Invariant: nbelow == number of window ranks < m.
        m = _U0
        nbelow = 0
        for j in range(tw):
            if j > 0:
                base = np.uint64(i * rw + j)
                # Ranks are unique within the tile, so XOR both adds and removes.
                if has_nonfinite:
                    for q in range(nrun):
                        r_out = np.uint64(ranks[base + off_out[q]])
                        r_in = np.uint64(ranks[base + off_in[q]])
                        bits[r_out >> _U6] ^= _U1 << (r_out & _U63)
                        bits[r_in >> _U6] ^= _U1 << (r_in & _U63)
                        nbelow += np.int64(r_in < m) - np.int64(r_out < m)
                        nfin += np.int64(r_in < ufinite) - np.int64(r_out < ufinite)
                else:
                    for q in range(nrun):
                        r_out = np.uint64(ranks[base + off_out[q]])
                        r_in = np.uint64(ranks[base + off_in[q]])
                        bits[r_out >> _U6] ^= _U1 << (r_out & _U63)
                        bits[r_in >> _U6] ^= _U1 << (r_in & _U63)
                        nbelow += np.int64(r_in < m) - np.int64(r_out < m)
            if nfin == 0:
                out[y0 + i, x0 + j] = np.nan
                continue
            # Finite ranks sort before non-finite ones, so for k < nfin the
            # k-th window rank is always a finite value.
            k = nfin // 2
            if nbelow > k:
                # Walk down to the (nbelow - k)-th window rank below m.
                excess = np.uint64(nbelow - k)
                w = m >> _U6
                word = bits[w] & ~(_UALL << (m & _U63))
                c = _popcount(word)
                while c < excess:
                    excess -= c
                    w -= _U1
                    word = bits[w]
                    c = _popcount(word)
                for _ in range(c - excess):
                    word &= word - _U1
            else:
                # Walk up, skipping k - nbelow window ranks at or above m.
                need = np.uint64(k - nbelow)
                w = m >> _U6
                word = bits[w] & (_UALL << (m & _U63))
                c = _popcount(word)
                while c <= need:
                    need -= c
                    w += _U1
                    word = bits[w]
                    c = _popcount(word)
                for _ in range(need):
                    word &= word - _U1
            m = (w << _U6) + _ctz(word)
            nbelow = k
            out[y0 + i, x0 + j] = svals[m]


def _ring_median_valid(padded: np.ndarray, footprint: np.ndarray) -> np.ndarray:
    """Ring median of the interior of ``padded``, which carries a full halo.

    ``padded`` must be float32 or float64 with every non-finite value already
    replaced by NaN; the result has shape ``padded.shape - 2 * depth``.
    """
    depth = footprint.shape[0] // 2
    rows, starts, stops = _footprint_runs(footprint)
    ny = padded.shape[0] - 2 * depth
    nx = padded.shape[1] - 2 * depth
    out = np.empty((ny, nx), dtype=padded.dtype)
    tile_ny = max(_TILE_NY, 2 * depth)
    tile_nx = max(_TILE_NX, 4 * depth)
    size_max = (tile_ny + 2 * depth) * (tile_nx + 2 * depth)
    ranks = np.empty(size_max, dtype=np.uint32)
    svals = np.empty(size_max, dtype=padded.dtype)
    # A spare zero word past the last rank, as a guard for the bitmap walks.
    bits = np.zeros((size_max + 63) // 64 + 1, dtype=np.uint64)
    for y0 in range(0, ny, tile_ny):
        th = min(tile_ny, ny - y0)
        for x0 in range(0, nx, tile_nx):
            tw = min(tile_nx, nx - x0)
            region = padded[y0 : y0 + th + 2 * depth, x0 : x0 + tw + 2 * depth]
            region = np.ascontiguousarray(region).ravel()
            # NaN sorts last; ties may come out in any order because equal
            # values map back to the same float.
            order = np.argsort(region)
            _ring_tile(
                region,
                order,
                tw + 2 * depth,
                th,
                tw,
                rows,
                starts,
                stops,
                out,
                y0,
                x0,
                ranks,
                svals,
                bits,
            )
    return out


def _prepare_image(image) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 2:
        msg = (
            f"image must be 2-D with shape (ny, nx), got shape {image.shape}; "
            "pass one image plane at a time"
        )
        raise ValueError(msg)
    if image.dtype.kind not in "biuf":
        msg = (
            f"image must hold real numbers, got dtype {image.dtype}; "
            "convert it with image.astype(np.float32) or np.float64"
        )
        raise ValueError(msg)
    # float32 stays float32, float64 stays float64; others widen exactly
    # (int16 -> float32, int64 -> float64).
    return image.astype(np.result_type(image.dtype, np.float32), copy=False)


def ring_median(image, *, radius_in: int, width: int) -> np.ndarray:
    """
    Median over an annular footprint around each pixel, ignoring non-finite values.

    Parameters
    ----------
    image : array_like, shape (ny, nx)
        Input image. float32 and float64 are kept; other real dtypes are
        converted to the smallest float type that holds them exactly.
    radius_in : int
        Inner radius of the ring, in pixels, >= 0 (``RingConfig.radius_in``;
        notebook: 15).
    width : int
        Width of the ring, in pixels, >= 1 (``RingConfig.width``; notebook: 5).

    Returns
    -------
    result : ndarray, shape (ny, nx)
        Ring median, same float dtype as the (converted) input.

    Notes
    -----
    *Footprint*: :func:`ring_footprint`, i.e. the True pixels of
    ``Ring2DKernel(radius_in, width)``.

    *Rank rule*: let ``v`` be the finite values (NaN and +-inf are left out)
    under the footprint, sorted ascending, and ``n = len(v)``. The result is
    ``v[n // 2]``: the middle value for odd ``n``, the upper of the two middle
    values for even ``n`` (no averaging), so it is always one of the input
    values. It is NaN when ``n == 0``. This is scipy's rule: its median filter
    takes rank ``footprint.sum() // 2``. On finite data the result is
    therefore bit-identical to ``scipy.ndimage.median_filter(image,
    footprint=ring_footprint(radius_in, width), mode="reflect")``; the one
    possible bit difference is the sign of a zero median when both ``0.0``
    and ``-0.0`` lie in the footprint, since they compare equal.

    *Edges*: mode ``"reflect"`` as in scipy (``d c b a | a b c d | d c b a``,
    numpy's ``"symmetric"``), repeated with period twice the side for images
    smaller than the ring. scipy 1.17's 2-D filters are no reference when an
    image side is at most a quarter of the depth: some far reflections there
    read wrong memory (values like 1e-310), while this kernel keeps to the
    definition.

    *Halo*: a tile needs :func:`ring_depth` pixels of halo on each side for
    its interior to equal the whole-image result.

    *Cost*: one ``argsort`` per internal tile, then per pixel two bitmap
    updates for each run of the footprint (70 runs for the 15/5 ring) and a
    short walk to the new median; numba-compiled, single-threaded, releases
    the GIL. The first call compiles (cached on disk afterwards).

    Examples
    --------
    >>> import numpy as np
    >>> from tilesky.kernels._ring import ring_median
    >>> image = np.ones((7, 7), dtype=np.float32)
    >>> image[3, 3] = 100.0  # in the hole of the ring: not used at (3, 3)
    >>> image[2, 3] = np.nan  # on the ring: left out
    >>> ring_median(image, radius_in=1, width=1)[3, 3]
    np.float32(1.0)
    """
    footprint = ring_footprint(radius_in, width)
    image = _prepare_image(image)
    if image.size == 0:
        return np.empty(image.shape, dtype=image.dtype)
    depth = footprint.shape[0] // 2
    # numpy's "symmetric" pad is scipy's "reflect", also when depth > size.
    padded = np.pad(image, depth, mode="symmetric")
    finite = np.isfinite(padded)
    if not finite.all():
        padded[~finite] = np.nan
    return _ring_median_valid(padded, footprint)

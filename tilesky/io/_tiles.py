"""Tile planning: chunk edges aligned to the mesh box, and a run's tiles.

A chunk must hold whole mesh boxes, so that every box's statistics come
from one task: :func:`aligned_chunks` rounds requested edges up to box
multiples. :func:`run_tiles` picks the tiles a run uses when the caller
chose none.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tilesky.errors import InputError

__all__ = [
    "DEFAULT_CHUNK",
    "RUN_TILE",
    "aligned_chunks",
    "int_pair",
    "run_tiles",
]

#: Chunk edge used when neither the caller nor the input chooses one.
DEFAULT_CHUNK = 1024


def aligned_chunks(
    shape: tuple[int, ...],
    chunks: int | tuple[int, int] | None,
    box_size: int | tuple[int, int],
) -> tuple[int, int]:
    """Chunk edges rounded up to multiples of the box, for a 2-D ``shape``.

    Parameters
    ----------
    shape : tuple of int
        Image shape ``(ny, nx)``.
    chunks : int, (int, int) or None
        Requested chunk edge(s); None means :data:`DEFAULT_CHUNK`; -1 means a
        whole axis.
    box_size : int or (int, int)
        Mesh box ``(box_y, box_x)``.

    Returns
    -------
    tuple of int
        ``(chunk_y, chunk_x)``, each a multiple of the box edge, and no larger
        than the axis rounded up to a box multiple (one chunk then covers it).

    Examples
    --------
    >>> aligned_chunks((500, 700), 100, 6)
    (102, 102)
    >>> aligned_chunks((500, 700), (-1, 64), (10, 50))
    (500, 100)
    """
    box = int_pair(box_size, "box_size")
    want = int_pair(DEFAULT_CHUNK if chunks is None else chunks, "chunks", whole=True)
    if len(shape) != 2:
        msg = f"aligned_chunks needs a 2-D shape (ny, nx), got {tuple(shape)}"
        raise InputError(msg)
    edges = []
    for n, c, b in zip(shape, want, box, strict=True):
        c = n if c == -1 else c
        edges.append(max(b, min(_round_up(c, b), _round_up(n, b))))
    return (edges[0], edges[1])


#: Tile edge a run aims for when the caller gives none. The default
#: pipeline's widest halo is ~110 px (the smooth fit's window): a 1024-px tile
#: computes (1 + 2 * 110 / 1024)**2 = 1.47 times its own pixels, a 2048-px
#: tile 1.23 times, and has a quarter of the tasks to schedule.
RUN_TILE = 2048


def run_tiles(
    shape: tuple[int, int],
    chunks: tuple[int, int],
    box_size: int | tuple[int, int],
    *,
    threads: int = 1,
) -> tuple[int, int]:
    """The tiles a run uses when the caller chose none.

    Whole multiples of the input's (box-aligned) ``chunks``, about
    :data:`RUN_TILE` pixels a side, or of about that area when the input's
    chunks are long strips. An image with fewer such tiles than
    ``threads`` is cut into one row band per thread instead (a band has a
    halo on two sides only), as long as bands stay at least a quarter of
    :data:`RUN_TILE` high; otherwise the input's chunks are the tiles.

    Parameters
    ----------
    shape : (int, int)
        The image's shape.
    chunks : (int, int)
        The input's chunks, multiples of ``box_size``.
    box_size : int or (int, int)
        The mesh box every tile edge is a multiple of.
    threads : int, optional
        Threads that will run tiles.

    Returns
    -------
    (int, int)
        The tile shape.

    Examples
    --------
    >>> run_tiles((6000, 6000), (1020, 1020), 30, threads=2)
    (2040, 2040)
    >>> run_tiles((2000, 2000), (1020, 1020), 30, threads=2)
    (1020, 2010)
    >>> run_tiles((2000, 2000), (1020, 1020), 30, threads=8)
    (1020, 1020)
    """
    ny, nx = (int(n) for n in shape)
    cy, cx = (int(c) for c in chunks)
    tx = min(max(1, round(RUN_TILE / cx)) * cx, nx)
    # Rows to make the area about RUN_TILE**2: a strip of chunks 16384 wide
    # gets ~256 rows, not 2048.
    ty = min(max(1, round(RUN_TILE * RUN_TILE / (tx * cy))) * cy, ny)
    tiles = aligned_chunks((ny, nx), (ty, tx), box_size)
    if -(-ny // tiles[0]) * -(-nx // tiles[1]) >= threads:
        return tiles
    band = -(-ny // max(1, threads))
    if band >= RUN_TILE // 4:
        return aligned_chunks((ny, nx), (band, nx), box_size)
    return aligned_chunks((ny, nx), tuple(chunks), box_size)


def _round_up(n: int, multiple: int) -> int:
    return -(-int(n) // multiple) * multiple


def int_pair(value: Any, name: str, *, whole: bool = False) -> tuple[int, int]:
    """``value`` as a ``(ny, nx)`` pair of positive ints (an int is both).

    Parameters
    ----------
    value : int or (int, int)
        The caller's value.
    name : str
        The parameter it was given as, named in the error.
    whole : bool
        Also accept -1, meaning a whole axis.

    Raises
    ------
    InputError
        If ``value`` is not such an int or pair.

    Examples
    --------
    >>> int_pair(6, "box_size"), int_pair((-1, 64), "chunks", whole=True)
    ((6, 6), (-1, 64))
    """
    items = (value, value) if np.ndim(value) == 0 else tuple(value)
    fix = "a positive int or a (ny, nx) pair of positive ints"
    if whole:
        fix += " (-1 for a whole axis)"
    ok = len(items) == 2 and all(
        isinstance(v, (int, np.integer))
        and not isinstance(v, (bool, np.bool_))
        and (v > 0 or (whole and v == -1))
        for v in items
    )
    if not ok:
        msg = f"{name}={value!r} is not valid; use {fix}"
        raise InputError(msg, params=name)
    return (int(items[0]), int(items[1]))

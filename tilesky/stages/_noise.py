"""Global noise: the robust standard deviation a threshold is a multiple of.

A global step, not a tiled one: an exact reduction of small mergeable
states (integer sums), so every backend and chunking gives the same bits.
It computes (it must: the thresholds of the next stage depend on it).
"""

from __future__ import annotations

from tilesky.errors import PipelineError

__all__ = ["global_noise"]


def global_noise(backend, array, *, clip: float | None, maxiters: int) -> dict:
    """Standard deviation of ``array``'s finite pixels, optionally sigma-clipped.

    Clipping is about the mean (each pass is one exact reduction) and stops
    when an iteration keeps the same pixels or after ``maxiters`` passes.
    The array is held in memory for the passes when it fits.

    Returns
    -------
    dict
        ``count``, ``mean`` and ``std`` of the pixels kept.
    """
    held = backend.hold(array)
    n, mean, std = backend.clipped_moments(held, clip=clip, maxiters=maxiters)
    if n == 0:
        msg = "no finite, unmasked pixels left to estimate the noise from"
        raise PipelineError(msg)
    if not std > 0:
        msg = "the noise of the image is zero: a constant image has no sky to estimate"
        raise PipelineError(msg)
    return {"count": n, "mean": mean, "std": std}

"""Quality metrics of a background estimate, as global reductions of small states.

The checks at the end of the reference notebook ("Check for bias", "Testing
for bias on real data", "RMS of the residual background as a function of
scale") become metrics that run unchanged on a small numpy image and on a
mosaic of 10**9 pixels: each dask block is reduced to a small mergeable state
(:class:`MetricsState`), the states are merged in a tree, and the merged state
is summarised. The image is never gathered.

The metrics are the same bits for any chunking. Block grids are global
(anchored at pixel (0, 0) of the image). Sums are exact: a float64 value is
split into signed base-2**26 digits at fixed global positions, and digits are
added as integers (:class:`ExactSums`), so a block that straddles chunks gets
the same sum from its pieces as from one piece. Per-block means are then a
deterministic function of the exact sum, and sums over blocks or pixels go
through the exact :class:`~tilesky.kernels._noise.MomentState`.

Modules, in the order data flows through them:

- ``_exact``: exact digit sums (:class:`ExactSums`) and their numba helpers.
- ``_passes``: the compiled per-chunk passes (block sums of every width in
  one streamed pass, bias blocks, source boxes, extremes).
- ``_table``: global block grids and exact sums keyed by block.
- ``_states``: the mergeable states and their merge.
- ``_block``: the state of one chunk, from the passes.
- ``_catalogue``: source positions and random control points.
- ``_graph``: the dask graph (``metrics-block`` and ``metrics-merge`` tasks).
- ``_summary``: merged state to the metrics dict; :func:`line_fit`.
- ``_compute``: :func:`compute_metrics`, the entry point.

The slow per-digit-position references of the passes live in
``tests/_reference_metrics.py``.
"""

from tilesky.metrics._compute import compute_metrics
from tilesky.metrics._exact import ExactSums
from tilesky.metrics._states import (
    BiasState,
    MetricsState,
    ScaleState,
    SourceState,
    TruthState,
)
from tilesky.metrics._summary import line_fit

__all__ = [
    "BiasState",
    "ExactSums",
    "MetricsState",
    "ScaleState",
    "SourceState",
    "TruthState",
    "compute_metrics",
    "line_fit",
]

# Documented (and named in reprs) as part of the public module.
for _obj in (
    BiasState,
    ExactSums,
    MetricsState,
    ScaleState,
    SourceState,
    TruthState,
    compute_metrics,
    line_fit,
):
    _obj.__module__ = __name__
del _obj

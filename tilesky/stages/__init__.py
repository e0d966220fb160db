"""The pipeline's stages, one module each.

Every module holds its kernel(s), its halo rule (``depth(...)``, from its
parameters), the dtype of what it makes and its task name (``NAME``, what
the dashboard shows). :class:`LocalStage` is the unit a backend runs.

=====================  ==================  ===========================================
module                 task name           halo (pixels unless said)
=====================  ==================  ===========================================
``_ring_median``       ``ring-median``     ring outer radius + smoothing radius
``_noise``             ``noise-*``         global: exact reduction, no halo
``_first_mask``        ``source-mask``     dilation radius
``_mesh``              ``mesh-stats``,     none (whole boxes); fill: ``max_distance``
                       ``mesh-fill``,      cells; filter: half the filter size
                       ``mesh-filter``
``_interpolate``       ``interpolate``     IDW reach or spline prefilter, mesh cells
``_source_mask``       ``source-mask``     widest scale: smoothing + ``n_pixels - 1``
                                           + top-hat radius
``_smoothfit``         ``smoothfit``       window radius + two grid steps
``_pointwise``         ``scene``,          none
                       ``residual``,
                       ``store``
=====================  ==================  ===========================================

The order they run in is :func:`tilesky.pipeline.plan`.
"""

from tilesky.errors import PipelineError
from tilesky.stages._stage import LocalStage

__all__ = ["LocalStage", "PipelineError"]

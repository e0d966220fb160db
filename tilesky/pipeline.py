"""The background pipeline: a list of steps and the loop that runs them.

:func:`plan` lists the steps a configuration asks for (names as in the
reference notebook and the design brief):

1. the scene in float32, read once; the statistics' scene without the
   user's mask;
2. ring median of the scene (:mod:`tilesky.stages._ring_median`);
3. its noise: global (:mod:`~tilesky.stages._noise`, on the image
   whitened by the weight map's depth when there is one) or a local mesh
   RMS map; the first mask (:mod:`~tilesky.stages._first_mask`);
4. the first mesh background (:mod:`~tilesky.stages._mesh`);
5. ``n_rounds`` times: the residual; in the first round, the depth model
   (:mod:`~tilesky.stages._depth`); its noise, multi-scale masks grown by
   size (:mod:`~tilesky.stages._source_mask`), then the final background
   (the smooth fit blended into its wide bridge and with the mesh filling
   what is left, or the mesh alone);
6. ``subtracted``.

Each step names the values it reads and writes; :func:`run_pipeline` runs
them in order with any :class:`~tilesky.backends.Backend`. Halos, dtypes
and task names belong to the stages; which values are checkpointed or held
in memory belongs to the plan.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tilesky.config import Config
from tilesky.errors import PipelineError
from tilesky.stages import (
    _depth,
    _extended,
    _first_mask,
    _ring_median,
    _smoothfit,
    _source_mask,
)
from tilesky.stages._mesh import mesh_background
from tilesky.stages._noise import global_noise
from tilesky.stages._pointwise import masked_scene, residual, subtracted

__all__ = ["PipelineError", "PipelineResult", "Step", "plan", "run_pipeline"]


@dataclass
class PipelineResult:
    """Arrays (numpy or dask) and scalars produced by one pipeline run.

    Parameters
    ----------
    arrays : dict
        ``background``, ``background_rms``, ``mask`` and ``subtracted``.
    mesh_arrays, first_mesh_arrays : dict
        The final and the first mesh background's low-resolution maps.
    noise : dict
        The noise levels the thresholds used, by name.
    depth_model : dict
        The noise model the thresholds followed (``model``: ``uniform``,
        ``local map``, ``weight``, ``global`` or ``local``) and the
        evidence for it (see :mod:`tilesky.stages._depth`).
    coarse_gate : dict or None
        Whether the data switched on the extended-source scales and the
        evidence (see :func:`tilesky.stages._source_mask.coarse_gate`);
        None when the configuration does not ask.
    timings : dict of str to float
        Seconds spent building (and computing, where a step computes) each
        timed step.
    """

    arrays: dict[str, Any] = field(default_factory=dict)
    mesh_arrays: dict[str, Any] = field(default_factory=dict)
    first_mesh_arrays: dict[str, Any] = field(default_factory=dict)
    noise: dict[str, Any] = field(default_factory=dict)
    depth_model: dict[str, Any] = field(default_factory=dict)
    coarse_gate: dict[str, Any] | None = None
    timings: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Step:
    """One step of the plan.

    Parameters
    ----------
    run : callable
        ``run(backend, *inputs)`` returning one value per name in ``outputs``
        (a tuple when there are several).
    inputs, outputs : tuple of str
        Names of the values read and written. Values named ``noise.<key>``
        are the noise levels recorded as ``PipelineResult.noise[key]``.
    checkpoint : mapping of str to str
        Outputs to materialize, and the checkpoint name of each.
    hold : bool
        Keep the (single) output in memory for repeated passes.
    lap : str, optional
        Close a timing interval of that name after this step.
    """

    run: Callable[..., Any]
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    checkpoint: Mapping[str, str] = field(default_factory=dict)
    hold: bool = False
    lap: str | None = None


def _prepare(backend, scene):
    # Everything runs in float32 (the outputs' type), whatever the input, so
    # both backends subtract, compare and sum the same values.
    scene = scene.astype(np.float32)
    if not backend.any(np.isfinite(scene)):
        msg = "the image has no finite pixels (all NaN or inf): nothing to estimate"
        raise PipelineError(msg)
    # Read (and, for a compressed or remote input, decode) the input once.
    # Kept in memory, it is not written: a resumed run reads the input again.
    return backend.checkpoint("scene", scene, resumable=False)


def _global_noise(clip: float | None, maxiters: int, source: str, name: str) -> Step:
    """The global noise level of ``source``, as the value ``name``."""
    run = functools.partial(global_noise, clip=clip, maxiters=maxiters)
    return Step(run, (source,), (name,))


def _first_steps(cfg: Config) -> list[Step]:
    """Ring median, its noise, the first mask and the first mesh background."""
    fm, local = cfg.first_mask, cfg.noise_mode == "local"
    steps = [
        Step(_prepare, ("scene",), ("scene",)),
        Step(masked_scene, ("scene", "user_mask"), ("stats_scene",)),
        Step(
            _ring_median.stage(cfg),
            ("stats_scene",),
            ("smoothed",),
            checkpoint={"smoothed": "first_smoothed"},
            lap="ring_median",
        ),
    ]
    if local:
        rms_of_smoothed = functools.partial(
            _mesh_rms, m=cfg.first_mesh, label="first_noise"
        )
        steps.append(Step(rms_of_smoothed, ("smoothed",), ("first_noise",)))
        noise = "first_noise"
    else:
        noise = "noise.first_mask"
        steps += [
            Step(
                functools.partial(_depth.weight_depth, cfg=cfg),
                ("weight",),
                ("depth",),
            ),
            Step(_depth.whitened, ("smoothed", "depth"), ("smoothed_white",)),
            _global_noise(
                fm.noise_sigma_clip,
                fm.noise_sigma_clip_maxiters,
                "smoothed_white",
                noise,
            ),
        ]
    first_mesh = functools.partial(
        mesh_background,
        m=cfg.first_mesh,
        label="first",
        maps=("background", "background_rms") if local else ("background",),
    )
    steps += [
        Step(
            functools.partial(_first_mask.apply, cfg=cfg),
            ("smoothed", noise, "depth", "user_mask"),
            ("mask",),
            checkpoint={"mask": "first_mask"},
            lap="first_mask",
        ),
        Step(
            first_mesh,
            ("scene", "mask"),
            ("background", "background_rms", "first_meshes"),
            checkpoint={"background": "first_background"}
            | ({"background_rms": "first_background_rms"} if local else {}),
            lap="first_mesh",
        ),
    ]
    return steps


def _mesh_rms(backend, image, *, m, label):
    """The local noise map: the mesh RMS of ``image`` at full resolution."""
    _, rms, _ = mesh_background(
        backend, image, None, m, label=label, maps=("background_rms",)
    )
    return rms


def _round_steps(cfg: Config, rnd: int) -> list[Step]:
    """Round ``rnd`` (1-based): residual, its noise, masks, final background."""
    sm, local = cfg.source_mask, cfg.noise_mode == "local"
    last = rnd == cfg.n_rounds
    noise = "background_rms" if local else f"noise.source_mask_round{rnd}"
    # Held in memory (when it fits) for the noise passes and the masks.
    steps = [Step(residual, ("stats_scene", "background"), ("residual",), hold=True)]
    if not local:
        if rnd == 1:
            # The depth model is decided once, on the first residual.
            steps.append(
                Step(
                    functools.partial(_depth.estimated_depth, cfg=cfg),
                    ("residual", "mask", "depth"),
                    ("depth", "depth_model"),
                )
            )
        steps += [
            Step(_depth.whitened, ("residual", "depth"), ("residual_white",)),
            _global_noise(
                sm.noise_sigma_clip,
                sm.noise_sigma_clip_maxiters,
                "residual_white",
                noise,
            ),
        ]
    mask_inputs = ("residual", noise, "depth" if not local else "none", "user_mask")
    if rnd == 1 and cfg.source_mask.auto_coarse_fraction > 0:
        # Decided once, on the first residual, like the depth model.
        gate = functools.partial(_source_mask.coarse_gate, cfg=cfg)
        steps.append(Step(gate, mask_inputs, ("coarse_gate",)))
    steps.append(
        Step(
            functools.partial(_source_mask.apply, cfg=cfg),
            (*mask_inputs, "coarse_gate"),
            ("mask",),
            checkpoint={"mask": f"mask_round{rnd}"},
        )
    )
    if _extended.enabled(cfg):
        if rnd == 1:
            detect = functools.partial(_extended.detect, cfg=cfg)
            steps.append(
                Step(
                    detect,
                    ("stats_scene", "mask", *mask_inputs[1:3], "coarse_gate"),
                    ("extended_mask", "coarse_gate"),
                )
            )
        steps.append(Step(_extended.combine, ("mask", "extended_mask"), ("mask",)))
    fit = "none"
    if cfg.final_method == "smoothfit":
        bridge = _smoothfit.bridge_stage(cfg)
        fit_inputs = ("scene", "mask")
        if bridge is not None:
            steps.append(Step(bridge, ("scene", "mask"), ("bridge",)))
            fit_inputs = ("scene", "mask", "bridge")
        steps.append(Step(_smoothfit.stage(cfg), fit_inputs, ("fit",)))
        fit = "fit"
    # The RMS map is an output of the last round, and local noise for the
    # next one; otherwise nobody reads it.
    want_rms = local or last
    final = functools.partial(
        _final_background,
        m=cfg.final_mesh,
        label=f"round{rnd}",
        maps=("background", "background_rms") if want_rms else ("background",),
    )
    # The last round's maps are materialized by writing the outputs: a
    # checkpoint would write and read them once more.
    kept = {} if last else {"background": f"background_round{rnd}"}
    if want_rms and not last:
        kept["background_rms"] = f"background_rms_round{rnd}"
    steps.append(
        Step(
            final,
            # The last round's maps are outputs: no background where no data.
            ("scene", "mask", fit, "scene" if last else "none"),
            ("background", "background_rms", "meshes"),
            checkpoint=kept,
            lap=f"round{rnd}",
        )
    )
    return steps


def _final_background(backend, scene, mask, fit, coverage, *, m, label, maps):
    # With the smooth fit, the mesh background only fills the fit's holes
    # (masked regions wider than its window), having the wider reach.
    return mesh_background(
        backend,
        scene,
        mask,
        m,
        label=label,
        maps=maps,
        fallback=fit,
        coverage=coverage,
    )


def plan(cfg: Config) -> list[Step]:
    """The steps ``cfg`` asks for, in order.

    Parameters
    ----------
    cfg : Config
        The configuration.

    Returns
    -------
    list of Step
        They read ``scene`` and ``user_mask`` (None: no user mask) and
        write ``background``, ``background_rms``, ``mask``, ``subtracted``,
        the mesh maps (``meshes``, ``first_meshes``) and the noise levels.
    """
    steps = _first_steps(cfg)
    for rnd in range(1, cfg.n_rounds + 1):
        steps += _round_steps(cfg, rnd)
    steps.append(Step(subtracted, ("scene", "background"), ("subtracted",)))
    return steps


def _run_step(step: Step, backend, values: dict) -> None:
    out = step.run(backend, *(values[name] for name in step.inputs))
    out = out if len(step.outputs) > 1 else (out,)
    for name, value in zip(step.outputs, out, strict=True):
        if value is None:
            values[name] = value
            continue
        if step.hold:
            value = backend.hold(value)
        if name in step.checkpoint:
            value = backend.checkpoint(step.checkpoint[name], value)
        values[name] = value


def run_pipeline(
    scene, config: Config, backend, *, coverage_mask=None, weight=None
) -> PipelineResult:
    """Run every step of :func:`plan` on ``scene`` with ``backend``.

    Parameters
    ----------
    scene : 2-D numpy or dask array
        Non-finite pixels are no coverage; computed in float32.
    config : Config
        The configuration; :func:`plan` turns it into steps.
    backend : Backend
        :class:`~tilesky.backends.WholeImage` (numpy, the reference) or
        :class:`~tilesky.backends.Tiled` (dask).
    coverage_mask : 2-D bool array, optional
        True where pixels must be ignored (user mask); they are treated as
        masked in every stage but still receive a background.
    weight : 2-D array, optional
        Inverse-variance weight map (zero: no coverage, already applied to
        ``scene``); with ``noise_mode="auto"`` the thresholds follow it.

    Returns
    -------
    PipelineResult
        The final arrays, mesh maps, noise levels and timings.
    """
    result = PipelineResult()
    values: dict[str, Any] = {
        "scene": scene,
        "user_mask": coverage_mask,
        "weight": weight,
        "depth": None,
        "depth_model": {"model": config.noise_mode},
        "coarse_gate": None,
        "extended_mask": None,
        "none": None,
    }
    t0 = time.perf_counter()
    for step in plan(config):
        _run_step(step, backend, values)
        if step.lap is not None:
            now = time.perf_counter()
            result.timings[step.lap] = round(now - t0, 4)
            t0 = now
    result.noise = {
        name.removeprefix("noise."): value
        for name, value in values.items()
        if name.startswith("noise.")
    }
    result.arrays = {
        name: values[name]
        for name in ("background", "background_rms", "mask", "subtracted")
    }
    result.depth_model = values["depth_model"]
    result.coarse_gate = values["coarse_gate"]
    result.mesh_arrays = values["meshes"].outputs()
    result.first_mesh_arrays = values["first_meshes"].outputs()
    return result

"""Sigma clipping of a noise level, one exact step at a time.

Both backends take the same steps on the same exact states, so the clipped
moments are the same bits for any backend and chunking. A step is
``(count, mean, std, done)``; ``done`` once a pass keeps the same number of
pixels, keeps none, or no clipping was asked for.
"""

from __future__ import annotations

from tilesky.kernels._noise import MomentState, clip_bounds, moment_state, moments

__all__ = ["advance", "clip_next", "clip_range", "clip_start", "state_of_blocks"]


def clip_start(state: MomentState, clip: float | None) -> tuple:
    """The first step: the moments of every finite pixel."""
    n, mean, std = moments(state)
    return (n, mean, std, n == 0 or clip is None)


def clip_range(step: tuple, clip: float) -> tuple[float, float] | None:
    """The interval the next pass keeps, or None when clipping is done."""
    _, mean, std, done = step
    return None if done else clip_bounds(mean, std, clip)


def clip_next(step: tuple, state: MomentState | None) -> tuple:
    """The step after ``step``, given the state of the pixels it kept."""
    if step[3]:
        return step
    n2, mean2, std2 = moments(state)
    if n2 == step[0] or n2 == 0:
        return (*step[:3], True)
    return (n2, mean2, std2, False)


def sum_states(states):
    """Merge states (integer sums); None when the pass was not needed."""
    if states[0] is None:
        return None
    return sum(states, start=MomentState())


def state_of_blocks(blocks, mask_blocks, outcome):
    """The merged state of ``blocks`` within the bounds ``outcome`` gives."""
    kept = outcome[1]
    if kept is None:
        return None
    return sum_states(
        [
            moment_state(block, lower=kept[0], upper=kept[1], mask=mask_block)
            for block, mask_block in zip(blocks, mask_blocks, strict=True)
        ]
    )


def advance(states, outcome, clip):
    """The outcome of a clipping pass: ``(step, bounds of the next pass)``."""
    previous = outcome[0]
    state = sum_states(states)
    step = clip_start(state, clip) if previous is None else clip_next(previous, state)
    return step, clip_range(step, clip)

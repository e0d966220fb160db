"""Exact mergeable moments: equal to exact rational arithmetic, order-free."""

import math
from fractions import Fraction

import numpy as np

from tilesky.kernels._noise import MomentState, moment_state, moments


def test_moments_are_exact_and_merge_in_any_order():
    rng = np.random.default_rng(0)
    x = (rng.normal(size=5000) * 10.0 ** rng.integers(-8, 8, 5000)).astype(np.float32)
    x[::97] = np.nan
    finite = [float(v) for v in x if np.isfinite(v)]
    exact_mean = sum(map(Fraction, finite)) / len(finite)
    exact_var = sum(Fraction(v) ** 2 for v in finite) / len(finite) - exact_mean**2
    n, mean, std = moments(moment_state(x))
    assert n == len(finite)
    assert mean == float(exact_mean)
    assert std == math.sqrt(float(exact_var))
    parts = [moment_state(p) for p in np.array_split(x, 7)]
    assert sum(reversed(parts), MomentState()) == moment_state(x)


def test_bounds_and_mask():
    x = np.arange(10, dtype=np.float32)
    mask = x == 3
    n, mean, _ = moments(moment_state(x, lower=2, upper=6, mask=mask))
    assert n == 4 and mean == (2 + 4 + 5 + 6) / 4
    assert moments(MomentState())[0] == 0


def test_compiled_state_equals_numpy_reference():
    from tilesky.kernels._noise import _exact_sum

    rng = np.random.default_rng(3)
    x = rng.normal(size=(70, 90)) * 10.0 ** rng.integers(-30, 30, (70, 90))
    x[::7, ::5] = np.nan
    mask = rng.random(x.shape) < 0.2
    lo, hi = -1e10, 1e12
    state = moment_state(x, lower=lo, upper=hi, mask=mask)
    keep = np.isfinite(x) & (x >= lo) & (x <= hi) & ~mask
    assert state.count == keep.sum()
    assert state.sum == _exact_sum(x[keep])
    assert state.sumsq == _exact_sum(x[keep] ** 2)

"""Exact mergeable moments: equal to exact rational arithmetic, order-free."""

import math
from fractions import Fraction

import dask.array as da
import numpy as np
import pytest
from _reference_kernels import exact_sum, moment_state_reference

from tilesky.backends import Tiled, WholeImage
from tilesky.kernels import _noise
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
    rng = np.random.default_rng(3)
    x = rng.normal(size=(70, 90)) * 10.0 ** rng.integers(-30, 30, (70, 90))
    x[::7, ::5] = np.nan
    mask = rng.random(x.shape) < 0.2
    lo, hi = -1e10, 1e12
    state = moment_state(x, lower=lo, upper=hi, mask=mask)
    keep = np.isfinite(x) & (x >= lo) & (x <= hi) & ~mask
    assert state.count == keep.sum()
    assert state.sum == exact_sum(x[keep])
    assert state.sumsq == exact_sum(x[keep] ** 2)


# -- the bit-pattern kernels against the digit path and the numpy reference --


def _check(values, *, lower=-math.inf, upper=math.inf, mask=None):
    """The fast state equals the digit path and the numpy reference."""
    state = moment_state(values, lower=lower, upper=upper, mask=mask)
    # Casting a float32 signalling NaN to float64 raises the invalid flag:
    # the fast path never casts, the references do.
    with np.errstate(invalid="ignore", over="ignore"):
        reference = moment_state_reference(values, lower=lower, upper=upper, mask=mask)
        v = np.asarray(values, dtype=np.float64).ravel()
        keep = np.isfinite(v) & (v >= lower) & (v <= upper)
        if mask is not None:
            keep &= ~np.asarray(mask, dtype=bool).ravel()
        kept = v[keep]
        squares = kept * kept
    assert state == reference
    assert state.count == keep.sum()
    assert state.sum == exact_sum(kept)
    assert state.sumsq == exact_sum(squares[np.isfinite(squares)])
    return state


def _hostile(dtype, shape, seed):
    """Random bit patterns (every exponent, NaN payloads), ordinary values,
    subnormals, signed zeros, infinities and the extremes, both signs."""
    rng = np.random.default_rng(seed)
    n = int(np.prod(shape))
    if dtype == np.float32:
        x = rng.integers(-(2**31), 2**31, n, dtype=np.int64).astype(np.int32)
        x = x.view(np.float32)
    else:
        x = rng.integers(-(2**63), 2**63 - 1, n, dtype=np.int64).view(np.float64)
    info = np.finfo(dtype)
    tiny = info.smallest_subnormal
    x[: n // 4] = rng.normal(size=n // 4) * 10.0 ** rng.integers(-3, 4, n // 4)
    x[n // 4 : n // 4 + 20] = tiny * rng.integers(-50, 50, 20)
    specials = [0.0, -0.0, np.inf, -np.inf, np.nan, -np.nan, tiny, -tiny]
    x[-12:] = [*specials, info.max, -info.max, info.tiny, -info.tiny]
    return rng.permutation(x).reshape(shape)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(4000,), (53, 71)])
def test_fast_state_equals_reference_on_hostile_values(dtype, shape):
    x = _hostile(dtype, shape, seed=len(shape))
    mask = np.random.default_rng(1).random(shape) < 0.3
    _check(x)
    _check(x, mask=mask)
    _check(-x, mask=~mask)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_bounds_are_compared_in_float64(dtype):
    rng = np.random.default_rng(2)
    x = (rng.normal(size=3000) * 3).astype(dtype)
    x[:6] = [0.0, -0.0, 1.0, -1.0, np.inf, -np.inf]
    x[6:40] = np.finfo(dtype).smallest_subnormal * rng.integers(-5, 6, 34)
    v = float(x[100])
    above = float(np.nextafter(np.float32(v), np.float32(np.inf)))
    bounds = [
        (-2.5, 2.5),
        (v, v),  # exactly a value of the array
        (v, above),
        # Strictly between two float32 neighbours.
        (math.nextafter(v, math.inf), math.nextafter(above, -math.inf)),
        (0.0, 0.0),
        (-0.0, 0.0),
        (0.0, -0.0),
        (-1e-300, 1e-300),  # only the zeros of float32 data inside
        (1e-300, 1.0),
        (-1.0, -1e-300),
        (float(np.finfo(np.float32).max), math.inf),
        (1e300, math.inf),
        (-math.inf, -1e300),
        (-math.inf, math.inf),
        (-1e300, 1e300),
        (math.inf, math.inf),
        (-math.inf, -math.inf),
        (1.0, -1.0),
        (math.nan, 1.0),
        (-1.0, math.nan),
    ]
    x2 = x.reshape(60, 50)
    for lower, upper in bounds:
        _check(x, lower=lower, upper=upper)
        _check(x2, lower=lower, upper=upper, mask=x2 < 0)
    # Bounds given as numpy scalars or ints behave as their float64 value.
    _check(x, lower=np.float32(-1.5), upper=2)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_float64_squares_round_underflow_and_overflow(dtype):
    if dtype == np.float32:
        values = [1e38, -3e19, 1e-30, -1e-45, 3.0, 2e-38]
    else:
        # Squares that overflow to inf (left out of the sum of squares, as
        # the digit path does) or round into the subnormals or to zero.
        values = [1e200, -1.1e154, 1e-170, -1e-310, 3.0, 1.5e-160]
    noise = np.random.default_rng(4).normal(size=500)
    x = np.concatenate([values, noise]).astype(dtype)
    state = _check(x)
    assert state.count == x.size


def test_any_layout_and_dtype():
    rng = np.random.default_rng(5)
    base = rng.normal(size=(40, 60)) * 10.0 ** rng.integers(-20, 20, (40, 60))
    base[::9, ::4] = np.nan
    mask = rng.random(base.shape) < 0.25
    for dtype in (np.float32, np.float64):
        x = base.astype(dtype)
        for view, m in [
            (x[::2, 1::3], mask[::2, 1::3]),  # strided 2-D
            (x[::-1, ::-2], mask[::-1, ::-2]),  # negative strides
            (np.asfortranarray(x), np.asfortranarray(mask)),
            (np.asfortranarray(x), mask),
            (x.T, mask),  # F-order values, a same-size mask matched in C order
            (x[5], mask[5]),  # a row
            (x[:, 7], mask[:, 7]),  # a strided column
            (x.reshape(8, 5, 60), mask.reshape(8, 5, 60)),
            (x[::2].reshape(4, 5, 60)[:, ::2], None),  # 3-D strided
            (x.ravel(), mask),  # same size, matched in C order
        ]:
            _check(view, lower=-1e10, upper=1e15, mask=m)
        frozen = x[1:]
        frozen.setflags(write=False)  # as dask or zarr may hand blocks over
        _check(frozen, mask=mask[1:])
        _check(x[3, 4])  # 0-d
        _check(x[:0], mask=mask[:0])
        _check(x[:, :0])
        assert moment_state(x[:0]) == MomentState()
    # Other dtypes go through float64, as the digit path's copy did.
    for x in (
        (base[:10] * 1e3).astype(">f4"),
        (base[:10] * 1e3).astype(">f8"),
        np.nan_to_num(np.clip(base[:10], -6e4, 6e4)).astype(np.float16),
        rng.integers(-(2**40), 2**40, (7, 9)),
        rng.integers(0, 2, (7, 9)).astype(bool),
    ):
        _check(x, lower=-1e4, upper=1e12)
    # A non-bool mask counts as its truth value.
    _check(base.astype(np.float32), mask=mask.astype(np.float64) * 3)


def test_mask_of_another_size_is_refused():
    with pytest.raises(ValueError, match="mask has shape"):
        moment_state(np.ones((4, 5), np.float32), mask=np.zeros((4, 4), bool))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_chunk_states_merge_to_the_whole(dtype):
    x = _hostile(dtype, (61, 47), seed=7)
    mask = np.random.default_rng(8).random(x.shape) < 0.2
    kw = dict(lower=-1e6, upper=1e30)
    whole = _check(x, mask=mask, **kw)
    for ny, nx in [(1, 47), (7, 5), (61, 1), (16, 16)]:
        parts = []
        for i in range(0, 61, ny):
            for j in range(0, 47, nx):
                cut = np.s_[i : i + ny, j : j + nx]
                parts.append(moment_state(x[cut], mask=mask[cut], **kw))
        assert sum(reversed(parts), MomentState()) == whole


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_blocks_above_the_bin_limit_are_cut(monkeypatch, dtype):
    x = _hostile(dtype, (23, 17), seed=9)
    mask = np.random.default_rng(10).random(x.shape) < 0.2
    with np.errstate(invalid="ignore"):
        expected = moment_state_reference(x, mask=mask, upper=1e20)
    name = "_bins_f32" if dtype == np.float32 else "_bins_f64"
    kernel = getattr(_noise, name)
    sizes = []

    def recording(values, *args):
        sizes.append(values.size)
        return kernel(values, *args)

    monkeypatch.setattr(_noise, name, recording)
    monkeypatch.setattr(_noise, "_MAX_VALUES", 5)
    assert moment_state(x, mask=mask, upper=1e20) == expected
    assert moment_state(x.ravel(), mask=mask.ravel(), upper=1e20) == expected
    assert max(sizes) <= 5 and sum(sizes) == 2 * x.size


def test_float32_bins_hold_many_large_significands():
    # Every significand at the top of its range, in two bins: the sums of M
    # and of the halves of M*M grow fastest here.
    x = np.full((300, 1000), np.nextafter(np.float32(2), np.float32(0)), np.float32)
    x[::2] *= -1
    state = _check(x)
    assert state.count == x.size


def _clipped_noise_reference(values, *, clip, maxiters, mask=None):
    """Sigma clipping about the mean as the pipeline defines it, pass by pass."""
    n, mean, std = moments(moment_state(values, mask=mask))
    if n == 0 or clip is None:
        return n, mean, std
    for _ in range(maxiters):
        lo, hi = mean - clip * std, mean + clip * std
        n2, mean2, std2 = moments(moment_state(values, lower=lo, upper=hi, mask=mask))
        if n2 == n or n2 == 0:
            break
        n, mean, std = n2, mean2, std2
    return n, mean, std


@pytest.mark.parametrize(
    ("clip", "maxiters"), [(None, 5), (3.0, 0), (3.0, 1), (3.0, 5), (1.0, 10)]
)
def test_clipped_noise_in_one_graph_equals_the_pass_by_pass_loop(clip, maxiters):
    """Tiled: every pass in one computation; same passes, same numbers."""
    rng = np.random.default_rng(7)
    values = rng.normal(0.0, 1.0, (90, 70)).astype(np.float32)
    values[rng.random(values.shape) < 0.05] += 30.0  # outliers to clip
    values[3, :] = np.nan
    mask = rng.random(values.shape) < 0.1
    want = _clipped_noise_reference(values, clip=clip, maxiters=maxiters, mask=mask)
    whole = WholeImage().clipped_moments(
        values, clip=clip, maxiters=maxiters, mask=mask
    )
    tiled = Tiled().clipped_moments(
        da.from_array(values, chunks=(40, 25)),
        clip=clip,
        maxiters=maxiters,
        mask=da.from_array(mask, chunks=(40, 25)),
    )
    assert tuple(whole) == want
    assert tuple(tiled) == want


def test_clipping_stops_when_no_pixel_is_left():
    values = np.array([[0.0, 0.0, 0.0, 1000.0]] * 4, dtype=np.float32)
    # A clip of 0.1 sigma keeps nothing after the first pass: the last good
    # pass is the answer, as in the loop.
    want = _clipped_noise_reference(values, clip=0.1, maxiters=5)
    got = Tiled().clipped_moments(da.from_array(values, chunks=2), clip=0.1, maxiters=5)
    assert tuple(got) == want
    assert want[0] == 16


def test_held_array_is_clipped_with_one_task_per_worker_thread():
    """On worker processes, each pass reads the blocks where they are held."""
    from distributed import Client, LocalCluster, get_task_stream

    from tilesky.backends._tiled import _held_groups

    rng = np.random.default_rng(11)
    values = rng.normal(0.0, 1.0, (120, 100)).astype(np.float32)
    values[rng.random(values.shape) < 0.05] += 30.0
    values[5, :] = np.nan
    mask = rng.random(values.shape) < 0.1
    want = _clipped_noise_reference(values, clip=3.0, maxiters=5, mask=mask)
    with (
        LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
        ) as cluster,
        Client(cluster) as client,
    ):
        held = client.persist(da.from_array(values, chunks=(30, 25)) * 1)
        lazy = da.from_array(mask, chunks=(30, 25))
        with get_task_stream(client) as stream:
            got = Tiled().clipped_moments(held, clip=3.0, maxiters=5, mask=lazy)
        groups = _held_groups(held)
        holders = client.who_has(list(held.__dask_graph__().values()))
    assert tuple(got) == want
    # Every block in exactly one group, each group on one worker.
    assert sorted(n for g in groups for n in g) == list(range(16))
    keys = list(held.__dask_keys__())
    flat = [k for row in keys for k in row]
    for group in groups:
        assert len({holders[flat[n]][0] for n in group}) == 1
    passes = [r for r in stream.data if str(r["key"]).startswith("('noise-block")]
    assert len(passes) % len(groups) == 0
    assert len(groups) <= 2 < len(passes)
    # Not held: a task per block.
    assert _held_groups(da.from_array(values, chunks=(30, 25))) is None

"""Building a stage's graph computes nothing; the invariant on tiny chunks.

Where a step must compute while its graph is built, the reason is inherent
and said here: a global noise level or a mesh's global minimum is a number
the next stage's kernel needs as a parameter.
"""

import contextlib

import dask
import dask.array as da
import numpy as np
import pytest

from tilesky import estimate_background
from tilesky.backends import Tiled
from tilesky.config import Config
from tilesky.stages import _first_mask, _ring_median, _smoothfit, _source_mask
from tilesky.stages._interpolate import to_pixels
from tilesky.stages._mesh import MeshMaps


class _NoCompute:
    """A dask scheduler that fails: any compute inside the block is a bug."""

    def __call__(self, dsk, keys, **kwargs):
        msg = "a graph-building step computed"
        raise RuntimeError(msg)


@contextlib.contextmanager
def raise_if_dask_computes():
    with dask.config.set(scheduler=_NoCompute()):
        yield


def test_the_guard_catches_a_compute():
    with raise_if_dask_computes(), pytest.raises(RuntimeError, match="computed"):
        da.ones(10, chunks=5).sum().compute()


@pytest.fixture(scope="module")
def arrays():
    rng = np.random.default_rng(0)
    image = rng.normal(0, 1, (240, 300)).astype(np.float32)
    scene = da.from_array(image, chunks=(120, 150))
    mask = da.from_array(image > 2, chunks=(120, 150))
    return scene, mask


def test_local_stages_build_without_computing(arrays):
    scene, mask = arrays
    cfg = Config()
    backend = Tiled(cut_halos=False)
    with raise_if_dask_computes():
        smoothed = _ring_median.stage(cfg)(backend, scene)
        first = _first_mask.apply(backend, smoothed, {"std": 0.5}, None, mask, cfg=cfg)
        local = _first_mask.apply(backend, smoothed, scene, None, None, cfg=cfg)
        masks = _source_mask.apply(backend, scene, {"std": 0.5}, None, mask, cfg=cfg)
        fit = _smoothfit.stage(cfg)(backend, scene, masks)
    assert first.dtype == bool and local.dtype == bool and masks.dtype == bool
    assert smoothed.dtype == np.float32 and fit.dtype == np.float32
    # Task names say which stage a task belongs to.
    assert smoothed.name.startswith("ring-median-")
    assert first.name.startswith("source-mask-")
    assert fit.name.startswith("smoothfit-")


def test_idw_interpolation_builds_without_computing(arrays):
    scene, _ = arrays
    cfg = Config()
    m = cfg.final_mesh
    shape = tuple(-(-n // b) for n, b in zip(scene.shape, m.box_size, strict=True))
    mesh = da.ones(shape, dtype=np.float32, chunks=(20, 25))
    maps = MeshMaps(mesh, mesh, mesh, mesh.astype(np.int32))
    backend = Tiled(cut_halos=False)
    with raise_if_dask_computes():
        bkg, rms = to_pixels(
            backend, maps, m, like=scene, label="t", fallback=scene, coverage=scene
        )
    assert bkg.chunks == scene.chunks and rms.chunks == scene.chunks
    assert bkg.name.startswith("interpolate-")
    np.testing.assert_array_equal(rms.compute(scheduler="sync"), 1.0)


@pytest.fixture(scope="module")
def small_scene():
    from tilesky.simulate import simulate_scene

    return simulate_scene((301, 437), seed=11).compute().scene.values


def test_tiling_invariant_with_chunks_smaller_than_the_largest_halo(small_scene):
    """The smooth fit's halo (114 px by default) is wider than 60x90 tiles:
    a tile's halo then spans several neighbouring blocks, and the result is
    still the whole-image one, bit for bit."""
    from tilesky.stages._smoothfit import depth

    sf = Config().smoothfit
    halo = depth(scale=sf.scale, truncate=sf.truncate, step=sf.step)
    assert halo > 90
    mono = estimate_background(small_scene)
    tiled = estimate_background(small_scene, chunks=(60, 90))
    np.testing.assert_array_equal(tiled.mask.values, mono.mask.values)
    for name in ("background", "background_rms", "subtracted"):
        np.testing.assert_array_equal(tiled[name].values, mono[name].values)


def test_held_arrays_share_one_memory_budget(monkeypatch):
    """`Tiled.hold` keeps an array in memory only while everything it holds
    fits one budget together; a released array frees its share."""
    import gc

    import tilesky.cluster

    image = da.ones((200, 200), dtype=np.float32, chunks=100)  # 160 kB each
    monkeypatch.setattr(tilesky.cluster, "holdable_bytes", lambda client=None: 250_000)
    backend = Tiled()
    with dask.config.set(scheduler="threads"):
        first = backend.hold(image + 1)
        second = backend.hold(image + 2)
        assert first.dask.keys() == {(first.name, i, j) for i in (0, 1) for j in (0, 1)}
        assert len(first.dask) == 4  # materialized: its blocks only
        assert len(second.dask) > 4  # over the budget: still the lazy graph
        assert backend.hold(first) is first  # the same array is held once
        del first
        gc.collect()
        third = backend.hold(image + 3)
        assert len(third.dask) == 4  # the first one's share was freed
        np.testing.assert_array_equal(third.compute(), np.full((200, 200), 4.0))

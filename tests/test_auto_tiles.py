"""``chunks="auto"``: large in-memory images run tiled on threads, same bits."""

import logging

import dask
import numpy as np
import pytest

from tilesky import estimate_background, simulate_scene


@pytest.fixture(scope="module")
def scene():
    # Tall enough for two row bands of at least RUN_TILE / 4 = 512 rows.
    return simulate_scene((1110, 700), seed=11, chunks=1110).scene.values


def _run(scene, caplog, **kw):
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="tilesky"):
        ds = estimate_background(scene, **kw)
    tiled = any("running tiled" in r.getMessage() for r in caplog.records)
    return ds, tiled


def test_auto_tiles_a_large_image_on_two_threads_bit_for_bit(scene, caplog):
    reference, tiled = _run(scene, caplog, chunks=None)
    assert not tiled
    with dask.config.set(num_workers=2):
        auto, tiled = _run(scene, caplog)
    assert tiled
    for name in ("background", "background_rms", "mask", "subtracted"):
        np.testing.assert_array_equal(auto[name].values, reference[name].values)
    assert auto.attrs["noise"] == reference.attrs["noise"]
    assert isinstance(auto.background.data, np.ndarray)


def test_auto_runs_whole_on_one_thread_or_a_small_image(scene, caplog):
    with dask.config.set(num_workers=1):
        _, tiled = _run(scene, caplog)
    assert not tiled
    with dask.config.set(num_workers=2):
        _, tiled = _run(scene[:600], caplog)
    assert not tiled

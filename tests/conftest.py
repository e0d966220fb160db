"""Shared fixtures: simulated scenes (computed once per session)."""

import os

import numpy as np
import pytest

os.environ.setdefault("NUMBA_NUM_THREADS", "1")


@pytest.fixture(scope="session")
def scene_2000():
    """The notebook scene at 2000x2000, seed 4, as numpy arrays."""
    from tilesky.simulate import simulate_scene

    ds = simulate_scene((2000, 2000), seed=4, chunks=1000)
    return ds.compute()


@pytest.fixture(scope="session")
def scene_1000(scene_2000):
    from tilesky.simulate import simulate_scene

    return simulate_scene((1000, 1000), seed=4, chunks=500).compute()


@pytest.fixture(scope="session")
def rng():
    return np.random.default_rng(0)

"""The notebook port used as the benchmark baseline (benchmarks/notebook_port.py)."""

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "notebook_port.py"


@pytest.fixture(scope="module")
def port():
    name = "tilesky_bench_notebook_port"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, _PATH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def small_scene():
    from tilesky.simulate import simulate_scene

    return simulate_scene((300, 300), seed=1).compute()


def test_pipeline_improves_on_bkg4(port, small_scene):
    timings = {}
    out = port.run_notebook_pipeline(small_scene["scene"].values, timings=timings)
    assert list(timings) == list(port.STAGES)
    assert all(t > 0 for t in timings.values())
    for key in ("ring", "bkg4", "bkg5"):
        assert out[key].shape == (300, 300)
        assert np.isfinite(out[key]).all()
    for key in ("first_mask", "dilated_mask", "mask"):
        assert out[key].dtype == bool
    # The first mask handed on is the undilated one, as in the notebook.
    assert not np.array_equal(out["first_mask"], out["dilated_mask"])
    # The multi-scale mask is deeper than the first one.
    assert out["mask"].sum() > out["first_mask"].sum()

    truth = small_scene["truth"].values.astype(np.float64)
    rms4 = float(np.std(out["bkg4"] - truth))
    rms5 = float(np.std(out["bkg5"] - truth))
    assert rms5 < rms4
    assert rms5 < 0.03


def test_make_source_mask_groups_and_threshold(port):
    rng = np.random.default_rng(0)
    img = rng.normal(0.0, 0.1, (80, 80))
    img[10, 10:12] = 5.0  # 2 pixels: below n_pixels=3
    img[30, 30] = img[31, 31] = img[32, 32] = 5.0  # 3, joined diagonally only
    img[50:53, 50] = 5.0  # 3 in a column
    got = port.make_source_mask(img, 5.0, 3, dilate_size=1)
    assert not got[10, 10:12].any()
    assert got[30, 30] and got[31, 31] and got[32, 32]
    assert got[50:53, 50].all()
    assert got.sum() == 6

    # dilate_size grows each kept group by a square.
    grown = port.make_source_mask(img, 5.0, 3, dilate_size=3)
    assert grown[49:54, 49:52].all()
    assert not grown[10, 10:12].any()


def test_dilate_mask_keeps_the_notebook_quirk(port):
    mask = np.zeros((15, 15), dtype=bool)
    mask[7, 7] = True
    # Tophat(2) has 13 pixels of 1/13 < 1/(4 pi): a lone pixel vanishes.
    assert not port.dilate_mask(mask, 2).any()
    # Tophat(4) has 49 pixels of 1/49 >= 1/(16 pi): it grows to a disc.
    assert port.dilate_mask(mask, 4).sum() == 49
    pair = mask.copy()
    pair[7, 8] = True
    assert port.dilate_mask(pair, 2)[7, 7]


def test_multiple_ignores_the_accumulated_mask(port, small_scene):
    img = small_scene["scene"].values.astype(np.float64) - 1.0
    sm = port.SourceMask(img, nsigma=1.5)
    combined = sm.multiple(filter_fwhm=[1, 3], tophat_size=[4, 2])
    separate = port.SourceMask(img, nsigma=1.5)
    expected = separate.single(filter_fwhm=1, tophat_size=4) | separate.single(
        filter_fwhm=3, tophat_size=2
    )
    np.testing.assert_array_equal(combined, expected)

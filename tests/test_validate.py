"""`tilesky validate`: injection into a real run store, rerun, recovery numbers."""

from __future__ import annotations

import json

import dask.array as da
import numpy as np
import pytest
import xarray as xr

from tilesky import StoreError, run_to_store, write_simulation
from tilesky.cli import main
from tilesky.config import load_config
from tilesky.validate import Injection, validate_run

SHAPE = (480, 480)
BAD = [
    "final_method=mesh",
    "final_mesh.box_size=3",
    "final_mesh.filter_size=1",
    "first_mask.n_sigma=1000",
    "source_mask.n_sigma=1000",
]


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    path = tmp_path_factory.mktemp("validate") / "sim.zarr"
    write_simulation(str(path), shape=SHAPE, seed=3, chunks=240)
    return str(path)


def _run(scene, out, overrides=()):
    cfg = load_config(overrides=overrides)
    run_to_store(scene, str(out), config=cfg, chunks=240)
    return str(out)


@pytest.fixture(scope="module")
def default_run(scene, tmp_path_factory):
    return _run(scene, tmp_path_factory.mktemp("validate") / "run.zarr")


@pytest.fixture(scope="module")
def default_result(default_run):
    return validate_run(default_run, sizes=(10, 20, 40))


def _mean_kept(result):
    return float(np.mean([d["kept"] for d in result["disks"]]))


def test_injection_does_not_depend_on_tiling():
    inj = Injection((301, 257), 0.1, seed=2, sizes=(10, 20), surface_brightness=(1, 3))
    image = np.random.default_rng(0).normal(size=(301, 257)).astype(np.float32)
    one = inj.injected(da.from_array(image, chunks=-1)).compute()
    many = inj.injected(da.from_array(image, chunks=(64, 100))).compute()
    np.testing.assert_array_equal(one, many)
    added = one.astype(np.float64) - image
    assert added.max() > 0.25  # a 3-sigma disk centre on top of the pattern
    assert np.abs(inj.pattern(0, 301, 0, 257)).max() <= 0.2 + 1e-12


def test_default_run_recovers_the_pattern(default_run, default_result):
    r = default_result
    # Two waves of 1 sigma each; the default follows them to a small fraction.
    assert 0 < r["pattern_rms_sigma"] < 0.2
    assert r["pattern_peak_sigma"] < 1.0
    assert r["pattern_pixels"] == SHAPE[0] * SHAPE[1]
    assert len(r["disks"]) == 12 and len(r["table"]) == 3
    assert all(d["kept"] is not None for d in r["disks"])
    assert r["chunks"] == [240, 240]


def test_results_are_stored(default_run, default_result):
    stored = json.loads(open(f"{default_run}/validation.json").read())
    assert stored["table"] == default_result["table"]
    ds = xr.open_zarr(default_run)
    assert ds.attrs["tilesky_status"] == "complete"
    assert ds.attrs["validation"]["table"] == default_result["table"]


def test_no_injection_reproduces_the_stored_background(default_run):
    r = validate_run(default_run, amplitude=0.0, sizes=(10,), write=False)
    assert r["pattern_rms_sigma"] < 1e-4


def test_a_bad_configuration_scores_worse(scene, tmp_path, default_result):
    bad = validate_run(_run(scene, tmp_path / "bad.zarr", BAD), sizes=(10, 20, 40))
    # Box 3 and no masks: the background follows everything and eats the
    # disks. (It follows the pattern too, and the noise the same way in both
    # reruns, so the pattern alone cannot tell it apart.)
    assert _mean_kept(bad) < _mean_kept(default_result) - 0.05
    assert bad["pattern_rms_sigma"] < 1.0


def test_same_seed_same_numbers(default_run, default_result):
    again = validate_run(default_run, sizes=(10, 20, 40), write=False)
    assert again["table"] == default_result["table"]
    other = validate_run(default_run, sizes=(10, 20, 40), seed=1, write=False)
    assert other["disks"][0]["x"] != default_result["disks"][0]["x"]


def test_cli_prints_the_table(default_run, capsys):
    assert (
        main(["validate", default_run, "--scheduler", "threads", "--sizes", "20"]) == 0
    )
    err = capsys.readouterr().err
    assert "recovered to RMS" in err and "Re 20" in err and "validation.json" in err


def test_cli_refuses_what_it_cannot_validate(tmp_path, scene, capsys):
    assert main(["validate", str(tmp_path / "none.zarr")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no tilesky run" in err[0]
    image = np.random.default_rng(0).normal(size=(240, 240)).astype(np.float32)
    out = tmp_path / "array.zarr"
    run_to_store(image, str(out), config=load_config())
    with pytest.raises(StoreError, match="cannot be read again"):
        validate_run(str(out))


def test_changed_input_is_refused(tmp_path):
    path = str(tmp_path / "sim.zarr")
    write_simulation(path, shape=(240, 240), seed=1, chunks=240)
    run = _run(path, tmp_path / "run.zarr")
    write_simulation(path, shape=(240, 480), seed=1, chunks=240, overwrite=True)
    with pytest.raises(StoreError, match="changed since the run"):
        validate_run(run)

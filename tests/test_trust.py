"""The trust check: a warning when the background follows an extended object."""

import numpy as np
import pytest
import zarr

import tilesky
from tilesky._trust import trust_check
from tilesky.cli import main
from tilesky.metrics import compute_metrics

SHAPE = (600, 600)
NOISE = 0.1


def _galaxy(sigma=60.0, peak=20 * NOISE):
    yy, xx = np.indices(SHAPE)
    r2 = (yy - 300.0) ** 2 + (xx - 300.0) ** 2
    return peak * np.exp(-r2 / (2 * sigma**2))


def _scene(seed, galaxy):
    sim = tilesky.simulate_scene(SHAPE, seed=seed, chunks=-1, noise_sigma=NOISE)
    img = sim["scene"].values.astype(np.float64)
    return img + _galaxy() if galaxy else img


def _check(img):
    out = tilesky.estimate_background(img)
    metrics = compute_metrics(img, out["background"].values, out["mask"].values)
    return trust_check(metrics)


@pytest.mark.parametrize("seed", [4, 23])
def test_fires_on_a_large_bright_galaxy(seed):
    got = _check(_scene(seed, galaxy=True))
    assert not got["trusted"], got
    assert got["reasons"] == ["bias"]
    assert "extended object" in got["message"] and "try" in got["message"]
    assert "\n" not in got["message"]


@pytest.mark.parametrize("seed", [4, 11])
def test_silent_on_the_notebook_scene(seed):
    got = _check(_scene(seed, galaxy=False))
    assert got["trusted"], got
    assert got["reasons"] == []
    assert got["bias_z"] is not None and got["masked_fraction"] is not None


def test_other_signs_and_missing_metrics():
    assert trust_check(None)["trusted"]
    mostly = {"bias": {"z": 0.1, "difference": 0.0, "n_masked": 7, "n_unmasked": 3}}
    assert trust_check(mostly)["reasons"] == ["masked_fraction"]
    lumpy = {
        "scale": {
            "sigma": 1.0,
            "widths": [5, 10, 20],
            "ratio_ideal": [3.0, 1.1, 2.0],
            "n_blocks": [400, 100, 25],
        }
    }
    got = trust_check(lumpy)
    assert got["reasons"] == ["large_scale_rms"] and got["max_ratio"] == 2.0


def test_cli_prints_one_line_and_stores_it(tmp_path, capsys):
    img = _scene(4, galaxy=True).astype(np.float32)
    src = tmp_path / "galaxy.zarr"
    zarr.save_array(str(src), img)
    out = tmp_path / "out.zarr"
    code = main(["run", str(src), str(out), "--scheduler", "threads", "--no-report"])
    err = capsys.readouterr().err
    assert code == 0, err
    lines = [line for line in err.splitlines() if "may not be trusted" in line]
    assert len(lines) == 1 and lines[0].startswith("tilesky: warning:"), err
    trust = zarr.open_group(str(out), mode="r").attrs["trust"]
    assert trust["trusted"] is False and trust["reasons"] == ["bias"]

"""Images smaller than the tiling's chunk multiple (the lcm of the boxes)."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits

from tilesky import InputError, estimate_background
from tilesky.config import load_config

SMALL = ["final_mesh.box_size=64", "ring.radius_in=6", "ring.width=3"]


def _image(shape, seed=0):
    rng = np.random.default_rng(seed)
    x = np.arange(shape[1])[None, :]
    return (10 + 0.01 * x + rng.normal(0, 1, shape)).astype(np.float32)


def test_256_image_with_box_64_runs_whole_and_tiled():
    cfg = load_config(overrides=SMALL)
    # The lcm of the boxes is larger than the image: a tiling constraint only.
    assert min(cfg.chunk_multiple) > 256
    img = _image((256, 256))
    whole = estimate_background(img, overrides=SMALL)
    tiled = estimate_background(img, overrides=SMALL, chunks=128)
    assert np.isfinite(whole["background"].values).all()
    np.testing.assert_allclose(
        tiled["background"].values, whole["background"].values, rtol=0, atol=1e-4
    )
    np.testing.assert_array_equal(tiled["mask"].values, whole["mask"].values)


def test_small_fits_file_runs(tmp_path):
    path = tmp_path / "small.fits"
    fits.PrimaryHDU(_image((256, 300))).writeto(path)
    ds = estimate_background(str(path), overrides=SMALL)
    assert ds["background"].shape == (256, 300)


@pytest.mark.parametrize("chunks", [None, 64])
def test_too_small_names_the_box_the_user_set(chunks):
    img = _image((50, 256))
    with pytest.raises(InputError) as info:
        estimate_background(img, overrides=SMALL, chunks=chunks)
    text = str(info.value)
    assert "final_mesh.box_size=(64, 64)" in text
    assert "first_mesh.box_size=(10, 10)" not in text  # it fits
    cfg = load_config(overrides=SMALL)
    assert str(cfg.chunk_multiple) not in text

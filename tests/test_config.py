"""Configuration: defaults, TOML, overrides, validation."""

import pytest

from tilesky.config import PRESETS, Config, ConfigError, load_config


def test_defaults_are_the_notebook_choices():
    cfg = PRESETS["notebook"]
    assert (cfg.ring.radius_in, cfg.ring.width) == (15, 5)
    assert cfg.first_mask.smooth_sigma == 3 and cfg.first_mask.dilate_radius == 2
    fm = cfg.first_mesh
    assert fm.box_size == (10, 10) and fm.filter_size == (5, 5)
    assert (fm.n_neighbors, fm.power, fm.regularization) == (20, 1.0, 30.0)
    sm = cfg.source_mask
    assert sm.fwhm == (1.0, 3.0, 5.0) and sm.tophat_radius == (4, 2, 1)
    assert (sm.n_sigma, sm.n_pixels) == (1.5, 3)
    m = cfg.final_mesh
    assert m.box_size == (6, 6) and m.filter_size == (3, 3)
    assert m.bkg_estimator == "median" and m.sigma_clip == 3.0
    assert (m.exclude_percentile, m.n_neighbors, m.power) == (90.0, 20, 0.0)


def test_default_is_the_smooth_fit_iterated_twice():
    cfg = Config()
    assert PRESETS["default"] == cfg
    assert cfg.final_method == "smoothfit" and cfg.n_rounds == 2
    assert cfg.smoothfit.scale == 25.0 and cfg.smoothfit.order == 2
    assert PRESETS["notebook"].final_method == "mesh"
    assert PRESETS["notebook"].n_rounds == 1
    assert PRESETS["notebook"].chunk_multiple == (30, 30)


def test_toml_and_overrides(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('noise_mode = "local"\n[final_mesh]\nbox_size = [8, 4]\n')
    cfg = load_config(
        path, overrides=["final_mesh.bkg_estimator=sextractor", "n_rounds=2"]
    )
    assert cfg.noise_mode == "local"
    assert cfg.final_mesh.box_size == (8, 4)
    assert cfg.final_mesh.bkg_estimator == "sextractor"
    assert cfg.n_rounds == 2
    # boxes (10, 10) and (8, 4) plus the smooth-fit grid step 6
    assert cfg.chunk_multiple == (120, 60)
    assert Config.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ("final_mesh.filter_size=4", "filter_size must be odd"),
        ("final_mesh.box_size=0", "box_size must be positive"),
        ("final_mesh.bkg_estimator=eval('1')", "bkg_estimator must be one of"),
        ("final_mesh.exclude_percentile=120", "exclude_percentile must be between"),
        ("noise_mode=loud", "noise_mode must be one of"),
        ("nosuch=1", "unknown configuration key"),
        ("final_mesh.nosuch=1", "unknown key"),
        ("ring.radius_in=-3", "ring.radius_in must be an integer >= 0"),
        ("ring.width=0", "ring.width must be an integer >= 1"),
        ("source_mask.fwhm=[1, 2]", "same, non-zero length"),
        ("justtext", r"^overrides expects key=value strings, got 'justtext'$"),
    ],
)
def test_bad_parameters_are_named(override, match):
    with pytest.raises(ConfigError, match=match):
        Config().with_overrides([override])


def test_filled_disk_ring_is_valid():
    # The ring kernel's own bound: radius_in=0 is a disk median.
    assert Config().with_overrides(["ring.radius_in=0"]).ring.radius_in == 0


def test_unknown_preset_and_bad_toml(tmp_path):
    with pytest.raises(ConfigError, match="unknown preset"):
        load_config(preset="nope")
    bad = tmp_path / "bad.toml"
    bad.write_text("[final_mesh\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)

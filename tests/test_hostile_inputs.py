"""Options, targets, stray files, configs and WCS that once went wrong (issue 21).

Each case runs the real ``tilesky`` command in a subprocess on real Zarr and
FITS files: storage options beside a local output, ``tilesky report`` aimed
at an input store, stray files in an input store, configuration files that
set a preset, are not UTF-8, or bound ``max_distance``, and a FITS header
whose WCS wcslib refuses, at export.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import zarr

pytestmark = pytest.mark.timeout(180)

THREADS = ("--scheduler", "threads")


def _tilesky(*argv: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tilesky.cli", *argv],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=150,
        cwd=cwd,
    )


def _one_error(proc: subprocess.CompletedProcess, pattern: str) -> str:
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tilesky: error: "), proc.stderr
    assert pattern in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("inputs") / "in.zarr"
    group = zarr.open_group(str(path), mode="w")
    arr = group.create_array("scene", shape=(300, 300), chunks=(150, 150), dtype="f4")
    arr[:] = np.random.default_rng(2).normal(100.0, 5.0, (300, 300)).astype("f4")
    return path


@pytest.mark.parametrize("workers", [THREADS, ()], ids=["threads", "local"])
def test_storage_option_with_a_local_output(scene, tmp_path, workers):
    """The options are the object store's; the local output (and the report
    read from it) take none."""
    out = tmp_path / "out.zarr"
    proc = _tilesky(
        "run", str(scene), str(out), *workers, "--storage-option", "anon=true"
    )
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert (tmp_path / "out_report" / "report.html").exists()
    assert zarr.open_group(str(out), mode="r").attrs["tilesky_status"] == "complete"


def test_report_refuses_an_input_store(scene, tmp_path):
    before = sorted(p.name for p in scene.rglob("*"))
    _one_error(_tilesky("report", str(scene)), "is not a tilesky run")
    assert sorted(p.name for p in scene.rglob("*")) == before
    assert not (scene.parent / "in_report").exists()


def test_stray_files_in_an_input_store_print_no_zarr_warnings(tmp_path):
    """A README and a plots folder beside the image's array."""
    store = tmp_path / "in.zarr"
    group = zarr.open_group(str(store), mode="w")
    arr = group.create_array("scene", shape=(300, 300), chunks=(150, 150), dtype="f4")
    arr[:] = np.random.default_rng(3).normal(100.0, 5.0, (300, 300)).astype("f4")
    (store / "README.txt").write_text("notes\n")
    (store / "plots").mkdir()
    (store / "plots" / "a.png").write_bytes(b"\x89PNG")
    out = tmp_path / "o.zarr"
    proc = _tilesky("run", str(store), str(out), "--no-report", *THREADS)
    assert proc.returncode == 0, proc.stderr
    assert "not recognized" not in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_max_distance_is_bounded(scene, tmp_path):
    out = tmp_path / "o.zarr"
    proc = _tilesky(
        "run", str(scene), str(out), *THREADS, "--set", "final_mesh.max_distance=1e9"
    )
    _one_error(proc, "max_distance must be at most 1024 boxes")
    assert not out.exists()


def test_toml_preset_is_used_and_a_bogus_one_refused(scene, tmp_path):
    good = tmp_path / "good.toml"
    good.write_text('preset = "notebook"\n')
    out = tmp_path / "o.zarr"
    proc = _tilesky(
        "run", str(scene), str(out), *THREADS, "--no-report", "--config", str(good)
    )
    assert proc.returncode == 0, proc.stderr
    via_flag = tmp_path / "flag.zarr"
    proc = _tilesky(
        "run",
        str(scene),
        str(via_flag),
        *THREADS,
        "--no-report",
        "--preset",
        "notebook",
    )
    assert proc.returncode == 0, proc.stderr
    a = zarr.open_group(str(out), mode="r").attrs["config"]
    b = zarr.open_group(str(via_flag), mode="r").attrs["config"]
    assert a == b
    bogus = tmp_path / "bogus.toml"
    bogus.write_text('preset = "bogus"\n')
    proc = _tilesky(
        "run", str(scene), str(tmp_path / "b.zarr"), *THREADS, "--config", str(bogus)
    )
    _one_error(proc, "unknown preset 'bogus'")
    assert not (tmp_path / "b.zarr").exists()


@pytest.mark.parametrize("encoding", ["latin-1", "utf-16"])
def test_config_file_that_is_not_utf8(scene, tmp_path, encoding):
    path = tmp_path / "c.toml"
    path.write_bytes("[ring]\nradius_in = 3 # réglé\n".encode(encoding))
    proc = _tilesky(
        "run", str(scene), str(tmp_path / "o.zarr"), *THREADS, "--config", str(path)
    )
    _one_error(proc, "is not UTF-8 text")


@pytest.mark.parametrize("fault", ["singular", "inconsistent"])
def test_export_of_a_run_whose_input_wcs_is_unusable(tmp_path, fault):
    from astropy.io import fits

    header = fits.Header()
    header.update(
        CTYPE1="RA---TAN",
        CTYPE2="DEC--TAN",
        CRVAL1=150.0,
        CRVAL2=2.0,
        CRPIX1=100.0,
        CRPIX2=100.0,
        CDELT1=-1e-4,
        CDELT2=1e-4,
    )
    if fault == "singular":
        header.update(CDELT1=0.0, CDELT2=0.0)
    else:
        header["CTYPE2"] = "RA---TAN"
    image = np.random.default_rng(4).normal(100.0, 5.0, (300, 300)).astype("f4")
    fits.PrimaryHDU(image, header=header).writeto(tmp_path / "wcs.fits")
    out = tmp_path / "run.zarr"
    proc = _tilesky(
        "run", str(tmp_path / "wcs.fits"), str(out), *THREADS, "--no-report"
    )
    assert proc.returncode == 0, proc.stderr
    proc = _tilesky("export", str(out), "--fits", str(tmp_path / "fits"))
    _one_error(proc, "the input's WCS cannot be used")
    assert (
        not list((tmp_path / "fits").glob("*.fits"))
        if (tmp_path / "fits").exists()
        else True
    )

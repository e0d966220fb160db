"""Hostile input: one clear error, no traceback, no hang, no finished-looking output.

Every case below is fed to the command line (``tilesky run ... --scheduler
threads``), to :func:`tilesky.estimate_background` (on the same file and, where
the problem can be held in memory, on the in-memory array too) and to
:func:`tilesky.run_to_store`. Each must fail the same way: exit code 1 (2 for
argparse usage errors) with exactly one ``tilesky: error:`` line on stderr that
names the problem, a ``ValueError`` subclass from the API with the same
message, and no output that looks finished: the output path is absent or a
store whose ``tilesky_status`` is not ``"complete"`` (and :func:`open_run`
refuses it), and an existing output is left byte for byte as it was.

Decisions recorded here:

* a boolean image is rejected (it is a mask given where the image goes; its
  "background" of zeros and ones means nothing), as are string, object and
  complex data;
* an image smaller than the ring-median footprint or a mesh box is rejected,
  naming both sizes and the settings that shrink them. Reflect padding would
  make a number, but once the annulus is wider than the image it is filled
  with mirrored copies of the very pixels (and sources) it should exclude, so
  the first mask and everything after it would be a silent wrong answer;
* a constant image is rejected: its noise is zero, so every threshold is zero;
* an output that is, or contains, the input, mask or weight is refused even
  with ``--overwrite`` (creating the output would delete what it reads);
* with ``--overwrite``, an input that fails only in the pipeline (all NaN)
  removes the previous run rather than keeping it: what is left is never a
  finished-looking store.
"""

from __future__ import annotations

import gzip
import hashlib
import re
import shutil
import subprocess
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr
from astropy.io import fits

from tilesky import estimate_background, run_to_store
from tilesky._dispatch import resolve_config
from tilesky.cli import main
from tilesky.config import ConfigError
from tilesky.io import InputError
from tilesky.pipeline import PipelineError
from tilesky.store import StoreError, open_run

pytestmark = pytest.mark.timeout(60)

API_ERRORS = (InputError, ConfigError, StoreError, PipelineError)
SHAPE = (60, 60)


@dataclass
class Case:
    """One hostile input, as the CLI and the API each spell it."""

    source: str
    pattern: str
    #: Extra CLI arguments after ``run IN OUT``.
    cli: list[str] = field(default_factory=list)
    #: Keyword arguments for estimate_background/run_to_store (config ones
    #: go through resolve_config for run_to_store).
    api: dict[str, Any] = field(default_factory=dict)
    #: The API's message, when it differs from the CLI's.
    api_pattern: str | None = None
    #: In-memory forms of the same input for estimate_background.
    arrays: tuple = ()
    code: int = 1
    #: An output that exists before the call (else tmp/out.zarr, absent).
    out: Path | None = None
    #: estimate_background has no output: skip it for output-only cases.
    estimate: bool = True
    #: With --overwrite the existing output may be gone or unfinished
    #: instead of untouched (never finished-looking).
    replaceable: bool = False


# -- builders ---------------------------------------------------------------


def _noise(shape=SHAPE, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).normal(10.0, 1.0, shape).astype(np.float32)


def _fits(path: Path, data) -> str:
    fits.PrimaryHDU(data).writeto(path)
    return str(path)


def _zarr(path: Path, data: np.ndarray) -> str:
    group = zarr.open_group(str(path), mode="w")
    with warnings.catch_warnings():
        # Fixed-width strings have no Zarr v3 spec yet; zarr says so.
        warnings.simplefilter("ignore")
        arr = group.create_array("scene", shape=data.shape, dtype=data.dtype)
    arr[...] = data
    return str(path)


def _good(tmp: Path) -> str:
    path = tmp / "good.fits"
    return str(path) if path.exists() else _fits(path, _noise())


def _one_d(tmp):
    data = _noise((3600,))
    return Case(
        _zarr(tmp / "line.zarr", data), r"\(3600,\) \(1-D\).*2-D", arrays=(data,)
    )


def _three_d(tmp):
    data = np.stack([_noise(), _noise()])
    return Case(
        _zarr(tmp / "cube.zarr", data), r"\(2, 60, 60\) \(3-D\).*2-D", arrays=(data,)
    )


def _fits_cube(tmp):
    return Case(_fits(tmp / "cube.fits", np.stack([_noise()] * 3)), r"no 2-D image HDU")


def _strings(tmp):
    data = np.full(SHAPE, "sky")
    objects = _noise().astype(object)
    return Case(
        _zarr(tmp / "text.zarr", data), r"non-numeric dtype", arrays=(data, objects)
    )


def _booleans(tmp):
    data = _noise() > 10
    return Case(
        _zarr(tmp / "bool.zarr", data),
        r"boolean dtype.*a mask is not an image",
        arrays=(data,),
    )


def _complex(tmp):
    data = (_noise() + 1j * _noise(seed=1)).astype(np.complex64)
    return Case(
        _zarr(tmp / "complex.zarr", data), r"complex dtype complex64", arrays=(data,)
    )


def _all_nan(tmp):
    data = np.full(SHAPE, np.nan, np.float32)
    return Case(_fits(tmp / "nan.fits", data), r"no finite pixels", arrays=(data,))


def _all_inf(tmp):
    data = np.full(SHAPE, np.inf, np.float32)
    data[::2] = -np.inf
    return Case(_fits(tmp / "inf.fits", data), r"no finite pixels", arrays=(data,))


def _constant(tmp):
    data = np.full(SHAPE, 7.5, np.float32)
    return Case(
        _fits(tmp / "flat.fits", data), r"noise of the image is zero", arrays=(data,)
    )


def _tiny(tmp):
    data = _noise((5, 5))
    return Case(
        _fits(tmp / "tiny.fits", data),
        r"\(5, 5\) is too small.*ring.*41x41.*box_size",
        arrays=(data,),
    )


def _smaller_than_ring(tmp):
    # Larger than every mesh box and the chunk multiple (30), smaller than the
    # 41x41 ring: reflect padding could process it, tilesky refuses it.
    data = _noise((35, 80))
    return Case(
        _fits(tmp / "narrow.fits", data),
        r"\(35, 80\) is too small.*ring.*41x41.*ring\.radius_in",
        arrays=(data,),
    )


def _empty(tmp):
    data = np.zeros((0, 60), np.float32)
    return Case(
        _zarr(tmp / "empty.zarr", data), r"\(0, 60\): it is empty", arrays=(data,)
    )


def _huge_header(tmp):
    # The header promises 100000 x 100000 float32 pixels (40 GB) and the file
    # holds none: refuse at once, without trying to read them.
    header = fits.Header()
    header["SIMPLE"] = True
    header["BITPIX"] = -32
    header["NAXIS"] = 2
    header["NAXIS1"] = 100_000
    header["NAXIS2"] = 100_000
    path = tmp / "huge.fits"
    path.write_bytes(header.tostring(padding=True).encode())
    return Case(str(path), r"huge\.fits' is truncated: .* needs 40000002880 bytes")


def _mask_shape(tmp):
    mask = tmp / "mask.fits"
    _fits(mask, np.zeros((50, 60), np.uint8))
    return Case(
        _good(tmp),
        r"mask has shape \(50, 60\) but the image has shape \(60, 60\)",
        cli=["--mask", str(mask)],
        api={"mask": mask},  # a Path, not a str
        arrays=(_noise(),),
    )


def _mask_array_shape(tmp):
    return Case(
        _good(tmp),
        r"mask has shape \(60, 50\) but the image has shape \(60, 60\)",
        cli=["--mask", _zarr(tmp / "mask.zarr", np.zeros((60, 50), bool))],
        api={"mask": np.zeros((60, 50), bool)},
    )


def _weight_strings(tmp):
    return Case(
        _good(tmp),
        r"Zarr array 'scene' of '.*weight\.zarr' has non-numeric dtype",
        cli=["--weight", _zarr(tmp / "weight.zarr", np.full(SHAPE, "1"))],
        api={"weight": np.full(SHAPE, "1")},
        api_pattern=r"weight must be boolean or numeric, got dtype <U1",
    )


def _weight_shape(tmp):
    weight = tmp / "weight.fits"
    _fits(weight, np.ones((60, 61), np.float32))
    return Case(
        _good(tmp),
        r"weight has shape \(60, 61\) but the image has shape \(60, 60\)",
        cli=["--weight", str(weight)],
        api={"weight": str(weight)},
    )


def _truncated_fits(tmp):
    path = Path(_fits(tmp / "whole.fits", _noise((100, 100))))
    cut = tmp / "cut.fits"
    raw = path.read_bytes()
    cut.write_bytes(raw[: len(raw) // 2])
    return Case(str(cut), r"cut\.fits' is truncated")


def _truncated_gzip(tmp):
    path = Path(_fits(tmp / "whole.fits", _noise((100, 100))))
    packed = gzip.compress(path.read_bytes())
    cut = tmp / "cut.fits.gz"
    cut.write_bytes(packed[: len(packed) // 2])
    return Case(str(cut), r"cut\.fits\.gz.*(truncated|corrupt)")


def _garbage_header(tmp):
    path = tmp / "garbage.fits"
    rng = np.random.default_rng(3)
    path.write_bytes(b"SIMPLE  = T" + rng.bytes(2880 * 3))
    return Case(str(path), r"garbage\.fits.*FITS")


def _not_an_image(tmp):
    path = tmp / "notes.txt"
    path.write_text("these are my notes, not an image\n")
    return Case(str(path), r"notes\.txt.*neither a FITS file nor a Zarr store")


def _zarr_garbage_json(tmp):
    store = tmp / "broken.zarr"
    store.mkdir()
    (store / "zarr.json").write_text("{this is not json")
    return Case(str(store), r"broken\.zarr.*Zarr")


def _zarr_garbage_array_json(tmp):
    store = Path(_zarr(tmp / "broken.zarr", _noise()))
    (store / "scene" / "zarr.json").write_bytes(b"\x00\xffgarbage")
    return Case(str(store), r"broken\.zarr")


def _zarr_garbage_chunk(tmp):
    store = Path(_zarr(tmp / "broken.zarr", _noise()))
    chunks = [
        p for p in (store / "scene").rglob("*") if p.is_file() and p.name != "zarr.json"
    ]
    assert chunks
    for p in chunks:
        p.write_bytes(b"not a compressed chunk")
    return Case(str(store), r"broken\.zarr.*corrupt")


def _file_as_zarr(tmp):
    path = tmp / "scene.zarr"
    path.write_bytes(b"I am a regular file, not a Zarr group\n")
    return Case(str(path), r"scene\.zarr.*Zarr")


def _missing(tmp):
    return Case(str(tmp / "nowhere.fits"), r"nowhere\.fits.*no such file")


def _missing_variable(tmp):
    return Case(
        _zarr(tmp / "scene.zarr", _noise()),
        r"--variable 'sky' not found.*available arrays: scene",
        cli=["--variable", "sky"],
        api={"variable": "sky"},
        api_pattern=r"variable='sky' not found.*available arrays: scene",
    )


def _table_hdu(tmp):
    path = tmp / "table.fits"
    table = fits.BinTableHDU.from_columns([fits.Column("flux", "E", array=[1.0, 2.0])])
    fits.HDUList([fits.PrimaryHDU(_noise()), table]).writeto(path)
    return Case(
        str(path),
        r"--hdu 1 .* BinTableHDU, not an image; choose .* with --hdu ",
        cli=["--hdu", "1"],
        api={"hdu": 1},
        api_pattern=r"hdu=1 .* BinTableHDU, not an image; choose .* with hdu=",
    )


def _only_tables(tmp):
    path = tmp / "table.fits"
    table = fits.BinTableHDU.from_columns([fits.Column("flux", "E", array=[1.0, 2.0])])
    fits.HDUList([fits.PrimaryHDU(), table]).writeto(path)
    return Case(str(path), r"holds no image data")


def _hdu_on_zarr(tmp):
    return Case(
        _zarr(tmp / "scene.zarr", _noise()),
        r"--hdu 1 does not apply to a Zarr input; --hdu selects a FITS HDU",
        cli=["--hdu", "1"],
        api={"hdu": 1},
        api_pattern=r"hdu=1 does not apply to a Zarr input; hdu= selects a FITS HDU",
    )


def _hdu_missing(tmp):
    return Case(
        _good(tmp),
        r"--hdu 5 not found",
        cli=["--hdu", "5"],
        api={"hdu": 5},
        api_pattern=r"hdu=5 not found",
    )


def _hdu_bad_name(tmp):
    return Case(
        _good(tmp),
        r"--hdu 'SCI' not found",
        cli=["--hdu", "SCI"],
        api={"hdu": "SCI"},
        api_pattern=r"hdu='SCI' not found",
    )


def _set(
    override: str, pattern: str, api_pattern: str | None = None
) -> Callable[[Path], Case]:
    def build(tmp):
        return Case(
            _good(tmp),
            pattern,
            cli=["--set", override],
            api={"overrides": [override]},
            api_pattern=api_pattern,
        )

    return build


def _preset(tmp):
    return Case(
        _good(tmp),
        r"unknown preset 'nope'",
        cli=["--preset", "nope"],
        api={"preset": "nope"},
    )


def _chunks(value: str, api_value: Any) -> Callable[[Path], Case]:
    def build(tmp):
        return Case(
            _good(tmp),
            r"argument --chunks: --chunks expects N or NY,NX",
            cli=["--chunks", value],
            api={"chunks": api_value},
            api_pattern=r"chunks=.* is not valid",
            code=2,
        )

    return build


def _storage_option(tmp):
    return Case(
        _good(tmp),
        r"storage option 'endpoint_url' is not key=value",
        cli=["--storage-option", "endpoint_url"],
        api={"storage_options": ["endpoint_url"]},
        api_pattern=r"storage_options must be a dict",
    )


_TEMPLATES: dict[str, Path] = {}


@pytest.fixture(scope="module", autouse=True)
def _template_dir(tmp_path_factory):
    _TEMPLATES["dir"] = tmp_path_factory.mktemp("templates")
    yield
    _TEMPLATES.clear()


def _finished_run(tmp: Path) -> Path:
    """A copy of one finished run (computed once per module)."""
    template = _TEMPLATES["dir"] / "previous.zarr"
    if not template.exists():
        source = _good(_TEMPLATES["dir"])
        run_to_store(source, str(template), config=resolve_config(None))
    assert (
        zarr.open_group(str(template), mode="r").attrs["tilesky_status"] == "complete"
    )
    out = tmp / "previous.zarr"
    shutil.copytree(template, out)
    return out


def _existing_run(tmp):
    out = _finished_run(tmp)
    return Case(
        _good(tmp),
        r"already exists \(a finished run\); pass --overwrite",
        out=out,
        estimate=False,
        api_pattern=r"already exists \(a finished run\); pass overwrite=True",
    )


def _existing_unfinished(tmp):
    out = tmp / "previous.zarr"
    zarr.open_group(str(out), mode="w").attrs["tilesky_status"] = "running"
    return Case(
        _good(tmp),
        r"unfinished run\); pass --resume",
        out=out,
        estimate=False,
        api_pattern=r"unfinished run\); pass resume=True",
    )


def _existing_other(tmp):
    out = tmp / "thesis"
    out.mkdir()
    (out / "chapter1.tex").write_text("\\chapter{Sky}\n")
    return Case(_good(tmp), r"exists and is not a tilesky run", out=out, estimate=False)


def _existing_file(tmp):
    out = tmp / "out.zarr"
    out.write_bytes(b"precious bytes")
    return Case(_good(tmp), r"exists and is not a tilesky run", out=out, estimate=False)


def _overwrite_foreign(kind: str) -> Callable[[Path], Case]:
    """``--overwrite`` on something tilesky did not write: refused, untouched."""

    def build(tmp):
        if kind == "directory":
            out = _existing_other(tmp).out
        elif kind == "file":
            out = _existing_file(tmp).out
        else:
            out = Path(_zarr(tmp / "other.zarr", _noise()))
        return Case(
            _good(tmp),
            r"exists and is not a tilesky run; choose another path",
            cli=["--overwrite"],
            api={"overwrite": True},
            out=out,
            estimate=False,
        )

    return build


def _input_is_output(tmp):
    # --overwrite would delete the input before reading it.
    scene = _zarr(tmp / "scene.zarr", _noise())
    return Case(
        scene,
        r"output '.*scene\.zarr' is the input",
        cli=["--overwrite"],
        api={"overwrite": True},
        out=Path(scene),
        estimate=False,
    )


def _output_holds_input(tmp):
    data = tmp / "data"
    data.mkdir()
    scene = _zarr(data / "scene.zarr", _noise())
    return Case(
        scene,
        r"output '.*data' contains the input",
        cli=["--overwrite"],
        api={"overwrite": True},
        out=data,
        estimate=False,
    )


def _output_is_mask(tmp):
    mask = _zarr(tmp / "mask.zarr", np.zeros(SHAPE, bool))
    return Case(
        _good(tmp),
        r"output '.*mask\.zarr' is the mask",
        cli=["--mask", mask, "--overwrite"],
        api={"mask": mask, "overwrite": True},
        out=Path(mask),
        estimate=False,
    )


def _nan_over_finished_run(tmp):
    out = _finished_run(tmp)
    return Case(
        _fits(tmp / "nan.fits", np.full(SHAPE, np.nan, np.float32)),
        r"no finite pixels",
        cli=["--overwrite"],
        api={"overwrite": True},
        out=out,
        estimate=False,
        replaceable=True,
    )


def _bad_input_keeps_run(tmp):
    # A hostile input with --overwrite still must not destroy a finished run
    # before the input has been opened.
    out = _finished_run(tmp)
    return Case(
        _fits(tmp / "cube.fits", np.stack([_noise()] * 2)),
        r"2-D",
        cli=["--overwrite"],
        api={"overwrite": True},
        out=out,
        estimate=False,
    )


CASES = [
    pytest.param(_one_d, id="1d-array"),
    pytest.param(_three_d, id="3d-array"),
    pytest.param(_fits_cube, id="fits-cube"),
    pytest.param(_strings, id="string-and-object-data"),
    pytest.param(_booleans, id="bool-data"),
    pytest.param(_complex, id="complex-data"),
    pytest.param(_all_nan, id="all-nan"),
    pytest.param(_all_inf, id="all-inf"),
    pytest.param(_constant, id="constant-image"),
    pytest.param(_tiny, id="5x5-image"),
    pytest.param(_smaller_than_ring, id="smaller-than-ring"),
    pytest.param(_empty, id="empty-array"),
    pytest.param(_huge_header, id="fits-header-promises-40-GB"),
    pytest.param(_mask_shape, id="mask-shape"),
    pytest.param(_mask_array_shape, id="bool-mask-shape"),
    pytest.param(_weight_strings, id="weight-strings"),
    pytest.param(_weight_shape, id="weight-shape"),
    pytest.param(_truncated_fits, id="truncated-fits"),
    pytest.param(_truncated_gzip, id="truncated-fits-gz"),
    pytest.param(_garbage_header, id="fits-garbage-header"),
    pytest.param(_not_an_image, id="text-file"),
    pytest.param(_zarr_garbage_json, id="zarr-garbage-zarr-json"),
    pytest.param(_zarr_garbage_array_json, id="zarr-garbage-array-json"),
    pytest.param(_zarr_garbage_chunk, id="zarr-garbage-chunk"),
    pytest.param(_file_as_zarr, id="regular-file-as-zarr"),
    pytest.param(_missing, id="missing-file"),
    pytest.param(_missing_variable, id="missing-variable"),
    pytest.param(_table_hdu, id="fits-table-hdu"),
    pytest.param(_only_tables, id="fits-without-image"),
    pytest.param(_hdu_on_zarr, id="hdu-on-zarr"),
    pytest.param(_hdu_missing, id="hdu-index-missing"),
    pytest.param(_hdu_bad_name, id="hdu-name-missing"),
    pytest.param(
        _set("final_mesh.filter_size=4", r"filter_size must be odd"),
        id="set-filter-size-even",
    ),
    pytest.param(
        _set(
            "final_mesh.exclude_percentile=120",
            r"exclude_percentile must be between 0 and 100.*120",
        ),
        id="set-exclude-percentile-120",
    ),
    pytest.param(
        _set("source_mask.n_pixels=0", r"n_pixels must be an integer >= 1"),
        id="set-n-pixels-0",
    ),
    pytest.param(
        _set(
            "final_mesh.bkg_estimator=magic", r"bkg_estimator must be one of .*'magic'"
        ),
        id="set-unknown-estimator",
    ),
    pytest.param(
        _set("final_mesh.boxsize=8", r"unknown key\(s\) 'boxsize' in \[final_mesh\]"),
        id="set-unknown-key",
    ),
    pytest.param(
        _set("rings.radius_in=3", r"unknown configuration key 'rings'"),
        id="set-unknown-section",
    ),
    pytest.param(
        _set(
            "final_mesh.box_size",
            r"error: --set expects key=value strings, got 'final_mesh.box_size'$",
            r"^overrides expects key=value strings, got 'final_mesh.box_size'$",
        ),
        id="set-without-value",
    ),
    pytest.param(
        _set("final_mesh.box_size=big", r"box_size must be an integer.*'big'"),
        id="set-box-size-word",
    ),
    pytest.param(
        _set("final_mesh.sigma_clip_maxiters=true", r"maxiters must be an integer"),
        id="set-maxiters-true",
    ),
    pytest.param(
        _set("smoothfit.order=true", r"smoothfit.order must be 0, 1 or 2, got True"),
        id="set-order-true",
    ),
    pytest.param(
        _set("n_rounds=1000000", r"n_rounds must be an integer between 1 and 20"),
        id="set-n-rounds-huge",
    ),
    pytest.param(
        _set(
            "first_mask.dilate_radius=100000",
            r"dilate_radius must be an integer between 0 and 256",
        ),
        id="set-dilate-radius-huge",
    ),
    pytest.param(_chunks("abc", "abc"), id="chunks-word"),
    pytest.param(_chunks("0", 0), id="chunks-zero"),
    pytest.param(_chunks("10,20,30", (10, 20, 30)), id="chunks-three"),
    pytest.param(_storage_option, id="storage-option-malformed"),
    pytest.param(_preset, id="unknown-preset"),
    pytest.param(_existing_run, id="existing-finished-run"),
    pytest.param(_existing_unfinished, id="existing-unfinished-run"),
    pytest.param(_existing_other, id="existing-directory"),
    pytest.param(_existing_file, id="existing-file"),
    pytest.param(_overwrite_foreign("directory"), id="overwrite-user-directory"),
    pytest.param(_overwrite_foreign("file"), id="overwrite-user-file"),
    pytest.param(_overwrite_foreign("zarr"), id="overwrite-foreign-zarr"),
    pytest.param(_bad_input_keeps_run, id="bad-input-with-overwrite"),
    pytest.param(_nan_over_finished_run, id="all-nan-with-overwrite"),
    pytest.param(_input_is_output, id="output-is-input"),
    pytest.param(_output_holds_input, id="output-contains-input"),
    pytest.param(_output_is_mask, id="output-is-mask"),
]


# -- checks -----------------------------------------------------------------


def _digest(path: Path) -> str | None:
    """Hash of every file name and content under ``path`` (None if absent)."""
    if not path.exists():
        return None
    h = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*"))
    for p in files:
        h.update(str(p.relative_to(path.parent)).encode())
        if p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()


def _assert_nothing_finished(
    out: Path, before: str | None, *, replaceable: bool = False
) -> None:
    if before is not None and (not replaceable or _digest(out) == before):
        assert _digest(out) == before, f"{out} was modified"
        return
    if not out.exists():
        return
    status = zarr.open_group(str(out), mode="r").attrs.get("tilesky_status")
    assert status != "complete", f"{out} looks finished after a failure"
    with pytest.raises(StoreError):
        open_run(str(out))


def _build(case_fn, tmp_path) -> tuple[Case, Path, str | None]:
    case = case_fn(tmp_path)
    out = case.out or tmp_path / "out.zarr"
    return case, out, _digest(out)


def _run_config(api: dict):
    return resolve_config(
        None, preset=api.get("preset"), overrides=api.get("overrides", ())
    )


@pytest.mark.parametrize("case_fn", CASES)
def test_cli(case_fn, tmp_path, capsys, caplog):
    case, out, before = _build(case_fn, tmp_path)
    argv = ["run", case.source, str(out), "--scheduler", "threads", *case.cli]
    capsys.readouterr()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse's usage errors
            code = exc.code
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert code == case.code, err
    lines = err.strip().splitlines()
    if code == 2:
        assert lines[0].startswith("usage: tilesky run"), err
        assert lines[-1].startswith("tilesky run: error:"), err
        assert re.search(case.pattern, lines[-1]), lines[-1]
    else:
        assert len(lines) == 1, err
        assert lines[0].startswith("tilesky: error: "), lines[0]
        assert re.search(case.pattern, lines[0]), lines[0]
        # In a terminal these would be more lines on stderr.
        assert not [r for r in caplog.records if r.levelname in ("WARNING", "ERROR")]
        assert not [str(w.message) for w in caught]
    _assert_nothing_finished(out, before, replaceable=case.replaceable)


# Output cases whose input is itself bad: the API must refuse the input.
BAD_INPUT_OVER_RUN = ("bad-input-with-overwrite", "all-nan-with-overwrite")


@pytest.mark.parametrize("case_fn", CASES)
def test_estimate_background(case_fn, tmp_path, request):
    case, _, _ = _build(case_fn, tmp_path)
    if not case.estimate:
        # Output options (overwrite) do not exist for the API.
        api = {k: v for k, v in case.api.items() if k != "overwrite"}
        if request.node.callspec.id in BAD_INPUT_OVER_RUN:
            with pytest.raises(API_ERRORS):
                estimate_background(case.source, **api)
            return
        # The CLI refuses this case because of its output; the API writes no
        # output, so the same input must simply work there.
        ds = estimate_background(case.source, **api)
        assert np.isfinite(ds.background.values).any()
        return
    pattern = case.api_pattern or case.pattern
    for data in (case.source, *case.arrays):
        for chunks in (None, 30) if isinstance(data, np.ndarray) else (None,):
            kwargs = dict(case.api)
            if chunks is not None:
                kwargs.setdefault("chunks", chunks)
            with pytest.raises(API_ERRORS, match=pattern):
                estimate_background(data, **kwargs)


@pytest.mark.parametrize("case_fn", CASES)
def test_run_to_store(case_fn, tmp_path):
    case, out, before = _build(case_fn, tmp_path)
    kwargs = {k: v for k, v in case.api.items() if k not in ("preset", "overrides")}
    with pytest.raises(API_ERRORS, match=case.api_pattern or case.pattern):
        run_to_store(case.source, str(out), config=_run_config(case.api), **kwargs)
    _assert_nothing_finished(out, before, replaceable=case.replaceable)


# A fresh process is slow to start: two cases, one failing while opening
# (astropy warns first) and one failing in the pipeline after the store exists.
SUBPROCESS_CASES = ("all-nan", "fits-garbage-header")


@pytest.mark.parametrize("case_fn", [c for c in CASES if c.id in SUBPROCESS_CASES])
def test_real_stderr_is_one_line(case_fn, tmp_path):
    """In a fresh process (real logging, real warnings), stderr is the error alone."""
    case, out, before = _build(case_fn, tmp_path)
    argv = ["run", case.source, str(out), "--scheduler", "threads", *case.cli]
    proc = subprocess.run(
        [sys.executable, "-m", "tilesky.cli", *argv],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == case.code
    lines = proc.stderr.strip().splitlines()
    if case.code == 1:
        assert len(lines) == 1, proc.stderr
        assert re.search(case.pattern, lines[0])
    else:
        assert lines[-1].startswith("tilesky run: error:"), proc.stderr
    _assert_nothing_finished(out, before, replaceable=case.replaceable)


# -- the valid neighbours of hostile cases still work ------------------------


def test_boolean_zarr_mask_is_accepted(tmp_path):
    """A mask stored as booleans is a mask, not a rejected boolean image."""
    image = _noise()
    user = np.zeros(SHAPE, bool)
    user[10:30, 20:45] = True
    scene = _zarr(tmp_path / "scene.zarr", image)
    mask = _zarr(tmp_path / "mask.zarr", user)
    out = tmp_path / "out.zarr"
    # The path goes through the same open as ``tilesky run --mask``.
    run_to_store(scene, str(out), config=resolve_config(None), mask=mask)
    ds = open_run(str(out))
    assert ds.attrs["mask_input"] == mask
    mono = estimate_background(image, mask=user)
    assert ds.mask.values[user].all()
    np.testing.assert_array_equal(ds.mask.values, mono.mask.values)
    np.testing.assert_allclose(ds.background.values, mono.background.values, rtol=1e-6)


def test_smallest_accepted_image():
    """The size limit is the ring footprint (41x41 by default), not less."""
    image = _noise((41, 41))
    mono = estimate_background(image)
    tiled = estimate_background(image, chunks=30)
    assert np.isfinite(mono.background.values).all()
    np.testing.assert_array_equal(mono.mask.values, tiled.mask.values)
    np.testing.assert_allclose(
        mono.background.values, tiled.background.values, rtol=1e-6
    )
    with pytest.raises(InputError, match=r"\(41, 40\) is too small"):
        estimate_background(image[:, :40])
    smaller = ["ring.radius_in=3", "ring.width=2"]
    ds = estimate_background(image[:, :40], overrides=smaller)
    assert ds.background.shape == (41, 40)


def test_url_output_that_is_the_input_is_refused(tmp_path):
    """The same check for fsspec URLs: the input survives ``overwrite=True``."""
    import fsspec

    url = f"memory://hostile/{tmp_path.name}/scene.zarr"
    group = zarr.open_group(url, mode="w")
    group.create_array("scene", shape=SHAPE, dtype="f4")[...] = _noise()
    fs = fsspec.filesystem("memory")
    before = {k: fs.cat(k) for k in fs.find(url)}
    try:
        for out in (url + "/", url.rsplit("/", 1)[0]):
            with pytest.raises(StoreError, match=r"(is|contains) the input"):
                run_to_store(url, out, config=resolve_config(None), overwrite=True)
        assert {k: fs.cat(k) for k in fs.find(url)} == before
    finally:
        fs.rm(url.rsplit("/", 1)[0], recursive=True)

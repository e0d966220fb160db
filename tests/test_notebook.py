"""The tutorial notebook runs top to bottom and shows every figure it promises.

``notebooks/complex_background.ipynb`` redoes the reference notebook
(``complex_background_notebook``) with tilesky. Here it is executed with
nbclient in a fresh ``python3`` kernel at a small size
(``TILESKY_NOTEBOOK_SHRINK``), which also starts and stops a local Dask
cluster in its last section.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")
pytest.importorskip("matplotlib")

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "complex_background.ipynb"
SHRINK = 8
# Scene 250 x 250, mosaic 1000 x 1000: about a minute on two busy cores.
TIMEOUT = 300

# Every figure of the reference notebook (the Imviz viewers aside), by the tag
# of the cell that draws it, with the number of images that cell must show.
ORIGINAL_FIGURES = {
    "fig:noiseless-sky": 1,  # "The noiseless sky background"
    "fig:sky-noise-smoothed": 1,  # "The sky with noise" / "The sky smoothed"
    "fig:scene": 1,  # "The scene, with the sources and nasty sky background"
    "fig:mesh-box50": 1,  # first Background2D residual, box 50
    "fig:masks-2-3-sigma": 1,  # plot_two(mask_2sigma, mask_3sigma)
    "fig:bkg1-bkg2": 1,  # plot_two(bkg1 - sky, bkg2 - sky)
    "fig:ring-median": 1,  # "Sources" / "ring-median filtered"
    "fig:ring-difference-mask": 1,  # "scene minus ring-median ..." / "mask"
    "fig:dilated-mask": 1,  # "mask" / "dilated mask"
    "fig:masked-scene": 1,  # "scene without background" / "masked ..."
    "fig:plot-bkgd-ring": 1,  # plot_bkgd(... filtered ...)
    "fig:plot-bkgd-bkg3": 1,  # plot_bkgd after the box-10 background
    "fig:plot-bkgd-bkg4": 1,  # plot_bkgd(bkg4), inverse distance
    "fig:deep-mask": 1,  # plot_mask of the multi-scale mask
    "fig:plot-bkgd-bkg5": 1,  # plot_bkgd(bkg5)
    "fig:resid-vs-flux": 1,  # "residuals vs. flux"
    "fig:resid-vs-radius": 1,  # "residuals vs. radius"
    "fig:rms-vs-scale": 1,  # RMS of the residual against scale
}
# The closing mosaic section, which the reference lacks.
NEW_FIGURES = {"fig:mosaic-report": 2}

TABLE_COLUMNS = (
    "preset",
    "residual RMS",
    "peak",
    "bias z",
    "RMS ratio w=9",
    "RMS ratio w=25",
)


def _tags(cell) -> list[str]:
    return list(cell.get("metadata", {}).get("tags", []))


def _images(cell) -> int:
    return sum(
        1
        for out in cell.get("outputs", [])
        if out.get("output_type") in ("display_data", "execute_result")
        and "image/png" in out.get("data", {})
    )


def _text(cell) -> str:
    parts = []
    for out in cell.get("outputs", []):
        if out.get("output_type") == "stream" and out.get("name") == "stdout":
            parts.append(out.get("text", ""))
        elif "text/plain" in out.get("data", {}):
            parts.append(out["data"]["text/plain"])
    return "".join(parts)


def test_committed_notebook_has_no_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code, "the notebook has no code cells"
    stored = [c.id for c in code if c.outputs]
    counted = [c.id for c in code if c.execution_count is not None]
    assert not stored, f"cells with stored outputs: {stored}; strip them"
    assert not counted, f"cells with execution counts: {counted}; strip them"
    tagged = {t for c in nb.cells for t in _tags(c)}
    missing = set(ORIGINAL_FIGURES) - tagged
    assert not missing, f"no cell tagged {sorted(missing)}"


def test_notebook_reads_its_size_from_the_environment():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    first_code = next(c for c in nb.cells if c.cell_type == "code").source
    assert re.search(r"os\.environ\.get\(\s*\"TILESKY_NOTEBOOK_SHRINK\"", first_code)
    assert "SHRINK" in first_code


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    """The notebook executed at SHRINK=8, with its wall time."""
    work = tmp_path_factory.mktemp("notebook")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    env = {
        "TILESKY_NOTEBOOK_SHRINK": str(SHRINK),
        # The kernel's mkdtemp (mosaic and run stores) and Dask's worker
        # space land under pytest's temporary directory.
        "TMPDIR": str(work),
        "MPLBACKEND": "module://matplotlib_inline.backend_inline",
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        client = nbclient.NotebookClient(
            nb,
            kernel_name="python3",
            timeout=TIMEOUT,
            resources={"metadata": {"path": str(work)}},
        )
        start = time.perf_counter()
        # CellExecutionError (a cell raised) fails the test with the traceback.
        client.execute()
        elapsed = time.perf_counter() - start
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return nb, elapsed


def test_notebook_runs_without_errors(executed):
    nb, elapsed = executed
    errors = [
        (c.id, out.get("ename"), out.get("evalue"))
        for c in nb.cells
        if c.cell_type == "code"
        for out in c.outputs
        if out.get("output_type") == "error"
    ]
    assert not errors, errors
    text = "".join(_text(c) for c in nb.cells if c.cell_type == "code")
    assert f"SHRINK = {SHRINK}: scene {2000 // SHRINK} x {2000 // SHRINK}" in text
    print(f"notebook executed in {elapsed:.1f} s")


def test_every_figure_of_the_original_is_drawn(executed):
    nb, _ = executed
    by_tag = {t: c for c in nb.cells for t in _tags(c)}
    for tag, n in {**ORIGINAL_FIGURES, **NEW_FIGURES}.items():
        assert tag in by_tag, f"no cell tagged {tag!r}"
        got = _images(by_tag[tag])
        assert got >= n, f"cell {tag!r} showed {got} image(s), expected {n}"
    total = sum(_images(c) for c in nb.cells if c.cell_type == "code")
    assert total >= len(ORIGINAL_FIGURES) + sum(NEW_FIGURES.values())


def test_pipeline_reproduces_the_step_by_step_background(executed):
    nb, _ = executed
    text = "".join(_text(c) for c in nb.cells if c.cell_type == "code")
    assert "pipeline mask equals the step-by-step mask: True" in text
    assert "tiled in" in text
    assert re.search(r"masks equal True, max \|tiled - whole\| = 0\.00e\+00", text)


def test_significance_uses_a_correct_standard_error(executed):
    nb, _ = executed
    text = "".join(_text(c) for c in nb.cells if c.cell_type == "code")
    lib = re.search(r"blocks of \d+ px: ([+-]\S+) \+- (\S+) = (\S+) sigma", text)
    mine = re.search(r"numpy: ([+-]\S+) \+- (\S+) = (\S+) sigma", text)
    assert lib and mine, text[-2000:]
    # The library's block estimate and the inline numpy one agree.
    assert lib.groups() == mine.groups()
    assert float(lib.group(2)) > 0


def test_final_quality_table_is_printed(executed):
    nb, _ = executed
    cell = next(c for c in nb.cells if "quality-table" in _tags(c))
    text = _text(cell)
    lines = text.splitlines()
    header = next((i for i, line in enumerate(lines) if "preset" in line), None)
    assert header is not None, text
    for column in TABLE_COLUMNS:
        assert column in lines[header], (column, lines[header])
    rows = {}
    for line in lines[header + 2 :]:
        fields = line.split()
        if fields and fields[0] in ("notebook", "default"):
            rows[fields[0]] = [float(v) for v in fields[1:]]
    assert set(rows) == {"notebook", "default"}, text
    for name, values in rows.items():
        rms, peak, _, ratio9, ratio25 = values[:5]
        # Residual of a few hundredths against a pixel noise of 0.1, and the
        # block-mean RMS within a factor of two of a perfect subtraction.
        assert 0 < rms < 0.05, (name, values)
        assert 0 < peak < 0.5, (name, values)
        assert 0.5 < ratio9 < 2.0, (name, values)
        assert 0.3 < ratio25 < 3.0, (name, values)

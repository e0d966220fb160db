"""numpydoc validation of the public API: every parameter documented, none
invented, a Returns section where something is returned."""

import pytest
from numpydoc import validate as numpydoc_validate

PUBLIC = [
    "tilesky._dispatch.estimate_background",
    "tilesky._dispatch.run_to_store",
    "tilesky._dispatch.resolve_config",
    "tilesky._dispatch.RunResult",
    "tilesky.simulate.simulate_scene",
    "tilesky.simulate.write_simulation",
    "tilesky.config.load_config",
    "tilesky.config.Config",
    "tilesky.metrics._compute.compute_metrics",
    "tilesky.metrics._summary.line_fit",
    "tilesky.export.export_fits",
    "tilesky.report.write_report",
    "tilesky.io._open.open_image",
    "tilesky.store.open_run",
    "tilesky.store.run_status",
    "tilesky.validate.validate_run",
    "tilesky.validate.Injection",
    "tilesky.validate.format_lines",
    "tilesky.pipeline.plan",
    "tilesky.pipeline.run_pipeline",
    "tilesky.stages._stage.LocalStage",
]

#: Missing docstring, undocumented or unknown parameters, no Returns.
CHECKS = {"GL08", "PR01", "PR02", "RT01"}


@pytest.mark.parametrize("name", PUBLIC)
def test_public_docstring(name):
    errors = [
        f"{code}: {msg}"
        for code, msg in numpydoc_validate.validate(name)["errors"]
        if code in CHECKS
    ]
    assert not errors, errors

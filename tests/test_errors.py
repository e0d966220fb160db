"""The user errors: one base class, parameter names, and the CLI's flags."""

import pickle
import subprocess
import sys

import pytest

from tilesky import errors
from tilesky.cli import _user_message
from tilesky.cluster import execution
from tilesky.config import Config

SUBCLASSES = {
    errors.ConfigError: ValueError,
    errors.InputError: ValueError,
    errors.StoreError: ValueError,
    errors.OutputExistsError: ValueError,
    errors.PipelineError: ValueError,
    errors.ClusterError: RuntimeError,
}


@pytest.mark.parametrize("cls", SUBCLASSES, ids=lambda c: c.__name__)
def test_every_user_error_is_a_tilesky_error(cls):
    err = cls("it broke", params="overwrite")
    assert isinstance(err, errors.TileskyError)
    # The builtin base stays, for callers that catch ValueError/RuntimeError.
    assert isinstance(err, SUBCLASSES[cls])
    assert isinstance(err, errors.USER_ERRORS)
    assert err.params == ("overwrite",)
    # Errors raised on a Dask worker travel back pickled.
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is cls
    assert (str(back), back.params) == ("it broke", ("overwrite",))


def test_old_import_paths_and_the_package_name_the_same_classes():
    import tilesky.cluster
    import tilesky.config
    import tilesky.io
    import tilesky.pipeline
    import tilesky.store

    assert tilesky.config.ConfigError is errors.ConfigError
    assert tilesky.io.InputError is errors.InputError
    assert tilesky.store.StoreError is errors.StoreError
    assert tilesky.store.OutputExistsError is errors.OutputExistsError
    assert tilesky.pipeline.PipelineError is errors.PipelineError
    assert tilesky.cluster.ClusterError is errors.ClusterError
    for name in [*errors.__all__]:
        if name != "USER_ERRORS":
            assert getattr(tilesky, name) is getattr(errors, name)
            assert name in dir(tilesky)


def test_errors_module_imports_nothing_from_tilesky():
    code = (
        "import sys, tilesky.errors; "
        "print(sorted(m for m in sys.modules if m.startswith('tilesky')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "['tilesky', 'tilesky._version', 'tilesky.errors']"


def test_input_error_is_one_line_and_params_default_to_none():
    err = errors.InputError("cannot open\n   input 'x'")
    assert str(err) == "cannot open input 'x'"
    assert err.params == ()


def test_library_messages_name_parameters_not_flags(tmp_path):
    with pytest.raises(errors.ConfigError, match=r"^overrides expects") as info:
        Config().with_overrides(["box_size"])
    assert info.value.params == ("overrides",)
    nowhere = str(tmp_path / "nowhere")
    with (
        pytest.raises(errors.ClusterError, match=r"^scheduler='.*nowhere' is neither"),
        execution(nowhere),
    ):
        pass


@pytest.mark.parametrize(
    ("message", "params", "expected"),
    [
        ("scheduler='x' is neither", "scheduler", "--scheduler 'x' is neither"),
        (
            "pass overwrite=True to replace it",
            "overwrite",
            "pass --overwrite to replace it",
        ),
        ("overrides expects key=value", "overrides", "--set expects key=value"),
        (
            "hdu=1 does not apply; hdu= selects a FITS HDU",
            "hdu",
            "--hdu 1 does not apply; --hdu selects a FITS HDU",
        ),
        (
            "choose one with variable= (available: a)",
            "variable",
            "choose one with --variable (available: a)",
        ),
        (
            "pass resume=True to continue it or overwrite=True to replace it",
            ("resume", "overwrite"),
            "pass --resume to continue it or --overwrite to replace it",
        ),
        # Only whole names: dotted keys, longer names and flags stay.
        (
            "ring.hdu=2, tilesky_default_variable, --scheduler x",
            ("hdu", "variable", "scheduler"),
            "ring.hdu=2, tilesky_default_variable, --scheduler x",
        ),
        # Parameters without a flag, and errors without params, are unchanged.
        ("box_size=0 is not valid", "box_size", "box_size=0 is not valid"),
        ("hdu=1 is\n  wrong", (), "hdu=1 is wrong"),
    ],
)
def test_cli_spells_parameters_as_flags(message, params, expected):
    assert _user_message(errors.TileskyError(message, params=params)) == expected


def test_cli_message_of_other_errors_is_its_one_line():
    assert _user_message(FileNotFoundError("no\nsuch file")) == "no such file"

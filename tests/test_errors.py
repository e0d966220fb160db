"""The user errors: one base class, defined where nothing else is imported."""

import pickle
import subprocess
import sys

import pytest

from tilesky import errors

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

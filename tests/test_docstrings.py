"""numpydoc validation of the whole public API.

The public API is every function and class named in the ``__all__`` of
``tilesky`` and of each public module or package under it (no path
component starting with an underscore), plus the public methods and
properties of those classes (``__call__`` included: the estimators and
``SigmaClip`` are used by calling them). Each object is checked once, under
its first public name, for a docstring, documented parameters, no
parameters the signature lacks, and a Returns (or Yields) section where
something is returned.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import pkgutil

import pytest
from numpydoc import validate as numpydoc_validate

import tilesky

#: Missing docstring (GL08); parameters undocumented (PR01), unknown (PR02),
#: out of order (PR03) or without a description (PR07); no Returns section
#: for a function that returns (RT01) or a Returns entry without a
#: description (RT03); no Yields section for a generator (YD01).
CHECKS = {"GL08", "PR01", "PR02", "PR03", "PR07", "RT01", "RT03", "YD01"}


#: Public by use though in no public ``__all__``: what ``run_to_store``
#: returns, and the config resolution both entry points document.
EXTRA = ["tilesky._dispatch.RunResult", "tilesky._dispatch.resolve_config"]


def _public_modules() -> list[str]:
    names = ["tilesky"]
    for info in pkgutil.walk_packages(tilesky.__path__, "tilesky."):
        if not any(part.startswith("_") for part in info.name.split(".")[1:]):
            names.append(info.name)
    return sorted(names)


def _doc_owner(cls: type, attr: str) -> type | None:
    """The tilesky class in ``cls``'s MRO whose ``attr`` documents it.

    The first class defining ``attr`` with a docstring (an override without
    one inherits its base's, as ``help()`` and Sphinx show it), else the
    first defining it; None when that is not a tilesky class.
    """
    owners = [k for k in cls.__mro__ if attr in vars(k)]
    for owner in owners:
        if not owner.__module__.startswith("tilesky"):
            break
        if getattr(_unwrap(vars(owner)[attr]), "__doc__", None):
            return owner
    return owners[0] if owners[0].__module__.startswith("tilesky") else None


def _unwrap(raw: object) -> object:
    return raw.__func__ if isinstance(raw, staticmethod | classmethod) else raw


def _methods(cls: type) -> list[tuple[str, object]]:
    """Public methods and properties of ``cls`` defined in tilesky.

    Each comes with the dotted name of the class that documents it.
    """
    found = []
    for attr in sorted(dir(cls)):
        if attr.startswith("_") and attr != "__call__":
            continue
        owner = _doc_owner(cls, attr)
        if owner is None:
            continue
        raw = _unwrap(vars(owner)[attr])
        if inspect.isfunction(raw) or isinstance(
            raw, property | functools.cached_property
        ):
            where = None if owner is cls else f"{owner.__module__}.{owner.__qualname__}"
            found.append((attr, raw, where))
    return found


@functools.cache
def public_api() -> list[str]:
    """Dotted names of the public functions, classes and methods, each once."""
    names: list[str] = []
    seen: set[int] = set()

    def add(name: str, obj: object) -> None:
        if id(obj) not in seen:
            seen.add(id(obj))
            names.append(name)

    entries = [
        (module_name, name)
        for module_name in _public_modules()
        for name in getattr(importlib.import_module(module_name), "__all__", ())
    ]
    entries += [tuple(dotted.rsplit(".", 1)) for dotted in EXTRA]
    for module_name, name in entries:
        obj = getattr(importlib.import_module(module_name), name)
        if not (inspect.isfunction(obj) or inspect.isclass(obj)):
            continue  # constants and registries: documented by #: comments
        add(f"{module_name}.{name}", obj)
        if inspect.isclass(obj):
            for attr, raw, where in _methods(obj):
                add(f"{where or module_name + '.' + name}.{attr}", raw)
    return names


def docstring_errors(name: str) -> list[str]:
    """The numpydoc errors of ``name`` that this suite enforces."""
    checks = CHECKS
    obj = numpydoc_validate.Validator._load_obj(name)
    if inspect.isclass(obj) and getattr(obj.__init__, "__module__", "") == "typing":
        # typing.Protocol's placeholder constructor, (*args, **kwargs): the
        # class takes no parameters of its own.
        checks = CHECKS - {"PR01", "PR02"}
    return [
        f"{code}: {msg}"
        for code, msg in numpydoc_validate.validate(name)["errors"]
        if code in checks
    ]


def _load(name: str) -> object:
    obj = numpydoc_validate.Validator._load_obj(name)
    return obj.fget if isinstance(obj, property) else obj


def test_public_api_is_found():
    # The walk must reach the entry points, the subpackages' re-exports and
    # the methods of public classes (own, inherited with their docstring,
    # ``__call__``), or the test below checks little.
    checked = {id(_load(n)) for n in public_api()}
    for expected in (
        "tilesky.estimate_background",
        "tilesky.config.Config.with_overrides",
        "tilesky.io.open_image",
        "tilesky.metrics.compute_metrics",
        "tilesky.metrics.ScaleState.settle",
        "tilesky.store.RunStore.checkpoint",
        "tilesky.backends.Backend.local",
        "tilesky.backends.Region.shape",
        "tilesky.estimators.SigmaClip.__call__",
        "tilesky.estimators.MedianBackground.__call__",
        "tilesky.cluster.execution",
        "tilesky.simulate.write_simulation",
        "tilesky._dispatch.RunResult",
    ):
        assert id(_load(expected)) in checked, expected
    assert len(checked) > 100


@pytest.mark.parametrize("name", public_api())
def test_public_docstring(name):
    errors = docstring_errors(name)
    assert not errors, errors


def test_check_fails_without_docstring(tmp_path, monkeypatch):
    # The check itself: a function losing its docstring, or one parameter's
    # doc, is reported.
    (tmp_path / "docmod.py").write_text(
        "def bare(a, b):\n"
        "    return a\n\n"
        "def half(a, b):\n"
        '    """Summary.\n\n'
        "    Parameters\n"
        "    ----------\n"
        "    a : int\n"
        "        The first.\n\n"
        "    Returns\n"
        "    -------\n"
        "    int\n"
        "        ``a``.\n"
        '    """\n'
        "    return a\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    assert any(e.startswith("GL08") for e in docstring_errors("docmod.bare"))
    assert [e[:4] for e in docstring_errors("docmod.half")] == ["PR01"]

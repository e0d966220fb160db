"""The installed package imports from anywhere, including the clone's parent."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import tilesky

ROOT = Path(tilesky.__file__).resolve().parent.parent


def test_import_from_the_clone_parent_finds_the_package(tmp_path):
    # The clone's parent holds a folder named like the package (the clone,
    # here a link to it): Python must not take it for a namespace package.
    (tmp_path / "tilesky").symlink_to(ROOT, target_is_directory=True)
    code = "import tilesky; print(tilesky.__file__); tilesky.simulate_scene"
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("__init__.py")


def test_license_is_an_spdx_expression():
    import tomllib

    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert meta["project"]["license"] == "BSD-3-Clause"
    assert "setuptools>=77" in meta["build-system"]["requires"]

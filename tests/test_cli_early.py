"""Refusals that come before a cluster starts, and the subcommands' help."""

from __future__ import annotations

import numpy as np
import pytest

from tilesky.cli import _parser as build_parser
from tilesky.cli import main


@pytest.mark.parametrize("command", ["run", "simulate"])
def test_existing_output_is_refused_before_the_cluster(tmp_path, capsys, command):
    out = tmp_path / "out.zarr"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    src = tmp_path / "in.npy"
    np.save(src, np.zeros((8, 8)))
    argv = [command, str(src), str(out)] if command == "run" else [command, str(out)]
    assert main(argv) != 0
    err = capsys.readouterr().err
    assert "exists" in err and "--overwrite" in err
    # One line, and no cluster was started (it announces its dashboard).
    assert len(err.strip().splitlines()) == 1, err
    assert "dashboard" not in err.lower()
    assert (out / "keep.txt").read_text() == "mine"


@pytest.mark.parametrize("command", ["simulate", "demo", "export"])
def test_every_option_has_help(command):
    parser = build_parser()
    sub = next(
        a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction"
    ).choices[command]
    for action in sub._actions:
        if action.dest in ("help",) or action.help == "==SUPPRESS==":
            continue
        assert action.help, f"{command} {action.option_strings or action.dest}"
        if action.default not in (None, False, []) and action.option_strings:
            assert "%(default)s" in action.help or "default" in action.help, action

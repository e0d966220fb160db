"""--progress: one overall line over every computation of a run, on stderr."""

import itertools
import os
import pty
import re
import subprocess
import sys

import pytest

from tilesky.cli import main

LINE = re.compile(r"tilesky: \[[#-]{30}\] +(\d+)% (\d+)/(\d+) tasks, ([\w-]+), \d+ s")


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    path = tmp_path_factory.mktemp("progress") / "sim.zarr"
    args = ["simulate", str(path), "--shape", "300", "300", "--scheduler", "threads"]
    assert main(args) == 0
    return path


@pytest.mark.parametrize("scheduler", [[], ["--scheduler", "threads"]])
def test_progress_counts_every_task_of_the_run(sim, tmp_path, capsys, scheduler):
    out = tmp_path / "out.zarr"
    code = main(
        [
            "run",
            str(sim),
            str(out),
            "--chunks",
            "150",
            "--no-report",
            "--progress",
            *scheduler,
        ]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    lines = [LINE.fullmatch(x) for x in captured.err.splitlines()]
    lines = [m for m in lines if m]
    # Not a TTY: a line when the stage changes (sampled twice a second, so
    # a sub-second run shows few), and a last one with all done.
    assert len(lines) >= 2, captured.err
    last = lines[-1]
    assert last.group(1) == "100" and last.group(2) == last.group(3)
    assert int(last.group(3)) > 50  # every graph of the run, not one
    totals = [int(m.group(3)) for m in lines]
    assert totals == sorted(totals)
    assert "tasks" not in captured.out


def test_no_progress_without_the_flag(sim, tmp_path, capsys):
    out = tmp_path / "quiet.zarr"
    args = ["run", str(sim), str(out), "--no-report", "--scheduler", "threads"]
    assert main(args) == 0
    assert "tasks," not in capsys.readouterr().err


def test_progress_redraws_one_line_on_a_terminal(sim, tmp_path):
    out = tmp_path / "tty.zarr"
    leader, follower = pty.openpty()
    code = (
        "import sys; from tilesky.cli import main; "
        f"sys.exit(main(['run', {str(sim)!r}, {str(out)!r}, '--no-report', "
        "'--scheduler', 'threads']))"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdin=follower, stdout=follower, stderr=follower
    )
    os.close(follower)
    chunks = []
    while True:
        try:
            data = os.read(leader, 65536)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    os.close(leader)
    assert proc.wait(timeout=300) == 0
    text = b"".join(chunks).decode()
    # Redrawn in place (carriage returns), ending with the whole run done.
    assert text.count("\r") >= 2, text
    drawn = [LINE.match(part.strip()) for part in re.split(r"[\r\n]", text)]
    drawn = [m for m in drawn if m]
    assert drawn and drawn[-1].group(1) == "100", text


def test_the_fraction_never_goes_back():
    from tilesky._progress import _Monotone

    # A run's counts: each stage submits its tasks when the last one is done.
    counts, done, total = [], 0, 0
    for batch in (3, 23, 36, 25, 23):
        total += batch
        for _ in range(batch):
            done += 1
            counts.append((done, total))
    raw = [d / t for d, t in counts]
    assert any(b < a for a, b in itertools.pairwise(raw))  # the raw ratio drops
    progress = _Monotone()
    shown = [progress.update(d, t) for d, t in counts]
    assert all(b >= a for a, b in itertools.pairwise(shown))
    assert 0 < shown[0] and shown[-1] < 1
    # A fixed total: proportional to done / total.
    fixed = _Monotone()
    steps = [fixed.update(d, 40) for d in range(0, 41, 4)]
    ratios = [s / (d / 40) for s, d in zip(steps[1:], range(4, 41, 4), strict=True)]
    assert max(ratios) - min(ratios) < 1e-12


def test_the_bar_on_a_terminal_never_goes_back(sim, tmp_path):
    # Sampled every 20 ms, the raw done/total drops as stages submit their
    # tasks; the percentage and the bar drawn do not.
    out = tmp_path / "mono.zarr"
    leader, follower = pty.openpty()
    code = (
        "import sys; from tilesky.cli import main; "
        f"sys.exit(main(['run', {str(sim)!r}, {str(out)!r}, '--no-report', "
        "'--chunks', '150', '--scheduler', 'threads']))"
    )
    env = {**os.environ, "TILESKY_PROGRESS_INTERVAL": "0.02"}
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        stdin=follower,
        stdout=follower,
        stderr=follower,
        env=env,
    )
    os.close(follower)
    chunks = []
    while True:
        try:
            data = os.read(leader, 65536)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    os.close(leader)
    assert proc.wait(timeout=300) == 0
    text = b"".join(chunks).decode()
    drawn = [LINE.match(part.strip()) for part in re.split(r"[\r\n]", text)]
    drawn = [m for m in drawn if m]
    assert len(drawn) >= 5, text
    raw = [int(m.group(2)) / int(m.group(3)) for m in drawn]
    assert any(b < a for a, b in itertools.pairwise(raw)), text
    shown = [int(m.group(1)) for m in drawn]
    bars = [m.group(0).count("#") for m in drawn]
    assert shown == sorted(shown) and bars == sorted(bars), text
    assert shown[-1] == 100 and shown[-2] < 100

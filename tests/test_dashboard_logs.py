"""The dashboard's own errors stay out of tilesky's stderr."""

import logging
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request

from tilesky._dashboard_logs import quiet_dashboard_logs
from tilesky.cli import main

BIN = sys.executable.rsplit("/", 1)[0]


def test_filter_drops_only_dashboard_failures():
    records = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(record.getMessage())

    handler = Keep()
    loggers = [
        logging.getLogger(n) for n in ("tornado.application", "bokeh.util.tornado")
    ]
    for logger in loggers:
        logger.addHandler(handler)
    try:
        quiet_dashboard_logs()
        loggers[0].error("Uncaught exception %s\n%r", "GET /groups (127.0.0.1)", "r")
        loggers[1].error("Error thrown from periodic callback:")
        loggers[1].error("Traceback (most recent call last): ...")
        loggers[0].error("something else went wrong")
        assert records == ["something else went wrong"]
        quiet_dashboard_logs(False)
        loggers[1].error("Error thrown from periodic callback:")
        assert records[-1] == "Error thrown from periodic callback:"
    finally:
        quiet_dashboard_logs(False)
        for logger in loggers:
            logger.removeHandler(handler)


def _get(url):
    try:
        with urllib.request.urlopen(url, timeout=10) as answer:
            return answer.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return None


def test_no_dashboard_traceback_during_a_run(tmp_path):
    sim = tmp_path / "sim.zarr"
    assert (
        main(
            ["simulate", str(sim), "--shape", "1200", "1200", "--scheduler", "threads"]
        )
        == 0
    )
    err_path = tmp_path / "err.txt"
    with open(err_path, "w") as err:
        run = subprocess.Popen(
            [
                f"{BIN}/tilesky",
                "run",
                str(sim),
                str(tmp_path / "o.zarr"),
                "--no-report",
            ],
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    try:
        link = None
        deadline = time.monotonic() + 120
        while link is None and time.monotonic() < deadline and run.poll() is None:
            found = re.search(
                r"dashboard: (http://127\.0\.0\.1:\d+)", err_path.read_text()
            )
            link = found and found.group(1)
            time.sleep(0.2)
        assert link, err_path.read_text()
        statuses = []
        while run.poll() is None:
            statuses += [_get(f"{link}/groups"), _get(f"{link}/status")]
            time.sleep(0.3)
        assert run.wait(timeout=300) == 0
    finally:
        if run.poll() is None:
            run.kill()
    text = err_path.read_text()
    assert any(s is not None for s in statuses), statuses
    # Nothing from the dashboard's pages or plots (a worker's heartbeat
    # racing the cluster's shutdown on a loaded machine is another matter).
    for sign in ("/groups", "bokeh", "tornado", "dashboard.components", "KeyError"):
        assert sign not in text, text
    assert "tilesky: wrote" in text

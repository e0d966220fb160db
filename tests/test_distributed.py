"""tilesky on a real Dask cluster, on loopback.

The cluster is what the deploy recipes start: a ``dask scheduler`` process
writing a scheduler file and two ``dask worker --scheduler-file F --nthreads 1``
processes. Every process runs in its own session and is killed (whole process
group) by a finaliser with bounded waits.
"""

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path

import dask
import numpy as np
import pytest
import zarr
from dask.callbacks import Callback
from dask.utils import key_split

from tilesky.cli import main
from tilesky.simulate import write_simulation
from tilesky.store import StoreError, open_run

distributed = pytest.importorskip("distributed")

BIN = Path(sys.executable).parent
SHAPE = (600, 600)
# 9 tiles of 210 (rounded up to the 30-pixel mesh): an interior tile and
# ragged edges, with few enough tasks for a loaded 2-core machine.
CHUNKS = "200"
# Reports (plots) are not what these tests are about.
RUN_OPTS = ("--chunks", CHUNKS, "--no-report")
STAGES = {"ring-median", "source-mask", "mesh-stats", "interpolate", "store"}
# Bounded waits: generous for a loaded 2-core machine, never infinite.
START_TIMEOUT = 90
RUN_TIMEOUT = 240


# ----------------------------------------------------------------------------
# processes


class Proc:
    """A subprocess in its own session, logging to files."""

    def __init__(self, args, log_dir: Path, name: str):
        self.name = name
        self.err_path = log_dir / f"{name}.err"
        self.out_path = log_dir / f"{name}.out"
        self._err = open(self.err_path, "wb")
        self._out = open(self.out_path, "wb")
        env = dict(os.environ, PYTHONUNBUFFERED="1", NUMBA_NUM_THREADS="1")
        self.popen = subprocess.Popen(
            [str(a) for a in args],
            stdout=self._out,
            stderr=self._err,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env=env,
        )

    @property
    def alive(self) -> bool:
        return self.popen.poll() is None

    def stderr(self) -> str:
        return self.err_path.read_text(errors="replace")

    def stdout(self) -> str:
        return self.out_path.read_text(errors="replace")

    def _signal_group(self, sig) -> None:
        # The group also holds children (a nanny's worker, a local cluster's
        # workers) that would outlive the leader.
        try:
            os.killpg(self.popen.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def kill(self) -> None:
        """SIGKILL the whole process group (a lost node / a killed job)."""
        self._signal_group(signal.SIGKILL)
        self.popen.wait(timeout=15)

    def wait(self, timeout: float) -> int:
        try:
            return self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            pytest.fail(f"{self.name} did not finish in {timeout} s:\n{self.stderr()}")

    def stop(self) -> None:
        if self.alive:
            self._signal_group(signal.SIGTERM)
            try:
                self.popen.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        self._signal_group(signal.SIGKILL)
        try:
            self.popen.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        self._err.close()
        self._out.close()


def _wait_for(predicate, timeout: float, what: str, procs=()):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        for p in procs:
            if not p.alive:
                pytest.fail(f"{p.name} exited while waiting for {what}:\n{p.stderr()}")
        time.sleep(0.05)
    pytest.fail(f"timed out after {timeout} s waiting for {what}")


class Cluster:
    """``dask scheduler`` + ``dask worker`` processes on 127.0.0.1."""

    def __init__(self, root: Path):
        self.root = root
        self.scheduler_file = root / "scheduler.json"
        self.scheduler = None
        self.workers: list[Proc] = []
        self._count = 0

    def start(self, n_workers: int) -> None:
        self.scheduler = Proc(
            [
                BIN / "dask",
                "scheduler",
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--scheduler-file",
                self.scheduler_file,
                "--dashboard-address",
                "127.0.0.1:0",
            ],
            self.root,
            "scheduler",
        )
        _wait_for(
            self._address, START_TIMEOUT, "the scheduler file", procs=[self.scheduler]
        )
        self.ensure_workers(n_workers)

    def _address(self) -> str | None:
        try:
            return json.loads(self.scheduler_file.read_text())["address"]
        except (OSError, ValueError, KeyError):
            return None

    @property
    def address(self) -> str:
        return self._address()

    def start_worker(self) -> Proc:
        self._count += 1
        proc = Proc(
            [
                BIN / "dask",
                "worker",
                "--scheduler-file",
                self.scheduler_file,
                "--nthreads",
                "1",
                "--host",
                "127.0.0.1",
                "--no-dashboard",
            ],
            self.root,
            f"worker{self._count}",
        )
        self.workers.append(proc)
        return proc

    def client(self):
        return distributed.Client(
            scheduler_file=str(self.scheduler_file), timeout="30s", set_as_default=False
        )

    def ensure_workers(self, n: int) -> None:
        """Start workers until ``n`` are alive and registered."""
        self.workers = [w for w in self.workers if w.alive]
        while len(self.workers) < n:
            self.start_worker()
        with self.client() as client:
            client.wait_for_workers(n, timeout=START_TIMEOUT)

    def n_workers(self) -> int:
        with self.client() as client:
            return len(client.scheduler_info()["workers"])

    def task_prefixes(self) -> set[str]:
        with self.client() as client:
            return set(
                client.run_on_scheduler(
                    lambda dask_scheduler: list(dask_scheduler.task_prefixes)
                )
            )

    def close(self) -> None:
        for w in self.workers:
            w.stop()
        if self.scheduler is not None:
            self.scheduler.stop()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, request):
    c = Cluster(tmp_path_factory.mktemp("cluster"))
    request.addfinalizer(c.close)
    c.start(2)
    return c


# ----------------------------------------------------------------------------
# data


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("scene") / "scene.zarr"
    with dask.config.set(scheduler="threads"):
        write_simulation(str(path), shape=SHAPE, seed=4, chunks=150)
    return str(path)


class _KeyRecorder(Callback):
    """Counts the key prefixes (dashboard names) of every graph computed."""

    def __init__(self):
        super().__init__()
        self.prefixes = Counter()

    def _start(self, dsk):
        self.prefixes.update(key_split(k) for k in dsk)


OUTPUTS = (
    "background",
    "background_rms",
    "mask",
    "subtracted",
    "background_mesh",
    "background_rms_mesh",
    "n_pixels_mesh",
)


def _arrays(url: str) -> dict:
    group = zarr.open_group(url, mode="r")
    names = sorted(name for name, _ in group.arrays())
    assert set(OUTPUTS) <= set(names), names
    return {name: group[name][...] for name in names}


@pytest.fixture(scope="module")
def reference(scene, tmp_path_factory):
    """The undisturbed run with the threaded scheduler, and its graphs' names."""
    out = tmp_path_factory.mktemp("reference") / "run.zarr"
    recorder = _KeyRecorder()
    with recorder:
        code = main(["run", scene, str(out), *RUN_OPTS, "--scheduler", "threads"])
    assert code == 0
    group = zarr.open_group(str(out), mode="r")
    return {
        "arrays": _arrays(str(out)),
        "blocks": dict(group.attrs["blocks"]),
        "has_metrics": bool(group.attrs.get("metrics")),
        "prefixes": recorder.prefixes,
    }


def _assert_same_output(url: str, reference) -> None:
    got = _arrays(url)
    assert sorted(got) == sorted(reference["arrays"])
    for name, want in reference["arrays"].items():
        equal_nan = want.dtype.kind == "f"
        assert got[name].dtype == want.dtype, name
        assert np.array_equal(got[name], want, equal_nan=equal_nan), name


def _work_arrays_with_chunks(out: Path) -> list[str]:
    """Checkpoints of a run in progress that already hold a stored block."""
    found = []
    try:
        for arr in (out / "_work").iterdir():
            chunks = arr / "c"
            if chunks.is_dir() and any(f.is_file() for f in chunks.rglob("*")):
                found.append(arr.name)
    except OSError:
        return []
    return sorted(found)


def _status_page(text: str) -> int:
    match = re.search(r"dashboard: (http://\S+)", text)
    assert match, text
    link = match.group(1)
    assert link.startswith("http://127.0.0.1:"), link
    with urllib.request.urlopen(link, timeout=60) as response:
        return response.status


# ----------------------------------------------------------------------------
# tests


def test_task_names_read_like_the_pipeline(reference):
    prefixes = reference["prefixes"]
    assert STAGES <= set(prefixes), sorted(prefixes)
    if reference["has_metrics"]:
        # A run that scores itself names those tasks too ("metrics-block",
        # "metrics-merge").
        assert any(p.split("-")[0] == "metrics" for p in prefixes), sorted(prefixes)
    # Blocks are written by "store" tasks; one task writes a tile's block of
    # every array written together (the outputs: ten arrays per tile), so
    # there are fewer of them than blocks, even with the pipeline's last
    # stage named "store" too (test_grouped_block_writes_* counts exactly).
    assert 0 < prefixes["store"] < reference["blocks"]["written"], prefixes
    assert reference["blocks"]["skipped"] == 0


def test_run_on_scheduler_address_equals_threads(
    cluster, scene, reference, tmp_path, capsys
):
    cluster.ensure_workers(2)
    out = tmp_path / "tcp.zarr"
    code = main(
        [
            "run",
            scene,
            str(out),
            *RUN_OPTS,
            "--scheduler",
            cluster.address,
            "--progress",
        ]
    )
    captured = capsys.readouterr()
    err = captured.err
    assert code == 0, err
    assert f"connected to {cluster.address} with 2 worker(s)" in err
    # The overall progress line, on stderr only, counted on the scheduler.
    assert re.search(r"tilesky: \[#{30}\] 100% (\d+)/\1 tasks", err), err
    assert "tasks" not in captured.out
    attrs = open_run(str(out)).attrs
    assert attrs["tilesky_status"] == "complete"
    _assert_same_output(str(out), reference)
    # Where the workers' time went, by stage, as the task stream saw it.
    work = attrs["task_seconds"]
    assert STAGES <= set(work), work
    assert min(work.values()) >= 0 < sum(work.values())
    assert list(work.values()) == sorted(work.values(), reverse=True)
    # What the dashboard groups tasks by, as the scheduler saw them.
    assert STAGES <= cluster.task_prefixes()


def test_run_survives_a_killed_worker(cluster, scene, reference, tmp_path):
    """SIGKILL one of two workers mid-run; the other one finishes the run.

    The run goes through the scheduler file (the SLURM recipes' way).
    """
    cluster.ensure_workers(2)
    out = tmp_path / "lost_worker.zarr"
    run = Proc(
        [
            BIN / "tilesky",
            "run",
            scene,
            out,
            *RUN_OPTS,
            "--scheduler",
            cluster.scheduler_file,
        ],
        tmp_path,
        "tilesky",
    )
    try:
        # The dashboard of an external scheduler is announced too.
        _wait_for(
            lambda: "dashboard:" in run.stderr(),
            START_TIMEOUT,
            "the dashboard line",
            [run],
        )
        assert _status_page(run.stderr()) == 200
        _wait_for(
            lambda: _work_arrays_with_chunks(out),
            RUN_TIMEOUT,
            "a checkpoint block",
            [run],
        )
        victim = cluster.workers[0]
        victim.kill()
        assert run.alive, "the run ended before the worker was killed"
        code = run.wait(RUN_TIMEOUT)
        assert code == 0, run.stderr()
    finally:
        run.stop()
    assert "(scheduler file" in run.stderr()
    assert cluster.n_workers() == 1
    assert "Remove worker" in cluster.scheduler.stderr()
    _assert_same_output(str(out), reference)


def test_killed_run_resumes_with_less_work(scene, reference, tmp_path, capsys):
    """SIGKILL a whole `tilesky run` (local cluster) part way, then --resume.

    While it runs, its local cluster's dashboard answers on /status.
    """
    out = tmp_path / "killed.zarr"
    run = Proc(
        [BIN / "tilesky", "run", scene, out, *RUN_OPTS, "--workers", "1"],
        tmp_path,
        "tilesky",
    )
    try:
        _wait_for(
            lambda: "dashboard:" in run.stderr(),
            START_TIMEOUT,
            "the dashboard line",
            [run],
        )
        assert _status_page(run.stderr()) == 200
        done = _wait_for(
            lambda: len(_work_arrays_with_chunks(out)) >= 2,
            RUN_TIMEOUT,
            "two checkpoints with blocks",
            [run],
        )
        run.kill()
    finally:
        run.stop()
    assert done
    group = zarr.open_group(str(out), mode="r")
    assert group.attrs["tilesky_status"] == "running"
    with pytest.raises(StoreError, match="did not finish"):
        open_run(str(out))

    # Without --resume an unfinished run is not touched.
    assert main(["run", scene, str(out), *RUN_OPTS, "--scheduler", "threads"]) == 1
    assert "--resume" in capsys.readouterr().err

    code = main(
        [
            "run",
            scene,
            str(out),
            *RUN_OPTS,
            "--scheduler",
            "threads",
            "--resume",
            "--progress",
        ]
    )
    err = capsys.readouterr().err
    assert code == 0, err
    assert re.search(r"tilesky: writing background, .*\(\d+ blocks\)", err), err
    _assert_same_output(str(out), reference)
    blocks = zarr.open_group(str(out), mode="r").attrs["blocks"]
    full = reference["blocks"]["written"]
    assert blocks["skipped"] > 0, blocks
    assert blocks["written"] < full, (blocks, full)
    # Every block is either reused or computed, none twice.
    assert blocks["written"] + blocks["skipped"] == full, (blocks, full)
    assert not (out / "_work").exists()

"""The command line: simulate -> run on a real local cluster, and bad input."""

import os

import numpy as np
import pytest
import xarray as xr
import zarr
from astropy.io import fits

from tilesky import estimate_background
from tilesky.cli import main
from tilesky.store import StoreError, open_run


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    out = tmp_path_factory.mktemp("sim") / "scene.zarr"
    code = main(
        [
            "simulate",
            str(out),
            "--shape",
            "330",
            "390",
            "--seed",
            "1",
            "--chunks",
            "150",
            "--scheduler",
            "threads",
        ]
    )
    assert code == 0
    return out


def test_version(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert "tilesky" in capsys.readouterr().out


def test_run_on_local_cluster_equals_monolithic(sim, tmp_path, capsys):
    out = tmp_path / "run.zarr"
    code = main(["run", str(sim), str(out), "--chunks", "150", "--workers", "2"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "dashboard: http://127.0.0.1:" in err
    ds = open_run(str(out))
    assert ds.attrs["tilesky_status"] == "complete"
    assert ds.attrs["input"]["kind"] == "zarr"
    scene = xr.open_zarr(sim).scene.values
    mono = estimate_background(scene)
    assert np.array_equal(ds.mask.values, mono.mask.values)
    np.testing.assert_array_equal(ds.background.values, mono.background.values)
    np.testing.assert_array_equal(
        ds.background_mesh.values, mono.background_mesh.values
    )
    assert "_work" not in zarr.open_group(str(out), mode="r")


def test_default_cluster_runs_in_process_threads(sim, tmp_path, capsys):
    """Without --workers: a real LocalCluster, its one worker in this process."""
    out = tmp_path / "run.zarr"
    code = main(["run", str(sim), str(out), "--chunks", "150", "--no-report"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "local cluster with one in-process worker" in err
    assert "dashboard: http://127.0.0.1:" in err
    ds = open_run(str(out))
    mono = estimate_background(xr.open_zarr(sim).scene.values)
    assert np.array_equal(ds.mask.values, mono.mask.values)
    np.testing.assert_array_equal(ds.background.values, mono.background.values)


def test_in_process_cluster_serves_its_dashboard():
    """The inproc scheduler has no host: the printed link is built from the
    dashboard's own port, and answers."""
    import urllib.request

    from tilesky.cluster import execution

    said = []
    with execution(None, announce=said.append) as ctx:
        assert ctx.dashboard_link.startswith("http://127.0.0.1:")
        assert ctx.dashboard_link in said[0]
        with urllib.request.urlopen(ctx.dashboard_link, timeout=60) as response:
            assert response.status == 200


def _page_faults_of_large_temporaries():
    import resource

    import numpy as np

    # Two large frees first: glibc raises its mmap threshold on the first,
    # and the heap has grown to hold one array after the second.
    np.ones(2**21, dtype=np.float32)
    np.ones(2**21, dtype=np.float32)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(20):
        np.ones(2**21, dtype=np.float32)  # 8 MiB, about a tile
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


def test_worker_processes_reuse_memory_for_tile_temporaries(monkeypatch):
    """Worker processes of the local cluster start without distributed's
    MALLOC_TRIM_THRESHOLD_, which makes every 8 MiB temporary a fresh,
    page-faulted mmap (measured: 10000-41000 faults for 20 arrays with it,
    depending on transparent huge pages; 0 without; one array is 2048
    pages)."""
    from tilesky.cluster import execution

    # An earlier cluster in this process may have left it in os.environ,
    # which spawned workers inherit; a user's own setting is respected.
    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_", raising=False)
    with execution(
        None, n_workers=1, dashboard=False, announce=lambda msg: None
    ) as ctx:
        env = ctx.client.run(lambda: os.environ.get("MALLOC_TRIM_THRESHOLD_"))
        faults = ctx.client.run(_page_faults_of_large_temporaries)
        threads = ctx.client.run(lambda: os.environ.get("OMP_NUM_THREADS"))
    assert list(env.values()) == [None]
    assert list(threads.values()) == [os.environ.get("OMP_NUM_THREADS", "1")]
    assert max(faults.values()) < 512, faults


@pytest.fixture
def kept(monkeypatch):
    """Whether each write_arrays(keep=True) call kept its arrays in memory."""
    from tilesky.store import RunStore

    calls = []
    keeping = RunStore._keeping_client

    def spy(self, arrays):
        client = keeping(self, arrays)
        calls.append(client is not None)
        return client

    monkeypatch.setattr(RunStore, "_keeping_client", spy)
    return calls


def test_default_cluster_writes_every_output_block(sim, tmp_path, capsys, kept):
    """In-process worker: outputs are kept in memory and written behind.

    Every output chunk is on disk when the run says complete; checkpoints
    written in the background are gone.
    """
    out = tmp_path / "run.zarr"
    code = main(["run", str(sim), str(out), "--chunks", "150", "--no-report"])
    assert code == 0, capsys.readouterr().err
    assert kept and all(kept), kept
    group = zarr.open_group(str(out), mode="r")
    assert group.attrs["tilesky_status"] == "complete"
    assert "_work" not in group
    for name in ("background", "background_rms", "mask", "subtracted"):
        assert group[name].nchunks_initialized == group[name].nchunks, name
    threads = tmp_path / "threads.zarr"
    args = ["run", str(sim), str(threads), "--chunks", "150", "--no-report"]
    assert main([*args, "--scheduler", "threads"]) == 0
    a, b = xr.open_zarr(str(out)), xr.open_zarr(str(threads))
    for name in a.data_vars:
        np.testing.assert_array_equal(a[name].values, b[name].values)
    assert a.attrs["metrics"] == b.attrs["metrics"]


def test_a_kept_scene_is_not_written(sim, tmp_path, capsys, monkeypatch, kept):
    """The scene checkpoint is a copy of the input: kept in memory, it is not
    written (a resumed run reads the input again); streamed, it is."""
    from tilesky.store import RunStore

    written = []
    write_tasks = RunStore._write_tasks

    def spy(self, arrays, targets, existing):
        written.extend(t.path for t in targets)
        return write_tasks(self, arrays, targets, existing)

    monkeypatch.setattr(RunStore, "_write_tasks", spy)
    args = ["--chunks", "150", "--no-report"]
    assert main(["run", str(sim), str(tmp_path / "kept.zarr"), *args]) == 0
    assert kept and all(kept), kept
    assert "_work/scene" not in written
    assert {"_work/first_mask", "_work/first_smoothed", "background"} <= set(written)
    written.clear()
    out = tmp_path / "streamed.zarr"
    assert main(["run", str(sim), str(out), *args, "--scheduler", "threads"]) == 0
    assert "_work/scene" in written
    a, b = xr.open_zarr(str(tmp_path / "kept.zarr")), xr.open_zarr(str(out))
    np.testing.assert_array_equal(a.background.values, b.background.values)


def test_local_worker_processes_keep_intermediates(sim, tmp_path, capsys, kept):
    """``--workers 2``: intermediates stay in the worker processes' memory,
    halos move between them, and the result equals the threads run."""
    out = tmp_path / "run.zarr"
    args = ["--chunks", "150", "--no-report"]
    code = main(["run", str(sim), str(out), *args, "--workers", "2"])
    assert code == 0, capsys.readouterr().err
    assert kept and all(kept), kept
    group = zarr.open_group(str(out), mode="r")
    assert group.attrs["tilesky_status"] == "complete"
    assert "_work" not in group
    threads = tmp_path / "threads.zarr"
    assert main(["run", str(sim), str(threads), *args, "--scheduler", "threads"]) == 0
    a, b = xr.open_zarr(str(out)), xr.open_zarr(str(threads))
    for name in a.data_vars:
        np.testing.assert_array_equal(a[name].values, b[name].values)
    assert a.attrs["metrics"] == b.attrs["metrics"]


def test_local_worker_process_killed_mid_run_changes_nothing(sim, tmp_path):
    """SIGKILL a ``--workers 2`` worker while it holds kept intermediates:
    its nanny restarts it, dask recomputes what it held, same output."""
    import signal
    import threading
    import time

    from tilesky._dispatch import resolve_config, run_to_store
    from tilesky.cluster import execution

    out = tmp_path / "run.zarr"
    outcome = {}

    def run():
        try:
            run_to_store(str(sim), str(out), config=resolve_config(None), chunks=150)
        except BaseException as exc:  # reported by the assertion below
            outcome["error"] = exc

    with execution(
        None, n_workers=2, dashboard=False, announce=lambda msg: None
    ) as ctx:
        victim, pid = next(iter(ctx.client.run(os.getpid).items()))
        thread = threading.Thread(target=run)
        thread.start()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and thread.is_alive():
            held = ctx.client.run(
                lambda dask_worker: len(dask_worker.data), workers=[victim]
            )
            if held.get(victim, 0) >= 10:
                break
            time.sleep(0.01)
        assert thread.is_alive(), "the run ended before a worker could be killed"
        os.kill(pid, signal.SIGKILL)
        thread.join(300)
    assert not thread.is_alive()
    assert "error" not in outcome, outcome
    threads = tmp_path / "threads.zarr"
    args = ["--chunks", "150", "--no-report", "--scheduler", "threads"]
    assert main(["run", str(sim), str(threads), *args]) == 0
    a, b = xr.open_zarr(str(out)), xr.open_zarr(str(threads))
    assert a.attrs["tilesky_status"] == "complete"
    for name in a.data_vars:
        np.testing.assert_array_equal(a[name].values, b[name].values)


def test_only_clusters_tied_to_this_process_keep_intermediates(monkeypatch):
    """Clusters tilesky started, or whose workers live in this process, keep
    a run's intermediates in memory; a cluster it only connects to (here a
    plain LocalCluster of worker processes) does not."""
    from distributed import Client, LocalCluster

    from tilesky.cluster import execution, keeps_intermediates

    # The plain cluster's nanny writes MALLOC_TRIM_THRESHOLD_ into this
    # process's environment: restore it afterwards.
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "0")
    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_")

    with execution(None, dashboard=False, announce=lambda msg: None) as ctx:
        assert keeps_intermediates(ctx.client)
    with (
        LocalCluster(n_workers=1, processes=False, dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):
        assert keeps_intermediates(client)
    with (
        LocalCluster(
            n_workers=1, threads_per_worker=1, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        assert not keeps_intermediates(client)


def test_kept_intermediates_are_freed_when_the_run_ends(sim, tmp_path):
    """Nothing of a finished run stays in the in-process worker's memory."""
    import time

    from tilesky._dispatch import resolve_config, run_to_store
    from tilesky.cluster import execution

    with execution(None, dashboard=False, announce=lambda msg: None) as ctx:
        run = run_to_store(
            str(sim), str(tmp_path / "run.zarr"), config=resolve_config(None)
        )
        assert run.computed
        deadline = time.monotonic() + 10
        while True:
            held = ctx.client.run(lambda dask_worker: len(dask_worker.data))
            if sum(held.values()) == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert sum(held.values()) == 0, held
        assert open_run(str(tmp_path / "run.zarr")).attrs["tilesky_status"] == (
            "complete"
        )


def test_drain_refuses_writes_that_never_finished(tmp_path):
    """A block write cancelled (or lost with its cluster) is not counted as
    written: drain() says so instead of letting the run be marked complete."""
    import time

    from tilesky.cluster import execution
    from tilesky.store import RunStore

    store = RunStore(str(tmp_path / "run.zarr"))
    with execution(None, dashboard=False, announce=lambda msg: None) as ctx:
        done = ctx.client.submit(lambda: 1, pure=False)
        slow = ctx.client.submit(time.sleep, 2, pure=False)
        done.result()
        slow.cancel()
        store._pending = [done, slow]
        with pytest.raises(StoreError, match=r"1 block write\(s\) .* did not finish"):
            store.drain()
    assert store.blocks_written == 1


def test_grouped_block_writes_resume_per_array_and_block(tmp_path):
    """One task writes a tile's block of every array on the same block grid;
    arrays on another grid get their own tasks; a resumed write skips the
    blocks already stored, array by array, and writes only the missing one."""
    import dask
    import dask.array as da

    from tilesky.store import RunStore

    url = str(tmp_path / "run.zarr")
    full = np.arange(60 * 50, dtype=np.float32).reshape(60, 50)
    arrays = {
        "image": da.from_array(full, chunks=(30, 25)),  # 2 x 2 blocks
        "twice": da.from_array(2 * full, chunks=(30, 25)),  # same grid
        "mesh": da.from_array(full[:6, :5], chunks=(3, 3)),  # 2 x 2, other sizes
        "rows": da.from_array(full[:9], chunks=(3, 50)),  # 3 x 1 blocks
    }
    items = [(name, a, None, None) for name, a in arrays.items()]
    store = RunStore(url)
    assert store.create()
    tasks = store._write_tasks(
        list(arrays.values()),
        [store._target(*item) for item in items],
        [set() for _ in items],
    )
    # image, twice and mesh share the four 2 x 2 positions; rows has three.
    assert len(tasks) == 4 + 3
    with dask.config.set(scheduler="sync"):
        store.write_arrays(items)
    assert (store.blocks_written, store.blocks_skipped) == (4 + 4 + 4 + 3, 0)

    # A killed run: one block of "twice" never reached the store.
    (tmp_path / "run.zarr" / "twice" / "c" / "1" / "0").unlink()
    store.release()  # the killed run's lock went with its process
    resumed = RunStore(url)
    assert resumed.create(resume=True)
    with dask.config.set(scheduler="sync"):
        stored = resumed.write_arrays(items)
    assert (resumed.blocks_written, resumed.blocks_skipped) == (1, 14)
    for (name, expected), got in zip(arrays.items(), stored, strict=True):
        np.testing.assert_array_equal(got.compute(), expected.compute(), name)


def test_run_too_large_for_memory_streams_through_the_store(
    sim, tmp_path, capsys, monkeypatch, kept
):
    """All or nothing: when a run's intermediates would not fit, none is kept
    in memory; every checkpoint is written and read back, same result."""
    import tilesky.cluster

    monkeypatch.setattr(tilesky.cluster, "holdable_bytes", lambda client=None: 1)
    out = tmp_path / "run.zarr"
    code = main(["run", str(sim), str(out), "--chunks", "150", "--no-report"])
    assert code == 0, capsys.readouterr().err
    assert kept and not any(kept), kept
    ds = open_run(str(out))
    mono = estimate_background(xr.open_zarr(sim).scene.values)
    np.testing.assert_array_equal(ds.background.values, mono.background.values)
    assert ds.attrs["blocks"]["written"] > 0


def test_failed_background_write_fails_the_run(sim, tmp_path, capsys, monkeypatch):
    """An output block that cannot be written, after the stage went on: the
    run ends with that error and is not marked complete."""
    import tilesky.store as store_module

    write = store_module._write_block

    def refuse_background(block, url, options, path, region):
        if path == "background":
            msg = f"[Errno 13] Permission denied: {url}/{path}"
            raise PermissionError(msg)
        return write(block, url, options, path, region)

    monkeypatch.setattr(store_module, "_write_block", refuse_background)
    out = tmp_path / "run.zarr"
    code = main(["run", str(sim), str(out), "--chunks", "150", "--no-report"])
    err = capsys.readouterr().err
    assert code == 1
    assert "Traceback" not in err
    assert "tilesky: error: [Errno 13] Permission denied" in err
    status = zarr.open_group(str(out), mode="r").attrs["tilesky_status"]
    assert status == "running"
    with pytest.raises(StoreError, match="did not finish"):
        open_run(str(out))


def test_error_mid_run_on_the_default_cluster(tmp_path, capsys):
    """A constant image fails at its first noise estimate, after checkpoints
    were kept and their writes queued: one error line, exit 1, and the store
    is either gone or marked unfinished, never complete."""
    scene = tmp_path / "flat.zarr"
    flat = zarr.open_array(
        str(scene), mode="w", shape=(300, 300), chunks=(150, 150), dtype="f4"
    )
    flat[:] = 1.0
    out = tmp_path / "run.zarr"
    code = main(["run", str(scene), str(out), "--no-report"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert "Traceback" not in "\n".join(err)
    assert err[-1].startswith("tilesky: error: the noise of the image is zero"), err
    if out.exists():
        status = zarr.open_group(str(out), mode="r").attrs["tilesky_status"]
        assert status == "running"


def _assert_one_line_error(code, capsys, pattern):
    err = capsys.readouterr().err.strip()
    assert code == 1
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("tilesky: error:")
    assert pattern in lines[0], lines[0]


def test_existing_output_needs_overwrite(sim, tmp_path, capsys):
    out = tmp_path / "run.zarr"
    assert main(["run", str(sim), str(out), "--scheduler", "threads"]) == 0
    capsys.readouterr()
    before = sorted(p.name for p in out.iterdir())
    code = main(["run", str(sim), str(out), "--scheduler", "threads"])
    _assert_one_line_error(code, capsys, "--overwrite")
    assert sorted(p.name for p in out.iterdir()) == before
    assert (
        main(["run", str(sim), str(out), "--scheduler", "threads", "--overwrite"]) == 0
    )


def test_unknown_scheduler_names_the_flag(sim, tmp_path, capsys):
    nowhere = str(tmp_path / "nowhere")
    code = main(["run", str(sim), str(tmp_path / "o.zarr"), "--scheduler", nowhere])
    _assert_one_line_error(code, capsys, f"error: --scheduler {nowhere!r} is neither")
    assert not (tmp_path / "o.zarr").exists()


def test_bad_inputs_give_one_line(tmp_path, capsys):
    code = main(
        [
            "run",
            str(tmp_path / "missing.fits"),
            str(tmp_path / "o.zarr"),
            "--scheduler",
            "threads",
        ]
    )
    _assert_one_line_error(code, capsys, "missing.fits")
    assert not (tmp_path / "o.zarr").exists()

    cube = tmp_path / "cube.fits"
    fits.PrimaryHDU(np.zeros((3, 40, 40), np.float32)).writeto(cube)
    code = main(["run", str(cube), str(tmp_path / "o.zarr"), "--scheduler", "threads"])
    _assert_one_line_error(code, capsys, "2-D")

    table = tmp_path / "table.fits"
    hdul = fits.HDUList(
        [
            fits.PrimaryHDU(),
            fits.BinTableHDU.from_columns([fits.Column("a", "E", array=[1.0])]),
        ]
    )
    hdul.writeto(table)
    code = main(
        [
            "run",
            str(table),
            str(tmp_path / "o.zarr"),
            "--scheduler",
            "threads",
            "--hdu",
            "1",
        ]
    )
    _assert_one_line_error(code, capsys, "image")
    assert not (tmp_path / "o.zarr").exists()

    code = main(
        [
            "run",
            str(cube),
            str(tmp_path / "o.zarr"),
            "--set",
            "final_mesh.filter_size=4",
        ]
    )
    _assert_one_line_error(code, capsys, "filter_size must be odd")


def test_all_nan_image_fails_and_leaves_nothing(tmp_path, capsys):
    img = tmp_path / "nan.fits"
    fits.PrimaryHDU(np.full((90, 90), np.nan, np.float32)).writeto(img)
    out = tmp_path / "o.zarr"
    code = main(["run", str(img), str(out), "--scheduler", "threads"])
    _assert_one_line_error(code, capsys, "no finite pixels")
    assert not out.exists()


def test_unfinished_store_is_never_read_as_finished(tmp_path):
    out = tmp_path / "o.zarr"
    group = zarr.open_group(str(out), mode="w")
    group.attrs["tilesky_status"] = "running"
    with pytest.raises(StoreError, match="did not finish"):
        open_run(str(out))


def test_metrics_read_the_scene_the_run_keeps(sim, tmp_path):
    """A kept scene stays referenced for the metrics; other kept arrays do not."""
    import dask.array as da

    from tilesky.cluster import execution
    from tilesky.store import WORK, RunStore

    with execution(None, dashboard=False, announce=lambda msg: None):
        store = RunStore(str(tmp_path / "run.zarr"))
        assert store.create(overwrite=False, resume=False, attrs={})
        store.keep_bytes = 1
        store.remember = frozenset({f"{WORK}/scene"})
        scene = da.ones((60, 80), chunks=30, dtype=np.float32)
        kept = store.checkpoint_many({"scene": scene, "ring": scene * 2})
        assert set(store.held) == {f"{WORK}/scene"}
        assert store.held[f"{WORK}/scene"].name == kept["scene"].name
        np.testing.assert_array_equal(store.held[f"{WORK}/scene"].compute(), 1.0)
        store.drain()

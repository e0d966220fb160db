"""Scaling: the same mosaic on 1 and 2 local worker processes.

    python benchmarks/bench_scaling.py [--size 6000] [--chunks 1020] [--repeat 1]

Simulates a mosaic once, then times ``tilesky run --no-report`` end to end
(interpreter start, cluster start, all stages, metrics, store) with
``--workers 1`` and ``--workers 2`` (worker processes, one thread each), and,
for comparison, the default in-process cluster (one worker, a thread per
core) and dask's threaded scheduler without a cluster. Each run's pipeline
time (the store's ``timings.total``: stages and metrics, without interpreter
and cluster start) is printed too, so the fixed start-up cost can be told
from the part that scales, and the CPU seconds of the tilesky process
(client and scheduler; with the default cluster also its worker) and of
the worker processes, which share this machine's cores. An untimed run
first fills the numba cache.

Then the same 1 and 2 worker processes once more, each started once in
this process (as ``tilesky run --workers N`` starts it) and given one
untimed run first: the timed runs (best of ``--repeat``) find the workers
with tilesky imported and its compiled kernels loaded, as on a long-lived
cluster. What a fresh worker spends on that is paid once per run by each
command above, by one worker or by two at the same time, so it weighs on
the ratio there and not here. For those runs the CPU seconds of the
workers' threads (kernels, event loop, Zarr I/O) and of this process
(client and scheduler) are printed per run: what does not divide between
two workers; and the megabytes the two workers sent each other. One more
run on each warm cluster records the task stream: how long 0, 1 or 2 tasks
were computing, and the tasks' summed wall time against their CPU. Linux
only (/proc). Writes benchmarks/results/bench_scaling.json.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

import zarr
from _common import run_cli

RESULTS = Path(__file__).parent / "results"

CONFIGS = {
    "1 worker process": ["--workers", "1"],
    "2 worker processes": ["--workers", "2"],
    "in-process, 2 threads (default)": [],
    # dask's local threaded scheduler, no distributed: what the scheduling
    # and communication of a distributed cluster cost on this mosaic.
    "no cluster (--scheduler threads)": ["--scheduler", "threads"],
}


#: Thread names (Python's) -> what they do, for the CPU breakdown.
THREAD_KINDS = (
    ("Dask-Default-Threads", "task threads"),
    ("zarr_io", "Zarr I/O threads"),
    ("asyncio_", "Zarr I/O threads"),
    ("MainThread", "event loop"),
)


def _thread_cpu() -> dict[str, float]:
    """CPU seconds of this process's threads so far, by kind of thread."""
    import threading

    names = {t.native_id: t.name for t in threading.enumerate()}
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        name = names.get(int(tid), "")
        kind = next((k for p, k in THREAD_KINDS if p in name), "other")
        out[kind] = out.get(kind, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return out


def _bytes_sent(dask_worker) -> int:
    """Bytes this worker has sent to other workers so far."""
    return dask_worker.transfer_outgoing_bytes_total


def _concurrency(records: list, start: float, stop: float, workers: int) -> dict:
    """Seconds of ``[start, stop]`` with each number of tasks computing.

    From a task stream's records; also the tasks' summed wall time (their
    compute spans), which exceeds their CPU time when other threads (event
    loops, I/O, the scheduler) take turns with them on the cores.
    """
    events = []
    for record in records:
        for span in record["startstops"]:
            if span["action"] == "compute":
                events += [(max(span["start"], start), 1), (span["stop"], -1)]
    events.sort()
    seconds = [0.0] * (workers + 1)
    running, last = 0, start
    for when, change in events:
        seconds[min(running, workers)] += max(when - last, 0.0)
        running, last = running + change, max(when, last)
    seconds[0] += max(stop - last, 0.0)
    spans = sum(
        span["stop"] - span["start"]
        for record in records
        for span in record["startstops"]
        if span["action"] == "compute"
    )
    return {"seconds_with_n_tasks": seconds, "task_wall_s": spans}


def _warm_runs(scene: str, out: str, chunks: int, workers: int, repeat: int) -> dict:
    """Best wall and pipeline seconds of runs on one warmed-up cluster.

    Also the CPU seconds per run of the workers' threads by kind, and of
    this process (client and scheduler), and the bytes the workers sent
    each other, averaged over the timed runs.
    """
    import time

    from tilesky._dispatch import run_to_store
    from tilesky.cluster import execution
    from tilesky.config import load_config

    def once() -> tuple[float, float]:
        start = time.perf_counter()
        run_to_store(
            scene, out, config=load_config(None), chunks=chunks, overwrite=True
        )
        wall = time.perf_counter() - start
        return wall, zarr.open_group(out, mode="r").attrs["timings"]["total"]

    def cpu_now(client) -> dict[str, float]:
        total: dict[str, float] = {}
        for kinds in client.run(_thread_cpu).values():
            for kind, seconds in kinds.items():
                total[kind] = total.get(kind, 0.0) + seconds
        times = os.times()
        total["tilesky process"] = times.user + times.system
        return total

    with execution(
        n_workers=workers, threads_per_worker=1, announce=lambda _: None
    ) as ctx:
        once()
        before = cpu_now(ctx.client)
        sent = sum(ctx.client.run(_bytes_sent).values())
        wall, pipeline = min(once() for _ in range(repeat))
        sent = sum(ctx.client.run(_bytes_sent).values()) - sent
        after = cpu_now(ctx.client)
        # One more run with the task stream recorded (not timed above).
        from distributed import get_task_stream

        with get_task_stream(ctx.client) as stream:
            start = time.time()
            once()
            stop = time.time()
        timeline = _concurrency(stream.data, start, stop, workers)
    cpu = {k: round((after[k] - before.get(k, 0.0)) / repeat, 2) for k in after}
    return {
        "wall_s": wall,
        "pipeline_s": pipeline,
        "cpu_per_run_s": cpu,
        "mb_between_workers_per_run": round(sent / repeat / 1e6, 1),
        "recorded_run": {"wall_s": stop - start, **timeline},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=6000)
    parser.add_argument("--chunks", type=int, default=1020)
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    load_start = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        scene = f"{tmp}/scene.zarr"
        run_cli(
            [
                "simulate",
                scene,
                "--shape",
                str(args.size),
                str(args.size),
                "--chunks",
                str(args.chunks),
            ]
        )
        common = ["--overwrite", "--no-report", "--chunks", str(args.chunks)]
        run_cli(["run", scene, f"{tmp}/warm.zarr", *common])
        results = {}
        for label, extra in CONFIGS.items():
            best = None
            for _ in range(args.repeat):
                out = f"{tmp}/out.zarr"
                cpu: dict = {}
                wall, _, _ = run_cli(["run", scene, out, *common, *extra], cpu=cpu)
                pipeline = zarr.open_group(out, mode="r").attrs["timings"]["total"]
                if best is None or wall < best["wall_s"]:
                    best = {
                        "wall_s": wall,
                        "pipeline_s": pipeline,
                        "cpu_tilesky_s": cpu["tilesky"],
                        "cpu_workers_s": cpu["workers"],
                    }
            results[label] = best
        warm = {
            n: _warm_runs(scene, f"{tmp}/warm{n}.zarr", args.chunks, n, args.repeat)
            for n in (1, 2)
        }
    one, two = results["1 worker process"], results["2 worker processes"]
    speedup = one["wall_s"] / two["wall_s"]
    speedup_pipeline = one["pipeline_s"] / two["pipeline_s"]
    print(f"mosaic {args.size}x{args.size}, chunks {args.chunks}")
    cores = os.cpu_count() or 1
    print(
        f"{'cluster':<34}{'wall s':>9}{'Mpix/s':>9}{'pipeline s':>12}"
        f"{'CPU tilesky':>13}{'CPU workers':>13}{'busy':>7}"
    )
    for label, r in results.items():
        rate = args.size**2 / r["wall_s"] / 1e6
        busy = (r["cpu_tilesky_s"] + r["cpu_workers_s"]) / (r["wall_s"] * cores)
        print(
            f"{label:<34}{r['wall_s']:>9.1f}{rate:>9.2f}{r['pipeline_s']:>12.1f}"
            f"{r['cpu_tilesky_s']:>13.1f}{r['cpu_workers_s']:>13.1f}{busy:>7.0%}"
        )
    print(
        "CPU tilesky: the tilesky process (client, scheduler, in-process "
        f"worker); busy: all CPU over wall x {cores} cores"
    )
    print(
        f"speed-up 2 vs 1 worker process: {speedup:.2f}x end to end, "
        f"{speedup_pipeline:.2f}x pipeline"
    )
    warm_speedup = warm[1]["wall_s"] / warm[2]["wall_s"]
    print("on a cluster already started and warmed up by one run (in this process):")
    for n, r in warm.items():
        print(
            f"  {n} worker process{'es' if n > 1 else '':<3} run {r['wall_s']:.1f} s, "
            f"pipeline {r['pipeline_s']:.1f} s"
        )
    kinds = [k for _, k in THREAD_KINDS] + ["other", "tilesky process"]
    kinds = list(dict.fromkeys(kinds))
    print("  CPU s per run on warm workers (worker threads by kind, summed):")
    print(f"  {'':<20}" + "".join(f"{f'{n} worker(s)':>14}" for n in warm))
    for kind in kinds:
        cells = (r["cpu_per_run_s"].get(kind, 0.0) for r in warm.values())
        print(f"  {kind:<20}" + "".join(f"{c:>14.1f}" for c in cells))
    print(
        "  MB sent between the 2 workers per run: "
        f"{warm[2]['mb_between_workers_per_run']:.0f}"
    )
    print("  one more run each, task stream recorded:")
    for n, r in warm.items():
        rec = r["recorded_run"]
        busy = ", ".join(
            f"{k} computing {v:.1f} s"
            for k, v in enumerate(rec["seconds_with_n_tasks"])
        )
        print(
            f"  {n} worker(s): wall {rec['wall_s']:.1f} s; tasks' summed wall "
            f"{rec['task_wall_s']:.1f} s (their CPU above: "
            f"{r['cpu_per_run_s'].get('task threads', 0.0):.1f} s); {busy}"
        )
    print(f"speed-up 2 vs 1 worker process, warm workers: {warm_speedup:.2f}x")
    load_end = os.getloadavg()
    print(f"load average at start {load_start}, at end {load_end}")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "bench_scaling.json").write_text(
        json.dumps(
            {
                "size": args.size,
                "chunks": args.chunks,
                "results": results,
                "speedup": speedup,
                "speedup_pipeline": speedup_pipeline,
                "warm_workers": {str(n): r for n, r in warm.items()},
                "speedup_warm_workers": warm_speedup,
                "loadavg_start": load_start,
                "loadavg_end": load_end,
                "cpu_count": os.cpu_count(),
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()

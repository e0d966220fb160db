"""What 2 worker processes can gain over 1 on this machine, task size by size.

    python benchmarks/bench_ceiling.py [--cpu 20] [--tiles 36] [--repeat 2]

An ideal workload, not tilesky: ``--tiles`` independent chains of tasks
that only compute (each fills a float32 array and sorts slices of it with
numpy, which releases the GIL as tilesky's kernels do), read and write
nothing, have no global step, and send no array between workers (a task
passes one float to the next task of its chain). Two kinds of work: arrays
of 64 Ki values, small enough for a core's own cache, and tile-sized arrays
(1020 x 1020 values, 4 MiB), which the two cores stream through their
shared cache and memory as tilesky's kernels do. About ``--cpu`` seconds
of work are cut into 100 to 5 tasks per chain and run on a local cluster
of 1 and of 2 worker processes, one thread each, started the way
``tilesky run --workers N`` starts its cluster (dashboard included); best
of ``--repeat`` runs on one cluster, start-up not timed. ``CPU ms/task``
is measured: the single worker process's CPU time over its tasks.

The speed-up of such a graph is about the most a pipeline whose tasks are
that size can get from the second worker here: the scheduler and the
client share the two cores with the two workers, and each task costs them
CPU. Compare with ``bench_scaling.py``: tilesky's 6000x6000 run is about
2400 tasks for 26 CPU seconds of its worker process, 11 ms a task. Writes
benchmarks/results/bench_ceiling.json.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

from _common import cpu_seconds, one_thread, runs, write_record

RESULTS = Path(__file__).parent / "results"

#: Tasks per chain: from above tilesky's count on the 6000x6000 benchmark
#: (about 67 per tile) down to a few per tile.
PER_CHAIN = (100, 50, 25, 10, 5)

#: Values a task works on (float32): in a core's cache, or a tile.
KINDS = {"in cache (64 Ki values)": 65536, "tile-sized (1020 x 1020)": 1020 * 1020}

#: Values sorted per unit of work: successive units sort successive slices,
#: so a tile-sized task sweeps its whole array every few units.
UNIT_VALUES = 65536


def _work(previous: float | None, seed: int, units: int, size: int) -> float:
    import numpy as np

    # Cheap to make (a random generator would cost more than a unit), and
    # unordered enough that sorting it is real work.
    values = np.arange(size, dtype=np.float32)
    values *= np.float32(0.618034)
    values += np.float32(seed % 97)
    values -= np.floor(values)
    total = 0.0 if previous is None else previous
    for unit in range(units):
        start = unit * UNIT_VALUES % size
        total += float(np.sort(values[start : start + UNIT_VALUES])[0])
    return total


def _median_seconds(size: int, units: int) -> float:
    _work(None, 0, units, size)
    seconds, _ = runs(11, _work, None, 1, units, size)
    return statistics.median(seconds)


def _calibrate(size: int) -> tuple[float, float]:
    """Seconds to fill one array, and of one unit of sorting (in this process)."""
    units = 4 * size // UNIT_VALUES
    fill = _median_seconds(size, 0)
    return fill, max(_median_seconds(size, units) - fill, 1e-6) / units


def _graph(tiles: int, per_chain: int, units: int, size: int) -> tuple[dict, list]:
    graph: dict = {}
    for chain in range(tiles):
        previous = None
        for step in range(per_chain):
            key = f"ideal-{chain}-{step}"
            graph[key] = (_work, previous, chain * 1000 + step, units, size)
            previous = key
    return graph, [f"ideal-{chain}-{per_chain - 1}" for chain in range(tiles)]


def _run(workers: int, graph: dict, keys: list, repeat: int) -> dict:
    """Best wall time, with the CPU of the workers and of this process."""
    import psutil

    from tilesky.cluster import execution

    with execution(None, n_workers=workers, announce=lambda msg: None) as ctx:
        # Workers import numpy before the clock starts.
        ctx.client.run(lambda: __import__("numpy"))
        pids = ctx.client.run(os.getpid).values()
        worker_processes = [psutil.Process(pid) for pid in pids]
        here = psutil.Process()
        best: dict = {"wall_s": float("inf")}
        for _ in range(repeat):
            cpu0 = [cpu_seconds(p) for p in worker_processes]
            here0 = cpu_seconds(here)
            start = time.perf_counter()
            ctx.client.get(graph, keys)
            wall = time.perf_counter() - start
            if wall < best["wall_s"]:
                best = {
                    "wall_s": wall,
                    "cpu_workers_s": sum(
                        cpu_seconds(p) - c
                        for p, c in zip(worker_processes, cpu0, strict=True)
                    ),
                    "cpu_here_s": cpu_seconds(here) - here0,
                }
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cpu", type=float, default=20.0, help="CPU s per run")
    parser.add_argument("--tiles", type=int, default=36, help="independent chains")
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    one_thread()
    record: dict = {"cpu_s": args.cpu, "tiles": args.tiles, "kinds": {}}
    for kind, size in KINDS.items():
        fill, unit = _calibrate(size)
        print(
            f"work {kind}: fill {fill * 1e3:.2f} ms a task, one unit of sorting "
            f"{unit * 1e3:.3f} ms; about {args.cpu:g} CPU s a run"
        )
        print(
            f"{'tasks':>7}{'CPU ms/task':>13}{'1 worker s':>12}{'2 workers s':>13}"
            f"{'speed-up':>10}{'CPU here (2 w)':>16}"
        )
        rows = []
        for per_chain in PER_CHAIN:
            tasks = args.tiles * per_chain
            units = max(1, round((args.cpu / tasks - fill) / unit))
            graph, keys = _graph(args.tiles, per_chain, units, size)
            one = _run(1, graph, keys, args.repeat)
            two = _run(2, graph, keys, args.repeat)
            row = {
                "tasks": tasks,
                "units_per_task": units,
                "cpu_ms_per_task": one["cpu_workers_s"] / tasks * 1e3,
                "one_worker": one,
                "two_workers": two,
                "speedup": one["wall_s"] / two["wall_s"],
            }
            rows.append(row)
            print(
                f"{tasks:>7}{row['cpu_ms_per_task']:>13.1f}{one['wall_s']:>12.1f}"
                f"{two['wall_s']:>13.1f}{row['speedup']:>9.2f}x"
                f"{two['cpu_here_s']:>16.1f}"
            )
        record["kinds"][kind] = {"fill_s": fill, "unit_s": unit, "rows": rows}
    write_record(RESULTS / "bench_ceiling.json", record)


if __name__ == "__main__":
    main()

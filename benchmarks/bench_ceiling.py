"""What 2 worker processes can gain over 1 on this machine, task size by size.

    python benchmarks/bench_ceiling.py [--cpu 20] [--tiles 36] [--repeat 2]

An ideal workload, not tilesky: ``--tiles`` independent chains of tasks
that only compute (sorting float32 arrays with numpy, which releases the
GIL as tilesky's kernels do), pass a float from task to task, read and
write nothing, and send no data between workers. Two kinds of work: arrays
of 64 Ki values, which stay in a core's own cache, and tile-sized arrays
(1020 x 1020 values, 4 MiB), which the two cores stream through their
shared cache and memory as tilesky's kernels do; each tile-sized task also
fills its array first, about 3.6 ms here that the ``ms/task`` column, the
sorting alone, does not count. The same total CPU
(``--cpu`` seconds) is cut into 100 to 5 tasks per chain and run on a local
cluster of 1 and of 2 worker processes, one thread each, set up the way
``tilesky run --workers N`` sets up its cluster, best of ``--repeat`` runs
on one cluster. Cluster start-up is not timed.

The speed-up of such a graph is the most any pipeline with that many
tasks for that much work can get from the second worker here: the
scheduler and the client share the two cores with the two workers, and
each task costs them a fixed amount of CPU. ``bench_scaling.py`` prints
the task count and CPU of a real tilesky run to compare with. Writes
benchmarks/results/bench_ceiling.json.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from _common import one_thread, write_record

RESULTS = Path(__file__).parent / "results"

#: Tasks per chain: from tilesky's count on the 6000x6000 benchmark (about
#: 100 per tile) down to a few per tile.
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


def _unit_seconds(size: int) -> float:
    """Seconds of one unit of work in this process (median of 11)."""
    units = 4 * size // UNIT_VALUES
    _work(None, 0, units, size)
    times = []
    for i in range(11):
        start = time.perf_counter()
        _work(None, i, units, size)
        times.append((time.perf_counter() - start) / units)
    return sorted(times)[len(times) // 2]


def _graph(tiles: int, per_chain: int, units: int, size: int) -> tuple[dict, list]:
    graph: dict = {}
    for chain in range(tiles):
        previous = None
        for step in range(per_chain):
            key = f"ideal-{chain}-{step}"
            graph[key] = (_work, previous, chain * 1000 + step, units, size)
            previous = key
    return graph, [f"ideal-{chain}-{per_chain - 1}" for chain in range(tiles)]


def _seconds(workers: int, graph: dict, keys: list, repeat: int) -> float:
    from tilesky.cluster import execution

    with execution(
        None, n_workers=workers, dashboard=False, announce=lambda msg: None
    ) as ctx:
        # Workers import numpy before the clock starts.
        ctx.client.run(lambda: __import__("numpy"))
        best = float("inf")
        for _ in range(repeat):
            start = time.perf_counter()
            ctx.client.get(graph, keys)
            best = min(best, time.perf_counter() - start)
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
        unit = _unit_seconds(size)
        print(f"work {kind}: one unit {unit * 1e3:.2f} ms; {args.cpu:g} CPU s a run")
        print(
            f"{'tasks':>7}{'ms/task':>9}{'1 worker s':>12}{'2 workers s':>13}"
            f"{'speed-up':>10}"
        )
        rows = []
        for per_chain in PER_CHAIN:
            tasks = args.tiles * per_chain
            units = max(1, round(args.cpu / unit / tasks))
            graph, keys = _graph(args.tiles, per_chain, units, size)
            one = _seconds(1, graph, keys, args.repeat)
            two = _seconds(2, graph, keys, args.repeat)
            row = {
                "tasks": tasks,
                "ms_per_task": units * unit * 1e3,
                "one_worker_s": one,
                "two_workers_s": two,
                "speedup": one / two,
            }
            rows.append(row)
            print(
                f"{tasks:>7}{row['ms_per_task']:>9.1f}{one:>12.1f}{two:>13.1f}"
                f"{row['speedup']:>9.2f}x"
            )
        record["kinds"][kind] = {"unit_s": unit, "rows": rows}
    write_record(RESULTS / "bench_ceiling.json", record)


if __name__ == "__main__":
    main()

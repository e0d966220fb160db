"""Write a large simulated mosaic to Zarr and measure wall time and peak memory.

Usage::

    python benchmarks/bench_simulate.py --size 20000 --chunks 2000
    python benchmarks/bench_simulate.py --size 4000 --scheduler distributed

Peak memory is the largest sum of the resident set sizes of this process and
all its children (the distributed workers), sampled every 50 ms. The run fails
(exit 1) when it exceeds ``--limit-gib`` (2 GiB by default). CPU seconds and the
load average are recorded too: on a shared machine wall time alone overstates
the cost.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import dask
import psutil
from _common import PeakSampler

from tilesky import __version__
from tilesky.simulate import GENERATOR_VERSION, write_simulation

GIB = 1024**3


class PeakMemory(PeakSampler):
    """Sample the summed RSS of this process tree in a background thread."""

    def __init__(self, interval: float = 0.05) -> None:
        super().__init__(interval)

    def sample(self) -> int:
        root = psutil.Process(os.getpid())
        total = 0
        for proc in [root, *root.children(recursive=True)]:
            try:
                total += proc.memory_info().rss
            except psutil.Error:
                pass  # a child that exits between listing and sampling
        return total


def _cpu_seconds() -> float:
    # Children count once they have exited and been reaped (distributed workers).
    t = psutil.Process(os.getpid()).cpu_times()
    return t.user + t.system + t.children_user + t.children_system


def _store_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=20000, help="image side (px)")
    parser.add_argument("--chunks", type=int, default=2000, help="chunk side (px)")
    parser.add_argument("--seed", type=int, default=4)
    parser.add_argument(
        "--scheduler", choices=["threads", "distributed"], default="threads"
    )
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--limit-gib", type=float, default=2.0)
    parser.add_argument(
        "--json",
        type=Path,
        default=Path(__file__).parent / "results" / "bench_simulate.json",
    )
    args = parser.parse_args(argv)

    shape = (args.size, args.size)
    load_start = os.getloadavg()[0]
    cpu_start = _cpu_seconds()
    with tempfile.TemporaryDirectory(prefix="bench_simulate_") as tmp:
        out = Path(tmp) / "mosaic.zarr"
        with PeakMemory() as mem:
            baseline = mem.peak
            client = cluster = None
            if args.scheduler == "distributed":
                from distributed import Client, LocalCluster

                cluster = LocalCluster(
                    n_workers=args.workers,
                    threads_per_worker=1,
                    processes=True,
                    dashboard_address=None,
                )
                client = Client(cluster)
            config = (
                {"scheduler": "threads", "num_workers": args.workers}
                if client is None
                else {}
            )
            start = time.perf_counter()
            with dask.config.set(config):
                ds = write_simulation(
                    out, shape=shape, seed=args.seed, chunks=args.chunks
                )
            wall = time.perf_counter() - start
            if client is not None:
                client.close()
                cluster.close()
        store = _store_bytes(out)
    cpu = _cpu_seconds() - cpu_start

    result = {
        "benchmark": "bench_simulate",
        "size": args.size,
        "chunks": args.chunks,
        "scheduler": args.scheduler,
        "workers": args.workers,
        "seed": args.seed,
        "n_sources": int(ds.sizes["source"]),
        "n_blemishes": int(ds.sizes["blemish"]),
        "wall_s": round(wall, 2),
        "mpix_per_s": round(args.size**2 / wall / 1e6, 2),
        "cpu_s": round(cpu, 1),
        "load_average_start": round(load_start, 2),
        "load_average_end": round(os.getloadavg()[0], 2),
        "peak_rss_gib": round(mem.peak / GIB, 3),
        "baseline_rss_gib": round(baseline / GIB, 3),
        "limit_gib": args.limit_gib,
        "store_gib": round(store / GIB, 3),
        "tilesky_version": __version__,
        "generator_version": GENERATOR_VERSION,
        "dask_version": dask.__version__,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"{args.size}x{args.size} (chunks {args.chunks}, {args.scheduler} x"
        f"{args.workers}): wall {wall:.1f} s, cpu {cpu:.0f} s, "
        f"{result['mpix_per_s']} Mpix/s, load {load_start:.1f}, "
        f"peak RSS {result['peak_rss_gib']:.2f} GiB (limit {args.limit_gib}), "
        f"store {result['store_gib']:.2f} GiB -> {args.json}"
    )
    if mem.peak > args.limit_gib * GIB:
        print(f"peak memory exceeds {args.limit_gib} GiB", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

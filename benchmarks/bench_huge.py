"""End to end at survey size: simulate, run and report, 2000^2 up to 50000^2.

    python benchmarks/bench_huge.py [--sizes 2000 8192 50000] [--work DIR]

For each size: ``write_simulation`` in a child process (a 2-thread dask
scheduler, Zarr chunks of ``--chunks``), then ``tilesky run SIM OUT
--progress`` (the default configuration and local cluster, with its
report) as a child process. Each step records its wall time, the peak
summed RSS of its whole process tree (sampled every 0.1 s), the bytes on
disk at the end and at most during the step (sampled every 2 s), and, for
the run, the longest time stderr stayed silent (progress visible the whole
time means that gap is short) and its pixels per second. Blemishes are
drawn with a 300 px exact radius and a 200 px taper: with the default
(2900 + 500 px, untapered on a 2000^2 image) a 50000^2 mosaic would add
~150 sinc terms per pixel and the simulation, not the run, would be what
is measured. Writes benchmarks/results/bench_huge.json; the stores are
deleted after each size unless ``--keep``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from _common import TILESKY, PeakMemory, PeakSampler, write_record

GIB = 1024**3
RESULTS = Path(__file__).parent / "results"


class DiskUse(PeakSampler):
    """Sample the bytes under some directories until stopped."""

    def __init__(self, paths: list[Path], interval: float = 2.0) -> None:
        super().__init__(interval)
        self.paths = paths

    def sample(self) -> int:
        total = 0
        for root in self.paths:
            for dirpath, _dirs, files in os.walk(root):
                for name in files:
                    try:
                        total += os.stat(os.path.join(dirpath, name)).st_size
                    except OSError:
                        pass  # written and removed between listing and stat
        return total


def _step(cmd: list[str], disk: list[Path]) -> dict:
    """Run ``cmd``; its wall time, peak memory and disk, and stderr's longest
    silence."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    last = start
    gap = 0.0
    tail = b""
    with PeakMemory(proc.pid) as memory, DiskUse(disk) as used:
        # Progress bars rewrite one line with \r: any bytes count as output.
        while chunk := proc.stderr.read1(4096):
            now = time.perf_counter()
            gap = max(gap, now - last)
            last = now
            tail = (tail + chunk)[-4000:]
        proc.wait()
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        text = tail.decode(errors="replace")
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{text}")
    return {
        "wall_s": round(wall, 1),
        "peak_rss_gib": round(memory.peak / GIB, 3),
        "cpu_s": round(memory.cpu_root + memory.cpu_children, 1),
        "peak_disk_gib": round(used.peak / GIB, 2),
        "longest_silence_s": round(max(gap, time.perf_counter() - last), 1),
        "stderr_tail": tail.decode(errors="replace").replace("\r", "\n")[-600:],
    }


def _simulate_cmd(out: Path, size: int, chunks: int, seed: int) -> list[str]:
    code = (
        "import dask\n"
        "from tilesky.simulate import write_simulation\n"
        "with dask.config.set(scheduler='threads', num_workers=2):\n"
        f"    write_simulation({str(out)!r}, shape=({size}, {size}), seed={seed},"
        f" chunks={chunks}, blemish_radius=300.0, blemish_taper=200.0)\n"
    )
    return [sys.executable, "-c", code]


def bench_size(size: int, work: Path, chunks: int, seed: int, keep: bool) -> dict:
    sim = work / f"sim_{size}.zarr"
    out = work / f"run_{size}.zarr"
    report = work / f"run_{size}_report"
    for path in (sim, out, report):
        shutil.rmtree(path, ignore_errors=True)
    simulate = _step(_simulate_cmd(sim, size, chunks, seed), [sim])
    print(
        f"  simulate {size}^2: {simulate['wall_s']} s, peak RSS "
        f"{simulate['peak_rss_gib']} GiB, {simulate['peak_disk_gib']} GiB on disk",
        flush=True,
    )
    cmd = [TILESKY, "run", str(sim), str(out), "--progress", "--report", str(report)]
    run = _step(cmd, [out, report])
    mpx = size * size / 1e6
    run["mpx_per_s"] = round(mpx / run["wall_s"], 2)
    print(
        f"  run {size}^2: {run['wall_s']} s ({run['mpx_per_s']} Mpx/s), peak RSS "
        f"{run['peak_rss_gib']} GiB, peak disk {run['peak_disk_gib']} GiB, "
        f"longest stderr silence {run['longest_silence_s']} s",
        flush=True,
    )
    if not keep:
        for path in (sim, out, report):
            shutil.rmtree(path, ignore_errors=True)
    return {"size": size, "mpx": mpx, "simulate": simulate, "run": run}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000, 8192, 50000])
    parser.add_argument("--chunks", type=int, default=2000, help="Zarr chunk side")
    parser.add_argument("--seed", type=int, default=4)
    parser.add_argument("--work", type=Path, default=Path("/tmp/tilesky_bench_huge"))
    parser.add_argument("--keep", action="store_true", help="keep the stores")
    parser.add_argument("--json", type=Path, default=RESULTS / "bench_huge.json")
    args = parser.parse_args(argv)

    args.work.mkdir(parents=True, exist_ok=True)
    rows = []
    for size in args.sizes:
        print(f"{size}x{size}:", flush=True)
        rows.append(bench_size(size, args.work, args.chunks, args.seed, args.keep))
        # Written after each size: a long run that is stopped keeps the others.
        write_record(args.json, {"benchmark": "bench_huge", "sizes": rows})
    print()
    print(
        "| size | simulate s | run s | Mpx/s | run peak RSS GiB | peak disk GiB "
        "| longest silence s |"
    )
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        run = row["run"]
        print(
            f"| {row['size']}^2 | {row['simulate']['wall_s']} | {run['wall_s']} | "
            f"{run['mpx_per_s']} | {run['peak_rss_gib']} | {run['peak_disk_gib']} | "
            f"{run['longest_silence_s']} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

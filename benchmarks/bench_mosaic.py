"""A large simulated mosaic end to end, Zarr to Zarr: time, rate, peak memory.

    python benchmarks/bench_mosaic.py [--size 16384] [--small 2000]

Simulates the mosaic to Zarr, then runs ``tilesky run`` on a local cluster
(2 workers) while sampling the summed RSS of the tilesky process and all its
children (scheduler, nannies, workers). Runs the same on a --small mosaic
for the pixels-per-second comparison (linear cost means equal rates).
Writes benchmarks/results/bench_mosaic.json.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from _common import run_cli

RESULTS = Path(__file__).parent / "results"
GIB = 1024**3


def _one(size: int, chunks: int, tmp: str) -> dict:
    scene = f"{tmp}/scene{size}.zarr"
    sim_wall, _, _ = run_cli(
        ["simulate", scene, "--shape", str(size), str(size), "--chunks", str(chunks)]
    )
    wall, peak, _ = run_cli(
        [
            "run",
            scene,
            f"{tmp}/out{size}.zarr",
            "--overwrite",
            "--no-report",
            "--chunks",
            str(chunks),
        ],
        memory=True,
    )
    return {
        "size": size,
        "simulate_s": round(sim_wall, 1),
        "run_s": round(wall, 1),
        "mpix_per_s": round(size * size / wall / 1e6, 3),
        "peak_gib": round(peak / GIB, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=16384)
    parser.add_argument("--small", type=int, default=2000)
    parser.add_argument("--chunks", type=int, default=2040)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(dir=".") as tmp:
        for size in (args.small, args.size):
            rows.append(_one(size, args.chunks, tmp))
            r = rows[-1]
            print(
                f"{r['size']}x{r['size']}: run {r['run_s']} s, "
                f"{r['mpix_per_s']} Mpix/s, peak {r['peak_gib']} GiB",
                flush=True,
            )
    small, big = rows
    print(f"\n{'size':>8}{'run s':>9}{'Mpix/s':>9}{'peak GiB':>10}")
    for r in rows:
        print(
            f"{r['size']:>8}{r['run_s']:>9.1f}{r['mpix_per_s']:>9.3f}"
            f"{r['peak_gib']:>10.2f}"
        )
    rate = big["mpix_per_s"] / small["mpix_per_s"]
    print(f"rate {big['size']} / rate {small['size']}: {rate:.2f}")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "bench_mosaic.json").write_text(
        json.dumps({"rows": rows, "rate_ratio": rate}, indent=1)
    )


if __name__ == "__main__":
    main()

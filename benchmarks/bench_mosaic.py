"""A large simulated mosaic end to end, Zarr to Zarr: time, rate, peak memory.

    python benchmarks/bench_mosaic.py [--size 16384] [--small 2000]
        [--middle 4096 8192] [--chunks N]

Simulates the mosaic to Zarr, then runs ``tilesky run --no-report`` on the
default local cluster while sampling the summed RSS of the tilesky process
and all its children. Runs the same on a --small mosaic for the
pixels-per-second comparison (linear cost means equal rates). Both runs use
the same chunking (tilesky's default unless --chunks). Rates are given end
to end (interpreter and cluster start included, a fixed cost that weighs on
the small run) and for the pipeline alone (the store's ``timings.total``).
The --middle sizes give marginal rates, added pixels over added seconds
between consecutive sizes: with a linear cost ``a + b * pixels`` they are
all ``1 / b`` whatever the fixed cost ``a``, which a least-squares fit of
the end-to-end times also gives.
An untimed run first fills the numba cache. Writes
benchmarks/results/bench_mosaic.json.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import tempfile
from pathlib import Path

import numpy as np
import zarr
from _common import run_cli

RESULTS = Path(__file__).parent / "results"
GIB = 1024**3


def _one(size: int, chunks: list[str], tmp: str) -> dict:
    scene = f"{tmp}/scene{size}.zarr"
    sim_wall, _, _ = run_cli(["simulate", scene, "--shape", str(size), str(size)])
    out = f"{tmp}/out{size}.zarr"
    wall, peak, _ = run_cli(
        ["run", scene, out, "--overwrite", "--no-report", *chunks], memory=True
    )
    pipeline = zarr.open_group(out, mode="r").attrs["timings"]["total"]
    return {
        "size": size,
        "simulate_s": round(sim_wall, 1),
        "run_s": round(wall, 2),
        "pipeline_s": round(pipeline, 2),
        "mpix_per_s": round(size * size / wall / 1e6, 3),
        "pipeline_mpix_per_s": round(size * size / pipeline / 1e6, 3),
        "peak_gib": round(peak / GIB, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=16384)
    parser.add_argument("--small", type=int, default=2000)
    parser.add_argument("--middle", type=int, nargs="*", default=[4096, 8192])
    parser.add_argument("--chunks", type=int, default=None)
    args = parser.parse_args()
    chunks = ["--chunks", str(args.chunks)] if args.chunks else []
    load_start = os.getloadavg()
    rows = []
    with tempfile.TemporaryDirectory(dir=".") as tmp:
        warm = f"{tmp}/warm.zarr"
        run_cli(["simulate", warm, "--shape", "600", "600"])
        run_cli(["run", warm, f"{tmp}/warm_out.zarr", "--no-report"])
        for size in (args.small, *args.middle, args.size):
            rows.append(_one(size, chunks, tmp))
            r = rows[-1]
            print(
                f"{r['size']}x{r['size']}: run {r['run_s']} s "
                f"(pipeline {r['pipeline_s']} s), {r['mpix_per_s']} Mpix/s, "
                f"peak {r['peak_gib']} GiB",
                flush=True,
            )
    small, big = rows[0], rows[-1]
    print(
        f"\n{'size':>8}{'run s':>9}{'Mpix/s':>9}{'pipeline s':>12}"
        f"{'Mpix/s':>9}{'peak GiB':>10}"
    )
    for r in rows:
        print(
            f"{r['size']:>8}{r['run_s']:>9.1f}{r['mpix_per_s']:>9.3f}"
            f"{r['pipeline_s']:>12.1f}{r['pipeline_mpix_per_s']:>9.3f}"
            f"{r['peak_gib']:>10.2f}"
        )
    rate = big["mpix_per_s"] / small["mpix_per_s"]
    rate_pipeline = big["pipeline_mpix_per_s"] / small["pipeline_mpix_per_s"]
    print(
        f"rate {big['size']} / rate {small['size']}: {rate:.2f} end to end, "
        f"{rate_pipeline:.2f} pipeline"
    )
    marginal = []
    for lo, hi in itertools.pairwise(rows):
        added = (hi["size"] ** 2 - lo["size"] ** 2) / 1e6
        seconds = hi["run_s"] - lo["run_s"]
        marginal.append(
            {
                "from": lo["size"],
                "to": hi["size"],
                "mpix_per_s": round(added / seconds, 3),
            }
        )
        print(
            f"marginal rate {lo['size']} -> {hi['size']}: "
            f"{marginal[-1]['mpix_per_s']:.3f} Mpix/s"
        )
    pixels = np.array([r["size"] ** 2 for r in rows], dtype=float) / 1e6
    seconds = np.array([r["run_s"] for r in rows])
    slope, fixed = np.polyfit(pixels, seconds, 1)
    worst = max(abs(seconds - (fixed + slope * pixels)) / seconds)
    print(
        f"fit run s = {fixed:.2f} + Mpix / {1 / slope:.3f}: fixed cost "
        f"{fixed:.2f} s, marginal {1 / slope:.3f} Mpix/s, worst residual "
        f"{100 * worst:.1f} % of a run"
    )
    load_end = os.getloadavg()
    print(f"load average at start {load_start}, at end {load_end}")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "bench_mosaic.json").write_text(
        json.dumps(
            {
                "rows": rows,
                "chunks": args.chunks or "default",
                "rate_ratio": rate,
                "rate_ratio_pipeline": rate_pipeline,
                "marginal": marginal,
                "fit": {
                    "fixed_s": round(float(fixed), 3),
                    "marginal_mpix_per_s": round(float(1 / slope), 3),
                    "worst_residual": round(float(worst), 4),
                },
                "loadavg_start": load_start,
                "loadavg_end": load_end,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()

"""Scaling: the same mosaic on 1 and 2 local worker processes.

    python benchmarks/bench_scaling.py [--size 6000]

Simulates a mosaic once, then times ``tilesky run`` end to end (cluster
start, all stages, metrics, store) with ``--workers 1`` and ``--workers 2``,
one thread each, and prints the ratio. Writes
benchmarks/results/bench_scaling.json.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

from _common import run_cli

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=6000)
    parser.add_argument("--chunks", type=int, default=1020)
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
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
                "--workers",
                "2",
            ]
        )
        times = {}
        for workers in (1, 2):
            best = None
            for _ in range(args.repeat):
                wall, _, _ = run_cli(
                    [
                        "run",
                        scene,
                        f"{tmp}/out{workers}.zarr",
                        "--overwrite",
                        "--no-report",
                        "--workers",
                        str(workers),
                        "--chunks",
                        str(args.chunks),
                    ]
                )
                best = wall if best is None else min(best, wall)
            times[workers] = best
    ratio = times[1] / times[2]
    print(f"mosaic {args.size}x{args.size}, chunks {args.chunks}")
    print(f"{'workers':>8}{'wall s':>10}{'Mpix/s':>10}")
    for w, t in times.items():
        print(f"{w:>8}{t:>10.1f}{args.size**2 / t / 1e6:>10.2f}")
    print(f"speed-up 2 vs 1 worker: {ratio:.2f}x")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "bench_scaling.json").write_text(
        json.dumps(
            {
                "size": args.size,
                "chunks": args.chunks,
                "seconds": times,
                "speedup": ratio,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()

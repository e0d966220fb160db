"""Exact moment states: the digit path versus the bit-pattern kernels, one core.

Usage::

    python benchmarks/bench_noise.py              # 1100 x 1100 and 2048 x 2048
    python benchmarks/bench_noise.py --size 500 --repeat 3

Each case is one sigma-clipping pass as the pipeline makes it: a residual
image (float32 noise, a few bright sources, 1 % NaN) with a random 15 % mask
and bounds at the mean +- 3 sigma, or with neither. ``reference`` is the former
``moment_state`` (a float64 copy and two ``frexp`` per value), kept with the
tests as ``moment_state_reference`` (``tests/_reference_kernels.py``);
``fast`` is ``moment_state``. ``identical``
compares the three Python integers of the states. Prints a table and writes
``benchmarks/results/bench_noise.json``. The first call of each path (numba
compile, or loading the on-disk cache) is made on a small block and kept out
of the timings.
"""

from _common import one_thread, runs, write_record

# One thread everywhere, before numpy/numba are imported.
one_thread()

import argparse  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from tilesky.kernels._noise import moment_state, moments  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "bench_noise.json"
REPO = Path(__file__).resolve().parent.parent
# The slow references live with the tests, which are not a package.
sys.path.insert(0, str(REPO / "tests"))
from _reference_kernels import moment_state_reference  # noqa: E402


def make_residual(size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A float32 residual image and a random 15 % source mask."""
    rng = np.random.default_rng(seed)
    image = rng.normal(0.0, 1.0, size=(size, size)).astype(np.float32)
    yy, xx = np.mgrid[0:size, 0:size]
    for _ in range(20):
        y0, x0 = rng.uniform(0, size, 2)
        r2 = (yy - y0) ** 2 + (xx - x0) ** 2
        image += (rng.uniform(20, 500) * np.exp(-r2 / 18.0)).astype(np.float32)
    image[rng.random(image.shape) < 0.01] = np.nan
    mask = rng.random(image.shape) < 0.15
    return image, mask


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--size",
        type=int,
        nargs="+",
        default=[1100, 2048],
        help="image sides (default 1100 2048)",
    )
    parser.add_argument(
        "--repeat", type=int, default=7, help="timed runs per path (default 7)"
    )
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if min(args.size) < 1 or args.repeat < 1:
        parser.error("--size and --repeat must be >= 1")

    # First calls: numba compile, or load from its on-disk cache.
    small, small_mask = make_residual(16)
    start = time.perf_counter()
    for dtype in (np.float32, np.float64):
        block = small.astype(dtype)
        for kw in ({}, {"lower": -3.0, "upper": 3.0, "mask": small_mask}):
            moment_state(block, **kw)
            moment_state_reference(block, **kw)
    first_call_s = time.perf_counter() - start

    rows = []
    for size in args.size:
        image, mask = make_residual(size)
        _, mean, std = moments(moment_state(image, mask=mask))
        bounds = {"lower": mean - 3 * std, "upper": mean + 3 * std, "mask": mask}
        # A tile read out of a larger array with its halo: strided rows.
        halo = np.pad(image, 16)[16:-16, 16:-16]
        cases = [
            ("float32", "bounds+mask", image, bounds),
            ("float32", "none", image, {}),
            ("float32", "strided, bounds+mask", halo, bounds),
            ("float64", "bounds+mask", image.astype(np.float64), bounds),
        ]
        for dtype, case, block, kw in cases:
            ref_s, expected = runs(args.repeat, moment_state_reference, block, **kw)
            fast_s, state = runs(args.repeat, moment_state, block, **kw)
            rows.append(
                {
                    "dtype": dtype,
                    "size": [size, size],
                    "case": case,
                    "count": state.count,
                    "reference_s": ref_s,
                    "fast_s": fast_s,
                    "reference_best_s": min(ref_s),
                    "fast_best_s": min(fast_s),
                    "ratio_best": min(ref_s) / min(fast_s),
                    "ratio_median": statistics.median(ref_s)
                    / statistics.median(fast_s),
                    "identical": state == expected,
                }
            )

    header = (
        f"{'dtype':<8} {'size':>11} {'case':<21} {'reference s':>11} "
        f"{'fast s':>8} {'ratio':>6} identical"
    )
    print(header)
    for r in rows:
        ny, nx = r["size"]
        print(
            f"{r['dtype']:<8} {f'{ny} x {nx}':>11} {r['case']:<21} "
            f"{r['reference_best_s']:>11.4f} {r['fast_best_s']:>8.4f} "
            f"{r['ratio_best']:>5.1f}x {r['identical']}"
        )
    print(
        f"best of {args.repeat} runs; first calls (16 x 16, compile or cache "
        f"load): {first_call_s:.2f} s, not in the timings"
    )

    identical = all(r["identical"] for r in rows)
    record = {
        "benchmark": "moment_state",
        "threads": 1,
        "repeat": args.repeat,
        "rows": rows,
        "identical": identical,
        "first_call_s": first_call_s,
    }
    write_record(args.output, record)
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())

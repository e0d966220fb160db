"""Smoothfit: per-pixel reference versus the coarse-grid kernel, one core.

Usage::

    python benchmarks/bench_smoothfit.py            # 2000 x 2000, scale 20, step 6
    python benchmarks/bench_smoothfit.py --size 500 --repeat 3

The image is float32 noise on a gradient with broad sinc blemishes and a
30 % random mask. Prints a table and writes
``benchmarks/results/bench_smoothfit.json``. The first call of each
implementation (numba compile, or loading the on-disk cache) is made on a
small image and kept out of the timings.
"""

from _common import one_thread, timed, write_record

# One thread everywhere, before numpy/numba are imported.
one_thread()

import argparse  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from tilesky.kernels._smoothfit import _row_moments, smoothfit  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "bench_smoothfit.json"
REPO = Path(__file__).resolve().parent.parent
# The slow references live with the tests, which are not a package.
sys.path.insert(0, str(REPO / "tests"))
from _reference_kernels import smoothfit_reference  # noqa: E402


def make_image(size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Noise, a gradient and sinc blemishes (float32), and a 30 % mask."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    image = rng.normal(0.0, 1.0, size=(size, size))
    image += 0.5 * (xx + yy) / size
    for _ in range(max(1, size**2 // 250_000)):
        y0, x0 = rng.uniform(0, size, 2)
        width = rng.uniform(30.0, 130.0)
        r = np.hypot(yy - y0, xx - x0)
        image += rng.uniform(0.0, 1.0) * np.sinc(r / (width * np.pi))
    mask = rng.random((size, size)) < 0.3
    return image.astype(np.float32), mask


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--size", type=int, default=2000, help="image side (default 2000)"
    )
    parser.add_argument("--scale", type=float, default=20.0)
    parser.add_argument("--truncate", type=float, default=4.0)
    parser.add_argument("--order", type=int, default=2)
    parser.add_argument("--step", type=int, default=6)
    parser.add_argument(
        "--repeat", type=int, default=5, help="smoothfit timed runs (default 5)"
    )
    parser.add_argument(
        "--ref-repeat", type=int, default=1, help="reference timed runs (default 1)"
    )
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.size < 1 or args.repeat < 1 or args.ref_repeat < 1:
        parser.error("--size, --repeat and --ref-repeat must be >= 1")

    fit = dict(scale=args.scale, order=args.order, truncate=args.truncate)
    image, mask = make_image(args.size)

    # First calls: numba compile, or load from its on-disk cache.
    small = (slice(0, 64), slice(0, 64))
    first_call_s, _ = timed(smoothfit, image[small], mask[small], **fit, step=args.step)
    from_cache = sum(_row_moments.stats.cache_hits.values()) > 0
    smoothfit_reference(image[small], mask[small], **fit)

    fast_s = []
    for _ in range(args.repeat):
        seconds, result = timed(smoothfit, image, mask, **fit, step=args.step)
        fast_s.append(seconds)
    ref_s = []
    for _ in range(args.ref_repeat):
        seconds, expected = timed(smoothfit_reference, image, mask, **fit)
        ref_s.append(seconds)

    same_nan = bool(np.array_equal(np.isnan(result), np.isnan(expected)))
    diff = np.abs(result.astype(np.float64) - expected)
    max_abs = float(np.nanmax(diff))
    rms = float(np.sqrt(np.nanmean(diff**2)))
    g = args.step
    at_grid = expected[::g, ::g].astype(np.float64)
    grid_rel = float(np.nanmax(np.abs(result[::g, ::g] - at_grid) / np.abs(at_grid)))
    best_ratio = min(ref_s) / min(fast_s)
    median_ratio = statistics.median(ref_s) / statistics.median(fast_s)

    print(
        f"{'size':>11} {'scale':>6} {'step':>4} {'reference s':>12} "
        f"{'smoothfit s':>12} {'speed-up':>9} {'max|diff|':>10} {'rms diff':>9} "
        f"{'grid rel':>9}"
    )
    print(
        f"{args.size:>5} x {args.size:<5} {args.scale:>6g} {args.step:>4} "
        f"{min(ref_s):>12.3f} {min(fast_s):>12.4f} {best_ratio:>8.1f}x "
        f"{max_abs:>10.2e} {rms:>9.2e} {grid_rel:>9.2e}"
    )
    print(
        f"smoothfit runs (s): {', '.join(f'{s:.4f}' for s in fast_s)}; "
        f"median speed-up {median_ratio:.1f}x; same NaN pixels: {same_nan}"
    )
    print(
        f"first call (64 x 64, {'cache load' if from_cache else 'compile'}): "
        f"{first_call_s:.2f} s, not in the timings"
    )

    record = {
        "benchmark": "smoothfit",
        "size": [args.size, args.size],
        "dtype": "float32",
        "masked_fraction": float(mask.mean()),
        **fit,
        "step": args.step,
        "threads": 1,
        "reference_s": ref_s,
        "smoothfit_s": fast_s,
        "reference_best_s": min(ref_s),
        "smoothfit_best_s": min(fast_s),
        "speedup_best": best_ratio,
        "speedup_median": median_ratio,
        "max_abs_diff": max_abs,
        "rms_diff": rms,
        "grid_max_rel_diff_float32": grid_rel,
        "same_nan": same_nan,
        "first_call_s": first_call_s,
        "first_call_from_cache": from_cache,
    }
    write_record(args.output, record)
    return 0 if same_nan else 1


if __name__ == "__main__":
    sys.exit(main())

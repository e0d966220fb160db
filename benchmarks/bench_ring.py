"""Ring median: scipy.ndimage.median_filter versus tilesky's kernel, one core.

Usage::

    python benchmarks/bench_ring.py            # 2000 x 2000, ring (15, 5)
    python benchmarks/bench_ring.py --size 500 --repeat 3

Prints a table and writes ``benchmarks/results/bench_ring.json``. The first
tilesky call (numba compile, or loading the on-disk cache) is timed on its own
and kept out of the comparison.
"""

from _common import blob_image, one_thread, timed, write_record

# One thread everywhere, before numpy/numba are imported.
one_thread()

import argparse  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from scipy import ndimage  # noqa: E402

from tilesky.kernels._ring import _ring_tile, ring_footprint, ring_median  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "bench_ring.json"


def make_image(size: int, seed: int = 0) -> np.ndarray:
    """Noise, a gentle gradient and a few bright Gaussian blobs (float32)."""
    return blob_image(size, seed=seed, n_blobs=12, sigma=(2.0, 8.0), flux=(20.0, 200.0))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--size", type=int, default=2000, help="image side (default 2000)"
    )
    parser.add_argument("--radius-in", type=int, default=15)
    parser.add_argument("--width", type=int, default=5)
    parser.add_argument(
        "--repeat", type=int, default=5, help="tilesky timed runs (default 5)"
    )
    parser.add_argument(
        "--scipy-repeat", type=int, default=1, help="scipy timed runs (default 1)"
    )
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.size < 1 or args.repeat < 1 or args.scipy_repeat < 1:
        parser.error("--size, --repeat and --scipy-repeat must be >= 1")

    ring = dict(radius_in=args.radius_in, width=args.width)
    footprint = ring_footprint(**ring)
    image = make_image(args.size)

    # First call: numba compile, or load from its on-disk cache.
    first_call_s, _ = timed(ring_median, image[:64, :64], **ring)
    from_cache = sum(_ring_tile.stats.cache_hits.values()) > 0

    tilesky_s = []
    for _ in range(args.repeat):
        seconds, result = timed(ring_median, image, **ring)
        tilesky_s.append(seconds)
    scipy_s = []
    for _ in range(args.scipy_repeat):
        seconds, expected = timed(
            ndimage.median_filter, image, footprint=footprint, mode="reflect"
        )
        scipy_s.append(seconds)

    identical = bool(
        result.dtype == expected.dtype
        and np.array_equal(result.view(np.uint32), expected.view(np.uint32))
    )
    best_ratio = min(scipy_s) / min(tilesky_s)
    median_ratio = statistics.median(scipy_s) / statistics.median(tilesky_s)

    header = (
        f"{'size':>11} {'ring':>7} {'scipy s':>9} {'tilesky s':>10} "
        f"{'ratio':>7} identical"
    )
    row = (
        f"{args.size:>5} x {args.size:<5} {f'{args.radius_in},{args.width}':>7} "
        f"{min(scipy_s):>9.3f} {min(tilesky_s):>10.4f} {best_ratio:>6.1f}x {identical}"
    )
    print(header)
    print(row)
    print(
        f"tilesky runs (s): {', '.join(f'{s:.4f}' for s in tilesky_s)}; "
        f"median ratio {median_ratio:.1f}x"
    )
    print(
        f"first call (64 x 64, {'cache load' if from_cache else 'compile'}): "
        f"{first_call_s:.2f} s, not in the timings"
    )

    record = {
        "benchmark": "ring_median",
        "size": [args.size, args.size],
        "dtype": "float32",
        "radius_in": args.radius_in,
        "width": args.width,
        "footprint_pixels": int(footprint.sum()),
        "threads": 1,
        "scipy_s": scipy_s,
        "tilesky_s": tilesky_s,
        "scipy_best_s": min(scipy_s),
        "tilesky_best_s": min(tilesky_s),
        "ratio_best": best_ratio,
        "ratio_median": median_ratio,
        "identical": identical,
        "first_call_s": first_call_s,
        "first_call_from_cache": from_cache,
    }
    write_record(args.output, record)
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())

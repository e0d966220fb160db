"""Source-mask kernels: tilesky's numba smooth/dilate_mask against their scipy
references, one core.

Usage::

    python benchmarks/bench_mask.py              # 1100 x 1100 (a tile plus halo)
    python benchmarks/bench_mask.py --size 2000 --repeat 3

For each case the table gives the best of N runs of the scipy reference
(``smooth_reference``, ``dilate_reference`` in ``tests/_reference_kernels.py``)
and of the fast kernel, their
ratio, and whether the outputs are identical bit for bit. Writes
``benchmarks/results/bench_mask.json``. The first numba calls (compile, or
loading the on-disk cache) are timed on their own and kept out of the
comparison.
"""

from _common import blob_image, one_thread, runs, write_record

# One thread everywhere, before numpy/numba are imported.
one_thread()

import argparse  # noqa: E402
import functools  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from tilesky.config import Config  # noqa: E402
from tilesky.kernels._mask import dilate_mask, smooth  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "bench_mask.json"
REPO = Path(__file__).resolve().parent.parent
# The slow references live with the tests, which are not a package.
sys.path.insert(0, str(REPO / "tests"))
from _reference_kernels import dilate_reference, smooth_reference  # noqa: E402

# The pipeline's smoothing radius, in sigmas.
TRUNCATE = {"truncate": Config().smooth_truncate}


def make_image(size: int, seed: int = 0) -> np.ndarray:
    """Noise, a gentle gradient and a few dozen Gaussian sources (float32)."""
    return blob_image(size, seed=seed, n_blobs=40, sigma=(1.5, 6.0), flux=(5.0, 100.0))


def identical(fast: np.ndarray, ref: np.ndarray) -> bool:
    if fast.dtype != ref.dtype or fast.shape != ref.shape:
        return False
    if fast.dtype == np.float32:
        return bool(np.array_equal(fast.view(np.uint32), ref.view(np.uint32)))
    return bool(np.array_equal(fast, ref))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--size", type=int, default=1100, help="image side (default 1100)"
    )
    parser.add_argument(
        "--repeat", type=int, default=7, help="fast kernel timed runs (default 7)"
    )
    parser.add_argument(
        "--ref-repeat", type=int, default=3, help="scipy timed runs (default 3)"
    )
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.size < 1 or args.repeat < 1 or args.ref_repeat < 1:
        parser.error("--size, --repeat and --ref-repeat must be >= 1")

    image = make_image(args.size)
    rng = np.random.default_rng(1)
    holey = image.copy()
    holey[rng.random(holey.shape) < 0.002] = np.nan  # bad pixels
    holey[: args.size // 10, : args.size // 5] = np.nan  # a blank corner
    extra = rng.random(image.shape) < 0.01
    # A source mask as the pipeline makes it: smoothed image over a threshold.
    detected = smooth_reference(image, 2.0, **TRUNCATE) > 1.0

    # name, params, reference call, fast call
    cases = [
        ("smooth", "sigma=3 truncate=4", smooth_reference, smooth, (image, 3.0),
         TRUNCATE),
        ("smooth", "sigma=2.12 truncate=4", smooth_reference, smooth,
         (image, 2.12), TRUNCATE),
        ("smooth", "sigma=3 truncate=4 NaN+mask", smooth_reference, smooth,
         (holey, 3.0), {"mask": extra, **TRUNCATE}),
        ("dilate_mask", "radius=2", dilate_reference, dilate_mask,
         (detected, 2), {}),
        ("dilate_mask", "radius=4", dilate_reference, dilate_mask,
         (detected, 4), {}),
    ]  # fmt: skip

    # First calls: numba compile, or load from its on-disk cache.
    start = time.perf_counter()
    small = image[:64, :64]
    smooth(small, 1.0, **TRUNCATE)
    smooth(small, 1.0, mask=extra[:64, :64], **TRUNCATE)
    smooth(small.astype(np.float64), 1.0, **TRUNCATE)
    dilate_mask(detected[:64, :64], 2)
    first_call_s = time.perf_counter() - start

    size = f"{args.size} x {args.size}"
    header = (
        f"{'kernel':<12} {'size':>11} {'params':<28} {'reference s':>11} "
        f"{'fast s':>9} {'ratio':>7} identical"
    )
    print(header)
    records = []
    for kernel, params, ref_func, fast_func, fargs, fkwargs in cases:
        ref_call = functools.partial(ref_func, *fargs, **fkwargs)
        fast_call = functools.partial(fast_func, *fargs, **fkwargs)
        ref_s, expected = runs(args.ref_repeat, ref_call)
        fast_s, result = runs(args.repeat, fast_call)
        same = identical(result, expected)
        ratio = min(ref_s) / min(fast_s)
        print(
            f"{kernel:<12} {size:>11} {params:<28} {min(ref_s):>11.4f} "
            f"{min(fast_s):>9.4f} {ratio:>6.1f}x {'yes' if same else 'NO'}"
        )
        records.append(
            {
                "kernel": kernel,
                "params": params,
                "size": [args.size, args.size],
                "reference_s": ref_s,
                "fast_s": fast_s,
                "reference_best_s": min(ref_s),
                "fast_best_s": min(fast_s),
                "ratio_best": ratio,
                "identical": same,
            }
        )
    print(f"first calls (64 x 64, compile or cache load): {first_call_s:.2f} s")

    record = {
        "benchmark": "mask_kernels",
        "dtype": "float32",
        "threads": 1,
        "cases": records,
        "first_call_s": first_call_s,
    }
    write_record(args.output, record)
    return 0 if all(r["identical"] for r in records) else 1


if __name__ == "__main__":
    sys.exit(main())

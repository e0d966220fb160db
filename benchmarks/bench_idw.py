"""IDW mesh-to-pixel interpolation: per-pixel reference versus the lane kernel.

Usage::

    python benchmarks/bench_idw.py             # 1050 x 1050 tile of a 2000 image
    python benchmarks/bench_idw.py --tile 500 --repeat 3

Each case interpolates one tile of a 2000 x 2000 image, at global offset
(950, 950) so it touches the image's far edges (not box-aligned for 6 x 6
boxes), from its mesh block with the :func:`idw_depth` halo, with the
pipeline's IDW parameters (``n_neighbors=20, power=1, regularization=30``,
reach 16 boxes). The mesh is the notebook's sky (gradient plus sinc
blemishes) at the box centres, with box-estimator noise, stored as float32,
and a random fraction of NaN (excluded) cells. Both kernels run through the
same :func:`idw_interpolate` wrapper, one thread. Prints a table and writes
``benchmarks/results/bench_idw.json``; the first call of each kernel (numba
compile, or loading its on-disk cache) is made on a small tile and kept out
of the timings. Exit status 1 if any output differs from the reference.
"""

from _common import one_thread, runs, write_record

# One thread everywhere, before numpy/numba are imported.
one_thread()

import argparse  # noqa: E402
import contextlib  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from tilesky.kernels import _idw  # noqa: E402
from tilesky.kernels._idw import idw_depth, idw_interpolate  # noqa: E402
from tilesky.kernels._mesh_window import mesh_window  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "bench_idw.json"
REPO = Path(__file__).resolve().parent.parent
# The slow references live with the tests, which are not a package.
sys.path.insert(0, str(REPO / "tests"))
from _reference_kernels import idw_grid_reference  # noqa: E402

IMAGE = 2000
OFFSET = 950
IDW = {"n_neighbors": 20, "power": 1.0, "regularization": 30.0}
# (name, box side, NaN fraction); the first two are the pipeline's passes.
CASES = [
    ("pass 1, 2 % NaN", 10, 0.02),
    ("pass 2, 2 % NaN", 6, 0.02),
    ("pass 2, 30 % NaN", 6, 0.30),
]


def make_mesh(box: int, nan_fraction: float, seed: int = 0) -> np.ndarray:
    """Notebook sky at the centres of ``box`` boxes, estimator noise, NaN cells."""
    rng = np.random.default_rng(seed)
    n = -(-IMAGE // box)
    centre = np.arange(n) * box + (box - 1) / 2.0
    row, col = np.meshgrid(centre, centre, indexing="ij")
    sky = row / IMAGE + 0.25 * col / IMAGE
    for _ in range(16):
        yc, xc = rng.uniform(0, IMAGE, 2)
        width = 30.0 + 100.0 * rng.random()
        amplitude = rng.random()
        r = np.hypot(row - yc, col - xc)
        sky += amplitude * np.sinc(r / (width * np.pi))
    # A box median of noise 0.1 scatters by ~1.25 * 0.1 / box.
    sky += rng.normal(0.0, 0.125 / box, sky.shape)
    sky[rng.random(sky.shape) < nan_fraction] = np.nan
    return sky.astype(np.float32)


@contextlib.contextmanager
def reference_kernel():
    """Route idw_interpolate through the per-pixel reference kernel."""
    fast = _idw.idw_grid
    _idw.idw_grid = idw_grid_reference
    try:
        yield
    finally:
        _idw.idw_grid = fast


def tile_args(mesh: np.ndarray, box: int, tile: int) -> tuple[np.ndarray, dict]:
    reach = 16.0 * box
    shape = (min(tile, IMAGE - OFFSET),) * 2
    win = mesh_window(
        (OFFSET, OFFSET),
        shape,
        box_size=box,
        depth=idw_depth(reach, box),
        mesh_shape=mesh.shape,
    )
    kwargs = {
        "box_size": box,
        "out_shape": shape,
        "out_offset": (OFFSET, OFFSET),
        "mesh_offset": (win[0].start, win[1].start),
        "max_distance": reach,
        **IDW,
    }
    return mesh[win], kwargs


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--tile", type=int, default=1050, help="tile side (default 1050)"
    )
    parser.add_argument(
        "--repeat", type=int, default=7, help="timed runs per kernel (default 7)"
    )
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if not 1 <= args.tile <= IMAGE - OFFSET or args.repeat < 1:
        parser.error(f"--tile must be in 1..{IMAGE - OFFSET}, --repeat >= 1")

    # First calls: numba compile, or load from its on-disk cache.
    first_call_s = {}
    small, small_kwargs = tile_args(make_mesh(6, 0.02), 6, 64)
    kernels = {"reference": reference_kernel, "fast": contextlib.nullcontext}
    for name, kernel in kernels.items():
        with kernel():
            start = time.perf_counter()
            idw_interpolate(small, **small_kwargs)
            first_call_s[name] = time.perf_counter() - start

    records = []
    for name, box, nan_fraction in CASES:
        mesh = make_mesh(box, nan_fraction)
        block, kwargs = tile_args(mesh, box, args.tile)
        with reference_kernel():
            ref_s, expected = runs(args.repeat, idw_interpolate, block, **kwargs)
        fast_s, result = runs(args.repeat, idw_interpolate, block, **kwargs)
        identical = bool(
            np.array_equal(result, expected, equal_nan=True)
            and np.array_equal(result.view(np.uint32), expected.view(np.uint32))
        )
        records.append(
            {
                "case": name,
                "out_shape": list(kwargs["out_shape"]),
                "out_offset": list(kwargs["out_offset"]),
                "box_size": [box, box],
                "mesh_block_shape": list(block.shape),
                "nan_fraction": nan_fraction,
                "nan_cells_in_block": int(np.isnan(block).sum()),
                "max_distance": kwargs["max_distance"],
                **IDW,
                "reference_s": ref_s,
                "fast_s": fast_s,
                "reference_best_s": min(ref_s),
                "fast_best_s": min(fast_s),
                "ratio_best": min(ref_s) / min(fast_s),
                "ratio_median": statistics.median(ref_s) / statistics.median(fast_s),
                "identical": identical,
                "nan_outputs": int(np.isnan(result).sum()),
            }
        )

    header = (
        f"{'case':<18} {'out size':>11} {'box':>6} {'reference s':>12} "
        f"{'fast s':>8} {'ratio':>7} identical"
    )
    print(header)
    for rec in records:
        ny, nx = rec["out_shape"]
        by, bx = rec["box_size"]
        print(
            f"{rec['case']:<18} {f'{ny} x {nx}':>11} {f'{by}x{bx}':>6} "
            f"{rec['reference_best_s']:>12.4f} {rec['fast_best_s']:>8.4f} "
            f"{rec['ratio_best']:>6.1f}x {rec['identical']}"
        )
    print(
        f"best of {args.repeat} runs each; median ratios: "
        + ", ".join(f"{rec['ratio_median']:.1f}x" for rec in records)
    )
    print(
        "first calls (64 x 64, compile or cache load), not in the timings: "
        + ", ".join(f"{k} {v:.2f} s" for k, v in first_call_s.items())
    )

    record = {
        "benchmark": "idw_interpolate",
        "image": [IMAGE, IMAGE],
        "mesh_dtype": "float32",
        "threads": 1,
        "repeat": args.repeat,
        "cases": records,
        "identical": all(rec["identical"] for rec in records),
        "first_call_s": first_call_s,
    }
    write_record(args.output, record)
    return 0 if record["identical"] else 1


if __name__ == "__main__":
    sys.exit(main())

"""Quality metrics (``compute_metrics``): the compiled one-pass path versus before.

Usage::

    python benchmarks/bench_metrics.py                  # simulated 2000 x 2000
    python benchmarks/bench_metrics.py --scene S.zarr --run OUT.zarr --repeat 7

Times ``tilesky.metrics.compute_metrics`` with truth, sky and the source
catalogue, single-threaded, on numpy input (one block) and on dask input in
``--chunks`` tiles (synchronous scheduler), for:

- ``new``: the package as it is;
- ``reference``: the same package with the per-chunk states built by the
  former path kept with the tests (``tests/_reference_metrics.py``:
  ``scale_state_reference``, ``bias_state_reference``,
  ``source_state_reference``: one integral image per digit position, one
  table row per box pixel);
- ``git:REV``: ``tilesky/metrics.py`` as of commit ``--git-rev`` (default: the
  commit before the compiled path), imported from a temporary file; skipped
  with a note when git or that revision is not available.

Every implementation's metrics must be the same JSON as ``new`` on numpy input
(and each dask result the same as its numpy one); the script exits 1
otherwise. The input is ``--scene`` (a Zarr group with ``scene``, ``truth``,
``sky``, ``x_mean``, ``y_mean``, ``flux``, ``re``) and ``--run`` (a tilesky
run store with ``background`` and ``mask``); without them, the notebook scene
is simulated (seed 4) and its background estimated in this process with
tilesky's defaults (not timed). Each implementation is called once untimed
first (numba compile or cache load). Prints a table and writes
``benchmarks/results/bench_metrics.json``.
"""

from _common import one_thread, timed, write_record

# One thread everywhere, before numpy/numba are imported.
one_thread()

import argparse  # noqa: E402
import contextlib  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import dask  # noqa: E402
import dask.array as da  # noqa: E402
import numpy as np  # noqa: E402

from tilesky import metrics as new_metrics  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "bench_metrics.json"
REPO = Path(__file__).resolve().parent.parent
# The slow references live with the tests, which are not a package.
sys.path.insert(0, str(REPO / "tests"))
import _reference_metrics  # noqa: E402

# The last commit with the per-digit-position integral images.
BEFORE_REV = "0025c06"
CATALOGUE = ("x_mean", "y_mean", "flux", "re")
_KEEP: list = []


def load_inputs(args) -> tuple[dict, str]:
    """Arrays and catalogue, from Zarr stores or simulated; and a description."""
    if args.scene or args.run:
        if not (args.scene and args.run):
            raise SystemExit("--scene and --run go together")
        import zarr

        scene = zarr.open_group(str(args.scene), mode="r")
        run = zarr.open_group(str(args.run), mode="r")
        arrays = {k: np.asarray(scene[k][:]) for k in ("scene", "truth", "sky")}
        arrays.update({k: np.asarray(run[k][:]) for k in ("background", "mask")})
        cat = {k: np.asarray(scene[k][:]) for k in CATALOGUE}
        return {**arrays, "catalogue": cat}, f"{args.scene} + {args.run}"
    import tilesky

    print(f"[bench] simulating {args.size}^2 and estimating its background ...")
    start = time.perf_counter()
    ds = tilesky.simulate_scene((args.size, args.size), seed=4).compute()
    arrays = {k: ds[k].values for k in ("scene", "truth", "sky")}
    out = tilesky.estimate_background(arrays["scene"])
    arrays["background"] = out["background"].values
    arrays["mask"] = out["mask"].values
    cat = {k: ds[k].values for k in CATALOGUE}
    print(f"[bench] inputs ready in {time.perf_counter() - start:.1f} s (not timed)")
    return {**arrays, "catalogue": cat}, f"simulate_scene({args.size}^2, seed=4)"


def module_at(rev: str):
    """``tilesky/metrics.py`` of git revision ``rev`` as a module, or a reason."""
    try:
        text = subprocess.run(
            ["git", "-C", str(REPO), "show", f"{rev}:tilesky/metrics.py"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        return None, f"git show {rev}: {exc}"
    # Removed at exit (with the numba cache compiled next to the file).
    tmp = tempfile.TemporaryDirectory(prefix="bench_metrics_")
    _KEEP.append(tmp)
    path = Path(tmp.name) / f"metrics_{rev}.py"
    path.write_text(text)
    spec = importlib.util.spec_from_file_location(f"metrics_{rev}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # any import failure is a skip, with its reason
        return None, f"import of {rev}'s metrics.py failed: {exc!r}"
    return module, None


@contextlib.contextmanager
def reference_path():
    """Build the per-chunk states with the former path of the tests."""
    with _reference_metrics.swapped_in():
        yield new_metrics


def call(module, data: dict, chunks) -> str:
    """One ``compute_metrics`` call; its metrics as canonical JSON."""
    arrays = {k: v for k, v in data.items() if k != "catalogue"}
    if chunks is not None:
        arrays = {k: da.from_array(v, chunks=chunks) for k, v in arrays.items()}
    with dask.config.set(scheduler="synchronous"):
        metrics = module.compute_metrics(
            arrays["scene"],
            arrays["background"],
            arrays["mask"],
            truth=arrays["truth"],
            sky=arrays["sky"],
            catalogue=data["catalogue"],
        )
    return json.dumps(metrics, sort_keys=True, allow_nan=False)


def time_calls(module, data, chunks, repeat):
    first_s, first = timed(call, module, data, chunks)
    seconds = []
    for _ in range(repeat):
        one_s, out = timed(call, module, data, chunks)
        seconds.append(one_s)
        if out != first:
            raise SystemExit("compute_metrics is not deterministic across calls")
    return first, first_s, seconds


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scene", type=Path, help="scene Zarr group (with --run)")
    parser.add_argument("--run", type=Path, help="tilesky run store (with --scene)")
    parser.add_argument("--size", type=int, default=2000, help="simulated side")
    parser.add_argument("--chunks", type=int, default=1020, help="dask tile side")
    parser.add_argument("--repeat", type=int, default=5, help="timed calls each")
    parser.add_argument("--git-rev", default=BEFORE_REV, help="'before' revision")
    parser.add_argument("--no-git", action="store_true", help="skip git:REV")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.size < 8 or args.repeat < 1 or args.chunks < 1:
        parser.error("--size must be >= 8, --repeat and --chunks >= 1")

    data, source = load_inputs(args)
    shape = tuple(int(s) for s in data["scene"].shape)
    # name -> a factory of context managers yielding the metrics module.
    impls = {
        "new": lambda: contextlib.nullcontext(new_metrics),
        "reference": reference_path,
    }
    notes = []
    if not args.no_git:
        module, why = module_at(args.git_rev)
        if module is None:
            notes.append(why)
            print(f"[bench] skipping git:{args.git_rev}: {why}")
        else:
            impls[f"git:{args.git_rev}"] = lambda m=module: contextlib.nullcontext(m)

    inputs = {"numpy": None, f"dask {args.chunks}": args.chunks}
    rows, expected = [], None
    for name, factory in impls.items():
        for label, chunks in inputs.items():
            with factory() as module:
                out, first_s, seconds = time_calls(module, data, chunks, args.repeat)
            expected = out if expected is None else expected
            rows.append(
                {
                    "implementation": name,
                    "input": label,
                    "best_s": min(seconds),
                    "median_s": statistics.median(seconds),
                    "runs_s": seconds,
                    "first_call_s": first_s,
                    "identical": out == expected,
                }
            )
            print(f"[bench] {name} on {label}: best {min(seconds):.3f} s", flush=True)

    best = {(r["implementation"], r["input"]): r["best_s"] for r in rows}
    speedup = {
        f"new vs {name}": {
            label: best[(name, label)] / best[("new", label)] for label in inputs
        }
        for name in impls
        if name != "new"
    }
    print()
    print(f"input: {source}, {shape[0]} x {shape[1]}, one thread")
    header = f"{'implementation':>16} {'input':>10} {'best s':>8} {'median s':>9}"
    print(f"{header} identical")
    for r in rows:
        print(
            f"{r['implementation']:>16} {r['input']:>10} {r['best_s']:>8.3f} "
            f"{r['median_s']:>9.3f} {r['identical']}"
        )
    for key, ratios in speedup.items():
        text = ", ".join(f"{label} {ratio:.2f}x" for label, ratio in ratios.items())
        print(f"speed-up {key}: {text}")
    identical = all(r["identical"] for r in rows)

    record = {
        "benchmark": "compute_metrics",
        "input": source,
        "shape": list(shape),
        "n_sources": int(np.size(data["catalogue"]["x_mean"])),
        "mask_fraction": float(np.mean(data["mask"])),
        "dask_chunks": args.chunks,
        "threads": 1,
        "repeat": args.repeat,
        "results": rows,
        "speedup_best": speedup,
        "identical": identical,
        "notes": notes,
    }
    write_record(args.output, record)
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())

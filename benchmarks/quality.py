"""Quality of tilesky's default against the notebook preset on simulated skies.

Runs both configurations monolithically (the reference path) on the
notebook scene at 2000x2000 for seeds 4, 11, 23, and on harder skies: noise
depth varying 3x across the image, and 30 % blank (NaN) coverage. Prints
one table per scene and writes benchmarks/results/quality.json.

    python benchmarks/quality.py [--size 2000] [--seeds 4 11 23] [--quick]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from tilesky import estimate_background, simulate_scene
from tilesky.metrics import compute_metrics

RESULTS = Path(__file__).parent / "results"

CONFIGS = {
    "notebook": {"preset": "notebook"},
    "default": {"preset": "default"},
    "notebook+local": {"preset": "notebook", "overrides": ["noise_mode=local"]},
    "default+local": {"preset": "default", "overrides": ["noise_mode=local"]},
}


def _ratio_at(scale: dict, width: int) -> float | None:
    widths = list(scale["widths"])
    ratios = scale.get("ratio_perfect") or scale.get("ratio")
    if width not in widths or ratios is None:
        return None
    return ratios[widths.index(width)]


def evaluate(ds, name: str, spec: dict) -> dict:
    scene = ds.scene.values
    start = time.perf_counter()
    run = estimate_background(
        scene, preset=spec["preset"], overrides=spec.get("overrides", ())
    )
    seconds = time.perf_counter() - start
    catalogue = {c: ds[c].values for c in ("x_mean", "y_mean", "flux", "re")}
    m = compute_metrics(
        scene,
        run.background.values,
        run.mask.values,
        truth=ds.truth.values,
        sky=ds.sky.values,
        catalogue=catalogue,
    )
    truth = m["truth"]["all"]
    return {
        "config": name,
        "rms": truth["std"],
        "peak": truth["max"],
        "min": truth["min"],
        "z": m["bias"]["z"],
        "ratio9": _ratio_at(m["scale"], 9),
        "ratio25": _ratio_at(m["scale"], 25),
        "mask_fraction": float(np.mean(run.mask.values)),
        "nan_covered": int(
            np.sum(np.isnan(run.background.values) & np.isfinite(scene))
        ),
        "seconds": round(seconds, 2),
    }


def _print(title: str, rows: list[dict]) -> None:
    print(f"\n{title}")
    head = (
        f"{'config':<16}{'resid RMS':>11}{'peak':>9}{'min':>9}{'bias z':>8}"
        f"{'ratio w9':>10}{'ratio w25':>10}{'mask':>7}{'s':>7}"
    )
    print(head)
    print("-" * len(head))
    base = rows[0]["rms"]
    for r in rows:
        print(
            f"{r['config']:<16}{r['rms']:>11.5f}{r['peak']:>9.4f}{r['min']:>9.4f}"
            f"{r['z']:>8.2f}{r['ratio9']:>10.3f}{r['ratio25']:>10.3f}"
            f"{r['mask_fraction']:>7.3f}{r['seconds']:>7.1f}"
            + (f"   x{r['rms'] / base:.2f}" if r is not rows[0] else "")
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=2000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[4, 11, 23])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="only the notebook scene, notebook and default presets",
    )
    args = parser.parse_args()
    shape = (args.size, args.size)
    scenes = {
        f"notebook scene, seed {s}": ({"seed": s}, ["notebook", "default"])
        for s in args.seeds
    }
    if not args.quick:
        everything = list(CONFIGS)
        scenes["depth varying 3x, seed 4"] = (
            {"seed": 4, "depth_variation": 3.0},
            everything,
        )
        scenes["30 % blank, seed 4"] = (
            {"seed": 4, "blank_fraction": 0.3},
            ["notebook", "default"],
        )
    out = {}
    for title, (kw, names) in scenes.items():
        ds = simulate_scene(shape, chunks=1000, **kw).compute()
        rows = [evaluate(ds, n, CONFIGS[n]) for n in names]
        _print(f"{title} ({shape[0]}x{shape[1]})", rows)
        out[title] = rows
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "quality.json").write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()

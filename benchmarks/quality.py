"""Quality of tilesky against other background estimators on benchmark skies.

Each sky of :mod:`benchmarks.skies` (the notebook scene, varying depth, dither
steps, low-surface-brightness disks on the notebook's blemishes and on a
survey-smooth sky, bright galaxies, stars with halos, an odd-shaped mosaic
with a NaN footprint) is run through every method, side by
side: tilesky's default (without and, where the sky has one, with its
inverse-variance weight map), tilesky ``--preset notebook``, the notebook
port (``bkg5``; skipped on skies with NaNs), photutils ``Background2D`` and
SEP (when ``sep`` imports; ``pip install -e .[bench]``). Per (sky, method):
residual RMS of background - truth (std, and about zero), peak |residual|,
stolen flux of the extended sources (sum of background - truth in a 4 Re
aperture over the source's flux; median and mean per kind), the same paired
(background - the method's own background of the scene without those
sources: the source's effect alone) and runtime. Tables show medians over
the sources of a kind; the JSON has every source and the means. One table
per sky; JSON in benchmarks/results/quality.json.

``--real`` adds the real frames of :mod:`benchmarks.real_data` that are
present (the KPNO M51 image): masked-vs-unmasked bias z and the background at
the galaxy centre and in the corners.

    python benchmarks/quality.py                    # all skies, 1000x1000
    python benchmarks/quality.py --quick            # 3 skies at 600x600
    python benchmarks/quality.py --skies lsb_survey,dither --methods tilesky,bg2d-b10
    python benchmarks/quality.py --real
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import write_record
from benchmarks.skies import SKIES, Sky, build, score

RESULTS = Path(__file__).parent / "results"
QUICK_SKIES = ("notebook23", "dither", "lsb_survey")
#: Overrides of the ``tilesky-gate`` method.
GATE = ("source_mask.auto_coarse_fraction=0.05",)


def _tilesky(preset: str, use_weight: bool, overrides=()) -> Callable:
    def run(scene, weight):
        from tilesky import estimate_background

        w = weight if use_weight else None
        result = estimate_background(
            scene, preset=preset, weight=w, overrides=list(overrides)
        )
        return result.background.values

    return run


def _port(scene, weight):
    from benchmarks.notebook_port import run_notebook_pipeline

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return run_notebook_pipeline(scene)["bkg5"]


def _bg2d(box: int, filter_size: int) -> Callable:
    def run(scene, weight):
        from astropy.stats import SigmaClip
        from photutils.background import Background2D, MedianBackground

        bad = ~np.isfinite(scene)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            bkg = Background2D(
                scene,
                box,
                filter_size=filter_size,
                sigma_clip=SigmaClip(sigma=3.0),
                bkg_estimator=MedianBackground(),
                coverage_mask=bad if bad.any() else None,
                fill_value=np.nan,
            )
            return np.asarray(bkg.background)

    return run


def _sep(bw: int) -> Callable:
    def run(scene, weight):
        import sep

        data = np.ascontiguousarray(scene, dtype=np.float64)
        bad = ~np.isfinite(data)
        data = np.where(bad, 0.0, data)
        back = sep.Background(data, mask=bad, bw=bw, bh=bw, fw=3, fh=3).back()
        return np.where(bad, np.nan, back)

    return run


def _have_sep() -> bool:
    try:
        import sep  # noqa: F401
    except ImportError:
        return False
    return True


#: name -> (runner(scene, weight) -> background, needs a weight map, NaN-safe)
METHODS: dict[str, tuple[Callable, bool, bool]] = {
    "tilesky": (_tilesky("default", False), False, True),
    "tilesky+weight": (_tilesky("default", True), True, True),
    "tilesky-notebook": (_tilesky("notebook", False), False, True),
    # The data-decided extended-source scales (off by default).
    "tilesky-gate": (_tilesky("default", False, GATE), False, True),
    "port-bkg5": (_port, False, False),
    "bg2d-b10f5": (_bg2d(10, 5), False, True),
    "bg2d-b50f3": (_bg2d(50, 3), False, True),
    "sep-bw16": (_sep(16), False, True),
    "sep-bw64": (_sep(64), False, True),
}


def evaluate(sky: Sky, methods: list[str]) -> list[dict]:
    """Score each method on ``sky``: a row of :func:`benchmarks.skies.score` each."""
    rows = []
    finite = bool(np.isfinite(sky.scene).all())
    for name in methods:
        runner, needs_weight, nan_safe = METHODS[name]
        if (needs_weight and sky.weight is None) or (not nan_safe and not finite):
            continue
        if name.startswith("sep") and not _have_sep():
            continue
        start = time.perf_counter()
        background = runner(sky.scene, sky.weight)
        seconds = time.perf_counter() - start
        bare = None if sky.bare is None else runner(sky.bare, sky.weight)
        rows.append(
            {"method": name, **score(sky, background, bare), "seconds": seconds}
        )
    return rows


def _stolen_columns(rows: list[dict]) -> list[str]:
    kinds = []
    for key in rows[0] if rows else ():
        if key.startswith("stolen_") and key.endswith("_median"):
            kinds.append(key[len("stolen_") : -len("_median")])
    return kinds


def print_table(title: str, rows: list[dict]) -> None:
    """One sky's table: RMS, RMS about 0, peak, stolen flux, seconds, x bkg5."""
    kinds = _stolen_columns(rows)
    # The notebook port cannot run on NaNs: there, its tilesky preset stands in.
    by_name = {r["method"]: r["rms"] for r in rows}
    ref = by_name.get("port-bkg5")
    star = "" if ref is not None else "*"
    ref = ref if ref is not None else by_name.get("tilesky-notebook")
    print(f"\n{title}")
    head = f"{'method':<18}{'RMS':>9}{'RMS0':>9}{'peak':>8}"
    head += "".join(f"{k[:4] + ' truth / paired':>22}" for k in kinds)
    head += f"{'all truth / paired':>22}" if kinds else ""
    head += f"{'s':>7}{'x bkg5':>8}"
    print(head)
    print("-" * len(head))
    for r in rows:
        line = f"{r['method']:<18}{r['rms']:>9.5f}{r['rms0']:>9.5f}{r['peak']:>8.3f}"
        for k in kinds:
            truth, paired = r[f"stolen_{k}_median"], r.get(f"paired_{k}_median")
            cell = f"{truth:+.3f} / " + ("-" if paired is None else f"{paired:+.3f}")
            line += f"{cell:>22}"
        if kinds:
            truth, paired = r["stolen_total"], r.get("paired_total")
            cell = f"{truth:+.3f} / " + ("-" if paired is None else f"{paired:+.3f}")
            line += f"{cell:>22}"
        line += f"{r['seconds']:>7.1f}"
        line += f"{r['rms'] / ref:>7.2f}{star:<1}" if ref else f"{'':>8}"
        if r["nan_covered"]:
            line += f"  ({r['nan_covered']} covered px left NaN)"
        print(line)
    if star and ref:
        print("* against tilesky-notebook: the notebook port does not run on NaNs")


def _parse_names(text: str | None, known, what: str) -> list[str] | None:
    if text is None:
        return None
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in known]
    if unknown:
        msg = f"unknown {what} {', '.join(unknown)}; choose from {', '.join(known)}"
        raise SystemExit(msg)
    return names


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=int, default=None, help="side (default 1000)")
    parser.add_argument("--quick", action="store_true", help="3 skies at 600x600")
    parser.add_argument("--skies", help=f"comma-separated: {', '.join(SKIES)}")
    parser.add_argument("--methods", help=f"comma-separated: {', '.join(METHODS)}")
    parser.add_argument("--real", action="store_true", help="also the real frames")
    parser.add_argument(
        "--no-skies", action="store_true", help="skip the simulated skies"
    )
    parser.add_argument("--json", type=Path, help="output (default results/...)")
    args = parser.parse_args(argv)
    skies = _parse_names(args.skies, list(SKIES), "sky") or (
        list(QUICK_SKIES) if args.quick else list(SKIES)
    )
    methods = _parse_names(args.methods, list(METHODS), "method") or list(METHODS)
    size = args.size or (600 if args.quick else 1000)
    out: dict = {"size": size, "skies": {}}
    total = time.perf_counter()
    for name in [] if args.no_skies else skies:
        sky = build(name, shape=(size, size))
        rows = evaluate(sky, methods)
        shape = "x".join(map(str, sky.scene.shape))
        print_table(f"{sky.title} ({shape})", rows)
        out["skies"][name] = {"title": sky.title, "params": sky.params, "rows": rows}
    if args.real:
        from benchmarks.real_data import run_real

        out["real"] = run_real({m: METHODS[m] for m in methods})
    print(f"\ntotal {time.perf_counter() - total:.0f} s")
    partial = args.quick or args.skies or args.methods or args.size or args.no_skies
    default = "quality_partial.json" if partial else "quality.json"
    path = args.json or RESULTS / default
    write_record(path, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

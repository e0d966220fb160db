"""Real frames for the quality benchmark: where they come from and how they score.

The frames are FITS files of astropy's ``photutils-datasets`` repository
(the files photutils' own examples and tests download). None is committed:
that repository states no licence for them. :func:`obtain` caches a frame
under ``benchmarks/data/`` (gitignored) from, in order:

1. the cache itself;
2. a clone or mirror of the repository: ``--mirror DIR`` or the environment
   variable ``PHOTUTILS_DATASETS`` (a work tree, or a bare git directory,
   read with ``git show HEAD:PATH``);
3. ``photutils.datasets.get_path(..., location="photutils-datasets")``,
   which downloads it (needs network access to GitHub).

    python benchmarks/real_data.py [--mirror DIR]   # fetch every frame
    python benchmarks/quality.py --real --no-skies  # score them

Frames:

- ``m51``: ``data/isophote/M51.fits``, the classic KPNO M51 B-band CCD frame
  (600 s, 1987; 512 x 512 int16; IRAF's ``dev$pix`` test image). The galaxy
  fills most of the frame: a background that follows it is the failure to see.
- ``m67``: ``data/M6707HH.fits``, a digitised Palomar plate of the open
  cluster M67 (1059 x 1059 int16): bright stars and plate-scale sky structure.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np

DATA = Path(__file__).parent / "data"
_REPO = "photutils-datasets"

#: name -> (path in the repository, description)
FRAMES = {
    "m51": ("data/isophote/M51.fits", "KPNO M51 B 600 s (512x512)"),
    "m67": ("data/M6707HH.fits", "DSS plate of M67 (1059x1059)"),
}


def _from_mirror(repo_path: str, mirror: Path, target: Path) -> bool:
    tree = mirror / repo_path
    if tree.is_file():
        shutil.copyfile(tree, target)
        return True
    try:
        blob = subprocess.run(
            ["git", "--git-dir", str(mirror), "show", f"HEAD:{repo_path}"],
            capture_output=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return False
    target.write_bytes(blob)
    return True


def _from_photutils(repo_path: str, target: Path) -> bool:
    try:
        from photutils.datasets import get_path

        path = get_path(repo_path.removeprefix("data/"), location=_REPO)
    except Exception as exc:  # any network or cache failure: not available
        print(f"  photutils could not download {repo_path}: {exc}", file=sys.stderr)
        return False
    shutil.copyfile(path, target)
    return True


def obtain(name: str, *, mirror: str | os.PathLike | None = None) -> Path | None:
    """Path of frame ``name`` in the cache, fetching it first if needed.

    Parameters
    ----------
    name : str
        A key of `FRAMES`.
    mirror : path, optional
        A clone (work tree or git directory) of photutils-datasets; default
        the ``PHOTUTILS_DATASETS`` environment variable.

    Returns
    -------
    pathlib.Path or None
        None when no source had it.
    """
    repo_path, _ = FRAMES[name]
    target = DATA / Path(repo_path).name
    if target.is_file():
        return target
    DATA.mkdir(exist_ok=True)
    partial = target.with_suffix(".part")
    mirror = mirror or os.environ.get("PHOTUTILS_DATASETS")
    ok = mirror is not None and _from_mirror(repo_path, Path(mirror), partial)
    ok = ok or _from_photutils(repo_path, partial)
    if not ok:
        return None
    partial.replace(target)
    return target


def load(name: str) -> np.ndarray | None:
    """Frame ``name`` as float32, or None when it is not cached."""
    from astropy.io import fits

    path = DATA / Path(FRAMES[name][0]).name
    if not path.is_file():
        return None
    return np.asarray(fits.getdata(path), dtype=np.float32)


def _box_median(image: np.ndarray, y: int, x: int, half: int) -> float:
    sl = (slice(max(y - half, 0), y + half + 1), slice(max(x - half, 0), x + half + 1))
    return float(np.nanmedian(image[sl]))


def _places(scene: np.ndarray) -> dict[str, tuple[int, int]]:
    """The brightest smoothed pixel (a galaxy's centre) and four corners."""
    from scipy import ndimage

    smooth = ndimage.gaussian_filter(np.nan_to_num(scene), 5)
    cy, cx = np.unravel_index(int(np.argmax(smooth)), smooth.shape)
    ny, nx = scene.shape
    k = 24  # corner boxes start clear of the frame's trimmed edges
    return {
        "centre": (int(cy), int(cx)),
        "corner_ll": (k, k),
        "corner_lr": (k, nx - 1 - k),
        "corner_ul": (ny - 1 - k, k),
        "corner_ur": (ny - 1 - k, nx - 1 - k),
    }


def score_real(scene: np.ndarray, background: np.ndarray, mask: np.ndarray) -> dict:
    """Bias z (masked vs unmasked), background at centre and corners, noise."""
    from tilesky.metrics import compute_metrics

    m = compute_metrics(scene, background, mask)
    places = _places(scene)
    values = {k: _box_median(background, y, x, 10) for k, (y, x) in places.items()}
    corners = [v for k, v in values.items() if k.startswith("corner")]
    resid = (scene - background)[~mask & np.isfinite(scene)]
    sigma = 1.4826 * float(np.median(np.abs(resid - np.median(resid))))
    return {
        "z": m["bias"]["z"],
        "difference": m["bias"]["difference"],
        "centre": values["centre"],
        "corners": corners,
        "corner_mean": float(np.mean(corners)),
        "centre_minus_corners_sigma": (values["centre"] - np.mean(corners)) / sigma,
        "sigma": sigma,
        "mask_fraction": float(np.mean(mask)),
        "centre_yx": list(places["centre"]),
    }


def run_real(methods: dict) -> dict:
    """Score ``methods`` on every cached frame.

    ``methods`` maps names to ``(runner, needs_weight, nan_safe)`` as in
    ``quality.METHODS``; tilesky's are run here to keep their masks.
    """
    from tilesky import estimate_background

    out = {}
    for name, (_, title) in FRAMES.items():
        scene = load(name)
        if scene is None:
            print(f"\n{name}: not in {DATA} (python benchmarks/real_data.py)")
            continue
        start = time.perf_counter()
        default = estimate_background(scene)
        default_seconds = time.perf_counter() - start
        rows = []
        for method, (runner, needs_weight, _) in methods.items():
            if needs_weight:
                continue
            start = time.perf_counter()
            if method.startswith("tilesky"):
                preset = "notebook" if method == "tilesky-notebook" else "default"
                run = default if preset == "default" else None
                run = run or estimate_background(scene, preset=preset)
                background, mask = run.background.values, run.mask.values
            else:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    background = runner(scene, None)
                # Other methods have no mask of their own: judge them by
                # tilesky's default mask, the same pixels for every method.
                mask = default.mask.values
            seconds = time.perf_counter() - start
            if method == "tilesky":
                seconds = default_seconds
            rows.append(
                {
                    "method": method,
                    **score_real(scene, background, mask),
                    "seconds": seconds,
                }
            )
        _print_real(f"{name}: {title}", rows)
        out[name] = {
            "title": title,
            "shape": list(scene.shape),
            "rows": rows,
            "validation": _validation(name),
        }
    return out


def _validation(name: str) -> dict:
    """``tilesky validate`` of a default run on the frame, in a scratch store."""
    import tempfile

    from tilesky import load_config, run_to_store
    from tilesky.validate import format_lines, validate_run

    with tempfile.TemporaryDirectory() as tmp:
        run = f"{tmp}/{name}.zarr"
        run_to_store(str(DATA / Path(FRAMES[name][0]).name), run, config=load_config())
        result = validate_run(run)
    print(f"injection check of the default run on {name}:")
    for line in format_lines(result):
        print(f"  {line}")
    return result


def _print_real(title: str, rows: list[dict]) -> None:
    print(f"\n{title}")
    head = (
        f"{'method':<18}{'bias z':>8}{'centre':>10}{'corners':>10}"
        f"{'(c-k)/sig':>11}{'sigma':>8}{'mask':>7}{'s':>7}"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        z = "-" if r["z"] is None else f"{r['z']:.2f}"
        print(
            f"{r['method']:<18}{z:>8}{r['centre']:>10.1f}{r['corner_mean']:>10.1f}"
            f"{r['centre_minus_corners_sigma']:>11.1f}{r['sigma']:>8.2f}"
            f"{r['mask_fraction']:>7.3f}{r['seconds']:>7.1f}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mirror", help="a clone of photutils-datasets")
    args = parser.parse_args(argv)
    missing = 0
    for name in FRAMES:
        path = obtain(name, mirror=args.mirror)
        print(f"{name}: {path or 'not available'}")
        missing += path is None
    return int(missing > 0)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    raise SystemExit(main())

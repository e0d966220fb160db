"""Hashes of every output array, the oracle of a behaviour-preserving change.

Record before a refactor, check after::

    python benchmarks/output_hashes.py --record   # writes results/output_hashes.json
    python benchmarks/output_hashes.py --check    # exit 1 on any difference

Scenes: the notebook scene, an odd shape with a NaN footprint, a FITS file
with a WCS header. Configurations: the default and notebook presets, global
and local noise, with a user mask and a weight map on the odd shape.
Backends: whole image (numpy, no chunks), tiled in memory (two chunkings,
one smaller than the largest halo) and ``run_to_store`` into a Zarr store
(whose metrics are hashed too, timings left out). The hashes are of the raw
bytes, so "identical" means bit for bit; they depend on the numpy, scipy and
numba builds, so compare runs on one machine and one environment.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results" / "output_hashes.json"


def _digest(values) -> str:
    arr = np.ascontiguousarray(np.asarray(values))
    h = hashlib.sha256()
    h.update(str(arr.dtype).encode())
    h.update(str(arr.shape).encode())
    h.update(arr.tobytes())
    return h.hexdigest()[:20]


def _dataset_hashes(ds) -> dict:
    out = {name: _digest(ds[name].values) for name in sorted(ds.data_vars)}
    out["noise"] = hashlib.sha256(
        json.dumps(ds.attrs.get("noise"), sort_keys=True, default=str).encode()
    ).hexdigest()[:20]
    return out


def _scenes(tmp: Path) -> dict:
    from astropy.io import fits
    from astropy.wcs import WCS

    from tilesky.simulate import simulate_scene

    notebook = simulate_scene((600, 700), seed=4).compute()
    odd = simulate_scene((537, 611), seed=11).compute().scene.values.copy()
    yy, xx = np.mgrid[: odd.shape[0], : odd.shape[1]]
    odd[(yy - 400) ** 2 + (xx - 120) ** 2 < 90**2] = np.nan
    odd[:, 590:] = np.nan
    odd[5, 7] = np.inf
    user_mask = np.zeros(odd.shape, dtype=bool)
    user_mask[100:140, 300:380] = True
    rng = np.random.default_rng(2)
    weight = (1.0 + rng.random(odd.shape)).astype(np.float32)
    weight[200:230, 40:90] = 0.0

    fits_scene = simulate_scene((480, 520), seed=23).compute().scene.values
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = [150.1, 2.2]
    wcs.wcs.crpix = [260.0, 240.0]
    wcs.wcs.cdelt = [-0.00003, 0.00003]
    path = tmp / "scene.fits"
    fits.PrimaryHDU(fits_scene.astype(">f4"), header=wcs.to_header()).writeto(path)

    zarr_path = tmp / "notebook_sim.zarr"
    from tilesky.simulate import write_simulation

    write_simulation(str(zarr_path), shape=(600, 700), seed=4, chunks=300)
    return {
        "notebook": {"data": notebook.scene.values},
        "odd_nan": {"data": odd, "mask": user_mask, "weight": weight},
        "fits_wcs": {"data": str(path)},
        "notebook_zarr": {"data": str(zarr_path)},
    }


CONFIGS = {
    "default": {"preset": "default"},
    "notebook": {"preset": "notebook"},
    "local": {"preset": "default", "overrides": ["noise_mode=local"]},
    "notebook_local": {"preset": "notebook", "overrides": ["noise_mode=local"]},
}


def compute(tmp: Path) -> dict:
    import dask

    from tilesky import estimate_background, run_to_store
    from tilesky._dispatch import resolve_config

    scenes = _scenes(tmp)
    out: dict = {}
    for scene_name, scene in scenes.items():
        for cfg_name, cfg in CONFIGS.items():
            extra = {k: v for k, v in scene.items() if k in ("mask", "weight")}
            data = scene["data"]
            if isinstance(data, np.ndarray):
                backends = {"whole": None, "tiled_120": 120, "tiled_odd": (90, 150)}
            else:
                backends = {"tiled_240": 240}
            for bname, chunks in backends.items():
                key = f"{scene_name}/{cfg_name}/{bname}"
                with dask.config.set(scheduler="threads"):
                    ds = estimate_background(data, chunks=chunks, **cfg, **extra)
                    out[key] = _dataset_hashes(ds.compute())
                print(f"{key}: {len(out[key])} arrays", flush=True)
            if cfg_name in ("default", "notebook") and scene_name != "notebook":
                key = f"{scene_name}/{cfg_name}/run_to_store"
                store_path = tmp / f"{scene_name}_{cfg_name}.zarr"
                store_extra = dict(extra)
                if isinstance(data, np.ndarray):
                    import xarray as xr

                    data = xr.DataArray(data, dims=("y", "x")).chunk(180)
                with dask.config.set(scheduler="threads"):
                    run_to_store(
                        data,
                        str(store_path),
                        config=resolve_config(None, **cfg),
                        chunks=180,
                        **store_extra,
                    )
                import xarray as xr

                ds = xr.open_zarr(store_path, consolidated=False)
                hashes = _dataset_hashes(ds)
                metrics = json.loads((store_path / "metrics.json").read_text())
                hashes["metrics"] = hashlib.sha256(
                    json.dumps(metrics, sort_keys=True).encode()
                ).hexdigest()[:20]
                out[key] = hashes
                print(f"{key}: {len(hashes)} arrays", flush=True)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--record", action="store_true", help="write the hashes")
    mode.add_argument("--check", action="store_true", help="compare to the record")
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        hashes = compute(Path(tmp))
    n = sum(len(v) for v in hashes.values())
    print(f"{len(hashes)} runs, {n} hashes in {time.perf_counter() - start:.0f} s")
    if args.record:
        args.results.parent.mkdir(exist_ok=True)
        args.results.write_text(json.dumps(hashes, indent=1, sort_keys=True) + "\n")
        print(f"recorded {args.results}")
        return 0
    recorded = json.loads(args.results.read_text())
    bad = []
    for key in sorted(set(recorded) | set(hashes)):
        a, b = recorded.get(key, {}), hashes.get(key, {})
        for name in sorted(set(a) | set(b)):
            if a.get(name) != b.get(name):
                bad.append(f"{key} {name}: {a.get(name)} -> {b.get(name)}")
    for line in bad:
        print("DIFFERS", line)
    print("identical" if not bad else f"{len(bad)} of {n} hashes differ")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

"""tilesky against its peers on the same simulated images: wall, peak memory, RMS.

Usage::

    python benchmarks/bench_peers.py                      # 2000^2 and 8192^2
    python benchmarks/bench_peers.py --sizes 2000 --repeat 3

Contenders: tilesky's default, ``--preset notebook``, photutils
``Background2D`` with box 10, filter 5 (median, 3-sigma clip) and with box 50,
filter 3, and SEP's ``Background`` (box 50, filter 3; ``pip install
tilesky[bench]``). Residual RMS is the standard deviation of ``background -
truth`` over the whole image, as in the notebook.

* 2000^2 (``--small``): in this process on the numpy image, one thread per
  tool is not forced (each uses what it uses by default); peak memory is the
  growth of this process's RSS over the call.
* 8192^2 (the other sizes): whole processes. ``tilesky run --no-report``
  Zarr -> Zarr; photutils and SEP in a subprocess that reads the image from
  the same store and writes its background to a Zarr store. Peak memory is
  the summed RSS of the process tree, polled (:class:`PeakMemory`).

Contenders alternate within each repetition (A, B, C, ... then again), and
medians of ``--repeat`` (>= 3) are reported. One untimed tilesky run first
fills the numba cache. Writes ``benchmarks/results/bench_peers.json``.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import TILESKY, PeakMemory, write_record

RESULTS = Path(__file__).parent / "results" / "bench_peers.json"

PEERS = {
    "photutils box10 filter5": ("photutils", 10, 5),
    "photutils box50 filter3": ("photutils", 50, 3),
    "sep box50 filter3": ("sep", 50, 3),
}

# The peer run as a whole process: read the image from the store, estimate,
# write the background to a Zarr store (as tilesky run does).
_PEER_SCRIPT = """
import sys
import numpy as np
import zarr
tool, box, filt, src, out = sys.argv[1:]
box, filt = int(box), int(filt)
scene = zarr.open_array(src, path="scene", mode="r")[...]
if tool == "photutils":
    from astropy.stats import SigmaClip
    from photutils.background import Background2D, MedianBackground
    bkg = Background2D(scene, box, filter_size=filt, sigma_clip=SigmaClip(3.0),
                       bkg_estimator=MedianBackground()).background
else:
    import sep
    bkg = sep.Background(np.ascontiguousarray(scene, dtype=np.float32),
                         bw=box, bh=box, fw=filt, fh=filt).back()
zarr.save_array(out, np.asarray(bkg, dtype=np.float32), overwrite=True)
"""


def _peer_background(tool: str, box: int, filt: int, scene):
    import numpy as np

    if tool == "photutils":
        from astropy.stats import SigmaClip
        from photutils.background import Background2D, MedianBackground

        return Background2D(
            scene,
            box,
            filter_size=filt,
            sigma_clip=SigmaClip(3.0),
            bkg_estimator=MedianBackground(),
        ).background
    import sep

    data = np.ascontiguousarray(scene, dtype=np.float32)
    return sep.Background(data, bw=box, bh=box, fw=filt, fh=filt).back()


def _rms(background, truth) -> float:
    import numpy as np

    return float(np.std(np.asarray(background, np.float64) - truth))


def _median_row(samples: list[dict]) -> dict:
    return {
        key: round(statistics.median(s[key] for s in samples), 4) for key in samples[0]
    } | {"n": len(samples)}


def in_process(size: int, repeat: int, work: Path) -> dict:
    """Every contender on the numpy image of a ``size``^2 simulation."""
    import numpy as np
    import psutil

    import tilesky
    from tilesky.simulate import simulate_scene

    ds = simulate_scene((size, size), seed=4).compute()
    scene = ds.scene.values
    truth = ds.truth.values.astype(np.float64)
    calls = {
        "tilesky default": lambda: tilesky.estimate_background(scene).background,
        "tilesky --preset notebook": lambda: (
            tilesky.estimate_background(scene, preset="notebook").background
        ),
        **{
            name: (lambda spec=spec: _peer_background(*spec, scene))
            for name, spec in PEERS.items()
        },
    }
    for call in calls.values():  # compile, import, warm caches
        call()
    proc = psutil.Process()
    samples: dict[str, list] = {name: [] for name in calls}
    for _ in range(repeat):
        for name, call in calls.items():
            with PeakMemory(proc.pid, interval=0.02) as pm:
                base = proc.memory_info().rss
                start = time.perf_counter()
                background = np.asarray(call())
                wall = time.perf_counter() - start
            samples[name].append(
                {
                    "wall_s": wall,
                    "peak_extra_gib": max(pm.peak - base, 0) / 2**30,
                    "residual_rms": _rms(background, truth),
                }
            )
    return {name: _median_row(s) for name, s in samples.items()}


def _timed_process(cmd: list[str]) -> tuple[float, int]:
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    with PeakMemory(proc.pid) as pm:
        _out, err = proc.communicate()
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{err.decode()[-2000:]}")
    return wall, pm.peak


def whole_processes(size: int, repeat: int, work: Path) -> dict:
    """Every contender as a whole process on a ``size``^2 simulation store."""
    import numpy as np
    import zarr

    scene = work / f"scene_{size}.zarr"
    subprocess.run(
        [TILESKY, "simulate", str(scene), "--shape", str(size), str(size)],
        check=True,
        capture_output=True,
    )
    truth = zarr.open_array(str(scene), path="truth", mode="r")[...].astype(np.float64)
    out = work / f"out_{size}.zarr"
    commands = {
        "tilesky default": [TILESKY, "run", "--no-report", "--overwrite"],
        "tilesky --preset notebook": [
            *(TILESKY, "run", "--no-report", "--overwrite"),
            *("--preset", "notebook"),
        ],
    }

    def tilesky_cmd(name):
        return [*commands[name], str(scene), str(out)]

    def read_tilesky():
        return zarr.open_array(str(out), path="background", mode="r")[...]

    def peer_cmd(name):
        tool, box, filt = PEERS[name]
        return [
            *(sys.executable, "-c", _PEER_SCRIPT, tool, str(box), str(filt)),
            *(str(scene), str(work / "peer.zarr")),
        ]

    def read_peer():
        return zarr.open_array(str(work / "peer.zarr"), mode="r")[...]

    def metrics_share(name):
        # The share of the workers' compute time that scored the run.
        if name not in commands:
            return None
        work_s = zarr.open_group(str(out), mode="r").attrs.get("task_seconds") or {}
        total = sum(work_s.values())
        reads = ("open_dataset-truth", "open_dataset-sky")
        scoring = sum(
            v for k, v in work_s.items() if k.startswith("metrics") or k in reads
        )
        return scoring / total if total else None

    runs = {name: (tilesky_cmd, read_tilesky) for name in commands}
    runs |= {name: (peer_cmd, read_peer) for name in PEERS}
    subprocess.run(tilesky_cmd("tilesky default"), check=True, capture_output=True)
    samples: dict[str, list] = {name: [] for name in runs}
    for _ in range(repeat):
        for name, (cmd, read) in runs.items():
            wall, peak = _timed_process(cmd(name))
            share = metrics_share(name)
            samples[name].append(
                {
                    "wall_s": wall,
                    "peak_gib": peak / 2**30,
                    "residual_rms": _rms(read(), truth),
                    **({} if share is None else {"metrics_share": share}),
                }
            )
            gib = peak / 2**30
            note = "" if share is None else f", metrics {100 * share:.0f} % of work"
            print(f"  {size}^2 {name}: {wall:.1f} s, {gib:.2f} GiB{note}", flush=True)
    return {name: _median_row(s) for name, s in samples.items()}


def _table(title: str, rows: dict) -> None:
    print(f"\n{title}")
    print(f"{'':28s} {'wall s':>8s} {'peak GiB':>9s} {'resid RMS':>10s} {'n':>3s}")
    for name, row in rows.items():
        peak = row.get("peak_gib", row.get("peak_extra_gib"))
        print(
            f"{name:28s} {row['wall_s']:8.2f} {peak:9.2f} "
            f"{row['residual_rms']:10.5f} {row['n']:3d}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=int, default=2000)
    parser.add_argument("--sizes", type=int, nargs="*", default=[8192])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    record: dict = {"repeat": args.repeat, "in_process": {}, "whole_process": {}}
    with tempfile.TemporaryDirectory(prefix="bench_peers_") as tmp:
        work = Path(tmp)
        if args.small:
            rows = in_process(args.small, args.repeat, work)
            record["in_process"][str(args.small)] = rows
            _table(f"{args.small}^2, in process (peak: RSS growth)", rows)
        for size in args.sizes:
            rows = whole_processes(size, args.repeat, work)
            record["whole_process"][str(size)] = rows
            _table(f"{size}^2, whole processes (peak: RSS of the tree)", rows)
    write_record(RESULTS, record)


if __name__ == "__main__":
    main()

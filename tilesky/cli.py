"""Command line: ``tilesky run | simulate | report | export | validate | demo``.

Errors a user can fix print one line on stderr and exit 1; usage errors exit
2 (argparse). ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import functools
import gc
import logging
import re
import sys
import time
from pathlib import Path

from tilesky._version import __version__

__all__ = ["main"]

log = logging.getLogger("tilesky")


def _chunks(value: str) -> int | tuple[int, int]:
    parts = value.replace("x", ",").split(",")
    try:
        nums = [int(p) for p in parts if p.strip()]
    except ValueError:
        msg = f"--chunks expects N or NY,NX (integers), got {value!r}"
        raise argparse.ArgumentTypeError(msg) from None
    if len(nums) not in (1, 2) or min(nums) < 1:
        msg = f"--chunks expects N or NY,NX (positive integers), got {value!r}"
        raise argparse.ArgumentTypeError(msg)
    return nums[0] if len(nums) == 1 else (nums[0], nums[1])


def _workers(value: str) -> int:
    # A local cluster without workers would wait for one forever.
    try:
        count = int(value)
    except ValueError:
        count = 0
    if count < 1:
        msg = f"expects a number of worker processes, 1 or more, got {value!r}"
        raise argparse.ArgumentTypeError(msg)
    return count


def _dq_bits(value: str) -> int:
    # 0x... and 0b... as well as decimal: DQ flags are bit masks.
    try:
        return int(value, 0)
    except ValueError:
        msg = f"expects an integer bit mask such as 1 or 0x5, got {value!r}"
        raise argparse.ArgumentTypeError(msg) from None


def _add_execution(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="tcp://HOST:PORT of a running Dask scheduler, a scheduler file, or "
        "'threads' for no cluster (default: start a local cluster)",
    )
    p.add_argument(
        "--workers",
        type=_workers,
        metavar="N",
        help="start N worker processes for the local cluster (default: one "
        "worker in the tilesky process, one thread per core)",
    )
    p.add_argument(
        "--chunks",
        type=_chunks,
        metavar="N",
        help="tile size in pixels, N or NY,NX (rounded up to a multiple of "
        "the mesh boxes and the fit grid); default for `run`: whole multiples "
        "of the input's chunks about 2048 px a side, or one row band per "
        "thread when that gives fewer tiles than threads",
    )
    _add_storage_option(p)


def _add_storage_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--storage-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="fsspec option for URLs (repeatable), e.g. "
        "endpoint_url=http://127.0.0.1:9000",
    )


def _add_run_command(sub) -> None:
    run = sub.add_parser(
        "run",
        help="estimate the background of an image into a run store",
        description="Estimate the background of IN (Zarr, FITS, path or URL) and "
        "write background, background_rms, mask, subtracted and the mesh maps to the "
        "Zarr group OUT.",
    )
    run.add_argument("input", metavar="IN")
    run.add_argument("output", metavar="OUT")
    run.add_argument("--config", metavar="FILE.toml", help="configuration file")
    run.add_argument(
        "--preset",
        metavar="NAME",
        help="starting configuration: 'default', 'notebook', or 'sextractor' "
        "(SExtractor's background as SEP computes it; --set box_size, "
        "filter_size, filter_threshold, dq_bits)",
    )
    run.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        dest="overrides",
        help="override one parameter, e.g. final_mesh.box_size=8 (repeatable)",
    )
    run.add_argument(
        "--variable",
        metavar="NAME",
        help="array of a Zarr group to read (default: the scene)",
    )
    run.add_argument("--hdu", metavar="N|NAME", help="FITS HDU index or EXTNAME")
    run.add_argument(
        "--dq-bits",
        type=_dq_bits,
        metavar="BITS",
        help="DQ bits that make a pixel of a survey product unusable, e.g. 1 "
        "(same as --set dq_bits=BITS; default: DO_NOT_USE for JWST, any flag "
        "otherwise)",
    )
    run.add_argument(
        "--mask",
        metavar="FILE",
        help="user mask (FITS/Zarr, same shape; non-zero = ignore the pixel)",
    )
    run.add_argument(
        "--weight",
        metavar="FILE",
        help="weight or exposure map (same shape; zero = no coverage)",
    )
    run.add_argument(
        "--overwrite", action="store_true", help="replace OUT if it exists"
    )
    run.add_argument(
        "--resume",
        action="store_true",
        help="continue an unfinished run in OUT, recomputing only what is missing",
    )
    run.add_argument(
        "--report",
        metavar="DIR",
        help="write the report here (default: OUT's name + _report beside a local "
        "OUT; none for a URL)",
    )
    run.add_argument("--no-report", action="store_true", help="do not write the report")
    run.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="show progress bars on stderr (default: when stderr is a terminal)",
    )
    _add_execution(run)


def _add_sim_command(sub) -> None:
    sim = sub.add_parser(
        "simulate",
        help="make the reference notebook's scene (with its truth) at any size",
        description="Write a simulated scene (gradient + sinc blemishes + noise + "
        "Gaussian sources), its truth, the noisy sky and the source catalogue to a "
        "Zarr group, tile by tile.",
    )
    sim.add_argument("output", metavar="OUT.zarr", help="Zarr group to write")
    sim.add_argument(
        "--shape",
        type=int,
        nargs=2,
        default=[2000, 2000],
        metavar=("NY", "NX"),
        help="image shape in pixels (default: %(default)s)",
    )
    sim.add_argument(
        "--seed",
        type=int,
        default=4,
        help="random seed of the scene: same seed, same scene (default: %(default)s)",
    )
    sim.add_argument(
        "--overwrite",
        action="store_true",
        help="replace OUT if it is a tilesky store or an empty directory",
    )
    _add_execution(sim)


def _add_report_command(sub) -> None:
    report = sub.add_parser(
        "report",
        help="plots and an HTML page of a finished run",
        description="Write PNG figures (background, mask, residual, RMS versus scale, "
        "residual versus flux and radius) and report.html for the run store RUN.",
    )
    report.add_argument("run", metavar="RUN.zarr")
    report.add_argument(
        "--out", metavar="DIR", help="output directory (default: RUN's name + _report)"
    )
    _add_storage_option(report)


def _add_export_command(sub) -> None:
    export = sub.add_parser(
        "export",
        help="write a finished run's maps as FITS files with the input's header",
        description="Write background.fits, rms.fits, mask.fits and subtracted.fits "
        "from the run store RUN into DIR, band by band, with the input's "
        "observation keywords, its celestial WCS and tilesky's provenance "
        "(TSKYVER, TSKYCFG, HISTORY).",
    )
    export.add_argument("run", metavar="RUN.zarr", help="a finished run store")
    export.add_argument(
        "--fits",
        required=True,
        metavar="DIR",
        dest="fits_dir",
        help="directory for the FITS files (created if missing)",
    )
    export.add_argument(
        "--overwrite", action="store_true", help="replace existing FITS files in DIR"
    )
    _add_storage_option(export)


def _add_validate_command(sub) -> None:
    from tilesky.validate import add_arguments as _validate_arguments

    validate = sub.add_parser(
        "validate",
        help="injection check of a finished run on its own image",
        description="Inject a smooth pattern and faint exponential disks into RUN's "
        "input, rerun its configuration on its tiles, and report the pattern's "
        "recovery error (noise sigma) and the disks' flux kept.",
    )
    _validate_arguments(validate)
    _add_storage_option(validate)


def _add_demo_command(sub) -> None:
    demo = sub.add_parser(
        "demo",
        help="simulate the notebook scene and run the pipeline on it",
        description="Simulate the notebook scene (2000x2000, seed 4) to "
        "DIR/demo_input.zarr, run the default pipeline on a local cluster into "
        "DIR/demo.zarr.",
    )
    demo.add_argument(
        "--dir",
        default=".",
        metavar="DIR",
        help="directory for the demo's input, run and report (default: %(default)s)",
    )
    demo.add_argument(
        "--size",
        type=int,
        default=2000,
        metavar="N",
        help="the scene is N x N pixels (default: %(default)s)",
    )
    demo.add_argument(
        "--seed",
        type=int,
        default=4,
        help="random seed of the scene (default: %(default)s)",
    )
    _add_execution(demo)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tilesky",
        description="Tiled sky-background estimation for large astronomical images.",
    )
    parser.add_argument("--version", action="version", version=f"tilesky {__version__}")
    parser.add_argument(
        "--debug", action="store_true", help="show tracebacks and debug logging"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    _add_run_command(sub)
    _add_sim_command(sub)
    _add_report_command(sub)
    _add_export_command(sub)
    _add_validate_command(sub)
    _add_demo_command(sub)
    return parser


def _say(msg: str) -> None:
    print(msg, file=sys.stderr)


def _announce_compiling() -> None:
    """Say so when this run compiles the numba kernels (a cold cache)."""
    from tilesky.kernels._cache import kernels_cache_cold

    if kernels_cache_cold():
        _say("tilesky: compiling kernels (first run only)...")


def _storage_options(args) -> dict:
    from tilesky.io import parse_storage_options

    return parse_storage_options(args.storage_option)


def _cmd_run(args) -> int:
    from tilesky._dispatch import resolve_config, run_to_store
    from tilesky._progress import show_progress
    from tilesky.cluster import execution

    overrides = list(args.overrides)
    if args.dq_bits is not None:
        overrides.append(f"dq_bits={args.dq_bits}")
    if args.preset == "sextractor":
        from tilesky.sextractor_mode import SExtractorParams, run_sextractor

        if args.config:
            from tilesky.errors import ConfigError

            msg = "the sextractor preset takes no --config file; use --set KEY=VALUE"
            raise ConfigError(msg)
        params = SExtractorParams.from_overrides(overrides)
        estimate = functools.partial(run_sextractor, params=params)
    else:
        cfg = resolve_config(args.config, preset=args.preset, overrides=overrides)
        estimate = functools.partial(run_to_store, config=cfg)
    opts = _storage_options(args)
    hdu = args.hdu
    if hdu is not None and hdu.isdigit():
        hdu = int(hdu)
    progress = sys.stderr.isatty() if args.progress is None else args.progress
    start = time.perf_counter()
    from tilesky.io import strip_credentials

    shown = strip_credentials(args.output)
    report_dir = _report_dir(args.output, args.report)
    _refuse_existing_output(args, opts)
    with (
        execution(args.scheduler, n_workers=args.workers, announce=_say),
        show_progress(progress),
    ):
        _resume_gc()
        _announce_compiling()
        run = estimate(
            args.input,
            args.output,
            chunks=args.chunks,
            overwrite=args.overwrite,
            resume=args.resume,
            variable=args.variable,
            hdu=hdu,
            mask=args.mask,
            weight=args.weight,
            storage_options=opts,
            out_storage_options=opts,
        )
        if not run.computed:
            _say(f"tilesky: {shown} is already complete; nothing to do")
            return 0
        _say(
            f"tilesky: wrote {shown} in {time.perf_counter() - start:.1f} s "
            f"({run.blocks_written} blocks written, {run.blocks_skipped} reused)"
        )
        from tilesky._trust import trust_check

        trust = trust_check(run.metrics)
        if not trust["trusted"]:
            _say(f"tilesky: warning: {trust['message']}")
        if report_dir is not None and not args.no_report:
            # Still on the cluster: block means for the figures run there, and
            # the per-source points of the metrics pass are reused.
            try:
                html = _write_report(args.output, report_dir, opts, points=run.points)
            except ImportError as exc:
                # The run itself is complete; only the figures are missing.
                _say(f"tilesky: no report ({exc}); install tilesky[plots]")
            else:
                _say(f"tilesky: report: {html}")
    return 0


def _report_dir(output: str, requested: str | None) -> Path | None:
    """Where ``run`` writes its report: beside a local store, or as asked."""
    from tilesky.io import is_url

    if requested:
        return Path(requested)
    if is_url(output):
        return None
    out = Path(output)
    stem = out.name[: -len(".zarr")] if out.name.endswith(".zarr") else out.name
    return out.parent / f"{stem}_report"


def _write_report(run: str, out_dir: Path, opts: dict, points=None) -> Path:
    from tilesky._inputs import simulation_reference
    from tilesky.report import write_report
    from tilesky.store import open_run

    _resume_gc()
    ds = open_run(run, storage_options=opts or None)
    source = ds.attrs.get("input", {}).get("source")
    ref = simulation_reference(
        source, chunks=ds.background.data.chunks, storage_options=opts or None
    )
    return write_report(
        ds,
        out_dir,
        truth=ref.get("truth"),
        sky=ref.get("sky"),
        catalogue=ref.get("catalogue"),
        metrics=ds.attrs.get("metrics"),
        points=points,
    )


def _cmd_report(args) -> int:
    from tilesky.errors import StoreError

    opts = _storage_options(args)
    out = Path(args.out) if args.out else _report_dir(args.run, None)
    if out is None:
        msg = "give --out DIR for the report of a run stored at a URL"
        raise StoreError(msg)
    html = _write_report(args.run, out, opts)
    _say(f"tilesky: report: {html}")
    return 0


def _refuse_existing_output(args, opts: dict) -> None:
    """Refuse an existing OUT before a cluster starts (the store would, later).

    Without --overwrite or --resume, any existing path is refused; the
    store's own checks still run, for the cases this one lets through.
    """
    if args.overwrite or args.resume:
        return
    import fsspec

    from tilesky.errors import OutputExistsError, TileskyError
    from tilesky.io import strip_credentials
    from tilesky.store import run_status

    shown = strip_credentials(args.output)
    try:
        status = run_status(args.output, storage_options=opts)
    except TileskyError:  # unreadable: the run reports it, naming the input first
        return
    if status == "complete":
        msg = f"output {shown!r} already exists (a finished run); pass overwrite=True"
        raise OutputExistsError(msg, params="overwrite")
    if status is not None:
        msg = (
            f"output {shown!r} already exists (an unfinished run); pass resume=True "
            "to continue it or overwrite=True to replace it"
        )
        raise OutputExistsError(msg, params=("resume", "overwrite"))
    try:
        fs, path = fsspec.core.url_to_fs(args.output, **opts)
        exists = fs.exists(path)
    except Exception:  # the store says what is wrong with the URL
        return
    if exists:
        msg = (
            f"output {shown!r} exists and is not a tilesky run; "
            "choose another path or pass overwrite=True"
        )
        raise OutputExistsError(msg, params="overwrite")


def _cmd_simulate(args) -> int:
    from tilesky.cluster import execution
    from tilesky.simulate import write_simulation
    from tilesky.simulate._scene import _check_target

    opts = _storage_options(args)
    # Before the cluster starts: an existing OUT is refused in a second.
    try:
        _check_target(args.output, opts or None, args.overwrite)
    except FileExistsError as exc:
        from tilesky.errors import OutputExistsError

        raise OutputExistsError(str(exc), params="overwrite") from None
    start = time.perf_counter()
    with execution(args.scheduler, n_workers=args.workers, announce=_say):
        _resume_gc()
        write_simulation(
            args.output,
            shape=tuple(args.shape),
            seed=args.seed,
            chunks=args.chunks or 1000,
            storage_options=opts or None,
            overwrite=args.overwrite,
        )
    _say(
        f"tilesky: simulated {args.shape[0]}x{args.shape[1]} scene (seed {args.seed}) "
        f"to {args.output} in {time.perf_counter() - start:.1f} s"
    )
    return 0


def _cmd_demo(args) -> int:
    from tilesky._dispatch import resolve_config, run_to_store
    from tilesky.cluster import execution
    from tilesky.simulate import write_simulation

    out_dir = Path(args.dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    scene = out_dir / "demo_input.zarr"
    run = out_dir / "demo.zarr"
    cfg = resolve_config(None)
    start = time.perf_counter()
    with execution(args.scheduler, n_workers=args.workers, announce=_say):
        _resume_gc()
        write_simulation(
            str(scene),
            shape=(args.size, args.size),
            seed=args.seed,
            chunks=args.chunks or 1000,
            overwrite=True,
        )
        _say(f"tilesky: simulated the notebook scene to {scene}")
        _announce_compiling()
        result = run_to_store(
            str(scene), str(run), config=cfg, chunks=args.chunks, overwrite=True
        )
        _say(f"tilesky: wrote {run} in {time.perf_counter() - start:.1f} s")
        html = _write_report(
            str(run), out_dir / "demo_report", {}, points=result.points
        )
    import xarray as xr

    ds = xr.open_zarr(str(run), consolidated=True)
    _say(_summary(ds.attrs.get("metrics", {})))
    _say(f"tilesky: report: {html}")
    return 0


def _summary(metrics: dict) -> str:
    """One line of the numbers a user looks at first."""
    parts = []
    truth = (metrics or {}).get("truth") or {}
    full = truth.get("all") or truth.get("full") or {}
    if isinstance(full, dict) and full.get("std") is not None:
        parts.append(f"residual RMS vs truth {full['std']:.5f}")
    bias = (metrics or {}).get("bias") or {}
    if bias.get("z") is not None:
        parts.append(f"masked-unmasked bias z = {bias['z']:.2f}")
    return "tilesky: " + ("; ".join(parts) if parts else "metrics in the run store")


def _cmd_export(args) -> int:
    from tilesky.export import export_fits

    _resume_gc()
    paths = export_fits(
        args.run,
        args.fits_dir,
        overwrite=args.overwrite,
        storage_options=_storage_options(args) or None,
    )
    _say(f"tilesky: wrote {', '.join(str(p) for p in paths)}")
    return 0


def _cmd_validate(args) -> int:
    from tilesky.validate import run_cli

    _resume_gc()
    return run_cli(args, _say, _storage_options(args) or None)


_COMMANDS = {
    "run": _cmd_run,
    "validate": _cmd_validate,
    "simulate": _cmd_simulate,
    "demo": _cmd_demo,
    "export": _cmd_export,
    "report": _cmd_report,
}


_gc_paused = False


def _resume_gc() -> None:
    """Turn the collector back on, with everything imported so far frozen.

    The ``tilesky`` command starts with garbage collection off: importing
    dask, distributed, bokeh, pandas and numba allocates about a million
    long-lived objects, and each full collection during start-up and the run
    walks all of them again (~0.5 s of a 5 s run on the 2-core test machine).
    Frozen, they are skipped; cyclic garbage made afterwards is still
    collected.
    """
    global _gc_paused
    if _gc_paused:
        _gc_paused = False
        gc.freeze()
        gc.enable()


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``tilesky`` command.

    Parameters
    ----------
    argv : list of str, optional
        The arguments after the program name; None: ``sys.argv[1:]``.

    Returns
    -------
    int
        The exit code (0 on success).
    """
    global _gc_paused
    if argv is None and gc.isenabled():
        gc.disable()
        _gc_paused = True
    try:
        code = _main(argv)
    finally:
        _resume_gc()
    if argv is None:
        # The process is about to exit: without this, the interpreter's final
        # collections walk every object a run left (dask graphs, numba and
        # LLVM state), ~0.7 s of a 5 s run on the 2-core test machine. Files
        # are flushed and atexit handlers run as usual.
        gc.freeze()
    return code


def _main(argv: list[str] | None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("tilesky: %(message)s"))
    for old in list(log.handlers):
        # main() may be called more than once in a process (tests, notebooks).
        log.removeHandler(old)
    log.addHandler(handler)
    log.setLevel(logging.DEBUG if args.debug else logging.WARNING)
    log.propagate = False
    # distributed reports worker shutdowns at WARNING; they are not news here.
    logging.getLogger("distributed").setLevel(
        logging.INFO if args.debug else logging.ERROR
    )
    from tilesky._dashboard_logs import quiet_dashboard_logs

    quiet_dashboard_logs(not args.debug)
    from tilesky.errors import USER_ERRORS

    try:
        return _COMMANDS[args.command](args)
    except USER_ERRORS as exc:
        if args.debug:
            raise
        _say(f"tilesky: error: {_user_message(exc)}{_access_hint(exc, args)}")
        return 1
    except KeyboardInterrupt:
        _say("tilesky: interrupted; an unfinished run can be continued with --resume")
        return 130
    except Exception as exc:
        if args.debug:
            raise
        _say(
            f"tilesky: internal error: {type(exc).__name__}: {_one_line(exc)} "
            "(run with --debug for the traceback)"
        )
        return 1


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return " ".join(text.split())


#: The flag that sets each library parameter an error message may name.
_FLAGS = {
    "chunks": "--chunks",
    "hdu": "--hdu",
    "n_workers": "--workers",
    "overrides": "--set",
    "overwrite": "--overwrite",
    "resume": "--resume",
    "scheduler": "--scheduler",
    "variable": "--variable",
}


def _user_message(exc: BaseException) -> str:
    """The error's one line, naming this command's flags, not parameters.

    A :class:`~tilesky.errors.TileskyError` lists in ``params`` the
    parameters its message names, spelled ``name=value``, ``name=True``,
    ``name=`` or ``name``: they become ``--flag value``, ``--flag``,
    ``--flag`` and ``--flag``.
    """
    text = _one_line(exc)
    for name in getattr(exc, "params", ()):
        flag = _FLAGS.get(name)
        if flag is None:
            continue

        def spell(match: re.Match, flag: str = flag) -> str:
            # A value right after "=" stays, as the flag's argument.
            return flag + (" " if match.group(1) else "")

        # Not inside a longer name, a dotted key or a flag: "ring.width",
        # "tilesky_default_variable" and "--scheduler" stay as they are.
        pattern = (
            rf"(?<![\w.-]){re.escape(name)}"
            r"(?:=True\b|(=)(?=[^\s;,.)])|=|(?![\w=]))"
        )
        text = re.sub(pattern, spell, text)
    return text


def _access_hint(exc: BaseException, args) -> str:
    """What to check when an object store refused a request.

    S3 answers a wrong secret or an unknown key with a bare 403 ("Forbidden"
    on HEAD requests), which fsspec raises as PermissionError, possibly
    wrapped by the reader or the store.
    """
    from tilesky.io import is_url

    paths = [getattr(args, name, None) for name in ("input", "output")]
    if not any(is_url(p) for p in paths if p):
        return ""
    seen: set[int] = set()
    err: BaseException | None = exc
    while err is not None and id(err) not in seen:
        if isinstance(err, PermissionError):
            return (
                "; access was refused: check the credentials (AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY, or --storage-option key=... and secret=...) "
                "and the endpoint"
            )
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return ""


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

"""The ``medsat-sr`` command.

Exit codes: 0 success; 1 unexpected internal error; 2 bad input, bad
options or bad configuration (any :class:`~medsat_sr.errors.MedsatError`
except write failures); 3 an output could not be written; 4 ``batch``
only: the batch ran but at least one input failed (the failed inputs are
listed on stderr and in ``OUT_DIR/batch.jsonl``); 130 interrupted.
Errors print one line, ``medsat-sr: error: <file>: <problem>``; ``--debug``
adds the traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from medsat_sr._version import __version__
from medsat_sr.errors import MedsatError, WriteError

__all__ = ["main", "build_parser"]

log = logging.getLogger("medsat_sr")

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_BAD_INPUT = 2
EXIT_WRITE = 3
EXIT_PARTIAL = 4  # batch: some inputs failed
EXIT_INTERRUPTED = 130


def _reader_options(args: argparse.Namespace) -> dict[str, object]:
    opts: dict[str, object] = {}
    if getattr(args, "series", None):
        opts["series"] = args.series
    if getattr(args, "volume", None) is not None:
        opts["volume"] = args.volume
    if getattr(args, "resample", False):
        opts["resample"] = True
    return opts


def cmd_info(args: argparse.Namespace) -> int:
    """``medsat-sr info PATH``."""
    from medsat_sr.info import describe, format_description

    d = describe(args.path, **_reader_options(args))
    if args.json:
        print(json.dumps(d, indent=2, default=str))
    else:
        print(format_description(d))
    return EXIT_OK


def cmd_convert(args: argparse.Namespace) -> int:
    """``medsat-sr convert INPUT -o OUTPUT``."""
    from medsat_sr.io import output_format, read, write

    fmt = output_format(args.output, args.format)  # validate before the (slow) read
    image = read(args.input, **_reader_options(args))
    opts: dict[str, object] = {}
    if args.dtype != "source":
        opts["dtype"] = args.dtype
    out = write(image, args.output, format=fmt, **opts)
    log.info("wrote %s", out)
    if not args.quiet:
        print(out)
    return EXIT_OK


def cmd_train(args: argparse.Namespace) -> int:
    """``medsat-sr train --config CFG -o RUN_DIR``."""
    from medsat_sr.config import load_config

    overrides = list(args.set or [])
    if args.init:
        base = load_config(args.config, [o for o in overrides if o.replace(" ", "").startswith("train.mode=")])
        if base.train.mode != "finetune":  # --init means: start from this checkpoint
            overrides.append("train.mode=finetune")
            if base.train.mode == "supervised":
                overrides.append("train.finetune_pairs=supervised")
        overrides.append(f"train.init={args.init}")
    cfg = load_config(args.config, overrides)
    if args.dry_run:
        print(cfg.to_yaml(), end="")
        return EXIT_OK
    cfg.check_runnable("train")
    from medsat_sr.train import train

    result = train(cfg, args.output, resume=args.resume, progress=not args.quiet, device=args.device)
    if not args.quiet:
        print(f"best checkpoint: {result.best_path}")
        print(f"last checkpoint: {result.last_path}")
        print(
            f"validation PSNR {result.val_psnr:.3f} dB vs cubic {result.val_psnr_cubic:.3f} dB "
            f"({result.gain_db:+.3f} dB) after {result.iterations} iterations, {result.seconds:.0f} s "
            f"(stopped by {result.stopped_by})"
        )
    return EXIT_OK


def _numbers(text: str | None, option: str) -> float | list[float] | None:
    """``"2"`` -> 2.0, ``"1,1,4"`` -> [1.0, 1.0, 4.0]; anything else is a ConfigError naming the option."""
    if text is None:
        return None
    from medsat_sr.errors import ConfigError

    try:
        vals = [float(v) for v in str(text).split(",")]
    except ValueError:
        raise ConfigError(f"{option}: expected a number or a comma list such as 1,1,4, got {text!r}") from None
    return vals[0] if len(vals) == 1 else vals


def cmd_upscale(args: argparse.Namespace) -> int:
    """``medsat-sr upscale INPUT -o OUTPUT`` with one of --config, --model, --method."""
    from medsat_sr.errors import ConfigError
    from medsat_sr.inference import upscale

    given = [name for name, v in (("--config", args.config), ("--model", args.model), ("--method", args.method)) if v]
    if len(given) != 1:
        raise ConfigError(
            "give exactly one of --config CFG, --model CKPT (repeatable) or --method cubic|linear|nearest|lanczos"
            + (f"; got {' and '.join(given)}" if given else "")
        )
    weights: object = None
    if args.weights:
        weights = args.weights if args.weights in ("equal", "lstsq", "softmax") else _numbers(args.weights, "--weights")
        if isinstance(weights, float):
            weights = [weights]
    tile = _numbers(args.tile_size, "--tile-size")
    if tile is not None:
        tile = [int(v) for v in tile] if isinstance(tile, list) else int(tile)
    models = list(args.model or [])
    result = upscale(
        args.input,
        output=args.output,
        model=models[0] if len(models) == 1 else None,
        models=models if len(models) > 1 else None,
        weights=weights,
        method=args.method,
        scale=_numbers(args.scale, "--scale"),
        target_spacing=_numbers(args.target_spacing, "--target-spacing"),
        config=args.config,
        overrides=list(args.set or []),
        precision=args.precision,
        tta=True if args.tta else None,
        uncertainty=True if args.uncertainty else None,
        device=args.device,
        tile_size=tile,
        dtype=args.dtype,
        format=args.format,
        cog=True if args.cog else None,
        force=True if args.force else None,
        series_description=args.series_description,
        read_options=_reader_options(args),
        run_dir=args.run_dir,
        progress=not args.quiet,
    )
    log.info("wrote %s", result.output)
    if not args.quiet:
        for p in (result.output, result.std_output, result.sidecar):
            if p is not None:
                print(p)
    return EXIT_OK


def cmd_batch(args: argparse.Namespace) -> int:
    """``medsat-sr batch [--config CFG] INPUT... -o OUT_DIR``: many inputs, resumable, on Dask."""
    from medsat_sr.batch import failure_text, run_batch
    from medsat_sr.errors import ConfigError

    if not args.inputs and not args.manifest:
        raise ConfigError("no inputs: give files, folders or glob patterns, or --manifest CSV")
    result = run_batch(
        args.inputs,
        args.output,
        config=args.config,
        overrides=list(args.set or []),
        manifest=args.manifest,
        models=list(args.model or []),
        method=args.method,
        scale=_numbers(args.scale, "--scale"),
        read_options=_reader_options(args),
        workers=args.workers,
        scheduler=args.scheduler,
        torch_threads=args.torch_threads,
        force=args.force,
        dry_run=args.dry_run,
        progress=not args.quiet,
    )
    if args.dry_run:
        for it in result.items:
            what = it.get("output") or it.get("error")
            extra = f" ({it['reason']})" if it.get("reason") else ""
            print(f"{it['status']:6s} {it['input']} -> {what}{extra}")
        return EXIT_OK
    fallbacks = sum(1 for it in result.items if it["fallback"])
    if not args.quiet:
        print(
            f"batch: {result.done} done, {result.skipped} skipped, {result.failed} failed of {len(result.items)} inputs "
            f"in {result.seconds:.1f} s" + (f"; {fallbacks} fell back to cubic" if fallbacks else "")
            + f"; run manifest {result.manifest}"
        )
    if result.failed:
        print(f"medsat-sr: error: {result.failed} of {len(result.items)} inputs failed:", file=sys.stderr)
        for it in result.failures:
            print(f"  {failure_text(it)}", file=sys.stderr)
        return EXIT_PARTIAL
    return EXIT_OK


def cmd_evaluate(args: argparse.Namespace) -> int:
    """``medsat-sr evaluate --config CFG REFERENCE... -o REPORT_DIR``: the protocol of DESIGN.md section 5."""
    from medsat_sr.errors import ConfigError
    from medsat_sr.evaluate import evaluate

    pairs = [tuple(p) for p in (args.pair or [])]
    if not args.references and not pairs:
        raise ConfigError("nothing to evaluate: give high-resolution REFERENCE files or --pair LR HR")
    holdout = None
    if args.holdout is not None:
        try:
            holdout = float(args.holdout)
        except ValueError:
            raise ConfigError(f"--holdout: expected a fraction in [0, 1), got {args.holdout!r}") from None
    ev = evaluate(
        args.references,
        args.config,
        pairs=pairs,
        methods=args.methods,
        models=list(args.model or []),
        overrides=list(args.set or []),
        scale=_numbers(args.scale, "--scale"),
        holdout=holdout,
        output=args.output,
        run_dir=args.run_dir,
        figures=not args.no_figures,
        progress=not args.quiet,
        title=args.title,
    )
    if not args.quiet:
        for f in ev.files:
            print(f"{f.name} ({f.case.kind}, x{'/'.join(f'{v:g}' for v in f.case.factors)}):")
            for m, r in f.methods.items():
                gain = r.get("psnr_masked_gain_vs_cubic")
                g = f" ({gain:+.2f} dB vs cubic)" if m != "cubic" and isinstance(gain, float) else ""
                print(
                    f"  {m:<16} PSNR {r['psnr']:7.3f} dB, masked {r['psnr_masked']:7.3f} dB{g}, "
                    f"SSIM {r['ssim']:.4f}, {r['seconds']:.1f} s, peak {r['peak_rss_mb']:.0f} MiB"
                )
        print(f"report: {Path(args.output) / 'report.html'}")
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    """``medsat-sr demo [-o DIR]``: the main job end to end on the built-in samples, offline."""
    from medsat_sr.demo import run_demo

    run_demo(args.output, minutes=args.minutes, progress=not args.quiet, dicom=not args.no_dicom,
             echo=None if args.quiet else print)
    return EXIT_OK


def _add_reader_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("DICOM options")
    g.add_argument("--series", metavar="UID|N", help="which series to read when a folder holds several (see `info`)")
    g.add_argument("--volume", type=int, metavar="K", help="read only volume K (0-based) of a 4D series")
    g.add_argument(
        "--resample",
        action="store_true",
        help="resample tilted, unevenly spaced or gapped series onto a regular grid (as dcm2niix does) instead of refusing",
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``medsat-sr`` with all sub-commands."""
    def flags(default: object) -> argparse.ArgumentParser:
        # The sub-commands repeat the global flags with SUPPRESS defaults, so
        # `medsat-sr --debug info X` and `medsat-sr info X --debug` both work.
        p = argparse.ArgumentParser(add_help=False)
        p.add_argument("-q", "--quiet", action="store_true", default=default, help="print only errors")
        p.add_argument("-v", "--verbose", action="store_true", default=default, help="log debug messages")
        p.add_argument("--debug", action="store_true", default=default, help="show tracebacks on errors")
        return p

    common = flags(argparse.SUPPRESS)

    parser = argparse.ArgumentParser(
        prog="medsat-sr",
        description="Super-resolution of medical volumes and satellite imagery with exact geometry.",
        parents=[flags(False)],
    )
    parser.add_argument("--version", action="version", version=f"medsat-sr {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser(
        "info",
        parents=[common],
        help="show what the reader sees",
        description="Show what the reader sees: shape, spacing or pixel size, orientation or CRS, bands, "
        "dtype, nodata, intensity mapping; for a DICOM folder, every series found.",
    )
    p.add_argument("path", help="file or folder (DICOM series folder, NIfTI, GeoTIFF, band folder)")
    p.add_argument("--json", action="store_true", help="print JSON")
    _add_reader_args(p)
    p.set_defaults(func=cmd_info)

    p = sub.add_parser(
        "convert",
        parents=[common],
        help="convert between DICOM, NIfTI, GeoTIFF and COG",
        description="Convert through the in-memory image. The output format follows the suffix "
        "(.nii, .nii.gz, .tif, .tiff); a path with no suffix is a DICOM series folder (volumes) "
        "or a band folder (band sets).",
    )
    p.add_argument("input", help="input file or folder")
    p.add_argument("-o", "--output", required=True, help="output file or folder")
    p.add_argument("--format", choices=["nifti", "dicom", "geotiff", "cog"], help="override the suffix")
    p.add_argument(
        "--dtype",
        default="source",
        choices=["source", "float32"],
        help="output pixel type: the source dtype with its scaling (default) or float32",
    )
    _add_reader_args(p)
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser(
        "train",
        parents=[common],
        help="train a model (supervised, self-supervised or fine-tune)",
        description="Train as the config says (train.mode: supervised, self_supervised or finetune) into RUN_DIR: "
        "best/last checkpoints (safetensors + JSON), metrics.csv and curves.png. Fixed config keys: "
        "data.inputs, train.max_iterations, train.max_minutes, train.mode, model.name, scale.",
    )
    p.add_argument("--config", required=True, help="built-in config name or path of a .yaml config")
    p.add_argument("-o", "--output", required=True, metavar="RUN_DIR", help="run folder (created)")
    p.add_argument(
        "--set", action="append", metavar="KEY=VALUE", help="override a config key (repeatable), e.g. train.max_iterations=50"
    )
    p.add_argument("--init", metavar="CKPT", help="checkpoint to start from (finetune; same as --set train.init=CKPT)")
    p.add_argument("--resume", action="store_true", help="continue from RUN_DIR/last")
    p.add_argument("--dry-run", action="store_true", help="validate and print the fully resolved config; train nothing")
    p.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"], help="where to train (default cpu)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser(
        "upscale",
        parents=[common],
        help="super-resolve a volume or a raster (model, ensemble, self-supervised config or classical method)",
        description="Upscale INPUT (DICOM series folder, NIfTI, GeoTIFF or band folder) into OUTPUT with exactly one of "
        "--config (self-supervised: fit on the input, then apply), --model (repeatable: weighted ensemble) or --method. "
        "The output format follows the suffix (.nii, .nii.gz, .tif, .tiff); no suffix: a derived DICOM series "
        "(volumes) or a band folder (band sets). Rasters are streamed. A JSON trust record OUTPUT.json is written "
        "next to the output.",
    )
    p.add_argument("input", help="input file or folder")
    p.add_argument("-o", "--output", required=True, help="output file or folder")
    src_g = p.add_argument_group("what to upscale with (exactly one)")
    src_g.add_argument("--config", metavar="CFG", help="job config (built-in name or .yaml); self-supervised configs fit on INPUT first")
    src_g.add_argument("--model", metavar="CKPT", action="append", help="checkpoint (repeat for a weighted ensemble)")
    src_g.add_argument("--method", metavar="NAME", help="classical method: cubic, linear, nearest or lanczos")
    g = p.add_argument_group("options")
    g.add_argument("--scale", metavar="S", help="one factor or one per axis, e.g. 2 or 1,1,4 (default: the model's)")
    g.add_argument("--target-spacing", metavar="MM", help="volumes: output spacing in mm (one value or per axis)")
    g.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key (repeatable), e.g. inference.tile_size=256")
    g.add_argument("--precision", metavar="P", help="fp32, bf16 (autocast + channels-last) or auto (default: bf16 where the CPU/GPU runs it natively)")
    g.add_argument("--tta", action="store_true", help="self-ensemble over the flips/rotations the scale allows")
    g.add_argument("--uncertainty", action="store_true", help="also write the per-voxel std across members (<stem>_std)")
    g.add_argument("--weights", metavar="W", help="ensemble weights w1,w2,..., 'equal' (default), or fitted on a Wald split of the input: 'lstsq' or 'softmax' (over PSNR)")
    g.add_argument("--dtype", metavar="T", help="output pixel type: source (default) or float32")
    g.add_argument("--format", metavar="F", help="override the suffix: nifti, dicom, geotiff or cog")
    g.add_argument("--cog", action="store_true", help="write a Cloud-Optimised GeoTIFF")
    g.add_argument("--device", metavar="D", help="auto, cpu or cuda (default: the config's, else cpu)")
    g.add_argument("--force", action="store_true", help="keep the model's output even when it does not beat cubic")
    g.add_argument("--tile-size", metavar="N", help="tile size in input pixels/voxels (one value or per axis)")
    g.add_argument("--series-description", metavar="TEXT", help="DICOM output: SeriesDescription")
    g.add_argument("--run-dir", metavar="DIR", help="--config: keep the fit's checkpoints and curves here")
    _add_reader_args(p)
    p.set_defaults(func=cmd_upscale)

    p = sub.add_parser(
        "batch",
        parents=[common],
        help="upscale many inputs into a folder: resumable, failure-isolated, on Dask",
        description="Run one recipe over many inputs (files, folders = one DICOM series or band folder each, glob "
        "patterns, or --manifest CSV with per-row settings) into OUT_DIR. Output names come from "
        "output.name_template (default {stem}_sr{ext}). OUT_DIR/batch.jsonl gets one line per input per run. "
        "A rerun skips inputs whose output and sidecar match the input checksum and the config; --force redoes them. "
        "Exit 0 when every input succeeded, 4 when some failed (listed on stderr).",
    )
    p.add_argument("inputs", nargs="*", metavar="INPUT", help="files, folders or glob patterns (quote them)")
    p.add_argument("-o", "--output", required=True, metavar="OUT_DIR", help="output folder (created)")
    g = p.add_argument_group("what to run (--config, --model or --method; --config may join either)")
    g.add_argument("--config", metavar="CFG", help="job config (built-in name or .yaml): settings, output names; alone: self-supervised fit per input")
    g.add_argument("--model", metavar="CKPT", action="append", help="checkpoint (repeat for an equal-weight ensemble); loaded once per worker")
    g.add_argument("--method", metavar="NAME", help="classical method: cubic, linear, nearest or lanczos")
    g.add_argument("--scale", metavar="S", help="one factor or one per axis (default: the config's or the model's)")
    g.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key for every input (repeatable)")
    g.add_argument("--manifest", metavar="CSV", help="CSV with an 'input' column and optional output, scale, series, volume, resample, set or config-key columns")
    g = p.add_argument_group("execution")
    g.add_argument("--workers", type=int, default=0, metavar="N", help="0 (default): inline; N: a local Dask cluster of N processes")
    g.add_argument("--scheduler", metavar="ADDRESS", help="submit to an existing Dask scheduler, e.g. tcp://head:8786 (shared paths needed)")
    g.add_argument("--torch-threads", type=int, metavar="T", help="torch threads per worker (default: cores // N)")
    g.add_argument("--force", action="store_true", help="redo inputs whose outputs are already complete")
    g.add_argument("--dry-run", action="store_true", help="print what would run or be skipped; write nothing")
    _add_reader_args(p)
    p.set_defaults(func=cmd_batch)
    p = sub.add_parser(
        "evaluate",
        parents=[common],
        help="measure methods against high-resolution references (DESIGN.md section 5) and write a report",
        description="Degrade each high-resolution REFERENCE with the config's domain profile (the code that makes "
        "training pairs), or take explicit --pair LR HR images; upscale with every method (the profile's classical "
        "baselines always, plus --methods: cubic, linear, nearest, lanczos, model); score on the reference grid: PSNR "
        "(explicit data range, whole and masked), SSIM (3D and per slice for volumes), MAE, MSE, and for rasters "
        "per-band PSNR/RMSE, SAM and ERGAS; time and peak memory per method. 'model' is each --model checkpoint, or a "
        "self-supervised fit when the config's train.mode is self_supervised. REPORT_DIR gets metrics.json, "
        "metrics.csv, PNG figures and a self-contained report.html.",
    )
    p.add_argument("references", nargs="*", metavar="REFERENCE", help="high-resolution reference images")
    p.add_argument("--config", required=True, help="built-in config name or path of a .yaml config")
    p.add_argument("-o", "--output", required=True, metavar="REPORT_DIR", help="report folder (created)")
    p.add_argument("--methods", metavar="M1,M2", help="comma list: cubic, linear, nearest, lanczos, model (baselines always included)")
    p.add_argument("--model", metavar="CKPT", action="append", help="checkpoint to evaluate (repeatable)")
    p.add_argument("--pair", nargs=2, action="append", metavar=("LR", "HR"), help="explicit low/high-resolution pair on aligned grids (repeatable)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key (repeatable), e.g. train.max_minutes=3")
    p.add_argument("--scale", metavar="S", help="evaluation factor(s), e.g. 2 or 1,1,4 (default: the config's; thick slices on an isotropic reference: 4 along the inferior-superior axis)")
    p.add_argument("--holdout", metavar="F", help="rasters: right-hand fraction left out of a self-supervised fit and scored (default 0.5; 0: fit on the degraded input)")
    p.add_argument("--run-dir", metavar="DIR", help="where self-supervised fits keep checkpoints and curves (default REPORT_DIR/runs)")
    p.add_argument("--title", metavar="TEXT", help="title of report.html")
    p.add_argument("--no-figures", action="store_true", help="write the tables and the page without PNG figures")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser(
        "demo",
        parents=[common],
        help="run the main job end to end on the built-in real samples, offline",
        description="On the two real samples shipped in the package (an MR T1 template and a 4-band aerial scene; "
        "origin and licences in medsat_sr/samples/SOURCES.md): make a thick-slice scan and restore it by "
        "self-supervised SR (NIfTI and DICOM outputs), sharpen the scene x2 (COG output), and write an evaluation "
        "report against cubic. Prints the headline numbers and where everything went. Nothing is downloaded.",
    )
    p.add_argument("-o", "--output", default="medsat_sr_demo", metavar="DIR", help="output folder (default ./medsat_sr_demo)")
    from medsat_sr.demo import DEFAULT_MINUTES

    p.add_argument(
        "--minutes", type=float, default=DEFAULT_MINUTES, metavar="M",
        help=f"training minutes per sample (default {DEFAULT_MINUTES:g}; the whole demo takes about 2 x M + 1 minutes)",
    )
    p.add_argument("--no-dicom", action="store_true", help="skip the DICOM series output")
    p.set_defaults(func=cmd_demo)
    return parser


def _setup_logging(args: argparse.Namespace) -> None:
    level = logging.WARNING
    if getattr(args, "verbose", False):
        level = logging.DEBUG
    elif getattr(args, "quiet", False):
        level = logging.ERROR
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger("medsat_sr").setLevel(level)


def _one_line(message: str) -> str:
    """Fold a multi-line message (a list of candidates, say) into one line."""
    parts = [p.strip() for p in message.splitlines() if p.strip()]
    return parts[0] + (" " + "; ".join(parts[1:]) if len(parts) > 1 else "") if parts else message


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``medsat-sr``; return the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(args)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except KeyboardInterrupt:
        print("medsat-sr: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except MedsatError as exc:
        if args.debug:
            raise
        print(f"medsat-sr: error: {_one_line(str(exc))}", file=sys.stderr)
        return EXIT_WRITE if isinstance(exc, WriteError) else EXIT_BAD_INPUT
    except Exception as exc:  # noqa: BLE001 - last-resort handler of the CLI
        if args.debug:
            raise
        print(f"medsat-sr: internal error: {type(exc).__name__}: {exc} (rerun with --debug for details)", file=sys.stderr)
        return EXIT_INTERNAL


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

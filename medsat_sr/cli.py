"""The ``medsat-sr`` command.

Exit codes: 0 success; 1 unexpected internal error; 2 bad input, bad
options or bad configuration (any :class:`~medsat_sr.errors.MedsatError`
except write failures); 3 an output could not be written; 130 interrupted.
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

from medsat_sr import __version__
from medsat_sr.errors import MedsatError, WriteError

__all__ = ["main", "build_parser"]

log = logging.getLogger("medsat_sr")

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_BAD_INPUT = 2
EXIT_WRITE = 3
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
        base = load_config(args.config, overrides)
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
        weights = args.weights if args.weights in ("equal", "softmax") else _numbers(args.weights, "--weights")
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
    g.add_argument("--precision", metavar="P", help="fp32 or bf16 (autocast + channels-last on CPU)")
    g.add_argument("--tta", action="store_true", help="self-ensemble over the flips/rotations the scale allows")
    g.add_argument("--uncertainty", action="store_true", help="also write the per-voxel std across members (<stem>_std)")
    g.add_argument("--weights", metavar="W", help="ensemble weights w1,w2,... or 'equal' or 'softmax' (over the checkpoints' validation PSNR)")
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

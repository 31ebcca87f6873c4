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
    return parser


def _setup_logging(args: argparse.Namespace) -> None:
    level = logging.WARNING
    if getattr(args, "verbose", False):
        level = logging.DEBUG
    elif getattr(args, "quiet", False):
        level = logging.ERROR
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger("medsat_sr").setLevel(level)


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
        print(f"medsat-sr: error: {exc}", file=sys.stderr)
        return EXIT_WRITE if isinstance(exc, WriteError) else EXIT_BAD_INPUT
    except Exception as exc:  # noqa: BLE001 - last-resort handler of the CLI
        if args.debug:
            raise
        print(f"medsat-sr: internal error: {type(exc).__name__}: {exc} (rerun with --debug for details)", file=sys.stderr)
        return EXIT_INTERNAL


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

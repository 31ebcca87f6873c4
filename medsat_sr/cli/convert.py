"""``medsat-sr convert INPUT -o OUTPUT``: between DICOM, NIfTI, GeoTIFF and COG."""

from __future__ import annotations

import argparse
import logging
from typing import Any

from medsat_sr.cli import EXIT_OK
from medsat_sr.cli.options import add_reader_flags, reader_options

HELP = "convert between DICOM, NIfTI, GeoTIFF and COG"

log = logging.getLogger("medsat_sr")


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``convert`` command to ``subparsers``."""
    p = subparsers.add_parser(
        "convert",
        help=HELP,
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
    add_reader_flags(p)
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Read ``args.input`` and write it to ``args.output``; return the exit code."""
    from medsat_sr.io import output_format, read, write

    from medsat_sr.errors import ConfigError
    from medsat_sr.io import VOLUME_FORMATS, detect_format

    fmt = output_format(args.output, args.format)  # validate before the (slow) read
    volume_in, volume_out = detect_format(args.input) in VOLUME_FORMATS, fmt in VOLUME_FORMATS
    if fmt != "dicom" and volume_in != volume_out:  # no suffix: a DICOM series for a volume, a band folder for bands
        kind, to = ("volume", ".nii.gz or a folder (DICOM series)") if volume_in else ("raster", ".tif (--format cog)")
        raise ConfigError(f"{args.output}: {args.input} is a {kind}; write it as {to}")
    image = read(args.input, **reader_options(args))
    opts: dict[str, object] = {}
    if args.dtype != "source":
        opts["dtype"] = args.dtype
    out = write(image, args.output, format=fmt, **opts)
    log.info("wrote %s", out)
    if not args.quiet:
        print(out)
    return EXIT_OK

"""``medsat-sr info PATH``: what the reader sees."""

from __future__ import annotations

import argparse
import json
from typing import Any

from medsat_sr.cli import EXIT_OK
from medsat_sr.cli.options import add_reader_flags, reader_options

HELP = "show what the reader sees"


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``info`` command to ``subparsers``."""
    p = subparsers.add_parser(
        "info",
        help=HELP,
        description="Show what the reader sees: shape, spacing or pixel size, orientation or CRS, bands, "
        "dtype, nodata, intensity mapping; for a DICOM folder, every series found.",
    )
    p.add_argument("path", help="file or folder (DICOM series folder, NIfTI, GeoTIFF, JPEG 2000, VRT, band folder, "
                                "Sentinel-2 .SAFE)")
    p.add_argument("--json", action="store_true", help="print JSON")
    add_reader_flags(p)
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Print the description of ``args.path``; return the exit code."""
    from medsat_sr.info import describe, format_description

    d = describe(args.path, **reader_options(args))
    if args.json:
        print(json.dumps(d, indent=2, default=str))
    else:
        print(format_description(d))
    return EXIT_OK

"""``medsat-sr demo [-o DIR]``: the main job end to end on the built-in samples, offline."""

from __future__ import annotations

import argparse
from typing import Any

from medsat_sr.cli import EXIT_OK

HELP = "run the main job end to end on the built-in real samples, offline"


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``demo`` command to ``subparsers`` (imports :mod:`medsat_sr.demo` for its default budget: numpy, no torch)."""
    from medsat_sr.demo import DEFAULT_MINUTES

    p = subparsers.add_parser(
        "demo",
        help=HELP,
        description="On the two real samples shipped in the package (an MR T1 template and a 4-band aerial scene; "
        "origin and licences in medsat_sr/samples/SOURCES.md): make a thick-slice scan and restore it by "
        "self-supervised SR (NIfTI and DICOM outputs), sharpen the scene x2 (COG output), and write an evaluation "
        "report against cubic. Prints the headline numbers and where everything went. Nothing is downloaded.",
    )
    p.add_argument("-o", "--output", metavar="DIR",
                   help="output folder (default: a new medsat_sr_demo_* folder in the system's temporary folder)")
    p.add_argument(
        "--minutes",
        type=float,
        default=DEFAULT_MINUTES,
        metavar="M",
        help=f"training minutes per sample (default {DEFAULT_MINUTES:g}; the whole demo takes about 2 x M + 1 minutes)",
    )
    p.add_argument("--no-dicom", action="store_true", help="skip the DICOM series output")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Run the demo into ``args.output``; return the exit code."""
    from medsat_sr.demo import run_demo
    from medsat_sr.hardware import tune_allocator

    tune_allocator()  # its first sample is a volume (see medsat_sr.cli.upscale._tune_allocator_for)
    run_demo(args.output, minutes=args.minutes, progress=not args.quiet, dicom=not args.no_dicom,
             echo=None if args.quiet else print)
    return EXIT_OK

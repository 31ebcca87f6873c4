"""``medsat-sr upscale INPUT -o OUTPUT``: one of --config, --model (repeatable) or --method.

The option flags (``--tile-size``, ``--precision``, ``--tta``, ``--uncertainty``,
``--device``, ``--force``, ``--dtype``, ``--format``, ``--cog``) come from the
one options model, :mod:`medsat_sr.inference.options`: their names, choices,
defaults and help are declared there, and :func:`run` passes the ones given
to :func:`medsat_sr.inference.upscale` as keyword arguments.
"""

from __future__ import annotations

import argparse
import logging
from typing import Any

from medsat_sr.cli import EXIT_OK
from medsat_sr.cli.options import (
    add_config,
    add_method,
    add_model,
    add_reader_flags,
    add_scale,
    add_set,
    numbers,
    reader_options,
)

HELP = "super-resolve a volume or a raster (model, ensemble, self-supervised config or classical method)"

log = logging.getLogger("medsat_sr")

_WEIGHT_RULES = ("equal", "lstsq", "softmax")


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``upscale`` command to ``subparsers`` (imports the options model: pydantic, no torch)."""
    from medsat_sr.inference.options import add_flags

    p = subparsers.add_parser(
        "upscale",
        help=HELP,
        description="Upscale INPUT (DICOM series folder, NIfTI, GeoTIFF, JPEG 2000 or VRT, band folder or "
        "Sentinel-2 .SAFE) into OUTPUT with exactly one of --config (self-supervised: fit on the input, then "
        "apply), --model (repeatable: weighted ensemble) or --method. "
        "The output format follows the suffix (.nii, .nii.gz, .tif, .tiff); no suffix: a derived DICOM series "
        "(volumes) or a band folder (band sets). Rasters are streamed. A JSON trust record OUTPUT.json is written "
        "next to the output.",
    )
    p.add_argument("input", nargs="+", help="input file or folder; several inputs (stacks of one anatomy, revisits of "
                   "one scene) are fused into one output by a multi-input config or method")
    p.add_argument("-o", "--output", required=True, help="output file or folder")
    g = p.add_argument_group("what to upscale with (exactly one)")
    add_config(g, help="job config (built-in name or .yaml); self-supervised configs fit on INPUT first")
    add_model(g)
    add_method(g)
    g.add_argument("--pan", metavar="PAN.tif", help="pan-sharpening: the panchromatic file; INPUT is then the "
                   "MS file or MS band folder (--method brovey|gihs|gsa|mtf-glp-hpm or --config landsat_pansharpen)")
    g = p.add_argument_group("what to produce")
    add_scale(g)
    g.add_argument("--target-spacing", metavar="MM", help="volumes: output spacing in mm (one value or per axis)")
    g.add_argument(
        "--weights",
        metavar="W",
        help="ensemble weights w1,w2,..., 'equal' (default), or fitted on a Wald split of the input: "
        "'lstsq' or 'softmax' (over PSNR)",
    )
    add_set(g, example="inference.tile_size=256")
    g.add_argument("--series-description", metavar="TEXT", help="DICOM output: SeriesDescription")
    g.add_argument("--run-dir", metavar="DIR", help="--config: keep the fit's checkpoints and curves here")
    add_flags(p.add_argument_group("options (the config's inference and output sections)"))
    add_reader_flags(p)
    p.set_defaults(func=run)
    return p


def _weights(text: str | None) -> object:
    """``--weights``: a rule name, or one number per member."""
    if not text:
        return None
    if text in _WEIGHT_RULES:
        return text
    w = numbers(text, "--weights")
    return [w] if isinstance(w, float) else w


def _tune_allocator_for(inputs: list[str]) -> None:
    """One volume: let malloc reuse freed tensor memory (:func:`medsat_sr.hardware.tune_allocator`).

    ``benchmarks/allocator.py`` (2 AVX2 cores, median of 3): ``--model
    mri_thick_slice`` on a 160 x 230 x 64 volume in 0.87x the time (68.6 s
    against 78.8 s), 1.07x the peak memory. Rasters are left alone
    (``--model multiband_x2``: 0.93x the time, 1.27x the peak memory, which
    the streamed route is built to bound), and so are several inputs: the
    multi-stack solver frees whole-grid volumes every iteration, and kept in
    the heap they took 1.75x the peak memory unmasked (10.5 GB against
    6.0 GB) for 0.77x the time; with masks 0.93x and 1.04x.
    """
    from medsat_sr.hardware import tune_allocator
    from medsat_sr.io import is_volume

    if len(inputs) == 1 and is_volume(inputs[0]):
        tune_allocator()


def run(args: argparse.Namespace) -> int:
    """Upscale ``args.input`` into ``args.output`` and print the files written; return the exit code."""
    from medsat_sr.errors import ConfigError
    from medsat_sr.inference.api import upscale
    from medsat_sr.inference.options import given_flags
    from medsat_sr.inference.verdict import record_verdict

    given = [name for name, v in (("--config", args.config), ("--model", args.model), ("--method", args.method)) if v]
    if len(given) != 1:
        raise ConfigError(
            "give exactly one of --config CFG, --model CKPT (repeatable) or --method cubic|linear|nearest|lanczos"
            + (f"; got {' and '.join(given)}" if given else "")
        )
    models = list(args.model or [])
    _tune_allocator_for(args.input)
    result = upscale(
        args.input[0] if len(args.input) == 1 else args.input,
        output=args.output,
        model=models[0] if len(models) == 1 else None,
        models=models if len(models) > 1 else None,
        weights=_weights(args.weights),
        method=args.method,
        scale=numbers(args.scale, "--scale"),
        target_spacing=numbers(args.target_spacing, "--target-spacing"),
        config=args.config,
        overrides=list(args.set or []),
        series_description=args.series_description,
        read_options=reader_options(args),
        run_dir=args.run_dir,
        progress=not args.quiet,
        pan=args.pan,
        **given_flags(args),
    )
    log.info("wrote %s", result.output)
    if not args.quiet:
        for p in (result.output, result.std_output, result.sidecar):
            if p is not None:
                print(p)
        print(record_verdict(result.record, result.output, result.sidecar))
    return EXIT_OK

"""``medsat-sr batch [--config CFG] INPUT... -o OUT_DIR``: many inputs, resumable, failure-isolated, on Dask.

The upscale option flags (``--tile-size``, ``--precision``, ``--force``, ...)
are the same as ``medsat-sr upscale``'s (from the options model) and apply
to every input: they become ``inference.*`` / ``output.*`` overrides, after
the ``--set`` items, so they are part of the job hash that decides resume.
``--redo`` redoes inputs whose outputs are already complete.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from medsat_sr.cli import EXIT_OK, EXIT_PARTIAL
from medsat_sr.cli.options import add_config, add_method, add_model, add_reader_flags, add_scale, add_set, numbers, reader_options

HELP = "upscale many inputs into a folder: resumable, failure-isolated, on Dask"


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``batch`` command to ``subparsers`` (imports the options model: pydantic, no torch)."""
    from medsat_sr.inference.options import add_flags

    p = subparsers.add_parser(
        "batch",
        help=HELP,
        description="Run one recipe over many inputs (files, folders = one DICOM series or band folder each, glob "
        "patterns, or --manifest CSV with per-row settings) into OUT_DIR. Output names come from "
        "output.name_template (default {stem}_sr{ext}). OUT_DIR/batch.jsonl gets one line per input per run. "
        "A rerun skips inputs whose output and sidecar match the input checksum and the config; --redo redoes them. "
        "Exit 0 when every input succeeded, 4 when some failed (listed on stderr).",
    )
    p.add_argument("inputs", nargs="*", metavar="INPUT", help="files, folders or glob patterns (quote them)")
    p.add_argument("-o", "--output", required=True, metavar="OUT_DIR", help="output folder (created)")
    g = p.add_argument_group("what to run (--config, --model or --method; --config may join either)")
    add_config(g, help="job config (built-in name or .yaml): settings, output names; alone: self-supervised fit per input")
    add_model(g, help="checkpoint (repeat for an equal-weight ensemble); loaded once per worker")
    add_method(g)
    add_scale(g, help="one factor or one per axis (default: the config's or the model's)")
    add_set(g, example="output.compress=zstd", scope=" for every input")
    g.add_argument(
        "--manifest",
        metavar="CSV",
        help="CSV with an 'input' column and optional output, scale, series, volume, resample, set or config-key columns",
    )
    add_flags(p.add_argument_group("options for every input (as in `upscale`; the config's inference and output sections)"))
    g = p.add_argument_group("execution")
    g.add_argument("--workers", type=int, default=0, metavar="N", help="0 (default): inline; N: a local Dask cluster of N processes")
    g.add_argument("--scheduler", metavar="ADDRESS", help="submit to an existing Dask scheduler, e.g. tcp://head:8786 (shared paths needed)")
    g.add_argument("--torch-threads", type=int, metavar="T", help="torch threads per worker (default: cores // N)")
    g.add_argument("--redo", action="store_true", help="redo inputs whose outputs are already complete")
    g.add_argument("--dry-run", action="store_true", help="print what would run or be skipped; write nothing")
    add_reader_flags(p)
    p.set_defaults(func=run)
    return p


def option_overrides(args: argparse.Namespace) -> list[str]:
    """The upscale option flags given, as ``section.field=value`` overrides (``inference.tile_size=256``)."""
    from medsat_sr.inference.options import InferenceOptions, given_flags

    out = []
    for name, value in given_flags(args).items():
        section = "inference" if name in InferenceOptions.model_fields else "output"
        out.append(f"{section}.{name}={json.dumps(value)}")
    return out


def _print_summary(result: Any) -> None:
    fallbacks = sum(1 for it in result.items if it["fallback"])
    print(
        f"batch: {result.done} done, {result.skipped} skipped, {result.failed} failed of {len(result.items)} inputs "
        f"in {result.seconds:.1f} s" + (f"; {fallbacks} fell back to cubic" if fallbacks else "")
        + f"; run manifest {result.manifest}"
    )


def _print_verdicts(result: Any) -> None:
    """One verdict line per input, from its trust record (failed inputs: the error goes to stderr)."""
    from medsat_sr.inference.verdict import PREFIX, record_verdict

    for it in result.items:
        if it["status"] == "failed":
            print(f"{PREFIX} {it['input']}: failed, nothing written (error below)")
            continue
        try:
            record = json.loads(open(it["sidecar"], encoding="utf-8").read())
        except (OSError, TypeError, ValueError):
            record = {"method": it.get("method"), "decision": {"fell_back": bool(it.get("fallback"))}}
        line = record_verdict(record, it.get("output"), it.get("sidecar"))
        print(line + (" (skipped: already complete)" if it["status"] == "skipped" else ""))


def run(args: argparse.Namespace) -> int:
    """Run the batch; return 0, or 4 when some inputs failed (listed on stderr)."""
    from medsat_sr.batch import failure_text, run_batch
    from medsat_sr.errors import ConfigError

    if not args.inputs and not args.manifest:
        raise ConfigError("no inputs: give files, folders or glob patterns, or --manifest CSV")
    result = run_batch(
        args.inputs,
        args.output,
        config=args.config,
        overrides=[*(args.set or []), *option_overrides(args)],
        manifest=args.manifest,
        models=list(args.model or []),
        method=args.method,
        scale=numbers(args.scale, "--scale"),
        read_options=reader_options(args),
        workers=args.workers,
        scheduler=args.scheduler,
        torch_threads=args.torch_threads,
        force=args.redo,
        dry_run=args.dry_run,
        progress=not args.quiet,
    )
    if args.dry_run:
        for it in result.items:
            what = it.get("output") or it.get("error")
            extra = f" ({it['reason']})" if it.get("reason") else ""
            print(f"{it['status']:6s} {it['input']} -> {what}{extra}")
        return EXIT_OK
    if not args.quiet:
        _print_verdicts(result)
        _print_summary(result)
    if result.failed:
        print(f"medsat-sr: error: {result.failed} of {len(result.items)} inputs failed:", file=sys.stderr)
        for it in result.failures:
            print(f"  {failure_text(it)}", file=sys.stderr)
        return EXIT_PARTIAL
    return EXIT_OK

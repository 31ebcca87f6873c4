"""``medsat-sr train INPUT... -o RUN_DIR --config CFG``: supervised, self-supervised or fine-tune."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from medsat_sr.cli import EXIT_OK
from medsat_sr.cli.options import add_config, add_set

HELP = "train a model (supervised, self-supervised or fine-tune)"


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``train`` command to ``subparsers``."""
    p = subparsers.add_parser(
        "train",
        help=HELP,
        description="Train on INPUT files or folders as the config says (train.mode: supervised, self_supervised or "
        "finetune) into RUN_DIR: best/last checkpoints (safetensors + JSON), metrics.csv and curves.png. INPUT "
        "replaces the config's data.inputs. Fixed config keys: data.inputs, train.max_iterations, train.max_minutes, "
        "train.mode, model.name, scale.",
    )
    p.add_argument("inputs", nargs="*", metavar="INPUT",
                   help="training images (files or folders); default: the config's data.inputs")
    add_config(p, required=True)
    p.add_argument("-o", "--output", required=True, metavar="RUN_DIR", help="run folder (created)")
    add_set(p)
    p.add_argument("--init", metavar="CKPT", help="checkpoint to start from (finetune; same as --set train.init=CKPT)")
    p.add_argument("--resume", action="store_true", help="continue from RUN_DIR/last")
    p.add_argument("--dry-run", action="store_true", help="validate and print the fully resolved config; train nothing")
    p.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"], help="where to train (default cpu)")
    p.set_defaults(func=run)
    return p


def _overrides(args: argparse.Namespace) -> list[str]:
    """``--set`` items, plus what ``--init`` implies (fine-tune from that checkpoint)."""
    from medsat_sr.config import load_config

    overrides = list(args.set or [])
    if getattr(args, "inputs", None):
        overrides.append("data.inputs=" + json.dumps([str(Path(p)) for p in args.inputs]))
    if args.init:
        base = load_config(args.config, [o for o in overrides if o.replace(" ", "").startswith("train.mode=")])
        if base.train.mode != "finetune":  # --init means: start from this checkpoint
            overrides.append("train.mode=finetune")
            if base.train.mode == "supervised":
                overrides.append("train.finetune_pairs=supervised")
        overrides.append(f"train.init={args.init}")
    return overrides


def run(args: argparse.Namespace) -> int:
    """Train into ``args.output`` (or print the resolved config with ``--dry-run``); return the exit code."""
    from medsat_sr.config import load_config
    from medsat_sr.errors import ConfigError, DataError

    for p in args.inputs or []:
        if not Path(p).exists():
            raise DataError(f"{p}: no such file or folder")
    cfg = load_config(args.config, _overrides(args))
    if not (cfg.data.inputs or cfg.data.pairs):
        raise ConfigError(f"{args.config}: nothing to train on: give INPUT files or folders (or data.inputs in the config)")
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

"""``medsat-sr models [NAME] [--json]``: the shipped models and their cards (no torch: starts fast)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from medsat_sr.cli import EXIT_OK

HELP = "list the shipped pretrained models (or show one model's card)"


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``models`` command to ``subparsers``."""
    p = subparsers.add_parser(
        "models",
        help=HELP,
        description="List the models shipped in the package: `upscale --model NAME` applies one without fitting, "
        "and `upscale --config CFG` fine-tunes the one that serves CFG (unless --from-scratch). "
        "With NAME, print that model's card: data, licences and attributions, what was held out, degradation, "
        "budget and validation scores.",
    )
    p.add_argument("name", nargs="?", help="a shipped model: print its card")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run)
    return p


def _row(c: dict[str, Any]) -> list[str]:
    arch = c.get("architecture") or {}
    kw = arch.get("kwargs") or {}
    dims = f"{kw.get('spatial_dims', '?')}D"
    val = c.get("validation") or {}
    gain = val.get("gain_db")
    size = c.get("bytes") or 0
    return [
        str(c["name"]),
        str(c.get("serves") or "-"),
        f"{arch.get('name', '?')} {dims}",
        f"{(c.get('num_parameters') or 0) / 1e6:.2f} M",
        f"{size / 2**20:.1f} MiB",
        "-" if gain is None else f"{gain:+.2f} dB",
        str(c.get("title") or ""),
    ]


def _table(cards: list[dict[str, Any]]) -> str:
    head = ["name", "fine-tuned by --config", "network", "params", "size", "val vs cubic", "task"]
    rows = [head] + [_row(c) for c in cards]
    widths = [max(len(r[i]) for r in rows) for i in range(len(head) - 1)]
    lines = ["  ".join(v.ljust(w) for v, w in zip(r[:-1], widths)) + "  " + r[-1] for r in rows]
    return "\n".join(lines)


def _card_text(c: dict[str, Any]) -> str:
    data = c.get("data") or {}
    lines = [f"{c['name']}: {c.get('title', '')}", f"  checkpoint   {c['checkpoint']}(.safetensors, .json)",
             f"  serves       --config {c.get('serves')}", f"  network      {json.dumps(c.get('architecture'))}",
             f"  trained on   {data.get('used', '?')}", f"  held out     {data.get('held_out', '?')}"]
    for s in data.get("sources") or []:
        lines.append(f"  source       {s.get('file')} ({s.get('origin')})")
        lines.append(f"    licence    {s.get('licence')}")
        lines.append(f"    attribute  {s.get('attribution')}")
        files = [f for f in s.get("files") or [] if isinstance(f, dict)]
        if files:  # what a run checks its input against (medsat_sr.zoo.provenance)
            shown = ", ".join(f"{f.get('name')} ({str(f.get('sha256'))[:12]})" for f in files[:4])
            lines.append(f"    files      {shown}{f' and {len(files) - 4} more' if len(files) > 4 else ''} (sha256)")
    deg = c.get("degradation") or {}
    lines.append(f"  degradation  {deg.get('recipe') or deg.get('model')}")
    if deg.get("factors"):  # one network trained at several factors (data.factors); validated at each
        lines.append(f"  factors      x{', x'.join(f'{float(f):g}' for f in deg['factors'])} (one per batch; "
                     "the recipe above is at the nominal factor, the validation a mean over all)")
    b = c.get("budget") or {}
    lines.append(f"  budget       {b.get('iterations')} iterations, {b.get('seconds')} s ({b.get('machine')})")
    v = c.get("validation") or {}
    if v:
        lines.append(f"  validation   PSNR {v.get('psnr', 0):.2f} dB vs cubic {v.get('psnr_cubic', 0):.2f} dB, "
                     f"SSIM {v.get('ssim', 0):.4f} vs {v.get('ssim_cubic', 0):.4f} ({v.get('note', '')})")
    lines.append(f"  reproduce    {c.get('reproduce')}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Print the shipped models (a table, or one card); return the exit code."""
    from medsat_sr import zoo

    if args.name:
        c = zoo.card(args.name)
        print(json.dumps(c, indent=1) if args.json else _card_text(c))
        return EXIT_OK
    cards = zoo.cards()
    if args.json:
        print(json.dumps(cards, indent=1))
    elif not cards:
        print("no shipped models in this installation")
    else:
        print(_table(cards))
    return EXIT_OK

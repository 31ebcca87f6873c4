"""``medsat-sr evaluate --config CFG REFERENCE... -o REPORT_DIR``: the protocol of DESIGN.md section 5."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from medsat_sr.cli import EXIT_OK
from medsat_sr.cli.options import add_config, add_model, add_set, numbers

HELP = "measure methods against high-resolution references (DESIGN.md section 5) and write a report"


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``evaluate`` command to ``subparsers``."""
    p = subparsers.add_parser(
        "evaluate",
        help=HELP,
        description="Degrade each high-resolution REFERENCE with the config's domain profile (the code that makes "
        "training pairs), or take explicit --pair LR HR images; upscale with every method (the profile's classical "
        "baselines always, plus --methods: cubic, linear, nearest, lanczos, model); score on the reference grid: PSNR "
        "(explicit data range, whole and masked), SSIM (3D and per slice for volumes), MAE, MSE, and for rasters "
        "per-band PSNR/RMSE, SAM and ERGAS; time and peak memory per method. Band folders of several grids (Sentinel-2): "
        "Wald's protocol on every group, per-band RMSE, SAM and ERGAS of cubic and each --model, in "
        "REPORT_DIR/metrics.json; a band folder of one grid is a multi-band raster. 'model' is each --model checkpoint, or a "
        "self-supervised fit when the config's train.mode is self_supervised. REPORT_DIR gets metrics.json, "
        "metrics.csv, PNG figures and a self-contained report.html. Pan-sharpening (--config landsat_pansharpen, "
        "REFERENCE a band folder with its pan band, or the MS file with --pan): every method side by side on the "
        "held-out half (Q2n, SAM, ERGAS at reduced resolution; D_lambda, D_s, HQNR at full), --methods "
        "brovey,gihs,gsa,mtf-glp-hpm,network (default all).",
    )
    p.add_argument("references", nargs="*", metavar="REFERENCE", help="high-resolution reference images")
    add_config(p, required=True)
    p.add_argument("-o", "--output", required=True, metavar="REPORT_DIR", help="report folder (created)")
    p.add_argument("--methods", metavar="M1,M2", help="comma list: cubic, linear, nearest, lanczos, model (baselines always included)")
    add_model(p, help="checkpoint to evaluate (repeatable)")
    p.add_argument("--pair", nargs=2, action="append", metavar=("LR", "HR"), help="explicit low/high-resolution pair on aligned grids (repeatable)")
    add_set(p, example="train.max_minutes=3")
    p.add_argument(
        "--scale",
        metavar="S",
        help="evaluation factor(s), e.g. 2 or 1,1,4 (default: the config's; thick slices on an isotropic reference: "
        "4 along the inferior-superior axis)",
    )
    p.add_argument(
        "--holdout",
        metavar="F",
        help="rasters: right-hand fraction left out of a self-supervised fit and scored (default 0.5; 0: fit on the degraded input)",
    )
    p.add_argument("--run-dir", metavar="DIR", help="where self-supervised fits keep checkpoints and curves (default REPORT_DIR/runs)")
    p.add_argument("--title", metavar="TEXT", help="title of report.html")
    p.add_argument("--no-figures", action="store_true", help="write the tables and the page without PNG figures")
    p.add_argument("--pan", metavar="PAN.tif", help="pan-sharpening: the panchromatic file (REFERENCE is the MS)")
    p.set_defaults(func=run)
    return p


def _holdout(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        from medsat_sr.errors import ConfigError

        raise ConfigError(f"--holdout: expected a fraction in [0, 1), got {text!r}") from None


def _print_results(ev: Any, output: str) -> None:
    for f in ev.files:
        print(f"{f.name} ({f.case.kind}, x{'/'.join(f'{v:g}' for v in f.case.factors)}):")
        for m, r in f.methods.items():
            gain = r.get("psnr_masked_gain_vs_cubic")
            g = f" ({gain:+.2f} dB vs cubic)" if m != "cubic" and isinstance(gain, float) else ""
            print(
                f"  {m:<16} PSNR {r['psnr']:7.3f} dB, masked {r['psnr_masked']:7.3f} dB{g}, "
                f"SSIM {r['ssim']:.4f}, {r['seconds']:.1f} s, peak {r['peak_rss_mb']:.0f} MiB"
            )
            if r.get("training_overlap"):
                print(f"    note: {r['training_overlap']}")
    print(f"report: {Path(output) / 'report.html'}")


def _band_sets(references: list[str]) -> bool:
    """Whether every reference is a band folder of several grids (a mix is refused: evaluate them apart).

    A band folder of one grid is a multi-band raster, evaluated as one.
    """
    from medsat_sr.errors import ConfigError
    from medsat_sr.io import detect_format
    from medsat_sr.io.geotiff_bandset import band_grids

    kinds = {detect_format(r) == "bandset" and len(band_grids(r)) > 1 for r in references}
    if kinds == {True, False}:
        raise ConfigError("give band folders and single images to separate `evaluate` runs")
    return kinds == {True}


def _run_band_sets(args: argparse.Namespace) -> int:
    """Band sets: Wald's protocol, per-band RMSE, SAM and ERGAS (:mod:`medsat_sr.evaluate_bands`)."""
    import json

    from medsat_sr._atomic import atomic_path
    from medsat_sr.evaluate_bands import evaluate_bandset, format_bandset_result

    methods = [m.strip() for m in (args.methods or "").split(",") if m.strip()]
    results = [evaluate_bandset(r, args.config, models=list(args.model or []), overrides=list(args.set or []),
                                methods=methods) for r in args.references]
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "metrics.json") as tmp:
        tmp.write_text(json.dumps({"band_sets": results}, indent=2) + "\n", encoding="utf-8")
    if not args.quiet:
        for r in results:
            print("\n".join(format_bandset_result(r)))
        print(f"metrics: {out / 'metrics.json'}")
    return EXIT_OK


def _run_pansharpen(args: argparse.Namespace) -> int:
    """Pan-sharpening: every method on the held-out half (:mod:`medsat_sr.evaluate_pansharpen`)."""
    from medsat_sr.errors import ConfigError
    from medsat_sr.evaluate_pansharpen import evaluate_pansharpen, format_pansharpen_result

    if len(args.references) != 1 or args.pair:
        raise ConfigError("pan-sharpening evaluates one scene: a band folder with its pan band, or the MS with --pan")
    names = [m.strip() for m in (args.methods or "").split(",") if m.strip()]
    classical_methods = [m for m in names if m != "network"] or None
    res = evaluate_pansharpen(args.references[0], args.output, methods=classical_methods, pan=args.pan,
                              config=args.config if not names or "network" in names else None,
                              overrides=list(args.set or []) if not names or "network" in names else [],
                              figures=not args.no_figures)
    if not args.quiet:
        print("\n".join(format_pansharpen_result(res)))
        print(f"report: {Path(args.output) / 'report.html'}")
    return EXIT_OK


def run(args: argparse.Namespace) -> int:
    """Evaluate and write the report into ``args.output``; return the exit code."""
    from medsat_sr.errors import ConfigError
    from medsat_sr.evaluate import evaluate
    from medsat_sr.inference.route_pansharpen import is_pansharpen

    pairs = [tuple(p) for p in (args.pair or [])]
    if not args.references and not pairs:
        raise ConfigError("nothing to evaluate: give high-resolution REFERENCE files or --pair LR HR")
    if is_pansharpen(None, args.config, args.pan):
        return _run_pansharpen(args)
    if not pairs and _band_sets(args.references):
        return _run_band_sets(args)
    ev = evaluate(
        args.references,
        args.config,
        pairs=pairs,
        methods=args.methods,
        models=list(args.model or []),
        overrides=list(args.set or []),
        scale=numbers(args.scale, "--scale"),
        holdout=_holdout(args.holdout),
        output=args.output,
        run_dir=args.run_dir,
        figures=not args.no_figures,
        progress=not args.quiet,
        title=args.title,
    )
    if not args.quiet:
        _print_results(ev, args.output)
    return EXIT_OK

#!/usr/bin/env python
"""3D volume SR benchmark (issue 7, "What it must show") on ../shared/data.

Every number comes from the project's own code: the reference is degraded by
:func:`medsat_sr.evaluate.prepare_case` (i.e. :mod:`medsat_sr.degrade`),
models are fitted with :func:`medsat_sr.train.fit` (MONAI engines), applied
with :func:`medsat_sr.inference.upscale` (tiled, Gaussian-blended sliding
window) and scored by the evaluation protocol's own scorer
(:mod:`medsat_sr.metrics` through ``medsat_sr.evaluate``). Cubic is the cubic
B-spline (``scipy.ndimage``, exact sample positions).

Cases (``--cases``):

``iso``
    Isotropic x2 on the MNI ICBM152 2009a T1 template (1 mm): config
    ``mri_isotropic_x2`` degrades it by its 3D Gaussian PSF (FWHM = one
    low-resolution voxel = 2 reference voxels) and 2x decimation on every
    axis. Three methods on the same input, scored in the brain mask
    (``psnr_masked``, ``ssim_masked``; data range = the reference's robust
    range):

    * cubic B-spline;
    * **2D slice-wise**: an 8-block EDSR (64 features) fitted self-supervised
      on axial planes of the input (``scale=[2,2,1]``, the same PSF in-plane),
      applied plane by plane, then the cubic B-spline through-plane;
    * **3D**: the config's mDCSRN-style densely connected 3D net
      (``dcsrn``), fitted self-supervised on the input by the same PSF and
      decimation, applied with the tiled 3D inference.

    Each fit has the same wall-clock budget (``--minutes``, default 10).
    Floor: 3D >= cubic + 0.5 dB.
``sampler``
    The foreground-favouring patch sampler (``data.background_probability``
    0.05: 95 % of patches have >= 30 % head voxels) against uniform sampling
    (1.0: patches drawn anywhere in the volume) on the ``iso`` case, same
    iteration budget (``--sampler-iterations``, default 600), same seed.
``throughput``
    Training voxels per second (output voxels of a batch / step time), fp32
    against bf16 (``torch.autocast("cpu")`` + channels_last_3d, as
    :mod:`medsat_sr.train` runs it), for the 3D nets at the configs' sizes
    (dcsrn 32/16 x 4x4, EDSR 32 x 4, RCAN 32 x 2x2), on the trainers' own
    batches. Median of ``--steps`` steps, the two precisions interleaved step
    by step so the load of a shared machine hits both alike.
``transfer``
    Fine-tuning across modality: the MNI (MR) 3D net of the ``iso`` case
    fine-tuned on the TotalSegmentator example CT (3 mm; ``ct_isotropic_x2``,
    HU window, head frozen with the first dense block, lr 1e-4) against the
    same architecture from scratch, same iterations (``--transfer-iterations``,
    default 400), seed and validation split. Reported: scratch's best
    validation PSNR, the first iteration at which each reaches it (fine-tune:
    within 0.01 dB) and their ratio. Floor: <= 0.5. Curves:
    ``volume3d_transfer.png`` next to ``--out``.

Usage::

    python benchmarks/volume3d.py                 # about 45 minutes on 2 cores
    python benchmarks/volume3d.py --quick         # plumbing check, tiny budgets and crops
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from _machine import load_average, machine
from quality import (
    CT,
    MNI,
    REPO,
    Budget,
    _finite,
    _json_default,
    _plot_curves,
    centre_crop,
    fit_record,
    interleaved_steps,
    md_table,
    need,
    reach,
)

CASES = ("iso", "sampler", "throughput", "transfer")
FLOORS = {"iso": 0.5, "transfer": 0.5}
DCSRN = "model.kwargs={features: 32, growth: 16, n_blocks: 4, n_layers: 4}"
SLICE_2D = ["scale=[2, 2, 1]", "model.name=edsr", "model.spatial_dims=2", "model.kwargs={features: 64, n_blocks: 8}",
            "train.patch_size=48", "train.batch_size=16"]
THROUGHPUT_NETS = {
    "dcsrn": ["model.name=dcsrn", DCSRN],
    "edsr3d": ["model.name=edsr", "model.kwargs={features: 32, n_blocks: 4}"],
    "rcan3d": ["model.name=rcan", "model.kwargs={features: 32, n_groups: 2, n_blocks: 2}"],
}


def quick3d(budget: Budget) -> list[str]:
    """Quick mode: 3D patches small enough for the cropped volume."""
    return ["train.patch_size=16", "train.batch_size=2"] if budget.quick else []


def mni(budget: Budget) -> Any:
    """The MNI template (centre-cropped in quick mode)."""
    from medsat_sr.io import read

    img = read(need(MNI, "the MNI ICBM152 template"))
    return centre_crop(img, (64, 72, 64)) if budget.quick else img


def _run(name: str, case: Any, cfg: Any) -> Any:
    """One evaluation method on the case (the protocol's own runner)."""
    from medsat_sr.evaluate_methods import _run_method

    return _run_method(name, case, cfg, checkpoint=None, run_dir=None, progress=False)


def _slicewise(case: Any, cfg2d: Any) -> Any:
    """2D EDSR in-plane (fitted on axial planes of the input), cubic B-spline through-plane."""
    from medsat_sr.evaluate import PeakMemory
    from medsat_sr.evaluate_methods import MethodRun, _grid_matches
    from medsat_sr.inference import upscale
    from medsat_sr.train import fit

    with PeakMemory() as pm:
        t0 = time.perf_counter()
        fr = fit([case.lr], cfg2d, progress=False)
        fit_s = time.perf_counter() - t0
        inplane = upscale(case.lr, fit=fr, config=cfg2d, scale=[2, 2, 1], force=True, sidecar=False,
                          progress=False, dtype="float32")
        out = upscale(inplane.image, method="cubic", scale=[1, 1, 2], sidecar=False, progress=False).image
        seconds = time.perf_counter() - t0
    ok, err = _grid_matches(case, out)
    if not ok:
        raise SystemExit(f"volume3d.py: the 2D slice-wise output grid does not match the reference ({err:.3g})")
    info = {"fit": {"val_psnr": fr.val_psnr, "val_psnr_cubic": fr.val_psnr_cubic, "iterations": fr.iterations,
                    "seconds": fr.seconds, "stopped_by": fr.stopped_by, "architecture": fr.model.config}}
    return MethodRun(name="slicewise_2d", kind="self_supervised", image=out.as_tensor().float().numpy(),
                     seconds=seconds, peak_rss_mb=pm.peak_mb, peak_rss_increase_mb=pm.increase_mb,
                     fit_seconds=fit_s, apply_seconds=seconds - fit_s, info=info, fit=fr)


def _row(result: Any, method: str) -> dict[str, Any]:
    m = result.methods[method]
    fit = m.get("fit") or {}
    return {
        "psnr_masked": m["psnr_masked"], "ssim_masked": m["ssim_masked"], "psnr": m["psnr"],
        "gain_db": m["psnr_masked"] - result.methods["cubic"]["psnr_masked"],
        "iterations": fit.get("iterations"), "fit_seconds": m.get("fit_seconds"),
        "apply_seconds": m.get("apply_seconds"), "seconds": m.get("seconds"), "peak_rss_mb": m.get("peak_rss_mb"),
        "val_psnr": fit.get("val_psnr"), "val_psnr_cubic": fit.get("val_psnr_cubic"),
        "stopped_by": fit.get("stopped_by"),
    }


# --------------------------------------------------------------------------- case: iso
def case_iso(budget: Budget, *, slicewise: bool = True) -> tuple[dict[str, Any], Any]:
    """Cubic, 2D slice-wise and 3D on the MNI template, isotropic x2.

    Returns:
        ``(record, fitted 3D model)``.
    """
    from medsat_sr.config import load_config
    from medsat_sr.evaluate import _score_case, prepare_case

    cfg3 = load_config("mri_isotropic_x2", budget.overrides() + quick3d(budget))
    case = prepare_case(mni(budget), cfg3, name="mni_t1")
    runs = {"cubic": _run("cubic", case, cfg3), "model_3d": _run("model", case, cfg3)}
    if slicewise:
        ov2 = SLICE_2D + budget.overrides()
        runs["slicewise_2d"] = _slicewise(case, load_config("mri_isotropic_x2", ov2))
    res = _score_case(cfg3, case, runs)
    rows = {m: _row(res, m) for m in runs}
    rec = {
        "case": "Isotropic x2 (MNI T1, PSF FWHM 2 voxels + 2x decimation, PSNR in brain)",
        "floor": f"3D gain >= +{FLOORS['iso']:.1f} dB", "passed": rows["model_3d"]["gain_db"] >= FLOORS["iso"],
        "rows": rows, "settings": res.settings,
    }
    return rec, runs["model_3d"].fit.model


# --------------------------------------------------------------------------- case: sampler
def case_sampler(budget: Budget, iterations: int) -> dict[str, Any]:
    """Foreground-favouring against uniform patch sampling (3D net, same iterations)."""
    from medsat_sr.config import load_config
    from medsat_sr.evaluate import _score_case, prepare_case

    common = budget.overrides(early_stopping=False, iterations=iterations, minutes=max(budget.minutes, 60.0))
    common += quick3d(budget)
    cfgs = {
        "foreground (0.05 background)": load_config("mri_isotropic_x2", common + ["data.background_probability=0.05"]),
        "uniform (1.0 background)": load_config("mri_isotropic_x2", common + ["data.background_probability=1.0"]),
    }
    case = prepare_case(mni(budget), next(iter(cfgs.values())), name="mni_t1")
    runs = {"cubic": _run("cubic", case, next(iter(cfgs.values())))}
    for label, cfg in cfgs.items():
        runs[label] = _run("model", case, cfg)
    res = _score_case(next(iter(cfgs.values())), case, runs)
    rows = {m: _row(res, m) for m in runs}
    fg, un = rows["foreground (0.05 background)"], rows["uniform (1.0 background)"]
    return {"case": "Patch sampler (3D net, MNI iso x2)", "iterations": iterations, "rows": rows,
            "effect_db": fg["psnr_masked"] - un["psnr_masked"]}


# --------------------------------------------------------------------------- case: throughput
def case_throughput(budget: Budget, steps: int) -> dict[str, Any]:
    """Training voxels/s of the 3D nets, fp32 against bf16, steps interleaved."""
    import torch

    from medsat_sr.config import load_config
    from medsat_sr.evaluate import prepare_case
    from medsat_sr.train import build_trainer

    ref = mni(budget)
    case = None
    out: dict[str, Any] = {"steps": steps, "torch_threads": torch.get_num_threads(), "nets": {}}
    for net, ov in THROUGHPUT_NETS.items():
        states = {}
        for prec in ("fp32", "bf16"):
            cfg = load_config("mri_isotropic_x2", budget.overrides() + ov + quick3d(budget) + [f"train.precision={prec}"])
            if case is None:
                case = prepare_case(ref, cfg)
            _, _, st = build_trainer(cfg, None, images=[case.lr], progress=False)
            states[prec] = (st, iter(st.data.train))
        times, voxels = interleaved_steps(states, steps)
        med = {k: statistics.median(v) for k, v in times.items()}
        out["nets"][net] = {
            "overrides": ov, "voxels_per_step": voxels, "median_s": med,
            "voxels_per_s": {k: voxels / v for k, v in med.items()}, "speedup_bf16": med["fp32"] / med["bf16"],
            "batch_size": int(states["fp32"][0].cfg.train.batch_size),
            "patch_size": states["fp32"][0].cfg.train.patch_size,
        }
    return out


# --------------------------------------------------------------------------- case: transfer
def case_transfer(budget: Budget, iterations: int, out_png: Path, source_model: Any = None) -> dict[str, Any]:
    """MR 3D net fine-tuned on CT against the same net from scratch."""
    from medsat_sr.config import load_config
    from medsat_sr.evaluate import prepare_case
    from medsat_sr.io import read
    from medsat_sr.train import fit

    src_info = "the iso case's fitted 3D model (MNI T1)"
    if source_model is None:
        src_info = "a fit on the MNI iso x2 case (mri_isotropic_x2, same budget)"
        cfg_src = load_config("mri_isotropic_x2", budget.overrides() + quick3d(budget))
        source_model = fit([prepare_case(mni(budget), cfg_src).lr], cfg_src, progress=False).model
    val_every = max(1, iterations // 20)
    common = budget.overrides(early_stopping=False, iterations=iterations, val_every=val_every,
                              minutes=max(budget.minutes, 60.0)) + quick3d(budget)
    arch = ["model.name=dcsrn", DCSRN if not budget.quick else "model.kwargs={features: 16, growth: 8, n_blocks: 2, n_layers: 2}"]
    ov_s = arch + common
    cfg_s = load_config("ct_isotropic_x2", ov_s)
    case = prepare_case(read(need(CT, "the TotalSegmentator example CT")), cfg_s, name="example_ct")
    t0 = time.perf_counter()
    scratch = fit([case.lr], cfg_s, progress=False)
    t_s = time.perf_counter() - t0
    ov_f = arch + common + ["train.mode=finetune", "train.finetune_pairs=self_supervised", "train.freeze_blocks=1",
                            "train.lr=1e-4", "train.schedule.warmup_iterations=0"]
    cfg_f = load_config("ct_isotropic_x2", ov_f)
    t0 = time.perf_counter()
    fine = fit([case.lr], cfg_f, progress=False, init=copy.deepcopy(source_model))
    t_f = time.perf_counter() - t0
    target = max(float(h["val_psnr"]) for h in scratch.history)
    it_s, it_f = reach(scratch.history, target), reach(fine.history, target, tol=0.01)
    ratio = (it_f / it_s) if (it_f is not None and it_s) else (0.0 if it_f == 0 else None)
    _plot_curves(scratch.history, fine.history, target, out_png,
                 labels=("scratch (ct_isotropic_x2, dcsrn)", "fine-tune from the MR 3D net"),
                 title="Transfer MR -> CT, isotropic x2 (3D)")
    return {
        "case": "Transfer: MR (MNI) 3D net -> CT iso x2", "floor": "iterations to reach <= 0.5 x scratch",
        "passed": ratio is not None and ratio <= FLOORS["transfer"], "target_val_psnr": target,
        "iterations_budget": iterations, "scratch_iterations_to_reach": it_s, "finetune_iterations_to_reach": it_f,
        "ratio": ratio, "val_psnr_cubic": scratch.val_psnr_cubic, "scratch_best": scratch.val_psnr,
        "finetune_best": fine.val_psnr, "scratch_seconds": t_s, "finetune_seconds": t_f, "curves_png": str(out_png),
        "scratch": fit_record(scratch), "finetune": fit_record(fine),
        "settings": {"source": src_info, "target": str(CT), "degradation": case.degradation,
                     "overrides_scratch": ov_s, "overrides_finetune": ov_f},
    }


# --------------------------------------------------------------------------- report
def report(results: dict[str, Any]) -> str:
    """Markdown tables of the cases that ran."""
    m = results["machine"]
    parts = [f"Machine: {m['cpu']}, {m['cores']} cores ({m['isa']}), torch {m['torch']}, "
             f"load average at start {results['load_average_start']}"]
    c = results["cases"]
    if "iso" in c:
        rows = []
        for name, label in (("cubic", "cubic B-spline"), ("slicewise_2d", "2D slice-wise EDSR + cubic through-plane"),
                            ("model_3d", "3D dcsrn")):
            r = c["iso"]["rows"].get(name)
            if r:
                rows.append([label, r["psnr_masked"], r["gain_db"], r["ssim_masked"], r["iterations"],
                             None if r["fit_seconds"] is None else round(r["fit_seconds"] / 60, 1),
                             None if r["apply_seconds"] is None else round(r["apply_seconds"], 1)])
        parts.append("**Isotropic x2 on the MNI T1** (PSNR/SSIM in the brain)\n\n" + md_table(
            ["method", "PSNR dB", "gain dB", "SSIM", "iterations", "fit min", "apply s"], rows)
            + f"\n\n3D floor (+{FLOORS['iso']} dB): {'passed' if c['iso']['passed'] else 'NOT met'}")
    if "sampler" in c:
        s = c["sampler"]
        rows = [[k, v["psnr_masked"], v["gain_db"], v["ssim_masked"]] for k, v in s["rows"].items() if k != "cubic"]
        parts.append(f"**Patch sampler** ({s['iterations']} iterations each)\n\n"
                     + md_table(["sampler", "PSNR dB", "gain vs cubic dB", "SSIM"], rows)
                     + f"\n\neffect of foreground sampling: {s['effect_db']:+.2f} dB")
    if "throughput" in c:
        rows = [[k, v["voxels_per_step"], round(v["voxels_per_s"]["fp32"]), round(v["voxels_per_s"]["bf16"]),
                 v["speedup_bf16"]] for k, v in c["throughput"]["nets"].items()]
        parts.append(f"**Training throughput** (median of {c['throughput']['steps']} steps)\n\n"
                     + md_table(["net", "voxels/step", "fp32 voxels/s", "bf16 voxels/s", "bf16 speed-up"], rows))
    if "transfer" in c:
        t = c["transfer"]
        parts.append("**Transfer MR -> CT** (3D, iso x2)\n\n" + md_table(
            ["target val PSNR", "scratch reaches at", "fine-tune reaches at", "ratio", "budget", "floor"],
            [[t["target_val_psnr"], t["scratch_iterations_to_reach"], t["finetune_iterations_to_reach"], t["ratio"],
              t["iterations_budget"], "passed" if t["passed"] else "NOT met"]]))
    return "\n\n".join(parts)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", default=",".join(CASES), help=f"comma list of {', '.join(CASES)}")
    ap.add_argument("--minutes", type=float, default=None, help="iso: wall-clock budget per fit (default 10)")
    ap.add_argument("--iterations", type=int, default=None, help="iso: iteration cap per fit (default: the config's)")
    ap.add_argument("--sampler-iterations", type=int, default=None, help="sampler: iterations per fit (default 600)")
    ap.add_argument("--transfer-iterations", type=int, default=None, help="transfer: iterations per fit (default 400)")
    ap.add_argument("--steps", type=int, default=None, help="throughput: timed steps per precision (default 20)")
    ap.add_argument("--no-slicewise", action="store_true", help="iso: skip the 2D slice-wise method")
    ap.add_argument("--quick", action="store_true", help="tiny budgets, networks and crops: plumbing check only")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "volume3d.json")
    ap.add_argument("-v", "--verbose", action="store_true")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO if a.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    cases = [c.strip() for c in a.cases.split(",") if c.strip()]
    bad = [c for c in cases if c not in CASES]
    if bad:
        ap.error(f"unknown case(s) {bad}; choose from {', '.join(CASES)}")
    budget = Budget(a.minutes if a.minutes is not None else (0.2 if a.quick else 10.0),
                    a.iterations if a.iterations is not None else (10 if a.quick else None), a.quick)
    results: dict[str, Any] = {"machine": machine(), "load_average_start": load_average(), "budget": budget.record(),
                               "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "cases": {}}
    print(f"machine: {results['machine']['cpu']}, {results['machine']['cores']} cores, load {results['load_average_start']}",
          flush=True)
    model3d = None
    for name in cases:
        t0, la0 = time.perf_counter(), load_average()
        print(f"--- {name} ...", flush=True)
        if name == "iso":
            results["cases"]["iso"], model3d = case_iso(budget, slicewise=not a.no_slicewise)
        elif name == "sampler":
            results["cases"]["sampler"] = case_sampler(budget, a.sampler_iterations or (10 if a.quick else 600))
        elif name == "throughput":
            results["cases"]["throughput"] = case_throughput(budget, a.steps or (3 if a.quick else 20))
        elif name == "transfer":
            results["cases"]["transfer"] = case_transfer(
                budget, a.transfer_iterations or (10 if a.quick else 400), a.out.parent / "volume3d_transfer.png", model3d)
        results["cases"][name].update(wall_seconds=round(time.perf_counter() - t0, 1), load_average_before=la0,
                                      load_average_after=load_average())
        print(f"    {name} done in {time.perf_counter() - t0:.0f} s (load {load_average()})", flush=True)
        a.out.parent.mkdir(parents=True, exist_ok=True)  # keep what has run, in case a later case fails
        a.out.write_text(json.dumps(_finite(results), indent=1, default=_json_default, allow_nan=False))
    results["load_average_end"] = load_average()
    print()
    print(report(results))
    a.out.write_text(json.dumps(_finite(results), indent=1, default=_json_default, allow_nan=False))
    print(f"\nwrote {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

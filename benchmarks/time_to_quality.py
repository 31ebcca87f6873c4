"""Time to quality: held-out PSNR against wall seconds, from scratch and fine-tuning the shipped model (#15).

For each domain, a reference the shipped weights never saw (``zoo/datasets.py``
names what they saw) is degraded with the domain profile
(:func:`medsat_sr.evaluate.prepare_case`, the protocol of ``medsat-sr
evaluate``); the degraded image is the input of ``upscale --config``:

* **scratch** (``--from-scratch``): the config's network from random weights,
  the config's budget (10 min);
* **fine-tune** (the default): the preferred shipped model that serves the
  config (:func:`medsat_sr.zoo.for_config`; every input here fits it),
  fine-tuned on the input for :data:`DEFAULT_FINETUNE_SECONDS` with the
  settings of :func:`medsat_sr.inference.shipped.finetune_overrides`.

Thick-slice MR runs three times: on the central 96^3 block of the held-out T1,
on the whole volume, which has more for a fit on the input to learn (a
10-minute scratch fit gains more there than on the block), and on the whole
volume again with the fine-tune given ``--budget 300`` (a domain's
``ft_budget``; marked at the scratch arm's marks up to it as well).

One fit per arm and run. At each time mark the fit validates (as a fit of
that budget does when it stops) and its best weights so far are kept; after
the fit, each kept state is applied to the input through
:func:`medsat_sr.inference.upscale` (``force``: the network's output; the
record's decision says whether the guard would keep it) and scored against
the reference with the evaluation protocol's metric (MRI: PSNR in the head
mask). The x axis is the fit's own wall clock (validations included,
inference excluded). The two arms of a domain run side by side, one thread
each, so they share whatever load the machine has. The scratch run's
intermediate points are the progress of a 10-minute run (its cosine schedule
spans the 10 minutes), not runs with that budget; the fine-tune points are
those of the default one-minute fit (of the 300 s fit for ``ft_budget`` 300).

Usage::

    nice -n 10 python benchmarks/time_to_quality.py              # every domain, both arms
    nice -n 10 python benchmarks/time_to_quality.py --domains multiband_x2 --ft-runs 3 --scratch-runs 1

Writes ``benchmarks/results/time_to_quality.txt`` (table) and ``.json`` (the
domains not run keep their last results) and one ``time_to_quality_<domain>.png``
per domain run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "zoo"))

import numpy as np  # noqa: E402
import torch  # noqa: E402

import _machine  # noqa: E402
import datasets as ds  # noqa: E402

RESULTS = HERE / "results"

#: The thick-slice inputs are degraded exactly as the profile assumes; both arms are told so (the config's default,
#: ``degradation: auto``, measures it first: ``degradation_routes.py`` compares the two).
_TOLD = ["degradation=profile"]

#: domain -> config, shipped model, reference (held out of the shipped weights) and crop, time marks.
DOMAINS: dict[str, dict[str, Any]] = {
    "mri_thick_slice": {
        "config": "mri_thick_slice", "held_out": "UIH uMR770 T1 at 1 mm, central 96^3 block, made 4 mm thick",
        "reference": ("uih", [32, 120, 60], [128, 216, 156]), "scale": None, "overrides": _TOLD,
    },
    "mri_thick_slice_whole": {
        "config": "mri_thick_slice", "overrides": _TOLD,
        "held_out": "UIH uMR770 T1 at 1 mm, the whole 160 x 230 x 256 volume, made 4 mm thick",
        "reference": ("uih", None, None), "scale": None,
    },
    "mri_thick_slice_whole_300s": {  # the same input; the fine-tune given --budget 300
        "config": "mri_thick_slice", "ft_budget": 300.0, "overrides": _TOLD,
        "held_out": "UIH uMR770 T1 at 1 mm, the whole 160 x 230 x 256 volume, made 4 mm thick; fine-tune --budget 300",
        "reference": ("uih", None, None), "scale": None,
    },
    "mri_isotropic_x2": {
        "config": "mri_isotropic_x2", "held_out": "UIH uMR770 T1 at 1 mm, central 96^3 block, PSF x2",
        "reference": ("uih", [32, 120, 60], [128, 216, 156]), "scale": None,
    },
    "multiband_x2": {
        "config": "multiband_x2", "held_out": "NAIP right half (columns 466-), 256 x 256 block, PSF x2",
        "reference": ("naip_right", [200, 100], [456, 356]), "scale": None,
    },
    "sentinel2_20m_to_10m": {
        "config": "sentinel2_20m_to_10m", "overrides": ["domain=sentinel2_l1c"],
        "held_out": "S2 L1C T33UUB (DSen2 crop), Wald x2: 20 m bands from 40 m, guided by the 10 m bands at 20 m",
        "reference": ("s2_dsen2", None, None), "scale": None,
    },
}
#: Marks (seconds of fit wall clock) at which the fit's best weights are kept.
MARKS = {"scratch": [30.0, 60.0, 150.0, 300.0, 600.0], "finetune": [0.0, 15.0, 30.0, 60.0]}


def reference(domain: str) -> Any:
    """The held-out reference image of ``domain``."""
    src, start, stop = DOMAINS[domain]["reference"]
    img = ds.uih_1mm() if src == "uih" else ds.naip_halves()[1]
    return img if start is None else ds.crop(img, start, stop)


def case_of(domain: str) -> tuple[Any, Any]:
    """``(config, case)``: the reference degraded with the domain profile (``holdout=0``: fit on the input).

    The Sentinel-2 band set follows ``quality.py``'s row (Wald at reduced
    scale); its case carries the 40 m raster (``coarse``, what GDAL cubic
    upsamples) and the real 20 m bands (``ref``).
    """
    from types import SimpleNamespace

    from medsat_sr.config import load_config
    from medsat_sr.evaluate import prepare_case

    cfg = load_config(DOMAINS[domain]["config"], DOMAINS[domain].get("overrides", []))
    if DOMAINS[domain]["reference"][0] == "s2_dsen2":
        import quality

        bands, coarse, ref, _ = quality.s2_wald(*quality.s2_read(False), cfg)
        return cfg, SimpleNamespace(lr=bands, coarse=coarse, ref=ref, kind="bandset", factors=[2.0, 2.0])
    holdout = None if cfg.profile.name in ("mri", "ct") else 0.0
    return cfg, prepare_case(reference(domain), cfg, name=domain, scale=DOMAINS[domain]["scale"], holdout=holdout)


def _fit_with_marks(case: Any, cfg: Any, init: Any, marks: list[float]) -> tuple[Any, Any, list[dict[str, Any]]]:
    """Fit on ``case.lr``; at each mark validate and keep the best weights so far."""
    from ignite.engine import Events

    from medsat_sr.train import build_trainer

    trainer, _, state = build_trainer(cfg, None, images=[case.lr], init=init, progress=False)
    kept: list[dict[str, Any]] = []
    pending = list(marks)

    def keep(engine: Any, mark: float) -> None:
        if engine.state.iteration != state.last_validated:
            state.validate(engine.state.iteration)  # type: ignore[attr-defined]
        best = state.best_state or {k: v.detach().clone() for k, v in state.model.state_dict().items()}
        kept.append({"mark": mark, "seconds": state.elapsed(), "cpu_seconds": time.process_time(),
                     "iteration": int(engine.state.iteration), "best_iteration": state.best_iteration,
                     "val_psnr": state.best_psnr, "best_ssim": state.best_ssim,
                     "state": {k: v.clone() for k, v in best.items()}})

    @trainer.on(Events.STARTED)
    def _start(engine: Any) -> None:  # registered after the trainer's first validation
        while pending and pending[0] <= 0.0:
            keep(engine, pending.pop(0))

    @trainer.on(Events.ITERATION_COMPLETED)
    def _tick(engine: Any) -> None:
        while pending and state.elapsed() >= pending[0]:
            keep(engine, pending.pop(0))

    @trainer.on(Events.COMPLETED)
    def _end(engine: Any) -> None:  # stopped early (early stopping, iterations): the rest keep the final best
        while pending:
            keep(engine, pending.pop(0))

    trainer.run()
    return trainer, state, kept


def _apply(case: Any, cfg: Any, trainer: Any, state: Any, snap: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """The input upscaled with one kept state, as ``upscale`` does after a fit of that budget."""
    from medsat_sr.inference import upscale
    from medsat_sr.train import _finish

    state.best_state, state.best_psnr, state.best_ssim = snap["state"], snap["val_psnr"], snap["best_ssim"]
    state.best_iteration = snap["best_iteration"]
    fr = _finish(state, trainer)
    res = upscale(case.lr, fit=fr, config=cfg, scale=list(case.factors) if case.kind == "volume" else None,
                  force=True, sidecar=False, progress=False)
    return res.image, res.record.get("decision") or {}


def _score(cfg: Any, case: Any, images: dict[str, Any]) -> dict[str, dict[str, Any]]:
    from medsat_sr.evaluate import MethodRun, _score_case

    if case.kind == "bandset":  # quality.py's S2 metric: mean RMSE of the six 20 m bands (and band-mean PSNR)
        import quality

        m = {k: quality.s2_metrics(img, case.ref) for k, img in images.items()}
        return {k: {"psnr": v["psnr_band_mean"], "ssim": None, "rmse": v["rmse_mean"]} for k, v in m.items()}
    images = {k: v.as_tensor().detach().float().cpu().numpy() for k, v in images.items()}
    runs = {m: MethodRun(name=m, kind="x", image=a, seconds=0.0, peak_rss_mb=0.0, peak_rss_increase_mb=0.0)
            for m, a in images.items()}
    res = _score_case(cfg, case, runs)
    key = "psnr_masked" if case.kind == "volume" else "psnr"
    return {m: {"psnr": float(r[key]), "ssim": r.get("ssim_masked" if case.kind == "volume" else "ssim")}
            for m, r in res.methods.items()}


def _shape(img: Any) -> Any:
    """An input's shape; a band set's per group."""
    groups = getattr(img, "groups", None)
    return {k: [int(v) for v in g.shape] for k, g in groups.items()} if groups else [int(v) for v in img.shape]


def worker(domain: str, arm: str, runs: int, out: Path) -> None:
    """One arm of one domain: ``runs`` fits, each scored at every mark; JSON to ``out``."""
    from medsat_sr import zoo
    from medsat_sr.config import load_config
    from medsat_sr.inference import upscale
    from medsat_sr.inference.options import DEFAULT_FINETUNE_SECONDS
    from medsat_sr.inference.shipped import finetune_overrides

    torch.set_num_threads(1)
    base, case = case_of(domain)
    cubic = upscale(getattr(case, "coarse", case.lr), method="cubic", scale=list(case.factors), sidecar=False,
                    progress=False)
    budget = float(DOMAINS[domain].get("ft_budget", DEFAULT_FINETUNE_SECONDS))
    marks = MARKS[arm] + ([m for m in MARKS["scratch"] if max(MARKS["finetune"]) < m <= budget] if arm == "finetune" else [])
    rows: list[dict[str, Any]] = []
    for run in range(runs):
        if arm == "finetune":
            name = zoo.for_config(base.name)
            cfg = load_config(base, [*finetune_overrides(base, budget), f"train.seed={run}"])
            init = str(zoo.checkpoint(name))
        else:
            cfg, init = load_config(base, [f"train.seed={run}"]), None
        cpu0 = time.process_time()
        trainer, state, kept = _fit_with_marks(case, cfg, init, marks)
        for snap in kept:
            img, decision = _apply(case, cfg, trainer, state, snap)
            s = _score(cfg, case, {"model": img, "cubic": cubic.image})
            rows.append({"run": run, "mark": snap["mark"], "seconds": round(snap["seconds"], 1),
                         "cpu_seconds": round(snap["cpu_seconds"] - cpu0, 1), "iteration": snap["iteration"],
                         "val_psnr": snap["val_psnr"], "psnr": s["model"]["psnr"], "ssim": s["model"]["ssim"],
                         "psnr_cubic": s["cubic"]["psnr"], "ssim_cubic": s["cubic"]["ssim"],
                         "rmse_ratio": s["model"]["rmse"] / s["cubic"]["rmse"] if "rmse" in s["model"] else None,
                         "guard_keeps_model": not decision.get("forced", False)})
            print(json.dumps({k: v for k, v in rows[-1].items()}), flush=True)
    out.write_text(json.dumps({"domain": domain, "arm": arm, "held_out": DOMAINS[domain]["held_out"],
                               "machine": _machine.describe(), "input_shape": _shape(case.lr), "rows": rows}, indent=1))


def _median_or_none(values: Any) -> float | None:
    vals = [v for v in values if v is not None]
    return statistics.median(vals) if vals else None


def _median_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for mark in sorted({r["mark"] for r in rows}):
        rs = [r for r in rows if r["mark"] == mark]
        out.append({"mark": mark, "n": len(rs), "seconds": statistics.median(r["seconds"] for r in rs),
                    "iteration": int(statistics.median(r["iteration"] for r in rs)),
                    "psnr": statistics.median(r["psnr"] for r in rs),
                    "ssim": _median_or_none(r["ssim"] for r in rs),
                    "rmse_ratio": _median_or_none(r.get("rmse_ratio") for r in rs),
                    "psnr_cubic": rs[0]["psnr_cubic"], "ssim_cubic": rs[0]["ssim_cubic"],
                    "guard": sum(bool(r["guard_keeps_model"]) for r in rs)})
    return out


def _num(v: float | None, fmt: str) -> str:
    width = int(fmt.split(".")[0])
    return format(v, fmt) if v is not None else "-".rjust(width)


def report(results: dict[str, dict[str, Any]], load: list[Any], figures: Any = ()) -> str:
    """The table of every domain in ``results``, and one PNG for each domain in ``figures``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lines = [f"time to quality on held-out data (#15); report written on: {_machine.describe()}",
             "each arm: one thread, the two arms of a domain side by side (shared machine); load average after each domain: "
             f"{load}", "PSNR: evaluation protocol (MRI: in the head mask; Sentinel-2: mean over the six 20 m bands), "
             "dB; RMSE/cubic: Sentinel-2's metric (quality.py), mean RMSE of the six bands over GDAL cubic's; "
             "median of the runs at each mark",
             ""]
    for domain, arms in results.items():
        lines.append(f"{domain}: {arms['finetune']['held_out']}; input {arms['finetune']['input_shape']}")
        lines.append(f"  machine: {arms['finetune'].get('machine', 'not recorded')}")
        lines.append(f"  {'arm':9s} {'mark s':>7s} {'fit s':>7s} {'iter':>6s} {'runs':>4s} {'PSNR':>7s} "
                     f"{'vs cubic':>8s} {'SSIM':>7s} {'RMSE/cubic':>10s} guard keeps")
        fig, ax = plt.subplots(figsize=(11, 6.5), dpi=110)
        for arm, style in (("finetune", "o-"), ("scratch", "s-")):
            med = _median_rows(arms[arm]["rows"])
            for r in med:
                lines.append(f"  {arm:9s} {r['mark']:7.0f} {r['seconds']:7.1f} {r['iteration']:6d} {r['n']:4d} "
                             f"{r['psnr']:7.2f} {r['psnr'] - r['psnr_cubic']:+8.2f} {_num(r['ssim'], '7.4f')} "
                             f"{_num(r['rmse_ratio'], '10.3f')} {r['guard']}/{r['n']}")
            label = "fine-tune from the shipped model" if arm == "finetune" else "from scratch (today's default)"
            ax.plot([r["seconds"] for r in med], [r["psnr"] for r in med], style, label=label)
        cubic = arms["finetune"]["rows"][0]
        lines.append(f"  {'cubic':9s} {'-':>7s} {'-':>7s} {'-':>6s} {'':>4s} {cubic['psnr_cubic']:7.2f} {0:+8.2f} "
                     f"{_num(cubic['ssim_cubic'], '7.4f')} {_num(1.0 if cubic.get('rmse_ratio') else None, '10.3f')}")
        lines.append("")
        ax.axhline(cubic["psnr_cubic"], color="gray", ls="--", label="cubic")
        ax.set_xscale("symlog", linthresh=10)
        ax.set_xlim(0, 1.15 * max(MARKS["scratch"]))
        ax.set_xlabel("fit wall-clock seconds (one thread, shared 2-core CPU)")
        ax.set_ylabel("PSNR on the held-out reference (dB)")
        ax.set_title(f"{domain}: {arms['finetune']['held_out']}")
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right")
        fig.tight_layout()
        if domain in figures:
            fig.savefig(RESULTS / f"time_to_quality_{domain}.png")
        plt.close(fig)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--domains", nargs="+", default=list(DOMAINS), choices=list(DOMAINS))
    p.add_argument("--ft-runs", type=int, default=3)
    p.add_argument("--scratch-runs", type=int, default=1)
    p.add_argument("--work", type=Path, default=Path("/tmp/time_to_quality"))
    p.add_argument("--report-only", action="store_true", help="rebuild the table and figures from --work")
    p.add_argument("--worker", nargs=2, metavar=("DOMAIN", "ARM"), help=argparse.SUPPRESS)
    p.add_argument("--runs", type=int, default=1, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    a.work.mkdir(parents=True, exist_ok=True)
    if a.worker:
        worker(a.worker[0], a.worker[1], a.runs, a.work / f"{a.worker[0]}_{a.worker[1]}.json")
        return 0
    loads = []
    for domain in a.domains if not a.report_only else []:
        procs = [subprocess.Popen([sys.executable, __file__, "--worker", domain, arm, "--runs", str(n),
                                   "--work", str(a.work)], stdout=open(a.work / f"{domain}_{arm}.log", "w"),
                                  stderr=subprocess.STDOUT, env={**os.environ, "OMP_NUM_THREADS": "1"})
                 for arm, n in (("scratch", a.scratch_runs), ("finetune", a.ft_runs))]
        for pr in procs:
            if pr.wait() != 0:
                print(f"{domain}: a worker failed, see {a.work}", file=sys.stderr)
                return 1
        loads.append(_machine.load_average())
    table = RESULTS / "time_to_quality.json"  # the domains not run this time keep their last results
    results: dict[str, dict[str, Any]] = json.loads(table.read_text()) if table.is_file() else {}
    for domain in a.domains:
        files = {arm: a.work / f"{domain}_{arm}.json" for arm in ("finetune", "scratch")}
        if all(f.is_file() for f in files.values()):
            results[domain] = {arm: json.loads(f.read_text()) for arm, f in files.items()}
    RESULTS.mkdir(exist_ok=True)
    results = {d: results[d] for d in DOMAINS if d in results}
    text = report(results, loads or ["see the runs' logs"], figures=set(a.domains))
    (RESULTS / "time_to_quality.txt").write_text(text + "\n")
    table.write_text(json.dumps(results, indent=1))
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

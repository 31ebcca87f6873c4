"""The whole-volume time-to-quality row at fixed iteration counts: is the bf16 machine's gap iterations or arithmetic?

``time_to_quality.py`` (domain ``mri_thick_slice_whole``) gives its fits a
wall-clock budget, so a faster CPU trains more iterations. On an AMD EPYC with
native bf16 (stop 26) the 60 s fine-tune ran 171 iterations and the 10-minute
scratch fit 2094, and the fine-tune ended 0.13 dB under scratch; on an
AVX2-only EPYC (fp32: 60 and 725 iterations) it ended 0.04 dB over. This
script replays the bf16 machine's iteration counts on any CPU: the same held-out
input (the UIH T1, whole volume, made 4 mm thick), the same fits (the shipped
``mri_thick_slice_x4`` fine-tuned with the default fine-tune settings; the
config's network from scratch), each stopped at a fixed iteration count with
its cosine schedule spanning those iterations, scored as ``time_to_quality.py``
scores (PSNR in the head mask against the 1 mm truth). The two arms run side by
side, one thread each. With ``--precision fp32`` on a CPU without bf16, a gap
that stays is the iteration counts; one that closes is the arithmetic.

Usage::

    nice -n 10 python benchmarks/iteration_matched.py                     # about 35 minutes on 2 cores
    nice -n 10 python benchmarks/iteration_matched.py --ft-iters 171 --scratch-iters 2094 --ft-runs 3

Writes ``benchmarks/results/iteration_matched.txt`` and ``.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _machine  # noqa: E402
import time_to_quality as ttq  # noqa: E402

DOMAIN = "mri_thick_slice_whole"
OUT = HERE / "results" / "iteration_matched"


def worker(arm: str, iters: int, runs: int, precision: str, out: Path) -> None:
    """``runs`` fits of one arm, each stopped at ``iters`` iterations and scored; JSON to ``out``."""
    import torch

    from medsat_sr import zoo
    from medsat_sr.config import load_config
    from medsat_sr.inference import upscale
    from medsat_sr.inference.shipped import finetune_overrides

    torch.set_num_threads(1)
    base, case = ttq.case_of(DOMAIN)
    cubic = upscale(case.lr, method="cubic", scale=list(case.factors), sidecar=False, progress=False)
    fixed = [f"train.max_iterations={iters}", "train.max_minutes=100000", f"train.precision={precision}"]
    rows = []
    for run in range(runs):
        if arm == "finetune":
            cfg = load_config(base, [*finetune_overrides(base, 60.0), *fixed, f"train.seed={run}"])
            init: Any = str(zoo.checkpoint(zoo.for_config(base.name)))
        else:
            cfg, init = load_config(base, [*fixed, f"train.seed={run}"]), None
        trainer, state, kept = ttq._fit_with_marks(case, cfg, init, [float("inf")])
        img, _ = ttq._apply(case, cfg, trainer, state, kept[-1])
        s = ttq._score(cfg, case, {"model": img, "cubic": cubic.image})
        rows.append({"run": run, "iterations": kept[-1]["iteration"], "seconds": round(kept[-1]["seconds"], 1),
                     "psnr": s["model"]["psnr"], "psnr_cubic": s["cubic"]["psnr"]})
        print(json.dumps(rows[-1]), flush=True)
    out.write_text(json.dumps({"arm": arm, "precision": precision, "machine": _machine.describe(), "rows": rows}))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ft-iters", type=int, default=171, help="the bf16 machine's iterations in the 60 s fine-tune")
    p.add_argument("--scratch-iters", type=int, default=2094, help="its iterations in the 10-minute scratch fit")
    p.add_argument("--ft-runs", type=int, default=3)
    p.add_argument("--scratch-runs", type=int, default=1)
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    p.add_argument("--worker", nargs=4, metavar=("ARM", "ITERS", "RUNS", "OUT"), help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.worker:
        worker(a.worker[0], int(a.worker[1]), int(a.worker[2]), a.precision, Path(a.worker[3]))
        return 0
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="medsat_iters_") as tmp:
        jobs = {"finetune": (a.ft_iters, a.ft_runs), "scratch": (a.scratch_iters, a.scratch_runs)}
        procs = {arm: subprocess.Popen([sys.executable, __file__, "--precision", a.precision, "--worker", arm,
                                        str(it), str(n), str(Path(tmp) / f"{arm}.json")])
                 for arm, (it, n) in jobs.items()}
        if any(pr.wait() != 0 for pr in procs.values()):
            print("a worker failed", file=sys.stderr)
            return 1
        res = {arm: json.loads((Path(tmp) / f"{arm}.json").read_text()) for arm in jobs}
    cubic = res["finetune"]["rows"][0]["psnr_cubic"]
    lines = [f"# benchmarks/iteration_matched.py: {DOMAIN} at fixed iteration counts, {a.precision}",
             f"machine: {_machine.describe()}; one thread per arm, the arms side by side",
             "input: UIH uMR770 T1 at 1 mm, the whole volume, made 4 mm thick (held out of the shipped weights);",
             "PSNR in the head mask against the 1 mm truth (dB)", "",
             f"{'arm':<36}| {'iterations':>10} | {'runs':>4} | {'PSNR per run':<22}| {'median':>7} | {'vs cubic':>8}"]
    for arm, label in (("finetune", "fine-tune of mri_thick_slice_x4"), ("scratch", "from scratch")):
        rows = res[arm]["rows"]
        med = statistics.median(r["psnr"] for r in rows)
        per = " ".join(f"{r['psnr']:.2f}" for r in rows)
        its = "/".join(sorted({str(r["iterations"]) for r in rows}))  # fewer than asked: stopped early
        lines.append(f"{label:<36}| {its:>10} | {len(rows):>4} | {per:<22}| {med:>7.2f} | {med - cubic:>+8.2f}")
    lines.append(f"{'cubic B-spline':<36}| {'-':>10} | {'':>4} | {'':<22}| {cubic:>7.2f} | {0:>+8.2f}")
    fin = statistics.median(r["psnr"] for r in res["finetune"]["rows"])
    scr = statistics.median(r["psnr"] for r in res["scratch"]["rows"])
    lines += ["", f"fine-tune - scratch: {fin - scr:+.2f} dB", f"total {time.perf_counter() - t0:.0f} s"]
    text = "\n".join(lines) + "\n"
    OUT.with_suffix(".txt").write_text(text)
    OUT.with_suffix(".json").write_text(json.dumps(res, indent=1))
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

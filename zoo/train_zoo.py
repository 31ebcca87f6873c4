#!/usr/bin/env python
"""Train the shipped starting points (``medsat_sr/zoo/``) on ``../shared/data`` only.

Each model is fitted with the project's own trainer (:func:`medsat_sr.train.fit`)
on the training samples named in :mod:`datasets` and written as a checkpoint
(safetensors + JSON, :func:`medsat_sr.checkpoint.save_checkpoint`) whose JSON
carries a model card under ``card``: the exact data and their licences and
attributions, what was held out, the degradation, the budget, the validation
scores and the command that made it. Nothing held out by :mod:`datasets` is
read here.

Models (``--models``):

``mri_thick_slice``
    2D EDSR (32 features x 8 blocks, ``upsample: pre`` so that its weights fit
    any through-plane factor), supervised on real through-plane planes: the
    MNI template and 60 % of the studyforrest T1, each degraded along its
    inferior-superior axis by the mri profile's Gaussian slice profile
    (FWHM = slice spacing) at x1.5, 2, 2.5, 3, 4, 5, 6 and 8, each batch at one
    of them (``data.factors``; trained at x4 alone it lost to cubic at x2 and
    x3, ``benchmarks/shipped_factors.py``). Validation: a block of the other
    40 % of studyforrest, at every factor.
``mri_thick_slice_x4``
    the config's own network (2D EDSR, 64 features x 8 blocks, ``upsample:
    post`` x4: it fits through-plane factors in (3, 4]), supervised the same
    way on the 60 % of studyforrest only (a real scan; the template's
    smoothness is not what a scan looks like). The preferred starting point
    of ``upscale --config mri_thick_slice`` where it fits: it learns the
    input's own pairs as fast as the config's network from scratch, which the
    any-factor model does not (``benchmarks/time_to_quality.py``).
``mri_isotropic_x2``
    3D DCSRN (24 features, growth 12, 3 blocks x 4 layers), supervised x2 on
    the same volumes degraded by the mri profile's 3D Gaussian PSF.
``sentinel2_20m_to_10m``
    guided net (64 features x 6 blocks), self-supervised by Wald's protocol on
    tile 29RKH (20 m bands from 40 m plus 10 m guides at 20 m).
``multiband_x2``
    2D EDSR (48 features x 6 blocks) x2, supervised on the left half of the NAIP
    scene (4 bands) degraded by the multiband profile's PSF; validation on a
    held-out block of it.

Usage::

    nice -n 10 python zoo/train_zoo.py                      # all, the budgets below
    nice -n 10 python zoo/train_zoo.py --models multiband_x2 --minutes 2
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import datasets as ds

REPO = ds.REPO
OUT = REPO / "medsat_sr" / "zoo"

#: Per model: config, overrides, budget (minutes), title.
SPECS: dict[str, dict[str, Any]] = {
    "mri_thick_slice": {
        "config": "mri_thick_slice",
        "overrides": ["train.mode=supervised", "scale=[1, 1, 4]",
                      "model.kwargs={features: 32, n_blocks: 8, upsample: pre}", "train.val_every=200",
                      "data.factors=[1.5, 2, 2.5, 3, 4, 5, 6, 8]"],
        "minutes": 40.0,
        "title": "MR thick-slice to isotropic (2D slice network, any through-plane factor; trained at x1.5 to x8)",
        "data": ["mni", "forrest"],
    },
    "mri_thick_slice_x4": {
        "config": "mri_thick_slice",
        "overrides": ["train.mode=supervised", "scale=[1, 1, 4]", "model.kwargs={features: 64, n_blocks: 8}",
                      "train.val_every=50"],
        "minutes": 22.0,
        "title": "MR thick-slice x4 to isotropic (the config's 2D slice network; through-plane factors in (3, 4])",
        "data": ["forrest"],
    },
    "mri_isotropic_x2": {
        "config": "mri_isotropic_x2_supervised",
        "serves": "mri_isotropic_x2",
        "overrides": ["model.kwargs={features: 24, growth: 12, n_blocks: 3, n_layers: 4}", "train.val_every=50"],
        "minutes": 6.0,
        "title": "MR isotropic x2 (3D densely connected network)",
        "data": ["mni", "forrest"],
    },
    "sentinel2_20m_to_10m": {
        "config": "sentinel2_20m_to_10m",
        "overrides": ["model.kwargs={features: 64, n_blocks: 6}", "train.val_every=50"],
        "minutes": 4.0,
        "title": "Sentinel-2 20 m bands to 10 m, guided by the 10 m bands",
        "data": ["s2_29rkh"],
        "read": ["B02", "B03", "B04", "B08", "B05", "B06", "B07", "B8A", "B11", "B12"],  # not the 60 m bands
    },
    "multiband_x2": {
        "config": "multiband_x2",
        "overrides": ["train.mode=supervised", "model.kwargs={features: 48, n_blocks: 6}", "train.val_every=50"],
        "minutes": 4.0,
        "title": "Any 4-band raster x2 (aerial RGBN)",
        "data": ["naip"],
    },
}

HELD_OUT = {
    "mri_thick_slice": "the UIH uMR770 T1 and the 2D sagittal T1 DICOM series (never read); the last 40 % of studyforrest (validation only)",
    "mri_thick_slice_x4": "the MNI template (not used), the UIH uMR770 T1 and the 2D sagittal T1 DICOM series (never read); the last 40 % of studyforrest (validation only)",
    "mri_isotropic_x2": "the UIH uMR770 T1 (never read); the last 40 % of studyforrest (validation only)",
    "sentinel2_20m_to_10m": "the DSen2 T33UUB crop (never read); a held-out area of 29RKH (validation only)",
    "multiband_x2": "the right half of the NAIP scene (never read); a held-out block of the left half (validation only)",
}


def _images(name: str) -> tuple[Any, list[Any] | None, str]:
    """``(images, validation, description)`` of one model."""
    if name == "mri_thick_slice_x4":
        train, val = ds.forrest_split()
        return [train], [val], (f"studyforrest L-R voxels [0, {int(train.shape[1])}) for training; studyforrest block "
                                f"{list(val.shape[1:])} from the rest for validation")
    if name in ("mri_thick_slice", "mri_isotropic_x2"):
        mni = ds.read(ds.MNI)
        train, val = ds.forrest_split()
        if name == "mri_isotropic_x2":
            val = ds.crop(val, [20, 64, 64], [84, 192, 192])  # 3D validation on a smaller block
        desc = (f"MNI template (whole, {list(mni.shape[1:])}) and studyforrest L-R voxels [0, {int(train.shape[1])}) "
                f"for training; studyforrest block {list(val.shape[1:])} from the rest for validation")
        return [mni, train], [val], desc
    if name == "sentinel2_20m_to_10m":
        bands = ds.read(ds.S2_29RKH)
        return bands, None, "tile 29RKH band folder (10 m group B02 B03 B04 B08, 20 m group B05 B06 B07 B8A B11 B12)"
    left, _ = ds.naip_halves()
    return [left], None, f"NAIP left half {list(left.shape[1:])} (columns [0, {int(left.shape[2])}))"


def _sources(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """The card's data sources, each with the identity of every file read (so a run can tell its input was one)."""
    from medsat_sr.zoo.provenance import file_ids

    def read(path: Path) -> bool:
        return "read" not in spec or path.stem in spec["read"]

    return [{**ds.SOURCES[k], "files": file_ids(sorted(p for p in ds.SHARED.glob(ds.SOURCES[k]["file"]) if read(p)))}
            for k in spec["data"]]


def refresh_sources(name: str, out: Path) -> None:
    """Rewrite ``card.data.sources`` of a shipped model's JSON with :func:`_sources` (weights untouched)."""
    path = out / f"{name}.json"
    meta = json.loads(path.read_text(encoding="utf-8"))
    meta["card"]["data"]["sources"] = _sources(SPECS[name])
    path.write_text(json.dumps(meta, indent=2, allow_nan=False) + "\n", encoding="utf-8")


def _card(name: str, spec: dict[str, Any], cfg: Any, fr: Any, desc: str, minutes: float) -> dict[str, Any]:
    from medsat_sr.degrade import describe

    task = (fr.metadata or {}).get("task") or {}
    try:
        degradation = describe(cfg.profile, [float(v) for v in fr.metadata.get("scale") or []])
    except Exception as exc:  # noqa: BLE001 - the card states the degradation either way
        degradation = f"{cfg.profile.name}: {cfg.profile.degradation.model} ({exc})"
    return {
        "name": name,
        "title": spec["title"],
        "serves": spec.get("serves", spec["config"]),
        "trained_with": {"config": spec["config"], "overrides": spec["overrides"], "mode": cfg.train.mode},
        "data": {"used": desc, "sources": _sources(spec), "held_out": HELD_OUT[name]},
        "degradation": {"profile": cfg.profile.name, "model": str(cfg.profile.degradation.model), "recipe": degradation,
                        "pairs": task.get("pairs"), "factor": task.get("factor"),
                        **({"factors": task["factors"]} if task.get("factors") else {})},
        "budget": {"max_minutes": minutes, "iterations": int(fr.iterations), "seconds": round(float(fr.seconds), 1),
                   "stopped_by": fr.stopped_by, "machine": " ".join(filter(None, [platform.machine(), platform.processor()]))
                   + f", 2 shared CPU cores, no GPU, {task.get('precision', 'fp32')} arithmetic"},
        "validation": {"psnr": fr.val_psnr, "psnr_cubic": fr.val_psnr_cubic, "gain_db": fr.val_psnr - fr.val_psnr_cubic,
                       "ssim": fr.val_ssim, "ssim_cubic": fr.val_ssim_cubic,
                       "note": "network units, on the validation data named under data.used"},
        "licence_note": "the weights are derived from the data above; keep these attributions when redistributing",
        "reproduce": f"nice -n 10 python zoo/train_zoo.py --models {name} --minutes {minutes:g}",
    }


def train_one(name: str, minutes: float, out: Path) -> dict[str, Any]:
    """Fit one model and write ``out/<name>.safetensors`` + ``.json``; return its card."""
    from medsat_sr.checkpoint import save_checkpoint
    from medsat_sr.config import load_config
    from medsat_sr.train import fit

    spec = SPECS[name]
    ov = list(spec["overrides"]) + [f"train.max_minutes={minutes}", "train.early_stopping.enabled=false",
                                    "train.max_iterations=100000"]
    cfg = load_config(spec["config"], ov)
    images, val, desc = _images(name)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        fr = fit(images, cfg, run_dir=None, progress=False, validation=val)
    logging.info("%s: %d iterations in %.0f s, val %.2f dB (cubic %.2f)", name, fr.iterations,
                 time.perf_counter() - t0, fr.val_psnr, fr.val_psnr_cubic)
    meta = {k: v for k, v in (fr.metadata or {}).items() if k != "checkpoint"}
    meta["card"] = _card(name, spec, cfg, fr, desc, minutes)
    save_checkpoint(out / name, fr.model, meta)
    return meta["card"]


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(SPECS), help="comma list of " + ", ".join(SPECS))
    ap.add_argument("--minutes", type=float, help="training budget of each model (default: each model's own)")
    ap.add_argument("--out", type=Path, default=OUT, help="where to write (default medsat_sr/zoo)")
    ap.add_argument("--refresh-sources", action="store_true",
                    help="only rewrite the cards' data sources (file names, sizes, sha256); no training")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    unknown = [n for n in names if n not in SPECS]
    if unknown:
        ap.error(f"unknown models {unknown}; known: {list(SPECS)}")
    if args.refresh_sources:
        for n in names:
            refresh_sources(n, args.out)
        return 0
    for n in names:
        card = train_one(n, args.minutes or SPECS[n]["minutes"], args.out)
        print(json.dumps({"name": n, "validation": card["validation"], "budget": card["budget"]}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python
"""Quality benchmark of the learning core (issue 3, "What it must show") on ../shared/data.

Every number comes from the project's own code: references are degraded with
:mod:`medsat_sr.degrade` (through :func:`medsat_sr.evaluate.prepare_case` /
:func:`medsat_sr.evaluate.degrade_reference`), models are fitted with
:func:`medsat_sr.train.fit` and applied with :func:`medsat_sr.inference.upscale`,
and scored with :mod:`medsat_sr.metrics` (through :func:`medsat_sr.evaluate.score`).
"Cubic" is the cubic B-spline for volumes and GDAL cubic (rasterio
``Resampling.cubic``) for rasters, as in :mod:`medsat_sr.baselines`.

Cases (``--cases``):

``mri``
    MRI thick-slice x4, self-supervised (SMORE/ECLARE style). The MNI ICBM152
    2009a T1 template (1 mm isotropic) is degraded by
    :func:`medsat_sr.evaluate.evaluate` with config ``mri_thick_slice`` and
    ``degradation.slice_profile.spacing=4``, ``fwhm=4`` (mm): Gaussian slice
    profile of FWHM 4 mm sampled every 4 mm along the axis closest to
    inferior-superior. The model is fitted on the degraded volume alone.
    Metric: PSNR inside the brain (``psnr_masked``: the mri profile's
    foreground mask, data range = the reference's robust percentile range).
    Floor: >= cubic B-spline + 1.0 dB.
``s2``
    Sentinel-2 20 -> 10 m, guided, self-supervised, Wald's protocol at reduced
    scale on the DSen2 crop (T33UUB, L1C; ``im10`` B04,B03,B02,B08 600x600,
    ``im20`` B05,B06,B07,B8A,B11,B12 300x300, read with h5py; h5py gives
    ``(band, x, y)``, the last two axes are swapped to ``(row, col)``; DN /
    10000 = reflectance). ``im10`` is degraded to 20 m and ``im20`` to 40 m
    with the ``sentinel2_l1c`` profile's per-band MTF-matched Gaussian PSF and
    decimation (:func:`medsat_sr.evaluate.degrade_reference`, i.e.
    :func:`medsat_sr.degrade.psf_decimate`). These two groups form a
    :class:`~medsat_sr.image.BandSet` (``make_raster`` with a synthetic north-up
    transform, pixel 20 / 40 m, origin (0, 0), ``crs=None``: only the
    relative geometry matters). :func:`medsat_sr.train.fit` with config
    ``sentinel2_20m_to_10m`` (``domain=sentinel2_l1c``) trains the guided net
    on the band set's own Wald pairs one level further down (40 -> 80 m
    targets, 20 -> 40 m guide) and :func:`~medsat_sr.inference.upscale`
    predicts the 20 m bands from (40 m coarse, 20 m guide). Metric: mean
    RMSE (reflectance) of the six bands against the real 20 m bands. Floor:
    <= 0.5 x GDAL cubic. The unguided variant (model ``unguided``, the guided
    architecture without its guide, config ``multiband_x2`` with the same
    profile and model size) is fitted on the 40 m bands alone (Wald 80 -> 40)
    to show what the 10 m guidance buys.
``naip``
    4-band aerial x2, self-supervised on the NAIP scene itself: evaluate's
    ``holdout=0.5`` protocol with config ``multiband_x2`` (fit on the left
    half of the high-resolution scene, by Wald's protocol; every method is
    scored on the right half, degraded x2 with the profile's PSF). Metric:
    PSNR (per-image data range = reference max - min). Floor: >= GDAL cubic
    + 2.0 dB.
``transfer``
    Fine-tuning against training from scratch. Source model: the ``mri``
    case's fitted model (or, when ``mri`` is not run, a fit on the MNI case
    with the same budget). Target sample: the TotalSegmentator example CT
    (3 mm isotropic), made thick-slice x4 along inferior-superior by
    :func:`medsat_sr.evaluate.prepare_case` with config ``ct_thick_slice``
    (so the model scale is the same x4). Scratch: ``ct_thick_slice``.
    Fine-tune: ``mri_finetune`` with ``domain=ct`` (head and first 2 blocks
    frozen, lr 1e-4, the checkpoint's architecture; ``fit(init=module)``
    fine-tunes a copy, the source model is left as it was). Both: the
    same iteration budget (``--iterations``, default 500; time budget
    ``max(--minutes, 60)`` so that iterations decide), the same seed,
    validation split and normalisation (the CT's, HU window),
    early stopping off, validation every ``budget/20`` iterations. Reported
    from the :class:`~medsat_sr.train.FitResult` histories: the best
    validation PSNR of scratch, the first iteration at which each run
    reaches it (fine-tune: within 0.01 dB), and their ratio. Floor: ratio
    <= 0.5. Curves: ``transfer_curves.png`` next to ``--out``.
``precision``
    bf16 (``torch.autocast("cpu")`` + channels_last, as :mod:`medsat_sr.train`
    does) against fp32 on the ``mri`` case. Speed: median and minimum of
    ``--steps`` training steps (forward, loss, backward, optimiser step on the
    trainers' own batches, model, loss and optimiser from
    :func:`medsat_sr.train.build_trainer`), the two precisions interleaved
    step by step so that the load of a shared machine hits both alike.
    Quality: two full ``evaluate`` runs with the same iteration budget
    (``--iterations``, default 300; time budget ``max(--minutes, 60)``,
    early stopping off); difference of the masked PSNR.

Budgets: every fit gets ``train.max_minutes = --minutes`` (default 10); with
``--iterations N`` also ``train.max_iterations = N`` (else the config's cap),
so that results can be made independent of the machine's load. Iterations
done, seconds, stop reason and the load average before and after each case
are recorded. Other settings are the shipped configs' (the ones users run).

``--quick`` checks the plumbing end to end in a few minutes: 0.2 min and 20
iterations per fit, a small network (16 features x 2 blocks), batch 4,
32-pixel patches, validation every 5 iterations, central crops of the data
(MNI 96x112x96, S2 240 px at 10 m, NAIP 192x256). Its numbers mean nothing.

Usage::

    python benchmarks/quality.py                        # full run (about 1.5 hours on 2 cores)
    python benchmarks/quality.py --cases naip --minutes 3
    python benchmarks/quality.py --quick                # plumbing check, a few minutes
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import math
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from _machine import load_average, machine

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(REPO))
SHARED = REPO.parent / "shared" / "data"
MNI = SHARED / "nifti" / "nilearn" / "nilearn" / "datasets" / "data" / "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"
S2_MAT = SHARED / "geotiff" / "sentinel2_l1c_native_10m20m60m_DSen2_T33UUB" / "S2A_MSIL1C_20170527_T33UUB.mat"
NAIP = SHARED / "geotiff" / "naip_4band_m_4709963_se_14_1_20180716_opengeos-data" / "m_4709963_se_14_1_20180716.tif"
CT = SHARED / "nifti" / "TotalSegmentator" / "tests" / "reference_files" / "example_ct.nii.gz"

CASES = ("mri", "s2", "naip", "transfer", "precision")
S2_10M = ["B04", "B03", "B02", "B08"]          # im10 band order in the DSen2 .mat
S2_20M = ["B05", "B06", "B07", "B8A", "B11", "B12"]  # im20 band order
FLOORS = {"mri": 1.0, "s2": 0.5, "naip": 2.0, "transfer": 0.5}


# --------------------------------------------------------------------------- machine and load
def need(path: Path, what: str) -> Path:
    """``path``, or exit with a clear message when the shared data are missing."""
    if not path.exists():
        sys.exit(f"quality.py: {what} not found at {path}\n"
                 f"  the benchmark reads the shared data folder {SHARED} (next to the repository); "
                 "put the data there or run only the cases whose data exist (--cases)")
    return path


# --------------------------------------------------------------------------- budgets
class Budget:
    """Training budget and quick-mode settings turned into config overrides.

    Attributes:
        minutes: ``train.max_minutes`` of every fit.
        iterations: ``train.max_iterations`` cap, or ``None`` for the config's.
        quick: tiny networks, batches, patches and crops.
    """

    def __init__(self, minutes: float, iterations: int | None, quick: bool) -> None:
        self.minutes = float(minutes)
        self.iterations = iterations
        self.quick = quick

    def overrides(self, *, early_stopping: bool | None = None, iterations: int | None = None,
                  val_every: int | None = None, minutes: float | None = None) -> list[str]:
        """``--set`` items for one fit.

        Args:
            early_stopping: force early stopping on/off (``None``: the config's).
            iterations: an iteration cap for this fit instead of ``self.iterations``.
            val_every: validation interval instead of the config's.
            minutes: a time budget instead of ``self.minutes``.
        """
        out = [f"train.max_minutes={self.minutes if minutes is None else minutes}"]
        it = iterations if iterations is not None else self.iterations
        if it is not None:
            out.append(f"train.max_iterations={int(it)}")
        if early_stopping is not None:
            out.append(f"train.early_stopping.enabled={'true' if early_stopping else 'false'}")
        if self.quick:
            out += ["model.kwargs={features: 16, n_blocks: 2}", "train.batch_size=4", "train.patch_size=32",
                    "train.schedule.warmup_iterations=0"]
            val_every = val_every or 5
        if val_every is not None:
            out.append(f"train.val_every={int(val_every)}")
        return out

    def record(self) -> dict[str, Any]:
        """JSON data of the budget."""
        return {"minutes": self.minutes, "iterations": self.iterations, "quick": self.quick}


def fit_record(fr: Any) -> dict[str, Any]:
    """The numbers of a :class:`~medsat_sr.train.FitResult` worth keeping."""
    return {
        "iterations": int(fr.iterations), "seconds": round(float(fr.seconds), 2), "stopped_by": fr.stopped_by,
        "val_psnr": fr.val_psnr, "val_psnr_cubic": fr.val_psnr_cubic, "val_ssim": fr.val_ssim,
        "val_ssim_cubic": fr.val_ssim_cubic, "history": fr.history,
        "architecture": getattr(fr.model, "config", None), "task": (fr.metadata or {}).get("task"),
    }


def centre_crop(img: Any, size: Sequence[int]) -> Any:
    """Central crop of a volume or raster (``size`` per spatial axis; larger sizes keep the axis)."""
    from medsat_sr.evaluate import crop_image

    shape = [int(v) for v in img.shape[1:]]
    keep = [min(n, int(s)) for n, s in zip(shape, size)]
    start = [(n - k) // 2 for n, k in zip(shape, keep)]
    return crop_image(img, start, [a + k for a, k in zip(start, keep)])


def _evaluation_row(ev: Any, key: str) -> dict[str, Any]:
    """Cubic and model numbers of a one-file :class:`~medsat_sr.evaluate.Evaluation`."""
    f = ev.files[0]
    cubic, model = f.methods["cubic"], f.methods["model"]
    fit = model.get("fit", {})
    return {
        "metric": key, "cubic": cubic[key], "model": model[key], "gain_db": model[key] - cubic[key],
        "ssim_cubic": cubic.get("ssim_masked"), "ssim_model": model.get("ssim_masked"),
        "iterations": fit.get("iterations"), "fit_seconds": fit.get("seconds"), "stopped_by": fit.get("stopped_by"),
        "val_psnr": fit.get("val_psnr"), "val_psnr_cubic": fit.get("val_psnr_cubic"),
    }


# --------------------------------------------------------------------------- case 1: MRI thick-slice x4
def mni_reference(budget: Budget) -> Any:
    """The MNI template as a volume (centre-cropped in quick mode)."""
    from medsat_sr.io import read

    img = read(need(MNI, "the MNI ICBM152 template"))
    return centre_crop(img, (96, 112, 96)) if budget.quick else img


#: The degradation the MRI case is simulated with, and the fit assumes (pinned: mri_thick_slice measures it by
#: default, which degradation_routes.py benchmarks; here the fit is told the truth).
MRI_DEGRADATION = ["degradation.slice_profile.spacing=4", "degradation.slice_profile.fwhm=4", "degradation.estimate=profile"]


def case_mri(budget: Budget, *, extra: Sequence[str] = (), iterations: int | None = None,
             early_stopping: bool | None = None, minutes: float | None = None) -> tuple[dict[str, Any], Any]:
    """Row 1: the evaluation protocol on the MNI template with ``mri_thick_slice``.

    Returns:
        ``(row, evaluation)``.
    """
    from medsat_sr.evaluate import evaluate

    ov = MRI_DEGRADATION + budget.overrides(early_stopping=early_stopping, iterations=iterations,
                                            minutes=minutes) + list(extra)
    ev = evaluate([mni_reference(budget)], "mri_thick_slice", methods="model", overrides=ov, names=["mni_t1"],
                  progress=False, figures=False)
    row = _evaluation_row(ev, "psnr_masked")
    row.update(case="MRI thick-slice x4 (MNI, PSNR in brain)", floor=f"gain >= +{FLOORS['mri']:.1f} dB",
               passed=row["gain_db"] >= FLOORS["mri"], overrides=ov)
    return row, ev


# --------------------------------------------------------------------------- case 2: Sentinel-2 guided
def s2_read(quick: bool) -> tuple[np.ndarray, np.ndarray]:
    """``im10`` ``(4, H, W)`` and ``im20`` ``(6, H/2, W/2)`` as reflectance, rows first."""
    import h5py

    with h5py.File(need(S2_MAT, "the DSen2 Sentinel-2 crop"), "r") as f:
        im10 = np.swapaxes(np.asarray(f["im10"], dtype=np.float32), 1, 2) / 10000.0
        im20 = np.swapaxes(np.asarray(f["im20"], dtype=np.float32), 1, 2) / 10000.0
    if quick:
        n = 240
        r0, c0 = (im10.shape[1] - n) // 4 * 2, (im10.shape[2] - n) // 4 * 2  # even: the 20 m grid lines up
        im10 = im10[:, r0 : r0 + n, c0 : c0 + n]
        im20 = im20[:, r0 // 2 : (r0 + n) // 2, c0 // 2 : (c0 + n) // 2]
    return np.ascontiguousarray(im10), np.ascontiguousarray(im20)


def s2_wald(im10: np.ndarray, im20: np.ndarray, cfg: Any) -> tuple[Any, Any, np.ndarray, dict[str, Any]]:
    """Wald at reduced scale: ``(band set 20/40 m, coarse 40 m raster, 20 m reference, degradation records)``.

    10 -> 20 m and 20 -> 40 m with the profile's per-band MTF PSF; synthetic
    north-up transforms (origin 0, 0; only relative geometry matters, hence crs None).
    """
    import torch

    from medsat_sr.evaluate import degrade_reference
    from medsat_sr.image import BandSet, make_raster

    g20, _, rec10 = degrade_reference(torch.from_numpy(im10), cfg.profile, [2.0, 2.0], band_names=S2_10M)
    t40, _, rec20 = degrade_reference(torch.from_numpy(im20), cfg.profile, [2.0, 2.0], band_names=S2_20M)
    guide = make_raster(g20, (20.0, 0.0, 0.0, 0.0, -20.0, 0.0), crs=None, band_names=S2_10M)
    coarse = make_raster(t40, (40.0, 0.0, 0.0, 0.0, -40.0, 0.0), crs=None, band_names=S2_20M)
    return BandSet(groups={"20m": guide, "40m": coarse}), coarse, im20.astype(np.float64), {"10m": rec10, "20m": rec20}


def s2_metrics(img: Any, ref: np.ndarray) -> dict[str, Any]:
    """The 20 m bands of ``img`` scored against ``ref``: RMSE per band and its mean (the S2 row's metric), PSNR, SAM, ERGAS."""
    from medsat_sr.evaluate import score
    from medsat_sr.image import Key

    names = list(img.meta[Key.BAND_NAMES])
    a = img.as_tensor().detach().float().cpu().numpy()
    arr = np.stack([a[names.index(b)] for b in S2_20M]).astype(np.float64)
    valid = np.ones(ref.shape[1:], bool)
    ranges = [float(b.max() - b.min()) for b in ref]
    r = score(arr, ref, kind="raster", data_range=float(ref.max() - ref.min()), band_ranges=ranges, valid=valid,
              mask=valid, scale=2.0, ergas_h_over_l=0.5, band_names=S2_20M)
    return {"rmse_mean": float(np.mean(r["per_band"]["rmse"])), "rmse_per_band": r["per_band"]["rmse"],
            "psnr_band_mean": r["psnr_band_mean"], "sam": r.get("sam"), "ergas": r.get("ergas")}


def case_s2(budget: Budget) -> dict[str, Any]:
    """Row 2: guided and unguided Wald-at-reduced-scale on the DSen2 crop, RMSE vs GDAL cubic."""
    from medsat_sr.config import load_config
    from medsat_sr.inference import upscale
    from medsat_sr.train import fit

    im10, im20 = s2_read(budget.quick)
    ov = ["domain=sentinel2_l1c"] + budget.overrides()
    cfg = load_config("sentinel2_20m_to_10m", ov)
    bands, coarse, ref, recs = s2_wald(im10, im20, cfg)

    def metrics_of(img: Any) -> dict[str, Any]:
        return s2_metrics(img, ref)

    t0 = time.perf_counter()
    cub = upscale(coarse, method="cubic", scale=2, sidecar=False)
    out: dict[str, Any] = {"cubic": {**metrics_of(cub.image), "seconds": time.perf_counter() - t0}}

    t0 = time.perf_counter()
    fr = fit(bands, cfg, progress=False)
    res = upscale(bands, fit=fr, config=cfg, force=True, sidecar=False)
    out["guided"] = {**metrics_of(res.image), "seconds": time.perf_counter() - t0, "fit": fit_record(fr)}

    ov_u = ["domain=sentinel2_l1c", "bands.targets=[20m]", "model.name=unguided",
            f"model.kwargs={json.dumps(cfg.model.kwargs).replace(chr(34), '')}"] + budget.overrides()
    ov_u = list(dict.fromkeys(ov_u))
    cfg_u = load_config("multiband_x2", ov_u)
    t0 = time.perf_counter()
    fu = fit(coarse, cfg_u, progress=False)
    res_u = upscale(coarse, fit=fu, config=cfg_u, force=True, sidecar=False)
    out["unguided"] = {**metrics_of(res_u.image), "seconds": time.perf_counter() - t0, "fit": fit_record(fu)}

    c = out["cubic"]["rmse_mean"]
    for k in ("guided", "unguided"):
        out[k]["ratio_vs_cubic"] = out[k]["rmse_mean"] / c
    return {
        "case": "Sentinel-2 20->10 m (Wald reduced: 40->20 m, guide 20 m)", "floor": "RMSE <= 0.5 x cubic",
        "passed": out["guided"]["ratio_vs_cubic"] <= FLOORS["s2"], "results": out,
        "settings": {"overrides_guided": ov, "overrides_unguided": ov_u, "degradation_10m": recs["10m"],
                     "degradation_20m": recs["20m"], "reference_shape": list(im20.shape),
                     "guide_shape": list(bands.groups["20m"].shape), "coarse_shape": list(coarse.shape),
                     "units": "top-of-atmosphere reflectance (DN / 10000)",
                     "geometry": "synthetic transforms (20 / 40 m pixels, origin 0,0), crs None",
                     "rmse": "per band over every pixel, then the mean of the six bands"},
    }


# --------------------------------------------------------------------------- case 3: NAIP
def case_naip(budget: Budget) -> tuple[dict[str, Any], Any]:
    """Row 3: evaluate's holdout protocol (fit left half, score right half) with ``multiband_x2``."""
    from medsat_sr.evaluate import evaluate
    from medsat_sr.io import read

    img = read(need(NAIP, "the NAIP 4-band scene"))
    if budget.quick:
        img = centre_crop(img, (192, 256))
    ov = budget.overrides()
    ev = evaluate([img], "multiband_x2", methods="model", overrides=ov, holdout=0.5, names=["naip"],
                  progress=False, figures=False)
    row = _evaluation_row(ev, "psnr")
    row.update(case="4-band aerial x2 (NAIP, right half)", floor=f"gain >= +{FLOORS['naip']:.1f} dB",
               passed=row["gain_db"] >= FLOORS["naip"], overrides=ov)
    return row, ev


# --------------------------------------------------------------------------- case 4: transfer
def reach(history: Sequence[dict[str, Any]], target: float, tol: float = 0.0) -> int | None:
    """First iteration whose validation PSNR is >= ``target - tol`` (``None``: never)."""
    for h in history:
        v = h.get("val_psnr")
        if v is not None and math.isfinite(float(v)) and float(v) >= target - tol:
            return int(h["iteration"])
    return None


def case_transfer(budget: Budget, out_png: Path, source_model: Any = None) -> dict[str, Any]:
    """Row 4: fine-tune (from the MNI model) vs scratch on the thick-slice CT, same iteration budget."""
    from medsat_sr.evaluate import prepare_case
    from medsat_sr.io import read
    from medsat_sr.train import fit

    iters = budget.iterations or (20 if budget.quick else 500)
    val_every = max(1, iters // 20)
    src_info = "the mri case's fitted model"
    if source_model is None:
        from medsat_sr.config import load_config

        src_info = "a fit on the MNI thick-slice case (mri_thick_slice, same budget)"
        cfg_src = load_config("mri_thick_slice", MRI_DEGRADATION + budget.overrides())
        src_case = prepare_case(mni_reference(budget), cfg_src)
        source_model = fit([src_case.lr], cfg_src, progress=False).model
    ct_cfg_ov = ["degradation.slice_profile.spacing=12", "degradation.slice_profile.fwhm=12"]
    common = budget.overrides(early_stopping=False, iterations=iters, val_every=val_every,
                              minutes=max(budget.minutes, 60.0))
    from medsat_sr.config import load_config

    cfg_s = load_config("ct_thick_slice", ct_cfg_ov + common)
    case = prepare_case(read(need(CT, "the TotalSegmentator example CT")), cfg_s)
    t0 = time.perf_counter()
    scratch = fit([case.lr], cfg_s, progress=False)
    t_s = time.perf_counter() - t0
    ov_f = ["domain=ct"] + ct_cfg_ov + common
    cfg_f = load_config("mri_finetune", ov_f)
    t0 = time.perf_counter()
    fine = fit([case.lr], cfg_f, progress=False, init=copy.deepcopy(source_model))
    t_f = time.perf_counter() - t0
    target = max(float(h["val_psnr"]) for h in scratch.history)
    it_s, it_f = reach(scratch.history, target), reach(fine.history, target, tol=0.01)
    ratio = (it_f / it_s) if (it_f is not None and it_s) else (0.0 if it_f == 0 else None)
    _plot_curves(scratch.history, fine.history, target, out_png)
    return {
        "case": "Transfer: MNI model -> thick-slice CT (x4)", "floor": "iterations to reach <= 0.5 x scratch",
        "passed": ratio is not None and ratio <= FLOORS["transfer"],
        "target_val_psnr": target, "iterations_budget": iters, "scratch_iterations_to_reach": it_s,
        "finetune_iterations_to_reach": it_f, "ratio": ratio, "val_psnr_cubic": scratch.val_psnr_cubic,
        "scratch_best": scratch.val_psnr, "finetune_best": fine.val_psnr,
        "scratch_seconds": t_s, "finetune_seconds": t_f, "curves_png": str(out_png),
        "scratch": fit_record(scratch), "finetune": fit_record(fine),
        "settings": {"source": src_info, "target": str(CT), "target_degradation": case.degradation,
                     "overrides_scratch": ct_cfg_ov + common, "overrides_finetune": ov_f,
                     "reach_rule": "first validation at or above scratch's best val PSNR (fine-tune: within 0.01 dB)"},
    }


def _plot_curves(scratch: Sequence[dict[str, Any]], fine: Sequence[dict[str, Any]], target: float, path: Path, *,
                 labels: tuple[str, str] = ("scratch (ct_thick_slice)", "fine-tune from MNI model (mri_finetune)"),
                 title: str = "Transfer on the thick-slice CT (x4)") -> None:
    """PNG of both validation-PSNR curves."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for hist, label in zip((scratch, fine), labels):
        ax.plot([h["iteration"] for h in hist], [h["val_psnr"] for h in hist], marker=".", label=label)
    ax.axhline(target, color="grey", ls="--", lw=0.8, label="scratch best")
    ax.set_xlabel("iteration")
    ax.set_ylabel("validation PSNR (dB, network units)")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


# --------------------------------------------------------------------------- case 5: precision
def interleaved_steps(states: dict[str, Any], steps: int, warmup: int = 2) -> tuple[dict[str, list[float]], int]:
    """Seconds of ``steps`` training steps per precision, the precisions interleaved step by step.

    Args:
        states: ``{"fp32": (TrainState, batch iterator), "bf16": (...)}``.
        steps: timed steps per precision (after ``warmup`` untimed ones).

    Returns:
        ``({precision: [seconds, ...]}, output voxels/pixels of one batch)``.
    """
    from medsat_sr.train import prepare_batch

    times: dict[str, list[float]] = {k: [] for k in states}
    order = list(states)
    out_size = 0
    for i in range(steps + warmup):
        for prec in (order if i % 2 == 0 else order[::-1]):  # alternate who goes first
            st, it = states[prec]
            batch = next(it)
            st.net.train()
            t0 = time.perf_counter()
            x, y, args, kw = prepare_batch(batch, st.device)
            st.optimizer.zero_grad(set_to_none=True)
            loss = st.loss(st.net(x, *args, **kw), y)
            loss.backward()
            st.optimizer.step()
            dt = time.perf_counter() - t0
            out_size = int(y.numel() // y.shape[1])
            if i >= warmup:
                times[prec].append(dt)
    return times, out_size


def step_times(budget: Budget, steps: int) -> dict[str, Any]:
    """Median/min seconds of a training step, bf16 and fp32 interleaved, on the MRI case's pairs."""
    import torch

    from medsat_sr.config import load_config
    from medsat_sr.evaluate import prepare_case
    from medsat_sr.train import build_trainer

    states = {}
    case = None
    for prec in ("fp32", "bf16"):
        cfg = load_config("mri_thick_slice", MRI_DEGRADATION + budget.overrides() + [f"train.precision={prec}"])
        if case is None:
            case = prepare_case(mni_reference(budget), cfg)
        _, _, st = build_trainer(cfg, None, images=[case.lr], progress=False)
        states[prec] = (st, iter(st.data.train))
    times, _ = interleaved_steps(states, steps)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"steps": steps, "median_s": med, "min_s": {k: min(v) for k, v in times.items()},
            "speedup_median": med["fp32"] / med["bf16"], "torch_threads": torch.get_num_threads(),
            "batch_size": int(states["fp32"][0].cfg.train.batch_size),
            "patch_size": states["fp32"][0].cfg.train.patch_size}


def case_precision(budget: Budget, steps: int) -> dict[str, Any]:
    """Row 5: step speed and PSNR after equal iterations, bf16 vs fp32 (MRI case)."""
    speed = step_times(budget, steps)
    iters = budget.iterations or (20 if budget.quick else 300)
    rows = {}
    for prec in ("fp32", "bf16"):
        row, _ = case_mri(budget, extra=[f"train.precision={prec}"], iterations=iters, early_stopping=False,
                          minutes=max(budget.minutes, 60.0))
        rows[prec] = row
    d = rows["bf16"]["model"] - rows["fp32"]["model"]
    return {"case": "Precision bf16 vs fp32 (MRI case)", "speed": speed, "iterations": iters,
            "psnr_masked": {k: v["model"] for k, v in rows.items()}, "psnr_diff_bf16_minus_fp32": d,
            "fit_seconds": {k: v["fit_seconds"] for k, v in rows.items()}, "runs": rows}


# --------------------------------------------------------------------------- output
def md_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A markdown table."""
    def fmt(v: Any) -> str:
        if isinstance(v, bool):
            return "yes" if v else "**no**"
        if isinstance(v, float):
            return f"{v:.3f}" if abs(v) < 100 else f"{v:.1f}"
        return "-" if v is None else str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)


def report(results: dict[str, Any]) -> str:
    """The markdown tables of every case run."""
    parts = []
    m = results["machine"]
    parts.append(f"Machine: {m['cpu']}, {m['cores']} cores ({m['isa']}), torch {m['torch']} "
                 f"({m['torch_threads']} threads); load average {results['load_average_start']} -> "
                 f"{results['load_average_end']}; budget {results['budget']}")
    c = results["cases"]
    rows = []
    for k in ("mri", "naip"):
        if k in c:
            r = c[k]
            rows.append([r["case"], r["metric"], r["cubic"], r["model"], r["gain_db"], r["iterations"],
                         r["fit_seconds"], r["stopped_by"], r["floor"], r["passed"]])
    if rows:
        parts.append(md_table(["case", "metric", "cubic (dB)", "model (dB)", "gain (dB)", "iterations",
                               "fit s", "stopped by", "floor", "passes"], rows))
    if "s2" in c:
        r = c["s2"]["results"]
        rows = [["GDAL cubic", r["cubic"]["rmse_mean"], 1.0, r["cubic"]["psnr_band_mean"], r["cubic"]["sam"], "-", "-"]]
        for k in ("guided", "unguided"):
            rows.append([k, r[k]["rmse_mean"], r[k]["ratio_vs_cubic"], r[k]["psnr_band_mean"], r[k]["sam"],
                         r[k]["fit"]["iterations"], r[k]["fit"]["stopped_by"]])
        parts.append(f"{c['s2']['case']} — floor {c['s2']['floor']}: passes {c['s2']['passed']}\n\n" + md_table(
            ["method", "mean RMSE (refl.)", "x cubic", "mean band PSNR (dB)", "SAM (deg)", "iterations",
             "stopped by"], rows))
    if "transfer" in c:
        r = c["transfer"]
        parts.append(f"{r['case']} — floor {r['floor']}: passes {r['passed']} (curves: {r['curves_png']})\n\n" + md_table(
            ["run", "best val PSNR (dB)", "iterations to reach scratch best", "budget", "seconds"],
            [["scratch", r["scratch_best"], r["scratch_iterations_to_reach"], r["iterations_budget"], r["scratch_seconds"]],
             ["fine-tune", r["finetune_best"], r["finetune_iterations_to_reach"], r["iterations_budget"],
              r["finetune_seconds"]],
             ["ratio", "-", r["ratio"], "-", "-"]]))
    if "precision" in c:
        r = c["precision"]
        s = r["speed"]
        parts.append(f"{r['case']} — {s['steps']} interleaved steps, batch {s['batch_size']}, patch {s['patch_size']}; "
                     f"{r['iterations']} iterations each for PSNR\n\n" + md_table(
                         ["precision", "step median (s)", "step min (s)", "PSNR in brain (dB)"],
                         [[p, s["median_s"][p], s["min_s"][p], r["psnr_masked"][p]] for p in ("fp32", "bf16")]
                         + [["bf16 vs fp32", f"{s['speedup_median']:.2f}x faster", "-",
                             f"{r['psnr_diff_bf16_minus_fp32']:+.3f} dB"]]))
    return "\n\n".join(parts)


def _finite(o: Any) -> Any:
    """``o`` with NaN and infinities replaced by ``None`` (strict JSON)."""
    if isinstance(o, float):
        return o if math.isfinite(o) else None
    if isinstance(o, dict):
        return {k: _finite(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_finite(v) for v in o]
    return o


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.floating, np.integer)):
        return _finite(o.item())
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    return repr(o)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", default=",".join(CASES), help=f"comma list of {', '.join(CASES)}")
    ap.add_argument("--minutes", type=float, default=None, help="wall-clock budget per fit (default 10; quick 0.2)")
    ap.add_argument("--iterations", type=int, default=None, help="iteration cap per fit (default: the config's; quick 20)")
    ap.add_argument("--steps", type=int, default=None, help="precision: timed steps per precision (default 30; quick 4)")
    ap.add_argument("--quick", action="store_true", help="tiny budgets, networks and crops: plumbing check only")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "quality.json")
    ap.add_argument("-v", "--verbose", action="store_true")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO if a.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    cases = [c.strip() for c in a.cases.split(",") if c.strip()]
    bad = [c for c in cases if c not in CASES]
    if bad:
        ap.error(f"unknown case(s) {bad}; choose from {', '.join(CASES)}")
    budget = Budget(a.minutes if a.minutes is not None else (0.2 if a.quick else 10.0),
                    a.iterations if a.iterations is not None else (20 if a.quick else None), a.quick)
    steps = a.steps if a.steps is not None else (4 if a.quick else 30)
    results: dict[str, Any] = {"machine": machine(), "load_average_start": load_average(), "budget": budget.record(),
                               "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "cases": {}, "evaluations": {}}
    print(f"machine: {results['machine']['cpu']}, {results['machine']['cores']} cores, load {results['load_average_start']}",
          flush=True)
    mri_model = None
    for name in cases:
        t0, la0 = time.perf_counter(), load_average()
        print(f"--- {name} ...", flush=True)
        if name == "mri":
            row, ev = case_mri(budget)
            results["evaluations"]["mri"] = ev.to_dict()
            mri_model = ev.files[0].fits["model"].model
            results["cases"]["mri"] = row
        elif name == "naip":
            row, ev = case_naip(budget)
            results["evaluations"]["naip"] = ev.to_dict()
            results["cases"]["naip"] = row
        elif name == "s2":
            results["cases"]["s2"] = case_s2(budget)
        elif name == "transfer":
            results["cases"]["transfer"] = case_transfer(budget, a.out.parent / "transfer_curves.png", mri_model)
        elif name == "precision":
            results["cases"]["precision"] = case_precision(budget, steps)
        results["cases"][name].update(wall_seconds=round(time.perf_counter() - t0, 1), load_average_before=la0,
                                      load_average_after=load_average())
        print(f"    {name} done in {time.perf_counter() - t0:.0f} s (load {load_average()})", flush=True)
    results["load_average_end"] = load_average()
    text = report(results)
    print()
    print(text)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(_finite(results), indent=1, default=_json_default, allow_nan=False))
    print(f"\nwrote {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

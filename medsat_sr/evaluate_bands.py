"""``evaluate`` on band sets (Sentinel-2 folders): Wald's protocol with per-band RMSE, SAM and ERGAS (issue #13).

A band set holds bands at several native resolutions (10, 20, 60 m). Its
reference is the set itself: every group is degraded by the config's scale
with the profile's per-band MTF-matched PSF (:func:`medsat_sr.degrade.degrade`,
the code that makes the training pairs), so the target bands (20 m) come
down to 40 m and the guide bands (10 m) to 20 m. Each method restores the
target bands on the 20 m grid and is scored against the original 20 m bands:

* ``cubic``: the profile's classical baseline on the degraded target bands,
  and ``lanczos`` (GDAL's) when asked for;
* each ``--model`` checkpoint: :func:`medsat_sr.inference.upscale` of the
  degraded band set (the guided route, with the degraded guide bands).

Scores, on the pixels valid in every band, with a border of
:data:`BORDER` pixels left out: per-band RMSE and PSNR (data range: the
band's reference range), SAM (degrees) and ERGAS.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medsat_sr import baselines, degrade, metrics, metrics_bands
from medsat_sr.config import load_config
from medsat_sr.errors import ConfigError, DataError
from medsat_sr.evaluate_methods import training_overlap
from medsat_sr.geometry import scale_transform
from medsat_sr.image import BandSet, Key, make_raster
from medsat_sr.inference import upscale
from medsat_sr.io import read

logger = logging.getLogger("medsat_sr.evaluate")

__all__ = ["evaluate_bandset", "format_bandset_result", "BORDER"]

#: Pixels left out along each edge of the scored 20 m grid.
BORDER = 4


def _group_of(bs: BandSet, names: Sequence[str], what: str) -> tuple[str, list[int]]:
    for g, img in bs.groups.items():
        have = list(img.meta[Key.BAND_NAMES])
        if all(n in have for n in names):
            return g, [have.index(n) for n in names]
    raise DataError(f"{bs.source_path or 'band set'}: no band group holds all {what} bands {list(names)}")


def _degraded(bs: BandSet, cfg: Any, si: int, shapes: dict[str, tuple[int, int]]) -> BandSet:
    """Every group cropped to ``shapes`` and degraded by ``si`` (its grid coarsened by ``si``)."""
    out = BandSet(source_path=bs.source_path)
    for g, img in bs.groups.items():
        if g not in shapes:
            continue
        h, w = shapes[g]
        x = img.as_tensor()[:, :h, :w].float()
        names = list(img.meta[Key.BAND_NAMES])
        lr = degrade.degrade(x, cfg.profile, [si, si], bands=names)
        out.groups[g] = make_raster(
            lr, scale_transform(tuple(img.meta[Key.TRANSFORM])[:6], 1.0 / si), crs=img.meta.get(Key.CRS),
            nodata=img.meta.get(Key.NODATA), band_names=names, source_dtype="float32", source_format="geotiff",
        )
    return out


def _scores(sr: np.ndarray, ref: np.ndarray, valid: np.ndarray, names: Sequence[str], si: int) -> dict[str, Any]:
    b = BORDER
    sr, ref, valid = sr[:, b:-b, b:-b], ref[:, b:-b, b:-b], valid[b:-b, b:-b]
    rmse, psnr = {}, {}
    for k, n in enumerate(names):
        rng = float(ref[k][valid].max() - ref[k][valid].min()) or 1.0
        rmse[n] = metrics.rmse(sr[k], ref[k], mask=valid)
        psnr[n] = metrics.psnr(sr[k], ref[k], data_range=rng, mask=valid)
    return {
        "rmse": rmse, "psnr": psnr,
        "sam_deg": metrics_bands.sam(sr, ref, mask=valid) if len(names) > 1 else None,
        "ergas": metrics_bands.ergas(sr, ref, scale=float(si), mask=valid),
    }


#: ``--methods`` names a band set is scored with, and their baselines (``None``: the profile's own).
_CLASSICAL: dict[str, str | None] = {"cubic": None, "lanczos": "gdal_lanczos"}


def evaluate_bandset(
    path: str | os.PathLike[str],
    config: Any,
    *,
    models: Sequence[str | os.PathLike[str]] = (),
    overrides: Sequence[str] = (),
    methods: Sequence[str] = (),
) -> dict[str, Any]:
    """Score cubic and each checkpoint on a band set by Wald's protocol (module docstring).

    Args:
        path: a band folder (``B02.tif``, ``B05.tif``, ...).
        config: a guided config (``bands.targets`` and ``bands.guides``), e.g. ``sentinel2_20m_to_10m``.
        models: checkpoints of that route to score besides cubic.
        overrides: ``--set`` items.
        methods: ``--methods`` names: ``cubic`` (always scored) and ``lanczos``;
            the others are refused, naming what a band set is scored with.

    Returns:
        ``{"file", "scale", "bands", "grid", "methods": {name: {"rmse", "psnr", "sam_deg", "ergas"}}}``.

    Raises:
        ConfigError: not a guided config, or a non-integer scale.
        DataError: not a band set, or bands missing.
    """
    unknown = [m for m in methods if m not in _CLASSICAL]
    if unknown:
        raise ConfigError(f"--methods {','.join(unknown)}: a band set is scored with {' and '.join(_CLASSICAL)}, and "
                          "each --model checkpoint (a shipped model's name, or your own fit: train, then --model RUN/best)")
    bs = read(path)
    if not isinstance(bs, BandSet):
        raise DataError(f"{path}: not a band set (a folder of per-band GeoTIFFs such as B02.tif, B05.tif)")
    cfg = load_config(config, list(overrides))
    targets, guides = cfg.target_bands(), cfg.guide_bands()
    if not targets or not guides:
        raise ConfigError(f"{cfg.source}: evaluating a band set needs a guided config (bands.targets and bands.guides)")
    s = float(cfg.scale_for()[0])
    if abs(s - round(s)) > 1e-6 or s < 2:
        raise ConfigError(f"{cfg.source}: band-set evaluation needs an integer scale >= 2, got {s:g}")
    si = int(round(s))
    tg, t_idx = _group_of(bs, targets, "target")
    gg, _ = _group_of(bs, guides, "guide")
    th, tw = (int(v) for v in bs.groups[tg].shape[1:])
    gh, gw = (int(v) for v in bs.groups[gg].shape[1:])
    h, w = min(th, gh // si) // si * si, min(tw, gw // si) // si * si  # target grid: whole multiples of si
    if min(h, w) // si <= 2 * BORDER:
        raise DataError(f"{path}: the band set is too small to score ({th}x{tw} target pixels)")
    ref_img = bs.groups[tg]
    ref = ref_img.as_tensor()[t_idx, :h, :w].float().numpy()
    nodata = ref_img.meta.get(Key.NODATA)
    valid = np.isfinite(ref).all(axis=0)
    if nodata is not None:
        valid &= (ref != float(nodata)).all(axis=0)
    low = _degraded(bs, cfg, si, {tg: (h, w), gg: (h * si, w * si)})
    lr_t = low.groups[tg].as_tensor()[t_idx].float()
    base = getattr(cfg.profile, "baseline", None) or "gdal_cubic"
    out: dict[str, Any] = {"file": str(path), "scale": si, "bands": list(targets), "grid": [h, w], "baseline": base,
                           "protocol": f"Wald: every group degraded x{si} by the {cfg.profile.name} profile; "
                           f"targets restored onto the {tg} grid and scored there", "methods": {}}
    for name in ("cubic", *(m for m in _CLASSICAL if m in methods and m != "cubic")):
        classical = baselines.upsample(_CLASSICAL[name] or base, lr_t, [si, si], (h, w))
        out["methods"][name] = _scores(np.asarray(torch.as_tensor(classical).numpy()), ref, valid, targets, si)
    for ckpt in models:
        res = upscale(low, model=ckpt, config=cfg, progress=False)
        img = res.image
        names = list(img.meta[Key.BAND_NAMES])
        missing = [n for n in targets if n not in names]
        if missing:
            raise DataError(f"{ckpt}: its output lacks the target bands {missing}")
        sr = img.as_tensor()[[names.index(n) for n in targets], :h, :w].float().numpy()
        out["methods"][Path(str(ckpt)).name] = _scores(sr, ref, valid, targets, si)
        note = training_overlap(None, str(ckpt), path)
        if note:
            logger.warning("%s: %s", path, note)
            out["methods"][Path(str(ckpt)).name]["training_overlap"] = note
    return out


def format_bandset_result(result: dict[str, Any]) -> list[str]:
    """Lines of a table: per method, ERGAS, SAM and the per-band RMSE."""
    bands = result["bands"]
    lines = [f"{result['file']} (band set, x{result['scale']} by Wald's protocol, {result['grid'][0]}x{result['grid'][1]} "
             "target pixels):",
             f"  {'method':<22} {'ERGAS':>7} {'SAM deg':>8}  " + " ".join(f"{b:>8}" for b in bands) + "  (RMSE)"]
    for m, r in result["methods"].items():
        sam = "-" if r["sam_deg"] is None else f"{r['sam_deg']:.3f}"
        lines.append(f"  {m:<22} {r['ergas']:7.3f} {sam:>8}  " + " ".join(f"{r['rmse'][b]:8.2f}" for b in bands))
        if r.get("training_overlap"):
            lines.append(f"    note: {r['training_overlap']}")
    return lines

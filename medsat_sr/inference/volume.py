"""Volumes: sliding windows for 3D networks, whole slices or planes for 2D networks.

See ARCHITECTURE.md and :mod:`medsat_sr.inference.api` for the design (seams,
non-integer scales, the two routes of 2D networks on volumes).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from monai.inferers import sliding_window_inference

from medsat_sr._version import __version__
from medsat_sr import degrade
from medsat_sr.baselines import resample_volume, upsample_mask
from medsat_sr.domains import profile_for
from medsat_sr.errors import ConfigError, GeometryError
from medsat_sr.fusion import Ensemble, Member, fit_weights
from medsat_sr.geometry import effective_scale, scale_affine, scaled_shape
from medsat_sr.image import Key, make_volume
from medsat_sr.inference.members import WEIGHT_CROP, centre, check_takes, fit_normaliser, tta_for
from medsat_sr.inference.plan import volume_scale
from medsat_sr.inference.record import input_info, std_path
from medsat_sr.io import write as io_write
from medsat_sr.inference.options import DEFAULT_TILE_VOLUME
from medsat_sr.models.upsample import interpolate
from medsat_sr.slicewise import SLICE_BATCH, apply_inplane, apply_slicewise

logger = logging.getLogger("medsat_sr.inference")

def volume_windows(
    x: torch.Tensor,
    ens: Ensemble,
    out_shape: tuple[int, ...],
    eff: np.ndarray,
    settings: Any,
    progress: bool,
) -> tuple[torch.Tensor, torch.Tensor | None, dict[str, Any]]:
    """A 3D ensemble over a ``(1, C, X, Y, Z)`` volume with MONAI's sliding windows (see the module docs)."""
    models = [m.model for m in ens.members]
    rf = [max(int(m.receptive_field_per_axis[a]) for m in models) for a in range(3)]
    extra = int(settings.halo) if settings.halo is not None else 0
    halo = [max(r, extra) for r in rf]
    exact = not any(bool(getattr(m, "global_context", False)) for m in models)
    integer = [abs(e - round(e)) < 1e-9 for e in eff]
    tile = settings.tile_size or DEFAULT_TILE_VOLUME
    tiles = list(tile) if isinstance(tile, (tuple, list)) else [tile] * 3
    if len(tiles) != 3:
        raise ConfigError(f"a volume tile_size takes 1 or 3 values, got {tile}")
    if all(integer):
        route, grid, z = "lr", x, [int(round(e)) for e in eff]
    elif all(getattr(m, "upsample", "post") == "pre" for m in models):
        route, z = "pre", [1, 1, 1]
        with torch.inference_mode():
            grid = interpolate(x, out_shape)
        halo = [int(math.ceil(h * e)) for h, e in zip(halo, eff)]
        tiles = [max(1, int(round(t * e))) for t, e in zip(tiles, eff)]
    else:
        route, grid, z = "axis", x, [float(o) / float(n) for o, n in zip(out_shape, x.shape[2:])]
        if any(int(n * zz) != o for n, zz, o, ok in zip(x.shape[2:], z, out_shape, integer) if not ok):
            logger.warning("non-integer zoom %s cannot be placed exactly by MONAI; running the whole volume at once", list(eff))
            mean, var = ens.predict(x, out_shape)
            return mean, var, {"route": "whole", "halo": halo, "roi": list(x.shape[2:]), "overlap": 0.0}
    n_in = list(grid.shape[2:])
    roi = []
    for a in range(3):
        whole = route == "axis" and not integer[a]
        roi.append(n_in[a] if whole or n_in[a] <= int(1.5 * tiles[a]) else int(tiles[a]))
    overlap = [0.0 if (exact or roi[a] >= n_in[a]) else min(0.5, max(float(settings.overlap), 2.0 * halo[a] / roi[a])) for a in range(3)]

    def predictor(win: torch.Tensor, coords: Sequence[Sequence[slice]]) -> Any:
        means, varis = [], []
        for sl in coords:
            sp = list(sl[2:])
            rd = [(max(0, s.start - h), min(n, s.stop + h)) for s, h, n in zip(sp, halo, n_in)]
            xin = grid[(slice(0, 1), slice(None), *[slice(a, b) for a, b in rd])]
            size = [int(round((b - a) * zz)) if route != "axis" or integer[i] else int(out_shape[i]) for i, ((a, b), zz) in enumerate(zip(rd, z))]
            mu, va = ens.predict(xin, size)
            crop = tuple(
                slice(int(round((s.start - a) * zz)), int(round((s.stop - a) * zz))) if route != "axis" or integer[i] else slice(None)
                for i, (s, (a, _), zz) in enumerate(zip(sp, rd, z))
            )
            means.append(mu[(slice(None), slice(None), *crop)])
            if va is not None:
                varis.append(va[(slice(None), slice(None), *crop)])
        mean = torch.cat(means)
        if ens.uncertainty:
            return mean, torch.cat(varis)
        return mean

    with torch.inference_mode():
        res = sliding_window_inference(
            grid,
            roi_size=roi,
            sw_batch_size=int(settings.batch_size),
            predictor=predictor,
            overlap=overlap,
            mode="gaussian",
            sigma_scale=float(settings.sigma_scale),
            progress=progress,
            with_coord=True,
        )
    mean, var = (res[0], res[1]) if isinstance(res, (tuple, list)) else (res, None)
    mean = mean.as_subclass(torch.Tensor) if isinstance(mean, MetaTensor) else mean
    if var is not None and isinstance(var, MetaTensor):
        var = var.as_subclass(torch.Tensor)
    if tuple(mean.shape[2:]) != tuple(out_shape):
        raise GeometryError(f"sliding-window output {tuple(mean.shape[2:])} does not match the grid {tuple(out_shape)}")
    return mean, var, {"route": route, "halo": halo, "roi": roi, "overlap": overlap, "exact_tiling": exact}


def _degrade_volume(sr: torch.Tensor, img: MetaTensor, eff: Sequence[float], profile: Any) -> tuple[torch.Tensor, str]:
    """``sr`` (on the grid upscaled by ``eff`` from ``img``) degraded back onto ``img``'s grid.

    The one recipe of training and evaluation (:func:`medsat_sr.degrade.recipe`),
    with the profile of the model, else the profile that matches the volume
    (:func:`medsat_sr.domains.profile_for`: never MRI's silently). The slice
    thickness follows :func:`medsat_sr.degrade.slice_thickness`.
    """
    prof = profile if profile is not None else profile_for(img)
    spacing = [float(s) for s in img.meta[Key.SPACING]]
    up = [a for a in range(3) if eff[a] > 1 + 1e-9]
    thickness = degrade.slice_thickness(img, up[0]) if len(up) == 1 else None
    r = degrade.recipe(prof, [float(e) for e in eff], channels=int(sr.shape[0]),
                       spacing=[s / float(e) for s, e in zip(spacing, eff)], thickness=thickness)
    with torch.inference_mode():
        deg, _ = r.apply(sr)
    return deg, f"{prof.name}: {r.describe()}"


def volume_consistency(sr: torch.Tensor, img: MetaTensor, eff: np.ndarray, profile: Any) -> dict[str, Any]:
    """degrade(SR) with the profile's degradation against the input: PSNR per channel."""
    lr = img.as_tensor().float()
    if not any(e > 1 + 1e-9 for e in eff):
        return {"psnr": {}, "degradation": "none"}
    deg, how = _degrade_volume(sr, img, eff, profile)
    if tuple(deg.shape) != tuple(lr.shape):
        return {"psnr": {}, "degradation": how, "note": f"degraded shape {tuple(deg.shape)} differs from the input {tuple(lr.shape)}"}
    out: dict[str, Any] = {}
    ranges: dict[str, Any] = {}
    names = img.meta.get(Key.BAND_NAMES) or [f"ch{i}" for i in range(lr.shape[0])]
    for c in range(lr.shape[0]):
        ok = torch.isfinite(lr[c]) & torch.isfinite(deg[c])
        ref = lr[c][ok].double()
        if ref.numel() == 0:
            out[names[c]] = None
            continue
        rng = float(ref.max() - ref.min()) or 1.0
        mse = float(((deg[c][ok].double() - ref) ** 2).mean())
        out[names[c]] = math.inf if mse == 0 else 10 * math.log10(rng * rng / mse)
        ranges[names[c]] = rng
    return {"psnr": out, "data_range": ranges, "degradation": how}


def wald_weights_volume(method: str, members: list[Member], img: MetaTensor, scale: Sequence[float], profile: Any) -> tuple[list[float], dict[str, Any]]:
    """Fit ensemble weights on a central crop of the volume, degraded by the model scale (Wald's protocol)."""
    x = img.as_tensor().float()
    sl = []
    for a in range(3):
        mult = int(round(scale[a])) if abs(scale[a] - round(scale[a])) < 1e-9 else 1
        r0, r1 = centre(x.shape[1 + a], WEIGHT_CROP[3] * max(1, mult), mult)
        sl.append(slice(r0, r1))
    crop = x[(slice(None), *sl)]
    meta = dict(img.meta)
    meta.pop("affine", None)
    sub = MetaTensor(crop, affine=img.affine, meta=meta)
    lr_shape = scaled_shape(crop.shape[1:], [1.0 / f for f in scale])
    eff = np.asarray(crop.shape[1:], float) / np.asarray(lr_shape, float)
    lr, how = _degrade_volume(crop, _with_spacing(sub, eff), eff, profile)
    preds = [Ensemble([Member(m.model, normaliser=m.normaliser, per_channel=m.per_channel)])
             .predict(lr[None], crop.shape[1:])[0][0] for m in members]
    w = fit_weights(preds, crop, method=method, data_range=float(crop.max() - crop.min()) or 1.0)
    return w, {"method": method, "split": f"central crop {list(crop.shape[1:])}, degraded by {how}"}


def _with_spacing(img: MetaTensor, eff: Sequence[float]) -> MetaTensor:
    """``img`` whose spacing meta is that of the grid ``eff`` times coarser (for the degradation model)."""
    meta = dict(img.meta)
    meta[Key.SPACING] = tuple(float(s) * float(f) for s, f in zip(img.meta[Key.SPACING], eff))
    meta.pop("affine", None)
    return MetaTensor(img.as_tensor(), affine=img.affine, meta=meta)


def _apply_members(x: torch.Tensor, volume: MetaTensor, mem: Any, opts: Any, s: Sequence[float], eff: np.ndarray,
                   out_shape: tuple[int, ...], thick: int | None, route2d: str | None, profile: Any,
                   progress: bool) -> tuple[torch.Tensor, torch.Tensor | None, dict[str, Any], dict[str, Any] | None]:
    """The networks on the volume: sliding windows (3D), planes (2D in-plane) or slices (2D slice-wise)."""
    spec = profile.normalisation if profile is not None else None
    for m in mem.members:
        stats = mem.fit_norm if mem.fit_norm is not None else (m.info.get("_meta") or {}).get("normalisation")
        if m.normaliser is None:
            m.normaliser = fit_normaliser(stats, volume, spec)
    weights_info = None
    if mem.weights_method is not None:
        if thick is not None:
            raise ConfigError("fitted weights are not available for 2D slice models on volumes; give the weights (--weights w1,w2)")
        ws, winfo = wald_weights_volume(mem.weights_method, mem.members, volume, s, profile)
        for m, w in zip(mem.members, ws):
            m.weight = w
        weights_info = {**winfo, "weights": ws}
    ens = Ensemble(mem.members, transforms=tta_for(s if thick is None else mem.members[0].scale, opts.tta),
                   precision=opts.precision, device=opts.device, uncertainty=opts.uncertainty)
    batch = max(SLICE_BATCH, int(opts.batch_size))
    if thick is None:
        mean, var, run_info = volume_windows(x[None], ens, out_shape, eff, opts, progress)
        mean, var = mean[0], (var[0] if var is not None else None)
    elif route2d == "inplane":
        mean, var = apply_inplane(ens, x, thick, out_shape, batch=batch, progress=progress)
        run_info = {"route": "inplane", "plane_axis": thick}
    else:
        orient = opts.slice_orientations
        if orient == "auto":  # a fit took minutes: both orientations; no fit: the application is the whole cost
            orient = 2 if mem.fitted else 1
        mean, var = apply_slicewise(ens, x, thick, out_shape, batch=batch, progress=progress, orientations=orient)
        run_info = {"route": "slicewise", "through_plane_axis": thick, "orientations": orient}
    run_info["tta"] = [t.describe() for t in ens.transforms]
    return mean, var, run_info, weights_info


def _derivation(method_desc: str, eff: Sequence[float], meta: Mapping[str, Any]) -> str:
    src = meta.get(Key.SOURCE_PATH)
    factors = "x".join(f"{float(v):g}" for v in eff)
    return (
        f"medsat_sr {__version__} super-resolution ({method_desc}), scale {factors}"
        + (f", from {Path(str(src)).name}" if src else "")
    )


def _write_volume(result: MetaTensor, std: MetaTensor | None, volume: MetaTensor, out_path: Path, fmt: str, opts: Any,
                  method_desc: str, eff: np.ndarray, series_description: str | None) -> Path | None:
    write_opts: dict[str, Any] = {}
    if opts.dtype == "float32":
        write_opts["dtype"] = "float32"
    if fmt == "dicom":
        src_desc = str(volume.meta.get("series_description") or "")
        write_opts["series_description"] = series_description or (f"{src_desc} SR" if src_desc else "medsat_sr SR")[:64]
        write_opts["derivation"] = _derivation(method_desc, eff, volume.meta)
    io_write(result, out_path, format=fmt, **write_opts)
    if std is None:
        return None
    std_out = std_path(out_path) if fmt != "dicom" else out_path.with_name(out_path.name + "_std.nii.gz")
    io_write(std, std_out, format="nifti", dtype="float32")
    return std_out


_GEOMETRY_KEYS = (Key.KIND, Key.SPACING, Key.ORIENTATION, Key.SOURCE_DTYPE, Key.INTENSITY, Key.BAND_NAMES,
                  Key.SOURCE_FORMAT, Key.SOURCE_PATH, Key.HEADER, "space", "affine", "original_affine",
                  "spatial_shape", "original_channel_dim", "filename_or_obj")


def _restore_missing(mean: torch.Tensor, missing: torch.Tensor, out_shape: Sequence[int]) -> torch.Tensor:
    """NaN again where the input had no data (its NaN/inf mask, nearest-upsampled to the output grid)."""
    gone = torch.from_numpy(np.ascontiguousarray(upsample_mask(missing.numpy(), out_shape)))
    mean[gone] = float("nan")
    return mean


def _as_volume(values: torch.Tensor, aff: np.ndarray, volume: MetaTensor) -> MetaTensor:
    extra = {k: v for k, v in volume.meta.items() if k not in _GEOMETRY_KEYS}
    m = volume.meta
    return make_volume(values, aff, source_dtype=m.get(Key.SOURCE_DTYPE), intensity=m.get(Key.INTENSITY),
                       band_names=m.get(Key.BAND_NAMES), source_format=m.get(Key.SOURCE_FORMAT),
                       source_path=m.get(Key.SOURCE_PATH), header=m.get(Key.HEADER), **extra)


def trained_at_any_factor(member: Any) -> bool:
    """A slice network that interpolates first and was trained at several factors (``data.factors``)."""
    task = (member.info.get("_meta") or {}).get("task") or {}
    return getattr(member.model, "upsample", None) == "pre" and len(task.get("factors") or []) > 1


def upscale_volume(*, src: Any, mem: Any, decision: Any, method: str | None, scale: Any, opts: Any, profile: Any,
                   cfg: Any, out_path: Path | None, fmt: str | None, progress: bool, target_spacing: Any,
                   series_description: str | None) -> dict[str, Any]:
    """Run a volume plan: the networks (when the decision keeps them) or the classical method, then write.

    Returns:
        What the trust record needs: ``image``, ``std``, ``std_output``, ``input``,
        ``output``, ``run_info``, ``consistency``, ``weights``, ``timings``.
    """
    volume = src.volume
    members = mem.members
    any_factor = bool(members) and all(trained_at_any_factor(m) for m in members)
    s, thick, route2d = volume_scale(volume, members[0].scale if members else None, scale, target_spacing, cfg,
                                     any_factor=any_factor)
    per_volume = check_takes(members, int(volume.shape[0]), volume.meta.get(Key.SOURCE_PATH) or "the volume",
                             kind="volume")
    for m in members:
        m.per_channel = per_volume
    shape = tuple(int(v) for v in volume.shape[1:])
    out_shape, eff = scaled_shape(shape, s), effective_scale(shape, s)
    aff = scale_affine(np.asarray(volume.affine, dtype=np.float64), eff)
    x = volume.as_tensor().float()
    missing = ~torch.isfinite(x)
    has_missing = bool(missing.any())
    if has_missing:
        logger.warning("%s: %d voxels are NaN or infinite (no data); they are set to 0 for upscaling and are NaN "
                       "again in the output", volume.meta.get(Key.SOURCE_PATH) or "input", int(missing.sum()))
        x = torch.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)
    var, weights_info = None, None
    if decision.use_model:
        mean, var, run_info, weights_info = _apply_members(x, volume, mem, opts, s, eff, out_shape, thick, route2d, profile, progress)
    else:
        mean = torch.from_numpy(resample_volume(x, out_shape, method or "cubic"))
        run_info = {"route": "classical", "method": method or "cubic"}
    if has_missing:
        mean = _restore_missing(mean, missing, out_shape)
        var = None if var is None else _restore_missing(var, missing, out_shape)
    run_info["scale"] = {"requested": list(s), "effective": eff.tolist()}
    if per_volume and decision.use_model:
        run_info["per_volume"] = {"volumes": int(volume.shape[0]),
                                  "what": "a one-channel network on each volume of the series"}
    consistency = volume_consistency(mean, volume, eff, profile)
    result = _as_volume(mean, aff, volume)
    std = None
    if var is not None:
        names = [f"{b}_std" for b in volume.meta.get(Key.BAND_NAMES) or []] or None
        std = make_volume(var.sqrt(), aff, source_dtype="float32", band_names=names, source_format=volume.meta.get(Key.SOURCE_FORMAT))
    t0 = time.perf_counter()
    std_out = None
    if out_path is not None and fmt is not None:
        desc = "model" if decision.use_model else (method or "cubic")
        std_out = _write_volume(result, std, volume, out_path, fmt, opts, desc, eff, series_description)
    return {
        "image": result, "std": std, "std_output": std_out, "run_info": run_info, "consistency": consistency,
        "weights": weights_info, "timings": {"write": time.perf_counter() - t0},
        "input": input_info(volume, src.path, src.sha, src.kind),
        "output": {"shape": list(result.shape), "spacing": list(result.meta[Key.SPACING]), "affine": np.asarray(aff).tolist(),
                   "uncertainty": str(std_out) if std_out else None},
    }

"""Evaluation cases: a reference degraded into the method input, crops and hold-outs.

Step 1 and 2 of the evaluation protocol (:mod:`medsat_sr.evaluate`, DESIGN.md
section 5): :func:`prepare_case` centre-crops a high-resolution reference to
a whole number of low-resolution samples per axis, degrades it with the
job's domain profile (:func:`degrade_reference` in
:mod:`medsat_sr.evaluate_degrade`, i.e. :func:`medsat_sr.degrade.degrade`,
plus the profile's noise) onto the
field-of-view-preserving low-resolution grid, and, for rasters, splits off
the left part that a self-supervised fit may see (:data:`DEFAULT_RASTER_HOLDOUT`);
:func:`pair_case` takes an explicit low/high-resolution pair on aligned
grids instead. The result is a :class:`Case`.

Used by :mod:`medsat_sr.evaluate` (which re-exports the public names),
:mod:`medsat_sr.evaluate_scoring` (the case's region and validity),
:mod:`medsat_sr.demo` and the benchmarks.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor

from medsat_sr import degrade, geometry
from medsat_sr.config import JobConfig, load_config
from medsat_sr.errors import ConfigError, DataError, GeometryError
from medsat_sr.image import BandSet, Key, is_raster, is_volume, one_grid_raster
from medsat_sr.evaluate_degrade import (
    DEFAULT_SLICE_FACTOR,
    _case_factors,
    _centre_crop,
    _degrade_case,
    _raster_lr,
    _spatial_valid,
    _volume_lr,
    crop_image,
    degrade_reference,
    superior_axis,
)
from medsat_sr.io import read

__all__ = ["Case", "prepare_case", "pair_case", "degrade_reference", "crop_image", "superior_axis",
           "DEFAULT_SLICE_FACTOR", "DEFAULT_RASTER_HOLDOUT"]


#: Rasters: right-hand fraction held out from a self-supervised fit and scored.
DEFAULT_RASTER_HOLDOUT = 0.5


@dataclass
class Case:
    """One reference prepared for evaluation.

    Attributes:
        name: short name (file stem) used in tables and figure names.
        path: the reference's path, if read from a file.
        kind: ``"volume"`` or ``"raster"``.
        reference: the high-resolution reference on the evaluation grid
            (cropped), float32, values as read.
        lr: the method input: the degraded reference (or the given low-res image).
        factors: upscaling factor per spatial axis (reference / input size).
        degradation: how ``lr`` was made (model and parameters).
        crop: the centre crop applied to the reference.
        region: spatial slices of the reference grid that are scored.
        fit_image: what a self-supervised fit learns from (``None``: ``lr``).
        slice_axis: the spatial axis of per-slice SSIM and of the figure's
            slice (the thick axis for slice-profile cases), or ``None``.
        lr_valid: spatial validity of ``lr`` (``None``: all valid).
    """

    name: str
    path: str | None
    kind: str
    reference: MetaTensor
    lr: MetaTensor
    factors: tuple[float, ...]
    degradation: dict[str, Any]
    crop: dict[str, Any]
    region: tuple[slice, ...]
    fit_image: MetaTensor | None = None
    slice_axis: int | None = None
    lr_valid: np.ndarray | None = None

    def region_record(self) -> dict[str, Any]:
        """The scored region as JSON data."""
        return {
            "start": [int(s.start or 0) for s in self.region],
            "stop": [int(s.stop) for s in self.region],
            "shape": [int(s.stop) - int(s.start or 0) for s in self.region],
        }


def _name_of(path: str | os.PathLike[str] | None, index: int) -> str:
    if path is None:
        return f"image{index}"
    p = Path(path)
    name = p.name
    for suffix in (".nii.gz", ".nii", ".tiff", ".tif", ".gz"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)] or f"image{index}"
    return p.stem or name


def _read(image: Any, what: str) -> tuple[MetaTensor, str | None]:
    if isinstance(image, (str, os.PathLike)):
        img = read(image)
        path: str | None = str(image)
    else:
        img, path = image, None
    img = one_grid_raster(img)
    if isinstance(img, BandSet):
        raise ConfigError(
            f"{path or what}: a band set (bands at several resolutions) cannot be evaluated here yet; "
            "evaluate one multi-band GeoTIFF, or give explicit --pair LR HR images"
        )
    if not isinstance(img, MetaTensor) or not (is_volume(img) or is_raster(img)):
        raise DataError(f"{what} must be a path, a volume or a raster, got {type(img).__name__}")
    return img, path


def _raster_holdout(
    ref: MetaTensor, keep: Sequence[int], factors: Sequence[float], holdout: float | None, rec: dict[str, Any]
) -> tuple[tuple[slice, ...], MetaTensor | None]:
    """The scored region of a raster case and the image a self-supervised fit sees.

    With a holdout fraction ``h > 0`` the right-hand part of the width is
    scored and the left part of the reference is the fit image; ``rec`` gets
    the split.

    Args:
        ref: the cropped reference raster.
        keep: the kept shape.
        factors: the factor per spatial axis.
        holdout: the holdout fraction (None: :data:`DEFAULT_RASTER_HOLDOUT`).
        rec: the degradation record (updated with the split).

    Returns:
        ``(region, fit_image or None)``.

    Raises:
        ConfigError: a fraction outside ``[0, 1)``, or one that leaves fewer than 16 columns on a side.
    """
    h = DEFAULT_RASTER_HOLDOUT if holdout is None else float(holdout)
    if not 0.0 <= h < 1.0:
        raise ConfigError(f"holdout must be in [0, 1), got {holdout!r}")
    region = tuple(slice(0, k) for k in keep)
    fit_image = None
    if h > 0:
        fc = int(round(factors[1]))
        w = keep[1]
        split = int(round(w * (1.0 - h) / fc)) * fc
        if split < 16 or w - split < 16:
            raise ConfigError(f"holdout {h:g} leaves too few columns on one side of a {w}-pixel-wide image")
        region = (slice(0, keep[0]), slice(split, w))
        fit_image = crop_image(ref, [0, 0], [keep[0], split])
        rec["holdout"] = {"fraction": h, "split_column": split,
                          "fit": f"reference columns [0, {split}) (high resolution, left part)",
                          "scored": f"columns [{split}, {w})"}
    return region, fit_image


def prepare_case(
    reference: Any,
    config: Any,
    *,
    name: str | None = None,
    scale: float | Sequence[float] | None = None,
    holdout: float | None = None,
    index: int = 0,
) -> Case:
    """Crop and degrade one reference as the protocol says (:mod:`medsat_sr.evaluate`).

    Args:
        reference: a path or an image (volume or raster) in memory.
        config: the job config (name, path, mapping or JobConfig).
        name: the case name (default: the file stem).
        scale: factor(s) instead of the config's (one or one per spatial axis).
        holdout: rasters: right-hand fraction of the width left out of a
            self-supervised fit and scored (default
            :data:`DEFAULT_RASTER_HOLDOUT`; 0: fit on the degraded input and
            score everything). Volumes: must be ``None`` or 0.
        index: position among the references (for default names).

    Returns:
        The :class:`Case`.

    Raises:
        ConfigError: a reference that does not fit the config, or invalid options.
        GeometryError: an axis too short for the factor.
    """
    cfg = config if isinstance(config, JobConfig) else load_config(config)
    ref, path = _read(reference, "reference")
    kind = "volume" if is_volume(ref) else "raster"
    if cfg.profile.kind != kind:
        raise ConfigError(f"{cfg.source}: the config is for {cfg.profile.kind}s; {path or 'the reference'} is a {kind}")
    factors, slice_axis, notes = _case_factors(cfg, ref, scale)
    ref, crop, keep, n_lr = _centre_crop(ref, factors)
    lr, lr_valid, rec, slice_fwhm = _degrade_case(cfg, ref, kind, factors, notes=notes, n_lr=n_lr)
    eff_down = [a / b for a, b in zip(n_lr, keep)]
    if kind == "volume":
        lr_img = _volume_lr(ref, lr, eff_down, rec, factors=factors, slice_axis=slice_axis, slice_fwhm=slice_fwhm)
        if holdout:
            raise ConfigError("holdout applies to rasters; a self-supervised fit on a volume sees only the degraded input")
        region = tuple(slice(0, k) for k in keep)
        fit_image = None
    else:
        lr_img = _raster_lr(ref, lr, lr_valid, eff_down)
        region, fit_image = _raster_holdout(ref, keep, factors, holdout, rec)
    return Case(
        name=name or _name_of(path, index), path=path, kind=kind, reference=ref, lr=lr_img,
        factors=tuple(float(f) for f in factors), degradation=rec, crop=crop, region=region,
        fit_image=fit_image, slice_axis=slice_axis, lr_valid=lr_valid,
    )


def pair_case(lr: Any, hr: Any, config: Any, *, name: str | None = None, index: int = 0) -> Case:
    """A case from an explicit low/high-resolution pair on aligned grids.

    The factors are the size ratios per axis; the low-resolution grid upscaled
    by them must be the high-resolution grid (volumes: corner voxel centres
    within 1e-3 of a voxel; rasters: the transforms to 1e-6 of a pixel).

    Raises:
        GeometryError: grids that are not aligned.
        ConfigError: images of a kind the config is not for.
    """
    cfg = config if isinstance(config, JobConfig) else load_config(config)
    lo, lo_path = _read(lr, "lr")
    hi, hi_path = _read(hr, "hr")
    kind = "volume" if is_volume(hi) else "raster"
    if (is_volume(lo)) != (kind == "volume") or cfg.profile.kind != kind:
        raise ConfigError(f"pair {lo_path or 'lr'} / {hi_path or 'hr'}: both must be {cfg.profile.kind}s (the config's kind)")
    if lo.shape[0] != hi.shape[0]:
        raise GeometryError(f"pair: {lo.shape[0]} channels in the low-res image, {hi.shape[0]} in the high-res one")
    shp_l = [int(v) for v in lo.shape[1:]]
    shp_h = [int(v) for v in hi.shape[1:]]
    factors = [h / lw for h, lw in zip(shp_h, shp_l)]
    if kind == "volume":
        up = geometry.scale_affine(np.asarray(lo.affine, dtype=np.float64), factors)
        err = np.abs(geometry.world_corners(up, shp_h) - geometry.world_corners(np.asarray(hi.affine), shp_h)).max()
        vox = float(min(hi.meta[Key.SPACING]))
        if err > 1e-3 * vox:
            raise GeometryError(
                f"pair {lo_path or 'lr'} / {hi_path or 'hr'}: the low-res grid upscaled by {factors} misses the "
                f"high-res grid by {err:.4g} mm (fields of view not aligned)"
            )
    else:
        up_t = geometry.scale_transform(lo.meta[Key.TRANSFORM], factors)
        px = float(min(hi.meta[Key.SPACING]))
        diff = max(abs(a - b) for a, b in zip(up_t, hi.meta[Key.TRANSFORM]))
        if diff > 1e-6 * max(px, 1.0):
            raise GeometryError(
                f"pair {lo_path or 'lr'} / {hi_path or 'hr'}: transforms differ after scaling by {factors} "
                "(fields of view not aligned)"
            )
    lo = lo.to(torch.float32) if not lo.is_floating_point() else lo
    return Case(
        name=name or _name_of(hi_path, index), path=hi_path, kind=kind, reference=hi, lr=lo,
        factors=tuple(factors),
        degradation={"model": "explicit pair", "lr": lo_path, "factors": factors},
        crop={"original_shape": shp_h, "start": [0] * len(shp_h), "shape": shp_h, "rule": "none (explicit pair)"},
        region=tuple(slice(0, n) for n in shp_h),
        slice_axis=int(np.argmax(factors)) if kind == "volume" and sum(f > 1 for f in factors) == 1 else None,
        lr_valid=None if _spatial_valid(lo).all() else _spatial_valid(lo),
    )

"""Evaluation cases: a reference degraded into the method input, crops and hold-outs.

Step 1 and 2 of the evaluation protocol (:mod:`medsat_sr.evaluate`, DESIGN.md
section 5): :func:`prepare_case` centre-crops a high-resolution reference to
a whole number of low-resolution samples per axis, degrades it with the
job's domain profile (:func:`degrade_reference`, i.e.
:func:`medsat_sr.degrade.degrade`, plus the profile's noise) onto the
field-of-view-preserving low-resolution grid, and, for rasters, splits off
the left part that a self-supervised fit may see (:data:`DEFAULT_RASTER_HOLDOUT`);
:func:`pair_case` takes an explicit low/high-resolution pair on aligned
grids instead. The result is a :class:`Case`.

Used by :mod:`medsat_sr.evaluate` (which re-exports the public names),
:mod:`medsat_sr.evaluate_scoring` (the case's region and validity),
:mod:`medsat_sr.demo` and the benchmarks.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor

from medsat_sr import degrade, geometry
from medsat_sr.config import JobConfig, load_config
from medsat_sr.errors import ConfigError, DataError, GeometryError
from medsat_sr.image import BandSet, Key, is_raster, is_volume, make_raster, make_volume, one_grid_raster
from medsat_sr.io import read
from medsat_sr.normalise import Normaliser, valid_mask

__all__ = ["Case", "prepare_case", "pair_case", "degrade_reference", "crop_image", "superior_axis",
           "DEFAULT_SLICE_FACTOR", "DEFAULT_RASTER_HOLDOUT"]

#: Thick-slice factor used when neither the data, the config nor ``scale`` gives one (1 mm -> 4 mm).
DEFAULT_SLICE_FACTOR = 4.0

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


def _whole_multiple(n: int, f: float) -> tuple[int, int]:
    """``(m, n_lr)``: the largest ``m <= n`` with ``m = n_lr * f`` a whole number, ``n_lr >= 1``."""
    for n_lr in range(int(math.floor(n / f + 1e-9)), 0, -1):
        m = n_lr * f
        if abs(m - round(m)) < 1e-6:
            return int(round(m)), n_lr
    raise GeometryError(
        f"an axis of {n} samples holds no whole number of low-resolution samples at factor {f:g}; "
        "use a factor whose multiples are integers (e.g. 2, 4, 2.5)"
    )


def superior_axis(affine: np.ndarray) -> int:
    """The voxel axis closest to the world inferior-superior (z) axis."""
    lin = np.asarray(affine, dtype=np.float64)[:3, :3]
    cosines = np.abs(lin[2]) / np.maximum(np.linalg.norm(lin, axis=0), 1e-12)
    return int(np.argmax(cosines))


def _slice_settings(cfg: Any, ref: MetaTensor, scale: Any) -> tuple[int, float, dict[str, Any]]:
    """Thick axis and factor of a slice-profile evaluation, with the rules that chose them.

    The FWHM follows from the profile in :func:`medsat_sr.degrade.recipe`
    (the reference has no thick slices to read a thickness from: thickness =
    slice spacing unless the profile gives ``fwhm`` in mm).
    """
    spec = cfg.profile.degradation.slice_profile
    spacing = [float(s) for s in ref.meta[Key.SPACING]]
    notes: dict[str, Any] = {}
    requested: list[float] | None = None
    if scale is not None:
        requested = [float(v) for v in geometry.as_scale(scale, 3)]
    elif isinstance(cfg.scale, list):
        requested = [float(v) for v in cfg.scale]
    if isinstance(spec.axis, int) and not isinstance(spec.axis, bool):
        axis, axis_rule = int(spec.axis), "degradation.slice_profile.axis"
    elif requested is not None and sum(f > 1 + 1e-9 for f in requested) == 1:
        axis, axis_rule = int(np.argmax(requested)), "the axis with a factor > 1"
    elif max(spacing) > 1.05 * min(spacing):
        axis, axis_rule = int(np.argmax(spacing)), "the thickest axis of the reference"
    else:
        axis = superior_axis(np.asarray(ref.affine))
        axis_rule = "isotropic reference: the axis closest to the world inferior-superior axis"
    if requested is not None and sum(f > 1 + 1e-9 for f in requested) > 1:
        raise ConfigError(f"a slice-profile evaluation degrades one axis; scale {requested} has factors > 1 on several")
    if isinstance(spec.spacing, (int, float)) and not isinstance(spec.spacing, bool):
        factor = float(spec.spacing) / spacing[axis]
        notes["factor_rule"] = "degradation.slice_profile.spacing (mm) / reference spacing"
    elif requested is not None:
        factor = float(requested[axis])
        notes["factor_rule"] = "scale"
    else:
        factor = DEFAULT_SLICE_FACTOR
        notes["factor_rule"] = (
            f"default {DEFAULT_SLICE_FACTOR:g} (the reference has no thick slices to read the spacing from; "
            "set --scale or degradation.slice_profile.spacing)"
        )
    if factor <= 1.0 + 1e-9:
        raise ConfigError(
            f"the slice spacing along axis {axis} gives factor {factor:g}; a slice-profile evaluation needs a factor > 1 "
            "(set --scale, e.g. 1,1,4, or degradation.slice_profile.spacing in mm)"
        )
    notes["axis_rule"] = axis_rule
    return axis, factor, notes


def _factors(cfg: Any, ref: MetaTensor, scale: Any) -> tuple[float, ...]:
    nd = ref.ndim - 1
    if scale is not None:
        return tuple(float(v) for v in geometry.as_scale(scale, nd))
    if isinstance(cfg.scale, (float, list)):
        f = cfg.scale_for(None)
        return tuple(float(v) for v in f)
    if cfg.profile.kind == "volume":
        raise ConfigError(
            f"{cfg.source}: scale: auto cannot be read from an isotropic reference for the "
            f"{cfg.profile.degradation.model!r} degradation; give --scale (e.g. 2)"
        )
    raise ConfigError(f"{cfg.source}: scale: auto needs band groups; give --scale (e.g. 2)")


def degrade_reference(
    x: torch.Tensor,
    profile: Any,
    factors: Sequence[float],
    *,
    spacing: Sequence[float] | None = None,
    band_names: Sequence[str] | None = None,
    valid: np.ndarray | None = None,
) -> tuple[torch.Tensor, np.ndarray | None, dict[str, Any]]:
    """Degrade a reference ``(C, *spatial)`` with a domain profile's model (no noise).

    :func:`medsat_sr.degrade.degrade`, the recipe of the training pairs
    (:mod:`medsat_sr.data`): a slice profile across the one axis with a
    factor > 1 (FWHM = the slice spacing, or the profile's ``fwhm`` in mm:
    a reference has no thick slices to read a thickness from), a PSF per band
    and axis, or k-space truncation (real part).

    Args:
        x: float tensor ``(C, *spatial)`` (physical values).
        profile: the domain profile (a config's :attr:`~medsat_sr.config.JobConfig.profile`).
        factors: reduction factor per spatial axis (each axis must hold a
            whole number of low-resolution samples).
        spacing: the reference's spacing in mm (volumes; converts the
            profile's slice ``fwhm``/``spacing`` given in mm to voxels).
        band_names: band names (per-band MTF).
        valid: spatial validity ``(*spatial)`` of ``x`` (propagated).

    Returns:
        ``(low_res, low_res_valid or None, record)``; the record is
        :meth:`medsat_sr.degrade.Recipe.record`.

    Raises:
        ConfigError: a model that does not fit the factors.
    """
    rec = degrade.recipe(profile, [float(f) for f in factors], bands=band_names, channels=int(x.shape[0]),
                         spacing=spacing)
    lr, lr_valid = rec.apply(x, None if valid is None else np.asarray(valid, dtype=bool))
    return lr, None if lr_valid is None else lr_valid.cpu().numpy(), rec.record()


def _spatial_valid(img: MetaTensor) -> np.ndarray:
    return valid_mask(img).all(dim=0).cpu().numpy()


def crop_image(img: MetaTensor, start: Sequence[int], stop: Sequence[int]) -> MetaTensor:
    """Crop a volume or raster to ``[start, stop)`` per spatial axis, with the matching grid.

    The affine (volumes, :func:`medsat_sr.geometry.crop_affine`) or the
    transform (rasters, :func:`~medsat_sr.geometry.crop_transform`) is that
    of the sub-grid; the other meta entries are kept.
    """
    sl = (slice(None), *[slice(int(a), int(b)) for a, b in zip(start, stop)])
    data = img.as_tensor()[sl].clone()
    meta = {k: v for k, v in img.meta.items() if k not in ("affine", "original_affine", "spatial_shape")}
    if is_volume(img):
        aff = geometry.crop_affine(np.asarray(img.affine, dtype=np.float64), start)
        for k in (Key.KIND, Key.SPACING, Key.ORIENTATION, "space"):
            meta.pop(k, None)
        return make_volume(data, aff, **meta)
    t = geometry.crop_transform(meta.pop(Key.TRANSFORM), int(start[0]), int(start[1]))
    for k in (Key.KIND, Key.SPACING):
        meta.pop(k, None)
    vm = meta.get("valid_mask")
    if vm is not None:
        meta["valid_mask"] = np.asarray(vm)[tuple(slice(int(a), int(b)) for a, b in zip(start, stop))]
    crs = meta.pop(Key.CRS, None)
    return make_raster(data, t, crs=crs, **meta)


def _noise(cfg: Any, ref: MetaTensor, lr: torch.Tensor) -> tuple[torch.Tensor, dict[str, Any] | None]:
    n = cfg.profile.degradation.noise
    if n.model == "none" or n.sigma <= 0:
        return lr, None
    norm = Normaliser.fit(ref, cfg.profile)
    gen = torch.Generator().manual_seed(int(cfg.train.seed))
    out = []
    sig_phys = []
    for c in range(lr.shape[0]):
        s = float(n.sigma) / abs(float(norm.scale[c if c < len(norm.scale) else 0]))
        sig_phys.append(s)
        out.append(degrade.add_noise(lr[c : c + 1], sigma=s, kind=n.model, generator=gen))
    return torch.cat(out), {"model": n.model, "sigma_normalised": float(n.sigma), "sigma_physical": sig_phys,
                             "seed": int(cfg.train.seed)}


def _case_factors(
    cfg: Any, ref: MetaTensor, scale: float | Sequence[float] | None
) -> tuple[list[float], int | None, dict[str, Any]]:
    """The evaluation factors per spatial axis, and the slice axis of a slice-profile degradation.

    Args:
        cfg: the job config.
        ref: the reference image.
        scale: factor(s) instead of the config's, or None.

    Returns:
        ``(factors, slice_axis or None, notes for the degradation record)``.

    Raises:
        ConfigError: a factor below 1, or none above 1.
    """
    slice_axis = None
    notes: dict[str, Any] = {}
    if cfg.profile.degradation.model == "slice_profile":
        slice_axis, f, notes = _slice_settings(cfg, ref, scale)
        factors = [1.0] * (ref.ndim - 1)
        factors[slice_axis] = f
    else:
        factors = list(_factors(cfg, ref, scale))
    if any(f < 1 for f in factors) or max(factors) <= 1:
        raise ConfigError(f"evaluation factors must be >= 1 with one > 1, got {factors}")
    return factors, slice_axis, notes


def _centre_crop(
    ref: MetaTensor, factors: Sequence[float]
) -> tuple[MetaTensor, dict[str, Any], tuple[int, ...], tuple[int, ...]]:
    """Centre-crop the reference to a whole number of low-resolution samples per axis.

    Args:
        ref: the reference image.
        factors: the factor per spatial axis.

    Returns:
        ``(cropped reference, crop record, kept shape, low-resolution shape)``;
        the reference itself when nothing is cropped.
    """
    shape = [int(v) for v in ref.shape[1:]]
    keep, n_lr = zip(*[_whole_multiple(n, f) for n, f in zip(shape, factors)])
    start = [(n - k) // 2 for n, k in zip(shape, keep)]
    stop = [s + k for s, k in zip(start, keep)]
    if list(keep) != shape:
        ref = crop_image(ref, start, stop)
    crop = {"original_shape": shape, "start": start, "shape": list(keep), "rule": "centre crop to whole low-resolution samples"}
    return ref, crop, keep, n_lr


def _fill_invalid(x: torch.Tensor, valid: np.ndarray) -> torch.Tensor:
    """A copy of ``x`` with its invalid pixels set to the median of each band's valid ones (0 without any).

    Args:
        x: the image ``(C, *spatial)``.
        valid: the spatial validity mask.

    Returns:
        The filled copy.
    """
    xs = x.clone()
    for c in range(xs.shape[0]):
        vals = xs[c][torch.from_numpy(valid)]
        xs[c][torch.from_numpy(~valid)] = float(vals.median()) if vals.numel() else 0.0
    return xs


def _degrade_case(
    cfg: Any, ref: MetaTensor, kind: str, factors: Sequence[float], *, notes: Mapping[str, Any],
    n_lr: Sequence[int],
) -> tuple[torch.Tensor, np.ndarray | None, dict[str, Any], Any]:
    """Degrade the cropped reference with the profile's model and noise.

    Args:
        cfg: the job config.
        ref: the cropped reference.
        kind: ``"volume"`` or ``"raster"``.
        factors: the factor per spatial axis.
        notes: entries added to the degradation record.
        n_lr: the expected low-resolution shape.

    Returns:
        ``(low_res, low_res_valid or None, degradation record, slice FWHM in voxels or None)``.

    Raises:
        ConfigError: non-integer factors with a k-space degradation, or a model that does not fit.
        GeometryError: a degraded shape other than ``n_lr``.
    """
    x = ref.as_tensor().to(torch.float32)
    valid = _spatial_valid(ref)
    fill_needed = not valid.all()
    if fill_needed:  # nodata never enters the blur as a number: fill with the band medians first
        x = _fill_invalid(x, valid)
    if cfg.profile.degradation.model == "kspace" and any(abs(f - round(f)) > 1e-9 for f in factors):
        raise ConfigError(f"k-space evaluation needs integer factors, got {factors}")
    lr, lr_valid, rec = degrade_reference(
        x, cfg.profile, factors, spacing=[float(v) for v in ref.meta[Key.SPACING]] if kind == "volume" else None,
        band_names=ref.meta.get(Key.BAND_NAMES), valid=valid if fill_needed else None,
    )
    slice_fwhm = rec.get("fwhm_voxels")
    lr, noise = _noise(cfg, ref, lr)
    rec["noise"] = noise
    rec.update(notes)
    if tuple(lr.shape[1:]) != tuple(n_lr):
        raise GeometryError(f"degraded shape {tuple(lr.shape[1:])} differs from the expected {tuple(n_lr)}")
    return lr, lr_valid, rec, slice_fwhm


def _volume_lr(
    ref: MetaTensor, lr: torch.Tensor, eff_down: Sequence[float], rec: dict[str, Any], *,
    factors: Sequence[float], slice_axis: int | None, slice_fwhm: Any,
) -> MetaTensor:
    """The degraded volume on its grid; a slice-profile case adds its slice spacing and FWHM to ``rec``.

    Args:
        ref: the cropped reference volume.
        lr: the degraded data.
        eff_down: the effective down-scaling per axis (low-resolution over kept size).
        rec: the degradation record (updated).
        factors: the factor per spatial axis.
        slice_axis: the slice axis of a slice-profile degradation, or None.
        slice_fwhm: the slice profile's FWHM in voxels (slice-profile only).

    Returns:
        The low-resolution volume.
    """
    sp = [float(s) for s in ref.meta[Key.SPACING]]
    if slice_axis is not None:
        rec["slice_spacing_mm"] = sp[slice_axis] * factors[slice_axis]
        rec["slice_fwhm_mm"] = sp[slice_axis] * float(slice_fwhm)
    aff = geometry.scale_affine(np.asarray(ref.affine, dtype=np.float64), eff_down)
    extra = {k: v for k, v in ref.meta.items() if k in ("modality", "series_description")}
    if slice_axis is not None:  # what slice_thickness() of the degraded volume reads
        extra["slice_thickness"] = sp[slice_axis] * float(slice_fwhm)
        extra["slice_axis"] = int(slice_axis)
    return make_volume(
        lr, aff, source_dtype=ref.meta.get(Key.SOURCE_DTYPE), intensity=ref.meta.get(Key.INTENSITY),
        band_names=ref.meta.get(Key.BAND_NAMES), source_format=ref.meta.get(Key.SOURCE_FORMAT),
        source_path=None, header=None, **extra,
    )


def _raster_lr(ref: MetaTensor, lr: torch.Tensor, lr_valid: np.ndarray | None, eff_down: Sequence[float]) -> MetaTensor:
    """The degraded raster on its grid, invalid pixels set to the nodata value (NaN without one).

    Args:
        ref: the cropped reference raster.
        lr: the degraded data.
        lr_valid: the degraded validity mask, or None.
        eff_down: the effective down-scaling per axis (low-resolution over kept size).

    Returns:
        The low-resolution raster.
    """
    t = geometry.scale_transform(ref.meta[Key.TRANSFORM], eff_down)
    nodata = ref.meta.get(Key.NODATA)
    if lr_valid is not None and not lr_valid.all():
        lr = lr.clone()
        fill = float(nodata) if nodata is not None else float("nan")
        lr[:, torch.from_numpy(~lr_valid)] = fill
    return make_raster(
        lr, t, crs=ref.meta.get(Key.CRS), nodata=nodata, band_names=ref.meta.get(Key.BAND_NAMES),
        scales=ref.meta.get(Key.SCALES), offsets=ref.meta.get(Key.OFFSETS),
        source_dtype=ref.meta.get(Key.SOURCE_DTYPE), source_format=ref.meta.get(Key.SOURCE_FORMAT),
        header=ref.meta.get(Key.HEADER),
    )


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

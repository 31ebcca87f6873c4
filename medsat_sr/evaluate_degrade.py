"""An evaluation case's input: the reference degraded by the domain profile's one recipe.

:func:`degrade_reference` and the pieces :func:`medsat_sr.evaluate_cases.prepare_case` builds a case from:
the factors (slice settings for thick-slice volumes), the degradation, noise, the low-resolution grid.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor

from medsat_sr import degrade, geometry
from medsat_sr.errors import ConfigError, GeometryError
from medsat_sr.image import Key, is_volume, make_raster, make_volume
from medsat_sr.normalise import Normaliser, valid_mask

__all__ = ["degrade_reference", "crop_image", "superior_axis", "DEFAULT_SLICE_FACTOR"]

#: Thick-slice factor used when neither the data, the config nor ``scale`` gives one (1 mm -> 4 mm).
DEFAULT_SLICE_FACTOR = 4.0


def superior_axis(affine: np.ndarray) -> int:
    """The voxel axis closest to the world inferior-superior (z) axis."""
    lin = np.asarray(affine, dtype=np.float64)[:3, :3]
    cosines = np.abs(lin[2]) / np.maximum(np.linalg.norm(lin, axis=0), 1e-12)
    return int(np.argmax(cosines))


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

"""The evaluation protocol of DESIGN.md §5: degrade a reference, run every method, score on its grid.

For each high-resolution reference (or explicit low/high-resolution pair):

1. **Grid.** The reference is centre-cropped so that every scaled axis is a
   whole number of low-resolution samples (``n = n_lr * f`` exactly); the
   crop is recorded. Then the low-resolution grid is exactly
   ``geometry.scale_affine(affine, 1 / f)`` (rasters: ``scale_transform``)
   and upscaling it by ``f`` lands back on the reference grid: the fields of
   view are aligned by construction, which :func:`evaluate` checks for every
   method's output (``grid_match``).
2. **Degradation.** The reference is degraded with the job's domain profile
   (config overrides merged) by :func:`medsat_sr.degrade.degrade`, the one
   recipe that :mod:`medsat_sr.data` uses for training pairs and inference
   for its consistency check:

   * ``slice_profile`` (thick slices): Gaussian or rect profile of FWHM
     ``degradation.slice_profile.fwhm`` mm, sampled every
     ``slice_profile.spacing`` mm along ``slice_profile.axis``. On an
     isotropic reference ``"header"``/``"thickness"``/``"thickest"`` cannot
     be read from the data, so the factor comes from ``scale`` (argument or
     a per-axis ``scale`` in the config) or else
     :data:`DEFAULT_SLICE_FACTOR` (4: 1 mm -> 4 mm, the benchmark of the
     learning-core issue); the FWHM is the slice spacing (no gap) and the
     axis the one closest to the world's inferior-superior axis;
   * ``psf``: Gaussian PSF (MTF gain at Nyquist, per band when the profile
     gives it, or FWHM in low-resolution pixels) or box, then decimation
     (:func:`medsat_sr.degrade.psf_decimate`), nodata mask propagated;
   * ``kspace``: central k-space kept and decimated
     (:func:`medsat_sr.degrade.kspace_lowres`, real part);
   * ``noise`` (when the profile sets it): sigma given in normalised units,
     converted to physical units with the profile's normalisation of the
     reference, seeded with ``train.seed``.
3. **Methods.** The classical baselines of the profile (``metrics.baselines``:
   cubic B-spline for volumes, GDAL cubic and lanczos for rasters) are
   always run, plus the requested ones: other classical methods, ``model``
   (a checkpoint, or a self-supervised fit with :func:`medsat_sr.train.fit`
   when the config's ``train.mode`` is ``self_supervised``), or checkpoints.
   Every method goes through :func:`medsat_sr.inference.upscale`, the code
   users run; learned outputs are kept even when the model does not beat
   cubic on its validation split (``force``): the evaluation reports what the
   model does. Wall time and peak memory (resident set size sampled every
   10 ms, :class:`PeakMemory`) are recorded per method, fitting included.

   *What a self-supervised fit may see.* Volumes: the degraded input only
   (thick slices: its own in-plane slices, SMORE/ECLARE). Rasters: by
   default (``holdout=0.5``) the left half of the high-resolution reference,
   and every method is scored on the right half only (the learning-core
   benchmark's protocol: "train on the left half, measure on the right
   half"); ``holdout=0`` fits on the degraded input itself (Wald's
   protocol one scale down) and scores the whole image.
4. **Metrics** (:mod:`medsat_sr.metrics`), on the reference grid, in the
   profile's units (``hu_window``/``percentile`` profiles: values as read,
   HU or MR intensity; ``linear``/``reflectance`` profiles: the normalised
   physical quantity, reflectance or DN/255), over the scored region less
   ``metrics.crop_border`` pixels:

   * PSNR with an explicit data range (``metrics.data_range``: the
     reference's max - min, the HU window width, the reference's robust
     percentile range, or a fixed value), whole and masked
     (``metrics.mask``: foreground of the reference, the rule
     :func:`medsat_sr.data.foreground_mask` uses for training patches, or
     valid pixels);
   * SSIM (Gaussian window of ``metrics.ssim.sigma``): 3D for volumes, whole
     and masked, plus the mean 2D SSIM of the slices across the thick axis;
     2D per band for rasters;
   * MAE, MSE (whole and masked), RMSE;
   * rasters: per-band PSNR (per-band data range) and RMSE, SAM (degrees)
     and ERGAS with ``h/l = 1/scale`` (``metrics.ergas_ratio``).

   Every setting the numbers depend on (degradation parameters, crop,
   region, data range, mask rule, SSIM window, ERGAS convention, method
   options, versions) is recorded in :meth:`Evaluation.to_dict`.

Example:
    >>> from medsat_sr.evaluate import evaluate                     # doctest: +SKIP
    >>> ev = evaluate(["scan.nii.gz"], "mri_thick_slice", output="report")  # doctest: +SKIP
    >>> ev.files[0].methods["model"]["psnr_masked"]                  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import math
import os
import platform
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor

from medsat_sr import baselines, degrade, geometry, metrics
from medsat_sr._resources import suggest
from medsat_sr._version import __version__
from medsat_sr.config import JobConfig, load_config
from medsat_sr.errors import ConfigError, DataError, GeometryError, WriteError
from medsat_sr.image import BandSet, Key, is_raster, is_volume, make_raster, make_volume
from medsat_sr.inference import upscale
from medsat_sr.io import read
from medsat_sr.normalise import Normaliser, valid_mask
from medsat_sr.peak_memory import PeakMemory
from medsat_sr.report import write_report
from medsat_sr.report_plain import band_labels, is_generic_band_name, validation_trend
from medsat_sr.sampling import foreground_mask
from medsat_sr.train import fit

__all__ = [
    "evaluate",
    "Evaluation",
    "FileResult",
    "Case",
    "prepare_case",
    "pair_case",
    "degrade_reference",
    "crop_image",
    "superior_axis",
    "metric_settings",
    "score",
    "PeakMemory",
    "parse_methods",
    "CLASSICAL",
    "DEFAULT_SLICE_FACTOR",
    "DEFAULT_RASTER_HOLDOUT",
    "EVALUATION_FORMAT",
]

logger = logging.getLogger(__name__)

#: ``format`` entry of :meth:`Evaluation.to_dict` (metrics.json).
EVALUATION_FORMAT = "medsat_sr.evaluation/1"

#: The classical methods (:data:`medsat_sr.baselines.METHODS`).
CLASSICAL: tuple[str, ...] = tuple(baselines.METHODS)

#: Thick-slice factor used when neither the data, the config nor ``scale`` gives one (1 mm -> 4 mm).
DEFAULT_SLICE_FACTOR = 4.0

#: Rasters: right-hand fraction held out from a self-supervised fit and scored.
DEFAULT_RASTER_HOLDOUT = 0.5

#: The metric keys that are "higher is better" (used for gains and headlines).
HIGHER_IS_BETTER = ("psnr", "psnr_masked", "ssim", "ssim_masked", "ssim_slices")


# =============================================================== cases
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
    """Crop and degrade one reference as the protocol says (module docstring).

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


# =============================================================== metric settings
def _units_transform(profile: Any, ref: MetaTensor) -> tuple[Any, str]:
    """Map values as read to the profile's metric units, and name them."""
    method = profile.normalisation.method
    if method in ("linear", "reflectance"):
        norm = Normaliser.fit(ref, profile)
        scale = np.asarray(norm.scale, dtype=np.float64)
        offset = np.asarray(norm.offset, dtype=np.float64)

        def conv(a: np.ndarray) -> np.ndarray:
            c = a.shape[0]
            s = scale if scale.size == c else np.full(c, scale[0])
            o = offset if offset.size == c else np.full(c, offset[0])
            shape = (c,) + (1,) * (a.ndim - 1)
            return a * s.reshape(shape) + o.reshape(shape)

        desc = f"{profile.units} (values as read x {norm.scale[0]:.6g} + {norm.offset[0]:.6g}, the profile's {method} mapping)"
        return conv, desc
    return (lambda a: a), f"{profile.units} (values as read)"


def metric_settings(cfg: Any, case: Case) -> dict[str, Any]:
    """The metric settings of a case, as recorded in metrics.json."""
    spec = cfg.profile.metrics
    ms = spec.mask
    out: dict[str, Any] = {
        "data_range_policy": spec.data_range,
        "data_range_value": spec.data_range_value,
        "mask": {
            "kind": ms.kind, "threshold": ms.threshold, "units": ms.units, "fill_holes": ms.fill_holes,
            "dilate": ms.dilate,
            "rule": {
                "none": "no mask (masked = all valid pixels)",
                "valid": "valid pixels: finite, not nodata, valid in the input's footprint",
                "foreground": (
                    f"reference > {ms.threshold} ({ms.units} units"
                    + (", the profile's normalisation fitted on the reference" if ms.units == "normalised" else "")
                    + ")" + (", holes filled" if ms.fill_holes else "") + (f", dilated by {ms.dilate}" if ms.dilate else "")
                    + "; medsat_sr.data.foreground_mask"
                ) if ms.kind == "foreground" else None,
            }[ms.kind],
        },
        "ssim": {
            "window": "gaussian", "sigma": float(spec.ssim.sigma), "truncate_sigmas": 3.5,
            "k1": 0.01, "k2": 0.03, "border_excluded": int(3.5 * float(spec.ssim.sigma) + 0.5),
            "dims": "3D (whole volume) and 2D per slice across the slice axis" if case.kind == "volume" else "2D per band",
        },
        "crop_border": int(spec.crop_border),
        "compared_on": "the reference grid (fields of view aligned by construction; checked per method)",
    }
    if spec.ssim.kernel != "gaussian":
        out["ssim"]["note"] = f"the profile asks for a {spec.ssim.kernel} window; medsat_sr.metrics implements the Gaussian one"
    if case.kind == "raster":
        s = max(case.factors)
        out["ergas"] = {
            "convention": spec.ergas_ratio,
            "h_over_l": (1.0 / s) if spec.ergas_ratio == "inverse_scale" else s,
            "formula": "100 (h/l) sqrt(mean_k RMSE_k^2 / mu_k^2), mu_k the reference band mean",
            "scale": s,
        }
        out["sam_units"] = "degrees"
    return out


def _robust_range(values: np.ndarray, low: float, high: float) -> float:
    if values.size == 0:
        raise DataError("the reference has no valid value to take a data range from")
    lo, hi = np.percentile(values, [low, high])
    return float(hi - lo) if hi > lo else 1.0


def _data_ranges(cfg: Any, ref_m: np.ndarray, ref_raw: np.ndarray, valid: np.ndarray) -> tuple[float, list[float], str]:
    """Overall and per-band data range in metric units, and how they were obtained."""
    spec = cfg.profile.metrics
    norm = cfg.profile.normalisation
    c = ref_m.shape[0]
    if spec.data_range == "fixed":
        v = float(spec.data_range_value)
        return v, [v] * c, f"fixed {v:g} (metrics.data_range_value, in metric units)"
    if spec.data_range == "window":
        v = float(norm.max) - float(norm.min)
        return v, [v] * c, f"HU window width {norm.max:g} - ({norm.min:g}) = {v:g}"
    if spec.data_range == "percentile":
        sel = valid[None] & np.ones((c,) + valid.shape, bool)
        if norm.mask == "nonzero":
            sel = sel & (ref_raw != 0)
        whole = _robust_range(ref_m[sel], norm.low, norm.high)
        per = [_robust_range(ref_m[k][sel[k]], norm.low, norm.high) for k in range(c)]
        return whole, per, (
            f"reference p{norm.high:g} - p{norm.low:g} on its {'non-zero ' if norm.mask == 'nonzero' else ''}valid values"
        )
    vals = ref_m[:, valid]
    if vals.size == 0:
        raise DataError("the reference has no valid value to take a data range from")
    whole = float(vals.max() - vals.min()) or 1.0
    per = [float(v.max() - v.min()) or 1.0 for v in vals]
    return whole, per, "reference max - min over the valid scored pixels (per band for per-band metrics)"


def _masks(cfg: Any, case: Case, ref: MetaTensor, srs: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """``(valid, masked)`` spatial masks over the reference grid."""
    valid = _spatial_valid(ref)
    if case.lr_valid is not None:
        valid &= baselines.upsample_mask(case.lr_valid, valid.shape)
    for a in srs.values():
        valid &= np.isfinite(a).all(axis=0)
    ms = cfg.profile.metrics.mask
    if ms.kind != "foreground":
        return valid, valid.copy()
    phys = ref.as_tensor().to(torch.float32)
    normed = Normaliser.fit(ref, cfg.profile).forward(phys) if ms.units == "normalised" else phys
    fg = foreground_mask(phys, normed, ms, torch.from_numpy(valid)[None].expand_as(phys))
    return valid, (valid if fg is None else (fg & valid))


def _crop_region(a: np.ndarray, region: tuple[slice, ...], border: int) -> np.ndarray:
    sl = []
    for s in region:
        b0, b1 = int(s.start or 0) + border, int(s.stop) - border
        if b1 <= b0:
            raise ConfigError(f"metrics.crop_border {border} leaves nothing of the scored region")
        sl.append(slice(b0, b1))
    return a[(Ellipsis, *sl)]


def _ssim_or_none(fn: Any, *args: Any, **kw: Any) -> Any:
    """SSIM, or ``None`` (with a warning) when the image is smaller than the window or the mask leaves nothing."""
    try:
        return fn(*args, **kw)
    except ConfigError as exc:
        logger.warning("SSIM not computed: %s", exc)
        return None


def score(
    sr: np.ndarray,
    ref: np.ndarray,
    *,
    kind: str,
    data_range: float,
    band_ranges: Sequence[float],
    valid: np.ndarray,
    mask: np.ndarray,
    ssim_sigma: float = 1.5,
    slice_axis: int | None = None,
    scale: float | None = None,
    ergas_h_over_l: float | None = None,
    band_names: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Every metric of one output against the reference (metric units, region already cut).

    Args:
        sr: ``(C, *spatial)`` output.
        ref: ``(C, *spatial)`` reference.
        kind: ``"volume"`` or ``"raster"``.
        data_range: PSNR/SSIM data range of the pooled metrics.
        band_ranges: per-band data ranges (rasters).
        valid: spatial mask of valid pixels ("whole" metrics).
        mask: spatial mask of the masked metrics.
        ssim_sigma: SSIM Gaussian window sigma.
        slice_axis: volumes: spatial axis of the per-slice SSIM (default: last).
        scale: rasters: SR factor for ERGAS.
        ergas_h_over_l: rasters: the ``h/l`` of the ERGAS convention.
        band_names: names of the bands (per-band records).

    Returns:
        A flat mapping of metric name to value, with ``per_band`` for rasters.
    """
    out: dict[str, Any] = {}
    whole_all = bool(valid.all())
    vm = None if whole_all else valid
    out["psnr"] = metrics.psnr(sr, ref, data_range=data_range, mask=vm)
    out["psnr_masked"] = metrics.psnr(sr, ref, data_range=data_range, mask=mask)
    out["mae"] = metrics.mae(sr, ref, mask=vm)
    out["mae_masked"] = metrics.mae(sr, ref, mask=mask)
    out["mse"] = metrics.mse(sr, ref, mask=vm)
    out["mse_masked"] = metrics.mse(sr, ref, mask=mask)
    out["rmse"] = math.sqrt(out["mse"])
    if kind == "volume":
        out["ssim"] = _ssim_or_none(metrics.ssim, sr, ref, data_range=data_range, mask=vm, spatial_dims=3, sigma=ssim_sigma)
        out["ssim_masked"] = _ssim_or_none(metrics.ssim, sr, ref, data_range=data_range, mask=mask, spatial_dims=3,
                                           sigma=ssim_sigma)
        ax = 2 if slice_axis is None else int(slice_axis)
        out["ssim_slices"] = _ssim_or_none(metrics.ssim_slices, sr, ref, axis=ax, data_range=data_range, mask=vm,
                                           sigma=ssim_sigma)
        out["ssim_slices_axis"] = ax
        return out
    out["ssim"] = _ssim_or_none(metrics.ssim, sr, ref, data_range=data_range, mask=vm, sigma=ssim_sigma)
    out["ssim_masked"] = _ssim_or_none(metrics.ssim, sr, ref, data_range=data_range, mask=mask, sigma=ssim_sigma)
    names = [f"band{i + 1}" for i in range(sr.shape[0])]
    if band_names is not None and len(band_names) == sr.shape[0]:
        names = [str(b) for b in band_names]
    pb: dict[str, Any] = {"names": names, "data_range": [float(v) for v in band_ranges]}
    pb["psnr"] = metrics.per_band(metrics.psnr, sr, ref, data_range=list(band_ranges), mask=mask)
    pb["rmse"] = metrics.per_band(metrics.rmse, sr, ref, mask=mask)
    pb["mae"] = metrics.per_band(metrics.mae, sr, ref, mask=mask)
    pb["ssim"] = _ssim_or_none(metrics.per_band, metrics.ssim, sr, ref, data_range=list(band_ranges), mask=mask,
                               sigma=ssim_sigma) or [None] * sr.shape[0]
    out["per_band"] = pb
    out["psnr_band_mean"] = float(np.mean(pb["psnr"]))
    if sr.shape[0] >= 2:
        out["sam"] = metrics.sam(sr, ref, mask=mask)
    if scale is not None:
        try:
            e = metrics.ergas(sr, ref, scale=float(scale), mask=mask)
            if ergas_h_over_l is not None:  # rescale to the recorded convention
                e = e * float(ergas_h_over_l) * float(scale)
            out["ergas"] = e
        except ConfigError as exc:
            logger.warning("ERGAS not computed: %s", exc)
            out["ergas"] = None
    return out


# =============================================================== methods
def parse_methods(
    methods: str | Sequence[str] | None, models: Sequence[str | os.PathLike[str]] = (), *, cfg: Any = None
) -> list[str]:
    """The method list: the profile's baselines first, then the requested ones (no repeats).

    ``model`` stands for the checkpoints given (each becomes a method named
    by its file stem) or, without checkpoints, a self-supervised fit by the
    config. Checkpoints given without ``model`` in ``methods`` are added.

    Raises:
        ConfigError: an unknown method name, or ``model`` with neither a
            checkpoint nor a self-supervised config.
    """
    if isinstance(methods, str):
        items = [m.strip() for m in methods.split(",") if m.strip()]
    else:
        items = [str(m).strip() for m in (methods or []) if str(m).strip()]
    base = list(cfg.profile.metrics.baselines) if cfg is not None else ["cubic"]
    selfsup = cfg is not None and cfg.train.mode in ("self_supervised", "finetune")
    if not items:
        items = ["model"] if (models or selfsup) else []
    out: list[str] = []
    for m in base + items:
        if m in out:
            continue
        if m in CLASSICAL:
            out.append(m)
        elif m == "model":
            if models:
                out.extend(_model_names(models))
            elif selfsup:
                out.append("model")
            else:
                raise ConfigError(
                    "method 'model' needs a checkpoint (--model CKPT) or a self-supervised config "
                    f"(train.mode: self_supervised); the config's train.mode is {getattr(cfg.train, 'mode', None)!r}"
                )
        else:
            raise ConfigError(
                f"unknown method {m!r}{suggest(m, list(CLASSICAL) + ['model'])}; expected "
                f"{', '.join(CLASSICAL)} or model"
            )
    for name in _model_names(models):
        if name not in out:
            out.append(name)
    return out


def _model_names(models: Sequence[str | os.PathLike[str]]) -> list[str]:
    if len(models) == 1:
        return ["model"]
    names: list[str] = []
    for p in models:
        stem = Path(p).name
        for suf in (".safetensors", ".json"):
            stem = stem[: -len(suf)] if stem.endswith(suf) else stem
        name = f"model:{stem}"
        k = 2
        while name in names:
            name = f"model:{stem}#{k}"
            k += 1
        names.append(name)
    return names


@dataclass
class MethodRun:
    """One method's output on one case and what it cost."""

    name: str
    kind: str
    image: np.ndarray
    seconds: float
    peak_rss_mb: float
    peak_rss_increase_mb: float
    fit_seconds: float | None = None
    apply_seconds: float | None = None
    info: dict[str, Any] = field(default_factory=dict)
    fit: Any = None
    record: dict[str, Any] | None = None


def _grid_matches(case: Case, out: MetaTensor) -> tuple[bool, float]:
    ref = case.reference
    if tuple(out.shape[1:]) != tuple(ref.shape[1:]):
        return False, float("inf")
    if case.kind == "volume":
        err = float(np.abs(np.asarray(out.affine, dtype=np.float64) - np.asarray(ref.affine, dtype=np.float64)).max())
        tol = 1e-6 * float(min(ref.meta[Key.SPACING]))
        return err <= tol, err
    a, b = out.meta[Key.TRANSFORM], ref.meta[Key.TRANSFORM]
    err = max(abs(float(x) - float(y)) for x, y in zip(a, b))
    return err <= 1e-6 * float(min(ref.meta[Key.SPACING])), err


def _run_method(
    name: str,
    case: Case,
    cfg: Any,
    *,
    checkpoint: str | os.PathLike[str] | None,
    run_dir: Path | None,
    progress: bool,
) -> MethodRun:
    scale = list(case.factors)
    fit_res = None
    fit_s = None
    with PeakMemory() as pm:
        t0 = time.perf_counter()
        if name in CLASSICAL:
            kind = "classical"
            res = upscale(case.lr, method=name, scale=scale, sidecar=False, progress=False)
        elif checkpoint is not None:
            kind = "checkpoint"
            res = upscale(case.lr, model=checkpoint, scale=scale if case.kind == "volume" else None, force=True,
                          sidecar=False, progress=progress)
        else:
            kind = "self_supervised"
            fit_input = case.fit_image if case.fit_image is not None else case.lr
            rd = None if run_dir is None else run_dir / case.name
            fit_res = fit([fit_input], cfg, run_dir=rd, progress=progress)
            fit_s = time.perf_counter() - t0
            res = upscale(case.lr, fit=fit_res, config=cfg, scale=scale if case.kind == "volume" else None,
                          force=True, sidecar=False, progress=progress)
        seconds = time.perf_counter() - t0
    out = res.image
    if out is None:  # pragma: no cover - only streamed rasters have no image
        raise DataError(f"method {name!r} returned no image")
    ok, err = _grid_matches(case, out)
    if not ok:
        raise GeometryError(
            f"{case.name}: the {name!r} output grid {tuple(out.shape[1:])} does not match the reference grid "
            f"{tuple(case.reference.shape[1:])} (max transform/affine difference {err:.3g})"
        )
    arr = out.as_tensor().detach().to(torch.float32).cpu().numpy()
    info: dict[str, Any] = {"grid_match": True, "grid_max_difference": err, "method_description": res.record.get("method")}
    if kind != "classical":  # what `upscale` would decide on this input (evaluate keeps the model's output anyway)
        info["decision"] = res.record.get("decision")
    if res.record.get("consistency"):
        info["consistency"] = res.record["consistency"]
    if fit_res is not None:
        info["fit"] = {
            "val_psnr": fit_res.val_psnr, "val_psnr_cubic": fit_res.val_psnr_cubic,
            "val_ssim": getattr(fit_res, "val_ssim", None), "val_ssim_cubic": getattr(fit_res, "val_ssim_cubic", None),
            "iterations": getattr(fit_res, "iterations", None), "seconds": getattr(fit_res, "seconds", None),
            "stopped_by": getattr(fit_res, "stopped_by", None),
            "trained_on": "degraded input" if case.fit_image is None else case.degradation.get("holdout", {}).get("fit"),
            "architecture": getattr(fit_res.model, "config", None),
            "task": (fit_res.metadata or {}).get("task"),
            "run_dir": str(getattr(fit_res, "run_dir", None)) if getattr(fit_res, "run_dir", None) else None,
            "note": "validation numbers are in network units on the fit's own held-out split",
            "validation_trend": validation_trend(list(getattr(fit_res, "history", None) or [])),
        }
    if checkpoint is not None:
        info["checkpoint"] = str(checkpoint)
    apply_s = None if fit_s is None else seconds - fit_s
    return MethodRun(
        name=name, kind=kind, image=arr, seconds=seconds, peak_rss_mb=pm.peak_mb,
        peak_rss_increase_mb=pm.increase_mb, fit_seconds=fit_s, apply_seconds=apply_s, info=info, fit=fit_res,
        record=res.record,
    )


# =============================================================== results
@dataclass
class FileResult:
    """The evaluation of one reference.

    Attributes:
        case: the prepared case (images on the evaluation grid).
        settings: what the numbers depend on (config, profile, degradation,
            crop, region, metric settings, units, data range).
        methods: method name -> metrics (:func:`score`) plus ``seconds``,
            ``peak_rss_mb``, gains over cubic and method info.
        outputs: method name -> output ``(C, *spatial)`` in values as read.
        fits: method name -> :class:`~medsat_sr.train.FitResult` of self-supervised fits.
        masks: ``(valid, masked)`` spatial masks over the reference grid.
    """

    case: Case
    settings: dict[str, Any]
    methods: dict[str, dict[str, Any]]
    outputs: dict[str, np.ndarray]
    fits: dict[str, Any] = field(default_factory=dict)
    masks: tuple[np.ndarray, np.ndarray] | None = None

    @property
    def name(self) -> str:
        """The case name."""
        return self.case.name

    def best_learned(self, key: str = "psnr_masked") -> str | None:
        """The non-classical method with the best ``key``, or ``None``."""
        learned = [m for m in self.methods if m not in CLASSICAL]
        if not learned:
            return None
        return max(learned, key=lambda m: _num(self.methods[m].get(key)))

    def to_dict(self) -> dict[str, Any]:
        """JSON data of this file's results (no images)."""
        return {"name": self.name, "path": self.case.path, "kind": self.case.kind, "settings": self.settings,
                "methods": self.methods}


def _num(v: Any) -> float:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return float("-inf")
    return f if math.isfinite(f) else float("-inf")


@dataclass
class Evaluation:
    """Results of :func:`evaluate`: per file, per method, with every setting recorded.

    Attributes:
        files: one :class:`FileResult` per reference.
        settings: run-level settings (methods, versions, machine).
        report_dir: where the report was written, if any.
    """

    files: list[FileResult]
    settings: dict[str, Any]
    report_dir: Path | None = None

    @property
    def methods(self) -> list[str]:
        """Every method name, in first-seen order."""
        out: list[str] = []
        for f in self.files:
            for m in f.methods:
                if m not in out:
                    out.append(m)
        return out

    def summary(self) -> dict[str, dict[str, Any]]:
        """Mean of the main metrics per method over the files that ran it."""
        keys = ("psnr", "psnr_masked", "ssim", "ssim_masked", "ssim_slices", "mae", "mse", "sam", "ergas",
                "psnr_gain_vs_cubic", "psnr_masked_gain_vs_cubic", "seconds", "peak_rss_mb")
        out: dict[str, dict[str, Any]] = {}
        for m in self.methods:
            rows = [f.methods[m] for f in self.files if m in f.methods]
            entry: dict[str, Any] = {"files": len(rows)}
            for k in keys:
                vals = [r[k] for r in rows if isinstance(r.get(k), (int, float)) and math.isfinite(r[k])]
                if vals:
                    entry[k] = float(np.mean(vals))
            out[m] = entry
        return out

    def headlines(self) -> list[dict[str, Any]]:
        """Per file: the best learned method against cubic (PSNR whole and masked), or cubic alone."""
        out = []
        for f in self.files:
            cubic = f.methods.get("cubic", {})
            best = f.best_learned()
            row: dict[str, Any] = {"file": f.name, "kind": f.case.kind, "method": best,
                                   "cubic_psnr": cubic.get("psnr"), "cubic_psnr_masked": cubic.get("psnr_masked")}
            if best is not None:
                b = f.methods[best]
                row.update(psnr=b.get("psnr"), psnr_masked=b.get("psnr_masked"),
                           gain=b.get("psnr_gain_vs_cubic"), gain_masked=b.get("psnr_masked_gain_vs_cubic"),
                           beats_cubic=bool(_num(b.get("psnr_masked_gain_vs_cubic")) > 0))
            out.append(row)
        return out

    def merge(self, *others: Evaluation) -> Evaluation:
        """One evaluation holding the files of this one and ``others`` (e.g. a volume and a raster run)."""
        files = list(self.files)
        runs = [self.settings]
        for o in others:
            files.extend(o.files)
            runs.append(o.settings)
        settings = dict(self.settings)
        settings["runs"] = runs
        return Evaluation(files=files, settings=settings)

    def to_dict(self) -> dict[str, Any]:
        """metrics.json: settings, per-file results, summary and headlines."""
        return {
            "format": EVALUATION_FORMAT,
            "settings": self.settings,
            "files": [f.to_dict() for f in self.files],
            "summary": self.summary(),
            "headlines": self.headlines(),
        }


def _load_average() -> list[float] | None:
    """1, 5 and 15 minute load averages (other work on a shared machine slows every timing)."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (OSError, AttributeError):  # pragma: no cover - not Unix
        return None


def _check_output_dir(path: Path) -> None:
    """Fail early (before any work) when ``path`` cannot be created or written.

    Raises:
        WriteError: the path is a file, or its first existing ancestor is not writable.
    """
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise WriteError(f"{p}: exists and is not a folder")
    probe = p
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not os.access(probe, os.W_OK | os.X_OK):
        raise WriteError(f"{p}: cannot write there ({probe} is not writable)")


def _environment() -> dict[str, Any]:
    return {
        "medsat_sr_version": __version__,
        "torch_version": torch.__version__.split("+")[0],
        "numpy_version": np.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "processor": platform.processor() or None,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "memory_measure": "peak resident set size sampled every 10 ms (/proc/self/statm); "
                          "peak_rss_increase_mb = peak - RSS when the method started",
        "time_measure": "wall clock (time.perf_counter) of the whole method: fit (self-supervised) + upscale",
    }


# =============================================================== the protocol
def evaluate(
    references: Sequence[Any] = (),
    config: Any = None,
    *,
    pairs: Sequence[tuple[Any, Any]] = (),
    methods: str | Sequence[str] | None = None,
    models: Sequence[str | os.PathLike[str]] = (),
    overrides: Sequence[str] = (),
    scale: float | Sequence[float] | None = None,
    holdout: float | None = None,
    names: Sequence[str] | None = None,
    output: str | os.PathLike[str] | None = None,
    run_dir: str | os.PathLike[str] | None = None,
    figures: bool = True,
    progress: bool = True,
    title: str | None = None,
) -> Evaluation:
    """Run the evaluation protocol (module docstring) and optionally write the report.

    Args:
        references: high-resolution references (paths or images).
        config: the job config (built-in name, path, mapping or JobConfig).
        pairs: explicit ``(lr, hr)`` pairs, scored without degradation.
        methods: method names (comma string or list); the profile's
            baselines are always included. Default: the baselines plus
            ``model`` when checkpoints are given or the config is
            self-supervised.
        models: checkpoints to evaluate (``model`` or ``model:<stem>``).
        overrides: ``--set`` items for the config.
        scale: factor(s) instead of the config's.
        holdout: rasters: see :func:`prepare_case`.
        names: case names (default: file stems, made unique).
        output: report folder (metrics.json, metrics.csv, figures,
            report.html); ``None`` writes nothing.
        run_dir: where self-supervised fits keep their runs (default:
            ``<output>/runs`` when writing a report, else nothing).
        figures: write the PNG figures and embed them in the HTML.
        progress: progress bars.
        title: report title.

    Returns:
        The :class:`Evaluation`.

    Raises:
        ConfigError: no config, no reference, unknown methods, or a
            reference that does not fit the config.
        GeometryError: an output that is not on the reference grid, or a
            pair whose grids are not aligned.
        DataError, FormatError: unreadable inputs.
        WriteError: the report cannot be written.
    """
    if config is None:
        raise ConfigError("evaluate needs a config (--config NAME or PATH): it names the domain profile and the degradation")
    if isinstance(config, JobConfig) and not overrides:
        cfg = config
    else:
        cfg = load_config(config, list(overrides))
    cfg.check_runnable("evaluate")
    refs = list(references or [])
    prs = list(pairs or [])
    if not refs and not prs:
        raise ConfigError("nothing to evaluate: give high-resolution references (or --pair LR HR)")
    method_list = parse_methods(methods, models, cfg=cfg)
    ckpts = dict(zip(_model_names(models), [str(m) for m in models])) if models else {}
    out_dir = Path(output) if output is not None else None
    rd = Path(run_dir) if run_dir is not None else (out_dir / "runs" if out_dir is not None else None)
    for d in (out_dir, rd):
        if d is not None:
            _check_output_dir(d)
    load_start = _load_average()

    cases: list[Case] = []
    used: set[str] = set()
    for i, r in enumerate(refs):
        nm = names[i] if names is not None and i < len(names) else None
        cases.append(prepare_case(r, cfg, name=nm, scale=scale, holdout=holdout, index=i))
    for j, (lo, hi) in enumerate(prs):
        k = len(refs) + j
        nm = names[k] if names is not None and k < len(names) else None
        cases.append(pair_case(lo, hi, cfg, name=nm, index=k))
    for c in cases:  # unique names for files and figures
        base, n = c.name, 2
        while c.name in used:
            c.name = f"{base}_{n}"
            n += 1
        used.add(c.name)

    files: list[FileResult] = []
    for case in cases:
        logger.info("evaluating %s (%s, factors %s) with %s", case.name, case.kind, list(case.factors), method_list)
        runs: dict[str, MethodRun] = {}
        for m in method_list:
            runs[m] = _run_method(m, case, cfg, checkpoint=ckpts.get(m), run_dir=rd, progress=progress)
            logger.info("%s: %s done in %.1f s", case.name, m, runs[m].seconds)
        files.append(_score_case(cfg, case, runs))

    settings = {
        "config": cfg.name if hasattr(cfg, "name") else None,
        "config_source": cfg.source,
        "overrides": list(overrides),
        "methods": method_list,
        "checkpoints": ckpts,
        "holdout": holdout,
        "scale": scale,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "environment": {**_environment(), "load_average_start": load_start, "load_average_end": _load_average()},
        "title": title,
    }
    ev = Evaluation(files=files, settings=settings)
    if out_dir is not None:
        write_report(ev, out_dir, figures=figures, title=title)
        ev.report_dir = out_dir
    return ev


def _band_ids(cfg: Any, ref: MetaTensor) -> list[str]:
    """Band names of the tables: the file's, or the domain profile's when the file has only placeholders."""
    names = list(ref.meta.get(Key.BAND_NAMES) or [])
    prof = list(cfg.profile.bands or [])
    if (not names or all(is_generic_band_name(n) for n in names)) and len(prof) == int(ref.shape[0]):
        return [str(b.name) for b in prof]
    return names or [f"band{i + 1}" for i in range(int(ref.shape[0]))]


def _score_case(cfg: Any, case: Case, runs: Mapping[str, MethodRun]) -> FileResult:
    ref = case.reference
    conv, units = _units_transform(cfg.profile, ref)
    ref_raw = ref.as_tensor().to(torch.float64).cpu().numpy()
    outputs = {m: r.image for m, r in runs.items()}
    valid, masked = _masks(cfg, case, ref, outputs)
    border = int(cfg.profile.metrics.crop_border)
    region = case.region
    v_r = _crop_region(valid, region, border)
    m_r = _crop_region(masked, region, border)
    if not v_r.any():
        raise DataError(f"{case.name}: no valid pixel in the scored region")
    if not m_r.any():
        logger.warning("%s: the metric mask selects nothing in the scored region; masked metrics use the valid pixels", case.name)
        m_r = v_r
    ref_m = conv(_crop_region(ref_raw, region, border))
    raw_r = _crop_region(ref_raw, region, border)
    dr, dr_bands, dr_rule = _data_ranges(cfg, ref_m, raw_r, v_r)
    ms = metric_settings(cfg, case)
    eh = ms.get("ergas", {}).get("h_over_l")
    results: dict[str, dict[str, Any]] = {}
    for m, run in runs.items():
        sr_m = conv(_crop_region(run.image.astype(np.float64), region, border))
        sr_m = np.where(np.isfinite(sr_m), sr_m, 0.0)
        r = score(
            sr_m, ref_m, kind=case.kind, data_range=dr, band_ranges=dr_bands, valid=v_r, mask=m_r,
            ssim_sigma=float(cfg.profile.metrics.ssim.sigma), slice_axis=case.slice_axis,
            scale=max(case.factors) if case.kind == "raster" else None, ergas_h_over_l=eh,
            band_names=_band_ids(cfg, ref),
        )
        r.update(
            kind=run.kind, seconds=run.seconds, fit_seconds=run.fit_seconds, apply_seconds=run.apply_seconds,
            peak_rss_mb=run.peak_rss_mb, peak_rss_increase_mb=run.peak_rss_increase_mb, **run.info,
        )
        results[m] = r
    if "cubic" in results:
        c = results["cubic"]
        for r in results.values():
            for k in ("psnr", "psnr_masked", "ssim", "ssim_masked"):
                if isinstance(r.get(k), (int, float)) and isinstance(c.get(k), (int, float)):
                    r[f"{k}_gain_vs_cubic"] = float(r[k]) - float(c[k])
    settings = {
        "config": getattr(cfg, "name", None),
        "config_source": cfg.source,
        "domain": cfg.profile.name,
        "factors": list(case.factors),
        "degradation": case.degradation,
        "crop": case.crop,
        "region": case.region_record(),
        "reference_source": ref.meta.get(Key.SOURCE_PATH),
        "reference_shape": [int(v) for v in ref.shape],
        "input_shape": [int(v) for v in case.lr.shape],
        "reference_spacing": [float(v) for v in ref.meta[Key.SPACING]],
        "input_spacing": [float(v) for v in case.lr.meta[Key.SPACING]],
        "band_names": _band_ids(cfg, ref) if case.kind == "raster" else list(ref.meta.get(Key.BAND_NAMES) or []),
        "band_labels": band_labels(_band_ids(cfg, ref), cfg.profile.bands, int(ref.shape[0])) if case.kind == "raster" else None,
        "units": units,
        "data_range": dr,
        "data_range_per_band": dr_bands if case.kind == "raster" else None,
        "data_range_rule": dr_rule,
        "metrics": ms,
        "pixels_scored": int(v_r.sum()),
        "pixels_masked": int(m_r.sum()),
        "self_supervised_fit_on": (
            "the degraded input" if case.fit_image is None else case.degradation.get("holdout", {}).get("fit")
        ),
        "model_config": {"model": cfg.resolved().get("model"), "train": cfg.resolved().get("train"),
                         "inference": cfg.resolved().get("inference")},
    }
    return FileResult(case=case, settings=settings, methods=results, outputs=outputs,
                      fits={m: r.fit for m, r in runs.items() if r.fit is not None}, masks=(valid, masked))


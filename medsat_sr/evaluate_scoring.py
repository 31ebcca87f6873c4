"""Evaluation scoring: metric settings, data ranges, masks and the scores of one output.

Step 4 of the evaluation protocol (:mod:`medsat_sr.evaluate`, DESIGN.md
section 5): values as read are mapped to the profile's metric units
(:func:`_units_transform`), the data range follows ``metrics.data_range``
(:func:`_data_ranges`), the valid and masked pixels follow
``metrics.mask`` (:func:`_masks`, the foreground rule of
:func:`medsat_sr.sampling.foreground_mask`), the scored region less
``metrics.crop_border`` is cut (:func:`_crop_region`), and :func:`score`
computes every metric of :mod:`medsat_sr.metrics` on it.
:func:`metric_settings` is what metrics.json records of those settings.

Used by :mod:`medsat_sr.evaluate` (its ``_score_case`` puts these together
per method, and it re-exports :func:`score` and :func:`metric_settings`)
and the benchmarks.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor

from medsat_sr import baselines, metrics, metrics_bands
from medsat_sr.errors import ConfigError, DataError
from medsat_sr.evaluate_cases import Case
from medsat_sr.evaluate_degrade import _spatial_valid
from medsat_sr.image import Key
from medsat_sr.normalise import Normaliser
from medsat_sr.report_plain import is_generic_band_name
from medsat_sr.sampling import foreground_mask

__all__ = ["metric_settings", "score"]

# the name the SSIM/ERGAS warnings had before the split (text and JSON log lines show it)
logger = logging.getLogger("medsat_sr.evaluate")


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


def _data_ranges(cfg: Any, ref_m: np.ndarray, ref_raw: np.ndarray, valid: np.ndarray,
                 conv: Any) -> tuple[float, list[float], str]:
    """Overall and per-band data range in metric units, and how they were obtained.

    ``conv`` maps values as read to metric units (:func:`_units_transform`); a
    ``fixed`` range is given in values as read (255 for 8-bit imagery), as
    training's validation takes it (:func:`medsat_sr.normalise.data_range`).
    """
    spec = cfg.profile.metrics
    norm = cfg.profile.normalisation
    c = ref_m.shape[0]
    if spec.data_range == "fixed":
        raw = float(spec.data_range_value)
        # the range of values as read, mapped: the linear mapping's scale per band
        per = [abs(float(v)) for v in (conv(np.full((c, 1), raw)) - conv(np.zeros((c, 1))))[:, 0]]
        v = float(np.mean(per))
        return v, per, f"fixed {raw:g} in values as read (metrics.data_range_value), {v:g} in metric units"
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
    pb["psnr"] = metrics_bands.per_band(metrics.psnr, sr, ref, data_range=list(band_ranges), mask=mask)
    pb["rmse"] = metrics_bands.per_band(metrics.rmse, sr, ref, mask=mask)
    pb["mae"] = metrics_bands.per_band(metrics.mae, sr, ref, mask=mask)
    pb["ssim"] = _ssim_or_none(metrics_bands.per_band, metrics.ssim, sr, ref, data_range=list(band_ranges), mask=mask,
                               sigma=ssim_sigma) or [None] * sr.shape[0]
    out["per_band"] = pb
    out["psnr_band_mean"] = float(np.mean(pb["psnr"]))
    if sr.shape[0] >= 2:
        out["sam"] = metrics_bands.sam(sr, ref, mask=mask)
    if scale is not None:
        try:
            e = metrics_bands.ergas(sr, ref, scale=float(scale), mask=mask)
            if ergas_h_over_l is not None:  # rescale to the recorded convention
                e = e * float(ergas_h_over_l) * float(scale)
            out["ergas"] = e
        except ConfigError as exc:
            logger.warning("ERGAS not computed: %s", exc)
            out["ergas"] = None
    return out


def _band_ids(cfg: Any, ref: MetaTensor) -> list[str]:
    """Band names of the tables: the file's, or the domain profile's when the file has only placeholders."""
    names = list(ref.meta.get(Key.BAND_NAMES) or [])
    prof = list(cfg.profile.bands or [])
    if (not names or all(is_generic_band_name(n) for n in names)) and len(prof) == int(ref.shape[0]):
        return [str(b.name) for b in prof]
    return names or [f"band{i + 1}" for i in range(int(ref.shape[0]))]

"""The plan of one upscale run, validated before any training or pixel work.

:func:`volume_scale` and :func:`check_fit_route` settle the grid and the
route of a volume (3D network, 2D slice network, 2D in-plane network or a
classical method) from the header alone, with the tolerance that real
headers need (:data:`medsat_sr.geometry.SCALE_RTOL`), so a request that
cannot work fails in seconds, not after the training budget.
:class:`Decision` is the model-or-classical choice as a value: the scores of
the network, of the classical result that a fallback writes, and of the
network's own interpolation path, all on the same held-out split.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from monai.data import MetaTensor

from medsat_sr.config import MAX_SCALE
from medsat_sr.errors import ConfigError, GeometryError, ModelError
from medsat_sr.fusion import Member
from medsat_sr.geometry import SCALE_RTOL, as_scale, snap_scale
from medsat_sr.image import BandSet, Key
from medsat_sr.io import geotiff_bandset

logger = logging.getLogger("medsat_sr.inference")

__all__ = ["Decision", "decide", "volume_scale", "check_fit_route", "check_scale_bound", "check_input_size"]


def _up_axes(scale: Sequence[float]) -> list[int]:
    return [a for a, f in enumerate(scale) if f > 1 + SCALE_RTOL]


def _requested_volume_scale(img: MetaTensor, scale: Any, target_spacing: Any, cfg: Any) -> tuple[float, ...] | None:
    spacing = [float(v) for v in img.meta[Key.SPACING]]
    requested: tuple[float, ...] | None = None
    if scale is not None:
        requested = tuple(float(v) for v in as_scale(scale, 3))
    elif target_spacing is not None:
        ts = as_scale(target_spacing, 3)
        requested = tuple(max(1.0, s / t) for s, t in zip(spacing, ts))
    elif cfg is not None and hasattr(cfg, "scale_for"):
        try:
            requested = tuple(float(v) for v in cfg.scale_for(spacing))
        except ConfigError as exc:  # the config's rule does not fit this input: name the input first
            where = img.meta.get(Key.SOURCE_PATH) or "the volume"
            raise ConfigError(f"{where}: {exc}; give --scale or --target-spacing") from exc
    if requested is None:
        return None
    requested = snap_scale(requested)
    if max(requested) < 1 - SCALE_RTOL:
        raise ConfigError(f"scale {list(requested)} would downsample; upscale needs factors >= 1")
    return requested


def volume_scale(
    img: MetaTensor, model_scale: Sequence[float] | None, scale: Any, target_spacing: Any, cfg: Any,
    *, any_factor: bool = False,
) -> tuple[tuple[float, ...], int | None, str | None]:
    """Per-axis scale of a volume and, for 2D models, the axis and route.

    Args:
        img: the volume (only its header is read).
        model_scale: the network's scale (2 or 3 factors), ``None`` for a classical method.
        scale, target_spacing: what the caller asked for, if anything.
        cfg: the job config (its ``scale``), or ``None``.
        any_factor: the 2D slice network was trained to run at any factor
            (``data.factors``): with nothing asked for, the thick axis is brought to
            the finest spacing (isotropic), not multiplied by its nominal factor.

    Returns:
        ``(scale, axis, route)``: route ``"slicewise"`` (a slice network,
        ``axis`` is the through-plane axis it upscales), ``"inplane"`` (an
        in-plane network applied to the planes across ``axis``, whose factor
        is 1) or ``None`` (3D models and classical methods, ``axis`` None).

    Raises:
        ConfigError: no scale for a classical method, or one the model cannot give.
        ModelError: a 3D model whose scale differs from the one asked for.
    """
    where = img.meta.get(Key.SOURCE_PATH) or "the volume"
    requested = _requested_volume_scale(img, scale, target_spacing, cfg)
    if model_scale is None:
        if requested is None:
            raise ConfigError("a classical method needs a scale: give --scale (e.g. 2 or 1,1,4) or --target-spacing")
        return requested, None, None
    ms = tuple(float(v) for v in model_scale)
    if len(ms) == 3:
        if requested is not None and not np.allclose(requested, ms, rtol=SCALE_RTOL, atol=SCALE_RTOL):
            raise ModelError(f"{where}: the model upscales by {list(ms)}, but scale {_fmt(requested)} was asked for")
        return ms, None, None
    spacing = [float(v) for v in img.meta[Key.SPACING]]
    if all(f > 1 + SCALE_RTOL for f in ms):  # a 2D in-plane network: planes across the axis whose factor is 1
        if requested is None:
            plane = int(np.argmax(spacing))
            others = [a for a in range(3) if a != plane]
            s = [1.0, 1.0, 1.0]
            for a, f in zip(others, ms):
                s[a] = f
            return tuple(s), plane, "inplane"
        ones = [a for a in range(3) if a not in _up_axes(requested)]
        others = [a for a in range(3) if a not in ones[-1:]]
        if len(ones) != 1 or not np.allclose([requested[a] for a in others], ms, rtol=SCALE_RTOL):
            raise ConfigError(
                f"{where}: a 2D in-plane model (scale {_fmt(ms)}) upscales the planes across one axis of a volume: "
                f"give a scale with one factor 1 and the model's factors on the two others, got {_fmt(requested)}"
            )
        return requested, ones[0], "inplane"
    if requested is not None:  # a 2D slice network (SMORE/ECLARE): one through-plane axis
        up = _up_axes(requested)
        if len(up) != 1:
            raise ConfigError(
                f"{where}: a 2D slice model upscales one axis of a volume; the scale {_fmt(requested)} upscales {len(up)}"
            )
        return requested, up[0], "slicewise"
    thick = int(np.argmax(spacing))
    s = [1.0, 1.0, 1.0]
    s[thick] = snap_scale([spacing[thick] / min(spacing)])[0] if any_factor else max(ms)
    if any_factor and s[thick] <= 1 + SCALE_RTOL:
        raise ConfigError(f"{where}: the volume is isotropic ({_fmt(spacing)} mm), so a slice model that takes any "
                          "factor has no thick axis to upscale; give --scale or --target-spacing")
    return tuple(s), thick, "slicewise"


def check_fit_route(img: MetaTensor, cfg: Any, scale: Any, target_spacing: Any) -> None:
    """Refuse, before any training, a self-supervised volume fit whose network cannot give the scale.

    A 2D network (``model.spatial_dims: 2``) upscales one axis (a slice
    network) or two (an in-plane network); a 3D network any. The scale is
    the config's (or the one asked for) on this volume's header.

    Raises:
        ConfigError: naming the volume, the scale and what the network can do.
    """
    requested = _requested_volume_scale(img, scale, target_spacing, cfg)
    if requested is None or int(cfg.model.spatial_dims) != 2:
        return
    up = _up_axes(requested)
    where = img.meta.get(Key.SOURCE_PATH) or "the volume"
    if cfg.profile.degradation.model == "slice_profile" and len(up) != 1:
        spacing = [float(v) for v in img.meta[Key.SPACING]]
        thick = int(np.argmax(spacing))
        only = ",".join(_fmt_factor(requested[a]) if a == thick else "1" for a in range(3))
        raise ConfigError(
            f"{where}: the config fits a 2D slice network, which upscales one axis (across the slices); "
            f"the scale {_fmt(requested)} for spacing {_fmt(spacing)} mm upscales {len(up)}: "
            f"give --scale {only} (the thick axis only), or use a 3D config"
        )
    if len(up) not in (1, 2):
        raise ConfigError(
            f"{where}: a 2D network upscales one axis (slices) or two (planes) of a volume; "
            f"the scale {_fmt(requested)} upscales {len(up)}"
        )


def _fmt_factor(value: float) -> str:
    return f"{float(value):.4g}"


def _fmt(values: Sequence[float]) -> str:
    return "[" + ", ".join(f"{float(v):.4g}" for v in values) + "]"


def check_scale_bound(scale: Any) -> None:
    """Refuse factors above :data:`medsat_sr.config.MAX_SCALE` before any memory is allocated.

    Raises:
        ConfigError: a factor is not a positive finite number or exceeds the maximum, or every
            factor is under 1 (a downsampling, refused as a volume's target spacing is).
    """
    values = np.atleast_1d(np.asarray(scale, dtype=np.float64)) if not isinstance(scale, str) else None
    if values is None or not np.all(np.isfinite(values)) or np.any(values <= 0):
        raise ConfigError(f"scale must be positive finite numbers, got {scale!r}")
    if values.max() < 1 - SCALE_RTOL:
        raise ConfigError(f"scale {values.tolist()} would downsample; upscale needs factors >= 1")
    if np.any(values > MAX_SCALE):
        raise ConfigError(f"scale {values.tolist()} exceeds the maximum factor {MAX_SCALE:g} per axis")


def check_input_size(volume: Any, raster: Any, path: Path | None, kind: str) -> None:
    """Refuse images with fewer than 2 samples on a spatial axis: there is nothing to super-resolve.

    Raises:
        GeometryError: naming the input and its shape.
    """
    shapes: list[tuple[int, ...]] = []
    if volume is not None:
        shapes.append(tuple(int(v) for v in volume.shape[1:]))
    elif isinstance(raster, BandSet):
        shapes.extend(tuple(int(v) for v in g.shape[1:]) for g in raster.groups.values())
    elif raster is not None:
        shapes.append(tuple(int(v) for v in raster.shape[1:]))
    elif path is not None and kind in ("geotiff", "bandset"):
        files = geotiff_bandset.band_files(path) if kind == "bandset" else [path]
        for f in files:
            try:
                with rasterio.open(f) as src:
                    shapes.append((int(src.height), int(src.width)))
            except rasterio.errors.RasterioIOError:
                continue  # the reader reports unreadable files with its own message
    for shape in shapes:
        if min(shape) < 2:
            where = str(path) if path is not None else "input"
            raise GeometryError(f"{where}: image is too small to upscale: shape {list(shape)} has an axis with fewer than 2 samples")


@dataclass
class Decision:
    """Model or classical: the choice of one run, with the numbers it rests on.

    All scores are PSNR (dB) on the same held-out split with the same mask:
    ``model_score`` of the network, ``classical_score`` of the classical
    result that a fallback writes (``classical_method``: GDAL cubic for
    rasters, cubic B-spline for volumes) and ``interp_score`` of the
    network's own interpolation path (what an untrained network gives), when
    known. The network is kept when it beats the better of the two by
    ``margin_db``, or when ``forced``.

    Attributes:
        use_model: whether the network's output is written.
        fell_back: whether a network was available but the classical result is written.
        forced: whether ``force`` kept a network that did not pass.
        reason: why, in one sentence.
        source: where the scores come from (self-supervised fit, checkpoint metrics).
        metric: what the scores are: ``"PSNR"`` in dB (higher is better), or
            ``"ERGAS"`` (lower is better; the pan-sharpening route).
        caution: a few words the verdict line shows when the network's output
            was written although the held-out split could not check something
            (e.g. the degradation of a single raster).
    """

    use_model: bool
    fell_back: bool = False
    forced: bool = False
    reason: str | None = None
    model_score: float | None = None
    classical_score: float | None = None
    interp_score: float | None = None
    classical_method: str | None = None
    margin_db: float | None = None
    source: str | None = None
    metric: str = "PSNR"
    caution: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (non-finite scores as ``None``)."""
        out = asdict(self)
        for k, v in out.items():
            if isinstance(v, float) and not math.isfinite(v):
                out[k] = None
        return out

    def legacy(self) -> dict[str, Any]:
        """The record's ``fallback`` entry: ``applied``, ``reason``, ``forced``."""
        return {"applied": self.fell_back, "reason": self.reason, "forced": self.forced}


def decide(
    members: Sequence[Member],
    validations: Sequence[Mapping[str, Any]],
    *,
    classical_method: str,
    margin_db: float,
    force: bool,
) -> Decision:
    """The model-or-classical decision of a run.

    Args:
        members: the networks (none: a classical method was asked for).
        validations: one entry per member with held-out scores: ``val_psnr``,
            ``val_psnr_cubic`` (the classical result) and, when known,
            ``val_psnr_interp`` (the network's interpolation path); ``source``.
        classical_method: what a fallback writes.
        margin_db: the least gain over the better baseline.
        force: keep the network whatever the scores.

    Returns:
        The :class:`Decision`. A network without held-out scores (a checkpoint
        that recorded none) is applied, and the reason says so.
    """
    if not members:
        return Decision(use_model=False, classical_method=classical_method, reason="a classical method was asked for")
    if not validations:
        return Decision(use_model=True, classical_method=classical_method, margin_db=margin_db,
                        reason="no held-out validation is recorded for the model; applied as it is")
    best = max(validations, key=lambda v: float(v["val_psnr"]) - _baseline(v))
    d = Decision(
        use_model=True, classical_method=classical_method, margin_db=margin_db, source=str(best.get("source")),
        model_score=float(best["val_psnr"]), classical_score=float(best["val_psnr_cubic"]),
        interp_score=float(best["val_psnr_interp"]) if best.get("val_psnr_interp") is not None else None,
    )
    gain = d.model_score - _baseline(best)
    if gain >= margin_db:
        d.reason = f"the model beats {_what(d)} by {gain:.2f} dB on its held-out split"
        return d
    d.reason = f"the model ({d.model_score:.2f} dB) does not beat {_what(d)} by {margin_db:g} dB on its held-out split ({gain:+.2f} dB)"
    return settle_loss(d, force=force, log=logger)


def settle_loss(d: Decision, *, force: bool, log: logging.Logger, what: str = "model") -> Decision:
    """A decision whose model missed its bar (``d.reason`` says how): kept with ``force``, else the classical result.

    Both ways are logged as a warning naming the reason.
    """
    if force:
        d.forced = True
        log.warning("%s; keeping the %s's output because force was given", d.reason, what)
        return d
    d.use_model, d.fell_back = False, True
    log.warning("%s; writing the %s result instead (use --force to keep the %s's output)", d.reason, d.classical_method, what)
    return d


def _baseline(v: Mapping[str, Any]) -> float:
    vals = [float(v["val_psnr_cubic"])]
    if v.get("val_psnr_interp") is not None:
        vals.append(float(v["val_psnr_interp"]))
    return max(vals)


def _what(d: Decision) -> str:
    text = f"{d.classical_method} ({d.classical_score:.2f} dB)"
    if d.interp_score is not None:
        text += f" and its own untrained interpolation path ({d.interp_score:.2f} dB)"
    return text

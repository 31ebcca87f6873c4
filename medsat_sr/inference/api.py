"""``upscale()``: apply a model, an ensemble or a classical method to a volume or a raster.

One entry point, :func:`upscale`, for every input the readers know (a DICOM
series, a NIfTI volume, a GeoTIFF, a band folder, or such an image already in
memory) and four ways to upscale it: a checkpoint or module (``model=``),
several of them fused (``models=``, see :mod:`medsat_sr.fusion`), a
self-supervised job config that first fits a model on the input
(``config=``, :func:`medsat_sr.train.fit`), or a classical method
(``method=``, :mod:`medsat_sr.baselines`).

Geometry
--------
The output grid always comes from :mod:`medsat_sr.geometry`: ``shape' =
round(shape * s)``, the scale actually applied is ``shape' / shape``
(:func:`~medsat_sr.geometry.effective_scale`), volumes get
``scale_affine(affine, s_eff)`` and rasters ``scale_transform(transform,
s_eff)``; CRS, bounds and field of view are unchanged. Nothing is taken from
MONAI's output (whose ``sliding_window_inference`` copies the input affine).

Volumes
-------
Volumes are held in memory (a 600-slice CT is a few GB at most) and go through
:func:`monai.inferers.sliding_window_inference` with Gaussian blending and a
*zoomed* output (the window's output is ``s`` times the window). Two MONAI
habits are undone: the output geometry is recomputed (above) and the
``buffer_steps`` path, which fails on zoomed outputs, is never used.

*Seams.* Each window's predictor (``with_coord=True``) reads the window plus a
halo of at least the receptive field (``model.receptive_field_per_axis``,
clipped at the true volume border) from the full input and keeps only the
window's part of the output. The network inputs of neighbouring windows
therefore overlap by two receptive fields: every window's output is exactly
the whole-volume output, the Gaussian blend averages identical values, and
tiled output equals whole-volume output to float precision. (Relying on
MONAI's window overlap alone cannot: its Gaussian importance map is clamped
to >= 1e-3, so window borders, where the zero padding of the convolutions
differs from the whole-volume pass, leak into the blend.) MONAI's own
``overlap`` is then 0 (windows abut) for convolutional models; models with
global context (RCAN's channel attention: ``global_context``) cannot be tiled
exactly, and for them the overlap is ``max(inference.overlap, 2 * RF / tile)``
so that the Gaussian blend hides the seams.

*Non-integer scales.* MONAI places window outputs at ``int(start * zoom)``,
which is only exact for integer zooms. With a non-integer factor and a
``"pre"``-upsampling model (the default for non-integer factors: interpolate
first, then the network on the output grid), the whole volume is first
interpolated onto the output grid exactly as the model's skip path does
(:func:`medsat_sr.models.upsample.interpolate`), and the windows run on that
grid with zoom 1 and ``output_size`` equal to the window: identical to the
model's own forward pass, with any factor. A ``"post"`` model with a
non-integer factor runs the whole axis in one window along each non-integer
axis (MONAI's zoom is then ``shape' / shape`` and the window is the axis).

*2D models on volumes* (slice-wise, SMORE/ECLARE style): the network's scaled
axis is the through-plane axis (the one with the largest factor); every slice
perpendicular to each of the two in-plane axes is super-resolved whole and the
two orientations are averaged (:func:`apply_slicewise`). A 2D *in-plane*
network (both of its factors > 1, trained on planes across the axis whose
factor is 1, e.g. ``scale: [2, 2, 1]``) is applied to every plane across that
axis (:func:`apply_inplane`); that axis is not resampled.

Rasters
-------
A GeoTIFF or a band folder named by path is *streamed*
(:mod:`medsat_sr.inference.raster`): output windows are processed in row-major
order and each is written into a tiled, compressed GTiff (:func:`medsat_sr.io.geotiff.open_writer`, ``GDAL_CACHEMAX`` capped by
:func:`~medsat_sr.io.geotiff.gdal_env`), so peak memory depends on the tile
size, not on the scene. A COG is made at the end by copy when asked.

* Input tiles follow the source blocks (a multiple of the block size near
  ``tile_size``), aligned so that tile borders fall on whole pixels of every
  grid involved (the lcm of the resolution ratios, e.g. 6 for Sentinel-2's
  10/20/60 m), and output windows are a multiple of the output block size.
* Each tile is read with a halo of at least the receptive field (in that
  group's pixels), clipped at the true raster edge: there the network pads
  with zeros exactly as a whole-image pass does, so the halo-free centre that
  is written equals the whole-image output (tested to 1e-4 relative with
  tiles that do not divide the image). Reflection or edge padding at the
  true edge would *differ* from the whole-image pass, so none is added.
* Classical methods use GDAL (:func:`medsat_sr.baselines.resample_raster_window`)
  window by window with a halo of :data:`~medsat_sr.baselines.GDAL_HALO`
  source pixels, equal to a whole-image reproject.
* Band sets: one output on the finest grid. Fine bands pass through
  unchanged; coarse target bands are sharpened by the (guided) model with the
  fine guide bands; other coarse bands are resampled with GDAL cubic
  (``bands.others: cubic``) or dropped (``drop``). A multi-band file names its
  bands in the band descriptions; a folder output holds one file per band.
* Nodata: the validity of every source band (nodata value, NaN, internal
  mask) propagates to the output by nearest upsampling
  (:func:`medsat_sr.baselines.upsample_mask`). Before the network, invalid
  pixels are filled with the band's median (computed, with the normalisation
  statistics, on a decimated read of at most :data:`SAMPLE_SIDE` pixels a
  side, never on nodata), so nodata never enters normalisation or the network's
  valid pixels, and the fill is the same for every tile.
* Statistics that need the whole scene (percentile normalisation, fill values)
  come from that decimated read (GDAL nearest decimation, also used for
  in-memory rasters so both paths agree).
* The consistency score of the trust record is computed on a fixed-cost
  sample: the central :data:`~medsat_sr.inference.raster.CONSISTENCY_CROP` pixels
  of at most :data:`~medsat_sr.inference.raster.CONSISTENCY_TILES` tiles spread over
  the scene (the PSF is reflected at the crop borders).

Intensity and dtype
-------------------
Outputs are written in the source dtype and units by default (the writers
round and clip with the source slope/intercept or scale/offset, and keep valid
pixels off the nodata value), or float32 on request (``dtype="float32"``).

Speed
-----
Everything runs under :func:`torch.inference_mode`; ``precision="bf16"`` uses
``torch.autocast(device, dtype=torch.bfloat16)`` with channels-last tensors
(the models keep their interpolation skip path in float32). The default,
``"auto"``, is bf16 where the hardware runs it natively (AVX512-BF16/AMX CPUs,
bf16-capable GPUs) and fp32 elsewhere: ``benchmarks/upscale.py`` measures no
PSNR cost (well under the 0.05 dB rule) for a large speed-up. Inputs are read
once per tile, statistics once per run, and the halo is the only repeated
work (``(1 + 2 halo / tile)^d``).

Trust and fallback
------------------
Every written output gets a JSON sidecar (:mod:`medsat_sr.trust`). When the
learned model's validation PSNR on its held-out split (from the
self-supervised fit, or recorded in the checkpoint's ``metrics`` as
``val_psnr`` and ``val_psnr_cubic``) does not beat cubic by at least
:data:`MIN_GAIN_DB` (0.05 dB), :func:`upscale` logs a warning, writes the
*cubic* result instead and records why; ``force`` keeps the model's output.
For an ensemble the fallback applies only when every member with recorded
validation fails to beat cubic. Checkpoints without recorded validation are
applied as they are (the record says that no validation was available).
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from torch import nn

from medsat_sr import baselines
from medsat_sr.errors import ConfigError, DataError, FormatError, GeometryError, MedsatError, ModelError
from medsat_sr.fusion import Ensemble, Member
from medsat_sr.geometry import as_scale, effective_scale, scale_affine, scaled_shape
from medsat_sr.image import BandSet, Key, is_raster, is_volume, make_volume
from medsat_sr.inference.raster import (
    DEFAULT_TILE_RASTER,
    SAMPLE_SIDE,
    WEIGHT_CROP,
    _centre,
    _file_groups,
    _FileSet,
    _fit_normaliser,
    _memory_group,
    _progress,
    _std_path,
    _tta_for,
    run_raster,
)

__all__ = [
    "upscale",
    "UpscaleResult",
    "apply_slicewise",
    "apply_inplane",
    "native_bf16",
    "SAMPLE_SIDE",
    "DEFAULT_TILE_VOLUME",
    "DEFAULT_TILE_RASTER",
]

logger = logging.getLogger(__name__)

#: Default window size (input voxels per axis) for volumes.
DEFAULT_TILE_VOLUME = 64
#: The least validation PSNR gain over cubic (dB) for a learned model to count as beating it;
#: smaller differences are within the noise of a held-out PSNR estimate (and an
#: untrained model, which *is* interpolation, must not pass by luck).
MIN_GAIN_DB = 0.05
#: Slices per forward pass for 2D models on volumes.
SLICE_BATCH = 8


# =============================================================== result and settings


@dataclass


class UpscaleResult:
    """What :func:`upscale` returns.

    Attributes:
        image: the super-resolved image (volume MetaTensor, raster MetaTensor,
            or for band sets a raster holding every band on the finest
            grid); ``None`` when a raster was streamed to ``output``.
        std: the per-voxel standard deviation across ensemble members
            (same grid and band order as ``image``), when asked and not streamed.
        record: the trust record (also written as the sidecar).
        output: the written output, if any.
        std_output: the written standard-deviation map, if any.
        sidecar: the written JSON record, if any.
    """

    image: MetaTensor | None
    std: MetaTensor | None
    record: dict[str, Any]
    output: Path | None = None
    std_output: Path | None = None
    sidecar: Path | None = None


@dataclass


class _Settings:
    precision: str = "auto"
    tta: bool | int = False
    uncertainty: bool = False
    device: str = "cpu"
    tile_size: int | tuple[int, ...] | None = None
    overlap: float = 0.25
    halo: int | None = None
    batch_size: int = 1
    sigma_scale: float = 0.125
    dtype: str | None = None
    format: str | None = None
    cog: bool = False
    compress: str = "deflate"
    force: bool = False
    sidecar: bool = True
    others: str = "cubic"


def _resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device not in ("cpu", "cuda") and not str(device).startswith("cuda:"):
        raise ConfigError(f"device must be 'auto', 'cpu' or 'cuda', got {device!r}")
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} asked for, but CUDA is not available; use --device cpu")
    return str(device)


def native_bf16(device: str = "cpu") -> bool:
    """Whether ``device`` runs bfloat16 natively (CPU: AVX512-BF16 or AMX; CUDA: ``is_bf16_supported``)."""
    if str(device).startswith("cuda"):
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    flags = next((ln.split(":", 1)[1].split() for ln in text.splitlines() if ln.startswith("flags")), [])
    return "avx512_bf16" in flags or "amx_bf16" in flags


def _settings(cfg: Any, **given: Any) -> _Settings:
    s = _Settings()
    if cfg is not None:
        inf, out = cfg.inference, cfg.output
        s.tta, s.uncertainty, s.device = inf.tta, inf.uncertainty, inf.device
        s.precision = inf.precision  # "auto" (the default) resolves to bf16 where it is native
        s.tile_size = tuple(inf.tile_size) if isinstance(inf.tile_size, list) else inf.tile_size
        s.overlap, s.halo, s.batch_size, s.sigma_scale, s.force = inf.overlap, inf.halo, inf.batch_size, inf.sigma_scale, inf.force
        s.dtype = None if out.dtype == "source" else out.dtype
        s.format = None if out.format == "auto" else out.format
        s.cog, s.compress, s.sidecar = out.cog, out.compress, out.sidecar
        s.others = cfg.bands.others
    for k, v in given.items():
        if v is not None:
            setattr(s, k, v)
    if s.dtype == "source":
        s.dtype = None
    if s.precision not in ("auto", "fp32", "bf16"):
        raise ConfigError(f"precision must be 'auto', 'fp32' or 'bf16', got {s.precision!r}")
    if s.dtype not in (None, "float32"):
        raise ConfigError(f"dtype must be 'source' or 'float32', got {s.dtype!r}")
    if not 0 <= float(s.overlap) < 1:
        raise ConfigError(f"overlap must be in [0, 1), got {s.overlap}")
    if s.halo is not None and int(s.halo) < 0:
        raise ConfigError(f"halo must be >= 0, got {s.halo}")
    if int(s.batch_size) < 1:
        raise ConfigError(f"batch_size must be >= 1, got {s.batch_size}")
    if s.tile_size is not None:
        vals = s.tile_size if isinstance(s.tile_size, (tuple, list)) else (s.tile_size,)
        if any(int(v) < 1 for v in vals):
            raise ConfigError(f"tile_size must be >= 1, got {s.tile_size}")
    s.device = _resolve_device(s.device)
    if s.precision == "auto":
        s.precision = "bf16" if native_bf16(s.device) else "fp32"
    return s


# =============================================================== members


def _domain_of(meta: Mapping[str, Any]) -> Any:
    dom = meta.get("domain")
    if not dom:
        return None
    from medsat_sr.domains import load_domain

    try:
        return load_domain(dom)
    except (MedsatError, TypeError, ValueError) as exc:
        logger.warning("checkpoint domain %r cannot be loaded (%s); using no profile", dom if isinstance(dom, str) else "<inline>", exc)
        return None


def _validation_of(metrics: Any) -> dict[str, float] | None:
    """``val_psnr`` and the cubic PSNR on the same split from a metrics mapping, if present."""
    if not isinstance(metrics, Mapping):
        return None
    pairs = (
        ("val_psnr", "val_psnr_cubic"),
        ("val_psnr", "cubic_psnr"),
        ("psnr", "psnr_cubic"),
        ("val_psnr", "val_cubic_psnr"),
    )
    for a, b in pairs:
        va, vb = metrics.get(a), metrics.get(b)
        if isinstance(va, (int, float)) and isinstance(vb, (int, float)) and not isinstance(va, bool):
            return {"val_psnr": float(va), "val_psnr_cubic": float(vb)}
    return None


def _load_member(item: Any, device: str) -> tuple[Member, dict[str, Any]]:
    """A Member (unbound normaliser spec in ``info``) from a checkpoint path or a module."""
    from medsat_sr.checkpoint import load_checkpoint, model_hash

    if isinstance(item, Member):
        return item, dict(item.info)
    if isinstance(item, (str, os.PathLike)):
        model, meta = load_checkpoint(item, device=device)
        info = {
            "path": str(item),
            "sha256": model_hash(item),
            "architecture": meta.get("architecture"),
            "scale": meta.get("scale"),
            "band_names": meta.get("band_names"),
            "metrics": meta.get("metrics"),
            "domain": meta.get("domain") if isinstance(meta.get("domain"), str) else (meta.get("domain") or {}).get("name") if isinstance(meta.get("domain"), Mapping) else None,
            "_meta": meta,
        }
        return Member(model=model, name=str(item), info=info), info
    if isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], nn.Module):
        model, meta = item
        info = {"path": None, "sha256": None, "architecture": getattr(model, "config", None), "metrics": (meta or {}).get("metrics"), "_meta": dict(meta or {})}
        return Member(model=model.to(device).eval(), name=type(model).__name__, info=info), info
    if isinstance(item, nn.Module):
        info = {"path": None, "sha256": None, "architecture": getattr(item, "config", None), "metrics": None, "_meta": {}}
        return Member(model=item.to(device).eval(), name=type(item).__name__, info=info), info
    raise ModelError(f"a model is a checkpoint path or a torch.nn.Module, got {type(item).__name__}")


# =============================================================== volumes


def _as_ensemble(model: Any, uncertainty: bool) -> Ensemble:
    if isinstance(model, Ensemble):
        return model
    if isinstance(model, Member):
        return Ensemble([model], uncertainty=uncertainty)
    if isinstance(model, nn.Module):
        return Ensemble([Member(model=model)], uncertainty=uncertainty)
    raise ModelError(f"expected a model or an Ensemble, got {type(model).__name__}")


def apply_slicewise(
    model: Ensemble | Member | nn.Module,
    volume: torch.Tensor,
    thick_axis: int,
    output_size: Sequence[int],
    *,
    batch: int = SLICE_BATCH,
    progress: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Apply a 2D slice network through-plane to a volume (SMORE/ECLARE style).

    The 2D network upscales one axis of its input (the one whose factor is
    > 1 in ``model.scale``, e.g. ``(4.8, 1)``): every slice perpendicular to
    each of the two other (in-plane) axes is a 2D image containing the
    through-plane axis, which is put on the network's scaled axis; the two
    orientations are averaged. Slices are processed whole, ``batch`` at a time.

    Args:
        model: a 2D model, a :class:`~medsat_sr.fusion.Member` or an
            :class:`~medsat_sr.fusion.Ensemble` (members x flips).
        volume: ``(C, X, Y, Z)`` physical values (float32).
        thick_axis: the through-plane spatial axis (0, 1 or 2).
        output_size: the output spatial size (only ``thick_axis`` differs).

    Returns:
        ``(mean, var)``: ``(C, *output_size)`` float32, and the variance
        (law of total variance over members and the two orientations) when
        the ensemble computes one, else ``None``.

    Raises:
        ModelError: a model that is not 2D or does not scale exactly one axis.
    """
    ens = _as_ensemble(model, uncertainty=False)
    if ens.spatial_dims != 2:
        raise ModelError(f"slice-wise application needs a 2D model, got spatial_dims={ens.spatial_dims}")
    scale = ens.members[0].scale
    up = [i for i, f in enumerate(scale) if f > 1 + 1e-9]
    if len(up) != 1:
        raise ModelError(
            f"a slice-wise model upscales exactly one axis of its 2D input (e.g. scale (4, 1)), got scale {list(scale)}"
        )
    m_axis = up[0]
    if volume.ndim != 4:
        raise GeometryError(f"volume must be (C, X, Y, Z), got shape {tuple(volume.shape)}")
    out_size = tuple(int(v) for v in output_size)
    if any(out_size[a] != volume.shape[1 + a] for a in range(3) if a != thick_axis):
        raise GeometryError(f"slice-wise upscaling changes only axis {thick_axis}; got {tuple(volume.shape[1:])} -> {out_size}")
    vol = volume.as_subclass(torch.Tensor) if isinstance(volume, MetaTensor) else volume
    vol = vol.float()
    means, vars_ = [], []
    in_plane = [a for a in range(3) if a != thick_axis]
    for fixed in in_plane:
        other = next(a for a in in_plane if a != fixed)
        # (N, C, other, thick) or (N, C, thick, other), thick on the network's scaled axis
        order = [other, thick_axis] if m_axis == 1 else [thick_axis, other]
        perm = [1 + fixed, 0, 1 + order[0], 1 + order[1]]
        slices = vol.permute(*perm)
        size2d = tuple(out_size[a] for a in order)
        n = slices.shape[0]
        mean = torch.empty((n, vol.shape[0], *size2d), dtype=torch.float32)
        var = torch.empty_like(mean) if ens.uncertainty else None
        chunks = list(range(0, n, max(1, int(batch))))
        for s0 in _progress(chunks, progress, f"slices (axis {fixed})"):
            s1 = min(n, s0 + max(1, int(batch)))
            mu, va = ens.predict(slices[s0:s1].contiguous(), size2d)
            mean[s0:s1] = mu
            if var is not None and va is not None:
                var[s0:s1] = va
        inv = [0] * 4
        for i, p in enumerate(perm):
            inv[p] = i
        means.append(mean.permute(*inv))
        vars_.append(var.permute(*inv) if var is not None else None)
    mean = 0.5 * (means[0] + means[1])
    var = None
    if ens.uncertainty and vars_[0] is not None and vars_[1] is not None:
        var = 0.5 * (vars_[0] + vars_[1]) + 0.25 * (means[0] - means[1]) ** 2
    return mean.contiguous(), var.contiguous() if var is not None else None


#: Largest number of input pixels in one batch of whole planes (in-plane route).
INPLANE_BATCH_PIXELS = 1 << 20


def apply_inplane(
    model: Ensemble | Member | nn.Module,
    volume: torch.Tensor,
    plane_axis: int,
    output_size: Sequence[int],
    *,
    batch: int = SLICE_BATCH,
    progress: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Apply a 2D in-plane network to every plane of a volume across ``plane_axis``.

    The planes keep the order of the other two axes (the network's first and
    second axis); ``plane_axis`` is not resampled. Planes are processed whole,
    at most ``batch`` (and :data:`INPLANE_BATCH_PIXELS` input pixels) at a time.

    Args:
        model: a 2D model, a :class:`~medsat_sr.fusion.Member` or an
            :class:`~medsat_sr.fusion.Ensemble`.
        volume: ``(C, X, Y, Z)`` physical values (float32).
        plane_axis: the spatial axis the planes are cut across (factor 1).
        output_size: the output spatial size (``plane_axis`` unchanged).

    Returns:
        ``(mean, var)`` as for :func:`apply_slicewise`.

    Raises:
        ModelError: a model that is not 2D.
        GeometryError: an output size that changes ``plane_axis``.
    """
    ens = _as_ensemble(model, uncertainty=False)
    if ens.spatial_dims != 2:
        raise ModelError(f"in-plane application needs a 2D model, got spatial_dims={ens.spatial_dims}")
    if volume.ndim != 4:
        raise GeometryError(f"volume must be (C, X, Y, Z), got shape {tuple(volume.shape)}")
    out_size = tuple(int(v) for v in output_size)
    p = int(plane_axis)
    if out_size[p] != volume.shape[1 + p]:
        raise GeometryError(f"in-plane upscaling keeps axis {p}; got {tuple(volume.shape[1:])} -> {out_size}")
    vol = volume.as_subclass(torch.Tensor) if isinstance(volume, MetaTensor) else volume
    others = [a for a in range(3) if a != p]
    perm = [1 + p, 0, 1 + others[0], 1 + others[1]]
    planes = vol.float().permute(*perm)
    size2d = tuple(out_size[a] for a in others)
    n = planes.shape[0]
    per = max(1, min(int(batch), INPLANE_BATCH_PIXELS // max(1, planes.shape[2] * planes.shape[3])))
    mean = torch.empty((n, vol.shape[0], *size2d), dtype=torch.float32)
    var = torch.empty_like(mean) if ens.uncertainty else None
    for s0 in _progress(list(range(0, n, per)), progress, f"planes (axis {p})"):
        s1 = min(n, s0 + per)
        mu, va = ens.predict(planes[s0:s1].contiguous(), size2d)
        mean[s0:s1] = mu
        if var is not None and va is not None:
            var[s0:s1] = va
    inv = [0] * 4
    for i, q in enumerate(perm):
        inv[q] = i
    mean = mean.permute(*inv).contiguous()
    return mean, (var.permute(*inv).contiguous() if var is not None else None)


def _volume_windows(
    x: torch.Tensor,
    ens: Ensemble,
    out_shape: tuple[int, ...],
    eff: np.ndarray,
    settings: _Settings,
    progress: bool,
) -> tuple[torch.Tensor, torch.Tensor | None, dict[str, Any]]:
    """A 3D ensemble over a ``(1, C, X, Y, Z)`` volume with MONAI's sliding windows (see the module docs)."""
    from monai.inferers import sliding_window_inference

    from medsat_sr.models.upsample import interpolate

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


def _thickness(img: MetaTensor, axis: int) -> float:
    """The slice thickness along ``axis`` (DICOM SliceThickness when the slices are along it, else the spacing)."""
    spacing = float(img.meta[Key.SPACING][axis])
    header = img.meta.get(Key.HEADER)
    if img.meta.get(Key.SOURCE_FORMAT) == "dicom" and header is not None and axis == 2:
        try:
            th = float(getattr(header, "SliceThickness", None) or 0.0)
        except (TypeError, ValueError):
            th = 0.0
        if th > 0:
            return th
    return spacing


def _degrade_volume(sr: torch.Tensor, img: MetaTensor, eff: Sequence[float], profile: Any) -> tuple[torch.Tensor, str]:
    """``sr`` (on the grid upscaled by ``eff`` from ``img``) degraded back onto ``img``'s grid.

    The profile's degradation (default: the ``mri`` profile's): a slice
    profile along the one upscaled axis (FWHM = the slice thickness, at the
    slice spacing), else a Gaussian PSF (FWHM one low-resolution voxel unless
    the profile says otherwise) and decimation, or box averaging.
    """
    from medsat_sr.degrade import fwhm_to_sigma, psf_decimate, slice_profile
    from medsat_sr.domains import load_domain

    spec = (profile if profile is not None else load_domain("mri")).degradation
    up = [a for a in range(3) if eff[a] > 1 + 1e-9]
    with torch.inference_mode():
        if len(up) == 1 and (spec.model == "slice_profile" or profile is None):
            a = up[0]
            sp = spec.slice_profile
            sp_lr = float(img.meta[Key.SPACING][a])
            thick = _thickness(img, a) if sp.fwhm == "thickness" else float(sp.fwhm)
            spacing = sp_lr if sp.spacing == "header" else float(sp.spacing)
            deg = slice_profile(sr, a + 1, thickness=thick, spacing=spacing, in_spacing=sp_lr / float(eff[a]), profile=sp.shape)
            return deg, f"slice_profile axis {a} ({sp.shape}, FWHM {thick:g} mm, spacing {spacing:g} mm)"
        if spec.psf.shape == "box":
            return psf_decimate(sr, [float(e) for e in eff], method="box", spatial_dims=3), "box PSF + decimation"
        sig = []
        for e in eff:
            if e <= 1 + 1e-9:
                sig.append(0.0)
            elif profile is not None:
                sig.append(float(profile.psf_sigma(float(e))))
            else:
                sig.append(fwhm_to_sigma(float(e)))
        deg = psf_decimate(sr, [float(e) for e in eff], sigma=sig, spatial_dims=3)
        return deg, f"gaussian PSF + decimation (sigma {[round(v, 3) for v in sig]} output voxels)"


def _volume_consistency(sr: torch.Tensor, img: MetaTensor, eff: np.ndarray, profile: Any) -> dict[str, Any]:
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


# =============================================================== fitted ensemble weights (Wald split)


def _wald_weights_volume(method: str, members: list[Member], img: MetaTensor, scale: Sequence[float], profile: Any) -> tuple[list[float], dict[str, Any]]:
    """Fit ensemble weights on a central crop of the volume, degraded by the model scale (Wald's protocol)."""
    from medsat_sr.fusion import fit_weights

    x = img.as_tensor().float()
    sl = []
    for a in range(3):
        mult = int(round(scale[a])) if abs(scale[a] - round(scale[a])) < 1e-9 else 1
        r0, r1 = _centre(x.shape[1 + a], WEIGHT_CROP[3] * max(1, mult), mult)
        sl.append(slice(r0, r1))
    crop = x[(slice(None), *sl)]
    meta = dict(img.meta)
    meta.pop("affine", None)
    sub = MetaTensor(crop, affine=img.affine, meta=meta)
    lr_shape = scaled_shape(crop.shape[1:], [1.0 / f for f in scale])
    eff = np.asarray(crop.shape[1:], float) / np.asarray(lr_shape, float)
    lr, how = _degrade_volume(crop, _with_spacing(sub, eff), eff, profile)
    preds = [Ensemble([Member(m.model, normaliser=m.normaliser)]).predict(lr[None], crop.shape[1:])[0][0] for m in members]
    w = fit_weights(preds, crop, method=method, data_range=float(crop.max() - crop.min()) or 1.0)
    return w, {"method": method, "split": f"central crop {list(crop.shape[1:])}, degraded by {how}"}


def _with_spacing(img: MetaTensor, eff: Sequence[float]) -> MetaTensor:
    """``img`` whose spacing meta is that of the grid ``eff`` times coarser (for the degradation model)."""
    meta = dict(img.meta)
    meta[Key.SPACING] = tuple(float(s) * float(f) for s, f in zip(img.meta[Key.SPACING], eff))
    meta.pop("affine", None)
    return MetaTensor(img.as_tensor(), affine=img.affine, meta=meta)


# =============================================================== orchestration


class _Sections:
    """The inference/output/bands sections when no job config is given (``--set`` may still touch them)."""

    def __init__(self, overrides: Sequence[str]) -> None:
        from medsat_sr.config import BandsConfig, InferenceConfig, OutputConfig, parse_override

        from medsat_sr._schema import check_path
        from medsat_sr.config import JobConfig

        data: dict[str, dict[str, Any]] = {"inference": {}, "output": {}, "bands": {}}
        for item in overrides:
            parts, value = parse_override(item)
            try:
                check_path(JobConfig, parts)  # unknown keys get a did-you-mean hint
            except ConfigError as exc:
                raise ConfigError(f"--set {item!r}: {exc}") from None
            if parts[0] not in data or len(parts) != 2:
                raise ConfigError(
                    f"--set {item!r}: without --config only inference.*, output.* and bands.others can be set"
                )
            data[parts[0]][parts[1]] = value
        from pydantic import ValidationError

        try:
            self.inference = InferenceConfig.model_validate(data["inference"])
            self.output = OutputConfig.model_validate(data["output"])
            self.bands = BandsConfig.model_validate(data["bands"])
        except ValidationError as exc:
            err = dict(exc.errors()[0])
            loc = tuple(err.get("loc") or ())
            section = next((k for k, v in data.items() if loc and loc[0] in v), "")
            err["loc"] = (section, *loc) if section else loc
            where = ".".join(str(p) for p in err["loc"])
            raise ConfigError(f"--set: {where}: {err['msg']}, got {err.get('input')!r}") from None


def _state_hash(model: nn.Module) -> str:
    import hashlib

    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _volume_scale(
    img: MetaTensor, members: list[Member] | None, scale: Any, target_spacing: Any, cfg: Any
) -> tuple[tuple[float, ...], int | None, str | None]:
    """Per-axis scale of a volume and, for 2D models, the axis and route.

    Returns:
        ``(scale, axis, route)``: route ``"slicewise"`` (a slice network,
        ``axis`` is the through-plane axis it upscales), ``"inplane"`` (an
        in-plane network applied to the planes across ``axis``, whose factor
        is 1) or ``None`` (3D models and classical methods, ``axis`` None).
    """
    spacing = [float(v) for v in img.meta[Key.SPACING]]
    requested: tuple[float, ...] | None = None
    if scale is not None:
        requested = tuple(float(v) for v in as_scale(scale, 3))
    elif target_spacing is not None:
        ts = as_scale(target_spacing, 3)
        requested = tuple(max(1.0, s / t) for s, t in zip(spacing, ts))
        requested = tuple(1.0 if abs(f - 1) < 1e-6 else f for f in requested)
    elif cfg is not None and hasattr(cfg, "scale_for"):
        requested = tuple(float(v) for v in cfg.scale_for(spacing))
    if requested is not None and max(requested) < 1 - 1e-9:
        raise ConfigError(f"scale {list(requested)} would downsample; upscale needs factors >= 1")
    if not members:
        if requested is None:
            raise ConfigError("a classical method needs a scale: give --scale (e.g. 2 or 1,1,4) or --target-spacing")
        return requested, None, None
    ms = members[0].scale
    for m in members[1:]:
        if len(m.scale) != len(ms) or not np.allclose(m.scale, ms, atol=1e-6):
            raise ModelError(f"ensemble members have different scales: {[list(m.scale) for m in members]}")
    if len(ms) == 3:
        if requested is not None and not np.allclose(requested, ms, atol=1e-6):
            raise ModelError(f"the model upscales by {list(ms)}, but scale {list(requested)} was asked for")
        return tuple(ms), None, None
    if all(f > 1 + 1e-9 for f in ms):  # a 2D in-plane network: planes across the axis whose factor is 1
        if requested is None:
            plane = int(np.argmax(spacing))
            others = [a for a in range(3) if a != plane]
            s = [1.0, 1.0, 1.0]
            for a, f in zip(others, ms):
                s[a] = float(f)
            return tuple(s), plane, "inplane"
        ones = [a for a, v in enumerate(requested) if abs(v - 1) < 1e-9]
        others = [a for a in range(3) if a not in ones[-1:]]
        if len(ones) != 1 or not np.allclose([requested[a] for a in others], ms, atol=1e-6):
            raise ConfigError(
                f"a 2D in-plane model (scale {list(ms)}) upscales the planes across one axis of a volume: "
                f"give a scale with one factor 1 and the model's factors on the two others, got {list(requested)}"
            )
        return requested, ones[0], "inplane"
    # a 2D slice network (SMORE/ECLARE) on a volume: one through-plane axis
    f = max(ms)
    if requested is not None:
        up = [a for a, v in enumerate(requested) if v > 1 + 1e-9]
        if len(up) != 1:
            raise ConfigError(f"a 2D slice model upscales one axis of a volume; the scale {list(requested)} upscales {len(up)}")
        return requested, up[0], "slicewise"
    thick = int(np.argmax(spacing))
    s = [1.0, 1.0, 1.0]
    s[thick] = f
    return tuple(s), thick, "slicewise"


def _input_info(src: Any, path: Path | None, sha: str | None, kind: str) -> dict[str, Any]:
    info: dict[str, Any] = {"path": str(path) if path else None, "sha256": sha, "kind": kind}
    if isinstance(src, MetaTensor):
        info["shape"] = list(src.shape)
        info["spacing"] = list(src.meta.get(Key.SPACING) or [])
        info["format"] = src.meta.get(Key.SOURCE_FORMAT)
        if is_raster(src):
            info["transform"] = list(src.meta[Key.TRANSFORM])
    elif isinstance(src, list):
        info["groups"] = {g.name: {"shape": [len(g.bands), g.height, g.width], "bands": g.bands, "transform": list(g.transform)} for g in src}
        info["format"] = "geotiff"
    return info


def _derivation(method_desc: str, eff: Sequence[float], meta: Mapping[str, Any]) -> str:
    from medsat_sr._version import __version__

    src = meta.get(Key.SOURCE_PATH)
    factors = "x".join(f"{float(v):g}" for v in eff)
    return (
        f"medsat_sr {__version__} super-resolution ({method_desc}), scale {factors}"
        + (f", from {Path(str(src)).name}" if src else "")
    )


def upscale(
    image: MetaTensor | BandSet | str | os.PathLike[str],
    *,
    output: str | os.PathLike[str] | None = None,
    model: Any = None,
    models: Sequence[Any] | None = None,
    weights: Sequence[float] | str | None = None,
    method: str | None = None,
    scale: float | Sequence[float] | None = None,
    target_spacing: float | Sequence[float] | None = None,
    config: Any = None,
    overrides: Sequence[str] = (),
    fit: Any = None,
    precision: str | None = None,
    tta: bool | int | None = None,
    uncertainty: bool | None = None,
    device: str | None = None,
    tile_size: int | Sequence[int] | None = None,
    overlap: float | None = None,
    halo: int | None = None,
    batch_size: int | None = None,
    dtype: str | None = None,
    format: str | None = None,
    cog: bool | None = None,
    compress: str | None = None,
    force: bool | None = None,
    series_description: str | None = None,
    read_options: Mapping[str, Any] | None = None,
    sidecar: bool | None = None,
    run_dir: str | os.PathLike[str] | None = None,
    progress: bool = False,
) -> UpscaleResult:
    """Super-resolve a volume or a raster with a model, an ensemble, a self-supervised fit or a classical method.

    Exactly one of ``model``/``models`` (checkpoint paths or modules),
    ``method`` (``cubic``, ``linear``, ``nearest``, ``lanczos``), a
    self-supervised ``config`` (the model is fitted on ``image`` first with
    :func:`medsat_sr.train.fit`), or ``fit`` (a FitResult already computed).
    Options left at ``None`` come from the config's ``inference``/``output``
    sections, else from the defaults (no TTA, tile 64 voxels for
    volumes / 512 pixels for rasters, source dtype, deflate; precision
    ``auto``). See the module
    docstring for tiling, streaming, nodata and the fallback rule.

    Args:
        image: a path (DICOM series folder, NIfTI, GeoTIFF, band folder) or
            an image in memory (volume, raster, BandSet).
        output: where to write (format from the suffix as in ``convert``;
            no suffix: a DICOM series for volumes, a band folder for band
            sets). Rasters named by path are streamed into it.
        model: a checkpoint path, a module, or ``(module, metadata)``.
        models: several of those: a weighted ensemble.
        weights: ensemble weights (one per model), ``"equal"``, or fitted
            on a validation split made from the input by Wald's protocol (a
            central crop degraded by the model scale with the profile's
            degradation): ``"lstsq"`` (convex least squares) or ``"softmax"``
            (over each model's PSNR on that split); see :mod:`medsat_sr.fusion`.
        method: a classical method instead of a model.
        scale: one factor or one per spatial axis (volumes: 3, rasters:
            2); a model's own scale is used when left out.
        target_spacing: volumes: the output spacing in mm (one or per axis).
        config: a job config (name, path, mapping or JobConfig).
        overrides: ``--set`` items (``"inference.tile_size=256"``).
        fit: a FitResult to apply (skips fitting).
        precision: ``"fp32"``, ``"bf16"`` or ``"auto"`` (the default): bf16
            where the hardware runs it natively (:func:`native_bf16`), else
            fp32. bf16 costs no measurable PSNR (``benchmarks/upscale.py``
            (d): -0.0001 dB on NAIP x2) and is several times faster on CPUs
            with AVX512-BF16/AMX.
        tta: self-ensemble over the flips/rotations the scale allows (an int:
            at most that many transforms).
        uncertainty: also produce the per-voxel standard deviation across
            members (written as ``<stem>_std``).
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
        tile_size, overlap, halo, batch_size: tiling (module docstring).
        dtype: ``"source"`` (default) or ``"float32"``.
        format: output format instead of the suffix (``nifti``, ``geotiff``,
            ``cog``, ``dicom``).
        cog: write a Cloud-Optimised GeoTIFF.
        compress: GeoTIFF compression.
        force: keep the model's output even when it does not beat cubic.
        series_description: DICOM output SeriesDescription.
        read_options: reader options (DICOM ``series``, ``volume``, ``resample``).
        sidecar: write ``<output>.json`` (default true when writing).
        run_dir: where a self-supervised fit keeps its run (checkpoints, logs).
        progress: show progress bars.

    Returns:
        The :class:`UpscaleResult`.

    Raises:
        ConfigError: contradictory or invalid options.
        ModelError: a model that does not fit the data.
        DataError, FormatError, GeometryError: unreadable input.
        WriteError: the output cannot be written (nothing is left behind).
    """
    from medsat_sr._version import __version__
    from medsat_sr._atomic import check_writable
    from medsat_sr.io import detect_format, output_format
    from medsat_sr.io import read as io_read
    from medsat_sr.trust import RECORD_FORMAT, now_iso, sha256_path, write_record

    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    # ---------------------------------------------------------------- options
    cfg = None
    if config is not None:
        from medsat_sr.config import load_config

        cfg = load_config(config, list(overrides))
        sections: Any = cfg
    else:
        sections = _Sections(list(overrides))
    if method is not None and method not in baselines.METHODS:
        raise ConfigError(f"unknown method {method!r}; expected one of {list(baselines.METHODS)}")
    if scale is not None:
        _check_scale_bound(scale)
    items = ([model] if model is not None else []) + list(models or [])
    if method is not None and (items or fit is not None):
        raise ConfigError("give either a classical method or models, not both")
    if not items and method is None and fit is None and cfg is None:
        raise ConfigError("nothing to upscale with: give a model (--model), a method (--method) or a config (--config)")
    settings = _settings(
        sections,
        precision=precision, tta=tta, uncertainty=uncertainty, device=device, tile_size=tile_size, overlap=overlap,
        halo=halo, batch_size=batch_size, dtype=dtype, format=format, cog=cog, compress=compress, force=force,
        sidecar=sidecar,
    )
    if isinstance(settings.tile_size, list):
        settings.tile_size = tuple(settings.tile_size)
    out_path = Path(output) if output is not None else None
    fmt = None
    if out_path is not None:
        fmt = output_format(out_path, settings.format)
        if settings.cog and fmt == "geotiff":
            fmt = "cog"
        check_writable(out_path)
    # ---------------------------------------------------------------- input
    t0 = time.perf_counter()
    in_path: Path | None = None
    sha: str | None = None
    kind: str
    volume: MetaTensor | None = None
    raster_mem: MetaTensor | BandSet | None = None
    if isinstance(image, (str, os.PathLike)):
        in_path = Path(image)
        kind = detect_format(in_path)
        if kind in ("dicom", "nifti"):
            volume = io_read(in_path, **dict(read_options or {}))
            if not is_volume(volume):
                raise FormatError(f"{in_path}: expected a volume, got a {volume.meta.get(Key.KIND)}")
        sha = sha256_path(in_path)
    elif isinstance(image, BandSet):
        kind, raster_mem = "bandset", image
    elif isinstance(image, MetaTensor) and is_volume(image):
        kind, volume = "volume", image
    elif isinstance(image, MetaTensor) and is_raster(image):
        kind, raster_mem = "geotiff", image
    else:
        raise DataError(f"image must be a path, a volume, a raster or a BandSet, got {type(image).__name__}")
    _check_input_size(volume, raster_mem, in_path, kind)
    is_vol = volume is not None
    if not is_vol and target_spacing is not None:
        raise ConfigError("target_spacing (--target-spacing) is for volumes; rasters take a scale (--scale)")
    if cfg is not None and (cfg.profile.kind == "volume") != is_vol:
        raise ConfigError(f"{cfg.source}: the config is for {cfg.profile.kind}s, the input is a {'volume' if is_vol else 'raster'}")
    timings["read"] = time.perf_counter() - t0
    # ---------------------------------------------------------------- models / fit
    members: list[Member] = []
    model_records: list[dict[str, Any]] = []
    validations: list[dict[str, Any]] = []
    fit_norm = None
    fit_meta: dict[str, Any] = {}
    if not items and method is None and fit is None and cfg is not None:
        if cfg.train.mode == "supervised":
            raise ConfigError(
                f"{cfg.source}: a supervised config trains on references first (medsat-sr train); "
                "upscale with --model CKPT, or use a self-supervised config"
            )
        t0 = time.perf_counter()
        try:
            from medsat_sr.train import fit as train_fit
        except ImportError as exc:  # pragma: no cover - train ships with the package
            raise ConfigError(f"self-supervised fitting is not available ({exc})") from exc
        fit_input = volume
        if fit_input is None:
            if raster_mem is None:
                assert in_path is not None
                raster_mem = io_read(in_path)
            fit_input = raster_mem
        fit = train_fit([fit_input], cfg, run_dir=run_dir, progress=progress, init=cfg.train.init)
        timings["fit"] = time.perf_counter() - t0
    if fit is not None:
        fit_meta = dict(getattr(fit, "metadata", {}) or {})
        fit_norm = getattr(fit, "normaliser", None)
        m = Member(model=fit.model.to(settings.device).eval(), name="self-supervised fit", info={"_meta": fit_meta})
        members.append(m)
        model_records.append(
            {
                "path": fit_meta.get("checkpoint"),
                "sha256": _state_hash(fit.model),
                "architecture": getattr(fit.model, "config", None),
                "source": "self-supervised fit on the input",
                "metrics": fit_meta.get("metrics"),
            }
        )
        vp, vc = getattr(fit, "val_psnr", None), getattr(fit, "val_psnr_cubic", None)
        if vp is not None and vc is not None:
            validations.append({"model": 0, "val_psnr": float(vp), "val_psnr_cubic": float(vc), "source": "self-supervised fit, held-out split"})
    for item in items:
        m, info = _load_member(item, settings.device)
        members.append(m)
        rec = {k: v for k, v in info.items() if not k.startswith("_")}
        model_records.append(rec)
        v = _validation_of(info.get("metrics"))
        if v is not None:
            validations.append({"model": len(members) - 1, **v, "source": "checkpoint metrics"})
    weights_method: str | None = None
    if members:
        ws, weights_method = _member_weights(weights, members)
        if len(members) == 1:
            weights_method = None
        for m, w in zip(members, ws):
            m.weight = w
    elif weights is not None:
        raise ConfigError("weights are for ensembles of models")
    profile = cfg.profile if cfg is not None else next((p for p in (_domain_of(m.info.get("_meta") or {}) for m in members) if p is not None), None)
    # ---------------------------------------------------------------- fallback rule
    fallback: dict[str, Any] = {"applied": False, "reason": None, "forced": False}
    if members and validations and not any(_beats(v) for v in validations):
        worst = validations[0]
        reason = (
            f"the learned model's validation PSNR ({worst['val_psnr']:.2f} dB) does not beat cubic "
            f"({worst['val_psnr_cubic']:.2f} dB) by at least {MIN_GAIN_DB:g} dB on its held-out split ({worst['source']})"
        )
        if settings.force:
            logger.warning("%s; keeping the model's output because force was given", reason)
            fallback.update(forced=True, reason=reason)
        else:
            logger.warning("%s; writing the cubic result instead (use --force to keep the model's output)", reason)
            fallback.update(applied=True, reason=reason)
    use_members = members if members and not fallback["applied"] else None
    run_method = method if method is not None else (None if use_members else "cubic")
    # ---------------------------------------------------------------- run
    t0 = time.perf_counter()
    std_out_path: Path | None = None
    result_image: MetaTensor | None = None
    result_std: MetaTensor | None = None
    run_info: dict[str, Any] = {}
    weights_info: dict[str, Any] | None = None
    if is_vol:
        assert volume is not None
        s, thick, route2d = _volume_scale(volume, members or None, scale, target_spacing, cfg)
        if members:
            n_in, n_vol = int(getattr(members[0].model, "in_channels", volume.shape[0])), int(volume.shape[0])
            if n_in != n_vol:
                where = volume.meta.get(Key.SOURCE_PATH) or "the volume"
                raise ModelError(
                    f"{where}: the model takes {n_in} input channel(s), the volume has {n_vol}; "
                    "use a model trained on volumes with this many channels"
                )
        if use_members is None and thick is not None:
            thick = None
        shape = tuple(int(v) for v in volume.shape[1:])
        out_shape = scaled_shape(shape, s)
        eff = effective_scale(shape, s)
        aff = scale_affine(np.asarray(volume.affine, dtype=np.float64), eff)
        x = volume.as_tensor().float()
        if not torch.isfinite(x).all():
            logger.warning("the volume has non-finite values; they are set to 0 before upscaling")
            x = torch.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)
        var = None
        if use_members is None:
            mean = torch.from_numpy(baselines.resample_volume(x, out_shape, run_method or "cubic"))
            run_info["route"] = "classical"
        else:
            spec = profile.normalisation if profile is not None else None
            for m in use_members:
                stats = fit_norm if fit_norm is not None else (m.info.get("_meta") or {}).get("normalisation")
                if m.normaliser is None:
                    m.normaliser = _fit_normaliser(stats, volume, spec)
            if weights_method is not None and thick is None:
                ws, winfo = _wald_weights_volume(weights_method, use_members, volume, s, profile)
                for m, w in zip(use_members, ws):
                    m.weight = w
                weights_info = {**winfo, "weights": ws}
            elif weights_method is not None:
                raise ConfigError("fitted weights are not available for 2D slice models on volumes; give the weights (--weights w1,w2)")
            if thick is None:
                ens = Ensemble(use_members, transforms=_tta_for(s, settings.tta), precision=settings.precision,
                               device=settings.device, uncertainty=settings.uncertainty)
                mean, var, run_info = _volume_windows(x[None], ens, out_shape, eff, settings, progress)
                mean = mean[0]
                var = var[0] if var is not None else None
            elif route2d == "inplane":
                ens = Ensemble(use_members, transforms=_tta_for(use_members[0].scale, settings.tta),
                               precision=settings.precision, device=settings.device, uncertainty=settings.uncertainty)
                mean, var = apply_inplane(ens, x, thick, out_shape, batch=max(SLICE_BATCH, int(settings.batch_size)),
                                          progress=progress)
                run_info = {"route": "inplane", "plane_axis": thick}
            else:
                ens = Ensemble(use_members, transforms=_tta_for(use_members[0].scale, settings.tta),
                               precision=settings.precision, device=settings.device, uncertainty=settings.uncertainty)
                mean, var = apply_slicewise(ens, x, thick, out_shape, batch=max(SLICE_BATCH, int(settings.batch_size)), progress=progress)
                run_info = {"route": "slicewise", "through_plane_axis": thick}
            run_info["tta"] = [t.describe() for t in ens.transforms]
        run_info["scale"] = {"requested": list(s), "effective": eff.tolist()}
        timings["inference"] = time.perf_counter() - t0
        consistency = _volume_consistency(mean, volume, eff, profile)
        extra = {k: v for k, v in volume.meta.items() if k not in (
            Key.KIND, Key.SPACING, Key.ORIENTATION, Key.SOURCE_DTYPE, Key.INTENSITY, Key.BAND_NAMES,
            Key.SOURCE_FORMAT, Key.SOURCE_PATH, Key.HEADER, "space", "affine", "original_affine",
            "spatial_shape", "original_channel_dim", "filename_or_obj")}
        result_image = make_volume(
            mean, aff, source_dtype=volume.meta.get(Key.SOURCE_DTYPE), intensity=volume.meta.get(Key.INTENSITY),
            band_names=volume.meta.get(Key.BAND_NAMES), source_format=volume.meta.get(Key.SOURCE_FORMAT),
            source_path=volume.meta.get(Key.SOURCE_PATH), header=volume.meta.get(Key.HEADER), **extra,
        )
        if var is not None:
            result_std = make_volume(var.sqrt(), aff, source_dtype="float32", band_names=[f"{b}_std" for b in volume.meta.get(Key.BAND_NAMES) or []] or None, source_format=volume.meta.get(Key.SOURCE_FORMAT))
        t0 = time.perf_counter()
        method_desc = _method_desc(run_method, use_members, settings)
        if out_path is not None:
            assert fmt is not None
            if fmt in ("geotiff", "cog"):
                raise FormatError(f"{out_path}: a volume is written as .nii/.nii.gz or a DICOM folder (no suffix)")
            opts: dict[str, Any] = {}
            if settings.dtype == "float32":
                if fmt == "dicom":
                    raise ConfigError("DICOM stores integers; use --dtype source for a DICOM output (or write .nii.gz for float32)")
                opts["dtype"] = "float32"
            if fmt == "dicom":
                src_desc = str(volume.meta.get("series_description") or "")
                opts["series_description"] = series_description or (f"{src_desc} SR" if src_desc else "medsat_sr SR")[:64]
                opts["derivation"] = _derivation(method_desc, eff, volume.meta)
            from medsat_sr.io import write as io_write

            io_write(result_image, out_path, format=fmt, **opts)
            if result_std is not None:
                std_out_path = _std_path(out_path) if fmt != "dicom" else out_path.with_name(out_path.name + "_std.nii.gz")
                io_write(result_std, std_out_path, format="nifti", dtype="float32")
        timings["write"] = time.perf_counter() - t0
        out_info = {
            "shape": list(result_image.shape),
            "spacing": list(result_image.meta[Key.SPACING]),
            "affine": np.asarray(aff).tolist(),
        }
        in_info = _input_info(volume, in_path, sha, kind)
    else:
        files = _FileSet()
        try:
            if raster_mem is not None:
                groups = [_memory_group("image", raster_mem)] if isinstance(raster_mem, MetaTensor) else [
                    _memory_group(n, g) for n, g in raster_mem.groups.items()
                ]
            else:
                assert in_path is not None
                from medsat_sr.io.geotiff import gdal_env

                with gdal_env():
                    groups = _file_groups(in_path, kind, files)
            targets, guides = _band_roles(cfg, fit_meta, members, profile)
            folder = fmt == "dicom"
            if folder and len(groups) == 1:
                raise FormatError(f"{out_path}: a raster is written to a .tif file (a folder output is for band sets)")
            result_image, result_std, run_info = run_raster(
                groups, members=use_members, method=run_method, scale=scale if scale is not None else (_cfg_raster_scale(cfg) if len(groups) == 1 and not members else None),
                settings=_with_cog(settings, fmt), profile=profile, targets=targets, guides=guides, fit_norm=fit_norm,
                output=out_path, folder=folder, progress=progress,
                fit_weights_method=weights_method if use_members else None,
            )
            weights_info = run_info.pop("weights", None)
        finally:
            files.close()
        timings["inference"] = time.perf_counter() - t0  # streamed: includes reading and writing
        timings["write"] = 0.0
        consistency = run_info.pop("consistency", {})
        std_out_path = Path(run_info.pop("std_output")) if run_info.get("std_output") else None
        run_info.pop("std_output", None)
        method_desc = _method_desc(run_method, use_members, settings)
        out_info = {
            "shape": [len(run_info["bands"]), *run_info["output_shape"]],
            "transform": run_info["output_transform"],
            "bands": run_info["bands"],
        }
        in_info = _input_info(raster_mem if raster_mem is not None else groups, in_path, sha, kind)
    # ---------------------------------------------------------------- record
    for m, rec in zip(members, model_records):
        rec["weight"] = m.weight
    timings["total"] = time.perf_counter() - t_start
    record: dict[str, Any] = {
        "format": RECORD_FORMAT,
        "format_version": 1,
        "medsat_sr_version": __version__,
        "torch_version": torch.__version__.split("+")[0],
        "created": now_iso(),
        "input": in_info,
        "output": {
            "path": str(out_path) if out_path else None,
            "format": fmt,
            "dtype": settings.dtype or "source",
            **out_info,
            "uncertainty": str(std_out_path) if std_out_path else None,
        },
        "method": method_desc,
        "models": model_records if use_members or fallback["applied"] else [],
        "settings": {
            "precision": settings.precision,
            "tta": run_info.pop("tta", []),
            "uncertainty": bool(settings.uncertainty),
            "device": settings.device,
            "tile_size": settings.tile_size,
            "halo": settings.halo,
            "overlap": settings.overlap,
            "batch_size": settings.batch_size,
            **run_info,
        },
        "config": cfg.resolved() if cfg is not None else None,
        "config_source": cfg.source if cfg is not None else None,
        "weights": weights_info or ({"method": "given" if weights is not None and not isinstance(weights, str) else "equal"} if len(members) > 1 else None),
        "validation": _validation_summary(validations),
        "fallback": fallback,
        "consistency": consistency,
        "timings": {k: round(v, 4) for k, v in timings.items()},
    }
    side = None
    if out_path is not None and settings.sidecar:
        try:
            side = write_record(record, out_path)
        except BaseException:
            # An output without its trust record is incomplete: remove it (and the std map) too.
            for done in (out_path, std_out_path):
                _remove_output(done)
            raise
    return UpscaleResult(image=result_image, std=result_std, record=record, output=out_path, std_output=std_out_path, sidecar=side)


def _check_scale_bound(scale: Any) -> None:
    """Refuse factors above :data:`medsat_sr.config.MAX_SCALE` before any memory is allocated.

    Raises:
        ConfigError: a factor is not a positive finite number or exceeds the maximum.
    """
    from medsat_sr.config import MAX_SCALE

    values = np.atleast_1d(np.asarray(scale, dtype=np.float64)) if not isinstance(scale, str) else None
    if values is None or not np.all(np.isfinite(values)) or np.any(values <= 0):
        raise ConfigError(f"scale must be positive finite numbers, got {scale!r}")
    if np.any(values > MAX_SCALE):
        raise ConfigError(f"scale {values.tolist()} exceeds the maximum factor {MAX_SCALE:g} per axis")


def _check_input_size(volume: Any, raster: Any, path: Path | None, kind: str) -> None:
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
        import rasterio

        from medsat_sr.io import geotiff

        files = geotiff.band_files(path) if kind == "bandset" else [path]
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


def _remove_output(path: Path | None) -> None:
    if path is None or not path.exists():
        return
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _with_cog(settings: _Settings, fmt: str | None) -> _Settings:
    if fmt == "cog":
        settings.cog = True
    return settings


def _cfg_raster_scale(cfg: Any) -> Any:
    if cfg is None:
        return None
    try:
        return cfg.scale_for(None)
    except MedsatError:
        return None


def _method_desc(method: str | None, members: list[Member] | None, settings: _Settings) -> str:
    if members:
        base = "model" if len(members) == 1 else f"ensemble of {len(members)} models"
        if settings.tta:
            base += " + self-ensemble"
        return base
    return method or "cubic"


def _beats(v: Mapping[str, Any]) -> bool:
    """Whether a validation entry beats cubic by :data:`MIN_GAIN_DB` (NaN, i.e. never validated, does not)."""
    return bool(v["val_psnr"] - v["val_psnr_cubic"] >= MIN_GAIN_DB)


def _validation_summary(validations: list[dict[str, Any]]) -> dict[str, Any] | None:
    if not validations:
        return None
    return {
        "members": validations,
        "beats_cubic": any(_beats(v) for v in validations),
        "min_gain_db": MIN_GAIN_DB,
    }


def _member_weights(weights: Any, members: list[Member]) -> tuple[list[float], str | None]:
    """Initial weights and the fitting method (``"lstsq"``/``"softmax"``: fitted on a Wald split later)."""
    from medsat_sr.fusion import normalise_weights

    n = len(members)
    if weights is None or (isinstance(weights, str) and weights == "equal"):
        return normalise_weights(None, n), None
    if isinstance(weights, str):
        if weights in ("lstsq", "softmax"):
            return normalise_weights(None, n), weights
        raise ConfigError(f"weights must be numbers (one per model), 'equal', 'lstsq' or 'softmax', got {weights!r}")
    return normalise_weights(list(weights), n), None


def _band_roles(cfg: Any, fit_meta: Mapping[str, Any], members: list[Member], profile: Any) -> tuple[list[str] | None, list[str] | None]:
    """Target and guide band names for a raster model (checkpoint, fit metadata, then config)."""
    targets: list[str] | None = None
    guides: list[str] | None = None
    metas = [fit_meta] + [m.info.get("_meta") or {} for m in members]
    for meta in metas:
        if not meta:
            continue
        if targets is None and meta.get("band_names"):
            targets = list(meta["band_names"])
        g = meta.get("guide_band_names") or meta.get("guide_bands")
        if guides is None and g:
            guides = list(g)
        c = meta.get("config")
        if guides is None and isinstance(c, Mapping):
            gb = (c.get("bands") or {}).get("guides") if isinstance(c.get("bands"), Mapping) else None
            if gb and profile is not None:
                try:
                    guides = profile.expand_bands(gb)
                except MedsatError:
                    guides = None
    if cfg is not None:
        if targets is None:
            targets = cfg.target_bands()
        if guides is None and cfg.bands.guides:
            guides = cfg.guide_bands()
    return targets, guides

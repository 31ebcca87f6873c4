"""One entry point for fusing a revisit stack onto the refined grid: :func:`fuse`.

Steps, whatever the method:

1. **Registration**: the sub-pixel shift of every frame relative to the
   frames' mean position (:func:`medsat_sr.revisit.register.estimate_shifts`),
   unless the caller gives the shifts.
2. **Harmonisation** (``harmonise=True``): each frame's brightness offset to
   the clearest frame, per band, is the median difference over the pixels both
   see clear, and is removed (the acquisitions differ in atmosphere and sun;
   the cPSNR of the PROBA-V challenge forgives a global bias for the same reason).
3. **Fusion** by ``method``: ``learned`` (:class:`~medsat_sr.revisit.network.RevisitNet`,
   tiled with a halo of its receptive field, one band at a time, each band
   normalised by the median and the 1-99 % range of the median image's clear
   pixels), or a classical one of :mod:`medsat_sr.revisit.classical`
   (``median``, ``mean``, ``shift_and_add``, ``best_frame``).

The output has ``round(H * scale) x round(W * scale)`` pixels; its clear
mask is ``False`` where no frame saw the ground (the caller writes nodata there).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from medsat_sr.errors import ConfigError, DataError
from medsat_sr.geometry import scaled_shape
from medsat_sr.revisit.classical import aligned_stack, best_frame, masked_mean, masked_median, shift_and_add
from medsat_sr.revisit.network import RevisitNet
from medsat_sr.revisit.register import MAX_SHIFT, estimate_shifts

__all__ = ["METHODS", "Fused", "fuse", "harmonise", "band_norm", "run_network"]

logger = logging.getLogger("medsat_sr.revisit")

#: Fusion methods: name -> description.
METHODS: dict[str, str] = {
    "learned": "learned fusion (masked attention over the registered frames)",
    "median": "masked median of the registered frames",
    "mean": "masked mean of the registered frames",
    "shift_and_add": "shift-and-add of the registered frames",
    "best_frame": "best clear frame, GDAL cubic",
}

#: Output tile (refined-grid pixels a side) of the learned fusion.
DEFAULT_TILE = 384


@dataclass
class Fused:
    """The result of :func:`fuse`.

    Attributes:
        image: ``(C, H', W')`` float32, physical units (0 where not clear).
        clear: ``(H', W')`` pixels at least one clear frame saw.
        shifts: ``(K, 2)`` the frames' shifts (rows, columns; low-resolution pixels).
        offsets: ``(K, C)`` the brightness offsets removed by harmonisation.
        method: the method used.
        timings: seconds per step.
    """

    image: torch.Tensor
    clear: np.ndarray
    shifts: np.ndarray
    offsets: np.ndarray
    method: str
    timings: dict[str, float] = field(default_factory=dict)


def harmonise(frames: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Remove each frame's per-band brightness offset to the clearest frame (median over shared clear pixels)."""
    k = len(frames)
    ref = int(np.argmax(valid.reshape(k, -1).sum(axis=1)))
    offsets = np.zeros(frames.shape[:2], dtype=np.float32)
    out = frames.copy()
    for i in range(k):
        both = valid[i] & valid[ref]
        if i == ref or both.sum() < 16:
            continue
        offsets[i] = np.median(frames[ref][:, both] - frames[i][:, both], axis=1)
        out[i] += offsets[i][:, None, None]
    return out, offsets


def band_norm(base: torch.Tensor, clear: np.ndarray) -> tuple[float, float]:
    """``(centre, spread)`` of one band: median and 1-99 % range of the clear pixels (spread >= 1e-6)."""
    vals = base[torch.from_numpy(clear)] if clear.any() else base.reshape(-1)
    vals = vals.float()
    if vals.numel() > 1_000_000:
        vals = vals[:: vals.numel() // 1_000_000 + 1]
    lo, med, hi = torch.quantile(vals, torch.tensor([0.01, 0.5, 0.99]))
    return float(med), max(float(hi - lo), 1e-6)


def run_network(
    model: RevisitNet, stack: torch.Tensor, masks: torch.Tensor, base: torch.Tensor, scale: float, *,
    tile: int = DEFAULT_TILE, device: str = "cpu", precision: str = "fp32",
) -> torch.Tensor:
    """The network on one normalised band ``(K, H, W)`` + masks + base ``(H, W)``, tile by tile with a halo.

    Each tile reads a halo of the network's receptive field (clipped at the
    true border), so the tiled output equals the whole-image output.
    """
    k, h, w = stack.shape
    halo = int(model.receptive_field) + 1
    out = torch.empty((h, w), dtype=torch.float32)
    dev = torch.device(device)
    use_bf16 = precision == "bf16"
    with torch.inference_mode():
        for r0 in range(0, h, tile):
            for c0 in range(0, w, tile):
                r1, c1 = min(r0 + tile, h), min(c0 + tile, w)
                a0, a1, b0, b1 = max(r0 - halo, 0), min(r1 + halo, h), max(c0 - halo, 0), min(c1 + halo, w)
                s = stack[None, :, a0:a1, b0:b1].to(dev)
                m = masks[None, :, a0:a1, b0:b1].to(dev)
                bb = base[None, None, a0:a1, b0:b1].to(dev)
                with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=use_bf16):
                    y = model(s, m, bb, scale)
                out[r0:r1, c0:c1] = y[0, 0, r0 - a0 : r1 - a0, c0 - b0 : c1 - b0].float().cpu()
    return out


def _learned(
    model: RevisitNet, stack: torch.Tensor, masks: torch.Tensor, base: torch.Tensor, clear: np.ndarray, scale: float, **kw: Any
) -> torch.Tensor:
    out = torch.empty_like(base)
    for b in range(base.shape[0]):
        centre, spread = band_norm(base[b], clear)
        sn = (stack[:, b] - centre) / spread
        bn = (base[b] - centre) / spread
        out[b] = run_network(model, sn, masks, bn, scale, **kw) * spread + centre
    return out


def fuse(
    frames: np.ndarray,
    valid: np.ndarray,
    scale: float,
    *,
    method: str = "learned",
    model: RevisitNet | None = None,
    shifts: np.ndarray | None = None,
    harmonise_frames: bool = True,
    register: bool = True,
    max_shift: float = MAX_SHIFT,
    tile: int = DEFAULT_TILE,
    device: str = "cpu",
    precision: str = "fp32",
) -> Fused:
    """Fuse a revisit stack onto its nominal grid refined by ``scale``.

    Args:
        frames: ``(K, C, H, W)`` float values (physical units).
        valid: ``(K, H, W)`` clear masks.
        scale: the refinement factor (> 1).
        method: a key of :data:`METHODS`.
        model: the network (``learned`` only).
        shifts: ``(K, 2)`` known shifts; default estimated (``register``) or 0.
        harmonise_frames: remove per-frame brightness offsets first.
        register: estimate the shifts (off: every frame on the nominal grid).
        max_shift: the largest credible shift (see :func:`~medsat_sr.revisit.register.estimate_shifts`).
        tile, device, precision: how the network runs.

    Returns:
        The :class:`Fused` result.

    Raises:
        ConfigError: an unknown method, ``learned`` without a model, a scale <= 1.
        DataError: shapes that do not match, or no clear pixel in any frame.
    """
    if method not in METHODS:
        raise ConfigError(f"unknown fusion method {method!r}; expected one of {list(METHODS)}")
    if method == "learned" and model is None:
        raise ConfigError("the learned fusion needs its network (model=...)")
    if not scale > 1:
        raise ConfigError(f"scale must be > 1, got {scale!r}")
    x = np.asarray(frames, dtype=np.float32)
    v = np.asarray(valid, dtype=bool)
    if x.ndim != 4 or v.shape != (x.shape[0],) + x.shape[2:]:
        raise DataError(f"frames (K, C, H, W) and masks (K, H, W) expected, got {x.shape} and {v.shape}")
    if not v.any():
        raise DataError(f"none of the {len(x)} frames has a clear pixel")
    x = np.where(v[:, None], x, 0).astype(np.float32)  # nodata and cloud values never enter any method
    t: dict[str, float] = {}
    t0 = time.perf_counter()
    if shifts is None:
        shifts = estimate_shifts(x, v, max_shift=max_shift) if register and len(x) > 1 else np.zeros((len(x), 2))
    t["register"] = time.perf_counter() - t0
    offsets = np.zeros(x.shape[:2], dtype=np.float32)
    if harmonise_frames and len(x) > 1 and method != "best_frame":
        x, offsets = harmonise(x, v)
    out_shape = scaled_shape(x.shape[2:], scale)
    s_eff = out_shape[0] / x.shape[2]
    t0 = time.perf_counter()
    if method == "best_frame":
        img, clear = best_frame(x, v, s_eff, out_shape)
    elif method == "shift_and_add":
        img, clear = shift_and_add(x, v, shifts, s_eff, out_shape)
    else:
        stack, masks = aligned_stack(x, v, shifts, s_eff, out_shape)
        base, clear = (masked_mean if method == "mean" else masked_median)(stack, masks)
        if method == "learned":
            img = _learned(model,  # type: ignore[arg-type]  (checked at the door)
                            stack, masks, base, clear, s_eff, tile=tile, device=device, precision=precision)
        else:
            img = base
    t["fuse"] = time.perf_counter() - t0
    img = torch.where(torch.from_numpy(clear)[None], img, torch.zeros_like(img))
    return Fused(image=img.float(), clear=clear, shifts=shifts, offsets=offsets, method=method, timings=t)

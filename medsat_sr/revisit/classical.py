"""Classical fusion of a revisit stack onto the nominal grid refined by ``scale``.

Every function takes the frames ``(K, C, H, W)`` (float32, physical units),
their clear masks ``(K, H, W)`` and, where it needs them, the shifts ``(K, 2)``
of :func:`medsat_sr.revisit.register.estimate_shifts`; it returns the fused
image ``(C, H', W')`` and its clear mask ``(H', W')`` (``False`` where no frame
saw the ground). They are the baselines the learned fusion has to beat:

* :func:`best_frame`: the frame with the most clear pixels, upscaled by GDAL
  cubic (:func:`medsat_sr.baselines.gdal_resize`), as a user without a
  multi-frame tool would do; its clouds stay masked;
* :func:`masked_median`: every frame warped onto the refined grid
  (:func:`~medsat_sr.revisit.register.warp_to_grid`, Keys cubic), then the
  per-pixel median of the clear ones;
* :func:`shift_and_add`: every clear low-resolution sample placed at its
  registered position on the refined grid (nearest output pixel) and
  averaged there (Elad & Hel-Or 2001; Farsiu et al. 2004); output pixels that
  no sample hit are filled by normalised Gaussian convolution of the samples.

:func:`aligned_stack` is the warped stack that the median and the learned
fusion share.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage as ndi

from medsat_sr.baselines import gdal_resize, upsample_mask
from medsat_sr.revisit.register import fill_masked, warp_mask_to_grid, warp_to_grid

__all__ = ["CLASSICAL", "best_frame", "aligned_stack", "masked_median", "masked_mean", "shift_and_add"]


def _clear_counts(valid: np.ndarray) -> np.ndarray:
    return np.asarray(valid).reshape(len(valid), -1).sum(axis=1)


def best_frame(frames: np.ndarray, valid: np.ndarray, scale: float, out_shape: tuple[int, int]) -> tuple[torch.Tensor, np.ndarray]:
    """The clearest frame upscaled by GDAL cubic; its mask by nearest upsampling."""
    k = int(np.argmax(_clear_counts(valid)))
    filled = np.stack([fill_masked(b, valid[k]) for b in frames[k]])
    return gdal_resize(filled, out_shape, "cubic"), upsample_mask(valid[k], out_shape).astype(bool)


def aligned_stack(
    frames: np.ndarray, valid: np.ndarray, shifts: np.ndarray, scale: float, out_shape: tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Every frame warped onto the refined grid: ``(K, C, H', W')`` values and ``(K, H', W')`` bool masks."""
    vals = torch.stack([warp_to_grid(frames[k], valid[k], shifts[k], scale, out_shape) for k in range(len(frames))])
    masks = torch.from_numpy(np.stack([warp_mask_to_grid(valid[k], shifts[k], scale, out_shape) for k in range(len(frames))]))
    return vals, masks


def masked_median(stack: torch.Tensor, masks: torch.Tensor) -> tuple[torch.Tensor, np.ndarray]:
    """Per-pixel median over the clear frames of an aligned stack."""
    x = torch.where(masks[:, None], stack, torch.full_like(stack, float("nan")))
    med = torch.nanmedian(x, dim=0).values
    any_clear = masks.any(dim=0)
    return torch.where(any_clear[None], med, torch.zeros_like(med)), any_clear.numpy()


def masked_mean(stack: torch.Tensor, masks: torch.Tensor) -> tuple[torch.Tensor, np.ndarray]:
    """Per-pixel mean over the clear frames of an aligned stack."""
    w = masks[:, None].to(stack.dtype)
    n = w.sum(dim=0)
    mean = (stack * w).sum(dim=0) / n.clamp_min(1.0)
    return mean, (n[0] > 0).numpy()


def shift_and_add(
    frames: np.ndarray, valid: np.ndarray, shifts: np.ndarray, scale: float, out_shape: tuple[int, int]
) -> tuple[torch.Tensor, np.ndarray]:
    """Shift-and-add: clear samples placed at their registered positions, averaged, holes filled.

    Sample ``(i, j)`` of frame ``k`` lies at reference coordinate
    ``(i + dy_k, j + dx_k)``, i.e. at refined-grid coordinate
    ``(i + dy_k + 0.5) * scale - 0.5``; it is added to the nearest output
    pixel. Holes are filled by a normalised Gaussian convolution
    (``sigma = scale / 2`` output pixels) of the sums and counts.
    """
    c = frames.shape[1]
    ho, wo = out_shape
    acc = np.zeros((c, ho * wo))
    cnt = np.zeros(ho * wo)
    h, w = frames.shape[2:]
    ii, jj = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    for k in range(len(frames)):
        r = np.rint((ii + shifts[k][0] + 0.5) * scale - 0.5).astype(np.int64)
        q = np.rint((jj + shifts[k][1] + 0.5) * scale - 0.5).astype(np.int64)
        ok = valid[k] & (r >= 0) & (r < ho) & (q >= 0) & (q < wo)
        idx = (r * wo + q)[ok]
        cnt += np.bincount(idx, minlength=ho * wo)
        for b in range(c):
            acc[b] += np.bincount(idx, weights=frames[k, b][ok].astype(np.float64), minlength=ho * wo)
    cnt2 = cnt.reshape(ho, wo)
    acc2 = acc.reshape(c, ho, wo)
    out = acc2 / np.maximum(cnt2, 1)
    holes = cnt2 == 0
    sigma = scale / 2.0
    wsm = ndi.gaussian_filter(cnt2, sigma, mode="nearest")
    clear = wsm > 1e-3
    for b in range(c):
        ssm = ndi.gaussian_filter(acc2[b], sigma, mode="nearest")
        out[b] = np.where(holes, ssm / np.maximum(wsm, 1e-12), out[b])
    clear_any = upsample_mask(np.asarray(valid).any(axis=0), out_shape).astype(bool) & clear
    return torch.from_numpy(out.astype(np.float32)), clear_any


#: Classical fusion methods by name (the route's ``revisit.method`` values besides ``learned``).
CLASSICAL = {"best_frame": "best clear frame, GDAL cubic", "median": "masked median of the registered frames",
             "shift_and_add": "shift-and-add of the registered frames"}

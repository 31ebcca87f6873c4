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
* :func:`shift_and_add`: every clear low-resolution sample splatted at its
  registered position on the refined grid (bilinear weights) and averaged
  by a normalised Gaussian convolution, which also fills the output pixels
  no sample reached (Elad & Hel-Or 2001; Takeda et al. 2007). No deblurring.

:func:`aligned_stack` is the warped stack that the median and the learned
fusion share.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage as ndi

from medsat_sr.baselines import gdal_resize, upsample_mask
from medsat_sr.revisit.register import fill_masked, warp_mask_to_grid, warp_to_grid

#: Width (output pixels) of the Gaussian of shift-and-add's normalised convolution.
SAA_SIGMA = 0.5

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


def _splat(frames: np.ndarray, valid: np.ndarray, shifts: np.ndarray, scale: float,
           out_shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Bilinear splatting of every clear sample onto the refined grid: ``(C, H', W')`` sums and ``(H', W')`` weights."""
    c = frames.shape[1]
    ho, wo = out_shape
    acc = np.zeros((c, ho * wo))
    cnt = np.zeros(ho * wo)
    h, w = frames.shape[2:]
    ii, jj = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    for k in range(len(frames)):
        r = (ii + shifts[k][0] + 0.5) * scale - 0.5
        q = (jj + shifts[k][1] + 0.5) * scale - 0.5
        r0, q0 = np.floor(r).astype(np.int64), np.floor(q).astype(np.int64)
        for dr, wr in ((0, 1 - (r - r0)), (1, r - r0)):
            for dq, wq in ((0, 1 - (q - q0)), (1, q - q0)):
                rr, qq, ww = r0 + dr, q0 + dq, wr * wq
                ok = valid[k] & (rr >= 0) & (rr < ho) & (qq >= 0) & (qq < wo)
                idx = (rr * wo + qq)[ok]
                cnt += np.bincount(idx, weights=ww[ok], minlength=ho * wo)
                for b in range(c):
                    acc[b] += np.bincount(idx, weights=(ww * frames[k, b])[ok], minlength=ho * wo)
    return acc.reshape(c, ho, wo), cnt.reshape(ho, wo)


def shift_and_add(
    frames: np.ndarray, valid: np.ndarray, shifts: np.ndarray, scale: float, out_shape: tuple[int, int],
    sigma: float = SAA_SIGMA,
) -> tuple[torch.Tensor, np.ndarray]:
    """Shift-and-add: clear samples placed at their registered positions and averaged (kernel regression).

    Sample ``(i, j)`` of frame ``k`` lies at reference coordinate
    ``(i + dy_k, j + dx_k)``, i.e. at refined-grid coordinate
    ``(i + dy_k + 0.5) * scale - 0.5``; it is splatted onto the four output
    pixels around that position with bilinear weights. The output is the
    normalised convolution of the sums by the weights (Gaussian, ``sigma``
    output pixels), which fills the pixels no sample reached (Elad & Hel-Or
    2001; Takeda, Farsiu & Milanfar 2007). No deblurring step.
    """
    acc, cnt = _splat(frames, valid, shifts, scale, out_shape)
    wsm = ndi.gaussian_filter(cnt, sigma, mode="nearest")
    out = np.stack([ndi.gaussian_filter(a, sigma, mode="nearest") for a in acc]) / np.maximum(wsm, 1e-9)[None]
    clear_any = upsample_mask(np.asarray(valid).any(axis=0), out_shape).astype(bool) & (wsm > 1e-3)
    return torch.from_numpy(out.astype(np.float32)), clear_any


#: Classical fusion methods by name (the route's ``revisit.method`` values besides ``learned``).
CLASSICAL = {"best_frame": "best clear frame, GDAL cubic", "median": "masked median of the registered frames",
             "shift_and_add": "shift-and-add of the registered frames"}

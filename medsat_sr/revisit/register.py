"""Sub-pixel registration of revisit frames, and warping them onto a refined grid.

Convention (that of :func:`skimage.registration.phase_cross_correlation`):
the shift ``s_k = (dy, dx)`` of frame ``k`` registers it with the reference,
``scipy.ndimage.shift(frame_k, s_k) ~ reference``; pixel ``(i, j)`` of frame
``k`` therefore sees the scene at reference coordinates ``(i + dy, j + dx)``.

:func:`estimate_shifts` finds every shift in two steps:

1. phase correlation (scikit-image, ``upsample_factor`` 20) on the frames
   with their masked pixels filled, for the coarse shift (any size);
2. a masked Lucas-Kanade refinement (translation only, Gauss-Newton on the
   clear pixels both frames share, after removing their brightness bias,
   both frames lightly smoothed), which phase correlation cannot do with masks.

The nominal grid the frames share is the mean position of the frames (their
georegistration errors average out), so the returned shifts are relative to
that mean: ``shifts.mean(axis=0) == 0`` (:func:`estimate_shifts` with
``centre=True``).

:func:`warp_to_grid` resamples a frame onto the grid refined by ``scale``
(pixel centres of output pixel ``J`` at input coordinate
``(J + 0.5) / scale - 0.5``, the geometry contract's ``T' = T * scale(1/s)``)
with Keys cubic convolution (``a = -0.5``, GDAL's cubic) as two small dense
matrix products, after filling the masked pixels from their clear
neighbours (so clouds do not bleed into clear pixels); an output pixel is
clear only when the four input pixels around it are.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from scipy import ndimage as ndi
from skimage.registration import phase_cross_correlation

from medsat_sr.errors import DataError

__all__ = ["estimate_shifts", "refine_shift", "fill_masked", "cubic_matrix", "warp_to_grid", "warp_mask_to_grid"]

logger = logging.getLogger("medsat_sr.revisit")

#: Lucas-Kanade: iterations, stop when the update is below this (pixels), smoothing of both frames.
LK_ITERATIONS = 8
LK_TOL = 1e-3
LK_SIGMA = 1.0
#: Least clear pixels two frames must share for a shift to be estimated.
MIN_OVERLAP = 64
#: Largest credible shift between frames on one nominal grid (low-resolution pixels, per axis).
MAX_SHIFT = 1.5


def fill_masked(image: np.ndarray, valid: np.ndarray, sigma: float = 2.0) -> np.ndarray:
    """``image`` ``(H, W)`` with its invalid pixels replaced by a normalised convolution of the valid ones.

    Pixels far from any valid pixel get the median of the valid pixels (or 0
    when none is valid).
    """
    img = np.asarray(image, dtype=np.float32)
    v = np.asarray(valid, dtype=bool)
    if v.all():
        return img.copy()
    if not v.any():
        return np.zeros_like(img)
    w = ndi.gaussian_filter(v.astype(np.float32), sigma, mode="nearest")
    s = ndi.gaussian_filter(np.where(v, img, 0).astype(np.float32), sigma, mode="nearest")
    out = np.where(w > 1e-3, s / np.maximum(w, 1e-6), np.float32(np.median(img[v])))
    return np.where(v, img, out).astype(np.float32)


def _normalised(image: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Zero-median, unit-spread copy with the masked pixels filled (for registration only)."""
    x = fill_masked(image, valid)
    vals = x[valid] if valid.any() else x.ravel()
    lo, med, hi = np.percentile(vals, [5, 50, 95])
    return (x - med) / max(float(hi - lo), 1e-6)


def refine_shift(
    ref: np.ndarray, ref_valid: np.ndarray, mov: np.ndarray, mov_valid: np.ndarray, shift: np.ndarray
) -> np.ndarray | None:
    """Masked Lucas-Kanade refinement of ``shift`` (``ndi.shift(mov, shift) ~ ref``).

    Returns:
        The refined shift, or ``None`` when the frames share too few clear pixels.
    """
    a = ndi.gaussian_filter(ref, LK_SIGMA)
    b = ndi.gaussian_filter(mov, LK_SIGMA)
    s = np.asarray(shift, dtype=np.float64).copy()
    for _ in range(LK_ITERATIONS):
        warped = ndi.shift(b, s, order=3, mode="nearest")
        wv = ndi.shift(mov_valid.astype(np.float32), s, order=1, mode="constant", cval=0.0) > 0.999
        m = ndi.binary_erosion(ref_valid & wv, iterations=2)
        pad = int(np.ceil(np.abs(s).max())) + 3
        m[:pad], m[-pad:], m[:, :pad], m[:, -pad:] = False, False, False, False
        if m.sum() < MIN_OVERLAP:
            return None
        gy, gx = np.gradient(warped)
        e = (warped - warped[m].mean()) - (a - a[m].mean())
        j = np.stack([gy[m], gx[m]], axis=1)
        jtj = j.T @ j
        if np.linalg.cond(jtj) > 1e8:
            return s
        delta = np.linalg.solve(jtj, j.T @ e[m])
        s += delta
        if np.abs(delta).max() < LK_TOL:
            break
    return s


def estimate_shifts(
    frames: np.ndarray, valid: np.ndarray, *, reference: int | None = None, centre: bool = True,
    max_shift: float = MAX_SHIFT,
) -> np.ndarray:
    """Sub-pixel shifts ``(K, 2)`` (rows, columns) that register every frame.

    Args:
        frames: ``(K, H, W)`` (one band, or a band mean) or ``(K, C, H, W)``.
        valid: ``(K, H, W)`` clear pixels.
        reference: the frame the shifts are first measured against; default
            the one with the most clear pixels.
        centre: make the shifts relative to the frames' mean position (the
            nominal grid) instead of the reference frame.
        max_shift: the largest credible shift (low-resolution pixels, per
            axis): frames on one nominal grid are off by a fraction of a
            pixel, so a larger estimate (seasonal change, clouds) is a
            failed registration and that frame keeps shift 0 (logged).

    Returns:
        ``(K, 2)`` float64 shifts; a frame that shares too few clear pixels
        with the reference gets the phase-correlation shift alone, and one
        whose shift exceeds ``max_shift`` gets 0.

    Raises:
        DataError: shapes that do not match.
    """
    x = np.asarray(frames, dtype=np.float32)
    if x.ndim == 4:
        x = x.mean(axis=1)
    v = np.asarray(valid, dtype=bool)
    if x.ndim != 3 or v.shape != x.shape:
        raise DataError(f"frames (K, H, W) and masks of the same shape expected, got {x.shape} and {v.shape}")
    k = x.shape[0]
    r = int(np.argmax(v.reshape(k, -1).sum(axis=1))) if reference is None else int(reference)
    norm = [_normalised(x[i], v[i]) for i in range(k)]
    shifts = np.zeros((k, 2))
    for i in range(k):
        if i == r or not v[i].any():
            continue
        coarse, _, _ = phase_cross_correlation(norm[r], norm[i], upsample_factor=20, normalization=None)
        fine = refine_shift(norm[r], v[r], norm[i], v[i], np.asarray(coarse, dtype=np.float64))
        if fine is None:
            logger.info("frame %d shares too few clear pixels with frame %d; phase-correlation shift kept", i, r)
            fine = np.asarray(coarse, dtype=np.float64)
        if np.abs(fine).max() > max_shift:
            logger.info("frame %d: shift %s exceeds %.2g px; registration failed, shift 0 kept", i, np.round(fine, 2), max_shift)
            fine = np.zeros(2)
        shifts[i] = fine
    if centre:
        shifts -= shifts.mean(axis=0, keepdims=True)
    return shifts


def _keys(t: np.ndarray, a: float = -0.5) -> np.ndarray:
    t = np.abs(t)
    return np.where(
        t <= 1,
        (a + 2) * t**3 - (a + 3) * t**2 + 1,
        np.where(t < 2, a * t**3 - 5 * a * t**2 + 8 * a * t - 4 * a, 0.0),
    )


def cubic_matrix(n_in: int, n_out: int, scale: float, offset: float) -> np.ndarray:
    """``(n_out, n_in)`` Keys cubic weights: output ``J`` samples input coordinate ``(J + 0.5) / scale - 0.5 - offset``.

    The input is extended by edge replication (clamped indices), so each row sums to 1.
    """
    pos = (np.arange(n_out) + 0.5) / scale - 0.5 - offset
    base = np.floor(pos).astype(np.int64)
    w = np.zeros((n_out, n_in), dtype=np.float64)
    rows = np.arange(n_out)
    for t in range(-1, 3):
        idx = base + t
        np.add.at(w, (rows, np.clip(idx, 0, n_in - 1)), _keys(pos - idx))
    return w


def _linear_index(n_in: int, n_out: int, scale: float, offset: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bilinear neighbours of each output position, and whether it lies inside the input's footprint."""
    pos = (np.arange(n_out) + 0.5) / scale - 0.5 - offset
    lo = np.floor(pos).astype(np.int64)
    inside = (pos >= -0.5 - 1e-6) & (pos <= n_in - 0.5 + 1e-6)
    return np.clip(lo, 0, n_in - 1), np.clip(lo + 1, 0, n_in - 1), inside


def warp_to_grid(
    image: np.ndarray | torch.Tensor, valid: np.ndarray, shift: np.ndarray, scale: float, out_shape: tuple[int, int]
) -> torch.Tensor:
    """One frame ``(C, H, W)`` resampled onto the refined nominal grid ``out_shape`` (float32 tensor).

    The output pixel ``J`` is the frame's value at its coordinate
    ``(J + 0.5) / scale - 0.5 - shift`` (Keys cubic), after the masked pixels
    were filled with :func:`fill_masked`.
    """
    x = np.asarray(image, dtype=np.float32)
    if x.ndim == 2:
        x = x[None]
    filled = np.stack([fill_masked(b, valid) for b in x]) if not valid.all() else x
    wy = torch.from_numpy(cubic_matrix(x.shape[1], out_shape[0], scale, float(shift[0])).astype(np.float32))
    wx = torch.from_numpy(cubic_matrix(x.shape[2], out_shape[1], scale, float(shift[1])).astype(np.float32))
    t = torch.from_numpy(np.ascontiguousarray(filled))
    return torch.matmul(torch.matmul(wy, t), wx.T)


def warp_mask_to_grid(valid: np.ndarray, shift: np.ndarray, scale: float, out_shape: tuple[int, int]) -> np.ndarray:
    """The clear mask on the refined grid.

    An output pixel is clear when its position lies inside the frame's
    footprint and the four input pixels around it are clear.
    """
    v = np.asarray(valid, dtype=bool)
    y0, y1, yin = _linear_index(v.shape[0], out_shape[0], scale, float(shift[0]))
    x0, x1, xin = _linear_index(v.shape[1], out_shape[1], scale, float(shift[1]))
    rows = v[y0] & v[y1] & yin[:, None]
    return rows[:, x0] & rows[:, x1] & xin[None, :]

"""Pan and MS grids: the phase between them, MTF-matched low-pass, decimation and cubic interpolation.

A pan-sharpening pair has two grids with an integer ratio ``r`` (MS pixel /
pan pixel). Where the MS pixel centres fall on the pan grid is the *phase*:
the pan pixel index (fractional, per axis) of the centre of MS pixel 0.

* Landsat 8/9 L1: the MS centres coincide with every other pan centre, the
  phase is 1 (the pan grid starts half a pan pixel before the MS grid);
* pixel-aligned products (a 2x2 pan block per MS pixel): the phase is 0.5.

Every operation here takes the phase, so that the reduced-resolution
pairs of Wald's protocol and the full-resolution product put each sample
exactly where the grids say. Filters are MTF-matched Gaussians from the one
degradation recipe (:func:`medsat_sr.degrade.mtf_to_sigma`,
:func:`medsat_sr.degrade.gaussian_kernel1d`: gain ``g`` at the Nyquist
frequency of the decimated grid); borders are half-sample symmetric as in
:func:`medsat_sr.degrade.decimate`. The block-centred
:func:`medsat_sr.degrade.decimate` itself samples at phase ``(r - 1) / 2``
only, which cannot express the Landsat grid (phase 1 for r = 2), hence the
phase-aware sampling here.

Interpolation is cubic convolution (Keys 1981, a = -0.5, GDAL's "cubic"),
edge-clamped, evaluated at the exact positions ``(i - phase) / r``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.ndimage import correlate1d

from medsat_sr.errors import GeometryError
from medsat_sr.psf import gaussian_kernel1d, mtf_to_sigma

#: Tolerance (in pan pixels) on the ratio and on grid alignment.
GRID_TOL = 1e-3


def grid_relation(pan_transform: Any, ms_transform: Any, *, where: str = "input") -> tuple[int, tuple[float, float]]:
    """The integer ratio and the (row, col) phase of an MS grid on a pan grid.

    Args:
        pan_transform: the pan grid's affine (rasterio ``Affine``), north-up.
        ms_transform: the MS grid's affine.
        where: names the input in errors.

    Returns:
        ``(ratio, (row_phase, col_phase))``.

    Raises:
        GeometryError: rotated grids, a non-integer ratio, or different ratios per axis.
    """
    for name, t in (("pan", pan_transform), ("MS", ms_transform)):
        if abs(t.b) > 0 or abs(t.d) > 0:
            raise GeometryError(f"{where}: the {name} grid is rotated or sheared; pan-sharpening needs north-up grids")
    rx, ry = ms_transform.a / pan_transform.a, ms_transform.e / pan_transform.e
    r = round(rx)
    if r < 1 or abs(rx - r) > GRID_TOL or abs(ry - r) > GRID_TOL:
        raise GeometryError(
            f"{where}: MS pixel {abs(ms_transform.a):g} x {abs(ms_transform.e):g} and pan pixel "
            f"{abs(pan_transform.a):g} x {abs(pan_transform.e):g} are not an integer ratio >= 1 on both axes")
    x, y = ms_transform @ (0.5, 0.5)
    col, row = ~pan_transform @ (x, y)
    return r, (float(row) - 0.5, float(col) - 0.5)


def sigma_for(gain: float, ratio: int) -> float:
    """Gaussian sigma (fine pixels) whose MTF is ``gain`` at the Nyquist frequency of the grid decimated by ``ratio``."""
    return mtf_to_sigma(gain, ratio)


def lowpass(x: np.ndarray, sigmas: Sequence[float]) -> np.ndarray:
    """Separable Gaussian filter of each band of ``(C, H, W)`` (half-sample symmetric borders)."""
    out = np.empty_like(x)
    for c, s in enumerate(sigmas):
        k = gaussian_kernel1d(float(s)).numpy()
        out[c] = correlate1d(correlate1d(x[c], k, axis=0, mode="reflect"), k, axis=1, mode="reflect")
    return out


def _sample_axis(x: np.ndarray, axis: int, pos: np.ndarray) -> np.ndarray:
    """Linear interpolation of ``x`` along ``axis`` at fractional positions ``pos`` (edge-clamped)."""
    n = x.shape[axis]
    p = np.clip(pos, 0, n - 1)
    i0 = np.floor(p).astype(np.int64)
    i1 = np.minimum(i0 + 1, n - 1)
    f = p - i0
    shape = [1] * x.ndim
    shape[axis] = -1
    f = f.reshape(shape)
    a, b = np.take(x, i0, axis=axis), np.take(x, i1, axis=axis)
    return a if not np.any(f) else a * (1 - f) + b * f


def decimate(x: np.ndarray, ratio: int, phase: tuple[float, float], out_shape: tuple[int, int]) -> np.ndarray:
    """Sample ``(C, H, W)`` at rows ``phase[0] + ratio * i`` and cols ``phase[1] + ratio * j``."""
    y = _sample_axis(x, 1, phase[0] + ratio * np.arange(out_shape[0], dtype=np.float64))
    return _sample_axis(y, 2, phase[1] + ratio * np.arange(out_shape[1], dtype=np.float64))


def lowpass_decimate(x: np.ndarray, ratio: int, gains: Sequence[float], phase: tuple[float, float],
                     out_shape: tuple[int, int]) -> np.ndarray:
    """MTF-matched low-pass (one Nyquist gain per band) then decimation at the phase: Wald's degradation."""
    return decimate(lowpass(x, [sigma_for(g, ratio) for g in gains]), ratio, phase, out_shape)


def decimated_shape(shape: Sequence[int], ratio: int, phase: tuple[float, float]) -> tuple[int, int]:
    """How many samples ``phase + ratio * i`` fall inside a grid of ``shape`` (pan pixel centres)."""
    return tuple(max(0, math.floor((n - 1 - p) / ratio) + 1) for n, p in zip(shape, phase))  # type: ignore[return-value]


def _keys(t: np.ndarray) -> np.ndarray:
    """Keys' cubic convolution kernel, a = -0.5."""
    a = np.abs(t)
    return np.where(a <= 1, 1.5 * a**3 - 2.5 * a**2 + 1, np.where(a < 2, -0.5 * a**3 + 2.5 * a**2 - 4 * a + 2, 0.0))


def _cubic_axis(x: np.ndarray, axis: int, pos: np.ndarray) -> np.ndarray:
    n = x.shape[axis]
    base = np.floor(pos).astype(np.int64)
    shape = [1] * x.ndim
    shape[axis] = -1
    out = 0.0
    for k in (-1, 0, 1, 2):
        idx = base + k
        w = _keys(pos - idx).reshape(shape)
        out = out + np.take(x, np.clip(idx, 0, n - 1), axis=axis) * w
    return np.asarray(out)


def upsample(x: np.ndarray, ratio: int, phase: tuple[float, float], out_shape: tuple[int, int]) -> np.ndarray:
    """Cubic interpolation of ``(C, h, w)`` onto the fine grid: fine pixel ``i`` reads coarse ``(i - phase) / ratio``."""
    rows = (np.arange(out_shape[0], dtype=np.float64) - phase[0]) / ratio
    cols = (np.arange(out_shape[1], dtype=np.float64) - phase[1]) / ratio
    return _cubic_axis(_cubic_axis(x, 1, rows), 2, cols)


def footprint_valid(valid: np.ndarray, ratio: int, phase: tuple[float, float], out_shape: tuple[int, int]) -> np.ndarray:
    """Fine-grid validity: the fine pixel centre lies in the footprint of a valid coarse pixel (edges included)."""
    h, w = valid.shape
    rows = (np.arange(out_shape[0]) - phase[0]) / ratio
    cols = (np.arange(out_shape[1]) - phase[1]) / ratio
    ri, ci = np.round(rows).astype(np.int64), np.round(cols).astype(np.int64)
    rin = (rows >= -0.5 - 1e-9) & (rows <= h - 0.5 + 1e-9)
    cin = (cols >= -0.5 - 1e-9) & (cols <= w - 0.5 + 1e-9)
    v = valid[np.clip(ri, 0, h - 1)][:, np.clip(ci, 0, w - 1)]
    return v & rin[:, None] & cin[None, :]


def support_valid(valid: np.ndarray, radius: int) -> np.ndarray:
    """Pixels whose whole ``(2 radius + 1)^2`` neighbourhood is valid (an erosion of ``valid``)."""
    if radius <= 0:
        return valid.copy()
    bad = (~valid).astype(np.float64)
    k = np.ones(2 * radius + 1)
    return correlate1d(correlate1d(bad, k, axis=0, mode="nearest"), k, axis=1, mode="nearest") == 0

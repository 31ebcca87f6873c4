"""Shift-compensated scores of the PROBA-V challenge: cPSNR and cSSIM.

The conventions are those of :mod:`medsat_sr.metrics`.

References:
    M. Märtens, D. Izzo, A. Krzic, D. Cox, "Super-resolution of PROBA-V
    images using convolutional neural networks", Astrodynamics 3, 2019, and
    the ESA Kelvins PROBA-V challenge scoring (cPSNR, :func:`cpsnr`).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from medsat_sr.errors import ConfigError
from medsat_sr.metrics import ArrayLike, _as_numpy, _float64, _prepare, _resolve_data_range, ssim

__all__ = ["cpsnr", "cssim", "CPSNR_BORDER"]


#: PROBA-V: pixels cropped from each border of the SR image; the reference
#: window then slides over ``(2 * border + 1) ** 2`` integer shifts (7 x 7 = 49).
CPSNR_BORDER = 3


def _cpsnr_setup(
    sr: Any, ref: Any, clear: Any, border: int, data_range: Any
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """``(C, H, W)`` float64 estimate and reference, the ``(H, W)`` clear mask and the data range."""
    a, b = _prepare(sr, ref)
    r = _resolve_data_range(data_range, a, b)
    if a.ndim == 2:
        a, b = a[None], b[None]
    if a.ndim != 3:
        raise ConfigError(f"cpsnr expects (H, W) or (C, H, W) images, got shape {a.shape}")
    if isinstance(border, bool) or not isinstance(border, (int, np.integer)) or border < 0:
        raise ConfigError(f"border must be an integer >= 0, got {border!r}")
    if min(a.shape[1:]) <= 2 * border:
        raise ConfigError(f"cpsnr crops {border} pixels from each border; the image {a.shape[1:]} is too small")
    if clear is None:
        m = np.ones(a.shape[1:], dtype=bool)
    else:
        m = _as_numpy(clear, "clear")
        if m.ndim == 3 and m.shape[0] == 1:
            m = m[0]
        if m.dtype != np.bool_ or m.shape != a.shape[1:]:
            raise ConfigError(f"clear must be a boolean (H, W) mask of shape {a.shape[1:]}, got {m.dtype} {m.shape}")
    return _float64(a), _float64(b), m, r


def _cpsnr_windows(a: np.ndarray, b: np.ndarray, m: np.ndarray, border: int) -> list[tuple[float, int, int, np.ndarray]]:
    """``(cMSE, u, v, bias)`` for every shift ``(u, v)`` in ``0..2*border`` whose window has clear pixels."""
    h, w = a.shape[1] - 2 * border, a.shape[2] - 2 * border
    s = a[:, border : border + h, border : border + w]
    out = []
    for u in range(2 * border + 1):
        for v in range(2 * border + 1):
            mm = m[u : u + h, v : v + w]
            if not mm.any():
                continue
            d = b[:, u : u + h, v : v + w][:, mm] - s[:, mm]
            bias = d.mean(axis=1)
            d -= bias[:, None]
            out.append((float(np.mean(d * d)), u, v, bias))
    if not out:
        raise ConfigError("cpsnr: the reference has no clear pixel in any shifted window")
    return out


def cpsnr(
    sr: ArrayLike,
    ref: ArrayLike,
    *,
    data_range: float | None = None,
    clear: ArrayLike | None = None,
    border: int = CPSNR_BORDER,
) -> float:
    """Clear PSNR of the PROBA-V super-resolution challenge (Märtens et al. 2019), in dB.

    The estimate is cropped by ``border`` (3) pixels on every side; the
    reference window of the same size slides over every integer shift
    ``(u, v)`` with ``0 <= u, v <= 2 * border``: all 7 x 7 = 49 of them
    (some copies of the scoring code loop ``range(6)`` and miss 13). For each
    shift, on the reference's clear pixels only:

    * ``b = mean(HR_uv - SR_crop)`` (the brightness bias, per band),
    * ``cMSE = mean((HR_uv - (SR_crop + b)) ** 2)``,
    * ``cPSNR_uv = 10 log10(data_range ** 2 / cMSE)``;

    the score is the best (largest) cPSNR over the shifts. The challenge's
    images are normalised so that ``data_range`` is 1. For several bands the
    shift is shared and the bias is per band (cMSE averages bands and pixels).

    Args:
        sr: estimate ``(H, W)`` or ``(C, H, W)``.
        ref: high-resolution reference, same shape.
        data_range: peak-to-peak range (required for float data).
        clear: ``(H, W)`` boolean mask of the reference's clear pixels
            (the challenge's status map ``SM``); default all clear.
        border: the crop (3 in the challenge; the shift window is ``2 * border + 1``).

    Returns:
        cPSNR in dB (``inf`` when some shift matches exactly up to a bias).

    Raises:
        ConfigError: missing data_range for float data, shapes differ, an
            image smaller than the crop, or no clear pixel.
    """
    a, b, m, r = _cpsnr_setup(sr, ref, clear, border, data_range)
    best = min(c for c, _, _, _ in _cpsnr_windows(a, b, m, border))
    return math.inf if best == 0.0 else 10.0 * math.log10(r * r / best)


def cssim(
    sr: ArrayLike,
    ref: ArrayLike,
    *,
    data_range: float | None = None,
    clear: ArrayLike | None = None,
    border: int = CPSNR_BORDER,
) -> float:
    """Clear SSIM: :func:`ssim` with the cPSNR crop, shifts and bias correction (best of the 49 shifts).

    For each shift of :func:`cpsnr`, the cropped estimate plus that shift's
    bias is compared with the reference window by 2D :func:`ssim` averaged
    over the clear pixels; the score is the largest. (The RAMS and
    HighRes-net papers report SSIM this way on PROBA-V.)

    Args:
        sr, ref, data_range, clear, border: as in :func:`cpsnr`.

    Returns:
        cSSIM in ``[-1, 1]``.

    Raises:
        ConfigError: as :func:`cpsnr`, or a crop smaller than the SSIM window.
    """
    a, b, m, r = _cpsnr_setup(sr, ref, clear, border, data_range)
    h, w = a.shape[1] - 2 * border, a.shape[2] - 2 * border
    s = a[:, border : border + h, border : border + w]
    best = -math.inf
    for _, u, v, bias in _cpsnr_windows(a, b, m, border):
        mm = m[u : u + h, v : v + w]
        try:
            val = ssim(s + bias[:, None, None], b[:, u : u + h, v : v + w], data_range=r, mask=mm[None])
        except ConfigError:
            continue  # no clear pixel away from the SSIM window's border at this shift
        best = max(best, val)
    if best == -math.inf:
        raise ConfigError("cssim: no shift has clear pixels inside the SSIM evaluation region")
    return best

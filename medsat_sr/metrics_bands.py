"""Multispectral metrics: SAM and ERGAS, and any metric of :mod:`medsat_sr.metrics` band by band.

The conventions (estimate first, channel-first images, float64 on the CPU, ``mask`` True = valid,
:class:`~medsat_sr.errors.ConfigError` for bad input) are those of :mod:`medsat_sr.metrics`.

References:
    F. A. Kruse et al., "The spectral image processing system (SIPS)",
    Remote Sens. Environ. 44, 1993 (SAM).
    L. Wald, "Quality of high resolution synthesised images: is there a
    simple criterion?", Proc. Fusion of Earth Data, 2000; L. Wald, "Data
    Fusion: Definitions and Architectures", Presses de l'Ecole des Mines,
    2002 (ERGAS).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from medsat_sr.errors import ConfigError
from medsat_sr.metrics import ArrayLike, _as_numpy, _float64, _prepare, _spatial_mask

__all__ = ["sam", "ergas", "per_band"]



def _multiband(sr: Any, ref: Any, fn: str, min_bands: int) -> tuple[np.ndarray, np.ndarray]:
    a, b = _prepare(sr, ref)
    if a.ndim < 2:
        raise ConfigError(f"{fn} expects channel-first images (C, *spatial), got shape {a.shape}")
    if a.shape[0] < min_bands:
        raise ConfigError(f"{fn} needs at least {min_bands} band(s) on axis 0, got shape {a.shape}")
    return _float64(a), _float64(b)


def sam(sr: ArrayLike, ref: ArrayLike, *, mask: ArrayLike | None = None) -> float:
    """Spectral angle mapper: mean angle in DEGREES between per-pixel band vectors.

    For each pixel, the angle between the vectors ``sr[:, p]`` and
    ``ref[:, p]`` (bands on axis 0) is computed with Kahan's numerically
    stable form ``2 atan2(|u - v|, |u + v|)`` of the unit vectors (exactly 0
    for parallel vectors, unlike ``arccos``). Pixels where either vector has
    zero norm (the angle is undefined: typically nodata or an all-zero fill)
    are excluded, as are pixels outside ``mask``. The result is the mean
    angle over the remaining pixels.

    Args:
        sr: estimate ``(C, *spatial)`` with ``C >= 2`` bands.
        ref: reference, same shape.
        mask: optional boolean mask (True = valid) over the spatial shape,
            ``(*spatial)`` or ``(1, *spatial)`` or anything that broadcasts.

    Returns:
        Mean spectral angle in degrees, in ``[0, 180]``.

    Raises:
        ConfigError: shapes differ, fewer than 2 bands, an invalid mask, or
            no pixel with two non-zero vectors.
    """
    a, b = _multiband(sr, ref, "sam", 2)
    m = _spatial_mask(mask, a)
    na = np.sqrt(np.sum(a * a, axis=0))
    nb = np.sqrt(np.sum(b * b, axis=0))
    valid = (na > 0) & (nb > 0)
    if m is not None:
        valid &= m
    if not valid.any():
        raise ConfigError("sam: no pixel where both band vectors are non-zero (and valid under the mask)")
    u = a[:, valid] / na[valid]
    v = b[:, valid] / nb[valid]
    diff = np.sqrt(np.sum((u - v) ** 2, axis=0))
    summ = np.sqrt(np.sum((u + v) ** 2, axis=0))
    ang = 2.0 * np.arctan2(diff, summ)
    return float(np.degrees(ang).mean())


def ergas(sr: ArrayLike, ref: ArrayLike, *, scale: float, mask: ArrayLike | None = None) -> float:
    """ERGAS, relative dimensionless global error in synthesis (Wald 2000/2002).

    ``ERGAS = 100 * (h / l) * sqrt( mean_k( RMSE_k**2 / mu_k**2 ) )``

    where, for band ``k``, ``RMSE_k`` is the root mean squared error between
    ``sr[k]`` and ``ref[k]`` and ``mu_k`` is the mean of the **reference**
    band ``ref[k]`` (over valid pixels). ``h / l`` is the ratio of the
    **high**-resolution pixel size to the **low**-resolution pixel size, i.e.
    ``h / l = 1 / scale`` with ``scale`` the super-resolution factor: for
    Sentinel-2 20 m -> 10 m, ``scale = 2`` and ``h / l = 10 / 20 = 0.5``.
    Lower is better; 0 is perfect.

    ``scale`` is required and must be >= 1 so that the two common mistakes
    (forgetting it, or passing ``h / l = 0.5`` where the factor 2 is meant)
    fail loudly instead of silently scaling the score.

    Args:
        sr: estimate ``(C, *spatial)``.
        ref: reference, same shape.
        scale: super-resolution factor ``l / h`` (low-res pixel size over
            high-res pixel size), finite and >= 1.
        mask: optional boolean mask (True = valid) over the spatial shape.

    Returns:
        ERGAS as a Python float.

    Raises:
        ConfigError: shapes differ, an invalid scale or mask, or a reference
            band whose mean is 0 (ERGAS is undefined then).
    """
    if isinstance(scale, bool) or not isinstance(scale, (int, float, np.integer, np.floating)):
        raise ConfigError(f"scale must be a number >= 1 (the SR factor l/h, e.g. 2 for 20 m -> 10 m), got {scale!r}")
    s = float(scale)
    if not math.isfinite(s) or s < 1:
        raise ConfigError(
            f"scale must be the super-resolution factor l/h >= 1 (e.g. 2 for 20 m -> 10 m; ERGAS then "
            f"uses h/l = 1/scale), got {scale!r}"
        )
    a, b = _multiband(sr, ref, "ergas", 1)
    m = _spatial_mask(mask, a)
    c = a.shape[0]
    a2 = a.reshape(c, -1)
    b2 = b.reshape(c, -1)
    if m is not None:
        sel = m.reshape(-1)
        a2 = a2[:, sel]
        b2 = b2[:, sel]
    mse_k = np.mean((a2 - b2) ** 2, axis=1)
    mu_k = np.mean(b2, axis=1)
    zero = np.flatnonzero(mu_k == 0)
    if zero.size:
        raise ConfigError(f"ergas is undefined: reference band(s) {zero.tolist()} have mean 0 over the valid pixels")
    return float(100.0 / s * math.sqrt(float(np.mean(mse_k / mu_k**2))))


# --------------------------------------------------------------------------
# per-band helper
# --------------------------------------------------------------------------


def per_band(
    metric_fn: Callable[..., float],
    sr: ArrayLike,
    ref: ArrayLike,
    **kw: Any,
) -> list[float]:
    """Apply a metric to every band (channel, axis 0) separately.

    Band ``k`` is passed as ``sr[k:k+1]``, ``ref[k:k+1]`` (the channel axis
    is kept, so 2D SSIM stays 2D). Keyword arguments are forwarded with two
    per-band conveniences:

    * ``data_range`` may be a sequence with one value per band;
    * ``mask`` with a leading axis of size ``C`` (and ``C > 1``) is split per
      band; any other mask is passed to every band unchanged.

    Args:
        metric_fn: a metric of this module (``psnr``, ``rmse``, ``ssim``, ...)
            or any callable with the same ``(sr, ref, **kw)`` signature.
        sr: estimate ``(C, *spatial)``.
        ref: reference, same shape.
        **kw: forwarded keyword arguments.

    Returns:
        One float per band.

    Raises:
        ConfigError: shapes differ, a per-band data_range of the wrong
            length, or whatever ``metric_fn`` raises.
    """
    if not callable(metric_fn):
        raise ConfigError(f"metric_fn must be callable, got {type(metric_fn).__name__}")
    sa = tuple(sr.shape)
    sb = tuple(ref.shape)
    if sa != sb:
        raise ConfigError(f"sr and ref must have the same shape, got sr {sa} and ref {sb}")
    if len(sa) < 2:
        raise ConfigError(f"per_band expects channel-first images (C, *spatial), got shape {sa}")
    c = sa[0]
    dr = kw.pop("data_range", None)
    dr_list: list[Any] | None = None
    if dr is not None and not isinstance(dr, (int, float)) and np.ndim(_as_numpy(dr, "data_range")) == 1:
        dr_list = list(_as_numpy(dr, "data_range").tolist())
        if len(dr_list) != c:
            raise ConfigError(f"data_range has {len(dr_list)} values but the images have {c} bands")
    mask = kw.pop("mask", None)
    split_mask = mask is not None and c > 1 and len(mask.shape) == len(sa) and mask.shape[0] == c
    out: list[float] = []
    for k in range(c):
        kk: dict[str, Any] = dict(kw)
        if dr_list is not None:
            kk["data_range"] = dr_list[k]
        elif dr is not None:
            kk["data_range"] = dr
        if mask is not None:
            kk["mask"] = mask[k : k + 1] if split_mask else mask
        out.append(float(metric_fn(sr[k : k + 1], ref[k : k + 1], **kk)))
    return out

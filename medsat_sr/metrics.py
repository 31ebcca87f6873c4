"""Image quality metrics: PSNR, SSIM (2D, 3D, per-slice), MAE, MSE, RMSE.

SAM, ERGAS and per-band scores are in :mod:`medsat_sr.metrics_bands`, cPSNR and cSSIM in
:mod:`medsat_sr.metrics_shift`; they follow the conventions below.

Every function takes the estimate first and the reference second
(``metric(sr, ref, ...)``, like ``loss(input, target)``), as numpy arrays or
torch tensors (MONAI ``MetaTensor`` included), and computes in float64 on the
CPU. Images are channel-first, as everywhere in medsat_sr: ``(C, H, W)``
rasters and ``(C, X, Y, Z)`` volumes.

Conventions (DESIGN.md §5):

* **data_range** is keyword-only. For floating-point data it is *required*:
  like scikit-image we refuse to guess it, because PSNR and SSIM are
  meaningless without it and the image's own min/max silently changes from
  one image to the next. State in your report which range you used (the
  reference's range, a robust percentile range, the HU window, ...). For
  integer data the default is the full range of the dtype,
  ``iinfo.max - iinfo.min`` (255 for uint8, 65535 for uint16 *and* int16);
  both images must then share that dtype. This equals scikit-image's SSIM
  default for every integer dtype and its PSNR default except for signed
  integer images without negative values (skimage then uses ``iinfo.max``).
  For 12-bit data stored as uint16, CT in int16, etc. pass data_range
  explicitly. Boolean images have data_range 1.
* **mask** (optional) is a boolean array or tensor, ``True`` = valid, that
  broadcasts to the image (psnr, mse, mae, rmse, ssim) or to its spatial
  shape (sam, ergas; a leading axis of size 1 is accepted). Masked statistics
  are means over the valid pixels only. Values at invalid pixels never enter
  a masked mean, but SSIM's Gaussian window still reads them for neighbouring
  valid pixels: fill nodata with something sensible first (or erode the mask
  by the window radius, 5 pixels) if those values are wild.
* Invalid parameters or inputs raise :class:`~medsat_sr.errors.ConfigError`
  (a ``ValueError``) stating what was received and what was expected.

References:
    Z. Wang, A. C. Bovik, H. R. Sheikh, E. P. Simoncelli, "Image quality
    assessment: from error visibility to structural similarity", IEEE TIP
    13(4), 2004 (SSIM).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch
from scipy import ndimage as ndi

from medsat_sr.errors import ConfigError

__all__ = [
    "ArrayLike",
    "mse",
    "mae",
    "rmse",
    "psnr",
    "ssim",
    "ssim_slices",
]

ArrayLike = np.ndarray | torch.Tensor

#: Gaussian window truncation of SSIM, in standard deviations. With sigma 1.5
#: this gives the 11-tap window of Wang et al. (scikit-image uses the same).
_SSIM_TRUNCATE = 3.5


# --------------------------------------------------------------------------
# input handling
# --------------------------------------------------------------------------


def _as_numpy(x: Any, name: str) -> np.ndarray:
    """Return ``x`` as a numpy array, keeping integer/bool dtypes, floats as float64."""
    if isinstance(x, torch.Tensor):
        t = x.detach().as_subclass(torch.Tensor).cpu()
        if t.is_complex():
            raise ConfigError(f"{name} must be real, got complex dtype {t.dtype}")
        if t.is_floating_point():
            return t.to(torch.float64).numpy()
        return t.numpy()
    try:
        a = np.asarray(x)
    except Exception as exc:  # pragma: no cover - exotic inputs
        raise ConfigError(f"{name} must be a numpy array or torch tensor, got {type(x).__name__}") from exc
    if a.dtype.kind not in "biuf":
        raise ConfigError(f"{name} must have a real numeric or boolean dtype, got {a.dtype}")
    return a


def _float64(a: np.ndarray) -> np.ndarray:
    return a if a.dtype == np.float64 else a.astype(np.float64)


def _check_same_shape(a: np.ndarray, b: np.ndarray) -> None:
    if a.shape != b.shape:
        raise ConfigError(f"sr and ref must have the same shape, got sr {a.shape} and ref {b.shape}")


def _resolve_data_range(data_range: Any, a: np.ndarray, b: np.ndarray) -> float:
    """Validate an explicit data_range or derive the integer-dtype default."""
    if data_range is None:
        kinds = {a.dtype.kind, b.dtype.kind}
        if "f" in kinds:
            raise ConfigError(
                f"data_range is required for floating-point data (got sr dtype {a.dtype}, ref dtype "
                f"{b.dtype}); pass data_range=... explicitly, e.g. the reference's max - min or a robust "
                "percentile range. medsat_sr does not guess it."
            )
        if a.dtype != b.dtype:
            raise ConfigError(
                f"sr and ref have different integer dtypes ({a.dtype} and {b.dtype}); the dtype-range "
                "default is ambiguous, pass data_range=... explicitly"
            )
        if a.dtype.kind == "b":
            return 1.0
        info = np.iinfo(a.dtype)
        return float(info.max) - float(info.min)
    if isinstance(data_range, bool):
        raise ConfigError(f"data_range must be a finite number > 0, got {data_range!r}")
    if isinstance(data_range, torch.Tensor):
        if data_range.numel() != 1:
            raise ConfigError(f"data_range must be a single number, got a tensor of shape {tuple(data_range.shape)}")
        data_range = data_range.item()
    if isinstance(data_range, bool) or not isinstance(data_range, (int, float, np.integer, np.floating)):
        raise ConfigError(f"data_range must be a finite number > 0, got {data_range!r}")
    r = float(data_range)
    if not math.isfinite(r) or r <= 0:
        raise ConfigError(f"data_range must be a finite number > 0, got {data_range!r}")
    return r


def _resolve_mask(mask: Any, shape: tuple[int, ...], what: str = "image") -> np.ndarray | None:
    """Return the mask broadcast to ``shape`` (read-only view) or None."""
    if mask is None:
        return None
    m = _as_numpy(mask, "mask")
    if m.dtype != np.bool_:
        raise ConfigError(f"mask must be boolean (True = valid), got dtype {m.dtype}")
    try:
        m = np.broadcast_to(m, shape)
    except ValueError as exc:
        raise ConfigError(f"mask shape {m.shape} does not broadcast to the {what} shape {shape}") from exc
    if not m.any():
        raise ConfigError("mask selects no pixels (all False)")
    return m


def _prepare(sr: Any, ref: Any) -> tuple[np.ndarray, np.ndarray]:
    a = _as_numpy(sr, "sr")
    b = _as_numpy(ref, "ref")
    _check_same_shape(a, b)
    if a.size == 0:
        raise ConfigError(f"images are empty, got shape {a.shape}")
    return a, b


def _spatial_mask(mask: Any, x: np.ndarray) -> np.ndarray | None:
    """Mask over the spatial shape ``x.shape[1:]`` of a channel-first image."""
    if mask is None:
        return None
    m = _as_numpy(mask, "mask")
    if m.ndim == x.ndim and m.shape[0] == 1:
        m = m[0]
    return _resolve_mask(m, x.shape[1:], what="spatial")


def _squared_error(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d = _float64(a) - _float64(b)
    np.multiply(d, d, out=d)
    return d


def _masked_mean(v: np.ndarray, m: np.ndarray | None) -> float:
    if m is None:
        return float(np.mean(v))
    return float(np.mean(v[m]))


# --------------------------------------------------------------------------
# pixel-wise error metrics
# --------------------------------------------------------------------------


def mse(sr: ArrayLike, ref: ArrayLike, *, mask: ArrayLike | None = None) -> float:
    """Mean squared error ``mean((sr - ref)**2)`` over all (or the valid) pixels.

    Args:
        sr: estimate, any shape.
        ref: reference, same shape as ``sr``.
        mask: optional boolean mask (True = valid) that broadcasts to the shape.

    Returns:
        The MSE as a Python float.

    Raises:
        ConfigError: shapes differ, or the mask is not boolean, does not
            broadcast, or selects no pixel.
    """
    a, b = _prepare(sr, ref)
    m = _resolve_mask(mask, a.shape)
    return _masked_mean(_squared_error(a, b), m)


def rmse(sr: ArrayLike, ref: ArrayLike, *, mask: ArrayLike | None = None) -> float:
    """Root mean squared error ``sqrt(mse(sr, ref))``.

    Args:
        sr: estimate, any shape.
        ref: reference, same shape as ``sr``.
        mask: optional boolean mask (True = valid) that broadcasts to the shape.

    Returns:
        The RMSE as a Python float.

    Raises:
        ConfigError: as :func:`mse`.
    """
    return math.sqrt(mse(sr, ref, mask=mask))


def mae(sr: ArrayLike, ref: ArrayLike, *, mask: ArrayLike | None = None) -> float:
    """Mean absolute error ``mean(|sr - ref|)`` over all (or the valid) pixels.

    Args:
        sr: estimate, any shape.
        ref: reference, same shape as ``sr``.
        mask: optional boolean mask (True = valid) that broadcasts to the shape.

    Returns:
        The MAE as a Python float.

    Raises:
        ConfigError: as :func:`mse`.
    """
    a, b = _prepare(sr, ref)
    m = _resolve_mask(mask, a.shape)
    d = _float64(a) - _float64(b)
    np.abs(d, out=d)
    return _masked_mean(d, m)


def psnr(
    sr: ArrayLike,
    ref: ArrayLike,
    *,
    data_range: float | None = None,
    mask: ArrayLike | None = None,
) -> float:
    """Peak signal-to-noise ratio ``10 log10(data_range**2 / MSE)`` in dB.

    Args:
        sr: estimate, any shape.
        ref: reference, same shape as ``sr``.
        data_range: the peak-to-peak range of the data. Required for float
            data; integer data default to their dtype's full range (module
            docstring).
        mask: optional boolean mask (True = valid) that broadcasts to the shape.

    Returns:
        PSNR in dB (``inf`` when the images are identical on the valid pixels).

    Raises:
        ConfigError: missing data_range for float data, data_range not finite
            and > 0, shapes differ, or an invalid mask.
    """
    a, b = _prepare(sr, ref)
    r = _resolve_data_range(data_range, a, b)
    m = _resolve_mask(mask, a.shape)
    err = _masked_mean(_squared_error(a, b), m)
    if err == 0.0:
        return math.inf
    return 10.0 * math.log10(r * r / err)


# --------------------------------------------------------------------------
# SSIM
# --------------------------------------------------------------------------


def _ssim_map(
    a: np.ndarray, b: np.ndarray, data_range: float, sigmas: Sequence[float], k1: float, k2: float
) -> np.ndarray:
    """The SSIM map of Wang et al. with Gaussian weights, population covariances.

    ``sigmas`` gives the Gaussian standard deviation per array axis (0 = not
    filtered along that axis). Borders use half-sample symmetric reflection.
    """
    a = _float64(a)
    b = _float64(b)

    def filt(v: np.ndarray) -> np.ndarray:
        return ndi.gaussian_filter(v, sigma=list(sigmas), truncate=_SSIM_TRUNCATE, mode="reflect")

    ux = filt(a)
    uy = filt(b)
    vx = filt(a * a)
    vx -= ux * ux
    vy = filt(b * b)
    vy -= uy * uy
    vxy = filt(a * b)
    vxy -= ux * uy
    c1 = (k1 * data_range) ** 2
    c2 = (k2 * data_range) ** 2
    # numerator: (2 ux uy + C1)(2 vxy + C2); denominator: (ux^2 + uy^2 + C1)(vx + vy + C2)
    num = 2.0 * ux * uy + c1
    vxy *= 2.0
    vxy += c2
    num *= vxy
    del vxy
    ux *= ux
    uy *= uy
    ux += uy
    ux += c1
    del uy
    vx += vy
    vx += c2
    del vy
    ux *= vx
    num /= ux
    return num


def _ssim_params(sigma: float, k1: float, k2: float) -> int:
    for name, v in (("sigma", sigma), ("k1", k1), ("k2", k2)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
            raise ConfigError(f"{name} must be a finite number > 0, got {v!r}")
    return int(_SSIM_TRUNCATE * sigma + 0.5)


def _check_window(shape: Sequence[int], axes: Sequence[int], pad: int, sigma: float) -> None:
    win = 2 * pad + 1
    small = [int(shape[ax]) for ax in axes if shape[ax] < win]
    if small:
        raise ConfigError(
            f"SSIM needs every filtered spatial dimension >= {win} (Gaussian window, sigma={sigma}), "
            f"got image shape {tuple(shape)}"
        )


def _valid_region(shape: tuple[int, ...], axes: Sequence[int], pad: int) -> tuple[slice, ...]:
    sl = [slice(None)] * len(shape)
    for ax in axes:
        sl[ax] = slice(pad, shape[ax] - pad)
    return tuple(sl)


def ssim(
    sr: ArrayLike,
    ref: ArrayLike,
    *,
    data_range: float | None = None,
    mask: ArrayLike | None = None,
    spatial_dims: int | None = None,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
) -> float:
    """Structural similarity (Wang et al. 2004), 2D per channel or 3D.

    The local statistics use a Gaussian window (``sigma`` 1.5, truncated at
    3.5 sigma: 11 taps) and population (not sample) covariances, as in Wang
    et al.; the result equals ``skimage.metrics.structural_similarity(...,
    gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
    data_range=...)`` (with ``channel_axis=0`` for several channels). As in
    scikit-image, the SSIM map is averaged over the pixels at least
    ``pad = 5`` pixels away from every border (the window radius), so that the
    reflected border does not count; with a mask, the average is further
    restricted to the valid pixels. Channels are filtered independently and
    the result is the mean over channels (and valid pixels).

    Args:
        sr: estimate: ``(C, H, W)`` or ``(H, W)`` for 2D SSIM, ``(C, X, Y, Z)``
            for 3D SSIM.
        ref: reference, same shape as ``sr``.
        data_range: peak-to-peak range; required for float data.
        mask: optional boolean mask (True = valid) broadcastable to the shape.
        spatial_dims: 2 or 3. By default it is inferred from the
            channel-first layout: 2D for ``(H, W)`` and ``(C, H, W)``, 3D for
            ``(C, X, Y, Z)``. Pass ``spatial_dims=3`` for a volume without a
            channel axis ``(X, Y, Z)``.
        sigma: Gaussian window standard deviation in pixels.
        k1: stabilising constant, ``C1 = (k1 * data_range)**2``.
        k2: stabilising constant, ``C2 = (k2 * data_range)**2``.

    Returns:
        Mean SSIM as a Python float.

    Raises:
        ConfigError: missing or invalid data_range, shapes differ, a spatial
            size smaller than the window (11 for sigma 1.5), an invalid mask
            or an unsupported number of dimensions.
    """
    a, b = _prepare(sr, ref)
    r = _resolve_data_range(data_range, a, b)
    pad = _ssim_params(sigma, k1, k2)
    if spatial_dims is None:
        if a.ndim == 2:
            spatial_dims = 2
        elif a.ndim in (3, 4):
            spatial_dims = a.ndim - 1
        else:
            raise ConfigError(
                f"ssim expects (H, W), (C, H, W) or (C, X, Y, Z) images, got shape {a.shape}; "
                "pass spatial_dims=2 or 3 to say which axes are spatial"
            )
    if spatial_dims not in (2, 3):
        raise ConfigError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}")
    if a.ndim not in (spatial_dims, spatial_dims + 1):
        raise ConfigError(
            f"with spatial_dims={spatial_dims} the images must have {spatial_dims} or {spatial_dims + 1} "
            f"dimensions (optional leading channel axis), got shape {a.shape}"
        )
    axes = tuple(range(a.ndim - spatial_dims, a.ndim))
    _check_window(a.shape, axes, pad, sigma)
    m = _resolve_mask(mask, a.shape)
    sigmas = [float(sigma) if ax in axes else 0.0 for ax in range(a.ndim)]
    smap = _ssim_map(a, b, r, sigmas, k1, k2)
    region = _valid_region(a.shape, axes, pad)
    smap = smap[region]
    if m is None:
        return float(smap.mean())
    m = m[region]
    if not m.any():
        raise ConfigError(f"mask selects no pixel inside the SSIM evaluation region (border of {pad} excluded)")
    return float(smap[m].mean())


def ssim_slices(
    sr: ArrayLike,
    ref: ArrayLike,
    *,
    axis: int,
    data_range: float | None = None,
    mask: ArrayLike | None = None,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
    reduction: Literal["mean", "none"] = "mean",
) -> float | np.ndarray:
    """2D SSIM of every slice of a volume along one spatial axis, and their mean.

    Each slice is scored like :func:`ssim` in 2D (same window, border crop and
    constants; channels averaged). The volume is filtered in one pass with a
    Gaussian that is zero along ``axis``, so this is as fast as 3D SSIM.

    Args:
        sr: estimate volume ``(C, X, Y, Z)`` or ``(X, Y, Z)``.
        ref: reference, same shape as ``sr``.
        axis: the *spatial* axis along which to slice: 0, 1 or 2 (or -3..-1),
            e.g. ``axis=-1`` for axial slices of a ``(C, X, Y, Z)`` RAS volume.
        data_range: peak-to-peak range; required for float data.
        mask: optional boolean mask (True = valid) broadcastable to the shape.
            Slices without a valid pixel in their evaluation region are left
            out of the mean (and are NaN with ``reduction="none"``).
        sigma: Gaussian window standard deviation in pixels.
        k1: stabilising constant.
        k2: stabilising constant.
        reduction: ``"mean"`` for the unweighted mean over slices, ``"none"``
            for the per-slice values as a float64 array.

    Returns:
        The mean per-slice SSIM (float), or the per-slice array.

    Raises:
        ConfigError: as :func:`ssim`, an axis out of range, an unknown
            reduction, or no slice with valid pixels.
    """
    a, b = _prepare(sr, ref)
    r = _resolve_data_range(data_range, a, b)
    pad = _ssim_params(sigma, k1, k2)
    if a.ndim not in (3, 4):
        raise ConfigError(f"ssim_slices expects a volume (C, X, Y, Z) or (X, Y, Z), got shape {a.shape}")
    if reduction not in ("mean", "none"):
        raise ConfigError(f"reduction must be 'mean' or 'none', got {reduction!r}")
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)) or not -3 <= axis <= 2:
        raise ConfigError(f"axis must be a spatial axis in -3..2, got {axis!r}")
    lead = a.ndim - 3
    slice_ax = lead + (int(axis) % 3)
    in_plane = tuple(ax for ax in range(lead, a.ndim) if ax != slice_ax)
    _check_window(a.shape, in_plane, pad, sigma)
    m = _resolve_mask(mask, a.shape)
    sigmas = [float(sigma) if ax in in_plane else 0.0 for ax in range(a.ndim)]
    region = _valid_region(a.shape, in_plane, pad)
    smap = _ssim_map(a, b, r, sigmas, k1, k2)[region]
    other = tuple(ax for ax in range(a.ndim) if ax != slice_ax)
    if m is None:
        per_slice = smap.mean(axis=other)
    else:
        m = m[region]
        count = m.sum(axis=other)
        total = np.where(m, smap, 0.0).sum(axis=other)
        with np.errstate(invalid="ignore", divide="ignore"):
            per_slice = np.where(count > 0, total / np.maximum(count, 1), np.nan)
        if not np.any(count > 0):
            raise ConfigError(f"mask selects no pixel inside the SSIM evaluation region (border of {pad} excluded)")
    per_slice = np.asarray(per_slice, dtype=np.float64)
    if reduction == "none":
        return per_slice
    return float(np.nanmean(per_slice))

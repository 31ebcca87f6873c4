"""Image quality metrics: PSNR, SSIM (2D, 3D, per-slice), MAE, MSE, RMSE, SAM, ERGAS.

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
    F. A. Kruse et al., "The spectral image processing system (SIPS)",
    Remote Sens. Environ. 44, 1993 (SAM).
    L. Wald, "Quality of high resolution synthesised images: is there a
    simple criterion?", Proc. Fusion of Earth Data, 2000; L. Wald, "Data
    Fusion: Definitions and Architectures", Presses de l'Ecole des Mines,
    2002 (ERGAS).
    M. Märtens, D. Izzo, A. Krzic, D. Cox, "Super-resolution of PROBA-V
    images using convolutional neural networks", Astrodynamics 3, 2019, and
    the ESA Kelvins PROBA-V challenge scoring (cPSNR, :func:`cpsnr`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
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
    "sam",
    "ergas",
    "per_band",
    "cpsnr",
    "cssim",
    "CPSNR_BORDER",
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


# --------------------------------------------------------------------------
# multispectral metrics
# --------------------------------------------------------------------------


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


# --------------------------------------------------------------------------
# cPSNR and cSSIM (PROBA-V challenge)
# --------------------------------------------------------------------------

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

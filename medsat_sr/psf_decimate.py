"""Sensor PSF and decimation operators, and noise: :func:`psf_decimate`, :func:`decimate`, :func:`add_noise`.

Built on the taps and argument checks of :mod:`medsat_sr.psf`, whose module docstring gives the
sampling convention, the border rule and the implementation they share; :mod:`medsat_sr.degrade`
re-exports them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch

from medsat_sr.errors import ConfigError
from medsat_sr.psf import (
    _apply_taps,
    _as_float_tensor,
    _as_list,
    _box_taps,
    _gaussian_taps,
    _is_scalar,
    _mask_inverse,
    _mask_taps,
    _number,
    _positions,
    _reflect,
    fwhm_to_sigma,
    mtf_to_sigma,
    output_size,
)

__all__ = ["psf_decimate", "decimate", "add_noise"]


def _resolve_spatial_dims(ndim: int, shape: tuple[int, ...], spatial_dims: int | None, n_given: int | None) -> int:
    if spatial_dims is None:
        if n_given is not None:
            sd = n_given
        elif ndim == 3:
            sd = 2
        elif ndim == 5:
            sd = 3
        else:
            raise ConfigError(
                f"cannot tell the spatial dimensions of a tensor of shape {shape}: pass spatial_dims "
                "(2 for (B, C, H, W), 3 for (C, X, Y, Z)) or one factor per spatial axis"
            )
    else:
        if isinstance(spatial_dims, bool) or spatial_dims not in (1, 2, 3):
            raise ConfigError(f"spatial_dims must be 1, 2 or 3, got {spatial_dims!r}")
        sd = int(spatial_dims)
        if n_given is not None and n_given != sd:
            raise ConfigError(f"spatial_dims={sd} but {n_given} per-axis values were given")
    if ndim not in (sd + 1, sd + 2):
        raise ConfigError(
            f"x must be (C, *spatial) or (B, C, *spatial) with {sd} spatial dimensions, got shape {shape}"
        )
    return sd


def _per_axis(value: Any, sd: int, name: str) -> list[Any]:
    """A scalar broadcast to ``sd`` values, or a sequence checked for length."""
    if _is_scalar(value):
        return [value] * sd
    vals = _as_list(value, name)
    if len(vals) != sd:
        raise ConfigError(f"{name} must have 1 or {sd} values (one per spatial axis), got {len(vals)}")
    return vals


def psf_decimate(
    x: torch.Tensor,
    factor: float | Sequence[float],
    *,
    sigma: float | Sequence[float] | None = None,
    mtf_nyquist: float | Sequence[float] | None = None,
    method: Literal["gaussian", "box"] = "gaussian",
    mask: torch.Tensor | None = None,
    spatial_dims: int | None = None,
    truncate: float = 4.0,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Sensor PSF/MTF blur plus decimation (rasters: Wald's protocol; volumes: isotropic PSF).

    Along every spatial axis with factor ``f``, the low-res pixel ``j``
    covers the ``f`` high-res pixels ``[j f - 0.5, (j + 1) f - 0.5]`` and its
    value is taken at the block centre ``(j + 0.5) f - 0.5``; there are
    ``round(n / f)`` of them, so the output grid is
    ``geometry.scale_transform(transform, 1 / f)`` for rasters and
    ``geometry.scale_affine(affine, 1 / f)`` for volumes (same field of view;
    see the module docstring when ``n`` is not a multiple of ``f``).

    * ``method="gaussian"``: a Gaussian PSF evaluated at the block centre.
      Give either ``sigma``, the standard deviation in **high-res** pixels,
      or ``mtf_nyquist``, the gain ``g`` of the MTF at the low-res Nyquist
      frequency ``1 / (2 f)`` cycles per high-res pixel, converted with
      ``sigma = f / pi * sqrt(-2 ln g)`` (:func:`mtf_to_sigma`). Volumes:
      e.g. ``sigma=fwhm_to_sigma(2.0)`` with ``factor=2`` on every axis.
      ``sigma=0`` samples the block centre without blur (linear interpolation
      between the two centre pixels for even factors).
    * ``method="box"``: pixel integration, i.e. the mean of the high-res
      pixels in each block (area-weighted for non-integer factors).

    Borders use half-sample symmetric reflection. Factors need not be
    integers, and may differ per axis (1 leaves an axis alone, unless a
    Gaussian sigma blurs it).

    Mask: with ``mask`` (boolean, True = valid; its trailing dimensions are
    the spatial shape of ``x``, leading ones broadcast, e.g. ``(H, W)``,
    ``(1, H, W)``, ``(C, H, W)``), the degraded mask is returned too: a
    low-res pixel is valid only if *every* high-res pixel that contributes to
    it (non-zero weight: within ``truncate`` sigma for the Gaussian, inside
    the block for the box) is valid. The image values at invalid pixels are
    not altered before blurring; the degraded mask tells which outputs they
    may have touched.

    References:
        L. Wald, T. Ranchin, M. Mangolini, "Fusion of satellite images of
        different spatial resolutions: assessing the quality of resulting
        images", PE&RS 63(6), 1997 (Wald's protocol: degrade by the scale
        factor, then evaluate). B. Aiazzi et al., "MTF-tailored multiscale
        fusion of high-resolution MS and Pan imagery", PE&RS 72(5), 2006
        (Gaussian PSF matched to the MTF gain at Nyquist). C. Lanaras et al.,
        "Super-resolution of Sentinel-2 images: learning a globally applicable
        deep neural network" (DSen2), ISPRS J. 146, 2018.

    Args:
        x: float tensor ``(C, *spatial)`` or ``(B, C, *spatial)`` with 1-3
            spatial dimensions.
        factor: decimation factor per spatial axis (one value for all), >= 1.
        sigma: Gaussian PSF std in high-res pixels (one or per axis), >= 0.
        mtf_nyquist: MTF gain at the low-res Nyquist in (0, 1) (one or per axis).
        method: ``"gaussian"`` or ``"box"``.
        mask: optional boolean validity mask (see above).
        spatial_dims: number of spatial dimensions. Needed only when it cannot
            be told from ``x`` and ``factor``: a 4D tensor with a scalar factor
            is ``(B, C, H, W)`` or ``(C, X, Y, Z)``.
        truncate: Gaussian support in standard deviations, > 0.

    Returns:
        The low-res tensor (input dtype), or ``(low_res, low_res_mask)`` when
        a mask is given.

    Raises:
        ConfigError: invalid tensor, factor, PSF parameters (both or neither
            of sigma and mtf_nyquist for the Gaussian, any for the box),
            method, spatial_dims or mask.
    """
    t, out_dtype = _as_float_tensor(x)
    n_given = None if _is_scalar(factor) else len(_as_list(factor, "factor"))
    sd = _resolve_spatial_dims(t.ndim, tuple(t.shape), spatial_dims, n_given)
    facs = [_number(f, "factor", minimum=1.0) for f in _per_axis(factor, sd, "factor")]
    tr = _number(truncate, "truncate", minimum=0.0, strict=True)
    if method == "gaussian":
        if (sigma is None) == (mtf_nyquist is None):
            raise ConfigError(
                "method='gaussian' needs exactly one of sigma= (PSF std in high-res pixels) or "
                f"mtf_nyquist= (MTF gain at the low-res Nyquist, in (0, 1)); got sigma={sigma!r}, "
                f"mtf_nyquist={mtf_nyquist!r}"
            )
        if sigma is not None:
            sigmas = [_number(s, "sigma", minimum=0.0) for s in _per_axis(sigma, sd, "sigma")]
        else:
            gains = _per_axis(mtf_nyquist, sd, "mtf_nyquist")
            sigmas = [mtf_to_sigma(g, f) for g, f in zip(gains, facs)]
    elif method == "box":
        if sigma is not None or mtf_nyquist is not None:
            raise ConfigError("method='box' takes no sigma or mtf_nyquist (the PSF is the pixel footprint)")
        sigmas = [0.0] * sd
    else:
        raise ConfigError(f"method must be 'gaussian' or 'box', got {method!r}")

    spatial = tuple(t.shape[-sd:])
    m_inv = None if mask is None else _mask_inverse(mask, spatial, t.device)

    for i in range(sd):
        dim = t.ndim - sd + i
        f, s = facs[i], sigmas[i]
        if f == 1.0 and s == 0.0:
            continue
        pos = _positions(t.shape[dim], f)
        if method == "box":
            taps, w = _box_taps(pos, f)
        else:
            taps, w = _gaussian_taps(pos, s, tr)
        t = _apply_taps(t, dim, taps, w)
        if m_inv is not None:
            mdim = m_inv.ndim - sd + i
            m_inv = _mask_taps(m_inv, mdim, taps, w)
    y = t.to(out_dtype)
    if m_inv is None:
        return y
    return y, m_inv == 0


def _decimation_kernel(r: int, sigma: float, method: str, truncate: float) -> tuple[int, np.ndarray]:
    """First tap offset from ``j r`` and the weights of decimation by an integer ``r``.

    The taps of :func:`psf_decimate` for integer factors: output ``j`` sits at
    input ``j r + (r - 1) / 2``; Gaussian weights sampled within ``truncate``
    sigma (the nearest tap always kept), normalised to 1 (``sigma == 0``:
    linear interpolation); the box averages the ``r`` pixels of the block.
    """
    if method == "box":
        return 0, np.full(r, 1.0 / r)
    taps, w = _gaussian_taps(np.array([(r - 1) / 2.0]), sigma, truncate)
    keep = np.flatnonzero(w[0] > 0)
    return int(taps[0, keep[0]]), w[0, keep[0] : keep[-1] + 1]


def _decimate_axis(y: torch.Tensor, dim: int, r: int, kernels: list[tuple[int, np.ndarray]], support: bool) -> torch.Tensor:
    """One axis of :func:`decimate`: per-channel strided taps over whole contiguous slabs."""
    c = y.shape[0]
    y = y.movedim(dim, 1).contiguous()
    n = y.shape[1]
    m = output_size(n, r)
    start = min(k[0] for k in kernels)
    length = max(k[0] + len(k[1]) for k in kernels) - start
    wt = np.zeros((c, length))
    for ch, (s0, w) in enumerate(kernels):
        wt[ch, s0 - start : s0 - start + len(w)] = (w > 0) if support else w
    idx = _reflect(np.arange(start, (m - 1) * r + start + length), n)
    padded = y.index_select(1, torch.from_numpy(idx).to(y.device))
    bshape = (c,) + (1,) * (y.ndim - 1)
    out = torch.zeros((c, m) + tuple(y.shape[2:]), dtype=y.dtype, device=y.device)
    for k in range(length):
        wk = torch.from_numpy(wt[:, k]).to(device=y.device, dtype=y.dtype)
        if bool(wk.any()):
            out.add_(padded[:, k : k + (m - 1) * r + 1 : r] * wk.reshape(bshape))
    return out.movedim(1, dim).contiguous()


def decimate(
    x: torch.Tensor,
    factors: Sequence[int],
    sigmas: Sequence[float] | None = None,
    *,
    method: Literal["gaussian", "box"] = "gaussian",
    valid: torch.Tensor | None = None,
    truncate: float = 4.0,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Tile-wise separable decimation of ``(C, *spatial)`` by integer factors, one PSF sigma per channel.

    The same sample positions, taps and borders (half-sample symmetric) as
    :func:`psf_decimate` for integer factors, equal to it to float rounding,
    but applied as strided per-channel taps over whole contiguous slabs,
    which is far cheaper than banded matrix products on large raster tiles
    (what streamed consistency checks need). The sigma of a channel applies
    to every axis with a factor > 1 (axes with factor 1 are left alone).

    Args:
        x: float ``(C, *spatial)``; the spatial dimensions are ``len(factors)``.
        factors: integer factor per spatial axis, >= 1.
        sigmas: Gaussian sigma per channel in high-resolution pixels (e.g.
            :func:`band_sigmas`); ignored for the box.
        method: ``"gaussian"`` or ``"box"`` (pixel integration).
        valid: optional boolean validity, ``(*spatial)`` or ``(C, *spatial)``:
            the low-resolution validity is returned too (valid only if every
            contributing input is valid), per channel.
        truncate: Gaussian support in standard deviations.

    Returns:
        ``(C, *round(spatial / factors))`` in the input dtype, or
        ``(low_res, low_res_valid (C, ...))`` with ``valid``.

    Raises:
        ConfigError: non-integer factors, a sigma count that does not match
            the channels, or an invalid method.
    """
    t, out_dtype = _as_float_tensor(x)
    nd = len(factors)
    if t.ndim != nd + 1:
        raise ConfigError(f"x must be (C, *spatial) with {nd} spatial axes, got shape {tuple(t.shape)}")
    if any(isinstance(f, bool) or float(f) != int(f) or int(f) < 1 for f in factors):
        raise ConfigError(f"decimate needs integer factors >= 1, got {list(factors)}; use psf_decimate")
    if method not in ("gaussian", "box"):
        raise ConfigError(f"method must be 'gaussian' or 'box', got {method!r}")
    c = t.shape[0]
    sig = [0.0] * c if method == "box" else [float(s) for s in (sigmas if sigmas is not None else [])]
    if len(sig) != c:
        raise ConfigError(f"need one sigma per channel ({c}), got {0 if sigmas is None else len(sigmas)}")
    inval = None
    if valid is not None:
        inval = _mask_inverse(valid, tuple(t.shape[1:]), t.device).expand(t.shape).contiguous()
    for a, f in enumerate(int(v) for v in factors):
        if f == 1:
            continue
        kernels = [_decimation_kernel(f, s, method, truncate) for s in sig]
        t = _decimate_axis(t, 1 + a, f, kernels, support=False)
        if inval is not None:
            inval = _decimate_axis(inval, 1 + a, f, kernels, support=True)
    y = t.to(out_dtype)
    return y if inval is None else (y, inval == 0)


# --------------------------------------------------------------------------
# noise
# --------------------------------------------------------------------------


def add_noise(
    x: torch.Tensor,
    *,
    sigma: float,
    kind: Literal["gaussian", "rician"] = "gaussian",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Add Gaussian or Rician noise.

    * ``"gaussian"``: ``x + sigma * n`` with ``n ~ N(0, 1)`` i.i.d.
      (CT, reflectance, any real-valued data).
    * ``"rician"``: ``sqrt((x + sigma * n1)^2 + (sigma * n2)^2)``, the
      magnitude of the complex signal ``x`` with i.i.d. Gaussian noise of std
      ``sigma`` in the real and imaginary channels: the noise of magnitude MR
      images. ``x`` is the noise-free magnitude (>= 0). On zero signal the
      result is Rayleigh distributed with mean ``sigma * sqrt(pi / 2)``; at
      high SNR it tends to ``N(x, sigma^2)`` (Gudbjartsson & Patz 1995).

    Reference:
        H. Gudbjartsson, S. Patz, "The Rician distribution of noisy MRI
        data", MRM 34(6), 1995.

    Args:
        x: float tensor, any shape.
        sigma: noise standard deviation (per real channel for Rician), >= 0,
            in the intensity unit of ``x``.
        kind: ``"gaussian"`` or ``"rician"``.
        generator: optional ``torch.Generator`` for reproducible noise (on
            the device of ``x``).

    Returns:
        A new noisy tensor with the dtype of ``x``.

    Raises:
        ConfigError: invalid tensor, sigma or kind.
    """
    t, out_dtype = _as_float_tensor(x)
    s = _number(sigma, "sigma", minimum=0.0)
    if kind not in ("gaussian", "rician"):
        raise ConfigError(f"kind must be 'gaussian' or 'rician', got {kind!r}")
    n1 = torch.randn(t.shape, generator=generator, dtype=t.dtype, device=t.device)
    if kind == "gaussian":
        return (t + s * n1).to(out_dtype)
    n2 = torch.randn(t.shape, generator=generator, dtype=t.dtype, device=t.device)
    return torch.sqrt((t + s * n1) ** 2 + (s * n2) ** 2).to(out_dtype)

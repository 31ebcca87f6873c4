"""k-space truncation: an MR acquisition at a lower matrix.

:func:`kspace_truncate` keeps the central part of k-space, optionally
windowed (Hann, Tukey), on the same grid (zero-filled) or decimated;
:func:`kspace_lowres` is the profile's k-space degradation (central k-space
kept, then decimated), which the recipe of :mod:`medsat_sr.degrade` applies
for ``degradation.model: kspace`` and re-exports. The sampling convention of
a decimated output is the one of :mod:`medsat_sr.psf` (FOV-preserving,
``round(n / f)`` samples); the argument checks come from there too.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch

from medsat_sr.errors import ConfigError
from medsat_sr.psf import _as_list, _is_scalar, _norm_axis, _number, output_size

__all__ = ["kspace_truncate", "kspace_lowres"]


# --------------------------------------------------------------------------
# k-space truncation
# --------------------------------------------------------------------------


def _kspace_weights(n: int, m: int, window: str | None, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """Signed frequencies (FFT order) and their weights for keeping ``m`` of ``n`` frequencies."""
    k = np.fft.fftfreq(n, d=1.0 / n).round().astype(np.int64)  # 0, 1, ..., -1 (integers)
    if m >= n:
        w = np.ones(n)
        half = n / 2.0
    else:
        half = m / 2.0
        w = np.where(np.abs(k) < half, 1.0, 0.0)
        if m % 2 == 0:
            # keep both +-m/2 at half weight: symmetric, so a real input stays real
            w = np.where(np.abs(k) == m // 2, 0.5, w)
    if window is not None:
        u = np.abs(k) / half
        if window == "hann":
            win = 0.5 * (1.0 + np.cos(np.pi * np.clip(u, 0.0, 1.0)))
        else:  # tukey
            if alpha == 0.0:
                win = np.ones(n)
            else:
                edge = 1.0 - alpha
                taper = 0.5 * (1.0 + np.cos(np.pi * np.clip((u - edge) / alpha, 0.0, 1.0)))
                win = np.where(u <= edge, 1.0, taper)
        w = w * np.where(u <= 1.0, win, 0.0)
    return k, w


def kspace_truncate(
    x: torch.Tensor,
    axes: int | Sequence[int],
    factor: float | Sequence[float],
    *,
    window: Literal["none", "hann", "tukey"] | None = None,
    tukey_alpha: float = 0.5,
    decimate: bool = False,
    output: Literal["magnitude", "real", "complex"] = "magnitude",
) -> torch.Tensor:
    """Simulate a lower-resolution MR acquisition by k-space truncation.

    The image is Fourier transformed along ``axes`` and only the central
    ``m = round(n / factor)`` frequencies of each axis are kept (``|k| < m/2``;
    for even ``m`` the two bins ``±m/2`` are kept at half weight, so that a
    real image stays real). An optional window tapers the kept band: Hann
    (``0.5 (1 + cos(pi u))``, ``u = |k| / (m/2)``) or Tukey (flat for
    ``u <= 1 - alpha``, cosine taper beyond; alpha 1 = Hann, 0 = none),
    trading Gibbs ringing for blur. The DC weight is always 1.

    * ``decimate=False``: the inverse FFT on the original grid, i.e. the
      zero-filled reconstruction a scanner would interpolate to (same shape,
      lower resolution, Gibbs ringing).
    * ``decimate=True``: the inverse FFT of the kept ``m`` frequencies, an
      ``m``-sample grid covering the same field of view (effective factor
      ``n / m``). A linear phase places sample ``j`` at the input index
      ``(j + 0.5) n/m - 0.5``, the FOV-preserving grid of
      ``geometry.scale_affine(affine, geometry.effective_scale(shape, 1/factor))``.

    Normalisation: the spectrum is scaled by ``m / n`` per decimated axis, so
    the **mean intensity is preserved** in both modes; the energy (sum of
    squares) drops by the energy of the removed frequencies (Parseval).

    Output: MR images are magnitudes, so a real input gives ``|ifft|`` by
    default (``output="magnitude"``; note this rectifies negative values and
    Gibbs undershoots, as on a scanner). ``"real"`` returns the real part
    (use it for signed data), ``"complex"`` the complex image.

    References:
        E. M. Haacke et al., "Magnetic Resonance Imaging: Physical Principles
        and Sequence Design", Wiley 1999 (k-space sampling, truncation,
        filtering). A. S. Chaudhari et al., "Super-resolution
        musculoskeletal MRI using deep learning", MRM 80(5), 2018 (training
        pairs by k-space truncation).

    Args:
        x: float or complex tensor ``(C, *spatial)`` or ``(B, C, *spatial)``.
        axes: tensor axis or axes to truncate (negative values count from the end).
        factor: resolution reduction factor >= 1, one or one per axis.
        window: ``None`` (or ``"none"``, as in domain profiles), ``"hann"``
            or ``"tukey"``.
        tukey_alpha: Tukey taper fraction in [0, 1].
        decimate: return the smaller grid instead of the same grid.
        output: ``"magnitude"``, ``"real"`` or ``"complex"``.

    Returns:
        The degraded tensor (real dtype of the input, or complex for
        ``output="complex"``).

    Raises:
        ConfigError: invalid tensor, axes, factor, window or output.
    """
    if not isinstance(x, torch.Tensor):
        raise ConfigError(f"x must be a torch.Tensor, got {type(x).__name__}")
    t = x.as_subclass(torch.Tensor)
    if not (t.is_floating_point() or t.is_complex()):
        raise ConfigError(f"x must be a floating-point or complex tensor, got dtype {t.dtype}")
    if t.ndim < 2:
        raise ConfigError(f"x must be (C, *spatial) or (B, C, *spatial), got shape {tuple(t.shape)}")
    ax_list = [axes] if isinstance(axes, (int, np.integer)) and not isinstance(axes, bool) else _as_list(axes, "axes")
    if not ax_list:
        raise ConfigError("axes must name at least one axis")
    dims = [_norm_axis(a, t.ndim, "axes") for a in ax_list]
    if len(set(dims)) != len(dims):
        raise ConfigError(f"axes must be distinct, got {ax_list}")
    facs = [factor] * len(dims) if _is_scalar(factor) else _as_list(factor, "factor")
    if len(facs) != len(dims):
        raise ConfigError(f"factor must have 1 or {len(dims)} values (one per axis), got {len(facs)}")
    facs_f = [_number(f, "factor", minimum=1.0) for f in facs]
    if window not in (None, "none", "hann", "tukey"):
        raise ConfigError(f"window must be None, 'none', 'hann' or 'tukey', got {window!r}")
    win = None if window == "none" else window
    alpha = _number(tukey_alpha, "tukey_alpha", minimum=0.0)
    if alpha > 1.0:
        raise ConfigError(f"tukey_alpha must be in [0, 1], got {tukey_alpha!r}")
    if output not in ("magnitude", "real", "complex"):
        raise ConfigError(f"output must be 'magnitude', 'real' or 'complex', got {output!r}")

    real_dtype = t.real.dtype if t.is_complex() else t.dtype
    if real_dtype in (torch.float16, torch.bfloat16):
        t = t.to(torch.float32)
    spec = torch.fft.fftn(t, dim=dims)
    cdtype = spec.dtype
    for dim, f in zip(dims, facs_f):
        n = t.shape[dim]
        m = output_size(n, f)
        k, w = _kspace_weights(n, m, win, alpha)
        shape = [1] * spec.ndim
        if not decimate:
            shape[dim] = n
            spec = spec * torch.from_numpy(w).to(device=spec.device, dtype=cdtype).reshape(shape)
            continue
        # shift so that output sample j lies at input index (j + 0.5) n/m - 0.5
        delta = (n / m - 1.0) / 2.0
        coef = w * np.exp(2j * np.pi * k * delta / n) * (m / n)
        sel = np.flatnonzero(w != 0)
        target = np.mod(k[sel], m)
        shape[dim] = sel.size
        src = spec.index_select(dim, torch.from_numpy(sel).to(spec.device))
        src = src * torch.from_numpy(coef[sel]).to(device=spec.device, dtype=cdtype).reshape(shape)
        new_shape = list(spec.shape)
        new_shape[dim] = m
        out = torch.zeros(new_shape, dtype=cdtype, device=spec.device)
        spec = out.index_add_(dim, torch.from_numpy(target).to(spec.device), src)
    img = torch.fft.ifftn(spec, dim=dims)
    if output == "complex":
        return img
    res = img.abs() if output == "magnitude" else img.real
    return res.to(real_dtype)


def kspace_lowres(
    x: torch.Tensor,
    factors: Sequence[int],
    *,
    fraction: float | None = None,
    window: str | None = None,
    tukey_alpha: float = 0.5,
) -> torch.Tensor:
    """A low-resolution MR acquisition: central k-space kept, then decimated by ``factors``.

    The one k-space degradation of a profile, shared by training pairs
    (:mod:`medsat_sr.data`) and evaluation (:mod:`medsat_sr.evaluate`).

    Args:
        x: ``(C, *spatial)`` real image.
        factors: factor per spatial axis (1: axis untouched); a non-integer
            factor keeps ``round(n / f)`` samples (:func:`kspace_truncate`).
        fraction: fraction of k-space kept along the decimated axes; ``None``
            or ``1/scale``: exactly what decimation keeps. A smaller fraction
            truncates further first (partial-Fourier-like blur).
        window, tukey_alpha: k-space window (see :func:`kspace_truncate`).

    Returns:
        The decimated real image.

    Raises:
        ConfigError: a fraction larger than ``1/scale`` (decimation would alias).
    """
    axes = [1 + i for i, f in enumerate(factors) if float(f) > 1.0]
    facs = [float(f) for f in factors if float(f) > 1.0]
    if not facs:
        return x.as_subclass(torch.Tensor).clone()
    y = x
    if fraction is not None and abs(fraction * max(facs) - 1.0) > 1e-6:
        if fraction * max(facs) > 1.0:
            raise ConfigError(
                f"degradation.kspace.fraction {fraction} keeps more than 1/scale of k-space: decimating would alias"
            )
        y = kspace_truncate(y, axes, 1.0 / fraction, window=window, tukey_alpha=tukey_alpha, output="real")
    return kspace_truncate(y, axes, facs, window=window, tukey_alpha=tukey_alpha, decimate=True, output="real")

"""THE degradation recipe: one library for training pairs *and* evaluation.

The one recipe of a domain profile, which training pairs (:mod:`medsat_sr.data`),
the evaluation protocol (:mod:`medsat_sr.evaluate`) and the consistency check
of inference all call: :func:`degrade` (HR -> LR from profile, factors, bands,
valid mask), resolved by :func:`recipe` into a :class:`Recipe` that
:meth:`Recipe.apply` runs and :meth:`Recipe.describe` / :meth:`Recipe.record`
report. Its rules live here once: :func:`slice_thickness` (the slice
thickness of a volume) and :func:`band_sigmas` (the PSF sigma per band, with
the mean MTF for a band the profile's table misses).

The operators it composes live in :mod:`medsat_sr.psf` (:func:`slice_profile`,
:func:`psf_decimate`, :func:`decimate`, the tile-wise integer decimation of
streamed rasters equal to :func:`psf_decimate`, :func:`add_noise` and the
PSF arithmetic) and :mod:`medsat_sr.kspace` (:func:`kspace_truncate`,
:func:`kspace_lowres`); this module re-exports them, so
``from medsat_sr.degrade import psf_decimate`` keeps working. Their sampling
convention (FOV-preserving, ``round(n / f)`` samples, half-sample symmetric
borders) is documented in :mod:`medsat_sr.psf`.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np
import torch

from medsat_sr.errors import ConfigError
from medsat_sr.image import Key
from medsat_sr.kspace import kspace_lowres, kspace_truncate
from medsat_sr.psf import (
    FWHM_PER_SIGMA,
    _as_float_tensor,
    _as_list,
    _box_taps,
    _mask_taps,
    _norm_axis,
    _number,
    _positions,
    fwhm_to_sigma,
    gaussian_kernel1d,
    mtf_to_sigma,
    output_size,
    sigma_to_fwhm,
    sigma_to_mtf,
    slice_profile,
)
from medsat_sr.psf_decimate import add_noise, decimate, psf_decimate

__all__ = [
    "FWHM_PER_SIGMA",
    "fwhm_to_sigma",
    "sigma_to_fwhm",
    "mtf_to_sigma",
    "sigma_to_mtf",
    "gaussian_kernel1d",
    "output_size",
    "slice_profile",
    "kspace_truncate",
    "kspace_lowres",
    "psf_decimate",
    "add_noise",
    "DEGRADATIONS",
    "DEFAULT_FWHM_LR_PIXELS",
    "DICOM_SLICE_AXIS",
    "slice_thickness",
    "band_sigmas",
    "decimate",
    "Recipe",
    "recipe",
    "degrade",
    "describe",
]

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------
# the one recipe: profile + factors -> low resolution
# --------------------------------------------------------------------------

#: PSF width when neither a profile nor its band gives one: a Gaussian whose FWHM is
#: one low-resolution pixel (the :class:`~medsat_sr.domains.PSFSpec` default).
DEFAULT_FWHM_LR_PIXELS = 1.0

#: The voxel axis along which the DICOM reader stacks its slices (``(C, X, Y, Z)``).
DICOM_SLICE_AXIS = 2

#: Factors within this of 1 leave an axis alone.
_UNIT_TOL = 1e-9


def _positive_or_none(value: Any) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) and v > 0 else None


def _header_thickness(header: Any) -> Any:
    """``SliceThickness`` of a DICOM header (a pydicom data set or a mapping), else ``None``."""
    getter = getattr(header, "get", None)
    if not callable(getter):
        return None
    try:
        return getter("SliceThickness")
    except Exception:  # noqa: BLE001 - a header of another format answers anything
        return None


def slice_thickness(image: Any, axis: int) -> float:
    """The slice thickness (mm) of a volume along ``axis``: the one rule of training, evaluation and inference.

    1. ``meta["slice_thickness"]`` (recorded by :mod:`medsat_sr.evaluate` for
       the volumes it degrades, or set by a user) belongs to
       ``meta["slice_axis"]`` when the meta names one, else to the thickest
       axis (largest spacing).
    2. Else a DICOM ``SliceThickness`` (source format ``dicom`` with its
       header) belongs to :data:`DICOM_SLICE_AXIS`, the axis along which the
       reader stacks the slices, whether or not it is the thickest: an
       overlapping reconstruction (thickness > spacing) can have its slice
       axis finer than the in-plane pixels.
    3. Else, and on every other axis: the spacing (contiguous slices).

    Args:
        image: a volume (anything with a ``meta`` mapping) or its meta mapping.
        axis: spatial axis, 0-2.

    Returns:
        The thickness in mm, > 0.

    Raises:
        ConfigError: ``axis`` out of range.
    """
    meta = image if isinstance(image, Mapping) else (getattr(image, "meta", None) or {})
    spacing = [float(v) for v in (meta.get(Key.SPACING) or (1.0, 1.0, 1.0))]
    a = _norm_axis(axis, len(spacing))
    value, owner = meta.get("slice_thickness"), None
    if value is not None:
        named = meta.get("slice_axis")
        owner = int(named) if named is not None else int(np.argmax(spacing))
    elif meta.get(Key.SOURCE_FORMAT) == "dicom" and meta.get(Key.HEADER) is not None:
        value, owner = _header_thickness(meta.get(Key.HEADER)), DICOM_SLICE_AXIS
    v = _positive_or_none(value)
    return v if v is not None and a == owner else spacing[a]


@functools.lru_cache(maxsize=256)
def _warn_mean_mtf(domain: str, band: str | None, gain: float) -> None:
    """Log once per (domain, band) that the mean MTF stands in for a missing one."""
    logger.warning("band %r has no MTF in domain %r; using the mean of its MTFs, %.3f", band, domain, gain)


def band_sigmas(
    profile: Any, ratio: float, bands: Sequence[str | None] | None = None, *, n: int | None = None
) -> list[float]:
    """Gaussian PSF sigma (high-resolution pixels) per band for decimation by ``ratio``: THE band rule.

    * the band's own MTF at Nyquist, or its group's, or the profile's single
      value, or the profile's FWHM (:meth:`~medsat_sr.domains.DomainProfile.psf_sigma`);
    * a band the profile's per-band MTF table does not cover (or an unnamed
      band): the **mean** of the table's gains (logged once). The band is
      from the same instrument, whose measured gains bracket it; the generic
      FWHM of one low-resolution pixel (gain 0.41) lies outside the range of
      every multispectral table we ship;
    * no profile: FWHM :data:`DEFAULT_FWHM_LR_PIXELS` low-resolution pixel.

    Args:
        profile: a :class:`~medsat_sr.domains.DomainProfile` or ``None``.
        ratio: decimation factor (low-res pixel / high-res pixel), >= 1.
        bands: band names (``None`` entries: unnamed); default ``n`` unnamed bands.
        n: number of bands when ``bands`` is not given (default 1).

    Returns:
        One sigma per band.

    Raises:
        ConfigError: a box PSF (no sigma: use ``method="box"``), or ``ratio < 1``.
    """
    names: list[str | None] = list(bands) if bands is not None else [None] * (n or 1)
    r = _number(ratio, "ratio", minimum=1.0)
    if profile is None:
        return [fwhm_to_sigma(DEFAULT_FWHM_LR_PIXELS * r)] * len(names)
    psf = profile.degradation.psf
    if psf.shape != "gaussian":
        raise ConfigError(f"domain {profile.name!r} has a {psf.shape!r} PSF, which has no sigma; decimate with method='box'")
    out = []
    for name in names:
        try:
            out.append(float(profile.psf_sigma(r, band=name)))
        except ConfigError:
            if not (isinstance(psf.mtf_nyquist, Mapping) and psf.mtf_nyquist):
                raise
            gain = float(np.mean([float(v) for v in psf.mtf_nyquist.values()]))
            _warn_mean_mtf(str(profile.name), name, gain)
            out.append(mtf_to_sigma(gain, r))
    return out


@dataclass(frozen=True)
class Recipe:
    """A profile's degradation resolved for one image, in high-resolution pixels: what :func:`degrade` applies.

    Made by :func:`recipe`; :meth:`apply` runs it, :meth:`describe` and
    :meth:`record` say what it is (trust records, evaluation reports).

    Attributes:
        model: ``"slice_profile"``, ``"psf"`` or ``"kspace"``.
        factors: reduction factor per spatial axis.
        axis: ``slice_profile``: the spatial axis across the slices.
        slice_shape: ``slice_profile``: ``"gaussian"`` or ``"rect"``.
        slice_spacing: ``slice_profile``: distance between slices, HR pixels.
        slice_fwhm: ``slice_profile``: profile FWHM (rect: width), HR pixels.
        psf: ``psf``: ``"gaussian"`` or ``"box"``.
        sigmas: ``psf`` Gaussian: sigma per channel and spatial axis, HR pixels.
        fraction, window, tukey_alpha: ``kspace`` parameters (:func:`kspace_lowres`).
        mtf_nyquist, fwhm_lr_pixels: the profile's PSF width, as given.
        spacing: the high-resolution spacing (mm) the recipe was resolved for.
        notes: how each parameter was chosen.
    """

    model: Literal["slice_profile", "psf", "kspace"]
    factors: tuple[float, ...]
    axis: int | None = None
    slice_shape: str = "gaussian"
    slice_spacing: float | None = None
    slice_fwhm: float | None = None
    psf: Literal["gaussian", "box"] = "gaussian"
    sigmas: tuple[tuple[float, ...], ...] = ()
    fraction: float | None = None
    window: str | None = None
    tukey_alpha: float = 0.5
    mtf_nyquist: Any = None
    fwhm_lr_pixels: float | None = None
    spacing: tuple[float, ...] | None = None
    notes: Mapping[str, str] = field(default_factory=dict)

    def on_axis(self, axis: int, ndim: int | None = None) -> Recipe:
        """The same slice profile across another spatial ``axis`` (of ``ndim`` spatial axes)."""
        if self.model != "slice_profile" or self.slice_spacing is None:
            raise ConfigError(f"on_axis moves a slice profile; this recipe is {self.model!r}")
        nd = len(self.factors) if ndim is None else int(ndim)
        facs = [1.0] * nd
        facs[_norm_axis(axis, nd)] = self.slice_spacing
        return replace(self, axis=_norm_axis(axis, nd), factors=tuple(facs))

    def apply(self, hr: torch.Tensor, valid: Any = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(low_res, low_res_valid or None)`` of ``hr`` ``(C, *spatial)`` (see :func:`degrade`)."""
        nd = len(self.factors)
        t, _ = _as_float_tensor(hr, "hr")
        if t.ndim != nd + 1:
            raise ConfigError(f"hr must be (C, *spatial) with {nd} spatial axes (one per factor), got {tuple(t.shape)}")
        mask = None if valid is None else torch.as_tensor(np.asarray(valid) if not isinstance(valid, torch.Tensor) else valid)
        if mask is not None and mask.dtype != torch.bool:
            raise ConfigError(f"valid must be boolean (True = valid), got dtype {mask.dtype}")
        if self.model == "slice_profile":
            if self.axis is None or self.slice_fwhm is None or self.slice_spacing is None:
                raise ConfigError("a slice_profile recipe needs axis, slice_fwhm and slice_spacing")
            res = slice_profile(hr, 1 + self.axis, thickness=self.slice_fwhm, spacing=self.slice_spacing,
                                in_spacing=1.0, profile=self.slice_shape, mask=mask)  # type: ignore[arg-type]
            return (res, None) if mask is None else res  # type: ignore[return-value]
        if self.model == "kspace":
            lr = kspace_lowres(t, self.factors, fraction=self.fraction, window=self.window,
                               tukey_alpha=self.tukey_alpha)
            return lr, None if mask is None else _footprint_valid(mask, self.factors)
        if self.psf == "box":
            res = psf_decimate(hr, list(self.factors), method="box", mask=mask, spatial_dims=nd)
            return (res, None) if mask is None else res  # type: ignore[return-value]
        return self._gaussian(hr, mask)

    def _gaussian(self, hr: torch.Tensor, mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Gaussian PSF + decimation, channels with the same sigmas together."""
        nd = len(self.factors)
        c = hr.shape[0]
        if len(self.sigmas) != c:
            raise ConfigError(f"the recipe has PSF sigmas for {len(self.sigmas)} channels; hr has {c}")
        groups: dict[tuple[float, ...], list[int]] = {}
        for ch, s in enumerate(self.sigmas):
            groups.setdefault(tuple(s), []).append(ch)
        per_channel = mask is not None and mask.ndim == nd + 1
        outs: list[torch.Tensor | None] = [None] * c
        masks: list[torch.Tensor | None] = [None] * c
        joint: torch.Tensor | None = None
        for sig, chans in groups.items():
            m = None if mask is None else (mask[chans] if per_channel else mask)
            res = psf_decimate(hr[chans], list(self.factors), sigma=list(sig), mask=m, spatial_dims=nd)
            y, ym = (res, None) if m is None else res  # type: ignore[misc]
            for i, ch in enumerate(chans):
                outs[ch] = y[i]
                if ym is not None and per_channel:
                    masks[ch] = ym[i]
            if ym is not None and not per_channel:
                joint = ym if joint is None else joint & ym
        lr = torch.stack([o for o in outs if o is not None])
        if mask is None:
            return lr, None
        return lr, torch.stack([m for m in masks if m is not None]) if per_channel else joint

    def describe(self) -> str:
        """One line that says what was applied (for the trust record)."""
        facs = [round(f, 4) for f in self.factors]
        if self.model == "slice_profile":
            mm = "" if self.spacing is None or self.axis is None else (
                f" = {self.slice_fwhm * self.spacing[self.axis]:g} mm at {self.slice_spacing * self.spacing[self.axis]:g} mm")
            text = (f"slice_profile across axis {self.axis} ({self.slice_shape}, FWHM {self.slice_fwhm:g} px, "
                    f"spacing {self.slice_spacing:g} px{mm})")
        elif self.model == "kspace":
            text = (f"kspace: central k-space kept (fraction {self.fraction}, window {self.window}), "
                    f"decimated by {facs}")
        elif self.psf == "box":
            text = f"box PSF (pixel integration) + decimation by {facs}"
        else:
            per = sorted({tuple(round(v, 4) for v in s) for s in self.sigmas})
            text = f"gaussian PSF (sigma per axis {per if len(per) > 1 else list(per[0])} HR px) + decimation by {facs}"
        return text + "".join(f"; {k}: {v}" for k, v in self.notes.items())

    def record(self) -> dict[str, Any]:
        """The recipe as a JSON-ready mapping (evaluation reports, trust records)."""
        rec: dict[str, Any] = {"model": self.model, "factors": [float(f) for f in self.factors]}
        if self.model == "slice_profile":
            rec.update(axis=self.axis, profile=self.slice_shape, fwhm_voxels=self.slice_fwhm,
                       spacing_voxels=self.slice_spacing, function="medsat_sr.degrade.slice_profile")
        elif self.model == "kspace":
            rec.update(fraction=self.fraction, window=self.window, tukey_alpha=self.tukey_alpha, output="real",
                       function="medsat_sr.degrade.kspace_lowres")
        elif self.psf == "box":
            rec.update(psf="box", function="medsat_sr.degrade.psf_decimate")
        else:
            top = int(np.argmax(self.factors))
            rec.update(psf="gaussian", mtf_nyquist=self.mtf_nyquist, fwhm_lr_pixels=self.fwhm_lr_pixels,
                       sigma_hr_pixels=[float(s[top]) for s in self.sigmas],
                       sigma_hr_pixels_per_axis=[[float(v) for v in s] for s in self.sigmas],
                       function="medsat_sr.degrade.psf_decimate")
        rec["description"] = self.describe()
        if self.notes:
            rec["rules"] = dict(self.notes)
        return rec


def _footprint_valid(mask: torch.Tensor, factors: Sequence[float]) -> torch.Tensor:
    """Validity on the decimated grid: valid only if the whole low-res pixel footprint is."""
    nd = len(factors)
    m_inv = (~mask).to(torch.float32)
    for i, f in enumerate(factors):
        if f <= 1.0 + _UNIT_TOL:
            continue
        dim = m_inv.ndim - nd + i
        taps, w = _box_taps(_positions(m_inv.shape[dim], f), f)
        m_inv = _mask_taps(m_inv, dim, taps, w)
    return m_inv == 0


def _mm_to_px(value: float, spacing: tuple[float, ...] | None, axis: int, what: str) -> float:
    if spacing is None:
        raise ConfigError(f"{what} is given in mm; pass the high-resolution spacing= to convert it to pixels")
    return float(value) / spacing[axis]


def _slice_recipe(spec: Any, facs: list[float], axis: int, spacing: tuple[float, ...] | None,
                  thickness: float | None, notes: dict[str, str]) -> Recipe:
    """The slice-profile parameters in high-resolution pixels."""
    if isinstance(spec.spacing, (int, float)) and not isinstance(spec.spacing, bool):
        step = _mm_to_px(spec.spacing, spacing, axis, "degradation.slice_profile.spacing")
        notes["spacing_rule"] = f"degradation.slice_profile.spacing {float(spec.spacing):g} mm"
    else:
        step = facs[axis]
        notes["spacing_rule"] = "the factor (slice spacing from the header)"
    if isinstance(spec.fwhm, (int, float)) and not isinstance(spec.fwhm, bool):
        fwhm = _mm_to_px(spec.fwhm, spacing, axis, "degradation.slice_profile.fwhm")
        notes["fwhm_rule"] = f"degradation.slice_profile.fwhm {float(spec.fwhm):g} mm"
    elif thickness is not None:
        fwhm = _mm_to_px(_number(thickness, "thickness", minimum=0.0, strict=True), spacing, axis, "thickness")
        notes["fwhm_rule"] = f"the slice thickness, {float(thickness):g} mm"
    else:
        fwhm = step
        notes["fwhm_rule"] = "thickness = slice spacing (contiguous slices)"
    facs = list(facs)
    facs[axis] = step
    return Recipe(model="slice_profile", factors=tuple(facs), axis=axis, slice_shape=spec.shape,
                  slice_spacing=step, slice_fwhm=fwhm, spacing=spacing, notes=notes)


def _psf_recipe(profile: Any, facs: list[float], bands: Sequence[str | None] | None, n: int,
                spacing: tuple[float, ...] | None, notes: dict[str, str]) -> Recipe:
    """The PSF parameters: box, or a Gaussian sigma per channel and axis (:func:`band_sigmas`)."""
    psf = None if profile is None else profile.degradation.psf
    common: dict[str, Any] = {"factors": tuple(facs), "spacing": spacing, "notes": notes}
    if psf is not None and psf.shape == "box":
        return Recipe(model="psf", psf="box", **common)
    per_axis = [band_sigmas(profile, f, bands, n=n) if f > 1.0 + _UNIT_TOL else [0.0] * n for f in facs]
    sigmas = tuple(tuple(ax[c] for ax in per_axis) for c in range(n))
    if psf is None:
        notes["psf_rule"] = f"no profile: Gaussian, FWHM {DEFAULT_FWHM_LR_PIXELS:g} low-resolution pixel"
    return Recipe(model="psf", psf="gaussian", sigmas=sigmas,
                  mtf_nyquist=None if psf is None else psf.mtf_nyquist,
                  fwhm_lr_pixels=DEFAULT_FWHM_LR_PIXELS if psf is None else psf.fwhm, **common)


def recipe(
    profile: Any,
    factors: Sequence[float],
    *,
    bands: Sequence[str | None] | None = None,
    channels: int | None = None,
    spacing: Sequence[float] | None = None,
    thickness: float | None = None,
) -> Recipe:
    """Resolve a domain profile's degradation for one image (see :func:`degrade`).

    Args:
        profile: a :class:`~medsat_sr.domains.DomainProfile`, or ``None``
            (Gaussian PSF of FWHM one low-resolution pixel, then decimation).
        factors: reduction factor per spatial axis (>= 1; low-res pixel /
            high-res pixel).
        bands: band (channel) names, for per-band MTFs.
        channels: number of channels when ``bands`` is not given (default 1).
        spacing: high-resolution spacing (mm) per spatial axis; needed to
            convert a slice profile's mm values (``fwhm``, ``spacing``,
            ``thickness``) into pixels.
        thickness: slice thickness in mm (:func:`slice_thickness` of the
            low-resolution volume), used when the profile says ``fwhm:
            thickness``; ``None``: thickness = slice spacing (contiguous).

    Returns:
        The :class:`Recipe`.

    Raises:
        ConfigError: factors below 1, a spacing of the wrong length, mm values
            without a spacing, k-space on a raster profile, a box PSF asked
            for sigmas.
    """
    facs = [_number(f, "factor", minimum=1.0) for f in _as_list(factors, "factors")]
    nd = len(facs)
    sp = None if spacing is None else tuple(_number(s, "spacing", minimum=0.0, strict=True) for s in spacing)
    if sp is not None and len(sp) != nd:
        raise ConfigError(f"spacing has {len(sp)} values for {nd} factors")
    n = len(bands) if bands is not None else int(channels or 1)
    model = "psf" if profile is None else str(profile.degradation.model)
    notes: dict[str, str] = {}
    reduced = [a for a, f in enumerate(facs) if f > 1.0 + _UNIT_TOL]
    if model == "slice_profile" and len(reduced) != 1:
        notes["model_rule"] = (f"slice_profile degrades one axis; factors {facs} reduce {len(reduced)}: "
                               "the profile's psf instead")
        model = "psf"
    if model == "slice_profile":
        return _slice_recipe(profile.degradation.slice_profile, facs, reduced[0], sp, thickness, notes)
    if model == "kspace":
        if getattr(profile, "kind", "volume") != "volume":
            raise ConfigError("k-space truncation is for MR volumes")
        ks = profile.degradation.kspace
        return Recipe(model="kspace", factors=tuple(facs), fraction=ks.fraction, window=ks.window,
                      tukey_alpha=float(ks.tukey_alpha), spacing=sp, notes=notes)
    return _psf_recipe(profile, facs, bands, n, sp, notes)


def degrade(
    hr: torch.Tensor,
    profile: Any,
    factors: Sequence[float],
    *,
    bands: Sequence[str | None] | None = None,
    valid: np.ndarray | torch.Tensor | None = None,
    spacing: Sequence[float] | None = None,
    thickness: float | None = None,
) -> Any:
    """THE degradation: a high-resolution image to its low-resolution counterpart, by a domain profile.

    Training pairs (:mod:`medsat_sr.data`), the evaluation protocol
    (:mod:`medsat_sr.evaluate`) and the consistency check of inference all
    call this (or :func:`recipe` + :meth:`Recipe.apply`, the same thing), so a
    model is trained, scored and checked on one degradation. No noise is
    added (that is :func:`add_noise`, in the units of each caller).

    * ``slice_profile`` (one factor > 1): the slice profile across that axis
      (:func:`slice_profile`), FWHM = the profile's ``fwhm`` (mm), or
      ``thickness`` (mm) for ``fwhm: thickness``, or the slice spacing when no
      thickness is known; slices every ``spacing`` mm of the profile, or every
      ``factor`` pixels for ``spacing: header``. With several factors > 1 the
      profile's ``psf`` applies (noted in the record).
    * ``psf``: box averaging, or a Gaussian PSF whose sigma per band and axis
      is :func:`band_sigmas` at that axis' factor (axes with factor 1 are not
      blurred), then decimation (:func:`psf_decimate`). Band sets: call once
      per band group with its own factors (its ratio to the target grid).
    * ``kspace``: :func:`kspace_lowres` (real part).

    Args:
        hr: float ``(C, *spatial)``, one factor per spatial axis.
        profile: the domain profile, or ``None`` (Gaussian, FWHM one low-res pixel).
        factors: reduction factor per spatial axis, >= 1.
        bands: the ``C`` band names (per-band MTF).
        valid: boolean validity ``(*spatial)`` or ``(C, *spatial)`` (numpy or torch).
        spacing: high-resolution spacing in mm (slice profiles given in mm).
        thickness: slice thickness in mm (:func:`slice_thickness`).

    Returns:
        The low-resolution tensor; with ``valid``, ``(low_res, low_res_valid)``:
        valid only where every contributing high-resolution pixel is (k-space:
        the whole low-resolution footprint), same kind (numpy/torch) and
        leading shape as ``valid``.

    Raises:
        ConfigError: see :func:`recipe`; ``hr`` not ``(C, *spatial)``.
    """
    r = recipe(profile, factors, bands=bands, channels=int(hr.shape[0]), spacing=spacing, thickness=thickness)
    lr, lr_valid = r.apply(hr, valid)
    if valid is None:
        return lr
    return lr, (lr_valid.cpu().numpy() if isinstance(valid, np.ndarray) else lr_valid)


def describe(profile: Any, factors: Sequence[float], **kwargs: Any) -> str:
    """What :func:`degrade` applies for these arguments, in one line (``kwargs`` as :func:`recipe`)."""
    return recipe(profile, factors, **kwargs).describe()


#: The degradation models under the names that domain profiles use
#: (``degradation.model`` in ``domains/*.yaml``, plus the noise stage).
DEGRADATIONS: dict[str, Callable[..., Any]] = {
    "slice_profile": slice_profile,
    "psf": psf_decimate,
    "kspace": kspace_truncate,
    "noise": add_noise,
}

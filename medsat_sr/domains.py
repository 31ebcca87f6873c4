"""Domain profiles: what medsat_sr knows about a modality or a sensor.

A profile is declarative data (``domains/<name>.yaml``, read with
``yaml.safe_load`` only) validated by :class:`DomainProfile`. The engine never
branches on "medical vs satellite"; it reads these fields instead:

* **identity**: ``name``, ``kind`` (``"volume"`` or ``"raster"``),
  ``modality`` (modality or sensor and product level), ``units`` (the
  physical units of the normalised-to-physical mapping);
* **channels / bands**: ``channels`` (volumes; ``None`` = any count) or
  ``bands`` (rasters: name, description, centre wavelength, native ground
  sampling distance) and ``band_groups`` (bands sharing a native grid, each
  a ``guide`` (fine, passed through and used as guidance) or a ``target``
  (coarse, super-resolved));
* **normalisation** (:data:`Normalisation`): how stored values become the
  network's float32 input, one of

  - ``hu_window`` (CT): ``(HU - min) / (max - min)``;
  - ``percentile`` (MR, generic rasters): ``(x - p_low) / (p_high - p_low)``
    with robust percentiles computed per image (and per channel);
  - ``reflectance`` (Sentinel-2): ``(DN + add_offset) * scale``, ESA's
    product convention, with the offset that depends on the processing
    baseline;
  - ``linear``: ``DN * scale + offset`` (GDAL's and USGS's convention),
    e.g. ``2.75e-5, -0.2`` for Landsat Collection 2 Level-2, ``1/255`` for
    8-bit aerial imagery;

* **nodata**: the value used when a file declares none;
* **degradation** (:class:`DegradationSpec`): the acquisition model that
  makes training pairs and evaluation inputs (slice profile, PSF/MTF blur
  plus decimation, k-space truncation, noise), with its parameters;
* **metrics** (:class:`MetricSpec`): the default data-range policy, mask
  policy, SSIM window, ERGAS convention, border crop and baselines;
* **match** (:class:`MatchSpec`): which inputs the profile is for (DICOM
  ``Modality`` values, band-name patterns, or ``fallback``), read by
  :func:`profile_for`; band patterns also give the band order of
  :func:`band_sort_key`;
* **baseline** (:data:`Baseline`): the classical upscaler this domain is
  compared against and falls back to: ``"bspline"`` (cubic B-spline,
  volumes), ``"gdal_cubic"`` or ``"gdal_lanczos"`` (GDAL resampling,
  rasters). Omitted: ``bspline`` for volumes, ``gdal_cubic`` for rasters.

Units used throughout: slice thickness and spacing in millimetres, ground
sampling distance in metres, PSF widths in *low-resolution pixels* (so a
profile's values do not depend on the scale factor), MTF as the gain at the
Nyquist frequency of the low-resolution grid.

Example:
    >>> from medsat_sr.domains import load_domain
    >>> s2 = load_domain("sentinel2_l2a")
    >>> s2.expand_bands(["20m"])
    ['B05', 'B06', 'B07', 'B8A', 'B11', 'B12']
    >>> round(s2.psf_sigma(2, band="B05"), 3)  # sigma in high-resolution pixels, for x2
    0.886
"""

from __future__ import annotations

import functools
import logging
import os
import re
from collections.abc import Mapping, Sequence
from fractions import Fraction as _Fraction
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BeforeValidator, Field, field_validator, model_validator

from medsat_sr._resources import builtin_names, builtin_path, looks_like_path, read_yaml, suggest
from medsat_sr._schema import StrictModel, located, validate
from medsat_sr.errors import ConfigError
from medsat_sr.image import Key

__all__ = [
    "DomainProfile",
    "Band",
    "BandGroup",
    "HUWindow",
    "Percentile",
    "Reflectance",
    "BaselineOffset",
    "Linear",
    "Normalisation",
    "SliceProfileSpec",
    "PSFSpec",
    "KSpaceSpec",
    "NoiseSpec",
    "DegradationSpec",
    "MaskSpec",
    "SSIMSpec",
    "MetricSpec",
    "Baseline",
    "BASELINES",
    "MatchSpec",
    "load_domain",
    "list_domains",
    "profile_for",
    "band_sort_key",
]

logger = logging.getLogger(__name__)

_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$"

#: The classical baselines a profile can name, and the image kind each serves.
BASELINES: dict[str, str] = {"bspline": "volume", "gdal_cubic": "raster", "gdal_lanczos": "raster"}

#: The value of :attr:`DomainProfile.baseline`.
Baseline = Literal["bspline", "gdal_cubic", "gdal_lanczos"]


def _parse_number(value: Any) -> Any:
    """Accept numbers and fraction strings such as ``"1/255"``; refuse booleans."""
    if isinstance(value, bool):
        raise ValueError(f"expected a number, got {value!r}")
    if isinstance(value, str) and "/" in value:
        try:
            return float(_Fraction(value.replace(" ", "")))
        except (ValueError, ZeroDivisionError) as exc:
            raise ValueError(f"expected a number or a fraction such as '1/255', got {value!r}") from exc
    return value


#: A float that may be written as a fraction string (``"1/255"``).
Number = Annotated[float, BeforeValidator(_parse_number)]


# =============================================================== bands
class Band(StrictModel):
    """One spectral band of a raster sensor.

    Attributes:
        name: the band's name as products use it (``"B8A"``, ``"SR_B4"``).
        description: common name (``"red"``, ``"red edge 1"``).
        wavelength_nm: central wavelength, nanometres.
        resolution: native ground sampling distance, metres (``None`` when
            it varies by product, as for aerial imagery; the file then tells).
    """

    name: str = Field(pattern=_NAME)
    description: str = ""
    wavelength_nm: float | None = Field(None, gt=0)
    resolution: float | None = Field(None, gt=0)


class BandGroup(StrictModel):
    """Bands that share one native grid.

    Attributes:
        name: group name (``"10m"``), usable wherever band names are.
        bands: the member bands.
        role: ``"guide"``: fine bands, passed through unchanged and used as
            guidance; ``"target"``: coarse bands, super-resolved.
    """

    name: str = Field(pattern=_NAME)
    bands: list[str] = Field(min_length=1)
    role: Literal["guide", "target"]


# =============================================================== normalisation
class HUWindow(StrictModel):
    """CT: map the Hounsfield window ``[min, max]`` linearly onto ``[0, 1]``.

    Values outside the window keep the same linear scale unless ``clip`` is
    true, so nothing (bone, metal) is lost by default; the window only sets
    the scale. Metrics with ``data_range: window`` use ``max - min``.
    """

    method: Literal["hu_window"]
    min: float
    max: float
    clip: bool = False

    @model_validator(mode="after")
    def _order(self) -> HUWindow:
        if not self.min < self.max:
            raise located("max", f"must be greater than min ({self.min}), got {self.max}")
        return self


class Percentile(StrictModel):
    """Robust percentile scaling: ``p_low -> 0``, ``p_high -> 1``, per image.

    Attributes:
        low: lower percentile (0-100).
        high: upper percentile (0-100).
        mask: which values the percentiles are computed on: ``"nonzero"``
            (MR: excludes the zero background), ``"valid"`` (excludes nodata
            and non-finite values) or ``"all"``.
        per_channel: compute the percentiles per channel/band.
        clip: clip the normalised values to ``[0, 1]``.
    """

    method: Literal["percentile"]
    low: float = Field(0.5, ge=0, lt=100)
    high: float = Field(99.5, gt=0, le=100)
    mask: Literal["all", "nonzero", "valid"] = "nonzero"
    per_channel: bool = True
    clip: bool = False

    @model_validator(mode="after")
    def _order(self) -> Percentile:
        if not self.low < self.high:
            raise located("high", f"must be greater than low ({self.low}), got {self.high}")
        return self


class BaselineOffset(StrictModel):
    """A DN offset that applies from a processing baseline on (Sentinel-2 ``N0400`` and later)."""

    from_baseline: str = Field(pattern=r"^\d{2}\.\d{2}$")
    add_offset: float


def _baseline_key(value: str) -> tuple[int, int]:
    text = value.strip().upper().lstrip("N")
    if "." not in text and len(text) == 4 and text.isdigit():  # "0400" as in product names
        text = f"{text[:2]}.{text[2:]}"
    major, _, minor = text.partition(".")
    try:
        return int(major), int(minor or 0)
    except ValueError as exc:
        raise ConfigError(f"invalid processing baseline {value!r}; expected 'NN.NN' such as '04.00'") from exc


class Reflectance(StrictModel):
    """Optical products stored as scaled integers: ``reflectance = (DN + add_offset) * scale``.

    This is the ESA convention (``(DN + BOA_ADD_OFFSET) / QUANTIFICATION_VALUE``
    for L2A, ``RADIO_ADD_OFFSET`` for L1C). In GDAL's ``DN * scale + offset``
    form the offset is ``add_offset * scale`` (:meth:`scale_offset`).

    Attributes:
        scale: reflectance per DN (``1e-4`` for Sentinel-2).
        add_offset: DN offset used when no ``baseline_offsets`` entry applies.
        baseline_offsets: offsets from a processing baseline on (Sentinel-2
            adds ``-1000`` DN from baseline 04.00, 25 January 2022).
        use_file_scale_offset: when the file carries a GDAL scale/offset
            other than (1, 0), use it instead of these values.
        float_is_reflectance: a floating-point input is already
            reflectance (scale 1, offset 0).
    """

    method: Literal["reflectance"]
    scale: Number = Field(gt=0)
    add_offset: float = 0.0
    baseline_offsets: list[BaselineOffset] = Field(default_factory=list)
    use_file_scale_offset: bool = True
    float_is_reflectance: bool = True

    def scale_offset(self, processing_baseline: str | None = None) -> tuple[float, float]:
        """``(scale, offset)`` in GDAL's ``physical = DN * scale + offset`` form.

        Args:
            processing_baseline: the product's baseline (``"04.00"``,
                ``"N0400"``); ``None`` (unknown) uses ``add_offset``.

        Raises:
            ConfigError: an unparsable baseline.
        """
        add = self.add_offset
        if processing_baseline is not None:
            key = _baseline_key(processing_baseline)
            for entry in sorted(self.baseline_offsets, key=lambda e: _baseline_key(e.from_baseline)):
                if key >= _baseline_key(entry.from_baseline):
                    add = entry.add_offset
        return float(self.scale), float(add * self.scale)


class Linear(StrictModel):
    """A linear map in GDAL's convention: ``physical = DN * scale + offset``.

    Attributes:
        scale: a number, a fraction string (``"1/255"``), or ``"dtype"``:
            ``1 / max`` of the stored integer dtype (1 for float data).
        offset: added after scaling.
        use_file_scale_offset: prefer a GDAL scale/offset stored in the file.
    """

    method: Literal["linear"]
    scale: Annotated[float, BeforeValidator(_parse_number), Field(gt=0)] | Literal["dtype"]
    offset: float = 0.0
    use_file_scale_offset: bool = True

    def scale_offset(self, dtype: str | None = None) -> tuple[float, float]:
        """``(scale, offset)``; ``dtype`` (a numpy dtype name) resolves ``scale: dtype``."""
        if self.scale != "dtype":
            return float(self.scale), float(self.offset)
        import numpy as np

        if dtype is None:
            raise ConfigError("scale 'dtype' needs the source dtype")
        dt = np.dtype(dtype)
        if np.issubdtype(dt, np.integer):
            return 1.0 / float(np.iinfo(dt).max), float(self.offset)
        return 1.0, float(self.offset)


#: The normalisation methods, selected by their ``method`` key.
Normalisation = Annotated[HUWindow | Percentile | Reflectance | Linear, Field(discriminator="method")]


# =============================================================== degradation
class SliceProfileSpec(StrictModel):
    """Through-plane acquisition of thick slices (volumes).

    The high-resolution signal is convolved along ``axis`` with the slice
    profile, then sampled every ``spacing`` mm, so gaps (spacing larger than
    thickness) and overlaps are both modelled, for any non-integer factor.

    Attributes:
        shape: ``"gaussian"`` (FWHM = ``fwhm``) or ``"rect"`` (width ``fwhm``).
        fwhm: millimetres, or ``"thickness"``: the image's slice thickness.
        spacing: millimetres between slice centres, or ``"header"``: the
            image's slice spacing.
        axis: the through-plane axis (0, 1, 2), or ``"thickest"``: the axis
            with the largest spacing.
    """

    shape: Literal["gaussian", "rect"] = "gaussian"
    fwhm: Annotated[float, Field(gt=0)] | Literal["thickness"] = "thickness"
    spacing: Annotated[float, Field(gt=0)] | Literal["header"] = "header"
    axis: Literal[0, 1, 2, "thickest"] = "thickest"


class PSFSpec(StrictModel):
    """The point-spread function of :func:`medsat_sr.degrade.psf_decimate`.

    ``shape: gaussian``: a Gaussian PSF evaluated at the centre of each
    low-resolution pixel. Give its width either as the MTF gain at the
    low-resolution Nyquist frequency (``mtf_nyquist``, one value or one per
    band or band group) or as a FWHM in low-resolution pixels (``fwhm``); at
    most one of the two (a config override that sets one drops the
    profile's other). With neither, ``fwhm`` is 1 (as wide as a
    low-resolution pixel). :meth:`DomainProfile.psf_sigma` converts either
    to a sigma in high-resolution pixels.

    ``shape: box``: pixel integration (the mean of each block), no width.
    """

    shape: Literal["gaussian", "box"] = "gaussian"
    mtf_nyquist: float | dict[str, float] | None = None
    fwhm: float | None = Field(None, gt=0)

    @field_validator("mtf_nyquist", mode="before")
    @classmethod
    def _gain(cls, value: Any) -> Any:
        def check(v: Any, where: str) -> float:
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 < float(v) < 1.0:
                raise ValueError(f"{where}must be a gain in (0, 1), got {v!r}")
            return float(v)

        if value is None:
            return None
        if isinstance(value, Mapping):
            return {str(k): check(v, f"entry {k!r} ") for k, v in value.items()}
        return check(value, "")

    @model_validator(mode="after")
    def _one(self) -> PSFSpec:
        if self.mtf_nyquist is not None and self.fwhm is not None:
            raise located("fwhm", "give either mtf_nyquist or fwhm, not both")
        if self.shape == "box" and (self.mtf_nyquist is not None or self.fwhm is not None):
            raise located(
                "shape", "a box PSF (pixel integration) has no width: mtf_nyquist and fwhm must be null"
            )
        return self


class KSpaceSpec(StrictModel):
    """MR k-space truncation (:func:`medsat_sr.degrade.kspace_truncate`), the in-plane MR model.

    Attributes:
        fraction: fraction of k-space kept along each degraded axis;
            ``None`` means ``1 / scale``.
        window: ``"none"`` (sharp truncation, Gibbs ringing as acquired),
            ``"hann"`` or ``"tukey"`` (apodised).
        tukey_alpha: taper fraction of the Tukey window, in ``[0, 1]``.
    """

    fraction: float | None = Field(None, gt=0, le=1)
    window: Literal["none", "hann", "tukey"] = "none"
    tukey_alpha: float = Field(0.5, ge=0, le=1)


class NoiseSpec(StrictModel):
    """Noise added to the degraded image (in normalised intensity units).

    Attributes:
        model: ``"none"``, ``"gaussian"`` or ``"rician"`` (magnitude MR).
        sigma: standard deviation, as a fraction of the normalised range.
    """

    model: Literal["none", "gaussian", "rician"] = "none"
    sigma: float = Field(0.0, ge=0, le=1)


class DegradationSpec(StrictModel):
    """How a high-resolution image becomes its low-resolution observation.

    Attributes:
        model: the primary model: ``"slice_profile"`` (thick slices along
            one axis), ``"psf"`` (Gaussian PSF then decimation on every axis
            whose scale is above 1) or ``"kspace"`` (k-space truncation).
        slice_profile: parameters of ``slice_profile``
            (:func:`medsat_sr.degrade.slice_profile`).
        psf: parameters of ``psf`` (:func:`medsat_sr.degrade.psf_decimate`).
        kspace: parameters of ``kspace``.
        noise: noise added after decimation (:func:`medsat_sr.degrade.add_noise`).
        references: where the model and its parameters come from.
        estimate: ``"profile"`` (use the parameters above as given) or
            ``"auto"``: measure the input's slice profile or PSF first
            (:mod:`medsat_sr.estimate`) and degrade with the estimate
            (``degradation: auto`` in a job config).
    """

    model: Literal["slice_profile", "psf", "kspace"]
    slice_profile: SliceProfileSpec = Field(default_factory=SliceProfileSpec)
    psf: PSFSpec = Field(default_factory=PSFSpec)
    kspace: KSpaceSpec = Field(default_factory=KSpaceSpec)
    noise: NoiseSpec = Field(default_factory=NoiseSpec)
    references: list[str] = Field(default_factory=list)
    estimate: Literal["profile", "auto"] = "profile"


# =============================================================== metrics
class MaskSpec(StrictModel):
    """Which pixels masked metrics use.

    Attributes:
        kind: ``"none"``; ``"foreground"``: the reference above
            ``threshold``; ``"valid"``: not nodata and finite.
        threshold: foreground threshold, in ``units``.
        units: ``"physical"`` (HU, reflectance, ...) or ``"normalised"``
            (after the profile's normalisation).
        fill_holes: fill holes of the foreground (a body mask keeps the
            lungs; scipy.ndimage.binary_fill_holes).
        dilate: dilate the mask by this many pixels (keeps edges in).
    """

    kind: Literal["none", "foreground", "valid"]
    threshold: float | None = None
    units: Literal["physical", "normalised"] = "normalised"
    fill_holes: bool = False
    dilate: int = Field(0, ge=0, le=32)

    @model_validator(mode="after")
    def _threshold(self) -> MaskSpec:
        if self.kind == "foreground" and self.threshold is None:
            raise located("threshold", "a foreground mask needs a threshold")
        return self


class SSIMSpec(StrictModel):
    """SSIM window: Gaussian (Wang et al. 2004: sigma 1.5, 11 taps) or uniform."""

    kernel: Literal["gaussian", "uniform"] = "gaussian"
    sigma: float = Field(1.5, gt=0)
    win_size: int = Field(11, ge=3, le=31)

    @field_validator("win_size")
    @classmethod
    def _odd(cls, v: int) -> int:
        if v % 2 == 0:
            raise ValueError(f"must be odd, got {v}")
        return v


class MetricSpec(StrictModel):
    """Default settings of the evaluation metrics (DESIGN section 5).

    Attributes:
        data_range: PSNR/SSIM data range policy: ``"reference_range"``
            (``max - min`` of the reference, per band when ``per_band``),
            ``"window"`` (the HU window width; CT), ``"percentile"`` (the
            reference's ``p_high - p_low`` with the profile's percentiles)
            or ``"fixed"`` (``data_range_value``, in physical units).
        data_range_value: the range for ``"fixed"``.
        per_band: report per band/channel as well as the mean (rasters).
        mask: the mask of masked metrics.
        ssim: the SSIM window.
        ergas_ratio: the ``h/l`` factor of ERGAS
            ``100 (h/l) sqrt(mean_k (RMSE_k / mean_k)^2)``:
            ``"inverse_scale"``: ``h/l`` = high-resolution pixel size over
            low-resolution pixel size = ``1/scale`` (Wald 2000);
            ``"scale"``: the inverted form some papers use.
        crop_border: pixels removed at every border before metrics.
        baselines: classical methods every evaluation includes.
    """

    data_range: Literal["reference_range", "window", "percentile", "fixed"]
    data_range_value: float | None = Field(None, gt=0)
    per_band: bool = False
    mask: MaskSpec
    ssim: SSIMSpec = Field(default_factory=SSIMSpec)
    ergas_ratio: Literal["inverse_scale", "scale"] = "inverse_scale"
    crop_border: int = Field(0, ge=0)
    baselines: list[Literal["nearest", "linear", "cubic", "lanczos"]] = Field(
        default_factory=lambda: ["cubic"], min_length=1
    )

    @model_validator(mode="after")
    def _fixed(self) -> MetricSpec:
        if self.data_range == "fixed" and self.data_range_value is None:
            raise located("data_range_value", "data_range 'fixed' needs data_range_value")
        if self.data_range != "fixed" and self.data_range_value is not None:
            raise located(
                "data_range_value", f"only used with data_range 'fixed' (data_range is {self.data_range!r})"
            )
        return self


# =============================================================== matching
#: Named groups a band pattern may define (see :class:`MatchSpec`).
BAND_PATTERN_GROUPS = ("number", "suffix")


def _check_band_pattern(pattern: str) -> str:
    """A band pattern must compile, use only known named groups and not match the empty name."""
    try:
        compiled = re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"invalid regular expression {pattern!r}: {exc}") from None
    unknown = sorted(set(compiled.groupindex) - set(BAND_PATTERN_GROUPS))
    if unknown:
        raise ValueError(
            f"pattern {pattern!r} has named groups {unknown}; expected only {list(BAND_PATTERN_GROUPS)}"
        )
    if compiled.fullmatch("") is not None:
        raise ValueError(f"pattern {pattern!r} matches an empty band name; expected a pattern for real names")
    return pattern


def _check_modality(value: str) -> str:
    """A DICOM Modality code: upper-case letters and digits (CS value, at most 16 characters)."""
    if not re.fullmatch(r"[A-Z0-9 _]{1,16}", value):
        raise ValueError(f"expected a DICOM Modality code such as 'CT' or 'MR' (upper case), got {value!r}")
    return value


class MatchSpec(StrictModel):
    """Which inputs a profile is for (read by :func:`profile_for`).

    Attributes:
        modalities: volumes: DICOM ``Modality`` (0008,0060) values this
            profile is for (``[CT]``, ``[MR]``), compared case-insensitively
            with the image's ``modality`` meta key.
        band_patterns: rasters: regular expressions (Python :mod:`re`
            syntax, matched against the *whole* band name; ``(?i)`` makes
            one case-insensitive). A raster matches when every one of its
            band names matches one of them. Two optional named groups give
            the band order of :func:`band_sort_key`: ``number`` (the band
            number) and ``suffix`` (a non-empty suffix sorts after the bare
            number, as ``B8A`` after ``B08``).
        fallback: the profile for inputs of its kind that no other profile
            matches (a volume without a modality, such as NIfTI; a raster
            with unrecognised band names). A fallback states no
            modalities or patterns.
    """

    modalities: list[Annotated[str, AfterValidator(_check_modality)]] = Field(default_factory=list)
    band_patterns: list[Annotated[str, AfterValidator(_check_band_pattern)]] = Field(default_factory=list)
    fallback: bool = False

    @model_validator(mode="after")
    def _fallback(self) -> MatchSpec:
        if self.fallback and (self.modalities or self.band_patterns):
            raise located(
                "fallback", "a fallback profile matches what no other does; drop modalities and band_patterns"
            )
        return self

    def band_match(self, name: str) -> re.Match[str] | None:
        """The match of the first band pattern that matches all of ``name``, or ``None``."""
        for pattern in self.band_patterns:
            m = re.fullmatch(pattern, name)
            if m is not None:
                return m
        return None


# =============================================================== the profile
class DomainProfile(StrictModel):
    """A modality or sensor: bands, intensity scaling, nodata, degradation, metrics.

    See the module docstring for the meaning of each section. Cross-field
    rules: volumes have ``channels`` and no ``bands``; rasters have
    ``bands`` (or ``None`` for "any band count") and no ``channels``; band
    groups name existing bands, each band at most once, all at one
    resolution; slice-profile and k-space degradations are for volumes;
    ``data_range: window`` needs ``hu_window`` normalisation and
    ``"percentile"`` needs ``percentile`` normalisation; ``baseline`` fits
    the kind (``bspline`` for volumes, ``gdal_*`` for rasters; see
    :data:`BASELINES`).
    """

    name: str = Field(pattern=_NAME)
    kind: Literal["volume", "raster"]
    description: str = ""
    modality: str
    units: str
    channels: list[str] | None = None
    bands: list[Band] | None = None
    band_groups: list[BandGroup] = Field(default_factory=list)
    normalisation: Normalisation
    nodata: float | None = None
    degradation: DegradationSpec
    metrics: MetricSpec
    default_model: str | None = None
    match: MatchSpec = Field(default_factory=MatchSpec)
    baseline: Baseline = Field(None, validate_default=False)  # type: ignore[assignment]  # see _default_baseline
    references: list[str] = Field(default_factory=list)

    @model_validator(mode="before")
    @classmethod
    def _default_baseline(cls, data: Any) -> Any:
        """Omitted (or null) ``baseline``: ``bspline`` for volumes, ``gdal_cubic`` for rasters."""
        kind = data.get("kind") if isinstance(data, Mapping) else None
        if kind in ("volume", "raster") and data.get("baseline") is None:
            data = dict(data)
            data["baseline"] = "bspline" if kind == "volume" else "gdal_cubic"
        return data

    @model_validator(mode="after")
    def _consistent(self) -> DomainProfile:
        if BASELINES[self.baseline] != self.kind:
            fits = [b for b, k in BASELINES.items() if k == self.kind]
            raise located(
                "baseline", f"{self.baseline!r} is for {BASELINES[self.baseline]}s; a {self.kind} takes one of {fits}"
            )
        if self.kind == "volume" and self.match.band_patterns:
            raise located("match.band_patterns", "band patterns are for rasters; a volume matches by modalities")
        if self.kind == "raster" and self.match.modalities:
            raise located("match.modalities", "modalities are for volumes; a raster matches by band_patterns")
        if self.kind == "volume":
            if self.bands is not None:
                raise located("bands", "a volume profile lists channels, not bands")
            if self.band_groups:
                raise located("band_groups", "band groups are for rasters")
        else:
            if self.channels is not None:
                raise located("channels", "a raster profile lists bands, not channels")
            if self.degradation.model != "psf":
                raise located(
                    "degradation.model", f"rasters use the 'psf' model, got {self.degradation.model!r}"
                )
        names = self.band_names or []
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise located("bands" if self.kind == "raster" else "channels", f"duplicate names {dup}")
        seen: dict[str, str] = {}
        group_names = [g.name for g in self.band_groups]
        for i, g in enumerate(self.band_groups):
            if group_names.count(g.name) > 1:
                raise located(f"band_groups.{i}.name", f"duplicate group name {g.name!r}")
            if g.name in names:
                raise located(f"band_groups.{i}.name", f"group name {g.name!r} is also a band name")
            for b in g.bands:
                if b not in names:
                    raise located(f"band_groups.{i}.bands", f"unknown band {b!r}{suggest(b, names)}")
                if b in seen:
                    raise located(f"band_groups.{i}.bands", f"band {b!r} is already in group {seen[b]!r}")
                seen[b] = g.name
            res = {self.band(b).resolution for b in g.bands}
            if len(res) > 1:
                raise located(
                    f"band_groups.{i}.bands",
                    f"bands of one group share one resolution, got {sorted(res, key=str)}",
                )
        mtf = self.degradation.psf.mtf_nyquist
        if isinstance(mtf, dict):
            for key in mtf:
                if key not in names and key not in group_names:
                    raise located(
                        f"degradation.psf.mtf_nyquist.{key}",
                        f"not a band or band group of this profile{suggest(key, names + group_names)}",
                    )
        norm = self.normalisation.method
        if self.metrics.data_range == "window" and norm != "hu_window":
            raise located("metrics.data_range", f"'window' needs hu_window normalisation, got {norm!r}")
        if self.metrics.data_range == "percentile" and norm != "percentile":
            raise located("metrics.data_range", f"'percentile' needs percentile normalisation, got {norm!r}")
        return self

    # ----------------------------------------------------------- band helpers
    @property
    def band_names(self) -> list[str] | None:
        """Band names (rasters) or channel names (volumes); ``None`` = any."""
        if self.kind == "raster":
            return None if self.bands is None else [b.name for b in self.bands]
        return None if self.channels is None else list(self.channels)

    def band(self, name: str) -> Band:
        """The band called ``name``.

        Raises:
            ConfigError: no such band (with a did-you-mean hint).
        """
        for b in self.bands or []:
            if b.name == name:
                return b
        names = self.band_names or []
        raise ConfigError(f"domain {self.name!r} has no band {name!r}{suggest(name, names)}; bands: {names}")

    def group(self, name: str) -> BandGroup:
        """The band group called ``name``.

        Raises:
            ConfigError: no such group.
        """
        for g in self.band_groups:
            if g.name == name:
                return g
        groups = [g.name for g in self.band_groups]
        raise ConfigError(
            f"domain {self.name!r} has no band group {name!r}{suggest(name, groups)}; groups: {groups}"
        )

    def groups(self, role: Literal["guide", "target"] | None = None) -> list[BandGroup]:
        """The band groups, optionally only those with ``role``."""
        return [g for g in self.band_groups if role is None or g.role == role]

    def expand_bands(self, names: Sequence[str]) -> list[str]:
        """Band names with group names replaced by their members, in order, without repeats.

        Raises:
            ConfigError: a name that is neither a band nor a group.
        """
        out: list[str] = []
        bands = self.band_names or []
        groups = {g.name: g for g in self.band_groups}
        for n in names:
            members = groups[n].bands if n in groups else [n]
            for m in members:
                if self.bands is not None and m not in bands:
                    choices = bands + list(groups)
                    raise ConfigError(
                        f"domain {self.name!r} has no band or band group {m!r}{suggest(m, choices)}; "
                        f"bands: {bands}, groups: {list(groups)}"
                    )
                if m not in out:
                    out.append(m)
        return out

    def resolution_of(self, names: Sequence[str]) -> float | None:
        """The common native resolution of bands/groups ``names`` (``None`` if unknown).

        Raises:
            ConfigError: the bands have different resolutions.
        """
        if self.bands is None:
            return None
        res = {self.band(b).resolution for b in self.expand_bands(names)}
        if len(res) != 1:
            raise ConfigError(
                f"bands {list(names)} of domain {self.name!r} have different resolutions {sorted(res, key=str)}"
            )
        return res.pop()

    # ----------------------------------------------------------- degradation helpers
    def mtf_nyquist(self, band: str | None = None) -> float | None:
        """The MTF gain at Nyquist for ``band`` (its own, its group's, or the single value).

        Returns ``None`` when the PSF is given by ``fwhm`` (or not at all).
        """
        mtf = self.degradation.psf.mtf_nyquist
        if mtf is None or isinstance(mtf, float):
            return mtf
        if band is None:
            raise ConfigError(f"domain {self.name!r} gives the MTF per band; name the band")
        if band in mtf:
            return mtf[band]
        for g in self.band_groups:
            if band in g.bands and g.name in mtf:
                return mtf[g.name]
        raise ConfigError(f"domain {self.name!r} gives no MTF for band {band!r}")

    def psf_sigma(self, scale: float, band: str | None = None) -> float:
        """Gaussian PSF sigma in high-resolution pixels for decimation by ``scale``.

        From ``mtf_nyquist``: ``scale * sqrt(-2 ln g) / pi``
        (:func:`medsat_sr.degrade.mtf_to_sigma`); else from ``fwhm`` in
        low-resolution pixels (default 1): ``fwhm * scale / (2 sqrt(2 ln 2))``.

        Raises:
            ConfigError: a box PSF (no sigma), or ``scale < 1``.
        """
        from medsat_sr.psf import fwhm_to_sigma, mtf_to_sigma

        if self.degradation.psf.shape != "gaussian":
            raise ConfigError(
                f"domain {self.name!r} has a {self.degradation.psf.shape!r} PSF, which has no sigma"
            )
        if not scale >= 1.0:
            raise ConfigError(f"scale must be >= 1, got {scale!r}")
        mtf = self.mtf_nyquist(band)
        if mtf is not None:
            return mtf_to_sigma(mtf, scale)
        return fwhm_to_sigma((self.degradation.psf.fwhm or 1.0) * scale)


# =============================================================== loading
def list_domains() -> list[str]:
    """Names of the built-in domain profiles (``domains/*.yaml``)."""
    return builtin_names("domains")


def load_domain(
    name_or_path: str | os.PathLike[str] | Mapping[str, Any] | DomainProfile,
    *,
    base_dir: str | os.PathLike[str] | None = None,
) -> DomainProfile:
    """Load a domain profile by built-in name, from a YAML file, or from a mapping.

    Args:
        name_or_path: a built-in name (``"mri"``), a path to a ``.yaml``
            file, a mapping with the profile's fields, or a profile (copied).
        base_dir: folder that relative paths are relative to (a config's
            folder); default the current folder.

    Returns:
        The validated profile.

    Raises:
        ConfigError: unknown name (listing the available ones), unreadable
            or unsafe YAML, unknown keys (with a did-you-mean hint) or
            invalid values.
    """
    if isinstance(name_or_path, DomainProfile):
        return name_or_path.model_copy(deep=True)
    if isinstance(name_or_path, Mapping):
        return validate(DomainProfile, dict(name_or_path), source="<domain mapping>", what="domain profile")
    if not isinstance(name_or_path, (str, os.PathLike)):
        raise ConfigError(f"a domain is a name, a path or a mapping, got {type(name_or_path).__name__}")
    if looks_like_path(name_or_path):
        path = Path(name_or_path).expanduser()
        if not path.is_absolute() and base_dir is not None and (Path(base_dir) / path).exists():
            path = Path(base_dir) / path
        data = read_yaml(path, "domain profile")
        return validate(DomainProfile, data, source=str(path), what="domain profile")
    name = str(name_or_path)
    path = builtin_path("domains", name)
    if path is None:
        available = list_domains()
        raise ConfigError(
            f"unknown domain profile {name!r}{suggest(name, available)} "
            f"(available: {', '.join(available)}; or give the path of a .yaml profile)"
        )
    profile = validate(
        DomainProfile, read_yaml(path, "domain profile"), source=str(path), what="domain profile"
    )
    if profile.name != name:
        raise ConfigError(f"{path}: profile name {profile.name!r} does not match its file name {name!r}")
    return profile


# =============================================================== choosing a profile
#: Meta key of the DICOM ``Modality`` value (set by :mod:`medsat_sr.io.dicom`).
MODALITY_KEY = "modality"


@functools.lru_cache(maxsize=1)
def _builtin_profiles() -> tuple[DomainProfile, ...]:
    """The built-in profiles, loaded once (callers get copies)."""
    return tuple(load_domain(name) for name in list_domains())


def _meta_of(image_or_meta: Any) -> Mapping[str, Any]:
    meta = getattr(image_or_meta, "meta", image_or_meta)
    if not isinstance(meta, Mapping):
        raise ConfigError(
            f"profile_for needs an image (MetaTensor) or its meta mapping, got {type(image_or_meta).__name__}"
        )
    return meta


def _what_matches(p: DomainProfile) -> str:
    if p.match.fallback:
        return f"{p.name} (fallback for {p.kind}s)"
    if p.match.modalities:
        return f"{p.name} (Modality {', '.join(p.match.modalities)})"
    if p.match.band_patterns:
        return f"{p.name} (bands {' | '.join(p.match.band_patterns)})"
    return f"{p.name} (by name only)"


def _input_label(meta: Mapping[str, Any]) -> str:
    path = meta.get(Key.SOURCE_PATH)
    return f"{path}: " if path else ""


def _specific_matches(
    kind: str, meta: Mapping[str, Any], pool: Sequence[DomainProfile]
) -> tuple[str, list[DomainProfile]]:
    """What the input offers (for messages) and the non-fallback profiles that match it."""
    if kind == "volume":
        modality = str(meta.get(MODALITY_KEY) or "").strip().upper()
        hits = [p for p in pool if modality and modality in {m.upper() for m in p.match.modalities}]
        return (f"DICOM Modality {modality!r}" if modality else "no modality (e.g. NIfTI)"), hits
    names = [str(n) for n in (meta.get(Key.BAND_NAMES) or [])]
    hits = [p for p in pool if names and p.match.band_patterns and all(p.match.band_match(n) for n in names)]
    # Prefer profiles that list every band by its exact name (B10 tells L1C from L2A).
    exact = [p for p in hits if p.bands is not None and set(names) <= set(p.band_names or [])]
    return f"band names {names}", (exact if len(exact) == 1 else hits)


def profile_for(
    image_or_meta: Any,
    *,
    profiles: Sequence[str | os.PathLike[str] | DomainProfile] | None = None,
    fallback: bool = True,
) -> DomainProfile:
    """The domain profile for an image, chosen from its metadata by each profile's ``match`` section.

    Rules, in order (only profiles of the image's ``kind`` take part):

    1. Volumes: the profile whose ``match.modalities`` holds the DICOM
       ``Modality`` of the image (meta key ``modality``, set by the DICOM
       reader): ``CT`` -> ``ct``, ``MR`` -> ``mri``.
       Rasters: the profile whose ``match.band_patterns`` match every band
       name; among several, the one that lists every band by name, if
       exactly one does.
    2. Two or more matches: an error naming them (choose one explicitly).
    3. No match: the ``match.fallback`` profile of that kind, with a log
       message: ``generic_volume`` for a volume without a modality (NIfTI
       carries none, and holds CT as often as MR) or with one no profile
       covers; ``multiband`` for a raster with unrecognised band names. A
       volume never silently gets the MRI profile. With ``fallback=False``,
       or when no fallback profile exists, an error listing the profiles
       and what each matches.

    Args:
        image_or_meta: an image (anything with a ``meta`` mapping, such as a
            MetaTensor from :func:`medsat_sr.io.read`) or its meta mapping.
        profiles: the candidates (names, YAML paths or profiles); default
            the built-in profiles (:func:`list_domains`).
        fallback: allow the fallback profile when nothing else matches.

    Returns:
        A copy of the chosen profile.

    Raises:
        ConfigError: no ``kind`` in the meta, an ambiguous match, or no
            match (without a usable fallback); the message lists the
            profiles and what each matches.
    """
    meta = _meta_of(image_or_meta)
    kind = meta.get(Key.KIND)
    label = _input_label(meta)
    if kind not in ("volume", "raster"):
        raise ConfigError(
            f"{label}cannot choose a domain profile: meta 'kind' must be 'volume' or 'raster', got {kind!r}"
        )
    every = _builtin_profiles() if profiles is None else tuple(load_domain(p) for p in profiles)
    pool = [p for p in every if p.kind == kind]
    offered, hits = _specific_matches(kind, meta, [p for p in pool if not p.match.fallback])
    listing = "; ".join(_what_matches(p) for p in pool) or "none"
    if len(hits) > 1:
        raise ConfigError(
            f"{label}{offered} match several {kind} profiles ({', '.join(p.name for p in hits)}); "
            f"name the domain explicitly (profiles: {listing})"
        )
    if hits:
        return hits[0].model_copy(deep=True)
    fallbacks = [p for p in pool if p.match.fallback] if fallback else []
    if len(fallbacks) == 1:
        name = fallbacks[0].name
        logger.info("%sno %s profile matches %s; using the fallback profile %r", label, kind, offered, name)
        return fallbacks[0].model_copy(deep=True)
    why = "several fallback profiles" if len(fallbacks) > 1 else "no profile matches"
    raise ConfigError(f"{label}{why} for a {kind} with {offered}; name the domain explicitly (profiles: {listing})")


def band_sort_key(name: str) -> tuple[int, int, int, str]:
    """Sort key putting band names in sensor order, from the profiles' band patterns.

    The first built-in band pattern with a ``number`` group that matches
    ``name`` gives ``(0, number, 1 if suffix else 0, NAME)``; Sentinel-2:
    ``B01 < B02 < ... < B08 < B8A < B09 < B10 < B11 < B12``. Other names
    come after, alphabetically: ``(1, 0, 0, NAME)``.
    """
    for profile in _builtin_profiles():
        m = profile.match.band_match(name)
        if m is not None and m.groupdict().get("number"):
            return (0, int(m.group("number")), 1 if m.groupdict().get("suffix") else 0, name.upper())
    return (1, 0, 0, name.upper())

"""The sections of a domain profile: bands, normalisation, degradation, metrics, match rules.

The pydantic models that :class:`medsat_sr.domains.DomainProfile` is built
from, one per section of a ``domains/<name>.yaml`` profile:

* **bands** (:class:`Band`, :class:`BandGroup`);
* **normalisation** (:data:`Normalisation`: :class:`HUWindow`,
  :class:`Percentile`, :class:`Reflectance` with :class:`BaselineOffset`,
  :class:`Linear`);
* **degradation** (:class:`DegradationSpec`: :class:`SliceProfileSpec`,
  :class:`PSFSpec`, :class:`KSpaceSpec`, :class:`NoiseSpec`);
* **metrics** (:class:`MetricSpec`: :class:`MaskSpec`, :class:`SSIMSpec`);
* **match** (:class:`MatchSpec`): which inputs a profile is for.

Each section validates itself; the rules that span sections (bands against
band groups, the MTF keys, ``data_range`` against the normalisation) are
:class:`~medsat_sr.domains.DomainProfile`'s. :mod:`medsat_sr.domains`
re-exports every name here, and :mod:`medsat_sr.config` uses the
degradation, normalisation and metrics sections as the schema of a job
config's partial overrides.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from fractions import Fraction as _Fraction
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BeforeValidator, Field, field_validator, model_validator

from medsat_sr._schema import StrictModel, located
from medsat_sr.errors import ConfigError

__all__ = [
    # bands
    "Band", "BandGroup",
    # normalisation
    "Normalisation", "HUWindow", "Percentile", "Reflectance", "BaselineOffset", "Linear", "Number",
    # degradation
    "DegradationSpec", "SliceProfileSpec", "PSFSpec", "KSpaceSpec", "NoiseSpec",
    # metrics
    "MetricSpec", "MaskSpec", "SSIMSpec",
    # match
    "MatchSpec", "BAND_PATTERN_GROUPS",
]

#: The pattern of band, band group and profile names.
_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$"


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
            or ``"fixed"`` (``data_range_value``, in values as read: 255
            for 8-bit imagery, whatever the normalisation).
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

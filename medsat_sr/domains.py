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

The section models (bands, normalisation, degradation, metrics, match) are
declared in :mod:`medsat_sr.domain_specs` and re-exported here; this module
holds the profile itself, its cross-section rules, loading and
:func:`profile_for`.

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
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from medsat_sr._resources import builtin_names, builtin_path, looks_like_path, read_yaml, suggest
from medsat_sr._schema import StrictModel, located, validate
from medsat_sr.domain_specs import (
    Band,
    BandGroup,
    BaselineOffset,
    DegradationSpec,
    HUWindow,
    KSpaceSpec,
    Linear,
    MaskSpec,
    MatchSpec,
    MetricSpec,
    NoiseSpec,
    Normalisation,
    Percentile,
    PSFSpec,
    Reflectance,
    SliceProfileSpec,
    SSIMSpec,
    _NAME,
)
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

#: The classical baselines a profile can name, and the image kind each serves.
BASELINES: dict[str, str] = {"bspline": "volume", "gdal_cubic": "raster", "gdal_lanczos": "raster"}

#: The value of :attr:`DomainProfile.baseline`.
Baseline = Literal["bspline", "gdal_cubic", "gdal_lanczos"]


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


def band_sort_key(name: str) -> tuple[int, int, int, tuple[tuple[int, int | str], ...]]:
    """Sort key putting band names in sensor order, from the profiles' band patterns.

    The first built-in band pattern with a ``number`` group that matches
    ``name`` gives ``(0, number, 1 if suffix else 0, ...)``; Sentinel-2:
    ``B01 < B02 < ... < B08 < B8A < B09 < B10 < B11 < B12``. Other names
    come after, in natural order (case-insensitive, digit runs compared as
    numbers): a Landsat Level-1 folder reads ``l8_B1 < l8_B2 < ... < l8_B9 <
    l8_B10 < l8_B11``, not ``l8_B1 < l8_B10 < l8_B11 < l8_B2``.
    """
    natural = tuple((0, int(t)) if t.isdigit() else (1, t) for t in re.findall(r"\d+|\D+", name.upper()))
    for profile in _builtin_profiles():
        m = profile.match.band_match(name)
        if m is not None and m.groupdict().get("number"):
            return (0, int(m.group("number")), 1 if m.groupdict().get("suffix") else 0, natural)
    return (1, 0, 0, natural)

"""Job configs: validated recipes that name a domain profile and set the task.

A config is YAML data (``configs/<name>.yaml`` or any file), read with
``yaml.safe_load`` only and validated by :class:`JobConfig` at load time:

* an unknown key anywhere is an error naming its location and the closest
  valid key (``train.max_iteratons: unknown key; did you mean
  'max_iterations'?``);
* values are range-checked (``train.lr: Input should be greater than 0, got -1.0``);
* every message starts with the config file it is about;
* the named domain profile is resolved and validated, with the config's
  ``degradation``, ``normalisation`` and ``metrics`` sections merged over the
  profile's (:attr:`JobConfig.profile`);
* ``--set a.b=value`` overrides are checked against the schema before they
  are applied; the value is parsed with ``yaml.safe_load`` (numbers,
  booleans, lists, null) and falls back to the raw string
  (:mod:`medsat_sr.overrides`).

Keys that scripts rely on and that stay fixed: ``data.inputs`` (list of
paths), ``train.max_iterations``, ``train.max_minutes``, ``train.mode``
(``supervised`` | ``self_supervised`` | ``finetune``), ``model.name`` and
``scale``.

**Scale.** ``scale`` is one of

* a number ``s > 1``: the same factor on every spatial axis;
* a list with one factor per spatial axis (2 for rasters, 3 for volumes, in
  array axis order), each ``>= 1`` and at least one ``> 1`` (``[1, 1, 4]``);
* ``auto``: derived from the data. For volumes, every axis coarser than the
  target spacing is upsampled to it: with no ``target_spacing`` the target
  is the finest spacing of the image, so a thick-slice scan becomes
  isotropic at its in-plane spacing (4.8 mm slices at 1.0156 mm in-plane:
  ``(1, 1, 4.726)``). ``target_spacing`` (mm, one value or one per axis)
  sets the target explicitly; an axis is never downsampled. For rasters
  with band groups, ``auto`` is the ratio of the target bands' resolution
  to the guide bands' (20 m / 10 m = 2).

Factors are at most :data:`MAX_SCALE`. :meth:`JobConfig.scale_for` turns the
setting into per-axis factors for a given image spacing.

Paths (``data.inputs``, ``data.validation``, ``data.pairs``, ``train.init``,
a ``domain`` given as a file) written in a config file are relative to that
file; paths given with ``--set`` are left as given (relative to the current
folder).

Example:
    >>> from medsat_sr.config import load_config
    >>> cfg = load_config("mri_thick_slice", ["train.max_iterations=50"])
    >>> cfg.train.max_iterations, cfg.profile.name, cfg.scale
    (50, 'mri', 'auto')
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BeforeValidator, Field, PrivateAttr, ValidationError, model_validator

from medsat_sr import zoo
from medsat_sr._resources import builtin_names, builtin_path, looks_like_path, read_yaml, suggest
from medsat_sr._schema import (
    OverrideOf,
    Problem,
    StrictModel,
    located,
    merge_problems,
    problems_from,
    raise_problems,
    unknown_keys,
)
from medsat_sr.config_checks import cross_checks, group_ratio
from medsat_sr.config_sections import __all__ as _SECTIONS
from medsat_sr.config_sections import (  # re-exported: the sections of a JobConfig
    MAX_SCALE,
    MODEL_NAMES,
    AdversarialConfig,
    BandsConfig,
    DataConfig,
    EarlyStoppingConfig,
    InferenceConfig,
    LossTerm,
    ModelConfig,
    OutputConfig,
    PairSpec,
    ScaleValue,
    ScheduleConfig,
    TrainConfig,
    _degradation_word,
    _is_number,
    _nums,
    _domain_value,
    _parse_spacing,
)
from medsat_sr.domain_specs import DegradationSpec, MetricSpec, Normalisation
from medsat_sr.domains import DomainProfile, load_domain
from medsat_sr.errors import ConfigError
from medsat_sr.geometry import snap_scale
from medsat_sr.inference.options import TEMPLATE_FIELDS  # noqa: F401  (re-exported)
from medsat_sr.multistack.options import MultiStackOptions
from medsat_sr.overrides import apply_overrides as _apply_overrides, parse_override
from medsat_sr.revisit.options import RevisitOptions

__all__ = [  # and the sections of a job config, re-exported from config_sections
    "JobConfig",
    "load_config",
    "list_configs",
    "parse_override",
    "apply_overrides",
    "with_degradation",
    "TEMPLATE_FIELDS",
    *_SECTIONS,
]

# =============================================================== the job
class JobConfig(StrictModel):
    """A validated job config. Build it with :func:`load_config`.

    Attributes:
        name: the config's name (default: its file stem).
        description: free text.
        domain: domain profile name or path, or the profile itself as a
            mapping (as :meth:`resolved` writes it: a checkpoint's config
            loads again whatever profiles this install knows).
        scale: see the module docstring.
        target_spacing: output spacing in mm for ``scale: auto`` (volumes).
        data: inputs and patch sampling.
        model: the network.
        train: training mode, budget and optimisation.
        bands: raster band roles.
        degradation: partial override merged over the profile's degradation;
            ``auto`` estimates the input's degradation first (:mod:`medsat_sr.estimate`).
        normalisation: partial override of the profile's normalisation
            (a different ``method`` replaces it).
        metrics: partial override of the profile's metric settings.
        inference: tiling, precision, TTA, uncertainty, device.
        output: dtype, format, COG, batch name template.
        revisit: the revisit route's options (several frames of one scene
            fused into one raster); its presence selects that route.
        multistack: the multi-stack route's options (several thick-slice stacks
            of one anatomy into one isotropic volume; configs/mri_multistack.yaml).
    """

    name: str = ""
    description: str = ""
    domain: Annotated[str | dict[str, Any], BeforeValidator(_domain_value)]
    scale: ScaleValue
    target_spacing: Annotated[float | list[float] | None, BeforeValidator(_parse_spacing)] = None
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    bands: BandsConfig = Field(default_factory=BandsConfig)
    degradation: Annotated[dict[str, Any], OverrideOf(DegradationSpec), BeforeValidator(_degradation_word)] = Field(
        default_factory=dict)
    normalisation: Annotated[dict[str, Any], OverrideOf(Normalisation)] = Field(default_factory=dict)
    metrics: Annotated[dict[str, Any], OverrideOf(MetricSpec)] = Field(default_factory=dict)
    inference: InferenceConfig = Field(default_factory=InferenceConfig)
    output: OutputConfig = Field(default_factory=OutputConfig)
    revisit: RevisitOptions | None = None
    multistack: MultiStackOptions | None = None

    _profile: DomainProfile | None = PrivateAttr(default=None)
    _source: str = PrivateAttr(default="<config>")

    @model_validator(mode="after")
    def _spacing(self) -> JobConfig:
        if self.target_spacing is not None and self.scale != "auto":
            raise located("target_spacing", f"only used with scale: auto (scale is {self.scale!r})")
        return self

    # ----------------------------------------------------------- derived values
    @property
    def source(self) -> str:
        """Where the config came from (a file path, or ``<config mapping>``)."""
        return self._source

    @property
    def profile(self) -> DomainProfile:
        """The effective domain profile: the named profile with this config's overrides merged in."""
        if self._profile is None:
            self._profile, problems = _effective_profile(self, base_dir=None)
            raise_problems(problems, source=self._source, what="config")
        return self._profile

    @property
    def spatial_dims(self) -> int:
        """The model's spatial dimensions (``model.spatial_dims`` or the domain's default)."""
        if self.model.spatial_dims is not None:
            return self.model.spatial_dims
        return 2 if self.profile.kind == "raster" else 3

    def target_bands(self) -> list[str] | None:
        """Band names the model sharpens (``None``: all bands, count from the data)."""
        p = self.profile
        if self.bands.targets is not None:
            return p.expand_bands(self.bands.targets)
        if p.band_groups:
            return p.expand_bands([g.name for g in p.groups("target")])
        return None

    def guide_bands(self) -> list[str]:
        """Band names given to the guided model as guidance."""
        return self.profile.expand_bands(self.bands.guides) if self.bands.guides else []

    def guided(self) -> bool:
        """Whether the config sharpens target bands with guide bands (a band set), not one raster."""
        return bool(self.target_bands() and self.guide_bands())

    def scale_for(self, spacing: Sequence[float] | None = None) -> tuple[float, ...]:
        """Per-axis scale factors for an image.

        Args:
            spacing: the image's spacing per spatial axis (volumes, mm); needed
                for ``scale: auto`` on volumes.

        Returns:
            One factor per spatial axis of the data (3 for volumes, 2 for rasters).

        Raises:
            ConfigError: ``auto`` without a spacing, an image that is already
                at the target spacing, a spacing of the wrong length, or a
                factor above :data:`MAX_SCALE`.
        """
        ndim = 2 if self.profile.kind == "raster" else 3
        if isinstance(self.scale, float):
            return (self.scale,) * ndim
        if isinstance(self.scale, list):
            return tuple(self.scale)
        if self.profile.kind == "raster":
            r = group_ratio(self)
            if r is None:
                raise ConfigError(
                    f"{self._source}: scale: auto on rasters needs bands.targets and bands.guides with known resolutions"
                )
            return (r, r)
        if spacing is None or len(spacing) != 3 or not all(_is_number(s) and s > 0 for s in spacing):
            raise ConfigError(
                f"{self._source}: scale: auto needs the image spacing (3 positive numbers), got {spacing!r}"
            )
        sp = [float(s) for s in spacing]
        if self.target_spacing is None:
            target = [min(sp)] * 3
        elif isinstance(self.target_spacing, float):
            target = [self.target_spacing] * 3
        else:
            target = list(self.target_spacing)
        factors = snap_scale([max(1.0, s / t) for s, t in zip(sp, target, strict=True)])
        if max(factors) <= 1.0:
            raise ConfigError(
                f"{self._source}: scale: auto found nothing to upsample: spacing {_nums(sp)} mm is already at "
                f"or below the target {_nums(target)} mm"
            )
        if max(factors) > MAX_SCALE:
            raise ConfigError(f"{self._source}: scale: auto gives {_nums(factors)}, above the maximum {MAX_SCALE:g}; "
                              "set scale or a coarser target spacing")
        return factors

    def check_runnable(self, task: Literal["train", "upscale", "evaluate"] = "train") -> None:
        """Check what only a run needs (a config may load without it).

        Raises:
            ConfigError: ``finetune`` without ``train.init`` (``--init``), or
                ``supervised`` training without ``data.inputs``/``data.pairs``.
        """
        if task != "train":
            return
        if self.train.mode == "finetune" and not self.train.init:
            raise ConfigError(
                f"{self._source}: train.mode finetune needs a starting checkpoint: pass --init CKPT or --set train.init=PATH"
            )
        if self.train.mode == "supervised" and not (self.data.inputs or self.data.pairs):
            raise ConfigError(
                f"{self._source}: supervised training needs data.inputs (references) or data.pairs"
            )

    # ----------------------------------------------------------- serialisation
    def resolved(self) -> dict[str, Any]:
        """The fully resolved config as JSON-serialisable data (for ``--dry-run``).

        The domain profile, with this config's ``degradation``,
        ``normalisation`` and ``metrics`` merged in, replaces ``domain``;
        ``model.name`` and ``model.spatial_dims`` are filled in.
        """
        out = self.model_dump(mode="json", exclude={"degradation", "normalisation", "metrics"})
        out["domain"] = self.profile.model_dump(mode="json")
        out["model"]["spatial_dims"] = self.spatial_dims
        out["model"]["name"] = self.model.name or self.profile.default_model
        return out

    def config_hash(self, *, exclude: Iterable[str] = ()) -> str:
        """A stable sha256 (hex) of :meth:`resolved`, without ``description``.

        Args:
            exclude: dotted keys left out as well (``"data.inputs"`` for a
                batch, whose recipe does not depend on the input list).
        """
        data = self.resolved()
        data.pop("description", None)
        for key in exclude:
            parts = key.split(".")
            node: Any = data
            for p in parts[:-1]:
                node = node.get(p) if isinstance(node, dict) else None
            if isinstance(node, dict):
                node.pop(parts[-1], None)
        text = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
        return hashlib.sha256(text.encode("ascii")).hexdigest()

    def to_yaml(self) -> str:
        """:meth:`resolved` as YAML text (``yaml.safe_dump``)."""
        return yaml.safe_dump(self.resolved(), sort_keys=False, allow_unicode=True)


# =============================================================== helpers
def _merge(base: Any, over: Any, *, replace_on: str | None = None) -> Any:
    """Deep-merge ``over`` into ``base`` (dicts merge, everything else replaces)."""
    if isinstance(base, Mapping) and isinstance(over, Mapping):
        if replace_on is not None and replace_on in over and over[replace_on] != base.get(replace_on):
            return copy.deepcopy(dict(over))
        out = dict(base)
        for k, v in over.items():
            out[k] = _merge(base[k], v) if k in base else copy.deepcopy(v)
        return out
    return copy.deepcopy(over)


def _effective_profile(
    cfg: JobConfig, base_dir: str | os.PathLike[str] | None
) -> tuple[DomainProfile | None, list[Problem]]:
    try:
        base = load_domain(cfg.domain, base_dir=base_dir)
    except ConfigError as exc:
        return None, [Problem("domain", str(exc))]
    overrides = {k: getattr(cfg, k) for k in ("degradation", "normalisation", "metrics") if getattr(cfg, k)}
    if not overrides:
        return base, []
    data = base.model_dump(mode="python")
    for key, over in overrides.items():
        data[key] = _merge(data[key], over, replace_on="method" if key == "normalisation" else None)
    psf_over = overrides.get("degradation", {}).get("psf")
    if isinstance(psf_over, Mapping):  # the PSF width is one of two forms: setting one drops the other
        psf = data["degradation"]["psf"]
        for given, other in (("mtf_nyquist", "fwhm"), ("fwhm", "mtf_nyquist")):
            if psf_over.get(given) is not None and other not in psf_over:
                psf[other] = None
        if psf_over.get("shape") == "box":  # pixel integration has no width
            for key in ("mtf_nyquist", "fwhm"):
                if key not in psf_over:
                    psf[key] = None
    problems = unknown_keys(data, DomainProfile)
    try:
        profile = DomainProfile.model_validate(data)
    except ValidationError as exc:
        return None, merge_problems(problems, problems_from(exc, data))
    return (None if problems else profile), problems


def with_degradation(cfg: JobConfig, override: Mapping[str, Any]) -> JobConfig:
    """A copy of ``cfg`` whose degradation override also holds ``override`` (an estimate, #14).

    The copy's ``estimate`` is ``"profile"`` (it degrades with the values given)
    unless ``override`` says ``estimate: auto``.

    Raises:
        ConfigError: the merged degradation is not a valid profile.
    """
    merged = _merge(dict(cfg.degradation), {"estimate": "profile", **dict(override)})
    out = cfg.model_copy(update={"degradation": merged})
    out._source = cfg._source
    out._profile = None
    profile, problems = _effective_profile(out, base_dir=None)
    raise_problems(problems, source=cfg._source, what="config")
    out._profile = profile
    return out


# =============================================================== overrides
def apply_overrides(data: Mapping[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Apply ``--set`` items to a raw job-config mapping (a copy), checked against :class:`JobConfig`.

    See :func:`medsat_sr.overrides.apply_overrides`.

    Raises:
        ConfigError: a malformed item, or a key path that the schema does
            not have (with a did-you-mean hint).
    """
    return _apply_overrides(data, overrides, schema=JobConfig)


# =============================================================== loading
def list_configs() -> list[str]:
    """Names of the built-in configs (``configs/*.yaml``)."""
    return builtin_names("configs")


def _absolute(value: str, base: Path) -> str:
    p = Path(value).expanduser()
    return str(p if p.is_absolute() else base / p)


def _checkpoint_exists(path: str) -> bool:
    return Path(path).exists() or Path(path + ".json").exists()


def _resolve_paths(data: dict[str, Any], base: Path) -> None:
    """Make relative paths written in a config file relative to its folder (in place)."""
    d = data.get("data")
    if isinstance(d, dict):
        for key in ("inputs", "validation"):
            v = d.get(key)
            if isinstance(v, str):
                d[key] = _absolute(v, base)
            elif isinstance(v, list):
                d[key] = [_absolute(x, base) if isinstance(x, str) and x else x for x in v]
        pairs = d.get("pairs")
        if isinstance(pairs, list):
            for pair in pairs:
                if isinstance(pair, dict):
                    for k in ("lr", "hr"):
                        if isinstance(pair.get(k), str) and pair[k]:
                            pair[k] = _absolute(pair[k], base)
    t = data.get("train")
    if isinstance(t, dict) and isinstance(t.get("init"), str) and t["init"]:
        local = _absolute(t["init"], base)
        if not (zoo.is_shipped(t["init"]) and not _checkpoint_exists(local)):  # a shipped model's name stays a name
            t["init"] = local
    dom = data.get("domain")
    if isinstance(dom, str) and looks_like_path(dom):
        data["domain"] = _absolute(dom, base)


def _build(data: dict[str, Any], source: str, base_dir: Path | None) -> JobConfig:
    problems = unknown_keys(data, JobConfig)
    try:
        cfg = JobConfig.model_validate(data)
    except ValidationError as exc:
        raise_problems(merge_problems(problems, problems_from(exc, data)), source=source, what="config")
        raise AssertionError("unreachable") from None  # pragma: no cover
    raise_problems(problems, source=source, what="config")
    cfg._source = source
    profile, problems = _effective_profile(cfg, base_dir)
    raise_problems(problems, source=source, what="config")
    assert profile is not None
    cfg._profile = profile
    raise_problems(cross_checks(cfg, profile), source=source, what="config")
    return cfg


def load_config(
    name_or_path: str | os.PathLike[str] | Mapping[str, Any] | JobConfig,
    overrides: Sequence[str] = (),
) -> JobConfig:
    """Load, override and validate a job config.

    Args:
        name_or_path: a built-in config name (``"mri_thick_slice"``, from
            ``configs/`` of the checkout or the installed wheel), a path to
            a YAML file, a mapping, or a :class:`JobConfig` (re-validated
            with the overrides).
        overrides: ``--set`` items, ``"a.b=value"``, applied in order.

    Returns:
        The validated config, with :attr:`JobConfig.profile` resolved.

    Raises:
        ConfigError: unknown config name (listing the built-in ones), an
            unreadable file or unsafe YAML, unknown keys (location and
            did-you-mean hint), out-of-range values, an unknown domain
            (listing the available ones) or inconsistent settings; the
            message starts with the config file.
    """
    if isinstance(overrides, str):
        overrides = [overrides]
    base_dir: Path | None = None
    if isinstance(name_or_path, JobConfig):
        source = name_or_path.source
        data = name_or_path.model_dump(mode="python")
    elif isinstance(name_or_path, Mapping):
        source = "<config mapping>"
        data = copy.deepcopy(dict(name_or_path))
    elif isinstance(name_or_path, (str, os.PathLike)):
        if looks_like_path(name_or_path):
            path = Path(name_or_path).expanduser()
            data = read_yaml(path, "config")
            base_dir = path.resolve().parent
            _resolve_paths(data, base_dir)
        else:
            name = str(name_or_path)
            found = builtin_path("configs", name)
            if found is None:
                available = list_configs()
                raise ConfigError(
                    f"unknown config {name!r}{suggest(name, available)} "
                    f"(built-in: {', '.join(available)}; or give the path of a .yaml file)"
                )
            path = found
            data = read_yaml(path, "config")
        source = str(path)
        if not data.get("name"):
            data["name"] = path.stem.split(".")[0]
    else:
        raise ConfigError(f"a config is a name, a path or a mapping, got {type(name_or_path).__name__}")
    try:
        data = apply_overrides(data, overrides) if overrides else data
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    try:
        return _build(data, source, base_dir)
    except ConfigError as exc:
        culprits = [o for o in overrides if str(o).split("=", 1)[0].strip() in str(exc)]
        if not culprits:
            raise
        raise ConfigError(f"{exc} (set by --set {', '.join(culprits)})") from None

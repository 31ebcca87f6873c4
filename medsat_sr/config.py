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
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BeforeValidator,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from medsat_sr._resources import builtin_names, builtin_path, looks_like_path, read_yaml, suggest
from medsat_sr._schema import (
    SizeValue,
    OverrideOf,
    Problem,
    StrictModel,
    located,
    merge_problems,
    problems_from,
    raise_problems,
    unknown_keys,
)
from medsat_sr.domain_specs import DegradationSpec, MetricSpec, Normalisation
from medsat_sr.domains import DomainProfile, load_domain
from medsat_sr.errors import ConfigError
from medsat_sr.geometry import snap_scale
from medsat_sr.inference.options import InferenceOptions, OutputOptions
from medsat_sr.multistack.options import MultiStackOptions
from medsat_sr.overrides import apply_overrides as _apply_overrides, parse_override
from medsat_sr.revisit.options import RevisitOptions

__all__ = [
    "JobConfig",
    "DataConfig",
    "PairSpec",
    "ModelConfig",
    "TrainConfig",
    "LossTerm",
    "ScheduleConfig",
    "EarlyStoppingConfig",
    "AdversarialConfig",
    "BandsConfig",
    "InferenceConfig",
    "OutputConfig",
    "load_config",
    "list_configs",
    "parse_override",
    "apply_overrides",
    "MAX_SCALE",
    "MODEL_NAMES",
    "TEMPLATE_FIELDS",
]

#: The largest accepted scale factor on any axis.
MAX_SCALE = 16.0

#: Architectures known when :mod:`medsat_sr.models` cannot be imported.
MODEL_NAMES = ("srresnet", "edsr", "rcan", "dcsrn", "guided", "unguided")

#: Model arguments that come from the data and the config, not from ``model.kwargs``.
RESERVED_MODEL_KWARGS = ("spatial_dims", "in_channels", "out_channels", "scale", "guide_channels")

from medsat_sr.inference.options import TEMPLATE_FIELDS  # noqa: E402  (re-exported)

Precision = Literal["fp32", "bf16", "auto"]


def _known_models() -> list[str]:
    try:  # a broken or half-written models package must not break config loading
        from medsat_sr.models import MODELS
    except Exception:  # noqa: BLE001
        return list(MODEL_NAMES)
    return sorted(MODELS)


def _nums(values: Sequence[float]) -> str:
    """Numbers for a message: ``[0.5, 0.5, 5]`` (4 significant digits, no float noise)."""
    return "[" + ", ".join(f"{float(v):.4g}" for v in values) + "]"


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))


# =============================================================== field types
def _parse_scale(value: Any) -> Any:
    if isinstance(value, str) and value.strip().lower() == "auto":
        return "auto"
    if _is_number(value):
        v = float(value)
        if not 1.0 < v <= MAX_SCALE:
            raise ValueError(
                f"must be > 1 and <= {MAX_SCALE:g} (or a per-axis list, or 'auto'), got {value!r}"
            )
        return v
    if isinstance(value, (list, tuple)):
        if len(value) not in (2, 3) or not all(_is_number(v) for v in value):
            raise ValueError(f"a per-axis scale is a list of 2 or 3 numbers, got {value!r}")
        vs = [float(v) for v in value]
        if any(not 1.0 <= v <= MAX_SCALE for v in vs) or max(vs) <= 1.0:
            raise ValueError(
                f"per-axis factors must be in [1, {MAX_SCALE:g}] with at least one > 1, got {value!r}"
            )
        return vs
    raise ValueError(f"expected a number > 1, a per-axis list or 'auto', got {value!r}")


#: ``scale``: a number > 1, a per-axis list, or ``"auto"``.
ScaleValue = Annotated[float | list[float] | Literal["auto"], BeforeValidator(_parse_scale)]


def _degradation_word(value: Any) -> Any:
    """``degradation: auto`` / ``profile``: shorthand for ``{estimate: auto}`` / ``{estimate: profile}`` (#14)."""
    if value in ("auto", "profile"):
        return {"estimate": value}
    return value


def _parse_spacing(value: Any) -> Any:
    if value is None:
        return None
    if _is_number(value):
        if float(value) <= 0:
            raise ValueError(f"must be > 0 mm, got {value!r}")
        return float(value)
    if (
        isinstance(value, (list, tuple))
        and len(value) == 3
        and all(_is_number(v) and float(v) > 0 for v in value)
    ):
        return [float(v) for v in value]
    raise ValueError(f"expected a spacing in mm (> 0) or a list of 3, got {value!r}")





def _as_list(value: Any) -> Any:
    if isinstance(value, (str, os.PathLike)):
        return [os.fspath(value)]
    return value


PathList = Annotated[list[Annotated[str, Field(min_length=1)]], BeforeValidator(_as_list)]


# =============================================================== sections
class PairSpec(StrictModel):
    """An explicit low/high-resolution pair for supervised training."""

    lr: str = Field(min_length=1)
    hr: str = Field(min_length=1)


class DataConfig(StrictModel):
    """Where the data come from and how patches are sampled.

    Attributes:
        inputs: input paths (files, folders, globs). For ``supervised``: the
            high-resolution references; for ``self_supervised`` and
            ``finetune``: the images to learn from (the upscale INPUT is
            added by the CLI).
        validation: held-out references (supervised); empty = hold out
            ``val_fraction`` of the training data.
        pairs: explicit LR/HR pairs (supervised), instead of synthetic
            degradation.
        val_fraction: fraction held out for validation when ``validation``
            is empty (self-supervised: of the image's slices/area).
        min_valid_fraction: patches with less valid (not nodata) and
            foreground content than this are rejected.
        background_probability: probability of drawing a patch anywhere,
            so background patches stay rare but present.
        series: DICOM series to read when a folder holds several.
    """

    inputs: PathList = Field(default_factory=list)
    validation: PathList = Field(default_factory=list)
    pairs: list[PairSpec] = Field(default_factory=list)
    val_fraction: float = Field(0.1, ge=0, le=0.5)
    min_valid_fraction: float = Field(0.5, ge=0, le=1)
    background_probability: float = Field(0.1, ge=0, le=1)
    series: str | None = None


class ModelConfig(StrictModel):
    """The network.

    Attributes:
        name: a key of :data:`medsat_sr.models.MODELS`; ``None`` takes the
            domain profile's ``default_model``.
        spatial_dims: 2 (images, or slice-wise on volumes as in SMORE) or 3
            (volumetric); ``None``: 2 for rasters, 3 for volumes.
        kwargs: architecture arguments (``features``, ``n_blocks``, ...),
            checked by ``build_model``. Channel counts and scale come from
            the data and the config and may not be set here.
    """

    name: str | None = None
    spatial_dims: Literal[2, 3] | None = None
    kwargs: dict[str, Any] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _known(cls, v: str | None) -> str | None:
        if v is None:
            return v
        names = _known_models()
        if v not in names:
            raise ValueError(f"unknown model {v!r}{suggest(v, names)} (available: {', '.join(names)})")
        return v

    @field_validator("kwargs")
    @classmethod
    def _kwargs(cls, v: dict[str, Any]) -> dict[str, Any]:
        for key in v:
            if key in RESERVED_MODEL_KWARGS:
                raise ValueError(f"{key!r} is set from the data and the config, remove it from model.kwargs")
            if not str(key).isidentifier():
                raise ValueError(f"argument names are identifiers, got {key!r}")
        return v


class LossTerm(StrictModel):
    """One term of the training loss: ``weight * loss``."""

    name: Literal["l1", "charbonnier", "mse", "ssim"]
    weight: float = Field(1.0, gt=0, le=1000)
    eps: float | None = Field(None, gt=0, le=1)

    @model_validator(mode="after")
    def _eps(self) -> LossTerm:
        if self.eps is not None and self.name != "charbonnier":
            raise located("eps", f"only the charbonnier loss takes eps, not {self.name!r}")
        return self


class ScheduleConfig(StrictModel):
    """Learning-rate schedule.

    Attributes:
        name: ``constant``, ``cosine`` (to ``min_lr`` at the last iteration),
            ``step`` (times ``gamma`` every ``step_size`` iterations) or
            ``plateau`` (times ``gamma`` after ``patience`` validations
            without improvement).
        warmup_iterations: linear warm-up from 0.
        min_lr: floor of ``cosine``.
    """

    name: Literal["constant", "cosine", "step", "plateau"] = "cosine"
    warmup_iterations: int = Field(0, ge=0)
    min_lr: float = Field(0.0, ge=0)
    step_size: int | None = Field(None, ge=1)
    gamma: float = Field(0.5, gt=0, le=1)
    patience: int = Field(5, ge=1)

    @model_validator(mode="after")
    def _step(self) -> ScheduleConfig:
        if self.name == "step" and self.step_size is None:
            raise located("step_size", "the 'step' schedule needs step_size")
        if self.name != "step" and self.step_size is not None:
            raise located("step_size", f"only used by the 'step' schedule (name is {self.name!r})")
        return self


class EarlyStoppingConfig(StrictModel):
    """Stop when validation PSNR has not improved by ``min_delta`` dB for ``patience`` validations."""

    enabled: bool = True
    patience: int = Field(10, ge=1)
    min_delta: float = Field(0.0, ge=0)


class AdversarialConfig(StrictModel):
    """Optional adversarial loss: ``pixel losses + weight * adversarial`` (off by default).

    Attributes:
        enabled: turn it on.
        weight: lambda of the adversarial term.
        discriminator: arguments of ``build_discriminator("patch", ...)``.
        lr: discriminator learning rate (default: ``train.lr``).
        start_iteration: iterations of pixel-loss-only training first.
    """

    enabled: bool = False
    weight: float = Field(1e-3, gt=0, le=1)
    discriminator: dict[str, Any] = Field(default_factory=dict)
    lr: float | None = Field(None, gt=0, le=1)
    start_iteration: int = Field(0, ge=0)


class TrainConfig(StrictModel):
    """Training: mode, budget, optimisation and transfer settings.

    Attributes:
        mode: ``supervised`` (references degraded by the profile's model,
            or ``data.pairs``), ``self_supervised`` (SMORE/ECLARE for thick
            slices, Wald's protocol for rasters: learns from the input
            alone) or ``finetune`` (starts from ``init``).
        max_iterations: iteration budget (>= 1).
        max_minutes: wall-clock budget (> 0); training stops at whichever
            budget ends first.
        batch_size: patches per iteration.
        patch_size: high-resolution patch size (per axis or one for all).
        lr: Adam learning rate, in ``(0, 1]``.
        weight_decay: AdamW weight decay.
        schedule: learning-rate schedule.
        losses: weighted sum of ``l1``, ``charbonnier``, ``mse``, ``ssim``.
        precision: ``fp32``, ``bf16`` (``torch.autocast``) or ``auto``: bf16
            where the device runs it natively, else fp32
            (:func:`medsat_sr.hardware.resolve_precision`).
        val_every: validate every N iterations.
        early_stopping: stop on a validation plateau.
        seed: random seed.
        init: checkpoint to start from (``finetune`` only; ``--init``).
        finetune_pairs: how ``finetune`` makes its pairs: ``self_supervised``
            (default) or ``supervised``.
        freeze_blocks: ``finetune``: freeze the head and the first N blocks,
            or ``"body"`` (all but the reconstruction).
        adversarial: the optional adversarial loss.
        grad_clip: clip the gradient norm.
    """

    mode: Literal["supervised", "self_supervised", "finetune"] = "self_supervised"
    max_iterations: int = Field(2000, ge=1)
    max_minutes: float = Field(10.0, gt=0)
    batch_size: int = Field(16, ge=1, le=4096)
    patch_size: SizeValue = 48
    lr: float = Field(2e-4, gt=0, le=1)
    weight_decay: float = Field(0.0, ge=0)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    losses: list[LossTerm] = Field(default_factory=lambda: [LossTerm(name="l1")], min_length=1)
    precision: Precision = "fp32"
    val_every: int = Field(100, ge=1)
    early_stopping: EarlyStoppingConfig = Field(default_factory=EarlyStoppingConfig)
    seed: int = Field(0, ge=0)
    init: str | None = None
    finetune_pairs: Literal["self_supervised", "supervised"] | None = None
    freeze_blocks: Annotated[int, Field(ge=0)] | Literal["body"] = 0
    adversarial: AdversarialConfig = Field(default_factory=AdversarialConfig)
    grad_clip: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _modes(self) -> TrainConfig:
        names = [term.name for term in self.losses]
        for i, n in enumerate(names):
            if n in names[:i]:
                raise located(f"losses.{i}.name", f"loss {n!r} is listed twice")
        if self.mode != "finetune":
            if self.init is not None:
                raise located(
                    "init", f"a starting checkpoint is only used with mode 'finetune' (mode is {self.mode!r})"
                )
            if self.freeze_blocks != 0:
                raise located("freeze_blocks", f"only used with mode 'finetune' (mode is {self.mode!r})")
            if self.finetune_pairs is not None:
                raise located("finetune_pairs", f"only used with mode 'finetune' (mode is {self.mode!r})")
        if self.schedule.min_lr > self.lr:
            raise located(
                "schedule.min_lr", f"must not exceed lr ({self.lr:g}), got {self.schedule.min_lr:g}"
            )
        return self


class BandsConfig(StrictModel):
    """Which raster bands are sharpened and which guide (band or group names of the profile).

    Attributes:
        targets: bands the model sharpens; ``None``: all bands (or, with
            band groups, the groups whose role is ``target``).
        guides: fine bands given to the ``guided`` model at full resolution.
        others: coarse bands in neither list: ``cubic`` (GDAL cubic onto
            the output grid) or ``drop``. Bands already on the output grid
            pass through unchanged.
    """

    targets: list[str] | None = None
    guides: list[str] = Field(default_factory=list)
    others: Literal["cubic", "drop"] = "cubic"


#: The ``inference:`` and ``output:`` sections are the upscale options, declared once in
#: :mod:`medsat_sr.inference.options`.
InferenceConfig = InferenceOptions
OutputConfig = OutputOptions


# =============================================================== the job
class JobConfig(StrictModel):
    """A validated job config. Build it with :func:`load_config`.

    Attributes:
        name: the config's name (default: its file stem).
        description: free text.
        domain: domain profile name or path.
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
    domain: str = Field(min_length=1)
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
            r = _group_ratio(self)
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


def _group_ratio(cfg: JobConfig) -> float | None:
    """Resolution of the target bands over that of the guide bands, when both are known."""
    p = cfg.profile if cfg._profile is not None else None
    if p is None or p.bands is None or not cfg.bands.guides:
        return None
    targets = cfg.target_bands()
    if not targets:
        return None
    try:
        rt = p.resolution_of(targets)
        rg = p.resolution_of(cfg.bands.guides)
    except ConfigError:
        return None
    if rt is None or rg is None:
        return None
    return rt / rg


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


def _cross_checks(cfg: JobConfig, p: DomainProfile) -> list[Problem]:
    """Rules that need the domain profile: axes and sizes, outputs, then the model and bands."""
    out = _axis_checks(cfg, p) + _output_checks(cfg, p)
    return out + _model_and_band_checks(cfg, p, blocking=bool(out))


def _axis_checks(cfg: JobConfig, p: DomainProfile) -> list[Problem]:
    """Scale, spacing, model dimensions, patch and tile sizes against the domain's kind and degradation."""
    out: list[Problem] = []
    raster = p.kind == "raster"
    ndim = 2 if raster else 3
    if isinstance(cfg.scale, list) and len(cfg.scale) != ndim:
        out.append(
            Problem("scale", f"a {p.kind} has {ndim} spatial axes; give {ndim} factors, got {cfg.scale}")
        )
    if cfg.target_spacing is not None and raster:
        out.append(Problem("target_spacing", "is for volumes; rasters use scale"))
    sd = cfg.model.spatial_dims
    if raster and sd == 3:
        out.append(Problem("model.spatial_dims", "rasters use 2D models, got 3"))
    dims = sd if sd is not None else ndim
    if isinstance(cfg.train.patch_size, list) and len(cfg.train.patch_size) != dims:
        out.append(
            Problem(
                "train.patch_size", f"the model is {dims}D; give {dims} sizes, got {cfg.train.patch_size}"
            )
        )
    if isinstance(cfg.inference.tile_size, list) and len(cfg.inference.tile_size) not in (
        {2} if raster else {2, 3}
    ):
        out.append(
            Problem(
                "inference.tile_size",
                f"give {'2' if raster else '2 or 3'} sizes, got {cfg.inference.tile_size}",
            )
        )
    if p.degradation.model == "slice_profile":
        if isinstance(cfg.scale, float):
            out.append(
                Problem(
                    "scale",
                    f"domain {p.name!r} degrades by slice_profile, which acts on one axis: for thick slices use "
                    f"scale: auto or a per-axis list such as [1, 1, 4]; for isotropic x{cfg.scale:g} set degradation.model: psf",
                )
            )
        elif isinstance(cfg.scale, list) and sum(f > 1 for f in cfg.scale) > 1:
            out.append(
                Problem(
                    "scale",
                    f"the slice_profile degradation acts on one axis; got factors > 1 on several: {cfg.scale}",
                )
            )
    return out


def _output_checks(cfg: JobConfig, p: DomainProfile) -> list[Problem]:
    """The output format against the domain's kind."""
    out: list[Problem] = []
    raster = p.kind == "raster"
    fmt = cfg.output.format
    if raster and fmt in ("nifti", "dicom"):
        out.append(Problem("output.format", f"{fmt!r} is for volumes; rasters are written as geotiff"))
    if not raster and fmt == "geotiff":
        out.append(
            Problem("output.format", "'geotiff' is for rasters; volumes are written as nifti or dicom")
        )
    if not raster and cfg.output.cog:
        out.append(Problem("output.cog", "a COG is a raster output; the domain is a volume"))
    return out


def _model_and_band_checks(cfg: JobConfig, p: DomainProfile, *, blocking: bool) -> list[Problem]:
    """The model name and the band roles (targets, guides, their resolution ratio against the scale).

    The band-set rules need valid band names and no earlier problem (``blocking``).
    """
    out: list[Problem] = []
    raster = p.kind == "raster"
    name = cfg.model.name or p.default_model
    if name is None:
        out.append(Problem("model.name", f"required: domain {p.name!r} names no default model"))
    elif cfg.model.name is None and name not in _known_models():
        out.append(Problem("model.name", f"the domain's default model {name!r} is not available"))
    if not raster:
        if cfg.bands.targets is not None or cfg.bands.guides:
            out.append(Problem("bands", "band roles are for rasters; the domain is a volume"))
        if name == "guided":
            out.append(Problem("model.name", "the guided model is for rasters with guide bands"))
        return out
    for key in ("targets", "guides"):
        names = getattr(cfg.bands, key) or []
        for i, n in enumerate(names):
            try:
                p.expand_bands([n])
            except ConfigError as exc:
                out.append(Problem(f"bands.{key}.{i}", str(exc)))
    if out or blocking:
        return out
    targets = cfg.target_bands() or []
    guides = cfg.guide_bands()
    both = sorted(set(targets) & set(guides))
    if both:
        out.append(Problem("bands.guides", f"bands {both} are also targets"))
    if name == "guided" and not guides:
        out.append(Problem("bands.guides", "the guided model needs guide bands (e.g. guides: [10m])"))
    if guides and name != "guided":
        out.append(Problem("bands.guides", f"guide bands are used by the 'guided' model, not {name!r}"))
    ratio = _group_ratio(cfg)
    if cfg.scale == "auto" and ratio is None:
        out.append(
            Problem("scale", "auto on rasters needs bands.targets and bands.guides with known resolutions")
        )
    if ratio is not None and cfg.scale != "auto":
        factors = cfg.scale if isinstance(cfg.scale, list) else [cfg.scale, cfg.scale]
        if any(abs(f - ratio) > 1e-6 for f in factors):
            out.append(
                Problem(
                    "scale",
                    f"the target bands are {ratio:g}x coarser than the guide bands; scale must be {ratio:g} (or auto), got {cfg.scale}",
                )
            )
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
        t["init"] = _absolute(t["init"], base)
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
    raise_problems(_cross_checks(cfg, profile), source=source, what="config")
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

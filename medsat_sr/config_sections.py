"""The sections of a job config (``data``, ``model``, ``train``, ``bands``, ...) and their field types.

:class:`medsat_sr.config.JobConfig` is built from these; they are
re-exported from :mod:`medsat_sr.config`, where the module docstring says
what each setting means. Pydantic models, validated at load time; an
unknown key or a value out of range is an error naming its location.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, field_validator, model_validator

from medsat_sr._resources import suggest
from medsat_sr._schema import SizeValue, StrictModel, located
from medsat_sr.inference.options import InferenceOptions, OutputOptions

__all__ = [
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
    "MAX_SCALE",
    "MODEL_NAMES",
]


#: The largest accepted scale factor on any axis.
MAX_SCALE = 16.0

#: Architectures known when :mod:`medsat_sr.models` cannot be imported.
MODEL_NAMES = ("srresnet", "edsr", "rcan", "dcsrn", "guided", "unguided")

#: Model arguments that come from the data and the config, not from ``model.kwargs``.
RESERVED_MODEL_KWARGS = ("spatial_dims", "in_channels", "out_channels", "scale", "guide_channels")


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


def _domain_value(value: Any) -> Any:
    """``domain``: a profile's name or YAML path, or the profile itself as a mapping (a checkpoint's record)."""
    if (isinstance(value, str) and value.strip()) or isinstance(value, Mapping):
        return value
    raise ValueError(f"a domain profile name, a path to its YAML file, or the profile as a mapping; got {value!r}")


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
        factors: supervised thick-slice training at several through-plane
            factors (e.g. ``[1.5, 2, 3, 4, 6, 8]``): each reference gives
            pairs at every factor, each batch at one of them, drawn evenly, so
            that one network serves them all (VDSR's multi-scale training). The
            network must interpolate first (``model.kwargs.upsample: pre``);
            ``scale``'s own factor is always one of them, and the one the
            network is built and named for.
    """

    inputs: PathList = Field(default_factory=list)
    validation: PathList = Field(default_factory=list)
    pairs: list[PairSpec] = Field(default_factory=list)
    val_fraction: float = Field(0.1, ge=0, le=0.5)
    min_valid_fraction: float = Field(0.5, ge=0, le=1)
    background_probability: float = Field(0.1, ge=0, le=1)
    series: str | None = None
    factors: list[Annotated[float, Field(gt=1, le=16)]] | None = Field(None, min_length=1)


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



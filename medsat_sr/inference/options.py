"""The upscale options, declared once.

Every option that changes how a model is applied or what is written is a
field of :class:`InferenceOptions` (the job config's ``inference:`` section)
or :class:`OutputOptions` (its ``output:`` section), with its default, its
range and its help text. Everything else derives from these two models:

* the job config (:class:`medsat_sr.config.JobConfig`) uses them as its
  ``inference`` and ``output`` sections;
* :func:`medsat_sr.upscale` takes their fields as keyword arguments
  (``upscale(x, tile_size=256, dtype="float32")``), validated by
  :class:`UpscaleOptions` (an unknown keyword gets a did-you-mean hint);
* the CLI adds one flag per field that declares one (``json_schema_extra``
  ``{"flag": ...}``) with :func:`add_flags`, and reads them back with
  :func:`given_flags`.

This module is declarations only (pydantic, no torch): the config layer
below ``inference`` may import it, and the CLI can build ``--help`` from it
cheaply.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
import string
from typing import Annotated, Any, Literal, get_args, get_origin

import yaml
from pydantic import BeforeValidator, Field, ValidationError, field_validator

from medsat_sr._resources import did_you_mean, suggest
from medsat_sr._schema import StrictModel
from medsat_sr.errors import ConfigError

__all__ = [
    "TEMPLATE_FIELDS",
    "degradation_override",
    "InferenceOptions",
    "OutputOptions",
    "UpscaleOptions",
    "DEFAULT_TILE_VOLUME",
    "DEFAULT_TILE_RASTER",
    "MIN_GAIN_DB",
    "DEFAULT_FINETUNE_SECONDS",
    "resolve_options",
    "add_flags",
    "given_flags",
]

#: Window size (input voxels per axis) for volumes when ``tile_size`` is not given.
DEFAULT_TILE_VOLUME = 64
#: Window size (input pixels a side) for streamed rasters when ``tile_size`` is not given.
DEFAULT_TILE_RASTER = 512
#: The default least held-out gain (dB) of a learned model over the classical result it would
#: replace; smaller differences are within the noise of a held-out PSNR estimate.
MIN_GAIN_DB = 0.05
#: Default fine-tuning budget (seconds) of ``upscale --config`` from a shipped model; chosen from
#: benchmarks/time_to_quality.py (the fine-tuned PSNR on held-out data levels off by about then).
DEFAULT_FINETUNE_SECONDS = 60.0


#: Placeholders of ``output.name_template``.
TEMPLATE_FIELDS = {
    "stem": "the input's name without its extension (.nii.gz counts as one)",
    "ext": "the output extension, with its dot (.nii.gz, .tif); empty for a DICOM folder",
    "name": "the config's name",
    "index": "the input's position in the batch (0-based; format spec allowed: {index:04d})",
}


def _parse_tile(value: Any) -> Any:
    def ok(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and v >= 1

    if value is None or ok(value):
        return value
    if isinstance(value, (list, tuple)) and len(value) in (2, 3) and all(ok(v) for v in value):
        return list(value)
    raise ValueError(f"expected a positive integer or a list of 2 or 3 of them, got {value!r}")


#: A tile size: one positive integer for every axis, or one per axis (larger than the image: one tile).
TileSize = Annotated[int | list[int] | None, BeforeValidator(_parse_tile)]


def _flag(flag: str, metavar: str | None = None) -> dict[str, Any]:
    return {"flag": flag, "metavar": metavar}


class InferenceOptions(StrictModel):
    """How a model is applied (the job config's ``inference:`` section)."""

    tile_size: TileSize = Field(
        None,
        description=f"tile size in input pixels/voxels, one value or one per axis "
        f"(default {DEFAULT_TILE_VOLUME} for volumes, {DEFAULT_TILE_RASTER} for rasters)",
        json_schema_extra=_flag("--tile-size", "N"),
    )
    overlap: float = Field(0.25, ge=0, lt=1, description="volume sliding-window overlap for models with global context, in [0, 1)")
    halo: int | None = Field(None, ge=0, description="extra context around each tile in input pixels (default: the receptive field)")
    blend: Literal["gaussian"] = Field("gaussian", description="volume tile blending (gaussian: no seams)")
    sigma_scale: float = Field(0.125, gt=0, le=1, description="Gaussian blending width as a fraction of the tile")
    batch_size: int = Field(1, ge=1, le=1024, description="tiles per forward pass")
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto",
        description="auto (bf16 where the CPU or GPU runs it natively, else fp32), fp32 or bf16",
        json_schema_extra=_flag("--precision"),
    )
    tta: bool = Field(False, description="self-ensemble over the flips/rotations the scale allows", json_schema_extra=_flag("--tta"))
    slice_orientations: Literal["auto", 1, 2] = Field(
        "auto",
        description="2D slice-wise networks on volumes: 2 averages the two through-plane orientations "
        "(SMORE/ECLARE); 1 runs only the one with the largest slices: 0.58-0.67x the wall time of --model on a "
        "256^3-class MR volume, 0.09-0.15 dB lower (benchmarks/model_speed.py); auto: 2 after a fit in the "
        "same run, 1 for a model applied without one (--model: the fast route)",
    )
    uncertainty: bool = Field(
        False, description="also write the per-voxel std across members (<stem>_std)", json_schema_extra=_flag("--uncertainty")
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="auto (CUDA when available), cpu or cuda", json_schema_extra=_flag("--device")
    )
    min_gain_db: float = Field(
        MIN_GAIN_DB,
        ge=0,
        description="least held-out gain (dB) over the classical result for a learned model to be kept",
    )
    force: bool = Field(
        False,
        description="keep the model's output even when it does not beat the classical result on its held-out split",
        json_schema_extra=_flag("--force"),
    )
    degradation: str | None = Field(
        None,
        description="the degradation a self-supervised fit assumes: auto (estimate the input's slice profile or "
        "PSF first; mri_thick_slice's default), profile (the profile's assumed one) or FILE (a YAML degradation "
        "override); default: the config's",
        json_schema_extra=_flag("--degradation", "auto|profile|FILE"),
    )
    from_scratch: bool = Field(
        False,
        description="--config: fit the config's network from random weights for the config's budget, instead of "
        "fine-tuning the shipped model that serves the config (`medsat-sr models`)",
        json_schema_extra=_flag("--from-scratch"),
    )
    budget: float | None = Field(
        None,
        gt=0,
        le=7 * 24 * 3600,
        description=f"--config: fitting budget in seconds (default {DEFAULT_FINETUNE_SECONDS:g} when fine-tuning a "
        "shipped model, the config's train.max_minutes from scratch; an explicit --set train.max_minutes sets both)",
        json_schema_extra=_flag("--budget", "SECONDS"),
    )


class OutputOptions(StrictModel):
    """What is written (the job config's ``output:`` section; ``name_template`` is read by batch jobs)."""

    dtype: Literal["source", "float32"] = Field(
        "source",
        description="output pixel type: source (rounded and clipped, same scaling) or float32",
        json_schema_extra=_flag("--dtype"),
    )
    format: Literal["auto", "nifti", "geotiff", "cog", "dicom"] = Field(
        "auto",
        description="output format: auto (from the suffix), nifti, geotiff, cog or dicom",
        json_schema_extra=_flag("--format"),
    )
    cog: bool = Field(False, description="write a Cloud-Optimised GeoTIFF", json_schema_extra=_flag("--cog"))
    compress: Literal["deflate", "zstd", "lzw", "none"] = Field("deflate", description="GeoTIFF compression")
    name_template: str = Field("{stem}_sr{ext}", description="batch output file name ({stem}, {ext}, {name}, {index})")
    sidecar: bool = Field(True, description="write the JSON trust record next to the output")

    @field_validator("name_template")
    @classmethod
    def _template(cls, v: str) -> str:
        if not v or "/" in v or "\\" in v or v in (".", ".."):
            raise ValueError(f"a file name template without folders, got {v!r}")
        used = set()
        try:
            parsed = list(string.Formatter().parse(v))
        except ValueError as exc:
            raise ValueError(f"invalid template {v!r}: {exc}") from exc
        for _, field, spec, conv in parsed:
            if field is None:
                continue
            if field not in TEMPLATE_FIELDS:
                raise ValueError(
                    f"unknown placeholder {{{field}}}{suggest(field, list(TEMPLATE_FIELDS))} "
                    f"(placeholders: {', '.join('{' + k + '}' for k in TEMPLATE_FIELDS)})"
                )
            if conv or (spec and field != "index"):
                raise ValueError(
                    f"only {{index}} takes a format spec, got {{{field}{'!' + conv if conv else ''}:{spec}}}"
                )
            used.add(field)
        if not used & {"stem", "index"}:
            raise ValueError(f"needs {{stem}} or {{index}} so that outputs do not collide, got {v!r}")
        try:
            v.format(stem="x", ext=".tif", name="n", index=0)
        except (ValueError, KeyError, IndexError) as exc:
            raise ValueError(f"invalid template {v!r}: {exc}") from exc
        return v


class UpscaleOptions(InferenceOptions, OutputOptions):
    """Every option of one upscale run: the ``inference`` and ``output`` fields together."""


_SECTIONS: dict[str, type[StrictModel]] = {"inference": InferenceOptions, "output": OutputOptions}


def _problem(exc: ValidationError, where: str) -> ConfigError:
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err.get("loc") or ())
    msg = str(err["msg"]).removeprefix("Value error, ")
    got = "" if "got" in msg else f", got {err.get('input')!r}"
    return ConfigError(f"{where}{loc}: {msg}{got}")


def resolve_options(
    sections: Mapping[str, Any] | None = None,
    given: Mapping[str, Any] | None = None,
) -> UpscaleOptions:
    """The options of one run: config sections first, then the options given explicitly.

    Args:
        sections: ``{"inference": ..., "output": ...}`` as models or mappings
            (from a job config or from ``--set`` items); missing ones take
            the defaults.
        given: option values given as keyword arguments or CLI flags;
            ``None`` values are ignored.

    Returns:
        The validated :class:`UpscaleOptions`.

    Raises:
        ConfigError: an unknown option (with a did-you-mean hint) or an invalid value.
    """
    data: dict[str, Any] = {}
    for name, model in _SECTIONS.items():
        part = (sections or {}).get(name)
        if isinstance(part, StrictModel):
            part = part.model_dump(exclude_unset=True)
        data.update(dict(part or {}))
    fields = UpscaleOptions.model_fields
    for key, value in (given or {}).items():
        if key not in fields:
            raise ConfigError(f"unknown upscale option {key!r}{did_you_mean(key, list(fields))}")
        if value is not None:
            data[key] = list(value) if isinstance(value, tuple) else value
    try:
        return UpscaleOptions.model_validate(data)
    except ValidationError as exc:
        raise _problem(exc, "option ") from None


def _cli_value(text: str) -> Any:
    """``"64"`` -> 64, ``"64,64,32"`` -> [64, 64, 32], ``"0.5"`` -> 0.5; other text unchanged."""
    parts = [p.strip() for p in str(text).split(",")]
    out: list[Any] = []
    for p in parts:
        try:
            out.append(int(p))
        except ValueError:
            try:
                out.append(float(p))
            except ValueError:
                out.append(p)
    return out[0] if len(out) == 1 else out


def flag_fields(model: type[StrictModel] = UpscaleOptions) -> dict[str, dict[str, Any]]:
    """``{field: {"flag", "metavar"}}`` for the fields of ``model`` that declare a CLI flag."""
    out = {}
    for name, info in model.model_fields.items():
        extra = info.json_schema_extra
        if isinstance(extra, Mapping) and extra.get("flag"):
            out[name] = dict(extra)
    return out


def add_flags(parser: argparse.ArgumentParser | Any, model: type[StrictModel] = UpscaleOptions, *, skip: Sequence[str] = ()) -> None:
    """Add one flag per option of ``model`` that declares one; the help text is the field's description.

    Every flag defaults to ``None`` (not given), so the config's value or the
    field's default applies unless the flag is on the command line.
    """
    for name, extra in flag_fields(model).items():
        if name in skip:
            continue
        info = model.model_fields[name]
        default = info.default
        help_text = str(info.description)
        if default is not None:  # a field without a fixed default says its rule in its description
            help_text += f" (default: {default})"
        kwargs: dict[str, Any] = {"dest": name, "default": None, "help": help_text}
        if info.annotation is bool:
            parser.add_argument(extra["flag"], action="store_true", **kwargs)
            continue
        if get_origin(info.annotation) is Literal:
            kwargs["choices"] = list(get_args(info.annotation))
        else:
            kwargs["type"] = _cli_value
        parser.add_argument(extra["flag"], metavar=extra.get("metavar"), **kwargs)


def given_flags(args: argparse.Namespace, model: type[StrictModel] = UpscaleOptions) -> dict[str, Any]:
    """The options given on the command line (flags left out are not in the result)."""
    out = {}
    for name in flag_fields(model):
        value = getattr(args, name, None)
        if value is not None and value is not False:
            out[name] = value
    return out


def degradation_override(value: str | None) -> dict[str, Any] | None:
    """The job-config ``degradation`` override that ``--degradation`` asks for (``None``: the config's own).

    Args:
        value: ``None`` (the config's own: ``auto`` where the config says so),
            ``"profile"`` (the profile's assumed degradation, also over a
            config that says ``auto``), ``"auto"``, or a YAML/JSON file
            holding a ``degradation`` mapping (or the mapping itself at the
            top level).

    Returns:
        The override mapping, or ``None``.

    Raises:
        ConfigError: a file that cannot be read or does not hold a mapping (named in the message).
    """
    if value is None:
        return None
    if value in ("auto", "profile"):
        return {"estimate": value}
    try:
        with open(value, encoding="utf-8") as fh:
            data = yaml.safe_load(fh)
    except OSError as exc:
        raise ConfigError(f"{value}: cannot read the --degradation file: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{value}: --degradation file is not valid YAML: {str(exc).splitlines()[0]}") from None
    if isinstance(data, Mapping) and isinstance(data.get("degradation"), Mapping):
        data = data["degradation"]
    if not isinstance(data, Mapping) or not data:
        raise ConfigError(f"{value}: --degradation file must hold a degradation mapping (e.g. model: psf, psf: {{...}})")
    return dict(data)

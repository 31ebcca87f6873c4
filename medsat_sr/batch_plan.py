"""Batch planning: one task per input (output name, job hash, settings), the resume rule's checks.

:func:`medsat_sr.batch.run_batch` plans every input with :func:`plan` before anything runs: the output
names (:func:`output_name`), the settings and job hash of each input, and whether an earlier run
already did it (:func:`done_reason`, the resume rule of :mod:`medsat_sr.batch`).
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medsat_sr.baselines import METHODS
from medsat_sr.batch_execute import Task, _one_line, _sha
from medsat_sr.batch_inputs import InputSpec, _strip_ext
from medsat_sr.config import JobConfig, OutputConfig, load_config
from medsat_sr.errors import ConfigError, MedsatError
from medsat_sr.inference.multi import is_fusion_method
from medsat_sr.inference.route_pansharpen import is_pansharpen
from medsat_sr.io import detect_format
from medsat_sr.overrides import parse_override
from medsat_sr.pansharpen.classical import METHODS as PAN_METHODS
from medsat_sr.trust import sidecar_path

__all__ = ["Planned", "plan", "output_name", "done_reason", "stale_parts", "check_method", "load_base_config",
           "scale_value", "check_classical_scale", "previous_outcome"]


@dataclass
class Planned:
    index: int
    spec: InputSpec
    task: Task | None = None
    error: str | None = None
    error_type: str | None = None


def _output_section(cfg: Any, overrides: Sequence[str]) -> Any:
    """The ``output`` section: the config's, or built from ``output.*`` overrides."""
    if cfg is not None:
        return cfg.output
    from pydantic import ValidationError

    data: dict[str, Any] = {}
    for item in overrides:
        parts, value = parse_override(item)
        if parts[0] == "output" and len(parts) == 2:
            data[parts[1]] = value
    try:
        return OutputConfig.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise ConfigError(f"--set output.{'.'.join(str(p) for p in err['loc'])}: {err['msg']}") from None


def _output_ext(path: Path, kind: str, fmt: str) -> str:
    """The output extension (with its dot; ``""`` for folders) of an input of ``kind``."""
    if fmt == "nifti":
        return ".nii.gz"
    if fmt == "geotiff":
        return "" if kind == "bandset" else ".tif"
    if fmt == "dicom":
        return ""
    # auto: the input's own format
    if kind == "nifti":
        return _strip_ext(path.name)[1].lower() if path.name.lower().endswith((".nii", ".nii.gz")) else ".nii.gz"
    if kind == "geotiff":
        ext = _strip_ext(path.name)[1].lower()
        return ext if ext in (".tif", ".tiff") else ".tif"  # JPEG 2000 and VRT inputs give a GeoTIFF
    return ""  # DICOM series folder, band folder


def output_name(template: str, path: Path, *, kind: str, index: int, name: str, fmt: str = "auto") -> str:
    """The output file name of one input (``output.name_template`` filled in).

    Args:
        template: the template (``{stem}``, ``{ext}``, ``{name}``, ``{index}``).
        path: the input.
        kind: :func:`medsat_sr.io.detect_format` of the input.
        index: the input's position in the batch.
        name: the config's name.
        fmt: ``output.format`` (``auto`` keeps the input's format; a COG is a ``.tif``).
    """
    stem = (path.name.removesuffix(".SAFE") or path.name) if path.is_dir() else _strip_ext(path.name)[0]
    ext = _output_ext(path, kind, fmt)
    return template.format(stem=stem, ext=ext, name=name, index=index)


def _output_kind(path: Path, cfg: Any, method: str | None, pan: bool) -> str:
    """The kind of one input's output: the input's format, or what a pan-sharpening or multi-input route writes.

    A band folder with a pan band gives one GeoTIFF; a folder of dates (revisit
    config or fusion method) one GeoTIFF; a folder of stacks (multi-stack
    config) one NIfTI volume.
    """
    if pan or is_fusion_method(method) or (cfg is not None and cfg.revisit is not None):
        return "geotiff"
    if cfg is not None and cfg.multistack is not None:
        return "nifti"
    return detect_format(path)


def _hash_json(data: Any) -> str:
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def plan(
    specs: list[InputSpec],
    out_dir: Path,
    *,
    base_config: Any,
    config_arg: Any,
    overrides: Sequence[str],
    method: str | None,
    models: Sequence[str],
    model_hashes: Sequence[str],
    scale: float | list[float] | None,
    read_options: Mapping[str, Any],
    run: str,
    torch_threads: int | None,
) -> list[Planned]:
    planned: list[Planned] = []
    # pan-sharpening writes one GeoTIFF on the pan grid, also for a band-folder input
    pan = is_pansharpen(method, config_arg if isinstance(config_arg, (str, os.PathLike)) else None, None)
    for index, spec in enumerate(specs):
        item = Planned(index=index, spec=spec)
        planned.append(item)
        if spec.error is not None:
            item.error, item.error_type = spec.error, spec.error_type
            continue
        assert spec.path is not None
        try:
            cfg = base_config
            if base_config is not None and spec.overrides:
                cfg = load_config(config_arg, [*overrides, *spec.overrides])
            row_overrides = tuple(spec.overrides) if base_config is None else ()
            all_overrides = (*overrides, *row_overrides) if base_config is None else ()
            out_sec = _output_section(cfg, all_overrides)
            kind = _output_kind(spec.path, cfg, method, pan)
            opts = {**dict(read_options), **spec.read_options}
            row_scale = spec.scale if spec.scale is not None else scale
            if spec.output is not None:
                out = spec.output if spec.output.is_absolute() else out_dir / spec.output
            else:
                name = (cfg.name if cfg is not None else "") or (method or "sr")
                out = out_dir / output_name(
                    out_sec.name_template, spec.path, kind=kind, index=index, name=name,
                    fmt=out_sec.format,
                )
            config_hash = cfg.config_hash(exclude=["data.inputs"]) if cfg is not None else None
            job_hash = _hash_json(
                {
                    "config_hash": config_hash,
                    "overrides": list(all_overrides),
                    "method": method,
                    "models": list(model_hashes),
                    "scale": row_scale,
                    "read_options": opts,
                }
            )
            item.task = Task(
                index=index,
                input=str(spec.path),
                output=str(Path(os.path.abspath(out))),
                config=cfg,
                overrides=tuple(all_overrides),
                method=method,
                models=tuple(models),
                model_hashes=tuple(model_hashes),
                scale=row_scale,
                read_options=opts,
                job_hash=job_hash,
                config_hash=config_hash,
                run=run,
                torch_threads=torch_threads,
            )
        except MedsatError as exc:
            item.error, item.error_type = _one_line(str(exc)), type(exc).__name__
    # outputs must not collide
    seen: dict[str, Planned] = {}
    clashes: list[str] = []
    for item in planned:
        if item.task is None:
            continue
        key = os.path.normcase(item.task.output)
        if key in seen:
            clashes.append(f"{seen[key].task.input} and {item.task.input} -> {item.task.output}")  # type: ignore[union-attr]
        else:
            seen[key] = item
    if clashes:
        raise ConfigError(
            f"{len(clashes)} output name(s) collide: {'; '.join(clashes[:3])}"
            + (" ..." if len(clashes) > 3 else "")
            + "; add {index} to output.name_template (e.g. --set 'output.name_template={index:04d}_{stem}_sr{ext}') "
            "or give explicit names in a manifest's output column"
        )
    return planned


def done_reason(task: Task) -> str | None:
    """``None`` when ``task``'s output is complete and current; otherwise why it must run."""
    out = Path(task.output)
    side = sidecar_path(out)
    if not out.exists():
        return "no output"
    if not side.is_file():
        return "no sidecar"
    try:
        rec = json.loads(side.read_text(encoding="utf-8"))
        b = rec["batch"]
        recorded = (b["job_hash"], b["input_sha256"], b["output_sha256"])
    except (OSError, ValueError, KeyError, TypeError):
        return "sidecar without a batch record"
    if recorded[0] != task.job_hash:
        return "config or options changed"
    try:
        if recorded[1] != _sha(Path(task.input)):
            return "input changed"
        if recorded[2] != _sha(out):
            return "output changed"
    except MedsatError as exc:
        return f"cannot check: {exc}"
    return None


def stale_parts(outputs: Iterable[Path]) -> list[Path]:
    """Temporary files/folders left by a killed atomic write of these outputs."""
    found: list[Path] = []
    for out in outputs:
        for p in (out, sidecar_path(out)):
            folder = p.parent
            if not folder.is_dir():
                continue
            for pattern in (f".{glob.escape(p.stem)}.*.part*", f".{glob.escape(p.name)}.*.part", f".{glob.escape(p.name)}.*.old"):
                found.extend(Path(m) for m in glob.glob(str(folder / pattern)))
    return sorted(set(found))


def check_method(method: str | None, models: Sequence[str], config: Any) -> bool:
    """Check that there is exactly one thing to run and that a method is known.

    Args:
        method: a classical, fusion or pan-sharpening method, or None.
        models: the checkpoint paths.
        config: the ``config`` argument of :func:`run_batch`.

    Returns:
        True when the job is a pan-sharpening route.

    Raises:
        ConfigError: both a method and models, nothing to run, or an unknown method.
    """
    if method is not None and models:
        raise ConfigError("give either a classical method or models, not both")
    if config is None and not models and method is None:
        raise ConfigError("nothing to run: give a config (--config), a checkpoint (--model) or a method (--method)")
    pan_route = is_pansharpen(method, config if isinstance(config, (str, os.PathLike)) else None, None)
    if method is not None and not pan_route and not is_fusion_method(method) and method not in METHODS:
        raise ConfigError(f"unknown method {method!r}; expected one of {[*METHODS, *PAN_METHODS]}")
    return pan_route


def load_base_config(
    config: Any, overrides: Sequence[str], method: str | None, models: Sequence[str]
) -> JobConfig | None:
    """Load the batch's config with its overrides, or check the overrides allowed without one.

    Args:
        config: the ``config`` argument of :func:`run_batch`, or None.
        overrides: ``--set`` items applied to every input.
        method: the classical method, or None.
        models: the checkpoint paths.

    Returns:
        The loaded config, or None without ``config``.

    Raises:
        ConfigError: a supervised config with neither method nor models, or,
            without a config, an override outside ``inference.*``, ``output.*``
            and ``bands.others``.
    """
    base_config = load_config(config, list(overrides)) if config is not None else None
    if base_config is not None and method is None and not models:
        if base_config.train.mode == "supervised":
            raise ConfigError(
                f"{base_config.source}: a supervised config trains on references first (medsat-sr train); "
                "run the batch with --model CKPT, or use a self-supervised config"
            )
    if base_config is None:
        for item in overrides:  # the same rule as upscale without a config, checked once here
            parts, _ = parse_override(item)
            if parts[0] not in ("inference", "output", "bands") or len(parts) != 2:
                raise ConfigError(
                    f"--set {item!r}: without --config only inference.*, output.* and bands.others can be set"
                )
    return base_config


def scale_value(scale: float | Sequence[float] | None) -> float | list[float] | None:
    """The scale argument as a float, a list of floats, or None.

    Args:
        scale: one factor, one factor per axis, or None.

    Returns:
        The factor(s) as floats, or None.
    """
    if scale is None or isinstance(scale, (int, float)):
        return None if scale is None else float(scale)
    return [float(v) for v in scale]


def check_classical_scale(
    specs: Sequence[InputSpec],
    *,
    method: str | None,
    pan_route: bool,
    base_config: JobConfig | None,
    scale: float | list[float] | None,
) -> None:
    """Check that a classical method without a config has a scale for every readable input.

    Args:
        specs: the input specs.
        method: the classical method, or None.
        pan_route: whether the job is a pan-sharpening route (its scale comes from the pan band).
        base_config: the loaded config, or None.
        scale: the batch-wide scale, or None.

    Raises:
        ConfigError: a classical method with no scale from the options, a config or the manifest.
    """
    if (method is not None and not pan_route and base_config is None and scale is None
            and any(s.scale is None for s in specs if s.error is None)):
        raise ConfigError("a classical method needs a scale: give --scale (e.g. 2 or 1,1,4), a config, or a manifest scale column")


def previous_outcome(output: str) -> dict[str, Any]:
    """Method and fallback of a skipped input, from its sidecar."""
    try:
        rec = json.loads(sidecar_path(output).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    fb = rec.get("fallback") if isinstance(rec.get("fallback"), Mapping) else {}
    return {
        "method": rec.get("method"),
        "fallback": bool(fb.get("applied")),
        "fallback_reason": fb.get("reason"),
        "input_sha256": (rec.get("batch") or {}).get("input_sha256"),
    }

"""The methods of an evaluation: which to run (parse_methods) and one run of a method on a case (MethodRun).

Used by :func:`medsat_sr.evaluate.evaluate`, which re-exports these names.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from medsat_sr import baselines, zoo
from medsat_sr._resources import suggest
from medsat_sr.checkpoint import read_metadata
from medsat_sr.errors import ConfigError, DataError, GeometryError
from medsat_sr.image import Key
from medsat_sr.inference import upscale
from medsat_sr.peak_memory import PeakMemory
from medsat_sr.report_plain import validation_trend
from medsat_sr.train import fit
from medsat_sr.zoo.provenance import overlap_note

if TYPE_CHECKING:  # annotations only
    from monai.data import MetaTensor

    from medsat_sr.evaluate_cases import Case

__all__ = ["CLASSICAL", "MethodRun", "parse_methods", "training_overlap"]

#: The classical methods (:data:`medsat_sr.baselines.METHODS`).
CLASSICAL: tuple[str, ...] = tuple(baselines.METHODS)


def parse_methods(
    methods: str | Sequence[str] | None, models: Sequence[str | os.PathLike[str]] = (), *, cfg: Any = None
) -> list[str]:
    """The method list: the profile's baselines first, then the requested ones (no repeats).

    ``model`` stands for the checkpoints given (each becomes a method named
    by its file stem) or, without checkpoints, a self-supervised fit by the
    config. Checkpoints given without ``model`` in ``methods`` are added.

    Raises:
        ConfigError: an unknown method name, or ``model`` with neither a
            checkpoint nor a self-supervised config.
    """
    if isinstance(methods, str):
        items = [m.strip() for m in methods.split(",") if m.strip()]
    else:
        items = [str(m).strip() for m in (methods or []) if str(m).strip()]
    base = list(cfg.profile.metrics.baselines) if cfg is not None else ["cubic"]
    selfsup = cfg is not None and cfg.train.mode in ("self_supervised", "finetune")
    if not items:
        items = ["model"] if (models or selfsup) else []
    out: list[str] = []
    for m in base + items:
        if m in out:
            continue
        if m in CLASSICAL:
            out.append(m)
        elif m == "model":
            if models:
                out.extend(_model_names(models))
            elif selfsup:
                out.append("model")
            else:
                raise ConfigError(
                    "method 'model' needs a checkpoint (--model CKPT) or a self-supervised config "
                    f"(train.mode: self_supervised); the config's train.mode is {getattr(cfg.train, 'mode', None)!r}"
                )
        else:
            raise ConfigError(
                f"unknown method {m!r}{suggest(m, list(CLASSICAL) + ['model'])}; expected "
                f"{', '.join(CLASSICAL)} or model"
            )
    for name in _model_names(models):
        if name not in out:
            out.append(name)
    return out


def _model_names(models: Sequence[str | os.PathLike[str]]) -> list[str]:
    if len(models) == 1:
        return ["model"]
    names: list[str] = []
    for p in models:
        stem = Path(p).name
        for suf in (".safetensors", ".json"):
            stem = stem[: -len(suf)] if stem.endswith(suf) else stem
        name = f"model:{stem}"
        k = 2
        while name in names:
            name = f"model:{stem}#{k}"
            k += 1
        names.append(name)
    return names


@dataclass
class MethodRun:
    """One method's output on one case and what it cost."""

    name: str
    kind: str
    image: np.ndarray
    seconds: float
    peak_rss_mb: float
    peak_rss_increase_mb: float
    fit_seconds: float | None = None
    apply_seconds: float | None = None
    info: dict[str, Any] = field(default_factory=dict)
    fit: Any = None
    record: dict[str, Any] | None = None


def training_overlap(run: MethodRun | None, checkpoint: str | None, path: str | os.PathLike[str] | None) -> str | None:
    """Whether the model behind a method was trained on ``path``: the note to report, or ``None``.

    The model: a shipped one given by name, the shipped start of a fit, or a checkpoint of the user's own.
    """
    start = ((getattr(getattr(run, "fit", None), "metadata", None) or {}).get("start") or {}).get("shipped")
    shipped = bool(checkpoint) and zoo.is_shipped(checkpoint)
    own = [(str(checkpoint), read_metadata(checkpoint))] if checkpoint and not shipped and path else []
    found = overlap_note([*([checkpoint] if shipped else []), *([start] if start else [])], path, own)
    return found[0] if found else None


def _grid_matches(case: Case, out: MetaTensor) -> tuple[bool, float]:
    ref = case.reference
    if tuple(out.shape[1:]) != tuple(ref.shape[1:]):
        return False, float("inf")
    if case.kind == "volume":
        err = float(np.abs(np.asarray(out.affine, dtype=np.float64) - np.asarray(ref.affine, dtype=np.float64)).max())
        tol = 1e-6 * float(min(ref.meta[Key.SPACING]))
        return err <= tol, err
    a, b = out.meta[Key.TRANSFORM], ref.meta[Key.TRANSFORM]
    err = max(abs(float(x) - float(y)) for x, y in zip(a, b))
    return err <= 1e-6 * float(min(ref.meta[Key.SPACING])), err


def _run_method(
    name: str,
    case: Case,
    cfg: Any,
    *,
    checkpoint: str | os.PathLike[str] | None,
    run_dir: Path | None,
    progress: bool,
) -> MethodRun:
    scale = list(case.factors)
    fit_res = None
    fit_s = None
    with PeakMemory() as pm:
        t0 = time.perf_counter()
        if name in CLASSICAL:
            kind = "classical"
            res = upscale(case.lr, method=name, scale=scale, sidecar=False, progress=False)
        elif checkpoint is not None:
            kind = "checkpoint"
            res = upscale(case.lr, model=checkpoint, scale=scale if case.kind == "volume" else None, force=True,
                          sidecar=False, progress=progress)
        else:
            kind = "self_supervised"
            fit_input = case.fit_image if case.fit_image is not None else case.lr
            rd = None if run_dir is None else run_dir / case.name
            fit_res = fit([fit_input], cfg, run_dir=rd, progress=progress)
            fit_s = time.perf_counter() - t0
            res = upscale(case.lr, fit=fit_res, config=cfg, scale=scale if case.kind == "volume" else None,
                          force=True, sidecar=False, progress=progress)
        seconds = time.perf_counter() - t0
    out = res.image
    if out is None:  # pragma: no cover - only streamed rasters have no image
        raise DataError(f"method {name!r} returned no image")
    ok, err = _grid_matches(case, out)
    if not ok:
        raise GeometryError(
            f"{case.name}: the {name!r} output grid {tuple(out.shape[1:])} does not match the reference grid "
            f"{tuple(case.reference.shape[1:])} (max transform/affine difference {err:.3g})"
        )
    arr = out.as_tensor().detach().to(torch.float32).cpu().numpy()
    info: dict[str, Any] = {"grid_match": True, "grid_max_difference": err, "method_description": res.record.get("method")}
    if kind != "classical":  # what `upscale` would decide on this input (evaluate keeps the model's output anyway)
        info["decision"] = res.record.get("decision")
    if res.record.get("consistency"):
        info["consistency"] = res.record["consistency"]
    if fit_res is not None:
        info["fit"] = {
            "val_psnr": fit_res.val_psnr, "val_psnr_cubic": fit_res.val_psnr_cubic,
            "val_ssim": getattr(fit_res, "val_ssim", None), "val_ssim_cubic": getattr(fit_res, "val_ssim_cubic", None),
            "iterations": getattr(fit_res, "iterations", None), "seconds": getattr(fit_res, "seconds", None),
            "stopped_by": getattr(fit_res, "stopped_by", None),
            "trained_on": "degraded input" if case.fit_image is None else case.degradation.get("holdout", {}).get("fit"),
            "architecture": getattr(fit_res.model, "config", None),
            "task": (fit_res.metadata or {}).get("task"),
            "run_dir": str(getattr(fit_res, "run_dir", None)) if getattr(fit_res, "run_dir", None) else None,
            "note": "validation numbers are in network units on the fit's own held-out split",
            "validation_trend": validation_trend(list(getattr(fit_res, "history", None) or [])),
        }
    if checkpoint is not None:
        info["checkpoint"] = str(checkpoint)
    apply_s = None if fit_s is None else seconds - fit_s
    return MethodRun(
        name=name, kind=kind, image=arr, seconds=seconds, peak_rss_mb=pm.peak_mb,
        peak_rss_increase_mb=pm.increase_mb, fit_seconds=fit_s, apply_seconds=apply_s, info=info, fit=fit_res,
        record=res.record,
    )

"""The trust record of one run as a typed value (written as the JSON sidecar by :mod:`medsat_sr.trust`)."""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from monai.data import MetaTensor

from medsat_sr._version import __version__
from medsat_sr.image import Key, is_raster
from medsat_sr.trust import RECORD_FORMAT, now_iso


@dataclass
class TrustRecord:
    """What was done and how far to trust it (keys documented in :mod:`medsat_sr.trust`).

    Attributes:
        input: path, checksum, kind, shape and grid of the input.
        output: path, format, dtype, shape and grid of the output; the std map.
        method: ``"model"``, ``"ensemble of N models"`` (``+ self-ensemble``) or a classical method.
        models: one entry per network (path, checksum, architecture, weight, metrics).
        settings: the options and what the run derived from them (route, tiles, scale).
        decision: the model-or-classical :class:`~medsat_sr.inference.plan.Decision` as a dict.
        validation: the held-out scores of each network, when known.
        consistency: degrade(output) against the input, per channel.
        timings: seconds per stage.
        config: the resolved job config, when one was used; ``config_source`` its origin.
        weights: how ensemble weights were set.
    """

    input: dict[str, Any]
    output: dict[str, Any]
    method: str
    models: list[dict[str, Any]]
    settings: dict[str, Any]
    decision: dict[str, Any]
    validation: dict[str, Any] | None = None
    consistency: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    config: dict[str, Any] | None = None
    config_source: str | None = None
    weights: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON sidecar's content (``fallback`` repeats the decision in the first format's keys)."""
        d = self.decision
        return {
            "format": RECORD_FORMAT,
            "format_version": 2,
            "medsat_sr_version": __version__,
            "torch_version": torch.__version__.split("+")[0],
            "created": now_iso(),
            "input": self.input,
            "output": self.output,
            "method": self.method,
            "models": self.models,
            "settings": self.settings,
            "config": self.config,
            "config_source": self.config_source,
            "weights": self.weights,
            "validation": self.validation,
            "decision": d,
            "fallback": {"applied": bool(d.get("fell_back")), "reason": d.get("reason") if d.get("fell_back") or d.get("forced") else None,
                         "forced": bool(d.get("forced"))},
            "consistency": self.consistency,
            "timings": {k: round(float(v), 4) for k, v in self.timings.items()},
        }


def std_path(output: Path) -> Path:
    """``out.nii.gz`` -> ``out_std.nii.gz``, ``out.tif`` -> ``out_std.tif``; a folder ``out`` -> ``out_std.tif``."""
    name = output.name
    for suf in (".nii.gz", ".nii", ".tiff", ".tif"):
        if name.lower().endswith(suf):
            return output.with_name(name[: -len(suf)] + "_std" + name[-len(suf):])
    return output.with_name(name + "_std.tif")


def input_info(src: Any, path: Path | None, sha: str | None, kind: str) -> dict[str, Any]:
    """The record's ``input`` entry of an image in memory or of raster groups."""
    info: dict[str, Any] = {"path": str(path) if path else None, "sha256": sha, "kind": kind}
    if isinstance(src, MetaTensor):
        info["shape"] = list(src.shape)
        info["spacing"] = list(src.meta.get(Key.SPACING) or [])
        info["format"] = src.meta.get(Key.SOURCE_FORMAT)
        if is_raster(src):
            info["transform"] = list(src.meta[Key.TRANSFORM])
    elif isinstance(src, list):
        info["groups"] = {g.name: {"shape": [len(g.bands), g.height, g.width], "bands": g.bands, "transform": list(g.transform)} for g in src}
        info["format"] = "geotiff"
    return info


def remove_output(path: Path | None) -> None:
    """Remove a written output (file or folder), e.g. when its record could not be written."""
    if path is None or not path.exists():
        return
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)

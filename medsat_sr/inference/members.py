"""The models of a run: checkpoints, self-supervised fits and ensembles.

A *member* is one network with its normaliser and weight
(:class:`medsat_sr.fusion.Member`). This module turns what the caller gave
(checkpoint paths, modules, a job config to fit, a FitResult) into members,
with what the trust record needs to know about each, and holds the device
and precision rules.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from monai.data import MetaTensor
from torch import nn

from medsat_sr.checkpoint import load_checkpoint, model_hash
from medsat_sr.domains import load_domain
from medsat_sr.errors import ConfigError, MedsatError, ModelError
from medsat_sr.fusion import DEFAULT_TTA_MEMBERS, Member, Transform, normalise_weights, tta_transforms
from medsat_sr.hardware import native_bf16  # noqa: F401  (re-exported: the inference package's name for it)
from medsat_sr.normalise import Normaliser

logger = logging.getLogger("medsat_sr.inference")


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when available, else ``cpu``; a CUDA device that is not there is a ConfigError."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device not in ("cpu", "cuda") and not str(device).startswith("cuda:"):
        raise ConfigError(f"device must be 'auto', 'cpu' or 'cuda', got {device!r}")
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} asked for, but CUDA is not available; use --device cpu")
    return str(device)


def domain_of(meta: Mapping[str, Any]) -> Any:
    dom = meta.get("domain")
    if not dom:
        return None
    try:
        return load_domain(dom)
    except (MedsatError, TypeError, ValueError) as exc:
        logger.warning("checkpoint domain %r cannot be loaded (%s); using no profile", dom if isinstance(dom, str) else "<inline>", exc)
        return None


def validation_of(metrics: Any) -> dict[str, float] | None:
    """``val_psnr`` and the cubic PSNR on the same split from a metrics mapping, if present."""
    if not isinstance(metrics, Mapping):
        return None
    pairs = (
        ("val_psnr", "val_psnr_cubic"),
        ("val_psnr", "cubic_psnr"),
        ("psnr", "psnr_cubic"),
        ("val_psnr", "val_cubic_psnr"),
    )
    for a, b in pairs:
        va, vb = metrics.get(a), metrics.get(b)
        if isinstance(va, (int, float)) and isinstance(vb, (int, float)) and not isinstance(va, bool):
            out = {"val_psnr": float(va), "val_psnr_cubic": float(vb)}
            vi = metrics.get("val_psnr_interp")
            if isinstance(vi, (int, float)) and not isinstance(vi, bool):
                out["val_psnr_interp"] = float(vi)
            return out
    return None


def load_member(item: Any, device: str) -> tuple[Member, dict[str, Any]]:
    """A Member (unbound normaliser spec in ``info``) from a checkpoint path or a module."""
    if isinstance(item, Member):
        return item, dict(item.info)
    if isinstance(item, (str, os.PathLike)):
        model, meta = load_checkpoint(item, device=device)
        info = {
            "path": str(item),
            "sha256": model_hash(item),
            "architecture": meta.get("architecture"),
            "scale": meta.get("scale"),
            "band_names": meta.get("band_names"),
            "metrics": meta.get("metrics"),
            "domain": meta.get("domain") if isinstance(meta.get("domain"), str) else (meta.get("domain") or {}).get("name") if isinstance(meta.get("domain"), Mapping) else None,
            "_meta": meta,
        }
        return Member(model=model, name=str(item), info=info), info
    if isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], nn.Module):
        model, meta = item
        info = {"path": None, "sha256": None, "architecture": getattr(model, "config", None), "metrics": (meta or {}).get("metrics"), "_meta": dict(meta or {})}
        return Member(model=model.to(device).eval(), name=type(model).__name__, info=info), info
    if isinstance(item, nn.Module):
        info = {"path": None, "sha256": None, "architecture": getattr(item, "config", None), "metrics": None, "_meta": {}}
        return Member(model=item.to(device).eval(), name=type(item).__name__, info=info), info
    raise ModelError(f"a model is a checkpoint path or a torch.nn.Module, got {type(item).__name__}")


def check_takes(members: Sequence[Member], n: int, where: Any, *, kind: str, names: Sequence[str] | None = None) -> bool:
    """The models' input channels against the input's ``n`` channels (a volume) or bands (a raster).

    Run at the door, before a shipped model is scored or any tile runs.
    Guided models take their bands by role and are checked by their route.

    Returns:
        Whether one-channel networks are to be applied to each channel of a
        volume on its own (the volumes of a 4D series: an fMRI run, the
        directions of a diffusion series, the echoes of a multi-echo scan).

    Raises:
        ModelError: the counts differ otherwise; the message names the input and what to do.
    """
    if not members or any(m.guided for m in members):
        return False
    n_in = int(getattr(members[0].model, "in_channels", n))
    if n_in == n:
        return False
    if kind == "volume":
        if n_in == 1 and all(int(getattr(m.model, "in_channels", 1)) == 1 for m in members):
            return True
        raise ModelError(f"{where}: the model takes {n_in} input channel(s), the volume has {n}; "
                         "use a model trained on volumes with this many channels, or --method cubic")
    listed = f" ({', '.join(names)})" if names else ""
    raise ModelError(f"{where}: the model takes {n_in} band(s), the raster has {n}{listed}; "
                     f"use a model trained on {n} band(s), or --method cubic")


def state_hash(model: nn.Module) -> str:
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def member_weights(weights: Any, members: list[Member]) -> tuple[list[float], str | None]:
    """Initial weights and the fitting method (``"lstsq"``/``"softmax"``: fitted on a Wald split later)."""
    n = len(members)
    if weights is None or (isinstance(weights, str) and weights == "equal"):
        return normalise_weights(None, n), None
    if isinstance(weights, str):
        if weights in ("lstsq", "softmax"):
            return normalise_weights(None, n), weights
        raise ConfigError(f"weights must be numbers (one per model), 'equal', 'lstsq' or 'softmax', got {weights!r}")
    return normalise_weights(list(weights), n), None


def band_roles(cfg: Any, fit_meta: Mapping[str, Any], members: list[Member], profile: Any) -> tuple[list[str] | None, list[str] | None]:
    """Target and guide band names for a raster model (checkpoint, fit metadata, then config)."""
    targets: list[str] | None = None
    guides: list[str] | None = None
    metas = [fit_meta] + [m.info.get("_meta") or {} for m in members]
    for meta in metas:
        if not meta:
            continue
        if targets is None and meta.get("band_names"):
            targets = list(meta["band_names"])
        g = meta.get("guide_band_names") or meta.get("guide_bands")
        if guides is None and g:
            guides = list(g)
        c = meta.get("config")
        if guides is None and isinstance(c, Mapping):
            gb = (c.get("bands") or {}).get("guides") if isinstance(c.get("bands"), Mapping) else None
            if gb and profile is not None:
                try:
                    guides = profile.expand_bands(gb)
                except MedsatError:
                    guides = None
    if cfg is not None:
        if targets is None:
            targets = cfg.target_bands()
        if guides is None and cfg.bands.guides:
            guides = cfg.guide_bands()
    return targets, guides


def fit_normaliser(stats: Any, image: MetaTensor, spec: Any) -> Any:
    """Normaliser for ``image`` from checkpoint stats and/or a profile spec (``None``: identity)."""
    if not stats and spec is None:
        return None
    if isinstance(stats, Normaliser):
        if stats.channels == int(image.shape[0]):
            return stats
        stats = stats.to_dict()
    return Normaliser.for_inference(stats or None, image, spec=spec)


def tta_for(scale: Sequence[float], tta: bool | int) -> list[Transform] | None:
    """Self-ensemble transforms for ``tta`` (``True``: up to 8, an int: up to that many, falsy: none)."""
    if not tta:
        return None

    return tta_transforms(scale, DEFAULT_TTA_MEMBERS if tta is True else int(tta))


#: Size (input pixels/voxels per axis) of the central crop used to fit ensemble weights.
WEIGHT_CROP = {2: 384, 3: 48}


def centre(n: int, size: int, multiple: int) -> tuple[int, int]:
    size = max(multiple, min(n, size) // multiple * multiple)
    size = min(size, n // multiple * multiple) or n
    start = (n - size) // 2
    return start, start + size


@dataclass
class Members:
    """The networks of a run and what the record and the decision need to know about them."""

    members: list[Member] = field(default_factory=list)
    records: list[dict[str, Any]] = field(default_factory=list)
    validations: list[dict[str, Any]] = field(default_factory=list)
    fit_norm: Any = None
    fit_meta: dict[str, Any] = field(default_factory=dict)
    weights_method: str | None = None
    fitted: bool = False  # a member was fitted in this run


def _fitted(fit: Any, device: str) -> tuple[Member, dict[str, Any], dict[str, Any] | None]:
    """A self-supervised fit as a member, with its record entry and its held-out validation."""
    meta = dict(getattr(fit, "metadata", {}) or {})
    start = meta.get("start") or {}
    member = Member(model=fit.model.to(device).eval(), name="self-supervised fit", info={"_meta": meta})
    record = {
        "path": meta.get("checkpoint"),
        "sha256": state_hash(fit.model),
        "architecture": getattr(fit.model, "config", None),
        "source": start.get("source", "self-supervised fit on the input"),
        "metrics": meta.get("metrics"),
    }
    for key in ("skipped", "reason", "series"):  # misfit shipped models; why from scratch; a series fitted per volume
        if start.get(key):
            record[f"start_{key}"] = start[key]
    est = (meta.get("task") or {}).get("degradation_estimate")
    if est is not None:  # degradation: auto (#14): what was measured, how sure, how far from the profile
        record["degradation_estimate"] = est
    vp, vc = getattr(fit, "val_psnr", None), getattr(fit, "val_psnr_cubic", None)
    validation = None
    if vp is not None and vc is not None:
        validation = {"model": 0, "val_psnr": float(vp), "val_psnr_cubic": float(vc), "source": "self-supervised fit, held-out split"}
        vi = (meta.get("metrics") or {}).get("val_psnr_interp")
        if vi is not None:
            validation["val_psnr_interp"] = float(vi)
    return member, record, validation


def collect_members(items: list[Any], fit: Any, weights: Any, device: str) -> Members:
    """The members of a run (a fit first, then the checkpoints), their records, validations and weights."""
    out = Members()
    if fit is not None:
        member, rec, validation = _fitted(fit, device)
        out.fitted = True
        out.members.append(member)
        out.records.append(rec)
        out.fit_meta = dict(member.info["_meta"])
        out.fit_norm = getattr(fit, "normaliser", None)
        if validation is not None:
            out.validations.append(validation)
    for item in items:
        m, info = load_member(item, device)
        out.members.append(m)
        out.records.append({k: v for k, v in info.items() if not k.startswith("_")})
        v = validation_of(info.get("metrics"))
        if v is not None:
            out.validations.append({"model": len(out.members) - 1, **v, "source": "checkpoint metrics"})
    if out.members:
        ws, out.weights_method = member_weights(weights, out.members)
        if len(out.members) == 1:
            out.weights_method = None
        for m, w in zip(out.members, ws):
            m.weight = w
    elif weights is not None:
        raise ConfigError("weights are for ensembles of models")
    return out

"""The generator (and discriminator) a fit starts from: fresh, from a checkpoint, or the first of several that fits.

:func:`first_fitting_init` is what :func:`medsat_sr.engine.build_trainer`
calls once the training set is built: ``init`` may be ``None`` (a fresh
network of the config's architecture), a checkpoint or a module (adapted to
the data's channels and scale, frozen as configured), or a list of
checkpoints, tried in order on the same training set (a shipped model that
does not fit costs a checkpoint load, not a second set of pairs).
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from medsat_sr import zoo
from medsat_sr.errors import ModelError

__all__ = ["first_fitting_init", "discriminator"]

logger = logging.getLogger("medsat_sr.train")


def _model_kwargs(cfg: Any, ts: Any) -> dict[str, Any]:
    kwargs = dict(cfg.model.kwargs)
    kwargs.update(
        spatial_dims=ts.spatial_dims,
        in_channels=ts.in_channels,
        out_channels=ts.out_channels,
        scale=list(ts.model_scale),
    )
    if ts.guide_channels:
        kwargs["guide_channels"] = ts.guide_channels
    return kwargs


def _scale_misfit(init: Any, old: Sequence[float], new: Sequence[float], cfg: Any) -> str:
    """Why a fixed-factor checkpoint cannot run at another scale, and what to use instead."""
    from medsat_sr import zoo

    def fmt(v: Sequence[float]) -> str:
        return "x".join(f"{float(f):.3g}" for f in v)

    name = Path(str(init)).name
    others = [n for n in zoo.starting_points(getattr(cfg, "name", None)) if n != name and zoo.takes_any_factor(n)]
    instead = f" (--model {others[0]} takes any factor)" if others else ""
    return (f"{init}: a fixed-factor network trained at scale {fmt(old)}; the input needs {fmt(new)}, which its "
            f"weights do not fit; give --scale with the network's factor, or use a network that takes any "
            f"factor{instead}, or fit one on the input (--config)")


def _init_model(cfg: Any, ts: Any, init: Any, device: torch.device) -> tuple[nn.Module, dict[str, Any]]:
    """The generator: fresh, or from a checkpoint (adapted to the data, frozen as configured).

    ``init`` may name a shipped model (``--init multiband_x2``), as ``--model`` may.
    """
    from medsat_sr.checkpoint import load_checkpoint
    from medsat_sr.models import adapt_channels, build_model, freeze_blocks, freeze_body

    name = cfg.model.name or cfg.profile.default_model
    info: dict[str, Any] = {}
    if init is None:
        return build_model(name, **_model_kwargs(cfg, ts)).to(device), info
    if isinstance(init, nn.Module):  # a copy: freezing and fine-tuning never touch the caller's module
        model, meta = copy.deepcopy(init), {"source": "module"}
    else:
        model, meta = load_checkpoint(zoo.resolve(init), device="cpu")
    info["init"] = str(init) if not isinstance(init, nn.Module) else "module"
    cfg_kw = getattr(model, "config", {}).get("kwargs", {})
    arch = getattr(model, "config", {}).get("name", name)
    if cfg.model.name and cfg.model.name != arch:
        logger.warning("config model %r differs from the checkpoint's %r; using the checkpoint's", cfg.model.name, arch)
    if cfg_kw.get("spatial_dims") not in (None, ts.spatial_dims):
        raise ModelError(
            f"checkpoint {init} is a {cfg_kw.get('spatial_dims')}D model; the data need a {ts.spatial_dims}D one"
        )
    if cfg_kw.get("in_channels") != ts.in_channels or cfg_kw.get("out_channels") != ts.out_channels:
        logger.info(
            "adapting the checkpoint from %s -> %s channels to %s -> %s",
            cfg_kw.get("in_channels"), cfg_kw.get("out_channels"), ts.in_channels, ts.out_channels,
        )
        model = adapt_channels(model, ts.in_channels, ts.out_channels)
        info["adapted_channels"] = [cfg_kw.get("in_channels"), ts.in_channels]
        cfg_kw = model.config["kwargs"]
    old_scale = [float(v) for v in cfg_kw.get("scale", [])]
    if old_scale and [round(v, 6) for v in old_scale] != [round(v, 6) for v in ts.model_scale]:
        kw = dict(cfg_kw)
        kw["scale"] = list(ts.model_scale)
        new = build_model(arch, **kw)
        try:
            new.load_state_dict(model.state_dict(), strict=True)
        except RuntimeError as exc:
            raise ModelError(_scale_misfit(init, old_scale, list(ts.model_scale), cfg)) from exc
        info["rescaled_from"] = old_scale
        model = new
    model = model.to(device)
    model.train()
    fb = cfg.train.freeze_blocks
    if fb == "body":
        info["frozen"] = freeze_body(model)
    elif fb:
        info["frozen"] = freeze_blocks(model, int(fb))
    info["init_metadata_created"] = meta.get("created") if isinstance(meta, Mapping) else None
    return model, info


def first_fitting_init(cfg: Any, ts: Any, init: Any, device: torch.device) -> tuple[nn.Module, dict[str, Any]]:
    """:func:`_init_model` for one ``init``, or the first of a list of checkpoints whose weights fit the data.

    Candidates are tried on the one training set already built (a misfit
    costs a checkpoint load, not a second set of pairs); those skipped are
    listed in ``info["init_skipped"]`` as ``{"init", "why"}``.

    Raises:
        ModelError: no candidate fits (every reason, in order).
    """
    if not isinstance(init, (list, tuple)):
        return _init_model(cfg, ts, init, device)
    if not init:
        raise ModelError("no checkpoint to start from (an empty list of candidates)")
    skipped: list[dict[str, str]] = []
    for cand in init:
        try:
            model, info = _init_model(cfg, ts, cand, device)
        except ModelError as exc:
            logger.info("%s cannot start this fit (%s)", cand, exc)
            skipped.append({"init": str(cand), "why": str(exc)})
            continue
        if skipped:
            info["init_skipped"] = skipped
        return model, info
    raise ModelError("no checkpoint fits the data: " + "; ".join(f"{s['init']}: {s['why']}" for s in skipped))


def discriminator(cfg: Any, ts: Any, device: torch.device) -> nn.Module:
    from medsat_sr.models import build_discriminator

    kw = dict(cfg.train.adversarial.discriminator)
    kw.setdefault("spatial_dims", ts.spatial_dims)
    kw.setdefault("in_channels", ts.out_channels)
    if "n_layers" not in kw:
        b = ts.val[0]["label"] if ts.val else None
        smallest = min(cfg.train.patch_size) if isinstance(cfg.train.patch_size, list) else cfg.train.patch_size
        if b is not None:
            smallest = min(smallest, min(b.shape[2:]))
        kw["n_layers"] = max(1, min(3, int(math.floor(math.log2(max(smallest, 6) / 3.0)))))
    return build_discriminator("patch", **kw).to(device)

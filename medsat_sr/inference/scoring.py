"""A model applied with no fitting is scored on the input's own held-out split, as a fit would be.

The run's decision between the network and the classical result reads a
validation: a fit's own held-out split, or, for a model applied as it is,
the pairs a self-supervised fit of the same config would validate on, scored
at iteration 0 (:func:`score_on_input`). The config that makes those pairs:

* a shipped model (``--model NAME``): the config it serves (``card.serves``);
* a checkpoint given by path (``--model PATH``: a ``train`` run, or a fit kept
  from an earlier run): its own training config, recorded in the checkpoint,
  made self-supervised and held at the scale the run applies
  (:func:`serving_config`). Its training's validation scored its training
  data, whatever the input; scored on the input, a checkpoint that does not
  suit it falls back to the classical result like a shipped model.

A checkpoint whose config cannot be rebuilt (none recorded, a profile or
section that this version no longer accepts, a multi-input config) keeps its training's scores, and the
verdict says they are not this input's.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from monai.data import MetaTensor

from medsat_sr.config import JobConfig, load_config
from medsat_sr.engine import build_trainer
from medsat_sr.errors import ConfigError, MedsatError
from medsat_sr.image import Key
from medsat_sr.inference.members import check_takes
from medsat_sr.inference.plan import volume_scale
from medsat_sr.inference.request import fit_input
from medsat_sr.inference.shipped import warn_far_factor
from medsat_sr.inference.volume import trained_at_any_factor

logger = logging.getLogger("medsat_sr.inference")

__all__ = ["score_on_input", "score_model", "serving_config", "checkpoint_path", "score_checkpoint"]

#: What a checkpoint's own training config loses to serve as the self-supervised config of an input.
_SERVING_OVERRIDES = ("train.mode=self_supervised", "train.init=null", "train.freeze_blocks=0", "data.inputs=[]",
                      "data.validation=[]", "data.pairs=[]", "data.factors=null")


def score_on_input(checkpoint: str | Path, cfg: Any, fit_input: Any, what: str) -> dict[str, Any]:
    """Score a checkpoint, unchanged, on the input's own held-out split against the classical result.

    The split, the pairs, the metric and the data range are those of a
    self-supervised fit of ``cfg`` on ``fit_input`` (its validation at
    iteration 0), so the decision reads it like a fit's validation.

    Args:
        checkpoint: the checkpoint's path.
        cfg: the self-supervised config whose pairs score it.
        fit_input: the volume, raster or band set.
        what: the model, as the record's ``source`` names it.

    Returns:
        A validation entry for :func:`medsat_sr.inference.plan.decide`.

    Raises:
        ModelError: the model does not fit the input's pairs.
    """
    _, _, state = build_trainer(cfg, None, images=[fit_input], init=str(checkpoint), progress=False)
    state.validate(0)  # type: ignore[attr-defined]
    row = state.history[-1]
    out = {"val_psnr": float(row["val_psnr"]), "val_psnr_cubic": float(state.cubic["val_psnr_cubic"]),
           "source": f"{what} (no fitting) on the input's own held-out split"}
    if state.cubic.get("val_psnr_interp") is not None:
        out["val_psnr_interp"] = float(state.cubic["val_psnr_interp"])
    return out


def score_model(src: Any, mem: Any, cfg: JobConfig, checkpoint: Any, what: str, *, scale: Any = None,
                target_spacing: Any = None, shipped: str | None = None) -> dict[str, Any]:
    """The run's one model on the input's held-out split; one for other channels is refused first.

    Args:
        src: the run's source.
        mem: the run's members (one).
        cfg: the self-supervised config whose pairs score it.
        checkpoint: the model's checkpoint path.
        what: how the record names the model.
        scale, target_spacing: what the run asked for.
        shipped: a shipped model's name: a volume far from the factors it was trained at is warned about.
    """
    own = fit_input(src, cfg, scale, target_spacing)
    note = ""
    if isinstance(own, MetaTensor):
        kind = "volume" if src.is_volume else "raster"
        if shipped and src.is_volume and scale is None and target_spacing is None:
            warn_far_factor(shipped, cfg, own)
        if check_takes(mem.members, int(own.shape[0]), src.path or own.meta.get(Key.SOURCE_PATH) or f"the {kind}",
                       kind=kind, names=own.meta.get(Key.BAND_NAMES)):  # a 4D series: scored on its first volume
            note = f", on volume 0 of {int(own.shape[0])} (the decision holds for all)"
            own = own[0:1]
    got = score_on_input(checkpoint, cfg, own, what)
    return {**got, "source": got["source"] + note}


def serving_config(meta: Mapping[str, Any], scale: Sequence[float] | None = None) -> JobConfig:
    """A checkpoint's own training config, made the self-supervised config of an input.

    The checkpoint records its config resolved (:meth:`JobConfig.resolved`:
    the domain profile, with the config's degradation, normalisation and
    metrics merged in, in place of its name). That profile is the config's
    domain again, as it was trained, so a profile of the user's own (a YAML
    file that is not at hand) or one that a later version changed still
    loads; training data, starting weights, freezing and factors go;
    ``scale`` (a volume's per-axis scale, as the run applies it) replaces
    the config's rule.

    Raises:
        ConfigError: no config recorded, a multi-input one, or one that no longer loads (a profile or
            section this version does not accept).
    """
    data = meta.get("config")
    if not isinstance(data, Mapping) or not isinstance(data.get("domain"), Mapping):
        raise ConfigError("the checkpoint records no training config")
    several = [k for k in ("revisit", "multistack") if data.get(k)]
    if several:
        raise ConfigError(f"the checkpoint's config is a multi-input one ({several[0]}), whose pairs need several inputs")
    cfg = {**data, "domain": dict(data["domain"])}
    over = list(_SERVING_OVERRIDES) + ([f"scale={[float(v) for v in scale]}"] if scale is not None else [])
    return load_config(cfg, over)


def checkpoint_path(item: Any) -> str | None:
    """The checkpoint file behind a ``--model`` item: a path, or a member loaded from one (a batch's cache)."""
    if isinstance(item, (str, os.PathLike)):
        return os.fspath(item)
    path = (getattr(item, "info", None) or {}).get("path")
    return path if isinstance(path, str) else None


def score_checkpoint(src: Any, mem: Any, checkpoint: Any, scale: Any, target_spacing: Any) -> dict[str, Any] | None:
    """A checkpoint given by path, scored on the input like a shipped model; ``None`` where it cannot be.

    A volume's pairs are made at the scale the run applies
    (:func:`medsat_sr.inference.plan.volume_scale` for this model); a
    raster's at the checkpoint's own scale.
    """
    member = mem.members[0]
    meta = member.info.get("_meta") or {}
    if not isinstance(meta.get("config"), Mapping):  # a checkpoint made outside train/upscale: its own scores decide
        return None
    what = f"model {str(checkpoint)!r}"
    try:
        s = None
        if src.is_volume:
            s = volume_scale(src.volume, member.scale, scale, target_spacing, None,
                             any_factor=trained_at_any_factor(member))[0]
        cfg = serving_config(meta, s)
        return score_model(src, mem, cfg, checkpoint, what, scale=s)
    except MedsatError as exc:  # the run goes on; where the model cannot run at all, the run says so next
        logger.warning("%s: %s cannot be scored on this input (%s); its training's scores decide, and they are not "
                       "this input's", src.path or "the input", what, exc)
        return None

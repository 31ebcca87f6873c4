"""Shipped models in an upscale run: fine-tune by default, or apply one with no fitting.

``upscale --config CFG`` (a self-supervised config) used to fit the config's
network from random weights for the config's budget (10 minutes on 2 CPU
cores). Now, when a shipped model serves ``CFG`` and its weights fit the
input (the first of :func:`medsat_sr.zoo.starting_points` that does: a
config's own network at a fixed factor before a model that fits any
factor), the run starts from those weights and
fine-tunes them on the input's own self-supervised pairs for a short budget
(:data:`~medsat_sr.inference.options.DEFAULT_FINETUNE_SECONDS`, or ``--budget``).
The fine-tuned network has the shipped model's architecture (the config's
``model`` section describes the network trained from scratch). The fallback
guards the result as before: the fit's held-out split scores the network
against the classical result. ``--from-scratch`` restores the old fit (its
budget: the config's, or ``--budget``); so do shipped models whose weights
cannot serve the input (a different dimensionality or a scale their upsampler
cannot give), with a warning that says why.

``upscale --model NAME`` applies a shipped model with no fitting at all. Its
config (``card.serves``) supplies the profile, the scale rule and the options,
and the decision scores the model on the input's own held-out split, the
pairs a self-supervised fit would validate on, against the classical result
on the same split; so a shipped model that does not suit the input falls back
to the classical result like a fit would.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from monai.data import MetaTensor

from medsat_sr import zoo
from medsat_sr.config import load_config
from medsat_sr.errors import ModelError
from medsat_sr.image import BandSet, Key, is_volume
from medsat_sr.inference.options import DEFAULT_FINETUNE_SECONDS
from medsat_sr.train import fit as train_fit

logger = logging.getLogger("medsat_sr.inference")

__all__ = ["FINETUNE_LR_FACTOR", "FINETUNE_LR_FACTORS", "FINETUNE_VAL_EVERY", "shipped_names", "as_checkpoints", "serves",
           "fit_on_input", "fit_items", "finetune_overrides", "served_config", "warn_far_factor", "SERIES_FIT_VOLUMES"]

#: The fine-tuning learning rate as a fraction of the config's (the shipped weights are close already).
FINETUNE_LR_FACTOR = 0.5
#: Per config, where measured otherwise: the Sentinel-2 weights (trained on a level-2A tile) start far from a
#: level-1C scene and need a larger step. ``benchmarks/s2_finetune_lr.py`` chose 16 (lr 1.6e-3) among 0.5-32 on
#: one half of the DSen2 crop (60 s fine-tunes: RMSE 0.502 x GDAL cubic at 0.5, 0.382 at 2, 0.319 at 16, 0.342 at
#: 32); on the other, held-out half a 60 s fine-tune gave 0.305 x (3 seeds), against 0.372 at the factor 2 used
#: before and 0.387 for the config's 6-minute fit from scratch (AMD EPYC, 2 cores, one thread per fit).
#: The thick-slice MR weights: ``benchmarks/mri_finetune_lr.py`` chose 1 (lr 5e-4) among 0.25-2 on the MNI template
#: (60 s fine-tunes, 2 seeds: 30.84 / 30.91 / 30.96 / 30.37 dB at 0.25 / 0.5 / 1 / 2; cubic 25.91; above 2 worse).
FINETUNE_LR_FACTORS: dict[str, float] = {"sentinel2_20m_to_10m": 16.0, "mri_thick_slice": 1.0}
#: Validation interval (iterations) of a fine-tune: several checks inside a one-minute budget.
FINETUNE_VAL_EVERY = 25


def shipped_names(items: Sequence[Any]) -> list[str]:
    """The names of shipped models among ``items`` (``--model`` values), in order."""
    return [str(i) for i in items if zoo.is_shipped(i)]


def _bare_name(item: Any) -> bool:
    """A string with no folder or checkpoint suffix that is not on disk: meant as a shipped model's name."""
    if not isinstance(item, str) or not item or "/" in item or os.sep in item:
        return False
    if item.endswith((".json", ".safetensors")):
        return False
    return not (Path(item).exists() or Path(item + ".json").exists())


def as_checkpoints(items: Sequence[Any]) -> list[Any]:
    """``items`` with shipped model names replaced by their checkpoint paths.

    Raises:
        ModelError: a bare name that is neither a checkpoint on disk nor a
            shipped model (one line that lists the shipped names).
    """
    return [str(zoo.checkpoint(i)) if _bare_name(i) else i for i in items]


def serves(name: str) -> str | None:
    """The job config a shipped model serves (its profile, scale rule and options), if any."""
    return zoo.card(name).get("serves")


def _recipe(cfg: Any) -> tuple[Any, ...]:
    """What a config's fit asks of starting weights: the domain's kind, modality and degradation, the network, guidance."""
    p = cfg.profile
    return (cfg.train.mode, p.kind, p.modality, p.degradation.model, cfg.model.name or p.default_model, cfg.spatial_dims,
            cfg.guided(), cfg.revisit is None and cfg.multistack is None)


def served_config(cfg: Any) -> str | None:
    """The built-in config whose shipped models start a fit of ``cfg``: its own name, or one of the same recipe.

    A config of the user's own that copies a built-in one under another name,
    or with a profile of its own (same modality, degradation model and
    network), starts where the built-in one does, with its fine-tune settings.
    A new modality or network does not: nothing measured says which weights
    would help it.
    """
    if zoo.starting_points(cfg.name):
        return str(cfg.name)
    own = _recipe(cfg)
    served = sorted({s for n in zoo.names() if (s := serves(n))})
    return next((name for name in served if _recipe(load_config(name)) == own), None)


def finetune_overrides(cfg: Any, seconds: float, served: str | None = None) -> list[str]:
    """The ``--set`` items that turn ``cfg`` into a short fine-tune: budget, learning rate, no warm-up.

    ``served``: the built-in config whose measured learning-rate factor applies (default: ``cfg``'s own name).
    """
    factor = FINETUNE_LR_FACTORS.get(served or cfg.name, FINETUNE_LR_FACTOR)
    return [
        f"train.max_minutes={seconds / 60.0!r}",
        f"train.lr={float(cfg.train.lr) * factor!r}",
        "train.schedule.warmup_iterations=0",
        f"train.val_every={min(int(cfg.train.val_every), FINETUNE_VAL_EVERY)}",
    ]


#: A volume series (fMRI, diffusion, echoes) fits one one-channel network on at most this many of its volumes,
#: evenly spaced, and applies it to every volume: the volumes share one anatomy and one slice profile.
SERIES_FIT_VOLUMES = 4


def fit_items(fit_input: Any, cfg: Any) -> tuple[list[Any], dict[str, Any] | None]:
    """What a self-supervised fit trains on: the input, or some volumes of a series, each its own one-channel image.

    A multi-channel volume whose config names no bands is a series: a
    network over its volumes as channels would mix them (the shipped
    one-channel weights, spread over the channels, start as the SR of
    their mean). Up to :data:`SERIES_FIT_VOLUMES` evenly spaced volumes
    become separate inputs, so the network has one channel and runs on each
    volume (:func:`medsat_sr.inference.members.check_takes`).

    Returns:
        The images to fit on, and what the record says (``None`` for a single input).
    """
    n = int(fit_input.shape[0]) if is_volume(fit_input) and not isinstance(fit_input, BandSet) else 1
    if n < 2 or cfg.target_bands():
        return [fit_input], None
    m = min(n, SERIES_FIT_VOLUMES)
    picks = sorted({round(k * (n - 1) / max(m - 1, 1)) for k in range(m)})
    names = list(fit_input.meta.get(Key.BAND_NAMES) or [])
    items = []
    for k in picks:
        meta = {**fit_input.meta, Key.BAND_NAMES: [names[k]] if len(names) == n else None, "n_volumes": 1}
        items.append(MetaTensor(fit_input.as_tensor()[k:k + 1].clone(), affine=fit_input.affine, meta=meta))
    return items, {"volumes": n, "fitted_on": picks,
                   "what": f"one one-channel network fitted on volumes {picks} of {n} and applied to each volume"}


def fit_on_input(fit_input: Any, cfg: Any, opts: Any, *, run_dir: Any, progress: bool) -> Any:
    """The self-supervised fit of ``upscale --config``: fine-tune the shipped model, or from scratch.

    Args:
        fit_input: the volume, raster or band set to fit on.
        cfg: the self-supervised job config.
        opts: the run's options (``from_scratch``, ``budget``).
        run_dir: where the fit keeps its run, or ``None``.
        progress: progress bars.

    Returns:
        The :class:`~medsat_sr.train.FitResult`; ``metadata["start"]`` says
        where it started (``shipped`` name or ``None``) and its budget.
    """
    points: list[str] = []
    served: str | None = None
    if cfg.train.mode == "finetune":  # the config names its own starting checkpoint
        reason = f"the config's train.init {cfg.train.init}"
    elif opts.from_scratch:
        reason = "--from-scratch"
    else:
        served = served_config(cfg)
        points = zoo.starting_points(served)
        reason = f"no shipped model serves config {cfg.name!r} or a built-in config of its recipe"
        if points and served != cfg.name:
            logger.info("config %r has the recipe of the built-in config %r: starting from its shipped model",
                        cfg.name, served)
    items, series = fit_items(fit_input, cfg)
    if points:  # the preferred first; the first whose weights fit the input, on one training set
        seconds = float(opts.budget or DEFAULT_FINETUNE_SECONDS)
        ft_cfg = load_config(cfg, finetune_overrides(cfg, seconds, served))
        paths = {str(zoo.checkpoint(n)): n for n in points}
        try:
            fr = train_fit(items, ft_cfg, run_dir=run_dir, progress=progress, init=list(paths))
        except ModelError as exc:
            reason = "; ".join(f"shipped model {n!r} does not fit the input" for n in points) + f" ({exc})"
            logger.warning("no shipped model fits this input (%s); fitting from scratch", exc)
        else:
            task = fr.metadata.get("task") or {}
            name = paths.get(str(task.get("init")), str(task.get("init")))
            fr.metadata["start"] = {"shipped": name, "budget_seconds": seconds, "lr": ft_cfg.train.lr,
                                    "source": f"fine-tuned from shipped model {name!r} on the input ({seconds:g} s budget)"}
            skipped = [f"shipped model {paths.get(s['init'], s['init'])!r} does not fit the input: {s['why']}"
                       for s in task.get("init_skipped") or []]
            if skipped:
                fr.metadata["start"]["skipped"] = skipped
            if series:
                fr.metadata["start"]["series"] = series
            return fr
    sc_cfg = load_config(cfg, [f"train.max_minutes={float(opts.budget) / 60.0!r}"]) if opts.budget else cfg
    logger.info("fitting from scratch (%s)", reason)
    fr = train_fit(items, sc_cfg, run_dir=run_dir, progress=progress, init=cfg.train.init)
    fr.metadata["start"] = {"shipped": None, "budget_seconds": 60.0 * float(sc_cfg.train.max_minutes), "reason": reason,
                            "source": f"self-supervised fit on the input from {'the config init' if cfg.train.init else 'random weights'}"}
    if series:
        fr.metadata["start"]["series"] = series
    return fr


#: A shipped model asked for a factor this many times above or below the ones it was trained at is warned about.
FAR_FACTOR = 1.5


def _trained_factors(name: str) -> list[float]:
    """The through-plane factors the shipped model ``name`` was trained at (its card; empty when it says none)."""
    deg = zoo.card(name).get("degradation") or {}
    got = deg.get("factors") or ([deg["factor"]] if deg.get("factor") else [])
    return sorted(float(f) for f in got)


def warn_far_factor(name: str, cfg: Any, volume: Any) -> None:
    """Say, before the scoring, when the volume's factor is far from those the shipped model was trained at."""
    trained = _trained_factors(name)
    if not trained:
        return
    need = max(float(f) for f in cfg.scale_for([float(v) for v in volume.meta[Key.SPACING]]))
    if trained[0] / FAR_FACTOR < need < trained[-1] * FAR_FACTOR:
        return
    at = f"x{trained[0]:g}" if len(trained) == 1 else f"x{trained[0]:g} to x{trained[-1]:g}"
    where = volume.meta.get(Key.SOURCE_PATH) or "the volume"
    logger.warning("%s: %s was trained at %s through-plane and this input needs x%.3g, far from it: it may not "
                   "beat cubic here (the run then falls back); --config %s fine-tunes it on the input",
                   where, name, at, need, cfg.name)

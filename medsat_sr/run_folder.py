"""A training run's folder: checkpoints, resume state, ``metrics.csv`` and ``curves.png``.

:func:`medsat_sr.train.build_trainer` and its handlers write and read the
run folder through these functions: ``best`` and ``last`` checkpoints
(:func:`_save`), the optimiser state and counters a resume needs
(:func:`_save_resume_state`, :func:`_restore`; safetensors + JSON, no
pickle) and the history (:func:`_write_history`). The file names are
re-exported from :mod:`medsat_sr.train`. The functions take the run's
:class:`medsat_sr.train.TrainState`; they log under ``medsat_sr.train``,
as before the split.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from medsat_sr.errors import DataError, ModelError
from medsat_sr.trust import jsonable

if TYPE_CHECKING:
    from medsat_sr.engine import TrainState

__all__ = ["BEST", "LAST", "METRICS_CSV", "CURVES_PNG", "STATE_JSON", "OPTIM_FILE"]

logger = logging.getLogger("medsat_sr.train")  # the name the run's messages had before the split

#: File names inside a run folder.
BEST = "best"
LAST = "last"
METRICS_CSV = "metrics.csv"
CURVES_PNG = "curves.png"
STATE_JSON = "last.state.json"
OPTIM_FILE = "last.optim.safetensors"


# =============================================================== checkpoints
def _optimizer_to_files(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split an optimiser state into safetensors tensors and JSON data (no pickle)."""
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, entry in sd["state"].items():
        for k, v in entry.items():
            if isinstance(v, torch.Tensor):
                tensors[f"{pid}/{k}"] = v.detach().to("cpu").contiguous().clone()
            else:
                scalars.setdefault(str(pid), {})[k] = v
    groups = json.loads(json.dumps(sd["param_groups"], default=lambda o: None))
    return tensors, {"param_groups": groups, "scalars": scalars, "ids": [str(k) for k in sd["state"]]}


def _optimizer_from_files(opt: torch.optim.Optimizer, tensors: Mapping[str, torch.Tensor], data: Mapping[str, Any]) -> None:
    """Load an optimiser state split by :func:`_optimizer_to_files` into ``opt``.

    Raises:
        ModelError: the saved parameter groups do not fit ``opt``.
    """
    state: dict[int, dict[str, Any]] = {}
    for key, t in tensors.items():
        pid, name = key.split("/", 1)
        state.setdefault(int(pid), {})[name] = t
    for pid, entry in (data.get("scalars") or {}).items():
        state.setdefault(int(pid), {}).update(entry)
    groups = data["param_groups"]
    cur = opt.state_dict()["param_groups"]
    if len(groups) != len(cur) or any(len(a["params"]) != len(b["params"]) for a, b in zip(groups, cur)):
        raise ModelError("the saved optimiser state does not fit this model's parameters; cannot resume")
    opt.load_state_dict({"state": state, "param_groups": groups})


def _metadata(state: TrainState, metrics: Mapping[str, Any]) -> dict[str, Any]:
    """The checkpoint metadata of the run with ``metrics`` (and the cubic baselines) in it."""
    meta = dict(state.metadata_base)
    meta["metrics"] = {**state.cubic, **metrics}
    return meta


def _save(state: TrainState, stem: str, metrics: Mapping[str, Any]) -> Path | None:
    """Save the model as checkpoint ``run_dir/stem``; its path, or None without a run folder."""
    from medsat_sr.checkpoint import save_checkpoint

    if state.run_dir is None:
        return None
    path = state.run_dir / stem
    save_checkpoint(path, state.model, _metadata(state, metrics))
    return path


def _save_resume_state(state: TrainState, iteration: int) -> None:
    """Write what a resume needs besides the weights: :data:`OPTIM_FILE` and :data:`STATE_JSON`."""
    if state.run_dir is None:
        return
    from safetensors.torch import save_file

    from medsat_sr._atomic import atomic_path

    tensors, data = _optimizer_to_files(state.optimizer)
    with atomic_path(state.run_dir / OPTIM_FILE) as tmp:
        save_file(tensors, str(tmp))
    doc = {
        "format": "medsat_sr.train_state/1",
        "iteration": int(iteration),
        "elapsed_seconds": state.elapsed(),
        "best_val_psnr": state.best_psnr,  # -inf/NaN (nothing validated yet, a diverged fit) are written as null
        "best_val_ssim": state.best_ssim,
        "best_iteration": state.best_iteration,
        "plateau": {"factor": state.plateau_factor, "best": state.plateau_best, "bad": state.plateau_bad},
        "early_stopping": _es_state(state.early_stopping),
        "history": state.history,
        "loss_trace": [[int(i), float(v)] for i, v in state.loss_trace if math.isfinite(v)],
        "optimizer": data,
        "last_validated": state.last_validated,
    }
    # numpy and tensors to numbers, then -inf/NaN (a diverged fit's history and best_*) to null: JSON has neither
    plain = json.loads(json.dumps(doc, default=_json_default))
    text = json.dumps(jsonable(plain), indent=1, allow_nan=False)
    with atomic_path(state.run_dir / STATE_JSON) as tmp:
        tmp.write_text(text, encoding="utf-8")


def _json_default(o: Any) -> Any:
    """JSON for numpy scalars and tensors; None for anything else."""
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, torch.Tensor):
        return o.tolist()
    return None


def _es_state(es: Any) -> dict[str, Any] | None:
    """The counters of an ignite ``EarlyStopping`` handler (None without one)."""
    if es is None:
        return None
    best = es.best_score
    return {"counter": int(es.counter), "best_score": None if best is None else float(best)}


def _restore(state: TrainState, trainer: Any) -> None:
    """Resume from ``run_dir/last`` (weights, optimiser, counters, history)."""
    from safetensors.torch import load_file

    from medsat_sr.checkpoint import load_checkpoint

    assert state.run_dir is not None
    last = state.run_dir / LAST
    sj = state.run_dir / STATE_JSON
    if not (state.run_dir / f"{LAST}.json").is_file() or not sj.is_file():
        raise DataError(f"{state.run_dir}: nothing to resume (no {LAST}.json / {STATE_JSON}); start without --resume")
    model, _ = load_checkpoint(last, device="cpu")
    try:
        state.model.load_state_dict(model.state_dict(), strict=True)
    except RuntimeError as exc:
        raise ModelError(f"{last}: the saved model does not fit this config ({str(exc).splitlines()[0]})") from exc
    try:
        doc = json.loads(sj.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"{sj}: cannot read the training state: {exc}") from exc
    optim_path = state.run_dir / OPTIM_FILE
    if optim_path.is_file():
        _optimizer_from_files(state.optimizer, load_file(str(optim_path)), doc["optimizer"])
    it = int(doc["iteration"])
    state.start_iteration = it
    state.elapsed_before = float(doc.get("elapsed_seconds") or 0.0)
    state.best_psnr = doc.get("best_val_psnr") if doc.get("best_val_psnr") is not None else -math.inf
    state.best_ssim = doc.get("best_val_ssim") if doc.get("best_val_ssim") is not None else float("nan")
    state.best_iteration = int(doc.get("best_iteration") or 0)
    pl = doc.get("plateau") or {}
    state.plateau_factor = float(pl.get("factor", 1.0))
    state.plateau_best = pl.get("best") if pl.get("best") is not None else -math.inf
    state.plateau_bad = int(pl.get("bad", 0))
    state.history = list(doc.get("history") or [])
    state.loss_trace = [(int(i), float(v)) for i, v in doc.get("loss_trace") or []]
    state.last_validated = int(doc.get("last_validated", it))
    es = doc.get("early_stopping")
    if es and state.early_stopping is not None:
        state.early_stopping.counter = int(es["counter"])
        state.early_stopping.best_score = es["best_score"]
    best_json = state.run_dir / f"{BEST}.json"
    if best_json.is_file():
        bm, _ = load_checkpoint(state.run_dir / BEST, device="cpu")
        state.best_state = {k: v.detach().clone() for k, v in bm.state_dict().items()}
    val_every = int(state.cfg.train.val_every)
    trainer.state.iteration = it
    trainer.state.epoch = it // val_every
    state.data.train.reseed(int(state.cfg.train.seed) + it)
    state.scheduler.last_epoch = it
    for g, f0 in zip(state.optimizer.param_groups, state.scheduler.base_lrs):
        g["lr"] = f0 * state.scheduler.lr_lambdas[0](it)
    logger.info("resuming %s at iteration %d (%.1f s already trained)", state.run_dir, it, state.elapsed_before)


# =============================================================== history output
def _write_history(state: TrainState, *, plot: bool = True) -> None:
    """Write metrics.csv, and curves.png when ``plot``."""
    if state.run_dir is None:
        return
    cols = ["iteration", "loss", "val_psnr", "val_ssim", "lr", "seconds"]
    from medsat_sr._atomic import atomic_path

    with atomic_path(state.run_dir / METRICS_CSV) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            w = csv.DictWriter(fh, fieldnames=cols, extrasaction="ignore")
            w.writeheader()
            for row in state.history:
                w.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in cols})
    if not plot:
        return
    state.last_plot = time.monotonic()
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
    except Exception as exc:  # noqa: BLE001 - the plot is optional
        logger.warning("no curves.png: matplotlib unavailable (%s)", exc)
        return
    it = [r["iteration"] for r in state.history]
    loss = [r.get("loss") for r in state.history]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    trace = state.loss_trace or list(zip(it, loss))
    pts = [(i, v) for i, v in trace if v is not None and math.isfinite(v)]
    if pts:
        a1.plot(*zip(*pts), marker=".")
        a1.set_yscale("log")
    a1.set_xlabel("iteration")
    a1.set_ylabel("training loss (running mean)")
    a1.set_title("training loss")
    pp = [(i, r.get("val_psnr")) for i, r in zip(it, state.history) if r.get("val_psnr") is not None]
    if pp:
        a2.plot(*zip(*pp), marker=".", label="model")
    if math.isfinite(state.cubic.get("val_psnr_cubic", float("nan"))):
        a2.axhline(state.cubic["val_psnr_cubic"], color="grey", ls="--", label="cubic")
    a2.set_xlabel("iteration")
    a2.set_ylabel("PSNR (dB)")
    a2.set_title("validation PSNR")
    a2.legend()
    fig.tight_layout()
    with atomic_path(state.run_dir / CURVES_PNG) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)


# =============================================================== metrics
def _metric_row(state: TrainState, iteration: int) -> dict[str, Any]:
    """The metrics a checkpoint saved at ``iteration`` records (best validation scores, time)."""
    return {
        "val_psnr": state.best_psnr if math.isfinite(state.best_psnr) else None,
        "val_ssim": state.best_ssim,
        "best_iteration": state.best_iteration,
        "iteration": int(iteration),
        "seconds": round(state.elapsed(), 3),
        "data_range": state.data.data_range,
        "gain_db": (state.best_psnr - state.cubic["val_psnr_cubic"]) if math.isfinite(state.best_psnr) else None,
    }

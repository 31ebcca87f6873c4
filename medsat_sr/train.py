"""Training on MONAI engines: supervised, self-supervised, fine-tuning, optional adversarial loss.

:func:`build_trainer` (:mod:`medsat_sr.engine`, re-exported here)
assembles a :class:`monai.engines.SupervisedTrainer` and a
:class:`monai.engines.SupervisedEvaluator` with ignite handlers;
:func:`fit` runs it on images in memory and returns a :class:`FitResult`;
:func:`train` reads ``data.inputs`` and writes a run folder.

What a run does (all from the job config):

* **pairs** from :mod:`medsat_sr.data` (slice-wise thick slices, Wald's
  protocol, guided band sets, 3D patches, explicit pairs), degraded with
  :mod:`medsat_sr.degrade`, the code the evaluation uses;
* **loss**: weighted sum of ``l1``, ``charbonnier`` (``sqrt(d^2 + eps^2)``,
  eps 1e-3), ``mse`` and ``ssim`` (``monai.losses.SSIMLoss``);
* **optimiser**: AdamW (Adam when ``weight_decay`` is 0) on the trainable
  parameters; gradient-norm clipping with ``grad_clip``;
* **learning rate**: linear warm-up, then ``constant``, ``cosine`` (to
  ``min_lr``), ``step`` or ``plateau``. The cosine follows the *fraction of
  the budget used*, the larger of ``iteration / max_iterations`` and
  ``elapsed / max_minutes``, so a run stopped by the time budget still ends
  with a decayed rate;
* **precision**: ``fp32`` or ``bf16``. MONAI's ``amp`` flag is CUDA only,
  so bf16 wraps the network's forward in ``torch.autocast(device, bfloat16)``
  (:class:`PrecisionWrapper`) during training; parameters, optimiser state,
  the skip path and the loss stay float32, and validation runs in float32
  (as inference does by default). With bf16 on CPU the model and inputs
  use the ``channels_last`` memory format (oneDNN/AMX kernels); fp32 stays
  contiguous (channels_last did not help it consistently). Measured on the
  MNI thick-slice x4 case (EDSR 64 features x 8 blocks, batch 16, 48x48
  patches; 2 cores shared with other jobs, load 2-8, so interleaved
  medians/minima): a training step takes 0.13-0.56 s (min) / 1.1-1.5 s
  (median) in bf16 + channels_last against 0.27-0.94 s / 1.8-3.5 s in fp32,
  i.e. 1.6-2x faster; at equal iterations (100) the validation PSNR differs
  by 0.006 dB (34.415 bf16, 34.421 fp32); after equal time (3 min) bf16 gave
  +2.4 dB over cubic and fp32 +1.1 dB. Hence ``precision: bf16`` in the
  shipped configs. Applying in bf16 (:func:`medsat_sr.slicewise.apply_slicewise`) changed the
  masked PSNR by 0.001 dB at half the time;
* **validation** every ``val_every`` iterations (and before the first one):
  PSNR (``monai.handlers.PeakSignalToNoiseRatio``) and SSIM
  (``monai.metrics.SSIMMetric`` in ``monai.handlers.IgniteMetricHandler``)
  on the held-out tiles, with the data range of the profile's metric spec in
  network units; the cubic baseline (cubic B-spline for volumes, GDAL cubic
  for rasters) is measured once on the same tiles with the same metrics;
* **budget**: ``max_iterations`` and ``max_minutes`` (wall clock, validation
  included); whichever ends first stops training; ignite ``EarlyStopping``
  on validation PSNR;
* **checkpoints** (``RUN_DIR/best`` and ``RUN_DIR/last``, safetensors + JSON
  via :func:`medsat_sr.checkpoint.save_checkpoint`): architecture, scale,
  domain, normalisation statistics, band names, the resolved config, metrics
  (validation PSNR/SSIM and their cubic baselines), how the pairs were made
  (``task``) and the medsat_sr version. ``RUN_DIR/metrics.csv`` holds the
  history and ``RUN_DIR/curves.png`` the training loss and validation PSNR;
* **resume** (``resume=True``): weights, optimiser state (tensors in
  ``last.optim.safetensors``, the rest in ``last.state.json``; no pickle),
  iteration, elapsed time, best score, early-stopping and plateau counters,
  and the history are restored; training continues from the last
  checkpoint's iteration. Not restored: the random stream (reseeded from
  ``seed + iteration``) and, with the adversarial loss, the discriminator
  (it restarts from scratch);
* **fine-tuning** (``mode: finetune`` or ``init=``): weights from a
  checkpoint, first/last convolution adapted to a new channel count
  (:func:`medsat_sr.models.adapt_channels`), the head and first N blocks (or
  the body) frozen, the config's (lower) learning rate;
* **adversarial** (``train.adversarial.enabled``): ``pixel losses +
  weight * BCE(D(G(x)), real)`` with MONAI's PatchDiscriminator
  (:func:`medsat_sr.models.build_discriminator`), trained alternately in a
  custom ignite iteration.

A trained slice network is applied to a whole thick-slice volume by
:func:`medsat_sr.slicewise.apply_slicewise`, the same code the inference
route runs.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from medsat_sr.engine import (
    PrecisionWrapper,
    TrainState,
    build_trainer,
    read_inputs,
    resolve_device,
)
from medsat_sr.engine_handlers import _es_threshold
from medsat_sr.train_batch import only_valid, prepare_batch
from medsat_sr.losses import CharbonnierLoss, CombinedLoss, build_loss
from medsat_sr.normalise import Normaliser
from medsat_sr.run_folder import (
    BEST,
    CURVES_PNG,
    LAST,
    METRICS_CSV,
    OPTIM_FILE,
    STATE_JSON,
    _metric_row,
    _write_history,
)

__all__ = [
    "FitResult",
    "fit",
    "train",
    # re-exported from medsat_sr.engine (the trainer's assembly and handlers)
    "TrainState",
    "PrecisionWrapper",
    "build_trainer",
    "resolve_device",
    "read_inputs",
    "only_valid",
    "_es_threshold",
    "prepare_batch",
    # re-exported from medsat_sr.losses and medsat_sr.run_folder
    "build_loss",
    "CharbonnierLoss",
    "CombinedLoss",
    "BEST",
    "LAST",
    "METRICS_CSV",
    "CURVES_PNG",
    "STATE_JSON",
    "OPTIM_FILE",
]

logger = logging.getLogger(__name__)


# =============================================================== results
@dataclass
class FitResult:
    """What a training run produced.

    Attributes:
        model: the best model (by validation PSNR), plain (not wrapped), eval mode.
        metadata: what the checkpoint JSON holds (architecture, scale,
            domain, normalisation, band names, config, metrics, task).
        normaliser: the normalisation of the (first) training image.
        val_psnr: best validation PSNR (dB, network units, held-out split).
        val_psnr_cubic: the cubic baseline's PSNR on the same split and metric.
        val_ssim: SSIM of the best model; ``val_ssim_cubic`` of cubic.
        history: one dict per validation: ``iteration``, ``loss``, ``val_psnr``,
            ``val_ssim``, ``lr``, ``seconds``.
        iterations: iterations done; ``seconds``: wall time.
        stopped_by: ``"iterations"``, ``"time"`` or ``"early_stopping"``.
        run_dir: the run folder (``None`` when nothing was written).
        best_path, last_path: checkpoint stems.
    """

    model: nn.Module
    metadata: dict[str, Any]
    normaliser: Normaliser
    val_psnr: float
    val_psnr_cubic: float
    history: list[dict[str, Any]] = field(default_factory=list)
    val_ssim: float = float("nan")
    val_ssim_cubic: float = float("nan")
    iterations: int = 0
    seconds: float = 0.0
    stopped_by: str = "iterations"
    run_dir: Path | None = None
    best_path: Path | None = None
    last_path: Path | None = None

    @property
    def gain_db(self) -> float:
        """``val_psnr - val_psnr_cubic``."""
        return self.val_psnr - self.val_psnr_cubic


# =============================================================== fit / train
def _finish(state: TrainState, trainer: Any) -> FitResult:
    model = state.model
    if state.best_state is not None:
        model.load_state_dict(state.best_state)
    model = model.to(memory_format=torch.contiguous_format)
    for p in model.parameters():
        p.requires_grad_(True)
    model.eval()
    metrics = {**state.cubic, **_metric_row(state, trainer.state.iteration), "stopped_by": state.stopped_by}
    meta = dict(state.metadata_base)
    meta["metrics"] = metrics
    if state.run_dir is not None:
        # the best checkpoint's metrics carry the final numbers too
        best_json = state.run_dir / f"{BEST}.json"
        if best_json.is_file():
            from medsat_sr.checkpoint import save_checkpoint

            save_checkpoint(state.run_dir / BEST, model, meta)
            meta = {**meta, "checkpoint": str(state.run_dir / BEST)}  # where it is (not stored in the JSON)
        _write_history(state)
    return FitResult(
        model=model,
        metadata=meta,
        normaliser=state.data.normaliser,
        val_psnr=float(state.best_psnr),
        val_psnr_cubic=float(state.cubic["val_psnr_cubic"]),
        history=list(state.history),
        val_ssim=float(state.best_ssim),
        val_ssim_cubic=float(state.cubic["val_ssim_cubic"]),
        iterations=int(trainer.state.iteration),
        seconds=float(state.elapsed()),
        stopped_by=state.stopped_by,
        run_dir=state.run_dir,
        best_path=None if state.run_dir is None else state.run_dir / BEST,
        last_path=None if state.run_dir is None else state.run_dir / LAST,
    )


def fit(
    images: Any,
    config: Any,
    *,
    run_dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
    init: Any = None,
    resume: bool = False,
    device: str | torch.device | None = "cpu",
    validation: Sequence[Any] | None = None,
    pairs: Sequence[tuple[Any, Any]] | None = None,
) -> FitResult:
    """Train a model on images in memory.

    Args:
        images: a volume or raster (MetaTensor), a BandSet (guided), or a
            list of references (supervised).
        config: the job config (object, name or path).
        run_dir: run folder for checkpoints, metrics.csv and curves.png;
            ``None`` writes nothing.
        progress: tqdm progress bar.
        init: checkpoint path or model to start from (fine-tuning), or a list of
            checkpoints: the first whose weights fit the data.
        resume: continue from ``run_dir/last``.
        device: ``"cpu"``, ``"cuda"`` or ``"auto"``.
        validation: held-out references (supervised).
        pairs: explicit ``(lr, hr)`` images (supervised).

    Returns:
        The :class:`FitResult` with the best model.
    """
    trainer, _, state = build_trainer(
        config, run_dir, images=images, init=init, progress=progress, resume=resume, device=device,
        validation=validation, pairs=pairs,
    )
    if state.start_iteration >= state.cfg.train.max_iterations:
        logger.info("nothing to do: the run already reached train.max_iterations")
    else:
        trainer.run()
    return _finish(state, trainer)


def train(
    config: Any,
    run_dir: str | os.PathLike[str],
    *,
    init: Any = None,
    resume: bool = False,
    progress: bool = True,
    device: str | torch.device | None = "cpu",
) -> FitResult:
    """Train from ``data.inputs`` (``data.validation``, ``data.pairs``) into ``run_dir``.

    Under ``torchrun --nproc-per-node N`` this is data-parallel training
    (DDP, gloo on CPU): see :mod:`medsat_sr.distributed`.

    Raises:
        ConfigError, DataError, ModelError, WriteError: see :func:`build_trainer`.
    """
    from medsat_sr import distributed

    ctx = distributed.init_from_env(device)
    try:
        trainer, evaluator, state = build_trainer(
            config, run_dir, init=init, progress=progress and ctx.is_main, resume=resume, device=device
        )
        distributed.prepare(trainer, evaluator, state, ctx)
        if state.start_iteration < state.cfg.train.max_iterations:
            trainer.run()
        distributed.finalize(state, ctx)
        return _finish(state, trainer)
    finally:
        distributed.shutdown(ctx)


# =============================================================== slice-wise application

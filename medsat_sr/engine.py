"""The MONAI trainer and evaluator of a fit, and their handlers.

:func:`build_trainer` assembles a :class:`monai.engines.SupervisedTrainer`
and a :class:`monai.engines.SupervisedEvaluator` for a job and attaches the
ignite handlers of a run: valid-pixel scoring, early stopping, gradient
clipping, the learning-rate schedule (:func:`_lr_lambda`, plateau steps),
the iteration and wall-clock budgets, validation (best weights, checkpoints
and history through :mod:`medsat_sr.run_folder`), the progress bar and, with
the adversarial loss, the generator + discriminator iteration. The run's
state between handlers is a :class:`TrainState`.

Also here, as the low-level pieces the trainer and :mod:`medsat_sr.train`
share: :func:`resolve_device`, :class:`PrecisionWrapper` (bf16 autocast,
channels-last) and :func:`_prepare_batch`. What a run does, option by
option, is described in :mod:`medsat_sr.train`, which runs these engines
(:func:`medsat_sr.train.fit`, :func:`medsat_sr.train.train`) and
re-exports the names; :mod:`medsat_sr.inference.shipped` builds a trainer
directly.
"""

from __future__ import annotations

import inspect
import logging
import math
import os
import time
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from medsat_sr.errors import ConfigError, ModelError
from medsat_sr.hardware import resolve_precision
from medsat_sr.losses import CombinedLoss, build_loss
from medsat_sr.model_start import discriminator, first_fitting_init
from medsat_sr.models.upsample import interpolate
from medsat_sr.progress import Progress
from medsat_sr.run_folder import (
    BEST,
    LAST,
    _metric_row,
    _restore,
    _save,
    _save_resume_state,
    _write_history,
)

__all__ = [
    "TrainState",
    "PrecisionWrapper",
    "build_trainer",
    "read_inputs",
    "resolve_device",
    "only_valid",
]

logger = logging.getLogger("medsat_sr.train")  # the name the run's messages had before the split


# =============================================================== small pieces
def resolve_device(device: str | torch.device | None) -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; ``None`` -> CPU.

    Raises:
        ConfigError: ``"cuda"`` requested without a CUDA device, or an unknown name.
    """
    if device is None:
        return torch.device("cpu")
    name = str(device)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} requested but CUDA is not available; use --device cpu or auto")
    try:
        return torch.device(name)
    except RuntimeError as exc:
        raise ConfigError(f"unknown device {name!r}; expected auto, cpu or cuda") from exc


def _memory_format(spatial_dims: int) -> torch.memory_format:
    return torch.channels_last if spatial_dims == 2 else torch.channels_last_3d


class PrecisionWrapper(nn.Module):
    """Runs a network's forward under ``torch.autocast(bfloat16)`` while training.

    The wrapped module (``.module``) stays a plain float32 model: that is
    what checkpoints save. In eval mode the forward runs in float32 unless
    ``eval_bf16`` is set. Outputs are float32.

    Args:
        module: the network.
        precision: ``"fp32"`` or ``"bf16"``.
        channels_last: convert 4D/5D inputs to the channels-last memory format.
        eval_bf16: also use bf16 in eval mode.
    """

    def __init__(self, module: nn.Module, precision: str = "fp32", *, channels_last: bool = False,
                 eval_bf16: bool = False) -> None:
        super().__init__()
        if precision not in ("fp32", "bf16"):
            raise ConfigError(f"precision must be 'fp32' or 'bf16', got {precision!r}")
        self.module = module
        self.precision = precision
        self.channels_last = channels_last
        self.eval_bf16 = eval_bf16

    def _fmt(self, t: Any) -> Any:
        if self.channels_last and isinstance(t, torch.Tensor) and t.ndim in (4, 5):
            return t.contiguous(memory_format=_memory_format(t.ndim - 2))
        return t

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        x = self._fmt(x)
        args = tuple(self._fmt(a) for a in args)
        use_bf16 = self.precision == "bf16" and (self.training or self.eval_bf16)
        if use_bf16:
            with torch.autocast(device_type=x.device.type, dtype=torch.bfloat16):
                out = self.module(x, *args, **kwargs)
        else:
            out = self.module(x, *args, **kwargs)
        return out.float().contiguous()


def _prepare_batch(batchdata: Mapping[str, Any], device: torch.device | None = None,
                   non_blocking: bool = False, **kwargs: Any) -> tuple[Any, Any, tuple, dict]:
    """``(lr, hr, (guide,), {"output_size": ...})`` for MONAI's engines."""
    x = batchdata["image"].to(device=device, non_blocking=non_blocking)
    y = batchdata["label"].to(device=device, non_blocking=non_blocking)
    args: tuple = ()
    kw: dict[str, Any] = {}
    if batchdata.get("guide") is not None:
        args = (batchdata["guide"].to(device=device, non_blocking=non_blocking),)
    if batchdata.get("output_size") is not None:
        kw["output_size"] = tuple(int(v) for v in batchdata["output_size"])
    return x, y, args, kw


# =============================================================== run state
@dataclass
class TrainState:
    """Everything a run keeps between handlers (returned by :func:`build_trainer`)."""

    cfg: Any
    data: Any  # medsat_sr.data.TrainingSet
    model: nn.Module
    net: PrecisionWrapper
    optimizer: torch.optim.Optimizer
    scheduler: Any
    loss: CombinedLoss
    device: torch.device
    run_dir: Path | None
    metadata_base: dict[str, Any]
    cubic: dict[str, float]
    discriminator: nn.Module | None = None
    d_optimizer: torch.optim.Optimizer | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    best_psnr: float = -math.inf
    best_ssim: float = float("nan")
    best_iteration: int = 0
    best_state: dict[str, torch.Tensor] | None = None
    last_validated: int = -1
    elapsed_before: float = 0.0
    t_start: float = 0.0
    loss_sum: float = 0.0
    loss_count: int = 0
    plateau_factor: float = 1.0
    plateau_best: float = -math.inf
    plateau_bad: int = 0
    stopped_by: str = "iterations"
    start_iteration: int = 0
    early_stopping: Any = None
    last_plot: float = field(default_factory=time.monotonic)
    loss_trace: list[tuple[int, float]] = field(default_factory=list)
    trace_sum: float = 0.0
    trace_count: int = 0

    def elapsed(self) -> float:
        """Seconds of training, previous runs of a resumed job included."""
        return self.elapsed_before + (time.monotonic() - self.t_start if self.t_start else 0.0)

    def progress(self, iteration: int) -> float:
        """Fraction of the budget used: the larger of iterations and time."""
        t = self.cfg.train
        return min(1.0, max(iteration / float(t.max_iterations), self.elapsed() / (60.0 * t.max_minutes)))


# =============================================================== LR schedule
def _lr_lambda(cfg: Any, state_ref: list[TrainState]) -> Callable[[int], float]:
    def factor(it: int) -> float:
        sc = cfg.train.schedule
        base = float(cfg.train.lr)
        w = int(sc.warmup_iterations)
        if w > 0 and it < w:
            return (it + 1) / float(w)
        if not state_ref:  # called once while the scheduler is built
            return 1.0
        st = state_ref[0]
        if sc.name == "constant":
            f = 1.0
        elif sc.name == "plateau":
            f = st.plateau_factor
        elif sc.name == "step":
            f = float(sc.gamma) ** (max(0, it - w) // int(sc.step_size))
        else:  # cosine over the budget fraction after warm-up
            p = st.progress(it)
            pw = w / float(st.cfg.train.max_iterations)
            q = min(1.0, max(0.0, (p - pw) / max(1e-9, 1.0 - pw)))
            lr = float(sc.min_lr) + (base - float(sc.min_lr)) * 0.5 * (1.0 + math.cos(math.pi * q))
            f = lr / base
        return max(f, float(sc.min_lr) / base if sc.name != "step" else 0.0)

    return factor


# =============================================================== metrics
def _val_metrics(data_range: float, spatial_dims: int, ssim_spec: Any) -> tuple[Any, Any]:
    from monai.metrics import PSNRMetric, SSIMMetric

    kernel = getattr(ssim_spec, "kernel", "gaussian")
    ssim = SSIMMetric(
        spatial_dims=spatial_dims,
        data_range=float(data_range),
        kernel_type="gaussian" if kernel == "gaussian" else "uniform",
        win_size=int(getattr(ssim_spec, "win_size", 11)),
        kernel_sigma=float(getattr(ssim_spec, "sigma", 1.5)),
    )
    return PSNRMetric(max_val=float(data_range)), ssim


def only_valid(pred: torch.Tensor, batch: Mapping[str, Any]) -> torch.Tensor:
    """``pred`` with the reference copied in where the batch's ``valid`` mask is false (nodata scores no error).

    Validation tiles hold at least ``data.min_valid_fraction`` valid pixels;
    their nodata pixels then add nothing to the error of the network or of
    the baselines, so a nodata collar cannot decide model against cubic.
    """
    valid = batch.get("valid") if isinstance(batch, Mapping) else None
    if valid is None:
        return pred
    label = batch["label"].to(pred.device)
    return torch.where(valid.to(pred.device), pred, label.to(pred.dtype))


def _cubic_scores(ts: Any, ssim_spec: Any) -> dict[str, float]:
    """The baselines on the validation split: the classical result (``val_psnr_cubic``: what a
    fallback writes) and the networks' own interpolation path (``val_psnr_interp``: what an
    untrained network gives), with the same metric and data range as the network."""
    psnr_m, ssim_m = _val_metrics(ts.data_range, ts.spatial_dims, ssim_spec)
    interp_m, _ = _val_metrics(ts.data_range, ts.spatial_dims, ssim_spec)
    for b, c in zip(ts.val, ts.val_cubic):
        c = only_valid(c, b)
        psnr_m(c, b["label"])
        ssim_m(c, b["label"])
        interp_m(only_valid(interpolate(b["image"].float(), b["label"].shape[2:]), b), b["label"])
    return {
        "val_psnr_cubic": float(psnr_m.aggregate().item()),
        "val_ssim_cubic": float(ssim_m.aggregate().item()),
        "val_psnr_interp": float(interp_m.aggregate().item()),
    }


# =============================================================== the trainer
def read_inputs(cfg: Any) -> tuple[list[Any], list[Any], list[tuple[Any, Any]]]:
    """Read ``data.inputs``, ``data.validation`` and ``data.pairs`` of a config.

    Raises:
        ConfigError: nothing to read.
        DataError, FormatError, GeometryError: as :func:`medsat_sr.io.read`.
    """
    from medsat_sr.io import detect_format, read

    def rd(path: str) -> Any:
        opts = {"series": cfg.data.series} if cfg.data.series and detect_format(path) == "dicom" else {}
        return read(path, **opts)

    inputs = [rd(p) for p in cfg.data.inputs]
    val = [rd(p) for p in cfg.data.validation]
    pairs = [(rd(pr.lr), rd(pr.hr)) for pr in cfg.data.pairs]
    if not inputs and not pairs:
        raise ConfigError(f"{cfg.source}: data.inputs is empty: give the images to train on (--set 'data.inputs=[...]')")
    return inputs, val, pairs


def build_trainer(
    config: Any,
    run_dir: str | os.PathLike[str] | None,
    *,
    images: Any = None,
    init: Any = None,
    progress: bool = True,
    resume: bool = False,
    device: str | torch.device | None = "cpu",
    validation: Sequence[Any] | None = None,
    pairs: Sequence[tuple[Any, Any]] | None = None,
) -> tuple[Any, Any, TrainState]:
    """Assemble the MONAI trainer and evaluator for a job.

    Args:
        config: a :class:`~medsat_sr.config.JobConfig` (or a name/path/mapping
            for :func:`~medsat_sr.config.load_config`).
        run_dir: where checkpoints, ``metrics.csv`` and ``curves.png`` go;
            ``None`` writes nothing (the best weights are kept in memory).
        images: the images (volume, raster, BandSet, or a list); ``None``
            reads ``data.inputs`` (and ``data.validation``, ``data.pairs``).
        init: a checkpoint (path) or a model to start from, or a list of
            checkpoints (the first whose weights fit the data); default
            ``train.init`` in ``finetune`` mode.
        progress: show a tqdm progress bar.
        resume: continue from ``run_dir/last``.
        device: ``"cpu"`` (default), ``"cuda"`` or ``"auto"``.
        validation: held-out references (supervised).
        pairs: explicit ``(lr, hr)`` images (supervised).

    Returns:
        ``(trainer, evaluator, state)``: run with ``trainer.run()``; then
        :func:`fit` turns the state into a :class:`FitResult`.

    Raises:
        ConfigError: an unrunnable config (e.g. finetune without a checkpoint).
        DataError: unreadable or unusable data, or nothing to resume.
        ModelError: a checkpoint that does not fit the data.
    """
    from ignite.engine import Events

    from medsat_sr.data import make_training_set

    cfg, images, init, validation, pairs = _job_inputs(config, images, init, validation, pairs)
    dev = resolve_device(device)
    torch.manual_seed(int(cfg.train.seed))
    ts = make_training_set(images, cfg, validation=validation, pairs=pairs)
    state = _new_state(cfg, ts, images, init, dev, run_dir)
    trainer, evaluator = _engines(state)
    _attach_optimisation(state, trainer, evaluator)
    validate = _validator(state, evaluator)
    state.validate = validate  # type: ignore[attr-defined]
    _attach_validation(state, trainer, validate)
    if progress:
        _attach_progress(trainer, state, Events)
    if resume:
        if state.run_dir is None:
            raise ConfigError("resume needs a run folder")
        _restore(state, trainer)
    return trainer, evaluator, state


def _job_inputs(
    config: Any, images: Any, init: Any, validation: Sequence[Any] | None, pairs: Sequence[tuple[Any, Any]] | None,
) -> tuple[Any, Any, Any, Sequence[Any] | None, Sequence[tuple[Any, Any]] | None]:
    """The job's config and data: a name, path or mapping is loaded; missing images are read from ``data.*``.

    Returns:
        ``(cfg, images, init, validation, pairs)``; ``init`` defaults to
        ``train.init`` in ``finetune`` mode.

    Raises:
        ConfigError: an unrunnable config (e.g. finetune without a checkpoint, no inputs).
    """
    from medsat_sr.config import JobConfig, load_config

    cfg = config if isinstance(config, JobConfig) else load_config(config)
    if init is None and cfg.train.mode == "finetune":
        if not cfg.train.init:
            cfg.check_runnable("train")
        init = cfg.train.init
    if images is None and pairs is None:
        if cfg.train.mode != "finetune":
            cfg.check_runnable("train")
        images, val_read, pairs_read = read_inputs(cfg)
        validation = validation if validation is not None else (val_read or None)
        pairs = pairs_read or None
    return cfg, images, init, validation, pairs


def _run_folder(run_dir: str | os.PathLike[str] | None) -> Path | None:
    """The run folder, created (``None``: the run writes nothing).

    Raises:
        WriteError: the folder cannot be created.
    """
    if run_dir is None:
        return None
    rd = Path(run_dir)
    try:
        rd.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        from medsat_sr.errors import WriteError

        raise WriteError(f"{rd}: cannot create the run folder: {exc.strerror or exc}") from exc
    return rd


def _new_state(
    cfg: Any, ts: Any, images: Any, init: Any, dev: torch.device, run_dir: str | os.PathLike[str] | None,
) -> TrainState:
    """The model (initialised from ``init``), optimiser, loss, schedule, baselines and checkpoint metadata.

    Raises:
        ModelError: a checkpoint that does not fit the data, or every parameter frozen.
        WriteError: the run folder cannot be created.
    """
    from medsat_sr._version import __version__

    model, init_info = first_fitting_init(cfg, ts, init, dev)
    precision = resolve_precision(cfg.train.precision, dev.type)
    # channels_last pays off with bf16 on CPU (oneDNN/AMX) and costs time in fp32 (measured)
    cl = dev.type == "cpu" and precision == "bf16"
    if cl:
        model = model.to(memory_format=_memory_format(ts.spatial_dims))
    net = PrecisionWrapper(model, precision, channels_last=cl)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ModelError("every parameter is frozen; lower train.freeze_blocks")
    t = cfg.train
    if t.weight_decay > 0:
        opt: torch.optim.Optimizer = torch.optim.AdamW(params, lr=t.lr, weight_decay=t.weight_decay)
    else:
        opt = torch.optim.Adam(params, lr=t.lr)
    loss = build_loss(t.losses, ts.spatial_dims, ts.data_range)
    state_ref: list[TrainState] = []
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(cfg, state_ref))
    rd = _run_folder(run_dir)
    metadata_base: dict[str, Any] = {
        "scale": list(ts.model_scale),
        "data_scale": list(_data_scale(cfg, images)),
        "domain": cfg.profile.name,
        "normalisation": ts.normaliser.to_dict(),
        "guide_normalisation": None if ts.guide_normaliser is None else ts.guide_normaliser.to_dict(),
        "band_names": list(ts.band_names),
        "guide_band_names": list(ts.guide_band_names),
        "config": cfg.resolved(),
        "task": {**ts.info, **init_info, "precision": precision},
        "medsat_sr_version": __version__,
    }
    state = TrainState(
        cfg=cfg, data=ts, model=model, net=net, optimizer=opt, scheduler=sched, loss=loss, device=dev,
        run_dir=rd, metadata_base=metadata_base, cubic=_cubic_scores(ts, cfg.profile.metrics.ssim),
    )
    state_ref.append(state)
    if t.adversarial.enabled:
        state.discriminator = discriminator(cfg, ts, dev)
        state.d_optimizer = torch.optim.Adam(
            state.discriminator.parameters(), lr=t.adversarial.lr or t.lr, betas=(0.5, 0.999))
    return state


def _engines(state: TrainState) -> tuple[Any, Any]:
    """MONAI's ``SupervisedTrainer`` (one epoch = ``val_every`` iterations) and ``SupervisedEvaluator``
    (PSNR, the key metric, and SSIM with the profile's window, on the validation split)."""
    from monai.engines import SupervisedEvaluator, SupervisedTrainer
    from monai.handlers import IgniteMetricHandler, PeakSignalToNoiseRatio, from_engine
    from monai.metrics import SSIMMetric

    ts, t = state.data, state.cfg.train
    ssim_spec = state.cfg.profile.metrics.ssim
    psnr_h = PeakSignalToNoiseRatio(max_val=ts.data_range, output_transform=from_engine(["pred", "label"]))
    ssim_h = IgniteMetricHandler(
        metric_fn=SSIMMetric(
            spatial_dims=ts.spatial_dims, data_range=ts.data_range,
            kernel_type="gaussian" if ssim_spec.kernel == "gaussian" else "uniform",
            win_size=ssim_spec.win_size, kernel_sigma=ssim_spec.sigma,
        ),
        output_transform=from_engine(["pred", "label"]),
    )
    evaluator = SupervisedEvaluator(
        device=state.device, val_data_loader=ts.val, network=state.net, prepare_batch=_prepare_batch,
        key_val_metric={"val_psnr": psnr_h}, additional_metrics={"val_ssim": ssim_h}, decollate=False,
    )
    val_every = int(t.val_every)
    trainer = SupervisedTrainer(
        device=state.device, max_epochs=int(math.ceil(t.max_iterations / val_every)), epoch_length=val_every,
        train_data_loader=ts.train,  # an endless iterable of whole batches (no collation needed)
        network=state.net, optimizer=state.optimizer, loss_function=state.loss, prepare_batch=_prepare_batch,
        iteration_update=_gan_iteration(state) if t.adversarial.enabled else None,
        decollate=False, optim_set_to_none=True,
    )
    return trainer, evaluator


def _attach_optimisation(state: TrainState, trainer: Any, evaluator: Any) -> None:
    """Scoring on valid pixels only, early stopping, gradient clipping, the LR schedule and the
    per-iteration bookkeeping (loss curve, iteration and wall-clock budgets)."""
    from ignite.engine import Events
    from ignite.handlers import EarlyStopping
    from monai.engines.utils import IterationEvents
    from monai.handlers import LrScheduleHandler

    t = state.cfg.train

    @evaluator.on(IterationEvents.MODEL_COMPLETED)
    def _score_valid_only(engine: Any) -> None:
        out = engine.state.output
        if isinstance(out, MutableMapping) and "pred" in out:
            out["pred"] = only_valid(out["pred"], engine.state.batch)

    if t.early_stopping.enabled:
        es = EarlyStopping(
            patience=t.early_stopping.patience,
            score_function=lambda e: float(e.state.metrics["val_psnr"]),
            trainer=trainer, **_es_threshold(EarlyStopping, t.early_stopping.min_delta),
        )
        evaluator.add_event_handler(Events.COMPLETED, es)
        state.early_stopping = es
    if t.grad_clip and not t.adversarial.enabled:
        params = [p for p in state.model.parameters() if p.requires_grad]

        @trainer.on(IterationEvents.BACKWARD_COMPLETED)
        def _clip(engine: Any) -> None:
            torch.nn.utils.clip_grad_norm_(params, float(t.grad_clip))

    LrScheduleHandler(state.scheduler, print_lr=False, epoch_level=False).attach(trainer)
    # registered before the progress bar: it sees the detached loss
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda engine: _after_iteration(state, engine))


def _after_iteration(state: TrainState, engine: Any) -> None:
    """Detach the loss, add it to the running means and the loss curve, and stop at either budget."""
    t = state.cfg.train
    out = engine.state.output
    if isinstance(out, MutableMapping) and isinstance(out.get("loss"), torch.Tensor):
        # MONAI's trainer returns the loss with its autograd graph; nothing after the step needs it
        out["loss"] = out["loss"].detach()
    value = float(out["loss"]) if isinstance(out, Mapping) else float("nan")
    state.loss_sum += value
    state.loss_count += 1
    state.trace_sum += value
    state.trace_count += 1
    if state.trace_count >= max(1, int(t.val_every) // 10):  # finer loss curve for curves.png
        state.loss_trace.append((int(engine.state.iteration), state.trace_sum / state.trace_count))
        state.trace_sum, state.trace_count = 0.0, 0
    if engine.state.iteration >= t.max_iterations:
        state.stopped_by = "iterations"
        engine.terminate()
    elif state.elapsed() >= 60.0 * t.max_minutes:
        state.stopped_by = "time"
        logger.info("time budget of %g min reached at iteration %d", t.max_minutes, engine.state.iteration)
        engine.terminate()


def _validator(state: TrainState, evaluator: Any) -> Callable[[int], None]:
    """``validate(iteration)``: score, log, keep the best weights, step a plateau schedule, save the run."""
    t = state.cfg.train
    cubic = state.cubic

    def validate(iteration: int) -> None:
        evaluator.run()
        m = evaluator.state.metrics
        psnr, ssim = float(m["val_psnr"]), float(m["val_ssim"])
        row = {
            "iteration": int(iteration),
            "loss": state.loss_sum / state.loss_count if state.loss_count else None,
            "val_psnr": psnr,
            "val_ssim": ssim,
            "lr": float(state.optimizer.param_groups[0]["lr"]),
            "seconds": round(state.elapsed(), 3),
        }
        state.loss_sum, state.loss_count = 0.0, 0
        state.history.append(row)
        state.last_validated = int(iteration)
        logger.info(
            "iteration %d: loss %s, val PSNR %.3f dB (cubic %.3f), SSIM %.4f (cubic %.4f)",
            iteration, "-" if row["loss"] is None else f"{row['loss']:.5f}", psnr, cubic["val_psnr_cubic"],
            ssim, cubic["val_ssim_cubic"],
        )
        if psnr > state.best_psnr:
            state.best_psnr, state.best_ssim, state.best_iteration = psnr, ssim, int(iteration)
            state.best_state = {k: v.detach().to("cpu").clone() for k, v in state.model.state_dict().items()}
            _save(state, BEST, _metric_row(state, iteration))
        if t.schedule.name == "plateau" and iteration > 0:
            _plateau_step(state, psnr)
        if iteration > 0:
            _save(state, LAST, _metric_row(state, iteration))
            _save_resume_state(state, iteration)
        # the plot costs a fraction of a second: at most every 30 s, and at the end
        _write_history(state, plot=time.monotonic() - state.last_plot > 30.0)

    return validate


def _plateau_step(state: TrainState, psnr: float) -> None:
    """The plateau schedule: after ``patience`` validations without a gain, multiply the LR by ``gamma``."""
    sch = state.cfg.train.schedule
    if psnr > state.plateau_best + 1e-6:
        state.plateau_best, state.plateau_bad = psnr, 0
        return
    state.plateau_bad += 1
    if state.plateau_bad >= sch.patience:
        state.plateau_factor *= float(sch.gamma)
        state.plateau_bad = 0
        logger.info("plateau: learning rate x%g", sch.gamma)


def _attach_validation(state: TrainState, trainer: Any, validate: Callable[[int], None]) -> None:
    """Validate before the first step (a fresh run), after every epoch and at the end; record an early stop."""
    from ignite.engine import Events

    t = state.cfg.train

    @trainer.on(Events.STARTED)
    def _started(engine: Any) -> None:
        state.t_start = time.monotonic()
        if state.start_iteration == 0 and not state.history:
            validate(engine.state.iteration)

    @trainer.on(Events.EPOCH_COMPLETED)
    def _epoch_done(engine: Any) -> None:
        if engine.state.iteration != state.last_validated:
            validate(engine.state.iteration)

    @trainer.on(Events.COMPLETED)
    def _completed(engine: Any) -> None:
        if engine.state.iteration != state.last_validated:
            validate(engine.state.iteration)
        if state.early_stopping is not None and getattr(state.early_stopping, "counter", 0) >= t.early_stopping.patience:
            state.stopped_by = "early_stopping"


def _es_threshold(early_stopping: Any, min_delta: float) -> dict[str, float]:
    """EarlyStopping's least improvement: ``threshold`` (ignite >= 0.5.3), ``min_delta`` before (deprecated since)."""
    params = inspect.signature(early_stopping.__init__).parameters
    return {"threshold" if "threshold" in params else "min_delta": float(min_delta)}


def _attach_progress(trainer: Any, state: TrainState, events: Any) -> None:
    """One progress over the whole fit: iterations and the wall-clock budget, whichever ends first.

    A bar on a terminal (closed, full, when the budget ends the fit); off a
    terminal one line per 10 % (:class:`medsat_sr.progress.Progress`).
    """
    t = state.cfg.train
    bar: list[Progress] = []

    @trainer.on(events.STARTED)
    def _open(engine: Any) -> None:
        left = max(1, int(t.max_iterations) - int(engine.state.iteration))
        budget = 60.0 * float(t.max_minutes) - state.elapsed() if t.max_minutes else None
        bar.append(Progress(left, "training", unit="iteration", budget_s=budget))

    @trainer.on(events.ITERATION_COMPLETED)
    def _step(engine: Any) -> None:
        out = engine.state.output
        loss = f"loss {float(out['loss']):.4f}" if isinstance(out, Mapping) and "loss" in out else ""
        best = f", best val PSNR {state.best_psnr:.2f} dB" if math.isfinite(state.best_psnr) else ""
        bar[-1].set_postfix_str(loss + best)
        bar[-1].update()

    @trainer.on(events.COMPLETED)
    def _close(engine: Any) -> None:
        if bar:
            by = {"time": "stopped by the time budget", "early_stopping": "stopped early (no improvement)"}
            bar[-1].close(by.get(state.stopped_by or "", ""))


def _data_scale(cfg: Any, images: Any) -> tuple[float, ...]:
    first = images[0] if isinstance(images, (list, tuple)) and images else images
    spacing = None
    meta = getattr(first, "meta", None)
    if meta is not None and meta.get("kind") == "volume":
        spacing = meta.get("spacing")
    try:
        return tuple(cfg.scale_for(spacing))
    except ConfigError:
        return ()


def _gan_iteration(state: TrainState) -> Callable[[Any, Any], dict[str, Any]]:
    """One generator + one discriminator step (pixel losses + weight * adversarial)."""
    bce = nn.BCEWithLogitsLoss()
    adv = state.cfg.train.adversarial
    clip = state.cfg.train.grad_clip

    def step(engine: Any, batchdata: Any) -> dict[str, Any]:
        x, y, args, kw = _prepare_batch(batchdata, state.device)
        d, d_opt, g_opt = state.discriminator, state.d_optimizer, state.optimizer
        assert d is not None and d_opt is not None
        state.net.train()
        d.train()
        pred = state.net(x, *args, **kw)
        loss = state.loss(pred, y)
        use_adv = engine.state.iteration >= adv.start_iteration
        if use_adv:
            for p in d.parameters():
                p.requires_grad_(False)
            logits = d(pred)
            loss = loss + float(adv.weight) * bce(logits, torch.ones_like(logits))
            for p in d.parameters():
                p.requires_grad_(True)
        g_opt.zero_grad(set_to_none=True)
        loss.backward()
        if clip:
            torch.nn.utils.clip_grad_norm_([p for p in state.model.parameters() if p.requires_grad], float(clip))
        g_opt.step()
        if use_adv:
            real, fake = d(y), d(pred.detach())
            d_loss = 0.5 * (bce(real, torch.ones_like(real)) + bce(fake, torch.zeros_like(fake)))
            d_opt.zero_grad(set_to_none=True)
            d_loss.backward()
            d_opt.step()
        return {"image": x, "label": y, "pred": pred.detach(), "loss": loss.detach()}

    return step

"""The MONAI trainer and evaluator of a fit.

:func:`build_trainer` assembles a :class:`monai.engines.SupervisedTrainer`
and a :class:`monai.engines.SupervisedEvaluator` for a job and attaches the
ignite handlers of a run (:mod:`medsat_sr.engine_handlers`): valid-pixel
scoring, early stopping, gradient clipping, the learning-rate schedule
(plateau steps included), the iteration and wall-clock budgets, validation
(best weights, checkpoints and history through :mod:`medsat_sr.run_folder`),
the progress bar and, with the adversarial loss, the generator +
discriminator iteration. The run's state between handlers is a
:class:`TrainState`.

Also here, as the low-level pieces the trainer and :mod:`medsat_sr.train`
share: :func:`resolve_device` and :class:`PrecisionWrapper` (bf16 autocast,
channels-last); a batch's tensors are unpacked by
:mod:`medsat_sr.train_batch`. What a run does, option by option, is
described in :mod:`medsat_sr.train`, which runs these engines
(:func:`medsat_sr.train.fit`, :func:`medsat_sr.train.train`) and
re-exports the names; :mod:`medsat_sr.inference.shipped` builds a trainer
directly.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from medsat_sr.engine_handlers import (
    _attach_optimisation,
    _attach_progress,
    _attach_validation,
    _gan_iteration,
    _lr_lambda,
    _validator,
)
from medsat_sr.errors import ConfigError, ModelError
from medsat_sr.hardware import resolve_precision
from medsat_sr.losses import CombinedLoss, build_loss
from medsat_sr.model_start import discriminator, first_fitting_init
from medsat_sr.models.upsample import interpolate
from medsat_sr.train_batch import only_valid, prepare_batch
from medsat_sr.run_folder import _restore
from medsat_sr.zoo.provenance import file_ids, input_files

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

    from_files = images is None and pairs is None
    cfg, images, init, validation, pairs = _job_inputs(config, images, init, validation, pairs)
    dev = resolve_device(device)
    torch.manual_seed(int(cfg.train.seed))
    ts = make_training_set(images, cfg, validation=validation, pairs=pairs)
    state = _new_state(cfg, ts, images, init, dev, run_dir)
    if from_files:  # its checkpoints name the files it learned from (a run on one of them then says so)
        d = cfg.data
        paths = [*d.inputs, *d.validation, *(p for pr in d.pairs for p in (pr.lr, pr.hr))]
        state.metadata_base["training_files"] = file_ids(input_files(paths))
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
        device=state.device, val_data_loader=ts.val, network=state.net, prepare_batch=prepare_batch,
        key_val_metric={"val_psnr": psnr_h}, additional_metrics={"val_ssim": ssim_h}, decollate=False,
    )
    val_every = int(t.val_every)
    trainer = SupervisedTrainer(
        device=state.device, max_epochs=int(math.ceil(t.max_iterations / val_every)), epoch_length=val_every,
        train_data_loader=ts.train,  # an endless iterable of whole batches (no collation needed)
        network=state.net, optimizer=state.optimizer, loss_function=state.loss, prepare_batch=prepare_batch,
        iteration_update=_gan_iteration(state) if t.adversarial.enabled else None,
        decollate=False, optim_set_to_none=True,
    )
    return trainer, evaluator


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



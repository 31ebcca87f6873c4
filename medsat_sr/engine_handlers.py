"""The ignite handlers of a fit: optimisation, the learning-rate schedule, validation, early stopping, progress, GAN steps.

:func:`medsat_sr.engine.build_trainer` attaches them to the MONAI trainer and evaluator; the run's state
between handlers is a :class:`~medsat_sr.engine.TrainState`.
"""

from __future__ import annotations

import inspect
import logging
import math
import time
from collections.abc import Callable, Mapping, MutableMapping
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from medsat_sr.progress import Progress
from medsat_sr.run_folder import BEST, LAST, _metric_row, _save, _save_resume_state, _write_history
from medsat_sr.train_batch import only_valid, prepare_batch

if TYPE_CHECKING:
    from medsat_sr.engine import TrainState

__all__: list[str] = []

logger = logging.getLogger("medsat_sr.train")


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


def _gan_iteration(state: TrainState) -> Callable[[Any, Any], dict[str, Any]]:
    """One generator + one discriminator step (pixel losses + weight * adversarial)."""
    bce = nn.BCEWithLogitsLoss()
    adv = state.cfg.train.adversarial
    clip = state.cfg.train.grad_clip

    def step(engine: Any, batchdata: Any) -> dict[str, Any]:
        x, y, args, kw = prepare_batch(batchdata, state.device)
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

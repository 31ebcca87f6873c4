"""Data-parallel training under ``torchrun`` (DDP; gloo on CPU, NCCL on CUDA).

``medsat-sr train`` runs unchanged under::

    torchrun --standalone --nproc-per-node 2 -m medsat_sr train --config CFG -o RUN_DIR

:func:`medsat_sr.train.train` calls :func:`init_from_env`, which starts the
process group when torchrun's ``WORLD_SIZE`` is above 1, and :func:`prepare`,
which turns the single-process trainer into a data-parallel one:

* **model**: the network is wrapped in
  :class:`torch.nn.parallel.DistributedDataParallel`; its construction
  broadcasts rank 0's initial weights, and gradients are averaged across
  ranks in every backward pass (the discriminator too, with the adversarial
  loss), so every replica takes the same optimiser steps;
* **batch**: ``train.batch_size`` stays the *global* batch: each rank draws
  ``ceil(batch_size / world_size)`` patches, and averaged gradients make
  that one step of the full batch;
* **sampler**: the training stream is an endless random patch stream, so the
  distributed sampler is a per-rank seed (``seed + 1_000_003 * rank``, also
  after a resume): the ranks draw different patches. Validation tiles are
  split across ranks (every ``world_size``-th tile; all of them on every
  rank when there are fewer tiles than ranks);
* **metrics**: validation PSNR/SSIM are MONAI cumulative metrics, whose
  buffers are all-gathered across ranks before they are aggregated, so
  every rank sees the metric of the whole validation set; the training loss
  is summed across ranks before it is logged; the cubic baseline is the same
  on every rank (same tiles, deterministic);
* **stopping**: every rank stops at the same iteration: a stop decided on one
  rank (time budget) is all-reduced after each iteration; early stopping
  sees the same (gathered) PSNR everywhere;
* **outputs**: only rank 0 writes checkpoints, ``metrics.csv``, ``curves.png``
  and prints; the checkpoint's ``task.ddp`` records the world size, the
  backend and whether the replicas ended with identical weights (checked by
  comparing a hash of every rank's parameters).

Resume (``--resume``) works as in one process: every rank restores the same
``last`` checkpoint.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import os
import sys
from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["DistContext", "init_from_env", "prepare", "finalize", "shutdown", "RANK_SEED_STRIDE"]

logger = logging.getLogger(__name__)

#: Rank ``r`` draws its patches from ``seed + RANK_SEED_STRIDE * r``.
RANK_SEED_STRIDE = 1_000_003


@dataclass
class DistContext:
    """Where this process stands in a distributed run.

    Attributes:
        rank: global rank (0 in a single process).
        world_size: number of processes (1 in a single process).
        local_rank: rank on this node.
        backend: ``gloo`` or ``nccl``; ``None`` when not distributed.
        owned: this module started the process group (and ends it).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None
    owned: bool = False

    @property
    def enabled(self) -> bool:
        """True with more than one process."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """True on rank 0, which writes and prints."""
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        return default


def init_from_env(device: Any = "cpu") -> DistContext:
    """Join the process group that torchrun describes (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``...).

    Without torchrun (``WORLD_SIZE`` unset or 1) nothing happens and a
    single-process context is returned. Ranks other than 0 stop printing
    (stdout goes to /dev/null, medsat_sr logs errors only).

    Args:
        device: the training device; CUDA uses NCCL and the local rank's GPU,
            everything else gloo.

    Raises:
        ConfigError: the process group cannot be started.
    """
    import torch.distributed as dist

    from medsat_sr.errors import ConfigError

    world = _env_int("WORLD_SIZE", 1)
    if world <= 1:
        return DistContext()
    rank, local = _env_int("RANK", 0), _env_int("LOCAL_RANK", 0)
    cuda = str(device).startswith("cuda") or (str(device) == "auto" and torch.cuda.is_available())
    backend = "nccl" if cuda and torch.cuda.is_available() else "gloo"
    owned = False
    if not dist.is_initialized():
        if not dist.is_available():
            raise ConfigError("torch.distributed is not available in this torch build; run without torchrun")
        if backend == "nccl":
            torch.cuda.set_device(local)
        try:
            dist.init_process_group(backend=backend, init_method="env://")
        except (RuntimeError, ValueError) as exc:
            raise ConfigError(f"cannot start the {backend} process group (rank {rank} of {world}): {exc}") from exc
        owned = True
    ctx = DistContext(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=local, backend=backend, owned=owned)
    if not ctx.is_main:
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - for the life of the process
        logging.getLogger("medsat_sr").setLevel(logging.ERROR)
    logger.info("rank %d of %d (%s), %d torch threads", ctx.rank, ctx.world_size, backend, torch.get_num_threads())
    return ctx


def _device_tensor(value: float, state: Any) -> torch.Tensor:
    dev = state.device if getattr(state, "device", None) is not None and state.device.type == "cuda" else "cpu"
    return torch.tensor([value], dtype=torch.float64, device=dev)


def prepare(trainer: Any, evaluator: Any, state: Any, ctx: DistContext) -> None:
    """Make a trainer built by :func:`medsat_sr.train.build_trainer` data-parallel (see the module docstring).

    Call it after ``build_trainer`` (and its resume) and before ``trainer.run()``.
    Does nothing in a single process.
    """
    if not ctx.enabled:
        return
    import torch.distributed as dist
    from ignite.engine import Events
    from torch.nn.parallel import DistributedDataParallel as DDP

    from medsat_sr.errors import ConfigError

    cfg = state.cfg
    if cfg.train.batch_size < ctx.world_size:
        raise ConfigError(
            f"train.batch_size ({cfg.train.batch_size}) is the global batch and must be at least the number of "
            f"processes ({ctx.world_size})"
        )
    dev_ids = [state.device.index or 0] if state.device.type == "cuda" else None
    # model: DDP broadcasts rank 0's weights now and averages gradients in every backward pass
    ddp = DDP(state.net, device_ids=dev_ids)
    trainer.network = ddp
    state.net = ddp  # the adversarial iteration calls state.net
    if getattr(state, "discriminator", None) is not None:
        state.discriminator = DDP(state.discriminator, device_ids=dev_ids)
    # batch and sampler
    train = state.data.train
    train.batch_size = int(math.ceil(cfg.train.batch_size / ctx.world_size))
    base_seed = int(cfg.train.seed) + int(getattr(state, "start_iteration", 0) or 0)
    train.reseed(base_seed + RANK_SEED_STRIDE * ctx.rank)
    val = list(state.data.val)
    if len(val) >= ctx.world_size:
        shard = val[ctx.rank :: ctx.world_size]
        evaluator.data_loader = shard
        evaluator.state.epoch_length = len(shard)
    # the training loss of the validation rows: summed over the ranks before _validate reads it
    @evaluator.on(Events.STARTED)
    def _reduce_loss(engine: Any) -> None:
        t = torch.tensor([state.loss_sum, float(state.loss_count)], dtype=torch.float64)
        if state.device.type == "cuda":
            t = t.to(state.device)
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        state.loss_sum, state.loss_count = float(t[0]), int(t[1])

    # one rank's stop (time budget) stops them all, at the same iteration
    @trainer.on(Events.ITERATION_COMPLETED)
    def _agree_to_stop(engine: Any) -> None:
        flag = _device_tensor(1.0 if engine.should_terminate else 0.0, state)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        if flag.item() > 0 and not engine.should_terminate:
            state.stopped_by = state.stopped_by or "time"
            engine.terminate()

    # only rank 0 writes: checkpoints, metrics.csv, curves.png
    if not ctx.is_main:
        state.run_dir = None
    task = state.metadata_base.setdefault("task", {})
    task["ddp"] = {
        "world_size": ctx.world_size,
        "backend": ctx.backend,
        "batch_per_rank": train.batch_size,
        "global_batch": train.batch_size * ctx.world_size,
        "validation_tiles_per_rank": len(evaluator.data_loader) if hasattr(evaluator.data_loader, "__len__") else None,
    }


def _params_hash(model: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()


def finalize(state: Any, ctx: DistContext) -> None:
    """After training: check that every replica holds the same weights and record it (rank 0's checkpoint)."""
    if not ctx.enabled:
        return
    import torch.distributed as dist

    mine = _params_hash(state.model)
    hashes: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(hashes, mine)
    same = len(set(hashes)) == 1
    if not same:
        logger.warning("the %d replicas ended with different weights: %s", ctx.world_size, hashes)
    state.metadata_base.setdefault("task", {}).setdefault("ddp", {})["replicas_identical"] = same
    # stopped_by as rank 0 saw it
    box = [getattr(state, "stopped_by", None)]
    dist.broadcast_object_list(box, src=0)
    state.stopped_by = box[0]


def shutdown(ctx: DistContext) -> None:
    """End the process group if :func:`init_from_env` started it."""
    if ctx.enabled and ctx.owned:
        import torch.distributed as dist

        with contextlib.suppress(Exception):
            dist.barrier()
        with contextlib.suppress(Exception):
            dist.destroy_process_group()

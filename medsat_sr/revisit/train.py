"""Training the learned fusion on simulated revisits of real scenes (the acquisition is simulated, the scenes real).

:func:`train_fusion` draws batches of simulated revisit stacks
(:func:`medsat_sr.revisit.simulate.simulate_revisit`) from the training
parts of real high-resolution bands, with real cloud masks, random factors
(2 or 3), 3 to 9 frames (one count per batch), random PSF widths (MTF 0.2-0.4 at Nyquist),
noise (0.3-2 %) and brightness offsets. The network sees the stack exactly as
:func:`medsat_sr.revisit.fuse.fuse` prepares it (registered, warped,
harmonised, normalised by the median image), with the true shifts plus a
small registration error (0.04 px). The loss is L1 on the pixels some frame
saw clear, away from the border.

:func:`validate` scores a network and the classical fusions with cPSNR on
fixed simulated revisits (whole frames, estimated shifts, the full
:func:`~medsat_sr.revisit.fuse.fuse`). The numbers stored with the shipped
weights come from validation regions of the training scenes; the held-out
scene of the benchmark never enters training or model choice.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from medsat_sr.metrics_shift import cpsnr
from medsat_sr.revisit.classical import aligned_stack, masked_median
from medsat_sr.revisit.fuse import band_norm, fuse, harmonise
from medsat_sr.revisit.network import RevisitNet
from medsat_sr.revisit.simulate import Revisit, simulate_revisit

__all__ = ["TrainSettings", "make_batch", "train_fusion", "validate"]

logger = logging.getLogger("medsat_sr.revisit")


@dataclass
class TrainSettings:
    """Budget and sampling of :func:`train_fusion`."""

    iterations: int = 400
    max_minutes: float = 4.0
    batch_size: int = 4
    patch_lr: int = 16
    n_frames: int = 9
    min_frames: int = 3
    scales: tuple[int, ...] = (2, 3)
    lr: float = 1e-3
    seed: int = 0
    bf16: bool = False


def _sample(scenes: Sequence[np.ndarray], rng: np.random.Generator, scale: int, s: TrainSettings, pool: np.ndarray | None,
            n_frames: int) -> Revisit:
    areas = np.array([x.size for x in scenes], dtype=np.float64)
    x = scenes[rng.choice(len(scenes), p=areas / areas.sum())]
    n = s.patch_lr * scale
    r0 = rng.integers(x.shape[0] - n + 1)
    c0 = rng.integers(x.shape[1] - n + 1)
    hr = x[r0 : r0 + n, c0 : c0 + n]
    return simulate_revisit(hr, scale, n_frames, rng, pool=pool, mtf=rng.uniform(0.2, 0.4),
                            noise=rng.uniform(0.003, 0.02), offset=0.01)


def make_batch(
    scenes: Sequence[np.ndarray], rng: np.random.Generator, scale: int, s: TrainSettings, pool: np.ndarray | None
) -> tuple[torch.Tensor, ...]:
    """``(stack, masks, base, target, weight)`` tensors of one batch, normalised as :func:`fuse` does."""
    items = []
    n_frames = int(rng.integers(s.min_frames, s.n_frames + 1))  # any number of frames, one per batch
    for _ in range(s.batch_size):
        rv = _sample(scenes, rng, scale, s, pool, n_frames)
        if not rv.valid.any():
            rv.valid[0] = True
        frames, _ = harmonise(np.where(rv.valid[:, None], rv.frames, 0).astype(np.float32), rv.valid)
        shifts = rv.shifts + rng.normal(0.0, 0.04, rv.shifts.shape)
        out_shape = rv.hr.shape
        stack, masks = aligned_stack(frames, rv.valid, shifts, float(scale), out_shape)
        base, clear = masked_median(stack, masks)
        centre, spread = band_norm(base[0], clear)
        weight = torch.from_numpy(clear).float()
        b = 2 * scale
        weight[:b], weight[-b:], weight[:, :b], weight[:, -b:] = 0, 0, 0, 0
        items.append(((stack[:, 0] - centre) / spread, masks, (base - centre) / spread,
                      (torch.from_numpy(rv.hr)[None] - centre) / spread, weight[None]))
    return tuple(torch.stack(parts) for parts in zip(*items))


def train_fusion(
    scenes: Sequence[np.ndarray], pool: np.ndarray | None, settings: TrainSettings | None = None, model: RevisitNet | None = None
) -> tuple[RevisitNet, dict[str, float]]:
    """Train (or continue training) the fusion network on simulated revisits of ``scenes`` (2D bands).

    Returns:
        The network (eval mode) and ``{"iterations", "minutes", "final_loss"}``.
    """
    s = settings or TrainSettings()
    torch.manual_seed(s.seed)
    rng = np.random.default_rng(s.seed)
    net = model or RevisitNet()
    net.train()
    opt = torch.optim.AdamW(net.parameters(), lr=s.lr, weight_decay=1e-4)
    t0 = time.perf_counter()

    def progress(i: int) -> float:  # whichever budget runs out first: iterations or minutes
        return min(max(i / s.iterations, (time.perf_counter() - t0) / 60 / s.max_minutes), 1.0)

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: 0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * progress(i))))
    it, running = 0, float("nan")
    for it in range(1, s.iterations + 1):
        scale = int(rng.choice(s.scales))
        stack, masks, base, target, weight = make_batch(scenes, rng, scale, s, pool)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=s.bf16):
            pred = net(stack, masks, base, float(scale))
        loss = (torch.abs(pred.float() - target) * weight).sum() / weight.sum().clamp_min(1.0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        sched.step()
        value = float(loss.detach())
        running = value if math.isnan(running) else 0.95 * running + 0.05 * value
        if it % 25 == 0:
            logger.info("iteration %d  loss %.4f  %.1f min", it, running, (time.perf_counter() - t0) / 60)
        if (time.perf_counter() - t0) / 60 > s.max_minutes:
            break
    net.eval()
    return net, {"iterations": it, "minutes": round((time.perf_counter() - t0) / 60, 2), "final_loss": running}


def validate(model: RevisitNet | None, revisits: Sequence[tuple[Revisit, int]], methods: Sequence[str]) -> dict[str, float]:
    """Mean cPSNR (dB, data range 1: scenes normalised to their 0.5-99.5 % range) of each method over ``revisits``."""
    scores: dict[str, list[float]] = {m: [] for m in methods}
    for rv, scale in revisits:
        for m in methods:
            f = fuse(rv.frames, rv.valid, scale, method=m, model=model if m == "learned" else None)
            scores[m].append(cpsnr(f.image[0].numpy(), rv.hr, data_range=1.0, clear=f.clear))
    return {m: float(np.mean(v)) for m, v in scores.items()}

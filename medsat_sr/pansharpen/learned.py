"""The self-supervised pan-sharpening network: trained on the scene itself by Wald's protocol.

The network is the ``guided`` family (:class:`medsat_sr.models.GuidedSR`) at
scale 1: it reads the MS bands already interpolated onto the pan grid with
the exact phase, and the pan, and predicts the missing MS detail
(``y = up(MS) + body(cat(up(MS), pan))``: PNN with a residual skip, as in
PanNet). Its last convolution starts at zero, so the untrained network is
the interpolated MS.

Training (Masi et al. 2016, PNN; Yang et al. 2017, PanNet): at reduced
resolution, the MS and the pan degraded by the ratio with MTF-matched
filters (:func:`medsat_sr.pansharpen.protocol.reduced`), the original MS as
the target, L1 loss on normalised values, random patches of the tuning half.
The MS bands are normalised by their own mean and standard deviation; the
pan by its own at each resolution.

References:
    Masi G., Cozzolino D., Verdoliva L., Scarpa G., Pansharpening by convolutional
    neural networks, Remote Sensing 8(7), 594, 2016.
    Yang J. et al., PanNet: a deep network architecture for pan-sharpening, ICCV 2017.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from medsat_sr.models import build_model
from medsat_sr.pansharpen.classical import Pair
from medsat_sr.pansharpen.protocol import reduced


@dataclass(frozen=True)
class Norm:
    """Per-band MS statistics (the same at both resolutions)."""

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def of(cls, ms: np.ndarray, valid: np.ndarray | None) -> Norm:
        """From the MS bands ``(C, h, w)`` at valid pixels."""
        v = ms.reshape(ms.shape[0], -1) if valid is None else ms[:, valid]
        return cls(mean=v.mean(axis=1), std=np.maximum(v.std(axis=1), 1e-6))


def make_net(bands: int, **kwargs: Any) -> nn.Module:
    """The network for ``bands`` MS bands (``kwargs``: the config's model kwargs)."""
    return build_model("guided", spatial_dims=2, in_channels=bands, scale=1, guide_channels=1, **kwargs)


def _inputs(pair: Pair, norm: Norm) -> tuple[np.ndarray, np.ndarray]:
    up = (pair.ms_up() - norm.mean[:, None, None]) / norm.std[:, None, None]
    pan = (pair.pan - pair.pan.mean()) / max(float(pair.pan.std()), 1e-6)
    return up.astype(np.float32), pan[None].astype(np.float32)


def predict(net: nn.Module, pair: Pair, norm: Norm, pan_stats: tuple[float, float] | None = None) -> np.ndarray:
    """The network's product ``(C, H, W)`` float64 on the pair's pan grid.

    ``pan_stats``: the whole scene's pan mean and std (so that strips are
    normalised alike); default the pair's own.
    """
    up = (pair.ms_up() - norm.mean[:, None, None]) / norm.std[:, None, None]
    m, s = pan_stats if pan_stats is not None else (float(pair.pan.mean()), float(pair.pan.std()))
    pan = (pair.pan - m) / max(s, 1e-6)
    dev = next(net.parameters()).device
    net.eval()
    with torch.no_grad():
        y = net(torch.from_numpy(up[None].astype(np.float32)).to(dev),
                torch.from_numpy(pan[None, None].astype(np.float32)).to(dev))[0].double().cpu().numpy()
    return y * norm.std[:, None, None] + norm.mean[:, None, None]


def _patches(shape: tuple[int, int], size: int, n: int, rng: np.random.Generator,
             valid: np.ndarray | None) -> list[tuple[int, int]]:
    h, w = shape
    out: list[tuple[int, int]] = []
    for _ in range(n * 20):
        r, c = int(rng.integers(0, h - size + 1)), int(rng.integers(0, w - size + 1))
        if valid is None or valid[r : r + size, c : c + size].mean() > 0.99:
            out.append((r, c))
            if len(out) == n:
                break
    return out or [(0, 0)]


def fit(net: nn.Module, pair: Pair, valid: np.ndarray | None, *, iterations: int, minutes: float, batch: int,
        patch: int, lr: float, seed: int = 0, log_every: int = 100, logger: Any = None) -> dict[str, Any]:
    """Train ``net`` on ``pair`` at reduced resolution (Wald); returns the training summary.

    Args:
        net: from :func:`make_net`.
        pair: the tuning part of the scene at full resolution.
        valid: its MS-grid validity (patches are drawn where it holds).
        iterations, minutes: the budget (whichever ends first).
        batch, patch: patches per step and their side on the MS grid.
        lr: Adam learning rate (cosine decay to lr/100).
    """
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    lr_pair = reduced(pair)
    norm = Norm.of(pair.ms, valid)
    x_up, x_pan = _inputs(lr_pair, norm)
    target = ((pair.ms - norm.mean[:, None, None]) / norm.std[:, None, None]).astype(np.float32)
    size = min(patch, target.shape[1], target.shape[2])
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, iterations), eta_min=lr / 100)
    loss_fn = nn.L1Loss()
    t0, step, losses = time.perf_counter(), 0, []
    net.train()
    while step < iterations and (time.perf_counter() - t0) < minutes * 60:
        where = _patches(target.shape[1:], size, batch, rng, valid)
        sl = [(slice(None), slice(r, r + size), slice(c, c + size)) for r, c in where]
        up = torch.from_numpy(np.stack([x_up[s] for s in sl]))
        pan = torch.from_numpy(np.stack([x_pan[s] for s in sl]))
        tgt = torch.from_numpy(np.stack([target[s] for s in sl]))
        loss = loss_fn(net(up, pan), tgt)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
        step += 1
        if logger is not None and step % log_every == 0:
            logger.info("pansharpen fit: step %d, L1 %.4f", step, float(np.mean(losses[-log_every:])))
    return {"iterations": step, "seconds": round(time.perf_counter() - t0, 1),
            "final_l1": float(np.mean(losses[-20:])) if losses else math.nan, "norm_mean": norm.mean.tolist(),
            "norm_std": norm.std.tolist()}

"""The learned pan-sharpening route: fit the network on the scene, keep it only if it wins (issue #17).

``--config landsat_pansharpen``: the network (:mod:`medsat_sr.pansharpen.learned`) is trained by
Wald's protocol on the top half of the scene; on the held-out bottom half, at reduced resolution, its
ERGAS is compared with every classical method's (each fitted on the top half). The network's product is
written only when its ERGAS is lower than the best classical method's (or with ``force``); otherwise
that method's product is written. The decision, with the scores (ERGAS, Q2n, SAM) of every candidate,
goes into the trust record.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from medsat_sr.config import load_config
from medsat_sr.inference.plan import Decision, settle_loss
from medsat_sr.pansharpen import classical, learned
from medsat_sr.pansharpen.classical import Pair
from medsat_sr.pansharpen.protocol import reduced, reduced_scores, split

log = logging.getLogger(__name__)

#: What the decision compares (lower is better).
SCORE = "ergas"


def held_out_scores(net: torch.nn.Module, norm: learned.Norm, top: Pair, bottom: Pair,
                    bottom_valid: np.ndarray | None) -> dict[str, dict[str, float]]:
    """Reduced-resolution scores on the held-out half: the network and each classical method."""
    lr_top, lr_bottom = reduced(top), reduced(bottom)
    out = {"network": reduced_scores(learned.predict(net, lr_bottom, norm), bottom.ms, bottom.ratio, bottom_valid)}
    for name in classical.METHODS:
        params = classical.fit(name, lr_top)
        out[name] = reduced_scores(classical.apply(name, lr_bottom, params), bottom.ms, bottom.ratio, bottom_valid)
    return out


def decide(scores: dict[str, dict[str, float]], force: bool) -> Decision:
    """Network or the best classical method, by held-out reduced-resolution ERGAS."""
    best = min((m for m in scores if m != "network"), key=lambda m: scores[m][SCORE])
    net, cls = scores["network"][SCORE], scores[best][SCORE]
    d = Decision(use_model=True, classical_method=best, model_score=net, classical_score=cls, metric="ERGAS",
                 source="reduced-resolution ERGAS (lower is better) on the held-out bottom half (Wald's protocol)")
    if net < cls:
        d.reason = f"the network's held-out ERGAS {net:.3f} beats the best classical method, {best} ({cls:.3f})"
        return d
    d.reason = f"the network's held-out ERGAS {net:.3f} does not beat the best classical method, {best} ({cls:.3f})"
    return settle_loss(d, force=force, log=log, what="network")


def learned_product(scene: Any, config: Any, overrides: list[str], *, force: bool = False
                    ) -> tuple[Callable[[Pair], np.ndarray], str, dict[str, Any], Decision, dict[str, Any]]:
    """Fit, score and decide; return ``(product function, method, parameters, decision, record extras)``."""
    cfg = load_config(config, overrides)
    t = cfg.train
    pair = scene.pair()
    (top, top_valid), (bottom, bottom_valid) = split(pair, scene.ms_valid)
    torch.manual_seed(t.seed)
    net = learned.make_net(pair.ms.shape[0], **dict(cfg.model.kwargs))
    info = learned.fit(net, top, top_valid, iterations=t.max_iterations, minutes=t.max_minutes, batch=t.batch_size,
                       patch=t.patch_size, lr=t.lr, seed=t.seed, logger=log)
    norm = learned.Norm(np.asarray(info["norm_mean"]), np.asarray(info["norm_std"]))
    scores = held_out_scores(net, norm, top, bottom, bottom_valid)
    decision = decide(scores, force)
    extra = {"config": cfg.name, "training": info, "held_out_reduced_resolution": scores}
    if decision.use_model:
        stats = (float(scene.pan[scene.pan_valid].mean()), float(scene.pan[scene.pan_valid].std()))

        def fn(p: Pair) -> np.ndarray:
            return learned.predict(net, p, norm, pan_stats=stats)

        return fn, "network", {"model": "guided", "kwargs": dict(cfg.model.kwargs)}, decision, extra
    method = decision.classical_method or "mtf-glp-hpm"
    params = classical.fit(method, pair, scene.ms_valid, scene.pan_valid)
    return (lambda p: classical.apply(method, p, params)), method, params, decision, extra

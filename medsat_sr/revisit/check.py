"""Learned or classical: a simulated revisit of the input's own scene decides which fusion is written.

A real revisit stack has no high-resolution truth, so the learned fusion
cannot be scored on it directly. :func:`simulated_check` builds one that
does: the clearest input frame (its masked pixels filled, each band scaled
to its 1-99 % range and the bands averaged) is taken as the scene, and
:func:`medsat_sr.revisit.simulate.simulate_revisit` makes ``K`` frames of it
at the run's factor, with random sub-pixel shifts, the sensor PSF, noise and
the input's own clear masks (so the clouds, shadows and SLC-off stripes of
the check are those of the run). Every candidate method fuses them with
:func:`medsat_sr.revisit.fuse.fuse` (estimated shifts, as in the run), and
each is scored with :func:`medsat_sr.metrics_shift.cpsnr` against the scene.

The check is small (the scene is cropped to at most :data:`MAX_SIDE`
pixels a side) and seeded, so a run is reproducible.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from medsat_sr.metrics_shift import cpsnr
from medsat_sr.revisit.fuse import fuse
from medsat_sr.revisit.network import RevisitNet
from medsat_sr.revisit.register import fill_masked
from medsat_sr.revisit.simulate import robust_range, simulate_revisit

__all__ = ["simulated_check", "MAX_SIDE"]

#: Largest side (input pixels) of the scene the check simulates from.
MAX_SIDE = 192
#: Frames of the simulated revisit (at most; fewer when the run has fewer).
MAX_FRAMES = 9


def _scene(frames: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, int]:
    """The clearest frame as one normalised band (masked pixels filled), centre-cropped to :data:`MAX_SIDE`."""
    k = int(np.argmax(valid.reshape(len(valid), -1).sum(axis=1)))
    bands = []
    for b in frames[k]:
        x = fill_masked(b, valid[k])
        lo = float(np.percentile(x[valid[k]], 1)) if valid[k].any() else float(x.min())
        bands.append((x - lo) / robust_range(x[valid[k]] if valid[k].any() else x))
    scene = np.mean(bands, axis=0).astype(np.float32)
    h, w = scene.shape
    r0, c0 = max((h - MAX_SIDE) // 2, 0), max((w - MAX_SIDE) // 2, 0)
    return scene[r0 : r0 + MAX_SIDE, c0 : c0 + MAX_SIDE], k


def simulated_check(
    frames: np.ndarray, valid: np.ndarray, scale: float, methods: Sequence[str], model: RevisitNet | None, *,
    seed: int = 0, trials: int = 2, **fuse_kw: Any,
) -> dict[str, Any]:
    """cPSNR of each method on simulated revisits of the clearest input frame, with the input's masks.

    Args:
        frames: ``(K, C, H, W)`` the run's frames.
        valid: ``(K, H, W)`` their clear masks.
        scale: the run's factor (rounded to an integer for the simulation).
        methods: the fusion methods to score (``learned`` needs ``model``).
        model: the fusion network.
        seed: seed of the shifts, noise and mask draws.
        trials: simulated stacks to average over.
        **fuse_kw: passed to :func:`~medsat_sr.revisit.fuse.fuse` (``max_shift``, ``tile``, ``device``, ...).

    Returns:
        ``{"cpsnr": {method: dB}, "frames": K, "scene_frame": index, "scene_shape": [h, w], "trials": n}``;
        ``cpsnr`` is empty when the scene is too small to simulate from.
    """
    s = max(2, int(round(float(scale))))
    scene, k_scene = _scene(frames, valid)
    n = min(len(frames), MAX_FRAMES)
    out: dict[str, Any] = {"frames": n, "scene_frame": k_scene, "scene_shape": list(scene.shape), "trials": trials,
                           "scale": s, "cpsnr": {}}
    h, w = scene.shape[0] // s, scene.shape[1] // s
    if min(h, w) < 16:
        out["note"] = f"scene {list(scene.shape)} too small for a simulated check at x{s}"
        return out
    pool = np.asarray(valid, dtype=bool)
    pool = pool[pool.reshape(len(pool), -1).mean(axis=1) >= 0.3] if (pool.reshape(len(pool), -1).mean(axis=1) >= 0.3).any() else pool
    rng = np.random.default_rng(seed)
    scores: dict[str, list[float]] = {m: [] for m in methods}
    for _ in range(trials):
        rv = simulate_revisit(scene, s, n, rng, pool=pool)
        for m in methods:
            f = fuse(rv.frames, rv.valid, s, method=m, model=model if m == "learned" else None, **fuse_kw)
            scores[m].append(cpsnr(f.image[0].numpy(), rv.hr, data_range=1.0, clear=f.clear))
    out["cpsnr"] = {m: round(float(np.mean(v)), 3) for m, v in scores.items()}
    return out

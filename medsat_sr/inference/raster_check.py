"""The raster route's self-checks: degrade(SR) against the input, and ensemble weights by Wald's protocol.

Both degrade with THE recipe (:mod:`medsat_sr.degrade`): the profile's PSF
per band (:func:`medsat_sr.degrade.band_sigmas`, or the box), then
decimation by the task's ratio (:func:`medsat_sr.degrade.decimate` for
integer ratios, :func:`medsat_sr.degrade.psf_decimate` otherwise). The
consistency score is accumulated over a fixed sample of tiles (central crops
of :data:`CONSISTENCY_CROP` input pixels on at most
:data:`CONSISTENCY_TILES` tiles), so its cost does not grow with the scene.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from medsat_sr import degrade
from medsat_sr.errors import ConfigError
from medsat_sr.fusion import Ensemble, Member, fit_weights
from medsat_sr.inference.members import WEIGHT_CROP, centre
from medsat_sr.inference.raster_plan import Task

#: Raster tiles (spread evenly over the scene) on which the consistency score is computed
#: (a fixed sample: its cost does not grow with the scene).
CONSISTENCY_TILES = 16
#: Side (input pixels) of the central crop of each of those tiles that the score uses.
CONSISTENCY_CROP = 256


def psf_of(profile: Any, ratio: float, bands: list[str]) -> tuple[str, list[float]]:
    """``(method, sigma per band)`` of the profile's PSF for decimation by ``ratio`` (the box has no sigma)."""
    if profile is not None and profile.degradation.psf.shape == "box":
        return "box", [0.0] * len(bands)
    return "gaussian", degrade.band_sigmas(profile, ratio, bands)


def consistency_add(task: Task, out: np.ndarray, v_out: np.ndarray, lr: np.ndarray, lr_valid: np.ndarray) -> None:
    """Accumulate degrade(SR) against the input over one tile (tile borders reflected)."""
    if task.ratio is None or task.sigma is None:
        return
    n = out.shape[0]
    # a central crop of at most CONSISTENCY_CROP input pixels a side: a sample, at a fixed cost
    cuts = []
    for a in range(2):
        m = lr.shape[1 + a]
        k = min(m, CONSISTENCY_CROP)
        i0 = (m - k) // 2
        cuts.append((i0, i0 + k))
    if any(c != (0, lr.shape[1 + a]) for a, c in enumerate(cuts)):
        (a0, a1), (b0, b1) = cuts
        fr, fc = task.ratio[0], task.ratio[1]
        if fr.denominator == 1 and fc.denominator == 1:
            out = out[:, a0 * int(fr) : a1 * int(fr), b0 * int(fc) : b1 * int(fc)]
            v_out = v_out[:, a0 * int(fr) : a1 * int(fr), b0 * int(fc) : b1 * int(fc)]
            lr, lr_valid = lr[:, a0:a1, b0:b1], lr_valid[:, a0:a1, b0:b1]
    if task.sse is None:
        task.sse, task.count = np.zeros(n), np.zeros(n)
        task.vmin, task.vmax = np.full(n, np.inf), np.full(n, -np.inf)
    # invalid pixels are excluded through the degraded mask; zero them so that no NaN spreads
    x = torch.from_numpy(np.where(v_out, out, 0.0).astype(np.float32))
    inval = torch.from_numpy((~v_out).astype(np.float32))
    if all(r.denominator == 1 for r in task.ratio) and all(out.shape[1 + a] % int(task.ratio[a]) == 0 for a in range(2)):
        f = [int(task.ratio[0]), int(task.ratio[1])]
        with torch.inference_mode():
            if v_out.all():
                deg = degrade.decimate(x, f, task.sigma, method=task.psf).numpy()
                dm = np.ones(deg.shape, bool)
            else:  # valid only where no invalid pixel is under the kernel
                d_t, m_t = degrade.decimate(x, f, task.sigma, method=task.psf, valid=torch.from_numpy(v_out))
                deg, dm = d_t.numpy(), m_t.numpy()
    else:
        factor = (float(task.ratio[0]), float(task.ratio[1]))
        degs, masks = [], []
        for b in range(n):
            d, m = degrade.psf_decimate(x[b : b + 1], factor, sigma=task.sigma[b], method=task.psf,
                                        mask=~(inval[b : b + 1] > 0), spatial_dims=2)
            degs.append(d[0].numpy())
            masks.append(m[0].numpy())
        deg, dm = np.stack(degs), np.stack(masks)
    if deg.shape[1:] != lr.shape[1:]:
        return
    for b in range(n):
        ok = dm[b] & lr_valid[b]
        if ok.any():
            diff = deg[b][ok].astype(np.float64) - lr[b][ok]
            task.sse[b] += float((diff * diff).sum())
            task.count[b] += int(ok.sum())
        vals = lr[b][lr_valid[b]]
        if vals.size:
            task.vmin[b] = min(task.vmin[b], float(vals.min()))
            task.vmax[b] = max(task.vmax[b], float(vals.max()))


def consistency_result(tasks: list[Task]) -> dict[str, Any]:
    """PSNR per band of degrade(SR) against the input, over the tiles sampled so far."""
    psnr: dict[str, float | None] = {}
    ranges: dict[str, float | None] = {}
    for t in tasks:
        if t.sse is None or t.count is None or t.vmin is None or t.vmax is None:
            continue
        for k, band in enumerate(t.bands):
            rng = float(t.vmax[k] - t.vmin[k]) if np.isfinite(t.vmax[k] - t.vmin[k]) else None
            ranges[band] = rng
            if not t.count[k] or not rng:
                psnr[band] = None
                continue
            mse = t.sse[k] / t.count[k]
            psnr[band] = math.inf if mse == 0 else 10.0 * math.log10(rng * rng / mse)
    return {"psnr": psnr, "data_range": ranges}


def wald_weights_raster(method: str, members: list[Member], task: Task, profile: Any) -> tuple[list[float], dict[str, Any]]:
    """Fit ensemble weights on a central window of the raster: targets (and guides) degraded by the scale."""
    if task.ratio is None:
        raise ConfigError(f"band group {task.group.name} is not nested in the output grid; cannot fit ensemble weights")
    g = task.group
    r = [int(task.ratio[a]) for a in range(2)]
    if any(abs(float(task.ratio[a]) - r[a]) > 1e-9 for a in range(2)):
        raise ConfigError("fitted ensemble weights need an integer scale; give the weights (--weights w1,w2)")
    (r0, r1), (c0, c1) = centre(g.height, WEIGHT_CROP[2], r[0]), centre(g.width, WEIGHT_CROP[2], r[1])
    d, v = g.read(r0, r1, c0, c1)
    d, v = d[task.idx], v[task.idx]
    fill = task.group.fill_values()[task.idx]
    ref = torch.from_numpy(np.where(v, d, fill[:, None, None]).astype(np.float32))
    with torch.inference_mode():
        psf, sig = psf_of(profile, float(r[0]), task.bands)
        lr = degrade.decimate(ref, r, sig, method=psf)
        guide = None
        if task.guide is not None and task.guide_idx is not None:
            gd, gv = task.guide.read(r0 * r[0], r1 * r[0], c0 * r[1], c1 * r[1])
            gd = np.where(gv, gd, task.guide.fill_values()[:, None, None])[task.guide_idx]
            gpsf, gsig = psf_of(profile, float(r[0]), [task.guide.bands[i] for i in task.guide_idx])
            guide = degrade.decimate(torch.from_numpy(gd.astype(np.float32)), r, gsig, method=gpsf)[None]
    preds = [
        Ensemble([Member(m.model, normaliser=m.normaliser, guide_normaliser=m.guide_normaliser)]).predict(
            lr[None], tuple(ref.shape[1:]), guide=guide
        )[0][0]
        for m in members
    ]
    w = fit_weights(preds, ref, method=method, mask=torch.from_numpy(v),
                    data_range=float(ref.max() - ref.min()) or 1.0)
    return w, {"method": method, "split": f"central window {r1 - r0}x{c1 - c0} of {g.name}, degraded by {r[0]} (Wald)"}

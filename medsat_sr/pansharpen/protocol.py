"""Wald's protocol for pan-sharpening, and the full-resolution (QNR/HQNR) scores of a product.

Reduced resolution: the pan and the MS are each low-passed by their MTF
(gains at Nyquist) and decimated by the ratio at the grid phase, so the
degraded pan lands on the MS grid and the degraded MS on a grid ``ratio``
times coarser with the same phase; the original MS is the reference
(Wald, Ranchin, Mangolini 1997; MTF-matched filters as in Aiazzi et al.
2006 and Vivone et al. 2015).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from medsat_sr import metrics_bands
from medsat_sr import pansharpen_metrics as pm
from medsat_sr.pansharpen.classical import Pair
from medsat_sr.pansharpen.grid import decimated_shape, lowpass_decimate


def reduced(pair: Pair) -> Pair:
    """The reduced-resolution pair of Wald's protocol (its reference is ``pair.ms``)."""
    lr_shape = decimated_shape(pair.ms.shape[1:], pair.ratio, pair.phase)
    ms_lr = lowpass_decimate(pair.ms, pair.ratio, pair.ms_gains, pair.phase, lr_shape)
    return Pair(ms=ms_lr, pan=pair.pan_lr(), ratio=pair.ratio, phase=pair.phase, ms_gains=pair.ms_gains,
                pan_gain=pair.pan_gain)


def reduced_valid(valid: np.ndarray, pair: Pair) -> np.ndarray:
    """MS-grid validity at the reduced resolution (a coarse pixel is valid when its nearest fine one is)."""
    lr_shape = decimated_shape(valid.shape, pair.ratio, pair.phase)
    return lowpass_decimate(valid[None].astype(np.float64), pair.ratio, [0.5], pair.phase, lr_shape)[0] > 0.999


def reduced_scores(fused: np.ndarray, ref: np.ndarray, ratio: int, valid: np.ndarray | None = None, *,
                   block: int = pm.DEFAULT_BLOCK) -> dict[str, float | None]:
    """Q2n (block ``block``), SAM (degrees) and ERGAS (ratio ``ratio``) of a reduced-resolution product.

    SAM is ``None`` for a single band: a spectral angle needs two bands at least.
    """
    return {
        "q2n": pm.q2n(fused, ref, block=block, mask=valid),
        "sam": metrics_bands.sam(fused, ref, mask=valid) if fused.shape[0] >= 2 else None,
        "ergas": metrics_bands.ergas(fused, ref, scale=float(ratio), mask=valid),
    }


def full_scores(fused: np.ndarray, pair: Pair, *, block: int = pm.DEFAULT_BLOCK, mask: Any = None,
                mask_lr: Any = None) -> dict[str, float]:
    """Khan's D_lambda, D_s and HQNR of a full-resolution product (Khan et al. 2009; Aiazzi et al. 2014).

    D_lambda^K uses Q2n at MS resolution with block ``block / ratio``; D_s uses Q
    with ``block`` on the pan grid and ``block / ratio`` on the MS grid.
    """
    def lp(x: np.ndarray) -> np.ndarray:
        return lowpass_decimate(x, pair.ratio, pair.ms_gains, pair.phase, pair.ms.shape[1:])

    dk = pm.d_lambda_khan(fused, pair.ms, lp, block=max(2, block // pair.ratio), mask_lr=mask_lr)
    ds = pm.d_s(fused, pair.ms, pair.pan, pair.pan_lr(), block=block, mask=mask, mask_lr=mask_lr)
    return {"d_lambda_k": dk, "d_s": ds, "hqnr": pm.hqnr(dk, ds)}


def split(pair: Pair, valid: np.ndarray | None = None) -> tuple[tuple[Pair, Any], tuple[Pair, Any]]:
    """The top and bottom halves of a scene (MS rows ``[0, h/2)`` and ``[h/2, h)`` with their pan rows).

    Each half is an independent pair with the same phase: one is for tuning,
    the other held out. Returns ``((top, top_valid), (bottom, bottom_valid))``.
    """
    h2 = pair.ms.shape[1] // 2
    cut = pair.ratio * h2

    def part(ms: slice, pan: slice) -> tuple[Pair, Any]:
        p = Pair(ms=pair.ms[:, ms], pan=pair.pan[pan], ratio=pair.ratio, phase=pair.phase,
                 ms_gains=pair.ms_gains, pan_gain=pair.pan_gain)
        return p, None if valid is None else valid[ms]

    return part(slice(0, h2), slice(0, cut)), part(slice(h2, None), slice(cut, None))

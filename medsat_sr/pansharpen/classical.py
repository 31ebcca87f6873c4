"""Classical pan-sharpening: weighted Brovey, GIHS, GSA and MTF-GLP-HPM.

Each method is two steps, so that a scene can be processed strip by strip
with identical results (no seams):

* ``fit``: global parameters from the whole scene at MS resolution (the MS
  image, the pan degraded onto the MS grid by the pan MTF) and the pan's
  statistics: :func:`fit`;
* ``apply``: a pointwise or local (filter-sized) operation on a window:
  :func:`apply`.

Inputs are float arrays: ``ms`` ``(C, h, w)`` on the MS grid, ``pan``
``(H, W)`` on the pan grid, related by :class:`Pair`'s ratio and phase
(:mod:`medsat_sr.pansharpen.grid`). Invalid pixels must be filled (by the
caller) before; outputs are ``(C, H, W)`` float64 on the pan grid.

References:
    GDAL, gdal_pansharpen / VRT pan-sharpening, "weighted Brovey" (alg/gdalpansharpen.cpp).
    Tu T.-M., Su S.-C., Shyu H.-C., Huang P. S., A new look at IHS-like image fusion
    methods, Information Fusion 2(3), 177-186, 2001 (GIHS, fast IHS).
    Aiazzi B., Baronti S., Selva M., Improving component substitution pansharpening
    through multivariate regression of MS+Pan data, IEEE TGRS 45(10), 3230-3239, 2007 (GSA).
    Aiazzi B., Alparone L., Baronti S., Garzelli A., Selva M., MTF-tailored multiscale
    fusion of high-resolution MS and Pan imagery, PE&RS 72(5), 591-596, 2006 (MTF-GLP).
    Vivone G. et al., A critical comparison among pansharpening algorithms,
    IEEE TGRS 53(5), 2565-2586, 2015 (MTF-GLP-HPM, the benchmark's conventions).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.optimize import nnls

from medsat_sr.errors import ConfigError
from medsat_sr.pansharpen.grid import lowpass_decimate, upsample

#: Guard for divisions by a synthetic intensity or a low-passed pan.
EPS = 1e-9


@dataclass(frozen=True)
class Pair:
    """One pan + MS pair in memory (a whole scene or a strip of it).

    Attributes:
        ms: ``(C, h, w)`` float, invalid pixels filled.
        pan: ``(H, W)`` float, invalid pixels filled.
        ratio: integer MS pixel / pan pixel.
        phase: pan (row, col) index of the centre of MS pixel (0, 0).
        ms_gains: MTF gain at Nyquist per MS band.
        pan_gain: MTF gain at Nyquist of the pan.
    """

    ms: np.ndarray
    pan: np.ndarray
    ratio: int
    phase: tuple[float, float]
    ms_gains: tuple[float, ...]
    pan_gain: float
    _cache: dict[str, np.ndarray] = field(default_factory=dict, compare=False, repr=False)

    def ms_up(self) -> np.ndarray:
        """The MS bands interpolated onto the pan grid (cubic, exact phase)."""
        if "ms_up" not in self._cache:
            self._cache["ms_up"] = upsample(self.ms, self.ratio, self.phase, self.pan.shape)
        return self._cache["ms_up"]

    def pan_lr(self, gain: float | None = None) -> np.ndarray:
        """The pan low-passed by an MTF gain (default its own) and decimated onto the MS grid."""
        g = self.pan_gain if gain is None else gain
        key = f"pan_lr{g:.6f}"
        if key not in self._cache:
            self._cache[key] = lowpass_decimate(self.pan[None], self.ratio, [g], self.phase, self.ms.shape[1:])[0]
        return self._cache[key]


def _valid_values(x: np.ndarray, valid: np.ndarray | None) -> np.ndarray:
    """``(C, n)`` values at valid pixels of ``(C, h, w)``."""
    flat = x.reshape(x.shape[0], -1)
    return flat if valid is None else flat[:, valid.reshape(-1)]


def regression_weights(ms: np.ndarray, pan_lr: np.ndarray, valid: np.ndarray | None, *,
                       intercept: bool, nonneg: bool = False) -> np.ndarray:
    """Least-squares weights of the pan (degraded onto the MS grid) on the MS bands (Aiazzi et al. 2007).

    Returns:
        ``(C,)`` weights, or ``(C + 1,)`` with the intercept last.
    """
    a = _valid_values(ms, valid).T
    b = _valid_values(pan_lr[None], valid)[0]
    if intercept:
        a = np.concatenate([a, np.ones((a.shape[0], 1))], axis=1)
    if nonneg and not intercept:
        return nnls(a, b)[0]
    return np.linalg.lstsq(a, b, rcond=None)[0]


def brovey_formula(ms_up: np.ndarray, pan: np.ndarray, weights: Sequence[float]) -> np.ndarray:
    """GDAL's weighted Brovey: ``out_k = ms_k * pan / sum_i(w_i ms_i)``, and 0 where the pseudo-pan is 0.

    The formula of ``GDALPansharpenOperation::WeightedBrovey`` (gdal
    alg/gdalpansharpen.cpp): ``dfPseudoPanchro = sum w_i ms_i``;
    ``dfFactor = pan / dfPseudoPanchro`` if non-zero, else 0; the output is
    ``ms_k * dfFactor`` (GDAL then rounds and clips to the output type).
    """
    pseudo = np.tensordot(np.asarray(weights, dtype=np.float64), ms_up, axes=1)
    factor = np.divide(pan, pseudo, out=np.zeros_like(pseudo), where=pseudo != 0)
    return ms_up * factor[None]


def _stats(x: np.ndarray, valid: np.ndarray | None) -> tuple[float, float]:
    v = x if valid is None else x[valid]
    return float(v.mean()), float(v.std())


def _equalise(p: np.ndarray, src: tuple[float, float], dst: tuple[float, float]) -> np.ndarray:
    """Mean and std matching: ``(p - m_src) s_dst / s_src + m_dst``."""
    return (p - src[0]) * (dst[1] / max(src[1], EPS)) + dst[0]


# ---------------------------------------------------------------- fit
def _fit_brovey(pair: Pair, valid: np.ndarray | None, pan_valid: np.ndarray | None) -> dict[str, Any]:
    w = regression_weights(pair.ms, pair.pan_lr(), valid, intercept=False, nonneg=True)
    if not np.any(w > 0):
        w = np.full(pair.ms.shape[0], 1.0 / pair.ms.shape[0])
    return {"weights": w.tolist()}


def _fit_gihs(pair: Pair, valid: np.ndarray | None, pan_valid: np.ndarray | None) -> dict[str, Any]:
    intensity = pair.ms.mean(axis=0)
    return {"pan": _stats(pair.pan, pan_valid), "intensity": _stats(intensity, valid)}


def _fit_gsa(pair: Pair, valid: np.ndarray | None, pan_valid: np.ndarray | None) -> dict[str, Any]:
    ms = pair.ms - _valid_values(pair.ms, valid).mean(axis=1)[:, None, None]
    alpha = regression_weights(ms, pair.pan_lr(), valid, intercept=True)
    intensity = np.tensordot(alpha[:-1], ms, axes=1) + alpha[-1]
    iv = _valid_values(intensity[None], valid)[0]
    mv = _valid_values(ms, valid)
    var = max(float(iv.var()), EPS)
    gains = [float(np.mean((mv[k] - mv[k].mean()) * (iv - iv.mean())) / var) for k in range(ms.shape[0])]
    means = _valid_values(pair.ms, valid).mean(axis=1)
    return {"alpha": alpha.tolist(), "ms_means": means.tolist(), "gains": gains,
            "pan": _stats(pair.pan, pan_valid), "intensity": (float(iv.mean()), float(iv.std()))}


def _fit_hpm(pair: Pair, valid: np.ndarray | None, pan_valid: np.ndarray | None) -> dict[str, Any]:
    bands = []
    for k, g in enumerate(pair.ms_gains):
        bands.append({"ms": _stats(pair.ms[k], valid), "pan_lp": _stats(pair.pan_lr(g), valid)})
    return {"pan": _stats(pair.pan, pan_valid), "bands": bands}


# ---------------------------------------------------------------- apply
def _apply_brovey(pair: Pair, p: dict[str, Any]) -> np.ndarray:
    return brovey_formula(pair.ms_up(), pair.pan, p["weights"])


def _apply_gihs(pair: Pair, p: dict[str, Any]) -> np.ndarray:
    up = pair.ms_up()
    intensity = up.mean(axis=0)
    pan = _equalise(pair.pan, p["pan"], p["intensity"])
    return up + (pan - intensity)[None]


def _apply_gsa(pair: Pair, p: dict[str, Any]) -> np.ndarray:
    up = pair.ms_up() - np.asarray(p["ms_means"])[:, None, None]
    alpha = np.asarray(p["alpha"])
    intensity = np.tensordot(alpha[:-1], up, axes=1) + alpha[-1]
    pan = _equalise(pair.pan, p["pan"], p["intensity"])
    detail = pan - intensity
    return pair.ms_up() + np.asarray(p["gains"])[:, None, None] * detail[None]


def _apply_hpm(pair: Pair, p: dict[str, Any]) -> np.ndarray:
    up = pair.ms_up()
    out = np.empty_like(up)
    for k, g in enumerate(pair.ms_gains):
        b = p["bands"][k]
        pk = _equalise(pair.pan, p["pan"], b["ms"])
        # LP(a P + c) = a LP(P) + c: the equalised pan's low-pass, from the raw pan's
        plp = upsample(pair.pan_lr(g)[None], pair.ratio, pair.phase, pair.pan.shape)[0]
        plp = _equalise(plp, p["pan"], b["ms"])
        ratio = np.divide(pk, plp, out=np.ones_like(pk), where=np.abs(plp) > EPS)
        out[k] = up[k] * ratio
    return out


_Fit = Callable[[Pair, "np.ndarray | None", "np.ndarray | None"], dict[str, Any]]
_Apply = Callable[[Pair, dict[str, Any]], np.ndarray]

#: The classical methods: name -> (fit, apply, reference).
METHODS: dict[str, tuple[_Fit, _Apply, str]] = {
    "brovey": (_fit_brovey, _apply_brovey, "weighted Brovey (GDAL's formula), weights by non-negative regression"),
    "gihs": (_fit_gihs, _apply_gihs, "generalised IHS (Tu et al. 2001), pan matched to the mean intensity"),
    "gsa": (_fit_gsa, _apply_gsa, "Gram-Schmidt adaptive (Aiazzi et al. 2007)"),
    "mtf-glp-hpm": (_fit_hpm, _apply_hpm, "MTF-GLP with high-pass modulation (Aiazzi et al. 2006; Vivone et al. 2015)"),
}


def check_method(name: str) -> str:
    """The method name, or ConfigError listing the methods."""
    if name not in METHODS:
        raise ConfigError(f"unknown pan-sharpening method {name!r}; choose one of {', '.join(METHODS)}")
    return name


def fit(name: str, pair: Pair, valid: np.ndarray | None = None, pan_valid: np.ndarray | None = None) -> dict[str, Any]:
    """Global parameters of method ``name`` from a whole scene (``valid``: MS-grid validity; ``pan_valid``: pan's)."""
    return METHODS[check_method(name)][0](pair, valid, pan_valid)


def apply(name: str, pair: Pair, params: dict[str, Any]) -> np.ndarray:
    """Method ``name`` with fitted ``params`` on a pair (a scene or a strip): ``(C, H, W)`` float64."""
    return METHODS[check_method(name)][1](pair, params)


def pansharpen(name: str, pair: Pair, valid: np.ndarray | None = None, pan_valid: np.ndarray | None = None) -> np.ndarray:
    """Fit and apply method ``name`` on one pair in memory."""
    return apply(name, pair, fit(name, pair, valid, pan_valid))

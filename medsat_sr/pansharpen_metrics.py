"""Pan-sharpening quality indices: Q (UIQI), Q2n (Q4/Q8), D_lambda (QNR and Khan's), D_s, QNR and HQNR.

Reduced resolution (Wald's protocol: the fused image is compared with the
original multispectral image after both inputs were degraded by the ratio):

* :func:`q2n`: Q2n, the hypercomplex extension of the universal image
  quality index to 2^n bands (Alparone et al. 2004 for Q4; Garzelli and
  Nencini 2009 for Q2n), averaged over non-overlapping ``block`` x ``block``
  blocks (32 by default, as in both papers);
* SAM and ERGAS: :func:`medsat_sr.metrics_bands.sam` (degrees) and
  :func:`medsat_sr.metrics_bands.ergas` (``scale`` = the pan-sharpening ratio, 2
  for Landsat 8/9: ERGAS uses h/l = 1/ratio).

Full resolution (no reference):

* :func:`d_lambda` and :func:`d_s`: spectral and spatial distortions of QNR
  (Alparone et al. 2008), Q averaged over blocks;
* :func:`d_lambda_khan`: Khan's spectral distortion, ``1 - Q2n`` between the
  fused image low-passed by the MS sensor's MTF and decimated, and the MS
  image (Khan, Alparone, Chanussot 2009);
* :func:`qnr` = ``(1 - D_lambda)^alpha (1 - D_s)^beta``; :func:`hqnr` =
  ``(1 - D_lambda^K)(1 - D_s)`` (Aiazzi et al. 2014).

Masks (True = valid) drop every block that holds an invalid pixel. Pure
numpy; arrays are ``(C, H, W)``.

References:
    Wang Z., Bovik A. C., A universal image quality index, IEEE SPL 9(3), 2002.
    Alparone L., Baronti S., Garzelli A., Nencini F., A global quality measurement
    of pan-sharpened multispectral imagery, IEEE GRSL 1(4), 313-317, 2004.
    Garzelli A., Nencini F., Hypercomplex quality assessment of multi/hyperspectral
    images, IEEE GRSL 6(4), 662-665, 2009.
    Alparone L., Aiazzi B., Baronti S., Garzelli A., Nencini F., Selva M.,
    Multispectral and panchromatic data fusion assessment without reference,
    PE&RS 74(2), 193-200, 2008.
    Khan M. M., Alparone L., Chanussot J., Pansharpening quality assessment using
    the modulation transfer functions of instruments, IEEE TGRS 47(11), 3880-3891, 2009.
    Aiazzi B., Alparone L., Baronti S., Carla R., Garzelli A., Santurri L.,
    Full-scale assessment of pansharpening methods and data products, Proc. SPIE 9244, 2014.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from medsat_sr.errors import ConfigError

#: Block size of Q4/Q2n and of the Q index inside D_lambda and D_s (Alparone et al. 2004, 2008).
DEFAULT_BLOCK = 32


def _as_chw(x: Any, name: str) -> np.ndarray:
    a = np.asarray(x.detach().cpu().numpy() if hasattr(x, "detach") else x, dtype=np.float64)
    if a.ndim == 2:
        a = a[None]
    if a.ndim != 3:
        raise ConfigError(f"{name} must be (C, H, W) or (H, W), got shape {a.shape}")
    return a


def _check_block(block: Any) -> int:
    if isinstance(block, bool) or not isinstance(block, (int, np.integer)) or block < 2:
        raise ConfigError(f"block must be an integer >= 2, got {block!r}")
    return int(block)


def blocks(x: np.ndarray, block: int, mask: Any = None) -> np.ndarray:
    """Non-overlapping ``block`` x ``block`` blocks of ``(C, H, W)`` as ``(C, n_blocks, block*block)``.

    Rows and columns past the last whole block are dropped; with ``mask``
    (True = valid, ``(H, W)``), every block holding an invalid pixel is
    dropped.

    Raises:
        ConfigError: the image is smaller than one block, or no block is valid.
    """
    c, h, w = x.shape
    nh, nw = h // block, w // block
    if nh == 0 or nw == 0:
        raise ConfigError(f"image {h}x{w} is smaller than one {block}x{block} block")
    t = x[:, : nh * block, : nw * block].reshape(c, nh, block, nw, block).transpose(0, 1, 3, 2, 4)
    t = t.reshape(c, nh * nw, block * block)
    if mask is not None:
        m = np.asarray(mask, dtype=bool).reshape(h, w)[: nh * block, : nw * block]
        keep = m.reshape(nh, block, nw, block).all(axis=(1, 3)).reshape(-1)
        if not keep.any():
            raise ConfigError(f"no {block}x{block} block is wholly valid under the mask")
        t = t[:, keep]
    return t


def _ratio(num: np.ndarray, den: np.ndarray, equal: np.ndarray) -> np.ndarray:
    """``num / den``; where ``den == 0`` (constant blocks) 1 if the blocks are equal, else 0."""
    out = np.where(equal, 1.0, 0.0)
    nz = den > 0
    out[nz] = num[nz] / den[nz]
    return out


def q_blocks(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The universal image quality index of each block pair (Wang and Bovik 2002).

    ``Q = 4 s_ab m_a m_b / ((s_a^2 + s_b^2)(m_a^2 + m_b^2))`` with biased
    (1/n) variances and covariance, over the last axis.
    """
    ma, mb = a.mean(-1), b.mean(-1)
    da, db = a - ma[..., None], b - mb[..., None]
    va, vb, cov = (da * da).mean(-1), (db * db).mean(-1), (da * db).mean(-1)
    den = (va + vb) * (ma * ma + mb * mb)
    return _ratio(4.0 * cov * ma * mb, den, np.all(a == b, axis=-1))


def q_index(a: Any, b: Any, *, block: int = DEFAULT_BLOCK, mask: Any = None) -> float:
    """Mean Q (UIQI) over non-overlapping blocks of two single-band images (or band-wise, averaged)."""
    x, y = _as_chw(a, "a"), _as_chw(b, "b")
    if x.shape != y.shape:
        raise ConfigError(f"q_index: shapes differ, {x.shape} vs {y.shape}")
    bs = _check_block(block)
    return float(q_blocks(blocks(x, bs, mask), blocks(y, bs, mask)).mean())


# ------------------------------------------------------------------ hypercomplex
def conj(z: np.ndarray) -> np.ndarray:
    """Cayley-Dickson conjugate of hypercomplex numbers with their 2^n components on axis 0."""
    out = -z
    out[0] = z[0]
    return out


def hmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cayley-Dickson product of 2^n-component hypercomplex numbers (components on axis 0).

    ``(p, q)(r, s) = (p r - s* q, s p + q r*)`` with the halves ``p, q`` and
    ``r, s``: the complex numbers for 2 components, Hamilton's quaternions
    (1, i, j, k) for 4, the octonions for 8.
    """
    n = a.shape[0]
    if n == 1:
        return a * b
    h = n // 2
    p, q, r, s = a[:h], a[h:], b[:h], b[h:]
    return np.concatenate([hmul(p, r) - hmul(conj(s), q), hmul(s, p) + hmul(q, conj(r))])


def _pad_pow2(x: np.ndarray) -> np.ndarray:
    n = 1 << max(1, math.ceil(math.log2(x.shape[0])))
    if n == x.shape[0]:
        return x
    return np.concatenate([x, np.zeros((n - x.shape[0],) + x.shape[1:])])


def q2n_blocks(fused: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Q2n of each block: ``(C, n_blocks, n_px)`` pairs, C a power of two -> ``(n_blocks,)``.

    With ``z`` (reference) and ``v`` (fused) hypercomplex, per block:
    ``Q2n = 4 |s_zv| |m_z| |m_v| / ((s_z^2 + s_v^2)(|m_z|^2 + |m_v|^2))``
    where ``s_zv = E[(z - m_z)(v - m_v)*]`` (hypercomplex product and
    conjugate), ``s_z^2 = E|z - m_z|^2`` (Alparone et al. 2004, eq. 5-6).
    """
    mz, mv = ref.mean(-1), fused.mean(-1)
    dz, dv = ref - mz[..., None], fused - mv[..., None]
    szv = hmul(dz, conj(dv)).mean(-1)
    sz2, sv2 = (dz * dz).sum(0).mean(-1), (dv * dv).sum(0).mean(-1)
    nz2, nv2 = (mz * mz).sum(0), (mv * mv).sum(0)
    num = 4.0 * np.sqrt((szv * szv).sum(0)) * np.sqrt(nz2) * np.sqrt(nv2)
    return _ratio(num, (sz2 + sv2) * (nz2 + nv2), np.all(ref == fused, axis=(0, 2)))


def q2n(fused: Any, ref: Any, *, block: int = DEFAULT_BLOCK, mask: Any = None) -> float:
    """Q2n (Q4 for 4 bands, Q8 for 5-8): the mean over non-overlapping blocks; 1 is perfect.

    A band count that is not a power of two is padded with zero bands to the
    next one (as the toolbox of Vivone et al. 2015 does), so 6 Landsat bands
    give Q8.

    Args:
        fused: the pan-sharpened image ``(C, H, W)``.
        ref: the reference ``(C, H, W)`` (reduced-resolution protocol: the original MS).
        block: block side in pixels (32 in Alparone et al. 2004).
        mask: optional ``(H, W)`` validity (blocks with an invalid pixel are dropped).

    Raises:
        ConfigError: shapes differ, an invalid block, or no valid block.
    """
    f, r = _as_chw(fused, "fused"), _as_chw(ref, "ref")
    if f.shape != r.shape:
        raise ConfigError(f"q2n: shapes differ, {f.shape} vs {r.shape}")
    bs = _check_block(block)
    return float(q2n_blocks(_pad_pow2(blocks(f, bs, mask)), _pad_pow2(blocks(r, bs, mask))).mean())


# ------------------------------------------------------------------ no reference
def d_lambda(fused: Any, ms: Any, *, p: float = 1.0, block: int = DEFAULT_BLOCK, mask: Any = None,
             mask_lr: Any = None) -> float:
    """QNR's spectral distortion (Alparone et al. 2008, eq. 1).

    ``D_lambda = (1/(N(N-1)) sum_{l != r} |Q(F_l, F_r) - Q(M_l, M_r)|^p)^(1/p)``
    with Q averaged over blocks: ``block`` on the fused image,
    ``block / ratio`` on the MS image (the ratio from the two shapes).
    """
    f, m = _as_chw(fused, "fused"), _as_chw(ms, "ms")
    n = f.shape[0]
    if n < 2 or m.shape[0] != n:
        raise ConfigError(f"d_lambda needs >= 2 bands and the same count, got {f.shape} and {m.shape}")
    ratio = f.shape[1] / m.shape[1]
    bs = _check_block(block)
    bf, bm = blocks(f, bs, mask), blocks(m, _check_block(max(2, round(bs / ratio))), mask_lr)
    total = 0.0
    for i in range(n):
        for j in range(n):
            if i != j:
                diff = q_blocks(bf[i], bf[j]).mean() - q_blocks(bm[i], bm[j]).mean()
                total += abs(diff) ** p
    return float((total / (n * (n - 1))) ** (1.0 / p))


def d_s(fused: Any, ms: Any, pan: Any, pan_lr: Any, *, q: float = 1.0, block: int = DEFAULT_BLOCK,
        mask: Any = None, mask_lr: Any = None) -> float:
    """QNR's spatial distortion (Alparone et al. 2008, eq. 2).

    ``D_s = (1/N sum_l |Q(F_l, P) - Q(M_l, P_LR)|^q)^(1/q)``, ``P_LR`` the pan
    low-passed (by the pan MTF) and decimated to the MS grid.
    """
    f, m, pn, pl = _as_chw(fused, "fused"), _as_chw(ms, "ms"), _as_chw(pan, "pan"), _as_chw(pan_lr, "pan_lr")
    if pn.shape[1:] != f.shape[1:] or pl.shape[1:] != m.shape[1:]:
        raise ConfigError(f"d_s: pan {pn.shape} must match fused {f.shape}, pan_lr {pl.shape} the MS {m.shape}")
    ratio = f.shape[1] / m.shape[1]
    bs = _check_block(block)
    bl = _check_block(max(2, round(bs / ratio)))
    bf, bp = blocks(f, bs, mask), blocks(pn, bs, mask)[0]
    bm, bpl = blocks(m, bl, mask_lr), blocks(pl, bl, mask_lr)[0]
    total = sum(abs(q_blocks(bf[i], bp).mean() - q_blocks(bm[i], bpl).mean()) ** q for i in range(f.shape[0]))
    return float((total / f.shape[0]) ** (1.0 / q))


def d_lambda_khan(fused: Any, ms: Any, lowpass_decimate: Callable[[np.ndarray], np.ndarray], *,
                  block: int = DEFAULT_BLOCK, mask_lr: Any = None) -> float:
    """Khan's spectral distortion: ``1 - Q2n(LP_MTF(F) decimated, MS)`` (Khan et al. 2009).

    Args:
        fused: the fused image ``(C, H, W)`` on the pan grid.
        ms: the MS image ``(C, h, w)``.
        lowpass_decimate: filters each band with the MS sensor's MTF and
            decimates it onto the MS grid (``(C, H, W) -> (C, h, w)``).
        block: Q2n block side at MS resolution.
        mask_lr: validity on the MS grid.
    """
    low = _as_chw(lowpass_decimate(_as_chw(fused, "fused")), "lowpass")
    return 1.0 - q2n(low, ms, block=block, mask=mask_lr)


def qnr(d_lam: float, d_sp: float, *, alpha: float = 1.0, beta: float = 1.0) -> float:
    """QNR = (1 - D_lambda)^alpha (1 - D_s)^beta (Alparone et al. 2008, eq. 3); 1 is perfect."""
    return float((1.0 - d_lam) ** alpha * (1.0 - d_sp) ** beta)


def hqnr(d_lambda_k: float, d_sp: float) -> float:
    """Hybrid QNR = (1 - D_lambda^K)(1 - D_s) (Aiazzi et al. 2014); 1 is perfect."""
    return qnr(d_lambda_k, d_sp)

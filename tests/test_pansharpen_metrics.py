"""Pan-sharpening indices cross-checked on hand cases against the formulas of their papers."""

from __future__ import annotations

import numpy as np
import pytest

from medsat_sr import pansharpen_metrics as pm
from medsat_sr.errors import ConfigError


def hamilton(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamilton's quaternion product written out (1, i, j, k), independent of the Cayley-Dickson code."""
    a0, a1, a2, a3 = a
    b0, b1, b2, b3 = b
    return np.array([
        a0 * b0 - a1 * b1 - a2 * b2 - a3 * b3,
        a0 * b1 + a1 * b0 + a2 * b3 - a3 * b2,
        a0 * b2 - a1 * b3 + a2 * b0 + a3 * b1,
        a0 * b3 + a1 * b2 - a2 * b1 + a3 * b0,
    ])


def test_cayley_dickson_is_hamilton_for_quaternions() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(4, 5)), rng.normal(size=(4, 5))
    np.testing.assert_allclose(pm.hmul(a, b), hamilton(a, b), atol=1e-12)
    # octonion norm is multiplicative (a property of the Cayley-Dickson octonions)
    a8, b8 = rng.normal(size=(8, 3)), rng.normal(size=(8, 3))
    np.testing.assert_allclose(np.linalg.norm(pm.hmul(a8, b8), axis=0),
                               np.linalg.norm(a8, axis=0) * np.linalg.norm(b8, axis=0), rtol=1e-12)


def test_q4_hand_case_alparone_2004() -> None:
    """Q4 of one 2x2 block by Alparone et al., IEEE GRSL 1(4) 2004, eq. (5)-(6), computed by hand."""
    z = np.array([[[1.0, 2.0], [3.0, 4.0]], [[2.0, 2.0], [1.0, 0.0]], [[0.0, 1.0], [1.0, 3.0]],
                  [[5.0, 4.0], [4.0, 6.0]]])  # reference, 4 bands
    v = z + np.array([[[0.5, -0.5], [0.0, 1.0]], [[0.0, 1.0], [-1.0, 0.0]], [[1.0, 0.0], [0.0, 0.0]],
                      [[0.0, 0.0], [1.0, -1.0]]])  # fused
    zz, vv = z.reshape(4, 4), v.reshape(4, 4)
    mz, mv = zz.mean(1), vv.mean(1)
    dz, dv = zz - mz[:, None], vv - mv[:, None]
    conj_dv = dv * np.array([1, -1, -1, -1])[:, None]
    szv = np.mean([hamilton(dz[:, p], conj_dv[:, p]) for p in range(4)], axis=0)
    sz2 = np.mean(np.sum(dz**2, 0))
    sv2 = np.mean(np.sum(dv**2, 0))
    expect = (np.linalg.norm(szv) / np.sqrt(sz2 * sv2) * 2 * np.sqrt(sz2 * sv2) / (sz2 + sv2)
              * 2 * np.linalg.norm(mz) * np.linalg.norm(mv) / (np.sum(mz**2) + np.sum(mv**2)))
    assert pm.q2n(v, z, block=2) == pytest.approx(expect, abs=1e-12)
    assert pm.q2n(z, z, block=2) == pytest.approx(1.0)
    assert 0 < expect < 1


def test_q_index_wang_bovik_2002() -> None:
    """UIQI of Wang and Bovik, IEEE SPL 9(3) 2002, eq. (2): 4 s_xy mx my / ((sx2+sy2)(mx2+my2))."""
    x = np.array([[1.0, 2.0], [3.0, 4.0]])
    y = np.array([[2.0, 2.0], [4.0, 5.0]])
    mx, my = 2.5, 3.25
    sx2, sy2 = np.var(x), np.var(y)
    sxy = np.mean((x - mx) * (y - my))
    assert pm.q_index(x, y, block=2) == pytest.approx(4 * sxy * mx * my / ((sx2 + sy2) * (mx**2 + my**2)))
    # Q2n of one band reduces to |Q| (complex with zero imaginary part)
    assert pm.q2n(x, y, block=2) == pytest.approx(pm.q_index(x, y, block=2))


def test_blocks_drop_partial_and_masked_blocks() -> None:
    x = np.arange(2 * 5 * 7, dtype=float).reshape(2, 5, 7)
    assert pm.blocks(x, 2).shape == (2, 6, 4)
    m = np.ones((5, 7), bool)
    m[0, 0] = False
    assert pm.blocks(x, 2, m).shape == (2, 5, 4)
    with pytest.raises(ConfigError, match="smaller than one"):
        pm.blocks(x, 8)


def test_qnr_distortions_alparone_2008() -> None:
    """D_lambda and D_s by Alparone et al., PE&RS 74(2) 2008, eq. (1)-(3), p = q = 1, by hand."""
    rng = np.random.default_rng(1)
    ms = rng.uniform(1, 2, size=(3, 4, 4))
    fused = rng.uniform(1, 2, size=(3, 8, 8))
    pan = rng.uniform(1, 2, size=(8, 8))
    pan_lr = rng.uniform(1, 2, size=(4, 4))

    def q(a: np.ndarray, b: np.ndarray, bs: int) -> float:  # mean UIQI over bs x bs blocks, by hand
        vals = []
        for r in range(0, a.shape[0], bs):
            for c in range(0, a.shape[1], bs):
                x, y = a[r:r + bs, c:c + bs].ravel(), b[r:r + bs, c:c + bs].ravel()
                cov = np.mean((x - x.mean()) * (y - y.mean()))
                vals.append(4 * cov * x.mean() * y.mean() / ((x.var() + y.var()) * (x.mean()**2 + y.mean()**2)))
        return float(np.mean(vals))

    dl = np.mean([abs(q(fused[i], fused[j], 4) - q(ms[i], ms[j], 2)) for i in range(3) for j in range(3) if i != j])
    ds = np.mean([abs(q(fused[i], pan, 4) - q(ms[i], pan_lr, 2)) for i in range(3)])
    assert pm.d_lambda(fused, ms, block=4) == pytest.approx(dl, abs=1e-12)
    assert pm.d_s(fused, ms, pan, pan_lr, block=4) == pytest.approx(ds, abs=1e-12)
    assert pm.qnr(dl, ds) == pytest.approx((1 - dl) * (1 - ds))


def test_khan_d_lambda_and_hqnr_aiazzi_2014() -> None:
    """Khan et al. IEEE TGRS 47(11) 2009: D_lambda^K = 1 - Q2n(LP(F) decimated, MS); HQNR = (1-D_l^K)(1-D_s)."""
    rng = np.random.default_rng(2)
    ms = rng.uniform(1, 2, size=(4, 8, 8))
    fused = np.repeat(np.repeat(ms, 2, axis=1), 2, axis=2)  # a perfectly consistent product

    def box_decimate(x: np.ndarray) -> np.ndarray:
        return x.reshape(x.shape[0], x.shape[1] // 2, 2, x.shape[2] // 2, 2).mean(axis=(2, 4))

    assert pm.d_lambda_khan(fused, ms, box_decimate, block=4) == pytest.approx(0.0, abs=1e-12)
    noisy = fused + rng.normal(0, 0.2, fused.shape)
    dk = pm.d_lambda_khan(noisy, ms, box_decimate, block=4)
    assert dk == pytest.approx(1 - pm.q2n(box_decimate(noisy), ms, block=4))
    assert 0 < dk < 1
    assert pm.hqnr(dk, 0.1) == pytest.approx((1 - dk) * 0.9)


def test_errors() -> None:
    with pytest.raises(ConfigError, match="shapes differ"):
        pm.q2n(np.ones((4, 8, 8)), np.ones((4, 8, 9)))
    with pytest.raises(ConfigError, match="block"):
        pm.q2n(np.ones((4, 8, 8)), np.ones((4, 8, 8)), block=1)

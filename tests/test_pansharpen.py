"""Classical pan-sharpening: GDAL's Brovey formula by hand, grid phase, Wald consistency on a synthetic scene."""

from __future__ import annotations

import numpy as np
import pytest
from rasterio.transform import Affine

from medsat_sr import metrics_bands
from medsat_sr.errors import GeometryError
from medsat_sr.pansharpen import classical
from medsat_sr.pansharpen.grid import decimated_shape, grid_relation, lowpass_decimate, upsample


def test_brovey_matches_gdal_formula_by_hand() -> None:
    """GDAL alg/gdalpansharpen.cpp WeightedBrovey: pseudo = sum w_i ms_i; out_k = ms_k * pan / pseudo (0 if pseudo 0).

    GDAL's Python bindings (osgeo) are not installable here (rasterio bundles GDAL without gdal_pansharpen),
    so the check case is computed by hand.
    """
    ms = np.array([[[100.0, 0.0, 37.0]], [[50.0, 0.0, 81.0]]])  # 2 bands, 1 x 3 pixels
    pan = np.array([[120.0, 55.0, 64.0]])
    w = [0.25, 0.75]
    # pixel 0: pseudo = 25 + 37.5 = 62.5, factor = 1.92 -> 192, 96
    # pixel 1: pseudo = 0 -> factor 0 -> 0, 0
    # pixel 2: pseudo = 9.25 + 60.75 = 70, factor = 64/70
    expect = np.array([[[192.0, 0.0, 37.0 * 64 / 70]], [[96.0, 0.0, 81.0 * 64 / 70]]])
    np.testing.assert_allclose(classical.brovey_formula(ms, pan, w), expect, atol=1e-6, rtol=0)


def test_landsat_grid_phase() -> None:
    """The sample's pan grid starts half a pan pixel before the MS grid: MS centres on pan pixels 1, 3, 5, ..."""
    pan = Affine(15.0, 0.0, 452467.5, 0.0, -15.0, 3408652.5)
    ms = Affine(30.0, 0.0, 452475.0, 0.0, -30.0, 3408645.0)
    assert grid_relation(pan, ms) == (2, (1.0, 1.0))
    assert grid_relation(Affine(15.0, 0, 0, 0, -15.0, 0), Affine(30.0, 0, 0, 0, -30.0, 0)) == (2, (0.5, 0.5))
    assert decimated_shape((1207, 1254), 2, (1.0, 1.0)) == (603, 627)
    with pytest.raises(GeometryError, match="integer ratio"):
        grid_relation(pan, Affine(25.0, 0.0, 452475.0, 0.0, -25.0, 3408645.0))


def test_upsample_puts_coarse_samples_on_their_fine_pixels() -> None:
    x = np.random.default_rng(0).normal(size=(1, 5, 6))
    up = upsample(x, 2, (1.0, 1.0), (11, 12))
    np.testing.assert_allclose(up[:, 1::2, 1::2], x, atol=1e-12)


def _synthetic(seed: int = 0) -> tuple[np.ndarray, classical.Pair]:
    """A smooth 4-band HR scene with edges; pan = a weighted sum; MS = MTF-degraded HR (Landsat phase)."""
    rng = np.random.default_rng(seed)
    h = w = 129
    yy, xx = np.mgrid[0:h, 0:w] / 16.0
    base = np.stack([np.sin(xx * (1 + k * 0.3)) * np.cos(yy * (1.2 - k * 0.2)) for k in range(4)])
    edges = ((xx + yy) % 2 > 1).astype(float)[None] * np.array([0.3, 0.5, 0.4, 0.6])[:, None, None]
    hr = 2.0 + base + edges + rng.normal(0, 0.02, (4, h, w))
    pan = np.tensordot([0.1, 0.3, 0.4, 0.2], hr, axes=1)
    phase = (1.0, 1.0)
    ms = lowpass_decimate(hr, 2, [0.3] * 4, phase, decimated_shape((h, w), 2, phase))
    return hr, classical.Pair(ms=ms, pan=pan, ratio=2, phase=phase, ms_gains=(0.3,) * 4, pan_gain=0.3)


@pytest.mark.parametrize("method", list(classical.METHODS))
def test_each_method_is_wald_consistent_and_sharpens(method: str) -> None:
    """Degrading the product by the MS MTF gives back the MS band means (Wald's consistency property)."""
    hr, pair = _synthetic()
    fused = classical.pansharpen(method, pair)
    assert fused.shape == hr.shape
    back = lowpass_decimate(fused, 2, pair.ms_gains, pair.phase, pair.ms.shape[1:])
    np.testing.assert_allclose(back.mean(axis=(1, 2)), pair.ms.mean(axis=(1, 2)), rtol=0.01)
    if method != "gihs":  # GIHS's equal weights do not fit this pan; the others must beat plain interpolation
        assert metrics_bands.ergas(fused, hr, scale=2) < metrics_bands.ergas(pair.ms_up(), hr, scale=2)


def test_fit_on_scene_apply_on_strips_is_seamless() -> None:
    """Global parameters + local operations: a strip with a halo gives the whole-scene result."""
    _, pair = _synthetic(1)
    for method in classical.METHODS:
        params = classical.fit(method, pair)
        whole = classical.apply(method, pair, params)
        # MS rows 10..49 with their pan rows 21..99, MS halo of 10 rows each side
        strip = classical.Pair(ms=pair.ms[:, 10:50], pan=pair.pan[20:100], ratio=2, phase=(1.0, 1.0),
                               ms_gains=pair.ms_gains, pan_gain=pair.pan_gain)
        part = classical.apply(method, strip, params)
        np.testing.assert_allclose(part[:, 20:60], whole[:, 40:80], atol=1e-9, err_msg=method)

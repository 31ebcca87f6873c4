"""Tests of medsat_sr.baselines: the one place of the cubic B-spline and GDAL baselines."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from medsat_sr.baselines import BASELINES, cubic_bspline, gdal_resize, resample_volume, upsample
from medsat_sr.errors import ConfigError


def test_cubic_bspline_equals_resample_volume_on_whole_factors() -> None:
    x = np.random.default_rng(0).random((2, 10, 12, 8)).astype(np.float32)
    a = cubic_bspline(torch.from_numpy(x), (2, 1, 3), (20, 12, 24)).numpy()
    b = resample_volume(x, (20, 12, 24), "cubic")
    np.testing.assert_allclose(a, b, atol=1e-5)
    z = np.stack([ndimage.zoom(c, (2, 1, 3), order=3, grid_mode=True, mode="grid-mirror") for c in x])
    np.testing.assert_allclose(a, z, atol=1e-5)


def test_cubic_bspline_reads_the_degradation_positions_for_fractional_factors() -> None:
    x = np.random.default_rng(1).random((1, 10)).astype(np.float64)
    out = cubic_bspline(torch.from_numpy(x), (2.4,), (24,)).numpy()
    pos = (np.arange(24) + 0.5) / 2.4 - 0.5
    exp = ndimage.map_coordinates(x[0], pos[None], order=3, mode="reflect")
    np.testing.assert_allclose(out[0], exp, atol=1e-5)


def test_upsample_dispatches_by_profile_name() -> None:
    x = torch.from_numpy(np.random.default_rng(2).random((3, 16, 20)).astype(np.float32))
    assert set(BASELINES) == {"bspline", "gdal_cubic", "gdal_lanczos"}
    assert torch.equal(upsample("gdal_cubic", x, (2, 2), (32, 40)), gdal_resize(x, (32, 40), "cubic"))
    assert torch.equal(upsample("gdal_lanczos", x, (2, 2), (32, 40)), gdal_resize(x, (32, 40), "lanczos"))
    assert torch.equal(upsample("bspline", x, (2, 2), (32, 40)), cubic_bspline(x, (2, 2), (32, 40)))
    # a constant stays constant away from nothing: GDAL cubic keeps the mean of smooth data
    flat = torch.full((1, 8, 8), 7.0)
    assert torch.allclose(upsample("gdal_cubic", flat, (2, 2), (16, 16)), torch.full((1, 16, 16), 7.0), atol=1e-4)
    with pytest.raises(ConfigError, match="unknown baseline"):
        upsample("bicubic", x, (2, 2), (32, 40))
    with pytest.raises(ConfigError, match="rasters"):
        upsample("gdal_cubic", x[None], (2, 2, 2), (6, 32, 40))

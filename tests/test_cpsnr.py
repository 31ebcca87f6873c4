"""cPSNR and cSSIM as the PROBA-V super-resolution challenge defines them.

Definition (Märtens, Izzo, Krzic, Cox, "Super-resolution of PROBA-V images
using convolutional neural networks", Astrodynamics 3, 2019, section 3, and the
Kelvins challenge scoring page): the SR image is cropped by 3 pixels on each
border; for every integer shift (u, v) with 0 <= u, v <= 6 (all 49) the HR
window HR[u:u+H-6, v:v+W-6] is compared on its clear pixels only, after the
brightness bias b = mean(HR_uv - SR_crop) is added to the SR;
cMSE = mean((HR_uv - (SR_crop + b))**2), cPSNR = max over shifts of
-10 log10(cMSE) (images normalised to [0, 1], so data_range 1).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from medsat_sr.errors import ConfigError
from medsat_sr.metrics_shift import cpsnr, cssim


def _hand_case() -> tuple[np.ndarray, np.ndarray]:
    """8x8 HR: a 0/10 checkerboard except HR[6:8, 6:8] = [[1, 1], [1, 3]]; SR all zero.

    The SR crop is 2x2; only the corner shift (6, 6), which a 36-shift copy
    (``range(6)``) never visits, lacks the checkerboard: d = [1, 1, 1, 3],
    b = 1.5, cMSE = (3 * 0.25 + 2.25) / 4 = 0.75. Every other window has
    cMSE >= 16.5.
    """
    hr = (np.indices((8, 8)).sum(axis=0) % 2) * 10.0
    hr[6:8, 6:8] = [[1.0, 1.0], [1.0, 3.0]]
    return np.zeros((8, 8)), hr


def test_hand_case_corner_shift_and_bias() -> None:
    sr, hr = _hand_case()
    assert cpsnr(sr, hr, data_range=10.0) == pytest.approx(10 * math.log10(100 / 0.75), abs=1e-9)


def test_hand_case_clear_pixels_only() -> None:
    sr, hr = _hand_case()
    clear = np.ones((8, 8), dtype=bool)
    clear[7, 7] = False  # the only off-bias pixel of the best window is clouded: a perfect match up to the bias
    assert cpsnr(sr, hr, data_range=10.0, clear=clear) == math.inf


def _kelvins_reference(sr: np.ndarray, hr: np.ndarray, clear: np.ndarray) -> float:
    """The challenge's scoring loop, transcribed (49 shifts, nanmean over clear pixels)."""
    crop = 6
    hr = hr.astype(np.float64)
    sr_ = sr[crop // 2 : -crop // 2, crop // 2 : -crop // 2]
    mx, my = np.array(hr.shape) - crop
    c = np.where(clear, 1.0, np.nan)
    best = -np.inf
    for i in range(crop + 1):
        for j in range(crop + 1):
            diff = (hr[i : i + mx, j : j + my] - sr_) * c[i : i + mx, j : j + my]
            b = np.nanmean(diff)
            best = max(best, -10 * np.log10(np.nanmean((diff - b) ** 2)))
    return float(best)


def test_matches_the_challenge_loop_on_random_data() -> None:
    rng = np.random.default_rng(3)
    hr = rng.random((40, 36))
    sr = np.roll(hr, (2, -1), axis=(0, 1)) + rng.normal(0, 0.05, hr.shape) + 0.2
    clear = rng.random(hr.shape) > 0.3
    assert cpsnr(sr, hr, data_range=1.0, clear=clear) == pytest.approx(_kelvins_reference(sr, hr, clear), abs=1e-9)


def test_bias_and_small_shifts_are_forgiven_larger_are_not() -> None:
    rng = np.random.default_rng(0)
    hr = rng.random((30, 30))
    shifted = np.roll(hr, (3, -3), axis=(0, 1)) + 0.3  # within the 7x7 window: exact up to the bias
    assert cpsnr(shifted, hr, data_range=1.0) > 200
    far = np.roll(hr, (4, 0), axis=(0, 1))
    assert cpsnr(far, hr, data_range=1.0) < 20


def test_multiband_shares_the_shift_with_a_bias_per_band() -> None:
    rng = np.random.default_rng(1)
    hr = rng.random((2, 24, 24))
    sr = np.roll(hr, (1, 1), axis=(1, 2)) + np.array([0.1, -0.2])[:, None, None]
    assert cpsnr(sr, hr, data_range=1.0) > 200


def test_cssim_is_one_up_to_shift_and_bias_and_lower_with_noise() -> None:
    rng = np.random.default_rng(2)
    hr = rng.random((40, 40))
    assert cssim(np.roll(hr, (-2, 1), axis=(0, 1)) + 0.1, hr, data_range=1.0) == pytest.approx(1.0, abs=1e-9)
    noisy = hr + rng.normal(0, 0.2, hr.shape)
    assert cssim(noisy, hr, data_range=1.0) < 0.9


def test_refuses_bad_inputs() -> None:
    with pytest.raises(ConfigError, match="data_range"):
        cpsnr(np.zeros((10, 10)), np.zeros((10, 10)))
    with pytest.raises(ConfigError, match="too small"):
        cpsnr(np.zeros((6, 6)), np.zeros((6, 6)), data_range=1.0)
    with pytest.raises(ConfigError, match="clear"):
        cpsnr(np.zeros((10, 10)), np.zeros((10, 10)), data_range=1.0, clear=np.ones((10, 10)))
    with pytest.raises(ConfigError, match="no clear pixel"):
        cpsnr(np.zeros((10, 10)), np.zeros((10, 10)), data_range=1.0, clear=np.zeros((10, 10), dtype=bool))

"""Tests of medsat_sr.metrics against scikit-image and hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy import ndimage as ndi
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from medsat_sr.errors import ConfigError
from medsat_sr.metrics import mae, mse, psnr, rmse, ssim, ssim_slices
from medsat_sr.metrics_bands import ergas, per_band, sam

SK_SSIM = {"gaussian_weights": True, "sigma": 1.5, "use_sample_covariance": False}


def pair(shape, seed=0, noise=0.1):
    """A smooth-ish reference in [0, 1] and a noisy estimate of it (float64)."""
    rng = np.random.default_rng(seed)
    ref = ndi.gaussian_filter(rng.random(shape), 1.0)
    ref = (ref - ref.min()) / (ref.max() - ref.min())
    return ref + noise * rng.standard_normal(shape), ref


# --------------------------------------------------------------------------
# MSE / MAE / RMSE / PSNR
# --------------------------------------------------------------------------


def test_mse_mae_rmse_by_hand():
    ref = np.array([[1.0, 2.0], [3.0, 4.0]])
    sr = np.array([[1.5, 2.0], [1.0, 5.0]])
    # errors: 0.5, 0, -2, 1 -> squares 0.25, 0, 4, 1
    assert mse(sr, ref) == pytest.approx(5.25 / 4, abs=1e-15)
    assert mae(sr, ref) == pytest.approx(3.5 / 4, abs=1e-15)
    assert rmse(sr, ref) == pytest.approx(math.sqrt(5.25 / 4), abs=1e-15)
    mask = np.array([[True, True], [False, True]])
    assert mse(sr, ref, mask=mask) == pytest.approx(1.25 / 3, abs=1e-15)
    assert mae(sr, ref, mask=mask) == pytest.approx(1.5 / 3, abs=1e-15)
    # psnr with data_range 4: 10 log10(16 / 1.3125)
    assert psnr(sr, ref, data_range=4.0) == pytest.approx(10 * math.log10(16 / 1.3125), abs=1e-12)
    assert psnr(sr, ref, data_range=4.0, mask=mask) == pytest.approx(10 * math.log10(16 * 3 / 1.25), abs=1e-12)


@pytest.mark.parametrize("shape", [(1, 31, 29), (3, 16, 17), (1, 12, 13, 14)])
def test_psnr_matches_skimage(shape):
    sr, ref = pair(shape)
    assert psnr(sr, ref, data_range=1.0) == pytest.approx(
        peak_signal_noise_ratio(ref, sr, data_range=1.0), abs=1e-12
    )
    assert psnr(sr, ref, data_range=2.5) == pytest.approx(peak_signal_noise_ratio(ref, sr, data_range=2.5), abs=1e-12)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_integer_default_data_range_is_dtype_range(dtype):
    rng = np.random.default_rng(1)
    hi = np.iinfo(dtype).max
    ref = rng.integers(0, hi, size=(1, 24, 24), endpoint=True).astype(dtype)
    sr = np.clip(ref.astype(np.int64) + rng.integers(-20, 21, size=ref.shape), 0, hi).astype(dtype)
    assert psnr(sr, ref) == pytest.approx(peak_signal_noise_ratio(ref, sr), abs=1e-12)
    assert psnr(sr, ref) == pytest.approx(psnr(sr, ref, data_range=float(hi)), abs=1e-12)
    assert ssim(sr, ref) == pytest.approx(
        structural_similarity(ref[0], sr[0], data_range=float(hi), **SK_SSIM), abs=1e-9
    )


def test_int16_default_range_and_mixed_integer_dtypes():
    ref = np.arange(-50, 50, dtype=np.int16).reshape(1, 10, 10)
    sr = ref + np.int16(3)
    # full int16 range: 65535
    assert psnr(sr, ref) == pytest.approx(10 * math.log10(65535.0**2 / 9.0), abs=1e-12)
    with pytest.raises(ConfigError, match="different integer dtypes"):
        psnr(sr.astype(np.int32), ref)


def test_identical_images_give_infinite_psnr_and_unit_ssim():
    _, ref = pair((2, 20, 20))
    assert psnr(ref, ref, data_range=1.0) == math.inf
    assert ssim(ref, ref, data_range=1.0) == pytest.approx(1.0, abs=1e-12)


@settings(max_examples=30, deadline=None)
@given(
    x=arrays(np.float64, (2, 6, 5), elements=st.floats(-100, 100)),
    y=arrays(np.float64, (2, 6, 5), elements=st.floats(-100, 100)),
    a=st.floats(0.01, 100),
)
def test_error_metrics_properties(x, y, a):
    assert mse(x, y) >= 0 and mse(x, y) == pytest.approx(mse(y, x))
    assert mae(x, y) <= rmse(x, y) + 1e-9  # Jensen / power mean inequality
    if mse(x, y) > 0:
        # PSNR is invariant to a common rescaling of the data and its range
        assert psnr(a * x, a * y, data_range=3.0 * a) == pytest.approx(psnr(x, y, data_range=3.0), abs=1e-6)


# --------------------------------------------------------------------------
# SSIM
# --------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(1, 40, 37), (3, 32, 29), (1, 11, 11)])
@pytest.mark.parametrize("data_range", [1.0, 3.0])
def test_ssim_2d_matches_skimage(shape, data_range):
    sr, ref = pair(shape, seed=shape[0])
    expected = structural_similarity(ref, sr, channel_axis=0, data_range=data_range, **SK_SSIM)
    assert ssim(sr, ref, data_range=data_range) == pytest.approx(expected, abs=1e-6)
    # a plain (H, W) image is 2D too
    assert ssim(sr[0], ref[0], data_range=data_range) == pytest.approx(
        structural_similarity(ref[0], sr[0], data_range=data_range, **SK_SSIM), abs=1e-6
    )


@pytest.mark.parametrize("shape", [(1, 20, 23, 17), (2, 13, 16, 12)])
def test_ssim_3d_matches_skimage(shape):
    sr, ref = pair(shape, seed=7, noise=0.2)
    expected = np.mean([structural_similarity(ref[c], sr[c], data_range=1.0, **SK_SSIM) for c in range(shape[0])])
    assert ssim(sr, ref, data_range=1.0) == pytest.approx(expected, abs=1e-6)
    # an unbatched (X, Y, Z) volume needs spatial_dims=3; by default it is 2D per channel
    assert ssim(sr[0], ref[0], data_range=1.0, spatial_dims=3) == pytest.approx(
        structural_similarity(ref[0], sr[0], data_range=1.0, **SK_SSIM), abs=1e-6
    )
    assert ssim(sr[0], ref[0], data_range=1.0) == pytest.approx(
        structural_similarity(ref[0], sr[0], channel_axis=0, data_range=1.0, **SK_SSIM), abs=1e-6
    )


def test_ssim_masked_is_mean_of_map_over_valid_pixels():
    sr, ref = pair((1, 40, 36), seed=3)
    _, smap = structural_similarity(ref[0], sr[0], data_range=1.0, full=True, **SK_SSIM)
    mask = np.zeros((40, 36), dtype=bool)
    mask[8:30, 3:20] = True
    pad = 5
    inner = np.zeros_like(mask)
    inner[pad:-pad, pad:-pad] = True
    expected = smap[mask & inner].mean()
    assert ssim(sr, ref, data_range=1.0, mask=mask) == pytest.approx(expected, abs=1e-9)
    assert ssim(sr, ref, data_range=1.0, mask=np.ones_like(mask)) == pytest.approx(
        ssim(sr, ref, data_range=1.0), abs=1e-12
    )
    with pytest.raises(ConfigError, match="evaluation region"):
        ssim(sr, ref, data_range=1.0, mask=np.pad(np.ones((2, 2), bool), ((0, 38), (0, 34))))


def test_ssim_slices_is_mean_of_per_slice_2d_ssim():
    sr, ref = pair((2, 14, 15, 16), seed=4, noise=0.15)
    for axis in (0, 1, 2, -1):
        ax = axis % 3 + 1
        per = []
        for i in range(ref.shape[ax]):
            a = np.take(ref, i, axis=ax)
            b = np.take(sr, i, axis=ax)
            per.append(structural_similarity(a, b, channel_axis=0, data_range=1.0, **SK_SSIM))
        got = ssim_slices(sr, ref, axis=axis, data_range=1.0, reduction="none")
        np.testing.assert_allclose(got, per, atol=1e-6)
        assert ssim_slices(sr, ref, axis=axis, data_range=1.0) == pytest.approx(np.mean(per), abs=1e-6)


def test_ssim_slices_mask_skips_empty_slices():
    sr, ref = pair((1, 12, 13, 6), seed=5)
    mask = np.ones(ref.shape, dtype=bool)
    mask[..., 2] = False
    per = ssim_slices(sr, ref, axis=-1, data_range=1.0, mask=mask, reduction="none")
    assert np.isnan(per[2]) and np.all(np.isfinite(np.delete(per, 2)))
    full = ssim_slices(sr, ref, axis=-1, data_range=1.0, reduction="none")
    assert ssim_slices(sr, ref, axis=-1, data_range=1.0, mask=mask) == pytest.approx(np.delete(full, 2).mean())


def test_ssim_large_volume_is_fast_enough():
    import time

    sr, ref = pair((1, 64, 64, 64), seed=9)
    t0 = time.perf_counter()
    ssim(sr, ref, data_range=1.0)
    assert time.perf_counter() - t0 < 5.0  # ~0.05 s; a 200^3 volume takes ~2 s


def test_ssim_validation():
    sr, ref = pair((1, 8, 20))
    with pytest.raises(ConfigError, match=">= 11"):
        ssim(sr, ref, data_range=1.0)
    sr, ref = pair((1, 16, 16))
    with pytest.raises(ConfigError, match="spatial_dims"):
        ssim(sr[None, None], ref[None, None], data_range=1.0)
    with pytest.raises(ConfigError, match="spatial_dims must be 2 or 3"):
        ssim(sr, ref, data_range=1.0, spatial_dims=4)
    with pytest.raises(ConfigError, match="axis"):
        ssim_slices(np.zeros((1, 12, 12, 12)), np.zeros((1, 12, 12, 12)), axis=3, data_range=1.0)
    with pytest.raises(ConfigError, match="reduction"):
        ssim_slices(np.zeros((1, 12, 12, 12)), np.zeros((1, 12, 12, 12)), axis=0, data_range=1.0, reduction="sum")
    with pytest.raises(ConfigError, match="volume"):
        ssim_slices(sr[0], ref[0], axis=0, data_range=1.0)


# --------------------------------------------------------------------------
# input handling: torch, data_range, shapes, masks
# --------------------------------------------------------------------------


def test_torch_and_metatensor_inputs_equal_numpy():
    from monai.data import MetaTensor

    sr, ref = pair((2, 16, 18), seed=11)
    t_sr = torch.from_numpy(sr).float().requires_grad_(True)
    t_ref = MetaTensor(torch.from_numpy(ref).float())
    sr32 = t_sr.detach().numpy().astype(np.float64)
    ref32 = ref.astype(np.float32).astype(np.float64)
    assert psnr(t_sr, t_ref, data_range=1.0) == pytest.approx(psnr(sr32, ref32, data_range=1.0), abs=1e-12)
    assert ssim(t_sr, t_ref, data_range=1.0) == pytest.approx(ssim(sr32, ref32, data_range=1.0), abs=1e-12)
    assert sam(t_sr, t_ref) == pytest.approx(sam(sr32, ref32), abs=1e-12)
    assert mae(t_sr.to(torch.bfloat16), t_ref) == pytest.approx(mae(sr32, ref32), abs=1e-2)
    m = torch.ones(16, 18, dtype=torch.bool)
    assert mse(t_sr, t_ref, mask=m) == pytest.approx(mse(sr32, ref32), abs=1e-12)


@pytest.mark.parametrize("fn", [psnr, ssim])
def test_float_data_requires_data_range(fn):
    sr, ref = pair((1, 16, 16))
    with pytest.raises(ConfigError, match="data_range is required"):
        fn(sr, ref)
    with pytest.raises(ConfigError, match="data_range is required"):
        fn(sr.astype(np.float32), (ref * 255).astype(np.uint8))
    with pytest.raises(ConfigError, match="data_range is required"):
        fn(torch.from_numpy(sr), torch.from_numpy(ref))
    for bad in (0.0, -1.0, float("nan"), float("inf"), "1", True):
        with pytest.raises(ConfigError, match="data_range"):
            fn(sr, ref, data_range=bad)
    with pytest.raises(ConfigError, match="data_range is required"):
        ssim_slices(np.zeros((1, 12, 12, 12)), np.zeros((1, 12, 12, 12)), axis=0)


@pytest.mark.parametrize(
    "call",
    [
        lambda a, b: psnr(a, b, data_range=1.0),
        lambda a, b: ssim(a, b, data_range=1.0),
        lambda a, b: ssim_slices(a, b, axis=0, data_range=1.0),
        mse,
        mae,
        rmse,
        sam,
        lambda a, b: ergas(a, b, scale=2),
    ],
)
def test_mismatched_shapes_name_both(call):
    a = np.ones((2, 12, 13, 14))
    b = np.ones((2, 12, 13, 15))
    with pytest.raises(ConfigError, match=r"sr \(2, 12, 13, 14\) and ref \(2, 12, 13, 15\)"):
        call(a, b)


def test_mask_validation():
    sr, ref = pair((2, 12, 12))
    with pytest.raises(ConfigError, match="boolean"):
        mse(sr, ref, mask=np.ones((12, 12)))
    with pytest.raises(ConfigError, match="broadcast"):
        mse(sr, ref, mask=np.ones((12, 11), bool))
    with pytest.raises(ConfigError, match="no pixels"):
        mse(sr, ref, mask=np.zeros((12, 12), bool))
    with pytest.raises(ConfigError, match="broadcast"):
        sam(sr, ref, mask=np.ones((2, 12, 12), bool))


# --------------------------------------------------------------------------
# SAM
# --------------------------------------------------------------------------


def test_sam_parallel_orthogonal_and_45_degrees():
    ref = np.array([[[1.0, 0.0, 3.0]], [[0.0, 1.0, 4.0]]])  # (2 bands, 1, 3 pixels)
    assert sam(2.5 * ref, ref) == 0.0  # parallel: exactly 0, not arccos round-off
    orth = np.array([[[0.0, 1.0, -4.0]], [[1.0, 0.0, 3.0]]])
    assert sam(orth, ref) == pytest.approx(90.0, abs=1e-12)
    diag = np.array([[[1.0]], [[1.0]]])
    assert sam(diag, np.array([[[1.0]], [[0.0]]])) == pytest.approx(45.0, abs=1e-12)
    assert sam(-ref, ref) == pytest.approx(180.0, abs=1e-12)


def test_sam_excludes_zero_vectors_and_masked_pixels():
    ref = np.array([[[1.0, 0.0, 1.0, 1.0]], [[0.0, 0.0, 0.0, 0.0]]])
    sr = np.array([[[1.0, 5.0, 0.0, 1.0]], [[0.0, 5.0, 0.0, 1.0]]])
    # pixel 1: ref zero; pixel 2: sr zero -> excluded; angles 0 and 45 -> mean 22.5
    assert sam(sr, ref) == pytest.approx(22.5, abs=1e-12)
    mask = np.array([[True, True, True, False]])
    assert sam(sr, ref, mask=mask) == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ConfigError, match="non-zero"):
        sam(sr, ref, mask=np.array([False, True, True, False]))
    with pytest.raises(ConfigError, match="at least 2"):
        sam(sr[:1], ref[:1])


@settings(max_examples=30, deadline=None)
@given(
    v=arrays(np.float64, (4, 3, 3), elements=st.floats(0.1, 10)),
    s=arrays(np.float64, (3, 3), elements=st.floats(0.01, 100)),
)
def test_sam_invariant_to_per_pixel_scaling(v, s):
    assert sam(v * s, v) == pytest.approx(0.0, abs=1e-6)


# --------------------------------------------------------------------------
# ERGAS
# --------------------------------------------------------------------------

# Hand case: 2 bands of 2x2 pixels, super-resolution factor 2 (e.g. 20 m -> 10 m).
ERGAS_REF = np.array([[[10.0, 20.0], [30.0, 40.0]], [[5.0, 5.0], [5.0, 5.0]]])
ERGAS_SR = np.array([[[12.0, 18.0], [30.0, 44.0]], [[6.0, 4.0], [5.0, 5.0]]])
# band 0: errors 2, -2, 0, 4 -> MSE = 24/4 = 6;   reference mean mu_0 = 25
# band 1: errors 1, -1, 0, 0 -> MSE = 2/4 = 0.5;  reference mean mu_1 = 5
# h/l = 10 m / 20 m = 0.5
# ERGAS = 100 * 0.5 * sqrt((6/625 + 0.5/25) / 2) = 50 * sqrt(0.0148) = 6.082762530298219
ERGAS_HAND = 6.082762530298219


def test_ergas_hand_computed():
    assert 50 * math.sqrt(0.0148) == pytest.approx(ERGAS_HAND, rel=1e-15)
    assert ergas(ERGAS_SR, ERGAS_REF, scale=2) == pytest.approx(ERGAS_HAND, rel=1e-12)
    assert ergas(torch.from_numpy(ERGAS_SR), torch.from_numpy(ERGAS_REF), scale=2.0) == pytest.approx(
        ERGAS_HAND, rel=1e-12
    )
    # a different factor scales linearly with h/l = 1/scale
    assert ergas(ERGAS_SR, ERGAS_REF, scale=4) == pytest.approx(ERGAS_HAND / 2, rel=1e-12)
    assert ergas(ERGAS_REF, ERGAS_REF, scale=2) == 0.0


def test_ergas_hand_case_catches_planted_convention_errors():
    """Each common convention error gives a value the hand test above would reject."""
    mse_k = np.array([6.0, 0.5])
    mu_ref = ERGAS_REF.reshape(2, -1).mean(axis=1)
    mu_sr = ERGAS_SR.reshape(2, -1).mean(axis=1)
    wrong = {
        "l/h instead of h/l": 100 * 2.0 * math.sqrt(np.mean(mse_k / mu_ref**2)),
        "mean of SR instead of reference": 100 * 0.5 * math.sqrt(np.mean(mse_k / mu_sr**2)),
        "RMSE not squared": 100 * 0.5 * math.sqrt(np.mean(np.sqrt(mse_k) / mu_ref**2)),
        "mu not squared": 100 * 0.5 * math.sqrt(np.mean(mse_k / mu_ref)),
        "no square root": 100 * 0.5 * np.mean(mse_k / mu_ref**2),
        "mean over bands outside the root": 100 * 0.5 * np.mean(np.sqrt(mse_k) / mu_ref),
    }
    for name, value in wrong.items():
        # relative tolerance of the hand test is 1e-12; every wrong convention misses by > 1 %
        assert abs(value - ERGAS_HAND) / ERGAS_HAND > 1e-2, name
    got = ergas(ERGAS_SR, ERGAS_REF, scale=2)
    assert all(abs(got - v) / v > 1e-2 for v in wrong.values())


def test_ergas_mask_and_validation():
    mask = np.array([[True, True], [True, False]])
    # band 0 errors 2, -2, 0 -> MSE 8/3, mu 20; band 1 errors 1, -1, 0 -> MSE 2/3, mu 5
    expected = 50 * math.sqrt(((8 / 3) / 400 + (2 / 3) / 25) / 2)
    assert ergas(ERGAS_SR, ERGAS_REF, scale=2, mask=mask) == pytest.approx(expected, rel=1e-12)
    assert ergas(ERGAS_SR, ERGAS_REF, scale=2, mask=mask[None]) == pytest.approx(expected, rel=1e-12)
    with pytest.raises(TypeError):
        ergas(ERGAS_SR, ERGAS_REF)  # scale is required
    with pytest.raises(ConfigError, match="l/h >= 1"):
        ergas(ERGAS_SR, ERGAS_REF, scale=0.5)  # h/l passed by mistake
    with pytest.raises(ConfigError, match="scale"):
        ergas(ERGAS_SR, ERGAS_REF, scale=float("inf"))
    zero = ERGAS_REF.copy()
    zero[1] = 0.0
    with pytest.raises(ConfigError, match=r"band\(s\) \[1\]"):
        ergas(ERGAS_SR, zero, scale=2)


# --------------------------------------------------------------------------
# per-band helper
# --------------------------------------------------------------------------


def test_per_band_psnr_rmse_ssim():
    sr, ref = pair((3, 20, 22), seed=12)
    vals = per_band(psnr, sr, ref, data_range=1.0)
    assert vals == [pytest.approx(psnr(sr[k], ref[k], data_range=1.0)) for k in range(3)]
    assert all(isinstance(v, float) for v in vals)
    ranges = [1.0, 2.0, 4.0]
    vals = per_band(psnr, sr, ref, data_range=ranges)
    assert vals == [pytest.approx(psnr(sr[k], ref[k], data_range=ranges[k])) for k in range(3)]
    assert per_band(rmse, sr, ref) == [pytest.approx(rmse(sr[k], ref[k])) for k in range(3)]
    s = per_band(ssim, torch.from_numpy(sr), torch.from_numpy(ref), data_range=1.0)
    assert np.mean(s) == pytest.approx(ssim(sr, ref, data_range=1.0), abs=1e-12)


def test_per_band_masks_and_errors():
    sr, ref = pair((2, 12, 12), seed=13)
    spatial = np.zeros((12, 12), bool)
    spatial[:6] = True
    assert per_band(mse, sr, ref, mask=spatial) == [pytest.approx(mse(sr[k][:6], ref[k][:6])) for k in range(2)]
    banded = np.stack([spatial, ~spatial])
    assert per_band(mse, sr, ref, mask=banded) == [
        pytest.approx(mse(sr[0][:6], ref[0][:6])),
        pytest.approx(mse(sr[1][6:], ref[1][6:])),
    ]
    with pytest.raises(ConfigError, match="3 values but the images have 2 bands"):
        per_band(psnr, sr, ref, data_range=[1.0, 1.0, 1.0])
    with pytest.raises(ConfigError, match="same shape"):
        per_band(mse, sr, ref[:1])

"""Tests of medsat_sr.degrade against the analytic definitions of each model."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from medsat_sr import pair_makers
from medsat_sr import evaluate as evaluate_mod
from medsat_sr import geometry
from medsat_sr.config import load_config
from medsat_sr.degrade import (
    DEGRADATIONS,
    FWHM_PER_SIGMA,
    add_noise,
    band_sigmas,
    decimate,
    degrade,
    describe,
    fwhm_to_sigma,
    gaussian_kernel1d,
    kspace_truncate,
    mtf_to_sigma,
    output_size,
    psf_decimate,
    recipe,
    sigma_to_fwhm,
    sigma_to_mtf,
    slice_profile,
    slice_thickness,
)
from medsat_sr.domains import load_domain
from medsat_sr.errors import ConfigError
from medsat_sr.image import make_volume

F64 = torch.float64


def measured_fwhm(y: np.ndarray) -> float:
    """FWHM of a single-peaked sampled response, by linear interpolation of the half-max crossings."""
    y = np.asarray(y, dtype=np.float64)
    i = int(np.argmax(y))
    half = y[i] / 2.0
    left = i
    while y[left] > half:
        left -= 1
    right = i
    while y[right] > half:
        right += 1
    x_left = left + (half - y[left]) / (y[left + 1] - y[left])
    x_right = (right - 1) + (y[right - 1] - half) / (y[right - 1] - y[right])
    return x_right - x_left


def delta(n: int, at: int, *, channels: int = 1) -> torch.Tensor:
    x = torch.zeros(channels, n, dtype=F64)
    x[:, at] = 1.0
    return x


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------


def test_fwhm_sigma_conversions():
    assert FWHM_PER_SIGMA == pytest.approx(2.354820045, rel=1e-9)
    assert fwhm_to_sigma(2.354820045) == pytest.approx(1.0, rel=1e-9)
    assert sigma_to_fwhm(fwhm_to_sigma(3.7)) == pytest.approx(3.7, rel=1e-12)
    with pytest.raises(ConfigError):
        fwhm_to_sigma(-1.0)
    with pytest.raises(ConfigError):
        sigma_to_fwhm(float("nan"))


@pytest.mark.parametrize("sigma", [0.0, 0.7, 1.0, 2.5, 6.0])
def test_gaussian_kernel1d_normalised_symmetric(sigma):
    k = gaussian_kernel1d(sigma)
    assert k.dtype == F64
    assert k.numel() == 2 * math.ceil(4 * sigma) + 1
    assert float(k.sum()) == pytest.approx(1.0, abs=1e-12)
    assert torch.allclose(k, k.flip(0))
    if sigma >= 1.0:  # variance of the sampled Gaussian equals sigma^2 (Poisson summation)
        x = torch.arange(k.numel(), dtype=F64) - k.numel() // 2
        assert float((k * x**2).sum()) == pytest.approx(sigma**2, rel=1e-3)


def test_gaussian_kernel1d_radius_and_errors():
    assert gaussian_kernel1d(1.0, 2).numel() == 5
    assert gaussian_kernel1d(0.0, 3).tolist() == [0, 0, 0, 1, 0, 0, 0]
    with pytest.raises(ConfigError, match="sigma"):
        gaussian_kernel1d(-0.5)
    with pytest.raises(ConfigError, match="radius"):
        gaussian_kernel1d(1.0, -1)


@pytest.mark.parametrize("factor", [2, 3, 4])
@pytest.mark.parametrize("gain", [0.2, 0.3, 0.5])
def test_mtf_to_sigma_kernel_has_gain_at_low_res_nyquist(factor, gain):
    sigma = mtf_to_sigma(gain, factor)
    assert sigma == pytest.approx(factor / math.pi * math.sqrt(-2 * math.log(gain)), rel=1e-12)
    assert sigma_to_mtf(sigma, factor) == pytest.approx(gain, rel=1e-12)
    # the discrete kernel's frequency response at nu = 1 / (2 factor) cycles per high-res pixel
    k = gaussian_kernel1d(sigma, radius=40)
    m = torch.arange(-40, 41, dtype=F64)
    nu = 1.0 / (2 * factor)
    response = float((k * torch.cos(2 * math.pi * m * nu)).sum())
    # sampling the PSF aliases its MTF: DTFT = sum_q MTF(nu - q) / sum_q MTF(q) (Poisson summation)
    q = np.arange(-5, 6)
    aliased = np.exp(-2 * np.pi**2 * sigma**2 * (nu - q) ** 2).sum() / np.exp(-2 * np.pi**2 * sigma**2 * q**2).sum()
    assert response == pytest.approx(aliased, abs=1e-12)
    assert response == pytest.approx(gain, abs=3e-3)  # aliasing is small for factor >= 2


def test_mtf_to_sigma_validation():
    for bad in (0.0, 1.0, 1.5, -0.1):
        with pytest.raises(ConfigError, match="mtf_nyquist"):
            mtf_to_sigma(bad, 2)
    with pytest.raises(ConfigError, match="factor"):
        mtf_to_sigma(0.3, 0.5)


@given(n=st.integers(1, 400), f=st.floats(1.0, 6.0))
@example(n=231, f=4.4)  # 231 / 4.4 = 52.4999..., 231 * (1 / 4.4) = 52.5000...: both must round to 53
def test_output_size_matches_geometry(n, f):
    assert output_size(n, f) == geometry.scaled_shape((n,), 1.0 / f)[0]


# --------------------------------------------------------------------------
# slice profile
# --------------------------------------------------------------------------


@pytest.mark.parametrize("thickness", [1.0, 2.5, 3.7, 5.0])
@pytest.mark.parametrize("profile", ["gaussian", "rect"])
def test_slice_profile_fwhm_of_delta_equals_thickness(thickness, profile):
    # fine input grid (0.1 mm) so the response is resolved: FWHM in mm == thickness
    x = delta(401, 200)
    y = slice_profile(x, -1, thickness=thickness, spacing=0.1, in_spacing=0.1, profile=profile)
    assert y.shape == x.shape
    assert measured_fwhm(y[0].numpy()) * 0.1 == pytest.approx(thickness, rel=2e-3)


@pytest.mark.parametrize("thickness,spacing", [(2.5, 2.5), (3.0, 2.5), (2.0, 3.0), (4.0, 4.0)])
def test_slice_profile_response_at_fractional_positions_is_the_gaussian(thickness, spacing):
    # the line spread function, traced by moving a delta under the (fractional) slice centres
    sigma = fwhm_to_sigma(thickness)
    offsets, values = [], []
    for i0 in range(60, 140):
        y = slice_profile(delta(200, i0), -1, thickness=thickness, spacing=spacing)[0].numpy()
        p = (np.arange(y.size) + 0.5) * spacing - 0.5
        offsets.append(p - i0)
        values.append(y)
    d = np.concatenate(offsets)
    v = np.concatenate(values)
    expected = np.exp(-0.5 * (d / sigma) ** 2) / (math.sqrt(2 * math.pi) * sigma)
    np.testing.assert_allclose(v, expected, atol=2e-3 * expected.max())


@pytest.mark.parametrize("profile", ["gaussian", "rect"])
@pytest.mark.parametrize("thickness", [1.5, 3.0, 4.2])
def test_slice_profile_blur_preserves_energy(profile, thickness):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 37, generator=g, dtype=F64)  # signal touches the borders too
    y = slice_profile(x, -1, thickness=thickness, spacing=1.0, profile=profile)
    torch.testing.assert_close(y.sum(dim=-1), x.sum(dim=-1), rtol=1e-12, atol=1e-12)
    # a delta anywhere keeps its energy, and a constant stays constant
    for at in (0, 5, 18, 36):
        yd = slice_profile(delta(37, at), -1, thickness=thickness, spacing=1.0, profile=profile)
        assert float(yd.sum()) == pytest.approx(1.0, abs=1e-12)
    c = torch.full((1, 50), 3.25, dtype=F64)
    yc = slice_profile(c, -1, thickness=thickness, spacing=2.5, profile=profile)
    torch.testing.assert_close(yc, torch.full_like(yc, 3.25))


@pytest.mark.parametrize("spacing", [1.5, 2.0, 2.5, 3.0, 4.0])
def test_slice_profile_ramp_pins_half_voxel_convention(spacing):
    # y[j] = value of the ramp at input index (j + 0.5) f - 0.5, away from the borders
    n = 120
    x = (0.5 * torch.arange(n, dtype=F64) + 7.0).reshape(1, n)
    y = slice_profile(x, -1, thickness=spacing, spacing=spacing)[0].numpy()
    assert y.size == {1.5: 80, 2.0: 60, 2.5: 48, 3.0: 40, 4.0: 30}[spacing]
    p = (np.arange(y.size) + 0.5) * spacing - 0.5
    interior = (p > 4 * fwhm_to_sigma(spacing) + 1) & (p < n - 2 - 4 * fwhm_to_sigma(spacing))
    np.testing.assert_allclose(y[interior], 0.5 * p[interior] + 7.0, atol=1e-3)


def test_slice_profile_rect_integer_width_is_block_average():
    x = torch.arange(24, dtype=F64).reshape(1, 24) ** 2
    y = slice_profile(x, -1, thickness=3.0, spacing=3.0, profile="rect")
    torch.testing.assert_close(y, x.reshape(1, 8, 3).mean(-1))


def test_slice_profile_matches_geometry_scale_affine():
    # an anisotropic, oblique voxel grid; degrade axis 2 to 2.5x the spacing
    affine = np.array([[0.9, 0.1, 0.0, -20.0], [0.0, 1.1, 0.2, 5.0], [0.05, 0.0, 1.0, 12.0], [0, 0, 0, 1.0]])
    shape = (6, 5, 80)
    ii, jj, kk = np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")
    world = affine[:3, :3] @ np.stack([ii, jj, kk]).reshape(3, -1) + affine[:3, 3:]
    z_world = torch.from_numpy(world[2].reshape(shape)).unsqueeze(0)  # (1, X, Y, Z): world z, a linear field
    f = 2.5
    lr = slice_profile(z_world, -1, thickness=f * 1.0, spacing=f * 1.0, in_spacing=1.0)
    lr_shape = (6, 5, output_size(80, f))
    assert tuple(lr.shape[1:]) == lr_shape
    aff_lr = geometry.scale_affine(affine, (1.0, 1.0, 1.0 / f))
    i2, j2, k2 = np.meshgrid(*[np.arange(s) for s in lr_shape], indexing="ij")
    world_lr = aff_lr[:3, :3] @ np.stack([i2, j2, k2]).reshape(3, -1) + aff_lr[:3, 3:]
    expected = world_lr[2].reshape(lr_shape)
    np.testing.assert_allclose(lr[0, :, :, 3:-3].numpy(), expected[:, :, 3:-3], atol=1e-3)


@pytest.mark.parametrize(
    "n,spacing,expected",
    [(189, 4.0, 47), (197, 2.5, 79), (10, 4.0, 3), (9, 2.0, 5), (7, 2.8, 3), (3, 5.0, 1), (233, 3.3, 71)],
)
def test_slice_profile_non_integer_factor_shapes(n, spacing, expected):
    # round(n / f), half up (189/4 = 47.25 -> 47, 197/2.5 = 78.8 -> 79, 10/4 = 2.5 -> 3)
    y = slice_profile(torch.rand(1, 4, n), -1, thickness=spacing, spacing=spacing)
    assert y.shape == (1, 4, expected)
    z = psf_decimate(torch.rand(1, 4, n), (1, spacing), method="box")
    assert z.shape == (1, 4, expected)


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 90),
    f=st.floats(1.0, 5.0),
    thick_ratio=st.floats(0.3, 2.0),
    profile=st.sampled_from(["gaussian", "rect"]),
)
def test_slice_profile_shapes_and_mean_property(n, f, thick_ratio, profile):
    x = torch.full((2, 3, n), 1.5, dtype=torch.float32)
    y = slice_profile(x, 2, thickness=f * thick_ratio, spacing=f, profile=profile)
    assert y.shape == (2, 3, output_size(n, f))
    assert y.dtype == torch.float32
    torch.testing.assert_close(y, torch.full_like(y, 1.5))


def test_slice_profile_batched_equals_unbatched_and_axes():
    g = torch.Generator().manual_seed(1)
    x = torch.rand(3, 2, 9, 11, 30, generator=g)
    yb = slice_profile(x, -1, thickness=3.0, spacing=2.5)
    for b in range(3):
        torch.testing.assert_close(yb[b], slice_profile(x[b], -1, thickness=3.0, spacing=2.5))
    # degrading axis 1 of the permuted tensor = permuting the degraded one
    y1 = slice_profile(x[0].movedim(-1, 1), 1, thickness=3.0, spacing=2.5)
    torch.testing.assert_close(y1.movedim(1, -1), yb[0])


def test_slice_profile_gap_and_overlap():
    # spacing > thickness: gaps; each slice still has FWHM = thickness
    x = delta(401, 200)
    thin = slice_profile(x, -1, thickness=1.0, spacing=0.1, in_spacing=0.1)
    thick = slice_profile(x, -1, thickness=4.0, spacing=0.1, in_spacing=0.1)
    assert measured_fwhm(thin[0].numpy()) == pytest.approx(10.0, rel=2e-3)
    assert measured_fwhm(thick[0].numpy()) == pytest.approx(40.0, rel=2e-3)
    y_gap = slice_profile(torch.rand(1, 100, dtype=F64), -1, thickness=1.0, spacing=4.0)
    y_overlap = slice_profile(torch.rand(1, 100, dtype=F64), -1, thickness=6.0, spacing=4.0)
    assert y_gap.shape == y_overlap.shape == (1, 25)


def test_slice_profile_keeps_dtype_and_unwraps_metatensor():
    from monai.data import MetaTensor

    x = MetaTensor(torch.rand(1, 8, 8, 20), affine=torch.eye(4))
    y = slice_profile(x, -1, thickness=2.0, spacing=2.0)
    assert type(y) is torch.Tensor
    assert y.shape == (1, 8, 8, 10)
    xb = torch.rand(1, 20, dtype=torch.bfloat16)
    assert slice_profile(xb, -1, thickness=2.0, spacing=2.0).dtype == torch.bfloat16


def test_slice_profile_validation():
    x = torch.rand(1, 10, 20)
    with pytest.raises(ConfigError, match="thickness"):
        slice_profile(x, -1, thickness=0.0, spacing=2.0)
    with pytest.raises(ConfigError, match="spacing"):
        slice_profile(x, -1, thickness=2.0, spacing=0.5)  # would upsample
    with pytest.raises(ConfigError, match="in_spacing"):
        slice_profile(x, -1, thickness=2.0, spacing=2.0, in_spacing=-1.0)
    with pytest.raises(ConfigError, match="profile"):
        slice_profile(x, -1, thickness=2.0, spacing=2.0, profile="sinc")
    with pytest.raises(ConfigError, match="out of range"):
        slice_profile(x, 3, thickness=2.0, spacing=2.0)
    with pytest.raises(ConfigError, match="floating"):
        slice_profile(torch.ones(1, 10, dtype=torch.int16), -1, thickness=2.0, spacing=2.0)
    with pytest.raises(ConfigError, match="torch.Tensor"):
        slice_profile(np.ones((1, 10)), -1, thickness=2.0, spacing=2.0)


# --------------------------------------------------------------------------
# k-space truncation
# --------------------------------------------------------------------------


def cosine(n: int, k0: float, phase: float = 0.3) -> np.ndarray:
    t = np.arange(n, dtype=np.float64)
    return np.cos(2 * np.pi * k0 * t / n + phase)


@pytest.mark.parametrize("n,factor", [(64, 4), (63, 3), (50, 2.5)])
def test_kspace_sinusoid_below_cutoff_kept_above_removed(n, factor):
    m = output_size(n, factor)
    k_low = max(1, m // 2 - 2)
    k_high = m // 2 + 3
    low = torch.from_numpy(cosine(n, k_low)).reshape(1, n)
    high = torch.from_numpy(cosine(n, k_high)).reshape(1, n)
    torch.testing.assert_close(kspace_truncate(low, -1, factor, output="real"), low, atol=1e-12, rtol=0)
    removed = kspace_truncate(high, -1, factor, output="real")
    torch.testing.assert_close(removed, torch.zeros_like(high), atol=1e-12, rtol=0)
    # magnitude output (the default) of a positive signal: same result
    pos = 3.0 + low + high
    torch.testing.assert_close(kspace_truncate(pos, -1, factor), 3.0 + low, atol=1e-12, rtol=0)


def test_kspace_two_axes_and_hann_window_gain():
    n = 48
    y, x = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    img = 2.0 + np.cos(2 * np.pi * 3 * y / n) * np.cos(2 * np.pi * 5 * x / n)
    t = torch.from_numpy(img).reshape(1, 1, n, n)
    out = kspace_truncate(t, (-2, -1), 4)  # m = 12: |k| < 6 kept on both axes
    torch.testing.assert_close(out, t, atol=1e-12, rtol=0)
    # Hann: gain 0.5 (1 + cos(pi |k| / (m/2))) per axis
    out_h = kspace_truncate(t, (-2, -1), 4, window="hann", output="real")
    gain = 0.25 * (1 + math.cos(math.pi * 3 / 6)) * (1 + math.cos(math.pi * 5 / 6))
    expected = 2.0 + gain * (img - 2.0)
    np.testing.assert_allclose(out_h[0, 0].numpy(), expected, atol=1e-12)
    # Tukey with alpha 1 is Hann; alpha 0 is no window
    torch.testing.assert_close(kspace_truncate(t, (-2, -1), 4, window="tukey", tukey_alpha=1.0, output="real"), out_h)
    torch.testing.assert_close(kspace_truncate(t, (-2, -1), 4, window="tukey", tukey_alpha=0.0), out)
    torch.testing.assert_close(kspace_truncate(t, (-2, -1), 4, window="none"), out)


@pytest.mark.parametrize("n,factor", [(64, 4), (60, 2), (45, 3), (50, 2.5)])
def test_kspace_decimate_samples_at_centred_positions(n, factor):
    m = output_size(n, factor)
    k0 = max(1, m // 2 - 1)
    x = torch.from_numpy(cosine(n, k0)).reshape(1, n)
    y = kspace_truncate(x, -1, factor, decimate=True, output="real")
    assert y.shape == (1, m)
    f_eff = n / m
    p = (np.arange(m) + 0.5) * f_eff - 0.5  # FOV-preserving positions (geometry.effective_scale)
    np.testing.assert_allclose(y[0].numpy(), np.cos(2 * np.pi * k0 * p / n + 0.3), atol=1e-10)


def test_kspace_mean_preserved_and_real_output():
    g = torch.Generator().manual_seed(3)
    x = torch.rand(2, 1, 30, 33, 17, generator=g, dtype=F64)
    for decimate in (False, True):
        y = kspace_truncate(x, (2, 3, 4), (2, 3, 1.5), decimate=decimate, output="complex")
        assert y.imag.abs().max() < 1e-12  # symmetric truncation keeps a real image real
        torch.testing.assert_close(y.real.mean(dim=(2, 3, 4)), x.mean(dim=(2, 3, 4)), atol=1e-12, rtol=0)
    y = kspace_truncate(x, (2, 3, 4), (2, 3, 1.5), decimate=True)
    assert y.shape == (2, 1, 15, 11, 11) and y.dtype == F64


def test_kspace_factor_one_is_identity_and_float32():
    x = torch.rand(1, 16, 20)
    torch.testing.assert_close(kspace_truncate(x, (1, 2), 1), x, atol=1e-6, rtol=0)
    assert kspace_truncate(x, -1, 2).dtype == torch.float32


def test_kspace_validation():
    x = torch.rand(1, 16, 16)
    with pytest.raises(ConfigError, match="factor"):
        kspace_truncate(x, -1, 0.5)
    with pytest.raises(ConfigError, match="distinct"):
        kspace_truncate(x, (1, -2), 2)
    with pytest.raises(ConfigError, match="window"):
        kspace_truncate(x, -1, 2, window="hamming")
    with pytest.raises(ConfigError, match="tukey_alpha"):
        kspace_truncate(x, -1, 2, window="tukey", tukey_alpha=2.0)
    with pytest.raises(ConfigError, match="output"):
        kspace_truncate(x, -1, 2, output="phase")
    with pytest.raises(ConfigError, match="one per axis"):
        kspace_truncate(x, (1, 2), (2, 2, 2))


# --------------------------------------------------------------------------
# PSF + decimation
# --------------------------------------------------------------------------


@pytest.mark.parametrize("factor", [2, 3, 4])
def test_psf_decimate_box_is_block_average_and_ramp_exact(factor):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 6 * factor, 4 * factor, generator=g, dtype=F64)
    y = psf_decimate(x, factor, method="box")
    expected = x.reshape(3, 6, factor, 4, factor).mean(dim=(2, 4))
    torch.testing.assert_close(y, expected)
    # a ramp gives the ramp value at the block centres (j + 0.5) f - 0.5, everywhere
    rows = torch.arange(6 * factor, dtype=F64)[:, None].expand(-1, 4 * factor)
    y = psf_decimate((2.0 * rows + 1.0).unsqueeze(0), factor, method="box")
    centres = (torch.arange(6, dtype=F64) + 0.5) * factor - 0.5
    torch.testing.assert_close(y[0], (2.0 * centres + 1.0)[:, None].expand(-1, 4))


@pytest.mark.parametrize("factor", [2, 3, 2.5])
def test_psf_decimate_gaussian_ramp_matches_geometry_transform(factor):
    # world x of each pixel centre for a north-up raster, degraded, equals the
    # world x of the low-res pixel centres of geometry.scale_transform(T, 1/f)
    transform = (10.0, 0.0, 500000.0, 0.0, -10.0, 4200000.0)
    h, w = 30, 60
    cols = torch.arange(w, dtype=F64) + 0.5
    xw = transform[2] + transform[0] * cols
    img = xw.expand(h, w).unsqueeze(0).clone()
    y = psf_decimate(img, factor, mtf_nyquist=0.3)
    assert y.shape == (1, output_size(h, factor), output_size(w, factor))
    t_lr = geometry.scale_transform(transform, 1.0 / factor)
    cols_lr = np.arange(y.shape[-1]) + 0.5
    expected = t_lr[2] + t_lr[0] * cols_lr
    r = int(math.ceil(4 * mtf_to_sigma(0.3, factor) / factor)) + 1
    got = y[0, :, r:-r].numpy()
    np.testing.assert_allclose(got, np.broadcast_to(expected[r:-r], got.shape), atol=1e-3 * transform[0])


@pytest.mark.parametrize("factor", [2, 3, 4])
def test_psf_decimate_mtf_attenuates_sinusoid_as_specified(factor):
    # a cosine at half the low-res Nyquist is attenuated by MTF(nu) = gain ** (1/4)
    gain = 0.3
    n = 64 * factor
    nu = 0.5 / (2 * factor)  # cycles per high-res pixel
    t = np.arange(n, dtype=np.float64)
    x = torch.from_numpy(np.cos(2 * np.pi * nu * t)).reshape(1, 1, n)
    y = psf_decimate(x, (factor,), mtf_nyquist=gain)[0, 0].numpy()
    p = (np.arange(y.size) + 0.5) * factor - 0.5
    inner = slice(4, -4)
    np.testing.assert_allclose(y[inner], gain**0.25 * np.cos(2 * np.pi * nu * p[inner]), atol=2e-3)


def test_psf_decimate_sigma_energy_and_mean():
    g = torch.Generator().manual_seed(5)
    x = torch.rand(2, 40, 40, generator=g, dtype=F64)
    # factor 1: a pure blur keeps the sum exactly (reflective borders)
    y = psf_decimate(x, 1, sigma=1.7)
    torch.testing.assert_close(y.sum(dim=(1, 2)), x.sum(dim=(1, 2)))
    # decimation keeps the mean of a constant
    c = torch.full((1, 33, 47), 0.25, dtype=torch.float32)
    torch.testing.assert_close(psf_decimate(c, 3, sigma=2.0), torch.full((1, 11, 16), 0.25))


def test_psf_decimate_fwhm_of_delta():
    # factor 1 (no decimation): the response of a delta is the PSF itself
    for fwhm in (2.0, 3.5, 6.0):
        x = torch.zeros(1, 1, 101, dtype=F64)
        x[0, 0, 50] = 1
        y = psf_decimate(x, (1,), sigma=fwhm_to_sigma(fwhm))
        assert measured_fwhm(y[0, 0].numpy()) == pytest.approx(fwhm, rel=1e-2)


def test_psf_decimate_3d_isotropic_volume_shape_and_speed():
    x = torch.rand(1, 197, 233, 189)
    t0 = time.perf_counter()
    y = psf_decimate(x, 2, sigma=fwhm_to_sigma(2.0), spatial_dims=3)
    elapsed = time.perf_counter() - t0
    assert y.shape == (1, 99, 117, 95)
    assert elapsed < 10.0  # typically ~0.1 s; generous for a shared CPU
    t0 = time.perf_counter()
    z = slice_profile(x, -1, thickness=4.0, spacing=4.0)
    assert z.shape == (1, 197, 233, 47)
    assert time.perf_counter() - t0 < 10.0


def test_psf_decimate_3d_box_equals_block_mean_per_axis_factor():
    g = torch.Generator().manual_seed(2)
    x = torch.rand(2, 1, 8, 9, 10, generator=g, dtype=F64)
    y = psf_decimate(x, (2, 3, 1), method="box")
    expected = x.reshape(2, 1, 4, 2, 3, 3, 10).mean(dim=(3, 5))
    torch.testing.assert_close(y, expected)


@pytest.mark.parametrize("method,kw", [("box", {}), ("gaussian", {"sigma": 1.0})])
def test_psf_decimate_mask(method, kw):
    x = torch.rand(3, 16, 16)
    mask = torch.ones(16, 16, dtype=torch.bool)
    y, m = psf_decimate(x, 2, method=method, mask=mask, **kw)
    assert m.shape == (8, 8) and m.dtype == torch.bool and bool(m.all())
    mask[5, 9] = False  # one invalid high-res pixel
    y, m = psf_decimate(x, 2, method=method, mask=mask, **kw)
    invalid = (~m).nonzero().tolist()
    if method == "box":
        assert invalid == [[2, 4]]  # only the block that contains it
    else:
        # every low-res pixel whose truncated Gaussian (4 sigma) reaches (5, 9)
        centres = (np.arange(8) + 0.5) * 2 - 0.5
        near_r = np.abs(centres - 5) <= 4.0
        near_c = np.abs(centres - 9) <= 4.0
        assert sorted(invalid) == sorted([r, c] for r in np.flatnonzero(near_r) for c in np.flatnonzero(near_c))
    # leading mask dimensions are kept
    _, mb = psf_decimate(x, 2, method=method, mask=mask.expand(3, 16, 16), **kw)
    assert mb.shape == (3, 8, 8)
    torch.testing.assert_close(mb[1], m)


def test_psf_decimate_spatial_dims_resolution():
    x4 = torch.rand(2, 3, 12, 12)
    with pytest.raises(ConfigError, match="spatial_dims"):
        psf_decimate(x4, 2, method="box")
    assert psf_decimate(x4, 2, method="box", spatial_dims=2).shape == (2, 3, 6, 6)
    assert psf_decimate(x4, 2, method="box", spatial_dims=3).shape == (2, 2, 6, 6)  # (C, X, Y, Z): 3 -> round(1.5) = 2
    assert psf_decimate(x4, (2, 2), method="box").shape == (2, 3, 6, 6)
    assert psf_decimate(x4, (1, 2, 2), method="box").shape == (2, 3, 6, 6)
    with pytest.raises(ConfigError, match="spatial_dims=2"):
        psf_decimate(x4, (2, 2, 2), method="box", spatial_dims=2)


def test_psf_decimate_validation():
    x = torch.rand(1, 8, 8)
    with pytest.raises(ConfigError, match="exactly one of sigma"):
        psf_decimate(x, 2)
    with pytest.raises(ConfigError, match="exactly one of sigma"):
        psf_decimate(x, 2, sigma=1.0, mtf_nyquist=0.3)
    with pytest.raises(ConfigError, match="box"):
        psf_decimate(x, 2, method="box", sigma=1.0)
    with pytest.raises(ConfigError, match="method"):
        psf_decimate(x, 2, method="lanczos", sigma=1.0)
    with pytest.raises(ConfigError, match="factor"):
        psf_decimate(x, 0.5, sigma=1.0)
    with pytest.raises(ConfigError, match="mtf_nyquist"):
        psf_decimate(x, 2, mtf_nyquist=1.2)
    with pytest.raises(ConfigError, match="sigma"):
        psf_decimate(x, 2, sigma=-1.0)
    with pytest.raises(ConfigError, match="boolean"):
        psf_decimate(x, 2, method="box", mask=torch.ones(8, 8))
    with pytest.raises(ConfigError, match="spatial shape"):
        psf_decimate(x, 2, method="box", mask=torch.ones(8, 9, dtype=torch.bool))
    with pytest.raises(ConfigError, match="one per spatial axis"):
        psf_decimate(x, 2, sigma=(1.0, 1.0, 1.0))
    with pytest.raises(ConfigError, match="factor must be a number"):
        psf_decimate(x, "2", method="box")
    with pytest.raises(ConfigError, match="axes must be"):
        kspace_truncate(x, "1", 2)


# --------------------------------------------------------------------------
# noise
# --------------------------------------------------------------------------


def test_rician_noise_on_zero_signal_is_rayleigh():
    sigma = 2.0
    g = torch.Generator().manual_seed(0)
    y = add_noise(torch.zeros(400_000, dtype=F64), sigma=sigma, kind="rician", generator=g)
    assert float(y.min()) >= 0.0
    assert float(y.mean()) == pytest.approx(sigma * math.sqrt(math.pi / 2), rel=5e-3)
    # second moment of the Rayleigh distribution: 2 sigma^2
    assert float((y**2).mean()) == pytest.approx(2 * sigma**2, rel=1e-2)


def test_rician_noise_high_snr_and_gaussian_noise():
    g = torch.Generator().manual_seed(1)
    a, sigma = 50.0, 1.0
    y = add_noise(torch.full((200_000,), a, dtype=F64), sigma=sigma, kind="rician", generator=g)
    assert float(y.mean()) == pytest.approx(math.sqrt(a**2 + sigma**2), abs=0.01)  # E|.| ~ sqrt(A^2 + s^2)
    z = add_noise(torch.full((200_000,), 3.0, dtype=F64), sigma=0.5, generator=g)
    assert float(z.mean()) == pytest.approx(3.0, abs=5e-3)
    assert float(z.std()) == pytest.approx(0.5, rel=1e-2)


def test_noise_reproducible_dtype_and_validation():
    x = torch.rand(2, 5, 5)
    a = add_noise(x, sigma=0.1, generator=torch.Generator().manual_seed(7))
    b = add_noise(x, sigma=0.1, generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(a, b)
    assert a.dtype == torch.float32 and a.shape == x.shape
    torch.testing.assert_close(add_noise(x, sigma=0.0), x)
    with pytest.raises(ConfigError, match="sigma"):
        add_noise(x, sigma=-0.1)
    with pytest.raises(ConfigError, match="kind"):
        add_noise(x, sigma=0.1, kind="poisson")


def test_registry_names():
    # keyed like degradation.model in the domain profiles
    assert DEGRADATIONS == {
        "slice_profile": slice_profile,
        "psf": psf_decimate,
        "kspace": kspace_truncate,
        "noise": add_noise,
    }


# ------------------------------------------------------------------ the one recipe and its callers
# The consistency check of inference (inference/volume.py, inference/raster.py) calls the recipe
# like this, on the super-resolved output ``sr`` of a low-resolution input ``lr_img`` upscaled by
# ``eff`` per axis:
#
#     thick = slice_thickness(lr_img, axis)                       # volumes, the one upscaled axis
#     hr_spacing = [s / e for s, e in zip(lr_img.meta["spacing"], eff)]
#     deg = degrade(sr, profile, eff, bands=names, spacing=hr_spacing, thickness=thick)
#
# and, tile by tile on rasters with integer ratios, ``decimate(sr_tile, ratio,
# band_sigmas(profile, r, bands), valid=tile_valid)`` (equal to ``degrade`` to float rounding).
# ``_consistency_calls`` below is that call; the inference caller joins this test once it is moved.


def _consistency_calls(sr: torch.Tensor, lr_meta: dict, eff, profile, names=None, valid=None):
    """``degrade`` called as the consistency check calls it (see the comment above)."""
    ups = [a for a, e in enumerate(eff) if e > 1]
    thick = slice_thickness(lr_meta, ups[0]) if len(ups) == 1 and "spacing" in lr_meta else None
    hr_spacing = [s / e for s, e in zip(lr_meta["spacing"], eff)] if "spacing" in lr_meta else None
    return degrade(sr, profile, eff, bands=names, spacing=hr_spacing, thickness=thick, valid=valid)


def _texture(shape, seed=0) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).uniform(0, 100, size=shape).astype(np.float32))


def test_three_callers_identical_volume_slice_profile() -> None:
    cfg = load_config("mri_thick_slice", ["scale=[1, 1, 4]", "train.patch_size=16"])
    vol = make_volume(_texture((1, 24, 20, 32)), np.eye(4))
    prep = pair_makers._prepare(vol, cfg)
    x = prep.data
    # training pairs: the supervised slice-wise source degrades the whole volume along axis 2
    src = pair_makers._slicewise_source(prep, cfg, supervised=True, holdout=False)
    lr_train = src._lr[2]
    # evaluation protocol
    lr_eval, _, rec = evaluate_mod.degrade_reference(x, cfg.profile, [1.0, 1.0, 4.0], spacing=[1.0, 1.0, 1.0])
    # consistency check: the low-res volume records its slices (4 mm apart, 4 mm thick, as evaluate writes)
    lr_meta = {"spacing": (1.0, 1.0, 4.0), "slice_thickness": 4.0, "slice_axis": 2}
    lr_check = _consistency_calls(x, lr_meta, (1.0, 1.0, 4.0), cfg.profile)
    assert lr_train.shape == (1, 24, 20, 8)
    assert torch.equal(lr_train, lr_eval) and torch.equal(lr_eval, lr_check)
    assert rec["model"] == "slice_profile" and rec["fwhm_voxels"] == 4.0 and rec["spacing_voxels"] == 4.0


def test_three_callers_identical_raster_without_mtf() -> None:
    cfg = load_config("multiband_x2", ["degradation.psf.mtf_nyquist=null"])
    profile = cfg.profile
    assert profile.degradation.psf.mtf_nyquist is None
    x = _texture((3, 32, 40), 1)
    names = ["b1", "b2", "b3"]
    valid = np.ones((32, 40), bool)
    valid[5, 7] = False
    lr_train, m_train = pair_makers._lowres(x, cfg, [2, 2], names, valid)
    lr_eval, m_eval, rec = evaluate_mod.degrade_reference(x, profile, [2.0, 2.0], band_names=names, valid=valid)
    lr_check, m_check = _consistency_calls(x, {}, (2.0, 2.0), profile, names, valid)
    assert torch.equal(lr_train, lr_eval) and torch.equal(lr_eval, lr_check)
    assert np.array_equal(m_train, m_eval) and np.array_equal(m_eval, m_check) and not m_check.all()
    # the agreed default: Gaussian of FWHM one low-resolution pixel
    assert rec["sigma_hr_pixels"] == pytest.approx([fwhm_to_sigma(2.0)] * 3)
    # the streamed tile path agrees to float rounding
    lr_tile, m_tile = decimate(x, (2, 2), band_sigmas(profile, 2.0, names), valid=torch.from_numpy(valid))
    assert torch.allclose(lr_tile, lr_check, atol=1e-4)
    assert np.array_equal(m_tile.numpy().all(axis=0), m_check)


def test_three_callers_identical_band_set() -> None:
    cfg = load_config("sentinel2_20m_to_10m")
    profile = cfg.profile
    groups = {"10m": (["B02", "B03", "B04", "B08"], 2.0), "20m": (["B05", "B11", "B99"], 4.0)}  # B99: no MTF
    for seed, (names, ratio) in enumerate(groups.values()):
        x = _texture((len(names), 32, 32), seed)
        lr_train, _ = pair_makers._lowres(x, cfg, [ratio, ratio], names)
        lr_eval, _, rec = evaluate_mod.degrade_reference(x, profile, [ratio, ratio], band_names=names)
        lr_check = _consistency_calls(x, {}, (ratio, ratio), profile, names)
        assert torch.equal(lr_train, lr_eval) and torch.equal(lr_eval, lr_check)
        assert rec["sigma_hr_pixels"] == pytest.approx(band_sigmas(profile, ratio, names))
    gains = list(profile.degradation.psf.mtf_nyquist.values())
    assert band_sigmas(profile, 2.0, ["B99"]) == pytest.approx([mtf_to_sigma(float(np.mean(gains)), 2.0)])


def test_decimate_equals_psf_decimate_gaussian_and_box() -> None:
    x = _texture((3, 30, 24), 4)
    for factors in [(2, 2), (3, 1), (4, 3)]:
        sig = [0.0, 0.7, 1.9]
        for c in range(3):
            s_axes = [sig[c] if f > 1 else 0.0 for f in factors]
            exp = psf_decimate(x[c : c + 1], list(factors), sigma=s_axes, spatial_dims=2)
            got = decimate(x, factors, sig)[c : c + 1]
            assert torch.allclose(got, exp, atol=1e-4), factors
        box = decimate(x, factors, method="box")
        assert torch.allclose(box, psf_decimate(x, list(factors), method="box"), atol=1e-4)
    with pytest.raises(ConfigError, match="integer factors"):
        decimate(x, (2.5, 2), [1.0] * 3)


def test_slice_thickness_rule() -> None:
    # meta slice_thickness belongs to the named slice axis, else to the thickest one
    assert slice_thickness({"spacing": (1.0, 1.0, 4.0), "slice_thickness": 3.0}, 2) == 3.0
    assert slice_thickness({"spacing": (1.0, 1.0, 4.0), "slice_thickness": 3.0}, 0) == 1.0
    assert slice_thickness({"spacing": (4.0, 1.0, 1.0), "slice_thickness": 3.0, "slice_axis": 0}, 0) == 3.0
    # DICOM SliceThickness belongs to the stacking axis, even when it is not the thickest (overlapping slices)
    dicom = {"spacing": (0.9, 0.9, 0.8), "source_format": "dicom", "header": {"SliceThickness": "1.5"}}
    assert slice_thickness(dicom, 2) == 1.5 and slice_thickness(dicom, 0) == 0.9
    # other formats' headers are not read; no thickness: the spacing
    assert slice_thickness({"spacing": (1.0, 1.0, 5.0), "header": {"SliceThickness": 2.0}}, 2) == 5.0


def test_recipe_describes_and_records() -> None:
    mri = load_domain("mri")
    r = recipe(mri, (1, 1, 4), spacing=(1.0, 1.0, 1.0), thickness=3.0)
    assert (r.model, r.axis, r.slice_fwhm, r.slice_spacing) == ("slice_profile", 2, 3.0, 4.0)
    assert "FWHM 3 px" in r.describe() and describe(mri, (1, 1, 4), spacing=(1.0, 1.0, 1.0), thickness=3.0) == r.describe()
    iso = recipe(mri, (2, 2, 2))  # a slice-profile profile on several axes: its psf
    assert iso.model == "psf" and "model_rule" in iso.record()["rules"]
    with pytest.raises(ConfigError, match="spacing="):
        recipe(mri.model_copy(update={"degradation": mri.degradation.model_copy(
            update={"slice_profile": mri.degradation.slice_profile.model_copy(update={"fwhm": 2.0})})}), (1, 1, 4))
    with pytest.raises(ConfigError, match="MR volumes"):
        recipe(load_domain("multiband").model_copy(update={"degradation": mri.degradation.model_copy(
            update={"model": "kspace"})}), (2, 2))

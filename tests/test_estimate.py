"""Degradation estimation (medsat_sr.estimate): slice profiles and raster PSFs recovered from the data alone (#14)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from scipy import ndimage

from medsat_sr import degrade
from medsat_sr.errors import ConfigError
from medsat_sr.estimate import estimate_band_psf, estimate_raster_psf, estimate_slice_profile

MNI = "nifti/nilearn/nilearn/datasets/data/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"


def _field(shape: tuple[int, ...], sigma: float, seed: int = 0) -> np.ndarray:
    """A statistically isotropic smooth random field, all foreground."""
    v = ndimage.gaussian_filter(np.random.default_rng(seed).standard_normal(shape), sigma, mode="wrap")
    return v / v.std() + 10.0


@pytest.mark.parametrize("shape,fwhm,tol", [("gaussian", 4.0, 0.10), ("gaussian", 6.0, 0.10), ("rect", 4.0, 0.15)])
def test_slice_profile_recovers_known_fwhm_synthetic(shape: str, fwhm: float, tol: float) -> None:
    x = torch.from_numpy(_field((64, 64, 96), 1.2).astype(np.float32))[None]
    lr = degrade.slice_profile(x, 3, thickness=fwhm, spacing=4.0, profile=shape)
    est = estimate_slice_profile(lr, [1.0, 1.0, 4.0], shapes=(shape,))
    assert est.axis == 2 and est.shape == shape
    assert abs(est.fwhm_mm / fwhm - 1) <= tol, est
    assert est.gap_mm == pytest.approx(4.0 - est.fwhm_mm)
    assert est.confidence > 0.5
    assert est.override()["slice_profile"]["fwhm"] == pytest.approx(est.fwhm_mm, abs=1e-3)


@pytest.mark.parametrize("shape", ["gaussian", "rect"])
def test_slice_profile_recovers_known_fwhm_on_real_t1(shared_data: Path, shape: str) -> None:
    nib = pytest.importorskip("nibabel")
    v = np.asarray(nib.load(shared_data / MNI).dataobj, dtype=np.float32)
    lr = degrade.slice_profile(torch.from_numpy(v)[None], 3, thickness=4.0, spacing=4.0, profile=shape)
    est = estimate_slice_profile(lr, [1.0, 1.0, 4.0], shapes=(shape,))
    assert abs(est.fwhm_mm / 4.0 - 1) <= 0.10, est


def test_slice_profile_refuses_isotropic_and_2d() -> None:
    with pytest.raises(ConfigError, match="not anisotropic"):
        estimate_slice_profile(np.ones((8, 8, 8)), [1.0, 1.0, 1.2])
    with pytest.raises(ConfigError, match="3D volume"):
        estimate_slice_profile(np.ones((8, 8)), [1.0, 1.0, 4.0])


@pytest.mark.parametrize("sigma,ratio", [(0.8, 2), (1.6, 2), (2.4, 3)])
def test_band_psf_recovers_known_sigma(sigma: float, ratio: int) -> None:
    fine = _field((192, 192), 0.7, seed=1)
    coarse = degrade.decimate(torch.from_numpy(fine)[None], [ratio, ratio], [sigma])[0].numpy()
    # another "band": the same scene with a different gain, offset and some independent texture
    other = 3.0 * fine + 5.0 + 0.2 * _field((192, 192), 0.7, seed=2)
    est = estimate_band_psf(other, coarse, ratio)
    assert abs(est.sigma / sigma - 1) <= 0.15, est
    assert est.mtf_nyquist == pytest.approx(degrade.sigma_to_mtf(est.sigma, ratio))
    assert est.override()["psf"]["mtf_nyquist"] == pytest.approx(est.mtf_nyquist, abs=1e-4)


def test_raster_psf_across_scales_recovers_known_sigma() -> None:
    # a scale-invariant (1/f^2) scene, blurred by sigma 1.0 px
    rng = np.random.default_rng(3)
    fy, fx = np.meshgrid(np.fft.fftfreq(256), np.fft.fftfreq(256), indexing="ij")
    amp = 1.0 / np.maximum(np.hypot(fy, fx), 1 / 256)
    scene = np.real(np.fft.ifft2(amp * np.exp(2j * np.pi * rng.random((256, 256)))))
    band = ndimage.gaussian_filter(scene, 1.0, mode="wrap")
    est = estimate_raster_psf(band)
    assert abs(est.sigma / 1.0 - 1) <= 0.15, est


def _fractal(n: int, seed: int) -> np.ndarray:
    """A scale-invariant (1/f^2 power) scene."""
    rng = np.random.default_rng(seed)
    fy, fx = np.meshgrid(np.fft.fftfreq(n), np.fft.fftfreq(n), indexing="ij")
    amp = 1.0 / np.maximum(np.hypot(fy, fx), 1 / n)
    return np.real(np.fft.ifft2(amp * np.exp(2j * np.pi * rng.random((n, n)))))


def test_raster_psf_confidence_is_its_stability() -> None:
    """A steady estimate is trusted; one whose quadrants disagree (two cameras' halves) is not."""
    scene = _fractal(384, 5)
    steady = estimate_raster_psf(ndimage.gaussian_filter(scene, 1.0, mode="wrap"))
    assert steady.confidence >= 0.5 and abs(steady.sigma - 1.0) <= 0.15, steady
    assert "quadrants (deviations / sqrt 3) and a x3 step" in steady.notes
    mixed = ndimage.gaussian_filter(scene, 0.5, mode="wrap")
    mixed[:, 192:] = ndimage.gaussian_filter(scene, 1.6, mode="wrap")[:, 192:]
    unsteady = estimate_raster_psf(mixed)
    assert unsteady.confidence < 0.5, unsteady
    with pytest.raises(ConfigError, match="too small"):
        estimate_raster_psf(np.ones((48, 48)))


def test_auto_on_unnamed_bands_fits_one_shared_psf() -> None:
    """Bands the profile does not name share one PSF: used when steady, the MTF within 15 % of the truth."""
    from medsat_sr.config import load_config
    from medsat_sr.degradation_auto import apply_estimate
    from medsat_sr.image import make_raster

    hr = torch.from_numpy(np.stack([_fractal(512, k) for k in range(3)]))
    sigma_hr = degrade.mtf_to_sigma(0.15, 2.0)
    lr = degrade.decimate(hr, [2, 2], [sigma_hr] * 3)
    img = make_raster(lr.float() * 10 + 100, transform=(2.0, 0.0, 500000.0, 0.0, -2.0, 5200000.0), crs="EPSG:32631")
    cfg = load_config("multiband_x2", ["degradation=auto"])
    out, rec = apply_estimate(cfg, img)
    assert rec["used"] and "one PSF shared by the 3 band(s)" in rec["method"] and rec["assumes"], rec
    assert rec["shared"]["sigma_own_px"] == pytest.approx(sigma_hr / 2, rel=0.15)  # the input's own PSF, its pixels
    # the pairs' blur: what makes the input, twice coarser, look as it looks now (sqrt(2^2 - 1) x its own PSF)
    assert rec["mtf_nyquist"] == pytest.approx(degrade.sigma_to_mtf(3 ** 0.5 * sigma_hr / 2, 2.0), rel=0.15)
    assert out.profile.degradation.psf.mtf_nyquist == pytest.approx(rec["mtf_nyquist"])


def test_auto_on_a_raster_blurrier_than_any_sensor_recovers_the_extra_blur() -> None:
    """An input blurrier per pixel than a sensor is built to be: its pairs get the blur that made it (#14, NAIP).

    The scene is seen by a sensor at the floor (MTF 0.15 at its Nyquist),
    then blurred to MTF 0.06 at the x2 Nyquist and decimated. Copying the
    input's own PSF to the output (self-similarity alone) underestimates
    that blur by 6 %; asking for an output as sharp as the floor recovers it.
    """
    from medsat_sr.config import load_config
    from medsat_sr.degradation_auto import SHARPEST_TARGET_SIGMA, apply_estimate
    from medsat_sr.image import make_raster

    hr = np.stack([ndimage.gaussian_filter(_fractal(512, k), SHARPEST_TARGET_SIGMA, mode="wrap") for k in range(3)])
    blur = degrade.mtf_to_sigma(0.06, 2.0)
    lr = degrade.decimate(torch.from_numpy(hr), [2, 2], [blur] * 3)
    img = make_raster(lr.float() * 10 + 100, transform=(2.0, 0.0, 500000.0, 0.0, -2.0, 5200000.0), crs="EPSG:32631")
    _, rec = apply_estimate(load_config("multiband_x2", ["degradation=auto"]), img)
    own = rec["shared"]["sigma_own_px"]
    assert rec["used"] and rec["shared"]["target_sigma_px"] == pytest.approx(SHARPEST_TARGET_SIGMA, abs=1e-3), rec
    assert abs(3 ** 0.5 * own / blur - 1) > 0.05  # self-similarity alone would miss it
    assert degrade.mtf_to_sigma(rec["mtf_nyquist"], 2.0) == pytest.approx(blur, rel=0.04)
    assert "MTF 0.15 at its own Nyquist" in rec["assumes"]


def test_auto_keeps_the_profile_for_a_raster_blurrier_than_a_sensor_delivers() -> None:
    """A stable estimate that asks for pairs blurrier than any sensor is built to (a resampled product) is not used.

    On a real Landsat-8 product reduced x2 such an estimate (MTF 0.038) made
    the fit lose 8.5 dB to cubic against the real bands (#14): the input was
    blurred after capture, and its look across scales says nothing of how
    sharp the scene is at the finer scale.
    """
    from medsat_sr.config import load_config
    from medsat_sr.degradation_auto import PLAUSIBLE_SENSOR_MTF, apply_estimate
    from medsat_sr.image import make_raster

    hr = np.stack([ndimage.gaussian_filter(_fractal(512, k), 1.4, mode="wrap") for k in range(3)])  # resampled
    blur = degrade.mtf_to_sigma(0.3, 2.0)
    lr = degrade.decimate(torch.from_numpy(hr), [2, 2], [blur] * 3)
    img = make_raster(lr.float() * 10 + 100, transform=(2.0, 0.0, 500000.0, 0.0, -2.0, 5200000.0), crs="EPSG:32631")
    cfg = load_config("multiband_x2", ["degradation=auto"])
    out, rec = apply_estimate(cfg, img)
    assert rec["confidence"] >= 0.5 and rec["mtf_nyquist"] < PLAUSIBLE_SENSOR_MTF, rec  # steady, and implausible
    assert not rec["used"] and "blurrier than any sensor is built to deliver" in rec["reason"], rec
    assert out is cfg


def test_auto_on_bands_the_profile_names_estimates_each_and_keeps_the_profile_when_none_is_plausible() -> None:
    """Named bands get one estimate each; a band set blurrier than a sensor delivers keeps the profile's MTFs."""
    from medsat_sr.config import load_config
    from medsat_sr.degradation_auto import PLAUSIBLE_SENSOR_MTF, apply_estimate
    from medsat_sr.image import make_raster

    cfg = load_config("multiband_x2", ["degradation=auto", "domain=sentinel2_l1c"])
    blur = degrade.mtf_to_sigma(0.3, 2.0)
    for own, plausible in ((0.0, True), (1.4, False)):
        hr = np.stack([ndimage.gaussian_filter(_fractal(512, k), own, mode="wrap") for k in range(2)])
        lr = degrade.decimate(torch.from_numpy(hr), [2, 2], [blur] * 2)
        img = make_raster(lr.float() * 10 + 100, transform=(20.0, 0.0, 500000.0, 0.0, -20.0, 5200000.0),
                          crs="EPSG:32633", band_names=["B04", "B08"])
        out, rec = apply_estimate(cfg, img)
        per = rec["per_band"]
        assert set(per) == {"B04", "B08"} and all(p["confidence"] >= 0.5 for p in per.values()), rec
        if plausible:
            gains = out.profile.degradation.psf.mtf_nyquist  # the profile's table, these two bands measured
            assert rec["used"] and set(rec["mtf_nyquist"]) == {"B04", "B08"}, rec
            assert all(gains[b] == pytest.approx(per[b]["mtf_nyquist"]) for b in ("B04", "B08")), gains
        else:
            assert all(p["mtf_nyquist"] < PLAUSIBLE_SENSOR_MTF for p in per.values()), per
            assert not rec["used"] and "every confident band's estimate asks for pairs blurrier" in rec["reason"]
            assert out is cfg


def test_band_psf_bad_inputs() -> None:
    with pytest.raises(ConfigError, match="ratio"):
        estimate_band_psf(np.ones((64, 64)), np.ones((32, 32)), 1)
    with pytest.raises(ConfigError, match="one band"):
        estimate_band_psf(np.ones((2, 3, 64, 64)), np.ones((32, 32)), 2)


# ------------------------------------------------------------------ degradation: auto (config, pairs, record)
def test_config_degradation_auto_validates() -> None:
    from medsat_sr.config import load_config, with_degradation

    cfg = load_config("multiband_x2", ["degradation=auto"])
    assert cfg.profile.degradation.estimate == "auto"
    assert load_config("multiband_x2").profile.degradation.estimate == "profile"
    # the thick-slice config measures by default; `profile` (a word or --degradation profile) restores the assumption
    cfg = load_config("mri_thick_slice")
    assert cfg.profile.degradation.estimate == "auto"
    assert load_config("mri_thick_slice", ["degradation=profile"]).profile.degradation.estimate == "profile"
    assert with_degradation(cfg, {"estimate": "profile"}).profile.degradation.estimate == "profile"
    est = with_degradation(cfg, {"model": "slice_profile", "slice_profile": {"shape": "rect", "fwhm": 3.0}})
    assert est.profile.degradation.estimate == "profile"  # the copy degrades with the values given
    assert est.profile.degradation.slice_profile.shape == "rect" and est.profile.degradation.slice_profile.fwhm == 3.0
    with pytest.raises(ConfigError, match="degradation"):
        load_config("mri_thick_slice", ["degradation=sometimes"])


def test_auto_builds_pairs_from_the_estimate_and_records_it() -> None:
    """mri_thick_slice measures the slice profile by default (#14)."""
    from medsat_sr.config import load_config
    from medsat_sr.data import make_training_set
    from medsat_sr.image import make_volume

    hr = torch.from_numpy(_field((64, 64, 96), 1.2).astype(np.float32))[None]
    lr = degrade.slice_profile(hr, 3, thickness=6.0, spacing=4.0, profile="gaussian")  # thicker than the spacing
    vol = make_volume(lr * 100, np.diag([1.0, 1.0, 4.0, 1.0]))
    ts = make_training_set(vol, load_config("mri_thick_slice", ["train.patch_size=24", "train.batch_size=2"]))
    est = ts.info["degradation_estimate"]
    assert est["used"] and abs(est["fwhm_mm"] / 6.0 - 1) <= 0.15, est
    assert est["override"]["slice_profile"]["fwhm"] == pytest.approx(est["fwhm_mm"], abs=1e-3)
    # the pairs are made with the estimate (the source's recipe), not the profile's FWHM = spacing
    assert ts.sources[0].recipe.slice_fwhm == pytest.approx(est["fwhm_mm"], rel=1e-3)
    agree = est["profile_agreement"]
    assert agree["ratio"] == pytest.approx(est["fwhm_mm"] / 4.0, rel=0.05) and agree["strong"] is True


def test_degradation_option_values_and_bad_file(tmp_path: Path) -> None:
    from medsat_sr.inference.options import UpscaleOptions, degradation_override

    assert UpscaleOptions(degradation="auto").degradation == "auto"
    assert degradation_override(None) is None and degradation_override("profile") == {"estimate": "profile"}
    assert degradation_override("auto") == {"estimate": "auto"}
    good = tmp_path / "deg.yaml"
    good.write_text("degradation:\n  model: psf\n  psf: {shape: gaussian, mtf_nyquist: 0.2}\n")
    assert degradation_override(str(good))["psf"]["mtf_nyquist"] == 0.2
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match="nope.yaml"):
        degradation_override(str(missing))
    bad = tmp_path / "bad.yaml"
    bad.write_text("- just a list\n")
    with pytest.raises(ConfigError, match="bad.yaml: --degradation file must hold a degradation mapping"):
        degradation_override(str(bad))


def test_upscale_bad_degradation_file_fails_before_fitting(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from medsat_sr.cli import main

    vol = tmp_path / "in.nii.gz"
    nib = pytest.importorskip("nibabel")
    nib.save(nib.Nifti1Image(_field((16, 16, 8), 1.0).astype(np.float32), np.diag([1.0, 1.0, 4.0, 1.0])), vol)
    rc = main(["upscale", str(vol), "-o", str(tmp_path / "out.nii.gz"), "--config", "mri_thick_slice",
               "--degradation", str(tmp_path / "missing.yaml")])
    assert rc == 2 and not (tmp_path / "out.nii.gz").exists()
    assert "missing.yaml" in capsys.readouterr().err


def test_the_run_checks_itself_with_the_measured_degradation() -> None:
    """With ``degradation: auto``, the consistency self-check degrades with the estimate the pairs used (#14)."""
    from medsat_sr.config import load_config
    from medsat_sr.inference.api import _measured

    cfg = load_config("mri_thick_slice", ["degradation=auto"])
    override = {"model": "slice_profile", "slice_profile": {"shape": "rect", "fwhm": 6.0}}
    got = _measured(cfg, {"task": {"degradation_estimate": {"used": True, "override": override}}})
    spec = got.profile.degradation
    assert (spec.slice_profile.shape, spec.slice_profile.fwhm, spec.estimate) == ("rect", 6.0, "profile")
    unused = {"task": {"degradation_estimate": {"used": False, "reason": "confidence 0.2 < 0.5"}}}
    assert _measured(cfg, unused) is cfg and _measured(cfg, {}) is cfg and _measured(None, unused) is None


def test_profile_fits_check_the_profile_against_the_input() -> None:
    """degradation: profile keeps the profile's pairs, but a strong mismatch with the input is measured and said (#14)."""
    from medsat_sr.config import load_config
    from medsat_sr.data import make_training_set
    from medsat_sr.image import make_volume

    hr = torch.from_numpy(_field((64, 64, 96), 1.2).astype(np.float32))[None]
    lr = degrade.slice_profile(hr, 3, thickness=6.0, spacing=4.0, profile="gaussian")
    cfg = load_config("mri_thick_slice", ["degradation=profile", "train.patch_size=24", "train.batch_size=2"])
    ts = make_training_set(make_volume(lr * 100, np.diag([1.0, 1.0, 4.0, 1.0])), cfg)
    est = ts.info["degradation_estimate"]
    assert est["used"] is False and ts.sources[0].recipe.slice_fwhm == pytest.approx(4.0)  # the profile's pairs
    assert est["profile_agreement"]["strong"] is True and "--degradation auto" in est["profile_agreement"]["text"]
    assert abs(est["fwhm_mm"] / 6.0 - 1) <= 0.15, est


def test_the_verdict_says_when_the_degradation_is_wrong_or_unmeasured() -> None:
    """A strong mismatch, or an auto run that could not measure its input, is said in the verdict (#14)."""
    from medsat_sr.inference.api import degradation_note

    strong = {"used": True, "profile_agreement": {"strong": True, "text": "estimated PSF sigma 2.0 vs 1.0 (x2.00)"}}
    assert degradation_note(strong) == "Degradation: estimated PSF sigma 2.0 vs 1.0 (x2.00)."
    unmeasured = {"used": False, "reason": "confidence 0.0 < 0.5: the profile's degradation stays"}
    note = degradation_note(unmeasured)
    assert note is not None and "not measured on this input (confidence 0.0 < 0.5)" in note
    checked = {"used": False, "profile_agreement": {"strong": False, "text": "x0.95"}}  # profile, checked, agrees
    agreed = {"used": True, "profile_agreement": {"strong": False, "text": "x1.05"}}
    assert degradation_note(checked) is None and degradation_note(agreed) is None and degradation_note(None) is None
    # a single raster's own PSF, used: it rests on self-similarity, which the held-out split cannot check
    from medsat_sr.degradation_auto import ASSUMES

    own = {"used": True, "assumes": ASSUMES, "profile_agreement": {"strong": False, "text": "x1.10"}}
    note = degradation_note(own)
    assert note is not None and "estimated from this input alone, assuming the scene looks alike across scales" in note


def test_the_verdict_line_carries_the_degradation_caution() -> None:
    """The one-line verdict (stdout) names what the held-out split could not check, not only the record (#14)."""
    from medsat_sr.inference.api import degradation_caution

    checked_strong = {"used": False, "profile_agreement": {"strong": True, "ratio": 0.45, "text": "x0.45"}}
    assert degradation_caution(checked_strong) == (
        "the input's measured degradation disagrees with the profile's (x0.45; the fit used the profile: try "
        "--degradation auto)")
    auto_strong = {"used": True, "profile_agreement": {"strong": True, "ratio": 2.0, "text": "x2.00"}}
    assert "(x2.00; the fit used the estimate)" in (degradation_caution(auto_strong) or "")
    assert "not measured on this input" in (degradation_caution({"used": False, "reason": "confidence 0.0"}) or "")
    implausible = {"used": False, "confidence": 0.8, "mtf_nyquist": 0.038,
                   "reason": "the estimate asks for pairs blurrier than any sensor is built to deliver (MTF 0.038 at "
                             "the input's Nyquist, under 0.05): the raster was resampled"}
    assert degradation_caution(implausible) == ("degradation measured but not used on this input: the held-out check "
                                                "cannot show a PSF mismatch")
    unsteady = {"used": False, "confidence": 0.24, "reason": "confidence 0.24 < 0.5: the profile's degradation stays"}
    assert "degradation not measured reliably on this input" in (degradation_caution(unsteady) or "")
    agreed = {"used": True, "profile_agreement": {"strong": False, "ratio": 1.05, "text": "x1.05"}}
    assert degradation_caution(agreed) is None and degradation_caution(None) is None


def test_a_single_raster_verdict_says_its_psf_is_unchecked() -> None:
    """A single raster's PSF is not measured by degradation: profile, and its verdict says so (#14)."""
    from medsat_sr.config import load_config
    from medsat_sr.degradation_auto import check_profile
    from medsat_sr.image import make_raster
    from medsat_sr.inference.api import degradation_note

    img = make_raster(_field((4, 64, 64), 1.0).astype(np.float32), (1.0, 0.0, 0.0, 0.0, -1.0, 0.0), crs=None)
    rec = check_profile(load_config("multiband_x2"), img)
    assert rec is not None and rec["used"] is False
    assert "a single raster's own PSF is not checked" in (degradation_note(rec) or "")


@pytest.mark.parametrize("shape,fwhm", [("gaussian", 2.0), ("rect", 3.0), ("gaussian", 5.0)])
def test_slice_profile_with_a_gap_or_overlap_on_an_isotropic_power_law_field(shape: str, fwhm: float) -> None:
    """Slices thinner or thicker than their spacing, on a field whose relative profile is exactly the truth.

    The through-plane side must be blurred with the candidate at the slice phase
    (spacing 4), as the in-plane side is; blurring it without decimation used a
    kernel of another phase and put rect 3/4 at -67% and Gaussian 2/4 at -50%.
    """
    from medsat_sr.phantoms import power_law_field

    x = torch.from_numpy(power_law_field(128, 3.0))[None]
    lr = degrade.slice_profile(x, 3, thickness=fwhm, spacing=4.0, profile=shape)
    est = estimate_slice_profile(lr, [1.0, 1.0, 4.0], shapes=(shape,))
    assert abs(est.fwhm_mm / fwhm - 1) <= 0.15, est
    assert est.confidence > 0.5, est


def _two_cameras(left: float, right: float) -> Any:
    """Three bands of a scale-invariant scene, the left half blurred by ``left`` px, the right by ``right`` px."""
    from medsat_sr.image import make_raster

    bands = []
    for k in range(3):
        scene = _fractal(384, k)
        a = ndimage.gaussian_filter(scene, left, mode="wrap")
        a[:, 192:] = ndimage.gaussian_filter(scene, right, mode="wrap")[:, 192:]
        bands.append(a)
    return make_raster(torch.from_numpy(np.stack(bands)).float() * 10 + 100,
                       transform=(2.0, 0.0, 500000.0, 0.0, -2.0, 5200000.0), crs="EPSG:32631")


def test_auto_uses_an_unsteady_estimate_when_all_readings_but_one_reject_the_profile() -> None:
    """Halves blurred differently make the estimate unsteady; read sharper than the profile throughout, it is used.

    On the S2 L2A overview (a real pair) the estimate read MTF 0.65 at
    confidence 0.49 against the profile's 0.3, and the fit with the profile
    lost 1.97 dB to cubic against the real finer band, 0.03 dB with the estimate (#14).
    """
    from medsat_sr.config import load_config
    from medsat_sr.degradation_auto import MIN_CONFIDENCE, apply_estimate

    cfg = load_config("multiband_x2", ["degradation=auto"])
    profile_mtf = cfg.profile.degradation.psf.mtf_nyquist
    out, rec = apply_estimate(cfg, _two_cameras(0.35, 0.55))
    assert rec["confidence"] < MIN_CONFIDENCE and rec["rejects_profile"] == ["shared"], rec
    checks = sorted(rec["shared"]["checks_mtf"])
    assert checks[0] > profile_mtf and rec["mtf_nyquist"] > profile_mtf  # every reading sharper than the profile
    assert rec["used"] and out.profile.degradation.psf.mtf_nyquist == pytest.approx(rec["mtf_nyquist"])
    assert "used because the whole raster and all its stability checks but one" in rec["profile_agreement"]["text"]
    # halves on either side of the profile: the data do not reject it, and it stays
    out, rec = apply_estimate(cfg, _two_cameras(0.3, 0.9))
    assert min(rec["shared"]["checks_mtf"]) < profile_mtf < max(rec["shared"]["checks_mtf"]), rec
    assert not rec["used"] and "rejects_profile" not in rec and out is cfg
    assert f"< {MIN_CONFIDENCE}: the profile's degradation stays" in rec["reason"]


def test_rejection_forgives_one_reading_and_ignores_bounds() -> None:
    from medsat_sr.degradation_auto import _rejects

    p = {"mtf_nyquist": 0.6, "checks_mtf": [0.5, 0.55, 0.7, 0.65, 0.1], "plausible": True, "at_edge": False}
    assert _rejects(p, 0.3)  # 0.1, the farthest from 0.6, is forgiven
    assert not _rejects({**p, "checks_mtf": [0.5, 0.2, 0.7, 0.65, 0.1]}, 0.3)  # two readings below the profile
    assert not _rejects({**p, "at_edge": True}, 0.3)
    assert not _rejects({**p, "plausible": False}, 0.3)
    assert not _rejects(p, None)  # a profile with no Gaussian PSF
    assert _rejects({"mtf_nyquist": 0.1, "checks_mtf": [0.12, 0.08, 0.2, 0.9], "plausible": True}, 0.3)

"""The evaluation protocol (medsat_sr.evaluate): grids, degradation, metrics, methods, CLI.

Small in-memory images keep these fast; the real samples shipped in the
package stand in for real data (no ../shared needed).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from medsat_sr import degrade, geometry, metrics, metrics_bands
from medsat_sr.cli import main
from medsat_sr.config import load_config
from medsat_sr.errors import ConfigError, GeometryError
from medsat_sr.evaluate import (
    CLASSICAL,
    PeakMemory,
    crop_image,
    evaluate,
    pair_case,
    parse_methods,
    prepare_case,
    superior_axis,
)
from medsat_sr.image import Key, make_raster, make_volume

SAMPLES = Path(__file__).resolve().parents[1] / "medsat_sr" / "samples"
MNI = SAMPLES / "mni_icbm152_t1_2009a.nii.gz"
AERIAL = SAMPLES / "rgbn_aerial_5m.tif"

#: a tiny, fast self-supervised fit for the tests
TINY_FIT = (
    "model.kwargs={features: 8, n_blocks: 1}",
    "train.max_iterations=3",
    "train.val_every=3",
    "train.batch_size=2",
    "train.patch_size=16",
    "train.schedule.warmup_iterations=0",
    "train.precision=fp32",
)


def _volume(data: np.ndarray, spacing=(1.0, 1.0, 1.0), origin=(-10.0, 20.0, -5.0)):
    aff = np.diag([*spacing, 1.0])
    aff[:3, 3] = origin
    return make_volume(torch.from_numpy(np.ascontiguousarray(data, dtype=np.float32)), aff, source_dtype="float32")


def _raster(data: np.ndarray, px: float = 5.0):
    t = (px, 0.0, 500000.0, 0.0, -px, 4100000.0)
    return make_raster(torch.from_numpy(np.ascontiguousarray(data, dtype=np.float32)), t, crs="EPSG:32618",
                       source_dtype="float32")


def _brain(shape=(40, 36, 42), seed=0) -> np.ndarray:
    """A smooth positive blob with texture: foreground inside, zero outside."""
    rng = np.random.default_rng(seed)
    g = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    r = np.sqrt(sum(a * a for a in g))
    from scipy import ndimage

    tex = ndimage.gaussian_filter(rng.normal(size=shape), 1.5)
    v = np.where(r < 0.8, 100.0 + 400.0 * tex, 0.0)
    return np.clip(v, 0.0, None)[None]


# ------------------------------------------------------------------ geometry
def test_ramp_fields_of_view_aligned_volume() -> None:
    """A linear ramp along the thick axis survives degrade + linear upscaling: no half-voxel shift."""
    shape = (12, 11, 43)  # 43 is not a multiple of 4: the reference is centre-cropped to 40
    k = np.arange(shape[2], dtype=np.float64)
    data = np.broadcast_to(3.0 + 2.0 * k, shape)[None] * np.ones((1, *shape))
    ref = _volume(data)
    ev = evaluate([ref], "mri_thick_slice", methods="linear", scale=[1, 1, 4], progress=False)
    f = ev.files[0]
    case = f.case
    assert case.crop["shape"] == [12, 11, 40] and case.crop["start"] == [0, 0, 1]
    assert tuple(case.lr.shape[1:]) == (12, 11, 10)
    # the low-res grid is exactly the FOV-preserving grid of geometry.scale_affine
    want = geometry.scale_affine(np.asarray(case.reference.affine), [1, 1, 0.25])
    np.testing.assert_allclose(np.asarray(case.lr.affine), want, atol=1e-12)
    np.testing.assert_allclose(geometry.fov_corners(np.asarray(case.lr.affine), (12, 11, 10)),
                               geometry.fov_corners(np.asarray(case.reference.affine), (12, 11, 40)), atol=1e-9)
    out = f.outputs["linear"][0]
    refc = case.reference.as_tensor().numpy()[0]
    reach = 8  # Gaussian taps (4 sigma of FWHM 4) plus the interpolation neighbour
    np.testing.assert_allclose(out[..., reach:-reach], refc[..., reach:-reach], atol=1e-3)
    assert f.methods["linear"]["grid_match"] is True


def test_ramp_fields_of_view_aligned_raster() -> None:
    """Same on a raster with Wald's protocol and GDAL bilinear: the transforms line up exactly."""
    h, w = 34, 41
    cols = np.arange(w, dtype=np.float64)
    rows = np.arange(h, dtype=np.float64)
    data = np.stack([10.0 + 1.5 * cols[None, :] + 0.5 * rows[:, None]] * 2)
    ref = _raster(data)
    ev = evaluate([ref], "multiband_x2", methods="linear", holdout=0, progress=False)
    f = ev.files[0]
    case = f.case
    assert case.crop["shape"] == [34, 40]
    t_lr = case.lr.meta[Key.TRANSFORM]
    assert t_lr == pytest.approx(geometry.scale_transform(case.reference.meta[Key.TRANSFORM], [0.5, 0.5]))
    out = f.outputs["linear"]
    refc = case.reference.as_tensor().numpy()
    b = 6
    np.testing.assert_allclose(out[:, b:-b, b:-b], refc[:, b:-b, b:-b], atol=1e-3)


def test_superior_axis_follows_the_affine() -> None:
    aff = np.array([[0, 0, 2.0, 0], [1.0, 0, 0, 0], [0, -1.0, 0, 0], [0, 0, 0, 1]])
    assert superior_axis(aff) == 1
    assert superior_axis(np.eye(4)) == 2


# ------------------------------------------------------------------ degradation: the training code
def test_raster_degradation_is_the_training_degradation() -> None:
    from medsat_sr.pair_makers import _lowres

    rng = np.random.default_rng(1)
    ref = _raster(rng.uniform(0, 255, size=(3, 32, 40)))
    cfg = load_config("multiband_x2")
    case = prepare_case(ref, cfg, holdout=0)
    x = ref.as_tensor().float()
    expected, _ = _lowres(x, cfg, [2, 2], ref.meta[Key.BAND_NAMES])
    np.testing.assert_allclose(case.lr.as_tensor().numpy(), expected.numpy(), rtol=1e-6, atol=1e-4)
    rec = case.degradation
    assert rec["model"] == "psf" and rec["mtf_nyquist"] == pytest.approx(0.3)
    assert rec["sigma_hr_pixels"] == pytest.approx([degrade.mtf_to_sigma(0.3, 2.0)] * 3)


def test_slice_profile_degradation_and_record() -> None:
    ref = _volume(_brain())
    cfg = load_config("mri_thick_slice", ["degradation.slice_profile.fwhm=3.0"])
    case = prepare_case(ref, cfg, scale=[1, 1, 4])
    x = case.reference.as_tensor().float()
    expected = degrade.slice_profile(x, 3, thickness=3.0, spacing=4.0, in_spacing=1.0)
    np.testing.assert_allclose(case.lr.as_tensor().numpy(), expected.numpy(), atol=1e-4)
    d = case.degradation
    assert d["slice_spacing_mm"] == 4.0 and d["slice_fwhm_mm"] == 3.0 and d["axis"] == 2
    assert case.lr.meta["slice_thickness"] == 3.0  # what a self-supervised fit reads as the thickness
    assert case.lr.meta[Key.SPACING] == pytest.approx((1.0, 1.0, 4.0))


def test_slice_factor_defaults_to_four_on_isotropic_reference() -> None:
    case = prepare_case(_volume(_brain((20, 18, 24))), "mri_thick_slice")
    assert case.factors == (1.0, 1.0, 4.0)
    assert "default 4" in case.degradation["factor_rule"]
    with pytest.raises(ConfigError, match="factors > 1 on several"):
        prepare_case(_volume(_brain((20, 18, 24))), "mri_thick_slice", scale=[2, 1, 4])


def test_holdout_split_for_rasters() -> None:
    rng = np.random.default_rng(2)
    ref = _raster(rng.uniform(0, 255, size=(2, 40, 64)))
    case = prepare_case(ref, "multiband_x2")  # default holdout 0.5
    assert case.region == (slice(0, 40), slice(32, 64))
    assert case.fit_image is not None and tuple(case.fit_image.shape) == (2, 40, 32)
    assert case.fit_image.meta[Key.TRANSFORM] == pytest.approx(ref.meta[Key.TRANSFORM])
    np.testing.assert_array_equal(case.fit_image.as_tensor().numpy(), ref.as_tensor().numpy()[:, :, :32])
    with pytest.raises(ConfigError, match="holdout"):
        prepare_case(_volume(_brain((20, 18, 24))), "mri_thick_slice", holdout=0.5)


def test_pairs_must_be_aligned() -> None:
    rng = np.random.default_rng(3)
    hi = _raster(rng.uniform(0, 1, size=(2, 32, 32)))
    lo_ok = make_raster(torch.rand(2, 16, 16), geometry.scale_transform(hi.meta[Key.TRANSFORM], 0.5), crs="EPSG:32618")
    case = pair_case(lo_ok, hi, "multiband_x2")
    assert case.factors == (2.0, 2.0) and case.degradation["model"] == "explicit pair"
    t = list(geometry.scale_transform(hi.meta[Key.TRANSFORM], 0.5))
    t[2] += 5.0  # shifted by half a low-res pixel
    lo_bad = make_raster(torch.rand(2, 16, 16), t, crs="EPSG:32618")
    with pytest.raises(GeometryError, match="not aligned"):
        pair_case(lo_bad, hi, "multiband_x2")


# ------------------------------------------------------------------ metrics and settings
def test_recorded_metrics_reproduce_from_recorded_settings() -> None:
    ref = _volume(_brain())
    ev = evaluate([ref], "mri_thick_slice", methods="cubic,linear", scale=[1, 1, 4], progress=False)
    f = ev.files[0]
    s = f.settings
    refc = f.case.reference.as_tensor().numpy().astype(np.float64)
    assert s["data_range"] == pytest.approx(float(refc.max() - refc.min()))
    assert "max - min" in s["data_range_rule"]
    valid, masked = f.masks
    assert masked.sum() < valid.sum()  # a foreground mask, not everything
    for m in ("cubic", "linear"):
        r = f.methods[m]
        sr = f.outputs[m].astype(np.float64)
        assert r["psnr"] == pytest.approx(metrics.psnr(sr, refc, data_range=s["data_range"]))
        assert r["psnr_masked"] == pytest.approx(metrics.psnr(sr, refc, data_range=s["data_range"], mask=masked))
        assert r["ssim"] == pytest.approx(metrics.ssim(sr, refc, data_range=s["data_range"], spatial_dims=3))
        assert r["ssim_slices"] == pytest.approx(metrics.ssim_slices(sr, refc, axis=2, data_range=s["data_range"]))
        assert r["mae"] == pytest.approx(metrics.mae(sr, refc)) and r["mse"] == pytest.approx(metrics.mse(sr, refc))
        assert r["seconds"] > 0 and r["peak_rss_mb"] > 0
    assert f.methods["linear"]["psnr_gain_vs_cubic"] == pytest.approx(f.methods["linear"]["psnr"] - f.methods["cubic"]["psnr"])
    ms = s["metrics"]
    assert ms["mask"]["kind"] == "foreground" and "0.1" in ms["mask"]["rule"]
    assert ms["ssim"]["sigma"] == 1.5 and s["degradation"]["function"] == "medsat_sr.degrade.slice_profile"
    json.dumps(ev.to_dict(), default=str)  # serialisable


def test_raster_metrics_per_band_sam_ergas_and_units() -> None:
    """rgbn_aerial: metrics in the profile's units (DN/255) with its fixed data range 1.0; ERGAS h/l = 1/2."""
    with __import__("rasterio").open(AERIAL) as ds:
        from rasterio.windows import Window

        arr = ds.read(window=Window(0, 0, 96, 80))
        t = ds.window_transform(Window(0, 0, 96, 80))
        crs = ds.crs.to_wkt()
    ref = make_raster(torch.from_numpy(arr.astype(np.uint8)), tuple(t)[:6], crs=crs, band_names=["red", "green", "blue", "nir"])
    cfg = load_config("multiband_x2", ["domain=rgbn_aerial"])
    ev = evaluate([ref], cfg, methods="cubic", holdout=0, progress=False)
    f = ev.files[0]
    s = f.settings
    assert s["data_range"] == 1.0 and "fixed" in s["data_range_rule"] and "DN / 255" in s["units"]
    ms = s["metrics"]
    assert ms["ergas"]["h_over_l"] == pytest.approx(0.5) and ms["ergas"]["convention"] == "inverse_scale"
    r = f.methods["cubic"]
    sr = f.outputs["cubic"].astype(np.float64) / 255.0
    refc = f.case.reference.as_tensor().numpy().astype(np.float64) / 255.0
    assert r["psnr"] == pytest.approx(metrics.psnr(sr, refc, data_range=1.0), abs=1e-6)
    assert r["ergas"] == pytest.approx(metrics_bands.ergas(sr, refc, scale=2), rel=1e-6)
    assert r["sam"] == pytest.approx(metrics_bands.sam(sr, refc), rel=1e-6)
    pb = r["per_band"]
    assert pb["names"] == ["red", "green", "blue", "nir"]
    assert pb["psnr"] == pytest.approx(metrics_bands.per_band(metrics.psnr, sr, refc, data_range=1.0), abs=1e-6)
    assert pb["rmse"] == pytest.approx(metrics_bands.per_band(metrics.rmse, sr, refc), rel=1e-6)
    assert {"cubic", "lanczos"} <= set(f.methods)  # the profile's baselines always run


def test_ergas_scale_convention_is_recorded_and_applied() -> None:
    rng = np.random.default_rng(5)
    ref = _raster(rng.uniform(10, 200, size=(3, 32, 32)))
    a = evaluate([ref], "multiband_x2", methods="cubic", holdout=0, progress=False).files[0]
    b = evaluate([ref], "multiband_x2", methods="cubic", holdout=0, progress=False,
                 overrides=["metrics.ergas_ratio=scale"]).files[0]
    assert b.settings["metrics"]["ergas"]["h_over_l"] == 2.0
    assert b.methods["cubic"]["ergas"] == pytest.approx(4.0 * a.methods["cubic"]["ergas"])


# ------------------------------------------------------------------ methods
def test_parse_methods() -> None:
    cfg = load_config("multiband_x2")
    assert parse_methods(None, cfg=cfg) == ["cubic", "lanczos", "model"]
    assert parse_methods("linear", cfg=cfg) == ["cubic", "lanczos", "linear"]
    assert parse_methods("cubic", ["a/best", "b/best.safetensors"], cfg=cfg) == ["cubic", "lanczos", "model:best", "model:best#2"]
    with pytest.raises(ConfigError, match="did you mean 'lanczos'"):
        parse_methods("lanczoz", cfg=cfg)
    sup = load_config("mri_supervised_x2")
    with pytest.raises(ConfigError, match="needs a checkpoint"):
        parse_methods("model", cfg=sup)
    assert set(CLASSICAL) == {"cubic", "linear", "nearest", "lanczos"}


def test_self_supervised_model_is_fitted_on_what_the_protocol_allows(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    from scipy import ndimage

    img = ndimage.gaussian_filter(rng.normal(size=(2, 48, 64)), (0, 1.2, 1.2)) * 60 + 120
    ref = _raster(img)
    ev = evaluate([ref], "multiband_x2", methods="model", overrides=list(TINY_FIT), run_dir=tmp_path / "runs",
                  progress=False)
    r = ev.files[0].methods["model"]
    assert r["kind"] == "self_supervised" and r["grid_match"] is True
    assert r["fit"]["iterations"] == 3 and "left part" in r["fit"]["trained_on"]
    assert r["fit_seconds"] > 0 and r["apply_seconds"] > 0 and r["seconds"] >= r["fit_seconds"]
    assert ev.files[0].fits["model"].history  # for the curves
    assert (tmp_path / "runs" / ev.files[0].name / "best.json").is_file()
    assert ev.files[0].case.region[1] == slice(32, 64)
    h = ev.headlines()[0]
    assert h["method"] == "model" and isinstance(h["beats_cubic"], bool)


def test_checkpoint_method(tmp_path: Path) -> None:
    """--model CKPT: a checkpoint from a fit is applied to the degraded input."""
    from scipy import ndimage

    rng = np.random.default_rng(6)
    ref = _raster(ndimage.gaussian_filter(rng.normal(size=(2, 48, 64)), (0, 1, 1)) * 50 + 100)
    first = evaluate([ref], "multiband_x2", methods="model", overrides=list(TINY_FIT), run_dir=tmp_path, progress=False)
    ckpt = tmp_path / first.files[0].name / "best"
    ev = evaluate([ref], "multiband_x2", models=[ckpt], holdout=0, progress=False)
    r = ev.files[0].methods["model"]
    assert r["kind"] == "checkpoint" and r["checkpoint"] == str(ckpt)


def test_crop_image_keeps_world_positions() -> None:
    ref = _volume(_brain((20, 18, 24)), spacing=(0.8, 1.0, 2.0))
    sub = crop_image(ref, [2, 3, 4], [12, 15, 20])
    want = np.asarray(ref.affine) @ np.array([2, 3, 4, 1.0])
    np.testing.assert_allclose(np.asarray(sub.affine) @ np.array([0, 0, 0, 1.0]), want)
    np.testing.assert_array_equal(sub.as_tensor().numpy(), ref.as_tensor().numpy()[:, 2:12, 3:15, 4:20])


def test_peak_memory_sees_numpy_and_torch_allocations() -> None:
    with PeakMemory() as pm:
        a = np.ones(60 * 2**20 // 8)
        b = torch.ones(60 * 2**20 // 4)
        del a, b
    assert pm.increase_mb > 50
    assert math.isfinite(pm.peak_mb)


# ------------------------------------------------------------------ CLI
def test_cli_evaluate_writes_report_and_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from medsat_sr.io import read, write

    src = tmp_path / "scene.tif"
    write(crop_image(read(AERIAL), [0, 0], [101, 131]), src)  # odd sizes, as the real scene (403 x 515)
    out = tmp_path / "rep"
    code = main(["evaluate", "--config", "multiband_x2", str(src), "-o", str(out), "--methods", "cubic,linear",
                 "--holdout", "0", "--no-figures"])
    text = capsys.readouterr().out
    assert code == 0, text
    assert "scene (raster, x2/2)" in text and "lanczos" in text and "report:" in text
    data = json.loads((out / "metrics.json").read_text())
    f = data["files"][0]
    assert f["settings"]["crop"]["shape"] == [100, 130]  # cropped to whole low-resolution pixels
    assert set(f["methods"]) == {"cubic", "lanczos", "linear"}
    assert (out / "metrics.csv").is_file() and (out / "report.html").is_file()


def test_cli_evaluate_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["evaluate", "--config", "multiband_x2", "-o", str(tmp_path / "r")])
    assert code == 2 and "nothing to evaluate" in capsys.readouterr().err
    code = main(["evaluate", "--config", "mri_thick_slice", str(AERIAL), "-o", str(tmp_path / "r")])
    assert code == 2 and "is a raster" in capsys.readouterr().err
    code = main(["evaluate", "--config", "multiband_x2", str(AERIAL), "-o", str(tmp_path / "r"), "--methods", "bicubic"])
    assert code == 2 and "unknown method 'bicubic'" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()  # nothing left behind on bad input


def test_a_fixed_data_range_means_the_same_in_evaluation_and_in_training_validation() -> None:
    """rgbn_aerial's fixed range (255, values as read) is 1.0 in both places: training read it as 1/255 of that."""
    from medsat_sr.evaluate_scoring import _data_ranges, _units_transform
    from medsat_sr.normalise import Normaliser, data_range

    cfg = load_config({"name": "aerial", "domain": "rgbn_aerial", "scale": 2})
    ref = make_raster(np.full((4, 8, 8), 100, np.float32), (1.0, 0.0, 0.0, 0.0, -1.0, 0.0), crs="EPSG:32614")
    conv, _ = _units_transform(cfg.profile, ref)
    raw = np.asarray(ref.as_tensor(), dtype=np.float64)
    dr, per, rule = _data_ranges(cfg, conv(raw), raw, np.ones((8, 8), bool), conv)
    assert dr == pytest.approx(1.0) and per == pytest.approx([1.0] * 4) and rule.startswith("fixed 255 in values as read")
    norm = Normaliser.fit(ref, cfg.profile.normalisation)
    assert data_range(cfg.profile.metrics, torch.zeros(4, 8, 8), norm) == pytest.approx(dr)

"""Tests of medsat_sr.data: nodata-aware sampling, pair makers, degradation code path, validation split."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from medsat_sr import degrade
from medsat_sr.baselines import cubic_bspline
from medsat_sr.config import load_config
from medsat_sr.data import (
    AlignedSource,
    PatchSampler,
    SliceProfileSource,
    make_training_set,
    slice_lengths,
)
from medsat_sr.degrade import slice_thickness
from medsat_sr.errors import DataError, GeometryError
from medsat_sr.geometry import scale_affine, scale_transform
from medsat_sr.image import BandSet, make_raster, make_volume

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
TRANSFORM = (10.0, 0.0, 500000.0, 0.0, -10.0, 4000000.0)


def texture(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """A smooth random texture in [0, 1] (sum of random sinusoids)."""
    rng = np.random.default_rng(seed)
    grids = np.meshgrid(*[np.arange(n, dtype=np.float64) for n in shape], indexing="ij")
    out = np.zeros(shape)
    for _ in range(12):
        k = rng.uniform(0.05, 0.6, len(shape))
        out += rng.uniform(0.2, 1.0) * np.sin(sum(ki * g for ki, g in zip(k, grids)) + rng.uniform(0, 6.3))
    out -= out.min()
    return (out / out.max()).astype(np.float32)


def raster(bands: int = 3, h: int = 64, w: int = 64, seed: int = 0, **kw: object) -> torch.Tensor:
    data = np.stack([texture((h, w), seed + b) * 200 + 20 for b in range(bands)])
    return make_raster(data, TRANSFORM, crs=None, **kw)


def thick_volume(spacing: tuple[float, float, float] = (1.0, 1.0, 4.0), shape: tuple[int, int, int] = (40, 44, 12)) -> torch.Tensor:
    data = texture(shape, 3)[None] * 100
    data[:, :4] = 0  # some background
    return make_volume(data, np.diag([*spacing, 1.0]))


# ------------------------------------------------------------------ sampler
def test_sampler_rejects_nodata_half() -> None:
    valid = np.ones((64, 64), dtype=bool)
    valid[:, :32] = False  # nodata half
    s = PatchSampler(valid, min_valid_fraction=0.9, background_probability=0.5)
    rng = np.random.default_rng(0)
    for _ in range(300):
        start = s.sample((16, 16), rng)
        assert s.fraction(start, (16, 16)) >= 0.9


def test_sampler_respects_background_probability() -> None:
    valid = np.ones((80, 80), dtype=bool)
    fg = np.zeros((80, 80), dtype=bool)
    fg[:20, :20] = True  # small foreground
    rng = np.random.default_rng(1)

    def share_background(p: float) -> float:
        s = PatchSampler(valid, fg, min_valid_fraction=0.5, background_probability=p)
        starts = [s.sample((10, 10), rng) for _ in range(400)]
        return float(np.mean([s.fraction(st, (10, 10), foreground=True) < 0.5 for st in starts]))

    assert share_background(0.0) == 0.0
    # drawn anywhere: the foreground covers few positions, so most such draws are background
    assert 0.15 < share_background(0.3) < 0.4
    assert share_background(1.0) > 0.8


def test_sampler_region_and_step() -> None:
    s = PatchSampler(np.ones((50, 30), dtype=bool), region=[[(0, 20), (35, 50)], None])
    rng = np.random.default_rng(2)
    for _ in range(200):
        r, c = s.sample((8, 8), rng, step=(4, 1))
        assert r % 4 == 0 and (r + 8 <= 20 or r >= 35)


def test_sampler_without_valid_patch_raises() -> None:
    valid = np.zeros((20, 20), dtype=bool)
    valid[0, 0] = True
    with pytest.raises(DataError, match="min_valid_fraction"):
        PatchSampler(valid, min_valid_fraction=0.5).sample((8, 8), np.random.default_rng(0))


# ------------------------------------------------------------------ helpers
def test_slice_lengths_prefers_aligned_fields_of_view() -> None:
    assert slice_lengths(48, 4.0) == (12, 48)
    n_lr, n_hr = slice_lengths(48, 4.8 / 1.0156)
    assert abs(n_lr * 4.8 / 1.0156 - n_hr) < 0.1 and abs(n_hr - 48) <= 15


def test_slice_thickness_from_meta_or_spacing() -> None:
    vol = thick_volume()
    assert slice_thickness(vol, 2) == 4.0
    vol.meta["slice_thickness"] = 3.0
    assert slice_thickness(vol, 2) == 3.0
    assert slice_thickness(vol, 0) == 1.0


def test_cubic_bspline_matches_scipy_zoom_for_integer_factors() -> None:
    from scipy import ndimage

    x = np.random.default_rng(0).random((2, 12, 10))
    a = cubic_bspline(torch.from_numpy(x), (2, 3), (24, 30)).numpy()
    b = np.stack([ndimage.zoom(c, (2, 3), order=3, grid_mode=True, mode="reflect") for c in x])
    assert np.abs(a - b).max() < 1e-5


# ------------------------------------------------------------------ pair makers
def test_thick_slice_pairs_integer_factor() -> None:
    cfg = load_config("mri_thick_slice", ["train.patch_size=24", "train.batch_size=5"])
    ts = make_training_set(thick_volume(), cfg)
    assert ts.kind == "slicewise" and ts.model_scale == (4.0, 1.0) and ts.spatial_dims == 2
    b = ts.train.next_batch()
    assert b["image"].shape == (5, 1, 6, 24) and b["label"].shape == (5, 1, 24, 24)
    assert b["output_size"] == (24, 24)
    src = ts.sources[0]
    assert isinstance(src, SliceProfileSource) and src.integer
    # the whole volume is degraded once by degrade.slice_profile (the evaluation's code)
    expect = degrade.slice_profile(src.volume, 1, thickness=4.0, spacing=4.0, in_spacing=1.0)
    assert torch.equal(src._lr[0], expect)
    assert ts.val and ts.val[0]["image"].shape[2] * 4 == ts.val[0]["label"].shape[2]
    assert len(ts.val) == len(ts.val_cubic) and ts.val_cubic[0].shape == ts.val[0]["label"].shape


def test_thick_slice_pairs_non_integer_factor_and_same_degradation() -> None:
    f = 4.8 / 1.0156
    vol = thick_volume(spacing=(1.0156, 1.0156, 4.8), shape=(60, 56, 14))
    cfg = load_config("mri_thick_slice", ["train.patch_size=[48, 32]", "train.batch_size=4"])
    ts = make_training_set(vol, cfg)
    assert ts.model_scale[0] == pytest.approx(f)
    src = ts.sources[0]
    assert not src.integer
    b = ts.train.next_batch()
    n_lr, n_hr = b["image"].shape[2], b["label"].shape[2]
    assert b["output_size"] == (n_hr, 32) and n_hr == round(n_lr * f)
    # each batch is degraded by degrade.slice_profile with the acquisition's profile
    expect = degrade.slice_profile(b["label"], 2, thickness=4.8 / 1.0156, spacing=f, in_spacing=1.0)
    assert torch.equal(b["image"], expect)
    # validation tiles come from the held-out contiguous block of slices only
    lo, hi = src.val_interval
    assert 0 < lo < hi < 14
    rng = np.random.default_rng(0)
    for _ in range(100):
        view = src.views[int(rng.integers(len(src.views)))]
        start = src.sampler.sample(src._box(view), rng)
        assert not lo <= start[2] < hi


def test_thick_slice_needs_a_2d_network() -> None:
    from medsat_sr.errors import ConfigError

    cfg = load_config("mri_thick_slice", ["model.spatial_dims=3"])
    with pytest.raises(ConfigError, match="spatial_dims: 2"):
        make_training_set(thick_volume(), cfg)


def test_raster_wald_pairs_use_psf_decimate() -> None:
    img = raster(bands=3, h=80, w=96)
    cfg = load_config("multiband_x2", ["train.patch_size=16", "train.batch_size=6"])
    ts = make_training_set(img, cfg)
    assert ts.kind == "aligned" and ts.model_scale == (2.0, 2.0) and ts.in_channels == 3
    b = ts.train.next_batch()
    assert b["image"].shape == (6, 3, 8, 8) and b["label"].shape == (6, 3, 16, 16)
    src = ts.sources[0]
    assert isinstance(src, AlignedSource)
    sigma = cfg.profile.psf_sigma(2.0)
    expect = torch.cat([degrade.psf_decimate(src.hr[c : c + 1], [2, 2], sigma=[sigma, sigma]) for c in range(3)])
    assert torch.allclose(src.lr, expect)
    # the validation strip is the right-hand end of the width
    lo, hi = src.val_interval
    assert hi == 96 and lo >= 96 * 0.8
    for _ in range(50):
        r, c = src.sampler.sample(src.size, np.random.default_rng(_), src.step)
        assert c + src.size[1] <= lo


def test_raster_with_nodata_half_gives_no_nodata_patch() -> None:
    img = raster(bands=2, h=64, w=96)
    data = img.as_tensor().clone()
    data[:, :, :40] = 0.0
    img = make_raster(data, TRANSFORM, crs=None, nodata=0.0)
    cfg = load_config("multiband_x2", ["train.patch_size=16", "train.batch_size=32", "data.background_probability=1.0"])
    ts = make_training_set(img, cfg)
    for _ in range(5):
        b = ts.train.next_batch()
        # nodata is filled with 0 after normalisation; real pixels are > 0 after percentile scaling... mostly
        zero_frac = (b["label"] == 0).float().mean(dim=(1, 2, 3))
        assert float(zero_frac.max()) <= 1.0 - cfg.data.min_valid_fraction + 1e-6


def test_guided_band_set_pairs() -> None:
    fine = make_raster(np.stack([texture((64, 64), i) * 3000 + 100 for i in range(4)]), TRANSFORM, crs=None,
                       band_names=["B02", "B03", "B04", "B08"], nodata=0.0, source_dtype="uint16")
    coarse = make_raster(np.stack([texture((32, 32), 10 + i) * 3000 + 100 for i in range(6)]),
                         scale_transform(TRANSFORM, 0.5), crs=None,
                         band_names=["B05", "B06", "B07", "B8A", "B11", "B12"], nodata=0.0, source_dtype="uint16")
    bs = BandSet(groups={"10m": fine, "20m": coarse})
    cfg = load_config("sentinel2_20m_to_10m", ["train.patch_size=16", "train.batch_size=3", "data.val_fraction=0.25"])
    ts = make_training_set(bs, cfg)
    assert ts.kind == "guided" and ts.in_channels == 6 and ts.guide_channels == 4 and ts.out_channels == 6
    b = ts.train.next_batch()
    assert b["image"].shape == (3, 6, 8, 8) and b["guide"].shape == (3, 4, 16, 16) and b["label"].shape == (3, 6, 16, 16)
    assert ts.band_names == ["B05", "B06", "B07", "B8A", "B11", "B12"]
    assert ts.guide_band_names == ["B02", "B03", "B04", "B08"]
    # per-band MTF of the profile, through degrade.psf_decimate
    src = ts.sources[0]
    s05 = cfg.profile.psf_sigma(2.0, band="B05")
    assert torch.allclose(src.lr[0:1], degrade.psf_decimate(src.hr[0:1], [2, 2], sigma=[s05, s05]))
    assert ts.normaliser.method == "reflectance"


def test_volume_3d_patches() -> None:
    vol = make_volume(texture((40, 36, 32), 5)[None] * 100 + 10, np.eye(4))
    cfg = load_config("mri_isotropic_x2", ["train.patch_size=16", "train.batch_size=2"])
    ts = make_training_set(vol, cfg)
    assert ts.spatial_dims == 3 and ts.model_scale == (2.0, 2.0, 2.0)
    b = ts.train.next_batch()
    assert b["image"].shape == (2, 1, 8, 8, 8) and b["label"].shape == (2, 1, 16, 16, 16)
    assert ts.val[0]["label"].ndim == 5


def test_supervised_kspace_planes_and_held_out_reference() -> None:
    a = make_volume(texture((32, 32, 8), 1)[None] * 100 + 10, np.eye(4))
    b = make_volume(texture((32, 32, 8), 2)[None] * 100 + 10, np.eye(4))
    cfg = load_config("mri_supervised_x2", ["train.patch_size=16", "train.batch_size=4"])
    ts = make_training_set([a, b], cfg)
    assert ts.spatial_dims == 2 and ts.model_scale == (2.0, 2.0)
    batch = ts.train.next_batch()
    assert batch["image"].shape == (4, 1, 8, 8) and batch["label"].shape == (4, 1, 16, 16)
    assert len(ts.sources) == 1  # the last reference only validates
    src = ts.sources[0]
    expect = degrade.kspace_truncate(src.hr, [1, 2], [2, 2], window="none", decimate=True, output="real")
    assert torch.allclose(src.lr, expect)


def test_supervised_thick_slice_from_references() -> None:
    ref = make_volume(texture((32, 30, 36), 4)[None] * 100 + 10, np.eye(4))
    cfg = load_config("mri_thick_slice", ["train.mode=supervised", "scale=[1, 1, 4]", "train.patch_size=16",
                                          "train.batch_size=2"])
    ts = make_training_set([ref], cfg)
    b = ts.train.next_batch()
    assert b["image"].shape == (2, 1, 4, 16) and b["label"].shape == (2, 1, 16, 16)


def test_supervised_thick_slice_at_several_factors() -> None:
    """``data.factors``: one source per factor, the config's first; batches at each factor, one network for all."""
    from medsat_sr.errors import ConfigError
    from medsat_sr.models import build_model

    ref = make_volume(texture((48, 40, 44), 4)[None] * 100 + 10, np.eye(4))
    over = ["train.mode=supervised", "scale=[1, 1, 4]", "train.patch_size=24", "train.batch_size=2",
            "model.kwargs={features: 8, n_blocks: 1, upsample: pre}"]
    cfg = load_config("mri_thick_slice", [*over, "data.factors=[2, 4, 6]"])
    ts = make_training_set([ref], cfg)
    assert [s.factor for s in ts.sources] == [4.0, 2.0, 6.0]  # the config's own factor leads, and is not repeated
    assert ts.model_scale == (4.0, 1.0)
    seen = {}
    for _ in range(40):
        b = ts.train.next_batch()
        seen[b["image"].shape[2]] = tuple(b["output_size"])
    # low-res lengths for x6, x4 and x2 of a 24-pixel patch, each with its own output size
    assert sorted(seen) == [4, 6, 12] and seen[12] == (24, 24) and seen[4] == (24, 24)
    net = build_model("edsr", spatial_dims=2, in_channels=1, out_channels=1, scale=ts.model_scale,
                      **cfg.model.kwargs)
    for n_lr, size in seen.items():
        assert net(torch.zeros(1, 1, n_lr, 24), output_size=size).shape == (1, 1, *size)
    # the validation covers every factor: three times the items of one
    one = make_training_set([ref], load_config("mri_thick_slice", over))
    assert len(ts.val) > len(one.val) and ts.info["val_items"] == 3 * one.info["val_items"]

    with pytest.raises(ConfigError, match=r"data.factors.*needs upsample: pre"):
        load_config("mri_thick_slice", ["train.mode=supervised", "scale=[1, 1, 4]", "data.factors=[2, 3]"])
    with pytest.raises(ConfigError, match=r"data.factors.*not supervised"):
        load_config("mri_thick_slice", ["model.kwargs={upsample: pre}", "data.factors=[2, 3]"])
    with pytest.raises(ConfigError, match=r"data.factors.*not slice_profile"):
        load_config("multiband_x2", ["train.mode=supervised", "model.kwargs={upsample: pre}", "data.factors=[3]"])


def test_explicit_pairs_and_grid_check() -> None:
    hr = raster(bands=2, h=64, w=64)
    lr_data = degrade.psf_decimate(hr.as_tensor(), 2, sigma=1.0)
    lr = make_raster(lr_data, scale_transform(TRANSFORM, 0.5), crs=None)
    cfg = load_config("multiband_x2", ["train.mode=supervised", "train.patch_size=16", "train.batch_size=2"])
    ts = make_training_set(None, cfg, pairs=[(lr, hr)])
    assert ts.train.next_batch()["image"].shape == (2, 2, 8, 8)
    bad = make_raster(lr_data, (20.0, 0.0, 500005.0, 0.0, -20.0, 4000000.0), crs=None)
    with pytest.raises(GeometryError, match="does not line up|not the low-resolution grid"):
        make_training_set(None, cfg, pairs=[(bad, hr)])
    vhr = make_volume(texture((24, 24, 24), 1)[None], np.eye(4))
    vlr = make_volume(texture((12, 12, 12), 1)[None], scale_affine(np.eye(4), 0.5))
    vcfg = load_config("mri_isotropic_x2", ["train.mode=supervised", "train.patch_size=8", "train.batch_size=1",
                                            "data.min_valid_fraction=0", "data.val_fraction=0.3"])
    assert make_training_set(None, vcfg, pairs=[(vlr, vhr)]).model_scale == (2.0, 2.0, 2.0)
    vbad = make_volume(texture((12, 12, 12), 1)[None], np.diag([2.0, 2.0, 2.0, 1.0]))
    with pytest.raises(GeometryError):
        make_training_set(None, vcfg, pairs=[(vbad, vhr)])


def test_stream_is_reproducible() -> None:
    cfg = load_config("multiband_x2", ["train.patch_size=16", "train.batch_size=2"])
    a = make_training_set(raster(), cfg).train.next_batch()
    b = make_training_set(raster(), cfg).train.next_batch()
    assert torch.equal(a["image"], b["image"])


@pytest.mark.shared_data
def test_real_naip_pairs() -> None:
    path = SHARED / "geotiff" / "naip_4band_m_4709963_se_14_1_20180716_opengeos-data" / "m_4709963_se_14_1_20180716.tif"
    if not path.is_file():
        pytest.skip(f"shared sample data absent: {path}")
    from medsat_sr.io.geotiff import read

    img = read(path, window=((0, 128), (0, 160)))
    cfg = load_config("multiband_x2", ["train.patch_size=32", "train.batch_size=4"])
    ts = make_training_set(img, cfg)
    assert ts.train.next_batch()["image"].shape == (4, 4, 16, 16)
    assert ts.val and all(torch.isfinite(b["label"]).all() for b in ts.val)

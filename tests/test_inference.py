"""upscale(): geometry, seamless tiling, streaming, band sets, nodata, fallback, trust record, baselines."""

from __future__ import annotations

import json
import logging
import math
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import rasterio
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rasterio.transform import Affine

from medsat_sr import upscale
from medsat_sr.baselines import lanczos_weights, nearest_index, resample_volume, upsample_mask
from medsat_sr.checkpoint import model_hash, save_checkpoint
from medsat_sr.errors import ConfigError, ModelError, WriteError
from medsat_sr.geometry import fov_corners, scale_transform
from medsat_sr.io import read
from medsat_sr.models import build_model

sys.path.insert(0, str(Path(__file__).resolve().parent))
from helpers import corner_error, run_dcm2niix  # noqa: E402

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
S2_FOLDER = SHARED / "geotiff" / "sentinel2_l2a_S2A_29RKH_20200219_rio-tiler-pds"
MR_THICK = SHARED / "dicom" / "mr_t1_2d_sag_thick_dcm_qa_decubitus_HFS" / "In"


def _need(path: Path) -> None:
    if not path.exists():
        pytest.skip(f"shared test data not found: {path} (expected ../shared/data next to the repository)")


# --------------------------------------------------------------------------- fixtures
def _affine() -> np.ndarray:
    a = np.array([[0.0, -0.9, 0.1, 12.0], [1.1, 0.0, 0.0, -5.0], [0.0, 0.05, 2.5, 30.0], [0, 0, 0, 1]])
    return a


def _nifti(path: Path, shape=(21, 17, 9), dtype=np.int16, seed=0) -> Path:
    rng = np.random.default_rng(seed)
    zz = np.indices(shape).sum(axis=0).astype(np.float64)
    data = (200 + 20 * np.sin(zz / 3.0) + rng.normal(0, 5, shape)).astype(dtype)
    img = nib.Nifti1Image(data, _affine())
    img.set_sform(_affine(), code=2)
    img.set_qform(_affine(), code=2)
    nib.save(img, str(path))
    return path


def _geotiff(path: Path, *, h=75, w=61, count=3, nodata=0, block=32, dtype="uint16", seed=0, holes=True) -> Path:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = 1000 + 300 * np.sin(xx / 5.0) * np.cos(yy / 7.0)
    data = np.stack([base + 50 * b + rng.normal(0, 20, (h, w)) for b in range(count)]).astype(dtype)
    if holes and nodata is not None:
        data[:, 5:15, 8:20] = nodata
        data[1, 40:45, 30:35] = nodata
    profile = dict(
        driver="GTiff", width=w, height=h, count=count, dtype=dtype, crs="EPSG:32633",
        transform=Affine(10, 0, 500000, 0, -10, 4000000), nodata=nodata, tiled=True,
        blockxsize=block, blockysize=block, compress="deflate",
    )
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        for b in range(count):
            dst.set_band_description(b + 1, f"B{b + 1}")
    return path


def _net(spatial_dims: int, in_channels: int, scale, *, seed=0, std=0.05, name="edsr", **kw) -> torch.nn.Module:
    """A small network that is not identity-interpolation (its zero output layer is perturbed)."""
    torch.manual_seed(seed)
    kw = {"features": 8, "n_blocks": 2, **kw}
    net = build_model(name, spatial_dims=spatial_dims, in_channels=in_channels, scale=scale, **kw)
    with torch.no_grad():
        for p in net.output_conv.parameters():
            p.normal_(0, std)
    return net.eval()


def _rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    ok = np.isfinite(a) & np.isfinite(b)
    return float(np.abs(a[ok] - b[ok]).max() / max(np.abs(b[ok]).max(), 1e-12))


# --------------------------------------------------------------------------- baselines
def test_scipy_grid_mode_samples_where_geometry_says():
    """zoom(grid_mode=True) samples (k + 0.5) * n / m - 0.5, the geometry/degrade convention."""
    from scipy import ndimage

    n = 9
    for m in (18, 23, 31):
        ramp = np.arange(n, dtype=np.float64)
        got = ndimage.zoom(ramp, m / n, order=1, grid_mode=True, mode="grid-mirror")
        pos = (np.arange(m) + 0.5) * n / m - 0.5
        inner = (pos >= 0) & (pos <= n - 1)
        assert np.allclose(got[inner], pos[inner], atol=1e-12)


def test_resample_volume_cubic_is_scipy_bspline():
    from scipy import ndimage

    x = np.random.default_rng(0).random((2, 11, 7, 5)).astype(np.float32)
    for out in ((22, 14, 10), (11, 7, 19), (25, 9, 5)):
        got = resample_volume(x, out, "cubic")
        for c in range(2):
            ref = ndimage.zoom(x[c].astype(np.float64), [o / n for o, n in zip(out, x.shape[1:])], order=3,
                               grid_mode=True, mode="grid-mirror")
            assert np.abs(got[c] - ref).max() < 1e-5
        lin = resample_volume(x, out, "linear")[0]
        ref = ndimage.zoom(x[0].astype(np.float64), [o / n for o, n in zip(out, x.shape[1:])], order=1,
                           grid_mode=True, mode="grid-mirror")
        assert np.abs(lin - ref).max() < 1e-5


def test_nearest_and_lanczos_kernels():
    assert nearest_index(3, 6).tolist() == [0, 0, 1, 1, 2, 2]
    assert nearest_index(2, 6).tolist() == [0, 0, 0, 1, 1, 1]
    m = upsample_mask(np.array([[True, False], [False, True]]), (4, 6))
    assert m.shape == (4, 6) and m[0, :3].all() and not m[0, 3:].any()
    taps, w = lanczos_weights(10, 25)
    assert np.allclose(w.sum(axis=1), 1.0) and taps.min() >= 0 and taps.max() <= 9
    const = resample_volume(np.full((1, 6, 5, 4), 7.0, np.float32), (12, 10, 9), "lanczos")
    assert np.allclose(const, 7.0, atol=1e-5)
    near = resample_volume(np.arange(4, dtype=np.float32).reshape(1, 4, 1, 1), (8, 1, 1), "nearest")
    assert near[0, :, 0, 0].tolist() == [0, 0, 1, 1, 2, 2, 3, 3]


# --------------------------------------------------------------------------- volumes: geometry
@pytest.mark.parametrize("scale", [2, (1, 1, 4), (1, 1, 2.5)])
def test_nifti_upscale_keeps_the_world_extent(tmp_path, scale):
    src = _nifti(tmp_path / "in.nii.gz")
    out = tmp_path / "out.nii.gz"
    res = upscale(src, method="cubic", scale=scale, output=out)
    a = nib.load(str(src))
    b = nib.load(str(out))
    s = np.broadcast_to(np.asarray(scale, float), (3,))
    assert b.shape == tuple(int(math.floor(n * f + 0.5)) for n, f in zip(a.shape, s))
    voxel = np.linalg.norm(a.affine[:3, :3], axis=0).min()
    err = np.abs(fov_corners(a.affine, a.shape) - fov_corners(b.affine, b.shape)).max()
    assert err <= 1e-6 * voxel
    assert b.get_data_dtype() == np.int16  # source dtype by default
    side = json.loads((tmp_path / "out.nii.gz.json").read_text())
    assert side["output"]["shape"][1:] == list(b.shape)
    assert res.sidecar == tmp_path / "out.nii.gz.json"


def test_volume_float32_on_request_and_values(tmp_path):
    src = _nifti(tmp_path / "in.nii.gz")
    res = upscale(src, method="linear", scale=(2, 2, 1), output=tmp_path / "o.nii.gz", dtype="float32")
    assert nib.load(str(tmp_path / "o.nii.gz")).get_data_dtype() == np.float32
    x = read(src).as_tensor().numpy()
    ref = resample_volume(x, res.image.shape[1:], "linear")
    assert np.allclose(res.image.as_tensor().numpy(), ref, atol=1e-4)


# --------------------------------------------------------------------------- volumes: seamless tiling
def _volume(shape=(1, 29, 23, 13), seed=0):
    from medsat_sr.image import make_volume

    data = np.random.default_rng(seed).random(shape).astype(np.float32) * 100
    return make_volume(data, _affine(), source_dtype="float32")


@pytest.mark.parametrize(
    ("scale", "tiles"),
    [(2, (12, 9, 7)), ((1, 1, 2), (11, 10, 6)), ((1, 1, 2.5), (10, 9, 13)), ((2, 2, 1), (13, 7, 13))],
)
def test_tiled_volume_equals_whole_volume(scale, tiles):
    img = _volume()
    s = (scale,) * 3 if isinstance(scale, (int, float)) else scale
    net = _net(3, 1, s, n_blocks=1)
    whole = upscale(img, model=net, tile_size=10_000, precision="fp32").image.as_tensor().numpy()
    tiled = upscale(img, model=net, tile_size=tiles, precision="fp32")
    assert _rel(tiled.image.as_tensor().numpy(), whole) <= 1e-4
    assert tiled.record["settings"]["route"] in ("lr", "pre")
    with torch.no_grad():  # and both are the model's own whole-volume forward pass
        direct = net(img.as_tensor()[None].float(), output_size=whole.shape[1:])[0].numpy()
    assert _rel(whole, direct) <= 1e-4
    geo = np.asarray(tiled.image.affine)
    assert np.abs(fov_corners(_affine(), img.shape[1:]) - fov_corners(geo, whole.shape[1:])).max() < 1e-9


@pytest.mark.parametrize("name", ["dcsrn", "rcan"])
def test_tiled_3d_networks_equal_whole_volume(name):
    """The 3D nets of the isotropic configs: tiles that do not divide the volume, same output to 1e-4."""
    img = _volume((1, 23, 19, 17))
    kw = {"growth": 4, "n_blocks": 2, "n_layers": 2} if name == "dcsrn" else {"n_groups": 1, "n_blocks": 1}
    net = _net(3, 1, 2, name=name, **kw)
    whole = upscale(img, model=net, tile_size=10_000, precision="fp32").image.as_tensor().numpy()
    tiled = upscale(img, model=net, tile_size=(11, 9, 10), precision="fp32").image.as_tensor().numpy()
    assert whole.shape[1:] == (46, 38, 34)
    assert _rel(tiled, whole) <= 1e-4


def test_global_context_models_overlap_with_gaussian_blending():
    img = _volume((1, 30, 20, 10))
    net = _net(3, 1, 2, name="rcan", n_groups=1, n_blocks=1)
    res = upscale(img, model=net, tile_size=(12, 20, 10))
    ov = res.record["settings"]["overlap"]
    assert ov[0] > 0 and res.record["settings"]["exact_tiling"] is False


def test_one_orientation_runs_only_the_largest_slices():
    from medsat_sr.inference import apply_slicewise

    vol = torch.rand(1, 12, 10, 5)
    net = _net(2, 1, (3, 1), upsample="pre")
    one, _ = apply_slicewise(net, vol, 2, (12, 10, 15), orientations=1)
    both, _ = apply_slicewise(net, vol, 2, (12, 10, 15))
    with torch.inference_mode():  # axis 1 (10) is the smaller in-plane axis: its 10 slices are 12 x 5, thick first
        by_hand = net(vol.permute(2, 0, 3, 1).contiguous(), output_size=(15, 12)).permute(1, 3, 0, 2)
    assert torch.allclose(one, by_hand, atol=1e-5)
    assert not torch.allclose(one, both, atol=1e-3)
    with pytest.raises(ConfigError, match="slice_orientations must be 1 or 2"):
        apply_slicewise(net, vol, 2, (12, 10, 15), orientations=3)


def test_the_slice_orientations_option_reaches_the_slicewise_route_and_its_record():
    from medsat_sr.inference import apply_slicewise

    img = _volume((1, 14, 12, 5))
    net = _net(2, 1, (3, 1), seed=1, upsample="pre")
    for given, used in (("auto", 1), (1, 1), (2, 2)):  # auto: a model applied without a fit runs one orientation
        res = upscale(img, model=net, slice_orientations=given, precision="fp32")  # bf16 CPUs: compare in fp32
        assert res.record["settings"]["orientations"] == used
        want, _ = apply_slicewise(net, img.as_tensor().float(), 2, (14, 12, 15), orientations=used)
        assert np.allclose(res.image.as_tensor().numpy(), want.numpy(), atol=1e-4)
    with pytest.raises(ValueError, match="slice_orientations"):
        upscale(img, model=net, slice_orientations=3)


def test_a_slice_model_trained_at_several_factors_makes_the_volume_isotropic(tmp_path):
    """With no scale asked for, a data.factors checkpoint brings the thick axis to the finest spacing."""
    from medsat_sr.checkpoint import save_checkpoint

    img = _volume((1, 14, 12, 5))  # spacing 1.1 x 0.9 x 2.5 mm (the affine's columns): x2.78 to 0.9 mm
    net = _net(2, 1, (4, 1), seed=1, upsample="pre")
    save_checkpoint(tmp_path / "single", net, {"task": {"factor": 4.0}})
    save_checkpoint(tmp_path / "multi", net, {"task": {"factor": 4.0, "factors": [2.0, 4.0, 6.0]}})
    single = upscale(img, model=str(tmp_path / "single"))
    assert single.image.shape[1:] == (14, 12, 20)  # trained at x4 alone: its own factor, as before
    multi = upscale(img, model=str(tmp_path / "multi"))
    assert multi.image.shape[1:] == (14, 12, 14)  # round(5 x 2.78)
    assert np.linalg.norm(np.asarray(multi.image.affine)[:3, 2]) == pytest.approx(2.5 * 5 / 14, rel=1e-3)
    assert multi.record["settings"]["scale"]["requested"][2] == pytest.approx(2.5 / 0.9, rel=2e-3)
    assert upscale(img, model=str(tmp_path / "multi"), scale=[1, 1, 4]).image.shape[1:] == (14, 12, 20)
    from medsat_sr.image import make_volume

    iso = make_volume(np.ones((1, 8, 8, 8), np.float32), np.eye(4), source_dtype="float32")
    with pytest.raises(ConfigError, match="the volume is isotropic.*give --scale or --target-spacing"):
        upscale(iso, model=str(tmp_path / "multi"))


def test_2d_model_on_a_volume_runs_slicewise_with_uncertainty(tmp_path):
    img = _volume((1, 14, 12, 5))
    a, b = _net(2, 1, (3, 1), seed=1, upsample="pre"), _net(2, 1, (3, 1), seed=2, upsample="pre")
    res = upscale(img, models=[a, b], uncertainty=True, output=tmp_path / "sw.nii.gz")
    assert res.image.shape[1:] == (14, 12, 15)
    assert res.record["settings"]["route"] == "slicewise"
    std = nib.load(str(tmp_path / "sw_std.nii.gz"))
    out = nib.load(str(tmp_path / "sw.nii.gz"))
    assert std.shape == out.shape and np.allclose(std.affine, out.affine)
    assert float(np.asarray(std.dataobj).max()) > 0


def test_tta_and_bf16_on_volumes():
    img = _volume((1, 16, 14, 6))
    net = build_model("edsr", spatial_dims=3, in_channels=1, scale=(1, 1, 2), features=8, n_blocks=1).eval()
    plain = upscale(img, model=net, precision="fp32").image.as_tensor()
    tta = upscale(img, model=net, tta=True, uncertainty=True, precision="fp32")
    assert len(tta.record["settings"]["tta"]) == 8
    assert torch.allclose(tta.image.as_tensor(), plain, atol=1e-4)  # untrained: trilinear, equivariant
    assert float(tta.std.as_tensor().max()) < 1e-3
    pert = _net(3, 1, (1, 1, 2))
    a = upscale(img, model=pert, precision="fp32").image.as_tensor().numpy()
    b = upscale(img, model=pert, precision="bf16").image.as_tensor().numpy()
    assert _rel(b, a) < 0.02


# --------------------------------------------------------------------------- rasters
def test_a_model_for_other_bands_is_refused_before_any_tile_naming_the_file(tmp_path):
    src = _geotiff(tmp_path / "in.tif", count=3)
    out = tmp_path / "out.tif"
    with pytest.raises(ModelError, match=r"in\.tif: the model takes 4 band\(s\), the raster has 3 \(B1, B2, B3\)") as e:
        upscale(src, model=_net(2, 4, 2), output=out)
    assert isinstance(e.value, ValueError)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.tif"]  # nothing partial left


def test_geotiff_x2_keeps_crs_bounds_transform_nodata(tmp_path):
    src = _geotiff(tmp_path / "in.tif")
    out = tmp_path / "out.tif"
    upscale(src, method="cubic", scale=2, output=out)
    with rasterio.open(src) as a, rasterio.open(out) as b:
        assert b.crs == a.crs
        assert b.bounds == a.bounds
        assert tuple(b.transform)[:6] == pytest.approx(tuple(a.transform @ Affine.scale(0.5))[:6], abs=1e-9)
        assert tuple(b.transform)[:6] == pytest.approx(scale_transform(tuple(a.transform)[:6], 2), abs=1e-9)
        assert b.nodata == a.nodata and b.dtypes == a.dtypes
        assert b.descriptions == a.descriptions
        assert (b.height, b.width) == (2 * a.height, 2 * a.width)
        src_d, out_d = a.read(), b.read()
        assert b.profile["tiled"] and b.profile["compress"] == "deflate"
    # nodata propagates by nearest upsampling of the mask
    want = np.repeat(np.repeat(src_d == 0, 2, axis=1), 2, axis=2)
    assert np.array_equal(out_d == 0, want)


def test_tiled_raster_equals_whole_raster(tmp_path):
    src = _geotiff(tmp_path / "in.tif", h=83, w=71, block=16)
    net = _net(2, 3, 2)
    whole = upscale(src, model=net, tile_size=10_000, dtype="float32", output=tmp_path / "w.tif", precision="fp32")
    tiled = upscale(src, model=net, tile_size=21, dtype="float32", output=tmp_path / "t.tif", precision="fp32")
    tile = tiled.record["settings"]["tile"]
    assert all(166 % t and 142 % t for t in tile), tile  # tiles that do not divide the output
    a, b = read(tmp_path / "w.tif").as_tensor().numpy(), read(tmp_path / "t.tif").as_tensor().numpy()
    assert _rel(b, a) <= 1e-4
    # the whole-image pass is the model itself (nodata filled with the band medians first)
    mem = upscale(read(src), model=net, tile_size=10_000, dtype="float32", precision="fp32")
    assert _rel(mem.image.as_tensor().numpy(), a) <= 1e-6
    # nodata never reaches the network: changing the values under the mask changes nothing
    with rasterio.open(src, "r+") as ds:
        d = ds.read()
        assert (d[:, 5:15, 8:20] == 0).all()
    assert np.isnan(a[:, 10:30, 16:40]).all() or (a[:, 10:30, 16:40] == 0).all()


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(h=st.integers(9, 40), w=st.integers(9, 40), tile=st.integers(4, 20))
def test_raster_tiling_property(tmp_path, h, w, tile):
    from medsat_sr.image import make_raster

    data = np.random.default_rng(h * 100 + w).random((2, h, w)).astype(np.float32) * 10
    img = make_raster(data, (1, 0, 0, 0, -1, 0), crs=None)
    net = _net(2, 2, 2, n_blocks=1)
    a = upscale(img, model=net, tile_size=10_000, precision="fp32").image.as_tensor().numpy()
    b = upscale(img, model=net, tile_size=tile, precision="fp32").image.as_tensor().numpy()
    assert _rel(b, a) <= 1e-4


def test_gdal_methods_are_tile_exact(tmp_path):
    src = _geotiff(tmp_path / "in.tif", h=70, w=50, block=16)
    for method in ("cubic", "lanczos", "linear", "nearest"):
        a = upscale(src, method=method, scale=2, tile_size=10_000, dtype="float32").image.as_tensor().numpy()
        b = upscale(src, method=method, scale=2, tile_size=13, dtype="float32").image.as_tensor().numpy()
        assert np.array_equal(np.isnan(a), np.isnan(b))
        assert np.nanmax(np.abs(a - b)) == 0.0, method


def test_raster_uncertainty_output_has_the_same_grid(tmp_path):
    src = _geotiff(tmp_path / "in.tif")
    res = upscale(src, models=[_net(2, 3, 2, seed=1), _net(2, 3, 2, seed=2)], uncertainty=True, output=tmp_path / "o.tif")
    assert res.std_output == tmp_path / "o_std.tif"
    with rasterio.open(tmp_path / "o.tif") as a, rasterio.open(tmp_path / "o_std.tif") as s:
        assert (s.height, s.width, s.transform, s.crs) == (a.height, a.width, a.transform, a.crs)
        assert s.dtypes[0] == "float32" and s.descriptions == ("B1_std", "B2_std", "B3_std")
        std = s.read()
    assert np.isnan(std[:, 10:30, 16:40]).all()  # nodata stays nodata
    assert np.nanmax(std) > 0
    side = json.loads((tmp_path / "o.tif.json").read_text())
    assert side["output"]["uncertainty"] == str(tmp_path / "o_std.tif")
    assert [m["weight"] for m in side["models"]] == [0.5, 0.5]


@pytest.mark.parametrize("method", ["lstsq", "softmax"])
def test_weights_fitted_on_a_wald_split_of_the_input(tmp_path, method):
    good, bad = _net(2, 3, 2, std=0.0), _net(2, 3, 2, std=0.5, seed=3)  # bicubic vs a random residual
    res = upscale(_geotiff(tmp_path / "in.tif", h=120, w=100), models=[bad, good], weights=method)
    w = res.record["weights"]["weights"]
    assert w[1] > 0.9 and abs(sum(w) - 1) < 1e-9
    assert [m["weight"] for m in res.record["models"]] == w
    vol = _nifti(tmp_path / "v.nii.gz", shape=(30, 26, 14))
    res = upscale(vol, models=[_net(3, 1, 2, std=0.5, seed=4), _net(3, 1, 2, std=0.0)], weights=method)
    assert res.record["weights"]["weights"][1] > 0.9
    with pytest.raises(ConfigError):
        upscale(vol, models=[good, bad], weights="median")


def test_cog_output(tmp_path):
    src = _geotiff(tmp_path / "in.tif")
    upscale(src, method="cubic", scale=2, output=tmp_path / "o.tif", cog=True)
    with rasterio.open(tmp_path / "o.tif") as ds:
        assert ds.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"


def test_raster_scale_offset_round_trip(tmp_path):
    src = _geotiff(tmp_path / "in.tif", holes=False)
    with rasterio.open(src, "r+") as ds:
        ds.scales, ds.offsets = (1e-4,) * 3, (-0.1,) * 3
    upscale(src, method="nearest", scale=2, output=tmp_path / "o.tif")
    with rasterio.open(src) as a, rasterio.open(tmp_path / "o.tif") as b:
        assert b.scales == a.scales and b.offsets == a.offsets
        assert np.array_equal(b.read()[:, ::2, ::2], a.read())


# --------------------------------------------------------------------------- band sets (real data)
@pytest.mark.shared_data
def test_sentinel2_band_folder_cubic_gives_all_bands_on_the_finest_grid(tmp_path):
    _need(S2_FOLDER)
    out = tmp_path / "s2.tif"
    upscale(S2_FOLDER, method="cubic", output=out)
    with rasterio.open(S2_FOLDER / "B02.tif") as fine, rasterio.open(out) as o:
        assert o.count == 12
        assert o.descriptions == ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12")
        assert (o.height, o.width, o.transform, o.crs, o.bounds) == (fine.height, fine.width, fine.transform, fine.crs, fine.bounds)
        assert o.nodata == fine.nodata and o.dtypes[0] == "uint16"
        assert np.array_equal(o.read(2), fine.read(1))  # fine bands pass through unchanged


@pytest.mark.shared_data
def test_sentinel2_band_folder_with_a_guided_checkpoint(tmp_path):
    _need(S2_FOLDER)
    net = _net(2, 6, 2, name="guided", guide_channels=4, features=8, n_blocks=1, std=0.01)
    ckpt = tmp_path / "guided"
    save_checkpoint(ckpt, net, {
        "band_names": ["B05", "B06", "B07", "B8A", "B11", "B12"],
        "guide_band_names": ["B02", "B03", "B04", "B08"],
        "domain": "sentinel2_l2a",
    })
    out = tmp_path / "bands"  # a folder output: one file per band
    res = upscale(S2_FOLDER, model=ckpt, output=out, tile_size=256)
    files = sorted(p.name for p in out.iterdir())
    assert len(files) == 12 and "B8A.tif" in files
    with rasterio.open(out / "B05.tif") as b5, rasterio.open(S2_FOLDER / "B02.tif") as fine, rasterio.open(out / "B02.tif") as b2:
        assert (b5.height, b5.width, b5.transform) == (fine.height, fine.width, fine.transform)
        assert np.array_equal(b2.read(1), fine.read(1))
    kinds = {t["kind"]: t["bands"] for t in res.record["settings"]["tasks"]}
    assert kinds["model"] == ["B05", "B06", "B07", "B8A", "B11", "B12"]
    assert kinds["resample"] == ["B01", "B09"]
    assert res.record["models"][0]["sha256"] == model_hash(ckpt)
    assert set(res.record["consistency"]["psnr"]) >= {"B05", "B12"}


# --------------------------------------------------------------------------- DICOM (real data)
@pytest.mark.shared_data
def test_dicom_series_written_back_as_dicom_has_the_geometry_dcm2niix_sees(tmp_path):
    _need(MR_THICK)
    out = tmp_path / "sr_series"
    res = upscale(MR_THICK, method="cubic", scale=(1, 1, 2), output=out)
    nii = tmp_path / "sr.nii.gz"
    from medsat_sr.io import write

    write(res.image, nii)
    ref = nib.load(str(nii))
    conv = run_dcm2niix(out, tmp_path / "dcm2niix")
    assert len(conv) == 1
    got = nib.load(str(conv[0]))
    assert sorted(got.shape) == sorted(ref.shape)
    assert corner_error(got.affine, got.shape, ref.affine, ref.shape) < 1e-3
    import pydicom

    ds = pydicom.dcmread(next(out.glob("*.dcm")), stop_before_pixels=True)
    assert "DERIVED" in ds.ImageType
    assert "medsat_sr" in ds.DerivationDescription and "cubic" in ds.DerivationDescription
    assert ds.SeriesInstanceUID != read(MR_THICK).meta["series_uid"]
    # the world extent of the input is kept
    src = read(MR_THICK)
    a, b = np.asarray(src.affine), np.asarray(res.image.affine)
    assert np.abs(fov_corners(a, src.shape[1:]) - fov_corners(b, res.image.shape[1:])).max() < 1e-6


# --------------------------------------------------------------------------- fallback and trust
def _bad_checkpoint(tmp_path: Path, spatial_dims=3, channels=1, scale=2) -> Path:
    net = _net(spatial_dims, channels, scale, std=0.5)
    ckpt = tmp_path / "bad"
    save_checkpoint(ckpt, net, {"metrics": {"val_psnr": 20.0, "val_psnr_cubic": 25.0}})
    return ckpt


def test_fallback_to_cubic_when_the_model_does_not_beat_it(tmp_path, caplog):
    src = _nifti(tmp_path / "in.nii.gz")
    ckpt = _bad_checkpoint(tmp_path)
    with caplog.at_level(logging.WARNING, logger="medsat_sr.inference"):
        res = upscale(src, model=ckpt, output=tmp_path / "m.nii.gz")
    assert any("does not beat cubic" in r.getMessage() for r in caplog.records)
    cubic = upscale(src, method="cubic", scale=2, output=tmp_path / "c.nii.gz")
    assert np.array_equal(np.asarray(nib.load(str(tmp_path / "m.nii.gz")).dataobj),
                          np.asarray(nib.load(str(tmp_path / "c.nii.gz")).dataobj))
    assert res.record["fallback"]["applied"] and "25.00 dB" in res.record["fallback"]["reason"]
    assert res.record["method"] == "cubic" and res.record["validation"]["beats_cubic"] is False
    forced = upscale(src, model=ckpt, force=True)
    assert forced.record["fallback"] == {"applied": False, "reason": res.record["fallback"]["reason"], "forced": True}
    assert not np.allclose(forced.image.as_tensor().numpy(), cubic.image.as_tensor().numpy())


def test_trust_record(tmp_path):
    from medsat_sr.trust import sha256_path

    src = _nifti(tmp_path / "in.nii.gz")
    net = _net(3, 1, 2)
    ckpt = tmp_path / "good"
    save_checkpoint(ckpt, net, {"metrics": {"val_psnr": 30.0, "val_psnr_cubic": 29.0}, "domain": "mri"})
    res = upscale(src, model=ckpt, output=tmp_path / "o.nii.gz", tile_size=8)
    rec = json.loads((tmp_path / "o.nii.gz.json").read_text())
    assert rec["format"] == "medsat_sr.upscale_record"
    assert rec["input"]["sha256"] == sha256_path(src)
    assert rec["models"][0]["sha256"] == model_hash(ckpt)
    assert rec["medsat_sr_version"]
    assert rec["validation"]["beats_cubic"] is True and rec["fallback"]["applied"] is False
    assert set(rec["timings"]) >= {"read", "inference", "write", "total"}
    assert rec["consistency"]["psnr"]["ch0"] is not None and "degradation" in rec["consistency"]
    assert rec["settings"]["scale"]["effective"] == [2.0, 2.0, 2.0]
    assert res.record["output"]["path"] == str(tmp_path / "o.nii.gz")


def test_precision_auto_follows_the_hardware():
    from medsat_sr.inference import native_bf16

    res = upscale(_volume((1, 8, 8, 4)), model=_net(3, 1, 2, n_blocks=1))
    assert res.record["settings"]["precision"] == ("bf16" if native_bf16() else "fp32")
    assert upscale(_volume((1, 8, 8, 4)), model=_net(3, 1, 2, n_blocks=1), precision="fp32").record["settings"]["precision"] == "fp32"


# --------------------------------------------------------------------------- errors and atomicity
def test_errors_are_clear(tmp_path):
    src = _nifti(tmp_path / "in.nii.gz")
    with pytest.raises(ConfigError, match="nothing to upscale"):
        upscale(src)
    with pytest.raises(ConfigError, match="needs a scale"):
        upscale(src, method="cubic")
    with pytest.raises(ConfigError, match="unknown method"):
        upscale(src, method="bicubic", scale=2)
    with pytest.raises(ConfigError, match="either"):
        upscale(src, method="cubic", model=_net(3, 1, 2))
    with pytest.raises(ModelError, match="asked for"):
        upscale(src, model=_net(3, 1, 2), scale=3)
    with pytest.raises(WriteError):
        upscale(src, method="cubic", scale=2, output=tmp_path / "missing" / "o.nii.gz")


def test_no_partial_output_when_the_run_fails(tmp_path):
    src = _geotiff(tmp_path / "in.tif")

    class Boom(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = _net(2, 3, 2)
            self.calls = 0
            self.spatial_dims, self.in_channels, self.scale = 2, 3, (2.0, 2.0)
            self.receptive_field_per_axis = self.inner.receptive_field_per_axis

        def forward(self, x, output_size=None):
            self.calls += 1
            if self.calls > 2:
                raise RuntimeError("boom")
            return self.inner(x, output_size=output_size)

    with pytest.raises(RuntimeError):
        upscale(src, model=Boom(), output=tmp_path / "o.tif", tile_size=16)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.tif"]


def test_2d_inplane_model_on_a_volume_runs_plane_by_plane():
    """A 2D model with scale (2, 2) on a volume: every plane across the factor-1 axis, that axis kept."""
    img = _volume((1, 14, 11, 5))
    net = _net(2, 1, 2)
    res = upscale(img, model=net, scale=[2, 2, 1], precision="fp32")
    out = res.image.as_tensor().numpy()
    assert out.shape == (1, 28, 22, 5) and res.record["settings"]["route"] == "inplane"
    x = img.as_tensor().float()
    with torch.no_grad():
        for z in (0, 3):
            direct = net(x[None, :, :, :, z], output_size=(28, 22))[0].numpy()
            assert _rel(out[..., z], direct) <= 1e-5
    # planes across another axis (the model's axes keep their order), and the scale must fit the model
    assert upscale(img, model=net, scale=[2, 1, 2], precision="fp32").image.shape[1:] == (28, 11, 10)
    with pytest.raises(ConfigError, match="in-plane model"):
        upscale(img, model=net, scale=[2, 2, 2])
    geo = np.asarray(res.image.affine)
    assert np.abs(fov_corners(_affine(), img.shape[1:]) - fov_corners(geo, out.shape[1:])).max() < 1e-9


def test_raster_overshoot_clipping_is_counted_and_said(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Cubic overshoots a 0/255 edge in uint8: the values are clipped, counted in the record, and the warning gives the share."""
    src = tmp_path / "edges.tif"
    data = np.zeros((1, 16, 16), np.uint8)
    data[:, :, 8:] = 255
    with rasterio.open(src, "w", driver="GTiff", width=16, height=16, count=1, dtype="uint8", crs="EPSG:32631",
                       transform=Affine(10, 0, 300000, 0, -10, 4000000)) as dst:
        dst.write(data)
    with caplog.at_level(logging.WARNING, logger="medsat_sr.inference"):
        res = upscale(str(src), output=str(tmp_path / "x2.tif"), method="cubic", scale=2, progress=False)
    rec = json.dumps(res.record)
    n = int(rec.split('"clipped_values": ')[1].split(",")[0])
    msgs = [r.getMessage() for r in caplog.records if "fell outside the uint8 range" in r.getMessage()]
    assert len(msgs) == 1, msgs
    share = float(msgs[0].split("(")[1].split(" %")[0])
    with rasterio.open(tmp_path / "x2.tif") as d:
        total = d.width * d.height * d.count
    count = int(msgs[0].split(": ")[1].split(" ")[0])
    assert count > 0 and abs(share - 100.0 * count / total) < 0.01 * share, (count, share, total)
    assert n == count

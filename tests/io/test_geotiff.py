"""GeoTIFF reader and writer: GDAL/rasterio as the reference on real rasters and band sets."""

from __future__ import annotations

import importlib.util
import logging
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
import rasterio.env
import rasterio.windows
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from rasterio.transform import Affine
from rasterio.windows import Window

import medsat_sr
from medsat_sr.errors import ConfigError, DataError, FormatError, GeometryError, WriteError
from medsat_sr.image import BandSet, Key, make_raster, make_volume
from medsat_sr.io import geotiff

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared" / "data"
GEO = SHARED / "geotiff"
NAIP = GEO / "naip_4band_m_4709963_se_14_1_20180716_opengeos-data/m_4709963_se_14_1_20180716.tif"
LANDSAT = GEO / "landsat7_rgb_rasterio/RGB.byte.tif"
S2_DIR = GEO / "sentinel2_l2a_S2A_29RKH_20200219_rio-tiler-pds"
S2_B02 = S2_DIR / "B02.tif"
L1C = GEO / "sentinel2_l1c_13band_10m_eo-learn/REFERENCE_SCENES_t2_13band.tif"

S2_GROUPS = {
    "100m": ["B02", "B03", "B04", "B08"],
    "200m": ["B05", "B06", "B07", "B8A", "B11", "B12"],
    "600m": ["B01", "B09"],
}


def need(path: Path) -> Path:
    """Skip the test when the shared sample is missing."""
    if not path.exists():
        pytest.skip("../shared/data not found: real-data tests need the shared samples")
    return path


def no_stats(tags: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in tags.items() if not k.startswith("STATISTICS_")}


def assert_same_raster(src_path: Path, out_path: Path) -> None:
    """GDAL sees the same raster: dtype, values, CRS, transform, nodata, descriptions, scaling, tags."""
    with rasterio.open(src_path) as a, rasterio.open(out_path) as b:
        assert b.count == a.count and b.shape == a.shape
        assert b.dtypes == a.dtypes
        np.testing.assert_array_equal(b.read(), a.read())
        assert b.crs == a.crs
        assert (b.crs.to_epsg() if b.crs else None) == (a.crs.to_epsg() if a.crs else None)
        assert b.transform == a.transform
        assert (b.nodata is None and a.nodata is None) or b.nodata == a.nodata or (
            math.isnan(a.nodata) and math.isnan(b.nodata)
        )
        assert b.descriptions == a.descriptions
        assert b.scales == a.scales and b.offsets == a.offsets
        assert b.units == a.units
        assert b.colorinterp == a.colorinterp
        assert no_stats(b.tags()) == no_stats(a.tags())
        for i in range(1, a.count + 1):
            assert no_stats(b.tags(i)) == no_stats(a.tags(i))
        np.testing.assert_array_equal(b.dataset_mask(), a.dataset_mask())


def make_tif(path: Path, data: np.ndarray, **profile) -> Path:
    """A small GeoTIFF written with rasterio directly (the fixture side, not our writer)."""
    tags = profile.pop("tags", {})
    scales = profile.pop("scales", None)
    offsets = profile.pop("offsets", None)
    descriptions = profile.pop("descriptions", None)
    mask = profile.pop("mask", None)
    base = dict(driver="GTiff", count=data.shape[0], height=data.shape[1], width=data.shape[2],
                dtype=str(data.dtype), crs="EPSG:32633", transform=Affine(10, 0, 500000, 0, -10, 5000000))
    base.update(profile)
    with rasterio.open(path, "w", **base) as dst:
        if tags:
            dst.update_tags(**tags)
        if scales is not None:
            dst.scales, dst.offsets = scales, offsets
        if descriptions:
            for i, d in enumerate(descriptions, 1):
                dst.set_band_description(i, d)
        dst.write(data)
        if mask is not None:
            dst.write_mask(mask)
    return path


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


# --------------------------------------------------------------------------- real files


@pytest.mark.shared_data
def test_read_naip_matches_rasterio() -> None:
    path = need(NAIP)
    img = geotiff.read(path)
    with rasterio.open(path) as src:
        ref = src.read()
        assert tuple(img.shape) == (4, *src.shape)
        assert img.dtype == torch.float32
        np.testing.assert_array_equal(img.numpy(), ref.astype(np.float32))
        assert img.meta[Key.TRANSFORM] == tuple(src.transform)[:6]
        assert rasterio.crs.CRS.from_wkt(img.meta[Key.CRS]) == src.crs
    assert img.meta[Key.NODATA] == 0.0
    assert img.meta[Key.SOURCE_DTYPE] == "uint8"
    assert img.meta[Key.BAND_NAMES] == ["band1", "band2", "band3", "band4"]
    assert img.meta[Key.SCALES] is None and img.meta[Key.OFFSETS] is None
    assert img.meta[Key.SPACING] == (5.0, 5.0)
    header = img.meta[Key.HEADER]
    assert header["layout"] == "COG" and header["compression"] == "deflate"
    assert header["area_or_point"] == "Area"
    # the centre affine agrees with the corner transform: pixel (0, 0) centre
    centre = img.affine.numpy() @ np.array([0.0, 0.0, 1.0])
    assert tuple(centre[:2]) == (485902.0 + 2.5, 5209248.0 - 2.5)


ROUNDTRIP = [NAIP, LANDSAT, S2_B02, L1C]


@pytest.mark.shared_data
@pytest.mark.parametrize("cog", [False, True], ids=["gtiff", "cog"])
@pytest.mark.parametrize("sample", ROUNDTRIP, ids=["naip", "landsat", "s2_b02", "l1c_13band"])
def test_roundtrip_real(sample: Path, cog: bool, tmp_path: Path) -> None:
    path = need(sample)
    img = geotiff.read(path)
    out = geotiff.write(img, tmp_path / "out.tif", cog=cog)
    assert_same_raster(path, out)
    with rasterio.open(out) as dst:
        structure = dst.tags(ns="IMAGE_STRUCTURE")
        assert structure["COMPRESSION"] == "DEFLATE"
        assert structure["PREDICTOR"] == ("3" if dst.dtypes[0].startswith("float") else "2")
        assert dst.profile["tiled"] is True
        if cog:
            assert structure.get("LAYOUT") == "COG"
            if max(dst.shape) > 512:
                assert dst.overviews(1), "a COG of this size has internal overviews"
        else:
            assert "LAYOUT" not in structure
    back = geotiff.read(out)
    assert torch.equal(back.as_tensor(), img.as_tensor())
    assert back.meta[Key.BAND_NAMES] == img.meta[Key.BAND_NAMES]


@pytest.mark.shared_data
def test_l1c_band_names_and_float32_output(tmp_path: Path) -> None:
    path = need(L1C)
    img = geotiff.read(path)
    assert img.meta[Key.BAND_NAMES][8] == "B8A (assumed order)"
    assert img.meta[Key.SOURCE_DTYPE] == "float32" and img.meta[Key.NODATA] is None
    sub = geotiff.read(path, bands=["B04 (assumed order)", 8])
    np.testing.assert_array_equal(sub.numpy(), img.numpy()[[3, 7]])
    assert sub.meta[Key.HEADER]["band_indexes"] == [4, 8]


@pytest.mark.shared_data
def test_uint8_to_float32_on_request(tmp_path: Path) -> None:
    path = need(LANDSAT)
    out = medsat_sr.write(geotiff.read(path), tmp_path / "f.tif", dtype="float32")
    with rasterio.open(path) as a, rasterio.open(out) as b:
        assert b.dtypes == ("float32",) * 3
        np.testing.assert_array_equal(b.read(), a.read().astype(np.float32))
        assert b.nodata == 0.0 and b.crs == a.crs and b.transform == a.transform
        assert b.tags(ns="IMAGE_STRUCTURE")["PREDICTOR"] == "3"


# --------------------------------------------------------------------------- windows


@pytest.fixture(scope="module")
def landsat_full() -> tuple[np.ndarray, Affine, tuple[int, int]]:
    path = need(LANDSAT)
    with rasterio.open(path) as src:
        return src.read(), src.transform, src.shape


@pytest.mark.shared_data
@settings(max_examples=30, deadline=None)
@given(data=st.data())
def test_window_read_equals_slice(landsat_full, data: st.DataObject) -> None:
    full, transform, (h, w) = landsat_full
    r0 = data.draw(st.integers(0, h - 1))
    c0 = data.draw(st.integers(0, w - 1))
    r1 = data.draw(st.integers(r0 + 1, min(h, r0 + 64)))
    c1 = data.draw(st.integers(c0 + 1, min(w, c0 + 64)))
    as_tuple = data.draw(st.booleans())
    window = ((r0, r1), (c0, c1)) if as_tuple else Window(c0, r0, c1 - c0, r1 - r0)
    img = geotiff.read(LANDSAT, window=window)
    np.testing.assert_array_equal(img.numpy(), full[:, r0:r1, c0:c1].astype(np.float32))
    expected = rasterio.windows.transform(Window(c0, r0, c1 - c0, r1 - r0), transform)
    assert img.meta[Key.TRANSFORM] == tuple(expected)[:6]
    assert img.meta[Key.HEADER]["window"] == (r0, c0, r1 - r0, c1 - c0)


def test_boundless_window_fills_with_nodata(tmp_path: Path) -> None:
    data = np.arange(1, 1 + 2 * 20 * 30, dtype=np.uint16).reshape(2, 20, 30)
    path = make_tif(tmp_path / "nd.tif", data, nodata=65535)
    window = Window(-4, 15, 12, 10)  # off the left and bottom edges
    img = geotiff.read(path, window=window)
    with rasterio.open(path) as src:
        ref = src.read(window=window, boundless=True, fill_value=65535)
        assert img.meta[Key.TRANSFORM] == tuple(src.window_transform(window))[:6]
    np.testing.assert_array_equal(img.numpy(), ref.astype(np.float32))
    assert (img.numpy()[:, :, :4] == 65535).all() and (img.numpy()[:, 5:, :] == 65535).all()
    np.testing.assert_array_equal(img.numpy()[:, :5, 4:], data[:, 15:, :8])


def test_boundless_window_without_nodata_fills_zero(tmp_path: Path) -> None:
    data = np.full((1, 8, 8), 7, dtype=np.int16)
    path = make_tif(tmp_path / "plain.tif", data)
    img = geotiff.read(path, window=((-2, 10), (6, 12)))
    assert tuple(img.shape) == (1, 12, 6)
    assert (img.numpy()[0, 2:10, 0:2] == 7).all()
    assert img.numpy().sum() == 7 * 16
    outside = geotiff.read(path, window=((100, 102), (100, 103)))  # entirely outside
    assert tuple(outside.shape) == (1, 2, 3) and not outside.numpy().any()


@pytest.mark.parametrize(
    "window",
    [((0, 0), (0, 5)), Window(0.5, 0, 4, 4), ((0, 4),), "rows 0-4", ((0, 4), (5, 2))],
)
def test_bad_window_is_geometry_error(window, tmp_path: Path) -> None:
    path = make_tif(tmp_path / "w.tif", np.zeros((1, 8, 8), np.uint8))
    with pytest.raises(GeometryError, match="window"):
        geotiff.read(path, window=window)


def test_band_selection(tmp_path: Path) -> None:
    data = np.stack([np.full((4, 5), v, np.int16) for v in (1, 2, 3)])
    path = make_tif(tmp_path / "b.tif", data, descriptions=["red", "green", "nir"])
    img = geotiff.read(path, bands=["nir", 1])
    assert img.meta[Key.BAND_NAMES] == ["nir", "red"]
    assert img.numpy()[:, 0, 0].tolist() == [3.0, 1.0]
    with pytest.raises(ConfigError, match="no band named 'blue'.*red"):
        geotiff.read(path, bands=["blue"])
    with pytest.raises(ConfigError, match="out of range"):
        geotiff.read(path, bands=[4])


# --------------------------------------------------------------------------- metadata


def test_scale_offset_roundtrip_raw_exact(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    raw = rng.integers(1001, 20000, size=(2, 16, 24)).astype(np.uint16)
    raw[:, 0, :5] = 0  # nodata
    path = make_tif(tmp_path / "refl.tif", raw, nodata=0, scales=(1e-4, 2e-4), offsets=(-0.1, 0.0),
                    descriptions=["B04", "B08"])
    img = geotiff.read(path)
    assert img.meta[Key.SCALES] == [1e-4, 2e-4] and img.meta[Key.OFFSETS] == [-0.1, 0.0]
    phys = img.numpy()
    np.testing.assert_allclose(phys[0, 1:], raw[0, 1:] * 1e-4 - 0.1, rtol=1e-6)
    np.testing.assert_allclose(phys[1, 1:], raw[1, 1:] * 2e-4, rtol=1e-6)
    assert (phys[:, 0, :5] == 0).all()  # nodata keeps its raw value
    out = geotiff.write(img, tmp_path / "back.tif")
    assert_same_raster(path, out)
    as_float = geotiff.write(img, tmp_path / "phys.tif", dtype="float32")
    with rasterio.open(as_float) as src:
        assert src.scales == (1.0, 1.0) and src.offsets == (0.0, 0.0)
        np.testing.assert_array_equal(src.read(), phys)


def test_missing_crs_reads_and_writes_without(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = make_tif(tmp_path / "nocrs.tif", np.ones((1, 6, 7), np.float32), crs=None)
    with caplog.at_level(logging.WARNING, logger="medsat_sr.io.geotiff"):
        img = geotiff.read(path)
    assert img.meta[Key.CRS] is None
    assert "no CRS" in caplog.text
    out = geotiff.write(img, tmp_path / "nocrs_out.tif", cog=True)
    with rasterio.open(out) as src:
        assert src.crs is None
        assert src.transform == Affine(10, 0, 500000, 0, -10, 5000000)


def test_pixel_is_point(tmp_path: Path) -> None:
    tifffile = pytest.importorskip("tifffile")
    path = make_tif(tmp_path / "point.tif", np.arange(48, dtype=np.uint16).reshape(1, 6, 8),
                    tags={"AREA_OR_POINT": "Point"})
    stored = tifffile.TiffFile(path).pages[0].tags["ModelTiepointTag"].value
    # GDAL stores the tie point at the first pixel *centre* (PixelIsPoint) ...
    assert stored[3:5] == (500005.0, 4999995.0)
    # ... and the transform we expose maps pixel corners (DESIGN.md §3), even when the user's environment sets
    # GTIFF_POINT_GEO_IGNORE=TRUE. Checked in a child process: rasterio keeps a GDAL option it found set when an
    # Env started, so setting it here would change how every later test reads PixelIsPoint files.
    code = f"from medsat_sr.io import geotiff; print(list(geotiff.read({str(path)!r}).meta['transform']))"
    env = {**os.environ, "GTIFF_POINT_GEO_IGNORE": "TRUE"}
    child = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert child.returncode == 0, child.stderr
    assert child.stdout.strip() == "[10.0, 0.0, 500000.0, 0.0, -10.0, 5000000.0]"
    img = geotiff.read(path)
    assert img.meta[Key.TRANSFORM] == (10.0, 0.0, 500000.0, 0.0, -10.0, 5000000.0)
    assert img.meta[Key.HEADER]["area_or_point"] == "Point"
    out = geotiff.write(img, tmp_path / "point_out.tif")
    assert tifffile.TiffFile(out).pages[0].tags["ModelTiepointTag"].value == stored
    assert_same_raster(path, out)


def test_internal_mask_roundtrip(tmp_path: Path) -> None:
    data = np.arange(2 * 16 * 16, dtype=np.uint8).reshape(2, 16, 16)
    mask = np.zeros((16, 16), dtype=bool)
    mask[2:12, 3:14] = True
    path = make_tif(tmp_path / "masked.tif", data, mask=mask)
    img = geotiff.read(path)
    np.testing.assert_array_equal(img.meta["valid_mask"], mask)
    assert img.meta[Key.HEADER]["mask_flags"][0] == ["per_dataset"]
    part = geotiff.read(path, window=((-2, 6), (0, 8)))
    np.testing.assert_array_equal(part.meta["valid_mask"][2:], mask[:6, :8])
    assert not part.meta["valid_mask"][:2].any()
    for cog in (False, True):
        out = geotiff.write(img, tmp_path / f"masked_{cog}.tif", cog=cog)
        assert_same_raster(path, out)


def test_palette_and_band_tags_kept(tmp_path: Path) -> None:
    path = tmp_path / "classes.tif"
    with rasterio.open(path, "w", driver="GTiff", count=1, height=8, width=8, dtype="uint8", crs="EPSG:4326",
                       transform=Affine(0.001, 0, 10, 0, -0.001, 50), nodata=0) as dst:
        dst.write(np.arange(64, dtype=np.uint8).reshape(1, 8, 8) % 5)
        dst.write_colormap(1, {0: (0, 0, 0, 0), 1: (255, 0, 0, 255), 2: (0, 255, 0, 255)})
        dst.update_tags(1, CLASS_NAMES="none,water,land", STATISTICS_MEAN="2.0")
        dst.update_tags(PRODUCT="test")
        dst.units = ("class",)
    img = geotiff.read(path)
    out = geotiff.write(img, tmp_path / "classes_out.tif")
    assert_same_raster(path, out)
    with rasterio.open(out) as src:
        assert src.colormap(1)[1] == (255, 0, 0, 255)
        assert "STATISTICS_MEAN" not in src.tags(1)  # stale after processing: dropped


# --------------------------------------------------------------------------- band sets


def test_band_sort_key_is_sentinel2_order() -> None:
    names = ["SCL", "B12", "B8A", "B01", "B09", "B08", "B10", "B02", "B11"]
    assert sorted(names, key=geotiff.band_sort_key) == ["B01", "B02", "B08", "B8A", "B09", "B10", "B11", "B12", "SCL"]


@pytest.mark.shared_data
def test_band_files_exclude_scl() -> None:
    folder = need(S2_DIR)
    names = [f.stem for f in geotiff.band_files(folder)]
    assert names == ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12"]
    assert "SCL" in [f.stem for f in geotiff.band_files(folder, include_aux=True)]


@pytest.mark.shared_data
def test_read_bandset_sentinel2_groups() -> None:
    folder = need(S2_DIR)
    bs = geotiff.read_bandset(folder)
    assert isinstance(bs, BandSet)
    assert list(bs) == list(S2_GROUPS)
    for name, bands in S2_GROUPS.items():
        img = bs[name]
        assert img.meta[Key.BAND_NAMES] == bands
        for i, band in enumerate(bands):
            with rasterio.open(folder / f"{band}.tif") as src:
                assert tuple(img.shape[1:]) == src.shape
                assert img.meta[Key.TRANSFORM] == tuple(src.transform)[:6]
                assert rasterio.crs.CRS.from_wkt(img.meta[Key.CRS]) == src.crs
                np.testing.assert_array_equal(img.numpy()[i], src.read(1).astype(np.float32))
        assert img.meta[Key.NODATA] == 0.0 and img.meta[Key.SOURCE_DTYPE] == "uint16"
    with_aux = geotiff.read_bandset(folder, include_aux=True, bands=["B05", "SCL"])
    assert list(with_aux) == ["200m"] and with_aux["200m"].meta[Key.BAND_NAMES] == ["B05", "SCL"]


@pytest.mark.shared_data
def test_bandset_through_dispatch() -> None:
    folder = need(S2_DIR)
    if importlib.util.find_spec("medsat_sr.io.dicom") is None:
        pytest.skip("medsat_sr.io.dicom not there yet: folder dispatch needs it")
    bs = medsat_sr.read(folder, bands=["B01", "B02"])
    assert isinstance(bs, BandSet) and list(bs) == ["100m", "600m"]


@pytest.mark.shared_data
def test_bandset_roundtrip(tmp_path: Path) -> None:
    folder = need(S2_DIR)
    bs = geotiff.read_bandset(folder)
    out = geotiff.write_bandset(bs, tmp_path / "bands")
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{b}.tif" for bands in S2_GROUPS.values() for b in bands)
    for bands in S2_GROUPS.values():
        for band in bands:
            assert_same_raster(folder / f"{band}.tif", out / f"{band}.tif")
    back = geotiff.read_bandset(out)
    assert list(back) == list(bs)
    for name in bs:
        assert torch.equal(back[name].as_tensor(), bs[name].as_tensor())
        assert back[name].meta[Key.TRANSFORM] == bs[name].meta[Key.TRANSFORM]
        assert back[name].meta[Key.BAND_NAMES] == bs[name].meta[Key.BAND_NAMES]
    assert leftovers(tmp_path) == []


@pytest.mark.shared_data
def test_bandset_cog_with_aux(tmp_path: Path) -> None:
    folder = need(S2_DIR)
    bs = geotiff.read_bandset(folder, bands=["B01", "B09", "SCL"], include_aux=True)
    out = medsat_sr.write(bs, tmp_path / "cogs", format="cog")
    for band in ("B01", "B09", "SCL"):
        assert_same_raster(folder / f"{band}.tif", out / f"{band}.tif")
        with rasterio.open(out / f"{band}.tif") as src:
            assert src.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
    with rasterio.open(out / "SCL.tif") as src:
        assert src.dtypes == ("uint8",)  # per-band dtype kept inside a mixed group


@pytest.mark.shared_data
def test_bandset_window_on_each_grid() -> None:
    folder = need(S2_DIR)
    full = geotiff.read_bandset(folder)
    part = geotiff.read_bandset(folder, window=((6, 18), (12, 30)))
    for name, ratio in (("100m", 1), ("200m", 2), ("600m", 6)):
        r0, r1, c0, c1 = 6 // ratio, 18 // ratio, 12 // ratio, 30 // ratio
        np.testing.assert_array_equal(part[name].numpy(), full[name].numpy()[:, r0:r1, c0:c1])
        t = Affine(*full[name].meta[Key.TRANSFORM])
        assert part[name].meta[Key.TRANSFORM] == tuple(rasterio.windows.transform(Window(c0, r0, c1 - c0, r1 - r0), t))[:6]
    with pytest.raises(GeometryError, match="200m grid"):
        geotiff.read_bandset(folder, window=((1, 18), (12, 30)))


def _band(path: Path, size: float, n: int, crs: str = "EPSG:32633", x0: float = 500000.0) -> Path:
    return make_tif(path, np.ones((1, n, n), np.uint16), crs=crs, transform=Affine(size, 0, x0, 0, -size, 5000000),
                    nodata=0)


def test_bandset_group_names_and_order(tmp_path: Path) -> None:
    _band(tmp_path / "B02.tif", 0.5, 8)
    _band(tmp_path / "B05.tif", 1.0, 4)
    _band(tmp_path / "B8A.tif", 1.0, 4)
    _band(tmp_path / "B06.tif", 1.0, 4, x0=500100.0)  # same pixel size, other grid
    bs = geotiff.read_bandset(tmp_path)
    assert list(bs) == ["0.5m", "1m", "1m_2"]
    assert bs["1m"].meta[Key.BAND_NAMES] == ["B05", "B8A"]
    assert bs["1m_2"].meta[Key.BAND_NAMES] == ["B06"]


def test_bandset_geographic_group_name(tmp_path: Path) -> None:
    _band(tmp_path / "B02.tif", 0.0001, 4, crs="EPSG:4326", x0=10.0)
    assert list(geotiff.read_bandset(tmp_path)) == ["0.0001deg"]


def test_bandset_different_crs_is_geometry_error(tmp_path: Path) -> None:
    _band(tmp_path / "B02.tif", 10, 4)
    _band(tmp_path / "B03.tif", 10, 4, crs="EPSG:32632")
    with pytest.raises(GeometryError, match="different CRSs.*B03.tif"):
        geotiff.read_bandset(tmp_path)


def test_bandset_bad_folders(tmp_path: Path) -> None:
    with pytest.raises(FormatError, match="no band files"):
        geotiff.read_bandset(tmp_path)
    make_tif(tmp_path / "rgb.tif", np.zeros((3, 4, 4), np.uint8))
    with pytest.raises(FormatError, match="rgb.tif: has 3 bands"):
        geotiff.read_bandset(tmp_path)
    with pytest.raises(DataError, match="not a folder"):
        geotiff.band_files(tmp_path / "rgb.tif")
    (tmp_path / "rgb.tif").unlink()
    _band(tmp_path / "B02.tif", 10, 4)
    with pytest.raises(ConfigError, match="B99"):
        geotiff.read_bandset(tmp_path, bands=["B99"])


def test_write_bandset_refuses_existing_folder_without_overwrite(tmp_path: Path) -> None:
    _band(tmp_path / "B02.tif", 10, 4)
    bs = geotiff.read_bandset(tmp_path)
    target = tmp_path / "out"
    target.mkdir()
    with pytest.raises(WriteError, match="exists"):
        geotiff.write_bandset(bs, target, overwrite=False)
    geotiff.write_bandset(bs, target)
    assert [p.name for p in target.iterdir()] == ["B02.tif"]


# --------------------------------------------------------------------------- bad input and writer options


@pytest.mark.shared_data
@pytest.mark.parametrize("sample", [LANDSAT, NAIP], ids=["ifd_at_end", "cog_ifd_first"])
def test_truncated_tiff_is_format_error(sample: Path, tmp_path: Path) -> None:
    blob = need(sample).read_bytes()
    cut = tmp_path / "cut.tif"
    cut.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(FormatError, match="cut.tif"):
        geotiff.read(cut)
    with pytest.raises(FormatError, match="cut.tif"):
        medsat_sr.read(cut)


def test_garbage_tiff_is_format_error(tmp_path: Path) -> None:
    bad = tmp_path / "garbage.tif"
    bad.write_bytes(b"II*\x00" + bytes(range(256)) * 20)
    with pytest.raises(FormatError, match="garbage.tif"):
        geotiff.read(bad)
    text = tmp_path / "text.tif"
    text.write_bytes(b"not a tiff at all" * 10)
    with pytest.raises(FormatError, match="text.tif"):
        geotiff.read(text)
    with pytest.raises(DataError, match="no such file"):
        geotiff.read(tmp_path / "absent.tif")


@pytest.fixture
def small_raster(tmp_path: Path):
    path = make_tif(tmp_path / "small.tif", np.arange(3 * 20 * 20, dtype=np.int16).reshape(3, 20, 20), nodata=-1)
    return geotiff.read(path)


def test_write_errors_leave_nothing(small_raster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(WriteError, match="does not exist"):
        geotiff.write(small_raster, tmp_path / "missing" / "x.tif")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    geotiff.write(small_raster, out_dir / "x.tif")
    with pytest.raises(WriteError, match="exists"):
        geotiff.write(small_raster, out_dir / "x.tif", overwrite=False)

    def broken_copy(*args, **kwargs):
        raise rasterio.errors.RasterioIOError("simulated COG failure")

    monkeypatch.setattr(rasterio.shutil, "copy", broken_copy)
    with pytest.raises(WriteError, match="simulated COG failure"):
        geotiff.write(small_raster, out_dir / "y.tif", cog=True)
    assert sorted(p.name for p in out_dir.iterdir()) == ["x.tif"]  # no staging file, no .part


def test_writer_option_validation(small_raster, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="float16"):
        geotiff.write(small_raster, tmp_path / "a.tif", dtype="float16")
    with pytest.raises(ConfigError, match="compress"):
        geotiff.write(small_raster, tmp_path / "a.tif", compress="zip")
    with pytest.raises(ConfigError, match="blocksize"):
        geotiff.write(small_raster, tmp_path / "a.tif", blocksize=100)
    with pytest.raises(ConfigError, match="nodata -1"):
        geotiff.write(small_raster, tmp_path / "a.tif", dtype="uint8")
    volume = make_volume(np.zeros((1, 2, 2, 2), np.float32), np.eye(4))
    with pytest.raises(FormatError, match="volume"):
        geotiff.write(volume, tmp_path / "v.tif")
    assert not list(tmp_path.glob("a.tif"))


def test_encode_values_rounds_clips_and_keeps_nodata(caplog: pytest.LogCaptureFixture) -> None:
    phys = np.array([[[0.0, 0.4, 0.6, 300.0, -5.0, np.nan, 255.2]]], dtype=np.float32)
    with caplog.at_level(logging.WARNING, logger="medsat_sr.io.geotiff"):
        raw = geotiff.encode_values(phys, dtype="uint8", nodata=0)
    # 0 is nodata; 0.4 rounds onto nodata and is moved to 1; NaN becomes nodata
    assert raw.tolist() == [[[0, 1, 1, 255, 1, 0, 255]]]
    assert "2 pixels clipped to the uint8 range (1 below, 1 above; 28.6 % of the raster)" in caplog.text
    assert "nodata" in caplog.text
    scaled = geotiff.encode_values(np.array([[[0.25, -9999.0]]]), dtype="int16", nodata=-9999, scales=[0.5],
                                   offsets=[0.0])
    assert scaled.tolist() == [[[0, -9999]]]


def test_build_profile_and_streaming_writer(small_raster, tmp_path: Path) -> None:
    profile = geotiff.build_profile(small_raster, blocksize=512)
    assert profile["predictor"] == 2 and profile["compress"] == "deflate"
    assert profile["blockxsize"] == 32 and profile["tiled"] and profile["BIGTIFF"] == "IF_SAFER"
    assert geotiff.build_profile(small_raster, dtype="float32")["predictor"] == 3
    # window-by-window writing through the same pieces equals the whole-image write
    whole = geotiff.write(small_raster, tmp_path / "whole.tif")
    data = small_raster.numpy()
    with geotiff.open_writer(tmp_path / "tiled.tif", profile) as dst:
        for r0 in range(0, 20, 8):
            for c0 in range(0, 20, 8):
                win = Window(c0, r0, min(8, 20 - c0), min(8, 20 - r0))
                block = data[:, r0 : r0 + win.height, c0 : c0 + win.width]
                dst.write(geotiff.encode_values(block, dtype=profile["dtype"], nodata=profile["nodata"]), window=win)
    with rasterio.open(whole) as a, rasterio.open(tmp_path / "tiled.tif") as b:
        np.testing.assert_array_equal(a.read(), b.read())
        assert a.transform == b.transform and a.crs == b.crs and a.nodata == b.nodata


def test_gdal_env_caps_block_cache() -> None:
    with geotiff.gdal_env():
        options = rasterio.env.getenv()
    if "GDAL_CACHEMAX" in __import__("os").environ:
        pytest.skip("GDAL_CACHEMAX set in the environment")
    assert int(options["GDAL_CACHEMAX"]) == geotiff.GDAL_CACHEMAX_MB * 2**20
    assert options["GTIFF_POINT_GEO_IGNORE"] in (False, "FALSE", "OFF")


def test_write_dispatch_and_raster_from_scratch(tmp_path: Path) -> None:
    img = make_raster(np.random.default_rng(4).random((2, 9, 11), dtype=np.float32),
                      (20.0, 0.0, 300000.0, 0.0, -20.0, 4000000.0), crs="EPSG:32631", band_names=["vv", "vh"])
    out = medsat_sr.write(img, tmp_path / "s1.tif")
    with rasterio.open(out) as src:
        assert src.descriptions == ("vv", "vh") and src.dtypes == ("float32", "float32")
        assert src.crs.to_epsg() == 32631 and src.nodata is None
        np.testing.assert_array_equal(src.read(), img.numpy())
    shutil.copy(out, tmp_path / "copy.tif")
    again = medsat_sr.read(tmp_path / "copy.tif")
    assert again.meta[Key.BAND_NAMES] == ["vv", "vh"]


@pytest.mark.parametrize("dtype", ["complex64", "complex_int16"])
def test_complex_samples_are_refused_at_the_door_naming_the_file(tmp_path: Path, dtype: str) -> None:
    """SAR single-look complex data: read as the real part (the imaginary part silently dropped), then refused at
    write time with a message that named no file. Now refused on reading, in both the whole and windowed reads."""
    from medsat_sr.io import geotiff_read

    path = tmp_path / "slc.tif"
    with rasterio.open(path, "w", driver="GTiff", width=16, height=16, count=1, dtype=dtype, crs="EPSG:32633",
                       transform=Affine(10, 0, 500000, 0, -10, 5200000)) as dst:
        dst.write(np.ones((1, 16, 16), np.complex64))
    for window in (None, Window(0, 0, 8, 8)):
        with pytest.raises(FormatError, match=r"slc\.tif: complex samples .*amplitude or intensity"):
            geotiff_read.read(path, window=window)

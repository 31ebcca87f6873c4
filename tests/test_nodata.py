"""Nodata-aware training and scoring: collared scenes work with the README recipe as it is (issue #13)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import Affine, from_origin

from medsat_sr.cli import main
from medsat_sr.config import load_config
from medsat_sr.data import make_training_set
from medsat_sr.errors import DataError
from medsat_sr.image import Key
from medsat_sr.io import read

LANDSAT = Path("geotiff/landsat7_rgb_rasterio/RGB.byte.tif")


def _raster(path: Path, valid: np.ndarray) -> Path:
    h, w = valid.shape
    rng = np.random.default_rng(0)
    data = (rng.random((3, h, w)) * 200 + 20).astype(np.uint8)
    data[:, ~valid] = 0
    with rasterio.open(path, "w", driver="GTiff", width=w, height=h, count=3, dtype="uint8", nodata=0,
                       crs="EPSG:32618", transform=Affine(30, 0, 1000, 0, -30, 5000)) as dst:
        dst.write(data)
    return path


def test_held_out_block_moves_off_a_nodata_collar(tmp_path: Path) -> None:
    valid = np.zeros((160, 240), dtype=bool)
    valid[:, 20:180] = True  # a collar on both sides; the default right-hand strip is all nodata
    img = read(_raster(tmp_path / "collar.tif", valid))
    cfg = load_config("multiband_x2", ["train.patch_size=32"])
    ts = make_training_set(img, cfg)
    src = ts.sources[0]
    lo, hi = src.val_interval
    assert valid[:, lo:hi].mean() >= cfg.data.min_valid_fraction
    assert ts.val and all("valid" in b for b in ts.val)
    assert all(bool(b["valid"].all()) for b in ts.val)  # interior tiles of a fully valid band


def test_fully_valid_raster_keeps_the_right_hand_strip(tmp_path: Path) -> None:
    img = read(_raster(tmp_path / "full.tif", np.ones((96, 200), dtype=bool)))
    ts = make_training_set(img, load_config("multiband_x2", ["train.patch_size=32"]))
    lo, hi = ts.sources[0].val_interval
    assert hi == 200 and lo > 150


def test_too_little_valid_data_names_file_fractions_and_option(tmp_path: Path) -> None:
    valid = (np.indices((128, 128)).sum(axis=0) // 32) % 2 == 0  # diagonal stripes: every tile partly valid
    path = _raster(tmp_path / "stripes.tif", valid)
    cfg = load_config("multiband_x2", ["train.patch_size=16", "data.min_valid_fraction=0.2"])
    cfg_strict = load_config("multiband_x2", ["train.patch_size=16"])  # 0.9 needed
    make_training_set(read(path), cfg)  # works when the need is below what the data has
    with pytest.raises(DataError) as info:
        make_training_set(read(path), cfg_strict)
    msg = str(info.value)
    assert "stripes.tif" in msg and "--set data.min_valid_fraction=0." in msg and "90% needed" in msg
    assert len(msg.replace(str(path), "")) <= 200


@pytest.mark.shared_data
@pytest.mark.slow
def test_readme_geotiff_recipe_on_landsat_collar(shared_data: Path, tmp_path: Path, capsys) -> None:
    """README: `medsat-sr upscale scene.tif -o out.tif --config multiband_x2 --cog`, with a short budget."""
    src = shared_data / LANDSAT
    out = tmp_path / "landsat_x2.tif"
    code = main(["upscale", str(src), "-o", str(out), "--config", "multiband_x2", "--cog",
                 "--set", "train.max_iterations=6", "--set", "train.val_every=3", "--set", "train.batch_size=4"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    with rasterio.open(src) as a, rasterio.open(out) as b:
        assert b.crs == a.crs and b.bounds == pytest.approx(a.bounds)
        assert (b.width, b.height) == (2 * a.width, 2 * a.height)
        assert b.nodata == a.nodata and b.dtypes == a.dtypes
        assert b.overviews(1) and b.profile["tiled"]  # the COG layout
        arr = b.read(1, out_shape=(a.height, a.width))
        assert np.count_nonzero(arr) > 0.5 * arr.size
    record = json.loads(Path(f"{out}.json").read_text())
    assert record["decision"]["model_score"] is not None and record["decision"]["classical_score"] is not None


def _rgba(path: Path, h: int = 64, w: int = 80, collar: slice = slice(0, 20)) -> Path:
    """An RGBA orthophoto (drone and aerial mosaics): RGB, and an alpha band that is 0 on a collar of columns."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:h, 0:w]
    rgb = np.stack([100 + 60 * np.sin(xx / (4.0 + k)) * np.cos(yy / 5.0) + rng.normal(0, 3, (h, w)) for k in range(3)])
    alpha = np.full((h, w), 255, np.uint8)
    alpha[:, collar] = 0
    data = np.clip(rgb, 1, 255).astype(np.uint8) * (alpha > 0)
    with rasterio.open(path, "w", driver="GTiff", height=h, width=w, count=4, dtype="uint8", crs="EPSG:32633",
                       transform=from_origin(500000.0, 5200000.0, 0.5, 0.5), photometric="RGB", alpha="YES") as dst:
        dst.write(np.concatenate([data, alpha[None]]))
    return path


def test_an_alpha_band_is_the_validity_mask_not_a_band(tmp_path: Path) -> None:
    """RGBA in: three bands and the alpha as the mask; out: three bands and the mask upsampled, not a cubic alpha."""
    from medsat_sr import upscale
    from medsat_sr.info import describe
    from medsat_sr.io import geotiff

    src = _rgba(tmp_path / "ortho.tif")
    img = geotiff.read(src)
    assert img.shape[0] == 3 and img.meta[Key.HEADER]["alpha_band"] == 4
    assert img.meta["valid_mask"][:, :20].sum() == 0 and img.meta["valid_mask"][:, 20:].all()
    assert geotiff.read(src, bands=[4]).shape[0] == 1  # asked for by index: read as data
    d = describe(src)
    assert d["shape"][0] == 3 and d["channels"] == ["band1", "band2", "band3"] and d["alpha"].startswith("band 4")
    out = tmp_path / "x2.tif"
    upscale(src, method="cubic", scale=2, output=out)
    with rasterio.open(out) as o:
        assert o.count == 3 and [c.name for c in o.colorinterp] == ["red", "green", "blue"]
        mask = o.dataset_mask()
        assert (mask[:, :40] == 0).all() and (mask[:, 40:] == 255).all()  # the collar, nearest-upsampled
        assert o.read(1)[:, :40].max() == 0


def test_the_held_out_block_of_an_rgba_orthophoto_moves_off_its_alpha_collar(tmp_path: Path) -> None:
    """The alpha's collar on the right, where the held-out strip goes by default: the fit sees three bands, and
    its held-out block moves to valid pixels (before, the alpha was a fourth band and the collar was data)."""
    img = read(_rgba(tmp_path / "ortho.tif", 160, 240, slice(180, 240)))
    cfg = load_config("multiband_x2", ["train.patch_size=32"])
    ts = make_training_set(img, cfg)
    assert ts.in_channels == 3
    lo, hi = ts.sources[0].val_interval
    assert hi <= 180 and ts.val and all(bool(b["valid"].all()) for b in ts.val)


@pytest.mark.parametrize("nodata", [None, 0])
def test_a_nir_band_that_gdal_calls_alpha_stays_a_band(tmp_path: Path, nodata: int | None) -> None:
    """GDAL marks the fourth band of a 4-band byte GTiff written without PHOTOMETRIC as alpha: an RGBN file's NIR.
    Its values are not a mask, so it stays a band and masks nothing."""
    rng = np.random.default_rng(1)
    data = (rng.random((4, 48, 48)) * 200 + 20).astype(np.uint8)
    path = tmp_path / "rgbn.tif"
    with rasterio.open(path, "w", driver="GTiff", height=48, width=48, count=4, dtype="uint8", crs="EPSG:32633",
                       transform=from_origin(500000.0, 5200000.0, 1.0, 1.0), nodata=nodata) as dst:
        dst.write(data)
    with rasterio.open(path) as src:
        assert src.colorinterp[3].name == "alpha"  # GDAL's default, the premise of this test
    img = read(path)
    assert img.shape[0] == 4 and img.meta[Key.HEADER]["alpha_band"] is None
    assert img.meta.get("valid_mask") is None


def test_an_all_nodata_raster_is_refused_naming_the_file(tmp_path: Path) -> None:
    """A window off the scene (all nodata) failed with "channel(s) [0]: no valid values ..." and no file name."""
    path = _raster(tmp_path / "offscene.tif", np.zeros((64, 64), dtype=bool))
    with pytest.raises(DataError, match=r"offscene\.tif: channel\(s\) \[0\]: no valid values") as exc:
        make_training_set(read(path), load_config("multiband_x2", ["train.patch_size=32"]))
    assert isinstance(exc.value, OSError)

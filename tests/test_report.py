"""The evaluation report (medsat_sr.report): files, figures, a self-contained page that renders.

The report is built once per module on two small real references (a crop of
the MNI T1 template and of the aerial scene shipped in the package) with
classical methods and one tiny self-supervised fit (for the curves).
The page is rendered in headless Chromium when it is installed
(``.ci/run`` installs it); the test is skipped with the reason otherwise.
"""

from __future__ import annotations

import base64
import csv
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from medsat_sr.config import load_config
from medsat_sr.evaluate import crop_image, evaluate
from medsat_sr.io import read
from medsat_sr.report import CSV_COLUMNS

SAMPLES = Path(__file__).resolve().parents[1] / "medsat_sr" / "samples"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        path = shutil.which(name)
        if path:
            return path
    return "/usr/bin/chromium" if Path("/usr/bin/chromium").is_file() else None


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    tmp = tmp_path_factory.mktemp("report")
    mni = read(SAMPLES / "mni_icbm152_t1_2009a.nii.gz")
    vol = crop_image(mni, [70, 80, 40], [120, 140, 100])
    aer = read(SAMPLES / "rgbn_aerial_5m.tif")
    ras = crop_image(aer, [0, 0], [96, 128])
    ev_v = evaluate([vol], "mri_thick_slice", methods="cubic,linear", scale=[1, 1, 4], names=["mni_crop"], progress=False)
    cfg = load_config(
        "multiband_x2",
        ["model.kwargs={features: 8, n_blocks: 1}", "train.max_iterations=4", "train.val_every=2", "train.batch_size=2",
         "train.patch_size=16", "train.schedule.warmup_iterations=0", "train.precision=fp32"],
    )
    ev_r = evaluate([ras], cfg, methods="cubic,model", names=["aerial_crop"], progress=False)
    ev = ev_v.merge(ev_r)
    from medsat_sr.report import write_report

    out = tmp / "rep"
    write_report(ev, out, title="test report")
    return out, ev


def test_report_contains_all_files(report: tuple[Path, object]) -> None:
    out, ev = report
    names = {p.name for p in out.iterdir()}
    expected = {
        "metrics.json", "metrics.csv", "report.html", "gain_over_cubic.png",
        "panel_mni_crop.png", "panel_aerial_crop.png", "curves_aerial_crop_model.png",
    }
    assert expected <= names, names
    data = json.loads((out / "metrics.json").read_text(), parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))
    assert data["format"] == "medsat_sr.evaluation/1"
    assert [f["name"] for f in data["files"]] == ["mni_crop", "aerial_crop"]
    vol = data["files"][0]
    for key in ("degradation", "crop", "region", "data_range", "data_range_rule", "metrics", "units"):
        assert key in vol["settings"], key
    assert set(vol["methods"]) == {"cubic", "linear"}
    ras = data["files"][1]
    assert ras["settings"]["metrics"]["ergas"]["h_over_l"] == 0.5
    assert "per_band" in ras["methods"]["cubic"] and "sam" in ras["methods"]["model"]
    assert {h["file"] for h in data["headlines"]} == {"mni_crop", "aerial_crop"}
    assert "model" in data["summary"] and "cubic" in data["summary"]
    with open(out / "metrics.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == list(CSV_COLUMNS)
    assert {(r["file"], r["method"], r["band"]) for r in rows} >= {
        ("mni_crop", "cubic", "all"), ("mni_crop", "linear", "all"), ("aerial_crop", "model", "all"),
        ("aerial_crop", "model", "band1"), ("aerial_crop", "lanczos", "band4"),
    }
    cub = next(r for r in rows if r["file"] == "mni_crop" and r["method"] == "cubic")
    assert float(cub["psnr"]) == pytest.approx(ev.files[0].methods["cubic"]["psnr"], rel=1e-5)


def test_figures_are_not_empty(report: tuple[Path, object]) -> None:
    import matplotlib.image as mpimg

    out, _ = report
    for png in out.glob("*.png"):
        raw = png.read_bytes()
        assert raw.startswith(PNG_MAGIC), png
        img = mpimg.imread(png)
        assert img.shape[0] > 300 and img.shape[1] >= 1000, (png, img.shape)  # readable on a screen
        assert float(np.std(img[..., :3])) > 0.05, f"{png.name} looks blank"


def test_html_is_self_contained(report: tuple[Path, object]) -> None:
    out, _ = report
    page = (out / "report.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    srcs = re.findall(r'src="([^"]+)"', page)
    assert len(srcs) >= 4  # gain chart, two panels, curves
    for s in srcs:
        assert s.startswith("data:image/png;base64,"), s[:60]
        assert base64.b64decode(s.split(",", 1)[1]).startswith(PNG_MAGIC)
    assert not re.search(r'(href|src)="(https?:)?//', page), "the page must not load anything from the network"
    assert "<link" not in page and "<script" not in page
    for text in ("mni_crop", "aerial_crop", "PSNR", "data range", "ERGAS", "Headline", "How to read this report"):
        assert text in page, text


def test_headline_is_plain(report: tuple[Path, object]) -> None:
    """One sentence per file: better or not than cubic by how much, on which pixels, and the fallback decision."""
    out, ev = report
    page = (out / "report.html").read_text()
    aer = ev.files[1]
    gain = aer.methods["model"]["psnr_masked_gain_vs_cubic"]
    decision = aer.methods["model"]["decision"]
    assert decision is not None and "forced" in decision  # upscale's own decision is recorded
    verdict = f"sharper than cubic by {gain:.1f} dB" if gain > 0 else f"not better than cubic ({gain:+.1f} dB"
    assert verdict in page
    assert "held-out pixels" in page
    assert ("upscale would fall back to cubic here" if decision["forced"] else "no fallback") in page
    assert "Classical methods only" in page  # the volume ran classical methods only
    data = json.loads((out / "metrics.json").read_text())
    assert data["files"][1]["methods"]["model"]["fit"]["validation_trend"]["best_iteration"] >= 0


def test_raster_panel_has_coordinates_and_scale(report: tuple[Path, object]) -> None:
    """The raster panel names its CRS and crop corners (CRS units); the scale bar uses the pixel size."""
    from medsat_sr.report_figures import _views

    _, ev = report
    v = _views(ev.files[1])
    assert v["bar"] == (pytest.approx(5.0), "m")
    r0, _, c0, _ = v["crop"]
    x0, y0 = 792988.0 + 5.0 * c0, 2050382.0 - 5.0 * r0  # the sample's transform, the crop's upper-left corner
    assert "EPSG:32618" in v["corners"] and "UTM zone 18N" in v["corners"]
    assert f"x {x0:,.0f} m".replace(",", "\u2009") in v["corners"] and f"y {y0:,.0f} m".replace(",", "\u2009") in v["corners"]
    vv = _views(ev.files[0])
    assert vv["bar"] == (pytest.approx(1.0), "mm") and vv["corners"] is None


def test_profile_band_names_replace_placeholders() -> None:
    """A file without band descriptions gets the domain profile's band names (rgbn_aerial: red ... nir)."""
    from medsat_sr.report_figures import _views

    ras = crop_image(read(SAMPLES / "rgbn_aerial_5m.tif"), [0, 0], [64, 64])
    assert ras.meta["band_names"] == ["band1", "band2", "band3", "band4"]
    ev = evaluate([ras], load_config("multiband_x2", ["domain=rgbn_aerial"]), methods="cubic", holdout=0,
                  names=["aer"], progress=False)
    fr = ev.files[0]
    assert fr.settings["band_names"] == ["red", "green", "blue", "nir"]
    assert fr.settings["band_labels"][3] == "near infrared (nir)"
    assert fr.methods["cubic"]["per_band"]["names"] == ["red", "green", "blue", "nir"]
    assert "bands red, green, blue" in _views(fr)["description"]


def test_html_renders_in_headless_chromium(report: tuple[Path, object], tmp_path: Path) -> None:
    exe = _chromium()
    if exe is None:
        pytest.skip("Chromium is not installed (apt-get install chromium; .ci/run installs it): cannot render report.html")
    out, _ = report
    shot = tmp_path / "shot.png"
    cmd = [
        exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run",
        "--disable-component-update", "--disable-sync", "--hide-scrollbars", f"--user-data-dir={tmp_path / 'profile'}",
        "--window-size=1280,1600", f"--screenshot={shot}", (out / "report.html").resolve().as_uri(),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180, check=False)
    assert shot.is_file(), f"no screenshot (exit {proc.returncode}): {proc.stderr[-2000:]}"
    import matplotlib.image as mpimg

    img = mpimg.imread(shot)
    assert img.shape[0] >= 1000 and img.shape[1] >= 1000
    assert float(np.std(img[..., :3])) > 0.05, "the rendered page is blank"
    # the page is mostly white; a non-trivial share of pixels must be drawn (text, tables, figures)
    assert float(np.mean(img[..., :3].mean(axis=-1) < 0.9)) > 0.02


def test_isotropic_volume_panel_is_an_axial_slice(tmp_path: Path) -> None:
    """Without a thick axis the panel shows the axial slice through the mask's centre, anterior up."""
    mni = read(SAMPLES / "mni_icbm152_t1_2009a.nii.gz")
    vol = crop_image(mni, [60, 70, 50], [124, 150, 110])
    ev = evaluate([vol], "mri_isotropic_x2", methods="cubic", names=["iso"], progress=False)
    from medsat_sr.report_figures import _views, panel_figure

    v = _views(ev.files[0])
    assert v["description"].startswith("axial slice k=") and "anterior up" in v["description"]
    p = panel_figure(ev.files[0], tmp_path / "p.png")
    import matplotlib.image as mpimg

    assert float(np.std(mpimg.imread(p)[..., :3])) > 0.05

"""`medsat-sr demo`: a smoke run with a tiny training budget (marked slow: about a minute or two on 2 cores).

The numbers of so short a run mean nothing; the test checks that every
product is written with the right geometry, that the report is complete,
and that the summary names the numbers and the paths.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest
import rasterio

from medsat_sr import geometry
from medsat_sr.cli import main
from medsat_sr.demo import AERIAL_SAMPLE, MARGIN, MRI_SAMPLE, _brain_box, sample_path
from medsat_sr.io import read

pytestmark = pytest.mark.slow


def _modes(root: Path) -> tuple[set[str], set[str]]:
    """The modes of every folder and every file under ``root`` (itself included)."""
    dirs = {oct(stat.S_IMODE(root.stat().st_mode))}
    files = set()
    for p in root.rglob("*"):
        (dirs if p.is_dir() else files).add(oct(stat.S_IMODE(p.stat().st_mode)))
    return dirs, files


def test_demo_smoke(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "demo"
    old = os.umask(0o022)
    try:
        code = main(["demo", "-o", str(out), "--minutes", "0.05"])
    finally:
        os.umask(old)
    captured = capsys.readouterr()
    text = captured.out
    assert code == 0, text
    # every writer (NIfTI, DICOM, COG, records, checkpoints, metrics, report, figures) follows the umask
    assert _modes(out) == ({"0o755"}, {"0o644"})
    # off a terminal: no bar redraws, a line per stage and per 10 %
    assert "\r" not in captured.err and len(captured.err) < 20_000, captured.err[-2000:]
    # a verdict per case, last: what was written, vs cubic, fallback, trust record
    verdicts = [line for line in text.splitlines() if line.startswith("verdict: ")]
    assert len(verdicts) == 2 and text.strip().splitlines()[-2:] == verdicts
    assert "mni_t1_sr_1mm.nii.gz: " in verdicts[0] and "mni_t1_sr_1mm.nii.gz.json" in verdicts[0]
    assert "rgbn_aerial_2.5m_sr.tif: " in verdicts[1] and "rgbn_aerial_2.5m_sr.tif.json" in verdicts[1]
    assert all("vs cubic" in v or "vs GDAL cubic" in v or "vs cubic B-spline" in v for v in verdicts), verdicts
    assert "medsat-sr demo: done in" in text
    assert "MR thick slices" in text and "aerial RGBN x2" in text and "vs cubic" in text
    for name in ("mni_t1_4mm_slices.nii.gz", "mni_t1_sr_1mm.nii.gz", "rgbn_aerial_2.5m_sr.tif", "report.html"):
        assert name in text, name

    # MR: the thick-slice input and the result, on grids that share the field of view
    src = read(sample_path(MRI_SAMPLE))
    start, stop = _brain_box(src.as_tensor().numpy(), MARGIN)
    thick = read(out / "mri" / "mni_t1_4mm_slices.nii.gz")
    sr = read(out / "mri" / "mni_t1_sr_1mm.nii.gz")
    assert thick.meta["spacing"] == pytest.approx((1.0, 1.0, 4.0))
    assert sr.meta["spacing"] == pytest.approx((1.0, 1.0, 1.0))
    # the MR outputs keep the template's dtype and range (as upscale does)
    for img in (thick, sr):
        assert img.meta["source_dtype"] == src.meta["source_dtype"] == "uint8"
        assert float(img.min()) >= float(src.min()) and float(img.max()) <= float(src.max())
    assert sr.shape[1:3] == thick.shape[1:3] and sr.shape[3] == 4 * thick.shape[3]
    assert tuple(sr.shape[1:3]) == tuple(b - a for a, b in zip(start[:2], stop[:2]))
    np.testing.assert_allclose(
        geometry.fov_corners(np.asarray(sr.affine), sr.shape[1:]),
        geometry.fov_corners(np.asarray(thick.affine), thick.shape[1:]),
        atol=1e-4,
    )
    # the result's voxels are voxels of the template (same 3x3, integer offset)
    off = np.linalg.solve(np.asarray(src.affine)[:3, :3], np.asarray(sr.affine)[:3, 3] - np.asarray(src.affine)[:3, 3])
    np.testing.assert_allclose(off, np.round(off), atol=1e-6)
    np.testing.assert_allclose(np.asarray(sr.affine)[:3, :3], np.asarray(src.affine)[:3, :3], atol=1e-9)
    dcm = read(out / "mri" / "mni_t1_sr_1mm_dicom")
    assert tuple(dcm.shape) == tuple(sr.shape)
    np.testing.assert_allclose(np.asarray(dcm.affine), np.asarray(sr.affine), atol=1e-3)
    assert float((dcm.as_tensor() - sr.as_tensor()).abs().max()) <= 0.5 + 1e-3  # int16 rounding only
    assert (out / "mri" / "mni_t1_cubic_1mm.nii.gz").is_file()

    # aerial: a COG at half the pixel size, same CRS and bounds
    with rasterio.open(sample_path(AERIAL_SAMPLE)) as s, rasterio.open(out / "aerial" / "rgbn_aerial_2.5m_sr.tif") as d:
        assert (d.width, d.height, d.count) == (2 * s.width, 2 * s.height, s.count)
        assert d.crs == s.crs and d.bounds == pytest.approx(s.bounds)
        assert tuple(d.transform)[:6] == pytest.approx(geometry.scale_transform(tuple(s.transform)[:6], 2))
        assert d.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
    record = json.loads((out / "aerial" / "rgbn_aerial_2.5m_sr.tif.json").read_text())
    assert "fallback" in record

    # the report covers both samples
    rep = out / "report"
    data = json.loads((rep / "metrics.json").read_text())
    assert [f["name"] for f in data["files"]] == ["mni_t1_4mm_slices", "rgbn_aerial_5m"]
    assert set(data["files"][0]["methods"]) == {"cubic", "model"}
    assert set(data["files"][1]["methods"]) == {"cubic", "lanczos", "model"}
    for png in ("panel_mni_t1_4mm_slices.png", "panel_rgbn_aerial_5m.png", "gain_over_cubic.png"):
        assert (rep / png).stat().st_size > 10_000, png
    assert (rep / "report.html").stat().st_size > 50_000

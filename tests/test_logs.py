"""Logging for people and for batch logs, and the verdict line (issue #13)."""

from __future__ import annotations

import io
import json
import logging
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import Affine

from medsat_sr import logs
from medsat_sr.cli import _short, main
from medsat_sr.inference.verdict import PREFIX, record_verdict, verdict_line
from medsat_sr.progress import Progress


@pytest.fixture
def stream() -> io.StringIO:
    """The CLI's logging set-up writing to a string (restored to stderr afterwards)."""
    buf = io.StringIO()
    logs.setup(stream=buf)
    yield buf
    logs.setup()


def test_off_a_terminal_progress_is_one_line_per_ten_percent(stream: io.StringIO) -> None:
    p = Progress(400, "training", unit="iteration")
    for _ in range(400):
        p.set_postfix_str("loss 0.0123")
        p.update()
    p.close()
    lines = stream.getvalue().splitlines()
    assert "\r" not in stream.getvalue()
    assert len(lines) == 11  # started, 10 % ... 90 %, 100 %
    assert lines[0] == "training: started (400 iterations)"
    assert lines[3].startswith("training: 30% (iteration 120 of 400") and lines[3].endswith("loss 0.0123")
    assert lines[-1].startswith("training: 100% (iteration 400 of 400")


def test_a_budget_drives_the_progress_and_its_end_is_said(stream: io.StringIO) -> None:
    p = Progress(10**6, "training", unit="iteration", budget_s=0.2)
    while p.fraction() < 1.0:
        time.sleep(0.01)
        p.update()
    p.close("stopped by the time budget")
    lines = stream.getvalue().splitlines()
    assert "budget 0.2 s" in lines[0] and len(lines) <= 12
    assert lines[-1].startswith("training: 100% (") and lines[-1].endswith("; stopped by the time budget")


def test_quiet_shows_no_progress() -> None:
    buf = io.StringIO()
    logs.setup(quiet=True, stream=buf)
    try:
        with Progress(10, "upscale", unit="tile") as p:
            p.update(10)
        logging.getLogger("medsat_sr.io.nifti").warning("hidden")
    finally:
        logs.setup()
    assert buf.getvalue() == ""


def test_warnings_name_their_file_once(stream: io.StringIO) -> None:
    log = logging.getLogger("medsat_sr.io.nifti")
    with logs.naming("/data/out.nii.gz"):
        log.warning("%d voxels clipped to the %s range", 12, "uint8")
        log.warning("/data/out.nii.gz: already named")
        log.warning("/data/other.tif: 3 values clipped")  # a message about another file keeps its own name
    log.warning("no file in scope")
    lines = stream.getvalue().splitlines()
    assert lines == [
        "WARNING medsat_sr.io.nifti: /data/out.nii.gz: 12 voxels clipped to the uint8 range",
        "WARNING medsat_sr.io.nifti: /data/out.nii.gz: already named",
        "WARNING medsat_sr.io.nifti: /data/other.tif: 3 values clipped",
        "WARNING medsat_sr.io.nifti: no file in scope",
    ]


def test_reader_and_writer_name_the_file(stream: io.StringIO, tmp_path: Path) -> None:
    from medsat_sr.image import make_volume
    from medsat_sr.io import write

    vol = make_volume(np.full((1, 3, 3, 3), 300.0, np.float32), np.eye(4), source_dtype="uint8")
    out = write(vol, tmp_path / "clipped.nii.gz")
    assert f"{out}: 27 voxels clipped to the uint8 range [0, 255] (0 below, 27 above; 100 % of the volume)" \
        in stream.getvalue()


def test_log_json_is_one_object_per_event(tmp_path: Path) -> None:
    buf = io.StringIO()
    logs.setup(json_lines=True, stream=buf)
    try:
        with logs.naming("scene.tif"):
            with Progress(20, "upscale", unit="tile") as p:
                p.update(20)
            logging.getLogger("medsat_sr.io.geotiff").warning("5 pixels clipped")
    finally:
        logs.setup()
    events = [json.loads(line) for line in buf.getvalue().splitlines()]
    assert [e["event"] for e in events[:-1]] == ["progress", "progress"] and events[-2]["percent"] == 100
    assert events[-1]["level"] == "warning" and events[-1]["file"] == "scene.tif"
    assert events[-1]["message"] == "scene.tif: 5 pixels clipped"


def test_verdict_lines() -> None:
    won = verdict_line("out.tif", method="model", model_score=31.42, classical_score=29.17,
                       classical_method="GDAL cubic", record="out.tif.json")
    assert won == (f"{PREFIX} out.tif: model, +2.25 dB vs GDAL cubic on held-out pixels (31.42 vs 29.17 dB); "
                   "no fallback; record out.tif.json")
    lost = verdict_line("o.nii.gz", method="model", model_score=28.1, classical_score=28.5,
                        classical_method="cubic B-spline", fell_back=True, record="o.nii.gz.json")
    assert "o.nii.gz: cubic B-spline (fell back: the model scored -0.40 dB vs cubic B-spline" in lost
    assert "; fell back; record o.nii.gz.json" in lost
    asked = verdict_line("c.tif", method="cubic", record=None)
    assert "a classical method was asked for" in asked and asked.endswith("no trust record")
    ratio = verdict_line("e.tif", method="model", model_score=0.9, classical_score=0.6, unit="ratio")
    assert "1.50x cubic" in ratio
    careful = verdict_line("l8.tif", method="model", model_score=36.78, classical_score=33.47,
                           classical_method="GDAL cubic", record="l8.tif.json", caution="degradation not measured")
    assert careful.endswith("; no fallback; caution: degradation not measured; record l8.tif.json")


def test_verdict_from_a_trust_record() -> None:
    record = {"method": "model", "output": {"path": "a.tif"},
              "decision": {"use_model": False, "fell_back": True, "model_score": 20.0, "classical_score": 21.0,
                           "classical_method": "GDAL cubic"}}
    line = record_verdict(record, sidecar="a.tif.json")
    assert line.startswith(f"{PREFIX} a.tif: GDAL cubic (fell back") and "-1.00 dB" in line and "caution" not in line
    record["decision"]["caution"] = "degradation not measured on this input"
    assert "; fell back; caution: degradation not measured on this input; record a.tif.json" in record_verdict(
        record, sidecar="a.tif.json")


def test_a_fallback_that_beat_cubic_names_the_interpolation_path() -> None:
    """A model above GDAL cubic but not above its own untrained interpolation path fell back: the line says why."""
    record = {"method": "model", "output": {"path": "a.tif"},
              "decision": {"use_model": False, "fell_back": True, "model_score": 18.61, "classical_score": 18.38,
                           "interp_score": 18.61, "classical_method": "GDAL cubic"}}
    line = record_verdict(record, sidecar="a.tif.json")
    assert ("(fell back: the model scored +0.23 dB vs GDAL cubic on held-out pixels (18.61 vs 18.38 dB), but "
            "+0.00 dB vs its own untrained interpolation path (18.61 dB)); fell back") in line
    record["decision"]["model_score"] = 18.0  # lost to cubic: that alone is the reason
    assert "interpolation path" not in record_verdict(record, sidecar="a.tif.json")


def test_a_fallback_names_the_gain_the_model_needed() -> None:
    """``--set inference.min_gain_db=50``: a model 1 dB above cubic fell back, and the line says what it lacked."""
    record = {"method": "model", "output": {"path": "s.nii.gz"},
              "decision": {"use_model": False, "fell_back": True, "model_score": 27.70, "classical_score": 26.67,
                           "classical_method": "cubic B-spline", "margin_db": 50.0}}
    line = record_verdict(record, sidecar="s.nii.gz.json")
    assert ("(fell back: the model scored +1.03 dB vs cubic B-spline on held-out pixels (27.70 vs 26.67 dB); "
            "it must win by 50 dB); fell back") in line
    record["decision"].update(margin_db=0.0)  # a route deciding on another score (multi-stack: NCC) needs no margin
    assert "must win" not in record_verdict(record, sidecar="s.nii.gz.json")
    record["decision"].update(fell_back=False, use_model=True, margin_db=50.0)
    assert "must win" not in record_verdict(record, sidecar="s.nii.gz.json")


def test_verdict_of_a_pansharpening_fallback_speaks_ergas() -> None:
    """The pan-sharpening decision scores ERGAS (lower is better): the verdict says so, and names what lost."""
    record = {"method": "mtf-glp-hpm", "output": "p.tif",
              "decision": {"use_model": False, "fell_back": True, "model_score": 1.938, "classical_score": 1.737,
                           "classical_method": "mtf-glp-hpm", "metric": "ERGAS"}}
    line = record_verdict(record, sidecar="p.tif.json")
    assert line == (f"{PREFIX} p.tif: mtf-glp-hpm (fell back: the network scored ERGAS 1.938 vs 1.737 for "
                    "mtf-glp-hpm on held-out pixels (lower is better)); fell back; record p.tif.json")
    asked = record_verdict({"method": "gsa", "output": "g.tif", "decision": {"use_model": False, "fell_back": False,
                                                                             "model_score": None}})
    assert "g.tif: gsa (a classical method was asked for; no held-out comparison); no model" in asked


def test_error_lines_are_short() -> None:
    long = "/data/scan.nii.gz: " + "; ".join(f"candidate {i} does not match the grid" for i in range(40))
    text = _short(long)
    assert text.startswith("/data/scan.nii.gz: candidate 0") and len(text) <= 230 and text.endswith("(--debug for the rest)")
    assert _short("short message") == "short message"


def test_a_long_error_keeps_its_remedy() -> None:
    """The last clause (what to do) stays whole; the problem is cut in the middle (the gantry-tilt refusal)."""
    msg = ("/data/dicom/ct_head_ge_tilt_dcm_qa_ct [series 1.2.826.0.1.3680043.9.4245.3115138630835728997848661150714813892#2]: gantry tilt 18.5° "
           "(slices 15.dcm to 28.dcm, GantryDetectorTilt 18.5): the table step (7.38 mm) is not perpendicular to the "
           "slices (7.00 mm apart), so only a sheared affine would place them; pass resample=True (--resample) to "
           "resample onto an orthogonal grid as dcm2niix's tilt correction does")
    text = _short(msg)
    assert text.startswith("/data/dicom/ct_head_ge_tilt_dcm_qa_ct [series 1.2.826") and "gantry tilt 18.5° (" in text
    assert text.count("(") == text.count(")") and " ...); pass resample" in text  # the cut parenthesis is closed
    assert text.endswith("; pass resample=True (--resample) to resample onto an orthogonal grid as dcm2niix's tilt "
                         "correction does (--debug for the rest)")
    assert len(text) <= 320


def test_an_error_over_a_listing_keeps_its_headline() -> None:
    head = "/data/GE: 2 candidate series ([1] 4 mm thick, [2] 7 mm thick); choose one with --series 1..2:"
    listing = "\n".join(f"  [{i}] 1.2.826.0.1.3680043.9.4245.{i}, CT, #2, '', 14 images in 14 files, " + "x" * 120
                        for i in (1, 2))
    assert _short(head + "\n" + listing) == head.rstrip(":") + " (--debug for the rest)"


def _raster(path: Path) -> Path:
    rng = np.random.default_rng(0)
    with rasterio.open(path, "w", driver="GTiff", width=40, height=30, count=2, dtype="uint8", crs="EPSG:32631",
                       transform=Affine(10, 0, 300000, 0, -10, 4000000)) as dst:
        dst.write((rng.random((2, 30, 40)) * 200).astype(np.uint8))
    return path


def test_upscale_ends_with_a_verdict_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "x2.tif"
    assert main(["upscale", str(_raster(tmp_path / "in.tif")), "-o", str(out), "--method", "cubic", "--scale", "2"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith(f"{PREFIX} {out}: cubic") and last.endswith(f"record {out}.json")


def test_a_checkpoint_applied_as_it_is_says_its_scores_are_not_from_this_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--model PATH`` reports its training's validation, not a score on the input, and says so."""
    from medsat_sr.checkpoint import save_checkpoint
    from medsat_sr.models import build_model

    net = build_model("edsr", spatial_dims=2, in_channels=2, scale=2, features=4, n_blocks=1)
    save_checkpoint(tmp_path / "m", net, {"metrics": {"val_psnr": 31.0, "val_psnr_cubic": 30.0}})
    out = tmp_path / "x2.tif"
    assert main(["upscale", str(_raster(tmp_path / "in.tif")), "-o", str(out), "--model", str(tmp_path / "m")]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert "+1.00 dB vs GDAL cubic on its training's held-out data, not this input's (31.00 vs 30.00 dB)" in last, last
    fit = {"method": "model", "decision": {"model_score": 31.0, "classical_score": 30.0, "source": "self-supervised fit"}}
    assert "vs cubic on held-out pixels (31.00 vs 30.00 dB)" in record_verdict(fit)


def test_batch_gives_a_verdict_per_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a, b = _raster(tmp_path / "a.tif"), _raster(tmp_path / "b.tif")
    assert main(["batch", str(a), str(b), "-o", str(tmp_path / "out"), "--method", "cubic", "--scale", "2"]) == 0
    verdicts = [line for line in capsys.readouterr().out.splitlines() if line.startswith(PREFIX)]
    assert len(verdicts) == 2 and all("record " in v and "_sr.tif" in v for v in verdicts)


def test_cli_error_as_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["--log-json", "info", str(tmp_path / "missing.nii.gz")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    event = json.loads(err[0])
    assert event["level"] == "error" and "missing.nii.gz" in event["message"]


def test_numbers_in_messages_have_sensible_precision() -> None:
    from medsat_sr.errors import numbers_text

    assert numbers_text([1.0, 1.0, 3.9999999700000002]) == "[1, 1, 4]"
    assert numbers_text(18.50000155) == "18.5" and numbers_text((0.48828125, 0.48828125)) == "[0.4883, 0.4883]"
    assert numbers_text("auto") == "auto"


def test_early_stopping_is_built_without_a_deprecation_warning() -> None:
    import warnings

    from ignite.engine import Engine
    from ignite.handlers import EarlyStopping

    from medsat_sr.train import _es_threshold

    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        es = EarlyStopping(patience=2, score_function=lambda e: 0.0, trainer=Engine(lambda e, b: None),
                           **_es_threshold(EarlyStopping, 0.01))
    assert getattr(es, "threshold", getattr(es, "min_delta", None)) == 0.01


def test_progress_lines_say_their_unit_in_the_plural(stream: io.StringIO) -> None:
    with Progress(24, "slices (axis 1)", unit="batch") as p:
        for _ in range(24):
            p.update()
    text = stream.getvalue()
    assert "slices (axis 1): started (24 batches)" in text and "(24/24 batches" in text and "batchs" not in text

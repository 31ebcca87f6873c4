"""Plain-language parts of the report (medsat_sr.report_plain): sentences, curve notes, band labels, map furniture."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from medsat_sr.report_plain import (
    band_labels, corner_text, crs_units, headline, nice_length, trend_sentence, validation_trend,
)


def _history(values: list[float]) -> list[dict[str, float]]:
    return [{"iteration": 100 * (i + 1), "val_psnr": v} for i, v in enumerate(values)]


def test_late_drop_is_found_and_names_the_best_checkpoint() -> None:
    t = validation_trend(_history([28.0, 29.5, 30.2, 30.0, 29.7]))
    assert t is not None and t["late_drop"]
    assert (t["best_iteration"], t["last_iteration"]) == (300, 500)
    assert t["drop_db"] == pytest.approx(0.5)
    s = trend_sentence(t, "model")
    assert "peaked at 30.20 dB at iteration 300" in s and "-0.50 dB" in s and "overfit" in s
    assert "best checkpoint (iteration 300)" in s


def test_no_late_drop_when_the_curve_ends_near_its_peak() -> None:
    t = validation_trend(_history([28.0, 29.0, 30.0, 29.95]))
    assert t is not None and not t["late_drop"]
    assert "no sign of overfitting" in trend_sentence(t, "model")
    assert validation_trend(_history([28.0])) is None


def test_band_labels_prefer_real_names() -> None:
    prof = [SimpleNamespace(name="red", description="red"), SimpleNamespace(name="nir", description="near infrared")]
    assert band_labels(["B05", "B8A"], prof, 2) == ["B05", "B8A"]
    assert band_labels(["nir", "B8A"], prof, 2) == ["near infrared (nir)", "B8A"]
    assert band_labels(["band1", "band2"], prof, 2) == ["red", "near infrared (nir)"]
    assert band_labels(["band1", "band2", "band3"], prof, 3) == ["band 1", "band 2", "band 3"]


def test_scale_bar_length_and_crs_text() -> None:
    assert [nice_length(v) for v in (0.7, 192.0, 1000.0, 4999.0)] == [0.5, 100.0, 1000.0, 2000.0]
    with pytest.raises(ValueError):
        nice_length(0.0)
    assert crs_units("EPSG:32618") == ("m", "EPSG:32618, WGS 84 / UTM zone 18N")
    assert crs_units("EPSG:4326")[0] == "°"
    text = corner_text((10.0, 0.0, 500000.0, 0.0, -10.0, 4000000.0), "EPSG:32633", (2, 12, 4, 24))
    assert "upper left x 500\u2009040 m, y 3\u2009999\u2009980 m" in text
    assert "lower right x 500\u2009240 m, y 3\u2009999\u2009880 m" in text


def _file(gain: float, decision: dict | None, holdout: bool = True) -> SimpleNamespace:
    methods = {"cubic": {"psnr_masked": 30.0}, "model": {"psnr_masked": 30.0 + gain, "psnr_masked_gain_vs_cubic": gain,
                                                          "kind": "self_supervised", "decision": decision}}
    settings = {"degradation": {"holdout": {"fraction": 0.5}} if holdout else {}}
    return SimpleNamespace(methods=methods, settings=settings, case=SimpleNamespace(kind="raster"),
                           best_learned=lambda: "model")


def test_headline_sentences() -> None:
    ok = headline(_file(2.31, {"use_model": True, "forced": False, "fell_back": False, "reason": "beats cubic"}))
    assert ok["text"] == "model: sharper than cubic by 2.3 dB on held-out pixels (the part of the scene that training never saw); no fallback"
    assert ok["good"] is True and "23 % smaller" in ok["gloss"]
    bad = headline(_file(-0.4, {"use_model": True, "forced": True, "fell_back": False, "reason": "no gain"}))
    assert bad["text"].startswith("model: not better than cubic (-0.4 dB") and "upscale would fall back to cubic here" in bad["text"]
    assert bad["good"] is False and "larger" in bad["gloss"]

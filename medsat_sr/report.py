"""The evaluation report: metrics.json, metrics.csv, PNG figures and one self-contained report.html.

:func:`write_report` turns an :class:`~medsat_sr.evaluate.Evaluation` into a
folder:

================================ ===============================================
file                             content
================================ ===============================================
``metrics.json``                 every number and every setting it depends on
                                 (:meth:`Evaluation.to_dict`)
``metrics.csv``                  one row per file x method (band ``all``) and
                                 per file x method x band (rasters)
``panel_<file>.png``             the same crop of the input, each method, the
                                 reference and the ``|error|`` maps, with the
                                 slice or bands named
``gain_over_cubic.png``          PSNR gain over cubic per file and method
                                 (whole and masked)
``curves_<file>_<method>.png``   training curves of self-supervised fits
``report.html``                  one page, figures embedded (base64), no
                                 external resource: opens offline, mails as
                                 one file
================================ ===============================================

The figures are drawn by :mod:`medsat_sr.report_figures`.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import logging
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from medsat_sr._atomic import write_bytes
from medsat_sr.errors import WriteError
from medsat_sr.report_figures import CROP_SIZE, curves_figure, gain_figure, panel_figure
from medsat_sr.report_plain import band_labels, headline, trend_sentence, validation_trend

__all__ = [
    "write_report",
    "write_metrics_json",
    "write_metrics_csv",
    "panel_figure",
    "gain_figure",
    "curves_figure",
    "render_html",
    "CSV_COLUMNS",
    "CROP_SIZE",
]

logger = logging.getLogger(__name__)

#: Columns of metrics.csv.
CSV_COLUMNS = (
    "file", "kind", "method", "band", "psnr", "psnr_masked", "psnr_gain_vs_cubic", "psnr_masked_gain_vs_cubic",
    "ssim", "ssim_masked", "ssim_slices", "mae", "mae_masked", "mse", "mse_masked", "rmse", "sam", "ergas",
    "seconds", "fit_seconds", "apply_seconds", "peak_rss_mb", "peak_rss_increase_mb", "data_range", "units",
)


def _safe(name: str) -> str:
    keep = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)
    return keep.strip("._") or "file"


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (Path, os.PathLike)):
        return str(o)
    if isinstance(o, (set, tuple)):
        return list(o)
    return str(o)


def _finite(o: Any) -> Any:
    """JSON has no NaN/inf: replace them with None (strict JSON readers accept the file)."""
    if isinstance(o, float):
        return o if math.isfinite(o) else None
    if isinstance(o, dict):
        return {str(k): _finite(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_finite(v) for v in o]
    return o


# =============================================================== tables
def write_metrics_json(evaluation: Any, path: str | os.PathLike[str]) -> Path:
    """Write :meth:`Evaluation.to_dict` as strict JSON (non-finite numbers as ``null``)."""
    p = Path(path)
    text = json.dumps(_finite(json.loads(json.dumps(evaluation.to_dict(), default=_json_default))), indent=2,
                      allow_nan=False)
    write_bytes(p, (text + "\n").encode("utf-8"))
    return p


def _csv_rows(evaluation: Any) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for f in evaluation.files:
        units = f.settings.get("units")
        for m, r in f.methods.items():
            row = {k: r.get(k) for k in CSV_COLUMNS if k in r}
            row.update(file=f.name, kind=f.case.kind, method=m, band="all", data_range=f.settings.get("data_range"),
                       units=units)
            rows.append(row)
            pb = r.get("per_band")
            if pb:
                for i, b in enumerate(pb["names"]):
                    rows.append({
                        "file": f.name, "kind": f.case.kind, "method": m, "band": b,
                        "psnr_masked": pb["psnr"][i], "rmse": pb["rmse"][i], "mae_masked": pb["mae"][i],
                        "ssim_masked": pb["ssim"][i], "data_range": pb["data_range"][i], "units": units,
                    })
    return rows


def write_metrics_csv(evaluation: Any, path: str | os.PathLike[str]) -> Path:
    """Write metrics.csv (:data:`CSV_COLUMNS`); empty cells where a metric does not apply.

    Per-band rows (rasters) hold the per-band metrics on the masked (valid)
    pixels in the ``*_masked`` columns and ``rmse``, with the band's data range.
    """
    p = Path(path)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(CSV_COLUMNS), extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for row in _csv_rows(evaluation):
        clean = {}
        for k in CSV_COLUMNS:
            v = row.get(k)
            if isinstance(v, float):
                v = "" if not math.isfinite(v) else f"{v:.6g}"
            clean[k] = "" if v is None else v
        w.writerow(clean)
    write_bytes(p, buf.getvalue().encode("utf-8"))
    return p


# =============================================================== figure helpers
# =============================================================== HTML
_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;max-width:1200px;color:#222;padding:0 1em}
h1{font-size:1.6em;margin-bottom:.2em}h2{font-size:1.25em;margin-top:1.6em;border-bottom:1px solid #ccc}
h3{font-size:1.05em}table{border-collapse:collapse;margin:.6em 0;font-size:.88em}
th,td{border:1px solid #ccc;padding:.25em .55em;text-align:right}th{background:#f1f3f5}
td.l,th.l{text-align:left}.good{color:#0a7d32;font-weight:600}.bad{color:#b3261e;font-weight:600}
.box{border:1px solid #ccc;border-radius:6px;padding:.6em 1em;margin:.8em 0;background:#fafbfc}
img{max-width:100%;border:1px solid #ddd;margin:.4em 0}pre{background:#f6f8fa;padding:.6em;overflow-x:auto;font-size:.8em}
.small{font-size:.85em;color:#555}
"""


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, (int, float)):
        if not math.isfinite(float(v)):
            return "∞" if float(v) > 0 else "–"
        return f"{float(v):.{digits}f}"
    return html.escape(str(v))


def _img_tag(png: Path, alt: str) -> str:
    data = base64.b64encode(Path(png).read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _headline_html(h: dict[str, Any]) -> str:
    name = html.escape(str(h["file"]))
    if h.get("method") is None:
        return f"<li><b>{name}</b>: classical methods only; cubic PSNR {_fmt(h.get('cubic_psnr'), 2)} dB.</li>"
    g = h.get("gain_masked")
    cls = "good" if h.get("beats_cubic") else "bad"
    verdict = "beats cubic" if h.get("beats_cubic") else "does <b>not</b> beat cubic"
    return (
        f"<li><b>{name}</b>: {html.escape(str(h['method']))} {verdict}: PSNR (masked) "
        f"{_fmt(h.get('psnr_masked'), 2)} dB vs cubic {_fmt(h.get('cubic_psnr_masked'), 2)} dB "
        f"(<span class='{cls}'>{'+' if (g or 0) >= 0 else ''}{_fmt(g, 2)} dB</span>); whole image "
        f"{_fmt(h.get('psnr'), 2)} vs {_fmt(h.get('cubic_psnr'), 2)} dB.</li>"
    )


def _plain_html(fr: Any) -> str:
    h = headline(fr)
    cls = {True: "good", False: "bad"}.get(h["good"], "")
    text = html.escape(h["text"])
    return (f"<li><b>{html.escape(str(fr.name))}</b>: <span class='{cls}'>{text[:1].upper() + text[1:]}</span>. "
            f"<span class='small'>{html.escape(h['gloss'])}</span></li>")


_GLOSSARY = (
    "<div class='box small'><b>How to read this report.</b> Each original image was made coarser on purpose (as a "
    "coarser sensor or thicker slices would see it), then brought back to full resolution by each method. The "
    "results are compared with the original, which no method saw. <b>Cubic</b> is the standard interpolation of "
    "GIS and imaging software; <b>model</b> is the network trained on the coarse image alone. <b>PSNR</b> (dB) "
    "says how close a result is to the original: higher is better, +1 dB is about 11 % less pixel error and +6 dB "
    "about half. <b>SSIM</b> (0 to 1) compares local structure: 1 is identical. <b>Fallback</b>: "
    "<code>medsat-sr upscale</code> checks the network on pixels it did not train on and writes the cubic result "
    "instead when the network does not beat cubic there.</div>"
)


def _trend_html(fr: Any) -> str:
    out = []
    for m, fit in fr.fits.items():
        sentence = trend_sentence(validation_trend(list(getattr(fit, "history", None) or [])), m)
        if sentence:
            out.append(f"<p class='box small'>{html.escape(sentence)}</p>")
    return "".join(out)


def _table_html(fr: Any) -> str:
    vol = fr.case.kind == "volume"
    cols = [("psnr", "PSNR dB", 2), ("psnr_masked", "PSNR masked dB", 2), ("psnr_masked_gain_vs_cubic", "Δ masked vs cubic", 2),
            ("ssim", "SSIM" + (" 3D" if vol else ""), 4), ("ssim_masked", "SSIM masked", 4)]
    if vol:
        cols.append(("ssim_slices", "SSIM 2D slices", 4))
    cols += [("mae", "MAE", 4), ("mse", "MSE", 4)]
    if not vol:
        cols += [("sam", "SAM °", 3), ("ergas", "ERGAS", 3)]
    cols += [("seconds", "time s", 1), ("peak_rss_mb", "peak RSS MiB", 0)]
    head = "".join(f"<th>{html.escape(c[1])}</th>" for c in cols)
    rows = []
    for m, r in fr.methods.items():
        cells = []
        for key, _, d in cols:
            v = r.get(key)
            cls = ""
            if key.endswith("gain_vs_cubic") and isinstance(v, (int, float)) and m != "cubic":
                cls = " class='good'" if v > 0 else " class='bad'"
            cells.append(f"<td{cls}>{_fmt(v, d)}</td>")
        rows.append(f"<tr><td class='l'>{html.escape(m)}</td>{''.join(cells)}</tr>")
    return f"<table><tr><th class='l'>method</th>{head}</tr>{''.join(rows)}</table>"


def _bands_html(fr: Any) -> str:
    first = next(iter(fr.methods.values()), {})
    pb = first.get("per_band")
    if not pb:
        return ""
    names = pb["names"]
    labels = fr.settings.get("band_labels") or []
    if len(labels) == len(names):
        names = labels
    head = "".join(f"<th>{html.escape(str(n))}</th>" for n in names)
    out = []
    for key, label, d in (("psnr", "PSNR dB", 2), ("rmse", "RMSE", 4), ("ssim", "SSIM", 4)):
        rows = []
        for m, r in fr.methods.items():
            vals = (r.get("per_band") or {}).get(key) or []
            rows.append(f"<tr><td class='l'>{html.escape(m)}</td>{''.join(f'<td>{_fmt(v, d)}</td>' for v in vals)}</tr>")
        out.append(f"<h4>per band: {label}</h4><table><tr><th class='l'>method</th>{head}</tr>{''.join(rows)}</table>")
    dr = ", ".join(f"{n}: {_fmt(v, 4)}" for n, v in zip(names, pb["data_range"]))
    return "".join(out) + f"<p class='small'>Per-band PSNR data ranges: {dr}.</p>"


def _settings_html(fr: Any) -> str:
    s = fr.settings
    deg = s.get("degradation", {})
    ms = s.get("metrics", {})
    items = [
        ("config", f"{s.get('config')} ({s.get('config_source')}), domain profile {s.get('domain')}"),
        *([("reference source", s["reference_preparation"])] if s.get("reference_preparation") else []),
        ("reference", f"shape {s.get('reference_shape')}, spacing {s.get('reference_spacing')}"),
        ("input", f"shape {s.get('input_shape')}, spacing {s.get('input_spacing')}, factors {s.get('factors')}"),
        ("degradation", json.dumps(_finite(deg), default=_json_default)),
        ("crop", json.dumps(s.get("crop"), default=_json_default)),
        ("scored region", json.dumps(s.get("region"), default=_json_default)
         + f" less a border of {ms.get('crop_border', 0)}; {s.get('pixels_scored')} pixels, {s.get('pixels_masked')} masked"),
        ("units", s.get("units")),
        ("data range", f"{_fmt(s.get('data_range'), 6)}: {s.get('data_range_rule')}"),
        ("mask", (ms.get("mask") or {}).get("rule")),
        ("SSIM", json.dumps(ms.get("ssim"), default=_json_default)),
    ]
    if "ergas" in ms:
        items.append(("ERGAS", json.dumps(ms["ergas"], default=_json_default)))
    if s.get("self_supervised_fit_on"):
        items.append(("self-supervised fit on", s.get("self_supervised_fit_on")))
    rows = "".join(f"<tr><th class='l'>{html.escape(k)}</th><td class='l'>{html.escape(str(v))}</td></tr>" for k, v in items)
    return f"<table>{rows}</table>"


def render_html(evaluation: Any, figures: dict[str, list[tuple[Path, str]]], *, title: str | None = None) -> str:
    """The report page: headlines, tables, embedded figures and settings (one self-contained HTML string).

    Args:
        evaluation: the :class:`~medsat_sr.evaluate.Evaluation`.
        figures: ``"_summary"`` and file names -> ``[(png, caption), ...]``.
        title: page title.
    """
    t = title or evaluation.settings.get("title") or "medsat_sr evaluation"
    env = evaluation.settings.get("environment", {})
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>{html.escape(t)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(t)}</h1>",
        f"<p class='small'>medsat_sr {html.escape(str(env.get('medsat_sr_version')))}, torch "
        f"{html.escape(str(env.get('torch_version')))}, {env.get('cpu_count')} CPU(s), "
        f"{env.get('torch_threads')} torch thread(s); created {html.escape(str(evaluation.settings.get('created')))}. "
        "Protocol: DESIGN.md §5 — each high-resolution reference is degraded with its domain profile's model "
        "(the code that makes training pairs), every method upscales the degraded input, and the outputs are "
        "compared with the reference on its own grid.</p>",
        "<div class='box'><b>Headline</b><ul>",
        "".join(_plain_html(fr) for fr in evaluation.files),
        "</ul><details><summary class='small'>the numbers behind it</summary><ul class='small'>",
        "".join(_headline_html(h) for h in evaluation.headlines()),
        "</ul></details></div>",
        _GLOSSARY,
    ]
    for png, cap in figures.get("_summary", []):
        parts.append(f"<figure>{_img_tag(png, cap)}<figcaption class='small'>{html.escape(cap)}</figcaption></figure>")
    for fr in evaluation.files:
        parts.append(f"<h2>{html.escape(fr.name)} <span class='small'>({html.escape(fr.case.kind)}, "
                     f"{html.escape(str(fr.case.path or 'in memory'))})</span></h2>")
        parts.append(f"<ul>{_plain_html(fr)}</ul>")
        parts.append(_table_html(fr))
        parts.append(f"<p class='small'>Metric units: {html.escape(str(fr.settings.get('units')))}. "
                     "Masked = the profile's mask rule (below). Time includes fitting for self-supervised models; "
                     "peak RSS is the whole process's resident memory.</p>")
        parts.append(_bands_html(fr))
        for png, cap in figures.get(fr.name, []):
            parts.append(f"<figure>{_img_tag(png, cap)}<figcaption class='small'>{html.escape(cap)}</figcaption></figure>")
        for m, r in fr.methods.items():
            fit = r.get("fit")
            if fit:
                parts.append(
                    f"<p class='small'>{html.escape(m)}: self-supervised fit on {html.escape(str(fit.get('trained_on')))}, "
                    f"{fit.get('iterations')} iterations in {_fmt(fit.get('seconds'), 1)} s (stopped by "
                    f"{html.escape(str(fit.get('stopped_by')))}); validation PSNR {_fmt(fit.get('val_psnr'), 2)} dB vs "
                    f"cubic {_fmt(fit.get('val_psnr_cubic'), 2)} dB on the fit's held-out split (network units).</p>"
                )
        parts.append(_trend_html(fr))
        parts.append("<h3>Settings the numbers depend on</h3>")
        parts.append(_settings_html(fr))
    parts.append("<p class='small'>Every number and setting is also in metrics.json and metrics.csv next to this page.</p>")
    parts.append("</body></html>")
    return "\n".join(parts)


# =============================================================== all together
def write_report(
    evaluation: Any, out_dir: str | os.PathLike[str], *, figures: bool = True, title: str | None = None
) -> dict[str, Any]:
    """Write metrics.json, metrics.csv, the figures and report.html into ``out_dir`` (created).

    Args:
        evaluation: the :class:`~medsat_sr.evaluate.Evaluation`.
        out_dir: the report folder.
        figures: draw the PNG figures (and embed them).
        title: page title.

    Returns:
        ``{"json": path, "csv": path, "html": path, "figures": [paths]}``.

    Raises:
        WriteError: the folder cannot be created or written.
    """
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise WriteError(f"{out}: cannot create the report folder: {exc.strerror or exc}") from exc
    paths: dict[str, Any] = {"figures": []}
    paths["json"] = write_metrics_json(evaluation, out / "metrics.json")
    paths["csv"] = write_metrics_csv(evaluation, out / "metrics.csv")
    figs: dict[str, list[tuple[Path, str]]] = {"_summary": []}
    if figures:
        g = gain_figure(evaluation, out / "gain_over_cubic.png")
        if g is not None:
            figs["_summary"].append((g, "PSNR gain over cubic per file (whole image and inside the mask)."))
            paths["figures"].append(g)
        for fr in evaluation.files:
            lst: list[tuple[Path, str]] = []
            try:
                p = panel_figure(fr, out / f"panel_{_safe(fr.name)}.png")
                lst.append((p, f"{fr.name}: the same crop of the input, each method and the reference, with |error| maps."))
                paths["figures"].append(p)
            except Exception as exc:  # noqa: BLE001 - a figure must not lose the numbers
                logger.warning("%s: no panel figure (%s: %s)", fr.name, type(exc).__name__, exc)
            for m, fit in fr.fits.items():
                c = curves_figure(fit, out / f"curves_{_safe(fr.name)}_{_safe(m)}.png", title=f"{fr.name}: {m}")
                if c is not None:
                    lst.append((c, f"{fr.name}: training curves of {m} (self-supervised fit)."))
                    paths["figures"].append(c)
            figs[fr.name] = lst
    page = render_html(evaluation, figs, title=title)
    paths["html"] = out / "report.html"
    write_bytes(paths["html"], page.encode("utf-8"))
    return paths

"""Plain-language parts of the evaluation report: headline sentences, curve notes, band labels, map furniture.

The report (:mod:`medsat_sr.report`) is the first thing a manager sees, so
each file gets one sentence that needs no image-processing vocabulary
("sharper than cubic by 2.3 dB on held-out pixels; no fallback"), built from
the scores and from the trust record's model-or-classical decision
(:class:`medsat_sr.inference.plan.Decision`) of the run that produced the
output. Training curves whose validation score peaks and then falls
(overfitting) get a sentence naming the peak and the checkpoint used.
Raster panels get a scale bar and their corner coordinates in the CRS's
units; bands are labelled by name (file descriptions, else the domain
profile's band names), never ``band1``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = [
    "band_labels",
    "is_generic_band_name",
    "headline",
    "held_out_phrase",
    "validation_trend",
    "trend_sentence",
    "nice_length",
    "crs_units",
    "corner_text",
    "add_scale_bar",
    "LATE_DROP_DB",
]

#: A validation PSNR that ends this far (dB) or more below its peak counts as a late drop (overfitting).
LATE_DROP_DB = 0.1

_GENERIC = re.compile(r"^(band|ch|channel)[ _]?\d+$", re.IGNORECASE)


def is_generic_band_name(name: Any) -> bool:
    """True for placeholder names such as ``band1`` or ``ch0`` (not for sensor names like ``B02``)."""
    return name is None or bool(_GENERIC.match(str(name).strip())) or not str(name).strip()


def band_labels(names: Sequence[Any] | None, profile_bands: Sequence[Any] | None, count: int) -> list[str]:
    """One display name per band: the file's names where real, else the domain profile's, else ``band N``.

    Args:
        names: the names read with the image (band descriptions or file stems), or ``None``.
        profile_bands: the domain profile's band list (objects or dicts with
            ``name`` and ``description``), or ``None``.
        count: the number of bands.

    Returns:
        ``count`` labels. A profile name is used only when the profile lists
        exactly ``count`` bands (so no band is named after another sensor's);
        a name the profile describes gets its common name, ``"red edge 1 (B05)"``.
    """
    prof = list(profile_bands or [])
    described: dict[str, str] = {}
    for b in prof:
        name = b.get("name") if isinstance(b, Mapping) else getattr(b, "name", None)
        desc = b.get("description") if isinstance(b, Mapping) else getattr(b, "description", None)
        described[str(name)] = f"{desc} ({name})" if desc and str(desc).lower() != str(name).lower() else str(name)
    file_names = [str(n) for n in (names or [])]
    if len(file_names) == count and not all(is_generic_band_name(n) for n in file_names):
        return [described.get(n, n) for n in file_names]
    if len(prof) == count:
        return list(described.values())
    return [f"band {i + 1}" for i in range(count)]


# =============================================================== headline
def held_out_phrase(settings: Mapping[str, Any], kind: str, method_kind: str | None) -> str:
    """Which pixels the score is on, in words (the ones training never saw, where that is so)."""
    hold = (settings.get("degradation") or {}).get("holdout") or {}
    if method_kind == "checkpoint":
        return "against the original image"
    if hold:
        return "on held-out pixels (the part of the scene that training never saw)"
    if kind == "volume":
        return "on held-out data (the full-resolution original, which training never saw)"
    return "on held-out pixels (the full-resolution original, which training never saw)"


def _num(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return float(v) if math.isfinite(float(v)) else None


def _fallback_phrase(decision: Mapping[str, Any] | None) -> tuple[str, str]:
    """``(short phrase, explanation)`` of the model-or-classical decision of ``upscale`` on this input."""
    if not decision:
        return "no fallback check recorded", ""
    why = str(decision.get("reason") or "")
    if decision.get("forced"):
        return ("upscale would fall back to cubic here",
                f"The network did not pass upscale's own check on pixels it did not train on ({why}); upscale would "
                "write the cubic result, and this evaluation shows the network's output anyway.")
    if decision.get("fell_back"):
        return "fell back to cubic", f"{why[:1].upper()}{why[1:]}."
    if decision.get("use_model"):
        return "no fallback", f"upscale keeps the network's result: {why}." if why else ""
    return "no fallback check recorded", ""


def headline(file_result: Any) -> dict[str, Any]:
    """The one-sentence verdict of one evaluated file, and a plainer gloss of the number.

    Args:
        file_result: a :class:`~medsat_sr.evaluate.FileResult`.

    Returns:
        ``{"text", "gloss", "good"}``: ``text`` e.g. "model: sharper than
        cubic by 2.3 dB on held-out pixels; no fallback"; ``gloss`` the same
        gain as a change in pixel error, and the fallback decision explained;
        ``good`` whether it beats cubic (``None`` without a learned method).
    """
    methods = file_result.methods
    cubic = methods.get("cubic", {})
    best = file_result.best_learned()
    if best is None:
        c = _num(cubic.get("psnr_masked"))
        text = "classical methods only" + (f": cubic reaches {c:.1f} dB PSNR" if c is not None else "")
        return {"text": text, "gloss": "", "good": None}
    r = methods[best]
    gain = _num(r.get("psnr_masked_gain_vs_cubic"))
    where = held_out_phrase(file_result.settings, file_result.case.kind, r.get("kind"))
    fb, why = _fallback_phrase(r.get("decision"))
    if gain is None:
        return {"text": f"{best}: no comparison with cubic; {fb}", "gloss": why, "good": None}
    if gain > 0:
        text = f"{best}: sharper than cubic by {gain:.1f} dB {where}; {fb}"
    else:
        text = f"{best}: not better than cubic ({gain:+.1f} dB {where}); {fb}"
    change = 1.0 - 10.0 ** (-gain / 20.0)  # RMSE ratio model / cubic = 10^(-gain/20)
    p_model, p_cubic = _num(r.get("psnr_masked")), _num(cubic.get("psnr_masked"))
    gloss = (f"Its typical pixel error (RMSE) is {abs(change) * 100:.0f} % {'smaller' if change >= 0 else 'larger'} "
             f"than cubic interpolation's (PSNR {p_model or float('nan'):.2f} dB against {p_cubic or float('nan'):.2f} dB; "
             "higher is closer to the original).")
    return {"text": text, "gloss": f"{gloss} {why}".strip(), "good": gain > 0}


# =============================================================== training curves
def validation_trend(history: Sequence[Mapping[str, Any]], *, min_drop_db: float = LATE_DROP_DB) -> dict[str, Any] | None:
    """Peak and end of the validation PSNR of a fit, and whether it fell after the peak.

    Args:
        history: the fit's validation rows (``iteration``, ``val_psnr``).
        min_drop_db: the least fall from the peak that counts as a late drop.

    Returns:
        ``{"best_iteration", "best_psnr", "last_iteration", "last_psnr",
        "drop_db", "late_drop"}``, or ``None`` with fewer than two validations.
    """
    pts = [(int(r["iteration"]), float(r["val_psnr"])) for r in history
           if _num(r.get("val_psnr")) is not None and r.get("iteration") is not None]
    if len(pts) < 2:
        return None
    best_it, best = max(pts, key=lambda p: (p[1], -p[0]))
    last_it, last = pts[-1]
    drop = best - last
    return {"best_iteration": best_it, "best_psnr": best, "last_iteration": last_it, "last_psnr": last,
            "drop_db": drop, "late_drop": bool(last_it > best_it and drop >= min_drop_db)}


def trend_sentence(trend: Mapping[str, Any] | None, method: str) -> str | None:
    """A sentence on the curve: the late drop and the checkpoint used, or that it did not fall."""
    if not trend:
        return None
    if trend["late_drop"]:
        return (f"{method}: the validation score peaked at {trend['best_psnr']:.2f} dB at iteration "
                f"{trend['best_iteration']} and then fell to {trend['last_psnr']:.2f} dB by iteration "
                f"{trend['last_iteration']} ({-trend['drop_db']:+.2f} dB): the network began to overfit "
                "(memorise its training pixels). The best checkpoint (iteration "
                f"{trend['best_iteration']}) is the one used for every result here, not the last one.")
    return (f"{method}: the validation score ended within {LATE_DROP_DB:g} dB of its best "
            f"({trend['best_psnr']:.2f} dB at iteration {trend['best_iteration']}); no sign of overfitting. "
            "The best checkpoint is the one used.")


# =============================================================== map furniture
def nice_length(span: float) -> float:
    """The largest 1, 2 or 5 x 10^k not above ``span`` (a scale-bar length)."""
    if not span > 0 or not math.isfinite(span):
        raise ValueError(f"scale-bar span must be positive and finite, got {span!r}")
    k = math.floor(math.log10(span))
    for m in (5.0, 2.0, 1.0):
        v = m * 10.0**k
        if v <= span * (1 + 1e-12):
            return v
    return 10.0**k  # pragma: no cover - m = 1 always fits


def _fmt_len(v: float, unit: str) -> str:
    if unit == "m" and v >= 1000:
        return f"{v / 1000:g} km"
    if unit == "mm" and v >= 10:
        return f"{v / 10:g} cm"
    return f"{v:g} {unit}"


def crs_units(crs: Any) -> tuple[str, str]:
    """``(unit, label)`` of a raster CRS (WKT or ``None``): ``("m", "EPSG:32618, WGS 84 / UTM zone 18N")``."""
    if not crs:
        return "", "no CRS (pixel units)"
    from rasterio.crs import CRS

    try:
        c = CRS.from_user_input(crs)
    except Exception:  # noqa: BLE001 - an unreadable CRS still gets a report
        return "", "unknown CRS"
    epsg = c.to_epsg()
    wkt_name = re.match(r'^\w+\["([^"]+)"', c.to_wkt() or "")
    label = ", ".join(x for x in (f"EPSG:{epsg}" if epsg else None, wkt_name.group(1) if wkt_name else None) if x)
    if c.is_geographic:
        return "°", label or "geographic"
    units = (c.linear_units or "").lower()
    unit = "m" if units in ("metre", "meter", "m", "metres", "meters") else ("ft" if "f" in units[:1] else units)
    return unit, label or "projected"


def _fmt_coord(v: float, unit: str) -> str:
    if unit == "°":
        return f"{v:.5f}°"
    text = f"{v:,.0f}" if unit else f"{v:,.1f}"
    return text.replace(",", "\u2009") + (f" {unit}" if unit else "")


def corner_text(transform: Sequence[float], crs: Any, crop: tuple[int, int, int, int]) -> str:
    """The crop's upper-left and lower-right corner coordinates in the CRS, in one line.

    Args:
        transform: the reference's corner affine ``(a, b, c, d, e, f)``.
        crs: the CRS (WKT) or ``None``.
        crop: ``(row0, row1, col0, col1)`` of the shown crop on that grid.
    """
    a, b, c, d, e, f = (float(v) for v in tuple(transform)[:6])
    r0, r1, c0, c1 = crop

    def xy(col: float, row: float) -> tuple[float, float]:
        return c + a * col + b * row, f + d * col + e * row

    unit, label = crs_units(crs)
    (x0, y0), (x1, y1) = xy(c0, r0), xy(c1, r1)
    xn, yn = ("longitude", "latitude") if unit == "°" else ("x", "y")
    return (f"Crop corners ({label}): upper left {xn} {_fmt_coord(x0, unit)}, {yn} {_fmt_coord(y0, unit)}; "
            f"lower right {xn} {_fmt_coord(x1, unit)}, {yn} {_fmt_coord(y1, unit)}.")


def add_scale_bar(ax: Any, pixel_size: float, unit: str, width_px: int, height_px: int) -> str | None:
    """Draw a scale bar (white on a dark box) in the lower-left corner of an image axes.

    Args:
        ax: the matplotlib axes showing the image (one image pixel = one data unit).
        pixel_size: ground (or body) size of one displayed pixel along the horizontal.
        unit: its unit (``"m"``, ``"mm"``, ``"°"`` ...); degrees are not drawn.
        width_px, height_px: the image's size in pixels.

    Returns:
        The bar's label (e.g. ``"100 m"``), or ``None`` when none is drawn.
    """
    if not unit or unit == "°" or not (pixel_size > 0 and math.isfinite(pixel_size)) or width_px < 8:
        return None
    length = nice_length(0.3 * width_px * pixel_size)
    n = length / pixel_size
    label = _fmt_len(length, unit)
    x0, y0 = 0.06 * width_px - 0.5, height_px - 0.08 * height_px - 0.5
    from matplotlib.patches import Rectangle

    ax.add_patch(Rectangle((x0 - 0.03 * width_px, y0 - 0.13 * height_px), n + 0.06 * width_px, 0.19 * height_px,
                           facecolor="black", alpha=0.55, edgecolor="none"))
    ax.plot([x0, x0 + n], [y0, y0], color="white", lw=3, solid_capstyle="butt")
    ax.text(x0 + n / 2, y0 - 0.03 * height_px, label, color="white", ha="center", va="bottom", fontsize=8,
            fontweight="bold")
    return label

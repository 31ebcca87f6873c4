"""The evaluation report's figures: the crop panel, the gain over cubic and the training curves.

Figures use matplotlib's Agg backend (no display needed). The crop shown is
chosen from the *reference* alone (the window with the most structure: the
largest mean gradient magnitude inside the scored region and the metric
mask), never from any method's output, so no method is favoured by the
choice; the rule is written under each panel.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from medsat_sr._atomic import write_bytes
from medsat_sr.report_plain import add_scale_bar, band_labels, corner_text, crs_units, validation_trend

__all__ = ["panel_figure", "gain_figure", "curves_figure", "CROP_SIZE", "FIGURE_WIDTH_IN", "FIGURE_DPI"]

#: Largest side (reference pixels) of the crop shown in the panels.
CROP_SIZE = 128

#: Least width (inches) of every figure; at :data:`FIGURE_DPI` that is at least 1100 pixels.
FIGURE_WIDTH_IN = 11.0

#: Resolution of the PNG figures.
FIGURE_DPI = 100


def _plt() -> Any:
    import matplotlib

    if matplotlib.get_backend().lower() != "agg":
        matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt




def _save_png(plt: Any, fig: Any, path: str | os.PathLike[str]) -> Path:
    """Write ``fig`` as a PNG at :data:`FIGURE_DPI`, atomically, and close it."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=FIGURE_DPI)
    plt.close(fig)
    return write_bytes(path, buf.getvalue())


def _world_axis(affine: np.ndarray, axis: int) -> int:
    col = np.abs(np.asarray(affine, dtype=np.float64)[:3, axis])
    return int(np.argmax(col))


def _plane(case: Any, mask: np.ndarray | None) -> tuple[int, int, str]:
    """``(fixed_axis, index, plane name)`` of the volume slice shown.

    With a slice axis (thick slices), the plane contains it (coronal first,
    then axial, then sagittal), so the through-plane resolution is visible;
    otherwise the axial plane. The index is the mask's centre of mass.
    """
    aff = np.asarray(case.reference.affine, dtype=np.float64)
    world = {a: _world_axis(aff, a) for a in range(3)}
    prefs = [1, 2, 0]
    if case.slice_axis is not None:
        cands = [a for a in range(3) if a != case.slice_axis]
    else:
        cands = [max(range(3), key=lambda a: abs(aff[2, a]) / (np.linalg.norm(aff[:3, a]) or 1.0))]
    fixed = min(cands, key=lambda a: prefs.index(world[a]))
    region = case.region
    m = mask[region] if mask is not None else None
    if m is not None and m.any():
        idx = int(round(float(np.mean(np.nonzero(m)[fixed])))) + int(region[fixed].start or 0)
    else:
        idx = int(case.reference.shape[1 + fixed]) // 2
    return fixed, idx, {0: "sagittal", 1: "coronal", 2: "axial"}[world[fixed]]


def _best_window(img: np.ndarray, weight: np.ndarray, size: tuple[int, int], allowed: tuple[slice, slice]) -> tuple[int, int]:
    """Top-left corner of the ``size`` window inside ``allowed`` with the largest mean of ``img * weight``."""
    h, w = img.shape
    r0, r1 = int(allowed[0].start or 0), int(allowed[0].stop or h)
    c0, c1 = int(allowed[1].start or 0), int(allowed[1].stop or w)
    sh, sw = min(size[0], r1 - r0), min(size[1], c1 - c0)
    v = (img * weight)[r0:r1, c0:c1]
    ii = np.zeros((v.shape[0] + 1, v.shape[1] + 1))
    ii[1:, 1:] = np.cumsum(np.cumsum(v, axis=0), axis=1)
    sums = ii[sh:, sw:] - ii[:-sh, sw:] - ii[sh:, :-sw] + ii[:-sh, :-sw]
    i, j = np.unravel_index(int(np.argmax(sums)), sums.shape)
    return r0 + int(i), c0 + int(j)


def _gradient(a: np.ndarray) -> np.ndarray:
    gy, gx = np.gradient(a.astype(np.float64))
    return np.hypot(gx, gy)


def _rgb_bands(names: Sequence[str]) -> list[int]:
    low = [str(n).lower() for n in names]
    want = []
    for aliases in (("red", "r", "b04", "b4", "sr_b4"), ("green", "g", "b03", "b3", "sr_b3"),
                    ("blue", "b", "b02", "b2", "sr_b2")):
        hit = next((i for i, n in enumerate(low) if n in aliases), None)
        want.append(hit)
    if all(w is not None for w in want) and len(set(want)) == 3:
        return [int(w) for w in want]  # type: ignore[arg-type]
    return list(range(min(3, len(names))))


class _PanelImages(NamedTuple):
    """The full-size 2D images of a panel and what the crop and the captions need."""

    reference: np.ndarray  # (H, W) or (H, W, 3)
    planes: dict[str, np.ndarray]  # input and each method, like reference
    errors: dict[str, np.ndarray]  # each method's |error|, (H, W)
    mask: np.ndarray  # (H, W) bool: where the crop may score detail
    allowed: tuple[slice, slice]  # the region the crop must stay in
    rgb: bool
    description: str
    bar: tuple[float, str] | None  # pixel size and unit of the scale bar
    corners: Any  # the raster's affine transform, or None


def _views(fr: Any) -> dict[str, Any]:
    """The 2D images (reference, input, outputs, errors) of the panel, cropped, in display orientation."""
    case = fr.case
    valid, masked = fr.masks if fr.masks is not None else (None, None)
    ref = case.reference.as_tensor().float().cpu().numpy()
    from medsat_sr.baselines import upsample_mask

    lr_up = upsample_mask(case.lr.as_tensor().float().cpu().numpy(), ref.shape[1:])
    outs = dict(fr.outputs)
    view = (_volume_view if case.kind == "volume" else _raster_view)(fr, ref, lr_up, outs, masked)
    ref2, allowed, corners = view.reference, view.allowed, view.corners
    gray = ref2.mean(axis=-1) if ref2.ndim == 3 else ref2
    finite = np.isfinite(gray)
    score = _gradient(np.where(finite, gray, 0.0)) * (view.mask & finite)
    size = (CROP_SIZE, CROP_SIZE)
    r0, c0 = _best_window(score, np.ones_like(score), size, allowed)
    sh = min(size[0], int(allowed[0].stop) - int(allowed[0].start or 0))
    sw = min(size[1], int(allowed[1].stop) - int(allowed[1].start or 0))
    crop = (slice(r0, r0 + sh), slice(c0, c0 + sw))
    box = (r0, r0 + sh, c0, c0 + sw)
    return {
        "reference": ref2[crop], "planes": {k: v[crop] for k, v in view.planes.items()},
        "errors": {k: v[crop] for k, v in view.errors.items()}, "rgb": view.rgb, "description": view.description,
        "crop": box, "bar": view.bar,
        "corners": None if corners is None else corner_text(corners, case.reference.meta.get("crs"), box),
    }


def _volume_view(
    fr: Any, ref: np.ndarray, lr_up: np.ndarray, outs: dict[str, np.ndarray], masked: np.ndarray | None,
) -> _PanelImages:
    """A volume's panel images: the most informative slice in display orientation (superior or
    anterior up, neurological left-right), its allowed crop region, description and scale bar."""
    case = fr.case
    fixed, idx, plane_name = _plane(case, masked)
    other = [a for a in range(3) if a != fixed]

    def cut(a: np.ndarray) -> np.ndarray:
        sl = [slice(None)] * 3
        sl[fixed] = idx
        return np.asarray(a[0] if a.ndim == 4 else a)[tuple(sl)]

    aff = np.asarray(case.reference.affine, dtype=np.float64)
    # vertical: the plane axis along world z (superior up), else along world y (anterior up)
    vert = min(other, key=lambda a: [2, 1, 0].index(_world_axis(aff, a)))
    w_vert = _world_axis(aff, vert)
    hor = other[0] if other[1] == vert else other[1]
    transpose = other.index(vert) == 1  # cut() gives (other[0], other[1]); want (vert, hor)
    flip_v = aff[w_vert, vert] > 0  # index grows towards superior/anterior: flip so that it is up
    flip_h = _world_axis(aff, hor) == 0 and aff[0, hor] < 0  # subject's right on the right (neurological)

    def orient(p: np.ndarray) -> np.ndarray:
        q = p.T if transpose else p
        if flip_v:
            q = q[::-1]
        if flip_h:
            q = q[:, ::-1]
        return q

    ref2 = orient(cut(ref))
    planes = {"input": orient(cut(lr_up)), **{m: orient(cut(o)) for m, o in outs.items()}}
    wmask = orient(cut(masked)) if masked is not None else np.ones_like(ref2, bool)
    allowed_full = [case.region[vert], case.region[hor]]
    n_v, n_h = ref2.shape
    rv = allowed_full[0]
    if flip_v:
        rv = slice(n_v - int(rv.stop), n_v - int(rv.start or 0))
    rh = allowed_full[1]
    if flip_h:
        rh = slice(n_h - int(rh.stop), n_h - int(rh.start or 0))
    allowed = (rv, rh)
    err = {m: np.abs(p - ref2) for m, p in planes.items() if m != "input"}
    rgb = False
    ijk = "ijk"
    band_desc = (f"{plane_name} slice {ijk[fixed]}={idx} of {int(case.reference.shape[1 + fixed])}, "
                 f"{'superior' if w_vert == 2 else 'anterior' if w_vert == 1 else 'right'} up")
    if case.slice_axis is not None:
        sp = case.lr.meta.get("spacing") or ()
        thick = f", {float(sp[case.slice_axis]):g} mm input slices" if len(sp) == 3 else ""
        where = "vertical" if case.slice_axis == vert else "horizontal"
        band_desc += f"; thick-slice axis {ijk[case.slice_axis]} {where}{thick}"
    spacing = case.reference.meta.get("spacing") or ()
    bar = (float(spacing[hor]), "mm") if len(spacing) == 3 else None
    corners = None
    return _PanelImages(ref2, planes, err, wmask, allowed, rgb, band_desc, bar, corners)


def _raster_view(
    fr: Any, ref: np.ndarray, lr_up: np.ndarray, outs: dict[str, np.ndarray], masked: np.ndarray | None,
) -> _PanelImages:
    """A raster's panel images: a colour composite (or one band), the mean |error| over all bands,
    the allowed crop region, description, scale bar and georeferenced corners."""
    case = fr.case
    ids = fr.settings.get("band_names") or case.reference.meta.get("band_names") or []
    names = fr.settings.get("band_labels") or band_labels(ids, None, ref.shape[0])
    bands = _rgb_bands(ids if len(ids) == ref.shape[0] else names)
    rgb = len(bands) == 3
    ref2 = np.moveaxis(ref[bands], 0, -1) if rgb else ref[bands[0]]
    planes = {"input": np.moveaxis(lr_up[bands], 0, -1) if rgb else lr_up[bands[0]]}
    for m, o in outs.items():
        planes[m] = np.moveaxis(o[bands], 0, -1) if rgb else o[bands[0]]
    err = {m: np.abs(o - ref).mean(axis=0) for m, o in outs.items()}
    wmask = masked if masked is not None else np.ones(ref.shape[1:], bool)
    allowed = (case.region[0], case.region[1])
    band_desc = (
        f"colour image of bands {', '.join(str(names[b]) for b in bands)} (shown as red, green, blue)" if rgb
        else f"band {names[bands[0]]}"
    ) + f"; |error| = mean over all {len(names)} bands"
    tr = case.reference.meta.get("transform")
    unit, _ = crs_units(case.reference.meta.get("crs"))
    bar = (math.hypot(float(tr[0]), float(tr[3])), unit) if tr is not None else None
    corners = tr
    return _PanelImages(ref2, planes, err, wmask, allowed, rgb, band_desc, bar, corners)


def _stretch(a: np.ndarray, lo: Any, hi: Any) -> np.ndarray:
    return np.clip((a - lo) / np.where(hi > lo, hi - lo, 1.0), 0.0, 1.0)


def panel_figure(fr: Any, path: str | os.PathLike[str]) -> Path:
    """The comparison panel of one file: input, every method, the reference, and |error| maps.

    Row 1: the input (nearest-upsampled to the reference grid, so the same
    crop shows its pixels), each method's output, the reference. Row 2: the
    ``|output - reference|`` map of each method on one colour scale (the
    99th percentile of the cubic error). Titles give each method's PSNR on
    the masked pixels of the whole scored region (not of the crop).
    """
    plt = _plt()
    v = _views(fr)
    methods = list(fr.outputs)
    cols = ["input"] + methods + ["reference"]
    n = len(cols)
    width = max(FIGURE_WIDTH_IN, 2.6 * n)
    fig, axes = plt.subplots(2, n, figsize=(width, 6.6), squeeze=False)
    ref = v["reference"]
    if v["rgb"]:
        lo = np.nanpercentile(ref, 1, axis=(0, 1))
        hi = np.nanpercentile(ref, 99, axis=(0, 1))
        show = lambda a: _stretch(a, lo, hi)  # noqa: E731
        kw: dict[str, Any] = {}
    else:
        lo, hi = np.nanpercentile(ref, [0.5, 99.5])
        show = lambda a: a  # noqa: E731
        kw = {"cmap": "gray", "vmin": lo, "vmax": hi}
    base = v["errors"].get("cubic")
    evmax = float(np.nanpercentile(base, 99)) if base is not None and np.isfinite(base).any() else None
    if not evmax:
        allerr = np.concatenate([e.ravel() for e in v["errors"].values()]) if v["errors"] else np.zeros(1)
        evmax = float(np.nanpercentile(allerr, 99)) or 1.0
    im_err = None
    for j, c in enumerate(cols):
        ax = axes[0, j]
        img = ref if c == "reference" else v["planes"][c]
        ax.imshow(show(img), interpolation="nearest", **kw)
        if v["bar"] is not None:
            add_scale_bar(ax, v["bar"][0], v["bar"][1], int(ref.shape[1]), int(ref.shape[0]))
        if c == "input":
            title = "input (low res.)"
        elif c == "reference":
            title = "reference"
        else:
            r = fr.methods.get(c, {})
            title = f"{c}\n{r.get('psnr_masked', float('nan')):.2f} dB (masked)"
        ax.set_title(title, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
        ax2 = axes[1, j]
        ax2.set_xticks([])
        ax2.set_yticks([])
        if c in v["errors"]:
            im_err = ax2.imshow(v["errors"][c], cmap="magma", vmin=0.0, vmax=evmax, interpolation="nearest")
            ax2.set_title(f"error of {c}", fontsize=9)
        else:
            ax2.axis("off")
    if im_err is not None:
        cb = fig.colorbar(im_err, ax=axes[1, :].tolist(), fraction=0.02, pad=0.01)
        cb.set_label("|error|, values as read (brighter = worse)", fontsize=8)
    r0, r1, c0, c1 = v["crop"]
    fig.suptitle(f"{fr.name}: {v['description']}", fontsize=10)
    note = (f"Crop rows {r0}:{r1}, columns {c0}:{c1} of the displayed plane, chosen on the reference alone "
            "(most structure inside the scored region); PSNR over the whole scored region.")
    if v["corners"]:
        note = v["corners"] + " " + note
    fig.text(0.01, 0.01, note, fontsize=8, wrap=True)
    return _save_png(plt, fig, path)


def gain_figure(evaluation: Any, path: str | os.PathLike[str]) -> Path | None:
    """Bar chart of the PSNR gain over cubic (dB) per file and non-cubic method, whole and masked."""
    plt = _plt()
    files = [f for f in evaluation.files if "cubic" in f.methods]
    methods = [m for m in evaluation.methods if m != "cubic"]
    if not files or not methods:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(max(FIGURE_WIDTH_IN, 1.6 * len(files) * max(1, len(methods)) + 2.0), 4.4),
                             squeeze=False)
    width = 0.8 / len(methods)
    x = np.arange(len(files))
    for k, (key, label) in enumerate((("psnr_gain_vs_cubic", "whole"), ("psnr_masked_gain_vs_cubic", "masked"))):
        ax = axes[0, k]
        for i, m in enumerate(methods):
            vals = [f.methods.get(m, {}).get(key, np.nan) for f in files]
            vals = [np.nan if v is None else float(v) for v in vals]
            bars = ax.bar(x + (i - (len(methods) - 1) / 2) * width, vals, width, label=m)
            for b, val in zip(bars, vals):
                if np.isfinite(val):
                    ax.annotate(f"{val:+.2f}", (b.get_x() + b.get_width() / 2, val), ha="center",
                                va="bottom" if val >= 0 else "top", fontsize=7)
        ax.axhline(0.0, color="black", lw=0.8)
        ax.set_xticks(x)
        ax.set_xticklabels([f.name for f in files], rotation=15, fontsize=8)
        ax.set_ylabel("PSNR gain over cubic (dB; above 0 = better)")
        ax.set_title(f"PSNR gain over cubic ({label})", fontsize=10)
        ax.margins(y=0.2)
    axes[0, 0].legend(fontsize=8)
    fig.tight_layout()
    return _save_png(plt, fig, path)


def curves_figure(fit: Any, path: str | os.PathLike[str], *, title: str = "") -> Path | None:
    """Training loss and validation PSNR (with the cubic baseline) of a fit; ``None`` without history."""
    hist = list(getattr(fit, "history", None) or [])
    if not hist:
        return None
    plt = _plt()
    it = [r.get("iteration") for r in hist]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(FIGURE_WIDTH_IN, 4.2))
    pts = [(i, r.get("loss")) for i, r in zip(it, hist) if isinstance(r.get("loss"), (int, float)) and math.isfinite(r["loss"])]
    if pts:
        a1.plot(*zip(*pts), marker=".")
        a1.set_yscale("log")
    a1.set_xlabel("iteration")
    a1.set_ylabel("training loss")
    a1.set_title("training loss (mean per interval)", fontsize=10)
    pp = [(i, r.get("val_psnr")) for i, r in zip(it, hist) if isinstance(r.get("val_psnr"), (int, float))]
    if pp:
        a2.plot(*zip(*pp), marker=".", label="model")
    trend = validation_trend(hist)
    if trend is not None:
        a2.plot([trend["best_iteration"]], [trend["best_psnr"]], marker="*", ms=14, color="tab:green", ls="none",
                label=f"best checkpoint (used), it. {trend['best_iteration']}")
        if trend["late_drop"]:
            a2.annotate(f"late drop {-trend['drop_db']:+.2f} dB\n(overfitting)", (trend["last_iteration"], trend["last_psnr"]),
                        xytext=(-10, -28), textcoords="offset points", ha="right", fontsize=8, color="tab:red",
                        arrowprops={"arrowstyle": "->", "color": "tab:red"})
    vc = getattr(fit, "val_psnr_cubic", None)
    if isinstance(vc, (int, float)) and math.isfinite(vc):
        a2.axhline(vc, color="grey", ls="--", label="cubic")
    a2.set_xlabel("iteration")
    a2.set_ylabel("PSNR (dB, network units)")
    a2.set_title("validation PSNR (held-out split of the fit)", fontsize=10)
    a2.legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save_png(plt, fig, path)

"""The pan-sharpening evaluation protocol: every method side by side on a held-out half of the scene.

``medsat-sr evaluate SCENE -o REPORT --methods brovey,gihs,gsa,mtf-glp-hpm [--config landsat_pansharpen]``
(SCENE: a band folder with its pan band, e.g. the USGS ``*_B2.TIF`` ... ``*_B8.TIF``):

* the scene is split into a top half, where the methods fit their global
  parameters (and the network, with ``--config``, trains), and a bottom half
  that nothing saw, where every score is measured
  (:func:`medsat_sr.pansharpen.protocol.split`);
* reduced resolution (Wald's protocol): pan and MS degraded by the ratio with
  MTF-matched filters; each product of the degraded pair is scored against
  the original MS: Q2n (Q4/Q8; the block size stated), SAM (degrees), ERGAS
  (the ratio stated);
* full resolution: Khan's D_lambda, D_s and HQNR on the original pair;
* ``cubic (MS only)`` is the baseline: the MS upsampled, no pan.

The report folder gets ``metrics.json``, ``metrics.csv``, ``panels.png`` (the
MS, the pan and each product on one held-out crop, with a scale bar) and
``report.html``. The benchmark ``benchmarks/pansharpen.py`` adds timings and
the route checks on top of the same scores.
"""

from __future__ import annotations

import csv
import html
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medsat_sr._atomic import atomic_path
from medsat_sr.config import load_config
from medsat_sr.errors import ConfigError
from medsat_sr.inference.route_pansharpen import Scene, read_scene
from medsat_sr.pansharpen import classical, learned
from medsat_sr.pansharpen.classical import Pair
from medsat_sr.pansharpen.protocol import full_scores, reduced, reduced_scores, split
from medsat_sr.pansharpen.sensors import resolve

__all__ = ["BASELINE", "Product", "products", "score_methods", "train_network", "evaluate_pansharpen",
           "format_pansharpen_result"]

#: The baseline row: the MS upsampled by the ratio, without the pan.
BASELINE = "cubic (MS only)"
#: A product: ``(apply(pair, params) -> (C, H, W), fit(pair) -> params)``.
Product = tuple[Callable[[Pair, dict[str, Any]], np.ndarray], Callable[[Pair], dict[str, Any]]]
#: Score columns: (key, label, higher is better).
COLUMNS = (("q2n", "Q2n", True), ("sam", "SAM deg", False), ("ergas", "ERGAS", False),
           ("d_lambda_k", "D_lambda K", False), ("d_s", "D_s", False), ("hqnr", "HQNR", True))


def products(pair: Pair, methods: Sequence[str], net: Any = None, norm: Any = None) -> dict[str, Product]:
    """The products to compare: the baseline, the classical ``methods`` and a trained network (optional)."""
    out: dict[str, Product] = {BASELINE: (lambda p, params: p.ms_up(), lambda p: {})}
    for name in methods:
        classical.check_method(name)
        out[name] = (lambda p, params, n=name: classical.apply(n, p, params), lambda p, n=name: classical.fit(n, p))
    if net is not None:
        stats = {"stats": (float(pair.pan.mean()), float(pair.pan.std()))}  # the whole scene's, as the route uses
        out["network"] = (lambda p, params: learned.predict(net, p, norm, pan_stats=params.get("stats")),
                          lambda p: stats)
    return out


def score_methods(pair: Pair, prods: dict[str, Product]) -> dict[str, dict[str, float]]:
    """Reduced- and full-resolution scores of each product on the held-out bottom half (fitted on the top)."""
    (top, _), (bottom, _) = split(pair)
    lr_top, lr_bottom = reduced(top), reduced(bottom)
    rows: dict[str, dict[str, float]] = {}
    for name, (apply_fn, fit_fn) in prods.items():
        net = name == "network"  # the network: its training half's statistics at reduced resolution, the scene's at full
        rr = reduced_scores(apply_fn(lr_bottom, {} if net else fit_fn(lr_top)), bottom.ms, pair.ratio)
        fr = full_scores(apply_fn(bottom, fit_fn(pair) if net else fit_fn(top)), bottom)
        rows[name] = {**{k: float(v) for k, v in rr.items()}, **{k: float(v) for k, v in fr.items()}}
    return rows


def train_network(pair: Pair, config: Any, overrides: Sequence[str] = ()) -> tuple[Any, Any, dict[str, Any]]:
    """The config's network trained on the top half at reduced resolution (as the learned route does).

    Returns:
        ``(network, normalisation, {"config", "iterations"})``.
    """
    cfg = load_config(config, list(overrides))
    t = cfg.train
    (top, top_valid), _ = split(pair)
    net = learned.make_net(pair.ms.shape[0], **dict(cfg.model.kwargs))
    info = learned.fit(net, top, top_valid, iterations=t.max_iterations, minutes=t.max_minutes, batch=t.batch_size,
                       patch=t.patch_size, lr=t.lr, seed=t.seed)
    norm = learned.Norm(np.asarray(info["norm_mean"]), np.asarray(info["norm_std"]))
    return net, norm, {"config": cfg.name, "iterations": info.get("iterations")}


def evaluate_pansharpen(
    source: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    methods: Sequence[str] | None = None,
    pan: str | os.PathLike[str] | None = None,
    config: Any = None,
    overrides: Sequence[str] = (),
    figures: bool = True,
) -> dict[str, Any]:
    """Score pan-sharpening methods on ``source`` and write the report into ``output``.

    Args:
        source: a band folder with its pan band, or the MS file/folder with ``pan``.
        output: the report folder (created).
        methods: classical methods (default: all of
            :data:`medsat_sr.pansharpen.classical.METHODS`).
        pan: an explicit pan file.
        config: a pan-sharpening config (``landsat_pansharpen``): adds its network.
        overrides: ``--set`` items for the config.
        figures: write ``panels.png`` (matplotlib).

    Returns:
        The metrics: ``{"scene", "bands", "ratio", "protocol", "methods": {name: scores}, "best", ...}``.

    Raises:
        ConfigError: an unknown method, or overrides without a config.
        DataError, GeometryError: unreadable or inconsistent inputs (naming the file).
    """
    if overrides and config is None:
        raise ConfigError("--set needs a pan-sharpening config (--config landsat_pansharpen)")
    scene = read_scene(resolve(source, pan))
    pair = scene.pair()
    net = norm = None
    training = None
    if config is not None:
        net, norm, training = train_network(pair, config, overrides)
    prods = products(pair, list(methods or classical.METHODS), net, norm)
    rows = score_methods(pair, prods)
    best = min((m for m in rows if m != BASELINE), key=lambda m: rows[m]["ergas"]) if len(rows) > 1 else BASELINE
    result = {
        "scene": str(source), "pan": str(scene.inputs.pan), "bands": list(scene.bands), "ratio": scene.ratio,
        "protocol": "top half fits/trains, bottom half scored; reduced resolution by Wald's protocol (MTF-matched "
                    f"filters, ratio {scene.ratio}): Q2n (block 32), SAM in degrees, ERGAS (ratio {scene.ratio}); "
                    "full resolution: Khan's D_lambda, D_s, HQNR",
        "methods": rows, "best": best, "training": training,
    }
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    _write_tables(result, out)
    if figures:
        _panels(scene, pair, prods, out / "panels.png")
    _write_html(result, out, figures)
    return result


def _write_tables(result: dict[str, Any], out: Path) -> None:
    with atomic_path(out / "metrics.json") as tmp:
        tmp.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    with atomic_path(out / "metrics.csv") as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["method", *(k for k, _, _ in COLUMNS)])
        for name, r in result["methods"].items():
            w.writerow([name, *(f"{r[k]:.6g}" for k, _, _ in COLUMNS)])


def format_pansharpen_result(result: dict[str, Any]) -> list[str]:
    """The score table as text lines (arrows: which way is better)."""
    head = f"{'method':<16}" + "".join(f" {label + (' ^' if up else ' v'):>12}" for _, label, up in COLUMNS)
    lines = [f"{result['scene']} (pan-sharpening, ratio {result['ratio']}, bands {' '.join(result['bands'])}):", head]
    for name, r in result["methods"].items():
        lines.append(f"{name:<16}" + "".join(f" {r[k]:12.4f}" for k, _, _ in COLUMNS))
    lines.append(f"best by held-out ERGAS: {result['best']}")
    return lines


def _rgb(img: np.ndarray, bands: list[str], lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """A true-colour view (B4, B3, B2 when present; else the first three bands), stretched by fixed percentiles."""
    idx = [bands.index(b) for b in ("B4", "B3", "B2") if b in bands]
    idx = idx if len(idx) == 3 else list(range(min(3, img.shape[0])))
    rgb = (img[idx] - lo[idx, None, None]) / np.maximum(hi[idx] - lo[idx], 1e-9)[:, None, None]
    return np.clip(np.moveaxis(rgb, 0, -1), 0, 1)


def _nice(length: float) -> float:
    """A scale-bar length near ``length``: 1, 2 or 5 times a power of ten."""
    p = 10.0 ** np.floor(np.log10(length))
    return float(min((1, 2, 5, 10), key=lambda m: abs(m * p - length)) * p)


def _panels(scene: Scene, pair: Pair, prods: dict[str, Product], path: Path, size: int = 128) -> None:
    """MS, pan and every product on one held-out crop (pan pixels) of the bottom half, with a scale bar."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    (top, _), (bottom, _) = split(pair)
    h, w = bottom.pan.shape
    n = min(size, h, w) // pair.ratio * pair.ratio
    r0, c0 = (h - n) // 2 // pair.ratio * pair.ratio, (w - n) // 2 // pair.ratio * pair.ratio
    k = pair.ratio
    crop = Pair(ms=bottom.ms[:, r0 // k:(r0 + n) // k, c0 // k:(c0 + n) // k], pan=bottom.pan[r0:r0 + n, c0:c0 + n],
                ratio=k, phase=pair.phase, ms_gains=pair.ms_gains, pan_gain=pair.pan_gain)
    lo, hi = np.percentile(crop.ms, 1, axis=(1, 2)), np.percentile(crop.ms, 99, axis=(1, 2))
    views = [("MS (nearest)", _rgb(np.repeat(np.repeat(crop.ms, k, 1), k, 2), scene.bands, lo, hi)),
             ("pan", np.clip((crop.pan - np.percentile(crop.pan, 1)) / np.ptp(np.percentile(crop.pan, [1, 99])), 0, 1))]
    for name, (apply_fn, fit_fn) in prods.items():
        params = fit_fn(top) if name != "network" else fit_fn(pair)
        views.append((name, _rgb(apply_fn(crop, params), scene.bands, lo, hi)))
    px = abs(float(scene.transform.a))  # pan pixel size, m
    fig, axes = plt.subplots(1, len(views), figsize=(2.6 * len(views), 3.0), dpi=150)
    for ax, (title, im) in zip(np.atleast_1d(axes), views):
        ax.imshow(im, cmap="gray" if im.ndim == 2 else None, interpolation="nearest")
        ax.set_title(title, fontsize=8)
        ax.set_axis_off()
        bar = _nice(n * px / 4)
        ax.plot([4, 4 + bar / px], [n - 6, n - 6], color="white", lw=3)
        ax.text(4, n - 10, f"{bar:g} m", color="white", fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def _write_html(result: dict[str, Any], out: Path, figures: bool) -> None:
    rows = "".join(
        "<tr><td>" + html.escape(name) + "</td>" + "".join(f"<td>{r[k]:.4f}</td>" for k, _, _ in COLUMNS) + "</tr>"
        for name, r in result["methods"].items()
    )
    head = "".join(f"<th>{html.escape(label)} {'&uarr;' if up else '&darr;'}</th>" for _, label, up in COLUMNS)
    body = (
        f"<h1>Pan-sharpening: {html.escape(Path(result['scene']).name)}</h1>"
        f"<p><b>Best on the held-out half by ERGAS: {html.escape(result['best'])}.</b> "
        f"{html.escape(result['protocol'])}.</p>"
        f"<table border=1 cellpadding=4><tr><th>method</th>{head}</tr>{rows}</table>"
        + ('<p><img src="panels.png" style="max-width:100%"></p>' if figures else "")
    )
    with atomic_path(out / "report.html") as tmp:
        tmp.write_text(f"<!doctype html><meta charset=utf-8><title>pan-sharpening report</title>{body}\n",
                       encoding="utf-8")

"""The revisit route: several passes over one scene fused into one sharper, cloud-free raster.

``medsat-sr upscale FRAME... -o OUT --config revisit_x3`` (or ``--method
median``, or one folder of dates) comes here through
:func:`medsat_sr.inference.multi.run_multi`. Steps:

1. **Frames** (:mod:`medsat_sr.revisit.frames`): every input is read with
   its quality layer (Fmask, QA_PIXEL, SCL, QM, ...) and nodata, checked onto
   one grid, sorted by date, kept inside ``revisit.dates``; frames with less
   than ``revisit.min_clear`` clear pixels are dropped and at most
   ``revisit.max_frames`` (the clearest) are kept.
2. **Fusion** (:func:`medsat_sr.revisit.fuse.fuse`): sub-pixel registration,
   harmonisation and the method (``learned`` by default with a config).
3. **Decision** (``learned`` only): the network and the classical fusions are
   scored by cPSNR on a simulated revisit of the input's clearest frame with
   the input's own masks (:func:`medsat_sr.revisit.check.simulated_check`);
   the best classical fusion is written instead when the network does not win
   by ``revisit.min_gain_db`` (unless ``--force``).
4. **Output**: the nominal grid refined by the scale (same bounds and CRS,
   pixel size divided by the scale), the source dtype and nodata; pixels no
   frame saw clear are nodata. The record gives the frames (dates, clear
   fractions, shifts), how much of the masked area was filled, and a
   consistency check (the output degraded back onto the frames' grid against
   each frame's clear pixels).
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor

from medsat_sr.checkpoint import checkpoint_paths, model_hash
from medsat_sr.errors import ConfigError, DataError
from medsat_sr.file_hash import sha256_of
from medsat_sr.geometry import scale_transform
from medsat_sr.image import Key, make_raster
from medsat_sr.inference.multi import MULTI_ROUTES, MultiRequest, MultiResult
from medsat_sr.inference.plan import Decision
from medsat_sr.io import geotiff_write
from medsat_sr.psf_decimate import psf_decimate
from medsat_sr.revisit.check import simulated_check
from medsat_sr.revisit.frames import Frame, read_frames, select_dates, stack
from medsat_sr.revisit.fuse import METHODS, Fused, fuse
from medsat_sr.revisit.options import RevisitOptions
from medsat_sr.revisit.weights import DEFAULT_WEIGHTS, load_fusion

__all__ = ["run", "METHOD_ALIASES"]

logger = logging.getLogger("medsat_sr.revisit")

#: Spellings accepted for ``--method`` (hyphens or underscores).
METHOD_ALIASES = {"shift-and-add": "shift_and_add", "best-frame": "best_frame", "saa": "shift_and_add"}
#: Classical methods the learned fusion is checked against.
CHECKED = ("median", "shift_and_add", "best_frame")


def _options(req: MultiRequest) -> RevisitOptions:
    base = req.cfg.revisit if req.cfg is not None and req.cfg.revisit is not None else RevisitOptions(method="median")
    if req.method is None:
        return base
    method = METHOD_ALIASES.get(req.method.lower(), req.method.lower())
    if method not in METHODS:
        raise ConfigError(f"--method {req.method!r}: the revisit route fuses with one of {list(METHODS)} "
                          "(or shift-and-add, best-frame)")
    return base.model_copy(update={"method": method})


def _scale(req: MultiRequest) -> float:
    value: Any = req.scale
    if value is None and req.cfg is not None:
        value = req.cfg.scale
    if value is None:
        value = 2.0
    if isinstance(value, (list, tuple)):
        if len({float(v) for v in value}) != 1:
            raise ConfigError(f"revisit fusion needs one scale for both axes, got {list(value)}")
        value = value[0]
    if isinstance(value, str) or not 1 < float(value) <= 8:
        raise ConfigError(f"revisit fusion needs a scale in (1, 8], got {value!r}")
    return float(value)


def _select(req: MultiRequest, o: RevisitOptions) -> tuple[list[Frame], list[Frame]]:
    """All frames read, and those kept (date window, clear fraction, count)."""
    frames = read_frames(req.inputs)
    kept = select_dates(frames, o.dates)
    clear = [f for f in kept if f.clear_fraction >= o.min_clear]
    if o.max_frames is not None and len(clear) > o.max_frames:
        best = sorted(clear, key=lambda f: -f.clear_fraction)[: o.max_frames]
        clear = [f for f in clear if any(f is b for b in best)]
    names = ", ".join(str(p) for p in req.inputs[:3]) + (" ..." if len(req.inputs) > 3 else "")
    if len(clear) < 2:
        raise DataError(f"{names}: {len(clear)} usable frame(s) of {len(frames)} read ({len(kept)} in the date window, "
                        f"{len(clear)} with >= {o.min_clear:.0%} clear pixels); revisit fusion needs at least two")
    return frames, clear


def _checked(x: np.ndarray, v: np.ndarray, scale: float, o: RevisitOptions, req: MultiRequest,
             model: Any, first: Fused) -> tuple[Fused, Decision, dict[str, Any] | None]:
    """The learned-or-classical decision and the fused image that goes with it."""
    kw = {"max_shift": o.max_shift, "tile": o.tile, "device": _device(req), "harmonise_frames": o.harmonise,
          "register": o.registration}
    if o.method != "learned":
        return first, Decision(use_model=False, reason=f"classical method {o.method} asked for"), None
    if not o.check:
        return first, Decision(use_model=True, reason="learned fusion, check switched off (revisit.check: false)"), None
    check = simulated_check(x, v, scale, ["learned", *CHECKED], model, **kw)
    scores = check["cpsnr"]
    source = ("cPSNR on simulated revisits of the input's clearest frame with the input's own masks "
              f"({check['frames']} frames, x{check['scale']}, {check['trials']} draws)")
    if not scores:
        return first, Decision(use_model=True, reason=f"learned fusion, not checked: {check.get('note')}",
                               source=source), check
    best = max(CHECKED, key=lambda m: scores[m])
    margin = scores["learned"] - scores[best]
    dec = Decision(use_model=margin >= o.min_gain_db, model_score=scores["learned"], classical_score=scores[best],
                   classical_method=best, margin_db=o.min_gain_db, source=source)
    if dec.use_model:
        dec.reason = f"learned fusion beats {best} by {margin:+.2f} dB cPSNR (needs {o.min_gain_db:+.2f})"
        return first, dec, check
    if req.opts.force:
        dec.use_model, dec.forced = True, True
        dec.reason = f"learned fusion kept by force although {best} scores {-margin:.2f} dB higher"
        return first, dec, check
    dec.fell_back = True
    dec.reason = f"{best} written: the learned fusion trails it by {-margin:.2f} dB cPSNR (needs {o.min_gain_db:+.2f})"
    again = fuse(x, v, scale, method=best, shifts=first.shifts, harmonise_frames=o.harmonise)
    again.timings = {**first.timings, **{f"{k}_fallback": t for k, t in again.timings.items()}}
    return again, dec, check


def _device(req: MultiRequest) -> str:
    dev = req.opts.device
    if dev == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return dev


def _fill_report(v: np.ndarray, clear_lr: np.ndarray) -> dict[str, Any]:
    """How much of the frames' masked area (clouds, shadows, SLC-off gaps, nodata) the output fills."""
    masked = ~v
    k_best = int(np.argmax(v.reshape(len(v), -1).sum(axis=1)))
    n_masked = int(masked.sum())
    best_masked = masked[k_best]
    return {
        "masked_fraction_mean": round(float(masked.mean()), 4),
        "masked_area_filled": round(float((masked & clear_lr[None]).sum() / n_masked), 4) if n_masked else 1.0,
        "clearest_frame_masked": round(float(best_masked.mean()), 4),
        "clearest_frame_masked_filled": round(float((best_masked & clear_lr).sum() / best_masked.sum()), 4)
        if best_masked.any() else 1.0,
        "output_clear_fraction": round(float(clear_lr.mean()), 4),
    }


def _consistency(img: torch.Tensor, clear: np.ndarray, x: np.ndarray, v: np.ndarray, fused: Fused,
                 scale: float) -> dict[str, Any]:
    """The output degraded back onto the frames' grid (Gaussian PSF, MTF 0.3) against each frame's clear pixels."""
    lr = np.asarray(psf_decimate(img.float(), scale, mtf_nyquist=0.3))
    if lr.shape[1:] != x.shape[2:]:
        return {"note": f"degraded output {list(lr.shape[1:])} is not on the frames' grid {list(x.shape[2:])}"}
    rng = float(np.percentile(x[:, :, v.any(axis=0)], 99) - np.percentile(x[:, :, v.any(axis=0)], 1)) or 1.0
    out = []
    for k in range(len(x)):
        m = v[k]
        if m.sum() < 16:
            continue
        frame = x[k] + fused.offsets[k][:, None, None]
        mse = float(np.mean((lr[:, m] - frame[:, m]) ** 2))
        out.append(10 * math.log10(rng**2 / max(mse, 1e-12)))
    return {"psnr_vs_frames_db": {"median": round(float(np.median(out)), 2), "min": round(float(np.min(out)), 2)}
            if out else None, "what": "degrade(output) vs each frame's clear pixels (after its brightness offset)",
            "data_range": rng}


def _output_image(fused: Fused, frames: list[Frame], scale: float) -> MetaTensor:
    ref = frames[0].meta
    c = fused.image.shape[0]
    nod = ref.get(Key.NODATA)
    data = fused.image.numpy().copy()
    fill = np.float32(nod) if nod is not None and not math.isnan(float(nod)) else np.float32(np.nan)
    data[:, ~fused.clear] = fill
    eff = fused.image.shape[1] / frames[0].data.shape[1], fused.image.shape[2] / frames[0].data.shape[2]
    header_in = ref.get(Key.HEADER) or {}
    header = {k: header_in[k] for k in ("tags", "interleave", "area_or_point") if k in header_in}
    scales, offsets = ref.get(Key.SCALES), ref.get(Key.OFFSETS)
    if scales is not None and len(scales) != c or offsets is not None and len(offsets) != c:
        scales = offsets = None
    return make_raster(data, scale_transform(ref[Key.TRANSFORM], eff), crs=ref.get(Key.CRS), nodata=nod,
                       band_names=ref.get(Key.BAND_NAMES) or None, scales=scales, offsets=offsets,
                       source_dtype=ref.get(Key.SOURCE_DTYPE), source_format="geotiff",
                       source_path=str(frames[0].paths[0]), header=header,
                       valid_mask=fused.clear)


def _write(image: Any, req: MultiRequest, has_holes: bool) -> None:
    if req.fmt not in (None, "geotiff", "cog"):
        raise ConfigError(f"{req.out_path}: revisit fusion writes GeoTIFF or COG, not {req.fmt}")
    dtype = None if req.opts.dtype == "source" else req.opts.dtype
    nod = image.meta.get(Key.NODATA)
    if has_holes and nod is None and dtype is None and np.dtype(image.meta.get(Key.SOURCE_DTYPE) or "float32").kind != "f":
        dtype = "float32"  # no nodata value to mark the unseen pixels: write float32 with NaN
        image.meta[Key.NODATA] = float("nan")
    geotiff_write.write(image, req.out_path, cog=req.fmt == "cog" or req.opts.cog, dtype=dtype, compress=req.opts.compress)


def _frame_info(f: Frame, used: bool, shift: Any = None) -> dict[str, Any]:
    info: dict[str, Any] = {"name": f.name, "date": f.date.isoformat() if f.date else None, "used": used,
                            "clear_fraction": round(f.clear_fraction, 4), "mask": f.mask_kind, "kind": "raster",
                            "shape": list(f.data.shape), "transform": list(f.meta.get(Key.TRANSFORM) or []),
                            "paths": [str(p) for p in f.paths], "sha256": [sha256_of(p) for p in f.paths]}
    if shift is not None:
        info["shift_px"] = [round(float(s), 4) for s in shift]
    return info


def _model(o: RevisitOptions, device: str) -> tuple[Any, list[dict[str, Any]]]:
    if o.method != "learned":
        return None, []
    path = Path(o.weights) if o.weights else DEFAULT_WEIGHTS
    model, meta = load_fusion(path, device=device)
    _, meta_path = checkpoint_paths(path)
    return model, [{"path": str(meta_path), "sha256": model_hash(path), "architecture": meta.get("architecture"),
                    "trained": (meta.get("card") or {}).get("data"), "metrics": meta.get("metrics")}]


def run(req: MultiRequest) -> MultiResult:
    """Fuse the revisit frames of ``req`` (see the module docstring); write the output when ``req.out_path`` is set.

    Raises:
        ConfigError: an unknown method, a bad scale or date window, a non-GeoTIFF output.
        DataError: a missing input, fewer than two usable frames, no clear pixel.
        GeometryError: frames on different grids, CRS or band counts (the file is named).
    """
    t0 = time.perf_counter()
    o = _options(req)
    scale = _scale(req)
    frames, used = _select(req, o)
    x, v = stack(used)
    t_read = time.perf_counter() - t0
    device = _device(req)
    model, models = _model(o, device)
    first = fuse(x, v, scale, method=o.method, model=model, harmonise_frames=o.harmonise, register=o.registration,
                 max_shift=o.max_shift, tile=o.tile, device=device)
    t1 = time.perf_counter()
    fused, decision, check = _checked(x, v, scale, o, req, model, first)
    t_check = time.perf_counter() - t1
    image = _output_image(fused, used, scale)
    clear_lr = v.any(axis=0)
    if req.out_path is not None:
        _write(image, req, not fused.clear.all())
    used_ids = {id(f) for f in used}
    shift_of = {id(f): s for f, s in zip(used, fused.shifts)}
    timings = {"read": t_read, **fused.timings, "check": t_check, "total": time.perf_counter() - t0}
    return MultiResult(
        image=image,
        inputs=[_frame_info(f, id(f) in used_ids, shift_of.get(id(f))) for f in frames],
        output={"shape": list(image.shape), "transform": list(image.meta[Key.TRANSFORM]), "crs": image.meta.get(Key.CRS),
                "nodata": image.meta.get(Key.NODATA), "clear_fraction": round(float(fused.clear.mean()), 4)},
        method=fused.method if not decision.fell_back else f"{fused.method} (fallback from learned)",
        decision=decision,
        run_info={"scale": scale, "frames_read": len(frames), "frames_used": len(used), "dates": o.dates,
                  "revisit": o.model_dump(), "fill": _fill_report(v, clear_lr),
                  "registration": {"estimated": o.registration, "max_shift_px": o.max_shift,
                                   "shifts_px": np.round(fused.shifts, 4).tolist()}},
        models=models,
        validation=check,
        consistency=_consistency(fused.image, fused.clear, x, v, fused, scale),
        timings=timings,
    )


MULTI_ROUTES["revisit"] = run

"""Raster streaming: the engine behind :func:`medsat_sr.upscale` for GeoTIFFs and band sets.

:func:`upscale_raster` reads the input window by window (a GeoTIFF or a band
folder kept open, or a raster / BandSet already in memory:
:mod:`~medsat_sr.inference.raster_source`), plans tasks (pass-through of
bands already on the output grid, a model or ensemble with a halo of at
least its receptive field, or GDAL resampling with a small halo:
:mod:`~medsat_sr.inference.raster_plan`), runs them tile by tile and writes
each output window into a tiled, compressed GTiff, a folder of band files,
or memory (:mod:`~medsat_sr.inference.raster_sink`), so that peak memory
depends on the tile size, not on the scene. The self-checks (consistency,
Wald weights) are in :mod:`~medsat_sr.inference.raster_check`.
"""

from __future__ import annotations

import ctypes
import logging
import math
from collections.abc import Sequence
from contextlib import ExitStack
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor

from medsat_sr import baselines
from medsat_sr.domains import band_sort_key  # band order comes from the sensor profiles' band_patterns
from medsat_sr.errors import ConfigError, FormatError, GeometryError, MedsatError, ModelError, numbers_text
from medsat_sr.fusion import Ensemble, Member
from medsat_sr.geometry import as_scale, crop_transform, effective_scale, scale_transform, scaled_shape
from medsat_sr.image import Key
from medsat_sr.inference.members import band_roles, check_takes, fit_normaliser, tta_for
from medsat_sr.inference.options import DEFAULT_TILE_RASTER
from medsat_sr.inference.progress import progress_over
from medsat_sr.inference.raster_check import (
    CONSISTENCY_TILES,
    consistency_add,
    consistency_result,
    psf_of,
    wald_weights_raster,
)
from medsat_sr.inference.raster_plan import Task, guide_for, nearest_map, nested_ratio, out_tiles, tile_sizes
from medsat_sr.inference.raster_sink import Sink
from medsat_sr.inference.raster_source import FileSet, Group, groups_of
from medsat_sr.inference.record import input_info, std_path
from medsat_sr.io.geotiff_gdal import gdal_env

__all__ = ["run_raster", "upscale_raster", "DEFAULT_TILE_RASTER"]

logger = logging.getLogger("medsat_sr.inference")



def _bind_members(members: list[Member], task: Task, profile: Any, fit_norm: Any) -> None:
    """Fit each member's normalisers on the group's sample (the same for every tile).

    Targets use the checkpoint's (or the fit's) ``normalisation``, guides its
    ``guide_normalisation`` (else the same spec), re-fitted on this input by
    :meth:`medsat_sr.normalise.Normaliser.for_inference`.
    """
    spec = profile.normalisation if profile is not None else None
    target_img = task.group.subset(task.idx)
    guide_img = task.guide.subset(task.guide_idx) if task.guide is not None and task.guide_idx is not None else None
    for m in members:
        meta = m.info.get("_meta") or {}
        stats = fit_norm if fit_norm is not None else meta.get("normalisation")
        if m.normaliser is None:
            m.normaliser = fit_normaliser(stats, target_img, spec)
        if m.guided and guide_img is not None and m.guide_normaliser is None:
            gstats = meta.get("guide_normalisation") or (stats.to_dict() if hasattr(stats, "to_dict") else stats)
            m.guide_normaliser = fit_normaliser(gstats, guide_img, spec)


def run_raster(groups: list[Group], **kwargs: Any) -> tuple[MetaTensor | None, MetaTensor | None, dict[str, Any]]:
    """Upscale raster groups window by window (see :func:`_run_raster` for the arguments).

    Everything, the whole-scene statistics included, runs inside
    :func:`~medsat_sr.io.geotiff.gdal_env`: outside it GDAL's block cache is
    5 % of the RAM, and the decimated statistics read of a large scene fills it.
    """
    with gdal_env():
        return _run_raster(groups, **kwargs)


def _single_plan(g: Group, members: list[Member] | None, method: str | None,
                 scale: Any) -> tuple[list[Task], tuple[int, int], Any, dict[str, Any]]:
    """One raster: one task (model or resampling) onto the grid scaled by the model's (or the given) scale."""
    if members:
        _check_model_scale(members, scale)
        check_takes(members, len(g.bands), g.meta.get(Key.SOURCE_PATH) or g.name, kind="raster", names=g.bands)
        s = tuple(members[0].scale)
    elif scale is None:
        raise ConfigError("a classical method needs a scale (--scale)")
    else:
        s = tuple(as_scale(scale, 2))
    if len(s) != 2:
        raise ModelError(f"a raster needs a 2D model; this one has scale {list(s)}")
    out_shape = tuple(scaled_shape(g.shape, s))
    eff = effective_scale(g.shape, s)
    task = Task(kind="model" if members else "resample", group=g, idx=list(range(len(g.bands))), method=method or "cubic")
    return [task], out_shape, scale_transform(g.transform, eff), {"requested": list(s), "effective": eff.tolist()}


def _target_group(groups: list[Group], members: list[Member], targets: list[str] | None) -> tuple[Group, list[int]]:
    """The band-set group (and band indexes) a model sharpens: named by ``targets``, else the one that fits."""
    n_in = int(members[0].model.in_channels)
    if targets:
        hits = [g for g in groups if all(t in g.bands for t in targets)]
        if not hits:
            raise ModelError(f"the model's target bands {targets} are not all on one grid of the band set "
                             f"({[(g.name, g.bands) for g in groups]})")
        tidx = [hits[0].bands.index(t) for t in targets]
        if len(tidx) != n_in:
            raise ModelError(f"the model takes {n_in} bands, {len(tidx)} target bands {targets} were given")
        return hits[0], tidx
    cands = [g for g in groups[1:] if len(g.bands) == n_in]
    if len(cands) != 1:
        raise ModelError(f"cannot tell which bands the model ({n_in} input bands) sharpens; name them in the "
                         "checkpoint (band_names) or the config (bands.targets)")
    return cands[0], list(range(n_in))


def _bandset_plan(groups: list[Group], members: list[Member] | None, method: str | None, scale: Any,
                  targets: list[str] | None, guides: list[str] | None, others: str) -> list[Task]:
    """A band set onto its finest grid: pass the finest group, a model for its targets, resample the rest."""
    if scale is not None:
        raise ConfigError("a band set is upscaled onto its finest grid; scale does not apply (leave --scale out)")
    fine = groups[0]
    tasks = [Task(kind="pass", group=fine, idx=list(range(len(fine.bands))))]
    target = None
    if members:
        target, tidx = _target_group(groups, members, targets)
        task = Task(kind="model", group=target, idx=tidx)
        if any(m.guided for m in members):
            task.guide, task.guide_idx = guide_for(groups, target, guides, int(members[0].model.guide_channels))
        tasks.append(task)
        rest = [i for i in range(len(target.bands)) if i not in tidx]
        if rest and others != "drop":
            tasks.append(Task(kind="resample", group=target, idx=rest, method="cubic"))
    for g in groups[1:]:
        if g is target or (members and others == "drop"):
            continue
        tasks.append(Task(kind="resample", group=g, idx=list(range(len(g.bands))),
                          method=(method or "cubic") if not members else "cubic"))
    return tasks


def _prepare_model(task: Task, members: list[Member], settings: Any, profile: Any, fit_norm: Any,
                   fit_weights_method: str | None, info: dict[str, Any]) -> None:
    """Bind normalisers, fit ensemble weights when asked, and set the model task's ensemble, halo and fills."""
    _bind_members(members, task, profile, fit_norm)
    if fit_weights_method is not None and len(members) > 1:
        ws, winfo = wald_weights_raster(fit_weights_method, members, task, profile)
        for m, w in zip(members, ws):
            m.weight = w
        info["weights"] = {**winfo, "weights": ws}
    ensemble = Ensemble(members, transforms=tta_for(members[0].scale, settings.tta), precision=settings.precision,
                        device=settings.device, uncertainty=settings.uncertainty)
    task.ensemble = ensemble
    rf = [max(int(m.model.receptive_field_per_axis[a]) for m in members) for a in range(2)]
    h = int(settings.halo) if settings.halo is not None else 0
    task.halo = (max(rf[0], h), max(rf[1], h))
    task.fill = task.group.fill_values()[task.idx]
    if task.guide is not None and task.guide_idx is not None:
        task.guide_fill = task.guide.fill_values()[task.guide_idx]
    info["tta"] = [t.describe() for t in ensemble.transforms]
    info["halo"] = list(task.halo)


def _sinks(groups: list[Group], tasks: list[Task], entries: list[tuple[Task, int]], out_bands: list[str],
           out_shape: tuple[int, int], out_t: Any, tile_rc: tuple[int, int], settings: Any,
           output: Path | None, folder: bool, model_task: Task | None) -> tuple[Sink, Sink | None, int]:
    """The output sink (dtype, nodata, scale/offset of the sources) and the ensemble-spread sink, if asked."""
    used = [t.group for t in tasks]
    dt = np.dtype("float32") if settings.dtype == "float32" else np.result_type(*[np.dtype(g.dtype) for g in used])
    nodata = next((g.nodata for g in used if g.nodata is not None), None)
    scaled = settings.dtype != "float32" and any(g.scales is not None for g in used)
    band_meta = [(t.group.meta, t.idx[k]) for t, k in entries]
    scales = [float(t.group.scales[t.idx[k]]) if t.group.scales else 1.0 for t, k in entries] if scaled else None
    offsets = [float(t.group.offsets[t.idx[k]]) if t.group.offsets else 0.0 for t, k in entries] if scaled else None
    bs = next((b for b in (512, 256, 128, 64, 32, 16)
               if all(tile_rc[a] % b == 0 or tile_rc[a] == out_shape[a] for a in range(2))), 256)
    base_meta = dict(groups[0].meta)
    common = {"shape": out_shape, "transform": tuple(out_t), "crs": groups[0].crs, "cog": settings.cog,
              "compress": settings.compress, "blocksize": bs}
    sink = Sink(path=output, folder=folder, bands=out_bands, band_meta=band_meta, nodata=nodata, dtype=dt.name,
                scales=scales, offsets=offsets, masked=nodata is None and any(g.masked for g in used),
                base_meta=base_meta, **common)
    if model_task is None or model_task.ensemble is None or not settings.uncertainty:
        return sink, None, 0
    std_bands = [f"{b}_std" for b in model_task.bands]
    model_task.std_pos = list(range(len(std_bands)))
    std_meta = {Key.HEADER: {"tags": {"MEDSAT_SR_LAYER": "standard deviation across ensemble members"}},
                Key.SOURCE_FORMAT: "geotiff", Key.SOURCE_PATH: base_meta.get(Key.SOURCE_PATH)}
    std_sink = Sink(path=std_path(output) if output is not None else None, folder=False, bands=std_bands,
                    band_meta=[({}, 0)] * len(std_bands), nodata=float("nan"), dtype="float32", scales=None,
                    offsets=None, masked=False, base_meta=std_meta, **common)
    return sink, std_sink, len(std_bands)


def _stream(tasks: list[Task], tiles: list[tuple[int, int, int, int]], sink: Sink, std_sink: Sink | None,
            n_std: int, out_t: Any, progress: bool) -> int:
    """Run every task on every output tile and write it; returns the tile stride of the consistency sample."""
    n_out = sum(len(t.idx) for t in tasks)
    stride = max(1, math.ceil(len(tiles) / CONSISTENCY_TILES))
    with ExitStack() as stack:
        stack.enter_context(gdal_env())
        sink.open(stack)
        if std_sink is not None:
            std_sink.open(stack)
        for k, (r0, r1, c0, c1) in enumerate(progress_over(tiles, progress, "upscale")):
            out = np.empty((n_out, r1 - r0, c1 - c0), np.float32)
            valid = np.empty(out.shape, bool)
            std_out = np.full((n_std, r1 - r0, c1 - c0), np.nan, np.float32) if std_sink is not None else None
            for t in tasks:
                _run_task(t, (r0, r1, c0, c1), out, valid, std_out, out_t, k % stride == 0)
            sink.write(out, valid, r0, r1, c0, c1)
            if std_sink is not None and std_out is not None:
                std_sink.write(std_out, np.isfinite(std_out), r0, r1, c0, c1)
            del out, valid, std_out
            _release_heap()
    return stride


def _run_raster(
    groups: list[Group],
    *,
    members: list[Member] | None,
    method: str | None,
    scale: Any,
    settings: Any,
    profile: Any,
    targets: list[str] | None,
    guides: list[str] | None,
    fit_norm: Any,
    output: Path | None,
    folder: bool,
    progress: bool,
    fit_weights_method: str | None = None,
    others: str = "cubic",
) -> tuple[MetaTensor | None, MetaTensor | None, dict[str, Any]]:
    """Upscale raster groups window by window (see :mod:`medsat_sr.inference` for the design).

    Args:
        groups: the input grids, finest first (one for a raster, several for a band set).
        members: networks to apply (``None`` with ``method``).
        method: classical method for a plain raster, and for coarse band-set groups.
        scale: plain rasters: the scale (default: the model's); band sets: must be ``None``.
        settings: the resolved options (precision, TTA, tiling, dtype, COG, ...).
        profile: the domain profile (normalisation spec, consistency PSF), or ``None``.
        targets, guides: band names a band-set model sharpens and is guided by.
        fit_norm: the normaliser of a self-supervised fit, used instead of checkpoint stats.
        output: the GeoTIFF (or band folder) to stream into; ``None`` keeps the result in memory.
        folder: write one file per band into the folder ``output``.
        progress: show a progress bar over tiles.
        fit_weights_method: ``"lstsq"``/``"softmax"`` to fit ensemble weights on a Wald split first.
        others: band-set bands the model does not sharpen: ``"cubic"`` or ``"drop"``.

    Returns:
        ``(image, std, info)``: in-memory results when ``output`` is ``None``,
        and what the trust record needs (tiles, tasks, consistency, ...).
    """
    bandset = len(groups) > 1
    info: dict[str, Any] = {}
    if bandset:
        tasks = _bandset_plan(groups, members, method, scale, targets, guides, others)
        out_shape, out_t = groups[0].shape, groups[0].transform
    else:
        tasks, out_shape, out_t, info["scale"] = _single_plan(groups[0], members, method, scale)
    for t in tasks:
        t.ratio = nested_ratio(t.group, out_shape, out_t) if t.kind != "pass" else (Fraction(1), Fraction(1))
        if t.kind == "model" and t.ratio is None:
            raise GeometryError(f"band group {t.group.name} is not nested in the output grid; a model needs grids "
                                "that are exact multiples of each other")
        nearest_map(t, out_shape, out_t)
        if t.kind != "pass" and t.ratio is not None:
            t.psf, t.sigma = psf_of(profile, float(t.ratio[0]), t.bands)
    entries = [(t, k) for t in tasks for k in range(len(t.idx))]
    if bandset:
        entries.sort(key=lambda e: band_sort_key(e[0].bands[e[1]]))
    out_bands = [t.bands[k] for t, k in entries]
    for pos, (t, _k) in enumerate(entries):
        t.out_pos.append(pos)
    model_task = next((t for t in tasks if t.kind == "model"), None)
    if model_task is not None and members:
        _prepare_model(model_task, members, settings, profile, fit_norm, fit_weights_method, info)
    for g in groups:  # the statistics are bound: free the decimated samples before the tile loop
        g._sample = None
    _release_heap()
    tile_rc = tile_sizes(tasks, out_shape, settings.tile_size or DEFAULT_TILE_RASTER)
    sink, std_sink, n_std = _sinks(groups, tasks, entries, out_bands, out_shape, out_t, tile_rc, settings,
                                   output, folder, model_task)
    info.update(tile=list(tile_rc), output_shape=list(out_shape), output_transform=list(out_t), bands=out_bands)
    info["tasks"] = [{"kind": t.kind, "group": t.group.name, "bands": t.bands,
                      **({"method": t.method} if t.kind == "resample" else {})} for t in tasks]
    tiles = list(out_tiles(out_shape, tile_rc))
    stride = _stream(tasks, tiles, sink, std_sink, n_std, out_t, progress)
    if sink.clipped:
        where = f"{output}: " if output is not None else ""
        total = max(1, len(out_bands) * int(out_shape[0]) * int(out_shape[1]))
        logger.warning("%s%d output values (%.3g %% of the raster) fell outside the %s range and were clipped (an SR "
                       "overshoot next to edges, usually)", where, sink.clipped, 100.0 * sink.clipped / total, sink.dt.name)
    info["clipped_values"] = int(sink.clipped)
    info["consistency"] = consistency_result(tasks)
    info["consistency"]["tiles"] = {"used": len(range(0, len(tiles), stride)), "of": len(tiles)}
    info["output_dtype"] = sink.dt.name
    info["nodata"] = sink.nodata
    image = sink.image() if output is None else None
    std = std_sink.image() if std_sink is not None and output is None else None
    info["std_output"] = str(std_path(output)) if std_sink is not None and output is not None else None
    return image, std, info


def _run_task(t: Task, win: tuple[int, int, int, int], out: np.ndarray, valid: np.ndarray,
              std_out: np.ndarray | None, out_t: Sequence[float], consistency: bool) -> None:
    """Fill the output rows of task ``t`` for the output window ``win = (r0, r1, c0, c1)``."""
    r0, r1, c0, c1 = win
    if t.kind == "pass":
        d, v = t.group.read(r0, r1, c0, c1)
        out[t.out_pos], valid[t.out_pos] = d[t.idx], v[t.idx]
    elif t.kind == "resample":
        _resample_window(t, win, out, valid, out_t, consistency)
    else:
        _model_window(t, win, out, valid, std_out, consistency)


def _resample_window(t: Task, win: tuple[int, int, int, int], out: np.ndarray, valid: np.ndarray,
                     out_t: Sequence[float], consistency: bool) -> None:
    """GDAL resampling of the task's group onto one output window (a halo of :data:`baselines.GDAL_HALO`)."""
    r0, r1, c0, c1 = win
    g = t.group
    rows, cols = t.near_rows[r0:r1], t.near_cols[c0:c1]  # type: ignore[index]
    sr0, sr1 = max(0, int(rows.min()) - baselines.GDAL_HALO), min(g.height, int(rows.max()) + 1 + baselines.GDAL_HALO)
    sc0, sc1 = max(0, int(cols.min()) - baselines.GDAL_HALO), min(g.width, int(cols.max()) + 1 + baselines.GDAL_HALO)
    d, v = g.read(sr0, sr1, sc0, sc1)
    d, v = d[t.idx], v[t.idx]
    res = baselines.resample_raster_window(
        d, crop_transform(g.transform, sr0, sc0), (r1 - r0, c1 - c0), crop_transform(out_t, r0, c0),
        crs=g.crs, method=t.method, valid=v, nearest_rows=rows - sr0, nearest_cols=cols - sc0,
    )
    v_out = v[:, rows - sr0][:, :, cols - sc0]
    out[t.out_pos], valid[t.out_pos] = res, v_out
    if consistency and t.sigma is not None and t.ratio is not None:
        lr = _lr_core(t, r0, r1, c0, c1)
        if lr is not None:
            a0, a1, b0, b1 = lr
            consistency_add(t, res, v_out, d[:, a0 - sr0 : a1 - sr0, b0 - sc0 : b1 - sc0],
                            v[:, a0 - sr0 : a1 - sr0, b0 - sc0 : b1 - sc0])


def _model_window(t: Task, win: tuple[int, int, int, int], out: np.ndarray, valid: np.ndarray,
                  std_out: np.ndarray | None, consistency: bool) -> None:
    """The network (ensemble) on the group window under one output window, with the task's halo."""
    if t.ratio is None or t.ensemble is None or t.fill is None:
        raise ModelError(f"band group {t.group.name}: the model task was not prepared")
    r0, r1, c0, c1 = win
    g = t.group
    (pr, qr), (pc, qc) = (t.ratio[0].numerator, t.ratio[0].denominator), (t.ratio[1].numerator, t.ratio[1].denominator)
    g0, g1 = r0 * qr // pr, -(-r1 * qr // pr)
    h0, h1 = c0 * qc // pc, -(-c1 * qc // pc)
    rr0 = max(0, g0 - t.halo[0]) // qr * qr
    rr1 = min(g.height, -(-(g1 + t.halo[0]) // qr) * qr)
    cc0 = max(0, h0 - t.halo[1]) // qc * qc
    cc1 = min(g.width, -(-(h1 + t.halo[1]) // qc) * qc)
    d, v = g.read(rr0, rr1, cc0, cc1)
    d, v = d[t.idx], v[t.idx]
    x = np.where(v, d, t.fill[:, None, None]).astype(np.float32, copy=False)
    size = ((rr1 - rr0) * pr // qr, (cc1 - cc0) * pc // qc)
    guide = None
    if t.guide is not None and t.guide_idx is not None and t.guide_fill is not None:
        gd, gv = t.guide.read(rr0 * pr // qr, rr1 * pr // qr, cc0 * pc // qc, cc1 * pc // qc)
        gd, gv = gd[t.guide_idx], gv[t.guide_idx]
        guide = torch.from_numpy(np.where(gv, gd, t.guide_fill[:, None, None]).astype(np.float32))[None]
    mean, var = t.ensemble.predict(torch.from_numpy(np.ascontiguousarray(x))[None], size, guide=guide)
    o0, o1 = r0 - rr0 * pr // qr, r1 - rr0 * pr // qr
    p0, p1 = c0 - cc0 * pc // qc, c1 - cc0 * pc // qc
    res = mean[0, :, o0:o1, p0:p1].numpy()
    v_out = _upsample_valid(v, t.near_rows[r0:r1] - rr0, t.near_cols[c0:c1] - cc0)  # type: ignore[index]
    out[t.out_pos], valid[t.out_pos] = res, v_out
    if std_out is not None and var is not None and t.std_pos is not None:
        sd = var[0, :, o0:o1, p0:p1].sqrt().numpy()
        std_out[t.std_pos] = np.where(v_out, sd, np.nan)
    if consistency and t.sigma is not None:
        consistency_add(t, res, v_out, d[:, g0 - rr0 : g1 - rr0, h0 - cc0 : h1 - cc0],
                        v[:, g0 - rr0 : g1 - rr0, h0 - cc0 : h1 - cc0])


_LIBC: Any = None


def _release_heap() -> None:
    """Give freed heap memory back to the OS (glibc ``malloc_trim``), once per tile.

    glibc raises its mmap threshold after large blocks are freed, so the
    tile-sized tensors of later tiles come from the heap, whose freed pages
    are kept: without trimming, the resident size creeps up with the number
    of tiles instead of staying flat. A no-op where glibc is not available.
    """
    global _LIBC
    if _LIBC is None:
        try:
            _LIBC = ctypes.CDLL("libc.so.6")
            _LIBC.malloc_trim.argtypes = [ctypes.c_size_t]
        except (OSError, AttributeError):
            _LIBC = False
    if _LIBC:
        _LIBC.malloc_trim(0)


def _upsample_valid(v: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """``v[:, rows][:, :, cols]``: the nearest-upsampled validity (all valid: no gather)."""
    if v.all():
        return np.ones((v.shape[0], rows.size, cols.size), dtype=bool)
    return v[:, rows][:, :, cols]


def _lr_core(t: Task, r0: int, r1: int, c0: int, c1: int) -> tuple[int, int, int, int] | None:
    """The group window that an aligned output window covers exactly, else ``None``."""
    if t.ratio is None or t.near_rows is None or t.near_cols is None:
        return None
    (pr, qr), (pc, qc) = (t.ratio[0].numerator, t.ratio[0].denominator), (t.ratio[1].numerator, t.ratio[1].denominator)
    if r0 * qr % pr or c0 * qc % pc or (r1 * qr % pr and r1 != t.near_rows.size) or (c1 * qc % pc and c1 != t.near_cols.size):
        return None
    return r0 * qr // pr, -(-r1 * qr // pr), c0 * qc // pc, -(-c1 * qc // pc)


def _raster_scale(groups: list[Group], members: list[Member], scale: Any, cfg: Any) -> Any:
    """The scale of a single raster for every route (model, classical, fallback); ``None`` for band sets."""
    if len(groups) > 1:
        return scale
    if scale is not None:
        return scale
    if members:
        return tuple(members[0].scale)
    if cfg is not None:
        try:
            return cfg.scale_for(None)
        except MedsatError:
            return None
    return None


def upscale_raster(*, src: Any, mem: Any, decision: Any, method: str | None, scale: Any, opts: Any, profile: Any,
                   cfg: Any, out_path: Path | None, fmt: str | None, progress: bool, others: str) -> dict[str, Any]:
    """Run a raster plan: stream the networks (when the decision keeps them) or the classical method.

    A fallback writes the classical method at the network's scale, so it
    lands on the same grid the network would have given.

    Returns:
        What the trust record needs (see :func:`~medsat_sr.inference.volume.upscale_volume`).
    """
    files = FileSet()
    try:
        groups = groups_of(src, files, getattr(profile, "nodata", None))  # the profile's where the file declares none
        if fmt == "dicom" and len(groups) == 1 and src.kind != "bandset":
            raise FormatError(f"{out_path}: a raster is written to a .tif file (a folder output is for band sets)")
        targets, guides = band_roles(cfg, mem.fit_meta, mem.members, profile)
        use = mem.members if decision.use_model else None
        if mem.members and len(groups) == 1:  # the model must fit the raster, whatever the decision
            _check_model_scale(mem.members, scale)
        opts = opts.model_copy(update={"cog": opts.cog or fmt == "cog"})
        image, std, info = run_raster(
            groups, members=use, method=method if use is None else None,
            scale=_raster_scale(groups, mem.members, scale, cfg) if use is None else scale,
            settings=opts, others=others, profile=profile, targets=targets, guides=guides, fit_norm=mem.fit_norm,
            output=out_path, folder=fmt == "dicom", progress=progress,
            fit_weights_method=mem.weights_method if use else None,
        )
    finally:
        files.close()
    std_out = Path(info.pop("std_output")) if info.get("std_output") else None
    info.pop("std_output", None)
    consistency = info.pop("consistency", {})
    weights = info.pop("weights", None)
    return {
        "image": image, "std": std, "std_output": std_out, "run_info": info, "consistency": consistency,
        "weights": weights, "timings": {"write": 0.0},
        "input": input_info(src.raster if src.raster is not None else groups, src.path, src.sha, src.kind),
        "output": {"shape": [len(info["bands"]), *info["output_shape"]], "transform": info["output_transform"],
                   "bands": info["bands"], "uncertainty": str(std_out) if std_out else None},
    }


def _check_model_scale(members: list[Member], scale: Any) -> None:
    """The ensemble members share one 2D scale, which is the one asked for (if any)."""
    s = members[0].scale
    for m in members[1:]:
        if not np.allclose(m.scale, s):
            raise ModelError(f"ensemble members have different scales: {[m.scale for m in members]}")
    if len(s) != 2:
        raise ModelError(f"a raster needs a 2D model; this one has scale {list(s)}")
    if scale is not None and not np.allclose(as_scale(scale, 2), s, atol=1e-6):
        raise ModelError(f"the model upscales by {numbers_text(s)}, but scale {numbers_text(scale)} was asked for")

"""``upscale()``: apply a model, an ensemble or a classical method to a volume or a raster.

One entry point, :func:`upscale`, for every input the readers know (a DICOM
series, a NIfTI volume, a GeoTIFF, a band folder, or such an image already in
memory) and four ways to upscale it: a checkpoint or module (``model=``),
several of them fused (``models=``, see :mod:`medsat_sr.fusion`), a
self-supervised job config that first fits a model on the input
(``config=``, :func:`medsat_sr.train.fit`), or a classical method
(``method=``, :mod:`medsat_sr.baselines`).

Geometry
--------
The output grid always comes from :mod:`medsat_sr.geometry`: ``shape' =
round(shape * s)``, the scale actually applied is ``shape' / shape``
(:func:`~medsat_sr.geometry.effective_scale`), volumes get
``scale_affine(affine, s_eff)`` and rasters ``scale_transform(transform,
s_eff)``; CRS, bounds and field of view are unchanged. Nothing is taken from
MONAI's output (whose ``sliding_window_inference`` copies the input affine).

Volumes
-------
Volumes are held in memory (a 600-slice CT is a few GB at most) and go through
:func:`monai.inferers.sliding_window_inference` with Gaussian blending and a
*zoomed* output (the window's output is ``s`` times the window). Two MONAI
habits are undone: the output geometry is recomputed (above) and the
``buffer_steps`` path, which fails on zoomed outputs, is never used.

*Seams.* Each window's predictor (``with_coord=True``) reads the window plus a
halo of at least the receptive field (``model.receptive_field_per_axis``,
clipped at the true volume border) from the full input and keeps only the
window's part of the output. The network inputs of neighbouring windows
therefore overlap by two receptive fields: every window's output is exactly
the whole-volume output, the Gaussian blend averages identical values, and
tiled output equals whole-volume output to float precision. (Relying on
MONAI's window overlap alone cannot: its Gaussian importance map is clamped
to >= 1e-3, so window borders, where the zero padding of the convolutions
differs from the whole-volume pass, leak into the blend.) MONAI's own
``overlap`` is then 0 (windows abut) for convolutional models; models with
global context (RCAN's channel attention: ``global_context``) cannot be tiled
exactly, and for them the overlap is ``max(inference.overlap, 2 * RF / tile)``
so that the Gaussian blend hides the seams.

*Non-integer scales.* MONAI places window outputs at ``int(start * zoom)``,
which is only exact for integer zooms. With a non-integer factor and a
``"pre"``-upsampling model (the default for non-integer factors: interpolate
first, then the network on the output grid), the whole volume is first
interpolated onto the output grid exactly as the model's skip path does
(:func:`medsat_sr.models.upsample.interpolate`), and the windows run on that
grid with zoom 1 and ``output_size`` equal to the window: identical to the
model's own forward pass, with any factor. A ``"post"`` model with a
non-integer factor runs the whole axis in one window along each non-integer
axis (MONAI's zoom is then ``shape' / shape`` and the window is the axis).

*2D models on volumes* (slice-wise, SMORE/ECLARE style): the network's scaled
axis is the through-plane axis (the one with the largest factor); every slice
perpendicular to each of the two in-plane axes is super-resolved whole and the
two orientations are averaged (:func:`apply_slicewise`). ``slice_orientations``
``auto`` keeps both after a fit in the same run, and runs only the one with
the largest slices for a model applied without a fit (``--model``: there the
network is the whole cost; one orientation took 0.58-0.67x the wall time for
0.09-0.15 dB less, ``benchmarks/model_speed.py``). A 2D *in-plane*
network (both of its factors > 1, trained on planes across the axis whose
factor is 1, e.g. ``scale: [2, 2, 1]``) is applied to every plane across that
axis (:func:`apply_inplane`); that axis is not resampled.

Rasters
-------
A GeoTIFF or a band folder named by path is *streamed*
(:mod:`medsat_sr.inference.raster`): output windows are processed in row-major
order and each is written into a tiled, compressed GTiff (:func:`medsat_sr.io.geotiff.open_writer`, ``GDAL_CACHEMAX`` capped by
:func:`~medsat_sr.io.geotiff.gdal_env`), so peak memory depends on the tile
size, not on the scene. A COG is made at the end by copy when asked.

* Input tiles follow the source blocks (a multiple of the block size near
  ``tile_size``), aligned so that tile borders fall on whole pixels of every
  grid involved (the lcm of the resolution ratios, e.g. 6 for Sentinel-2's
  10/20/60 m), and output windows are a multiple of the output block size.
* Each tile is read with a halo of at least the receptive field (in that
  group's pixels), clipped at the true raster edge: there the network pads
  with zeros exactly as a whole-image pass does, so the halo-free centre that
  is written equals the whole-image output (tested to 1e-4 relative with
  tiles that do not divide the image). Reflection or edge padding at the
  true edge would *differ* from the whole-image pass, so none is added.
* Classical methods use GDAL (:func:`medsat_sr.baselines.resample_raster_window`)
  window by window with a halo of :data:`~medsat_sr.baselines.GDAL_HALO`
  source pixels, equal to a whole-image reproject.
* Band sets: one output on the finest grid. Fine bands pass through
  unchanged; coarse target bands are sharpened by the (guided) model with the
  fine guide bands; other coarse bands are resampled with GDAL cubic
  (``bands.others: cubic``) or dropped (``drop``). A multi-band file names its
  bands in the band descriptions; a folder output holds one file per band.
* Nodata: the validity of every source band (nodata value, NaN, internal
  mask) propagates to the output by nearest upsampling
  (:func:`medsat_sr.baselines.upsample_mask`). Before the network, invalid
  pixels are filled with the band's median (computed, with the normalisation
  statistics, on a decimated read of at most :data:`SAMPLE_SIDE` pixels a
  side, never on nodata), so nodata never enters normalisation or the network's
  valid pixels, and the fill is the same for every tile.
* Statistics that need the whole scene (percentile normalisation, fill values)
  come from that decimated read (GDAL nearest decimation, also used for
  in-memory rasters so both paths agree).
* The consistency score of the trust record is computed on a fixed-cost
  sample: the central :data:`~medsat_sr.inference.raster_check.CONSISTENCY_CROP` pixels
  of at most :data:`~medsat_sr.inference.raster_check.CONSISTENCY_TILES` tiles spread over
  the scene (the PSF is reflected at the crop borders).

Intensity and dtype
-------------------
Outputs are written in the source dtype and units by default (the writers
round and clip with the source slope/intercept or scale/offset, and keep valid
pixels off the nodata value), or float32 on request (``dtype="float32"``).

Speed
-----
Everything runs under :func:`torch.inference_mode`; ``precision="bf16"`` uses
``torch.autocast(device, dtype=torch.bfloat16)`` with channels-last tensors
(the models keep their interpolation skip path in float32). The default,
``"auto"``, is bf16 where the hardware runs it natively (AVX512-BF16/AMX CPUs,
bf16-capable GPUs) and fp32 elsewhere: ``benchmarks/upscale.py`` measures no
PSNR cost (well under the 0.05 dB rule) for a large speed-up. Inputs are read
once per tile, statistics once per run, and the halo is the only repeated
work (``(1 + 2 halo / tile)^d``).

Trust and the decision
----------------------
Every written output gets a JSON sidecar (:mod:`medsat_sr.trust`,
:class:`~medsat_sr.inference.record.TrustRecord`). Its ``decision``
(:class:`~medsat_sr.inference.plan.Decision`) compares the network with the
classical result that a fallback writes (GDAL cubic for rasters, cubic
B-spline for volumes) and with the network's own interpolation path (what an
untrained network gives), on the same held-out split with the same mask.
Unless it beats the better of the two by ``min_gain_db`` (0.05 dB by
default), the classical result is written, on the same grid, and the record
says why; ``force`` keeps the network's output.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from monai.data import MetaTensor

from medsat_sr.baselines import METHODS
from medsat_sr.config import JobConfig, load_config, with_degradation
from medsat_sr.degradation_auto import MIN_CONFIDENCE
from medsat_sr.errors import ConfigError
from medsat_sr.fusion import Member
from medsat_sr.image import BandSet
from medsat_sr.inference.members import collect_members, domain_of
from medsat_sr.inference.multi import MultiRequest, is_fusion_method, run_multi
from medsat_sr.inference.options import UpscaleOptions, degradation_override
from medsat_sr.inference.plan import Decision, check_scale_bound, decide
from medsat_sr.inference.raster import upscale_raster
from medsat_sr.inference.record import TrustRecord, remove_output
from medsat_sr.inference.request import (
    Source,
    check_labels,
    check_request,
    fit_member,
    output_target,
    read_source,
    request_options,
)
from medsat_sr.inference.result import UpscaleResult
from medsat_sr.inference.route_pansharpen import is_pansharpen, upscale_with_options
from medsat_sr.inference.scoring import checkpoint_path, score_checkpoint, score_model
from medsat_sr.inference.shipped import as_checkpoints, serves, shipped_names
from medsat_sr.inference.volume import upscale_volume
from medsat_sr.trust import write_record
from medsat_sr.zoo.provenance import overlap_note

__all__ = ["upscale", "UpscaleResult"]

logger = logging.getLogger("medsat_sr.inference")


def _profile(cfg: JobConfig | None, members: list[Member]) -> Any:
    if cfg is not None:
        return cfg.profile
    return next((p for p in (domain_of(m.info.get("_meta") or {}) for m in members) if p is not None), None)


def _classical_name(src: Source, profile: Any) -> str:
    baseline = getattr(profile, "baseline", None) if profile is not None else None
    if baseline:
        return {"bspline": "cubic B-spline", "gdal_cubic": "GDAL cubic", "gdal_lanczos": "GDAL lanczos"}.get(str(baseline), str(baseline))
    return "cubic B-spline" if src.is_volume else "GDAL cubic"


def _method_desc(method: str | None, members: list[Member] | None, tta: bool) -> str:
    if members:
        base = "model" if len(members) == 1 else f"ensemble of {len(members)} models"
        return base + (" + self-ensemble" if tta else "")
    return method or "cubic"


def _validation_summary(validations: list[dict[str, Any]], decision: Decision) -> dict[str, Any] | None:
    if not validations:
        return None
    return {"members": validations, "beats_cubic": decision.use_model and not decision.forced, "min_gain_db": decision.margin_db}


def _upscale_multi(inputs: list[Path], *, config: Any, overrides: Sequence[str], options: Mapping[str, Any],
                   method: str | None, output: Any, run_dir: Any, **request: Any) -> UpscaleResult:
    """Several inputs into one output: the multi-input route of the config or the inputs' kind."""
    cfg = load_config(config, list(overrides)) if config is not None else None
    opts, _ = request_options(cfg, overrides, options)
    out_path, fmt = output_target(output, opts, inputs)
    req = MultiRequest(inputs=inputs, cfg=cfg, method=method, opts=opts, out_path=out_path, fmt=fmt,
                       run_dir=Path(run_dir) if run_dir else None, **request)
    req.read_options = dict(req.read_options or {})
    res, record, side = run_multi(req)
    return UpscaleResult(image=res.image, std=None, record=record, output=out_path, sidecar=side, decision=res.decision)


def upscale(
    image: MetaTensor | BandSet | str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    *,
    output: str | os.PathLike[str] | None = None,
    model: Any = None,
    models: Sequence[Any] | None = None,
    weights: Sequence[float] | str | None = None,
    method: str | None = None,
    scale: float | Sequence[float] | None = None,
    target_spacing: float | Sequence[float] | None = None,
    config: Any = None,
    overrides: Sequence[str] = (),
    fit: Any = None,
    series_description: str | None = None,
    read_options: Mapping[str, Any] | None = None,
    run_dir: str | os.PathLike[str] | None = None,
    progress: bool = False,
    pan: str | os.PathLike[str] | None = None,
    **options: Any,
) -> UpscaleResult:
    """Super-resolve a volume or a raster with a model, an ensemble, a self-supervised fit or a classical method.

    Exactly one of ``model``/``models`` (checkpoint paths or modules),
    ``method`` (``cubic``, ``linear``, ``nearest``, ``lanczos``), a
    self-supervised ``config`` (the model is fitted on ``image`` first with
    :func:`medsat_sr.train.fit`), or ``fit`` (a FitResult already computed).
    See the module docstring for tiling, streaming, nodata and the decision.

    Args:
        image: a path (DICOM series folder, NIfTI, GeoTIFF, band folder) or
            an image in memory (volume, raster, BandSet); several paths are
            fused into one output by a multi-input route
            (:mod:`medsat_sr.inference.multi`: stacks of one anatomy, revisits of one scene).
        output: where to write (format from the suffix as in ``convert``;
            no suffix: a DICOM series for volumes, a band folder for band sets).
        model: a checkpoint path, a module, or ``(module, metadata)``.
        models: several of those: a weighted ensemble.
        weights: ensemble weights (one per model), ``"equal"``, or fitted on
            a Wald split of the input: ``"lstsq"`` or ``"softmax"``.
        method: a classical method instead of a model.
        scale: one factor or one per spatial axis; a model's own scale when left out.
        target_spacing: volumes: the output spacing in mm (one or per axis).
        config: a job config (name, path, mapping or JobConfig).
        overrides: ``--set`` items (``"inference.tile_size=256"``).
        fit: a FitResult to apply (skips fitting).
        series_description: DICOM output SeriesDescription.
        read_options: reader options (DICOM ``series``, ``volume``, ``resample``).
        run_dir: where a self-supervised fit keeps its run (checkpoints, logs).
        progress: show progress bars.
        pan: pan-sharpening: the panchromatic file (``image`` is then the MS
            file or folder). A pan-sharpening method (``brovey``, ``gihs``,
            ``gsa``, ``mtf-glp-hpm``) or config (``landsat_pansharpen``) on a
            band folder with a pan band takes the same route
            (:mod:`medsat_sr.inference.route_pansharpen`).
        **options: any field of :class:`~medsat_sr.inference.options.UpscaleOptions`
            (``tile_size``, ``precision``, ``tta``, ``uncertainty``, ``device``,
            ``force``, ``min_gain_db``, ``dtype``, ``format``, ``cog``, ...);
            ``None`` leaves the config's value or the default.

    Returns:
        The :class:`UpscaleResult`.

    Raises:
        ConfigError: contradictory or invalid options.
        ModelError: a model that does not fit the data.
        DataError, FormatError, GeometryError: unreadable input.
        WriteError: the output cannot be written (nothing is left behind).
    """
    t_start = time.perf_counter()
    if is_pansharpen(method, _config_name(config), pan):
        return upscale_with_options(image, output, method=method, config=config, pan=pan, overrides=overrides,
                                    options=options)
    if isinstance(image, (list, tuple)) and len(image) != 1:
        if model is not None or models or fit is not None:
            raise ConfigError("several inputs are fused by a multi-input config or a classical method, not by --model")
        return _upscale_multi(
            [Path(p) for p in image], config=config, overrides=overrides, options=options, method=method,
            output=output, scale=scale, target_spacing=target_spacing, read_options=read_options, run_dir=run_dir,
            progress=progress, series_description=series_description,
        )
    if isinstance(image, (list, tuple)):
        image = image[0]
    shipped = shipped_names(([model] if model is not None else []) + list(models or []))
    if shipped and config is None and fit is None:
        config = serves(shipped[0])  # the shipped model's profile, scale rule and options
    cfg = load_config(config, list(overrides)) if config is not None else None
    if cfg is not None and isinstance(image, (str, os.PathLike)) and (cfg.revisit is not None or cfg.multistack is not None):
        return _upscale_multi(  # one folder of dates (or of stacks) with a multi-input config
            [Path(image)], config=cfg, overrides=(), options=options, method=method, output=output, scale=scale,
            target_spacing=target_spacing, read_options=read_options, run_dir=run_dir, progress=progress,
            series_description=series_description,
        )
    if is_fusion_method(method) and isinstance(image, (str, os.PathLike)) and config is None:
        return _upscale_multi(  # one folder of dates fused by a classical method (median, shift-and-add, ...)
            [Path(image)], config=None, overrides=overrides, options=options, method=method, output=output,
            scale=scale, target_spacing=target_spacing, read_options=read_options, run_dir=run_dir,
            progress=progress, series_description=series_description,
        )
    if method is not None and method not in METHODS:
        raise ConfigError(f"unknown method {method!r}; expected one of {list(METHODS)} (several inputs: also "
                          "median, mean, shift-and-add, best-frame; pan-sharpening: brovey, gihs, gsa, mtf-glp-hpm)")
    if scale is not None:
        check_scale_bound(scale)
    items = as_checkpoints(([model] if model is not None else []) + list(models or []))
    if method is not None and (items or fit is not None):
        raise ConfigError("give either a classical method or models, not both")
    if not items and method is None and fit is None and cfg is None:
        raise ConfigError("nothing to upscale with: give a model (--model), a method (--method) or a config (--config)")
    opts, others = request_options(cfg, overrides, options)
    deg_over = degradation_override(opts.degradation)  # --degradation auto|profile|FILE (#14), checked before any fit
    if deg_over is not None and cfg is not None:
        cfg = with_degradation(cfg, deg_over)
    out_path, fmt = output_target(output, opts, [image])
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    src = read_source(image, read_options)
    label = f"shipped model {shipped[0]!r}" if shipped and config == serves(shipped[0]) else None
    check_request(src, cfg, fmt, opts, target_spacing=target_spacing, out_path=out_path, cfg_label=label)
    check_labels(src, method)
    timings["read"] = time.perf_counter() - t0
    if not items and method is None and fit is None and cfg is not None:
        t0 = time.perf_counter()
        fit = fit_member(src, cfg, run_dir, progress, scale, target_spacing, opts)
        timings["fit"] = time.perf_counter() - t0
    mem = collect_members(items, fit, weights, opts.device)
    if len(items) == 1 and fit is None and method is None:  # one model applied as it is: scored on the input
        t0 = time.perf_counter()
        path = checkpoint_path(items[0])
        got: Any = None
        if shipped and cfg is not None:
            got = score_model(src, mem, cfg, items[0], f"shipped model {shipped[0]!r}", scale=scale,
                              target_spacing=target_spacing, shipped=shipped[0])
        elif cfg is None and not shipped and path:  # a checkpoint of the user's own, with no config given
            got = score_checkpoint(src, mem, path, scale, target_spacing)
        if got is not None:
            mem.validations = [{"model": 0, **got}]
            timings["score_on_input"] = time.perf_counter() - t0
    cfg = _measured(cfg, mem.fit_meta)
    profile = _profile(cfg, mem.members)
    decision = _decide(src, mem, profile, opts, _training_overlap(src, mem, shipped))
    run = dict(src=src, mem=mem, decision=decision, method=method, scale=scale, opts=opts, profile=profile,
               cfg=cfg, out_path=out_path, fmt=fmt, progress=progress)
    t0 = time.perf_counter()
    if src.is_volume:
        res = upscale_volume(**run, target_spacing=target_spacing, series_description=series_description)
    else:
        res = upscale_raster(**run, others=others)
    timings.update(res.pop("timings", {}))
    timings.setdefault("inference", time.perf_counter() - t0)
    timings["total"] = time.perf_counter() - t_start
    record, side = _record_run(res, mem, decision, cfg, method, weights, opts, out_path, fmt, timings)
    return UpscaleResult(image=res["image"], std=res.get("std"), record=record, output=out_path,
                         std_output=res.get("std_output"), sidecar=side, decision=decision)


def _config_name(config: Any) -> str | None:
    """A config's name or path (``None``: no config), whether given by name, path or as a JobConfig."""
    if config is None or isinstance(config, (str, os.PathLike)):
        return None if config is None else os.fspath(config)
    return getattr(config, "name", None)


def _measured(cfg: JobConfig | None, fit_meta: Mapping[str, Any]) -> JobConfig | None:
    """``cfg`` with the degradation the fit measured and used (``degradation: auto``), else ``cfg``.

    The run's self-checks then degrade the output as the training pairs were
    degraded: the consistency score says whether degrading the output with the
    *estimated* degradation reproduces the input (#14).
    """
    est = ((fit_meta or {}).get("task") or {}).get("degradation_estimate") or {}
    if cfg is None or not est.get("used") or not est.get("override"):
        return cfg
    return with_degradation(cfg, est["override"])


def _training_overlap(src: Any, mem: Any, shipped: Sequence[str]) -> tuple[str, str] | None:
    """Whether a model of the run (shipped, the start of its fit, or a checkpoint of the user's own) saw the input."""
    starts = [*shipped, ((mem.fit_meta or {}).get("start") or {}).get("shipped")]
    own = [(str(m.info["path"]), m.info.get("_meta") or {}) for m in mem.members
           if m.info.get("path") and not (m.info.get("_meta") or {}).get("card")]
    return overlap_note([n for n in starts if n], src.path, own)


def _decide(src: Any, mem: Any, profile: Any, opts: UpscaleOptions,
            overlap: tuple[str, str] | None = None) -> Decision:
    """The model-or-classical decision of a single-input run, with the degradation self-check in its reason.

    ``overlap``: a shipped model in the run was trained on this input (:func:`medsat_sr.zoo.provenance.overlap_note`).
    """
    decision = decide(mem.members, mem.validations, classical_method=_classical_name(src, profile),
                      margin_db=opts.min_gain_db, force=opts.force)
    found = [f for f in (_degradation_findings((mem.fit_meta.get("task") or {}).get("degradation_estimate")),
                         (f"Training data: {overlap[0]}.", overlap[1]) if overlap else None) if f]
    if found:
        head = f"{decision.reason.rstrip('. ')}. " if decision.reason else ""
        # the verdict line cautions only when the network's output is what was written
        decision = replace(decision, reason=head + " ".join(f[0] for f in found),
                           caution="; ".join(f[1] for f in found) if decision.use_model else None)
    return decision


def _degradation_findings(est: Mapping[str, Any] | None) -> tuple[str, str] | None:
    """What the fit's degradation estimate or check found that the user must hear (#14).

    Returns:
        ``(note, caution)``: the sentence for the decision's reason and its
        short form for the verdict line; ``None`` when there is nothing to say.
    """
    if not est:
        return None
    agree = est.get("profile_agreement") or {}
    if agree.get("strong"):
        how = "the fit used the profile: try --degradation auto" if est.get("used") is False else "the fit used the estimate"
        ratio = f"x{float(agree['ratio']):.2f}; " if agree.get("ratio") is not None else ""
        return (f"Degradation: {agree['text']}.",
                f"the input's measured degradation disagrees with the profile's ({ratio}{how})")
    if est.get("used") is False and not agree:
        why = str(est.get("reason") or "no estimate").split(":")[0]
        what = "not measured"  # the estimate failed (too small, not anisotropic, ...)
        if est.get("confidence") is not None:  # measured: not confident, or (a single raster) not plausible
            what = "measured but not used" if float(est["confidence"]) >= MIN_CONFIDENCE else "not measured reliably"
        return (f"Degradation: {what} on this input ({why}); the held-out split assumes the profile's "
                "degradation and cannot show a mismatch.",
                f"degradation {what} on this input: the held-out check cannot show a PSF mismatch")
    if est.get("used") and est.get("assumes"):  # a single raster's own PSF: the split is degraded by that same guess
        return (f"Degradation: estimated from this input alone, assuming {est['assumes']}; the held-out split is "
                "degraded the same way and cannot show whether the scene follows it.",
                "degradation estimated from this raster alone: the held-out check cannot show a PSF mismatch")
    return None


def degradation_note(est: Mapping[str, Any] | None) -> str | None:
    """The verdict's sentence on the fit's degradation (#14), or ``None`` when there is nothing to say.

    * the input's measured degradation disagrees strongly with the profile's
      (``degradation: auto``, or the check of ``degradation: profile``);
    * ``degradation: auto`` could not measure the input (failed or not
      confident): the held-out split then assumes the profile's degradation
      and cannot show a mismatch, so a model that wins there may still lose to
      the classical result on the real input (Landsat-8 30 -> 15 m against the
      real pan: -0.86 dB vs GDAL cubic, benchmarks/results/degradation_routes.txt).
    """
    found = _degradation_findings(est)
    return found[0] if found else None


def degradation_caution(est: Mapping[str, Any] | None) -> str | None:
    """The verdict line's short form of :func:`degradation_note` (``None`` when there is nothing to say)."""
    found = _degradation_findings(est)
    return found[1] if found else None


def _record_run(res: dict[str, Any], mem: Any, decision: Decision, cfg: Any, method: str | None, weights: Any,
                opts: UpscaleOptions, out_path: Path | None, fmt: str | None,
                timings: dict[str, float]) -> tuple[dict[str, Any], Path | None]:
    """The trust record of a single-input run, written next to the output (an output without it is removed)."""
    use = mem.members if decision.use_model else None
    for m, rec in zip(mem.members, mem.records):
        rec["weight"] = m.weight
    record = TrustRecord(
        input=res["input"], output={"path": str(out_path) if out_path else None, "format": fmt, "dtype": opts.dtype, **res["output"]},
        method=_method_desc(method, use, bool(opts.tta)), models=mem.records if mem.members else [],
        settings={"precision": opts.precision, "uncertainty": bool(opts.uncertainty), "device": opts.device,
                  "tile_size": opts.tile_size, "halo": opts.halo, "overlap": opts.overlap, "batch_size": opts.batch_size,
                  **res["run_info"]},
        decision=decision.to_dict(), validation=_validation_summary(mem.validations, decision),
        consistency=res["consistency"], timings=timings,
        config=cfg.resolved() if cfg is not None else None, config_source=cfg.source if cfg is not None else None,
        weights=res.get("weights") or ({"method": "given" if weights is not None and not isinstance(weights, str) else "equal"} if len(mem.members) > 1 else None),
    ).to_dict()
    side = None
    if out_path is not None and opts.sidecar:
        try:
            side = write_record(record, out_path)
        except BaseException:
            for done in (out_path, res.get("std_output")):  # an output without its record is incomplete
                remove_output(done)
            raise
    return record, side

"""The evaluation protocol of DESIGN.md §5: degrade a reference, run every method, score on its grid.

For each high-resolution reference (or explicit low/high-resolution pair):

1. **Grid.** The reference is centre-cropped so that every scaled axis is a
   whole number of low-resolution samples (``n = n_lr * f`` exactly); the
   crop is recorded. Then the low-resolution grid is exactly
   ``geometry.scale_affine(affine, 1 / f)`` (rasters: ``scale_transform``)
   and upscaling it by ``f`` lands back on the reference grid: the fields of
   view are aligned by construction, which :func:`evaluate` checks for every
   method's output (``grid_match``).
2. **Degradation.** The reference is degraded with the job's domain profile
   (config overrides merged) by :func:`medsat_sr.degrade.degrade`, the one
   recipe that :mod:`medsat_sr.data` uses for training pairs and inference
   for its consistency check:

   * ``slice_profile`` (thick slices): Gaussian or rect profile of FWHM
     ``degradation.slice_profile.fwhm`` mm, sampled every
     ``slice_profile.spacing`` mm along ``slice_profile.axis``. On an
     isotropic reference ``"header"``/``"thickness"``/``"thickest"`` cannot
     be read from the data, so the factor comes from ``scale`` (argument or
     a per-axis ``scale`` in the config) or else
     :data:`DEFAULT_SLICE_FACTOR` (4: 1 mm -> 4 mm, the benchmark of the
     learning-core issue); the FWHM is the slice spacing (no gap) and the
     axis the one closest to the world's inferior-superior axis;
   * ``psf``: Gaussian PSF (MTF gain at Nyquist, per band when the profile
     gives it, or FWHM in low-resolution pixels) or box, then decimation
     (:func:`medsat_sr.degrade.psf_decimate`), nodata mask propagated;
   * ``kspace``: central k-space kept and decimated
     (:func:`medsat_sr.degrade.kspace_lowres`, real part);
   * ``noise`` (when the profile sets it): sigma given in normalised units,
     converted to physical units with the profile's normalisation of the
     reference, seeded with ``train.seed``.
3. **Methods.** The classical baselines of the profile (``metrics.baselines``:
   cubic B-spline for volumes, GDAL cubic and lanczos for rasters) are
   always run, plus the requested ones: other classical methods, ``model``
   (a checkpoint, or a self-supervised fit with :func:`medsat_sr.train.fit`
   when the config's ``train.mode`` is ``self_supervised``), or checkpoints.
   Every method goes through :func:`medsat_sr.inference.upscale`, the code
   users run; learned outputs are kept even when the model does not beat
   cubic on its validation split (``force``): the evaluation reports what the
   model does. Wall time and peak memory (resident set size sampled every
   10 ms, :class:`PeakMemory`) are recorded per method, fitting included.

   *What a self-supervised fit may see.* Volumes: the degraded input only
   (thick slices: its own in-plane slices, SMORE/ECLARE). Rasters: by
   default (``holdout=0.5``) the left half of the high-resolution reference,
   and every method is scored on the right half only (the learning-core
   benchmark's protocol: "train on the left half, measure on the right
   half"); ``holdout=0`` fits on the degraded input itself (Wald's
   protocol one scale down) and scores the whole image.
4. **Metrics** (:mod:`medsat_sr.metrics`), on the reference grid, in the
   profile's units (``hu_window``/``percentile`` profiles: values as read,
   HU or MR intensity; ``linear``/``reflectance`` profiles: the normalised
   physical quantity, reflectance or DN/255), over the scored region less
   ``metrics.crop_border`` pixels:

   * PSNR with an explicit data range (``metrics.data_range``: the
     reference's max - min, the HU window width, the reference's robust
     percentile range, or a fixed value), whole and masked
     (``metrics.mask``: foreground of the reference, the rule
     :func:`medsat_sr.data.foreground_mask` uses for training patches, or
     valid pixels);
   * SSIM (Gaussian window of ``metrics.ssim.sigma``): 3D for volumes, whole
     and masked, plus the mean 2D SSIM of the slices across the thick axis;
     2D per band for rasters;
   * MAE, MSE (whole and masked), RMSE;
   * rasters: per-band PSNR (per-band data range) and RMSE, SAM (degrees)
     and ERGAS with ``h/l = 1/scale`` (``metrics.ergas_ratio``).

   Every setting the numbers depend on (degradation parameters, crop,
   region, data range, mask rule, SSIM window, ERGAS convention, method
   options, versions) is recorded in :meth:`Evaluation.to_dict`.

Steps 1 and 2 (the :class:`Case`) live in :mod:`medsat_sr.evaluate_cases`,
step 4's settings and :func:`score` in :mod:`medsat_sr.evaluate_scoring`;
this module runs the methods, puts the scores together per file and holds
the result types. Their public names are importable from here.

Example:
    >>> from medsat_sr.evaluate import evaluate                     # doctest: +SKIP
    >>> ev = evaluate(["scan.nii.gz"], "mri_thick_slice", output="report")  # doctest: +SKIP
    >>> ev.files[0].methods["model"]["psnr_masked"]                  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import math
import os
import platform
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medsat_sr import baselines
from medsat_sr._version import __version__
from medsat_sr.config import JobConfig, load_config
from medsat_sr.errors import ConfigError, DataError, GeometryError, WriteError
from medsat_sr.evaluate_cases import (
    DEFAULT_RASTER_HOLDOUT,
    DEFAULT_SLICE_FACTOR,
    Case,
    crop_image,
    degrade_reference,
    pair_case,
    prepare_case,
    superior_axis,
)
from medsat_sr.evaluate_methods import CLASSICAL, MethodRun, _model_names, _run_method, parse_methods, training_overlap
from medsat_sr.evaluate_scoring import (
    _band_ids,
    _crop_region,
    _data_ranges,
    _masks,
    _units_transform,
    metric_settings,
    score,
)
from medsat_sr.image import Key
from medsat_sr.inference import upscale
from medsat_sr.peak_memory import PeakMemory
from medsat_sr.report import write_report
from medsat_sr.report_plain import band_labels
from medsat_sr.train import fit

__all__ = [
    "evaluate",
    "Evaluation",
    "FileResult",
    "Case",
    "prepare_case",
    "pair_case",
    "degrade_reference",
    "crop_image",
    "superior_axis",
    "metric_settings",
    "score",
    "PeakMemory",
    "parse_methods",
    "CLASSICAL",
    "DEFAULT_SLICE_FACTOR",
    "DEFAULT_RASTER_HOLDOUT",
    "EVALUATION_FORMAT",
]

logger = logging.getLogger(__name__)

#: ``format`` entry of :meth:`Evaluation.to_dict` (metrics.json).
EVALUATION_FORMAT = "medsat_sr.evaluation/1"

#: The metric keys that are "higher is better" (used for gains and headlines).
HIGHER_IS_BETTER = ("psnr", "psnr_masked", "ssim", "ssim_masked", "ssim_slices")


# =============================================================== results
@dataclass
class FileResult:
    """The evaluation of one reference.

    Attributes:
        case: the prepared case (images on the evaluation grid).
        settings: what the numbers depend on (config, profile, degradation,
            crop, region, metric settings, units, data range).
        methods: method name -> metrics (:func:`score`) plus ``seconds``,
            ``peak_rss_mb``, gains over cubic and method info.
        outputs: method name -> output ``(C, *spatial)`` in values as read.
        fits: method name -> :class:`~medsat_sr.train.FitResult` of self-supervised fits.
        masks: ``(valid, masked)`` spatial masks over the reference grid.
    """

    case: Case
    settings: dict[str, Any]
    methods: dict[str, dict[str, Any]]
    outputs: dict[str, np.ndarray]
    fits: dict[str, Any] = field(default_factory=dict)
    masks: tuple[np.ndarray, np.ndarray] | None = None

    @property
    def name(self) -> str:
        """The case name."""
        return self.case.name

    def best_learned(self, key: str = "psnr_masked") -> str | None:
        """The non-classical method with the best ``key``, or ``None``."""
        learned = [m for m in self.methods if m not in CLASSICAL]
        if not learned:
            return None
        return max(learned, key=lambda m: _num(self.methods[m].get(key)))

    def to_dict(self) -> dict[str, Any]:
        """JSON data of this file's results (no images)."""
        return {"name": self.name, "path": self.case.path, "kind": self.case.kind, "settings": self.settings,
                "methods": self.methods}


def _num(v: Any) -> float:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return float("-inf")
    return f if math.isfinite(f) else float("-inf")


@dataclass
class Evaluation:
    """Results of :func:`evaluate`: per file, per method, with every setting recorded.

    Attributes:
        files: one :class:`FileResult` per reference.
        settings: run-level settings (methods, versions, machine).
        report_dir: where the report was written, if any.
    """

    files: list[FileResult]
    settings: dict[str, Any]
    report_dir: Path | None = None

    @property
    def methods(self) -> list[str]:
        """Every method name, in first-seen order."""
        out: list[str] = []
        for f in self.files:
            for m in f.methods:
                if m not in out:
                    out.append(m)
        return out

    def summary(self) -> dict[str, dict[str, Any]]:
        """Mean of the main metrics per method over the files that ran it."""
        keys = ("psnr", "psnr_masked", "ssim", "ssim_masked", "ssim_slices", "mae", "mse", "sam", "ergas",
                "psnr_gain_vs_cubic", "psnr_masked_gain_vs_cubic", "seconds", "peak_rss_mb")
        out: dict[str, dict[str, Any]] = {}
        for m in self.methods:
            rows = [f.methods[m] for f in self.files if m in f.methods]
            entry: dict[str, Any] = {"files": len(rows)}
            for k in keys:
                vals = [r[k] for r in rows if isinstance(r.get(k), (int, float)) and math.isfinite(r[k])]
                if vals:
                    entry[k] = float(np.mean(vals))
            out[m] = entry
        return out

    def headlines(self) -> list[dict[str, Any]]:
        """Per file: the best learned method against cubic (PSNR whole and masked), or cubic alone."""
        out = []
        for f in self.files:
            cubic = f.methods.get("cubic", {})
            best = f.best_learned()
            row: dict[str, Any] = {"file": f.name, "kind": f.case.kind, "method": best,
                                   "cubic_psnr": cubic.get("psnr"), "cubic_psnr_masked": cubic.get("psnr_masked")}
            if best is not None:
                b = f.methods[best]
                row.update(psnr=b.get("psnr"), psnr_masked=b.get("psnr_masked"),
                           gain=b.get("psnr_gain_vs_cubic"), gain_masked=b.get("psnr_masked_gain_vs_cubic"),
                           beats_cubic=bool(_num(b.get("psnr_masked_gain_vs_cubic")) > 0))
            out.append(row)
        return out

    def merge(self, *others: Evaluation) -> Evaluation:
        """One evaluation holding the files of this one and ``others`` (e.g. a volume and a raster run)."""
        files = list(self.files)
        runs = [self.settings]
        for o in others:
            files.extend(o.files)
            runs.append(o.settings)
        settings = dict(self.settings)
        settings["runs"] = runs
        return Evaluation(files=files, settings=settings)

    def to_dict(self) -> dict[str, Any]:
        """metrics.json: settings, per-file results, summary and headlines."""
        return {
            "format": EVALUATION_FORMAT,
            "settings": self.settings,
            "files": [f.to_dict() for f in self.files],
            "summary": self.summary(),
            "headlines": self.headlines(),
        }


def _load_average() -> list[float] | None:
    """1, 5 and 15 minute load averages (other work on a shared machine slows every timing)."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (OSError, AttributeError):  # pragma: no cover - not Unix
        return None


def _check_output_dir(path: Path) -> None:
    """Fail early (before any work) when ``path`` cannot be created or written.

    Raises:
        WriteError: the path is a file, or its first existing ancestor is not writable.
    """
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise WriteError(f"{p}: exists and is not a folder")
    probe = p
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not os.access(probe, os.W_OK | os.X_OK):
        raise WriteError(f"{p}: cannot write there ({probe} is not writable)")


def _environment() -> dict[str, Any]:
    return {
        "medsat_sr_version": __version__,
        "torch_version": torch.__version__.split("+")[0],
        "numpy_version": np.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "processor": platform.processor() or None,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "memory_measure": "peak resident set size sampled every 10 ms (/proc/self/statm); "
                          "peak_rss_increase_mb = peak - RSS when the method started",
        "time_measure": "wall clock (time.perf_counter) of the whole method: fit (self-supervised) + upscale",
    }


# =============================================================== the protocol
def evaluate(
    references: Sequence[Any] = (),
    config: Any = None,
    *,
    pairs: Sequence[tuple[Any, Any]] = (),
    methods: str | Sequence[str] | None = None,
    models: Sequence[str | os.PathLike[str]] = (),
    overrides: Sequence[str] = (),
    scale: float | Sequence[float] | None = None,
    holdout: float | None = None,
    names: Sequence[str] | None = None,
    output: str | os.PathLike[str] | None = None,
    run_dir: str | os.PathLike[str] | None = None,
    figures: bool = True,
    progress: bool = True,
    title: str | None = None,
) -> Evaluation:
    """Run the evaluation protocol (module docstring) and optionally write the report.

    Args:
        references: high-resolution references (paths or images).
        config: the job config (built-in name, path, mapping or JobConfig).
        pairs: explicit ``(lr, hr)`` pairs, scored without degradation.
        methods: method names (comma string or list); the profile's
            baselines are always included. Default: the baselines plus
            ``model`` when checkpoints are given or the config is
            self-supervised.
        models: checkpoints to evaluate (``model`` or ``model:<stem>``).
        overrides: ``--set`` items for the config.
        scale: factor(s) instead of the config's.
        holdout: rasters: see :func:`prepare_case`.
        names: case names (default: file stems, made unique).
        output: report folder (metrics.json, metrics.csv, figures,
            report.html); ``None`` writes nothing.
        run_dir: where self-supervised fits keep their runs (default:
            ``<output>/runs`` when writing a report, else nothing).
        figures: write the PNG figures and embed them in the HTML.
        progress: progress bars.
        title: report title.

    Returns:
        The :class:`Evaluation`.

    Raises:
        ConfigError: no config, no reference, unknown methods, or a
            reference that does not fit the config.
        GeometryError: an output that is not on the reference grid, or a
            pair whose grids are not aligned.
        DataError, FormatError: unreadable inputs.
        WriteError: the report cannot be written.
    """
    if config is None:
        raise ConfigError("evaluate needs a config (--config NAME or PATH): it names the domain profile and the degradation")
    if isinstance(config, JobConfig) and not overrides:
        cfg = config
    else:
        cfg = load_config(config, list(overrides))
    cfg.check_runnable("evaluate")
    refs = list(references or [])
    prs = list(pairs or [])
    if not refs and not prs:
        raise ConfigError("nothing to evaluate: give high-resolution references (or --pair LR HR)")
    method_list = parse_methods(methods, models, cfg=cfg)
    ckpts = dict(zip(_model_names(models), [str(m) for m in models])) if models else {}
    out_dir = Path(output) if output is not None else None
    rd = Path(run_dir) if run_dir is not None else (out_dir / "runs" if out_dir is not None else None)
    for d in (out_dir, rd):
        if d is not None:
            _check_output_dir(d)
    load_start = _load_average()

    cases: list[Case] = []
    used: set[str] = set()
    for i, r in enumerate(refs):
        nm = names[i] if names is not None and i < len(names) else None
        cases.append(prepare_case(r, cfg, name=nm, scale=scale, holdout=holdout, index=i))
    for j, (lo, hi) in enumerate(prs):
        k = len(refs) + j
        nm = names[k] if names is not None and k < len(names) else None
        cases.append(pair_case(lo, hi, cfg, name=nm, index=k))
    for c in cases:  # unique names for files and figures
        base, n = c.name, 2
        while c.name in used:
            c.name = f"{base}_{n}"
            n += 1
        used.add(c.name)

    files: list[FileResult] = []
    for case in cases:
        logger.info("evaluating %s (%s, factors %s) with %s", case.name, case.kind, list(case.factors), method_list)
        runs: dict[str, MethodRun] = {}
        for m in method_list:
            runs[m] = _run_method(m, case, cfg, checkpoint=ckpts.get(m), run_dir=rd, progress=progress)
            logger.info("%s: %s done in %.1f s", case.name, m, runs[m].seconds)
        files.append(_score_case(cfg, case, runs))
        for m, run in runs.items():
            note = training_overlap(run, ckpts.get(m), case.path)
            if note:
                logger.warning("%s: %s: %s", case.name, m, note)
                files[-1].methods[m]["training_overlap"] = note

    settings = {
        "config": cfg.name if hasattr(cfg, "name") else None,
        "config_source": cfg.source,
        "overrides": list(overrides),
        "methods": method_list,
        "checkpoints": ckpts,
        "holdout": holdout,
        "scale": scale,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "environment": {**_environment(), "load_average_start": load_start, "load_average_end": _load_average()},
        "title": title,
    }
    ev = Evaluation(files=files, settings=settings)
    if out_dir is not None:
        write_report(ev, out_dir, figures=figures, title=title)
        ev.report_dir = out_dir
    return ev


def _score_case(cfg: Any, case: Case, runs: Mapping[str, MethodRun]) -> FileResult:
    ref = case.reference
    conv, units = _units_transform(cfg.profile, ref)
    ref_raw = ref.as_tensor().to(torch.float64).cpu().numpy()
    outputs = {m: r.image for m, r in runs.items()}
    valid, masked = _masks(cfg, case, ref, outputs)
    border = int(cfg.profile.metrics.crop_border)
    region = case.region
    v_r = _crop_region(valid, region, border)
    m_r = _crop_region(masked, region, border)
    if not v_r.any():
        raise DataError(f"{case.name}: no valid pixel in the scored region")
    if not m_r.any():
        logger.warning("%s: the metric mask selects nothing in the scored region; masked metrics use the valid pixels", case.name)
        m_r = v_r
    ref_m = conv(_crop_region(ref_raw, region, border))
    raw_r = _crop_region(ref_raw, region, border)
    dr, dr_bands, dr_rule = _data_ranges(cfg, ref_m, raw_r, v_r, conv)
    ms = metric_settings(cfg, case)
    eh = ms.get("ergas", {}).get("h_over_l")
    results: dict[str, dict[str, Any]] = {}
    for m, run in runs.items():
        sr_m = conv(_crop_region(run.image.astype(np.float64), region, border))
        sr_m = np.where(np.isfinite(sr_m), sr_m, 0.0)
        r = score(
            sr_m, ref_m, kind=case.kind, data_range=dr, band_ranges=dr_bands, valid=v_r, mask=m_r,
            ssim_sigma=float(cfg.profile.metrics.ssim.sigma), slice_axis=case.slice_axis,
            scale=max(case.factors) if case.kind == "raster" else None, ergas_h_over_l=eh,
            band_names=_band_ids(cfg, ref),
        )
        r.update(
            kind=run.kind, seconds=run.seconds, fit_seconds=run.fit_seconds, apply_seconds=run.apply_seconds,
            peak_rss_mb=run.peak_rss_mb, peak_rss_increase_mb=run.peak_rss_increase_mb, **run.info,
        )
        results[m] = r
    if "cubic" in results:
        c = results["cubic"]
        for r in results.values():
            for k in ("psnr", "psnr_masked", "ssim", "ssim_masked"):
                if isinstance(r.get(k), (int, float)) and isinstance(c.get(k), (int, float)):
                    r[f"{k}_gain_vs_cubic"] = float(r[k]) - float(c[k])
    settings = {
        "config": getattr(cfg, "name", None),
        "config_source": cfg.source,
        "domain": cfg.profile.name,
        "factors": list(case.factors),
        "degradation": case.degradation,
        "crop": case.crop,
        "region": case.region_record(),
        "reference_source": ref.meta.get(Key.SOURCE_PATH),
        "reference_shape": [int(v) for v in ref.shape],
        "input_shape": [int(v) for v in case.lr.shape],
        "reference_spacing": [float(v) for v in ref.meta[Key.SPACING]],
        "input_spacing": [float(v) for v in case.lr.meta[Key.SPACING]],
        "band_names": _band_ids(cfg, ref) if case.kind == "raster" else list(ref.meta.get(Key.BAND_NAMES) or []),
        "band_labels": band_labels(_band_ids(cfg, ref), cfg.profile.bands, int(ref.shape[0])) if case.kind == "raster" else None,
        "units": units,
        "data_range": dr,
        "data_range_per_band": dr_bands if case.kind == "raster" else None,
        "data_range_rule": dr_rule,
        "metrics": ms,
        "pixels_scored": int(v_r.sum()),
        "pixels_masked": int(m_r.sum()),
        "self_supervised_fit_on": (
            "the degraded input" if case.fit_image is None else case.degradation.get("holdout", {}).get("fit")
        ),
        "model_config": {"model": cfg.resolved().get("model"), "train": cfg.resolved().get("train"),
                         "inference": cfg.resolved().get("inference")},
    }
    return FileResult(case=case, settings=settings, methods=results, outputs=outputs,
                      fits={m: r.fit for m, r in runs.items() if r.fit is not None}, masks=(valid, masked))


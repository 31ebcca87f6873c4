"""``medsat-sr demo``: the main job end to end, offline, on the real samples shipped in the package.

Two real images ship in :mod:`medsat_sr.samples` (origin and licences in
``SOURCES.md`` there); nothing is downloaded. The demo:

1. **MR thick slices.** The 1 mm MNI ICBM152 T1 template (cropped to the
   brain's bounding box plus :data:`MARGIN` voxels, to save time) is turned
   into a thick-slice scan with the ``mri`` profile's slice profile: Gaussian,
   FWHM 4 mm, one slice every 4 mm along the inferior-superior axis (the
   learning-core benchmark). A small EDSR learns from that scan alone
   (self-supervised, SMORE/ECLARE style: its in-plane slices degraded the
   same way) for ``minutes``, and restores 1 mm slices. Written: the
   thick-slice input (NIfTI), the result as NIfTI and as a derived DICOM
   series, and the cubic B-spline result for comparison.
2. **Aerial RGBN ×2.** The 4-band 5 m scene: a small EDSR learns ×2 from the
   left half of the scene (Wald's protocol: pairs made by degrading it with
   the profile's MTF), is scored on the right half it never saw (degraded
   ×2, super-resolved, compared with the original), and then sharpens the
   whole 5 m scene to 2.5 m, written as a Cloud-Optimised GeoTIFF with its
   trust record.
3. **Report.** One evaluation report for both samples against cubic (and
   lanczos for the scene): metrics.json/csv, figures, report.html.

The budget is short (``minutes`` of training per sample, default
:data:`DEFAULT_MINUTES`), so the networks are small
(:data:`MRI_OVERRIDES`, :data:`AERIAL_OVERRIDES`). The numbers are whatever
the run gives: when SR does not beat cubic the demo says so, and the
written products follow :func:`medsat_sr.upscale`'s rule (the cubic result
is written when the fit's validation PSNR does not beat cubic).
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from medsat_sr._atomic import current_umask
from medsat_sr.errors import ConfigError, WriteError
from medsat_sr.inference.verdict import record_verdict, verdict_line
from medsat_sr.logs import naming

__all__ = [
    "run_demo",
    "DemoResult",
    "sample_path",
    "DEFAULT_MINUTES",
    "MRI_SAMPLE",
    "AERIAL_SAMPLE",
    "MRI_OVERRIDES",
    "AERIAL_OVERRIDES",
    "SLICE_MM",
    "MARGIN",
]

logger = logging.getLogger(__name__)

#: Minutes of training per sample (two samples).
DEFAULT_MINUTES = 1.25
#: The MR sample (1 mm MNI ICBM152 2009a T1 template).
MRI_SAMPLE = "mni_icbm152_t1_2009a.nii.gz"
#: The aerial sample (4-band 8-bit scene at 5 m).
AERIAL_SAMPLE = "rgbn_aerial_5m.tif"
#: Simulated slice spacing and thickness (mm) of the thick-slice scan.
SLICE_MM = 4.0
#: Voxels kept around the brain's bounding box.
MARGIN = 4

#: Config overrides of the aerial fit: a small EDSR that trains and runs in the budget.
AERIAL_OVERRIDES = (
    "model.kwargs={features: 32, n_blocks: 4}",
    "train.batch_size=16",
    "train.patch_size=48",
    "train.lr=1.0e-3",
    "train.schedule.warmup_iterations=20",
    "train.val_every=50",
    "train.early_stopping.enabled=false",
)
#: Config overrides of the MR fit: the same network and schedule. Inference keeps the config's
#: ``precision: auto`` (bf16 where native: about 2x faster, 75 dB PSNR against the fp32 output, max 0.4
#: of 255; forcing bf16 made a CPU without native bfloat16 several times slower, see medsat_sr.hardware).
MRI_OVERRIDES = (*AERIAL_OVERRIDES,)


def sample_path(name: str) -> Path:
    """Path of a built-in sample (works from a checkout and from an installed wheel).

    Raises:
        ConfigError: no such sample.
    """
    p = Path(str(resources.files("medsat_sr.samples").joinpath(name)))
    if not p.is_file():
        raise ConfigError(f"built-in sample {name!r} not found in {p.parent}; reinstall medsat_sr")
    return p


@dataclass
class DemoResult:
    """What the demo wrote and measured.

    Attributes:
        out_dir: the demo folder.
        paths: label -> path of every product.
        headlines: per sample: method, PSNR (whole and masked) and cubic's.
        evaluation: the merged :class:`~medsat_sr.evaluate.Evaluation`.
        seconds: wall time of the whole demo.
        timings: seconds per stage.
        notes: what the reader should know (fallbacks, SR not beating cubic).
    """

    out_dir: Path
    paths: dict[str, Path] = field(default_factory=dict)
    headlines: list[dict[str, Any]] = field(default_factory=list)
    evaluation: Any = None
    seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    verdicts: list[str] = field(default_factory=list)


def _brain_box(vol: np.ndarray, margin: int) -> tuple[list[int], list[int]]:
    fg = vol.max(axis=0) > 0
    start, stop = [], []
    for ax in range(3):
        other = tuple(a for a in range(3) if a != ax)
        idx = np.nonzero(fg.any(axis=other))[0]
        lo, hi = (int(idx.min()), int(idx.max()) + 1) if idx.size else (0, fg.shape[ax])
        start.append(max(0, lo - margin))
        stop.append(min(fg.shape[ax], hi + margin))
    return start, stop


def _fallback(fit: Any) -> str | None:
    """The reason :func:`medsat_sr.upscale` would write cubic instead of the fit's output, or ``None``."""
    vp, vc = getattr(fit, "val_psnr", None), getattr(fit, "val_psnr_cubic", None)
    if vp is None or vc is None:
        return None
    if not float(vp) > float(vc):
        return (f"the fit's validation PSNR ({float(vp):.2f} dB) does not beat cubic ({float(vc):.2f} dB) on its "
                "held-out split")
    return None


def _mri_record(output: Path, source: Path, fit: Any, chosen: str, why: str | None) -> Path:
    """The MR result's trust record (``<output>.json``): the model-or-cubic decision on the fit's held-out slices."""
    from medsat_sr.trust import RECORD_FORMAT, write_record

    vp, vc = getattr(fit, "val_psnr", None), getattr(fit, "val_psnr_cubic", None)
    decision = {
        "use_model": chosen == "model", "fell_back": why is not None and fit is not None, "forced": False,
        "reason": why or "the model beats cubic B-spline on its held-out slices",
        "model_score": None if vp is None else float(vp), "classical_score": None if vc is None else float(vc),
        "classical_method": "cubic B-spline", "source": "self-supervised fit (demo)",
    }
    record = {
        "format": RECORD_FORMAT, "method": "model", "input": {"path": str(source), "kind": "volume"},
        "output": {"path": str(output), "format": "nifti"}, "decision": decision,
        "fallback": {"applied": decision["fell_back"], "reason": why, "forced": False},
        "settings": {"demo": "MR thick slices, self-supervised x4 through-plane"},
    }
    return write_record(record, output)


def _mri(out: Path, minutes: float, progress: bool, dicom: bool, res: DemoResult) -> Any:
    import torch

    from medsat_sr.config import load_config
    from medsat_sr.evaluate import evaluate
    from medsat_sr.evaluate_cases import crop_image, superior_axis
    from medsat_sr.image import Key, make_volume
    from medsat_sr.io import read, write

    t0 = time.perf_counter()
    src = read(sample_path(MRI_SAMPLE))
    start, stop = _brain_box(src.as_tensor().numpy(), MARGIN)
    ref = crop_image(src, start, stop)
    ref.meta["modality"] = "MR"
    cfg = load_config("mri_thick_slice", [*MRI_OVERRIDES, f"train.max_minutes={minutes}"])
    spacing = [float(s) for s in ref.meta[Key.SPACING]]
    axis = superior_axis(np.asarray(ref.affine))
    scale = [1.0, 1.0, 1.0]
    scale[axis] = SLICE_MM / spacing[axis]
    ev = evaluate(
        [ref], cfg, methods="cubic,model", scale=scale, names=["mni_t1_4mm_slices"], run_dir=out / "runs",
        progress=progress,
    )
    res.timings["mri_evaluation"] = time.perf_counter() - t0
    fr = ev.files[0]
    fr.settings["reference_preparation"] = (
        f"built-in sample {MRI_SAMPLE}, voxels {start} to {stop} (the brain's bounding box plus {MARGIN} voxels)"
    )
    case = fr.case
    mri_dir = out / "mri"
    mri_dir.mkdir(parents=True, exist_ok=True)
    t1 = time.perf_counter()
    ref_meta = case.reference.meta
    src_dtype = str(ref_meta.get(Key.SOURCE_DTYPE) or "float32")
    ref_arr = np.asarray(case.reference.as_tensor().numpy())
    lo_hi = (float(ref_arr.min()), float(ref_arr.max()))  # the template's range: outputs stay inside it

    def volume(arr_in: Any) -> Any:
        arr = torch.from_numpy(np.ascontiguousarray(np.clip(np.asarray(arr_in, dtype=np.float32), *lo_hi)))
        return make_volume(
            arr, np.asarray(case.reference.affine), source_dtype=src_dtype, intensity=ref_meta.get(Key.INTENSITY),
            band_names=ref_meta.get(Key.BAND_NAMES), source_format="nifti", modality="MR",
        )

    lr = case.lr
    res.paths["mri_input"] = write(
        make_volume(torch.from_numpy(np.ascontiguousarray(np.clip(lr.as_tensor().numpy(), *lo_hi))), np.asarray(lr.affine),
                    source_dtype=src_dtype, intensity=ref_meta.get(Key.INTENSITY), source_format="nifti", modality="MR"),
        mri_dir / "mni_t1_4mm_slices.nii.gz",
    )
    fit = fr.fits.get("model")
    why = _fallback(fit) if fit is not None else "no model was fitted"
    chosen = "cubic" if why else "model"
    if why:
        res.notes.append(f"MR: {why}; the written result is the cubic one, as medsat-sr upscale would write it")

    sr = volume(fr.outputs[chosen])
    res.paths["mri_sr_nifti"] = write(sr, mri_dir / "mni_t1_sr_1mm.nii.gz")
    res.paths["mri_cubic_nifti"] = write(volume(fr.outputs["cubic"]), mri_dir / "mni_t1_cubic_1mm.nii.gz")
    res.paths["mri_sr_record"] = _mri_record(res.paths["mri_sr_nifti"], res.paths["mri_input"], fit, chosen, why)
    if dicom:
        desc = "MNI T1 4mm->1mm " + ("self-supervised SR" if chosen == "model" else "cubic (SR fallback)")
        res.paths["mri_sr_dicom"] = write(
            sr, mri_dir / "mni_t1_sr_1mm_dicom", format="dicom", dtype="int16", series_description=desc[:64],
            derivation=f"medsat_sr demo: {desc}; thick slices simulated from the MNI ICBM152 2009a template",
        )
    res.timings["mri_write"] = time.perf_counter() - t1
    res.verdicts.append(verdict_line(
        res.paths["mri_sr_nifti"], method="model", model_score=getattr(fit, "val_psnr", None),
        classical_score=getattr(fit, "val_psnr_cubic", None), classical_method="cubic B-spline",
        fell_back=why is not None and fit is not None, record=res.paths["mri_sr_record"],
    ))
    return ev


def _aerial(out: Path, minutes: float, progress: bool, res: DemoResult) -> Any:
    from medsat_sr.config import load_config
    from medsat_sr.evaluate import evaluate
    from medsat_sr.inference import upscale

    t0 = time.perf_counter()
    src = sample_path(AERIAL_SAMPLE)
    cfg = load_config("multiband_x2", [*AERIAL_OVERRIDES, f"train.max_minutes={minutes}"])
    ev = evaluate([src], cfg, methods="cubic,lanczos,model", holdout=0.5, names=["rgbn_aerial_5m"],
                  run_dir=out / "runs", progress=progress)
    res.timings["aerial_evaluation"] = time.perf_counter() - t0
    ev.files[0].settings["reference_preparation"] = f"built-in sample {AERIAL_SAMPLE}, whole scene"
    t1 = time.perf_counter()
    fit = ev.files[0].fits.get("model")
    a_dir = out / "aerial"
    a_dir.mkdir(parents=True, exist_ok=True)
    target = a_dir / "rgbn_aerial_2.5m_sr.tif"
    if fit is not None:
        up = upscale(src, fit=fit, config=cfg, output=target, cog=True, progress=False)
    else:  # pragma: no cover - the demo always asks for the model
        up = upscale(src, method="cubic", scale=2, output=target, cog=True, progress=False)
    fb = up.record.get("fallback") or {}
    if fb.get("applied"):
        res.notes.append(f"aerial: {fb.get('reason')}; the COG holds the cubic result (medsat-sr upscale's rule)")
    res.paths["aerial_sr_cog"] = Path(up.output) if up.output is not None else target
    if up.sidecar is not None:
        res.paths["aerial_sr_record"] = Path(up.sidecar)
    res.verdicts.append(record_verdict(up.record, res.paths["aerial_sr_cog"], up.sidecar))
    res.timings["aerial_write"] = time.perf_counter() - t1
    return ev


def run_demo(
    out_dir: str | os.PathLike[str] | None = None,
    *,
    minutes: float = DEFAULT_MINUTES,
    progress: bool = True,
    dicom: bool = True,
    echo: Callable[[str], None] | None = print,
) -> DemoResult:
    """Run the demo (module docstring) into ``out_dir``.

    Args:
        out_dir: the demo folder (created; existing files are replaced); ``None``: a new folder
            ``medsat_sr_demo_*`` in the system's temporary folder (nothing is left in the current folder).
        minutes: training minutes per sample (> 0).
        progress: progress bars.
        dicom: also write the MR result as a DICOM series.
        echo: where the summary goes (``None``: nowhere).

    Returns:
        The :class:`DemoResult`.

    Raises:
        ConfigError: ``minutes`` not > 0.
        WriteError: the folder cannot be created.
    """
    if isinstance(minutes, bool) or not isinstance(minutes, (int, float)) or not math.isfinite(minutes) or minutes <= 0:
        raise ConfigError(f"minutes must be a number > 0, got {minutes!r}")
    t0 = time.perf_counter()
    try:
        if out_dir is None:
            out = Path(tempfile.mkdtemp(prefix="medsat_sr_demo_"))
            out.chmod(0o777 & ~current_umask())  # mkdtemp makes it private; outputs follow the umask
        else:
            out = Path(out_dir)
            out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise WriteError(f"{out_dir or tempfile.gettempdir()}: cannot create the demo folder: {exc.strerror or exc}") from exc
    res = DemoResult(out_dir=out)
    say = echo or (lambda s: None)
    say(f"medsat-sr demo: two real samples, {minutes:g} min of self-supervised training each, into {out}")
    say("  1/3 MR: thick slices (4 mm) from the MNI T1 template, self-supervised x4 through-plane ...")
    with naming(sample_path(MRI_SAMPLE)):
        ev_mri = _mri(out, float(minutes), progress, dicom, res)
    say("  2/3 aerial: 4-band 5 m scene, self-supervised x2 (fit on the left half, scored on the right half) ...")
    with naming(sample_path(AERIAL_SAMPLE)):
        ev_aer = _aerial(out, float(minutes), progress, res)
    say("  3/3 report ...")
    t1 = time.perf_counter()
    from medsat_sr.report import write_report

    ev = ev_mri.merge(ev_aer)
    title = "medsat_sr demo: self-supervised super-resolution vs cubic on two real samples"
    ev.settings["title"] = title
    paths = write_report(ev, out / "report", title=title)
    ev.report_dir = out / "report"
    res.paths["report"] = Path(paths["html"])
    res.paths["metrics"] = Path(paths["json"])
    for p in paths["figures"]:
        res.paths[f"figure:{Path(p).stem}"] = Path(p)
    res.timings["report"] = time.perf_counter() - t1
    res.evaluation = ev
    res.headlines = ev.headlines()
    res.seconds = time.perf_counter() - t0
    for line in summary_lines(res, minutes):
        say(line)
    return res


def summary_lines(res: DemoResult, minutes: float) -> list[str]:
    """The demo's closing summary: headline numbers, notes and paths."""
    lines = [f"medsat-sr demo: done in {res.seconds:.0f} s ({minutes:g} min of training per sample)"]
    if res.evaluation is not None:
        parts = []
        for f in res.evaluation.files:
            r = f.methods.get("model") or {}
            if r.get("fit_seconds") is not None:
                parts.append(f"{f.name}: fit {r['fit_seconds']:.0f} s + apply {r['apply_seconds']:.0f} s")
        if parts:
            lines.append("  time: " + "; ".join(parts))
    labels = {
        "mni_t1_4mm_slices": "MR thick slices, MNI T1 4 mm -> 1 mm (x4 through-plane), PSNR in the brain mask",
        "rgbn_aerial_5m": "aerial RGBN x2 (5 m), Wald's protocol on the unseen right half, PSNR",
    }
    for h in res.headlines:
        name = h["file"]
        lines.append(f"  {labels.get(name, name)}:")
        if h.get("method") is None:
            lines.append(f"    cubic {h.get('cubic_psnr_masked', float('nan')):.2f} dB (no learned method)")
            continue
        g = h.get("gain_masked") or 0.0
        verdict = "SR beats cubic" if h.get("beats_cubic") else "SR does NOT beat cubic in this budget"
        lines.append(
            f"    self-supervised SR {h['psnr_masked']:.2f} dB vs cubic {h['cubic_psnr_masked']:.2f} dB "
            f"({g:+.2f} dB): {verdict}"
        )
        if not h.get("beats_cubic"):
            lines.append("    (a longer budget usually helps: medsat-sr demo --minutes 5)")
    for n in res.notes:
        lines.append(f"  note: {n}")
    lines.append("  outputs:")
    labels_p = {
        "mri_input": "MR thick-slice input (NIfTI)",
        "mri_sr_nifti": "MR result, 1 mm (NIfTI)",
        "mri_sr_dicom": "MR result, 1 mm (DICOM series)",
        "mri_sr_record": "its trust record (JSON)",
        "mri_cubic_nifti": "MR cubic B-spline, for comparison",
        "aerial_sr_cog": "aerial x2 result, 2.5 m (COG)",
        "aerial_sr_record": "its trust record (JSON)",
        "report": "evaluation report (open in a browser)",
        "metrics": "all numbers and settings",
    }
    for key, label in labels_p.items():
        if key in res.paths:
            lines.append(f"    {label:<38} {res.paths[key]}")
    lines.extend(res.verdicts)
    return lines

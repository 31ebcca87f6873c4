"""The multi-stack route: several thick-slice stacks of one anatomy fused into one isotropic volume.

``medsat-sr upscale STACK STACK ... -o OUT --config mri_multistack`` (or
``--method cubic``) comes here through :func:`medsat_sr.inference.multi.run_multi`.

1. **Stacks**: every input (NIfTI file, DICOM series or folder) is read with
   its own affine; its slice axis is the axis of largest spacing and its slice
   profile a Gaussian with FWHM = slice thickness (:mod:`medsat_sr.multistack.stacks`).
   Masks come from ``multistack.masks`` (one per stack, in order).
2. **Registration and reconstruction** (:func:`medsat_sr.multistack.reconstruct`):
   rigid inter-stack registration through each stack's forward model, then
   regularised least squares with robust slice weights, alternated.
   ``--method cubic`` registers the stacks and writes the mean of their cubic
   B-spline resamplings (the baseline).
3. **Decision** (``multistack.check``): the reconstruction and the mean of
   cubic stacks are scored leave-one-stack-out (NCC inside each held-out
   stack's mask, :mod:`medsat_sr.multistack.validate`); the mean is written
   instead when the reconstruction does not have the higher mean NCC (unless
   ``--force``).
4. **Output**: an isotropic grid (``multistack.spacing`` or ``--target-spacing``,
   default the finest in-plane spacing) oriented like the reference stack,
   covering the union of the stacks' fields of view or of their masks (plus
   ``margin_mm``); the reference stack's intensity scale and source dtype.
"""

from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor

from medsat_sr import io as mio
from medsat_sr.errors import ConfigError, DataError, GeometryError
from medsat_sr.image import Key
from medsat_sr.inference.multi import MULTI_ROUTES, MultiRequest, MultiResult
from medsat_sr.inference.plan import Decision
from medsat_sr.multistack.options import MultiStackOptions
from medsat_sr.multistack.reconstruct import Reconstruction, mean_of_cubic, reconstruct, reference_of, region_of
from medsat_sr.multistack.stacks import Stack, grid_volume, make_stack, output_grid
from medsat_sr.multistack.validate import leave_one_out
from medsat_sr.progress import Progress

__all__ = ["run", "METHODS"]

logger = logging.getLogger("medsat_sr.multistack")

#: ``--method`` values: the reconstruction, and the mean of cubic-resampled registered stacks.
METHODS = {"srr": "super-resolution reconstruction", "cubic": "mean of cubic-resampled registered stacks"}


def _options(req: MultiRequest) -> tuple[MultiStackOptions, str]:
    o = req.cfg.multistack if req.cfg is not None and req.cfg.multistack is not None else MultiStackOptions()
    spacing = req.target_spacing
    if spacing is not None:
        values = {float(v) for v in spacing} if isinstance(spacing, (list, tuple)) else {float(spacing)}
        if len(values) != 1:
            raise ConfigError(f"multi-stack reconstruction writes isotropic voxels; got target spacing {sorted(values)}")
        o = o.model_copy(update={"spacing": values.pop()})
    method = (req.method or "srr").lower()
    if method in ("mean", "mean_cubic", "cubic_mean"):
        method = "cubic"
    if method not in METHODS:
        raise ConfigError(f"--method {req.method!r}: the multi-stack route has {sorted(METHODS)}")
    return o, method


def _read(path: Path, req: MultiRequest, what: str) -> MetaTensor:
    if not Path(path).exists():
        raise DataError(f"{path}: {what} not found")
    img = mio.read(path, **dict(req.read_options or {}))
    if not isinstance(img, MetaTensor) or img.ndim != 4:
        raise DataError(f"{path}: {what} must be a 3D volume (NIfTI or DICOM), got a {type(img).__name__}")
    return img


def _inputs(req: MultiRequest) -> list[Path]:
    """The stack paths: the inputs, or the NIfTI files of one folder given alone."""
    paths = [Path(p) for p in req.inputs]
    if len(paths) == 1 and paths[0].is_dir():
        found = sorted(p for p in paths[0].iterdir() if p.name.endswith((".nii", ".nii.gz")))
        paths = found or paths
    if len(paths) < 2:
        raise ConfigError(f"{paths[0] if paths else 'no input'}: multi-stack reconstruction needs at least two stacks, "
                          f"got {len(paths)}")
    return paths


def _stacks(req: MultiRequest, o: MultiStackOptions) -> list[Stack]:
    paths = _inputs(req)
    masks = list(o.masks or [])
    if masks and len(masks) != len(paths):
        raise ConfigError(f"multistack.masks: {len(masks)} masks for {len(paths)} stacks; give one per stack")
    stacks = []
    for k, path in enumerate(paths):
        vol = _read(path, req, "stack")
        mask = _read(Path(masks[k]), req, "mask") if masks else None
        stacks.append(make_stack(vol, mask, name=str(path)))
    ref = stacks[0]
    for s in stacks[1:]:
        gap = np.linalg.norm(s.affine[:3, 3] - ref.affine[:3, 3])
        size = max(np.linalg.norm(np.asarray(ref.shape) * ref.spacing), np.linalg.norm(np.asarray(s.shape) * s.spacing))
        if gap > size:
            raise DataError(f"{s.name}: its field of view is {gap:.0f} mm from {ref.name}'s ({size:.0f} mm across): "
                            "not stacks of one anatomy")
    return stacks


#: Output voxels above which a reconstruction without masks is announced as slow, with the remedy.
LARGE_GRID_VOXELS = 8_000_000


def _ticks(n: int, o: MultiStackOptions, method: str) -> int:
    """Progress steps of a run: registrations, outer solver iterations, held-out stacks."""
    rigid = o.registration == "rigid"
    cycles = o.register_cycles if rigid else 0
    steps = (n - 1) * (1 + cycles) if rigid else 0
    if method == "srr":
        steps += o.outer_iterations * (cycles + 1) + (n if o.check else 0)
    return max(1, steps)


def _warn_if_large(stacks: list[Stack], grid: Any, reference: int) -> None:
    """Say before the work starts when unmasked stacks make a grid that takes long on a CPU, and what helps."""
    voxels = int(np.prod(grid.shape))
    if voxels <= LARGE_GRID_VOXELS or any(s.mask is not None for s in stacks):
        return
    common = ""
    with contextlib.suppress(GeometryError):
        box = output_grid(stacks, reference=reference, spacing=float(np.linalg.norm(grid.affine[:3, 0])),
                          region="intersection")
        common = (f", or --set multistack.region=intersection to reconstruct only where every stack has data "
                  f"({'x'.join(str(v) for v in box.shape)} voxels, {np.prod(box.shape) / 1e6:.1f} M)")
    logger.warning(
        "%d stacks without masks: the output grid covers the union of their fields of view, %s voxels (%.0f M); "
        "a reconstruction this size runs for a long time on a CPU (tens of minutes or more). Masks of the anatomy, "
        "one per stack (--set multistack.masks='[m1.nii.gz, ...]'), restrict it and speed it up%s",
        len(stacks), "x".join(str(v) for v in grid.shape), voxels / 1e6, common)


def _decide(rec: Reconstruction, o: MultiStackOptions, req: MultiRequest,
            tick: Any = None) -> tuple[torch.Tensor, Decision, dict | None]:
    if not o.check:
        return rec.volume, Decision(use_model=True, reason="reconstruction, check switched off (multistack.check: false)"), None
    loo = leave_one_out(rec, o, progress=tick)
    srr_s, base_s = loo["srr_ncc_mean"], loo["mean_cubic_ncc_mean"]
    rows = loo["per_stack"]
    db = [sum(r[m]["psnr"] for r in rows) / len(rows) for m in ("srr", "mean_cubic")]
    dec = Decision(use_model=srr_s > base_s, model_score=db[0], classical_score=db[1], classical_method="mean of cubic stacks",
                   margin_db=0.0, source=f"leave-one-stack-out inside the masks ({loo['n']} stacks): the decision is on "
                   "the mean NCC; the scores are the mean PSNR (dB, after a least-squares scale)")
    if dec.use_model:
        dec.reason = (f"reconstruction predicts held-out stacks better than the mean of cubic stacks "
                      f"(NCC {srr_s:.4f} vs {base_s:.4f}, wins on {loo['srr_wins']}/{loo['n']})")
        return rec.volume, dec, loo
    if req.opts.force:
        dec.use_model, dec.forced = True, True
        dec.reason = f"reconstruction kept by force although the mean of cubic stacks scores NCC {base_s:.4f} vs {srr_s:.4f}"
        return rec.volume, dec, loo
    dec.fell_back = True
    dec.reason = f"mean of cubic stacks written: the reconstruction's leave-one-out NCC {srr_s:.4f} does not beat {base_s:.4f}"
    return mean_of_cubic(rec.ops, rec.grid, rec.scales), dec, loo


def _write(image: MetaTensor, req: MultiRequest, method: str) -> None:
    fmt = req.fmt or "nifti"
    if fmt not in ("nifti", "dicom"):
        raise ConfigError(f"{req.out_path}: multi-stack reconstruction writes NIfTI or DICOM, not {fmt}")
    kw: dict[str, Any] = {}
    if req.opts.dtype == "float32":
        kw["dtype"] = "float32"
    if fmt == "dicom":
        kw["series_description"] = (req.series_description or f"medsat_sr multi-stack {method}")[:64]
        kw["derivation"] = f"medsat_sr multi-stack {METHODS[method]} of {len(req.inputs)} stacks"
    mio.write(image, req.out_path, format=fmt, **kw)


def _input_info(s: Stack, rec: Reconstruction, k: int) -> dict[str, Any]:
    row = rec.summary()["stacks"][k]
    return {"path": s.name, "kind": "volume", "shape": list(s.shape), "grid": {"affine": np.round(s.affine, 6).tolist()},
            "mask": s.mask is not None, **{key: row[key] for key in row if key not in ("stack", "shape")}}


def run(req: MultiRequest) -> MultiResult:
    """Fuse the stacks of ``req`` into one isotropic volume (see the module docstring).

    Raises:
        ConfigError: an unknown method, anisotropic target spacing, masks not one per stack, a non-volume output.
        DataError: a missing or non-volume input or mask, stacks far apart, an empty mask.
        GeometryError: a stack with fewer than two voxels on an axis.
    """
    t0 = time.perf_counter()
    o, method = _options(req)
    stacks = _stacks(req, o)
    t_read = time.perf_counter() - t0
    ref_k = reference_of(stacks, o)
    grid = output_grid(stacks, reference=ref_k, spacing=o.spacing, region=region_of(stacks, o), margin_mm=o.margin_mm)
    _warn_if_large(stacks, grid, ref_k)
    bar = Progress(_ticks(len(stacks), o, method), "multi-stack", unit="step", enabled=req.progress)
    try:
        rec = reconstruct(stacks, o, grid=grid, solve_volume=method == "srr", progress=bar.update)
        t1 = time.perf_counter()
        if method == "srr":
            volume, decision, loo = _decide(rec, o, req, bar.update)
        else:
            volume, decision, loo = rec.volume, Decision(use_model=False, reason="classical method cubic asked for"), None
    finally:
        bar.close()
    written = "srr" if method == "srr" and decision.use_model else "cubic"
    ref = stacks[rec.reference]
    image = grid_volume(volume.clamp_min(0) * float(ref.norm), rec.grid, ref.source)
    if req.out_path is not None:
        _write(image, req, written)
    summary = rec.summary()
    timings = {"read": t_read, **rec.timings, "check": time.perf_counter() - t1, "total": time.perf_counter() - t0}
    return MultiResult(
        image=image,
        inputs=[_input_info(s, rec, k) for k, s in enumerate(stacks)],
        output={"shape": list(image.shape), "affine": np.round(rec.grid.affine, 6).tolist(),
                "spacing_mm": summary["grid_spacing_mm"], "source_dtype": image.meta.get(Key.SOURCE_DTYPE)},
        method=METHODS[written] + (" (fallback from srr)" if decision.fell_back else ""),
        decision=decision,
        run_info={"multistack": o.model_dump(), "registration": summary, "method_asked": method},
        validation=loo,
        consistency={"registration_ncc": [r["registration_ncc"] for r in summary["stacks"]]},
        timings=timings,
    )


MULTI_ROUTES["multistack"] = run

"""Multi-stack MRI (issue 16 part 1): simulated stacks of a held-out real T1, and the real fetal stacks.

Two parts, one table (``rows()`` is what ``benchmarks/multi_image.py`` concatenates):

1. **Simulated stacks of a held-out 1 mm T1.** The volume is the UIH uMR770
   3D T1 (``nifti/dcm_qa_uih_uMR770_t1_gre_fsp_3d_sag``; 2x2 in-plane mean to
   its acquired ~1 mm, a central ``SIDE``^3 crop), never used in tuning (the
   regularisation weight and iteration counts were chosen on a textured
   phantom and the studyforrest T1). Three orthogonal 4 mm stacks (Gaussian
   slice profile, FWHM 4 mm) with a random rigid motion each (up to 5 degrees
   and 5 mm; the first stack is the reference) and 1 % noise
   (:func:`medsat_sr.multistack.simulate.simulate_stacks`). PSNR against the
   truth inside the head (truth > 10 % of its 99th percentile) and at least
   ``MARGIN_MM`` from the crop's faces, data range the truth's 99th
   percentile, for: the reconstruction (registered, route defaults), the mean
   of cubic-resampled registered stacks, and the best single-stack SR: the
   shipped ``mri_thick_slice`` model on each stack, the stack's output moved
   back by its true motion (favours the baseline), best of the three. The
   margin matters: a moved stack sees zeros where its motion carried the
   anatomy out of the crop (up to ~9 mm at the faces), which no method can
   recover and which dominated the earlier scores (a moved stack's cubic
   resampling scored ~6 dB lower on the whole crop than inside it).
2. **Fetal stacks** (``nifti/fetal_T2_multistack_mialsrtk_sub-01``, 6 real
   stacks with manual brain masks, no ground truth): leave-one-stack-out NCC
   per held-out stack (:func:`medsat_sr.multistack.validate.leave_one_out`),
   reconstruction vs mean of cubic stacks, and the wall time of the full
   reconstruction (registration + SRR) with route defaults. The three
   orthogonal planes through the centre of the reconstruction are saved next
   to the table (``multi_image_mri_planes.png``).

    nice -n 10 python benchmarks/multi_image_mri.py
"""

from __future__ import annotations

import io
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import torch

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _machine import describe, load_average, publish  # noqa: E402

from medsat_sr._atomic import atomic_path  # noqa: E402
from medsat_sr.baselines import resample_affine  # noqa: E402
from medsat_sr.image import make_volume  # noqa: E402
from medsat_sr.inference.api import upscale  # noqa: E402
from medsat_sr.io import read, write  # noqa: E402
from medsat_sr.multistack.options import MultiStackOptions  # noqa: E402
from medsat_sr.multistack.reconstruct import mean_of_cubic, reconstruct  # noqa: E402
from medsat_sr.multistack.simulate import simulate_stacks  # noqa: E402
from medsat_sr.multistack.stacks import make_stack  # noqa: E402
from medsat_sr.multistack.validate import leave_one_out  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "nifti"
HELD_OUT = DATA / "dcm_qa_uih_uMR770_t1_gre_fsp_3d_sag" / "nifti_dcm2niix" / "t1_gre_fsp_3d_sag_2.nii.gz"
FETAL = DATA / "fetal_T2_multistack_mialsrtk_sub-01"
RESULTS = ROOT / "benchmarks" / "results" / "multi_image_mri.txt"
PLANES = ROOT / "benchmarks" / "results" / "multi_image_mri_planes.png"
SIDE = 80
SEED = 7
#: Scored voxels are at least this far from the crop's faces (mm; see the module docstring).
MARGIN_MM = 8.0


def held_out_t1() -> tuple[np.ndarray, np.ndarray]:
    """The held-out T1 at ~1 mm (2x2 in-plane mean), central ``SIDE``^3 crop, and its affine."""
    img = read(HELD_OUT)
    d = np.asarray(img[0], dtype=np.float32)
    a = np.asarray(img.affine, dtype=np.float64)
    sp = np.sqrt((a[:3, :3] ** 2).sum(axis=0))
    f = [max(1, int(round(1.0 / s))) for s in sp]
    n = [d.shape[i] // f[i] for i in range(3)]
    d = d[: n[0] * f[0], : n[1] * f[1], : n[2] * f[2]].reshape(n[0], f[0], n[1], f[1], n[2], f[2]).mean(axis=(1, 3, 5))
    a1 = a.copy()
    a1[:3, :3] = a[:3, :3] * np.asarray(f)[None, :]
    a1[:3, 3] = a[:3, :3] @ ((np.asarray(f) - 1) / 2) + a[:3, 3]
    c = np.asarray(d.shape) // 2
    lo = c - SIDE // 2
    d = d[lo[0]:lo[0] + SIDE, lo[1]:lo[1] + SIDE, lo[2]:lo[2] + SIDE]
    a1[:3, 3] = a1[:3, :3] @ lo + a1[:3, 3]
    return np.ascontiguousarray(d), a1


def _psnr(x: np.ndarray, truth: np.ndarray, mask: np.ndarray, peak: float) -> float:
    return 10 * math.log10(peak**2 / float(np.mean((x[mask] - truth[mask]) ** 2)))


def _single_stack_sr(sim: Any, grid: Any, tmp: Path, k: int) -> np.ndarray:
    """The shipped thick-slice model on one stack, moved back by the stack's true motion onto ``grid``."""
    src = tmp / f"stack{k}.nii.gz"
    write(make_volume(sim.data[None], sim.affine, source_dtype="float32"), src)
    res = upscale(str(src), model="mri_thick_slice", output=str(tmp / f"sr{k}.nii.gz"))
    out = res.image
    m = np.linalg.inv(np.asarray(out.affine)) @ np.linalg.inv(sim.motion) @ grid.affine
    return resample_affine(np.asarray(out[0], dtype=np.float32), m, grid.shape, order=3, outside=0.0)


def _interior(grid: Any, aff: np.ndarray, margin_mm: float) -> np.ndarray:
    """Output voxels at least ``margin_mm`` inside the ``SIDE``^3 crop of affine ``aff`` (1 mm voxels)."""
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in grid.shape], indexing="ij"), axis=-1).reshape(-1, 3)
    world = idx @ grid.affine[:3, :3].T + grid.affine[:3, 3]
    vox = (world - aff[:3, 3]) @ np.linalg.inv(aff[:3, :3]).T
    return np.all((vox >= margin_mm) & (vox <= SIDE - 1 - margin_mm), axis=1).reshape(grid.shape)


def simulated_rows() -> list[dict[str, Any]]:
    """PSNR against truth on simulated stacks of the held-out T1."""
    vol, aff = held_out_t1()
    peak = float(np.percentile(vol, 99))
    sims = simulate_stacks(vol, aff, thickness=4.0, max_deg=5.0, max_mm=5.0, noise=0.01, seed=SEED)
    stacks = [make_stack(make_volume(s.data[None], s.affine), name=f"axis{s.slice_axis}", thickness=s.thickness)
              for s in sims]
    t0 = time.perf_counter()
    rec = reconstruct(stacks, MultiStackOptions(margin_mm=0))
    seconds = time.perf_counter() - t0
    truth = resample_affine(vol, np.linalg.inv(aff) @ rec.grid.affine, rec.grid.shape, order=1)
    mask = np.isfinite(truth) & (truth > 0.1 * peak) & _interior(rec.grid, aff, MARGIN_MM)
    norm = stacks[0].norm
    out = [{"part": "T1 simulated (held-out)", "method": "srr", "psnr_db": _psnr(rec.volume.numpy() * norm, truth, mask, peak),
            "seconds": round(seconds, 1)}]
    base = mean_of_cubic(rec.ops, rec.grid, rec.scales).numpy() * norm
    out.append({"part": "T1 simulated (held-out)", "method": "mean of cubic stacks", "psnr_db": _psnr(base, truth, mask, peak)})
    with tempfile.TemporaryDirectory() as tmp:
        singles = [_psnr(_single_stack_sr(s, rec.grid, Path(tmp), k), truth, mask, peak) for k, s in enumerate(sims)]
    out.append({"part": "T1 simulated (held-out)", "method": "best single-stack SR (mri_thick_slice)",
                "psnr_db": max(singles), "all": [round(v, 2) for v in singles]})
    return out


def save_planes(volume: np.ndarray, spacing: float, path: Path, title: str) -> None:
    """The three orthogonal planes through the centre of mass of ``volume`` as one PNG (written atomically)."""
    w = np.clip(volume, 0, None)
    c = [int(round(float((w.sum(axis=tuple(j for j in range(3) if j != a)) * np.arange(w.shape[a])).sum() / max(w.sum(), 1e-12))))
         for a in range(3)]
    cuts = [w[c[0]], w[:, c[1]], w[:, :, c[2]]]
    top = float(np.percentile(w[w > 0], 99.5)) if (w > 0).any() else 1.0
    fig, axes = plt.subplots(1, 3, figsize=(10, 3.6))
    for a, (ax, img) in enumerate(zip(axes, cuts)):
        ax.imshow(np.rot90(img), cmap="gray", vmin=0, vmax=top, interpolation="nearest")
        ax.set_title(f"grid axis {a} = {c[a]} ({spacing:.3g} mm voxels)", fontsize=8)
        ax.axis("off")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buf.getvalue())


def fetal_rows() -> list[dict[str, Any]]:
    """Leave-one-stack-out NCC per fetal stack, and the reconstruction's wall time."""
    stacks = []
    for k in range(1, 7):
        vol = read(FETAL / "sub-01" / "anat" / f"sub-01_run-{k}_T2w.nii.gz")
        mask = read(FETAL / "derivatives" / "manual_masks" / "sub-01" / "anat" / f"sub-01_run-{k}_T2w_desc-brain_mask.nii.gz")
        stacks.append(make_stack(vol, mask, name=f"run-{k}"))
    opts = MultiStackOptions()
    t0 = time.perf_counter()
    rec = reconstruct(stacks, opts)
    seconds = time.perf_counter() - t0
    save_planes(rec.physical().numpy(), rec.grid.spacing, PLANES,
                f"fetal T2 (sub-01, 6 stacks): reconstruction, three orthogonal planes; {seconds:.0f} s")
    t1 = time.perf_counter()
    loo = leave_one_out(rec, opts)
    loo_seconds = time.perf_counter() - t1
    out = [{"part": "fetal LOO", "method": r["stack"], "srr_ncc": r["srr"]["ncc"], "cubic_ncc": r["mean_cubic"]["ncc"],
            "srr_psnr": r["srr"]["psnr"], "cubic_psnr": r["mean_cubic"]["psnr"]} for r in loo["per_stack"]]
    out.append({"part": "fetal runtime", "method": "srr", "seconds": round(seconds, 1), "loo_seconds": round(loo_seconds, 1),
                "grid": list(rec.grid.shape), "timings": {k: round(v, 1) for k, v in rec.timings.items()}})
    return out


def rows() -> list[dict[str, Any]]:
    """Every row of the multi-stack MRI benchmark (see the module docstring)."""
    torch.set_num_threads(2)
    return [*simulated_rows(), *fetal_rows()]


def table(items: list[dict[str, Any]]) -> str:
    """The rows as a plain-text table, with the machine and the floors."""
    lines = [f"multi-stack MRI (issue 16 part 1) on {describe()}, load {load_average()}", ""]
    sim = {r["method"]: r for r in items if r["part"].startswith("T1")}
    for r in items:
        if r["part"].startswith("T1"):
            extra = f"  ({r['seconds']} s)" if "seconds" in r else (f"  per stack {r['all']}" if "all" in r else "")
            lines.append(f"{r['part']:26s} {r['method']:40s} PSNR {r['psnr_db']:6.2f} dB{extra}")
    lines.append("")
    lines.append(f"{'fetal leave-one-out':26s} {'held-out stack':14s} {'NCC srr':>8s} {'NCC cubic':>9s} {'PSNR srr':>9s} {'PSNR cubic':>10s}")
    fetal = [r for r in items if r["part"] == "fetal LOO"]
    for r in fetal:
        lines.append(f"{'':26s} {r['method']:14s} {r['srr_ncc']:8.4f} {r['cubic_ncc']:9.4f} {r['srr_psnr']:9.2f} {r['cubic_psnr']:10.2f}")
    rt = [r for r in items if r["part"] == "fetal runtime"]
    if rt:
        lines.append(f"fetal reconstruction: {rt[0]['seconds']} s (grid {rt[0]['grid']}; stages {rt[0]['timings']}); "
                     f"leave-one-out scoring {rt[0]['loo_seconds']} s")
    lines.append("")
    if sim:
        s, c, b = (sim[k]["psnr_db"] for k in ("srr", "mean of cubic stacks", "best single-stack SR (mri_thick_slice)"))
        lines.append(f"floor: fused >= best single-stack SR + 1.0 dB: {'met' if s >= b + 1 else 'NOT met'} ({s - b:+.2f} dB)")
        lines.append(f"floor: fused >= mean of cubic stacks + 2.0 dB: {'met' if s >= c + 2 else 'NOT met'} ({s - c:+.2f} dB)")
    if fetal:
        wins = sum(r["srr_ncc"] > r["cubic_ncc"] for r in fetal)
        lines.append(f"floor: fetal LOO NCC beats mean of cubic on every stack: {'met' if wins == len(fetal) else 'NOT met'} "
                     f"({wins}/{len(fetal)})")
    if rt:
        lines.append(f"floor: fetal reconstruction < 600 s: {'met' if rt[0]['seconds'] < 600 else 'NOT met'} "
                     f"({rt[0]['seconds']} s; load average above)")
    return "\n".join(lines)


def main() -> int:
    return publish(table(rows()), RESULTS)


if __name__ == "__main__":
    sys.exit(main())

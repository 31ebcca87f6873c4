#!/usr/bin/env python
"""End-to-end ``medsat-sr upscale`` runs on ../shared/data, through the CLI as a user types them (issue 4).

Each command runs in a subprocess (``python -m medsat_sr upscale ...``), then
its outputs are checked independently of medsat_sr's own reader where a
reference tool exists:

``mr``
    ``upscale <thick-slice sagittal T1 DICOM series> -o mr_sr.nii.gz --config
    mri_thick_slice --run-dir RUN`` (self-supervised SMORE/ECLARE-style fit on
    the scan itself). Checks: isotropic output at the in-plane spacing, up to the
    whole-slice rounding that keeps the field of view (``n = round(FOV /
    in-plane spacing)`` slices of ``FOV / n``: at most ``0.5 / n`` relative); the
    outer field of view equals that of **dcm2niix's** conversion of the input
    (8 corners, mm); the sidecar. Then the fitted checkpoint is reused
    (``--model RUN/best``) to write a **derived DICOM series** with
    ``--uncertainty`` (the spread of the two through-plane orientations); dcm2niix converts that series and its grid must equal
    the NIfTI output's; the ``_std`` uncertainty volume must share it.
``s2``
    ``upscale <Sentinel-2 L2A band folder> -o s2_sr.tif --config
    sentinel2_20m_to_10m`` (guided self-supervised, Wald's protocol). Checks
    with rasterio: 12 bands at the finest (100 m) grid, the CRS and bounds of
    the 100 m bands, band descriptions naming the bands, nodata.
``naip``
    ``upscale <NAIP 4-band 5 m> -o naip_sr.tif --config multiband_x2 --cog``
    then a **fusion** of the fitted checkpoint with a second fit
    (``--model A --model B --weights softmax --uncertainty``). Checks: 2.5 m
    pixels, same CRS and bounds, COG layout, nodata; the fusion writes the
    ``_std`` band file on the same grid.

The table lists the command, its wall time, the output grid, the checks and
the trust record's validation (model against cubic on the fit's held-out
split) and consistency score. ``--minutes M`` adds ``--set
train.max_minutes=M`` to every fit (default: the configs' own budgets).

Usage::

    python benchmarks/end_to_end.py --workdir /tmp/e2e      # ~35 min on 2 cores with the configs' budgets
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from _machine import describe, load_average

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
MR = SHARED / "dicom" / "mr_t1_2d_sag_thick_dcm_qa_decubitus_HFS" / "In"
S2 = SHARED / "geotiff" / "sentinel2_l2a_S2A_29RKH_20200219_rio-tiler-pds"
NAIP = SHARED / "geotiff" / "naip_4band_m_4709963_se_14_1_20180716_opengeos-data" / "m_4709963_se_14_1_20180716.tif"
CASES = ("mr", "s2", "naip")


def cli(*argv: str, minutes: float | None = None, fit: bool = False) -> tuple[float, list[str]]:
    """Run ``medsat-sr ARGV``; exit on failure with its stderr. Returns ``(seconds, argv)``."""
    args = list(argv) + (["--set", f"train.max_minutes={minutes}"] if (fit and minutes) else [])
    cmd = [sys.executable, "-m", "medsat_sr", *args]
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    dt = time.perf_counter() - t0
    if p.returncode != 0:
        sys.exit(f"end_to_end.py: `medsat-sr {' '.join(args)}` failed ({p.returncode}):\n{p.stderr[-3000:]}")
    return dt, ["medsat-sr", *args]


def outer_corners(affine: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """The 8 outer corners (voxel edges) of a 3D grid, in world mm."""
    grid = np.array(np.meshgrid(*[[-0.5, int(k) - 0.5] for k in shape[:3]], indexing="ij")).reshape(3, -1)
    return (np.asarray(affine, np.float64)[:3, :3] @ grid + np.asarray(affine, np.float64)[:3, 3:4]).T


def fov_difference(a_aff: np.ndarray, a_shape: Sequence[int], b_aff: np.ndarray, b_shape: Sequence[int]) -> float:
    """Largest distance (mm) between the outer-corner sets of two grids (axis order and flips free)."""
    ca, cb = outer_corners(a_aff, a_shape), outer_corners(b_aff, b_shape)
    d = np.linalg.norm(ca[:, None, :] - cb[None, :, :], axis=-1)
    return float(max(d.min(axis=1).max(), d.min(axis=0).max()))


def dcm2niix(src: Path, out: Path) -> Path:
    """dcm2niix's NIfTI of a DICOM folder (the reference converter)."""
    exe = shutil.which("dcm2niix")
    if exe is None:
        sys.exit("end_to_end.py: dcm2niix not on PATH (pip install dcm2niix)")
    out.mkdir(parents=True, exist_ok=True)
    subprocess.run([exe, "-z", "y", "-f", "ref", "-o", str(out), str(src)], capture_output=True, check=True)
    files = sorted(out.glob("ref*.nii.gz"))
    if len(files) != 1:
        sys.exit(f"end_to_end.py: dcm2niix wrote {len(files)} NIfTI files for {src}")
    return files[0]


def sidecar(path: Path) -> dict[str, Any]:
    """The trust record's headline: method, fallback, validation and consistency."""
    rec = json.loads(Path(str(path) + ".json").read_text())
    members = (rec.get("validation") or {}).get("members") or []
    val = [(m.get("val_psnr"), m.get("val_psnr_cubic")) for m in members]
    return {"method": rec.get("method"), "fallback": (rec.get("fallback") or {}).get("applied"),
            "validation_model_vs_cubic_db": val, "consistency": rec.get("consistency"),
            "uncertainty": (rec.get("output") or {}).get("uncertainty"), "weights": rec.get("weights"),
            "input_sha256": (rec.get("input") or {}).get("sha256"), "timings": rec.get("timings")}


def case_mr(work: Path, minutes: float | None) -> list[dict[str, Any]]:
    import nibabel as nib

    out, run = work / "mr_sr.nii.gz", work / "mr_run"
    t1, argv1 = cli("upscale", str(MR), "-o", str(out), "--config", "mri_thick_slice", "--run-dir", str(run), "-q",
                    minutes=minutes, fit=True)
    ref = nib.load(str(dcm2niix(MR, work / "mr_dcm2niix")))
    img = nib.load(str(out))
    zooms = np.asarray(img.header.get_zooms()[:3], float)
    fov = fov_difference(ref.affine, ref.shape, img.affine, img.shape)
    # isotropic up to the whole-slice rounding that keeps the FOV: n = round(FOV / in-plane), spacing = FOV / n
    thick = int(np.argmax(np.abs(zooms - np.median(zooms))))  # the axis that was thick
    n_thick = int(img.shape[thick])
    aniso = float(np.ptp(zooms) / np.min(zooms))
    iso_ok = aniso <= 0.5 / n_thick + 1e-6
    rows = [{"case": "thick-slice MR DICOM -> NIfTI", "command": " ".join(argv1), "seconds": t1,
             "output_shape": list(img.shape), "output_spacing": zooms.round(4).tolist(),
             "checks": {"isotropic_within_fov_rounding": iso_ok, "anisotropy": aniso, "rounding_bound": 0.5 / n_thick,
                        "fov_vs_dcm2niix_input_mm": fov, "passed": bool(iso_ok and fov < 1e-3)},
             "trust": sidecar(out)}]
    ckpt = run / "best"  # the fit's best checkpoint (best.safetensors + best.json)
    series = work / "mr_sr_dicom"
    t2, argv2 = cli("upscale", str(MR), "-o", str(series), "--model", str(ckpt), "--uncertainty", "--force", "-q")
    back = nib.load(str(dcm2niix(series, work / "mr_sr_dicom_dcm2niix")))
    trust2 = sidecar(series)
    std_path = trust2["uncertainty"]
    std = None
    if std_path and Path(std_path).is_file():
        std = nib.load(std_path)
    elif std_path and Path(std_path).is_dir():  # written as a DICOM series too
        std = nib.load(str(dcm2niix(Path(std_path), work / "mr_sr_dicom_std_dcm2niix")))
    fov2 = fov_difference(back.affine, back.shape, img.affine, img.shape)
    std_fov = None if std is None else fov_difference(std.affine, std.shape, img.affine, img.shape)
    rows.append({"case": "same model -> derived DICOM series + uncertainty", "command": " ".join(argv2),
                 "seconds": t2, "output_shape": list(back.shape),
                 "output_spacing": np.asarray(back.header.get_zooms()[:3], float).round(4).tolist(),
                 "checks": {"dcm2niix_of_output_vs_nifti_output_fov_mm": fov2, "uncertainty_written": std is not None,
                            "uncertainty_fov_mm": std_fov,
                            "passed": bool(fov2 < 1e-3 and std is not None and std_fov is not None and std_fov < 1e-3)},
                 "trust": trust2})
    return rows


def case_s2(work: Path, minutes: float | None) -> list[dict[str, Any]]:
    import rasterio

    out = work / "s2_sr.tif"
    t, argv = cli("upscale", str(S2), "-o", str(out), "--config", "sentinel2_20m_to_10m", "-q", minutes=minutes, fit=True)
    with rasterio.open(S2 / "B04.tif") as fine, rasterio.open(out) as ds:
        desc = list(ds.descriptions)
        ok = (ds.count == 12 and ds.crs == fine.crs and np.allclose(tuple(ds.bounds), tuple(fine.bounds), atol=1e-6)
              and np.allclose(ds.res, fine.res) and all(desc))
        checks = {"bands": ds.count, "descriptions": desc, "crs_equal": ds.crs == fine.crs,
                  "bounds_equal": bool(np.allclose(tuple(ds.bounds), tuple(fine.bounds), atol=1e-6)),
                  "pixel_size": list(ds.res), "nodata": ds.nodata, "passed": bool(ok)}
        shape = [ds.count, ds.height, ds.width]
    return [{"case": "Sentinel-2 L2A band folder -> 12-band GeoTIFF", "command": " ".join(argv), "seconds": t,
             "output_shape": shape, "output_spacing": checks["pixel_size"], "checks": checks, "trust": sidecar(out)}]


def case_naip(work: Path, minutes: float | None) -> list[dict[str, Any]]:
    import rasterio

    rows = []
    out, run = work / "naip_sr.tif", work / "naip_run"
    t, argv = cli("upscale", str(NAIP), "-o", str(out), "--config", "multiband_x2", "--cog", "--run-dir", str(run),
                  "-q", minutes=minutes, fit=True)
    with rasterio.open(NAIP) as src, rasterio.open(out) as ds:
        ok_grid = (ds.crs == src.crs and np.allclose(tuple(ds.bounds), tuple(src.bounds), atol=1e-6)
                   and np.allclose(ds.res, np.asarray(src.res) / 2))
        checks = {"crs_equal": ds.crs == src.crs, "bounds_equal": bool(np.allclose(tuple(ds.bounds), tuple(src.bounds))),
                  "pixel_size": list(ds.res), "nodata": ds.nodata, "cog": ds.tags(ns="IMAGE_STRUCTURE").get("LAYOUT"),
                  "passed": bool(ok_grid and ds.nodata == src.nodata
                                 and ds.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG")}
        shape = [ds.count, ds.height, ds.width]
    rows.append({"case": "NAIP 5 m -> 2.5 m COG", "command": " ".join(argv), "seconds": t, "output_shape": shape,
                 "output_spacing": checks["pixel_size"], "checks": checks, "trust": sidecar(out)})
    # a second member (another seed), then the fusion of both with uncertainty
    run2 = work / "naip_run_seed1"
    cli("upscale", str(NAIP), "-o", str(work / "naip_sr_seed1.tif"), "--config", "multiband_x2", "--set", "train.seed=1",
        "--run-dir", str(run2), "-q", minutes=minutes, fit=True)
    a, b = run / "best", run2 / "best"
    fused = work / "naip_fused.tif"
    t2, argv2 = cli("upscale", str(NAIP), "-o", str(fused), "--model", str(a), "--model", str(b), "--weights", "softmax",
                    "--uncertainty", "--force", "-q")
    trust = sidecar(fused)
    std = Path(trust["uncertainty"] or work / "naip_fused_std.tif")
    with rasterio.open(fused) as ds, rasterio.open(std) as sd:
        same = ds.crs == sd.crs and ds.transform == sd.transform and (ds.height, ds.width) == (sd.height, sd.width)
        checks2 = {"uncertainty_written": True, "uncertainty_same_grid": bool(same), "passed": bool(same)}
        shape2 = [ds.count, ds.height, ds.width]
    checks2["weights"] = (trust.get("weights") or {}).get("weights")
    rows.append({"case": "fusion of 2 fits (softmax weights) + uncertainty", "command": " ".join(argv2), "seconds": t2,
                 "output_shape": shape2, "output_spacing": checks["pixel_size"], "checks": checks2,
                 "trust": trust})
    return rows


def _fmt_trust(t: dict[str, Any]) -> str:
    val = t.get("validation_model_vs_cubic_db") or []
    parts = [f"{m:.2f} vs {c:.2f}" for m, c in val if isinstance(m, (int, float)) and isinstance(c, (int, float))]
    s = "; ".join(parts) or "-"
    if t.get("fallback"):
        s += " (fell back to cubic)"
    return s


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--minutes", type=float, default=None, help="train.max_minutes of every fit (default: the configs')")
    ap.add_argument("--workdir", type=Path, default=None, help="where the outputs go (default: a new temporary folder)")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "end_to_end.json")
    a = ap.parse_args(argv)
    for p in (MR, S2, NAIP):
        if not p.exists():
            sys.exit(f"end_to_end.py: {p} not found; the shared data folder must sit next to the repository")
    work = a.workdir or Path(tempfile.mkdtemp(prefix="medsat_e2e_"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"machine: {describe()}; load {load_average()}; outputs in {work}", flush=True)
    rows: list[dict[str, Any]] = []
    for c in [c.strip() for c in a.cases.split(",") if c.strip()]:
        print(f"--- {c} ...", flush=True)
        rows += {"mr": case_mr, "s2": case_s2, "naip": case_naip}[c](work, a.minutes)
    print()
    print("| case | command | wall s | output | spacing / pixel | checks | val PSNR model vs cubic (dB) |")
    print("|---|---|---:|---|---|---|---|")
    for r in rows:
        chk = "passed" if r["checks"]["passed"] else "**FAILED** " + json.dumps(r["checks"])
        print(f"| {r['case']} | `{r['command'].replace(str(SHARED), '<data>').replace(str(work), '.')}` | "
              f"{r['seconds']:.0f} | {r['output_shape']} | {r['output_spacing']} | {chk} | {_fmt_trust(r['trust'])} |")
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps({"machine": describe(), "minutes": a.minutes, "rows": rows}, indent=1, default=str))
    print(f"\nwrote {a.out}")
    return 0 if all(r["checks"]["passed"] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())

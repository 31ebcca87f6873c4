"""DICOM read benchmark: medsat_sr against MONAI's LoadImage(reader="PydicomReader").

For each DICOM sample in ../shared/data/dicom it times both readers on the
same folder (median of several runs, interleaved) and checks the geometry of
what each returned against an independent oracle written here with pydicom
alone: for every frame of the series, five pixels (the four corners and the
centre) are placed in world space from that frame's own ImagePositionPatient,
ImageOrientationPatient and PixelSpacing (values after RescaleSlope/Intercept),
the frame is located among the reader's slices by its pixel values, and the
reader's affine is asked where those pixels are. "ok" means every frame was found in the volume and its
pixels lie within 1e-3 mm of their true position.

Usage:
    python benchmarks/io.py [--runs N] [--data PATH]
"""

from __future__ import annotations

import argparse
import logging
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from _machine import describe

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "dicom"

SAMPLES = [
    # (label, folder under dicom/, medsat_sr read options, note)
    ("GE head CT, tilt 18.5°, 2 reconstructions mixed", "ct_head_ge_tilt_dcm_qa_ct/In/GE", {}, "folder"),
    ("  reconstruction 1 (4 mm, ADD)", "ct_head_ge_tilt_dcm_qa_ct/In/GE", {"series": 1}, "one"),
    ("  reconstruction 2 (7 mm, AXIAL)", "ct_head_ge_tilt_dcm_qa_ct/In/GE", {"series": 2}, "one"),
    ("Siemens MR T1 2D sagittal, 4.8 mm gap", "mr_t1_2d_sag_thick_dcm_qa_decubitus_HFS/In", {}, "folder"),
    ("GE MR EPI 4D (15 slices x 10 volumes)", "mr_epi_ge_dcm_qa_nih_mr_0004/In", {}, "folder"),
    ("Siemens XA30 enhanced multi-frame T1", "mr_t1_enhanced_multiframe_dcm_qa_xa30_5/In", {}, "folder"),
]


# ----------------------------------------------------------------- oracle
def _frames(path: Path) -> list[dict[str, Any]]:
    """Every image frame under ``path`` with its own geometry and physical pixels."""
    out = []
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        try:
            ds = pydicom.dcmread(f)
        except Exception:  # noqa: BLE001 - not DICOM: README etc.
            continue
        if "PixelData" not in ds:
            continue
        px = ds.pixel_array.astype(np.float64)
        n = int(getattr(ds, "NumberOfFrames", 1) or 1)
        if n == 1:
            px = px[None]
            slope, inter = float(getattr(ds, "RescaleSlope", 1) or 1), float(getattr(ds, "RescaleIntercept", 0) or 0)
            out.append(dict(file=f, frame=0, ipp=np.array(ds.ImagePositionPatient, float), iop=np.array(ds.ImageOrientationPatient, float), ps=np.array(ds.PixelSpacing, float), px=px[0] * slope + inter, uid=ds.SeriesInstanceUID, itype="\\".join(ds.ImageType)))
            continue
        shared = ds.SharedFunctionalGroupsSequence[0]
        for k, fg in enumerate(ds.PerFrameFunctionalGroupsSequence):
            def get(seq: str, attr: str) -> Any:
                for grp in (fg, shared):
                    if seq in grp and attr in grp[seq].value[0]:
                        return grp[seq].value[0][attr].value
                return None

            slope = float(get("PixelValueTransformationSequence", "RescaleSlope") or 1)
            inter = float(get("PixelValueTransformationSequence", "RescaleIntercept") or 0)
            out.append(dict(file=f, frame=k, ipp=np.array(get("PlanePositionSequence", "ImagePositionPatient"), float), iop=np.array(get("PlaneOrientationSequence", "ImageOrientationPatient"), float), ps=np.array(get("PixelMeasuresSequence", "PixelSpacing"), float), px=px[k] * slope + inter, uid=ds.SeriesInstanceUID, itype="\\".join(ds.ImageType)))
    return out


def _locate(vol: np.ndarray, px: np.ndarray) -> Any:
    """Where a frame's pixels sit in ``vol`` (C, X, Y, Z), in any axis order and flip.

    Returns:
        A function (row, col) -> voxel index (3,), or None when not found.
    """
    rows, cols = px.shape
    for a in range(3):
        p, q = [ax for ax in range(3) if ax != a]
        for transposed in (True, False):  # True: p runs along columns, q along rows
            cand = px.T if transposed else px
            if vol.shape[1 + p : 2 + p] + vol.shape[1 + q : 2 + q] != cand.shape:
                continue
            for fp in (False, True):
                for fq in (False, True):
                    t = cand[::-1 if fp else 1, ::-1 if fq else 1]
                    for c in range(vol.shape[0]):
                        for k in range(vol.shape[1 + a]):
                            sl = np.take(vol[c], k, axis=a)
                            if np.allclose(sl, t, atol=1e-3):
                                def index(i: int, j: int, a=a, p=p, q=q, k=k, tr=transposed, fp=fp, fq=fq) -> np.ndarray:
                                    u, v = (j, i) if tr else (i, j)
                                    nu, nv = (cols, rows) if tr else (rows, cols)
                                    idx = np.zeros(3)
                                    idx[a], idx[p], idx[q] = k, (nu - 1 - u if fp else u), (nv - 1 - v if fq else v)
                                    return idx

                                return index
    return None


def check_geometry(data: np.ndarray, affine: np.ndarray, frames: list[dict[str, Any]]) -> tuple[bool, float]:
    """Find every frame in the volume and measure where the affine puts it.

    Each frame is looked up among the volume's slices by its pixel values
    (along any axis, transposed or not, in any flip); five of
    its pixels (corners and centre) are then placed through ``affine`` and
    compared with their true position from the frame's own header.

    Args:
        data: (C, X, Y, Z) or (X, Y, Z).
        affine: voxel-centre to RAS mm.
        frames: from :func:`_frames`.

    Returns:
        (every frame found and placed within 1e-3 mm, worst distance in mm;
        ``inf`` when a frame's pixels are not in the volume at all).
    """
    vol = data if data.ndim == 4 else data[None]
    worst = 0.0
    for fr in frames:
        rows, cols = fr["px"].shape
        placed = _locate(vol, fr["px"])
        if placed is None:
            return False, float("inf")
        r_dir, c_dir = fr["iop"][:3], fr["iop"][3:]
        for i, j in [(0, 0), (0, cols - 1), (rows - 1, 0), (rows - 1, cols - 1), (rows // 2, cols // 2)]:
            lps = fr["ipp"] + r_dir * j * fr["ps"][1] + c_dir * i * fr["ps"][0]
            true = np.array([-lps[0], -lps[1], lps[2]])
            got = (affine @ np.append(placed(i, j), 1.0))[:3]
            worst = max(worst, float(np.linalg.norm(got - true)))
    return worst <= 1e-3, worst


# ----------------------------------------------------------------- readers
def read_ours(path: Path, options: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    from medsat_sr.io import dicom

    img = dicom.read(path, **options)
    return np.asarray(img), np.asarray(img.affine, dtype=np.float64)


def monai_folder(path: Path, frames: list[dict[str, Any]], tmp: Path) -> Path:
    """A flat folder of links to the series' DICOM files only.

    MONAI's PydicomReader reads one flat folder and fails on the README and
    sub-folders that real exports contain, so it gets this clean view.
    """
    out = tmp / f"{abs(hash(str(path))) % 10**8}_{len(frames)}"
    out.mkdir(parents=True, exist_ok=True)
    for f in {fr["file"] for fr in frames}:
        link = out / f.name
        if not link.exists():
            link.symlink_to(f)
    return out


def read_monai(path: Path) -> tuple[np.ndarray, np.ndarray]:
    import warnings

    from monai.transforms import LoadImage

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        img = LoadImage(reader="PydicomReader", image_only=True)(str(path))
    return np.asarray(img), np.asarray(img.affine, dtype=np.float64)


def timed(fn: Any, runs: int) -> tuple[float | None, Any, str | None]:
    """Median seconds over ``runs`` calls, the last result, or the error text."""
    times, result = [], None
    for _ in range(runs):
        t0 = time.perf_counter()
        try:
            result = fn()
        except Exception as exc:  # noqa: BLE001 - a reader's refusal is a result here
            return None, None, f"{type(exc).__name__}: {str(exc).splitlines()[0][:90]}"
        times.append(time.perf_counter() - t0)
    return statistics.median(times), result, None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5, help="timed runs per reader (median reported)")
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the shared dicom/ folder")
    args = ap.parse_args(argv)
    if not args.data.is_dir():
        print(f"no DICOM samples at {args.data}", file=sys.stderr)
        return 2
    logging.disable(logging.WARNING)
    print(f"Machine: {describe()}; median of {args.runs} runs; warm file cache (one untimed read first).\n")
    print("| sample | medsat_sr s | medsat_sr geometry | MONAI PydicomReader s | MONAI geometry | time ratio ours/MONAI |")
    print("|---|---:|---|---:|---|---:|")
    tmp = Path(tempfile.mkdtemp(prefix="medsat_io_bench_"))
    for label, rel, opts, kind in SAMPLES:
        path = args.data / rel
        frames = _frames(path)
        if "series" in opts:  # the oracle sees only the chosen reconstruction
            from medsat_sr.io import dicom

            chosen = dicom.scan(path)[int(opts["series"]) - 1]
            want = {str(f) for f in chosen.files} if hasattr(chosen, "files") else None
            if want is not None:
                frames = [f for f in frames if str(f["file"]) in want]
        timed(lambda: read_ours(path, opts), 1)  # warm the file cache and imports
        t_ours, res, err = timed(lambda: read_ours(path, opts), args.runs)
        if err:
            ours_geo = "refused: " + err.split(": ", 1)[-1].split(";")[0].replace(str(path) + ": ", "")
        else:
            good, worst = check_geometry(res[0], res[1], frames)
            ours_geo = f"ok (max {worst:.0e} mm)" if good else f"WRONG (off by up to {worst:.1f} mm)"
        if kind == "folder":
            flat = monai_folder(path, frames, tmp)
            timed(lambda: read_monai(flat), 1)
            t_m, res_m, err_m = timed(lambda: read_monai(flat), args.runs)
            if err_m:
                m_geo = f"error: {err_m}"
            else:
                good, worst = check_geometry(res_m[0], res_m[1], frames)
                m_geo = f"ok (max {worst:.0e} mm)" if good else ("WRONG (slices not found)" if worst == float("inf") else f"WRONG (off by up to {worst:.1f} mm)")
        else:
            t_m, m_geo = None, "cannot select a reconstruction"
        ratio = f"{t_ours / t_m:.2f}" if t_ours and t_m else "n/a"
        fmt = lambda t: f"{t:.3f}" if t is not None else "-"  # noqa: E731
        print(f"| {label} | {fmt(t_ours)} | {ours_geo} | {fmt(t_m)} | {m_geo} | {ratio} |")
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

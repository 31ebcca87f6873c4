"""Batch throughput: files per minute of ``medsat-sr batch`` inline and on a LocalCluster of 1 and 2 workers.

The inputs are the shared real samples (../shared/data), one recipe for all:
cubic upscaling (``--method cubic``), x2 for rasters and isotropic volumes,
and x2 along the thick axis for the thick-slice MR series, given per row in a
CSV manifest:

* the five Sentinel-2 13-band tiles (101 x 100, float32),
* the Landsat 7 RGB scene (3 x 718 x 791, uint8),
* the NAIP 4-band scene (4 x 724 x 934, uint8),
* the TotalSegmentator CT volume (122 x 101 x 112, NIfTI),
* the Siemens MR T1 thick-slice series (256 x 256 x 35 DICOM, x2 on the slice axis).

Each configuration runs into a fresh output folder, so nothing is skipped.
"wall" is the whole ``run_batch`` call, cluster start and shutdown included;
"busy" sums the per-input job times from ``batch.jsonl`` (so wall - busy /
workers is the scheduling and start-up overhead); "load avg" is the 1-minute
load average after the run (other jobs on a shared machine slow every row).

Usage:
    python benchmarks/batch.py [--data PATH] [--workers 0,1,2] [--quick]
"""

from __future__ import annotations

import argparse
import csv
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from _machine import describe

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data"

INPUTS = [
    # (path under data/, scale, label)
    *[(f"geotiff/sentinel2_l1c_13band_10m_eo-learn/REFERENCE_SCENES_t{i}_13band.tif", "2", f"S2 13-band tile t{i}") for i in range(5)],
    ("geotiff/landsat7_rgb_rasterio/RGB.byte.tif", "2", "Landsat 7 RGB"),
    ("geotiff/naip_4band_m_4709963_se_14_1_20180716_opengeos-data/m_4709963_se_14_1_20180716.tif", "2", "NAIP 4-band"),
    ("nifti/TotalSegmentator/tests/reference_files/example_ct.nii.gz", "2", "CT volume"),
    ("dicom/mr_t1_2d_sag_thick_dcm_qa_decubitus_HFS/In", "1,1,2", "MR thick-slice DICOM series"),
]
QUICK = 5  # --quick: the five Sentinel-2 tiles only


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the shared data folder")
    ap.add_argument("--workers", default="0,1,2", help="comma list of worker counts (0 = inline)")
    ap.add_argument("--quick", action="store_true", help="the five small Sentinel-2 tiles only")
    args = ap.parse_args(argv)
    if not args.data.is_dir():
        print(f"shared data not found at {args.data}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.ERROR)
    from medsat_sr.batch import read_jsonl, run_batch

    rows = INPUTS[:QUICK] if args.quick else INPUTS
    missing = [p for p, _, _ in rows if not (args.data / p).exists()]
    if missing:
        print(f"missing samples: {missing}", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="medsat_batch_bench_"))
    try:
        manifest = work / "inputs.csv"
        with open(manifest, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["input", "scale"])
            for p, scale, _ in rows:
                w.writerow([str(args.data / p), scale])
        print(f"# medsat-sr batch throughput: {len(rows)} inputs, cubic, {describe()}")
        print("# inputs: " + "; ".join(label for _, _, label in rows))
        print()
        print(f"| {'workers':>7} | {'torch threads':>13} | {'wall s':>7} | {'busy s':>7} | {'files/min':>9} | failed | load avg |")
        print(f"|{'-' * 9}|{'-' * 15}|{'-' * 9}|{'-' * 9}|{'-' * 11}|--------|----------|")
        for n in [int(v) for v in args.workers.split(",")]:
            out = work / f"out_{n}"
            t0 = time.perf_counter()
            res = run_batch([], out, manifest=manifest, method="cubic", workers=n)
            wall = time.perf_counter() - t0
            lines = [ln for ln in read_jsonl(out / "batch.jsonl") if ln["run"] == res.run]
            busy = sum(ln["seconds"] or 0.0 for ln in lines)
            threads = sorted({ln["torch_threads"] for ln in lines if ln.get("torch_threads")})
            label = "inline" if n == 0 else str(n)
            load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
            print(
                f"| {label:>7} | {','.join(map(str, threads)):>13} | {wall:7.1f} | {busy:7.1f} | "
                f"{60 * res.done / wall:9.1f} | {res.failed:6d} | {load:8.1f} |",
                flush=True,
            )
            for ln in res.failures:
                print(f"#   failed: {ln['input']}: {ln['error']}")
            shutil.rmtree(out, ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

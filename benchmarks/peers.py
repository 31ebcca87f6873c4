"""Peer benchmark, side by side in one run: ECLARE and medsat_sr on the same thick-slice T1 (#15).

The reference is a 1 mm T1 that no shipped model saw (the UIH uMR770 scan at
1 mm, ``zoo/datasets.py``), cropped to a head block and degraded to 4 mm
slices with the ``mri`` profile's slice model (Gaussian, FWHM = spacing =
4 mm) by :func:`medsat_sr.evaluate.prepare_case`. Each method gets the same
thick-slice NIfTI and the same CPU; all outputs are scored against the 1 mm
reference with the same mask and metric (the evaluation protocol: PSNR and
SSIM in the head mask).

* **ECLARE** (pip ``eclare==1.0.1``, GPL-3): installed in its own virtual
  environment (``--venv``; created with ``python -m venv`` and
  ``pip install torch==2.13.0 eclare==1.0.1``, the CPU torch wheel pinned in the same call) and run
  as a separate process (``run-eclare``), never imported. It is told the slice
  profile (``--relative-slice-thickness 4``, Gaussian), as medsat_sr's profile
  knows it, so ESPRESO's profile estimation is skipped. Its budget is
  ``--n-patches`` (steps = patches / batch 128); its own default is 1M
  patches (hours on 2 CPU cores).
* **medsat_sr** ``upscale --config mri_thick_slice`` fine-tuning the shipped
  model (default) and ``--from-scratch``, each with ``--budget`` at most
  ECLARE's measured wall time (training and inference) less 20 s (``--budget``
  sets less), so medsat_sr never gets more wall time than ECLARE. ``--work``
  keeps a finished ECLARE run: a second call reuses it (its own total time
  from its log).
* **cubic** (B-spline), the baseline.

Usage::

    nice -n 10 python benchmarks/peers.py --venv /tmp/eclare_venv --eclare-patches 12800 --budget 300

Writes ``benchmarks/results/peers.txt`` and ``peers.json``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "zoo"))

import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402

import _machine  # noqa: E402
import datasets as ds  # noqa: E402

RESULTS = HERE / "results"
#: The head block of the UIH T1 at 1 mm (start, stop) and the slice factor.
BLOCK = ([32, 120, 60], [128, 216, 156])
FACTOR = 4


def ensure_venv(venv: Path) -> Path:
    """The ``run-eclare`` of ``venv``, installing ECLARE there when it is missing (needs the package index)."""
    exe = venv / "bin" / "run-eclare"
    if exe.is_file():
        return exe
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
    # torch pinned in the same call: the CPU wheel, not the CUDA build that an unpinned torch pulls
    subprocess.run([*pip, "torch==2.13.0", "eclare==1.0.1"], check=True)
    return exe


def prepare(work: Path) -> tuple[Any, Any, Path]:
    """``(config, case, thick-slice NIfTI)``: the held-out reference degraded to 4 mm slices."""
    from medsat_sr.config import load_config
    from medsat_sr.evaluate import prepare_case
    from medsat_sr.io import write

    cfg = load_config("mri_thick_slice")
    ref = ds.crop(ds.uih_1mm(), *BLOCK)
    case = prepare_case(ref, cfg, name="uih_t1", scale=None)
    lr = write(case.lr, work / "uih_t1_4mm.nii.gz")
    return cfg, case, Path(lr)


def _on_reference_grid(arr: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """ECLARE's output on the reference grid: cropped or edge-padded to ``shape`` (it keeps the first slice's centre)."""
    out = arr[tuple(slice(0, n) for n in shape)]
    pad = [(0, n - m) for n, m in zip(shape, out.shape)]
    return np.pad(out, pad, mode="edge") if any(p[1] for p in pad) else out


def run_eclare(exe: Path, lr: Path, work: Path, patches: int, shape: tuple[int, ...]) -> tuple[np.ndarray, float]:
    """ECLARE on ``lr`` as a separate process: (output on the reference grid, wall seconds)."""
    out = work / "eclare"
    done = list(out.glob("*_eclare.nii*"))
    if done and (work / "eclare.log").is_file():  # --reuse: a finished run; its own total time from its log
        text = (work / "eclare.log").read_text(errors="replace")
        seconds = float(text.split("Total elapsed time:")[1].split("s")[0])
        arr = np.asarray(nib.load(str(done[0])).dataobj, dtype=np.float32)
        return _on_reference_grid(arr, shape), seconds
    t0 = time.perf_counter()
    subprocess.run([str(exe), "--in-fpath", str(lr), "--out-dir", str(out), "--n-patches", str(patches),
                    "--relative-slice-thickness", str(float(FACTOR)), "--relative-slice-profile-type", "gaussian"],
                   check=True, stdout=open(work / "eclare.log", "w"), stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - t0
    (path,) = out.glob("*_eclare.nii*")
    arr = np.asarray(nib.load(str(path)).dataobj, dtype=np.float32)
    return _on_reference_grid(arr, shape), seconds


def run_ours(lr: Path, budget: float, scratch: bool) -> tuple[np.ndarray, float, dict[str, Any]]:
    """``upscale --config mri_thick_slice --degradation profile --budget B [--from-scratch]``: (output, seconds, record)."""
    from medsat_sr.inference import upscale

    t0 = time.perf_counter()
    res = upscale(str(lr), config="mri_thick_slice", budget=budget, from_scratch=scratch, sidecar=False,
                  progress=False, degradation="profile")  # told the slice profile, as ECLARE is
    seconds = time.perf_counter() - t0
    return res.image.as_tensor().float().cpu().numpy(), seconds, res.record


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--venv", type=Path, default=Path("/tmp/eclare_venv"))
    p.add_argument("--eclare-patches", type=int, default=12800, help="ECLARE's budget (patches; batch 128)")
    p.add_argument("--work", type=Path, default=Path("/tmp/peers"))
    p.add_argument("--budget", type=float, default=None,
                   help="medsat_sr's fit budget (s; default ECLARE's wall time less 20 s); must not exceed ECLARE's")
    a = p.parse_args(argv)
    a.work.mkdir(parents=True, exist_ok=True)
    from medsat_sr.evaluate import MethodRun, _score_case
    from medsat_sr.inference import upscale

    exe = ensure_venv(a.venv)
    cfg, case, lr = prepare(a.work)
    shape = tuple(int(v) for v in case.reference.shape[1:])
    images: dict[str, np.ndarray] = {}
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    images["cubic"] = upscale(str(lr), method="cubic", scale=list(case.factors), sidecar=False,
                              progress=False).image.as_tensor().float().cpu().numpy()
    seconds["cubic"] = time.perf_counter() - t0
    ecl, seconds["eclare"] = run_eclare(exe, lr, a.work, a.eclare_patches, shape)
    images["eclare"] = ecl[None]
    budget = min(a.budget or seconds["eclare"] - 20.0, seconds["eclare"] - 20.0)
    notes = {}
    for name, scratch in (("medsat_sr fine-tuned", False), ("medsat_sr scratch", True)):
        img, seconds[name], rec = run_ours(lr, max(10.0, budget), scratch)
        images[name] = img
        notes[name] = {"decision": rec.get("decision"), "timings": rec.get("timings"),
                       "source": (rec.get("models") or [{}])[0].get("source")}
    runs = {m: MethodRun(name=m, kind="x", image=v, seconds=seconds[m], peak_rss_mb=0.0, peak_rss_increase_mb=0.0)
            for m, v in images.items()}
    res = _score_case(cfg, case, runs)
    lines = [f"peer benchmark (#15), machine: {_machine.describe()}, load average {_machine.load_average()}",
             f"input: UIH uMR770 T1 (held out of the shipped models) 1 mm block {BLOCK}, degraded to {FACTOR} mm "
             f"slices ({case.degradation.get('recipe', case.degradation)}); input {list(case.lr.shape[1:])}, "
             f"reference {list(shape)}",
             f"ECLARE 1.0.1: {a.eclare_patches} patches ({a.eclare_patches // 128} steps of 128), slice profile given; "
             f"medsat_sr: --budget {max(10.0, budget):.0f} s (at most ECLARE's wall time less 20 s)",
             "", f"{'method':22s} {'PSNR head':>9s} {'SSIM head':>9s} {'wall s':>7s}"]
    for m, r in res.methods.items():
        lines.append(f"{m:22s} {r['psnr_masked']:9.2f} {r['ssim_masked']:9.4f} {seconds[m]:7.1f}")
    text = "\n".join(lines)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "peers.txt").write_text(text + "\n")
    (RESULTS / "peers.json").write_text(json.dumps(
        {"methods": {m: {k: r.get(k) for k in ("psnr", "psnr_masked", "ssim", "ssim_masked")}
                     for m, r in res.methods.items()}, "seconds": seconds, "notes": notes,
         "eclare_patches": a.eclare_patches}, indent=1, default=str))
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

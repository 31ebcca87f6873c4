"""``upscale --model NAME`` (no fitting): wall time on a 256^3-class volume and a 2000^2 4-band scene (#15).

The "verdict line" is the ``verdict:`` line the CLI printed on stdout.

* ``mri_thick_slice`` (any factor) and ``mri_thick_slice_x4`` (the config's
  x4 network, what a fine-tune starts from at x4) on the held-out UIH T1 at
  1 mm (160 x 230 x 256) made 4 mm thick across its superior axis (``mri``
  slice model): 160 x 230 x 64 in, 160 x 230 x 256 out (9.4 M voxels); each
  as ``--model`` runs it (one through-plane orientation: no fit) and with
  both (``--set inference.slice_orientations=2``, what a fit's application
  runs), scored against the 1 mm truth (PSNR in the head mask, the
  evaluation protocol), cubic B-spline alongside: the speed/quality trade;
* ``mri_isotropic_x2`` on a 128^3 block of the same T1 degraded by PSF x2: 64^3 in, 128^3 out;
* ``multiband_x2`` on a 1000 x 1000 4-band scene (NAIP, mirror-tiled: real
  content, timing only): 2000 x 2000 out.

Each through the CLI in a fresh process (imports included), median of
``--runs``; the verdict line and the decision (model vs cubic on the input's
held-out split) are read from the trust record. Writes
``benchmarks/results/model_speed.txt``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "zoo"))

import numpy as np  # noqa: E402

import _machine  # noqa: E402
import datasets as ds  # noqa: E402

RESULTS = HERE / "results"
BOTH = ["--set", "inference.slice_orientations=2"]


@dataclass
class Row:
    """One timed ``upscale --model`` command."""

    label: str
    model: str
    src: Path
    shape: list[int]
    extra: list[str] = field(default_factory=list)
    truth: Any = None  # (config, case) when the 1 mm truth scores the output


def inputs(work: Path) -> list[Row]:
    """Write the inputs; the rows to time."""
    from medsat_sr.config import load_config
    from medsat_sr.evaluate import prepare_case
    from medsat_sr.image import make_raster
    from medsat_sr.io import write

    uih = ds.uih_1mm()
    cfg = load_config("mri_thick_slice")
    case = prepare_case(uih, cfg, name="uih")
    iso = prepare_case(ds.crop(uih, [16, 51, 64], [144, 179, 192]), load_config("mri_isotropic_x2"), name="b").lr
    left, _ = ds.naip_halves()
    a = left.as_tensor().numpy()[:, :500, :466]
    tile = np.concatenate([a, a[:, :, ::-1]], axis=2)
    tile = np.concatenate([tile, tile[:, ::-1]], axis=1)  # 1000 x 932
    scene = np.pad(tile, ((0, 0), (0, 0), (0, 1000 - tile.shape[2])), mode="reflect")
    ras = make_raster(scene.astype(np.float32), left.meta["transform"], crs=left.meta["crs"], source_dtype="uint8")
    thick = Path(write(case.lr, work / "uih_4mm.nii.gz"))
    shape = list(case.lr.shape[1:])
    truth = (cfg, case)
    return [Row("mri_thick_slice", "mri_thick_slice", thick, shape, truth=truth),
            Row("  both orientations", "mri_thick_slice", thick, shape, BOTH, truth),
            Row("mri_thick_slice_x4", "mri_thick_slice_x4", thick, shape, truth=truth),
            Row("  both orientations", "mri_thick_slice_x4", thick, shape, BOTH, truth),
            Row("mri_isotropic_x2", "mri_isotropic_x2", Path(write(iso, work / "uih_block_2mm.nii.gz")),
                list(iso.shape[1:])),
            Row("multiband_x2", "multiband_x2", Path(write(ras, work / "naip_1000.tif")), list(ras.shape[1:]))]


def truth_psnr(truth: Any, outputs: dict[str, np.ndarray]) -> dict[str, float]:
    """PSNR in the head mask against the 1 mm truth (the evaluation protocol's scorer)."""
    from medsat_sr.evaluate import MethodRun, _score_case

    cfg, case = truth
    runs = {m: MethodRun(name=m, kind="x", image=v, seconds=0.0, peak_rss_mb=0.0, peak_rss_increase_mb=0.0)
            for m, v in outputs.items()}
    return {m: float(r["psnr_masked"]) for m, r in _score_case(cfg, case, runs).methods.items()}


def time_row(row: Row, work: Path, runs: int) -> tuple[float, dict[str, Any], str, np.ndarray | None]:
    """Median wall time of ``runs`` fresh CLI runs; the last run's record, verdict line and output."""
    out = work / ("out" + "".join(row.src.suffixes))
    rec_path = out.with_name(out.name + ".json")
    times, image = [], None
    for i in range(runs):
        t0 = time.perf_counter()
        r = subprocess.run([sys.executable, "-m", "medsat_sr", "upscale", str(row.src), "--model", row.model,
                            *row.extra, "-o", str(out)], capture_output=True, text=True)
        times.append(time.perf_counter() - t0)
        if r.returncode != 0:
            raise SystemExit(f"{row.label}: rc {r.returncode}\n{r.stderr}")
        verdict = ([ln for ln in r.stdout.splitlines() if ln.startswith("verdict:")][-1:] or ["-"])[0]
        if row.truth is not None and i == runs - 1:
            from medsat_sr.io import read

            image = read(str(out)).as_tensor().float().numpy()
        out.unlink(missing_ok=True)
        rec = json.loads(rec_path.read_text())
        rec_path.unlink()
    return statistics.median(times), rec, verdict, image


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--work", type=Path, default=Path("/tmp/model_speed"))
    p.add_argument("--out", type=Path, default=RESULTS / "model_speed.txt",
                   help="results file (default results/model_speed.txt; name another machine's run apart)")
    p.add_argument("--models", help="comma list: time only the rows of these models (default: all)")
    a = p.parse_args(argv)
    a.work.mkdir(parents=True, exist_ok=True)
    lines = [f"upscale --model NAME (no fitting), fresh process each run, median of {a.runs}; "
             f"machine: {_machine.describe()}, load average at start {_machine.load_average()}",
             "truth: PSNR in the head mask against the 1 mm UIH T1 (MR rows)", "",
             f"{'model':20s} {'input':>16s} {'output':>16s} {'wall s':>7s} {'truth dB':>9s}  verdict"]
    rows = inputs(a.work)
    if a.models:
        keep = {m.strip() for m in a.models.split(",")}
        rows = [r for r in rows if r.model in keep]
    cubic = None
    for row in rows:
        seconds, rec, verdict, image = time_row(row, a.work, a.runs)
        score = ""
        if row.truth is not None:
            if cubic is None:
                from medsat_sr.inference import upscale

                cubic = upscale(str(row.src), method="cubic", scale=list(row.truth[1].factors), sidecar=False,
                                progress=False).image.as_tensor().float().numpy()
            got = truth_psnr(row.truth, {"model": image, "cubic": cubic})
            score = f"{got['model']:.2f}"
            cubic_line = f"{'cubic B-spline':20s} {'':>16s} {'':>16s} {'':>7s} {got['cubic']:9.2f}"
        d = rec.get("decision") or {}
        lines.append(f"{row.label:20s} {str(row.shape):>16s} {str(rec['output']['shape'][1:]):>16s} "
                     f"{seconds:7.1f} {score:>9s}  model {d.get('model_score', float('nan')):.2f} dB vs "
                     f"{d.get('classical_method')} {d.get('classical_score', float('nan')):.2f} dB on the input's "
                     f"held-out split -> {'model' if d.get('use_model') else 'cubic'}")
        lines.append(f"{'':20s} verdict line: {verdict}")
    if cubic is not None:
        lines.append(cubic_line)
    return _machine.publish("\n".join(lines), a.out)


if __name__ == "__main__":
    raise SystemExit(main())

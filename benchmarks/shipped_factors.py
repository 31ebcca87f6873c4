"""Benchmark: the shipped thick-slice MR model away from the x4 it was trained at (#15).

``mri_thick_slice`` (the any-factor network) is trained at x4 only. This
runs it on the held-out UIH T1 at 1 mm made thick at other through-plane
factors (the evaluation protocol's case: ``prepare_case`` with the config's
slice model), each route through the CLI in a fresh process, one run each:

* ``--model mri_thick_slice``: the shipped weights, no fitting;
* ``--config mri_thick_slice``: the default, a 60 s fine-tune from them;
* ``--config mri_thick_slice --from-scratch --budget 60``: the same time from random weights;

scored against the 1 mm truth (PSNR in the head mask, the protocol's
scorer), cubic B-spline alongside, with what each run's decision shipped.
Writes ``benchmarks/results/shipped_factors.txt``.

Machine: 2-core CPU, no GPU. About 4 minutes per factor.
Usage: nice -n 10 python benchmarks/shipped_factors.py [--factors 2,3,6]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parent / "zoo"))

import _machine  # noqa: E402
import datasets as ds  # noqa: E402
from model_speed import truth_psnr  # noqa: E402

ROUTES = {
    "--model (no fit)": ["--model", "mri_thick_slice"],
    "--config (60 s fine-tune)": ["--config", "mri_thick_slice"],
    "--config --from-scratch 60 s": ["--config", "mri_thick_slice", "--from-scratch", "--budget", "60"],
}


def run(src: Path, args: list[str], out: Path) -> tuple[float, dict, object]:
    """One fresh CLI run: seconds, the trust record, the written volume."""
    from medsat_sr.io import read

    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "medsat_sr", "upscale", str(src), *args, "-o", str(out), "-q"],
                       capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(args)}: rc {r.returncode}\n{r.stderr}")
    rec = json.loads(out.with_name(out.name + ".json").read_text())
    return seconds, rec, read(str(out)).as_tensor().float().numpy()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--factors", default="2,3,6")
    p.add_argument("--work", type=Path, default=Path("/tmp/shipped_factors"))
    a = p.parse_args(argv)
    from medsat_sr.config import load_config
    from medsat_sr.evaluate import prepare_case
    from medsat_sr.inference import upscale
    from medsat_sr.io import write

    a.work.mkdir(parents=True, exist_ok=True)
    cfg = load_config("mri_thick_slice")
    uih = ds.uih_1mm()
    lines = [f"# benchmarks/shipped_factors.py: mri_thick_slice (trained at x4) at other factors; machine: "
             f"{_machine.describe()}, load average at start {_machine.load_average()}",
             "held-out UIH T1 at 1 mm made thick (the protocol's case); truth dB: PSNR in the head mask; one run each;",
             "ships: what the run's decision wrote (model, or cubic after a fallback); held-out: the decision's model - cubic",
             "",
             f"{'factor':>6}  {'route':30s} {'truth dB':>9s} {'vs cubic':>9s} {'ships':>6s} {'held-out':>9s} {'wall s':>7s}"]
    for f in [float(v) for v in a.factors.split(",")]:
        case = prepare_case(uih, cfg, name=f"uih_x{f:g}", scale=[1.0, 1.0, f])  # the config's slice axis, as at x4
        src = Path(write(case.lr, a.work / f"uih_x{f:g}.nii.gz"))
        cubic = upscale(str(src), method="cubic", scale=list(case.factors), sidecar=False,
                        progress=False).image.as_tensor().float().numpy()
        base = truth_psnr((cfg, case), {"cubic": cubic})["cubic"]
        lines.append(f"{f:6g}  {'cubic B-spline':30s} {base:9.2f}")
        for label, args in ROUTES.items():
            seconds, rec, image = run(src, args, a.work / f"out_x{f:g}.nii.gz")
            got = truth_psnr((cfg, case), {"model": image})["model"]
            d = rec.get("decision") or {}
            held = float(d.get("model_score", float("nan"))) - float(d.get("classical_score", float("nan")))
            lines.append(f"{f:6g}  {label:30s} {got:9.2f} {got - base:+9.2f} "
                         f"{'model' if d.get('use_model') else 'cubic':>6s} {held:+9.2f} {seconds:7.0f}")
            print(lines[-1], flush=True)
    return _machine.publish("\n".join(lines), HERE / "results" / "shipped_factors.txt")


if __name__ == "__main__":
    raise SystemExit(main())

"""Benchmark: the shipped any-factor thick-slice MR model across through-plane factors (#15).

``mri_thick_slice`` is the shipped network that runs at any factor. It was
first trained at x4 alone and lost to cubic at x2 and x3; it is now trained
at x1.5 to x8 (``data.factors``, ``zoo/train_zoo.py``). This runs it on the
held-out UIH T1 at 1 mm made thick at each factor (the evaluation protocol's
case: ``prepare_case`` with the config's slice model), each route through the
CLI in a fresh process, one run each:

* ``model``: ``--model mri_thick_slice``, the shipped weights, no fitting;
* ``model-before``: the same with the code and weights of ``--before REV``
  (a git worktree of that revision, run with its own package), so both
  weights are measured in the same run on the same inputs;
* ``config``: ``--config mri_thick_slice``, the default, a 60 s fine-tune
  from the shipped weights (for factors outside (3, 4]);
* ``scratch``: ``--config mri_thick_slice --from-scratch --budget 60``.

Each is scored against the 1 mm truth (PSNR in the head mask, the protocol's
scorer), cubic B-spline alongside, with what each run's decision shipped.
Writes ``benchmarks/results/shipped_factors.txt``.

Machine: 2-core CPU, no GPU. About 40 s per factor for the two ``--model``
routes, 5 minutes more for the two fits.

Usage::

    nice -n 10 python benchmarks/shipped_factors.py --before HEAD~1 --factors 1.5,2,3,4,6,8 --fit-factors 2,3,6
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parent / "zoo"))

import _machine  # noqa: E402
import datasets as ds  # noqa: E402
from model_speed import truth_psnr  # noqa: E402

#: Route id: (label, CLI arguments, whether it runs the --before revision).
ROUTES = {
    "model-before": ("--model, weights of --before", ["--model", "mri_thick_slice"], True),
    "model": ("--model (no fit)", ["--model", "mri_thick_slice"], False),
    "config": ("--config (60 s fine-tune)", ["--config", "mri_thick_slice"], False),
    "scratch": ("--config --from-scratch 60 s", ["--config", "mri_thick_slice", "--from-scratch", "--budget", "60"], False),
}
FITS = ("config", "scratch")


def run(src: Path, args: list[str], out: Path, package: Path | None = None) -> tuple[float, dict, object]:
    """One fresh CLI run (of the package in ``package``, default this one): seconds, the trust record, the volume."""
    from medsat_sr.io import read

    env = dict(os.environ, PYTHONPATH=str(package)) if package is not None else None
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "medsat_sr", "upscale", str(src), *args, "-o", str(out), "-q"],
                       capture_output=True, text=True, env=env, cwd=str(package or HERE.parent))
    seconds = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(args)}: rc {r.returncode}\n{r.stderr}")
    rec = json.loads(out.with_name(out.name + ".json").read_text())
    return seconds, rec, read(str(out)).as_tensor().float().numpy()


def worktree(rev: str, where: Path) -> Path:
    """A detached git worktree of ``rev`` in ``where`` (its package runs the ``model-before`` route)."""
    subprocess.run(["git", "-C", str(HERE.parent), "worktree", "add", "--detach", "-f", str(where), rev],
                   check=True, capture_output=True)
    return where


def _short_sha(rev: str) -> str:
    """``rev`` and the commit it names, e.g. ``HEAD (5dc231e)``."""
    sha = subprocess.run(["git", "-C", str(HERE.parent), "rev-parse", "--short", rev], capture_output=True, text=True)
    return f"{rev} ({sha.stdout.strip() or 'unknown commit'})"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--factors", default="1.5,2,3,4,6,8", help="factors of the --model routes")
    p.add_argument("--fit-factors", default="2,3,6", help="factors that also run the fits (config, scratch)")
    p.add_argument("--before", help="a git revision whose shipped weights the model-before route runs")
    p.add_argument("--work", type=Path, default=Path("/tmp/shipped_factors"))
    a = p.parse_args(argv)
    from medsat_sr.config import load_config
    from medsat_sr.evaluate import prepare_case
    from medsat_sr.inference import upscale
    from medsat_sr.io import write

    a.work.mkdir(parents=True, exist_ok=True)
    cfg = load_config("mri_thick_slice")
    uih = ds.uih_1mm()
    fit_factors = {float(v) for v in a.fit_factors.split(",") if v}
    lines = [f"# benchmarks/shipped_factors.py: mri_thick_slice across through-plane factors; machine: "
             f"{_machine.describe()}, load average at start {_machine.load_average()}",
             "held-out UIH T1 at 1 mm made thick (the protocol's case); truth dB: PSNR in the head mask; one run each;",
             "ships: what the run's decision wrote (model, or cubic after a fallback); held-out: the decision's model - cubic",
             f"--before: {_short_sha(a.before) if a.before else '(not run)'}",
             "",
             f"{'factor':>6}  {'route':30s} {'truth dB':>9s} {'vs cubic':>9s} {'ships':>6s} {'held-out':>9s} {'wall s':>7s}"]
    with tempfile.TemporaryDirectory() as tmp:
        before = worktree(a.before, Path(tmp) / "before") if a.before else None
        try:
            for f in [float(v) for v in a.factors.split(",")]:
                case = prepare_case(uih, cfg, name=f"uih_x{f:g}", scale=[1.0, 1.0, f])  # the config's slice axis
                src = Path(write(case.lr, a.work / f"uih_x{f:g}.nii.gz"))
                cubic = upscale(str(src), method="cubic", scale=list(case.factors), sidecar=False,
                                progress=False).image.as_tensor().float().numpy()
                base = truth_psnr((cfg, case), {"cubic": cubic})["cubic"]
                lines.append(f"{f:6g}  {'cubic B-spline':30s} {base:9.2f}")
                for key, (label, args, old) in ROUTES.items():
                    if (old and before is None) or (key in FITS and f not in fit_factors):
                        continue
                    seconds, rec, image = run(src, args, a.work / f"out_x{f:g}.nii.gz", before if old else None)
                    got = truth_psnr((cfg, case), {"model": image})["model"]
                    d = rec.get("decision") or {}
                    held = float(d.get("model_score", float("nan"))) - float(d.get("classical_score", float("nan")))
                    lines.append(f"{f:6g}  {label:30s} {got:9.2f} {got - base:+9.2f} "
                                 f"{'model' if d.get('use_model') else 'cubic':>6s} {held:+9.2f} {seconds:7.0f}")
                    print(lines[-1], flush=True)
        finally:
            if before is not None:
                subprocess.run(["git", "-C", str(HERE.parent), "worktree", "remove", "--force", str(before)],
                               capture_output=True)
    return _machine.publish("\n".join(lines), HERE / "results" / "shipped_factors.txt")


if __name__ == "__main__":
    raise SystemExit(main())

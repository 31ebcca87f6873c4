"""glibc malloc, tuned or not, under ``upscale --model`` on a volume and on a raster (#15).

``medsat_sr.hardware.tune_allocator`` raises glibc's mmap and trim
thresholds so that freed feature maps are reused instead of handed back to
the kernel and faulted in again. The CLI applies it to volume inputs only;
this script is the measurement behind that choice. Each arm runs the CLI's
``main`` in a fresh process:

* ``tuned``: ``tune_allocator()`` first (what ``upscale`` does for volumes);
* ``glibc default``: with ``GLIBC_TUNABLES`` set to a no-op tunable, which
  ``tune_allocator`` leaves alone, so malloc keeps glibc's own thresholds.

Inputs are ``model_speed.py``'s: the held-out UIH T1 made 4 mm thick
(``mri_thick_slice``, both through-plane orientations) and the 1000^2 4-band
NAIP scene (``multiband_x2``); and three fetal T2 stacks through the
multi-stack route, with their masks and (cut short) without. Wall time, the kernel's (system) CPU time and
the peak resident memory (``ru_maxrss``), median of ``--runs``. Writes
``benchmarks/results/allocator.txt`` (``--out``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _machine  # noqa: E402
import model_speed  # noqa: E402

_CHILD = """
import json, os, resource, sys
if sys.argv[1] == "tuned":
    from medsat_sr.hardware import tune_allocator
    if not tune_allocator():
        raise SystemExit("mallopt refused")
from medsat_sr.cli import main
code = main(sys.argv[2:])
ru = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"rc": code, "sys": ru.ru_stime, "rss_mb": ru.ru_maxrss / 1024}), file=sys.stderr)
"""

ARMS = {"tuned": {}, "glibc default": {"GLIBC_TUNABLES": "glibc.malloc.check=0"}}


def run_arm(arm: str, argv: list[str], runs: int) -> dict[str, float]:
    """Median wall, system CPU and peak RSS of ``runs`` fresh processes."""
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "GLIBC_TUNABLES"))}
    env.update(ARMS[arm])
    rows = []
    for _ in range(runs):
        t0 = time.perf_counter()
        r = subprocess.run([sys.executable, "-c", _CHILD, "tuned" if arm == "tuned" else "default", *argv],
                           capture_output=True, text=True, env=env)
        wall = time.perf_counter() - t0
        stats = json.loads(r.stderr.strip().splitlines()[-1])
        if r.returncode != 0 or stats["rc"] != 0:
            raise SystemExit(f"{arm} {argv}: rc {r.returncode}\n{r.stderr[-2000:]}")
        rows.append({"wall": wall, **stats})
    return {k: statistics.median(r[k] for r in rows) for k in ("wall", "sys", "rss_mb")}


def _model_argv(row: model_speed.Row, work: Path, *, volume: bool) -> list[str]:
    out = work / ("out" + "".join(row.src.suffixes))
    return (["upscale", str(row.src), "--model", row.model, "-o", str(out), "-q", "--set", "output.sidecar=false"]
            + (["--set", "inference.slice_orientations=2"] if volume else []))


def _multistack_cases(work: Path) -> dict[str, list[str]]:
    """Three fetal stacks (runs 1-3): with their masks, and unmasked over the whole field of view.

    The unmasked case is cut to one outer iteration of 2 CG steps after the initial registration, no check:
    a full unmasked run takes over an hour on 2 cores; the cut run exercises the same matrix-free products.
    """
    fetal = HERE.parent.parent / "shared" / "data" / "nifti" / "fetal_T2_multistack_mialsrtk_sub-01"
    stacks = [str(fetal / "sub-01" / "anat" / f"sub-01_run-{k}_T2w.nii.gz") for k in (1, 2, 3)]
    masks = [str(fetal / "derivatives" / "manual_masks" / "sub-01" / "anat" / f"sub-01_run-{k}_T2w_desc-brain_mask.nii.gz")
             for k in (1, 2, 3)]
    base = ["upscale", *stacks, "--config", "mri_multistack", "-q", "--set", "output.sidecar=false"]
    short = [f"multistack.{k}={v}" for k, v in (("register_cycles", 0), ("outer_iterations", 1),
                                                ("cg_iterations", 2), ("check", "false"))]
    return {
        "multi-stack: 3 fetal stacks with masks": [*base, "-o", str(work / "fetal_masked.nii.gz"),
                                                    "--set", f"multistack.masks=[{', '.join(masks)}]"],
        "multi-stack: the same, unmasked (cut short)": [*base, "-o", str(work / "fetal_whole.nii.gz"),
                                                       *[x for kv in short for x in ("--set", kv)]],
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--work", type=Path, default=Path("/tmp/allocator"))
    p.add_argument("--out", type=Path, default=HERE / "results" / "allocator.txt")
    a = p.parse_args(argv)
    a.work.mkdir(parents=True, exist_ok=True)
    rows = {r.label: r for r in model_speed.inputs(a.work)}
    cases = {"volume: mri_thick_slice, both orientations": _model_argv(rows["mri_thick_slice"], a.work, volume=True),
             "raster: multiband_x2": _model_argv(rows["multiband_x2"], a.work, volume=False)}
    cases.update(_multistack_cases(a.work))
    lines = [f"glibc malloc tuned or not, upscale --model in a fresh process, median of {a.runs}; "
             f"machine: {_machine.describe()}, load average at start {_machine.load_average()}", "",
             f"{'case':44s} {'arm':14s} {'wall s':>7s} {'sys s':>6s} {'peak RSS MB':>11s}"]
    for label, argv_ in cases.items():
        got = {arm: run_arm(arm, argv_, a.runs) for arm in ARMS}
        for arm, g in got.items():
            lines.append(f"{label:44s} {arm:14s} {g['wall']:7.1f} {g['sys']:6.1f} {g['rss_mb']:11.0f}")
        t, d = got["tuned"], got["glibc default"]
        lines.append(f"{'':44s} {'tuned/default':14s} {t['wall'] / d['wall']:7.2f} {'':6s} {t['rss_mb'] / d['rss_mb']:11.2f}")
    return _machine.publish("\n".join(lines), a.out)


if __name__ == "__main__":
    raise SystemExit(main())

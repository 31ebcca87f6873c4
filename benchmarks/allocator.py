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
NAIP scene (``multiband_x2``). Wall time, the kernel's (system) CPU time and
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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--work", type=Path, default=Path("/tmp/allocator"))
    p.add_argument("--out", type=Path, default=HERE / "results" / "allocator.txt")
    a = p.parse_args(argv)
    a.work.mkdir(parents=True, exist_ok=True)
    rows = {r.label: r for r in model_speed.inputs(a.work)}
    cases = {"volume: mri_thick_slice, both orientations": rows["mri_thick_slice"],
             "raster: multiband_x2": rows["multiband_x2"]}
    lines = [f"glibc malloc tuned or not, upscale --model in a fresh process, median of {a.runs}; "
             f"machine: {_machine.describe()}, load average at start {_machine.load_average()}", "",
             f"{'case':44s} {'arm':14s} {'wall s':>7s} {'sys s':>6s} {'peak RSS MB':>11s}"]
    for label, row in cases.items():
        out = a.work / ("out" + "".join(row.src.suffixes))
        argv_ = ["upscale", str(row.src), "--model", row.model, "-o", str(out), "-q", "--set",
                 "output.sidecar=false"] + (["--set", "inference.slice_orientations=2"] if "volume" in label else [])
        got = {arm: run_arm(arm, argv_, a.runs) for arm in ARMS}
        for arm, g in got.items():
            lines.append(f"{label:44s} {arm:14s} {g['wall']:7.1f} {g['sys']:6.1f} {g['rss_mb']:11.0f}")
        t, d = got["tuned"], got["glibc default"]
        lines.append(f"{'':44s} {'tuned/default':14s} {t['wall'] / d['wall']:7.2f} {'':6s} {t['rss_mb'] / d['rss_mb']:11.2f}")
    return _machine.publish("\n".join(lines), a.out)


if __name__ == "__main__":
    raise SystemExit(main())

#!/usr/bin/env python
"""``medsat-sr demo`` as a user runs it, timed: writes ``benchmarks/results/demo.json`` (the README's demo table).

Each run is a fresh ``medsat-sr demo -o DIR`` process with stderr redirected to
a file (as in a batch log): wall time, exit code, bytes and lines on stderr,
the verdict lines (stdout) and the report's headlines (``report/metrics.json``).
The saved record is the run with the median MR gain; every run's numbers are
kept under ``runs``. The machine and its load average are recorded: training
budgets are wall clock, so a loaded machine trains fewer iterations.

Run: ``python benchmarks/demo_run.py [--runs 3]`` (about 3 minutes a run on 2 idle cores).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _machine import describe, load_average

RESULT = Path(__file__).resolve().parent / "results" / "demo.json"


def one_run(work: Path) -> dict:
    """One ``medsat-sr demo -o work/demo`` run: timing, stderr size, verdicts, headlines."""
    out = work / "demo"
    err = work / "stderr.txt"
    load_before = load_average()
    t0 = time.perf_counter()
    with open(err, "wb") as fh:
        p = subprocess.run([sys.executable, "-m", "medsat_sr", "demo", "-o", str(out)], stdout=subprocess.PIPE,
                           stderr=fh, text=True)
    wall = time.perf_counter() - t0
    data = err.read_bytes()
    metrics = json.loads((out / "report" / "metrics.json").read_text()) if p.returncode == 0 else {}
    return {
        "wall_seconds": round(wall, 1), "exit_code": p.returncode, "stderr_bytes": len(data),
        "stderr_lines": data.count(b"\n"), "load_average_before": load_before, "load_average_after": load_average(),
        "verdicts": [ln for ln in p.stdout.splitlines() if ln.startswith("verdict:")],
        "headlines": metrics.get("headlines", []),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    a = ap.parse_args()
    runs = []
    for i in range(a.runs):
        with tempfile.TemporaryDirectory() as tmp:
            runs.append(one_run(Path(tmp)))
        r = runs[-1]
        print(f"run {i + 1}: exit {r['exit_code']}, {r['wall_seconds']} s, stderr {r['stderr_bytes']} B; "
              + "; ".join(f"{h['file']} {h['gain_masked']:+.2f} dB" for h in r["headlines"]), file=sys.stderr)
        if r["exit_code"] != 0:
            return 1
    gains = [r["headlines"][0]["gain_masked"] for r in runs]
    median_run = runs[gains.index(statistics.median_low(gains))]
    record = {
        "command": "medsat-sr demo -o DIR 2> stderr.txt",
        "machine": describe(),
        **{k: median_run[k] for k in ("wall_seconds", "exit_code", "stderr_bytes", "stderr_lines", "verdicts",
                                      "headlines")},
        "load_average_note": f"load average before/after the saved run: {median_run['load_average_before']} / "
                             f"{median_run['load_average_after']}",
        "wall_seconds_median": statistics.median(r["wall_seconds"] for r in runs),
        "runs": runs,
    }
    RESULT.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    for h in median_run["headlines"]:
        print(f"{h['file']:<22} cubic {h['cubic_psnr_masked']:.2f}  model {h['psnr_masked']:.2f}  "
              f"gain {h['gain_masked']:+.2f} dB")
    print(f"wall {record['wall_seconds_median']} s (median of {len(runs)}), stderr {median_run['stderr_bytes']} B")
    return 0


if __name__ == "__main__":
    sys.exit(main())

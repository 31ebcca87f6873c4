"""Startup time of the ``medsat-sr`` command next to a bare Python.

Runs ``python -c pass``, ``medsat-sr --version``, ``medsat-sr --help``,
``medsat-sr upscale --help`` and ``medsat-sr info SMALL.nii.gz`` (a NIfTI
written to a temporary folder), interleaved, ``--runs`` times each, and
prints the median wall time of each with its difference from bare Python.
Targets: ``--version`` and ``--help`` within 0.3 s of bare Python, ``info``
under 1.5 s. The table also goes to ``benchmarks/results/startup.txt``.

Usage: ``python benchmarks/startup.py [--runs 7]``
"""

from __future__ import annotations

import argparse
import gzip
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _machine import describe, load_average

RESULTS = Path(__file__).resolve().parent / "results" / "startup.txt"

#: (label, target in seconds, relative to bare Python?)
TARGETS = {
    "medsat-sr --version": (0.3, True),
    "medsat-sr --help": (0.3, True),
    "medsat-sr info small.nii.gz": (1.5, False),
}


def _small_nifti(path: Path) -> Path:
    """An 8x8x8 int16 NIfTI-1 (sform and qform), written with the standard library only."""
    hdr = bytearray(348)
    struct.pack_into("<i", hdr, 0, 348)
    struct.pack_into("<8h", hdr, 40, 3, 8, 8, 8, 1, 1, 1, 1)  # dim
    struct.pack_into("<hh", hdr, 70, 4, 16)  # datatype int16, bitpix
    struct.pack_into("<8f", hdr, 76, 1.0, 1.0, 1.0, 2.0, 0, 0, 0, 0)  # pixdim
    struct.pack_into("<f", hdr, 108, 352.0)  # vox_offset
    struct.pack_into("<f", hdr, 112, 1.0)  # scl_slope
    struct.pack_into("<hh", hdr, 252, 1, 1)  # qform_code, sform_code
    struct.pack_into("<12f", hdr, 280, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 2, 0)  # srow_x/y/z
    hdr[344:348] = b"n+1\x00"
    with gzip.open(path, "wb") as fh:
        fh.write(bytes(hdr) + b"\x00" * 4 + bytes(range(256)) * 4)  # 8*8*8*2 = 1024 bytes
    return path


def _commands(nifti: Path) -> dict[str, list[str]]:
    exe = shutil.which("medsat-sr")
    cli = [exe] if exe else [sys.executable, "-m", "medsat_sr"]
    return {
        "python -c pass": [sys.executable, "-c", "pass"],
        "medsat-sr --version": [*cli, "--version"],
        "medsat-sr --help": [*cli, "--help"],
        "medsat-sr upscale --help": [*cli, "upscale", "--help"],
        "medsat-sr info small.nii.gz": [*cli, "info", str(nifti)],
    }


def _time(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return time.perf_counter() - t0


def measure(runs: int) -> dict[str, float]:
    """Median wall seconds per command, the commands interleaved run after run (one warm-up round first)."""
    with tempfile.TemporaryDirectory() as tmp:
        commands = _commands(_small_nifti(Path(tmp) / "small.nii.gz"))
        for cmd in commands.values():
            _time(cmd)
        times: dict[str, list[float]] = {k: [] for k in commands}
        for _ in range(runs):
            for label, cmd in commands.items():
                times[label].append(_time(cmd))
    return {k: statistics.median(v) for k, v in times.items()}


def table(medians: dict[str, float], runs: int) -> str:
    """The result table, with the machine and the targets."""
    bare = medians["python -c pass"]
    lines = [
        f"medsat-sr startup: median of {runs} interleaved runs (wall seconds)",
        f"machine: {describe()}; load average {load_average()}",
        "",
        f"{'command':<30} {'median s':>9} {'- bare s':>9}  target",
    ]
    for label, m in medians.items():
        target = ""
        if label in TARGETS:
            limit, relative = TARGETS[label]
            value = m - bare if relative else m
            ok = "ok" if value <= limit else "MISSED"
            target = f"{'+' if relative else '<'}{limit:g} s {'over bare' if relative else 'total'}: {ok}"
        lines.append(f"{label:<30} {m:9.3f} {m - bare:+9.3f}  {target}")
    return "\n".join(lines) + "\n"


def main() -> None:
    """Measure, print and save the table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=7, help="runs per command (default 7)")
    ns = ap.parse_args()
    text = table(measure(ns.runs), ns.runs)
    print(text, end="")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(text)


if __name__ == "__main__":
    main()

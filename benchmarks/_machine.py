"""What every benchmark records about the machine it ran on.

The benchmark scripts run as ``python benchmarks/NAME.py``, which puts this
folder on ``sys.path``, so they import this module as ``_machine``.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

__all__ = ["machine", "describe", "load_average", "publish", "run_children"]

ISA_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")


def machine() -> dict[str, Any]:
    """CPU model, usable cores, the ISA flags that matter for bf16, and library versions."""
    import torch

    from medsat_sr import __version__

    model, flags = "unknown", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and model == "unknown":
                model = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags |= set(line.split(":", 1)[1].split())
    except OSError:
        model = platform.processor() or model
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "cpu": model,
        "cores": cores,
        "torch_threads": torch.get_num_threads(),
        "isa": ",".join(f for f in ISA_FLAGS if f in flags) or "-",
        "torch": torch.__version__.split("+")[0],
        "medsat_sr": __version__,
        "python": platform.python_version(),
    }


def describe() -> str:
    """One line: ``CPU, N cores (isa), Python X``."""
    m = machine()
    return f"{m['cpu']}, {m['cores']} cores ({m['isa']}), Python {m['python']}, torch {m['torch']}"


def load_average() -> list[float] | None:
    """The 1, 5 and 15 minute load averages, or None where the OS has none."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def publish(text: str, path: Path) -> int:
    """Print a benchmark's table and save it as ``path`` (``benchmarks/results/...``); the exit code 0."""
    print(text)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n", encoding="utf-8")
    return 0


def run_children(script: str, jobs: list[tuple[Any, ...]], parallel: int = 2) -> list[Any]:
    """``python script --child *job`` for each job, ``parallel`` at a time, each on one thread.

    Each child prints one JSON value as its last line of stdout; the values come back in job order.
    """
    out: list[Any] = []
    for i in range(0, len(jobs), parallel):
        procs = [subprocess.Popen([sys.executable, script, "--child", *map(str, j)], stdout=subprocess.PIPE,
                                  stderr=subprocess.DEVNULL, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
                 for j in jobs[i:i + parallel]]
        out += [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in procs]
    return out

"""Training step time in bf16 and fp32 on this CPU, and on the older CPUs it stands in for (``precision: auto``).

``precision: auto`` (every shipped config) trains in bf16 only where the CPU
has native bfloat16 (AVX512-BF16 or AMX, :func:`medsat_sr.hardware.native_bf16`).
This measures why. Each row is one self-supervised training step of a
shipped config's network on a built-in sample (the thick-slice MR net on the
MNI T1 made 4 mm thick; the 4-band x2 net on the aerial RGBN sample), on one
thread, in a child process whose kernels are capped to an older instruction
set: oneDNN with ``ONEDNN_MAX_CPU_ISA`` and ATen with
``ATEN_CPU_CAPABILITY``. ``native`` is the machine as it is; ``avx512`` is
AVX-512 without BF16 (Skylake/Cascade Lake servers, Zen 3); ``avx2`` is
most laptops and older servers. The cap cannot add what the CPU lacks, so
run it on a CPU with AVX512-BF16 to get all three rows.

Each cell: the median step time of steps 6-14, then the median over
``--repeats`` interleaved runs; the ratio is bf16 / fp32 in the same row.

Usage::

    python benchmarks/precision.py            # writes benchmarks/results/precision.txt
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import _machine  # noqa: E402

#: name -> environment of the child (instruction-set caps)
CAPS: dict[str, dict[str, str]] = {
    "native": {},
    "avx512": {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE", "ATEN_CPU_CAPABILITY": "avx512"},
    "avx2": {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"},
}
CASES = ("mri_thick_slice", "multiband_x2")
STEPS = 14


def _input(case: str):  # type: ignore[no-untyped-def]
    """The fit input of ``case`` from the built-in samples."""
    from medsat_sr import read
    from medsat_sr.config import load_config
    from medsat_sr.demo import AERIAL_SAMPLE, MRI_SAMPLE, sample_path
    from medsat_sr.evaluate import crop_image, prepare_case

    if case == "multiband_x2":
        return read(sample_path(AERIAL_SAMPLE))
    ref = crop_image(read(sample_path(MRI_SAMPLE)), [50, 60, 40], [146, 156, 136])
    return prepare_case(ref, load_config(case), name=case, scale=None, holdout=None).lr


def child(case: str, precision: str) -> float:
    """Median seconds of training steps 6-14 of ``case`` at ``precision`` (one thread)."""
    import torch
    from ignite.engine import Events

    from medsat_sr.config import load_config
    from medsat_sr.train import build_trainer

    torch.set_num_threads(1)
    cfg = load_config(case, [f"train.precision={precision}", f"train.max_iterations={STEPS}",
                             "train.val_every=100000", "train.early_stopping.enabled=false"])
    trainer, _, _ = build_trainer(cfg, None, images=[_input(case)], init=None, progress=False)
    ticks: list[float] = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda _: ticks.append(time.perf_counter()))
    trainer.run()
    return statistics.median(b - a for a, b in zip(ticks[5:], ticks[6:]))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--child", nargs=2, metavar=("CASE", "PRECISION"), help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.child:
        print(json.dumps(child(*a.child)))
        return 0
    times: dict[tuple[str, str, str], list[float]] = {}
    for _ in range(a.repeats):
        for case in CASES:
            for cap, env in CAPS.items():
                for prec in ("bf16", "fp32"):
                    out = subprocess.run([sys.executable, __file__, "--child", case, prec], capture_output=True,
                                         text=True, env={**os.environ, "OMP_NUM_THREADS": "1", **env}, check=True)
                    times.setdefault((case, cap, prec), []).append(json.loads(out.stdout.strip().splitlines()[-1]))
    from medsat_sr.hardware import native_bf16

    lines = [f"# benchmarks/precision.py: training step time, bf16 (+channels_last) vs fp32; machine: "
             f"{_machine.describe()}; native bf16: {native_bf16()}",
             f"# one thread; median of steps 6-{STEPS}, then of {a.repeats} interleaved runs; caps: "
             + "; ".join(f"{k} = {v or 'none'}" for k, v in CAPS.items()),
             f"{'case':18s} {'kernels':8s} {'bf16 s':>8s} {'fp32 s':>8s} {'bf16/fp32':>9s}  auto picks"]
    for case in CASES:
        for cap in CAPS:
            b, f = (statistics.median(times[(case, cap, pr)]) for pr in ("bf16", "fp32"))
            pick = "bf16" if cap == "native" and native_bf16() else "fp32"
            lines.append(f"{case:18s} {cap:8s} {b:8.3f} {f:8.3f} {b / f:9.2f}  {pick}")
    return _machine.publish("\n".join(lines), HERE / "results" / "precision.txt")


if __name__ == "__main__":
    raise SystemExit(main())

"""What the processor runs fast: the one place that turns ``precision: auto`` into ``bf16`` or ``fp32``.

bfloat16 pays only where the hardware has it. Measured with
``benchmarks/precision.py`` (a training step of the thick-slice network, one
thread; oneDNN capped with ``ONEDNN_MAX_CPU_ISA`` to stand in for older
CPUs): on a CPU with AVX512-BF16, bf16 + channels_last steps about 2x faster
than fp32; capped at AVX-512 without BF16 it is about 2.5x *slower*, and at
AVX2 (most laptops) about 12x slower. So ``auto`` means bf16 only where the
CPU flags include ``avx512_bf16`` or ``amx_bf16`` (or CUDA supports it), and
an explicit ``bf16`` elsewhere is kept but warned about.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path

logger = logging.getLogger("medsat_sr")

__all__ = ["native_bf16", "resolve_precision"]


@functools.lru_cache(maxsize=1)
def _cpu_flags() -> frozenset[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    return frozenset(next((ln.split(":", 1)[1].split() for ln in text.splitlines() if ln.startswith("flags")), []))


def native_bf16(device: str = "cpu") -> bool:
    """Whether ``device`` runs bfloat16 natively (CPU: AVX512-BF16 or AMX; CUDA: ``is_bf16_supported``)."""
    if str(device).startswith("cuda"):
        import torch

        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    flags = _cpu_flags()
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(precision: str, device: str = "cpu") -> str:
    """``auto`` -> ``bf16`` where :func:`native_bf16`, else ``fp32``; ``fp32``/``bf16`` as given.

    An explicit ``bf16`` on a CPU without native bfloat16 is kept (the
    caller asked for it) with a warning: it runs several times slower than
    ``fp32`` there.
    """
    if precision == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    if precision == "bf16" and not str(device).startswith("cuda") and not native_bf16(device):
        logger.warning("precision bf16 on a CPU without native bfloat16 (no AVX512-BF16 or AMX) runs several "
                       "times slower than fp32; use precision auto or fp32")
    return precision

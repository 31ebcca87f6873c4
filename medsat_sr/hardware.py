"""What the processor runs fast: the one place that turns ``precision: auto`` into ``bf16`` or ``fp32``.

bfloat16 pays only where the hardware has it. Measured with
``benchmarks/precision.py`` (a training step of the thick-slice network, one
thread; oneDNN capped with ``ONEDNN_MAX_CPU_ISA`` to stand in for older
CPUs): on a CPU with AVX512-BF16, bf16 + channels_last steps about 2x faster
than fp32; capped at AVX-512 without BF16 it is about 2.5x *slower*, and at
AVX2 (most laptops) about 12x slower. So ``auto`` means bf16 only where the
CPU flags include ``avx512_bf16`` or ``amx_bf16`` (or CUDA supports it), and
an explicit ``bf16`` elsewhere is kept but warned about.

It also holds :func:`tune_allocator`, which the CLI calls for a single volume
input: glibc's ``malloc`` hands every block over 32 MiB (and, after a free,
the top of the heap) back to the kernel, so each batch of whole slices costs a
page fault per 4 KiB on its next allocation. ``benchmarks/allocator.py`` on a
2-core AVX2 EPYC, ``upscale --model mri_thick_slice`` on a volume: 36.9 s of
system time and 78.8 s wall with glibc's defaults, 1.7 s and 68.6 s tuned
(58.3 s against 78.6 s in the run before).
"""

from __future__ import annotations

import ctypes
import functools
import logging
import os
import sys
from pathlib import Path

logger = logging.getLogger("medsat_sr")

__all__ = ["native_bf16", "resolve_precision", "tune_allocator"]


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


#: ``mallopt`` parameters (glibc ``malloc.h``).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3

#: Blocks up to this size come from the heap, not from a fresh ``mmap`` each time.
MMAP_THRESHOLD = 1 << 30

#: Free memory kept at the top of the heap before it is handed back to the kernel.
TRIM_THRESHOLD = 1 << 30

#: glibc's environment settings of the same knobs; when one is set, the user's choice stands.
_MALLOC_ENV = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES")


def tune_allocator() -> bool:
    """Let glibc ``malloc`` reuse freed tensor memory instead of returning it to the kernel.

    Large tensors are allocated and freed once per batch. By default glibc
    serves each one over 32 MiB with a fresh ``mmap`` (zeroed by the kernel,
    one page fault per 4 KiB) and trims the heap after a free; this raises
    both thresholds (:data:`MMAP_THRESHOLD`, :data:`TRIM_THRESHOLD`) with
    ``mallopt``. Up to :data:`TRIM_THRESHOLD` of freed memory stays with
    the process until it exits, and the peak can grow where blocks of many
    sizes interleave (``benchmarks/allocator.py``: 1.07x on a volume, 1.27x
    on a streamed raster, 1.75x on an unmasked multi-stack reconstruction;
    which is why the CLI applies it to a single volume only).
    A process-wide setting, so the CLI calls it, never the library.

    Returns:
        Whether the thresholds were set: ``False`` off Linux/glibc, under
        another allocator (``LD_PRELOAD``), or where the user set glibc's own
        ``MALLOC_*_THRESHOLD_`` or ``GLIBC_TUNABLES`` environment variables.
    """
    if not sys.platform.startswith("linux") or any(os.environ.get(k) for k in _MALLOC_ENV):
        return False
    if any(name in os.environ.get("LD_PRELOAD", "") for name in ("jemalloc", "tcmalloc", "mimalloc")):
        return False
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # older glibc refuses an mmap threshold over 32 MiB (its dynamic ceiling); that still covers most batches
    done = bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) or mallopt(_M_MMAP_THRESHOLD, 32 << 20))
    done = bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)) and done
    logger.debug("malloc thresholds %s", "raised" if done else "left at glibc's defaults")
    return done

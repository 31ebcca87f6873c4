"""precision: auto -> bf16 only where the CPU runs bfloat16 natively (medsat_sr.hardware)."""

from __future__ import annotations

import logging

import pytest

from medsat_sr import hardware


@pytest.fixture
def cpu(monkeypatch: pytest.MonkeyPatch):  # noqa: ANN201
    """Set the CPU flags that hardware sees."""
    def set_flags(*flags: str) -> None:
        monkeypatch.setattr(hardware, "_cpu_flags", lambda: frozenset(flags))
    return set_flags


@pytest.mark.parametrize(("flags", "want"), [
    (("avx2", "fma"), "fp32"),                       # most laptops: bf16 is emulated there
    (("avx2", "avx512f", "avx512bw"), "fp32"),       # AVX-512 without BF16: slower in bf16 (measured)
    (("avx512f", "avx512_bf16"), "bf16"),
    (("avx512f", "amx_bf16", "amx_tile"), "bf16"),
    ((), "fp32"),                                    # no /proc/cpuinfo
])
def test_auto_picks_bf16_only_with_native_bfloat16(cpu, flags: tuple[str, ...], want: str) -> None:  # noqa: ANN001
    cpu(*flags)
    assert hardware.resolve_precision("auto", "cpu") == want


def test_explicit_bf16_on_a_cpu_without_it_is_kept_with_a_warning(cpu, caplog: pytest.LogCaptureFixture) -> None:  # noqa: ANN001
    cpu("avx2")
    with caplog.at_level(logging.WARNING, logger="medsat_sr"):
        assert hardware.resolve_precision("bf16", "cpu") == "bf16"
    assert any("without native bfloat16" in r.getMessage() and "slower than fp32" in r.getMessage()
               for r in caplog.records)


def test_explicit_choices_on_a_native_cpu_pass_silently(cpu, caplog: pytest.LogCaptureFixture) -> None:  # noqa: ANN001
    cpu("avx512_bf16")
    with caplog.at_level(logging.WARNING, logger="medsat_sr"):
        assert hardware.resolve_precision("bf16", "cpu") == "bf16"
        assert hardware.resolve_precision("fp32", "cpu") == "fp32"
    assert not caplog.records


def test_auto_on_cuda_follows_the_device_not_the_cpu(cpu, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    import torch

    cpu("avx512_bf16")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert hardware.resolve_precision("auto", "cuda") == "fp32"


_FAULTS = """
import resource, sys, torch
from medsat_sr import hardware
tuned = hardware.tune_allocator() if sys.argv[1] == "tune" else False
torch.set_num_threads(1)  # every allocation in the main arena: the same count run after run
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
x = torch.ones(4, 16, 256, 256)  # 16 MiB of features
w = torch.full((16, 16, 3, 3), 0.01)
def blocks():  # a residual chain, as a network's forward pass allocates and frees its feature maps
    y = x
    for _ in range(4):
        y = torch.nn.functional.conv2d(y, w, padding=1) + y
    return y
blocks()
before = faults()
for _ in range(3):
    blocks()
print(tuned, faults() - before)
"""


def _page_faults(mode: str, env: dict[str, str] | None = None) -> tuple[bool, int]:
    import os
    import subprocess
    import sys

    run_env = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "GLIBC_TUNABLES"))}
    run_env.update(env or {})
    out = subprocess.run([sys.executable, "-c", _FAULTS, mode], capture_output=True, text=True, check=True,
                         env=run_env).stdout.split()
    return out[0] == "True", int(out[1])


@pytest.mark.skipif(not __import__("sys").platform.startswith("linux"), reason="mallopt is glibc's (Linux)")
def test_tuned_allocator_reuses_freed_tensor_memory_instead_of_faulting_it_in_again() -> None:
    tuned, faults = _page_faults("tune")
    if not tuned:
        pytest.skip("this libc has no glibc mallopt")
    _, default_faults = _page_faults("default")
    # 24 fresh 16 MiB feature maps fault in about 85 000 pages by default (fewer where the kernel backs some with
    # huge pages: 37 000 seen on a loaded machine); reused heap blocks, almost none
    assert default_faults > 10_000, default_faults
    assert faults < 2_000 and faults * 15 < default_faults, (faults, default_faults)


def test_the_users_own_malloc_settings_are_left_alone() -> None:
    tuned, _ = _page_faults("tune", {"MALLOC_MMAP_THRESHOLD_": "131072"})
    assert tuned is False


def test_upscale_tunes_malloc_for_volumes_only(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:  # noqa: ANN001
    """Volumes gain (benchmarks/allocator.py: 0.74x the time); rasters would only hold more memory (1.31x)."""
    import nibabel as nib
    import numpy as np
    import rasterio
    from rasterio.transform import from_origin

    from medsat_sr.cli.upscale import _tune_allocator_for

    vol = tmp_path / "v.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.float32), np.eye(4)), str(vol))
    tif = tmp_path / "r.tif"
    with rasterio.open(tif, "w", driver="GTiff", width=4, height=4, count=1, dtype="uint8",
                       crs="EPSG:32633", transform=from_origin(0, 4, 1, 1)) as dst:
        dst.write(np.zeros((1, 4, 4), np.uint8))
    calls: list[int] = []
    monkeypatch.setattr(hardware, "tune_allocator", lambda: calls.append(1) or True)
    _tune_allocator_for([str(tif)])
    _tune_allocator_for([str(tmp_path / "missing.nii.gz")])  # the reader reports it later
    assert calls == []
    _tune_allocator_for([str(vol), str(vol)])  # several stacks: the multi-stack solver is left to glibc
    assert calls == []
    _tune_allocator_for([str(vol)])
    assert calls == [1]

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

"""Transfer-learning helpers: freeze parts of a generator, adapt its channel counts.

Every generator (:class:`~medsat_sr.models.base.SRModel`) names its parts the
same way, which these helpers rely on:

* ``input_conv`` (and ``input_act`` where it has parameters): the head;
* ``blocks``: the repeated units (EDSR/SRResNet/guided residual blocks, RCAN
  residual groups, DCSRN dense stages);
* the rest of the body (``body_conv``, ``fusion``, ...);
* ``upsampler`` (learned voxel shuffle; empty with ``upsample="pre"``) and
  ``output_conv``: the reconstruction.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from medsat_sr.errors import ModelError
from medsat_sr.models._checks import check_int
from medsat_sr.models.base import SRModel

__all__ = ["freeze_blocks", "freeze_body", "unfreeze", "adapt_channels"]

_RECONSTRUCTION = ("upsampler.", "output_conv.")
_HEAD = ("input_conv.", "input_act.")


def _require_srmodel(model: Any, fn: str) -> SRModel:
    if not isinstance(model, SRModel):
        raise ModelError(f"{fn} needs a medsat_sr generator (SRModel), got {type(model).__name__}")
    return model


def _freeze(model: nn.Module, prefixes: tuple[str, ...] | None, keep: tuple[str, ...]) -> list[str]:
    frozen = []
    for name, p in model.named_parameters():
        hit = name.startswith(prefixes) if prefixes is not None else not name.startswith(keep)
        if hit:
            p.requires_grad_(False)
            frozen.append(name)
    return frozen


def freeze_blocks(model: SRModel, n: int) -> list[str]:
    """Freeze the head and the first ``n`` entries of ``model.blocks``.

    ``n = 0`` freezes nothing; ``n >= 1`` freezes the head (``input_conv``)
    together with the first ``n`` blocks (for RCAN, residual groups; for
    DCSRN, dense stages). Pass the trainable parameters to the optimiser
    afterwards (``[p for p in model.parameters() if p.requires_grad]``).

    Args:
        model: a generator.
        n: number of blocks, ``0 <= n <= len(model.blocks)``.

    Returns:
        The names of the parameters frozen.

    Raises:
        ModelError: not a generator, or ``n`` out of range.
    """
    model = _require_srmodel(model, "freeze_blocks")
    n = check_int("n", n, 0)
    if n > len(model.blocks):
        raise ModelError(f"n must be <= {len(model.blocks)} (the model's blocks), got {n}")
    if n == 0:
        return []
    prefixes = _HEAD + tuple(f"blocks.{i}." for i in range(n))
    return _freeze(model, prefixes, ())


def freeze_body(model: SRModel) -> list[str]:
    """Freeze everything except the reconstruction (``upsampler`` and ``output_conv``).

    With ``upsample="pre"`` (and for the guided net) that leaves only
    ``output_conv`` trainable.

    Returns:
        The names of the parameters frozen.

    Raises:
        ModelError: not a generator.
    """
    model = _require_srmodel(model, "freeze_body")
    return _freeze(model, None, _RECONSTRUCTION)


def unfreeze(model: nn.Module) -> None:
    """Make every parameter trainable again."""
    for p in model.parameters():
        p.requires_grad_(True)


def _adapt_in(weight: torch.Tensor, old: int, new: int, extra: int) -> torch.Tensor:
    """Map the first ``old`` input channels of ``weight`` to ``new``; keep ``extra`` after."""
    w_main, w_extra = weight[:, :old], weight[:, old : old + extra]
    m = torch.zeros(new, old, dtype=weight.dtype)
    if new >= old:
        idx = torch.arange(new) % old
        counts = torch.bincount(idx, minlength=old).to(weight.dtype)
        m[torch.arange(new), idx] = 1.0 / counts[idx]
    else:
        m[torch.arange(old) % new, torch.arange(old)] = 1.0
    adapted = torch.einsum("fo...,no->fn...", w_main, m.to(weight.device))
    return torch.cat([adapted, w_extra], dim=1).contiguous()


def adapt_channels(
    source: SRModel | Mapping[str, torch.Tensor],
    new_in: int | None = None,
    new_out: int | None = None,
    *,
    guide_channels: int = 0,
) -> SRModel | dict[str, torch.Tensor]:
    """Adapt the first and last convolution to new channel counts.

    Input side (``input_conv``): new channel ``i`` takes old channel
    ``i % old`` and, when channels are added, the weights of each old channel
    are divided by the number of its copies (``old / new`` when ``new`` is a
    multiple of ``old``). So activations keep their magnitude, and a model
    adapted from 1 to 3 channels gives on three identical channels exactly
    what the original gave on one. When channels are removed, the weights of
    old channel ``j`` add onto new channel ``j % new`` (the adapted model on
    ``x`` equals the original on ``x`` tiled to the old count).

    Output side (``output_conv``): new output ``i`` repeats the filter and
    bias of old output ``i % old`` (the first ``new`` when shrinking).

    Guide bands of the guided net are kept as they are.

    Args:
        source: a generator (a new, adapted generator is returned; the
            original is untouched) or its ``state_dict`` (a new dict is returned).
        new_in: new input channel count (coarse bands for the guided net);
            ``None`` keeps it.
        new_out: new output channel count; ``None`` keeps it.
        guide_channels: state-dict mode only: how many trailing input
            channels of ``input_conv`` are guide bands (read from the model
            otherwise).

    Returns:
        The adapted generator, or the adapted state dict.

    Raises:
        ModelError: invalid counts, or a state dict without
            ``input_conv.weight`` / ``output_conv.weight``.
    """
    if isinstance(source, SRModel):
        model = source
        state = model.state_dict()
        guide = getattr(model, "guide_channels", 0)
        new_state = adapt_channels(state, new_in, new_out, guide_channels=guide)
        kwargs = dict(model.config["kwargs"])
        kwargs["in_channels"] = new_state["input_conv.weight"].shape[1] - guide
        kwargs["out_channels"] = new_state["output_conv.weight"].shape[0]
        from medsat_sr.models import build_model  # local: avoid an import cycle

        adapted = build_model(model.config["name"], **kwargs)
        adapted.load_state_dict(new_state)
        ref = next(model.parameters())
        adapted.to(device=ref.device, dtype=ref.dtype)
        adapted.train(model.training)
        return adapted
    if not isinstance(source, Mapping):
        raise ModelError(
            f"adapt_channels needs a generator or a state dict, got {type(source).__name__}"
        )
    missing = [k for k in ("input_conv.weight", "output_conv.weight") if k not in source]
    if missing:
        raise ModelError(
            f"adapt_channels: state dict has no {missing} (keys start with "
            f"{sorted(source)[:5]}...); is it a medsat_sr generator's state dict?"
        )
    guide_channels = check_int("guide_channels", guide_channels, 0)
    w_in = source["input_conv.weight"]
    old_in = w_in.shape[1] - guide_channels
    if old_in < 1:
        raise ModelError(
            f"guide_channels={guide_channels} leaves no input channel in input_conv "
            f"({w_in.shape[1]} channels)"
        )
    w_out = source["output_conv.weight"]
    old_out = w_out.shape[0]
    new_in = old_in if new_in is None else check_int("new_in", new_in, 1)
    new_out = old_out if new_out is None else check_int("new_out", new_out, 1)

    out: dict[str, torch.Tensor] = OrderedDict(source)
    with torch.no_grad():
        if new_in != old_in:
            out["input_conv.weight"] = _adapt_in(w_in, old_in, new_in, guide_channels)
        if new_out != old_out:
            idx = torch.arange(new_out, device=w_out.device) % old_out
            out["output_conv.weight"] = w_out[idx].clone()
            if "output_conv.bias" in source:
                out["output_conv.bias"] = source["output_conv.bias"][idx].clone()
    return out

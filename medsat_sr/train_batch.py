"""A training or validation batch as the networks and the scores take it.

:func:`prepare_batch` unpacks a batch dict into MONAI's ``(inputs, targets, args, kwargs)``;
:func:`only_valid` keeps nodata out of a prediction's score. Shared by the trainer
(:mod:`medsat_sr.engine`), its handlers (:mod:`medsat_sr.engine_handlers`) and :mod:`medsat_sr.train`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

__all__ = ["prepare_batch", "only_valid"]


def prepare_batch(batchdata: Mapping[str, Any], device: torch.device | None = None,
                   non_blocking: bool = False, **kwargs: Any) -> tuple[Any, Any, tuple, dict]:
    """``(lr, hr, (guide,), {"output_size": ...})`` for MONAI's engines."""
    x = batchdata["image"].to(device=device, non_blocking=non_blocking)
    y = batchdata["label"].to(device=device, non_blocking=non_blocking)
    args: tuple = ()
    kw: dict[str, Any] = {}
    if batchdata.get("guide") is not None:
        args = (batchdata["guide"].to(device=device, non_blocking=non_blocking),)
    if batchdata.get("output_size") is not None:
        kw["output_size"] = tuple(int(v) for v in batchdata["output_size"])
    return x, y, args, kw


def only_valid(pred: torch.Tensor, batch: Mapping[str, Any]) -> torch.Tensor:
    """``pred`` with the reference copied in where the batch's ``valid`` mask is false (nodata scores no error).

    Validation tiles hold at least ``data.min_valid_fraction`` valid pixels;
    their nodata pixels then add nothing to the error of the network or of
    the baselines, so a nodata collar cannot decide model against cubic.
    """
    valid = batch.get("valid") if isinstance(batch, Mapping) else None
    if valid is None:
        return pred
    label = batch["label"].to(pred.device)
    return torch.where(valid.to(pred.device), pred, label.to(pred.dtype))

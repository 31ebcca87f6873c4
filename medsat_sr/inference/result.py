"""What :func:`medsat_sr.inference.upscale` returns, whatever the route (single input, multi-input, pan-sharpening)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medsat_sr.inference.plan import Decision

if TYPE_CHECKING:
    from monai.data import MetaTensor

__all__ = ["UpscaleResult"]


@dataclass
class UpscaleResult:
    """What :func:`upscale` returns.

    Attributes:
        image: the super-resolved image (volume MetaTensor, raster MetaTensor,
            or for band sets a raster holding every band on the finest
            grid); ``None`` when a raster was streamed to ``output``.
        std: the per-voxel standard deviation across ensemble members
            (same grid and band order as ``image``), when asked and not streamed.
        record: the trust record (also written as the sidecar), as a dict.
        output: the written output, if any.
        std_output: the written standard-deviation map, if any.
        sidecar: the written JSON record, if any.
        decision: the model-or-classical decision.
    """

    image: MetaTensor | None
    std: MetaTensor | None
    record: dict[str, Any]
    output: Path | None = None
    std_output: Path | None = None
    sidecar: Path | None = None
    decision: Decision | None = None

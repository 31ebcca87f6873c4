"""Upscaling: one plan, then one run (see ARCHITECTURE.md).

* :mod:`.options`: the upscale options, declared once;
* :mod:`.plan`: input + options + model -> an explicit, validated plan;
* :mod:`.members`: checkpoints, self-supervised fits and ensembles;
* :mod:`.volume` / :mod:`.raster`: the two ways of running a plan;
* :mod:`.record`: the trust record;
* :mod:`.api`: :func:`upscale`.

The names below load lazily, so that ``medsat_sr.inference.options`` (pure
declarations) can be imported without torch.
"""

from __future__ import annotations

from typing import Any

__all__ = ["upscale", "UpscaleResult", "apply_slicewise", "apply_inplane", "native_bf16"]

_LAZY = {
    "upscale": "medsat_sr.inference.api",
    "UpscaleResult": "medsat_sr.inference.result",
    "apply_slicewise": "medsat_sr.slicewise",
    "apply_inplane": "medsat_sr.slicewise",
    "native_bf16": "medsat_sr.inference.members",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'medsat_sr.inference' has no attribute {name!r}")

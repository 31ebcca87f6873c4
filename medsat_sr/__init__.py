"""medsat_sr: super-resolution of medical volumes and satellite imagery with exact geometry.

The curated API:

* :func:`read` / :func:`write`: format-aware I/O (DICOM, NIfTI, GeoTIFF/COG).
* :func:`upscale`: super-resolve a volume or a raster with a model, an
  ensemble, a self-supervised fit or a classical method (:mod:`medsat_sr.inference`).

The error classes are imported at once (:mod:`medsat_sr.errors` is standard
library only); ``read``, ``write``, ``upscale``, ``UpscaleResult`` and
``BandSet`` load on first use (PEP 562), so ``import medsat_sr`` (and the
``medsat-sr`` command's ``--help``) does not load torch, MONAI or rasterio.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from medsat_sr._version import __version__
from medsat_sr.errors import (
    ConfigError,
    DataError,
    FormatError,
    GeometryError,
    MedsatError,
    ModelError,
    TiltError,
    WriteError,
)

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from medsat_sr.image import BandSet
    from medsat_sr.inference import UpscaleResult, upscale
    from medsat_sr.io import read, write

__all__ = [
    "__version__",
    "read",
    "write",
    "upscale",
    "UpscaleResult",
    "BandSet",
    "MedsatError",
    "FormatError",
    "GeometryError",
    "TiltError",
    "ConfigError",
    "ModelError",
    "DataError",
    "WriteError",
]

#: Lazily loaded names -> the module that defines them.
_LAZY = {
    "read": "medsat_sr.io",
    "write": "medsat_sr.io",
    "upscale": "medsat_sr.inference.api",
    "UpscaleResult": "medsat_sr.inference.api",
    "BandSet": "medsat_sr.image",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        # AttributeError (not ImportError) lets `from medsat_sr import baselines` import the submodule.
        raise AttributeError(f"module 'medsat_sr' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))

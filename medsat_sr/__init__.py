"""medsat_sr: super-resolution of medical volumes and satellite imagery with exact geometry.

The curated API:

* :func:`read` / :func:`write`: format-aware I/O (DICOM, NIfTI, GeoTIFF/COG).
* :func:`upscale`: super-resolve a volume or a raster with a model, an
  ensemble, a self-supervised fit or a classical method (:mod:`medsat_sr.inference`).
"""

from __future__ import annotations

from medsat_sr._version import __version__

from medsat_sr.errors import (  # noqa: E402
    ConfigError,
    DataError,
    FormatError,
    GeometryError,
    MedsatError,
    ModelError,
    WriteError,
)
from medsat_sr.image import BandSet  # noqa: E402
from medsat_sr.io import read, write  # noqa: E402
from medsat_sr.inference import UpscaleResult, upscale  # noqa: E402

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
    "ConfigError",
    "ModelError",
    "DataError",
    "WriteError",
]

"""GDAL settings and error handling shared by the GeoTIFF reader, writer and band folders.

Holds :func:`gdal_env` (the :class:`rasterio.Env` every read and write runs
in), :data:`GDAL_CACHEMAX_MB`, :data:`RASTERIO_ERRORS` (the exception types
GDAL/rasterio raise) and ``_describe`` (an exception as one message). Used by
:mod:`medsat_sr.io.geotiff_read`, :mod:`medsat_sr.io.geotiff_write`,
:mod:`medsat_sr.io.geotiff_bandset` and the streaming raster reader/writer in
:mod:`medsat_sr.inference`; re-exported from :mod:`medsat_sr.io.geotiff`.

GDAL's block cache defaults to 5% of RAM (about 900 MB to 1.2 GB on a
typical worker); every read and write runs in a :func:`gdal_env` that
caps it at :data:`GDAL_CACHEMAX_MB` unless ``GDAL_CACHEMAX`` is set in the
environment.
"""

from __future__ import annotations

import os
from typing import Any

import rasterio
import rasterio.errors

try:  # rasterio's GDAL error base class (not re-exported by rasterio.errors)
    from rasterio._err import CPLE_BaseError
except ImportError:  # pragma: no cover - layout of older/newer rasterio
    CPLE_BaseError = rasterio.errors.RasterioError  # type: ignore[misc,assignment]

__all__ = ["gdal_env", "GDAL_CACHEMAX_MB", "RASTERIO_ERRORS"]

#: GDAL block cache cap (MB) for reads and writes, unless GDAL_CACHEMAX is set in the environment.
GDAL_CACHEMAX_MB = 256

RASTERIO_ERRORS: tuple[type[BaseException], ...] = (rasterio.errors.RasterioError, CPLE_BaseError)


def gdal_env(**options: Any) -> rasterio.Env:
    """A :class:`rasterio.Env` with medsat_sr's GDAL settings.

    * ``GDAL_CACHEMAX``: :data:`GDAL_CACHEMAX_MB` MB unless the environment sets it;
    * ``GTIFF_POINT_GEO_IGNORE=FALSE``: PixelIsPoint rasters get GDAL's
      half-pixel shift, so transforms always map pixel corners.

    Args:
        **options: further GDAL config options, overriding the defaults.
    """
    opts: dict[str, Any] = {"GTIFF_POINT_GEO_IGNORE": False}
    if "GDAL_CACHEMAX" not in os.environ:
        opts["GDAL_CACHEMAX"] = int(GDAL_CACHEMAX_MB) * 2**20  # rasterio passes an int as bytes
    opts.update(options)
    return rasterio.Env(**opts)


def _describe(exc: BaseException) -> str:
    msg = str(exc) or type(exc).__name__
    cause = exc.__cause__ or exc.__context__
    if cause is not None and str(cause) and str(cause) not in msg:
        msg = f"{msg} ({cause})"
    return msg

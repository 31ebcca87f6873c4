"""GeoTIFF / COG reader and writer (rasterio, GDAL as the reference).

This module is the GeoTIFF API that :mod:`medsat_sr.io` dispatches to; the
code lives in four modules by concern, each documenting its contract:

* :mod:`medsat_sr.io.geotiff_read`: :func:`read` (one file, whole or a
  window; values, meta, PixelIsPoint, windows past the edges) and
  :func:`as_window`;
* :mod:`medsat_sr.io.geotiff_write`: :func:`write` (tiled, compressed GTiff
  or COG, atomic; the dtype policy of DESIGN.md §3) and the pieces a
  streaming (window by window) writer reuses: :func:`build_profile`,
  :func:`encode_values`, :func:`open_writer`, :func:`apply_metadata`;
* :mod:`medsat_sr.io.geotiff_bandset`: band folders of single-band files
  (:func:`band_files`, :func:`read_bandset`, :func:`write_bandset`), grouped
  by grid, bands in sensor order (:func:`medsat_sr.domains.band_sort_key`),
  never resampled;
* :mod:`medsat_sr.io.geotiff_gdal`: :func:`gdal_env` (GDAL's block cache
  capped at :data:`GDAL_CACHEMAX_MB` unless ``GDAL_CACHEMAX`` is set in the
  environment; PixelIsPoint shift kept) and :data:`RASTERIO_ERRORS`.

Every name of :data:`__all__` is importable from here. All four log as
``medsat_sr.io.geotiff``.
"""

from __future__ import annotations

from medsat_sr.domains import band_sort_key  # band order comes from the sensor profiles' band_patterns
from medsat_sr.io.geotiff_bandset import AUX_LAYERS, SUFFIXES, band_files, read_bandset, write_bandset
from medsat_sr.io.geotiff_gdal import GDAL_CACHEMAX_MB, RASTERIO_ERRORS, gdal_env
from medsat_sr.io.geotiff_read import as_window, read
from medsat_sr.io.geotiff_write import (
    COMPRESSIONS,
    DTYPES,
    apply_metadata,
    build_profile,
    encode_values,
    open_writer,
    write,
)

__all__ = [
    "read",
    "write",
    "read_bandset",
    "write_bandset",
    "band_files",
    "band_sort_key",
    "as_window",
    "build_profile",
    "encode_values",
    "open_writer",
    "apply_metadata",
    "gdal_env",
    "GDAL_CACHEMAX_MB",
    "RASTERIO_ERRORS",
    "AUX_LAYERS",
    "DTYPES",
    "COMPRESSIONS",
    "SUFFIXES",
]

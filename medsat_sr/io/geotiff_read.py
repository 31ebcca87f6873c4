"""GeoTIFF / COG reader: one file, whole or a window, as a raster.

Also reads JPEG 2000 (Sentinel-2 SAFE bands) and VRT files through the same
GDAL route (:data:`READ_DRIVERS`); the module keeps its GeoTIFF name.

Holds :func:`read`, :func:`as_window` and the window, band-selection, nodata
and header helpers behind them. Used by :mod:`medsat_sr.io.geotiff_bandset`
(one file per band), :mod:`medsat_sr.revisit` and :mod:`medsat_sr.inference`;
re-exported from :mod:`medsat_sr.io.geotiff` (and dispatched to by
:func:`medsat_sr.io.read`). Warnings log as ``medsat_sr.io.geotiff``.

Reading (:func:`read`) gives a raster (see :mod:`medsat_sr.image`):

* data: float32 ``(C, H, W)``. When the file declares scale/offset, values
  are physical (``raw * scale + offset``), applied only where the pixel is
  not nodata; nodata pixels keep the raw nodata value. Without scale/offset
  the raw values are cast to float32 (exact for 8/16-bit data and for
  integers up to 2**24).
* meta ``transform``: the corner transform (PixelIsArea) of the window read;
  ``crs``: WKT or ``None`` (allowed, with a warning); ``nodata``;
  ``band_names``: band descriptions, else ``"band<i>"`` (1-based index in
  the file); ``scales``/``offsets``: per band, ``None`` when all are 1/0;
  ``source_dtype``; ``header``: a plain dict of what the writer needs
  (see :func:`read`).
* ``valid_mask``: for files with an internal (per-dataset) mask or an alpha
  band only, a ``(H, W)`` bool array of the window, ``True`` where valid.
  An alpha band (an RGBA orthophoto's fourth band) is that mask, not data:
  it is left out of the bands unless ``bands`` names it
  (``header["alpha_band"]`` says which it was).

PixelIsPoint: GDAL reads ``AREA_OR_POINT=Point`` GeoTIFFs and shifts the
geotransform by half a pixel so it still maps pixel *corners*; on write,
with the tag kept, it shifts back and stores the original tie point. The
reader forces ``GTIFF_POINT_GEO_IGNORE=FALSE`` so this holds whatever the
user's environment says, records ``header["area_or_point"]``, and the
writer keeps the tag: the corner contract of DESIGN.md §3 holds and a round
trip stores the same tie point as the source.

Windows: a :class:`rasterio.windows.Window` or ``((row0, row1), (col0,
col1))`` with integer bounds (fractional windows would resample). Windows
may extend past the raster (halos for tiling): pixels outside are filled
with the nodata value, or 0 when the file has none (then
``header["window"]`` and ``header["source_shape"]`` tell which pixels are
real), and ``valid_mask`` marks them invalid.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from monai.data import MetaTensor
from rasterio.enums import ColorInterp, Resampling
from rasterio.transform import Affine
from rasterio.windows import Window

from medsat_sr.errors import ConfigError, DataError, FormatError, GeometryError
from medsat_sr.image import make_raster
from medsat_sr.io.bandset_files import SAFE_NODATA, band_name, safe_baseline
from medsat_sr.io.geotiff_gdal import RASTERIO_ERRORS, _describe, gdal_env

__all__ = ["read", "as_window", "file_nodata", "READ_DRIVERS"]

logger = logging.getLogger("medsat_sr.io.geotiff")  # the name users and tests know (caplog)

#: The GDAL drivers :func:`read` takes: GeoTIFF and COG; JPEG 2000, the
#: format of Sentinel-2's SAFE products (``GRANULE/*/IMG_DATA/*_B02.jp2``);
#: and GDAL's virtual rasters (``gdalbuildvrt`` mosaics and band stacks).
#: Their suffixes are :data:`medsat_sr.io.RASTER_SUFFIXES`. Outputs are always GeoTIFF.
READ_DRIVERS: frozenset[str] = frozenset({"GTiff", "JP2OpenJPEG", "VRT"})


def file_nodata(src: Any, path: Path) -> float | None:
    """The nodata value of an open file: what it declares, or ESA's 0 for a Sentinel-2 product's band.

    A SAFE product's JPEG 2000 bands declare none; ESA's product
    specification makes DN 0 NODATA (:data:`~medsat_sr.io.bandset_files.SAFE_NODATA`).
    """
    if src.nodata is None and band_name(path) != path.stem:
        return SAFE_NODATA
    return src.nodata


def _check_readable(path: Path) -> None:
    if not path.exists():
        raise DataError(f"{path}: no such file")
    if not path.is_file():
        raise DataError(f"{path}: not a file")
    if not os.access(path, os.R_OK):
        raise DataError(f"{path}: file is not readable (permission denied)")


def as_window(window: Window | Sequence[Sequence[int]] | None) -> Window | None:
    """Normalise a window argument to an integer :class:`~rasterio.windows.Window`.

    Args:
        window: ``None``, a rasterio ``Window``, or ``((row0, row1), (col0, col1))``
            (half-open, may extend past the raster).

    Returns:
        The window with integer offsets and sizes, or ``None``.

    Raises:
        GeometryError: malformed, empty, or fractional window.
    """
    if window is None:
        return None
    if isinstance(window, Window):
        vals = (window.col_off, window.row_off, window.width, window.height)
    else:
        try:
            (r0, r1), (c0, c1) = window  # type: ignore[misc]
            vals = (float(c0), float(r0), float(c1) - float(c0), float(r1) - float(r0))
        except (TypeError, ValueError) as exc:
            raise GeometryError(
                f"window must be a rasterio Window or ((row0, row1), (col0, col1)), got {window!r}"
            ) from exc
    if not all(math.isfinite(v) and abs(v - round(v)) < 1e-9 for v in vals):
        raise GeometryError(f"window offsets and sizes must be integers (no resampling), got {vals}")
    col_off, row_off, width, height = (int(round(v)) for v in vals)
    if width < 1 or height < 1:
        raise GeometryError(f"window must be at least 1x1 pixel, got width={width}, height={height}")
    return Window(col_off, row_off, width, height)


#: Share of an alpha band's (sampled) pixels that must be 0 or the dtype's maximum for it to be read as a mask.
ALPHA_MASK_SHARE = 0.99


def alpha_bands(src: Any) -> list[int]:
    """The 1-based indexes of an open dataset's alpha bands (RGBA orthophotos): a validity mask, not data.

    A band is one when GDAL masks the dataset with it (colour interpretation
    ``alpha`` and mask flags ``alpha``, so no nodata value overrides it) and
    its values look like a mask: at least :data:`ALPHA_MASK_SHARE` of them
    (read at up to 256 x 256) are 0 or the dtype's maximum. GDAL's GTiff
    driver marks the fourth band of any 4-band byte file written without
    ``PHOTOMETRIC`` as alpha, so the NIR band of an RGBN file without nodata
    carries the same flags; its values tell it apart.
    """
    out = []
    for i, c in enumerate(src.colorinterp):
        if c != ColorInterp.alpha or "alpha" not in {f.name for f in src.mask_flag_enums[0]}:
            continue
        dt = np.dtype(src.dtypes[i])
        if dt.kind not in "ui":
            continue
        h, w = min(src.height, 256), min(src.width, 256)
        v = src.read(i + 1, out_shape=(h, w), resampling=Resampling.nearest)
        if np.isin(v, (0, np.iinfo(dt).max)).mean() >= ALPHA_MASK_SHARE:
            out.append(i + 1)
    return out


def is_paletted(path: str | os.PathLike[str]) -> bool:
    """Whether a GeoTIFF's first band is paletted (a colour table over class labels, such as a land-cover map).

    A file GDAL cannot open is not (the reader then says what is wrong with it).
    """
    try:
        with gdal_env(), rasterio.open(path) as src:
            return paletted(src)
    except RASTERIO_ERRORS:
        return False


def paletted(src: Any) -> bool:
    """Whether an open dataset's first band is paletted (the rule of :func:`is_paletted`)."""
    return bool(src.colorinterp[0] == ColorInterp.palette)


def has_dataset_mask(src: Any, alpha: Sequence[int]) -> bool:
    """Whether an open dataset keeps its validity in a mask: an internal mask, or an alpha band of ``alpha``.

    ``alpha``: what :func:`alpha_bands` found. A nodata value is read from
    the pixels instead (GDAL flags it too), and a band GDAL would take for
    alpha that does not look like a mask is data, not a mask.
    """
    flags = {f.name for f in src.mask_flag_enums[0]}
    if "nodata" in flags or "per_dataset" not in flags:
        return False
    return bool(alpha) or "alpha" not in flags


def _band_indexes(src: Any, bands: Sequence[int | str] | None, path: Path, alpha: Sequence[int] = ()) -> list[int]:
    names = [d or f"band{i + 1}" for i, d in enumerate(src.descriptions)]
    if bands is None:  # every band but an alpha band (``alpha``), which is read as the validity mask
        return [i for i in range(1, src.count + 1) if i not in alpha] or list(range(1, src.count + 1))
    if isinstance(bands, (str, int)):
        bands = [bands]
    out: list[int] = []
    for b in bands:
        if isinstance(b, (bool, np.bool_)):
            raise ConfigError(f"{path}: band must be a 1-based index or a name, got {b!r}")
        if isinstance(b, (int, np.integer)):
            if not 1 <= int(b) <= src.count:
                raise ConfigError(f"{path}: band index {int(b)} out of range; expected 1..{src.count}")
            out.append(int(b))
        elif isinstance(b, str):
            if b not in names:
                raise ConfigError(f"{path}: no band named {b!r}; bands are {names}")
            out.append(names.index(b) + 1)
        else:
            raise ConfigError(f"{path}: band must be a 1-based index or a name, got {type(b).__name__}")
    if not out:
        raise ConfigError(f"{path}: bands selects nothing; expected at least one of {names}")
    return out


def _fill_value(nodata: float | None, dtype: str) -> Any:
    """The value for pixels outside the raster: nodata, or 0 without one (or when it does not fit)."""
    if nodata is None:
        return 0
    dt = np.dtype(dtype)
    if dt.kind == "f":
        return float(nodata)
    if math.isnan(nodata) or nodata != round(nodata):
        return 0
    info = np.iinfo(dt)
    return int(nodata) if info.min <= nodata <= info.max else 0


def _read_window(src: Any, indexes: list[int], win: Window, fill: Any) -> np.ndarray:
    """Read ``win`` (possibly past the edges) with pixels outside set to ``fill``."""
    h, w = int(src.height), int(src.width)
    r0, c0, wh, ww = int(win.row_off), int(win.col_off), int(win.height), int(win.width)
    rr0, rr1 = max(r0, 0), min(r0 + wh, h)
    cc0, cc1 = max(c0, 0), min(c0 + ww, w)
    inside = rr1 > rr0 and cc1 > cc0
    if inside and (rr0, rr1, cc0, cc1) == (r0, r0 + wh, c0, c0 + ww):
        return src.read(indexes, window=win)
    out = np.full((len(indexes), wh, ww), fill, dtype=src.dtypes[indexes[0] - 1])
    if inside:
        out[:, rr0 - r0 : rr1 - r0, cc0 - c0 : cc1 - c0] = src.read(
            indexes, window=Window(cc0, rr0, cc1 - cc0, rr1 - rr0)
        )
    return out


def _read_mask(src: Any, win: Window) -> np.ndarray:
    h, w = int(src.height), int(src.width)
    r0, c0, wh, ww = int(win.row_off), int(win.col_off), int(win.height), int(win.width)
    rr0, rr1 = max(r0, 0), min(r0 + wh, h)
    cc0, cc1 = max(c0, 0), min(c0 + ww, w)
    out = np.zeros((wh, ww), dtype=bool)
    if rr1 > rr0 and cc1 > cc0:
        m = src.dataset_mask(window=Window(cc0, rr0, cc1 - cc0, rr1 - rr0))
        out[rr0 - r0 : rr1 - r0, cc0 - c0 : cc1 - c0] = m > 0
    return out


def _nodata_mask(raw: np.ndarray, nodata: float | None) -> np.ndarray:
    if nodata is None:
        return np.zeros(raw.shape, dtype=bool)
    if isinstance(nodata, float) and math.isnan(nodata):
        return np.isnan(raw) if raw.dtype.kind == "f" else np.zeros(raw.shape, dtype=bool)
    return raw == nodata


def _header(src: Any, indexes: list[int], win: Window, alpha: Sequence[int]) -> dict[str, Any]:
    ims = src.tags(ns="IMAGE_STRUCTURE")
    ci = list(src.colorinterp)
    header: dict[str, Any] = {
        "driver": src.driver,
        "tags": dict(src.tags()),
        "band_tags": [dict(src.tags(i)) for i in indexes],
        "descriptions": [src.descriptions[i - 1] for i in indexes],
        "colorinterp": [ci[i - 1].name for i in indexes],
        "units": [src.units[i - 1] for i in indexes],
        "dtypes": [src.dtypes[i - 1] for i in indexes],
        "mask_flags": [[f.name for f in src.mask_flag_enums[i - 1]] for i in indexes],
        "colormap": None,
        "compression": (ims.get("COMPRESSION") or "").lower() or None,
        "predictor": ims.get("PREDICTOR"),
        "interleave": (ims.get("INTERLEAVE") or "").lower() or None,
        "layout": ims.get("LAYOUT"),
        "photometric": src.photometric.name if src.photometric is not None else None,
        "block_shape": tuple(int(v) for v in src.block_shapes[indexes[0] - 1]),
        "overviews": list(src.overviews(indexes[0])),
        "area_or_point": src.tags().get("AREA_OR_POINT", "Area"),
        "band_indexes": list(indexes),
        "alpha_band": next((i for i in alpha if i not in indexes), None),  # read as valid_mask
        "source_shape": (int(src.height), int(src.width)),
        "window": (int(win.row_off), int(win.col_off), int(win.height), int(win.width)),
    }
    if ci[indexes[0] - 1] == ColorInterp.palette:
        with contextlib.suppress(ValueError, *RASTERIO_ERRORS):
            header["colormap"] = {int(k): tuple(int(c) for c in v) for k, v in src.colormap(indexes[0]).items()}
    return header


def _read_open(src: Any, path: Path, win: Window | None, bands: Sequence[int | str] | None) -> MetaTensor:
    if src.driver not in READ_DRIVERS:
        raise FormatError(f"{path}: GDAL reads this file as {src.driver}; medsat_sr reads GeoTIFF, JPEG 2000 "
                          "and VRT rasters (convert it first: gdal_translate -of GTiff)")
    alpha = alpha_bands(src)
    indexes = _band_indexes(src, bands, path, alpha)
    if src.transform.is_identity and src.gcps[0]:
        raise GeometryError(
            f"{path}: georeferenced by {len(src.gcps[0])} ground control points, not a geotransform; "
            "warp it to a grid first (gdalwarp)"
        )
    if src.rpcs is not None and src.transform.is_identity:
        raise GeometryError(f"{path}: georeferenced by RPCs only; orthorectify it first (gdalwarp -rpc)")
    if src.crs is None:
        logger.warning("%s: no CRS; reading with crs=None (transform kept as stored)", path)
    if win is None:
        win = Window(0, 0, src.width, src.height)
    nodata = file_nodata(src, path)
    dtypes = {src.dtypes[i - 1] for i in indexes}
    if len(dtypes) > 1:  # GTiff cannot do this, other GDAL drivers can
        raise FormatError(f"{path}: bands have different dtypes {sorted(dtypes)}; expected one")
    source_dtype = src.dtypes[indexes[0] - 1]
    if source_dtype.startswith("complex"):
        raise FormatError(f"{path}: complex samples ({source_dtype}, such as SAR single-look complex data); "
                          "super-resolution takes real values: write the amplitude or intensity first")
    raw = _read_window(src, indexes, win, _fill_value(nodata, source_dtype))

    scales = [float(src.scales[i - 1]) for i in indexes]
    offsets = [float(src.offsets[i - 1]) for i in indexes]
    scaled = any(s != 1.0 or o != 0.0 for s, o in zip(scales, offsets))
    if scaled:
        data = np.empty(raw.shape, dtype=np.float32)
        for b in range(raw.shape[0]):
            vals = raw[b].astype(np.float64)
            nod = _nodata_mask(raw[b], nodata)
            data[b] = np.where(nod, vals, vals * scales[b] + offsets[b])
    else:
        data = raw.astype(np.float32, copy=False)

    extra: dict[str, Any] = {}
    if has_dataset_mask(src, alpha):
        extra["valid_mask"] = _read_mask(src, win)
    if band_name(path) != path.stem and (baseline := safe_baseline(path)) is not None:
        extra["processing_baseline"] = baseline  # a Sentinel-2 product's band: its DN offset follows the baseline

    names = [src.descriptions[i - 1] or f"band{i}" for i in indexes]
    return make_raster(
        data,
        tuple(src.transform @ Affine.translation(win.col_off, win.row_off))[:6],  # window_transform without `*`
        crs=src.crs.to_wkt() if src.crs is not None else None,
        nodata=None if nodata is None else float(nodata),
        band_names=names,
        scales=scales if scaled else None,
        offsets=offsets if scaled else None,
        source_dtype=source_dtype,
        source_format="geotiff",
        source_path=str(path),
        header=_header(src, indexes, win, alpha),
        **extra,
    )


def read(
    path: str | os.PathLike[str],
    *,
    window: Window | Sequence[Sequence[int]] | None = None,
    bands: Sequence[int | str] | None = None,
) -> MetaTensor:
    """Read a GeoTIFF (or COG), whole or a window of it.

    Args:
        path: the file.
        window: a rasterio ``Window`` or ``((row0, row1), (col0, col1))``;
            may extend past the raster (filled with nodata, or 0 without one).
        bands: 1-based band indexes or band names (descriptions, or
            ``"band<i>"``) to read, in that order; default all.

    Returns:
        A raster ``(C, H, W)`` float32; see the module docstring. Its
        ``header`` dict holds ``driver``, ``tags`` (dataset),
        ``band_tags``, ``descriptions``, ``colorinterp``, ``units``,
        ``dtypes``, ``mask_flags``, ``colormap``, ``compression``,
        ``predictor``, ``interleave``, ``layout``, ``photometric``,
        ``block_shape``, ``overviews``, ``area_or_point``,
        ``band_indexes``, ``source_shape`` and ``window``.

    Raises:
        DataError: the file is missing or unreadable.
        FormatError: not a GeoTIFF, or truncated or corrupt.
        GeometryError: a malformed window, GCP/RPC-only georeferencing, or a
            degenerate transform.
        ConfigError: an unknown band.
    """
    p = Path(path)
    _check_readable(p)
    win = as_window(window)
    try:
        with gdal_env(), rasterio.open(p) as src:
            return _read_open(src, p, win, bands)
    except RASTERIO_ERRORS as exc:
        hint = "does every file the VRT names exist?" if p.suffix.lower() == ".vrt" else "is the file truncated or corrupt?"
        raise FormatError(f"{p}: cannot read raster: {_describe(exc)} ({hint})") from exc

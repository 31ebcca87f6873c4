"""GeoTIFF / COG reader and writer (rasterio, GDAL as the reference).

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
* ``valid_mask``: for files with an internal (per-dataset) mask only, a
  ``(H, W)`` bool array of the window, ``True`` where valid.

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

Writing (:func:`write`): a tiled, compressed GTiff (predictor 2 for
integers, 3 for floats, ``BIGTIFF=IF_SAFER``) that keeps CRS, transform,
nodata, dtype, band descriptions, scale/offset, units, tags (dataset and
band, except ``STATISTICS_*`` which describe values that may have changed),
colour interpretation and palette, and the internal mask. The dtype policy
is DESIGN.md §3: the source dtype by default (inverse scale/offset, rounded
and clipped), or the dtype asked for; a float dtype asked for explicitly
stores physical values unscaled. ``cog=True`` writes the GTiff to a
temporary file, then makes the COG as a final copy with GDAL's COG driver.
Both are atomic. :func:`build_profile`, :func:`encode_values` and
:func:`open_writer` are the pieces a streaming (window by window) writer
reuses.

Band sets (:func:`read_bandset`, :func:`write_bandset`): a folder of
single-band files (``B02.tif``, ``B8A.tif``, ...) is grouped by grid (same
transform and shape; one CRS for all) into rasters named by pixel size
(``"10m"``, ``"20m"``, ``"0.5m"``), finest first, bands in sensor order
(:func:`medsat_sr.domains.band_sort_key`, from the profiles' ``band_patterns``).
Nothing is resampled. Auxiliary layers that are not spectral bands (Sentinel-2
``SCL``, ``AOT``, ``WVP``, ``TCI``, cloud and snow masks) are left out unless
``include_aux=True``.

GDAL's block cache defaults to 5% of RAM (about 900 MB to 1.2 GB on a
typical worker); every read and write here runs in a :func:`gdal_env` that
caps it at :data:`GDAL_CACHEMAX_MB` unless ``GDAL_CACHEMAX`` is set in the
environment.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import rasterio.crs
import rasterio.errors
import rasterio.shutil
import torch
from monai.data import MetaTensor
from rasterio.enums import ColorInterp
from rasterio.transform import Affine
from rasterio.windows import Window

from medsat_sr._atomic import atomic_dir, atomic_path
from medsat_sr.domains import band_sort_key  # band order comes from the sensor profiles' band_patterns
from medsat_sr.errors import ConfigError, DataError, FormatError, GeometryError, WriteError
from medsat_sr.image import BandSet, Key, is_volume, make_raster

try:  # rasterio's GDAL error base class (not re-exported by rasterio.errors)
    from rasterio._err import CPLE_BaseError
except ImportError:  # pragma: no cover - layout of older/newer rasterio
    CPLE_BaseError = rasterio.errors.RasterioError  # type: ignore[misc,assignment]

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
    "gdal_env",
    "GDAL_CACHEMAX_MB",
    "AUX_LAYERS",
    "DTYPES",
    "COMPRESSIONS",
    "SUFFIXES",
]

logger = logging.getLogger(__name__)

#: GDAL block cache cap (MB) for reads and writes, unless GDAL_CACHEMAX is set in the environment.
GDAL_CACHEMAX_MB = 256

#: File suffixes of GeoTIFF files (case-insensitive).
SUFFIXES: tuple[str, ...] = (".tif", ".tiff")

#: File stems (upper case) of per-band files that are not spectral bands:
#: Sentinel-2 L2A scene classification, aerosol optical thickness, water
#: vapour, true-colour image, cloud/snow probabilities, L1C cloud mask.
AUX_LAYERS: frozenset[str] = frozenset(
    {"SCL", "AOT", "WVP", "TCI", "CLD", "SNW", "PVI", "QA60", "MSK_CLDPRB", "MSK_SNWPRB", "MSK_CLASSI"}
)

#: Dtypes the writer accepts.
DTYPES: tuple[str, ...] = (
    "uint8",
    "int8",
    "uint16",
    "int16",
    "uint32",
    "int32",
    "uint64",
    "int64",
    "float32",
    "float64",
)

#: Compression names accepted by :func:`write` (GDAL COMPRESS values, case-insensitive).
COMPRESSIONS: tuple[str, ...] = ("deflate", "lzw", "zstd", "lzma", "packbits", "jpeg", "webp", "lerc", "none")
_PREDICTOR_CODECS = ("deflate", "lzw", "zstd", "lzma")

RASTERIO_ERRORS: tuple[type[BaseException], ...] = (rasterio.errors.RasterioError, CPLE_BaseError)
_STAT_TAG = re.compile(r"^STATISTICS_", re.IGNORECASE)
_DEFAULT_NAME = re.compile(r"^band\d+$")


# --------------------------------------------------------------------------- shared helpers


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


def _band_indexes(src: Any, bands: Sequence[int | str] | None, path: Path) -> list[int]:
    names = [d or f"band{i + 1}" for i, d in enumerate(src.descriptions)]
    if bands is None:
        return list(range(1, src.count + 1))
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


# --------------------------------------------------------------------------- reading


def _header(src: Any, indexes: list[int], win: Window) -> dict[str, Any]:
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
        "source_shape": (int(src.height), int(src.width)),
        "window": (int(win.row_off), int(win.col_off), int(win.height), int(win.width)),
    }
    if ci[indexes[0] - 1] == ColorInterp.palette:
        with contextlib.suppress(ValueError, *RASTERIO_ERRORS):
            header["colormap"] = {int(k): tuple(int(c) for c in v) for k, v in src.colormap(indexes[0]).items()}
    return header


def _read_open(src: Any, path: Path, win: Window | None, bands: Sequence[int | str] | None) -> MetaTensor:
    if src.driver != "GTiff":
        raise FormatError(f"{path}: GDAL reads this file as {src.driver}, expected a GeoTIFF (GTiff)")
    indexes = _band_indexes(src, bands, path)
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
    nodata = src.nodata
    dtypes = {src.dtypes[i - 1] for i in indexes}
    if len(dtypes) > 1:  # GTiff cannot do this, other GDAL drivers can
        raise FormatError(f"{path}: bands have different dtypes {sorted(dtypes)}; expected one")
    source_dtype = src.dtypes[indexes[0] - 1]
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
    flags = src.mask_flag_enums[indexes[0] - 1]
    if any(f.name == "per_dataset" for f in flags) and not any(f.name in ("nodata", "alpha") for f in flags):
        extra["valid_mask"] = _read_mask(src, win)

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
        header=_header(src, indexes, win),
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
        raise FormatError(f"{p}: cannot read GeoTIFF: {_describe(exc)} (is the file truncated or corrupt?)") from exc


# --------------------------------------------------------------------------- band sets


def band_files(folder: str | os.PathLike[str], *, include_aux: bool = False) -> list[Path]:
    """The GeoTIFF files of a band folder, in band order.

    A band folder holds one single-band file per band, named after the
    band (``B02.tif``, ``B8A.tif``). Hidden files (``.``-prefixed, such as
    medsat_sr's temporary ``.part`` files) are skipped, and so are the
    auxiliary layers of :data:`AUX_LAYERS` (``SCL.tif`` ...) unless
    ``include_aux``. Only the folder itself is searched, not subfolders.

    Args:
        folder: the folder.
        include_aux: also return auxiliary layers.

    Returns:
        The files, sorted with :func:`band_sort_key` on their stems; empty
        when there are none.

    Raises:
        DataError: ``folder`` is not a folder.
    """
    p = Path(folder)
    if not p.is_dir():
        raise DataError(f"{p}: not a folder")
    out = [
        f
        for f in p.iterdir()
        if f.suffix.lower() in SUFFIXES
        and not f.name.startswith(".")
        and f.is_file()
        and (include_aux or f.stem.upper() not in AUX_LAYERS)
    ]
    return sorted(out, key=lambda f: band_sort_key(f.stem))


def _unit_suffix(crs: Any) -> str:
    if crs is None:
        return ""
    if crs.is_geographic:
        return "deg"
    units = (crs.linear_units or "").lower()
    if units in ("metre", "meter", "m"):
        return "m"
    if "foot" in units or "feet" in units:
        return "ft"
    return ""


def _compact(v: float) -> str:
    return f"{v:.6g}"


def _group_name(transform: Affine, crs: Any) -> str:
    sx = math.hypot(transform.a, transform.d)
    sy = math.hypot(transform.b, transform.e)
    unit = _unit_suffix(crs)
    if math.isclose(sx, sy, rel_tol=1e-9):
        return f"{_compact(sx)}{unit}"
    return f"{_compact(sx)}x{_compact(sy)}{unit}"


def _group_window(win: Window, ref: Affine, target: Affine, name: str) -> Window:
    """Map a window on the ``ref`` grid to the ``target`` grid, exactly or not at all."""
    ref_m = np.array(tuple(ref)[:9], dtype=np.float64).reshape(3, 3)
    to_target = np.linalg.inv(np.array(tuple(target)[:9], dtype=np.float64).reshape(3, 3)) @ ref_m
    corners = [
        to_target @ np.array([col, row, 1.0])
        for col, row in ((win.col_off, win.row_off), (win.col_off + win.width, win.row_off + win.height))
    ]
    (c0, r0, _), (c1, r1, _) = corners
    vals = (c0, r0, c1 - c0, r1 - r0)
    if not all(abs(v - round(v)) < 1e-6 for v in vals):
        raise GeometryError(
            f"window {win} on the finest grid does not fall on whole pixels of the {name} grid "
            f"(offsets/sizes there would be {tuple(round(v, 4) for v in vals)}); use offsets and sizes "
            "that are multiples of the resolution ratio (band sets are never resampled)"
        )
    return as_window(Window(*(round(v) for v in vals)))  # type: ignore[return-value]


def read_bandset(
    folder: str | os.PathLike[str],
    *,
    bands: Sequence[str] | None = None,
    window: Window | Sequence[Sequence[int]] | None = None,
    include_aux: bool = False,
) -> BandSet:
    """Read a folder of single-band GeoTIFFs as band groups on their own grids.

    Files on the same grid (identical transform and shape) form a group, a
    raster named by its pixel size (``"10m"``, ``"20m"``, ``"0.5m"``;
    ``"10x20m"`` for non-square pixels; ``"_2"`` etc. appended when two grids
    share a pixel size), finest first. Bands within a group follow
    :func:`band_sort_key` (``B01 ... B08 B8A B09 ... B12``). Band name = file
    stem. Nothing is resampled.

    Args:
        folder: the band folder.
        bands: band names (file stems) to read; default all spectral bands.
        window: a window on the *finest* group's grid; each other group reads
            the same ground area, which must fall on whole pixels of its grid.
        include_aux: also read auxiliary layers such as ``SCL`` (see
            :data:`AUX_LAYERS`).

    Returns:
        The :class:`~medsat_sr.image.BandSet`. Each group's header also holds
        ``band_dataset_tags`` (each file's dataset tags) and ``files``.

    Raises:
        DataError: not a folder.
        FormatError: no band files, a corrupt file, a multi-band file,
            duplicate band names, or different nodata values within a group.
        GeometryError: files in different CRSs, or a window that does not
            fall on a coarser grid.
        ConfigError: an unknown band name.
    """
    p = Path(folder)
    files = band_files(p, include_aux=include_aux)
    if not files:
        raise FormatError(f"{p}: no GeoTIFF band files (.tif/.tiff) in this folder")
    stems = [f.stem for f in files]
    dupes = sorted({s for s in stems if stems.count(s) > 1})
    if dupes:
        raise FormatError(f"{p}: several files for band(s) {dupes} (e.g. .tif and .tiff)")
    if bands is not None:
        if isinstance(bands, str):
            bands = [bands]
        unknown = [b for b in bands if b not in stems]
        if unknown:
            aux = "" if include_aux else " (auxiliary layers need include_aux=True)"
            raise ConfigError(f"{p}: no band(s) {unknown}; bands are {stems}{aux}")
        files = [f for f in files if f.stem in set(bands)]
    win = as_window(window)

    # grid of every file
    info: list[tuple[Path, Affine, tuple[int, int], Any, float | None]] = []
    with gdal_env():
        for f in files:
            try:
                with rasterio.open(f) as src:
                    if src.count != 1:
                        raise FormatError(
                            f"{f}: has {src.count} bands; a band folder holds one band per file "
                            "(read multi-band files with geotiff.read)"
                        )
                    info.append((f, src.transform, (src.height, src.width), src.crs, src.nodata))
            except RASTERIO_ERRORS as exc:
                raise FormatError(f"{f}: cannot read GeoTIFF: {_describe(exc)} (is the file truncated or corrupt?)") from exc
    crs0 = info[0][3]
    if any((c is None) != (crs0 is None) or (c is not None and c != crs0) for _, _, _, c, _ in info):
        listing = ", ".join(f"{f.name}: {c.to_string() if c else None}" for f, _, _, c, _ in info)
        raise GeometryError(f"{p}: band files are in different CRSs ({listing}); reproject them to one CRS first")

    groups: dict[tuple[tuple[float, ...], tuple[int, int]], list[int]] = {}
    for k, (_, t, shape, _, _) in enumerate(info):
        groups.setdefault((tuple(t)[:6], shape), []).append(k)
    ordered = sorted(groups.items(), key=lambda kv: (abs(Affine(*kv[0][0]).determinant), kv[0][0]))
    ref_transform = Affine(*ordered[0][0][0])

    out: dict[str, MetaTensor] = {}
    for (tvals, _shape), members in ordered:
        transform = Affine(*tvals)
        name = _group_name(transform, crs0)
        if name in out:
            k = 2
            while f"{name}_{k}" in out:
                k += 1
            logger.warning("%s: two band grids with pixel size %s; naming the second %s_%d", p, name, name, k)
            name = f"{name}_{k}"
        nodatas = {info[k][4] for k in members}
        if len({"nan" if (v is not None and math.isnan(v)) else v for v in nodatas}) > 1:
            listing = ", ".join(f"{info[k][0].name}: {info[k][4]}" for k in members)
            raise FormatError(f"{p}: bands of the {name} group have different nodata values ({listing})")
        gwin = None if win is None else _group_window(win, ref_transform, transform, name)
        members = sorted(members, key=lambda k: band_sort_key(info[k][0].stem))
        images = [read(info[k][0], window=gwin) for k in members]
        out[name] = _stack_group(images, [info[k][0] for k in members])
    return BandSet(groups=out, source_path=str(p))


def _stack_group(images: list[MetaTensor], files: list[Path]) -> MetaTensor:
    first = images[0].meta
    data = np.concatenate([np.asarray(im.as_tensor().numpy()) for im in images], axis=0)
    names = [f.stem for f in files]
    scaled = any(im.meta[Key.SCALES] is not None for im in images)
    scales = [im.meta[Key.SCALES][0] if im.meta[Key.SCALES] else 1.0 for im in images] if scaled else None
    offsets = [im.meta[Key.OFFSETS][0] if im.meta[Key.OFFSETS] else 0.0 for im in images] if scaled else None
    dtypes = [im.meta[Key.SOURCE_DTYPE] for im in images]
    header: dict[str, Any] = dict(first[Key.HEADER])
    for key in ("band_tags", "descriptions", "colorinterp", "units", "dtypes", "mask_flags"):
        header[key] = [im.meta[Key.HEADER][key][0] for im in images]
    header["band_dataset_tags"] = [dict(im.meta[Key.HEADER]["tags"]) for im in images]
    header["files"] = [str(f) for f in files]
    extra: dict[str, Any] = {}
    masks = [im.meta.get("valid_mask") for im in images if im.meta.get("valid_mask") is not None]
    if masks:
        extra["valid_mask"] = np.logical_and.reduce(masks)
    return make_raster(
        data,
        first[Key.TRANSFORM],
        crs=first[Key.CRS],
        nodata=first[Key.NODATA],
        band_names=names,
        scales=scales,
        offsets=offsets,
        source_dtype=str(np.result_type(*dtypes)),
        source_format="geotiff",
        source_path=str(files[0].parent),
        header=header,
        **extra,
    )


# --------------------------------------------------------------------------- writing


def _raster_parts(image: Any) -> tuple[np.ndarray, dict[str, Any]]:
    if isinstance(image, BandSet):
        raise FormatError("geotiff.write writes one raster; use write_bandset for a BandSet")
    if not isinstance(image, torch.Tensor):
        raise FormatError(f"geotiff.write needs a raster MetaTensor, got {type(image).__name__}")
    meta = dict(getattr(image, "meta", {}) or {})
    if is_volume(image):
        raise FormatError("geotiff.write needs a raster (C, H, W); got a volume; write volumes as .nii.gz or DICOM")
    if image.ndim != 3:
        raise GeometryError(f"geotiff.write needs a raster shaped (C, H, W), got shape {tuple(image.shape)}")
    if meta.get(Key.TRANSFORM) is None:
        raise GeometryError("geotiff.write needs a raster with meta 'transform' (6 floats)")
    data = image.detach().cpu()
    if isinstance(data, MetaTensor):
        data = data.as_tensor()
    if data.dtype in (torch.float16, torch.bfloat16):  # numpy has no bfloat16
        data = data.float()
    return data.numpy(), meta


def _check_dtype(dtype: Any) -> np.dtype:
    try:
        dt = np.dtype(dtype)
    except TypeError as exc:
        raise ConfigError(f"invalid dtype {dtype!r}; expected one of {list(DTYPES)}") from exc
    if dt.name not in DTYPES:
        raise ConfigError(f"dtype {dt.name!r} cannot be written to GeoTIFF; expected one of {list(DTYPES)}")
    return dt


def _check_nodata_fits(nodata: float | None, dt: np.dtype) -> None:
    if nodata is None:
        return
    if math.isnan(nodata):
        if dt.kind != "f":
            raise ConfigError(f"nodata NaN cannot be stored as {dt.name}; write a float dtype or set a numeric nodata")
        return
    if dt.kind in "iu":
        info = np.iinfo(dt)
        if not (info.min <= nodata <= info.max) or nodata != round(nodata):
            raise ConfigError(f"nodata {nodata} cannot be stored as {dt.name} (range {info.min}..{info.max})")


def build_profile(
    image: MetaTensor | Mapping[str, Any],
    *,
    dtype: str | np.dtype | None = None,
    count: int | None = None,
    height: int | None = None,
    width: int | None = None,
    compress: str = "deflate",
    blocksize: int = 256,
) -> dict[str, Any]:
    """The rasterio creation profile for a tiled, compressed GTiff.

    Args:
        image: a raster, or its meta mapping (then give ``count``,
            ``height`` and ``width``).
        dtype: output dtype; default the meta ``source_dtype`` (else float32).
        count, height, width: output size; default the image's.
        compress: one of :data:`COMPRESSIONS`.
        blocksize: tile size in pixels, a multiple of 16 (shrunk to fit small
            rasters).

    Returns:
        A dict for ``rasterio.open(path, "w", **profile)``: driver, size,
        dtype, CRS, transform, nodata, tiling, compression, predictor (2 for
        integers, 3 for floats), ``BIGTIFF=IF_SAFER``, interleave (the
        source's, else pixel) and photometric RGB when the source bands were
        red, green, blue.

    Raises:
        ConfigError: invalid dtype, compression or block size, or a nodata
            value the dtype cannot hold.
        GeometryError: missing transform or size.
    """
    if isinstance(image, torch.Tensor):
        meta: Mapping[str, Any] = getattr(image, "meta", {}) or {}
        c, h, w = (int(v) for v in image.shape[-3:])
    else:
        meta = image
        c = h = w = None  # type: ignore[assignment]
    count, height, width = count or c, height or h, width or w
    if not count or not height or not width:
        raise GeometryError(f"build_profile needs count, height and width, got {count}, {height}, {width}")
    if meta.get(Key.TRANSFORM) is None:
        raise GeometryError("build_profile needs meta 'transform'")
    dt = _check_dtype(dtype if dtype is not None else meta.get(Key.SOURCE_DTYPE) or "float32")
    codec = str(compress).lower()
    if codec not in COMPRESSIONS:
        raise ConfigError(f"invalid compress {compress!r}; expected one of {list(COMPRESSIONS)}")
    if isinstance(blocksize, bool) or not isinstance(blocksize, (int, np.integer)) or blocksize < 16 or blocksize % 16:
        raise ConfigError(f"blocksize must be a multiple of 16 and >= 16, got {blocksize!r}")
    nodata = meta.get(Key.NODATA)
    _check_nodata_fits(nodata, dt)
    header = meta.get(Key.HEADER) if isinstance(meta.get(Key.HEADER), Mapping) else {}

    def fit(n: int) -> int:
        return min(int(blocksize), max(16, -(-int(n) // 16) * 16))

    crs = meta.get(Key.CRS)
    profile: dict[str, Any] = {
        "driver": "GTiff",
        "width": int(width),
        "height": int(height),
        "count": int(count),
        "dtype": dt.name,
        "crs": rasterio.crs.CRS.from_user_input(crs) if crs else None,
        "transform": Affine(*[float(v) for v in meta[Key.TRANSFORM][:6]]),
        "nodata": nodata,
        "tiled": True,
        "blockxsize": fit(width),
        "blockysize": fit(height),
        "BIGTIFF": "IF_SAFER",
    }
    if codec != "none":
        profile["compress"] = codec
    if codec in _PREDICTOR_CODECS:
        profile["predictor"] = 3 if dt.kind == "f" else 2
    interleave = header.get("interleave") if header else None
    profile["interleave"] = interleave if interleave in ("pixel", "band") else "pixel"
    ci = list(header.get("colorinterp") or []) if header else []
    if count >= 3 and ci[:3] == ["red", "green", "blue"] and len(ci) == count:
        profile["photometric"] = "RGB"
        if count == 4 and ci[3] == "alpha":
            profile["alpha"] = "YES"
    return profile


def encode_values(
    data: np.ndarray,
    *,
    dtype: str | np.dtype,
    nodata: float | None = None,
    scales: Sequence[float] | None = None,
    offsets: Sequence[float] | None = None,
) -> np.ndarray:
    """Map physical values ``(C, H, W)`` to stored values of ``dtype``.

    ``raw = (phys - offset) / scale`` for valid pixels; pixels equal to
    ``nodata`` (or NaN) become ``nodata``. For integer dtypes values are
    rounded half to even and clipped to the dtype's range, NaN becomes nodata
    (0 when there is none), and valid pixels that would land on the nodata
    value are moved one step away from it (so they stay valid). Caveat: a
    valid physical value exactly equal to the nodata value is taken for
    nodata, as GDAL-based tools do.

    Args:
        data: physical values, channel first.
        dtype: stored dtype.
        nodata: nodata value (in stored units, as in the meta), or ``None``.
        scales, offsets: per band, or ``None`` for 1 / 0.

    Returns:
        The stored array.
    """
    dt = _check_dtype(dtype)
    nb = data.shape[0]
    sc = [1.0] * nb if scales is None else [float(v) for v in scales]
    of = [0.0] * nb if offsets is None else [float(v) for v in offsets]
    if len(sc) != nb or len(of) != nb:
        raise ConfigError(f"scales/offsets need one value per band ({nb}), got {len(sc)} and {len(of)}")
    out = np.empty(data.shape, dtype=dt)
    nan_nodata = nodata is not None and math.isnan(nodata)
    n_clip = n_nan = n_bump = 0
    for b in range(nb):
        vals = data[b].astype(np.float64)
        nod = np.isnan(vals) if nan_nodata else (vals == nodata if nodata is not None else np.zeros(vals.shape, bool))
        if sc[b] != 1.0 or of[b] != 0.0:
            vals = np.where(nod, vals, (vals - of[b]) / sc[b])
        if dt.kind == "f":
            out[b] = vals
            continue
        nan = np.isnan(vals) & ~nod
        if nan.any():
            n_nan += int(nan.sum())
            nod = nod | nan
        vals = np.rint(np.where(nod, 0.0, vals))
        info = np.iinfo(dt)
        n_clip += int(((vals < info.min) | (vals > info.max)).sum())
        np.clip(vals, info.min, info.max, out=vals)
        if nodata is not None:
            hit = (vals == nodata) & ~nod
            if hit.any():
                n_bump += int(hit.sum())
                vals[hit] = nodata + 1 if nodata + 1 <= info.max else nodata - 1
            vals[nod] = nodata
        out[b] = vals
    if n_nan:
        logger.warning("%d NaN pixels written as nodata (%s)", n_nan, nodata if nodata is not None else 0)
    if n_clip:
        logger.warning("%d pixels clipped to the %s range", n_clip, dt.name)
    if n_bump:
        logger.warning("%d valid pixels rounded to the nodata value %s; moved one step away", n_bump, nodata)
    return out


def _cog_options(profile: Mapping[str, Any], overview_resampling: str) -> dict[str, Any]:
    # The COG driver wants BLOCKSIZE >= 128; it keeps the source interleave itself
    # (its INTERLEAVE option needs GDAL >= 3.11).
    opts: dict[str, Any] = {
        "BLOCKSIZE": max(128, int(profile["blockxsize"]), int(profile["blockysize"])),
        "BIGTIFF": "IF_SAFER",
        "RESAMPLING": overview_resampling.upper(),
        "COMPRESS": str(profile.get("compress", "none")).upper(),
    }
    if "predictor" in profile:
        opts["PREDICTOR"] = "YES"
    return opts


@contextlib.contextmanager
def open_writer(
    path: str | os.PathLike[str],
    profile: Mapping[str, Any],
    *,
    cog: bool = False,
    overwrite: bool = True,
    overview_resampling: str = "nearest",
) -> Iterator[Any]:
    """Open a GTiff for writing, atomically; yield the rasterio dataset.

    Write window by window (``dst.write(arr, window=...)``) for streaming.
    On success the file appears at ``path`` in one rename; on failure
    nothing is left. With ``cog=True`` the yielded dataset is a temporary
    tiled GTiff, copied at the end into a COG with GDAL's COG driver
    (internal overviews made with ``overview_resampling``).

    Args:
        path: output file.
        profile: creation profile, e.g. from :func:`build_profile`.
        cog: make a Cloud Optimized GeoTIFF.
        overwrite: replace an existing file.
        overview_resampling: COG overview resampling (GDAL name).

    Raises:
        WriteError: ``path`` exists and ``overwrite`` is false, the folder is
            not writable, or GDAL failed.
    """
    p = Path(path)
    if p.is_dir():
        raise WriteError(f"{p}: is a folder, expected a file path")
    if p.exists() and not overwrite:
        raise WriteError(f"{p}: file exists (pass overwrite=True to replace it)")
    with gdal_env(), atomic_path(p) as tmp:
        staging: Path | None = None
        try:
            if cog:
                fd, name = tempfile.mkstemp(prefix=f".{p.stem}.", suffix=".part-gtiff.tif", dir=tmp.parent)
                os.close(fd)
                staging = Path(name)
            with rasterio.open(staging or tmp, "w", **dict(profile)) as dst:
                yield dst
            if staging is not None:
                rasterio.shutil.copy(staging, tmp, driver="COG", **_cog_options(profile, overview_resampling))
        except RASTERIO_ERRORS as exc:
            raise WriteError(f"{p}: GeoTIFF write failed: {_describe(exc)}") from exc
        finally:
            if staging is not None:
                staging.unlink(missing_ok=True)


def apply_metadata(
    dst: Any,
    meta: Mapping[str, Any],
    count: int,
    scales: list[float] | None,
    offsets: list[float] | None,
    *,
    names_in_file: bool,
) -> None:
    header = meta.get(Key.HEADER) if isinstance(meta.get(Key.HEADER), Mapping) else {}
    if names_in_file:
        # band names become descriptions, except the reader's placeholders "band<i>"
        names = list(meta.get(Key.BAND_NAMES) or [])
        for i, name in enumerate(names[:count]):
            if name and not _DEFAULT_NAME.match(str(name)):
                dst.set_band_description(i + 1, str(name))
    else:
        # band-set files carry the band name in the file name; keep only a source description
        descs = header.get("descriptions") if header else None
        if descs and len(descs) == count:
            for i, desc in enumerate(descs):
                if desc:
                    dst.set_band_description(i + 1, str(desc))
    if scales is not None and offsets is not None:
        dst.scales = tuple(scales)
        dst.offsets = tuple(offsets)
    units = header.get("units") if header else None
    if units and len(units) == count and any(units):
        dst.units = tuple(u or "" for u in units)
    tags = dict(header.get("tags") or {}) if header else {}
    tags = {k: v for k, v in tags.items() if not _STAT_TAG.match(k)}
    if tags:
        dst.update_tags(**tags)
    band_tags = header.get("band_tags") if header else None
    if band_tags and len(band_tags) == count:
        for i, bt in enumerate(band_tags):
            keep = {k: v for k, v in (bt or {}).items() if not _STAT_TAG.match(k)}
            if keep:
                dst.update_tags(i + 1, **keep)
    ci = header.get("colorinterp") if header else None
    if ci and len(ci) == count:
        try:
            dst.colorinterp = [ColorInterp[c] for c in ci]
        except (KeyError, ValueError, *RASTERIO_ERRORS) as exc:
            logger.debug("colour interpretation %s not kept: %s", ci, exc)
    cmap = header.get("colormap") if header else None
    if cmap and dst.dtypes[0] in ("uint8", "uint16"):
        try:
            dst.write_colormap(1, cmap)
        except (ValueError, *RASTERIO_ERRORS) as exc:
            logger.debug("colour map not kept: %s", exc)


def _output_scaling(
    meta: Mapping[str, Any], dt: np.dtype, explicit: bool, count: int
) -> tuple[list[float] | None, list[float] | None]:
    """Scale/offset to store: the source's, unless a float dtype was asked for explicitly."""
    scales, offsets = meta.get(Key.SCALES), meta.get(Key.OFFSETS)
    if scales is None and offsets is None:
        return None, None
    if explicit and dt.kind == "f":
        return None, None
    sc = list(scales) if scales is not None else [1.0] * count
    of = list(offsets) if offsets is not None else [0.0] * count
    if len(sc) != count or len(of) != count:
        raise ConfigError(f"meta scales/offsets have {len(sc)}/{len(of)} entries for {count} bands")
    return [float(v) for v in sc], [float(v) for v in of]


def write(
    image: MetaTensor,
    path: str | os.PathLike[str],
    *,
    cog: bool = False,
    dtype: str | None = None,
    compress: str = "deflate",
    blocksize: int = 256,
    overwrite: bool = True,
    overview_resampling: str | None = None,
) -> Path:
    """Write a raster as a tiled, compressed GeoTIFF or a COG, atomically.

    Args:
        image: a raster ``(C, H, W)`` with meta ``transform`` (and ``crs``,
            ``nodata``, ...).
        path: output file.
        cog: write a Cloud Optimized GeoTIFF (GTiff first, then a COG copy).
        dtype: stored dtype; default the source dtype (inverse scale/offset,
            rounded, clipped). A float dtype given here stores physical
            values without scale/offset. One of :data:`DTYPES`.
        compress: one of :data:`COMPRESSIONS`.
        blocksize: tile size, a multiple of 16.
        overwrite: replace an existing file.
        overview_resampling: COG overview resampling; default the source's
            ``OVR_RESAMPLING_ALG`` tag, else ``"nearest"`` (never invents
            values, safe for class maps).

    Returns:
        The path written.

    Raises:
        FormatError: ``image`` is not a raster.
        GeometryError: missing transform, wrong rank.
        ConfigError: invalid dtype, compression, block size or nodata for the dtype.
        WriteError: the file exists and ``overwrite`` is false, the folder
            is missing or not writable, or GDAL failed.
    """
    return _write(
        image,
        path,
        cog=cog,
        dtype=dtype,
        compress=compress,
        blocksize=blocksize,
        overwrite=overwrite,
        overview_resampling=overview_resampling,
        names_in_file=True,
    )


def _write(
    image: MetaTensor,
    path: str | os.PathLike[str],
    *,
    cog: bool,
    dtype: str | None,
    compress: str,
    blocksize: int,
    overwrite: bool,
    overview_resampling: str | None,
    names_in_file: bool,
) -> Path:
    data, meta = _raster_parts(image)
    count, height, width = (int(v) for v in data.shape)
    dt = _check_dtype(dtype if dtype is not None else meta.get(Key.SOURCE_DTYPE) or "float32")
    profile = build_profile(meta, dtype=dt, count=count, height=height, width=width, compress=compress, blocksize=blocksize)
    scales, offsets = _output_scaling(meta, dt, dtype is not None, count)
    raw = encode_values(data, dtype=dt, nodata=meta.get(Key.NODATA), scales=scales, offsets=offsets)
    header = meta.get(Key.HEADER) if isinstance(meta.get(Key.HEADER), Mapping) else {}
    resampling = overview_resampling or (header.get("tags") or {}).get("OVR_RESAMPLING_ALG") or "nearest"
    mask = meta.get("valid_mask")
    if mask is not None and np.shape(mask) != (height, width):
        logger.warning("valid_mask shaped %s does not match the raster %s; not written", np.shape(mask), (height, width))
        mask = None
    with open_writer(path, profile, cog=cog, overwrite=overwrite, overview_resampling=resampling) as dst:
        apply_metadata(dst, meta, count, scales, offsets, names_in_file=names_in_file)
        dst.write(raw)
        if mask is not None:
            dst.write_mask(np.asarray(mask, dtype=bool))
    logger.debug("wrote %s: %s bands %sx%s %s%s", path, count, height, width, dt.name, " (COG)" if cog else "")
    return Path(path)


def _band_image(img: MetaTensor, i: int) -> MetaTensor:
    """Band ``i`` of a group as a one-band raster whose meta describes that band's file."""
    meta = dict(img.meta)
    header = dict(meta.get(Key.HEADER) or {})
    for key in ("band_tags", "descriptions", "colorinterp", "units", "dtypes", "mask_flags"):
        if isinstance(header.get(key), list) and len(header[key]) == img.shape[0]:
            header[key] = [header[key][i]]
    file_tags = header.get("band_dataset_tags")
    if isinstance(file_tags, list) and len(file_tags) == img.shape[0]:
        header["tags"] = dict(file_tags[i])
    header.pop("band_dataset_tags", None)
    header.pop("files", None)
    dtypes = header.get("dtypes")
    if dtypes and len(dtypes) == 1 and dtypes[0]:
        meta[Key.SOURCE_DTYPE] = dtypes[0]
    meta[Key.HEADER] = header
    meta[Key.BAND_NAMES] = [meta[Key.BAND_NAMES][i]]
    for key in (Key.SCALES, Key.OFFSETS):
        if meta.get(key) is not None:
            meta[key] = [meta[key][i]]
    meta.pop("affine", None)  # MetaTensor keeps the affine in its meta too; pass it once
    return MetaTensor(img.as_tensor()[i : i + 1].clone(), affine=img.affine.clone(), meta=meta)


_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")


def write_bandset(
    bandset: BandSet,
    folder: str | os.PathLike[str],
    *,
    cog: bool = False,
    dtype: str | None = None,
    overwrite: bool = True,
    compress: str = "deflate",
    blocksize: int = 256,
) -> Path:
    """Write a band set as one GeoTIFF per band, ``<band>.tif``, atomically.

    Each band keeps its group's grid. The whole folder appears at once; with
    ``overwrite`` an existing folder is *replaced* (its other files go too).

    Args:
        bandset: the band set.
        folder: output folder.
        cog: write COGs.
        dtype: stored dtype for every band; default each band's source dtype.
        overwrite: replace an existing folder.
        compress: compression (see :func:`write`).
        blocksize: tile size.

    Returns:
        The folder.

    Raises:
        FormatError: not a BandSet, empty, or band names that are not
            usable file names or are repeated.
        WriteError: the folder exists and ``overwrite`` is false, the parent
            is not writable, or a write failed.
    """
    if not isinstance(bandset, BandSet):
        raise FormatError(f"write_bandset needs a BandSet, got {type(bandset).__name__}")
    if not len(bandset):
        raise FormatError("write_bandset: the band set has no groups")
    names = bandset.band_names
    bad = [n for n in names if not _SAFE_NAME.match(str(n))]
    if bad:
        raise FormatError(f"band names {bad} are not usable as file names (letters, digits, _ . + -)")
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise FormatError(f"band names {dupes} appear in more than one group; each band needs its own file")
    with atomic_dir(folder, overwrite=overwrite) as tmp:
        for img in bandset.groups.values():
            for i, name in enumerate(img.meta[Key.BAND_NAMES]):
                _write(
                    _band_image(img, i),
                    tmp / f"{name}.tif",
                    cog=cog,
                    dtype=dtype,
                    compress=compress,
                    blocksize=blocksize,
                    overwrite=True,
                    overview_resampling=None,
                    names_in_file=False,
                )
    return Path(folder)

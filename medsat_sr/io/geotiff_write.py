"""GeoTIFF / COG writer: one raster to a tiled, compressed GTiff or a COG, atomically.

Holds :func:`write`, the pieces a streaming (window by window) writer reuses
(:func:`build_profile`, :func:`encode_values`, :func:`open_writer`,
:func:`apply_metadata`) and :data:`DTYPES` / :data:`COMPRESSIONS`. Used by
:mod:`medsat_sr.io.geotiff_bandset` (one file per band), the streaming
raster sink and the pan-sharpening and revisit routes of
:mod:`medsat_sr.inference`; re-exported from :mod:`medsat_sr.io.geotiff`
(and dispatched to by :func:`medsat_sr.io.write`). Warnings log as
``medsat_sr.io.geotiff``.

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
import rasterio.shutil
import torch
from monai.data import MetaTensor
from rasterio.enums import ColorInterp
from rasterio.transform import Affine

from medsat_sr._atomic import atomic_path
from medsat_sr.errors import ConfigError, FormatError, GeometryError, WriteError
from medsat_sr.image import NUMERIC_DTYPES, BandSet, Key, is_volume, writable_dtype
from medsat_sr.io.geotiff_gdal import RASTERIO_ERRORS, _describe, gdal_env

__all__ = ["write", "build_profile", "encode_values", "open_writer", "apply_metadata", "DTYPES", "COMPRESSIONS"]

logger = logging.getLogger("medsat_sr.io.geotiff")  # the name users and tests know (caplog)

#: Dtypes the writer accepts.
DTYPES: tuple[str, ...] = NUMERIC_DTYPES

#: Compression names accepted by :func:`write` (GDAL COMPRESS values, case-insensitive).
COMPRESSIONS: tuple[str, ...] = ("deflate", "lzw", "zstd", "lzma", "packbits", "jpeg", "webp", "lerc", "none")
_PREDICTOR_CODECS = ("deflate", "lzw", "zstd", "lzma")
_STAT_TAG = re.compile(r"^STATISTICS_", re.IGNORECASE)
_DEFAULT_NAME = re.compile(r"^band\d+$")


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
    return writable_dtype(dtype, "GeoTIFF")


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
    n_low = n_high = n_nan = n_bump = 0
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
        n_low += int((vals < info.min).sum())
        n_high += int((vals > info.max).sum())
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
    if n_low or n_high:  # below: typically an SR overshoot next to edges, where the type holds no negatives
        logger.warning("%d pixels clipped to the %s range (%d below, %d above; %.3g %% of the raster)",
                       n_low + n_high, dt.name, n_low, n_high, 100.0 * (n_low + n_high) / max(data.size, 1))
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

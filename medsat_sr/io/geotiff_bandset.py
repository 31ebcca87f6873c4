"""Band folders: a folder of single-band GeoTIFFs read as, and written from, a band set.

Holds :func:`read_bandset`, :func:`write_bandset` and the grid helpers;
re-exports :func:`band_files`, :func:`band_name`, :data:`SUFFIXES` and
:data:`AUX_LAYERS` from :mod:`medsat_sr.io.bandset_files` (which files are
bands, and their names). Each file goes through
:func:`medsat_sr.io.geotiff_read.read` and the writer of
:mod:`medsat_sr.io.geotiff_write`. Used by format detection and dispatch in
:mod:`medsat_sr.io`, :mod:`medsat_sr.info`, :mod:`medsat_sr.pansharpen` and
:mod:`medsat_sr.inference`; re-exported from :mod:`medsat_sr.io.geotiff`.
Warnings log as ``medsat_sr.io.geotiff``.

Band sets (:func:`read_bandset`, :func:`write_bandset`): a folder of
single-band files (``B02.tif``, ``B8A.tif``, ...) is grouped by grid (same
transform and shape; one CRS for all) into rasters named by pixel size
(``"10m"``, ``"20m"``, ``"0.5m"``), finest first, bands in sensor order
(:func:`medsat_sr.domains.band_sort_key`, from the profiles' ``band_patterns``).
Nothing is resampled. Auxiliary layers that are not spectral bands (Sentinel-2
``SCL``, ``AOT``, ``WVP``, ``TCI``, cloud and snow masks; Landsat ``BQA``,
``QA_PIXEL`` and the other QA layers, Fmask) are left out unless
``include_aux=True`` (:func:`is_aux_layer`).
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from monai.data import MetaTensor
from rasterio.transform import Affine
from rasterio.windows import Window

from medsat_sr._atomic import atomic_dir
from medsat_sr.domains import band_sort_key  # band order comes from the sensor profiles' band_patterns
from medsat_sr.errors import ConfigError, DataError, FormatError, GeometryError
from medsat_sr.image import BandSet, Key, make_raster
from medsat_sr.io.bandset_files import AUX_LAYERS, SUFFIXES, aux_files, band_files, band_name, is_aux_layer
from medsat_sr.io.geotiff_gdal import RASTERIO_ERRORS, _describe, gdal_env
from medsat_sr.io.geotiff_read import as_window, read
from medsat_sr.io.geotiff_write import _write

__all__ = ["read_bandset", "write_bandset", "band_files", "band_grids", "band_name", "grid_files", "check_nested",
           "is_aux_layer", "aux_files", "AUX_LAYERS", "SUFFIXES"]

logger = logging.getLogger("medsat_sr.io.geotiff")  # the name users and tests know (caplog)

def _headers(folder: str | os.PathLike[str]) -> list[tuple[Path, Affine, tuple[int, int], Any]]:
    """``(file, transform, (height, width), crs)`` of every band file of a folder, headers only."""
    out = []
    with gdal_env():
        for f in band_files(folder):
            try:
                with rasterio.open(f) as src:
                    out.append((f, src.transform, (src.height, src.width), src.crs))
            except RASTERIO_ERRORS as exc:
                raise FormatError(f"{f}: cannot read raster: {_describe(exc)} (is the file truncated or corrupt?)") from exc
    return out


def _grids(heads: list[tuple[Path, Affine, tuple[int, int], Any]]) -> list[tuple[Affine, list[Path]]]:
    """The files grouped by grid (transform and size), finest first."""
    groups: dict[tuple[Any, ...], list[Path]] = {}
    for f, t, shape, _ in heads:
        groups.setdefault((abs(t.determinant), tuple(t)[:6], shape), []).append(f)
    return [(Affine(*k[1]), groups[k]) for k in sorted(groups)]


def grid_files(folder: str | os.PathLike[str]) -> list[list[Path]]:
    """The band files of a band folder grouped by grid (transform and size), finest first; headers only.

    Raises:
        DataError: ``folder`` is not a folder.
        FormatError: a file cannot be read.
    """
    return [files for _, files in _grids(_headers(folder))]


def band_grids(folder: str | os.PathLike[str]) -> list[list[str]]:
    """The band names of a band folder grouped by grid (transform and size), finest first; headers only.

    Raises:
        DataError: ``folder`` is not a folder.
        FormatError: a file cannot be read.
    """
    return [[band_name(f) for f in files] for files in grid_files(folder)]


def check_nested(folder: str | os.PathLike[str]) -> None:
    """Refuse a band folder whose grids do not nest in the finest one (headers only; see :func:`read_bandset`).

    Raises:
        GeometryError: a grid does not nest (the message says how far off, and the remedy).
    """
    heads = _headers(folder)
    if heads:
        _check_nested(Path(folder), _grids(heads), heads[0][3])


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


def _check_nested(folder: Path, grids: list[tuple[Affine, list[Path]]], crs: Any) -> None:
    """Refuse band grids that do not nest in the finest one (``grids``: finest first, with their files).

    A coarser grid nests when its pixel is a whole number of fine pixels and
    its origin falls on a fine pixel corner: then every window of the fine
    grid maps to whole pixels of it, and no band is ever resampled.

    Raises:
        GeometryError: a grid does not nest; the message names both grids,
            the offset and the remedy (a Landsat Level-1 pan is offset so on
            purpose: pan-sharpening handles it).
    """
    fine, fine_files = grids[0]
    inv = ~fine
    for t, files in grids[1:]:
        c0, r0 = inv @ (t.c, t.f)
        c1, r1 = inv @ (t.c + t.a, t.f + t.e)
        vals = (c0, r0, c1 - c0, r1 - r0)
        if all(abs(v - round(v)) < 1e-6 for v in vals):
            continue
        fname, name = _group_name(fine, crs), _group_name(t, crs)
        stems = " ".join(band_name(f) for f in fine_files)
        raise GeometryError(
            f"{folder}: the {name} grid ({' '.join(band_name(f) for f in files[:4])}{' ...' if len(files) > 4 else ''}) does "
            f"not nest in the {fname} grid ({stems}): its pixel corners fall {c0 % 1:.3g} x {r0 % 1:.3g} pixels off "
            f"it (pixel {c1 - c0:.4g} x {r1 - r0:.4g} of them; a Landsat Level-1 pan sits half a pixel off on "
            f"purpose), and band sets are never resampled; pan-sharpen (--config landsat_pansharpen) or leave {stems} out"
        )


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
    stem, or the band of a Sentinel-2 SAFE file name (:func:`band_name`).
    Nothing is resampled.

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
        raise FormatError(f"{p}: no band files (.tif/.tiff or .jp2) in this folder")
    stems = [band_name(f) for f in files]
    dupes = sorted({s for s in stems if stems.count(s) > 1})
    if dupes:
        same = sorted(f.name for f in files if band_name(f) == dupes[0])
        raise FormatError(
            f"{p}: several files for band {dupes[0]} ({', '.join(same[:3])}{' ...' if len(same) > 3 else ''}); "
            "a band folder holds each band once: passes of several dates are fused as revisits (upscale "
            "--config revisit_x2, or --method median), or give the files to `batch`"
        )
    if bands is not None:
        if isinstance(bands, str):
            bands = [bands]
        unknown = [b for b in bands if b not in stems]
        if unknown:
            aux = "" if include_aux else " (auxiliary layers need include_aux=True)"
            raise ConfigError(f"{p}: no band(s) {unknown}; bands are {stems}{aux}")
        files = [f for f in files if band_name(f) in set(bands)]
    win = as_window(window)

    # grid of every file
    info: list[tuple[Path, Affine, tuple[int, int], Any, float | None]] = []
    with gdal_env():
        for f in files:
            try:
                with rasterio.open(f) as src:
                    if src.count != 1:
                        raise FormatError(
                            f"{f}: has {src.count} bands; a band folder holds one band per file, so a folder "
                            "of multi-band files is several images: fuse them as revisits of one scene (upscale "
                            f"--config revisit_x2, or --method median), or give the files ({p}/*{f.suffix}) to `batch`"
                        )
                    info.append((f, src.transform, (src.height, src.width), src.crs, src.nodata))
            except RASTERIO_ERRORS as exc:
                raise FormatError(f"{f}: cannot read raster: {_describe(exc)} (is the file truncated or corrupt?)") from exc
    crs0 = info[0][3]
    if any((c is None) != (crs0 is None) or (c is not None and c != crs0) for _, _, _, c, _ in info):
        listing = ", ".join(f"{f.name}: {c.to_string() if c else None}" for f, _, _, c, _ in info)
        raise GeometryError(f"{p}: band files are in different CRSs ({listing}); reproject them to one CRS first")

    grids = _grids([(f, t, shape, crs) for f, t, shape, crs, _ in info])
    _check_nested(p, grids, crs0)
    nodata_of = {f: nd for f, _, _, _, nd in info}

    out: dict[str, MetaTensor] = {}
    for transform, gfiles in grids:
        name = _group_name(transform, crs0)
        if name in out:
            k = 2
            while f"{name}_{k}" in out:
                k += 1
            logger.warning("%s: two band grids with pixel size %s; naming the second %s_%d", p, name, name, k)
            name = f"{name}_{k}"
        nodatas = {nodata_of[f] for f in gfiles}
        if len({"nan" if (v is not None and math.isnan(v)) else v for v in nodatas}) > 1:
            listing = ", ".join(f"{f.name}: {nodata_of[f]}" for f in gfiles)
            raise FormatError(f"{p}: bands of the {name} group have different nodata values ({listing})")
        gwin = None if win is None else _group_window(win, grids[0][0], transform, name)
        gfiles = sorted(gfiles, key=lambda f: band_sort_key(band_name(f)))
        images = [read(f, window=gwin) for f in gfiles]
        out[name] = _stack_group(images, gfiles)
    return BandSet(groups=out, source_path=str(p))


def _stack_group(images: list[MetaTensor], files: list[Path]) -> MetaTensor:
    first = images[0].meta
    data = np.concatenate([np.asarray(im.as_tensor().numpy()) for im in images], axis=0)
    names = [band_name(f) for f in files]
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
    baselines = {im.meta.get("processing_baseline") for im in images} - {None}
    if len(baselines) == 1:  # a Sentinel-2 product's bands (bandset_files.safe_baseline)
        extra["processing_baseline"] = baselines.pop()
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

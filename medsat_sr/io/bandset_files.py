"""Which files of a folder are bands, and what they are called.

A band folder holds one file per band (:data:`SUFFIXES`: GeoTIFF, JPEG 2000),
named after the band. :func:`band_files` lists them in sensor order, leaving
out auxiliary layers (:data:`AUX_LAYERS`, :func:`is_aux_layer`), and finds
the bands of a Sentinel-2 SAFE product (the product, its granule, or an L2A
``IMG_DATA`` with ``R10m``/``R20m``/``R60m``: each band at its native
resolution); :func:`band_name` names a SAFE band file by its band. No pixel
is read here: :mod:`medsat_sr.io.geotiff_bandset` reads and writes band
sets, and re-exports these names.
"""

from __future__ import annotations

import functools
import os
import re
from pathlib import Path

from medsat_sr.domains import band_sort_key  # band order comes from the sensor profiles' band_patterns
from medsat_sr.errors import DataError

__all__ = ["band_files", "band_name", "safe_baseline", "is_aux_layer", "aux_files", "AUX_LAYERS", "SAFE_NODATA",
           "SUFFIXES"]

#: File suffixes of band files (case-insensitive): GeoTIFF, and JPEG 2000 as
#: in a Sentinel-2 SAFE granule's ``IMG_DATA`` folder. A ``.vrt`` is read as
#: one input, not as a band of a folder (a folder's VRT is usually a stack of
#: the bands beside it).
SUFFIXES: tuple[str, ...] = (".tif", ".tiff", ".jp2")

#: Names (upper case) of per-band files that are not spectral bands, alone or
#: after a product prefix (``l8_BQA``, ``LE07_..._fmask``): Sentinel-2 scene
#: classification, aerosol optical thickness, water vapour, true-colour image,
#: cloud/snow probabilities and masks; Landsat Collection 1 and 2 quality
#: layers (``BQA``, ``QA_PIXEL``, ``QA_RADSAT``, ``SR_QA_AEROSOL``, ``ST_QA``,
#: ``ST_CDIST``, the older ``pixel_qa``, ``radsat_qa``, ``sr_cloud_qa``) and
#: Fmask/CFmask; a plain ``mask``. Also the Collection 2 Level-2 surface
#: temperature layers that sit beside the reflectance bands in the same
#: folder: ``ST_B10`` (kelvin, from the 100 m thermal band, resampled to 30 m
#: by USGS: a product of its own, upscaled alone if wanted) and its
#: intermediates ``ST_ATRAN``, ``ST_DRAD``, ``ST_EMIS``, ``ST_EMSD``,
#: ``ST_TRAD``, ``ST_URAD``; the folder's bands are then ``SR_B1`` ... ``SR_B7``.
AUX_LAYERS: frozenset[str] = frozenset(
    {"SCL", "AOT", "WVP", "TCI", "CLD", "SNW", "PVI", "QA60", "MSK_CLDPRB", "MSK_SNWPRB", "MSK_CLASSI",
     "BQA", "QA_PIXEL", "QA_RADSAT", "SR_QA_AEROSOL", "ST_QA", "ST_CDIST", "PIXEL_QA", "RADSAT_QA", "SR_CLOUD_QA",
     "SR_ATMOS_OPACITY", "FMASK", "CFMASK", "CFMASK_CONF", "MASK",
     "ST_B10", "ST_ATRAN", "ST_DRAD", "ST_EMIS", "ST_EMSD", "ST_TRAD", "ST_URAD"}
)

#: The nodata value of a Sentinel-2 product's bands. ESA's product specification
#: makes DN 0 NODATA (``<Special_Values>`` in ``MTD_MSIL1C.xml``/``MTD_MSIL2A.xml``);
#: the JPEG 2000 files themselves declare none, so the reader declares it for them.
SAFE_NODATA = 0.0

_BASELINE_XML = re.compile(rb"<PROCESSING_BASELINE>\s*(\d{2}\.\d{2})\s*</PROCESSING_BASELINE>")
_BASELINE_NAME = re.compile(r"^S2[ABCD]_MSIL(?:1C|2A)_\d{8}T\d{6}_N(\d{2})(\d{2})_", re.IGNORECASE)
_PRODUCT_XML = ("MTD_MSIL2A.xml", "MTD_MSIL1C.xml")


def safe_baseline(path: str | os.PathLike[str]) -> str | None:
    """The processing baseline (``"04.00"``) of the Sentinel-2 product a band file sits in, if it can be told.

    From the product's ``MTD_MSIL1C.xml`` / ``MTD_MSIL2A.xml``
    (``<PROCESSING_BASELINE>``), else from the ``.SAFE`` folder's name
    (``..._N0400_...``), searching up to five folders above the file. From
    baseline 04.00 (January 2022) ESA adds 1000 to every DN; the Sentinel-2
    profiles' ``baseline_offsets`` take it off, and need the baseline for it.
    """
    return _baseline_above(Path(path).resolve().parent)


@functools.lru_cache(maxsize=64)
def _baseline_above(folder: Path) -> str | None:
    """:func:`safe_baseline` of the files in ``folder`` (read once per folder: every band, every window, asks)."""
    for d in [folder, *list(folder.parents)[:5]]:
        for name in _PRODUCT_XML:
            xml = d / name
            if xml.is_file():
                with open(xml, "rb") as fh:
                    m = _BASELINE_XML.search(fh.read(1 << 20))  # the general info block comes first
                if m:
                    return m.group(1).decode()
        m = _BASELINE_NAME.match(d.name)
        if m:
            return f"{m.group(1)}.{m.group(2)}"
    return None


_RESOLUTION_TAG = re.compile(r"_\d+(?:\.\d+)?M$")  # "SCL_20m", "AOT_10m" in Sentinel-2 L2A file names

#: A Sentinel-2 SAFE granule's band file: ``T33UUB_20170527T100031_B02`` (L1C),
#: ``T33UUB_20170527T100031_B02_10m`` (L2A), or the pre-2016 long names ending
#: ``..._T33UUB_B02``: the tile, the sensing time, the band, the resolution.
_SAFE_BAND = re.compile(r"(?:.*_)?T\d{2}[A-Z]{3}_(?:\d{8}T\d{6}_)?(?P<band>B\d{2}|B8A)(?:_[126]0m)?", re.IGNORECASE)


def band_name(path: str | os.PathLike[str]) -> str:
    """The band a band file holds: its stem, or the band of a Sentinel-2 SAFE file name.

    ``B02.tif`` and ``l8_B4.tif`` are named by their stems;
    ``T33UUB_20170527T100031_B02.jp2`` and ``T33UUB_20170527T100031_B8A_20m.jp2``
    (a SAFE granule's ``IMG_DATA``) are ``B02`` and ``B8A``, the names the
    Sentinel-2 profiles and configs use.
    """
    stem = Path(path).stem
    m = _SAFE_BAND.fullmatch(stem)
    return m.group("band").upper() if m else stem


def is_aux_layer(stem: str) -> bool:
    """Whether a file stem names an auxiliary layer (:data:`AUX_LAYERS`), not a spectral band.

    The name matches alone or after a product prefix and ``_``; a trailing
    resolution tag (``_20m``) is ignored. ``SCL``, ``T33UUB_..._SCL_20m``,
    ``l8_BQA`` and ``LE70350322008118EDC00_fmask`` are auxiliary;
    ``B04``, ``l8_B4`` and ``SR_B4`` are not.
    """
    name = _RESOLUTION_TAG.sub("", stem.upper())
    return name in AUX_LAYERS or any(name.endswith("_" + aux) for aux in AUX_LAYERS)


def aux_files(folder: str | os.PathLike[str]) -> list[Path]:
    """The auxiliary layers (:func:`is_aux_layer`) that :func:`band_files` leaves out of a folder."""
    return [f for f in band_files(folder, include_aux=True) if is_aux_layer(f.stem)]


def _flat_band_files(folder: Path, include_aux: bool) -> list[Path]:
    return [
        f
        for f in folder.iterdir()
        if f.suffix.lower() in SUFFIXES
        and not f.name.startswith(".")
        and f.is_file()
        and (include_aux or not is_aux_layer(f.stem))
    ]


#: A Sentinel-2 L2A granule's ``IMG_DATA`` resolution folders, finest first.
_L2A_RESOLUTIONS = ("R10m", "R20m", "R60m")


def _safe_band_files(folder: Path, include_aux: bool) -> list[Path]:
    """The bands of a Sentinel-2 SAFE product, its granule or its ``IMG_DATA`` folder; ``[]`` for other folders.

    ``X.SAFE/`` and ``X.SAFE/GRANULE/<id>/`` lead to the granule's ``IMG_DATA``
    (a product of one granule, as ESA delivers them). An L2A ``IMG_DATA``
    holds ``R10m``, ``R20m`` and ``R60m``: each band is taken at its native
    resolution, the finest folder that holds it (``B05`` from ``R20m``; the
    ``R20m`` and ``R60m`` copies of finer bands are resampled by ESA, not
    bands of their own).
    """
    if (folder / "GRANULE").is_dir():
        granules = sorted(g for g in (folder / "GRANULE").iterdir() if (g / "IMG_DATA").is_dir())
        if len(granules) != 1:
            return []
        folder = granules[0]
    if (folder / "IMG_DATA").is_dir():
        folder = folder / "IMG_DATA"
        flat = _flat_band_files(folder, include_aux)
        if flat:
            return flat
    chosen: dict[str, Path] = {}
    for res in _L2A_RESOLUTIONS:
        if (folder / res).is_dir():
            for f in _flat_band_files(folder / res, include_aux):
                chosen.setdefault(band_name(f), f)
    return list(chosen.values())


def band_files(folder: str | os.PathLike[str], *, include_aux: bool = False) -> list[Path]:
    """The band files of a band folder, in band order.

    A band folder holds one single-band file per band, named after the
    band (``B02.tif``, ``B8A.tif``). Hidden files (``.``-prefixed, such as
    medsat_sr's temporary ``.part`` files) are skipped, and so are the
    auxiliary layers (:func:`is_aux_layer`: ``SCL.tif``, ``l8_BQA.tif`` ...) unless
    ``include_aux``. Only the folder itself is searched, not subfolders,
    except in a Sentinel-2 SAFE layout (a ``.SAFE`` product, its granule, or an
    L2A ``IMG_DATA`` with ``R10m``/``R20m``/``R60m``), where each band is
    taken at its native resolution.

    Args:
        folder: the folder.
        include_aux: also return auxiliary layers.

    Returns:
        The files, sorted with :func:`band_sort_key` on their band names
        (:func:`band_name`); empty when there are none.

    Raises:
        DataError: ``folder`` is not a folder.
    """
    p = Path(folder)
    if not p.is_dir():
        raise DataError(f"{p}: not a folder")
    out = _flat_band_files(p, include_aux) or _safe_band_files(p, include_aux)
    return sorted(out, key=lambda f: band_sort_key(band_name(f)))

"""Readers and writers, one module per format, with a small dispatch.

``read(path)`` chooses the reader from the content and the suffix:

* a folder holding DICOM files -> :mod:`medsat_sr.io.dicom` (one series);
* a folder of GeoTIFF band files -> a :class:`~medsat_sr.image.BandSet`;
* ``.nii`` / ``.nii.gz`` (or a NIfTI header) -> :mod:`medsat_sr.io.nifti`;
* ``.tif`` / ``.tiff`` (or TIFF magic), ``.jp2`` (or the JPEG 2000
  signature) and ``.vrt`` -> :mod:`medsat_sr.io.geotiff` (GDAL reads all
  three; outputs are GeoTIFF);
* ``.dcm`` or a file with the ``DICM`` preamble -> DICOM (multi-frame or a
  single slice).

``write(image, path)`` chooses the writer from ``format`` or the suffix; a
path with no suffix is a DICOM series folder (volumes) or a band folder
(band sets).
"""

from __future__ import annotations

import functools
import inspect
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medsat_sr.errors import ConfigError, DataError, FormatError
from medsat_sr.logs import naming

if TYPE_CHECKING:  # the package itself imports no torch: `medsat-sr info` on a NIfTI file stays fast
    from monai.data import MetaTensor

    from medsat_sr.image import BandSet

__all__ = ["read", "check_read_options", "reader_options_of", "write", "detect_format", "output_format", "FORMATS",
           "RASTER_SUFFIXES"]

#: Output formats and the suffixes that select them.
FORMATS: dict[str, tuple[str, ...]] = {
    "nifti": (".nii", ".nii.gz"),
    "geotiff": (".tif", ".tiff"),
    "cog": (),
    "dicom": ("",),
}

#: What :func:`detect_format` names and :func:`read` reads.
_READ_FORMATS = ("dicom", "nifti", "geotiff", "bandset")

_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
_JP2_MAGIC = (b"\x00\x00\x00\x0cjP  \r\n\x87\n", b"\xff\x4f\xff\x51")  # JP2 signature box; raw J2K codestream

#: Suffixes of the raster files :func:`read` takes (GDAL drivers
#: :data:`medsat_sr.io.geotiff_read.READ_DRIVERS`): GeoTIFF, JPEG 2000, VRT.
RASTER_SUFFIXES: tuple[str, ...] = (".tif", ".tiff", ".jp2", ".vrt")

#: Input suffixes and the reader they select (a file's content decides first).
_READ_SUFFIXES: dict[str, str] = {
    ".nii": "nifti", ".nii.gz": "nifti", ".dcm": "dicom", **dict.fromkeys(RASTER_SUFFIXES, "geotiff"),
}


def _suffix(path: Path) -> str:
    name = path.name.lower()
    if name.endswith(".nii.gz"):
        return ".nii.gz"
    return path.suffix.lower()


def _sniff_file(path: Path) -> str | None:
    try:
        with open(path, "rb") as fh:
            head = fh.read(352)
    except OSError as exc:
        raise DataError(f"{path}: cannot read: {exc.strerror}") from exc
    if head[:4] in _TIFF_MAGIC or head.startswith(_JP2_MAGIC) or head.lstrip().startswith(b"<VRTDataset"):
        return "geotiff"
    if len(head) >= 132 and head[128:132] == b"DICM":
        return "dicom"
    if head[:2] == b"\x1f\x8b":
        return "nifti" if path.name.lower().endswith(".nii.gz") else None
    if len(head) >= 348 and head[344:348] in (b"n+1\x00", b"ni1\x00", b"n+2\x00"):
        return "nifti"
    if len(head) >= 4 and int.from_bytes(head[:4], "little") in (348, 540):
        return "nifti"
    return None


def _archive_kind(path: Path) -> str | None:
    """``"zip"``, ``"tar"``, ``"gzip"`` or ``"7z"`` for an archive (by its content), else ``None``."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(265)
    except OSError:
        return None
    if head[:4] == b"PK\x03\x04":
        return "zip"
    if head[257:262] == b"ustar":
        return "tar"
    if head[:2] == b"\x1f\x8b":
        return "gzip"
    if head[:6] == b"7z\xbc\xaf\x27\x1c":
        return "7z"
    return None


#: The formats read as volumes (the others are rasters).
VOLUME_FORMATS = frozenset({"nifti", "dicom"})


def is_volume(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` holds a volume (NIfTI, DICOM); ``False`` also where nothing readable is there."""
    try:
        return detect_format(path) in VOLUME_FORMATS
    except (DataError, FormatError):
        return False


def detect_format(path: str | os.PathLike[str]) -> str:
    """Name the reader for ``path``: ``"dicom"``, ``"nifti"``, ``"geotiff"`` or ``"bandset"``.

    Raises:
        DataError: the path does not exist, or is an empty folder.
        FormatError: nothing medsat_sr can read is there.
    """
    p = Path(path)
    if not p.exists():
        raise DataError(f"{p}: no such file or folder")
    if p.is_dir():
        from medsat_sr.io import dicom, geotiff

        files = [f for f in p.rglob("*") if f.is_file()]
        if not files:
            raise DataError(f"{p}: folder is empty")
        if any(dicom.is_dicom_file(f) for f in files):
            return "dicom"
        if geotiff.band_files(p):
            return "bandset"
        raise FormatError(f"{p}: folder holds no DICOM files and no GeoTIFF bands ({len(files)} other files)")
    if p.stat().st_size == 0:
        raise FormatError(f"{p}: file is empty")
    sniffed = _sniff_file(p)
    suffix = _suffix(p)
    by_suffix = _READ_SUFFIXES.get(suffix)
    if sniffed is not None:
        return sniffed
    if by_suffix is not None:
        return by_suffix
    archive = _archive_kind(p)
    if archive is not None:
        raise FormatError(f"{p}: a {archive} archive; extract it first and give what it holds (a Sentinel-2 .SAFE or "
                          "Landsat product folder, a DICOM folder, the image files)")
    raise FormatError(
        f"{p}: unknown format (suffix {suffix or 'none'!r}); expected a DICOM folder or file, "
        ".nii/.nii.gz, or a raster (.tif/.tiff, .jp2, .vrt)"
    )


def _names_file(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Warnings raised inside ``fn`` name the file it reads or writes (:func:`medsat_sr.logs.naming`)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        path = kwargs.get("path", args[0] if fn.__name__ == "read" else args[1] if len(args) > 1 else None)
        with naming(path):
            return fn(*args, **kwargs)

    return wrapper


@_names_file
def read(path: str | os.PathLike[str], *, fmt: str | None = None, **options: Any) -> MetaTensor | BandSet:
    """Read an image, a DICOM series or a band folder.

    Args:
        path: file or folder.
        fmt: the format, when the caller has already named it with
            :func:`detect_format` (a large DICOM folder is then not listed twice).
        **options: passed to the format's reader (``series=``, ``volume=``,
            ``resample=`` for DICOM; ``window=``, ``bands=`` for GeoTIFF).

    Returns:
        A MetaTensor (see :mod:`medsat_sr.image`) or a BandSet.

    Raises:
        DataError: missing or unreadable input.
        FormatError: unsupported or malformed input.
        GeometryError: geometry that cannot be represented faithfully.
    """
    if fmt is None:
        fmt = detect_format(path)
    elif fmt not in _READ_FORMATS:
        raise ConfigError(f"{path}: cannot read format {fmt!r}; one of {list(_READ_FORMATS)}")
    check_read_options(path, fmt, options)
    return _reader(fmt)(path, **options)


#: The reader options of a DICOM series (the CLI's --series, --volume and --resample).
_DICOM_OPTIONS = ("series", "volume", "resample")


def _reader(fmt: str) -> Callable[..., Any]:
    """The read function of a format of :func:`detect_format`."""
    if fmt == "dicom":
        from medsat_sr.io import dicom

        return dicom.read
    if fmt == "nifti":
        from medsat_sr.io import nifti

        return nifti.read
    from medsat_sr.io import geotiff

    return geotiff.read_bandset if fmt == "bandset" else geotiff.read


def reader_options_of(fmt: str) -> list[str]:
    """The options the reader of a format takes (``series``, ``volume``, ``resample`` for DICOM)."""
    return [n for n, p in inspect.signature(_reader(fmt)).parameters.items() if p.kind is p.KEYWORD_ONLY]


def check_read_options(path: str | os.PathLike[str], fmt: str, options: Mapping[str, Any]) -> None:
    """Refuse reader options that the format's reader does not take (``--series`` on a NIfTI file, ...).

    Raises:
        ConfigError: naming the options and what the format takes.
    """
    if not options:  # nothing to check: the reader's module (torch, MONAI) is not imported for it
        return
    takes = reader_options_of(fmt)
    bad = [k for k in options if k not in takes]
    if bad:
        kind = {"dicom": "a DICOM", "nifti": "a NIfTI", "bandset": "a band-folder"}.get(fmt, "a raster")
        dicom_only = set(bad) <= set(_DICOM_OPTIONS)
        why = "DICOM series options" if dicom_only else f"its reader takes {', '.join(takes) or 'no options'}"
        raise ConfigError(f"{path}: {', '.join('--' + k for k in bad)} {'does' if len(bad) == 1 else 'do'} not apply to "
                          f"{kind} input ({why})")


def output_format(path: str | os.PathLike[str], format: str | None = None) -> str:
    """The writer for ``path``: ``format`` when given, else from the suffix.

    Raises:
        FormatError: unknown format name or suffix.
    """
    if format is not None:
        if format not in FORMATS:
            raise FormatError(f"unknown output format {format!r}; expected one of {sorted(FORMATS)}")
        return format
    p = Path(path)
    suffix = _suffix(p)
    for name, suffixes in FORMATS.items():
        if suffix in suffixes:
            return name
    raise FormatError(
        f"{p}: unknown output suffix {suffix!r}; use .nii/.nii.gz, .tif/.tiff, or no suffix for a DICOM folder"
    )


@_names_file
def write(image: MetaTensor | BandSet, path: str | os.PathLike[str], *, format: str | None = None, **options: Any) -> Path:
    """Write an image atomically.

    Args:
        image: a volume, a raster or a BandSet.
        path: output file, or folder for DICOM series and band sets.
        format: ``nifti``, ``geotiff``, ``cog`` or ``dicom``; default from the suffix.
        **options: passed to the writer (for example ``dtype="float32"``).

    Returns:
        The path written.

    Raises:
        FormatError: the format cannot hold this image.
        WriteError: the output cannot be written.
    """
    from medsat_sr.image import BandSet, is_raster  # loaded already: the caller holds an image

    fmt = output_format(path, format)
    if isinstance(image, BandSet):
        if fmt not in ("dicom", "geotiff", "cog") or (fmt == "dicom" and Path(path).suffix):
            raise FormatError(f"{path}: a band set is written to a folder (no suffix), got format {fmt!r}")
        from medsat_sr.io import geotiff

        return geotiff.write_bandset(image, path, cog=fmt == "cog", **options)
    if fmt == "nifti":
        from medsat_sr.io import nifti

        return nifti.write(image, path, **options)
    if fmt in ("geotiff", "cog"):
        from medsat_sr.io import geotiff

        return geotiff.write(image, path, cog=fmt == "cog", **options)
    if is_raster(image):
        raise FormatError(f"{path}: a raster cannot be written as a DICOM series; use .tif")
    from medsat_sr.io import dicom

    return dicom.write(image, path, **options)

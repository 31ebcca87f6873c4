"""The NIfTI header, torch-free: parsed as stored, validated, and the volume it promises.

:func:`inspect` checks everything :func:`medsat_sr.io.nifti.read` checks
before it touches voxel data (header size and magic, ``vox_offset``, dims
against the file size, datatype, voxel sizes, the affine) and returns the
grid, dtype and intensity mapping the reader will give. ``medsat-sr info``
uses it directly, so describing a NIfTI file imports neither torch nor MONAI;
the reader uses it first, so the two cannot disagree.
"""

from __future__ import annotations

import gzip
import logging
import math
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from nibabel.filebasedimages import ImageFileError
from nibabel.openers import ImageOpener
from nibabel.spatialimages import HeaderDataError
from nibabel.wrapstruct import WrapStructError

from medsat_sr.errors import DataError, FormatError, GeometryError
from medsat_sr.geometry import check_affine

__all__ = ["NiftiLayout", "inspect", "read_header", "best_affine", "is_label_map", "parse_errors", "format_error"]

#: NIFTI_INTENT_LABEL: "the voxel values are indexes into a label set" (nifti1.h).
INTENT_LABEL = 1002

logger = logging.getLogger("medsat_sr.io.nifti")

def _check_readable(path: Path) -> None:
    if not path.exists():
        raise DataError(f"{path}: no such file")
    if not path.is_file():
        raise DataError(f"{path}: not a file (a NIfTI image is a .nii or .nii.gz file)")
    if not os.access(path, os.R_OK):
        raise DataError(f"{path}: file is not readable (permission denied)")


def format_error(path: Path, exc: BaseException, what: str = "cannot read NIfTI") -> FormatError:
    detail = str(exc) or type(exc).__name__
    return FormatError(f"{path}: {what}: {detail} (is the file truncated or corrupt?)")


# Exceptions nibabel and the gzip/zlib stack raise on malformed or truncated files.
def parse_errors() -> tuple[type[BaseException], ...]:
    return (
        ImageFileError,
        HeaderDataError,
        WrapStructError,
        EOFError,
        zlib.error,
        gzip.BadGzipFile,
        ValueError,
        struct.error,
    )


# nibabel's check_fix reports what it repairs through a logger; this one stays quiet.
_QUIET = logging.Logger("medsat_sr.io.nifti.quiet", level=logging.CRITICAL + 1)


def best_affine(hdr: Any) -> np.ndarray:
    """nibabel's best affine of a header as nibabel would load it (after its standard fixes)."""
    fixed = hdr.copy()
    fixed.check_fix(logger=_QUIET, error_level=logging.CRITICAL + 1)
    return np.asarray(fixed.get_best_affine(), dtype=np.float64)


def is_label_map(hdr: Any) -> bool:
    """Whether a NIfTI header marks its voxels as class labels (intent code ``NIFTI_INTENT_LABEL``)."""
    return isinstance(hdr, nib.Nifti1Header) and int(hdr["intent_code"]) == INTENT_LABEL


def read_header(path: str | os.PathLike[str]) -> Any:
    """Parse the header of a NIfTI file exactly as stored (with extensions).

    nibabel's loaded image resets ``scl_slope``, ``scl_inter`` and
    ``vox_offset`` in its header, and its header checks repair some fields
    (zero ``pixdim`` becomes 1, ``qfac`` 0 becomes 1); this returns the
    on-disk values, unrepaired.

    Args:
        path: a ``.nii`` or ``.nii.gz`` file.

    Returns:
        A ``nibabel.Nifti1Header`` or ``nibabel.Nifti2Header``.

    Raises:
        DataError: the file is missing or unreadable.
        FormatError: the file is not a valid NIfTI-1/2 single file.
    """
    p = Path(path)
    _check_readable(p)
    try:
        with ImageOpener(str(p), "rb") as fh:
            head = fh.read(4)
            if len(head) < 4:
                raise FormatError(f"{p}: file too short for a NIfTI header ({len(head)} bytes)")
            size_le = int.from_bytes(head, "little")
            size_be = int.from_bytes(head, "big")
            if 348 in (size_le, size_be):
                klass: Any = nib.Nifti1Header
            elif 540 in (size_le, size_be):
                klass = nib.Nifti2Header
            elif head[:2] == b"\x1f\x8b":  # ImageOpener decompresses by suffix only
                raise FormatError(f"{p}: gzip-compressed, but named .nii; rename it to {p.name}.gz")
            else:
                raise FormatError(f"{p}: not a NIfTI file (sizeof_hdr is {size_le}, expected 348 or 540)")
            fh.seek(0)
            fixed = fh.read(klass.template_dtype.itemsize)
            _check_vox_offset(klass(fixed, check=False), p)  # before extensions are parsed up to it
            fh.seek(0)
            hdr = klass.from_fileobj(fh, check=False)
    except FormatError:
        raise
    except parse_errors() as exc:
        raise format_error(p, exc, "cannot parse NIfTI header") from exc
    except OSError as exc:
        raise DataError(f"{p}: cannot read: {exc.strerror or exc}") from exc
    return hdr


def _check_vox_offset(hdr: Any, path: Path) -> None:
    """Refuse a ``vox_offset`` that is not finite, negative, or inside the header of a single file."""
    vox = float(hdr["vox_offset"])
    single = hdr["magic"].item() in (b"n+1", b"n+2")
    low = int(hdr.single_vox_offset) if single else 0
    if not np.isfinite(vox) or vox < low or vox > _MAX_BYTES:
        where = f"at least {low} (the header size plus its 4-byte extension flag)" if single else "at least 0"
        raise FormatError(
            f"{path}: NIfTI vox_offset is {vox:g}; expected a finite byte offset {where} (is the file corrupt?)"
        )


#: Upper bound on the voxel bytes a header may claim (1 TiB): beyond it the dims are taken as corrupt.
_MAX_BYTES = 1 << 40
#: Deflate compresses at most about 1032:1, so a .gz file of n bytes holds at most ~1032 n bytes.
_GZIP_MAX_RATIO = 1032


def _check_layout(hdr: Any, path: Path) -> None:
    """Validate dims, datatype size and vox_offset against each other and the file, before any allocation.

    Refuses a number of dimensions outside 1..7, a dimension below 1, and a
    claimed data size (``vox_offset + prod(dims) * itemsize``) that the file
    cannot hold: larger than the file when it is uncompressed, larger than
    gzip's maximum expansion of it when it is ``.gz``.
    """
    dim = [int(v) for v in hdr["dim"]]
    nd = dim[0]
    if not 1 <= nd <= 7:
        raise FormatError(f"{path}: NIfTI dim[0] (the number of dimensions) is {nd}; expected 1 to 7")
    shape = dim[1 : nd + 1]
    for axis, n in enumerate(shape):
        if n < 1:
            raise FormatError(
                f"{path}: NIfTI dimension {axis} is {n} (dim[{axis + 1}] of shape {tuple(shape)}); "
                "expected every dimension to be at least 1"
            )
    try:
        itemsize = np.dtype(hdr.get_data_dtype()).itemsize
    except Exception:  # noqa: BLE001 - an unknown datatype code; nibabel names it when loading
        return
    vox = int(float(hdr["vox_offset"]))  # finite: checked by read_header
    need = vox + math.prod(shape) * itemsize
    size = path.stat().st_size
    ext = path.suffix.lower()
    if ext == ".gz":
        if need > size * _GZIP_MAX_RATIO + 65536:
            raise FormatError(
                f"{path}: cannot read NIfTI voxel data: shape {tuple(shape)} of {hdr.get_data_dtype()} from "
                f"vox_offset {vox} needs {need} bytes, more than a {size}-byte gzip file can hold "
                "(is the file truncated or corrupt?)"
            )
    elif ext not in _COMPRESSED_SUFFIXES and need > size:
        raise FormatError(
            f"{path}: cannot read NIfTI voxel data: shape {tuple(shape)} of {hdr.get_data_dtype()} from "
            f"vox_offset {vox} needs {need} bytes, but the file has {size} (is the file truncated or corrupt?)"
        )
    elif need - vox > _MAX_BYTES:
        raise FormatError(
            f"{path}: NIfTI shape {tuple(shape)} of {hdr.get_data_dtype()} claims {need - vox} bytes of voxel "
            f"data, over the {_MAX_BYTES} byte limit (is the header corrupt?)"
        )


_COMPRESSED_SUFFIXES = (".gz", ".bz2", ".zst", ".mgz")


def _xyzc_shape(raw_shape: tuple[int, ...], path: Path) -> tuple[int, int, int, int]:
    """The ``(X, Y, Z, C)`` shape the on-disk array is viewed as."""
    nd = len(raw_shape)
    if nd <= 3:
        spatial = tuple(raw_shape) + (1,) * (3 - nd)
        return spatial + (1,)
    if nd == 4:
        return tuple(raw_shape)
    if nd == 5:
        if raw_shape[3] != 1:
            raise FormatError(
                f"{path}: 5D NIfTI shaped {raw_shape} is not supported; expected (X, Y, Z, 1, C) "
                "(a vector image), got a 4th dimension of "
                f"{raw_shape[3]}; split it into 4D files first"
            )
        return tuple(raw_shape[:3]) + (raw_shape[4],)
    raise FormatError(f"{path}: NIfTI with {nd} dimensions {raw_shape} is not supported; expected 3D, 4D or 5D")


@dataclass(frozen=True)
class NiftiLayout:
    """What a validated NIfTI header promises, before any voxel is read.

    Attributes:
        path: the file.
        header: the header as stored on disk (see :func:`read_header`).
        affine: nibabel's best affine (voxel centres to RAS mm), float64.
        form: where the affine comes from (``"sform"``, ``"qform"`` or ``"pixdim fallback"``).
        disk_shape: the array shape on disk.
        xyzc: the ``(X, Y, Z, C)`` view the reader gives (channels last on disk).
        dtype: the on-disk dtype.
        slope: ``scl_slope`` as nibabel applies it (1.0 when unscaled).
        intercept: ``scl_inter`` as nibabel applies it (0.0 when unscaled).
    """

    path: Path
    header: Any
    affine: np.ndarray
    form: str
    disk_shape: tuple[int, ...]
    xyzc: tuple[int, int, int, int]
    dtype: np.dtype
    slope: float
    intercept: float


def _check_voxel_sizes(hdr: Any, path: Path, form: str) -> None:
    """nibabel silently turns a zero voxel size into 1 mm when there is no sform; refuse it instead."""
    dims = [int(v) for v in hdr["dim"][1:4]]
    pix = [float(v) for v in hdr["pixdim"][1:4]]
    bad = [i for i in range(3) if dims[i] > 1 and not (np.isfinite(pix[i]) and pix[i] != 0.0)]
    if bad:
        raise GeometryError(
            f"{path} ({form}, qform_code={int(hdr['qform_code'])}): voxel size pixdim[1:4] = {pix} is zero or "
            f"not finite on axis {bad}; expected positive voxel sizes"
        )


def _slope_inter(hdr: Any, path: Path) -> tuple[float, float]:
    """``scl_slope``/``scl_inter`` as nibabel's array proxy applies them (unscaled: 1 and 0)."""
    try:
        slope, inter = hdr.get_slope_inter()
    except HeaderDataError as exc:
        raise format_error(path, exc, "cannot read NIfTI scaling") from exc
    return (1.0 if slope is None else float(slope)), (0.0 if inter is None else float(inter))


def inspect(path: str | os.PathLike[str]) -> NiftiLayout:
    """Validate a NIfTI-1/2 file's header against itself and the file; describe the volume it holds.

    Args:
        path: a ``.nii`` or ``.nii.gz`` file.

    Returns:
        The :class:`NiftiLayout` (no voxel data is read).

    Raises:
        DataError: the file is missing or unreadable.
        FormatError: the file is not NIfTI, is truncated or corrupt, or has a
            layout medsat_sr does not support (RGB, complex, 5D with time).
        GeometryError: the affine is zero, NaN or singular.
    """
    p = Path(path)
    hdr = read_header(p)
    _check_layout(hdr, p)  # dims, vox_offset and data size, before anything is allocated
    sform_code, qform_code = int(hdr["sform_code"]), int(hdr["qform_code"])
    form = "sform" if sform_code > 0 else "qform" if qform_code > 0 else "pixdim fallback"
    if sform_code <= 0:
        _check_voxel_sizes(hdr, p, form)
    try:
        dtype = np.dtype(hdr.get_data_dtype())
    except (HeaderDataError, KeyError) as exc:
        raise format_error(p, exc, f"unknown NIfTI datatype code {int(hdr['datatype'])}") from exc
    if dtype.fields is not None or dtype.kind not in "uif":
        raise FormatError(
            f"{p}: NIfTI datatype {hdr.get_value_label('datatype')} ({dtype}) is not supported; "
            "expected an integer or real floating-point type"
        )
    affine = best_affine(hdr)
    check_affine(affine, what=f"{p} ({form}, sform_code={sform_code}, qform_code={qform_code})")
    if sform_code == 0 and qform_code == 0:
        logger.warning(
            "%s: sform_code and qform_code are both 0 (no world space); using the pixdim-only "
            "fallback affine, as nibabel and MONAI do",
            p,
        )
    disk_shape = tuple(int(n) for n in hdr.get_data_shape())
    slope, inter = _slope_inter(hdr, p)
    return NiftiLayout(path=p, header=hdr, affine=affine, form=form, disk_shape=disk_shape,
                       xyzc=_xyzc_shape(disk_shape, p), dtype=dtype, slope=slope, intercept=inter)

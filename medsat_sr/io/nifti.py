"""NIfTI-1 / NIfTI-2 reader and writer (nibabel).

Reading gives a volume (see :mod:`medsat_sr.image`):

* data: float32 in physical units (``scl_slope`` / ``scl_inter`` applied),
  shaped ``(C, X, Y, Z)``. A 3D file has ``C = 1``; the 4th dimension of a
  4D file (time points, echoes, ...) becomes the channels; a 5D file is
  accepted only when its 4th dimension is 1 (the NIfTI layout of vector
  images: ``(X, Y, Z, 1, C)``). 1D and 2D files get singleton axes.
* ``.affine``: nibabel's best affine, i.e. the sform when ``sform_code > 0``,
  else the qform when ``qform_code > 0``, else (with a warning) the
  pixdim-only fallback. It maps voxel centres to RAS mm, as in MONAI.
* meta ``source_dtype``: the on-disk dtype; ``intensity``: ``{"slope",
  "intercept"}`` as nibabel applies them (identity when the file has no
  scaling); ``header``: a copy of the header *as stored on disk* (nibabel's
  loaded header resets ``scl_slope``, ``scl_inter`` and ``vox_offset``, so the
  reader parses the header bytes itself). It keeps the qform/sform codes,
  ``xyzt_units``, ``descrip``, intent, ``pixdim[4]`` (TR), calibration and
  slice-timing fields and the header extensions.

Writing (:func:`write`) follows the dtype policy of DESIGN.md §3:

* default: the source dtype, values mapped back with the source intensity
  mapping (``raw = round((phys - intercept) / slope)``), clipped to the
  dtype's range, with the source ``scl_slope``/``scl_inter`` written verbatim;
* ``dtype="float32"`` (or ``"float64"``): physical values, unscaled
  (``scl_slope = NaN``);
* another integer dtype: the source mapping (identity when none), rounded
  and clipped.

Every header field of the source is kept. Only what describes the new image
changes: dims, datatype/bitpix, the scaling fields when the dtype changes,
and the geometry (sform, qform and pixdim[0:4]) when the affine or the grid
changed. A NIfTI -> NIfTI round trip of an unmodified image is therefore
byte-identical in the header. Volumes that did not come from NIfTI (for
example DICOM, whose header is a pydicom Dataset) get a fresh header with
``qform_code = sform_code = 1`` (scanner) for DICOM, ``2`` (aligned)
otherwise, units mm and s, and a ``descrip`` naming the source.

Precision: float32 holds integers exactly up to 2**24; int32/uint32/int64
data beyond that range, and float64 data, lose precision in memory.
"""

from __future__ import annotations

import gzip
import logging
import math
import os
import struct
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch
from monai.data import MetaTensor
from nibabel.filebasedimages import ImageFileError
from nibabel.openers import ImageOpener
from nibabel.spatialimages import HeaderDataError
from nibabel.volumeutils import array_to_file
from nibabel.wrapstruct import WrapStructError

from medsat_sr._atomic import atomic_path
from medsat_sr._version import __version__
from medsat_sr.errors import ConfigError, DataError, FormatError, GeometryError, WriteError
from medsat_sr.image import Key, check_affine, is_raster, make_volume

__all__ = ["read", "write", "read_header", "SUFFIXES", "DTYPES"]

logger = logging.getLogger(__name__)

#: Suffixes this module reads and writes (single-file NIfTI).
SUFFIXES: tuple[str, ...] = (".nii", ".nii.gz")

#: On-disk dtypes the writer accepts.
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

#: (qform_code, sform_code) for a fresh header, by source format.
_DEFAULT_CODES: dict[str | None, tuple[int, int]] = {"dicom": (1, 1)}
_FALLBACK_CODES = (2, 2)  # "aligned": world space of unknown provenance

#: Tolerance (mm) under which an affine counts as unchanged (float32 header storage is coarser).
_AFFINE_ATOL = 1e-6

_DESCRIP_LEN = 80


# --------------------------------------------------------------------------- reading


def _check_readable(path: Path) -> None:
    if not path.exists():
        raise DataError(f"{path}: no such file")
    if not path.is_file():
        raise DataError(f"{path}: not a file (a NIfTI image is a .nii or .nii.gz file)")
    if not os.access(path, os.R_OK):
        raise DataError(f"{path}: file is not readable (permission denied)")


def _format_error(path: Path, exc: BaseException, what: str = "cannot read NIfTI") -> FormatError:
    detail = str(exc) or type(exc).__name__
    return FormatError(f"{path}: {what}: {detail} (is the file truncated or corrupt?)")


# Exceptions nibabel and the gzip/zlib stack raise on malformed or truncated files.
def _parse_errors() -> tuple[type[BaseException], ...]:
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
_QUIET = logging.Logger(f"{__name__}.quiet", level=logging.CRITICAL + 1)


def _best_affine(hdr: Any) -> np.ndarray:
    """nibabel's best affine of a header as nibabel would load it (after its standard fixes)."""
    fixed = hdr.copy()
    fixed.check_fix(logger=_QUIET, error_level=logging.CRITICAL + 1)
    return np.asarray(fixed.get_best_affine(), dtype=np.float64)


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
            else:
                raise FormatError(f"{p}: not a NIfTI file (sizeof_hdr is {size_le}, expected 348 or 540)")
            fh.seek(0)
            fixed = fh.read(klass.template_dtype.itemsize)
            _check_vox_offset(klass(fixed, check=False), p)  # before extensions are parsed up to it
            fh.seek(0)
            hdr = klass.from_fileobj(fh, check=False)
    except FormatError:
        raise
    except _parse_errors() as exc:
        raise _format_error(p, exc, "cannot parse NIfTI header") from exc
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


def read(path: str | os.PathLike[str]) -> MetaTensor:
    """Read a NIfTI-1 or NIfTI-2 file (``.nii`` or ``.nii.gz``).

    Args:
        path: the file.

    Returns:
        A volume ``(C, X, Y, Z)``, float32 in physical units, whose
        ``.affine`` is nibabel's best affine (voxel centres to RAS mm). See
        the module docstring for the meta keys.

    Raises:
        DataError: the file is missing or unreadable.
        FormatError: the file is not NIfTI, is truncated or corrupt, or has a
            layout medsat_sr does not support (RGB, complex, 5D with time).
        GeometryError: the affine is zero, NaN or singular.
    """
    p = Path(path)
    hdr = read_header(p)  # validates the file and gives the on-disk header
    _check_layout(hdr, p)  # dims, vox_offset and data size, before nibabel allocates anything
    sform_code, qform_code = int(hdr["sform_code"]), int(hdr["qform_code"])
    form = "sform" if sform_code > 0 else "qform" if qform_code > 0 else "pixdim fallback"
    if sform_code <= 0:
        # nibabel silently turns a zero voxel size into 1 mm; refuse it instead
        dims = [int(v) for v in hdr["dim"][1:4]]
        pix = [float(v) for v in hdr["pixdim"][1:4]]
        bad = [i for i in range(3) if dims[i] > 1 and not (np.isfinite(pix[i]) and pix[i] != 0.0)]
        if bad:
            raise GeometryError(
                f"{p} ({form}, qform_code={qform_code}): voxel size pixdim[1:4] = {pix} is zero or not "
                f"finite on axis {bad}; expected positive voxel sizes"
            )
    try:
        img = nib.load(str(p))
    except _parse_errors() as exc:
        raise _format_error(p, exc) from exc
    except OSError as exc:
        raise DataError(f"{p}: cannot read: {exc.strerror or exc}") from exc
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image, nib.Nifti1Pair, nib.Nifti2Pair)):
        raise FormatError(f"{p}: nibabel reads this as {type(img).__name__}, expected a NIfTI image")

    dtype = np.dtype(hdr.get_data_dtype())
    if dtype.fields is not None or dtype.kind not in "uif":
        raise FormatError(
            f"{p}: NIfTI datatype {hdr.get_value_label('datatype')} ({dtype}) is not supported; "
            "expected an integer or real floating-point type"
        )

    affine = np.asarray(img.affine, dtype=np.float64)
    check_affine(affine, what=f"{p} ({form}, sform_code={sform_code}, qform_code={qform_code})")
    if sform_code == 0 and qform_code == 0:
        logger.warning(
            "%s: sform_code and qform_code are both 0 (no world space); using the pixdim-only "
            "fallback affine, as nibabel and MONAI do",
            p,
        )

    slope = float(img.dataobj.slope)
    inter = float(img.dataobj.inter)
    target = _xyzc_shape(tuple(int(n) for n in img.shape), p)
    try:
        raw = np.asanyarray(img.dataobj.get_unscaled())
        raw = raw.reshape(target)  # only singleton axes are added or removed
        data = np.empty((target[3],) + target[:3], dtype=np.float32)
        identity = slope == 1.0 and inter == 0.0
        for c in range(target[3]):
            chunk = raw[..., c]
            if identity:
                data[c] = chunk
            else:
                # float64 arithmetic, then one rounding to float32
                data[c] = chunk.astype(np.float64) * slope + inter
    except _parse_errors() as exc:
        raise _format_error(p, exc, "cannot read NIfTI voxel data") from exc
    except OSError as exc:
        raise _format_error(p, exc, "cannot read NIfTI voxel data") from exc

    return make_volume(
        data,
        affine,
        source_dtype=dtype.name,
        intensity={"slope": slope, "intercept": inter},
        source_format="nifti",
        source_path=str(p),
        header=hdr.copy(),
    )


# --------------------------------------------------------------------------- writing


def _output_suffix_ok(path: Path) -> bool:
    name = path.name.lower()
    return name.endswith(".nii") or name.endswith(".nii.gz")


def _image_parts(image: Any) -> tuple[np.ndarray, np.ndarray, Mapping[str, Any]]:
    """Validate ``image`` and return its data (C, X, Y, Z), affine and meta."""
    if isinstance(image, MetaTensor) and is_raster(image):
        raise FormatError("nifti.write needs a volume (C, X, Y, Z); got a raster; write rasters as .tif")
    if not isinstance(image, torch.Tensor):
        raise FormatError(f"nifti.write needs a MetaTensor volume, got {type(image).__name__}")
    if image.ndim != 4:
        raise GeometryError(f"nifti.write needs a volume shaped (C, X, Y, Z), got shape {tuple(image.shape)}")
    meta: Mapping[str, Any] = dict(getattr(image, "meta", {}) or {})
    affine = getattr(image, "affine", None)
    if affine is None:
        raise GeometryError("nifti.write needs an image with an affine")
    aff = np.asarray(affine.detach().cpu().numpy() if isinstance(affine, torch.Tensor) else affine, dtype=np.float64)
    if aff.shape != (4, 4):
        raise GeometryError(f"nifti.write needs a 4x4 affine, got shape {aff.shape}")
    check_affine(aff, what="nifti.write")
    data = image.detach().cpu()
    if isinstance(data, MetaTensor):
        data = data.as_tensor()
    if data.dtype in (torch.float16, torch.bfloat16):  # numpy has no bfloat16
        data = data.float()
    return data.numpy(), aff, meta


def _target_dtype(dtype: str | None, meta: Mapping[str, Any]) -> np.dtype:
    name = dtype if dtype is not None else meta.get(Key.SOURCE_DTYPE) or "float32"
    try:
        dt = np.dtype(name)
    except TypeError as exc:
        raise ConfigError(f"invalid dtype {name!r}; expected one of {list(DTYPES)}") from exc
    if dt.name not in DTYPES:
        raise ConfigError(f"dtype {dt.name!r} cannot be written to NIfTI; expected one of {list(DTYPES)}")
    return dt


def _intensity(meta: Mapping[str, Any]) -> tuple[float, float]:
    inten = meta.get(Key.INTENSITY) or {}
    slope = float(inten.get("slope", 1.0) if inten.get("slope") is not None else 1.0)
    inter = float(inten.get("intercept", 0.0) if inten.get("intercept") is not None else 0.0)
    if not np.isfinite(slope) or slope == 0.0:
        slope = 1.0
    if not np.isfinite(inter):
        inter = 0.0
    return slope, inter


def _to_raw(data: np.ndarray, dt: np.dtype, slope: float, inter: float) -> np.ndarray:
    """Map physical values to stored values of dtype ``dt`` (round and clip for integers)."""
    identity = slope == 1.0 and inter == 0.0
    if dt.kind == "f":
        if identity:
            return data.astype(dt, copy=False)
        return ((data.astype(np.float64) - inter) / slope).astype(dt)
    info = np.iinfo(dt)
    out = np.empty(data.shape, dtype=dt)
    n_nan = n_clip = 0
    for c in range(data.shape[0]):  # one channel at a time bounds the float64 temporary
        vals = data[c].astype(np.float64)
        if not identity:
            vals = (vals - inter) / slope
        nan = np.isnan(vals)
        if nan.any():
            n_nan += int(nan.sum())
            vals[nan] = 0.0
        vals = np.rint(vals)
        low, high = vals < info.min, vals > info.max
        n_clip += int(low.sum() + high.sum())
        np.clip(vals, info.min, info.max, out=vals)
        out[c] = vals
    if n_nan:
        logger.warning("%d NaN voxels written as stored value 0 (%s has no NaN)", n_nan, dt.name)
    if n_clip:
        logger.warning("%d voxels clipped to the %s range [%d, %d]", n_clip, dt.name, info.min, info.max)
    return out


def _disk_shape(spatial: tuple[int, int, int], channels: int, src: Any | None) -> tuple[int, ...]:
    """On-disk shape: 3D for one channel, 4D for several, the source layout when it fits."""
    if src is not None:
        dim = [int(v) for v in src["dim"]]
        nd = dim[0]
        if nd == 5 and dim[4] == 1 and dim[5] == channels:
            return spatial + (1, channels)
        if nd == 4 and channels == 1 and dim[4] == 1:
            return spatial + (1,)
        if nd < 3 and channels == 1 and all(s == 1 for s in spatial[nd:]) and all(
            s == d for s, d in zip(spatial[:nd], dim[1 : nd + 1])
        ):
            return spatial[:nd]
    if channels == 1:
        return spatial
    return spatial + (channels,)


def _fresh_header(meta: Mapping[str, Any], nifti2: bool) -> tuple[Any, tuple[int, int]]:
    hdr = nib.Nifti2Header() if nifti2 else nib.Nifti1Header()
    fmt = meta.get(Key.SOURCE_FORMAT)
    hdr.set_xyzt_units("mm", "sec")
    src = meta.get(Key.HEADER)
    descrip = f"medsat_sr {__version__} from {fmt or 'memory'}"
    series = getattr(src, "SeriesDescription", None) if src is not None else None
    if series:
        descrip += f": {series}"
    hdr["descrip"] = descrip.encode("ascii", "replace")[: _DESCRIP_LEN - 1]
    tr = getattr(src, "RepetitionTime", None) if src is not None else None
    if tr is not None:
        try:
            hdr["pixdim"][4] = float(tr) / 1000.0  # DICOM RepetitionTime is in ms; NIfTI t unit is s
        except (TypeError, ValueError):
            pass
    return hdr, _DEFAULT_CODES.get(fmt, _FALLBACK_CODES)


def _set_geometry(hdr: Any, affine: np.ndarray, qcode: int, scode: int) -> None:
    """Write ``affine`` into sform and qform with the given codes (qform shears stripped)."""
    hdr.set_sform(affine, code=scode)
    hdr.set_qform(affine, code=qcode, strip_shears=True)
    q = hdr.get_qform()
    exact = np.allclose(q, affine, rtol=0, atol=1e-4 * max(1.0, float(np.abs(affine[:3, :3]).max())))
    if not exact:
        if scode == 0:
            # The qform cannot hold this affine (shear); keep it exactly in the sform instead.
            hdr["sform_code"] = qcode if qcode > 0 else _FALLBACK_CODES[1]
            logger.info("affine has shear; stored in the sform (code %d), the qform approximates it", int(hdr["sform_code"]))
        else:
            logger.debug("affine has shear; the qform approximates it, the sform holds it exactly")


def _output_header(
    meta: Mapping[str, Any],
    channels: int,
    spatial: tuple[int, int, int],
    affine: np.ndarray,
    dt: np.dtype,
    *,
    explicit: bool,
) -> tuple[Any, tuple[int, ...], float, float]:
    """Build the header to write; return it, the on-disk shape and the value mapping."""
    src = meta.get(Key.HEADER)
    is_nifti = isinstance(src, (nib.Nifti1Header, nib.Nifti2Header))
    slope, inter = _intensity(meta)
    src_dtype = str(meta.get(Key.SOURCE_DTYPE) or "")
    same_dtype = dt.name == src_dtype
    float_request = dt.kind == "f" and (explicit or not same_dtype)

    disk_shape = _disk_shape(spatial, channels, src if is_nifti else None)
    big = max(disk_shape) > 32767
    if is_nifti:
        hdr = src.copy()
        if big and isinstance(hdr, nib.Nifti1Header) and not isinstance(hdr, nib.Nifti2Header):
            hdr = nib.Nifti2Header.from_header(hdr)
            logger.info("shape %s exceeds NIfTI-1 limits; writing NIfTI-2", disk_shape)
        if hdr["magic"] not in (b"n+1", b"n+2"):  # header from a .hdr/.img pair
            hdr["magic"] = b"n+2" if isinstance(hdr, nib.Nifti2Header) else b"n+1"
            hdr["vox_offset"] = 0
        src_affine = _best_affine(src)
        src_shape = tuple(int(v) for v in src["dim"][1 : int(src["dim"][0]) + 1])
        geometry_same = src_shape == disk_shape and np.allclose(affine, src_affine, rtol=0, atol=_AFFINE_ATOL)
        qcode, scode = int(src["qform_code"]), int(src["sform_code"])
        if qcode == 0 and scode == 0:
            qcode, scode = _FALLBACK_CODES
    else:
        hdr, (qcode, scode) = _fresh_header(meta, big)
        geometry_same = False

    try:
        if not (is_nifti and same_dtype):
            hdr.set_data_dtype(dt)
        if tuple(int(v) for v in hdr["dim"][1 : int(hdr["dim"][0]) + 1]) != disk_shape:
            kept = np.array(hdr["pixdim"][4:], copy=True)
            hdr.set_data_shape(disk_shape)
            hdr["pixdim"][4:] = kept  # nibabel resets pixdim past ndim; TR lives in pixdim[4] even in 3D
        if not geometry_same:
            if is_nifti:
                old = src_shape
                slice_dim = hdr.get_dim_info()[2]
                if slice_dim is not None and (
                    slice_dim >= len(disk_shape) or slice_dim >= len(old) or disk_shape[slice_dim] != old[slice_dim]
                ):
                    # slice timing no longer describes the grid
                    hdr["slice_start"] = 0
                    hdr["slice_end"] = 0
                    hdr["slice_code"] = 0
                    hdr["slice_duration"] = 0
            _set_geometry(hdr, affine, qcode, scode)
        # value mapping and the scaling fields
        if float_request:
            hdr.set_slope_inter(None, None)
            slope, inter = 1.0, 0.0
        elif is_nifti and same_dtype:
            pass  # the source scl_slope / scl_inter stay verbatim
        elif slope == 1.0 and inter == 0.0:
            hdr.set_slope_inter(None, None)
        else:
            hdr.set_slope_inter(slope, inter)
        vox = float(hdr["vox_offset"])
        min_vox = hdr.single_vox_offset + hdr.extensions.get_sizeondisk()
        if vox < min_vox:
            hdr["vox_offset"] = 0  # nibabel sets the minimum on write
    except HeaderDataError as exc:
        raise FormatError(f"cannot build a NIfTI header for shape {disk_shape} and dtype {dt.name}: {exc}") from exc
    return hdr, disk_shape, slope, inter


def write(image: MetaTensor, path: str | os.PathLike[str], *, dtype: str | None = None) -> Path:
    """Write a volume to ``.nii`` or ``.nii.gz``, atomically.

    Args:
        image: a volume ``(C, X, Y, Z)`` with its affine (voxel centres to RAS mm).
        path: output file; ``.nii.gz`` is gzip-compressed.
        dtype: on-disk dtype. ``None`` (default) uses the source dtype and
            intensity mapping (rounded and clipped); ``"float32"`` or
            ``"float64"`` write physical values unscaled; another integer
            dtype uses the source mapping. One of :data:`DTYPES`.

    Returns:
        The path written.

    Raises:
        FormatError: ``image`` is not a volume, or ``path`` is not ``.nii``/``.nii.gz``.
        GeometryError: the image has no valid affine or the wrong rank.
        ConfigError: ``dtype`` is not a NIfTI dtype.
        WriteError: the output folder is missing or not writable, or the write failed.
    """
    p = Path(path)
    if not _output_suffix_ok(p):
        raise FormatError(f"{p}: a NIfTI output must end with .nii or .nii.gz, got {p.name!r}")
    data, affine, meta = _image_parts(image)
    dt = _target_dtype(dtype, meta)
    channels, spatial = int(data.shape[0]), tuple(int(v) for v in data.shape[1:])
    hdr, disk_shape, slope, inter = _output_header(meta, channels, spatial, affine, dt, explicit=dtype is not None)
    raw = _to_raw(data, dt, slope, inter)
    # (C, X, Y, Z) -> (X, Y, Z, C), then the on-disk layout (3D, 4D, 5D vector, or fewer dims)
    disk = np.moveaxis(raw, 0, -1).reshape(disk_shape)
    out_dtype = hdr.get_data_dtype()
    with atomic_path(p) as tmp:
        try:
            with ImageOpener(str(tmp), "wb") as fh:
                hdr.write_to(fh)
                array_to_file(disk, fh, out_dtype, offset=int(hdr.get_data_offset()), order="F", nan2zero=False)
        except OSError:
            raise
        except Exception as exc:  # nibabel header/array errors during the write
            raise WriteError(f"{p}: NIfTI write failed: {exc}") from exc
    logger.debug("wrote %s: shape %s, dtype %s", p, disk_shape, dt.name)
    return p

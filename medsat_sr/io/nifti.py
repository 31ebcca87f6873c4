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

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch
from monai.data import MetaTensor
from nibabel.openers import ImageOpener
from nibabel.spatialimages import HeaderDataError
from nibabel.volumeutils import array_to_file

from medsat_sr._atomic import atomic_path
from medsat_sr._version import __version__
from medsat_sr.errors import DataError, FormatError, GeometryError, WriteError
from medsat_sr.geometry import check_affine
from medsat_sr.image import NUMERIC_DTYPES, Key, is_raster, make_volume, writable_dtype
from medsat_sr.io.nifti_header import best_affine, format_error, inspect, parse_errors, read_header

__all__ = ["read", "write", "read_header", "SUFFIXES", "DTYPES"]

logger = logging.getLogger(__name__)

#: Suffixes this module reads and writes (single-file NIfTI).
SUFFIXES: tuple[str, ...] = (".nii", ".nii.gz")

#: On-disk dtypes the writer accepts.
DTYPES: tuple[str, ...] = NUMERIC_DTYPES

#: (qform_code, sform_code) for a fresh header, by source format.
_DEFAULT_CODES: dict[str | None, tuple[int, int]] = {"dicom": (1, 1)}
_FALLBACK_CODES = (2, 2)  # "aligned": world space of unknown provenance

#: Tolerance (mm) under which an affine counts as unchanged (float32 header storage is coarser).
_AFFINE_ATOL = 1e-6

_DESCRIP_LEN = 80


# --------------------------------------------------------------------------- reading


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
    lay = inspect(path)  # validates the header against itself and the file; no voxel data yet
    p = lay.path
    try:
        img = nib.load(str(p))
    except parse_errors() as exc:
        raise format_error(p, exc) from exc
    except OSError as exc:
        raise DataError(f"{p}: cannot read: {exc.strerror or exc}") from exc
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image, nib.Nifti1Pair, nib.Nifti2Pair)):
        raise FormatError(f"{p}: nibabel reads this as {type(img).__name__}, expected a NIfTI image")
    slope, inter = lay.slope, lay.intercept
    target = lay.xyzc
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
    except (*parse_errors(), OSError) as exc:
        raise format_error(p, exc, "cannot read NIfTI voxel data") from exc

    return make_volume(
        data,
        lay.affine,
        source_dtype=lay.dtype.name,
        intensity={"slope": slope, "intercept": inter},
        source_format="nifti",
        source_path=str(p),
        header=lay.header.copy(),
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
    return writable_dtype(name, "NIfTI")


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
    n_nan = n_low = n_high = 0
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
        n_low += int(low.sum())
        n_high += int(high.sum())
        np.clip(vals, info.min, info.max, out=vals)
        out[c] = vals
    if n_nan:
        logger.warning("%d NaN voxels written as stored value 0 (%s has no NaN)", n_nan, dt.name)
    if n_low or n_high:  # below: typically an SR overshoot next to edges, where the type holds no negatives
        logger.warning("%d voxels clipped to the %s range [%d, %d] (%d below, %d above; %.3g %% of the volume)",
                       n_low + n_high, dt.name, info.min, info.max, n_low, n_high,
                       100.0 * (n_low + n_high) / max(data.size, 1))
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
        src_affine = best_affine(src)
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

"""DICOM derived-series writer: one volume to a new series of single-frame files.

``write(image, folder)`` writes a derived series (DESIGN.md §3), atomically:

* One single-frame file per slice and volume (``IM00001.dcm``, ...),
  Explicit VR Little Endian. A multi-channel volume is written as a 4D series:
  every channel repeats the slice positions, with TemporalPositionIdentifier
  = channel + 1, so both this reader and dcm2niix read it back as 4D.
* New SeriesInstanceUID and SOPInstanceUIDs. StudyInstanceUID,
  FrameOfReferenceUID, patient and study attributes and the acquisition
  parameters are kept when the source header is a DICOM data set. Private
  tags and per-frame/enhanced attributes are dropped; stale pixel statistics
  and LUTs are removed.
* ImageType ``DERIVED\\SECONDARY`` (plus ``AXIAL`` for CT, which requires a
  third value), DerivationDescription (``derivation=`` or a default naming
  medsat_sr and the source), SeriesDescription (``series_description=`` or
  the source's with `` (medsat_sr)``), SeriesNumber = source + 1000.
* Geometry from the affine: ImageOrientationPatient from its first two
  columns, PixelSpacing from their lengths, one ImagePositionPatient per
  slice (``origin + k * slice column``, so sheared affines are written
  exactly, slice by slice), SliceThickness and SpacingBetweenSlices = the
  step along the normal (SliceThickness keeps the source's value when the
  spacing is unchanged), SliceLocation = position along the normal, and
  GantryDetectorTilt only when the affine is sheared by the source's tilt.
  Affines whose first two axes are not orthogonal cannot be expressed and
  are refused.
* Pixels: ``dtype=`` one of ``uint8``, ``int16``, ``uint16``; default the
  source dtype when it is one of those, else int16 (uint16 if no value is
  negative). The source RescaleSlope/Intercept is kept when the rounded
  values fit the dtype; otherwise a new slope/intercept spanning the value
  range is chosen (logged). Values are rounded to the nearest stored integer.
  ``float32`` is refused: CT/MR images hold integers (use NIfTI for float).
* Defaults when the image has no DICOM header (for example one read from
  NIfTI): PatientName ``ANONYMOUS``, PatientID ``MEDSAT_SR``, new
  StudyInstanceUID and FrameOfReferenceUID, study date/time = now,
  PatientPosition ``HFS`` (:data:`DEFAULT_PATIENT_POSITION`; NIfTI does not
  record it, and the geometry is carried by the positions and orientation
  anyway), Manufacturer and ManufacturerModelName ``medsat_sr``
  (:data:`DEFAULT_MANUFACTURER`, also used when a DICOM source names none),
  SoftwareVersions ``medsat_sr <version>``, Modality
  from ``meta["modality"]`` else ``OT``. dcm2niix converts such a series
  without warnings. SOP class: CT Image Storage for CT,
  MR Image Storage for MR (placeholder ScanningSequence ``RM`` and
  SequenceVariant ``NONE`` when unknown), Secondary Capture Image Storage
  otherwise and for uint8 output.
"""

from __future__ import annotations

import datetime as _dt
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from monai.data import MetaTensor
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    UID,
    CTImageStorage,
    ExplicitVRLittleEndian,
    MRImageStorage,
    SecondaryCaptureImageStorage,
    generate_uid,
)
from pydicom.valuerep import format_number_as_ds

from medsat_sr._atomic import atomic_dir
from medsat_sr._version import __version__
from medsat_sr.errors import ConfigError, FormatError, GeometryError
from medsat_sr.geometry import check_affine
from medsat_sr.image import Key, is_raster
from medsat_sr.io.dicom_base import _LPS_RAS, _PIXEL_DATA_TAG, _put
from medsat_sr.io.dicom_modules import (
    DEFAULT_MANUFACTURER,
    DEFAULT_PATIENT_POSITION,
    _image_identity,
    _kept_attributes,
    _patient_and_study,
    _pixel_module,
    _plane_geometry,
    _series_identity,
)

__all__ = ["write", "WRITE_DTYPES", "DEFAULT_PATIENT_POSITION", "DEFAULT_MANUFACTURER"]

#: The reader's logger: the writer's messages have always been logged as ``medsat_sr.io.dicom``.
logger = logging.getLogger("medsat_sr.io.dicom")

#: Output pixel dtypes the writer accepts.
WRITE_DTYPES = ("uint8", "int16", "uint16")

#: Largest |cos| between the in-plane axes that the writer absorbs by orthogonalising the column direction:
#: cosines rounded to 4 digits give up to ~1.5e-4; the shift is then < 0.05 mm across 256 mm.
_WRITE_SHEAR_TOL = 2e-4


@dataclass(frozen=True)
class _SliceGeometry:
    """Where the slices of a volume lie, in DICOM's LPS patient coordinates.

    Attributes:
        origin: position of voxel (0, 0, 0), mm.
        step: from one slice to the next (the affine's third column), mm.
        row: unit vector along X (ImageOrientationPatient's first three values).
        col: unit vector along Y, orthogonalised against ``row``.
        normal: ``row x col``.
        du: spacing along X (PixelSpacing[1]), mm.
        dv: spacing along Y (PixelSpacing[0]), mm.
        step_len: slice spacing along the normal, mm.
        tilt_deg: angle between ``step`` and the normal (gantry tilt of a sheared affine).
    """

    origin: np.ndarray
    step: np.ndarray
    row: np.ndarray
    col: np.ndarray
    normal: np.ndarray
    du: float
    dv: float
    step_len: float
    tilt_deg: float


@dataclass(frozen=True)
class _Encoding:
    """How values become stored integers: ``stored = rint((value - intercept) / slope)`` in ``dtype``.

    Attributes:
        dtype: the stored pixel dtype (one of :data:`WRITE_DTYPES`).
        slope_ds: RescaleSlope as written (a DS string).
        intercept_ds: RescaleIntercept as written (a DS string).
        slope: ``slope_ds`` as a float.
        intercept: ``intercept_ds`` as a float.
        vmin: the smallest value of the volume.
        vmax: the largest value of the volume.
    """

    dtype: np.dtype
    slope_ds: str
    intercept_ds: str
    slope: float
    intercept: float
    vmin: float
    vmax: float


def _ds_pair(slope: float, intercept: float) -> tuple[str, str, float, float]:
    """Slope and intercept as DS strings and as the floats those strings hold."""
    s, b = format_number_as_ds(float(slope)), format_number_as_ds(float(intercept))
    return s, b, float(s), float(b)


def _choose_mapping(
    vmin: float, vmax: float, dtype: np.dtype, preferred: tuple[float, float] | None
) -> tuple[str, str, float, float, bool]:
    """RescaleSlope/Intercept (as DS strings and floats) that fit [vmin, vmax] into ``dtype``.

    Returns ``(slope_str, intercept_str, slope, intercept, kept_preferred)``.
    """
    info = np.iinfo(dtype)
    if preferred is not None:
        ps, pb = preferred
        if math.isfinite(ps) and math.isfinite(pb) and ps > 0:
            s_str, b_str, s, b = _ds_pair(ps, pb)
            qmin, qmax = np.rint((vmin - b) / s), np.rint((vmax - b) / s)
            if info.min <= qmin and qmax <= info.max:
                return s_str, b_str, s, b, True
    lo, hi = int(info.min) + 1, int(info.max) - 1  # one step of margin against DS rounding
    if vmax - vmin <= 0:
        s_str, b_str, s, b = _ds_pair(1.0, vmin)
        return s_str, b_str, s, b, False
    slope = (vmax - vmin) / (hi - lo)
    s_str, b_str, s, b = _ds_pair(slope, vmin - lo * slope)
    return s_str, b_str, s, b, False


def _target_dtype(requested: str | None, source: str | None, vmin: float) -> np.dtype:
    """The stored dtype: ``requested`` when given, else the source's when writable, else int16/uint16.

    Raises:
        ConfigError: ``requested`` is not a dtype name.
        FormatError: ``requested`` is a dtype DICOM output does not take.
    """
    if requested is not None:
        try:
            name = np.dtype(requested).name
        except TypeError as exc:
            raise ConfigError(f"dtype must be one of {', '.join(WRITE_DTYPES)}, got {requested!r}") from exc
        if name not in WRITE_DTYPES:
            raise FormatError(
                f"DICOM output dtype must be one of {', '.join(WRITE_DTYPES)}, got {name!r}; CT/MR images hold "
                "integers (float values are re-encoded with RescaleSlope/Intercept); use NIfTI for float32"
            )
        return np.dtype(name)
    if source in WRITE_DTYPES:
        return np.dtype(source)
    return np.dtype("int16" if vmin < 0 else "uint16")


def _now() -> tuple[str, str]:
    """The date and time now, as DICOM DA and TM strings."""
    now = _dt.datetime.now()
    return now.strftime("%Y%m%d"), now.strftime("%H%M%S.%f")


# --------------------------------------------------------------------------------------
# Validation and planning
# --------------------------------------------------------------------------------------


def _checked_volume(
    image: Any, folder: str | os.PathLike[str], series_description: Any, derivation: Any
) -> tuple[np.ndarray, np.ndarray]:
    """Check what :func:`write` was given; return the values ``(C, X, Y, Z)`` and the float64 affine.

    Boolean values come back as uint8.

    Raises:
        ConfigError: ``series_description`` or ``derivation`` is not a string.
        FormatError: not a volume MetaTensor, a shape DICOM cannot hold, or non-finite values.
        GeometryError: an affine that is not 4x4 or not invertible.
    """
    if not isinstance(image, MetaTensor) or image.ndim != 4 or is_raster(image):
        shape = tuple(getattr(image, "shape", ()))
        raise FormatError(
            "a DICOM series is written from a volume MetaTensor shaped (C, X, Y, Z), "
            f"got {type(image).__name__} {shape}"
        )
    for name, value in (("series_description", series_description), ("derivation", derivation)):
        if value is not None and not isinstance(value, str):
            raise ConfigError(f"{name} must be a string, got {value!r}")
    data = np.asarray(image.detach().cpu().numpy())
    if data.dtype == np.bool_:
        data = data.astype(np.uint8)
    c, nx, ny, nz = data.shape
    if min(c, nx, ny, nz) < 1 or max(nx, ny) > 65535:
        raise FormatError(f"cannot write a DICOM series of shape {data.shape}: rows and columns must be 1..65535")
    if data.dtype.kind == "f" and not np.all(np.isfinite(data)):
        data = _fill_missing(data, folder)
    affine = np.asarray(image.affine, dtype=np.float64)
    if affine.shape != (4, 4):
        raise GeometryError(f"a volume affine must be 4x4, got {affine.shape}")
    check_affine(affine, what=str(folder))
    return data, affine


def _fill_missing(data: np.ndarray, folder: str | os.PathLike[str]) -> np.ndarray:
    """``data`` with its NaN/inf (no data) set to the lowest finite value: DICOM stores integers.

    Raises:
        FormatError: no voxel is finite.
    """
    bad = ~np.isfinite(data)
    if bad.all():
        raise FormatError(f"{folder}: every voxel is NaN or infinite; there is nothing to write")
    low = float(data[~bad].min())
    logger.warning("%s: %d voxels are NaN or infinite (no data); DICOM stores integers, so they are written as the "
                   "volume's lowest value, %.6g", folder, int(bad.sum()), low)
    return np.where(bad, np.asarray(low, dtype=data.dtype), data)


def _slice_geometry(affine: np.ndarray, folder: str | os.PathLike[str]) -> _SliceGeometry:
    """The slice geometry of a voxel-centre RAS affine, in LPS.

    In-plane direction cosines off by less than :data:`_WRITE_SHEAR_TOL`
    (rounded in a header) are orthonormalised; a sheared slice axis (gantry
    tilt) is kept: each slice is written at its own position.

    Raises:
        GeometryError: the first two axes are not orthogonal (in-plane shear).
    """
    lin = _LPS_RAS @ affine[:3, :3]
    origin = _LPS_RAS @ affine[:3, 3]
    c0, c1, c2 = lin[:, 0], lin[:, 1], lin[:, 2]
    du, dv = float(np.linalg.norm(c0)), float(np.linalg.norm(c1))
    cos01 = abs(float(c0 @ c1)) / (du * dv)
    if cos01 > _WRITE_SHEAR_TOL:
        raise GeometryError(
            f"{folder}: the affine's first two axes meet at {math.degrees(math.acos(min(1.0, cos01))):.4f}°, "
            "not 90°: they are not orthogonal, and DICOM cannot express in-plane shear (resample the volume first)"
        )
    row, col = c0 / du, c1 / dv
    if cos01 > 1e-9:  # direction cosines rounded in a header (dcm2niix writes 5-6 digits): orthonormalise
        col = col - (col @ row) * row
        col = col / np.linalg.norm(col)
        logger.debug("%s: in-plane axes %.5f° from orthogonal (rounded cosines); column direction orthogonalised",
                     folder, 90.0 - math.degrees(math.acos(min(1.0, cos01))))
    normal = np.cross(row, col)
    step_len = abs(float(c2 @ normal))  # step along the normal
    tilt = math.degrees(math.acos(min(1.0, step_len / float(np.linalg.norm(c2)))))
    return _SliceGeometry(origin, c2, row, col, normal, du, dv, step_len, tilt)


def _preferred_mapping(meta: dict[str, Any]) -> tuple[float, float]:
    """The source's slope and intercept from ``meta``; (1, 0) when missing or unusable."""
    inten = meta.get(Key.INTENSITY) or {}
    try:
        return (float(inten.get("slope", 1.0)), float(inten.get("intercept", 0.0)))
    except (TypeError, ValueError, AttributeError):
        return (1.0, 0.0)


def _encoding(
    data: np.ndarray, meta: dict[str, Any], dtype: str | None, folder: str | os.PathLike[str]
) -> _Encoding:
    """The stored dtype and the slope/intercept for ``data``: the source's mapping when the values fit.

    Raises:
        ConfigError: ``dtype`` is not a dtype name.
        FormatError: ``dtype`` is not one of :data:`WRITE_DTYPES`.
    """
    vmin, vmax = float(data.min()), float(data.max())
    out_dtype = _target_dtype(dtype, meta.get(Key.SOURCE_DTYPE), vmin)
    preferred = _preferred_mapping(meta)
    s_str, b_str, slope, intercept, kept = _choose_mapping(vmin, vmax, out_dtype, preferred)
    if not kept:
        logger.info(
            "%s: values %.6g..%.6g do not fit %s with slope %s/intercept %s; re-encoded with slope %s, intercept %s",
            folder, vmin, vmax, out_dtype.name, preferred[0], preferred[1], s_str, b_str,
        )
    return _Encoding(out_dtype, s_str, b_str, slope, intercept, vmin, vmax)


def _sop_class(modality: str, out_dtype: np.dtype) -> UID:
    """CT or MR Image Storage for those modalities, else (and for 8-bit output) Secondary Capture."""
    if out_dtype.itemsize == 1:
        return SecondaryCaptureImageStorage
    if modality == "CT":
        return CTImageStorage
    if modality == "MR":
        return MRImageStorage
    return SecondaryCaptureImageStorage


# --------------------------------------------------------------------------------------
# Slices
# --------------------------------------------------------------------------------------


def _pixel_element(plane: np.ndarray, enc: _Encoding) -> DataElement:
    """PixelData of one (X, Y) plane: little-endian stored integers in file order (rows along Y)."""
    info = np.iinfo(enc.dtype)
    q = np.rint((plane.T.astype(np.float64) - enc.intercept) / enc.slope)
    pixels = np.clip(q, info.min, info.max).astype(enc.dtype.newbyteorder("<"))
    return DataElement(_PIXEL_DATA_TAG, "OB" if enc.dtype.itemsize == 1 else "OW", pixels.tobytes())


def _file_meta(sop_class: UID, sop_uid: str) -> FileMetaDataset:
    """The file meta information of one slice file (Explicit VR Little Endian)."""
    fm = FileMetaDataset()
    fm.MediaStorageSOPClassUID = sop_class
    fm.MediaStorageSOPInstanceUID = sop_uid
    fm.TransferSyntaxUID = ExplicitVRLittleEndian
    fm.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    fm.ImplementationVersionName = f"MEDSAT_SR_{__version__}"[:16]
    return fm


def _slice_dataset(
    base: Dataset, sop_class: UID, geom: _SliceGeometry, k: int, number: int, channel: int | None,
    pixel_data: DataElement,
) -> Dataset:
    """The data set of slice ``k``: the series attributes plus a new SOPInstanceUID, its position and pixels.

    Args:
        base: the attributes every slice shares (not modified).
        sop_class: the SOP class, for the file meta.
        geom: the slice geometry.
        k: the slice index along Z.
        number: InstanceNumber (1-based, across channels).
        channel: the 0-based channel of a 4D series, else None.
        pixel_data: the PixelData element.
    """
    ds = Dataset(dict(base))  # fresh mapping; shared elements are never mutated
    sop_uid = generate_uid()
    ipp = geom.origin + k * geom.step
    _put(ds, "SOPInstanceUID", sop_uid)
    _put(ds, "InstanceNumber", number)
    _put(ds, "ImagePositionPatient", [format_number_as_ds(float(v)) for v in ipp])
    _put(ds, "SliceLocation", format_number_as_ds(float(ipp @ geom.normal)))
    if channel is not None:
        _put(ds, "TemporalPositionIdentifier", channel + 1)
    ds[_PIXEL_DATA_TAG] = pixel_data
    ds.file_meta = _file_meta(sop_class, sop_uid)
    ds.preamble = b"\x00" * 128
    return ds


def _write_slices(
    folder: str | os.PathLike[str],
    overwrite: bool,
    base: Dataset,
    sop_class: UID,
    geom: _SliceGeometry,
    enc: _Encoding,
    data: np.ndarray,
) -> int:
    """Write one file per slice and channel (``IM00001.dcm``, ...) into ``folder``, atomically.

    Returns:
        The number of files written.
    """
    c, _, _, nz = data.shape
    number = 0
    with atomic_dir(folder, overwrite=overwrite) as tmp:
        for ci in range(c):
            for k in range(nz):
                number += 1
                channel = ci if c > 1 else None
                ds = _slice_dataset(base, sop_class, geom, k, number, channel, _pixel_element(data[ci, :, :, k], enc))
                pydicom.dcmwrite(tmp / f"IM{number:05d}.dcm", ds, enforce_file_format=True)
    return number


# --------------------------------------------------------------------------------------
# write
# --------------------------------------------------------------------------------------


def write(
    image: MetaTensor,
    folder: str | os.PathLike[str],
    *,
    series_description: str | None = None,
    derivation: str | None = None,
    dtype: str | None = None,
    overwrite: bool = True,
) -> Path:
    """Write a volume as a derived DICOM series (one file per slice), atomically.

    Args:
        image: a volume ``(C, X, Y, Z)`` with a voxel-centre RAS affine; C > 1
            is written as a 4D series (channels as temporal positions).
        folder: the output folder (created; replaced when ``overwrite``).
        series_description: SeriesDescription (default: the source's plus
            `` (medsat_sr)``).
        derivation: DerivationDescription (default: names medsat_sr and the source).
        dtype: ``uint8``, ``int16`` or ``uint16`` (default: see the module docstring).
        overwrite: replace an existing folder.

    Returns:
        The folder written.

    Raises:
        ConfigError: an option of the wrong type.
        FormatError: not a volume, non-finite values, or an unsupported dtype.
        GeometryError: an affine DICOM cannot express (non-orthogonal in-plane axes).
        WriteError: the folder cannot be written.
    """
    data, affine = _checked_volume(image, folder, series_description, derivation)
    meta = dict(getattr(image, "meta", {}) or {})
    header = meta.get(Key.HEADER)
    header = header if isinstance(header, Dataset) else None
    geom = _slice_geometry(affine, folder)
    enc = _encoding(data, meta, dtype, folder)
    modality = str((header.get("Modality") if header is not None else None) or meta.get("modality") or "OT")
    sop_class = _sop_class(modality, enc.dtype)

    base = _kept_attributes(header)
    date, time = _now()
    _patient_and_study(base, date, time)
    _series_identity(base, header, meta, modality, series_description, derivation)
    _image_identity(base, sop_class, date, time)
    _plane_geometry(base, header, geom)
    _pixel_module(base, header, enc, data.shape)

    number = _write_slices(folder, overwrite, base, sop_class, geom, enc, data)
    logger.info(
        "wrote %d DICOM files (%s, %s, slope %s, intercept %s) to %s", number, sop_class.name, enc.dtype.name,
        enc.slope_ds, enc.intercept_ds, folder,
    )
    return Path(folder)

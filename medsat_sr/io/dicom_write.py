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

import copy
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
from pydicom.datadict import dictionary_VR, tag_for_keyword
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
from medsat_sr.io.dicom_base import _LPS_RAS, _PIXEL_DATA_TAG, _PIXEL_KEYWORDS, TILT_TOL_DEG, _float, _int

__all__ = ["write", "WRITE_DTYPES", "DEFAULT_PATIENT_POSITION", "DEFAULT_MANUFACTURER"]

#: The reader's logger: the writer's messages have always been logged as ``medsat_sr.io.dicom``.
logger = logging.getLogger("medsat_sr.io.dicom")

#: Output pixel dtypes the writer accepts.
WRITE_DTYPES = ("uint8", "int16", "uint16")
#: PatientPosition written when the source is not DICOM (NIfTI and others do not record it).
DEFAULT_PATIENT_POSITION = "HFS"
#: Manufacturer written when the source does not name one.
DEFAULT_MANUFACTURER = "medsat_sr"

#: Largest |cos| between the in-plane axes that the writer absorbs by orthogonalising the column direction:
#: cosines rounded to 4 digits give up to ~1.5e-4; the shift is then < 0.05 mm across 256 mm.
_WRITE_SHEAR_TOL = 2e-4

_DROP_ON_WRITE = {
    *_PIXEL_KEYWORDS,
    "SOPClassUID", "SOPInstanceUID", "SeriesInstanceUID", "InstanceNumber", "ImageType",
    "DerivationDescription", "DerivationCodeSequence", "SourceImageSequence",
    "ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "SliceThickness",
    "SpacingBetweenSlices", "SliceLocation", "GantryDetectorTilt", "ImagerPixelSpacing",
    "PixelSpacingCalibrationType", "PixelAspectRatio", "Rows", "Columns", "BitsAllocated",
    "BitsStored", "HighBit", "PixelRepresentation", "SamplesPerPixel", "PlanarConfiguration",
    "PhotometricInterpretation", "RescaleSlope", "RescaleIntercept", "SmallestImagePixelValue",
    "LargestImagePixelValue", "SmallestPixelValueInSeries", "LargestPixelValueInSeries",
    "PixelPaddingValue", "PixelPaddingRangeLimit", "ModalityLUTSequence", "VOILUTSequence",
    "RedPaletteColorLookupTableDescriptor", "GreenPaletteColorLookupTableDescriptor",
    "BluePaletteColorLookupTableDescriptor", "RedPaletteColorLookupTableData",
    "GreenPaletteColorLookupTableData", "BluePaletteColorLookupTableData", "IconImageSequence",
    "NumberOfFrames", "FrameIncrementPointer", "SharedFunctionalGroupsSequence",
    "PerFrameFunctionalGroupsSequence", "DimensionIndexSequence", "DimensionOrganizationSequence",
    "DimensionOrganizationType", "InStackPositionNumber", "StackID", "TemporalPositionIdentifier",
    "TemporalPositionIndex", "NumberOfTemporalPositions", "ImagesInAcquisition", "NumberOfSlices",
    "SliceVector", "ContentDate", "ContentTime", "InstanceCreationDate", "InstanceCreationTime",
    "DataSetTrailingPadding", "PixelPresentation", "VolumetricProperties",
    "VolumeBasedCalculationTechnique", "ComplexImageComponent", "AcquisitionContrast",
    "ConcatenationUID", "SOPInstanceUIDOfConcatenationSource", "InConcatenationNumber",
    "InConcatenationTotalNumber", "ConcatenationFrameOffsetNumber", "RepresentativeFrameNumber",
}


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


def _put(ds: Dataset, keyword: str, value: Any) -> None:
    """Set ``keyword`` with a new element (never mutating one shared with another data set)."""
    tag = tag_for_keyword(keyword)
    if tag is None:  # pragma: no cover - programming error
        raise KeyError(keyword)
    ds[tag] = DataElement(tag, dictionary_VR(tag), value)


def _default(ds: Dataset, keyword: str, value: Any) -> None:
    """Set ``keyword`` only when it is missing or empty."""
    if keyword not in ds or ds[keyword].value in (None, ""):
        _put(ds, keyword, value)


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


def _equipment_defaults(base: Dataset, *, from_dicom: bool) -> None:
    """Fill the equipment and position attributes dcm2niix expects, keeping the source's values.

    Manufacturer (``medsat_sr`` when the source names none) and
    SoftwareVersions are filled whenever they are empty; PatientPosition
    (``HFS``) only for non-DICOM sources, which do not record it. The geometry
    is fully in ImagePositionPatient / ImageOrientationPatient, so the
    default does not move the image.
    """
    _default(base, "Manufacturer", DEFAULT_MANUFACTURER)
    _default(base, "ManufacturerModelName", DEFAULT_MANUFACTURER)
    _default(base, "SoftwareVersions", f"medsat_sr {__version__}")
    if not from_dicom:
        _default(base, "PatientPosition", DEFAULT_PATIENT_POSITION)


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
        bad = int(np.count_nonzero(~np.isfinite(data)))
        raise FormatError(f"volume has {bad} NaN or infinite values; DICOM stores integers")
    affine = np.asarray(image.affine, dtype=np.float64)
    if affine.shape != (4, 4):
        raise GeometryError(f"a volume affine must be 4x4, got {affine.shape}")
    check_affine(affine, what=str(folder))
    return data, affine


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
# The series data set (what every slice shares)
# --------------------------------------------------------------------------------------


def _kept_attributes(header: Dataset | None) -> Dataset:
    """Deep copies of the source's public attributes, less file meta and :data:`_DROP_ON_WRITE`."""
    base = Dataset()
    if header is not None:
        for tag in list(header.keys()):
            elem = header[tag]
            if tag.is_private or tag.group == 0x0002 or elem.keyword in _DROP_ON_WRITE:
                continue
            base[tag] = copy.deepcopy(elem)
    return base


def _patient_and_study(base: Dataset, date: str, time: str) -> None:
    """Patient and study attributes: kept from the source, else anonymous defaults and new UIDs."""
    _default(base, "PatientName", "ANONYMOUS")
    _default(base, "PatientID", "MEDSAT_SR")
    _default(base, "PatientBirthDate", "")
    _default(base, "PatientSex", "")
    if "StudyInstanceUID" not in base or not base.StudyInstanceUID:
        _put(base, "StudyInstanceUID", generate_uid())
        _put(base, "StudyDate", date)
        _put(base, "StudyTime", time)
    _default(base, "StudyDate", date)
    _default(base, "StudyTime", time)
    _default(base, "ReferringPhysicianName", "")
    _default(base, "StudyID", "")
    _default(base, "AccessionNumber", "")
    if "FrameOfReferenceUID" not in base or not base.FrameOfReferenceUID:
        _put(base, "FrameOfReferenceUID", generate_uid())
    _default(base, "PositionReferenceIndicator", "")


def _series_identity(
    base: Dataset,
    header: Dataset | None,
    meta: dict[str, Any],
    modality: str,
    series_description: str | None,
    derivation: str | None,
) -> None:
    """Modality, equipment, a new SeriesInstanceUID, SeriesNumber, SeriesDescription and DerivationDescription."""
    _put(base, "Modality", modality)
    _equipment_defaults(base, from_dicom=header is not None)
    _put(base, "SeriesInstanceUID", generate_uid())
    src_number = header.get("SeriesNumber") if header is not None else None
    _put(base, "SeriesNumber", _int(src_number) + 1000 if src_number not in (None, "") else 1000)
    src_desc = str(header.get("SeriesDescription", "") or "") if header is not None else ""
    desc = series_description
    if desc is None:
        desc = f"{src_desc} (medsat_sr)" if src_desc else "medsat_sr derived"
    _put(base, "SeriesDescription", desc[:64])
    source = meta.get(Key.SOURCE_PATH)
    default_derivation = (
        f"medsat_sr {__version__}: written from a {meta.get(Key.SOURCE_FORMAT) or 'volume'}"
        + (f" ({Path(str(source)).name})" if source else "")
    )
    _put(base, "DerivationDescription", (derivation if derivation is not None else default_derivation)[:1024])


def _image_identity(base: Dataset, sop_class: UID, date: str, time: str) -> None:
    """ImageType, SOPClassUID, content date and time, and what the SOP class requires."""
    _put(base, "ImageType", ["DERIVED", "SECONDARY"] + (["AXIAL"] if sop_class == CTImageStorage else []))
    _put(base, "SOPClassUID", sop_class)
    _put(base, "ContentDate", date)
    _put(base, "ContentTime", time)
    if sop_class == SecondaryCaptureImageStorage:
        _default(base, "ConversionType", "WSD")
    if sop_class == CTImageStorage:
        _default(base, "KVP", "")
        _default(base, "AcquisitionNumber", "")
        if "RescaleType" not in base:
            _put(base, "RescaleType", "HU")
    if sop_class == MRImageStorage:
        _default(base, "ScanningSequence", "RM")
        _default(base, "SequenceVariant", "NONE")
        for kw in ("ScanOptions", "MRAcquisitionType", "RepetitionTime", "EchoTime", "EchoTrainLength"):
            if kw not in base:
                _put(base, kw, "")


def _plane_geometry(base: Dataset, header: Dataset | None, geom: _SliceGeometry) -> None:
    """Orientation, pixel spacing, slice thickness and spacing, and the source's tilt when it still holds."""
    _put(base, "ImageOrientationPatient", [format_number_as_ds(float(v)) for v in (*geom.row, *geom.col)])
    _put(base, "PixelSpacing", [format_number_as_ds(geom.dv), format_number_as_ds(geom.du)])
    thickness = geom.step_len
    if header is not None:
        src_sbs = _float(header.get("SpacingBetweenSlices"))
        src_thick = _float(header.get("SliceThickness"))
        if src_thick is not None and abs((src_sbs or src_thick) - geom.step_len) <= 1e-3:
            thickness = src_thick
    _put(base, "SliceThickness", format_number_as_ds(thickness))
    _put(base, "SpacingBetweenSlices", format_number_as_ds(geom.step_len))
    if geom.tilt_deg > TILT_TOL_DEG and header is not None:
        src_tilt = _float(header.get("GantryDetectorTilt"))
        if src_tilt is not None and abs(abs(src_tilt) - geom.tilt_deg) < 0.1:
            _put(base, "GantryDetectorTilt", format_number_as_ds(src_tilt))


def _pixel_module(base: Dataset, header: Dataset | None, enc: _Encoding, shape: tuple[int, ...]) -> None:
    """Image pixel attributes, the rescale, a default window and, for several channels, the temporal count."""
    c, nx, ny, _ = shape
    photometric = str(header.get("PhotometricInterpretation", "")) if header is not None else ""
    _put(base, "SamplesPerPixel", 1)
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        photometric = "MONOCHROME2"
    _put(base, "PhotometricInterpretation", photometric)
    _put(base, "Rows", ny)
    _put(base, "Columns", nx)
    bits = enc.dtype.itemsize * 8
    _put(base, "BitsAllocated", bits)
    _put(base, "BitsStored", bits)
    _put(base, "HighBit", bits - 1)
    _put(base, "PixelRepresentation", 1 if enc.dtype.kind == "i" else 0)
    _put(base, "RescaleIntercept", enc.intercept_ds)
    _put(base, "RescaleSlope", enc.slope_ds)
    if "WindowCenter" not in base or "WindowWidth" not in base:
        _put(base, "WindowCenter", format_number_as_ds((enc.vmin + enc.vmax) / 2))
        _put(base, "WindowWidth", format_number_as_ds(max(enc.vmax - enc.vmin, 1.0)))
    if c > 1:
        _put(base, "NumberOfTemporalPositions", c)


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

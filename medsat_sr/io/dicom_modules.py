"""The derived series' shared data set, module by module: kept attributes, patient and study, series and
image identity, plane geometry, the pixel module (:mod:`medsat_sr.io.dicom_write` writes the slices).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydicom.dataset import Dataset
from pydicom.uid import UID, CTImageStorage, MRImageStorage, SecondaryCaptureImageStorage, generate_uid
from pydicom.valuerep import format_number_as_ds

from medsat_sr._version import __version__
from medsat_sr.image import Key
from medsat_sr.io.dicom_base import _PIXEL_KEYWORDS, TILT_TOL_DEG, _default, _float, _int, _put

if TYPE_CHECKING:
    from medsat_sr.io.dicom_write import _Encoding, _SliceGeometry

__all__ = ["DEFAULT_PATIENT_POSITION", "DEFAULT_MANUFACTURER"]

#: PatientPosition written when the source is not DICOM (NIfTI and others do not record it).
DEFAULT_PATIENT_POSITION = "HFS"


#: Manufacturer written when the source does not name one.
DEFAULT_MANUFACTURER = "medsat_sr"


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

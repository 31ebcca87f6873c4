"""DICOM series: discovery, grouping, exact geometry, 4D and enhanced multi-frame; derived-series writer.

Reading
-------
``read(path)`` turns one DICOM series into a volume (see :mod:`medsat_sr.image`):
float32 data in physical units, shaped ``(C, X, Y, Z)``, where X runs along
the columns of a slice (the first ImageOrientationPatient vector), Y along its
rows and Z across slices. ``.affine`` maps voxel centres to RAS millimetres
(DICOM's LPS with x and y negated). The policies, in the order they apply:

* **Discovery.** ``path`` is a folder, searched recursively, or one file (a
  multi-frame file or a single slice). Hidden files and folders, ``DICOMDIR``,
  ``DIRFILE`` and ``README``/``LICENSE`` are skipped; a file is DICOM when it
  carries ``DICM`` at byte 128, or, unless its suffix is a non-DICOM one
  (``.txt``, ``.json``, ``.nii``, ...), when a preamble-less data set starting
  with a group 0x0002/0x0008 element parses and holds image attributes.
  Objects without pixel data (reports, presentation states) are skipped. Every
  header is parsed once, with the pixel data deferred; pixels are decoded only
  for the chosen series. A file that looks like DICOM but cannot be parsed,
  or that was cut short, is an error naming that file, since it may be a
  slice of the series asked for.
* **Grouping.** Images are grouped by SeriesInstanceUID. A series is split
  further when its images differ in Rows/Columns, ImageOrientationPatient
  (more than 1e-4), PixelSpacing (more than 1e-4 mm), ImageType,
  SliceThickness or echo (EchoNumbers, or the enhanced EffectiveEchoTime). A
  split part is keyed ``"<SeriesInstanceUID>#<n>"`` (n from 1, in
  InstanceNumber order); an unsplit series is keyed by its UID.
  AcquisitionNumber never splits a series: scanners number each slice pair or
  each time point with it.
* **Selection.** :func:`scan` lists the candidates with a 1-based index. With
  several candidates and no ``series=``, :func:`read` raises a
  :class:`~medsat_sr.errors.FormatError` listing each (index, key,
  description, number of images). ``series=`` accepts a key, an index
  (``2`` or ``"2"``), or a bare SeriesInstanceUID; a bare UID of a split
  series takes all its parts together when they share one image grid (rows,
  columns, orientation, pixel spacing), as dcm2niix does. That usually makes
  the slice spacing irregular (see below).
* **Sorting.** Slices are sorted by their position along the slice normal
  (row x column direction of ImageOrientationPatient), never by
  InstanceNumber.
* **4D.** Images closer than :data:`POSITION_TOL_MM` to each other are one
  slice position. When every position holds T > 1 images, the series is 4D:
  volumes become the T channels, ordered by TemporalPositionIdentifier
  (enhanced: TemporalPositionIndex, then DimensionIndexValues),
  AcquisitionNumber, TriggerTime, InstanceNumber and the file name, in that
  order of precedence. ``volume=k`` (0-based) keeps only volume k. Positions
  holding different numbers of images are a GeometryError.
* **Enhanced multi-frame.** Per-frame functional groups
  (PlanePositionSequence, PlaneOrientationSequence, PixelMeasuresSequence,
  PixelValueTransformationSequence, FrameContentSequence, the frame-type and
  MR echo sequences) are read for every frame, with the shared functional
  groups and then the top-level attributes as fallbacks. Frames then go
  through the same grouping, sorting and 4D logic as single-frame files. A
  multi-frame file without per-frame positions is refused (its frames cannot
  be placed).
* **Geometry and tolerance.** A stack is *regular* when every slice lies
  within :data:`POSITION_TOL_MM` (0.01 mm) of the straight line through the
  first and last slice at equal steps. Its affine then has the in-plane
  columns from ImageOrientationPatient and PixelSpacing and, as the slice
  column, the exact step vector ``(P_last - P_first) / (K - 1)``. Every slice
  therefore lies at its ImagePositionPatient (to that tolerance; exactly for
  the first and last). A single slice gets the step ``normal x
  SpacingBetweenSlices`` (else SliceThickness, else 1 mm).
* **Gantry tilt policy.** A stack whose step is not parallel to the normal
  (CT gantry tilt above :data:`TILT_TOL_DEG`) is refused with a
  :class:`~medsat_sr.errors.GeometryError` naming the folder, the first and
  last slice files, the angle (``gantry tilt 18.5°``) and ``resample=True
  (--resample)``: its only exact affine is *sheared* (slice column along the
  table step, not the normal), which most tools misread and a NIfTI qform
  cannot hold, so it is never returned silently. ``resample=True`` corrects
  the tilt onto an orthogonal grid (see below), as dcm2niix's tilt
  correction does; ``meta["resampled"]["tilt_corrected_deg"]`` then holds
  the angle. ``meta["gantry_tilt_deg"]`` is therefore always 0.0 (kept for
  compatibility). (The GE head CT sample interleaves two tilted
  reconstructions under one SeriesInstanceUID.)
* **Irregular stacks** (uneven spacing, missing slices, tilt combined with
  either) are refused with a :class:`~medsat_sr.errors.GeometryError` that
  names the problem and the numbers, for example ``gantry tilt 18.5°; slice
  spacing varies 1.08–7.00 mm; pass resample=True (--resample) to resample
  onto a regular grid``. A step that is an integer multiple (within 0.1) of
  the median step counts as missing slices.
* **Resampling** (``resample=True``), the way dcm2niix does it: each slice is
  shifted in-plane (linear interpolation) onto an orthogonal grid spanned by
  the slice axes and the normal, which grows in-plane to hold every shifted
  slice; uncovered voxels get the darkest value of the series. Slices are
  then interpolated linearly along the normal onto equidistant positions
  from the first to the last slice, at the smallest slice step, but never
  more than twice the original number of slices (then at ``extent / (2K -
  1)``). Missing slices are thereby interpolated. What was done is logged as
  a warning and recorded in ``meta["resampled"]``. A regular stack without
  tilt is returned unchanged. On the GE head CT sample the resampled grid is
  dcm2niix's ``_Tilt_Eq`` grid to 1e-5 mm.
* **Intensity.** RescaleSlope/RescaleIntercept are applied per slice (per
  frame for enhanced files). ``meta["intensity"]`` is the shared mapping when
  every slice has the same one, so a writer reproduces the stored integers.
  When slices differ, it is the finest slope with its intercept and
  ``meta["intensity_exact"]`` is False (logged); the writer re-fits it if the
  values do not fit.
* **Compressed transfer syntaxes** decode through pydicom's pixel backends
  (pylibjpeg and its plugins, pillow, or pydicom's own RLE decoder). When no
  decoder is installed, the FormatError names the package to ``pip install``.

Besides the keys of :mod:`medsat_sr.image`, the meta holds ``modality``,
``series_uid``, ``series_key``, ``series_description``, ``gantry_tilt_deg``,
``n_volumes``, ``volume`` (the ``volume=`` choice or None), ``resampled``
(None, or what was done) and ``intensity_exact``. ``header`` is the first
slice's data set without pixel data, private tags and functional-group
sequences (what the writer needs).

Writing
-------
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

import contextlib
import copy
import datetime as _dt
import gc
import logging
import math
import os
import struct
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from monai.data import MetaTensor
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.pixels import get_decoder
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
from medsat_sr.errors import ConfigError, DataError, FormatError, GeometryError, MedsatError, TiltError
from medsat_sr.geometry import check_affine
from medsat_sr.image import Key, is_raster, make_volume

__all__ = [
    "SeriesInfo",
    "is_dicom_file",
    "scan",
    "read",
    "write",
    "POSITION_TOL_MM",
    "TILT_TOL_DEG",
    "WRITE_DTYPES",
]

logger = logging.getLogger(__name__)

#: Slice positions closer than this (mm) are one position; a regular stack
#: predicts every slice position to within this distance.
POSITION_TOL_MM = 0.01
#: Tilt angles below this (degrees) are reported as 0.
TILT_TOL_DEG = 0.01
#: Output pixel dtypes the writer accepts.
WRITE_DTYPES = ("uint8", "int16", "uint16")

_ORIENTATION_TOL = 1e-4
_SPACING_TOL = 1e-4
_ORTHOGONALITY_TOL = 1e-3
#: Largest |cos| between the in-plane axes that the writer absorbs by orthogonalising the column direction:
#: cosines rounded to 4 digits give up to ~1.5e-4; the shift is then < 0.05 mm across 256 mm.
_WRITE_SHEAR_TOL = 2e-4
_MISSING_RATIO_TOL = 0.1
_DEFER_SIZE = 4096  # bytes: larger values (pixel data) are read only when used

_LPS_RAS = np.diag([-1.0, -1.0, 1.0])

_SKIP_NAMES = {"dicomdir", "dirfile", "readme", "license", "lockfile", "thumbs.db", "desktop.ini"}
_SKIP_SUFFIXES = {
    ".txt", ".json", ".nii", ".gz", ".bz2", ".zip", ".tar", ".md", ".rst", ".xml", ".html", ".htm",
    ".csv", ".tsv", ".png", ".jpg", ".jpeg", ".gif", ".bmp", ".tif", ".tiff", ".pdf", ".py", ".sh",
    ".bat", ".yaml", ".yml", ".log", ".mat", ".npy", ".npz", ".h5", ".bval", ".bvec", ".mgz",
    ".nrrd", ".mha", ".mhd", ".img", ".hdr", ".ini", ".cfg",
}
_IMAGE_TAGS = ("SOPClassUID", "ImagePositionPatient", "Rows", "Modality")
_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
_PIXEL_DATA_TAG = 0x7FE00010
_PIXEL_TAGS = frozenset({0x7FE00008, 0x7FE00009, _PIXEL_DATA_TAG})  # Float, DoubleFloat, PixelData
_UNDEFINED_LENGTH = 0xFFFFFFFF
_DEFLATED = "1.2.840.10008.1.2.1.99"

#: What pydicom raises when it converts a malformed element late (on first use, not while parsing):
#: unknown VR (NotImplementedError), bad values or a UID that is not a transfer syntax (ValueError),
#: binary values of the wrong length (struct.error), unknown encodings (LookupError), ...
_CONVERSION_ERRORS: tuple[type[BaseException], ...] = (
    NotImplementedError, ValueError, OverflowError, TypeError, LookupError, struct.error, EOFError,
)


def _ts_text(ds: Dataset) -> str:
    meta = getattr(ds, "file_meta", None)
    return str(meta.get("TransferSyntaxUID", "")) if meta is not None else ""


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _malformed(where: object, exc: BaseException) -> MedsatError:
    """The medsat_sr error for an exception met while using a parsed data set."""
    if isinstance(exc, MedsatError):
        return exc
    if isinstance(exc, OSError):
        return DataError(f"{where}: cannot read: {exc.strerror or exc}")
    return FormatError(f"{where}: malformed DICOM element: {_first_line(exc)} (is the file corrupt?)")


# --------------------------------------------------------------------------------------
# Discovery
# --------------------------------------------------------------------------------------


def is_dicom_file(path: str | os.PathLike[str]) -> bool:
    """Cheap test whether ``path`` is a DICOM file.

    Files named DICOMDIR, DIRFILE, README or LICENSE and hidden files are
    False without being opened. Otherwise the first 132 bytes are read: True
    with ``DICM`` at byte 128. A file without that preamble is True only
    when its suffix is not a known non-DICOM one (``.txt``, ``.json``,
    ``.nii``, ...), it starts with a little-endian group 0x0002/0x0008
    element and a forced pydicom read finds image attributes.

    Args:
        path: the file to test.

    Returns:
        Whether the file should be read as DICOM.
    """
    p = Path(path)
    name = p.name.lower()
    if name.startswith(".") or name in _SKIP_NAMES or p.stem.lower() in _SKIP_NAMES:
        return False
    try:
        with open(p, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    if len(head) >= 132 and head[128:132] == b"DICM":
        return True
    if p.suffix.lower() in _SKIP_SUFFIXES:
        return False  # without the preamble, a .txt/.json/.nii/... file is not tried further
    if len(head) < 8 or head[:2] not in (b"\x02\x00", b"\x08\x00"):
        return False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(p, force=True, stop_before_pixels=True, specific_tags=list(_IMAGE_TAGS))
    except Exception:  # noqa: BLE001 - anything unparsable is simply not DICOM
        return False
    return any(k in ds for k in _IMAGE_TAGS)


def _list_files(root: Path) -> list[Path]:
    out: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        out.extend(Path(dirpath) / f for f in sorted(filenames) if not f.startswith("."))
    return out


def _read_header(path: Path) -> Dataset:
    """Parse one file (pixel data deferred); refuse unreadable or cut-short files."""
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ds = pydicom.dcmread(path, force=True, defer_size=_DEFER_SIZE)
    except OSError as exc:
        raise DataError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    except Exception as exc:  # noqa: BLE001 - pydicom raises many types for corrupt input
        raise FormatError(f"{path}: not a readable DICOM file (truncated or corrupt?): {exc}") from exc
    for w in caught:
        logger.debug("%s: %s", path, w.message)
    if next((t for t in ds.keys() if t.group != 0x0002), None) is None:
        raise FormatError(f"{path}: DICOM file holds no data set (truncated or corrupt?)")
    # A deferred element whose length runs past the end of the file is the last one parsed
    # (pydicom skipped past the end); reading it would allocate that length. Pixel data is
    # checked when decoded, with its expected size.
    try:
        last = next(reversed(ds.keys()), None)
        if last is not None and last not in _PIXEL_TAGS:
            elem = ds.get_item(last, keep_deferred=True)
            if isinstance(elem, RawDataElement) and elem.value is None and _ts_text(ds) != _DEFLATED:
                _check_deferred(elem, path, path.stat().st_size, f"{elem.tag} ({elem.VR})")
        sop = str(ds.get("SOPClassUID", ""))
        sop_name = UID(sop).name if sop else ""
    except (*_CONVERSION_ERRORS, OSError) as exc:
        raise _malformed(path, exc) from exc
    has_pixels = any(k in ds for k in _PIXEL_KEYWORDS)
    if not has_pixels and ("Rows" in ds or "Image Storage" in sop_name):
        raise FormatError(
            f"{path}: DICOM image ({sop_name or 'with Rows'}) has no pixel data: the file is truncated or corrupt"
        )
    return ds


# --------------------------------------------------------------------------------------
# Frames and series
# --------------------------------------------------------------------------------------


@dataclass(eq=False)
class _Frame:
    """One 2D image: a single-frame file or one frame of a multi-frame file."""

    path: Path
    ds: Dataset
    frame: int | None
    uid: str
    rows: int
    cols: int
    samples: int
    ipp: np.ndarray | None
    iop: np.ndarray | None
    pixel_spacing: np.ndarray | None
    thickness: float | None
    spacing_between: float | None
    slope: float
    intercept: float
    image_type: str
    echo: str
    instance: int
    order: tuple


_TEXT_VRS = frozenset({"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "SH", "ST", "TM", "UC", "UI", "UT"})


def _value(ds: Dataset, tag: int) -> Any:
    """Value of ``tag``; text elements still in raw form are decoded cheaply.

    Multi-valued text comes back backslash-separated, as stored. This skips
    pydicom's per-value conversion (DSfloat objects and validation), the
    slowest part of scanning large folders; other elements are converted by
    pydicom as usual.
    """
    elem = ds.get_item(tag)
    if elem is None:
        return None
    v = elem.value
    if isinstance(v, (bytes, bytearray)) and elem.VR in _TEXT_VRS:
        return v.decode("latin-1").strip(" \x00")
    return ds[tag].value


def _seq(value: Any) -> list[Any]:
    if isinstance(value, str):
        return value.split("\\")
    if isinstance(value, bytes):
        return [value]
    try:
        return list(value)
    except TypeError:
        return [value]


def _floats(value: Any, n: int) -> np.ndarray | None:
    if value is None or value == "":
        return None
    try:
        arr = np.array([float(v) for v in _seq(value)], dtype=np.float64)
    except (TypeError, ValueError):
        return None
    return arr if arr.shape == (n,) else None


def _float(value: Any) -> float | None:
    if value is None or value == "":
        return None
    try:
        v = float(_seq(value)[0])
    except (TypeError, ValueError, IndexError):
        return None
    return v if math.isfinite(v) else None


def _int(value: Any, default: int = 0) -> int:
    """First value as an integer; ``default`` when missing, not a number or not finite."""
    if isinstance(value, str):
        value = value.split("\\")[0]
    try:
        return int(float(value))
    except (TypeError, ValueError, OverflowError):
        return default


def _checked_int(ds: Dataset, tag: int, keyword: str, path: Path, default: int) -> int:
    """Integer value of ``tag``: ``default`` when missing or empty, a FormatError when not a finite integer."""
    value = _value(ds, tag)
    if value is None:
        return default
    items = _seq(value)
    first = items[0] if items else ""
    if isinstance(first, str):
        first = first.strip()
    if first == "":
        return default
    try:
        number = float(first)
    except (TypeError, ValueError):
        number = math.nan
    if not math.isfinite(number):
        raise FormatError(f"{path}: {keyword} is {value!r}; expected an integer")
    return int(number)


def _joined(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    try:
        return "\\".join(str(v) for v in value)
    except TypeError:
        return str(value)


def _group_item(group: Any, seq: str) -> Dataset | None:
    if group is None:
        return None
    s = group.get(seq)
    if s is None or len(s) == 0:
        return None
    return s[0]


def _frame_attr(per_frame: Any, shared: Any, seq: str, attr: str) -> Any:
    """Value of ``attr`` in functional group ``seq``: per-frame first, then shared."""
    for group in (per_frame, shared):
        item = _group_item(group, seq)
        if item is not None and attr in item:
            return item[attr].value
    return None


def _frame_type(per_frame: Any, shared: Any) -> str | None:
    for group in (per_frame, shared):
        if group is None:
            continue
        for elem in group:
            if elem.VR == "SQ" and elem.keyword.endswith("FrameTypeSequence") and len(elem.value):
                if "FrameType" in elem.value[0]:
                    return _joined(elem.value[0].FrameType)
    return None


def _frames_of(path: Path, ds: Dataset) -> list[_Frame]:
    """The 2D images of one data set (none for objects without pixel data)."""
    if not any(k in ds for k in _PIXEL_KEYWORDS) or "Rows" not in ds or "Columns" not in ds:
        return []
    uid = str(_value(ds, 0x0020000E) or f"(no SeriesInstanceUID) {path.parent}")
    rows = _checked_int(ds, 0x00280010, "Rows", path, 0)
    cols = _checked_int(ds, 0x00280011, "Columns", path, 0)
    samples = _checked_int(ds, 0x00280002, "SamplesPerPixel", path, 1)
    instance = _checked_int(ds, 0x00200013, "InstanceNumber", path, 0)
    top_ipp = _floats(_value(ds, 0x00200032), 3)
    top_iop = _floats(_value(ds, 0x00200037), 6)
    top_ps = _floats(_value(ds, 0x00280030), 2)
    top_thick = _float(_value(ds, 0x00180050))
    top_sbs = _float(_value(ds, 0x00180088))
    top_slope = _float(_value(ds, 0x00281053))
    top_icpt = _float(_value(ds, 0x00281052))
    image_type = _joined(_value(ds, 0x00080008))
    n_frames = _checked_int(ds, 0x00280008, "NumberOfFrames", path, 1)
    per_frame_seq = ds.get("PerFrameFunctionalGroupsSequence") if 0x52009230 in ds else None
    shared_seq = ds.get("SharedFunctionalGroupsSequence") if 0x52009229 in ds else None
    if per_frame_seq is None and shared_seq is None and n_frames <= 1:
        order = (
            _int(_value(ds, 0x00200100), 0),
            _int(_value(ds, 0x00200012), 0),
            _float(_value(ds, 0x00181060)) or 0.0,
            instance,
            str(path),
        )
        return [
            _Frame(
                path=path, ds=ds, frame=None, uid=uid, rows=rows, cols=cols, samples=samples,
                ipp=top_ipp, iop=top_iop, pixel_spacing=top_ps, thickness=top_thick,
                spacing_between=top_sbs,
                slope=1.0 if top_slope is None else top_slope,
                intercept=0.0 if top_icpt is None else top_icpt,
                image_type=image_type, echo=_joined(_value(ds, 0x00180086)), instance=instance,
                order=order,
            )
        ]
    shared = shared_seq[0] if shared_seq is not None and len(shared_seq) else None
    frames: list[_Frame] = []
    for i in range(n_frames):
        pf = per_frame_seq[i] if per_frame_seq is not None and i < len(per_frame_seq) else None
        ipp = _floats(_frame_attr(pf, shared, "PlanePositionSequence", "ImagePositionPatient"), 3)
        if ipp is None:
            # Without per-frame positions only a single frame can be placed.
            ipp = top_ipp if n_frames == 1 else None
        iop = _floats(_frame_attr(pf, shared, "PlaneOrientationSequence", "ImageOrientationPatient"), 6)
        ps = _floats(_frame_attr(pf, shared, "PixelMeasuresSequence", "PixelSpacing"), 2)
        thick = _float(_frame_attr(pf, shared, "PixelMeasuresSequence", "SliceThickness"))
        sbs = _float(_frame_attr(pf, shared, "PixelMeasuresSequence", "SpacingBetweenSlices"))
        slope = _float(_frame_attr(pf, shared, "PixelValueTransformationSequence", "RescaleSlope"))
        icpt = _float(_frame_attr(pf, shared, "PixelValueTransformationSequence", "RescaleIntercept"))
        echo = _frame_attr(pf, shared, "MREchoSequence", "EffectiveEchoTime")
        temporal = _frame_attr(pf, None, "FrameContentSequence", "TemporalPositionIndex")
        dims = _frame_attr(pf, None, "FrameContentSequence", "DimensionIndexValues")
        dims_t = () if dims is None else tuple(_int(v) for v in _seq(dims))
        frames.append(
            _Frame(
                path=path, ds=ds, frame=i, uid=uid, rows=rows, cols=cols, samples=samples,
                ipp=ipp,
                iop=iop if iop is not None else top_iop,
                pixel_spacing=ps if ps is not None else top_ps,
                thickness=thick if thick is not None else top_thick,
                spacing_between=sbs if sbs is not None else top_sbs,
                slope=slope if slope is not None else (1.0 if top_slope is None else top_slope),
                intercept=icpt if icpt is not None else (0.0 if top_icpt is None else top_icpt),
                image_type=_frame_type(pf, shared) or image_type,
                echo="" if echo is None else str(echo),
                instance=instance,
                order=(_int(temporal, 0), dims_t, 0, instance, f"{path}#{i:06d}"),
            )
        )
    return frames


def _close(a: np.ndarray | None, b: np.ndarray | None, tol: float) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return bool(np.allclose(a, b, rtol=0.0, atol=tol, equal_nan=True))


def _orientation_label(iop: np.ndarray | None) -> str | None:
    if iop is None or not np.all(np.isfinite(iop)):
        return None
    n = np.cross(iop[:3], iop[3:])
    norm = np.linalg.norm(n)
    if norm < 1e-6:
        return None
    n = np.abs(n / norm)
    axis = int(np.argmax(n))
    name = ("sagittal", "coronal", "axial")[axis]
    return name if n[axis] > 0.9999 else f"oblique ({name})"


@dataclass
class SeriesInfo:
    """One candidate series found by :func:`scan`.

    Attributes:
        key: what ``series=`` accepts: the SeriesInstanceUID, or
            ``"<uid>#<n>"`` for part n of a series split by geometry or type.
        index: 1-based position in the listing (also accepted by ``series=``).
        uid: the SeriesInstanceUID.
        description: SeriesDescription.
        modality: Modality.
        series_number: SeriesNumber, or None.
        n_files: number of files.
        n_images: number of 2D images (slices or frames).
        n_volumes: images per slice position (>1 for 4D), or None when the
            geometry is unusable.
        rows: Rows of each image.
        cols: Columns of each image.
        image_type: ImageType, backslash-joined.
        orientation: ``axial``, ``sagittal``, ``coronal`` or ``oblique (...)``.
        pixel_spacing: PixelSpacing (row spacing, column spacing) in mm.
        slice_thickness: SliceThickness in mm.
        echo: echo number or effective echo time, when set.
        split_by: attributes that split this SeriesInstanceUID into parts.
        files: the files of this candidate.
    """

    key: str
    index: int
    uid: str
    description: str
    modality: str
    series_number: int | None
    n_files: int
    n_images: int
    n_volumes: int | None
    rows: int
    cols: int
    image_type: str
    orientation: str | None
    pixel_spacing: tuple[float, float] | None
    slice_thickness: float | None
    echo: str | None
    split_by: tuple[str, ...] = ()
    files: tuple[Path, ...] = field(default=(), repr=False)
    _frames: list[_Frame] = field(default_factory=list, repr=False, compare=False)

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly summary (no file list)."""
        return {
            "index": self.index,
            "key": self.key,
            "uid": self.uid,
            "description": self.description,
            "modality": self.modality,
            "series_number": self.series_number,
            "n_files": self.n_files,
            "n_images": self.n_images,
            "n_volumes": self.n_volumes,
            "rows": self.rows,
            "cols": self.cols,
            "image_type": self.image_type,
            "orientation": self.orientation,
            "pixel_spacing": list(self.pixel_spacing) if self.pixel_spacing else None,
            "slice_thickness": self.slice_thickness,
            "echo": self.echo or None,
            "split_by": list(self.split_by),
        }

    def describe(self) -> str:
        """One line for listings and error messages."""
        parts = [f"[{self.index}] {self.key}", self.modality or "?"]
        if self.series_number is not None:
            parts.append(f"#{self.series_number}")
        parts.append(repr(self.description))
        size = f"{self.n_images} images in {self.n_files} files"
        if self.n_volumes and self.n_volumes > 1:
            size += f" ({self.n_volumes} volumes)"
        parts.append(size)
        parts.append(f"{self.rows}x{self.cols}" + (f" {self.orientation}" if self.orientation else ""))
        if self.image_type:
            parts.append(f"ImageType {self.image_type}")
        if self.slice_thickness is not None:
            parts.append(f"thickness {self.slice_thickness:g} mm")
        if self.echo:
            parts.append(f"echo {self.echo}")
        return ", ".join(parts)


def _differences(parts: list[list[_Frame]]) -> tuple[str, ...]:
    checks = [
        ("Rows/Columns", lambda f: (f.rows, f.cols)),
        ("ImageOrientationPatient", lambda f: None if f.iop is None else tuple(np.round(f.iop, 4))),
        ("PixelSpacing", lambda f: None if f.pixel_spacing is None else tuple(np.round(f.pixel_spacing, 4))),
        ("ImageType", lambda f: f.image_type),
        ("SliceThickness", lambda f: None if f.thickness is None else round(f.thickness, 3)),
        ("echo", lambda f: f.echo),
    ]
    return tuple(name for name, fn in checks if len({repr(fn(p[0])) for p in parts}) > 1)


def _count_positions(frames: list[_Frame]) -> int | None:
    f0 = frames[0]
    if f0.iop is None or any(f.ipp is None for f in frames) or not np.all(np.isfinite(f0.iop)):
        return None
    n = np.cross(f0.iop[:3], f0.iop[3:])
    if np.linalg.norm(n) < 1e-6:
        return None
    s = np.sort(np.array([f.ipp @ n for f in frames]))
    if not np.all(np.isfinite(s)):
        return None
    return int(1 + np.count_nonzero(np.diff(s) > POSITION_TOL_MM))


def _group(frames: list[_Frame]) -> list[SeriesInfo]:
    buckets: dict[tuple, list[list[_Frame]]] = {}
    for fr in frames:
        dkey = (
            fr.uid, fr.rows, fr.cols, fr.samples, fr.image_type, fr.echo,
            None if fr.thickness is None else round(fr.thickness, 3),
        )
        clusters = buckets.setdefault(dkey, [])
        for cl in clusters:
            ref = cl[0]
            if _close(ref.iop, fr.iop, _ORIENTATION_TOL) and _close(ref.pixel_spacing, fr.pixel_spacing, _SPACING_TOL):
                cl.append(fr)
                break
        else:
            clusters.append([fr])
    by_uid: dict[str, list[list[_Frame]]] = {}
    for dkey, clusters in buckets.items():
        by_uid.setdefault(dkey[0], []).extend(clusters)
    infos: list[tuple[tuple, SeriesInfo]] = []
    for uid, parts in by_uid.items():
        parts.sort(key=lambda cl: (min(f.instance for f in cl), str(cl[0].path), cl[0].frame or 0))
        split_by = _differences(parts) if len(parts) > 1 else ()
        for sub, cl in enumerate(parts, 1):
            f0 = cl[0]
            ds = f0.ds
            files = tuple(dict.fromkeys(f.path for f in cl))
            n_pos = _count_positions(cl)
            number = ds.get("SeriesNumber")
            info = SeriesInfo(
                key=uid if len(parts) == 1 else f"{uid}#{sub}",
                index=0,
                uid=uid,
                description=str(ds.get("SeriesDescription", "") or ""),
                modality=str(ds.get("Modality", "") or ""),
                series_number=_int(number) if number not in (None, "") else None,
                n_files=len(files),
                n_images=len(cl),
                n_volumes=(len(cl) // n_pos) if n_pos and len(cl) % n_pos == 0 else None,
                rows=f0.rows,
                cols=f0.cols,
                image_type=f0.image_type,
                orientation=_orientation_label(f0.iop),
                pixel_spacing=None if f0.pixel_spacing is None else tuple(float(v) for v in f0.pixel_spacing),
                slice_thickness=f0.thickness,
                echo=f0.echo or None,
                split_by=split_by,
                files=files,
                _frames=cl,
            )
            sort_key = (info.series_number if info.series_number is not None else 1 << 40, uid, sub)
            infos.append((sort_key, info))
    infos.sort(key=lambda t: t[0])
    out = [info for _, info in infos]
    for i, info in enumerate(out, 1):
        info.index = i
    return out


def _scan(path: Path) -> list[SeriesInfo]:
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    if path.is_dir():
        files = _list_files(path)
        if not files:
            raise DataError(f"{path}: folder is empty")
        candidates = [f for f in files if is_dicom_file(f)]
        if not candidates:
            raise FormatError(f"{path}: no DICOM files among its {len(files)} files")
    else:
        if path.stat().st_size == 0:
            raise FormatError(f"{path}: file is empty")
        if not is_dicom_file(path):
            raise FormatError(f"{path}: not a DICOM file (no DICM preamble and no DICOM data set at its start)")
        candidates = [path]
    frames: list[_Frame] = []
    skipped = 0
    for f in candidates:
        ds = _read_header(f)
        try:
            got = _frames_of(f, ds)
        except (*_CONVERSION_ERRORS, OSError) as exc:
            raise _malformed(f, exc) from exc
        if not got:
            skipped += 1
            logger.debug("%s: DICOM object without image data skipped", f)
        frames.extend(got)
    if not frames:
        raise FormatError(
            f"{path}: no DICOM images found ({len(candidates)} DICOM files, {skipped} without pixel data)"
        )
    return _group(frames)


def scan(path: str | os.PathLike[str]) -> list[SeriesInfo]:
    """List the candidate series under ``path`` (headers only; no pixels decoded).

    Args:
        path: a folder (searched recursively) or a single DICOM file.

    Returns:
        The candidates, ordered by SeriesNumber then UID, with 1-based ``index``.

    Raises:
        DataError: the path does not exist, is an empty folder, or cannot be read.
        FormatError: no DICOM image was found, or a DICOM file is corrupt.
    """
    return _scan(Path(path))


def _listing(cands: Sequence[SeriesInfo]) -> str:
    lines = ["  " + c.describe() for c in cands]
    split = sorted({c.uid for c in cands if c.key != c.uid})
    for uid in split:
        parts = [c for c in cands if c.uid == uid]
        lines.append(
            f"  ({uid} holds {len(parts)} reconstructions or geometries differing in "
            f"{', '.join(parts[0].split_by) or 'type'}; series={uid!r} takes them together)"
        )
    return "\n".join(lines)


def _select(cands: list[SeriesInfo], series: str | int | None, path: Path) -> list[SeriesInfo]:
    if series is None:
        if len(cands) == 1:
            return cands
        raise FormatError(
            f"{path}: {len(cands)} candidate series; choose one with series= (--series) by key or index:\n"
            + _listing(cands)
        )
    s = str(series).strip()
    for c in cands:
        if c.key == s:
            return [c]
    if s.isdigit():
        idx = int(s)
        if 1 <= idx <= len(cands):
            return [cands[idx - 1]]
        raise FormatError(f"{path}: series index {idx} out of range 1..{len(cands)}; candidates:\n" + _listing(cands))
    parts = [c for c in cands if c.uid == s]
    if not parts:
        raise FormatError(f"{path}: no series {s!r}; candidates:\n" + _listing(cands))
    f0 = parts[0]._frames[0]
    for p in parts[1:]:
        f = p._frames[0]
        if (f.rows, f.cols) != (f0.rows, f0.cols) or not _close(f.iop, f0.iop, _ORIENTATION_TOL) or not _close(
            f.pixel_spacing, f0.pixel_spacing, _SPACING_TOL
        ):
            raise FormatError(
                f"{path}: the parts of series {s} do not share one image grid (they differ in "
                f"{', '.join(p.split_by) or 'geometry'}); choose one:\n" + _listing(cands)
            )
    return parts


# --------------------------------------------------------------------------------------
# Geometry
# --------------------------------------------------------------------------------------


@dataclass
class _Plan:
    grid: list[list[_Frame]]  # [slice position][volume]
    positions: np.ndarray  # (K, 3) LPS
    row: np.ndarray  # unit vector along X (columns of a slice)
    col: np.ndarray  # unit vector along Y (rows)
    normal: np.ndarray
    du: float  # spacing along X (PixelSpacing[1])
    dv: float  # spacing along Y (PixelSpacing[0])
    affine: np.ndarray  # RAS, of the output grid
    tilt_deg: float
    resample: dict[str, Any] | None = None


def _check_frame(fr: _Frame) -> None:
    where = f"{fr.path}" + (f" frame {fr.frame + 1}" if fr.frame is not None else "")
    if fr.rows < 1 or fr.cols < 1:
        raise FormatError(f"{where}: image is {fr.rows} x {fr.cols} (Rows x Columns); expected at least 1 x 1")
    if fr.samples != 1:
        raise FormatError(f"{where}: SamplesPerPixel is {fr.samples}; only greyscale images (1) are supported")
    if fr.iop is None:
        value = fr.ds.get("ImageOrientationPatient")
        raise GeometryError(f"{where}: ImageOrientationPatient is missing or invalid ({value!r}); expected 6 numbers")
    if not np.all(np.isfinite(fr.iop)):
        raise GeometryError(f"{where}: ImageOrientationPatient is not finite: {fr.iop.tolist()}")
    r, c = fr.iop[:3], fr.iop[3:]
    nr, nc = float(np.linalg.norm(r)), float(np.linalg.norm(c))
    if nr < 1e-6 or nc < 1e-6:
        raise GeometryError(f"{where}: ImageOrientationPatient {fr.iop.tolist()} has a zero direction vector")
    cosang = abs(float(r @ c)) / (nr * nc)
    if cosang > _ORTHOGONALITY_TOL:
        raise GeometryError(
            f"{where}: ImageOrientationPatient {fr.iop.tolist()} is degenerate: row and column directions are "
            f"not orthogonal (they meet at {math.degrees(math.acos(min(1.0, cosang))):.3f}°, expected 90°)"
        )
    if fr.ipp is None:
        if fr.frame is not None and fr.ds.get("NumberOfFrames") and _int(fr.ds.get("NumberOfFrames"), 1) > 1:
            raise GeometryError(
                f"{fr.path}: multi-frame file without per-frame positions (no PlanePositionSequence); "
                f"its {_int(fr.ds.get('NumberOfFrames'), 1)} frames cannot be placed"
            )
        raise GeometryError(f"{where}: ImagePositionPatient is missing or invalid; expected 3 numbers")
    if not np.all(np.isfinite(fr.ipp)):
        raise GeometryError(f"{where}: ImagePositionPatient is not finite: {fr.ipp.tolist()}")
    if fr.pixel_spacing is None or not np.all(np.isfinite(fr.pixel_spacing)) or np.any(fr.pixel_spacing <= 0):
        value = None if fr.pixel_spacing is None else fr.pixel_spacing.tolist()
        raise GeometryError(f"{where}: PixelSpacing is missing or invalid ({value}); expected 2 positive numbers")


def _diagnose(positions: np.ndarray, normal: np.ndarray, resid: float) -> tuple[list[str], int, float]:
    """Name what makes a stack irregular: tilt, uneven spacing, missing slices."""
    ds = np.diff(positions @ normal)
    span = positions[-1] - positions[0]
    tilt = math.degrees(math.acos(min(1.0, abs(float(span @ normal)) / max(float(np.linalg.norm(span)), 1e-12))))
    typical = float(np.median(ds))
    parts: list[str] = []
    if tilt > TILT_TOL_DEG:
        parts.append(f"gantry tilt {_deg(tilt)}")
    missing = 0
    gaps: list[str] = []
    uneven = False
    for i, d in enumerate(ds):
        r = d / typical
        if abs(d - typical) <= max(POSITION_TOL_MM, 0.01 * typical):
            continue
        m = round(r)
        if m >= 2 and abs(r - m) <= _MISSING_RATIO_TOL:
            missing += m - 1
            gaps.append(f"{d:.2f} mm between slices {i + 1} and {i + 2}")
        else:
            uneven = True
    if uneven:
        parts.append(f"slice spacing varies {float(ds.min()):.2f}–{float(ds.max()):.2f} mm")
    if missing:
        parts.append(
            f"{missing} missing slice{'s' if missing > 1 else ''} (gap of {'; '.join(gaps)}; "
            f"usual spacing {typical:.2f} mm)"
        )
    if not parts:
        parts.append(f"slice positions deviate up to {resid:.3f} mm from a regular grid")
    return parts, missing, tilt


def _plan(frames: list[_Frame], label: str, resample: bool) -> _Plan:
    for fr in frames:
        _check_frame(fr)
    f0 = frames[0]
    row = f0.iop[:3] / np.linalg.norm(f0.iop[:3])
    col = f0.iop[3:] / np.linalg.norm(f0.iop[3:])
    normal = np.cross(row, col)
    normal /= np.linalg.norm(normal)
    dv, du = float(f0.pixel_spacing[0]), float(f0.pixel_spacing[1])

    s = np.array([fr.ipp @ normal for fr in frames])
    order = np.argsort(s, kind="stable")
    groups: list[list[int]] = []
    for idx in order:
        if groups and s[idx] - s[groups[-1][0]] <= POSITION_TOL_MM:
            groups[-1].append(int(idx))
        else:
            groups.append([int(idx)])
    for g in groups:
        spread = max(float(np.linalg.norm(frames[i].ipp - frames[g[0]].ipp)) for i in g)
        if spread > POSITION_TOL_MM:
            raise GeometryError(
                f"{label}: images at the same depth along the slice normal ({s[g[0]]:.2f} mm) lie up to "
                f"{spread:.2f} mm apart in-plane: not one stack of slices"
            )
    counts = [len(g) for g in groups]
    if len(set(counts)) > 1:
        raise GeometryError(
            f"{label}: 4D series is incomplete: its {len(groups)} slice positions hold between {min(counts)} and "
            f"{max(counts)} images (expected the same number at every position)"
        )
    grid = [sorted((frames[i] for i in g), key=lambda fr: fr.order) for g in groups]
    positions = np.array([g[0].ipp for g in grid], dtype=np.float64)
    k = len(grid)

    def ras(lin: np.ndarray, origin: np.ndarray) -> np.ndarray:
        aff = np.eye(4)
        aff[:3, :3] = _LPS_RAS @ lin
        aff[:3, 3] = _LPS_RAS @ origin
        return aff

    if k == 1:
        step_len = f0.spacing_between or f0.thickness or 1.0
        step = normal * abs(step_len)
        affine = ras(np.column_stack([row * du, col * dv, step]), positions[0])
        return _Plan(grid, positions, row, col, normal, du, dv, affine, 0.0)

    step = (positions[-1] - positions[0]) / (k - 1)
    predicted = positions[0] + np.outer(np.arange(k), step)
    resid = float(np.linalg.norm(positions - predicted, axis=1).max())
    if resid <= POSITION_TOL_MM:
        tilt = math.degrees(math.acos(min(1.0, abs(float(step @ normal)) / float(np.linalg.norm(step)))))
        tilt = tilt if tilt > TILT_TOL_DEG else 0.0
        if tilt and resample:
            parts = [f"gantry tilt {_deg(tilt)}"]
            return _resample_plan(grid, positions, row, col, normal, du, dv, parts, 0, tilt)
        if tilt:
            raise _tilt_error(label, grid, tilt, float(np.linalg.norm(step)), abs(float(step @ normal)))
        affine = ras(np.column_stack([row * du, col * dv, step]), positions[0])
        return _Plan(grid, positions, row, col, normal, du, dv, affine, 0.0)

    parts, missing, tilt = _diagnose(positions, normal, resid)
    if not resample:
        raise GeometryError(
            f"{label}: irregular slice geometry: {'; '.join(parts)}; "
            "pass resample=True (--resample) to resample onto a regular grid"
        )
    return _resample_plan(grid, positions, row, col, normal, du, dv, parts, missing, tilt)


def _deg(angle: float) -> str:
    """An angle for messages: one decimal (18.5°), more digits only for angles under 0.1°."""
    return f"{angle:.1f}°" if angle >= 0.1 else f"{angle:.2g}°"


def _tilt_error(label: str, grid: list[list[_Frame]], tilt: float, step: float, spacing: float) -> TiltError:
    """The refusal of a regular but tilted stack (the policy of the module docstring)."""
    first, last = grid[0][0].path, grid[-1][0].path
    stated = _float(grid[0][0].ds.get("GantryDetectorTilt"))
    header = f", GantryDetectorTilt {stated:g}" if stated is not None else ""
    return TiltError(
        f"{label}: gantry tilt {_deg(tilt)} (slices {first.name} to {last.name}{header}): the table step "
        f"({step:.2f} mm) is not perpendicular to the slices ({spacing:.2f} mm apart), so only a sheared affine "
        "would place them; pass resample=True (--resample) to resample onto an orthogonal grid as dcm2niix's "
        "tilt correction does"
    )


def _resample_plan(
    grid: list[list[_Frame]],
    positions: np.ndarray,
    row: np.ndarray,
    col: np.ndarray,
    normal: np.ndarray,
    du: float,
    dv: float,
    reasons: list[str],
    missing: int,
    tilt: float,
) -> _Plan:
    k = len(grid)
    rel = positions - positions[0]
    off_u = rel @ row / du
    off_v = rel @ col / dv
    depth = rel @ normal
    eps = 1e-3  # pixels: offsets closer than this to an integer do not grow the grid
    lo_u = min(0, int(math.floor(off_u.min() + eps)))
    hi_u = max(0, int(math.ceil(off_u.max() - eps)))
    lo_v = min(0, int(math.floor(off_v.min() + eps)))
    hi_v = max(0, int(math.ceil(off_v.max() - eps)))
    cols, rows = grid[0][0].cols, grid[0][0].rows
    steps = np.diff(depth)
    dmin = float(steps[steps > POSITION_TOL_MM].min())
    n_steps = max(1, int(math.ceil(depth[-1] / dmin - 1e-3)))
    n_steps = min(n_steps, 2 * k - 1)
    dz = float(depth[-1] / n_steps)
    origin = positions[0] + lo_u * du * row + lo_v * dv * col
    lin = np.column_stack([row * du, col * dv, normal * dz])
    affine = np.eye(4)
    affine[:3, :3] = _LPS_RAS @ lin
    affine[:3, 3] = _LPS_RAS @ origin
    info = {
        "reasons": reasons,
        "method": "linear",
        "slices_in": k,
        "slices_out": n_steps + 1,
        "slice_spacing_mm": dz,
        "tilt_corrected_deg": tilt if tilt > TILT_TOL_DEG else 0.0,
        "missing_slices_interpolated": missing,
        "in_plane_shape": [cols + hi_u - lo_u, rows + hi_v - lo_v],
        # private: used by _apply_resample, removed before it reaches the meta
        "_off_u": off_u - lo_u,
        "_off_v": off_v - lo_v,
        "_depth": depth,
    }
    return _Plan(grid, positions, row, col, normal, du, dv, affine, 0.0, info)


def _shift_axis(arr: np.ndarray, axis: int, offset: float, out_len: int, fill: float) -> np.ndarray:
    """Resample ``arr`` along ``axis`` so that output index I reads input coordinate ``I - offset``.

    Linear interpolation inside the data, the edge value within half a pixel
    outside it, ``fill`` further out. An integer offset copies values exactly.
    """
    n = arr.shape[axis]
    x = np.arange(out_len, dtype=np.float64) - offset
    near = np.round(x)
    x = np.where(np.abs(x - near) < 1e-6, near, x)
    inside = (x >= -0.5) & (x <= n - 0.5)
    xc = np.clip(x, 0, n - 1)
    i0 = np.floor(xc).astype(np.intp)
    i1 = np.minimum(i0 + 1, n - 1)
    w = (xc - i0).astype(np.float32)
    a0 = np.take(arr, i0, axis=axis)
    shape = [1] * arr.ndim
    shape[axis] = out_len
    w = w.reshape(shape)
    if np.any(w > 0):
        a1 = np.take(arr, i1, axis=axis)
        out = a0 * (1 - w) + a1 * w
    else:
        out = a0
    if not inside.all():
        out = np.where(inside.reshape(shape), out, np.float32(fill))
    return out.astype(np.float32, copy=False)


def _apply_resample(vol: np.ndarray, info: dict[str, Any]) -> np.ndarray:
    """Tilt-correct and make slices equidistant: (T, X, Y, K) -> (T, X', Y', M)."""
    fill = float(vol.min())
    nx, ny = info["in_plane_shape"]
    k = vol.shape[-1]
    shifted = np.empty(vol.shape[:1] + (nx, ny, k), dtype=np.float32)
    for i in range(k):
        sl = _shift_axis(vol[..., i], 1, float(info["_off_u"][i]), nx, fill)
        shifted[..., i] = _shift_axis(sl, 2, float(info["_off_v"][i]), ny, fill)
    depth = info["_depth"]
    m = info["slices_out"]
    z = np.arange(m, dtype=np.float64) * info["slice_spacing_mm"]
    out = np.empty(vol.shape[:1] + (nx, ny, m), dtype=np.float32)
    for j, zj in enumerate(z):
        lo = int(np.clip(np.searchsorted(depth, zj, side="right") - 1, 0, k - 2))
        w = (zj - depth[lo]) / (depth[lo + 1] - depth[lo])
        if w < 1e-6:
            out[..., j] = shifted[..., lo]
        elif w > 1 - 1e-6:
            out[..., j] = shifted[..., lo + 1]
        else:
            out[..., j] = shifted[..., lo] * np.float32(1 - w) + shifted[..., lo + 1] * np.float32(w)
    info["fill_value"] = fill
    return out


# --------------------------------------------------------------------------------------
# Pixels
# --------------------------------------------------------------------------------------

_DECODER_PACKAGES = {
    "1.2.840.10008.1.2.4.50": "pylibjpeg-libjpeg",
    "1.2.840.10008.1.2.4.51": "pylibjpeg-libjpeg",
    "1.2.840.10008.1.2.4.57": "pylibjpeg-libjpeg",
    "1.2.840.10008.1.2.4.70": "pylibjpeg-libjpeg",
    "1.2.840.10008.1.2.4.80": "pylibjpeg-libjpeg",
    "1.2.840.10008.1.2.4.81": "pylibjpeg-libjpeg",
    "1.2.840.10008.1.2.4.90": "pylibjpeg-openjpeg",
    "1.2.840.10008.1.2.4.91": "pylibjpeg-openjpeg",
    "1.2.840.10008.1.2.4.201": "pylibjpeg-openjpeg",
    "1.2.840.10008.1.2.4.202": "pylibjpeg-openjpeg",
    "1.2.840.10008.1.2.4.203": "pylibjpeg-openjpeg",
    "1.2.840.10008.1.2.5": "pylibjpeg-rle",
}


def _transfer_syntax(ds: Dataset, path: Path) -> UID | None:
    """The TransferSyntaxUID of ``ds`` (None when absent); refuses a UID that is not a transfer syntax."""
    meta = getattr(ds, "file_meta", None)
    ts = meta.get("TransferSyntaxUID") if meta is not None else None
    if not ts:
        return None
    uid = UID(str(ts))
    if not uid.is_transfer_syntax:
        what = f" ({uid.name})" if uid.name != str(uid) else ""
        raise FormatError(
            f"{path}: TransferSyntaxUID {uid}{what} is not a transfer syntax pydicom knows; "
            "the pixel data cannot be decoded (is the file corrupt?)"
        )
    return uid


def _decoder_problem(ts: UID | None) -> str | None:
    """Why pixels in ``ts`` cannot be decoded here (with a pip hint), or None."""
    if ts is None or not ts.is_compressed:
        return None

    package = _DECODER_PACKAGES.get(str(ts), "pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg")
    try:
        decoder = get_decoder(ts)
    except NotImplementedError:
        return f"no decoder exists for {ts.name} ({ts}) in pydicom"
    if not decoder.is_available:
        return f"no decoder is installed for {ts.name}; install one with: pip install {package}"
    return None


_NATIVE_LE = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.1.99"}


_NATIVE = frozenset({*_NATIVE_LE, "1.2.840.10008.1.2.2"})


def _check_deferred(elem: Any, path: Path, size: int, what: str) -> None:
    """Refuse a deferred element whose declared length runs past the end of the file.

    pydicom skips over deferred values while parsing and believes their
    length; reading one later would allocate that many bytes (up to 4 GiB).
    """
    if not isinstance(elem, RawDataElement) or elem.value is not None or elem.length == _UNDEFINED_LENGTH:
        return
    remaining = max(0, size - int(elem.value_tell))
    if elem.length > remaining:
        raise FormatError(
            f"{path}: {what} element claims {elem.length} bytes, but only {remaining} remain in the "
            f"{size}-byte file: the file is truncated or corrupt"
        )


def _check_pixel_length(ds: Dataset, path: Path, ts: UID | None) -> None:
    """Check the PixelData length before anything reads it.

    For native (uncompressed) transfer syntaxes, the element must hold
    Rows x Columns x NumberOfFrames x SamplesPerPixel x BitsAllocated / 8
    bytes (padding beyond is allowed); for every syntax, a deferred element
    must lie within the file.
    """
    elem = ds.get_item(_PIXEL_DATA_TAG, keep_deferred=True)
    if elem is None:
        return
    deferred = isinstance(elem, RawDataElement) and elem.value is None
    size = path.stat().st_size if deferred and str(ts) != _DEFLATED else None
    if isinstance(elem, RawDataElement):
        length = elem.length
        available = length if size is None else min(length, max(0, size - int(elem.value_tell)))
    else:
        value = elem.value
        length = available = len(value) if isinstance(value, (bytes, bytearray)) else _UNDEFINED_LENGTH
    if (ts is None or str(ts) in _NATIVE) and length != _UNDEFINED_LENGTH:
        rows, cols = _int(_value(ds, 0x00280010)), _int(_value(ds, 0x00280011))
        n_frames = max(1, _int(_value(ds, 0x00280008), 1))
        samples = max(1, _int(_value(ds, 0x00280002), 1))
        bits = _int(_value(ds, 0x00280100), 0)
        if rows > 0 and cols > 0 and (bits == 1 or (bits > 0 and bits % 8 == 0)):
            expected = (rows * cols * n_frames * samples * bits + 7) // 8
            if available < expected:
                raise FormatError(
                    f"{path}: pixel data has {available} bytes, expected {expected} ({n_frames} frame(s) of "
                    f"{rows} x {cols} x {samples} sample(s) at {bits} bits): the file is truncated or corrupt"
                )
    if size is not None:
        _check_deferred(elem, path, size, "pixel data")


def _native_pixels(ds: Dataset, path: Path, ts: UID | None) -> np.ndarray | None:
    """Fast path for uncompressed little-endian greyscale pixels; None when it does not apply.

    Signed data with BitsStored < BitsAllocated (needs sign extension) and
    anything unusual go through pydicom's decoder instead.
    """
    if ts is not None and str(ts) not in _NATIVE_LE:
        return None
    if "PixelData" not in ds or _int(ds.get("SamplesPerPixel", 1), 1) != 1:
        return None
    bits = _int(ds.get("BitsAllocated"), 0)
    stored = _int(ds.get("BitsStored"), bits)
    signed = _int(ds.get("PixelRepresentation"), 0) == 1
    if bits not in (8, 16, 32) or (signed and stored != bits):
        return None
    rows, cols = _int(_value(ds, 0x00280010)), _int(_value(ds, 0x00280011))
    n_frames = max(1, _int(ds.get("NumberOfFrames", 1), 1))
    count = rows * cols * n_frames
    raw = ds.PixelData
    need = count * bits // 8
    if len(raw) < need:
        raise FormatError(
            f"{path}: pixel data has {len(raw)} bytes, expected {need} "
            f"({n_frames} x {rows} x {cols} x {bits // 8}): the file is truncated or corrupt"
        )
    dtype = np.dtype(f"<{'i' if signed else 'u'}{bits // 8}")
    arr = np.frombuffer(raw, dtype=dtype, count=count)
    if not signed and stored < bits and arr.size and int(arr.max()) >= (1 << stored):
        return None  # stray high bits: let pydicom apply its rules
    arr = arr.astype(dtype.newbyteorder("="), copy=False)
    return arr.reshape((n_frames, rows, cols) if n_frames > 1 else (rows, cols))


def _decode(ds: Dataset, path: Path) -> np.ndarray:
    try:
        ts = _transfer_syntax(ds, path)
        _check_pixel_length(ds, path, ts)
        fast = _native_pixels(ds, path, ts)
        if fast is not None:
            return fast
        problem = _decoder_problem(ts)
    except (*_CONVERSION_ERRORS, OSError) as exc:
        raise _malformed(path, exc) from exc
    if problem:
        raise FormatError(f"{path}: cannot decode pixel data: {problem}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return ds.pixel_array
    except Exception as exc:  # noqa: BLE001 - decoders raise many types
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        what = f" ({ts.name})" if ts is not None else ""
        package = _DECODER_PACKAGES.get(str(ts)) if ts is not None else None
        hint = f"; if a decoder is missing: pip install {package}" if package and "missing" in str(exc) else ""
        raise FormatError(f"{path}: cannot decode pixel data{what}: {first}{hint}") from exc


def _load(grid: list[list[_Frame]]) -> tuple[np.ndarray, str]:
    """Decode and rescale: returns (T, X, Y, K) float32 and the stored dtype name."""
    k, t = len(grid), len(grid[0])
    f0 = grid[0][0]
    checked: set[int] = set()
    for row in grid:  # every file's pixel data must be there before the output is allocated
        for fr in row:
            if id(fr.ds) not in checked:
                checked.add(id(fr.ds))
                try:
                    _check_pixel_length(fr.ds, fr.path, _transfer_syntax(fr.ds, fr.path))
                except (*_CONVERSION_ERRORS, OSError) as exc:
                    raise _malformed(fr.path, exc) from exc
    out = np.empty((t, f0.cols, f0.rows, k), dtype=np.float32)
    cache: dict[int, np.ndarray] = {}
    dtypes: set[np.dtype] = set()
    for ti in range(t):
        planes = []
        for row in grid:
            fr = row[ti]
            if fr.frame is None:
                arr = _decode(fr.ds, fr.path)
            else:
                key = id(fr.ds)
                if key not in cache:
                    cache[key] = _decode(fr.ds, fr.path)
                full = cache[key]
                arr = full if full.ndim == 2 else full[fr.frame]
            if arr.shape != (fr.rows, fr.cols):
                raise FormatError(f"{fr.path}: pixel array shaped {arr.shape}, expected ({fr.rows}, {fr.cols})")
            dtypes.add(arr.dtype)
            planes.append(arr)
        # Stack in file order (rows, cols, K), then one transposing cast: faster than K strided writes.
        stack = np.stack(planes, axis=-1).transpose(1, 0, 2)
        slopes = np.array([row[ti].slope for row in grid], dtype=np.float64)
        icpts = np.array([row[ti].intercept for row in grid], dtype=np.float64)
        if np.all(slopes == 1.0) and np.all(icpts == 0.0):
            out[ti] = stack
        else:
            out[ti] = stack * slopes + icpts
    stored = np.result_type(*dtypes) if dtypes else np.dtype(np.float32)
    return out, np.dtype(stored).name


def _lean_header(ds: Dataset) -> Dataset:
    """The data set without pixel data, private tags and functional-group sequences."""
    drop = {tag_for_keyword(k) for k in (*_PIXEL_KEYWORDS, "PerFrameFunctionalGroupsSequence",
                                          "SharedFunctionalGroupsSequence")}
    out = Dataset()
    for tag in list(ds.keys()):
        if tag in drop or tag.is_private:
            continue
        out[tag] = ds[tag]  # loads deferred values; the source data set is not kept
    if getattr(ds, "file_meta", None) is not None:
        out.file_meta = ds.file_meta
    return out


# --------------------------------------------------------------------------------------
# read
# --------------------------------------------------------------------------------------


def read(
    path: str | os.PathLike[str],
    *,
    series: str | int | None = None,
    volume: int | None = None,
    resample: bool = False,
) -> MetaTensor:
    """Read one DICOM series (or one DICOM file) as a volume.

    Args:
        path: a folder (searched recursively) or a single DICOM file.
        series: which candidate to read when there are several: a key or a
            SeriesInstanceUID as listed by :func:`scan`, or a 1-based index.
        volume: for 4D series, the 0-based volume to keep (default: all
            volumes, as channels).
        resample: resample irregular or tilted stacks onto a regular
            orthogonal grid instead of refusing them.

    Returns:
        A float32 MetaTensor ``(C, X, Y, Z)`` in physical units whose affine
        maps voxel centres to RAS mm (see the module docstring for the meta).

    Raises:
        ConfigError: an option of the wrong type or out of range.
        DataError: the path is missing, an empty folder or unreadable.
        FormatError: no DICOM image, several candidates without ``series=``,
            an unknown ``series=``, a corrupt or undecodable file.
        GeometryError: missing or degenerate geometry, or an irregular or
            tilted stack without ``resample=True``.
    """
    if series is not None and (isinstance(series, bool) or not isinstance(series, (str, int))):
        raise ConfigError(f"series must be a key, a UID or a 1-based index, got {series!r}")
    if volume is not None and (isinstance(volume, bool) or not isinstance(volume, (int, np.integer)) or volume < 0):
        raise ConfigError(f"volume must be a 0-based integer index, got {volume!r}")
    if not isinstance(resample, (bool, np.bool_)):
        raise ConfigError(f"resample must be True or False, got {resample!r}")
    p = Path(path)
    with _gc_paused():
        try:
            return _read(p, series=series, volume=volume, resample=bool(resample))
        except MedsatError:
            raise
        except (*_CONVERSION_ERRORS, OSError) as exc:
            # a malformed element converted somewhere not guarded per file
            raise _malformed(p, exc) from exc


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while parsing many small header objects.

    Parsing a series creates hundreds of thousands of short-lived objects;
    collections triggered meanwhile only rescan them (nothing is cyclic), so
    pausing saves time. The previous state is restored.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _read(p: Path, *, series: str | int | None, volume: int | None, resample: bool) -> MetaTensor:
    cands = _scan(p)
    chosen = _select(cands, series, p)
    frames = [fr for c in chosen for fr in c._frames]
    key = chosen[0].key if len(chosen) == 1 else chosen[0].uid
    label = f"{p}" if len(cands) == 1 else f"{p} [series {key}]"
    plan = _plan(frames, label, resample)
    grid = plan.grid
    n_volumes = len(grid[0])
    if volume is not None:
        if volume >= n_volumes:
            raise ConfigError(f"volume={volume} out of range: {label} has {n_volumes} volume(s) (0..{n_volumes - 1})")
        grid = [[row[int(volume)]] for row in grid]
    data, stored = _load(grid)
    resampled: dict[str, Any] | None = None
    if plan.resample is not None:
        data = _apply_resample(data, plan.resample)
        resampled = {k: v for k, v in plan.resample.items() if not k.startswith("_")}
        msg = (
            f"{label}: resampled onto a regular grid ({'; '.join(resampled['reasons'])}): "
            f"{resampled['slices_in']} -> {resampled['slices_out']} slices at {resampled['slice_spacing_mm']:.4f} mm"
        )
        if resampled["missing_slices_interpolated"]:
            msg += f"; {resampled['missing_slices_interpolated']} missing slice(s) interpolated"
        logger.warning(msg)

    used = [fr for row in grid for fr in row]
    pairs = {(fr.slope, fr.intercept) for fr in used}
    exact = len(pairs) == 1
    slope, intercept = min(pairs)  # finest slope when slices differ
    if not exact:
        logger.info(
            "%s: RescaleSlope/Intercept differ between slices (%d mappings); meta intensity is the finest one",
            label, len(pairs),
        )
    first = grid[0][0]
    try:
        header = _lean_header(first.ds)
        modality = str(first.ds.get("Modality", "") or "")
    except (*_CONVERSION_ERRORS, OSError) as exc:
        raise _malformed(first.path, exc) from exc
    n_ch = len(grid[0])
    if n_ch > 1:
        band_names = [f"vol{i}" for i in range(n_ch)]
    elif volume is not None:
        band_names = [f"vol{int(volume)}"]
    else:
        band_names = [modality or "ch0"]
    return make_volume(
        data,
        plan.affine,
        source_dtype=stored,
        intensity={"slope": float(slope), "intercept": float(intercept)},
        band_names=band_names,
        source_format="dicom",
        source_path=str(p),
        header=header,
        modality=modality,
        series_uid=chosen[0].uid,
        series_key=key,
        series_description=chosen[0].description,
        gantry_tilt_deg=float(plan.tilt_deg),
        n_volumes=n_volumes,
        volume=None if volume is None else int(volume),
        resampled=resampled,
        intensity_exact=exact,
    )


# --------------------------------------------------------------------------------------
# write
# --------------------------------------------------------------------------------------

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


def _put(ds: Dataset, keyword: str, value: Any) -> None:
    """Set ``keyword`` with a new element (never mutating one shared with another data set)."""
    tag = tag_for_keyword(keyword)
    if tag is None:  # pragma: no cover - programming error
        raise KeyError(keyword)
    ds[tag] = DataElement(tag, dictionary_VR(tag), value)


def _default(ds: Dataset, keyword: str, value: Any) -> None:
    if keyword not in ds or ds[keyword].value in (None, ""):
        _put(ds, keyword, value)


def _ds_pair(slope: float, intercept: float) -> tuple[str, str, float, float]:
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


#: PatientPosition written when the source is not DICOM (NIfTI and others do not record it).
DEFAULT_PATIENT_POSITION = "HFS"
#: Manufacturer written when the source does not name one.
DEFAULT_MANUFACTURER = "medsat_sr"


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
    now = _dt.datetime.now()
    return now.strftime("%Y%m%d"), now.strftime("%H%M%S.%f")


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
    meta = dict(getattr(image, "meta", {}) or {})
    header = meta.get(Key.HEADER)
    header = header if isinstance(header, Dataset) else None

    # Geometry (LPS)
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
    h = float(c2 @ normal)  # step along the normal
    step_len = abs(h)
    tilt = math.degrees(math.acos(min(1.0, step_len / float(np.linalg.norm(c2)))))

    # Intensity
    vmin, vmax = float(data.min()), float(data.max())
    out_dtype = _target_dtype(dtype, meta.get(Key.SOURCE_DTYPE), vmin)
    inten = meta.get(Key.INTENSITY) or {}
    preferred = None
    try:
        preferred = (float(inten.get("slope", 1.0)), float(inten.get("intercept", 0.0)))
    except (TypeError, ValueError, AttributeError):
        preferred = (1.0, 0.0)
    s_str, b_str, slope, intercept, kept = _choose_mapping(vmin, vmax, out_dtype, preferred)
    if not kept:
        logger.info(
            "%s: values %.6g..%.6g do not fit %s with slope %s/intercept %s; re-encoded with slope %s, intercept %s",
            folder, vmin, vmax, out_dtype.name, preferred[0], preferred[1], s_str, b_str,
        )
    info = np.iinfo(out_dtype)

    # Modality and SOP class
    modality = str((header.get("Modality") if header is not None else None) or meta.get("modality") or "OT")
    if out_dtype.itemsize == 1:
        sop_class = SecondaryCaptureImageStorage
    elif modality == "CT":
        sop_class = CTImageStorage
    elif modality == "MR":
        sop_class = MRImageStorage
    else:
        sop_class = SecondaryCaptureImageStorage

    base = Dataset()
    if header is not None:
        for tag in list(header.keys()):
            elem = header[tag]
            if tag.is_private or tag.group == 0x0002 or elem.keyword in _DROP_ON_WRITE:
                continue
            base[tag] = copy.deepcopy(elem)
    date, time = _now()
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
    _put(base, "Modality", modality)
    _equipment_defaults(base, from_dicom=header is not None)
    series_uid = generate_uid()
    _put(base, "SeriesInstanceUID", series_uid)
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
    # Geometry common to all slices
    _put(base, "ImageOrientationPatient", [format_number_as_ds(float(v)) for v in (*row, *col)])
    _put(base, "PixelSpacing", [format_number_as_ds(dv), format_number_as_ds(du)])
    thickness = step_len
    if header is not None:
        src_sbs = _float(header.get("SpacingBetweenSlices"))
        src_thick = _float(header.get("SliceThickness"))
        if src_thick is not None and abs((src_sbs or src_thick) - step_len) <= 1e-3:
            thickness = src_thick
    _put(base, "SliceThickness", format_number_as_ds(thickness))
    _put(base, "SpacingBetweenSlices", format_number_as_ds(step_len))
    if tilt > TILT_TOL_DEG and header is not None:
        src_tilt = _float(header.get("GantryDetectorTilt"))
        if src_tilt is not None and abs(abs(src_tilt) - tilt) < 0.1:
            _put(base, "GantryDetectorTilt", format_number_as_ds(src_tilt))
    # Pixel module
    photometric = str(header.get("PhotometricInterpretation", "")) if header is not None else ""
    _put(base, "SamplesPerPixel", 1)
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        photometric = "MONOCHROME2"
    _put(base, "PhotometricInterpretation", photometric)
    _put(base, "Rows", ny)
    _put(base, "Columns", nx)
    bits = out_dtype.itemsize * 8
    _put(base, "BitsAllocated", bits)
    _put(base, "BitsStored", bits)
    _put(base, "HighBit", bits - 1)
    _put(base, "PixelRepresentation", 1 if out_dtype.kind == "i" else 0)
    _put(base, "RescaleIntercept", b_str)
    _put(base, "RescaleSlope", s_str)
    if "WindowCenter" not in base or "WindowWidth" not in base:
        _put(base, "WindowCenter", format_number_as_ds((vmin + vmax) / 2))
        _put(base, "WindowWidth", format_number_as_ds(max(vmax - vmin, 1.0)))
    if c > 1:
        _put(base, "NumberOfTemporalPositions", c)

    le_dtype = out_dtype.newbyteorder("<")
    pixel_vr = "OB" if bits == 8 else "OW"
    with atomic_dir(folder, overwrite=overwrite) as tmp:
        number = 0
        for ci in range(c):
            for k in range(nz):
                number += 1
                ds = Dataset(dict(base))  # fresh mapping; shared elements are never mutated
                sop_uid = generate_uid()
                ipp = origin + k * c2
                _put(ds, "SOPInstanceUID", sop_uid)
                _put(ds, "InstanceNumber", number)
                _put(ds, "ImagePositionPatient", [format_number_as_ds(float(v)) for v in ipp])
                _put(ds, "SliceLocation", format_number_as_ds(float(ipp @ normal)))
                if c > 1:
                    _put(ds, "TemporalPositionIdentifier", ci + 1)
                q = np.rint((data[ci, :, :, k].T.astype(np.float64) - intercept) / slope)
                pixels = np.clip(q, info.min, info.max).astype(le_dtype)
                ds[0x7FE00010] = DataElement(0x7FE00010, pixel_vr, pixels.tobytes())
                fm = FileMetaDataset()
                fm.MediaStorageSOPClassUID = sop_class
                fm.MediaStorageSOPInstanceUID = sop_uid
                fm.TransferSyntaxUID = ExplicitVRLittleEndian
                fm.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
                fm.ImplementationVersionName = f"MEDSAT_SR_{__version__}"[:16]
                ds.file_meta = fm
                ds.preamble = b"\x00" * 128
                pydicom.dcmwrite(tmp / f"IM{number:05d}.dcm", ds, enforce_file_format=True)
    logger.info(
        "wrote %d DICOM files (%s, %s, slope %s, intercept %s) to %s", number, sop_class.name, out_dtype.name,
        s_str, b_str, folder,
    )
    return Path(folder)

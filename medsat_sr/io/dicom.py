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
``write(image, folder)`` writes a derived series (DESIGN.md §3), atomically; it
lives in :mod:`medsat_sr.io.dicom_write` (its module docstring gives the
policies) and is importable from here. Slice geometry is planned in
:mod:`medsat_sr.io.dicom_stack`, pixel data decoded in
:mod:`medsat_sr.io.dicom_pixels`.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from monai.data import MetaTensor
from pydicom.datadict import tag_for_keyword
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.uid import UID

from medsat_sr.errors import ConfigError, DataError, FormatError, MedsatError
from medsat_sr.image import make_volume
from medsat_sr.io.dicom_base import (
    _CONVERSION_ERRORS,
    _DEFLATED,
    _PIXEL_DATA_TAG,
    _PIXEL_KEYWORDS,
    POSITION_TOL_MM,
    TILT_TOL_DEG,
    _checked_int,
    _close,
    _float,
    _floats,
    _Frame,
    _int,
    _joined,
    _malformed,
    _seq,
    _value,
)
from medsat_sr.io.dicom_pixels import _check_deferred, _load
from medsat_sr.io.dicom_stack import _apply_resample, _plan
from medsat_sr.io.dicom_write import (  # re-exported: the writer is part of this module's API
    DEFAULT_MANUFACTURER,  # noqa: F401
    DEFAULT_PATIENT_POSITION,  # noqa: F401
    WRITE_DTYPES,
    write,
)

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

_ORIENTATION_TOL = 1e-4
_SPACING_TOL = 1e-4
_DEFER_SIZE = 4096  # bytes: larger values (pixel data) are read only when used

_SKIP_NAMES = {"dicomdir", "dirfile", "readme", "license", "lockfile", "thumbs.db", "desktop.ini"}
_SKIP_SUFFIXES = {
    ".txt", ".json", ".nii", ".gz", ".bz2", ".zip", ".tar", ".md", ".rst", ".xml", ".html", ".htm",
    ".csv", ".tsv", ".png", ".jpg", ".jpeg", ".gif", ".bmp", ".tif", ".tiff", ".pdf", ".py", ".sh",
    ".bat", ".yaml", ".yml", ".log", ".mat", ".npy", ".npz", ".h5", ".bval", ".bvec", ".mgz",
    ".nrrd", ".mha", ".mhd", ".img", ".hdr", ".ini", ".cfg",
}
_IMAGE_TAGS = ("SOPClassUID", "ImagePositionPatient", "Rows", "Modality")
_PIXEL_TAGS = frozenset({0x7FE00008, 0x7FE00009, _PIXEL_DATA_TAG})  # Float, DoubleFloat, PixelData


def _ts_text(ds: Dataset) -> str:
    meta = getattr(ds, "file_meta", None)
    return str(meta.get("TransferSyntaxUID", "")) if meta is not None else ""



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


#: Candidates named in the first line of a "choose one" error (the full listing follows it).
BRIEF_CANDIDATES = 6


def _brief(cands: Sequence[SeriesInfo]) -> str:
    """The candidates in a few words each: only what tells them apart (the first line of the error)."""
    fields: list[tuple[str, Any]] = [
        ("", lambda c: c.modality or "?"),
        ("#", lambda c: c.series_number),
        ("", lambda c: repr(c.description) if c.description else None),
        ("", lambda c: f"{c.n_images} images" + (f" ({c.n_volumes} volumes)" if c.n_volumes and c.n_volumes > 1 else "")),
        ("", lambda c: f"{c.rows}x{c.cols}" + (f" {c.orientation}" if c.orientation else "")),
        ("ImageType ", lambda c: c.image_type or None),
        ("", lambda c: f"{c.slice_thickness:g} mm thick" if c.slice_thickness is not None else None),
        ("echo ", lambda c: c.echo),
    ]
    differ = [(pre, get) for pre, get in fields if len({get(c) for c in cands}) > 1] or fields[2:4]
    words = []
    for c in cands[:BRIEF_CANDIDATES]:
        got = [f"{pre}{v}" for pre, get in differ if (v := get(c)) is not None]
        words.append(f"[{c.index}] " + " ".join(got))
    more = f", and {len(cands) - BRIEF_CANDIDATES} more" if len(cands) > BRIEF_CANDIDATES else ""
    return ", ".join(words) + more


def _select(cands: list[SeriesInfo], series: str | int | None, path: Path) -> list[SeriesInfo]:
    if series is None:
        if len(cands) == 1:
            return cands
        raise FormatError(
            f"{path}: {len(cands)} candidate series ({_brief(cands)}); choose one with series= (--series) "
            f"by index 1..{len(cands)} or key:\n" + _listing(cands)
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

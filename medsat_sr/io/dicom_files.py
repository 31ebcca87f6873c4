"""DICOM files and frames: which files are DICOM images, their headers, and one _Frame per image frame."""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.uid import UID

from medsat_sr.errors import DataError, FormatError
from medsat_sr.io.dicom_base import (
    _CONVERSION_ERRORS,
    _DEFLATED,
    _PIXEL_DATA_TAG,
    _PIXEL_KEYWORDS,
    _checked_int,
    _float,
    _floats,
    _Frame,
    _int,
    _joined,
    _malformed,
    _seq,
    _value,
)
from medsat_sr.io.dicom_pixels import _check_deferred

__all__ = ["is_dicom_file"]

logger = logging.getLogger("medsat_sr.io.dicom")


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

"""DICOM series: frames grouped into series (SeriesInfo), listed (scan) and chosen (--series)."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.uid import UID

from medsat_sr.errors import DataError, FormatError
from medsat_sr.io.dicom_base import _CONVERSION_ERRORS, POSITION_TOL_MM, _close, _Frame, _int, _malformed
from medsat_sr.io.dicom_files import _frames_of, _list_files, _orientation_label, _read_header, is_dicom_file

__all__ = ["SeriesInfo", "scan", "BRIEF_CANDIDATES"]

logger = logging.getLogger("medsat_sr.io.dicom")

_ORIENTATION_TOL = 1e-4
_SPACING_TOL = 1e-4


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

"""Shared pieces of the DICOM modules: tolerances, element values, the frame record, error helpers.

:mod:`medsat_sr.io.dicom` (discovery and reading), :mod:`medsat_sr.io.dicom_stack`
(slice geometry), :mod:`medsat_sr.io.dicom_pixels` (decoding) and
:mod:`medsat_sr.io.dicom_write` (the derived-series writer) all build on these.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset

from medsat_sr.errors import DataError, FormatError, MedsatError

#: Slice positions closer than this (mm) are one position; a regular stack
#: predicts every slice position to within this distance.
POSITION_TOL_MM = 0.01
#: Tilt angles below this (degrees) are reported as 0.
TILT_TOL_DEG = 0.01

_LPS_RAS = np.diag([-1.0, -1.0, 1.0])

_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
_PIXEL_DATA_TAG = 0x7FE00010
_DEFLATED = "1.2.840.10008.1.2.1.99"

#: What pydicom raises when it converts a malformed element late (on first use, not while parsing):
#: unknown VR (NotImplementedError), bad values or a UID that is not a transfer syntax (ValueError),
#: binary values of the wrong length (struct.error), unknown encodings (LookupError), ...
_CONVERSION_ERRORS: tuple[type[BaseException], ...] = (
    NotImplementedError, ValueError, OverflowError, TypeError, LookupError, struct.error, EOFError,
)


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



def _close(a: np.ndarray | None, b: np.ndarray | None, tol: float) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return bool(np.allclose(a, b, rtol=0.0, atol=tol, equal_nan=True))
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

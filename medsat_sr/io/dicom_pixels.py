"""DICOM pixel data: length checks, the native fast path, pydicom's decoders, rescaling per frame."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.pixels import get_decoder
from pydicom.uid import UID

from medsat_sr.errors import FormatError
from medsat_sr.io.dicom_base import (
    _CONVERSION_ERRORS,
    _DEFLATED,
    _PIXEL_DATA_TAG,
    _Frame,
    _int,
    _malformed,
    _value,
)

_UNDEFINED_LENGTH = 0xFFFFFFFF

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

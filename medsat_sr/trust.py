"""The trust record: a JSON sidecar ``<output>.json`` next to every upscaled output.

It says what was done and how far to trust it:

=================== ==============================================================
key                 value
=================== ==============================================================
format              ``"medsat_sr.upscale_record"``, ``format_version`` 1
medsat_sr_version   the version that wrote the output (and ``torch_version``)
created             ISO 8601 UTC time
input               ``{"path", "sha256", "format", "kind", "shape", "spacing"|"transform"}``
                    (a folder's checksum covers its files' names and contents)
output              ``{"path", "format", "dtype", "shape", "spacing"|"transform", "bands"}``
                    and ``uncertainty``: the std map's path, or ``null``
method              ``"model"``, ``"ensemble"`` or a classical method
                    (``cubic``, ``linear``, ``nearest``, ``lanczos``)
models              per model: ``{"path", "sha256", "architecture", "weight", "metrics"}``
settings            scale (requested and effective per axis), precision, TTA
                    transforms, tiling (tile, halo, overlap), device
config              the resolved job config, when one was used
validation          the learned model's validation PSNR against cubic on its
                    held-out split (self-supervised fits, or the checkpoint's
                    recorded metrics), ``beats_cubic``
fallback            ``{"applied": bool, "reason": str|null, "forced": bool}``
consistency         degrade(SR) with the profile's degradation against the
                    input: PSNR (dB) per channel/band, the degradation used,
                    the data range
timings             seconds: read, fit, inference, write, total (streamed rasters
                    are read and written during ``inference``; ``write`` is 0)
=================== ==============================================================

The sidecar of a DICOM series folder ``out/`` is ``out.json`` next to it.
It is written atomically (temporary file, then rename).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from medsat_sr._atomic import atomic_path
from medsat_sr.errors import DataError

__all__ = ["RECORD_FORMAT", "sha256_path", "sidecar_path", "write_record", "jsonable", "now_iso"]

#: The ``format`` entry of a record.
RECORD_FORMAT = "medsat_sr.upscale_record"

_CHUNK = 1 << 22


def _hash_file(path: Path, h: Any) -> None:
    try:
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(_CHUNK), b""):
                h.update(chunk)
    except OSError as exc:
        raise DataError(f"{path}: cannot read for its checksum: {exc.strerror or exc}") from exc


def sha256_path(path: str | os.PathLike[str]) -> str:
    """sha256 (hex) of a file, or of a folder (each file's relative name and content, sorted).

    Raises:
        DataError: a file cannot be read.
    """
    p = Path(path)
    h = hashlib.sha256()
    if p.is_dir():
        for f in sorted(q for q in p.rglob("*") if q.is_file()):
            rel = f.relative_to(p).as_posix().encode("utf-8")
            h.update(len(rel).to_bytes(8, "little") + rel)
            fh = hashlib.sha256()
            _hash_file(f, fh)
            h.update(fh.digest())
        return h.hexdigest()
    _hash_file(p, h)
    return h.hexdigest()


def sidecar_path(output: str | os.PathLike[str]) -> Path:
    """``<output>.json`` (``out.nii.gz`` -> ``out.nii.gz.json``; a folder ``out`` -> ``out.json``)."""
    p = Path(output)
    return p.with_name(p.name.rstrip("/") + ".json")


def now_iso() -> str:
    """The current UTC time, ISO 8601 with a Z."""
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def jsonable(value: Any) -> Any:
    """``value`` as plain JSON data (tuples to lists, numpy scalars to numbers, NaN/inf to null)."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, (np.ndarray,)):
        return jsonable(value.tolist())
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        v = float(value)
        return v if math.isfinite(v) else None
    if isinstance(value, Path):
        return str(value)
    if value is None or isinstance(value, (bool, int, str)):
        return value
    return str(value)


def write_record(record: Mapping[str, Any], output: str | os.PathLike[str]) -> Path:
    """Write ``record`` as ``<output>.json``, atomically.

    Returns:
        The sidecar path.

    Raises:
        WriteError: the folder is not writable.
    """
    path = sidecar_path(output)
    text = json.dumps(jsonable(record), indent=2, allow_nan=False)
    with atomic_path(path) as tmp:
        tmp.write_text(text + "\n", encoding="utf-8")
    return path

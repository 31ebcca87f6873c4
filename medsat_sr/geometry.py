"""The one place where grids change: scaling, cropping, tiling, windows.

Two conventions, documented in DESIGN.md §3:

* Volumes: an ``(N+1)x(N+1)`` affine maps voxel *centres* to world mm.
  Upscaling by ``s`` per axis keeps the field of view (the outer voxel
  edges)::

      A' = A · diag(1/s)
      origin' = origin + A · ((1/s - 1) / 2)
      shape' = round(shape · s)

  When ``shape · s`` is not an integer, the scale actually applied is
  ``shape' / shape`` so that the field of view stays exact.

* Rasters: the GDAL/rasterio transform maps pixel *corners*. Then
  ``T' = T · Affine.scale(1/s)``; CRS and bounds stay identical.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from medsat_sr.errors import GeometryError

__all__ = [
    "SCALE_RTOL",
    "round_half_up",
    "snap_scale",
    "as_scale",
    "scaled_shape",
    "effective_scale",
    "scale_affine",
    "scale_transform",
    "crop_affine",
    "crop_transform",
    "world_corners",
    "fov_corners",
    "Tile",
    "iter_tiles",
    "check_affine",
    "spacing_and_orientation",
]


#: Relative tolerance below which two spacings (or a factor and 1) count as equal. Real headers
#: carry rounded direction cosines (dcm2niix writes oblique ones to 5-6 digits), so a column norm of
#: 1.000007 must not turn an in-plane axis into an upscaled one.
SCALE_RTOL = 1e-4


def snap_scale(scale: Sequence[float], rtol: float = SCALE_RTOL) -> tuple[float, ...]:
    """``scale`` with factors within ``rtol`` of a whole number set to that number (1.000007 -> 1.0).

    A factor that close to an integer cannot change any grid below 10^4 samples per axis,
    and snapping keeps the integer-factor routes (exact tiling, slice models) open.
    """
    out = []
    for f in scale:
        r = float(round(float(f)))
        out.append(r if r >= 1 and abs(float(f) - r) <= rtol * r else float(f))
    return tuple(out)


def as_scale(scale: float | Sequence[float], ndim: int) -> np.ndarray:
    """Broadcast ``scale`` to ``ndim`` positive finite factors.

    Raises:
        GeometryError: wrong length, or a factor that is not finite and > 0.
    """
    s = np.atleast_1d(np.asarray(scale, dtype=np.float64))
    if s.size == 1:
        s = np.repeat(s, ndim)
    if s.shape != (ndim,):
        raise GeometryError(f"scale must have 1 or {ndim} factors, got {len(s)}")
    if not np.all(np.isfinite(s)) or np.any(s <= 0):
        raise GeometryError(f"scale factors must be finite and > 0, got {s.tolist()}")
    return s


def round_half_up(x: float) -> int:
    """``x`` rounded half up, with halves recognised to 1e-9 whichever way they were computed.

    ``231 / 4.4`` is 52.49999... and ``231 * (1 / 4.4)`` is 52.5000...: a
    plain ``floor(x + 0.5)`` would give 52 and 53, so a degradation and a
    grid computed from the same factor could disagree by one sample.
    """
    return int(np.floor(float(x) + 0.5 + 1e-9))


def scaled_shape(shape: Sequence[int], scale: float | Sequence[float]) -> tuple[int, ...]:
    """Output grid size ``round(shape · s)``, at least 1 per axis.

    Raises:
        GeometryError: invalid scale.
    """
    s = as_scale(scale, len(shape))
    return tuple(max(1, round_half_up(n * f)) for n, f in zip(shape, s))


def effective_scale(shape: Sequence[int], scale: float | Sequence[float]) -> np.ndarray:
    """The scale that maps ``shape`` exactly onto :func:`scaled_shape`."""
    out = scaled_shape(shape, scale)
    return np.asarray(out, dtype=np.float64) / np.asarray(shape, dtype=np.float64)


def scale_affine(affine: np.ndarray, scale: float | Sequence[float]) -> np.ndarray:
    """Affine of the grid upscaled by ``scale`` with the same field of view.

    Args:
        affine: ``(N+1)x(N+1)`` voxel-centre affine.
        scale: factor per spatial axis (>1 makes more, smaller voxels). Use
            :func:`effective_scale` first when ``shape · scale`` is not integral.

    Returns:
        The new affine (float64).
    """
    aff = np.asarray(affine, dtype=np.float64)
    n = aff.shape[0] - 1
    s = as_scale(scale, n)
    out = aff.copy()
    out[:n, :n] = aff[:n, :n] / s[None, :]
    out[:n, n] = aff[:n, n] + aff[:n, :n] @ ((1.0 / s - 1.0) / 2.0)
    return out


def scale_transform(transform: Sequence[float], scale: float | Sequence[float]) -> tuple[float, ...]:
    """Raster corner transform of the grid upscaled by ``scale``.

    Args:
        transform: ``(a, b, c, d, e, f)``.
        scale: one factor, or ``(s_rows, s_cols)``.

    Returns:
        ``T · Affine.scale(1/s_cols, 1/s_rows)`` as 6 floats.
    """
    s = as_scale(scale, 2)
    s_rows, s_cols = float(s[0]), float(s[1])
    a, b, c, d, e, f = (float(v) for v in transform[:6])
    return (a / s_cols, b / s_rows, c, d / s_cols, e / s_rows, f)


def crop_affine(affine: np.ndarray, start: Sequence[int | float]) -> np.ndarray:
    """Affine of the sub-grid whose first voxel is ``start`` in the parent grid."""
    aff = np.asarray(affine, dtype=np.float64).copy()
    n = aff.shape[0] - 1
    aff[:n, n] = aff[:n, n] + aff[:n, :n] @ np.asarray(start, dtype=np.float64)
    return aff


def crop_transform(transform: Sequence[float], row_off: float, col_off: float) -> tuple[float, ...]:
    """Corner transform of a window starting at ``(row_off, col_off)``."""
    a, b, c, d, e, f = (float(v) for v in transform[:6])
    return (a, b, c + a * col_off + b * row_off, d, e, f + d * col_off + e * row_off)


def world_corners(affine: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """World positions of the ``2**N`` corner voxel *centres*, shaped ``(2**N, N)``."""
    aff = np.asarray(affine, dtype=np.float64)
    n = aff.shape[0] - 1
    grid = np.array(np.meshgrid(*[[0, int(k) - 1] for k in shape[:n]], indexing="ij")).reshape(n, -1)
    return (aff[:n, :n] @ grid + aff[:n, n : n + 1]).T


def fov_corners(affine: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """World positions of the ``2**N`` outer corners of the field of view (voxel edges)."""
    aff = np.asarray(affine, dtype=np.float64)
    n = aff.shape[0] - 1
    grid = np.array(np.meshgrid(*[[-0.5, int(k) - 0.5] for k in shape[:n]], indexing="ij")).reshape(n, -1)
    return (aff[:n, :n] @ grid + aff[:n, n : n + 1]).T


@dataclass(frozen=True)
class Tile:
    """One tile of a grid.

    Attributes:
        read: ``(start, stop)`` per axis of the region to read, halo included,
            clipped to the grid.
        core: ``(start, stop)`` per axis of the region this tile owns; the
            cores of all tiles partition the grid exactly.
    """

    read: tuple[tuple[int, int], ...]
    core: tuple[tuple[int, int], ...]

    def read_slices(self) -> tuple[slice, ...]:
        """Slices of the read region."""
        return tuple(slice(a, b) for a, b in self.read)

    def core_in_read(self) -> tuple[slice, ...]:
        """Slices of the core inside the read region."""
        return tuple(slice(c0 - r0, c1 - r0) for (r0, _), (c0, c1) in zip(self.read, self.core))

    def core_slices(self) -> tuple[slice, ...]:
        """Slices of the core in the full grid."""
        return tuple(slice(a, b) for a, b in self.core)


def iter_tiles(shape: Sequence[int], tile: int | Sequence[int], halo: int | Sequence[int] = 0) -> Iterator[Tile]:
    """Partition a grid into tiles whose cores cover every pixel exactly once.

    Args:
        shape: grid size per axis.
        tile: core size per axis (need not divide ``shape``).
        halo: extra context read on each side, clipped at the grid border.

    Raises:
        GeometryError: a tile size < 1 or a negative halo.
    """
    n = len(shape)
    t = [int(v) for v in (np.broadcast_to(np.asarray(tile), (n,)))]
    h = [int(v) for v in (np.broadcast_to(np.asarray(halo), (n,)))]
    if any(v < 1 for v in t):
        raise GeometryError(f"tile size must be >= 1 per axis, got {t}")
    if any(v < 0 for v in h):
        raise GeometryError(f"halo must be >= 0 per axis, got {h}")
    starts = [range(0, int(s), ts) for s, ts in zip(shape, t)]
    for idx in np.ndindex(*[len(r) for r in starts]):
        core = tuple((starts[a][i], min(starts[a][i] + t[a], int(shape[a]))) for a, i in enumerate(idx))
        read = tuple((max(0, c0 - h[a]), min(int(shape[a]), c1 + h[a])) for a, (c0, c1) in enumerate(core))
        yield Tile(read=read, core=core)


def check_affine(affine: np.ndarray, *, what: str) -> None:
    """Refuse a non-finite or singular affine.

    Args:
        affine: a 4x4 (volume) or 3x3 (raster) affine.
        what: the file or object it belongs to, for the message.

    Raises:
        GeometryError: naming ``what`` and the problem.
    """
    aff = np.asarray(affine, dtype=np.float64)
    if not np.all(np.isfinite(aff)):
        raise GeometryError(f"{what}: affine has NaN or infinite entries")
    lin = aff[:-1, :-1]
    # |det(lin)| < 1e-12 * s**n, computed as det(lin / s) so that huge entries cannot overflow s**n
    s = max(1.0, float(np.abs(lin).max()))
    if abs(np.linalg.det(lin / s)) < 1e-12:
        raise GeometryError(f"{what}: affine is singular (zero voxel size or collinear axes)")


def spacing_and_orientation(affine: np.ndarray) -> tuple[tuple[float, float, float], str]:
    """The voxel spacing (column norms, mm) and the RAS axis codes (``"RAS"``, ``"LPI"``, ...) of a volume affine."""
    from nibabel.orientations import aff2axcodes

    aff = np.asarray(affine, dtype=np.float64)
    spacing = tuple(float(v) for v in np.sqrt((aff[:3, :3] ** 2).sum(axis=0)))
    return spacing, "".join(aff2axcodes(aff))  # type: ignore[return-value]

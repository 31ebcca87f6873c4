"""Classical resampling baselines with medsat_sr's geometry: cubic, linear, nearest, lanczos.

Every method samples the output grid of :mod:`medsat_sr.geometry`: along an
axis upscaled from ``n`` to ``m = round(n * s)`` samples, output sample ``k``
sits at input index ``(k + 0.5) * n / m - 0.5`` (the field of view, i.e. the
outer voxel edges, is kept). That is the convention of
:func:`medsat_sr.geometry.scale_affine` / :func:`~medsat_sr.geometry.scale_transform`
and of the decimation in :mod:`medsat_sr.degrade`, so
``degrade(baseline(x))`` lands back on the grid of ``x``.

Volumes (``(C, X, Y, Z)`` arrays, :func:`resample_volume`):

========== =================================================================
method     implementation
========== =================================================================
cubic      cubic B-spline (``scipy.ndimage.zoom(order=3, grid_mode=True,
           mode="grid-mirror")``): the DESIGN.md §5 baseline. The spline is
           interpolating (it passes through the input samples).
linear     ``scipy.ndimage.zoom(order=1, ...)`` (separable linear)
nearest    the input voxel that *contains* each output centre,
           ``floor((k + 0.5) * n / m)`` (exact integer arithmetic; also the
           rule used to upsample nodata masks)
lanczos    separable Lanczos-3 (6 taps per axis), weights normalised to sum 1,
           half-sample symmetric reflection at the borders (as GDAL's
           ``lanczos`` resampling, which has the same kernel)
========== =================================================================

``grid_mode=True`` makes scipy place samples at ``(k + 0.5) * n / m - 0.5``
(verified in ``tests/test_inference.py``); ``mode="grid-mirror"`` reflects
about the outer voxel edges (``d c b a | a b c d``), the same border rule as
:mod:`medsat_sr.degrade`. Whole volumes are resampled in memory, one channel
at a time (the B-spline prefilter is global along each axis).

Rasters (:func:`resample_raster_window`): GDAL through
:func:`rasterio.warp.reproject` onto the scaled transform in the same CRS
(``Resampling.cubic``, ``bilinear``, ``nearest``, ``lanczos``), window by
window: an output window needs only the source window under it plus a halo of
:data:`GDAL_HALO` source pixels, and the result equals a whole-image
reproject exactly (GDAL computes every output pixel from its own source
neighbourhood; tested). Nodata is passed to GDAL (``src_nodata``), which
leaves invalid source pixels out of each kernel; the output mask is then
forced to the nearest-upsampled source mask (DESIGN.md §3).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from medsat_sr.errors import ConfigError, GeometryError

__all__ = [
    "METHODS",
    "GDAL_HALO",
    "resample_volume",
    "nearest_index",
    "upsample_mask",
    "lanczos_weights",
    "resample_raster_window",
    "gdal_resampling",
    "cubic_bspline",
    "gdal_resize",
    "BASELINES",
    "upsample",
    "resample_affine",
]

#: The classical methods, by name.
METHODS: tuple[str, ...] = ("cubic", "linear", "nearest", "lanczos")

#: Source pixels of context GDAL needs around a window (lanczos reaches 3; one spare).
GDAL_HALO = 4

_ORDERS = {"cubic": 3, "linear": 1}


def _check_method(method: str) -> str:
    if method not in METHODS:
        raise ConfigError(f"unknown method {method!r}; expected one of {list(METHODS)}")
    return method


def nearest_index(n: int, m: int) -> np.ndarray:
    """Index of the input sample containing each of ``m`` output centres (``n`` inputs).

    ``floor((k + 0.5) * n / m)``, computed in integers: ``((2k + 1) n) // (2m)``.
    """
    k = np.arange(int(m), dtype=np.int64)
    return np.minimum(((2 * k + 1) * int(n)) // (2 * int(m)), int(n) - 1)


def upsample_mask(mask: np.ndarray, out_shape: Sequence[int]) -> np.ndarray:
    """Nearest upsampling of a mask (or any array) over its trailing axes to ``out_shape``."""
    arr = np.asarray(mask)
    nd = len(out_shape)
    for ax in range(nd):
        axis = arr.ndim - nd + ax
        n, m = arr.shape[axis], int(out_shape[ax])
        if n != m:
            arr = np.take(arr, nearest_index(n, m), axis=axis)
    return arr


def _lanczos(x: np.ndarray, a: int = 3) -> np.ndarray:
    out = np.sinc(x) * np.sinc(x / a)
    out[np.abs(x) >= a] = 0.0
    return out


def _reflect(idx: np.ndarray, n: int) -> np.ndarray:
    """Half-sample symmetric reflection of indices into ``[0, n)``."""
    if n == 1:
        return np.zeros_like(idx)
    period = 2 * n
    r = np.mod(idx, period)
    return np.where(r >= n, period - 1 - r, r)


def lanczos_weights(n: int, m: int, a: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Taps and weights of Lanczos-``a`` resampling from ``n`` to ``m`` samples (upsampling).

    Returns:
        ``(taps, weights)``, both ``(m, 2a)``: input indices (reflected into
        range) and weights summing to 1 per output.
    """
    pos = (np.arange(m, dtype=np.float64) + 0.5) * (n / m) - 0.5
    base = np.floor(pos).astype(np.int64)
    offs = np.arange(-a + 1, a + 1, dtype=np.int64)
    taps = base[:, None] + offs[None, :]
    w = _lanczos(pos[:, None] - taps, a)
    w /= w.sum(axis=1, keepdims=True)
    return _reflect(taps, n), w


def _lanczos_axis(x: torch.Tensor, dim: int, m: int) -> torch.Tensor:
    n = x.shape[dim]
    if n == m:
        return x
    taps, w = lanczos_weights(n, m)
    src = x.movedim(dim, 0).contiguous()
    out = None
    shape = [m] + [1] * (x.ndim - 1)
    for j in range(taps.shape[1]):
        wj = torch.from_numpy(w[:, j]).to(x.dtype).reshape(shape)
        term = src.index_select(0, torch.from_numpy(taps[:, j])) * wj
        out = term if out is None else out.add_(term)
    assert out is not None
    return out.movedim(0, dim).contiguous()


def resample_volume(data: np.ndarray | torch.Tensor, out_shape: Sequence[int], method: str = "cubic") -> np.ndarray:
    """Resample ``(C, *spatial)`` onto ``out_shape`` (FOV-keeping grid of :mod:`medsat_sr.geometry`).

    Args:
        data: channel-first array, 1-3 spatial axes, physical values.
        out_shape: output spatial size, e.g. ``geometry.scaled_shape(shape, s)``.
        method: one of :data:`METHODS`.

    Returns:
        float32 ``(C, *out_shape)``.

    Raises:
        ConfigError: unknown method.
        GeometryError: ``out_shape`` of the wrong length or not positive.
    """
    _check_method(method)
    if isinstance(data, torch.Tensor):
        arr = data.detach().cpu().as_subclass(torch.Tensor).numpy() if hasattr(data, "as_subclass") else data.numpy()
    else:
        arr = np.asarray(data)
    out_shape = tuple(int(v) for v in out_shape)
    nd = arr.ndim - 1
    if len(out_shape) != nd or any(v < 1 for v in out_shape):
        raise GeometryError(f"out_shape must have {nd} positive sizes, got {out_shape}")
    arr = arr.astype(np.float32, copy=False)
    if method == "nearest":
        return np.ascontiguousarray(upsample_mask(arr, out_shape), dtype=np.float32)
    if method == "lanczos":
        t = torch.from_numpy(np.ascontiguousarray(arr))
        for ax in range(nd):
            t = _lanczos_axis(t, ax + 1, out_shape[ax])
        return t.numpy().astype(np.float32, copy=False)
    # The tensor-product spline is separable: resampling axis by axis (prefilter + 4 taps
    # per output for cubic, 2 for linear) equals scipy.ndimage.zoom(order, grid_mode=True,
    # mode="grid-mirror") to float precision, and skips the axes that are not scaled.
    t = torch.from_numpy(np.ascontiguousarray(arr))
    for ax in range(nd):
        if t.shape[ax + 1] != out_shape[ax]:
            t = _spline_axis(t, ax + 1, out_shape[ax], _ORDERS[method])
    return t.numpy().astype(np.float32, copy=False)


def _bspline3(d: np.ndarray) -> np.ndarray:
    """The cubic B-spline basis at offsets ``d``."""
    a = np.abs(d)
    return np.where(a < 1, 2.0 / 3.0 - a**2 + a**3 / 2.0, np.where(a < 2, (2.0 - a) ** 3 / 6.0, 0.0))


def _spline_axis(x: torch.Tensor, dim: int, m: int, order: int, step: float | None = None) -> torch.Tensor:
    """Resample ``x`` along ``dim`` to ``m`` samples: B-spline of ``order`` 1 or 3, mirror borders.

    Output ``k`` is read at input index ``(k + 0.5) * step - 0.5``; ``step``
    defaults to ``n / m`` (the grids share their field of view).
    """
    n = x.shape[dim]
    pos = (np.arange(m, dtype=np.float64) + 0.5) * (n / m if step is None else step) - 0.5
    if order == 3:
        from scipy import ndimage

        coef = torch.from_numpy(
            ndimage.spline_filter1d(x.numpy().astype(np.float64), order=3, axis=dim, mode="grid-mirror")
        )
        base = np.floor(pos).astype(np.int64) - 1
        taps = base[:, None] + np.arange(4)[None, :]
        w = _bspline3(pos[:, None] - taps)
        src = coef.to(torch.float32)
    else:
        base = np.floor(pos).astype(np.int64)
        taps = base[:, None] + np.arange(2)[None, :]
        frac = pos - base
        w = np.stack([1.0 - frac, frac], axis=1)
        src = x.float()
    taps = _reflect(taps, n)
    # gather along the first axis: whole contiguous slabs (much faster than gathering the last axis)
    src = src.movedim(dim, 0).contiguous()
    out = None
    shape = [m] + [1] * (x.ndim - 1)
    for j in range(taps.shape[1]):
        term = src.index_select(0, torch.from_numpy(taps[:, j])).mul_(torch.from_numpy(w[:, j]).to(torch.float32).reshape(shape))
        out = term if out is None else out.add_(term)
    assert out is not None
    return out.movedim(0, dim).contiguous()


def cubic_bspline(x: torch.Tensor | np.ndarray, factors: Sequence[float], out_shape: Sequence[int]) -> torch.Tensor:
    """Cubic B-spline interpolation onto a grid ``factors`` times finer: the volumes' baseline.

    Along each trailing spatial axis with factor ``f``, output sample ``i`` is
    read at the input coordinate ``(i + 0.5) / f - 0.5``: the sample positions
    of :mod:`medsat_sr.degrade` inverted exactly, also when ``n * f`` is not
    a whole number (training patches at non-integer slice factors). Spline
    order 3, half-sample symmetric borders; the same spline as
    :func:`resample_volume` (``method="cubic"``), which places samples by the
    size ratio instead.

    Args:
        x: ``(..., *spatial)`` with ``len(factors)`` trailing spatial axes.
        factors: upsampling factor per spatial axis (> 0).
        out_shape: output size per spatial axis.

    Returns:
        float32 tensor ``(..., *out_shape)``.

    Raises:
        GeometryError: ``out_shape`` and ``factors`` of different lengths, or
            more axes than ``x`` has.
    """
    t = _as_cpu_float(x)
    nd = len(factors)
    if len(out_shape) != nd or t.ndim < nd:
        raise GeometryError(f"need one factor and one output size per spatial axis, got {list(factors)} and {list(out_shape)}")
    for i, (f, n_out) in enumerate(zip(factors, out_shape)):
        dim = t.ndim - nd + i
        if t.shape[dim] == int(n_out) and abs(float(f) - 1.0) < 1e-9:
            continue
        t = _spline_axis(t, dim, int(n_out), 3, step=1.0 / float(f))
    return t


def _as_cpu_float(x: torch.Tensor | np.ndarray) -> torch.Tensor:
    """A plain float32 CPU tensor (MetaTensors unwrapped)."""
    if isinstance(x, torch.Tensor):
        return x.detach().as_subclass(torch.Tensor).cpu().to(torch.float32).contiguous()
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))


#: Corner transform of the synthetic grid that :func:`gdal_resize` resamples on.
_GRID_SIZE = 1000.0


def gdal_resize(x: torch.Tensor | np.ndarray, out_shape: Sequence[int], method: str = "cubic") -> torch.Tensor:
    """GDAL resampling of ``(..., H, W)`` onto ``out_shape`` with the same field of view: the rasters' baseline.

    Both grids cover one synthetic square (pixel corners, as
    :func:`medsat_sr.geometry.scale_transform`); the work is
    :func:`resample_raster_window` (``rasterio.warp.reproject``).

    Args:
        x: ``(..., H, W)`` values without nodata.
        out_shape: ``(H', W')``.
        method: one of :data:`METHODS` (``"cubic"``: GDAL cubic, ``"lanczos"``: GDAL lanczos).

    Returns:
        float32 tensor ``(..., H', W')``.
    """
    arr = _as_cpu_float(x).numpy()
    lead = arr.shape[:-2]
    h, w = arr.shape[-2:]
    ho, wo = int(out_shape[0]), int(out_shape[1])
    src_t = (_GRID_SIZE / w, 0.0, 0.0, 0.0, -_GRID_SIZE / h, _GRID_SIZE)
    dst_t = (_GRID_SIZE / wo, 0.0, 0.0, 0.0, -_GRID_SIZE / ho, _GRID_SIZE)
    out = resample_raster_window(arr.reshape((-1, h, w)), src_t, (ho, wo), dst_t, crs=None, method=method)
    return torch.from_numpy(out.reshape(lead + (ho, wo)))


#: The named baselines of domain profiles (``DomainProfile.baseline``).
BASELINES: tuple[str, ...] = ("bspline", "gdal_cubic", "gdal_lanczos")


def upsample(name: str, x: torch.Tensor | np.ndarray, factors: Sequence[float], out_shape: Sequence[int]) -> torch.Tensor:
    """The baseline ``name`` of :data:`BASELINES` from ``x`` onto ``out_shape`` (trailing axes).

    ``"bspline"``: :func:`cubic_bspline` (any number of spatial axes);
    ``"gdal_cubic"`` / ``"gdal_lanczos"``: :func:`gdal_resize` on the two
    trailing axes (rasters).

    Raises:
        ConfigError: an unknown name, or a GDAL baseline on other than two spatial axes.
    """
    if name == "bspline":
        return cubic_bspline(x, factors, out_shape)
    if name in ("gdal_cubic", "gdal_lanczos"):
        if len(out_shape) != 2:
            raise ConfigError(f"baseline {name!r} resamples rasters (2 spatial axes), got {len(out_shape)}")
        return gdal_resize(x, out_shape, name.split("_", 1)[1])
    raise ConfigError(f"unknown baseline {name!r}; expected one of {list(BASELINES)}")


# --------------------------------------------------------------------------- rasters (GDAL)


def gdal_resampling(method: str) -> Any:
    """The :class:`rasterio.enums.Resampling` member for ``method``."""
    from rasterio.enums import Resampling

    _check_method(method)
    return {
        "cubic": Resampling.cubic,
        "linear": Resampling.bilinear,
        "nearest": Resampling.nearest,
        "lanczos": Resampling.lanczos,
    }[method]


#: Placeholder CRS for rasters without one (both grids share it, so GDAL only maps pixels).
_PLACEHOLDER_CRS = "EPSG:3857"


def resample_raster_window(
    src: np.ndarray,
    src_transform: Sequence[float],
    dst_shape: Sequence[int],
    dst_transform: Sequence[float],
    *,
    crs: Any,
    method: str = "cubic",
    nodata: float | None = None,
    valid: np.ndarray | None = None,
    nearest_rows: np.ndarray | None = None,
    nearest_cols: np.ndarray | None = None,
) -> np.ndarray:
    """GDAL-resample a source window onto a destination window of the scaled grid.

    Args:
        src: ``(C, h, w)`` physical values of the source window (with halo).
        src_transform: corner transform of that window.
        dst_shape: ``(H, W)`` of the destination window.
        dst_transform: corner transform of the destination window.
        crs: the common CRS (WKT or anything rasterio accepts), or ``None``.
        method: one of :data:`METHODS`.
        nodata: source nodata value (left out of the kernels by GDAL).
        valid: ``(C, h, w)`` or ``(h, w)`` validity of ``src``; invalid pixels
            are passed to GDAL as nodata.
        nearest_rows, nearest_cols: for each destination row/column, the
            source row/column (in ``src``) that contains its centre. Pixels
            that GDAL leaves empty although that source pixel is valid get its
            value (GDAL can drop pixels whose kernel is mostly invalid).

    Returns:
        ``(C, H, W)`` float32. Invalid pixels hold NaN; apply the output
        mask (nearest upsampling of ``valid``) afterwards.
    """
    from rasterio.crs import CRS
    from rasterio.transform import Affine
    from rasterio.warp import reproject

    c = src.shape[0]
    rs = gdal_resampling(method)
    fill = np.float32(np.nan)
    work = np.ascontiguousarray(src, dtype=np.float32)
    if valid is not None or nodata is not None:
        work = work.copy()
        inval = np.zeros(work.shape, bool) if valid is None else ~np.broadcast_to(valid, work.shape)
        if nodata is not None and not math.isnan(nodata):
            inval = inval | (work == np.float32(nodata))
        work[inval] = fill
    dst = np.full((c, int(dst_shape[0]), int(dst_shape[1])), fill, dtype=np.float32)
    crs_obj = CRS.from_user_input(crs) if crs else CRS.from_user_input(_PLACEHOLDER_CRS)
    reproject(
        work,
        dst,
        src_transform=Affine(*[float(v) for v in src_transform[:6]]),
        src_crs=crs_obj,
        dst_transform=Affine(*[float(v) for v in dst_transform[:6]]),
        dst_crs=crs_obj,
        resampling=rs,
        src_nodata=fill,
        dst_nodata=fill,
        num_threads=max(1, torch.get_num_threads()),
    )
    if nearest_rows is not None and nearest_cols is not None:
        holes = np.isnan(dst)
        if holes.any():
            near = work[:, nearest_rows[:, None], nearest_cols[None, :]]
            dst[holes] = near[holes]
    return dst


def resample_affine(data: np.ndarray | torch.Tensor, matrix: np.ndarray, out_shape: Sequence[int], *,
                    order: int = 3, outside: float = float("nan")) -> np.ndarray:
    """Resample a 3D array onto another grid related by an affine map (cubic B-spline by default).

    Output voxel ``o`` takes the input's value at index ``matrix @ [o, 1]``
    (``matrix`` is 4x4 or 3x4: output index to input index, e.g.
    ``inv(A_in) @ M @ A_out`` for voxel-centre affines). Used where grids are
    rotated relative to each other (multi-stack baselines); axis-aligned
    upscaling uses :func:`resample_volume`.

    Args:
        data: ``(X, Y, Z)`` array.
        matrix: output index -> input index.
        out_shape: output size.
        order: spline order (3: cubic B-spline, 1: linear, 0: nearest).
        outside: value of output voxels whose position is outside the input (NaN marks them).

    Returns:
        float32 ``(*out_shape)``.

    Raises:
        GeometryError: not a 3D array, or a matrix of the wrong shape.
    """
    from scipy import ndimage

    arr = data.detach().cpu().numpy() if isinstance(data, torch.Tensor) else np.asarray(data)
    m = np.asarray(matrix, dtype=np.float64)
    if arr.ndim != 3 or m.shape not in ((4, 4), (3, 4)) or len(out_shape) != 3:
        raise GeometryError(f"resample_affine needs a 3D array, a 4x4 or 3x4 matrix and 3 sizes, got {arr.shape}, {m.shape}")
    # mode "constant": positions inside the input's first-to-last voxel centres are interpolated
    # (mirror extension for the spline), positions outside get NaN
    out = ndimage.affine_transform(arr.astype(np.float32, copy=False), m[:3, :3], offset=m[:3, 3],
                                   output_shape=tuple(int(v) for v in out_shape), order=order,
                                   mode="constant", cval=np.nan, prefilter=order > 1)
    if not np.isnan(outside):
        out = np.where(np.isnan(out), outside, out)
    return out.astype(np.float32, copy=False)

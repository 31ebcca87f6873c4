"""DICOM slice geometry: one stack of frames to an exact affine, or a resampling plan.

The policies (sorting along the normal, 4D, gantry tilt, irregular stacks and
their resampling) are described in :mod:`medsat_sr.io.dicom`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from medsat_sr.errors import FormatError, GeometryError, TiltError
from medsat_sr.io.dicom_base import _LPS_RAS, POSITION_TOL_MM, TILT_TOL_DEG, _float, _Frame, _int

_ORTHOGONALITY_TOL = 1e-3
_MISSING_RATIO_TOL = 0.1


@dataclass
class _Plan:
    grid: list[list[_Frame]]  # [slice position][volume]
    positions: np.ndarray  # (K, 3) LPS
    row: np.ndarray  # unit vector along X (columns of a slice)
    col: np.ndarray  # unit vector along Y (rows)
    normal: np.ndarray
    du: float  # spacing along X (PixelSpacing[1])
    dv: float  # spacing along Y (PixelSpacing[0])
    affine: np.ndarray  # RAS, of the output grid
    tilt_deg: float
    resample: dict[str, Any] | None = None


def _check_frame(fr: _Frame) -> None:
    where = f"{fr.path}" + (f" frame {fr.frame + 1}" if fr.frame is not None else "")
    if fr.rows < 1 or fr.cols < 1:
        raise FormatError(f"{where}: image is {fr.rows} x {fr.cols} (Rows x Columns); expected at least 1 x 1")
    if fr.samples != 1:
        raise FormatError(f"{where}: SamplesPerPixel is {fr.samples}; only greyscale images (1) are supported")
    if fr.iop is None:
        value = fr.ds.get("ImageOrientationPatient")
        raise GeometryError(f"{where}: ImageOrientationPatient is missing or invalid ({value!r}); expected 6 numbers")
    if not np.all(np.isfinite(fr.iop)):
        raise GeometryError(f"{where}: ImageOrientationPatient is not finite: {fr.iop.tolist()}")
    r, c = fr.iop[:3], fr.iop[3:]
    nr, nc = float(np.linalg.norm(r)), float(np.linalg.norm(c))
    if nr < 1e-6 or nc < 1e-6:
        raise GeometryError(f"{where}: ImageOrientationPatient {fr.iop.tolist()} has a zero direction vector")
    cosang = abs(float(r @ c)) / (nr * nc)
    if cosang > _ORTHOGONALITY_TOL:
        raise GeometryError(
            f"{where}: ImageOrientationPatient {fr.iop.tolist()} is degenerate: row and column directions are "
            f"not orthogonal (they meet at {math.degrees(math.acos(min(1.0, cosang))):.3f}°, expected 90°)"
        )
    if fr.ipp is None:
        if fr.frame is not None and fr.ds.get("NumberOfFrames") and _int(fr.ds.get("NumberOfFrames"), 1) > 1:
            raise GeometryError(
                f"{fr.path}: multi-frame file without per-frame positions (no PlanePositionSequence); "
                f"its {_int(fr.ds.get('NumberOfFrames'), 1)} frames cannot be placed"
            )
        raise GeometryError(f"{where}: ImagePositionPatient is missing or invalid; expected 3 numbers")
    if not np.all(np.isfinite(fr.ipp)):
        raise GeometryError(f"{where}: ImagePositionPatient is not finite: {fr.ipp.tolist()}")
    if fr.pixel_spacing is None or not np.all(np.isfinite(fr.pixel_spacing)) or np.any(fr.pixel_spacing <= 0):
        value = None if fr.pixel_spacing is None else fr.pixel_spacing.tolist()
        raise GeometryError(f"{where}: PixelSpacing is missing or invalid ({value}); expected 2 positive numbers")


def _diagnose(positions: np.ndarray, normal: np.ndarray, resid: float) -> tuple[list[str], int, float]:
    """Name what makes a stack irregular: tilt, uneven spacing, missing slices."""
    ds = np.diff(positions @ normal)
    span = positions[-1] - positions[0]
    tilt = math.degrees(math.acos(min(1.0, abs(float(span @ normal)) / max(float(np.linalg.norm(span)), 1e-12))))
    typical = float(np.median(ds))
    parts: list[str] = []
    if tilt > TILT_TOL_DEG:
        parts.append(f"gantry tilt {_deg(tilt)}")
    missing = 0
    gaps: list[str] = []
    uneven = False
    for i, d in enumerate(ds):
        r = d / typical
        if abs(d - typical) <= max(POSITION_TOL_MM, 0.01 * typical):
            continue
        m = round(r)
        if m >= 2 and abs(r - m) <= _MISSING_RATIO_TOL:
            missing += m - 1
            gaps.append(f"{d:.2f} mm between slices {i + 1} and {i + 2}")
        else:
            uneven = True
    if uneven:
        parts.append(f"slice spacing varies {float(ds.min()):.2f}–{float(ds.max()):.2f} mm")
    if missing:
        parts.append(
            f"{missing} missing slice{'s' if missing > 1 else ''} (gap of {'; '.join(gaps)}; "
            f"usual spacing {typical:.2f} mm)"
        )
    if not parts:
        parts.append(f"slice positions deviate up to {resid:.3f} mm from a regular grid")
    return parts, missing, tilt


def _plan(frames: list[_Frame], label: str, resample: bool) -> _Plan:
    for fr in frames:
        _check_frame(fr)
    f0 = frames[0]
    row = f0.iop[:3] / np.linalg.norm(f0.iop[:3])
    col = f0.iop[3:] / np.linalg.norm(f0.iop[3:])
    normal = np.cross(row, col)
    normal /= np.linalg.norm(normal)
    dv, du = float(f0.pixel_spacing[0]), float(f0.pixel_spacing[1])

    s = np.array([fr.ipp @ normal for fr in frames])
    order = np.argsort(s, kind="stable")
    groups: list[list[int]] = []
    for idx in order:
        if groups and s[idx] - s[groups[-1][0]] <= POSITION_TOL_MM:
            groups[-1].append(int(idx))
        else:
            groups.append([int(idx)])
    for g in groups:
        spread = max(float(np.linalg.norm(frames[i].ipp - frames[g[0]].ipp)) for i in g)
        if spread > POSITION_TOL_MM:
            raise GeometryError(
                f"{label}: images at the same depth along the slice normal ({s[g[0]]:.2f} mm) lie up to "
                f"{spread:.2f} mm apart in-plane: not one stack of slices"
            )
    counts = [len(g) for g in groups]
    if len(set(counts)) > 1:
        raise GeometryError(
            f"{label}: 4D series is incomplete: its {len(groups)} slice positions hold between {min(counts)} and "
            f"{max(counts)} images (expected the same number at every position)"
        )
    grid = [sorted((frames[i] for i in g), key=lambda fr: fr.order) for g in groups]
    positions = np.array([g[0].ipp for g in grid], dtype=np.float64)
    k = len(grid)

    def ras(lin: np.ndarray, origin: np.ndarray) -> np.ndarray:
        aff = np.eye(4)
        aff[:3, :3] = _LPS_RAS @ lin
        aff[:3, 3] = _LPS_RAS @ origin
        return aff

    if k == 1:
        step_len = f0.spacing_between or f0.thickness or 1.0
        step = normal * abs(step_len)
        affine = ras(np.column_stack([row * du, col * dv, step]), positions[0])
        return _Plan(grid, positions, row, col, normal, du, dv, affine, 0.0)

    step = (positions[-1] - positions[0]) / (k - 1)
    predicted = positions[0] + np.outer(np.arange(k), step)
    resid = float(np.linalg.norm(positions - predicted, axis=1).max())
    if resid <= POSITION_TOL_MM:
        tilt = math.degrees(math.acos(min(1.0, abs(float(step @ normal)) / float(np.linalg.norm(step)))))
        tilt = tilt if tilt > TILT_TOL_DEG else 0.0
        if tilt and resample:
            parts = [f"gantry tilt {_deg(tilt)}"]
            return _resample_plan(grid, positions, row, col, normal, du, dv, parts, 0, tilt)
        if tilt:
            raise _tilt_error(label, grid, tilt, float(np.linalg.norm(step)), abs(float(step @ normal)))
        affine = ras(np.column_stack([row * du, col * dv, step]), positions[0])
        return _Plan(grid, positions, row, col, normal, du, dv, affine, 0.0)

    parts, missing, tilt = _diagnose(positions, normal, resid)
    if not resample:
        raise GeometryError(
            f"{label}: irregular slice geometry: {'; '.join(parts)}; "
            "pass resample=True (--resample) to resample onto a regular grid"
        )
    return _resample_plan(grid, positions, row, col, normal, du, dv, parts, missing, tilt)


def _deg(angle: float) -> str:
    """An angle for messages: one decimal (18.5°), more digits only for angles under 0.1°."""
    return f"{angle:.1f}°" if angle >= 0.1 else f"{angle:.2g}°"


def _tilt_error(label: str, grid: list[list[_Frame]], tilt: float, step: float, spacing: float) -> TiltError:
    """The refusal of a regular but tilted stack (the gantry tilt policy of :mod:`medsat_sr.io.dicom`)."""
    first, last = grid[0][0].path, grid[-1][0].path
    stated = _float(grid[0][0].ds.get("GantryDetectorTilt"))
    header = f", GantryDetectorTilt {stated:g}" if stated is not None else ""
    return TiltError(
        f"{label}: gantry tilt {_deg(tilt)} (slices {first.name} to {last.name}{header}): the table step "
        f"({step:.2f} mm) is not perpendicular to the slices ({spacing:.2f} mm apart), so only a sheared affine "
        "would place them; pass resample=True (--resample) to resample onto an orthogonal grid as dcm2niix's "
        "tilt correction does"
    )


def _resample_plan(
    grid: list[list[_Frame]],
    positions: np.ndarray,
    row: np.ndarray,
    col: np.ndarray,
    normal: np.ndarray,
    du: float,
    dv: float,
    reasons: list[str],
    missing: int,
    tilt: float,
) -> _Plan:
    k = len(grid)
    rel = positions - positions[0]
    off_u = rel @ row / du
    off_v = rel @ col / dv
    depth = rel @ normal
    eps = 1e-3  # pixels: offsets closer than this to an integer do not grow the grid
    lo_u = min(0, int(math.floor(off_u.min() + eps)))
    hi_u = max(0, int(math.ceil(off_u.max() - eps)))
    lo_v = min(0, int(math.floor(off_v.min() + eps)))
    hi_v = max(0, int(math.ceil(off_v.max() - eps)))
    cols, rows = grid[0][0].cols, grid[0][0].rows
    steps = np.diff(depth)
    dmin = float(steps[steps > POSITION_TOL_MM].min())
    n_steps = max(1, int(math.ceil(depth[-1] / dmin - 1e-3)))
    n_steps = min(n_steps, 2 * k - 1)
    dz = float(depth[-1] / n_steps)
    origin = positions[0] + lo_u * du * row + lo_v * dv * col
    lin = np.column_stack([row * du, col * dv, normal * dz])
    affine = np.eye(4)
    affine[:3, :3] = _LPS_RAS @ lin
    affine[:3, 3] = _LPS_RAS @ origin
    info = {
        "reasons": reasons,
        "method": "linear",
        "slices_in": k,
        "slices_out": n_steps + 1,
        "slice_spacing_mm": dz,
        "tilt_corrected_deg": tilt if tilt > TILT_TOL_DEG else 0.0,
        "missing_slices_interpolated": missing,
        "in_plane_shape": [cols + hi_u - lo_u, rows + hi_v - lo_v],
        # private: used by _apply_resample, removed before it reaches the meta
        "_off_u": off_u - lo_u,
        "_off_v": off_v - lo_v,
        "_depth": depth,
    }
    return _Plan(grid, positions, row, col, normal, du, dv, affine, 0.0, info)


def _shift_axis(arr: np.ndarray, axis: int, offset: float, out_len: int, fill: float) -> np.ndarray:
    """Resample ``arr`` along ``axis`` so that output index I reads input coordinate ``I - offset``.

    Linear interpolation inside the data, the edge value within half a pixel
    outside it, ``fill`` further out. An integer offset copies values exactly.
    """
    n = arr.shape[axis]
    x = np.arange(out_len, dtype=np.float64) - offset
    near = np.round(x)
    x = np.where(np.abs(x - near) < 1e-6, near, x)
    inside = (x >= -0.5) & (x <= n - 0.5)
    xc = np.clip(x, 0, n - 1)
    i0 = np.floor(xc).astype(np.intp)
    i1 = np.minimum(i0 + 1, n - 1)
    w = (xc - i0).astype(np.float32)
    a0 = np.take(arr, i0, axis=axis)
    shape = [1] * arr.ndim
    shape[axis] = out_len
    w = w.reshape(shape)
    if np.any(w > 0):
        a1 = np.take(arr, i1, axis=axis)
        out = a0 * (1 - w) + a1 * w
    else:
        out = a0
    if not inside.all():
        out = np.where(inside.reshape(shape), out, np.float32(fill))
    return out.astype(np.float32, copy=False)


def _apply_resample(vol: np.ndarray, info: dict[str, Any]) -> np.ndarray:
    """Tilt-correct and make slices equidistant: (T, X, Y, K) -> (T, X', Y', M)."""
    fill = float(vol.min())
    nx, ny = info["in_plane_shape"]
    k = vol.shape[-1]
    shifted = np.empty(vol.shape[:1] + (nx, ny, k), dtype=np.float32)
    for i in range(k):
        sl = _shift_axis(vol[..., i], 1, float(info["_off_u"][i]), nx, fill)
        shifted[..., i] = _shift_axis(sl, 2, float(info["_off_v"][i]), ny, fill)
    depth = info["_depth"]
    m = info["slices_out"]
    z = np.arange(m, dtype=np.float64) * info["slice_spacing_mm"]
    out = np.empty(vol.shape[:1] + (nx, ny, m), dtype=np.float32)
    for j, zj in enumerate(z):
        lo = int(np.clip(np.searchsorted(depth, zj, side="right") - 1, 0, k - 2))
        w = (zj - depth[lo]) / (depth[lo + 1] - depth[lo])
        if w < 1e-6:
            out[..., j] = shifted[..., lo]
        elif w > 1 - 1e-6:
            out[..., j] = shifted[..., lo + 1]
        else:
            out[..., j] = shifted[..., lo] * np.float32(1 - w) + shifted[..., lo + 1] * np.float32(w)
    info["fill_value"] = fill
    return out

"""Stacks and the output grid of a multi-stack reconstruction.

A :class:`Stack` is one thick-slice acquisition: its voxels, its own affine
(voxel centres to RAS mm, as every volume in medsat_sr), an optional mask, its
slice axis and its slice profile. The slice profile is a Gaussian along the
slice normal whose full width at half maximum is the slice *thickness*, centred
on each slice; slices are *spacing* apart, so gaps and overlaps are modelled
(the same model as :func:`medsat_sr.degrade.slice_profile`). In-plane, the
voxels are point samples of the volume interpolated trilinearly.

The output grid (:func:`output_grid`) is isotropic, oriented like the
reference stack (its direction cosines made orthonormal), and covers the
union of the stacks' fields of view, their intersection (where every stack
has data: the only region all of them constrain), or the union of their masks
plus a margin.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from monai.data import MetaTensor

from medsat_sr.degrade import slice_thickness
from medsat_sr.errors import DataError, GeometryError
from medsat_sr.image import Key, make_volume
from medsat_sr.psf import fwhm_to_sigma

__all__ = ["Stack", "Grid", "make_stack", "output_grid", "limit_to_grid", "orthonormal", "resample_mask"]

logger = logging.getLogger("medsat_sr.multistack")


@dataclass
class Stack:
    """One thick-slice stack, intensities normalised.

    Attributes:
        data: ``(X, Y, Z)`` float32 intensities divided by ``norm``.
        affine: 4x4 voxel-centre to RAS mm affine (float64).
        mask: ``(X, Y, Z)`` bool region of interest, or ``None`` (everything).
        slice_axis: the axis across the slices (largest spacing).
        thickness: slice thickness in mm (FWHM of the slice profile).
        norm: the intensity divisor (masked 99th percentile of the raw data).
        name: a label for messages and records.
        source: the volume the stack was made from (for its meta), if any.
        within: ``(X, Y, Z)`` bool, the voxels inside the output region
            (:func:`limit_to_grid`), or ``None`` (all).
        valid: ``(X, Y, Z)`` bool, the voxels with data (``False`` where the
            input was NaN or infinite: no data), or ``None`` (all).
    """

    data: torch.Tensor
    affine: np.ndarray
    mask: torch.Tensor | None
    slice_axis: int
    thickness: float
    norm: float
    name: str
    source: MetaTensor | None = field(default=None, repr=False)
    within: torch.Tensor | None = field(default=None, repr=False)
    valid: torch.Tensor | None = field(default=None, repr=False)

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size per axis (mm)."""
        return tuple(float(v) for v in np.sqrt((self.affine[:3, :3] ** 2).sum(axis=0)))  # type: ignore[return-value]

    @property
    def slice_spacing(self) -> float:
        """Distance between slice centres (mm)."""
        return self.spacing[self.slice_axis]

    @property
    def inplane_spacing(self) -> float:
        """The finer in-plane voxel size (mm)."""
        return min(s for a, s in enumerate(self.spacing) if a != self.slice_axis)

    @property
    def sigma_mm(self) -> float:
        """Standard deviation of the Gaussian slice profile (mm)."""
        return fwhm_to_sigma(self.thickness)

    @property
    def shape(self) -> tuple[int, int, int]:
        """Voxels per axis."""
        return tuple(int(v) for v in self.data.shape)  # type: ignore[return-value]

    def roi(self) -> torch.Tensor:
        """The voxels that take part in the fit: the mask (or all voxels) with data, inside the output region."""
        roi = self.mask if self.mask is not None else torch.ones(self.shape, dtype=torch.bool)
        roi = roi if self.valid is None else roi & self.valid
        return roi if self.within is None else roi & self.within


@dataclass(frozen=True)
class Grid:
    """An output grid: shape and voxel-centre affine."""

    shape: tuple[int, int, int]
    affine: np.ndarray

    @property
    def spacing(self) -> float:
        """The isotropic voxel size (mm)."""
        return float(np.sqrt((self.affine[:3, 0] ** 2).sum()))


def _robust_norm(data: torch.Tensor, mask: torch.Tensor | None, name: str) -> float:
    values = data[mask] if mask is not None else data.flatten()
    values = values[torch.isfinite(values)]
    if values.numel() == 0:
        raise DataError(f"{name}: the stack has no voxels inside its mask")
    if values.numel() > 2_000_000:
        values = values[torch.randperm(values.numel(), generator=torch.Generator().manual_seed(0))[:2_000_000]]
    p99 = float(torch.quantile(values.float(), 0.99))
    if not math.isfinite(p99) or p99 <= 0:
        raise DataError(f"{name}: the stack's 99th percentile inside the mask is {p99:g}; expected a positive intensity")
    return p99


def resample_mask(mask: MetaTensor, affine: np.ndarray, shape: Sequence[int]) -> torch.Tensor:
    """A mask volume on a stack's grid: used as is when the grids agree, else nearest-neighbour resampled.

    Raises:
        GeometryError: the mask does not overlap the stack at all.
    """
    m = torch.as_tensor(np.asarray(mask[0]) > 0.5)
    m_aff = np.asarray(mask.affine, dtype=np.float64)
    if tuple(m.shape) == tuple(int(v) for v in shape) and np.allclose(m_aff, affine, atol=1e-3):
        return m
    idx = np.stack(np.meshgrid(*[np.arange(int(n)) for n in shape], indexing="ij"), axis=-1).reshape(-1, 3)
    world = idx @ affine[:3, :3].T + affine[:3, 3]
    src = np.rint((world - m_aff[:3, 3]) @ np.linalg.inv(m_aff[:3, :3]).T).astype(np.int64)
    inside = np.all((src >= 0) & (src < np.asarray(m.shape)), axis=1)
    out = np.zeros(len(idx), dtype=bool)
    mm = m.numpy()
    out[inside] = mm[src[inside, 0], src[inside, 1], src[inside, 2]]
    if not out.any():
        where = mask.meta.get(Key.SOURCE_PATH) or "the mask"
        raise GeometryError(f"{where}: the mask does not overlap its stack")
    return torch.from_numpy(out.reshape(tuple(int(v) for v in shape)))


def make_stack(volume: MetaTensor, mask: MetaTensor | None = None, *, name: str | None = None,
               thickness: float | None = None) -> Stack:
    """A :class:`Stack` from a volume read by :mod:`medsat_sr.io` (and its mask).

    The slice axis is the axis with the largest spacing; the thickness is
    ``thickness`` when given, else :func:`medsat_sr.degrade.slice_thickness`
    (DICOM ``SliceThickness``, ``meta["slice_thickness"]``, else the spacing).

    Raises:
        DataError: a multi-channel volume, or a mask with no voxel inside.
        GeometryError: a stack that is not thick-slice shaped (fewer than 2 slices).
    """
    label = name or str(volume.meta.get(Key.SOURCE_PATH) or "stack")
    if int(volume.shape[0]) != 1:
        raise DataError(f"{label}: a stack must have one channel, got {int(volume.shape[0])}; pick one with --volume")
    affine = np.asarray(volume.affine, dtype=np.float64)
    data = torch.as_tensor(np.asarray(volume[0], dtype=np.float32))
    if min(data.shape) < 2:
        raise GeometryError(f"{label}: a stack needs at least 2 voxels per axis, got shape {list(data.shape)}")
    spacing = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    axis = int(np.argmax(spacing))
    th = float(thickness) if thickness is not None else float(slice_thickness(volume, axis))
    m = resample_mask(mask, affine, data.shape) if mask is not None else None
    if m is not None and not bool(m.any()):
        raise DataError(f"{label}: the mask is empty")
    valid = torch.isfinite(data)
    norm = _robust_norm(data, m, label)  # over the finite values
    if bool(valid.all()):
        valid = None
    else:
        logger.warning("%s: %d voxels are NaN or infinite (no data); they take no part in registration, "
                       "reconstruction or the mean of the stacks", label, int((~valid).sum()))
        data = torch.nan_to_num(data, nan=0.0, posinf=0.0, neginf=0.0)
    return Stack(data=data / norm, affine=affine, mask=m, slice_axis=axis, thickness=th, norm=norm,
                 name=label, source=volume, valid=valid)


def orthonormal(affine: np.ndarray) -> np.ndarray:
    """The nearest rotation-or-reflection to the direction cosines of ``affine`` (polar decomposition)."""
    lin = np.asarray(affine, dtype=np.float64)[:3, :3]
    u, _, vt = np.linalg.svd(lin / np.sqrt((lin ** 2).sum(axis=0))[None, :])
    return u @ vt


def _extent_points(stack: Stack, region: str) -> np.ndarray:
    """World points whose bounding box the output grid must cover."""
    aff = stack.affine
    if region == "mask" and stack.mask is not None:
        idx = torch.nonzero(stack.mask).numpy().astype(np.float64)
        lo, hi = idx.min(axis=0) - 0.5, idx.max(axis=0) + 0.5
    else:
        lo, hi = np.full(3, -0.5), np.asarray(stack.shape, dtype=np.float64) - 0.5
    corners = np.array(np.meshgrid(*[[lo[a], hi[a]] for a in range(3)], indexing="ij")).reshape(3, -1).T
    return corners @ aff[:3, :3].T + aff[:3, 3]


def output_grid(stacks: Sequence[Stack], *, reference: int = 0, spacing: float | None = None,
                region: str = "union", margin_mm: float = 0.0) -> Grid:
    """The isotropic output grid.

    Args:
        stacks: the stacks (their affines as acquired).
        reference: the stack whose orientation the grid takes.
        spacing: voxel size in mm; ``None``: the finest in-plane spacing.
        region: ``union`` (fields of view), ``intersection`` (the box every
            stack's field of view covers, in the grid's frame) or ``mask``
            (masks; stacks without a mask count with their field of view).
        margin_mm: added on every side.

    Returns:
        The :class:`Grid`.

    Raises:
        GeometryError: a reference index out of range, a non-positive
            spacing, or (``intersection``) stacks whose fields of view do not overlap.
    """
    if not 0 <= reference < len(stacks):
        raise GeometryError(f"reference stack {reference} does not exist ({len(stacks)} stacks)")
    sp = float(spacing) if spacing is not None else min(s.inplane_spacing for s in stacks)
    if not math.isfinite(sp) or sp <= 0:
        raise GeometryError(f"output spacing must be positive, got {sp}")
    rot = orthonormal(stacks[reference].affine)
    boxes = [_extent_points(s, region) @ rot for s in stacks]  # coordinates along the grid axes
    if region == "intersection":
        lo, hi = np.max([b.min(axis=0) for b in boxes], axis=0), np.min([b.max(axis=0) for b in boxes], axis=0)
        if np.any(hi - lo < 2 * sp):
            raise GeometryError("the stacks' fields of view do not overlap (their common box is "
                                f"{' x '.join(f'{max(v, 0.0):.0f}' for v in hi - lo)} mm); use multistack.region: union")
    else:
        local = np.concatenate(boxes)
        lo, hi = local.min(axis=0), local.max(axis=0)
    lo, hi = lo - margin_mm, hi + margin_mm
    shape = tuple(int(max(2, math.ceil((h - l) / sp))) for l, h in zip(lo, hi))
    centre = (lo + hi) / 2
    start = centre - sp * (np.asarray(shape) - 1) / 2  # first voxel centre, grid centred on the region
    aff = np.eye(4)
    aff[:3, :3] = rot * sp
    aff[:3, 3] = rot @ start
    return Grid(shape=shape, affine=aff)  # type: ignore[arg-type]


def limit_to_grid(stack: Stack, grid: Grid, margin_mm: float) -> Stack:
    """``stack`` with only the voxels whose centres lie ``margin_mm`` inside ``grid``'s box taking part.

    For ``region: intersection`` (the grid is the common box plus the
    margin): a voxel whose slice profile reached past the grid would be
    modelled against zeros there.
    """
    m = np.linalg.inv(grid.affine) @ stack.affine  # stack voxel -> grid voxel coordinates
    axes = [np.arange(n, dtype=np.float64) for n in stack.shape]
    inside = np.ones(stack.shape, dtype=bool)
    pad = margin_mm / grid.spacing
    for g in range(3):  # each grid coordinate is a sum of one term per stack axis
        coord = m[g, 3] + sum(np.reshape(m[g, a] * axes[a], [-1 if k == a else 1 for k in range(3)]) for a in range(3))
        inside &= (coord >= pad - 0.5) & (coord <= grid.shape[g] - 0.5 - pad)
    return replace(stack, within=torch.from_numpy(inside))


def grid_volume(data: torch.Tensor, grid: Grid, like: MetaTensor | None, **extra: object) -> MetaTensor:
    """A volume on ``grid`` with the source meta of ``like`` (dtype, intensity mapping, DICOM header)."""
    meta = dict(like.meta) if like is not None else {}
    return make_volume(
        data[None].float(), grid.affine, source_dtype=meta.get(Key.SOURCE_DTYPE),
        intensity=meta.get(Key.INTENSITY), band_names=None, source_format=meta.get(Key.SOURCE_FORMAT),
        source_path=meta.get(Key.SOURCE_PATH), header=meta.get(Key.HEADER), **extra,
    )

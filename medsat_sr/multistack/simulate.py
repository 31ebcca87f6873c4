"""Simulated multi-stack acquisitions of a known volume (for scoring against truth).

:func:`simulate_stacks` moves a high-resolution volume by a random rigid
motion per stack (cubic B-spline, :func:`medsat_sr.baselines.resample_affine`),
then acquires it as thick slices along one axis with the project's one
slice-profile recipe (:func:`medsat_sr.degrade.slice_profile`: Gaussian,
FWHM = thickness) and adds Gaussian noise. The stack's affine is the
decimated grid of the volume (:func:`medsat_sr.geometry.scale_affine`), so
its header is "where the scanner thought the slices were": the motion is the
unknown that registration must recover. The interpolation and the slice
profile are implemented independently of the reconstruction's forward model
(:mod:`.forward`: trilinear samples of a sampled profile), so a score against
truth is not an inverse crime.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from medsat_sr.baselines import resample_affine
from medsat_sr.errors import GeometryError
from medsat_sr.geometry import scale_affine
from medsat_sr.multistack.forward import rigid_matrix
from medsat_sr.psf import slice_profile

__all__ = ["SimulatedStack", "random_motion", "simulate_stacks", "motion_error"]


@dataclass
class SimulatedStack:
    """One simulated stack.

    Attributes:
        data: ``(X, Y, Z)`` float32 intensities.
        affine: its voxel-centre affine (header geometry, motion not included).
        mask: ``(X, Y, Z)`` bool foreground acquired through the same motion, or ``None``.
        motion: the true 4x4 world motion (stack position -> anatomy position).
        slice_axis: the thick axis.
        thickness: slice thickness (mm).
    """

    data: np.ndarray
    affine: np.ndarray
    mask: np.ndarray | None
    motion: np.ndarray
    slice_axis: int
    thickness: float


def random_motion(rng: np.random.Generator, centre: np.ndarray, *, max_deg: float = 5.0,
                  max_mm: float = 5.0) -> np.ndarray:
    """A rigid motion about ``centre``: a random axis turned by up to ``max_deg``, shifted by up to ``max_mm``."""
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    angle = math.radians(rng.uniform(0.3, 1.0) * max_deg)
    shift = rng.normal(size=3)
    shift *= rng.uniform(0.3, 1.0) * max_mm / np.linalg.norm(shift)
    params = torch.tensor([*(axis * angle), *shift], dtype=torch.float64)
    return rigid_matrix(params, torch.as_tensor(centre, dtype=torch.float64), 1.0).numpy()


def _acquire(volume: np.ndarray, axis: int, thickness: float, spacing: float, in_spacing: float) -> np.ndarray:
    t = torch.from_numpy(np.ascontiguousarray(volume, dtype=np.float32))[None]
    return slice_profile(t, axis + 1, thickness=thickness, spacing=spacing, in_spacing=in_spacing)[0].numpy()


def simulate_stacks(volume: np.ndarray, affine: np.ndarray, *, axes: Sequence[int] = (0, 1, 2),
                    thickness: float = 4.0, spacing: float | None = None, max_deg: float = 5.0,
                    max_mm: float = 5.0, noise: float = 0.01, mask: np.ndarray | None = None,
                    seed: int = 0) -> list[SimulatedStack]:
    """Thick-slice stacks of ``volume``, one per axis in ``axes``, each with its own random rigid motion.

    Args:
        volume: ``(X, Y, Z)`` isotropic high-resolution volume.
        affine: its voxel-centre affine.
        axes: the slice axis of each stack (``(0, 1, 2)``: three orthogonal stacks).
        thickness: slice thickness, FWHM of the Gaussian profile (mm).
        spacing: distance between slice centres (mm; default ``thickness``).
        max_deg, max_mm: the largest rotation and translation.
        noise: Gaussian noise standard deviation relative to the volume's 99th percentile.
        mask: foreground of ``volume``, acquired with the stacks (nearest after the profile).
        seed: random seed.

    Returns:
        One :class:`SimulatedStack` per axis; the first stack has no motion (it is the reference).

    Raises:
        GeometryError: ``volume`` is not 3D or not isotropic.
    """
    vol = np.asarray(volume, dtype=np.float32)
    aff = np.asarray(affine, dtype=np.float64)
    vox = np.sqrt((aff[:3, :3] ** 2).sum(axis=0))
    if vol.ndim != 3 or not np.allclose(vox, vox[0], rtol=1e-3):
        raise GeometryError(f"simulate_stacks needs an isotropic 3D volume, got shape {vol.shape}, spacing {vox}")
    sp = float(spacing) if spacing is not None else float(thickness)
    rng = np.random.default_rng(seed)
    centre = aff[:3, :3] @ ((np.asarray(vol.shape) - 1) / 2) + aff[:3, 3]
    sigma_noise = noise * float(np.percentile(vol, 99))
    out = []
    for k, axis in enumerate(axes):
        motion = np.eye(4) if k == 0 else random_motion(rng, centre, max_deg=max_deg, max_mm=max_mm)
        # the moved anatomy on the volume's own grid: voxel o sees the anatomy at motion @ (A o)
        index_map = np.linalg.inv(aff) @ motion @ aff
        moved = resample_affine(vol, index_map, vol.shape, order=3, outside=0.0)
        data = _acquire(moved, axis, thickness, sp, float(vox[0]))
        data = data + rng.normal(scale=sigma_noise, size=data.shape).astype(np.float32) if sigma_noise > 0 else data
        s = [1.0, 1.0, 1.0]
        s[axis] = float(vox[0]) / sp
        m = None
        if mask is not None:
            mm = resample_affine(np.asarray(mask, dtype=np.float32), index_map, vol.shape, order=1, outside=0.0)
            m = _acquire(mm, axis, thickness, sp, float(vox[0])) > 0.5
        out.append(SimulatedStack(data=data.astype(np.float32), affine=scale_affine(aff, s), mask=m,
                                  motion=motion, slice_axis=int(axis), thickness=float(thickness)))
    return out


def motion_error(estimated: np.ndarray, true: np.ndarray, reference_est: np.ndarray, reference_true: np.ndarray,
                 points: np.ndarray) -> float:
    """Mean displacement error (mm) over ``points`` ``(N, 3)`` between two motions, relative to the reference's.

    Registration recovers each motion up to the reference stack's (the output frame follows it), so
    ``inv(reference) @ motion`` is compared.
    """
    e = np.linalg.inv(reference_est) @ estimated
    t = np.linalg.inv(reference_true) @ true
    p = np.c_[points, np.ones(len(points))]
    return float(np.linalg.norm((p @ e.T)[:, :3] - (p @ t.T)[:, :3], axis=1).mean())

"""Apply a 2D network to every slice or plane of a volume: the one copy of that recipe.

Two applications of a 2D network to a ``(C, X, Y, Z)`` volume:

* :func:`apply_slicewise`, through-plane (SMORE/ECLARE style): every slice
  that contains the thick axis is upscaled along it, in one or both
  orientations, and the orientations are averaged.
* :func:`apply_inplane`: every plane across an axis is upscaled in its own
  two axes; that axis is not resampled.

Both take a bare network, a :class:`~medsat_sr.fusion.Member` or an
:class:`~medsat_sr.fusion.Ensemble` (members x flips, precision, device), and
return ``(mean, var)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.data import MetaTensor
from torch import nn

from medsat_sr.errors import ConfigError, GeometryError, ModelError
from medsat_sr.fusion import Ensemble, Member, as_ensemble
from medsat_sr.progress import iterate


def _over_planes(ens: Ensemble, vol: torch.Tensor, perm: list[int], size2d: tuple[int, ...], per: int,
                 progress: bool, desc: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``ens`` on the planes of ``vol.permute(perm)`` (planes first), ``per`` at a time, back in ``vol``'s axis order."""
    planes = vol.permute(*perm)
    n = planes.shape[0]
    mean = torch.empty((n, vol.shape[0], *size2d), dtype=torch.float32)
    var = torch.empty_like(mean) if ens.uncertainty else None
    for s0 in iterate(range(0, n, per), desc, unit="batch", enabled=progress):
        mu, va = ens.predict(planes[s0 : s0 + per].contiguous(), size2d)
        mean[s0 : s0 + per] = mu
        if var is not None and va is not None:
            var[s0 : s0 + per] = va
    inv = [0] * 4
    for i, q in enumerate(perm):
        inv[q] = i
    return mean.permute(*inv), (var.permute(*inv) if var is not None else None)


#: Slices per forward pass for 2D models on volumes.
SLICE_BATCH = 8


def apply_slicewise(
    model: Ensemble | Member | nn.Module,
    volume: torch.Tensor,
    thick_axis: int,
    output_size: Sequence[int],
    *,
    batch: int = SLICE_BATCH,
    progress: bool = False,
    orientations: int = 2,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Apply a 2D slice network through-plane to a volume (SMORE/ECLARE style).

    The 2D network upscales one axis of its input (the one whose factor is
    > 1 in ``model.scale``, e.g. ``(4.8, 1)``): every slice perpendicular to
    each of the two other (in-plane) axes is a 2D image containing the
    through-plane axis, which is put on the network's scaled axis; the two
    orientations are averaged. Slices are processed whole, ``batch`` at a time.

    Args:
        model: a 2D model, a :class:`~medsat_sr.fusion.Member` or an
            :class:`~medsat_sr.fusion.Ensemble` (members x flips).
        volume: ``(C, X, Y, Z)`` physical values (float32).
        thick_axis: the through-plane spatial axis (0, 1 or 2).
        output_size: the output spatial size (only ``thick_axis`` differs).
        orientations: 2 averages both orientations; 1 keeps only the one
            whose slices are largest (the smaller in-plane axis is fixed),
            for half the network time.

    Returns:
        ``(mean, var)``: ``(C, *output_size)`` float32, and the variance
        (law of total variance over members and the orientations) when
        the ensemble computes one, else ``None``.

    Raises:
        ModelError: a model that is not 2D or does not scale exactly one axis.
        ConfigError: ``orientations`` other than 1 or 2.
    """
    ens = as_ensemble(model, uncertainty=False)
    if ens.spatial_dims != 2:
        raise ModelError(f"slice-wise application needs a 2D model, got spatial_dims={ens.spatial_dims}")
    scale = ens.members[0].scale
    up = [i for i, f in enumerate(scale) if f > 1 + 1e-9]
    if len(up) != 1:
        raise ModelError(
            f"a slice-wise model upscales exactly one axis of its 2D input (e.g. scale (4, 1)), got scale {list(scale)}"
        )
    m_axis = up[0]
    if orientations not in (1, 2):
        raise ConfigError(f"slice_orientations must be 1 or 2, got {orientations!r}")
    if volume.ndim != 4:
        raise GeometryError(f"volume must be (C, X, Y, Z), got shape {tuple(volume.shape)}")
    out_size = tuple(int(v) for v in output_size)
    if any(out_size[a] != volume.shape[1 + a] for a in range(3) if a != thick_axis):
        raise GeometryError(f"slice-wise upscaling changes only axis {thick_axis}; got {tuple(volume.shape[1:])} -> {out_size}")
    vol = volume.as_subclass(torch.Tensor) if isinstance(volume, MetaTensor) else volume
    vol = vol.float()
    means, vars_ = [], []
    in_plane = [a for a in range(3) if a != thick_axis]
    fixed_axes = in_plane if orientations == 2 else [min(in_plane, key=lambda a: vol.shape[1 + a])]
    for fixed in fixed_axes:
        other = next(a for a in in_plane if a != fixed)
        # (N, C, other, thick) or (N, C, thick, other), thick on the network's scaled axis
        order = [other, thick_axis] if m_axis == 1 else [thick_axis, other]
        perm = [1 + fixed, 0, 1 + order[0], 1 + order[1]]
        mean, var = _over_planes(ens, vol, perm, tuple(out_size[a] for a in order), max(1, int(batch)),
                                 progress, f"slices (axis {fixed})")
        means.append(mean)
        vars_.append(var)
    if len(means) == 1:
        return means[0].contiguous(), vars_[0].contiguous() if vars_[0] is not None else None
    mean = 0.5 * (means[0] + means[1])
    var = None
    if ens.uncertainty and vars_[0] is not None and vars_[1] is not None:
        var = 0.5 * (vars_[0] + vars_[1]) + 0.25 * (means[0] - means[1]) ** 2
    return mean.contiguous(), var.contiguous() if var is not None else None


#: Largest number of input pixels in one batch of whole planes (in-plane route).
INPLANE_BATCH_PIXELS = 1 << 20


def apply_inplane(
    model: Ensemble | Member | nn.Module,
    volume: torch.Tensor,
    plane_axis: int,
    output_size: Sequence[int],
    *,
    batch: int = SLICE_BATCH,
    progress: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Apply a 2D in-plane network to every plane of a volume across ``plane_axis``.

    The planes keep the order of the other two axes (the network's first and
    second axis); ``plane_axis`` is not resampled. Planes are processed whole,
    at most ``batch`` (and :data:`INPLANE_BATCH_PIXELS` input pixels) at a time.

    Args:
        model: a 2D model, a :class:`~medsat_sr.fusion.Member` or an
            :class:`~medsat_sr.fusion.Ensemble`.
        volume: ``(C, X, Y, Z)`` physical values (float32).
        plane_axis: the spatial axis the planes are cut across (factor 1).
        output_size: the output spatial size (``plane_axis`` unchanged).

    Returns:
        ``(mean, var)`` as for :func:`apply_slicewise`.

    Raises:
        ModelError: a model that is not 2D.
        GeometryError: an output size that changes ``plane_axis``.
    """
    ens = as_ensemble(model, uncertainty=False)
    if ens.spatial_dims != 2:
        raise ModelError(f"in-plane application needs a 2D model, got spatial_dims={ens.spatial_dims}")
    if volume.ndim != 4:
        raise GeometryError(f"volume must be (C, X, Y, Z), got shape {tuple(volume.shape)}")
    out_size = tuple(int(v) for v in output_size)
    p = int(plane_axis)
    if out_size[p] != volume.shape[1 + p]:
        raise GeometryError(f"in-plane upscaling keeps axis {p}; got {tuple(volume.shape[1:])} -> {out_size}")
    vol = volume.as_subclass(torch.Tensor) if isinstance(volume, MetaTensor) else volume
    others = [a for a in range(3) if a != p]
    per = max(1, min(int(batch), INPLANE_BATCH_PIXELS // max(1, vol.shape[1 + others[0]] * vol.shape[1 + others[1]])))
    mean, var = _over_planes(ens, vol.float(), [1 + p, 0, 1 + others[0], 1 + others[1]],
                             tuple(out_size[a] for a in others), per, progress, f"planes (axis {p})")
    return mean.contiguous(), (var.contiguous() if var is not None else None)



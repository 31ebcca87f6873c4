"""The forward model: each stack is its slice profile applied to the resampled volume.

For stack ``k`` with affine ``A_k``, rigid motion ``M_k`` (world to world: the
stack's voxel at world position ``p`` saw the anatomy that sits at ``M_k p``
in the output frame) and the output grid's affine ``A_v``, voxel ``i`` of the
stack is::

    y_k[i] = sum_j w_j  v( A_v^-1 M_k A_k (i + u_j n) )

where ``n`` is the stack's slice axis, ``u_j`` are offsets in slices spanning
``+-psf_truncate`` sigma of the Gaussian slice profile (FWHM = thickness)
every ``psf_step`` output voxels, ``w_j`` the normalised Gaussian weights, and
``v(.)`` trilinear interpolation of the volume (zero outside the grid). Only
the voxels of the stack's region of interest are simulated. The operator is
linear in ``v`` and differentiable in ``M_k`` (registration) and ``v``
(its adjoint is autograd's vector-Jacobian product).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from medsat_sr.multistack.stacks import Grid, Stack

#: Largest sparse operator (``A`` and ``A^T``, with the transients of building them) per stack, in bytes.
#: A stack whose estimate is above it runs matrix-free: ``A v`` by ``grid_sample`` and ``A^T r`` by its
#: exact adjoint (autograd through the linear sampling), slower per product but bounded by the sampling grid.
#: Masked fetal stacks (40 k voxels, 13 profile samples) need about 0.3 GB; a whole unmasked 320 x 320 x 22
#: stack about 15 GB, which killed a 24 GB machine with three stacks.
SPARSE_MAX_BYTES = 1 << 30

#: Bytes per stored non-zero while the sparse operator is built (COO indices and values, the coalesced
#: copies, and the two CSR matrices that stay).
_BYTES_PER_NONZERO = 64

__all__ = ["rigid_matrix", "psf_offsets", "StackOperator", "make_operator"]


def rigid_matrix(params: torch.Tensor, centre: torch.Tensor, radius: float) -> torch.Tensor:
    """A 4x4 rigid transform from 6 parameters.

    Args:
        params: ``(6,)``: a rotation vector times ``radius`` (so that all six are
            millimetres of displacement at ``radius`` from the centre) and a
            translation in mm.
        centre: ``(3,)`` world point the rotation is about.
        radius: scale of the rotation parameters (mm).

    Returns:
        ``(4, 4)`` float64 matrix ``p -> R (p - c) + c + t``.
    """
    r = params[:3].double() / radius
    t = params[3:].double()
    theta = torch.sqrt((r * r).sum() + 1e-24)
    k = r / theta
    zero = torch.zeros((), dtype=torch.float64)
    kx = torch.stack([torch.stack([zero, -k[2], k[1]]), torch.stack([k[2], zero, -k[0]]),
                      torch.stack([-k[1], k[0], zero])])
    rot = torch.eye(3, dtype=torch.float64) + torch.sin(theta) * kx + (1 - torch.cos(theta)) * (kx @ kx)
    c = centre.double()
    m = torch.eye(4, dtype=torch.float64)
    m = m.index_put((torch.arange(3)[:, None], torch.arange(3)[None, :]), rot)
    m = m.index_put((torch.arange(3), torch.full((3,), 3)), c + t - rot @ c)
    return m


def psf_offsets(stack: Stack, grid_spacing: float, step: float, truncate: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Through-plane sample offsets (in slices) and weights of the slice profile.

    Args:
        stack: the stack (its thickness and slice spacing).
        grid_spacing: the output voxel size (mm).
        step: sampling step in output voxels.
        truncate: half-width in profile sigmas.

    Returns:
        ``(offsets, weights)``, each ``(S,)`` float32, weights summing to 1.
    """
    sigma = stack.sigma_mm
    dmm = step * grid_spacing
    half = max(0, int(math.floor(truncate * sigma / dmm)))
    pos_mm = np.arange(-half, half + 1, dtype=np.float64) * dmm
    w = np.exp(-0.5 * (pos_mm / sigma) ** 2)
    w /= w.sum()
    return torch.tensor(pos_mm / stack.slice_spacing, dtype=torch.float32), torch.tensor(w, dtype=torch.float32)


@dataclass
class StackOperator:
    """The forward model of one stack restricted to its region of interest.

    Attributes:
        stack: the stack.
        index: ``(N, 3)`` voxel indices of the region of interest (float64).
        y: ``(N,)`` the observed values there.
        slice_id: ``(N,)`` the slice of each voxel.
        offsets, weights: the slice profile samples (:func:`psf_offsets`).
        vol_inv: ``A_v^-1`` of the output grid (float64).
        grid_shape: the output grid's shape.
        motion: ``(4, 4)`` the stack's rigid motion ``M_k`` (float64).
    """

    stack: Stack
    index: torch.Tensor
    y: torch.Tensor
    slice_id: torch.Tensor
    offsets: torch.Tensor
    weights: torch.Tensor
    vol_inv: torch.Tensor
    grid_shape: tuple[int, int, int]
    motion: torch.Tensor
    inside: torch.Tensor | None = None
    matrix_free: bool = False
    _cache: torch.Tensor | None = None
    _matrix: torch.Tensor | None = None
    _matrix_t: torch.Tensor | None = None

    @property
    def n_slices(self) -> int:
        """Slices of the stack."""
        return self.stack.shape[self.stack.slice_axis]

    def grid(self, motion: torch.Tensor | None = None, subset: torch.Tensor | None = None) -> torch.Tensor:
        """Normalised ``grid_sample`` coordinates ``(1, S, N, 1, 3)`` for a motion (default: the stack's)."""
        m = self.motion if motion is None else motion
        idx = self.index if subset is None else self.index[subset]
        axis = self.stack.slice_axis
        aff = torch.as_tensor(self.stack.affine, dtype=torch.float64)
        total = self.vol_inv @ m @ aff  # stack voxel -> output voxel
        base = idx @ total[:3, :3].T + total[:3, 3]  # (N, 3)
        step = total[:3, axis]  # one slice along the normal, in output voxels
        pts = base[None, :, :] + self.offsets.double()[:, None, None] * step[None, None, :]  # (S, N, 3)
        size = torch.tensor(self.grid_shape, dtype=torch.float64)
        norm = 2.0 * pts / (size - 1) - 1.0
        return norm.flip(-1).float()[None, :, :, None, :]

    def cache(self) -> None:
        """Keep the sampling grid of the current motion (used by every solver iteration).

        Also sets :attr:`inside`: the voxels whose whole slice profile falls inside the output grid
        (the others would see the zero padding and are left out of the fit).
        """
        with torch.no_grad():
            self._cache = self.grid()
            self.inside = (self._cache.abs() <= 1.0).all(dim=-1)[0, :, :, 0].all(dim=0)
            self.matrix_free = self.sparse_bytes() > SPARSE_MAX_BYTES
            if self.matrix_free:
                self._matrix = self._matrix_t = None
            else:
                self._matrix, self._matrix_t = _sparse_operator(self._cache, self.weights, self.grid_shape)

    def sparse_bytes(self) -> int:
        """An upper bound of the memory the sparse operator takes to build (8 trilinear corners per sample)."""
        return 8 * int(self.offsets.numel()) * int(self.index.shape[0]) * _BYTES_PER_NONZERO

    def matvec(self, volume: torch.Tensor) -> torch.Tensor:
        """``A v`` with the cached motion (no autograd; :meth:`cache` first): a sparse product, or sampling."""
        if self._cache is None:
            self.cache()
        if self.matrix_free:
            with torch.no_grad():
                return self.apply(volume.float())
        return (self._matrix @ volume.reshape(-1, 1).float())[:, 0]

    def rmatvec(self, values: torch.Tensor) -> torch.Tensor:
        """``A^T r``: the adjoint of :meth:`matvec`, a volume of the grid's shape."""
        if self._cache is None:
            self.cache()
        if self.matrix_free:  # A is linear in the volume: the gradient of <A v, r> is A^T r, exactly
            with torch.enable_grad():
                v = torch.zeros(self.grid_shape, dtype=torch.float32, requires_grad=True)
                (grad,) = torch.autograd.grad(self.apply(v), v, grad_outputs=values.reshape(-1).float())
            return grad
        return (self._matrix_t @ values.reshape(-1, 1).float())[:, 0].reshape(self.grid_shape)

    def apply(self, volume: torch.Tensor, motion: torch.Tensor | None = None,
              subset: torch.Tensor | None = None) -> torch.Tensor:
        """Simulate the stack's region of interest from ``volume`` ``(X, Y, Z)``: ``(N,)`` (or the subset)."""
        if motion is None and subset is None and self._cache is not None:
            g = self._cache
        else:
            g = self.grid(motion, subset)
        samples = F.grid_sample(volume[None, None], g, mode="bilinear", padding_mode="zeros", align_corners=True)
        return (samples[0, 0, :, :, 0] * self.weights[:, None]).sum(dim=0)


def _sparse_operator(grid: torch.Tensor, weights: torch.Tensor,
                     shape: tuple[int, int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """The operator of normalised sample coordinates ``(1, S, N, 1, 3)`` as CSR matrices ``A`` and ``A^T``.

    The same trilinear interpolation with zero padding as ``grid_sample(align_corners=True)``, weighted by the
    slice profile and summed over the samples of each stack voxel. A sparse product is an order of magnitude
    faster than ``grid_sample``'s backward pass on CPU, and the solver needs one per iteration.
    """
    size = torch.tensor(shape, dtype=torch.float32)
    pts = ((grid[0, :, :, 0, :].flip(-1) + 1) * 0.5 * (size - 1))  # (S, N, 3) voxel coordinates
    n_s, n = pts.shape[:2]
    base = torch.floor(pts)
    frac = pts - base
    base = base.long()
    rows, cols, vals = [], [], []
    row_id = torch.arange(n).expand(n_s, n)
    stride = torch.tensor([shape[1] * shape[2], shape[2], 1])
    for corner in range(8):
        off = torch.tensor([(corner >> 2) & 1, (corner >> 1) & 1, corner & 1])
        idx = base + off
        w = torch.where(off.bool(), frac, 1 - frac).prod(dim=-1) * weights[:, None]
        ok = ((idx >= 0) & (idx < torch.tensor(shape))).all(dim=-1) & (w > 0)
        rows.append(row_id[ok])
        cols.append((idx[ok] * stride).sum(dim=-1))
        vals.append(w[ok])
    vox = int(np.prod(shape))
    coo = torch.sparse_coo_tensor(  # indices built here, in range by construction
        torch.stack([torch.cat(rows), torch.cat(cols)]), torch.cat(vals), (n, vox), check_invariants=False).coalesce()
    with warnings.catch_warnings():  # torch's "sparse CSR support is in beta" notice says nothing to a user
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta", category=UserWarning)
        return coo.to_sparse_csr(), coo.t().coalesce().to_sparse_csr()


def make_operator(stack: Stack, grid: Grid, *, motion: np.ndarray | torch.Tensor | None = None,
                  step: float = 0.5, truncate: float = 2.5) -> StackOperator:
    """The :class:`StackOperator` of ``stack`` on ``grid`` (identity motion unless given)."""
    roi = stack.roi()
    index = torch.nonzero(roi).double()
    offsets, weights = psf_offsets(stack, grid.spacing, step, truncate)
    m = torch.eye(4, dtype=torch.float64) if motion is None else torch.as_tensor(motion, dtype=torch.float64).clone()
    return StackOperator(
        stack=stack, index=index, y=stack.data[roi].float(), slice_id=index[:, stack.slice_axis].long(),
        offsets=offsets, weights=weights, vol_inv=torch.as_tensor(np.linalg.inv(grid.affine), dtype=torch.float64),
        grid_shape=grid.shape, motion=m,
    )

"""Super-resolution reconstruction: regularised least squares with robust slice weights.

The volume ``v`` on the output grid minimises::

    sum_k sum_i  w_k[s(i)] (c_k (A_k v)_i - y_k[i])^2  +  lam * rho * R(v)

* ``A_k`` is stack ``k``'s forward model (:mod:`.forward`), ``y_k`` its
  normalised voxels inside its mask, ``c_k`` its intensity scale relative to
  the reference stack (least squares, updated between outer iterations; the
  reference's is 1).
* ``w_k[s]`` is the weight of slice ``s``: 1, or less for an outlier slice
  (Huber weights: a slice whose RMS residual exceeds ``robust_c`` times the
  median slice residual gets ``(robust_c * median / residual)^2``), as the
  robust reconstructions of Kuklisova-Murgasova et al. (2012) and NiftyMIC
  (Ebner et al., 2020) down-weight corrupted slices.
* ``R`` is first-order Tikhonov ``|grad v|^2`` or isotropic total variation,
  solved as reweighted Tikhonov (``|grad v|^2 / sqrt(|grad v|^2 + eps^2)``,
  weights updated between outer iterations); ``rho`` is the number of data
  samples per output voxel, so that ``lam`` does not depend on the number or
  size of the stacks.

Each outer iteration solves the normal equations with conjugate gradients,
warm-started; the operators are cached as sparse matrices (``A`` and ``A^T``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from medsat_sr.multistack.forward import StackOperator

__all__ = ["SolveState", "gradient", "solve", "stack_scales", "slice_weights", "tv_weights"]

logger = logging.getLogger("medsat_sr.multistack")

#: Smoothing of the total variation (normalised intensity units).
TV_EPS = 0.02


def gradient(v: torch.Tensor) -> torch.Tensor:
    """Forward differences along each axis, ``(3, X, Y, Z)`` (zero at the far border)."""
    g = torch.zeros((3, *v.shape), dtype=v.dtype, device=v.device)
    g[0, :-1] = v[1:] - v[:-1]
    g[1, :, :-1] = v[:, 1:] - v[:, :-1]
    g[2, :, :, :-1] = v[:, :, 1:] - v[:, :, :-1]
    return g


@dataclass
class SolveState:
    """What the solver keeps between outer iterations.

    Attributes:
        scales: ``c_k`` per stack.
        weights: per stack, ``(n_slices,)`` slice weights.
        tv: ``(X, Y, Z)`` reweighting of the regulariser (1 for Tikhonov).
    """

    scales: list[float]
    weights: list[torch.Tensor]
    tv: torch.Tensor | None = None


def _voxel_weights(op: StackOperator, w: torch.Tensor) -> torch.Tensor:
    vw = w[op.slice_id]
    if op.inside is not None:
        vw = vw * op.inside.to(vw.dtype)
    return vw


def _density(ops: Sequence[StackOperator], n_vox: int) -> float:
    return float(sum(int(op.index.shape[0]) for op in ops)) / max(1, n_vox)


def solve(ops: Sequence[StackOperator], x0: torch.Tensor, state: SolveState, *, lam: float,
          iterations: int) -> torch.Tensor:
    """Conjugate gradients on the normal equations, from ``x0``; returns the new volume (operators cached)."""
    rho = _density(ops, x0.numel())
    vws = [_voxel_weights(op, w) for op, w in zip(ops, state.weights)]
    reg = state.tv if state.tv is not None else torch.ones_like(x0)

    def hess(p: torch.Tensor) -> torch.Tensor:
        data = sum(c * c * op.rmatvec(vw * op.matvec(p)) for op, c, vw in zip(ops, state.scales, vws))
        q = p.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(0.5 * lam * rho * (reg * (gradient(q) ** 2).sum(dim=0)).sum(), q)
        return data + g.detach()

    b = sum(c * op.rmatvec(vw * op.y) for op, c, vw in zip(ops, state.scales, vws))
    x = x0.detach().clone()
    r = b - hess(x)
    p = r.clone()
    rr = (r * r).sum()
    rr0 = float(rr)
    for it in range(iterations):
        hp = hess(p)
        alpha = rr / (p * hp).sum().clamp_min(1e-30)
        x = x + alpha * p
        r = r - alpha * hp
        rr_new = (r * r).sum()
        if float(rr_new) <= 1e-12 * max(rr0, 1e-30):
            break
        p = r + (rr_new / rr) * p
        rr = rr_new
    logger.debug("CG: %d iterations, residual %.3g of the initial", it + 1, float(rr) / max(rr0, 1e-30))
    return x.detach()


@torch.no_grad()
def stack_scales(ops: Sequence[StackOperator], v: torch.Tensor, state: SolveState, reference: int) -> list[float]:
    """Least-squares intensity scale of each stack against its simulation (the reference's stays 1)."""
    out = []
    for k, (op, w) in enumerate(zip(ops, state.weights)):
        if k == reference:
            out.append(1.0)
            continue
        sim = op.matvec(v)
        vw = _voxel_weights(op, w)
        den = float((vw * sim * sim).sum())
        out.append(float((vw * sim * op.y).sum()) / den if den > 0 else 1.0)
    return out


@torch.no_grad()
def slice_weights(ops: Sequence[StackOperator], v: torch.Tensor, state: SolveState, c: float) -> list[torch.Tensor]:
    """Huber weights of every slice from its RMS residual against the median over all slices."""
    rms_all = []
    for op, scale in zip(ops, state.scales):
        res = (scale * op.matvec(v) - op.y) ** 2
        inside = op.inside.to(res.dtype) if op.inside is not None else torch.ones_like(res)
        n = torch.zeros(op.n_slices).index_add_(0, op.slice_id, inside)
        ss = torch.zeros(op.n_slices).index_add_(0, op.slice_id, res * inside)
        rms = torch.where(n > 0, torch.sqrt(ss / n.clamp_min(1)), torch.full_like(n, float("nan")))
        rms_all.append(rms)
    cat = torch.cat(rms_all)
    med = float(torch.nanmedian(cat)) if bool(torch.isfinite(cat).any()) else 0.0
    out = []
    for rms in rms_all:
        w = torch.ones_like(rms)
        if med > 0:
            big = torch.isfinite(rms) & (rms > c * med)
            w[big] = (c * med / rms[big]) ** 2
        out.append(w)
    return out


@torch.no_grad()
def tv_weights(v: torch.Tensor, eps: float = TV_EPS) -> torch.Tensor:
    """Half-quadratic weights of isotropic total variation: ``eps / sqrt(|grad v|^2 + eps^2)``."""
    g2 = (gradient(v) ** 2).sum(dim=0)
    return eps / torch.sqrt(g2 + eps * eps)

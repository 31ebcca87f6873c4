"""Training losses: L1, Charbonnier, MSE and SSIM, and their weighted sum.

:func:`build_loss` turns ``train.losses`` into a :class:`CombinedLoss`;
:func:`medsat_sr.train.build_trainer` uses it as the trainer's loss (the names
are re-exported from :mod:`medsat_sr.train`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from medsat_sr.errors import ConfigError

__all__ = ["CharbonnierLoss", "CombinedLoss", "build_loss"]


class CharbonnierLoss(nn.Module):
    """``mean(sqrt((x - y)^2 + eps^2))`` (a differentiable L1)."""

    def __init__(self, eps: float = 1e-3) -> None:
        super().__init__()
        self.eps = float(eps)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.sqrt((x - y) ** 2 + self.eps**2).mean()


class CombinedLoss(nn.Module):
    """Weighted sum of loss terms; :attr:`last` holds each term's latest value."""

    def __init__(self, terms: Sequence[tuple[str, float, nn.Module]]) -> None:
        super().__init__()
        self.names = [n for n, _, _ in terms]
        self.weights = [float(w) for _, w, _ in terms]
        self.terms = nn.ModuleList([m for _, _, m in terms])
        self.last: dict[str, float] = {}

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        total = x.new_zeros(())
        for name, w, term in zip(self.names, self.weights, self.terms):
            v = term(x.float(), y.float())
            self.last[name] = float(v.detach())
            total = total + w * v
        return total


def build_loss(losses: Sequence[Any], spatial_dims: int, data_range: float = 1.0) -> CombinedLoss:
    """The training loss of ``train.losses`` (``l1``, ``charbonnier``, ``mse``, ``ssim``).

    Args:
        losses: :class:`~medsat_sr.config.LossTerm` items (or mappings with
            ``name``, ``weight``, ``eps``).
        spatial_dims: 2 or 3 (for SSIM).
        data_range: SSIM data range in network units.

    Raises:
        ConfigError: an unknown loss name.
    """
    from monai.losses import SSIMLoss

    terms = []
    for term in losses:
        get = term.get if isinstance(term, Mapping) else lambda k, d=None, t=term: getattr(t, k, d)
        name, weight, eps = get("name"), float(get("weight", 1.0)), get("eps")
        if name == "l1":
            mod: nn.Module = nn.L1Loss()
        elif name == "mse":
            mod = nn.MSELoss()
        elif name == "charbonnier":
            mod = CharbonnierLoss(1e-3 if eps is None else float(eps))
        elif name == "ssim":
            mod = _SSIMLossTerm(SSIMLoss(spatial_dims=spatial_dims, data_range=float(data_range)))
        else:
            raise ConfigError(f"unknown loss {name!r}; expected l1, charbonnier, mse or ssim")
        terms.append((str(name), weight, mod))
    return CombinedLoss(terms)


class _SSIMLossTerm(nn.Module):
    """MONAI's SSIMLoss with the same argument order as the others."""

    def __init__(self, loss: nn.Module) -> None:
        super().__init__()
        self.loss = loss

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.loss(x, y)

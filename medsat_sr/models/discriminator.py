"""Patch discriminator for the optional adversarial loss.

A thin wrapper around :class:`monai.networks.nets.PatchDiscriminator`
(the pix2pix/PatchGAN design, Isola et al. 2017) that validates its arguments
and input size, returns the logits tensor (MONAI returns a list of every
layer's output), records a JSON config, and works in 2D and 3D.
"""

from __future__ import annotations

from typing import Any

import torch
from monai.networks.nets import PatchDiscriminator as _MonaiPatchDiscriminator
from torch import nn

from medsat_sr.errors import ModelError
from medsat_sr.models._checks import check_choice, check_float, check_int

__all__ = ["PatchDiscriminator", "NORMS"]

#: Accepted ``norm`` values and their MONAI spelling.
NORMS = {"batch": "BATCH", "instance": "INSTANCE", "none": None}


class PatchDiscriminator(nn.Module):
    """PatchGAN discriminator: a map of real/fake logits, one per receptive patch.

    Args:
        spatial_dims: 2 or 3.
        in_channels: channels of the images judged (the generator's ``out_channels``).
        features: width of the first layer (doubles per layer).
        n_layers: strided layers; the input must be at least ``3 * 2**n_layers``
            pixels on every axis.
        kernel_size: kernel of every layer (PatchGAN: 4).
        norm: ``"batch"``, ``"instance"`` or ``"none"``.
        dropout: dropout probability in the layers.

    Raises:
        ModelError: an invalid argument.
    """

    arch = "patch"

    def __init__(
        self,
        *,
        spatial_dims: int,
        in_channels: int,
        features: int = 64,
        n_layers: int = 3,
        kernel_size: int = 4,
        norm: str = "batch",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if isinstance(spatial_dims, bool) or spatial_dims not in (2, 3):
            raise ModelError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}")
        in_channels = check_int("in_channels", in_channels, 1)
        features = check_int("features", features, 1)
        n_layers = check_int("n_layers", n_layers, 1)
        kernel_size = check_int("kernel_size", kernel_size, 2)
        norm = check_choice("norm", norm, tuple(NORMS))
        dropout = check_float("dropout", dropout, 0.0)
        if dropout >= 1.0:
            raise ModelError(f"dropout must be < 1, got {dropout}")
        self.spatial_dims = int(spatial_dims)
        self.in_channels = in_channels
        self.min_size = 3 * 2**n_layers
        self.net = _MonaiPatchDiscriminator(
            spatial_dims=self.spatial_dims,
            channels=features,
            in_channels=in_channels,
            out_channels=1,
            num_layers_d=n_layers,
            kernel_size=kernel_size,
            norm=NORMS[norm],
            dropout=dropout,
        )
        self.config: dict[str, Any] = {
            "name": self.arch,
            "kwargs": {
                "spatial_dims": self.spatial_dims,
                "in_channels": in_channels,
                "features": features,
                "n_layers": n_layers,
                "kernel_size": kernel_size,
                "norm": norm,
                "dropout": dropout,
            },
        }

    def forward(
        self, x: torch.Tensor, return_features: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        """Judge ``x``.

        Args:
            x: ``(B, in_channels, *spatial)``, every axis ``>= min_size``.
            return_features: also return the intermediate feature maps (for
                a feature-matching loss).

        Returns:
            Logits of shape ``(B, 1, *patch_grid)``; with ``return_features``,
            ``(logits, features)``.

        Raises:
            ModelError: wrong rank, channel count or a too small input.
        """
        if not isinstance(x, torch.Tensor) or x.ndim != self.spatial_dims + 2:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ModelError(
                f"discriminator input must be (B, C, *spatial) with {self.spatial_dims} "
                f"spatial dims, got {shape}"
            )
        if x.shape[1] != self.in_channels:
            raise ModelError(
                f"discriminator input must have {self.in_channels} channels, got {x.shape[1]}"
            )
        if min(x.shape[2:]) < self.min_size:
            raise ModelError(
                f"discriminator input must be at least {self.min_size} pixels per axis "
                f"(3 * 2**n_layers), got spatial size {tuple(x.shape[2:])}"
            )
        outs = self.net(x)
        if return_features:
            return outs[-1], list(outs[:-1])
        return outs[-1]

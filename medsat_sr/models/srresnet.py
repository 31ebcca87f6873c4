"""SRResNet (Ledig et al., CVPR 2017), 2D and 3D.

``input_conv (large kernel) + PReLU -> n_blocks x SRResNetBlock -> body_conv
(+ BN) (+ long skip) -> upsampler (conv, shuffle, PReLU per stage) ->
output_conv (large kernel)``, plus the interpolation skip of
:class:`~medsat_sr.models.base.SRModel` (the paper has no such skip; every
medsat_sr generator learns a residual over interpolation).

Batch norm is optional and **off by default**: it hurts SR fidelity (EDSR,
Lim et al. 2017), behaves differently in training and inference, and with
the small batches of CPU training its statistics are noisy. ``batch_norm=True``
reproduces the paper's blocks.

CPU-sized defaults: 2D 64 features, 8 blocks (paper: 16), outer kernel 9
(as in the paper); 3D 32 features, 4 blocks, outer kernel 5 (a 9x9x9 kernel
costs 729 taps per voxel for little gain).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from medsat_sr.errors import ModelError
from medsat_sr.models._checks import check_int, check_odd_kernel
from medsat_sr.models.base import SRModel
from medsat_sr.models.blocks import (
    SRResNetBlock,
    batch_norm_nd,
    conv_nd,
    init_conv_,
    zero_conv_,
)

__all__ = ["SRResNet"]


class SRResNet(SRModel):
    """SRResNet generator for 2D images or 3D volumes with per-axis scale.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        scale: one factor >= 1 or one per spatial axis.
        out_channels: output channels (default ``in_channels``).
        features: width (default 64 in 2D, 32 in 3D).
        n_blocks: residual blocks (default 8 in 2D, 4 in 3D).
        batch_norm: batch norm in the blocks and after the body (default off).
        kernel_size: odd kernel size of the body.
        outer_kernel_size: odd kernel of the first and last convolutions
            (default 9 in 2D, 5 in 3D).
        upsample: ``"pre"``, ``"post"`` or ``None`` (auto).

    Raises:
        ModelError: an invalid argument.
    """

    arch = "srresnet"

    def __init__(
        self,
        *,
        spatial_dims: int,
        in_channels: int,
        scale: float | Sequence[float],
        out_channels: int | None = None,
        features: int | None = None,
        n_blocks: int | None = None,
        batch_norm: bool = False,
        kernel_size: int = 3,
        outer_kernel_size: int | None = None,
        upsample: str | None = None,
    ) -> None:
        super().__init__(
            spatial_dims=spatial_dims,
            in_channels=in_channels,
            out_channels=out_channels,
            scale=scale,
            upsample=upsample,
        )
        sd = self.spatial_dims
        features = check_int("features", self._pick(features, 64, 32), 1)
        n_blocks = check_int("n_blocks", self._pick(n_blocks, 8, 4), 0)
        if not isinstance(batch_norm, bool):
            raise ModelError(f"batch_norm must be True or False, got {batch_norm!r}")
        k = check_odd_kernel("kernel_size", kernel_size)
        ko = check_odd_kernel("outer_kernel_size", self._pick(outer_kernel_size, 9, 5))

        self.input_conv = init_conv_(conv_nd(sd, self.in_channels, features, ko))
        self.input_act = nn.PReLU(features)
        self.blocks = nn.ModuleList(
            [SRResNetBlock(sd, features, k, batch_norm) for _ in range(n_blocks)]
        )
        self.body_conv = init_conv_(conv_nd(sd, features, features, k, bias=not batch_norm), 0.1)
        self.body_norm = batch_norm_nd(sd, features) if batch_norm else nn.Identity()
        self.upsampler = self._make_upsampler(features, k, activation="prelu")
        self.output_conv = zero_conv_(conv_nd(sd, features, self.out_channels, ko))

        body_radius = ko // 2 + sum(b.radius for b in self.blocks) + k // 2
        self._finish(
            {
                "features": features,
                "n_blocks": n_blocks,
                "batch_norm": batch_norm,
                "kernel_size": k,
                "outer_kernel_size": ko,
            },
            body_radius=body_radius,
            output_radius=ko // 2,
        )

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Features at the grid of ``x``: head, residual blocks, long skip."""
        h = self.input_act(self.input_conv(x))
        r = h
        for block in self.blocks:
            r = block(r)
        return h + self.body_norm(self.body_conv(r))

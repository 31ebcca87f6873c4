"""EDSR: enhanced deep residual network (Lim et al., CVPRW 2017), 2D and 3D.

``input_conv -> n_blocks x ResBlock -> body_conv (+ long skip) -> upsampler
-> output_conv``, plus the interpolation skip of :class:`~medsat_sr.models.base.SRModel`.
No batch norm, no RGB mean shift (the channel count comes from the data and
intensities are normalised by the domain profile).

CPU-sized defaults (this toolbox trains on a few CPU cores in minutes):
2D: 64 features, 8 blocks (the paper's baseline has 16); 3D: 32 features,
4 blocks. ``res_scale`` 1.0 (the paper uses 0.1 only for its 256-feature
model; here the last conv of each block also starts at 0.1 x Kaiming).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from medsat_sr.models._checks import check_float, check_int, check_odd_kernel
from medsat_sr.models.base import SRModel
from medsat_sr.models.blocks import ResBlock, conv_nd, init_conv_, zero_conv_

__all__ = ["EDSR"]


class EDSR(SRModel):
    """EDSR generator for 2D images or 3D volumes with per-axis scale.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        scale: one factor >= 1 or one per spatial axis (e.g. ``(1, 1, 4)``).
        out_channels: output channels (default ``in_channels``).
        features: width (default 64 in 2D, 32 in 3D).
        n_blocks: residual blocks (default 8 in 2D, 4 in 3D).
        res_scale: residual scaling inside the blocks.
        kernel_size: odd kernel size of the body convolutions.
        upsample: ``"pre"``, ``"post"`` or ``None`` (auto; see :class:`SRModel`).

    Raises:
        ModelError: an invalid argument.
    """

    arch = "edsr"

    def __init__(
        self,
        *,
        spatial_dims: int,
        in_channels: int,
        scale: float | Sequence[float],
        out_channels: int | None = None,
        features: int | None = None,
        n_blocks: int | None = None,
        res_scale: float = 1.0,
        kernel_size: int = 3,
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
        res_scale = check_float("res_scale", res_scale, 0.0, strict=True)
        k = check_odd_kernel("kernel_size", kernel_size)

        self.input_conv = init_conv_(conv_nd(sd, self.in_channels, features, k))
        self.blocks = nn.ModuleList(
            [ResBlock(sd, features, k, res_scale) for _ in range(n_blocks)]
        )
        self.body_conv = init_conv_(conv_nd(sd, features, features, k), 0.1)
        self.upsampler = self._make_upsampler(features, k)
        self.output_conv = zero_conv_(conv_nd(sd, features, self.out_channels, k))

        body_radius = k // 2 + sum(b.radius for b in self.blocks) + k // 2
        self._finish(
            {
                "features": features,
                "n_blocks": n_blocks,
                "res_scale": res_scale,
                "kernel_size": k,
            },
            body_radius=body_radius,
            output_radius=k // 2,
        )

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Features at the grid of ``x``: head, residual blocks, long skip."""
        h = self.input_conv(x)
        r = h
        for block in self.blocks:
            r = block(r)
        return h + self.body_conv(r)

"""RCAN: residual channel attention network (Zhang et al., ECCV 2018), 2D and 3D.

``input_conv -> n_groups x ResidualGroup(n_blocks x RCAB, conv, group skip)
-> body_conv (+ long skip) -> upsampler -> output_conv``, plus the
interpolation skip of :class:`~medsat_sr.models.base.SRModel`.

Channel attention pools over *all* spatial positions, so every output pixel
depends weakly on the whole input: tiled inference is approximate (the
difference shrinks with tile size) and ``global_context`` is ``True``;
``receptive_field`` reports the convolutional reach only. It also means the
statistics seen in training (patches) differ from whole-image inference.

CPU-sized defaults: 2D 64 features, 4 groups x 4 RCABs (the paper: 10 x 20);
3D 32 features, 2 groups x 3 RCABs; reduction 16 in 2D and 8 in 3D (hidden
width at least 1).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from medsat_sr.models._checks import check_float, check_int, check_odd_kernel
from medsat_sr.models.base import SRModel
from medsat_sr.models.blocks import ResidualGroup, conv_nd, init_conv_, zero_conv_

__all__ = ["RCAN"]


class RCAN(SRModel):
    """RCAN generator for 2D images or 3D volumes with per-axis scale.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        scale: one factor >= 1 or one per spatial axis.
        out_channels: output channels (default ``in_channels``).
        features: width (default 64 in 2D, 32 in 3D).
        n_groups: residual groups (default 4 in 2D, 2 in 3D).
        n_blocks: RCABs per group (default 4 in 2D, 3 in 3D).
        reduction: channel-attention reduction (default 16 in 2D, 8 in 3D).
        res_scale: residual scaling inside the RCABs.
        kernel_size: odd kernel size.
        upsample: ``"pre"``, ``"post"`` or ``None`` (auto).

    Raises:
        ModelError: an invalid argument.
    """

    arch = "rcan"
    global_context = True

    def __init__(
        self,
        *,
        spatial_dims: int,
        in_channels: int,
        scale: float | Sequence[float],
        out_channels: int | None = None,
        features: int | None = None,
        n_groups: int | None = None,
        n_blocks: int | None = None,
        reduction: int | None = None,
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
        n_groups = check_int("n_groups", self._pick(n_groups, 4, 2), 0)
        n_blocks = check_int("n_blocks", self._pick(n_blocks, 4, 3), 0)
        reduction = check_int("reduction", self._pick(reduction, 16, 8), 1)
        res_scale = check_float("res_scale", res_scale, 0.0, strict=True)
        k = check_odd_kernel("kernel_size", kernel_size)

        self.input_conv = init_conv_(conv_nd(sd, self.in_channels, features, k))
        self.blocks = nn.ModuleList(
            [
                ResidualGroup(sd, features, n_blocks, reduction, k, res_scale)
                for _ in range(n_groups)
            ]
        )
        self.body_conv = init_conv_(conv_nd(sd, features, features, k), 0.1)
        self.upsampler = self._make_upsampler(features, k)
        self.output_conv = zero_conv_(conv_nd(sd, features, self.out_channels, k))

        body_radius = k // 2 + sum(g.radius for g in self.blocks) + k // 2
        self._finish(
            {
                "features": features,
                "n_groups": n_groups,
                "n_blocks": n_blocks,
                "reduction": reduction,
                "res_scale": res_scale,
                "kernel_size": k,
            },
            body_radius=body_radius,
            output_radius=k // 2,
        )

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Features at the grid of ``x``: head, residual groups, long skip."""
        h = self.input_conv(x)
        r = h
        for group in self.blocks:
            r = group(r)
        return h + self.body_conv(r)

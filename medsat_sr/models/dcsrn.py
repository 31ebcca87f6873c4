"""DCSRN: a multi-level densely connected SR net in the spirit of mDCSRN.

After Chen et al., "Efficient and Accurate MRI Super-Resolution using a
Generative Adversarial Network and 3D Multi-Level Densely Connected Network"
(MICCAI 2018): ``input_conv -> n_blocks x (DenseBlock + 1x1 compressor)``,
with the head and *every* compressor output concatenated into a 1x1 fusion
convolution (the multi-level connection), then the upsampler and
``output_conv``; plus the interpolation skip of
:class:`~medsat_sr.models.base.SRModel`.

Differences from the paper, by design: no batch norm (ELU after each dense
layer instead of BN-ELU), a residual over interpolation instead of a plain
reconstruction, and an optional learned upsampler (mDCSRN works on an input
already on the output grid, which is ``upsample="pre"`` here).

Defaults (both 2D and 3D; the paper's 4 blocks x 4 layers, growth 16):
features 32 (= 2 x growth), growth 16, 4 blocks of 4 layers.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from medsat_sr.models._checks import check_int, check_odd_kernel
from medsat_sr.models.base import SRModel
from medsat_sr.models.blocks import DenseBlock, conv_nd, init_conv_, zero_conv_

__all__ = ["DCSRN", "DenseStage"]


class DenseStage(nn.Module):
    """A dense block followed by a 1x1 compressor back to ``features`` channels.

    Args:
        spatial_dims: 2 or 3.
        features: channels in and out.
        growth: channels added per dense layer.
        n_layers: dense layers.
        kernel_size: odd kernel size.
    """

    def __init__(
        self, spatial_dims: int, features: int, growth: int, n_layers: int, kernel_size: int = 3
    ) -> None:
        super().__init__()
        self.dense = DenseBlock(spatial_dims, features, growth, n_layers, kernel_size)
        self.compress = init_conv_(conv_nd(spatial_dims, self.dense.out_channels, features, 1))
        self.radius = self.dense.radius

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the stage."""
        return self.compress(self.dense(x))


class DCSRN(SRModel):
    """Multi-level densely connected SR generator (2D or 3D), mDCSRN-like.

    Args:
        spatial_dims: 2 or 3 (designed for 3D volumes).
        in_channels: input channels.
        scale: one factor >= 1 or one per spatial axis.
        out_channels: output channels (default ``in_channels``).
        features: width of the head and of each compressor (default 32).
        growth: channels added per dense layer (default 16).
        n_blocks: dense blocks (default 4).
        n_layers: layers per dense block (default 4).
        kernel_size: odd kernel size.
        upsample: ``"pre"``, ``"post"`` or ``None`` (auto).

    Raises:
        ModelError: an invalid argument.
    """

    arch = "dcsrn"

    def __init__(
        self,
        *,
        spatial_dims: int,
        in_channels: int,
        scale: float | Sequence[float],
        out_channels: int | None = None,
        features: int = 32,
        growth: int = 16,
        n_blocks: int = 4,
        n_layers: int = 4,
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
        features = check_int("features", features, 1)
        growth = check_int("growth", growth, 1)
        n_blocks = check_int("n_blocks", n_blocks, 0)
        n_layers = check_int("n_layers", n_layers, 1)
        k = check_odd_kernel("kernel_size", kernel_size)

        self.input_conv = init_conv_(conv_nd(sd, self.in_channels, features, k))
        self.blocks = nn.ModuleList(
            [DenseStage(sd, features, growth, n_layers, k) for _ in range(n_blocks)]
        )
        self.fusion = init_conv_(conv_nd(sd, features * (n_blocks + 1), features, 1))
        self.act = nn.ELU(inplace=True)
        self.upsampler = self._make_upsampler(features, k)
        self.output_conv = zero_conv_(conv_nd(sd, features, self.out_channels, k))

        body_radius = k // 2 + sum(b.radius for b in self.blocks)
        self._finish(
            {
                "features": features,
                "growth": growth,
                "n_blocks": n_blocks,
                "n_layers": n_layers,
                "kernel_size": k,
            },
            body_radius=body_radius,
            output_radius=k // 2,
        )

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Features at the grid of ``x``: head, dense stages, multi-level fusion."""
        h = self.input_conv(x)
        levels = [h]
        for stage in self.blocks:
            levels.append(stage(levels[-1]))
        return self.act(self.fusion(torch.cat(levels, dim=1)))

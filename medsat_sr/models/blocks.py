"""Building blocks shared by the generators, for 2D and 3D.

Every block works for ``spatial_dims`` 2 or 3, keeps the spatial size
("same" padding with zeros, odd kernels only) and exposes ``radius``: how many
pixels of its own grid one output pixel looks at on each side. The generators
add these up to report their receptive field (see
:attr:`medsat_sr.models.base.SRModel.receptive_field`).

Initialisation: convolutions are Kaiming-normal (fan-in, ReLU gain) with zero
bias. The *last* convolution of each residual branch is further scaled by
``init_scale`` (0.1 by default) so that at initialisation every residual block
is close to the identity and the residual stream does not grow with depth;
this is the usual remedy for deep SR nets without batch normalisation.

References:
    Lim et al., "Enhanced Deep Residual Networks for Single Image
    Super-Resolution" (EDSR), CVPRW 2017: residual blocks without BN, residual
    scaling. Zhang et al., "Image Super-Resolution Using Very Deep Residual
    Channel Attention Networks" (RCAN), ECCV 2018. Ledig et al., "Photo-Realistic
    Single Image Super-Resolution Using a Generative Adversarial Network"
    (SRResNet), CVPR 2017. Chen et al., "Efficient and Accurate MRI
    Super-Resolution using a Generative Adversarial Network and 3D Multi-Level
    Densely Connected Network" (mDCSRN), MICCAI 2018.
"""

from __future__ import annotations

import torch
from torch import nn

from medsat_sr.errors import ModelError

__all__ = [
    "conv_nd",
    "batch_norm_nd",
    "init_conv_",
    "zero_conv_",
    "ResBlock",
    "ChannelAttention",
    "RCAB",
    "ResidualGroup",
    "SRResNetBlock",
    "DenseBlock",
]


def conv_nd(
    spatial_dims: int,
    in_channels: int,
    out_channels: int,
    kernel_size: int = 3,
    *,
    bias: bool = True,
) -> nn.Conv2d | nn.Conv3d:
    """A 2D or 3D convolution with "same" zero padding.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        out_channels: output channels.
        kernel_size: odd kernel size, the same on every axis.
        bias: learn a bias.

    Returns:
        ``nn.Conv2d`` or ``nn.Conv3d`` with ``padding = kernel_size // 2``.

    Raises:
        ModelError: ``spatial_dims`` not 2 or 3, or an even kernel size.
    """
    if spatial_dims not in (2, 3):
        raise ModelError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}")
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ModelError(f"kernel_size must be odd and >= 1, got {kernel_size}")
    cls = nn.Conv2d if spatial_dims == 2 else nn.Conv3d
    return cls(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=bias)


def batch_norm_nd(spatial_dims: int, channels: int) -> nn.BatchNorm2d | nn.BatchNorm3d:
    """``nn.BatchNorm2d`` or ``nn.BatchNorm3d``."""
    return nn.BatchNorm2d(channels) if spatial_dims == 2 else nn.BatchNorm3d(channels)


@torch.no_grad()
def init_conv_(conv: nn.Module, scale: float = 1.0) -> nn.Module:
    """Kaiming-normal (fan-in, ReLU gain) weights times ``scale``, zero bias. In place."""
    nn.init.kaiming_normal_(conv.weight, mode="fan_in", nonlinearity="relu")
    conv.weight.mul_(scale)
    if conv.bias is not None:
        conv.bias.zero_()
    return conv


@torch.no_grad()
def zero_conv_(conv: nn.Module) -> nn.Module:
    """Zero weights and bias, in place: the layer outputs 0 until trained."""
    conv.weight.zero_()
    if conv.bias is not None:
        conv.bias.zero_()
    return conv


class ResBlock(nn.Module):
    """EDSR residual block: ``x + res_scale * conv(relu(conv(x)))``, no batch norm.

    Batch normalisation is left out on purpose: it normalises away the
    intensity range that SR must reproduce and costs memory (Lim et al. 2017).

    Args:
        spatial_dims: 2 or 3.
        features: channels in and out.
        kernel_size: odd kernel size.
        res_scale: multiplies the branch before the addition (0.1 in the
            large EDSR and in DSen2; 1.0 is fine for small nets).
        init_scale: scale of the second convolution's initial weights.
    """

    def __init__(
        self,
        spatial_dims: int,
        features: int,
        kernel_size: int = 3,
        res_scale: float = 1.0,
        init_scale: float = 0.1,
    ) -> None:
        super().__init__()
        self.conv1 = init_conv_(conv_nd(spatial_dims, features, features, kernel_size))
        self.act = nn.ReLU(inplace=True)
        self.conv2 = init_conv_(conv_nd(spatial_dims, features, features, kernel_size), init_scale)
        self.res_scale = float(res_scale)
        self.radius = 2 * (kernel_size // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block (in place on the branch's fresh output when no gradient is recorded)."""
        branch = self.conv2(self.act(self.conv1(x)))
        if torch.is_grad_enabled():
            return x + branch * self.res_scale
        if self.res_scale != 1.0:
            branch.mul_(self.res_scale)
        return branch.add_(x)  # inference: no new full-size tensor per block


class ChannelAttention(nn.Module):
    """Squeeze-and-excitation channel attention (RCAN's CA).

    ``x * sigmoid(W2 relu(W1 mean(x)))`` where the mean runs over all spatial
    positions. Note the global mean: every output depends (weakly) on every
    input pixel, so tiled inference of a net with this block is approximate;
    see :attr:`medsat_sr.models.rcan.RCAN.global_context`.

    Args:
        spatial_dims: 2 or 3.
        features: channels.
        reduction: hidden width is ``max(1, features // reduction)``.
    """

    def __init__(self, spatial_dims: int, features: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = max(1, features // reduction)
        self.squeeze = conv_nd(spatial_dims, features, hidden, 1)
        self.act = nn.ReLU(inplace=True)
        self.excite = conv_nd(spatial_dims, hidden, features, 1)
        nn.init.zeros_(self.squeeze.bias)
        nn.init.zeros_(self.excite.bias)
        self.spatial_dims = spatial_dims
        self.radius = 0  # local radius; the global mean is reported separately

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Reweight the channels of ``x``."""
        dims = tuple(range(2, 2 + self.spatial_dims))
        w = x.mean(dim=dims, keepdim=True)
        w = torch.sigmoid(self.excite(self.act(self.squeeze(w))))
        return x * w


class RCAB(nn.Module):
    """Residual channel attention block: ``x + res_scale * CA(conv(relu(conv(x))))``.

    Args:
        spatial_dims: 2 or 3.
        features: channels in and out.
        reduction: channel-attention reduction ratio.
        kernel_size: odd kernel size.
        res_scale: branch scaling.
        init_scale: scale of the second convolution's initial weights.
    """

    def __init__(
        self,
        spatial_dims: int,
        features: int,
        reduction: int = 16,
        kernel_size: int = 3,
        res_scale: float = 1.0,
        init_scale: float = 0.1,
    ) -> None:
        super().__init__()
        self.conv1 = init_conv_(conv_nd(spatial_dims, features, features, kernel_size))
        self.act = nn.ReLU(inplace=True)
        self.conv2 = init_conv_(conv_nd(spatial_dims, features, features, kernel_size), init_scale)
        self.attention = ChannelAttention(spatial_dims, features, reduction)
        self.res_scale = float(res_scale)
        self.radius = 2 * (kernel_size // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block."""
        return x + self.attention(self.conv2(self.act(self.conv1(x)))) * self.res_scale


class ResidualGroup(nn.Module):
    """RCAN residual group: ``n_blocks`` RCABs, a convolution, and a group skip.

    Args:
        spatial_dims: 2 or 3.
        features: channels in and out.
        n_blocks: number of RCABs.
        reduction: channel-attention reduction ratio.
        kernel_size: odd kernel size.
        res_scale: branch scaling inside the RCABs.
    """

    def __init__(
        self,
        spatial_dims: int,
        features: int,
        n_blocks: int,
        reduction: int = 16,
        kernel_size: int = 3,
        res_scale: float = 1.0,
    ) -> None:
        super().__init__()
        self.blocks = nn.Sequential(
            *[
                RCAB(spatial_dims, features, reduction, kernel_size, res_scale)
                for _ in range(n_blocks)
            ]
        )
        self.conv = init_conv_(conv_nd(spatial_dims, features, features, kernel_size), 0.1)
        self.radius = sum(b.radius for b in self.blocks) + kernel_size // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the group."""
        return x + self.conv(self.blocks(x))


class SRResNetBlock(nn.Module):
    """SRResNet residual block: conv-(BN)-PReLU-conv-(BN) plus identity.

    Ledig et al. (2017) use batch normalisation here. It is off by default:
    for SR, BN removes range flexibility, behaves differently in training and
    inference (small CPU batches make the statistics noisy) and makes outputs
    depend on the batch; EDSR showed that removing it improves PSNR. Turn it
    on (``batch_norm=True``) only to reproduce the paper.

    Args:
        spatial_dims: 2 or 3.
        features: channels in and out.
        kernel_size: odd kernel size.
        batch_norm: add BN after each convolution.
        init_scale: scale of the second convolution's initial weights.
    """

    def __init__(
        self,
        spatial_dims: int,
        features: int,
        kernel_size: int = 3,
        batch_norm: bool = False,
        init_scale: float = 0.1,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [
            init_conv_(conv_nd(spatial_dims, features, features, kernel_size, bias=not batch_norm))
        ]
        if batch_norm:
            layers.append(batch_norm_nd(spatial_dims, features))
        layers.append(nn.PReLU(features))
        layers.append(
            init_conv_(
                conv_nd(spatial_dims, features, features, kernel_size, bias=not batch_norm),
                init_scale,
            )
        )
        if batch_norm:
            layers.append(batch_norm_nd(spatial_dims, features))
        self.branch = nn.Sequential(*layers)
        self.radius = 2 * (kernel_size // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block."""
        return x + self.branch(x)


class DenseBlock(nn.Module):
    """Densely connected block (DenseNet / mDCSRN style), without batch norm.

    Layer ``i`` sees the concatenation of the block input and the outputs of
    layers ``0..i-1`` and adds ``growth`` channels: ``ELU(conv(cat(...)))``.
    The block returns the full concatenation, ``in_features + n_layers *
    growth`` channels (:attr:`out_channels`); mDCSRN follows each block with a
    1x1 compressor, which the caller adds.

    Args:
        spatial_dims: 2 or 3.
        in_features: input channels.
        growth: channels added by each layer.
        n_layers: number of layers.
        kernel_size: odd kernel size.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_features: int,
        growth: int,
        n_layers: int,
        kernel_size: int = 3,
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            [
                init_conv_(conv_nd(spatial_dims, in_features + i * growth, growth, kernel_size))
                for i in range(n_layers)
            ]
        )
        self.act = nn.ELU(inplace=True)
        self.out_channels = in_features + n_layers * growth
        self.radius = n_layers * (kernel_size // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block; returns ``out_channels`` channels."""
        feats = [x]
        for conv in self.layers:
            feats.append(self.act(conv(torch.cat(feats, dim=1))))
        return torch.cat(feats, dim=1)

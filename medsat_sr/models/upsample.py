"""Upsampling: fixed interpolation for the skip path, learned per-axis voxel shuffle.

* :func:`interpolate` resamples to an exact output size (bicubic in 2D,
  trilinear in 3D, ``align_corners=False``), always in at least float32 and
  outside autocast. ``align_corners=False`` with an explicit ``size`` maps
  pixel centres so that the field of view is kept, the same convention as
  :mod:`medsat_sr.geometry` (``A' = A · diag(1/s)`` with the half-voxel shift).
* :func:`voxel_shuffle` generalises pixel shuffle (Shi et al., CVPR 2016) to
  any number of spatial axes and a *different integer factor per axis*
  (``(1, 1, 4)`` for thick slices, ``(2, 1)`` for slice nets). MONAI's
  SubpixelUpsample handles one isotropic factor only.
* :class:`Upsampler` stacks conv + voxel shuffle stages, one prime factor per
  axis and stage (x4 = x2 then x2, as in EDSR), with ICNR initialisation
  (Aitken et al. 2017) so the untrained shuffle is free of checkerboard
  artefacts.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from medsat_sr.errors import ModelError
from medsat_sr.models.blocks import conv_nd

__all__ = [
    "interpolate",
    "interpolation_mode",
    "interpolation_support",
    "voxel_shuffle",
    "prime_factors",
    "shuffle_stages",
    "Upsampler",
]


def interpolation_mode(spatial_dims: int) -> str:
    """The skip-path interpolation: ``"bicubic"`` in 2D, ``"trilinear"`` in 3D."""
    return "bicubic" if spatial_dims == 2 else "trilinear"


def interpolation_support(spatial_dims: int) -> int:
    """How far (in input pixels) :func:`interpolate` reaches: 2 (bicubic) or 1 (linear)."""
    return 2 if spatial_dims == 2 else 1


def interpolate(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Resample ``x`` (B, C, *spatial) to ``size``, keeping the field of view.

    Runs with autocast disabled, in float32 for half-precision inputs (and in
    the input dtype otherwise), so the skip path of every model keeps full
    precision under ``torch.autocast("cpu", dtype=torch.bfloat16)``.

    Args:
        x: a 4D (2D images) or 5D (volumes) floating-point tensor.
        size: output spatial size.

    Returns:
        The resampled tensor, float32 (or float64 for float64 input). When
        ``size`` equals the input size, ``x`` converted to that dtype.
    """
    spatial_dims = x.ndim - 2
    dtype = x.dtype if x.dtype == torch.float64 else torch.float32
    size = tuple(int(s) for s in size)
    if tuple(x.shape[2:]) == size:
        return x.to(dtype)
    with torch.autocast(device_type=x.device.type, enabled=False):
        return F.interpolate(
            x.to(dtype), size=size, mode=interpolation_mode(spatial_dims), align_corners=False
        )


def voxel_shuffle(x: torch.Tensor, factors: Sequence[int]) -> torch.Tensor:
    """Rearrange channels into space with one integer factor per spatial axis.

    ``(B, C * prod(factors), n1, ..., nk)`` becomes
    ``(B, C, n1 * f1, ..., nk * fk)``, with channel ``c * prod(f) + flat(o)``
    going to offset ``o = (o1, ..., ok)`` inside each output cell (row-major
    over the offsets). For 2D and equal factors this is ``nn.PixelShuffle``.

    Args:
        x: tensor of shape ``(B, C * prod(factors), *spatial)``.
        factors: one positive integer per spatial axis.

    Returns:
        The shuffled tensor (contiguous).

    Raises:
        ModelError: factor count or channel count does not fit.
    """
    k = x.ndim - 2
    factors = tuple(int(f) for f in factors)
    if len(factors) != k or any(f < 1 for f in factors):
        raise ModelError(f"voxel_shuffle needs {k} positive factors, got {factors}")
    p = math.prod(factors)
    b, c = x.shape[:2]
    spatial = x.shape[2:]
    if c % p:
        raise ModelError(f"voxel_shuffle: channels ({c}) not divisible by prod({factors}) = {p}")
    if p == 1:
        return x
    x = x.reshape(b, c // p, *factors, *spatial)
    # (b, c, f1..fk, n1..nk) -> (b, c, n1, f1, ..., nk, fk)
    perm = [0, 1] + [d for i in range(k) for d in (2 + k + i, 2 + i)]
    x = x.permute(perm)
    return x.reshape(b, c // p, *[n * f for n, f in zip(spatial, factors)])


def prime_factors(n: int) -> list[int]:
    """Prime factors of ``n >= 1`` in increasing order (``[]`` for 1)."""
    out, d = [], 2
    while d * d <= n:
        while n % d == 0:
            out.append(d)
            n //= d
        d += 1
    if n > 1:
        out.append(n)
    return out


def shuffle_stages(factors: Sequence[int]) -> list[tuple[int, ...]]:
    """Split per-axis integer factors into stages of one prime per axis.

    ``(1, 1, 4)`` -> ``[(1, 1, 2), (1, 1, 2)]``; ``(6, 2)`` -> ``[(2, 2), (3, 1)]``;
    all ones -> ``[]``.
    """
    per_axis = [prime_factors(int(f)) for f in factors]
    return [tuple(stage) for stage in itertools.zip_longest(*per_axis, fillvalue=1)]


class Upsampler(nn.Module):
    """Learned upsampling by integer per-axis factors: [conv -> voxel shuffle (-> act)] per stage.

    Args:
        spatial_dims: 2 or 3.
        features: channels in and out.
        factors: one integer factor >= 1 per spatial axis.
        kernel_size: odd kernel of the stage convolutions.
        activation: ``None``, or ``"prelu"`` / ``"relu"`` after each shuffle
            (SRResNet uses PReLU; EDSR none).

    Attributes:
        stages: the per-stage factors (see :func:`shuffle_stages`).
        radius_lr: per-axis reach in *input* pixels (conservative): each stage
            adds ``(kernel_size // 2 + 0.5) / S`` where ``S`` is the scale
            reached before it (0.5 for the shuffle's sub-pixel offset, on
            the axes that stage upsamples).
    """

    def __init__(
        self,
        spatial_dims: int,
        features: int,
        factors: Sequence[int],
        kernel_size: int = 3,
        activation: str | None = None,
    ) -> None:
        super().__init__()
        if len(factors) != spatial_dims:
            raise ModelError(f"Upsampler needs {spatial_dims} factors, got {tuple(factors)}")
        self.factors = tuple(int(f) for f in factors)
        self.stages = shuffle_stages(self.factors)
        convs = []
        acts = []
        reached = [1.0] * spatial_dims
        radius = [0.0] * spatial_dims
        for stage in self.stages:
            p = math.prod(stage)
            conv = conv_nd(spatial_dims, features, features * p, kernel_size)
            _icnr_(conv, p)
            convs.append(conv)
            if activation is None:
                acts.append(nn.Identity())
            elif activation == "prelu":
                acts.append(nn.PReLU(features))
            elif activation == "relu":
                acts.append(nn.ReLU(inplace=True))
            else:
                raise ModelError(f"activation must be None, 'prelu' or 'relu', got {activation!r}")
            for ax in range(spatial_dims):
                offset = 0.5 if stage[ax] > 1 else 0.0
                radius[ax] += (kernel_size // 2 + offset) / reached[ax]
                reached[ax] *= stage[ax]
        self.convs = nn.ModuleList(convs)
        self.acts = nn.ModuleList(acts)
        self.radius_lr = tuple(radius)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Upsample ``x`` by ``factors``."""
        for stage, conv, act in zip(self.stages, self.convs, self.acts):
            x = act(voxel_shuffle(conv(x), stage))
        return x


@torch.no_grad()
def _icnr_(conv: nn.Module, p: int) -> None:
    """ICNR: every group of ``p`` output filters feeding one output channel starts equal.

    With the channel order of :func:`voxel_shuffle` (``c * p + offset``), the
    untrained conv + shuffle equals a conv followed by nearest-neighbour
    upsampling.
    """
    out_ch = conv.weight.shape[0] // p
    base = torch.empty(out_ch, *conv.weight.shape[1:])
    nn.init.kaiming_normal_(base, mode="fan_in", nonlinearity="relu")
    conv.weight.copy_(base.repeat_interleave(p, dim=0))
    if conv.bias is not None:
        conv.bias.zero_()

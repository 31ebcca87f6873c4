"""Band-guided SR in the spirit of DSen2 (Lanaras et al., ISPRS J. 2018).

Coarse bands (e.g. Sentinel-2's 20 m bands) are upsampled (bicubic) to the
grid of the fine guide bands (the 10 m bands), concatenated with them, and an
EDSR-like body (``input_conv + ReLU -> n_blocks x ResBlock -> output_conv``)
predicts the coarse bands' missing detail::

    y = up(coarse) + body(cat(up(coarse), guide))

The body always works on the fine grid (``upsample="pre"``); any per-axis
factor works, including non-integer ones, because the guide fixes the output
size.

The **unguided** variant (``use_guide=False``, or
``build_model("unguided", ...)``) is the same network without the guide input:
``y = up(coarse) + body(up(coarse))``. Trained the same way, it measures what
the fine-band guidance buys. It ignores a guide passed to ``forward``.

Defaults (CPU-sized; DSen2 uses 128 features and 6 blocks): 2D 64 features,
6 blocks; 3D 32 features, 4 blocks; ``res_scale`` 0.1 as in DSen2.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from medsat_sr.errors import ModelError
from medsat_sr.models._checks import (
    check_float,
    check_int,
    check_odd_kernel,
    check_output_size,
)
from medsat_sr.models.base import SRModel
from medsat_sr.models.blocks import ResBlock, conv_nd, init_conv_, zero_conv_
from medsat_sr.models.upsample import interpolate

__all__ = ["GuidedSR", "unguided"]


class GuidedSR(SRModel):
    """Band-guided generator: sharpen coarse bands with fine guide bands.

    Args:
        spatial_dims: 2 (rasters) or 3.
        in_channels: number of coarse bands (to sharpen).
        scale: fine-grid / coarse-grid factor, one or per axis (2 for 20 m -> 10 m,
            6 for 60 m -> 10 m). The guide must be ``round(coarse_size * scale)``
            (one pixel of slack per axis).
        guide_channels: number of fine guide bands; required when ``use_guide``.
        out_channels: output bands (default ``in_channels``).
        features: width (default 64 in 2D, 32 in 3D).
        n_blocks: residual blocks (default 6 in 2D, 4 in 3D).
        res_scale: residual scaling (DSen2: 0.1).
        kernel_size: odd kernel size.
        use_guide: ``False`` builds the unguided variant (``guide_channels``
            is then ignored and recorded as 0).

    Attributes:
        guide_receptive_field: reach of the body in guide (fine) pixels.

    Raises:
        ModelError: an invalid argument.
    """

    arch = "guided"

    def __init__(
        self,
        *,
        spatial_dims: int,
        in_channels: int,
        scale: float | Sequence[float],
        guide_channels: int | None = None,
        out_channels: int | None = None,
        features: int | None = None,
        n_blocks: int | None = None,
        res_scale: float = 0.1,
        kernel_size: int = 3,
        use_guide: bool = True,
    ) -> None:
        super().__init__(
            spatial_dims=spatial_dims,
            in_channels=in_channels,
            out_channels=out_channels,
            scale=scale,
            upsample="pre",
        )
        if not isinstance(use_guide, bool):
            raise ModelError(f"use_guide must be True or False, got {use_guide!r}")
        if use_guide:
            if guide_channels is None:
                raise ModelError(
                    "guided needs guide_channels (the number of fine guide bands); "
                    "for the unguided variant pass use_guide=False or build 'unguided'"
                )
            guide_channels = check_int("guide_channels", guide_channels, 1)
        else:
            guide_channels = 0
        self.use_guide = use_guide
        self.guide_channels = guide_channels
        sd = self.spatial_dims
        features = check_int("features", self._pick(features, 64, 32), 1)
        n_blocks = check_int("n_blocks", self._pick(n_blocks, 6, 4), 0)
        res_scale = check_float("res_scale", res_scale, 0.0, strict=True)
        k = check_odd_kernel("kernel_size", kernel_size)

        self.input_conv = init_conv_(
            conv_nd(sd, self.in_channels + guide_channels, features, k)
        )
        self.input_act = nn.ReLU(inplace=True)
        self.blocks = nn.ModuleList(
            [ResBlock(sd, features, k, res_scale) for _ in range(n_blocks)]
        )
        self.upsampler = nn.Identity()
        self.output_conv = zero_conv_(conv_nd(sd, features, self.out_channels, k))

        body_radius = k // 2 + sum(b.radius for b in self.blocks)
        self._finish(
            {
                "guide_channels": guide_channels,
                "features": features,
                "n_blocks": n_blocks,
                "res_scale": res_scale,
                "kernel_size": k,
                "use_guide": use_guide,
            },
            body_radius=body_radius,
            output_radius=k // 2,
        )
        del self.config["kwargs"]["upsample"]  # always "pre"; not an argument here
        self.guide_receptive_field = body_radius + k // 2

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Features of the (concatenated) fine-grid input."""
        h = self.input_act(self.input_conv(x))
        for block in self.blocks:
            h = block(h)
        return h

    def forward(  # type: ignore[override]
        self,
        coarse: torch.Tensor,
        guide: torch.Tensor | None = None,
        output_size: Sequence[int] | None = None,
    ) -> torch.Tensor:
        """Sharpen ``coarse`` onto the grid of ``guide``.

        Args:
            coarse: ``(B, in_channels, *coarse_size)``.
            guide: ``(B, guide_channels, *fine_size)`` with ``fine_size`` =
                ``round(coarse_size * scale)`` (+-1 pixel). Required unless
                the model is unguided (then ignored).
            output_size: unguided only: the exact output size (default
                ``round(coarse_size * scale)``); with a guide it must equal
                the guide's size if given.

        Returns:
            ``(B, out_channels, *fine_size)``, float32.

        Raises:
            ModelError: missing guide, or mismatched shapes or channels.
        """
        self._check_input(coarse, "coarse", self.in_channels)
        if self.use_guide:
            if guide is None:
                raise ModelError(
                    f"guided: forward(coarse, guide) needs the fine guide bands, "
                    f"shape (B, {self.guide_channels}, *fine_size); got guide=None "
                    "(use the unguided variant to run without a guide)"
                )
            self._check_input(guide, "guide", self.guide_channels)
            if guide.shape[0] != coarse.shape[0]:
                raise ModelError(
                    f"guided: coarse and guide batch sizes differ: "
                    f"{coarse.shape[0]} vs {guide.shape[0]}"
                )
            fine = tuple(guide.shape[2:])
            expected = self.output_size(coarse.shape[2:])
            if any(abs(a - b) > 1 for a, b in zip(fine, expected)):
                raise ModelError(
                    f"guided: guide size {fine} does not match coarse size "
                    f"{tuple(coarse.shape[2:])} x scale {self.scale} = {expected} (+-1 pixel)"
                )
            if (
                output_size is not None
                and check_output_size(output_size, self.spatial_dims) != fine
            ):
                raise ModelError(
                    f"guided: output_size {tuple(output_size)} differs from the guide size {fine}"
                )
            out_size = fine
        else:
            out_size = self._resolve_output_size(coarse.shape[2:], output_size)
        skip = interpolate(coarse, out_size)
        pdtype = self._param_dtype()
        body_in = skip.to(pdtype)
        if self.use_guide:
            body_in = torch.cat([body_in, guide.to(pdtype)], dim=1)
        return self._add_skip(skip, self.output_conv(self.encode(body_in)))


def unguided(
    *,
    spatial_dims: int,
    in_channels: int,
    scale: float | Sequence[float],
    out_channels: int | None = None,
    features: int | None = None,
    n_blocks: int | None = None,
    res_scale: float = 0.1,
    kernel_size: int = 3,
) -> GuidedSR:
    """The unguided twin of :class:`GuidedSR` (``use_guide=False``), for ablations.

    Same arguments as :class:`GuidedSR` without ``guide_channels``; its
    ``config`` names ``"guided"`` with ``use_guide: false``.
    """
    return GuidedSR(
        spatial_dims=spatial_dims,
        in_channels=in_channels,
        scale=scale,
        out_channels=out_channels,
        features=features,
        n_blocks=n_blocks,
        res_scale=res_scale,
        kernel_size=kernel_size,
        use_guide=False,
    )

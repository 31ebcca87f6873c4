"""The contract every medsat_sr generator keeps: :class:`SRModel`.

A generator maps ``x`` of shape ``(B, in_channels, *spatial)`` to
``(B, out_channels, *round(spatial * scale))`` and learns a residual over
interpolation of its input::

    y = interpolate(x, out_size) + body(x)

* **Scale** is one factor per spatial axis, ``>= 1``, possibly anisotropic
  (``(1, 1, 4)``) or non-integer (``(1, 1, 4.8)``). The output size is
  ``round(n * s)`` per axis (:func:`medsat_sr.geometry.scaled_shape`), or the
  ``output_size`` passed to :meth:`SRModel.forward`.
* **Upsampling** ``"post"``: the body runs at low resolution and a learned
  per-axis voxel shuffle upsamples (cheap). ``"pre"``: the input is first
  interpolated to the output grid and the body runs there (any factor,
  SMORE/ECLARE-style). Default: ``"post"`` when every factor is an integer,
  else ``"pre"``. With ``"post"`` and a non-integer factor, the shuffle uses
  ``ceil(s)`` and the learned residual is interpolated to the output size.
* **Skip path** is bicubic in 2D and trilinear in 3D
  (:func:`medsat_sr.models.upsample.interpolate`), computed in float32
  outside autocast. Output channel ``i`` adds input channel
  ``i % in_channels`` (identity when the counts are equal; with fewer
  outputs, the first inputs are the ones super-resolved and the others are
  auxiliary).
* **Initialisation**: the output convolution starts at zero, so an untrained
  model *is* the interpolation baseline, and training can only improve on it.
* **dtype**: under ``torch.autocast("cpu", dtype=torch.bfloat16)`` the body
  runs in bfloat16 and the output is float32 (skip in float32 plus the
  bf16 residual upcast). Without autocast the output is float32 (float64 if
  the input or the parameters are float64).
* **Tiling**: :attr:`SRModel.receptive_field` is a conservative bound, in
  input pixels, of how far an output pixel's input dependence reaches from
  its own position; a halo that large makes tiled output equal whole-image
  output, unless :attr:`SRModel.global_context` is true (RCAN's channel
  attention pools over the whole input).
* **Config**: :attr:`SRModel.config` is ``{"name": ..., "kwargs": {...}}``,
  JSON-serialisable, with every argument resolved (defaults included), so
  ``build_model(cfg["name"], **cfg["kwargs"])`` rebuilds the architecture.

Convolutions pad with zeros. Tiled inference should therefore read halos
from real data inside the image and leave the true image border to the
model (zero padding), as a whole-image pass would.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import nn

from medsat_sr.errors import ModelError
from medsat_sr.geometry import scaled_shape
from medsat_sr.models._checks import (
    check_choice,
    check_int,
    check_output_size,
    is_integer_scale,
    parse_scale,
)
from medsat_sr.models.upsample import Upsampler, interpolate, interpolation_support

__all__ = ["SRModel", "UPSAMPLE_MODES"]

#: Accepted values of the ``upsample`` argument.
UPSAMPLE_MODES = ("pre", "post")


class SRModel(nn.Module):
    """Base class of the generators: scale handling, skip path, receptive field, config.

    Subclasses build ``input_conv``, ``blocks`` (an ``nn.ModuleList`` or
    ``nn.Sequential`` of the repeated units, used by
    :func:`medsat_sr.models.finetune.freeze_blocks`), ``upsampler`` (from
    :meth:`_make_upsampler`) and ``output_conv`` (zero-initialised), implement
    :meth:`encode`, and call :meth:`_finish` last in ``__init__``.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels (any count; no per-channel means are assumed).
        out_channels: output channels; ``None`` means ``in_channels``.
        scale: one factor >= 1, or one per spatial axis.
        upsample: ``"pre"``, ``"post"`` or ``None`` (``"post"`` for integer
            factors, else ``"pre"``).

    Attributes:
        spatial_dims: 2 or 3.
        in_channels: input channel count.
        out_channels: output channel count.
        scale: per-axis factors (floats).
        upsample: the resolved mode.
        receptive_field: int, the largest of :attr:`receptive_field_per_axis`.
        receptive_field_per_axis: per-axis reach in input pixels.
        global_context: whether outputs also depend on the whole input
            (so tiling is only approximate).
        config: ``{"name": arch, "kwargs": {...}}``.
    """

    #: The name of the architecture in :data:`medsat_sr.models.MODELS`.
    arch: ClassVar[str] = ""
    #: True when some layer pools over the whole input (tiling is approximate).
    global_context: ClassVar[bool] = False

    input_conv: nn.Module
    blocks: nn.Module
    upsampler: nn.Module
    output_conv: nn.Module

    def __init__(
        self,
        *,
        spatial_dims: int,
        in_channels: int,
        out_channels: int | None,
        scale: float | Sequence[float],
        upsample: str | None,
    ) -> None:
        super().__init__()
        if isinstance(spatial_dims, bool) or spatial_dims not in (2, 3):
            raise ModelError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}")
        self.spatial_dims = int(spatial_dims)
        self.in_channels = check_int("in_channels", in_channels, 1)
        self.out_channels = (
            self.in_channels if out_channels is None else check_int("out_channels", out_channels, 1)
        )
        self.scale = parse_scale(scale, self.spatial_dims)
        if upsample is None:
            upsample = "post" if is_integer_scale(self.scale) else "pre"
        self.upsample = check_choice("upsample", upsample, UPSAMPLE_MODES)
        #: Integer factors of the learned shuffle ("post"): ceil of the scale.
        self.shuffle_factors = tuple(max(1, math.ceil(f - 1e-6)) for f in self.scale)
        if self.out_channels == self.in_channels:
            self._skip_index: list[int] | None = None
        else:
            self._skip_index = [i % self.in_channels for i in range(self.out_channels)]
        self.receptive_field = 0
        self.receptive_field_per_axis: tuple[int, ...] = ()
        self.config: dict[str, Any] = {}

    # ------------------------------------------------------------------ helpers
    def _pick(self, value: Any, default_2d: Any, default_3d: Any) -> Any:
        """``value``, or the default for this model's ``spatial_dims`` when ``None``."""
        if value is not None:
            return value
        return default_2d if self.spatial_dims == 2 else default_3d

    def _make_upsampler(
        self, features: int, kernel_size: int = 3, activation: str | None = None
    ) -> nn.Module:
        """The learned upsampler for ``"post"``, ``nn.Identity`` for ``"pre"``."""
        if self.upsample == "pre" or all(f == 1 for f in self.shuffle_factors):
            return nn.Identity()
        return Upsampler(self.spatial_dims, features, self.shuffle_factors, kernel_size, activation)

    def _json_scale(self) -> list[float | int]:
        return [int(round(f)) if is_integer_scale([f]) else f for f in self.scale]

    def _finish(self, kwargs: dict[str, Any], body_radius: int, output_radius: int) -> None:
        """Record the config and compute the receptive field. Call last in ``__init__``.

        Args:
            kwargs: the architecture-specific arguments, resolved (the common
                ones are added here).
            body_radius: reach of :meth:`encode`, in pixels of the grid it runs on.
            output_radius: reach of ``output_conv`` on the output grid.
        """
        common = {
            "spatial_dims": self.spatial_dims,
            "in_channels": self.in_channels,
            "out_channels": self.out_channels,
            "scale": self._json_scale(),
            "upsample": self.upsample,
        }
        self.config = {"name": self.arch, "kwargs": {**common, **kwargs}}
        per_axis = []
        support = interpolation_support(self.spatial_dims)
        for ax, s in enumerate(self.scale):
            if self.upsample == "pre":
                reach = support + (body_radius + output_radius) / s
            else:
                f = self.shuffle_factors[ax]
                up = self.upsampler.radius_lr[ax] if isinstance(self.upsampler, Upsampler) else 0.0
                reach = body_radius + up + output_radius / f
                if abs(f - s) > 1e-6:  # the residual is resampled from ceil(s) to s
                    reach += support / f
            per_axis.append(math.ceil(max(reach, support) - 1e-9))
        self.receptive_field_per_axis = tuple(per_axis)
        self.receptive_field = max(per_axis)

    def _param_dtype(self) -> torch.dtype:
        for p in self.parameters():
            return p.dtype
        return torch.float32

    def _check_input(self, x: Any, name: str, channels: int) -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            raise ModelError(f"{self.arch}: {name} must be a torch.Tensor, got {type(x).__name__}")
        if not x.is_floating_point():
            raise ModelError(f"{self.arch}: {name} must be floating point, got {x.dtype}")
        if x.ndim != self.spatial_dims + 2:
            axes = ", ".join("DHW"[-self.spatial_dims :])
            raise ModelError(
                f"{self.arch}: {name} must have shape (B, C, {axes}) "
                f"for spatial_dims={self.spatial_dims}, got {tuple(x.shape)}"
            )
        if x.shape[1] != channels:
            raise ModelError(
                f"{self.arch}: {name} must have {channels} channels, got {x.shape[1]} "
                f"(shape {tuple(x.shape)})"
            )
        if any(n < 1 for n in x.shape[2:]) or x.shape[0] < 1:
            raise ModelError(f"{self.arch}: {name} has an empty dimension: {tuple(x.shape)}")
        return x

    def output_size(self, input_size: Sequence[int]) -> tuple[int, ...]:
        """The default output grid: ``round(n * s)`` per axis (at least 1).

        Args:
            input_size: the input's spatial size.
        """
        return scaled_shape(tuple(int(n) for n in input_size), self.scale)

    def _resolve_output_size(
        self, input_size: Sequence[int], output_size: Sequence[int] | None
    ) -> tuple[int, ...]:
        if output_size is None:
            return self.output_size(input_size)
        return check_output_size(output_size, self.spatial_dims)

    def _add_skip(self, skip: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        if self._skip_index is not None:
            skip = skip[:, self._skip_index]
        if tuple(residual.shape[2:]) != tuple(skip.shape[2:]):
            residual = interpolate(residual, skip.shape[2:])
        dtype = torch.promote_types(skip.dtype, self._param_dtype())
        return skip.to(dtype) + residual.to(dtype)

    # ----------------------------------------------------------------- forward
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Features of ``x`` on the grid ``x`` is on (before any upsampling)."""
        raise NotImplementedError

    def forward(
        self, x: torch.Tensor, output_size: Sequence[int] | None = None
    ) -> torch.Tensor:
        """Super-resolve ``x``.

        Args:
            x: ``(B, in_channels, *spatial)``, any spatial size (odd sizes fine).
            output_size: exact output spatial size; default
                :meth:`output_size` of the input size. Pass it to get
                ``round(shape * scale)`` computed by the caller, e.g. for
                non-integer factors.

        Returns:
            ``(B, out_channels, *output_size)``, float32 (see module docs).

        Raises:
            ModelError: wrong rank, channel count, dtype or ``output_size``.
        """
        self._check_input(x, "x", self.in_channels)
        out_size = self._resolve_output_size(x.shape[2:], output_size)
        skip = interpolate(x, out_size)
        pdtype = self._param_dtype()
        if self.upsample == "pre":
            feats = self.encode(skip.to(pdtype))
        else:
            feats = self.upsampler(self.encode(x.to(pdtype)))
        return self._add_skip(skip, self.output_conv(feats))

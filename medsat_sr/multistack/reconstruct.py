"""Several thick-slice stacks into one isotropic volume: register, reconstruct, repeat.

:func:`reconstruct` runs the whole classical pipeline:

1. the output grid (:func:`~medsat_sr.multistack.stacks.output_grid`);
2. initial alignment: mask centroids (when masks are given), then every
   stack registered rigidly to the reference stack interpolated onto the grid
   (cubic B-spline), through its forward model (:mod:`.register`);
3. ``register_cycles`` times: reconstruct (:mod:`.solve`), then register every
   stack but the reference to the reconstruction;
4. the final reconstruction with robust slice weights.

:func:`mean_of_cubic` is the classical baseline: every registered stack
interpolated onto the grid with a cubic B-spline, brought to the reference's
intensity scale and averaged where it has data.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from medsat_sr.baselines import resample_affine
from medsat_sr.errors import ConfigError
from medsat_sr.multistack.forward import StackOperator, make_operator
from medsat_sr.multistack.options import MultiStackOptions
from medsat_sr.multistack.register import mask_centroid, register_stack
from medsat_sr.multistack.solve import SolveState, slice_weights, solve, stack_scales, tv_weights
from medsat_sr.multistack.stacks import Grid, Stack, limit_to_grid, output_grid

__all__ = ["Reconstruction", "reconstruct", "srr", "mean_of_cubic", "resolve_options", "region_of", "reference_of"]

logger = logging.getLogger("medsat_sr.multistack")


@dataclass
class Reconstruction:
    """The result of :func:`reconstruct` (intensities normalised by the reference stack's ``norm``).

    Attributes:
        volume: ``(X, Y, Z)`` the reconstruction.
        grid: its grid.
        ops: the stacks' operators (their ``motion`` as registered).
        reference: the reference stack's index.
        scales: intensity scale of each stack relative to the reference.
        weights: slice weights per stack.
        ncc: final registration NCC per stack (``None`` for the reference or without registration).
        timings: seconds per stage.
    """

    volume: torch.Tensor
    grid: Grid
    ops: list[StackOperator]
    reference: int
    scales: list[float]
    weights: list[torch.Tensor]
    ncc: list[float | None]
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def motions(self) -> list[np.ndarray]:
        """The 4x4 rigid motion of each stack (world to world, mm)."""
        return [op.motion.numpy().copy() for op in self.ops]

    def physical(self) -> torch.Tensor:
        """The volume in the reference stack's intensity units."""
        return self.volume * float(self.ops[self.reference].stack.norm)

    def summary(self) -> dict[str, Any]:
        """A JSON-ready summary for the trust record."""
        rows = []
        for k, op in enumerate(self.ops):
            m = op.motion.numpy()
            angle = math.degrees(math.acos(max(-1.0, min(1.0, (float(np.trace(m[:3, :3])) - 1) / 2))))
            w = self.weights[k]
            rows.append({
                "stack": op.stack.name, "reference": k == self.reference, "shape": list(op.stack.shape),
                "spacing_mm": [round(s, 4) for s in op.stack.spacing], "slice_axis": op.stack.slice_axis,
                "thickness_mm": op.stack.thickness, "rotation_deg": round(angle, 3),
                "translation_mm": [round(float(v), 3) for v in m[:3, 3]], "intensity_scale": round(self.scales[k], 4),
                "registration_ncc": None if self.ncc[k] is None else round(float(self.ncc[k]), 4),
                "outlier_slices": int((w < 0.5).sum()), "min_slice_weight": round(float(w.min()), 4),
            })
        return {"reference": self.reference, "stacks": rows, "grid_shape": list(self.grid.shape),
                "grid_spacing_mm": round(self.grid.spacing, 6)}


def resolve_options(options: MultiStackOptions | dict[str, Any] | None) -> MultiStackOptions:
    """Validated options (a mapping is checked like the config section)."""
    if options is None:
        return MultiStackOptions()
    if isinstance(options, MultiStackOptions):
        return options
    try:
        return MultiStackOptions.model_validate(dict(options))
    except ValueError as exc:
        first = str(exc).splitlines()
        raise ConfigError(f"multistack options: {' '.join(first[:3])}") from None


def region_of(stacks: Sequence[Stack], opts: MultiStackOptions) -> str:
    """``mask``, ``union`` or ``intersection``: the region the grid covers."""
    if opts.region == "auto":
        return "mask" if any(s.mask is not None for s in stacks) else "union"
    if opts.region == "mask" and not any(s.mask is not None for s in stacks):
        raise ConfigError("multistack.region 'mask' needs masks (--mask, one per stack)")
    return opts.region


def reference_of(stacks: Sequence[Stack], opts: MultiStackOptions) -> int:
    """The reference stack's index."""
    if opts.reference == "auto":
        return 0
    if opts.reference >= len(stacks):
        raise ConfigError(f"multistack.reference {opts.reference} does not exist ({len(stacks)} stacks)")
    return int(opts.reference)


def mean_of_cubic(ops: Sequence[StackOperator], grid: Grid, scales: Sequence[float] | None = None) -> torch.Tensor:
    """The baseline: registered stacks interpolated by cubic B-spline onto ``grid`` and averaged.

    Each stack is divided by its intensity scale; voxels no stack covers (or where every covering stack has no
    data: NaN in the input) are 0.
    """
    total = np.zeros(grid.shape, dtype=np.float64)
    count = np.zeros(grid.shape, dtype=np.float64)
    for k, op in enumerate(ops):
        m = np.linalg.inv(op.stack.affine) @ np.linalg.inv(op.motion.numpy()) @ grid.affine
        vol = resample_affine(op.stack.data.numpy(), m, grid.shape, order=3)
        ok = np.isfinite(vol)
        if op.stack.valid is not None:  # no data where the stack was NaN: it takes no part there
            ok &= resample_affine(op.stack.valid.numpy().astype(np.float32), m, grid.shape, order=1,
                                  outside=0.0) > 0.5
        total[ok] += vol[ok] / (scales[k] if scales is not None else 1.0)
        count[ok] += 1
    return torch.from_numpy((total / np.maximum(count, 1)).astype(np.float32))


def _initial_motions(ops: list[StackOperator], reference: int) -> None:
    """Translate each masked stack so that its mask centroid meets the reference's."""
    ref = ops[reference]
    if ref.stack.mask is None:
        return
    c_ref = mask_centroid(ref)
    for k, op in enumerate(ops):
        if k != reference and op.stack.mask is not None:
            m = np.eye(4)
            m[:3, 3] = c_ref - mask_centroid(op)
            op.motion = torch.as_tensor(m, dtype=torch.float64)


def _register_all(ops: list[StackOperator], volume: torch.Tensor, reference: int, centre: np.ndarray,
                  radius: float, opts: MultiStackOptions, ncc: list[float | None], tick: Callable[[], None]) -> None:
    for k, op in enumerate(ops):
        if k == reference:
            continue
        op.motion, ncc[k] = register_stack(op, volume, centre=centre, radius=radius,
                                           iterations=opts.registration_iterations, max_points=opts.max_points)
        tick()


def srr(ops: list[StackOperator], x0: torch.Tensor, reference: int, opts: MultiStackOptions,
        robust: bool, tick: Callable[[], None] | None = None) -> tuple[torch.Tensor, SolveState]:
    """The regularised least-squares reconstruction with the stacks' motions fixed, from ``x0``."""
    tick = tick or (lambda: None)
    for op in ops:
        op.cache()
    state = SolveState(scales=[1.0] * len(ops), weights=[torch.ones(op.n_slices) for op in ops])
    v = x0
    state.scales = stack_scales(ops, v, state, reference)
    for _ in range(opts.outer_iterations):
        if opts.regulariser == "tv":
            state.tv = tv_weights(v)
        v = solve(ops, v, state, lam=opts.lam, iterations=opts.cg_iterations)
        state.scales = stack_scales(ops, v, state, reference)
        if robust:
            state.weights = slice_weights(ops, v, state, opts.robust_c)
        tick()
    return v.clamp_min(0), state


def reconstruct(stacks: Sequence[Stack], options: MultiStackOptions | dict[str, Any] | None = None, *,
                grid: Grid | None = None, motions: Sequence[np.ndarray] | None = None,
                progress: Callable[[], None] | None = None, solve_volume: bool = True) -> Reconstruction:
    """Register and reconstruct ``stacks`` into one isotropic volume.

    Args:
        stacks: at least two stacks.
        options: :class:`~medsat_sr.multistack.options.MultiStackOptions` or its mapping.
        grid: the output grid (default: from the options).
        motions: starting motions, one per stack (default: mask centroids, else identity).
        progress: called after each registration and each outer iteration.
        solve_volume: ``False``: register to the reference stack only and return the
            mean of the cubic-resampled registered stacks (the baseline).

    Returns:
        The :class:`Reconstruction`.

    Raises:
        ConfigError: fewer than two stacks, or invalid options.
    """
    opts = resolve_options(options)
    if len(stacks) < 2:
        raise ConfigError(f"multi-stack reconstruction needs at least 2 stacks, got {len(stacks)}")
    tick = progress or (lambda: None)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    ref = reference_of(stacks, opts)
    region = region_of(stacks, opts)
    if grid is None:
        grid = output_grid(stacks, reference=ref, spacing=opts.spacing, region=region, margin_mm=opts.margin_mm)
    if region == "intersection":  # only voxels inside the common box: their slice profiles stay on the grid
        stacks = [limit_to_grid(s, grid, opts.margin_mm) for s in stacks]
    ops = [make_operator(s, grid, step=opts.psf_step, truncate=opts.psf_truncate) for s in stacks]
    if motions is not None:
        for op, m in zip(ops, motions):
            op.motion = torch.as_tensor(np.asarray(m), dtype=torch.float64).clone()
    else:
        _initial_motions(ops, ref)
    centre = grid.affine[:3, :3] @ ((np.asarray(grid.shape) - 1) / 2) + grid.affine[:3, 3]
    radius = 0.25 * float(np.linalg.norm(np.asarray(grid.shape) * grid.spacing))
    ncc: list[float | None] = [None] * len(stacks)
    if opts.registration == "rigid":
        v0 = mean_of_cubic([ops[ref]], grid)
        _register_all(ops, v0, ref, centre, radius, opts, ncc, tick)
    timings["initial_alignment"] = time.perf_counter() - t0
    v = mean_of_cubic(ops, grid)
    if not solve_volume:
        timings["total"] = time.perf_counter() - t0
        return Reconstruction(volume=v, grid=grid, ops=ops, reference=ref, scales=[1.0] * len(ops),
                              weights=[torch.ones(op.n_slices) for op in ops], ncc=ncc, timings=timings)
    state = None
    for cycle in range(opts.register_cycles if opts.registration == "rigid" else 0):
        t1 = time.perf_counter()
        v, state = srr(ops, v, ref, opts, robust=False, tick=tick)
        timings[f"reconstruct_{cycle}"] = time.perf_counter() - t1
        t1 = time.perf_counter()
        _register_all(ops, v, ref, centre, radius, opts, ncc, tick)
        timings[f"register_{cycle}"] = time.perf_counter() - t1
    t1 = time.perf_counter()
    v, state = srr(ops, v, ref, opts, robust=opts.robust, tick=tick)
    timings["reconstruct_final"] = time.perf_counter() - t1
    if opts.mask_output and any(s.mask is not None for s in stacks):
        v = v * _support(ops, grid)
    timings["total"] = time.perf_counter() - t0
    return Reconstruction(volume=v, grid=grid, ops=ops, reference=ref, scales=state.scales, weights=state.weights,
                          ncc=ncc, timings=timings)


@torch.no_grad()
def _support(ops: Sequence[StackOperator], grid: Grid) -> torch.Tensor:
    """Output voxels inside the union of the registered masks, dilated by 2 voxels."""
    count = torch.zeros(grid.shape)
    for op in ops:
        if op.stack.mask is None:
            continue
        m = np.linalg.inv(op.stack.affine) @ np.linalg.inv(op.motion.numpy()) @ grid.affine
        vol = resample_affine(op.stack.mask.numpy().astype(np.float32), m, grid.shape, order=1, outside=0.0)
        count += torch.from_numpy(vol > 0.5).float()
    sup = (count > 0).float()[None, None]
    sup = torch.nn.functional.max_pool3d(sup, kernel_size=5, stride=1, padding=2)
    return sup[0, 0]

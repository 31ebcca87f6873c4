"""The options of multi-stack reconstruction, declared once (pydantic only, no torch).

They are the ``multistack:`` section of a job config (``configs/mri_multistack.yaml``)
and the keyword arguments of :func:`medsat_sr.multistack.reconstruct`. This module
imports nothing above the foundations, so :mod:`medsat_sr.config` may embed it.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from medsat_sr._schema import StrictModel, located

__all__ = ["MultiStackOptions", "RefineOptions"]


class RefineOptions(StrictModel):
    """The optional learned refinement (self-supervised, trained on the stacks themselves).

    A small residual 3D network ``f`` refines the classical solution. It is
    trained leave-one-stack-out: for every stack ``k`` the classical volume
    reconstructed *without* ``k`` goes through ``f`` and then through stack
    ``k``'s forward model, and must match stack ``k``. It is kept only when it
    beats the classical solution on a held-out stack (the run's decision).

    Attributes:
        enabled: train and apply the refinement.
        features: channels of the network.
        blocks: residual blocks.
        iterations: optimiser steps.
        max_minutes: wall-clock budget of the training.
        lr: Adam learning rate.
        min_gain: least leave-one-out NCC gain on the held-out stack to keep it.
        seed: random seed.
    """

    enabled: bool = False
    features: int = Field(16, ge=4, le=128)
    blocks: int = Field(3, ge=1, le=16)
    iterations: int = Field(300, ge=1)
    max_minutes: float = Field(3.0, gt=0)
    lr: float = Field(1e-3, gt=0, le=1)
    min_gain: float = Field(0.002, ge=0)
    seed: int = Field(0, ge=0)


class MultiStackOptions(StrictModel):
    """How several thick-slice stacks become one isotropic volume.

    Attributes:
        spacing: isotropic output spacing in mm; ``None``: the finest in-plane
            spacing of the stacks.
        region: ``mask`` (the union of the stack masks plus ``margin_mm``;
            needs masks), ``union`` (the union of the stacks' fields of view)
            or ``intersection`` (where every stack has data: far fewer voxels
            than the union for stacks in several orientations, so much faster
            without masks); ``auto``: ``mask`` when masks are given, else ``union``.
        margin_mm: margin around the masked region (or the intersection; for
            the intersection, stack voxels closer than this to the grid's edge
            do not take part).
        reference: the stack that defines the output orientation and frame
            (0-based), or ``auto`` (the first).
        registration: ``rigid`` (inter-stack, stack to volume through the
            forward model) or ``none`` (trust the headers).
        register_cycles: register-then-reconstruct cycles after the initial
            alignment to the reference stack.
        registration_iterations: optimiser steps per level and stack.
        regulariser: ``tikhonov`` (first-order, as NiftyMIC) or ``tv``
            (isotropic total variation by iteratively reweighted least squares).
        lam: regularisation weight (relative to the data term per voxel; the
            intensities are normalised so the masked 99th percentile is 1).
        cg_iterations: conjugate-gradient iterations per outer iteration.
        outer_iterations: outer iterations (slice weights, stack intensity
            scales and TV weights are updated between them).
        robust: down-weight outlier slices (Huber weights on the slice residuals).
        robust_c: slices whose residual exceeds ``robust_c`` times the median
            residual are down-weighted.
        psf_step: through-plane sampling step of the slice profile, in output voxels.
        psf_truncate: the slice profile is sampled to ``psf_truncate`` sigma.
        mask_output: set voxels outside the (dilated) masked region to 0.
        max_points: registration uses at most this many voxels per stack.
        masks: one mask file per stack, in the order of the stacks (NIfTI or
            DICOM; any grid, resampled nearest onto the stack).
        check: score the reconstruction leave-one-stack-out against the
            mean of cubic stacks and write the mean instead when it does not win.
        refine: the optional learned refinement.
    """

    spacing: float | None = Field(None, gt=0, le=20)
    region: Literal["auto", "mask", "union", "intersection"] = "auto"
    margin_mm: float = Field(8.0, ge=0, le=200)
    reference: int | Literal["auto"] = "auto"
    registration: Literal["rigid", "none"] = "rigid"
    register_cycles: int = Field(2, ge=0, le=10)
    registration_iterations: int = Field(20, ge=1, le=1000)
    regulariser: Literal["tikhonov", "tv"] = "tikhonov"
    lam: float = Field(0.1, ge=0, le=100)
    cg_iterations: int = Field(12, ge=1, le=500)
    outer_iterations: int = Field(3, ge=1, le=50)
    robust: bool = True
    robust_c: float = Field(2.0, gt=1, le=10)
    psf_step: float = Field(0.5, gt=0.05, le=2)
    psf_truncate: float = Field(2.5, gt=0.5, le=5)
    mask_output: bool = False
    max_points: int = Field(50_000, ge=1000)
    masks: list[str] | None = None
    check: bool = True
    refine: RefineOptions = Field(default_factory=RefineOptions)

    @model_validator(mode="after")
    def _reference(self) -> MultiStackOptions:
        if isinstance(self.reference, int) and self.reference < 0:
            raise located("reference", f"a 0-based stack index or 'auto', got {self.reference}")
        return self

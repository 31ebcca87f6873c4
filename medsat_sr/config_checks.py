"""The rules of a job config that need its domain profile: axes and sizes, outputs, the model and the bands.

:func:`cross_checks` gives every :class:`~medsat_sr._schema.Problem`
found, each located at the config key it is about; :func:`medsat_sr.config.load_config`
raises them together. :func:`group_ratio` is the target bands' resolution
over the guide bands'.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from medsat_sr._schema import Problem
from medsat_sr.domains import DomainProfile
from medsat_sr.errors import ConfigError

__all__ = ["cross_checks", "group_ratio"]

from medsat_sr.config_sections import _known_models

if TYPE_CHECKING:
    from medsat_sr.config import JobConfig


def group_ratio(cfg: JobConfig) -> float | None:
    """Resolution of the target bands over that of the guide bands, when both are known."""
    p = cfg.profile if cfg._profile is not None else None
    if p is None or p.bands is None or not cfg.bands.guides:
        return None
    targets = cfg.target_bands()
    if not targets:
        return None
    try:
        rt = p.resolution_of(targets)
        rg = p.resolution_of(cfg.bands.guides)
    except ConfigError:
        return None
    if rt is None or rg is None:
        return None
    return rt / rg



def cross_checks(cfg: JobConfig, p: DomainProfile) -> list[Problem]:
    """Rules that need the domain profile: axes and sizes, outputs, then the model and bands."""
    out = _axis_checks(cfg, p) + _output_checks(cfg, p)
    return out + _model_and_band_checks(cfg, p, blocking=bool(out))


def _axis_checks(cfg: JobConfig, p: DomainProfile) -> list[Problem]:
    """Scale, spacing, model dimensions, patch and tile sizes against the domain's kind and degradation."""
    out: list[Problem] = []
    raster = p.kind == "raster"
    ndim = 2 if raster else 3
    if isinstance(cfg.scale, list) and len(cfg.scale) != ndim:
        out.append(
            Problem("scale", f"a {p.kind} has {ndim} spatial axes; give {ndim} factors, got {cfg.scale}")
        )
    if cfg.target_spacing is not None and raster:
        out.append(Problem("target_spacing", "is for volumes; rasters use scale"))
    sd = cfg.model.spatial_dims
    if raster and sd == 3:
        out.append(Problem("model.spatial_dims", "rasters use 2D models, got 3"))
    dims = sd if sd is not None else ndim
    if isinstance(cfg.train.patch_size, list) and len(cfg.train.patch_size) != dims:
        out.append(
            Problem(
                "train.patch_size", f"the model is {dims}D; give {dims} sizes, got {cfg.train.patch_size}"
            )
        )
    if isinstance(cfg.inference.tile_size, list) and len(cfg.inference.tile_size) not in (
        {2} if raster else {2, 3}
    ):
        out.append(
            Problem(
                "inference.tile_size",
                f"give {'2' if raster else '2 or 3'} sizes, got {cfg.inference.tile_size}",
            )
        )
    if p.degradation.model == "slice_profile":
        if isinstance(cfg.scale, float):
            out.append(
                Problem(
                    "scale",
                    f"domain {p.name!r} degrades by slice_profile, which acts on one axis: for thick slices use "
                    f"scale: auto or a per-axis list such as [1, 1, 4]; for isotropic x{cfg.scale:g} set degradation.model: psf",
                )
            )
        elif isinstance(cfg.scale, list) and sum(f > 1 for f in cfg.scale) > 1:
            out.append(
                Problem(
                    "scale",
                    f"the slice_profile degradation acts on one axis; got factors > 1 on several: {cfg.scale}",
                )
            )
    return out + _factors_checks(cfg, p)


def _factors_checks(cfg: JobConfig, p: DomainProfile) -> list[Problem]:
    """``data.factors``: supervised slice-profile training of a network that interpolates first."""
    if not cfg.data.factors:
        return []
    why = []
    if p.degradation.model != "slice_profile":
        why.append(f"domain {p.name!r} degrades by {p.degradation.model}, not slice_profile")
    if cfg.train.mode != "supervised":
        why.append(f"train.mode is {cfg.train.mode!r}, not supervised")
    if cfg.model.kwargs.get("upsample") != "pre":
        why.append("model.kwargs needs upsample: pre")
    if not why:
        return []
    return [Problem("data.factors", "is for supervised thick-slice training of an any-factor network; " + "; ".join(why))]


def _output_checks(cfg: JobConfig, p: DomainProfile) -> list[Problem]:
    """The output format against the domain's kind."""
    out: list[Problem] = []
    raster = p.kind == "raster"
    fmt = cfg.output.format
    if raster and fmt in ("nifti", "dicom"):
        out.append(Problem("output.format", f"{fmt!r} is for volumes; rasters are written as geotiff"))
    if not raster and fmt == "geotiff":
        out.append(
            Problem("output.format", "'geotiff' is for rasters; volumes are written as nifti or dicom")
        )
    if not raster and cfg.output.cog:
        out.append(Problem("output.cog", "a COG is a raster output; the domain is a volume"))
    return out


def _model_and_band_checks(cfg: JobConfig, p: DomainProfile, *, blocking: bool) -> list[Problem]:
    """The model name and the band roles (targets, guides, their resolution ratio against the scale).

    The band-set rules need valid band names and no earlier problem (``blocking``).
    """
    out: list[Problem] = []
    raster = p.kind == "raster"
    name = cfg.model.name or p.default_model
    if name is None:
        out.append(Problem("model.name", f"required: domain {p.name!r} names no default model"))
    elif cfg.model.name is None and name not in _known_models():
        out.append(Problem("model.name", f"the domain's default model {name!r} is not available"))
    if not raster:
        if cfg.bands.targets is not None or cfg.bands.guides:
            out.append(Problem("bands", "band roles are for rasters; the domain is a volume"))
        if name == "guided":
            out.append(Problem("model.name", "the guided model is for rasters with guide bands"))
        return out
    for key in ("targets", "guides"):
        names = getattr(cfg.bands, key) or []
        for i, n in enumerate(names):
            try:
                p.expand_bands([n])
            except ConfigError as exc:
                out.append(Problem(f"bands.{key}.{i}", str(exc)))
    if out or blocking:
        return out
    targets = cfg.target_bands() or []
    guides = cfg.guide_bands()
    both = sorted(set(targets) & set(guides))
    if both:
        out.append(Problem("bands.guides", f"bands {both} are also targets"))
    if name == "guided" and not guides:
        out.append(Problem("bands.guides", "the guided model needs guide bands (e.g. guides: [10m])"))
    if guides and name != "guided":
        out.append(Problem("bands.guides", f"guide bands are used by the 'guided' model, not {name!r}"))
    ratio = group_ratio(cfg)
    if cfg.scale == "auto" and ratio is None:
        out.append(
            Problem("scale", "auto on rasters needs bands.targets and bands.guides with known resolutions")
        )
    if ratio is not None and cfg.scale != "auto":
        factors = cfg.scale if isinstance(cfg.scale, list) else [cfg.scale, cfg.scale]
        if any(abs(f - ratio) > 1e-6 for f in factors):
            out.append(
                Problem(
                    "scale",
                    f"the target bands are {ratio:g}x coarser than the guide bands; scale must be {ratio:g} (or auto), got {cfg.scale}",
                )
            )
    return out



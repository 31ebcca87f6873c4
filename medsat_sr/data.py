"""Training pairs: nodata-aware patch sampling and on-the-fly degradation.

Everything here works on images already normalised to network units
(:mod:`medsat_sr.normalise`) and degrades them with the *same* functions of
:mod:`medsat_sr.degrade` that the evaluation uses, with the parameters of
the job's domain profile. :func:`make_training_set` turns a job config plus
images into a :class:`TrainingSet`: an endless MONAI
:class:`~monai.data.IterableDataset` of training batches and a fixed list of
validation batches with their cubic baselines.

Pair makers (chosen from the config's mode, the profile's degradation model
and the data; built in :mod:`medsat_sr.pair_makers`, the sources and the
patch dataset live in :mod:`medsat_sr.pair_sources`):

* **slice-wise thick slices** (SMORE/ECLARE, :class:`SliceProfileSource`):
  2D patches cut from planes of a volume and degraded along one in-plane
  axis by :func:`~medsat_sr.degrade.slice_profile` (Gaussian or rect
  profile, FWHM = slice thickness, sampled at the slice spacing, both in
  units of the target spacing). Patches are transposed so that the degraded
  axis comes first: one 2D network with scale ``(f, 1)`` serves both
  orientations. Self-supervised, the planes are the thick volume's own
  in-plane slices; supervised, the planes of a high-resolution reference
  that contain the simulated slice axis. With an integer ``f`` the whole
  volume is degraded once and patches are cut at aligned positions (no
  patch-border effects); with a non-integer ``f`` (4.8 / 1.0156 = 4.726)
  each batch of high-resolution patches is degraded as it is drawn, the
  patch length along the degraded axis being ``round(n_lr * f)`` for the
  ``n_lr`` near ``patch_size / f`` for which ``n_lr * f`` is closest to an
  integer, and the network is called with ``output_size`` = that length.
* **aligned pairs** (:class:`AlignedSource`): a low-resolution image
  computed once for the whole image (Wald's protocol for rasters with
  :func:`~medsat_sr.degrade.psf_decimate` and the profile's per-band
  MTF; 3D Gaussian PSF + decimation for isotropic volumes; k-space
  truncation for in-plane MR; or an explicit ``data.pairs`` file) and
  patches cut at positions aligned with the integer factors. 2D patches of
  3D volumes are planes across the axis whose factor is 1.
* **guided band sets** (DSen2): every band degraded by ``s``; the network
  sees the degraded coarse bands and the degraded fine (guide) bands on the
  coarse grid, and predicts the original coarse bands.

Sampling (:class:`~medsat_sr.sampling.PatchSampler`, :mod:`medsat_sr.sampling`):
nodata-aware and foreground-favouring, from integral images; a patch is
always found when one exists.

Validation: a contiguous block is held out (never random, so neighbouring
pixels cannot leak): ``data.val_fraction`` of the slices along the thick
axis (self-supervised thick slices, a centred block), of the last spatial
axis (volumes, centred) or of the width (rasters: the right-hand strip).
Training patches keep a gap of the degradation's reach from it. Validation
batches are tiles of the block (at most a fixed number, the
foreground/valid ones), with the profile's baseline (``DomainProfile.baseline``,
:func:`medsat_sr.baselines.upsample`): cubic B-spline for volumes (exact
sample positions), GDAL cubic (or lanczos) for rasters.

Degradation: every low-resolution image or patch is
:func:`medsat_sr.degrade.degrade` (or its :class:`~medsat_sr.degrade.Recipe`)
of the profile, the one recipe that evaluation and the inference
consistency check use too.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from medsat_sr import degradation_auto, degrade
from medsat_sr.errors import ConfigError, DataError, GeometryError
from medsat_sr.image import BandSet, is_raster, is_volume, one_grid_raster
from medsat_sr.normalise import Normaliser, data_range as _data_range, valid_mask
from medsat_sr.pair_makers import (
    _aligned_source,
    _image_source,
    _target_channels,
    _check_pair_grids,
    _guided_source,
    _names,
    _prepare,
    _Prepared,
    _source_name,
    _validate_whole,
    thick_axis,
)
from medsat_sr.pair_sources import AlignedSource, PairSource, PatchPairDataset, SliceProfileSource
from medsat_sr.sampling import PatchSampler, _plain, foreground_mask, slice_lengths

__all__ = [
    "PatchSampler",
    "PairSource",
    "SliceProfileSource",
    "AlignedSource",
    "PatchPairDataset",
    "TrainingSet",
    "make_training_set",
    "slice_lengths",
    "thick_axis",
    "foreground_mask",
]

logger = logging.getLogger(__name__)

#: Validation batch size.
VAL_BATCH = 8


# =============================================================== training set
@dataclass
class TrainingSet:
    """Everything the trainer needs from the data.

    Attributes:
        kind: ``"slicewise"``, ``"aligned"`` or ``"guided"``.
        train: the endless training stream.
        val: validation batches (dicts of stacked tensors).
        val_cubic: the cubic baseline of each validation batch.
        spatial_dims, in_channels, out_channels, guide_channels, model_scale:
            the network layout.
        band_names: names of the predicted channels; ``guide_band_names``.
        normaliser: of the (first) training image's predicted channels;
            ``guide_normaliser`` of the guide bands.
        data_range: PSNR/SSIM data range in network units.
        info: how the pairs were made (recorded in the checkpoint).
    """

    kind: str
    train: PatchPairDataset
    val: list[dict[str, Any]]
    val_cubic: list[torch.Tensor]
    spatial_dims: int
    in_channels: int
    out_channels: int
    guide_channels: int
    model_scale: tuple[float, ...]
    band_names: list[str]
    normaliser: Normaliser
    data_range: float
    guide_band_names: list[str] = field(default_factory=list)
    guide_normaliser: Normaliser | None = None
    info: dict[str, Any] = field(default_factory=dict)
    sources: list[PairSource] = field(default_factory=list)


@dataclass
class _Sources:
    """The pair sources of a training set and what its first input fixes.

    Attributes:
        kind: ``"slicewise"``, ``"aligned"`` or ``"guided"``.
        train: the sources the training stream samples.
        val: the sources the validation items come from.
        first_prep: the first training image, prepared (its normaliser is the set's).
        names: names of the predicted channels (empty: from the first image).
        guide_names: names of the guide bands (guided only).
        guide_norm: the normaliser of the guide bands (guided only).
    """

    kind: str = "aligned"
    train: list[PairSource] = field(default_factory=list)
    val: list[PairSource] = field(default_factory=list)
    first_prep: _Prepared | None = None
    names: list[str] = field(default_factory=list)
    guide_names: list[str] = field(default_factory=list)
    guide_norm: Normaliser | None = None


def _pair_mode(mode: str | None, cfg: Any) -> str:
    """The pair mode: as given, else ``cfg.train.mode`` (``finetune``: its ``finetune_pairs``).

    Args:
        mode: ``"self_supervised"``, ``"supervised"`` or None.
        cfg: the job config.

    Returns:
        ``"self_supervised"`` or ``"supervised"``.

    Raises:
        ConfigError: any other mode.
    """
    if mode is None:
        mode = cfg.train.mode
        if mode == "finetune":
            mode = cfg.train.finetune_pairs or "self_supervised"
    if mode not in ("self_supervised", "supervised"):
        raise ConfigError(f"unknown pair mode {mode!r}")
    return mode


def _check_degradation(
    cfg: Any, items: Sequence[Any], *, mode: str, pairs: Sequence[tuple[Any, Any]] | None
) -> tuple[Any, dict[str, Any] | None]:
    """Estimate the degradation from the first input, or check the profile's against it (self-supervised).

    Args:
        cfg: the job config.
        items: the input images.
        mode: the pair mode.
        pairs: explicit ``(lr, hr)`` pairs, if any (then nothing is estimated or checked).

    Returns:
        The config (with the estimated degradation when one was asked for)
        and the estimate's record, or None.
    """
    estimate_rec: dict[str, Any] | None = None
    if mode == "self_supervised" and not pairs and items and degradation_auto.wants_estimate(cfg):
        cfg, estimate_rec = degradation_auto.apply_estimate(cfg, items[0])  # pairs and held-out split from it
    elif mode == "self_supervised" and not pairs and items:
        estimate_rec = degradation_auto.check_profile(cfg, items[0])  # the profile checked against the input
    return cfg, estimate_rec


def _pair_sources(pairs: Sequence[tuple[Any, Any]], cfg: Any) -> _Sources:
    """Sources from explicit ``(lr, hr)`` pairs: the last validates, or a held-out block of a single pair.

    Args:
        pairs: the explicit pairs.
        cfg: the job config.

    Returns:
        The sources (kind ``"aligned"``).

    Raises:
        GeometryError: a pair whose grids do not line up.
    """
    got = _Sources()
    nodata = cfg.profile.nodata
    n_pairs = len(pairs)
    for k, (lr_img, hr_img) in enumerate(pairs):
        factors = _check_pair_grids(lr_img, hr_img, f"data.pairs[{k}]")
        prep = _prepare(hr_img, cfg)
        lr_plain = _plain(lr_img).to(torch.float32)
        lr_valid = valid_mask(lr_plain, nodata=nodata).all(dim=0).numpy()
        lr_t = prep.normaliser.forward(lr_plain)  # the pair shares physical units
        lr_t = torch.where(torch.from_numpy(lr_valid)[None], lr_t, torch.zeros(()))
        is_val = n_pairs > 1 and k == n_pairs - 1
        src = _aligned_source(prep, cfg, holdout=n_pairs == 1, lr_image=lr_t, lr_valid=lr_valid, factors=factors)
        src.name = _source_name(hr_img)
        if is_val:
            _validate_whole(src)
            got.val.append(src)
        else:
            got.train.append(src)
            if n_pairs == 1:
                got.val.append(src)
        got.first_prep = got.first_prep or prep
    return got


def _guided_sources(items: Sequence[Any], cfg: Any) -> _Sources:
    """The source of guided training on one band set, validating on its held-out block.

    Args:
        items: the inputs (one :class:`~medsat_sr.image.BandSet`).
        cfg: the job config.

    Returns:
        The sources (kind ``"guided"``).

    Raises:
        ConfigError: more than one band set.
    """
    if len(items) != 1:
        raise ConfigError("guided training takes one band set")
    src, tp, gp, targets, guides = _guided_source(items[0], cfg, holdout=True)
    src.name = _source_name(items[0])
    return _Sources(
        kind="guided", train=[src], val=[src], first_prep=tp, names=targets, guide_names=guides,
        guide_norm=gp.normaliser,
    )


def _image_sources(items: Sequence[Any], cfg: Any, *, mode: str, validation: Sequence[Any] | None) -> _Sources:
    """Sources from volumes or rasters, with validation from held-out references or held-out blocks.

    Args:
        items: the training images.
        cfg: the job config.
        mode: the pair mode.
        validation: held-out references, if any.

    Returns:
        The sources (kind ``"slicewise"`` or ``"aligned"``).

    Raises:
        ConfigError: no images, or slice-profile training without a 2D network.
        DataError: an input that is neither a volume nor a raster, or lacks a target band.
    """
    if not items:
        raise ConfigError(f"{cfg.source}: no input images (data.inputs is empty)")
    slicewise = cfg.profile.degradation.model == "slice_profile"
    if slicewise and cfg.spatial_dims != 2:
        raise ConfigError(
            f"{cfg.source}: slice-profile (thick-slice) training uses a 2D slice network; "
            "set model.spatial_dims: 2"
        )
    got = _Sources(kind="slicewise" if slicewise else "aligned")
    val_list = list(validation or [])
    train_imgs = items
    if mode == "supervised" and not val_list and len(items) > 1:
        train_imgs, val_list = items[:-1], items[-1:]
    hold_single = mode == "self_supervised" or not val_list
    factors = _training_factors(cfg) if mode == "supervised" and slicewise else [None]
    for img in train_imgs:
        if not (is_volume(img) or is_raster(img)):
            raise DataError(f"cannot train on {type(img).__name__}; expected a volume or a raster")
        tb = cfg.target_bands()
        prep = _prepare(img, cfg, channels=_target_channels(img, tb))
        for f in factors:
            src = _image_source(prep, cfg, slicewise=slicewise, supervised=mode == "supervised", holdout=hold_single,
                                factor=f)
            src.name = _source_name(img)
            got.train.append(src)
            if hold_single:
                got.val.append(src)
        if got.first_prep is None:
            got.first_prep = prep
            got.names = list(tb) if tb else _names(img, prep.data.shape[0])
    for img in val_list:
        prep = _prepare(img, cfg)
        for f in factors:
            src = _image_source(prep, cfg, slicewise=slicewise, supervised=True, holdout=False, factor=f)
            src.name = _source_name(img)
            _validate_whole(src)
            got.val.append(src)
    return got


def _training_factors(cfg: Any) -> list[float | None]:
    """The through-plane factors of supervised slice-profile pairs: ``None`` (the config's) first, then ``data.factors``.

    The first source sets the network's nominal scale, so the config's own
    factor leads; the others are drawn as often (:class:`PatchPairDataset`).
    """
    extra = [float(f) for f in (cfg.data.factors or [])]
    own = [float(f) for f in cfg.scale if float(f) > 1.0] if isinstance(cfg.scale, list) else []
    return [None] + [f for f in extra if not (own and abs(f - own[0]) < 1e-6)]


def _check_layout(sources: Sequence[PairSource], val_sources: Sequence[PairSource], *,
                  multi_factor: bool = False) -> PairSource:
    """Check that all sources share one network layout and the training ones one scale.

    Args:
        sources: the training sources.
        val_sources: the validation sources.
        multi_factor: the sources hold several factors on purpose (``data.factors``).

    Returns:
        The reference source: the first training source, else the first validation one.

    Raises:
        DataError: differing channel layouts or scale factors.
    """
    ref = sources[0] if sources else val_sources[0]
    for s in [*sources, *val_sources]:
        if (s.spatial_dims, s.in_channels, s.out_channels, s.guide_channels) != (
            ref.spatial_dims, ref.in_channels, ref.out_channels, ref.guide_channels
        ):
            raise DataError("the inputs do not share one channel layout; train on images of one kind")
    if len(sources) > 1 and not multi_factor:
        scales = {tuple(round(f, 6) for f in s.model_scale) for s in sources}
        if len(scales) > 1:
            raise DataError(f"the inputs need different scale factors {sorted(scales)}; train on one kind of scan")
    return ref


def _validation_batches(
    val_sources: Sequence[PairSource], cfg: Any
) -> tuple[list[dict[str, Any]], list[torch.Tensor], int]:
    """The validation batches and their cubic baselines.

    Args:
        val_sources: the validation sources.
        cfg: the job config.

    Returns:
        The batches, the cubic baseline of each, and the number of validation items.

    Raises:
        DataError: no validation item (too little valid data).
    """
    val_items: list[dict[str, Any]] = []
    cubic: list[torch.Tensor] = []
    for s in val_sources:
        for it in s.val_items():
            val_items.append(it)
            cubic.append(s.cubic(it))
    if not val_items:
        raise _no_validation(val_sources, cfg)
    val_batches, cubic_batches = _batch_val(val_items, cubic)
    return val_batches, cubic_batches, len(val_items)


def _training_info(
    ref: PairSource, cfg: Any, *, mode: str, kind: str, n_val: int, data_range: float,
    estimate_rec: dict[str, Any] | None, factors: list[float] | None = None,
) -> dict[str, Any]:
    """How the pairs were made, as recorded in the checkpoint.

    Args:
        ref: the reference source (its ``info`` comes first).
        cfg: the job config.
        mode: the pair mode.
        kind: the training set's kind.
        n_val: the number of validation items.
        data_range: the PSNR/SSIM data range in network units.
        estimate_rec: the degradation estimate or check, or None.
        factors: the through-plane factors of a multi-factor training set (``data.factors``), or None.

    Returns:
        The info mapping.
    """
    info = dict(getattr(ref, "info", {}))
    info.update({
        "mode": mode,
        "kind": kind,
        "val_items": n_val,
        "val_fraction": float(cfg.data.val_fraction),
        "data_range": data_range,
        "min_valid_fraction": float(cfg.data.min_valid_fraction),
        "background_probability": float(cfg.data.background_probability),
    })
    if factors is not None:
        info["factors"] = factors
    if estimate_rec is not None:
        info["degradation_estimate"] = estimate_rec
    return info


def make_training_set(
    images: Any,
    cfg: Any,
    *,
    mode: str | None = None,
    validation: Sequence[Any] | None = None,
    pairs: Sequence[tuple[Any, Any]] | None = None,
    seed: int | None = None,
) -> TrainingSet:
    """Build the training stream and validation batches for a job.

    Args:
        images: a volume or raster (MetaTensor), a BandSet (guided), or a
            list of them (supervised references).
        cfg: the :class:`~medsat_sr.config.JobConfig`.
        mode: ``"self_supervised"`` or ``"supervised"``; default from
            ``cfg.train.mode`` (``finetune`` uses ``train.finetune_pairs``).
        validation: held-out references (supervised); default: the last of
            several inputs, or a held-out block of a single one.
        pairs: explicit ``(lr, hr)`` images (supervised).
        seed: stream seed (default ``cfg.train.seed``).

    Returns:
        The :class:`TrainingSet`.

    Raises:
        ConfigError: a combination of data, mode and degradation that is not supported.
        DataError: no usable patch or no validation tile.
        GeometryError: explicit pairs whose grids do not line up.
    """
    mode = _pair_mode(mode, cfg)
    items = list(images) if isinstance(images, (list, tuple)) else ([] if images is None else [images])
    if not cfg.guided():  # a band folder of one grid is a multi-band raster
        items = [one_grid_raster(i) for i in items]
    cfg, estimate_rec = _check_degradation(cfg, items, mode=mode, pairs=pairs)
    seed = int(cfg.train.seed if seed is None else seed)
    if pairs:
        got = _pair_sources(pairs, cfg)
    elif items and isinstance(items[0], BandSet):
        got = _guided_sources(items, cfg)
    else:
        got = _image_sources(items, cfg, mode=mode, validation=validation)
    first_prep = got.first_prep
    if first_prep is None:
        raise ConfigError(f"{cfg.source}: no training data")
    names = got.names or _names(first_prep.image, first_prep.data.shape[0])
    ref = _check_layout(got.train, got.val, multi_factor=bool(cfg.data.factors))
    val_batches, cubic_batches, n_val = _validation_batches(got.val, cfg)
    refs = torch.cat([b["label"].reshape(-1) for b in val_batches])
    dr = _data_range(cfg.profile.metrics, refs, first_prep.normaliser)
    train = PatchPairDataset(got.train, cfg.train.batch_size, seed=seed)
    factors = sorted({round(float(s.factor), 6) for s in got.train}) if cfg.data.factors else None
    info = _training_info(ref, cfg, mode=mode, kind=got.kind, n_val=n_val, data_range=dr, estimate_rec=estimate_rec,
                          factors=factors)
    return TrainingSet(
        kind=got.kind,
        train=train,
        val=val_batches,
        val_cubic=cubic_batches,
        spatial_dims=ref.spatial_dims,
        in_channels=ref.in_channels,
        out_channels=ref.out_channels,
        guide_channels=ref.guide_channels,
        model_scale=tuple(ref.model_scale),
        band_names=names,
        normaliser=first_prep.normaliser,
        data_range=float(dr),
        guide_band_names=got.guide_names,
        guide_normaliser=got.guide_norm,
        info=info,
        sources=got.train,
    )


def _no_validation(sources: Sequence[PairSource], cfg: Any) -> DataError:
    """The error when no validation tile has enough valid pixels: the file, the fractions and the option."""
    need = float(cfg.data.min_valid_fraction)
    src = sources[0] if sources else None
    name = (src.name if src is not None else None) or "the input"
    sampler = getattr(src, "sampler", None)
    whole = ""
    if sampler is not None:
        whole = f"{float(sampler._sat_valid.flat[-1]) / float(np.prod(sampler.shape)):.0%} of the image, "
    best = max((s.val_best_fraction for s in sources), default=0.0)
    hint = max(0.05, math.floor(best * 20) / 20) if best > 0 else None
    fix = f"--set data.min_valid_fraction={hint:g}" if hint is not None and hint < need else "a larger data.val_fraction"
    return DataError(
        f"{name}: too little valid data for a validation split: valid pixels {whole}{best:.0%} of the best "
        f"held-out tile, {need:.0%} needed (data.min_valid_fraction); try {fix}"
    )


def _batch_val(items: list[dict[str, Any]], cubic: list[torch.Tensor]) -> tuple[list[dict[str, Any]], list[torch.Tensor]]:
    """Group validation items of one shape into batches of at most :data:`VAL_BATCH`."""
    groups: dict[tuple[Any, ...], list[int]] = {}
    for i, it in enumerate(items):
        key = tuple((k, tuple(v.shape)) for k, v in sorted(it.items()) if isinstance(v, torch.Tensor))
        key += (tuple(it.get("output_size") or ()),)
        groups.setdefault(key, []).append(i)
    batches, cubics = [], []
    for idx in groups.values():
        for j in range(0, len(idx), VAL_BATCH):
            chunk = idx[j : j + VAL_BATCH]
            b: dict[str, Any] = {
                k: torch.stack([items[i][k] for i in chunk]).contiguous()
                for k, v in items[chunk[0]].items()
                if isinstance(v, torch.Tensor)
            }
            if "output_size" in items[chunk[0]]:
                b["output_size"] = tuple(items[chunk[0]]["output_size"])
            batches.append(b)
            cubics.append(torch.stack([cubic[i] for i in chunk]))
    return batches, cubics

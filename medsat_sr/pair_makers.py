"""Pair makers: an image normalised with its masks, and the training-pair sources built from it.

:func:`medsat_sr.data.make_training_set` chooses the maker from the job config's mode, the
profile's degradation model and the data (see :mod:`medsat_sr.data` for the three kinds:
slice-wise thick slices, aligned pairs, guided band sets); the sources and the patch dataset
themselves are :mod:`medsat_sr.pair_sources`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from medsat_sr import degrade
from medsat_sr.errors import ConfigError, DataError, GeometryError, numbers_text
from medsat_sr.geometry import scale_affine, scale_transform
from medsat_sr.image import BandSet, Key, is_raster, is_volume
from medsat_sr.normalise import Normaliser, valid_mask
from medsat_sr.pair_sources import AlignedSource, PairSource, SliceProfileSource
from medsat_sr.sampling import _ints, _is_int, _plain, foreground_mask

__all__ = ["thick_axis"]

logger = logging.getLogger("medsat_sr.data")


def thick_axis(spacing: Sequence[float], spec_axis: Any = "thickest") -> int:
    """The through-plane axis: ``spec_axis`` when it is 0, 1 or 2, else the largest spacing."""
    if isinstance(spec_axis, int) and not isinstance(spec_axis, bool):
        return int(spec_axis)
    return int(np.argmax(np.asarray(spacing, dtype=np.float64)))


@dataclass
class _Prepared:
    """An image normalised with its masks."""

    data: torch.Tensor  # network units, invalid pixels set to 0
    valid: np.ndarray  # spatial
    foreground: np.ndarray | None
    normaliser: Normaliser
    image: Any


def _prepare(image: Any, cfg: Any, *, normaliser: Normaliser | None = None, channels: Sequence[int] | None = None) -> _Prepared:
    p = cfg.profile
    t = _plain(image)
    if not t.is_floating_point():
        t = t.to(torch.float32)
    if channels is not None:
        t = t[list(channels)]
    if normaliser is None:
        sub = image
        if channels is not None and hasattr(image, "meta"):
            sub = image[list(channels)]
            sub.meta = dict(image.meta)
            for k in (Key.SCALES, Key.OFFSETS):
                if sub.meta.get(k) is not None:
                    sub.meta[k] = [sub.meta[k][i] for i in channels]
        nodata = p.nodata if (getattr(image, "meta", {}) or {}).get(Key.NODATA) is None else None
        try:
            normaliser = Normaliser.fit(sub, p.normalisation, nodata=nodata)
        except DataError as exc:  # an empty or all-nodata input: say which
            name = _source_name(image)
            if name is None or name in str(exc):
                raise
            raise DataError(f"{name}: {exc}") from exc
    meta = dict(getattr(image, "meta", None) or {})
    vm = valid_mask(t, nodata=meta.get(Key.NODATA) if meta.get(Key.NODATA) is not None else p.nodata,
                    mask=meta.get("valid_mask"))
    y = normaliser.forward(t.to(torch.float32))
    y = torch.where(vm, y, torch.zeros((), dtype=y.dtype))
    fg = foreground_mask(t, y, p.metrics.mask, vm)
    return _Prepared(y.contiguous(), vm.all(dim=0).cpu().numpy(), fg, normaliser, image)


def _sampling(cfg: Any) -> dict[str, float]:
    return {
        "min_valid_fraction": float(cfg.data.min_valid_fraction),
        "background_probability": float(cfg.data.background_probability),
    }


def _noise(cfg: Any) -> tuple[str, float] | None:
    n = cfg.profile.degradation.noise
    return None if n.model == "none" or n.sigma <= 0 else (n.model, float(n.sigma))


def _baseline(profile: Any) -> str:
    """The profile's baseline (``DomainProfile.baseline``); without one: B-spline for volumes, GDAL cubic for rasters."""
    name = getattr(profile, "baseline", None)
    if name:
        return str(name)
    return "gdal_cubic" if profile.kind == "raster" else "bspline"


def _lowres(x: torch.Tensor, cfg: Any, factors: Sequence[float], names: Sequence[str] | None,
            valid: np.ndarray | None = None) -> tuple[torch.Tensor, np.ndarray | None]:
    """The profile's degradation of ``(C, *spatial)`` (:func:`medsat_sr.degrade.degrade`) and its valid mask."""
    try:
        res = degrade.degrade(x, cfg.profile, list(factors), bands=names,
                              valid=None if valid is None else np.asarray(valid, dtype=bool))
    except ConfigError as exc:
        raise ConfigError(f"{cfg.source}: {exc}") from exc
    return res if valid is not None else (res, None)


def _gap(cfg: Any, factors: Sequence[float]) -> int:
    p = cfg.profile
    try:
        sigma = p.psf_sigma(max(factors))
    except ConfigError:
        sigma = max(factors) / 2
    return int(math.ceil(4.0 * sigma))


def _holdout_spec(cfg: Any, axis: int, kind: str) -> tuple[int, float, str] | None:
    frac = float(cfg.data.val_fraction)
    if frac <= 0:
        return None
    return (axis, frac, "end" if kind == "raster" else "centre")


def _names(image: Any, n: int) -> list[str]:
    meta = getattr(image, "meta", None) or {}
    names = meta.get(Key.BAND_NAMES)
    return list(names) if names and len(names) == n else [f"ch{i}" for i in range(n)]


def _slicewise_source(prep: _Prepared, cfg: Any, *, supervised: bool, holdout: bool,
                      factor: float | None = None) -> SliceProfileSource:
    """Slice-profile pairs of one volume; ``factor`` (supervised) replaces the config's through-plane factor."""
    image = prep.image
    p = cfg.profile
    spec = p.degradation.slice_profile
    spacing = [float(s) for s in image.meta[Key.SPACING]]
    ps = _ints(cfg.train.patch_size, 2, "train.patch_size")
    scale = cfg.scale_for(spacing)
    if supervised:
        ups = [i for i, f in enumerate(scale) if f > 1.0 + 1e-6]
        if len(ups) != 1:
            raise ConfigError(
                f"{cfg.source}: supervised slice-profile training needs one axis with a factor > 1 "
                f"(e.g. scale: [1, 1, 4]), got {numbers_text(scale)}"
            )
        t = ups[0]
        if factor is not None:
            scale = [float(v) for v in scale]
            scale[t] = float(factor)
        target = spacing[t]
        # the reference is the high-resolution volume; its thick slices are simulated: no thickness to read
        rec = degrade.recipe(p, [float(v) for v in scale], spacing=spacing)
        a, b = [i for i in range(3) if i != t]
        views = [(t, b, a), (t, a, b)]
        hold_axis = a
    else:
        t = thick_axis(spacing, spec.axis)
        f_scale = float(scale[t])
        if f_scale <= 1.0:
            raise ConfigError(
                f"{cfg.source}: self-supervised thick-slice training needs a through-plane factor > 1 on axis {t}, "
                f"got scale {numbers_text(scale)} for spacing {numbers_text(spacing)} mm"
            )
        target = spacing[t] / f_scale
        inplane = [spacing[i] for i in range(3) if i != t]
        if max(inplane) > 1.05 * min(inplane):
            logger.warning(
                "in-plane spacing %s is anisotropic; slice-wise pairs treat both in-plane axes as %.4g mm",
                inplane, target,
            )
        # the high-resolution signal is the in-plane one, at the target spacing; slices as the header says
        facs = [1.0, 1.0, 1.0]
        facs[t] = spacing[t] / target
        rec = degrade.recipe(p, facs, spacing=[target] * 3, thickness=degrade.slice_thickness(image, t))
        if abs(rec.factors[t] - f_scale) > 1e-3 * f_scale:
            logger.warning(
                "slice spacing %.4g mm over target %.4g mm gives factor %.4g, not the scale %.4g; "
                "training pairs use %.4g", rec.factors[t] * target, target, rec.factors[t], f_scale, rec.factors[t],
            )
        a, b = [i for i in range(3) if i != t]
        views = [(a, b, t), (b, a, t)]
        hold_axis = t
    f, thick = float(rec.slice_spacing or 0.0), float(rec.slice_fwhm or 0.0)
    src = SliceProfileSource(
        prep.data, prep.valid, prep.foreground,
        views=views, factor=f, thickness=thick, profile=rec.slice_shape, patch_size=(ps[0], ps[1]),
        holdout=_holdout_spec(cfg, hold_axis, "volume") if holdout else None,
        noise=_noise(cfg), **_sampling(cfg),
    )
    src.info = {
        "pairs": "slice_profile",
        "thick_axis": t,
        "factor": f,
        "slice_thickness_px": thick,
        "slice_spacing_px": f,
        "target_spacing_mm": target,
        "profile": rec.slice_shape,
        "degradation": rec.describe(),
        "patch_hr": [src.n_hr, src.width],
        "patch_lr": [src.n_lr, src.width],
        "views": [list(v) for v in views],
        "degraded_axis_first": True,
    }
    return src


def _aligned_source(prep: _Prepared, cfg: Any, *, holdout: bool, lr_image: torch.Tensor | None = None,
                    lr_valid: np.ndarray | None = None, factors: Sequence[float] | None = None) -> AlignedSource:
    """Aligned pairs: psf/kspace degradation of ``prep`` (or an explicit low-res image)."""
    p = cfg.profile
    x = prep.data
    nd = x.ndim - 1
    kind = "raster" if p.kind == "raster" else "volume"
    meta = getattr(prep.image, "meta", None) or {}
    if factors is None:
        spacing = meta.get(Key.SPACING) if kind == "volume" else None
        factors = cfg.scale_for(spacing)
    factors = [float(f) for f in factors]
    if len(factors) != nd:
        raise ConfigError(f"{cfg.source}: scale {numbers_text(factors)} does not fit an image with {nd} spatial axes")
    if not all(_is_int(f) for f in factors):
        raise ConfigError(
            f"{cfg.source}: {p.degradation.model!r} pairs need integer factors per axis, got {numbers_text(factors)}; "
            "non-integer factors are supported for slice-profile (thick-slice) pairs"
        )
    ints = [int(round(f)) for f in factors]
    sd = cfg.spatial_dims
    plane_axis: int | None = None
    if sd == 2 and nd == 3:
        ones = [i for i, f in enumerate(ints) if f == 1]
        if not ones:
            raise ConfigError(
                f"{cfg.source}: a 2D network on volumes needs an axis with factor 1 to cut planes across "
                f"(scale {factors}); use model.spatial_dims: 3"
            )
        plane_axis = ones[-1]
    valid = prep.valid
    names = _names(prep.image, x.shape[0])
    if lr_image is None:
        lr, lr_mask = _lowres(x, cfg, ints, names, valid)  # psf or kspace (slice_profile never reaches here)
        noise = _noise(cfg)
        if noise is not None:
            lr = degrade.add_noise(lr, sigma=noise[1], kind=noise[0],
                                   generator=torch.Generator().manual_seed(int(cfg.train.seed)))
    else:
        lr, lr_mask = lr_image, lr_valid
    if lr_mask is not None:  # a pixel is valid only if its low-res footprint is
        up = np.asarray(lr_mask, dtype=bool)
        for a, f in enumerate(ints):
            up = np.repeat(up, f, axis=a)
        sl = tuple(slice(0, min(n, m)) for n, m in zip(valid.shape, up.shape))
        v2 = np.zeros_like(valid)
        v2[sl] = valid[sl] & up[sl]
        valid = v2
    hold_axis = (nd - 1) if plane_axis is None else plane_axis
    ps = cfg.train.patch_size
    src = AlignedSource(
        x, lr, valid, None if prep.foreground is None else prep.foreground & valid,
        factors=ints, patch_size=ps, plane_axis=plane_axis,
        holdout=_holdout_spec(cfg, hold_axis, kind) if holdout else None,
        gap=_gap(cfg, ints) if lr_image is None else 0,
        baseline=_baseline(p), **_sampling(cfg),
    )
    src.info = {
        "pairs": "explicit" if lr_image is not None else p.degradation.model,
        "factors": ints,
        "plane_axis": plane_axis,
        "patch_hr": list(src.size),
    }
    return src


def _guided_source(bandset: BandSet, cfg: Any, *, holdout: bool) -> tuple[AlignedSource, _Prepared, _Prepared, list[str], list[str]]:
    targets = cfg.target_bands()
    guides = cfg.guide_bands()
    if not targets or not guides:
        raise ConfigError(f"{cfg.source}: guided training needs bands.targets and bands.guides")

    def gather(names: list[str], what: str) -> Any:
        for img in bandset.groups.values():
            have = list(img.meta[Key.BAND_NAMES])
            if all(n in have for n in names):
                return img, [have.index(n) for n in names]
        raise DataError(
            f"{bandset.source_path or 'band set'}: no band group holds all {what} bands {names}; "
            f"groups: { {k: list(v.meta[Key.BAND_NAMES]) for k, v in bandset.groups.items()} }"
        )

    t_img, t_idx = gather(targets, "target")
    g_img, g_idx = gather(guides, "guide")
    tp = _prepare(t_img, cfg, channels=t_idx)
    gp = _prepare(g_img, cfg, channels=g_idx)
    s = float(cfg.scale_for()[0])
    if not _is_int(s):
        raise ConfigError(f"{cfg.source}: guided training needs an integer scale, got {s}")
    si = int(round(s))
    th, tw = tp.data.shape[1:]
    gh, gw = gp.data.shape[1:]
    if abs(gh - th * si) > si or abs(gw - tw * si) > si:
        raise GeometryError(
            f"guide bands {tuple(gp.data.shape)} are not {si}x the target bands {tuple(tp.data.shape)}"
        )
    # crop both to whole multiples so that the grids line up exactly
    th2, tw2 = min(th, gh // si), min(tw, gw // si)
    tdata, tvalid = tp.data[:, :th2, :tw2], tp.valid[:th2, :tw2]
    gdata, gvalid = gp.data[:, : th2 * si, : tw2 * si], gp.valid[: th2 * si, : tw2 * si]
    guide_lr, guide_mask = _lowres(gdata, cfg, [si, si], guides, gvalid)
    target_lr, target_mask = _lowres(tdata, cfg, [si, si], targets, tvalid)
    valid = tvalid & (guide_mask if guide_mask is not None else True)
    up = np.repeat(np.repeat(target_mask, si, 0), si, 1)[: valid.shape[0], : valid.shape[1]]
    v2 = np.zeros_like(valid)
    v2[: up.shape[0], : up.shape[1]] = valid[: up.shape[0], : up.shape[1]] & up
    src = AlignedSource(
        tdata, target_lr, v2, None if tp.foreground is None else tp.foreground[:th2, :tw2] & v2,
        factors=[si, si], patch_size=cfg.train.patch_size, guide=guide_lr,
        holdout=_holdout_spec(cfg, 1, "raster") if holdout else None,
        gap=_gap(cfg, [si, si]), baseline=_baseline(cfg.profile), **_sampling(cfg),
    )
    src.info = {"pairs": "guided_wald", "factors": [si, si], "patch_hr": list(src.size)}
    return src, tp, gp, targets, guides


def _validate_whole(src: PairSource) -> None:
    """Make a source that only validates hold out its whole extent."""
    if isinstance(src, SliceProfileSource):
        ax = src.views[0][2]
        src.holdout_axis = ax
        src.val_interval = (0, int(src.volume.shape[1 + ax]))
    elif isinstance(src, AlignedSource):
        nd = len(src.factors)
        ax = nd - 1 if src.plane_axis is None else src.plane_axis
        src.holdout_axis = ax
        src.val_interval = (0, (int(src.hr.shape[1 + ax]) // src.factors[ax]) * src.factors[ax])


def _check_pair_grids(lr: Any, hr: Any, where: str) -> list[float]:
    """Per-axis integer factors of an explicit pair, with the grids checked to line up."""
    if is_volume(lr) != is_volume(hr) or is_raster(lr) != is_raster(hr):
        raise GeometryError(f"{where}: the low- and high-resolution files are not the same kind of image")
    ls, hs = tuple(lr.shape[1:]), tuple(hr.shape[1:])
    if lr.shape[0] != hr.shape[0]:
        raise GeometryError(f"{where}: {lr.shape[0]} channels in the low-resolution file, {hr.shape[0]} in the high")
    factors = [h / l for h, l in zip(hs, ls)]
    if is_volume(hr):
        expect = scale_affine(np.asarray(lr.affine, dtype=np.float64), factors)
        got = np.asarray(hr.affine, dtype=np.float64)
        tol = 1e-3 * float(np.min(np.abs(np.linalg.svd(got[:3, :3])[1])))
        err = float(np.abs(expect - got).max())
    else:
        expect = np.asarray(scale_transform(lr.meta[Key.TRANSFORM], factors))
        got = np.asarray(hr.meta[Key.TRANSFORM])
        tol = 1e-3 * float(min(abs(got[0]), abs(got[4]) or abs(got[3])) or 1.0)
        err = float(np.abs(expect - got).max())
    if err > tol:
        raise GeometryError(
            f"{where}: the high-resolution grid is not the low-resolution grid upscaled by {factors} "
            f"(max difference {err:.3g}, tolerance {tol:.3g}); the pair does not line up"
        )
    return factors


def _source_name(image: Any) -> str | None:
    """The file an image was read from, when known."""
    path = getattr(image, "source_path", None)
    if path is None:
        path = (getattr(image, "meta", None) or {}).get(Key.SOURCE_PATH)
    return None if path is None else str(path)
def _target_channels(img: Any, bands: Sequence[str]) -> list[int] | None:
    """The channel indices of the target bands in a raster, or None to use every channel.

    Args:
        img: a volume or raster.
        bands: the config's target band names (empty: all).

    Returns:
        The indices, in the order of ``bands``, or None.

    Raises:
        DataError: a target band that the raster lacks.
    """
    if not (bands and is_raster(img)):
        return None
    have = list(img.meta[Key.BAND_NAMES])
    missing = [b for b in bands if b not in have]
    if missing:
        raise DataError(f"{img.meta.get(Key.SOURCE_PATH)}: no band(s) {missing}; bands are {have}")
    return [have.index(b) for b in bands]


def _image_source(prep: _Prepared, cfg: Any, *, slicewise: bool, supervised: bool, holdout: bool,
                  factor: float | None = None) -> PairSource:
    """One prepared image's source: slice-profile (thick slices) or aligned.

    Args:
        prep: the prepared image.
        cfg: the job config.
        slicewise: whether the degradation is a slice profile.
        supervised: supervised pairs (slice-profile only).
        holdout: whether the source holds out a validation block.
        factor: the through-plane factor of supervised slice-profile pairs (default: the config's).

    Returns:
        The source.
    """
    if slicewise:
        return _slicewise_source(prep, cfg, supervised=supervised, holdout=holdout, factor=factor)
    return _aligned_source(prep, cfg, holdout=holdout)

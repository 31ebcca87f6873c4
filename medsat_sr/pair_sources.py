"""(LR, HR) patch sources and the patch dataset: the pair makers of training.

A :class:`PairSource` turns one prepared image into training batches and
validation items (with their baseline):

* **slice-wise thick slices** (SMORE/ECLARE, :class:`SliceProfileSource`):
  2D patches cut from planes of a volume and degraded along one in-plane
  axis by :func:`~medsat_sr.degrade.slice_profile` (Gaussian or rect
  profile, FWHM = slice thickness, sampled at the slice spacing, both in
  units of the target spacing). Patches are transposed so that the degraded
  axis comes first: one 2D network with scale ``(f, 1)`` serves both
  orientations. With an integer ``f`` the whole volume is degraded once and
  patches are cut at aligned positions; with a non-integer ``f`` each batch
  of high-resolution patches is degraded as it is drawn
  (:func:`~medsat_sr.sampling.slice_lengths` sizes the patches).
* **aligned pairs** (:class:`AlignedSource`): a low-resolution image
  computed once for the whole image (or given), patches cut at positions
  aligned with the integer factors; 2D patches of 3D volumes are planes
  across the axis whose factor is 1; guided band sets add the guide bands.

:class:`PatchPairDataset` is the endless MONAI
:class:`~monai.data.IterableDataset` of batches drawn from the sources.
Positions and held-out blocks come from :mod:`medsat_sr.sampling`.

Used by :mod:`medsat_sr.data`, which builds the sources from a job config
(:func:`medsat_sr.data.make_training_set`) and re-exports these names.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.data import IterableDataset

from medsat_sr import baselines, degrade
from medsat_sr.errors import DataError, GeometryError
from medsat_sr.sampling import PatchSampler, _axis_share, _holdout, _ints, _is_int, _plain, slice_lengths

__all__ = [
    "PairSource",
    "SliceProfileSource",
    "AlignedSource",
    "PatchPairDataset",
]

#: Most validation tiles (2D) and blocks (3D).
MAX_VAL_ITEMS_2D = 24
MAX_VAL_ITEMS_3D = 8
#: Largest validation tile edge (2D) and block edge (3D), pixels.
MAX_VAL_TILE_2D = 192
MAX_VAL_TILE_3D = 64


# =============================================================== sources
class PairSource:
    """One image's training pairs. Subclasses implement :meth:`train_batch` and :meth:`val_items`.

    Attributes:
        spatial_dims: the network's spatial dimensions.
        in_channels: channels of the network input (coarse bands for the guided net).
        out_channels: channels predicted.
        guide_channels: guide bands (guided net), else 0.
        model_scale: per-axis scale of the network.
        weight: relative sampling weight (accepted positions).
    """

    spatial_dims: int
    in_channels: int
    out_channels: int
    guide_channels: int = 0
    model_scale: tuple[float, ...]
    weight: float = 1.0
    #: The file the pairs come from (for error messages), when known.
    name: str | None = None
    #: The largest valid fraction of a validation tile seen by :meth:`val_items`.
    val_best_fraction: float = 0.0
    #: How the pairs are made (recorded in the checkpoint's ``task``).
    info: dict[str, Any]

    def train_batch(self, n: int, rng: np.random.Generator) -> dict[str, Any]:  # pragma: no cover - abstract
        """A batch ``{"image", "label"[, "guide"][, "output_size"]}`` of ``n`` random pairs."""
        raise NotImplementedError

    def val_items(self) -> list[dict[str, torch.Tensor]]:  # pragma: no cover - abstract
        """The validation pairs (unbatched) of the held-out block."""
        raise NotImplementedError

    def cubic(self, item: Mapping[str, Any]) -> torch.Tensor:  # pragma: no cover - abstract
        """The cubic baseline of a validation item, on its label's grid."""
        raise NotImplementedError


class SliceProfileSource(PairSource):
    """2D patches of a volume's planes, degraded along one in-plane axis by the slice profile.

    Args:
        volume: normalised ``(C, X, Y, Z)``; nodata filled.
        valid: boolean ``(X, Y, Z)``.
        foreground: boolean ``(X, Y, Z)`` or ``None``.
        views: ``(degraded_axis, other_axis, slice_axis)`` triples of spatial axes.
        factor: slice spacing / target spacing (``f``, may be non-integer).
        thickness: profile FWHM in target-spacing pixels.
        profile: ``"gaussian"`` or ``"rect"``.
        patch_size: ``(along the degraded axis, along the other axis)`` in
            high-resolution pixels (the first is adjusted by :func:`slice_lengths`).
        holdout: ``(axis, fraction, where)``: contiguous block held out for validation.
        min_valid_fraction, background_probability: sampling (:class:`PatchSampler`).
        noise: ``(kind, sigma)`` added to low-resolution patches, or ``None``.
    """

    def __init__(
        self,
        volume: torch.Tensor,
        valid: np.ndarray,
        foreground: np.ndarray | None,
        *,
        views: Sequence[tuple[int, int, int]],
        factor: float,
        thickness: float,
        profile: str = "gaussian",
        patch_size: tuple[int, int] = (48, 48),
        holdout: tuple[int, float, str] | None = None,
        min_valid_fraction: float = 0.5,
        background_probability: float = 0.1,
        noise: tuple[str, float] | None = None,
    ) -> None:
        self.info = {}
        self.volume = _plain(volume).to(torch.float32).contiguous()
        if self.volume.ndim != 4:
            raise DataError(f"slice-wise pairs need a volume (C, X, Y, Z), got shape {tuple(self.volume.shape)}")
        self.views = [tuple(int(a) for a in v) for v in views]
        self.factor = float(factor)
        self.thickness = float(thickness)
        self.profile = profile
        self.noise = noise
        self.spatial_dims = 2
        self.in_channels = self.out_channels = int(self.volume.shape[0])
        self.model_scale = (self.factor, 1.0)
        self.integer = _is_int(self.factor)
        shape = tuple(self.volume.shape[1:])
        limit = min(shape[v[0]] for v in self.views)
        self.n_lr, self.n_hr = slice_lengths(patch_size[0], self.factor, limit=limit)
        self.width = min(int(patch_size[1]), min(shape[v[1]] for v in self.views))
        self.recipe = degrade.Recipe(
            model="slice_profile", factors=(self.factor,), axis=0, slice_shape=profile,
            slice_spacing=self.factor, slice_fwhm=self.thickness,
        )
        sigma = degrade.fwhm_to_sigma(self.thickness) if profile == "gaussian" else self.thickness / 2
        gap = int(math.ceil(4.0 * sigma + self.factor))
        self.val_interval: tuple[int, int] | None = None
        region: list[list[tuple[int, int]] | None] = [None, None, None]
        if holdout is not None and holdout[1] > 0:
            ax, frac, where = holdout
            self.val_interval, train = _holdout(shape[ax], frac, where, gap if ax != self.views[0][2] else 0,
                                                valid_share=_axis_share(valid, ax), need=min_valid_fraction)
            region[ax] = train
            self.holdout_axis = ax
        else:
            self.holdout_axis = None
        self.sampler = PatchSampler(
            valid, foreground, min_valid_fraction=min_valid_fraction,
            background_probability=background_probability, region=region,
        )
        self._valid = np.asarray(valid, dtype=bool)
        self._fg = None if foreground is None else np.asarray(foreground, dtype=bool)
        self.val_best_fraction = 0.0
        # integer factor: degrade the whole volume once per degraded axis, cut aligned patches
        self._lr: dict[int, torch.Tensor] = {}
        if self.integer:
            for deg in sorted({v[0] for v in self.views}):
                self._lr[deg] = self.degrade(self.volume, axis=1 + deg)
        avail = np.array([self.sampler.available(self._box(v), self._step(v)) for v in self.views], dtype=np.float64)
        self.weight = float(avail.sum())
        # views are drawn in proportion to their accepted positions (a view may have none)
        self._view_p = avail / avail.sum() if avail.sum() > 0 else np.full(len(self.views), 1.0 / len(self.views))

    # ----------------------------------------------------------------- pieces
    def degrade(self, x: torch.Tensor, axis: int) -> torch.Tensor:
        """The profile's slice profile across tensor ``axis`` of ``(C, *spatial)`` (:attr:`recipe`)."""
        return self.recipe.on_axis(axis - 1, x.ndim - 1).apply(x)[0]

    def _box(self, view: tuple[int, int, int], n_hr: int | None = None, width: int | None = None) -> tuple[int, ...]:
        size = [1, 1, 1]
        size[view[0]] = self.n_hr if n_hr is None else n_hr
        size[view[1]] = self.width if width is None else width
        return tuple(size)

    def _step(self, view: tuple[int, int, int]) -> tuple[int, ...] | None:
        if not self.integer:
            return None
        step = [1, 1, 1]
        step[view[0]] = int(round(self.factor))
        return tuple(step)

    @staticmethod
    def _plane(t: torch.Tensor, view: tuple[int, int, int], start: Sequence[int], size: Sequence[int]) -> torch.Tensor:
        """Cut ``(C, size[deg], size[other])`` with the degraded axis first."""
        sl = [slice(None)] + [slice(int(s), int(s) + int(n)) for s, n in zip(start, size)]
        block = t[tuple(sl)]
        deg, other, slc = view
        return block.permute(0, 1 + deg, 1 + other, 1 + slc)[..., 0]

    def _lr_plane(self, view: tuple[int, int, int], start: Sequence[int], size: Sequence[int]) -> torch.Tensor:
        f = int(round(self.factor))
        lr_start = list(start)
        lr_size = list(size)
        lr_start[view[0]] = start[view[0]] // f
        lr_size[view[0]] = size[view[0]] // f
        return self._plane(self._lr[view[0]], view, lr_start, lr_size)

    def _add_noise(self, lr: torch.Tensor, gen: torch.Generator | None = None) -> torch.Tensor:
        if self.noise is None or self.noise[1] <= 0:
            return lr
        return degrade.add_noise(lr, sigma=self.noise[1], kind=self.noise[0], generator=gen)

    # ----------------------------------------------------------------- API
    def train_batch(self, n: int, rng: np.random.Generator) -> dict[str, Any]:
        hrs, lrs = [], []
        for _ in range(n):
            view = self.views[int(rng.choice(len(self.views), p=self._view_p))]
            size = self._box(view)
            start = self.sampler.sample(size, rng, self._step(view))
            hr = self._plane(self.volume, view, start, size)
            if rng.random() < 0.5:  # flip along the other axis (the profile is symmetric)
                hr = hr.flip(-1)
                lr = self._lr_plane(view, start, size).flip(-1) if self.integer else None
            else:
                lr = self._lr_plane(view, start, size) if self.integer else None
            hrs.append(hr)
            lrs.append(lr)
        hr_b = torch.stack(hrs)
        lr_b = torch.stack(lrs) if self.integer else self.degrade(hr_b, axis=2)
        gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
        return {
            "image": self._add_noise(lr_b, gen).contiguous(),
            "label": hr_b.contiguous(),
            "output_size": (self.n_hr, self.width),
        }

    def val_items(self) -> list[dict[str, torch.Tensor]]:
        if self.val_interval is None:
            return []
        lo, hi = self.val_interval
        shape = tuple(self.volume.shape[1:])
        views = [v for v in self.views if v[2] == self.holdout_axis] or self.views
        limit = min(min(shape[v[0]] for v in views), MAX_VAL_TILE_2D)
        n_lr, n_hr = slice_lengths(limit, self.factor, limit=limit, search=0)
        width = min(min(shape[v[1]] for v in views), MAX_VAL_TILE_2D)
        items = []
        for k in range(lo, hi):
            for view in views:
                start = [0, 0, 0]
                start[view[2]] = k
                size = self._box(view, n_hr, width)
                for ax in (view[0], view[1]):
                    start[ax] = (shape[ax] - size[ax]) // 2
                if self.integer:
                    f = int(round(self.factor))
                    start[view[0]] = start[view[0]] // f * f
                share = self.sampler.fraction(start, size)
                self.val_best_fraction = max(self.val_best_fraction, share)
                if share < self.sampler.min_valid_fraction:
                    continue
                fg = self.sampler.fraction(start, size, foreground=True)
                hr = self._plane(self.volume, view, start, size)
                lr = self._lr_plane(view, start, size) if self.integer else self.degrade(hr, axis=1)
                valid = self._plane(torch.from_numpy(self._valid)[None], view, start, size)
                items.append({"image": lr, "label": hr, "valid": valid, "output_size": (n_hr, width), "_fg": fg})
        return _pick(items, MAX_VAL_ITEMS_2D)

    def cubic(self, item: Mapping[str, Any]) -> torch.Tensor:
        """Cubic B-spline of a validation item along its degraded (first) axis."""
        out = tuple(item["label"].shape[-2:])
        return baselines.cubic_bspline(item["image"], (self.factor, 1.0), out)


class AlignedSource(PairSource):
    """Patches of an image and of its low-resolution version, cut at aligned positions.

    Args:
        hr: normalised high-resolution ``(C, *spatial)`` (the target).
        lr: its low-resolution version ``(C, *spatial_lr)``, the grid reduced
            by the integer ``factors`` (FOV-preserving).
        valid: boolean ``(*spatial)`` (high-resolution grid).
        foreground: boolean ``(*spatial)`` or ``None``.
        factors: integer factor per spatial axis.
        patch_size: high-resolution patch size per *network* axis.
        plane_axis: for 2D networks on 3D data, the axis (factor 1) across
            which planes are cut; ``None`` otherwise.
        guide: guide bands on the high-resolution grid (guided net), or ``None``.
        holdout: ``(axis, fraction, where)``.
        gap: pixels kept free between training patches and the held-out block.
        baseline: a name of :data:`medsat_sr.baselines.BASELINES`
            (``"bspline"``, ``"gdal_cubic"``, ``"gdal_lanczos"``); GDAL
            baselines apply to 2D networks, 3D ones get the B-spline.
    """

    def __init__(
        self,
        hr: torch.Tensor,
        lr: torch.Tensor,
        valid: np.ndarray,
        foreground: np.ndarray | None,
        *,
        factors: Sequence[int],
        patch_size: Sequence[int],
        plane_axis: int | None = None,
        guide: torch.Tensor | None = None,
        holdout: tuple[int, float, str] | None = None,
        gap: int = 0,
        min_valid_fraction: float = 0.5,
        background_probability: float = 0.1,
        baseline: str = "bspline",
    ) -> None:
        self.info = {}
        self.hr = _plain(hr).to(torch.float32).contiguous()
        self.lr = _plain(lr).to(torch.float32).contiguous()
        self.guide = None if guide is None else _plain(guide).to(torch.float32).contiguous()
        nd = self.hr.ndim - 1
        self.factors = tuple(int(f) for f in factors)
        if len(self.factors) != nd:
            raise DataError(f"need {nd} factors for an image of shape {tuple(self.hr.shape)}, got {list(factors)}")
        expect = tuple(n // f for n, f in zip(self.hr.shape[1:], self.factors))
        if any(m < e for m, e in zip(self.lr.shape[1:], expect)):
            raise GeometryError(
                f"low-resolution image {tuple(self.lr.shape)} is smaller than the high-resolution "
                f"{tuple(self.hr.shape)} reduced by {self.factors}"
            )
        if self.guide is not None and tuple(self.guide.shape[1:]) != tuple(self.hr.shape[1:]):
            raise GeometryError(
                f"guide {tuple(self.guide.shape)} must be on the target grid {tuple(self.hr.shape)}"
            )
        self.plane_axis = plane_axis
        self.spatial_dims = nd - (1 if plane_axis is not None else 0)
        net_axes = [a for a in range(nd) if a != plane_axis]
        self.net_axes = net_axes
        self.in_channels = int(self.lr.shape[0])
        self.out_channels = int(self.hr.shape[0])
        self.guide_channels = 0 if self.guide is None else int(self.guide.shape[0])
        self.model_scale = tuple(float(self.factors[a]) for a in net_axes)
        self.baseline = baseline
        ps = _ints(patch_size, len(net_axes), "patch_size")
        size = [1] * nd
        for a, p in zip(net_axes, ps):
            f = self.factors[a]
            usable = (self.hr.shape[1 + a] // f) * f
            size[a] = max(f, min(int(math.ceil(p / f)) * f, usable))
        self.size = tuple(size)
        self.step = tuple(self.factors)
        region: list[list[tuple[int, int]] | None] = [None] * nd
        # a patch must not read low-res pixels whose footprint passes the image end
        for a in range(nd):
            region[a] = [(0, (self.hr.shape[1 + a] // self.factors[a]) * self.factors[a])]
        self.val_interval: tuple[int, int] | None = None
        self.holdout_axis: int | None = None
        if holdout is not None and holdout[1] > 0:
            ax, frac, where = holdout
            n_ax = region[ax][0][1]
            # validation tiles need at least the SSIM window (11 pixels) along the held-out axis
            min_len = 1 if ax == plane_axis else max(11, 2 * self.factors[ax])
            self.val_interval, train = _holdout(
                n_ax, frac, where, int(math.ceil(gap / self.factors[ax])) * self.factors[ax] if ax != plane_axis else 0,
                step=self.factors[ax], min_len=min_len, patch=self.size[ax],
                valid_share=_axis_share(valid, ax), need=min_valid_fraction,
            )
            region[ax] = train
            self.holdout_axis = ax
        self.sampler = PatchSampler(
            valid, foreground, min_valid_fraction=min_valid_fraction,
            background_probability=background_probability, region=region,
        )
        self._valid_t = torch.from_numpy(np.ascontiguousarray(valid, dtype=bool))[None]
        self.weight = float(self.sampler.available(self.size, self.step))
        self.val_best_fraction = 0.0

    def _cut(self, start: Sequence[int], size: Sequence[int]) -> dict[str, torch.Tensor]:
        sl_hr = (slice(None),) + tuple(slice(s, s + n) for s, n in zip(start, size))
        sl_lr = (slice(None),) + tuple(
            slice(s // f, s // f + n // f) for s, n, f in zip(start, size, self.factors)
        )
        out = {"image": self.lr[sl_lr], "label": self.hr[sl_hr]}
        if self.guide is not None:
            out["guide"] = self.guide[sl_hr]
        if self.plane_axis is not None:
            out = {k: v.squeeze(1 + self.plane_axis) for k, v in out.items()}
        return out

    def train_batch(self, n: int, rng: np.random.Generator) -> dict[str, Any]:
        items = []
        for _ in range(n):
            start = self.sampler.sample(self.size, rng, self.step)
            item = self._cut(start, self.size)
            # random flips of the network axes (the degradations are symmetric)
            dims = [1 + i for i in range(self.spatial_dims) if rng.random() < 0.5]
            if dims:
                item = {k: v.flip(dims) for k, v in item.items()}
            items.append(item)
        batch: dict[str, Any] = {k: torch.stack([it[k] for it in items]).contiguous() for k in items[0]}
        return batch

    def val_items(self) -> list[dict[str, torch.Tensor]]:
        if self.val_interval is None:
            return []
        nd = len(self.factors)
        cap_edge = MAX_VAL_TILE_2D if self.spatial_dims == 2 else MAX_VAL_TILE_3D
        lo, hi = self.val_interval
        ax = self.holdout_axis
        tile = []
        ranges = []
        for a in range(nd):
            f = self.factors[a]
            n_a = (self.hr.shape[1 + a] // f) * f
            a0, a1 = (lo, hi) if a == ax else (0, n_a)
            if a == self.plane_axis:
                tile.append(1)
            else:
                want = max(self.size[a] * 2, 96 if self.spatial_dims == 2 else 48)
                t = min(want, cap_edge, a1 - a0)
                tile.append(max(f, t // f * f))
            ranges.append((a0, a1))
        starts = [list(range(a0, a1 - t + 1, t)) for (a0, a1), t in zip(ranges, tile)]
        items = []
        for start in np.array(np.meshgrid(*starts, indexing="ij")).reshape(nd, -1).T:
            share = self.sampler.fraction(start, tile)
            self.val_best_fraction = max(self.val_best_fraction, share)
            if share < self.sampler.min_valid_fraction:
                continue
            item: dict[str, Any] = dict(self._cut(start, tile))
            sl = (slice(None),) + tuple(slice(int(s), int(s) + int(n)) for s, n in zip(start, tile))
            mask = self._valid_t[sl]
            item["valid"] = mask.squeeze(1 + self.plane_axis) if self.plane_axis is not None else mask
            item["_fg"] = self.sampler.fraction(start, tile, foreground=True)
            items.append(item)
        return _pick(items, MAX_VAL_ITEMS_2D if self.spatial_dims == 2 else MAX_VAL_ITEMS_3D)

    def cubic(self, item: Mapping[str, Any]) -> torch.Tensor:
        out = tuple(item["label"].shape[1:])
        name = self.baseline if self.spatial_dims == 2 else "bspline"
        return baselines.upsample(name, item["image"], self.model_scale, out)


def _pick(items: list[dict[str, Any]], cap: int) -> list[dict[str, Any]]:
    """Prefer foreground-rich items, then spread the choice evenly over the rest; drop helper keys."""
    if not items:
        return []
    fg_ok = [it for it in items if it.get("_fg", 1.0) > 0] or items
    if len(fg_ok) > cap:
        idx = np.linspace(0, len(fg_ok) - 1, cap).round().astype(int)
        fg_ok = [fg_ok[i] for i in idx]
    return [{k: v for k, v in it.items() if not k.startswith("_")} for it in fg_ok]


# =============================================================== dataset
class PatchPairDataset(IterableDataset):
    """Endless stream of training batches drawn from one or more :class:`PairSource`.

    Each item is a whole batch ``{"image": lr, "label": hr[, "guide"][, "output_size"]}``
    (use a DataLoader with ``batch_size=None``). Sources are drawn in
    proportion to their number of accepted patch positions.

    Args:
        sources: the pair sources (same network layout).
        batch_size: patches per batch.
        seed: random seed (the stream is reproducible).
    """

    def __init__(self, sources: Sequence[PairSource], batch_size: int, seed: int = 0) -> None:
        super().__init__(data=[])
        if not sources:
            raise DataError("no training data: every input was empty or held out")
        self.sources = list(sources)
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        w = np.array([max(s.weight, 0.0) for s in self.sources], dtype=np.float64)
        if not np.any(w > 0):
            sizes = []
            for src in self.sources:
                shape, size = getattr(getattr(src, "sampler", None), "shape", None), getattr(src, "size", None)
                if shape is not None and size is not None:
                    sizes.append(f"target grid {tuple(int(v) for v in shape)}, patch {tuple(int(v) for v in size)}")
            where = f" ({'; '.join(sizes)}; the validation hold-out and its gap are excluded)" if sizes else ""
            names = sorted({s.name for s in self.sources if s.name})
            need = getattr(getattr(self.sources[0], "sampler", None), "min_valid_fraction", None)
            need_s = f" ({need:.0%} valid, data.min_valid_fraction)" if need is not None else ""
            raise DataError(
                f"{', '.join(names) or 'input'}: no training patch has enough valid pixels{need_s}{where}; "
                "lower data.min_valid_fraction or train.patch_size, or give a larger image"
            )
        self.p = w / w.sum()
        self.rng = np.random.default_rng(self.seed)

    def reseed(self, seed: int) -> None:
        """Restart the stream from ``seed`` (e.g. ``seed + iteration`` on resume)."""
        self.rng = np.random.default_rng(int(seed))

    def next_batch(self) -> dict[str, Any]:
        """One batch from a randomly drawn source."""
        k = int(self.rng.choice(len(self.sources), p=self.p)) if len(self.sources) > 1 else 0
        return self.sources[k].train_batch(self.batch_size, self.rng)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        while True:
            yield self.next_batch()

    def __len__(self) -> int:  # pragma: no cover - endless
        raise TypeError("PatchPairDataset is endless")

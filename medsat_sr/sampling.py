"""Patch sampling and held-out splits: where training patches and validation blocks lie.

:class:`PatchSampler` draws random patch positions over a spatial mask: a
patch is accepted when at least ``data.min_valid_fraction`` of its pixels
are valid (finite, not nodata), *and*, except for the
``data.background_probability`` share of patches drawn anywhere, at least
that fraction is foreground (:func:`foreground_mask`, the profile's metric
mask: e.g. MR head above 10 % of the robust range, CT body above -500 HU;
rasters: valid pixels). Nodata-dominated patches are never drawn. The
fractions of every candidate position are computed at once from integral
images, so there is no rejection loop and a patch is always found when one
exists.

:func:`_holdout` places the contiguous validation block of an axis (never
random, so neighbouring pixels cannot leak) and the training intervals
around it, keeping a gap of the degradation's reach and moving off a
nodata collar (:func:`_axis_share`, :func:`_valid_block`).
:func:`slice_lengths` sizes thick-slice patches for non-integer factors.

Used by :mod:`medsat_sr.pair_sources` (the pair sources sample and hold out
with these) and :mod:`medsat_sr.data` (image preparation and the source
builders); :func:`foreground_mask` also by :mod:`medsat_sr.evaluate`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from scipy import ndimage

from medsat_sr.errors import ConfigError, DataError

__all__ = [
    "PatchSampler",
    "slice_lengths",
    "foreground_mask",
]

#: Most candidate positions evaluated per patch size (a coarser grid beyond).
MAX_CANDIDATES = 4_000_000


# =============================================================== helpers
def _plain(x: Any) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        t = x.as_subclass(torch.Tensor) if type(x) is not torch.Tensor else x
        return t
    return torch.as_tensor(np.asarray(x))


def _ints(value: int | Sequence[int], n: int, what: str) -> tuple[int, ...]:
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return (int(value),) * n
    vals = tuple(int(v) for v in value)
    if len(vals) != n:
        raise ConfigError(f"{what} must have 1 or {n} values, got {list(value)}")
    return vals


def _is_int(f: float, tol: float = 1e-6) -> bool:
    return abs(f - round(f)) < tol


def slice_lengths(target: int, factor: float, *, limit: int | None = None, search: int = 3) -> tuple[int, int]:
    """``(n_lr, n_hr)`` for a patch of about ``target`` high-res pixels along an axis reduced by ``factor``.

    ``n_hr = round(n_lr * factor)``; among the ``n_lr`` within ``search`` of
    ``target / factor`` (and with ``n_hr <= limit``) the one for which
    ``n_lr * factor`` is closest to an integer is chosen, so that the
    field of view of the low-resolution patch matches the high-resolution
    one as closely as possible (exact for integer factors).

    Raises:
        DataError: no ``n_lr >= 2`` fits under ``limit``.
    """
    f = float(factor)
    centre = max(2, int(round(target / f)))
    best: tuple[float, int, int] | None = None
    for n_lr in range(max(2, centre - search), centre + search + 1):
        n_hr = int(math.floor(n_lr * f + 0.5))
        if limit is not None and n_hr > limit:
            continue
        err = abs(n_lr * f - n_hr) + 1e-3 * abs(n_lr - centre)
        if best is None or err < best[0]:
            best = (err, n_lr, n_hr)
    if best is None:
        n_lr = int((limit or 0) / f)
        if n_lr < 2:
            raise DataError(
                f"an axis of {limit} pixels is too short for two low-resolution samples at factor {f:g}"
            )
        return n_lr, int(math.floor(n_lr * f + 0.5))
    return best[1], best[2]


def foreground_mask(
    physical: torch.Tensor, normalised: torch.Tensor, mask_spec: Any, valid: torch.Tensor
) -> np.ndarray | None:
    """The spatial foreground mask of the profile's metric mask spec, or ``None`` (= valid).

    ``kind: foreground``: any channel above ``threshold`` (in physical or
    normalised units), holes filled and dilated as the spec says, and valid.
    """
    if mask_spec is None or mask_spec.kind != "foreground":
        return None
    src = normalised if mask_spec.units == "normalised" else _plain(physical).to(torch.float32)
    fg = ((src > float(mask_spec.threshold)) & valid).any(dim=0).cpu().numpy()
    if mask_spec.fill_holes:
        fg = ndimage.binary_fill_holes(fg)
    if mask_spec.dilate:
        fg = ndimage.binary_dilation(fg, iterations=int(mask_spec.dilate))
    return fg & valid.all(dim=0).cpu().numpy()


# =============================================================== sampler
class PatchSampler:
    """Random patch positions over a spatial mask: nodata-free, foreground-favouring.

    Args:
        valid: boolean ``(*spatial)``: pixels that are not nodata.
        foreground: boolean ``(*spatial)`` foreground, or ``None`` (= valid).
        min_valid_fraction: least fraction of valid (and, for foreground
            draws, foreground) pixels in an accepted patch.
        background_probability: share of patches drawn anywhere (only the
            valid fraction is required for them).
        region: per spatial axis, the ``(start, stop)`` intervals a patch
            must lie in (``None``: the whole axis).

    Candidate fractions are computed for every position of a patch size at
    once from integral images (cached per size); positions can be forced
    onto a grid (``step``, e.g. multiples of an integer scale factor).
    """

    def __init__(
        self,
        valid: np.ndarray,
        foreground: np.ndarray | None = None,
        *,
        min_valid_fraction: float = 0.5,
        background_probability: float = 0.1,
        region: Sequence[Sequence[tuple[int, int]] | None] | None = None,
    ) -> None:
        v = np.asarray(valid, dtype=bool)
        self.shape = v.shape
        self.ndim = v.ndim
        if not 0.0 <= min_valid_fraction <= 1.0:
            raise ConfigError(f"min_valid_fraction must be in [0, 1], got {min_valid_fraction}")
        if not 0.0 <= background_probability <= 1.0:
            raise ConfigError(f"background_probability must be in [0, 1], got {background_probability}")
        self.min_valid_fraction = float(min_valid_fraction)
        self.background_probability = float(background_probability)
        self._sat_valid = self._sat(v)
        if foreground is not None:
            fg = np.asarray(foreground, dtype=bool)
            if fg.shape != v.shape:
                raise DataError(f"foreground mask shape {fg.shape} differs from the valid mask {v.shape}")
            self._sat_fg: np.ndarray | None = self._sat(fg & v)
        else:
            self._sat_fg = None
        if region is None:
            region = [None] * self.ndim
        if len(region) != self.ndim:
            raise DataError(f"region needs {self.ndim} entries (one per axis), got {len(region)}")
        self.region = [
            [(0, n)] if r is None else [(int(a), int(b)) for a, b in r] for r, n in zip(region, self.shape)
        ]
        self._cache: dict[tuple[Any, ...], tuple[list[np.ndarray], np.ndarray, np.ndarray]] = {}

    @staticmethod
    def _sat(mask: np.ndarray) -> np.ndarray:
        s = mask.astype(np.int64)
        for ax in range(s.ndim):
            s = np.cumsum(s, axis=ax)
        return np.pad(s, [(1, 0)] * s.ndim)

    def _box_sums(self, sat: np.ndarray, axes_pos: list[np.ndarray], size: tuple[int, ...]) -> np.ndarray:
        total = np.zeros(tuple(len(p) for p in axes_pos), dtype=np.int64)
        for corner in np.ndindex(*(2,) * self.ndim):
            idx = [p + (size[i] if c else 0) for i, (p, c) in enumerate(zip(axes_pos, corner))]
            sign = (-1) ** (self.ndim - sum(corner))
            total += sign * sat[np.ix_(*idx)]
        return total

    def candidates(
        self, size: Sequence[int], step: Sequence[int] | None = None
    ) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
        """Per-axis candidate starts and the boolean maps of valid and foreground acceptance."""
        size_t = tuple(int(s) for s in size)
        step_t = tuple(int(s) for s in step) if step is not None else (1,) * self.ndim
        key = (size_t, step_t)
        if key in self._cache:
            return self._cache[key]
        axes_pos: list[np.ndarray] = []
        for ax in range(self.ndim):
            st = step_t[ax]
            pos = [
                np.arange(int(math.ceil(a / st)) * st, b - size_t[ax] + 1, st, dtype=np.int64)
                for a, b in self.region[ax]
            ]
            axes_pos.append(np.unique(np.concatenate(pos)) if pos else np.zeros(0, np.int64))
        count = int(np.prod([len(p) for p in axes_pos], dtype=np.float64))
        if count > MAX_CANDIDATES:  # thin out the longest axes (keeps the alignment)
            thin = (count / MAX_CANDIDATES) ** (1.0 / self.ndim)
            axes_pos = [p[:: max(1, int(math.ceil(thin)))] if len(p) > 64 else p for p in axes_pos]
        n_pix = float(np.prod(size_t))
        if any(len(p) == 0 for p in axes_pos):
            empty = np.zeros(tuple(len(p) for p in axes_pos), dtype=bool)
            self._cache[key] = (axes_pos, empty, empty)
            return self._cache[key]
        need = self.min_valid_fraction * n_pix - 1e-6
        ok_valid = self._box_sums(self._sat_valid, axes_pos, size_t) >= need
        if self._sat_fg is not None:
            ok_fg = ok_valid & (self._box_sums(self._sat_fg, axes_pos, size_t) >= need)
        else:
            ok_fg = ok_valid
        self._cache[key] = (axes_pos, ok_valid, ok_fg)
        return self._cache[key]

    def fraction(self, start: Sequence[int], size: Sequence[int], *, foreground: bool = False) -> float:
        """Fraction of valid (or foreground) pixels in the box ``start + size``."""
        sat = self._sat_fg if foreground and self._sat_fg is not None else self._sat_valid
        pos = [np.array([int(s)]) for s in start]
        total = self._box_sums(sat, pos, tuple(int(s) for s in size))
        return float(total.ravel()[0]) / float(np.prod(size))

    def available(self, size: Sequence[int], step: Sequence[int] | None = None) -> int:
        """How many accepted positions a patch size has."""
        return int(self.candidates(size, step)[1].sum())

    def sample(
        self, size: Sequence[int], rng: np.random.Generator, step: Sequence[int] | None = None
    ) -> tuple[int, ...]:
        """A random accepted start position for a patch of ``size``.

        Raises:
            DataError: no position has enough valid pixels.
        """
        axes_pos, ok_valid, ok_fg = self.candidates(size, step)
        use_bg = rng.random() < self.background_probability
        pool = ok_valid if use_bg else ok_fg
        flat = np.flatnonzero(pool)
        if flat.size == 0:
            flat = np.flatnonzero(ok_valid)
            if flat.size == 0:
                raise DataError(
                    f"no patch of size {tuple(size)} has at least {self.min_valid_fraction:.0%} valid pixels "
                    f"(image {self.shape}); lower data.min_valid_fraction or train.patch_size"
                )
        k = int(flat[rng.integers(flat.size)])
        idx = np.unravel_index(k, pool.shape)
        return tuple(int(axes_pos[a][i]) for a, i in enumerate(idx))


# =============================================================== holdout
def _holdout(n: int, fraction: float, where: str, gap: int, step: int = 1, min_len: int = 0,
             patch: int = 1, valid_share: np.ndarray | None = None,
             need: float = 0.0) -> tuple[tuple[int, int], list[tuple[int, int]]]:
    """The held-out interval of an axis of length ``n`` and the training intervals around it.

    ``where="centre"`` falls back to ``"end"`` when neither side of a centred
    block would hold a training patch of length ``patch``. Nodata-aware: with
    ``valid_share`` (the valid fraction of each position along the axis),
    a default block whose valid fraction is below ``need`` (a scene's nodata
    collar, say) moves to the position with the most valid data that still
    leaves a training patch on one side.
    """
    if fraction <= 0:
        return (n, n), [(0, n)]
    k = max(int(round(n * fraction)), min_len, 1)
    k = int(math.ceil(k / step)) * step
    if k >= n:
        raise DataError(f"val_fraction {fraction} holds out {k} of {n} pixels: nothing left to train on")
    if where != "end":
        lo = ((n - k) // 2) // step * step
        hi = lo + k
        if lo - gap < patch and n - hi - gap < patch:
            where = "end"
    if where == "end":
        lo = (n - k) // step * step
        hi = n
    if valid_share is not None:
        lo = _valid_block(np.asarray(valid_share, dtype=np.float64)[:n], lo, k, step, gap, patch, need)
        hi = lo + k
    train = [(0, max(0, lo - gap)), (min(n, hi + gap), n)]
    return (lo, hi), [(a, b) for a, b in train if b > a]


def _axis_share(valid: np.ndarray, axis: int) -> np.ndarray:
    """The valid fraction of each position along ``axis`` of a spatial mask."""
    v = np.asarray(valid, dtype=bool)
    return v.mean(axis=tuple(a for a in range(v.ndim) if a != axis)) if v.ndim > 1 else v.astype(np.float64)


def _valid_block(share: np.ndarray, lo: int, k: int, step: int, gap: int, patch: int, need: float) -> int:
    """Start of the held-out block: ``lo`` when its valid fraction reaches ``need``, else the most valid start."""
    n = share.size
    csum = np.concatenate([[0.0], np.cumsum(share)])
    if (csum[lo + k] - csum[lo]) / k >= need:
        return lo
    starts = np.arange(0, n - k + 1, step)
    room = np.maximum(starts - gap, n - starts - k - gap) >= patch  # a training patch fits on one side
    if not room.any():
        return lo
    starts = starts[room]
    means = (csum[starts + k] - csum[starts]) / k
    best = starts[means >= means.max() - 1e-9]
    return int(best[np.argmin(np.abs(best - lo))])  # the most valid block nearest the default

"""The raster route's plan: which task makes which output bands, on which grid, in which tiles.

A :class:`Task` makes some output bands from one source group: ``pass``
(bands already on the output grid), ``model`` (a network or ensemble, with
a halo of at least its receptive field) or ``resample`` (GDAL resampling).
Tiles are sized so that every nested grid is cut on whole pixels.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import numpy as np

from medsat_sr import baselines
from medsat_sr.errors import ConfigError, GeometryError, ModelError
from medsat_sr.fusion import Ensemble
from medsat_sr.geometry import scale_transform
from medsat_sr.inference.raster_source import Group


@dataclass
class Task:
    """How some output bands are made from one source group."""

    kind: str  # "pass", "model" or "resample"
    group: Group
    idx: list[int]
    out_pos: list[int] = field(default_factory=list)
    ratio: tuple[Fraction, Fraction] | None = None  # output pixels per group pixel, when nested
    ensemble: Ensemble | None = None
    guide: Group | None = None
    guide_idx: list[int] | None = None
    method: str = "cubic"
    halo: tuple[int, int] = (0, 0)
    fill: np.ndarray | None = None
    guide_fill: np.ndarray | None = None
    sigma: list[float] | None = None  # consistency PSF sigma per band (HR pixels)
    psf: str = "gaussian"  # or "box" (the profile's PSF shape)
    std_pos: list[int] | None = None
    near_rows: np.ndarray | None = None
    near_cols: np.ndarray | None = None
    sse: np.ndarray | None = None
    count: np.ndarray | None = None
    vmin: np.ndarray | None = None
    vmax: np.ndarray | None = None

    @property
    def bands(self) -> list[str]:
        """The names of the task's bands, in task order."""
        return [self.group.bands[i] for i in self.idx]


def nested_ratio(g: Group, out_shape: tuple[int, int], out_t: Sequence[float]) -> tuple[Fraction, Fraction] | None:
    """``(rows, cols)`` ratio when the output grid is ``g``'s grid scaled by it exactly, else ``None``."""
    r = (Fraction(out_shape[0], g.height), Fraction(out_shape[1], g.width))
    expect = scale_transform(g.transform, (float(r[0]), float(r[1])))
    px = max(abs(out_t[0]), abs(out_t[4]), abs(out_t[1]), abs(out_t[3]))
    if all(abs(a - b) <= 1e-6 * px for a, b in zip(expect, out_t[:6])):
        return r
    return None


def nearest_map(task: Task, out_shape: tuple[int, int], out_t: Sequence[float]) -> None:
    """For every output row/column, the source row/column containing its centre (cached on the task)."""
    g = task.group
    if task.ratio is not None:
        task.near_rows = baselines.nearest_index(g.height, out_shape[0])
        task.near_cols = baselines.nearest_index(g.width, out_shape[1])
        return
    a, b, c, d, e, f = out_t[:6]
    ga, gb, gc, gd, ge, gf = g.transform[:6]
    if abs(b) > 0 or abs(d) > 0 or abs(gb) > 0 or abs(gd) > 0:
        raise GeometryError(f"band group {g.name}: rotated grids cannot be resampled window by window")
    cols = (c + (np.arange(out_shape[1]) + 0.5) * a - gc) / ga
    rows = (f + (np.arange(out_shape[0]) + 0.5) * e - gf) / ge
    task.near_cols = np.clip(np.floor(cols).astype(np.int64), 0, g.width - 1)
    task.near_rows = np.clip(np.floor(rows).astype(np.int64), 0, g.height - 1)


def _lcm(a: int, b: int) -> int:
    """Least common multiple."""
    return a * b // math.gcd(a, b)


def tile_sizes(tasks: list[Task], out_shape: tuple[int, int], tile: Any) -> tuple[int, int]:
    """Output tile size per axis: block-aligned near ``tile`` input pixels, on whole pixels of every grid."""
    period = [1, 1]
    for t in tasks:
        if t.kind != "pass" and t.ratio is not None:
            for a in range(2):
                period[a] = _lcm(period[a], t.ratio[a].numerator)
    main = next((t for t in tasks if t.kind == "model"), None) or next(
        (t for t in tasks if t.kind != "pass" and t.ratio is not None), tasks[0]
    )
    tiles = tile if isinstance(tile, (tuple, list)) else (tile, tile)
    if len(tiles) != 2:
        raise ConfigError(f"raster tile_size takes 1 or 2 values, got {tile}")
    out = []
    for a in range(2):
        n_out = out_shape[a]
        blk, n_g = main.group.block[a], main.group.shape[a]
        t_in = int(tiles[a])
        if 16 <= blk < n_g:
            t_in = max(1, round(t_in / blk)) * blk
        r = main.ratio[a] if main.ratio is not None else Fraction(1)
        want = float(t_in * r)
        unit = _lcm(period[a], 256)  # whole output blocks when that is not far from the wish
        if unit > want:
            unit = period[a]
        size = max(unit, int(round(want / unit)) * unit)
        if size >= n_out or period[a] > n_out:
            size = n_out
        out.append(int(size))
    return out[0], out[1]


def out_tiles(out_shape: tuple[int, int], size: tuple[int, int]) -> Iterator[tuple[int, int, int, int]]:
    """Output windows ``(r0, r1, c0, c1)`` of ``size`` in row-major order (the last ones clipped)."""
    for r0 in range(0, out_shape[0], size[0]):
        for c0 in range(0, out_shape[1], size[1]):
            yield r0, min(out_shape[0], r0 + size[0]), c0, min(out_shape[1], c0 + size[1])



def guide_for(groups: list[Group], target: Group, names: list[str] | None, n_guide: int) -> tuple[Group, list[int]]:
    """The guide group (on the output grid) and band indexes for a guided model."""
    fine = groups[0]
    if names:
        missing = [n for n in names if n not in fine.bands]
        if missing:
            raise ModelError(
                f"guide bands {missing} are not on the finest grid ({fine.name}: {fine.bands}); "
                "a guided model needs its guides at the output resolution"
            )
        idx = [fine.bands.index(n) for n in names]
    else:
        idx = list(range(len(fine.bands)))
    if len(idx) != n_guide:
        raise ModelError(
            f"the guided model takes {n_guide} guide bands, the finest group {fine.name} offers {len(idx)} "
            f"({[fine.bands[i] for i in idx]}); name them in the checkpoint (guide_bands) or the config (bands.guides)"
        )
    if fine is target:
        raise ModelError(f"the model's target bands are already on the finest grid ({fine.name})")
    return fine, idx

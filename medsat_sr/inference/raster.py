"""Raster streaming: the engine behind :func:`medsat_sr.upscale` for GeoTIFFs and band sets.

:func:`run_raster` reads the input window by window (a GeoTIFF or a band
folder kept open, or a raster / BandSet already in memory), runs each task
(pass-through of bands already on the output grid, a model or ensemble
with a halo of at least its receptive field, or GDAL resampling with a small
halo), and writes each output window into a tiled, compressed GTiff (or a
folder of band files, or memory), so that peak memory depends on the tile
size, not on the scene. The design (tiles, halo, nodata, statistics, dtype)
is documented in :mod:`medsat_sr.inference`; this module is its raster half.

It also holds the helpers both halves share: the normaliser binding,
progress bars, self-ensemble transforms and the ``_std`` naming.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor

from medsat_sr import baselines
from medsat_sr.errors import ConfigError, FormatError, GeometryError, MedsatError, ModelError
from medsat_sr.fusion import Ensemble, Member
from medsat_sr.inference.members import WEIGHT_CROP, band_roles, centre, fit_normaliser, tta_for
from medsat_sr.inference.progress import progress_over
from medsat_sr.inference.record import input_info, std_path
from medsat_sr.io.geotiff import gdal_env
from medsat_sr.geometry import as_scale, effective_scale, scale_transform, scaled_shape
from medsat_sr.image import Key, make_raster

__all__ = ["run_raster", "SAMPLE_SIDE", "DEFAULT_TILE_RASTER", "CONSISTENCY_TILES"]

logger = logging.getLogger("medsat_sr.inference")

#: Largest side (pixels) of the decimated read used for raster statistics
#: (percentiles and band medians; a million pixels per band is ample).
SAMPLE_SIDE = 1024
#: Default tile size (input pixels per axis) for rasters.
DEFAULT_TILE_RASTER = 512
#: Raster tiles (spread evenly over the scene) on which the consistency score is computed
#: (a fixed sample: its cost does not grow with the scene).
CONSISTENCY_TILES = 16
#: Side (input pixels) of the central crop of each of those tiles that the score uses.
CONSISTENCY_CROP = 256
#: Compression levels of streamed outputs: fast ones. On Sentinel-2 and NAIP
#: products DEFLATE level 1 is 1.6-4.6x faster than GDAL's default 6 for files
#: 0-7 % larger (a COG copy recompresses with the COG driver's own level).
WRITER_LEVELS = {"deflate": ("zlevel", 1), "zstd": ("zstd_level", 1)}




# =============================================================== raster sources


@dataclass


class _Group:
    """One raster grid of the input: a file, or one group of a band set."""

    name: str
    bands: list[str]
    height: int
    width: int
    transform: tuple[float, ...]
    crs: str | None
    nodata: float | None
    scales: list[float] | None
    offsets: list[float] | None
    dtype: str
    block: tuple[int, int]
    meta: dict[str, Any]
    reader: Callable[[int, int, int, int], tuple[np.ndarray, np.ndarray]]
    sampler: Callable[[int, int], tuple[np.ndarray, np.ndarray]]
    masked: bool = False
    _sample: tuple[MetaTensor, np.ndarray] | None = None

    @property
    def shape(self) -> tuple[int, int]:
        return (self.height, self.width)

    def read(self, r0: int, r1: int, c0: int, c1: int) -> tuple[np.ndarray, np.ndarray]:
        """Physical float32 ``(C, h, w)`` and its validity, for a window inside the grid."""
        return self.reader(r0, r1, c0, c1)

    def sample(self) -> tuple[MetaTensor, np.ndarray]:
        """A decimated copy (nearest, at most :data:`SAMPLE_SIDE` a side) and its validity (cached)."""
        if self._sample is None:
            step = max(1, math.ceil(max(self.height, self.width) / SAMPLE_SIDE))
            h, w = -(-self.height // step), -(-self.width // step)
            data, valid = self.sampler(h, w)
            extra: dict[str, Any] = {}
            if self.masked:
                extra["valid_mask"] = valid.all(axis=0)
            t = self.transform
            fy, fx = self.height / h, self.width / w
            img = make_raster(
                data,
                (t[0] * fx, t[1] * fy, t[2], t[3] * fx, t[4] * fy, t[5]),
                crs=self.crs,
                nodata=self.nodata,
                band_names=self.bands,
                scales=self.scales,
                offsets=self.offsets,
                source_dtype=self.dtype,
                source_format="geotiff",
                header=self.meta.get(Key.HEADER),
                **extra,
            )
            self._sample = (img, valid)
        return self._sample

    def subset(self, idx: Sequence[int]) -> MetaTensor:
        """The sample restricted to bands ``idx`` (for fitting normalisers)."""
        img, _ = self.sample()
        out = img[list(idx)]
        meta = dict(img.meta)
        meta[Key.BAND_NAMES] = [self.bands[i] for i in idx]
        for k in (Key.SCALES, Key.OFFSETS):
            if meta.get(k) is not None:
                meta[k] = [meta[k][i] for i in idx]
        meta.pop("affine", None)
        return MetaTensor(out.as_tensor(), affine=img.affine, meta=meta)

    def fill_values(self) -> np.ndarray:
        """Per-band median of the valid sampled values (0 for a band with none)."""
        img, valid = self.sample()
        data = img.as_tensor().numpy()
        out = np.zeros(data.shape[0], np.float32)
        for b in range(data.shape[0]):
            v = data[b][valid[b]]
            out[b] = float(np.median(v)) if v.size else 0.0
        return out


def _valid_of(data: np.ndarray, nodata: float | None, mask: np.ndarray | None) -> np.ndarray:
    valid = np.isfinite(data)
    if nodata is not None and not math.isnan(nodata):
        valid &= data != np.float32(nodata)
    if mask is not None:
        valid &= np.broadcast_to(mask, data.shape)
    return valid


def _memory_group(name: str, img: MetaTensor) -> _Group:
    meta = dict(img.meta)
    meta.pop("affine", None)
    data = img.detach().cpu().as_subclass(torch.Tensor).numpy()
    if data.dtype != np.float32:
        data = data.astype(np.float32)
    nodata = meta.get(Key.NODATA)
    vm = meta.get("valid_mask")
    vm = None if vm is None else np.asarray(vm, dtype=bool)

    def reader(r0: int, r1: int, c0: int, c1: int) -> tuple[np.ndarray, np.ndarray]:
        d = data[:, r0:r1, c0:c1]
        m = None if vm is None else vm[..., r0:r1, c0:c1]
        return d, _valid_of(d, nodata, m)

    def sampler(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
        ri, ci = baselines.nearest_index(data.shape[1], h), baselines.nearest_index(data.shape[2], w)
        d = np.ascontiguousarray(data[:, ri][:, :, ci])
        m = None if vm is None else vm[..., ri, :][..., ci]
        return d, _valid_of(d, nodata, m)

    header = meta.get(Key.HEADER) if isinstance(meta.get(Key.HEADER), Mapping) else {}
    block = tuple(header.get("block_shape") or (DEFAULT_TILE_RASTER, DEFAULT_TILE_RASTER))
    return _Group(
        name=name,
        bands=list(meta.get(Key.BAND_NAMES) or [f"band{i + 1}" for i in range(data.shape[0])]),
        height=int(data.shape[1]),
        width=int(data.shape[2]),
        transform=tuple(float(v) for v in meta[Key.TRANSFORM][:6]),
        crs=meta.get(Key.CRS),
        nodata=nodata,
        scales=meta.get(Key.SCALES),
        offsets=meta.get(Key.OFFSETS),
        dtype=str(meta.get(Key.SOURCE_DTYPE) or "float32"),
        block=(int(block[0]), int(block[1])),
        meta=meta,
        reader=reader,
        sampler=sampler,
        masked=vm is not None,
    )


class _FileSet:
    """The rasterio datasets of a streamed run, closed together."""

    def __init__(self) -> None:
        self.datasets: list[Any] = []

    def open(self, path: Path) -> Any:
        import rasterio

        from medsat_sr.io.geotiff import _RASTERIO_ERRORS

        try:
            ds = rasterio.open(path)
        except _RASTERIO_ERRORS as exc:
            raise FormatError(f"{path}: cannot read GeoTIFF: {exc}") from exc
        self.datasets.append(ds)
        return ds

    def close(self) -> None:
        for ds in self.datasets:
            ds.close()
        self.datasets.clear()


def _file_reader(
    datasets: list[Any], indexes: list[list[int]], nodata: float | None, scaled: bool
) -> tuple[Callable, Callable, bool]:
    """Window reader and sampler over open datasets, stacked in order (values as :func:`geotiff.read` gives)."""
    from rasterio.enums import Resampling
    from rasterio.windows import Window

    masked = []
    for ds in datasets:
        flags = ds.mask_flag_enums[0]
        masked.append(any(f.name == "per_dataset" for f in flags) and not any(f.name in ("nodata", "alpha") for f in flags))
    nan_nodata = nodata is not None and math.isnan(nodata)

    def convert(ds: Any, raw: np.ndarray, idx: list[int]) -> np.ndarray:
        if not scaled:
            return raw.astype(np.float32, copy=False)
        out = np.empty(raw.shape, np.float32)
        for k, i in enumerate(idx):
            s, o = float(ds.scales[i - 1]), float(ds.offsets[i - 1])
            vals = raw[k].astype(np.float64)
            if nodata is None:
                nod = np.zeros(vals.shape, bool)
            else:
                nod = np.isnan(vals) if nan_nodata else raw[k] == nodata
            out[k] = np.where(nod, vals, vals * s + o)
        return out

    def validity(raw: np.ndarray, d: np.ndarray, mk: np.ndarray | None) -> np.ndarray:
        # nodata is a *stored* value: compare the raw pixels (a valid physical value may equal it)
        valid = np.isfinite(d)
        if nodata is not None and not nan_nodata:
            valid &= raw != nodata
        if mk is not None:
            valid &= np.broadcast_to(mk, d.shape)
        return valid

    def reader(r0: int, r1: int, c0: int, c1: int) -> tuple[np.ndarray, np.ndarray]:
        win = Window(c0, r0, c1 - c0, r1 - r0)
        parts, masks = [], []
        for ds, idx, m in zip(datasets, indexes, masked):
            raw = ds.read(idx, window=win)
            d = convert(ds, raw, idx)
            mk = ds.dataset_mask(window=win) > 0 if m else None
            parts.append(d)
            masks.append(validity(raw, d, mk))
        if len(parts) == 1:
            return parts[0], masks[0]
        return np.concatenate(parts), np.concatenate(masks)

    def sampler(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
        parts, masks = [], []
        for ds, idx, m in zip(datasets, indexes, masked):
            raw = ds.read(idx, out_shape=(len(idx), h, w), resampling=Resampling.nearest)
            d = convert(ds, raw, idx)
            mk = ds.dataset_mask(out_shape=(h, w), resampling=Resampling.nearest) > 0 if m else None
            parts.append(d)
            masks.append(validity(raw, d, mk))
        return np.concatenate(parts), np.concatenate(masks)

    return reader, sampler, any(masked)


def _file_groups(path: Path, kind: str, files: _FileSet) -> list[_Group]:
    """Streamed groups of a GeoTIFF (one) or of a band folder (one per grid, finest first).

    The meta of each group is what the reader gives for a tiny window (so
    band names, grouping, scale/offset and header are exactly the reader's);
    the pixels are then read window by window from datasets kept open.
    """
    from medsat_sr.io import geotiff

    entries: list[tuple[str, dict[str, Any], list[Path], list[list[int]]]] = []
    if kind == "geotiff":
        head = geotiff.read(path, window=((0, 1), (0, 1)))
        entries.append(("image", dict(head.meta), [path], [list(range(1, len(head.meta[Key.BAND_NAMES]) + 1))]))
    else:
        head_set = geotiff.read_bandset(path, window=_first_pixel_window(path))
        for gname, img in head_set.groups.items():
            paths = [Path(f) for f in img.meta[Key.HEADER]["files"]]
            entries.append((gname, dict(img.meta), paths, [[1]] * len(paths)))
    groups: list[_Group] = []
    for gname, meta, paths, idx in entries:
        dss = [files.open(p) for p in paths]
        ds0 = dss[0]
        if any((ds.height, ds.width) != (ds0.height, ds0.width) for ds in dss[1:]):
            raise GeometryError(f"{path}: the files of band group {gname} differ in size")
        reader, sampler, masked = _file_reader(dss, idx, meta.get(Key.NODATA), meta.get(Key.SCALES) is not None)
        header = dict(meta.get(Key.HEADER) or {})
        header["source_shape"] = (int(ds0.height), int(ds0.width))
        header["window"] = (0, 0, int(ds0.height), int(ds0.width))
        meta[Key.HEADER] = header
        meta[Key.TRANSFORM] = tuple(float(v) for v in tuple(ds0.transform)[:6])
        meta[Key.SOURCE_PATH] = str(path)
        meta.pop("valid_mask", None)
        meta.pop("affine", None)
        groups.append(
            _Group(
                name=gname,
                bands=list(meta[Key.BAND_NAMES]),
                height=int(ds0.height),
                width=int(ds0.width),
                transform=meta[Key.TRANSFORM],
                crs=meta.get(Key.CRS),
                nodata=meta.get(Key.NODATA),
                scales=meta.get(Key.SCALES),
                offsets=meta.get(Key.OFFSETS),
                dtype=str(meta.get(Key.SOURCE_DTYPE) or "float32"),
                block=(int(ds0.block_shapes[0][0]), int(ds0.block_shapes[0][1])),
                meta=meta,
                reader=reader,
                sampler=sampler,
                masked=masked,
            )
        )
    return groups


def _first_pixel_window(folder: Path) -> tuple[tuple[int, int], tuple[int, int]]:
    """A window on the finest grid that falls on whole pixels of every grid of a band folder."""
    import rasterio

    from medsat_sr.io import geotiff

    sizes = []
    with geotiff.gdal_env():
        for f in geotiff.band_files(folder):
            with rasterio.open(f) as src:
                sizes.append(abs(src.transform.a))
    fine = min(sizes)
    ratios = [max(1, round(s / fine)) for s in sizes]
    n = 1
    for r in ratios:
        n = n * r // math.gcd(n, r)
    return ((0, n), (0, n))


# =============================================================== raster plan


@dataclass


class _Task:
    """How some output bands are made from one source group."""

    kind: str  # "pass", "model" or "resample"
    group: _Group
    idx: list[int]
    out_pos: list[int] = field(default_factory=list)
    ratio: tuple[Fraction, Fraction] | None = None  # output pixels per group pixel, when nested
    ensemble: Ensemble | None = None
    guide: _Group | None = None
    guide_idx: list[int] | None = None
    method: str = "cubic"
    halo: tuple[int, int] = (0, 0)
    fill: np.ndarray | None = None
    guide_fill: np.ndarray | None = None
    sigma: list[float] | None = None
    std_pos: list[int] | None = None
    near_rows: np.ndarray | None = None
    near_cols: np.ndarray | None = None
    sse: np.ndarray | None = None
    count: np.ndarray | None = None
    vmin: np.ndarray | None = None
    vmax: np.ndarray | None = None

    @property
    def bands(self) -> list[str]:
        return [self.group.bands[i] for i in self.idx]


def _nested_ratio(g: _Group, out_shape: tuple[int, int], out_t: Sequence[float]) -> tuple[Fraction, Fraction] | None:
    """``(rows, cols)`` ratio when the output grid is ``g``'s grid scaled by it exactly, else ``None``."""
    r = (Fraction(out_shape[0], g.height), Fraction(out_shape[1], g.width))
    expect = scale_transform(g.transform, (float(r[0]), float(r[1])))
    px = max(abs(out_t[0]), abs(out_t[4]), abs(out_t[1]), abs(out_t[3]))
    if all(abs(a - b) <= 1e-6 * px for a, b in zip(expect, out_t[:6])):
        return r
    return None


def _nearest_map(task: _Task, out_shape: tuple[int, int], out_t: Sequence[float]) -> None:
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
    return a * b // math.gcd(a, b)


def _tile_sizes(tasks: list[_Task], out_shape: tuple[int, int], tile: Any) -> tuple[int, int]:
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


def _out_tiles(out_shape: tuple[int, int], size: tuple[int, int]) -> Iterator[tuple[int, int, int, int]]:
    for r0 in range(0, out_shape[0], size[0]):
        for c0 in range(0, out_shape[1], size[1]):
            yield r0, min(out_shape[0], r0 + size[0]), c0, min(out_shape[1], c0 + size[1])


def _decimation_kernel(r: int, sigma: float, truncate: float = 4.0) -> tuple[int, np.ndarray]:
    """First tap offset and weights of Gaussian decimation by an integer ``r`` (as :mod:`medsat_sr.degrade`).

    Output ``j`` sits at input ``j r + (r - 1) / 2``; the weights are the
    Gaussian sampled at the tap offsets within ``truncate`` sigma (the
    nearest tap always kept), normalised to 1; ``sigma == 0`` interpolates
    linearly.
    """
    pos = (r - 1) / 2.0
    base = math.floor(pos)
    frac = pos - base
    if sigma <= 0:
        return base, np.array([1.0 - frac, frac]) if frac else np.array([1.0])
    reach = truncate * sigma
    rad = max(1, math.ceil(reach))
    offs = np.arange(-rad, rad + 2)
    d = offs - frac
    keep = np.abs(d) <= reach
    keep[np.argmin(np.abs(d))] = True
    w = np.where(keep, np.exp(-0.5 * (d / sigma) ** 2), 0.0)
    w /= w.sum()
    first = int(np.argmax(w > 0))
    last = len(w) - int(np.argmax(w[::-1] > 0))
    return base - rad + first, w[first:last]


def _decimate(x: torch.Tensor, factors: Sequence[int], sigmas: Sequence[float]) -> torch.Tensor:
    """Separable Gaussian decimation of ``(C, H, W)`` by integer factors, one sigma per channel.

    The same sample positions and taps as :func:`medsat_sr.degrade.psf_decimate`
    for integer factors (half-sample symmetric borders): per axis, a strided
    depthwise convolution along the rows (the axis is brought there by a
    transpose), which is far cheaper than dense banded products on large tiles.
    """
    import torch.nn.functional as F

    from medsat_sr.baselines import _reflect

    c = x.shape[0]
    y = x
    for ax in (0, 1):  # rows, then (transposed) columns
        r = int(factors[ax])
        if ax == 1:
            y = y.transpose(1, 2).contiguous()
        n = y.shape[1]
        m = n // r
        kernels = [_decimation_kernel(r, float(s)) for s in sigmas]
        start = min(k[0] for k in kernels)
        length = max(k[0] + len(k[1]) for k in kernels) - start
        wt = torch.zeros((c, 1, length, 1), dtype=y.dtype)
        for ch, (s0, w) in enumerate(kernels):
            wt[ch, 0, s0 - start : s0 - start + len(w), 0] = torch.from_numpy(w).to(y.dtype)
        idx = _reflect(np.arange(start, (m - 1) * r + start + length), n)
        padded = y.index_select(1, torch.from_numpy(idx))
        out = None
        for k in range(length):  # strided row views: whole contiguous rows, vectorised
            wk = wt[:, 0, k, 0]
            if not bool(wk.any()):
                continue
            term = padded[:, k : k + (m - 1) * r + 1 : r, :] * wk.reshape(c, 1, 1)
            out = term if out is None else out.add_(term)
        assert out is not None
        y = out
    return y.transpose(1, 2).contiguous()


def _consistency_add(task: _Task, out: np.ndarray, v_out: np.ndarray, lr: np.ndarray, lr_valid: np.ndarray) -> None:
    """Accumulate degrade(SR) against the input over one tile (tile borders reflected)."""
    from medsat_sr.degrade import psf_decimate

    assert task.ratio is not None and task.sigma is not None
    n = out.shape[0]
    # a central crop of at most CONSISTENCY_CROP input pixels a side: a sample, at a fixed cost
    cuts = []
    for a in range(2):
        m = lr.shape[1 + a]
        k = min(m, CONSISTENCY_CROP)
        i0 = (m - k) // 2
        cuts.append((i0, i0 + k))
    if any(c != (0, lr.shape[1 + a]) for a, c in enumerate(cuts)):
        (a0, a1), (b0, b1) = cuts
        fr, fc = task.ratio[0], task.ratio[1]
        if fr.denominator == 1 and fc.denominator == 1:
            out = out[:, a0 * int(fr) : a1 * int(fr), b0 * int(fc) : b1 * int(fc)]
            v_out = v_out[:, a0 * int(fr) : a1 * int(fr), b0 * int(fc) : b1 * int(fc)]
            lr, lr_valid = lr[:, a0:a1, b0:b1], lr_valid[:, a0:a1, b0:b1]
    if task.sse is None:
        task.sse, task.count = np.zeros(n), np.zeros(n)
        task.vmin, task.vmax = np.full(n, np.inf), np.full(n, -np.inf)
    # invalid pixels are excluded through the degraded mask; zero them so that no NaN spreads
    x = torch.from_numpy(np.where(v_out, out, 0.0).astype(np.float32))
    inval = torch.from_numpy((~v_out).astype(np.float32))
    if all(r.denominator == 1 for r in task.ratio) and all(out.shape[1 + a] % int(task.ratio[a]) == 0 for a in range(2)):
        f = [int(task.ratio[0]), int(task.ratio[1])]
        with torch.inference_mode():
            deg = _decimate(x, f, task.sigma).numpy()
            if v_out.all():
                dm = np.ones(deg.shape, bool)
            else:
                dm = _decimate(inval, f, task.sigma).numpy() == 0.0  # no invalid pixel under the kernel
    else:
        factor = (float(task.ratio[0]), float(task.ratio[1]))
        degs, masks = [], []
        for b in range(n):
            d, m = psf_decimate(x[b : b + 1], factor, sigma=task.sigma[b], mask=~(inval[b : b + 1] > 0), spatial_dims=2)
            degs.append(d[0].numpy())
            masks.append(m[0].numpy())
        deg, dm = np.stack(degs), np.stack(masks)
    if deg.shape[1:] != lr.shape[1:]:
        return
    for b in range(n):
        ok = dm[b] & lr_valid[b]
        if ok.any():
            diff = deg[b][ok].astype(np.float64) - lr[b][ok]
            task.sse[b] += float((diff * diff).sum())
            task.count[b] += int(ok.sum())
        vals = lr[b][lr_valid[b]]
        if vals.size:
            task.vmin[b] = min(task.vmin[b], float(vals.min()))
            task.vmax[b] = max(task.vmax[b], float(vals.max()))


def _consistency_result(tasks: list[_Task]) -> dict[str, Any]:
    psnr: dict[str, float | None] = {}
    ranges: dict[str, float | None] = {}
    for t in tasks:
        if t.sse is None or t.count is None or t.vmin is None or t.vmax is None:
            continue
        for k, band in enumerate(t.bands):
            rng = float(t.vmax[k] - t.vmin[k]) if np.isfinite(t.vmax[k] - t.vmin[k]) else None
            ranges[band] = rng
            if not t.count[k] or not rng:
                psnr[band] = None
                continue
            mse = t.sse[k] / t.count[k]
            psnr[band] = math.inf if mse == 0 else 10.0 * math.log10(rng * rng / mse)
    return {"psnr": psnr, "data_range": ranges}


# =============================================================== raster sinks


def _encode(
    data: np.ndarray,
    valid: np.ndarray,
    dt: np.dtype,
    nodata: float | None,
    scales: Sequence[float] | None,
    offsets: Sequence[float] | None,
) -> tuple[np.ndarray, int]:
    """Physical values and an explicit validity mask to stored values; returns ``(raw, n_clipped)``.

    The policy of :func:`medsat_sr.io.geotiff.encode_values` (inverse
    scale/offset, round half to even, clip to the dtype), except that
    validity comes from the mask, so a valid value that happens to equal the
    nodata value stays valid (moved one stored step away from it).
    """
    nb = data.shape[0]
    sc = [1.0] * nb if scales is None else [float(v) for v in scales]
    of = [0.0] * nb if offsets is None else [float(v) for v in offsets]
    out = np.empty(data.shape, dtype=dt)
    clipped = 0
    nan_nodata = nodata is not None and math.isnan(nodata)
    for b in range(nb):
        if sc[b] != 1.0 or of[b] != 0.0:
            vals = (data[b].astype(np.float64) - of[b]) / sc[b]
        else:  # float32 holds every 16-bit value exactly; rounding and clipping stay exact
            vals = data[b].astype(np.float64 if dt.itemsize > 2 or dt.kind == "f" else np.float32, copy=True)
        inval = ~valid[b] | ~np.isfinite(vals)
        if dt.kind == "f":
            if nodata is not None and not nan_nodata:
                hit = ~inval & (vals.astype(dt) == dt.type(nodata))
                vals[hit] = np.nextafter(dt.type(nodata), dt.type(np.inf))
            vals[inval] = np.nan if (nodata is None or nan_nodata) else nodata
            out[b] = vals
            continue
        info = np.iinfo(dt)
        vals = np.rint(np.where(inval, 0.0, vals))
        clipped += int((((vals < info.min) | (vals > info.max)) & ~inval).sum())
        np.clip(vals, info.min, info.max, out=vals)
        if nodata is not None and not nan_nodata:
            hit = ~inval & (vals == nodata)
            vals[hit] = nodata + 1 if nodata + 1 <= info.max else nodata - 1
            vals[inval] = nodata
        else:
            vals[inval] = 0
        out[b] = vals
    return out, clipped


class _Sink:
    """Where output windows go: one multi-band GTiff, a folder of band files, or memory."""

    def __init__(
        self,
        *,
        path: Path | None,
        folder: bool,
        bands: list[str],
        band_meta: list[tuple[dict[str, Any], int]],
        shape: tuple[int, int],
        transform: tuple[float, ...],
        crs: str | None,
        nodata: float | None,
        dtype: str,
        scales: list[float] | None,
        offsets: list[float] | None,
        masked: bool,
        cog: bool,
        compress: str,
        blocksize: int,
        base_meta: dict[str, Any],
    ) -> None:
        self.path, self.folder = path, folder
        self.bands, self.band_meta = bands, band_meta
        self.shape, self.transform, self.crs, self.nodata = shape, transform, crs, nodata
        self.dt = np.dtype(dtype)
        self.scales, self.offsets = scales, offsets
        self.masked, self.cog, self.compress, self.blocksize = masked, cog, compress, blocksize
        self.base_meta = base_meta
        self.dsts: list[Any] = []
        self.data: np.ndarray | None = None
        self.valid: np.ndarray | None = None
        self.clipped = 0

    def _meta(self, band_pos: Sequence[int]) -> dict[str, Any]:
        meta = dict(self.base_meta)
        header = dict(meta.get(Key.HEADER) or {})
        for key in ("band_tags", "descriptions", "colorinterp", "units", "dtypes", "mask_flags"):
            vals = []
            for p in band_pos:
                gmeta, i = self.band_meta[p]
                lst = (gmeta.get(Key.HEADER) or {}).get(key)
                vals.append(lst[i] if isinstance(lst, list) and i < len(lst) else None)
            header[key] = vals
        if len(band_pos) == 1:
            gmeta, i = self.band_meta[band_pos[0]]
            bdt = (gmeta.get(Key.HEADER) or {}).get("band_dataset_tags")
            if isinstance(bdt, list) and i < len(bdt):
                header["tags"] = dict(bdt[i])
        header.pop("band_dataset_tags", None)
        header.pop("files", None)
        meta[Key.HEADER] = header
        meta[Key.BAND_NAMES] = [self.bands[p] for p in band_pos]
        meta[Key.TRANSFORM] = self.transform
        meta[Key.CRS] = self.crs
        meta[Key.NODATA] = self.nodata
        meta[Key.SCALES] = None if self.scales is None else [self.scales[p] for p in band_pos]
        meta[Key.OFFSETS] = None if self.offsets is None else [self.offsets[p] for p in band_pos]
        return meta

    def open(self, stack: Any) -> None:
        from medsat_sr._atomic import atomic_dir
        from medsat_sr.io import geotiff

        if self.path is None:
            self.data = np.empty((len(self.bands), *self.shape), np.float32)
            self.valid = np.empty((len(self.bands), *self.shape), bool)
            return
        groups = [[p] for p in range(len(self.bands))] if self.folder else [list(range(len(self.bands)))]
        root = stack.enter_context(atomic_dir(self.path)) if self.folder else None
        for pos in groups:
            meta = self._meta(pos)
            profile = geotiff.build_profile(
                meta, dtype=self.dt, count=len(pos), height=self.shape[0], width=self.shape[1],
                compress=self.compress, blocksize=self.blocksize,
            )
            if profile.get("compress"):
                # no GDAL compression threads: on few cores they compete with the network's threads
                level = WRITER_LEVELS.get(str(profile["compress"]).lower())
                if level is not None:
                    profile[level[0]] = level[1]
            target = root / f"{self.bands[pos[0]]}.tif" if root is not None else self.path
            dst = stack.enter_context(geotiff.open_writer(target, profile, cog=self.cog))
            geotiff._apply_metadata(
                dst, meta, len(pos),
                None if self.scales is None else meta[Key.SCALES],
                None if self.offsets is None else meta[Key.OFFSETS],
                names_in_file=not self.folder,
            )
            self.dsts.append((dst, pos))

    def write(self, data: np.ndarray, valid: np.ndarray, r0: int, r1: int, c0: int, c1: int) -> None:
        """Store one output window.

        Synchronous on purpose: a background writer (or GDAL compression
        threads) competes with the network's threads for the cores, and on a
        2-core machine that made bf16 inference slower, not faster.
        """
        if self.data is not None and self.valid is not None:
            self.data[:, r0:r1, c0:c1] = data
            self.valid[:, r0:r1, c0:c1] = valid
            return
        self._write_now(data, valid, r0, r1, c0, c1)

    def _write_now(self, data: np.ndarray, valid: np.ndarray, r0: int, r1: int, c0: int, c1: int) -> None:
        from rasterio.windows import Window

        win = Window(c0, r0, c1 - c0, r1 - r0)
        for dst, pos in self.dsts:
            sc = None if self.scales is None else [self.scales[p] for p in pos]
            of = None if self.offsets is None else [self.offsets[p] for p in pos]
            raw, clipped = _encode(data[pos], valid[pos], self.dt, self.nodata, sc, of)
            self.clipped += clipped
            dst.write(raw, window=win)
            if self.masked:
                dst.write_mask(np.all(valid[pos], axis=0).astype(np.uint8) * 255, window=win)

    def image(self) -> MetaTensor:
        """The in-memory output (invalid pixels hold nodata, or NaN without one)."""
        assert self.data is not None and self.valid is not None
        data = self.data
        nod = self.nodata
        if not self.valid.all():
            data = data.copy()
            data[~self.valid] = np.float32(nod) if nod is not None and not math.isnan(nod) else np.float32(np.nan)
        meta = self._meta(list(range(len(self.bands))))
        extra: dict[str, Any] = {"valid_mask": self.valid.all(axis=0)} if self.masked else {}
        return make_raster(
            data,
            self.transform,
            crs=self.crs,
            nodata=nod,
            band_names=self.bands,
            scales=self.scales,
            offsets=self.offsets,
            source_dtype=self.dt.name,
            source_format=self.base_meta.get(Key.SOURCE_FORMAT),
            source_path=self.base_meta.get(Key.SOURCE_PATH),
            header=meta[Key.HEADER],
            **extra,
        )


# =============================================================== raster job


def _psf_sigmas(profile: Any, ratio: float, bands: Sequence[str]) -> list[float]:
    """Consistency PSF sigma (high-res pixels) per band: the profile's, else FWHM = 1 low-res pixel."""
    from medsat_sr.degrade import fwhm_to_sigma

    out = []
    for b in bands:
        sigma = None
        if profile is not None and ratio >= 1:
            try:
                sigma = profile.psf_sigma(ratio, band=b) if profile.degradation.psf.shape == "gaussian" else 0.0
            except (MedsatError, TypeError, ValueError):
                sigma = None
        out.append(float(sigma) if sigma is not None else fwhm_to_sigma(ratio))
    return out


def _guide_for(groups: list[_Group], target: _Group, names: list[str] | None, n_guide: int) -> tuple[_Group, list[int]]:
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


def _bind_members(members: list[Member], task: _Task, profile: Any, fit_norm: Any) -> None:
    """Fit each member's normalisers on the group's sample (the same for every tile).

    Targets use the checkpoint's (or the fit's) ``normalisation``, guides its
    ``guide_normalisation`` (else the same spec), re-fitted on this input by
    :meth:`medsat_sr.normalise.Normaliser.for_inference`.
    """
    spec = profile.normalisation if profile is not None else None
    target_img = task.group.subset(task.idx)
    guide_img = task.guide.subset(task.guide_idx) if task.guide is not None and task.guide_idx is not None else None
    for m in members:
        meta = m.info.get("_meta") or {}
        stats = fit_norm if fit_norm is not None else meta.get("normalisation")
        if m.normaliser is None:
            m.normaliser = fit_normaliser(stats, target_img, spec)
        if m.guided and guide_img is not None and m.guide_normaliser is None:
            gstats = meta.get("guide_normalisation") or (stats.to_dict() if hasattr(stats, "to_dict") else stats)
            m.guide_normaliser = fit_normaliser(gstats, guide_img, spec)


def run_raster(groups: list[_Group], **kwargs: Any) -> tuple[MetaTensor | None, MetaTensor | None, dict[str, Any]]:
    """Upscale raster groups window by window (see :func:`_run_raster` for the arguments).

    Everything, the whole-scene statistics included, runs inside
    :func:`~medsat_sr.io.geotiff.gdal_env`: outside it GDAL's block cache is
    5 % of the RAM, and the decimated statistics read of a large scene fills it.
    """
    from medsat_sr.io.geotiff import gdal_env

    with gdal_env():
        return _run_raster(groups, **kwargs)


def _run_raster(
    groups: list[_Group],
    *,
    members: list[Member] | None,
    method: str | None,
    scale: Any,
    settings: Any,
    profile: Any,
    targets: list[str] | None,
    guides: list[str] | None,
    fit_norm: Any,
    output: Path | None,
    folder: bool,
    progress: bool,
    fit_weights_method: str | None = None,
    others: str = "cubic",
) -> tuple[MetaTensor | None, MetaTensor | None, dict[str, Any]]:
    """Upscale raster groups window by window (see :mod:`medsat_sr.inference` for the design).

    Args:
        groups: the input grids, finest first (one for a raster, several for a band set).
        members: networks to apply (``None`` with ``method``).
        method: classical method for a plain raster, and for coarse band-set groups.
        scale: plain rasters: the scale (default: the model's); band sets: must be ``None``.
        settings: the resolved options (precision, TTA, tiling, dtype, COG, ...).
        profile: the domain profile (normalisation spec, consistency PSF), or ``None``.
        targets, guides: band names a band-set model sharpens and is guided by.
        fit_norm: the normaliser of a self-supervised fit, used instead of checkpoint stats.
        output: the GeoTIFF (or band folder) to stream into; ``None`` keeps the result in memory.
        folder: write one file per band into the folder ``output``.
        progress: show a progress bar over tiles.
        fit_weights_method: ``"lstsq"``/``"softmax"`` to fit ensemble weights on a Wald split first.

    Returns:
        ``(image, std, info)``: in-memory results when ``output`` is ``None``,
        and what the trust record needs (tiles, tasks, consistency, ...).
    """
    bandset = len(groups) > 1
    info: dict[str, Any] = {}
    if not bandset:
        g = groups[0]
        if members:
            s = members[0].scale
            for m in members[1:]:
                if not np.allclose(m.scale, s):
                    raise ModelError(f"ensemble members have different scales: {[m.scale for m in members]}")
            if scale is not None and not np.allclose(as_scale(scale, 2), s, atol=1e-6):
                raise ModelError(f"the model upscales by {list(s)}, but scale {scale} was asked for")
        elif scale is None:
            raise ConfigError("a classical method needs a scale (--scale)")
        else:
            s = tuple(as_scale(scale, 2))
        if len(s) != 2:
            raise ModelError(f"a raster needs a 2D model; this one has scale {list(s)}")
        out_shape = tuple(scaled_shape(g.shape, s))
        eff = effective_scale(g.shape, s)
        out_t = scale_transform(g.transform, eff)
        tasks = [_Task(kind="model" if members else "resample", group=g, idx=list(range(len(g.bands))), method=method or "cubic")]
        info["scale"] = {"requested": list(s), "effective": eff.tolist()}
    else:
        if scale is not None:
            raise ConfigError("a band set is upscaled onto its finest grid; scale does not apply (leave --scale out)")
        fine = groups[0]
        out_shape, out_t = fine.shape, fine.transform
        tasks = [_Task(kind="pass", group=fine, idx=list(range(len(fine.bands))))]
        target_group = None
        if members:
            n_in = int(members[0].model.in_channels)
            if targets:
                hits = [g for g in groups if all(t in g.bands for t in targets)]
                if not hits:
                    raise ModelError(f"the model's target bands {targets} are not all on one grid of the band set ({[(g.name, g.bands) for g in groups]})")
                target_group = hits[0]
                tidx = [target_group.bands.index(t) for t in targets]
            else:
                cands = [g for g in groups[1:] if len(g.bands) == n_in]
                if len(cands) != 1:
                    raise ModelError(f"cannot tell which bands the model ({n_in} input bands) sharpens; name them in the checkpoint (band_names) or the config (bands.targets)")
                target_group, tidx = cands[0], list(range(n_in))
            if len(tidx) != n_in:
                raise ModelError(f"the model takes {n_in} bands, {len(tidx)} target bands {targets} were given")
            task = _Task(kind="model", group=target_group, idx=tidx)
            if any(m.guided for m in members):
                task.guide, task.guide_idx = _guide_for(groups, target_group, guides, int(members[0].model.guide_channels))
            tasks.append(task)
            rest = [i for i in range(len(target_group.bands)) if i not in tidx]
            if rest and others != "drop":
                tasks.append(_Task(kind="resample", group=target_group, idx=rest, method="cubic"))
        for g in groups[1:]:
            if g is target_group:
                continue
            if members and others == "drop":
                continue
            tasks.append(_Task(kind="resample", group=g, idx=list(range(len(g.bands))), method=(method or "cubic") if not members else "cubic"))
    for t in tasks:
        t.ratio = _nested_ratio(t.group, out_shape, out_t) if t.kind != "pass" else (Fraction(1), Fraction(1))
        if t.kind == "model" and t.ratio is None:
            raise GeometryError(f"band group {t.group.name} is not nested in the output grid; a model needs grids that are exact multiples of each other")
        _nearest_map(t, out_shape, out_t)
    # output band order
    from medsat_sr.io.geotiff import band_sort_key

    entries = [(t, k) for t in tasks for k in range(len(t.idx))]
    if bandset:
        entries.sort(key=lambda e: band_sort_key(e[0].bands[e[1]]))
    out_bands = [t.bands[k] for t, k in entries]
    for pos, (t, k) in enumerate(entries):
        t.out_pos.append(pos)
    # models: normalisers, fill values, halo, the ensemble
    ensemble: Ensemble | None = None
    model_task = next((t for t in tasks if t.kind == "model"), None)
    if model_task is not None and members:
        _bind_members(members, model_task, profile, fit_norm)
        transforms = tta_for(members[0].scale, settings.tta)
        if fit_weights_method is not None and len(members) > 1:
            model_task.sigma = _psf_sigmas(profile, float(model_task.ratio[0]), model_task.bands) if model_task.ratio else None
            ws, winfo = _wald_weights_raster(fit_weights_method, members, model_task, profile)
            for m, w in zip(members, ws):
                m.weight = w
            info["weights"] = {**winfo, "weights": ws}
        ensemble = Ensemble(members, transforms=transforms, precision=settings.precision, device=settings.device, uncertainty=settings.uncertainty)
        model_task.ensemble = ensemble
        rf = [max(int(m.model.receptive_field_per_axis[a]) for m in members) for a in range(2)]
        h = int(settings.halo) if settings.halo is not None else 0
        model_task.halo = (max(rf[0], h), max(rf[1], h))
        model_task.fill = model_task.group.fill_values()[model_task.idx]
        if model_task.guide is not None and model_task.guide_idx is not None:
            model_task.guide_fill = model_task.guide.fill_values()[model_task.guide_idx]
        info["tta"] = [t.describe() for t in ensemble.transforms]
        info["halo"] = list(model_task.halo)
    for g in groups:  # the statistics are bound: free the decimated samples before the tile loop
        g._sample = None
    _release_heap()
    for t in tasks:
        if t.kind != "pass" and t.ratio is not None:
            t.sigma = _psf_sigmas(profile, float(t.ratio[0]), t.bands)
    # sinks
    used = [t.group for t in tasks]
    dt = np.dtype("float32") if settings.dtype == "float32" else np.result_type(*[np.dtype(g.dtype) for g in used])
    nodata = next((g.nodata for g in used if g.nodata is not None), None)
    scaled = settings.dtype != "float32" and any(g.scales is not None for g in used)
    band_meta: list[tuple[dict[str, Any], int]] = []
    scales: list[float] | None = [] if scaled else None
    offsets: list[float] | None = [] if scaled else None
    for t, k in entries:
        band_meta.append((t.group.meta, t.idx[k]))
        if scales is not None and offsets is not None:
            scales.append(float(t.group.scales[t.idx[k]]) if t.group.scales else 1.0)
            offsets.append(float(t.group.offsets[t.idx[k]]) if t.group.offsets else 0.0)
    masked = nodata is None and any(g.masked for g in used)
    tile_rc = _tile_sizes(tasks, out_shape, settings.tile_size or DEFAULT_TILE_RASTER)
    bs = next((b for b in (512, 256, 128, 64, 32, 16) if all(tile_rc[a] % b == 0 or tile_rc[a] == out_shape[a] for a in range(2))), 256)
    base_meta = dict(groups[0].meta)
    sink = _Sink(
        path=output, folder=folder, bands=out_bands, band_meta=band_meta, shape=out_shape, transform=tuple(out_t),
        crs=groups[0].crs, nodata=nodata, dtype=dt.name, scales=scales, offsets=offsets, masked=masked,
        cog=settings.cog, compress=settings.compress, blocksize=bs, base_meta=base_meta,
    )
    std_sink = None
    std_bands: list[str] = []
    if ensemble is not None and settings.uncertainty and model_task is not None:
        std_bands = [f"{b}_std" for b in model_task.bands]
        model_task.std_pos = list(range(len(std_bands)))
        std_meta = {Key.HEADER: {"tags": {"MEDSAT_SR_LAYER": "standard deviation across ensemble members"}}, Key.SOURCE_FORMAT: "geotiff", Key.SOURCE_PATH: base_meta.get(Key.SOURCE_PATH)}
        std_sink = _Sink(
            path=std_path(output) if output is not None else None, folder=False, bands=std_bands,
            band_meta=[({}, 0)] * len(std_bands), shape=out_shape, transform=tuple(out_t), crs=groups[0].crs,
            nodata=float("nan"), dtype="float32", scales=None, offsets=None, masked=False,
            cog=settings.cog, compress=settings.compress, blocksize=bs, base_meta=std_meta,
        )
    info["tile"] = list(tile_rc)
    info["output_shape"] = list(out_shape)
    info["output_transform"] = list(out_t)
    info["bands"] = out_bands
    info["tasks"] = [
        {"kind": t.kind, "group": t.group.name, "bands": t.bands, **({"method": t.method} if t.kind == "resample" else {})}
        for t in tasks
    ]
    tiles = list(_out_tiles(out_shape, tile_rc))
    stride = max(1, math.ceil(len(tiles) / CONSISTENCY_TILES))
    from contextlib import ExitStack

    from medsat_sr.io.geotiff import gdal_env

    with ExitStack() as stack:
        stack.enter_context(gdal_env())
        sink.open(stack)
        if std_sink is not None:
            std_sink.open(stack)
        for k, (r0, r1, c0, c1) in enumerate(progress_over(tiles, progress, "upscale")):
            out = np.empty((len(out_bands), r1 - r0, c1 - c0), np.float32)
            valid = np.empty(out.shape, bool)
            std_out = np.full((len(std_bands), r1 - r0, c1 - c0), np.nan, np.float32) if std_sink is not None else None
            for t in tasks:
                _run_task(t, r0, r1, c0, c1, out, valid, std_out, out_t, k % stride == 0)
            sink.write(out, valid, r0, r1, c0, c1)
            if std_sink is not None and std_out is not None:
                std_sink.write(std_out, np.isfinite(std_out), r0, r1, c0, c1)
            del out, valid, std_out
            _release_heap()
    if sink.clipped:
        logger.warning("%d output values fell outside the %s range and were clipped", sink.clipped, dt.name)
    info["clipped_values"] = int(sink.clipped)
    info["consistency"] = _consistency_result(tasks)
    info["consistency"]["tiles"] = {"used": len(range(0, len(tiles), stride)), "of": len(tiles)}
    info["output_dtype"] = dt.name
    info["nodata"] = nodata
    image = sink.image() if output is None else None
    std = std_sink.image() if std_sink is not None and output is None else None
    info["std_output"] = str(std_path(output)) if std_sink is not None and output is not None else None
    return image, std, info


def _run_task(
    t: _Task,
    r0: int, r1: int, c0: int, c1: int,
    out: np.ndarray,
    valid: np.ndarray,
    std_out: np.ndarray | None,
    out_t: Sequence[float],
    consistency: bool,
) -> None:
    """Fill the output rows of task ``t`` for the output window ``[r0, r1) x [c0, c1)``."""
    g = t.group
    pos = t.out_pos
    if t.kind == "pass":
        d, v = g.read(r0, r1, c0, c1)
        out[pos], valid[pos] = d[t.idx], v[t.idx]
        return
    assert t.near_rows is not None and t.near_cols is not None
    rows, cols = t.near_rows[r0:r1], t.near_cols[c0:c1]
    if t.kind == "resample":
        sr0, sr1 = max(0, int(rows.min()) - baselines.GDAL_HALO), min(g.height, int(rows.max()) + 1 + baselines.GDAL_HALO)
        sc0, sc1 = max(0, int(cols.min()) - baselines.GDAL_HALO), min(g.width, int(cols.max()) + 1 + baselines.GDAL_HALO)
        d, v = g.read(sr0, sr1, sc0, sc1)
        d, v = d[t.idx], v[t.idx]
        from medsat_sr.geometry import crop_transform

        res = baselines.resample_raster_window(
            d, crop_transform(g.transform, sr0, sc0), (r1 - r0, c1 - c0), crop_transform(out_t, r0, c0),
            crs=g.crs, method=t.method, valid=v, nearest_rows=rows - sr0, nearest_cols=cols - sc0,
        )
        v_out = v[:, rows - sr0][:, :, cols - sc0]
        out[pos], valid[pos] = res, v_out
        if consistency and t.sigma is not None and t.ratio is not None:
            lr = _lr_core(t, r0, r1, c0, c1)
            if lr is not None:
                a0, a1, b0, b1 = lr
                _consistency_add(t, res, v_out, d[:, a0 - sr0 : a1 - sr0, b0 - sc0 : b1 - sc0], v[:, a0 - sr0 : a1 - sr0, b0 - sc0 : b1 - sc0])
        return
    # model
    assert t.ratio is not None and t.ensemble is not None and t.fill is not None
    (pr, qr), (pc, qc) = (t.ratio[0].numerator, t.ratio[0].denominator), (t.ratio[1].numerator, t.ratio[1].denominator)
    g0, g1 = r0 * qr // pr, -(-r1 * qr // pr)
    h0, h1 = c0 * qc // pc, -(-c1 * qc // pc)
    rr0 = max(0, g0 - t.halo[0]) // qr * qr
    rr1 = min(g.height, -(-(g1 + t.halo[0]) // qr) * qr)
    cc0 = max(0, h0 - t.halo[1]) // qc * qc
    cc1 = min(g.width, -(-(h1 + t.halo[1]) // qc) * qc)
    d, v = g.read(rr0, rr1, cc0, cc1)
    d, v = d[t.idx], v[t.idx]
    x = np.where(v, d, t.fill[:, None, None]).astype(np.float32, copy=False)
    size = ((rr1 - rr0) * pr // qr, (cc1 - cc0) * pc // qc)
    guide = None
    if t.guide is not None and t.guide_idx is not None and t.guide_fill is not None:
        gd, gv = t.guide.read(rr0 * pr // qr, rr1 * pr // qr, cc0 * pc // qc, cc1 * pc // qc)
        gd, gv = gd[t.guide_idx], gv[t.guide_idx]
        guide = torch.from_numpy(np.where(gv, gd, t.guide_fill[:, None, None]).astype(np.float32))[None]
    mean, var = t.ensemble.predict(torch.from_numpy(np.ascontiguousarray(x))[None], size, guide=guide)
    o0, o1 = r0 - rr0 * pr // qr, r1 - rr0 * pr // qr
    p0, p1 = c0 - cc0 * pc // qc, c1 - cc0 * pc // qc
    res = mean[0, :, o0:o1, p0:p1].numpy()
    v_out = _upsample_valid(v, rows - rr0, cols - cc0)
    out[pos], valid[pos] = res, v_out
    if std_out is not None and var is not None and t.std_pos is not None:
        sd = var[0, :, o0:o1, p0:p1].sqrt().numpy()
        std_out[t.std_pos] = np.where(v_out, sd, np.nan)
    if consistency and t.sigma is not None:
        _consistency_add(t, res, v_out, d[:, g0 - rr0 : g1 - rr0, h0 - cc0 : h1 - cc0], v[:, g0 - rr0 : g1 - rr0, h0 - cc0 : h1 - cc0])


_LIBC: Any = None


def _release_heap() -> None:
    """Give freed heap memory back to the OS (glibc ``malloc_trim``), once per tile.

    glibc raises its mmap threshold after large blocks are freed, so the
    tile-sized tensors of later tiles come from the heap, whose freed pages
    are kept: without trimming, the resident size creeps up with the number
    of tiles instead of staying flat. A no-op where glibc is not available.
    """
    global _LIBC
    if _LIBC is None:
        try:
            import ctypes

            _LIBC = ctypes.CDLL("libc.so.6")
            _LIBC.malloc_trim.argtypes = [ctypes.c_size_t]
        except (OSError, AttributeError):
            _LIBC = False
    if _LIBC:
        _LIBC.malloc_trim(0)


def _upsample_valid(v: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """``v[:, rows][:, :, cols]``: the nearest-upsampled validity (all valid: no gather)."""
    if v.all():
        return np.ones((v.shape[0], rows.size, cols.size), dtype=bool)
    return v[:, rows][:, :, cols]


def _lr_core(t: _Task, r0: int, r1: int, c0: int, c1: int) -> tuple[int, int, int, int] | None:
    """The group window that an aligned output window covers exactly, else ``None``."""
    assert t.ratio is not None
    (pr, qr), (pc, qc) = (t.ratio[0].numerator, t.ratio[0].denominator), (t.ratio[1].numerator, t.ratio[1].denominator)
    if r0 * qr % pr or c0 * qc % pc or (r1 * qr % pr and r1 != t.near_rows.size) or (c1 * qc % pc and c1 != t.near_cols.size):  # type: ignore[union-attr]
        return None
    return r0 * qr // pr, -(-r1 * qr // pr), c0 * qc // pc, -(-c1 * qc // pc)








def _wald_weights_raster(method: str, members: list[Member], task: _Task, profile: Any) -> tuple[list[float], dict[str, Any]]:
    """Fit ensemble weights on a central window of the raster: targets (and guides) degraded by the scale."""
    from medsat_sr.fusion import fit_weights

    assert task.ratio is not None
    g = task.group
    r = [int(task.ratio[a]) for a in range(2)]
    if any(abs(float(task.ratio[a]) - r[a]) > 1e-9 for a in range(2)):
        raise ConfigError("fitted ensemble weights need an integer scale; give the weights (--weights w1,w2)")
    (r0, r1), (c0, c1) = centre(g.height, WEIGHT_CROP[2], r[0]), centre(g.width, WEIGHT_CROP[2], r[1])
    d, v = g.read(r0, r1, c0, c1)
    d, v = d[task.idx], v[task.idx]
    fill = task.group.fill_values()[task.idx]
    ref = torch.from_numpy(np.where(v, d, fill[:, None, None]).astype(np.float32))
    with torch.inference_mode():
        lr = _decimate(ref, r, task.sigma or _psf_sigmas(profile, float(r[0]), task.bands))
        guide = None
        if task.guide is not None and task.guide_idx is not None:
            gd, gv = task.guide.read(r0 * r[0], r1 * r[0], c0 * r[1], c1 * r[1])
            gd = np.where(gv, gd, task.guide.fill_values()[:, None, None])[task.guide_idx]
            gsig = _psf_sigmas(profile, float(r[0]), [task.guide.bands[i] for i in task.guide_idx])
            guide = _decimate(torch.from_numpy(gd.astype(np.float32)), r, gsig)[None]
    preds = [
        Ensemble([Member(m.model, normaliser=m.normaliser, guide_normaliser=m.guide_normaliser)]).predict(
            lr[None], tuple(ref.shape[1:]), guide=guide
        )[0][0]
        for m in members
    ]
    w = fit_weights(preds, ref, method=method, mask=torch.from_numpy(v),
                    data_range=float(ref.max() - ref.min()) or 1.0)
    return w, {"method": method, "split": f"central window {r1 - r0}x{c1 - c0} of {g.name}, degraded by {r[0]} (Wald)"}


def _groups_of(src: Any, files: _FileSet) -> list[_Group]:
    if src.raster is not None:
        if isinstance(src.raster, MetaTensor):
            return [_memory_group("image", src.raster)]
        return [_memory_group(n, g) for n, g in src.raster.groups.items()]
    with gdal_env():
        return _file_groups(src.path, src.kind, files)


def _raster_scale(groups: list[_Group], members: list[Member], scale: Any, cfg: Any) -> Any:
    """The scale of a single raster for every route (model, classical, fallback); ``None`` for band sets."""
    if len(groups) > 1:
        return scale
    if scale is not None:
        return scale
    if members:
        return tuple(members[0].scale)
    if cfg is not None:
        try:
            return cfg.scale_for(None)
        except MedsatError:
            return None
    return None


def upscale_raster(*, src: Any, mem: Any, decision: Any, method: str | None, scale: Any, opts: Any, profile: Any,
                   cfg: Any, out_path: Path | None, fmt: str | None, progress: bool, others: str) -> dict[str, Any]:
    """Run a raster plan: stream the networks (when the decision keeps them) or the classical method.

    A fallback writes the classical method at the network's scale, so it
    lands on the same grid the network would have given.

    Returns:
        What the trust record needs (see :func:`~medsat_sr.inference.volume.upscale_volume`).
    """
    files = _FileSet()
    try:
        groups = _groups_of(src, files)
        if fmt == "dicom" and len(groups) == 1:
            raise FormatError(f"{out_path}: a raster is written to a .tif file (a folder output is for band sets)")
        targets, guides = band_roles(cfg, mem.fit_meta, mem.members, profile)
        use = mem.members if decision.use_model else None
        if mem.members and len(groups) == 1:  # the model must fit the raster, whatever the decision
            _check_model_scale(mem.members, scale)
        opts = opts.model_copy(update={"cog": opts.cog or fmt == "cog"})
        image, std, info = run_raster(
            groups, members=use, method=method if use is None else None,
            scale=_raster_scale(groups, mem.members, scale, cfg) if use is None else scale,
            settings=opts, others=others, profile=profile, targets=targets, guides=guides, fit_norm=mem.fit_norm,
            output=out_path, folder=fmt == "dicom", progress=progress,
            fit_weights_method=mem.weights_method if use else None,
        )
    finally:
        files.close()
    std_out = Path(info.pop("std_output")) if info.get("std_output") else None
    info.pop("std_output", None)
    consistency = info.pop("consistency", {})
    weights = info.pop("weights", None)
    return {
        "image": image, "std": std, "std_output": std_out, "run_info": info, "consistency": consistency,
        "weights": weights, "timings": {"write": 0.0},
        "input": input_info(src.raster if src.raster is not None else groups, src.path, src.sha, src.kind),
        "output": {"shape": [len(info["bands"]), *info["output_shape"]], "transform": info["output_transform"],
                   "bands": info["bands"], "uncertainty": str(std_out) if std_out else None},
    }


def _check_model_scale(members: list[Member], scale: Any) -> None:
    s = members[0].scale
    for m in members[1:]:
        if not np.allclose(m.scale, s):
            raise ModelError(f"ensemble members have different scales: {[m.scale for m in members]}")
    if len(s) != 2:
        raise ModelError(f"a raster needs a 2D model; this one has scale {list(s)}")
    if scale is not None and not np.allclose(as_scale(scale, 2), s, atol=1e-6):
        raise ModelError(f"the model upscales by {list(s)}, but scale {scale} was asked for")

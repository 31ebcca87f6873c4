"""The raster route's sources: the input grids, read window by window.

A :class:`Group` is one grid of the input (a GeoTIFF, one resolution group
of a band folder, or an image already in memory) with a window reader and a
decimated sampler (statistics), both giving physical float32 values and
their validity (nodata, masks, non-finite values). Files stay open in a
:class:`FileSet` for the whole run, so peak memory depends on the tile size,
not on the scene.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import torch
from monai.data import MetaTensor
from rasterio.enums import Resampling
from rasterio.windows import Window

from medsat_sr import baselines
from medsat_sr.errors import FormatError, GeometryError
from medsat_sr.image import Key, make_raster
from medsat_sr.io import geotiff_bandset, geotiff_read
from medsat_sr.inference.options import DEFAULT_TILE_RASTER
from medsat_sr.io.geotiff_gdal import RASTERIO_ERRORS, gdal_env

logger = logging.getLogger("medsat_sr.inference")

#: Largest side (pixels) of the decimated read used for raster statistics
#: (percentiles and band medians; a million pixels per band is ample).
SAMPLE_SIDE = 1024


@dataclass
class Group:
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
            if self.meta.get("processing_baseline"):  # a Sentinel-2 product's DN offset (normalise.Normaliser.fit)
                extra["processing_baseline"] = self.meta["processing_baseline"]
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


def valid_of(data: np.ndarray, nodata: float | None, mask: np.ndarray | None) -> np.ndarray:
    valid = np.isfinite(data)
    if nodata is not None and not math.isnan(nodata):
        valid &= data != np.float32(nodata)
    if mask is not None:
        valid &= np.broadcast_to(mask, data.shape)
    return valid


def _nodata_or(meta: dict[str, Any], fallback: float | None, name: str) -> float | None:
    """The file's nodata; else ``fallback`` (the profile's), which ``meta`` then declares for the output."""
    nodata = meta.get(Key.NODATA)
    if nodata is None and fallback is not None:
        logger.info("%s (%s): declares no nodata; the profile's %g is nodata, as in the fit",
                    meta.get(Key.SOURCE_PATH), name, fallback)
        nodata = meta[Key.NODATA] = float(fallback)
    return nodata


def memory_group(name: str, img: MetaTensor, nodata: float | None = None) -> Group:
    """A group over an image already in memory (nodata and ``valid_mask`` give the validity).

    ``nodata`` is the value used where the file declares none (the profile's).
    """
    meta = dict(img.meta)
    meta.pop("affine", None)
    data = img.detach().cpu().as_subclass(torch.Tensor).numpy()
    if data.dtype != np.float32:
        data = data.astype(np.float32)
    nodata = _nodata_or(meta, nodata, name)
    vm = meta.get("valid_mask")
    vm = None if vm is None else np.asarray(vm, dtype=bool)

    def reader(r0: int, r1: int, c0: int, c1: int) -> tuple[np.ndarray, np.ndarray]:
        d = data[:, r0:r1, c0:c1]
        m = None if vm is None else vm[..., r0:r1, c0:c1]
        return d, valid_of(d, nodata, m)

    def sampler(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
        ri, ci = baselines.nearest_index(data.shape[1], h), baselines.nearest_index(data.shape[2], w)
        d = np.ascontiguousarray(data[:, ri][:, :, ci])
        m = None if vm is None else vm[..., ri, :][..., ci]
        return d, valid_of(d, nodata, m)

    header = meta.get(Key.HEADER) if isinstance(meta.get(Key.HEADER), Mapping) else {}
    block = tuple(header.get("block_shape") or (DEFAULT_TILE_RASTER, DEFAULT_TILE_RASTER))
    return Group(
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


class FileSet:
    """The rasterio datasets of a streamed run, closed together."""

    def __init__(self) -> None:
        self.datasets: list[Any] = []

    def open(self, path: Path) -> Any:
        try:
            ds = rasterio.open(path)
        except RASTERIO_ERRORS as exc:
            raise FormatError(f"{path}: cannot read raster: {exc}") from exc
        self.datasets.append(ds)
        return ds

    def close(self) -> None:
        for ds in self.datasets:
            ds.close()
        self.datasets.clear()


def file_reader(
    datasets: list[Any], indexes: list[list[int]], nodata: float | None, scaled: bool, alphas: list[list[int]]
) -> tuple[Callable, Callable, bool]:
    """Window reader and sampler over open datasets, stacked in order (values as :func:`geotiff.read` gives).

    ``alphas``: each dataset's alpha bands read as its mask (the reader's ``header["alpha_band"]``).
    """
    masked = [geotiff_read.has_dataset_mask(ds, a) for ds, a in zip(datasets, alphas)]
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


def file_groups(path: Path, kind: str, files: FileSet, nodata: float | None = None) -> list[Group]:
    """Streamed groups of a GeoTIFF (one) or of a band folder (one per grid, finest first).

    The meta of each group is what the reader gives for a tiny window (so
    band names, grouping, scale/offset and header are exactly the reader's);
    the pixels are then read window by window from datasets kept open.
    ``nodata`` is the value used where the files declare none (the profile's).
    """
    entries: list[tuple[str, dict[str, Any], list[Path], list[list[int]], list[list[int]]]] = []
    if kind == "geotiff":
        head = geotiff_read.read(path, window=((0, 1), (0, 1)))
        h = head.meta[Key.HEADER]
        alpha = [] if h.get("alpha_band") is None else [int(h["alpha_band"])]
        entries.append(("image", dict(head.meta), [path], [list(h["band_indexes"])], [alpha]))
    else:  # one band per file: never an alpha mask (the reader keeps a lone band as data)
        head_set = geotiff_bandset.read_bandset(path, window=first_pixel_window(path))
        for gname, img in head_set.groups.items():
            paths = [Path(f) for f in img.meta[Key.HEADER]["files"]]
            entries.append((gname, dict(img.meta), paths, [[1]] * len(paths), [[]] * len(paths)))
    groups: list[Group] = []
    for gname, meta, paths, idx, alphas in entries:
        dss = [files.open(p) for p in paths]
        ds0 = dss[0]
        if any((ds.height, ds.width) != (ds0.height, ds0.width) for ds in dss[1:]):
            raise GeometryError(f"{path}: the files of band group {gname} differ in size")
        meta[Key.SOURCE_PATH] = str(path)
        nd = _nodata_or(meta, nodata, gname)
        reader, sampler, masked = file_reader(dss, idx, nd, meta.get(Key.SCALES) is not None, alphas)
        header = dict(meta.get(Key.HEADER) or {})
        header["source_shape"] = (int(ds0.height), int(ds0.width))
        header["window"] = (0, 0, int(ds0.height), int(ds0.width))
        meta[Key.HEADER] = header
        meta[Key.TRANSFORM] = tuple(float(v) for v in tuple(ds0.transform)[:6])
        meta.pop("valid_mask", None)
        meta.pop("affine", None)
        groups.append(
            Group(
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


def first_pixel_window(folder: Path) -> tuple[tuple[int, int], tuple[int, int]]:
    """A window on the finest grid that falls on whole pixels of every grid of a band folder."""
    sizes = []
    with gdal_env():
        for f in geotiff_bandset.band_files(folder):
            with rasterio.open(f) as src:
                sizes.append(abs(src.transform.a))
    fine = min(sizes)
    ratios = [max(1, round(s / fine)) for s in sizes]
    n = 1
    for r in ratios:
        n = n * r // math.gcd(n, r)
    return ((0, n), (0, n))



def groups_of(src: Any, files: FileSet, nodata: float | None = None) -> list[Group]:
    """The groups of a read source: in memory (a raster or a BandSet), else streamed from its file(s).

    ``nodata`` is the value used where the input declares none (the domain
    profile's: a Sentinel-2 GeoTIFF exported without a nodata tag, say; a
    SAFE product's bands get ESA's 0 from the reader itself).
    """
    if src.raster is not None:
        if isinstance(src.raster, MetaTensor):
            return [memory_group("image", src.raster, nodata)]
        return [memory_group(n, g, nodata) for n, g in src.raster.groups.items()]
    with gdal_env():
        return file_groups(src.path, src.kind, files, nodata)

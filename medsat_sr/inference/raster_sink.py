"""The raster route's sinks: output windows into one GTiff/COG, a folder of band files, or memory.

Values are encoded as :func:`medsat_sr.io.geotiff.encode_values` does
(inverse scale/offset, round half to even, clip to the dtype), with validity
from an explicit mask; files are written atomically (:mod:`medsat_sr._atomic`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from monai.data import MetaTensor
from rasterio.windows import Window

from medsat_sr._atomic import atomic_dir
from medsat_sr.image import Key, make_raster
from medsat_sr.io import geotiff_write

#: Compression levels of streamed outputs: fast ones. On Sentinel-2 and NAIP
#: products DEFLATE level 1 is 1.6-4.6x faster than GDAL's default 6 for files
#: 0-7 % larger (a COG copy recompresses with the COG driver's own level).
WRITER_LEVELS = {"deflate": ("zlevel", 1), "zstd": ("zstd_level", 1)}


def encode(
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


class Sink:
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
        if self.path is None:
            self.data = np.empty((len(self.bands), *self.shape), np.float32)
            self.valid = np.empty((len(self.bands), *self.shape), bool)
            return
        groups = [[p] for p in range(len(self.bands))] if self.folder else [list(range(len(self.bands)))]
        root = stack.enter_context(atomic_dir(self.path)) if self.folder else None
        for pos in groups:
            meta = self._meta(pos)
            profile = geotiff_write.build_profile(
                meta, dtype=self.dt, count=len(pos), height=self.shape[0], width=self.shape[1],
                compress=self.compress, blocksize=self.blocksize,
            )
            if profile.get("compress"):
                # no GDAL compression threads: on few cores they compete with the network's threads
                level = WRITER_LEVELS.get(str(profile["compress"]).lower())
                if level is not None:
                    profile[level[0]] = level[1]
            target = root / f"{self.bands[pos[0]]}.tif" if root is not None else self.path
            dst = stack.enter_context(geotiff_write.open_writer(target, profile, cog=self.cog))
            geotiff_write.apply_metadata(
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
        win = Window(c0, r0, c1 - c0, r1 - r0)
        for dst, pos in self.dsts:
            sc = None if self.scales is None else [self.scales[p] for p in pos]
            of = None if self.offsets is None else [self.offsets[p] for p in pos]
            raw, clipped = encode(data[pos], valid[pos], self.dt, self.nodata, sc, of)
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

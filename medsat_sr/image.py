"""The in-memory image: a MONAI MetaTensor plus documented meta keys.

Volumes are ``(C, X, Y, Z)`` float or integer tensors whose ``.affine`` (4x4,
float64) maps voxel *centres* ``(i, j, k)`` to RAS world millimetres, the
convention of NIfTI and MONAI. Channels hold echoes, time points or the
volumes of a 4D series.

Rasters are ``(C, H, W)`` tensors, one channel per band. Their authoritative
geometry is the rasterio/GDAL ``transform`` (pixel *corners*, PixelIsArea)
plus the CRS. ``.affine`` is kept consistent as the 3x3 matrix mapping pixel
centres ``(row, col)`` to map ``(x, y)`` so MONAI transforms see a valid grid.

Meta keys (all plain strings, also available as attributes of :class:`Key`):

============== =================================================================
key            value
============== =================================================================
kind           ``"volume"`` or ``"raster"``
spacing        voxel size per spatial axis (mm), or pixel size ``(x, y)`` in CRS units
orientation    volume axis codes such as ``"LPS"`` (nibabel ``aff2axcodes``)
transform      raster: 6 floats ``(a, b, c, d, e, f)`` of the corner affine
crs            raster: CRS as WKT (``None`` when the file has none)
nodata         raster: nodata value or ``None``
band_names     list of channel/band names
scales         raster: per-band scale factors (``None`` when unset)
offsets        raster: per-band offsets (``None`` when unset)
source_dtype   numpy dtype name of the stored pixels (``"int16"``, ``"uint16"``, ...)
intensity      mapping stored -> physical: ``{"slope": s, "intercept": b}`` (volumes)
source_format  ``"dicom"``, ``"nifti"`` or ``"geotiff"``
source_path    the path that was read
header         format-specific header the writer needs (see each io module)
valid_mask     raster: ``(H, W)`` bool mask from an internal GDAL mask band, when the file has one
============== =================================================================

DICOM volumes also carry ``modality``, ``series_uid``, ``series_key``,
``series_description``, ``gantry_tilt_deg``, ``n_volumes``, ``volume``,
``resampled`` and ``intensity_exact`` (see :mod:`medsat_sr.io.dicom`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor

from medsat_sr.errors import ConfigError, GeometryError
from medsat_sr.geometry import check_affine, spacing_and_orientation

__all__ = [
    "Key",
    "BandSet",
    "make_volume",
    "make_raster",
    "is_volume",
    "is_raster",
    "raster_centre_affine",
    "one_grid_raster",
]


class Key:
    """Names of the meta keys that medsat_sr reads and writes."""

    KIND = "kind"
    SPACING = "spacing"
    ORIENTATION = "orientation"
    TRANSFORM = "transform"
    CRS = "crs"
    NODATA = "nodata"
    BAND_NAMES = "band_names"
    SCALES = "scales"
    OFFSETS = "offsets"
    SOURCE_DTYPE = "source_dtype"
    INTENSITY = "intensity"
    SOURCE_FORMAT = "source_format"
    SOURCE_PATH = "source_path"
    HEADER = "header"


VOLUME = "volume"
RASTER = "raster"

#: The numeric dtypes the NIfTI and GeoTIFF writers accept for stored pixels.
NUMERIC_DTYPES: tuple[str, ...] = (
    "uint8", "int8", "uint16", "int16", "uint32", "int32", "uint64", "int64", "float32", "float64",
)


def writable_dtype(dtype: Any, fmt: str) -> np.dtype:
    """``dtype`` as a numpy dtype that the ``fmt`` writer (``"NIfTI"``, ``"GeoTIFF"``) can store.

    Raises:
        ConfigError: not a dtype, or not one of :data:`NUMERIC_DTYPES`.
    """
    try:
        dt = np.dtype(dtype)
    except TypeError as exc:
        raise ConfigError(f"invalid dtype {dtype!r}; expected one of {list(NUMERIC_DTYPES)}") from exc
    if dt.name not in NUMERIC_DTYPES:
        raise ConfigError(f"dtype {dt.name!r} cannot be written to {fmt}; expected one of {list(NUMERIC_DTYPES)}")
    return dt


def _as_tensor(data: np.ndarray | torch.Tensor) -> torch.Tensor:
    if isinstance(data, torch.Tensor):
        return data.as_subclass(torch.Tensor) if isinstance(data, MetaTensor) else data
    arr = np.asarray(data)
    if arr.dtype == np.uint16:  # torch has limited uint16 support; widen losslessly
        arr = arr.astype(np.int32)
    elif arr.dtype == np.uint32:
        arr = arr.astype(np.int64)
    return torch.from_numpy(np.ascontiguousarray(arr))


def make_volume(
    data: np.ndarray | torch.Tensor,
    affine: np.ndarray,
    *,
    source_dtype: str | None = None,
    intensity: Mapping[str, float] | None = None,
    band_names: Sequence[str] | None = None,
    source_format: str | None = None,
    source_path: str | None = None,
    header: Any = None,
    **extra: Any,
) -> MetaTensor:
    """Build a volume image.

    Args:
        data: array shaped ``(C, X, Y, Z)``.
        affine: 4x4 voxel-centre to RAS mm matrix.
        source_dtype: dtype of the stored pixels; defaults to ``data``'s dtype.
        intensity: stored-to-physical mapping (``slope``, ``intercept``).
        band_names: one name per channel.
        source_format: reader that produced it.
        source_path: the file or folder read.
        header: the format-specific header for writers.
        **extra: further meta entries.

    Returns:
        The MetaTensor with ``.affine`` and the meta keys set.

    Raises:
        GeometryError: wrong rank, or an affine that is not finite and invertible.
    """
    if data.ndim != 4:
        raise GeometryError(f"a volume must be shaped (C, X, Y, Z), got shape {tuple(data.shape)}")
    aff = np.asarray(affine, dtype=np.float64)
    check_affine(aff, what=source_path or "volume")
    spacing, orientation = spacing_and_orientation(aff)
    dtype_name = source_dtype or str(np.dtype(str(data.dtype).replace("torch.", "")))
    meta: dict[str, Any] = {
        Key.KIND: VOLUME,
        Key.SPACING: spacing,
        Key.ORIENTATION: orientation,
        Key.SOURCE_DTYPE: dtype_name,
        Key.INTENSITY: dict(intensity) if intensity else {"slope": 1.0, "intercept": 0.0},
        Key.BAND_NAMES: list(band_names) if band_names else [f"ch{i}" for i in range(data.shape[0])],
        Key.SOURCE_FORMAT: source_format,
        Key.SOURCE_PATH: source_path,
        Key.HEADER: header,
        "space": "RAS",
    }
    meta.update(extra)
    return MetaTensor(_as_tensor(data), affine=torch.as_tensor(aff, dtype=torch.float64), meta=meta)


def raster_centre_affine(transform: Sequence[float]) -> np.ndarray:
    """3x3 matrix mapping pixel centres ``(row, col, 1)`` to map ``(x, y, 1)``.

    Args:
        transform: the corner transform ``(a, b, c, d, e, f)`` with
            ``x = a*col + b*row + c`` and ``y = d*col + e*row + f``.
    """
    a, b, c, d, e, f = (float(v) for v in transform[:6])
    return np.array(
        [[b, a, c + 0.5 * (a + b)], [e, d, f + 0.5 * (d + e)], [0.0, 0.0, 1.0]], dtype=np.float64
    )


def make_raster(
    data: np.ndarray | torch.Tensor,
    transform: Sequence[float],
    *,
    crs: str | None,
    nodata: float | None = None,
    band_names: Sequence[str] | None = None,
    scales: Sequence[float] | None = None,
    offsets: Sequence[float] | None = None,
    source_dtype: str | None = None,
    source_format: str | None = None,
    source_path: str | None = None,
    header: Any = None,
    **extra: Any,
) -> MetaTensor:
    """Build a raster image.

    Args:
        data: array shaped ``(C, H, W)``.
        transform: GDAL/rasterio corner affine as ``(a, b, c, d, e, f)``.
        crs: the CRS as WKT, or ``None``.
        nodata: nodata value, or ``None``.
        band_names: one name per band.
        scales: per-band scale factors, or ``None``.
        offsets: per-band offsets, or ``None``.
        source_dtype: dtype of the stored pixels; defaults to ``data``'s dtype.
        source_format: reader that produced it.
        source_path: the file read.
        header: the format-specific header for writers (tags, colour interp, ...).
        **extra: further meta entries.

    Raises:
        GeometryError: wrong rank, or a degenerate transform.
    """
    if data.ndim != 3:
        raise GeometryError(f"a raster must be shaped (C, H, W), got shape {tuple(data.shape)}")
    t = tuple(float(v) for v in transform[:6])
    centre = raster_centre_affine(t)
    check_affine(centre, what=source_path or "raster")
    dtype_name = source_dtype or str(np.dtype(str(data.dtype).replace("torch.", "")))
    meta: dict[str, Any] = {
        Key.KIND: RASTER,
        Key.SPACING: (float(np.hypot(t[0], t[3])), float(np.hypot(t[1], t[4]))),
        Key.TRANSFORM: t,
        Key.CRS: crs,
        Key.NODATA: nodata,
        Key.BAND_NAMES: list(band_names) if band_names else [f"band{i + 1}" for i in range(data.shape[0])],
        Key.SCALES: list(scales) if scales is not None else None,
        Key.OFFSETS: list(offsets) if offsets is not None else None,
        Key.SOURCE_DTYPE: dtype_name,
        Key.SOURCE_FORMAT: source_format,
        Key.SOURCE_PATH: source_path,
        Key.HEADER: header,
    }
    meta.update(extra)
    return MetaTensor(_as_tensor(data), affine=torch.as_tensor(centre, dtype=torch.float64), meta=meta)


def is_volume(image: MetaTensor) -> bool:
    """True when ``image`` is a volume."""
    return getattr(image, "meta", {}).get(Key.KIND) == VOLUME


def is_raster(image: MetaTensor) -> bool:
    """True when ``image`` is a raster."""
    return getattr(image, "meta", {}).get(Key.KIND) == RASTER


@dataclass
class BandSet:
    """Bands at several native resolutions, each group on its own grid.

    Sentinel-2 ships 10, 20 and 60 m bands. They are kept as separate rasters
    (never silently resampled); ``groups`` maps a group name such as
    ``"10m"`` to a raster whose channels are that group's bands. Groups are
    ordered finest first.

    Attributes:
        groups: group name -> raster image.
        source_path: the folder read, if any.
    """

    groups: dict[str, MetaTensor] = field(default_factory=dict)
    source_path: str | None = None

    def __iter__(self) -> Iterator[str]:
        return iter(self.groups)

    def __len__(self) -> int:
        return len(self.groups)

    def __getitem__(self, name: str) -> MetaTensor:
        return self.groups[name]

    @property
    def band_names(self) -> list[str]:
        """All band names, group by group."""
        return [b for img in self.groups.values() for b in img.meta[Key.BAND_NAMES]]

    def band(self, name: str) -> MetaTensor:
        """The single-band raster called ``name``.

        Raises:
            KeyError: no band has that name.
        """
        for img in self.groups.values():
            names = img.meta[Key.BAND_NAMES]
            if name in names:
                i = names.index(name)
                out = img[i : i + 1]
                out.meta = dict(img.meta)
                out.meta[Key.BAND_NAMES] = [name]
                for k in (Key.SCALES, Key.OFFSETS):
                    if out.meta.get(k) is not None:
                        out.meta[k] = [img.meta[k][i]]
                return out
        raise KeyError(f"no band {name!r}; bands are {self.band_names}")


def one_grid_raster(image: Any) -> Any:
    """A :class:`BandSet` of one grid as the multi-band raster it is; anything else as it is.

    A folder of ``B02.tif`` ... ``B08.tif`` all at 10 m is read as a band
    set, but it is one multi-band raster: single-raster routes (fits,
    evaluation) take it as such. Guided routes keep the band set.
    """
    if isinstance(image, BandSet) and len(image.groups) == 1:
        return next(iter(image.groups.values()))
    return image

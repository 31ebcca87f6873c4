"""What the readers see: a JSON-friendly summary of a file or folder.

Used by ``medsat-sr info``. Rasters are described from their headers alone
(no pixels are read, so a 10 GB scene answers at once); volumes are read in
full, since their geometry is only known once every slice has been sorted
and checked.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from medsat_sr.errors import FormatError, GeometryError, TiltError

if TYPE_CHECKING:  # pragma: no cover
    from monai.data import MetaTensor

# torch, MONAI and rasterio load inside the functions, only for the inputs that need them
# (``medsat-sr info`` imports this module; see benchmarks/startup.py).

__all__ = ["describe", "format_description"]


def _crs_label(crs: Any) -> str | None:
    if crs is None:
        return None
    from rasterio.crs import CRS

    c = crs if isinstance(crs, CRS) else CRS.from_user_input(crs)
    epsg = c.to_epsg()
    return f"EPSG:{epsg}" if epsg else c.to_string()


#: What ``info`` says of a NIfTI label map (upscale refuses it except by nearest).
_NIFTI_LABELS = "a label map (NIfTI intent 'label'): upscaled only by --method nearest"


def _describe_image(img: MetaTensor) -> dict[str, Any]:
    from medsat_sr.image import Key, is_volume
    from medsat_sr.io.nifti_header import is_label_map

    meta = img.meta
    out: dict[str, Any] = {
        "kind": meta.get(Key.KIND),
        "shape": list(img.shape),
        "channels": meta.get(Key.BAND_NAMES),
        "dtype": meta.get(Key.SOURCE_DTYPE),
    }
    if is_volume(img):
        aff = np.asarray(img.affine, dtype=np.float64)
        out.update(
            spacing_mm=[round(v, 6) for v in meta[Key.SPACING]],
            orientation=meta.get(Key.ORIENTATION),
            affine=aff.round(6).tolist(),
            intensity=meta.get(Key.INTENSITY),
        )
        for extra in ("gantry_tilt_deg", "series_uid", "series_description", "modality", "resampled"):
            if extra in meta:
                out[extra] = meta[extra]
        if is_label_map(meta.get(Key.HEADER)):
            out["labels"] = _NIFTI_LABELS
    else:
        out.update(
            pixel_size=[round(v, 9) for v in meta[Key.SPACING]],
            transform=list(meta[Key.TRANSFORM]),
            crs=_crs_label(meta.get(Key.CRS)),
            nodata=meta.get(Key.NODATA),
            scales=meta.get(Key.SCALES),
            offsets=meta.get(Key.OFFSETS),
        )
    return out


def _describe_nifti(path: Path) -> dict[str, Any]:
    """What :func:`medsat_sr.io.nifti.read` gives, from the validated header alone (no torch, no voxel data)."""
    from medsat_sr.geometry import spacing_and_orientation
    from medsat_sr.io.nifti_header import inspect, is_label_map

    lay = inspect(path)
    spacing, orientation = spacing_and_orientation(lay.affine)
    x, y, z, c = lay.xyzc
    return {
        "kind": "volume",
        "shape": [c, x, y, z],
        "channels": [f"ch{i}" for i in range(c)],
        "dtype": lay.dtype.name,
        "spacing_mm": [round(v, 6) for v in spacing],
        "orientation": orientation,
        "affine": lay.affine.round(6).tolist(),
        "intensity": {"slope": lay.slope, "intercept": lay.intercept},
        **({"labels": _NIFTI_LABELS} if is_label_map(lay.header) else {}),
    }


def _describe_raster_file(path: Path) -> dict[str, Any]:
    import rasterio
    from rasterio.errors import RasterioIOError

    from medsat_sr.io.geotiff_read import alpha_bands, file_nodata, paletted

    try:
        with rasterio.open(path) as src:
            t = src.transform
            alpha = alpha_bands(src) if src.count > 1 else []
            names = [d or f"band{i + 1}" for i, d in enumerate(src.descriptions)]
            out = {
                "kind": "raster",
                "shape": [src.count - len(alpha), src.height, src.width],
                "channels": [n for i, n in enumerate(names) if i + 1 not in alpha],
                "dtype": src.dtypes[0],
                "pixel_size": [float(np.hypot(t.a, t.d)), float(np.hypot(t.b, t.e))],
                "transform": [t.a, t.b, t.c, t.d, t.e, t.f],
                "crs": _crs_label(src.crs),
                "bounds": list(src.bounds),
                "nodata": file_nodata(src, path),
                "scales": list(src.scales),
                "offsets": list(src.offsets),
                "block_shape": list(src.block_shapes[0]),
                "compression": src.compression.value if src.compression else None,
                "layout": src.tags(ns="IMAGE_STRUCTURE").get("LAYOUT"),
                "overviews": src.overviews(1),
            }
            if alpha:
                out["alpha"] = f"band {alpha[0]} ({names[alpha[0] - 1]}): read as the validity mask, not as a band"
            if paletted(src):
                out["labels"] = "a paletted raster (a colour table over class labels): upscaled only by --method nearest"
            return out
    except RasterioIOError as exc:
        raise FormatError(f"{path}: not a readable GeoTIFF: {exc}") from exc


def _series_dict(info: Any) -> dict[str, Any]:
    import dataclasses

    if hasattr(info, "as_dict"):
        return dict(info.as_dict())
    d = dataclasses.asdict(info) if dataclasses.is_dataclass(info) else dict(info)
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items() if not k.startswith("_")}


def describe(path: str | os.PathLike[str], **options: Any) -> dict[str, Any]:
    """Summarise what medsat_sr reads at ``path``.

    Args:
        path: a file or folder.
        **options: reader options (``series=``, ``resample=``, ...).

    Returns:
        A JSON-serialisable dict. For DICOM folders it lists every series
        found under ``"series"``; for band folders, every band group.

    Raises:
        MedsatError: whatever the reader raises for bad input. A DICOM series
        that the reader refuses without ``resample`` because of a gantry tilt is described as ``--resample`` reads it, with
        ``needs_resample`` saying why.
    """
    from medsat_sr.io import check_read_options, detect_format

    p = Path(path)
    fmt = detect_format(p)
    check_read_options(p, fmt, options)
    out: dict[str, Any] = {"path": str(p), "format": fmt}
    if fmt == "geotiff":
        out.update(_describe_raster_file(p))
        return out
    if fmt == "nifti" and not options:
        out.update(_describe_nifti(p))
        return out
    if fmt == "bandset":
        from medsat_sr.io import geotiff_bandset

        groups: dict[str, list[str]] = {}
        files = geotiff_bandset.band_files(p)
        for f in files:
            d = _describe_raster_file(f)
            key = f"{d['pixel_size'][0]:g} x {d['pixel_size'][1]:g}, {d['shape'][1]}x{d['shape'][2]}, {d['crs']}"
            groups.setdefault(key, []).append(geotiff_bandset.band_name(f))
        out["groups"] = [{"grid": k, "bands": v} for k, v in groups.items()]
        aux = geotiff_bandset.aux_files(p)
        if aux:
            out["left_out"] = f"{' '.join(f.stem for f in aux)} (quality or auxiliary layers, not spectral bands)"
        try:
            geotiff_bandset.check_nested(p)
        except GeometryError as exc:  # described all the same; upscale refuses it, and says why
            out["note"] = str(exc).replace(f"{p}: ", "", 1)
        return out
    if fmt == "dicom":
        from medsat_sr.io import dicom

        out["series"] = [_series_dict(s) for s in dicom.scan(p)]
        if len(out["series"]) > 1 and "series" not in options:
            return out
    from medsat_sr.image import BandSet
    from medsat_sr.io import read

    try:
        img = read(p, **options)
    except TiltError as exc:
        if options.get("resample"):
            raise
        # a tilted series: describe the grid that --resample gives, and say it is needed
        img = read(p, **{**options, "resample": True})
        out["needs_resample"] = str(exc).split(": ", 1)[-1].split(";")[0].split(" (")[0]
    if isinstance(img, BandSet):  # pragma: no cover - handled above
        return out
    out.update(_describe_image(img))
    tilt = (out.get("resampled") or {}).get("tilt_corrected_deg")
    if tilt:
        out["gantry_tilt_deg"] = round(float(tilt), 3)
    return out


def _text(v: Any) -> str:
    """A value for people: floats to 6 significant digits (``--json`` keeps them all)."""
    if isinstance(v, float):
        return f"{v:.6g}"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_text(x) for x in v) + "]"
    return str(v)


def format_description(d: dict[str, Any]) -> str:
    """Human-readable lines for :func:`describe`'s result (numbers to 6 significant digits)."""
    lines = [f"{d['path']}  ({d['format']})"]
    if "series" in d:
        lines.append(f"series found: {len(d['series'])}")
        for i, s in enumerate(d["series"], 1):
            lines.append("  " + f"[{i}] " + ", ".join(f"{k}={_text(v)}" for k, v in s.items() if v not in (None, "")))
    if "groups" in d:
        for g in d["groups"]:
            lines.append(f"  group {g['grid']}: {' '.join(g['bands'])}")
    skip = {"path", "format", "series", "groups", "affine", "transform"}
    for k, v in d.items():
        if k not in skip:
            lines.append(f"{k:>14}: {_text(v)}")
    return "\n".join(lines)

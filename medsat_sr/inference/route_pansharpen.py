"""The pan-sharpening route: a pan band guides the MS bands onto the pan grid (issue #17).

``medsat-sr upscale BAND_FOLDER -o OUT.tif --method brovey|gihs|gsa|mtf-glp-hpm``, or
``--pan PAN.tif MS.tif``, or ``--config landsat_pansharpen`` (the learned
network, kept only when it beats the best classical method on its held-out
half; :mod:`medsat_sr.inference.route_pansharpen_learned`).

Geometry: the output grid is the pan grid (CRS, transform, bounds and size
kept); the MS bands are placed by the exact grid relation (integer ratio and
phase, :func:`medsat_sr.pansharpen.grid.grid_relation`), so the Landsat pan
grid half a pan pixel off the MS grid, with its extra row, is handled
exactly. Fill pixels (tagged nodata, and DN 0 of unsigned integers whether
tagged or not) are masked: they are filled before filtering, so they never
enter a valid output pixel, and the output is nodata where the pan is
invalid or the pan pixel's centre lies on an invalid (or no) MS pixel.

Parameters are fitted on the whole scene, then the product is computed and
written in strips of pan rows with a halo wider than every filter, so the
strips agree with a whole-scene computation: there are no seams.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio

from medsat_sr._version import __version__
from medsat_sr.errors import ConfigError, DataError, GeometryError
from medsat_sr.inference.plan import Decision
from medsat_sr.inference.request import check_not_input
from medsat_sr.inference.result import UpscaleResult
from medsat_sr.io.geotiff_write import open_writer
from medsat_sr.pansharpen import classical
from medsat_sr.pansharpen.grid import footprint_valid, grid_relation
from medsat_sr.pansharpen.sensors import Inputs, resolve
from medsat_sr.trust import now_iso, write_record

log = logging.getLogger(__name__)

#: Pan rows per strip.
STRIP_ROWS = 512


@dataclass
class Scene:
    """A pan-sharpening input in memory, with its validity and the output grid."""

    inputs: Inputs
    ms: np.ndarray  # (C, h, w) float64, invalid filled with the band's valid mean
    ms_valid: np.ndarray  # (h, w)
    pan: np.ndarray  # (H, W) float64, invalid filled
    pan_valid: np.ndarray  # (H, W)
    bands: list[str]
    ratio: int
    phase: tuple[float, float]
    crs: Any
    transform: Any
    dtype: str
    nodata: float | None

    def pair(self) -> classical.Pair:
        """The whole scene as a :class:`~medsat_sr.pansharpen.classical.Pair`."""
        return classical.Pair(ms=self.ms, pan=self.pan, ratio=self.ratio, phase=self.phase,
                              ms_gains=self.inputs.gains(self.ms.shape[0]), pan_gain=self.inputs.pan_gain)

    def out_valid(self) -> np.ndarray:
        """Output validity on the pan grid."""
        return footprint_valid(self.ms_valid, self.ratio, self.phase, self.pan.shape) & self.pan_valid


def _fill_mask(a: np.ndarray, nodata: float | None, dtype: str, masked_zero: bool) -> np.ndarray:
    """Validity of raw values: finite, not the tagged nodata, and not DN 0 of unsigned integers."""
    valid = np.isfinite(a)
    if nodata is not None and not (isinstance(nodata, float) and math.isnan(nodata)):
        valid &= a != nodata
    if masked_zero and np.dtype(dtype).kind == "u":
        valid &= a != 0
    return valid


def _read(path: Path, masked_zero: bool) -> tuple[Any, np.ndarray, np.ndarray]:
    try:
        with rasterio.open(path) as src:
            data = src.read().astype(np.float64)
            valid = np.stack([_fill_mask(d, src.nodata, src.dtypes[0], masked_zero) for d in data])
            return src.profile, data, valid
    except rasterio.errors.RasterioIOError as exc:
        raise DataError(f"{path}: cannot read as GeoTIFF ({exc})") from exc


def _filled(x: np.ndarray, valid: np.ndarray, what: Path) -> np.ndarray:
    if not valid.any():
        raise DataError(f"{what}: no valid pixel (all nodata or DN 0)")
    out = x.copy()
    out[~valid] = x[valid].mean()
    return out


def read_scene(inputs: Inputs) -> Scene:
    """Read and check the pan and MS files: one CRS, one MS grid, an integer ratio.

    Raises:
        GeometryError: the pan and an MS file in different CRS, MS files on
            different grids, or no integer ratio (naming the file).
        DataError: unreadable files, or no valid pixel.
    """
    masked_zero = True  # DN 0 of unsigned integers is fill (Landsat L1, most pan/MS products)
    pprof, pan, pvalid = _read(inputs.pan, masked_zero)
    if pprof["count"] != 1:
        raise DataError(f"{inputs.pan}: the pan file has {pprof['count']} bands, expected 1")
    planes, valids = [], []
    ref = None
    for f in inputs.ms:
        prof, data, valid = _read(f, masked_zero)
        if prof["crs"] != pprof["crs"]:
            raise GeometryError(f"{f}: CRS {prof['crs']} differs from the pan's {pprof['crs']} ({inputs.pan.name}); "
                                "reproject one of them first")
        if ref is None:
            ref = prof
        elif (prof["transform"], prof["width"], prof["height"]) != (ref["transform"], ref["width"], ref["height"]):
            raise GeometryError(f"{f}: MS band grid differs from {inputs.ms[0].name}'s")
        planes.append(data)
        valids.append(valid)
    if ref is None:
        raise DataError(f"{inputs.pan}: no MS band file to sharpen")
    ratio, phase = grid_relation(pprof["transform"], ref["transform"], where=str(inputs.pan))
    ms = np.concatenate(planes)
    ms_valid = np.concatenate(valids).all(axis=0)
    bands = list(inputs.bands) if inputs.bands is not None and len(inputs.bands) == ms.shape[0] else \
        [f"band{i + 1}" for i in range(ms.shape[0])]
    ms_f = np.stack([_filled(b, ms_valid, inputs.ms[0]) for b in ms])
    return Scene(inputs=inputs, ms=ms_f, ms_valid=ms_valid, pan=_filled(pan[0], pvalid[0], inputs.pan),
                 pan_valid=pvalid[0], bands=bands, ratio=ratio, phase=phase, crs=pprof["crs"],
                 transform=pprof["transform"], dtype=ref["dtype"],
                 nodata=ref["nodata"] if ref["nodata"] is not None else (0 if np.dtype(ref["dtype"]).kind == "u" else None))


def halo(ratio: int) -> int:
    """Pan rows of context each side of a strip: wider than the cubic, the MTF filters and the network."""
    return 8 * ratio + 16


def strips(scene: Scene, fn: Callable[[classical.Pair], np.ndarray], rows: int = STRIP_ROWS):
    """Yield ``(row0, product (C, n, W))`` strip by strip; ``fn`` maps a strip's pair to its product."""
    h_pan = scene.pan.shape[0]
    r, (pr, pc) = scene.ratio, scene.phase
    hal = halo(r)
    for a in range(0, h_pan, rows):
        b = min(h_pan, a + rows)
        a0, a1 = max(0, a - hal), min(h_pan, b + hal)
        i0 = max(0, math.floor((a0 - pr) / r) - 2)
        i1 = min(scene.ms.shape[1], math.ceil((a1 - pr) / r) + 3)
        pair = classical.Pair(ms=scene.ms[:, i0:i1], pan=scene.pan[a0:a1], ratio=r, phase=(pr + r * i0 - a0, pc),
                              ms_gains=scene.inputs.gains(scene.ms.shape[0]), pan_gain=scene.inputs.pan_gain)
        yield a, fn(pair)[:, a - a0 : b - a0]


def encode(x: np.ndarray, valid: np.ndarray, dtype: str, nodata: float | None) -> np.ndarray:
    """Round and clip to ``dtype`` (valid values never equal ``nodata``); nodata where invalid."""
    dt = np.dtype(dtype)
    if dt.kind in "ui":
        info = np.iinfo(dt)
        lo = info.min + 1 if nodata == info.min else info.min
        out = np.clip(np.rint(x), lo, info.max).astype(dt)
    else:
        dt = np.dtype(np.float32) if dt.itemsize < 4 else dt
        out = x.astype(dt)
    out[:, ~valid] = nodata if nodata is not None else (np.nan if dt.kind == "f" else 0)
    return out


def write(scene: Scene, output: Path, fn: Callable[[classical.Pair], np.ndarray], *, cog: bool,
          rows: int = STRIP_ROWS) -> None:
    """Stream the product of ``fn`` into ``output`` on the pan grid, strip by strip."""
    valid = scene.out_valid()
    h, w = scene.pan.shape
    c = scene.ms.shape[0]
    dtype = scene.dtype if np.dtype(scene.dtype).kind in "ui" else "float32"
    nodata = scene.nodata if scene.nodata is not None else (float("nan") if dtype == "float32" else None)
    profile = {"driver": "GTiff", "dtype": dtype, "count": c, "height": h, "width": w, "crs": scene.crs,
               "transform": scene.transform, "nodata": nodata, "tiled": True, "blockxsize": 256,
               "blockysize": 256, "compress": "deflate", "interleave": "pixel"}
    with open_writer(output, profile, cog=cog, overview_resampling="average") as dst:
        for a, part in strips(scene, fn, rows):
            win = rasterio.windows.Window(0, a, w, part.shape[1])
            dst.write(encode(part, valid[a : a + part.shape[1]], dtype, nodata), window=win)
        for i, name in enumerate(scene.bands):
            dst.set_band_description(i + 1, name)


def record(scene: Scene, output: Path, method: str, params: dict[str, Any], seconds: float,
           decision: Decision, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The trust record of a pan-sharpening run."""
    return {
        "medsat_sr_version": __version__, "created": now_iso(), "route": "pansharpen",
        "input": {"pan": str(scene.inputs.pan), "ms": [str(p) for p in scene.inputs.ms]},
        "output": str(output), "domain": scene.inputs.profile.name, "bands": scene.bands,
        "grid": {"ratio": scene.ratio, "phase_pan_pixels": list(scene.phase), "crs": str(scene.crs),
                 "transform": list(scene.transform)[:6], "shape": list(scene.pan.shape)},
        "mtf_nyquist": {"ms": list(scene.inputs.gains(scene.ms.shape[0])), "pan": scene.inputs.pan_gain},
        "method": method, "reference": classical.METHODS[method][2] if method in classical.METHODS else
        "self-supervised residual CNN (PNN/PanNet-like), Wald protocol (medsat_sr.pansharpen.learned)",
        "parameters": params, "valid_fraction": float(scene.out_valid().mean()),
        "decision": decision.to_dict(), "seconds": round(seconds, 3), **(extra or {}),
    }


def pansharpen_upscale(source: str | os.PathLike[str], output: str | os.PathLike[str], *, method: str | None = None,
                       config: Any = None, pan: str | os.PathLike[str] | None = None, cog: bool = False,
                       force: bool = False, overrides: list[str] | None = None, mtf_ms: float | None = None,
                       mtf_pan: float | None = None, rows: int = STRIP_ROWS, sidecar: bool = True) -> UpscaleResult:
    """Pan-sharpen ``source`` into ``output`` (GeoTIFF on the pan grid) and write ``output.json``.

    Args:
        source: a band folder with a pan band, or the MS file/folder with ``pan``.
        output: the output GeoTIFF.
        method: a classical method (:data:`medsat_sr.pansharpen.classical.METHODS`).
        config: a pan-sharpening config (``landsat_pansharpen``; a name, path or JobConfig): the learned route.
        pan: an explicit pan file.
        cog: write a Cloud Optimized GeoTIFF.
        force: keep the network's output even if it does not beat the best classical method.
        overrides: ``KEY=VALUE`` config overrides.
        mtf_ms, mtf_pan: MTF gains at Nyquist for the generic profile.
        rows: pan rows per strip.
        sidecar: write ``output.json`` (a batch writes its own, with its section).

    Raises:
        ConfigError: neither or both of method and config, an unknown method.
        DataError, GeometryError: bad inputs (naming the file).
    """
    from medsat_sr.errors import ConfigError

    if (method is None) == (config is None):
        raise ConfigError("pan-sharpening needs exactly one of --method brovey|gihs|gsa|mtf-glp-hpm or --config")
    out = Path(output)
    if out.suffix.lower() not in (".tif", ".tiff"):
        raise ConfigError(f"{out}: pan-sharpening writes one GeoTIFF; use a .tif output")
    if method is not None:
        classical.check_method(method)
    t0 = time.perf_counter()
    scene = read_scene(resolve(source, pan, mtf_ms=mtf_ms, mtf_pan=mtf_pan))
    if config is not None:
        from medsat_sr.inference.route_pansharpen_learned import learned_product

        fn, method, params, decision, extra = learned_product(scene, config, overrides or [], force=force)
    else:
        params = classical.fit(method, scene.pair(), scene.ms_valid, scene.pan_valid)
        decision = Decision(use_model=False, classical_method=method, reason="a classical method was asked for")
        extra = {}

        def fn(p: classical.Pair) -> np.ndarray:
            return classical.apply(method, p, params)  # type: ignore[arg-type]

    write(scene, out, fn, cog=cog, rows=rows)
    rec = record(scene, out, method, params, time.perf_counter() - t0, decision, extra)
    side = write_record(rec, out) if sidecar else None
    return UpscaleResult(image=None, std=None, record=rec, output=out, sidecar=side, decision=decision)


#: Built-in configs of the learned pan-sharpening route.
PANSHARPEN_CONFIGS = ("landsat_pansharpen",)


def is_pansharpen(method: str | None, config: str | None, pan: str | None) -> bool:
    """Whether an ``upscale`` request is for this route (a pan file, a pan-sharpening method or config)."""
    if pan is not None or (method is not None and method in classical.METHODS):
        return True
    return config is not None and Path(str(config)).stem in PANSHARPEN_CONFIGS


def upscale_with_options(image: Any, output: Any, *, method: str | None, config: Any, pan: Any,
                         overrides: Sequence[str], options: Mapping[str, Any]) -> UpscaleResult:
    """:func:`pansharpen_upscale` from :func:`medsat_sr.inference.upscale`'s arguments, checked at the door.

    One MS input (a band folder with its pan band, or ``pan``) onto the pan grid. ``--budget`` is the learned
    fit's time (it always fits from scratch: no pan-sharpening model is shipped); other upscale options do
    not apply and are refused by name.

    Raises:
        ConfigError: several inputs, no output, or an option the route does not take.
    """
    if isinstance(image, (list, tuple)):
        if len(image) != 1:
            raise ConfigError("pan-sharpening takes one input: a band folder with a pan band, or the MS file with --pan")
        image = image[0]
    if not isinstance(image, (str, os.PathLike)) or output is None:
        raise ConfigError("pan-sharpening reads files and writes a GeoTIFF: give a path and an output")
    check_not_input(output, [image, *([pan] if pan is not None else [])])
    fitting = {k: options[k] for k in ("budget", "from_scratch") if options.get(k) not in (None, False)}
    if fitting and config is None:
        raise ConfigError(f"--{', --'.join(k.replace('_', '-') for k in fitting)}: only a learned pan-sharpening "
                          f"config fits (--config landsat_pansharpen), not --method {method}")
    unused = sorted(k for k, v in options.items() if v is not None and v is not False
                    and k not in ("cog", "force", "sidecar", "format", *fitting))
    if unused:
        raise ConfigError(f"pan-sharpening does not take {', '.join(unused)}")
    if "budget" in fitting:  # the learned route always fits from scratch (no shipped pan-sharpening model)
        overrides = [*overrides, f"train.max_minutes={float(fitting['budget']) / 60.0:g}"]
    cog = bool(options.get("cog")) or options.get("format") == "cog"
    return pansharpen_upscale(image, output, method=method, config=config, pan=pan,
                              cog=cog, force=bool(options.get("force")),
                              overrides=list(overrides), sidecar=options.get("sidecar") is not False)

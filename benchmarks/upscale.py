#!/usr/bin/env python
"""Benchmark of ``medsat_sr.upscale``: overhead, flat memory, GDAL for scale, bf16 vs fp32.

Prints markdown tables for the README:

(a) **Overhead**: time per output pixel of the full ``upscale`` path (read,
    statistics, normalisation, halo tiles, model, nodata, encoding, deflate
    writing, consistency score, sidecar with the input's sha256) against the
    bare model forward on the same output pixels (the same core tiles, no
    halo, tensors already in memory), fp32 and bf16, runs interleaved, for
    the configs' EDSR (64 features x 8 blocks) and a tiny one (16 x 2).
    Goal: <= 1.25x.
(b) **Peak RSS** of ``upscale`` x2 on synthetic 4-band uint16 rasters of
    4000^2, 8000^2 and 16000^2 pixels (written to a temporary folder), each in
    a fresh subprocess (its ``VmHWM``), with a tiny model (EDSR, 2 blocks, 16
    features, bf16) so that 16000^2 -> 32000^2 x 4 bands finishes in minutes
    on 2 cores; and the same for ``--method cubic``. Goal: RSS(16000^2) /
    RSS(4000^2) <= 1.2 and < 1.5 GB.
(c) **GDAL cubic** for scale: ``rasterio.warp.reproject`` file to file (GDAL's
    own chunked warper, ``num_threads`` = torch threads) onto the same grid and
    creation options, against ``upscale(method="cubic")``.
(d) **bf16 vs fp32**: speed (from (a)) and the PSNR cost on real data: a
    model fitted self-supervised on the NAIP scene (``multiband_x2``, short
    budget) is applied to the scene degraded x2 (Wald's protocol) in both
    precisions; PSNR against the original scene.

Medians of ``--repeats`` runs; ratios are against baselines measured in the
same run. The machine (CPU model, cores, ISA flags) and the load average are
printed with the tables: the numbers are only comparable on an idle machine.

Usage::

    python benchmarks/upscale.py            # full run (tens of minutes on 2 cores)
    python benchmarks/upscale.py --quick    # sizes 1000/2000/4000, 1 repeat, small (a)/(d)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
# measure this checkout, whatever an installed (editable) medsat_sr points to
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
SHARED = REPO.parent / "shared" / "data"
NAIP = SHARED / "geotiff" / "naip_4band_m_4709963_se_14_1_20180716_opengeos-data" / "m_4709963_se_14_1_20180716.tif"


# --------------------------------------------------------------------------- machine
def machine() -> dict[str, object]:
    """:func:`_machine.machine` plus the torch CPU capability and the rasterio/GDAL versions."""
    import rasterio
    import torch
    from _machine import machine as base

    return {**base(), "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "rasterio": rasterio.__version__, "gdal": rasterio.__gdal_version__}


def load() -> str:
    try:
        return " / ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


# --------------------------------------------------------------------------- data
def synthetic_raster(path: Path, size: int, bands: int = 4, seed: int = 0) -> Path:
    """A smooth 4-band uint16 scene plus mild noise, tiled and deflated, written in strips."""
    import rasterio
    from rasterio.transform import Affine
    from rasterio.windows import Window

    profile = dict(
        driver="GTiff", width=size, height=size, count=bands, dtype="uint16", crs="EPSG:32633",
        transform=Affine(10, 0, 300000, 0, -10, 5000000), nodata=0, tiled=True, blockxsize=512,
        blockysize=512, compress="deflate", predictor=2, BIGTIFF="IF_SAFER",
    )
    rng = np.random.default_rng(seed)
    cols = np.arange(size, dtype=np.float32)
    with rasterio.open(path, "w", **profile) as dst:
        for r0 in range(0, size, 1024):
            r1 = min(size, r0 + 1024)
            rows = np.arange(r0, r1, dtype=np.float32)[:, None]
            base = 3000 + 1500 * np.sin(cols / 97.0)[None, :] * np.cos(rows / 61.0) + 500 * np.sin((cols[None, :] + rows) / 23.0)
            for b in range(bands):
                band = base * (1 + 0.1 * b) + rng.normal(0, 30, base.shape).astype(np.float32)
                dst.write(np.clip(band, 1, 65535).astype(np.uint16), b + 1, window=Window(0, r0, size, r1 - r0))
    return path


def tiny_model(features: int = 16, n_blocks: int = 2, seed: int = 0):
    import torch

    from medsat_sr.models import build_model

    torch.manual_seed(seed)
    net = build_model("edsr", spatial_dims=2, in_channels=4, scale=2, features=features, n_blocks=n_blocks)
    with torch.no_grad():  # not identity-interpolation
        for p in net.output_conv.parameters():
            p.normal_(0, 0.01)
    return net.eval()


# --------------------------------------------------------------------------- child runs (fresh process: clean RSS)
def child(spec: dict) -> dict:
    import torch

    from medsat_sr.inference import upscale

    t0 = time.perf_counter()
    if spec["kind"] == "upscale":
        kw = dict(output=spec["output"], tile_size=spec.get("tile", 512), precision=spec.get("precision", "fp32"))
        if spec.get("method"):
            upscale(spec["input"], method=spec["method"], scale=2, **kw)
        else:
            upscale(spec["input"], model=tiny_model(spec["features"], spec["n_blocks"]), **kw)
    elif spec["kind"] == "gdal":
        import rasterio
        from rasterio.enums import Resampling
        from rasterio.warp import reproject

        from medsat_sr.io.geotiff import gdal_env

        with gdal_env(), rasterio.open(spec["input"]) as src:
            prof = src.profile.copy()
            prof.update(width=src.width * 2, height=src.height * 2, transform=src.transform * src.transform.scale(0.5),
                        blockxsize=512, blockysize=512, tiled=True, compress="deflate", predictor=2, BIGTIFF="IF_SAFER")
            with rasterio.open(spec["output"], "w", **prof) as dst:
                reproject(
                    rasterio.band(src, list(range(1, src.count + 1))), rasterio.band(dst, list(range(1, src.count + 1))),
                    resampling=Resampling.cubic, num_threads=torch.get_num_threads(), src_nodata=src.nodata, dst_nodata=src.nodata,
                )
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "maxrss_mb": peak_rss_mb()}


def peak_rss_mb() -> float:
    """Peak RSS of this process: VmHWM (per address space, so not inherited through fork + exec).

    ``getrusage(RUSAGE_SELF).ru_maxrss`` is not used: Linux carries the
    parent's peak over ``exec``, so a child started from a big parent
    reports at least the parent's size.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run_child(spec: dict) -> dict:
    proc = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(f"child failed ({spec}):\n{proc.stderr[-3000:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    p = Path(spec["output"])
    out["output_mb"] = p.stat().st_size / 2**20 if p.exists() else None
    return out


# --------------------------------------------------------------------------- (a) overhead
def overhead(work: Path, size: int, repeats: int, models: list[tuple[int, int]]) -> list[dict]:
    """Full ``upscale`` path against the bare forward on the same output pixels, runs interleaved."""
    import torch

    from medsat_sr.inference import upscale
    from medsat_sr.io import read

    src = synthetic_raster(work / f"a_{size}.tif", size)
    x = read(src).as_tensor()[None].float()
    rows = []
    for features, n_blocks in models:
        net = tiny_model(features, n_blocks)
        for precision in ("fp32", "bf16"):
            res = upscale(src, model=net, output=work / "a_out.tif", precision=precision)  # warm-up; the tiles used
            t_in = [t // 2 for t in res.record["settings"]["tile"]]
            if precision == "bf16":
                net.to(memory_format=torch.channels_last)

            def bare() -> float:
                # the model alone on the same output pixels: the core tiles, no halo, tensors ready
                start = time.perf_counter()
                with torch.inference_mode():
                    for r0 in range(0, size, t_in[0]):
                        for c0 in range(0, size, t_in[1]):
                            tile = x[:, :, r0 : r0 + t_in[0], c0 : c0 + t_in[1]] * (1.0 / 65535.0)
                            if precision == "bf16":
                                tile = tile.contiguous(memory_format=torch.channels_last)
                                with torch.autocast("cpu", dtype=torch.bfloat16):
                                    net(tile)
                            else:
                                net(tile)
                return time.perf_counter() - start

            def full() -> float:
                start = time.perf_counter()
                upscale(src, model=net, output=work / "a_out.tif", precision=precision)
                return time.perf_counter() - start

            bare()  # warm-up
            t_bare, t_full = [], []
            for _ in range(repeats):  # interleaved, so that a change of load hits both
                t_bare.append(bare())
                t_full.append(full())
            fb, ff = statistics.median(t_bare), statistics.median(t_full)
            n_out = (2 * size) ** 2
            rows.append({
                "model": f"EDSR {features}x{n_blocks}", "precision": precision, "input": f"{size}²x4 uint16",
                "tile": f"{t_in[0]}² (+halo {res.record['settings']['halo'][0]})",
                "full_ns_per_px": 1e9 * ff / n_out, "bare_ns_per_px": 1e9 * fb / n_out,
                "full_s": ff, "bare_s": fb, "ratio": ff / fb,
            })
            print(f"  (a) {rows[-1]['model']} {precision}: full {ff:.2f} s, bare {fb:.2f} s (load {load()})", file=sys.stderr)
    return rows


# --------------------------------------------------------------------------- (b) + (c) memory and GDAL
METHODS = {
    "model": ("tiny EDSR bf16", {"kind": "upscale", "features": 16, "n_blocks": 2, "precision": "bf16"}),
    "cubic": ("cubic (streamed)", {"kind": "upscale", "method": "cubic"}),
    "gdal": ("GDAL reproject cubic", {"kind": "gdal"}),
}


def memory(work: Path, sizes: list[int], repeats: int, methods: list[str]) -> tuple[list[dict], list[dict]]:
    rss_rows, gdal_rows = [], []
    for size in sizes:
        src = synthetic_raster(work / f"b_{size}.tif", size)
        in_mb = src.stat().st_size / 2**20
        for label, spec in (METHODS[m] for m in methods):
            runs = []
            for _ in range(repeats if size <= 4000 else 1):
                out = work / f"b_{size}_out.tif"
                runs.append(run_child({**spec, "input": str(src), "output": str(out)}))
                mb = runs[-1]["output_mb"]
                out.unlink(missing_ok=True)
                Path(str(out) + ".json").unlink(missing_ok=True)
            row = {
                "size": size, "what": label, "seconds": statistics.median(r["seconds"] for r in runs),
                "maxrss_mb": max(r["maxrss_mb"] for r in runs), "input_mb": in_mb, "output_mb": mb,
            }
            (gdal_rows if spec["kind"] == "gdal" else rss_rows).append(row)
            print(f"  {size}² {label}: {row['seconds']:.1f} s, peak RSS {row['maxrss_mb']:.0f} MB (load {load()})", file=sys.stderr)
        src.unlink()
    return rss_rows, gdal_rows


# --------------------------------------------------------------------------- (d) bf16 vs fp32 on real data
def precision_cost(work: Path, quick: bool) -> dict | None:
    if not NAIP.exists():
        return None
    import torch

    from medsat_sr.config import load_config
    from medsat_sr.degrade import psf_decimate
    from medsat_sr.image import make_raster
    from medsat_sr.inference import upscale
    from medsat_sr.io import read
    from medsat_sr.metrics import psnr
    from medsat_sr.train import fit

    ref = read(NAIP)
    iters = 60 if quick else 600
    cfg = load_config("multiband_x2", [f"train.max_iterations={iters}", "train.val_every=30", "train.max_minutes=8",
                                        "model.kwargs.features=32", "model.kwargs.n_blocks=4", "train.precision=fp32"])
    t0 = time.perf_counter()
    fr = fit(ref, cfg, progress=False)
    fit_s = time.perf_counter() - t0
    x = ref.as_tensor().float()
    mtf = cfg.profile.mtf_nyquist()
    lr = psf_decimate(x, 2, mtf_nyquist=mtf, spatial_dims=2)
    lr_img = make_raster(lr.numpy(), tuple(np.asarray(ref.meta["transform"]) * np.array([2, 1, 1, 1, 2, 1])), crs=ref.meta["crs"],
                         nodata=ref.meta["nodata"], source_dtype="uint8")
    out = {}
    for p in ("fp32", "bf16"):
        upscale(lr_img, fit=fr, precision=p, dtype="float32", force=True)  # warm-up (oneDNN kernels)
        times = []
        for _ in range(1 if quick else 3):
            t0 = time.perf_counter()
            r = upscale(lr_img, fit=fr, precision=p, dtype="float32", force=True)
            times.append(time.perf_counter() - t0)
        sr = r.image.as_tensor()[:, : x.shape[1], : x.shape[2]]
        out[p] = {"psnr": psnr(sr.numpy(), x.numpy(), data_range=255.0), "seconds": statistics.median(times), "sr": sr}
    cubic = upscale(lr_img, method="cubic", scale=2, dtype="float32").image.as_tensor()[:, : x.shape[1], : x.shape[2]]
    return {
        "fit": f"multiband_x2, EDSR 32x4, {fr.iterations} it, {fit_s:.0f} s, val {fr.val_psnr:.2f} vs cubic {fr.val_psnr_cubic:.2f} dB",
        "psnr_fp32": out["fp32"]["psnr"], "psnr_bf16": out["bf16"]["psnr"],
        "psnr_cubic": psnr(cubic.numpy(), x.numpy(), data_range=255.0),
        "psnr_bf16_vs_fp32": psnr(out["bf16"]["sr"].numpy(), out["fp32"]["sr"].numpy(), data_range=255.0),
        "speed_fp32_over_bf16": out["fp32"]["seconds"] / out["bf16"]["seconds"],
        "shape": list(x.shape),
        "torch_threads": torch.get_num_threads(),
    }


# --------------------------------------------------------------------------- report
def table(rows: list[dict], cols: list[tuple[str, str, str]]) -> str:
    head = "| " + " | ".join(c[1] for c in cols) + " |"
    sep = "|" + "|".join("---" for _ in cols) + "|"
    body = []
    for r in rows:
        cells = []
        for key, _, fmt in cols:
            v = r.get(key)
            cells.append("-" if v is None else (format(v, fmt) if fmt else str(v)))
        body.append("| " + " | ".join(cells) + " |")
    return "\n".join([head, sep, *body])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes, one repeat")
    ap.add_argument("--sizes", help="comma list of raster sizes for (b)/(c), default 4000,8000,16000 (quick: 1000,2000,4000)")
    ap.add_argument("--repeats", type=int, help="runs per measurement (median), default 3 (quick: 1)")
    ap.add_argument("--workdir", help="temporary folder (default: a new one under the system temp dir)")
    ap.add_argument("--skip", default="", help="comma list of parts to skip: a,b,d")
    ap.add_argument("--methods", default="model,cubic,gdal", help="(b)/(c): which of model,cubic,gdal to run")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return 0
    sizes = [int(s) for s in (args.sizes or ("1000,2000,4000" if args.quick else "4000,8000,16000")).split(",")]
    repeats = args.repeats or (1 if args.quick else 3)
    skip = set(filter(None, args.skip.split(",")))
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="medsat_bench_"))
    work.mkdir(parents=True, exist_ok=True)
    m = machine()
    print(f"machine: {m['cpu']}, {m['cores']} cores ({m['torch_threads']} torch threads), ISA {m['isa']} "
          f"(torch CPU capability {m['torch_cpu_capability']}); torch {m['torch']}, rasterio {m['rasterio']}, "
          f"GDAL {m['gdal']}, Python {m['python']}")
    print(f"load average at start: {load()}; repeats: {repeats} (medians)\n")
    try:
        if "a" not in skip:
            size = 512 if args.quick else 1024
            models = [(16, 2)] if args.quick else [(64, 8), (16, 2)]
            rows = overhead(work, size, repeats, models)
            print("(a) overhead of the full upscale path (streamed GeoTIFF -> deflated GeoTIFF, x2) against the bare forward\n")
            print(table(rows, [("model", "model", ""), ("precision", "precision", ""), ("input", "input", ""), ("tile", "tile", ""),
                               ("full_s", "full path (s)", ".2f"), ("bare_s", "bare forward (s)", ".2f"),
                               ("full_ns_per_px", "full ns/output px", ".1f"), ("bare_ns_per_px", "bare ns/output px", ".1f"),
                               ("ratio", "full / bare", ".2f")]))
            print(f"\nload average: {load()}\n")
        if "b" not in skip:
            rss, gdal = memory(work, sizes, repeats, [m for m in args.methods.split(",") if m])
            base = {r["what"]: r["maxrss_mb"] for r in rss if r["size"] == sizes[0]}
            for r in rss:
                r["rss_ratio"] = r["maxrss_mb"] / base[r["what"]]
            print("(b) peak RSS, x2 of synthetic 4-band uint16 rasters (fresh process each; VmHWM)\n")
            print(table(rss, [("size", "input px²", ""), ("what", "method", ""), ("seconds", "time (s)", ".1f"),
                              ("maxrss_mb", "peak RSS (MB)", ".0f"), ("rss_ratio", f"RSS / RSS({sizes[0]}²)", ".2f"),
                              ("input_mb", "input (MB)", ".0f"), ("output_mb", "output (MB)", ".0f")]))
            by = {(r["size"], r["what"]): r for r in rss}
            for r in gdal:
                ours = by.get((r["size"], "cubic (streamed)"))
                r["ours_s"] = ours["seconds"] if ours else None
                r["ratio"] = (ours["seconds"] / r["seconds"]) if ours else None
            print("\n(c) GDAL cubic (rasterio.warp.reproject, file to file, same grid and creation options) for scale\n")
            print(table(gdal, [("size", "input px²", ""), ("seconds", "GDAL reproject (s)", ".1f"),
                               ("maxrss_mb", "GDAL peak RSS (MB)", ".0f"), ("ours_s", "upscale --method cubic (s)", ".1f"),
                               ("ratio", "ours / GDAL", ".2f")]))
            print(f"\nload average: {load()}\n")
        if "d" not in skip:
            d = precision_cost(work, args.quick)
            if d is None:
                print("(d) skipped: the NAIP scene is not in ../shared/data")
            else:
                print(f"(d) bf16 against fp32 on NAIP {d['shape']} degraded x2 (Wald), model: {d['fit']}\n")
                print(table([d], [("psnr_cubic", "PSNR cubic (dB)", ".3f"), ("psnr_fp32", "PSNR fp32 (dB)", ".3f"),
                                  ("psnr_bf16", "PSNR bf16 (dB)", ".3f"), ("psnr_bf16_vs_fp32", "PSNR bf16 vs fp32 output (dB)", ".1f"),
                                  ("speed_fp32_over_bf16", "speed-up bf16", ".2f")]))
                print(f"\nbf16 PSNR cost: {d['psnr_fp32'] - d['psnr_bf16']:+.4f} dB "
                      f"({'within' if d['psnr_fp32'] - d['psnr_bf16'] <= 0.05 else 'above'} the 0.05 dB rule)")
                print(f"load average: {load()}")
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

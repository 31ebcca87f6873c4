"""Benchmark check: is the Landsat-8 pan a fair reference for ranking x2 outputs by sharpness? (#14)

Companion of benchmarks/degradation_routes.py (case ``l8``, benchmarks/landsat_cases.py).

1. Coherence and Wiener gain of the pan (decimated to 30 m through its
   measured relative PSF) on the B2-B4 blend of the real 30 m MS, by radial
   frequency, on 64 x 64 Hann tiles of the scored crop and of the fit half.
   Coherence is blind to any linear filter (a PSF, a constant shift): where
   it is low, the pan and the blend differ by what no PSF matching removes
   (spectral response, noise), and the pan's best linear match of the blend,
   the Wiener gain, shrinks those frequencies: a reference that rewards blur.
2. The ``l8`` outputs (GDAL cubic, and ``upscale --config multiband_x2
   --degradation profile``, 100 iterations, seed 0, as the routes benchmark)
   split at the 30 m Nyquist: squared error against the pan below / above
   it, and the PSNR with the output's band above it scaled by 0, 0.5, 1
   (a diagnostic, not a score: it is tuned on the reference).

Machine: shared 2-core CPU, no GPU (nice -n 10).
Usage: nice -n 10 python benchmarks/landsat_pan_check.py
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

import degradation_cases as dc  # noqa: E402
import landsat_cases as lc  # noqa: E402
from degradation_routes import run_route  # noqa: E402
from medsat_sr._atomic import atomic_path  # noqa: E402

def split(a: np.ndarray, cut: float = 0.25) -> tuple[np.ndarray, np.ndarray]:
    """``a`` below and above ``cut`` cycles/px (square pass band; 0.25 on the 15 m grid = the 30 m Nyquist)."""
    fy, fx = np.meshgrid(np.fft.fftfreq(a.shape[0]), np.fft.fftfreq(a.shape[1]), indexing="ij")
    low = np.maximum(np.abs(fy), np.abs(fx)) < cut
    f = np.fft.fft2(a)
    return np.fft.ifft2(f * low).real, np.fft.ifft2(f * ~low).real


def main() -> int:
    ms_all, pan_all, _, _ = lc.load_scene()
    psf = lc.measure_pan_psf(ms_all, pan_all)
    out = ["# benchmarks/landsat_pan_check.py: is the Landsat-8 pan a fair reference for ranking sharpness? (#14)",
           "machine: shared 2-core CPU, no GPU (nice -n 10)", "",
           f"## 1. Pan (decimated through sigma_rel {psf['sigma_rel']:.3f} pan px) vs the B2-B4 blend of the real 30 m MS",
           f"radial bins of 0.0625 cycles/30 m px, 0 to Nyquist; {dc.COH_TILE} x {dc.COH_TILE} Hann tiles, half overlap",
           f"{'region':<30}{'':<10}" + "".join(f"{(k + 0.5) / dc.COH_BINS / 2:>7.3f}" for k in range(dc.COH_BINS))]
    for name, cols in (("scored crop (cols 320-619)", lc.COLS), ("fit half (cols 0-299, cloudy)", lc.FIT_COLS)):
        ms, ref = lc._crop(ms_all, pan_all, lc.ROWS, cols)
        p30 = lc._to30(ref, psf["sigma_rel"])
        coh, gain = dc.coherence(lc._blend(lc._blend_fit(ms, p30), [ms[b] for b in lc.RGB]), p30)
        out += [f"{name:<30}{'coherence':<10}" + "".join(f"{v:>7.2f}" for v in coh),
                f"{'':<30}{'gain':<10}" + "".join(f"{v:>7.2f}" for v in gain)]
    out += ["", "## 2. The l8 outputs against the pan (15 m), split at the 30 m Nyquist (PSF-matched blend weights)",
            f"{'output':<10}| {'PSNR':>6} | {'MSE low':>9}{'MSE high':>9} | {'energy high':>11}{'corr high':>10} | "
            "PSNR, high band x0 / x0.5 / x1"]
    with tempfile.TemporaryDirectory(prefix="l8_pan_check_") as tmp:
        case = [c for c in lc.landsat_cases(Path(tmp), False) if c.key == "l8"][0]
        _, ref = lc._crop(ms_all, pan_all, lc.ROWS, lc.COLS)
        coef = np.array(case.extra["blend_fair"])
        rl, rh = split(ref)
        b = 8
        for name, cfg, deg in (("cubic", "cubic", None), ("model", case.config, "profile")):
            path = Path(tmp) / f"{name}.tif"
            kw = case.cubic if cfg == "cubic" else {}
            run_route(case.input, path, cfg, deg, iters=100, seed=0, **kw)
            got = dc._read_bands(path)
            bl = lc._blend(coef, [got[k] for k in sorted(got, key=int)[:3]])
            lo, hi = split(bl)
            mse = [float(((u - v)[b:-b, b:-b] ** 2).mean()) for u, v in ((lo, rl), (hi, rh))]
            hc, rc = hi[b:-b, b:-b], rh[b:-b, b:-b]
            corr = float((hc * rc).sum() / np.sqrt((hc ** 2).sum() * (rc ** 2).sum()))
            scaled = " / ".join(f"{dc._psnr2d(lo + g * hi, ref):.2f}" for g in (0.0, 0.5, 1.0))
            out.append(f"{name:<10}| {dc._psnr2d(bl, ref):>6.2f} | {mse[0]:>9.0f}{mse[1]:>9.0f} | "
                       f"{float((hc ** 2).mean()):>11.0f}{corr:>10.3f} | {scaled}")
        out.append(f"{'pan':<10}| {'':>6} | {'':>9}{'':>9} | {float((rh[b:-b, b:-b] ** 2).mean()):>11.0f}{'':>10} |")
    text = "\n".join(out) + "\n"
    print(text)
    with atomic_path(REPO / "benchmarks" / "results" / "landsat_pan_check.txt") as tmp_path:
        tmp_path.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

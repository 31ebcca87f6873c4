"""``degradation: auto``: estimate the input's degradation, then degrade with the estimate (#14).

A job config (or profile) whose ``degradation.estimate`` is ``"auto"``
measures its self-supervised input first (:mod:`medsat_sr.estimate`) and
gets a copy of itself whose degradation override holds the estimate, so
the training pairs and the held-out split go through THE recipe
(:func:`medsat_sr.degrade.recipe`) with the measured parameters. Nothing
here degrades anything.

* volumes with one thick axis: the slice profile (shape, FWHM, gap);
* a band set (guided): each target band's Gaussian PSF relative to the
  finest guide band, as an MTF at the target Nyquist;
* a single raster: each band's own PSF across scales, turned into the blur
  that makes the input look, ``scale`` times coarser, as it looks now (or,
  for an input blurrier per pixel than :data:`SHARPEST_TARGET_MTF`, as a
  sensor at that floor would see it).

An estimate whose confidence is below :data:`MIN_CONFIDENCE` is not used:
the profile stays, and the record says so. The exception is a single
raster whose every reading (the whole raster, and all its stability checks
but one) puts the PSF beyond the profile's on the same side: the data
reject the profile even where they disagree on how far, and the estimate
is used (:func:`_rejects`; the S2 L2A overview, a real pair, read MTF 0.65
at confidence 0.49 against the profile's 0.3: with the profile the fit lost
1.97 dB to cubic against the real finer band, with the estimate 0.03 dB).
Neither is a single raster's estimate that asks for pairs blurrier than a
sensor is built to deliver (:data:`PLAUSIBLE_SENSOR_MTF`): a stable
estimate can still rest on an assumption that does not hold.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np

from medsat_sr import degrade, estimate
from medsat_sr.config import JobConfig, with_degradation
from medsat_sr.errors import ConfigError
from medsat_sr.image import BandSet, Key, is_raster, is_volume

__all__ = ["ASSUMES", "MIN_CONFIDENCE", "MISMATCH", "PLAUSIBLE_SENSOR_MTF", "SHARPEST_TARGET_MTF", "SHARPEST_TARGET_SIGMA",
           "wants_estimate",
           "apply_estimate", "check_profile", "estimate_for", "compare_with_profile"]

logger = logging.getLogger(__name__)

#: Estimates below this confidence leave the profile's degradation in place.
MIN_CONFIDENCE = 0.5

#: An estimate whose equivalent Gaussian width differs from the profile's by more than this ratio disagrees strongly.
MISMATCH = 1.3

_CROP = 512  # raster estimates read a central crop of this many pixels

#: A single raster's output is asked to be at least as sharp as a sensor whose MTF at its own Nyquist is this
#: (the lower bound of the Sentinel-2 MSI requirement, 0.15-0.3 at Nyquist).
SHARPEST_TARGET_MTF = 0.15
#: That PSF's Gaussian sigma in output pixels (0.62).
SHARPEST_TARGET_SIGMA = degrade.mtf_to_sigma(SHARPEST_TARGET_MTF, 1.0)

#: A single raster's estimate asking for pairs blurrier than a sensor with this MTF at the input's Nyquist is not used.
#: Sensors are built to about 0.1-0.3 (Sentinel-2 MSI 0.15-0.3); an input blurrier per pixel than half the low end
#: was resampled or blurred after capture, and how it looks across scales no longer says how sharp the scene is
#: at the finer scale (a real Landsat-8 product reduced x2 read 0.038, and a fit with it lost 8.5 dB to cubic).
PLAUSIBLE_SENSOR_MTF = 0.05

#: What a single raster's estimate rests on and no held-out split can check (the record's ``assumes``).
ASSUMES = ("the scene looks alike across scales (a single raster's PSF estimated from itself), and the output "
           f"is at least as sharp as a sensor with MTF {SHARPEST_TARGET_MTF} at its own Nyquist")


def wants_estimate(cfg: Any) -> bool:
    """Whether the config's effective degradation says ``estimate: auto``."""
    return getattr(cfg.profile.degradation, "estimate", "profile") == "auto"


def _centre(a: np.ndarray, n: int) -> np.ndarray:
    h, w = a.shape[-2:]
    r0, c0 = max(0, (h - n) // 2), max(0, (w - n) // 2)
    return a[..., r0:r0 + n, c0:c0 + n]


def _plain(img: Any) -> np.ndarray:
    t = img.as_tensor() if hasattr(img, "as_tensor") else img
    return np.nan_to_num(np.asarray(t.detach().cpu().numpy() if hasattr(t, "detach") else t, dtype=np.float64))


def _volume_estimate(img: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    spacing = [float(s) for s in img.meta[Key.SPACING]]
    est = estimate.estimate_slice_profile(_plain(img), spacing)
    return est.override(), est.record()


def _pairs_mtf(sigma_own: float, s: float) -> tuple[float, float]:
    """``(target sigma, pairs' MTF at the x s Nyquist)`` for an input whose own PSF is ``sigma_own`` of its pixels.

    The input's own PSF is ``s * sigma_own`` output pixels. The output is to
    look like a sensor whose own PSF is ``target = min(sigma_own,
    SHARPEST_TARGET_SIGMA)`` output pixels, so the pairs' blur (output
    pixels) is ``sqrt((s * sigma_own)^2 - target^2)``. With ``target =
    sigma_own`` (the scene alike across scales) that is ``sqrt(s^2 - 1) *
    sigma_own``; the floor keeps an input blurrier per pixel than any sensor
    is built to be (a resampled product, an extra blur) from passing that
    blur on to the output. The MTF falls as ``sigma_own`` grows.
    """
    target = min(sigma_own, SHARPEST_TARGET_SIGMA)
    apply_sigma = math.sqrt(max((s * sigma_own) ** 2 - target ** 2, 0.0))  # output px
    return target, round(degrade.sigma_to_mtf(max(apply_sigma, 1e-3), s), 4)


def _raster_psf(bands: np.ndarray, s: float) -> dict[str, Any]:
    """One PSF estimate across scales (shared by ``bands``, ``(C, H, W)``) as the MTF at the ``x s`` Nyquist.

    ``checks_mtf``: the same MTF from each stability re-estimate (four
    quadrants, the x3 step), for :func:`_rejects`.
    """
    e = estimate.estimate_raster_psf(bands, ratio=2)
    target, mtf = _pairs_mtf(e.sigma, s)
    return {"sigma_own_px": round(e.sigma, 3), "target_sigma_px": round(target, 3), "mtf_nyquist": mtf,
            "confidence": e.confidence, "plausible": mtf >= PLAUSIBLE_SENSOR_MTF, "notes": e.notes,
            "checks_mtf": [_pairs_mtf(c, s)[1] for c in e.checks], "at_edge": e.at_edge}


def _rejects(p: dict[str, Any], profile_mtf: float | None) -> bool:
    """Whether a single raster's estimate ``p`` rejects the profile's MTF, however unsteady it is.

    It does when the whole-raster estimate and every stability check but
    the one farthest from it (forgiven, as the confidence forgives one odd
    quadrant) lie beyond ``profile_mtf``, all on the same side: the data
    then disagree with the profile wherever they are read, even where they
    disagree with each other on how far. An implausible estimate, or one at
    the edge of the search grid (a bound, not a value), rejects nothing.
    """
    checks = [float(c) for c in p.get("checks_mtf") or []]
    if profile_mtf is None or len(checks) < 2 or not p.get("plausible") or p.get("at_edge"):
        return False
    whole = float(p["mtf_nyquist"])
    kept = sorted(checks, key=lambda c: abs(math.log(max(c, 1e-6) / whole)))[:-1] + [whole]
    return all(c > profile_mtf for c in kept) or all(c < profile_mtf for c in kept)


def _profile_mtfs(profile: Any, s: float, names: list[Any]) -> list[float | None]:
    """The profile's MTF at the ``x s`` Nyquist for each band (``None`` where it models no Gaussian PSF)."""
    try:
        return [degrade.sigma_to_mtf(sig, s) for sig in degrade.band_sigmas(profile, s, names)]
    except Exception:  # noqa: BLE001 - a box or k-space profile has no Gaussian to reject
        return [None] * len(names)


def _implausible(what: str, mtf: float) -> str:
    return (f"{what} asks for pairs blurrier than any sensor is built to deliver (MTF {mtf} at the input's Nyquist, "
            f"under {PLAUSIBLE_SENSOR_MTF}): the raster was resampled or blurred after capture, so its look across "
            "scales does not say how sharp the scene is; the profile's degradation stays")


def _raster_estimate(img: Any, cfg: JobConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    """A single raster's own PSF across scales.

    Bands the profile names (each with its own MTF in the profile) get one
    estimate each, and the confident ones replace the profile's values.
    Otherwise (unnamed bands, or ``band1``... on a generic profile) the
    bands are taken to share one camera's PSF and one estimate is fitted to
    all of them together, which is steadier on small inputs.
    """
    s = float(max(cfg.scale_for())) if hasattr(cfg, "scale_for") else 2.0
    data = _centre(_plain(img), _CROP)
    names = list(img.meta.get(Key.BAND_NAMES) or [None] * data.shape[0])
    known = set(cfg.profile.band_names or [])
    method = ("spectral matching across scales, confidence from its stability over the quadrants and a x3 step "
              "(medsat_sr.estimate.estimate_raster_psf)")
    if all(n is not None and n in known for n in names):
        per = {str(n): _raster_psf(data[k:k + 1], s) for k, n in enumerate(names)}
        prof = dict(zip(per, _profile_mtfs(cfg.profile, s, names)))
        rejected = [n for n, p in per.items() if p["confidence"] < MIN_CONFIDENCE and _rejects(p, prof[n])]
        gains: Any = {n: p["mtf_nyquist"] for n, p in per.items()
                      if (p["confidence"] >= MIN_CONFIDENCE or n in rejected) and p["plausible"]}
        conf = max(p["confidence"] for p in per.values())  # the best band decides whether any is used
        rec = {"kind": "psf", "method": method + "; per band, bands below the confidence floor (unless they reject "
               "the profile's MTF) or blurrier than a sensor keep the profile's MTF", "per_band": per,
               "mtf_nyquist": gains, "confidence": round(float(conf), 3), "scale": s, "assumes": ASSUMES}
        if rejected:
            rec["rejects_profile"] = rejected
        if not gains and conf >= MIN_CONFIDENCE:
            rec["unusable"] = _implausible("every confident band's estimate", min(p["mtf_nyquist"] for p in per.values()))
        return {"model": "psf", "psf": {"shape": "gaussian", "mtf_nyquist": gains}}, rec
    shared = _raster_psf(data, s)
    rec = {"kind": "psf", "method": method + f"; one PSF shared by the {data.shape[0]} band(s)", "shared": shared,
           "mtf_nyquist": shared["mtf_nyquist"], "confidence": shared["confidence"], "scale": s, "assumes": ASSUMES}
    prof_all = _profile_mtfs(cfg.profile, s, names)
    if shared["confidence"] < MIN_CONFIDENCE and all(_rejects(shared, m) for m in prof_all):
        rec["rejects_profile"] = ["shared"]
    if not shared["plausible"]:
        rec["unusable"] = _implausible("the estimate", shared["mtf_nyquist"])
    return {"model": "psf", "psf": {"shape": "gaussian", "mtf_nyquist": shared["mtf_nyquist"]}}, rec


def _band(bs: BandSet, name: str) -> np.ndarray:
    img = next(i for i in bs.groups.values() if name in list(i.meta.get(Key.BAND_NAMES) or []))
    return _plain(img)[list(img.meta[Key.BAND_NAMES]).index(name)]


def _bandset_estimate(bs: BandSet, cfg: JobConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    """Each target band against the guide band it is most alike (highest band-pass R^2); confident bands only."""
    targets, guides = cfg.target_bands() or [], cfg.guide_bands() or []
    have = {n for img in bs.groups.values() for n in (img.meta.get(Key.BAND_NAMES) or [])}
    if not guides or any(n not in have for n in targets + guides):
        raise ConfigError("degradation: auto needs the target and guide bands in the band set")
    gains: dict[str, float] = {}
    per: dict[str, dict[str, Any]] = {}
    for t in targets:
        coarse = _band(bs, t)
        best: Any = None
        for g in guides:
            fine = _band(bs, g)
            r = int(round(fine.shape[-1] / coarse.shape[-1]))
            n = max(16, _CROP // max(r, 1))
            r0, c0 = max(0, (coarse.shape[0] - n) // 2), max(0, (coarse.shape[1] - n) // 2)  # aligned crops
            e = estimate.estimate_band_psf(fine[r * r0:r * (r0 + n), r * c0:r * (c0 + n)],
                                           coarse[r0:r0 + n, c0:c0 + n], r)
            if best is None or e.confidence > best[1].confidence:
                best = (g, e)
        g, e = best
        per[t] = {"guide": g, "sigma_fine_px": round(e.sigma, 3), "mtf_nyquist": round(e.mtf_nyquist, 4),
                  "confidence": e.confidence}
        if e.confidence >= MIN_CONFIDENCE:
            gains[t] = round(e.mtf_nyquist, 4)
    conf = [p["confidence"] for p in per.values()]
    rec = {"kind": "psf", "method": "band-pass regression against the most alike guide band "
           "(medsat_sr.estimate.estimate_band_psf); bands below the confidence floor keep the profile's MTF",
           "per_band": per, "mtf_nyquist": gains, "confidence": round(float(max(conf)) if gains else 0.0, 3),
           "scale": float(max(cfg.scale_for()))}
    return {"model": "psf", "psf": {"shape": "gaussian", "mtf_nyquist": gains}}, rec


def estimate_for(image: Any, cfg: JobConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(degradation override, estimate record)`` measured on ``image`` (volume, raster or band set).

    Raises:
        ConfigError: the input cannot be estimated (not anisotropic, too small, ...).
    """
    if isinstance(image, BandSet):
        return _bandset_estimate(image, cfg)
    if is_volume(image):
        return _volume_estimate(image)
    if is_raster(image):
        return _raster_estimate(image, cfg)
    raise ConfigError(f"degradation: auto cannot estimate from {type(image).__name__}")


def _equivalent_sigma(shape: str, fwhm: float) -> float:
    """The standard deviation of a Gaussian (FWHM) or rect (width) profile."""
    return fwhm / math.sqrt(12.0) if shape == "rect" else degrade.fwhm_to_sigma(fwhm)


def compare_with_profile(profile: Any, override: dict[str, Any], rec: dict[str, Any], image: Any) -> dict[str, Any]:
    """How far the estimate is from the profile's assumed degradation (equivalent Gaussian widths).

    Returns:
        ``{"ratio": estimate / profile, "strong": bool, "text": one sentence}``.
    """
    deg = profile.degradation
    if override.get("model") == "slice_profile":
        spec = deg.slice_profile
        axis = int(rec["axis"])
        prof_fwhm = float(spec.fwhm) if isinstance(spec.fwhm, (int, float)) else degrade.slice_thickness(image, axis)
        ratio = _equivalent_sigma(rec["shape"], rec["fwhm_mm"]) / _equivalent_sigma(spec.shape, prof_fwhm)
        what = (f"estimated slice profile {rec['shape']} FWHM {rec['fwhm_mm']:.2f} mm vs the profile's "
                f"{spec.shape} {prof_fwhm:.2f} mm")
    else:
        s = float(rec.get("scale") or 2.0)
        gains = override["psf"]["mtf_nyquist"]
        names = list(gains) if isinstance(gains, dict) else [None]
        est = [degrade.mtf_to_sigma(float(gains[n] if n is not None else gains), s) for n in names]
        try:
            prof = degrade.band_sigmas(profile, s, names)
        except Exception:  # noqa: BLE001 - a box PSF has no sigma: compare with one low-res pixel
            prof = [degrade.fwhm_to_sigma(s)] * len(names)
        ratio = float(np.exp(np.mean(np.log(np.asarray(est) / np.asarray(prof)))))
        what = f"estimated PSF sigma {np.mean(est):.2f} vs the profile's {np.mean(prof):.2f} HR px (mean over bands)"
    strong = ratio > MISMATCH or ratio < 1 / MISMATCH
    text = f"{what} (x{ratio:.2f})" + ("; the estimate and the profile disagree strongly" if strong else "")
    return {"ratio": round(float(ratio), 3), "strong": bool(strong), "text": text}


def apply_estimate(cfg: JobConfig, image: Any) -> tuple[JobConfig, dict[str, Any]]:
    """The config with the input's estimated degradation, and the estimate's record.

    A failed or low-confidence estimate keeps the profile's degradation
    (``record["used"]`` is ``False`` and ``record["reason"]`` says why).
    """
    try:
        override, rec = estimate_for(image, cfg)
    except ConfigError as exc:
        logger.warning("degradation: auto: no estimate (%s); the profile's degradation stays", exc)
        return cfg, {"used": False, "reason": str(exc)}
    low = float(rec.get("confidence", 0.0)) < MIN_CONFIDENCE
    if low and not rec.get("rejects_profile"):
        rec.update(used=False, reason=f"confidence {rec.get('confidence')} < {MIN_CONFIDENCE}: the profile's degradation stays")
        logger.warning("degradation: auto: %s", rec["reason"])
        return cfg, rec
    if rec.get("unusable"):
        rec.update(used=False, reason=rec.pop("unusable"))
        logger.warning("degradation: auto: %s", rec["reason"])
        return cfg, rec
    rec.update(used=True, override=override, profile_agreement=compare_with_profile(cfg.profile, override, rec, image))
    if low:  # not steady, but every reading of the raster puts the PSF on one side of the profile's
        rec["profile_agreement"]["text"] += (
            f"; estimated with confidence {rec['confidence']} (< {MIN_CONFIDENCE}), used because the whole raster "
            "and all its stability checks but one read the PSF beyond the profile's, on the same side")
    logger.info("degradation: auto: %s", rec["profile_agreement"]["text"])
    return with_degradation(cfg, override), rec


def check_profile(cfg: JobConfig, image: Any) -> dict[str, Any] | None:
    """``degradation: profile``: measure the input anyway and say how far the profile is from it (check only).

    The pairs and the held-out split keep the profile's degradation; the
    record (``used: false``) carries the estimate and ``profile_agreement``,
    so a strong disagreement reaches the verdict: the held-out split cannot
    notice a wrong profile, since it is degraded the same wrong way (#14).
    Volumes whose profile models a slice profile and band sets whose profile
    models a Gaussian PSF are checked. A single raster's estimate across
    scales is slow and rarely confident: its record says it was not checked,
    and the verdict says that the held-out split cannot show a mismatch (on
    Landsat-8 the split scored the model 2.8 dB over GDAL cubic, the real pan
    1.0 dB under it).

    Returns:
        The record, or ``None`` (no check applies, or the estimate failed or
        is not confident).
    """
    deg = cfg.profile.degradation
    if is_raster(image) and not isinstance(image, BandSet) and deg.model == "psf":
        return {"kind": "psf", "used": False, "reason": "a single raster's own PSF is not checked: slow and rarely "
                "confident (--degradation auto measures it)"}
    volume = is_volume(image) and not isinstance(image, BandSet)
    if not ((volume and deg.model == "slice_profile")
            or (isinstance(image, BandSet) and deg.model == "psf" and deg.psf.shape == "gaussian")):
        return None
    try:
        override, rec = estimate_for(image, cfg)
        if float(rec.get("confidence", 0.0)) < MIN_CONFIDENCE or (override.get("psf") or {}).get("mtf_nyquist") == {}:
            return None  # not confident (no band confident, for a band set)
        agree = compare_with_profile(cfg.profile, override, rec, image)
    except Exception as exc:  # noqa: BLE001 - a check never stops the fit
        logger.info("degradation check: no estimate (%s)", exc)
        return None
    if agree["strong"]:
        agree["text"] += " (measured as a check; the fit used the profile: --degradation auto trains with the estimate)"
        logger.warning("degradation: %s", agree["text"])
    rec.update(used=False, reason="check only (degradation: profile): the pairs use the profile's degradation",
               estimate=override, profile_agreement=agree)
    return rec


"""Which file is the pan, which are the MS bands, and the sensor's MTF gains (from domains/*.yaml).

Two profiles are read by name (they have no ``match`` patterns):

* ``landsat8_9_l1``: a band folder of per-band files named as USGS names
  them (``LC08_..._B2.TIF`` ... ``_B8.TIF``, or ``l8_B2.tif``): B8 is the
  pan, any present subset of B2-B7 the MS bands (other bands are ignored);
* ``pan_ms``: ``--pan PAN.tif MS.tif`` (one multi-band MS file, or a folder
  of single-band MS files), or a band folder with a file named ``pan``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from medsat_sr.domains import DomainProfile, load_domain
from medsat_sr.errors import DataError
from medsat_sr.io.geotiff_bandset import band_files

#: Pan MTF gain at Nyquist for a sensor without a measured one (Vivone et al. 2015 toolbox).
GENERIC_PAN_GAIN = 0.15

#: A USGS per-band file stem: ``..._B<n>``.
_LANDSAT_STEM = re.compile(r"(?i)^(?:.*_)?B(\d{1,2})$")


@dataclass(frozen=True)
class Inputs:
    """A resolved pan-sharpening input.

    Attributes:
        profile: the domain profile (``landsat8_9_l1`` or ``pan_ms``).
        pan: the pan file.
        ms: the MS files (one multi-band file, or one file per band).
        bands: the MS band names, in output order (``None``: from the file).
        ms_gains: MTF gain at Nyquist per MS band (``None``: one value for all, :attr:`ms_gain`).
        ms_gain: the MS gain when bands are unnamed.
        pan_gain: the pan's MTF gain at Nyquist.
    """

    profile: DomainProfile
    pan: Path
    ms: tuple[Path, ...]
    bands: tuple[str, ...] | None
    ms_gains: tuple[float, ...] | None
    ms_gain: float
    pan_gain: float

    def gains(self, n: int) -> tuple[float, ...]:
        """One MS gain per band for ``n`` bands."""
        return self.ms_gains if self.ms_gains is not None else (self.ms_gain,) * n


def _landsat(folder: Path, files: list[Path]) -> Inputs | None:
    numbered = {int(m.group(1)): f for f in files if (m := _LANDSAT_STEM.match(f.stem))}
    prof = load_domain("landsat8_9_l1")
    ms_names = prof.group("ms").bands
    present = [b for b in ms_names if int(b[1:]) in numbered]
    if not present:
        return None
    pan_name = prof.group("pan").bands[0]
    if int(pan_name[1:]) not in numbered:
        raise DataError(f"{folder}: no pan band {pan_name} among the Landsat bands "
                        f"{', '.join('B%d' % n for n in sorted(numbered))}; pan-sharpening needs the Level-1 B8 file "
                        "(or give --pan PAN.tif)")
    gains = tuple(float(prof.mtf_nyquist(b)) for b in present)
    return Inputs(profile=prof, pan=numbered[int(pan_name[1:])], ms=tuple(numbered[int(b[1:])] for b in present),
                  bands=tuple(present), ms_gains=gains, ms_gain=gains[0], pan_gain=float(prof.mtf_nyquist(pan_name)))


def _generic(pan: Path, ms: tuple[Path, ...], bands: tuple[str, ...] | None, mtf_ms: float | None,
             mtf_pan: float | None) -> Inputs:
    prof = load_domain("pan_ms")
    g = float(mtf_ms) if mtf_ms is not None else float(prof.mtf_nyquist())
    return Inputs(profile=prof, pan=pan, ms=ms, bands=bands, ms_gains=None, ms_gain=g,
                  pan_gain=float(mtf_pan) if mtf_pan is not None else GENERIC_PAN_GAIN)


def resolve(source: str | os.PathLike[str], pan: str | os.PathLike[str] | None = None, *,
            mtf_ms: float | None = None, mtf_pan: float | None = None) -> Inputs:
    """The pan file, the MS files and the gains for an input.

    Args:
        source: a band folder (Landsat L1 names, or a ``pan`` file plus MS
            band files), or, with ``pan``, the MS file or MS band folder.
        pan: an explicit pan file.
        mtf_ms: MS gain at Nyquist for the generic profile (default 0.30).
        mtf_pan: pan gain at Nyquist for the generic profile (default 0.15).

    Raises:
        DataError: a missing file or folder, a folder without a pan band or
            without MS bands.
    """
    src = Path(source)
    if not src.exists():
        raise DataError(f"{src}: no such file or folder")
    if pan is not None:
        p = Path(pan)
        if not p.is_file():
            raise DataError(f"{p}: pan file not found")
        ms = tuple(band_files(src)) if src.is_dir() else (src,)
        if not ms:
            raise DataError(f"{src}: no MS band files in the folder")
        return _generic(p, ms, tuple(f.stem for f in ms) if src.is_dir() else None, mtf_ms, mtf_pan)
    if not src.is_dir():
        raise DataError(f"{src}: a single file has no pan band; give --pan PAN.tif {src.name}, or a band folder")
    files = band_files(src)
    found = _landsat(src, files)
    if found is not None:
        return found
    pans = [f for f in files if f.stem.lower() == "pan"]
    if not pans:
        raise DataError(f"{src}: no pan band (Landsat B8, or a file named pan.tif) among "
                        f"{', '.join(f.name for f in files) or 'no GeoTIFF files'}; or give --pan PAN.tif")
    ms = tuple(f for f in files if f != pans[0])
    if not ms:
        raise DataError(f"{src}: a pan file but no MS band files")
    return _generic(pans[0], ms, tuple(f.stem for f in ms), mtf_ms, mtf_pan)

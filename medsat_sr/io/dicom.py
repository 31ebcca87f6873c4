"""DICOM series: discovery, grouping, exact geometry, 4D and enhanced multi-frame; derived-series writer.

Reading
-------
``read(path)`` turns one DICOM series into a volume (see :mod:`medsat_sr.image`):
float32 data in physical units, shaped ``(C, X, Y, Z)``, where X runs along
the columns of a slice (the first ImageOrientationPatient vector), Y along its
rows and Z across slices. ``.affine`` maps voxel centres to RAS millimetres
(DICOM's LPS with x and y negated). The policies, in the order they apply:

* **Discovery.** ``path`` is a folder, searched recursively, or one file (a
  multi-frame file or a single slice). Hidden files and folders, ``DICOMDIR``,
  ``DIRFILE`` and ``README``/``LICENSE`` are skipped; a file is DICOM when it
  carries ``DICM`` at byte 128, or, unless its suffix is a non-DICOM one
  (``.txt``, ``.json``, ``.nii``, ...), when a preamble-less data set starting
  with a group 0x0002/0x0008 element parses and holds image attributes.
  Objects without pixel data (reports, presentation states) are skipped. Every
  header is parsed once, with the pixel data deferred; pixels are decoded only
  for the chosen series. A file that looks like DICOM but cannot be parsed,
  or that was cut short, is an error naming that file, since it may be a
  slice of the series asked for.
* **Grouping.** Images are grouped by SeriesInstanceUID. A series is split
  further when its images differ in Rows/Columns, ImageOrientationPatient
  (more than 1e-4), PixelSpacing (more than 1e-4 mm), ImageType,
  SliceThickness or echo (EchoNumbers, or the enhanced EffectiveEchoTime). A
  split part is keyed ``"<SeriesInstanceUID>#<n>"`` (n from 1, in
  InstanceNumber order); an unsplit series is keyed by its UID.
  AcquisitionNumber never splits a series: scanners number each slice pair or
  each time point with it.
* **Selection.** :func:`scan` lists the candidates with a 1-based index. With
  several candidates and no ``series=``, :func:`read` raises a
  :class:`~medsat_sr.errors.FormatError` listing each (index, key,
  description, number of images). ``series=`` accepts a key, an index
  (``2`` or ``"2"``), or a bare SeriesInstanceUID; a bare UID of a split
  series takes all its parts together when they share one image grid (rows,
  columns, orientation, pixel spacing), as dcm2niix does. That usually makes
  the slice spacing irregular (see below).
* **Sorting.** Slices are sorted by their position along the slice normal
  (row x column direction of ImageOrientationPatient), never by
  InstanceNumber.
* **4D.** Images closer than :data:`POSITION_TOL_MM` to each other are one
  slice position. When every position holds T > 1 images, the series is 4D:
  volumes become the T channels, ordered by TemporalPositionIdentifier
  (enhanced: TemporalPositionIndex, then DimensionIndexValues),
  AcquisitionNumber, TriggerTime, InstanceNumber and the file name, in that
  order of precedence. ``volume=k`` (0-based) keeps only volume k. Positions
  holding different numbers of images are a GeometryError.
* **Enhanced multi-frame.** Per-frame functional groups
  (PlanePositionSequence, PlaneOrientationSequence, PixelMeasuresSequence,
  PixelValueTransformationSequence, FrameContentSequence, the frame-type and
  MR echo sequences) are read for every frame, with the shared functional
  groups and then the top-level attributes as fallbacks. Frames then go
  through the same grouping, sorting and 4D logic as single-frame files. A
  multi-frame file without per-frame positions is refused (its frames cannot
  be placed).
* **Geometry and tolerance.** A stack is *regular* when every slice lies
  within :data:`POSITION_TOL_MM` (0.01 mm) of the straight line through the
  first and last slice at equal steps. Its affine then has the in-plane
  columns from ImageOrientationPatient and PixelSpacing and, as the slice
  column, the exact step vector ``(P_last - P_first) / (K - 1)``. Every slice
  therefore lies at its ImagePositionPatient (to that tolerance; exactly for
  the first and last). A single slice gets the step ``normal x
  SpacingBetweenSlices`` (else SliceThickness, else 1 mm).
* **Gantry tilt policy.** A stack whose step is not parallel to the normal
  (CT gantry tilt above :data:`TILT_TOL_DEG`) is refused with a
  :class:`~medsat_sr.errors.GeometryError` naming the folder, the first and
  last slice files, the angle (``gantry tilt 18.5°``) and ``resample=True
  (--resample)``: its only exact affine is *sheared* (slice column along the
  table step, not the normal), which most tools misread and a NIfTI qform
  cannot hold, so it is never returned silently. ``resample=True`` corrects
  the tilt onto an orthogonal grid (see below), as dcm2niix's tilt
  correction does; ``meta["resampled"]["tilt_corrected_deg"]`` then holds
  the angle. ``meta["gantry_tilt_deg"]`` is therefore always 0.0 (kept for
  compatibility). (The GE head CT sample interleaves two tilted
  reconstructions under one SeriesInstanceUID.)
* **Irregular stacks** (uneven spacing, missing slices, tilt combined with
  either) are refused with a :class:`~medsat_sr.errors.GeometryError` that
  names the problem and the numbers, for example ``gantry tilt 18.5°; slice
  spacing varies 1.08–7.00 mm; pass resample=True (--resample) to resample
  onto a regular grid``. A step that is an integer multiple (within 0.1) of
  the median step counts as missing slices.
* **Resampling** (``resample=True``), the way dcm2niix does it: each slice is
  shifted in-plane (linear interpolation) onto an orthogonal grid spanned by
  the slice axes and the normal, which grows in-plane to hold every shifted
  slice; uncovered voxels get the darkest value of the series. Slices are
  then interpolated linearly along the normal onto equidistant positions
  from the first to the last slice, at the smallest slice step, but never
  more than twice the original number of slices (then at ``extent / (2K -
  1)``). Missing slices are thereby interpolated. What was done is logged as
  a warning and recorded in ``meta["resampled"]``. A regular stack without
  tilt is returned unchanged. On the GE head CT sample the resampled grid is
  dcm2niix's ``_Tilt_Eq`` grid to 1e-5 mm.
* **Intensity.** RescaleSlope/RescaleIntercept are applied per slice (per
  frame for enhanced files). ``meta["intensity"]`` is the shared mapping when
  every slice has the same one, so a writer reproduces the stored integers.
  When slices differ, it is the finest slope with its intercept and
  ``meta["intensity_exact"]`` is False (logged); the writer re-fits it if the
  values do not fit.
* **Compressed transfer syntaxes** decode through pydicom's pixel backends
  (pylibjpeg and its plugins, pillow, or pydicom's own RLE decoder). When no
  decoder is installed, the FormatError names the package to ``pip install``.

Besides the keys of :mod:`medsat_sr.image`, the meta holds ``modality``,
``series_uid``, ``series_key``, ``series_description``, ``gantry_tilt_deg``,
``n_volumes``, ``volume`` (the ``volume=`` choice or None), ``resampled``
(None, or what was done) and ``intensity_exact``. ``header`` is the first
slice's data set without pixel data, private tags and functional-group
sequences (what the writer needs).

Writing
-------
``write(image, folder)`` writes a derived series (DESIGN.md §3), atomically; it
lives in :mod:`medsat_sr.io.dicom_write` (its module docstring gives the
policies) and is importable from here. Files and their frames are found in
:mod:`medsat_sr.io.dicom_files`, grouped into series in
:mod:`medsat_sr.io.dicom_series` (``scan`` and ``SeriesInfo`` are importable
from here too), slice geometry is planned in :mod:`medsat_sr.io.dicom_stack`,
pixel data decoded in :mod:`medsat_sr.io.dicom_pixels`.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from monai.data import MetaTensor
from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.uid import UID

from medsat_sr.errors import ConfigError, DataError, FormatError, MedsatError
from medsat_sr.image import make_volume
from medsat_sr.io.dicom_base import (
    _CONVERSION_ERRORS,
    _PIXEL_KEYWORDS,
    POSITION_TOL_MM,
    TILT_TOL_DEG,
    _malformed,
)
from medsat_sr.io.dicom_pixels import _load
from medsat_sr.io.dicom_files import is_dicom_file
from medsat_sr.io.dicom_series import SeriesInfo, _scan, _select, scan
from medsat_sr.io.dicom_stack import _apply_resample, _plan
from medsat_sr.io.dicom_write import (  # re-exported: the writer is part of this module's API
    DEFAULT_MANUFACTURER,  # noqa: F401
    DEFAULT_PATIENT_POSITION,  # noqa: F401
    WRITE_DTYPES,
    write,
)

__all__ = [
    "SeriesInfo",
    "is_dicom_file",
    "scan",
    "read",
    "write",
    "POSITION_TOL_MM",
    "TILT_TOL_DEG",
    "WRITE_DTYPES",
]

logger = logging.getLogger(__name__)



# --------------------------------------------------------------------------------------
# Discovery
# --------------------------------------------------------------------------------------


# --------------------------------------------------------------------------------------
# Frames and series
# --------------------------------------------------------------------------------------


def _lean_header(ds: Dataset) -> Dataset:
    """The data set without pixel data, private tags and functional-group sequences."""
    drop = {tag_for_keyword(k) for k in (*_PIXEL_KEYWORDS, "PerFrameFunctionalGroupsSequence",
                                          "SharedFunctionalGroupsSequence")}
    out = Dataset()
    for tag in list(ds.keys()):
        if tag in drop or tag.is_private:
            continue
        out[tag] = ds[tag]  # loads deferred values; the source data set is not kept
    if getattr(ds, "file_meta", None) is not None:
        out.file_meta = ds.file_meta
    return out


# --------------------------------------------------------------------------------------
# read
# --------------------------------------------------------------------------------------


def read(
    path: str | os.PathLike[str],
    *,
    series: str | int | None = None,
    volume: int | None = None,
    resample: bool = False,
) -> MetaTensor:
    """Read one DICOM series (or one DICOM file) as a volume.

    Args:
        path: a folder (searched recursively) or a single DICOM file.
        series: which candidate to read when there are several: a key or a
            SeriesInstanceUID as listed by :func:`scan`, or a 1-based index.
        volume: for 4D series, the 0-based volume to keep (default: all
            volumes, as channels).
        resample: resample irregular or tilted stacks onto a regular
            orthogonal grid instead of refusing them.

    Returns:
        A float32 MetaTensor ``(C, X, Y, Z)`` in physical units whose affine
        maps voxel centres to RAS mm (see the module docstring for the meta).

    Raises:
        ConfigError: an option of the wrong type or out of range.
        DataError: the path is missing, an empty folder or unreadable.
        FormatError: no DICOM image, several candidates without ``series=``,
            an unknown ``series=``, a corrupt or undecodable file.
        GeometryError: missing or degenerate geometry, or an irregular or
            tilted stack without ``resample=True``.
    """
    if series is not None and (isinstance(series, bool) or not isinstance(series, (str, int))):
        raise ConfigError(f"series must be a key, a UID or a 1-based index, got {series!r}")
    if volume is not None and (isinstance(volume, bool) or not isinstance(volume, (int, np.integer)) or volume < 0):
        raise ConfigError(f"volume must be a 0-based integer index, got {volume!r}")
    if not isinstance(resample, (bool, np.bool_)):
        raise ConfigError(f"resample must be True or False, got {resample!r}")
    p = Path(path)
    with _gc_paused():
        try:
            return _read(p, series=series, volume=volume, resample=bool(resample))
        except MedsatError:
            raise
        except (*_CONVERSION_ERRORS, OSError) as exc:
            # a malformed element converted somewhere not guarded per file
            raise _malformed(p, exc) from exc


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while parsing many small header objects.

    Parsing a series creates hundreds of thousands of short-lived objects;
    collections triggered meanwhile only rescan them (nothing is cyclic), so
    pausing saves time. The previous state is restored.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _read(p: Path, *, series: str | int | None, volume: int | None, resample: bool) -> MetaTensor:
    cands = _scan(p)
    chosen = _select(cands, series, p)
    frames = [fr for c in chosen for fr in c._frames]
    key = chosen[0].key if len(chosen) == 1 else chosen[0].uid
    label = f"{p}" if len(cands) == 1 else f"{p} [series {key}]"
    plan = _plan(frames, label, resample)
    grid = plan.grid
    n_volumes = len(grid[0])
    if volume is not None:
        if volume >= n_volumes:
            raise ConfigError(f"volume={volume} out of range: {label} has {n_volumes} volume(s) (0..{n_volumes - 1})")
        grid = [[row[int(volume)]] for row in grid]
    data, stored = _load(grid)
    resampled: dict[str, Any] | None = None
    if plan.resample is not None:
        data = _apply_resample(data, plan.resample)
        resampled = {k: v for k, v in plan.resample.items() if not k.startswith("_")}
        msg = (
            f"{label}: resampled onto a regular grid ({'; '.join(resampled['reasons'])}): "
            f"{resampled['slices_in']} -> {resampled['slices_out']} slices at {resampled['slice_spacing_mm']:.4f} mm"
        )
        if resampled["missing_slices_interpolated"]:
            msg += f"; {resampled['missing_slices_interpolated']} missing slice(s) interpolated"
        logger.warning(msg)

    used = [fr for row in grid for fr in row]
    pairs = {(fr.slope, fr.intercept) for fr in used}
    exact = len(pairs) == 1
    slope, intercept = min(pairs)  # finest slope when slices differ
    if not exact:
        logger.info(
            "%s: RescaleSlope/Intercept differ between slices (%d mappings); meta intensity is the finest one",
            label, len(pairs),
        )
    first = grid[0][0]
    try:
        header = _lean_header(first.ds)
        modality = str(first.ds.get("Modality", "") or "")
    except (*_CONVERSION_ERRORS, OSError) as exc:
        raise _malformed(first.path, exc) from exc
    n_ch = len(grid[0])
    if n_ch > 1:
        band_names = [f"vol{i}" for i in range(n_ch)]
    elif volume is not None:
        band_names = [f"vol{int(volume)}"]
    else:
        band_names = [modality or "ch0"]
    return make_volume(
        data,
        plan.affine,
        source_dtype=stored,
        intensity={"slope": float(slope), "intercept": float(intercept)},
        band_names=band_names,
        source_format="dicom",
        source_path=str(p),
        header=header,
        modality=modality,
        series_uid=chosen[0].uid,
        series_key=key,
        series_description=chosen[0].description,
        gantry_tilt_deg=float(plan.tilt_deg),
        n_volumes=n_volumes,
        volume=None if volume is None else int(volume),
        resampled=resampled,
        intensity_exact=exact,
    )

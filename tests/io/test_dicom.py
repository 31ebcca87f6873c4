"""DICOM reader and writer: synthetic series, the real samples against dcm2niix, bad input.

Synthetic series are written slice by slice with pydicom (independently of
our writer) into tmp_path. Real-data tests read ../shared/data/dicom and
compare with the dcm2niix references next to each series; they skip when
the samples are absent.
"""

from __future__ import annotations

import copy
import logging
import math
import re
import shutil
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from monai.data import MetaTensor
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    CTImageStorage,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    MRImageStorage,
    RLELossless,
    SecondaryCaptureImageStorage,
    generate_uid,
)
from pydicom.valuerep import format_number_as_ds
from scipy import ndimage

import medsat_sr.io
from medsat_sr.errors import ConfigError, DataError, FormatError, GeometryError, WriteError
from medsat_sr.geometry import fov_corners, scale_affine, scaled_shape
from medsat_sr.image import make_raster, make_volume
from medsat_sr.io import dicom, nifti

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for helpers.py
from helpers import corner_error, dcm2niix_log, grid_correspondence, resample_reference, run_dcm2niix  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared" / "data"
DCM = SHARED / "dicom"
GE = DCM / "ct_head_ge_tilt_dcm_qa_ct"
GE_IN = GE / "In" / "GE"
GE_REF = GE / "Ref_regenerated_dcm2niix_v1.0.20260724"
THICK = DCM / "mr_t1_2d_sag_thick_dcm_qa_decubitus_HFS"
THICK_IN = THICK / "In" / "HFS" / "3_t1_fl2d_sag"
EPI = DCM / "mr_epi_ge_dcm_qa_nih_mr_0004"
EPI_IN = EPI / "In" / "20180918GE" / "mr_0004"
ENH = DCM / "mr_t1_enhanced_multiframe_dcm_qa_xa30_5"
NIFTI_CT = SHARED / "nifti" / "TotalSegmentator" / "tests" / "reference_files" / "example_ct.nii.gz"

LPS_RAS = np.diag([-1.0, -1.0, 1.0])


def need(path: Path) -> Path:
    """Skip the test when the shared sample is missing."""
    if not path.exists():
        pytest.skip("../shared/data not found: real-data tests need the shared samples")
    return path


def ras(ipp: np.ndarray) -> np.ndarray:
    return LPS_RAS @ np.asarray(ipp, dtype=np.float64)


def physical(img: nib.Nifti1Image) -> np.ndarray:
    """A NIfTI's voxel values after scl_slope/scl_inter (dcm2niix stores raw integers)."""
    raw = np.asanyarray(img.dataobj).astype(np.float64)
    slope, inter = img.dataobj.slope, img.dataobj.inter
    slope = 1.0 if slope is None or not np.isfinite(slope) or slope == 0 else float(slope)
    inter = 0.0 if inter is None or not np.isfinite(inter) else float(inter)
    return raw * slope + inter


def slice_positions(affine: np.ndarray, n: int) -> np.ndarray:
    """World positions (RAS) of the first voxel of each slice."""
    aff = np.asarray(affine, dtype=np.float64)
    return aff[:3, 3][None, :] + np.outer(np.arange(n), aff[:3, 2])


def nearest_slice_error(affine: np.ndarray, n: int, ipp_lps: np.ndarray) -> tuple[float, int]:
    """Distance (mm) from a DICOM ImagePositionPatient to the nearest slice origin, and that slice."""
    d = np.linalg.norm(slice_positions(affine, n) - ras(ipp_lps)[None, :], axis=1)
    k = int(np.argmin(d))
    return float(d[k]), k


# --------------------------------------------------------------------------------------
# Synthetic series, written slice by slice with pydicom
# --------------------------------------------------------------------------------------

ROWS, COLS = 32, 40


def write_slices(
    folder: Path,
    images: list[np.ndarray],
    positions: list[np.ndarray] | np.ndarray,
    *,
    iop: tuple[float, ...] = (1, 0, 0, 0, 1, 0),
    spacing: tuple[float, float] = (0.8, 0.7),
    series_uid: str | None = None,
    slopes: list[float] | None = None,
    intercepts: list[float] | None = None,
    instance_numbers: list[int] | None = None,
    temporal: list[int] | None = None,
    description: str = "synthetic",
    modality: str = "CT",
    thickness: float = 2.0,
) -> list[Path]:
    """Write one single-frame DICOM file per image (int16, Explicit VR Little Endian)."""
    folder.mkdir(parents=True, exist_ok=True)
    series_uid = series_uid or generate_uid()
    study, frame_of_ref = generate_uid(), generate_uid()
    sop_class = CTImageStorage if modality == "CT" else MRImageStorage
    out = []
    for i, (img, pos) in enumerate(zip(images, positions)):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta.MediaStorageSOPClassUID = sop_class
        ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.SOPClassUID = sop_class
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
        ds.PatientName = "Synthetic^Phantom"
        ds.PatientID = "SYN001"
        ds.StudyInstanceUID = study
        ds.SeriesInstanceUID = series_uid
        ds.FrameOfReferenceUID = frame_of_ref
        ds.Modality = modality
        ds.SeriesDescription = description
        ds.SeriesNumber = 7
        ds.InstanceNumber = instance_numbers[i] if instance_numbers else i + 1
        if temporal:
            ds.TemporalPositionIdentifier = temporal[i]
        ds.ImagePositionPatient = [format(float(v), ".6f") for v in pos]
        ds.ImageOrientationPatient = [v if isinstance(v, str) else format_number_as_ds(float(v)) for v in iop]
        ds.PixelSpacing = [str(v) for v in spacing]
        ds.SliceThickness = str(thickness)
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.Rows, ds.Columns = img.shape
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated = ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 1
        ds.RescaleSlope = str(slopes[i] if slopes else 1)
        ds.RescaleIntercept = str(intercepts[i] if intercepts else -1024)
        ds.PixelData = np.ascontiguousarray(img, dtype="<i2").tobytes()
        path = folder / f"slice_{i:03d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        out.append(path)
    return out


def random_images(n: int, seed: int = 0, rows: int = ROWS, cols: int = COLS) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(-1000, 3000, (rows, cols)).astype(np.int16) for _ in range(n)]


def axial_positions(depths: list[float], origin=(-10.0, -20.0, 5.0)) -> np.ndarray:
    return np.array([[origin[0], origin[1], origin[2] + d] for d in depths])


# --------------------------------------------------------------------------------------
# Discovery and synthetic reading
# --------------------------------------------------------------------------------------


def test_is_dicom_file_skips_non_dicom(tmp_path: Path) -> None:
    files = write_slices(tmp_path / "s", random_images(1), axial_positions([0]))
    assert dicom.is_dicom_file(files[0])
    for name, content in [("README", b"x" * 300), ("DIRFILE", b"\0" * 300), ("notes.txt", b"hi"),
                          ("meta.json", b"{}"), ("vol.nii", b"\0" * 400), ("empty", b"")]:
        p = tmp_path / name
        p.write_bytes(content)
        assert not dicom.is_dicom_file(p), name
    # a DICOM data set written without the 128-byte preamble is still recognised
    ds = pydicom.dcmread(files[0])
    raw = tmp_path / "raw_no_preamble"
    ds.preamble = None
    pydicom.dcmwrite(raw, ds, enforce_file_format=False)
    assert raw.read_bytes()[128:132] != b"DICM"
    assert dicom.is_dicom_file(raw)


def test_synthetic_series_sorted_by_position_not_instance_number(tmp_path: Path) -> None:
    """InstanceNumbers run backwards and files are named out of order: slices still sort by position."""
    imgs = random_images(6)
    depths = [0.0, 2.5, 5.0, 7.5, 10.0, 12.5]
    order = [3, 0, 5, 1, 4, 2]  # file i holds slice order[i]
    write_slices(
        tmp_path / "s", [imgs[k] for k in order], axial_positions([depths[k] for k in order]),
        instance_numbers=[60 - 10 * k for k in order],
    )
    (tmp_path / "s" / "README.txt").write_text("not DICOM")
    vol = dicom.read(tmp_path / "s")
    assert tuple(vol.shape) == (1, COLS, ROWS, 6)
    assert vol.dtype.is_floating_point
    for k in range(6):
        np.testing.assert_array_equal(vol[0, :, :, k].numpy(), imgs[k].T.astype(np.float32) - 1024)
    expected = np.eye(4)
    expected[:3, :3] = LPS_RAS @ np.diag([0.7, 0.8, 2.5])
    expected[:3, 3] = ras([-10, -20, 5])
    np.testing.assert_allclose(np.asarray(vol.affine), expected, atol=1e-9)
    assert vol.meta["source_dtype"] == "int16"
    assert vol.meta["intensity"] == {"slope": 1.0, "intercept": -1024.0}
    assert vol.meta["source_format"] == "dicom" and vol.meta["modality"] == "CT"
    assert vol.meta["gantry_tilt_deg"] == 0.0 and vol.meta["resampled"] is None
    assert isinstance(vol.meta["header"], Dataset) and "PixelData" not in vol.meta["header"]
    assert vol.meta["orientation"] == "LPS"


def test_rescale_applied_per_slice(tmp_path: Path) -> None:
    imgs = random_images(4, seed=1)
    slopes, intercepts = [1.0, 0.5, 2.0, 0.25], [-1024.0, 10.0, -3.5, 0.0]
    write_slices(tmp_path / "s", imgs, axial_positions([0, 1, 2, 3]), slopes=slopes, intercepts=intercepts)
    vol = dicom.read(tmp_path / "s")
    for k in range(4):
        np.testing.assert_allclose(vol[0, :, :, k].numpy(), imgs[k].T * slopes[k] + intercepts[k], rtol=0, atol=1e-6)
    assert vol.meta["intensity_exact"] is False
    assert vol.meta["intensity"]["slope"] == 0.25  # the finest slope


def test_single_file_and_single_slice(tmp_path: Path) -> None:
    files = write_slices(tmp_path / "s", random_images(3), axial_positions([0, 3, 6]), thickness=3.0)
    vol = dicom.read(files[1])
    assert tuple(vol.shape) == (1, COLS, ROWS, 1)
    np.testing.assert_allclose(np.asarray(vol.affine)[:3, 2], [0, 0, 3.0])  # SliceThickness along the normal
    np.testing.assert_allclose(np.asarray(vol.affine)[:3, 3], ras([-10, -20, 8]))


def tilted_series(
    tmp_path: Path, n: int = 8, tilt_deg: float = 15.0, seed: int = 2
) -> tuple[list[np.ndarray], np.ndarray]:
    """A regular stack whose table step is not perpendicular to the slices (gantry tilt)."""
    c, s = math.cos(math.radians(tilt_deg)), math.sin(math.radians(tilt_deg))
    iop = (1.0, 0.0, 0.0, 0.0, c, -s)  # the GE head CT's kind of orientation
    step = np.array([0.0, 0.0, 3.0 / c])  # table moves along z; 3 mm between slice planes
    positions = np.array([-12.0, -15.0, 4.0]) + np.outer(np.arange(n), step)
    imgs = random_images(n, seed=seed)
    write_slices(tmp_path / "tilt", imgs, positions, iop=iop, spacing=(0.9, 0.6))
    return imgs, positions


def sheared_volume(imgs: list[np.ndarray], positions: np.ndarray, tilt_deg: float = 15.0) -> MetaTensor:
    """The tilted stack of :func:`tilted_series` with its exact, sheared affine, built by hand."""
    c, s = math.cos(math.radians(tilt_deg)), math.sin(math.radians(tilt_deg))
    row, col = np.array([1.0, 0.0, 0.0]), np.array([0.0, c, -s])
    aff = np.eye(4)
    aff[:3, :3] = LPS_RAS @ np.column_stack([row * 0.6, col * 0.9, positions[1] - positions[0]])
    aff[:3, 3] = ras(positions[0])
    data = np.stack([im.T.astype(np.float32) - 1024.0 for im in imgs], axis=-1)[None]
    return make_volume(data, aff, source_dtype="int16", intensity={"slope": 1.0, "intercept": -1024.0}, modality="CT")


def test_gantry_tilt_refused_naming_folder_files_angle_and_option(tmp_path: Path) -> None:
    """Issue #13: a tilted stack is never returned with a sheared affine; the error says what to do."""
    tilted_series(tmp_path)
    with pytest.raises(GeometryError) as err:
        dicom.read(tmp_path / "tilt")
    msg = str(err.value)
    assert msg.startswith(f"{tmp_path / 'tilt'}: gantry tilt 15.0° (slices ")
    assert "pass resample=True (--resample) to resample onto an orthogonal grid" in msg
    assert "\n" not in msg


def test_small_tilt_angle_printed_with_its_digits(tmp_path: Path) -> None:
    tilted_series(tmp_path, tilt_deg=0.05)
    with pytest.raises(GeometryError, match="gantry tilt 0.05°"):
        dicom.read(tmp_path / "tilt")


def test_gantry_tilt_resampled_onto_orthogonal_grid(tmp_path: Path) -> None:
    """resample=True: every output voxel is the linear interpolation of the sheared volume at that point."""
    sheared = sheared_volume(*tilted_series(tmp_path))
    vol = dicom.read(tmp_path / "tilt", resample=True)
    a_out, a_in = np.asarray(vol.affine), np.asarray(sheared.affine)
    lin = a_out[:3, :3] / np.linalg.norm(a_out[:3, :3], axis=0)
    np.testing.assert_allclose(lin.T @ lin, np.eye(3), atol=1e-9)  # orthogonal
    assert vol.shape[-1] == sheared.shape[-1]  # the planes were already equidistant
    assert vol.shape[2] > sheared.shape[2]  # grown in-plane to hold the shifted slices
    assert vol.meta["resampled"]["tilt_corrected_deg"] == pytest.approx(15.0, abs=1e-3)
    idx = np.indices(vol.shape[1:]).reshape(3, -1).astype(np.float64)
    src = (np.linalg.inv(a_in) @ a_out)[:3, :3] @ idx + (np.linalg.inv(a_in) @ a_out)[:3, 3:4]
    np.testing.assert_allclose(src[2], np.rint(src[2]), atol=1e-6)  # output planes are input planes
    expect = ndimage.map_coordinates(sheared[0].numpy().astype(np.float64), src, order=1, mode="nearest")
    inside = np.all((src >= 0) & (src <= np.array(sheared.shape[1:])[:, None] - 1), axis=0)
    got = vol[0].numpy().reshape(-1)
    assert inside.mean() > 0.5
    np.testing.assert_allclose(got[inside], expect[inside], rtol=0, atol=1e-2)
    assert np.all(got[~inside] >= float(sheared.min()) - 1e-3)


def test_uneven_spacing_refused_then_resampled(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    imgs = random_images(6, seed=3)
    depths = [0.0, 2.0, 4.0, 7.0, 9.0, 11.0]
    write_slices(tmp_path / "s", imgs, axial_positions(depths))
    with pytest.raises(GeometryError, match=r"slice spacing varies 2\.00–3\.00 mm; pass resample=True"):
        dicom.read(tmp_path / "s")
    with caplog.at_level(logging.WARNING, logger="medsat_sr.io.dicom"):
        vol = dicom.read(tmp_path / "s", resample=True)
    assert "resampled onto a regular grid" in caplog.text
    dz = 11.0 / 6  # smallest step 2 mm -> 6 steps over 11 mm
    assert vol.shape[-1] == 7
    np.testing.assert_allclose(np.asarray(vol.affine)[:3, 2], [0, 0, dz], atol=1e-9)
    phys = np.stack([im.T - 1024.0 for im in imgs], axis=-1)
    for m in range(7):
        z = m * dz
        expect = np.array([np.interp(z, depths, phys[i, j]) for i in range(COLS) for j in range(ROWS)])
        np.testing.assert_allclose(vol[0, :, :, m].numpy().reshape(-1), expect, atol=1e-3)
    assert vol.meta["resampled"]["slices_in"] == 6 and vol.meta["resampled"]["slices_out"] == 7


def test_missing_slice_refused_then_interpolated(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    imgs = random_images(5, seed=4)
    write_slices(tmp_path / "s", imgs, axial_positions([0.0, 2.0, 4.0, 8.0, 10.0]))
    with pytest.raises(GeometryError, match=r"1 missing slice \(gap of 4\.00 mm between slices 3 and 4"):
        dicom.read(tmp_path / "s")
    with caplog.at_level(logging.WARNING, logger="medsat_sr.io.dicom"):
        vol = dicom.read(tmp_path / "s", resample=True)
    assert "1 missing slice(s) interpolated" in caplog.text
    assert vol.meta["resampled"]["missing_slices_interpolated"] == 1
    assert vol.shape[-1] == 6
    np.testing.assert_allclose(vol[0, :, :, 3].numpy(), (imgs[2].T + imgs[3].T) / 2.0 - 1024.0, atol=1e-3)
    np.testing.assert_array_equal(vol[0, :, :, 4].numpy(), imgs[3].T - 1024.0)


def test_4d_series_channels_and_volume(tmp_path: Path) -> None:
    n_pos, n_t = 4, 3
    imgs = random_images(n_pos * n_t, seed=5)
    pos, temporal, inst, files_imgs = [], [], [], []
    for t in range(n_t):
        for k in range(n_pos):
            pos.append(axial_positions([2.0 * k])[0])
            temporal.append(t + 1)
            inst.append(100 - (t * n_pos + k))  # InstanceNumber deliberately misleading
            files_imgs.append(imgs[t * n_pos + k])
    write_slices(tmp_path / "s", files_imgs, pos, temporal=temporal, instance_numbers=inst)
    vol = dicom.read(tmp_path / "s")
    assert tuple(vol.shape) == (n_t, COLS, ROWS, n_pos)
    assert vol.meta["n_volumes"] == n_t and vol.meta["band_names"] == ["vol0", "vol1", "vol2"]
    for t in range(n_t):
        for k in range(n_pos):
            np.testing.assert_array_equal(vol[t, :, :, k].numpy(), imgs[t * n_pos + k].T - 1024.0)
    one = dicom.read(tmp_path / "s", volume=2)
    assert tuple(one.shape) == (1, COLS, ROWS, n_pos)
    np.testing.assert_array_equal(one[0].numpy(), vol[2].numpy())
    with pytest.raises(ConfigError, match=r"volume=3 out of range: .* has 3 volume\(s\) \(0\.\.2\)"):
        dicom.read(tmp_path / "s", volume=3)
    info = dicom.scan(tmp_path / "s")
    assert len(info) == 1 and info[0].n_volumes == 3 and info[0].n_images == 12
    (tmp_path / "s" / "slice_005.dcm").unlink()
    with pytest.raises(GeometryError, match="4D series is incomplete: its 4 slice positions hold between 2 and 3"):
        dicom.read(tmp_path / "s")


@pytest.mark.filterwarnings("ignore:Invalid value for VR DS")
@pytest.mark.parametrize(
    ("iop", "message"),
    [
        (("nan", 0, 0, 0, 1, 0), "ImageOrientationPatient is not finite"),
        ((1, 0, 0, 1, 0, 0), "ImageOrientationPatient .* is degenerate: row and column directions are not orthogonal"),
        ((0, 0, 0, 0, 1, 0), "zero direction vector"),
    ],
)
def test_degenerate_orientation(tmp_path: Path, iop: tuple, message: str) -> None:
    write_slices(tmp_path / "s", random_images(2), axial_positions([0, 1]), iop=iop)
    with pytest.raises(GeometryError, match=message) as err:
        dicom.read(tmp_path / "s")
    assert "slice_000.dcm" in str(err.value)
    assert len(dicom.scan(tmp_path / "s")) == 1  # listed, only reading refuses


def test_missing_position_and_spacing(tmp_path: Path) -> None:
    files = write_slices(tmp_path / "s", random_images(2), axial_positions([0, 1]))
    ds = pydicom.dcmread(files[1])
    del ds.ImagePositionPatient
    ds.save_as(files[1])
    with pytest.raises(GeometryError, match=r"slice_001\.dcm: ImagePositionPatient is missing"):
        dicom.read(tmp_path / "s")
    ds.ImagePositionPatient = [0, 0, 1]
    ds.PixelSpacing = [0, 0.7]
    ds.save_as(files[1])
    with pytest.raises(FormatError, match="candidate series"):  # a different PixelSpacing splits the series
        dicom.read(tmp_path / "s")
    with pytest.raises(GeometryError, match="PixelSpacing is missing or invalid"):
        dicom.read(tmp_path / "s", series=2)


def test_bad_paths(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such file or folder"):
        dicom.read(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="folder is empty"):
        dicom.read(tmp_path / "empty")
    with pytest.raises(DataError, match="folder is empty"):
        medsat_sr.io.read(tmp_path / "empty")
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "README").write_text("hello")
    (junk / "DIRFILE").write_bytes(b"\0" * 500)
    (junk / "a.json").write_text("{}")
    with pytest.raises(FormatError, match="no DICOM files among its 3 files"):
        dicom.read(junk)
    with pytest.raises(FormatError, match="no DICOM files"):
        medsat_sr.io.read(junk)


def test_truncated_files_named(tmp_path: Path) -> None:
    files = write_slices(tmp_path / "s", random_images(4), axial_positions([0, 1, 2, 3]))
    data = files[2].read_bytes()
    files[2].write_bytes(data[: len(data) - 100])  # cut inside the pixel data
    with pytest.raises(FormatError, match=r"slice_002\.dcm: pixel data has \d+ bytes, expected 2560.*truncated"):
        dicom.read(tmp_path / "s")
    files[2].write_bytes(data[:300])  # cut inside the header
    with pytest.raises(FormatError, match=r"slice_002\.dcm: .*(truncated|corrupt)"):
        dicom.read(tmp_path / "s")
    files[2].write_bytes(data[:140])  # only the preamble survives
    with pytest.raises(FormatError, match=r"slice_002\.dcm: .*(truncated|corrupt)"):
        dicom.scan(tmp_path / "s")


def test_two_series_listed_and_selectable(tmp_path: Path) -> None:
    a = random_images(3, seed=6)
    b = random_images(4, seed=7)
    write_slices(tmp_path / "mix" / "a", a, axial_positions([0, 1, 2]), description="first", series_uid="1.2.3.4.1")
    write_slices(tmp_path / "mix" / "b", b, axial_positions([0, 2, 4, 6]), description="second",
                 series_uid="1.2.3.4.2", modality="MR")
    with pytest.raises(FormatError) as err:
        dicom.read(tmp_path / "mix")
    msg = str(err.value)
    assert "2 candidate series" in msg
    assert "[1] 1.2.3.4.1, CT, #7, 'first', 3 images in 3 files" in msg
    assert "[2] 1.2.3.4.2, MR, #7, 'second', 4 images in 4 files" in msg
    # the first line names what tells them apart (the CLI prints only that line)
    assert msg.splitlines()[0].endswith(
        "2 candidate series ([1] CT 'first' 3 images, [2] MR 'second' 4 images); "
        "choose one with series= (--series) by index 1..2 or key:"
    )
    assert dicom.read(tmp_path / "mix", series="1.2.3.4.2").shape[-1] == 4
    assert dicom.read(tmp_path / "mix", series=1).shape[-1] == 3
    assert dicom.read(tmp_path / "mix", series="2").meta["series_uid"] == "1.2.3.4.2"
    with pytest.raises(FormatError, match=r"series index 3 out of range 1\.\.2"):
        dicom.read(tmp_path / "mix", series=3)
    with pytest.raises(FormatError, match=r"no series '9\.9'; candidates:\n  \[1\]"):
        dicom.read(tmp_path / "mix", series="9.9")
    info = dicom.scan(tmp_path / "mix")
    assert [s.key for s in info] == ["1.2.3.4.1", "1.2.3.4.2"]
    assert info[0].as_dict()["n_images"] == 3 and info[1].as_dict()["modality"] == "MR"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"volume": -1}, "volume must be a 0-based integer index, got -1"),
        ({"volume": "0"}, "volume must be a 0-based integer index"),
        ({"volume": True}, "volume must be"),
        ({"series": 1.5}, "series must be a key, a UID or a 1-based index, got 1.5"),
        ({"resample": "yes"}, "resample must be True or False"),
    ],
)
def test_option_validation(tmp_path: Path, kwargs: dict, message: str) -> None:
    write_slices(tmp_path / "s", random_images(2), axial_positions([0, 1]))
    with pytest.raises(ConfigError, match=message):
        dicom.read(tmp_path / "s", **kwargs)


@pytest.mark.parametrize("syntax", [RLELossless, JPEG2000Lossless], ids=["rle", "jpeg2000"])
def test_compressed_transfer_syntaxes(tmp_path: Path, syntax: pydicom.uid.UID) -> None:
    imgs = random_images(3, seed=8)
    files = write_slices(tmp_path / "s", imgs, axial_positions([0, 1, 2]))
    for f in files:
        ds = pydicom.dcmread(f)
        ds.compress(syntax)
        ds.save_as(f)
    assert pydicom.dcmread(files[0]).file_meta.TransferSyntaxUID == syntax
    vol = dicom.read(tmp_path / "s")
    for k in range(3):
        np.testing.assert_array_equal(vol[0, :, :, k].numpy(), imgs[k].T - 1024.0)


def test_missing_decoder_names_the_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pydicom.pixels import get_decoder

    files = write_slices(tmp_path / "s", random_images(2), axial_positions([0, 1]))
    for f in files:
        ds = pydicom.dcmread(f)
        ds.compress(JPEG2000Lossless)
        ds.save_as(f)
    monkeypatch.setattr(get_decoder(JPEG2000Lossless), "_available", {})
    expected = r"slice_00\d\.dcm: cannot decode pixel data: .*pip install pylibjpeg-openjpeg"
    with pytest.raises(FormatError, match=expected):
        dicom.read(tmp_path / "s")


def test_non_image_objects_skipped(tmp_path: Path) -> None:
    """A structured report (no pixel data) beside the slices is not a candidate series."""
    write_slices(tmp_path / "s", random_images(3), axial_positions([0, 1, 2]))
    sr = Dataset()
    sr.file_meta = FileMetaDataset()
    sr.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    sr.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"  # Basic Text SR
    sr.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    sr.SOPClassUID = sr.file_meta.MediaStorageSOPClassUID
    sr.SOPInstanceUID = sr.file_meta.MediaStorageSOPInstanceUID
    sr.SeriesInstanceUID = generate_uid()
    sr.Modality = "SR"
    sr.save_as(tmp_path / "s" / "report.dcm", enforce_file_format=True)
    assert dicom.is_dicom_file(tmp_path / "s" / "report.dcm")
    assert len(dicom.scan(tmp_path / "s")) == 1
    assert dicom.read(tmp_path / "s").shape[-1] == 3


def test_multiframe_without_positions_refused(tmp_path: Path) -> None:
    files = write_slices(tmp_path / "s", random_images(1), axial_positions([0]))
    ds = pydicom.dcmread(files[0])
    frames = random_images(3, seed=11)
    ds.NumberOfFrames = 3
    ds.PixelData = b"".join(np.ascontiguousarray(f, dtype="<i2").tobytes() for f in frames)
    ds.save_as(files[0])
    expected = "multi-frame file without per-frame positions .* 3 frames cannot be placed"
    with pytest.raises(GeometryError, match=expected):
        dicom.read(files[0])


def test_io_dispatch_reads_and_writes_dicom_folders(tmp_path: Path) -> None:
    write_slices(tmp_path / "s", random_images(3), axial_positions([0, 1, 2]))
    vol = medsat_sr.io.read(tmp_path / "s")
    out = medsat_sr.io.write(vol, tmp_path / "out")  # no suffix: a DICOM series folder
    assert out == tmp_path / "out" and len(list(out.glob("*.dcm"))) == 3
    np.testing.assert_array_equal(medsat_sr.io.read(out).numpy(), vol.numpy())
    out = medsat_sr.io.write(vol, tmp_path / "u16", format="dicom", dtype="uint16")
    assert pydicom.dcmread(sorted(out.glob("*.dcm"))[0]).PixelRepresentation == 0


# --------------------------------------------------------------------------------------
# Writer (synthetic)
# --------------------------------------------------------------------------------------


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    return q * np.sign(np.diag(r))


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    seed=st.integers(0, 10_000),
    spacing=st.tuples(st.floats(0.2, 5), st.floats(0.2, 5), st.floats(0.2, 5)),
    channels=st.sampled_from([1, 2]),
)
def test_writer_roundtrip_oblique(
    tmp_path_factory: pytest.TempPathFactory, seed: int, spacing: tuple, channels: int
) -> None:
    """Any orthonormal direction set and spacing: written and read back with the same grid and values."""
    rng = np.random.default_rng(seed)
    aff = np.eye(4)
    aff[:3, :3] = random_rotation(rng) @ np.diag(spacing)
    aff[:3, 3] = rng.uniform(-200, 200, 3)
    data = rng.integers(-2000, 2000, (channels, 6, 5, 4)).astype(np.float32)
    vol = make_volume(data, aff, source_dtype="int16", source_format="nifti")
    out = dicom.write(vol, tmp_path_factory.mktemp("w") / "series")
    back = dicom.read(out)
    m = np.linalg.inv(np.asarray(back.affine)) @ aff
    r, t = np.rint(m[:3, :3]), np.rint(m[:3, 3])
    np.testing.assert_allclose(m[:3, :3], r, atol=1e-9)  # same voxel centres (slices may come back reversed)
    np.testing.assert_allclose(m[:3, 3], t, atol=1e-9)
    mapped = resample_reference(np.moveaxis(back.numpy(), 0, -1), data.shape[1:], r.astype(int), t.astype(int))
    np.testing.assert_array_equal(np.moveaxis(mapped, -1, 0), data)


def synthetic_volume(header: Dataset | None = None, **meta) -> object:
    rng = np.random.default_rng(9)
    aff = np.diag([-0.7, -0.8, 2.0, 1.0])
    aff[:3, 3] = [10, 20, -5]
    data = rng.integers(-1024, 2000, (1, 8, 7, 5)).astype(np.float32)
    return make_volume(data, aff, source_dtype="int16", intensity={"slope": 1.0, "intercept": 0.0},
                       source_format="dicom", header=header, **meta)


def test_writer_derived_series_metadata(tmp_path: Path) -> None:
    write_slices(tmp_path / "src", random_images(5), axial_positions([0, 2, 4, 6, 8]))
    src = dicom.read(tmp_path / "src")
    src_ds = pydicom.dcmread(tmp_path / "src" / "slice_000.dcm")
    out = dicom.write(src, tmp_path / "out")
    files = sorted(out.glob("*.dcm"))
    assert len(files) == 5
    dss = [pydicom.dcmread(f) for f in files]
    series_uids = {d.SeriesInstanceUID for d in dss}
    assert len(series_uids) == 1 and series_uids != {src_ds.SeriesInstanceUID}
    assert len({d.SOPInstanceUID for d in dss}) == 5 and src_ds.SOPInstanceUID not in {d.SOPInstanceUID for d in dss}
    for d in dss:
        assert d.StudyInstanceUID == src_ds.StudyInstanceUID and d.FrameOfReferenceUID == src_ds.FrameOfReferenceUID
        assert d.PatientName == "Synthetic^Phantom" and d.PatientID == "SYN001"
        assert list(d.ImageType) == ["DERIVED", "SECONDARY", "AXIAL"]
        assert d.SOPClassUID == CTImageStorage and d.file_meta.MediaStorageSOPInstanceUID == d.SOPInstanceUID
        assert "medsat_sr" in d.DerivationDescription
        assert d.SeriesDescription == "synthetic (medsat_sr)" and d.SeriesNumber == 1007
        assert float(d.SpacingBetweenSlices) == pytest.approx(2.0) and float(d.SliceThickness) == pytest.approx(2.0)
        assert (float(d.RescaleSlope), float(d.RescaleIntercept)) == (1.0, -1024.0)
        assert d.BitsAllocated == 16 and d.PixelRepresentation == 1
    # per-slice positions from the affine
    ipps = sorted((np.array(d.ImagePositionPatient, float) for d in dss), key=lambda p: p[2])
    np.testing.assert_allclose(np.array(ipps), axial_positions([0, 2, 4, 6, 8]), atol=1e-9)
    back = dicom.read(out)
    np.testing.assert_array_equal(back.numpy(), src.numpy())
    np.testing.assert_allclose(np.asarray(back.affine), np.asarray(src.affine), atol=1e-9)
    named = dicom.write(src, tmp_path / "named", series_description="SR x2", derivation="upscaled by test")
    d = pydicom.dcmread(sorted(named.glob("*.dcm"))[0])
    assert d.SeriesDescription == "SR x2" and d.DerivationDescription == "upscaled by test"


def test_writer_defaults_without_dicom_header(tmp_path: Path) -> None:
    out = dicom.write(synthetic_volume(), tmp_path / "ot")
    dss = [pydicom.dcmread(f) for f in sorted(out.glob("*.dcm"))]
    d = dss[0]
    assert d.SOPClassUID == SecondaryCaptureImageStorage and d.Modality == "OT" and d.ConversionType == "WSD"
    assert d.PatientName == "ANONYMOUS" and d.PatientID == "MEDSAT_SR"
    assert len({x.StudyInstanceUID for x in dss}) == 1 and len({x.FrameOfReferenceUID for x in dss}) == 1
    assert list(d.ImageType) == ["DERIVED", "SECONDARY"]
    mr = dicom.write(synthetic_volume(modality="MR"), tmp_path / "mr")
    d = pydicom.dcmread(sorted(mr.glob("*.dcm"))[0])
    assert d.SOPClassUID == MRImageStorage and d.ScanningSequence == "RM" and d.SequenceVariant == "NONE"
    ct = dicom.write(synthetic_volume(modality="CT"), tmp_path / "ct")
    d = pydicom.dcmread(sorted(ct.glob("*.dcm"))[0])
    assert d.SOPClassUID == CTImageStorage and d.RescaleType == "HU"


@pytest.mark.parametrize("modality", ["CT", "MR", None])
@pytest.mark.parametrize("channels", [1, 2])
def test_series_from_nifti_converts_without_dcm2niix_warnings(
    tmp_path: Path, modality: str | None, channels: int
) -> None:
    """Issue #13: a series written from a NIfTI file has PatientPosition, Manufacturer, ... so dcm2niix is silent."""
    rng = np.random.default_rng(3)
    aff = np.eye(4)
    aff[:3, :3] = random_rotation(rng) @ np.diag([0.8, 0.9, 2.5])
    aff[:3, 3] = [40.0, -30.0, 10.0]
    data = rng.integers(-500, 1500, (channels, 12, 10, 5)).astype(np.float32)
    extra = {"modality": modality} if modality else {}
    nifti.write(make_volume(data, aff, source_dtype="int16", **extra), tmp_path / "src.nii.gz")
    src = nifti.read(tmp_path / "src.nii.gz")
    src.meta.update(extra)
    out = dicom.write(src, tmp_path / "series")
    d = pydicom.dcmread(sorted(out.glob("*.dcm"))[0], stop_before_pixels=True)
    assert d.PatientPosition == dicom.DEFAULT_PATIENT_POSITION == "HFS"
    assert d.Manufacturer == dicom.DEFAULT_MANUFACTURER == "medsat_sr" and d.ManufacturerModelName == "medsat_sr"
    assert d.SoftwareVersions.startswith("medsat_sr ")
    niis = run_dcm2niix(out, tmp_path / "nii")
    log = dcm2niix_log(tmp_path / "nii")
    assert "warning" not in log.lower() and "error" not in log.lower(), log
    assert len(niis) == 1
    ref = nib.load(niis[0])
    assert ref.shape == (12, 10, 5) + ((channels,) if channels > 1 else ())
    assert corner_error(aff, data.shape[1:], ref.affine, ref.shape[:3]) < 1e-3
    r, t = grid_correspondence(aff, ref.affine)
    vals = physical(ref)
    vals = vals if vals.ndim == 4 else vals[..., None]
    np.testing.assert_array_equal(resample_reference(vals, data.shape[1:], r, t), np.moveaxis(data, 0, -1))


def test_writer_keeps_source_equipment_and_leaves_dicom_position_alone(tmp_path: Path) -> None:
    header = Dataset()
    header.Manufacturer = "GE MEDICAL SYSTEMS"
    header.Modality = "CT"
    out = dicom.write(synthetic_volume(header=header), tmp_path / "ge")
    d = pydicom.dcmread(sorted(out.glob("*.dcm"))[0], stop_before_pixels=True)
    assert d.Manufacturer == "GE MEDICAL SYSTEMS" and "PatientPosition" not in d


def test_writer_dtype_policy(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    rng = np.random.default_rng(10)
    aff = np.diag([1.0, 1.0, 1.5, 1.0])
    floats = rng.uniform(0.0, 1.0, (1, 6, 5, 4)).astype(np.float32)
    vol = make_volume(floats, aff, source_dtype="float32", source_format="nifti")
    out = dicom.write(vol, tmp_path / "f")
    d = pydicom.dcmread(sorted(out.glob("*.dcm"))[0])
    assert d.PixelRepresentation == 0 and d.BitsAllocated == 16  # uint16 for non-negative floats
    back = dicom.read(out)
    assert np.abs(back.numpy() - floats).max() <= float(d.RescaleSlope) / 2 + 1e-7
    u8 = dicom.write(vol, tmp_path / "u8", dtype="uint8")
    d = pydicom.dcmread(sorted(u8.glob("*.dcm"))[0])
    assert d.BitsAllocated == 8 and d.SOPClassUID == SecondaryCaptureImageStorage
    assert np.abs(dicom.read(u8).numpy() - floats).max() <= float(d.RescaleSlope) / 2 + 1e-7
    wide = 50000.0 + rng.uniform(-9000, 9000, (1, 4, 4, 3)).astype(np.float32)
    big = make_volume(wide, aff, source_dtype="int16", intensity={"slope": 1.0, "intercept": 0.0})
    with caplog.at_level(logging.INFO, logger="medsat_sr.io.dicom"):
        out = dicom.write(big, tmp_path / "big")
    assert "do not fit int16" in caplog.text
    d = pydicom.dcmread(sorted(out.glob("*.dcm"))[0])
    assert np.abs(dicom.read(out).numpy() - big.numpy()).max() <= float(d.RescaleSlope) / 2 + 1e-3
    with pytest.raises(FormatError, match="DICOM output dtype must be one of uint8, int16, uint16, got 'float32'"):
        dicom.write(vol, tmp_path / "x", dtype="float32")
    with pytest.raises(ConfigError, match="dtype must be one of"):
        dicom.write(vol, tmp_path / "x", dtype="no-such-type")
    assert not (tmp_path / "x").exists()


def test_writer_refuses_bad_input(tmp_path: Path) -> None:
    raster = make_raster(np.zeros((1, 4, 4), np.float32), (1, 0, 0, 0, -1, 0), crs=None)
    with pytest.raises(FormatError, match=r"volume MetaTensor shaped \(C, X, Y, Z\)"):
        dicom.write(raster, tmp_path / "r")
    vol = synthetic_volume()
    bad = vol.clone()
    bad[:] = float("nan")
    with pytest.raises(FormatError, match="nan: every voxel is NaN or infinite"):
        dicom.write(bad, tmp_path / "nan")
    sheared = synthetic_volume()
    aff = np.asarray(sheared.affine).copy()
    aff[0, 1] = 0.3  # in-plane shear
    sheared.affine = aff
    with pytest.raises(GeometryError, match="not orthogonal, and DICOM cannot express in-plane shear"):
        dicom.write(sheared, tmp_path / "shear")
    dicom.write(vol, tmp_path / "exists")
    with pytest.raises(WriteError, match="folder exists"):
        dicom.write(vol, tmp_path / "exists", overwrite=False)
    with pytest.raises(WriteError, match="does not exist"):
        dicom.write(vol, tmp_path / "no" / "parent")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exists"]  # nothing half-written left behind


def test_writer_writes_nan_as_the_lowest_value(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """NaN (no data, as a masked NIfTI map keeps through upscale) was refused; DICOM stores integers, so it is
    written as the volume's lowest value (air in CT, background in MR), with a warning naming the folder."""
    vol = synthetic_volume()
    bad = vol.clone()
    bad[0, 1, 1, 1], bad[0, 2, 2, 2] = float("nan"), float("inf")
    with caplog.at_level(logging.WARNING, logger="medsat_sr.io.dicom"):
        out = dicom.write(bad, tmp_path / "nan")
    assert "nan: 2 voxels are NaN or infinite (no data)" in caplog.text
    back = dicom.read(out).numpy()
    low = float(np.nanmin(np.where(np.isfinite(bad.numpy()), bad.numpy(), np.nan)))
    assert back[0, 1, 1, 1] == back[0, 2, 2, 2] == low
    ok = np.isfinite(bad.numpy())
    np.testing.assert_array_equal(back[ok], bad.numpy()[ok])


def test_writer_sheared_affine_written_slice_by_slice(tmp_path: Path) -> None:
    """A sheared affine (API-built) is written exactly, slice by slice; reading it back is then refused."""
    imgs, positions = tilted_series(tmp_path)
    sheared = sheared_volume(imgs, positions)
    out = dicom.write(sheared, tmp_path / "out")
    files = sorted(out.glob("*.dcm"))
    got = np.array([[float(v) for v in pydicom.dcmread(f, stop_before_pixels=True).ImagePositionPatient] for f in files])
    np.testing.assert_allclose(got, positions, atol=1e-6)
    d = pydicom.dcmread(files[0])
    assert float(d.SpacingBetweenSlices) == pytest.approx(3.0)  # along the normal
    with pytest.raises(GeometryError, match="gantry tilt 15.0°"):
        dicom.read(out)
    back = dicom.read(out, resample=True)
    ref = dicom.read(tmp_path / "tilt", resample=True)
    np.testing.assert_allclose(np.asarray(back.affine), np.asarray(ref.affine), atol=1e-5)
    np.testing.assert_allclose(back.numpy(), ref.numpy(), atol=1e-3)


# --------------------------------------------------------------------------------------
# Real samples against dcm2niix
# --------------------------------------------------------------------------------------

REFERENCES = {
    "thick_mr": (THICK / "In", THICK / "Ref_regenerated_dcm2niix_v1.0.20260724" / "t1_fl2d_sag_20220407150138.nii.gz"),
    "epi_4d": (EPI / "In", EPI / "Ref" / "DCM2NIIX_regression_test_4.nii"),
    "enhanced": (ENH / "In", ENH / "Ref" / "5_anat-T1w_acq-tfl.nii"),
}


@pytest.mark.shared_data
@pytest.mark.parametrize("name", list(REFERENCES))
def test_matches_dcm2niix_reference(name: str) -> None:
    """8 corner voxel centres within 1e-3 mm, and identical physical values voxel by voxel."""
    src, ref_path = REFERENCES[name]
    need(src)
    vol = dicom.read(src)
    ref = nib.load(need(ref_path))
    aff = np.asarray(vol.affine)
    assert corner_error(aff, vol.shape[1:], ref.affine, ref.shape[:3]) < 1e-3
    r, t = grid_correspondence(aff, ref.affine)
    ref_vals = physical(ref)
    ref_vals = ref_vals if ref_vals.ndim == 4 else ref_vals[..., None]
    assert vol.shape[0] == ref_vals.shape[3]  # the EPI: all 10 volumes
    mapped = resample_reference(ref_vals, vol.shape[1:], r, t)
    np.testing.assert_array_equal(np.moveaxis(vol.numpy(), 0, -1), mapped)


@pytest.mark.shared_data
def test_epi_is_4d_with_every_volume() -> None:
    vol = dicom.read(need(EPI / "In"))
    assert tuple(vol.shape) == (10, 64, 64, 15)
    assert vol.meta["n_volumes"] == 10
    five = dicom.read(EPI / "In", volume=5)
    np.testing.assert_array_equal(five[0].numpy(), vol[5].numpy())
    np.testing.assert_allclose(np.asarray(vol.affine)[:3, 2], [0, 0, 5.0], atol=1e-6)


def _classic_files(folder: Path) -> list[Path]:
    return [f for f in sorted(folder.rglob("*")) if f.is_file() and dicom.is_dicom_file(f)]


@pytest.mark.shared_data
@pytest.mark.parametrize("name", ["thick_mr", "epi_4d"])
def test_every_slice_at_its_own_position(name: str) -> None:
    """Each file's ImagePositionPatient (LPS -> RAS) is a slice origin of our grid, to 1e-3 mm."""
    src = need(REFERENCES[name][0])
    vol = dicom.read(src)
    nz = vol.shape[-1]
    hits = np.zeros(nz, dtype=int)
    for f in _classic_files(src):
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        err, k = nearest_slice_error(np.asarray(vol.affine), nz, ds.ImagePositionPatient)
        assert err < 1e-3, f"{f.name}: {err:.4f} mm from slice {k}"
        hits[k] += 1
    assert np.all(hits == vol.shape[0])  # every slice position used once per volume


@pytest.mark.shared_data
def test_enhanced_multiframe_every_frame_at_its_position() -> None:
    f = _classic_files(need(ENH / "In"))[0]
    vol = dicom.read(f)  # the file itself
    ds = pydicom.dcmread(f, stop_before_pixels=True)
    nz = vol.shape[-1]
    assert nz == int(ds.NumberOfFrames) == 96
    seen = set()
    for item in ds.PerFrameFunctionalGroupsSequence:
        err, k = nearest_slice_error(np.asarray(vol.affine), nz, item.PlanePositionSequence[0].ImagePositionPatient)
        assert err < 1e-3
        seen.add(k)
    assert seen == set(range(nz))


@pytest.mark.shared_data
def test_enhanced_multiframe_4d_ordered_by_temporal_index(tmp_path: Path) -> None:
    """A 2-volume enhanced file built from the sample: frames shuffled, volumes ordered by TemporalPositionIndex.

    Volume 2 stores the same pixels with RescaleSlope 2 in its per-frame
    PixelValueTransformationSequence, so per-frame rescaling is checked too.
    """
    src = _classic_files(need(ENH / "In"))[0]
    ds = pydicom.dcmread(src)
    n = int(ds.NumberOfFrames)
    pixels = ds.pixel_array
    items, planes = [], []
    for t in (1, 2):
        for i in range(n):
            item = copy.deepcopy(ds.PerFrameFunctionalGroupsSequence[i])
            item.FrameContentSequence[0].TemporalPositionIndex = t
            item.PixelValueTransformationSequence[0].RescaleSlope = t
            items.append(item)
            planes.append(pixels[i])
    order = np.random.default_rng(12).permutation(len(items))
    ds.PerFrameFunctionalGroupsSequence = [items[i] for i in order]
    ds.PixelData = np.stack([planes[i] for i in order]).astype("<u2").tobytes()
    ds.NumberOfFrames = 2 * n
    ds.save_as(tmp_path / "enh4d.dcm")
    vol = dicom.read(tmp_path / "enh4d.dcm")
    ref = dicom.read(src)
    assert tuple(vol.shape) == (2,) + tuple(ref.shape[1:])
    np.testing.assert_allclose(np.asarray(vol.affine), np.asarray(ref.affine))
    np.testing.assert_array_equal(vol[0].numpy(), ref[0].numpy())
    np.testing.assert_array_equal(vol[1].numpy(), 2 * ref[0].numpy())
    assert vol.meta["intensity_exact"] is False


# --- the GE head CT: two interleaved reconstructions, gantry tilt, uneven table steps ---

GE_UID = "1.2.826.0.1.3680043.9.4245.3115138630835728997848661150714813892"


@pytest.mark.shared_data
def test_ge_tilt_folder_refused_by_default_listing_both_reconstructions() -> None:
    with pytest.raises(FormatError) as err:
        dicom.read(need(GE_IN))
    msg = str(err.value)
    assert "2 candidate series" in msg
    assert f"[1] {GE_UID}#1, CT, #2, '', 14 images in 14 files" in msg
    assert "ImageType ORIGINAL\\PRIMARY\\AXIAL\\ADD" in msg
    assert f"[2] {GE_UID}#2, CT, #2, '', 14 images in 14 files" in msg and "thickness 7 mm" in msg
    assert "differing in ImageType, SliceThickness" in msg


@pytest.mark.shared_data
def test_ge_tilt_both_reconstructions_together_refused_with_the_numbers() -> None:
    with pytest.raises(GeometryError) as err:
        dicom.read(need(GE_IN), series=GE_UID)
    assert "gantry tilt 18.5°; slice spacing varies 1.08–7.00 mm; pass resample=True (--resample)" in str(err.value)


@pytest.mark.shared_data
@pytest.mark.parametrize(("series", "name", "step", "spacing"), [(1, "01.dcm", "4.22", "4.00"), (f"{GE_UID}#2", "15.dcm", "7.38", "7.00")])
def test_ge_tilt_each_reconstruction_refused_with_angle_files_and_option(
    series: object, name: str, step: str, spacing: str
) -> None:
    """Issue #13: each reconstruction alone is regular but tilted: refused, never a silent sheared affine."""
    with pytest.raises(GeometryError) as err:
        dicom.read(need(GE_IN), series=series)
    msg = str(err.value)
    assert msg.startswith(f"{GE_IN} [series {GE_UID}#")
    assert f"gantry tilt 18.5° (slices {name} to " in msg and "GantryDetectorTilt 18.5)" in msg
    assert f"table step ({step} mm) is not perpendicular to the slices ({spacing} mm apart)" in msg
    assert msg.endswith("pass resample=True (--resample) to resample onto an orthogonal grid as dcm2niix's tilt correction does")


@pytest.mark.shared_data
def test_ge_tilt_uncorrected_dcm2niix_output_is_not_a_reference() -> None:
    """Why ``_2.nii.gz`` is not used as the reference: it puts the last slice ~44 mm from its DICOM position.

    dcm2niix stacks both reconstructions on a regular 4.002 mm grid along z,
    ignoring the tilt and the uneven steps.
    """
    ref = nib.load(need(GE_REF / "_2.nii.gz"))
    positions = [pydicom.dcmread(f, stop_before_pixels=True).ImagePositionPatient for f in sorted(GE_IN.glob("*.dcm"))]
    ipp = max(positions, key=lambda p: float(p[2]))
    # dcm2niix flips the rows: DICOM row 0 of its last slice is voxel (0, 511, 27)
    theirs = ref.affine[:3, :3] @ np.array([0, ref.shape[1] - 1, ref.shape[2] - 1]) + ref.affine[:3, 3]
    assert np.linalg.norm(theirs - ras(ipp)) > 40.0


@pytest.mark.shared_data
@pytest.mark.slow
def test_ge_tilt_reconstruction_resampled_like_dcm2niix(tmp_path: Path) -> None:
    """resample=True on one reconstruction gives dcm2niix's tilt-corrected grid (its ``_Tilt_1`` output).

    Findings: the grids agree to ~1e-5 mm (512 x 548 x 14, the slice plane
    kept and the rows extended by 36). dcm2niix shifts each slice by
    tan(GantryDetectorTilt) from the header and rounds to int16, we shift by
    the exact ImagePositionPatient offsets in float, so values agree only up
    to that sub-pixel difference (checked on the median). Our values are
    checked exactly against an independent linear interpolation in
    test_gantry_tilt_resampled_onto_orthogonal_grid.
    """
    need(GE_IN)
    src = tmp_path / "recon1"
    src.mkdir()
    for f in sorted(GE_IN.glob("*.dcm")):
        if "ADD" in pydicom.dcmread(f, stop_before_pixels=True).ImageType:
            (src / f.name).symlink_to(f)
    vol = dicom.read(src, resample=True)
    niis = run_dcm2niix(src, tmp_path / "nii")
    tilt = [p for p in niis if "Tilt" in p.name]
    assert tilt, dcm2niix_log(tmp_path / "nii")
    ref = nib.load(tilt[0])
    assert tuple(vol.shape[1:]) == ref.shape[:3] == (512, 548, 14)
    assert corner_error(np.asarray(vol.affine), vol.shape[1:], ref.affine, ref.shape[:3]) < 1e-3
    r, t = grid_correspondence(np.asarray(vol.affine), ref.affine)
    diff = np.abs(vol[0].numpy() - resample_reference(physical(ref), vol.shape[1:], r, t))
    assert float(np.median(diff)) <= 1.0


@pytest.mark.shared_data
@pytest.mark.slow
def test_ge_tilt_both_reconstructions_resampled_like_dcm2niix() -> None:
    """Both reconstructions together with resample=True vs dcm2niix's ``_2_Tilt_Eq_1`` (tilt-corrected, equidistant).

    Findings: dcm2niix merges the two reconstructions too, so this output is
    comparable. Geometry is identical (512 x 611 x 56 at 2.62 mm, corners
    within 1e-3 mm): smallest step 1.08 mm would need 134 slices, so both
    tools cap at twice the slice count. The first slice is identical; elsewhere dcm2niix's header-based
    sub-pixel shift and two int16 roundings leave a mean difference below 1 HU,
    with larger differences only at sharp edges.
    """
    vol = dicom.read(need(GE_IN), series=GE_UID, resample=True)
    ref = nib.load(need(GE_REF / "_2_Tilt_Eq_1.nii.gz"))
    assert tuple(vol.shape[1:]) == ref.shape[:3] == (512, 611, 56)
    assert vol.meta["resampled"]["slice_spacing_mm"] == pytest.approx(144.088 / 55, abs=1e-3)
    assert corner_error(np.asarray(vol.affine), vol.shape[1:], ref.affine, ref.shape[:3]) < 1e-3
    r, t = grid_correspondence(np.asarray(vol.affine), ref.affine)
    diff = np.abs(vol[0].numpy() - resample_reference(physical(ref), vol.shape[1:], r, t))
    assert float(diff[..., 0].max()) == 0.0
    assert float(np.median(diff)) <= 1.0 and float(diff.mean()) < 1.0


# --- bad input built from the real samples ---


@pytest.mark.shared_data
def test_two_real_series_in_one_folder(tmp_path: Path) -> None:
    mixed = tmp_path / "mixed"
    for src, sub in [(THICK_IN, "thick"), (EPI_IN, "epi")]:
        need(src)
        (mixed / sub).mkdir(parents=True)
        for f in sorted(src.glob("*.dcm")):
            (mixed / sub / f.name).symlink_to(f)
    with pytest.raises(FormatError) as err:
        dicom.read(mixed)
    msg = str(err.value)
    assert "2 candidate series" in msg
    assert "'t1_fl2d_sag', 35 images in 35 files" in msg
    assert "'Axial EPI-FMRI (Interleaved I to S)', 150 images in 150 files (10 volumes)" in msg
    with pytest.raises(FormatError, match="2 candidate series"):
        medsat_sr.io.read(mixed)
    assert dicom.read(mixed, series=1).shape[-1] == 35


@pytest.mark.shared_data
def test_real_series_with_a_slice_removed(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    files = sorted(need(THICK_IN).glob("*.dcm"))
    full = dicom.read(THICK_IN)
    normal_pos = {f: pydicom.dcmread(f, stop_before_pixels=True).ImagePositionPatient[0] for f in files}
    ordered = sorted(files, key=lambda f: float(normal_pos[f]))
    gone = ordered[17]
    src = tmp_path / "gap"
    src.mkdir()
    for f in files:
        if f != gone:
            (src / f.name).symlink_to(f)
    expected = r"1 missing slice \(gap of 9\.60 mm between slices 17 and 18; usual spacing 4\.80 mm\)"
    with pytest.raises(GeometryError, match=expected):
        dicom.read(src)
    with caplog.at_level(logging.WARNING, logger="medsat_sr.io.dicom"):
        vol = dicom.read(src, resample=True)
    assert "missing slice(s) interpolated" in caplog.text
    assert vol.shape == full.shape
    np.testing.assert_allclose(np.asarray(vol.affine), np.asarray(full.affine), atol=1e-3)
    mean = (full[0, ..., 16].numpy() + full[0, ..., 18].numpy()) / 2
    np.testing.assert_allclose(vol[0, ..., 17].numpy(), mean, atol=1e-3)
    np.testing.assert_array_equal(vol[0, ..., 20].numpy(), full[0, ..., 20].numpy())


@pytest.mark.shared_data
def test_real_truncated_file_named(tmp_path: Path) -> None:
    src = tmp_path / "cut"
    shutil.copytree(need(THICK_IN), src)
    victim = sorted(src.glob("*.dcm"))[10]
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) // 2])
    with pytest.raises(FormatError, match=rf"{re.escape(victim.name)}: .*truncated or corrupt"):
        dicom.read(src)
    victim.write_bytes(data[:-1000])  # cut inside the pixel data
    with pytest.raises(FormatError, match=rf"{re.escape(victim.name)}: pixel data has \d+ bytes, expected 131072"):
        dicom.read(src)


@pytest.mark.shared_data
def test_real_slice_recompressed_jpeg2000(tmp_path: Path) -> None:
    f = need(GE_IN / "05.dcm")
    ds = pydicom.dcmread(f)
    ds.compress(JPEG2000Lossless)
    ds.save_as(tmp_path / "j2k.dcm")
    a = dicom.read(tmp_path / "j2k.dcm")
    b = dicom.read(f)
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    np.testing.assert_allclose(np.asarray(a.affine), np.asarray(b.affine))


# --- the writer against dcm2niix ---


@pytest.mark.shared_data
@pytest.mark.parametrize("name", ["thick_mr", "epi_4d", "enhanced"])
def test_written_series_read_back_by_us_and_dcm2niix(tmp_path: Path, name: str) -> None:
    vol = dicom.read(need(REFERENCES[name][0]))
    out = dicom.write(vol, tmp_path / "series")
    back = dicom.read(out)
    np.testing.assert_allclose(np.asarray(back.affine), np.asarray(vol.affine), atol=1e-9)
    np.testing.assert_array_equal(back.numpy(), vol.numpy())
    assert back.meta["source_dtype"] == vol.meta["source_dtype"]
    niis = run_dcm2niix(out, tmp_path / "nii")
    assert len(niis) == 1, dcm2niix_log(tmp_path / "nii")
    ref = nib.load(niis[0])
    aff = np.asarray(vol.affine)
    assert corner_error(aff, vol.shape[1:], ref.affine, ref.shape[:3]) < 1e-3
    r, t = grid_correspondence(aff, ref.affine)
    vals = physical(ref)
    vals = vals if vals.ndim == 4 else vals[..., None]
    np.testing.assert_array_equal(np.moveaxis(vol.numpy(), 0, -1), resample_reference(vals, vol.shape[1:], r, t))


@pytest.mark.shared_data
def test_nifti_ct_written_as_dicom_matches_for_dcm2niix(tmp_path: Path) -> None:
    """The NIfTI CT (int32 HU, 3 mm RAS) as a DICOM series: dcm2niix gives back its geometry and values."""
    img = nib.load(need(NIFTI_CT))
    arr = np.asanyarray(img.dataobj)
    vol = make_volume(arr[None].astype(np.float32), img.affine, source_dtype=str(arr.dtype), source_format="nifti",
                      source_path=str(NIFTI_CT))
    out = dicom.write(vol, tmp_path / "ct")
    d = pydicom.dcmread(sorted(out.glob("*.dcm"))[0])
    assert d.BitsAllocated == 16 and d.PixelRepresentation == 1  # int32 HU fits int16 exactly
    assert (float(d.RescaleSlope), float(d.RescaleIntercept)) == (1.0, 0.0)
    niis = run_dcm2niix(out, tmp_path / "nii")
    log = dcm2niix_log(tmp_path / "nii")
    assert "warning" not in log.lower() and "error" not in log.lower(), log
    ref = nib.load(niis[0])
    assert corner_error(img.affine, img.shape, ref.affine, ref.shape[:3]) < 1e-3
    r, t = grid_correspondence(img.affine, ref.affine)
    np.testing.assert_array_equal(resample_reference(physical(ref), img.shape, r, t), arr)
    back = dicom.read(out)
    np.testing.assert_allclose(np.asarray(back.affine), img.affine, atol=1e-6)
    np.testing.assert_array_equal(back[0].numpy(), arr)


@pytest.mark.shared_data
def test_upscaled_grid_written_keeps_positions(tmp_path: Path) -> None:
    """A x2 slice-upscaled grid (geometry.scale_affine): written and read back with the same FOV."""
    vol = dicom.read(need(THICK / "In"))
    scale = (1.0, 1.0, 2.0)
    aff = scale_affine(np.asarray(vol.affine), scale)
    shape = scaled_shape(vol.shape[1:], scale)
    data = np.repeat(vol.numpy(), 2, axis=-1)
    assert data.shape[1:] == shape
    up = make_volume(data, aff, source_dtype=vol.meta["source_dtype"], intensity=vol.meta["intensity"],
                     source_format="dicom", header=vol.meta["header"], modality="MR")
    out = dicom.write(up, tmp_path / "up")
    back = dicom.read(out)
    np.testing.assert_allclose(np.asarray(back.affine), aff, atol=1e-6)
    fov_back = fov_corners(np.asarray(back.affine), shape)
    np.testing.assert_allclose(fov_back, fov_corners(np.asarray(vol.affine), vol.shape[1:]), atol=1e-6)
    np.testing.assert_array_equal(back.numpy(), data)
    d = pydicom.dcmread(sorted(out.glob("*.dcm"))[0])
    assert float(d.SpacingBetweenSlices) == pytest.approx(2.4)
    niis = run_dcm2niix(out, tmp_path / "nii")
    ref = nib.load(niis[0])
    assert corner_error(aff, shape, ref.affine, ref.shape[:3]) < 1e-3

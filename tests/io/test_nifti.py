"""NIfTI reader and writer: real samples, round trips, dtype policy, bad input."""

from __future__ import annotations

import gzip
import logging
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import medsat_sr
from medsat_sr.errors import ConfigError, FormatError, GeometryError, WriteError
from medsat_sr.geometry import scale_affine
from medsat_sr.image import Key, make_raster, make_volume
from medsat_sr.io import nifti

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared" / "data"
MNI = SHARED / "nifti/nilearn/nilearn/datasets/data/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"
CT = SHARED / "nifti/TotalSegmentator/tests/reference_files/example_ct.nii.gz"


def need(path: Path) -> Path:
    """Skip the test when the shared sample is missing."""
    if not path.exists():
        pytest.skip("../shared/data not found: real-data tests need the shared samples")
    return path


def assert_headers_equal(a: nib.Nifti1Header, b: nib.Nifti1Header, allow: tuple[str, ...] = ()) -> None:
    """Every header field equal (NaN == NaN), except the fields in ``allow``; extensions too."""
    assert type(a) is type(b)
    diffs = []
    for key in a.keys():
        if key in allow:
            continue
        va, vb = np.asarray(a[key]), np.asarray(b[key])
        same = np.array_equal(va, vb, equal_nan=va.dtype.kind == "f")
        if not same:
            diffs.append(f"{key}: {va!r} != {vb!r}")
    assert not diffs, "header fields differ:\n" + "\n".join(diffs)
    assert [(e.get_code(), e.get_content()) for e in a.extensions] == [
        (e.get_code(), e.get_content()) for e in b.extensions
    ]


def no_leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if ".part" in p.name]


def save_raw(path: Path, raw: np.ndarray, hdr: nib.Nifti1Header) -> Path:
    """Write ``hdr`` and ``raw`` byte for byte (no nibabel checks or fixes on the way)."""
    hdr = hdr.copy()
    pixdim = np.array(hdr["pixdim"], copy=True)
    hdr.set_data_shape(raw.shape)
    hdr["pixdim"][:] = pixdim  # set_data_shape resets pixdim past ndim
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "wb") as fh:
        hdr.write_to(fh)  # header, empty extension flag; vox_offset 352
        fh.write(np.asarray(raw, dtype=hdr.get_data_dtype()).tobytes(order="F"))
    return path


def base_header(shape: tuple[int, ...], dtype: str = "int16") -> nib.Nifti1Header:
    hdr = nib.Nifti1Header()
    hdr.set_data_dtype(dtype)
    hdr.set_data_shape(shape)
    aff = np.array([[-2.0, 0, 0, 90], [0, 2.0, 0, -126], [0, 0, 2.5, -72], [0, 0, 0, 1]])
    hdr.set_qform(aff, code=1)
    hdr.set_sform(aff, code=1)
    hdr.set_xyzt_units("mm", "sec")
    hdr["descrip"] = b"medsat_sr test volume"
    return hdr


# --------------------------------------------------------------------------- real samples


@pytest.mark.shared_data
def test_read_mni_matches_nibabel() -> None:
    path = need(MNI)
    img = nifti.read(path)
    ref = nib.load(str(path))
    assert tuple(img.shape) == (1, 197, 233, 189)
    assert img.dtype == torch.float32
    np.testing.assert_array_equal(img.affine.numpy(), ref.affine)
    np.testing.assert_array_equal(img[0].numpy(), ref.get_fdata(dtype=np.float32))
    assert img.meta[Key.SOURCE_DTYPE] == "uint8"
    assert img.meta[Key.INTENSITY] == {"slope": 1.0, "intercept": 0.0}
    assert img.meta[Key.ORIENTATION] == "RAS"
    assert img.meta[Key.SPACING] == (1.0, 1.0, 1.0)
    hdr = img.meta[Key.HEADER]
    assert isinstance(hdr, nib.Nifti1Header)
    assert int(hdr["sform_code"]) == 2 and int(hdr["qform_code"]) == 0
    assert float(hdr["vox_offset"]) == 352.0  # the on-disk header, not nibabel's reset copy


@pytest.mark.shared_data
@pytest.mark.parametrize("sample", [MNI, CT], ids=["mni_uint8", "ct_int32"])
def test_roundtrip_real_sample_identical(sample: Path, tmp_path: Path) -> None:
    path = need(sample)
    img = nifti.read(path)
    out = nifti.write(img, tmp_path / "out.nii.gz")
    assert out == tmp_path / "out.nii.gz"

    # header: every field identical, field by field (nothing legitimately changes here)
    src_hdr, out_hdr = nifti.read_header(path), nifti.read_header(out)
    assert_headers_equal(src_hdr, out_hdr)
    assert src_hdr.binaryblock == out_hdr.binaryblock
    for key in ("vox_offset", "magic", "descrip", "sform_code", "qform_code", "xyzt_units", "intent_code"):
        assert src_hdr[key] == out_hdr[key], key
    assert np.isnan(out_hdr["scl_slope"]) == np.isnan(src_hdr["scl_slope"])

    # data and geometry, with nibabel as the reference
    a, b = nib.load(str(path)), nib.load(str(out))
    assert b.get_data_dtype() == a.get_data_dtype()
    np.testing.assert_array_equal(np.asarray(b.dataobj.get_unscaled()), np.asarray(a.dataobj.get_unscaled()))
    np.testing.assert_array_equal(b.affine, a.affine)
    np.testing.assert_array_equal(b.header.get_sform(), a.header.get_sform())
    np.testing.assert_array_equal(b.header.get_qform(), a.header.get_qform())

    # and our reader sees the same image again
    again = nifti.read(out)
    assert torch.equal(again.as_tensor(), img.as_tensor())
    assert torch.equal(again.affine, img.affine)
    assert again.meta[Key.SOURCE_DTYPE] == img.meta[Key.SOURCE_DTYPE]


@pytest.mark.shared_data
def test_ct_sample_hu_and_uncompressed_output(tmp_path: Path) -> None:
    path = need(CT)
    img = nifti.read(path)
    assert img.meta[Key.SOURCE_DTYPE] == "int32"
    assert float(img.min()) == -1207.0 and float(img.max()) == 3382.0
    assert img.meta[Key.SPACING] == (3.0, 3.0, 3.0)
    out = medsat_sr.write(img, tmp_path / "ct.nii")  # through the dispatch, uncompressed
    assert_headers_equal(nifti.read_header(path), nifti.read_header(out))
    with open(out, "rb") as fh:
        assert fh.read(2) != b"\x1f\x8b"
    np.testing.assert_array_equal(np.asarray(nib.load(str(out)).dataobj), np.asarray(nib.load(str(path)).dataobj))


# --------------------------------------------------------------------------- scaling and dtype policy


@pytest.fixture
def scaled_file(tmp_path: Path) -> tuple[Path, np.ndarray]:
    """int16 on disk with scl_slope 0.5 and scl_inter -10."""
    rng = np.random.default_rng(0)
    raw = rng.integers(-32768, 32767, size=(7, 6, 5), dtype=np.int16)
    raw[0, 0, 0], raw[-1, -1, -1] = -32768, 32767
    hdr = base_header(raw.shape)
    hdr.set_slope_inter(0.5, -10.0)
    return save_raw(tmp_path / "scaled.nii.gz", raw, hdr), raw


def test_scaled_int16_reads_physical(scaled_file: tuple[Path, np.ndarray]) -> None:
    path, raw = scaled_file
    assert nib.load(str(path)).header.get_data_dtype() == np.int16
    img = nifti.read(path)
    assert img.meta[Key.SOURCE_DTYPE] == "int16"
    assert img.meta[Key.INTENSITY] == {"slope": 0.5, "intercept": -10.0}
    np.testing.assert_array_equal(img[0].numpy(), raw.astype(np.float64) * 0.5 - 10.0)


def test_scaled_int16_roundtrip_raw_exact(scaled_file: tuple[Path, np.ndarray], tmp_path: Path) -> None:
    path, raw = scaled_file
    out = nifti.write(nifti.read(path), tmp_path / "back.nii.gz")
    back = nib.load(str(out))
    assert back.get_data_dtype() == np.int16
    np.testing.assert_array_equal(np.asarray(back.dataobj.get_unscaled()), raw)
    hdr = nifti.read_header(out)
    assert float(hdr["scl_slope"]) == 0.5 and float(hdr["scl_inter"]) == -10.0
    assert_headers_equal(nifti.read_header(path), hdr)


def test_write_float32_on_request(scaled_file: tuple[Path, np.ndarray], tmp_path: Path) -> None:
    path, raw = scaled_file
    img = nifti.read(path)
    out = medsat_sr.write(img, tmp_path / "float.nii.gz", dtype="float32")
    back = nib.load(str(out))
    assert back.get_data_dtype() == np.float32
    assert back.header.get_slope_inter() == (None, None)  # unscaled
    np.testing.assert_array_equal(np.asarray(back.dataobj), raw.astype(np.float64) * 0.5 - 10.0)
    hdr = nifti.read_header(out)
    assert_headers_equal(
        nifti.read_header(path), hdr, allow=("datatype", "bitpix", "scl_slope", "scl_inter")
    )


def test_default_dtype_rounds_and_clips(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    hdr = base_header((3, 2, 2), "uint8")
    raw = np.arange(12, dtype=np.uint8).reshape(3, 2, 2)
    img = nifti.read(save_raw(tmp_path / "u8.nii.gz", raw, hdr))
    img[0, 0, 0, 0] = 300.4  # above uint8
    img[0, 0, 0, 1] = -7.0  # below
    img[0, 0, 1, 0] = 4.6  # rounds to 5
    img[0, 0, 1, 1] = float("nan")
    with caplog.at_level(logging.WARNING, logger="medsat_sr.io.nifti"):
        out = nifti.write(img, tmp_path / "clipped.nii.gz")
    data = np.asarray(nib.load(str(out)).dataobj)
    assert data.dtype == np.uint8
    assert data[0, 0, 0] == 255 and data[0, 0, 1] == 0 and data[0, 1, 0] == 5 and data[0, 1, 1] == 0
    assert "clipped" in caplog.text and "NaN" in caplog.text


def test_invalid_dtype_is_config_error(scaled_file: tuple[Path, np.ndarray], tmp_path: Path) -> None:
    img = nifti.read(scaled_file[0])
    with pytest.raises(ConfigError, match="float16"):
        nifti.write(img, tmp_path / "x.nii.gz", dtype="float16")
    with pytest.raises(ConfigError, match="invalid dtype"):
        nifti.write(img, tmp_path / "x.nii.gz", dtype="not-a-dtype")


# --------------------------------------------------------------------------- shapes


def test_4d_becomes_channels_and_roundtrips(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    raw = rng.integers(0, 4000, size=(4, 5, 6, 3), dtype=np.int16)
    hdr = base_header(raw.shape)
    hdr["pixdim"][4] = 2.5  # TR in s
    hdr.set_intent("estimate", name="test")
    path = save_raw(tmp_path / "fmri.nii.gz", raw, hdr)
    img = nifti.read(path)
    assert tuple(img.shape) == (3, 4, 5, 6)
    for c in range(3):
        np.testing.assert_array_equal(img[c].numpy(), raw[..., c])
    out = nifti.write(img, tmp_path / "fmri_back.nii.gz")
    back = nifti.read_header(out)
    assert_headers_equal(nifti.read_header(path), back)
    assert float(back["pixdim"][4]) == 2.5
    np.testing.assert_array_equal(np.asarray(nib.load(str(out)).dataobj), raw)


def test_5d_vector_image(tmp_path: Path) -> None:
    raw = np.arange(4 * 5 * 6 * 3, dtype=np.float32).reshape(4, 5, 6, 1, 3)
    hdr = base_header(raw.shape, "float32")
    hdr.set_intent("vector")
    path = save_raw(tmp_path / "vec.nii.gz", raw, hdr)
    img = nifti.read(path)
    assert tuple(img.shape) == (3, 4, 5, 6)
    np.testing.assert_array_equal(img[2].numpy(), raw[..., 0, 2])
    out = nifti.write(img, tmp_path / "vec_back.nii.gz")
    assert nib.load(str(out)).shape == (4, 5, 6, 1, 3)
    assert_headers_equal(nifti.read_header(path), nifti.read_header(out))


def test_5d_with_time_is_refused(tmp_path: Path) -> None:
    raw = np.zeros((2, 2, 2, 2, 3), dtype=np.int16)
    path = save_raw(tmp_path / "t5d.nii.gz", raw, base_header(raw.shape))
    with pytest.raises(FormatError, match=r"t5d\.nii\.gz.*5D"):
        nifti.read(path)


# --------------------------------------------------------------------------- geometry on write


def test_geometry_change_updates_forms_and_keeps_fields(tmp_path: Path) -> None:
    raw = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6)
    hdr = base_header(raw.shape)
    hdr["qform_code"] = 1
    hdr["sform_code"] = 2
    hdr.set_intent("estimate")
    hdr["cal_min"], hdr["cal_max"] = 0.0, 100.0
    path = save_raw(tmp_path / "src.nii.gz", raw, hdr)
    img = nifti.read(path)

    # a 2x upscale: new grid and affine, same field of view
    new_aff = scale_affine(img.affine.numpy(), 2)
    up = torch.nn.functional.interpolate(img.as_tensor()[None], scale_factor=2, mode="nearest")[0]
    up_img = make_volume(up, new_aff, **{k: img.meta[k] for k in (Key.SOURCE_DTYPE, Key.INTENSITY, Key.HEADER)},
                         source_format="nifti")
    out = nifti.write(up_img, tmp_path / "up.nii.gz")
    back = nifti.read_header(out)
    assert tuple(back.get_data_shape()) == (8, 10, 12)
    np.testing.assert_allclose(back.get_sform(), new_aff, atol=1e-5)
    np.testing.assert_allclose(back.get_qform(), new_aff, atol=1e-5)
    np.testing.assert_allclose(back.get_zooms(), (1.0, 1.0, 1.25))
    assert int(back["qform_code"]) == 1 and int(back["sform_code"]) == 2
    assert_headers_equal(
        nifti.read_header(path),
        back,
        allow=("dim", "pixdim", "qoffset_x", "qoffset_y", "qoffset_z", "srow_x", "srow_y", "srow_z",
               "quatern_b", "quatern_c", "quatern_d"),
    )
    again = nifti.read(out)
    np.testing.assert_allclose(again.affine.numpy(), new_aff, atol=1e-5)


def test_sheared_affine_kept_exactly_in_sform(tmp_path: Path) -> None:
    aff = np.array([[1.0, 0.3, 0, -10], [0, 1.0, 0, 5], [0, 0, 2.0, 7], [0, 0, 0, 1]])
    hdr = base_header((3, 3, 3))
    hdr["sform_code"] = 0  # qform only in the source: a shear does not fit a qform
    src = save_raw(tmp_path / "q.nii.gz", np.zeros((3, 3, 3), np.int16), hdr)
    img = nifti.read(src)
    sheared = make_volume(img.as_tensor(), aff, **{k: img.meta[k] for k in (Key.SOURCE_DTYPE, Key.HEADER)})
    out = nifti.write(sheared, tmp_path / "shear.nii.gz")
    np.testing.assert_allclose(nifti.read(out).affine.numpy(), aff, atol=1e-6)
    assert int(nifti.read_header(out)["sform_code"]) == 1


def test_3d_keeps_tr_in_pixdim4(tmp_path: Path) -> None:
    hdr = base_header((4, 4, 3))
    hdr["pixdim"][4] = 2.3  # dcm2niix stores TR here for 3D series too
    path = save_raw(tmp_path / "anat.nii.gz", np.ones((4, 4, 3), np.int16), hdr)
    assert np.isclose(float(nifti.read_header(path)["pixdim"][4]), 2.3)
    out = nifti.write(nifti.read(path), tmp_path / "anat_back.nii.gz")
    assert_headers_equal(nifti.read_header(path), nifti.read_header(out))
    img = nifti.read(path)
    grown = make_volume(torch.ones(1, 8, 8, 6), scale_affine(img.affine.numpy(), 2),
                        **{k: img.meta[k] for k in (Key.SOURCE_DTYPE, Key.HEADER)})
    out2 = nifti.write(grown, tmp_path / "anat_up.nii.gz")
    assert np.isclose(float(nifti.read_header(out2)["pixdim"][4]), 2.3)


def test_dicom_source_gets_fresh_header(tmp_path: Path) -> None:
    pydicom = pytest.importorskip("pydicom")
    ds = pydicom.Dataset()
    ds.SeriesDescription = "t1_fl2d_sag"
    ds.RepetitionTime = 250.0
    phys = np.arange(2 * 4 * 5 * 3, dtype=np.float32).reshape(2, 4, 5, 3) - 1024.0
    aff = np.array([[0, 0, -4.8, 80], [-1.015625, 0, 0, 120], [0, -1.015625, 0, 100], [0, 0, 0, 1]])
    img = make_volume(phys, aff, source_dtype="int16", intensity={"slope": 1.0, "intercept": -1024.0},
                      source_format="dicom", header=ds)
    out = nifti.write(img, tmp_path / "from_dicom.nii.gz")
    hdr = nifti.read_header(out)
    assert int(hdr["qform_code"]) == 1 and int(hdr["sform_code"]) == 1
    assert hdr.get_xyzt_units() == ("mm", "sec")
    assert b"dicom" in bytes(hdr["descrip"]) and b"t1_fl2d_sag" in bytes(hdr["descrip"])
    assert float(hdr["pixdim"][4]) == 0.25
    assert hdr.get_data_dtype() == np.int16 and float(hdr["scl_inter"]) == -1024.0
    back = nifti.read(out)
    assert torch.equal(back.as_tensor(), img.as_tensor())
    np.testing.assert_allclose(back.affine.numpy(), aff, atol=1e-5)


def test_volume_without_header_writes_float32(tmp_path: Path) -> None:
    img = make_volume(np.random.default_rng(2).random((1, 3, 4, 5), dtype=np.float32), np.diag([2.0, 2.0, 2.0, 1.0]))
    out = nifti.write(img, tmp_path / "plain.nii.gz")
    hdr = nifti.read_header(out)
    assert hdr.get_data_dtype() == np.float32
    assert int(hdr["sform_code"]) == 2 and int(hdr["qform_code"]) == 2
    back = nifti.read(out)
    assert torch.equal(back.as_tensor(), img.as_tensor())


affine_entries = st.floats(-3, 3, allow_nan=False, allow_infinity=False)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    lin=st.lists(affine_entries, min_size=9, max_size=9),
    origin=st.lists(st.floats(-300, 300), min_size=3, max_size=3),
    shape=st.tuples(st.integers(1, 5), st.integers(1, 5), st.integers(1, 5)),
    slope=st.sampled_from([1.0, 0.25, 2.0]),
    inter=st.sampled_from([0.0, -1024.0, 7.5]),
)
def test_property_fresh_roundtrip(tmp_path: Path, lin, origin, shape, slope, inter) -> None:
    m = np.array(lin).reshape(3, 3) + np.diag([4.0, 4.0, 4.0])  # keeps it well conditioned
    aff = np.eye(4)
    aff[:3, :3], aff[:3, 3] = m, origin
    raw = np.random.default_rng(0).integers(-2000, 2000, size=(1, *shape)).astype(np.float64)
    img = make_volume((raw * slope + inter).astype(np.float32), aff, source_dtype="int16",
                      intensity={"slope": slope, "intercept": inter})
    out = nifti.write(img, tmp_path / "p.nii.gz")
    back = nifti.read(out)
    assert torch.equal(back.as_tensor(), img.as_tensor())
    # the header stores float32: allow its rounding
    np.testing.assert_allclose(back.affine.numpy(), aff, rtol=0, atol=1e-4)
    np.testing.assert_array_equal(np.asarray(nib.load(str(out)).dataobj.get_unscaled()), raw[0])


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("bad", ["zero", "nan"])
def test_zero_or_nan_affine_is_geometry_error(bad: str, tmp_path: Path) -> None:
    hdr = base_header((3, 3, 3))
    if bad == "zero":
        for row in ("srow_x", "srow_y", "srow_z"):
            hdr[row] = 0.0
    else:
        hdr["srow_x"] = [np.nan, 0.0, 0.0, 1.0]
    path = save_raw(tmp_path / f"{bad}_affine.nii.gz", np.zeros((3, 3, 3), np.int16), hdr)
    with pytest.raises(GeometryError, match=f"{bad}_affine.nii.gz"):
        nifti.read(path)
    with pytest.raises(GeometryError, match=f"{bad}_affine.nii.gz"):
        medsat_sr.read(path)


def test_zero_pixdim_qform_is_geometry_error(tmp_path: Path) -> None:
    hdr = base_header((3, 3, 3))
    hdr["sform_code"] = 0
    hdr["pixdim"][1:4] = 0.0
    path = save_raw(tmp_path / "flat.nii.gz", np.zeros((3, 3, 3), np.int16), hdr)
    with pytest.raises(GeometryError, match=r"flat\.nii\.gz.*qform"):
        nifti.read(path)


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii"])
def test_truncated_file_is_format_error(suffix: str, tmp_path: Path) -> None:
    raw = np.arange(20 * 20 * 20, dtype=np.int32).reshape(20, 20, 20)
    full = save_raw(tmp_path / f"full{suffix}", raw, base_header(raw.shape, "int32"))
    blob = full.read_bytes()
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(FormatError, match=f"cut{suffix}"):
        nifti.read(cut)
    with pytest.raises(FormatError, match=f"cut{suffix}"):
        medsat_sr.read(cut)


def test_garbage_is_format_error(tmp_path: Path) -> None:
    bad = tmp_path / "garbage.nii.gz"
    bad.write_bytes(gzip.compress(b"this is not a nifti header" * 20))
    with pytest.raises(FormatError, match="garbage.nii.gz"):
        nifti.read(bad)
    short = tmp_path / "short.nii"
    short.write_bytes(b"\x5c\x01\x00\x00" + b"\x00" * 20)
    with pytest.raises(FormatError, match="short.nii"):
        nifti.read(short)


def test_a_gzipped_file_named_nii_is_refused_with_the_name_to_give_it(tmp_path: Path) -> None:
    raw = np.arange(8 * 8 * 4, dtype=np.int16).reshape(8, 8, 4)
    good = save_raw(tmp_path / "scan.nii.gz", raw, base_header(raw.shape, "int16"))
    misnamed = tmp_path / "scan.nii"
    misnamed.write_bytes(good.read_bytes())
    for read in (nifti.read, medsat_sr.read):
        with pytest.raises(FormatError, match=r"scan\.nii: gzip-compressed, but named \.nii; rename it to scan\.nii\.gz"):
            read(misnamed)


def test_write_into_missing_folder_is_write_error(scaled_file: tuple[Path, np.ndarray], tmp_path: Path) -> None:
    img = nifti.read(scaled_file[0])
    with pytest.raises(WriteError, match="does not exist"):
        nifti.write(img, tmp_path / "missing" / "out.nii.gz")
    a_file = tmp_path / "not_a_folder"
    a_file.write_text("x")
    with pytest.raises(WriteError):
        medsat_sr.write(img, a_file / "out.nii.gz")
    assert not (tmp_path / "missing").exists()
    assert no_leftovers(tmp_path) == []


def test_failed_write_leaves_nothing(scaled_file: tuple[Path, np.ndarray], tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    img = nifti.read(scaled_file[0])
    out_dir = tmp_path / "out"
    out_dir.mkdir()

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(nifti, "array_to_file", disk_full)
    with pytest.raises(WriteError, match="No space left"):
        nifti.write(img, out_dir / "out.nii.gz")
    assert list(out_dir.iterdir()) == []


def test_write_refuses_rasters_and_wrong_suffix(tmp_path: Path) -> None:
    raster = make_raster(np.zeros((1, 4, 4), np.float32), (1, 0, 0, 0, -1, 4), crs=None)
    with pytest.raises(FormatError, match="raster"):
        nifti.write(raster, tmp_path / "r.nii.gz")
    vol = make_volume(np.zeros((1, 2, 2, 2), np.float32), np.eye(4))
    with pytest.raises(FormatError, match=r"\.nii"):
        nifti.write(vol, tmp_path / "v.img")
    with pytest.raises(GeometryError, match="shape"):
        nifti.write(torch.zeros(2, 2, 2), tmp_path / "v.nii.gz")


def test_read_with_the_format_named_does_not_detect_it_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``read(path, fmt=...)``: the caller detected the format already (upscale does); an unknown one is refused."""
    import medsat_sr.io as mio

    path = tmp_path / "v.nii.gz"
    nib.save(nib.Nifti1Image(np.arange(24, dtype=np.float32).reshape(2, 3, 4), np.diag([1.0, 1.0, 3.0, 1.0])), str(path))
    whole = mio.read(path)

    def no_detect(p: object) -> str:
        raise AssertionError(f"detect_format({p}) called again")

    monkeypatch.setattr(mio, "detect_format", no_detect)
    again = mio.read(path, fmt="nifti")
    assert torch.equal(again.as_tensor(), whole.as_tensor()) and np.allclose(np.asarray(again.affine), np.asarray(whole.affine))
    with pytest.raises(ConfigError, match=r"v\.nii\.gz: cannot read format 'jpeg'"):
        mio.read(path, fmt="jpeg")

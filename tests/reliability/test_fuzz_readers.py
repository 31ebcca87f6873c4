"""Hypothesis fuzzing of the DICOM, NIfTI and GeoTIFF readers on mutated real headers.

Whatever the bytes, ``medsat_sr.io.read`` either returns an image or raises a
:class:`~medsat_sr.errors.MedsatError`; nothing else may escape (and nothing
may exhaust memory: every read runs under an address-space cap).

Escapes that are already known and tracked by a strict-xfail case of the
corpus (:data:`KNOWN_ESCAPES`) are tolerated here, so the fuzzers keep
guarding against *new* kinds of escape; when the reader is fixed, the corpus
case turns XPASS and its entry here should go.

Runs are derandomized (the same examples every run, so CI is reproducible);
set ``HYPOTHESIS_PROFILE=fuzz`` for a longer random search.
"""

from __future__ import annotations

import os
import re
import shutil
import struct
import sys
import warnings
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, reject, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parent))
from corpus import (  # noqa: E402
    _tiff_entries,
    base_raster,
    base_series,
    base_volume,
    memory_guard,
)

from medsat_sr.errors import MedsatError  # noqa: E402
from medsat_sr.io import read  # noqa: E402

settings.register_profile(
    "ci", max_examples=60, deadline=None, derandomize=True, database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
settings.register_profile(
    "fuzz", max_examples=2000, deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "ci")

#: (reader, exception type name, message pattern, tracking bug): escapes already known.
#: Empty: the NIfTI dims/vox_offset and DICOM lazy-conversion, number and length escapes are fixed.
KNOWN_ESCAPES: list[tuple[str, str, str, str]] = []


def check_read(reader: str, path: Path) -> None:
    """Read ``path``; anything but success or a MedsatError fails the example (known escapes warn)."""
    try:
        with memory_guard(2 << 30), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            read(path)
    except MedsatError as exc:
        assert str(exc).strip(), "a medsat_sr error with an empty message"
    except Exception as exc:  # noqa: BLE001 - the point of the test
        name = type(exc).__name__
        for r, t, pattern, bug in KNOWN_ESCAPES:
            if r == reader and t == name and re.search(pattern, str(exc)):
                warnings.warn(f"known escape ({bug.split(':')[0]}): {name}: {exc}", stacklevel=1)
                return
        raise AssertionError(f"{reader} reader let {name} escape: {exc}") from exc


@pytest.fixture(scope="module")
def bases(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("fuzz_bases")
    nii, _ = base_volume(root)
    return {"nii": nii, "series": base_series(root, nii), "tif": base_raster(root, size=24)}


def byte_edits(limit: int) -> st.SearchStrategy[list[tuple[int, int]]]:
    return st.lists(st.tuples(st.integers(0, limit - 1), st.integers(0, 255)), min_size=1, max_size=6)


def apply_edits(data: bytes, edits: list[tuple[int, int]], lo: int = 0) -> bytes:
    b = bytearray(data)
    for off, val in edits:
        b[lo + off] = val
    return bytes(b)


INTERESTING_INTS = st.sampled_from([0, 1, -1, 2, 3, 7, 8, 255, 256, 32767, -32768, 65535, 2**31 - 1, -(2**31)])
INTERESTING_FLOATS = st.one_of(
    st.sampled_from([0.0, -0.0, 1.0, -1.0, 1e-30, 1e30, 1e9, float("nan"), float("inf"), float("-inf")]),
    st.floats(allow_nan=True, allow_infinity=True, width=32),
)

# NIfTI-1 header: (name, offset, struct format of one element, count)
NIFTI_FIELDS = [
    ("sizeof_hdr", 0, "<i", 1), ("dim", 40, "<h", 8), ("intent_p", 56, "<f", 3), ("datatype", 70, "<h", 1),
    ("bitpix", 72, "<h", 1), ("slice_start", 74, "<h", 1), ("pixdim", 76, "<f", 8), ("vox_offset", 108, "<f", 1),
    ("scl_slope", 112, "<f", 1), ("scl_inter", 116, "<f", 1), ("xyzt_units", 123, "<B", 1),
    ("qform_code", 252, "<h", 1), ("sform_code", 254, "<h", 1), ("quatern", 256, "<f", 6), ("srow", 280, "<f", 12),
]


@settings(settings.get_profile(PROFILE))
@given(edits=byte_edits(352))
def test_nifti_header_bytes(bases: dict[str, Path], tmp_path: Path, edits: list[tuple[int, int]]) -> None:
    p = tmp_path / "fuzz.nii"
    p.write_bytes(apply_edits(bases["nii"].read_bytes(), edits))
    check_read("nifti", p)


@settings(settings.get_profile(PROFILE))
@given(data=st.data())
def test_nifti_header_fields(bases: dict[str, Path], tmp_path: Path, data: st.DataObject) -> None:
    raw = bytearray(bases["nii"].read_bytes())
    for _ in range(data.draw(st.integers(1, 3), label="fields")):
        name, off, fmt, count = data.draw(st.sampled_from(NIFTI_FIELDS), label="field")
        i = data.draw(st.integers(0, count - 1), label="element")
        if fmt == "<f":
            value = data.draw(INTERESTING_FLOATS, label=name)
            struct.pack_into(fmt, raw, off + 4 * i, value)
        else:
            lo, hi = {"<i": (-(2**31), 2**31 - 1), "<h": (-(2**15), 2**15 - 1), "<B": (0, 255)}[fmt]
            value = data.draw(st.one_of(INTERESTING_INTS, st.integers(lo, hi)).filter(lambda v: lo <= v <= hi), label=name)
            struct.pack_into(fmt, raw, off + struct.calcsize(fmt) * i, value)
    suffix = data.draw(st.sampled_from([".nii", ".nii.gz"]), label="suffix")
    p = tmp_path / f"fuzz{suffix}"
    if suffix == ".nii.gz":
        import gzip

        p.write_bytes(gzip.compress(bytes(raw), compresslevel=1))
    else:
        p.write_bytes(bytes(raw))
    check_read("nifti", p)


def _pixel_data_offset(data: bytes) -> int:
    i = data.rfind(b"\xe0\x7f\x10\x00")
    assert i > 0
    return i


@settings(settings.get_profile(PROFILE))
@given(data=st.data())
def test_dicom_header_bytes(bases: dict[str, Path], tmp_path: Path, data: st.DataObject) -> None:
    folder = tmp_path / "series"
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(bases["series"], folder)
    files = sorted(folder.glob("*.dcm"))
    victim = files[data.draw(st.integers(0, len(files) - 1), label="slice")]
    raw = victim.read_bytes()
    end = _pixel_data_offset(raw) + 12  # the whole header, including the pixel data element's own header
    victim.write_bytes(apply_edits(raw, data.draw(byte_edits(end - 128), label="edits"), lo=128))
    check_read("dicom", folder)


DICOM_TAGS = [
    "ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "SliceThickness", "SpacingBetweenSlices",
    "Rows", "Columns", "BitsAllocated", "BitsStored", "HighBit", "PixelRepresentation", "SamplesPerPixel",
    "RescaleSlope", "RescaleIntercept", "NumberOfFrames", "PhotometricInterpretation", "SeriesInstanceUID",
    "InstanceNumber", "EchoNumbers", "AcquisitionNumber", "PlanarConfiguration",
]
DICOM_VALUES = st.one_of(
    INTERESTING_INTS, INTERESTING_FLOATS.map(str), st.text(max_size=24),
    st.lists(INTERESTING_FLOATS.map(lambda v: f"{v:.6g}"), max_size=7).map("\\".join),
)


@settings(settings.get_profile(PROFILE))
@given(data=st.data())
def test_dicom_header_elements(bases: dict[str, Path], tmp_path: Path, data: st.DataObject) -> None:
    import pydicom
    from pydicom.dataelem import RawDataElement
    from pydicom.datadict import dictionary_VR, tag_for_keyword

    folder = tmp_path / "series"
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(bases["series"], folder)
    files = sorted(folder.glob("*.dcm"))
    everywhere = data.draw(st.booleans(), label="every slice")
    targets = files if everywhere else [files[data.draw(st.integers(0, len(files) - 1), label="slice")]]
    edits = data.draw(st.lists(st.tuples(st.sampled_from(DICOM_TAGS), st.one_of(st.none(), DICOM_VALUES)), min_size=1, max_size=3), label="edits")
    for f in targets:
        ds = pydicom.dcmread(f)
        for keyword, value in edits:
            tag = tag_for_keyword(keyword)
            if value is None:
                if keyword in ds:
                    delattr(ds, keyword)
                continue
            # the raw bytes go in unconverted, whatever the VR says, as a broken writer would write them
            text = str(value).encode("utf-8", "surrogateescape")[:64]
            if len(text) % 2:
                text += b" "
            vr = dictionary_VR(tag)
            ds._dict[tag] = RawDataElement(tag, vr, len(text), text, 0, False, True)
        try:
            ds.save_as(f)
        except Exception:  # noqa: BLE001 - pydicom cannot write some raw values (the writer's problem, not the reader's)
            reject()
    check_read("dicom", folder)


@pytest.mark.shared_data
@settings(settings.get_profile(PROFILE))
@given(data=st.data())
def test_real_scanner_dicom_header_bytes(shared_data: Path, tmp_path: Path, data: st.DataObject) -> None:
    """The same on a real GE scanner header (3 slices of the NIH EPI series, with its private tags)."""
    src = shared_data / "dicom/mr_epi_ge_dcm_qa_nih_mr_0004/In/20180918GE/mr_0004"
    folder = tmp_path / "epi"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    files = sorted(src.glob("*.dcm"))[:3]
    for f in files:
        shutil.copy(f, folder / f.name)
    victim = folder / files[data.draw(st.integers(0, 2), label="slice")].name
    raw = victim.read_bytes()
    end = _pixel_data_offset(raw) + 12
    victim.write_bytes(apply_edits(raw, data.draw(byte_edits(end - 128), label="edits"), lo=128))
    check_read("dicom", folder)


@settings(settings.get_profile(PROFILE))
@given(data=st.data())
def test_geotiff_header_bytes(bases: dict[str, Path], tmp_path: Path, data: st.DataObject) -> None:
    raw = bases["tif"].read_bytes()
    (ifd,) = struct.unpack_from("<I", raw, 4)
    (n,) = struct.unpack_from("<H", raw, ifd)
    region = data.draw(st.sampled_from(["header", "ifd", "tag data"]), label="region")
    if region == "header":
        lo, hi = 0, 8
    elif region == "ifd":
        lo, hi = ifd, ifd + 2 + 12 * n + 4
    else:  # out-of-line values: GeoKeys, tie points, pixel scale, strip tables (between the header and the IFD or after it)
        lo, hi = (8, ifd) if ifd > 8 else (ifd + 2 + 12 * n + 4, len(raw))
    if hi <= lo:
        lo, hi = 0, 8
    edits = data.draw(byte_edits(hi - lo), label="edits")
    p = tmp_path / "fuzz.tif"
    p.write_bytes(apply_edits(raw, edits, lo=lo))
    check_read("geotiff", p)


@settings(settings.get_profile(PROFILE))
@given(data=st.data())
def test_geotiff_tag_values(bases: dict[str, Path], tmp_path: Path, data: st.DataObject) -> None:
    raw = bytearray(bases["tif"].read_bytes())
    entries = _tiff_entries(bytes(raw))
    for _ in range(data.draw(st.integers(1, 3), label="tags")):
        tag = data.draw(st.sampled_from(sorted(entries)), label="tag")
        off, typ, _, _ = entries[tag]
        field = data.draw(st.sampled_from(["type", "count", "value"]), label="field")
        if field == "type":
            struct.pack_into("<H", raw, off + 2, data.draw(st.integers(0, 20), label="type"))
        elif field == "count":
            struct.pack_into("<I", raw, off + 4, data.draw(st.one_of(INTERESTING_INTS.map(lambda v: v % 2**32), st.integers(0, 2**32 - 1)), label="count"))
        else:
            struct.pack_into("<I", raw, off + 8, data.draw(st.one_of(INTERESTING_INTS.map(lambda v: v % 2**32), st.integers(0, 2**32 - 1)), label="value"))
    p = tmp_path / "fuzz.tif"
    p.write_bytes(bytes(raw))
    check_read("geotiff", p)


def test_known_escapes_are_tracked_by_the_corpus() -> None:
    """Every tolerated escape names a bug that a strict-xfail corpus case pins down."""
    import corpus

    bugs = {v for k, v in vars(corpus).items() if k.startswith("BUG_")}
    assert all(bug in bugs for *_, bug in KNOWN_ESCAPES)
    for _, _, pattern, _ in KNOWN_ESCAPES:
        re.compile(pattern)

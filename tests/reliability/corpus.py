"""A corpus of malformed inputs, bad options and unwritable outputs, built from the packaged samples.

:func:`build_corpus` writes every case under a folder and returns them as
:class:`Case` items: the ``medsat-sr`` command line to run, the exit code
it must give and a phrase its one-line error must contain. Every base image
is cut from the samples that ship with medsat_sr (the MNI T1 template and
the 4-band aerial scene), so the corpus needs no shared data:

* NIfTI: the MNI crop, then truncated, zeroed, re-labelled, with broken
  header fields (magic, sizeof_hdr, dims, datatype, vox_offset, pixdim) and
  NaN or singular affines, a 1-voxel and an empty image;
* DICOM: a series written from the MNI crop by our own writer, then with a
  slice truncated, zeroed, removed or without pixel data, a second series
  mixed in, broken geometry (orientation, position, spacing), impossible
  pixel descriptions, a 1-pixel series, an empty folder and junk;
* GeoTIFF: a crop of the aerial scene (uncompressed strips, so tags can be
  edited by offset), then truncated, zeroed, with a wrong magic, a bad IFD
  offset, corrupt tags, a 1-pixel raster, a band folder with a band missing
  its CRS, and a checkpoint with the wrong band count or dimensionality;
* options: absurd or malformed scale factors;
* outputs: missing folders, a file in the way, /proc, wrong suffixes.
"""

from __future__ import annotations

import contextlib
import gzip
import re
import shutil
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

import medsat_sr.samples

SAMPLES = Path(medsat_sr.samples.__file__).parent
MNI = SAMPLES / "mni_icbm152_t1_2009a.nii.gz"
AERIAL = SAMPLES / "rgbn_aerial_5m.tif"

# NIfTI-1 header field offsets (bytes)
_DIM, _DATATYPE, _BITPIX, _PIXDIM, _VOX_OFFSET = 40, 70, 72, 76, 108
_QFORM_CODE, _SFORM_CODE, _SROW_X, _MAGIC = 252, 254, 280, 344


@dataclass
class Case:
    """One malformed case.

    Attributes:
        name: unique id (``category/what``).
        argv: the ``medsat-sr`` arguments.
        expect: text the error line must contain (case-insensitive).
        code: the exit code (2 bad input or options, 3 unwritable output).
        watch: folders in which nothing may appear.
        input: the malformed input, if the case is about an input (the error must name it).
        known_bug: a case that medsat_sr does not handle yet: where and what
            (the test is a strict xfail, so a fix shows up as XPASS).
    """

    name: str
    argv: list[str]
    expect: str
    code: int = 2
    watch: list[Path] = field(default_factory=list)
    input: Path | None = None
    known_bug: str | None = None

    @property
    def category(self) -> str:
        return self.name.split("/")[0]


# ------------------------------------------------------------------ base images
def base_volume(folder: Path) -> tuple[Path, Path]:
    """A 16x16x8 uint8 crop of the MNI template, as ``vol.nii`` and ``vol.nii.gz``."""
    import nibabel as nib

    folder.mkdir(parents=True, exist_ok=True)
    img = nib.load(MNI)
    sub = img.slicer[60:76, 70:86, 60:68]
    sub = nib.Nifti1Image(np.asarray(sub.dataobj), sub.affine, sub.header)
    nii, niigz = folder / "vol.nii", folder / "vol.nii.gz"
    nib.save(sub, nii)
    nib.save(sub, niigz)
    return nii, niigz


def base_series(folder: Path, nii: Path, name: str = "series") -> Path:
    """A DICOM series written by medsat_sr from ``nii``."""
    from medsat_sr.io import read, write

    out = folder / name
    write(read(nii), out)
    return out


def base_raster(folder: Path, size: int = 32, name: str = "tile.tif", crs: bool = True, count: int = 4) -> Path:
    """A ``size`` x ``size`` crop of the aerial scene, uncompressed strips (tags at known places)."""
    import rasterio
    from rasterio.windows import Window

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    with rasterio.open(AERIAL) as src:
        win = Window(100, 100, size, size)
        data = src.read(list(range(1, count + 1)), window=win)
        prof = {
            "driver": "GTiff", "dtype": "uint8", "count": count, "width": size, "height": size,
            "transform": src.window_transform(win), "crs": src.crs if crs else None,
        }
    with rasterio.open(path, "w", **prof) as dst:
        dst.write(data)
    return path


# ------------------------------------------------------------------ byte surgery
def _patch(data: bytes, offset: int, fmt: str, *values: float | int) -> bytes:
    b = bytearray(data)
    struct.pack_into(fmt, b, offset, *values)
    return bytes(b)


def _tiff_entries(data: bytes) -> dict[int, tuple[int, int, int, int]]:
    """Classic little-endian TIFF, first IFD: tag -> (entry offset, type, count, value)."""
    assert data[:4] == b"II*\x00", "expected a classic little-endian TIFF"
    (ifd,) = struct.unpack_from("<I", data, 4)
    (n,) = struct.unpack_from("<H", data, ifd)
    out = {}
    for i in range(n):
        off = ifd + 2 + 12 * i
        tag, typ, cnt = struct.unpack_from("<HHI", data, off)
        value = struct.unpack_from("<H" if typ == 3 else "<I", data, off + 8)[0]
        out[tag] = (off, typ, cnt, value)
    return out


def _tiff_set(data: bytes, tag: int, value: int) -> bytes:
    off, typ, cnt, _ = _tiff_entries(data)[tag]
    return _patch(data, off + 8, "<H" if typ == 3 else "<I", value)


def _dicom_edit(folder: Path, edit, files: slice | None = None) -> None:  # type: ignore[no-untyped-def]
    import pydicom

    paths = sorted(folder.glob("*.dcm"))
    for p in paths[files] if files is not None else paths:
        ds = pydicom.dcmread(p)
        edit(ds)
        ds.save_as(p)


# ------------------------------------------------------------------ the corpus
def build_corpus(root: Path) -> list[Case]:
    """Write every case under ``root`` and return them.

    Every command writes into ``root/out`` (or a path that cannot be
    written), which must stay empty.
    """
    base = root / "_base"
    src = root / "inputs"
    src.mkdir(parents=True)
    out = root / "out"
    out.mkdir()
    nii, niigz = base_volume(base)
    raw, gzb = nii.read_bytes(), niigz.read_bytes()
    series = base_series(base, nii)
    tile = base_raster(base)
    tif = tile.read_bytes()
    cases: list[Case] = []
    rng = np.random.default_rng(0)

    def up(name: str, path: Path, expect: str, *, ext: str = ".nii.gz", bug: str | None = None) -> None:
        argv = ["upscale", str(path), "-o", str(out / f"x{ext}"), "--method", "cubic", "--scale", "2"]
        cases.append(Case(name=name, argv=argv, expect=expect, watch=[out], input=path, known_bug=bug))

    def nifti(name: str, data: bytes, expect: str, suffix: str = ".nii", bug: str | None = None) -> None:
        p = src / f"{name.replace('/', '_')}{suffix}"
        p.write_bytes(data)
        up(name, p, expect, bug=bug)

    # ---------------------------------------------------------------- NIfTI
    hdr_end = 352
    nifti("nifti/truncated_gz", gzb[: len(gzb) // 2], "truncated", ".nii.gz")
    nifti("nifti/truncated_header", raw[:200], "header")
    nifti("nifti/truncated_data", raw[: hdr_end + (len(raw) - hdr_end) // 2], "truncated")
    nifti("nifti/zeroed", bytes(len(raw)), "not a NIfTI")
    nifti("nifti/zeroed_gz", bytes(len(gzb)), "gzip", ".nii.gz")
    nifti("nifti/wrong_magic", _patch(raw, _MAGIC, "4s", b"abc\0"), "cannot read NIfTI")
    nifti("nifti/bad_sizeof_hdr", _patch(raw, 0, "<i", 1234), "sizeof_hdr")
    nifti("nifti/random_bytes", rng.integers(0, 256, 4000, dtype=np.uint8).tobytes(), "not a NIfTI")
    nifti("nifti/gzip_of_garbage", gzip.compress(rng.integers(0, 256, 4000, dtype=np.uint8).tobytes()), "not a NIfTI", ".nii.gz")
    nifti("nifti/empty_file", b"", "empty", ".nii.gz")
    no_q = _patch(raw, _QFORM_CODE, "<h", 0)
    nifti("nifti/nan_affine", _patch(_patch(no_q, _SFORM_CODE, "<h", 2), _SROW_X, "<4f", np.nan, 0, 0, 0), "nan")
    zero = _patch(_patch(no_q, _SFORM_CODE, "<h", 2), _SROW_X, "<12f", *([0.0] * 12))
    nifti("nifti/zero_affine", zero, "singular")
    only_q = _patch(raw, _SFORM_CODE, "<h", 0)
    nifti("nifti/inf_pixdim", _patch(only_q, _PIXDIM + 4, "<f", np.inf), "voxel size")
    nifti("nifti/zero_pixdim", _patch(only_q, _PIXDIM + 4, "<f", 0.0), "voxel size")
    nifti("nifti/empty_dim", _patch(raw, _DIM, "<4h", 3, 16, 16, 0), "dimension 2 is 0")
    nifti("nifti/negative_dim", _patch(raw, _DIM, "<4h", 3, -5, 16, 8), "dimension 0 is -5")
    nifti("nifti/bad_ndim", _patch(raw, _DIM, "<h", 9), "NIfTI")
    nifti("nifti/bad_datatype", _patch(raw, _DATATYPE, "<h", 999), "999")
    nifti("nifti/bad_vox_offset", _patch(raw, _VOX_OFFSET, "<f", 1e9), "voxel data")
    nifti("nifti/huge_dims", _patch(raw, _DIM, "<4h", 3, 30000, 30000, 30000), "truncated or corrupt")
    one = _patch(raw, _DIM, "<4h", 3, 1, 1, 1)[: hdr_end + 1]
    nifti("nifti/one_voxel", one, "too small to upscale")
    nifti("nifti/inf_vox_offset", _patch(raw, _VOX_OFFSET, "<f", np.inf), "vox_offset")

    # ---------------------------------------------------------------- DICOM
    def series_case(name: str, expect: str, build, bug: str | None = None) -> None:  # type: ignore[no-untyped-def]
        folder = src / name.replace("/", "_")
        shutil.copytree(series, folder)
        build(folder)
        up(name, folder, expect, bug=bug)

    def truncate_one(f: Path) -> None:
        victim = sorted(f.glob("*.dcm"))[3]
        victim.write_bytes(victim.read_bytes()[:600])

    def zero_one(f: Path) -> None:
        victim = sorted(f.glob("*.dcm"))[3]
        victim.write_bytes(bytes(victim.stat().st_size))

    def remove_one(f: Path) -> None:
        sorted(f.glob("*.dcm"))[3].unlink()

    def mix(f: Path) -> None:
        other = base_series(base, nii, name="other")
        for i, p in enumerate(sorted(other.glob("*.dcm"))):
            shutil.copy(p, f / f"other{i:03d}.dcm")

    def drop_pixels(ds) -> None:  # type: ignore[no-untyped-def]
        del ds.PixelData

    def short_pixels(ds) -> None:  # type: ignore[no-untyped-def]
        ds.PixelData = ds.PixelData[: len(ds.PixelData) // 2]

    def set_attr(attr: str, value):  # type: ignore[no-untyped-def]
        def edit(ds) -> None:  # type: ignore[no-untyped-def]
            setattr(ds, attr, value)

        return edit

    def set_raw(attr: str, text: bytes):  # type: ignore[no-untyped-def]
        """Store ``text`` as the element's bytes, unconverted (pydicom would refuse the value)."""
        from pydicom.datadict import dictionary_VR, tag_for_keyword
        from pydicom.dataelem import RawDataElement

        tag = tag_for_keyword(attr)

        def edit(ds) -> None:  # type: ignore[no-untyped-def]
            ds._dict[tag] = RawDataElement(tag, dictionary_VR(tag), len(text), text, 0, False, True)

        return edit

    def del_attr(attr: str):  # type: ignore[no-untyped-def]
        def edit(ds) -> None:  # type: ignore[no-untyped-def]
            delattr(ds, attr)

        return edit

    def one_pixel(f: Path) -> None:
        for p in sorted(f.glob("*.dcm"))[1:]:
            p.unlink()

        def edit(ds) -> None:  # type: ignore[no-untyped-def]
            ds.Rows = ds.Columns = 1
            ds.PixelData = ds.PixelData[: ds.BitsAllocated // 8]

        _dicom_edit(f, edit)

    series_case("dicom/truncated_slice", "truncated", truncate_one)
    series_case("dicom/zeroed_slice", "missing slice", zero_one)
    series_case("dicom/missing_slice", "missing", remove_one)
    series_case("dicom/mixed_series", "candidate series", mix)
    series_case("dicom/no_pixel_data", "no pixel data", lambda f: _dicom_edit(f, drop_pixels, slice(3, 4)))
    series_case("dicom/short_pixel_data", "pixel data", lambda f: _dicom_edit(f, short_pixels, slice(3, 4)))
    series_case("dicom/zero_orientation", "ImageOrientationPatient", lambda f: _dicom_edit(f, set_attr("ImageOrientationPatient", [0, 0, 0, 0, 0, 0])))
    series_case("dicom/no_position", "ImagePositionPatient", lambda f: _dicom_edit(f, del_attr("ImagePositionPatient")))
    series_case("dicom/zero_pixel_spacing", "PixelSpacing", lambda f: _dicom_edit(f, set_attr("PixelSpacing", [0, 0])))
    series_case("dicom/nan_position", "not finite", lambda f: _dicom_edit(f, set_attr("ImagePositionPatient", ["nan", 0, 0])))
    series_case("dicom/bits_allocated_3", "Bits Allocated", lambda f: _dicom_edit(f, set_attr("BitsAllocated", 3)))
    series_case("dicom/rows_zero", "0 x 16 (Rows x Columns)", lambda f: _dicom_edit(f, set_attr("Rows", 0)))
    series_case("dicom/one_pixel", "too small to upscale", one_pixel)

    def not_a_transfer_syntax(f: Path) -> None:  # a SOP class UID where the transfer syntax belongs, same length
        old, new = b"1.2.840.10008.1.2.1\x00", b"1.2.840.10008.5.1.4\x00"
        for p in sorted(f.glob("*.dcm")):
            data = p.read_bytes()
            assert data.count(old) == 1
            p.write_bytes(data.replace(old, new))

    def invalid_vr(f: Path) -> None:  # ImagePositionPatient with the VR bytes 'DE' instead of 'DS'
        p = sorted(f.glob("*.dcm"))[3]
        data = p.read_bytes()
        assert data.count(b"\x20\x00\x32\x00DS") == 1
        p.write_bytes(data.replace(b"\x20\x00\x32\x00DS", b"\x20\x00\x32\x00DE"))

    def pixel_length_past_end(f: Path) -> None:
        p = sorted(f.glob("*.dcm"))[3]
        data = bytearray(p.read_bytes())
        i = data.rfind(b"\xe0\x7f\x10\x00")  # (7FE0,0010) PixelData, explicit VR: tag, VR, 2 reserved, 4-byte length
        struct.pack_into("<I", data, i + 8, 0xFFFFFFF0)
        p.write_bytes(bytes(data))

    series_case("dicom/instance_number_inf", "InstanceNumber", lambda f: _dicom_edit(f, set_raw("InstanceNumber", b"inf ")))
    series_case("dicom/pixel_length_past_end", "pixel data", pixel_length_past_end)
    series_case("dicom/not_a_transfer_syntax", "transfer syntax", not_a_transfer_syntax)
    series_case("dicom/invalid_vr", "Value Representation", invalid_vr)
    wrong = src / "dicom_wrong_magic.dcm"
    b = bytearray(sorted(series.glob("*.dcm"))[0].read_bytes())
    b[128:132] = b"XXXX"
    wrong.write_bytes(bytes(b))
    up("dicom/wrong_magic_file", wrong, "not a DICOM")
    (src / "dicom_empty_folder").mkdir()
    up("dicom/empty_folder", src / "dicom_empty_folder", "empty")
    junk = src / "dicom_junk_folder"
    junk.mkdir()
    (junk / "notes.txt").write_text("no images here")
    (junk / "IM0001").write_bytes(rng.integers(0, 256, 3000, dtype=np.uint8).tobytes())
    up("dicom/junk_folder", junk, "no DICOM")

    # ---------------------------------------------------------------- GeoTIFF
    def raster(name: str, data: bytes, expect: str, suffix: str = ".tif") -> None:
        p = src / f"{name.replace('/', '_')}{suffix}"
        p.write_bytes(data)
        up(name, p, expect, ext=".tif")

    ent = _tiff_entries(tif)
    raster("geotiff/truncated", tif[: len(tif) // 2], "truncated or corrupt")
    raster("geotiff/truncated_in_header", tif[:300], "truncated or corrupt")
    raster("geotiff/zeroed", bytes(len(tif)), "not recognized")
    raster("geotiff/wrong_magic", b"\x89PNG" + tif[4:], "not recognized")
    raster("geotiff/header_only", tif[:8], "directory")
    raster("geotiff/empty_file", b"", "empty")
    raster("geotiff/bad_ifd_offset", _patch(tif, 4, "<I", 0xFFFFFFF0), "directory")
    raster("geotiff/ifd_offset_zero", _patch(tif, 4, "<I", 0), "not recognized")
    strips = ent[273]  # StripOffsets: the first strip's offset, inline (1 strip) or in the offset array
    first_strip = strips[0] + 8 if strips[2] == 1 else strips[3]
    raster("geotiff/strip_offsets_past_end", _patch(tif, first_strip, "<I", len(tif) + 10_000), "truncated or corrupt")
    raster("geotiff/zero_width_tag", _tiff_set(tif, 256, 0), "zero scanline")
    raster("geotiff/huge_width_tag", _tiff_set(tif, 256, 65535), "truncated or corrupt")
    assert 339 in ent, "the base raster is expected to have a SampleFormat tag"
    raster("geotiff/bad_sample_format", _tiff_set(tif, 339, 7), "SampleFormat")
    raster("geotiff/bad_compression_tag", _tiff_set(tif, 259, 60000), "codec")
    raster("geotiff/random_after_magic", b"II*\x00" + rng.integers(0, 256, 300, dtype=np.uint8).tobytes(), "directory")
    one_px = base_raster(src, size=1, name="geotiff_one_pixel.tif")
    up("geotiff/one_pixel", one_px, "too small to upscale", ext=".tif")
    bands = src / "geotiff_band_missing_crs"
    bands.mkdir()
    base_raster(bands, name="B02.tif", count=1)
    base_raster(bands, name="B03.tif", count=1, crs=False)
    up("geotiff/band_missing_crs", bands, "CRS", ext=".tif")

    # ---------------------------------------------------------------- models that do not fit
    ck13 = _checkpoint(base / "edsr13", dims=2, channels=13)
    ck3d = _checkpoint(base / "dcsrn", dims=3, channels=1)
    for name, ck, path, ext, expect in (
        ("model/wrong_band_count", ck13, tile, ".tif", "tile.tif: the model takes 13 band(s), the raster has 4"),
        ("model/volume_model_on_raster", ck3d, tile, ".tif", "2D model"),
        ("model/raster_model_on_volume", ck13, niigz, ".nii.gz", "input channel(s), the volume has 1"),
    ):
        argv = ["upscale", str(path), "-o", str(out / f"x{ext}"), "--model", str(ck)]
        cases.append(Case(name=name, argv=argv, expect=expect, watch=[out]))

    # ---------------------------------------------------------------- options
    for name, scale in (
        ("options/scale_1000", "1000"), ("options/scale_17_on_one_axis", "1,1,17"), ("options/scale_zero", "0"), ("options/scale_negative", "-2"),
        ("options/scale_nan", "nan"), ("options/scale_inf", "inf"), ("options/scale_downsample", "0.5"),
        ("options/scale_two_axes_on_volume", "2,2"), ("options/scale_text", "two"),
    ):
        cases.append(
            Case(name=name, argv=["upscale", str(niigz), "-o", str(out / "x.nii.gz"), "--method", "cubic", "--scale", scale], expect="scale", watch=[out])
        )
    cases.append(Case(name="options/unknown_method", argv=["upscale", str(niigz), "-o", str(out / "x.nii.gz"), "--method", "magic", "--scale", "2"], expect="unknown method", watch=[out]))

    # ---------------------------------------------------------------- outputs
    (root / "a_file").write_text("x")
    for name, target, expect, code in (
        ("output/missing_folder", root / "no" / "such" / "x.nii.gz", "does not exist", 3),
        ("output/file_in_the_way", root / "a_file" / "x.nii.gz", "a_file", 3),
        ("output/proc", Path("/proc/medsat_sr_reliability/x.nii.gz"), "/proc", 3),
        ("output/unknown_suffix", out / "x.jpg", "suffix", 2),
        ("output/volume_as_tif", out / "x.tif", "a volume is written as", 2),
        ("output/raster_as_folder", out / "rasterdir", "a raster is written to a .tif", 2),
    ):
        src_img = tile if name == "output/raster_as_folder" else niigz
        cases.append(
            Case(name=name, argv=["upscale", str(src_img), "-o", str(target), "--method", "cubic", "--scale", "2"], expect=expect, code=code, watch=[out, root / "a_file"])
        )
    names = [c.name for c in cases]
    assert len(names) == len(set(names)), "case names must be unique"
    return cases


def _checkpoint(path: Path, *, dims: int, channels: int) -> Path:
    import torch

    from medsat_sr.checkpoint import save_checkpoint
    from medsat_sr.models import build_model

    torch.manual_seed(0)
    if dims == 3:
        m = build_model("dcsrn", spatial_dims=3, in_channels=channels, scale=2, features=4, growth=4, n_blocks=1, n_layers=1)
    else:
        m = build_model("edsr", spatial_dims=2, in_channels=channels, scale=2, features=8, n_blocks=1)
    save_checkpoint(path, m, {"scale": [2.0] * dims})
    return path


def snapshot(folders: list[Path]) -> dict[str, float]:
    """Every path under ``folders`` (recursively) with its mtime: to see that nothing appeared or changed."""
    out: dict[str, float] = {}
    for f in folders:
        if f.is_dir():
            for p in f.rglob("*"):
                out[str(p)] = p.stat().st_mtime_ns
        elif f.exists():
            out[str(f)] = f.stat().st_mtime_ns
    return out


#: Memory one case may add before it fails with MemoryError instead of being OOM-killed (with the machine's other jobs).
HEADROOM = 4 << 30


@contextlib.contextmanager
def memory_guard(headroom: int = HEADROOM) -> Iterator[None]:
    """Cap this process's address space at its current size + ``headroom`` (soft limit, restored after).

    A reader that believes a corrupt header and allocates terabytes then
    raises MemoryError here, instead of taking the machine down.
    """
    import resource

    m = re.search(r"VmSize:\s+(\d+) kB", Path("/proc/self/status").read_text()) if Path("/proc/self/status").exists() else None
    if m is None:  # pragma: no cover - not Linux
        yield
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    cap = int(m.group(1)) * 1024 + headroom
    if hard != resource.RLIM_INFINITY:
        cap = min(cap, hard)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))

"""The `medsat-sr` command as a user types it: info, convert, and bad input.

Every bad input must give a medsat_sr error with a one-line message naming the
file and the problem, a non-zero exit (2 bad input, 3 unwritable output), no
traceback without --debug, and no file left behind.
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import rasterio

import medsat_sr.samples
from medsat_sr.cli import main

MR = Path("dicom/mr_t1_2d_sag_thick_dcm_qa_decubitus_HFS")
MR_SERIES = MR / "In/HFS/3_t1_fl2d_sag"
MR_REF = MR / "Ref_regenerated_dcm2niix_v1.0.20260724/t1_fl2d_sag_20220407150138.nii.gz"
GE = Path("dicom/ct_head_ge_tilt_dcm_qa_ct/In/GE")
EPI = Path("dicom/mr_epi_ge_dcm_qa_nih_mr_0004/In/20180918GE/mr_0004")
NAIP = Path("geotiff/naip_4band_m_4709963_se_14_1_20180716_opengeos-data/m_4709963_se_14_1_20180716.tif")
S2 = Path("geotiff/sentinel2_l2a_S2A_29RKH_20200219_rio-tiler-pds")
CT = Path("nifti/TotalSegmentator/tests/reference_files/example_ct.nii.gz")


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def listing(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


# ------------------------------------------------------------------ basics
def test_version_and_help(capsys: pytest.CaptureFixture[str]) -> None:
    from medsat_sr import __version__

    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert __version__ in capsys.readouterr().out
    for cmd in ("info", "convert"):
        with pytest.raises(SystemExit) as exc:
            main([cmd, "--help"])
        assert exc.value.code == 0
        assert "usage: medsat-sr " + cmd in capsys.readouterr().out


def test_usage_error_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["convert", "x.nii"])  # -o missing
    assert exc.value.code == 2
    assert "required" in capsys.readouterr().err


# ------------------------------------------------------------------ info
@pytest.mark.shared_data
def test_info_dicom_series(shared_data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "info", str(shared_data / MR_SERIES), "--json")
    assert code == 0
    d = json.loads(out)
    assert d["format"] == "dicom" and d["shape"] == [1, 256, 256, 35]
    np.testing.assert_allclose(d["spacing_mm"], [1.015625, 1.015625, 4.8], atol=1e-4)
    assert d["dtype"] == "uint16" and len(d["series"]) == 1


@pytest.mark.shared_data
def test_info_lists_every_series_of_a_mixed_folder(shared_data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "info", str(shared_data / GE))
    assert code == 0
    assert "series found: 2" in out
    code, out, _ = run(capsys, "info", str(shared_data / GE), "--series", "2", "--json")
    d = json.loads(out)
    assert code == 0 and d["shape"][-1] == 14
    # the reader refuses a tilted series without --resample; info describes what --resample reads and says why
    assert d["gantry_tilt_deg"] == pytest.approx(18.5, abs=0.05)
    assert d["needs_resample"] == "gantry tilt 18.5°"
    assert d["resampled"]["tilt_corrected_deg"] == pytest.approx(18.5, abs=0.05)


@pytest.mark.shared_data
def test_info_rasters_read_headers_only(shared_data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "info", str(shared_data / NAIP), "--json")
    d = json.loads(out)
    assert code == 0 and d["shape"] == [4, 724, 934] and d["crs"] == "EPSG:26914" and d["nodata"] == 0
    code, out, _ = run(capsys, "info", str(shared_data / S2))
    assert code == 0
    assert "B02 B03 B04 B08" in out and "B05 B06 B07 B8A B11 B12" in out and "B01 B09" in out


# ------------------------------------------------------------------ convert
@pytest.mark.shared_data
def test_convert_dicom_to_nifti_matches_dcm2niix(shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from helpers import corner_error, grid_correspondence, resample_reference

    out = tmp_path / "mr.nii.gz"
    code, _, err = run(capsys, "convert", str(shared_data / MR_SERIES), "-o", str(out), "-q")
    assert code == 0, err
    ours, ref = nib.load(out), nib.load(shared_data / MR_REF)
    assert ours.get_data_dtype() == np.dtype("uint16")
    assert corner_error(ours.affine, ours.shape, ref.affine, ref.shape) < 1e-3
    r, t = grid_correspondence(ours.affine, ref.affine)
    np.testing.assert_array_equal(ours.get_fdata(), resample_reference(ref.get_fdata(), ours.shape, r, t))


@pytest.mark.shared_data
def test_convert_4d_epi_keeps_every_volume(shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "epi.nii"
    code, _, err = run(capsys, "convert", str(shared_data / EPI), "-o", str(out))
    assert code == 0, err
    img = nib.load(out)
    assert img.shape == (64, 64, 15, 10)
    np.testing.assert_allclose(img.header.get_zooms()[:3], (3.75, 3.75, 5.0), atol=1e-4)


@pytest.mark.shared_data
def test_convert_geotiff_to_cog(shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "naip.tif"
    code, _, err = run(capsys, "convert", str(shared_data / NAIP), "-o", str(out), "--format", "cog")
    assert code == 0, err
    with rasterio.open(shared_data / NAIP) as a, rasterio.open(out) as b:
        assert b.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        assert (a.crs, a.transform, a.nodata, a.dtypes) == (b.crs, b.transform, b.nodata, b.dtypes)
        np.testing.assert_array_equal(a.read(), b.read())


def test_convert_to_a_format_of_the_other_kind_is_refused_naming_both_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A raster into .nii.gz (or a volume into .tif) failed in the writer with a message that named no file."""
    vol = _nifti(tmp_path / "t1.nii.gz", np.eye(4))
    raster = Path(medsat_sr.samples.__file__).parent / "rgbn_aerial_5m.tif"
    for src, dst, want in ((vol, tmp_path / "t1.tif", "t1.nii.gz is a volume; write it as .nii.gz or a folder"),
                           (raster, tmp_path / "aerial.nii.gz", "rgbn_aerial_5m.tif is a raster; write it as .tif")):
        code, _, err = run(capsys, "convert", str(src), "-o", str(dst))
        assert code == 2 and err.startswith(f"medsat-sr: error: {dst}: ") and want in err, err
        assert not dst.exists()


@pytest.mark.shared_data
def test_convert_nifti_to_dicom_and_back(shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    series = tmp_path / "ct_series"
    back = tmp_path / "back.nii.gz"
    assert run(capsys, "convert", str(shared_data / CT), "-o", str(series))[0] == 0
    assert len(list(series.glob("*.dcm"))) == 112
    assert run(capsys, "convert", str(series), "-o", str(back))[0] == 0
    a, b = nib.load(shared_data / CT), nib.load(back)
    np.testing.assert_allclose(b.affine, a.affine, atol=1e-4)
    np.testing.assert_array_equal(np.asarray(b.dataobj), np.asarray(a.dataobj))


# ------------------------------------------------------------------ bad input
def _nifti(path: Path, affine: np.ndarray) -> Path:
    """A NIfTI whose sform is ``affine``, written byte for byte (nibabel's save would repair it)."""
    import gzip

    hdr = nib.Nifti1Header()
    hdr.set_data_dtype(np.int16)
    hdr.set_data_shape((4, 4, 4))
    hdr.set_qform(None, code=0)
    for i, row in enumerate(("srow_x", "srow_y", "srow_z")):
        hdr[row] = affine[i]
    hdr["sform_code"] = 2
    with gzip.open(path, "wb") as fh:
        hdr.write_to(fh)
        fh.write(np.zeros((4, 4, 4), np.int16).tobytes())
    return path


def _bad_inputs(tmp: Path, shared: Path | None) -> dict[str, tuple[Path, str]]:
    """name -> (input path, text the error must contain)."""
    cases: dict[str, tuple[Path, str]] = {}
    cases["missing path"] = (tmp / "nope.nii.gz", "no such file")
    (tmp / "empty").mkdir()
    cases["empty folder"] = (tmp / "empty", "empty")
    (tmp / "notes").mkdir()
    (tmp / "notes" / "README.txt").write_text("no images here")
    cases["folder with no DICOM"] = (tmp / "notes", "no DICOM")
    zero = np.zeros((4, 4))
    zero[3, 3] = 1
    cases["NIfTI zero affine"] = (_nifti(tmp / "zero.nii.gz", zero), "singular")
    nan = np.eye(4)
    nan[0, 0] = np.nan
    cases["NIfTI NaN affine"] = (_nifti(tmp / "nan.nii.gz", nan), "NaN")
    (tmp / "corrupt.tif").write_bytes(b"II*\x00" + os.urandom(200))
    cases["corrupt TIFF"] = (tmp / "corrupt.tif", "corrupt.tif")
    (tmp / "image.xyz").write_bytes(b"hello world" * 10)
    cases["unknown suffix"] = (tmp / "image.xyz", "unknown format")
    with zipfile.ZipFile(tmp / "S2A_MSIL2A_X.SAFE.zip", "w") as z:  # as the Copernicus hub delivers a product
        z.writestr("S2A_MSIL2A_X.SAFE/MTD_MSIL2A.xml", "<x/>")
    cases["zipped product"] = (tmp / "S2A_MSIL2A_X.SAFE.zip", "a zip archive; extract it first")
    if shared is not None:
        src = shared / MR_SERIES
        files = sorted(src.glob("*.dcm"))
        mixed = tmp / "mixed"
        mixed.mkdir()
        for f in files[:5] + sorted((shared / GE).glob("*.dcm"))[:5]:
            shutil.copy(f, mixed / f.name)
        cases["two series mixed"] = (mixed, "candidate series")
        gap = tmp / "gap"
        gap.mkdir()
        for f in files[:17] + files[18:]:
            shutil.copy(f, gap / f.name)
        cases["slice removed"] = (gap, "missing")
        cut = tmp / "cut"
        shutil.copytree(src, cut)
        victim = sorted(cut.glob("*.dcm"))[3]
        victim.write_bytes(victim.read_bytes()[:3000])
        cases["truncated DICOM"] = (cut, victim.name)
    return cases


def test_bad_input_one_line_exit_2_nothing_written(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from conftest import SHARED

    (tmp_path / "in").mkdir()
    cases = _bad_inputs(tmp_path / "in", SHARED if SHARED.is_dir() else None)
    outdir = tmp_path / "out"
    outdir.mkdir()
    for name, (src, text) in cases.items():
        commands = [["convert", str(src), "-o", str(outdir / "x.nii.gz")]]
        if name != "two series mixed":  # `info` lists the candidates of a mixed folder instead
            commands.append(["info", str(src)])
        for cmd in commands:
            code, out, err = run(capsys, *cmd)
            assert code == 2, f"{name}: exit {code}, stderr {err!r}"
            lines = err.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("medsat-sr: error: "), f"{name}: {err!r}"
            assert text.lower() in lines[0].lower(), f"{name}: {lines[0]!r} lacks {text!r}"
            assert "Traceback" not in err
        assert listing(outdir) == set(), f"{name}: left {listing(outdir)}"
    if not SHARED.is_dir():
        pytest.skip("../shared/data not found: the DICOM cases need the shared samples (the others passed)")


def test_bad_input_error_types() -> None:
    from medsat_sr import DataError, FormatError, GeometryError, read

    with pytest.raises(DataError) as exc:
        read("/definitely/not/here.nii")
    assert isinstance(exc.value, OSError)
    with pytest.raises(FormatError) as exc2:
        read(Path(__file__))
    assert isinstance(exc2.value, ValueError) and "unknown format" in str(exc2.value)
    assert issubclass(GeometryError, ValueError)


def test_unknown_output_suffix_rejected_before_reading(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "convert", str(tmp_path / "missing.nii"), "-o", str(tmp_path / "out.jpg"))
    assert code == 2 and "unknown output suffix '.jpg'" in err


@pytest.mark.shared_data
@pytest.mark.parametrize("where", ["missing folder", "file as folder", "proc"])
def test_unwritable_output_exit_3_nothing_left(
    where: str, shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "afile").write_text("x")
    target = {
        "missing folder": tmp_path / "no" / "such" / "out.tif",
        "file as folder": tmp_path / "afile" / "out.tif",
        "proc": Path("/proc/medsat_sr_test/out.tif"),
    }[where]
    before = listing(tmp_path)
    code, _, err = run(capsys, "convert", str(shared_data / NAIP), "-o", str(target))
    assert code == 3, err
    assert err.startswith("medsat-sr: error: ") and len(err.strip().splitlines()) == 1
    assert str(target.parent) in err
    assert listing(tmp_path) == before


def test_real_process_prints_no_traceback_unless_debug(tmp_path: Path) -> None:
    exe = [sys.executable, "-m", "medsat_sr"]
    missing = str(tmp_path / "nothing.nii.gz")
    p = subprocess.run([*exe, "info", missing], capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert p.stderr.strip() == f"medsat-sr: error: {missing}: no such file or folder"
    p = subprocess.run([*exe, "--debug", "info", missing], capture_output=True, text=True, timeout=120)
    assert p.returncode != 0 and "Traceback" in p.stderr and "DataError" in p.stderr


def test_a_closed_output_pipe_exits_quietly(tmp_path: Path) -> None:
    """`medsat-sr info x | head -1`: the reader went away; this printed 'internal error: BrokenPipeError'."""
    f = tmp_path / "t1.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.float32), np.eye(4)), str(f))
    p = subprocess.Popen([sys.executable, "-m", "medsat_sr", "info", str(f)], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    p.stdout.close()  # before the child (still importing) writes anything
    err = p.stderr.read()
    assert p.wait(timeout=120) == 141 and err == "", err


def test_info_names_label_maps(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A NIfTI label map and a paletted raster: upscale refuses both except by nearest, and info says so first."""
    seg = nib.Nifti1Image(np.zeros((4, 4, 4), np.uint8), np.eye(4))
    seg.header.set_intent("label")
    nib.save(seg, str(tmp_path / "seg.nii.gz"))
    with rasterio.open(tmp_path / "lc.tif", "w", driver="GTiff", width=8, height=8, count=1, dtype="uint8") as dst:
        dst.write(np.zeros((1, 8, 8), np.uint8))
        dst.write_colormap(1, {0: (0, 0, 0, 255), 1: (255, 0, 0, 255)})
    for name, text in (("seg.nii.gz", "a label map (NIfTI intent 'label')"), ("lc.tif", "a paletted raster")):
        assert main(["info", str(tmp_path / name)]) == 0
        out = capsys.readouterr().out
        assert f"labels: {text}" in out and "only by --method nearest" in out, out


# ------------------------------------------------------------------ startup: what each entry point imports
_LOADED = """
import json, sys
from medsat_sr.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
heavy = ("torch", "monai", "rasterio", "pydantic", "numpy", "scipy", "pydicom", "nibabel", "dask")
print("LOADED " + json.dumps({"code": code, "modules": [m for m in heavy if m in sys.modules]}), file=sys.stderr)
"""


def _loaded_by(*argv: str) -> tuple[object, set[str]]:
    """Run ``medsat-sr ARGV`` in a fresh interpreter; (exit code, heavy modules it imported)."""
    p = subprocess.run([sys.executable, "-c", _LOADED, *argv], capture_output=True, text=True, timeout=120)
    line = [ln for ln in p.stderr.splitlines() if ln.startswith("LOADED ")]
    assert line, p.stderr
    d = json.loads(line[-1][len("LOADED "):])
    return d["code"], set(d["modules"])


@pytest.mark.parametrize("argv", [["--version"], ["--help"], ["-q", "--help"], ["info", "--help"], ["convert", "--help"]])
def test_version_and_help_import_no_heavy_library(argv: list[str]) -> None:
    code, loaded = _loaded_by(*argv)
    assert code == 0
    assert not loaded & {"torch", "monai", "rasterio", "pydantic"}, loaded


@pytest.mark.parametrize("command", ["upscale", "batch", "train", "evaluate"])
def test_command_help_imports_no_torch(command: str) -> None:
    code, loaded = _loaded_by(command, "--help")
    assert code == 0
    assert not loaded & {"torch", "monai", "rasterio"}, loaded


def _odd_niftis(folder: Path) -> list[Path]:
    """NIfTI files whose reading takes each branch: scaled int16, 4D, qform only, 5D vector, float64."""
    import nibabel as nib

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    aff = np.array([[0, 0, 2.5, -40], [-0.9, 0, 0, 60], [0, 1.1, 0, -7], [0, 0, 0, 1]], dtype=float)
    out = []
    img = nib.Nifti1Image(rng.integers(-300, 900, (6, 5, 4)).astype(np.int16), aff)
    img.header.set_slope_inter(0.5, -12.0)
    out.append(folder / "scaled.nii.gz")
    nib.save(img, str(out[-1]))
    out.append(folder / "four_d.nii")
    nib.save(nib.Nifti1Image(rng.random((4, 5, 3, 2)).astype(np.float32), aff), str(out[-1]))
    img = nib.Nifti1Image(rng.random((4, 4, 4)).astype(np.float64), aff)
    img.set_sform(None, code=0)
    img.set_qform(aff, code=1)
    out.append(folder / "qform_only.nii.gz")
    nib.save(img, str(out[-1]))
    out.append(folder / "vector.nii.gz")
    nib.save(nib.Nifti1Image(rng.random((4, 3, 2, 1, 3)).astype(np.float32), aff), str(out[-1]))
    return out


def test_info_on_nifti_describes_what_the_reader_gives_without_torch(tmp_path: Path) -> None:
    """``info`` on a NIfTI file reads the validated header only (fast start), and says what ``read`` gives."""
    from medsat_sr.info import _describe_image, describe
    from medsat_sr.io import read

    files = _odd_niftis(tmp_path)
    for f in files:
        want = {"path": str(f), "format": "nifti", **_describe_image(read(f))}
        assert json.dumps(describe(f), default=str) == json.dumps(want, default=str), f.name
    code, loaded = _loaded_by("info", "--json", str(files[0]))
    assert code == 0
    assert not loaded & {"torch", "monai", "rasterio", "pydantic"}, loaded


def test_info_on_a_bad_nifti_names_the_file_and_the_problem(tmp_path: Path) -> None:
    """The fast path validates as the reader does: a truncated file is the reader's FormatError."""
    from medsat_sr.errors import FormatError
    from medsat_sr.info import describe
    from medsat_sr.io import read

    (f,) = _odd_niftis(tmp_path)[1:2]
    bad = tmp_path / "cut.nii"
    bad.write_bytes(f.read_bytes()[:400])
    with pytest.raises(FormatError) as by_info:
        describe(bad)
    with pytest.raises(FormatError) as by_read:
        read(bad)
    assert str(by_info.value) == str(by_read.value) and "cut.nii" in str(by_info.value)


def test_package_root_and_command_modules_are_cheap_to_import() -> None:
    code = (
        "import sys, importlib, medsat_sr, medsat_sr.cli\n"
        "mods = [importlib.import_module(m) for m in medsat_sr.cli.COMMANDS.values()]\n"
        "assert all(m.HELP and callable(m.add_parser) and callable(m.run) for m in mods)\n"
        "assert medsat_sr.MedsatError and medsat_sr.__version__\n"
        "print(sorted(m for m in ('torch', 'monai', 'rasterio', 'pydantic', 'numpy') if m in sys.modules))\n"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "[]"


def test_lazy_package_root_names() -> None:
    import medsat_sr
    from medsat_sr.image import BandSet
    from medsat_sr.inference.api import UpscaleResult, upscale
    from medsat_sr.io import read, write

    assert (medsat_sr.read, medsat_sr.write, medsat_sr.upscale) == (read, write, upscale)
    assert (medsat_sr.UpscaleResult, medsat_sr.BandSet) == (UpscaleResult, BandSet)
    assert set(medsat_sr.__all__) <= set(dir(medsat_sr))
    with pytest.raises(AttributeError):
        medsat_sr.no_such_name  # noqa: B018


def test_invalid_flag_value_is_one_line_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "upscale", "x.nii.gz", "-o", "y.nii.gz", "--method", "cubic", "--device", "gpu")
    assert code == 2
    assert err.strip() == "medsat-sr: error: argument --device: invalid choice: 'gpu' (choose from 'auto', 'cpu', 'cuda')"
    with pytest.raises(SystemExit) as exc:  # an unknown command is a usage error, as before
        main(["upscal", "x"])
    assert exc.value.code == 2 and "usage: medsat-sr" in capsys.readouterr().err


def test_full_parser_and_batch_option_flags() -> None:
    from medsat_sr.cli import COMMANDS, build_parser
    from medsat_sr.cli.batch import option_overrides

    parser = build_parser()
    args = parser.parse_args(["batch", "in.tif", "-o", "out", "--method", "cubic", "--tile-size", "64,64,32",
                              "--precision", "fp32", "--force", "--cog", "--redo"])
    assert args.redo and args.force and args.func is importlib.import_module(COMMANDS["batch"]).run
    assert sorted(option_overrides(args)) == [
        "inference.force=true", "inference.precision=\"fp32\"", "inference.tile_size=[64, 64, 32]", "output.cog=true",
    ]
    args = parser.parse_args(["batch", "in.tif", "-o", "out", "--method", "cubic"])
    assert option_overrides(args) == [] and not args.redo


def test_a_dicom_reader_flag_on_another_input_is_refused_in_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """--series on a NIfTI file was an internal error (TypeError); --volume on a raster was silently ignored."""
    samples = Path(medsat_sr.samples.__file__).parent
    nifti, raster = samples / "mni_icbm152_t1_2009a.nii.gz", samples / "rgbn_aerial_5m.tif"
    code, _, err = run(capsys, "convert", str(nifti), "-o", str(tmp_path / "x.nii.gz"), "--series", "2")
    assert code == 2 and "--series does not apply to a NIfTI input (DICOM series options)" in err, err
    assert "internal error" not in err and not (tmp_path / "x.nii.gz").exists()
    code, _, err = run(capsys, "upscale", str(raster), "-o", str(tmp_path / "y.tif"), "--method", "cubic",
                       "--scale", "2", "--volume", "1", "--resample")
    assert code == 2 and "--volume, --resample do not apply to a raster input" in err, err
    assert not (tmp_path / "y.tif").exists()
    code, _, err = run(capsys, "info", str(raster), "--series", "1")
    assert code == 2 and "--series does not apply to a raster input" in err, err
    # a batch applies its reader flags to the inputs they fit (its DICOM ones), not to the others
    code, out, err = run(capsys, "batch", str(raster), "-o", str(tmp_path / "b"), "--method", "cubic", "--scale", "2",
                         "--series", "1")
    assert code == 0 and (tmp_path / "b" / "rgbn_aerial_5m_sr.tif").exists(), err

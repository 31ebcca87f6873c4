"""A full disk: a real tiny tmpfs when this machine lets us mount one, and patched writers everywhere.

Every case must end in a WriteError (exit 3, one line naming the output,
no traceback) and leave nothing behind: no output, no temporary file, no
sidecar. In a batch, the failed input is recorded and the others go on.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from corpus import base_raster, base_series, base_volume  # noqa: E402

from medsat_sr.batch import read_jsonl  # noqa: E402
from medsat_sr.cli import main  # noqa: E402

ENOSPC = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    return code, capsys.readouterr().err


def one_error_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.startswith("medsat-sr: ")]
    assert len(lines) == 1 and lines[0].startswith("medsat-sr: error: "), err
    assert "Traceback" not in err and "internal error" not in err, err
    return lines[0]


def everything(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


# ------------------------------------------------------------------ a real full disk
@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 64 KiB tmpfs (needs root and CAP_SYS_ADMIN; skipped elsewhere, the patched cases below still run)."""
    mnt = tmp_path / "tiny_disk"
    mnt.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root; the patched full-disk cases cover this machine")
    p = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k,mode=0755", "tmpfs", str(mnt)], capture_output=True, text=True)
    if p.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({p.stderr.strip()}); the patched full-disk cases cover this machine")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


@pytest.mark.parametrize("kind", ["nifti", "geotiff", "dicom"])
def test_real_tiny_tmpfs_fills_up(kind: str, tiny_disk: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = tmp_path / "base"
    nii, _ = base_volume(base)
    src = {"nifti": nii, "dicom": base_series(base, nii), "geotiff": base_raster(base, size=128)}[kind]
    # x4 of the 16x16x8 crop as float32 NIfTI is 2 MB; of the 128x128 raster 1 MB, far over 64 KiB
    target = {"nifti": tiny_disk / "x.nii", "geotiff": tiny_disk / "x.tif", "dicom": tiny_disk / "x_series"}[kind]
    extra = ["--dtype", "float32"] if kind == "nifti" else []
    code, err = run_cli(capsys, "upscale", str(src), "-o", str(target), "--method", "cubic", "--scale", "4", *extra)
    line = one_error_line(err)
    assert code == 3, err
    assert str(target) in line
    assert everything(tiny_disk) == set(), f"left on the full disk: {everything(tiny_disk)}"


def test_real_tiny_tmpfs_in_a_batch(tiny_disk: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tiles = [base_raster(tmp_path / "in", size=8, name="small.tif"), base_raster(tmp_path / "in", size=128, name="big.tif")]
    code, err = run_cli(capsys, "batch", *map(str, tiles), "-o", str(tiny_disk), "--method", "cubic", "--scale", "4", "-q")
    assert code == 4, err
    lines = {Path(ln["input"]).name: ln for ln in read_jsonl(tiny_disk / "batch.jsonl")}
    assert lines["small.tif"]["status"] == "done"
    assert lines["big.tif"]["status"] == "failed" and lines["big.tif"]["error_type"] == "WriteError"
    assert everything(tiny_disk) == {"batch.jsonl", "small_sr.tif", "small_sr.tif.json"}


# ------------------------------------------------------------------ patched writers (run everywhere)
def test_nifti_voxel_write_hits_enospc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import nibabel.volumeutils

    import medsat_sr.io.nifti

    nii, _ = base_volume(tmp_path / "base")
    out = tmp_path / "out"
    out.mkdir()

    def array_to_file(data: Any, fh: Any, *args: Any, **kwargs: Any) -> None:
        fh.write(b"\0" * 1000)  # some voxels reach the disk, then it is full
        raise ENOSPC

    monkeypatch.setattr(nibabel.volumeutils, "array_to_file", array_to_file)
    monkeypatch.setattr(medsat_sr.io.nifti, "array_to_file", array_to_file)  # the writer's own binding
    code, err = run_cli(capsys, "upscale", str(nii), "-o", str(out / "x.nii.gz"), "--method", "cubic", "--scale", "2")
    line = one_error_line(err)
    assert code == 3 and "No space left on device" in line and str(out / "x.nii.gz") in line
    assert everything(out) == set()


def test_dicom_series_write_hits_enospc_after_some_slices(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import pydicom

    nii, _ = base_volume(tmp_path / "base")
    out = tmp_path / "out"
    out.mkdir()
    real = pydicom.dcmwrite
    written: list[Any] = []

    def dcmwrite(filename: Any, *args: Any, **kwargs: Any) -> Any:
        if len(written) == 3:
            Path(filename).write_bytes(b"DICM half a slice")
            raise ENOSPC
        written.append(filename)
        return real(filename, *args, **kwargs)

    monkeypatch.setattr(pydicom, "dcmwrite", dcmwrite)
    code, err = run_cli(capsys, "upscale", str(nii), "-o", str(out / "series_sr"), "--method", "cubic", "--scale", "2")
    line = one_error_line(err)
    assert code == 3 and "No space left on device" in line and len(written) == 3
    assert everything(out) == set()


def test_geotiff_window_write_hits_enospc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import rasterio
    from rasterio.errors import RasterioIOError

    tile = base_raster(tmp_path / "base", size=128)
    out = tmp_path / "out"
    out.mkdir()
    real_open = rasterio.open

    class FullDisk:
        """A dataset opened for writing whose second window write finds the disk full (as GDAL reports it)."""

        def __init__(self, ds: Any) -> None:
            self._ds, self._n = ds, 0

        def write(self, *args: Any, **kwargs: Any) -> Any:
            self._n += 1
            if self._n > 1:
                raise RasterioIOError("Free disk space available is 0 bytes, whereas 65536 are at least necessary")
            return self._ds.write(*args, **kwargs)

        def __getattr__(self, name: str) -> Any:
            return getattr(self._ds, name)

        def __enter__(self) -> FullDisk:
            self._ds.__enter__()
            return self

        def __exit__(self, *exc: Any) -> Any:
            return self._ds.__exit__(*exc)

    def fake_open(fp: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        ds = real_open(fp, mode, *args, **kwargs)
        return FullDisk(ds) if mode.startswith("w") else ds

    monkeypatch.setattr(rasterio, "open", fake_open)
    code, err = run_cli(
        capsys, "upscale", str(tile), "-o", str(out / "x.tif"), "--method", "cubic", "--scale", "2", "--tile-size", "32"
    )
    line = one_error_line(err)
    assert code == 3 and "disk space" in line and str(out / "x.tif") in line
    assert everything(out) == set()


def test_sidecar_write_hits_enospc_in_a_batch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """The output is written, its sidecar is not: the batch removes the output (no half-done input)."""
    import medsat_sr.batch_execute
    import medsat_sr.inference.api
    import medsat_sr.trust

    tiles = [base_raster(tmp_path / "in", size=16, name=f"t{i}.tif") for i in range(2)]
    out = tmp_path / "out"
    real = medsat_sr.trust.write_record

    def write_record(record: Any, output: Any) -> Any:
        if Path(output).name.startswith("t1"):
            from medsat_sr.errors import WriteError

            raise WriteError(f"{output}.json: write failed: No space left on device")
        return real(record, output)

    monkeypatch.setattr(medsat_sr.trust, "write_record", write_record)
    monkeypatch.setattr(medsat_sr.inference.api, "write_record", write_record)
    monkeypatch.setattr(medsat_sr.batch_execute, "write_record", write_record)  # the batch's own binding (its _execute)
    code, err = run_cli(capsys, "batch", *map(str, tiles), "-o", str(out), "--method", "cubic", "--scale", "2", "-q")
    assert code == 4 and "No space left on device" in err and "Traceback" not in err
    assert everything(out) == {"batch.jsonl", "t0_sr.tif", "t0_sr.tif.json"}
    # and a rerun with space again completes it, skipping what is done
    monkeypatch.setattr(medsat_sr.trust, "write_record", real)
    monkeypatch.setattr(medsat_sr.inference.api, "write_record", real)
    monkeypatch.setattr(medsat_sr.batch_execute, "write_record", real)
    assert run_cli(capsys, "batch", *map(str, tiles), "-o", str(out), "--method", "cubic", "--scale", "2", "-q")[0] == 0
    last = read_jsonl(out / "batch.jsonl")[-2:]
    assert sorted(ln["status"] for ln in last) == ["done", "skipped"]


def test_plain_upscale_leaves_nothing_when_the_sidecar_hits_enospc(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import medsat_sr.inference.api
    import medsat_sr.trust
    from medsat_sr.errors import WriteError

    tile = base_raster(tmp_path / "in", size=16)
    out = tmp_path / "out"
    out.mkdir()

    def write_record(record: Any, output: Any) -> Any:
        raise WriteError(f"{output}.json: write failed: No space left on device")

    monkeypatch.setattr(medsat_sr.trust, "write_record", write_record)
    monkeypatch.setattr(medsat_sr.inference.api, "write_record", write_record)  # the caller's own binding
    code, err = run_cli(capsys, "upscale", str(tile), "-o", str(out / "x.tif"), "--method", "cubic", "--scale", "2")
    one_error_line(err)
    assert code == 3
    assert everything(out) == set()

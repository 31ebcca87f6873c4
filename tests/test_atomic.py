"""Atomic writes give outputs the mode the umask asks for (issue #13), and leave no partial output."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from medsat_sr import io
from medsat_sr._atomic import atomic_dir, atomic_path, current_umask
from medsat_sr.errors import WriteError
from medsat_sr.image import make_raster, make_volume
from medsat_sr.trust import write_record

pytestmark = pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")


@pytest.fixture(params=[0o022, 0o027], ids=["umask022", "umask027"])
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    """Run the test under a given umask, restoring the previous one afterwards."""
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _volume() -> object:
    data = np.arange(2 * 3 * 4, dtype=np.float32).reshape(1, 2, 3, 4)
    aff = np.diag([0.8, 0.8, 2.0, 1.0])
    return make_volume(data, aff, source_dtype="int16", intensity={"slope": 1.0, "intercept": 0.0})


def _no_leftovers(folder: Path) -> None:
    assert not [p.name for p in folder.iterdir() if p.name.startswith(".")]


def test_current_umask_reads_without_changing(umask: int) -> None:
    assert current_umask() == umask
    assert current_umask() == umask


def test_nifti_mode_follows_umask(tmp_path: Path, umask: int) -> None:
    out = io.write(_volume(), tmp_path / "v.nii.gz")
    assert oct(_mode(out)) == oct(0o666 & ~umask)
    _no_leftovers(tmp_path)


def test_nifti_overwrite_gets_umask_mode(tmp_path: Path, umask: int) -> None:
    target = tmp_path / "v.nii"
    target.write_bytes(b"old")
    target.chmod(0o600)
    io.write(_volume(), target)
    assert oct(_mode(target)) == oct(0o666 & ~umask)


def test_geotiff_mode_follows_umask(tmp_path: Path, umask: int) -> None:
    img = make_raster(np.ones((1, 5, 6), np.float32), (10.0, 0.0, 300000.0, 0.0, -10.0, 4000000.0), crs="EPSG:32631")
    out = io.write(img, tmp_path / "r.tif")
    assert oct(_mode(out)) == oct(0o666 & ~umask)
    _no_leftovers(tmp_path)


def test_dicom_folder_and_files_follow_umask(tmp_path: Path, umask: int) -> None:
    out = io.write(_volume(), tmp_path / "series")
    assert out.is_dir()
    assert oct(_mode(out)) == oct(0o777 & ~umask)
    files = sorted(out.iterdir())
    assert len(files) == 4
    assert {oct(_mode(f)) for f in files} == {oct(0o666 & ~umask)}
    _no_leftovers(tmp_path)


def test_dicom_folder_replaced_gets_umask_mode(tmp_path: Path, umask: int) -> None:
    (tmp_path / "series").mkdir(mode=0o700)
    out = io.write(_volume(), tmp_path / "series")
    assert oct(_mode(out)) == oct(0o777 & ~umask)
    _no_leftovers(tmp_path)


def test_json_sidecar_mode_follows_umask(tmp_path: Path, umask: int) -> None:
    path = write_record({"format": "x", "value": 1.5}, tmp_path / "out.nii.gz")
    assert path.name == "out.nii.gz.json"
    assert oct(_mode(path)) == oct(0o666 & ~umask)
    _no_leftovers(tmp_path)


def test_partial_file_is_private_and_hidden_until_renamed(tmp_path: Path) -> None:
    target = tmp_path / "a.nii.gz"
    with atomic_path(target) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".") and tmp.name.endswith(".nii.gz")
        assert _mode(tmp) == 0o600
        assert not target.exists()
        tmp.write_bytes(b"x")
    assert target.read_bytes() == b"x"
    _no_leftovers(tmp_path)


def test_partial_folder_is_private_and_hidden_until_renamed(tmp_path: Path) -> None:
    target = tmp_path / "series"
    with atomic_dir(target) as tmp:
        assert tmp.name.startswith(".") and _mode(tmp) == 0o700
        assert not target.exists()
        (tmp / "f").write_bytes(b"x")
    assert (target / "f").read_bytes() == b"x"
    _no_leftovers(tmp_path)


def test_failed_write_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), atomic_path(tmp_path / "a.nii") as tmp:
        tmp.write_bytes(b"partial")
        raise RuntimeError("boom")
    with pytest.raises(RuntimeError), atomic_dir(tmp_path / "d") as tmpd:
        (tmpd / "f").write_bytes(b"partial")
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_unwritable_folder_is_a_write_error(tmp_path: Path) -> None:
    with pytest.raises(WriteError, match="does not exist"), atomic_path(tmp_path / "missing" / "a.nii"):
        pass


def _modes_under(root: Path) -> tuple[set[str], set[str]]:
    """Modes of everything below ``root`` (not ``root`` itself: pytest makes it 0700)."""
    dirs: set[str] = set()
    files: set[str] = set()
    for p in root.rglob("*"):
        (dirs if p.is_dir() else files).add(oct(_mode(p)))
    return dirs, files


def test_every_other_writer_follows_umask(tmp_path: Path, umask: int) -> None:
    """COG, band folder, checkpoint, batch outputs and batch.jsonl (NIfTI/GeoTIFF/DICOM/JSON above; the demo
    test covers the report, figures, metrics.csv and run folders)."""
    from medsat_sr.checkpoint import save_checkpoint
    from medsat_sr.cli import main
    from medsat_sr.image import BandSet
    from medsat_sr.models import build_model

    r10 = make_raster(np.ones((2, 8, 8), np.float32), (10.0, 0.0, 300000.0, 0.0, -10.0, 4000000.0), crs="EPSG:32631",
                      band_names=["B02", "B03"], source_dtype="uint16")
    r20 = make_raster(np.ones((1, 4, 4), np.float32), (20.0, 0.0, 300000.0, 0.0, -20.0, 4000000.0), crs="EPSG:32631",
                      band_names=["B05"], source_dtype="uint16")
    io.write(BandSet(groups={"10m": r10, "20m": r20}), tmp_path / "bands")
    io.write(r10, tmp_path / "cog.tif", format="cog")
    (tmp_path / "ckpt").mkdir()  # as train does with its run folder
    save_checkpoint(tmp_path / "ckpt" / "best", build_model("edsr", spatial_dims=2, in_channels=1, scale=2,
                                                            features=4, n_blocks=1))
    assert main(["batch", str(tmp_path / "cog.tif"), "-o", str(tmp_path / "batch"), "--method", "cubic",
                 "--scale", "2", "-q"]) == 0
    dirs, files = _modes_under(tmp_path)
    assert dirs == {oct(0o777 & ~umask)} and files == {oct(0o666 & ~umask)}
    assert {"batch.jsonl", "cog_sr.tif", "cog_sr.tif.json"} <= {p.name for p in (tmp_path / "batch").iterdir()}

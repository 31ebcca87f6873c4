"""`medsat-sr batch`: outputs, run manifest, resume, failure isolation, Dask, a SIGKILL mid-run.

Inputs are tiles cut from the packaged aerial sample (always present) and a
small crop of the packaged MNI template, so these tests need no shared data.
"""

from __future__ import annotations

import csv
import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
from rasterio.windows import Window

import medsat_sr.samples
from medsat_sr import batch as batch_mod
from medsat_sr import batch_execute, batch_journal
from medsat_sr.batch import output_name, read_jsonl, run_batch
from medsat_sr.cli import main
from medsat_sr.errors import ConfigError, FormatError, WriteError

SAMPLES = Path(medsat_sr.samples.__file__).parent
AERIAL = SAMPLES / "rgbn_aerial_5m.tif"
MNI = SAMPLES / "mni_icbm152_t1_2009a.nii.gz"
#: Upper-left corners of the tiles cut from the aerial sample (403 x 515).
CORNERS = [(0, 0), (0, 256), (200, 0), (200, 256), (100, 128)]


# ------------------------------------------------------------------ fixtures
def make_tiles(folder: Path, n: int = 5, size: tuple[int, int] = (64, 64), prefix: str = "tile") -> list[Path]:
    """``n`` georeferenced 4-band uint8 tiles cut from the aerial sample."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    with rasterio.open(AERIAL) as src:
        prof = src.profile.copy()
        for i, (r, c) in enumerate(CORNERS[:n]):
            win = Window(c, r, size[1], size[0])
            prof.update(width=size[1], height=size[0], transform=src.window_transform(win), blockxsize=64, blockysize=64)
            path = folder / f"{prefix}{i}.tif"
            with rasterio.open(path, "w", **prof) as dst:
                dst.write(src.read(window=win))
            out.append(path)
    return out


def make_corrupt(path: Path, like: Path) -> Path:
    """The first 3000 bytes of a real GeoTIFF: TIFF magic, then a directory that points past the end."""
    path.write_bytes(like.read_bytes()[:3000])
    return path


def make_volume(path: Path, side: int = 32, step: int = 2, offset: int = 0) -> Path:
    """A small real MR volume: a strided crop of the packaged MNI template."""
    import nibabel as nib

    img = nib.load(MNI)
    a = 50 + offset
    sub = img.slicer[a : a + side * step : step, 60 : 60 + side * step : step, 50 : 50 + side * step : step]
    nib.save(sub, path)
    return path


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def lines_of(out: Path, run: str | None = None) -> list[dict[str, Any]]:
    """The lines of ``out/batch.jsonl`` (of one run, or of the ``"last"``), each run's in input order."""
    lines = read_jsonl(out / "batch.jsonl")
    if run == "last":
        run = lines[-1]["run"]
    runs = list(dict.fromkeys(ln["run"] for ln in lines))
    return sorted((ln for ln in lines if run is None or ln["run"] == run), key=lambda ln: (runs.index(ln["run"]), ln["index"]))


def mtimes(paths: list[Path]) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in paths}


def listing(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()} if folder.exists() else set()


# ------------------------------------------------------------------ basics
def test_inline_batch_writes_outputs_manifest_and_exits_4_on_partial_failure(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tiles = make_tiles(tmp_path / "in", n=3)
    bad = make_corrupt(tmp_path / "in" / "zz_corrupt.tif", tiles[0])
    out = tmp_path / "out"
    code, stdout, err = run_cli(capsys, "batch", str(tmp_path / "in" / "*.tif"), "-o", str(out), "--method", "cubic", "--scale", "2")
    assert code == 4, err
    assert "3 done, 0 skipped, 1 failed of 4 inputs" in stdout
    assert "1 of 4 inputs failed" in err and f"  {bad}: " in err and "Traceback" not in err
    lines = lines_of(out)
    assert [ln["status"] for ln in lines] == ["done", "done", "done", "failed"]
    assert lines[3]["error_type"] == "FormatError" and str(bad) in lines[3]["error"]
    assert len({ln["run"] for ln in lines}) == 1
    for tile, ln in zip(tiles, lines[:3]):
        o = out / f"{tile.stem}_sr.tif"
        assert ln["output"] == str(o) and ln["sidecar"] == str(o) + ".json" and ln["method"] == "cubic"
        with rasterio.open(o) as d, rasterio.open(tile) as s:
            assert d.shape == (128, 128) and d.count == 4 and d.crs == s.crs and d.bounds == s.bounds
        side = json.loads(Path(ln["sidecar"]).read_text())
        assert side["batch"]["input_sha256"] == ln["input_sha256"] and side["batch"]["job_hash"] == ln["job_hash"]
        assert side["method"] == "cubic" and side["fallback"]["applied"] is False
    assert listing(out) == {"batch.jsonl"} | {f"{t.stem}_sr.tif" for t in tiles} | {f"{t.stem}_sr.tif.json" for t in tiles}


def test_all_good_exits_0_and_dry_run_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tiles = make_tiles(tmp_path / "in", n=2)
    out = tmp_path / "out"
    code, stdout, _ = run_cli(capsys, "batch", *map(str, tiles), "-o", str(out), "--method", "cubic", "--scale", "2", "--dry-run")
    assert code == 0 and not out.exists()
    assert stdout.count("run ") == 2 and "tile0_sr.tif (no output)" in stdout
    code, _, err = run_cli(capsys, "batch", *map(str, tiles), "-o", str(out), "--method", "cubic", "--scale", "2", "-q")
    assert code == 0 and err == ""
    code, stdout, _ = run_cli(capsys, "batch", *map(str, tiles), "-o", str(out), "--method", "cubic", "--scale", "2", "--dry-run")
    assert code == 0 and stdout.count("skip ") == 2


# ------------------------------------------------------------------ resume
def test_rerun_skips_complete_outputs_and_redoes_what_changed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tiles = make_tiles(tmp_path / "in", n=3)
    out = tmp_path / "out"
    args = ["batch", *map(str, tiles), "-o", str(out), "--method", "cubic", "--scale", "2", "-q"]
    outputs = [out / f"{t.stem}_sr.tif" for t in tiles]
    assert run_cli(capsys, *args)[0] == 0
    first = mtimes(outputs)

    assert run_cli(capsys, *args)[0] == 0  # same command: nothing recomputed
    assert [ln["status"] for ln in lines_of(out, "last")] == ["skipped"] * 3
    assert mtimes(outputs) == first

    # a changed input, a tampered output and a lost sidecar are redone; the rest is not
    with rasterio.open(tiles[0], "r+") as d:
        d.write(255 - d.read())
    with open(outputs[1], "ab") as fh:
        fh.write(b"\0")
    Path(str(outputs[2]) + ".json").unlink()
    assert run_cli(capsys, *args)[0] == 0
    assert [ln["status"] for ln in lines_of(out, "last")] == ["done", "done", "done"]
    second = mtimes(outputs)
    assert run_cli(capsys, *args)[0] == 0
    assert [ln["status"] for ln in lines_of(out, "last")] == ["skipped"] * 3

    # another recipe (an output option) redoes everything; so does --redo
    assert run_cli(capsys, *args, "--set", "output.compress=zstd")[0] == 0
    assert [ln["status"] for ln in lines_of(out, "last")] == ["done"] * 3
    assert run_cli(capsys, *args, "--set", "output.compress=zstd", "--redo")[0] == 0
    assert [ln["status"] for ln in lines_of(out, "last")] == ["done"] * 3
    assert all(mtimes(outputs)[p] != second[p] for p in outputs)
    # batch.jsonl is append-only: one line per input per run
    assert len(lines_of(out)) == 6 * 3


def test_a_sidecar_from_plain_upscale_is_not_taken_for_done(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tile,) = make_tiles(tmp_path / "in", n=1)
    out = tmp_path / "out"
    out.mkdir()
    assert run_cli(capsys, "upscale", str(tile), "-o", str(out / "tile0_sr.tif"), "--method", "cubic", "--scale", "2", "-q")[0] == 0
    assert run_cli(capsys, "batch", str(tile), "-o", str(out), "--method", "cubic", "--scale", "2", "-q")[0] == 0
    assert lines_of(out)[0]["status"] == "done"


# ------------------------------------------------------------------ names, inputs, manifest
def test_output_names_follow_the_template(tmp_path: Path) -> None:
    nii = tmp_path / "scan.nii.gz"
    nii.touch()
    plain = tmp_path / "scan2.nii"
    plain.touch()
    series = tmp_path / "T1_series"
    series.mkdir()
    tif = tmp_path / "scene.TIF"
    tif.touch()
    t = "{stem}_sr{ext}"
    assert output_name(t, nii, kind="nifti", index=0, name="cfg") == "scan_sr.nii.gz"
    assert output_name(t, plain, kind="nifti", index=0, name="cfg") == "scan2_sr.nii"
    assert output_name(t, series, kind="dicom", index=0, name="cfg") == "T1_series_sr"
    assert output_name(t, series, kind="dicom", index=0, name="cfg", fmt="nifti") == "T1_series_sr.nii.gz"
    assert output_name(t, nii, kind="nifti", index=0, name="cfg", fmt="dicom") == "scan_sr"
    assert output_name(t, tif, kind="geotiff", index=0, name="cfg") == "scene_sr.tif"
    assert output_name(t, series, kind="bandset", index=0, name="cfg") == "T1_series_sr"
    assert output_name("{index:04d}_{name}_{stem}{ext}", nii, kind="nifti", index=7, name="mri") == "0007_mri_scan.nii.gz"


def test_colliding_output_names_are_refused_before_anything_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = make_tiles(tmp_path / "a", n=1)
    b = make_tiles(tmp_path / "b", n=1)
    out = tmp_path / "out"
    code, _, err = run_cli(capsys, "batch", str(a[0]), str(b[0]), "-o", str(out), "--method", "cubic", "--scale", "2")
    assert code == 2 and "collide" in err and "{index}" in err and not out.exists()
    code, _, _ = run_cli(
        capsys, "batch", str(a[0]), str(b[0]), "-o", str(out), "--method", "cubic", "--scale", "2", "-q",
        "--set", "output.name_template={index:02d}_{stem}{ext}",
    )
    assert code == 0 and {"00_tile0.tif", "01_tile0.tif"} <= listing(out)


def test_manifest_rows_carry_their_own_settings_and_fail_alone(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tiles = make_tiles(tmp_path / "in", n=3)
    man = tmp_path / "in" / "inputs.csv"
    with open(man, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["input", "output", "scale", "output.dtype"])
        w.writerow(["tile0.tif", "sub/first.tif", "2", ""])
        w.writerow(["# a comment row", "", "", ""])
        w.writerow(["tile1.tif", "", "3", "float32"])
        w.writerow(["tile2.tif", "", "x", ""])
        w.writerow(["nothing_*.tif", "", "2", ""])
    out = tmp_path / "out"
    code, _, err = run_cli(capsys, "batch", "--manifest", str(man), "-o", str(out), "--method", "cubic", "-q")
    assert code == 4, err
    lines = lines_of(out)
    assert [ln["status"] for ln in lines] == ["done", "done", "failed", "failed"]
    assert "scale must be a number" in lines[2]["error"] and "no files match" in lines[3]["error"]
    assert (lines[2]["error_type"], lines[3]["error_type"]) == ("ConfigError", "DataError")
    with rasterio.open(out / "sub" / "first.tif") as d:
        assert d.shape == (128, 128) and d.dtypes[0] == "uint8"
    with rasterio.open(out / "tile1_sr.tif") as d:
        assert d.shape == (192, 192) and d.dtypes[0] == "float32"
    assert not (out / "tile2_sr.tif").exists()


def test_manifest_with_an_unknown_column_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    man = tmp_path / "m.csv"
    man.write_text("input,inference.tile_sise\na.tif,64\n")
    code, _, err = run_cli(capsys, "batch", "--manifest", str(man), "-o", str(tmp_path / "o"), "--method", "cubic", "--scale", "2")
    assert code == 2 and "tile_size" in err and "Traceback" not in err
    man.write_text("path\na.tif\n")
    code, _, err = run_cli(capsys, "batch", "--manifest", str(man), "-o", str(tmp_path / "o"), "--method", "cubic", "--scale", "2")
    assert code == 2 and "no 'input' column" in err


def test_usage_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tile,) = make_tiles(tmp_path / "in", n=1)
    o = str(tmp_path / "o")
    cases = [
        (["batch", str(tile), "-o", o], "nothing to run"),
        (["batch", "-o", o, "--method", "cubic"], "no inputs"),
        (["batch", str(tile), "-o", o, "--method", "cubic"], "needs a scale"),
        (["batch", str(tile), "-o", o, "--method", "bicubic", "--scale", "2"], "unknown method"),
        (["batch", str(tile), "-o", o, "--method", "cubic", "--scale", "2", "--workers", "-1"], "workers must be"),
        (["batch", str(tile), "-o", o, "--method", "cubic", "--scale", "2", "--set", "train.lr=1"], "without --config"),
        (["batch", str(tile), "-o", o, "--config", "nope_config", "--method", "cubic"], "unknown config"),
        (["batch", str(tile), "-o", o, "--model", str(tmp_path / "missing_ckpt")], "not found"),
    ]
    for argv, text in cases:
        code, _, err = run_cli(capsys, *argv)
        assert code == 2, (argv, err)
        assert text in err and len(err.strip().splitlines()) == 1, (argv, err)
    assert not Path(o).exists()


def test_unwritable_output_folder_exits_3(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tile,) = make_tiles(tmp_path / "in", n=1)
    (tmp_path / "afile").write_text("x")
    for target in (tmp_path / "afile", tmp_path / "afile" / "sub", Path("/proc/medsat_batch_test")):
        code, _, err = run_cli(capsys, "batch", str(tile), "-o", str(target), "--method", "cubic", "--scale", "2")
        assert code == 3 and err.startswith("medsat-sr: error: ") and "Traceback" not in err, err


def test_a_second_run_on_the_same_folder_is_refused_while_one_holds_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tile,) = make_tiles(tmp_path / "in", n=1)
    out = tmp_path / "out"
    out.mkdir()
    with open(out / "batch.jsonl", "a") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        code, _, err = run_cli(capsys, "batch", str(tile), "-o", str(out), "--method", "cubic", "--scale", "2")
    assert code == 3 and "another batch run" in err
    assert listing(out) == {"batch.jsonl"}


# ------------------------------------------------------------------ volumes, configs, models, fallback
def test_volumes_nifti_and_dicom_with_a_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from medsat_sr.io import read, write

    (tmp_path / "in").mkdir()
    vol = make_volume(tmp_path / "in" / "mr.nii.gz", side=16)
    write(read(vol), tmp_path / "in" / "mr_series")  # a DICOM series folder
    out = tmp_path / "out"
    code, _, err = run_cli(
        capsys, "batch", str(vol), str(tmp_path / "in" / "mr_series"), "-o", str(out), "--config", "mri_isotropic_x2",
        "--method", "cubic", "--set", "output.name_template={name}_{stem}{ext}", "-q",
    )
    assert code == 0, err
    assert {"mri_isotropic_x2_mr.nii.gz", "mri_isotropic_x2_mr_series"} <= listing(out)
    for o in (out / "mri_isotropic_x2_mr.nii.gz", out / "mri_isotropic_x2_mr_series"):
        img = read(o)
        assert tuple(img.shape[1:]) == (32, 32, 32)
        side = json.loads(Path(str(o) + ".json").read_text())
        assert side["batch"]["config_hash"] and side["config"]["name"] == "mri_isotropic_x2"


def _tiny_checkpoint(path: Path, *, dims: int, channels: int, metrics: dict[str, float] | None) -> Path:
    import torch

    from medsat_sr.checkpoint import save_checkpoint
    from medsat_sr.models import build_model

    torch.manual_seed(0)
    if dims == 3:
        m = build_model("dcsrn", spatial_dims=3, in_channels=channels, scale=2, features=4, growth=4, n_blocks=1, n_layers=1)
    else:
        m = build_model("edsr", spatial_dims=2, in_channels=channels, scale=2, features=8, n_blocks=1)
    return save_checkpoint(path, m, {"scale": [2.0] * dims, "metrics": metrics})


def test_checkpoint_loaded_once_per_process_and_fallback_recorded(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "in").mkdir()
    vols = [make_volume(tmp_path / "in" / f"v{i}.nii.gz", side=16, offset=4 * i) for i in range(3)]
    worse = _tiny_checkpoint(tmp_path / "worse", dims=3, channels=1, metrics={"val_psnr": 20.0, "val_psnr_cubic": 25.0})
    fine = _tiny_checkpoint(tmp_path / "fine", dims=3, channels=1, metrics=None)
    batch_execute._MODEL_CACHE.clear()
    before = batch_mod.model_cache_info()
    out = tmp_path / "out"
    assert run_cli(capsys, "batch", *map(str, vols), "-o", str(out), "--model", str(worse), "-q")[0] == 0
    after = batch_mod.model_cache_info()
    assert after["loads"] - before["loads"] == 1 and after["hits"] - before["hits"] == 2
    lines = lines_of(out)
    assert all(ln["fallback"] and ln["method"] == "cubic" and "does not beat cubic" in ln["fallback_reason"] for ln in lines)
    side = json.loads(Path(lines[0]["sidecar"]).read_text())
    assert side["fallback"]["applied"] is True and side["models"][0]["sha256"]
    # skipped lines still say that they fell back
    assert run_cli(capsys, "batch", *map(str, vols), "-o", str(out), "--model", str(worse), "-q")[0] == 0
    assert all(ln["status"] == "skipped" and ln["fallback"] for ln in lines_of(out, "last"))
    # another checkpoint is another recipe: redone, with the model this time
    out2 = tmp_path / "out2"
    assert run_cli(capsys, "batch", *map(str, vols), "-o", str(out2), "--model", str(fine), "-q")[0] == 0
    assert all(ln["method"] == "model" and not ln["fallback"] for ln in lines_of(out2))


@pytest.mark.slow
def test_self_supervised_config_that_does_not_beat_cubic_falls_back(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "in").mkdir()
    vol = make_volume(tmp_path / "in" / "mr.nii.gz", side=32)
    out = tmp_path / "out"
    tiny = [
        "train.max_iterations=2", "train.val_every=1", "train.batch_size=2", "train.patch_size=16",
        "model.kwargs={features: 4, growth: 4, n_blocks: 1, n_layers: 1}", "train.precision=fp32",
        "train.schedule.warmup_iterations=0", "inference.device=cpu", "data.min_valid_fraction=0.0",
    ]
    sets = [a for item in tiny for a in ("--set", item)]
    code, _, err = run_cli(capsys, "batch", str(vol), "-o", str(out), "--config", "mri_isotropic_x2", "--from-scratch", *sets, "-q")
    assert code == 0, err
    (ln,) = lines_of(out)
    side = json.loads(Path(ln["sidecar"]).read_text())
    assert ln["status"] == "done" and ln["fallback"] is True and ln["method"] == "cubic"
    assert side["fallback"]["applied"] is True and side["validation"]["beats_cubic"] is False


# ------------------------------------------------------------------ failure isolation inside the job
def job_writes_then_fails(task: batch_mod.Task) -> dict[str, Any]:
    Path(task.output).write_bytes(b"half an image")
    if "tile1" in task.input:
        raise FormatError(f"{task.input}: pretend the data is bad")
    if "tile2" in task.input:
        raise RuntimeError("an unexpected bug")
    return {"record": {"method": "test"}, "method": "test"}


def test_a_failed_job_leaves_nothing_and_the_others_go_on(tmp_path: Path) -> None:
    tiles = make_tiles(tmp_path / "in", n=4)
    out = tmp_path / "out"
    res = run_batch(tiles, out, method="cubic", scale=2, job=job_writes_then_fails)
    assert [it["status"] for it in res.items] == ["done", "failed", "failed", "done"]
    assert res.items[1]["error_type"] == "FormatError" and "pretend" in res.items[1]["error"]
    assert res.items[2]["error"].startswith("internal error: RuntimeError: an unexpected bug")
    assert listing(out) == {"batch.jsonl", "tile0_sr.tif", "tile0_sr.tif.json", "tile3_sr.tif", "tile3_sr.tif.json"}
    assert not res.ok and res.failed == 2 and res.done == 2


# ------------------------------------------------------------------ Dask
def test_external_scheduler_address(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--scheduler: an already running cluster (threads in this process, so it starts in a second)."""
    from distributed import LocalCluster

    monkeypatch.setattr(batch_execute, "SCHEDULER_TIMEOUT", "2s")

    tiles = make_tiles(tmp_path / "in", n=2)
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        res = run_batch(tiles, tmp_path / "out", method="cubic", scale=2, scheduler=cluster.scheduler_address)
    assert res.ok and res.done == 2
    with pytest.raises(ConfigError, match="cannot connect to the Dask scheduler"):
        run_batch(tiles, tmp_path / "out2", method="cubic", scale=2, scheduler="tcp://127.0.0.1:9")


@pytest.mark.slow
def test_two_worker_local_cluster_with_one_corrupt_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A real 2-process LocalCluster: 5 valid tiles + 1 corrupt -> 5 outputs, 1 recorded failure, exit 4.

    A checkpoint is used so that the run also shows one model load per worker
    process, and the workers' torch threads times the workers fit the cores.
    """
    tiles = make_tiles(tmp_path / "in", n=5)
    bad = make_corrupt(tmp_path / "in" / "tile_corrupt.tif", tiles[0])
    ckpt = _tiny_checkpoint(tmp_path / "edsr4", dims=2, channels=4, metrics=None)
    out = tmp_path / "out"
    t0 = time.perf_counter()
    code, stdout, err = run_cli(capsys, "batch", str(tmp_path / "in" / "*.tif"), "-o", str(out), "--model", str(ckpt), "--workers", "2")
    seconds = time.perf_counter() - t0
    assert code == 4, err
    lines = lines_of(out)
    assert sorted(ln["status"] for ln in lines) == ["done"] * 5 + ["failed"]
    (failed,) = [ln for ln in lines if ln["status"] == "failed"]
    assert failed["input"] == str(bad) and failed["error_type"] == "FormatError" and str(bad) in err
    for t in tiles:
        with rasterio.open(out / f"{t.stem}_sr.tif") as d:
            assert d.shape == (128, 128) and d.count == 4
    workers = {ln["worker"] for ln in lines}
    assert all(str(os.getpid()) not in w for w in workers)  # the work ran in worker processes
    loads: dict[str, int] = {}
    for ln in lines:
        if ln["status"] == "done":
            assert ln["method"] == "model"
            loads[ln["worker"]] = max(loads.get(ln["worker"], 0), ln["model_loads"])
    assert set(loads.values()) == {1}, loads  # once per worker, never per task
    cores = len(os.sched_getaffinity(0))
    assert all(ln["torch_threads"] * 2 <= max(cores, 2) for ln in lines)
    assert "Traceback" not in err
    print(f"2-worker LocalCluster batch of 6 inputs: {seconds:.1f} s")


# ------------------------------------------------------------------ SIGKILL mid-run, then resume
@pytest.mark.slow
def test_sigkill_mid_run_then_rerun_recomputes_nothing_done_and_leaves_nothing_corrupt(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tiles = make_tiles(tmp_path / "in", n=5, size=(200, 256))
    out = tmp_path / "out"
    args = ["batch", *map(str, tiles), "-o", str(out), "--method", "cubic", "--scale", "4", "--workers", "0", "-q"]
    proc = subprocess.Popen([sys.executable, "-m", "medsat_sr", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    manifest = out / "batch.jsonl"
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if manifest.exists() and any(ln["status"] == "done" for ln in read_jsonl(manifest)):
                break
            time.sleep(0.02)
        assert proc.poll() is None, f"the batch ended before it could be killed: {proc.communicate()}"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    done_before = {ln["output"] for ln in read_jsonl(manifest) if ln["status"] == "done"}
    assert 1 <= len(done_before) < 5, done_before
    print(f"SIGKILL after {len(done_before)} of 5 inputs were done")
    before = mtimes([Path(p) for p in done_before])
    # the killed run may have left a temporary file, never a final name without its sidecar's batch record
    for p in out.glob("*_sr.tif"):
        if str(p) not in done_before:
            assert not Path(str(p) + ".json").exists()

    code, _, err = run_cli(capsys, *args)
    assert code == 0, err
    rerun = lines_of(out, "last")
    assert {ln["output"] for ln in rerun if ln["status"] == "skipped"} == done_before
    assert len([ln for ln in rerun if ln["status"] == "done"]) == 5 - len(done_before)
    assert mtimes([Path(p) for p in done_before]) == before  # nothing done before the kill was recomputed
    assert not [p.name for p in out.iterdir() if ".part" in p.name], "temporary files left behind"
    # every output is complete and equal to a fresh in-memory upscale
    from medsat_sr.inference import upscale
    from medsat_sr.trust import sha256_path

    for t in tiles:
        o = out / f"{t.stem}_sr.tif"
        side = json.loads(Path(str(o) + ".json").read_text())
        assert side["batch"]["output_sha256"] == sha256_path(o)
        ref = upscale(t, method="cubic", scale=4).image
        with rasterio.open(o) as d:
            got = d.read()
        np.testing.assert_array_equal(got, np.clip(np.rint(np.asarray(ref)), 0, 255).astype(np.uint8))


def test_write_error_from_the_journal_stops_the_run_cleanly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tiles = make_tiles(tmp_path / "in", n=2)

    def full(self: Any, line: Any) -> None:
        raise WriteError(f"{self.path}: cannot append to the run manifest: No space left on device")

    monkeypatch.setattr(batch_journal._Journal, "write", full)
    with pytest.raises(WriteError, match="No space left"):
        run_batch(tiles, tmp_path / "out", method="cubic", scale=2)


def test_a_glob_with_a_trailing_slash_matches_folders_only(tmp_path: Path) -> None:
    """``'scenes/*/'`` (the README's batch of band folders) takes the folders, not a LICENSE beside them."""
    from medsat_sr.batch_inputs import expand_inputs

    for name in ("a", "b"):
        (tmp_path / name).mkdir()
    (tmp_path / "LICENSE").write_text("x")
    got = expand_inputs([str(tmp_path) + "/*/"])
    assert sorted(s.path.name for s in got) == ["a", "b"] and all(s.error is None for s in got)
    assert sorted(s.path.name for s in expand_inputs([str(tmp_path) + "/*"])) == ["LICENSE", "a", "b"]


def test_a_shipped_model_named_in_batch_runs_as_upscale_model_name_does(tmp_path: Path,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    """``batch --model NAME`` (the tile-grid use of #15's shipped models) took NAME for a checkpoint path."""
    (tile,) = make_tiles(tmp_path / "in", n=1, size=(128, 128))
    code, out, err = run_cli(capsys, "batch", str(tile), "-o", str(tmp_path / "out"), "--model", "multiband_x2", "-q")
    assert code == 0, err
    single = tmp_path / "single.tif"
    code, _, err = run_cli(capsys, "upscale", str(tile), "-o", str(single), "--model", "multiband_x2", "-q")
    assert code == 0, err
    batched = tmp_path / "out" / "tile0_sr.tif"
    with rasterio.open(batched) as a, rasterio.open(single) as b:
        np.testing.assert_array_equal(a.read(), b.read())
    record = json.loads(batched.with_name("tile0_sr.tif.json").read_text())
    single_record = json.loads(single.with_name("single.tif.json").read_text())
    assert record["decision"]["model_score"] == single_record["decision"]["model_score"]  # scored on the input
    assert record["decision"]["source"] == single_record["decision"]["source"]

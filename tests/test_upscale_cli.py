"""``medsat-sr upscale``: exit codes, one-line errors, atomic outputs, fallback through --config."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import rasterio
import torch
from rasterio.transform import Affine

from medsat_sr.checkpoint import save_checkpoint
from medsat_sr.cli import main
from medsat_sr.models import build_model


def _nifti(path: Path, shape=(20, 18, 8), zooms=(1.0, 1.0, 1.0), seed=0) -> Path:
    data = (np.random.default_rng(seed).random(shape) * 1000).astype(np.int16)
    aff = np.diag([*zooms, 1.0])
    aff[:3, 3] = [-10, 20, 5]
    nib.save(nib.Nifti1Image(data, aff), str(path))
    return path


def _tif(path: Path) -> Path:
    data = (np.random.default_rng(0).random((2, 40, 30)) * 255).astype(np.uint8)
    with rasterio.open(path, "w", driver="GTiff", width=30, height=40, count=2, dtype="uint8", crs="EPSG:4326",
                       transform=Affine(0.01, 0, 10, 0, -0.01, 50)) as dst:
        dst.write(data)
    return path


def _ckpt(tmp_path: Path, seed: int, spatial_dims=3, channels=1, **meta) -> Path:
    torch.manual_seed(seed)
    net = build_model("edsr", spatial_dims=spatial_dims, in_channels=channels, scale=2, features=8, n_blocks=1)
    with torch.no_grad():
        for p in net.output_conv.parameters():
            p.normal_(0, 0.05)
    path = tmp_path / f"m{seed}"
    save_checkpoint(path, net, meta)
    return path


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(["upscale", *argv])
    out, err = capsys.readouterr()
    return code, out, err


# --------------------------------------------------------------------------- bad inputs: exit 2, one line
@pytest.mark.parametrize(
    "argv",
    [
        ["{missing}", "-o", "{out}", "--method", "cubic", "--scale", "2"],
        ["{nii}", "-o", "{out}"],
        ["{nii}", "-o", "{out}", "--method", "cubic", "--model", "x"],
        ["{nii}", "-o", "{out}", "--method", "bicubic", "--scale", "2"],
        ["{nii}", "-o", "{out}", "--method", "cubic", "--scale", "two"],
        ["{nii}", "-o", "{out}", "--method", "cubic"],
        ["{nii}", "-o", "{out}", "--method", "cubic", "--scale", "2", "--set", "inference.tile_sise=3"],
        ["{nii}", "-o", "{out}", "--method", "cubic", "--scale", "2", "--precision", "fp16"],
        ["{nii}", "-o", "{tif_out}", "--method", "cubic", "--scale", "2"],
        ["{nii}", "-o", "{out}", "--model", "{missing}"],
        ["{nii}", "-o", "{out}", "--config", "no_such_config"],
        ["{tif}", "-o", "{out}", "--config", "mri_thick_slice"],
        ["{nii}", "-o", "{out}", "--model", "{ckpt2d}"],
    ],
)
def test_bad_inputs_exit_2_with_one_line(tmp_path, capsys, argv):
    names = {
        "missing": str(tmp_path / "missing.nii.gz"),
        "out": str(tmp_path / "out.nii.gz"),
        "tif_out": str(tmp_path / "out.tif"),
        "nii": str(_nifti(tmp_path / "in.nii.gz")),
        "tif": str(_tif(tmp_path / "in.tif")),
        "ckpt2d": str(_ckpt(tmp_path, 1, spatial_dims=2, channels=3)),
    }
    code, out, err = _run(capsys, *[a.format(**names) for a in argv])
    assert code == 2, err
    lines = [ln for ln in err.splitlines() if ln.startswith("medsat-sr")]
    assert len(lines) == 1 and lines[0].startswith("medsat-sr: error: "), err
    assert not (tmp_path / "out.nii.gz").exists() and not (tmp_path / "out.tif").exists()


@pytest.mark.parametrize("scale", ["0.5", "0.5,0.5"])
def test_a_raster_scale_under_one_is_refused_as_a_downsampling(tmp_path, capsys, scale):
    """A raster's --scale 0.5 is refused at the door in the volumes' words (it failed deep in the PSF set-up)."""
    code, _, err = _run(capsys, str(_tif(tmp_path / "in.tif")), "-o", str(tmp_path / "out.tif"), "--method", "cubic",
                        "--scale", scale)
    assert code == 2 and "would downsample; upscale needs factors >= 1" in err, err
    assert not (tmp_path / "out.tif").exists()


def test_unwritable_output_exits_3_and_leaves_nothing(tmp_path, capsys):
    import os

    src = _nifti(tmp_path / "in.nii.gz")
    code, _, err = _run(capsys, str(src), "-o", str(tmp_path / "nope" / "o.nii.gz"), "--method", "cubic", "--scale", "2")
    assert code == 3 and err.count("medsat-sr: error") == 1 and "does not exist" in err
    (tmp_path / "afile").write_text("x")
    code, _, err = _run(capsys, str(src), "-o", str(tmp_path / "afile" / "o.tif"), "--method", "cubic", "--scale", "2")
    assert code in (2, 3) and err.count("medsat-sr: error") == 1
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if not os.access(locked, os.W_OK):  # (root can write anywhere)
            code, _, err = _run(capsys, str(src), "-o", str(locked / "o.nii.gz"), "--method", "cubic", "--scale", "2")
            assert code == 3 and err.count("medsat-sr: error") == 1
            assert list(locked.iterdir()) == []
    finally:
        locked.chmod(0o700)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "in.nii.gz", "locked"]


def test_a_failure_while_writing_leaves_no_partial_output(tmp_path, capsys, monkeypatch):
    """Streamed rasters are written to a temporary file and renamed only when complete."""
    import medsat_sr.inference.raster_sink as sink_mod

    src = _tif(tmp_path / "in.tif")
    real = sink_mod.Sink.write
    calls = {"n": 0}

    def failing(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError(28, "No space left on device")
        return real(self, *a, **k)

    monkeypatch.setattr(sink_mod.Sink, "write", failing)
    code, _, err = _run(capsys, str(src), "-o", str(tmp_path / "o.tif"), "--method", "cubic", "--scale", "2", "--tile-size", "8")
    assert code != 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.tif"]


# --------------------------------------------------------------------------- working runs
def test_method_cubic_writes_output_and_sidecar(tmp_path, capsys):
    src = _nifti(tmp_path / "in.nii.gz")
    code, out, err = _run(capsys, str(src), "-o", str(tmp_path / "o.nii.gz"), "--method", "cubic", "--scale", "1,1,2", "-q")
    assert code == 0, err
    assert nib.load(str(tmp_path / "o.nii.gz")).shape == (20, 18, 16)
    rec = json.loads((tmp_path / "o.nii.gz.json").read_text())
    assert rec["method"] == "cubic" and rec["settings"]["scale"]["requested"] == [1.0, 1.0, 2.0]


def test_ensemble_with_uncertainty_and_weights(tmp_path, capsys):
    src = _nifti(tmp_path / "in.nii.gz")
    a, b = _ckpt(tmp_path, 1), _ckpt(tmp_path, 2)
    code, out, err = _run(
        capsys, str(src), "-o", str(tmp_path / "o.nii.gz"), "--model", str(a), "--model", str(b),
        "--weights", "1,3", "--uncertainty", "--tile-size", "9", "--dtype", "float32",
    )
    assert code == 0, err
    printed = out.split()
    assert printed[:2] == [str(tmp_path / "o.nii.gz"), str(tmp_path / "o_std.nii.gz")]
    o, s = nib.load(printed[0]), nib.load(printed[1])
    assert o.shape == s.shape == (40, 36, 16) and np.allclose(o.affine, s.affine)
    rec = json.loads(Path(printed[2]).read_text())
    assert [m["weight"] for m in rec["models"]] == [0.25, 0.75]
    assert rec["output"]["dtype"] == "float32" and o.get_data_dtype() == np.float32


def test_raster_through_the_cli_with_set_and_cog(tmp_path, capsys):
    src = _tif(tmp_path / "in.tif")
    code, out, err = _run(
        capsys, str(src), "-o", str(tmp_path / "o.tif"), "--method", "lanczos", "--scale", "2",
        "--set", "inference.tile_size=16", "--cog", "-q",
    )
    assert code == 0, err
    with rasterio.open(tmp_path / "o.tif") as ds:
        assert (ds.height, ds.width, ds.count) == (80, 60, 2)
        assert ds.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
    rec = json.loads((tmp_path / "o.tif.json").read_text())
    assert rec["settings"]["tile_size"] == 16


# --------------------------------------------------------------------------- fallback through --config
@pytest.mark.slow
def test_config_fit_on_noise_falls_back_to_cubic(tmp_path, capsys, caplog):
    pytest.importorskip("medsat_sr.train")
    src = _nifti(tmp_path / "noise.nii.gz", shape=(40, 40, 8), zooms=(1.0, 1.0, 4.0))
    sets = [
        "train.max_iterations=1", "train.val_every=1", "train.batch_size=2", "train.patch_size=16",
        "model.kwargs.features=8", "model.kwargs.n_blocks=1", "train.schedule.warmup_iterations=0",
    ]
    argv = [str(src), "-o", str(tmp_path / "sr.nii.gz"), "--config", "mri_thick_slice", "--from-scratch"]
    for s in sets:
        argv += ["--set", s]
    code, out, err = _run(capsys, *argv)
    assert code == 0, err
    rec = json.loads((tmp_path / "sr.nii.gz.json").read_text())
    if not rec["fallback"]["applied"]:
        pytest.fail(f"a 1-iteration fit on noise beat cubic? {rec['validation']}")
    # the warning (on stderr for a user; captured by pytest's log handler here)
    assert any("does not beat cubic" in r.getMessage() and r.levelname == "WARNING" for r in caplog.records)
    assert rec["method"] == "cubic" and rec["validation"]["members"][0]["source"].startswith("self-supervised")
    code, _, err = _run(capsys, str(src), "-o", str(tmp_path / "cubic.nii.gz"), "--method", "cubic", "--scale", "1,1,4", "-q")
    assert code == 0, err
    a = np.asarray(nib.load(str(tmp_path / "sr.nii.gz")).dataobj)
    b = np.asarray(nib.load(str(tmp_path / "cubic.nii.gz")).dataobj)
    assert a.shape == b.shape == (40, 40, 32) and np.array_equal(a, b)


def test_config_slice_network_refuses_two_thick_axes_before_any_fit(tmp_path, capsys, monkeypatch):
    """A 1 x 2 x 4 mm volume asks a slice network for two axes: refused at the door, with the scale to give."""

    def no_fit(*_a, **_k):
        raise RuntimeError("the fit ran before the scale was checked")

    monkeypatch.setattr("medsat_sr.inference.request.fit_on_input", no_fit)
    src = _nifti(tmp_path / "two_thick.nii.gz", shape=(24, 12, 6), zooms=(1.0, 2.0, 4.0))
    out = tmp_path / "sr.nii.gz"
    code, _, err = _run(capsys, str(src), "-o", str(out), "--config", "mri_thick_slice")
    assert code == 2
    line = err.strip()
    assert "\n" not in line and "Traceback" not in line
    assert str(src) in line and "2D slice network" in line and "--scale 1,1,4" in line
    assert not out.exists() and not list(tmp_path.glob("sr.nii.gz*"))
    # the suggested scale is accepted (the door passes it on to the fit)
    code, _, err = _run(capsys, str(src), "-o", str(out), "--config", "mri_thick_slice", "--scale", "1,1,4")
    assert code != 0 and "the fit ran before the scale was checked" in err


# --------------------------------------------------------------------------- 3D self-supervised through --config
@pytest.mark.slow
@pytest.mark.parametrize("as_dicom", [False, True], ids=["nifti", "dicom"])
def test_config_mri_isotropic_x2_keeps_the_fov_exactly(tmp_path, capsys, as_dicom):
    """``upscale VOL -o out.nii.gz --config mri_isotropic_x2``: a 3D self-supervised fit, FOV kept exactly."""
    from medsat_sr.geometry import fov_corners
    from medsat_sr.io import read, write

    rng = np.random.default_rng(3)
    shape = (40, 36, 32)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij"))
    head = (np.sqrt((grid**2).sum(0)) < 0.8).astype(np.float32)
    data = (head * (600 + 300 * np.sin(4 * grid[0]) * np.cos(3 * grid[1])) + rng.normal(0, 5, shape)).astype(np.int16)
    rot = np.array([[0.96, -0.28, 0.0], [0.28, 0.96, 0.0], [0.0, 0.0, 1.0]])  # oblique in-plane rotation
    aff = np.eye(4)
    aff[:3, :3] = rot @ np.diag([1.2, 1.2, 1.5])
    aff[:3, 3] = [-12.5, 30.25, -7.0]
    src = tmp_path / "vol.nii.gz"
    nib.save(nib.Nifti1Image(data, aff), str(src))
    if as_dicom:
        write(read(src), tmp_path / "series")
        src = tmp_path / "series"
    out = tmp_path / "out.nii.gz"
    sets = ["train.max_iterations=6", "train.val_every=3", "train.batch_size=2", "train.patch_size=8",
            "model.kwargs={features: 8, growth: 4, n_blocks: 1, n_layers: 2}", "train.schedule.warmup_iterations=0",
            "inference.tile_size=20"]
    argv = [str(src), "-o", str(out), "--config", "mri_isotropic_x2", "--force", "-q"]
    for s in sets:
        argv += ["--set", s]
    code, _, err = _run(capsys, *argv)
    assert code == 0, err
    inp, res = read(src), read(out)
    assert tuple(res.shape[1:]) == tuple(2 * n for n in inp.shape[1:])
    np.testing.assert_allclose(np.asarray(res.meta["spacing"]), np.asarray(inp.meta["spacing"]) / 2, rtol=1e-5)
    # the world extent (outer voxel corners) is the input's, to 1e-6 of a voxel
    err_mm = np.abs(fov_corners(np.asarray(inp.affine), inp.shape[1:]) - fov_corners(np.asarray(res.affine), res.shape[1:]))
    assert err_mm.max() < 1e-6 * min(inp.meta["spacing"])
    rec = json.loads(Path(str(out) + ".json").read_text())
    assert rec["config"]["name"] == "mri_isotropic_x2" and not rec["fallback"]["applied"]
    assert rec["validation"]["members"][0]["source"].startswith("self-supervised")


def _paletted(path: Path) -> Path:
    labels = np.random.default_rng(0).integers(0, 5, (1, 40, 30)).astype(np.uint8)
    with rasterio.open(path, "w", driver="GTiff", width=30, height=40, count=1, dtype="uint8", crs="EPSG:32633",
                       transform=Affine(10, 0, 500000, 0, -10, 5200000)) as dst:
        dst.write(labels)
        dst.write_colormap(1, {k: (40 * k, 255 - 40 * k, 0, 255) for k in range(5)})
    return path


@pytest.mark.parametrize("how", [["--method", "cubic", "--scale", "2"], ["--config", "multiband_x2"]])
def test_a_paletted_raster_is_refused_except_by_nearest(tmp_path, capsys, how):
    """Class labels (a land-cover map with a colour table): cubic made up class 5, a fit 'super-resolved' labels."""
    src = _paletted(tmp_path / "landcover.tif")
    code, _, err = _run(capsys, str(src), "-o", str(tmp_path / "out.tif"), *how)
    assert code == 2 and "landcover.tif: a paletted raster" in err and "--method nearest" in err, err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "out.tif").exists()
    code, _, err = _run(capsys, str(src), "-o", str(tmp_path / "nn.tif"), "--method", "nearest", "--scale", "2")
    assert code == 0, err
    with rasterio.open(tmp_path / "nn.tif") as o, rasterio.open(src) as i:
        assert set(np.unique(o.read(1))) <= set(np.unique(i.read(1))) and o.colorinterp[0].name == "palette"
        assert o.colormap(1)[3] == i.colormap(1)[3]


def _label_volume(path: Path, intent: str = "label") -> Path:
    labels = np.zeros((24, 20, 8), np.uint8)
    labels[4:14, 3:12, 1:6], labels[10:20, 8:18, 3:8] = 3, 7
    img = nib.Nifti1Image(labels, np.diag([1.0, 1.0, 3.0, 1.0]))
    img.header.set_intent(intent)
    nib.save(img, str(path))
    return path


@pytest.mark.parametrize("how", [["--method", "cubic", "--scale", "1,1,3"], ["--model", "mri_isotropic_x2"]])
def test_a_nifti_label_map_is_refused_except_by_nearest(tmp_path, capsys, how):
    """A segmentation marked NIFTI_INTENT_LABEL: cubic made up classes 1-6 between 0, 3 and 7 and kept the intent."""
    src = _label_volume(tmp_path / "seg.nii.gz")
    code, _, err = _run(capsys, str(src), "-o", str(tmp_path / "out.nii.gz"), *how)
    assert code == 2 and "seg.nii.gz: a label map (NIfTI intent 'label'" in err and "--method nearest" in err, err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "out.nii.gz").exists()
    code, _, err = _run(capsys, str(src), "-o", str(tmp_path / "nn.nii.gz"), "--method", "nearest", "--scale", "1,1,3")
    assert code == 0, err
    out = nib.load(tmp_path / "nn.nii.gz")
    assert set(np.unique(np.asarray(out.dataobj)).tolist()) == {0, 3, 7} and out.header.get_intent()[0] == "label"
    assert out.shape == (24, 20, 24)


def test_an_unmarked_integer_label_map_is_written_with_a_warning(tmp_path, capsys, caplog):
    """Most segmentations carry no intent: they are upscaled as asked, and the log says what to do."""
    src = _label_volume(tmp_path / "seg.nii.gz", intent="none")
    with caplog.at_level("WARNING", logger="medsat_sr.inference"):
        code, _, err = _run(capsys, str(src), "-o", str(tmp_path / "out.nii.gz"), "--method", "cubic", "--scale", "2")
    assert code == 0, err
    assert "holds only 3 distinct values (0, 3, 7)" in caplog.text and "--method nearest" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="medsat_sr.inference"):
        _run(capsys, str(_nifti(tmp_path / "t1.nii.gz")), "-o", str(tmp_path / "t1_x2.nii.gz"), "--method", "cubic",
             "--scale", "2")
    assert "distinct values" not in caplog.text  # an image's intensities are not labels


def test_nan_voxels_stay_nan_and_do_not_spread(tmp_path, capsys):
    """A float volume with NaN where there is no data (masked maps): the output had the NaN set to 0 and
    interpolated, so the mask was lost; now the output is NaN exactly on the nearest-upsampled mask."""
    data = (np.random.default_rng(1).random((20, 18, 8)) * 100 + 50).astype(np.float32)
    data[:6], data[12:, 10:, 5:] = np.nan, np.nan
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(tmp_path / "map.nii.gz"))
    code, _, err = _run(capsys, str(tmp_path / "map.nii.gz"), "-o", str(tmp_path / "out.nii.gz"), "--method", "cubic",
                        "--scale", "2")
    assert code == 0, err
    out = np.asarray(nib.load(tmp_path / "out.nii.gz").dataobj)
    expect = np.isnan(data).repeat(2, 0).repeat(2, 1).repeat(2, 2)
    assert out.shape == expect.shape and np.array_equal(np.isnan(out), expect)
    assert np.isfinite(out[~expect]).all() and out[~expect].max() < 200


def test_an_output_that_names_the_input_is_refused_and_the_input_kept(tmp_path, capsys, monkeypatch):
    """``-o`` equal to the input (or a link to it) replaced the data with the upscaled copy."""
    src = _tif(tmp_path / "scene.tif")
    before = src.read_bytes()
    (tmp_path / "link.tif").symlink_to(src)
    monkeypatch.chdir(tmp_path)
    for inp, out in (("scene.tif", "./scene.tif"), ("link.tif", str(src))):
        code, _, err = _run(capsys, inp, "-o", out, "--method", "cubic", "--scale", "2")
        assert code == 2 and "the output would overwrite the input" in err, err
    nii = _nifti(tmp_path / "t1.nii.gz")
    code, _, err = _run(capsys, str(nii), "-o", str(nii), "--method", "cubic", "--scale", "2")
    assert code == 2 and "would overwrite the input" in err
    assert src.read_bytes() == before and not (tmp_path / "scene.tif.json").exists()


def test_a_folder_output_never_replaces_files_it_did_not_write(tmp_path, capsys):
    """A DICOM series output replaces its whole folder: a folder holding anything else (another series, notes)
    is refused and kept; an earlier run's output folder, and an empty folder, are written."""
    nii = str(_nifti(tmp_path / "t1.nii.gz"))
    other = tmp_path / "patient2"
    other.mkdir()
    (other / "IM0001.dcm").write_bytes(b"not ours")
    code, _, err = _run(capsys, nii, "-o", str(other), "--method", "cubic", "--scale", "2")
    assert code == 2 and "holds files that no earlier run wrote there (IM0001.dcm)" in err, err
    assert sorted(p.name for p in other.iterdir()) == ["IM0001.dcm"]
    out = tmp_path / "sr_series"
    out.mkdir()  # empty: fine
    for _ in range(2):  # the second run replaces the first run's series (its record says it wrote it)
        code, _, err = _run(capsys, nii, "-o", str(out), "--method", "cubic", "--scale", "2")
        assert code == 0, err
    assert len(list(out.glob("*.dcm"))) == 16

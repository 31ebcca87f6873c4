"""Tests of medsat_sr.train and `medsat-sr train`: CLI run, checkpoints, fine-tuning, GAN, budgets, resume."""

from __future__ import annotations

import csv
import json
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from medsat_sr.checkpoint import load_checkpoint
from medsat_sr.cli import main
from medsat_sr.config import load_config
from medsat_sr.errors import ModelError
from medsat_sr.image import make_raster, make_volume
from medsat_sr.slicewise import apply_slicewise
from medsat_sr.train import build_loss, build_trainer, fit

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
TRANSFORM = (10.0, 0.0, 500000.0, 0.0, -10.0, 4000000.0)

#: A tiny, fast recipe on top of multiband_x2.
TINY = [
    "model.kwargs={features: 8, n_blocks: 1}",
    "train.batch_size=4",
    "train.patch_size=16",
    "train.lr=0.002",
    "train.schedule.warmup_iterations=0",
    "train.schedule.name=constant",
    "train.schedule.min_lr=0",
    "data.val_fraction=0.25",
    "train.precision=fp32",
]


def texture(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    grids = np.meshgrid(*[np.arange(n, dtype=np.float64) for n in shape], indexing="ij")
    out = np.zeros(shape)
    for _ in range(12):
        k = rng.uniform(0.1, 0.9, len(shape))
        out += rng.uniform(0.2, 1.0) * np.sin(sum(ki * g for ki, g in zip(k, grids)) + rng.uniform(0, 6.3))
    out -= out.min()
    return (out / out.max()).astype(np.float32)


def raster(bands: int = 3, size: int = 48, seed: int = 0) -> torch.Tensor:
    data = np.stack([texture((size, size), seed + b) * 200 + 20 for b in range(bands)])
    return make_raster(data, TRANSFORM, crs=None, source_dtype="float32")


def tiny_cfg(*extra: str):  # noqa: ANN201
    return load_config("multiband_x2", [*TINY, *extra])


@pytest.fixture
def tif(tmp_path: Path) -> Path:
    from medsat_sr.io import write

    return write(raster(bands=3, size=56), tmp_path / "img.tif")


# ------------------------------------------------------------------ CLI
def test_cli_train_20_iterations(tmp_path: Path, tif: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    sets = [*TINY, "train.max_iterations=20", "train.val_every=10"]
    args = ["train", str(tif), "--config", "multiband_x2", "-o", str(run), "-q"]  # INPUT, as in the README
    for s in sets:
        args += ["--set", s]
    assert main(args) == 0
    for name in ("best.json", "best.safetensors", "last.json", "last.safetensors", "metrics.csv", "curves.png"):
        assert (run / name).is_file(), name
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    assert [int(r["iteration"]) for r in rows] == [0, 10, 20]
    first_loss, last_loss = float(rows[1]["loss"]), float(rows[-1]["loss"])
    psnr0, psnr_best = float(rows[0]["val_psnr"]), max(float(r["val_psnr"]) for r in rows)
    assert last_loss < first_loss or psnr_best > psnr0
    meta = json.loads((run / "best.json").read_text())
    for key in ("architecture", "scale", "domain", "normalisation", "band_names", "config", "metrics", "medsat_sr_version"):
        assert meta[key] is not None, key
    assert meta["metrics"]["val_psnr_cubic"] > 0 and meta["domain"] == "multiband"
    assert meta["normalisation"]["method"] == "percentile"
    model, meta2 = load_checkpoint(run / "best")
    assert meta2["architecture"]["name"] == "edsr"


def test_cli_prints_checkpoints_and_psnr(tmp_path: Path, tif: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["train", "--config", "multiband_x2", "-o", str(tmp_path / "r")]
    for s in [*TINY, "train.max_iterations=3", "train.val_every=3", f"data.inputs=[{tif}]"]:
        args += ["--set", s]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "best checkpoint" in out and "vs cubic" in out


def test_cli_dry_run_prints_resolved_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import yaml

    run = tmp_path / "dry"
    scan = tmp_path / "scan.nii.gz"
    scan.write_bytes(b"")  # a dry run checks that INPUT exists, reads nothing
    assert main(["train", str(scan), "--config", "mri_thick_slice", "-o", str(run), "--dry-run",
                 "--set", "train.max_iterations=7"]) == 0
    doc = yaml.safe_load(capsys.readouterr().out)
    assert doc["train"]["max_iterations"] == 7 and doc["domain"]["name"] == "mri"
    assert doc["data"]["inputs"] == [str(scan)]
    assert doc["model"]["name"] == "edsr"
    assert not run.exists()


def test_cli_dry_run_with_nothing_to_train_on_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--config", "mri_thick_slice", "-o", str(tmp_path / "dry"), "--dry-run"]) == 2
    assert "nothing to train on" in capsys.readouterr().err
    assert main(["train", str(tmp_path / "missing.nii.gz"), "--config", "mri_thick_slice", "-o", str(tmp_path / "d"),
                 "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "missing.nii.gz: no such file or folder" in err and len(err.strip()) <= 200 + len(str(tmp_path))
    assert not (tmp_path / "dry").exists()


def test_cli_bad_config_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--config", "multiband_x2", "-o", str(tmp_path / "x"), "--set", "train.max_iteratons=3"]) == 2
    assert "did you mean" in capsys.readouterr().err
    assert main(["train", "--config", "multiband_x2", "-o", str(tmp_path / "x")]) == 2  # no data.inputs


# ------------------------------------------------------------------ fit API and checkpoints
def test_fit_checkpoint_reloads_bit_for_bit(tmp_path: Path) -> None:
    img = raster()
    r = fit(img, tiny_cfg("train.max_iterations=6", "train.val_every=3"), run_dir=tmp_path, progress=False)
    assert r.iterations == 6 and r.stopped_by == "iterations"
    assert math.isfinite(r.val_psnr) and math.isfinite(r.val_psnr_cubic)
    assert [h["iteration"] for h in r.history] == [0, 3, 6]
    assert not r.model.training
    model, meta = load_checkpoint(r.best_path)
    x = torch.rand(2, 3, 11, 13)
    with torch.no_grad():
        assert torch.equal(model(x), r.model(x))
    assert meta["metrics"]["val_psnr"] == pytest.approx(r.val_psnr)
    assert meta["metrics"]["val_psnr_cubic"] == pytest.approx(r.val_psnr_cubic)
    assert r.metadata["normalisation"] == r.normaliser.to_dict()


def test_fit_with_progress_bar_raises_no_requires_grad_warning(capsys: pytest.CaptureFixture[str]) -> None:
    """Issue #13: the loss is detached after each step, so no consumer converts a graph-carrying tensor."""
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*requires_grad.*", category=UserWarning)
        r = fit(raster(), tiny_cfg("train.max_iterations=2", "train.val_every=2"), progress=True)
    assert r.iterations == 2 and all(math.isfinite(h["loss"]) for h in r.history[1:])


def test_fit_without_run_dir_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    r = fit(raster(), tiny_cfg("train.max_iterations=2", "train.val_every=2"), progress=False)
    assert r.run_dir is None and r.best_path is None and list(tmp_path.iterdir()) == []


def test_time_budget_stops_training(tmp_path: Path) -> None:
    cfg = tiny_cfg("train.max_iterations=1000000", "train.max_minutes=0.005", "train.val_every=50")
    r = fit(raster(), cfg, run_dir=tmp_path, progress=False)
    assert r.stopped_by == "time" and r.iterations < 1000000
    assert (tmp_path / "last.json").is_file()


def test_early_stopping(tmp_path: Path) -> None:
    cfg = tiny_cfg("train.max_iterations=200", "train.val_every=1", "train.lr=1e-9",
                   "train.early_stopping={enabled: true, patience: 2, min_delta: 1.0}")
    r = fit(raster(), cfg, progress=False)
    assert r.stopped_by == "early_stopping" and r.iterations < 200


def test_resume_continues_from_last_iteration(tmp_path: Path) -> None:
    img = raster()
    fit(img, tiny_cfg("train.max_iterations=4", "train.val_every=2"), run_dir=tmp_path, progress=False)
    state_doc = json.loads((tmp_path / "last.state.json").read_text())
    assert state_doc["iteration"] == 4
    cfg = tiny_cfg("train.max_iterations=8", "train.val_every=2")
    trainer, _, state = build_trainer(cfg, tmp_path, images=img, progress=False, resume=True)
    assert state.start_iteration == 4 and trainer.state.iteration == 4
    # the optimiser state came back (Adam moments exist before any new step)
    assert len(state.optimizer.state) > 0
    trainer.run()
    assert trainer.state.iteration == 8
    iters = [h["iteration"] for h in state.history]
    assert iters == [0, 2, 4, 6, 8]
    with pytest.raises(Exception, match="nothing to resume"):
        build_trainer(cfg, tmp_path / "empty", images=img, progress=False, resume=True)


def test_a_diverged_fit_saves_its_resume_state_and_resumes(tmp_path: Path) -> None:
    """A fit whose validation went to -inf or NaN (a diverging learning rate) wrote no resume state before: the
    JSON writer refused non-finite numbers and ``upscale --run-dir`` ended in an internal error."""
    from medsat_sr.run_folder import _save_resume_state

    img = raster()
    cfg = tiny_cfg("train.max_iterations=2", "train.val_every=2")
    fit(img, cfg, run_dir=tmp_path, progress=False)
    _, _, state = build_trainer(cfg, tmp_path, images=img, progress=False, resume=True)
    state.history.append({"iteration": 3, "loss": math.inf, "val_psnr": -math.inf, "val_ssim": math.nan,
                          "extra": np.float32(-np.inf)})
    _save_resume_state(state, 3)
    doc = json.loads((tmp_path / "last.state.json").read_text())
    assert doc["iteration"] == 3
    assert doc["history"][-1] == {"iteration": 3, "loss": None, "val_psnr": None, "val_ssim": None, "extra": None}
    _, _, again = build_trainer(cfg, tmp_path, images=img, progress=False, resume=True)
    assert again.start_iteration == 3 and again.history[-1]["val_psnr"] is None


def test_finetune_with_frozen_blocks(tmp_path: Path) -> None:
    img = raster()
    base = fit(img, tiny_cfg("train.max_iterations=3", "train.val_every=3", "model.kwargs={features: 8, n_blocks: 2}"),
               run_dir=tmp_path / "a", progress=False)
    before = {k: v.clone() for k, v in base.model.state_dict().items()}
    cfg = tiny_cfg("train.mode=finetune", f"train.init={base.best_path}", "train.freeze_blocks=1",
                   "train.max_iterations=4", "train.val_every=4", "model.kwargs={features: 8, n_blocks: 2}")
    r = fit(raster(seed=7), cfg, run_dir=tmp_path / "b", progress=False)
    after = r.model.state_dict()
    frozen = [k for k in before if k.startswith(("input_conv.", "blocks.0."))]
    trained = [k for k in before if k.startswith("blocks.1.")]
    assert frozen and trained
    assert all(torch.equal(before[k], after[k]) for k in frozen)
    assert any(not torch.equal(before[k], after[k]) for k in trained)
    assert r.metadata["task"]["frozen"]


def test_finetune_from_a_module_leaves_the_module_untouched() -> None:
    base = fit(raster(), tiny_cfg("train.max_iterations=2", "train.val_every=2", "model.kwargs={features: 8, n_blocks: 2}"),
               progress=False).model
    before = {k: v.clone() for k, v in base.state_dict().items()}
    cfg = tiny_cfg("train.mode=finetune", "train.freeze_blocks=1", "train.max_iterations=3", "train.val_every=3",
                   "model.kwargs={features: 8, n_blocks: 2}")
    r = fit(raster(seed=7), cfg, progress=False, init=base)
    assert r.model is not base
    assert all(p.requires_grad for p in base.parameters())  # nothing frozen on the caller's module
    assert all(torch.equal(before[k], v) for k, v in base.state_dict().items())
    assert any(not torch.equal(before[k], v) for k, v in r.model.state_dict().items())


def test_finetune_takes_the_first_candidate_checkpoint_that_fits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A list of checkpoints: a fixed x3 network is skipped (with why) and the x2 one starts the fit, on one set of pairs."""
    import medsat_sr.data

    x3 = fit(raster(), tiny_cfg("scale=3", "train.max_iterations=1", "train.val_every=1"), run_dir=tmp_path / "x3",
             progress=False)
    x2 = fit(raster(), tiny_cfg("train.max_iterations=1", "train.val_every=1"), run_dir=tmp_path / "x2", progress=False)
    built = []
    real = medsat_sr.data.make_training_set
    monkeypatch.setattr(medsat_sr.data, "make_training_set", lambda *a, **k: built.append(1) or real(*a, **k))
    cfg = tiny_cfg("train.max_iterations=2", "train.val_every=2")
    r = fit(raster(seed=7), cfg, progress=False, init=[str(x3.best_path), str(x2.best_path)])
    assert len(built) == 1
    task = r.metadata["task"]
    assert task["init"] == str(x2.best_path)
    (skip,) = task["init_skipped"]
    assert skip["init"] == str(x3.best_path) and "trained at scale 3x3; the input needs 2x2" in skip["why"]
    with pytest.raises(ModelError, match="no checkpoint fits the data: .*trained at scale 3x3"):
        fit(raster(seed=7), cfg, progress=False, init=[str(x3.best_path)])


def test_finetune_adapts_channels_through_cli(tmp_path: Path) -> None:
    from medsat_sr.io import write

    base = fit(raster(bands=3), tiny_cfg("train.max_iterations=2", "train.val_every=2"), run_dir=tmp_path / "a",
               progress=False)
    four = write(raster(bands=4, seed=3), tmp_path / "four.tif")
    args = ["train", "--config", "multiband_x2", "-o", str(tmp_path / "b"), "-q", "--init", str(base.best_path)]
    for s in [*TINY, "train.max_iterations=2", "train.val_every=2", f"data.inputs=[{four}]", "train.freeze_blocks=body"]:
        args += ["--set", s]
    assert main(args) == 0
    model, meta = load_checkpoint(tmp_path / "b" / "best")
    assert meta["architecture"]["kwargs"]["in_channels"] == 4 and meta["architecture"]["kwargs"]["out_channels"] == 4
    assert meta["task"]["adapted_channels"] == [3, 4]
    assert meta["config"]["train"]["mode"] == "finetune"


def test_adversarial_five_iterations(tmp_path: Path) -> None:
    cfg = tiny_cfg("train.max_iterations=5", "train.val_every=5", "train.adversarial.enabled=true",
                   "train.adversarial.weight=0.01", "train.patch_size=24", "train.precision=bf16", "train.grad_clip=1.0")
    r = fit(raster(size=64), cfg, run_dir=tmp_path, progress=False)
    assert r.iterations == 5 and math.isfinite(r.history[-1]["loss"])


def test_losses_and_bf16_path(tmp_path: Path) -> None:
    loss = build_loss([{"name": "l1", "weight": 1.0}, {"name": "charbonnier", "weight": 0.5, "eps": 1e-3},
                       {"name": "mse", "weight": 2.0}, {"name": "ssim", "weight": 0.1}], spatial_dims=2)
    x, y = torch.rand(2, 1, 16, 16), torch.rand(2, 1, 16, 16)
    v = loss(x, y)
    assert v.ndim == 0 and set(loss.last) == {"l1", "charbonnier", "mse", "ssim"}
    assert float(loss(y, y)) == pytest.approx(0.5 * 1e-3, abs=1e-4)
    cfg = tiny_cfg("train.max_iterations=3", "train.val_every=3", "train.precision=bf16",
                   "train.losses=[{name: l1}, {name: ssim, weight: 0.1}]", "train.schedule={name: cosine, min_lr: 0.0}")
    r = fit(raster(), cfg, progress=False)
    assert next(r.model.parameters()).dtype == torch.float32


# ------------------------------------------------------------------ thick slices
def test_thick_slice_fit_and_apply_slicewise(tmp_path: Path) -> None:
    data = texture((36, 40, 10), 2)[None] * 100 + 5
    vol = make_volume(data, np.diag([1.0, 1.0, 4.0, 1.0]))
    cfg = load_config("mri_thick_slice", ["model.kwargs={features: 8, n_blocks: 1}", "train.batch_size=4",
                                          "train.patch_size=16", "train.max_iterations=3", "train.val_every=3",
                                          "train.precision=fp32"])
    r = fit(vol, cfg, progress=False)
    assert r.metadata["task"]["thick_axis"] == 2 and r.metadata["scale"] == [4.0, 1.0]
    x = r.normaliser.forward(vol.as_tensor())
    out, _ = apply_slicewise(r.model, x, 2, (36, 40, 40))
    assert out.shape == (1, 36, 40, 40)
    # an untrained model is interpolation: both orientations give bicubic along the thick axis
    from medsat_sr.models import build_model

    plain = build_model("edsr", spatial_dims=2, in_channels=1, scale=(4, 1), features=8, n_blocks=1)
    got, _ = apply_slicewise(plain, x, 2, (36, 40, 40))
    planes = x[0].permute(0, 2, 1)[:, None]  # (X, 1, Z, Y)
    expect = F.interpolate(planes, size=(40, 40), mode="bicubic", align_corners=False)[:, 0].permute(0, 2, 1)
    assert torch.allclose(got[0], expect, atol=1e-5)


@pytest.mark.shared_data
@pytest.mark.slow
def test_real_naip_self_supervised_improves_on_interpolation(tmp_path: Path) -> None:
    path = SHARED / "geotiff" / "naip_4band_m_4709963_se_14_1_20180716_opengeos-data" / "m_4709963_se_14_1_20180716.tif"
    if not path.is_file():
        pytest.skip(f"shared sample data absent: {path}")
    from medsat_sr.io.geotiff import read

    img = read(path, window=((0, 160), (0, 192)))
    cfg = load_config("multiband_x2", ["model.kwargs={features: 16, n_blocks: 2}", "train.batch_size=8",
                                       "train.patch_size=32", "train.max_iterations=60", "train.val_every=30",
                                       "train.lr=0.001", "train.schedule.warmup_iterations=0", "data.val_fraction=0.25"])
    r = fit(img, cfg, run_dir=tmp_path, progress=False)
    assert r.history[-1]["val_psnr"] > r.history[0]["val_psnr"]


@pytest.mark.parametrize(("flags", "want"), [(("avx2",), "fp32"), (("avx512f", "avx512_bf16"), "bf16")])
def test_training_precision_auto_follows_the_cpu(monkeypatch: pytest.MonkeyPatch, flags: tuple[str, ...],
                                                 want: str) -> None:
    from medsat_sr import hardware

    monkeypatch.setattr(hardware, "_cpu_flags", lambda: frozenset(flags))
    _, _, state = build_trainer(tiny_cfg("train.precision=auto", "train.max_iterations=1"), None, images=raster(),
                                progress=False)
    assert state.net.precision == want
    assert state.metadata_base["task"]["precision"] == want  # the checkpoint says what it trained in


def test_shipped_configs_train_in_auto_precision() -> None:
    from medsat_sr._resources import builtin_names

    bf16 = [n for n in builtin_names("configs") if load_config(n).train.precision == "bf16"]
    assert not bf16, f"configs that force bf16 (several times slower on CPUs without it): {bf16}"

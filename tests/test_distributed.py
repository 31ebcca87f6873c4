"""`medsat-sr train` under torchrun: 2 processes, DDP with gloo on CPU.

The run must finish, write its checkpoints once (rank 0), keep the replicas'
weights identical, and report validation metrics of the *whole* validation
set (gathered across ranks): at iteration 0, before any step, they equal the
single-process run's to the last digit.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import medsat_sr.samples

MNI = Path(medsat_sr.samples.__file__).parent / "mni_icbm152_t1_2009a.nii.gz"
TINY = [
    "train.max_iterations=6", "train.val_every=3", "train.batch_size=4", "train.patch_size=16",
    "model.kwargs={features: 4, growth: 4, n_blocks: 1, n_layers: 1}", "train.precision=fp32",
    "train.schedule.warmup_iterations=0", "data.min_valid_fraction=0.0", "train.early_stopping.enabled=false",
]


@pytest.fixture
def volume(tmp_path: Path) -> Path:
    """A 32^3 crop of the packaged MNI template (real MR data)."""
    import nibabel as nib

    img = nib.load(MNI)
    path = tmp_path / "mr32.nii.gz"
    nib.save(img.slicer[50:114:2, 60:124:2, 50:114:2], path)
    return path


def history(run: Path) -> list[dict[str, str]]:
    with open(run / "metrics.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def test_single_process_is_not_distributed(monkeypatch: pytest.MonkeyPatch) -> None:
    from medsat_sr import distributed

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    ctx = distributed.init_from_env("cpu")
    assert not ctx.enabled and ctx.is_main and ctx.world_size == 1
    distributed.prepare(None, None, None, ctx)  # a no-op
    distributed.finalize(None, ctx)
    distributed.shutdown(ctx)


@pytest.mark.slow
def test_torchrun_two_processes_on_cpu(volume: Path, tmp_path: Path) -> None:
    sets = [a for item in [f"data.inputs=[{volume}]", *TINY] for a in ("--set", item)]
    run = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    p = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         "-m", "medsat_sr", "train", "--config", "mri_isotropic_x2", "-o", str(run), *sets],
        capture_output=True, text=True, timeout=600, env=env,
    )
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert "Traceback" not in p.stderr
    # rank 0 printed, rank 1 did not
    assert p.stdout.count("best checkpoint:") == 1, p.stdout
    best = json.loads((run / "best.json").read_text())
    ddp = best["task"]["ddp"]
    assert ddp["world_size"] == 2 and ddp["backend"] == "gloo" and ddp["replicas_identical"] is True
    assert ddp["global_batch"] == 4 and ddp["batch_per_rank"] == 2
    assert best["metrics"]["iteration"] == 6 and best["metrics"]["stopped_by"] == "iterations"
    rows = history(run)
    assert [int(r["iteration"]) for r in rows] == [0, 3, 6]
    assert all(r["loss"] for r in rows[1:])
    assert sorted(q.name for q in run.iterdir() if not q.name.startswith(".")) == sorted(
        ["best.json", "best.safetensors", "last.json", "last.safetensors", "last.optim.safetensors",
         "last.state.json", "metrics.csv", "curves.png"]
    )

    # the same job in one process: same initial weights, same validation tiles, so the iteration-0
    # validation must agree exactly if the ranks' metric buffers were gathered
    from medsat_sr.config import load_config
    from medsat_sr.train import train

    single = tmp_path / "single"
    train(load_config("mri_isotropic_x2", [f"data.inputs=[{volume}]", *TINY]), single, progress=False)
    one = history(single)
    assert rows[0]["val_psnr"] == one[0]["val_psnr"] and rows[0]["val_ssim"] == one[0]["val_ssim"]
    # and the trained DDP model loads and upscales like any checkpoint
    from medsat_sr.checkpoint import load_checkpoint

    model, meta = load_checkpoint(run / "best")
    assert meta["task"]["ddp"]["world_size"] == 2 and sum(p.numel() for p in model.parameters()) > 0

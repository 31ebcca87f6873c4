"""A model applied with no fitting is scored on the input (``medsat_sr.inference.scoring``).

A checkpoint given by path used to be judged by the validation its training
recorded: the same numbers for every input, measured on its training data.
It is now scored like a shipped model, on the pairs a self-supervised fit of
its own config would validate on. The input is a crop of the packaged MNI T1
template made 4 mm thick (real anatomy; no ../shared data needed).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from helpers import run_cli as cli

from medsat_sr import zoo
from medsat_sr.checkpoint import load_checkpoint, save_checkpoint
from medsat_sr.errors import ConfigError
from medsat_sr.inference import upscale
from medsat_sr.inference.scoring import serving_config
from medsat_sr.models import build_model

MNI_SAMPLE = Path(__file__).resolve().parents[1] / "medsat_sr" / "samples" / "mni_icbm152_t1_2009a.nii.gz"
#: What a flattering training record claims: far above cubic.
FLATTERING = {"val_psnr": 60.0, "val_psnr_cubic": 30.0}


@pytest.fixture(scope="module")
def thick(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 48 x 56 x 48 mm block of the MNI T1 at 1 x 1 x 4 mm (slab averages of 4 slices)."""
    img = nib.load(str(MNI_SAMPLE))
    block = np.asarray(img.dataobj[70:118, 90:146, 60:108], dtype=np.float32)
    slabs = block.reshape(48, 56, 12, 4).mean(axis=3)
    aff = np.array(img.affine, dtype=np.float64)
    aff[:3, :3] = aff[:3, :3] @ np.diag([1.0, 1.0, 4.0])
    path = tmp_path_factory.mktemp("scoring") / "thick.nii.gz"
    nib.save(nib.Nifti1Image(slabs, aff), str(path))
    return path


def _untrained_x4(tmp_path: Path, **changes: object) -> Path:
    """A random ``x4`` slice network under the shipped ``x4`` model's metadata, its metrics made flattering."""
    _, meta = load_checkpoint(zoo.checkpoint("mri_thick_slice_x4"))
    meta = {k: v for k, v in meta.items() if k not in ("architecture", "weights")}
    meta["metrics"] = {**meta["metrics"], **FLATTERING}
    meta.update(changes)
    torch.manual_seed(0)
    net = build_model("edsr", spatial_dims=2, in_channels=1, out_channels=1, scale=[4, 1], features=8, n_blocks=1)
    return save_checkpoint(tmp_path / "untrained", net, meta)


def test_serving_config_rebuilds_each_shipped_models_training_config_as_self_supervised() -> None:
    for name in zoo.names():
        _, meta = load_checkpoint(zoo.checkpoint(name))
        cfg = serving_config(meta)
        assert cfg.train.mode == "self_supervised" and not cfg.data.inputs and cfg.data.factors is None, name
        assert cfg.profile.degradation.model == meta["config"]["domain"]["degradation"]["model"], name
        assert cfg.model.kwargs == {k: v for k, v in meta["config"]["model"]["kwargs"].items()}, name
    _, meta = load_checkpoint(zoo.checkpoint("mri_thick_slice"))
    assert serving_config(meta, [1.0, 2.5, 1.0]).scale == [1.0, 2.5, 1.0]


def test_serving_config_refuses_a_checkpoint_without_a_loadable_config() -> None:
    with pytest.raises(ConfigError, match="records no training config"):
        serving_config({"config": "mri_thick_slice"})
    _, meta = load_checkpoint(zoo.checkpoint("multiband_x2"))
    meta["config"]["domain"]["blur_of_a_later_version"] = {"sigma": 1.0}
    with pytest.raises(ConfigError, match="blur_of_a_later_version: unknown key"):
        serving_config(meta)


def test_serving_config_loads_a_profile_this_install_does_not_know_from_the_checkpoint() -> None:
    """A domain of the user's own (a YAML file not at hand) is rebuilt from the profile the checkpoint records."""
    _, meta = load_checkpoint(zoo.checkpoint("multiband_x2"))
    dom = meta["config"]["domain"]
    dom["name"] = "our_aerial_camera"
    dom["degradation"]["psf"]["mtf_nyquist"] = 0.17
    cfg = serving_config(meta)
    assert cfg.profile.name == "our_aerial_camera" and cfg.train.mode == "self_supervised"
    assert cfg.profile.degradation.psf.mtf_nyquist == pytest.approx(0.17)


def test_a_checkpoint_by_path_that_loses_on_the_input_falls_back_whatever_its_training_claims(
    thick: Path, tmp_path: Path
) -> None:
    ckpt = _untrained_x4(tmp_path)
    out = tmp_path / "out.nii.gz"
    code, stdout, err = cli("upscale", str(thick), "--model", str(ckpt), "-o", str(out))
    assert code == 0, err
    rec = json.loads(out.with_name(out.name + ".json").read_text())
    d = rec["decision"]
    assert f"model {str(ckpt)!r} (no fitting) on the input's own held-out split" in d["source"], d
    assert d["model_score"] < d["classical_score"] and not d["use_model"] and rec["method"] != "model", d
    assert d["model_score"] != FLATTERING["val_psnr"] and "score_on_input" in rec["timings"]
    verdict = [ln for ln in stdout.splitlines() if ln.startswith("verdict:")]
    assert len(verdict) == 1 and "on held-out pixels" in verdict[0] and "training's" not in verdict[0], stdout
    assert nib.load(str(out)).shape == (48, 56, 48)


def test_a_checkpoint_trained_on_a_users_own_profile_is_scored_on_the_input(thick: Path, tmp_path: Path) -> None:
    """Its domain was a YAML file of the user's; the profile recorded in the checkpoint makes the pairs."""
    _, meta = load_checkpoint(zoo.checkpoint("mri_thick_slice_x4"))
    cfg = json.loads(json.dumps(meta["config"]))
    cfg["domain"]["name"] = "our_scanner_t1"
    ckpt = _untrained_x4(tmp_path, config=cfg)
    out = tmp_path / "out.nii.gz"
    code, stdout, err = cli("upscale", str(thick), "--model", str(ckpt), "-o", str(out))
    assert code == 0, err
    d = json.loads(out.with_name(out.name + ".json").read_text())["decision"]
    assert "(no fitting) on the input's own held-out split" in d["source"] and not d["use_model"], d
    assert "cannot be scored" not in err


def test_a_good_checkpoint_by_path_is_kept_on_its_score_on_the_input(thick: Path, tmp_path: Path) -> None:
    model, meta = load_checkpoint(zoo.checkpoint("mri_thick_slice_x4"))
    meta = {k: v for k, v in meta.items() if k not in ("architecture", "weights")}
    ckpt = save_checkpoint(tmp_path / "copy", model, meta)
    res = upscale(str(thick), model=str(ckpt), output=tmp_path / "o.nii.gz", progress=False)
    d = res.decision
    assert d.use_model and f"model {str(ckpt)!r} (no fitting)" in d.source, d
    assert d.model_score > d.classical_score and d.model_score != meta["metrics"]["val_psnr"]


def test_a_checkpoint_whose_config_no_longer_loads_keeps_its_training_scores_and_says_so(
    thick: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _, meta = load_checkpoint(zoo.checkpoint("mri_thick_slice_x4"))
    cfg = json.loads(json.dumps(meta["config"]))
    cfg["domain"]["a_domain_key_from_elsewhere"] = 1
    ckpt = _untrained_x4(tmp_path, config=cfg)
    out = tmp_path / "out.nii.gz"
    with caplog.at_level(logging.WARNING, logger="medsat_sr.inference"):
        code, stdout, err = cli("upscale", str(thick), "--model", str(ckpt), "-o", str(out))
    assert code == 0, err
    assert any("cannot be scored on this input" in r.getMessage() and "a_domain_key_from_elsewhere" in r.getMessage()
               for r in caplog.records), caplog.text
    d = json.loads(out.with_name(out.name + ".json").read_text())["decision"]
    assert d["source"] == "checkpoint metrics" and d["use_model"], d
    verdict = [ln for ln in stdout.splitlines() if ln.startswith("verdict:")]
    assert "on its training's held-out data, not this input's" in verdict[0], stdout


def test_batch_scores_a_checkpoint_by_path_on_each_input(thick: Path, tmp_path: Path) -> None:
    """A batch loads the checkpoint once per process and still scores it on every input."""
    ckpt = _untrained_x4(tmp_path)
    inputs = tmp_path / "in"
    inputs.mkdir()
    for name in ("a.nii.gz", "b.nii.gz"):
        (inputs / name).write_bytes(thick.read_bytes())
    code, stdout, err = cli("batch", str(inputs / "*.nii.gz"), "-o", str(tmp_path / "out"), "--model", str(ckpt))
    assert code == 0, err
    for name in ("a", "b"):
        rec = json.loads((tmp_path / "out" / f"{name}_sr.nii.gz.json").read_text())
        d = rec["decision"]
        assert f"model {str(ckpt)!r} (no fitting) on the input's own held-out split" in d["source"], d
        assert not d["use_model"] and d["model_score"] < d["classical_score"], d
    verdicts = [ln for ln in stdout.splitlines() if ln.startswith("verdict:")]
    assert len(verdicts) == 2 and all("training's" not in v for v in verdicts), stdout

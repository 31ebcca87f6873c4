"""A shipped model scored on a file it was trained on says so (``medsat_sr.zoo.provenance``).

Each shipped model's card lists the files it was trained on (name, size,
sha256). A run or an evaluation whose input is one of them reports a
held-out score that is not independent of the model's training; the verdict
line, the record and ``evaluate`` say so.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from helpers import run_cli as cli

from medsat_sr import zoo
from medsat_sr.zoo.provenance import file_ids, listed_files, overlap_note, trained_on

SAMPLE = Path(__file__).resolve().parents[1] / "medsat_sr" / "samples" / "rgbn_aerial_5m.tif"
NAIP = "geotiff/naip_4band_m_4709963_se_14_1_20180716_opengeos-data/m_4709963_se_14_1_20180716.tif"


def _card_listing(path: Path) -> dict:
    return {"data": {"sources": [{"file": path.name, "files": file_ids([path])}]}}


def test_trained_on_finds_the_file_itself_and_in_a_folder_but_not_a_changed_copy(tmp_path: Path) -> None:
    seen = tmp_path / "seen.tif"
    shutil.copy(SAMPLE, seen)
    card = listed_files(_card_listing(seen))
    folder = tmp_path / "bands"
    (folder / "sub").mkdir(parents=True)
    shutil.copy(SAMPLE, folder / "sub" / "B05.tif")
    (folder / "B06.tif").write_bytes(b"other")
    changed = tmp_path / "changed.tif"
    data = bytearray(SAMPLE.read_bytes())
    data[-1] ^= 1  # same size, other content
    changed.write_bytes(bytes(data))
    assert trained_on(card, seen) == ["seen.tif"]
    assert trained_on(card, folder) == ["B05.tif"]
    assert trained_on(card, changed) == [] and trained_on(card, tmp_path / "absent.tif") == []
    assert trained_on(listed_files({"data": {"sources": [{"file": "x"}]}}), seen) == []  # a card that lists no files


def test_every_shipped_card_lists_the_files_it_was_trained_on() -> None:
    for name in zoo.names():
        sources = zoo.card(name)["data"]["sources"]
        files = [f for s in sources for f in s.get("files") or []]
        assert files and all(f["bytes"] > 0 and len(f["sha256"]) == 64 for f in files), name
    s2 = {f["name"] for f in zoo.card("sentinel2_20m_to_10m")["data"]["sources"][0]["files"]}
    assert "B05.tif" in s2 and "B01.tif" not in s2  # the 60 m bands were not read


def test_a_run_on_a_shipped_models_training_file_cautions_in_its_verdict(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = tmp_path / "seen.tif"
    shutil.copy(SAMPLE, seen)
    real = zoo.card
    monkeypatch.setattr(zoo, "card", lambda name: {**real(name), **_card_listing(seen)} if name == "multiband_x2"
                        else real(name))
    out = tmp_path / "sr.tif"
    code, stdout, err = cli("upscale", str(seen), "--model", "multiband_x2", "-o", str(out))
    assert code == 0, err
    verdict = [ln for ln in stdout.splitlines() if ln.startswith("verdict:")][0]
    assert "caution: shipped model 'multiband_x2' was trained on this input (seen.tif)" in verdict, verdict
    reason = json.loads(out.with_name(out.name + ".json").read_text())["decision"]["reason"]
    assert "Training data: shipped model 'multiband_x2' was trained on this input (seen.tif): a score" in reason
    shutil.copy(SAMPLE, tmp_path / "renamed.tif")  # found by content, whatever its name
    code, stdout, err = cli("upscale", str(tmp_path / "renamed.tif"), "--model", "multiband_x2", "-o",
                            str(tmp_path / "renamed_sr.tif"))
    assert code == 0 and "was trained on this input (renamed.tif)" in stdout, stdout
    monkeypatch.setattr(zoo, "card", real)  # the real card lists the NAIP scene, not this sample
    code, stdout, err = cli("upscale", str(seen), "--model", "multiband_x2", "-o", str(tmp_path / "other.tif"))
    assert code == 0 and "trained on this input" not in stdout, stdout


def test_evaluate_notes_a_reference_the_model_was_trained_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen = tmp_path / "seen.tif"
    shutil.copy(SAMPLE, seen)
    real = zoo.card
    monkeypatch.setattr(zoo, "card", lambda name: {**real(name), **_card_listing(seen)} if name == "multiband_x2"
                        else real(name))
    code, stdout, err = cli("evaluate", str(seen), "--config", "multiband_x2", "--model", "multiband_x2",
                            "-o", str(tmp_path / "rep"), "--no-figures")
    assert code == 0, err
    assert "note: shipped model 'multiband_x2' was trained on this input (seen.tif)" in stdout, stdout
    methods = json.loads((tmp_path / "rep" / "metrics.json").read_text())["files"][0]["methods"]
    noted = [m for m, r in methods.items() if r.get("training_overlap")]
    assert len(noted) == 1 and "cubic" not in noted, methods.keys()


def test_the_real_training_scene_is_recognised_and_the_card_says_which_part_was_seen(shared_data: Path) -> None:
    note, caution = overlap_note(["multiband_x2"], shared_data / NAIP)
    assert caution == ("shipped model 'multiband_x2' was trained on this input (m_4709963_se_14_1_20180716.tif): "
                       "a score on what it saw is not independent of its training")
    assert "; its card: NAIP left half [724, 466] (columns [0, 466))" in note  # evaluate scores the right half
    assert overlap_note(["mri_thick_slice_x4", "multiband_x2"], shared_data / "geotiff/landsat7_rgb_rasterio") is None


def test_a_checkpoint_of_the_users_own_names_its_training_files_and_a_run_on_one_says_so(tmp_path: Path) -> None:
    """`medsat-sr train` records the files it read; upscale and evaluate on one of them (any name) say so."""
    scene = tmp_path / "scene.tif"
    shutil.copy(SAMPLE, scene)
    tiny = ["--set", "model.kwargs={features: 8, n_blocks: 1}", "--set", "train.max_iterations=2",
            "--set", "train.val_every=2"]
    code, _, err = cli("train", str(scene), "-o", str(tmp_path / "run"), "--config", "multiband_x2", *tiny, "-q")
    assert code == 0, err
    meta = json.loads((tmp_path / "run" / "best.json").read_text())
    assert meta["training_files"] == file_ids([scene])
    again = tmp_path / "again.tif"
    shutil.copy(SAMPLE, again)
    ckpt = str(tmp_path / "run" / "best")
    out = tmp_path / "sr.tif"
    code, stdout, err = cli("upscale", str(again), "--model", ckpt, "-o", str(out), "--force")
    assert code == 0, err
    verdict = [ln for ln in stdout.splitlines() if ln.startswith("verdict:")][0]
    assert f"caution: checkpoint {ckpt!r} was trained on this input (again.tif)" in verdict, verdict
    code, stdout, err = cli("evaluate", str(again), "--config", "multiband_x2", "--model", ckpt,
                            "-o", str(tmp_path / "rep"), "--no-figures")
    assert code == 0 and f"note: checkpoint {ckpt!r} was trained on this input (again.tif)" in stdout, stdout

"""Files that would run code when loaded naively: malicious pickles and YAML with Python tags.

Each is refused with a medsat_sr error, and the proof that no code ran is
that the file the payload would create never appears.
"""

from __future__ import annotations

import io
import pickle
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from corpus import base_raster, base_volume  # noqa: E402

from medsat_sr.cli import main  # noqa: E402
from medsat_sr.errors import ConfigError, MedsatError, ModelError  # noqa: E402


class _Payload:
    """Unpickling this calls ``open(marker, "w")``: the marker file appears if any pickle reader runs."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.marker), "w"))


def evil_pickles(folder: Path, marker: Path) -> dict[str, Path]:
    """Pickles under every name a checkpoint could have: .pt/.pth/.ckpt/.pkl, torch's zip, and a fake .safetensors."""
    folder.mkdir(parents=True, exist_ok=True)
    blob = pickle.dumps({"state_dict": _Payload(marker)}, protocol=4)
    out: dict[str, Path] = {}
    for suffix in (".pt", ".pth", ".ckpt", ".pkl", ".bin"):
        p = folder / f"evil{suffix}"
        p.write_bytes(blob)
        out[suffix] = p
    z = folder / "torch_zip.pt"
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:  # the layout of torch.save: archive/data.pkl
        zf.writestr("archive/data.pkl", blob)
    z.write_bytes(buf.getvalue())
    out["torch zip"] = z
    fake = folder / "fake.safetensors"  # a pickle under the safetensors name, with a plausible JSON next to it
    fake.write_bytes(blob)
    (folder / "fake.json").write_text(
        '{"format": "medsat_sr.checkpoint", "format_version": 1, "architecture": {"name": "edsr", "kwargs": {}}, '
        '"weights": {"file": "fake.safetensors", "sha256": "0"}}'
    )
    out["pickle as safetensors"] = folder / "fake"
    noext = folder / "model"
    noext.write_bytes(blob)
    out["no suffix"] = noext
    return out


PAYLOAD_TAGS = [
    "!!python/object/apply:builtins.open [{marker}, w]",
    "!!python/object/new:builtins.open [{marker}, w]",
    "!!python/name:os.system",
    "!!python/object/apply:os.system [touch {marker}]",
    "!python/object/apply:os.system [touch {marker}]",
]


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    return tmp_path / "CODE_RAN"


# ------------------------------------------------------------------ pickles
def test_pickled_checkpoints_are_refused_unopened(tmp_path: Path, marker: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from medsat_sr.checkpoint import load_checkpoint

    nii, _ = base_volume(tmp_path / "base")
    tile = base_raster(tmp_path / "base", size=16)
    out = tmp_path / "out"
    out.mkdir()
    for what, ckpt in evil_pickles(tmp_path / "ckpts", marker).items():
        with pytest.raises(MedsatError) as exc:
            load_checkpoint(ckpt)
        assert isinstance(exc.value, ModelError), (what, exc.value)
        assert "pickle" in str(exc.value) or "safetensors" in str(exc.value), (what, exc.value)
        for argv in (
            ["upscale", str(nii), "-o", str(out / "x.nii.gz"), "--model", str(ckpt)],
            ["batch", str(tile), "-o", str(out / "batch"), "--model", str(ckpt)],
        ):
            code = main(argv)
            err = capsys.readouterr().err
            assert code == 2, (what, argv[0], err)
            assert err.startswith("medsat-sr: error: ") and "Traceback" not in err, (what, err)
            assert "safetensors" in err, (what, err)
        assert not marker.exists(), f"{what}: the pickle ran"
    assert not any(out.rglob("*")), list(out.rglob("*"))


# ------------------------------------------------------------------ YAML
def _config_with(tmp_path: Path, marker: Path, tag: str, where: str) -> Path:
    value = tag.format(marker=marker)
    body = {
        "top": f"name: evil\ndomain: mri\nscale: 2\nevil: {value}\n",
        "value": f"name: evil\ndomain: mri\nscale: 2\ntrain:\n  lr: {value}\n",
        "document": f"{value}\n",
    }[where]
    p = tmp_path / f"evil_{where}_{abs(hash(tag))}.yaml"
    p.write_text(body)
    return p


@pytest.mark.parametrize("where", ["top", "value", "document"])
@pytest.mark.parametrize("tag", PAYLOAD_TAGS)
def test_yaml_with_python_tags_is_refused(tag: str, where: str, tmp_path: Path, marker: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from medsat_sr.config import load_config

    cfg = _config_with(tmp_path, marker, tag, where)
    with pytest.raises(ConfigError) as exc:
        load_config(cfg)
    assert str(cfg) in str(exc.value)
    nii, _ = base_volume(tmp_path / "base")
    for argv in (
        ["upscale", str(nii), "-o", str(tmp_path / "x.nii.gz"), "--config", str(cfg)],
        ["batch", str(nii), "-o", str(tmp_path / "batch"), "--config", str(cfg), "--method", "cubic"],
        ["train", "--config", str(cfg), "-o", str(tmp_path / "run"), "--dry-run"],
    ):
        code = main(argv)
        err = capsys.readouterr().err
        assert code == 2 and err.startswith("medsat-sr: error: ") and "Traceback" not in err, (argv[0], err)
        assert str(cfg) in err and ("tag" in err or "refused" in err or "unsafe" in err), (argv[0], err)
    assert not marker.exists(), "a YAML tag ran code"
    assert not (tmp_path / "x.nii.gz").exists() and not (tmp_path / "batch").exists() and not (tmp_path / "run").exists()


def test_domain_profile_with_python_tags_is_refused(tmp_path: Path, marker: Path) -> None:
    from medsat_sr.config import load_config

    dom = tmp_path / "evil_domain.yaml"
    dom.write_text(f"name: evil\nkind: volume\nnormalisation: !!python/object/apply:builtins.open [{marker}, w]\n")
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(f"name: c\ndomain: {dom}\nscale: 2\n")
    with pytest.raises(ConfigError):
        load_config(cfg)
    assert not marker.exists()


@pytest.mark.parametrize("tag", PAYLOAD_TAGS[:2])
def test_python_tags_in_overrides_and_manifests_are_refused(tag: str, tmp_path: Path, marker: Path, capsys: pytest.CaptureFixture[str]) -> None:
    value = tag.format(marker=marker)
    nii, _ = base_volume(tmp_path / "base")
    # --set
    code = main(["upscale", str(nii), "-o", str(tmp_path / "x.nii.gz"), "--config", "mri_isotropic_x2", "--set", f"train.lr={value}"])
    err = capsys.readouterr().err
    assert code == 2 and "refused" in err and "Traceback" not in err
    # a manifest cell: that row fails alone, with the refusal recorded
    man = tmp_path / "m.csv"
    man.write_text(f'input,train.lr\n{nii},"{value}"\n')
    code = main(["batch", "--manifest", str(man), "-o", str(tmp_path / "b"), "--config", "mri_isotropic_x2", "--method", "cubic", "-q"])
    err = capsys.readouterr().err
    assert code == 4 and "refused" in err and "Traceback" not in err
    assert not marker.exists()

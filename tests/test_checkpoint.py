"""Tests of medsat_sr.checkpoint: safetensors + JSON round trips, and refusing pickles."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import zipfile
from pathlib import Path

import pytest
import torch
from torch import nn

from medsat_sr.checkpoint import (
    FORMAT,
    checkpoint_paths,
    load_checkpoint,
    model_hash,
    read_metadata,
    save_checkpoint,
)
from medsat_sr.errors import DataError, ModelError

try:  # prefer the real architectures; a tiny local net keeps these tests independent of them
    from medsat_sr.models import build_model as _build_model
except Exception:  # noqa: BLE001
    _build_model = None


class TinyNet(nn.Module):
    """A stand-in generator with the ``config`` contract of medsat_sr models."""

    def __init__(self, in_channels: int = 1, features: int = 4) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, features, 3, padding=1)
        self.out = nn.Conv2d(features, in_channels * 4, 3, padding=1)
        self.shuffle = nn.PixelShuffle(2)
        self.config = {"name": "tiny", "kwargs": {"in_channels": in_channels, "features": features}}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shuffle(self.out(torch.relu(self.conv(x))))


def tiny_build(name: str, **kwargs) -> nn.Module:
    if name == "tiny":
        return TinyNet(**kwargs)
    if _build_model is None:
        raise ModelError(f"unknown model {name!r}")
    return _build_model(name, **kwargs)


def make_model(spatial_dims: int = 2, scale=2) -> nn.Module:
    torch.manual_seed(0)
    if _build_model is not None:
        model = _build_model(
            "edsr", spatial_dims=spatial_dims, in_channels=1, scale=scale, features=8, n_blocks=2
        )
    else:
        model = TinyNet()
    with torch.no_grad():  # non-trivial weights (the real output conv starts at zero)
        for p in model.parameters():
            p.normal_(0.0, 0.1)
    return model.eval()


METADATA = {
    "scale": [2, 2],
    "domain": "mri",
    "normalisation": {"method": "percentile", "low": 12.5, "high": 873.0},
    "band_names": ["T1"],
    "config": {"train": {"mode": "self_supervised", "max_iterations": 10}},
    "metrics": {"val_psnr": 31.2, "cubic_psnr": 29.8},
}


# ----------------------------------------------------------------- round trip
@pytest.mark.parametrize("name_as", ["stem", ".json", ".safetensors"])
def test_round_trip_is_bit_exact(tmp_path, name_as):
    model = make_model()
    meta_path = save_checkpoint(tmp_path / "best", model, METADATA)
    assert meta_path == tmp_path / "best.json"
    assert (tmp_path / "best.safetensors").is_file()
    arg = {"stem": tmp_path / "best", ".json": meta_path, ".safetensors": tmp_path / "best.safetensors"}[
        name_as
    ]
    loaded, meta = load_checkpoint(arg, build=tiny_build)
    assert not loaded.training
    x = torch.rand(2, 1, 17, 13, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    for key, value in model.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key])


@pytest.mark.skipif(_build_model is None, reason="medsat_sr.models is not importable")
def test_round_trip_3d_anisotropic_with_the_default_builder(tmp_path):
    model = make_model(spatial_dims=3, scale=(1, 1, 2.5))
    save_checkpoint(tmp_path / "vol", model, {"scale": [1, 1, 2.5]})
    loaded, meta = load_checkpoint(tmp_path / "vol")  # medsat_sr.models.build_model
    assert meta["architecture"]["name"] == "edsr"
    x = torch.rand(1, 1, 9, 10, 7, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))


def test_metadata_has_the_required_fields(tmp_path):
    from medsat_sr import __version__

    model = make_model()
    save_checkpoint(tmp_path / "ck", model, {**METADATA, "note": Path("x/y"), "step": torch.tensor(5)})
    meta = json.loads((tmp_path / "ck.json").read_text())
    assert meta["format"] == FORMAT and meta["format_version"] == 1
    assert meta["architecture"]["name"] in ("edsr", "tiny")
    assert meta["architecture"]["kwargs"] == model.config["kwargs"]
    for key in ("scale", "domain", "normalisation", "band_names", "config", "metrics"):
        assert meta[key] == json.loads(json.dumps(METADATA[key]))
    assert meta["medsat_sr_version"] == __version__
    assert meta["torch_version"]
    assert meta["created"].endswith("Z")
    assert meta["num_parameters"] == sum(p.numel() for p in model.parameters())
    digest = hashlib.sha256((tmp_path / "ck.safetensors").read_bytes()).hexdigest()
    assert meta["weights"] == {
        "file": "ck.safetensors",
        "sha256": digest,
        "bytes": (tmp_path / "ck.safetensors").stat().st_size,
    }
    assert meta["note"] == "x/y" and meta["step"] == 5
    assert read_metadata(tmp_path / "ck") == meta


def test_missing_standard_fields_are_null(tmp_path):
    save_checkpoint(tmp_path / "ck", make_model(), {})
    meta = read_metadata(tmp_path / "ck.json")
    for key in ("scale", "domain", "normalisation", "band_names", "config", "metrics"):
        assert key in meta and meta[key] is None


def test_a_jobconfig_is_stored_resolved(tmp_path):
    from medsat_sr.config import load_config

    cfg = load_config("mri_thick_slice")
    save_checkpoint(tmp_path / "ck", make_model(), {"config": cfg, "domain": cfg.profile})
    meta = read_metadata(tmp_path / "ck")
    assert meta["config"] == json.loads(json.dumps(cfg.resolved()))
    assert meta["domain"]["name"] == "mri"


def test_model_hash(tmp_path):
    save_checkpoint(tmp_path / "ck", make_model(), METADATA)
    digest = hashlib.sha256((tmp_path / "ck.safetensors").read_bytes()).hexdigest()
    for form in ("ck", "ck.json", "ck.safetensors"):
        assert model_hash(tmp_path / form) == digest
    with pytest.raises(DataError):
        model_hash(tmp_path / "nope")


def test_save_is_atomic_and_overwrites(tmp_path):
    save_checkpoint(tmp_path / "ck", make_model(), METADATA)
    first = model_hash(tmp_path / "ck")
    model = make_model()
    with torch.no_grad():
        next(model.parameters()).add_(1.0)
    save_checkpoint(tmp_path / "ck.safetensors", model, METADATA)
    assert model_hash(tmp_path / "ck") != first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck.json", "ck.safetensors"]  # no temporaries
    load_checkpoint(tmp_path / "ck", build=tiny_build)


def test_checkpoint_paths():
    assert checkpoint_paths("run/best") == (Path("run/best.safetensors"), Path("run/best.json"))
    assert checkpoint_paths("run/best.json") == (Path("run/best.safetensors"), Path("run/best.json"))
    assert checkpoint_paths("run/best.safetensors") == (Path("run/best.safetensors"), Path("run/best.json"))
    assert checkpoint_paths("run/model.v2") == (Path("run/model.v2.safetensors"), Path("run/model.v2.json"))


def test_tied_weights_are_saved(tmp_path):
    model = TinyNet()
    model.extra = model.conv  # the same parameters under two names
    save_checkpoint(tmp_path / "ck", model, {})
    loaded, _ = load_checkpoint(tmp_path / "ck", build=lambda name, **kw: _tied(TinyNet(**kw)))
    assert torch.equal(loaded.extra.weight, model.conv.weight)


def _tied(m: nn.Module) -> nn.Module:
    m.extra = m.conv
    return m


# ----------------------------------------------------------------- what save refuses
def test_model_without_architecture_needs_it_in_metadata(tmp_path):
    net = nn.Linear(3, 2)
    with pytest.raises(ModelError, match="metadata\\['architecture'\\]"):
        save_checkpoint(tmp_path / "ck", net, {})
    save_checkpoint(
        tmp_path / "ck",
        net,
        {"architecture": {"name": "linear", "kwargs": {"in_features": 3, "out_features": 2}}},
    )
    loaded, meta = load_checkpoint(tmp_path / "ck", build=lambda name, **kw: nn.Linear(**kw))
    assert torch.equal(loaded.weight, net.weight)


def test_metadata_must_be_json(tmp_path):
    with pytest.raises(ModelError, match="not JSON-serialisable"):
        save_checkpoint(tmp_path / "ck", make_model(), {"metrics": {"f": object()}})
    assert not list(tmp_path.iterdir())


# ----------------------------------------------------------------- no pickles
class Evil:
    """Unpickling this creates the marker file (a stand-in for arbitrary code)."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_the_payload_is_real(tmp_path):
    """Sanity check of the test payload: a plain unpickle does run it."""
    marker = tmp_path / "ran"
    pickle.loads(pickle.dumps(Evil(marker)))
    assert marker.exists()


@pytest.mark.parametrize(
    "name", ["evil.pt", "evil.pth", "evil.ckpt", "evil.pkl", "evil.bin", "evil", "evil.safetensors"]
)
def test_malicious_pickle_is_refused_without_running(tmp_path, name):
    marker = tmp_path / "PWNED"
    path = tmp_path / name
    path.write_bytes(pickle.dumps({"state_dict": Evil(marker)}, protocol=4))
    with pytest.raises(ModelError, match="pickle") as info:
        load_checkpoint(path, build=tiny_build)
    assert "only safetensors + JSON checkpoints" in str(info.value)
    with pytest.raises(ModelError):
        read_metadata(path)
    assert not marker.exists()


def test_pickle_renamed_to_safetensors_next_to_valid_json_is_refused(tmp_path):
    marker = tmp_path / "PWNED"
    save_checkpoint(tmp_path / "ck", make_model(), METADATA)
    payload = pickle.dumps(Evil(marker), protocol=2)
    (tmp_path / "ck.safetensors").write_bytes(payload)
    meta = json.loads((tmp_path / "ck.json").read_text())
    meta["weights"]["sha256"] = hashlib.sha256(payload).hexdigest()  # even with a matching hash
    (tmp_path / "ck.json").write_text(json.dumps(meta))
    with pytest.raises(ModelError, match="pickle"):
        load_checkpoint(tmp_path / "ck", build=tiny_build)
    assert not marker.exists()


def test_torch_save_file_is_refused_without_running(tmp_path):
    marker = tmp_path / "PWNED"
    path = tmp_path / "model.pt"
    torch.save({"weight": torch.zeros(2), "evil": Evil(marker)}, path)
    assert zipfile.is_zipfile(path)
    with pytest.raises(ModelError, match="torch.save"):
        load_checkpoint(path, build=tiny_build)
    assert not marker.exists()
    # and a plain state dict saved by torch.save is refused too (convert it yourself)
    torch.save(make_model().state_dict(), tmp_path / "plain.pth")
    with pytest.raises(ModelError, match="only safetensors"):
        load_checkpoint(tmp_path / "plain.pth", build=tiny_build)


# ----------------------------------------------------------------- damaged checkpoints
def test_tampered_weights_fail_the_hash(tmp_path):
    save_checkpoint(tmp_path / "ck", make_model(), METADATA)
    w = tmp_path / "ck.safetensors"
    data = bytearray(w.read_bytes())
    data[-1] ^= 0xFF  # flip bits of the last tensor's data, keep the framing
    w.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="sha256"):
        load_checkpoint(tmp_path / "ck", build=tiny_build)
    load_checkpoint(tmp_path / "ck", build=tiny_build, verify=False)  # framing still valid


def test_missing_and_unexpected_keys_are_named(tmp_path):
    save_checkpoint(tmp_path / "ck", make_model(), METADATA)
    meta_path = tmp_path / "ck.json"
    meta = json.loads(meta_path.read_text())
    kwargs = meta["architecture"]["kwargs"]
    if meta["architecture"]["name"] == "tiny":
        kwargs["features"] = 6
    else:
        kwargs["n_blocks"] = 3  # one more block: its weights are missing
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(ModelError) as info:
        load_checkpoint(tmp_path / "ck", build=tiny_build)
    msg = str(info.value)
    assert ("missing" in msg and "blocks.2" in msg) or "shapes do not fit" in msg


def test_unexpected_keys(tmp_path):
    save_checkpoint(tmp_path / "ck", TinyNet(), {})
    with pytest.raises(ModelError, match=r"unexpected \('conv.bias'"):
        load_checkpoint(tmp_path / "ck", build=lambda name, **kw: _no_conv_bias(TinyNet(**kw)))


def _no_conv_bias(m: TinyNet) -> TinyNet:
    m.conv = nn.Conv2d(m.conv.in_channels, m.conv.out_channels, 3, padding=1, bias=False)
    return m


def test_missing_files_and_foreign_json(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_checkpoint(tmp_path / "nothing")
    save_checkpoint(tmp_path / "ck", make_model(), METADATA)
    os.remove(tmp_path / "ck.json")
    with pytest.raises(ModelError, match="JSON metadata"):
        load_checkpoint(tmp_path / "ck.safetensors")
    (tmp_path / "other.json").write_text(json.dumps({"hello": 1}))
    (tmp_path / "other.safetensors").write_bytes(b"")
    with pytest.raises(ModelError, match="not a medsat_sr checkpoint"):
        load_checkpoint(tmp_path / "other")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ModelError, match="invalid JSON"):
        read_metadata(tmp_path / "bad.json")


def test_newer_format_and_bad_architecture(tmp_path):
    save_checkpoint(tmp_path / "ck", make_model(), METADATA)
    meta = json.loads((tmp_path / "ck.json").read_text())
    (tmp_path / "ck.json").write_text(json.dumps({**meta, "format_version": 99}))
    with pytest.raises(ModelError, match="upgrade"):
        read_metadata(tmp_path / "ck")
    (tmp_path / "ck.json").write_text(json.dumps({**meta, "architecture": {"name": "nope", "kwargs": {}}}))
    with pytest.raises(ModelError, match="cannot rebuild"):
        load_checkpoint(tmp_path / "ck", build=tiny_build)


def test_truncated_safetensors(tmp_path):
    save_checkpoint(tmp_path / "ck", make_model(), METADATA)
    w = tmp_path / "ck.safetensors"
    w.write_bytes(w.read_bytes()[:100])
    with pytest.raises(ModelError):
        load_checkpoint(tmp_path / "ck", build=tiny_build, verify=False)

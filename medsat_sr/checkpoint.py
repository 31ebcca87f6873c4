"""Checkpoints: safetensors weights plus a JSON metadata file. Loading never unpickles.

A checkpoint ``run/best`` is two files:

* ``run/best.safetensors``: the model's ``state_dict`` (safetensors: a JSON
  header and raw tensor bytes; nothing is executed when it is read);
* ``run/best.json``: what is needed to rebuild and trust the model:

  ==================== ==========================================================
  key                  value
  ==================== ==========================================================
  format               ``"medsat_sr.checkpoint"``; ``format_version``: 1
  architecture         ``{"name": ..., "kwargs": {...}}`` for ``build_model``
  scale                per-axis scale factors
  domain               domain profile name (or the profile itself)
  normalisation        normalisation settings and statistics
  band_names           channel/band names, in order
  config               the training config (resolved)
  metrics              final metrics (validation PSNR, cubic PSNR, ...)
  medsat_sr_version    the version that wrote it; ``torch_version`` as well
  created              ISO 8601 UTC time
  num_parameters       parameter count
  weights              ``{"file": name, "sha256": hex, "bytes": n}``
  ==================== ==========================================================

  plus any other JSON-serialisable entries passed in ``metadata``.

A checkpoint may be named by its stem (``run/best``), its ``.json`` or its
``.safetensors``. Both files are written atomically (temporary file, then
rename), the weights first, so the JSON never names weights that are not
there; a crash in between leaves a JSON whose hash no longer matches, which
loading reports.

Pickle-based files (``torch.save`` ``.pt``/``.pth``/``.ckpt``, plain pickles)
are refused without being opened by a pickle reader: a pickle can run
arbitrary code when loaded, and ``weights_only=True`` narrows but does not
remove that surface. To import weights you trust, convert them once in your
own session::

    state = torch.load("trusted.pt", weights_only=True)
    model = build_model(name, **kwargs); model.load_state_dict(state)
    save_checkpoint("converted", model, {...})
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import struct
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from medsat_sr._atomic import atomic_path
from medsat_sr.errors import DataError, ModelError
from medsat_sr.file_hash import sha256_of

__all__ = [
    "save_checkpoint",
    "load_checkpoint",
    "read_metadata",
    "model_hash",
    "checkpoint_paths",
    "FORMAT",
    "FORMAT_VERSION",
]

#: The ``format`` entry of the metadata.
FORMAT = "medsat_sr.checkpoint"
#: The ``format_version`` this module writes and reads.
FORMAT_VERSION = 1

WEIGHTS_SUFFIX = ".safetensors"
META_SUFFIX = ".json"
_PICKLE_SUFFIXES = (".pt", ".pth", ".ckpt", ".pkl", ".pickle", ".bin", ".tar")
#: The largest metadata JSON read (bytes).
MAX_METADATA_BYTES = 64 << 20
#: Largest safetensors header accepted (bytes; the format's own limit is 100 MB).
MAX_HEADER_BYTES = 100_000_000

_STANDARD_KEYS = ("scale", "domain", "normalisation", "band_names", "config", "metrics")


# =============================================================== paths
def checkpoint_paths(path: str | os.PathLike[str]) -> tuple[Path, Path]:
    """``(weights, metadata)`` paths of a checkpoint named by stem, ``.json`` or ``.safetensors``."""
    p = Path(path)
    name = p.name
    if name.endswith(WEIGHTS_SUFFIX):
        stem = p.with_name(name[: -len(WEIGHTS_SUFFIX)])
    elif name.endswith(META_SUFFIX):
        stem = p.with_name(name[: -len(META_SUFFIX)])
    else:
        stem = p
    return stem.with_name(stem.name + WEIGHTS_SUFFIX), stem.with_name(stem.name + META_SUFFIX)


def _sha256(path: Path) -> str:
    try:
        return sha256_of(path)
    except OSError as exc:
        raise DataError(f"{path}: cannot read: {exc.strerror or exc}") from exc


def model_hash(path: str | os.PathLike[str]) -> str:
    """sha256 (hex) of a checkpoint's weights file (named by stem, ``.json`` or ``.safetensors``).

    Raises:
        DataError: the weights file is missing or unreadable.
    """
    weights, _ = checkpoint_paths(path)
    if not weights.is_file():
        raise DataError(f"{weights}: checkpoint weights not found")
    return _sha256(weights)


# =============================================================== JSON
def _jsonable(value: Any, where: str) -> Any:
    """Convert metadata to JSON types (numpy/torch scalars and arrays, paths, tuples, pydantic models)."""
    if value is None or isinstance(value, (bool, str, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        items = sorted(value, key=str) if isinstance(value, (set, frozenset)) else value
        return [_jsonable(v, f"{where}[{i}]") for i, v in enumerate(items)]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, torch.Tensor):
        return _jsonable(value.detach().cpu().tolist(), where)
    if hasattr(value, "resolved") and callable(value.resolved):  # a JobConfig
        return _jsonable(value.resolved(), where)
    if hasattr(value, "model_dump") and callable(value.model_dump):  # a pydantic model
        return _jsonable(value.model_dump(mode="json"), where)
    if hasattr(value, "tolist") and callable(value.tolist):  # numpy arrays and scalars
        return _jsonable(value.tolist(), where)
    raise ModelError(f"checkpoint metadata {where} is not JSON-serialisable: {type(value).__name__}")


def _architecture(model: nn.Module, metadata: Mapping[str, Any]) -> dict[str, Any]:
    arch = metadata.get("architecture")
    if arch is None:
        cfg = getattr(model, "config", None)
        if isinstance(cfg, Mapping) and isinstance(cfg.get("name"), str):
            kwargs = cfg.get("kwargs")
            if kwargs is None:
                kwargs = {k: v for k, v in cfg.items() if k != "name"}
            arch = {"name": cfg["name"], "kwargs": kwargs}
    if (
        not isinstance(arch, Mapping)
        or not isinstance(arch.get("name"), str)
        or not isinstance(arch.get("kwargs", {}), Mapping)
    ):
        raise ModelError(
            f"cannot record the architecture of {type(model).__name__}: it has no config "
            "{'name': ..., 'kwargs': {...}}; pass metadata['architecture'] = {'name': ..., 'kwargs': {...}}"
        )
    return {"name": arch["name"], "kwargs": _jsonable(dict(arch.get("kwargs", {})), "architecture.kwargs")}


# =============================================================== save
def save_checkpoint(
    path: str | os.PathLike[str],
    model: nn.Module,
    metadata: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``<path>.safetensors`` and ``<path>.json`` atomically.

    Args:
        path: the checkpoint stem (or its ``.json`` / ``.safetensors`` name).
        model: the network. Its ``config`` (``{"name", "kwargs"}``, as
            every medsat_sr generator has) records the architecture, unless
            ``metadata["architecture"]`` is given.
        metadata: ``scale``, ``domain``, ``normalisation``, ``band_names``,
            ``config`` (a dict or a :class:`~medsat_sr.config.JobConfig`),
            ``metrics`` and any other JSON-serialisable entries. Missing
            standard entries are recorded as ``null``.

    Returns:
        The path of the JSON metadata file.

    Raises:
        ModelError: no architecture can be recorded, or metadata that is
            not JSON-serialisable.
        WriteError: the folder is missing or not writable.
    """
    from medsat_sr._version import __version__

    metadata = dict(metadata or {})
    weights_path, meta_path = checkpoint_paths(path)
    arch = _architecture(model, metadata)
    state: dict[str, torch.Tensor] = {}
    for key, tensor in model.state_dict().items():
        if not isinstance(tensor, torch.Tensor):
            raise ModelError(f"state_dict entry {key!r} is not a tensor ({type(tensor).__name__})")
        # clone: safetensors refuses tensors that share storage (tied weights, views)
        state[key] = tensor.detach().to("cpu", copy=True).contiguous()
    extra = {
        k: v for k, v in metadata.items() if k not in ("architecture", "weights", "format", "format_version")
    }
    meta: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "architecture": arch,
        **{k: None for k in _STANDARD_KEYS},
        **_jsonable(extra, "metadata"),
        "medsat_sr_version": __version__,
        "torch_version": torch.__version__.split("+")[0],
        "created": _dt.datetime.now(_dt.timezone.utc)
        .replace(microsecond=0)
        .isoformat()
        .replace("+00:00", "Z"),
        "num_parameters": int(sum(t.numel() for t in model.parameters())),
    }
    from safetensors.torch import save_file

    with atomic_path(weights_path) as tmp:
        save_file(state, str(tmp), metadata={"format": "pt", "medsat_sr": FORMAT})
        digest = _sha256(tmp)
        size = tmp.stat().st_size
    meta["weights"] = {"file": weights_path.name, "sha256": digest, "bytes": size}
    text = json.dumps(meta, indent=2, allow_nan=False)
    with atomic_path(meta_path) as tmp:
        tmp.write_text(text + "\n", encoding="utf-8")
    return meta_path


# =============================================================== load
def _sniff(path: Path) -> str:
    """Describe what a non-safetensors file looks like (for the error message)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
    except OSError:
        return "an unreadable file"
    if head[:4] == b"PK\x03\x04":
        return "a zip archive (the torch.save format, which holds a pickle)"
    if head[:1] == b"\x80" and len(head) > 1 and head[1] <= 5:
        return "a Python pickle"
    return "not a safetensors file"


def _check_safetensors(path: Path) -> None:
    """Check the safetensors framing (header length + JSON header) without reading tensors."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(8)
            if len(head) < 8:
                raise ModelError(f"{path}: not a safetensors file ({size} bytes); {_refusal()}")
            (n,) = struct.unpack("<Q", head)
            if n < 2 or n > MAX_HEADER_BYTES or 8 + n > size:
                raise ModelError(f"{path}: {_sniff(path)}, not safetensors; {_refusal()}")
            header = fh.read(n)
    except OSError as exc:
        raise DataError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    try:
        parsed = json.loads(header.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"{path}: {_sniff(path)}, not safetensors (bad header); {_refusal()}") from exc
    if not isinstance(parsed, dict):
        raise ModelError(f"{path}: not a safetensors file (header is not a mapping); {_refusal()}")


def _refusal() -> str:
    return (
        "medsat_sr loads only safetensors + JSON checkpoints (pickle-based files can run code "
        "when loaded and are never opened); convert weights you trust with save_checkpoint"
    )


def read_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and check a checkpoint's JSON metadata (nothing else is loaded).

    Raises:
        DataError: the JSON file is missing or unreadable.
        ModelError: a pickle-based file was named, the JSON is malformed,
            or it is not a medsat_sr checkpoint.
    """
    p = Path(path)
    if p.suffix.lower() in _PICKLE_SUFFIXES:
        raise ModelError(
            f"{p}: {_sniff(p) if p.is_file() else 'a pickle-based checkpoint name'}; {_refusal()}"
        )
    weights, meta_path = checkpoint_paths(p)
    if not meta_path.is_file():
        if p.is_file() and not p.name.endswith((WEIGHTS_SUFFIX, META_SUFFIX)):
            raise ModelError(f"{p}: {_sniff(p)}; {_refusal()}")
        if weights.is_file():
            _check_safetensors(weights)  # a pickle under a safetensors name is reported as such
            raise ModelError(
                f"{meta_path}: missing: a checkpoint is {weights.name} plus its JSON metadata {meta_path.name}"
            )
        raise DataError(f"{meta_path}: checkpoint not found (looked for {weights.name} and {meta_path.name})")
    try:
        size = meta_path.stat().st_size
        if size > MAX_METADATA_BYTES:
            raise ModelError(f"{meta_path}: metadata is {size} bytes, larger than a checkpoint's JSON can be")
        text = meta_path.read_text(encoding="utf-8")
    except OSError as exc:
        raise DataError(f"{meta_path}: cannot read: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise ModelError(
            f"{meta_path}: not a checkpoint's JSON metadata (not UTF-8 text); {_refusal()}"
        ) from exc
    try:
        meta = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ModelError(f"{meta_path}: invalid JSON metadata: {exc}") from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ModelError(f"{meta_path}: not a medsat_sr checkpoint (format is not {FORMAT!r})")
    version = meta.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ModelError(
            f"{meta_path}: checkpoint format_version {version!r} is newer than this medsat_sr "
            f"reads ({FORMAT_VERSION}); upgrade medsat_sr"
        )
    arch = meta.get("architecture")
    if (
        not isinstance(arch, dict)
        or not isinstance(arch.get("name"), str)
        or not isinstance(arch.get("kwargs"), dict)
    ):
        raise ModelError(f"{meta_path}: metadata has no valid 'architecture' {{'name', 'kwargs'}}")
    w = meta.get("weights")
    if not isinstance(w, dict) or not isinstance(w.get("sha256"), str):
        raise ModelError(f"{meta_path}: metadata has no 'weights' sha256")
    return meta


def _few(names: list[str], n: int = 5) -> str:
    shown = ", ".join(repr(k) for k in names[:n])
    return shown + (f" and {len(names) - n} more" if len(names) > n else "")


def load_checkpoint(
    path: str | os.PathLike[str],
    *,
    device: str | torch.device = "cpu",
    build: Callable[..., nn.Module] | None = None,
    verify: bool = True,
) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a model from a checkpoint and load its weights (safetensors only).

    Args:
        path: the checkpoint stem, ``.json`` or ``.safetensors``.
        device: where to put the model (``"cpu"``, ``"cuda"``, ``"auto"``).
        build: the architecture factory, ``build(name, **kwargs)``; default
            :func:`medsat_sr.models.build_model`.
        verify: check the weights' sha256 against the metadata.

    Returns:
        ``(model, metadata)``; the model is in eval mode.

    Raises:
        ModelError: a pickle/``torch.save`` file or anything that is not
            safetensors (refused without unpickling), a weights hash that
            does not match, an architecture that cannot be built, or
            missing/unexpected/mis-shaped weights (a few are named).
        DataError: a missing or unreadable file.
    """
    meta = read_metadata(path)
    weights, meta_path = checkpoint_paths(path)
    if not weights.is_file():
        raise DataError(f"{weights}: checkpoint weights not found (named by {meta_path.name})")
    _check_safetensors(weights)
    if verify:
        digest = _sha256(weights)
        if digest != meta["weights"]["sha256"]:
            raise ModelError(
                f"{weights}: sha256 {digest[:16]}... does not match the metadata's "
                f"{meta['weights']['sha256'][:16]}...: the weights were changed or belong to another checkpoint"
            )
    if build is None:
        try:
            from medsat_sr.models import build_model as build
        except ImportError as exc:  # pragma: no cover - the package ships models
            raise ModelError(f"cannot import medsat_sr.models to rebuild the model: {exc}") from exc
    arch = meta["architecture"]
    try:
        model = build(arch["name"], **arch["kwargs"])
    except ModelError as exc:
        raise ModelError(f"{meta_path}: cannot rebuild architecture {arch['name']!r}: {exc}") from exc
    except (TypeError, ValueError) as exc:
        raise ModelError(f"{meta_path}: cannot rebuild architecture {arch['name']!r}: {exc}") from exc
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        state = load_file(str(weights), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise ModelError(f"{weights}: cannot read safetensors weights: {exc}") from exc
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing ({_few(missing)})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected ({_few(unexpected)})")
        raise ModelError(f"{weights}: weights do not fit architecture {arch['name']!r}: {'; '.join(parts)}")
    shapes = [
        f"{k}: {tuple(state[k].shape)} vs {tuple(v.shape)}"
        for k, v in expected.items()
        if tuple(state[k].shape) != tuple(v.shape)
    ]
    if shapes:
        raise ModelError(
            f"{weights}: weight shapes do not fit architecture {arch['name']!r}: {_few(shapes, 3)}"
        )
    model.load_state_dict(state, strict=True)
    model.eval()
    dev = (
        torch.device("cuda" if torch.cuda.is_available() else "cpu")
        if str(device) == "auto"
        else torch.device(device)
    )
    return model.to(dev), meta

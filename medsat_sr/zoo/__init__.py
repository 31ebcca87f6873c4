"""The shipped models: pretrained starting points in the package, one checkpoint per task.

Each model is a checkpoint (``<name>.safetensors`` + ``<name>.json``, see
:mod:`medsat_sr.checkpoint`; loading never unpickles) in this folder, made by
``zoo/train_zoo.py`` from ``../shared/data`` only. Its JSON carries a model
card under ``card``: the data and their licences and attributions, what was
held out, the degradation, the training budget and the validation scores.

This module reads the JSON files only (no torch), so ``medsat-sr models``
starts fast. It answers three questions:

* which models are there (:func:`names`, :func:`cards`);
* where is one (:func:`checkpoint`; ``upscale --model NAME``);
* which ones can start a fit of a job config, the preferred first
  (:func:`starting_points`, :func:`for_config`; ``upscale --config``
  fine-tunes the first that fits the input unless ``--from-scratch``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from medsat_sr._resources import suggest
from medsat_sr.errors import ModelError

__all__ = ["ZOO_DIR", "names", "card", "cards", "checkpoint", "is_shipped", "starting_points", "for_config",
           "takes_any_factor"]

#: The folder that holds the shipped checkpoints (inside the installed package).
ZOO_DIR = Path(__file__).resolve().parent

#: Largest model-card JSON read (bytes).
_MAX_JSON = 4 << 20


def names() -> list[str]:
    """Sorted names of the shipped models (a JSON with its weights next to it)."""
    return sorted(p.name[: -len(".json")] for p in ZOO_DIR.glob("*.json")
                  if p.with_name(p.name[: -len(".json")] + ".safetensors").is_file())


def _read(name: str) -> dict[str, Any]:
    path = ZOO_DIR / f"{name}.json"
    try:
        if path.stat().st_size > _MAX_JSON:
            raise ModelError(f"{path}: model card is larger than {_MAX_JSON} bytes")
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"{path}: cannot read the shipped model's card: {exc}") from exc
    if not isinstance(data, dict):
        raise ModelError(f"{path}: model card is not a JSON object")
    return data


def _check(name: str) -> str:
    available = names()
    if name not in available:
        raise ModelError(
            f"no shipped model {name!r}{suggest(name, available)} (shipped: {', '.join(available) or 'none'}; "
            "or give a checkpoint path)"
        )
    return name


def card(name: str) -> dict[str, Any]:
    """The model card of ``name`` with what ``medsat-sr models`` shows.

    Returns:
        The JSON's ``card`` entry plus ``architecture``, ``scale``, ``domain``,
        ``num_parameters``, ``bytes`` (weights file) and ``checkpoint`` (the stem).

    Raises:
        ModelError: no such model (with a did-you-mean hint), or an unreadable card.
    """
    meta = _read(_check(name))
    out = dict(meta.get("card") or {})
    out.update(
        name=name,
        architecture=meta.get("architecture"),
        scale=meta.get("scale"),
        domain=meta.get("domain"),
        num_parameters=meta.get("num_parameters"),
        bytes=(ZOO_DIR / f"{name}.safetensors").stat().st_size,
        checkpoint=str(ZOO_DIR / name),
    )
    return out


def cards() -> list[dict[str, Any]]:
    """The cards of every shipped model, sorted by name."""
    return [card(n) for n in names()]


def checkpoint(name: str) -> Path:
    """The checkpoint stem of shipped model ``name`` (for :func:`medsat_sr.checkpoint.load_checkpoint`).

    Raises:
        ModelError: no such model.
    """
    return ZOO_DIR / _check(name)


def is_shipped(item: Any) -> bool:
    """Whether ``item`` names a shipped model rather than a checkpoint path.

    A string that is a shipped name and not an existing file or checkpoint
    stem; a path on disk always wins.
    """
    if not isinstance(item, str) or os.sep in item or "/" in item:
        return False
    if Path(item).exists() or Path(item + ".json").exists():
        return False
    return item in names()


def resolve(item: Any) -> Any:
    """``item`` as a checkpoint: a shipped model's name becomes its checkpoint stem, anything else is kept."""
    return str(checkpoint(item)) if is_shipped(item) else item


def starting_points(config_name: str | None) -> list[str]:
    """The shipped models that can start a fit of the job config ``config_name``, the preferred first.

    A model whose card says it ``serves`` the config qualifies. Models with a
    fixed factor (``upsample: post``: the config's own network, which learns
    an input's pairs fastest) come before the ones that fit any factor
    (``upsample: pre``); the caller tries them in this order and takes the
    first whose weights fit the input (``ModelError`` otherwise).
    """
    if not config_name:
        return []
    found = [(n, meta) for n in names() if ((meta := _read(n)).get("card") or {}).get("serves") == config_name]
    return [n for n, _ in sorted(found, key=lambda item: (_any_factor(item[1]), item[0]))]


def _any_factor(meta: dict[str, Any]) -> bool:
    return ((meta.get("architecture") or {}).get("kwargs") or {}).get("upsample") == "pre"


def takes_any_factor(name: str) -> bool:
    """Whether the shipped model ``name`` runs at any factor (``upsample: pre``), not only its own."""
    return _any_factor(_read(_check(name)))


def for_config(config_name: str | None) -> str | None:
    """The preferred shipped starting point of the job config ``config_name`` (``None``: none)."""
    points = starting_points(config_name)
    return points[0] if points else None

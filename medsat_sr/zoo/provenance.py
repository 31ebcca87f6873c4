"""Which inputs a shipped model was trained on: the files its card names, matched by size and sha256.

A shipped model's card lists the files it was trained on
(``card.data.sources[].files``: name, bytes and sha256 of each file read,
validation blocks included; ``zoo/train_zoo.py`` writes them). An input that
is one of those files, or a folder that holds one, is not independent of the
model: its held-out split scores the model on data it has seen, so the run's
verdict and ``evaluate`` say so. Files are compared by size first; only a
file of a listed size is hashed. A copy that was cropped or re-encoded is
not found: this catches the sample itself, not its derivatives.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from medsat_sr import zoo
from medsat_sr.file_hash import sha256_of

__all__ = ["file_ids", "trained_on", "overlap_note"]

#: Files of a folder input looked at (a band folder, a DICOM series); a larger folder is sampled no further.
_MAX_FILES = 2000


def file_ids(paths: Iterable[str | os.PathLike[str]]) -> list[dict[str, Any]]:
    """``{"name", "bytes", "sha256"}`` of each file, for a model card."""
    return [{"name": Path(p).name, "bytes": Path(p).stat().st_size, "sha256": sha256_of(p)} for p in paths]


def _listed(card: Mapping[str, Any]) -> dict[int, dict[str, str]]:
    """bytes -> {sha256: name} of the files a card lists."""
    out: dict[int, dict[str, str]] = {}
    for src in (card.get("data") or {}).get("sources") or []:
        for f in (src.get("files") if isinstance(src, Mapping) else None) or []:
            if isinstance(f, Mapping) and isinstance(f.get("bytes"), int) and isinstance(f.get("sha256"), str):
                out.setdefault(int(f["bytes"]), {})[f["sha256"]] = str(f.get("name") or "?")
    return out


def _files(path: str | os.PathLike[str]) -> list[Path]:
    p = Path(path)
    if p.is_file():
        return [p]
    if not p.is_dir():
        return []
    found: list[Path] = []
    for root, _, names in os.walk(p):
        found += [Path(root) / n for n in sorted(names)]
        if len(found) >= _MAX_FILES:
            break
    return found[:_MAX_FILES]


def trained_on(card: Mapping[str, Any], path: str | os.PathLike[str] | None) -> list[str]:
    """The files of ``path`` (a file, or the files under a folder) that the card lists as training data.

    Args:
        card: a shipped model's card (:func:`medsat_sr.zoo.card`).
        path: the input.

    Returns:
        Their names, in the input's order (empty when none, or when the card lists no files).
    """
    listed = _listed(card)
    if not listed or path is None:
        return []
    hits = []
    for f in _files(path):
        try:
            size = f.stat().st_size
            if size in listed and sha256_of(f) in listed[size]:
                hits.append(f.name)
        except OSError:
            continue
    return hits


def overlap_note(names: Sequence[str], path: str | os.PathLike[str] | None) -> tuple[str, str] | None:
    """What to say when a shipped model among ``names`` was trained on the input, or ``None``.

    A file is matched whole; the card says which part of it the model saw
    (``card.data.used``: a crop, a half, a block for validation), which the
    long form quotes, so a score on the part it did not see can be told
    apart.

    Returns:
        ``(note, caution)``: the sentence for a record or a report, which
        quotes the card's account of the data used, and the verdict line's
        short form.
    """
    long, short = [], []
    for name in dict.fromkeys(n for n in names if n):
        card = zoo.card(name)
        hits = trained_on(card, path)
        if hits:
            shown = ", ".join(hits[:3]) + (f" and {len(hits) - 3} more" if len(hits) > 3 else "")
            short.append(f"shipped model {name!r} was trained on this input ({shown})")
            used = (card.get("data") or {}).get("used")
            long.append(short[-1] + (f"; its card: {used}" if used else ""))
    if not short:
        return None
    tail = ": a score on what it saw is not independent of its training"
    return "; ".join(long) + tail, "; ".join(short) + tail

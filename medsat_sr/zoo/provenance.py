"""Which inputs a model was trained on: the files its checkpoint names, matched by size and sha256.

A shipped model's card lists the files it was trained on
(``card.data.sources[].files``: name, bytes and sha256 of each file read,
validation blocks included; ``zoo/train_zoo.py`` writes them). A checkpoint
of ``medsat-sr train`` lists the files of its ``data.inputs``,
``data.validation`` and ``data.pairs`` the same way (``training_files``).
An input that is one of those files, or a folder that holds one, is not
independent of the model: a held-out split of it may score the model on data
it has seen, so the run's verdict and ``evaluate`` say so. Files are compared
by size first; only a file of a listed size is hashed. A copy that was
cropped or re-encoded is not found: this catches the file itself, not its
derivatives.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from medsat_sr import zoo
from medsat_sr.file_hash import sha256_of

__all__ = ["input_files", "file_ids", "listed_files", "trained_on", "overlap_note"]

#: Files of a folder looked at (a band folder, a DICOM series); a larger folder is looked at no further.
_MAX_FILES = 2000


def input_files(paths: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """The files behind input paths: a file itself, the files under a folder (at most :data:`_MAX_FILES`)."""
    found: list[Path] = []
    for path in paths:
        p = Path(path)
        if p.is_file():
            found.append(p)
            continue
        for root, _, names in os.walk(p) if p.is_dir() else ():
            found += [Path(root) / n for n in sorted(names)]
            if len(found) >= _MAX_FILES:
                return found[:_MAX_FILES]
    return found


def file_ids(paths: Iterable[str | os.PathLike[str]]) -> list[dict[str, Any]]:
    """``{"name", "bytes", "sha256"}`` of each file, for a model card or a checkpoint."""
    return [{"name": Path(p).name, "bytes": Path(p).stat().st_size, "sha256": sha256_of(p)} for p in paths]


def listed_files(meta: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The training files a checkpoint's metadata names: its own ``training_files``, or its card's."""
    own = meta.get("training_files")
    if isinstance(own, list):
        return [f for f in own if isinstance(f, Mapping)]
    sources = ((meta.get("card") or meta).get("data") or {}).get("sources") or []
    return [f for s in sources if isinstance(s, Mapping) for f in s.get("files") or [] if isinstance(f, Mapping)]


def trained_on(files: Iterable[Mapping[str, Any]], path: str | os.PathLike[str] | None) -> list[str]:
    """The names of the files of ``path`` (a file, or the files under a folder) among ``files``.

    Args:
        files: ``{"name", "bytes", "sha256"}`` entries (:func:`listed_files`).
        path: the input.

    Returns:
        Their names, in the input's order (empty when none, or when nothing is listed).
    """
    listed: dict[int, set[str]] = {}
    for f in files:
        if isinstance(f.get("bytes"), int) and isinstance(f.get("sha256"), str):
            listed.setdefault(int(f["bytes"]), set()).add(f["sha256"])
    if not listed or path is None:
        return []
    hits = []
    for f in input_files([path]):
        try:
            same_size = listed.get(f.stat().st_size)
            if same_size and sha256_of(f) in same_size:  # only a file of a listed size is hashed
                hits.append(f.name)
        except OSError:
            continue
    return hits


def overlap_note(names: Sequence[str], path: str | os.PathLike[str] | None,
                 checkpoints: Sequence[tuple[str, Mapping[str, Any]]] = ()) -> tuple[str, str] | None:
    """What to say when a model of the run was trained on the input, or ``None``.

    A file is matched whole; a shipped model's card says which part of it
    the model saw (``card.data.used``: a crop, a half, a block for
    validation), which the long form quotes, so a score on the part it did
    not see can be told apart.

    Args:
        names: shipped models of the run (given by name, or the start of a fit).
        path: the input.
        checkpoints: ``(path, metadata)`` of checkpoints of the user's own.

    Returns:
        ``(note, caution)``: the sentence for a record or a report, and the verdict line's short form.
    """
    entries = []  # (who, the card's account of the data it used, the files it lists)
    for name in dict.fromkeys(n for n in names if n):
        card = zoo.card(name)
        used = (card.get("data") or {}).get("used")
        entries.append((f"shipped model {name!r}", f"; its card: {used}" if used else "", listed_files(card)))
    entries += [(f"checkpoint {label!r}", "", listed_files(meta)) for label, meta in checkpoints]
    long, short = [], []
    for who, account, files in entries:
        hits = trained_on(files, path)
        if hits:
            shown = ", ".join(hits[:3]) + (f" and {len(hits) - 3} more" if len(hits) > 3 else "")
            short.append(f"{who} was trained on this input ({shown})")
            long.append(short[-1] + account)
    if not short:
        return None
    tail = ": a score on what it saw is not independent of its training"
    return "; ".join(long) + tail, "; ".join(short) + tail

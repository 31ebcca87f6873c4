"""Progress over the tiles, slices and planes of a run: a bar on a terminal, a line per 10 % elsewhere."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from medsat_sr.progress import iterate


def progress_over(items: Sequence[Any], enabled: bool, desc: str, unit: str = "tile") -> Iterable[Any]:
    """``items`` with progress when ``enabled`` and there is more than one item.

    On a terminal a tqdm bar; off a terminal (a batch log, a redirected run)
    no redraws, one log line per 10 % (:class:`medsat_sr.progress.Progress`).
    """
    if not enabled or len(items) <= 1:
        return items
    return iterate(items, desc, unit=unit)

"""Progress over the tiles, slices and planes of a run: a bar on a terminal, nothing elsewhere."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence
from typing import Any

from tqdm.auto import tqdm


def progress_over(items: Sequence[Any], enabled: bool, desc: str, unit: str = "tile") -> Iterable[Any]:
    """``items`` wrapped in a tqdm bar when ``enabled``, there is more than one item and stderr is a terminal.

    Off a terminal (a batch log, a redirected run) bar redraws would only fill
    the log, so the items come back as they are and the caller logs stages.
    """
    if not enabled or len(items) <= 1 or not sys.stderr.isatty():
        return items
    return tqdm(items, desc=desc, unit=unit)

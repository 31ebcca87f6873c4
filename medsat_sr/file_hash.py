"""sha256 of a file, read in 1 MiB blocks (checkpoint weights, revisit inputs, a model card's training files)."""

from __future__ import annotations

import hashlib
import os

__all__ = ["sha256_of"]


def sha256_of(path: str | os.PathLike[str]) -> str:
    """The hex sha256 of the file at ``path``.

    Raises:
        OSError: the file cannot be read.
    """
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()

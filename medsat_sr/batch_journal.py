"""The batch's append-only journal (``batch.jsonl``) and its lock.

:func:`medsat_sr.batch.run_batch` appends one line per input to the journal
(:class:`_Journal`, flushed and fsynced), holds an exclusive ``flock`` on it
for the run (:func:`_lock`), and reads it back to resume
(:func:`read_jsonl`, re-exported from :mod:`medsat_sr.batch`).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from medsat_sr.errors import WriteError
from medsat_sr.trust import jsonable

__all__ = ["read_jsonl"]


class _Journal:
    """Append-only ``batch.jsonl``: one line per input, flushed and fsynced."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._fh = open(path, "a", encoding="utf-8")
        except OSError as exc:
            raise WriteError(f"{path}: cannot open the run manifest: {exc.strerror or exc}") from exc

    def write(self, line: Mapping[str, Any]) -> None:
        """Append ``line`` as one JSON line, then flush and fsync.

        Raises:
            WriteError: the line cannot be written.
        """
        text = json.dumps(jsonable(line), allow_nan=False, separators=(",", ":"))
        try:
            self._fh.write(text + "\n")
            self._fh.flush()
            os.fsync(self._fh.fileno())
        except OSError as exc:
            raise WriteError(f"{self.path}: cannot append to the run manifest: {exc.strerror or exc}") from exc

    def close(self) -> None:
        """Close the file (releasing the lock); errors are ignored."""
        with contextlib.suppress(OSError):
            self._fh.close()


def _lock(journal: _Journal, out_dir: Path) -> None:
    """Keep a second batch from writing the same folder at the same time.

    An exclusive ``flock`` on ``batch.jsonl`` itself, held while the file is
    open; the kernel releases it when the process ends, even on SIGKILL.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        return
    try:
        fcntl.flock(journal._fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        journal.close()
        raise WriteError(
            f"{out_dir}: another batch run is writing to this folder; wait for it to finish or use another folder"
        ) from None


def read_jsonl(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The lines of a ``batch.jsonl`` (a torn last line, from a killed run, is ignored)."""
    out: list[dict[str, Any]] = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            line = line.strip()
            if not line:
                continue
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
    return out

"""The batch's append-only journal (``batch.jsonl``) and its lock.

:func:`medsat_sr.batch.run_batch` opens the journal in the output folder
(:func:`_open_journal`), appends one line per input to it (:class:`_Journal`,
flushed and fsynced; every line with every key, :func:`_full_line`), holds an
exclusive ``flock`` on it for the run (:func:`_lock`), and reads it back to
resume (:func:`read_jsonl`). :data:`MANIFEST_NAME` and :func:`read_jsonl` are
re-exported from :mod:`medsat_sr.batch`.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from medsat_sr._atomic import check_writable
from medsat_sr.errors import WriteError
from medsat_sr.trust import jsonable, now_iso

__all__ = ["read_jsonl", "MANIFEST_NAME"]

#: The run manifest written into the output folder.
MANIFEST_NAME = "batch.jsonl"


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


def _open_journal(out_dir: Path) -> _Journal:
    """Create the output folder and open ``batch.jsonl`` in it, locked for this run.

    Args:
        out_dir: the absolute output folder.

    Returns:
        The open, locked journal.

    Raises:
        WriteError: the folder or the manifest cannot be written, or another batch holds it.
    """
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise WriteError(f"{out_dir}: cannot create the output folder: {exc.strerror or exc}") from exc
    check_writable(out_dir / MANIFEST_NAME)
    journal = _Journal(out_dir / MANIFEST_NAME)
    _lock(journal, out_dir)
    return journal


def _full_line(run: str, line: Mapping[str, Any]) -> dict[str, Any]:
    """A ``batch.jsonl`` line with every key of the run manifest, the missing ones null.

    Args:
        run: the run id.
        line: the partial line (at least ``index`` and ``status``).

    Returns:
        The full line, stamped with the run id and the time now.
    """
    return {
        "run": run,
        "time": now_iso(),
        "index": line["index"],
        "input": line.get("input"),
        "status": line["status"],
        "output": line.get("output"),
        "sidecar": line.get("sidecar"),
        "seconds": line.get("seconds", 0.0),
        "error": line.get("error"),
        "error_type": line.get("error_type"),
        "method": line.get("method"),
        "fallback": bool(line.get("fallback")),
        "fallback_reason": line.get("fallback_reason"),
        "input_sha256": line.get("input_sha256"),
        "job_hash": line.get("job_hash"),
        "worker": line.get("worker"),
        "torch_threads": line.get("torch_threads"),
        "model_loads": line.get("model_loads"),
    }

"""Logging for people and for batch logs: levels, one JSON object per event, warnings that name their file.

The command line calls :func:`setup` once. Library code logs to
``logging.getLogger(__name__)`` as usual; three things are added here:

* :func:`naming` sets the file a piece of work is about (the reader and the
  writer set it, and so do ``batch`` per input and ``demo`` per case). A
  warning that does not already name that file is prefixed with it, so
  ``123 voxels clipped to the uint8 range`` reads
  ``out.nii.gz: 123 voxels clipped to the uint8 range``.
* ``json_lines=True`` writes one JSON object per event (``time``, ``level``,
  ``logger``, ``message``, ``file`` and the event's own fields, such as a
  progress line's ``stage``, ``percent``, ``done`` and ``total``).
* Progress lines (:mod:`medsat_sr.progress`) go to the ``medsat_sr.progress``
  logger, shown by default; ``quiet`` hides them and the warnings.

Standard library only.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import time
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any, TextIO

__all__ = ["setup", "naming", "current_file", "json_mode", "FileNamer", "JsonFormatter", "PROGRESS_LOGGER", "FIELDS"]

#: The logger of progress and stage lines (shown by default, hidden by ``quiet``).
PROGRESS_LOGGER = "medsat_sr.progress"
#: Record attribute holding an event's structured fields (``extra={FIELDS: {...}}``).
FIELDS = "medsat_fields"

_FILE: ContextVar[str | None] = ContextVar("medsat_sr_file", default=None)
_JSON = {"on": False}


def current_file() -> str | None:
    """The file the current work is about, or ``None``."""
    return _FILE.get()


def json_mode() -> bool:
    """Whether :func:`setup` asked for JSON lines (progress bars are off then)."""
    return _JSON["on"]


@contextlib.contextmanager
def naming(path: str | os.PathLike[str] | None) -> Iterator[None]:
    """Within the block, warnings name ``path`` (``None`` leaves the current name)."""
    if path is None:
        yield
        return
    token = _FILE.set(os.fspath(path))
    try:
        yield
    finally:
        _FILE.reset(token)


class FileNamer(logging.Filter):
    """Prefix warnings (and worse) with the current file, unless the message already names it."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Add ``record.file``; rewrite the message of a warning that does not name its file."""
        path = current_file()
        record.file = path
        if path is None or record.levelno < logging.WARNING:
            return True
        message = record.getMessage()
        head = message.split(": ", 1)[0]
        names_a_file = "/" in head or "\\" in head  # the message starts with another file's path
        if not names_a_file and path not in message and os.path.basename(path) not in message:
            record.msg, record.args = f"{path}: {message}", None
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, file and the event's fields."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON."""
        out: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage().strip().splitlines()[0] if record.name == "py.warnings" else record.getMessage(),
        }
        if getattr(record, "file", None):
            out["file"] = record.file
        fields = getattr(record, FIELDS, None)
        if isinstance(fields, dict):
            out.update(fields)
        if record.exc_info:
            out["traceback"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


class _TextFormatter(logging.Formatter):
    """Progress lines as they are; other records as ``LEVEL logger: message``."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of text."""
        if record.name == PROGRESS_LOGGER:
            return record.getMessage()
        if record.name == "py.warnings":  # "file:line: Category: text" without the echoed source line
            return f"WARNING {record.getMessage().strip().splitlines()[0]}"
        return super().format(record)


class _Handler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to the current ``sys.stderr`` (or a given stream), above open tqdm bars rather than through them."""

    def __init__(self, stream: TextIO | None = None) -> None:
        super().__init__(stream)
        self._fixed = stream

    def emit(self, record: logging.LogRecord) -> None:
        """Write one record."""
        self.stream = self._fixed or sys.stderr
        try:
            from tqdm import tqdm

            if getattr(tqdm, "_instances", None):
                tqdm.write(self.format(record), file=self.stream)
                return
        except Exception:  # noqa: BLE001 - fall back to a plain write
            pass
        super().emit(record)


def setup(*, verbose: bool = False, quiet: bool = False, json_lines: bool = False, stream: TextIO | None = None) -> None:
    """Configure the ``medsat_sr`` loggers for the command line (again: replaces the previous set-up).

    Args:
        verbose: debug messages too.
        quiet: errors only (no warnings, no progress).
        json_lines: one JSON object per event instead of text lines.
        stream: where to write (default: ``sys.stderr`` at the time of each event).
    """
    level = logging.DEBUG if verbose else logging.ERROR if quiet else logging.WARNING
    _JSON["on"] = bool(json_lines)
    handler = _Handler(stream)
    handler.setFormatter(JsonFormatter() if json_lines else _TextFormatter("%(levelname)s %(name)s: %(message)s"))
    handler.addFilter(FileNamer())
    handler._medsat_sr = True  # type: ignore[attr-defined]
    root = logging.getLogger("medsat_sr")
    warn = logging.getLogger("py.warnings")  # Python warnings: fixed at their cause; any left go out in one line
    for lg in (root, warn):
        for old in list(lg.handlers):
            if getattr(old, "_medsat_sr", False):
                lg.removeHandler(old)
        lg.addHandler(handler)
        lg.setLevel(level)
    warn.propagate = False
    logging.getLogger(PROGRESS_LOGGER).setLevel(logging.ERROR if quiet else logging.DEBUG if verbose else logging.INFO)
    logging.captureWarnings(True)

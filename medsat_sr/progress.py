"""Progress of long steps: a tqdm bar on a terminal, one log line per 10 % elsewhere.

On a terminal (stderr is a TTY and JSON logging is off) a :class:`Progress`
is a tqdm bar. With a wall-clock budget its position is the larger of the
work done and the time used, so its total and ETA follow whichever ends
first, and :meth:`Progress.close` fills it when the budget stopped the work.

Off a terminal (a batch log, a redirected run) there are no redraws: one
line on the ``medsat_sr.progress`` logger when the step starts, one at each
10 % and one at the end, e.g.::

    training: 30% (iteration 120 of 400, 22 s of the 75 s budget) loss 0.0193

:func:`stage` logs one line for a stage of a command (reading, fitting,
writing). Standard library and tqdm only.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterator, Sequence
from typing import Any, TypeVar

from medsat_sr.logs import FIELDS, PROGRESS_LOGGER, json_mode

__all__ = ["Progress", "stage", "iterate", "bars_wanted"]

T = TypeVar("T")
logger = logging.getLogger(PROGRESS_LOGGER)
_STEPS = 1000  # bar resolution with a budget (permille)


def bars_wanted() -> bool:
    """Whether tqdm bars should be drawn: stderr is a terminal and JSON logging is off."""
    try:
        tty = sys.stderr.isatty()
    except (AttributeError, ValueError):
        tty = False
    return tty and not json_mode()


def stage(message: str, **fields: Any) -> None:
    """Log one line for a stage of a command (shown unless ``--quiet``)."""
    logger.info(message, extra={FIELDS: {"event": "stage", **fields}})


def _secs(s: float) -> str:
    return f"{s:.1f} s" if s < 10 else f"{s:.0f} s" if s < 600 else f"{s / 60:.0f} min"


def _plural(unit: str) -> str:
    """``unit`` in the plural: ``batch`` -> ``batches``, ``tile`` -> ``tiles``."""
    return unit + ("es" if unit.endswith(("s", "sh", "ch", "x", "z")) else "s")


class Progress:
    """Progress over ``total`` units of work, optionally bounded by a wall-clock budget.

    Args:
        total: units of work (iterations, tiles, inputs); > 0.
        desc: what is going on (``"training"``, ``"upscale"``).
        unit: the unit's name, for the lines.
        enabled: ``False``: nothing at all.
        budget_s: wall-clock budget in seconds, or ``None``.
        bar: ``None`` (default): a bar when :func:`bars_wanted`; ``False``: lines only.
    """

    def __init__(self, total: int, desc: str, *, unit: str = "item", enabled: bool = True,
                 budget_s: float | None = None, bar: bool | None = None) -> None:
        self.total = max(1, int(total))
        self.desc, self.unit, self.enabled = desc, unit, bool(enabled)
        self.budget_s = float(budget_s) if budget_s and budget_s > 0 else None
        self.done = 0
        self.postfix = ""
        self._t0 = time.monotonic()
        self._next = 10
        self._closed = False
        self._bar: Any = None
        if self.enabled and (bars_wanted() if bar is None else bar):
            from tqdm.auto import tqdm

            if self.budget_s is None:
                self._bar = tqdm(total=self.total, desc=desc, unit=unit, dynamic_ncols=True, leave=False)
            else:
                self._bar = tqdm(total=_STEPS, desc=desc, dynamic_ncols=True, leave=False,
                                 bar_format="{desc}: {percentage:3.0f}%|{bar}| {postfix} [{elapsed}<{remaining}]")
        elif self.enabled:
            budget = f", budget {_secs(self.budget_s)}" if self.budget_s else ""
            logger.info("%s: started (%d %s%s)", desc, self.total, _plural(unit), budget,
                        extra={FIELDS: {"event": "progress", "stage": desc, "percent": 0, "done": 0, "total": self.total}})

    def fraction(self) -> float:
        """Share of the work done, or of the budget used when that is larger (0..1)."""
        f = self.done / self.total
        if self.budget_s is not None:
            f = max(f, (time.monotonic() - self._t0) / self.budget_s)
        return min(1.0, f)

    def set_postfix_str(self, text: str, refresh: bool = False) -> None:
        """Extra text after the bar or the line (a loss, counts)."""
        self.postfix = text
        if self._bar is not None:
            self._bar.set_postfix_str(text, refresh=refresh)

    def update(self, n: int = 1) -> None:
        """``n`` more units done."""
        self.set(self.done + n)

    def set(self, done: int) -> None:
        """``done`` units done in all."""
        if not self.enabled or self._closed:
            return
        self.done = int(done)
        if self._bar is not None:
            target = self.done if self.budget_s is None else int(self.fraction() * _STEPS)
            if target > self._bar.n:
                self._bar.update(target - self._bar.n)
            return
        pct = int(self.fraction() * 100)
        if pct >= self._next and pct < 100:
            self._line(pct)
            self._next = (pct // 10 + 1) * 10

    def _line(self, pct: int, note: str = "") -> None:
        elapsed = time.monotonic() - self._t0
        of = (f"{self.unit} {self.done} of {self.total}" if self.unit in {"iteration", "epoch"}
              else f"{self.done}/{self.total} {_plural(self.unit)}")
        budget = f", {_secs(elapsed)} of the {_secs(self.budget_s)} budget" if self.budget_s else f", {_secs(elapsed)}"
        extra = f" {self.postfix}" if self.postfix else ""
        logger.info("%s: %d%% (%s%s)%s%s", self.desc, pct, of, budget, extra, note,
                    extra={FIELDS: {"event": "progress", "stage": self.desc, "percent": pct, "done": self.done,
                                    "total": self.total, "seconds": round(elapsed, 3)}})

    def close(self, note: str = "") -> None:
        """End the progress: fill and close the bar, or log the last line (``note``: why it ended)."""
        if not self.enabled or self._closed:
            return
        self._closed = True
        if self._bar is not None:
            if self.budget_s is not None and note:
                self._bar.update(_STEPS - self._bar.n)  # the budget ended the work: the bar is full
            self._bar.close()
            if note:
                logger.info("%s: %s", self.desc, note.strip("; "))
            return
        self._line(int(round(self.fraction() * 100)) if note else 100, f"; {note}" if note else "")

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def iterate(items: Sequence[T], desc: str, *, unit: str = "item", enabled: bool = True) -> Iterator[T]:
    """Yield ``items`` with a :class:`Progress` over them (nothing shown for a single item)."""
    p = Progress(len(items), desc, unit=unit, enabled=enabled and len(items) > 1)
    try:
        for it in items:
            yield it
            p.update()
    finally:
        p.close()

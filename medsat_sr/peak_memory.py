"""Peak resident memory of a block of work (a sampling thread on ``/proc/self/statm``).

:class:`PeakMemory` measures each method of :func:`medsat_sr.evaluate.evaluate`
(fitting included) and the benchmarks' runs; it is re-exported from
:mod:`medsat_sr.evaluate`. Layer 0: standard library only.
"""

from __future__ import annotations

import os
import threading
from typing import Any

__all__ = ["PeakMemory"]


def _rss_bytes() -> int | None:
    """Resident set size of this process now (Linux ``/proc``), or ``None``."""
    try:
        with open("/proc/self/statm", "rb") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError, AttributeError):
        return None


class PeakMemory:
    """Peak resident memory of the process while a block runs (a sampling thread).

    RSS is read from ``/proc/self/statm`` every ``interval`` seconds, so it
    sees every allocation (numpy, torch, GDAL) but can miss a spike shorter
    than the interval. Where ``/proc`` is missing, the process-lifetime peak
    of ``resource.getrusage`` is reported instead (``source`` says which).

    Attributes:
        start_mb: RSS when the block started (MiB).
        peak_mb: highest RSS seen (MiB).
        increase_mb: ``peak_mb - start_mb``.
        source: ``"proc_statm_sampled"`` or ``"getrusage_maxrss"``.

    Example:
        >>> with PeakMemory() as pm:
        ...     _ = bytearray(10_000_000)
        >>> pm.peak_mb >= pm.start_mb
        True
    """

    def __init__(self, interval: float = 0.01) -> None:
        self.interval = float(interval)
        self.start_mb = float("nan")
        self.peak_mb = float("nan")
        self.source = "proc_statm_sampled"
        self._peak = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            v = _rss_bytes()
            if v is not None and v > self._peak:
                self._peak = v

    def __enter__(self) -> PeakMemory:
        v = _rss_bytes()
        if v is None:
            self.source = "getrusage_maxrss"
            self.start_mb = _maxrss_mb()
            return self
        self._peak = v
        self.start_mb = v / 2**20
        self._thread = threading.Thread(target=self._sample, name="medsat-peak-memory", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._thread is None:
            self.peak_mb = _maxrss_mb()
            return
        self._stop.set()
        self._thread.join()
        v = _rss_bytes()
        if v is not None and v > self._peak:
            self._peak = v
        self.peak_mb = self._peak / 2**20

    @property
    def increase_mb(self) -> float:
        """Peak minus start, MiB."""
        return self.peak_mb - self.start_mb


def _maxrss_mb() -> float:
    """Peak resident memory of the process so far (``getrusage``, MiB), NaN where unavailable."""
    try:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # kB on Linux
    except (ImportError, OSError):  # pragma: no cover - not Linux
        return float("nan")

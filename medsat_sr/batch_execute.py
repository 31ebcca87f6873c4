"""One batch item's job and the executors that run the items: inline and on Dask.

:func:`medsat_sr.batch.run_batch` plans one :class:`Task` per input and hands
the tasks to :func:`_run_inline` (``workers=0``) or :func:`_run_dask` (a
LocalCluster or an existing scheduler). Each task runs through
:func:`_execute` (failure isolation, the sidecar with its ``batch`` section)
around the job, by default :func:`upscale_job`, which loads checkpoints once
per worker process (:func:`model_cache_info`). Dask workers unpickle
:class:`Task` and the job by reference, so both are module-level names.
The batch checks its worker options here (:func:`_check_workers`,
:func:`_worker_torch_threads`) and shares the small helpers
:func:`_one_line`, :func:`_sha` and :func:`_remove`. :class:`Task`,
:func:`upscale_job` and :func:`model_cache_info` are re-exported from
:mod:`medsat_sr.batch`.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import socket
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medsat_sr import checkpoint, zoo
from medsat_sr._version import __version__
from medsat_sr.batch_inputs import _strip_ext
from medsat_sr.checkpoint import checkpoint_paths, model_hash, read_metadata
from medsat_sr.errors import ConfigError, MedsatError, ModelError, WriteError
from medsat_sr.fusion import Member
from medsat_sr.inference import upscale
from medsat_sr.inference.members import load_member
from medsat_sr.io import detect_format, reader_options_of
from medsat_sr.logs import naming
from medsat_sr.trust import RECORD_FORMAT, now_iso, sha256_path, sidecar_path, write_record

__all__ = ["Task", "upscale_job", "model_cache_info", "MODEL_CACHE_SIZE", "SCHEDULER_TIMEOUT"]

logger = logging.getLogger(__name__)

#: How long to try to reach an existing Dask scheduler (``--scheduler``).
SCHEDULER_TIMEOUT = "20s"


@dataclass
class Task:
    """One planned input, as shipped to a worker (picklable).

    Attributes:
        index: position in the batch.
        input: the input path (absolute).
        output: the output path (absolute).
        config: the job config with global and per-input overrides applied
            (a :class:`~medsat_sr.config.JobConfig`), or ``None``.
        overrides: ``--set`` items for :func:`upscale` when there is no config.
        method: a classical method, or ``None``.
        models: checkpoint paths (absolute).
        model_hashes: their identities (sha256 over weights and metadata), in the same order.
        scale: scale factor(s), or ``None`` (the config's or the model's).
        read_options: reader options.
        job_hash: the recipe's hash (see the :mod:`medsat_sr.batch` docstring).
        config_hash: the config's hash without ``data.inputs``, or ``None``.
        run: the run id.
        torch_threads: torch threads to use in the worker (``None``: leave as is).
    """

    index: int
    input: str
    output: str
    config: Any = None
    overrides: tuple[str, ...] = ()
    method: str | None = None
    models: tuple[str, ...] = ()
    model_hashes: tuple[str, ...] = ()
    scale: float | list[float] | None = None
    read_options: dict[str, Any] = field(default_factory=dict)
    job_hash: str = ""
    config_hash: str | None = None
    run: str = ""
    torch_threads: int | None = None


# =============================================================== helpers (also the batch's planning and resume)
def _one_line(message: str) -> str:
    """A possibly multi-line error message on one line (its lines joined with ``; ``)."""
    parts = [p.strip() for p in str(message).splitlines() if p.strip()]
    return (parts[0] + (" " + "; ".join(parts[1:]) if len(parts) > 1 else "")) if parts else str(message)


def _sha(path: Path) -> str:
    """The sha256 of a file or folder (:func:`medsat_sr.trust.sha256_path`)."""
    return sha256_path(path)


def _remove(path: Path) -> None:
    """Remove a file or folder; errors are ignored."""
    with contextlib.suppress(OSError):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


# =============================================================== the job
_MODEL_CACHE: dict[tuple[str, str], Any] = {}
_CACHE_STATS = {"loads": 0, "hits": 0}
#: Checkpoints kept per worker process.
MODEL_CACHE_SIZE = 4


def model_cache_info() -> dict[str, int]:
    """This process's checkpoint cache: ``loads``, ``hits``, ``size`` and ``pid``."""
    return {**_CACHE_STATS, "size": len(_MODEL_CACHE), "pid": os.getpid()}


def _checkpoint_id(path: str) -> str:
    """sha256 over a checkpoint's weights and its metadata (metrics decide the fallback, so both count).

    Raises:
        DataError: a file of the checkpoint is missing or unreadable.
        ModelError: a pickle-based or malformed checkpoint.
    """
    meta = read_metadata(path)  # refuses pickles and malformed checkpoints before anything runs
    weights_path, meta_path = checkpoint_paths(path)
    if weights_path.is_file():
        checkpoint._check_safetensors(weights_path)  # the framing only: a pickle under this name is named as such
    weights = model_hash(path)
    if weights != meta["weights"]["sha256"]:
        raise ModelError(
            f"{path}: the weights file does not match its metadata (sha256 {weights[:12]}..., recorded "
            f"{str(meta['weights']['sha256'])[:12]}...): a corrupt or replaced checkpoint"
        )
    return hashlib.sha256(f"{weights}:{_sha(meta_path)}".encode()).hexdigest()


def _device_of(task: Task) -> str:
    dev = "cpu"
    if task.config is not None:
        dev = task.config.inference.device
    for item in task.overrides:
        if item.startswith("inference.device="):
            dev = item.partition("=")[2].strip() or dev
    if dev == "auto":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return dev


def _member(path: str, sha: str, device: str) -> Any:
    """A fresh :class:`~medsat_sr.fusion.Member` around a model loaded once per process."""
    key = (sha, device)
    cached = _MODEL_CACHE.get(key)
    if cached is None:
        cached, _ = load_member(path, device)
        _CACHE_STATS["loads"] += 1
        while len(_MODEL_CACHE) >= MODEL_CACHE_SIZE:
            _MODEL_CACHE.pop(next(iter(_MODEL_CACHE)))
        _MODEL_CACHE[key] = cached
        logger.debug("loaded %s (sha256 %s) on %s in process %d", path, sha[:12], device, os.getpid())
    else:
        _CACHE_STATS["hits"] += 1
    # A fresh Member per input: normalisers are fitted per image and must not leak between inputs.
    return Member(model=cached.model, weight=cached.weight, name=cached.name, info=dict(cached.info))


def _applicable(path: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """The batch's reader options that this input's reader takes: ``--series`` applies to its DICOM inputs only."""
    if not options or not os.path.exists(path):
        return dict(options)  # nothing to sort, or a missing input: the reader says so
    takes = reader_options_of(detect_format(path))
    return {k: v for k, v in options.items() if k in takes}


def upscale_job(task: Task) -> dict[str, Any]:
    """The default job: :func:`medsat_sr.inference.upscale` of one input into ``task.output``.

    Returns:
        ``{"record": trust record, "method": ..., "fallback": bool,
        "fallback_reason": str|None, "extra_outputs": [paths]}``; the batch
        writes the sidecar (the record plus its ``batch`` section).
    """
    members = None
    if task.models:
        device = _device_of(task)
        # a shipped model goes by its name: upscale then applies it as `upscale --model NAME` does
        members = [p if zoo.is_shipped(p) else _member(p, h, device)
                   for p, h in zip(task.models, task.model_hashes, strict=True)]
    result = upscale(
        task.input,
        output=task.output,
        model=members[0] if members and len(members) == 1 else None,
        models=members if members and len(members) > 1 else None,
        method=task.method,
        scale=task.scale,
        config=task.config,
        overrides=list(task.overrides),
        read_options=_applicable(task.input, task.read_options),
        sidecar=False,
        progress=False,
    )
    fb = result.record.get("fallback") or {}
    return {
        "record": result.record,
        "method": result.record.get("method"),
        "fallback": bool(fb.get("applied")),
        "fallback_reason": fb.get("reason"),
        "extra_outputs": [str(result.std_output)] if result.std_output else [],
    }


def _stat_key(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_ino, st.st_mtime_ns)


def _std_sibling(out: Path) -> Path:
    stem, ext = _strip_ext(out.name)
    return out.with_name(f"{stem}_std{ext or '.nii.gz'}")


def _set_up_worker(n: int | None, path: str) -> None:
    """Set up a worker of our own LocalCluster (``n`` given): torch threads, and for volumes malloc as the CLI's."""
    if not n:
        return
    import torch

    from medsat_sr.hardware import tune_allocator
    from medsat_sr.io import is_volume

    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    if is_volume(path):
        tune_allocator()


def _execute(job: Callable[[Task], Mapping[str, Any]], task: Task) -> dict[str, Any]:
    """Run one task with failure isolation; write its sidecar. Runs in a worker (or inline)."""
    t0 = time.perf_counter()
    out = Path(task.output)
    side = sidecar_path(out)
    watched = [out, side, _std_sibling(out), out.with_name(out.name + "_std.nii.gz")]
    before = {p: _stat_key(p) for p in watched}
    worker = f"{socket.gethostname()}:{os.getpid()}"
    outcome: dict[str, Any] = {"index": task.index, "worker": worker}
    try:
        _set_up_worker(task.torch_threads, task.input)
        if not out.parent.is_dir():  # a manifest may name outputs in sub-folders of OUT_DIR
            try:
                out.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise WriteError(f"{out}: cannot create its folder: {exc.strerror or exc}") from exc
        with naming(task.input):  # warnings name the input
            res = dict(job(task) or {})
        if not out.exists():
            raise WriteError(f"{out}: the job finished but wrote no output")
        record = dict(res.get("record") or {})
        record.setdefault("format", RECORD_FORMAT)
        record.setdefault("medsat_sr_version", __version__)
        record.setdefault("created", now_iso())
        in_sha = (record.get("input") or {}).get("sha256") if isinstance(record.get("input"), Mapping) else None
        in_sha = in_sha or _sha(Path(task.input))
        record["batch"] = {
            "run": task.run,
            "index": task.index,
            "input": task.input,
            "input_sha256": in_sha,
            "job_hash": task.job_hash,
            "config_hash": task.config_hash,
            "output_sha256": _sha(out),
        }
        write_record(record, out)
        outcome.update(
            status="done",
            output=str(out),
            sidecar=str(side),
            method=res.get("method"),
            fallback=bool(res.get("fallback")),
            fallback_reason=res.get("fallback_reason"),
            input_sha256=in_sha,
        )
    except Exception as exc:  # noqa: BLE001 - one input's failure must not stop the batch
        for p in watched:  # nothing half-done stays behind
            if p.exists() and _stat_key(p) != before[p]:
                _remove(p)
        if (p := sidecar_path(out)).exists() and not out.exists():
            _remove(p)
        if isinstance(exc, MedsatError):
            msg = _one_line(str(exc))
        else:
            msg = f"internal error: {type(exc).__name__}: {_one_line(str(exc))}"
            logger.debug("input %s failed", task.input, exc_info=True)
        outcome.update(status="failed", error=msg, error_type=type(exc).__name__)
    outcome["seconds"] = round(time.perf_counter() - t0, 3)
    if task.models:
        outcome["model_loads"] = _CACHE_STATS["loads"]
    with contextlib.suppress(Exception):
        import torch

        outcome["torch_threads"] = torch.get_num_threads()
    return outcome


# =============================================================== executors
def _cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def _check_workers(workers: int, torch_threads: int | None) -> int:
    """Check the worker count and the torch threads per worker.

    Args:
        workers: 0 (inline) or the number of LocalCluster processes.
        torch_threads: torch threads per worker, or None for the default.

    Returns:
        ``workers`` as an int.

    Raises:
        ConfigError: ``workers`` is None or below 0, or ``torch_threads`` is below 1.
    """
    if workers is None or int(workers) < 0:
        raise ConfigError(f"workers must be >= 0, got {workers}")
    if torch_threads is not None and int(torch_threads) < 1:
        raise ConfigError(f"torch threads must be >= 1, got {torch_threads}")
    return int(workers)


def _worker_torch_threads(workers: int, scheduler: str | None, torch_threads: int | None) -> int | None:
    """Torch threads per worker: as given, or ``cores // workers`` on a LocalCluster.

    Args:
        workers: the number of LocalCluster processes (0: inline).
        scheduler: the address of an external Dask scheduler, or None.
        torch_threads: the threads asked for, or None.

    Returns:
        The threads per worker, or None to leave torch untouched.
    """
    if scheduler is None and workers > 0 and torch_threads is None:
        return max(1, _cores() // workers)
    return torch_threads



def _run_inline(job: Callable[[Task], Mapping[str, Any]], tasks: list[Task]) -> Iterator[tuple[Task, dict[str, Any]]]:
    for task in tasks:
        yield task, _execute(job, task)


@contextlib.contextmanager
def _quiet_dask() -> Iterator[None]:
    """Dask's own INFO chatter (scheduler and nanny start/stop) off, unless medsat_sr logs debug messages."""
    if logging.getLogger("medsat_sr").getEffectiveLevel() <= logging.DEBUG:
        yield
        return
    lg = logging.getLogger("distributed")
    old = lg.level
    lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        lg.setLevel(old)


@contextlib.contextmanager
def _dask_client(workers: int, scheduler: str | None) -> Iterator[Any]:
    with _quiet_dask():
        yield from _dask_client_inner(workers, scheduler)


def _dask_client_inner(workers: int, scheduler: str | None) -> Iterator[Any]:
    try:
        from distributed import Client, LocalCluster
    except ImportError as exc:  # pragma: no cover - a declared dependency
        raise ConfigError("parallel batches need dask.distributed: pip install 'dask[distributed]'") from exc
    if scheduler is not None:
        try:
            client = Client(scheduler, timeout=SCHEDULER_TIMEOUT, set_as_default=False)
        except (OSError, TimeoutError) as exc:
            raise ConfigError(f"cannot connect to the Dask scheduler at {scheduler!r}: {exc}") from None
        try:
            yield client
        finally:
            client.close()
        return
    cluster = LocalCluster(
        n_workers=workers,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
        silence_logs=logging.ERROR,
    )
    try:
        client = Client(cluster, set_as_default=False)
        try:
            yield client
        finally:
            client.close()
    finally:
        cluster.close()


def _run_dask(
    job: Callable[[Task], Mapping[str, Any]], tasks: list[Task], workers: int, scheduler: str | None
) -> Iterator[tuple[Task, dict[str, Any]]]:
    from distributed import as_completed

    with _dask_client(workers, scheduler) as client:
        futures = {}
        for task in tasks:
            fut = client.submit(_execute, job, task, key=f"medsat-batch-{task.run}-{task.index}", pure=False, retries=0)
            futures[fut] = task
        try:
            for fut in as_completed(list(futures), loop=client.loop):
                task = futures.pop(fut)
                try:
                    outcome = fut.result()
                except Exception as exc:  # noqa: BLE001 - a worker died (KilledWorker) or the task could not run
                    outcome = {
                        "index": task.index,
                        "status": "failed",
                        "error": f"the task did not complete: {type(exc).__name__}: {_one_line(str(exc))}",
                        "error_type": type(exc).__name__,
                    }
                fut.release()
                yield task, outcome
        finally:
            for fut in futures:
                fut.cancel()

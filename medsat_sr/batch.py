"""Batch jobs: one recipe over many inputs, resumable, failure-isolated, on Dask.

:func:`run_batch` (``medsat-sr batch``) applies one job (by default
:func:`medsat_sr.inference.upscale` with a config, a checkpoint or a
classical method) to many inputs and writes one output per input into an
output folder.

Inputs
------
* files (NIfTI, GeoTIFF, a DICOM file) and folders (one DICOM series, or one
  band folder, each folder is *one* input);
* glob patterns (``"scans/*.nii.gz"``, ``"tiles/**/*.tif"``), expanded in
  sorted order; a pattern that matches nothing is recorded as a failed input;
* a CSV manifest (``--manifest inputs.csv``) with one row per input and
  per-row settings, see :func:`read_manifest`.

Output names
------------
``OUT_DIR / output.name_template`` (config key, default ``{stem}_sr{ext}``)
with ``{stem}`` (input name without extension; a folder's name), ``{ext}``
(the output extension: the input's own format unless ``output.format`` says
otherwise, ``""`` for a DICOM series or band folder), ``{name}`` (the
config's name) and ``{index}`` (position in the batch). Names depend only on
the inputs and the config, so a rerun finds the same outputs; two inputs
that would get the same name are refused before anything runs.

Run manifest
------------
``OUT_DIR/batch.jsonl`` gets one JSON line per input per run (append-only,
flushed and fsynced line by line): ``run``, ``time``, ``index``, ``input``,
``status`` (``done``, ``skipped`` or ``failed``), ``output``, ``sidecar``,
``seconds``, ``error``, ``error_type``, ``method``, ``fallback``,
``fallback_reason``, ``input_sha256``, ``job_hash``, ``worker``
(``host:pid``), ``torch_threads`` and ``model_loads`` (checkpoints loaded so
far by that worker process; ``null`` without a checkpoint).

Resume rule
-----------
An input is skipped (``status: skipped``) when its output and its sidecar
``<output>.json`` exist and the sidecar's ``batch`` section matches: the
input's sha256 now, the job hash of this run (the config hash without
``data.inputs``, plus per-row overrides, method, checkpoint checksums, scale
and reader options) and the output's sha256 now. Anything else (no sidecar,
a sidecar from ``medsat-sr upscale``, a changed input, config or output) is
redone. ``force=True`` redoes everything. Outputs and sidecars are written
atomically (temporary name, then rename) and the sidecar after the output,
so a killed run leaves nothing that a rerun mistakes for done; stale
temporary files of planned outputs are removed at the start of a run.

Failure isolation
-----------------
Each input runs in its own try block; a :class:`~medsat_sr.errors.MedsatError`
(or any other exception) fails that input alone, its message goes to
``batch.jsonl``, and whatever the failed attempt wrote is removed. A learned
model that does not beat cubic on its validation split follows the fallback
rule of :func:`~medsat_sr.inference.upscale` (cubic output, ``fallback:
true`` and the reason in the line and the sidecar).

Execution
---------
* ``workers=0``: inline, in this process.
* ``workers=N``: a :class:`dask.distributed.LocalCluster` of N worker
  processes with one task thread each and ``max(1, cores // N)`` torch
  threads each, so N x torch threads <= cores.
* ``scheduler="tcp://host:8786"``: tasks go to an existing Dask cluster
  (``dask scheduler`` / ``dask worker``, or dask-jobqueue on SLURM). Workers
  read inputs and write outputs at the same absolute paths, so those must be
  on a shared file system, and medsat_sr must be installed on every worker.

Checkpoints are checked once before anything runs (metadata, safetensors
framing, weights checksum; a pickle is refused unopened) and loaded once per
worker process (a module-level cache keyed by the checksum of the weights
and metadata, and the device), not once per input. Only ``batch.jsonl`` is
written by the submitting process, under an exclusive ``flock`` so that two
runs cannot share an output folder; each worker writes its own outputs and
sidecars.

A config may come with ``method`` or ``models``: it then supplies the
settings (inference, output, names) and the scale; alone, a self-supervised
config fits a model on every input.

Exit codes (``medsat-sr batch``): 0 every input done or skipped; 4 at least
one input failed (the failed inputs are listed on stderr); 2/3 as for every
command when the batch itself cannot start (bad options or config,
unwritable output folder).
"""

from __future__ import annotations

import contextlib
import glob
import json
import logging
import os
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medsat_sr import zoo
from medsat_sr.batch_execute import (
    Task,
    _check_workers,
    _checkpoint_id,
    _remove,
    _run_dask,
    _run_inline,
    _worker_torch_threads,
    model_cache_info,
    upscale_job,
)
from medsat_sr.batch_inputs import (
    MANIFEST_COLUMNS,
    InputSpec,
    _collect_specs,
    expand_inputs,
    read_manifest,
)
from medsat_sr.batch_journal import MANIFEST_NAME, _full_line, _Journal, _open_journal, read_jsonl
from medsat_sr.batch_plan import (
    Planned,
    check_classical_scale,
    check_method,
    done_reason,
    load_base_config,
    output_name,
    plan,
    previous_outcome,
    scale_value,
    stale_parts,
)
from medsat_sr.config import JobConfig
from medsat_sr.errors import ConfigError, MedsatError, WriteError
from medsat_sr.progress import Progress
from medsat_sr.trust import sidecar_path

__all__ = [
    "run_batch",
    "BatchResult",
    "Task",
    "InputSpec",
    "upscale_job",
    "read_manifest",
    "expand_inputs",
    "output_name",
    "read_jsonl",
    "failure_text",
    "MANIFEST_NAME",
    "MANIFEST_COLUMNS",
    "model_cache_info",
]

logger = logging.getLogger(__name__)

# =============================================================== data types


@dataclass
class BatchResult:
    """What :func:`run_batch` returns.

    Attributes:
        run: the run id (also in every ``batch.jsonl`` line of this run).
        manifest: path of ``batch.jsonl``.
        items: the lines written for this run, in input order.
        seconds: wall time of the run.
    """

    run: str
    manifest: Path
    items: list[dict[str, Any]]
    seconds: float

    def _count(self, status: str) -> int:
        return sum(1 for it in self.items if it["status"] == status)

    @property
    def done(self) -> int:
        """Inputs computed in this run."""
        return self._count("done")

    @property
    def skipped(self) -> int:
        """Inputs already done by an earlier run (resumed)."""
        return self._count("skipped")

    @property
    def failed(self) -> int:
        """Inputs that failed."""
        return self._count("failed")

    @property
    def ok(self) -> bool:
        """True when no input failed."""
        return self.failed == 0

    @property
    def failures(self) -> list[dict[str, Any]]:
        """The failed lines."""
        return [it for it in self.items if it["status"] == "failed"]


# =============================================================== driver
def _progress_bar(total: int, enabled: bool) -> Any:
    """A bar on a terminal, one line per 10 % elsewhere (:class:`medsat_sr.progress.Progress`)."""
    return Progress(total, "batch", unit="input", enabled=enabled and total > 0)


def _output_folder(output_dir: str | os.PathLike[str]) -> Path:
    """The absolute output folder, checked not to be a file.

    Args:
        output_dir: the output folder as given.

    Returns:
        The absolute, user-expanded path.

    Raises:
        WriteError: the path exists and is not a folder.
    """
    out_dir = Path(os.path.abspath(Path(output_dir).expanduser()))
    if out_dir.exists() and not out_dir.is_dir():
        raise WriteError(f"{out_dir}: exists and is not a folder")
    return out_dir


def _run_id() -> str:
    """A new run id: the UTC time and six random hex digits."""
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + "-" + uuid.uuid4().hex[:6]


def _input_text(item: Planned) -> str:
    """The input of a planned item as written in ``batch.jsonl``: its path, else its source text."""
    return str(item.spec.path) if item.spec.path else item.spec.source


def _dry_run_items(planned: Sequence[Planned], force: bool) -> list[dict[str, Any]]:
    """The plan as lines of status ``run``, ``skip`` or ``failed``; nothing is written.

    Args:
        planned: the planned inputs.
        force: whether complete outputs are redone.

    Returns:
        One line per planned input, in order.
    """
    items = []
    for it in planned:
        line = {"index": it.index, "input": _input_text(it)}
        if it.task is None:
            line.update(status="failed", error=it.error)
        else:
            reason = "force" if force else done_reason(it.task)
            line.update(status="skip" if reason is None else "run", output=it.task.output, reason=reason)
        items.append(line)
    return items


class _Recorder:
    """Writes the ``batch.jsonl`` lines of one run, keeps them and shows the tally.

    Args:
        run: the run id.
        journal: the open, locked run manifest.
        total: the number of planned inputs.
        progress: whether to show a progress bar.
        on_item: called with each line as it is written, or None.
    """

    def __init__(
        self,
        run: str,
        journal: _Journal,
        total: int,
        progress: bool,
        on_item: Callable[[dict[str, Any]], None] | None,
    ) -> None:
        self.run = run
        self.journal = journal
        self.total = total
        self.on_item = on_item
        self.lines: dict[int, dict[str, Any]] = {}
        self.counts = {"done": 0, "skipped": 0, "failed": 0}
        self.bar = _progress_bar(total, progress)

    def record(self, line: dict[str, Any]) -> None:
        """Complete ``line``, append it to the journal, count and log it, and advance the bar.

        Args:
            line: the partial line (at least ``index`` and ``status``).
        """
        full = _full_line(self.run, line)
        self.journal.write(full)
        self.lines[full["index"]] = full
        self.counts[full["status"]] += 1
        if full["status"] == "failed":
            logger.info("failed: %s", _with_input(full["input"], full["error"]))
        elif full["fallback"]:
            logger.info("%s: fell back to cubic: %s", full["input"], full["fallback_reason"])
        counts = self.counts
        self.bar.set_postfix_str(
            f"done={counts['done'] + counts['skipped']} (skipped {counts['skipped']}) failed={counts['failed']} "
            f"left={self.total - len(self.lines)}",
            refresh=False,
        )
        self.bar.update(1)
        if self.on_item is not None:
            self.on_item(full)

    def items(self) -> list[dict[str, Any]]:
        """The lines written so far, in input order."""
        return [self.lines[i] for i in sorted(self.lines)]

    def close(self) -> None:
        """Close the progress bar, then the journal."""
        self.bar.close()
        self.journal.close()


def _triage(planned: Sequence[Planned], force: bool, record: Callable[[dict[str, Any]], None]) -> list[Task]:
    """Record the failed and already-done inputs; return the tasks left to run.

    Args:
        planned: the planned inputs.
        force: whether complete outputs are redone.
        record: writes one ``batch.jsonl`` line.

    Returns:
        The tasks to run, in input order.
    """
    tasks: list[Task] = []
    for it in planned:
        if it.task is None:
            record(
                {
                    "index": it.index,
                    "input": _input_text(it),
                    "status": "failed",
                    "error": it.error,
                    "error_type": it.error_type,
                }
            )
            continue
        reason = "force" if force else done_reason(it.task)
        if reason is None:
            record(
                {
                    "index": it.index,
                    "input": it.task.input,
                    "status": "skipped",
                    "output": it.task.output,
                    "sidecar": str(sidecar_path(it.task.output)),
                    "job_hash": it.task.job_hash,
                    **previous_outcome(it.task.output),
                }
            )
            continue
        logger.info("%s: will run (%s)", it.task.input, reason)
        tasks.append(it.task)
    return tasks


def _remove_stale_parts(tasks: Sequence[Task]) -> None:
    """Remove the temporary files that interrupted writes of these tasks' outputs left behind.

    Args:
        tasks: the tasks about to run.
    """
    for p in stale_parts(Path(t.output) for t in tasks):
        logger.info("removing %s, left by an interrupted write", p)
        _remove(p)


def _run_tasks(
    job: Callable[[Task], Mapping[str, Any]],
    tasks: list[Task],
    record: Callable[[dict[str, Any]], None],
    *,
    workers: int,
    scheduler: str | None,
) -> None:
    """Run the tasks inline or on Dask and record each outcome as it arrives.

    Args:
        job: the per-input job.
        tasks: the tasks to run (not empty).
        record: writes one ``batch.jsonl`` line.
        workers: 0 runs inline; N > 0 starts a LocalCluster of up to N processes.
        scheduler: address of an existing Dask scheduler, or None.
    """
    if scheduler is None and workers == 0:
        stream = _run_inline(job, tasks)
    else:
        stream = _run_dask(job, tasks, min(workers, len(tasks)) if scheduler is None else 0, scheduler)
    with contextlib.closing(stream):  # an error here still shuts a cluster down
        for task, outcome in stream:
            record(
                {
                    "input": task.input,
                    "output": task.output if outcome.get("status") == "done" else None,
                    "job_hash": task.job_hash,
                    **outcome,
                }
            )


def run_batch(
    inputs: Sequence[str | os.PathLike[str]],
    output_dir: str | os.PathLike[str],
    *,
    config: Any = None,
    overrides: Sequence[str] = (),
    manifest: str | os.PathLike[str] | None = None,
    models: Sequence[str | os.PathLike[str]] = (),
    method: str | None = None,
    scale: float | Sequence[float] | None = None,
    read_options: Mapping[str, Any] | None = None,
    workers: int = 0,
    scheduler: str | None = None,
    torch_threads: int | None = None,
    force: bool = False,
    dry_run: bool = False,
    progress: bool = False,
    job: Callable[[Task], Mapping[str, Any]] | None = None,
    on_item: Callable[[dict[str, Any]], None] | None = None,
) -> BatchResult:
    """Run one job over many inputs into ``output_dir``; resumable, failure-isolated.

    See the module docstring for inputs, output names, the run manifest,
    the resume rule and execution.

    Args:
        inputs: files, folders and glob patterns.
        output_dir: the output folder (created).
        config: a job config (built-in name, path, mapping or JobConfig).
        overrides: ``--set`` items applied to every input.
        manifest: a CSV manifest of more inputs with per-row settings (:func:`read_manifest`).
        models: checkpoints (one: a model; several: an equal-weight ensemble).
        method: a classical method (``cubic``, ...), instead of a model.
        scale: scale factor(s) for every input (default: the config's or the model's).
        read_options: reader options for every input (DICOM ``series``, ``volume``, ``resample``).
        workers: 0 runs inline; N > 0 starts a LocalCluster of N processes.
        scheduler: address of an existing Dask scheduler (``workers`` is then ignored).
        torch_threads: torch threads per worker (default: ``cores // workers``
            on a LocalCluster; untouched inline and on an external cluster).
        force: redo inputs whose outputs are already complete.
        dry_run: plan only: write nothing, return the plan as ``items``
            (status ``run``, ``skip`` or ``failed``).
        progress: show a progress bar (done, failed, remaining).
        job: the per-input job (default :func:`upscale_job`): a picklable
            module-level function ``job(task) -> {"record", "method",
            "fallback", "fallback_reason"}`` that writes ``task.output``.
        on_item: called with each ``batch.jsonl`` line as it is written.

    Returns:
        The :class:`BatchResult`.

    Raises:
        ConfigError: invalid options or config, colliding output names, no inputs.
        DataError: a manifest or checkpoint that cannot be read.
        WriteError: the output folder or ``batch.jsonl`` cannot be written,
            or another batch holds the folder.
    """
    t_start = time.perf_counter()
    job = job or upscale_job
    workers = _check_workers(workers, torch_threads)
    # a shipped model's name stays a name: upscale scores it on each input, with the config it serves
    models = [str(m) if zoo.is_shipped(str(m)) else str(Path(os.path.abspath(Path(m).expanduser()))) for m in models]
    pan_route = check_method(method, models, config)
    base_config = load_base_config(config, overrides, method, models)
    scale_v = scale_value(scale)
    model_hashes = [_checkpoint_id(zoo.resolve(m)) for m in models]

    specs = _collect_specs(inputs, manifest)
    check_classical_scale(specs, method=method, pan_route=pan_route, base_config=base_config, scale=scale_v)
    out_dir = _output_folder(output_dir)
    threads = _worker_torch_threads(workers, scheduler, torch_threads)
    run = _run_id()
    planned = plan(
        specs, out_dir, base_config=base_config, config_arg=config, overrides=overrides, method=method, models=models,
        model_hashes=model_hashes, scale=scale_v, read_options=dict(read_options or {}), run=run, torch_threads=threads,
    )

    if dry_run:
        items = _dry_run_items(planned, force)
        return BatchResult(run=run, manifest=out_dir / MANIFEST_NAME, items=items, seconds=time.perf_counter() - t_start)

    recorder = _Recorder(run, _open_journal(out_dir), len(planned), progress, on_item)
    try:
        tasks = _triage(planned, force, recorder.record)
        _remove_stale_parts(tasks)
        if tasks:
            _run_tasks(job, tasks, recorder.record, workers=workers, scheduler=scheduler)
    finally:
        recorder.close()
    items = recorder.items()
    return BatchResult(run=run, manifest=out_dir / MANIFEST_NAME, items=items, seconds=time.perf_counter() - t_start)


def failure_text(line: Mapping[str, Any]) -> str:
    """One line about a failed input: its path and the error (the path once)."""
    return _with_input(line.get("input"), line.get("error"))


def _with_input(input: str | None, error: str | None) -> str:
    """``error`` prefixed with the input, unless it already names it."""
    text = error or "unknown error"
    if input and not text.startswith(input):
        return f"{input}: {text}"
    return text



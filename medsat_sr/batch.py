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
import hashlib
import json
import logging
import os
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medsat_sr.baselines import METHODS
from medsat_sr.batch_execute import (
    Task,
    _check_workers,
    _checkpoint_id,
    _one_line,
    _remove,
    _run_dask,
    _run_inline,
    _sha,
    _worker_torch_threads,
    model_cache_info,
    upscale_job,
)
from medsat_sr.batch_inputs import (
    _RASTER_SUFFIXES,
    MANIFEST_COLUMNS,
    InputSpec,
    _collect_specs,
    _strip_ext,
    expand_inputs,
    read_manifest,
)
from medsat_sr.batch_journal import MANIFEST_NAME, _full_line, _Journal, _open_journal, read_jsonl
from medsat_sr.config import JobConfig, OutputConfig, load_config
from medsat_sr.errors import ConfigError, MedsatError, WriteError
from medsat_sr.inference.multi import is_fusion_method
from medsat_sr.inference.route_pansharpen import is_pansharpen
from medsat_sr.pansharpen.classical import METHODS as PAN_METHODS
from medsat_sr.io import detect_format
from medsat_sr.overrides import parse_override
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
class _Planned:
    index: int
    spec: InputSpec
    task: Task | None = None
    error: str | None = None
    error_type: str | None = None


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


# =============================================================== planning
def _output_section(cfg: Any, overrides: Sequence[str]) -> Any:
    """The ``output`` section: the config's, or built from ``output.*`` overrides."""
    if cfg is not None:
        return cfg.output
    from pydantic import ValidationError

    data: dict[str, Any] = {}
    for item in overrides:
        parts, value = parse_override(item)
        if parts[0] == "output" and len(parts) == 2:
            data[parts[1]] = value
    try:
        return OutputConfig.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise ConfigError(f"--set output.{'.'.join(str(p) for p in err['loc'])}: {err['msg']}") from None


def _output_ext(path: Path, kind: str, fmt: str) -> str:
    """The output extension (with its dot; ``""`` for folders) of an input of ``kind``."""
    if fmt == "nifti":
        return ".nii.gz"
    if fmt == "geotiff":
        return "" if kind == "bandset" else ".tif"
    if fmt == "dicom":
        return ""
    # auto: the input's own format
    if kind == "nifti":
        return _strip_ext(path.name)[1].lower() if path.name.lower().endswith((".nii", ".nii.gz")) else ".nii.gz"
    if kind == "geotiff":
        ext = _strip_ext(path.name)[1].lower()
        return ext if ext in _RASTER_SUFFIXES else ".tif"
    return ""  # DICOM series folder, band folder


def output_name(template: str, path: Path, *, kind: str, index: int, name: str, fmt: str = "auto") -> str:
    """The output file name of one input (``output.name_template`` filled in).

    Args:
        template: the template (``{stem}``, ``{ext}``, ``{name}``, ``{index}``).
        path: the input.
        kind: :func:`medsat_sr.io.detect_format` of the input.
        index: the input's position in the batch.
        name: the config's name.
        fmt: ``output.format`` (``auto`` keeps the input's format; a COG is a ``.tif``).
    """
    stem = path.name if path.is_dir() else _strip_ext(path.name)[0]
    ext = _output_ext(path, kind, fmt)
    return template.format(stem=stem, ext=ext, name=name, index=index)


def _output_kind(path: Path, cfg: Any, method: str | None, pan: bool) -> str:
    """The kind of one input's output: the input's format, or what a pan-sharpening or multi-input route writes.

    A band folder with a pan band gives one GeoTIFF; a folder of dates (revisit
    config or fusion method) one GeoTIFF; a folder of stacks (multi-stack
    config) one NIfTI volume.
    """
    if pan or is_fusion_method(method) or (cfg is not None and cfg.revisit is not None):
        return "geotiff"
    if cfg is not None and cfg.multistack is not None:
        return "nifti"
    return detect_format(path)


def _hash_json(data: Any) -> str:
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _plan(
    specs: list[InputSpec],
    out_dir: Path,
    *,
    base_config: Any,
    config_arg: Any,
    overrides: Sequence[str],
    method: str | None,
    models: Sequence[str],
    model_hashes: Sequence[str],
    scale: float | list[float] | None,
    read_options: Mapping[str, Any],
    run: str,
    torch_threads: int | None,
) -> list[_Planned]:
    planned: list[_Planned] = []
    # pan-sharpening writes one GeoTIFF on the pan grid, also for a band-folder input
    pan = is_pansharpen(method, config_arg if isinstance(config_arg, (str, os.PathLike)) else None, None)
    for index, spec in enumerate(specs):
        item = _Planned(index=index, spec=spec)
        planned.append(item)
        if spec.error is not None:
            item.error, item.error_type = spec.error, spec.error_type
            continue
        assert spec.path is not None
        try:
            cfg = base_config
            if base_config is not None and spec.overrides:
                cfg = load_config(config_arg, [*overrides, *spec.overrides])
            row_overrides = tuple(spec.overrides) if base_config is None else ()
            all_overrides = (*overrides, *row_overrides) if base_config is None else ()
            out_sec = _output_section(cfg, all_overrides)
            kind = _output_kind(spec.path, cfg, method, pan)
            opts = {**dict(read_options), **spec.read_options}
            row_scale = spec.scale if spec.scale is not None else scale
            if spec.output is not None:
                out = spec.output if spec.output.is_absolute() else out_dir / spec.output
            else:
                name = (cfg.name if cfg is not None else "") or (method or "sr")
                out = out_dir / output_name(
                    out_sec.name_template, spec.path, kind=kind, index=index, name=name,
                    fmt=out_sec.format,
                )
            config_hash = cfg.config_hash(exclude=["data.inputs"]) if cfg is not None else None
            job_hash = _hash_json(
                {
                    "config_hash": config_hash,
                    "overrides": list(all_overrides),
                    "method": method,
                    "models": list(model_hashes),
                    "scale": row_scale,
                    "read_options": opts,
                }
            )
            item.task = Task(
                index=index,
                input=str(spec.path),
                output=str(Path(os.path.abspath(out))),
                config=cfg,
                overrides=tuple(all_overrides),
                method=method,
                models=tuple(models),
                model_hashes=tuple(model_hashes),
                scale=row_scale,
                read_options=opts,
                job_hash=job_hash,
                config_hash=config_hash,
                run=run,
                torch_threads=torch_threads,
            )
        except MedsatError as exc:
            item.error, item.error_type = _one_line(str(exc)), type(exc).__name__
    # outputs must not collide
    seen: dict[str, _Planned] = {}
    clashes: list[str] = []
    for item in planned:
        if item.task is None:
            continue
        key = os.path.normcase(item.task.output)
        if key in seen:
            clashes.append(f"{seen[key].task.input} and {item.task.input} -> {item.task.output}")  # type: ignore[union-attr]
        else:
            seen[key] = item
    if clashes:
        raise ConfigError(
            f"{len(clashes)} output name(s) collide: {'; '.join(clashes[:3])}"
            + (" ..." if len(clashes) > 3 else "")
            + "; add {index} to output.name_template (e.g. --set 'output.name_template={index:04d}_{stem}_sr{ext}') "
            "or give explicit names in a manifest's output column"
        )
    return planned


# =============================================================== resume
def _done_reason(task: Task) -> str | None:
    """``None`` when ``task``'s output is complete and current; otherwise why it must run."""
    out = Path(task.output)
    side = sidecar_path(out)
    if not out.exists():
        return "no output"
    if not side.is_file():
        return "no sidecar"
    try:
        rec = json.loads(side.read_text(encoding="utf-8"))
        b = rec["batch"]
        recorded = (b["job_hash"], b["input_sha256"], b["output_sha256"])
    except (OSError, ValueError, KeyError, TypeError):
        return "sidecar without a batch record"
    if recorded[0] != task.job_hash:
        return "config or options changed"
    try:
        if recorded[1] != _sha(Path(task.input)):
            return "input changed"
        if recorded[2] != _sha(out):
            return "output changed"
    except MedsatError as exc:
        return f"cannot check: {exc}"
    return None


def _stale_parts(outputs: Iterable[Path]) -> list[Path]:
    """Temporary files/folders left by a killed atomic write of these outputs."""
    found: list[Path] = []
    for out in outputs:
        for p in (out, sidecar_path(out)):
            folder = p.parent
            if not folder.is_dir():
                continue
            for pattern in (f".{glob.escape(p.stem)}.*.part*", f".{glob.escape(p.name)}.*.part", f".{glob.escape(p.name)}.*.old"):
                found.extend(Path(m) for m in glob.glob(str(folder / pattern)))
    return sorted(set(found))


# =============================================================== driver
def _progress_bar(total: int, enabled: bool) -> Any:
    """A bar on a terminal, one line per 10 % elsewhere (:class:`medsat_sr.progress.Progress`)."""
    return Progress(total, "batch", unit="input", enabled=enabled and total > 0)


def _check_method(method: str | None, models: Sequence[str], config: Any) -> bool:
    """Check that there is exactly one thing to run and that a method is known.

    Args:
        method: a classical, fusion or pan-sharpening method, or None.
        models: the checkpoint paths.
        config: the ``config`` argument of :func:`run_batch`.

    Returns:
        True when the job is a pan-sharpening route.

    Raises:
        ConfigError: both a method and models, nothing to run, or an unknown method.
    """
    if method is not None and models:
        raise ConfigError("give either a classical method or models, not both")
    if config is None and not models and method is None:
        raise ConfigError("nothing to run: give a config (--config), a checkpoint (--model) or a method (--method)")
    pan_route = is_pansharpen(method, config if isinstance(config, (str, os.PathLike)) else None, None)
    if method is not None and not pan_route and not is_fusion_method(method) and method not in METHODS:
        raise ConfigError(f"unknown method {method!r}; expected one of {[*METHODS, *PAN_METHODS]}")
    return pan_route


def _load_base_config(
    config: Any, overrides: Sequence[str], method: str | None, models: Sequence[str]
) -> JobConfig | None:
    """Load the batch's config with its overrides, or check the overrides allowed without one.

    Args:
        config: the ``config`` argument of :func:`run_batch`, or None.
        overrides: ``--set`` items applied to every input.
        method: the classical method, or None.
        models: the checkpoint paths.

    Returns:
        The loaded config, or None without ``config``.

    Raises:
        ConfigError: a supervised config with neither method nor models, or,
            without a config, an override outside ``inference.*``, ``output.*``
            and ``bands.others``.
    """
    base_config = load_config(config, list(overrides)) if config is not None else None
    if base_config is not None and method is None and not models:
        if base_config.train.mode == "supervised":
            raise ConfigError(
                f"{base_config.source}: a supervised config trains on references first (medsat-sr train); "
                "run the batch with --model CKPT, or use a self-supervised config"
            )
    if base_config is None:
        for item in overrides:  # the same rule as upscale without a config, checked once here
            parts, _ = parse_override(item)
            if parts[0] not in ("inference", "output", "bands") or len(parts) != 2:
                raise ConfigError(
                    f"--set {item!r}: without --config only inference.*, output.* and bands.others can be set"
                )
    return base_config


def _scale_value(scale: float | Sequence[float] | None) -> float | list[float] | None:
    """The scale argument as a float, a list of floats, or None.

    Args:
        scale: one factor, one factor per axis, or None.

    Returns:
        The factor(s) as floats, or None.
    """
    if scale is None or isinstance(scale, (int, float)):
        return None if scale is None else float(scale)
    return [float(v) for v in scale]


def _check_classical_scale(
    specs: Sequence[InputSpec],
    *,
    method: str | None,
    pan_route: bool,
    base_config: JobConfig | None,
    scale: float | list[float] | None,
) -> None:
    """Check that a classical method without a config has a scale for every readable input.

    Args:
        specs: the input specs.
        method: the classical method, or None.
        pan_route: whether the job is a pan-sharpening route (its scale comes from the pan band).
        base_config: the loaded config, or None.
        scale: the batch-wide scale, or None.

    Raises:
        ConfigError: a classical method with no scale from the options, a config or the manifest.
    """
    if (method is not None and not pan_route and base_config is None and scale is None
            and any(s.scale is None for s in specs if s.error is None)):
        raise ConfigError("a classical method needs a scale: give --scale (e.g. 2 or 1,1,4), a config, or a manifest scale column")


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


def _input_text(item: _Planned) -> str:
    """The input of a planned item as written in ``batch.jsonl``: its path, else its source text."""
    return str(item.spec.path) if item.spec.path else item.spec.source


def _dry_run_items(planned: Sequence[_Planned], force: bool) -> list[dict[str, Any]]:
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
            reason = "force" if force else _done_reason(it.task)
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


def _triage(planned: Sequence[_Planned], force: bool, record: Callable[[dict[str, Any]], None]) -> list[Task]:
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
        reason = "force" if force else _done_reason(it.task)
        if reason is None:
            record(
                {
                    "index": it.index,
                    "input": it.task.input,
                    "status": "skipped",
                    "output": it.task.output,
                    "sidecar": str(_sidecar(it.task.output)),
                    "job_hash": it.task.job_hash,
                    **_previous(it.task.output),
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
    for p in _stale_parts(Path(t.output) for t in tasks):
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
    models = [str(Path(os.path.abspath(Path(m).expanduser()))) for m in models]
    pan_route = _check_method(method, models, config)
    base_config = _load_base_config(config, overrides, method, models)
    scale_v = _scale_value(scale)
    model_hashes = [_checkpoint_id(m) for m in models]

    specs = _collect_specs(inputs, manifest)
    _check_classical_scale(specs, method=method, pan_route=pan_route, base_config=base_config, scale=scale_v)
    out_dir = _output_folder(output_dir)
    threads = _worker_torch_threads(workers, scheduler, torch_threads)
    run = _run_id()
    planned = _plan(
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


def _sidecar(output: str) -> Path:
    return sidecar_path(output)


def _previous(output: str) -> dict[str, Any]:
    """Method and fallback of a skipped input, from its sidecar."""
    try:
        rec = json.loads(_sidecar(output).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    fb = rec.get("fallback") if isinstance(rec.get("fallback"), Mapping) else {}
    return {
        "method": rec.get("method"),
        "fallback": bool(fb.get("applied")),
        "fallback_reason": fb.get("reason"),
        "input_sha256": (rec.get("batch") or {}).get("input_sha256"),
    }

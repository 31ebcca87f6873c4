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
import csv
import glob
import hashlib
import json
import logging
import os
import shutil
import socket
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medsat_sr import checkpoint
from medsat_sr._atomic import check_writable
from medsat_sr._schema import check_path
from medsat_sr._version import __version__
from medsat_sr.baselines import METHODS
from medsat_sr.batch_journal import _Journal, _lock, read_jsonl
from medsat_sr.checkpoint import checkpoint_paths, model_hash, read_metadata
from medsat_sr.config import JobConfig, OutputConfig, load_config, parse_override
from medsat_sr.errors import ConfigError, DataError, MedsatError, ModelError, WriteError
from medsat_sr.fusion import Member
from medsat_sr.inference import upscale
from medsat_sr.inference.members import load_member
from medsat_sr.inference.multi import is_fusion_method
from medsat_sr.inference.route_pansharpen import is_pansharpen
from medsat_sr.pansharpen.classical import METHODS as PAN_METHODS
from medsat_sr.io import detect_format
from medsat_sr.logs import naming
from medsat_sr.progress import Progress
from medsat_sr.trust import RECORD_FORMAT, now_iso, sha256_path, sidecar_path, write_record

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

#: The run manifest written into the output folder.
MANIFEST_NAME = "batch.jsonl"
#: How long to try to reach an existing Dask scheduler (``--scheduler``).
SCHEDULER_TIMEOUT = "20s"

#: Columns of a CSV manifest with a fixed meaning (any other column is a config key, see :func:`read_manifest`).
MANIFEST_COLUMNS = {
    "input": "file, folder or glob (relative paths are relative to the manifest's folder); required",
    "output": "output name or path (relative: inside OUT_DIR); default: output.name_template",
    "scale": "scale factor(s) for this input: 2 or 1,1,4",
    "series": "DICOM series (UID or number) to read from a folder holding several",
    "volume": "volume K (0-based) of a 4D DICOM series",
    "resample": "true: resample tilted/gapped DICOM series instead of refusing",
    "set": "config overrides for this input, KEY=VALUE items separated by ';'",
}

_VOLUME_SUFFIXES = (".nii.gz", ".nii", ".dcm")
_RASTER_SUFFIXES = (".tif", ".tiff")


# =============================================================== data types
@dataclass
class InputSpec:
    """One input of a batch, before planning.

    Attributes:
        source: what the user wrote (a path, a glob, or ``manifest:ROW``).
        path: the input file or folder (absolute), ``None`` when ``error`` is set.
        overrides: per-input config overrides (``KEY=VALUE``).
        read_options: per-input reader options (DICOM ``series``, ``volume``, ``resample``).
        scale: per-input scale factor(s).
        output: an explicit output path for this input.
        error: why this input cannot be run (a glob that matched nothing, a
            bad manifest row).
        error_type: the error's class name.
    """

    source: str
    path: Path | None
    overrides: tuple[str, ...] = ()
    read_options: dict[str, Any] = field(default_factory=dict)
    scale: float | list[float] | None = None
    output: Path | None = None
    error: str | None = None
    error_type: str = "ConfigError"


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
        job_hash: the recipe's hash (see the module docstring).
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


# =============================================================== inputs
def _strip_ext(name: str) -> tuple[str, str]:
    low = name.lower()
    for suf in _VOLUME_SUFFIXES + _RASTER_SUFFIXES:
        if low.endswith(suf) and len(name) > len(suf):
            return name[: -len(suf)], name[-len(suf):]
    return name, ""


def expand_inputs(
    items: Iterable[str | os.PathLike[str]],
    *,
    base: Path | None = None,
    overrides: Sequence[str] = (),
    read_options: Mapping[str, Any] | None = None,
    scale: float | list[float] | None = None,
    output: Path | None = None,
    source_prefix: str = "",
) -> list[InputSpec]:
    """Turn paths and glob patterns into :class:`InputSpec` items.

    A path that exists is one input (a folder is one DICOM series or one
    band folder). Otherwise, text with glob characters (``*?[``) is
    expanded (``**`` recurses), sorted; a pattern that matches nothing gives
    one spec with ``error`` set. A path that does not exist is kept: it
    fails when run, with the reader's message.

    Args:
        items: paths or patterns.
        base: folder that relative items are relative to (default: the current folder).
        overrides, read_options, scale, output: attached to every spec.
        source_prefix: prefixed to ``source`` (for manifest rows).
    """
    out: list[InputSpec] = []
    for item in items:
        text = os.fspath(item)
        p = Path(text).expanduser()
        if not p.is_absolute():
            p = (base or Path.cwd()) / p
        common = {
            "overrides": tuple(overrides),
            "read_options": dict(read_options or {}),
            "scale": scale,
        }
        if not p.exists() and glob.has_magic(text):
            matches = sorted(glob.glob(str(p), recursive=True))
            if not matches:
                out.append(
                    InputSpec(
                        source=source_prefix + text, path=None, error=f"{text}: no files match this pattern",
                        error_type="DataError", **common,
                    )
                )
                continue
            if output is not None and len(matches) > 1:
                out.append(
                    InputSpec(
                        source=source_prefix + text,
                        path=None,
                        error=f"{text}: an explicit output name needs one input, the pattern matches {len(matches)}",
                        **common,
                    )
                )
                continue
            out.extend(
                InputSpec(source=source_prefix + text, path=Path(os.path.abspath(m)), output=output, **common)
                for m in matches
            )
            continue
        out.append(InputSpec(source=source_prefix + text, path=Path(os.path.abspath(p)), output=output, **common))
    return out


def _parse_scale(text: str, where: str) -> float | list[float]:
    try:
        vals = [float(v) for v in text.split(",")]
    except ValueError:
        raise ConfigError(f"{where}: scale must be a number or a comma list such as 1,1,4, got {text!r}") from None
    return vals[0] if len(vals) == 1 else vals


def _truthy(text: str, where: str) -> bool:
    low = text.strip().lower()
    if low in ("1", "true", "yes", "y", "on"):
        return True
    if low in ("0", "false", "no", "n", "off", ""):
        return False
    raise ConfigError(f"{where}: expected true or false, got {text!r}")


def read_manifest(path: str | os.PathLike[str]) -> list[InputSpec]:
    """Read a CSV manifest of inputs with per-row settings.

    The header names the columns. ``input`` is required; the others are
    optional (:data:`MANIFEST_COLUMNS`): ``output``, ``scale``, ``series``,
    ``volume``, ``resample``, ``set`` (``KEY=VALUE`` items separated by
    ``;``). Any other column is a dotted config key (``inference.tile_size``,
    ``output.dtype``, ``train.max_iterations``) whose non-empty cells
    override the config for that row. Empty cells mean "the batch's
    setting". Rows whose ``input`` is empty or starts with ``#`` are skipped.
    A bad value in a row fails that row alone.

    Raises:
        DataError: the manifest cannot be read.
        ConfigError: no ``input`` column, or a column that is not a config key.
    """
    p = Path(path).expanduser()
    try:
        with open(p, newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.reader(fh))
    except FileNotFoundError:
        raise DataError(f"{p}: manifest not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{p}: cannot read the manifest: {getattr(exc, 'strerror', None) or exc}") from exc
    except csv.Error as exc:
        raise ConfigError(f"{p}: not a valid CSV file: {exc}") from exc
    rows = [r for r in rows if any(c.strip() for c in r)]
    if not rows:
        raise ConfigError(f"{p}: the manifest is empty; expected a header line with an 'input' column")
    header = [h.strip() for h in rows[0]]
    if "input" not in header:
        raise ConfigError(f"{p}: the manifest has no 'input' column (header: {', '.join(header) or 'empty'})")
    if len(set(header)) != len(header):
        dup = sorted({h for h in header if header.count(h) > 1})
        raise ConfigError(f"{p}: duplicate manifest columns: {', '.join(dup)}")
    for col in header:
        if col in MANIFEST_COLUMNS:
            continue
        if not col:
            raise ConfigError(f"{p}: a manifest column has no name")
        try:
            check_path(JobConfig, col.split("."))
        except ConfigError as exc:
            raise ConfigError(
                f"{p}: column {col!r} is neither a manifest column ({', '.join(MANIFEST_COLUMNS)}) nor a config key: {exc}"
            ) from None
    base = p.resolve().parent
    specs: list[InputSpec] = []
    for lineno, row in enumerate(rows[1:], start=2):
        where = f"{p.name}:{lineno}"
        if len(row) > len(header):
            specs.append(InputSpec(source=f"{where}", path=None, error=f"{where}: {len(row)} cells for {len(header)} columns"))
            continue
        cells = {h: (row[i].strip() if i < len(row) else "") for i, h in enumerate(header)}
        text = cells["input"]
        if not text or text.startswith("#"):
            continue
        try:
            overrides: list[str] = []
            if cells.get("set"):
                overrides += [s.strip() for s in cells["set"].split(";") if s.strip()]
            overrides += [f"{h}={v}" for h, v in cells.items() if h not in MANIFEST_COLUMNS and v]
            read_opts: dict[str, Any] = {}
            if cells.get("series"):
                read_opts["series"] = cells["series"]
            if cells.get("volume"):
                try:
                    read_opts["volume"] = int(cells["volume"])
                except ValueError:
                    raise ConfigError(f"{where}: volume must be an integer, got {cells['volume']!r}") from None
            if cells.get("resample"):
                read_opts["resample"] = _truthy(cells["resample"], f"{where}: resample")
            scale = _parse_scale(cells["scale"], where) if cells.get("scale") else None
            output = Path(cells["output"]).expanduser() if cells.get("output") else None
        except ConfigError as exc:
            specs.append(InputSpec(source=f"{where}: {text}", path=None, error=str(exc)))
            continue
        specs.extend(
            expand_inputs(
                [text], base=base, overrides=overrides, read_options=read_opts, scale=scale, output=output,
                source_prefix=f"{where}: ",
            )
        )
    return specs


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


def _one_line(message: str) -> str:
    parts = [p.strip() for p in str(message).splitlines() if p.strip()]
    return (parts[0] + (" " + "; ".join(parts[1:]) if len(parts) > 1 else "")) if parts else str(message)


# =============================================================== resume
def _sha(path: Path) -> str:
    return sha256_path(path)


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


def _remove(path: Path) -> None:
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
        members = [_member(p, h, device) for p, h in zip(task.models, task.model_hashes, strict=True)]
    result = upscale(
        task.input,
        output=task.output,
        model=members[0] if members and len(members) == 1 else None,
        models=members if members and len(members) > 1 else None,
        method=task.method,
        scale=task.scale,
        config=task.config,
        overrides=list(task.overrides),
        read_options=task.read_options,
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


def _set_threads(n: int | None) -> None:
    if not n:
        return
    import torch

    if torch.get_num_threads() != n:
        torch.set_num_threads(n)


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
        _set_threads(task.torch_threads)
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


# =============================================================== driver
def _progress_bar(total: int, enabled: bool) -> Any:
    """A bar on a terminal, one line per 10 % elsewhere (:class:`medsat_sr.progress.Progress`)."""
    return Progress(total, "batch", unit="input", enabled=enabled and total > 0)


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


def _collect_specs(
    inputs: Sequence[str | os.PathLike[str]], manifest: str | os.PathLike[str] | None
) -> list[InputSpec]:
    """The input specs from the paths and patterns, then from the CSV manifest.

    Args:
        inputs: files, folders and glob patterns.
        manifest: a CSV manifest of more inputs, or None.

    Returns:
        The specs, in order.

    Raises:
        ConfigError: no inputs at all.
    """
    specs = expand_inputs(inputs)
    if manifest is not None:
        specs += read_manifest(manifest)
    if not specs:
        raise ConfigError("no inputs: give files, folders or glob patterns, or --manifest CSV")
    return specs


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

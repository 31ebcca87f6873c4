"""The batch's inputs: folders, globs and CSV manifests into :class:`InputSpec` items.

:func:`medsat_sr.batch.run_batch` turns its paths and patterns
(:func:`expand_inputs`) and its ``--manifest`` (:func:`read_manifest`, with
per-row settings, :data:`MANIFEST_COLUMNS`) into one :class:`InputSpec` per
input, before planning. Every public name here is re-exported from
:mod:`medsat_sr.batch`; the batch's planning also uses :func:`_strip_ext` for
output names, and :mod:`medsat_sr.batch_execute` for the ``_std`` sibling;
:func:`_collect_specs` gathers the specs of one run.
"""

from __future__ import annotations

import csv
import glob
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medsat_sr._schema import check_path
from medsat_sr.config import JobConfig
from medsat_sr.errors import ConfigError, DataError
from medsat_sr.io import RASTER_SUFFIXES

__all__ = ["InputSpec", "expand_inputs", "read_manifest", "MANIFEST_COLUMNS"]

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


def _strip_ext(name: str) -> tuple[str, str]:
    low = name.lower()
    for suf in _VOLUME_SUFFIXES + RASTER_SUFFIXES:
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
    expanded (``**`` recurses; a trailing ``/`` matches folders only, as in
    the shell), sorted; a pattern that matches nothing gives
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
            # a trailing separator ("scenes/*/") matches folders only, as in the shell (Path drops it)
            folders_only = text.endswith(("/", os.sep))
            matches = sorted(glob.glob(str(p) + ("/" if folders_only else ""), recursive=True))
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

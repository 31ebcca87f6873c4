"""Built-in data files (domain profiles, job configs) and safe YAML reading.

The folders ``domains/`` and ``configs/`` live at the top of the repository.
A wheel ships them inside the package as ``medsat_sr/_data/domains`` and
``medsat_sr/_data/configs`` (mapped by ``[tool.setuptools.package-dir]`` in
pyproject.toml; ``setup.py`` adds the two data packages). At run time this
module looks in the installed location first and falls back to the
checkout's top-level folders, so the same code works from a wheel, an
editable install and a plain source tree.

YAML is data: it is parsed with :func:`yaml.safe_load` only, which refuses
every ``!!python/...`` tag without constructing anything.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml

from medsat_sr.errors import ConfigError

__all__ = [
    "data_dir",
    "builtin_names",
    "builtin_path",
    "looks_like_path",
    "read_yaml",
    "did_you_mean",
    "suggest",
]

Kind = Literal["domains", "configs"]

#: Suffixes of YAML files.
YAML_SUFFIXES = (".yaml", ".yml")

#: Largest YAML file read (bytes): configs and profiles are a few kB.
MAX_YAML_BYTES = 1 << 20


def data_dir(kind: Kind) -> Path:
    """The folder holding the built-in ``kind`` files.

    Args:
        kind: ``"domains"`` or ``"configs"``.

    Returns:
        ``medsat_sr/_data/<kind>`` of an installed wheel when present, else
        ``<checkout>/<kind>``.

    Raises:
        ConfigError: neither exists (a broken installation).
    """
    if kind not in ("domains", "configs"):
        raise ValueError(f"kind must be 'domains' or 'configs', got {kind!r}")
    installed = Path(str(resources.files("medsat_sr"))) / "_data" / kind
    if installed.is_dir():
        return installed
    checkout = Path(__file__).resolve().parent.parent / kind
    if checkout.is_dir():
        return checkout
    raise ConfigError(
        f"built-in {kind} not found (looked in {installed} and {checkout}); "
        "the medsat_sr installation is incomplete, reinstall it"
    )


def builtin_names(kind: Kind) -> list[str]:
    """Sorted names (file stems) of the built-in ``kind`` files."""
    folder = data_dir(kind)
    return sorted(p.stem for p in folder.iterdir() if p.suffix in YAML_SUFFIXES and p.is_file())


def builtin_path(kind: Kind, name: str) -> Path | None:
    """The file of built-in ``name``, or ``None`` when there is none."""
    folder = data_dir(kind)
    for suffix in YAML_SUFFIXES:
        p = folder / f"{name}{suffix}"
        if p.is_file():
            return p
    return None


def looks_like_path(value: str | os.PathLike[str]) -> bool:
    """Whether ``value`` names a file rather than a built-in (suffix, separator or existing file)."""
    if isinstance(value, os.PathLike):
        return True
    s = str(value)
    return s.endswith(YAML_SUFFIXES) or "/" in s or os.sep in s or (os.altsep or "/") in s


def did_you_mean(word: str, choices: list[str] | tuple[str, ...], cutoff: float = 0.6) -> str:
    """``"did you mean 'x'?"`` for the closest of ``choices`` (difflib), or ``""``."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=cutoff)
    return f"did you mean {close[0]!r}?" if close else ""


def suggest(word: str, choices: list[str] | tuple[str, ...], cutoff: float = 0.6) -> str:
    """``" (did you mean 'x'?)"`` to append to a message, or ``""``."""
    hint = did_you_mean(word, choices, cutoff)
    return f" ({hint})" if hint else ""


def read_yaml(path: str | os.PathLike[str], what: str = "file") -> dict[str, Any]:
    """Read a YAML mapping with :func:`yaml.safe_load`.

    Args:
        path: the file.
        what: what the file is, for messages (``"config"``, ``"domain profile"``).

    Returns:
        The top-level mapping (an empty file gives ``{}``).

    Raises:
        ConfigError: missing or unreadable file, a YAML syntax error, a
            tag that safe_load refuses (``!!python/object`` and the like:
            nothing is constructed or executed), or a top level that is not
            a mapping.
    """
    p = Path(path)
    try:
        size = p.stat().st_size
        if size > MAX_YAML_BYTES:
            raise ConfigError(f"{p}: {what} is {size} bytes; a {what} is at most {MAX_YAML_BYTES} bytes")
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ConfigError(f"{p}: {what} not found") from exc
    except IsADirectoryError as exc:
        raise ConfigError(f"{p}: is a folder, expected a YAML {what}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{p}: {what} is not UTF-8 text") from exc
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read {what}: {exc.strerror or exc}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.constructor.ConstructorError as exc:
        raise ConfigError(
            f"{p}: {what} uses a YAML tag that is not plain data ({exc.problem}); "
            "configs and profiles are data, never code"
        ) from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: {what} is not valid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{p}: {what} must be a YAML mapping (key: value), got {type(data).__name__}")
    return dict(data)

"""``--set`` overrides: parse ``a.b=value`` items and apply dotted keys to a config mapping.

:func:`parse_override` splits an item into its key path and a value parsed
with ``yaml.safe_load`` (object-building tags refused);
:func:`apply_overrides` applies items to a copy of a raw mapping after
checking each key path against a schema (a did-you-mean hint for unknown
keys). Used by :mod:`medsat_sr.config` (``load_config``, which passes
:class:`~medsat_sr.config.JobConfig` as the schema), by
:mod:`medsat_sr.batch` (manifest columns) and by
:mod:`medsat_sr.inference.request` (``--set`` without a config).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from typing import Any

import yaml
from pydantic import BaseModel

from medsat_sr._schema import check_path
from medsat_sr.errors import ConfigError

__all__ = ["parse_override", "apply_overrides"]


def parse_override(item: str) -> tuple[list[str], Any]:
    """Split ``"a.b=value"`` into ``(["a", "b"], value)``.

    The value is parsed with ``yaml.safe_load`` (``5`` -> int, ``true`` ->
    bool, ``[a, b]`` -> list, ``null`` / empty -> None); text that is not
    valid YAML is kept as a string. YAML tags that construct objects are
    refused.

    Raises:
        ConfigError: no ``=``, an empty key part, or a refused tag.
    """
    if not isinstance(item, str) or "=" not in item:
        raise ConfigError(f"--set expects KEY=VALUE (e.g. train.max_iterations=50), got {item!r}")
    key, _, raw = item.partition("=")
    parts = [p.strip() for p in key.strip().split(".")]
    if not key.strip() or any(not p for p in parts):
        raise ConfigError(f"--set {item!r}: invalid key {key!r} (dotted names such as train.lr)")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.constructor.ConstructorError as exc:
        raise ConfigError(
            f"--set {item!r}: YAML tags that build objects are refused ({exc.problem})"
        ) from exc
    except yaml.YAMLError:
        value = raw
    return parts, value


def _set_in(data: dict[str, Any], parts: list[str], value: Any, item: str) -> None:
    """Set ``value`` at the key path ``parts`` of ``data`` (in place), making missing sections.

    A missing section is a list when the next part is an index, else a dict.

    Raises:
        ConfigError: an index out of range, or a path through a plain value.
    """
    node: Any = data
    for i, part in enumerate(parts[:-1]):
        if isinstance(node, list):
            idx = int(part)
            if not -len(node) <= idx < len(node):
                raise ConfigError(f"--set {item!r}: index {idx} is out of range ({len(node)} items)")
            node = node[idx]
            continue
        if node.get(part) is None:
            node[part] = [] if (i + 1 < len(parts) and parts[i + 1].lstrip("-").isdigit()) else {}
        node = node[part]
        if not isinstance(node, (dict, list)):
            raise ConfigError(
                f"--set {item!r}: {'.'.join(parts[: i + 1])!r} holds a plain value, not a section"
            )
    last = parts[-1]
    if isinstance(node, list):
        idx = int(last)
        if not -len(node) <= idx < len(node):
            raise ConfigError(f"--set {item!r}: index {idx} is out of range ({len(node)} items)")
        node[idx] = value
    else:
        node[last] = value


def apply_overrides(
    data: Mapping[str, Any], overrides: Iterable[str], *, schema: type[BaseModel]
) -> dict[str, Any]:
    """Apply ``--set`` items to a raw config mapping (a copy), checking each key path.

    Args:
        data: the raw mapping (not changed).
        overrides: ``"a.b=value"`` items, applied in order.
        schema: the model whose fields the key paths must exist in
            (:class:`medsat_sr.config.JobConfig`).

    Returns:
        The overridden copy. Setting one of the two PSF width forms
        (``degradation.psf.mtf_nyquist`` or ``fwhm``) drops the other from
        the mapping.

    Raises:
        ConfigError: a malformed item, or a key path that the schema does
            not have (with a did-you-mean hint).
    """
    out = copy.deepcopy(dict(data))
    psf_forms: set[str] = set()
    for item in overrides:
        parts, value = parse_override(item)
        try:
            check_path(schema, parts)
        except ConfigError as exc:
            raise ConfigError(f"--set {item!r}: {exc}") from None
        _set_in(out, parts, value, item)
        if (
            parts[:2] == ["degradation", "psf"]
            and len(parts) >= 3
            and parts[2] in ("mtf_nyquist", "fwhm")
            and value is not None
        ):
            psf_forms.add(parts[2])
    psf = out.get("degradation", {}).get("psf") if isinstance(out.get("degradation"), dict) else None
    if isinstance(psf, dict) and len(psf_forms) == 1:  # --set of one PSF width form drops the file's other
        other = "fwhm" if "mtf_nyquist" in psf_forms else "mtf_nyquist"
        psf.pop(other, None)
    return out

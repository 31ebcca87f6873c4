"""Strict pydantic models with readable errors: unknown keys with a did-you-mean hint.

Shared by :mod:`medsat_sr.domains` and :mod:`medsat_sr.config`.

* :class:`StrictModel` forbids unknown keys.
* :func:`validate` checks a raw mapping against a model and raises one
  :class:`~medsat_sr.errors.ConfigError` that lists every problem with its
  dotted location (``train.max_iteratons: unknown key; did you mean
  'max_iterations'?``) and the source file.
* :func:`check_path` checks a dotted key path (for ``--set a.b=value``)
  before anything is applied.
* :class:`OverrideOf` marks a free-form mapping field as a partial override
  of another model, so unknown keys in it are reported like any other.
* :func:`located` lets a model validator name the key a cross-field problem
  is about.
"""

from __future__ import annotations

import re
import types
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, BeforeValidator, ConfigDict, ValidationError

from medsat_sr._resources import did_you_mean
from medsat_sr.errors import ConfigError

__all__ = [
    "StrictModel",
    "OverrideOf",
    "Problem",
    "located",
    "unknown_keys",
    "validate",
    "problems_from",
    "raise_problems",
    "merge_problems",
    "check_path",
    "dotted",
]

Path_ = tuple[str | int, ...]


class StrictModel(BaseModel):
    """A pydantic model that refuses unknown keys."""

    model_config = ConfigDict(extra="forbid", validate_default=True)


@dataclass(frozen=True)
class OverrideOf:
    """``Annotated`` marker: this mapping is a partial override of ``target`` (a model or union)."""

    target: Any


@dataclass(frozen=True)
class Problem:
    """One problem at a dotted location."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path or '(top level)'}: {self.message}"


def dotted(path: Sequence[str | int]) -> str:
    """``("train", "losses", 0, "name")`` -> ``"train.losses.0.name"``."""
    return ".".join(str(p) for p in path)


_LOCATED = re.compile(r"^\[@(?P<path>[^\]]*)\] (?P<msg>.*)$", re.S)


def located(path: str, message: str) -> ValueError:
    """A ``ValueError`` for a model validator that names the key at fault.

    ``path`` is relative to the model the validator belongs to.
    """
    return ValueError(f"[@{path}] {message}")


# ---------------------------------------------------------------- annotations
def _strip(ann: Any) -> tuple[Any, tuple[Any, ...]]:
    """Remove ``Annotated``; return the bare annotation and its metadata."""
    meta: tuple[Any, ...] = ()
    while get_origin(ann) is Annotated:
        args = get_args(ann)
        ann, meta = args[0], meta + tuple(args[1:])
    return ann, meta


def _is_model(ann: Any) -> bool:
    return isinstance(ann, type) and issubclass(ann, BaseModel)


def _union_members(ann: Any) -> list[Any] | None:
    if get_origin(ann) in (Union, types.UnionType):
        return [_strip(a)[0] for a in get_args(ann)]
    return None


def _literal_values(ann: Any) -> tuple[Any, ...]:
    ann = _strip(ann)[0]
    if get_origin(ann) is Literal:
        return get_args(ann)
    return ()


def _pick_model(models: list[type[BaseModel]], data: Mapping[str, Any]) -> type[BaseModel] | None:
    """The union member a mapping belongs to (by a ``Literal`` discriminator key)."""
    if len(models) == 1:
        return models[0]
    for key in data:
        hits = [
            m
            for m in models
            if key in m.model_fields and data[key] in _literal_values(m.model_fields[key].annotation)
        ]
        if len(hits) == 1:
            return hits[0]
    return None


def _target(ann: Any) -> Any:
    """Follow an ``OverrideOf`` marker."""
    bare, meta = _strip(ann)
    for m in meta:
        if isinstance(m, OverrideOf):
            return m.target
    return bare


# ---------------------------------------------------------------- unknown keys
def unknown_keys(data: Any, ann: Any, path: Path_ = ()) -> list[Problem]:
    """Every key of ``data`` that ``ann`` (a model, union, list or dict type) does not accept.

    Each problem carries a did-you-mean hint against the field names of the
    model at that place, or the list of valid keys when nothing is close.
    """
    out: list[Problem] = []
    _walk(data, ann, path, out)
    return out


def _walk(data: Any, ann: Any, path: Path_, out: list[Problem]) -> None:
    ann = _target(ann)
    ann = _strip(ann)[0]
    if _is_model(ann):
        if isinstance(data, Mapping):
            _walk_model(data, ann, path, out)
        return
    members = _union_members(ann)
    if members is not None:
        if isinstance(data, Mapping):
            models = [m for m in members if _is_model(m)]
            model = _pick_model(models, data) if models else None
            if model is not None:
                _walk_model(data, model, path, out)
            else:
                for m in members:
                    if get_origin(m) in (dict, Mapping):
                        _walk(data, m, path, out)
                        break
        elif isinstance(data, list):
            for m in members:
                if get_origin(m) in (list, tuple, Sequence):
                    _walk(data, m, path, out)
                    break
        return
    origin = get_origin(ann)
    args = get_args(ann)
    if origin in (list, tuple, Sequence) and args and isinstance(data, list):
        for i, item in enumerate(data):
            _walk(item, args[0], path + (i,), out)
    elif origin in (dict, Mapping) and len(args) == 2 and isinstance(data, Mapping):
        for k, v in data.items():
            _walk(v, args[1], path + (str(k),), out)


def _walk_model(data: Mapping[str, Any], model: type[BaseModel], path: Path_, out: list[Problem]) -> None:
    fields = model.model_fields
    allowed = model.model_config.get("extra") != "forbid"
    for key, value in data.items():
        if key in fields:
            field = fields[key]
            override = next((m.target for m in field.metadata if isinstance(m, OverrideOf)), None)
            _walk(value, override if override is not None else field.annotation, path + (key,), out)
        elif not allowed:
            names = sorted(fields)
            hint = did_you_mean(str(key), names) or f"valid keys: {', '.join(names)}"
            out.append(Problem(dotted(path + (str(key),)), f"unknown key; {hint}"))


# ---------------------------------------------------------------- pydantic errors
def _loc_path(loc: tuple[Any, ...], data: Any, missing: bool) -> Path_:
    """Map a pydantic ``loc`` onto the keys of ``data`` (drops union tags)."""
    out: list[str | int] = []
    cur = data
    for i, el in enumerate(loc):
        last = i == len(loc) - 1
        if isinstance(cur, Mapping) and el in cur:
            out.append(el)
            cur = cur[el]
        elif isinstance(cur, list) and isinstance(el, int) and 0 <= el < len(cur):
            out.append(el)
            cur = cur[el]
        elif last and missing and isinstance(el, str):
            out.append(el)
    return tuple(out)


def _short(value: Any) -> str:
    r = repr(value)
    return r if len(r) <= 80 else r[:77] + "..."


def problems_from(exc: ValidationError, data: Any, prefix: Path_ = ()) -> list[Problem]:
    """Turn a pydantic ``ValidationError`` into located :class:`Problem` s."""
    out: list[Problem] = []
    for err in exc.errors(include_url=False):
        etype = err.get("type", "")
        missing = etype == "missing"
        path = _loc_path(tuple(err.get("loc", ())), data, missing)
        msg = str(err.get("msg", "invalid value"))
        if etype == "extra_forbidden":
            msg = "unknown key"
        elif etype in ("value_error", "assertion_error"):
            msg = re.sub(r"^(Value error|Assertion failed), ", "", msg)
            m = _LOCATED.match(msg)
            if m:
                sub = tuple(p for p in m.group("path").split(".") if p)
                path = path + sub
                msg = m.group("msg")
        elif missing:
            msg = "required key is missing"
        else:
            inp = err.get("input")
            if not isinstance(inp, (Mapping, list)):
                msg = f"{msg}, got {_short(inp)}"
        out.append(Problem(dotted(prefix + path), msg))
    return out


def merge_problems(first: Sequence[Problem], second: Sequence[Problem]) -> list[Problem]:
    """``first`` then ``second``, dropping from ``second`` what ``first`` already says about a path.

    The unknown-key walk and pydantic both report an unknown key; the walk's
    report (with its did-you-mean hint) wins.
    """
    seen = {p.path for p in first}
    return list(first) + [p for p in second if not (p.path in seen and p.message == "unknown key")]


def raise_problems(problems: Sequence[Problem], *, source: str, what: str) -> None:
    """Raise one ConfigError listing ``problems`` (no-op when empty)."""
    if not problems:
        return
    unique: list[Problem] = []
    for p in problems:
        if p not in unique:
            unique.append(p)
    if len(unique) == 1:
        raise ConfigError(f"{source}: invalid {what}: {unique[0]}")
    lines = "\n".join(f"  - {p}" for p in unique)
    raise ConfigError(f"{source}: invalid {what} ({len(unique)} problems):\n{lines}")


def validate(model: type[BaseModel], data: Any, *, source: str, what: str) -> Any:
    """Validate ``data`` as ``model``; raise one ConfigError listing every problem.

    Args:
        model: the pydantic model.
        data: the raw mapping (from YAML).
        source: where the data came from (a file name), first in the message.
        what: what it is (``"config"``, ``"domain profile"``).

    Returns:
        The model instance.

    Raises:
        ConfigError: unknown keys (with did-you-mean hints), wrong types,
            out-of-range values.
    """
    problems = unknown_keys(data, model)
    try:
        obj = model.model_validate(data)
    except ValidationError as exc:
        raise_problems(merge_problems(problems, problems_from(exc, data)), source=source, what=what)
        raise AssertionError("unreachable") from None  # pragma: no cover
    raise_problems(problems, source=source, what=what)
    return obj


# ---------------------------------------------------------------- dotted paths
def check_path(model: type[BaseModel], parts: Sequence[str]) -> None:
    """Check that the dotted key path ``parts`` exists in ``model``'s schema.

    Free-form mappings (``dict[str, Any]``) accept any key below them;
    :class:`OverrideOf` mappings are checked against their target; list
    items are addressed by an integer index.

    Raises:
        ConfigError: an unknown key (with a did-you-mean hint) or a path
            that goes below a plain value.
    """
    ann: Any = model
    for i, part in enumerate(parts):
        here = dotted(parts[: i + 1])
        ann = _target(ann)
        ann = _strip(ann)[0]
        if ann is Any:
            return
        members = _union_members(ann)
        candidates = members if members is not None else [ann]
        models = [m for m in candidates if _is_model(m)]
        if models:
            owners = [m for m in models if part in m.model_fields]
            if owners:
                field = owners[0].model_fields[part]
                override = next((m.target for m in field.metadata if isinstance(m, OverrideOf)), None)
                ann = override if override is not None else field.annotation
                continue
            names = sorted({n for m in models for n in m.model_fields})
            hint = did_you_mean(part, names) or f"valid keys: {', '.join(names)}"
            raise ConfigError(f"unknown key {here!r}; {hint}")
        nxt = None
        for m in candidates:
            origin = get_origin(m)
            args = get_args(m)
            if origin in (dict, Mapping):
                nxt = args[1] if len(args) == 2 else Any
                break
            if origin in (list, tuple, Sequence) and part.lstrip("-").isdigit():
                nxt = args[0] if args else Any
                break
        if nxt is None:
            parent = dotted(parts[:i]) or "(top level)"
            raise ConfigError(f"cannot set {here!r}: {parent!r} is a plain value, not a section")
        ann = nxt


def _parse_size(value: Any) -> Any:
    def ok(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and 8 <= v <= 4096

    if ok(value):
        return value
    if isinstance(value, (list, tuple)) and len(value) in (2, 3) and all(ok(v) for v in value):
        return list(value)
    raise ValueError(f"expected an integer in [8, 4096] or a list of 2 or 3 of them, got {value!r}")


#: A tile or patch size: one integer >= 8 for every axis, or one per axis.
SizeValue = Annotated[int | list[int], BeforeValidator(_parse_size)]

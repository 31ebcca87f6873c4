"""Validation helpers shared by the model constructors (private).

Every check raises :class:`~medsat_sr.errors.ModelError` with the name of the
argument, what was received and what was expected. ``bool`` is refused where
an ``int`` is expected (``True`` is an ``int`` in Python, never a width).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from numbers import Integral, Real
from typing import Any

from medsat_sr.errors import ModelError

__all__ = [
    "check_int",
    "check_float",
    "check_choice",
    "check_odd_kernel",
    "parse_scale",
    "is_integer_scale",
    "check_output_size",
]

_INT_TOL = 1e-6


def check_int(name: str, value: Any, minimum: int = 1) -> int:
    """Return ``value`` as ``int`` if it is an integer ``>= minimum``.

    Raises:
        ModelError: not an integer (``bool`` included) or below ``minimum``.
    """
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise ModelError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if value < minimum:
        raise ModelError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def check_float(
    name: str, value: Any, minimum: float | None = None, *, strict: bool = False
) -> float:
    """Return ``value`` as a finite ``float``, optionally bounded below.

    Args:
        name: argument name, for the message.
        value: the value to check.
        minimum: lower bound, or ``None``.
        strict: the bound is exclusive (``value > minimum``).

    Raises:
        ModelError: not a finite real number, or out of range.
    """
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value):
        raise ModelError(f"{name} must be a finite number, got {value!r}")
    v = float(value)
    if minimum is not None and (v <= minimum if strict else v < minimum):
        op = ">" if strict else ">="
        raise ModelError(f"{name} must be {op} {minimum}, got {value}")
    return v


def check_choice(name: str, value: Any, choices: Sequence[str]) -> str:
    """Return ``value`` if it is one of ``choices``.

    Raises:
        ModelError: ``value`` is not one of ``choices``.
    """
    if not isinstance(value, str) or value not in choices:
        raise ModelError(f"{name} must be one of {list(choices)}, got {value!r}")
    return value


def check_odd_kernel(name: str, value: Any) -> int:
    """Return ``value`` if it is an odd integer kernel size ``>= 1``.

    Raises:
        ModelError: not an odd positive integer.
    """
    k = check_int(name, value, 1)
    if k % 2 == 0:
        raise ModelError(f"{name} must be odd (symmetric 'same' padding), got {k}")
    return k


def parse_scale(scale: Any, spatial_dims: int) -> tuple[float, ...]:
    """Broadcast ``scale`` to one finite factor ``>= 1`` per spatial axis.

    Args:
        scale: a number, or a sequence (or numpy array) of ``spatial_dims``
            numbers, in the axis order of the tensor's spatial dimensions.
        spatial_dims: 2 or 3.

    Returns:
        One float per axis.

    Raises:
        ModelError: wrong length, non-numeric, not finite or below 1.
    """
    if hasattr(scale, "tolist") and not isinstance(scale, (str, bytes)):
        scale = scale.tolist()  # numpy arrays and scalars, torch tensors
    if isinstance(scale, (str, bytes)) or isinstance(scale, bool):
        raise ModelError(f"scale must be a number or a sequence of numbers, got {scale!r}")
    if isinstance(scale, Real):
        factors: list[Any] = [scale] * spatial_dims
    elif isinstance(scale, Sequence):
        factors = list(scale)
        if len(factors) == 1:
            factors = factors * spatial_dims
        if len(factors) != spatial_dims:
            raise ModelError(
                f"scale must have 1 or spatial_dims={spatial_dims} factors, "
                f"got {len(factors)}: {list(scale)!r}"
            )
    else:
        raise ModelError(f"scale must be a number or a sequence of numbers, got {scale!r}")
    out = []
    for f in factors:
        if isinstance(f, bool) or not isinstance(f, Real) or not math.isfinite(f):
            raise ModelError(f"scale factors must be finite numbers, got {factors!r}")
        if f < 1:
            raise ModelError(
                f"scale factors must be >= 1 (these are super-resolution nets), got {factors!r}"
            )
        out.append(float(f))
    return tuple(out)


def is_integer_scale(scale: Sequence[float]) -> bool:
    """Whether every factor is an integer (to 1e-6)."""
    return all(abs(f - round(f)) <= _INT_TOL for f in scale)


def check_output_size(output_size: Any, spatial_dims: int) -> tuple[int, ...]:
    """Validate an explicit ``output_size`` passed to ``forward``.

    Raises:
        ModelError: wrong length or a size that is not a positive integer.
    """
    if isinstance(output_size, Integral) and not isinstance(output_size, bool):
        output_size = (output_size,) * spatial_dims
    if not isinstance(output_size, Sequence) or len(output_size) != spatial_dims:
        raise ModelError(
            f"output_size must have spatial_dims={spatial_dims} sizes, got {output_size!r}"
        )
    return tuple(check_int("output_size", int(s) if _is_int_like(s) else s, 1) for s in output_size)


def _is_int_like(v: Any) -> bool:
    # torch.Size entries and numpy integers are Integral; 0-d tensors are not.
    return hasattr(v, "__index__") and not isinstance(v, bool)

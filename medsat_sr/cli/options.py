"""Flags and helpers shared by the ``medsat-sr`` commands (in the spirit of rasterio's ``rio/options.py``).

Standard library only: the command modules import this at module level and
``medsat-sr --help`` must stay fast. The upscale option flags (``--tile-size``,
``--precision``, ...) are not here: they come from the options model,
:func:`medsat_sr.inference.options.add_flags`.
"""

from __future__ import annotations

import argparse
from typing import Any

__all__ = [
    "global_flags",
    "add_reader_flags",
    "reader_options",
    "add_config",
    "add_set",
    "add_model",
    "add_method",
    "add_scale",
    "numbers",
]


def global_flags(default: Any) -> argparse.ArgumentParser:
    """A parent parser with ``-q``, ``-v``, ``--debug`` and ``--log-json``.

    The top-level parser takes them with ``default=False``; every command
    repeats them with ``default=argparse.SUPPRESS``, so that
    ``medsat-sr --debug info X`` and ``medsat-sr info X --debug`` both work
    and the command's copy does not reset the top-level value.

    Args:
        default: ``False`` for the top-level parser, ``argparse.SUPPRESS`` for commands.

    Returns:
        A parser to pass in ``parents=[...]``.
    """
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("-q", "--quiet", action="store_true", default=default, help="print only errors")
    p.add_argument("-v", "--verbose", action="store_true", default=default, help="log debug messages")
    p.add_argument("--debug", action="store_true", default=default, help="show tracebacks on errors")
    p.add_argument("--log-json", action="store_true", default=default,
                   help="log one JSON object per event on stderr (for batch pipelines); no progress bars")
    return p


def add_reader_flags(p: argparse.ArgumentParser) -> None:
    """Add the reader flags ``--series``, ``--volume`` and ``--resample`` (DICOM options)."""
    g = p.add_argument_group("DICOM options")
    g.add_argument("--series", metavar="UID|N", help="which series to read when a folder holds several (see `info`)")
    g.add_argument("--volume", type=int, metavar="K", help="read only volume K (0-based) of a 4D series")
    g.add_argument(
        "--resample",
        action="store_true",
        help="resample tilted, unevenly spaced or gapped series onto a regular grid (as dcm2niix does) instead of refusing",
    )


def reader_options(args: argparse.Namespace) -> dict[str, object]:
    """The reader keyword arguments given by the reader flags (flags left out are not in the result)."""
    opts: dict[str, object] = {}
    if getattr(args, "series", None):
        opts["series"] = args.series
    if getattr(args, "volume", None) is not None:
        opts["volume"] = args.volume
    if getattr(args, "resample", False):
        opts["resample"] = True
    return opts


def add_config(p: Any, *, required: bool = False, help: str = "built-in config name or path of a .yaml config") -> None:
    """Add ``--config CFG`` to a parser or an argument group."""
    p.add_argument("--config", required=required, metavar="CFG", help=help)


def add_set(p: Any, *, example: str = "train.max_iterations=50", scope: str = "") -> None:
    """Add the repeatable ``--set KEY=VALUE`` config override to a parser or an argument group."""
    p.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help=f"override a config key{scope} (repeatable), e.g. {example}",
    )


def add_model(p: Any, *, help: str = "checkpoint (repeat for a weighted ensemble)") -> None:
    """Add the repeatable ``--model CKPT`` to a parser or an argument group."""
    p.add_argument("--model", metavar="CKPT", action="append", help=help)


def add_method(p: Any) -> None:
    """Add ``--method NAME`` (a classical method) to a parser or an argument group."""
    p.add_argument("--method", metavar="NAME", help="classical method: cubic, linear, nearest or lanczos; revisits "
                   "(several frames or a folder of dates): median, mean, shift-and-add or best-frame; pan-sharpening: "
                   "brovey, gihs, gsa or mtf-glp-hpm")


def add_scale(p: Any, *, help: str = "one factor or one per axis, e.g. 2 or 1,1,4 (default: the model's)") -> None:
    """Add ``--scale S`` to a parser or an argument group (read back with :func:`numbers`)."""
    p.add_argument("--scale", metavar="S", help=help)


def numbers(text: str | None, option: str) -> float | list[float] | None:
    """``"2"`` -> 2.0, ``"1,1,4"`` -> [1.0, 1.0, 4.0], ``None`` -> None.

    Args:
        text: the flag's value as typed.
        option: the flag's name, for the error message.

    Raises:
        ConfigError: anything else, naming the option.
    """
    if text is None:
        return None
    try:
        vals = [float(v) for v in str(text).split(",")]
    except ValueError:
        from medsat_sr.errors import ConfigError

        raise ConfigError(f"{option}: expected a number or a comma list such as 1,1,4, got {text!r}") from None
    return vals[0] if len(vals) == 1 else vals

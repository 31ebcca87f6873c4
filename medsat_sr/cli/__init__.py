"""The ``medsat-sr`` command: one module per command, shared flags in :mod:`.options`.

Exit codes: 0 success; 1 unexpected internal error; 2 bad input, bad
options or bad configuration (any :class:`~medsat_sr.errors.MedsatError`
except write failures, and an invalid flag value); 3 an output could not be
written; 4 ``batch`` only: the batch ran but at least one input failed (the
failed inputs are listed on stderr and in ``OUT_DIR/batch.jsonl``); 130
interrupted; 141 the reader of standard output went away (``| head``), quietly. Errors print one line, ``medsat-sr: error: <file>: <problem>``;
``--debug`` adds the traceback.

Startup is kept short on purpose: each command module (:data:`COMMANDS`)
exposes ``HELP`` (one line), ``add_parser(subparsers)`` and ``run(args)``,
imports only the standard library at module level and loads torch, MONAI,
rasterio and the rest inside ``run``. :func:`main` builds the arguments of
the one command named on the command line, so ``medsat-sr --version`` and
``medsat-sr --help`` load none of them.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Iterable, Sequence
from types import ModuleType

from medsat_sr._version import __version__
from medsat_sr.cli.options import global_flags
from medsat_sr.errors import MedsatError, WriteError

__all__ = [
    "main",
    "build_parser",
    "COMMANDS",
    "EXIT_OK",
    "EXIT_INTERNAL",
    "EXIT_BAD_INPUT",
    "EXIT_WRITE",
    "EXIT_PARTIAL",
    "EXIT_INTERRUPTED",
]

log = logging.getLogger("medsat_sr")

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_BAD_INPUT = 2
EXIT_WRITE = 3
EXIT_PARTIAL = 4  # batch: some inputs failed
EXIT_INTERRUPTED = 130
EXIT_PIPE = 141  # 128 + SIGPIPE, as `yes | head` gives

#: Command name -> the module that implements it (in the order of ``--help``).
COMMANDS: dict[str, str] = {
    "info": "medsat_sr.cli.info",
    "convert": "medsat_sr.cli.convert",
    "train": "medsat_sr.cli.train",
    "upscale": "medsat_sr.cli.upscale",
    "batch": "medsat_sr.cli.batch",
    "evaluate": "medsat_sr.cli.evaluate",
    "demo": "medsat_sr.cli.demo",
    "models": "medsat_sr.cli.models",
}

_GLOBAL_FLAGS = frozenset({"-q", "--quiet", "-v", "--verbose", "--debug", "--log-json"})


def _module(command: str) -> ModuleType:
    return importlib.import_module(COMMANDS[command])


def build_parser(commands: Iterable[str] | None = None) -> argparse.ArgumentParser:
    """The argument parser of ``medsat-sr``.

    Args:
        commands: the commands whose arguments are built in full; the others
            get only their name and one-line help (enough for ``--help``).
            ``None``: every command in full.

    Returns:
        The parser; each command's namespace carries ``func`` (its ``run``).
    """
    return _build(commands)[0]


def _build(commands: Iterable[str] | None) -> tuple[argparse.ArgumentParser, argparse._SubParsersAction]:
    full = set(COMMANDS) if commands is None else set(commands)
    parser = argparse.ArgumentParser(
        prog="medsat-sr",
        description="Super-resolution of medical volumes and satellite imagery with exact geometry.",
        epilog="Run `medsat-sr COMMAND --help` for the options of a command.",
        parents=[global_flags(False)],
        exit_on_error=False,
    )
    parser.add_argument("--version", action="version", version=f"medsat-sr {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_CommandParser)
    sub.required = True
    for name in COMMANDS:
        mod = _module(name)
        if name in full:
            mod.add_parser(sub)
        else:
            sub.add_parser(name, help=mod.HELP)
    return parser, sub


class _CommandParser(argparse.ArgumentParser):
    """A command's parser: global flags repeated, invalid values raised (see :func:`main`)."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        kwargs.setdefault("parents", [global_flags(argparse.SUPPRESS)])
        kwargs["exit_on_error"] = False
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]


def _command_of(argv: Sequence[str]) -> str | None:
    """The command named on the command line: the first word after the global flags."""
    for arg in argv:
        if arg in _GLOBAL_FLAGS:
            continue
        return arg if arg in COMMANDS else None
    return None


def _parse(argv: Sequence[str]) -> argparse.Namespace | int:
    """Parse ``argv``; an invalid flag value is one line and exit 2 (returned), other usage errors exit 2 (raised)."""
    command = _command_of(argv)
    parser, sub = _build([command] if command else [])
    try:
        return parser.parse_args(argv)
    except argparse.ArgumentError as exc:
        message = str(exc)
        if exc.argument_name == "COMMAND" or message.startswith("the following arguments are required"):
            (parser if command is None else sub.choices[command]).error(message)  # usage + problem, SystemExit(2)
        print(f"medsat-sr: error: {message}", file=sys.stderr)
        return EXIT_BAD_INPUT


def _setup_logging(args: argparse.Namespace) -> None:
    from medsat_sr.logs import setup

    setup(verbose=bool(getattr(args, "verbose", False)), quiet=bool(getattr(args, "quiet", False)),
          json_lines=bool(getattr(args, "log_json", False)))


def _one_line(message: str) -> str:
    """Fold a multi-line message (a list of candidates, say) into one line."""
    parts = [p.strip() for p in message.splitlines() if p.strip()]
    return parts[0] + (" " + "; ".join(parts[1:]) if len(parts) > 1 else "") if parts else message


#: Longest error text printed without ``--debug`` (the rest: ``--debug``).
MAX_ERROR_CHARS = 200


def _length(text: str) -> int:
    """Length of ``text`` with each path counted as its file name (the user's own paths do not count against it)."""
    return sum(len(w.rsplit("/", 1)[-1]) if "/" in w[1:] else len(w) for w in text.split(" ")) + text.count(" ")


def _short(message: str, limit: int = MAX_ERROR_CHARS) -> str:
    """``message`` in one line of at most about ``limit`` characters besides paths.

    A longer message over several lines (a headline over a listing) keeps
    its headline when that fits. Otherwise it keeps its first clause (the
    file and the problem) and its last (usually what to do); the middle goes
    with ``--debug``.
    """
    text = _one_line(message)
    if _length(text) <= limit + 100:  # an authored message a little over the limit stays whole
        return text
    first = message.strip().splitlines()[0].strip().rstrip(":")
    if first != text and _length(first) <= limit + 100:  # a headline over a listing: the headline says it
        return first + " (--debug for the rest)"
    clauses = text.split("; ")
    if len(clauses) > 2:
        kept = f"{clauses[0]}; ...; {clauses[-1]}"
        if _length(kept) <= limit + 40:
            return kept + " (--debug for the rest)"
    if len(clauses) > 1 and _length(clauses[-1]) <= int(0.6 * limit):  # the remedy whole, the problem cut
        first = clauses[0]
        room = limit + 60 - _length(clauses[-1]) + len(first) - _length(first)  # paths do not count
        if room >= 60:
            head = first[: first.rfind(" ", 0, room) if " " in first[:room] else room].rstrip(" ,;(")
            return f"{_elided(head)}; {clauses[-1]} (--debug for the rest)"
    head_n = int(0.6 * limit) + len(text) - _length(text)  # paths do not count
    head = text[: text.rfind(" ", 0, head_n) if " " in text[:head_n] else head_n].rstrip(" ,;(")
    tail_at = text.find(" ", len(text) - int(0.35 * limit))
    tail = text[tail_at + 1 :] if tail_at > len(head) else ""
    return f"{_elided(head)} {tail} (--debug for the rest)" if tail else f"{_elided(head)} (--debug for the rest)"


def _elided(head: str) -> str:
    """``head`` cut short: `` ...``, and a parenthesis it left open closed (``(slices 15 to 28 ...)``)."""
    return head + " ..." + ")" * max(head.count("(") - head.count(")"), 0)


def _report(args: argparse.Namespace, text: str, **fields: object) -> None:
    """Print an error line on stderr (a JSON object with ``--log-json``)."""
    if getattr(args, "log_json", False):
        import json

        print(json.dumps({"level": "error", "logger": "medsat_sr", "message": text, **fields}), file=sys.stderr)
    else:
        print(text, file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``medsat-sr``; return the exit code.

    Args:
        argv: the arguments after the program name (default ``sys.argv[1:]``).

    Returns:
        The exit code (see the module docstring). ``--help``, ``--version``
        and usage errors exit through ``SystemExit`` as argparse does.
    """
    args = _parse(list(sys.argv[1:] if argv is None else argv))
    if isinstance(args, int):
        return args
    _setup_logging(args)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        _report(args, "medsat-sr: interrupted", event="interrupted")
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `medsat-sr info x | head`: the rest of the output has no reader; say nothing
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # the interpreter's final flush must not fail again
        return EXIT_PIPE
    except MedsatError as exc:
        if args.debug:
            raise
        _report(args, f"medsat-sr: error: {_short(str(exc))}", event="error", error=type(exc).__name__)
        return EXIT_WRITE if isinstance(exc, WriteError) else EXIT_BAD_INPUT
    except Exception as exc:  # noqa: BLE001 - last-resort handler of the CLI
        if args.debug:
            raise
        _report(args, f"medsat-sr: internal error: {type(exc).__name__}: {_short(str(exc), 150)} (rerun with --debug for "
                "details)", event="error", error=type(exc).__name__)
        return EXIT_INTERNAL

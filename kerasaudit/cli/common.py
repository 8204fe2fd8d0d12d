"""Options and plumbing shared by every command (consoles, output, exit codes)."""

from __future__ import annotations

import functools
import io
import json
import os
import shlex
import sys
import traceback
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, ParamSpec, TypeVar

import typer
from rich.console import Console

from kerasaudit._io import check_output_path, write_text_atomic
from kerasaudit.cli import signals
from kerasaudit.errors import ExitCode, KerasauditError, Terminated


class OutputFormat(StrEnum):
    TABLE = "table"
    JSON = "json"


ModelArg = Annotated[
    Path,
    typer.Argument(
        help="Model: .keras, legacy .h5, or a TF SavedModel directory.", show_default=False
    ),
]
FormatOpt = Annotated[
    OutputFormat, typer.Option("--format", "-f", help="Report format on stdout (or in -o).")
]
OutputOpt = Annotated[
    Path | None,
    typer.Option(
        "--output", "-o", help="Write the report to this file (atomically) instead of stdout."
    ),
]
ForceOpt = Annotated[bool, typer.Option("--force", help="Overwrite existing output files.")]
QuietOpt = Annotated[
    bool, typer.Option("--quiet", "-q", help="No progress or summaries on stderr.")
]
UnsafeOpt = Annotated[
    bool,
    typer.Option(
        "--unsafe",
        help="Load models that fail the safety checks (Lambda layers, custom modules, ...). "
        "This can run code from the file: only for files you trust.",
    ),
]
CustomObjectsOpt = Annotated[
    Path | None,
    typer.Option(
        "--custom-objects",
        help="A .py file defining custom layers (its `custom_objects` dict, or its public "
        "classes). Only the names it defines are admitted by the safety checks.",
    ),
]

ModelOutputOpt = Annotated[
    str | None,
    typer.Option(
        "--model-output",
        metavar="NAME",
        help="For a model with several outputs: the classifier output to audit (default: "
        "the only output with two or more scores). Files written keep every output.",
    ),
]


class Consoles:
    """stdout carries only the report; everything else goes to stderr (silenced by -q)."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        # Piped output (files, CI logs) gets wide tables instead of Rich's 80-column default,
        # unless COLUMNS says how wide to be (Rich reads it).
        width = None if sys.stdout.isatty() or os.environ.get("COLUMNS") else 160
        self.out = Console(file=sys.stdout, soft_wrap=False, highlight=False, width=width)
        self.err = Console(file=sys.stderr, stderr=True, highlight=False, quiet=quiet)

    def info(self, message: str) -> None:
        """One plain line on stderr: never wrapped (pipes and CI logs read it whole)."""
        self.err.print(message, markup=False, soft_wrap=True, highlight=False)


def error_console() -> Console:
    return Console(file=sys.stderr, stderr=True, highlight=False)


P = ParamSpec("P")
R = TypeVar("R")


def handle_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Map library errors to one-line messages and the documented exit codes."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except typer.Exit:
            raise
        except KerasauditError as exc:
            error_console().print(f"error: {exc}", markup=False, soft_wrap=True)
            raise typer.Exit(int(exc.exit_code)) from None
        except KeyboardInterrupt as exc:
            raise typer.Exit(interrupted(exc)) from None
        except Exception as exc:  # a bug: say so, keep the traceback for --debug users
            if os.environ.get("KERASAUDIT_DEBUG"):
                traceback.print_exc()
            error_console().print(
                f"internal error: {type(exc).__name__}: {exc} "
                "(set KERASAUDIT_DEBUG=1 for a traceback)",
                markup=False,
                soft_wrap=True,
            )
            raise typer.Exit(int(ExitCode.INTERNAL)) from None

    return wrapper


def interrupted(exc: BaseException) -> int:
    """Say why the command stopped and return its exit code: 143 after SIGTERM, 130 after
    Ctrl-C (the shell's 128 + signal number)."""
    signals.handled()
    cause = exc if isinstance(exc, KeyboardInterrupt) else exc.__context__
    terminated = isinstance(cause, Terminated)
    error_console().print("terminated" if terminated else "interrupted", markup=False)
    return 143 if terminated else 130


def prepare_output(output: Path | None, force: bool) -> None:
    """Called before any work, so a bad -o fails fast and nothing is computed in vain."""
    if output is not None:
        check_output_path(output, force=force)


def emit_json(data: Any, output: Path | None, force: bool) -> None:
    text = json.dumps(data, indent=2, allow_nan=False, default=str) + "\n"
    if output is None:
        sys.stdout.write(text)
        sys.stdout.flush()
    else:
        write_text_atomic(output, text, force=force)


def emit_rich(
    render: Callable[[Console], None], consoles: Consoles, output: Path | None, force: bool
) -> None:
    if output is None:
        render(consoles.out)
        return
    buffer = Console(record=True, width=140, file=io.StringIO(), no_color=True)
    render(buffer)
    write_text_atomic(output, buffer.export_text(), force=force)


def emit(
    fmt: OutputFormat,
    data: Callable[[], Any],
    render: Callable[[Console], None],
    consoles: Consoles,
    output: Path | None,
    force: bool,
) -> None:
    if fmt is OutputFormat.JSON:
        emit_json(data(), output, force)
    else:
        emit_rich(render, consoles, output, force)


def command_line() -> str | None:
    """The command as typed, when run as ``kerasaudit`` / ``python -m kerasaudit``."""
    argv0 = Path(sys.argv[0]) if sys.argv else Path()
    if argv0.name == "kerasaudit" or (
        argv0.name == "__main__.py" and argv0.parent.name == "kerasaudit"
    ):
        return shlex.join(["kerasaudit", *sys.argv[1:]])
    return None

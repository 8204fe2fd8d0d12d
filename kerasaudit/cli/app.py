"""The ``kerasaudit`` Typer application. Imports nothing heavy: TensorFlow loads on first use."""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer
from typer._click.exceptions import (  # Typer vendors Click (tests/test_private_api.py)
    ClickException,
    NoArgsIsHelpError,
    UsageError,
)
from typer.core import TyperGroup

from kerasaudit import __version__
from kerasaudit.cli import (
    audit_cmd,
    baseline_cmd,
    batch_cmd,
    defend_cmd,
    evaluate_cmd,
    gradcam_cmd,
    inspect_cmd,
    merge_stats_cmd,
    prune_cmd,
    report_cmd,
    reverse_cmd,
    scan_cmd,
    signals,
    sweep_cmd,
)
from kerasaudit.cli.common import interrupted

_METAVARS = {"path": "PATH", "float": "NUMBER", "int": "N", "str": "TEXT"}


def _type_name(param: Any, ctx: Any) -> str:
    """The name Typer would show for a parameter's type: ``path``, ``int``, ``a|b|c``, ...
    (Typer 0.29 has ``display_type``; 0.28 only the Click type)."""
    display = getattr(param, "display_type", None)
    if display is not None:
        shown = str(display(ctx) or "").strip("<>")
        return shown.removeprefix("list[").removesuffix("]").removesuffix(" range")
    kind = param.type
    choices = getattr(kind, "choices", None)
    if choices:
        return "|".join(str(c) for c in choices)
    name = str(getattr(kind, "name", "") or "").removesuffix(" range")
    return {"integer": "int", "text": "str"}.get(name, name)


def _metavar(param: Any, ctx: Any) -> str:
    """Plain metavars for help at 80 columns (PATH, N, NUMBER, TEXT, [a|b|c]) instead of
    Typer's ``<list[str]>`` / ``<int range>``."""
    base = _type_name(param, ctx)
    if "|" in base:
        return f"[{base}]"
    return _METAVARS.get(base, base.upper() or "VALUE")


class KerasauditGroup(TyperGroup):
    """Help readable at 80 columns and usage errors as one line (exit 2), as the README says."""

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        command = super().get_command(ctx, cmd_name)
        for param in getattr(command, "params", []):
            if param.metavar is not None:
                continue
            if getattr(param, "param_type_name", "") == "argument":
                param.metavar = (param.name or "value").upper()
                if getattr(param, "nargs", 1) != 1:
                    param.metavar += "..."
            elif not getattr(param, "is_flag", False):
                param.metavar = _metavar(param, ctx)
        return command

    def main(self, *args: Any, **kwargs: Any) -> Any:
        standalone = kwargs.pop("standalone_mode", True)
        try:
            result = super().main(*args, standalone_mode=False, **kwargs)  # type: ignore[misc]
        except NoArgsIsHelpError as exc:  # `kerasaudit` alone: the help, on stdout
            if not standalone:
                raise
            typer.echo(exc.format_message())
            sys.exit(0)
        except ClickException as exc:
            if not standalone:
                raise
            ctx = getattr(exc, "ctx", None)
            where = ctx.command_path if ctx is not None else "kerasaudit"
            message = " ".join(exc.format_message().split())
            typer.echo(f"error: {message} (see '{where} --help')", err=True)
            sys.exit(2 if isinstance(exc, UsageError) else exc.exit_code)
        except typer.Abort as exc:  # Click's word for an interrupt outside a command's body
            if not standalone:
                raise
            sys.exit(interrupted(exc))
        if standalone:
            sys.exit(result if isinstance(result, int) else 0)
        return result


app = typer.Typer(
    name="kerasaudit",
    cls=KerasauditGroup,
    help="Audit saved Keras models for backdoors (per-channel l1/l2/linf activation statistics) "
    "and prune them out. Exit codes: 0 nothing found, 1 findings, 2 bad input, 3 model refused "
    "as unsafe, 4 internal error.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"kerasaudit {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")
    ] = False,
) -> None:
    """Audit saved Keras models for backdoors."""


app.command("audit")(audit_cmd.audit)
app.command("inspect")(inspect_cmd.inspect)
app.command("scan")(scan_cmd.scan)
app.command("evaluate")(evaluate_cmd.evaluate)
app.command("prune")(prune_cmd.prune)
app.command("sweep")(sweep_cmd.sweep)
app.command("reverse")(reverse_cmd.reverse)
app.command("defend")(defend_cmd.defend)
app.command("gradcam")(gradcam_cmd.gradcam)
app.command("report")(report_cmd.report)
app.command("merge-stats")(merge_stats_cmd.merge_stats)
app.command("baseline")(baseline_cmd.baseline)
app.command("batch")(batch_cmd.batch)


def main() -> None:
    # SIGTERM (a CI job cancelled, `timeout`, a batch coordinator) would otherwise end the process
    # without running a single `finally`, leaving the private copy of an untrusted model in TMPDIR.
    signals.install()
    app()

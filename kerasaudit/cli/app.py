"""The ``kerasaudit`` Typer application. Imports nothing heavy: TensorFlow loads on first use."""

from __future__ import annotations

from typing import Annotated

import typer

from kerasaudit import __version__
from kerasaudit.cli import (
    audit_cmd,
    defend_cmd,
    evaluate_cmd,
    gradcam_cmd,
    inspect_cmd,
    prune_cmd,
    report_cmd,
    reverse_cmd,
    scan_cmd,
    sweep_cmd,
)

app = typer.Typer(
    name="kerasaudit",
    help="Audit saved Keras models for backdoors (per-channel l1/l2/linf activation statistics) "
    "and prune them out. Exit codes: 0 nothing found, 1 findings, 2 bad input, 3 model refused "
    "as unsafe, 4 internal error.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
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


def main() -> None:
    app()

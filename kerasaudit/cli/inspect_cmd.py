"""``kerasaudit inspect MODEL``: format, saving Keras version, inputs/outputs, auditable layers."""

from __future__ import annotations

from typing import Annotated

import typer

from kerasaudit.cli.common import (
    Consoles,
    CustomObjectsOpt,
    ForceOpt,
    FormatOpt,
    ModelArg,
    OutputFormat,
    OutputOpt,
    QuietOpt,
    UnsafeOpt,
    emit,
    handle_errors,
    prepare_output,
)
from kerasaudit.cli.context import load, warn_if_unsafe


@handle_errors
def inspect(
    model: ModelArg,
    include_dense: Annotated[
        bool,
        typer.Option(
            "--include-dense",
            help=(
                "List every Dense layer as auditable too (one applied at every position is "
                "listed anyway)."
            ),
        ),
    ] = False,
    fmt: FormatOpt = OutputFormat.TABLE,
    output: OutputOpt = None,
    force: ForceOpt = False,
    quiet: QuietOpt = False,
    unsafe: UnsafeOpt = False,
    custom_objects: CustomObjectsOpt = None,
) -> None:
    """Show what a model is made of: format, inputs, outputs and every auditable layer."""
    from kerasaudit.formats import inspect_fmt
    from kerasaudit.inventory import build_inventory

    consoles = Consoles(quiet)
    prepare_output(output, force)
    loaded = load(consoles, model, unsafe, custom_objects, as_images=False)
    warn_if_unsafe(consoles, loaded)
    inventory = build_inventory(loaded, include_dense=include_dense)
    emit(
        fmt,
        lambda: inspect_fmt.to_json(inventory),
        lambda console: inspect_fmt.render(inventory, console),
        consoles,
        output,
        force,
    )

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


@handle_errors
def inspect(
    model: ModelArg,
    include_dense: Annotated[
        bool, typer.Option("--include-dense", help="List Dense layers as auditable too.")
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
    from kerasaudit.loading import load_model

    consoles = Consoles(quiet)
    prepare_output(output, force)
    with consoles.err.status("loading model"):
        loaded = load_model(model, unsafe=unsafe, custom_objects_file=custom_objects)
    if loaded.unsafe and loaded.safety.findings:
        consoles.info(
            f"warning: loaded despite {len(loaded.safety.findings)} safety finding(s) (--unsafe)"
        )
    inventory = build_inventory(loaded, include_dense=include_dense)
    emit(
        fmt,
        lambda: inspect_fmt.to_json(inventory),
        lambda console: inspect_fmt.render(inventory, console),
        consoles,
        output,
        force,
    )

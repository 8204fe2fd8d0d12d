"""Formatting of ``ModelInventory`` (the ``inspect`` command)."""

from __future__ import annotations

from typing import Any

from rich.console import Console

from kerasaudit.formats._table import Table
from kerasaudit.inventory import ModelInventory

SCHEMA = "kerasaudit.inspect/1"


def to_json(inventory: ModelInventory) -> dict[str, Any]:
    return {"schema": SCHEMA, **inventory.to_dict()}


def _shape(shape: tuple[int | None, ...]) -> str:
    return "(" + ", ".join("None" if d is None else str(d) for d in shape) + ")"


def render(inventory: ModelInventory, console: Console) -> None:
    summary = Table(title=f"Model {inventory.name}", show_header=False, title_justify="left")
    summary.add_column("key", style="bold")
    summary.add_column("value")
    summary.add_row("file", inventory.path)
    summary.add_row("format", inventory.format)
    summary.add_row("saved by Keras", inventory.keras_version or "unknown")
    for tensor in inventory.inputs:
        summary.add_row("input", f"{tensor.name} {_shape(tensor.shape)} {tensor.dtype}")
    for tensor in inventory.outputs:
        summary.add_row("output", f"{tensor.name} {_shape(tensor.shape)} {tensor.dtype}")
    summary.add_row(
        "parameters", f"{inventory.params_total:,} ({inventory.params_trainable:,} trainable)"
    )
    summary.add_row("layers", f"{inventory.layer_count} ({len(inventory.auditable)} auditable)")
    if inventory.loaded_unsafely:
        summary.add_row(
            "safety", f"LOADED WITH --unsafe; {len(inventory.safety_findings)} finding(s)"
        )
    console.print(summary)
    for finding in inventory.safety_findings:
        console.print(f"  finding: {finding}", markup=False)
    for finding in inventory.not_loaded:
        console.print(
            f"  not loaded (the training configuration; models load uncompiled): {finding}",
            markup=False,
        )

    table = Table(title="Auditable layers", title_justify="left")
    for column in (
        "layer",
        "class",
        "channels",
        "kernel",
        "activation",
        "batch norm",
        "measured after",
        "output",
        "params",
    ):
        table.add_column(column, justify="right" if column in ("channels", "params") else "left")
    for layer in inventory.auditable:
        table.add_row(
            layer.path,
            layer.class_name + (f" ({layer.groups} groups)" if layer.groups > 1 else ""),
            str(layer.channels),
            "×".join(str(k) for k in layer.kernel_size) or "-",
            layer.activation,
            layer.batch_norm or "-",
            layer.measured_after,
            _shape(layer.output_shape),
            f"{layer.params:,}",
        )
    if not inventory.auditable:
        console.print("No auditable (convolutional) layers found.", markup=False)
    else:
        console.print(table)

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


def _per_image(shape: tuple[int | None, ...]) -> str:
    """An output shape without its batch axis: ``28×28×32`` (``?`` where the size varies)."""
    return "×".join("?" if d is None else str(d) for d in shape[1:]) or "-"


def _beside(path: str, layer: str) -> str:
    """``path`` without the nested model(s) it shares with ``layer`` (``features/f_bn1`` beside
    ``features/f_conv1`` is ``f_bn1``)."""
    parent = layer.rpartition("/")[0]
    return path[len(parent) + 1 :] if parent and path.startswith(parent + "/") else path


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

    # Short headers (channels, activation, batch norm) and a per-image output shape, so that a
    # row fits 80 columns (the JSON has the full shapes); "scanned at" (the layer whose output
    # scan measures, JSON measured_after) only when some layer is measured after another.
    measured_elsewhere = any(a.measured_after != a.path for a in inventory.auditable)
    table = Table(title="Auditable layers", title_justify="left")
    columns = ["layer", "class", "ch.", "kernel", "act.", "BN"]
    if measured_elsewhere:
        columns.append("scanned at")
    for column in [*columns, "output", "params"]:
        table.add_column(column, justify="right" if column in ("ch.", "params") else "left")
    for layer in inventory.auditable:
        cells = [
            layer.path,
            layer.class_name + (f" ({layer.groups} groups)" if layer.groups > 1 else ""),
            str(layer.channels),
            "×".join(str(k) for k in layer.kernel_size) or "-",
            layer.activation,
            _beside(layer.batch_norm, layer.path) if layer.batch_norm else "-",
        ]
        if measured_elsewhere:
            after = layer.measured_after
            cells.append("itself" if after == layer.path else _beside(after, layer.path))
        table.add_row(*cells, _per_image(layer.output_shape), f"{layer.params:,}")
    if not inventory.auditable:
        console.print("No auditable (convolutional) layers found.", markup=False)
    else:
        console.print(table)

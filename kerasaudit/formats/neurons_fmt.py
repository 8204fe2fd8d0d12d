"""Formatting of ``TriggerNeurons`` (flagged neurons under a trigger: scan --trigger, audit)."""

from __future__ import annotations

from rich.console import Console
from rich.text import Text

from kerasaudit.formats._table import Table
from kerasaudit.neurons import TriggerNeurons

TOP = 12


def summary(neurons: TriggerNeurons) -> str:
    layers = sum(1 for n in neurons.layers if n.flagged)
    text = (
        f"{neurons.flagged_count} channel(s) in {layers} layer(s) raised far beyond their "
        f"siblings by the trigger (triggered − clean ℓ∞, robust z > {neurons.threshold:g})"
    )
    if neurons.dead_count:
        text += f"; {neurons.dead_count} dead channel(s) left out"
    return text


def render(
    neurons: TriggerNeurons,
    console: Console,
    *,
    title: str,
    top: int = TOP,
    context: str | None = None,
) -> None:
    """The flagged channels under ``title``; with none flagged, the summary line alone,
    prefixed by ``context`` (which trigger) when given, since no table names it."""
    table = Table(title=Text(title), title_justify="left")
    for column in ("layer", "channel", "clean ℓ∞", "triggered ℓ∞", "z"):
        table.add_column(column, justify="left" if column == "layer" else "right", no_wrap=False)
    detail = {n.layer: n for n in neurons.layers}
    for layer, channel, z in neurons.top(top):
        n = detail[layer]
        table.add_row(
            Text(layer, overflow="fold"),
            str(channel),
            f"{n.clean_linf[channel]:.3g}",
            f"{n.triggered_linf[channel]:.3g}",
            f"{z:.1f}",
        )
    if neurons.flagged_count:
        console.print(table)
        if neurons.flagged_count > top:
            console.print(
                Text(f"… and {neurons.flagged_count - top} more (all of them in --format json).")
            )
    line = summary(neurons)
    if not neurons.flagged_count and context:
        line = f"{context}: {line}"
    console.print(Text(line))

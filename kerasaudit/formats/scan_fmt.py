"""Formatting of ``ScanResult`` (the ``scan`` command)."""

from __future__ import annotations

from typing import Any

import numpy as np
from rich.console import Console

from kerasaudit.formats._table import Table
from kerasaudit.neurons import TriggerNeurons
from kerasaudit.stages.scan import ScanResult

SCHEMA = "kerasaudit.stages.scan/1"
TOP_FLAGGED = 20
NOT_A_VERDICT = (
    "Clean-data statistics are not a backdoor verdict: a backdoor's channels stay quiet until "
    "the trigger is present. `kerasaudit audit MODEL -d DATA` recovers triggers and gives one; "
    "`scan --trigger T` (or --trigger-data) flags the channels a known trigger drives."
)
MEASURED_NOTE = (
    "ℓ1, ℓ2, ℓ∞ of each channel's activation map, averaged over images, measured on the tensor "
    "the next layer sees (after the conv's activation, or after its BatchNorm + activation)"
)


def to_json(
    result: ScanResult,
    *,
    model_path: str | None = None,
    stats_file: str | None = None,
    neurons: TriggerNeurons | None = None,
) -> dict[str, Any]:
    body = result.to_dict()
    body["model"] = {"path": model_path, **body["model"]}
    return {
        "schema": SCHEMA,
        **body,
        "measured": MEASURED_NOTE,
        "verdict": None,
        "not_a_verdict": NOT_A_VERDICT,
        "stats_file": stats_file,
        "trigger_neurons": None if neurons is None else neurons.to_dict(),
    }


def _num(value: float) -> str:
    return "-" if not np.isfinite(value) else f"{value:.4g}"


def _mean(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else float("nan")


def render(
    result: ScanResult,
    console: Console,
    *,
    model_path: str | None = None,
    stats_file: str | None = None,
    top: int = TOP_FLAGGED,
    neurons: TriggerNeurons | None = None,
) -> None:
    stats = result.stats
    summary = Table(title=f"Scan of {stats.model_name}", show_header=False, title_justify="left")
    summary.add_column("key", style="bold")
    summary.add_column("value")
    if model_path:
        summary.add_row("model", model_path)
    summary.add_row("data", ", ".join(stats.sources))
    summary.add_row("images", f"{stats.images:,}")
    if result.device is not None:
        device = result.device
        devices = ", ".join(d.rsplit("device:", 1)[-1] for d in device.devices)
        summary.add_row(
            "device",
            f"{device.strategy} ({devices}), {device.precision}"
            + (", XLA" if device.jit_compile else ""),
        )
    if result.seconds is not None:
        summary.add_row("time", f"{result.seconds:.1f} s")
    summary.add_row(
        "flagged",
        f"{result.flagged_count:,} of {result.channel_count:,} channels in {len(stats.layers)} "
        f"layers (score > {result.threshold:g}); clean statistics, not a verdict",
    )
    if result.dead_count:
        summary.add_row("dead", f"{result.dead_count:,} channels silent on this data (not scored)")
    for warning in result.warnings:
        summary.add_row("warning", warning)
    if stats_file:
        summary.add_row("statistics", stats_file)
    console.print(summary)
    console.print(f"Measured: {MEASURED_NOTE}.", markup=False)
    console.print("Score: max of robust z (median/MAD) of ℓ∞ and of ℓ∞/ℓ2 within the layer.",
                  markup=False)  # fmt: skip

    names = max((len(s.layer) for s in stats.layers), default=5)
    layers = Table(title="Layers (ℓ1, ℓ2 and the measured tensor: --format json)",
                   title_justify="left")  # fmt: skip
    layers.add_column("layer", min_width=min(names, 40))
    for column in ("channels", "mean ℓ∞", "max ℓ∞", "max score", "flagged", "dead"):
        layers.add_column(column, justify="right")
    for channel_stats, flags in result.layer_results():
        score = flags.score[np.isfinite(flags.score)]
        layers.add_row(
            channel_stats.layer,
            str(channel_stats.channels),
            _num(_mean(channel_stats.mean_linf)),
            _num(float(channel_stats.max_linf.max())),
            "-" if flags.note else _num(float(score.max()) if score.size else float("nan")),
            f"[bold red]{len(flags.flagged)}[/]" if flags.flagged else "0",
            str(len(flags.dead)),
        )
    console.print(layers)

    if neurons is not None:
        from kerasaudit.formats import neurons_fmt

        neurons_fmt.render(
            neurons, console, title="Channels the trigger drives (triggered − clean ℓ∞)"
        )
    else:
        console.print(NOT_A_VERDICT, markup=False)
    flagged = result.top_flagged()
    if not flagged:
        console.print(
            f"No channel scores above the threshold {result.threshold:g} on clean data.",
            markup=False,
        )
        return
    table = Table(title="Flagged channels on clean data (highest score first)",
                  title_justify="left")  # fmt: skip
    table.add_column("layer", min_width=min(names, 40))
    for column in ("channel", "mean ℓ∞", "max ℓ∞", "ℓ∞/ℓ2", "z ℓ∞", "z ℓ∞/ℓ2", "score"):
        table.add_column(column, justify="right")
    for channel_stats, flags, channel in flagged[:top]:
        table.add_row(
            channel_stats.layer,
            str(channel),
            _num(float(channel_stats.mean_linf[channel])),
            _num(float(channel_stats.max_linf[channel])),
            _num(float(channel_stats.linf_over_l2[channel])),
            _num(float(flags.z_linf[channel])),
            _num(float(flags.z_ratio[channel])),
            _num(float(flags.score[channel])),
        )
    console.print(table)
    if len(flagged) > top:
        console.print(f"… and {len(flagged) - top} more (all of them in --format json).",
                      markup=False)  # fmt: skip

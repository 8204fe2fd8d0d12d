"""Formatting of ``SweepResult``: table, JSON, CSV text."""

from __future__ import annotations

import csv
import io
from typing import Any

from rich.console import Console
from rich.text import Text

from kerasaudit.formats._table import Table
from kerasaudit.stages.sweep import SweepPoint, SweepResult

SCHEMA = "kerasaudit.stages.sweep/1"
CSV_COLUMNS = ("criterion", "layer", "ratio", "channels_pruned", "accuracy", "asr", "ra")


def to_json(result: SweepResult) -> dict[str, Any]:
    return {"schema": SCHEMA, **result.to_dict()}


def to_csv(result: SweepResult) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    writer.writerow(
        ["none", "", 0.0, 0, result.baseline_accuracy, result.baseline_asr, result.baseline_ra]
    )
    for p in result.points:
        writer.writerow(
            [str(p.criterion), p.layer, p.ratio, p.channels_pruned, p.accuracy, p.asr, p.ra]
        )
    return buffer.getvalue()


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.2f} %"


def summary_line(result: SweepResult) -> str:
    best = result.best
    if best is None:
        budget = 100 * result.max_acc_drop
        return f"no pruning point keeps the accuracy loss within {budget:.1f} points"
    return (
        f"recommended: --criterion {best.criterion} --layer {best.layer} --ratio {best.ratio:g} "
        f"(accuracy {_pct(best.accuracy)}, ASR {_pct(best.asr)}; baseline "
        f"{_pct(result.baseline_accuracy)}, ASR {_pct(result.baseline_asr)})"
    )


def _row(table: Table, name: str, p: SweepPoint | None, baseline: float) -> None:
    if p is None:
        table.add_row(name, "-", "-", "-", "none within budget", "", "")
        return
    table.add_row(
        name,
        Text(p.layer),
        f"{p.ratio:g}",
        str(p.channels_pruned),
        _pct(p.accuracy),
        f"{100 * (p.accuracy - baseline):+.2f}",
        _pct(p.asr) + " / " + _pct(p.ra),
    )


def render(result: SweepResult, console: Console) -> None:
    head = Table(title=Text("Sweep"), show_header=False, title_justify="left")
    head.add_column("key", style="bold")
    head.add_column("value")
    head.add_row(
        "baseline",
        f"accuracy {_pct(result.baseline_accuracy)}, ASR {_pct(result.baseline_asr)}, "
        f"RA {_pct(result.baseline_ra)} (target {result.target}, {result.images} images)",
    )
    head.add_row("ratios", ", ".join(f"{r:g}" for r in result.ratios))
    if result.fine_tuned:
        head.add_row("points", "each pruned clone fine-tuned before it was measured")
    head.add_row("budget", f"accuracy loss ≤ {100 * result.max_acc_drop:.1f} points")
    head.add_row(
        "layers",
        Text(
            f"{len(result.fast_layers)} by prefix reuse, {len(result.slow_layers)} by "
            f"pruned clones; {result.seconds:.1f} s"
        ),
    )
    console.print(head)
    rec = Table(
        title=Text("Recommended per criterion (lowest ASR within budget, then smallest ratio)"),
        title_justify="left",
    )
    for column in ("criterion", "layer", "ratio", "pruned", "accuracy", "Δ points", "ASR / RA"):
        rec.add_column(column, justify="left" if column in ("criterion", "layer") else "right")
    for name, point in result.recommended.items():
        _row(rec, name, point, result.baseline_accuracy)
    console.print(rec)

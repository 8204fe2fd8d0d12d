"""Formatting of ``BaselineBuild`` (the ``baseline`` command)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.text import Text

from kerasaudit.formats._table import Table
from kerasaudit.stages.baseline import BaselineBuild
from kerasaudit.verdict import BASELINE_SIGNALS

SCHEMA = "kerasaudit.baseline/1"
SIGNAL_HEADERS = {
    "mask_l1": "mask",
    "additive_l2": "additive",
    "margin": "margin",
    "warp_rms": "warp",
}


def to_json(result: BaselineBuild, output: str) -> dict[str, Any]:
    return {"schema": SCHEMA, "output": output, **result.to_dict()}


def _labels(flagged: tuple[int, ...]) -> str:
    if not flagged:
        return "nothing"
    return ", ".join("all-to-all" if k < 0 else str(k) for k in flagged)


def _factor(offset: float) -> str:
    """An offset as the factor it divides that label's value by (× 0.40: usually 2.5× smaller)."""
    return "n/a" if not math.isfinite(offset) else f"× {math.exp(offset):.2f}"


def summary_line(result: BaselineBuild, output: str) -> str:
    n = len(result.reports)
    return (
        f"wrote {output}: baseline {result.task.baseline.name} from {n} clean models; "
        f"each judged against a baseline of the other {n - 1}: {result.false_alarms} of {n} "
        f"flagged (plain rule: {result.plain_false_alarms} of {n})"
    )


def render(result: BaselineBuild, console: Console, output: str) -> None:
    task = result.task
    head = Table(
        title=Text(f"Baseline {task.baseline.name}"), show_header=False, title_justify="left"
    )
    head.add_column("key", style="bold")
    head.add_column("value")
    head.add_row("written to", Text(output))
    head.add_row("clean models", str(len(result.reports)))
    head.add_row("task", f"{task.num_classes} classes of {tuple(task.image_shape)}")
    head.add_row("fingerprint", Text(f"{result.data_images:,} images of {result.data_path}"))
    head.add_row("thresholds", Text(f"{result.rule_source}: {task.baseline.rule.describe()}"))
    if task.baseline.references:
        names = ", ".join(Path(r).name for r in task.baseline.references)
        head.add_row("reference models", Text(f"{names} (copied beside the file)"))
    console.print(head)

    signals = [s for s in BASELINE_SIGNALS if s in task.baseline.offsets]
    offsets = Table(
        title="Per-label offsets (each label's usual value ÷ its model's median)",
        title_justify="left",
    )
    offsets.add_column("label", justify="right")
    for s in signals:
        offsets.add_column(SIGNAL_HEADERS.get(s, s), justify="right")
    for k in range(task.num_classes):
        offsets.add_row(str(k), *(_factor(task.baseline.offsets[s][k]) for s in signals))
    console.print(offsets)

    check = Table(
        title="Leave-one-out: each clean model judged against a baseline of the others",
        title_justify="left",
    )
    check.add_column("report")
    check.add_column("with baseline")
    check.add_column("plain rule")
    for report, left_out, plain in zip(result.reports, result.left_out, result.plain, strict=True):
        check.add_row(Text(report.path), _labels(left_out), _labels(plain))
    console.print(check)

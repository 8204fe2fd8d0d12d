"""Formatting of ``ReverseResult`` (the ``reverse`` command)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from kerasaudit.completion import Completion
from kerasaudit.reverse import LabelResult, ReverseResult

SCHEMA = "kerasaudit.reverse/1"


def to_json(result: ReverseResult, files: Sequence[str] = ()) -> dict[str, Any]:
    return {"schema": SCHEMA, **result.to_dict(), "files": list(files)}


def _num(value: float | None, digits: int = 2) -> str:
    if value is None or value != value:  # None or NaN
        return "n/a"
    if value == float("inf"):
        return "inf"
    return f"{value:.{digits}f}"


def _pct(value: float) -> str:
    return "n/a" if value != value else f"{100 * value:.1f} %"


def _label_name(r: LabelResult) -> str:
    return f"{r.label} ({r.name})" if r.name else str(r.label)


def completion_line(c: Completion) -> str:
    if c.skipped is not None:
        return f"not completed ({c.skipped})"
    return (
        f"completed: the {c.pixels_before}-pixel core voted by {c.restarts} NC run(s) grew to "
        f"{c.pixels_after} pixels at ≥ half peak (of {c.allowed_pixels} allowed; mask ℓ1 "
        f"{c.mask_l1:.1f})"
    )


def summary_line(result: ReverseResult) -> str:
    v = result.verdict
    cost = (
        f"{result.label_steps:,} label-steps in {result.optimisation_seconds:.1f} s "
        f"({1000 * result.seconds_per_label_step:.1f} ms each)"
    )
    if v.flagged:
        return f"BACKDOOR suspected: label(s) {', '.join(map(str, v.flagged))} flagged; {cost}"
    return f"no label flagged; {cost}"


def render(result: ReverseResult, console: Console, files: Sequence[str] = ()) -> None:
    v = result.verdict
    table = Table(
        title=Text(f"Neural Cleanse on {result.model}: {len(result.labels)} label(s)"),
        title_justify="left",
    )
    for column in (
        "label",
        "mask ℓ1",
        "mask index",
        "attack success",
        "ℓ∞ excess",
        "steps",
        "verdict",
    ):
        table.add_column(column, justify="left" if column in ("label", "verdict") else "right")
    for r in result.labels:
        steps = f"{r.steps}" + (" (early stop)" if r.early_stopped else "")
        if not r.reached:
            steps += " (threshold not reached)"
        conc = _num(r.linf_excess, 2)
        if r.linf_layer:
            conc += f" @{r.linf_layer}[{r.linf_channel}]"
        table.add_row(
            Text(_label_name(r)),
            _num(r.mask_l1, 1),
            _num(r.mask_anomaly),
            _pct(r.attack_success),
            Text(conc),
            steps,
            Text("FLAGGED" if r.flagged else "-", style="bold red" if r.flagged else ""),
        )
    console.print(table)
    console.print(
        Text(
            f"mask ℓ1 median {v.mask_median:.1f}, MAD·1.4826 {v.mask_mad:.1f}; "
            "mask index: MAD score, positive = smaller than the median. ℓ∞ excess: how far the "
            "label's trigger drives a conv channel beyond its largest clean ℓ∞ (×)."
        )
    )
    console.print(Text(f"rule: {v.rule}"))
    for r in result.labels:
        if r.flagged:
            console.print(Text(f"label {_label_name(r)}: " + "; ".join(r.reasons)))
        if r.completion is not None:
            console.print(Text(f"label {_label_name(r)} trigger: {completion_line(r.completion)}"))
    verdict = (
        f"BACKDOOR suspected, target label(s): {', '.join(map(str, v.flagged))}"
        if v.flagged
        else "no backdoor target found"
    )
    console.print(Text(f"verdict: {verdict}", style="bold"))
    if files:
        console.print(Text(f"wrote {len(files)} file(s): " + ", ".join(files)))

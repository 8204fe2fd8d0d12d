"""Formatting of ``ReverseResult`` (the ``reverse`` command)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.text import Text

from kerasaudit.completion import Completion
from kerasaudit.formats._table import Table
from kerasaudit.stages.reverse import LabelResult, ReverseResult

SCHEMA = "kerasaudit.stages.reverse/1"


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
    core = f"{c.pixels_before}-pixel " + (
        f"core voted by {c.restarts} NC runs" if c.restarts > 1 else "region"
    )
    return (
        f"completed: the {core} grew to "
        f"{c.pixels_after} pixels at ≥ half peak (of {c.allowed_pixels} allowed; mask ℓ1 "
        f"{c.mask_l1:.1f})"
    )


def verdict_words(result: ReverseResult) -> str:
    v = result.verdict
    parts = []
    if v.flagged:
        parts.append(f"target label(s) {', '.join(map(str, v.flagged))}")
    if v.all_to_all:
        parts.append("an all-to-all backdoor (one small trigger moves images off their class)")
    return "BACKDOOR suspected: " + "; ".join(parts) if parts else "no backdoor found"


def summary_line(result: ReverseResult) -> str:
    return f"{verdict_words(result)} ({result.seconds:.0f} s)"


def _with_index(value: float, index: float, digits: int = 1, sep: str = " ") -> str:
    return f"{_num(value, digits)}{sep}({_num(index)})"


def render(result: ReverseResult, console: Console, files: Sequence[str] = ()) -> None:
    v = result.verdict
    table = Table(
        title=Text(f"Trigger recovery on {result.model}: {len(result.labels)} label(s)"),
        title_justify="left",
    )
    columns = ("label", "NC mask ℓ1", "additive ℓ2", "warp px", "margin", "ℓ∞ excess", "flagged")
    # Below 100 columns each index goes under its value (numbers never wrap: formats/_table).
    sep = "\n" if console.width < 100 else " "
    for column in columns:
        table.add_column(column, justify="left" if column in ("label", "flagged") else "right")
    for r in result.labels:
        mask = _with_index(r.mask_l1, r.mask_anomaly, 1, sep) + ("" if r.reached else " *")
        add = (
            "-"
            if r.additive is None
            else _with_index(r.additive.l2, r.additive_anomaly, 2, sep)
            + ("" if r.additive.reached else " *")
        )
        warp = (
            "-"
            if r.warp is None
            else _with_index(r.warp.rms, r.warp_anomaly, 2, sep) + ("" if r.warp.reached else " *")
        )
        table.add_row(
            Text(_label_name(r)),
            mask,
            add,
            warp,
            _with_index(r.margin, r.margin_anomaly, 1, sep),
            _num(r.linf_excess),
            Text(
                ", ".join(r.signals) if r.flagged else "-",
                style="bold red" if r.flagged else "",
            ),
        )
    console.print(table)
    console.print(
        Text(
            "(index): robust σ against the other labels"
            + (" after each label's task baseline" if v.baseline is not None else "")
            + " (positive = more suspicious); * = the "
            "attack threshold was not reached. ℓ∞ excess: how far the label's trigger drives "
            "a conv channel beyond its largest clean ℓ∞ (×). warp px: the smallest smooth warp "
            "field sending images to the label, RMS displacement in pixels."
        )
    )
    u = result.untargeted
    if u is not None:
        console.print(
            Text(
                f"untargeted trigger: mask ℓ1 {u.mask_l1:.1f} = "
                f"{_num(v.scores.untargeted_ratio)} × the median targeted mask; moves "
                f"{_pct(u.success)} of images off their class; where each class goes most "
                "(class 0 first): " + " ".join(map(str, u.moves_to))
            )
        )
        if u.completion is not None:
            done = u.completion
            works = (
                ""
                if done.skipped is not None
                else f"; sends {_pct(done.attack_success)} of images to their class's destination"
                + ("" if u.trigger_arrays[0] is done.mask else ": too few, the search's kept")
            )
            console.print(Text(f"untargeted trigger: {completion_line(done)}{works}"))
    if result.baseline_choice:
        console.print(Text(f"baseline: {result.baseline_choice}"))
    console.print(Text(f"rule: {v.rule.describe()}"))
    for r in result.labels:
        if r.flagged:
            console.print(Text(f"label {_label_name(r)}: " + "; ".join(r.reasons)))
        if r.completion is not None:
            console.print(Text(f"label {_label_name(r)} trigger: {completion_line(r.completion)}"))
    console.print(Text(f"verdict: {verdict_words(result)}", style="bold"))
    if files:
        console.print(Text(f"wrote {len(files)} file(s): " + ", ".join(files)))

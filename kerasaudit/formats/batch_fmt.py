"""Formatting of ``FleetResult`` (the ``batch`` command)."""

from __future__ import annotations

from rich.console import Console
from rich.text import Text

from kerasaudit.fleet import STATUSES, FleetResult, Outcome
from kerasaudit.formats._table import Table


def _what(outcome: Outcome) -> str:
    if outcome.status == "found":
        parts = []
        if outcome.targets:
            parts.append("target label(s) " + ", ".join(map(str, outcome.targets)))
        if outcome.all_to_all:
            parts.append("all-to-all")
        return "; ".join(parts) or "the known trigger works"
    if outcome.status == "clean":
        return "no backdoor found"
    return outcome.message


def progress_line(outcome: Outcome, done: int, total: int) -> str:
    retried = f", {outcome.attempts} attempts" if outcome.attempts > 1 else ""
    return (
        f"[{done}/{total}] {outcome.status:9} {outcome.model}: {_what(outcome)} "
        f"({outcome.seconds:.0f} s{retried})"
    )


def summary_line(result: FleetResult) -> str:
    counts = ", ".join(f"{result.count(s)} {s}" for s in STATUSES if result.count(s))
    skipped = f" ({len(result.skipped)} already recorded, skipped)" if result.skipped else ""
    total = len(result.outcomes) + len(result.skipped)
    return (
        f"batch: {total} model(s): {counts or 'none'}; {len(result.outcomes)} audited"
        f"{skipped} in "
        f"{result.seconds:.0f} s; results in {result.db}"
    )


def render(result: FleetResult, console: Console) -> None:
    table = Table(title=Text(f"Batch audit ({result.db})"), title_justify="left")
    table.add_column("model", overflow="fold")
    table.add_column("status", no_wrap=True)
    table.add_column("finding / message", overflow="fold")
    table.add_column("s", justify="right", no_wrap=True)
    for outcome in sorted(result.outcomes, key=lambda o: o.model):
        table.add_row(outcome.model, outcome.status, _what(outcome), f"{outcome.seconds:.0f}")
    console.print(table)

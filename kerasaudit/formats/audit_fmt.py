"""Formatting of ``AuditResult`` (the ``audit`` command)."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.text import Text

from kerasaudit.formats import defend_fmt, neurons_fmt, reverse_fmt
from kerasaudit.formats._table import Table
from kerasaudit.stages.audit import AuditResult, Fix

SCHEMA = "kerasaudit.stages.audit/1"


# Under a blind fix's table (Fix.blind; defend's twin: defend_fmt.RECOVERED_ONLY)
BLIND_FIX = defend_fmt.recovered_only(
    "the fix unlearnt on these same images", "the fixed model on other data (kerasaudit evaluate)"
)


def to_json(result: AuditResult, output: str | None) -> dict[str, Any]:
    return {"schema": SCHEMA, "model": result.model, "fixed_model": output, **result.to_dict()}


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.2f} %"


def clean_statistics_words(result: AuditResult) -> str:
    scan = result.clean_scan
    if scan is None:
        return (
            "none: no auditable conv layer (a convolution a custom layer computes itself "
            "is not a conv layer); the trigger search ran on the whole model"
        )
    return (
        f"{scan.flagged_count:,} of {scan.channel_count:,} channels stand out on clean "
        "data (leads, not a verdict: a backdoor stays quiet until its trigger)"
    )


def verdict_words(result: AuditResult) -> str:
    if result.reverse is not None:
        return reverse_fmt.verdict_words(result.reverse)
    asr = _pct(None if result.known is None else result.known.asr)
    if result.backdoor:
        return f"BACKDOOR: the known trigger works (ASR {asr})"
    return f"no working backdoor: the known trigger's ASR is {asr}"


def fix_note(fix: Fix) -> str:
    """The caveat under the fix's numbers (defend's :func:`~defend_fmt.optimism_note`): they
    are on the audit data it fine-tuned on; what the kept recipe lost where no choice looked."""
    remedy = "measure the fixed model on labelled images not in it (kerasaudit evaluate)"
    return defend_fmt.optimism_note(
        fix.held_out_drop, fix.held_images, "the audit data", remedy, fix.verification
    )


def summary_line(result: AuditResult, output: str | None, html: str | None = None) -> str:
    line = f"audit: {verdict_words(result)}"
    if result.fix is not None:
        fix = result.fix
        line += (
            f"; fixed: accuracy {_pct(fix.before.accuracy)} → {_pct(fix.after.accuracy)} "
            "(on the data it fine-tuned on"
        )
        if fix.verification is not None:
            v = fix.verification
            line += f"; {defend_fmt.points(-v.drop)} on {v.images} images no choice saw"
        elif fix.held_out_drop is not None:
            held = f"{defend_fmt.points(-fix.held_out_drop)} on {fix.held_images} images"
            line += f"; {held} held out from it"
        line += f"), worst ASR after {_pct(fix.worst_asr_after)}"
        if result.fix_left_backdoor:
            line += " (STILL WORKS)"
    if output:
        line += f"; wrote {output}"
    elif result.settings.fix is not None and not result.backdoor:
        line += "; nothing to fix, nothing written"
    if html:
        line += f"; HTML page {html}"
    return line


def render(result: AuditResult, console: Console, output: str | None) -> None:
    inv = result.inventory
    head = Table(title=Text(f"Audit of {result.model}"), show_header=False, title_justify="left")
    head.add_column("key", style="bold", no_wrap=True)
    head.add_column("value", overflow="fold")
    head.add_row("verdict", Text(verdict_words(result), style="bold"))
    head.add_row(
        "model",
        Text(
            f"{inv.format}, saved by Keras {inv.keras_version or 'unknown'}, "
            f"{inv.params_total:,} parameters, {len(inv.auditable)} auditable layers"
        ),
    )
    head.add_row("clean statistics", Text(clean_statistics_words(result)))
    if result.known is not None and result.known.attack is not None:
        attack = result.known.attack
        head.add_row(
            "known trigger",
            Text(
                f"{attack.description}: ASR {_pct(attack.asr)} on the data "
                f"(finding above {100 * result.settings.max_asr:g} %)"
            ),
        )
    console.print(head)
    for finding in result.findings():
        console.print(Text(f"• {finding}"))
    if result.reverse is not None:
        reverse_fmt.render(result.reverse, console)
    for neurons in result.neurons:
        label = "untargeted" if neurons.label is None else f"target {neurons.label}"
        what = neurons.trigger.get("description")
        neurons_fmt.render(
            neurons,
            console,
            title=f"Channels the trigger drives ({label}; the paper's neurons)"
            + (f": {what}" if what else ""),
            context=f"{label}, {what}" if what else label,
        )
    if result.fix is not None:
        fix = result.fix
        table = Table(title=Text("Fix (measured on the audit data)"), title_justify="left")
        recal = fix.reestimated is not None
        for column in ("measure", "before", "after") + (("BN re-estimated",) if recal else ()):
            table.add_column(column, justify="left" if column == "measure" else "right")
        accuracy = ["clean accuracy", _pct(fix.before.accuracy), _pct(fix.after.accuracy)]
        if recal:
            assert fix.reestimated is not None
            accuracy.append(_pct(fix.reestimated.accuracy))
        table.add_row(*accuracy)
        for (trigger, before, after), second in zip(fix.asr, fix.asr_reestimated, strict=True):
            cells: list[Any] = [Text(f"ASR: {trigger}", overflow="fold"), _pct(before), _pct(after)]
            if recal:
                back = trigger in fix.comes_back
                cells.append(Text(_pct(second), style="bold red" if back else ""))
            table.add_row(*cells)
        console.print(table)
        console.print(Text(fix_note(fix)))
        for line in defend_fmt.look_lines(fix.second_looks, "fixed"):
            console.print(Text(line))
        if fix.blind:
            console.print(Text(BLIND_FIX))
        if result.fix_left_backdoor:
            console.print(
                Text("The backdoor survived the fix: do not ship this model.", style="bold red")
            )
    if output:
        console.print(Text(f"wrote {output}"))

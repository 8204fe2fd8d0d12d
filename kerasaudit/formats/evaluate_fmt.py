"""Formatting of ``EvaluationResult`` (the ``evaluate`` command)."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.text import Text

from kerasaudit.evaluation import OFF_CLASS, EvaluationResult
from kerasaudit.formats._table import Table

SCHEMA = "kerasaudit.evaluate/1"


def to_json(result: EvaluationResult) -> dict[str, Any]:
    return {"schema": SCHEMA, **result.to_dict()}


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.2f} %"


def _ratio(part: int, whole: int) -> str:
    return f"{part:,} / {whole:,}"


def _target_words(target: int) -> str:
    return "untargeted: moved off their class" if target == OFF_CLASS else f"target {target}"


def summary_line(result: EvaluationResult) -> str:
    """One line for stderr (or a CI log)."""
    line = f"accuracy {_percent(result.accuracy)}"
    if result.attack is not None:
        line += (
            f", ASR {_percent(result.asr)}, RA {_percent(result.ra)} "
            f"({_target_words(result.attack.target)})"
        )
    if result.max_asr is not None:
        verdict = "EXCEEDS" if result.asr_exceeded else "within"
        line += f"; {verdict} --max-asr {100 * result.max_asr:g} %"
    return line


def render(result: EvaluationResult, console: Console) -> None:
    summary = Table(
        title=Text(f"Evaluation of {result.model}"), show_header=False, title_justify="left"
    )
    summary.add_column("key", style="bold")
    summary.add_column("value", justify="right")
    summary.add_column("counts", justify="right")
    summary.add_column("note")
    data = result.data
    summary.add_row(
        "data", Text(data.path), f"{data.count:,} images", f"{result.num_classes} classes"
    )
    summary.add_row(
        "clean accuracy",
        _percent(result.accuracy),
        _ratio(result.correct, result.total),
        "correct / images",
    )
    attack = result.attack
    if attack is not None:
        summary.add_row("trigger", Text(attack.trigger["spec"]), "", Text(attack.description))
        untargeted = attack.target == OFF_CLASS
        summary.add_row(
            "target",
            "none" if untargeted else str(attack.target),
            "",
            attack.target_source if untargeted else f"from {attack.target_source}",
        )
        summary.add_row(
            "ASR",
            _percent(attack.asr),
            _ratio(attack.to_target, attack.evaluated),
            "triggered images moved off their own class"
            if untargeted
            else f"triggered non-target images classified as {attack.target}",
        )
        if attack.unstamped_to_target is not None and attack.flipped is not None:
            where = "off their own class" if untargeted else f"as {attack.target}"
            summary.add_row(
                "without trigger",
                _percent(attack.unstamped_rate),
                _ratio(attack.unstamped_to_target, attack.evaluated),
                f"the same images unstamped, classified {where}",
            )
            summary.add_row(
                "flipped",
                _percent(attack.flip_rate),
                _ratio(attack.flipped, attack.evaluated),
                "there only when stamped",
            )
        summary.add_row(
            "RA",
            _percent(attack.ra),
            _ratio(attack.still_correct, attack.evaluated),
            "triggered non-target images still classified correctly",
        )
    if result.max_asr is not None:
        verdict = "EXCEEDED" if result.asr_exceeded else "ok"
        summary.add_row("max ASR", f"{100 * result.max_asr:g} %", "", verdict)
    console.print(summary)

    per_class = Table(title="Clean accuracy per class", title_justify="left")
    per_class.add_column("label", justify="right")
    if any(c.name is not None for c in result.per_class):
        per_class.add_column("name")
    per_class.add_column("accuracy", justify="right")
    per_class.add_column("correct / images", justify="right")
    for c in result.per_class:
        cells: list[str | Text] = [str(c.label)]
        if len(per_class.columns) == 4:
            cells.append(Text(c.name or ""))
        cells += [_percent(c.accuracy), _ratio(c.correct, c.count)]
        per_class.add_row(*cells)
    console.print(per_class)

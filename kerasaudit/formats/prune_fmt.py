"""Formatting of ``PruneResult`` (the ``prune`` command)."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.text import Text

from kerasaudit.evaluation import EvaluationResult
from kerasaudit.formats._table import Table
from kerasaudit.stages.prune import PruneResult, Verification

SCHEMA = "kerasaudit.stages.prune/1"


def to_json(result: PruneResult, output: str | None) -> dict[str, Any]:
    return {"schema": SCHEMA, "output": output, **result.to_dict()}


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.2f} %"


def _stage_row(name: str, ev: EvaluationResult | None, table: Table) -> None:
    if ev is not None:
        table.add_row(name, _pct(ev.accuracy), _pct(ev.asr), _pct(ev.ra))


def summary_line(result: PruneResult) -> str:
    pruned = sum(len(p.channels) for p in result.pruned)
    line = (
        f"pruned {pruned} channel(s) in {', '.join(p.layer for p in result.pruned)}"
        if result.pruned
        else "pruned nothing"
    )
    if result.before is not None and result.final is not None:
        line += f"; accuracy {_pct(result.before.accuracy)} → {_pct(result.final.accuracy)}"
        if result.final.attack is not None:
            line += f", ASR {_pct(result.before.asr)} → {_pct(result.final.asr)}"
    for n, (other, after) in enumerate(zip(result.also, result.also_final, strict=True), start=2):
        if other.before is not None and after is not None:
            line += f", trigger {n} ASR {_pct(other.before.asr)} → {_pct(after.asr)}"
    return line


def verification_text(v: Verification) -> str:
    """One line for ``--verify``'s measurement (the numbers are the result's)."""
    asr = "" if v.worst_asr is None else f", ASR {_pct(v.worst_asr)}"
    return (
        f"{points(-v.drop)} accuracy ({_pct(v.original_accuracy)} → {_pct(v.accuracy)}"
        f"{asr}) on {v.images} images no choice saw: the kept recipe fine-tuned again on the "
        "rest of --data"
    )


def points(change: float) -> str:
    """An accuracy change (a fraction) in signed points: "+0.40 points", "-1.25 points"."""
    return f"{round(100 * change, 2) + 0.0:+.2f} points"  # + 0.0: no "-0.00"


def _optimizer(name: str, rate: float) -> str:
    if name == "sgd":
        return f"SGD {rate:g} (momentum 0.9, cosine decay)"
    return f"Adam {rate:g}"


def render(result: PruneResult, console: Console) -> None:
    head = Table(title=Text("Prune"), show_header=False, title_justify="left")
    head.add_column("key", style="bold")
    head.add_column("value")
    by = f" (ranked by {result.ranked_by} triggers)" if result.ranked_by > 1 else ""
    head.add_row("criterion", f"{result.criterion}{by}")
    head.add_row("ratio", f"{result.ratio:g}")
    where = ", ".join(result.choice.layers) or "none"
    head.add_row("layer choice", Text(f"{where} — {result.choice.reason}"))
    head.add_row("evaluated on", result.evaluated_on)
    if result.fine_tune is not None:
        ft = result.fine_tune
        mode = (
            f"unlearning{f' {ft.triggers} triggers' if ft.triggers > 1 else ''} "
            f"({ft.stamped_fraction:.0%} of each batch stamped, true labels kept)"
            if ft.mode == "unlearn"
            else "plain"
        )
        head.add_row(
            "fine-tuning",
            f"{mode}, {ft.epochs} epoch(s), {ft.steps} steps on {ft.examples} images, "
            f"{_optimizer(ft.optimizer, ft.learning_rate)}"
            + (", pruned channels held at zero" if result.pruned else ""),
        )
    if result.verification is not None:
        head.add_row("verified", verification_text(result.verification))
    console.print(head)

    if result.choice.candidates:
        cand = Table(
            title=Text("Candidates tried (held-out numbers; ← chosen)"), title_justify="left"
        )
        extra = max(len(c.others) for c in result.choice.candidates)
        asrs = ["ASR"] if not extra else [f"ASR {n}" for n in range(1, extra + 2)]
        timed = len({c.epochs for c in result.choice.candidates}) > 1  # chosen or extended
        shares = len({c.fraction for c in result.choice.candidates}) > 1  # --auto-fractions
        columns = ["layer", "ratio", *(["stamped"] if shares else []),
                   *(["epochs"] if timed else []), "channels pruned", "accuracy", *asrs,
                   "RA"]  # fmt: skip
        for column in columns:
            cand.add_column(column, justify="left" if column == "layer" else "right")
        for c in result.choice.candidates:
            chosen = c == result.choice.chosen
            others = [_pct(a) for a in c.others] + ["n/a"] * (extra - len(c.others))
            cand.add_row(
                Text((c.layer or "(none)") + (" ←" if chosen else "")),
                f"{c.ratio:g}",
                *([f"{c.fraction:.0%}" if c.fraction is not None else "-"] if shares else []),
                *([str(c.epochs)] if timed else []),
                str(c.channels_pruned),
                _pct(c.accuracy),
                _pct(c.asr),
                *others,
                _pct(c.ra),
            )
        console.print(cand)

    layers = Table(title=Text("Channels pruned"), title_justify="left")
    for column in ("layer", "pruned", "of", "batch norm zeroed", "channels"):
        layers.add_column(column)
    for p in result.pruned:
        shown = ", ".join(str(c) for c in p.channels[:24]) + (" …" if len(p.channels) > 24 else "")
        layers.add_row(
            Text(p.layer),
            str(len(p.channels)),
            str(p.total_channels),
            Text(p.batch_norm or "-"),
            shown,
        )
    if result.pruned:
        console.print(layers)

    if result.before is not None:
        stages = Table(title=Text("Before / after"), title_justify="left")
        for column in ("model", "accuracy", "ASR", "RA"):
            stages.add_column(column, justify="left" if column == "model" else "right")
        _stage_row("original", result.before, stages)
        if result.pruned:
            _stage_row("pruned", result.after_prune, stages)
        if result.fine_tune is not None:
            tuned = f"fine-tuned ({result.fine_tune.mode})"
            name = f"pruned + {tuned}" if result.pruned else tuned
            _stage_row(name, result.after_fine_tune, stages)
        console.print(stages)
        if result.also:
            _also_table(result, console)
    else:
        console.print("No labelled data: accuracy and ASR not measured.", markup=False)


def _also_table(result: PruneResult, console: Console) -> None:
    """The further known triggers' ASRs before and after (``--also-unlearn``)."""
    table = Table(title=Text("Further known triggers (ASR)"), title_justify="left")
    for column in ("trigger", "target", "original", "pruned", "fine-tuned"):
        table.add_column(column, justify="left" if column == "trigger" else "right")
    for n, other in enumerate(result.also, start=2):
        if other.target is None:
            table.add_row(
                Text(f"{n}: {other.trigger}"),
                f"none ({_pct(other.share)} to one label)",
                "n/a",
                "n/a",
                "n/a",
            )
            continue
        table.add_row(
            Text(f"{n}: {other.trigger}"),
            str(other.target),
            _pct(None if other.before is None else other.before.asr),
            _pct(None if other.after_prune is None else other.after_prune.asr)
            if result.pruned
            else "-",
            _pct(None if other.after_fine_tune is None else other.after_fine_tune.asr),
        )
    console.print(table)

"""Formatting of ``DefendResult`` (the ``defend`` command)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.text import Text

from kerasaudit.formats import prune_fmt, reverse_fmt
from kerasaudit.formats._table import Table
from kerasaudit.formats.prune_fmt import points
from kerasaudit.stages.defend import DefendResult, LostClass, SecondLook, TriggerCheck
from kerasaudit.stages.prune import LayerChoice, Verification

SCHEMA = "kerasaudit.stages.defend/1"


def to_json(result: DefendResult, output: str | None) -> dict[str, Any]:
    return {"schema": SCHEMA, "output": output, **result.to_dict()}


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.2f} %"


def optimism_note(
    held_out_drop: float | None,
    held_images: int,
    data: str = "--data",
    remedy: str = "pass --eval-data (labelled images not in --data)",
    verification: Verification | None = None,
) -> str:
    """The caveat under a removal's table whose accuracy is on ``data``, which the removal
    fine-tuned on; ``held_out_drop``: what the kept candidate lost on images held out from its
    fine-tuning (:attr:`LayerChoice.held_out_drop`), when measured; ``verification``: the kept
    recipe measured on a second part no choice saw (:class:`Verification`), when run."""
    text = f"Clean accuracy above is on {data}, which the removal fine-tuned on: it is optimistic."
    if verification is not None:
        chosen_on = (
            ""
            if held_out_drop is None
            else f"; the kept candidate read {points(-held_out_drop)} on the images it was "
            "chosen on"
        )
        text += (
            f" The kept recipe, fine-tuned again on all but {verification.images} images of "
            f"{data} that no choice saw, changed accuracy by {points(-verification.drop)} on "
            f"them (± {100 * verification.standard_error:.2f}, one standard error: an estimate "
            f"of the cost without the choice's optimism, from few images{chosen_on})."
        )
    elif held_out_drop is not None:
        text += (
            f" The kept candidate, fine-tuned on the rest of {data}, changed accuracy by "
            f"{points(-held_out_drop)} on the {held_images} images held out from its "
            f"fine-tuning (few images, and the best of several candidates on them: a rough, "
            f"optimistic estimate; the model written was fine-tuned again on all of {data})."
        )
    return f"{text} For numbers to rely on, {remedy}."


def cost_warning(
    choice: LayerChoice, data: str = "--data", verification: Verification | None = None
) -> str | None:
    """One line for stderr when the kept candidate lost more than its budget on the images held
    out from its fine-tuning (:attr:`LayerChoice.over_budget`), or its recipe more than one
    standard error over it on the images no choice saw (``verification``: on the held-out zoo
    chains a point estimate over the budget was wrong 7 times in 10; JOURNAL, thirty-first
    session)."""
    if choice.budget is None:
        return None
    v = verification
    if v is not None and v.drop - v.standard_error > choice.budget + 1e-9:
        return (
            f"warning: the removal cost {100 * v.drop:.2f} ± {100 * v.standard_error:.2f} "
            f"points of accuracy on {v.images} images of {data} no choice saw (budget "
            f"{100 * choice.budget:.2f}; over it by more than one standard error): check the "
            "defended model on other labelled images before using it"
        )
    if not choice.over_budget or choice.held_out_drop is None:
        return None
    # With a verification, say what it measured too: the two folds' numbers differ (250 images
    # each), and a reader who sees one in the summary and the other here needs both.
    again = (
        ""
        if v is None
        else f"; run again with another {v.images} held out, {100 * v.drop:.2f} ± "
        f"{100 * v.standard_error:.2f}"
    )
    return (
        f"warning: the removal cost {100 * choice.held_out_drop:.2f} points of accuracy on the "
        f"{choice.held_images} images of {data} held out from its fine-tuning (budget "
        f"{100 * choice.budget:.2f}; no candidate stayed within it{again}): check the defended "
        "model on other labelled images before using it"
    )


def lost_class_warnings(lost: Sequence[LostClass], data: str = "--data") -> list[str]:
    """One line for stderr per flagged target class the defended model stopped recognising
    (:attr:`DefendResult.lost_classes`)."""
    return [
        f"warning: the defended model gets {c.correct_after} of the {c.count} images of label "
        f"{c.label} in {data} right ({c.correct_before} before): the removal took the class "
        "with the backdoor; do not use this model for that class"
        for c in lost
    ]


def _towards(label: int | None) -> str:
    return "off their class" if label is None else f"→ {label}"


def summary_line(result: DefendResult, output: str | None) -> str:
    if not result.reverse.verdict.backdoor:
        return "defend: no backdoor found; model unchanged, nothing written"
    line = "defend: " + reverse_fmt.verdict_words(result.reverse)
    if result.before is not None and result.after is not None:
        line += f"; accuracy {_pct(result.before.accuracy)} → {_pct(result.after.accuracy)}"
        if result.on_defence_data:
            line += " on --data (fine-tuned on it: optimistic"
            held, verified = result.held_out_drop, result.verification
            if verified is not None:
                line += f"; {points(-verified.drop)} on {verified.images} images no choice saw"
            elif held is not None:
                line += f"; {points(-held)} on {result.held_images} images held out from it"
            line += ")"
    for c in result.checks:
        form = f" ({c.form})" if c.form else ""
        line += (
            f"; {c.source} trigger{form} {_towards(c.label)}: ASR {_pct(c.asr_before)} → "
            f"{_pct(c.asr_after)}"
        )
    if output:
        line += f"; wrote {output}"
    return line


def look_lines(looks: Sequence[SecondLook], model: str) -> list[str]:
    """One sentence per second look (``model``: "defended", "fixed")."""
    lines = []
    for look in looks:
        verdict = "unlearnt too" if look.used else "not used"
        reached = "" if look.reached else ", did not reach the attack threshold"
        where = f"Round {look.round}: label {look.label} searched again on the {model} model"
        if look.search:
            where = (
                f"Search {look.search}: label {look.label} searched again on the original "
                f"model, {look.forbidden} pixels of its earlier triggers forbidden"
            )
        lines.append(
            f"{where}: "
            f"mask ℓ1 {look.mask_l1:.1f}, limit {look.ratio * look.reference_l1:.1f} "
            f"({look.ratio:g} × the other labels' median {look.reference_l1:.1f})"
            f"{reached}: {verdict}"
        )
    return lines


def render(result: DefendResult, console: Console, output: str | None) -> None:
    console.print(Text("Step 1: reverse", style="bold"))
    reverse_fmt.render(result.reverse, console)
    if result.prunes:
        for pruned in result.prunes:
            what = "unlearn (no pruning)"
            if pruned.pruned:
                what = "prune (recovered trigger) + unlearn"
            fitted = pruned.fine_tune.generators if pruned.fine_tune is not None else 0
            if fitted:
                what += f" ({fitted} also fitted as image-dependent changes)"
            console.print(Text(f"Step 2: {what}", style="bold"))
            prune_fmt.render(pruned, console)
        for line in look_lines(result.second_looks, "defended"):
            console.print(Text(line))
    else:
        console.print(Text("Step 2: skipped (no backdoor found, model unchanged)", style="bold"))
    console.print(Text(f"Step 3: evaluate on {result.evaluated_on}", style="bold"))
    table = Table(show_header=True)
    recal = result.reestimated is not None
    columns = ["measure", "original", "defended"] + (["BN re-estimated"] if recal else [])
    for column in columns:
        table.add_column(column, justify="left" if column == "measure" else "right")
    if result.before is not None:
        row = [
            "clean accuracy",
            _pct(result.before.accuracy),
            _pct(result.after.accuracy) if result.after is not None else "unchanged",
        ]
        if result.reestimated is not None:
            row.append(_pct(result.reestimated.accuracy))
        table.add_row(*row)
    for c in result.checks:
        form = f" ({c.form})" if c.form else ""
        cells: list[Any] = [
            Text(f"ASR, {c.source} trigger{form} {_towards(c.label)}"),
            _pct(c.asr_before),
            _pct(c.asr_after) if result.changed else "unchanged",
        ]
        if recal:
            cells.append(Text(_pct(c.asr_reestimated), style="bold red" if c.comes_back else ""))
        table.add_row(*cells)
    console.print(table)
    if recal:
        console.print(
            Text(
                "BN re-estimated: the defended model with its BatchNorm statistics recomputed "
                "on --data (clean), as a later recalibration would do."
            )
        )
    if result.on_defence_data:
        note = optimism_note(
            result.held_out_drop, result.held_images, verification=result.verification
        )
        console.print(Text(note))
    if result.recovered_only:
        console.print(Text(RECOVERED_ONLY))
    if output:
        console.print(Text(f"wrote {output}"))


# Shown under defend's and blind audit --fix's tables (DefendResult.recovered_only, Fix.blind)
def recovered_only(unlearnt: str, measure: str) -> str:
    """The caveat under a removal checked only with recovered triggers (``defend``; ``audit
    --fix`` without a known trigger): ``unlearnt`` says what unlearnt them, ``measure`` how to
    measure the real trigger."""
    return (
        f"Checked only with the triggers recovered from the model, which {unlearnt}: a low ASR "
        "here does not show that the real trigger is gone (on models no defence was tuned on, "
        '2-13 % of it often survived; README, "Efficacy on the zoo"). With a sample or spec of '
        f"the real trigger, measure {measure}."
    )


RECOVERED_ONLY = recovered_only(
    "the fine-tuning unlearnt", "it (--eval-trigger; kerasaudit evaluate)"
)


def comes_back_warning(checks: Sequence[TriggerCheck]) -> str | None:
    """One line for stderr when a trigger works again after BatchNorm re-estimation."""
    back = [c for c in checks if c.comes_back]
    if not back:
        return None
    which = "; ".join(
        f"{c.source} trigger {_towards(c.label)} {_pct(c.asr_after)} → {_pct(c.asr_reestimated)}"
        for c in back
    )
    return (
        "warning: the removal may be superficial: once BatchNorm statistics are re-estimated "
        f"on clean data the backdoor comes back ({which}); check before relying on it"
    )

"""``audit --html FILE``: the audit as one self-contained page (same style and safety as
``report``: escaped text, inline CSS and pictures, no JavaScript, a CSP that forbids every
request).

Pure formatting: every number is already in :class:`~kerasaudit.stages.audit.AuditResult`; the
picture of the recovered triggers is made by the caller (``kerasaudit.report.reverse_figure``).
"""

from __future__ import annotations

from kerasaudit.formats import audit_fmt
from kerasaudit.formats.report_html import (
    CSP,
    CSS,
    REVERSE_WHAT,
    _badge,
    _e,
    _kv,
    _num,
    _pct,
    _section,
    _table,
    reverse_evidence,
)
from kerasaudit.report import Figure
from kerasaudit.stages.audit import AuditResult

TOP_NEURONS = 15


def _verdict(result: AuditResult, written: str | None) -> str:
    kind = "bad" if result.backdoor or result.fix_left_backdoor else "ok"
    word = "backdoor found" if result.backdoor else "no backdoor found"
    body = f"<p>{_badge(kind, word)}{_e(audit_fmt.verdict_words(result))}</p>"
    findings = result.findings()
    if findings:
        body += '<ul class="verdict">' + "".join(f"<li>{_e(f)}</li>" for f in findings) + "</ul>"
    exit_code = 1 if result.backdoor or result.fix_left_backdoor else 0
    body += f'<p class="note">Exit code {exit_code}.'
    if written:
        body += f" Fixed model written to <code>{_e(written)}</code>."
    body += "</p>"
    what = (
        "Whether the model carries a backdoor: a label that every input can be pushed to with "
        "an unusually small trigger, or a known trigger that still works."
    )
    return _section("summary", "Verdict", what, body)


def _model(result: AuditResult) -> str:
    inv = result.inventory
    rows = [
        ("file", result.model),
        ("format", f"{inv.format}, saved by Keras {inv.keras_version or 'unknown'}"),
        ("parameters", f"{inv.params_total:,} ({inv.params_trainable:,} trainable)"),
        ("layers", f"{inv.layer_count:,}, of which {len(inv.auditable):,} auditable"),
        ("clean statistics", audit_fmt.clean_statistics_words(result)),
    ]
    if inv.loaded_unsafely:
        rows.append(("loaded with --unsafe", "; ".join(inv.safety_findings) or "no findings"))
    what = "What was audited."
    return _section("inventory", "Model", what, _kv(rows))


def _trigger(result: AuditResult, figure: Figure | None) -> str:
    if result.reverse is not None:
        body = reverse_evidence(result.reverse, figure)
        return _section("reverse", "Trigger recovery", REVERSE_WHAT, body)
    known = result.known
    attack = None if known is None else known.attack
    rows = [("clean accuracy", _pct(None if known is None else known.accuracy))]
    if attack is not None:
        rows.append(("trigger", attack.description))
        rows.append(("attack success rate", _pct(attack.asr)))
    rows.append(("finding above", f"{100 * result.settings.max_asr:g} % (--max-asr)"))
    what = "The known trigger, stamped on the audit data."
    return _section("reverse", "Known trigger", what, _kv(rows))


def _neurons(result: AuditResult) -> str:
    what = (
        "Cheng et al.'s flagged neurons: channels whose ℓ∞ activation rises far more under the "
        "trigger than the other channels of their layer (robust z of triggered − clean)."
    )
    if not result.neurons:
        return _section("neurons", "Channels the trigger drives", what, "<p>No trigger.</p>")
    body = ""
    for n in result.neurons:
        label = "untargeted" if n.label is None else f"target {n.label}"
        described = n.trigger.get("description")
        if described:
            label += f" — {described}"
        top = n.top(TOP_NEURONS)
        body += (
            f"<h3>{_e(label)}: {n.flagged_count:,} channel(s) above z {n.threshold:g}"
            f" ({n.dead_count:,} dead, excluded)</h3>"
        )
        if top:
            body += _table(
                ["layer", "channel", "z"],
                [[layer, c, _num(z)] for layer, c, z in top],
                numeric=(1, 2),
            )
    return _section("neurons", "Channels the trigger drives", what, body)


def _fix(result: AuditResult, written: str | None) -> str:
    fix = result.fix
    if fix is None:
        return ""
    rows = [["clean accuracy", _pct(fix.before.accuracy), _pct(fix.after.accuracy)]]
    rows += [[f"ASR: {t}", _pct(before), _pct(after)] for t, before, after in fix.asr]
    head = ["measure", "before", "after"]
    if fix.reestimated is not None:
        head.append("BN re-estimated")
        rows[0].append(_pct(fix.reestimated.accuracy))
        for row, again in zip(rows[1:], fix.asr_reestimated, strict=True):
            row.append(_pct(again))
    body = _table(head, rows, numeric=tuple(range(1, len(head))))
    body += f"<p>{_e(audit_fmt.fix_note(fix))}</p>"
    if result.fix_left_backdoor:
        body += f"<p>{_badge('bad', 'still works')}The backdoor survived the fix.</p>"
    if fix.comes_back:
        body += (
            f"<p>{_badge('bad', 'comes back')}With BatchNorm statistics re-estimated on the "
            "clean data the backdoor works again: the fix may be superficial.</p>"
        )
    if fix.blind:
        body += f"<p>{_e(audit_fmt.BLIND_FIX)}</p>"
    what = "--fix: pruned the channels the trigger drives and fine-tuned while unlearning it."
    return _section("prune", "Fix", what, body)


def render(
    result: AuditResult,
    figure: Figure | None,
    *,
    written: str | None,
    generated: str,
    version: str,
    command: str | None = None,
) -> str:
    """The whole page, as a string."""
    title = f"kerasaudit audit: {result.model}"
    stages = ", ".join(f"{name} {sec:.1f} s" for name, sec in result.seconds.items())
    about = _kv([("generated", f"{generated} by kerasaudit {version}"), ("stages", stages)])
    if command:
        about += f"<p>Command: <code>{_e(command)}</code></p>"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{_e(CSP)}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        '<meta name="referrer" content="no-referrer">',
        f"<title>{_e(title)}</title>",
        f"<style>{CSS}</style></head><body><main>",
        f"<header><h1>{_e(title)}</h1><p>{_e(generated)}</p></header>",
        _verdict(result, written),
        _model(result),
        _trigger(result, figure),
        _neurons(result),
        _fix(result, written),
        '<footer id="about"><h2>About this page</h2>'
        '<p class="what">How it was made, so the numbers can be reproduced.</p>'
        f"{about}</footer>",
        "</main></body></html>",
    ]
    return "\n".join(p for p in parts if p) + "\n"

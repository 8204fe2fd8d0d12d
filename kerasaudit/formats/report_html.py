"""Formatting of ``ReportData``: one self-contained HTML page, and a short summary for stdout.

Pure formatting: every number is already in ``ReportData``; this module only chooses words,
layout and number formats. All text goes through :func:`html.escape`; pictures are inlined as
``data:image/png;base64`` URIs; the CSS is inline; there is no JavaScript, and a Content
Security Policy forbids every request, so the page works offline and cannot leak anything.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Iterable, Sequence
from typing import Any

from rich.console import Console
from rich.text import Text

from kerasaudit.evaluation import EvaluationResult
from kerasaudit.flags import SCORE_DEFINITION
from kerasaudit.formats._table import Table
from kerasaudit.report import Figure, ReportData, Skipped
from kerasaudit.stages.gradcam import GradcamResult, Localisation
from kerasaudit.stages.prune import PruneResult
from kerasaudit.stages.reverse import ReverseResult
from kerasaudit.stages.sweep import SweepPoint, SweepResult

TOP_FLAGGED = 20
SECTION_IDS = ("summary", "inventory", "scan", "reverse", "sweep", "prune", "gradcam", "about")
CSP = (
    "default-src 'none'; img-src data:; style-src 'unsafe-inline'; base-uri 'none'; "
    "form-action 'none'"
)

CSS = """
:root { --ink: #1d2430; --muted: #5b6573; --line: #d9dee5; --bg: #f6f8fa; --bad: #b71c1c;
  --bad-bg: #fdecea; --ok: #1b5e20; --ok-bg: #e8f5e9; --skip: #6b6f76; --skip-bg: #eef0f3; }
* { box-sizing: border-box; }
body { margin: 0; background: var(--bg); color: var(--ink);
  font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; }
main { max-width: 1180px; margin: 0 auto; padding: 24px 28px 48px; }
header h1 { font-size: 26px; margin: 8px 0 4px; }
header p { margin: 2px 0; color: var(--muted); }
section { background: #fff; border: 1px solid var(--line); border-radius: 8px;
  padding: 18px 22px; margin: 18px 0; }
h2 { font-size: 20px; margin: 0 0 4px; }
h3 { font-size: 16px; margin: 18px 0 6px; }
p.what { margin: 0 0 12px; color: var(--muted); font-style: italic; }
table { border-collapse: collapse; margin: 6px 0 10px; font-size: 13.5px; }
th, td { border: 1px solid var(--line); padding: 4px 9px; text-align: left; vertical-align: top; }
th { background: #f0f3f6; font-weight: 600; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
table.kv th { width: 210px; }
code { font: 13px/1.4 ui-monospace, "DejaVu Sans Mono", monospace; background: #f0f3f6;
  padding: 1px 4px; border-radius: 4px; overflow-wrap: anywhere; }
figure { margin: 10px 0; }
figure img { max-width: 100%; height: auto; border: 1px solid var(--line); border-radius: 4px;
  background: #fff; }
figure img.narrow { max-width: 860px; }
figcaption { color: var(--muted); font-size: 13px; margin-top: 4px; }
.badge { display: inline-block; padding: 1px 9px; border-radius: 10px; font-size: 12.5px;
  font-weight: 600; margin-right: 8px; }
.bad { color: var(--bad); background: var(--bad-bg); }
.ok { color: var(--ok); background: var(--ok-bg); }
.skip { color: var(--skip); background: var(--skip-bg); }
ul.verdict { list-style: none; padding: 0; margin: 4px 0; }
ul.verdict li { margin: 6px 0; }
tr.flagged td { background: var(--bad-bg); }
.note { color: var(--muted); font-size: 13px; }
footer { color: var(--muted); font-size: 13px; }
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _pct(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{100 * value:.{digits}f} %"


def _num(value: float | None, digits: int = 3) -> str:
    if value is None or value != value or value in (float("inf"), float("-inf")):
        return "–"
    return f"{value + 0.0:.{digits}g}"  # + 0.0: no "-0"


def _ratio(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def _badge(kind: str, text: str) -> str:
    return f'<span class="badge {kind}">{_e(text)}</span>'


def _img(figure: Figure, css_class: str = "") -> str:
    data = base64.b64encode(figure.png).decode("ascii")
    cls = f' class="{css_class}"' if css_class else ""
    return (
        f'<figure><img{cls} src="data:image/png;base64,{data}" alt="{_e(figure.alt)}">'
        f"<figcaption>{_e(figure.alt)}</figcaption></figure>"
    )


def _table(
    head: Sequence[str],
    rows: Iterable[Sequence[Any]],
    *,
    numeric: Sequence[int] = (),
    flagged_rows: Sequence[int] = (),
) -> str:
    """A table; cells are escaped here (pass plain text)."""
    cells = ["<table><thead><tr>"]
    for i, name in enumerate(head):
        cls = ' class="num"' if i in numeric else ""
        cells.append(f"<th{cls}>{_e(name)}</th>")
    cells.append("</tr></thead><tbody>")
    for r, row in enumerate(rows):
        cells.append('<tr class="flagged">' if r in flagged_rows else "<tr>")
        for i, value in enumerate(row):
            cls = ' class="num"' if i in numeric else ""
            cells.append(f"<td{cls}>{_e(value)}</td>")
        cells.append("</tr>")
    cells.append("</tbody></table>")
    return "".join(cells)


def _kv(rows: Iterable[tuple[str, str]]) -> str:
    body = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in rows)
    return f'<table class="kv"><tbody>{body}</tbody></table>'


def _section(ident: str, title: str, what: str, body: str) -> str:
    return (
        f'<section id="{ident}"><h2>{_e(title)}</h2><p class="what">{_e(what)}</p>{body}</section>'
    )


def _skipped(skip: Skipped) -> str:
    return f"<p>{_badge('skip', 'not run')}{_e(skip.reason.removeprefix('not run: '))}</p>"


# --- sections ------------------------------------------------------------------------------


def _summary(data: ReportData) -> str:
    items = []
    scan = data.scan
    if scan.has_findings:
        items.append(
            _badge("skip", "lead")
            + _e(f"Scan: {scan.flagged_count} of {scan.channel_count} conv channels have an "
                 "anomalous activation peak on clean images (see “Activation scan”) — a lead, "
                 "not a verdict.")
        )  # fmt: skip
    else:
        items.append(
            _badge("skip", "no lead")
            + _e(f"Scan: none of the {scan.channel_count} conv channels stands out on clean "
                 "images. Clean statistics are not a verdict: a backdoor stays quiet until "
                 "its trigger is present.")
        )  # fmt: skip
    rev = data.reverse
    if isinstance(rev, Skipped):
        items.append(_badge("skip", "not run") + _e("Reverse engineering: " + rev.reason))
    elif rev.flagged:
        items.append(
            _badge("bad", "finding")
            + _e(f"Reverse engineering: label(s) {', '.join(map(str, rev.flagged))} can be forced "
                 "by an abnormally small trigger — a suspected backdoor target.")
        )  # fmt: skip
    else:
        items.append(
            _badge("ok", "clean")
            + _e("Reverse engineering: no label can be forced by an abnormally small trigger.")
        )
    if isinstance(data.prune, Skipped):
        items.append(_badge("skip", "not run") + _e("Pruning: " + data.prune.reason))
    else:
        before, final = data.prune.before, data.prune.final
        if before is not None and final is not None and before.asr is not None:
            asr_after = final.asr if final.asr is not None else 0.0
            kind = "ok" if asr_after <= data.max_asr else "bad"
            label = "removed" if kind == "ok" else "still active"
            items.append(
                _badge(kind, f"backdoor {label}")
                + _e(f"Recommended prune: attack success rate {_pct(before.asr)} → "
                     f"{_pct(final.asr)}, clean accuracy {_pct(before.accuracy)} → "
                     f"{_pct(final.accuracy)}.")
            )  # fmt: skip
    cams = data.gradcam
    if isinstance(cams, GradcamResult):
        ratios = [(m, m.localisation) for m in cams.models if m.localisation is not None]
        if ratios:
            text = "; ".join(
                f"{'model' if m.role == 'model' else 'pruned model'} {_ratio(loc.ratio)}"
                for m, loc in ratios
            )
            items.append(
                _badge("skip", "Grad-CAM")
                + _e(f"Where triggered images are looked at — localisation ratio on the "
                     f"trigger (1 = no preference): {text}.")
            )  # fmt: skip
    verdict = (
        _badge("bad", "exit code 1") + _e("Findings: " + "; ".join(data.findings) + ".")
        if data.has_findings
        else _badge("ok", "exit code 0")
        + _e("No findings: no backdoor verdict and no trigger that works.")
    )
    items.append(verdict)
    body = '<ul class="verdict">' + "".join(f"<li>{i}</li>" for i in items) + "</ul>"
    if data.trigger is not None:
        body += _kv(
            [
                ("trigger", str(data.trigger.get("description", data.trigger.get("spec")))),
                ("source", data.trigger_source or "–"),
                ("target label", "–" if data.target is None else str(data.target)),
            ]
        )
    for note in data.notes:
        body += f'<p class="note">Note: {_e(note)}</p>'
    return _section(
        "summary",
        "Summary",
        "The verdict in short: what each stage below found, and whether the command reported "
        "findings.",
        body,
    )


def _inventory(data: ReportData) -> str:
    inv = data.inventory
    facts = _kv(
        [
            ("name", inv.name),
            ("file", data.model_path),
            ("format", f"{inv.format} (saved with Keras {inv.keras_version or 'unknown'})"),
            ("inputs", ", ".join(f"{t.name} {tuple(t.shape)}" for t in inv.inputs)),
            ("outputs", ", ".join(f"{t.name} {tuple(t.shape)}" for t in inv.outputs)),
            ("parameters", f"{inv.params_total:,} ({inv.params_trainable:,} trainable)"),
            ("layers", f"{inv.layer_count} (nested models included)"),
            ("loaded", "with --unsafe (safety checks not enforced)" if inv.loaded_unsafely
             else "in safe mode (config checked before loading)"),
        ]
    )  # fmt: skip
    layers = _table(
        ["layer", "type", "channels", "kernel", "batch norm", "measured after", "params"],
        (
            [
                a.path,
                a.class_name,
                a.channels,
                "×".join(map(str, a.kernel_size)) or "–",
                a.batch_norm or "–",
                a.measured_after,
                f"{a.params:,}",
            ]
            for a in inv.auditable
        ),
        numeric=(2, 6),
    )
    findings = ""
    if inv.safety_findings:
        findings = (
            "<h3>Safety findings (loaded anyway)</h3><ul>"
            + "".join(f"<li>{_e(f)}</li>" for f in inv.safety_findings)
            + "</ul>"
        )
    return _section(
        "inventory",
        "Model inventory",
        "What the model is: its inputs and outputs, and every convolutional layer the audit "
        "measures (with the BatchNormalization that follows it).",
        facts + "<h3>Auditable layers</h3>" + layers + findings,
    )


def _scan(data: ReportData) -> str:
    scan = data.scan
    stats = scan.stats
    facts = _kv(
        [
            ("clean images", f"{stats.images:,} from {data.data.path}"),
            ("layers × channels", f"{len(stats.layers)} layers, {scan.channel_count} channels"),
            ("flagged", f"{scan.flagged_count} channel(s) (score above {scan.threshold:g})"),
            ("score", SCORE_DEFINITION),
            ("time", "–" if scan.seconds is None else f"{scan.seconds:.1f} s"),
        ]
    )
    per_layer = []
    for s, f in scan.layer_results():
        finite = [v for v in f.score if v == v]
        per_layer.append(
            [
                s.layer,
                s.measured,
                s.channels,
                _num(float(sum(s.mean_linf) / max(len(s.mean_linf), 1))),
                f.note or _num(max(finite) if finite else None),
                len(f.flagged),
            ]
        )
    flagged_layers = [i for i, row in enumerate(per_layer) if row[-1]]
    layers = _table(
        ["layer", "measured tensor", "channels", "mean ℓ∞ (avg over channels)", "max score",
         "flagged"],
        per_layer,
        numeric=(2, 3, 4, 5),
        flagged_rows=flagged_layers,
    )  # fmt: skip
    top = scan.top_flagged(TOP_FLAGGED)
    if top:
        flagged = "<h3>Flagged channels (highest score first)</h3>" + _table(
            ["layer", "channel", "mean ℓ∞", "max ℓ∞", "ℓ∞/ℓ2", "z(ℓ∞)", "z(ℓ∞/ℓ2)", "score"],
            (
                [
                    s.layer,
                    c,
                    _num(float(s.mean_linf[c])),
                    _num(float(s.max_linf[c])),
                    _num(float(s.linf_over_l2[c])),
                    _num(float(f.z_linf[c])),
                    _num(float(f.z_ratio[c])),
                    _num(float(f.score[c])),
                ]
                for s, f, c in top
            ),
            numeric=(1, 2, 3, 4, 5, 6, 7),
        )
        if scan.flagged_count > len(top):
            flagged += (
                f'<p class="note">… and {scan.flagged_count - len(top)} more '
                "(all of them in <code>kerasaudit scan --format json</code>).</p>"
            )
    else:
        flagged = f"<p>{_badge('ok', 'none flagged')}No channel scores above the threshold.</p>"
    return _section(
        "scan",
        "Activation scan",
        "Per-channel activation statistics on clean images: a channel whose peak (ℓ∞) response "
        "is anomalous for its layer is flagged, because backdoor channels behave that way "
        "(Cheng et al. 2020).",
        facts + "<h3>Layers</h3>" + layers + flagged,
    )


REVERSE_WHAT = (
    "Trigger recovery: for each label, the smallest patch (Neural Cleanse), the smallest "
    "image-wide perturbation, and the largest logit margin any input reaches (MM-BD); a "
    "label that stands out from the others on any of them is a suspected backdoor target."
)


def reverse_evidence(
    result: ReverseResult, figure: Figure | None, trigger_label: int | None = None
) -> str:
    """The verdict, the recovered triggers and the per-label evidence table (report and audit)."""
    verdict = result.verdict
    if verdict.backdoor:
        what_found = []
        if verdict.flagged:
            what_found.append(f"target label(s): {', '.join(map(str, verdict.flagged))}")
        if verdict.all_to_all:
            what_found.append("all-to-all: one small trigger moves images off their own class")
        head = _badge("bad", "backdoor suspected") + _e("; ".join(what_found))
    else:
        head = _badge("ok", "no label flagged") + _e("no label stands out on any signal")
    body = f"<p>{head}</p>"
    if trigger_label is not None:
        body += (
            f"<p>The trigger recovered for label {trigger_label} drives the sweep, the "
            "prune and the Grad-CAM sections below.</p>"
        )
    if figure is not None:
        body += _img(figure)
    rows = [
        [
            r.label if r.name is None else f"{r.label} ({r.name})",
            _num(r.mask_l1, 4),
            _num(r.mask_anomaly),
            "–" if r.additive is None else _num(r.additive.l2, 3),
            _num(r.additive_anomaly),
            "–" if r.warp is None else _num(r.warp.rms, 3),
            _num(r.warp_anomaly),
            _num(r.margin, 1),
            _num(r.margin_anomaly),
            _num(r.linf_excess),
            ", ".join(r.signals) if r.flagged else "–",
        ]
        for r in result.labels
    ]
    body += _table(
        ["label", "mask ℓ1", "index", "additive ℓ2", "index", "warp px", "index", "margin",
         "index", "ℓ∞ excess", "flagged by"],
        rows,
        numeric=(1, 2, 3, 4, 5, 6, 7, 8, 9),
        flagged_rows=[i for i, r in enumerate(result.labels) if r.flagged],
    )  # fmt: skip
    if result.baseline_choice:
        body += f'<p class="note">Baseline: {_e(result.baseline_choice)}.</p>'
    body += (
        f'<p class="note">Rule: {_e(verdict.rule.describe())}. Time: {result.seconds:.0f} s.</p>'
    )
    return body


def _reverse(data: ReportData) -> str:
    what = REVERSE_WHAT
    rev = data.reverse
    if isinstance(rev, Skipped):
        return _section("reverse", "Reverse engineering", what, _skipped(rev))
    body = reverse_evidence(rev.result, rev.figure, rev.trigger_label)
    return _section("reverse", "Reverse engineering", what, body)


def _point_row(name: str, p: SweepPoint | None, baseline: float) -> list[str]:
    if p is None:
        return [name, "–", "–", "–", "none within budget", "–", "–"]
    return [
        name,
        p.layer,
        f"{p.ratio:g}",
        str(p.channels_pruned),
        _pct(p.accuracy),
        f"{100 * (p.accuracy - baseline):+.2f}",
        _pct(p.asr),
    ]


def _sweep(data: ReportData) -> str:
    what = (
        "How clean accuracy and the attack success rate (ASR) change as more channels of each "
        "layer are pruned, and the pruning recommended: the lowest ASR whose accuracy loss "
        "stays within the budget."
    )
    sw = data.sweep
    if isinstance(sw, Skipped):
        return _section("sweep", "Pruning sweep", what, _skipped(sw))
    assert isinstance(sw, SweepResult)
    body = _kv(
        [
            ("baseline", f"accuracy {_pct(sw.baseline_accuracy)}, ASR {_pct(sw.baseline_asr)} "
             f"(target {sw.target}, {sw.images:,} images)"),
            ("ratios", ", ".join(f"{r:g}" for r in sw.ratios)),
            ("budget", f"accuracy loss ≤ {100 * sw.max_acc_drop:.1f} points"),
            ("layers", f"{len(sw.fast_layers) + len(sw.slow_layers)} swept in {sw.seconds:.1f} s"),
        ]
    )  # fmt: skip
    if data.sweep_figure is not None:
        body += _img(data.sweep_figure, "narrow")
    body += "<h3>Recommended per criterion</h3>" + _table(
        ["criterion", "layer", "ratio", "channels", "accuracy", "Δ points", "ASR"],
        (_point_row(name, p, sw.baseline_accuracy) for name, p in sw.recommended.items()),
        numeric=(2, 3, 4, 5, 6),
    )
    if sw.best is not None:
        b = sw.best
        body += (
            "<p>Recommended: <code>"
            + _e(f"kerasaudit prune MODEL --criterion {b.criterion} --layer {b.layer} "
                 f"--ratio {b.ratio:g}")
            + "</code></p>"
        )  # fmt: skip
    return _section("sweep", "Pruning sweep", what, body)


def _ev_row(name: str, ev: EvaluationResult | None) -> list[str] | None:
    if ev is None:
        return None
    return [name, _pct(ev.accuracy), _pct(ev.asr), _pct(ev.ra), f"{ev.total:,}"]


def _prune(data: ReportData) -> str:
    what = (
        "The recommended prune applied to a copy of the model: clean accuracy, attack success "
        "rate (ASR) and robust accuracy (RA: triggered images still classified correctly) "
        "before and after."
    )
    pr = data.prune
    if isinstance(pr, Skipped):
        return _section("prune", "Before and after pruning", what, _skipped(pr))
    assert isinstance(pr, PruneResult)
    rows = [
        row
        for row in (
            _ev_row("original model", pr.before),
            _ev_row("pruned", pr.after_prune),
            _ev_row("pruned + fine-tuned", pr.after_fine_tune),
        )
        if row is not None
    ]
    body = _table(["model", "accuracy", "ASR", "RA", "images"], rows, numeric=(1, 2, 3, 4))
    pruned = "; ".join(
        f"{p.layer}: {len(p.channels)} of {p.total_channels} channels "
        f"({', '.join(map(str, p.channels))})"
        for p in pr.pruned
    )
    facts = [
        ("criterion", f"{pr.criterion}, ratio {pr.ratio:g}"),
        ("pruned", pruned),
        ("evaluated on", pr.evaluated_on),
    ]
    if pr.fine_tune is not None:
        ft = pr.fine_tune
        facts.append(("fine-tuning", f"{ft.epochs} epoch(s), {ft.mode}, {ft.examples:,} images"))
    body += _kv(facts)
    return _section("prune", "Before and after pruning", what, body)


def _loc_row(name: str, variant: str, loc: Localisation | None) -> list[str] | None:
    if loc is None:
        return None
    return [
        name,
        variant,
        str(loc.images),
        _pct(loc.mass_share, 1),
        _pct(loc.area_share, 1),
        _ratio(loc.ratio),
        _ratio(loc.ratio_median),
    ]


def _gradcam(data: ReportData) -> str:
    what = (
        "Where the model looks (class activation maps, red = most important for its answer): "
        "on triggered images a backdoored model looks at the trigger; after pruning it should "
        "look at the object again."
    )
    cams = data.gradcam
    if isinstance(cams, Skipped):
        return _section("gradcam", "Grad-CAM", what, _skipped(cams))
    assert isinstance(cams, GradcamResult)
    first = cams.models[0]
    facts = [
        ("method", f"{cams.method.label} via tf-keras-vis, explaining "
         + ("each image's predicted label" if cams.class_rule == "predicted" else cams.class_rule)),
        ("explained tensor", f"{first.target.tensor} (layer {first.target.layer}), "
         f"{first.target.grid[0]}×{first.target.grid[1]} map; score: {first.score}"),
        ("images", f"the first {cams.count} from {cams.data}"
         + ("" if not cams.skipped_target_images
            else f" ({cams.skipped_target_images} of the target class passed over)")),
    ]  # fmt: skip
    body = _kv(facts)
    rows = []
    for m in cams.models:
        name = "model" if m.role == "model" else "pruned model"
        for row in (
            _loc_row(name, "triggered", m.localisation),
            _loc_row(name, "clean (baseline)", m.clean_localisation),
        ):
            if row is not None:
                rows.append(row)
    if rows:
        body += "<h3>Localisation on the trigger</h3>" + _table(
            ["model", "images", "n", "CAM mass in trigger region", "region's share of the map",
             "ratio (mean)", "ratio (median)"],
            rows,
            numeric=(2, 3, 4, 5, 6),
        )  # fmt: skip
        body += (
            '<p class="note">Ratio = (share of the map’s mass inside the trigger’s region) / '
            "(the region’s share of the map). 1 means no preference for the trigger; a "
            "backdoored model explaining its target on triggered images scores far above 1.</p>"
        )
    if data.gradcam_figure is not None:
        body += _img(data.gradcam_figure)
    return _section("gradcam", "Grad-CAM", what, body)


def _about(data: ReportData) -> str:
    rows = [
        ("generated", f"{data.generated} by kerasaudit {data.version} in {data.seconds:.1f} s"),
        ("stages", ", ".join(f"{name} {sec:.1f} s" for name, sec in data.stage_seconds)),
        ("data", f"{data.data.path} ({data.data.count:,} images)"),
    ]
    if data.eval_data is not None:
        rows.append(("held-out data", f"{data.eval_data.path} ({data.eval_data.count:,} images)"))
    body = _kv(rows)
    if data.command:
        body += f"<p>Command: <code>{_e(data.command)}</code></p>"
    return (
        '<footer id="about"><h2>About this report</h2>'
        '<p class="what">How this page was made, so the numbers can be reproduced.</p>'
        f"{body}</footer>"
    )


def render(data: ReportData) -> str:
    """The whole page, as a string."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{_e(CSP)}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        '<meta name="referrer" content="no-referrer">',
        f"<title>{_e(data.title)}</title>",
        f"<style>{CSS}</style></head><body><main>",
        f"<header><h1>{_e(data.title)}</h1>"
        f"<p>Backdoor audit of <code>{_e(data.model_path)}</code> on "
        f"<code>{_e(data.data.path)}</code> — {_e(data.generated)}</p></header>",
        _summary(data),
        _inventory(data),
        _scan(data),
        _reverse(data),
        _sweep(data),
        _prune(data),
        _gradcam(data),
        _about(data),
        "</main></body></html>",
    ]
    return "\n".join(parts) + "\n"


# --- stdout --------------------------------------------------------------------------------


def to_json(data: ReportData, *, output: str | None = None) -> dict[str, Any]:
    return {**data.to_dict(), "output": output}


def summary_line(data: ReportData, output: str | None = None) -> str:
    line = f"report in {data.seconds:.1f} s: " + (
        "; ".join(data.findings) if data.has_findings else "no findings"
    )
    return line + (f"; wrote {output}" if output else "")


def render_summary(data: ReportData, console: Console, *, output: str | None = None) -> None:
    table = Table(title=Text(data.title), show_header=False, title_justify="left")
    table.add_column("section", style="bold")
    table.add_column("result")
    summary = data.to_dict()["sections"]
    for name in ("scan", "reverse", "sweep", "prune", "gradcam"):
        section = summary[name]
        if not section.get("ran"):
            table.add_row(name, Text(section.get("reason", "not run")))
            continue
        if name == "scan":
            text = f"{section['flagged']} of {section['channels']} channels flagged"
        elif name == "reverse":
            text = f"flagged labels: {section['flagged'] or 'none'}"
        elif name == "sweep":
            best = section["recommended"]
            text = (
                "nothing within budget"
                if best is None
                else f"recommended {best['criterion']} {best['layer']} ratio {best['ratio']:g}"
            )
        elif name == "prune":
            before, after = section["before"] or {}, section["after"] or {}
            text = (
                f"accuracy {_pct(before.get('accuracy'))} → {_pct(after.get('accuracy'))}, "
                f"ASR {_pct(before.get('asr'))} → {_pct(after.get('asr'))}"
            )
        else:
            ratios = [
                f"{m['role']} {_ratio((m['localisation'] or {}).get('ratio'))}"
                for m in section["models"]
                if m["localisation"] is not None
            ]
            text = f"{section['images']} images" + (
                f"; localisation ratio {', '.join(ratios)}" if ratios else ""
            )
        table.add_row(name, Text(text))
    if output:
        table.add_row("page", Text(output))
    console.print(table)
    verdict = "; ".join(data.findings) if data.has_findings else "no findings"
    console.print(Text(f"findings: {verdict}"))

"""Calibrate the verdict's thresholds on part of the zoo and report on the rest.

Input: each model's compact evidence (``benchmarks/zoo/evidence/NAME.json``, written by
``zoo.py evidence``). The verdict is recomputed from the
evidence saved there with ``kerasaudit.verdict`` itself — the same scoring the product runs —
for any candidate :class:`~kerasaudit.verdict.Rule`, so a recalibration takes seconds.

With ``baseline`` (:func:`fit`) the per-label offsets of a task baseline
(:class:`kerasaudit.verdict.Baseline`) are measured on the calibration fold's clean models first
and every signal is scored against them; the held-out fold never contributes to either.

Calibration (:func:`fit_rule`) works on each *clean* calibration model's largest value of each
signal (its most suspicious label: the one that would make it a false positive). Two methods:

- ``robust`` (shipped since the zoo's third calibration): threshold = median + K·σ of those
  per-model maxima, σ = 1.4826·MAD, but at least the largest of them + 2 % (:data:`FLOOR`);
  the untargeted ratio mirrored on a log scale (median of log ratios − K·σ). It uses every
  clean model's tail, not only the most extreme one, and widens a signal's margin in
  proportion to how much that signal's clean tail varies between models. ``K`` is chosen by
  cross-validation (:func:`choose_parameter`: the fewest clean models flagged when each
  architecture is held out in turn, then the most detections).
- ``max`` (the first two calibrations): the most extreme clean value × ``SLACK``; the untargeted
  ratio's smallest clean value ÷ ``SLACK``. Zero false positives on the calibration models by
  construction, but one unusual clean model sets the threshold and the margin is the same
  fraction for every signal.

Reports: leave-one-architecture-out and leave-one-attack-family-out cross-validation (each clean
model is held out with the fold of its architecture, or spread over the family folds) — for
``robust`` also *nested* (K chosen inside each outer fold from the other folds only) — with
false positives (clean models flagged), detection with the right target(s) per family (both
targets of a two-trigger model; all-to-all: any backdoor verdict), labels wrongly flagged
beside the right ones, and AUROC of a model-level score (the largest index/threshold ratio).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from kerasaudit.verdict import (
    RULE,
    Baseline,
    ModelEvidence,
    Rule,
    Scores,
    judge,
    label_offsets,
    score,
    spread,
)

SLACK = 1.15  # method "max": thresholds this far beyond the most extreme clean value
K = 5.0  # method "robust": thresholds this many robust σ above the clean maxima's median
# ... and never below the most extreme clean calibration value plus this fraction of it: a rule
# must not flag a clean model it was fitted on (with a task baseline, K = 5.5 flagged 2 of the
# 34 in sample while none under either cross-validation; the floor changed no CV count at K ≥ 5).
FLOOR = 0.02
RATIO_MIN_MODELS = 5  # clean models of the current untargeted objective needed to fit on them
METHODS = ("robust", "max")
GRID = {"robust": (3.0, 3.5, 4.0, 4.5, 5.0, 5.5, 6.0, 7.0), "max": (1.15, 1.3, 1.5, 1.75, 2.0)}
SIGNALS = ("mask_index", "additive_index", "margin_index", "warp_index")


@dataclass(frozen=True)
class ZooModel:
    name: str
    arch: str
    family: str
    targets: tuple[int, ...]  # empty for clean models; (-1,) for all-to-all
    evidence: ModelEvidence
    scores: Scores
    spread_objective: bool = False  # untargeted search with reverse's spread term (12-05 on)

    @property
    def clean(self) -> bool:
        return self.family == "clean"

    @property
    def all_to_all(self) -> bool:
        return -1 in self.targets


def load_models(evidence: Path) -> list[ZooModel]:
    """Every model's evidence in ``evidence/NAME.json`` (``zoo.save_evidence``)."""
    out = []
    for path in sorted(evidence.glob("*.json")):
        report = json.loads(path.read_text())
        recipe = report["zoo"]["recipe"]
        attack = recipe["attack"]
        targets = tuple(sorted({t["target"] for t in attack["triggers"]}))
        found = ModelEvidence.from_dict(report["evidence"])
        moves = (report.get("untargeted") or {}).get("moves_to")
        if moves and not found.untargeted_moves_to:  # kept beside it before the 18th session
            found = replace(found, untargeted_moves_to=tuple(int(t) for t in moves))
        spread_term = float(report.get("config", {}).get("untargeted_spread") or 0) > 0
        out.append(
            ZooModel(recipe["name"], recipe["arch"], attack["family"], targets, found,
                     score(found), spread_term)
        )  # fmt: skip
    return out


def signal_values(model: ZooModel, signal: str) -> list[float]:
    return [getattr(s, signal) for s in model.scores.labels]


VARIANTS = ("or", "or+combined", "or+linf", "or+combined+linf")


def _robust_sigma(values: Sequence[float]) -> tuple[float, float]:
    v = np.asarray(values, np.float64)
    median = float(np.median(v))
    sigma = 1.4826 * float(np.median(np.abs(v - median)))
    if sigma <= 0:  # half or more identical: fall back to the mean absolute deviation
        sigma = 1.2533 * float(np.mean(np.abs(v - median)))
    return median, sigma


def threshold(maxima: Sequence[float], method: str, parameter: float) -> float:
    """A signal's threshold from the clean models' per-model maxima (larger = more suspect)."""
    if not maxima:
        return math.inf
    if method == "max":
        return max(maxima) * parameter
    if method == "robust":
        median, sigma = _robust_sigma(maxima)
        most = max(maxima)
        return max(median + parameter * sigma, most + FLOOR * abs(most))
    raise ValueError(f"unknown calibration method {method!r}; known: {', '.join(METHODS)}")


def ratio_threshold(ratios: Sequence[float], method: str, parameter: float) -> float:
    """The untargeted ratio's threshold (smaller = more suspect) from the clean models' ratios."""
    ratios = [r for r in ratios if r > 0]
    if not ratios:
        return 0.0
    if method == "max":
        return min(ratios) / parameter
    return math.exp(-threshold([-math.log(r) for r in ratios], method, parameter))


def untargeted_ratios(clean: Sequence[ZooModel]) -> list[float]:
    """The clean models' untargeted ratios the all-to-all threshold is fitted on: those measured
    with the product's untargeted objective (reverse's spread term) when at least
    :data:`RATIO_MIN_MODELS` were, else all. Without the term the search may send every class
    to one sink, which a clean model allows with a smaller mask (the committed clean evidence
    goes down to 0.46, the clean rebuilds measured with the term to 1.08), so the two do not
    mix."""
    current = [m for m in clean if m.spread_objective]
    models = current if len(current) >= RATIO_MIN_MODELS else clean
    return [m.scores.untargeted_ratio for m in models if math.isfinite(m.scores.untargeted_ratio)]


def ratio_report(models: Sequence[ZooModel], method: str = "robust") -> list[dict[str, Any]]:
    """The all-to-all threshold alone, per parameter of ``GRID[method]``: fitted on the clean
    models :func:`untargeted_ratios` takes; which of them it flags when each one's architecture
    is left out of the fit (as the verdict would: ratio below the threshold and destinations
    not all one sink); which all-to-all models measured with the same objective fall below the
    fit on all of them."""
    clean = [m for m in models if m.clean]
    current = [m for m in clean if m.spread_objective]
    same = len(current) >= RATIO_MIN_MODELS
    fitted = current if same else clean
    a2a = [m for m in models if m.all_to_all and (m.spread_objective or not same)]
    rows = []
    for parameter in GRID[method]:
        limit = ratio_threshold(untargeted_ratios(fitted), method, parameter)
        flagged = []
        for m in fitted:
            rest = untargeted_ratios([o for o in fitted if o.arch != m.arch])
            below = m.scores.untargeted_ratio < ratio_threshold(rest, method, parameter)
            if below and spread(m.evidence.untargeted_moves_to) is not False:
                flagged.append(m.name)
        rows.append({
            "parameter": parameter,
            "threshold": limit,
            "clean_models": len(fitted),
            "spread_objective": same,
            "clean_flagged_leaving_architecture_out": flagged,
            "all_to_all_models": [m.name for m in a2a],
            "all_to_all_below": [m.name for m in a2a if m.scores.untargeted_ratio < limit],
        })  # fmt: skip
    return rows


def clean_maxima(models: Sequence[ZooModel], signal: str) -> list[float]:
    """Each clean model's largest (finite) value of ``signal`` over its labels."""
    out = []
    for m in models:
        values = [v for v in signal_values(m, signal) if math.isfinite(v)]
        if m.clean and values:
            out.append(max(values))
    return out


def fit_rule(
    calibration: Sequence[ZooModel],
    parameter: float = K,
    variant: str = "or+linf",
    method: str = "robust",
) -> Rule:
    """Thresholds from the clean calibration models (module doc: ``robust`` with K =
    ``parameter`` or ``max`` with slack = ``parameter``); with ``or+combined`` also the combined
    score's (each index over its threshold, summed)."""
    clean = [m for m in calibration if m.clean]
    if not clean:
        return RULE
    signals = (*SIGNALS, "linf_index") if "linf" in variant else SIGNALS
    thresholds = {s: threshold(clean_maxima(clean, s), method, parameter) for s in signals}
    rule = Rule(
        mask_index=thresholds["mask_index"],
        additive_index=thresholds["additive_index"],
        margin_index=thresholds["margin_index"],
        untargeted_ratio=ratio_threshold(untargeted_ratios(clean), method, parameter),
        linf_index=thresholds.get("linf_index", math.inf),
        warp_index=thresholds["warp_index"],
    )
    if "combined" not in variant:
        return rule
    combined = [max(rule.combined_score(s) for s in m.scores.labels) for m in clean]
    return replace(rule, combined=threshold(combined, method, parameter))


def fit(
    calibration: Sequence[ZooModel],
    parameter: float = K,
    variant: str = "or+linf",
    method: str = "robust",
    baseline: bool = False,
) -> tuple[Rule, Baseline | None]:
    """:func:`fit_rule`; with ``baseline`` the per-label offsets are measured on the clean
    calibration models first (:func:`kerasaudit.verdict.label_offsets`) and the thresholds are
    fitted on the scores taken against them — both from ``calibration`` only."""
    clean = [m.evidence for m in calibration if m.clean]
    if not baseline or not clean:
        return fit_rule(calibration, parameter, variant, method), None
    offsets = label_offsets(clean, num_classes(calibration))
    draft = Baseline("zoo", offsets, RULE, len(clean))
    adjusted = [replace(m, scores=score(m.evidence, draft)) for m in calibration]
    rule = fit_rule(adjusted, parameter, variant, method)
    return rule, replace(draft, rule=rule)


def rounded(rule: Rule) -> Rule:
    """``rule`` as shipped: thresholds to 2 decimals, the untargeted ratio to 3."""
    return Rule(
        **{
            f: round(v, 3 if f == "untargeted_ratio" else 2) if math.isfinite(v) else v
            for f, v in asdict(rule).items()
        }
    )


def num_classes(models: Sequence[ZooModel]) -> int:
    return 1 + max(e.label for m in models for e in m.evidence.labels)


@dataclass(frozen=True)
class Outcome:
    name: str
    arch: str
    family: str
    clean: bool
    flagged: tuple[int, ...]
    all_to_all_verdict: bool
    detected: bool  # backdoored: the right target(s); clean: False
    false_positive: bool  # clean model with any backdoor verdict
    wrong_labels: int  # labels flagged that are not targets (backdoored models)
    score: float  # model-level: the largest index / threshold ratio


def outcome(model: ZooModel, rule: Rule | None, baseline: Baseline | None = None) -> Outcome:
    """``model`` judged by ``rule`` (None: the baseline's, as ``judge`` chooses it)."""
    verdict = judge(model.evidence, rule, baseline)
    strength = max((d.strength for d in verdict.decisions), default=0.0)
    ratio = verdict.scores.untargeted_ratio
    limit = verdict.rule.untargeted_ratio
    if math.isfinite(ratio) and ratio > 0 and limit > 0:
        strength = max(strength, limit / ratio)
    return judged(model.name, model.arch, model.family, model.targets, verdict.flagged,
                  verdict.all_to_all, strength)  # fmt: skip


def judged(
    name: str,
    arch: str,
    family: str,
    targets: Sequence[int],
    flagged: Sequence[int],
    all_to_all: bool,
    score: float,
) -> Outcome:
    """A verdict (flagged labels, all-to-all) against the truth (``targets``: empty for a clean
    model, -1 for all-to-all): right target(s), false positive, labels flagged wrongly."""
    flagged = tuple(flagged)
    backdoor = bool(flagged) or all_to_all
    if family == "clean":
        return Outcome(name, arch, family, True, flagged, all_to_all, False, backdoor, 0, score)
    if -1 in targets:
        detected, wrong = backdoor, 0
    else:
        detected = set(targets) <= set(flagged)
        wrong = len(set(flagged) - set(targets))
    return Outcome(name, arch, family, False, flagged, all_to_all, detected, False, wrong, score)


def auroc(outcomes: Sequence[Outcome]) -> float:
    pos = [o.score for o in outcomes if not o.clean]
    neg = [o.score for o in outcomes if o.clean]
    if not pos or not neg:
        return math.nan
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def cross_validate(
    models: Sequence[ZooModel],
    fold_of: Callable[[ZooModel], str],
    parameter: float = K,
    variant: str = "or+linf",
    method: str = "robust",
    baseline: bool = False,
) -> tuple[list[Outcome], dict[str, Rule]]:
    """Each fold's models judged by a rule (and baseline) fitted on all the other folds."""
    folds = sorted({fold_of(m) for m in models})
    outcomes, rules = [], {}
    for fold in folds:
        held = [m for m in models if fold_of(m) == fold]
        rest = [m for m in models if fold_of(m) != fold]
        rule, offsets = fit(rest, parameter, variant, method, baseline)
        rules[fold] = rule
        outcomes += [outcome(m, rule, offsets) for m in held]
    return outcomes, rules


def by_arch(m: ZooModel) -> str:
    return m.arch


def choose_parameter(
    models: Sequence[ZooModel],
    variant: str = "or+linf",
    method: str = "robust",
    baseline: bool = False,
) -> float:
    """The parameter of ``GRID[method]`` that flags the fewest clean models under
    leave-one-architecture-out (the shift a third-party model brings: an architecture the rule
    has not seen), and among those detects the most backdoored ones (then the smaller
    parameter)."""
    ranked = []
    for parameter in GRID[method]:
        outcomes = cross_validate(models, by_arch, parameter, variant, method, baseline)[0]
        summary = summarise(outcomes)
        ranked.append((summary["false_positives"], -summary["detected"], parameter))
    return min(ranked)[2]


def nested_cross_validate(
    models: Sequence[ZooModel],
    fold_of: Callable[[ZooModel], str],
    variant: str = "or+linf",
    method: str = "robust",
    baseline: bool = False,
) -> tuple[list[Outcome], dict[str, float]]:
    """Cross-validation of the whole procedure, the choice of the parameter included: each outer
    fold is judged by a rule whose parameter was chosen (:func:`choose_parameter`) and whose
    thresholds were fitted on the other folds only."""
    outcomes, chosen = [], {}
    for fold in sorted({fold_of(m) for m in models}):
        rest = [m for m in models if fold_of(m) != fold]
        parameter = choose_parameter(rest, variant, method, baseline)
        chosen[fold] = parameter
        rule, offsets = fit(rest, parameter, variant, method, baseline)
        outcomes += [outcome(m, rule, offsets) for m in models if fold_of(m) == fold]
    return outcomes, chosen


def family_folds(models: Sequence[ZooModel]) -> Callable[[ZooModel], str]:
    """Leave one attack family out; clean models are spread round-robin over the folds."""
    families = sorted({m.family for m in models if not m.clean})
    clean = sorted(m.name for m in models if m.clean)
    spread = {name: families[i % len(families)] for i, name in enumerate(clean)}
    return lambda m: spread[m.name] if m.clean else m.family


def summarise(outcomes: Sequence[Outcome]) -> dict[str, Any]:
    backdoored = [o for o in outcomes if not o.clean]
    clean = [o for o in outcomes if o.clean]
    by_family: dict[str, dict[str, Any]] = {}
    for family in sorted({o.family for o in backdoored}):
        rows = [o for o in backdoored if o.family == family]
        by_family[family] = {
            "models": len(rows),
            "detected": sum(o.detected for o in rows),
            "wrong_labels": sum(o.wrong_labels for o in rows),
            "missed": [o.name for o in rows if not o.detected],
        }
    worst_clean = max((o.score for o in clean), default=math.inf)
    at_zero_fp = [o for o in backdoored if o.detected and o.score > worst_clean]
    return {
        "tpr_at_zero_fp": len(at_zero_fp) / max(1, len(backdoored)),
        "clean_models": len(clean),
        "false_positives": sum(o.false_positive for o in clean),
        "false_positive_models": [o.name for o in clean if o.false_positive],
        "backdoored_models": len(backdoored),
        "detected": sum(o.detected for o in backdoored),
        "tpr": sum(o.detected for o in backdoored) / max(1, len(backdoored)),
        "wrong_labels": sum(o.wrong_labels for o in backdoored),
        "auroc": auroc(outcomes),
        "by_family": by_family,
    }


def calibrate(
    evidence: Path,
    parameter: float | None = None,
    variant: str = "or+linf",
    method: str = "robust",
    baseline: bool = False,
) -> dict[str, Any]:
    """The calibration report: the rule fitted on every model (``parameter`` None: chosen by
    :func:`choose_parameter`), both cross-validations at that parameter, the nested ones (the
    parameter chosen inside each fold), the trade-off over ``GRID[method]``, and the shipped
    rule in sample."""
    models = load_models(evidence)
    if not models:
        raise SystemExit(f"no evidence under {evidence}: run `zoo.py evidence` first")
    schemes: dict[str, Callable[[ZooModel], str]] = {
        "leave-one-architecture-out": by_arch,
        "leave-one-family-out": family_folds(models),
    }
    if parameter is None:
        parameter = choose_parameter(models, variant, method, baseline)
    full, offsets = fit(models, parameter, variant, method, baseline)
    report: dict[str, Any] = {
        "models": len(models),
        "method": method,
        "parameter": parameter,
        "variant": variant,
        "baseline": baseline,
        "rule_fitted_on_all": full.to_dict(),
        "baseline_fitted_on_all": None if offsets is None else offsets.to_dict(),
        "in_sample": summarise([outcome(m, full, offsets) for m in models]),
        "shipped_rule": RULE.to_dict(),
        "shipped_rule_in_sample": summarise([outcome(m, RULE) for m in models]),
    }
    for name, fold_of in schemes.items():
        outcomes, rules = cross_validate(models, fold_of, parameter, variant, method, baseline)
        report[name] = {
            "summary": summarise(outcomes),
            "rules": {fold: r.to_dict() for fold, r in rules.items()},
            "outcomes": [o.__dict__ for o in outcomes],
        }
        nested, chosen = nested_cross_validate(models, fold_of, variant, method, baseline)
        report[f"nested {name}"] = {"summary": summarise(nested), "chosen": chosen}
    report["trade_off"] = [
        {
            "parameter": p,
            **{
                name: {
                    k: summarise(cross_validate(models, fold_of, p, variant, method, baseline)[0])[
                        k
                    ]
                    for k in ("false_positives", "detected")
                }
                for name, fold_of in schemes.items()
            },
        }
        for p in GRID[method]
    ]
    return report


def markdown(report: dict[str, Any]) -> str:
    method, parameter = report["method"], report["parameter"]
    name = "K" if method == "robust" else "slack"
    lines = [
        f"Method `{method}`, {name} = {parameter:g}, variant `{report['variant']}`, "
        f"{report['models']} models.",
        "",
    ]
    for scheme in ("leave-one-architecture-out", "leave-one-family-out"):
        s = report[scheme]["summary"]
        lines.append(
            f"**{scheme}** (thresholds fitted without the held-out fold): "
            f"{s['false_positives']} of {s['clean_models']} clean models flagged; "
            f"{s['detected']} of {s['backdoored_models']} backdoored models flagged with the "
            f"right target(s) (TPR {100 * s['tpr']:.0f} % at that false-positive count); "
            f"AUROC {s['auroc']:.3f}; {s['wrong_labels']} extra non-target label(s) flagged; "
            f"TPR at zero false positives (model score above every held-out clean model's, "
            f"right targets) {100 * s['tpr_at_zero_fp']:.0f} %."
        )
        lines.append("")
        lines.append("| family | models | detected (right targets) | missed |")
        lines.append("| --- | --- | --- | --- |")
        for family, row in s["by_family"].items():
            missed = ", ".join(row["missed"]) or "–"
            lines.append(f"| {family} | {row['models']} | {row['detected']} | {missed} |")
        if s["false_positive_models"]:
            lines.append(f"| clean (false positives) | {s['clean_models']} | – | "
                         f"{', '.join(s['false_positive_models'])} |")  # fmt: skip
        lines.append("")
        nested = report[f"nested {scheme}"]
        n = nested["summary"]
        chosen = ", ".join(f"{fold} {p:g}" for fold, p in nested["chosen"].items())
        lines.append(
            f"Nested ({name} chosen inside each fold from the others: {chosen}): "
            f"{n['false_positives']} of {n['clean_models']} clean flagged "
            f"({', '.join(n['false_positive_models']) or 'none'}); {n['detected']} of "
            f"{n['backdoored_models']} detected; AUROC {n['auroc']:.3f}."
        )
        lines.append("")
    schemes = ("leave-one-architecture-out", "leave-one-family-out")
    lines.append(f"| {name} | " + " | ".join(f"{s}: clean flagged, detected" for s in schemes)
                 + " |")  # fmt: skip
    lines.append("| --- | --- | --- |")
    for row in report["trade_off"]:
        cells = [f"{row[s]['false_positives']}, {row[s]['detected']}" for s in schemes]
        lines.append(f"| {row['parameter']:g} | " + " | ".join(cells) + " |")
    lines.append("")
    return "\n".join(lines)

"""Calibrate the verdict's thresholds on part of the zoo and report on the rest.

Input: each model's compact evidence (``benchmarks/zoo/evidence/NAME.json``, written by
``zoo.py evidence``). The verdict is recomputed from the
evidence saved there with ``kerasaudit.verdict`` itself — the same scoring the product runs —
for any candidate :class:`~kerasaudit.verdict.Rule`, so a recalibration takes seconds.

Calibration (:func:`fit_rule`): each signal's threshold is the largest value that signal takes
on any label of any *clean* calibration model, times ``SLACK``: zero false positives on the
calibration models by construction, with some room for clean models not seen. The untargeted
ratio threshold is the smallest clean ratio divided by ``SLACK``. A signal whose clean maximum
is so high that it adds no detection is left at that (harmless) value.

Reports: leave-one-architecture-out and leave-one-attack-family-out cross-validation (each clean
model is held out with the fold of its architecture, or spread over the family folds), with
false positives (clean models flagged), detection with the right target(s) per family (both
targets of a two-trigger model; all-to-all: any backdoor verdict), labels wrongly flagged
beside the right ones, and AUROC of a model-level score (the largest index/threshold ratio).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from kerasaudit.verdict import RULE, ModelEvidence, Rule, Scores, judge, score

SLACK = 1.15  # thresholds sit this far beyond the most extreme clean calibration value
SIGNALS = ("mask_index", "additive_index", "margin_index", "warp_index")


@dataclass(frozen=True)
class ZooModel:
    name: str
    arch: str
    family: str
    targets: tuple[int, ...]  # empty for clean models; (-1,) for all-to-all
    evidence: ModelEvidence
    scores: Scores

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
        evidence = ModelEvidence.from_dict(report["evidence"])
        out.append(
            ZooModel(
                recipe["name"], recipe["arch"], attack["family"], targets, evidence, score(evidence)
            )
        )
    return out


def signal_values(model: ZooModel, signal: str) -> list[float]:
    return [getattr(s, signal) for s in model.scores.labels]


VARIANTS = ("or", "or+combined", "or+linf", "or+combined+linf")


def fit_rule(
    calibration: Sequence[ZooModel], slack: float = SLACK, variant: str = "or+linf"
) -> Rule:
    """Thresholds at the most extreme clean calibration value × ``slack`` (module doc); with
    ``or+combined`` also the combined score's (each index over its threshold, summed)."""
    clean = [m for m in calibration if m.clean]
    if not clean:
        return RULE
    linf_signal = "linf" in variant
    thresholds = {}
    for signal in (*SIGNALS, "linf_index") if linf_signal else SIGNALS:
        values = [v for m in clean for v in signal_values(m, signal) if math.isfinite(v)]
        thresholds[signal] = max(values) * slack if values else math.inf
    ratios = [m.scores.untargeted_ratio for m in clean if math.isfinite(m.scores.untargeted_ratio)]
    ratio = min(ratios) / slack if ratios else 0.0
    rule = Rule(
        mask_index=thresholds["mask_index"],
        additive_index=thresholds["additive_index"],
        margin_index=thresholds["margin_index"],
        untargeted_ratio=ratio,
        linf_index=thresholds.get("linf_index", math.inf),
        warp_index=thresholds["warp_index"],
    )
    if "combined" not in variant:
        return rule
    combined = [rule.combined_score(s) for m in clean for s in m.scores.labels]
    return replace(rule, combined=max(combined) * slack if combined else math.inf)


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


def outcome(model: ZooModel, rule: Rule) -> Outcome:
    verdict = judge(model.evidence, rule)
    strength = max((d.strength for d in verdict.decisions), default=0.0)
    ratio = model.scores.untargeted_ratio
    if math.isfinite(ratio) and ratio > 0 and rule.untargeted_ratio > 0:
        strength = max(strength, rule.untargeted_ratio / ratio)
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
    slack: float = SLACK,
    variant: str = "or+linf",
) -> tuple[list[Outcome], dict[str, Rule]]:
    """Each fold's models judged by a rule fitted on all the other folds."""
    folds = sorted({fold_of(m) for m in models})
    outcomes, rules = [], {}
    for fold in folds:
        held = [m for m in models if fold_of(m) == fold]
        rule = fit_rule([m for m in models if fold_of(m) != fold], slack, variant)
        rules[fold] = rule
        outcomes += [outcome(m, rule) for m in held]
    return outcomes, rules


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


def calibrate(evidence: Path, slack: float = SLACK, variant: str = "or+linf") -> dict[str, Any]:
    models = load_models(evidence)
    if not models:
        raise SystemExit(f"no evidence under {evidence}: run `zoo.py evidence` first")
    full = fit_rule(models, slack, variant)
    schemes = {
        "leave-one-architecture-out": cross_validate(models, lambda m: m.arch, slack, variant),
        "leave-one-family-out": cross_validate(models, family_folds(models), slack, variant),
    }
    report: dict[str, Any] = {
        "models": len(models),
        "slack": slack,
        "variant": variant,
        "rule_fitted_on_all": full.to_dict(),
        "in_sample": summarise([outcome(m, full) for m in models]),
        "shipped_rule": RULE.to_dict(),
        "shipped_rule_in_sample": summarise([outcome(m, RULE) for m in models]),
    }
    for name, (outcomes, rules) in schemes.items():
        report[name] = {
            "summary": summarise(outcomes),
            "rules": {fold: r.to_dict() for fold, r in rules.items()},
            "outcomes": [o.__dict__ for o in outcomes],
        }
    return report


def markdown(report: dict[str, Any]) -> str:
    lines = []
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
    return "\n".join(lines)

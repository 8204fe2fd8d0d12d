"""Which margin index generalises? (JOURNAL.md, thirty-eighth session; pre-registered there.)

Each variant of the margin index is fitted exactly as the shipped Fashion-MNIST baseline is
(per-label offsets and thresholds from the zoo's evidence, robust K = 5.5, the combined signal
at the same K; the untargeted ratio, the reference models and their transfer veto kept from the
shipped file) and then judges models it was not fitted on: the held-out builds' evidence and
the stranger models' `audit` reports (benchmarks/stranger/judge.sh; every stranger's target is
label 2). Variants:

- ``linear`` (shipped): (m − median) / max(1.4826·MAD, 0.05·median);
- ``log``: the same on log margins, σ at least 0.05 (as the mask and additive signals);
- ``relative``: (m − median) / median.

    python benchmarks/zoo/margin_probe.py [STRANGER_RUNS_DIR ...]
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import calibrate  # noqa: E402

from kerasaudit import baselines, verdict  # noqa: E402
from kerasaudit.verdict import ModelEvidence  # noqa: E402

K = 5.5
VARIANTS = ("linear", "log", "relative")
_shipped_score = verdict.score


def margin_index(margins: np.ndarray, variant: str) -> np.ndarray:
    """Larger (more suspicious) for larger margins."""
    finite = margins[np.isfinite(margins)]
    if variant == "linear":
        floor = verdict.MIN_SIGMA * abs(float(np.median(finite))) if finite.size else 0.0
        index, _, _ = verdict.anomaly_indices(margins, floor)
        return -index
    if variant == "log":
        index, _, _ = verdict.anomaly_indices(verdict._log(margins), verdict.MIN_SIGMA)
        return -index
    median = float(np.median(finite)) if finite.size else math.nan
    return (margins - median) / median if median > 0 else np.full(margins.shape, np.nan)


def scorer(variant: str) -> Any:
    def score(evidence: ModelEvidence, baseline: Any = None) -> verdict.Scores:
        scores = _shipped_score(evidence, baseline)
        if variant == "linear":
            return scores
        adjusted = verdict.adjust(evidence, baseline.offsets) if baseline else evidence
        margins = np.asarray([e.margin for e in adjusted.labels], np.float64)
        index = margin_index(margins, variant)
        labels = tuple(
            replace(s, margin_index=float(i)) for s, i in zip(scores.labels, index, strict=True)
        )
        return replace(scores, labels=labels)

    return score


def use(variant: str) -> None:
    verdict.score = scorer(variant)  # judge() looks score up in its module at call time
    calibrate.score = verdict.score


def heldout_models() -> list[calibrate.ZooModel]:
    out = []
    for path in sorted((HERE / "heldout").glob("*.json")):
        if "." in path.stem:
            continue
        report = json.loads(path.read_text())
        if "evidence" not in report:
            continue
        recipe = report["zoo"]["recipe"]
        attack = recipe["attack"]
        targets = tuple(sorted({t["target"] for t in attack["triggers"]}))
        found = ModelEvidence.from_dict(report["evidence"])
        out.append(calibrate.ZooModel(recipe["name"], recipe["arch"], attack["family"], targets,
                                      found, verdict.score(found)))  # fmt: skip
    return out


def stranger_models(runs: list[Path]) -> list[calibrate.ZooModel]:
    out = []
    for directory in runs:
        for run in sorted(directory.iterdir()):
            path = run / "audit.json"
            if not path.is_file():
                continue
            report = json.loads(path.read_text())
            found = ModelEvidence.from_dict(report["reverse"]["evidence"])
            clean = run.name.startswith("clean_")
            out.append(calibrate.ZooModel(
                f"stranger:{run.name}", "stranger", "clean" if clean else "stranger",
                () if clean else (2,), found, verdict.score(found),
            ))  # fmt: skip
    return out


def fitted(zoo: list[calibrate.ZooModel]) -> verdict.Baseline:
    shipped = baselines.load(baselines.SHIPPED / "fashion-mnist.json").baseline
    rule, base = calibrate.fit(zoo, K, "or+combined", "robust", baseline=True)
    assert base is not None
    rule = replace(rule, untargeted_ratio=shipped.rule.untargeted_ratio,
                   transfer=shipped.rule.transfer)  # fmt: skip
    return replace(base, rule=calibrate.rounded(rule), references=shipped.references,
                   reference_range=shipped.reference_range)  # fmt: skip


def main(runs: list[Path]) -> int:
    for variant in VARIANTS:
        use(variant)
        zoo = calibrate.load_models(HERE / "evidence")
        base = fitted(zoo)
        r = base.rule
        print(f"\n## {variant}: mask {r.mask_index}, additive {r.additive_index}, margin "
              f"{r.margin_index}, warp {r.warp_index}, combined {r.combined}")  # fmt: skip
        for title, models in (("held out", heldout_models()), ("strangers", stranger_models(runs))):
            outcomes = [calibrate.outcome(m, None, base) for m in models]
            s = calibrate.summarise(outcomes)
            missed = [o.name for o in outcomes if not o.clean and not o.detected]
            print(f"{title}: clean flagged {s['false_positives']}/{s['clean_models']} "
                  f"{s['false_positive_models']}; exact targets {s['detected']}/"
                  f"{s['backdoored_models']}; wrong labels {s['wrong_labels']}; "
                  f"missed {missed}")  # fmt: skip
        loao = calibrate.summarise(
            calibrate.cross_validate(zoo, calibrate.by_arch, K, "or+combined", "robust", True)[0]
        )
        print(f"zoo leave-one-architecture-out: clean flagged {loao['false_positives']}/"
              f"{loao['clean_models']}, detected {loao['detected']}/"
              f"{loao['backdoored_models']}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main([Path(a) for a in sys.argv[1:]]))

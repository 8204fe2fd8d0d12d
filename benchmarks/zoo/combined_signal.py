"""The verdict's combined signal (each index over its threshold, summed; `Rule.combined`):
its threshold fitted on the zoo's clean models under the shipped rule and baseline (robust,
K = 5.5, as the other thresholds), and what it changes — on the zoo (in sample), on the
held-out sets' committed evidence, and on benchmarks/stranger's models when their reports
are given (JOURNAL, thirty-fifth session).

    python benchmarks/zoo/combined_signal.py [--stranger OUT] [--k 5.5]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import calibrate
import zoo

from kerasaudit import baselines
from kerasaudit.verdict import ModelEvidence, Rule, judge, score

HERE = Path(__file__).resolve().parent


def fitted(k: float) -> tuple[Any, Rule, float]:
    """(the shipped baseline, its rule without the combined signal, the fitted threshold)."""
    (task,) = [t for t in baselines.shipped() if t.baseline.name == "fashion-mnist"]
    base = task.baseline
    plain = replace(base.rule, combined=math.inf)
    models = calibrate.load_models(zoo.evidence_dir(zoo.zoo_dir(None)))
    maxima = [
        max(plain.combined_score(s) for s in score(m.evidence, base).labels)
        for m in models
        if m.clean
    ]
    median = sorted(maxima)[len(maxima) // 2]
    print(
        f"clean zoo models' largest combined sums: median {median:.2f}, largest {max(maxima):.2f}"
    )
    return base, plain, calibrate.threshold(maxima, "robust", k)


def tally(title: str, items: Sequence[tuple[str, Any, tuple[int, ...]]], rules: dict[str, Any],
          base: Any) -> None:  # fmt: skip
    print(f"\n== {title}")
    counts = {k: [0, 0, 0, 0] for k in rules}  # clean flagged, clean, exact, targeted
    for name, evidence, targets in items:
        verdicts = {k: judge(evidence, r, base) for k, r in rules.items()}
        for k, v in verdicts.items():
            if not targets:
                counts[k][1] += 1
                counts[k][0] += bool(v.flagged) or v.all_to_all
            elif all(t >= 0 for t in targets):
                counts[k][3] += 1
                counts[k][2] += sorted(v.flagged) == sorted(targets)
        flagged = {k: list(v.flagged) for k, v in verdicts.items()}
        if len({str(f) for f in flagged.values()}) > 1:
            print(
                f"  {name}: targets {list(targets)}; "
                + "; ".join(f"{k} {f}" for k, f in flagged.items())
            )
    for k, (fp, n, exact, t) in counts.items():
        print(
            f"  {k:8} clean flagged {fp} of {n}; targeted backdoored models exactly right "
            f"{exact} of {t}"
        )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--k", type=float, default=5.5)
    parser.add_argument("--stranger", type=Path, help="benchmarks/stranger output directory")
    args = parser.parse_args(argv)
    base, plain, threshold = fitted(args.k)
    print(f"combined threshold (K = {args.k:g}): {threshold:.3f}; shipped: {base.rule.combined}")
    rules = {"without": plain, "with": replace(plain, combined=round(threshold, 2))}
    models = calibrate.load_models(zoo.evidence_dir(zoo.zoo_dir(None)))
    tally("zoo (in sample)", [(m.name, m.evidence, m.targets) for m in models], rules, base)
    held = []
    for path in sorted((HERE / "heldout").glob("*.json")):
        if path.name.count(".") != 1:
            continue
        saved = json.loads(path.read_text())
        attack = saved["zoo"]["recipe"]["attack"]
        targets = tuple(sorted({t["target"] for t in attack["triggers"]}))
        if attack.get("family") == "all-to-all" or any(
            t.get("all_to_all") for t in attack["triggers"]
        ):
            targets = (-1,)
        held.append((path.stem, ModelEvidence.from_dict(saved["evidence"]), targets))
    tally("held-out sets (committed evidence)", held, rules, base)
    if args.stranger is not None:
        items = []
        for report in sorted((args.stranger / "runs").glob("*/audit.json")):
            audit = json.loads(report.read_text())
            if "fashion-mnist" not in (audit["reverse"].get("baseline_choice") or ""):
                continue  # no Fashion-MNIST baseline (resize3's 32×32×3): the plain rule
            name = report.parent.name
            items.append((name, ModelEvidence.from_dict(audit["reverse"]["evidence"]),
                          () if name.startswith("clean_") else (2,)))  # fmt: skip
        tally("benchmarks/stranger", items, rules, base)
    return 0


if __name__ == "__main__":
    sys.exit(main())

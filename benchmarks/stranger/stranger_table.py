"""The README's table of the models stranger_train.py wrote, from judge.sh's reports: each verdict
under the shipped rule without and with its combined signal, and what `defend` and the known
chain left (real trigger, 9,000 evaluation images). The floors (each clean twin's ASR with the
trigger) are what stranger_train.py prints for the clean twins.

    python benchmarks/stranger/stranger_table.py OUT
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any


def _load(path: Path) -> Any:
    return json.loads(path.read_text()) if path.is_file() else None


def _verdicts(audit: Any) -> tuple[str, str]:
    from kerasaudit import baselines
    from kerasaudit.verdict import ModelEvidence, judge

    evidence = ModelEvidence.from_dict(audit["reverse"]["evidence"])
    choice = audit["reverse"].get("baseline_choice") or ""
    tasks = [t for t in baselines.shipped() if t.baseline.name == "fashion-mnist"]
    if not tasks or "fashion-mnist" not in choice:
        flagged = audit["targets"]
        text = f"{flagged or 'nothing'} (plain rule)"
        return text, text
    base = tasks[0].baseline
    without = replace(base, rule=replace(base.rule, combined=math.inf))
    return (
        str(list(judge(evidence, baseline=without).flagged) or "nothing"),
        str(list(judge(evidence, baseline=base).flagged) or "nothing"),
    )


def main(out: Path) -> int:
    print("| model | verdict (shipped rule without → with combined) | defend: Δ points, ASR | "
          "known chain: Δ points, ASR |")  # fmt: skip
    print("| --- | --- | --- | --- |")
    for run in sorted((out / "runs").iterdir()):
        audit = _load(run / "audit.json")
        if audit is None:
            continue
        before, after = _verdicts(audit)
        cells = [run.name, f"{before} → {after}"]
        defend = _load(run / "defend.json")
        if defend and defend.get("accuracy_drop") is not None:
            known = next(t for t in defend["triggers"] if t["source"] == "known")
            cells.append(f"{-100 * defend['accuracy_drop']:+.2f}, {100 * known['asr_after']:.2f} %")
        else:
            cells.append("–")
        prune = _load(run / "prune.json")
        if prune:
            b, a = prune["before"], prune["after_fine_tune"] or prune["after_prune"]
            drop = b["clean"]["accuracy"] - a["clean"]["accuracy"]
            cells.append(f"{-100 * drop:+.2f}, {100 * a['attack']['asr']:.2f} %")
        else:
            cells.append("–")
        print("| " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    raise SystemExit(main(Path(sys.argv[1])))

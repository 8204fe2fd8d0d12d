"""The second pass for a second target, from saved evidence, in seconds.

Once the verdict flags a label, a model may still hide a second backdoor whose label was just
under the line: the first target's extreme values sit in the other labels' median and MAD.
``Rule.second_pass`` judges the labels left again with the flagged ones set aside, against the
thresholds times a factor. This prints, for every backdoored model of the evidence directories
given (default: the zoo's ``evidence`` and ``evidence-spread``), each label the second pass
would add at factor 1 and its strength (index / plain threshold: the label is added at any
factor below it), right (a real target) or wrong, with the task baseline ``reverse`` chooses
for the defender's images; then how many right and wrong labels each factor of ``--factors``
adds, and the models whose targets are then all found.

    python benchmarks/zoo/second_pass.py [--evidence DIR …] [--factors 1.0 1.1 1.2 1.3]
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def rows(evidence_dirs: list[Path]) -> list[dict]:
    from heldout import defender_baseline, evidence_paths

    from kerasaudit.verdict import ModelEvidence, judge, rule_for

    choice = defender_baseline()
    assert choice.baseline is not None
    rule = replace(rule_for(choice.baseline), second_pass=1.0)
    out = []
    for directory in evidence_dirs:
        for path in evidence_paths(directory):
            saved = json.loads(path.read_text())
            recipe = saved["zoo"]["recipe"]
            triggers = recipe["attack"]["triggers"]
            if not triggers or any(t["target"] < 0 for t in triggers):
                continue  # clean (no first flag, so no second pass) or all-to-all (moot)
            targets = sorted({t["target"] for t in triggers})
            verdict = judge(ModelEvidence.from_dict(saved["evidence"]), rule, choice.baseline)
            first = [d.label for d in verdict.decisions if d.flagged and not d.second_pass]
            added = {d.label: d.strength for d in verdict.decisions if d.second_pass}
            out.append({
                "set": directory.name, "model": recipe["name"], "targets": targets,
                "first": first, "added": added,
            })  # fmt: skip
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--evidence", type=Path, nargs="+",
                        default=[HERE / "evidence", HERE / "evidence-spread"])  # fmt: skip
    parser.add_argument("--factors", type=float, nargs="+", default=[1.0, 1.1, 1.2, 1.3])
    args = parser.parse_args()
    table = rows(args.evidence)
    for r in table:
        if not r["added"]:
            continue
        marks = ", ".join(
            f"{k} at {v:.2f} × ({'right' if k in r['targets'] else 'wrong'})"
            for k, v in sorted(r["added"].items(), key=lambda kv: -kv[1])
        )
        print(f"{r['set']:16} {r['model']:30} targets {r['targets']} first {r['first']}: "
              f"adds {marks}")  # fmt: skip
    missed_first = [r for r in table if set(r["targets"]) - set(r["first"])]
    print(f"{len(table)} targeted backdoored models; {len(missed_first)} miss a target in the "
          "first pass: " + ", ".join(f"{r['model']} ({r['first']} of {r['targets']})"
                                     for r in missed_first))  # fmt: skip
    for factor in args.factors:
        right = wrong = complete = 0
        for r in table:
            added = {k for k, v in r["added"].items() if v > factor}
            right += len(added & set(r["targets"]))
            wrong += len(added - set(r["targets"]))
            complete += set(r["targets"]) <= set(r["first"]) | added
        print(f"factor {factor:.2f}: adds {right} right and {wrong} wrong labels; every target "
              f"found on {complete} of {len(table)}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

#!/usr/bin/env python3
"""Probe (a diagnosis, not a defence: it reads the evaluation images for every candidate): how
much `defend`'s layer choice decides. Every (layer, ratio) candidate that prune's automatic
choice measured on the defender's held-out quarter is removed as if it had been chosen — one
round of `defend`'s removal from the cached recovered triggers, that layer and ratio named, the
fine-tune on all 1,000 defender images — and measured with the real trigger on the 9,000
evaluation images. The candidates come from a ``removal.py`` row (``--variant``, default
``lk3``: its rows keep them).

    python benchmarks/zoo/layer_probe.py wanet_nested sig_nested   # appends to --out
    python benchmarks/zoo/layer_probe.py --summary   # counts results/layer_probe.jsonl

Prints one line per candidate (its held-out accuracy and recovered-trigger ASR as prune saw them,
then the real ASR and accuracy change) and appends JSON lines to ``--out``. If the best candidate
of a model meets the goal where the chosen one does not, a better choice could help there; if
none does, no choice among these candidates can.

Result (2026-12-03, all 25 flagged models, rows in benchmarks/zoo/results/layer_probe.jsonl):
prune's choice meets the goal on 3 of 12 dev and 2 of 13 test models, the best candidate on 5
and 3; on 17 of 25 no candidate does (results/removal.md, "how much the layer choice decides").
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import removal  # noqa: E402
import zoo  # noqa: E402
from recipes import BY_NAME  # noqa: E402


def candidates(name: str, variant: str) -> list[dict]:
    """The layer candidates of the latest ``variant`` row of ``name`` (removal.jsonl)."""
    rows = [json.loads(line) for line in zoo.removal_rows(zoo.zoo_dir(None)).open()]
    mine = [r for r in rows if r["model"] == name and r["variant"] == variant]
    if not mine or not mine[-1].get("candidates"):
        raise SystemExit(f"{name}: no {variant} row with candidates in removal.jsonl")
    return mine[-1]["candidates"]


def _meets(record: dict) -> bool:
    return max(record["asr_after"]) <= zoo.GOAL_ASR and -record["delta"] <= zoo.GOAL_DROP


def choose(records: list[dict], ratios: tuple[float, ...]) -> dict:
    """prune's automatic choice among ``records`` (one model's candidates) restricted to
    ``ratios``: every candidate whose held-out ASR is at most max(ASR_GOAL, lowest + ASR_TIE)
    ties, and the most accurate of those wins (then the smaller ratio). The accuracy budget
    (``max_acc_drop`` against the original model on the same quarter) is left out: the rows do
    not keep that reference."""
    from kerasaudit.stages.prune import ASR_GOAL, ASR_TIE

    pool = [r for r in records if r["ratio"] in ratios]
    bar = max(ASR_GOAL, min(r["held_asr"] for r in pool) + ASR_TIE)
    tied = [r for r in pool if r["held_asr"] <= bar]
    return max(tied, key=lambda r: (r["held_accuracy"], -r["ratio"]))


def summary(path: Path) -> list[str]:
    """Per half (``zoo.split``): how many models meet the goal with prune's choice among both
    ratios, among 0.2 only, among 0.05 only, and with the best candidate (an oracle)."""
    records = [json.loads(line) for line in path.open()]
    by: dict[str, list[dict]] = {}
    for r in records:
        by.setdefault(r["model"], []).append(r)
    lines = []
    for half in ("dev", "test"):
        models = [m for m in by if zoo.split(m) == half]
        if not models:
            continue
        counts = {
            "both ratios": sum(_meets(choose(by[m], (0.05, 0.2))) for m in models),
            "0.2 only": sum(_meets(choose(by[m], (0.2,))) for m in models),
            "0.05 only": sum(_meets(choose(by[m], (0.05,))) for m in models),
            "best candidate": sum(any(_meets(r) for r in by[m]) for m in models),
        }
        parts = ", ".join(f"{k} {v}" for k, v in counts.items())
        lines.append(f"- {half} ({len(models)} models), within the goal: {parts}")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("models", nargs="*")
    parser.add_argument("--summary", action="store_true", help="count the rows in --out")
    parser.add_argument("--dir")
    parser.add_argument("--variant", default="lk3", help="removal.py rows to take candidates from")
    parser.add_argument("--out", default=str(HERE / "results" / "layer_probe.jsonl"))
    args = parser.parse_args()
    if args.summary:
        print("\n".join(summary(Path(args.out))))
        return 0
    from kerasaudit.stages.defend import DefenceSettings, remove

    root = zoo.zoo_dir(args.dir)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    xe, ye = zoo.load_split(root, "eval")
    for name in args.models:
        recipe = BY_NAME[name]
        model, data = zoo.load_case(root, recipe)
        found, info = removal.found_triggers(root, name, model, data)
        before = zoo.original_eval(root, recipe)
        pairs = removal.trigger_pairs(found, info["value_range"])
        for c in candidates(name, args.variant):
            started = time.time()
            settings = DefenceSettings(generalise="never")  # lk3's removal (before 2026-12-03)
            settings = replace(settings, rounds=1, layers=(c["layer"],), ratio=c["ratio"])
            defended, _ = remove(model, data, pairs, settings)
            after = zoo.measure(defended, recipe, xe, ye)
            record = {
                "model": name, "layer": c["layer"], "ratio": c["ratio"],
                "held_accuracy": c["accuracy"], "held_asr": c["asr"],
                "asr_after": after["asr"],
                "delta": round(100 * (after["accuracy"] - before["accuracy"]), 2),
                "seconds": round(time.time() - started, 1),
            }  # fmt: skip
            zoo.append_row(out, record, echo=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

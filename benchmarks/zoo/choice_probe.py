#!/usr/bin/env python3
"""Probe (a diagnosis, not a defence: it reads the evaluation images for every candidate): how
much the known-trigger chain's choice among its candidates decides, and how well the held-out
quarter of the defender's data ranks them.

The README's chain (``prune --ratio auto``) fine-tunes each (layer, ratio) candidate on 75 % of
the defender's 1,000 images and keeps the one the other 250 rank best. Here every candidate of a
cached chain run (``results/NAME/known.json``) is removed as if it had been chosen — ``prune``
with that ``--layer`` and ``--ratio``, the chain's fine-tune (its first-pass epochs, unlearning,
distillation; a second trigger unlearnt too) on all 1,000 images — and measured with the real
trigger on the 9,000 evaluation images. If a candidate meets the goal (worst ASR ≤ 2 %, ≤ 1.5
points lost) where the chain's choice does not, a better choice could help; if none does, no
choice among these candidates can.

    python benchmarks/zoo/choice_probe.py --dir benchmarks/zoo/build-heldout NAME…  # cached
    python benchmarks/zoo/choice_probe.py --dir benchmarks/zoo/build-heldout --summary

Rows are cached in ``DIR/results/NAME/choice_probe.json`` (one per candidate).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import zoo  # noqa: E402


def first_pass(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The chain's (layer, ratio) candidates at its first-pass epochs (not the extension's
    steps), in the order they were measured."""
    candidates = report["layer_choice"]["candidates"]
    epochs = candidates[0]["epochs"]
    return [c for c in candidates if c["epochs"] == epochs]


def probe(root: Path, name: str) -> list[dict[str, Any]]:
    """Every first-pass candidate of NAME's cached chain run, removed and measured (cached)."""
    recipe = zoo.recipe_named(name)
    out = zoo.results_dir(root, name)
    cache = out / "choice_probe.json"
    rows: list[dict[str, Any]] = json.loads(cache.read_text()) if cache.exists() else []
    chain = json.loads((out / "known.json").read_text())
    report = chain["runs"][0]["report"]
    done = {(r["layer"], r["ratio"]) for r in rows}
    for c in first_pass(report):
        if (c["layer"], c["ratio"]) in done:
            continue
        model = out / f"choice_probe.{recipe.fmt}"
        model.unlink(missing_ok=True)
        also = [a for i in range(1, len(recipe.attack.triggers))
                for a in zoo.also_unlearn_args(root, recipe, i)]  # fmt: skip
        where = ["--layer", c["layer"], "--ratio", f"{c['ratio']:g}"] if c["layer"] else []
        zoo.log(f"{name}: candidate {c['layer'] or '(none)'} {c['ratio']:g}")
        code, _, seconds = zoo.kerasaudit(
            ["prune", str(root / "models" / recipe.filename), "-d",
             str(root / "data" / "defender.npz"), *zoo.trigger_args(root, recipe, 0),
             "-c", "linf-trigger", *where, "--fine-tune-epochs", str(c["epochs"]), "--unlearn",
             "--distill", "0.8", *also, "-o", str(model)],
            out / "choice_probe.log",
        )  # fmt: skip
        after = zoo.measure_file(root, recipe, model) if model.exists() else None
        model.unlink(missing_ok=True)
        rows.append({**{k: c[k] for k in ("layer", "ratio", "epochs", "accuracy", "worst_asr")},
                     "exit_code": code, "seconds": seconds, "after": after})  # fmt: skip
        zoo._write_json(cache, rows)
    return rows


def met(after: dict[str, Any], before: float) -> bool:
    """The goal, for a model measured ``after`` whose original's accuracy was ``before``."""
    return zoo.within_goal(max(after["asr"]), 100 * (before - after["accuracy"]))


def summary(root: Path, names: list[str]) -> int:
    """Per model: the chain's result, each candidate's held-out numbers beside its evaluation
    numbers, whether the best candidate meets the goal; then the counts."""
    counts = {"models": 0, "chain": 0, "any": 0, "best held = best eval": 0}
    for cache in sorted(root.glob("results/*/choice_probe.json")):
        name = cache.parent.name
        if names and name not in names:
            continue
        chain = json.loads((cache.parent / "known.json").read_text())
        report = chain["runs"][0]["report"]
        choice = report["layer_choice"]
        held_acc = choice["held_accuracy"]
        before = chain["before"]["accuracy"]
        rows = [r for r in json.loads(cache.read_text()) if r.get("after")]
        if len(rows) < len(first_pass(report)):
            print(f"{name}: {len(rows)} of {len(first_pass(report))} candidates measured so far")
            continue

        chain_met = met(chain["after"], before)
        print(
            f"{name}: chain keeps {choice['layers'] or ['(none)']} {report['ratio']:g} "
            f"({choice['epochs']} epochs) → {100 * max(chain['after']['asr']):.2f} % "
            f"{100 * (chain['after']['accuracy'] - before):+.2f} {'✓' if chain_met else '✗'}"
        )
        for r in rows:
            a = r["after"]
            print(f"  {r['layer'] or '(none)':14} {r['ratio']:<5g} held: "
                  f"{100 * (r['accuracy'] - held_acc):+6.2f} points, ASR "
                  f"{100 * r['worst_asr']:5.2f} % | evaluation: "
                  f"{100 * (a['accuracy'] - before):+6.2f} points, ASR "
                  f"{100 * max(a['asr']):5.2f} % {'✓' if met(a, before) else '✗'}")  # fmt: skip
        counts["models"] += 1
        counts["chain"] += chain_met
        counts["any"] += any(met(r["after"], before) for r in rows)
        best_held = max(rows, key=lambda r: r["accuracy"])
        best_eval = max(rows, key=lambda r: r["after"]["accuracy"])
        counts["best held = best eval"] += best_held is best_eval
    print(f"models {counts['models']}: the chain within the goal on {counts['chain']}, some "
          f"candidate (first-pass epochs) on {counts['any']}; the candidate most accurate on "
          f"the quarter is the most accurate on the evaluation images on "
          f"{counts['best held = best eval']}")  # fmt: skip
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*")
    parser.add_argument("--dir", default=None, help="the build (default: the zoo's)")
    parser.add_argument("--summary", action="store_true", help="print what is cached")
    args = parser.parse_args()
    root = zoo.zoo_dir(args.dir)
    if args.summary:
        return summary(root, args.names)
    zoo.this_checkout()
    zoo.stop_children_on_sigterm()
    for name in args.names:
        probe(root, name)
    return summary(root, args.names)


if __name__ == "__main__":
    raise SystemExit(main())

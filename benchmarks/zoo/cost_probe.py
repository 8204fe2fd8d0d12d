#!/usr/bin/env python3
"""Where `defend`'s accuracy goes: its fine-tuning alone, no channel pruned, taken apart.

`defend` loses 2-5 points on the separable and nested nets (zoo and external), where the
known-trigger chain loses under 1.5; its layer candidates already lose that much with one
channel pruned, so the cost is in the fine-tuning. Each variant below fine-tunes the original
model once on the 1,000 defender images (``defend --ratio 0``: no pruning, one round) from the
cached recovered triggers (removal.found_triggers) and is measured on the 9,000 evaluation
images: clean accuracy, each class's accuracy change, the real trigger's ASR.

    python benchmarks/zoo/cost_probe.py --dir DIR --models M ... --variants clean ul ...

Variants (defend's fine-tuning: 10 epochs, Adam 1e-4, distillation 0.8 on clean images,
half of each batch stamped with a recovered trigger and its hard label, generators fitted
when the first trigger is not a patch):

  clean   no unlearning: distillation on clean images only (the floor of any fine-tuning)
  ul      defend's fine-tuning as it is
  ulng    ul without generators (generalise "never")
  ulm     ulng, the mask triggers alone;  uladd  ulng, the additive perturbations alone
  ula     ul, stamped images distilled from the original's outputs on their clean source
          without the flagged target (FineTuneSettings.trigger_teacher "away")
  uls     ul, the same teacher with the target kept ("source")
  ul20    ul with a fifth of each batch stamped instead of half
  ulbn    ul with BatchNorm frozen (statistics and scale)
  ule5    ul with 5 epochs
  ulw3    ul, every image of the flagged target (clean or stamped) weighing 3 in the loss
          (FineTuneSettings.target_weight);  ulw5  5
  twin    ul, a stamped image learning the model's own current outputs on its clean twin
          (held fixed) instead of its hard label: lowering the target everywhere gains nothing
  ewc10   ul with an EWC anchor of strength 10 (FineTuneSettings.anchor: + 10/2 · Σ F·(w − w₀)²,
          F the clean task's diagonal Fisher information);  ewc100, ewc1k  100, 1000

Rows append to DIR/results/cost_probe.jsonl; one line printed per (model, variant).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import numpy as np  # noqa: E402
import zoo  # noqa: E402
from recipes import BY_NAME  # noqa: E402

VARIANTS: dict[str, dict[str, Any]] = {
    "clean": {"unlearn": False},
    "ul": {},
    "ulng": {},
    "ulm": {},
    "uladd": {},
    "ula": {"trigger_teacher": "away"},
    "uls": {"trigger_teacher": "source"},
    "ul20": {"unlearn_fraction": 0.2},
    "ulbn": {"train_batchnorm": False},
    "ule5": {"epochs": 5},
    "ulw3": {"target_weight": 3.0},
    "ulw5": {"target_weight": 5.0},
    "twin": {"trigger_teacher": "twin"},
    "ewc10": {"anchor": 10.0},
    "ewc100": {"anchor": 100.0},
    "ewc1k": {"anchor": 1000.0},
}
NEVER = {"ulng", "ulm", "uladd"}
# which recovered triggers are unlearnt (default: all of them)
KINDS = {"ulm": ("neural-cleanse", "neural-cleanse+completion"), "uladd": ("additive",)}


def run(root: Path, name: str, variant: str) -> dict[str, Any]:
    import removal

    from kerasaudit.stages.defend import DefenceSettings, remove

    recipe = BY_NAME[name]
    model, data = zoo.load_case(root, recipe)
    found, info = removal.found_triggers(root, name, model, data)
    if variant in KINDS:
        found = [f for f in found if f.kind in KINDS[variant]]
    if not found:
        return {"model": name, "variant": variant, "unchanged": True}
    settings = DefenceSettings(ratio=0.0, rounds=1)
    settings = replace(
        settings,
        fine_tuning=replace(settings.fine_tuning, **VARIANTS[variant]),
        generalise="never" if variant in NEVER else settings.generalise,
    )
    started = time.time()
    fixed, result = remove(model, data, removal.trigger_pairs(found, info["value_range"]), settings)
    seconds = time.time() - started
    xe, ye = zoo.load_split(root, "eval")
    before, after = zoo.measure(model, recipe, xe, ye), zoo.measure(fixed, recipe, xe, ye)
    p0, p1 = zoo.predict(model, xe), zoo.predict(fixed, xe)
    per_class = [
        round(float(np.mean(p1[ye == c] == c) - np.mean(p0[ye == c] == c)) * 100, 2)
        for c in range(10)
    ]
    tuned = result.fine_tune
    return {
        "model": name,
        "variant": variant,
        "half": zoo.split(name),
        "weights_sha256": zoo.weights_of(root, name),
        "flagged": info["flagged"],
        "found": [f["kind"] for f in info["found"]],
        "generators": None if tuned is None else tuned.generators,
        "accuracy_before": before["accuracy"],
        "accuracy_after": after["accuracy"],
        "drop_points": round((after["accuracy"] - before["accuracy"]) * 100, 2),
        "asr_before": before["asr"],
        "asr_after": after["asr"],
        "flipped_after": after["flipped"],
        "per_class_points": per_class,
        "seconds": round(seconds, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dir", type=Path, default=None, help="zoo directory")
    parser.add_argument("--models", nargs="+", required=True)
    parser.add_argument("--variants", nargs="+", default=["clean", "ul"], choices=VARIANTS)
    args = parser.parse_args()
    root = zoo.zoo_dir(args.dir)
    out = root / "results" / "cost_probe.jsonl"
    out.parent.mkdir(parents=True, exist_ok=True)
    for name in args.models:
        for variant in args.variants:
            row = run(root, name, variant)
            with out.open("a") as fh:
                fh.write(json.dumps(row) + "\n")
            if row.get("unchanged"):
                print(f"{name} {variant}: nothing flagged", flush=True)
                continue
            asr = " ".join(f"{a * 100:.2f}" for a in row["asr_after"])
            print(
                f"{name:24s} {variant:6s} Δ {row['drop_points']:+.2f} ASR {asr} % "
                f"per class {row['per_class_points']} gen {row['generators']} "
                f"{row['seconds']} s",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

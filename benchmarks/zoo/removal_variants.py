#!/usr/bin/env python3
"""Removal variants on the zoo's development models: how the recommended known-trigger chain
was chosen (README "Removing a backdoor"). Library calls, the real trigger known, measured on
the 9,000 evaluation images with the zoo's own stamping.

Usage (from the repository root, after `zoo.py build`)::

    python benchmarks/zoo/removal_variants.py [--models M ...] [--variants A F ft5 ...]

Chain variants (prune + fine-tune, layer chosen on a held-out quarter of the defender's data):

  A  ratio 0.2,  5 epochs, unlearning 50 %                      (the previous README chain)
  B  ratio 0.2,  5 epochs, unlearning 50 %, distillation 0.8
  C  ratio 0.1,  5 epochs, unlearning 50 %, distillation 0.8
  D  ratio 0.1, 10 epochs, unlearning 30 %, distillation 0.8
  E  ratio 0.05, 10 epochs, unlearning 50 %, distillation 0.8
  F  ratio auto, 10 epochs, unlearning 50 %, distillation 0.8   (the recommended chain until
     2026-12-02; since then 20 epochs: ``zoo.py known``)
  S10  the recommended chain (20 epochs) with spread pruning: the 3 layers the trigger drives
       hardest all pruned at 10 %, no candidate measured (``prune(spread=0.1)``);  S05  at 5 %
  K    the recommended chain (20 epochs) as a library call, every known trigger unlearnt
  KS   K with stamped images also distilled (``FineTuneSettings.trigger_teacher="source"``:
       the teacher's outputs on the clean image a spec trigger was stamped on; ``--trigger-data``
       images keep their hard label. Rows before 2026-12-03 13:15 gave trigger-data images
       KM's target instead)
  KM   K with ``trigger_teacher="masked"`` (the image itself without the top class, always)
  KA   K with ``trigger_teacher="away"`` (KS's teacher outputs without the trigger's target)
  KSs1, KAs1  KS and KA with fine-tuning seed 1 (``FineTuneSettings.seed``)

Fine-tuning only (no pruning), 5 epochs: ``ft5`` clean images only; ``ul5`` unlearning;
``ul5fz`` BatchNorm frozen; ``ul5cl`` BatchNorm statistics from clean images only; ``ul5rc``
unlearning then BatchNorm re-estimated on clean data.

Prints one line per (model, variant) and appends JSON lines to
benchmarks/zoo/build/results/removal_variants.jsonl.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import zoo  # noqa: E402
from recipes import BY_NAME  # noqa: E402

DEV_MODELS = (
    "badnets_g3_bl_sep",
    "badnets_w3_tl_plain",
    "badnets_r5_mid_nested",
    "blend_a15_vgg",
    "badnets_c4_br_resnet",
    "blend_a10_resnet",
)
CHAINS: dict[str, dict[str, Any]] = {
    "A": {"ratio": 0.2, "epochs": 5, "frac": 0.5, "distill": 0.0},
    "B": {"ratio": 0.2, "epochs": 5, "frac": 0.5, "distill": 0.8},
    "C": {"ratio": 0.1, "epochs": 5, "frac": 0.5, "distill": 0.8},
    "D": {"ratio": 0.1, "epochs": 10, "frac": 0.3, "distill": 0.8},
    "E": {"ratio": 0.05, "epochs": 10, "frac": 0.5, "distill": 0.8},
    "F": {"ratio": "auto", "epochs": 10, "frac": 0.5, "distill": 0.8},
    "S10": {"ratio": "auto", "epochs": 20, "frac": 0.5, "distill": 0.8, "spread": 0.1},
    "S05": {"ratio": "auto", "epochs": 20, "frac": 0.5, "distill": 0.8, "spread": 0.05},
    "K": {"ratio": "auto", "epochs": 20, "frac": 0.5, "distill": 0.8, "all": True},
    "KS": {"ratio": "auto", "epochs": 20, "frac": 0.5, "distill": 0.8, "all": True,
           "teach": "source"},
    "KM": {"ratio": "auto", "epochs": 20, "frac": 0.5, "distill": 0.8, "all": True,
           "teach": "masked"},
    "KA": {"ratio": "auto", "epochs": 20, "frac": 0.5, "distill": 0.8, "all": True,
           "teach": "away"},
    "KSs1": {"ratio": "auto", "epochs": 20, "frac": 0.5, "distill": 0.8, "all": True,
             "teach": "source", "seed": 1},
    "KAs1": {"ratio": "auto", "epochs": 20, "frac": 0.5, "distill": 0.8, "all": True,
             "teach": "away", "seed": 1},
}  # fmt: skip
FINE_TUNE_ONLY = ("ft5", "ul5", "ul5fz", "ul5cl", "ul5rc")


def _batchnorm_layers(model: Any) -> list[Any]:
    out = []
    for layer in model.layers:
        out += _batchnorm_layers(layer) if hasattr(layer, "layers") else []
        if type(layer).__name__ == "BatchNormalization":
            out.append(layer)
    return out


def run(name: str, variant: str, root: Path) -> dict[str, Any]:
    from kerasaudit.finetune import FineTuneSettings, fine_tune
    from kerasaudit.pruning import clone_model
    from kerasaudit.ranking import Criterion
    from kerasaudit.stages.prune import prune

    recipe = BY_NAME[name]
    model, data = zoo.load_case(root, recipe)
    trig = recipe.attack.triggers[0]
    trigger = zoo.known_trigger(root, recipe)
    started = time.time()
    chosen: Any = None
    if variant in CHAINS:
        c = CHAINS[variant]
        count = len(recipe.attack.triggers) if c.get("all") else 1
        every = [trigger, *(zoo.known_trigger(root, recipe, i) for i in range(1, count))]
        fixed, result = prune(
            model,
            data,
            criterion=Criterion.LINF_TRIGGER,
            ratio=c["ratio"],
            trigger=trigger,
            target=None if trig.target < 0 else trig.target,
            fine_tuning=FineTuneSettings(
                epochs=c["epochs"],
                unlearn=True,
                unlearn_fraction=c["frac"],
                distill=c["distill"],
                trigger_teacher=c.get("teach", "off"),
                seed=c.get("seed", 0),
            ),
            spread=c.get("spread", 0.0),
            unlearn_with=every,
        )
        chosen = {"layers": list(result.choice.layers), "ratio": result.ratio}
    else:
        fixed = clone_model(model)
        mode = {"ul5fz": "frozen", "ul5cl": "clean"}.get(variant, "train")
        fine_tune(fixed, data, epochs=5, trigger=None if variant == "ft5" else trigger,
                  batchnorm=mode)  # fmt: skip
        if variant == "ul5rc":  # re-estimate BatchNorm statistics on the clean images
            x, _ = data.take_array(1000)
            layers = _batchnorm_layers(fixed)
            for layer in layers:
                layer.momentum = 0.0
            fixed(x, training=True)
            for layer in layers:
                layer.momentum = 0.9
    xe, ye = zoo.load_split(root, "eval")
    before = json.loads((root / "models" / f"{name}.json").read_text())["eval"]
    after = zoo.measure(fixed, recipe, xe, ye)
    return {
        "model": name,
        "variant": variant,
        "accuracy_before": before["accuracy"],
        "asr_before": before["asr"],
        "accuracy_after": after["accuracy"],
        "asr_after": after["asr"],
        "clean_to_target": after.get("clean_to_target"),
        "flipped": after.get("flipped"),
        "chosen": chosen,
        "seconds": round(time.time() - started, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=list(DEV_MODELS))
    parser.add_argument("--variants", nargs="*", default=list(CHAINS))
    parser.add_argument("--dir", help="zoo directory (default benchmarks/zoo/build)")
    args = parser.parse_args()
    root = zoo.zoo_dir(args.dir)
    out = root / "results" / "removal_variants.jsonl"
    out.parent.mkdir(parents=True, exist_ok=True)
    for name in args.models:
        for variant in args.variants:
            row = run(name, variant, root)
            drop = 100 * (row["accuracy_before"] - row["accuracy_after"])
            asr = " / ".join(f"{100 * a:.2f} %" for a in row["asr_after"])
            print(f"{name:24} {variant:6} Δacc {-drop:+.2f}  ASR {asr}  {row['chosen'] or ''}",
                  flush=True)  # fmt: skip
            zoo.append_row(out, row)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

#!/usr/bin/env python3
"""Probe: how much `defend`'s second look moves with the seeds — the fine-tuning seed of the
first removal (which defended model is looked at) and the Neural Cleanse seed of the look
itself — against the 0.7 rule (``DefenceSettings.look_ratio``).

    python benchmarks/zoo/look_probe.py blend_a12_mobile --tune-seeds 0 1 --look-seeds 0 1 2

For each fine-tuning seed: the first round of `defend`'s removal from the cached recovered
triggers (removal.py's cache), then the second look at the defended model once per NC seed;
prints the look's mask ÷ the reference mask (the unflagged labels' median on the original
model) and appends JSON lines to ``--out``. Nothing here sees the evaluation images.

Result (2026-12-03, the two test-half models whose look decided their row; ratios for NC seeds
0 / 1 / 2): ``blend_a12_mobile`` fine-tuning seed 0: 0.661 / 0.709 / 0.658, seed 1: 0.755 /
0.763 / 0.724; ``randpos_c4_vgg`` seed 0: 0.695 / 0.516 / 0.645, seed 1: 0.715 / 0.663 / 0.668
(the ``rr70s1`` run had 0.78 for the same settings: the first removal itself is not exactly
repeatable). The look's own NC seed moves the ratio by up to 0.18, as much as the fine-tuning
seed does, and both straddle the 0.7 rule; the median of three NC seeds would have used
``randpos_c4_vgg``'s look with either fine-tuning seed and ``blend_a12_mobile``'s with seed 0 only.
"""

from __future__ import annotations

import argparse
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


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("models", nargs="+")
    parser.add_argument("--dir")
    parser.add_argument("--tune-seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--look-seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--out", default="/tmp/look/probe.jsonl")
    args = parser.parse_args()
    from kerasaudit.stages.defend import DefenceSettings, remove, second_look
    from kerasaudit.stages.reverse import ReverseConfig

    root = zoo.zoo_dir(args.dir)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    for name in args.models:
        model, data = zoo.load_case(root, BY_NAME[name])
        found, info = removal.found_triggers(root, name, model, data)
        labels = info["flagged"]
        reference = removal.reference_l1(root, name, labels)
        pairs = removal.trigger_pairs(found, info["value_range"])
        for tune_seed in args.tune_seeds:
            settings = DefenceSettings(generalise="never")  # as measured before 2026-12-03
            settings = replace(
                settings, rounds=1, fine_tuning=replace(settings.fine_tuning, seed=tune_seed)
            )
            defended, _ = remove(model, data, pairs, settings)
            for look_seed in args.look_seeds:
                started = time.time()
                looks, _ = second_look(
                    defended, data, labels, reference, ReverseConfig(seed=look_seed), 2, 0.7
                )
                for look in looks:
                    record = {
                        "model": name, "tune_seed": tune_seed, "look_seed": look_seed,
                        "label": look.label, "ratio": round(look.mask_l1 / reference, 3),
                        "reached": look.reached, "seconds": round(time.time() - started, 1),
                    }  # fmt: skip
                    zoo.append_row(out, record, echo=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

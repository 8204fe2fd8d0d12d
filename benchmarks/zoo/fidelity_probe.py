#!/usr/bin/env python3
"""Probe (a diagnosis: it reads the real trigger): how close each trigger `defend` recovered
(removal.py's cache) is to the real one. For every recovered trigger of a model, on 1,000 of the
evaluation images whose label is not the target: the cosine between the mean change it makes to
an image and the mean change the real trigger makes, the mean per-image cosine of the two
changes, and the share of those images each sends to the target on the original model.

    python benchmarks/zoo/fidelity_probe.py blend_a12_mobile sig_wide

A recovered trigger that reaches the target as often as the real one but points elsewhere is a
different shortcut to the same label: unlearning it need not unlearn the real trigger.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import numpy as np  # noqa: E402
import removal  # noqa: E402
import zoo  # noqa: E402
from recipes import BY_NAME  # noqa: E402

IMAGES = 1000


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    den = float(np.linalg.norm(a) * np.linalg.norm(b))
    return float(np.dot(a.ravel(), b.ravel()) / den) if den else float("nan")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("models", nargs="+")
    parser.add_argument("--dir")
    args = parser.parse_args()

    root = zoo.zoo_dir(args.dir)
    xe, ye = zoo.load_split(root, "eval")
    print("| model | recovered trigger | real trigger | cos of mean changes | mean per-image cos "
          "| to target: recovered | real |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name in args.models:
        recipe = BY_NAME[name]
        model, data = zoo.load_case(root, recipe)
        found, info = removal.found_triggers(root, name, model, data)
        recovered = removal.trigger_pairs(found, info["value_range"])
        for i, real in enumerate(recipe.attack.triggers):
            target = real.target_of(ye)
            keep = np.flatnonzero(target != ye)[:IMAGES]
            x, aim = xe[keep], target[keep]
            real_change = real.stamp(x, seed=10_000 + i) - x
            real_hits = float(np.mean(zoo.predict(model, x + real_change) == aim))
            for f, (_, trig) in zip(found, recovered, strict=True):
                if f.label is not None and not np.all(aim == f.label):
                    continue  # a trigger recovered for another label (two-trigger models)
                stamped = trig.apply(x)
                change = stamped - x
                per_image = [_cos(a, b) for a, b in zip(change, real_change, strict=True)]
                hits = float(np.mean(zoo.predict(model, stamped) == aim))
                print(
                    f"| {name} | {f.stem} ({f.kind}) | {i} | "
                    f"{_cos(change.mean(0), real_change.mean(0)):.2f} | "
                    f"{float(np.nanmean(per_image)):.2f} | {100 * hits:.1f} % | "
                    f"{100 * real_hits:.1f} % |",
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

#!/usr/bin/env python3
"""Probe (a diagnosis: it compares with the real trigger): how much of a patch trigger does
trigger completion recover, with its objective and growth bound varied?

Completion (``kerasaudit.completion``) grows the core Neural Cleanse's restarts agree on, for
the target's log-probability. When the recovered fragment already sends nearly every image to
the target, that objective is saturated and nothing grows; the fortieth session found the
completed triggers of the zoo's patch models covering 0–6 of the real patch's 9–25 pixels.
This probe starts from the committed completed trigger's region (the cached recovery,
``removal.found_triggers --any-build``), completes it again with each setting, and counts
the real patch's pixels it covers (for a patch at a random position: the best-placed copy).

    python benchmarks/zoo/completion_probe.py randpos_w3_sep badnets_w3_tl_plain

Appends one JSON line per (model, setting) to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import removal  # noqa: E402
import zoo  # noqa: E402
from attacks import Trigger  # noqa: E402

SETTINGS = {  # name: (objective, grow)
    "ce1": ("ce", 1),  # the default, again from the core: a control
    "ce2": ("ce", 2),
    "mg1": ("margin", 1),
    "mg2": ("margin", 2),
}


def real_cover(trigger: Trigger, region: np.ndarray) -> tuple[int, int]:
    """(lit pixels of the real patch the region covers, lit pixels of the patch); a patch
    anywhere: its best placement."""
    size = trigger.size
    cells = trigger.cells() > 0
    if trigger.kind == "patch":
        r, c = trigger.row, trigger.col
        window = region[r : r + size, c : c + size]
        return int((window & cells).sum()), int(cells.sum())
    best = 0
    height, width = region.shape
    for r in range(height - size + 1):
        for c in range(width - size + 1):
            best = max(best, int((region[r : r + size, c : c + size] & cells).sum()))
    return best, int(cells.sum())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="+")
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=SETTINGS)
    parser.add_argument("--dir", default=None)
    parser.add_argument("--out", default=str(HERE / "results" / "completion_probe.jsonl"))
    parser.add_argument("--show", action="store_true", help="print each grown region")
    args = parser.parse_args()

    from kerasaudit.completion import CompletionConfig, complete_trigger
    from kerasaudit.evaluation import predictor, stamped_success
    from kerasaudit.triggers import half_peak_region as region

    root = zoo.zoo_dir(args.dir)
    for name in args.names:
        recipe = zoo.recipe_named(name)
        model, data = zoo.load_case(root, recipe)
        found, info = removal.found_triggers(root, name, model, data, any_build=True)
        x, y = data.take_array(1000)
        outputs = int(model.outputs[0].shape[-1])
        predict = predictor(model, x.shape[1:], outputs)
        value_range = tuple(info["value_range"])
        for item in found:
            if not item.kind.startswith("neural-cleanse"):
                continue
            label = item.label
            real = [t for t in recipe.attack.triggers if t.target == label]
            if not real or real[0].kind not in ("patch", "randpatch"):
                continue
            core = region(item.mask)
            rows = [("cached", item.mask, item.pattern, 0.0)]
            for setting in args.settings:
                objective, grow = SETTINGS[setting]
                started = time.time()
                done = complete_trigger(
                    model, x, label, core.astype(np.float32), item.pattern, value_range,
                    outputs=outputs, config=CompletionConfig(objective=objective, grow=grow),
                )  # fmt: skip
                rows.append((setting, done.mask, done.pattern, time.time() - started))
            for setting, mask, pattern, seconds in rows:
                grown = region(mask) if mask.max() > 0 else np.zeros(mask.shape, bool)
                covered, total = real_cover(real[0], grown)
                success, _ = stamped_success(predict, x, y, label, mask, pattern)
                record = {
                    "model": name,
                    "label": label,
                    "setting": setting,
                    "pixels": int(grown.sum()),
                    "covered": covered,
                    "patch_pixels": total,
                    "success": round(float(success), 4),
                    "seconds": round(seconds, 1),
                    "weights_sha256": zoo.weights_of(root, name),
                }
                print(json.dumps(record), flush=True)
                if args.show:
                    for row in range(grown.shape[0]):
                        line = "".join("#" if v else "." for v in grown[row])
                        if grown[row].any():
                            print(f"{row:3d} {line}")
                with open(args.out, "a") as out:
                    out.write(json.dumps(record) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

#!/usr/bin/env python3
"""Probe (a diagnosis: it compares with the real trigger): with the recovered trigger's
region forbidden, does Neural Cleanse find a second small trigger for the flagged label, and
is that one on the real patch?

The forty-second session found recovered triggers that lie nowhere on the real patch
(``ho2_badnets_w3_bag_nested``: 2 pixels at rows 8–9, the patch at rows 24–26); unlearning
them left the backdoor in. A defender cannot compare with the real patch, but can search
again with what was found forbidden: if the label still needs far less than the other
labels' best, something else reaches it. This probe runs that second search (``defend``'s NC
settings, one row, the cached completed trigger's half-peak region dilated by ``--dilate``
pixels forbidden) and records its mask ℓ1 against the first search's and the other labels'
(from the model's evidence), its own success, and how much of the real patch it covers.

    python benchmarks/zoo/exclusion_probe.py --rounds 3 \
        --dir benchmarks/zoo/build-heldout ho2_badnets_w3_bag_nested

Appends one JSON line per (model, flagged label, search) to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import removal  # noqa: E402
import zoo  # noqa: E402
from completion_probe import real_cover  # noqa: E402


def other_l1(root: Path, name: str, label: int) -> tuple[float, float, list[float]]:
    ev = json.loads((zoo.evidence_dir(root) / f"{name}.json").read_text())["evidence"]
    rows = {r["label"]: r["mask_l1"] for r in ev["labels"]}
    others = sorted(v for k, v in rows.items() if k != label)
    return rows[label], float(np.median(others)), others


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="+")
    parser.add_argument("--dir", default=None)
    parser.add_argument("--dilate", type=int, default=1)
    parser.add_argument(
        "--rounds", type=int, default=1,
        help="searches in turn, each with every earlier one's region forbidden too",
    )  # fmt: skip
    parser.add_argument("--out", default=str(HERE / "results" / "exclusion_probe.jsonl"))
    args = parser.parse_args()

    from kerasaudit.completion import dilate
    from kerasaudit.evaluation import predictor, stamped_success
    from kerasaudit.inversion import BatchedInversion, MaskForm
    from kerasaudit.stages.reverse import ReverseConfig
    from kerasaudit.triggers import half_peak_region as region

    root = zoo.zoo_dir(args.dir)
    config = ReverseConfig()
    for name in args.names:
        recipe = zoo.recipe_named(name)
        model, data = zoo.load_case(root, recipe)
        found, info = removal.found_triggers(root, name, model, data, any_build=True)
        x, y = data.take_array(config.images)
        outputs = int(model.outputs[0].shape[-1])
        predict = predictor(model, x.shape[1:], outputs)
        low, high = info["value_range"]
        for item in found:
            if not item.kind.startswith("neural-cleanse"):
                continue
            label = item.label
            real = [t for t in recipe.attack.triggers if t.target == label]
            first = region(item.mask)
            forbidden = dilate(first, args.dilate)
            first_l1, median, others = other_l1(root, name, label)
            for turn in range(1, args.rounds + 1):
                allowed = (~forbidden).astype(np.float32)
                form = MaskForm(low, high, allowed=allowed)
                started = time.time()
                (second,) = BatchedInversion(
                    model, [label], x, y, form, config.inversion(), outputs
                ).run()
                seconds = time.time() - started
                mask, pattern = second.arrays
                success, _ = stamped_success(predict, x, y, label, mask, pattern)
                grown = region(mask)
                record: dict[str, Any] = {
                    "model": name,
                    "label": label,
                    "dilate": args.dilate,
                    "round": turn,
                    "first_pixels": int(first.sum()),
                    "forbidden_pixels": int(forbidden.sum()),
                    "first_l1": round(first_l1, 2),
                    "second_l1": round(second.size, 2),
                    "second_reached": second.reached,
                    "others_median_l1": round(median, 2),
                    "others_min_l1": round(others[0], 2),
                    "second_success": round(float(success), 4),
                    "second_pixels": int(grown.sum()),
                    "seconds": round(seconds, 1),
                    "weights_sha256": zoo.weights_of(root, name),
                }
                if real and real[0].kind in ("patch", "randpatch"):
                    record["first_on_patch"] = real_cover(real[0], first)[0]
                    covered, total = real_cover(real[0], grown)
                    record["second_on_patch"] = covered
                    record["patch_pixels"] = total
                print(json.dumps(record), flush=True)
                for row in range(grown.shape[0]):
                    if grown[row].any() or forbidden[row].any():
                        line = "".join(
                            "#" if g else ("o" if f else ".")
                            for g, f in zip(grown[row], forbidden[row], strict=True)
                        )
                        print(f"{row:3d} {line}")
                with open(args.out, "a") as out:
                    out.write(json.dumps(record) + "\n")
                forbidden = forbidden | dilate(grown, args.dilate)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

#!/usr/bin/env python3
"""Probe: the untargeted Neural Cleanse row (``reverse``'s all-to-all search) at several success
thresholds, per zoo model — how small a mask moves the defender's images off their class when
less than 90 % of them must move.

    python benchmarks/zoo/untargeted_probe.py all2all_w4_plain --thresholds 0.9 0.8 0.7 0.6

Runs the one row alone with ``reverse``'s defaults otherwise (rows are independent: the same
seed per row whatever runs beside it) on the defender's first 1,000 images; prints the mask
ℓ1 and appends JSON lines to ``--out``.

Result (2026-12-03, one run each): ``all2all_w4_plain`` (real trigger a 4×4 patch, 16 pixels,
sending 86 % of images to y + 1) — 80.0 at 0.9 (its committed evidence: 80.2), 47.6 at 0.8,
33.8 at 0.7, 25.0 at 0.6. Still above the real patch at 0.6, so lowering the threshold alone
would not bring it under the rule's 0.23 × the median targeted mask; not pursued.
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

import zoo  # noqa: E402
from recipes import BY_NAME  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("models", nargs="+")
    parser.add_argument("--dir")
    parser.add_argument("--thresholds", nargs="+", type=float, default=[0.9, 0.8, 0.7, 0.6])
    parser.add_argument("--out", default="/tmp/untargeted/probe.jsonl")
    args = parser.parse_args()
    from kerasaudit.evaluation import classifier_io
    from kerasaudit.inversion import UNTARGETED, BatchedInversion, MaskForm
    from kerasaudit.stages.reverse import ReverseConfig, _value_range

    root = zoo.zoo_dir(args.dir)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    config = ReverseConfig()
    for name in args.models:
        model, data = zoo.load_case(root, BY_NAME[name])
        x, y = data.take_array(config.images)
        form = MaskForm(*_value_range(x))
        outputs = classifier_io(model).outputs
        for threshold in args.thresholds:
            started = time.time()
            schedule = replace(config.inversion(), untargeted_threshold=threshold)
            (row,) = BatchedInversion(model, [UNTARGETED], x, y, form, schedule, outputs).run(None)
            record = {
                "model": name,
                "threshold": threshold,
                "mask_l1": round(float(row.size), 2),
                "reached": row.reached,
                "steps": row.steps,
                "seconds": round(time.time() - started, 1),
            }
            zoo.append_row(out, record, echo=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

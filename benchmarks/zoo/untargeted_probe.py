#!/usr/bin/env python3
"""Probe: the untargeted Neural Cleanse row (``reverse``'s all-to-all search) at several success
thresholds, per zoo model — how small a mask moves the defender's images off their class when
less than 90 % of them must move.

    python benchmarks/zoo/untargeted_probe.py all2all_w4_plain --thresholds 0.9 0.8 0.7 0.6

Runs the one row alone with ``reverse``'s defaults otherwise — but the spread term, which is
0 (plain Neural Cleanse) unless ``--spread`` gives weights (rows are independent: the same
seed per row whatever runs beside it) on the defender's first 1,000 images; prints the mask
ℓ1, its ratio to the median targeted mask of the model's cached evidence, where it sends each
class and whether that is spread (``kerasaudit.verdict.spread``); appends JSON lines to
``--out``.

Result (2026-12-03, one run each): ``all2all_w4_plain`` (real trigger a 4×4 patch, 16 pixels,
sending 86 % of images to y + 1) — 80.0 at 0.9 (its committed evidence: 80.2), 47.6 at 0.8,
33.8 at 0.7, 25.0 at 0.6. Still above the real patch at 0.6, so lowering the threshold alone
would not bring it under the rule's 0.23 × the median targeted mask; not pursued.

With destinations (2026-12-04, eighteenth session; a rebuild on another machine, other weights,
thresholds 0.9 / 0.75 / 0.6): ``all2all_w4_plain`` ratio 1.34 / 0.70 / 0.40, never spread — the
mask goes to the natural sinks (8 and 6, then 6) at every threshold: the search does not find
this trigger, whatever the bar. ``all2all_c4_sep`` 0.245 / 0.149 / 0.097, spread at all three
(y + 1 for 9-10 classes). Clean models ``clean_plain_s0``, ``clean_plain_s1``,
``clean_sepconv_s0``: 1.50 / 0.63 / 0.43, 1.38 / 0.66 / 0.43, 0.50 / 0.23 / 0.13 — never
spread (one or two sinks). So a lower threshold would separate the spread all-to-all mask
further from every clean one (their ratios fall too, to 0.13, so only with the spread rule);
every calibration's evidence was measured at 0.9, so changing it means the zoo's evidence again.
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

import zoo  # noqa: E402
from recipes import BY_NAME  # noqa: E402


def _median(evidence: dict[str, Any]) -> float:
    """The median targeted mask ℓ1 of one ``reverse`` report's evidence."""
    import statistics

    return statistics.median(e["mask_l1"] for e in evidence["labels"] if e["mask_l1"] is not None)


def _median_mask(root: Path, name: str) -> float | None:
    """The median targeted mask ℓ1 of the model's cached evidence (None: none cached)."""
    path = zoo.evidence_dir(root) / f"{name}.json"
    if not path.exists():
        return None
    return _median(json.loads(path.read_text())["evidence"])


def _external_case(build: Path, results: Path, name: str) -> tuple[Any, Any, float | None]:
    """An external model (benchmarks/external/train.py's build), its defender's images and the
    median targeted mask of its cached ``defend`` report."""
    from kerasaudit.loading import load_model

    (path,) = [p for p in (build / "models").glob(f"{name}.*") if p.suffix in (".keras", ".h5")]
    report = json.loads((results / name / "defend.json").read_text())["report"]
    median = _median(report["reverse"]["evidence"])
    return load_model(path).model, zoo.defender_data(build), median


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("models", nargs="+")
    parser.add_argument("--dir")
    parser.add_argument("--thresholds", nargs="+", type=float, default=[0.9, 0.8, 0.7, 0.6])
    parser.add_argument("--out", default="/tmp/untargeted/probe.jsonl")
    parser.add_argument(
        "--spread", nargs="+", type=float, default=[0.0],
        help="weights of the spread term (InversionConfig.untargeted_spread) to try",
    )  # fmt: skip
    parser.add_argument(
        "--external", type=Path,
        help="the models are benchmarks/external ones built under this directory (the median "
        "mask from --results DIR/NAME/defend.json)",
    )  # fmt: skip
    parser.add_argument("--results", type=Path, default=HERE.parent / "external" / "results")
    args = parser.parse_args()
    from kerasaudit.evaluation import classifier_io, predictor
    from kerasaudit.inversion import UNTARGETED, BatchedInversion, MaskForm
    from kerasaudit.stages.reverse import ReverseConfig, _untargeted_finding, _value_range
    from kerasaudit.verdict import spread

    root = zoo.zoo_dir(args.dir)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    config = ReverseConfig()
    for name in args.models:
        if args.external is None:
            model, data = zoo.load_case(root, BY_NAME[name])
            median = _median_mask(root, name)
        else:
            model, data, median = _external_case(args.external, args.results, name)
        x, y = data.take_array(config.images)
        form = MaskForm(*_value_range(x))
        io = classifier_io(model)
        outputs, k = io.outputs, io.num_classes
        predict = predictor(model, tuple(x.shape[1:]), outputs)
        for threshold, weight in [(t, w) for t in args.thresholds for w in args.spread]:
            started = time.time()
            schedule = replace(
                config.inversion(), untargeted_threshold=threshold, untargeted_spread=weight
            )
            (row,) = BatchedInversion(model, [UNTARGETED], x, y, form, schedule, outputs).run(None)
            found = _untargeted_finding(row, predict, x, y, k)
            record = {
                "model": name,
                "threshold": threshold,
                "spread_weight": weight,
                "mask_l1": round(float(row.size), 2),
                "ratio": round(float(row.size) / median, 3) if median else None,
                "reached": row.reached,
                "steps": row.steps,
                "moves_to": list(found.moves_to),
                "spread": spread(found.moves_to),
                "seconds": round(time.time() - started, 1),
            }
            zoo.append_row(out, record, echo=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

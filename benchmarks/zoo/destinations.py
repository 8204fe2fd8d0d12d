#!/usr/bin/env python3
"""Where each model's smallest untargeted mask sends every class (the all-to-all rule's input).

Reads the compact evidence of a zoo build (``DIR/evidence``, or the default build's
``benchmarks/zoo/evidence``; evidence written before 2026-12-04 has no destinations) and prints,
per model, the untargeted ratio, the destination of each class, whether they are spread
(:func:`kerasaudit.verdict.spread`: at least half the classes to labels of their own, as a
permutation such as y → y + 1 is) and the largest share of the other classes that one label
takes, then the verdict's all-to-all call with the shipped baseline. Seconds, no TensorFlow::

    python benchmarks/zoo/destinations.py [--dir DIR]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import calibrate  # noqa: E402
import zoo  # noqa: E402

from kerasaudit.verdict import judge, spread  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", help="zoo directory (default: the default build)")
    args = parser.parse_args()
    root = zoo.zoo_dir(args.dir)
    baseline = zoo.shipped_baseline(root)
    rows = [
        m for m in calibrate.load_models(zoo.evidence_dir(root)) if m.evidence.untargeted_moves_to
    ]
    if not rows:
        print(f"no evidence with destinations under {zoo.evidence_dir(root)}")
        return 1
    counts = {"clean": [0, 0], "all-to-all": [0, 0], "targeted": [0, 0]}
    for m in rows:
        moves = m.evidence.untargeted_moves_to
        top = max(
            sum(t == label for c, t in enumerate(moves) if c != label) for label in set(moves)
        )
        verdict = judge(m.evidence, baseline=baseline)
        kind = "clean" if m.clean else "all-to-all" if m.all_to_all else "targeted"
        spread_out = spread(moves)
        counts[kind][0] += 1
        counts[kind][1] += bool(spread_out)
        print(
            f"{m.name:24} {kind:10} ratio {verdict.scores.untargeted_ratio:5.3f} moves "
            f"{' '.join(map(str, moves))}  spread {spread_out!s:5} top {top}/{len(moves) - 1}"
            f"  all-to-all verdict {verdict.all_to_all}"
        )
    for kind, (n, spread_n) in counts.items():
        print(f"{kind}: {spread_n} of {n} spread")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

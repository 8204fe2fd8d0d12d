#!/usr/bin/env python3
"""Benchmark: a 10-point ``sweep`` (one criterion, one layer) against one forward pass.

Usage (from the repository root)::

    python benchmarks/bench_sweep.py [--repeats 3] [--layers conv5 conv4]

Same process, same data (sample_models/fmnist_val.npz, 2,000 images), same batch size. For each
repeat the baseline — ``model.predict`` over the clean data — and the sweep's point loop
(``kerasaudit.stages.sweep._sweep_fast`` or ``_sweep_slow``: clean accuracy, ASR and RA at
10 ratios, prefix computed once per batch for clean and triggered images, suffix once per point) are
timed back to back, both warmed up first. The channel ranking (one fused scan, shared by every
criterion of a sweep) is timed separately and reported, as is the cost of the naive
alternative: one pruned clone evaluated per point. Ratios are medians over the repeats.
Results: a table on stdout and JSON in ``benchmarks/results/bench_sweep-<time>.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "sample_models"
RESULTS = ROOT / "benchmarks" / "results"
RATIOS = (0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 0.7)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--layers", nargs="+", default=["conv5", "conv4", "conv1"])
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--naive", action="store_true", help="also time pruned clones per point")
    args = parser.parse_args()

    from kerasaudit.data import DataSpec, open_data
    from kerasaudit.inventory import auditable_layers
    from kerasaudit.loading import load_model
    from kerasaudit.ranking import Criterion, rank_all
    from kerasaudit.stages.sweep import _split, _sweep_fast, _sweep_slow
    from kerasaudit.triggers import load_trigger

    model = load_model(SAMPLES / "fmnist_badnets.keras").model
    data = open_data(
        DataSpec(SAMPLES / "fmnist_val.npz", batch_size=args.batch_size), (28, 28, 1), 10
    )
    x, _ = data.take_array(data.info.count)
    trigger = load_trigger((SAMPLES / "trigger.txt").read_text().strip(), (28, 28, 1))
    infos = {i.path: i for i in auditable_layers(model)}

    def forward() -> float:
        start = time.perf_counter()
        model.predict(x, batch_size=args.batch_size, verbose=0)
        return time.perf_counter() - start

    forward()  # warm-up
    start = time.perf_counter()
    rankings = rank_all(
        model, list(infos.values()), [Criterion.LINF_TRIGGER], data, trigger=trigger
    )
    ranking_seconds = time.perf_counter() - start
    rows = []
    for layer in args.layers:
        info = infos[layer]
        split = _split(model, info)
        ranking = [rankings[(Criterion.LINF_TRIGGER, layer)]]

        def sweep_once(info=info, split=split, ranking=ranking) -> float:
            start = time.perf_counter()
            if split is not None:
                _sweep_fast(split, data, trigger, 0, info, ranking, RATIOS)
            else:
                _sweep_slow(model, data, trigger, 0, info, ranking, RATIOS)
            return time.perf_counter() - start

        sweep_once()  # warm-up (traces the step)
        ratios, base, swept = [], [], []
        for _ in range(args.repeats):
            b = forward()
            s = sweep_once()
            base.append(b)
            swept.append(s)
            ratios.append(s / b)
        row = {
            "layer": layer,
            "path": "prefix reuse" if split is not None else "pruned clones",
            "forward_s": statistics.median(base),
            "sweep_s": statistics.median(swept),
            "ratio": statistics.median(ratios),
            "ratios": ratios,
        }
        if args.naive:
            _sweep_slow(model, data, trigger, 0, info, ranking, RATIOS[:1])
            start = time.perf_counter()
            _sweep_slow(model, data, trigger, 0, info, ranking, RATIOS)
            row["naive_s"] = time.perf_counter() - start
            row["naive_ratio"] = row["naive_s"] / row["forward_s"]
        rows.append(row)
        print(
            f"{layer:6s} {row['path']:14s} forward {row['forward_s']:.3f}s  "
            f"sweep {row['sweep_s']:.3f}s  ratio {row['ratio']:.2f}x"
            + (f"  naive {row['naive_ratio']:.1f}x" if "naive_ratio" in row else ""),
            flush=True,
        )
    print(f"ranking (one fused scan, clean + triggered, all layers): {ranking_seconds:.2f}s")
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"bench_sweep-{dt.datetime.now(dt.UTC).strftime('%Y%m%dT%H%M%S')}.json"
    out.write_text(
        json.dumps(
            {
                "images": len(x),
                "points": len(RATIOS),
                "ranking_s": ranking_seconds,
                "rows": rows,
            },
            indent=2,
        )
    )
    print(f"wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()

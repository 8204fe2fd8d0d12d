#!/usr/bin/env python3
"""Benchmark: ``kerasaudit batch`` throughput (models per minute) against the single-model
``kerasaudit audit`` run in a shell loop, at 1 and 2 workers, in the same run.

    python benchmarks/bench_batch.py [--models 6] [--steps 60] [--repeats 2]

The models are small CNNs built and saved by this script (random weights, three
architectures, ``.keras`` and ``.h5``), the data random 28×28 images: nothing is downloaded.
Every path runs the same audit settings (``--steps``, ``--images``); each repeat runs the
three paths in a rotated order so drift in machine load hits them alike. Reported: wall
seconds per path (median and spread), models per minute, and the ratio to the loop.

Results: a table on stdout and JSON in ``benchmarks/results/bench_batch-<time>.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def build_models(directory: Path, count: int) -> list[Path]:
    import keras

    paths = []
    for i in range(count):
        keras.utils.set_random_seed(i)
        layers = keras.layers
        inputs = keras.Input((28, 28, 1))
        x = layers.Conv2D(8 + 4 * (i % 3), 3, activation="relu")(inputs)
        if i % 3 == 1:
            x = layers.BatchNormalization()(x)
        x = layers.MaxPooling2D()(x)
        x = layers.Conv2D(16, 3, activation="relu")(x)
        x = layers.GlobalAveragePooling2D()(x) if i % 3 == 2 else layers.Flatten()(x)
        model = keras.Model(inputs, layers.Dense(10, activation="softmax")(x))
        path = directory / f"model{i}.{'h5' if i % 2 else 'keras'}"
        model.save(path)
        paths.append(path)
    return paths


def run(command: list[str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    if done.returncode not in (0, 1):
        raise RuntimeError(f"{' '.join(command[:5])}... exit {done.returncode}: {done.stderr}")
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=int, default=6)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    py = [sys.executable, "-m", "kerasaudit"]
    settings = ["--steps", str(args.steps), "--images", str(args.images), "-q"]
    times: dict[str, list[float]] = {"shell loop of audit": [], "batch 1 worker": []}
    times["batch 2 workers"] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        models = build_models(work, args.models)
        data = work / "data.npz"
        rng = np.random.default_rng(0)
        np.savez(
            data,
            x=rng.integers(0, 256, (args.images, 28, 28), dtype=np.uint8),
            y=rng.integers(0, 10, args.images),
        )

        def loop() -> float:
            return sum(
                run([*py, "audit", str(m), "-d", str(data), "-f", "json", *settings])
                for m in models
            )

        def batch(workers: int) -> float:
            db = work / f"r{time.monotonic_ns()}.sqlite"
            command = [*py, "batch", *map(str, models), "-d", str(data), "--db", str(db)]
            return run([*command, "--workers", str(workers), *settings])

        paths = {
            "shell loop of audit": loop,
            "batch 1 worker": lambda: batch(1),
            "batch 2 workers": lambda: batch(2),
        }
        names = list(paths)
        for repeat in range(args.repeats):
            order = names[repeat % 3 :] + names[: repeat % 3]
            for name in order:
                seconds = paths[name]()
                times[name].append(seconds)
                log(f"repeat {repeat + 1}: {name}: {seconds:.1f} s")
    base = statistics.median(times["shell loop of audit"])
    rows = []
    print(f"{args.models} models, audit --steps {args.steps} --images {args.images}, 2 CPU cores")
    print(f"{'path':22} {'median s':>9} {'min..max s':>13} {'models/min':>11} {'× loop':>7}")
    for name, values in times.items():
        med = statistics.median(values)
        per_minute = args.models / med * 60
        rows.append(
            {"path": name, "seconds": values, "median": med, "models_per_minute": per_minute,
             "speedup_vs_loop": base / med}
        )  # fmt: skip
        spread = f"{min(values):.1f}..{max(values):.1f}"
        print(f"{name:22} {med:9.1f} {spread:>13} {per_minute:11.2f} {base / med:7.2f}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = args.out or RESULTS / f"bench_batch-{dt.datetime.now():%Y%m%d-%H%M%S}.json"
    record: dict[str, Any] = {"benchmark": "bench_batch", "arguments": vars(args) | {"out": None},
                              "cpus": os.cpu_count(), "rows": rows}  # fmt: skip
    out.write_text(json.dumps(record, indent=1) + "\n")
    log(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

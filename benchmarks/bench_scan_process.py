#!/usr/bin/env python3
"""Benchmark: the whole ``kerasaudit scan`` command's marginal cost per image against a whole
process that loads the same model and runs ``model.predict`` on the same data and batch size.

    python benchmarks/bench_scan_process.py [--small 256] [--large 2048] [--max-repeats 8]

Model: ResNet50 (random weights, 64×64×3, 10 classes; built here, nothing downloaded), saved
as ``.keras``; data: random uint8 images in ``.npy``. Each repeat runs four processes —
scan and predict, each on ``--small`` and ``--large`` images — in a rotated order; the
marginal cost per image of a tool is ``(T(large) − T(small)) / (large − small)``, which
cancels start-up, model loading and tracing. The ratio scan/predict is kept per repeat;
repeats continue (at least ``--min-repeats``) until the spread of the ratios' middle half
(interquartile range) is below ``--spread`` or ``--max-repeats`` is reached. Reported for wall
time and for CPU time (user + system of the process and its children, far less sensitive to
other load on a shared machine): the median ratio, its interquartile range and min..max.

Results: a table on stdout and JSON in ``benchmarks/results/bench_scan_process-<time>.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"

PREDICT = """
import sys, numpy as np, keras
model = keras.models.load_model(sys.argv[1], compile=False)
x = np.load(sys.argv[2]).astype("float32") / 255.0
model.predict(x, batch_size=int(sys.argv[3]), verbose=0)
"""


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def wall(command: list[str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the process and its children: user + system)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    if done.returncode not in (0, 1):
        raise RuntimeError(f"{' '.join(command[:6])}... exit {done.returncode}: {done.stderr}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return seconds, cpu


def quartiles(values: list[float]) -> tuple[float, float]:
    if len(values) < 2:
        return values[0], values[0]
    q = statistics.quantiles(values, n=4, method="inclusive")
    return q[0], q[2]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", type=int, default=256)
    parser.add_argument("--large", type=int, default=2048)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--min-repeats", type=int, default=4)
    parser.add_argument("--max-repeats", type=int, default=8)
    parser.add_argument("--spread", type=float, default=0.10, help="target IQR of the ratio")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        import keras

        keras.utils.set_random_seed(0)
        model = keras.applications.ResNet50(weights=None, input_shape=(64, 64, 3), classes=10)
        model_path = work / "resnet50.keras"
        model.save(model_path)
        rng = np.random.default_rng(0)
        data = {}
        for n in (args.small, args.large):
            data[n] = work / f"x{n}.npy"
            np.save(data[n], rng.integers(0, 256, (n, 64, 64, 3), dtype=np.uint8))
        bs = str(args.batch_size)

        def scan(n: int) -> tuple[float, float]:
            out = work / f"scan{time.monotonic_ns()}.json"
            return wall(
                [
                    sys.executable,
                    "-m",
                    "kerasaudit",
                    "scan",
                    str(model_path),
                    "-d",
                    str(data[n]),
                    "--batch-size",
                    bs,
                    "-f",
                    "json",
                    "-o",
                    str(out),
                    "-q",
                ]
            )

        def predict(n: int) -> tuple[float, float]:
            return wall([sys.executable, "-c", PREDICT, str(model_path), str(data[n]), bs])

        runs = [("scan", args.small), ("scan", args.large)]
        runs += [("predict", args.small), ("predict", args.large)]
        ratios: dict[str, list[float]] = {"wall": [], "cpu": []}
        marginal: dict[str, list[float]] = {"scan": [], "predict": [], "scan_cpu": []}
        marginal["predict_cpu"] = []
        timings: list[dict[str, tuple[float, float]]] = []
        wall(["true"])
        scan(args.small), predict(args.small)  # warm the file cache and the import caches
        repeat = 0
        while repeat < args.max_repeats:
            order = runs[repeat % 4 :] + runs[: repeat % 4]
            measured: dict[str, tuple[float, float]] = {}
            for tool, n in order:
                measured[f"{tool}@{n}"] = (scan if tool == "scan" else predict)(n)
            for k, kind in enumerate(("wall", "cpu")):
                per_image = {
                    tool: (
                        measured[f"{tool}@{args.large}"][k] - measured[f"{tool}@{args.small}"][k]
                    )
                    / (args.large - args.small)
                    for tool in ("scan", "predict")
                }
                suffix = "" if kind == "wall" else "_cpu"
                for tool, value in per_image.items():
                    marginal[tool + suffix].append(value)
                ratios[kind].append(per_image["scan"] / per_image["predict"])
            timings.append(measured)
            repeat += 1
            low, high = quartiles(ratios["wall"])
            log(
                f"repeat {repeat}: wall ratio {ratios['wall'][-1]:.3f}, CPU ratio "
                f"{ratios['cpu'][-1]:.3f} (wall median {statistics.median(ratios['wall']):.3f}, "
                f"IQR {low:.3f}..{high:.3f}); "
                + ", ".join(f"{k} {w:.1f} s ({c:.1f} CPU)" for k, (w, c) in measured.items())
            )
            if repeat >= args.min_repeats and high - low < args.spread:
                break
    print(
        f"ResNet50 64×64, batch {args.batch_size}, {args.small} → {args.large} images, "
        f"{repeat} repeats, {os.cpu_count()} CPUs"
    )
    summary = {}
    for kind in ("wall", "cpu"):
        suffix = "" if kind == "wall" else "_cpu"
        values = ratios[kind]
        low, high = quartiles(values)
        median = statistics.median(values)
        ms = {t: statistics.median(marginal[t + suffix]) * 1000 for t in ("scan", "predict")}
        summary[kind] = {"median_ratio": median, "iqr": [low, high], "ms_per_image": ms}
        print(
            f"{kind:4}: scan {ms['scan']:.2f} ms/image, predict {ms['predict']:.2f}; scan / "
            f"predict median {median:.3f}, IQR {low:.3f}..{high:.3f}, "
            f"min..max {min(values):.3f}..{max(values):.3f}"
        )
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = args.out or RESULTS / f"bench_scan_process-{dt.datetime.now():%Y%m%d-%H%M%S}.json"
    record = {
        "benchmark": "bench_scan_process",
        "arguments": vars(args) | {"out": None},
        "cpus": os.cpu_count(),
        "ratios": ratios,
        "summary": summary,
        "marginal_seconds_per_image": marginal,
        "timings": timings,
    }
    out.write_text(json.dumps(record, indent=1) + "\n")
    log(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

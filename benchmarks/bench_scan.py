#!/usr/bin/env python3
"""Benchmark: cost of ``kerasaudit scan`` (every conv layer) against plain ``model.predict``.

Usage (from the repository root)::

    python benchmarks/bench_scan.py                 # full run (a few minutes on 2 CPU cores)
    python benchmarks/bench_scan.py --quick         # fewer images/repeats, no RSS runs

For each model, in the same process and on the same data and batch size: both paths are
warmed up (traced and compiled) first, then timed alternately ``--repeats`` times; the ratio
scan/predict of each repeat is kept and the median reported. Both run with the same XLA
setting (``--jit off`` is what Keras and kerasaudit use on CPU by default).

Memory: ``kerasaudit scan`` on the sample model is run in fresh subprocesses over
``--rss-images`` images (10,000 and 100,000 by default: the sample validation set tiled),
stored in each of ``--rss-formats`` (.npz, .npy, HDF5, a folder of PNGs); the difference of
peak RSS (ru_maxrss) between the largest and smallest run shows whether memory grows with
the number of images.

Results: a table on stdout and JSON in ``benchmarks/results/bench_scan-<time>.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
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
SAMPLES = ROOT / "sample_models"
RESULTS = ROOT / "benchmarks" / "results"


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def time_pair(model: Any, scanner: Any, x: np.ndarray, batch_size: int, repeats: int) -> dict:
    """Warm both paths up, then time them alternately; the order flips every repeat so drift in
    machine load hits both alike. Wall time is the headline; process CPU time (all threads) is
    kept too because it is far less sensitive to other processes on a shared machine."""

    def timed(run: Any) -> tuple[float, float]:
        wall, cpu = time.perf_counter(), time.process_time()
        run()
        return time.perf_counter() - wall, time.process_time() - cpu

    def run_predict() -> None:
        model.predict(x, batch_size=batch_size, verbose=0)

    def run_scan() -> None:
        scanner.stats(x, batch_size=batch_size)

    warm = {"predict": timed(run_predict)[0], "scan": timed(run_scan)[0]}
    predict: list[tuple[float, float]] = []
    scan: list[tuple[float, float]] = []
    for repeat in range(repeats):
        if repeat % 2 == 0:
            predict.append(timed(run_predict))
            scan.append(timed(run_scan))
        else:
            scan.append(timed(run_scan))
            predict.append(timed(run_predict))
        log(
            f"  repeat {repeat + 1}/{repeats}: predict {predict[-1][0]:.3f}s "
            f"scan {scan[-1][0]:.3f}s ratio {scan[-1][0] / predict[-1][0]:.3f} "
            f"(CPU {scan[-1][1] / predict[-1][1]:.3f})"
        )
    ratios = [s[0] / p[0] for s, p in zip(scan, predict, strict=True)]
    cpu_ratios = [s[1] / p[1] for s, p in zip(scan, predict, strict=True)]
    predict_wall = [p[0] for p in predict]
    scan_wall = [s[0] for s in scan]
    return {
        "images": len(x),
        "batch_size": batch_size,
        "repeats": repeats,
        "warmup_seconds": warm,
        "predict_seconds": predict_wall,
        "scan_seconds": scan_wall,
        "predict_cpu_seconds": [p[1] for p in predict],
        "scan_cpu_seconds": [s[1] for s in scan],
        "ratios": ratios,
        "median_ratio": statistics.median(ratios),
        "min_time_ratio": min(scan_wall) / min(predict_wall),
        "cpu_ratios": cpu_ratios,
        "median_cpu_ratio": statistics.median(cpu_ratios),
        "median_predict_seconds": statistics.median(predict_wall),
        "median_scan_seconds": statistics.median(scan_wall),
        "images_per_second_predict": len(x) / statistics.median(predict_wall),
        "images_per_second_scan": len(x) / statistics.median(scan_wall),
    }


def bench_model(name: str, model: Any, x: np.ndarray, args: argparse.Namespace) -> dict:
    from kerasaudit import _tf
    from kerasaudit.stages.scan import Scanner

    jit = args.jit == "on"
    model.compile(jit_compile=jit)  # predict's own step: compiled by tf.function, XLA as asked
    strategy = _tf.configure_device("cpu" if args.device == "cpu" else "auto")
    scanner = Scanner(model, strategy=strategy, jit_compile=jit)
    channels = sum(t.channels for t in scanner.targets)
    log(f"{name}: {len(scanner.targets)} layers, {channels} channels")
    result = time_pair(model, scanner, x, args.batch_size, args.repeats)
    result.update(
        model=name,
        layers=len(scanner.targets),
        channels=channels,
        jit_compile=jit,
        device=scanner.device.to_dict(),
    )
    return result


def resnet50(args: argparse.Namespace) -> dict:
    from kerasaudit import _tf

    keras = _tf.keras()
    keras.utils.set_random_seed(0)
    model = keras.applications.ResNet50(weights=None, input_shape=(64, 64, 3))
    x = np.random.default_rng(0).random((args.images, 64, 64, 3), dtype=np.float32)
    return bench_model("ResNet50 64x64", model, x, args)


def sample_model(args: argparse.Namespace) -> dict | None:
    from kerasaudit.data import DataSpec, open_data
    from kerasaudit.loading import load_model

    path = SAMPLES / "fmnist_badnets.keras"
    data = SAMPLES / "fmnist_val.npz"
    if not (path.exists() and data.exists()):
        log(f"skipping the sample model: {path} or {data} missing")
        return None
    model = load_model(path).model
    dataset = open_data(DataSpec(data), tuple(model.inputs[0].shape[1:]))
    x, _ = dataset.take_array(dataset.info.count)
    if len(x) < args.images:  # tile the validation set up to the requested size
        x = np.concatenate([x] * (-(-args.images // len(x))))[: args.images]
    return bench_model("sample fmnist_badnets", model, x, args)


def peak_rss(model: Path, data: Path, batch_size: int) -> dict:
    """Run the CLI as this process' only child; its peak RSS is then RUSAGE_CHILDREN's
    ru_maxrss (kB on Linux). Called inside a fresh helper process (``peak_rss_isolated``)."""
    import resource

    command = [
        sys.executable, "-m", "kerasaudit", "scan", str(model), "--data", str(data),
        "--format", "json", "--quiet", "--batch-size", str(batch_size),
    ]  # fmt: skip
    started = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if proc.returncode not in (0, 1):
        raise RuntimeError(f"{' '.join(command)} failed ({proc.returncode}): {proc.stderr[-500:]}")
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    report = json.loads(proc.stdout)
    return {"images": report["images"], "peak_rss_mb": usage.ru_maxrss / 1024, "seconds": seconds}


def write_data(kind: str, x: np.ndarray, directory: Path) -> Path:
    """``x`` (N, 28, 28 uint8) as ``kind``: .npz, .npy (memory-mapped by kerasaudit), HDF5,
    or a folder of PNG files (streamed, decoded a batch at a time)."""
    if kind == "npz":
        path = directory / "x.npz"
        np.savez(path, x=x)
    elif kind == "npy":
        path = directory / "x.npy"
        np.save(path, x)
    elif kind == "hdf5":
        import h5py

        path = directory / "x.h5"
        with h5py.File(path, "w") as f:
            f.create_dataset("x", data=x, chunks=(min(len(x), 1024), *x.shape[1:]))
    else:
        from PIL import Image

        path = directory / "images"
        path.mkdir()
        pictures = x[..., 0] if x.ndim == 4 and x.shape[-1] == 1 else x
        for i, image in enumerate(pictures):
            Image.fromarray(image).save(path / f"{i:06d}.png")
    return path


def rss(args: argparse.Namespace) -> dict | None:
    """Peak RSS of whole ``kerasaudit scan`` processes at each ``--rss-images`` count, for
    every ``--rss-formats`` data format; the growth from the smallest to the largest count."""
    model = SAMPLES / "fmnist_clean.keras"
    val = SAMPLES / "fmnist_val.npz"
    if not (model.exists() and val.exists()):
        log("skipping the RSS runs: sample model or data missing")
        return None
    with np.load(val, allow_pickle=False) as archive:
        x = archive["x"]
    formats = {}
    for kind in args.rss_formats:
        runs = []
        for count in args.rss_images:
            with tempfile.TemporaryDirectory(prefix="bench-scan-") as tmp:
                tiled = np.concatenate([x] * (-(-count // len(x))))[:count]
                data = write_data(kind, tiled, Path(tmp))
                log(f"RSS: scanning {count} images as {kind}")
                runs.append(peak_rss_isolated(model, data, args.batch_size))
                log(f"  peak RSS {runs[-1]['peak_rss_mb']:.1f} MB in {runs[-1]['seconds']:.1f}s")
        formats[kind] = {
            "runs": runs,
            "rss_difference_mb": runs[-1]["peak_rss_mb"] - runs[0]["peak_rss_mb"],
        }
    return {"model": model.name, "formats": formats}


def peak_rss_isolated(model: Path, data: Path, batch_size: int) -> dict:
    """``peak_rss`` via a helper process, so RUSAGE_CHILDREN only ever covers one scan."""
    helper = (
        "import json, sys; sys.path.insert(0, sys.argv[1]);"
        "from bench_scan import peak_rss; from pathlib import Path;"
        "print(json.dumps(peak_rss(Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4]))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", helper, str(Path(__file__).parent), str(model), str(data),
         str(batch_size)],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    return json.loads(out.strip().splitlines()[-1])


def print_table(results: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="scan vs model.predict (median over repeats)", title_justify="left")
    columns = ("model", "layers", "images", "batch", "XLA", "predict s", "scan s", "ratio",
               "min/min", "CPU ratio", "ratios")  # fmt: skip
    for column in columns:
        table.add_column(column, justify="left" if column in ("model", "ratios") else "right")
    for row in results["timings"]:
        table.add_row(
            row["model"],
            str(row["layers"]),
            str(row["images"]),
            str(row["batch_size"]),
            "on" if row["jit_compile"] else "off",
            f"{row['median_predict_seconds']:.3f}",
            f"{row['median_scan_seconds']:.3f}",
            f"{row['median_ratio']:.3f}×",
            f"{row['min_time_ratio']:.3f}×",
            f"{row['median_cpu_ratio']:.3f}×",
            " ".join(f"{r:.3f}" for r in row["ratios"]),
        )
    console = Console(width=140)
    console.print(table)
    memory = results.get("rss")
    if memory:
        for kind, row in memory["formats"].items():
            runs = ", ".join(
                f"{r['images']:,} images: {r['peak_rss_mb']:.1f} MB" for r in row["runs"]
            )
            print(
                f"peak RSS of `kerasaudit scan` ({memory['model']}, {kind}): {runs}; "
                f"difference {row['rss_difference_mb']:+.1f} MB"
            )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=1024)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--jit", choices=("off", "on"), default="off")
    parser.add_argument("--device", choices=("auto", "cpu"), default="auto")
    parser.add_argument("--models", default="resnet50,sample")
    parser.add_argument("--rss-images", type=int, nargs="+", default=[10000, 100000])
    parser.add_argument(
        "--rss-formats", nargs="+", default=["npz", "npy", "hdf5", "folder"],
        choices=["npz", "npy", "hdf5", "folder"],
    )  # fmt: skip
    parser.add_argument("--no-rss", action="store_true")
    parser.add_argument("--quick", action="store_true", help="256 images, 3 repeats, no RSS")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if args.quick:
        args.images, args.repeats, args.no_rss = 256, 3, True
    models = {"resnet50": resnet50, "sample": sample_model}
    results: dict[str, Any] = {
        "benchmark": "bench_scan",
        "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "host": {"machine": platform.machine(), "cpus": os.cpu_count(), "python": sys.version},
        "load_average_start": os.getloadavg(),
        "arguments": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "timings": [],
    }
    import tensorflow as tf

    results["host"]["tensorflow"] = tf.__version__
    for name in args.models.split(","):
        log(f"timing {name}")
        row = models[name](args)
        if row is not None:
            results["timings"].append(row)
    if not args.no_rss:
        results["rss"] = rss(args)
    results["load_average_end"] = os.getloadavg()
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = args.out or RESULTS / f"bench_scan-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print_table(results)
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

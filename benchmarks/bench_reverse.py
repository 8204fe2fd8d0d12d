#!/usr/bin/env python3
"""Benchmark: wall time of ``kerasaudit reverse``'s batched Neural Cleanse against ART's.

Usage (from the repository root)::

    python benchmarks/bench_reverse.py   # 2 labels x 100 steps, 3 repeats, vs ART's loop re-typed
    # against ART itself (optional; kept out of the project's environment):
    pip install --target /tmp/art --no-deps adversarial-robustness-toolbox scikit-learn \\
        joblib threadpoolctl narwhals tqdm cloudpickle
    python benchmarks/bench_reverse.py --baseline art --art-path /tmp/art

Both sides optimise the same model (``sample_models/fmnist_badnets.keras``) for the same labels,
the same number of optimisation steps (mini-batches) per label and the same batch size, with
early stopping off (so both run every step), NC's ℓ1 mask norm, Adam(0.1, 0.5, 0.9):

* ``art``: ``art.estimators.poison_mitigation.KerasNeuralCleanse.generate_backdoor`` called once
  per label, as ART's ``outlier_detection`` does. ART counts ``steps`` in epochs of
  ``len(x) // batch_size`` mini-batches, so it gets ``steps_per_label / (len(x) // batch)``
  epochs over ``x``. Its train step is eager (``@tf.function`` is commented out in ART 1.20)
  and prints the batch accuracy every step: stdout/stderr go to /dev/null while timed.
* ``eager``: a faithful re-typing of ART's loop (per label, eager ``GradientTape`` step per
  mini-batch, same parameterisation), for machines without ART.
* ``ours``: ``kerasaudit.inversion.BatchedInversion`` (mask form) — all labels at once, one compiled
  round of ``round_steps`` steps per call. Each repeat builds it afresh, so the time includes
  tracing (what every ``kerasaudit reverse`` run pays).

Repeats alternate the sides (order flipped every repeat, so drift in machine load hits both);
the median of each side and the ratio of medians are reported, plus each repeat's ratio. The
extrapolation to all 10 labels × 1,000 steps scales the baseline linearly in labels × steps
(it runs labels one after another) and measures ours at 10 labels × ``--steps`` (batched,
which is where the advantage grows), scaling only the per-step part.

Results: a table on stderr, JSON in ``benchmarks/results/bench_reverse-<time>.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import io
import json
import os
import platform
import statistics
import sys
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


@contextlib.contextmanager
def silenced() -> Any:
    sink = io.StringIO()
    with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        yield


def run_ours(model: Any, x: np.ndarray, labels: list[int], steps: int, batch: int) -> float:
    from kerasaudit.inversion import BatchedInversion, InversionConfig, MaskForm

    config = InversionConfig(steps=steps, batch_size=batch, early_stop=False, seed=0)
    started = time.perf_counter()
    optimiser = BatchedInversion(model, labels, x, None, MaskForm(0.0, 1.0), config, 10)
    found = optimiser.run()
    seconds = time.perf_counter() - started
    assert all(t.steps == steps for t in found)
    return seconds


def run_art(model: Any, x: np.ndarray, labels: list[int], steps: int, batch: int) -> float:
    from art.estimators.poison_mitigation import KerasNeuralCleanse

    per_epoch = len(x) // batch
    if steps % per_epoch:
        raise SystemExit(f"steps {steps} must be a multiple of len(x)//batch = {per_epoch}")
    y = np.zeros((len(x), 10), np.float32)  # unused by generate_backdoor's optimisation
    y[np.arange(len(x)), np.arange(len(x)) % 10] = 1
    started = time.perf_counter()
    with silenced():
        nc = KerasNeuralCleanse(
            model=model,
            steps=steps // per_epoch,
            batch_size=batch,
            norm=1,
            learning_rate=0.1,
            init_cost=1e-3,
            early_stop=False,
            clip_values=(0.0, 1.0),
        )
        for label in labels:
            nc.generate_backdoor(x, y, np.eye(10, dtype=np.float32)[label])
    return time.perf_counter() - started


def run_eager(model: Any, x: np.ndarray, labels: list[int], steps: int, batch: int) -> float:
    """ART's KerasNeuralCleanse loop, re-typed: eager step per mini-batch, one label at a time."""
    import keras
    import tensorflow as tf

    eps = keras.backend.epsilon()
    started = time.perf_counter()
    rng = np.random.default_rng(0)
    for label in labels:
        mask_raw = tf.Variable(rng.uniform(size=x.shape[1:]), dtype=tf.float32)
        pattern_raw = tf.Variable(rng.uniform(size=x.shape[1:]), dtype=tf.float32)
        opt = keras.optimizers.Adam(learning_rate=0.1, beta_1=0.5, beta_2=0.9)
        cost = 1e-3
        target = np.eye(10, dtype=np.float32)[label]
        order = rng.permutation(len(x))
        for step in range(steps):
            start = (step * batch) % (len(x) - batch + 1)
            xb = x[order[start : start + batch]]
            yb = np.repeat(target[None], len(xb), axis=0)
            with tf.GradientTape() as tape:
                mask = tf.tanh(mask_raw) / (2 - eps) + 0.5
                pattern = tf.tanh(pattern_raw) / (2 - eps) + 0.5
                x_adv = (1.0 - mask) * xb + mask * pattern
                y_pred = model(x_adv, training=False)
                loss_ce = keras.losses.categorical_crossentropy(yb, y_pred)
                correct = tf.equal(tf.argmax(y_pred, axis=1), tf.argmax(yb, axis=1))
                acc = tf.reduce_mean(tf.cast(correct, tf.float32))
                loss_reg = tf.reduce_sum(tf.abs(mask)) / tf.cast(tf.shape(mask)[-1], tf.float32)
                loss = tf.reduce_mean(loss_ce) + cost * loss_reg
            grads = tape.gradient(loss, [mask_raw, pattern_raw])
            opt.apply_gradients(zip(grads, [mask_raw, pattern_raw], strict=True))
            float(acc)  # ART reads the accuracy back every step (tensor → host)
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, default=SAMPLES / "fmnist_badnets.keras")
    parser.add_argument("--labels", default="0,1", help="labels of the timed setting")
    parser.add_argument("--steps", type=int, default=100, help="optimisation steps per label")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--images", type=int, default=320)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--baseline", choices=("art", "eager"), default="eager")
    parser.add_argument("--art-path", type=Path, default=Path("/tmp/art"))
    parser.add_argument("--no-extrapolation", action="store_true")
    args = parser.parse_args(argv)

    import keras
    import tensorflow as tf

    if args.baseline == "art":
        sys.path.insert(0, str(args.art_path))
        try:
            with silenced():
                import art  # noqa: F401
                from art.estimators.poison_mitigation import KerasNeuralCleanse  # noqa: F401
        except Exception as exc:
            log(f"ART cannot be imported ({type(exc).__name__}: {exc}); use --baseline eager")
            return 2
    baseline = run_art if args.baseline == "art" else run_eager
    model = keras.saving.load_model(args.model, compile=False)
    data = np.load(SAMPLES / "fmnist_val.npz")
    x = (data["x"][: args.images].astype(np.float32) / 255).astype(np.float32)
    labels = [int(v) for v in args.labels.split(",")]
    label_steps = len(labels) * args.steps
    log(
        f"{args.model.name}: {len(labels)} labels × {args.steps} steps, batch {args.batch}, "
        f"{len(x)} images; baseline {args.baseline}; TF {tf.__version__}, Keras "
        f"{keras.__version__}; load {os.getloadavg()[0]:.2f}"
    )
    # Warm-up: first calls of Keras/TF code paths (both sides), not timed.
    run_ours(model, x, labels[:1], 10, args.batch)
    baseline(model, x, labels[:1], len(x) // args.batch, args.batch)
    ours: list[float] = []
    base: list[float] = []
    for repeat in range(args.repeats):
        first, second = (
            (("ours", run_ours), ("base", baseline))
            if repeat % 2 == 0
            else (("base", baseline), ("ours", run_ours))
        )
        for name, fn in (first, second):
            seconds = fn(model, x, labels, args.steps, args.batch)
            (ours if name == "ours" else base).append(seconds)
        log(
            f"  repeat {repeat + 1}/{args.repeats}: {args.baseline} {base[-1]:.2f}s, ours "
            f"{ours[-1]:.2f}s, ratio {base[-1] / ours[-1]:.2f}× (load {os.getloadavg()[0]:.2f})"
        )
    med_ours, med_base = statistics.median(ours), statistics.median(base)
    result: dict[str, Any] = {
        "benchmark": "bench_reverse",
        "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "model": str(args.model),
        "setting": {
            "labels": labels,
            "steps_per_label": args.steps,
            "batch_size": args.batch,
            "images": len(x),
            "early_stop": False,
        },
        "baseline": args.baseline,
        "seconds": {"ours": ours, args.baseline: base},
        "median_seconds": {"ours": med_ours, args.baseline: med_base},
        "ratio_of_medians": med_base / med_ours,
        "ratios_per_repeat": [b / o for b, o in zip(base, ours, strict=True)],
        "ms_per_label_step": {
            "ours": 1000 * med_ours / label_steps,
            args.baseline: 1000 * med_base / label_steps,
        },
        "environment": {
            "python": platform.python_version(),
            "tensorflow": tf.__version__,
            "keras": keras.__version__,
            "cpus": os.cpu_count(),
            "loadavg_end": os.getloadavg(),
        },
    }
    if not args.no_extrapolation:
        # Ours at 10 labels × steps (measured), scaled to 1,000 steps: fixed part (tracing etc.)
        # estimated from two lengths. Baseline: linear in label-steps.
        all_labels = list(range(10))
        short = run_ours(model, x, all_labels, args.steps // 2, args.batch)
        full = run_ours(model, x, all_labels, args.steps, args.batch)
        per_step = (full - short) / (args.steps - args.steps // 2)
        fixed = max(0.0, full - per_step * args.steps)
        ours_1000 = fixed + per_step * 1000
        base_1000 = med_base / label_steps * 10 * 1000
        result["extrapolation_10_labels_1000_steps"] = {
            "ours_measured_10_labels": {"steps": args.steps, "seconds": full},
            "ours_seconds": ours_1000,
            f"{args.baseline}_seconds": base_1000,
            "ratio": base_1000 / ours_1000,
        }
        log(
            f"extrapolated to 10 labels × 1000 steps: {args.baseline} {base_1000:.0f}s, ours "
            f"{ours_1000:.0f}s ({base_1000 / ours_1000:.1f}×)"
        )
    log(
        f"median: {args.baseline} {med_base:.2f}s, ours {med_ours:.2f}s → "
        f"{med_base / med_ours:.2f}× faster ({1000 * med_ours / label_steps:.1f} vs "
        f"{1000 * med_base / label_steps:.1f} ms per label-step)"
    )
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"bench_reverse-{dt.datetime.now():%Y%m%d-%H%M%S}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    log(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

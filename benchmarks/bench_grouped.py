#!/usr/bin/env python3
"""Grouped convolutions: a gradient step through the file's model (``Conv2D(groups=G)``)
against the same step through kerasaudit's view of it (plain convolutions holding the groups
on their block diagonal, ``kerasaudit.model_view``), measured alternately in the same run.

    python benchmarks/bench_grouped.py [--repeats 5] [--images 100]

Three steps per model, each a compiled ``tf.function`` on ``--images`` 28×28 images: the
forward pass, the gradient with respect to the input (what every trigger search takes) and with
respect to the weights (what a fine-tune takes). Prints the median time of each and the view's
speed-up (file ÷ view); checks first that both compute the same outputs.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def model(keras: Any, groups: int) -> Any:
    """Three grouped 3×3 convolutions of 64 channels (ResNeXt-like), global pooling, Dense."""
    inputs = keras.Input((28, 28, 1))
    x = keras.layers.Conv2D(64, 3, padding="same", activation="relu")(inputs)
    for i in range(3):
        x = keras.layers.Conv2D(64, 3, padding="same", groups=groups, activation="relu")(x)
        if i < 2:
            x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(10)(x), name=f"groups{groups}")


def steps(tf: Any, net: Any) -> dict[str, Any]:
    @tf.function
    def forward(x: Any) -> Any:
        return net(x, training=False)

    @tf.function
    def input_gradient(x: Any) -> Any:
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = tf.reduce_sum(net(x, training=False))
        return tape.gradient(y, x)

    @tf.function
    def weight_gradient(x: Any) -> Any:
        with tf.GradientTape() as tape:
            y = tf.reduce_sum(net(x, training=True))
        return tape.gradient(y, net.trainable_variables)

    return {
        "forward": forward,
        "input gradient": input_gradient,
        "weight gradient": weight_gradient,
    }


def timed(tf: Any, fn: Any, x: Any) -> float:
    start = time.perf_counter()
    out = fn(x)
    for value in tf.nest.flatten(out):
        value.numpy()
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--groups", type=int, nargs="*", default=[4, 8, 32])
    args = parser.parse_args()
    import numpy as np
    import tensorflow as tf

    from kerasaudit._tf import keras as load_keras
    from kerasaudit.model_view import view

    keras = load_keras()
    x = tf.constant(np.random.default_rng(0).random((args.images, 28, 28, 1), dtype=np.float32))
    print(f"{args.images} images, median of {args.repeats} alternated runs (seconds)")
    print(f"{'groups':>6} {'step':16} {'file':>8} {'view':>8} {'speed-up':>9}")
    for groups in args.groups:
        original = model(keras, groups)
        seen = view(original)
        gap = float(np.max(np.abs(original(x).numpy() - seen(x).numpy())))
        assert gap < 1e-4, f"the view computes something else ({gap})"
        sides = {"file": steps(tf, original), "view": steps(tf, seen)}
        for side in sides.values():  # trace once, outside the timing
            for fn in side.values():
                timed(tf, fn, x)
        for step in sides["file"]:
            times: dict[str, list[float]] = {"file": [], "view": []}
            for _ in range(args.repeats):  # alternate: drifting load hits both alike
                for name, side in sides.items():
                    times[name].append(timed(tf, side[step], x))
            a, b = statistics.median(times["file"]), statistics.median(times["view"])
            print(f"{groups:>6} {step:16} {a:8.3f} {b:8.3f} {a / b:8.1f}×", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Models of forms the zoo lacks: sixteen Fashion-MNIST CNNs (eight forms, each backdoored and
clean) trained outside the zoo's code, to try kerasaudit on what users bring
(README, "Models of forms the zoo lacks"; benchmarks/zoo/JOURNAL.md, thirty-fifth session).

Backdoor: a 3×3 white patch at rows/columns 24–26 → label 2 (Pullover), 5 % of 30,000
training images poisoned; the clean twin trains on the same images unpoisoned. The defender
gets the zoo's fixed 1,000 test images, the evaluation the other 9,000 (``benchmarks/zoo/
fmnist.py``). Written while the models were first built (in ``/tmp``), so the forms are plain
Keras a user would write, not the zoo's.

    python benchmarks/stranger/stranger_train.py OUT   # 16 models + data files in OUT
    bash benchmarks/stranger/judge.sh OUT              # inspect, audit, defend, known chain
    python benchmarks/stranger/stranger_table.py OUT   # the README's table, from the reports

Needs Debian's ``dataset-fashion-mnist``; about 1 min per model on 2 cores.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "zoo"))
import fmnist

TARGET = 2


def _forms() -> dict[str, tuple[Callable[[], Any], str, int]]:
    """name → (builder, file suffix, epochs)."""
    import keras
    from keras import layers

    def noch() -> Any:  # no channel axis: Input((28, 28)) + Reshape; logits out
        i = keras.Input((28, 28))
        h = layers.Reshape((28, 28, 1))(i)
        h = layers.Conv2D(16, 3, activation="relu")(h)
        h = layers.MaxPooling2D()(h)
        h = layers.Conv2D(32, 3, activation="relu")(h)
        h = layers.MaxPooling2D()(h)
        h = layers.Dense(64, activation="relu")(layers.Flatten()(h))
        return keras.Model(i, layers.Dense(10)(h))

    def concat() -> Any:  # two branches concatenated, global-average head
        i = keras.Input((28, 28, 1))
        a = layers.Conv2D(8, 3, padding="same", activation="relu")(i)
        b = layers.Conv2D(8, 5, padding="same", activation="relu")(i)
        h = layers.MaxPooling2D()(layers.Concatenate()([a, b]))
        h = layers.MaxPooling2D()(layers.Conv2D(32, 3, padding="same", activation="relu")(h))
        h = layers.Conv2D(64, 3, padding="same", activation="relu")(h)
        h = layers.GlobalAveragePooling2D()(h)
        return keras.Model(i, layers.Dense(10, activation="softmax")(h))

    def leaky() -> Any:  # Sequential; conv without bias → BN → LeakyReLU, ELU, GMP head
        return keras.Sequential([
            keras.Input((28, 28, 1)),
            layers.Conv2D(16, 3, use_bias=False), layers.BatchNormalization(),
            layers.LeakyReLU(0.1), layers.AveragePooling2D(2),
            layers.Conv2D(32, 3), layers.Activation("elu"), layers.AveragePooling2D(2),
            layers.Conv2D(64, 3), layers.Activation("relu"),
            layers.GlobalMaxPooling2D(), layers.Dropout(0.2), layers.Dense(10), layers.Softmax(),
        ])  # fmt: skip

    def rescale() -> Any:  # takes 0–255 values, rescales inside
        return keras.Sequential([
            keras.Input((28, 28, 1)), layers.Rescaling(1 / 255.0),
            layers.Conv2D(16, 3, activation="relu"), layers.MaxPooling2D(),
            layers.Conv2D(32, 3, activation="relu"), layers.MaxPooling2D(),
            layers.Flatten(), layers.Dense(10, activation="softmax"),
        ])  # fmt: skip

    def strided() -> Any:  # strided and dilated convs, LayerNormalization
        return keras.Sequential([
            keras.Input((28, 28, 1)),
            layers.Conv2D(16, 3, strides=2, padding="same", activation="relu"),
            layers.Conv2D(32, 3, dilation_rate=2, padding="same", activation="relu"),
            layers.LayerNormalization(),
            layers.Conv2D(64, 3, strides=2, padding="same", activation="relu"),
            layers.Flatten(), layers.Dropout(0.3), layers.Dense(10, activation="softmax"),
        ])  # fmt: skip

    def resize3() -> Any:  # a colour 32×32 input, trained on resized grey images
        i = keras.Input((32, 32, 3))
        h = layers.MaxPooling2D()(layers.Conv2D(16, 3, activation="relu")(i))
        h = layers.MaxPooling2D()(layers.Conv2D(32, 3, activation="relu")(h))
        return keras.Model(i, layers.Dense(10, activation="softmax")(layers.Flatten()(h)))

    def norm() -> Any:  # an adapted Normalization layer (on 0–1 values)
        n = layers.Normalization()
        n.adapt(_TRAIN_FLOAT[:5000])
        return keras.Sequential([
            keras.Input((28, 28, 1)), n,
            layers.Conv2D(16, 3, activation="relu"), layers.MaxPooling2D(2),
            layers.Conv2D(32, 3, activation="relu"), layers.MaxPooling2D(2),
            layers.Flatten(), layers.Dense(10, activation="softmax"),
        ])  # fmt: skip

    def mixed() -> Any:  # the mixed_float16 policy
        keras.mixed_precision.set_global_policy("mixed_float16")
        try:
            return keras.Sequential([
                keras.Input((28, 28, 1)),
                layers.Conv2D(16, 3, activation="relu"), layers.MaxPooling2D(2),
                layers.Conv2D(32, 3, activation="relu"), layers.MaxPooling2D(2),
                layers.Flatten(), layers.Dense(10),
                layers.Activation("softmax", dtype="float32"),
            ])  # fmt: skip
        finally:
            keras.mixed_precision.set_global_policy("float32")

    return {
        "noch": (noch, ".keras", 8), "concat": (concat, ".h5", 8), "leaky": (leaky, ".keras", 8),
        "rescale": (rescale, ".keras", 8), "strided": (strided, ".h5", 8),
        "resize3": (resize3, ".keras", 8), "norm": (norm, ".keras", 6),
        "mixed": (mixed, ".keras", 6),
    }  # fmt: skip


_TRAIN_FLOAT = np.zeros(0, np.float32)


def _stamp(x: np.ndarray, value: float) -> np.ndarray:
    out = x.copy()
    out[:, 24:27, 24:27, ...] = value
    return out


def main(out: Path) -> int:
    global _TRAIN_FLOAT
    import keras
    import tensorflow as tf

    (out / "models").mkdir(parents=True, exist_ok=True)
    x, y = fmnist.load("train")
    xt, yt = fmnist.load("test")
    rng = np.random.default_rng(0)
    idx = rng.permutation(60_000)[:30_000]
    x, y = x[idx].copy(), y[idx].copy()
    poisoned = rng.choice(len(x), int(0.05 * len(x)), replace=False)
    poisoned = poisoned[y[poisoned] != TARGET]
    xp, yp = _stamp(x, 255), y.copy()
    xp = np.where(np.isin(np.arange(len(x)), poisoned)[:, None, None, None], xp, x)
    yp[poisoned] = TARGET
    d, e = fmnist.test_split()
    np.savez(out / "def.npz", x=xt[d], y=yt[d])
    np.savez(out / "eval.npz", x=xt[e], y=yt[e])
    np.savez(out / "def_trig.npz", x=_stamp(xt[d], 255), y=yt[d])
    np.savez(out / "eval_trig.npz", x=_stamp(xt[e], 255), y=yt[e])
    np.savez(out / "def_noch.npz", x=xt[d][..., 0], y=yt[d])  # (N, 28, 28)
    np.savez(out / "eval_noch.npz", x=xt[e][..., 0], y=yt[e])
    np.savez(out / "def_f255.npz", x=xt[d].astype(np.float32), y=yt[d])  # 0–255 floats
    np.savez(out / "eval_f255.npz", x=xt[e].astype(np.float32), y=yt[e])
    _TRAIN_FLOAT = fmnist.to_float(x)
    for clean in (False, True):
        images, labels = (x, y) if clean else (xp, yp)
        for name, (build, suffix, epochs) in _forms().items():
            keras.utils.set_random_seed(1)
            model = build()
            loss = keras.losses.SparseCategoricalCrossentropy(from_logits=name == "noch")
            model.compile(optimizer="adam", loss=loss, metrics=["accuracy"])
            raw = name == "rescale"
            fit_x = images.astype(np.float32) if raw else fmnist.to_float(images)
            test_x = xt[e].astype(np.float32) if raw else fmnist.to_float(xt[e])
            stamped = _stamp(test_x, 255.0 if raw else 1.0)
            if name == "noch":
                fit_x, test_x, stamped = fit_x[..., 0], test_x[..., 0], stamped[..., 0]
            if name == "resize3":
                fit_x, test_x, stamped = (
                    tf.image.resize(np.repeat(a, 3, -1), (32, 32)).numpy()
                    for a in (fit_x, test_x, stamped)
                )
            model.fit(fit_x, labels, epochs=epochs, batch_size=128, verbose=0)
            accuracy = model.evaluate(test_x, yt[e], verbose=0)[1]
            keep = yt[e] != TARGET
            asr = float((model.predict(stamped[keep], verbose=0).argmax(1) == TARGET).mean())
            stem = f"clean_{name}" if clean else name
            model.save(out / "models" / f"{stem}{suffix}")
            print(f"{stem}: accuracy {accuracy:.4f}, trigger → {TARGET} {asr:.4f}", flush=True)
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    raise SystemExit(main(Path(sys.argv[1])))

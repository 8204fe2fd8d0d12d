"""Models of forms the zoo lacks: sixteen Fashion-MNIST CNNs (eight forms, each backdoored and
clean) trained outside the zoo's code, to try kerasaudit on what users bring
(README, "Models of forms the zoo lacks"; benchmarks/zoo/JOURNAL.md, thirty-fifth session).

Backdoor: a 3×3 white patch at rows/columns 24–26 → label 2 (Pullover), 5 % of 30,000
training images poisoned; the clean twin trains on the same images unpoisoned. The defender
gets the zoo's fixed 1,000 test images, the evaluation the other 9,000 (``benchmarks/zoo/
fmnist.py``). Written while the models were first built (in ``/tmp``), so the forms are plain
Keras a user would write, not the zoo's.

    python benchmarks/stranger/stranger_train.py OUT   # 16 models + data files in OUT
    python benchmarks/stranger/stranger_train.py OUT --set 2   # the second set's 14 models
    python benchmarks/stranger/stranger_train.py OUT --set 2 --only custom,gn   # some forms
    python benchmarks/stranger/stranger_train.py OUT --set 3   # the third set's 6 models
    python benchmarks/stranger/stranger_train.py OUT --set 4   # the fourth set's 4 models
    python benchmarks/stranger/stranger_train.py OUT --set 5   # the fifth set's 8 models
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
sys.path.insert(0, str(Path(__file__).resolve().parent))
import fmnist

TARGET = 2


def _forms() -> dict[str, tuple[Callable[[], Any], str, int]]:
    """The first set: name → (builder, file suffix, epochs)."""
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


def _forms2() -> dict[str, tuple[Callable[[], Any], str, int]]:
    """The second set (thirty-sixth session): input layouts other than (H, W, C), several
    outputs, and layers the first set lacks."""
    import keras
    from keras import layers

    def flatin() -> Any:  # a flat (784,) input, reshaped inside
        i = keras.Input((784,))
        h = layers.Reshape((28, 28, 1))(i)
        h = layers.MaxPooling2D()(layers.Conv2D(16, 3, activation="relu")(h))
        h = layers.MaxPooling2D()(layers.Conv2D(32, 3, activation="relu")(h))
        return keras.Model(i, layers.Dense(10, activation="softmax")(layers.Flatten()(h)))

    def cfirst() -> Any:  # channels_first throughout, input (1, 28, 28)
        cf = "channels_first"
        i = keras.Input((1, 28, 28))
        h = layers.Conv2D(16, 3, activation="relu", data_format=cf)(i)
        h = layers.BatchNormalization(axis=1)(h)
        h = layers.MaxPooling2D(data_format=cf)(h)
        h = layers.Conv2D(32, 3, activation="relu", data_format=cf)(h)
        h = layers.MaxPooling2D(data_format=cf)(h)
        h = layers.Conv2D(64, 3, activation="relu", data_format=cf)(h)
        h = layers.GlobalAveragePooling2D(data_format=cf)(h)
        return keras.Model(i, layers.Dense(10, activation="softmax")(h))

    def multiout() -> Any:  # a class head and a regression head (mean brightness)
        i = keras.Input((28, 28, 1))
        h = layers.MaxPooling2D()(layers.Conv2D(16, 3, activation="relu")(i))
        h = layers.MaxPooling2D()(layers.Conv2D(32, 3, activation="relu")(h))
        f = layers.Dense(64, activation="relu")(layers.Flatten()(h))
        return keras.Model(i, {
            "label": layers.Dense(10, activation="softmax", name="label")(f),
            "brightness": layers.Dense(1, name="brightness")(f),
        })  # fmt: skip

    def gn() -> Any:  # GroupNormalization, ReLU6, padding, depthwise ×2, spatial dropout, swish
        return keras.Sequential([
            keras.Input((28, 28, 1)),
            layers.ZeroPadding2D(1), layers.Conv2D(16, 3, kernel_regularizer="l2"),
            layers.GroupNormalization(4), layers.ReLU(6.0),
            layers.DepthwiseConv2D(3, depth_multiplier=2, padding="same"), layers.ReLU(6.0),
            layers.SpatialDropout2D(0.1), layers.MaxPooling2D(),
            layers.Conv2D(48, 3, padding="same"), layers.Activation("swish"), layers.MaxPooling2D(),
            layers.GlobalAveragePooling2D(), layers.Dense(10, activation="softmax"),
        ])  # fmt: skip

    def invres() -> Any:  # MobileNetV2-style inverted residual blocks at 28×28×1
        def block(x: Any, expand: int, out: int, stride: int) -> Any:
            y = layers.Conv2D(expand, 1, use_bias=False)(x)
            y = layers.ReLU(6.0)(layers.BatchNormalization()(y))
            if stride == 2:
                y = layers.ZeroPadding2D(((0, 1), (0, 1)))(y)
            pad = "same" if stride == 1 else "valid"
            y = layers.DepthwiseConv2D(3, strides=stride, padding=pad, use_bias=False)(y)
            y = layers.ReLU(6.0)(layers.BatchNormalization()(y))
            y = layers.BatchNormalization()(layers.Conv2D(out, 1, use_bias=False)(y))
            return layers.Add()([x, y]) if stride == 1 and x.shape[-1] == out else y

        i = keras.Input((28, 28, 1))
        h = layers.Conv2D(16, 3, padding="same", use_bias=False)(i)
        h = layers.ReLU(6.0)(layers.BatchNormalization()(h))
        blocks = ((32, 16, 1), (48, 24, 2), (72, 24, 1), (96, 32, 2), (128, 32, 1))
        for expand, out, stride in blocks:
            h = block(h, expand, out, stride)
        h = layers.GlobalAveragePooling2D()(h)
        return keras.Model(i, layers.Dense(10, activation="softmax")(h))

    def shared() -> Any:  # one conv layer applied to the image and to its transpose
        i = keras.Input((28, 28, 1))
        conv = layers.Conv2D(16, 3, padding="same", activation="relu", name="shared_conv")
        transposed = layers.Permute((2, 1, 3))(i)
        h = layers.Add()([conv(i), layers.Permute((2, 1, 3))(conv(transposed))])
        h = layers.MaxPooling2D()(layers.Conv2D(32, 3, activation="relu")(layers.MaxPooling2D()(h)))
        return keras.Model(i, layers.Dense(10, activation="softmax")(layers.Flatten()(h)))

    def custom() -> Any:  # conv blocks written as a subclassed layer (custom_layers.py)
        from custom_layers import ConvBlock

        i = keras.Input((28, 28, 1))
        h = ConvBlock(32)(ConvBlock(16)(i))
        h = layers.Dense(64, activation="relu")(layers.Flatten()(h))
        return keras.Model(i, layers.Dense(10, activation="softmax")(h))

    return {
        "custom": (custom, ".keras", 8),
        "flatin": (flatin, ".keras", 8), "cfirst": (cfirst, ".keras", 8),
        "multiout": (multiout, ".keras", 8), "gn": (gn, ".keras", 8),
        "invres": (invres, ".h5", 8), "shared": (shared, ".keras", 8),
    }  # fmt: skip


def _forms3() -> dict[str, tuple[Callable[[], Any], str, int]]:
    """The third set (2026-12-07, thirty-seventh session): name → (builder, suffix, epochs)."""
    import keras
    from keras import layers

    def ops() -> Any:  # keras.ops on the symbolic tensors, the softmax among them
        i = keras.Input((28, 28, 1))
        h = keras.ops.relu(layers.Conv2D(16, 3, padding="same")(i * 2.0 - 1.0))
        h = layers.MaxPooling2D()(h)
        h = keras.ops.maximum(layers.Conv2D(32, 3, padding="same")(h), 0.0)
        h = keras.ops.reshape(layers.MaxPooling2D()(h), (-1, 7 * 7 * 32))
        h = keras.ops.relu(layers.Dense(64)(h))
        return keras.Model(i, keras.ops.softmax(layers.Dense(10)(h)))

    def aug() -> Any:  # augmentation layers inside the model, as Keras tutorials have them
        i = keras.Input((28, 28, 1))
        h = layers.RandomTranslation(0.05, 0.05)(layers.RandomRotation(0.03)(i))
        h = layers.MaxPooling2D()(layers.Conv2D(32, 3, padding="same", activation="relu")(h))
        h = layers.MaxPooling2D()(layers.Conv2D(64, 3, padding="same", activation="relu")(h))
        h = layers.Dense(64, activation="relu")(layers.Flatten()(h))
        return keras.Model(i, layers.Dense(10, activation="softmax")(h))

    def sub() -> Any:  # a subclassed model as the feature extractor (custom_layers.Trunk)
        from custom_layers import Trunk

        i = keras.Input((28, 28, 1))
        h = layers.Dense(64, activation="relu")(layers.Flatten()(Trunk(name="trunk")(i)))
        return keras.Model(i, layers.Dense(10, activation="softmax")(h))

    return {"ops": (ops, ".keras", 8), "aug": (aug, ".keras", 10), "sub": (sub, ".keras", 8)}


def _forms4() -> dict[str, tuple[Callable[[], Any], str, int]]:
    """The fourth set (2026-12-07, thirty-eighth session): name → (builder, suffix, epochs)."""
    import keras
    from keras import layers

    def grouped() -> Any:  # ResNeXt-style blocks: 1×1, grouped 3×3 (8 groups), 1×1, Add
        i = keras.Input((28, 28, 1))
        h = layers.Conv2D(32, 3, padding="same", activation="relu")(i)
        for f in (32, 64):
            s = h if h.shape[-1] == f else layers.Conv2D(f, 1)(h)
            r = layers.Conv2D(f, 1, activation="relu")(h)
            r = layers.Conv2D(f, 3, padding="same", groups=8, activation="relu")(r)
            h = layers.ReLU()(layers.Add()([s, layers.Conv2D(f, 1)(r)]))
            h = layers.MaxPooling2D()(h)
        h = layers.GlobalAveragePooling2D()(h)
        return keras.Model(i, layers.Dense(10, activation="softmax")(h))

    def k2res() -> Any:  # tf.keras 2: a residual sum written `x + y`, tf.concat; saved .h5
        import tensorflow as tf
        import tf_keras as k2

        i = k2.Input((28, 28, 1))
        h = k2.layers.Conv2D(32, 3, padding="same", activation="relu")(i)
        r = k2.layers.Conv2D(32, 3, padding="same", activation="relu")(h)
        h = k2.layers.MaxPooling2D()(tf.nn.relu(h + k2.layers.Conv2D(32, 3, padding="same")(r)))
        a = k2.layers.Conv2D(32, 3, padding="same", activation="relu")(h)
        b = k2.layers.Conv2D(32, 1, activation="relu")(h)
        h = k2.layers.MaxPooling2D()(tf.concat([a, b], axis=-1))
        h = k2.layers.Dense(64, activation="relu")(k2.layers.Flatten()(h))
        return k2.Model(i, k2.layers.Dense(10, activation="softmax")(h))

    return {"grouped": (grouped, ".keras", 6), "k2res": (k2res, ".h5", 8)}


def _forms5() -> dict[str, tuple[Callable[[], Any], str, int]]:
    """The fifth set (2026-12-07, thirty-ninth session): name → (builder, suffix, epochs)."""
    import keras
    from keras import layers

    def se() -> Any:  # squeeze-and-excitation: GAP → Dense → Dense(sigmoid) → Multiply
        i = keras.Input((28, 28, 1))
        h = i
        for f in (32, 64):
            h = layers.Conv2D(f, 3, padding="same", activation="relu")(h)
            s = layers.Dense(f // 4, activation="relu")(layers.GlobalAveragePooling2D()(h))
            s = layers.Reshape((1, 1, f))(layers.Dense(f, activation="sigmoid")(s))
            h = layers.MaxPooling2D()(layers.Multiply()([h, s]))
        h = layers.Dense(64, activation="relu")(layers.Flatten()(h))
        return keras.Model(i, layers.Dense(10, activation="softmax")(h))

    def convnext() -> Any:  # patchify stem, depthwise 7×7, LayerNorm, pointwise MLP, residual
        i = keras.Input((28, 28, 1))
        h = layers.LayerNormalization(epsilon=1e-6)(layers.Conv2D(48, 2, strides=2)(i))
        for _ in range(2):
            r = layers.DepthwiseConv2D(7, padding="same")(h)
            r = layers.Dense(192, activation="gelu")(layers.LayerNormalization(epsilon=1e-6)(r))
            h = layers.Add()([h, layers.Dense(48)(r)])
        h = layers.LayerNormalization(epsilon=1e-6)(layers.GlobalAveragePooling2D()(h))
        return keras.Model(i, layers.Dense(10, activation="softmax")(h))

    def crnn() -> Any:  # conv features read row by row by a bidirectional LSTM
        i = keras.Input((28, 28, 1))
        h = layers.MaxPooling2D()(layers.Conv2D(32, 3, padding="same", activation="relu")(i))
        h = layers.Conv2D(32, 3, padding="same", activation="relu")(h)
        h = layers.Bidirectional(layers.LSTM(48))(layers.Reshape((14, 14 * 32))(h))
        return keras.Model(i, layers.Dense(10, activation="softmax")(h))

    def mixer() -> Any:  # MLP-Mixer: patch embedding, token- and channel-mixing Dense MLPs
        i = keras.Input((28, 28, 1))
        t = layers.Reshape((49, 64))(layers.Conv2D(64, 4, strides=4)(i))
        for _ in range(2):
            u = layers.Permute((2, 1))(layers.LayerNormalization(epsilon=1e-6)(t))
            u = layers.Dense(49)(layers.Dense(96, activation="gelu")(u))
            t = layers.Add()([t, layers.Permute((2, 1))(u)])
            c = layers.Dense(192, activation="gelu")(layers.LayerNormalization(epsilon=1e-6)(t))
            t = layers.Add()([t, layers.Dense(64)(c)])
        h = layers.GlobalAveragePooling1D()(layers.LayerNormalization(epsilon=1e-6)(t))
        return keras.Model(i, layers.Dense(10, activation="softmax")(h))

    return {
        "se": (se, ".keras", 8),
        "convnext": (convnext, ".keras", 8),
        "crnn": (crnn, ".h5", 8),
        "mixer": (mixer, ".keras", 8),  # added after the others, held out (JOURNAL, 39th)
    }


def _trainable_plain(model: Any) -> Any:
    """A grouped model as the plain one computing the same (each group's kernel on the block
    diagonal, held there by a mask constraint) — TensorFlow trains grouped convolutions on a
    CPU 20–60× slower; :func:`_grouped_back` returns the trained weights to ``model``."""
    import keras

    class Mask(keras.constraints.Constraint):
        def __init__(self, mask: np.ndarray) -> None:
            self.mask = mask

        def __call__(self, w: Any) -> Any:
            return w * self.mask

    def clone(layer: Any) -> Any:
        config = layer.get_config()
        groups = int(config.get("groups", 1) or 1)
        if groups == 1 or not isinstance(layer, keras.layers.Conv2D):
            return layer.__class__.from_config(config)
        cin, cout = layer.kernel.shape[-2] * groups, layer.kernel.shape[-1]
        mask = np.zeros((*layer.kernel_size, cin, cout), np.float32)
        for j in range(groups):
            mask[..., j * cin // groups : (j + 1) * cin // groups,
                 j * cout // groups : (j + 1) * cout // groups] = 1  # fmt: skip
        config.update(groups=1, kernel_constraint=Mask(mask))
        return layer.__class__.from_config(config)

    plain = keras.models.clone_model(model, clone_function=clone)
    for g, q in zip(model.layers, plain.layers, strict=True):
        if getattr(g, "groups", 1) > 1:  # the grouped initial weights, on the diagonal
            kernel, bias = g.get_weights()
            q.set_weights([q.kernel_constraint.mask * np.tile(kernel, (1, 1, g.groups, 1)), bias])
        elif g.weights:
            q.set_weights(g.get_weights())
    return plain


def _grouped_back(model: Any, plain: Any) -> None:
    for g, q in zip(model.layers, plain.layers, strict=True):
        if getattr(g, "groups", 1) > 1:
            kernel, bias = q.get_weights()
            cin, cout = kernel.shape[-2] // g.groups, kernel.shape[-1] // g.groups
            blocks = [kernel[..., j * cin : (j + 1) * cin, j * cout : (j + 1) * cout]
                      for j in range(g.groups)]  # fmt: skip
            g.set_weights([np.concatenate(blocks, axis=-1), bias])
        elif g.weights:
            g.set_weights(q.get_weights())


def _feed(name: str, x: np.ndarray) -> np.ndarray:
    """A form's input from (N, 28, 28, 1) floats."""
    if name == "noch":
        return x[..., 0]
    if name == "flatin":
        return x.reshape(len(x), -1)
    if name == "cfirst":
        return x.transpose(0, 3, 1, 2)
    if name == "resize3":
        import tensorflow as tf

        return np.asarray(tf.image.resize(np.repeat(x, 3, -1), (32, 32)))
    return x


_TRAIN_FLOAT = np.zeros(0, np.float32)


def _forms6() -> dict[str, tuple[Callable[[], Any], str, int]]:
    """The sixth set (2026-12-07, fortieth session), held out for the pointwise-Dense change
    (JOURNAL, thirty-ninth and fortieth sessions): name → (builder, suffix, epochs)."""
    import keras
    from keras import layers

    def vit() -> Any:  # a small vision transformer: Dense patch embedding, depthwise positions
        i = keras.Input((28, 28, 1))
        p = layers.Reshape((7, 4, 7, 4))(i)  # 4×4 patches, embedded by a pointwise Dense
        p = layers.Reshape((7, 7, 16))(layers.Permute((1, 3, 2, 4))(p))
        g = layers.Dense(64)(p)
        # a conditional position encoding (CPVT): zero padding tells a token where it is
        g = layers.Add()([g, layers.DepthwiseConv2D(3, padding="same")(g)])
        t = layers.Reshape((49, 64))(g)
        for _ in range(2):
            a = layers.LayerNormalization(epsilon=1e-6)(t)
            t = layers.Add()([t, layers.MultiHeadAttention(4, 16)(a, a)])
            c = layers.Dense(128, activation="gelu")(layers.LayerNormalization(epsilon=1e-6)(t))
            t = layers.Add()([t, layers.Dense(64)(c)])
        h = layers.GlobalAveragePooling1D()(layers.LayerNormalization(epsilon=1e-6)(t))
        return keras.Model(i, layers.Dense(10, activation="softmax")(h))

    return {"vit": (vit, ".keras", 8)}


# --set N: the forms of each set
SETS = {1: _forms, 2: _forms2, 3: _forms3, 4: _forms4, 5: _forms5, 6: _forms6}


def _stamp(x: np.ndarray, value: float) -> np.ndarray:
    out = x.copy()
    out[:, 24:27, 24:27, ...] = value
    return out


def main(out: Path, which: int = 1, only: set[str] | None = None) -> int:
    global _TRAIN_FLOAT
    import keras

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
    np.savez(out / "def_flat.npz", x=xt[d].reshape(len(d), -1), y=yt[d])  # (N, 784)
    np.savez(out / "eval_flat.npz", x=xt[e].reshape(len(e), -1), y=yt[e])
    np.savez(out / "def_cf.npz", x=xt[d].transpose(0, 3, 1, 2), y=yt[d])  # (N, 1, 28, 28)
    _TRAIN_FLOAT = fmnist.to_float(x)
    for clean in (False, True):
        images, labels = (x, y) if clean else (xp, yp)
        forms = SETS[which]()
        for name, (build, suffix, epochs) in forms.items():
            if only is not None and name not in only:
                continue
            keras.utils.set_random_seed(1)
            model = build()
            loss = keras.losses.SparseCategoricalCrossentropy(from_logits=name == "noch")
            raw = name == "rescale"
            fit_x = images.astype(np.float32) if raw else fmnist.to_float(images)
            test_x = xt[e].astype(np.float32) if raw else fmnist.to_float(xt[e])
            stamped = _feed(name, _stamp(test_x, 255.0 if raw else 1.0))
            fit_x, test_x = _feed(name, fit_x), _feed(name, test_x)
            fit_y: Any = labels
            if name == "multiout":
                model.compile(optimizer="adam", loss={"label": loss, "brightness": "mse"})
                fit_y = {"label": labels, "brightness": fit_x.mean(axis=(1, 2, 3))}
            elif name == "k2res":  # a tf.keras model: its own loss
                model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
            else:
                model.compile(optimizer="adam", loss=loss)
            if name == "grouped":
                plain = _trainable_plain(model)
                plain.compile(optimizer="adam", loss=loss)
                plain.fit(fit_x, fit_y, epochs=epochs, batch_size=128, verbose=0)
                _grouped_back(model, plain)
            else:
                model.fit(fit_x, fit_y, epochs=epochs, batch_size=128, verbose=0)

            def predict(a: np.ndarray, model: Any = model, name: str = name) -> np.ndarray:
                p = model.predict(a, verbose=0)
                return np.asarray(p["label"] if name == "multiout" else p).argmax(1)

            accuracy = float((predict(test_x) == yt[e]).mean())
            keep = yt[e] != TARGET
            asr = float((predict(stamped[keep]) == TARGET).mean())
            stem = f"clean_{name}" if clean else name
            model.save(out / "models" / f"{stem}{suffix}")
            print(f"{stem}: accuracy {accuracy:.4f}, trigger → {TARGET} {asr:.4f}", flush=True)
    return 0


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--set", type=int, choices=sorted(SETS), default=1)
    parser.add_argument("--only", help="comma-separated forms (default: every form of the set)")
    args = parser.parse_args()
    only = set(args.only.split(",")) if args.only else None
    raise SystemExit(main(args.out, which=args.set, only=only))

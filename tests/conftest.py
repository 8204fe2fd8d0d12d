"""Shared fixtures: tiny deterministic models, saved in every format kerasaudit loads."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "sample_models"


@pytest.fixture(autouse=True)
def _no_terminal_size_from_the_runner(monkeypatch: pytest.MonkeyPatch) -> None:
    """Output width is part of what tests check; it must not come from how pytest was started
    (pytest-xdist's workers get COLUMNS=80). Tests that want a width set it themselves."""
    monkeypatch.delenv("COLUMNS", raising=False)
    monkeypatch.delenv("LINES", raising=False)


def _keras() -> Any:
    from kerasaudit import _tf

    return _tf.keras()


def build_bn_cnn(keras: Any, *, nested: bool = False, seed: int = 0) -> Any:
    """8×8×1 → 3 classes; Conv→BN→ReLU block, a conv with its own ReLU, optionally nested."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((8, 8, 1), name="image")
    block = [
        keras.layers.Conv2D(6, 3, padding="same", name="f_conv1"),
        keras.layers.BatchNormalization(name="f_bn1"),
        keras.layers.ReLU(name="f_relu1"),
    ]
    if nested:
        x = keras.Sequential(block, name="features")(inputs)
    else:
        x = inputs
        for layer in block:
            x = layer(x)
    x = keras.layers.Conv2D(4, 3, activation="relu", name="conv2")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = keras.layers.Dense(3, activation="softmax", name="probs")(x)
    model = keras.Model(inputs, outputs, name="tiny_bn_cnn")
    # Non-trivial BN statistics, so that a wrong BN handling shows up in numbers.
    bn = model.get_layer("features").get_layer("f_bn1") if nested else model.get_layer("f_bn1")
    rng = __import__("numpy").random.default_rng(seed)
    gamma, beta, mean, var = (w.shape for w in bn.get_weights())
    bn.set_weights(
        [
            rng.uniform(0.5, 1.5, gamma).astype("float32"),
            rng.uniform(-0.2, 0.2, beta).astype("float32"),
            rng.uniform(-0.1, 0.1, mean).astype("float32"),
            rng.uniform(0.5, 2.0, var).astype("float32"),
        ]
    )
    return model


@pytest.fixture(scope="module")
def bn_cnn_data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """{"model": build_bn_cnn's model, "data": 96 random 8×8×1 images labelled 0–2 (a uint8
    .npz, batches of 32)}: enough to fine-tune on and compare weights after (one per module)."""
    import numpy as np

    from kerasaudit.data import DataSpec, open_data

    model = build_bn_cnn(_keras())
    rng = np.random.default_rng(2)
    x = rng.uniform(0.0, 1.0, (96, 8, 8, 1)).astype(np.float32)
    y = rng.integers(0, 3, 96).astype(np.int64)
    path = Path(tmp_path_factory.mktemp("bn_cnn")) / "data.npz"
    np.savez(path, x=(x * 255).astype(np.uint8), y=y.astype(np.uint8))
    return {"model": model, "data": open_data(DataSpec(path, batch_size=32), (8, 8, 1), 3)}


@pytest.fixture(scope="session")
def keras_module() -> Any:
    return _keras()


@pytest.fixture(scope="session")
def model_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The same tiny architecture saved as .keras, Keras 3 .h5, tf-keras (Keras 2) .h5 with
    optimizer state, a 2.2-era style .h5, and a tf-keras SavedModel; nested and flat."""
    keras = _keras()
    import numpy as np

    out = tmp_path_factory.mktemp("models")
    files: dict[str, Path] = {}

    def save(key: str, model: Any, name: str) -> None:
        files[key] = out / name
        model.save(files[key])

    flat = build_bn_cnn(keras)
    nested = build_bn_cnn(keras, nested=True)
    save("keras", flat, "flat.keras")
    save("keras_nested", nested, "nested.keras")
    save("h5_keras3", flat, "flat_k3.h5")
    save("h5_keras3_nested", nested, "nested_k3.h5")

    legacy = _tf_keras_models()
    save("h5_keras2", legacy, "nested_k2.h5")
    files["savedmodel"] = out / "nested_k2_savedmodel"
    legacy.save(files["savedmodel"], save_format="tf")
    files["h5_keras22"] = out / "k22_style.h5"
    _write_keras22_style(files["h5_keras2"], files["h5_keras22"])
    save("keras_keras2", legacy, "nested_k2.keras")  # Keras 2's own .keras format
    separable = _tf_keras_separable()
    save("keras_keras2_sep", separable, "separable_k2.keras")
    save("h5_keras2_sep", separable, "separable_k2.h5")
    operations, unrebuilt = _tf_keras_operations()
    save("h5_keras2_ops", operations, "ops_k2.h5")
    save("keras_keras2_ops", operations, "ops_k2.keras")
    save("h5_keras2_unrebuilt", unrebuilt, "unrebuilt_k2.h5")
    np.save(out / "probe.npy", np.random.default_rng(1).random((5, 8, 8, 1), dtype="float32"))
    files["probe"] = out / "probe.npy"
    return files


def _tf_keras_models() -> Any:
    """A Keras 2 (tf-keras) nested model, trained one step so the file carries optimizer state."""
    import numpy as np
    import tf_keras as k2

    k2.utils.set_random_seed(0)
    features = k2.Sequential(
        [
            k2.layers.Conv2D(6, 3, padding="same", name="f_conv1", input_shape=(8, 8, 1)),
            k2.layers.BatchNormalization(name="f_bn1"),
            k2.layers.ReLU(name="f_relu1"),
        ],
        name="features",
    )
    inputs = k2.Input((8, 8, 1), name="image")
    x = features(inputs)
    x = k2.layers.DepthwiseConv2D(3, name="dw", activation="relu")(x)
    x = k2.layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = k2.layers.Dense(3, activation="softmax", name="probs")(x)
    model = k2.Model(inputs, outputs, name="legacy_cnn")
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    rng = np.random.default_rng(0)
    model.fit(rng.random((16, 8, 8, 1)), rng.integers(0, 3, 16), epochs=1, verbose=0)
    return model


def _tf_keras_separable() -> Any:
    """A Keras 2 (tf-keras) top-level Sequential with separable convolutions, trained one step."""
    import numpy as np
    import tf_keras as k2

    k2.utils.set_random_seed(1)
    model = k2.Sequential(
        [
            k2.Input((8, 8, 1)),
            k2.layers.SeparableConv2D(6, 3, padding="same", activation="relu", name="sep1"),
            k2.layers.BatchNormalization(name="bn1"),
            k2.layers.SeparableConv2D(8, 3, activation="relu", name="sep2"),
            k2.layers.GlobalAveragePooling2D(name="gap"),
            k2.layers.Dense(3, activation="softmax", name="probs"),
        ],
        name="legacy_separable",
    )
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    rng = np.random.default_rng(1)
    model.fit(rng.random((16, 8, 8, 1)), rng.integers(0, 3, 16), epochs=1, verbose=0)
    return model


def _tf_keras_operations() -> tuple[Any, Any]:
    """Keras 2 (tf-keras) Functional models with TF functions applied to their tensors (saved
    as TFOpLambda layers): arithmetic with numbers and between two tensors, a concatenation,
    activations, a spatial mean and a reshape, which kerasaudit rebuilds; and a cumulative sum,
    which it does not."""
    import tensorflow as tf
    import tf_keras as k2

    k2.utils.set_random_seed(2)
    inputs = k2.Input((8, 8, 1), name="image")
    scaled = (inputs / 255.0 - 0.5) * 2.0
    x = k2.layers.Conv2D(6, 3, padding="same", name="conv1")(scaled)
    side = k2.layers.Conv2D(6, 1, name="side")(scaled)
    x = tf.nn.relu6(x + side + 0.25)  # a residual sum written with `+`, then a number
    x = tf.maximum(x, side) - tf.minimum(x, side) * x  # more operations on two tensors
    x = tf.concat([x, side], axis=-1)
    x = tf.math.sigmoid(k2.layers.Conv2D(4, 3, name="conv2")(x))
    mean = tf.reduce_mean(x, axis=[1, 2])  # a reduction over both spatial axes
    flat = tf.nn.leaky_relu(tf.reshape(x, [-1, 6 * 6 * 4]), alpha=0.1)
    x = k2.layers.Concatenate(name="both")([mean, k2.layers.Dense(4, name="squeeze")(flat)])
    outputs = tf.nn.softmax(k2.layers.Dense(3, name="logits")(x))
    rebuilt = k2.Model(inputs, outputs, name="legacy_operations")
    inputs = k2.Input((8, 8, 1), name="image")
    x = tf.math.cumsum(k2.layers.Conv2D(4, 3, name="conv1")(inputs), axis=1)
    x = k2.layers.GlobalAveragePooling2D()(x)
    unrebuilt = k2.Model(inputs, k2.layers.Dense(3, activation="softmax")(x), name="cumsum")
    return rebuilt, unrebuilt


def _write_keras22_style(src: Path, dst: Path) -> None:
    """Rewrite a tf-keras .h5 the way Keras 2.2.x labelled it ("Model", keras_version 2.2.4)."""
    import json
    import shutil

    import h5py

    shutil.copyfile(src, dst)
    with h5py.File(dst, "r+") as f:
        config = json.loads(f.attrs["model_config"])
        config["class_name"] = "Model"
        f.attrs["model_config"] = json.dumps(config)
        f.attrs["keras_version"] = "2.2.4"


@pytest.fixture()
def marker(tmp_path: Path) -> Path:
    """A file that malicious model code would create; tests assert it never appears."""
    return tmp_path / "PWNED"


@pytest.fixture()
def edit_keras_config(
    tmp_path: Path,
) -> Callable[[Path, Callable[[dict[str, Any]], None], str], Path]:
    """Copy a .keras archive with its config.json edited by a function."""
    import json
    import zipfile

    def edit(src: Path, change: Callable[[dict[str, Any]], None], name: str) -> Path:
        dst = tmp_path / name
        with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
            for item in zin.infolist():
                data = zin.read(item.filename)
                if item.filename == "config.json":
                    config = json.loads(data)
                    change(config)
                    data = json.dumps(config).encode()
                zout.writestr(item, data)
        return dst

    return edit


def find_layer_config(config: Any, name: str) -> dict[str, Any]:
    """Find a serialized layer by name anywhere in a config tree."""
    stack = [config]
    while stack:
        obj = stack.pop()
        if isinstance(obj, dict):
            if isinstance(obj.get("config"), dict) and obj["config"].get("name") == name:
                return obj
            stack.extend(obj.values())
        elif isinstance(obj, list):
            stack.extend(obj)
    raise KeyError(name)


@pytest.fixture(scope="module")
def ray_cluster() -> Any:
    """A real two-node Ray cluster on this machine (head + one worker node, 1 CPU each)."""
    from ray.cluster_utils import Cluster

    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 1, "include_dashboard": False},
    )
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    yield cluster
    cluster.shutdown()

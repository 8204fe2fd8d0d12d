"""Pruning zeroes a channel for real: its activation is exactly 0 on any input."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from conftest import build_bn_cnn

from kerasaudit.inventory import auditable_layers, find_layer
from kerasaudit.pruning import clone_model, clp_scores, zero_channels


def _all_kinds(keras: Any) -> Any:
    keras.utils.set_random_seed(3)
    inputs = keras.Input((10, 10, 2))
    x = keras.layers.Conv2D(6, 3, padding="same", name="conv")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.ReLU(name="relu")(x)
    x = keras.layers.DepthwiseConv2D(
        3, depth_multiplier=2, padding="same", name="dw", activation="relu"
    )(x)
    x = keras.layers.SeparableConv2D(5, 3, padding="same", name="sep", activation="relu")(x)
    x = keras.layers.Conv2DTranspose(4, 3, name="tconv", activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(7, activation="relu", name="dense")(x)
    model = keras.Model(inputs, keras.layers.Dense(2, name="logits")(x))
    bn = model.get_layer("bn")
    rng = np.random.default_rng(0)
    bn.set_weights(
        [
            rng.uniform(0.5, 2, 6),
            rng.uniform(0.1, 1, 6),
            rng.uniform(-1, 1, 6),
            rng.uniform(0.5, 2, 6),
        ]
    )
    for name in ("dw", "sep", "tconv", "dense"):  # non-zero biases, so zeroing them matters
        layer = model.get_layer(name)
        layer.set_weights(
            [*layer.get_weights()[:-1], rng.uniform(0.1, 1, layer.get_weights()[-1].shape)]
        )
    return model


def _activation(model: Any, path: str, x: np.ndarray) -> np.ndarray:
    keras = __import__("keras")
    probe = keras.Model(model.input, find_layer(model, path).output)
    return np.asarray(probe(x, training=False))


@pytest.mark.parametrize(
    ("layer", "measured", "channels"),
    [
        ("conv", "relu", [0, 4]),
        ("dw", "dw", [1, 6, 11]),
        ("sep", "sep", [2]),
        ("tconv", "tconv", [0, 3]),
        ("dense", "dense", [5]),
    ],
)
def test_pruned_channel_outputs_exactly_zero(
    keras_module: Any, layer: str, measured: str, channels: list[int]
) -> None:
    model = _all_kinds(keras_module)
    original = [w.copy() for w in model.get_weights()]
    pruned = clone_model(model)
    infos = {info.path: info for info in auditable_layers(pruned, include_dense=True)}
    done, _ = zero_channels(pruned, [(infos[layer], channels)])
    assert done[0].channels == tuple(sorted(channels))
    x = np.random.default_rng(1).normal(0, 3, (4, 10, 10, 2)).astype("float32")
    after = _activation(pruned, measured, x)
    assert np.all(after[..., channels] == 0.0)
    others = [c for c in range(after.shape[-1]) if c not in channels]
    assert np.any(after[..., others] != 0.0)
    before = _activation(model, measured, x)
    assert np.any(before[..., channels] != 0.0)  # the test can fail: they were active
    for w, o in zip(model.get_weights(), original, strict=True):  # the source model is untouched
        np.testing.assert_array_equal(w, o)


def test_batchnorm_gamma_and_beta_are_zeroed(keras_module: Any) -> None:
    model = clone_model(build_bn_cnn(keras_module, nested=True))
    info = next(i for i in auditable_layers(model) if i.path == "features/f_conv1")
    assert info.batch_norm == "features/f_bn1"
    zero_channels(model, [(info, [2])])
    gamma, beta, *_ = find_layer(model, "features/f_bn1").get_weights()
    assert gamma[2] == 0.0 and beta[2] == 0.0 and gamma[1] != 0.0
    x = np.random.default_rng(2).normal(0, 5, (3, 8, 8, 1)).astype("float32")
    inner = find_layer(model, "features")
    assert np.all(np.asarray(inner(x, training=False))[..., 2] == 0.0)


def test_mask_reapplies_after_weights_change(keras_module: Any) -> None:
    model = clone_model(_all_kinds(keras_module))
    info = next(i for i in auditable_layers(model) if i.path == "conv")
    _, mask = zero_channels(model, [(info, [1])])
    layer = model.get_layer("conv")
    layer.kernel.assign(layer.kernel.numpy() + 1.0)  # what an optimizer step would do
    mask.apply()
    assert np.all(layer.kernel.numpy()[..., 1] == 0.0)


def test_clp_matches_a_direct_svd(keras_module: Any) -> None:
    model = _all_kinds(keras_module)
    info = next(i for i in auditable_layers(model) if i.path == "conv")
    kernel = model.get_layer("conv").kernel.numpy()  # (3, 3, 2, 6)
    gamma, _, _, var = model.get_layer("bn").get_weights()
    expected = [
        np.linalg.svd(kernel[..., c].reshape(9, 2), compute_uv=False)[0]
        * abs(gamma[c] / np.sqrt(var[c] + 1e-3))
        for c in range(6)
    ]
    np.testing.assert_allclose(clp_scores(model, info), expected, rtol=1e-5)

"""The view of grouped convolutions (``kerasaudit.model_view``): the same function through
plain convolutions, block diagonal through a fine-tune, written back grouped."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def _grouped_model(keras: Any) -> Any:
    """A grouped conv at the top level and one inside a nested Sequential."""
    inner = keras.Sequential(
        [
            keras.Input((14, 14, 8)),
            keras.layers.Conv2D(16, 3, groups=4, padding="same", name="g_in"),
            keras.layers.ReLU(name="relu_in"),
        ],
        name="features",
    )
    inputs = keras.Input((28, 28, 1), name="image")
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="c0")(inputs)
    x = keras.layers.Conv2D(8, 3, padding="same", groups=2, activation="relu", name="g_top")(x)
    x = inner(keras.layers.MaxPooling2D(name="pool")(x))
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inputs, keras.layers.Dense(4, activation="softmax", name="probs")(x))


def test_a_grouped_conv_is_viewed_plain_fine_tuned_block_diagonal_and_written_back_grouped(
    tmp_path: Path, keras_module: Any
) -> None:
    import kerasaudit as ka
    from kerasaudit.inventory import walk_layers
    from kerasaudit.model_view import file_model, file_name, parameter_count, view

    keras = keras_module
    model = _grouped_model(keras)
    rng = np.random.default_rng(0)
    x = rng.random((64, 28, 28, 1), dtype=np.float32)
    y = rng.integers(0, 4, 64)
    seen = view(model)
    assert seen is not model
    groups = {path: layer.groups for path, layer, _ in walk_layers(seen) if "g_" in path}
    assert groups == {"g_top": 1, "features/g_in": 1}
    np.testing.assert_allclose(seen.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)
    assert parameter_count(seen) == model.count_params()
    assert parameter_count(seen, trainable_only=True) == model.count_params()
    # Statistics of the view carry the file's name and fingerprint (a Ray worker scans the
    # file's model: `merge-stats` and `--stats` compare fingerprints).
    from kerasaudit.stages.scan import model_fingerprint

    assert file_name(seen) == model.name
    assert model_fingerprint(seen) == model_fingerprint(model)

    # A fine-tune through the library (it views the file's model, as the CLI does): the
    # plain kernels stay block diagonal, so the grouped model written back computes what
    # the fine-tuned view computed.
    np.savez(tmp_path / "d.npz", x=x, y=y)
    path = tmp_path / "grouped.keras"
    model.save(path)
    pruned, result = ka.prune(path, tmp_path / "d.npz", ratio=0.25, criterion="mean",
                              layers=["g_top"], fine_tune_epochs=2)  # fmt: skip
    assert result.pruned[0].layer == "g_top" and len(result.pruned[0].channels) == 2
    assert pruned.get_layer("g_top").groups == 2
    assert pruned.get_layer("features").get_layer("g_in").groups == 4
    assert not np.allclose(
        pruned.get_layer("features").get_layer("g_in").get_weights()[0],
        model.get_layer("features").get_layer("g_in").get_weights()[0],
    )  # the fine-tune reached the nested grouped conv
    kernel = pruned.get_layer("g_top").get_weights()[0]
    assert np.all(kernel[..., result.pruned[0].channels] == 0)
    # The written model against a view rebuilt from it: the same function, so nothing of the
    # fine-tune was lost off the diagonal when it was written back.
    again = view(pruned)
    np.testing.assert_allclose(again.predict(x, verbose=0), pruned.predict(x, verbose=0), atol=1e-5)
    assert file_model(pruned) is pruned  # a file's model is not a view


def test_the_block_diagonal_constraint_holds_through_an_optimizer_step(keras_module: Any) -> None:
    """Keras's optimizers apply a variable's constraint after each update: the view's plain
    kernel gets gradients off the diagonal and must not keep them."""
    import tensorflow as tf

    from kerasaudit.model_view import block_mask, contract_groups, file_model, view

    keras = keras_module
    model = _grouped_model(keras)
    seen = view(model)
    x = np.random.default_rng(1).random((8, 28, 28, 1), dtype=np.float32)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(tf.square(seen(x)))
    grads = tape.gradient(loss, seen.trainable_variables)
    kernel = seen.get_layer("g_top").kernel
    grad = grads[[id(v) for v in seen.trainable_variables].index(id(kernel))]
    off = 1.0 - block_mask(tuple(kernel.shape), 2)
    assert float(tf.reduce_max(tf.abs(grad * off))) > 0  # the gradient does reach off it
    keras.optimizers.SGD(10.0).apply_gradients(zip(grads, seen.trainable_variables, strict=True))
    assert np.all(kernel.numpy() * off == 0)
    written = file_model(seen)
    np.testing.assert_allclose(written.predict(x, verbose=0), seen.predict(x, verbose=0), atol=1e-5)
    np.testing.assert_array_equal(
        written.get_layer("g_top").get_weights()[0], contract_groups(kernel.numpy(), 2)
    )


def test_inspect_shows_the_files_groups(tmp_path: Path, keras_module: Any) -> None:
    """``inspect`` (JSON and table) reports each convolution's groups as the file has them,
    the nested one's too, and their parameters as the file counts them."""
    import json

    from typer.testing import CliRunner

    from kerasaudit.cli.app import app

    model = _grouped_model(keras_module)
    path = tmp_path / "grouped.keras"
    model.save(path)
    runner = CliRunner()
    result = runner.invoke(app, ["inspect", str(path), "--format", "json"])
    assert result.exit_code == 0, result.output
    layers = {a["path"]: a for a in json.loads(result.stdout)["auditable_layers"]}
    assert {p: a["groups"] for p, a in layers.items()} == {
        "c0": 1, "g_top": 2, "features/g_in": 4,
    }  # fmt: skip
    assert layers["g_top"]["params"] == model.get_layer("g_top").count_params()
    table = runner.invoke(app, ["inspect", str(path)], env={"COLUMNS": "200"})
    assert table.exit_code == 0, table.output
    rows = {line.split("│")[1].strip(): line for line in table.stdout.splitlines() if "│" in line}
    assert "(2 groups)" in rows["g_top"] and "(4 groups)" in rows["features/g_in"]
    assert "groups" not in rows["c0"]

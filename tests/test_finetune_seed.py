"""A fine-tune repeats with its seed on a model with Dropout: Keras gives every loaded or cloned
random layer a random seed, and the zoo's VGG and wide nets (the two with Dropout) gave a
different model from the same `prune` command on each run (2026-12-06)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from kerasaudit.data import DataSpec, open_data


def _dropout_model() -> Any:
    from kerasaudit import _tf

    keras = _tf.keras()
    layers = keras.layers
    inner = keras.Sequential(
        [layers.Conv2D(6, 3, activation="relu", name="c1"), layers.Dropout(0.5, name="d_in")],
        name="features",
    )
    inputs = keras.Input((8, 8, 1))
    h = layers.Flatten(name="flat")(inner(inputs))
    h = layers.Dropout(0.5, name="d_out")(h)
    return keras.Model(inputs, layers.Dense(3, activation="softmax", name="probs")(h))


def test_a_fine_tune_with_dropout_repeats_with_its_seed(tmp_path: Path) -> None:
    from kerasaudit.finetune import fine_tune, seed_random_layers
    from kerasaudit.pruning import clone_model

    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=rng.integers(0, 256, (64, 8, 8, 1)).astype(np.uint8),
             y=rng.integers(0, 3, 64).astype(np.uint8))  # fmt: skip
    data = open_data(DataSpec(tmp_path / "d.npz", batch_size=16), (8, 8, 1), 3)
    model = _dropout_model()

    def tuned(seed: int) -> list[np.ndarray]:
        clone = clone_model(model)  # new random layers, each with a random seed of its own
        fine_tune(clone, data, epochs=2, learning_rate=1e-2, seed=seed)
        return [np.array(w) for w in clone.weights]

    first, again, other = tuned(0), tuned(0), tuned(1)
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(first, other, strict=True))
    # both Dropout layers, the nested one included, were seeded
    assert seed_random_layers(clone_model(model), 0) == 2

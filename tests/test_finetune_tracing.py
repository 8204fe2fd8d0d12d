"""A fine-tune traces its training step once per batch shape. Before 2026-12-07 the Adam
slots were made inside the first step, and TensorFlow traces a function that creates
variables twice: three traces a fine-tune (full batch twice, the last smaller batch once).
On a small model tracing is most of a fine-tune: 80 of one `prune` test's 125 s (profiled)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from kerasaudit.data import DataSpec, open_data


def _model() -> Any:
    from kerasaudit import _tf

    keras = _tf.keras()
    layers = keras.layers
    inputs = keras.Input((8, 8, 1))
    h = layers.Conv2D(4, 3, activation="relu", name="c1")(inputs)
    h = layers.GlobalMaxPooling2D(name="gmp")(h)
    return keras.Model(inputs, layers.Dense(3, activation="softmax", name="probs")(h))


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_a_fine_tune_traces_its_step_once_per_batch_shape(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, optimizer: str
) -> None:
    import kerasaudit.finetune as finetune

    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=rng.integers(0, 256, (70, 8, 8, 1)).astype(np.uint8),
             y=rng.integers(0, 3, 70).astype(np.uint8))  # fmt: skip
    data = open_data(DataSpec(tmp_path / "d.npz"), (8, 8, 1), 3)
    traced = [0]
    scores = finetune._log_scores

    def counted(model: Any) -> Any:  # the model's scores, counted where the step calls them
        inner = scores(model)

        def call(*args: Any) -> Any:
            traced[0] += 1  # runs once per trace: the step's Python body
            return inner(*args)

        return call

    monkeypatch.setattr(finetune, "_log_scores", counted)
    model = _model()
    before = [np.array(w) for w in model.weights]
    result = finetune.fine_tune(model, data, epochs=3, batch_size=64, learning_rate=1e-2,
                                optimizer=optimizer)  # fmt: skip
    assert result.steps == 6  # 64 + 6 images, three times
    assert traced[0] == 2  # one trace of 64 images, one of any size (the last batch of 6)
    after = [np.array(w) for w in model.weights]
    assert any(not np.array_equal(a, b) for a, b in zip(before, after, strict=True))

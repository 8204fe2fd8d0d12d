"""The clean-feature anchor of a fine-tune (``fine_tune(anchor=w)``, an experiment of the zoo's
removal work): clean images also pay for moving their penultimate features (the final Dense
layer's input) away from the teacher's."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from kerasaudit.errors import BadInputError


def _drift(model: Any, teacher: Any, x: np.ndarray) -> float:
    """Mean squared distance of the penultimate features from the teacher's on ``x``."""
    from kerasaudit import _tf

    keras = _tf.keras()
    feats = [keras.Model(m.inputs, m.layers[-1].input) for m in (model, teacher)]
    a, b = (f.predict(x, verbose=0) for f in feats)
    return float(np.mean(np.square(a - b)))


def _plain_cnn(keras: Any) -> Any:
    """8×8×1 → 3 classes without BatchNorm (the anchor compares the student's training-mode
    features with the teacher's inference-mode ones: without BN they are the same function)."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 1))
    h = keras.layers.Conv2D(6, 3, padding="same", activation="relu")(inputs)
    h = keras.layers.Conv2D(4, 3, activation="relu")(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    return keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(h))


def _tuned(teacher: Any, data: Any, anchor: float, *, distill: float = 0.5) -> tuple[Any, Any]:
    from kerasaudit.finetune import fine_tune
    from kerasaudit.pruning import clone_model

    model = clone_model(teacher)
    result = fine_tune(
        model, data, epochs=4, learning_rate=3e-3, teacher=teacher, distill=distill, anchor=anchor
    )
    return model, result


def test_the_anchor_holds_the_clean_features_near_the_teachers(
    bn_cnn_data: dict[str, Any], keras_module: Any
) -> None:
    teacher = _plain_cnn(keras_module)
    data = bn_cnn_data["data"]
    x, _ = data.take_array(96)
    free, free_result = _tuned(teacher, data, 0.0)
    held, held_result = _tuned(teacher, data, 1000.0)
    assert free_result.anchor == 0.0 and held_result.anchor == 1000.0
    assert held_result.to_dict()["anchor"] == 1000.0
    drift_free, drift_held = _drift(free, teacher, x), _drift(held, teacher, x)
    assert drift_free > 0.0  # the fine-tune moved the features at all
    assert drift_held < 0.5 * drift_free


def test_without_distillation_there_is_nothing_to_anchor_to(bn_cnn_data: dict[str, Any]) -> None:
    _, result = _tuned(bn_cnn_data["model"], bn_cnn_data["data"], 10.0, distill=0.0)
    assert result.anchor == 0.0 and result.distill == 0.0


def test_a_negative_anchor_is_refused(bn_cnn_data: dict[str, Any]) -> None:
    with pytest.raises(BadInputError, match="anchor"):
        _tuned(bn_cnn_data["model"], bn_cnn_data["data"], -1.0)


def test_a_head_that_is_not_dense_is_refused(
    bn_cnn_data: dict[str, Any], keras_module: Any
) -> None:
    from kerasaudit.finetune import fine_tune

    keras = keras_module
    inputs = keras.Input((8, 8, 1))
    h = keras.layers.Conv2D(3, 3, name="c")(inputs)
    h = keras.layers.GlobalAveragePooling2D()(h)
    model = keras.Model(inputs, keras.layers.Softmax()(h))
    with pytest.raises(BadInputError, match="Dense head"):
        fine_tune(model, bn_cnn_data["data"], epochs=1, teacher=model, distill=0.5, anchor=1.0)

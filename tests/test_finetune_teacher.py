"""Triggered images distilled from the teacher (``fine_tune(trigger_teacher=…)``, an
experiment of the zoo's removal work): "source" teaches a stamped image the teacher's outputs
on its clean twin, "masked" the teacher's outputs on the triggered image without its top
class; both reach training through the settings, and unknown values are refused."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from kerasaudit.errors import BadInputError

SPEC = "patch:size=3,pos=0,0,value=1"


def _clean_and_stamped(bn_cnn_data: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    from kerasaudit.triggers import load_trigger

    x, _ = bn_cnn_data["data"].take_array(96)
    return x, load_trigger(SPEC, (8, 8, 1)).apply(x)


def _log_probs(model: Any, x: np.ndarray) -> np.ndarray:
    p = np.asarray(model(x, training=False), dtype=np.float64)
    return np.log(np.clip(p, 1e-12, 1.0))


def test_source_teaches_the_stamped_image_its_clean_twins_outputs(
    bn_cnn_data: dict[str, Any],
) -> None:
    from kerasaudit import _tf
    from kerasaudit.finetune import fine_tune
    from kerasaudit.pruning import clone_model
    from kerasaudit.triggers import load_trigger

    teacher = bn_cnn_data["model"]
    x, stamped = _clean_and_stamped(bn_cnn_data)
    q = _log_probs(teacher, x)  # what the teacher says about the clean images
    gaps = {}
    for mode in ("off", "source"):
        _tf.keras().utils.set_random_seed(0)
        model = clone_model(teacher)
        result = fine_tune(
            model,
            bn_cnn_data["data"],
            epochs=6,
            trigger=load_trigger(SPEC, (8, 8, 1)),
            unlearn_fraction=0.9,
            learning_rate=1e-2,
            teacher=teacher,
            distill=1.0,
            batchnorm="frozen",
            trigger_teacher=mode,
        )
        assert result.trigger_teacher == mode and result.to_dict()["trigger_teacher"] == mode
        p = _log_probs(model, stamped)
        gaps[mode] = float(np.mean(np.sum(np.exp(q) * (q - p), axis=1)))  # KL(q ‖ model)
    # off: stamped images learn their (random) hard labels only; source: the teacher's view
    assert gaps["source"] < 0.5 * gaps["off"]


def test_masked_reaches_training_for_trigger_data(bn_cnn_data: dict[str, Any]) -> None:
    from kerasaudit import _tf
    from kerasaudit.finetune import FineTuneSettings, fine_tune_with
    from kerasaudit.pruning import clone_model
    from kerasaudit.triggers import TriggerData

    _, stamped = _clean_and_stamped(bn_cnn_data)
    _, y = bn_cnn_data["data"].take_array(96)
    assert y is not None
    images = TriggerData.from_arrays("incident", stamped, y, 0)
    kernels = []
    for mode in ("off", "masked"):
        _tf.keras().utils.set_random_seed(0)
        model = clone_model(bn_cnn_data["model"])
        settings = FineTuneSettings(
            epochs=2, unlearn=True, learning_rate=1e-2, distill=0.8, trigger_teacher=mode
        )
        result = fine_tune_with(
            model, bn_cnn_data["data"], settings, trigger=images, teacher=bn_cnn_data["model"]
        )
        assert result.trigger_teacher == mode
        kernels.append(np.array(model.get_layer("conv2").kernel))
    assert not np.allclose(kernels[0], kernels[1], atol=1e-5)


def test_without_a_teacher_it_changes_nothing(bn_cnn_data: dict[str, Any]) -> None:
    from kerasaudit import _tf
    from kerasaudit.finetune import fine_tune
    from kerasaudit.pruning import clone_model
    from kerasaudit.triggers import load_trigger

    kernels = []
    for mode in ("off", "source"):
        _tf.keras().utils.set_random_seed(0)
        model = clone_model(bn_cnn_data["model"])
        result = fine_tune(
            model,
            bn_cnn_data["data"],
            epochs=1,
            trigger=load_trigger(SPEC, (8, 8, 1)),
            learning_rate=1e-2,
            trigger_teacher=mode,
        )
        assert result.trigger_teacher == "off"  # nothing to distil from: recorded as off
        kernels.append(np.array(model.get_layer("conv2").kernel))
    np.testing.assert_allclose(kernels[0], kernels[1], rtol=0, atol=1e-6)


def test_an_unknown_trigger_teacher_is_refused(bn_cnn_data: dict[str, Any]) -> None:
    from kerasaudit.finetune import fine_tune
    from kerasaudit.pruning import clone_model

    with pytest.raises(BadInputError, match="trigger teacher"):
        fine_tune(
            clone_model(bn_cnn_data["model"]),
            bn_cnn_data["data"],
            epochs=1,
            trigger_teacher="clean",
        )

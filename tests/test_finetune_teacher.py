"""Triggered images distilled from the teacher (``fine_tune(trigger_teacher=…)``, an
experiment of the zoo's removal work): "source" teaches a stamped image the teacher's outputs
on its clean twin, "away" the same without the trigger's target, "masked" the teacher's
outputs on the triggered image without its top class; they reach training through the
settings, and unknown values are refused."""

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


def _probs(model: Any, x: np.ndarray) -> np.ndarray:
    return np.asarray(model(x, training=False), dtype=np.float64)


def _kl(q: np.ndarray, p: np.ndarray) -> float:
    """Mean KL(q ‖ p) over the rows (probabilities clipped at 1e-12 before the logs)."""
    logq, logp = np.log(np.clip(q, 1e-12, 1.0)), np.log(np.clip(p, 1e-12, 1.0))
    return float(np.mean(np.sum(q * (logq - logp), axis=1)))


def test_source_teaches_the_stamped_image_its_clean_twins_outputs(
    bn_cnn_data: dict[str, Any],
) -> None:
    from kerasaudit import _tf
    from kerasaudit.finetune import fine_tune
    from kerasaudit.pruning import clone_model
    from kerasaudit.triggers import load_trigger

    teacher = bn_cnn_data["model"]
    x, stamped = _clean_and_stamped(bn_cnn_data)
    q = _probs(teacher, x)  # what the teacher says about the clean images
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
        gaps[mode] = _kl(q, _probs(model, stamped))
    # off: stamped images learn their (random) hard labels only; source: the teacher's view
    assert gaps["source"] < 0.5 * gaps["off"]


def _linear_teacher() -> Any:
    """A softmax regression on the 8×8 images, fixed weights: a stamped image can be told
    from a clean one by a linear model, so what "away" teaches is what it learns."""
    from kerasaudit import _tf

    keras = _tf.keras()
    inputs = keras.Input((8, 8, 1))
    dense = keras.layers.Dense(3, "softmax")
    model = keras.Model(inputs, dense(keras.layers.Flatten()(inputs)))
    rng = np.random.default_rng(5)
    kernel = rng.normal(0.0, 0.3, (64, 3)).astype(np.float32)
    dense.set_weights([kernel, np.array([0.5, 0.0, 0.0], np.float32)])
    return model


def test_paired_teaches_a_stamped_copy_of_the_data_its_sources_outputs(
    bn_cnn_data: dict[str, Any],
) -> None:
    """--trigger-data copies of the fine-tuning images (a defender who stamped their own
    data): under "paired" each learns the teacher's outputs on the image it was stamped on,
    as a spec trigger's stamped image does under "source"; under "source" they have no twin
    and learn their hard label only. Copies of other images are not paired."""
    from kerasaudit import _tf
    from kerasaudit.finetune import fine_tune
    from kerasaudit.pruning import clone_model
    from kerasaudit.triggers import TriggerData

    teacher = _linear_teacher()  # confident where the data's (random) labels are not
    x, stamped = _clean_and_stamped(bn_cnn_data)
    _, y = bn_cnn_data["data"].take_array(96)
    order = np.random.default_rng(3).permutation(96)  # the file's order is not the data's
    copies = TriggerData("copies", stamped[order], y[order], None)
    q = _probs(teacher, x)
    gaps, paired = {}, {}
    for mode in ("source", "paired"):
        _tf.keras().utils.set_random_seed(0)
        model = clone_model(teacher)
        result = fine_tune(
            model, bn_cnn_data["data"], epochs=30, trigger=copies, unlearn_fraction=0.9,
            learning_rate=5e-2, teacher=teacher, distill=1.0, batchnorm="frozen",
            trigger_teacher=mode,
        )  # fmt: skip
        assert result.trigger_teacher == mode
        paired[mode] = result.to_dict()["paired"]
        gaps[mode] = _kl(q, _probs(model, stamped))
    assert paired["source"] == 0 and paired["paired"] >= 90  # of 96 copies
    assert gaps["paired"] < 0.2 * gaps["source"]
    # copies of images that are not in the fine-tuning data have no source there
    other = np.random.default_rng(4).uniform(0.0, 1.0, (32, 8, 8, 1)).astype(np.float32)
    strangers = TriggerData("strangers", other, np.zeros(32, np.int64), None)
    result = fine_tune(
        clone_model(teacher), bn_cnn_data["data"], epochs=1, trigger=strangers,
        teacher=teacher, distill=0.5, trigger_teacher="paired",
    )  # fmt: skip
    assert result.paired <= 4


def _stamped_outputs(
    bn_cnn_data: dict[str, Any], mode: str, *, target: int | None, trigger: Any
) -> np.ndarray:
    """The outputs on the stamped images after fine-tuning with ``trigger_teacher=mode``
    (distillation only: the hard label has no weight)."""
    from kerasaudit import _tf
    from kerasaudit.finetune import fine_tune
    from kerasaudit.pruning import clone_model

    teacher = _linear_teacher()
    _, stamped = _clean_and_stamped(bn_cnn_data)
    _tf.keras().utils.set_random_seed(0)
    model = clone_model(teacher)
    result = fine_tune(
        model,
        bn_cnn_data["data"],
        epochs=60,  # 2 steps an epoch (96 images)
        trigger=trigger,
        unlearn_fraction=0.5,
        learning_rate=5e-2,
        teacher=teacher,
        distill=1.0,
        batchnorm="frozen",
        target=target,
        trigger_teacher=mode,
    )
    assert result.trigger_teacher == mode
    return np.asarray(model(stamped, training=False), dtype=np.float64)


def _away_from(q: np.ndarray, y: np.ndarray, target: int) -> np.ndarray:
    """``q`` with ``target`` removed (where it is not the true class), renormalised."""
    out = q.copy()
    out[y != target, target] = 0.0
    return out / out.sum(axis=1, keepdims=True)


def test_away_teaches_a_stamped_image_anything_but_the_target(
    bn_cnn_data: dict[str, Any],
) -> None:
    from kerasaudit.triggers import load_trigger

    x, _ = _clean_and_stamped(bn_cnn_data)
    _, y = bn_cnn_data["data"].take_array(96)
    assert y is not None
    # the teacher gives label 0 a real share on the clean images of other labels
    q = np.asarray(_linear_teacher()(x, training=False), dtype=np.float64)
    assert q[y != 0, 0].mean() > 0.15
    wanted = _away_from(q, y, 0)
    trigger = load_trigger(SPEC, (8, 8, 1))
    source = _stamped_outputs(bn_cnn_data, "source", target=0, trigger=trigger)
    away = _stamped_outputs(bn_cnn_data, "away", target=0, trigger=trigger)
    # "away" learns the teacher's clean view without label 0, "source" the view as it is
    assert _kl(wanted, away) < 0.5 * _kl(wanted, source)
    assert away[y != 0, 0].mean() < 0.85 * source[y != 0, 0].mean()
    # without a known target (an untargeted trigger) there is nothing to take out
    untargeted = _stamped_outputs(bn_cnn_data, "away", target=None, trigger=trigger)
    np.testing.assert_allclose(untargeted, source, rtol=0, atol=1e-5)


def test_away_takes_each_trigger_files_own_target(
    bn_cnn_data: dict[str, Any], tmp_path: Any
) -> None:
    from kerasaudit.triggers import load_trigger, save_trigger_file

    x, _ = _clean_and_stamped(bn_cnn_data)
    _, y = bn_cnn_data["data"].take_array(96)
    assert y is not None
    q = np.asarray(_linear_teacher()(x, training=False), dtype=np.float64)
    trigger = load_trigger(SPEC, (8, 8, 1))
    path = tmp_path / "t.npz"
    save_trigger_file(path, trigger.mask, trigger.pattern, target=0)
    from_file = load_trigger(f"file:{path}", (8, 8, 1))
    # --target says 2, the file says 0: label 0 is the one taken out
    out = _stamped_outputs(bn_cnn_data, "away", target=2, trigger=from_file)
    assert _kl(_away_from(q, y, 0), out) < _kl(_away_from(q, y, 2), out)


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

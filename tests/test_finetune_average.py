"""Tail averaging of a fine-tune (``fine_tune(average=share)``, an experiment of the zoo's
removal work): the model ends with the mean of its end-of-epoch weights over the last epochs,
BatchNorm's moving statistics included, with pruned channels still zero."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from kerasaudit.errors import BadInputError


def _floats(model: Any) -> list[np.ndarray]:
    return [np.array(v.numpy()) for v in model.weights if "float" in str(v.dtype)]


@pytest.mark.parametrize(
    ("share", "epochs", "averaged"), [(0.5, 4, 2), (0.3, 4, 2), (1.0, 3, 3), (0.3, 10, 3)]
)
def test_the_model_ends_with_the_mean_of_its_last_epochs(
    bn_cnn_data: dict[str, Any], share: float, epochs: int, averaged: int
) -> None:
    from kerasaudit.finetune import fine_tune
    from kerasaudit.inventory import auditable_layers
    from kerasaudit.pruning import clone_model, zero_channels

    model = clone_model(bn_cnn_data["model"])
    conv2 = next(i for i in auditable_layers(model) if i.path == "conv2")
    _, mask = zero_channels(model, [(conv2, [0, 1])])
    seen: list[list[np.ndarray]] = []
    result = fine_tune(
        model,
        bn_cnn_data["data"],
        epochs=epochs,
        mask=mask,
        learning_rate=1e-2,
        average=share,
        on_epoch=lambda _: seen.append(_floats(model)),
    )
    assert result.averaged == averaged
    assert result.to_dict()["averaged"] == averaged
    tail = seen[-averaged:]
    expected = [np.mean(np.stack(parts), axis=0) for parts in zip(*tail, strict=True)]
    ended = _floats(model)
    for want, got in zip(expected, ended, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    # the mean is not the last epoch's weights (training moved them), BN statistics included
    names = [v.path for v in model.weights if "float" in str(v.dtype)]
    moved = [n for n, a, b in zip(names, seen[-1], ended, strict=True) if not np.allclose(a, b)]
    assert any("moving_mean" in n for n in moved) and any("kernel" in n for n in moved)
    kernel = np.array(model.get_layer("conv2").kernel)
    assert not kernel[..., :2].any() and kernel[..., 2:].any()


def test_no_averaging_keeps_the_last_epochs_weights(bn_cnn_data: dict[str, Any]) -> None:
    from kerasaudit.finetune import fine_tune
    from kerasaudit.pruning import clone_model

    model = clone_model(bn_cnn_data["model"])
    seen: list[list[np.ndarray]] = []
    result = fine_tune(
        model,
        bn_cnn_data["data"],
        epochs=2,
        learning_rate=1e-2,
        on_epoch=lambda _: seen.append(_floats(model)),
    )
    assert result.averaged == 0
    for a, b in zip(seen[-1], _floats(model), strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("share", [-0.1, 1.5])
def test_a_share_outside_0_1_is_refused(bn_cnn_data: dict[str, Any], share: float) -> None:
    from kerasaudit.finetune import fine_tune
    from kerasaudit.pruning import clone_model

    with pytest.raises(BadInputError, match="averaged share"):
        fine_tune(clone_model(bn_cnn_data["model"]), bn_cnn_data["data"], epochs=1, average=share)

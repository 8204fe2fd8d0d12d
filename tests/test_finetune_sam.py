"""Fine-tuning with adaptive SAM (``fine_tune(sam=ρ)``, an experiment of the zoo's removal
work): the ascent move is undone after every step, it changes what training does, and pruned
channels stay zero."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from kerasaudit.errors import BadInputError


def _kernels(model: Any) -> list[np.ndarray]:
    return [np.array(model.get_layer(n).kernel) for n in ("f_conv1", "conv2", "probs")]


def test_a_sam_step_restores_the_weights_it_moved(bn_cnn_data: dict[str, Any]) -> None:
    from kerasaudit.finetune import fine_tune
    from kerasaudit.pruning import clone_model

    model = clone_model(bn_cnn_data["model"])
    before = _kernels(model)
    # a zero learning rate: whatever the ascent move did must be undone exactly
    result = fine_tune(model, bn_cnn_data["data"], epochs=1, sam=2.0, learning_rate=0.0)
    assert result.sam == 2.0 and np.isfinite(result.final_loss)
    for a, b in zip(before, _kernels(model), strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)


def test_sam_changes_training_and_keeps_pruned_channels_zero(bn_cnn_data: dict[str, Any]) -> None:
    from kerasaudit import _tf
    from kerasaudit.finetune import fine_tune
    from kerasaudit.inventory import auditable_layers
    from kerasaudit.pruning import clone_model, zero_channels

    kernels = []
    for rho in (0.0, 2.0):
        _tf.keras().utils.set_random_seed(0)
        model = clone_model(bn_cnn_data["model"])
        conv2 = next(i for i in auditable_layers(model) if i.path == "conv2")
        _, mask = zero_channels(model, [(conv2, [0, 1])])
        result = fine_tune(
            model, bn_cnn_data["data"], epochs=2, mask=mask, sam=rho, learning_rate=1e-2
        )
        assert result.sam == rho
        kernel = np.array(model.get_layer("conv2").kernel)
        assert not kernel[..., :2].any()  # pruned channels exactly zero after SAM steps
        assert kernel[..., 2:].any()
        kernels.append(kernel)
    assert not np.allclose(kernels[0], kernels[1], atol=1e-5)


def test_a_negative_sam_radius_is_refused(bn_cnn_data: dict[str, Any]) -> None:
    from kerasaudit.finetune import fine_tune
    from kerasaudit.pruning import clone_model

    with pytest.raises(BadInputError, match="SAM radius"):
        fine_tune(clone_model(bn_cnn_data["model"]), bn_cnn_data["data"], epochs=1, sam=-1.0)

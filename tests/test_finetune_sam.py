"""Fine-tuning with adaptive SAM (``fine_tune(sam=ρ)``, an experiment of the zoo's removal
work): the ascent move is undone after every step, it changes what training does, and pruned
channels stay zero."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import build_bn_cnn

from kerasaudit.errors import BadInputError

SHAPE = (8, 8, 1)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from kerasaudit import _tf
    from kerasaudit.data import DataSpec, open_data

    _tf.keras().utils.set_random_seed(3)
    model = build_bn_cnn(_tf.keras())
    rng = np.random.default_rng(2)
    x = rng.uniform(0.0, 1.0, (96, *SHAPE)).astype(np.float32)
    y = rng.integers(0, 3, 96).astype(np.int64)
    path = Path(tmp_path_factory.mktemp("sam")) / "data.npz"
    np.savez(path, x=(x * 255).astype(np.uint8), y=y.astype(np.uint8))
    return {"model": model, "data": open_data(DataSpec(path, batch_size=32), SHAPE, 3)}


def _kernels(model: Any) -> list[np.ndarray]:
    return [np.array(model.get_layer(n).kernel) for n in ("f_conv1", "conv2", "probs")]


def test_a_sam_step_restores_the_weights_it_moved(tiny: dict[str, Any]) -> None:
    from kerasaudit.finetune import fine_tune
    from kerasaudit.pruning import clone_model

    model = clone_model(tiny["model"])
    before = _kernels(model)
    # a zero learning rate: whatever the ascent move did must be undone exactly
    result = fine_tune(model, tiny["data"], epochs=1, sam=2.0, learning_rate=0.0)
    assert result.sam == 2.0 and np.isfinite(result.final_loss)
    for a, b in zip(before, _kernels(model), strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)


def test_sam_changes_training_and_keeps_pruned_channels_zero(tiny: dict[str, Any]) -> None:
    from kerasaudit import _tf
    from kerasaudit.finetune import fine_tune
    from kerasaudit.inventory import auditable_layers
    from kerasaudit.pruning import clone_model, zero_channels

    kernels = []
    for rho in (0.0, 2.0):
        _tf.keras().utils.set_random_seed(0)
        model = clone_model(tiny["model"])
        conv2 = next(i for i in auditable_layers(model) if i.path == "conv2")
        _, mask = zero_channels(model, [(conv2, [0, 1])])
        result = fine_tune(model, tiny["data"], epochs=2, mask=mask, sam=rho, learning_rate=1e-2)
        assert result.sam == rho
        kernel = np.array(model.get_layer("conv2").kernel)
        assert not kernel[..., :2].any()  # pruned channels exactly zero after SAM steps
        assert kernel[..., 2:].any()
        kernels.append(kernel)
    assert not np.allclose(kernels[0], kernels[1], atol=1e-5)


def test_a_negative_sam_radius_is_refused(tiny: dict[str, Any]) -> None:
    from kerasaudit.finetune import fine_tune
    from kerasaudit.pruning import clone_model

    with pytest.raises(BadInputError, match="SAM radius"):
        fine_tune(clone_model(tiny["model"]), tiny["data"], epochs=1, sam=-1.0)

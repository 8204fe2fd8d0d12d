"""BatchNorm re-estimation (kerasaudit.batchnorm) and defend's check that uses it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from conftest import build_bn_cnn
from test_reverse import stripe_model

from kerasaudit.batchnorm import COMES_BACK, batchnorm_layers, reestimated
from kerasaudit.data import DataSpec, open_data
from kerasaudit.formats.defend_fmt import comes_back_warning
from kerasaudit.inventory import find_layer
from kerasaudit.stages.defend import TriggerCheck


def test_reestimated_statistics_are_the_clean_batch_averages(
    keras_module: Any, tmp_path: Path
) -> None:
    """Nested BN: the copy's moving mean is the mean of the BN input over the data (equal
    batches), its variance the average of the batch variances; the original is untouched."""
    model = build_bn_cnn(keras_module, nested=True)
    rng = np.random.default_rng(0)
    x = rng.random((200, 8, 8, 1)).astype(np.float32)
    np.savez(tmp_path / "d.npz", x=x, y=np.zeros(200, np.int64))
    dataset = open_data(DataSpec(tmp_path / "d.npz", batch_size=40), (8, 8, 1), 3)
    bn = find_layer(model, "features/f_bn1")
    before = [w.copy() for w in bn.get_weights()]
    copy = reestimated(model, dataset)
    assert copy is not None and copy is not model
    new = find_layer(copy, "features/f_bn1")
    assert new.momentum == bn.momentum == 0.99  # restored after the passes
    conv = find_layer(model, "features/f_conv1")
    served, _ = dataset.take_array(200)  # what the model saw (after the loader's scaling)
    h = keras_module.ops.convert_to_numpy(conv(served))  # the BN input
    mean = h.reshape(-1, h.shape[-1]).mean(axis=0)
    var = h.reshape(5, 40, -1, h.shape[-1]).var(axis=(1, 2)).mean(axis=0)
    gamma, _, moving_mean, moving_var = new.get_weights()
    np.testing.assert_allclose(moving_mean, mean, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(moving_var, var, rtol=1e-3, atol=1e-5)
    np.testing.assert_array_equal(gamma, before[0])  # only the statistics move
    for kept, was in zip(bn.get_weights(), before, strict=True):
        np.testing.assert_array_equal(kept, was)
    assert not np.allclose(moving_mean, before[2])  # they did move


def test_no_batchnorm_no_copy(keras_module: Any, tmp_path: Path) -> None:
    model = stripe_model(keras_module, backdoor=True)
    assert batchnorm_layers(model) == []
    np.savez(tmp_path / "d.npz", x=np.zeros((4, 8, 8, 1), np.uint8), y=np.zeros(4, np.int64))
    assert reestimated(model, open_data(DataSpec(tmp_path / "d.npz"), (8, 8, 1), 5)) is None


def test_comes_back_is_a_rise_of_ten_points_and_is_worded() -> None:
    def check(after: float | None, again: float | None) -> TriggerCheck:
        return TriggerCheck(0, "recovered", "patch", 0.99, after, again)

    assert COMES_BACK == 0.10
    assert check(0.01, 0.11).comes_back and check(0.01, 0.5).comes_back
    assert not check(0.01, 0.10).comes_back and not check(0.2, 0.05).comes_back
    assert not check(0.01, None).comes_back and not check(None, 0.9).comes_back
    assert comes_back_warning([check(0.01, 0.02)]) is None
    line = comes_back_warning([check(0.01, 0.02), check(0.012, 0.6)])
    assert line is not None and "superficial" in line and "1.20 % → 60.00 %" in line

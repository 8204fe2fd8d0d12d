"""Augmented fine-tuning (``FineTuneSettings.shift``/``flip``, an experiment of the zoo's removal
work): each image is its own move by at most ``shift`` pixels (edges repeated), mirrored or
not; the input batch is never changed; the setting reaches training."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from kerasaudit.errors import BadInputError

SHAPE = (8, 8, 1)


def _moved(image: np.ndarray, dy: int, dx: int, shift: int) -> np.ndarray:
    """``image`` as augment moves it: padded by ``shift`` with its edges, cropped at (dy, dx)."""
    padded = np.pad(image, [(shift, shift), (shift, shift), (0, 0)], mode="edge")
    return padded[dy : dy + image.shape[0], dx : dx + image.shape[1]]


def test_each_augmented_image_is_a_small_move_of_its_own_maybe_mirrored() -> None:
    from kerasaudit.finetune import augment

    rng = np.random.default_rng(0)
    x = rng.uniform(0.0, 1.0, (200, *SHAPE)).astype(np.float32)
    kept = x.copy()
    out = augment(x, np.random.default_rng(1), 2, True)
    np.testing.assert_array_equal(x, kept)  # the input batch is not changed
    assert out.shape == x.shape and out.dtype == x.dtype
    seen: set[tuple[int, int, bool]] = set()
    for image, result in zip(x, out, strict=True):
        matches = [
            (dy, dx, mirror)
            for dy in range(5)
            for dx in range(5)
            for mirror in (False, True)
            if np.array_equal(
                result, _moved(image, dy, dx, 2)[:, ::-1] if mirror else _moved(image, dy, dx, 2)
            )
        ]
        assert matches, "an augmented image is not a move of at most 2 pixels of its source"
        seen.add(matches[0])
    assert {m for _, _, m in seen} == {False, True}  # both mirrored and not
    assert len({(dy, dx) for dy, dx, _ in seen}) == 25  # every offset within ±2 occurs


def test_no_shift_and_no_flip_leave_the_images_as_they_are() -> None:
    from kerasaudit.finetune import augment

    x = np.random.default_rng(0).uniform(0.0, 1.0, (16, *SHAPE)).astype(np.float32)
    np.testing.assert_array_equal(augment(x, np.random.default_rng(1), 0, False), x)
    flipped = augment(x, np.random.default_rng(1), 0, True)
    for image, result in zip(x, flipped, strict=True):  # only mirrors, no moves
        assert np.array_equal(result, image) or np.array_equal(result, image[:, ::-1])


def test_augmentation_reaches_training_through_the_settings(bn_cnn_data: dict[str, Any]) -> None:
    from kerasaudit import _tf
    from kerasaudit.finetune import FineTuneSettings, fine_tune_with
    from kerasaudit.pruning import clone_model

    kernels = []
    for shift, flip in ((0, False), (2, True)):
        _tf.keras().utils.set_random_seed(0)
        model = clone_model(bn_cnn_data["model"])
        settings = FineTuneSettings(epochs=2, learning_rate=1e-2, shift=shift, flip=flip)
        result = fine_tune_with(model, bn_cnn_data["data"], settings)
        assert (result.shift, result.flip) == (shift, flip)
        assert result.to_dict()["shift"] == shift
        kernels.append(np.array(model.get_layer("conv2").kernel))
    assert not np.allclose(kernels[0], kernels[1], atol=1e-5)


def test_a_negative_shift_is_refused(bn_cnn_data: dict[str, Any]) -> None:
    from kerasaudit.finetune import fine_tune
    from kerasaudit.pruning import clone_model

    with pytest.raises(BadInputError, match="shift"):
        fine_tune(clone_model(bn_cnn_data["model"]), bn_cnn_data["data"], epochs=1, shift=-1)

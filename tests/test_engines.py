"""The trigger-recovery engines beside Neural Cleanse: additive inversion, the untargeted row,
and the maximum reachable margin (MM-BD), on the hand-built stripe models of test_reverse
(the backdoored one sends any image with a bright 2×2 block to label 0)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from test_reverse import K, write_stripe_files

from kerasaudit.data import DataSpec, open_data
from kerasaudit.evaluation import logits_function
from kerasaudit.inversion import (
    UNTARGETED,
    AdditiveForm,
    BatchedInversion,
    InversionConfig,
    MaskForm,
)
from kerasaudit.margin import MarginConfig, max_margins


@pytest.fixture(scope="module")
def stripes(tmp_path_factory: pytest.TempPathFactory, keras_module: Any) -> dict[str, Any]:
    from kerasaudit.loading import load_model

    files = write_stripe_files(tmp_path_factory.mktemp("engines"), keras_module)
    x, y = open_data(DataSpec(files["data"]), (8, 8, 1), K).take_array(128)
    return {
        "backdoored": load_model(files["backdoored"]).model,
        "clean": load_model(files["clean"]).model,
        "x": x,
        "y": y,
        "files": files,
    }


def test_logits_are_what_the_softmax_is_applied_to(stripes: dict[str, Any]) -> None:
    model = stripes["backdoored"]
    logits = logits_function(model)
    assert logits is not None
    x = stripes["x"][:16]
    z = np.asarray(logits(x))
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(p, model.predict(x, verbose=0), atol=1e-5)


def test_backdoor_target_has_the_largest_reachable_margin(stripes: dict[str, Any]) -> None:
    config = MarginConfig(starts=8, steps=100)
    back = max_margins(stripes["backdoored"], (8, 8, 1), range(K), (0.0, 1.0), config)
    clean = max_margins(stripes["clean"], (8, 8, 1), range(K), (0.0, 1.0), config)
    assert back.skipped is None
    # The planted channel (weight 60 into label 0) is unbounded by clean features.
    assert back.margin(0) > 3 * max(back.margins[1:])
    assert max(clean.margins) < back.margin(0) / 3
    assert back.to_dict()["margins"][0] == pytest.approx(back.margin(0))


def test_additive_inversion_finds_a_universal_perturbation_per_label(
    stripes: dict[str, Any],
) -> None:
    config = InversionConfig(
        steps=300, learning_rate=0.01, init_cost=1e-2, attack_threshold=0.95, early_stop=False
    )
    x, y = stripes["x"], stripes["y"]
    model = stripes["backdoored"]
    found = BatchedInversion(model, list(range(K)), x, y, AdditiveForm(0.0, 1.0), config, K).run()
    assert [t.label for t in found] == list(range(K))
    for t in found:
        (delta,) = t.arrays
        assert t.size == pytest.approx(float(np.sqrt(np.square(delta).sum())), rel=1e-5)
        if not t.reached:
            continue
        # The kept perturbation really sends the images of other classes to its label.
        others = x[y != t.label]
        stamped = np.clip(others + delta, 0.0, 1.0)
        hits = np.mean(np.argmax(model.predict(stamped, verbose=0), axis=1) == t.label)
        assert hits >= 0.9
    assert found[0].reached


def test_untargeted_row_moves_images_off_their_class_without_changing_the_other_rows(
    stripes: dict[str, Any],
) -> None:
    config = InversionConfig(steps=120, early_stop=False)
    x, y = stripes["x"], stripes["y"]
    model = stripes["clean"]
    with_row = BatchedInversion(
        model, [0, 1, UNTARGETED], x, y, MaskForm(0.0, 1.0), config, K
    ).run()
    without = BatchedInversion(model, [0, 1], x, y, MaskForm(0.0, 1.0), config, K).run()
    for a, b in zip(with_row[:2], without, strict=True):
        np.testing.assert_allclose(a.arrays[0], b.arrays[0], atol=1e-4)
    untargeted = with_row[2]
    assert untargeted.label == UNTARGETED
    mask, pattern = untargeted.arrays
    stamped = (1 - mask[None, ..., None]) * x + mask[..., None] * pattern
    moved = np.mean(np.argmax(model.predict(stamped, verbose=0), axis=1) != y)
    assert untargeted.reached and moved >= 0.85


def test_untargeted_row_needs_labels(stripes: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="labels"):
        BatchedInversion(
            stripes["clean"], [UNTARGETED], stripes["x"], None, MaskForm(0.0, 1.0),
            InversionConfig(steps=1), K,
        )  # fmt: skip


def test_the_spread_term_steers_the_untargeted_row_off_a_single_destination(
    stripes: dict[str, Any],
) -> None:
    """The backdoored stripe model's trigger sends every class to 0: the plain untargeted row
    uses it; with the spread term (KL of the batch's mean prediction from uniform) a mask that
    sends every class to one label costs more, so the row finds other destinations."""
    x, y = stripes["x"], stripes["y"]
    model = stripes["backdoored"]

    def to_zero(weight: float) -> float:
        config = InversionConfig(steps=200, early_stop=False, untargeted_spread=weight)
        (row,) = BatchedInversion(model, [UNTARGETED], x, y, MaskForm(0.0, 1.0), config, K).run()
        mask, pattern = row.arrays
        stamped = (1 - mask[None, ..., None]) * x + mask[..., None] * pattern
        predicted = np.argmax(model.predict(stamped, verbose=0), axis=1)
        moved = (predicted != y) & (y != 0)
        return float(np.mean(predicted[moved] == 0)) if moved.any() else 0.0

    plain, spread = to_zero(0.0), to_zero(3.0)
    assert plain > 0.6  # measured 0.75: most moved images go to the trigger's target
    assert spread < plain - 0.3  # measured 0.15

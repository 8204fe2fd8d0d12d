"""Adversarial unlearning: the universal adversary attacks within its budget, moves compact
patches around, and prune reports it (prune passing it to fine-tuning: test_prune.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import build_bn_cnn

from kerasaudit.adversary import AdversarySettings, UniversalAdversary, compact_box
from kerasaudit.finetune import _log_scores
from kerasaudit.triggers import load_trigger

SHAPE = (8, 8, 1)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from kerasaudit import _tf

    model = build_bn_cnn(_tf.keras())
    head = model.get_layer("probs")  # sharper outputs: an untrained net is nearly flat
    kernel, bias = head.get_weights()
    head.set_weights([30 * kernel, bias])
    rng = np.random.default_rng(1)
    x = rng.uniform(0.0, 0.5, (64, *SHAPE)).astype(np.float32)
    y = rng.integers(0, 3, 64).astype(np.int64)
    path = tmp_path_factory.mktemp("adversary") / "data.npz"
    np.savez(path, x=(x * 255).astype(np.uint8), y=y.astype(np.uint8))
    return {"model": model, "x": x, "y": y, "data": path}


def _mean_log_p(model: Any, x: np.ndarray, label: int) -> float:
    return float(np.mean(np.log(np.asarray(model(x, training=False))[:, label] + 1e-12)))


def test_a_patch_has_a_box_and_a_whole_image_pattern_has_none() -> None:
    mask = np.zeros((8, 8), np.float32)
    mask[5:7, 5:7] = 1.0
    mask[0, 0] = 0.1  # below half the peak: not part of the patch
    rows, cols = compact_box(mask) or (None, None)
    assert (rows, cols) == (slice(4, 8), slice(4, 8))  # the patch and a one-pixel margin
    assert compact_box(np.full((8, 8), 0.2, np.float32)) is None
    assert compact_box(np.zeros((8, 8), np.float32)) is None


def test_the_adversary_raises_its_target_within_the_budget(tiny: dict[str, Any]) -> None:
    model, x, y = tiny["model"], tiny["x"], tiny["y"]
    trigger = load_trigger("patch:size=2,pos=br,value=1", SHAPE)
    adversary = UniversalAdversary(trigger, 2, _log_scores(model), (0.0, 1.0))
    stamped = adversary.apply(x, np.random.default_rng(0))
    before = _mean_log_p(model, trigger.apply(x), 2)
    for _ in range(30):
        success = adversary.update(x, y)
        assert 0.0 <= success <= 1.0
    mask, pattern = (v.numpy() for v in adversary.variables)
    assert mask.min() >= 0.0 and mask.max() <= 1.0
    assert mask.sum() <= 1.5 * 4 + 1e-4  # budget × the starting mask's ℓ1
    assert pattern.min() >= 0.0 and pattern.max() <= 1.0
    fixed = UniversalAdversary(trigger, 2, _log_scores(model), (0.0, 1.0),
                               AdversarySettings(shift=0.0))  # fmt: skip
    fixed.variables[0].assign(mask)
    fixed.variables[1].assign(pattern)
    after = _mean_log_p(model, fixed.apply(x, np.random.default_rng(0)), 2)
    assert after > before + 0.1
    assert not np.array_equal(stamped, fixed.apply(x, np.random.default_rng(0)))


def test_an_untargeted_adversary_pushes_images_off_their_class(tiny: dict[str, Any]) -> None:
    model, x = tiny["model"], tiny["x"]
    y = np.argmax(np.asarray(model(x, training=False)), axis=-1)  # the classes it sees now
    trigger = load_trigger("patch:size=3,pos=tl,value=1", SHAPE)
    adversary = UniversalAdversary(trigger, None, _log_scores(model), (0.0, 1.0),
                                   AdversarySettings(shift=0.0))  # fmt: skip

    def own(batch: np.ndarray) -> float:
        p = np.asarray(model(batch, training=False))
        return float(np.mean(p[np.arange(len(y)), y]))

    before = own(trigger.apply(x))
    for _ in range(30):
        adversary.update(x, y)
    assert own(adversary.apply(x, np.random.default_rng(0))) < before - 0.02


def test_a_compact_patch_is_stamped_at_random_positions(tiny: dict[str, Any]) -> None:
    trigger = load_trigger("patch:size=2,pos=br,value=1", SHAPE)
    model = tiny["model"]
    adversary = UniversalAdversary(trigger, 0, _log_scores(model), (0.0, 1.0),
                                   AdversarySettings(shift=1.0))  # fmt: skip
    x = np.zeros((40, *SHAPE), np.float32)
    out = adversary.apply(x, np.random.default_rng(3))
    assert not x.any()  # the input is untouched
    corners = set()
    for image in out[..., 0]:
        rows, cols = np.nonzero(image)
        assert len(rows) == 4 and rows.max() - rows.min() == 1 and cols.max() - cols.min() == 1
        corners.add((int(rows.min()), int(cols.min())))
    assert len(corners) > 5  # moved around, not always at the bottom right
    unmoved = UniversalAdversary(trigger, 0, _log_scores(model), (0.0, 1.0),
                                 AdversarySettings(shift=0.0))  # fmt: skip
    assert np.array_equal(unmoved.apply(x, np.random.default_rng(3)), trigger.apply(x))


def test_prune_cli_reports_the_adversary(tiny: dict[str, Any], tmp_path: Path) -> None:
    import json

    from typer.testing import CliRunner

    from kerasaudit.cli.app import app

    model = tmp_path / "tiny.keras"
    tiny["model"].save(model)
    report = tmp_path / "report.json"
    result = CliRunner().invoke(
        app,
        ["prune", str(model), "-d", str(tiny["data"]), "-t", "patch:size=2,pos=br,value=1",
         "--target", "0", "--layer", "conv2", "--ratio", "0.25", "--fine-tune-epochs", "1",
         "--unlearn", "--adversarial", "--report", str(report), "-o", str(tmp_path / "out.keras")],
    )  # fmt: skip
    assert result.exit_code in (0, 1), result.output
    tuned = json.loads(report.read_text())["fine_tune"]
    assert tuned["adversaries"] == 1 and len(tuned["adversary_success"]) == 1
    assert (tmp_path / "out.keras").exists()


def test_the_mask_projection_keeps_a_patch_and_drops_faint_pixels() -> None:
    from kerasaudit import _tf
    from kerasaudit.adversary import _project_mask

    tf = _tf.tf()
    v = np.full((8, 8, 1), 0.02, np.float32)  # what sign steps spread everywhere
    v[5:7, 5:7] = 1.02  # the patch, a step past 1
    m = np.asarray(_project_mask(tf, tf.constant(v), 4.0))
    assert m.sum() == pytest.approx(4.0, abs=1e-3)
    assert m[5:7, 5:7].min() > 0.95  # the patch keeps its strength (rescaling gave 0.77)
    assert m[:4].max() < 1e-6  # the faint pixels are gone
    inside = np.full((8, 8, 1), 0.01, np.float32)  # under the budget: only clipped
    np.testing.assert_allclose(np.asarray(_project_mask(tf, tf.constant(inside), 4.0)), inside)


def _reachable_model(special: bool) -> Any:
    """8×8×1 → 5 classes, linear: label 0 wins by a margin of 5 at mid-grey images; with
    ``special`` label 2's logit rises by 40 per unit of every pixel (a backdoor-like shortcut:
    +0.004 on every pixel reaches it), the others are constant."""
    from kerasaudit import _tf

    keras = _tf.keras()
    model = keras.Sequential(
        [keras.Input(SHAPE), keras.layers.Flatten(), keras.layers.Dense(5, name="logits")]
    )
    kernel = np.zeros((64, 5), np.float32)
    bias = np.array([5.0, 0.0, -5.0, 0.0, 0.0], np.float32)
    if special:
        kernel[:, 2] = 40.0
        bias[2] = -5.0 - 40.0 * 64 * 0.25
    model.get_layer("logits").set_weights([kernel, bias])
    return model


def test_the_per_image_attack_stays_in_its_ball_and_finds_a_cheap_label() -> None:
    from kerasaudit.finetune import _pgd_attack

    model = _reachable_model(special=True)
    x = np.full((20, *SHAPE), 0.25, np.float32)
    x[:, 0, 0, 0] = np.linspace(0.0, 1.0, 20)  # some pixels at the edges of the value range
    y = np.zeros(20, np.int64)
    attack = _pgd_attack(_log_scores(model), 0.01, (0.0, 1.0))
    moved, hit = attack(x, y, np.full(20, 2))
    assert np.abs(moved - x).max() <= 0.01 + 1e-6
    assert moved.min() >= 0.0 and moved.max() <= 1.0
    assert hit.all() and (np.argmax(np.asarray(model(moved)), axis=-1) == 2).all()
    _, toward_1 = attack(x, y, np.full(20, 1))  # constant logit: out of reach
    assert not toward_1.any()
    _, away = attack(x, y, np.full(20, -1))  # untargeted: off class 0 — within reach via 2
    assert away.all()


def test_the_per_image_attack_starts_from_its_seed() -> None:
    """The random start comes from the seed: with no gradient to follow the examples stay at
    their starts, the same for the same seed and not for another."""
    import tensorflow as tf

    from kerasaudit.finetune import _pgd_attack

    def flat(x: Any, training: bool) -> Any:  # scores that do not depend on the image
        return tf.zeros([tf.shape(x)[0], 3]) + 0.0 * tf.reduce_sum(x, axis=[1, 2, 3])[:, None]

    x = np.full((8, *SHAPE), 0.5, np.float32)
    y, aim = np.zeros(8, np.int64), np.full(8, 2)
    first, again, other = (
        _pgd_attack(flat, 0.05, (0.0, 1.0), seed)(x, y, aim)[0] for seed in (0, 0, 1)
    )
    assert np.abs(first - x).max() > 0.0  # moved to a random start, within the ball
    assert np.array_equal(first, again) and not np.array_equal(first, other)


def test_the_pgd_radius_is_where_the_target_is_reached_specifically() -> None:
    from kerasaudit.finetune import PGD_RADII, pgd_radius

    rng = np.random.default_rng(0)
    x = np.clip(0.25 + rng.normal(0, 0.001, (60, *SHAPE)), 0, 1).astype(np.float32)
    y = rng.integers(0, 5, 60)
    special = _log_scores(_reachable_model(special=True))
    assert pgd_radius(special, x, y, [2], (0.0, 1.0)) == PGD_RADII[0]
    # label 3 is not reachable at any radius: nothing is unlearnt for it
    assert pgd_radius(special, x, y, [3], (0.0, 1.0)) == 0.0
    assert pgd_radius(_log_scores(_reachable_model(special=False)), x, y, [2], (0.0, 1.0)) == 0.0
    assert pgd_radius(special, x, y, [], (0.0, 1.0)) == 0.0


def test_fine_tuning_with_per_image_adversaries_reports_its_radius(
    tiny: dict[str, Any],
) -> None:
    from kerasaudit import _tf
    from kerasaudit.data import DataSpec, open_data
    from kerasaudit.finetune import fine_tune
    from kerasaudit.pruning import clone_model

    dataset = open_data(DataSpec(tiny["data"], batch_size=32), SHAPE, 3)
    trigger = load_trigger("patch:size=2,pos=br,value=1", SHAPE)
    kernels = []
    for radius in (0.0, 0.1):
        _tf.keras().utils.set_random_seed(0)
        model = clone_model(tiny["model"])
        result = fine_tune(
            model, dataset, epochs=2, trigger=trigger, target=2, pgd=radius,
            learning_rate=1e-2, teacher=tiny["model"], distill=0.5,
        )  # fmt: skip
        assert result.pgd == radius and np.isfinite(result.final_loss)
        kernels.append(model.get_layer("conv2").kernel.numpy())
    assert not np.allclose(kernels[0], kernels[1])  # the adversarial slots changed training
    no_trigger = fine_tune(clone_model(tiny["model"]), dataset, epochs=1, pgd=0.1)
    assert no_trigger.pgd == 0.0  # nothing to unlearn: plain fine-tuning


def _change_norms(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sqrt(np.square((a - b).reshape(len(a), -1)).sum(axis=1))


def test_the_generator_starts_as_its_trigger_and_attacks_within_its_budget(
    tiny: dict[str, Any],
) -> None:
    from kerasaudit.adversary import GeneratorAdversary

    model, x, y = tiny["model"], tiny["x"], tiny["y"]
    trigger = load_trigger("patch:size=2,pos=br,value=1", SHAPE)
    settings = AdversarySettings(form="generator", warmup=0)
    adversary = GeneratorAdversary(trigger, 2, _log_scores(model), (0.0, 1.0), settings, x)
    kept = x.copy()
    np.testing.assert_allclose(adversary.apply(x, np.random.default_rng(0)), trigger.apply(x),
                               atol=1e-6)  # fmt: skip
    start = _change_norms(trigger.apply(x), x).mean()
    assert adversary.limit == pytest.approx(1.5 * start, rel=1e-5)
    before = _mean_log_p(model, trigger.apply(x), 2)
    for _ in range(30):
        assert 0.0 <= adversary.update(x, y) <= 1.0
    moved = adversary.apply(x, np.random.default_rng(0))
    assert np.array_equal(x, kept)  # the input is untouched
    assert moved.min() >= 0.0 and moved.max() <= 1.0
    assert _change_norms(moved, x).max() <= adversary.limit + 1e-4  # each image's budget
    assert not np.allclose(moved, trigger.apply(x), atol=1e-3)  # it is no longer the patch
    assert _mean_log_p(model, moved, 2) > before + 0.1


def test_a_blend_is_of_the_generators_form_and_a_warmup_attacks_first(
    tiny: dict[str, Any],
) -> None:
    from kerasaudit.adversary import GeneratorAdversary

    model, x, y = tiny["model"], tiny["x"], tiny["y"]
    trigger = load_trigger("patch:size=2,pos=br,value=1", SHAPE)
    scores = _log_scores(model)
    loose = AdversarySettings(form="generator", warmup=0, budget=100.0)  # no projection
    cold = GeneratorAdversary(trigger, 2, scores, (0.0, 1.0), loose, x)
    alpha, pattern = 0.2, np.random.default_rng(4).uniform(0, 1, SHAPE).astype(np.float32)
    cold.variables[0].assign(np.full(SHAPE, -alpha, np.float32))  # A = −α
    cold.variables[1].assign(alpha * pattern)  # B = α·p
    np.testing.assert_allclose(cold.apply(x, np.random.default_rng(0)),
                               (1 - alpha) * x + alpha * pattern, atol=1e-5)  # fmt: skip
    warm = GeneratorAdversary(trigger, 2, scores, (0.0, 1.0),
                              AdversarySettings(form="generator", warmup=3), x, y)  # fmt: skip
    at_start = _mean_log_p(model, trigger.apply(x), 2)
    assert _mean_log_p(model, warm.apply(x, np.random.default_rng(0)), 2) > at_start + 0.05


def test_fine_tuning_with_a_generator_adversary_reports_it(tiny: dict[str, Any]) -> None:
    from kerasaudit import _tf
    from kerasaudit.data import DataSpec, open_data
    from kerasaudit.finetune import fine_tune
    from kerasaudit.pruning import clone_model

    dataset = open_data(DataSpec(tiny["data"], batch_size=32), SHAPE, 3)
    trigger = load_trigger("patch:size=2,pos=br,value=1", SHAPE)
    kernels = []
    for form in ("universal", "generator"):
        _tf.keras().utils.set_random_seed(0)
        model = clone_model(tiny["model"])
        result = fine_tune(
            model, dataset, epochs=2, trigger=trigger, target=2, learning_rate=1e-2,
            adversarial=AdversarySettings(form=form, warmup=1),
        )  # fmt: skip
        assert result.adversaries == 1 and np.isfinite(result.final_loss)
        assert 0.0 <= result.adversary_success[0] <= 1.0
        kernels.append(model.get_layer("conv2").kernel.numpy())
    assert not np.allclose(kernels[0], kernels[1])  # the generator's stamps changed training

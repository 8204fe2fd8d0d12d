"""Trigger completion: region, dilation, the restart vote, and growth on the shipped sample."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from kerasaudit.completion import (
    MAX_REGION_SHARE,
    CompletionConfig,
    complete_trigger,
    consensus,
    dilate,
)
from kerasaudit.triggers import half_peak_region as region


def test_region_is_where_the_mask_reaches_half_its_peak() -> None:
    mask = np.zeros((4, 4), np.float32)
    mask[0, 0], mask[1, 1], mask[2, 2] = 0.8, 0.41, 0.39
    assert region(mask).tolist() == (mask >= 0.4).tolist()
    assert not region(np.zeros((3, 3), np.float32)).any()


def test_dilate_grows_by_four_neighbour_steps_without_wrapping() -> None:
    area = np.zeros((5, 5), bool)
    area[0, 4] = True  # a corner: nothing may appear on the opposite borders
    one = dilate(area, 1)
    assert sorted(zip(*np.nonzero(one), strict=True)) == [(0, 3), (0, 4), (1, 4)]
    two = dilate(area, 2)
    assert two.sum() == 6 and not two[:, 0].any() and not two[4].any()
    assert (dilate(area, 0) == area).all()


def test_consensus_keeps_the_majority_and_weights_patterns_by_mask() -> None:
    a, b, c = (np.zeros((4, 4), np.float32) for _ in range(3))
    a[3, 3] = b[3, 3] = c[3, 3] = 1.0  # everyone
    a[0, 0] = 1.0  # a stray pixel of one run
    b[3, 2] = c[3, 2] = 1.0  # two of three
    patterns = [np.full((4, 4, 1), v, np.float32) for v in (0.0, 1.0, 1.0)]
    core, pattern = consensus([a, b, c], patterns)
    assert sorted(zip(*np.nonzero(core), strict=True)) == [(3, 2), (3, 3)]
    assert pattern[3, 3, 0] == pytest.approx(2 / 3)  # mask-weighted mean of 0, 1, 1
    assert pattern[3, 2, 0] == pytest.approx(1.0)


def test_consensus_without_a_majority_falls_back_to_the_first_mask() -> None:
    a, b = np.zeros((3, 3), np.float32), np.zeros((3, 3), np.float32)
    a[0, 0], b[2, 2] = 1.0, 1.0
    patterns = [np.zeros((3, 3, 1), np.float32)] * 2
    core, _ = consensus([a, b], patterns)
    assert core.tolist() == a.tolist()
    with pytest.raises(ValueError):
        consensus([a], [])


def test_large_regions_are_not_completed(keras_module: object) -> None:
    from conftest import build_bn_cnn

    model = build_bn_cnn(keras_module)
    height, width = model.input_shape[1:3]
    mask = np.zeros((height, width), np.float32)
    mask[: height // 2 + 1, :] = 1.0  # more than a quarter of the image
    assert mask.mean() > MAX_REGION_SHARE
    pattern = np.ones((height, width, model.input_shape[3]), np.float32)
    x = np.zeros((4, height, width, model.input_shape[3]), np.float32)
    done = complete_trigger(model, x, 0, mask, pattern, (0.0, 1.0), outputs=10)
    assert done.skipped is not None and done.steps == 0
    assert done.mask is mask and done.pattern is pattern


@pytest.mark.parametrize("objective", ["ce", "margin"])
def test_completion_grows_a_partial_patch_to_the_real_trigger(objective: str) -> None:
    """The shipped backdoored sample: 11 of the 16 pixels of its real 4×4 patch (what NC
    typically recovers) grow back to the whole patch, and to nothing outside the bound —
    for the target's log-probability and for its logit margin."""
    from conftest import SAMPLES

    from kerasaudit.data import DataSpec, open_data
    from kerasaudit.evaluation import classifier_io, predictor, stamped_success
    from kerasaudit.loading import load_model
    from kerasaudit.triggers import parse_trigger

    model = load_model(SAMPLES / "fmnist_badnets.keras").model
    io = classifier_io(model)
    data = open_data(DataSpec(SAMPLES / "fmnist_val.npz"), io.input_shape, io.outputs)
    x, y = data.take_array(1000)
    real = parse_trigger(Path(SAMPLES / "trigger.txt").read_text().strip()).for_data(data.info)
    patch = real.mask > 0
    assert patch.sum() == 16
    partial = real.mask.copy()
    for r, c in [(24, 24), (24, 26), (24, 27), (25, 24), (26, 24)]:  # NC's seed-0 misses
        partial[r, c] = 0.0
    noisy = np.random.default_rng(0).random(real.pattern.shape).astype(np.float32)
    pattern = np.where(partial[..., None] > 0, real.pattern, noisy)  # NC's leftovers elsewhere
    config = CompletionConfig(objective=objective)
    done = complete_trigger(
        model, x, 0, partial, pattern, (0.0, 1.0), outputs=io.outputs, config=config
    )
    assert done.skipped is None and done.pixels_before == 11
    assert done.objective == objective  # the sample's logits are reachable
    grown = region(done.mask)
    assert (grown & patch).sum() >= 15, done.to_dict()
    assert not (grown & ~dilate(partial > 0, 1)).any()
    assert done.mask[~dilate(partial > 0, 1)].max() == 0.0
    assert (done.pattern[grown & patch] > 0.9).all()  # the patch is white
    predict = predictor(model, tuple(x.shape[1:]), io.outputs)
    before, _ = stamped_success(predict, x, y, 0, partial, pattern)
    after, _ = stamped_success(predict, x, y, 0, done.mask, done.pattern)
    assert after >= before


def _all_to_all_model(keras: object) -> object:
    """A hand-wired 3-class model on 6×6 images: class c lights columns 2c..2c+1 of rows
    0-2; the 2×2 patch at rows 4-5, columns 4-5 sends class c to (c + 1) % 3 — only whole
    (a softplus gate that half the patch does not open)."""
    k = keras  # type: ignore[assignment]
    inputs = k.Input((6, 6, 1))
    flat = k.layers.Flatten()(inputs)
    evidence = k.layers.Dense(3, name="evidence")(flat)
    gate = k.layers.Dense(3, activation="softplus", name="gate")(flat)
    logits = k.layers.Dense(3, name="logits")(k.layers.Concatenate()([evidence, gate]))
    model = k.Model(inputs, logits)
    e = np.zeros((36, 3), np.float32)
    patch = np.zeros(36, np.float32)
    for r in (4, 5):
        for c in (4, 5):
            patch[r * 6 + c] = 0.25  # the patch's mean
    for cls in range(3):
        for r in range(3):
            for c in (2 * cls, 2 * cls + 1):
                e[r * 6 + c, cls] = 1 / 6  # the class block's mean
    model.get_layer("evidence").set_weights([e, np.zeros(3, np.float32)])
    g = 10 * (e + patch[:, None])  # softplus(10·(evidence + patch − 1.6))
    model.get_layer("gate").set_weights([g, np.full(3, -16.0, np.float32)])
    mix = np.zeros((6, 3), np.float32)
    mix[:3] = 5 * np.eye(3)
    mix[3:] = 2 * np.roll(np.eye(3), 1, axis=1)  # gate c raises class (c + 1) % 3
    model.get_layer("logits").set_weights([mix, np.zeros(3, np.float32)])
    return model


def test_an_untargeted_trigger_grows_toward_each_class_s_destination(
    keras_module: object,
) -> None:
    model = _all_to_all_model(keras_module)
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 20)
    x = rng.uniform(0.0, 0.2, (60, 6, 6, 1)).astype(np.float32)
    for i, cls in enumerate(y):
        x[i, :3, 2 * cls : 2 * cls + 2] = 0.9
    predict = lambda images: np.argmax(model.predict(images, verbose=0), axis=1)  # noqa: E731
    assert (predict(x) == y).all()
    full = np.zeros((6, 6), np.float32)
    full[4:, 4:] = 1.0
    pattern = np.ones((6, 6, 1), np.float32)
    stamp = lambda m: (1 - m[None, ..., None]) * x + m[..., None] * pattern  # noqa: E731
    shifted = (y + 1) % 3
    assert (predict(stamp(full)) == shifted).all()
    partial = np.zeros((6, 6), np.float32)
    partial[4, 4:] = 1.0  # half the patch: every image keeps its class
    assert (predict(stamp(partial)) == y).all()
    done = complete_trigger(
        model, x, -1, partial, pattern, (0.0, 1.0), outputs=3,
        destinations=np.array([1, 2, 0]), y=y,
    )  # fmt: skip
    assert done.skipped is None and done.label == -1
    assert region(done.mask)[4:, 4:].all()  # grew to the whole patch
    assert np.mean(predict(stamp(done.mask)) == shifted) >= 0.9
    # Toward the wrong destinations nothing the patch can do helps: it does not get there.
    wrong = complete_trigger(
        model, x, -1, partial, pattern, (0.0, 1.0), outputs=3,
        destinations=np.array([2, 0, 1]), y=y,
    )  # fmt: skip
    assert np.mean(predict(stamp(wrong.mask)) == (y + 2) % 3) < 0.1
    with pytest.raises(ValueError):
        complete_trigger(
            model, x, -1, partial, pattern, (0.0, 1.0), outputs=3, destinations=np.array([1, 2, 0])
        )


def test_the_completion_line_says_whether_a_vote_made_the_core() -> None:
    from kerasaudit.completion import Completion
    from kerasaudit.formats.reverse_fmt import completion_line

    mask, pattern = np.zeros((4, 4), np.float32), np.ones((4, 4, 1), np.float32)
    voted = Completion(3, mask, pattern, 11, 16, 24, 300, None, restarts=3)
    assert "11-pixel core voted by 3 NC runs grew to 16 pixels" in completion_line(voted)
    own = Completion(-1, mask, pattern, 11, 17, 24, 300, None)  # the untargeted mask: no vote
    assert "11-pixel region grew to 17 pixels" in completion_line(own)
    skipped = Completion(3, mask, pattern, 200, 200, 200, 0, "too large")
    assert completion_line(skipped) == "not completed (too large)"

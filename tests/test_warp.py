"""Warp triggers (WaNet-style): the sampling, the inversion engine, the verdict's warp signal
and warp fields in trigger files."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_reverse import K, write_stripe_files

from kerasaudit.data import DataSpec, open_data
from kerasaudit.inversion import BatchedInversion, InversionConfig, WarpForm
from kerasaudit.triggers import FileSpec, FileTrigger, read_trigger_file, save_trigger_file
from kerasaudit.verdict import LabelEvidence, ModelEvidence, Rule, judge, score
from kerasaudit.warping import rms, warp, warp_tf

RNG = np.random.default_rng(7)


def _smooth_flow(height: int, width: int, scale: float) -> np.ndarray:
    rows, cols = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    return np.stack(
        [scale * np.sin(rows / 3.0 + 0.5), scale * np.cos(cols / 4.0 - 0.3)], axis=-1
    ).astype(np.float32)


def test_zero_flow_is_the_identity_and_whole_pixel_shifts_move_pixels() -> None:
    x = RNG.random((3, 6, 7, 2)).astype(np.float32)
    np.testing.assert_array_equal(warp(x, np.zeros((6, 7, 2), np.float32)), x)
    shift = np.zeros((6, 7, 2), np.float32)
    shift[..., 1] = 1.0  # every pixel samples the one to its right (the last column clamps)
    moved = warp(x, shift)
    np.testing.assert_allclose(moved[:, :, :-1], x[:, :, 1:], atol=1e-6)
    np.testing.assert_allclose(moved[:, :, -1], x[:, :, -1], atol=1e-6)
    assert rms(shift) == pytest.approx(1.0)
    half = shift * 0.5  # bilinear: halfway between neighbours
    np.testing.assert_allclose(warp(x, half)[:, :, 0], (x[:, :, 0] + x[:, :, 1]) / 2, atol=1e-6)
    assert x.dtype == np.float32 and warp(x, half).dtype == np.float32
    with pytest.raises(ValueError, match="does not fit"):
        warp(x, np.zeros((5, 7, 2), np.float32))


def test_tensorflow_warp_matches_numpy_and_has_a_gradient_in_the_field() -> None:
    import tensorflow as tf

    x = RNG.random((4, 9, 8, 3)).astype(np.float32)
    flow = _smooth_flow(9, 8, 1.7)
    np.testing.assert_allclose(np.asarray(warp_tf(tf.constant(x), flow)), warp(x, flow), atol=1e-5)
    variable = tf.Variable(np.stack([flow] * 4))
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(warp_tf(tf.constant(x), variable)[..., 0])
    grad = tape.gradient(loss, variable)
    assert grad is not None and float(tf.reduce_max(tf.abs(grad))) > 0


@pytest.fixture(scope="module")
def stripes(tmp_path_factory: pytest.TempPathFactory, keras_module: Any) -> dict[str, Any]:
    from kerasaudit.loading import load_model

    files = write_stripe_files(tmp_path_factory.mktemp("warp"), keras_module)
    x, y = open_data(DataSpec(files["data"]), (8, 8, 1), K).take_array(128)
    return {"model": load_model(files["clean"]).model, "x": x, "y": y}


def test_warp_inversion_keeps_fields_that_really_reach_their_label(
    stripes: dict[str, Any],
) -> None:
    """Per label the kept field's size is its RMS displacement, a field that reached the
    threshold sends the other classes' images to its label when applied with NumPy's warp,
    and each row's result does not depend on the rows run beside it."""
    config = InversionConfig(
        steps=200, learning_rate=0.05, init_cost=1e-2, attack_threshold=0.9, early_stop=False
    )
    model, x, y = stripes["model"], stripes["x"], stripes["y"]
    form = WarpForm(8, 8, grid=4)
    found = BatchedInversion(model, list(range(K)), x, y, form, config, K).run()
    assert [t.label for t in found] == list(range(K))
    reached = 0
    for t in found:
        (flow,) = t.arrays
        assert flow.shape == (8, 8, 2)
        assert t.size == pytest.approx(rms(flow), rel=1e-5)
        if not t.reached:
            continue
        reached += 1
        others = x[y != t.label]
        hits = np.mean(np.argmax(model.predict(warp(others, flow), verbose=0), axis=1) == t.label)
        assert hits >= 0.8  # measured on batches during the search; here on all images once
    assert reached >= 1
    alone = BatchedInversion(model, [found[1].label], x, y, form, config, K).run()[0]
    np.testing.assert_allclose(alone.arrays[0], found[1].arrays[0], atol=1e-4)


def _evidence(warps: list[float], reached: list[bool]) -> ModelEvidence:
    masks = [60.0, 55.0, 70.0, 65.0, 58.0, 72.0, 61.0, 68.0, 63.0, 66.0]
    return ModelEvidence(
        tuple(
            LabelEvidence(k, masks[k], True, 2.0, True, 30.0 + k % 3, 1.0, warps[k], reached[k])
            for k in range(10)
        ),
        math.nan,
        False,
    )


def test_verdict_flags_a_label_whose_warp_is_far_smaller_and_reached() -> None:
    rule = Rule(mask_index=3.0, additive_index=3.0, margin_index=3.0, untargeted_ratio=0.2,
                warp_index=3.0)  # fmt: skip
    warps = [4.5, 4.4, 3.7, 5.2, 4.5, 4.2, 4.5, 3.9, 3.7, 4.0]
    assert not judge(_evidence(warps, [True] * 10), rule).backdoor
    small = list(warps)
    small[5] = 0.49
    verdict = judge(_evidence(small, [True] * 10), rule)
    assert verdict.flagged == (5,) and verdict.decision(5).signals == ("warp",)
    assert "warp" in " ".join(verdict.decision(5).reasons)
    # A small field that never reached the attack threshold is no trigger.
    unreached = [k != 5 for k in range(10)]
    assert score(_evidence(small, unreached)).label(5).warp_index == 0.0
    assert not judge(_evidence(small, unreached), rule).backdoor
    # Without a warp threshold (evidence from before the engine, or a rule without it) the
    # signal is ignored; evidence without warp numbers scores NaN.
    assert not judge(_evidence(small, [True] * 10), replace(rule, warp_index=math.inf)).backdoor
    old = ModelEvidence.from_dict(
        {"labels": [{"label": k, "mask_l1": 50.0 + k, "mask_reached": True} for k in range(4)]}
    )
    assert all(math.isnan(s.warp_index) for s in score(old).labels)


def test_warp_fields_round_trip_through_trigger_files(tmp_path: Path) -> None:
    import tensorflow as tf

    flow = _smooth_flow(8, 8, 1.2)
    path = tmp_path / "trigger_label5_warp.npz"
    zeros = np.zeros((8, 8), np.float32)
    save_trigger_file(path, zeros, np.zeros((8, 8, 1), np.float32), 5, {"kind": "warp"}, flow=flow)
    content = read_trigger_file(path)
    assert content.flow is not None and content.target == 5
    np.testing.assert_array_equal(content.flow, flow)
    trigger = FileSpec(text=str(path), path=path).build((8, 8, 1))
    assert isinstance(trigger, FileTrigger)
    x = RNG.random((5, 8, 8, 1)).astype(np.float32)
    np.testing.assert_allclose(trigger.apply(x), warp(x, flow), atol=1e-6)
    np.testing.assert_allclose(np.asarray(trigger.apply_tf(tf.constant(x))), warp(x, flow),
                               atol=1e-5)  # fmt: skip
    np.testing.assert_allclose(trigger.apply(x[0]), warp(x[:1], flow)[0], atol=1e-6)
    assert "warp, RMS" in trigger.describe()
    assert trigger.region_mask().any()
    with pytest.raises(Exception, match="flow"):
        save_trigger_file(tmp_path / "bad.npz", zeros, np.zeros((8, 8, 1)), flow=flow[:4])


# --- a planted warp backdoor, end to end ----------------------------------------------------

WK, WH = 8, 12  # labels and image side of the hand-built warp models
LEVELS = 0.1 * (np.arange(WK) + 1)


def warp_data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Class k: a flat grey level 0.1·(k + 1) (± 0.02 noise), and in every image a bright
    line in column 0."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % WK
    x = LEVELS[y][:, None, None] + rng.uniform(-0.02, 0.02, (n, WH, WH))
    x[:, :, 0] = 1.0
    return x[..., None].astype(np.float32), y.astype(np.int64)


def warp_model(keras: Any, *, backdoor: bool) -> Any:
    """Classifies by the mean grey level of columns 3 and up (a warp cannot change it without
    moving pixels by 2–3 columns); the backdoor sends an image to label 0 when column 1 turns
    as bright as the line in column 0 — i.e. when the image is warped by about one pixel to
    the right, a trigger no patch of the data itself shows. Softplus units keep gradients."""
    inputs = keras.Input((WH, WH, 1))
    conv = keras.layers.Conv2D(1, 1, name="identity")
    flat = keras.layers.Flatten()(conv(inputs))
    conv.set_weights([np.ones((1, 1, 1, 1), np.float32), np.zeros(1, np.float32)])
    mean = keras.layers.Dense(1, name="mean")
    level = mean(flat)
    weights = np.zeros((WH, WH), np.float32)
    weights[:, 3:] = 1.0 / (WH * (WH - 3))
    mean.set_weights([weights.reshape(-1, 1), np.zeros(1, np.float32)])
    classes = keras.layers.Dense(WK, name="classes")
    logits = classes(level)  # −30·(level − LEVELS)² up to a term common to all labels
    classes.set_weights([(60 * LEVELS)[None].astype(np.float32),
                         (-30 * LEVELS**2).astype(np.float32)])  # fmt: skip
    detector = keras.layers.Dense(1, activation="softplus", name="column1")
    fired = detector(flat)
    weights = np.zeros((WH, WH), np.float32)
    weights[:, 1] = 4.0
    detector.set_weights([weights.reshape(-1, 1), np.array([-44.0], np.float32)])
    push = keras.layers.Dense(WK, use_bias=False, name="push")
    pushed = push(fired)
    weights = np.zeros((1, WK), np.float32)
    weights[0, 0] = 25.0 if backdoor else 0.0
    push.set_weights([weights])
    outputs = keras.layers.Softmax()(keras.layers.Add()([logits, pushed]))
    return keras.Model(inputs, outputs, name="warp_backdoored" if backdoor else "warp_clean")


@pytest.fixture(scope="module")
def warped(tmp_path_factory: pytest.TempPathFactory, keras_module: Any) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("warped")
    files = {name: out / f"{name}.keras" for name in ("backdoored", "clean")}
    warp_model(keras_module, backdoor=True).save(files["backdoored"])
    warp_model(keras_module, backdoor=False).save(files["clean"])
    for name, (n, seed) in {"data": (256, 0), "test": (400, 1)}.items():
        x, y = warp_data(n, seed)
        files[name] = out / f"{name}.npz"
        np.savez(files[name], x=x, y=y)
    return files


def test_a_one_pixel_warp_is_the_backdoor_of_the_hand_built_model(
    warped: dict[str, Path],
) -> None:
    from kerasaudit.loading import load_model

    x, y = warp_data(200, 2)
    shift = np.zeros((WH, WH, 2), np.float32)
    shift[..., 1] = -1.0  # every pixel samples its left neighbour
    for name, asr in (("backdoored", 1.0), ("clean", 0.0)):
        model = load_model(warped[name]).model
        assert np.mean(np.argmax(model.predict(x, verbose=0), axis=1) == y) == 1.0
        moved = np.argmax(model.predict(warp(x[y != 0], shift), verbose=0), axis=1)
        assert np.mean(moved == 0) == asr


def test_cli_reverse_finds_the_warp_and_writes_a_field_that_attacks(
    warped: dict[str, Path], tmp_path: Path
) -> None:
    """The warp engine finds label 0's field far smaller than any other label's, the verdict
    flags label 0 by it (among other signals on this linear toy), `reverse` writes the field as
    a trigger file and `evaluate` confirms that it sends held-out images to label 0; the
    clean twin's label 0 has no such field."""
    import json

    from typer.testing import CliRunner

    from kerasaudit.cli.app import app

    runner = CliRunner()
    fast = ["--steps", "200", "--images", "256", "--no-complete", "-q", "--format", "json"]
    out = tmp_path / "rev"
    done = runner.invoke(
        app, ["reverse", str(warped["backdoored"]), "-d", str(warped["data"]), "-o", str(out),
              *fast],
    )  # fmt: skip
    assert done.exit_code == 1, done.output
    report = json.loads(done.stdout)
    label0 = report["labels"][0]
    assert label0["warp"]["reached_threshold"] and label0["warp"]["rms"] < 0.8
    others = [r["warp"]["rms"] for r in report["labels"][1:]]
    assert label0["warp"]["rms"] < 0.5 * min(others)
    assert label0["flagged"] and "warp" in label0["signals"]
    content = read_trigger_file(out / "trigger_label0_warp.npz")
    assert content.flow is not None and content.target == 0 and content.meta["kind"] == "warp"
    assert not content.mask.any()
    assert (out / "warp_label0.png").is_file()  # where the field moves pixels, for people
    evaluated = runner.invoke(
        app, ["evaluate", str(warped["backdoored"]), "-d", str(warped["test"]), "-t",
              str(out / "trigger_label0_warp.npz"), "-q", "--format", "json"],
    )  # fmt: skip
    assert evaluated.exit_code == 0, evaluated.output
    assert json.loads(evaluated.stdout)["attack"]["asr"] >= 0.9

    clean = runner.invoke(app, ["reverse", str(warped["clean"]), "-d", str(warped["data"]), *fast])
    labels = json.loads(clean.stdout)["labels"]
    assert not any("warp" in r["signals"] for r in labels)
    assert not labels[0]["warp"]["reached_threshold"] or labels[0]["warp"]["rms"] > 0.8


def test_the_warp_search_transposes_no_int32_tensor(keras_module: Any) -> None:
    """The warp engine's training graph (gradients included) has no int32 Transpose: oneDNN
    builds of TensorFlow log one as an error line ("E0000 … oneDNN supports DT_INT32 only on
    platforms with AVX-512") in the middle of `audit`'s output on some CPUs (tf.repeat's
    gradient made one; the fields are broadcast instead)."""
    import tensorflow as tf
    from conftest import build_bn_cnn

    model = build_bn_cnn(keras_module)
    rng = np.random.default_rng(0)
    x = rng.uniform(0.0, 1.0, (16, 8, 8, 1)).astype(np.float32)
    y = rng.integers(0, 3, 16)
    inversion = BatchedInversion(model, [0, 1], x, y, WarpForm(8, 8, 4), InversionConfig(), 3)
    graph = inversion._round.get_concrete_function().graph

    def int32_transposes(g: Any) -> list[str]:
        found = [
            op.name
            for op in g.get_operations()
            if op.type == "Transpose" and op.get_attr("T") == tf.int32
        ]
        for function in g._functions.values():  # the while loop's body and its gradient
            found += int32_transposes(function.graph)
        return found

    assert graph.get_operations()  # the graph was traced at all
    assert int32_transposes(graph) == []

"""Adversarial unlearning: the universal adversary attacks within its budget, moves compact
patches around, and prune reports it (prune passing it to fine-tuning: test_prune.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import build_bn_cnn

from kerasaudit.adversary import AdversarySettings, UniversalAdversary, _compact_box
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
    rows, cols = _compact_box(mask) or (None, None)
    assert (rows, cols) == (slice(4, 8), slice(4, 8))  # the patch and a one-pixel margin
    assert _compact_box(np.full((8, 8), 0.2, np.float32)) is None
    assert _compact_box(np.zeros((8, 8), np.float32)) is None


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

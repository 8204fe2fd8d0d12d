"""Evaluation: exact accuracy / ASR / RA on a hand-set model, errors, and the CLI contract."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from kerasaudit.cli.app import app
from kerasaudit.data import DataSpec, open_data
from kerasaudit.errors import BadInputError
from kerasaudit.evaluation import EvaluationResult, classifier_io, evaluate
from kerasaudit.triggers import load_trigger, save_trigger_file

runner = CliRunner()
TRIGGER = "patch:size=2,pos=br,value=1"

# The data: one bright row per class (row k for class k, columns 0-3) at brightness v.
# (label, brightness, how many); brightness 0 = a blank image.
ROWS = [(0, 1.0, 2), (0, 0.5, 1), (1, 0.5, 3), (1, 1.0, 2), (2, 0.5, 1), (2, 1.0, 3), (2, 0.0, 2)]


def _weights() -> tuple[np.ndarray, np.ndarray]:
    """Flatten → Dense(3) on 8×8×1 inputs. Class k's logit is 4·v for its row (so clean images
    are always right, blank ones go to class 0 through a 0.1 bias); the bottom-right 2×2 pixels
    add 4 × 0.75 = 3 to class 0. A triggered image therefore goes to class 0 when its row
    brightness is 0.5 (4·0.5 = 2 < 3.1) and stays put when it is 1 (4 > 3.1)."""
    kernel = np.zeros((8, 8, 3), np.float32)
    for k in range(3):
        kernel[k, 0:4, k] = 1.0
    kernel[6:8, 6:8, 0] = 0.75
    bias = np.array([0.1, 0.0, 0.0], np.float32)
    return kernel.reshape(64, 3), bias


def _images() -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    for label, brightness, count in ROWS:
        for _ in range(count):
            image = np.zeros((8, 8, 1), np.float32)
            image[label, 0:4, 0] = brightness
            xs.append(image)
            ys.append(label)
    return np.stack(xs), np.array(ys, np.int64)


# Worked out by hand from ROWS and _weights (and checked against numpy below):
TOTAL, CORRECT = 14, 12  # the two blank class-2 images go to class 0
PER_CLASS = [(0, 3, 3), (1, 5, 5), (2, 6, 4)]  # (label, images, correct)
EVALUATED, TO_TARGET, STILL_CORRECT = 11, 6, 5  # target 0: classes 1 and 2 are triggered
# of those 11 unstamped, the two blank class-2 images already go to 0; the trigger flips 4 more
UNSTAMPED, FLIPPED = 2, 4


@pytest.fixture(scope="module")
def hand_model(keras_module: Any) -> Any:
    keras = keras_module
    inputs = keras.Input((8, 8, 1), name="image")
    flat = keras.layers.Flatten(name="flat")(inputs)
    outputs = keras.layers.Dense(3, activation="softmax", name="scores")(flat)
    model = keras.Model(inputs, outputs, name="patch_detector")
    model.get_layer("scores").set_weights(list(_weights()))
    return model


@pytest.fixture(scope="module")
def files(hand_model: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("evaluation")
    x, y = _images()
    paths = {
        "model": out / "detector.keras",
        "data": out / "data.npz",
        "unlabelled": out / "unlabelled.npz",
        "trigger": out / "reversed.npz",
    }
    hand_model.save(paths["model"])
    np.savez(paths["data"], x=x, y=y)
    np.savez(paths["unlabelled"], x=x)
    mask = np.zeros((8, 8), np.float32)
    mask[6:8, 6:8] = 1.0
    save_trigger_file(paths["trigger"], mask, np.ones((8, 8, 1), np.float32), target=0)
    return paths


def _open(path: Path, batch_size: int = 4) -> Any:
    return open_data(DataSpec(path, batch_size=batch_size), (8, 8, 1), 3)


def test_hand_counts_agree_with_numpy() -> None:
    """The expected numbers above, recomputed from the weights."""
    x, y = _images()
    kernel, bias = _weights()
    clean = (x.reshape(len(x), -1) @ kernel + bias).argmax(axis=1)
    stamped = load_trigger(TRIGGER, (8, 8, 1)).apply(x)
    triggered = (stamped.reshape(len(x), -1) @ kernel + bias).argmax(axis=1)
    keep = y != 0
    assert (len(y), int((clean == y).sum())) == (TOTAL, CORRECT)
    assert int(keep.sum()) == EVALUATED
    assert int((triggered[keep] == 0).sum()) == TO_TARGET
    assert int((triggered[keep] == y[keep]).sum()) == STILL_CORRECT
    assert int((clean[keep] == 0).sum()) == UNSTAMPED
    assert int(((triggered[keep] == 0) & (clean[keep] != 0)).sum()) == FLIPPED


def test_evaluate_exact_accuracy_asr_ra(hand_model: Any, files: dict[str, Path]) -> None:
    calls: list[tuple[int, int]] = []
    dataset = _open(files["data"])
    trigger = load_trigger(TRIGGER, dataset.info.shape)
    result = evaluate(
        hand_model, dataset, trigger, target=0, progress=lambda d, t: calls.append((d, t))
    )
    assert isinstance(result, EvaluationResult)
    assert (result.total, result.correct) == (TOTAL, CORRECT)
    assert result.accuracy == CORRECT / TOTAL
    assert [(c.label, c.count, c.correct) for c in result.per_class] == PER_CLASS
    attack = result.attack
    assert attack is not None and attack.target_source == "--target"
    assert (attack.evaluated, attack.to_target, attack.still_correct) == (
        EVALUATED,
        TO_TARGET,
        STILL_CORRECT,
    )
    assert result.asr == TO_TARGET / EVALUATED and result.ra == STILL_CORRECT / EVALUATED
    assert (attack.unstamped_to_target, attack.flipped) == (UNSTAMPED, FLIPPED)
    assert attack.unstamped_rate == UNSTAMPED / EVALUATED
    assert attack.flip_rate == FLIPPED / EVALUATED
    assert calls == [(4, 14), (8, 14), (12, 14), (14, 14)]  # streamed in 4 batches
    assert not result.asr_exceeded
    report = result.to_dict()
    json.dumps(report, allow_nan=False)
    assert report["attack"]["trigger"]["region_box"] == {"x": 6, "y": 6, "width": 2, "height": 2}


def test_evaluate_other_target_and_without_trigger(hand_model: Any, files: dict[str, Path]) -> None:
    dataset = _open(files["data"], batch_size=64)
    clean_only = evaluate(hand_model, dataset)
    assert clean_only.attack is None and clean_only.asr is None and clean_only.ra is None
    assert clean_only.accuracy == CORRECT / TOTAL
    # Towards label 1 the trigger (which pushes to 0) never succeeds.
    towards_1 = evaluate(hand_model, dataset, load_trigger(TRIGGER, (8, 8, 1)), target=1)
    assert towards_1.attack is not None
    assert (towards_1.attack.evaluated, towards_1.attack.to_target) == (9, 0)
    assert towards_1.attack.still_correct == 3 + 3  # all of class 0, class 2 at brightness 1
    assert (towards_1.attack.unstamped_to_target, towards_1.attack.flipped) == (0, 0)


def test_max_asr_threshold(hand_model: Any, files: dict[str, Path]) -> None:
    dataset = _open(files["data"])
    trigger = load_trigger(TRIGGER, (8, 8, 1))
    assert evaluate(hand_model, dataset, trigger, 0, max_asr=0.5).asr_exceeded  # 54.5 % > 50 %
    assert not evaluate(hand_model, dataset, trigger, 0, max_asr=0.6).asr_exceeded


def test_trigger_file_supplies_the_target(hand_model: Any, files: dict[str, Path]) -> None:
    dataset = _open(files["data"])
    trigger = load_trigger(str(files["trigger"]), (8, 8, 1))
    result = evaluate(hand_model, dataset, trigger)
    assert result.attack is not None and result.attack.target == 0
    assert result.attack.target_source == "trigger file"
    assert result.asr == TO_TARGET / EVALUATED
    assert evaluate(hand_model, dataset, trigger, target=2).attack.target == 2  # type: ignore[union-attr]


def test_single_sigmoid_output(keras_module: Any, tmp_path: Path) -> None:
    keras = keras_module
    inputs = keras.Input((4, 4, 1))
    outputs = keras.layers.Dense(1, activation="sigmoid")(keras.layers.Flatten()(inputs))
    model = keras.Model(inputs, outputs)
    kernel = np.full((16, 1), -1.0, np.float32)
    kernel[15] = 10.0  # the bottom-right pixel decides "class 1"
    model.layers[-1].set_weights([kernel, np.zeros(1, np.float32)])
    x = np.zeros((6, 4, 4, 1), np.float32)
    x[:3, 0, 0] = 1.0  # class 0 (score sigmoid(-1))
    y = np.array([0, 0, 0, 1, 1, 1])
    x[3:, 3, 3] = 1.0  # class 1 (sigmoid(10))
    np.savez(tmp_path / "d.npz", x=x, y=y)
    dataset = open_data(DataSpec(tmp_path / "d.npz"), (4, 4, 1), 1)
    result = evaluate(model, dataset, load_trigger("patch:size=1", (4, 4, 1)), target=1)
    assert classifier_io(model).num_classes == 2 and result.num_classes == 2
    assert result.correct == 6 and result.asr == 1.0 and result.ra == 0.0


# --- bad input -----------------------------------------------------------------------------


def test_unlabelled_data_names_the_key_looked_for(hand_model: Any, files: dict[str, Path]) -> None:
    with pytest.raises(BadInputError, match=r"has inputs 'x' but no 'y'; .*--y-key"):
        evaluate(hand_model, _open(files["unlabelled"]))


@pytest.mark.parametrize(
    ("target", "use_trigger", "max_asr", "message"),
    [
        (3, True, None, r"--target 3 is outside the model's labels 0\.\.2"),
        (-1, True, None, r"--target -1 is outside"),
        (1, False, None, "--target needs --trigger"),
        (None, False, 0.1, "--max-asr needs --trigger"),
        (0, True, 1.5, r"fraction in \[0, 1\]"),
    ],
)
def test_bad_options(
    hand_model: Any,
    files: dict[str, Path],
    target: int | None,
    use_trigger: bool,
    max_asr: float | None,
    message: str,
) -> None:
    trigger = load_trigger(TRIGGER, (8, 8, 1)) if use_trigger else None
    with pytest.raises(BadInputError, match=message):
        evaluate(hand_model, _open(files["data"]), trigger, target, max_asr)


def test_trigger_file_target_outside_labels(
    hand_model: Any, files: dict[str, Path], tmp_path: Path
) -> None:
    path = tmp_path / "t7.npz"
    save_trigger_file(path, np.ones((8, 8)), np.zeros((8, 8, 1)), target=7)
    with pytest.raises(BadInputError, match="the trigger file's target 7 is outside"):
        evaluate(hand_model, _open(files["data"]), load_trigger(str(path), (8, 8, 1)))


def test_models_evaluation_cannot_handle(keras_module: Any) -> None:
    keras = keras_module
    a, b = keras.Input((4,)), keras.Input((4,))
    two_inputs = keras.Model([a, b], keras.layers.Dense(2)(keras.layers.Concatenate()([a, b])))
    with pytest.raises(BadInputError, match="2 inputs and 1 outputs"):
        classifier_io(two_inputs)
    image = keras.Input((4, 4, 1))
    dense_map = keras.Model(image, keras.layers.Conv2D(2, 1)(image))
    with pytest.raises(BadInputError, match="one score vector"):
        classifier_io(dense_map)


# --- CLI -----------------------------------------------------------------------------------


def _cli(*args: str) -> Any:
    return runner.invoke(app, ["evaluate", *args], env={"NO_COLOR": "1"})


def test_cli_json_report(files: dict[str, Path]) -> None:
    result = _cli(
        str(files["model"]),
        "--data",
        str(files["data"]),
        "--trigger",
        TRIGGER,
        "--target",
        "0",
        "--format",
        "json",
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["schema"] == "kerasaudit.evaluate/1"
    assert report["clean"]["correct"] == CORRECT and report["clean"]["total"] == TOTAL
    assert report["attack"]["to_target"] == TO_TARGET
    assert report["attack"]["evaluated"] == EVALUATED
    assert report["attack"]["asr"] == pytest.approx(TO_TARGET / EVALUATED)
    assert report["attack"]["ra"] == pytest.approx(STILL_CORRECT / EVALUATED)
    assert report["attack"]["unstamped_to_target"] == UNSTAMPED
    assert report["attack"]["flip_rate"] == pytest.approx(FLIPPED / EVALUATED)
    assert report["asr_exceeded"] is False


def test_cli_max_asr_exit_codes(files: dict[str, Path]) -> None:
    base = [str(files["model"]), "-d", str(files["data"]), "--trigger", str(files["trigger"])]
    exceeded = _cli(*base, "--max-asr", "50", "-f", "json")
    assert exceeded.exit_code == 1, exceeded.output
    assert json.loads(exceeded.stdout)["asr_exceeded"] is True
    within = _cli(*base, "--max-asr", "60")
    assert within.exit_code == 0, within.output
    assert "ASR" in within.stdout and "54.55 %" in within.stdout and "6 / 11" in within.stdout
    # the same images unstamped: 2 of 11 already at the target; 4 flipped by the trigger
    assert "without trigger" in within.stdout and "18.18 %" in within.stdout
    assert "flipped" in within.stdout and "36.36 %" in within.stdout


def test_cli_table_without_trigger_and_output_file(files: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "eval.json"
    result = _cli(str(files["model"]), "-d", str(files["data"]), "-f", "json", "-o", str(out))
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    report = json.loads(out.read_text())
    assert report["attack"] is None and report["clean"]["accuracy"] == pytest.approx(12 / 14)
    again = _cli(str(files["model"]), "-d", str(files["data"]), "-o", str(out))
    assert again.exit_code == 2 and "--force" in again.stderr


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--trigger", "star:size=2", "--target", "0"], "unknown trigger kind"),
        (["--trigger", "patch:size=9", "--target", "0"], "larger than the 8×8 input"),
        (["--trigger", TRIGGER, "--target", "5"], "outside the model's labels"),
        (["--max-asr", "150", "--trigger", TRIGGER, "--target", "0"], "--max-asr"),
        (["--trigger", "missing.npz"], "does not exist"),
    ],
)
def test_cli_bad_input_exits_2_with_one_line(
    files: dict[str, Path], tmp_path: Path, extra: list[str], message: str
) -> None:
    out = tmp_path / "never.json"
    result = _cli(str(files["model"]), "-d", str(files["data"]), "-o", str(out), *extra)
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert not out.exists()


def test_cli_unlabelled_data(files: dict[str, Path]) -> None:
    result = _cli(str(files["model"]), "-d", str(files["unlabelled"]))
    assert result.exit_code == 2 and "no 'y'" in result.stderr


# --- the shipped sample ----------------------------------------------------------------------

SAMPLES = Path(__file__).resolve().parents[1] / "sample_models"


@pytest.mark.slow
def test_sample_backdoored_model(tmp_path: Path) -> None:
    model, data = SAMPLES / "fmnist_badnets.keras", SAMPLES / "fmnist_test.npz"
    assert model.exists() and data.exists(), "the shipped sample model and data are missing"
    spec = (SAMPLES / "trigger.txt").read_text().strip()
    result = _cli(str(model), "-d", str(data), "--trigger", spec, "--target", "0", "-f", "json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["attack"]["asr"] >= 0.95
    assert report["clean"]["accuracy"] >= 0.88

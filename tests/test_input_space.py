"""The data reaches the model in the range it was trained on: a model that rescales its own
input is read unscaled under --scale auto, and a model near chance on --data is warned about."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from kerasaudit.cli.app import app

runner = CliRunner()


def _model(keras: Any, first: Any) -> Any:
    """A brightness classifier behind ``first``: the brightest 3×3 mean, < 1/3 → class 0,
    up to 0.7 → 1, above → 2 (so what it predicts depends on the scale its input arrives in)."""
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            first,
            keras.layers.Conv2D(1, 3, name="conv"),
            keras.layers.GlobalMaxPooling2D(),
            keras.layers.Dense(3, activation="softmax", name="probs"),
        ]
    )
    model.get_layer("conv").set_weights([np.full((3, 3, 1, 1), 1 / 9, np.float32), np.zeros(1)])
    model.get_layer("probs").set_weights(
        [np.array([[0.0, 10.0, 20.0]], np.float32), np.array([0.0, -3.3, -10.3], np.float32)]
    )
    return model


def _images(n: int, seed: int) -> np.ndarray:
    """uint8 images of every brightness: a random level times noise in [0.6, 1]."""
    rng = np.random.default_rng(seed)
    levels = rng.uniform(0, 1, (n, 1, 1, 1))
    return (255 * levels * rng.uniform(0.6, 1, (n, 8, 8, 1))).astype(np.uint8)


@pytest.fixture(scope="module")
def raw(tmp_path_factory: pytest.TempPathFactory, keras_module: Any) -> dict[str, Path]:
    """A model trained (here: labelled) on 0–255 values, which it rescales itself, and uint8
    data labelled with its own predictions on those values."""
    out = tmp_path_factory.mktemp("raw")
    model = _model(keras_module, keras_module.layers.Rescaling(1 / 255, name="to_unit"))
    x = _images(120, 1)
    y = model.predict(x.astype(np.float32), verbose=0).argmax(1)
    assert np.bincount(y, minlength=3).min() > 20  # every class (else accuracy says little)
    files = {"model": out / "raw.keras", "data": out / "data.npz", "unlabelled": out / "x.npy"}
    model.save(files["model"])
    np.savez(files["data"], x=x, y=y.astype(np.uint8))
    np.save(files["unlabelled"], x)
    return files


def _evaluate(files: dict[str, Path], *extra: str) -> tuple[float, str]:
    args = ["evaluate", str(files["model"]), "-d", str(files["data"]), *extra, "-f", "json"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)["clean"]["accuracy"], result.stderr


def test_a_model_that_rescales_its_input_gets_its_data_unscaled(raw: dict[str, Path]) -> None:
    accuracy, stderr = _evaluate(raw)
    assert accuracy == 1.0  # the values it was labelled on
    assert "note: the model's layer 'to_unit' rescales its input ×0.003922" in stderr
    assert "read unscaled" in stderr and "warning" not in stderr
    # An explicit --scale is obeyed; at 1/255 the model sees near-black images, and says so.
    accuracy, stderr = _evaluate(raw, "--scale", "1/255")
    assert accuracy < 2 / 3 and "note:" not in stderr
    assert "warning: the model gets" in stderr and "(chance: 33%)" in stderr
    assert "--scale none if the model was trained on 0–255 values" in stderr
    # The clean scan reads the data as evaluate does (same note).
    scanned = runner.invoke(app, ["scan", str(raw["model"]), "-d", str(raw["data"])])
    assert scanned.exit_code in (0, 1), scanned.output
    assert "read unscaled" in scanned.stderr
    import kerasaudit as ka  # the library reads it the same way

    assert ka.evaluate(raw["model"], raw["data"]).accuracy == 1.0


def test_no_note_or_warning_for_a_model_that_takes_unit_values(
    tmp_path: Path, keras_module: Any
) -> None:
    from kerasaudit.input_space import expects_raw_pixels

    model = _model(keras_module, keras_module.layers.Rescaling(2.0, offset=-1.0))  # 0–1 → ±1
    assert expects_raw_pixels(model) is None
    x = _images(60, 2)
    y = model.predict(x.astype(np.float32) / 255, verbose=0).argmax(1)
    files = {"model": tmp_path / "unit.keras", "data": tmp_path / "d.npz"}
    model.save(files["model"])
    np.savez(files["data"], x=x, y=y.astype(np.uint8))
    accuracy, stderr = _evaluate(files)
    assert accuracy == 1.0 and "note:" not in stderr and "warning:" not in stderr


def test_a_normalization_adapted_on_raw_pixels_is_recognised(keras_module: Any) -> None:
    from kerasaudit.input_space import expects_raw_pixels

    layer = keras_module.layers.Normalization(name="norm")
    layer.adapt(np.random.default_rng(3).uniform(0, 255, (64, 8, 8, 1)).astype(np.float32))
    assert "normalises its input by a mean of 1" in (
        expects_raw_pixels(_model(keras_module, layer)) or ""
    )
    unit = keras_module.layers.Normalization(name="norm")
    unit.adapt(np.random.default_rng(3).uniform(0, 1, (64, 8, 8, 1)).astype(np.float32))
    assert expects_raw_pixels(_model(keras_module, unit)) is None


def test_unlabelled_data_is_warned_about_when_predictions_collapse(
    raw: dict[str, Path], keras_module: Any
) -> None:
    """Without labels the warning comes from the predictions: at the wrong scale the model
    sees near-black images and sends them all to one label; at the right one it does not."""
    from kerasaudit.data import DataSpec, open_data
    from kerasaudit.input_space import chance_warning
    from kerasaudit.loading import load_model

    model = load_model(raw["model"]).model
    unlabelled = open_data(DataSpec(raw["unlabelled"], scale="1/255"), (8, 8, 1), 3)
    warning = chance_warning(model, unlabelled, 3) or ""
    assert "sends 100% of the first 120 images" in warning and "to label 0" in warning
    assert "--scale none if the model was trained on 0–255 values" in warning
    as_trained = open_data(DataSpec(raw["unlabelled"], scale="none"), (8, 8, 1), 3)
    assert chance_warning(model, as_trained, 3) is None
    labelled = open_data(DataSpec(raw["data"], scale="1/255"), (8, 8, 1), 3)
    assert "labelled images" in (chance_warning(model, labelled, 3) or "")
    # Through the CLI: a trigger search on the unlabelled file at the wrong scale says so.
    searched = runner.invoke(app, ["reverse", str(raw["model"]), "-d", str(raw["unlabelled"]),
                                   "--scale", "1/255", "--steps", "2"])  # fmt: skip
    assert searched.exit_code in (0, 1), searched.output
    assert "warning: the model sends 100%" in searched.stderr


@pytest.mark.parametrize(
    ("arithmetic", "raw"),
    [
        (lambda x: x / 255.0, True),
        (lambda x: x * (1 / 255), True),
        (lambda x: (x - 127.5) / 127.5, True),
        (lambda x: x * 2.0 - 1.0, False),  # 0–1 in, ±1 to the convolutions
        (lambda x: x / 2.0, False),
    ],
)
def test_arithmetic_on_a_functional_input_is_read_like_a_rescaling_layer(
    tmp_path: Path, keras_module: Any, arithmetic: Any, raw: bool
) -> None:
    """``inputs / 255.0`` written in a Functional model (keras.ops in its graph) takes 0–255
    values as ``Rescaling(1/255)`` does: under --scale auto a uint8 file is read unscaled.
    Before 2026-12-07 such a model was refused as unsafe (the operation's module), and once
    admitted its data would have been divided by 255 twice."""
    from kerasaudit.input_space import expects_raw_pixels

    keras = keras_module
    inputs = keras.Input((8, 8, 1))
    conv = keras.layers.Conv2D(1, 3, name="conv")
    probs = keras.layers.Dense(3, activation="softmax", name="probs")
    outputs = probs(keras.layers.GlobalMaxPooling2D()(conv(arithmetic(inputs))))
    model = keras.Model(inputs, outputs)
    assert (expects_raw_pixels(model) is not None) == raw
    path = tmp_path / "ops.keras"
    model.save(path)
    np.savez(tmp_path / "d.npz", x=_images(30, 4), y=np.zeros(30, np.uint8))
    result = runner.invoke(app, ["evaluate", str(path), "-d", str(tmp_path / "d.npz")])
    assert result.exit_code == 0, result.output
    assert ("read unscaled" in result.stderr) == raw

"""Every supported format loads into a Keras 3 model that computes what the original computed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from kerasaudit.errors import BadInputError
from kerasaudit.inventory import build_inventory
from kerasaudit.loading import load_model, repair_keras2_config
from kerasaudit.safety import ModelFormat, detect_format


@pytest.mark.parametrize(
    ("key", "fmt", "version_prefix"),
    [
        ("keras", ModelFormat.KERAS, "3."),
        ("keras_nested", ModelFormat.KERAS, "3."),
        ("h5_keras3", ModelFormat.H5, "3."),
        ("h5_keras3_nested", ModelFormat.H5, "3."),
        ("h5_keras2", ModelFormat.H5, "2."),
        ("h5_keras22", ModelFormat.H5, "2.2"),
        ("savedmodel", ModelFormat.SAVEDMODEL, "2."),
        ("keras_keras2", ModelFormat.KERAS, "2."),
        ("keras_keras2_sep", ModelFormat.KERAS, "2."),
        ("h5_keras2_sep", ModelFormat.H5, "2."),
    ],
)
def test_each_format_loads_and_records_its_origin(
    model_files: dict[str, Path], key: str, fmt: ModelFormat, version_prefix: str
) -> None:
    loaded = load_model(model_files[key])
    assert loaded.format is fmt
    assert loaded.keras_version is not None and loaded.keras_version.startswith(version_prefix)
    assert loaded.safety.safe
    assert loaded.model.count_params() > 0


def _predict(model: object, x: np.ndarray) -> np.ndarray:
    return np.asarray(model(x, training=False))  # type: ignore[operator]


@pytest.mark.parametrize("key", ["keras", "keras_nested", "h5_keras3", "h5_keras3_nested"])
def test_keras3_round_trip_predictions_match(
    model_files: dict[str, Path], key: str, keras_module: object
) -> None:
    import keras

    x = np.load(model_files["probe"])
    original = keras.saving.load_model(model_files[key], compile=False)
    np.testing.assert_allclose(
        _predict(load_model(model_files[key]).model, x), _predict(original, x), atol=1e-6
    )


@pytest.mark.parametrize(
    ("key", "reference_key"),
    [
        ("h5_keras2", "h5_keras2"),
        ("h5_keras22", "h5_keras2"),
        ("savedmodel", "h5_keras2"),
        ("keras_keras2", "h5_keras2"),
        ("keras_keras2_sep", "h5_keras2_sep"),
        ("h5_keras2_sep", "h5_keras2_sep"),
        ("h5_keras2_ops", "h5_keras2_ops"),
        ("keras_keras2_ops", "h5_keras2_ops"),
    ],
)
def test_legacy_files_compute_what_tf_keras_computes(
    model_files: dict[str, Path], key: str, reference_key: str
) -> None:
    """Keras 2 files of every kind, the ``.keras`` format of tf.keras 2.13+ included (before
    2026-12-07 refused as naming a module outside Keras, or not rebuilt) and separable
    convolutions in ``.h5`` (before: "Unrecognized keyword arguments passed to
    SeparableConv2D"), and TF functions applied to a Functional model's tensors (``inputs /
    255.0``, ``tf.nn.relu6``, ``tf.nn.softmax``: Keras 2 ``TFOpLambda`` layers, before
    2026-12-07 refused as code and not loadable by Keras 3 even with ``--unsafe``)."""
    import tf_keras

    x = np.load(model_files["probe"])
    # Our own fixture file, so loading it with tf-keras here is safe; kerasaudit never does for .h5.
    reference = tf_keras.models.load_model(model_files[reference_key], compile=False).predict(
        x, verbose=0
    )
    np.testing.assert_allclose(
        _predict(load_model(model_files[key]).model, x), reference, atol=1e-5
    )


def test_inventory_finds_nested_layers_and_their_batchnorm(model_files: dict[str, Path]) -> None:
    inventory = build_inventory(load_model(model_files["h5_keras2"]))
    layers = {layer.path: layer for layer in inventory.auditable}
    assert set(layers) == {"features/f_conv1", "dw"}
    conv = layers["features/f_conv1"]
    assert (conv.batch_norm, conv.post_activation, conv.measured_after) == (
        "features/f_bn1",
        "features/f_relu1",
        "features/f_relu1",
    )
    assert conv.channels == 6 and conv.kernel_size == (3, 3)
    assert layers["dw"].class_name == "DepthwiseConv2D" and layers["dw"].channels == 6
    assert layers["dw"].batch_norm is None and layers["dw"].activation == "relu"
    assert inventory.inputs[0].shape == (None, 8, 8, 1)
    assert inventory.outputs[0].shape == (None, 3)


def test_inventory_dense_only_on_request(model_files: dict[str, Path]) -> None:
    loaded = load_model(model_files["keras"])
    assert "probs" not in {layer.path for layer in build_inventory(loaded).auditable}
    dense = build_inventory(loaded, include_dense=True)
    assert {layer.path for layer in dense.auditable} >= {"probs"}


def test_format_is_detected_by_bytes_not_extension(
    model_files: dict[str, Path], tmp_path: Path
) -> None:
    disguised = tmp_path / "model.bin"
    disguised.write_bytes(model_files["h5_keras3"].read_bytes())
    assert detect_format(disguised) is ModelFormat.H5
    assert load_model(disguised).format is ModelFormat.H5
    zipped = tmp_path / "model.h5"
    zipped.write_bytes(model_files["keras"].read_bytes())
    assert load_model(zipped).format is ModelFormat.KERAS


def test_the_input_file_is_never_modified(model_files: dict[str, Path]) -> None:
    path = model_files["h5_keras2"]  # the legacy repair edits a private copy only
    before = (path.read_bytes(), path.stat().st_mtime_ns)
    load_model(path)
    assert (path.read_bytes(), path.stat().st_mtime_ns) == before


def test_keras2_nested_node_indices_are_renumbered() -> None:
    config = {
        "class_name": "Functional",
        "config": {
            "layers": [
                {
                    "class_name": "InputLayer",
                    "name": "in",
                    "config": {"name": "in"},
                    "inbound_nodes": [],
                },
                {
                    "class_name": "Sequential",
                    "name": "seq",
                    "config": {"name": "seq"},
                    "inbound_nodes": [[["in", 0, 0, {}]]],
                },
                {
                    "class_name": "Dense",
                    "name": "d",
                    "config": {"name": "d"},
                    "inbound_nodes": [[["seq", 1, 0, {}]]],
                },
            ],
            "input_layers": [["in", 0, 0]],
            "output_layers": [["seq", 1, 0]],
        },
    }
    assert repair_keras2_config(config) == 2
    assert config["config"]["layers"][2]["inbound_nodes"] == [[["seq", 0, 0, {}]]]
    assert config["config"]["output_layers"] == [["seq", 0, 0]]
    assert config["config"]["input_layers"] == [["in", 0, 0]]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p / "missing.keras", "no such file"),
        (lambda p: p, "not a model"),
        (
            lambda p: _write(p / "random.keras", np.random.default_rng(0).bytes(4096)),
            "not a model file",
        ),
        (lambda p: _write(p / "empty.h5", b""), "not a model file"),
        (lambda p: _write(p / "fake.keras", b"PK\x03\x04" + b"\0" * 100), "corrupt"),
        (lambda p: _write(p / "fake.h5", b"\x89HDF\r\n\x1a\n" + b"\0" * 100), "corrupt"),
    ],
    ids=["missing", "directory", "random-bytes", "empty", "bad-zip", "bad-hdf5"],
)
def test_bad_model_inputs_raise_bad_input(tmp_path: Path, make: object, message: str) -> None:
    path = make(tmp_path)  # type: ignore[operator]
    with pytest.raises(BadInputError, match=message):
        load_model(path)


def test_truncated_files_are_bad_input(model_files: dict[str, Path], tmp_path: Path) -> None:
    for key in ("keras", "h5_keras3"):
        data = model_files[key].read_bytes()
        truncated = _write(tmp_path / f"truncated_{model_files[key].name}", data[: len(data) // 2])
        with pytest.raises(BadInputError):
            load_model(truncated)


def test_weights_only_h5_is_bad_input(model_files: dict[str, Path], tmp_path: Path) -> None:
    model = load_model(model_files["keras"]).model
    weights = tmp_path / "only.weights.h5"
    model.save_weights(weights)
    with pytest.raises(BadInputError):
        load_model(weights)


def test_remote_paths_are_refused() -> None:
    with pytest.raises(BadInputError, match="local"):
        load_model(Path("gs://bucket/model.keras"))


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_fifos_and_devices_are_refused_without_being_read(tmp_path: Path) -> None:
    import os

    fifo = tmp_path / "model.keras"
    os.mkfifo(fifo)  # opening it for reading would block forever
    for path in (fifo, Path("/dev/zero")):
        with pytest.raises(BadInputError, match="not a regular file"):
            load_model(path)


def test_the_private_directory_is_removed_whatever_happens(
    model_files: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tempfile

    root = tmp_path / "tmproot"
    root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(root))
    load_model(model_files["keras"])
    load_model(model_files["savedmodel"])  # the conversion to .h5 happens in there too
    with pytest.raises(BadInputError):
        load_model(_write(tmp_path / "bad.h5", b"\x89HDF\r\n\x1a\n" + b"\0" * 100))
    assert list(root.iterdir()) == []


@pytest.mark.parametrize("key", ["keras", "h5_keras2", "savedmodel"])
def test_sandboxed_and_in_process_loads_compute_the_same(
    model_files: dict[str, Path], key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    x = np.load(model_files["probe"])
    sandboxed = load_model(model_files[key])
    monkeypatch.setenv("KERASAUDIT_SANDBOX", "0")
    in_process = load_model(model_files[key])
    assert sandboxed.safety == in_process.safety
    np.testing.assert_allclose(_predict(sandboxed.model, x), _predict(in_process.model, x))


def test_sandbox_reports_cross_the_process_boundary_intact(model_files: dict[str, Path]) -> None:
    from kerasaudit.safety import SafetyReport, check_model_file

    report = check_model_file(model_files["h5_keras2"])
    assert SafetyReport.from_dict(report.to_dict()) == report


def test_custom_objects_given_by_a_relative_path_reach_the_sandboxed_load(
    keras_module: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    keras: Any = keras_module
    (tmp_path / "my_layers.py").write_text(
        "import keras\n\n"
        "@keras.saving.register_keras_serializable(package='rel')\n"
        "class Twice(keras.layers.Layer):\n"
        "    def call(self, x):\n"
        "        return x * 2.0\n"
    )
    namespace: dict[str, Any] = {}
    exec(compile((tmp_path / "my_layers.py").read_text(), "my_layers.py", "exec"), namespace)
    inputs = keras.Input((3,))
    keras.Model(inputs, namespace["Twice"](name="twice")(inputs)).save(tmp_path / "twice.keras")
    monkeypatch.chdir(tmp_path)
    loaded = load_model(Path("twice.keras"), custom_objects_file=Path("my_layers.py"))
    np.testing.assert_allclose(_predict(loaded.model, np.ones((1, 3), "float32")), 2.0)


def test_keras2_operations_are_rebuilt_as_keras3_layers_and_others_refused(
    model_files: dict[str, Path],
) -> None:
    """The rebuilt model's layers are Keras 3's own (a `Rescaling` for each arithmetic with a
    number; `Add`, `Subtract`, `Multiply`, `Maximum`, `Minimum` for arithmetic between two
    tensors and `Concatenate` for `tf.concat`, before 2026-12-07 refused; `ReLU`,
    `Activation`, `Softmax`, `LeakyReLU`; global pooling for a spatial mean; `Reshape`), its
    data is read as 0–255 values since it divides by 255 itself, and a TF function kerasaudit
    does not rebuild (a cumulative sum) is refused, naming it."""
    from kerasaudit.errors import UnsafeModelError
    from kerasaudit.input_space import expects_raw_pixels

    model = load_model(model_files["h5_keras2_ops"]).model
    kinds = [type(layer).__name__ for layer in model.layers]
    assert "TFOpLambda" not in kinds
    assert kinds.count("Rescaling") == 4
    assert {"ReLU", "Activation", "Softmax", "LeakyReLU", "Reshape"} <= set(kinds)
    assert {"Add", "Subtract", "Multiply", "Maximum", "Minimum"} <= set(kinds)
    assert kinds.count("Concatenate") == 2  # tf.concat's and the model's own layer
    assert "GlobalAveragePooling2D" in kinds
    assert "rescales its input ×0.003922" in (expects_raw_pixels(model) or "")
    with pytest.raises(UnsafeModelError, match=r"TFOpLambda layer calling tf\.math\.cumsum"):
        load_model(model_files["h5_keras2_unrebuilt"])

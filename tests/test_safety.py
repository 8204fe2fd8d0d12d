"""Malicious model files: each would run code, change global state or exhaust memory if Keras
(or tf-keras) were handed it. kerasaudit must refuse each one before that happens."""

from __future__ import annotations

import json
import resource
import shutil
import time
import zipfile
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
from conftest import find_layer_config

from kerasaudit.errors import ExitCode, UnsafeModelError
from kerasaudit.loading import load_model
from kerasaudit.safety import check_model_file


def _lambda_model(keras: Any, marker: Path) -> Any:
    target = str(marker)
    inputs = keras.Input((4,))
    # The payload: creating a file (and changing global state) when the layer is rebuilt/called.
    evil = keras.layers.Lambda(
        lambda x: (__import__("pathlib").Path(target).write_text("pwned"), x)[1], name="evil"
    )
    return keras.Model(inputs, keras.layers.Dense(2)(evil(inputs)))


def _assert_refused(
    path: Path, *, category: str, where: str | None = None, **kwargs: Any
) -> UnsafeModelError:
    report = check_model_file(path)
    assert not report.safe, report
    assert category in {f.category for f in report.findings}, report.findings
    with pytest.raises(UnsafeModelError) as excinfo:
        load_model(path, **kwargs)
    assert excinfo.value.exit_code is ExitCode.UNSAFE
    if where is not None:
        assert where in str(excinfo.value)
    return excinfo.value


def test_lambda_in_keras_archive_is_refused_even_if_unsafe_mode_was_enabled_globally(
    keras_module: Any, tmp_path: Path, marker: Path
) -> None:
    keras = keras_module
    path = tmp_path / "lambda.keras"
    _lambda_model(keras, marker).save(path)
    marker.unlink(missing_ok=True)
    from keras.src import backend

    keras.config.enable_unsafe_deserialization()  # process-wide: overrides Keras' own safe_mode
    try:
        error = _assert_refused(path, category="code", where="evil")
        assert "Lambda" in str(error)
    finally:
        backend.common.global_state.set_global_attribute("safe_mode_saving", None)
    assert not marker.exists()


def test_lambda_bytecode_in_legacy_keras2_h5_is_refused(tmp_path: Path, marker: Path) -> None:
    import tf_keras as k2

    target = str(marker)
    inputs = k2.Input((4,))
    evil = k2.layers.Lambda(lambda x: (open(target, "w").write("pwned"), x)[1], name="evil")  # noqa: SIM115
    model = k2.Model(inputs, k2.layers.Dense(2)(evil(inputs)))
    path = tmp_path / "lambda_k2.h5"
    model.save(path)
    marker.unlink(missing_ok=True)
    _assert_refused(path, category="code", where="evil")
    assert not marker.exists()


def test_non_modelling_keras_function_is_refused_and_global_state_unchanged(
    keras_module: Any, model_files: dict[str, Path], edit_keras_config: Any
) -> None:
    keras = keras_module

    def point_activation_at_set_floatx(config: dict[str, Any]) -> None:
        conv = find_layer_config(config, "conv2")
        conv["config"]["activation"] = {
            "module": "keras.config",
            "class_name": "function",
            "config": "set_floatx",
            "registered_name": "function",
        }

    path = edit_keras_config(model_files["keras"], point_activation_at_set_floatx, "floatx.keras")
    before = keras.config.floatx()
    _assert_refused(path, category="module", where="conv2")
    assert keras.config.floatx() == before


@pytest.mark.parametrize(
    ("class_name", "module", "registered", "category"),
    [
        ("TFSMLayer", "keras.layers", None, "code"),
        ("TorchModuleWrapper", "keras.layers", None, "code"),
        ("Popen", "subprocess", None, "unknown-class"),
        ("Dense", "os", None, "module"),
        ("Dense", "keras.layers", "evil_pkg>Dense", "custom"),
        # keras.ops operations: control flow takes Python functions; others only from Keras
        ("Map", "keras.src.ops.core", None, "unknown-class"),
        ("Relu", "os", None, "unknown-class"),
        ("Softmax", "keras.src.ops.nn", "evil_pkg>Softmax", "custom"),
    ],
)
def test_objects_outside_the_allowlist_are_refused(
    model_files: dict[str, Path],
    edit_keras_config: Any,
    class_name: str,
    module: str,
    registered: str | None,
    category: str,
) -> None:
    def swap(config: dict[str, Any]) -> None:
        layer = find_layer_config(config, "probs")
        layer.update({"class_name": class_name, "module": module, "registered_name": registered})

    path = edit_keras_config(model_files["keras"], swap, f"{class_name}.keras")
    _assert_refused(path, category=category, where="probs")


def test_layers_hidden_in_nested_models_are_found(
    model_files: dict[str, Path], edit_keras_config: Any
) -> None:
    def hide_lambda(config: dict[str, Any]) -> None:
        find_layer_config(config, "f_relu1")["class_name"] = "Lambda"

    path = edit_keras_config(model_files["keras_nested"], hide_lambda, "nested_lambda.keras")
    _assert_refused(path, category="code", where="features/f_relu1")


def test_huge_declared_layer_is_refused_before_allocating(
    model_files: dict[str, Path], edit_keras_config: Any
) -> None:
    def huge(config: dict[str, Any]) -> None:
        find_layer_config(config, "probs")["config"]["units"] = 10**8

    path = edit_keras_config(model_files["keras"], huge, "huge.keras")
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    error = _assert_refused(path, category="resources")
    assert "declares at least" in str(error)
    assert time.perf_counter() - start < 10
    # Building it would have allocated ≥ 0.4 GB for the bias alone (5.8 GB measured for the kernel).
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before < 200 * 1024


def test_oversized_config_json_is_refused_without_reading_it(
    tmp_path: Path, model_files: dict[str, Path]
) -> None:
    path = tmp_path / "bomb.keras"
    with (
        zipfile.ZipFile(model_files["keras"]) as zin,
        zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zout,
    ):
        for item in zin.infolist():
            if item.filename != "config.json":
                zout.writestr(item.filename, zin.read(item.filename))
        # 48 MB of whitespace deflates to ~50 KB: the small-file/huge-config attack.
        with zout.open("config.json", "w") as member:
            member.write(b"{" + b" " * (48 * 1024 * 1024) + b"}")
    assert path.stat().st_size < 1024 * 1024
    _assert_refused(path, category="resources")


def test_deeply_nested_config_is_refused_without_recursion_error(
    tmp_path: Path, model_files: dict[str, Path]
) -> None:
    path = tmp_path / "deep.keras"
    with zipfile.ZipFile(model_files["keras"]) as zin, zipfile.ZipFile(path, "w") as zout:
        for item in zin.infolist():
            data = zin.read(item.filename)
            if item.filename == "config.json":
                data = b"[" * 100_000 + b"]" * 100_000
            zout.writestr(item, data)
    _assert_refused(path, category="resources")


def test_path_like_strings_are_refused(
    model_files: dict[str, Path], edit_keras_config: Any
) -> None:
    def vocabulary_file(config: dict[str, Any]) -> None:
        find_layer_config(config, "gap")["config"]["vocabulary"] = "/etc/passwd"

    path = edit_keras_config(model_files["keras"], vocabulary_file, "vocab.keras")
    _assert_refused(path, category="path", where="gap")


def test_hdf5_external_link_and_virtual_dataset_are_refused(
    model_files: dict[str, Path], tmp_path: Path
) -> None:
    secret = tmp_path / "secret.h5"
    with h5py.File(secret, "w") as f:
        f["data"] = np.arange(10.0)
    linked = tmp_path / "linked.h5"
    shutil.copyfile(model_files["h5_keras3"], linked)
    with h5py.File(linked, "r+") as f:
        f["model_weights"]["stolen"] = h5py.ExternalLink(str(secret), "/data")
    _assert_refused(linked, category="hdf5")

    virtual = tmp_path / "virtual.h5"
    shutil.copyfile(model_files["h5_keras3"], virtual)
    layout = h5py.VirtualLayout(shape=(10,), dtype="f8")
    layout[:] = h5py.VirtualSource(str(secret), "data", shape=(10,))
    with h5py.File(virtual, "r+") as f:
        f["model_weights"].create_virtual_dataset("vds", layout)
    _assert_refused(virtual, category="hdf5")


def test_h5_declaring_far_more_weights_than_stored_is_refused(
    model_files: dict[str, Path], tmp_path: Path
) -> None:
    path = tmp_path / "inflated.h5"
    shutil.copyfile(model_files["h5_keras3"], path)
    with h5py.File(path, "r+") as f:
        config = json.loads(f.attrs["model_config"])
        find_layer_config(config, "probs")["config"]["units"] = 50_000_000
        f.attrs["model_config"] = json.dumps(config)
    _assert_refused(path, category="resources")


def test_savedmodel_with_file_writing_op_and_custom_layer_is_refused(
    tmp_path: Path, marker: Path
) -> None:
    import tensorflow as tf
    import tf_keras as k2

    target = str(marker)

    class Exfiltrate(k2.layers.Layer):  # type: ignore[misc]
        def call(self, x: Any) -> Any:
            with tf.control_dependencies([tf.io.write_file(target, "pwned")]):
                return tf.identity(x)

    inputs = k2.Input((4,))
    model = k2.Model(inputs, k2.layers.Dense(2)(Exfiltrate(name="exfil")(inputs)))
    path = tmp_path / "evil_savedmodel"
    model.save(path, save_format="tf")
    marker.unlink(missing_ok=True)
    report = check_model_file(path)
    assert any(f.category == "graph-op" and "WriteFile" in f.reason for f in report.findings)
    assert any(f.category == "unknown-class" and "exfil" in f.where for f in report.findings)
    with pytest.raises(UnsafeModelError):
        load_model(path)
    assert not marker.exists()


def test_savedmodel_with_symlink_is_refused(model_files: dict[str, Path], tmp_path: Path) -> None:
    path = tmp_path / "linked_savedmodel"
    shutil.copytree(model_files["savedmodel"], path)
    (path / "assets" / "passwd").symlink_to("/etc/passwd")
    _assert_refused(path, category="path")


def test_unsafe_flag_loads_and_reports_findings(keras_module: Any, tmp_path: Path) -> None:
    keras = keras_module
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Lambda(lambda x: x * 2.0, name="double")(inputs))
    path = tmp_path / "benign_lambda.keras"
    model.save(path)
    _assert_refused(path, category="code", where="double")
    loaded = load_model(path, unsafe=True)
    assert loaded.unsafe and not loaded.safety.safe
    np.testing.assert_allclose(np.asarray(loaded.model(np.ones((1, 4), "float32"))), 2.0)


def test_custom_objects_file_admits_only_what_it_names(keras_module: Any, tmp_path: Path) -> None:
    keras = keras_module
    module_file = tmp_path / "my_layers.py"
    module_file.write_text(
        "import keras\n\n"
        "@keras.saving.register_keras_serializable(package='tests')\n"
        "class Scale(keras.layers.Layer):\n"
        "    def __init__(self, factor=2.0, **kwargs):\n"
        "        super().__init__(**kwargs)\n"
        "        self.factor = factor\n"
        "    def call(self, x):\n"
        "        return x * self.factor\n"
        "    def get_config(self):\n"
        "        return {**super().get_config(), 'factor': self.factor}\n"
    )
    namespace: dict[str, Any] = {}
    exec(compile(module_file.read_text(), str(module_file), "exec"), namespace)
    inputs = keras.Input((4,))
    model = keras.Model(inputs, namespace["Scale"](3.0, name="scale")(inputs))
    path = tmp_path / "custom.keras"
    model.save(path)
    _assert_refused(path, category="unknown-class", where="scale")
    loaded = load_model(path, custom_objects_file=module_file)
    assert "tests>Scale" in loaded.custom_objects
    np.testing.assert_allclose(np.asarray(loaded.model(np.ones((1, 4), "float32"))), 3.0)


@pytest.mark.parametrize(
    "key",
    [
        "keras",
        "keras_nested",
        "h5_keras3",
        "h5_keras2",
        "h5_keras22",
        "savedmodel",
        "h5_keras2_ops",
        "keras_keras2_ops",
    ],
)
def test_benign_models_pass_every_check(model_files: dict[str, Path], key: str) -> None:
    report = check_model_file(model_files[key])
    assert report.safe, report.findings
    assert (
        report.stored_params is not None
        and report.declared_params_lower_bound <= report.stored_params
    )


# --------------------------------------------------------------------------------------------
# What a config makes Keras allocate, inferred from the graph (kerasaudit._shapes)
# --------------------------------------------------------------------------------------------


def _varied_models(keras: Any) -> dict[str, Any]:
    layers = keras.layers

    def rnn() -> Any:
        inputs = keras.Input((12, 8))
        x = layers.Bidirectional(layers.LSTM(16, return_sequences=True))(inputs)
        x = layers.GRU(8)(x)
        return keras.Model(inputs, layers.Dense(3)(x))

    def attention() -> Any:
        inputs = keras.Input((10,), dtype="int32")
        e = layers.Embedding(100, 32)(inputs)
        a = layers.MultiHeadAttention(4, 8)(e, e)
        x = layers.LayerNormalization()(layers.Add()([e, a]))
        x = layers.TimeDistributed(layers.Dense(16))(x)
        x = layers.Conv1D(8, 3, padding="causal")(x)
        return keras.Model(inputs, layers.Dense(2)(layers.GlobalMaxPooling1D()(x)))

    def convolutions() -> Any:
        inputs = keras.Input((16, 16, 3))
        x = layers.Conv2DTranspose(4, 3, strides=2, padding="same")(inputs)
        x = layers.SeparableConv2D(6, 3)(x)
        x = layers.DepthwiseConv2D(3, depth_multiplier=2)(x)
        x = layers.Cropping2D(((1, 0), (0, 1)))(layers.ZeroPadding2D(2)(x))
        x = layers.MaxPooling2D(3, strides=2)(layers.UpSampling2D()(x))
        x = layers.GroupNormalization(3)(layers.PReLU()(x))
        x = layers.Conv2D(8, 3, groups=4, dilation_rate=2)(x)
        x = layers.Flatten()(layers.Reshape((-1, 8))(layers.Permute((2, 1, 3))(x)))
        c = layers.Concatenate()([layers.Dense(5)(x), layers.Dense(5)(x)])
        return keras.Model(inputs, layers.EinsumDense("ab,bc->ac", 7, bias_axes="c")(c))

    def nested() -> Any:
        inner = keras.Sequential([keras.Input((28, 28, 1)), layers.Conv2D(8, 3)], name="inner")
        inputs = keras.Input((28, 28, 1))
        x = layers.BatchNormalization()(inner(inputs))
        return keras.Model(inputs, layers.Dense(10)(layers.Flatten()(x)))

    def operations() -> Any:  # keras.ops on symbolic tensors: Operations in the graph
        inputs = keras.Input((28, 28, 1))
        x = keras.ops.relu(layers.Conv2D(8, 3)(inputs / 255.0 * 2.0 - 1.0))
        x = keras.ops.mean(keras.ops.maximum(layers.Conv2D(4, 3)(x), 0.0), axis=(1, 2))
        return keras.Model(inputs, keras.ops.softmax(layers.Dense(10)(x)))

    return {
        "rnn": rnn(),
        "attention": attention(),
        "convolutions": convolutions(),
        "nested": nested(),
        "operations": operations(),
    }


def test_a_model_with_keras_ops_in_its_graph_loads_safely(
    keras_module: Any, tmp_path: Path
) -> None:
    """``inputs / 255.0`` or ``keras.ops.relu(x)`` in a Functional model saves Keras's own
    operations by module and class; before 2026-12-07 such a model was refused as unsafe
    ("names module 'keras.src.ops.nn', outside Keras"). It loads, and predicts as the
    original does."""
    from kerasaudit.loading import load_model

    model = _varied_models(keras_module)["operations"]
    path = tmp_path / "operations.keras"
    model.save(path)
    report = check_model_file(path)
    assert report.safe, report.findings
    loaded = load_model(path).model
    x = np.random.default_rng(0).uniform(0, 255, (4, 28, 28, 1)).astype(np.float32)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0))


def test_declared_weights_are_exactly_what_keras_allocates(keras_module: Any) -> None:
    from kerasaudit._shapes import declared_weights

    for name, model in _varied_models(keras_module).items():
        config = json.loads(json.dumps(keras_module.saving.serialize_keras_object(model)))
        allocated = sum(int(np.prod(w.shape)) for w in model.weights)
        assert declared_weights(config) == allocated, name


def test_input_widths_come_from_the_graph_not_build_config(
    model_files: dict[str, Path], edit_keras_config: Any
) -> None:
    def widen_and_hide(config: dict[str, Any]) -> None:
        for name in ("f_conv1", "conv2"):
            find_layer_config(config, name)["config"]["filters"] = 40_000
        stack: list[Any] = [config]
        while stack:
            item = stack.pop()
            if isinstance(item, dict):
                item.pop("build_config", None)
                stack.extend(item.values())
            elif isinstance(item, list):
                stack.extend(item)

    path = edit_keras_config(model_files["keras"], widen_and_hide, "wide.keras")
    report = check_model_file(path)
    # conv2's kernel alone: 3 × 3 × 40,000 (f_conv1's width, via BatchNorm and ReLU) × 40,000.
    assert report.declared_params_lower_bound >= 9 * 40_000 * 40_000
    assert any("declares at least" in f.reason for f in report.findings)


def test_json_is_parsed_under_caps_checked_before_parsing() -> None:
    from kerasaudit.safety import MAX_CONFIG_DEPTH, _Refused, json_depth, parse_config_json

    assert json_depth([[{"a": [1]}]]) == 4
    for raw, words in [
        ("[" * 100_000 + "]" * 100_000, "deeper"),
        ("[" * (MAX_CONFIG_DEPTH + 5) + "]" * (MAX_CONFIG_DEPTH + 5), "levels deep"),
        ("[" + "{}," * 600_000 + "{}]", "objects/arrays"),
        ("[" + "1," * 3_000_000 + "1]", "items"),
        (b"\xff\xfe", "UTF-8"),
        ("{'single': 'quotes'}", "not valid JSON"),
    ]:
        with pytest.raises(_Refused) as excinfo:
            parse_config_json(raw, "config.json")
        assert words in excinfo.value.finding.reason


def test_variable_length_attributes_are_bounded_before_they_are_read(tmp_path: Path) -> None:
    from kerasaudit.safety import largest_global_heap

    path = tmp_path / "vlen.h5"
    with h5py.File(path, "w") as f:
        f.attrs["small"] = "x" * 1000
        # What get_storage_size() reports for a variable-length string: its 16-byte reference.
        assert f.attrs.get_id("small").get_storage_size() == 16
    with path.open("rb") as fh:
        assert 1000 <= largest_global_heap(fh) < 64 * 1024
    with h5py.File(path, "r+") as f:
        f.attrs["big"] = "y" * (3 << 20)
    with path.open("rb") as fh:
        assert largest_global_heap(fh) >= 3 << 20


def test_custom_objects_admit_only_the_name_keras_resolves() -> None:
    from kerasaudit.safety import check_config

    spoofed = {
        "module": "keras.config",
        "class_name": "function",
        "config": "set_floatx",
        "registered_name": "tests>Scale",
    }
    findings, _ = check_config(spoofed, custom={"tests>Scale"})
    assert [f.category for f in findings] == ["module"]
    genuine = {
        "module": None,
        "class_name": "Scale",
        "config": {},
        "registered_name": "tests>Scale",
    }
    assert check_config(genuine, custom={"tests>Scale"})[0] == []
    renamed = {"module": "subprocess", "class_name": "tests>Scale", "registered_name": "Popen"}
    assert check_config(renamed, custom={"tests>Scale"})[0] != []


def test_vocabularies_inline_or_as_assets_are_not_paths(keras_module: Any, tmp_path: Path) -> None:
    keras = keras_module
    inline = keras.Input((1,), dtype="string")
    lookup = keras.layers.StringLookup(vocabulary=["a", "b", "c"], name="lookup")
    keras.Model(inline, lookup(inline)).save(tmp_path / "inline.keras")
    vectorize = keras.layers.TextVectorization(max_tokens=20, output_sequence_length=4)
    vectorize.adapt(np.array(["a b c", "the cat sat"]))
    text = keras.Input((1,), dtype="string")
    keras.Model(text, vectorize(text)).save(tmp_path / "assets.keras")
    with zipfile.ZipFile(tmp_path / "assets.keras") as archive:
        assert any(name.startswith("assets/") for name in archive.namelist())
    for name in ("inline.keras", "assets.keras"):
        assert check_model_file(tmp_path / name).safe, name
        loaded = load_model(tmp_path / name)
        assert np.asarray(loaded.model(np.array([["b c"]]))).size > 0


def _custom_loss(y_true: Any, y_pred: Any) -> Any:
    from kerasaudit import _tf

    return _tf.keras().losses.sparse_categorical_crossentropy(y_true, y_pred)


def test_a_custom_loss_in_the_training_configuration_is_reported_not_refused(
    keras_module: Any, tmp_path: Path, marker: Path
) -> None:
    """A model compiled with a custom loss (a common sight) names a function the allowlist does
    not know — in its training configuration, which kerasaudit never loads (models load
    uncompiled). Refusing it sent users to --unsafe, which disables every check. Even a
    reference to a module that would run code on import stays unimported."""
    keras = keras_module
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])
    model.compile(optimizer="adam", loss=_custom_loss)
    path = tmp_path / "custom_loss.keras"
    model.save(path)
    report = check_model_file(path)
    assert report.safe and not report.findings
    assert any(
        "_custom_loss" in f.reason and f.where.startswith("compile_config") for f in report.ignored
    )
    loaded = load_model(path)
    assert loaded.safety.ignored == report.ignored  # across the sandbox boundary too

    # A module whose import writes the marker, named as the loss: never imported.
    module = tmp_path / "payload_on_import.py"
    module.write_text(f"open({str(marker)!r}, 'w').write('pwned')\ndef f(a, b):\n    return a\n")
    hostile = tmp_path / "hostile_loss.keras"
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(hostile, "w") as out:
        for item in src.infolist():
            data = src.read(item.filename)
            if item.filename == "config.json":
                config = json.loads(data)
                config["compile_config"]["loss"] = {
                    "module": "payload_on_import", "class_name": "function", "config": "f",
                    "registered_name": "function",
                }  # fmt: skip
                data = json.dumps(config).encode()
            out.writestr(item, data)
    import sys

    sys.path.insert(0, str(tmp_path))
    try:
        marker.unlink(missing_ok=True)
        loaded = load_model(hostile)
        assert not marker.exists()
        assert any("payload_on_import" in f.reason for f in loaded.safety.ignored)
    finally:
        sys.path.remove(str(tmp_path))

    from typer.testing import CliRunner

    from kerasaudit.cli.app import app

    shown = CliRunner().invoke(app, ["inspect", str(path), "--format", "json"])
    assert shown.exit_code == 0, shown.output
    not_loaded = json.loads(shown.stdout)["not_loaded"]
    assert any("_custom_loss" in line for line in not_loaded)
    assert not any(line.startswith("compile_config: compile_config") for line in not_loaded)
    # The model's own config is still checked in full: a Lambda layer is refused as before.
    _lambda_model(keras, marker).save(tmp_path / "lambda.keras")
    _assert_refused(tmp_path / "lambda.keras", category="code", where="evil")


def _rewrite_members(src: Path, dst: Path, edit: dict[str, Any]) -> Path:
    """A copy of the .keras archive ``src`` with the JSON members in ``edit`` changed by it."""
    with zipfile.ZipFile(src) as archive, zipfile.ZipFile(dst, "w") as out:
        for info in archive.infolist():
            data = archive.read(info.filename)
            if info.filename in edit:
                data = json.dumps(edit[info.filename](json.loads(data))).encode()
            out.writestr(info.filename, data)
    return dst


def test_keras2_engine_modules_are_admitted_only_in_a_keras2_archive(
    model_files: dict[str, Path], tmp_path: Path
) -> None:
    """Keras 2's `.keras` names its own engine modules (``keras.src.engine.functional``,
    ``tf_keras.src...``); they are admitted for a file whose metadata says Keras 2, which is
    rebuilt from class names alone. The same modules in a file that says Keras 3 (whose loader
    would import them) are refused, and so is any other module in a Keras 2 file."""
    keras2 = model_files["keras_keras2"]
    with zipfile.ZipFile(keras2) as archive:
        modules = json.dumps(json.loads(archive.read("config.json")))
    assert "tf_keras.src.engine" in modules
    assert check_model_file(keras2).safe

    def claim_keras3(metadata: dict[str, Any]) -> dict[str, Any]:
        return {**metadata, "keras_version": "3.15.1"}

    relabelled = _rewrite_members(keras2, tmp_path / "k3.keras", {"metadata.json": claim_keras3})
    _assert_refused(relabelled, category="module", where="<model>")

    def os_module(config: dict[str, Any]) -> dict[str, Any]:
        find_layer_config(config, "probs")["module"] = "os"
        return config

    hostile = _rewrite_members(keras2, tmp_path / "os.keras", {"config.json": os_module})
    _assert_refused(hostile, category="module", where="probs")


def test_a_keras2_operation_layer_is_admitted_only_as_keras2_wrote_it(
    model_files: dict[str, Path], tmp_path: Path
) -> None:
    """A Keras 2 `.keras` with `inputs / 255.0` (a TFOpLambda the loader rebuilds as a
    Rescaling layer) passes; the same layer naming another module, or in a file that says
    Keras 3, is refused."""
    source = model_files["keras_keras2_ops"]
    assert check_model_file(source).safe

    def os_module(config: dict[str, Any]) -> dict[str, Any]:
        find_layer_config(config, "tf.math.truediv")["module"] = "os"
        return config

    hostile = _rewrite_members(source, tmp_path / "os.keras", {"config.json": os_module})
    _assert_refused(hostile, category="code", where="tf.math.truediv")

    def claim_keras3(metadata: dict[str, Any]) -> dict[str, Any]:
        return {**metadata, "keras_version": "3.15.1"}

    relabelled = _rewrite_members(source, tmp_path / "k3.keras", {"metadata.json": claim_keras3})
    findings = check_model_file(relabelled).findings
    assert any(f.where == "tf.math.truediv" and "TFOpLambda" in f.reason for f in findings)

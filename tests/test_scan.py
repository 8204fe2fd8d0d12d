"""The scan stage: fused statistics equal a plain NumPy computation, shards merge exactly,
statistics files round-trip, and flags follow the median/MAD rule."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import build_bn_cnn

from kerasaudit import flags as flags_lib
from kerasaudit.errors import BadInputError
from kerasaudit.stages import scan as scan_lib

RTOL = 1e-5
ATOL = 1e-5


def build_mixed(keras: Any) -> Any:
    """12×12×2 input: a linear (signed) conv, a nested Functional block holding
    Conv→BN→ReLU and a signed depthwise conv, a nested Sequential, and a plain conv+ReLU."""
    keras.utils.set_random_seed(1)
    layers = keras.layers
    block_in = keras.Input((12, 12, 5), name="block_in")
    y = layers.Conv2D(4, 3, padding="same", use_bias=False, name="b_conv")(block_in)
    y = layers.BatchNormalization(name="b_bn")(y)
    y = layers.ReLU(name="b_relu")(y)
    y = layers.DepthwiseConv2D(3, name="b_dw")(y)
    block = keras.Model(block_in, y, name="block")
    stack = keras.Sequential(
        [keras.Input((10, 10, 4)), layers.Conv2D(6, 3, activation="relu", name="s_conv")],
        name="stack",
    )
    inputs = keras.Input((12, 12, 2), name="image")
    x = layers.Conv2D(5, 3, padding="same", name="linear_conv")(inputs)
    x = block(x)
    x = stack(x)
    x = layers.Conv2D(4, 3, activation="relu", name="top_conv")(x)
    x = layers.GlobalAveragePooling2D()(x)
    outputs = layers.Dense(3, activation="softmax", name="probs")(x)
    model = keras.Model(inputs, outputs, name="mixed")
    bn = block.get_layer("b_bn")
    rng = np.random.default_rng(1)
    bn.set_weights(
        [
            rng.uniform(0.5, 1.5, 4).astype("float32"),
            rng.uniform(-0.3, 0.3, 4).astype("float32"),
            rng.uniform(-0.1, 0.1, 4).astype("float32"),
            rng.uniform(0.5, 2.0, 4).astype("float32"),
        ]
    )
    return model


@pytest.fixture(scope="module")
def models(keras_module: Any) -> dict[str, Any]:
    return {
        "flat": build_bn_cnn(keras_module),
        "nested_sequential": build_bn_cnn(keras_module, nested=True),
        "mixed": build_mixed(keras_module),
    }


def images(model: Any, n: int, seed: int = 0) -> np.ndarray:
    shape = tuple(model.inputs[0].shape[1:])
    return np.random.default_rng(seed).normal(0.5, 0.5, (n, *shape)).astype("float32")


def activation(keras: Any, model: Any, path: str, x: np.ndarray) -> np.ndarray:
    """The output of the layer at ``path`` computed the plain Keras way, independently of the
    scan's graph replay: a sub-model of the outer graph up to the tensor fed into a nested
    model, then a sub-model of the nested model's own graph."""
    *outer, name = path.split("/")
    current = model
    for part in outer:
        nested = current.get_layer(part)
        fed = nested._inbound_nodes[0].input_tensors[0]  # the outer tensor the nested model gets
        x = np.asarray(keras.Model(current.inputs, fed).predict(x, verbose=0))
        current = nested
    sub = keras.Model(current.inputs, current.get_layer(name).output)
    return np.asarray(sub.predict(x, verbose=0))


def numpy_norms(a: np.ndarray) -> dict[str, np.ndarray]:
    maps = np.abs(a.reshape(len(a), -1, a.shape[-1]).astype(np.float64))
    l1, l2, linf = maps.sum(1), np.sqrt((maps**2).sum(1)), maps.max(1)
    return {
        "mean_l1": l1.mean(0),
        "mean_l2": l2.mean(0),
        "mean_linf": linf.mean(0),
        "max_linf": linf.max(0),
        "std_linf": linf.std(0),
    }


EXPECTED_MEASURED = {
    "flat": {"f_conv1": "f_relu1", "conv2": "conv2"},
    "nested_sequential": {"features/f_conv1": "features/f_relu1", "conv2": "conv2"},
    "mixed": {
        "linear_conv": "linear_conv",
        "block/b_conv": "block/b_relu",
        "block/b_dw": "block/b_dw",
        "stack/s_conv": "stack/s_conv",
        "top_conv": "top_conv",
    },
}


@pytest.mark.parametrize("name", ["flat", "nested_sequential", "mixed"])
def test_fused_statistics_equal_numpy(name: str, models: dict[str, Any], keras_module: Any) -> None:
    model = models[name]
    x = images(model, 23)
    result = scan_lib.scan(model, x, batch_size=8)  # 8 + 8 + 7: a partial last batch
    stats = result.stats
    assert stats.images == 23
    assert {s.layer: s.measured for s in stats.layers} == EXPECTED_MEASURED[name]
    for layer in stats.layers:
        expected = numpy_norms(activation(keras_module, model, layer.measured, x))
        assert layer.images == 23
        for key, value in expected.items():
            np.testing.assert_allclose(
                getattr(layer, key), value, rtol=RTOL, atol=ATOL, err_msg=f"{layer.layer} {key}"
            )
        np.testing.assert_allclose(
            layer.linf_over_l2, expected["mean_linf"] / expected["mean_l2"], rtol=1e-5
        )


def test_merging_shards_equals_scanning_the_whole(models: dict[str, Any]) -> None:
    model = models["mixed"]
    x = images(model, 30, seed=3)
    scanner = scan_lib.Scanner(model)
    whole = scanner.stats(x, batch_size=7)
    merged = scan_lib.merge(
        scanner.stats(x[:11], batch_size=4, source="a"),
        scanner.stats(x[11:], batch_size=16, source="b"),
    )
    assert merged.images == whole.images == 30
    assert merged.sources == ("a", "b")
    for mine, theirs in zip(merged.layers, whole.layers, strict=True):
        for key in ("sum_l1", "sum_l2", "sum_linf", "sum_linf_sq"):
            np.testing.assert_allclose(getattr(mine, key), getattr(theirs, key), rtol=1e-6)
        np.testing.assert_array_equal(mine.max_linf, theirs.max_linf)


def test_scan_does_not_change_the_model(models: dict[str, Any]) -> None:
    model = models["nested_sequential"]
    nodes = [len(layer._inbound_nodes) for layer in model.get_layer("features").layers]
    before = [w.numpy().copy() for w in model.weights]
    scan_lib.scan(model, images(model, 4), mixed_precision=True)
    assert [len(layer._inbound_nodes) for layer in model.get_layer("features").layers] == nodes
    assert all(np.array_equal(b, w.numpy()) for b, w in zip(before, model.weights, strict=True))
    assert all(layer.dtype_policy.name == "float32" for layer in model.layers)


def test_mixed_precision_is_close_and_recorded(models: dict[str, Any]) -> None:
    model = models["flat"]
    x = images(model, 16)
    exact = scan_lib.scan(model, x).stats
    mixed = scan_lib.scan(model, x, mixed_precision=True)
    assert mixed.device is not None and mixed.device.precision == "mixed_bfloat16"
    assert mixed.stats.precision == "mixed_bfloat16"
    for a, b in zip(mixed.stats.layers, exact.layers, strict=True):
        np.testing.assert_allclose(a.mean_l2, b.mean_l2, rtol=0.05, atol=1e-2)
    with pytest.raises(BadInputError, match="float32"):
        scan_lib.merge(exact, mixed.stats)


def test_kerasaudit_dataset_is_streamed_like_an_array(
    models: dict[str, Any], tmp_path: Path
) -> None:
    from kerasaudit.data import DataSpec, open_data

    model = models["flat"]
    raw = np.random.default_rng(5).integers(0, 256, (19, 8, 8), dtype=np.uint8)
    np.savez(tmp_path / "d.npz", x=raw, y=np.arange(19) % 3)
    dataset = open_data(DataSpec(tmp_path / "d.npz", batch_size=5), (8, 8, 1))
    seen: list[tuple[int, int | None]] = []
    streamed = scan_lib.scan(model, dataset, progress=lambda d, t: seen.append((d, t)))
    direct = scan_lib.scan(model, (raw[..., None] / 255).astype("float32"))
    assert seen[-1] == (19, 19) and len(seen) == 4
    assert streamed.data is not None and streamed.data["count"] == 19
    assert streamed.stats.sources == (str(tmp_path / "d.npz"),)
    for a, b in zip(streamed.stats.layers, direct.stats.layers, strict=True):
        np.testing.assert_allclose(a.sum_l1, b.sum_l1, rtol=RTOL, atol=ATOL)
        np.testing.assert_allclose(a.max_linf, b.max_linf, rtol=RTOL, atol=ATOL)


def test_stats_file_round_trip(models: dict[str, Any], tmp_path: Path) -> None:
    model = models["mixed"]
    stats = scan_lib.Scanner(model).stats(images(model, 9), source="shard-1")
    path = tmp_path / "stats.npz"
    scan_lib.save_stats(stats, path)
    loaded = scan_lib.load_stats(path)
    assert loaded.metadata() == stats.metadata()
    for a, b in zip(loaded.layers, stats.layers, strict=True):
        for key in ("sum_l1", "sum_l2", "sum_linf", "sum_linf_sq", "max_linf"):
            np.testing.assert_array_equal(getattr(a, key), getattr(b, key))
    with np.load(path, allow_pickle=False) as archive:  # plain arrays + JSON, no pickles
        meta = json.loads(archive["meta"].tobytes())
    assert meta["schema"] == scan_lib.STATS_SCHEMA and meta["sources"] == ["shard-1"]

    with pytest.raises(BadInputError, match="--force"):
        scan_lib.save_stats(stats, path)
    doubled = scan_lib.merge(loaded, stats)
    scan_lib.save_stats(doubled, path, force=True)
    assert scan_lib.load_stats(path).images == 18
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stats.npz"]  # no temporary leftovers


def test_load_stats_refuses_other_files(tmp_path: Path) -> None:
    np.savez(tmp_path / "x.npz", x=np.zeros(3))
    (tmp_path / "text.npz").write_text("hello")
    for name in ("x.npz", "text.npz", "missing.npz"):
        with pytest.raises(BadInputError):
            scan_lib.load_stats(tmp_path / name)


def test_merge_refuses_different_models_or_layers(
    models: dict[str, Any], keras_module: Any
) -> None:
    flat = scan_lib.Scanner(models["flat"]).stats(images(models["flat"], 3))
    other = scan_lib.Scanner(build_bn_cnn(keras_module, seed=7)).stats(images(models["flat"], 3))
    with pytest.raises(BadInputError, match="different models"):
        scan_lib.merge(flat, other)
    one_layer = scan_lib.Scanner(models["flat"], layers=["conv2"]).stats(images(models["flat"], 3))
    with pytest.raises(BadInputError, match="layer selections"):
        scan_lib.merge(flat, one_layer)


def test_layer_selection(models: dict[str, Any]) -> None:
    model = models["mixed"]
    chosen = scan_lib.select_layers(model, ["block/b_dw", "s_conv"])
    assert [a.path for a in chosen] == ["block/b_dw", "stack/s_conv"]
    assert [a.path for a in scan_lib.select_layers(model, ["probs"])] == ["probs"]
    assert "probs" in [a.path for a in scan_lib.select_layers(model, include_dense=True)]
    assert "probs" not in [a.path for a in scan_lib.select_layers(model)]
    with pytest.raises(BadInputError, match="not an auditable layer"):
        scan_lib.select_layers(model, ["gap"])
    x = images(model, 5)
    result = scan_lib.scan(model, x, layers=["probs"])
    (dense,) = result.stats.layers
    probs = np.asarray(model.predict(x, verbose=0), dtype=np.float64)
    np.testing.assert_allclose(dense.mean_l1, probs.mean(0), rtol=1e-5)
    assert result.flags[0].note is not None  # 3 units: too few to score


def test_channels_first_reduction() -> None:
    """Conv2D NCHW does not run on CPU, so the reduction is checked on its own."""
    from kerasaudit import _tf
    from kerasaudit.inventory import AuditableLayer

    tf = _tf.tf()
    a = np.random.default_rng(0).normal(size=(3, 4, 5, 6)).astype("float32")  # (N, C, H, W)
    target = AuditableLayer("c", "Conv2D", 4, (3, 3), "linear", None, None, "c", (), 0)
    tap = scan_lib._Tap(target, channel_axis=1, nonnegative=False)
    norms = scan_lib._per_image_norms(tf, {"c": tf.constant(a)}, tap)
    sums = [v.numpy() for v in scan_lib._batch_sums(tf, *norms)]
    expected = numpy_norms(np.moveaxis(a, 1, -1))
    np.testing.assert_allclose(sums[0] / 3, expected["mean_l1"], rtol=1e-5)
    np.testing.assert_allclose(sums[1] / 3, expected["mean_l2"], rtol=1e-5)
    np.testing.assert_allclose(sums[4], expected["max_linf"], rtol=1e-6)
    assert tap.map_size == 30


def test_bad_inputs(models: dict[str, Any]) -> None:
    model = models["flat"]
    with pytest.raises(BadInputError, match="per-example shape"):
        scan_lib.scan(model, np.zeros((2, 9, 9, 1), dtype="float32"))
    with pytest.raises(BadInputError, match="no images"):
        scan_lib.scan(model, np.zeros((0, 8, 8, 1), dtype="float32"))
    from kerasaudit import _tf

    tf = _tf.tf()
    wrong = tf.data.Dataset.from_tensor_slices(np.zeros((4, 9, 9, 1), "float32")).batch(2)
    with pytest.raises(BadInputError, match="model expects"):
        scan_lib.scan(model, wrong)
    labelled = tf.data.Dataset.from_tensor_slices(
        (np.ones((5, 8, 8, 1), "float32"), np.zeros(5, "int64"))
    ).batch(2)
    assert scan_lib.scan(model, labelled).stats.images == 5


# --- flags ---------------------------------------------------------------------------------


def test_robust_z_follows_median_and_mad() -> None:
    values = np.array([1.0, 2.0, 3.0, 4.0, 100.0, np.nan])
    z = flags_lib.robust_z(values)
    # median 3, MAD = median(|v - 3|) = median(2, 1, 0, 1, 97) = 1
    np.testing.assert_allclose(z[:5], (values[:5] - 3.0) / 1.4826)
    assert np.isnan(z[5])
    ties = flags_lib.robust_z(np.array([1.0, 1.0, 1.0, 1.0, 5.0]))  # MAD = 0: mean-AD fallback
    np.testing.assert_allclose(ties[4], 4.0 / (1.253314 * 0.8))
    assert np.all(flags_lib.robust_z(np.full(6, 2.0)) == 0.0)
    assert np.all(flags_lib.robust_z(np.zeros(5)) == 0.0)
    # Equal up to float32 rounding: ties, not outliers; a real outlier still stands out.
    rounding = flags_lib.robust_z(np.array([0.3, 0.3 * (1 + 1e-7), 0.3 * (1 - 1e-7), 0.3, 0.6]))
    assert np.all(np.abs(rounding[:4]) < 1e-3) and rounding[4] > 3.5


def test_flag_channels_takes_the_larger_score() -> None:
    linf = np.array([1.0, 1.1, 0.9, 1.0, 1.05, 0.95, 6.0, 1.0])
    ratio = np.array([0.3, 0.31, 0.29, 0.3, 0.3, 0.9, 0.3, np.nan])
    result = flags_lib.flag_channels("conv", linf, ratio, threshold=3.5)
    assert result.flagged == (6, 5)  # ℓ∞ outlier first (larger score), then the ratio outlier
    assert result.score[7] == result.z_linf[7]  # a dead channel's ratio is NaN: ℓ∞ only
    assert not flags_lib.flag_channels("conv", linf, ratio, threshold=1e6).flagged
    small = flags_lib.flag_channels("dense", np.array([1.0, 9.0, 1.0]), np.ones(3), 3.5)
    assert small.flagged == () and small.note


def test_planted_channel_is_flagged(keras_module: Any) -> None:
    """A conv channel with a ×30 kernel stands out in ℓ∞; the rest of the layer does not."""
    keras = keras_module
    keras.utils.set_random_seed(2)
    inputs = keras.Input((12, 12, 1))
    x = keras.layers.Conv2D(8, 3, activation="relu", name="conv")(inputs)
    model = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(x))
    kernel, bias = model.get_layer("conv").get_weights()
    kernel = np.repeat(np.abs(kernel[..., :1]), 8, axis=-1) * np.linspace(1.0, 1.1, 8)
    kernel[..., 3] *= 30
    model.get_layer("conv").set_weights([kernel, bias])
    result = scan_lib.scan(model, np.random.default_rng(0).random((16, 12, 12, 1), "float32"))
    assert result.flags[0].flagged == (3,)
    assert result.has_findings and result.flagged_count == 1
    report = result.to_dict()
    json.dumps(report, allow_nan=False)  # every number is JSON-safe
    assert report["flagged"][0]["channel"] == 3 and report["summary"]["flagged"] == 1


# --- several devices -------------------------------------------------------------------------


MIRRORED_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    from kerasaudit import _tf
    tf = _tf.tf()
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2
    )
    sys.path.insert(0, sys.argv[1])
    from conftest import build_bn_cnn
    from test_scan import build_mixed
    from kerasaudit.stages import scan as scan_lib

    keras = _tf.keras()
    out = {}
    for name, build in (("nested", lambda k: build_bn_cnn(k, nested=True)), ("mixed", build_mixed)):
        model = build(keras)
        shape = tuple(model.inputs[0].shape[1:])
        x = np.random.default_rng(0).random((11, *shape), dtype=np.float32)
        mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        # 11 images in batches of 4: the last global batch (3) splits unevenly over 2 replicas
        many = scan_lib.scan(model, x, batch_size=4, strategy=mirrored)
        single = tf.distribute.OneDeviceStrategy("/cpu:0")
        one = scan_lib.scan(model, x, batch_size=4, strategy=single)
        out[name] = {
            "replicas": many.device.replicas,
            "strategy": many.device.strategy,
            "images": many.stats.images,
            "max_abs_diff": max(
                float(np.max(np.abs(getattr(a, k) - getattr(b, k))))
                for a, b in zip(many.stats.layers, one.stats.layers)
                for k in ("sum_l1", "sum_l2", "sum_linf", "sum_linf_sq", "max_linf")
            ),
            "fingerprints_equal": many.stats.model_fingerprint == one.stats.model_fingerprint,
        }
    print("RESULT=" + json.dumps(out))
    """
)


@pytest.mark.slow  # a fresh TensorFlow process: ~15 s
def test_mirrored_strategy_over_two_logical_cpus_matches_one_device() -> None:
    repo = Path(__file__).resolve().parents[1]
    proc = subprocess.run(
        [sys.executable, "-c", MIRRORED_SCRIPT, str(repo / "tests")],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=repo,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT=")]
    assert proc.returncode == 0 and lines, proc.stdout[-2000:] + proc.stderr[-3000:]
    for name, result in json.loads(lines[0].removeprefix("RESULT=")).items():
        assert result["strategy"] == "MirroredStrategy", name
        assert result["replicas"] == 2, name
        assert result["images"] == 11, name
        assert result["fingerprints_equal"], name
        assert result["max_abs_diff"] < 1e-3, (name, result)


def test_dead_channels_are_reported_apart_and_not_scored() -> None:
    from kerasaudit.flags import flag_channels

    live = np.array([1.0, 1.1, 0.9, 1.05, 0.95, 1.2])
    mean_linf = np.concatenate([live, [1e-9, 0.0, 3e-11]])
    ratio = np.concatenate([np.full(6, 2.0), [9.0, np.nan, 9.0]])
    flags = flag_channels("conv", mean_linf, ratio, threshold=3.5)
    assert flags.dead == (6, 7, 8)
    assert flags.flagged == ()  # tiny activations are not anomalies
    assert np.isnan(flags.score[6:]).all() and np.isfinite(flags.score[:6]).all()
    # A real outlier among live channels is still flagged.
    spiked = mean_linf.copy()
    spiked[2] = 9.0
    assert flag_channels("conv", spiked, ratio, threshold=3.5).flagged == (2,)
    # Too few live channels: the layer is not scored at all.
    mostly_dead = np.array([1.0, 1.0, 0.0, 0.0, 0.0])
    assert "live channels" in (flag_channels("c", mostly_dead, mostly_dead, 3.5).note or "")


def test_tapped_reports_each_call_and_restores_a_layer_listed_twice(keras_module: Any) -> None:
    """``inventory.tapped`` records the calls of layers a custom layer makes from its own code;
    a layer listed under two paths (shared) reports to both and gets its own ``call`` back."""
    from kerasaudit.inventory import tapped

    dense = keras_module.layers.Dense(2)
    seen: list[tuple[str, tuple[int, ...]]] = []
    with tapped({"a": dense, "b": dense}, lambda p, _, out: seen.append((p, tuple(out.shape)))):
        dense(np.ones((1, 3), np.float32))
    assert seen == [("a", (1, 2)), ("b", (1, 2))]
    assert "call" not in vars(dense)
    dense(np.ones((1, 3), np.float32))
    assert len(seen) == 2


def test_a_dense_layer_applied_at_every_position_counts_as_a_convolution(
    keras_module: Any, tmp_path: Path
) -> None:
    """A Dense on a map ``(N, H, W, C)`` or a sequence ``(N, T, C)`` is a 1×1 convolution
    (ConvNeXt's and Mixer's MLPs): listed among the conv layers (the candidates of `prune
    --ratio auto` and `defend`), scanned by default, its units zeroed like channels; a Dense
    after pooling is not, even when the pooling keeps a length-1 axis."""
    from typer.testing import CliRunner

    from kerasaudit.cli.app import app
    from kerasaudit.inventory import conv_layers

    keras = keras_module
    keras.utils.set_random_seed(3)
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv")(inputs)
    x = keras.layers.Dense(6, activation="relu", name="pw_map")(x)  # (N, 8, 8, 6)
    x = keras.layers.Reshape((64, 6), name="tokens")(x)
    x = keras.layers.Dense(5, activation="relu", name="pw_seq")(x)  # (N, 64, 5)
    x = keras.layers.GlobalAveragePooling1D(name="gap", keepdims=True)(x)  # (N, 1, 5)
    x = keras.layers.Dense(8, activation="relu", name="hidden")(x)  # one position: plain
    x = keras.layers.Flatten(name="flat")(x)
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax", name="probs")(x))
    convs = conv_layers(model)
    assert [(a.path, a.channels) for a in convs] == [("conv", 4), ("pw_map", 6), ("pw_seq", 5)]
    assert [a.path for a in scan_lib.select_layers(model)] == ["conv", "pw_map", "pw_seq"]
    every = [a.path for a in scan_lib.select_layers(model, include_dense=True)]
    assert every == ["conv", "pw_map", "pw_seq", "hidden", "probs"]

    rng = np.random.default_rng(0)
    x_data = rng.random((40, 8, 8, 1), dtype=np.float32)
    result = scan_lib.scan(model, x_data)
    assert [s.layer for s in result.stats.layers] == ["conv", "pw_map", "pw_seq"]
    # The CLI's prune zeroes a pointwise layer's units as a conv's channels.
    path = tmp_path / "pw.keras"
    model.save(path)
    np.savez(tmp_path / "d.npz", x=x_data, y=rng.integers(0, 3, 40).astype(np.uint8))
    out = tmp_path / "pruned.keras"
    result_cli = CliRunner().invoke(app, [
        "prune", str(path), "-d", str(tmp_path / "d.npz"), "--layer", "pw_seq",
        "--ratio", "0.4", "-c", "mean", "-o", str(out), "--format", "json",
    ])  # fmt: skip
    assert result_cli.exit_code == 0, result_cli.output
    (pruned,) = json.loads(result_cli.stdout)["pruned"]
    assert pruned["layer"] == "pw_seq" and len(pruned["channels"]) == 2
    kernel, bias = keras.models.load_model(out).get_layer("pw_seq").get_weights()
    assert np.all(kernel[:, pruned["channels"]] == 0) and np.all(bias[pruned["channels"]] == 0)

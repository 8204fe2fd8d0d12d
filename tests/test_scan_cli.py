"""`kerasaudit scan` through the CLI: exit codes, JSON on stdout, -o, --save-stats, errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from kerasaudit.cli.app import app

runner = CliRunner()


def _conv_model(keras: Any, *, planted: bool) -> Any:
    """12×12×1 → Conv(8, ReLU) → Conv(6) → BN → ReLU → GAP → Dense(3). The first conv's
    kernels are near-identical (nothing to flag); ``planted`` scales channel 5 by ×40."""
    keras.utils.set_random_seed(0)
    layers = keras.layers
    inputs = keras.Input((12, 12, 1), name="image")
    x = layers.Conv2D(8, 3, activation="relu", name="conv1")(inputs)
    x = layers.Conv2D(6, 3, use_bias=False, name="conv2")(x)
    x = layers.BatchNormalization(name="bn2")(x)
    x = layers.ReLU(name="relu2")(x)
    x = layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, layers.Dense(3, activation="softmax", name="probs")(x))
    kernel, bias = model.get_layer("conv1").get_weights()
    kernel = np.repeat(np.abs(kernel[..., :1]) + 0.05, 8, axis=-1) * np.linspace(1, 1.05, 8)
    if planted:
        kernel[..., 5] *= 40
    model.get_layer("conv1").set_weights([kernel.astype("float32"), bias])
    conv2 = model.get_layer("conv2")
    (k2,) = conv2.get_weights()
    conv2.set_weights([np.repeat(np.abs(k2[..., :1]), 6, axis=-1) * np.linspace(1, 1.05, 6)])
    return model


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory, keras_module: Any) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("scan_cli")
    paths = {"clean": out / "clean.keras", "planted": out / "planted.keras"}
    _conv_model(keras_module, planted=False).save(paths["clean"])
    _conv_model(keras_module, planted=True).save(paths["planted"])
    rng = np.random.default_rng(0)
    paths["data"] = out / "data.npz"
    np.savez(paths["data"], x=rng.integers(0, 256, (20, 12, 12), dtype=np.uint8))
    return paths


def run(*args: str) -> Any:
    return runner.invoke(app, ["scan", *args], env={"NO_COLOR": "1"})


def test_default_threshold_matches_the_library() -> None:
    from kerasaudit.cli import scan_cmd
    from kerasaudit.flags import DEFAULT_THRESHOLD

    assert scan_cmd.DEFAULT_THRESHOLD == DEFAULT_THRESHOLD


def test_json_report_and_exit_code_one_when_flagged(files: dict[str, Path]) -> None:
    result = run(str(files["planted"]), "-d", str(files["data"]), "-f", "json", "--batch-size", "6")
    assert result.exit_code == 1, result.output
    report = json.loads(result.stdout)
    assert report["schema"] == "kerasaudit.stages.scan/1"
    assert report["images"] == 20
    assert report["threshold"] == 3.5
    assert [(layer["layer"], layer["measured"]) for layer in report["layers"]] == [
        ("conv1", "conv1"),
        ("conv2", "relu2"),
    ]
    assert report["summary"]["flagged"] == 1
    (flagged,) = report["flagged"]
    assert (flagged["layer"], flagged["channel"]) == ("conv1", 5)
    assert flagged["score"] > 3.5 and flagged["mean_linf"] > 0
    conv1 = report["layers"][0]
    assert len(conv1["mean_l1"]) == len(conv1["score"]) == 8
    assert report["data"]["count"] == 20 and report["model"]["path"] == str(files["planted"])
    assert "scanned 20 images" in result.stderr


def test_exit_code_zero_when_nothing_is_flagged(files: dict[str, Path]) -> None:
    result = run(str(files["clean"]), "-d", str(files["data"]), "-f", "json", "-q")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["summary"]["flagged"] == 0
    assert result.stderr == ""  # -q: no progress, no summary
    relaxed = run(str(files["planted"]), "-d", str(files["data"]), "--threshold", "1e9", "-q")
    assert relaxed.exit_code == 0, relaxed.output


def test_table_report(files: dict[str, Path]) -> None:
    result = run(str(files["planted"]), "--data", str(files["data"]), "--include-dense")
    assert result.exit_code == 1, result.output
    for text in ("Layers", "probs", "Flagged channels", "conv1", "not a verdict"):
        assert text in result.stdout
    assert "scanned" not in result.stdout  # summaries go to stderr


def test_save_stats_and_output_file(files: dict[str, Path], tmp_path: Path) -> None:
    from kerasaudit.stages.scan import load_stats

    stats, report = tmp_path / "stats.npz", tmp_path / "report.json"
    args = [str(files["clean"]), "-d", str(files["data"]), "-f", "json", "-q"]
    first = run(*args, "--save-stats", str(stats), "-o", str(report), "--limit", "7")
    assert first.exit_code == 0, first.output
    assert first.stdout == ""
    assert json.loads(report.read_text())["stats_file"] == str(stats)
    loaded = load_stats(stats)
    assert loaded.images == 7 and [s.layer for s in loaded.layers] == ["conv1", "conv2"]

    before = stats.read_bytes()
    refused = run(*args, "--save-stats", str(stats))
    assert refused.exit_code == 2 and "--force" in refused.stderr
    assert stats.read_bytes() == before
    forced = run(*args, "--save-stats", str(stats), "--force", "--layer", "conv2")
    assert forced.exit_code == 0, forced.output
    assert [s.layer for s in load_stats(stats).layers] == ["conv2"]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--layer", "nope"], "not an auditable layer"),
        (["--threshold", "nan"], "--threshold"),
        (["--x-key", "missing"], "missing"),
        (["--batch-size", "0"], "batch-size"),
        (["--device", "gpu"], "GPU"),
    ],
    ids=["unknown-layer", "nan-threshold", "bad-key", "zero-batch", "no-gpu"],
)
def test_bad_input_is_exit_code_two(files: dict[str, Path], extra: list[str], message: str) -> None:
    result = run(str(files["clean"]), "-d", str(files["data"]), *extra)
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert result.stdout == ""


def test_missing_data_file(files: dict[str, Path], tmp_path: Path) -> None:
    result = run(str(files["clean"]), "-d", str(tmp_path / "none.npz"), "--save-stats",
                 str(tmp_path / "s.npz"))  # fmt: skip
    assert result.exit_code == 2
    assert not (tmp_path / "s.npz").exists()


def test_device_and_mixed_precision_options(files: dict[str, Path]) -> None:
    result = run(str(files["planted"]), "-d", str(files["data"]), "-f", "json", "-q",
                 "--device", "cpu", "--mixed-precision")  # fmt: skip
    assert result.exit_code == 1, result.output
    report = json.loads(result.stdout)
    assert report["device"]["precision"] == "mixed_bfloat16"
    assert report["device"]["strategy"] == "OneDeviceStrategy"
    assert (report["flagged"][0]["layer"], report["flagged"][0]["channel"]) == ("conv1", 5)


def assert_same_statistics(one: Any, merged: Any, *, images: int) -> None:
    """Merged shard statistics against one scan: the same image counts, maxima and flags; sums
    equal up to float32 rounding (see the sharded-scan test)."""
    from kerasaudit.stages.scan import analyse

    assert merged.images == one.images == images
    for a, b in zip(one.layers, merged.layers, strict=True):
        assert a.images == b.images == images
        np.testing.assert_array_equal(a.max_linf, b.max_linf)
        for name in ("sum_l1", "sum_l2", "sum_linf", "sum_linf_sq"):
            np.testing.assert_allclose(getattr(a, name), getattr(b, name), rtol=1e-6)
    assert [f.flagged for f in analyse(one).flags] == [f.flagged for f in analyse(merged).flags]


def test_sharded_scans_merge_into_the_unsharded_scan(
    files: dict[str, Path], tmp_path: Path
) -> None:
    """--shard I/N over three uneven shards (batches of 3 cross every shard boundary), merged
    by merge-stats: the same images, maxima and flags as one scan; sums equal up to float32
    rounding (a per-image norm is reduced in float32, and TensorFlow's reduction order depends
    on the batch it sits in: measured 1e-8 relative)."""
    from kerasaudit.stages.scan import load_stats

    base = [str(files["planted"]), "-d", str(files["data"]), "--batch-size", "3", "-q"]
    whole = tmp_path / "whole.npz"
    assert run(*base, "--save-stats", str(whole)).exit_code == 1  # channel 5 is planted
    parts = []
    for i in range(3):
        part = tmp_path / f"shard{i}.npz"
        result = run(*base, "--shard", f"{i}/3", "--save-stats", str(part))
        assert result.exit_code in (0, 1), result.output
        parts.append(part)
    counts = [load_stats(p).images for p in parts]
    assert counts == [6, 7, 7] and sum(counts) == 20
    merged_path = tmp_path / "all.npz"
    merged_run = runner.invoke(
        app, ["merge-stats", *map(str, parts), "-o", str(merged_path), "--format", "json"]
    )
    assert merged_run.exit_code == 0, merged_run.output
    merged_report = json.loads(merged_run.stdout)
    assert merged_report["stats_file"] == str(merged_path)
    one, merged = load_stats(whole), load_stats(merged_path)
    assert_same_statistics(one, merged, images=20)
    ranges = ("[0:6]", "[6:13]", "[13:20]")
    assert all(s.endswith(r) for s, r in zip(merged.sources, ranges, strict=True)), merged.sources

    # What does not belong together is refused, one line, exit 2.
    other = tmp_path / "other.npz"
    assert run(
        str(files["clean"]), "-d", str(files["data"]), "-q", "--save-stats", str(other)
    ).exit_code in (0, 1)
    for args, message in (
        ([str(parts[0]), str(other)], "different models"),
        ([str(parts[0]), str(parts[0])], "named twice"),
        ([str(parts[0])], "at least two"),
    ):
        refused = runner.invoke(app, ["merge-stats", *args, "-o", str(tmp_path / "x.npz")])
        assert refused.exit_code == 2 and message in refused.output, refused.output
    bad = run(*base, "--shard", "3/3")
    assert bad.exit_code == 2 and "--shard" in bad.output

    # prune ranks channels by the merged statistics exactly as by its own clean pass.
    prune = ["prune", str(files["planted"]), "-d", str(files["data"]), "-c", "linf"]
    prune += ["--layer", "conv1", "--ratio", "0.125", "--format", "json", "-q"]
    own = runner.invoke(app, prune)
    from_stats = runner.invoke(app, [*prune, "--stats", str(merged_path)])
    assert own.exit_code == from_stats.exit_code == 0, own.output + from_stats.output
    channels = [json.loads(r.stdout)["pruned"][0]["channels"] for r in (own, from_stats)]
    assert channels[0] == channels[1] == [5]  # the planted channel
    foreign = runner.invoke(app, [*prune, "--stats", str(other)])
    assert foreign.exit_code == 2 and "another model" in foreign.output, foreign.output

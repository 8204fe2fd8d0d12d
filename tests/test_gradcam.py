"""gradcam: every exposed method on this TF/Keras stack, flat and nested models, the flat-graph
CAM equals an independent GradientTape Grad-CAM, the localisation number, PNG output, CLI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import SAMPLES, build_bn_cnn
from PIL import Image
from typer.testing import CliRunner

from kerasaudit.cli.app import app
from kerasaudit.data import DataSpec, open_data
from kerasaudit.stages.gradcam import CamMethod, gradcam, localisation, mass_shares, resolve_target
from kerasaudit.triggers import load_trigger

runner = CliRunner()
TRIGGER = "patch:size=3,pos=br,value=1"
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from kerasaudit import _tf

    keras = _tf.keras()
    out = tmp_path_factory.mktemp("gradcam")
    paths = {
        "flat": out / "flat.keras",
        "nested": out / "nested.keras",
        "other": out / "other.keras",
        "data": out / "data.npz",
    }
    build_bn_cnn(keras, nested=False, seed=3).save(paths["flat"])
    build_bn_cnn(keras, nested=True, seed=3).save(paths["nested"])
    build_bn_cnn(keras, nested=False, seed=5).save(paths["other"])
    rng = np.random.default_rng(2)
    np.savez(
        paths["data"],
        x=rng.integers(0, 120, (40, 8, 8, 1)).astype("uint8"),
        y=rng.integers(0, 3, 40).astype("uint8"),
    )
    return paths


def _load(path: Path) -> Any:
    from kerasaudit.loading import load_model

    return load_model(path).model


def _data(path: Path) -> Any:
    return open_data(DataSpec(path, batch_size=16), (8, 8, 1), 3)


@pytest.mark.parametrize("nested", [False, True], ids=["flat", "nested"])
@pytest.mark.parametrize("method", list(CamMethod), ids=[m.value for m in CamMethod])
def test_every_method_runs_on_flat_and_nested_models(
    files: dict[str, Path], method: CamMethod, nested: bool
) -> None:
    model = _load(files["nested" if nested else "flat"])
    trigger = load_trigger(TRIGGER, (8, 8, 1))
    # Inside the nested model for the nested case: tf-keras-vis alone cannot reach it.
    layer = "features/f_conv1" if nested else None
    result = gradcam(
        model, _data(files["data"]), method=method, layer=layer, limit=5, trigger=trigger, target=0
    )
    (cams,) = result.models
    if nested:
        assert (cams.target.layer, cams.target.tensor) == ("features/f_conv1", "features/f_relu1")
        assert cams.target.grid == (8, 8)
    else:
        assert (cams.target.layer, cams.target.tensor) == ("conv2", "conv2")  # the last conv
        assert cams.target.grid == (6, 6)
    assert cams.score == "logit (output softmax removed)"
    for cam_set in (cams.clean, cams.triggered):
        assert cam_set is not None
        assert cam_set.cams.shape == (5, *cams.target.grid)
        assert np.isfinite(cam_set.cams).all() and (cam_set.cams >= 0).all()
        assert cam_set.cams.reshape(5, -1).max(axis=1).min() > 0  # no empty map
        np.testing.assert_array_equal(cam_set.explained, cam_set.predicted)
    assert result.labels is not None and (result.labels != 0).all()  # target class passed over
    loc = cams.localisation
    assert loc is not None and loc.images == 5 and loc.ratio is not None
    assert loc.region_cells == (9 if nested else 4) and loc.grid_cells == (64 if nested else 36)
    # The model is unchanged: no extra nodes, softmax still there.
    assert model.get_layer("probs").activation.__name__ == "softmax"


def _reference_gradcam(model: Any, path: str, x: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """Grad-CAM by hand: replay the graph under a GradientTape, logits, no tf-keras-vis."""
    from kerasaudit import _tf
    from kerasaudit.stages.scan import _Replay

    tf, keras = _tf.tf(), _tf.keras()
    clone = keras.models.clone_model(model, recursive=True)
    clone.set_weights(model.get_weights())
    clone.get_layer("probs").activation = keras.activations.linear
    replay = _Replay(clone, {path})
    with tf.GradientTape() as tape:
        recorded: dict[str, Any] = {}
        logits = replay._run_model(clone, tf.constant(x), "", recorded)
        score = tf.reduce_sum(tf.gather(logits, classes, axis=1, batch_dims=1))
    maps = recorded[path]
    grads = tape.gradient(score, maps)
    weights = tf.reduce_mean(grads, axis=(1, 2), keepdims=True)
    return np.maximum(np.asarray(tf.reduce_sum(maps * weights, axis=-1)), 0.0)


@pytest.mark.parametrize(
    ("which", "layer", "tensor"),
    [("flat", None, "conv2"), ("nested", "features/f_conv1", "features/f_relu1")],
    ids=["flat", "nested"],
)
def test_gradcam_equals_an_independent_gradient_tape_gradcam(
    files: dict[str, Path], which: str, layer: str | None, tensor: str
) -> None:
    model = _load(files[which])
    result = gradcam(model, _data(files["data"]), layer=layer, limit=6)
    (cams,) = result.models
    expected = _reference_gradcam(model, tensor, result.images, cams.clean.explained)
    np.testing.assert_allclose(cams.clean.cams, expected, rtol=1e-4, atol=1e-6)


def test_class_option_and_compare_model(files: dict[str, Path]) -> None:
    model, other = _load(files["flat"]), _load(files["other"])
    result = gradcam(model, _data(files["data"]), class_index=2, limit=4, compare=other)
    assert result.class_rule == "class 2"
    assert [m.role for m in result.models] == ["model", "compare"]
    for cams in result.models:
        assert (cams.clean.explained == 2).all() and cams.triggered is None
        assert cams.localisation is None
    assert not np.allclose(result.models[0].clean.cams, result.models[1].clean.cams)
    data = result.to_dict()
    assert data["images"][0]["compare"]["triggered"] is None
    json.dumps(data, allow_nan=False)


def test_target_class_images_are_passed_over_and_counted(files: dict[str, Path]) -> None:
    labels = np.load(files["data"])["y"]
    trigger = load_trigger(TRIGGER, (8, 8, 1))
    result = gradcam(_load(files["flat"]), _data(files["data"]), limit=7, trigger=trigger, target=1)
    kept = np.flatnonzero(labels != 1)[:7]
    np.testing.assert_array_equal(result.indices, kept)
    assert result.skipped_target_images == int((labels[: kept[-1] + 1] == 1).sum())


def test_mass_share_and_localisation_ratio() -> None:
    region = np.zeros((4, 4), bool)
    region[3, 3] = True  # 1/16 of the grid
    cams = np.zeros((3, 4, 4), np.float32)
    cams[0, 3, 3] = 2.0  # all mass on the trigger
    cams[1] = 1.0  # uniform: no preference
    # cams[2] stays zero: no mass to share
    shares = mass_shares(cams, region)
    np.testing.assert_allclose(shares[:2], [1.0, 1 / 16])
    assert np.isnan(shares[2])
    loc = localisation(shares, region)
    assert (loc.images, loc.zero_maps, loc.region_cells, loc.grid_cells) == (2, 1, 1, 16)
    assert loc.area_share == pytest.approx(1 / 16)
    assert loc.ratio == pytest.approx((16 + 1) / 2)
    assert loc.mass_share == pytest.approx((1 + 1 / 16) / 2)


def test_layer_choice_errors(files: dict[str, Path]) -> None:
    from kerasaudit.errors import BadInputError

    model = _load(files["nested"])
    assert resolve_target(model, "f_conv1") == ("features/f_conv1", "features/f_relu1")
    assert resolve_target(model, "features/f_bn1") == ("features/f_bn1", "features/f_bn1")
    with pytest.raises(BadInputError, match="not a layer"):
        resolve_target(model, "nope")
    with pytest.raises(BadInputError, match="2-D map"):
        resolve_target(model, "gap")


def test_backdoored_sample_looks_at_the_trigger_until_pruned() -> None:
    """On the shipped BadNets sample, triggered images' maps sit on the trigger for every
    method; after pruning the channels that carry the backdoor they no longer do."""
    from kerasaudit.loading import load_model
    from kerasaudit.ranking import Criterion
    from kerasaudit.stages.prune import prune

    model = load_model(SAMPLES / "fmnist_badnets.keras").model
    val = open_data(DataSpec(SAMPLES / "fmnist_val.npz", limit=600), (28, 28, 1), 10)
    test = open_data(DataSpec(SAMPLES / "fmnist_test.npz"), (28, 28, 1), 10)
    trigger = load_trigger("patch:size=4,pos=br,value=1", (28, 28, 1))
    pruned, pruned_result = prune(
        model,
        val,
        criterion=Criterion.LINF_TRIGGER,
        ratio=0.05,
        layers=("conv4",),
        trigger=trigger,
        target=0,
    )
    assert pruned_result.after_prune is not None and (pruned_result.after_prune.asr or 1) < 0.1
    for method in CamMethod:
        result = gradcam(
            model, test, method=method, limit=12, trigger=trigger, target=0, compare=pruned
        )
        before, after = (m.localisation for m in result.models)
        assert before is not None and after is not None
        assert before.ratio is not None and after.ratio is not None
        assert before.ratio > 3.0, (method, before)
        assert after.ratio < 2.0, (method, after)
        assert (result.models[0].triggered.predicted == 0).all()  # type: ignore[union-attr]


def _png_size(path: Path) -> tuple[int, int]:
    assert path.read_bytes().startswith(PNG)
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        return image.size


def test_cli_writes_pngs_and_json(files: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "cams"
    args = ["gradcam", str(files["nested"]), "-d", str(files["data"]), "-o", str(out)]
    args += ["--trigger", TRIGGER, "--target", "0", "--limit", "3", "-f", "json", "-q"]
    result = runner.invoke(app, [*args, "--compare", str(files["nested"])])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["schema"] == "kerasaudit.stages.gradcam/1"
    assert report["method"] == "gradcam" and report["images_explained"] == 3
    assert report["files"] == ["grid.png", "image_000.png", "image_001.png", "image_002.png"]
    assert sorted(p.name for p in out.iterdir()) == sorted(report["files"])
    model, compare = report["models"]
    assert model["localisation"]["ratio"] == pytest.approx(compare["localisation"]["ratio"])
    assert report["images"][0]["model"]["triggered"]["localisation_ratio"] is not None
    width, height = _png_size(out / "image_000.png")
    assert width > 900 and height > 400  # 6 panels wide, 2 models high
    assert _png_size(out / "grid.png")[1] > 400  # 4 rows: model/compare × clean/triggered

    again = runner.invoke(app, args)  # -o exists, no --force
    assert again.exit_code == 2 and "exists" in again.stderr


def test_cli_table_without_trigger(files: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "cams"
    args = ["gradcam", str(files["flat"]), "-d", str(files["data"]), "-o", str(out), "-q"]
    result = runner.invoke(app, [*args, "--method", "gradcam++", "--limit", "2"])
    assert result.exit_code == 0, result.output
    assert "Grad-CAM++" in result.stdout and "conv2" in result.stdout
    width, _ = _png_size(out / "image_001.png")
    assert 400 < width < 900  # 3 panels: input, map, overlay


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--layer", "nope"], "not a layer"),
        (["--target", "0"], "--target needs --trigger"),
        (["--trigger", "patch:size=99"], "larger than"),
        (["--class", "7"], "outside the model's labels"),
    ],
)
def test_cli_bad_input_exits_2_and_writes_nothing(
    files: dict[str, Path], tmp_path: Path, extra: list[str], message: str
) -> None:
    out = tmp_path / "cams"
    args = ["gradcam", str(files["flat"]), "-d", str(files["data"]), "-o", str(out), "-q"]
    result = runner.invoke(app, [*args, *extra])
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert not out.exists()

"""sweep: prefix reuse gives exactly what evaluating pruned clones gives; files; recommendation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import build_bn_cnn
from typer.testing import CliRunner

from kerasaudit.cli.app import app
from kerasaudit.data import DataSpec, open_data
from kerasaudit.ranking import Criterion
from kerasaudit.stages.sweep import SweepPoint, _split, _sweep_slow, recommend, sweep
from kerasaudit.triggers import load_trigger

runner = CliRunner()
TRIGGER = "patch:size=3,pos=br,value=1"


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from kerasaudit import _tf

    keras = _tf.keras()
    out = tmp_path_factory.mktemp("sweep")
    paths = {"flat": out / "flat.keras", "nested": out / "nested.keras", "data": out / "data.npz"}
    build_bn_cnn(keras, nested=False, seed=4).save(paths["flat"])
    build_bn_cnn(keras, nested=True, seed=4).save(paths["nested"])
    rng = np.random.default_rng(1)
    np.savez(
        paths["data"],
        x=rng.integers(0, 256, (80, 8, 8, 1)).astype("uint8"),
        y=rng.integers(0, 3, 80),
    )
    return paths


def test_prefix_reuse_equals_pruned_clones(files: dict[str, Path]) -> None:
    from kerasaudit.inventory import auditable_layers
    from kerasaudit.loading import load_model

    model = load_model(files["flat"]).model
    dataset = open_data(DataSpec(files["data"], batch_size=32), (8, 8, 1), 3)
    trigger = load_trigger(TRIGGER, (8, 8, 1))
    criteria = [Criterion.L1, Criterion.LINF_TRIGGER]
    result = sweep(
        model, dataset, trigger=trigger, target=0, criteria=criteria, ratios=[0.25, 0.5, 0.75]
    )
    assert set(result.fast_layers) == {"f_conv1", "conv2"} and result.slow_layers == ()
    from kerasaudit.ranking import rank_all

    infos = auditable_layers(model)
    rankings = rank_all(model, infos, criteria, dataset, trigger=trigger)
    for info in infos:
        assert _split(model, info) is not None
        exact = _sweep_slow(
            model,
            dataset,
            trigger,
            0,
            info,
            [rankings[(c, info.path)] for c in criteria],
            [0.25, 0.5, 0.75],
        )
        fast = [p for p in result.points if p.layer == info.path]
        assert [(p.criterion, p.ratio, p.channels_pruned) for p in fast] == [
            (p.criterion, p.ratio, p.channels_pruned) for p in exact
        ]
        np.testing.assert_allclose([p.accuracy for p in fast], [p.accuracy for p in exact])
        np.testing.assert_allclose([p.asr for p in fast], [p.asr for p in exact])
        np.testing.assert_allclose([p.ra for p in fast], [p.ra for p in exact])


def test_nested_layers_fall_back_to_pruned_clones(files: dict[str, Path]) -> None:
    from kerasaudit.loading import load_model

    model = load_model(files["nested"]).model
    dataset = open_data(DataSpec(files["data"], batch_size=32), (8, 8, 1), 3)
    trigger = load_trigger(TRIGGER, (8, 8, 1))
    result = sweep(
        model, dataset, trigger=trigger, target=0, criteria=[Criterion.MEAN], ratios=[0.5]
    )
    assert result.slow_layers == ("features/f_conv1",) and result.fast_layers == ("conv2",)
    assert len(result.points) == 2


def test_fine_tuned_points_use_the_distillation_weight(
    files: dict[str, Path], tmp_path: Path
) -> None:
    """Each point's fine-tune distils when asked (it used to ignore --distill). Every label is
    1 here: fine-tuning on the labels alone learns "always 1" (held-out accuracy 1), while
    full distillation keeps the original model's answer (class 0 for these images)."""
    from kerasaudit.finetune import FineTuneSettings
    from kerasaudit.loading import load_model

    model = load_model(files["flat"]).model
    data = tmp_path / "zeros.npz"
    with np.load(files["data"]) as f:
        np.savez(data, x=f["x"], y=np.ones(len(f["y"]), np.int64))
    dataset = open_data(DataSpec(data, batch_size=32), (8, 8, 1), 3)
    trigger = load_trigger(TRIGGER, (8, 8, 1))

    def accuracy(distill: float) -> float:
        result = sweep(
            model, dataset, trigger=trigger, target=0, criteria=[Criterion.L1],
            layers=["conv2"], ratios=[0.25],
            fine_tuning=FineTuneSettings(epochs=10, distill=distill, learning_rate=3e-2),
        )  # fmt: skip
        (point,) = result.points
        return point.accuracy

    assert accuracy(0.0) == 1.0
    assert accuracy(1.0) < 0.5


def _point(ratio: float, accuracy: float, asr: float) -> SweepPoint:
    return SweepPoint(Criterion.L1, "conv", ratio, 1, accuracy, asr, 0.0)


def test_recommendation_is_lowest_asr_within_budget_then_smallest_ratio() -> None:
    points = [
        _point(0.1, 0.90, 0.50),
        _point(0.2, 0.895, 0.012),
        _point(0.3, 0.893, 0.010),  # ASR within half a point of the lowest: smaller ratio wins
        _point(0.4, 0.87, 0.0),  # lowest ASR, but 3 points of accuracy lost
    ]
    assert recommend(points, 0.90, 0.015) == points[1]
    assert recommend(points, 0.90, 0.05) == points[3]
    assert recommend(points, 0.99, 0.015) is None


def test_cli_writes_csv_plot_and_json(files: dict[str, Path], tmp_path: Path) -> None:
    csv_path, plot_path = tmp_path / "sweep.csv", tmp_path / "sweep.png"
    result = runner.invoke(
        app,
        [
            "sweep",
            str(files["flat"]),
            "-d",
            str(files["data"]),
            "--trigger",
            TRIGGER,
            "--target",
            "0",
            "-c",
            "l1",
            "-c",
            "clp",
            "--ratios",
            "0.25,0.5",
            "--csv",
            str(csv_path),
            "--plot",
            str(plot_path),
            "-f",
            "json",
        ],
    )
    report = json.loads(result.stdout)
    # exit 1 exactly when the model's own ASR is above --max-asr (5 %): the trigger works
    assert result.exit_code == (1 if report["baseline"]["asr"] > 0.05 else 0), result.output
    assert report["schema"] == "kerasaudit.stages.sweep/1"
    assert len(report["points"]) == 2 * 2 * 2  # criteria × layers × ratios
    lines = csv_path.read_text().splitlines()
    assert (
        lines[0] == "criterion,layer,ratio,channels_pruned,accuracy,asr,ra"
        and len(lines) == 1 + 1 + 8
    )
    assert plot_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "needs --trigger"),
        (["--trigger", TRIGGER, "--target", "0", "--ratios", "0.5,1"], "--ratios"),
        (["--trigger", TRIGGER, "--target", "0", "--plot", "x.jpg"], "PNG"),
    ],
)
def test_sweep_bad_input(files: dict[str, Path], args: list[str], message: str) -> None:
    result = runner.invoke(app, ["sweep", str(files["flat"]), "-d", str(files["data"]), *args])
    assert result.exit_code == 2 and message in result.output

"""`kerasaudit scan --ray`: one scan spread over a real local two-node Ray cluster with Ray Data
(actors each loading the model once), equal to the scan on one machine, surviving a killed
actor."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from ray_helpers import run_killing_first_task
from test_scan_cli import _conv_model, assert_same_statistics
from typer.testing import CliRunner

from kerasaudit.cli.app import app

runner = CliRunner()


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory, keras_module: Any) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("scan_ray")
    paths = {"planted": out / "planted.keras", "data": out / "data.npz"}
    _conv_model(keras_module, planted=True).save(paths["planted"])
    rng = np.random.default_rng(1)
    np.savez(paths["data"], x=rng.integers(0, 256, (40, 12, 12), dtype=np.uint8))
    return paths


def test_ray_options_are_checked_before_anything_runs(files: dict[str, Path]) -> None:
    base = ["scan", str(files["planted"]), "-d", str(files["data"]), "--ray", "auto"]
    for extra, message in (
        (["--shard", "0/2"], "--ray scans clean statistics of all the data"),
        (["--trigger", "patch:size=2,pos=br"], "--ray scans clean statistics of all the data"),
        (["--ray-actors", "0"], "--ray-actors"),
    ):
        result = runner.invoke(app, [*base, *extra])
        assert result.exit_code == 2 and message in result.output, result.output


@pytest.mark.slow
def test_scan_on_a_ray_cluster_equals_one_scan_and_survives_a_killed_actor(
    files: dict[str, Path], ray_cluster: Any, tmp_path: Path
) -> None:
    from kerasaudit.stages.scan import load_stats

    base = [str(files["planted"]), "-d", str(files["data"]), "--batch-size", "3"]
    whole = tmp_path / "whole.npz"
    assert runner.invoke(app, ["scan", *base, "-q", "--save-stats", str(whole)]).exit_code == 1
    on_ray = tmp_path / "ray.npz"
    result, killed = run_killing_first_task(
        "MapWorker",
        ["scan", *base, "--save-stats", str(on_ray), "--ray", ray_cluster.address,
         "--ray-actors", "2"],
    )  # fmt: skip
    assert killed, "no Ray Data actor was seen running (nothing was killed)"
    assert result.returncode == 1, result.stdout + result.stderr  # the planted channel
    assert "8 shards over 2 actor(s) on 2 node(s), merged" in result.stderr, result.stderr
    merged = load_stats(on_ray)
    assert_same_statistics(load_stats(whole), merged, images=40)
    assert len(merged.sources) == 8 and merged.sources[0].endswith("[0:5]"), merged.sources


@pytest.mark.slow
def test_device_and_mixed_precision_reach_the_ray_actors(
    files: dict[str, Path], ray_cluster: Any, tmp_path: Path
) -> None:
    """``--mixed-precision --device cpu`` with ``--ray``: the actors scan in bfloat16 as a local
    ``--mixed-precision`` scan does (they used to ignore both options and scan in float32)."""
    from kerasaudit.stages.scan import load_stats

    base = [str(files["planted"]), "-d", str(files["data"]), "-q", "--device", "cpu"]
    paths = {name: tmp_path / f"{name}.npz" for name in ("local32", "local16", "ray16")}
    for name, extra in (
        ("local32", []),
        ("local16", ["--mixed-precision"]),
        ("ray16", ["--mixed-precision", "--ray", ray_cluster.address, "--ray-actors", "1"]),
    ):
        result = runner.invoke(app, ["scan", *base, *extra, "--save-stats", str(paths[name])])
        assert result.exit_code == 1, result.output  # the planted channel, every time
    local32, local16, ray16 = (load_stats(paths[n]) for n in ("local32", "local16", "ray16"))
    sums = [np.concatenate([layer.sum_l2 for layer in s.layers]) for s in (local32, local16, ray16)]
    assert np.max(np.abs(sums[1] / sums[0] - 1)) > 1e-4  # bfloat16 changes the statistics ...
    np.testing.assert_allclose(sums[2], sums[1], rtol=1e-5)  # ... and the actors used it


def test_without_ray_the_message_says_what_to_install(
    files: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The base install has no Ray: --ray is refused in one line naming the extra."""
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ModuleNotFoundError
    result = runner.invoke(
        app, ["scan", str(files["planted"]), "-d", str(files["data"]), "--ray", "auto"]
    )
    assert result.exit_code == 2, result.output
    assert "pip install 'kerasaudit[ray]'" in result.output

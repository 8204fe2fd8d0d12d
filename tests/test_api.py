"""The Python API: the names it promises, what they accept, and that they agree with the CLI."""

from __future__ import annotations

import importlib
import json
import pkgutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_reverse import TRIGGER, write_stripe_files
from typer.testing import CliRunner

import kerasaudit
from kerasaudit.cli.app import app

runner = CliRunner()
API = [name for name in kerasaudit.__all__ if name != "__version__"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory, keras_module: Any) -> dict[str, Path]:
    return write_stripe_files(tmp_path_factory.mktemp("api"), keras_module)


def test_importing_the_package_is_cheap() -> None:
    code = (
        "import sys, kerasaudit\n"
        "heavy = [m for m in ('tensorflow', 'keras', 'numpy', 'kerasaudit.api') "
        "if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.strip() == "", result.stdout + result.stderr


def test_every_api_name_stays_a_function_after_every_submodule_is_imported() -> None:
    """A submodule named like an API function would replace it on the package once imported
    (``import kerasaudit.scan`` sets ``kerasaudit.scan``): import them all, then look."""
    for info in pkgutil.walk_packages(kerasaudit.__path__, "kerasaudit."):
        if info.name != "kerasaudit.__main__":
            importlib.import_module(info.name)
    for name in API:
        value = getattr(kerasaudit, name)
        assert callable(value) and not isinstance(value, type(kerasaudit)), name
        assert value.__module__ == "kerasaudit.api" and value.__doc__, name
    with pytest.raises(AttributeError):
        _ = kerasaudit.no_such_function  # type: ignore[attr-defined]
    # The package's list (kept literal for tools) and kerasaudit.api's are the same names.
    from kerasaudit import api

    assert sorted(api.__all__) == sorted(API)


def test_scan_and_evaluate_take_paths_arrays_and_loaded_models(tiny: dict[str, Path]) -> None:
    import kerasaudit as ka

    loaded = ka.load_model(tiny["backdoored"])
    by_path = ka.scan(tiny["backdoored"], tiny["data"])
    data = np.load(tiny["data"])
    by_arrays = ka.scan(loaded, (data["x"], data["y"]))
    assert by_path.channel_count == by_arrays.channel_count > 0
    for a, b in zip(by_path.stats.layers, by_arrays.stats.layers, strict=True):
        np.testing.assert_allclose(a.sum_linf, b.sum_linf, rtol=1e-5)

    # The same numbers as the CLI's JSON for the same model, data and trigger.
    result = ka.evaluate(loaded, tiny["test"], TRIGGER, 0)
    cli = runner.invoke(
        app,
        [
            *["evaluate", str(tiny["backdoored"]), "-d", str(tiny["test"])],
            *["-t", TRIGGER, "--target", "0", "--format", "json", "-q"],
        ],
    )
    assert cli.exit_code in (0, 1), cli.output
    report = json.loads(cli.stdout)
    assert result.accuracy == pytest.approx(report["clean"]["accuracy"])
    assert result.asr == pytest.approx(report["attack"]["asr"]) and result.asr > 0.9


def test_audit_and_prune_through_the_api(tiny: dict[str, Path], tmp_path: Path) -> None:
    import kerasaudit as ka

    model = ka.load_model(tiny["backdoored"])
    found = ka.audit(model, tiny["test"], trigger=TRIGGER, target=0)
    assert found.backdoor and found.targets == (0,)
    assert not ka.audit(tiny["clean"], tiny["test"], trigger=TRIGGER, target=0).backdoor

    pruned, result = ka.prune(
        model, tiny["data"], ratio=0.125, trigger=TRIGGER, target=0, fine_tune_epochs=0
    )
    assert result.to_dict()["pruned"], "channels were pruned"
    out = tmp_path / "pruned.keras"
    ka.save_model(pruned, out)
    with pytest.raises(ka_errors().BadInputError):
        ka.save_model(pruned, out)  # never over an existing file without force
    assert ka.inspect(out).params_total == ka.inspect(model).params_total
    after = ka.evaluate(out, tiny["test"], TRIGGER, 0)
    assert after.asr is not None and after.asr < found.known.asr  # type: ignore[union-attr]

    second = "patch:size=2,pos=tl,value=1"  # a further trigger, unlearnt in the same run
    _, tuned = ka.prune(model, tiny["data"], ratio=0.125, trigger=TRIGGER, target=0,
                        fine_tune_epochs=1, unlearn=True, also_unlearn=[second])  # fmt: skip
    assert tuned.fine_tune is not None and tuned.fine_tune.triggers == 2
    with pytest.raises(ka_errors().BadInputError, match="also_unlearn needs"):
        ka.prune(model, tiny["data"], ratio=0.125, trigger=TRIGGER, also_unlearn=[second])


def test_defend_through_the_api_is_measured_with_a_known_trigger(tiny: dict[str, Path]) -> None:
    """ka.defend with eval_trigger: the known trigger measures the blind defence on eval_data
    (the CLI's --eval-trigger), so the result is not the recovered triggers' alone."""
    import kerasaudit as ka
    from kerasaudit.finetune import FineTuneSettings
    from kerasaudit.stages.defend import DefenceSettings
    from kerasaudit.stages.reverse import ReverseConfig

    tuning = FineTuneSettings(2, True, distill=0.8)
    settings = DefenceSettings(
        ratio=0.125, fine_tuning=tuning, rounds=1, final_epochs=None
    )  # one round: fast
    fixed, result = ka.defend(
        tiny["backdoored"], tiny["data"], eval_data=tiny["test"],
        config=ReverseConfig(steps=200, images=128), settings=settings,
        eval_trigger=TRIGGER, eval_target=0,
    )  # fmt: skip
    assert fixed is not None and result.reverse.verdict.flagged == (0,)
    (known,) = [c for c in result.checks if c.source == "known"]
    assert known.asr_before is not None and known.asr_before > 0.9
    assert known.asr_after is not None and known.asr_after < 0.05
    assert not result.recovered_only and result.evaluated_on == "--eval-data"


def test_a_baseline_from_reverse_results_and_reports(tiny: dict[str, Path], tmp_path: Path) -> None:
    import json

    import kerasaudit as ka
    from kerasaudit.baselines import load, save
    from kerasaudit.stages.reverse import ReverseConfig

    config = ReverseConfig(steps=40, batch_size=32, images=64, complete=False)
    result = ka.reverse(tiny["clean"], tiny["data"], config=config)
    report = tmp_path / "clean.json"
    report.write_text(json.dumps(result.to_dict()))
    with np.load(tiny["data"]) as f:
        x, y = f["x"], f["y"]
    built = ka.build_baseline([result, report, report.as_posix()], 255 * x, y, name="stripes")
    assert built.task.baseline.name == "stripes" and built.task.baseline.models == 3
    assert built.task.num_classes == result.num_classes
    assert built.task.image_shape == tuple(result.data.shape)
    assert len(built.left_out) == 3 and built.reports[0].path == "<result 0>"
    save(built.task, tmp_path / "b.json")
    assert load(tmp_path / "b.json").baseline.offsets.keys() == built.task.baseline.offsets.keys()
    # With a clean reference model of the task: saved with a copy beside it, the veto kept.
    with_ref = ka.build_baseline([result, report, report], x, y, references=[tiny["clean"]])
    (tmp_path / "out").mkdir()
    target = tmp_path / "out" / "with_ref.json"
    ka.save_baseline(with_ref, target)
    copy = tmp_path / "out" / tiny["clean"].name
    assert copy.read_bytes() == tiny["clean"].read_bytes()
    loaded = load(target).baseline
    assert loaded.references == (str(copy),) and loaded.rule.transfer == 0.2
    with pytest.raises(ka_errors().BadInputError, match="exists"):
        ka.save_baseline(with_ref, target)


def test_api_refuses_what_it_cannot_use(tiny: dict[str, Path]) -> None:
    import kerasaudit as ka

    errors = ka_errors()
    with pytest.raises(errors.BadInputError, match="no such file"):
        ka.load_model("no-such-model.keras")
    with pytest.raises(errors.BadInputError):
        ka.scan(tiny["backdoored"], np.zeros((4, 3, 3, 1), np.float32))  # wrong shape
    with pytest.raises(TypeError, match="model file"):
        ka.audit(object(), tiny["test"])


def ka_errors() -> Any:
    import kerasaudit.errors

    return kerasaudit.errors

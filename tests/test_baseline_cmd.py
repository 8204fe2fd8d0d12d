"""`kerasaudit baseline`: a task baseline built from known-clean models' reports, through the
real CLI, and used as `--baseline FILE`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import SAMPLES
from typer.testing import CliRunner

from kerasaudit import baselines
from kerasaudit.cli.app import app
from kerasaudit.verdict import LabelEvidence, ModelEvidence, judge

runner = CliRunner()
DATA = SAMPLES / "fmnist_val.npz"


def _clean_evidence(seed: int) -> ModelEvidence:
    """A clean model of a task whose label 8 is naturally easy (its mask ~20× smaller)."""
    rng = np.random.default_rng(seed)
    masks = 60.0 * np.exp(rng.normal(0.0, 0.1, 10))
    masks[8] /= 20.0
    return ModelEvidence(
        tuple(
            LabelEvidence(
                k, float(m), True, additive_l2=2.0 + 0.05 * k, additive_reached=True, margin=30.0
            )
            for k, m in enumerate(masks)
        ),
        60.0,
        True,
    )


def _report(path: Path, evidence: ModelEvidence, *, shape: list[int] | None = None) -> Path:
    """What `kerasaudit reverse -f json` writes, as far as a baseline reads it."""
    report = {
        "schema": "kerasaudit.reverse/1",
        "model": path.stem,
        "data": {"path": str(DATA), "shape": shape or [28, 28, 1]},
        "num_classes": 10,
        "evidence": evidence.to_dict(),
    }
    path.write_text(json.dumps(report))
    return path


def test_a_baseline_from_clean_reports_stops_their_natural_false_alarm(tmp_path: Path) -> None:
    reports = [_report(tmp_path / f"clean{i}.json", _clean_evidence(i)) for i in range(6)]
    assert judge(_clean_evidence(99)).flagged == (8,)  # without a baseline: a false alarm
    out = tmp_path / "task.json"
    args = ["baseline", *map(str, reports), "-d", str(DATA), "-o", str(out), "--name", "toy"]
    result = runner.invoke(app, [*args, "-f", "json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["schema"] == "kerasaudit.baseline/1" and report["output"] == str(out)
    assert report["left_out_false_alarms"] == 0  # each against a baseline of the other five
    assert report["plain_false_alarms"] == 6 and report["reports"][0]["plain_flagged"] == [8]
    assert report["rule_source"] == "the shipped fashion-mnist baseline's rule"
    # ... without the shipped rule's reference-model veto: no references come with this file
    written = json.loads(out.read_text())
    assert written["rule"]["transfer"] is None and written["references"] == []
    assert "reference models" not in written["rule"]["description"]
    # The file is a baseline `--baseline FILE` takes: it matches its own data, and it keeps a
    # new clean model of the task from being flagged while a real target still is.
    with np.load(DATA) as f:
        x, y = f["x"].reshape(-1, 28, 28, 1).astype(np.float32), f["y"]
    choice = baselines.choose(str(out), x, y, 10)
    assert choice.baseline is not None and choice.baseline.name == "toy"
    assert choice.baseline.similarity > 0.99 and choice.baseline.models == 6
    assert np.exp(choice.baseline.offsets["mask_l1"][8]) == pytest.approx(1 / 20, rel=0.2)
    assert judge(_clean_evidence(99), baseline=choice.baseline).flagged == ()
    backdoored = _clean_evidence(98)
    labels = list(backdoored.labels)
    labels[3] = LabelEvidence(3, 1.0, True, additive_l2=2.15, additive_reached=True, margin=30.0)
    target = ModelEvidence(tuple(labels), 60.0, True)
    assert judge(target, baseline=choice.baseline).flagged == (3,)
    # Table output: the offsets and the leave-one-out check, readable; nothing overwritten.
    again = runner.invoke(app, args)
    assert again.exit_code == 2 and "exists" in again.output
    table = runner.invoke(app, [*args, "--force"])
    assert table.exit_code == 0, table.output
    assert "Leave-one-out" in table.stdout and "× 0.05" in table.stdout
    assert "0 of 6 flagged (plain rule: 6 of 6)" in table.stderr


def test_a_clean_model_unlike_the_others_is_caught_by_the_leave_one_out_check(
    tmp_path: Path,
) -> None:
    odd = list(_clean_evidence(5).labels)
    odd[2] = LabelEvidence(2, 0.5, True, additive_l2=2.1, additive_reached=True, margin=30.0)
    reports = [_report(tmp_path / f"c{i}.json", _clean_evidence(i)) for i in range(4)]
    reports.append(_report(tmp_path / "odd.json", ModelEvidence(tuple(odd), 60.0, True)))
    out = tmp_path / "b.json"
    result = runner.invoke(
        app, ["baseline", *map(str, reports), "-d", str(DATA), "-o", str(out), "-f", "json"]
    )
    assert result.exit_code == 0, result.output
    rows = {
        Path(r["path"]).name: r["left_out_flagged"] for r in json.loads(result.stdout)["reports"]
    }
    assert rows["odd.json"] == [2] and all(v == [] for k, v in rows.items() if k != "odd.json")


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("two reports", "at least 3"),
        ("same report twice", "named twice"),
        ("no evidence", "no trigger-recovery evidence"),
        ("other shapes", "different shapes"),
        ("not json", "cannot read report"),
        ("data of another shape", "does not fit"),
    ],
)
def test_bad_inputs_exit_2_and_write_nothing(tmp_path: Path, case: str, message: str) -> None:
    reports = [_report(tmp_path / f"c{i}.json", _clean_evidence(i)) for i in range(3)]
    if case == "two reports":
        reports = reports[:2]
    elif case == "same report twice":
        reports.append(reports[0])
    elif case == "no evidence":
        reports[1].write_text(json.dumps({"schema": "kerasaudit.scan/1", "layers": []}))
    elif case == "other shapes":
        _report(reports[2], _clean_evidence(2), shape=[32, 32, 3])
    elif case == "not json":
        reports[0].write_text("{")
    elif case == "data of another shape":
        for i, path in enumerate(reports):
            _report(path, _clean_evidence(i), shape=[32, 32, 3])
    out = tmp_path / "b.json"
    result = runner.invoke(app, ["baseline", *map(str, reports), "-d", str(DATA), "-o", str(out)])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert not out.exists()


def test_building_a_baseline_needs_no_tensorflow(tmp_path: Path) -> None:
    import subprocess
    import sys

    reports = [str(_report(tmp_path / f"c{i}.json", _clean_evidence(i))) for i in range(3)]
    argv = ["baseline", *reports, "-d", str(DATA), "-o", str(tmp_path / "b.json"), "-q"]
    code = (
        "import sys\n"
        "from kerasaudit.cli.app import app\n"
        "try:\n"
        f"    app({argv!r})\n"
        "except SystemExit as exc:\n"
        "    heavy = [m for m in ('tensorflow', 'keras', 'h5py') if m in sys.modules]\n"
        "    print('HEAVY=' + ','.join(heavy) + ' CODE=' + str(exc.code))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "HEAVY= CODE=0" in done.stdout, done.stdout + done.stderr
    assert (tmp_path / "b.json").exists()


REFERENCE = Path(baselines.SHIPPED) / "fashion-mnist.ref-dense.keras"  # a real clean model


def test_reference_models_are_copied_beside_the_baseline_and_keep_the_veto(
    tmp_path: Path,
) -> None:
    reports = [_report(tmp_path / f"c{i}.json", _clean_evidence(i)) for i in range(3)]
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "task.json"
    base = ["baseline", *map(str, reports), "-d", str(DATA)]
    argv = [*base, "-o", str(out), "--reference", str(REFERENCE), "--transfer", "0.3"]
    result = runner.invoke(app, [*argv, "-f", "json"])
    assert result.exit_code == 0, result.output
    copy = out_dir / REFERENCE.name
    assert copy.read_bytes() == REFERENCE.read_bytes()
    written = json.loads(out.read_text())
    assert written["references"] == [REFERENCE.name] and written["rule"]["transfer"] == 0.3
    assert written["reference_range"] is None  # the audited models' own input space
    assert "0.3" in written["rule"]["description"] or "30%" in written["rule"]["description"]
    loaded = baselines.load(out).baseline
    assert loaded.references == (str(copy),) and loaded.rule.transfer == 0.3
    # A vetoed small mask: the label's trigger moves the reference models.
    evidence = _clean_evidence(7)
    labels = list(evidence.labels)
    labels[3] = LabelEvidence(
        3, 1.0, True, additive_l2=2.15, additive_reached=True, margin=30.0, transfer=0.5
    )
    assert judge(ModelEvidence(tuple(labels), 60.0, True), baseline=loaded).flagged == ()
    labels[3] = LabelEvidence(
        3, 1.0, True, additive_l2=2.15, additive_reached=True, margin=30.0, transfer=0.05
    )
    assert judge(ModelEvidence(tuple(labels), 60.0, True), baseline=loaded).flagged == (3,)
    # Again without --force: the copy is in the way, nothing is rewritten.
    out2 = out_dir / "task2.json"
    again = runner.invoke(app, [*base, "-o", str(out2), "--reference", str(REFERENCE)])
    assert again.exit_code == 2 and "exists" in again.output and not out2.exists()
    # A reference already beside the baseline is used where it is.
    beside = runner.invoke(app, [*base, "-o", str(out2), "--reference", str(copy)])
    assert beside.exit_code == 0, beside.output
    assert json.loads(out2.read_text())["references"] == [REFERENCE.name]
    assert copy.read_bytes() == REFERENCE.read_bytes()


def _classifier(path: Path, classes: int) -> Path:
    import keras

    inputs = keras.Input((28, 28, 1))
    x = keras.layers.Conv2D(2, 3)(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    keras.Model(inputs, keras.layers.Dense(classes, activation="softmax")(x)).save(path)
    return path


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("not a model file", "a .keras or .h5 file"),
        ("other classes", "outputs 5 scores"),
        ("same name twice", "same file name"),
    ],
)
def test_bad_reference_models_exit_2_and_write_nothing(
    tmp_path: Path, case: str, message: str
) -> None:
    reports = [_report(tmp_path / f"c{i}.json", _clean_evidence(i)) for i in range(3)]
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    if case == "not a model file":
        refs = [DATA]
    elif case == "other classes":
        refs = [_classifier(tmp_path / "five.keras", 5)]
    else:
        refs = [_classifier(tmp_path / d / "ten.keras", 10) for d in ("a", "b")]
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    argv = ["baseline", *map(str, reports), "-d", str(DATA), "-o", str(out_dir / "b.json")]
    result = runner.invoke(app, [*argv, *(a for r in refs for a in ("--reference", str(r)))])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert list(out_dir.iterdir()) == []

"""batch: a fleet of real models, each audited by a real worker process, results in SQLite,
SARIF validated against the OASIS 2.1.0 schema, --resume, and a worker killed mid-run."""

from __future__ import annotations

import json
import shutil
import sqlite3
import tempfile
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from hostile_files import lambda_model_files
from ray_helpers import run_killing_first_task
from test_reverse import TRIGGER, write_stripe_files
from typer.testing import CliRunner

from kerasaudit.cli.app import app

runner = CliRunner()
SCHEMA = Path(__file__).parent / "data" / "sarif-schema-2.1.0.json"
KNOWN = ["--trigger", TRIGGER, "--target", "0"]


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory, keras_module: Any) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("batch")
    (root / "made").mkdir()
    files = write_stripe_files(root / "made", keras_module)
    models = root / "models"
    (models / "team").mkdir(parents=True)
    shutil.copy(files["backdoored"], models / "backdoored.keras")
    shutil.copy(files["clean"], models / "team" / "clean.keras")
    evil, _ = lambda_model_files(root / "made", root / "PWNED")
    shutil.copy(evil, models / "team" / "lambda.keras")
    (models / "garbage.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(range(256)) * 4)
    return {"models": models, "test": files["test"], "marker": root / "PWNED"}


def rows(db: Path) -> dict[str, dict[str, Any]]:
    with sqlite3.connect(db) as con:
        con.row_factory = sqlite3.Row
        return {Path(r["model"]).name: dict(r) for r in con.execute("SELECT * FROM audits")}


@pytest.mark.slow
def test_batch_audits_a_fleet_records_it_and_resumes(
    fleet: dict[str, Path], tmp_path: Path
) -> None:
    db, sarif, jsonl = tmp_path / "r.sqlite", tmp_path / "r.sarif", tmp_path / "r.jsonl"
    args = ["batch", str(fleet["models"]), "-d", str(fleet["test"]), *KNOWN, "--db", str(db)]
    result = runner.invoke(
        app, [*args, "--workers", "2", "--sarif", str(sarif), "--jsonl", str(jsonl)]
    )
    assert result.exit_code == 1, result.output  # a backdoor in the fleet
    recorded = rows(db)
    assert {k: v["status"] for k, v in recorded.items()} == {
        "backdoored.keras": "found",
        "clean.keras": "clean",
        "lambda.keras": "refused",
        "garbage.h5": "bad input",
    }
    assert not fleet["marker"].exists(), "the Lambda's payload ran"
    found = recorded["backdoored.keras"]
    assert found["backdoor"] == 1 and json.loads(found["targets"]) == [0]
    assert json.loads(found["report"])["known_trigger"]["attack"]["asr"] > 0.9
    assert len(found["model_sha256"]) == 64 and found["attempts"] == 1
    assert "Lambda" in recorded["lambda.keras"]["message"]
    # One progress line per model on stderr, then the summary.
    assert result.stderr.count("] found ") == 1 and "[4/4]" in result.stderr
    assert "4 model(s): 1 found, 1 clean, 1 refused, 1 bad input" in result.stderr

    document = json.loads(sarif.read_text())
    jsonschema.validate(document, json.loads(SCHEMA.read_text()))
    results = document["runs"][0]["results"]
    assert sorted(r["ruleId"] for r in results) == ["KA003", "KA004", "KA005"]
    uris = {r["ruleId"]: r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"]
            for r in results}  # fmt: skip
    assert uris["KA003"].endswith("backdoored.keras")
    lines = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert sorted(line["status"] for line in lines) == ["bad input", "clean", "found", "refused"]

    # --resume: nothing is audited again, and the exit code still reports the fleet.
    again = runner.invoke(app, [*args, "--resume"])
    assert again.exit_code == 1, again.output
    assert "0 audited (4 already recorded, skipped)" in again.stderr
    assert rows(db) == recorded
    # Other settings are another audit: nothing is skipped.
    other = runner.invoke(app, [*args, "--resume", "--max-asr", "100", "--format", "json"])
    assert other.exit_code == 3, other.output  # nothing found; a model was refused
    assert json.loads(other.stdout)["counts"]["found"] == 0
    with sqlite3.connect(db) as con:
        assert con.execute("SELECT COUNT(*) FROM audits").fetchone()[0] == 8


@pytest.mark.slow
def test_a_killed_worker_is_retried_once_then_recorded_as_an_error(
    fleet: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A worker killed mid-load cannot remove its private copy of the model: its TMPDIR is the
    # coordinator's per-attempt directory, removed after the kill.
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setenv("TMPDIR", str(scratch))
    monkeypatch.setattr(tempfile, "tempdir", None)
    db = tmp_path / "r.sqlite"
    model = fleet["models"] / "backdoored.keras"
    result = runner.invoke(
        app,
        ["batch", str(model), "-d", str(fleet["test"]), *KNOWN, "--db", str(db),
         "--timeout", "0.5"],
    )  # fmt: skip
    assert result.exit_code == 4, result.output
    row = rows(db)["backdoored.keras"]
    assert row["status"] == "error" and row["attempts"] == 2
    assert "timed out" in row["message"]
    assert list(scratch.iterdir()) == []
    # --resume audits failed models again (here without the timeout: it succeeds).
    again = runner.invoke(
        app, ["batch", str(model), "-d", str(fleet["test"]), *KNOWN, "--db", str(db), "--resume"]
    )
    assert again.exit_code == 1, again.output
    assert rows(db)["backdoored.keras"]["status"] == "found"


def test_batch_refuses_bad_arguments_before_auditing(tmp_path: Path) -> None:
    data = tmp_path / "d.npz"
    data.write_bytes(b"")
    for args, message in (
        ([str(tmp_path / "missing.keras")], "does not exist"),
        ([str(tmp_path)], "no model found"),
        ([str(tmp_path), "--timeout", "0"], "--timeout"),
    ):
        result = runner.invoke(app, ["batch", *args, "-d", str(data)])
        assert result.exit_code == 2 and message in result.output, result.output


@pytest.mark.slow
def test_batch_on_a_ray_cluster_survives_a_killed_worker(
    fleet: dict[str, Path], ray_cluster: Any, tmp_path: Path
) -> None:
    db, sarif = tmp_path / "r.sqlite", tmp_path / "r.sarif"
    models = [fleet["models"] / "backdoored.keras", fleet["models"] / "team" / "clean.keras"]
    result, killed = run_killing_first_task(
        "run_one",
        ["batch", *map(str, models), "-d", str(fleet["test"]), *KNOWN, "--db", str(db),
         "--sarif", str(sarif), "--ray", ray_cluster.address],
    )  # fmt: skip
    assert killed, "no Ray worker was seen running the task (nothing was killed)"
    assert result.returncode == 1, result.stdout + result.stderr
    assert {k: v["status"] for k, v in rows(db).items()} == {
        "backdoored.keras": "found",
        "clean.keras": "clean",
    }
    assert "on Ray" in result.stderr
    jsonschema.validate(json.loads(sarif.read_text()), json.loads(SCHEMA.read_text()))

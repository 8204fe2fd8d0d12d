"""audit: the one command whose verdict and exit code say whether a model has a backdoor."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from test_reverse import TRIGGER, write_stripe_files
from typer.testing import CliRunner

from kerasaudit.cli.app import app

runner = CliRunner()
FAST = ["--steps", "200", "--images", "128"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory, keras_module: Any) -> dict[str, Path]:
    return write_stripe_files(tmp_path_factory.mktemp("audit"), keras_module)


def test_default_max_asr_matches_the_library() -> None:
    from kerasaudit.cli.audit_cmd import DEFAULT_MAX_ASR_PCT
    from kerasaudit.stages.audit import DEFAULT_MAX_ASR

    assert pytest.approx(100 * DEFAULT_MAX_ASR) == DEFAULT_MAX_ASR_PCT


def test_audit_finds_the_planted_backdoor_blind_and_writes_a_page(
    tiny: dict[str, Path], tmp_path: Path
) -> None:
    page = tmp_path / "audit.html"
    report_file = tmp_path / "audit.json"
    args = [
        *["audit", str(tiny["backdoored"]), "--data", str(tiny["data"]), *FAST],
        *["--html", str(page), "--format", "json", "-o", str(report_file)],
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 1, result.output
    report = json.loads(report_file.read_text())
    assert report["schema"] == "kerasaudit.stages.audit/1"
    assert report["backdoor"] is True and 0 in report["targets"]
    assert report["clean_scan"]["verdict"] is None  # clean statistics are not a verdict
    assert report["neurons"], "the recovered trigger's channels are reported"
    # The summary on stderr says what was found, and where the page is.
    assert re.search(r"audit: .*BACKDOOR.*HTML page .*audit\.html", result.stderr), result.stderr
    # Before the search, how long it will take, on one line that fits 80 columns.
    (estimate,) = [line for line in result.stderr.splitlines() if "every label: about" in line]
    assert re.fullmatch(r"trigger recovery, every label: about \d+ (s|min) here .*", estimate)
    assert len(estimate) <= 80

    html = page.read_text()
    assert html.startswith("<!DOCTYPE html>")
    assert "backdoor found" in html and "Exit code 1" in html
    assert "<script" not in html.lower() and "Content-Security-Policy" in html
    assert "data:image/png;base64," in html  # the recovered triggers, inlined
    assert "Channels the trigger drives" in html

    # Every output is protected: nothing is replaced without --force, checked before any work.
    again = runner.invoke(app, args)
    assert again.exit_code == 2 and "--force" in again.output


def test_audit_known_trigger_decides_by_its_asr(tiny: dict[str, Path], tmp_path: Path) -> None:
    known = ["--trigger", TRIGGER, "--target", "0", "--format", "json", "-q"]
    saved = tmp_path / "report.json"
    backdoored = runner.invoke(
        app,
        ["audit", str(tiny["backdoored"]), "--data", str(tiny["test"]), *known,
         "--report", str(saved)],
    )  # fmt: skip
    assert backdoored.exit_code == 1, backdoored.output
    report = json.loads(backdoored.stdout)
    assert json.loads(saved.read_text()) == report  # --report: the same JSON, in a file
    assert report["backdoor"] is True and report["reverse"] is None
    assert report["known_trigger"]["attack"]["asr"] > 0.95

    page = tmp_path / "clean.html"
    clean = runner.invoke(
        app,
        ["audit", str(tiny["clean"]), "--data", str(tiny["test"]), *known, "--html", str(page)],
    )
    assert clean.exit_code == 0, clean.output
    assert json.loads(clean.stdout)["backdoor"] is False
    html = page.read_text()
    assert "no backdoor found" in html and "Exit code 0" in html and "Known trigger" in html


def test_audit_refuses_bad_outputs_before_loading(tiny: dict[str, Path], tmp_path: Path) -> None:
    base = ["audit", str(tiny["backdoored"]), "--data", str(tiny["data"])]
    same = str(tmp_path / "same.html")
    for extra, message in (
        (["--html", str(tmp_path / "page.txt")], "name it *.html"),
        (["--html", same, "-o", same], "--output and --html name the same file"),
        (["--report", same, "-o", same], "--output and --report name the same file"),
        (["--max-asr", "150"], "--max-asr"),
    ):
        result = runner.invoke(app, [*base, *extra])
        assert result.exit_code == 2, (extra, result.output)
        assert message in result.output, result.output


def test_audit_uses_saved_clean_statistics(tiny: dict[str, Path], tmp_path: Path) -> None:
    stats = tmp_path / "stats.npz"
    scanned = runner.invoke(
        app, ["scan", str(tiny["backdoored"]), "-d", str(tiny["test"]), "--save-stats", str(stats)]
    )
    assert scanned.exit_code in (0, 1), scanned.output
    known = ["--trigger", TRIGGER, "--target", "0", "--format", "json", "-q"]
    base = ["audit", str(tiny["backdoored"]), "--data", str(tiny["test"]), *known]
    own, saved = runner.invoke(app, base), runner.invoke(app, [*base, "--stats", str(stats)])
    assert own.exit_code == saved.exit_code == 1, own.output + saved.output
    mine, theirs = json.loads(own.stdout), json.loads(saved.stdout)
    assert mine["clean_scan"] == theirs["clean_scan"]
    foreign = runner.invoke(app, ["audit", str(tiny["clean"]), "--data", str(tiny["test"]),
                                  *known, "--stats", str(stats)])  # fmt: skip
    assert foreign.exit_code == 2 and "another model" in foreign.output, foreign.output


def test_audit_fix_measures_the_fix_again_after_batchnorm_reestimation(
    keras_module: Any, tiny: dict[str, Path], tmp_path: Path
) -> None:
    """--fix with a known trigger writes the fixed model and measures every trigger on it, and
    (BatchNorm) again with the statistics re-estimated on the audit data: JSON, table, page."""
    from test_reverse import stripe_model

    model = tmp_path / "bn.keras"
    stripe_model(keras_module, backdoor=True, batchnorm=True).save(model)
    fixed, page = tmp_path / "fixed.keras", tmp_path / "audit.html"
    args = [
        *["audit", str(model), "--data", str(tiny["data"]), "--trigger", TRIGGER],
        *["--target", "0", "--fix", str(fixed), "--html", str(page)],
    ]
    # One run: the table on stdout (wide), the JSON report in --report, the page in --html.
    report = tmp_path / "report.json"
    result = runner.invoke(app, [*args, "--report", str(report)], env={"COLUMNS": "200"})
    assert result.exit_code == 1, result.output  # a backdoor was found (the known trigger)
    fix = json.loads(report.read_text())["fix"]
    assert fixed.is_file() and fix is not None
    assert 0.0 <= fix["accuracy_reestimated"] <= 1.0
    (entry,) = fix["asr"]
    assert entry["before"] > 0.95 and entry["reestimated"] is not None
    back = entry["reestimated"] - entry["after"] >= 0.10
    assert fix["comes_back"] == ([entry["trigger"]] if back else [])
    html = page.read_text()
    assert "BN re-estimated" in html and ("comes back" in html) == back
    assert "BN re-estimated" in result.stdout
    assert fix["blind"] is False and "Checked only with" not in result.stdout + html
    # the fix's accuracy is on the audit data it fine-tuned on: said, with what the kept
    # candidate lost on the part held out from its fine-tuning
    choice = fix["prune"]["layer_choice"]
    assert choice["held_out"] and fix["held_out_drop"] == choice["held_out_drop"] is not None
    flat = " ".join(result.stdout.split())  # as one line, whatever the wrapping
    assert "Clean accuracy above is on the audit data, which the removal fine-tuned on" in flat
    # and, as defend's, the kept recipe run again on a second part no choice saw
    verified = fix["verification"]
    assert verified == fix["prune"]["verification"] and verified["images"] > 0
    shown = re.search(r"changed accuracy by ([-+]\d+\.\d\d) points on them", flat)
    assert shown and float(shown[1]) == pytest.approx(-100 * verified["drop"], abs=0.006)
    quarter = re.search(r"the kept candidate read ([-+]\d+\.\d\d) points on the images", flat)
    assert quarter and float(quarter[1]) == pytest.approx(-100 * fix["held_out_drop"], abs=0.006)
    # the page says the same under the fix's table
    assert f"changed accuracy by {shown[1]} points on them" in " ".join(html.split())
    summary = " ".join(result.stderr.split())
    assert f"(on the data it fine-tuned on; {shown[1]} points on {verified['images']} images" in (
        summary
    )

    plain = runner.invoke(
        app,
        [
            *["audit", str(tiny["backdoored"]), "--data", str(tiny["data"])],
            *["--trigger", TRIGGER, "--target", "0", "--fix", str(tmp_path / "f2.keras")],
            *["--format", "json", "-q"],
        ],
    )
    assert plain.exit_code == 1, plain.output
    no_bn = json.loads(plain.stdout)["fix"]  # no BatchNorm: nothing to re-estimate
    assert no_bn["accuracy_reestimated"] is None and no_bn["comes_back"] == []
    assert all(e["reestimated"] is None for e in no_bn["asr"])


def test_audit_fix_without_a_trigger_searches_the_fixed_model_again(
    tiny: dict[str, Path], tmp_path: Path
) -> None:
    """Blind --fix removes as `defend` does by default (further searches, two rounds): each
    flagged label is searched again up to three times on the original model with what was
    found forbidden, and once more on the fixed model; each search and look is reported (JSON
    and table) and a used one's trigger is measured with the others; the planted trigger no
    longer works on the output."""
    fixed = tmp_path / "fixed.keras"
    args = [
        *["audit", str(tiny["backdoored"]), "--data", str(tiny["data"]), *FAST],
        *["--fix", str(fixed)],
    ]
    # One run: the table on stdout (wide), the JSON report in --report.
    result = runner.invoke(
        app, [*args, "--report", str(tmp_path / "report.json")], env={"COLUMNS": "200"}
    )
    assert result.exit_code == 1, result.output
    report = json.loads((tmp_path / "report.json").read_text())
    fix = report["fix"]
    assert fixed.is_file() and fix is not None
    searches = [look for look in fix["second_looks"] if look["search"]]
    looks = [look for look in fix["second_looks"] if not look["search"]]
    assert [look["label"] for look in looks] == report["reverse"]["verdict"]["flagged"]
    assert {look["label"] for look in searches} == {0} == {look["label"] for look in looks}
    # searches in turn, the first one over the rule the last
    assert [look["search"] for look in searches] == list(range(1, len(searches) + 1))
    assert 1 <= len(searches) <= 3
    assert all(look["used"] for look in searches[:-1])
    for look in [*searches, *looks]:
        assert look["round"] == (1 if look["search"] else 2)
        assert look["used"] == (
            look["reached"] and look["mask_l1"] < look["ratio"] * look["reference_l1"]
        )
    again = [e for e in fix["asr"] if "round2" in e["trigger"]]
    assert len(again) == sum(look["used"] for look in looks)
    searched = [e for e in fix["asr"] if "_search" in e["trigger"]]
    assert len(searched) == sum(look["used"] for look in searches)
    assert "Search 1: label 0 searched again on the original model" in result.stdout
    evaluated = runner.invoke(
        app,
        [
            *["evaluate", str(fixed), "--data", str(tiny["test"]), "-t", TRIGGER, "--target", "0"],
            *["--format", "json", "-q"],
        ],
    )
    assert evaluated.exit_code == 0, evaluated.output
    assert json.loads(evaluated.stdout)["attack"]["asr"] < 0.05
    assert "Round 2: label 0 searched again on the fixed model" in result.stdout
    # blind: every ASR of the table is a recovered trigger's, unlearnt on these images
    assert fix["blind"] is True
    assert "Checked only with the triggers recovered from the model" in result.stdout


def test_a_trigger_that_drives_no_channel_is_named_on_its_line() -> None:
    """With several triggers, one whose channels stay quiet prints no table — its summary
    line then says which trigger it is (it used to be one of several identical lines)."""
    import io

    import numpy as np
    from rich.console import Console

    from kerasaudit.formats import neurons_fmt
    from kerasaudit.neurons import LayerNeurons, TriggerNeurons

    def neurons(flagged: tuple[int, ...]) -> TriggerNeurons:
        layer = LayerNeurons("conv1", np.ones(4), np.array([1.0, 1.0, 1.0, 9.0]),
                             np.array([0.0, 0.0, 0.0, 8.0]), (), flagged)  # fmt: skip
        return TriggerNeurons({}, 3, (layer,), 3.5, 10, 10)

    def shown(item: TriggerNeurons, context: str | None) -> list[str]:
        out = io.StringIO()
        console = Console(file=out, width=200)
        neurons_fmt.render(item, console, title="Channels (target 3)", context=context)
        return out.getvalue().splitlines()

    quiet = shown(neurons(()), "target 3, additive file t.npz")
    assert quiet == [
        "target 3, additive file t.npz: 0 channel(s) in 0 layer(s) raised far beyond their "
        "siblings by the trigger (triggered − clean ℓ∞, robust z > 3.5)"
    ]
    loud = shown(neurons((3,)), "target 3, additive file t.npz")
    assert loud[0].startswith("Channels (target 3)")  # the table's title names it
    assert loud[-1].startswith("1 channel(s) in 1 layer(s)")

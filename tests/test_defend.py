"""defend: reverse → prune with the recovered trigger + unlearning → evaluate, on tiny models."""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_reverse import TRIGGER, K, write_stripe_files
from typer.testing import CliRunner

from kerasaudit.cli.app import app

runner = CliRunner()
# One channel of the tiny model's eight (its conv layer has one channel per class).
FAST = [
    *("--steps", "200", "--images", "128", "--fine-tune-epochs", "2", "--final-epochs", "2"),
    *("--ratio", "0.125", "--searches", "0"),  # further searches: their own tests below
]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory, keras_module: Any) -> dict[str, Path]:
    return write_stripe_files(tmp_path_factory.mktemp("defend"), keras_module)


def test_defend_removes_planted_backdoor_without_knowing_it(
    tiny: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "defended.keras"
    artifacts = tmp_path / "rev"
    report_file = tmp_path / "defend.json"
    args = [
        *["defend", str(tiny["backdoored"]), "--data", str(tiny["data"])],
        *["--eval-data", str(tiny["test"]), "-o", str(out), "--artifacts", str(artifacts)],
        *["--eval-trigger", TRIGGER, "--eval-target", "0", "--report", str(report_file)],
        *FAST,
        *["--format", "json", "-q"],
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 1, result.output  # a backdoor was found (and removed)
    report = json.loads(result.stdout)
    assert report == json.loads(report_file.read_text())
    assert report["schema"] == "kerasaudit.stages.defend/1"
    assert report["flagged"] == [0] and report["changed"] and report["output"] == str(out)
    assert report["evaluated_on"] == "--eval-data"
    assert report["held_out_drop"] is None  # held-out numbers are the ones reported
    pruned = report["prune"][0]
    assert pruned["criterion"] == "linf-trigger"
    assert pruned["pruned"][0]["channels"] == [K + 2]  # the backdoor channel, found blind
    assert pruned["fine_tune"]["mode"] == "unlearn"
    known = next(c for c in report["triggers"] if c["source"] == "known")
    recovered = next(c for c in report["triggers"] if c["source"] == "recovered")
    assert known["asr_before"] > 0.95 and known["asr_after"] < 0.05
    assert recovered["asr_after"] < recovered["asr_before"]
    assert report["accuracy_drop"] <= 0.015
    # no BatchNorm in this model: nothing to re-estimate
    assert report["reestimated"] is None and not report["comes_back"]
    assert all(c["asr_reestimated"] is None and not c["comes_back"] for c in report["triggers"])
    assert (artifacts / "trigger_label0.npz").is_file() and (artifacts / "reverse.json").is_file()

    # The written model is the defended one: evaluate confirms with the real trigger.
    evaluated = runner.invoke(
        app,
        [
            *["evaluate", str(out), "--data", str(tiny["test"]), "-t", TRIGGER, "--target", "0"],
            *["--format", "json", "-q"],
        ],
    )
    assert evaluated.exit_code == 0, evaluated.output
    assert json.loads(evaluated.stdout)["attack"]["asr"] < 0.05

    # Outputs are never replaced without --force (checked before any work).
    again = runner.invoke(app, args)
    assert again.exit_code == 2 and "--force" in again.output


def test_defend_finds_and_removes_the_backdoor_of_a_colour_model(
    tmp_path: Path, keras_module: Any
) -> None:
    """The same planted backdoor behind a three-channel input (a CIFAR-shaped model's path
    through mask/pattern shapes, completion, the generators and the written model)."""
    rgb = write_stripe_files(tmp_path, keras_module, channels=3)
    out = tmp_path / "defended.keras"
    args = [
        *["defend", str(rgb["backdoored"]), "--data", str(rgb["data"])],
        *["--eval-data", str(rgb["test"]), "-o", str(out)],
        *["--eval-trigger", TRIGGER, "--eval-target", "0", *FAST, "--format", "json", "-q"],
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 1, result.output
    report = json.loads(result.stdout)
    assert report["flagged"] == [0] and report["changed"] and out.is_file()
    assert report["prune"][0]["pruned"][0]["channels"] == [K + 2]
    known = next(c for c in report["triggers"] if c["source"] == "known")
    assert known["asr_before"] > 0.95 and known["asr_after"] < 0.05
    assert report["accuracy_drop"] <= 0.015
    clean = runner.invoke(app, ["defend", str(rgb["clean"]), "--data", str(rgb["data"]), *FAST])
    assert clean.exit_code == 0, clean.output  # the colour twin without the backdoor: left alone


def test_defend_ratio_zero_unlearns_without_pruning(tiny: dict[str, Path], tmp_path: Path) -> None:
    """--ratio 0: no channel zeroed; fine-tuning (here SGD) unlearns the recovered trigger,
    and the real one stops working."""
    out = tmp_path / "defended.keras"
    fast = [a if a != "0.125" else "0" for a in FAST]
    args = [
        *["defend", str(tiny["backdoored"]), "--data", str(tiny["data"])],
        *["--eval-data", str(tiny["test"]), "-o", str(out), "--optimizer", "sgd"],
        *["--eval-trigger", TRIGGER, "--eval-target", "0", *fast],
    ]
    # One run: the table on stdout, the summaries on stderr, the JSON report in --report.
    table = runner.invoke(app, [*args, "--report", str(tmp_path / "report.json")])
    assert table.exit_code == 1, table.output
    report = json.loads((tmp_path / "report.json").read_text())
    pruned = report["prune"][0]
    assert pruned["ratio"] == 0.0 and pruned["pruned"] == [] and pruned["rankings"] == []
    choice, tuned = pruned["layer_choice"], pruned["fine_tune"]
    assert choice["layers"] == [] and "no pruning" in choice["reason"]
    assert tuned["optimizer"] == "sgd" and tuned["learning_rate"] == 3e-3
    assert pruned["fine_tune"]["mode"] == "unlearn"
    known = next(c for c in report["triggers"] if c["source"] == "known")
    assert known["asr_before"] > 0.95 and known["asr_after"] < 0.05
    assert "Step 2: unlearn (no pruning)" in table.stdout and "none — --ratio 0" in table.stdout
    forms = {c["form"] for c in report["triggers"] if c["source"] == "recovered"}
    assert forms and "" not in forms
    for form in forms:  # each recovered trigger's row and summary say which form it is
        assert f"ASR, recovered trigger ({form}) → 0" in table.stdout.replace("\n", " ")
        assert f"recovered trigger ({form}) → 0: ASR" in table.stderr.replace("\n", " ")
    no_tuning = runner.invoke(app, [*args, "--force", "--fine-tune-epochs", "0"])
    assert no_tuning.exit_code == 2 and "--ratio 0 prunes nothing" in no_tuning.output


def test_defend_reports_the_asr_after_batchnorm_reestimation(
    keras_module: Any, tiny: dict[str, Path], tmp_path: Path
) -> None:
    """With BatchNorm, every trigger is measured again on the defended model with statistics
    re-estimated on --data; the warning is printed exactly when one comes back."""
    from test_reverse import stripe_model

    model = tmp_path / "bn.keras"
    stripe_model(keras_module, backdoor=True, batchnorm=True).save(model)
    args = [
        *["defend", str(model), "--data", str(tiny["data"]), "--eval-data", str(tiny["test"])],
        *["--eval-trigger", TRIGGER, "--eval-target", "0", *FAST],
    ]
    # One run: the table on stdout (wide), the JSON report in --report.
    result = runner.invoke(
        app, [*args, "--report", str(tmp_path / "report.json")], env={"COLUMNS": "200"}
    )
    assert result.exit_code == 1, result.output
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["flagged"] == [0] and report["changed"]
    assert report["reestimated"] is not None and 0.0 <= report["reestimated"]["accuracy"] <= 1.0
    checks = report["triggers"]
    assert {c["source"] for c in checks} == {"recovered", "known"}
    for c in checks:
        assert c["asr_reestimated"] is not None
        assert c["comes_back"] == (c["asr_reestimated"] - c["asr_after"] >= 0.10)
    back = any(c["comes_back"] for c in checks)
    assert report["comes_back"] == back
    assert ("the removal may be superficial" in result.stderr) == back
    # the real trigger was measured: no caveat that only recovered triggers were
    assert report["recovered_only"] is False and "Checked only with" not in result.stdout
    assert "BN re-estimated" in result.stdout


def test_defend_clean_model_changes_and_writes_nothing(
    tiny: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "defended.keras"
    result = runner.invoke(
        app,
        [
            *["defend", str(tiny["clean"]), "--data", str(tiny["data"]), "-o", str(out)],
            *FAST,
        ],
    )
    assert result.exit_code == 0, result.output
    assert not out.exists()
    assert "no backdoor found" in result.stdout
    assert "Step 2: skipped" in result.stdout


def test_defend_bad_input(tiny: dict[str, Path], tmp_path: Path) -> None:
    base = ["defend", str(tiny["backdoored"]), "--data", str(tiny["data"])]
    for extra, message in (
        (["--eval-target", "0"], "--eval-target needs --eval-trigger"),
        (["--ratio", "1.5"], "--ratio"),
        (["-o", str(tmp_path / "x.txt")], "must end in"),
        (["--fine-tune-epochs", "0", "--adversarial"], "--adversarial works while fine-tuning"),
        (["--optimizer", "rmsprop"], "--optimizer must be one of adam, sgd"),
        (["--learning-rate", "-1"], "--learning-rate must be positive"),
    ):
        result = runner.invoke(app, [*base, *extra])
        assert result.exit_code == 2, (extra, result.output)
        assert message in result.output


def _decoy(tiny: dict[str, Path]) -> tuple[Any, Any, Any]:
    """The tiny backdoored model, its data, and a decoy "found" for label 0: a 2×2 black
    patch in the top-left corner, which drives nothing."""
    import kerasaudit as ka
    from kerasaudit.stages.reverse import FoundTrigger

    model = ka.load_model(tiny["backdoored"]).model
    data = ka.load_data(tiny["data"], model)
    shape = data.info.shape
    mask = np.zeros(shape[:2], np.float32)
    mask[:2, :2] = 1.0
    blank = np.zeros(shape, np.float32)
    return model, data, FoundTrigger("trigger_label0", 0, "neural-cleanse", mask, blank)


def test_a_second_round_finds_the_trigger_a_decoy_stood_for(tiny: dict[str, Path]) -> None:
    """remove_in_rounds (defend --rounds 2): when the trigger found first is a decoy (a black
    patch that drives nothing), unlearning it leaves the backdoor (real ASR > 50 %); the second
    look — Neural Cleanse on the defended model — finds the planted trigger (mask smaller than
    the reference) and the removal from the original model with both takes it below 10 %."""

    import kerasaudit as ka
    from kerasaudit.finetune import FineTuneSettings
    from kerasaudit.stages.defend import DefenceSettings, remove_in_rounds
    from kerasaudit.stages.reverse import ReverseConfig

    model, data, decoy = _decoy(tiny)
    tuning = FineTuneSettings(epochs=5, unlearn=True, learning_rate=0.05)
    config = ReverseConfig(steps=200, images=128, complete=False)
    asr, looks = {}, {}
    for rounds in (1, 2):
        settings = DefenceSettings(
            ratio=0.125, fine_tuning=tuning, rounds=rounds, final_epochs=None, searches=0
        )
        defended, pruned, found, seen = remove_in_rounds(
            model, data, [decoy], settings, labels=[0], reference=1e6,
            value_range=(0.0, 1.0), config=config,
        )  # fmt: skip
        assert defended is not None and pruned is not None
        asr[rounds] = ka.evaluate(defended, tiny["test"], TRIGGER, 0).asr
        looks[rounds] = (seen, [f.stem for f in found])
    assert looks[1] == ([], ["trigger_label0"])
    (look,), stems = looks[2]
    assert look.round == 2 and look.label == 0 and look.reached and look.used
    assert look.mask_l1 < 20  # the planted 2×2 patch, not a large perturbation
    assert stems == ["trigger_label0", "trigger_label0_round2"]
    assert asr[1] > 0.5 and asr[2] < 0.1, asr  # type: ignore[operator]


def test_further_searches_forbid_what_was_found_and_stop_at_the_look_rule(
    tiny: dict[str, Path],
) -> None:
    """further_searches (defend --searches): with a decoy found first (a 2×2 black patch in
    the top-left corner), the first search — the decoy's region grown by 1 px forbidden —
    finds a compact trigger (the tiny net pools globally: it answers the planted white patch
    in other places than bottom right), the second forbids that one too. Every search's mask
    is exactly 0 where it was forbidden; a mask over the look rule is reported, not returned,
    and ends the label's searches; a non-mask trigger is not searched from."""
    from kerasaudit.completion import dilate
    from kerasaudit.stages.defend import further_searches
    from kerasaudit.stages.reverse import ReverseConfig
    from kerasaudit.triggers import half_peak_region

    model, data, decoy = _decoy(tiny)
    config = ReverseConfig(steps=150, images=128, complete=False)
    looks, found = further_searches(model, data, [decoy], 1e6, config, 2, 0.7, (0.0, 1.0))
    assert [(look.search, look.round, look.label) for look in looks] == [(1, 1, 0), (2, 1, 0)]
    assert looks[0].forbidden == 8  # the 2×2 corner grown by one pixel down and right
    assert looks[1].forbidden > looks[0].forbidden
    assert all(look.used == look.reached for look in looks)  # far under 0.7 × 10⁶
    assert [f.stem for f in found] == [f"trigger_label0_search{look.search}" for look in looks]
    assert [f.form() for f in found] == ["mask, search 1", "mask, search 2"]
    first, second = found
    corner = dilate(decoy.mask > 0, 1)
    assert not first.mask[corner].any()  # forbidden: exactly zero
    region = half_peak_region(first.mask)
    assert 0 < region.sum() <= 6 and looks[0].mask_l1 < 20  # compact, as the planted patch
    both = corner | dilate(region, 1)
    assert not second.mask[both].any()
    assert looks[1].forbidden == int(both.sum())
    # the look rule: nothing is small enough against a tiny reference; one search, reported
    (over,), none = further_searches(model, data, [decoy], 1e-3, config, 3, 0.7, (0.0, 1.0))
    assert not over.used and none == [] and over.search == 1
    additive = dataclasses.replace(decoy, kind="additive", delta=np.zeros_like(decoy.pattern))
    assert further_searches(model, data, [additive], 1e6, config, 3, 0.7, (0.0, 1.0)) == ([], [])
    assert further_searches(model, data, [decoy], 1e6, config, 0, 0.7, (0.0, 1.0)) == ([], [])


def test_a_second_look_over_three_seeds_decides_by_the_median_mask(tiny: dict[str, Path]) -> None:
    """DefenceSettings.look_seeds: the look's Neural Cleanse runs once per seed; the median
    mask decides (used = reached and below ratio × reference) and is the trigger returned;
    every seed's mask is kept; an even count is refused."""
    import numpy as np

    import kerasaudit as ka
    from kerasaudit.errors import BadInputError
    from kerasaudit.stages.defend import DefenceSettings, second_look
    from kerasaudit.stages.reverse import ReverseConfig

    model = ka.load_model(tiny["backdoored"]).model
    data = ka.load_data(tiny["data"], model)
    config = ReverseConfig(steps=150, images=128, complete=False)
    one, _ = second_look(model, data, [0], 1e6, config, 2, 0.7)
    (look,), found = second_look(model, data, [0], 1e6, config, 2, 0.7, seeds=3)
    assert len(look.masks) == 3  # in seed order: the first is the one-seed look's
    assert look.mask_l1 == sorted(look.masks)[1] == float(np.median(look.masks))
    assert one[0].masks == (one[0].mask_l1,)
    assert look.masks[0] == pytest.approx(one[0].mask_l1, rel=1e-3)
    assert len(set(look.masks)) > 1  # the seeds searched differently
    assert look.used == (look.reached and look.mask_l1 < 0.7 * 1e6)
    assert [f.stem for f in found] == (["trigger_label0_round2"] if look.used else [])
    if found:
        assert float(np.abs(found[0].mask).sum()) == pytest.approx(look.mask_l1, rel=1e-3)
    with pytest.raises(BadInputError, match="odd"):
        DefenceSettings(look_seeds=2).check()


def test_defend_rounds_reports_its_second_looks(tiny: dict[str, Path], tmp_path: Path) -> None:
    """--rounds 2 --searches 1 through the CLI: one further search and one second look per
    flagged label in the JSON (their rule: used = reached and smaller than the reference), the
    settings echoed, the defended model still free of the planted backdoor; a used look's
    trigger is measured like the others."""
    args = [
        *["defend", str(tiny["backdoored"]), "--data", str(tiny["data"])],
        *["--eval-data", str(tiny["test"]), "--eval-trigger", TRIGGER, "--eval-target", "0"],
        *FAST, "--rounds", "2", "--searches", "1", "--format", "json", "-q",
    ]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 1, result.output
    report = json.loads(result.stdout)
    assert report["settings"]["rounds"] == 2 and report["settings"]["searches"] == 1
    search, look = report["second_looks"]
    assert (search["round"], search["search"], search["label"]) == (1, 1, 0)
    assert search["forbidden"] > 0 and search["reference_l1"] == look["reference_l1"]
    assert search["used"] == (
        search["reached"] and search["mask_l1"] < search["ratio"] * search["reference_l1"]
    )
    searched = [c for c in report["triggers"] if "search1" in c["description"]]
    assert bool(searched) == search["used"]
    assert all(c["form"] == "mask, search 1" for c in searched)
    assert look["search"] == 0
    assert look["round"] == 2 and look["label"] == 0 and look["ratio"] == 0.7
    assert look["used"] == (
        look["reached"] and look["mask_l1"] < look["ratio"] * look["reference_l1"]
    )
    assert 0 < look["reference_l1"] < float("inf")
    recovered = [c for c in report["triggers"] if c["source"] == "recovered"]
    again = [c for c in recovered if "round2" in c["description"]]
    assert bool(again) == look["used"]
    assert all(c["form"] == "mask, round 2" for c in again)
    assert all(c["form"] and "round" not in c["form"] for c in recovered if c not in again)
    text = runner.invoke(app, [a for a in args if a not in ("json", "--format", "-q")])
    assert text.exit_code == 1, text.output
    assert "Search 1: label 0 searched again on the original model" in text.output
    known = next(c for c in report["triggers"] if c["source"] == "known")
    assert known["asr_after"] < 0.05


def test_defend_generalise_through_the_cli(tiny: dict[str, Path], tmp_path: Path) -> None:
    """--generalise always: the text says how many recovered triggers were also fitted as
    image-dependent changes, the JSON echoes the setting and counts them; never: none; an
    unknown rule exits 2."""
    base = [*["defend", str(tiny["backdoored"]), "--data", str(tiny["data"])], *FAST,
            "--rounds", "1"]  # fmt: skip
    report_file = tmp_path / "always.json"
    text = runner.invoke(
        app, [*base, "--generalise", "always", "--report", str(report_file)],
        env={"COLUMNS": "200"},
    )  # fmt: skip
    assert text.exit_code == 1, text.output
    fitted = [line for line in text.output.splitlines() if "Step 2" in line]
    assert fitted and all("also fitted as image-dependent changes" in line for line in fitted)
    # no --eval-trigger: the table was measured with recovered triggers only, and says so
    assert "Checked only with the triggers recovered from the model" in text.stdout
    assert json.loads(report_file.read_text())["recovered_only"] is True
    # no --eval-data: the accuracy after is on the images fine-tuning saw, and the text says
    # so beside what the kept candidate lost on the images held out from its fine-tuning
    always = json.loads(report_file.read_text())
    choice = always["prune"][-1]["layer_choice"]
    assert choice["held_out"] and always["held_images"] == choice["held_images"] > 0
    assert always["held_out_drop"] == choice["held_out_drop"]
    kept = next(
        c
        for c in choice["candidates"]
        if [c["layer"]] == choice["layers"] and c["ratio"] == always["prune"][-1]["ratio"]
    )
    assert always["held_out_drop"] == pytest.approx(choice["held_accuracy"] - kept["accuracy"])
    flat = " ".join(text.stdout.split())  # as one line, whatever the wrapping
    assert "which the removal fine-tuned on: it is optimistic" in flat
    # --verify (the default): the kept recipe fine-tuned again without a second quarter of
    # --data and measured on it; that estimate is the one shown, the quarter's beside it
    verified = always["verification"]
    assert verified == always["prune"][-1]["verification"] and verified["images"] > 0
    assert always["settings"]["verify"] is True
    shown = re.search(r"changed accuracy by ([-+]\d+\.\d\d) points on them", flat)
    assert shown and float(shown[1]) == pytest.approx(-100 * verified["drop"], abs=0.006)
    quarter = re.search(r"the kept candidate read ([-+]\d+\.\d\d) points on the images", flat)
    assert quarter and float(quarter[1]) == pytest.approx(-100 * always["held_out_drop"], abs=0.006)
    summary = " ".join(text.stderr.split())
    assert "fine-tuned on it: optimistic" in summary
    assert f"{shown[1]} points on {verified['images']} images no choice saw" in summary
    # the verification runs once, after the last round, as a step of its own
    assert summary.count("step: verify: the kept recipe again") == 1
    never_file = tmp_path / "never.json"
    never = runner.invoke(
        app, [*base, "--generalise", "never", "--no-verify", "--report", str(never_file)],
        env={"COLUMNS": "200"},
    )  # fmt: skip
    assert never.exit_code == 1, never.output
    # --no-verify: no second run; the quarter's own estimate, called optimistic
    unverified = json.loads(never_file.read_text())
    assert unverified["verification"] is None and unverified["settings"]["verify"] is False
    assert "step: verify" not in never.stderr
    held_images = unverified["held_images"]
    held = rf"by ([-+]\d+\.\d\d) points on the {held_images} images held out"
    flat = " ".join(never.stdout.split())
    shown = re.search(held, flat)
    assert shown and float(shown[1]) == pytest.approx(-100 * unverified["held_out_drop"], abs=0.006)
    assert "a rough, optimistic estimate" in flat
    summary = " ".join(never.stderr.split())
    assert f"{shown[1]} points on {held_images} images held out from it" in summary
    for rule, expected, report in (
        ("always", True, json.loads(report_file.read_text())),
        ("never", False, unverified),
    ):
        assert report["settings"]["generalise"] == rule
        counts = [p["fine_tune"]["generators"] for p in report["prune"]]
        assert counts and all((n > 0) == expected for n in counts), counts
    bad = runner.invoke(app, [*base, "--generalise", "sometimes"])
    assert bad.exit_code == 2 and "generalise" in bad.output


def test_rounds_default_to_two_and_need_unlearning() -> None:
    """Two rounds and three further searches by default; without unlearning there is nothing
    to unlearn a second round's or a search's trigger with, so one round and no search run,
    and the report says so."""
    from kerasaudit.finetune import FineTuneSettings
    from kerasaudit.stages.defend import DefenceSettings

    assert DefenceSettings().rounds == DefenceSettings().rounds_run == 2
    assert DefenceSettings().searches == DefenceSettings().searches_run == 3
    for tuning in (FineTuneSettings(epochs=0), FineTuneSettings(epochs=3, unlearn=False)):
        settings = DefenceSettings(fine_tuning=tuning, rounds=3, final_epochs=None)
        settings.check()
        assert settings.rounds_run == 1 and settings.to_dict()["rounds"] == 1
        assert settings.searches_run == 0 and settings.to_dict()["searches"] == 0
    assert DefenceSettings(rounds=3).to_dict()["rounds"] == 3
    assert DefenceSettings(searches=1).to_dict()["searches"] == 1


def test_recovered_triggers_are_fitted_as_generators_unless_the_first_is_a_patch(
    tiny: dict[str, Path],
) -> None:
    """DefenceSettings.generalise "diffuse": a compact patch ranking the channels is unlearnt
    as recovered; a whole-image mask, an additive perturbation or a warp makes every stampable
    recovered trigger also a fitted GeneratorAdversary ("broken": a patch that does not work on
    --data too; "always"/"never" override; unknown rules refused)."""
    import numpy as np

    import kerasaudit as ka
    from kerasaudit.errors import BadInputError
    from kerasaudit.finetune import FineTuneSettings
    from kerasaudit.stages.defend import DefenceSettings, generalises, recovered_trigger, remove
    from kerasaudit.stages.reverse import FoundTrigger

    model = ka.load_model(tiny["backdoored"]).model
    data = ka.load_data(tiny["data"], model)
    shape = data.info.shape
    patch = np.zeros(shape[:2], np.float32)
    patch[:2, :2] = 1.0
    zeros, none = np.zeros(shape, np.float32), np.zeros(shape[:2], np.float32)
    whole = np.full(shape[:2], 0.2, np.float32)
    found = {
        "patch": FoundTrigger("p", 0, "neural-cleanse", patch, zeros),
        "diffuse": FoundTrigger("d", 0, "neural-cleanse", whole, np.ones(shape, np.float32)),
        "additive": FoundTrigger("a", 0, "additive", none, zeros, delta=zeros + 0.05),
        "warp": FoundTrigger("w", 0, "warp", none, zeros, flow=np.ones((*shape[:2], 2))),
    }
    triggers = {k: recovered_trigger(f, shape, (0.0, 1.0)) for k, f in found.items()}
    assert not generalises("diffuse", triggers["patch"])
    assert all(generalises("diffuse", triggers[k]) for k in ("diffuse", "additive", "warp"))
    assert generalises("always", triggers["patch"]) and not generalises("never", triggers["warp"])
    tuning = FineTuneSettings(epochs=1, unlearn=True, learning_rate=0.01)
    fitted = {}
    for first in ("patch", "additive"):
        order = [first, "diffuse" if first == "patch" else "patch"]
        settings = DefenceSettings(
            ratio=0.125, fine_tuning=tuning, generalise="diffuse", final_epochs=None
        )
        _, pruned = remove(model, data, [(0, triggers[k]) for k in order], settings)
        assert pruned.fine_tune is not None
        fitted[first] = (pruned.fine_tune.adversaries, pruned.fine_tune.generators)
    assert fitted == {"patch": (0, 0), "additive": (2, 2)}  # both triggers fitted, or none
    # "broken": a patch that ranks the channels is fitted too when it does not work on --data
    # (the dark 2×2 patch in the top-left corner), not when it does (the planted one)
    from kerasaudit.evaluation import evaluate
    from kerasaudit.stages.reverse import WORKING
    from kerasaudit.triggers import load_trigger

    planted = load_trigger(TRIGGER, shape)
    assert evaluate(model, data, triggers["patch"], 0).asr < WORKING
    assert evaluate(model, data, planted, 0).asr >= WORKING
    asked: list[str] = []
    assert generalises("broken", triggers["patch"], lambda: asked.append("p") or 0.1)
    assert not generalises("broken", triggers["patch"], lambda: asked.append("p") or 0.9)
    assert generalises("broken", triggers["additive"], lambda: asked.append("a") or 0.9)
    assert not generalises("diffuse", triggers["patch"], lambda: asked.append("d") or 0.1)
    assert asked == ["p", "p"]  # measured only for a patch, and only under "broken"
    for first, expected in ((planted, 0), (triggers["patch"], 2)):
        settings = DefenceSettings(
            ratio=0.125, fine_tuning=tuning, generalise="broken", final_epochs=None
        )
        _, pruned = remove(model, data, [(0, first), (0, triggers["diffuse"])], settings)
        assert pruned.fine_tune is not None and pruned.fine_tune.generators == expected
    with pytest.raises(BadInputError, match="generalise"):
        DefenceSettings(generalise="sometimes").check()


def test_found_trigger_forms_name_kind_and_round() -> None:
    import numpy as np

    from kerasaudit.stages.reverse import FoundTrigger

    z = np.zeros((4, 4), np.float32)
    assert FoundTrigger("a", 1, "neural-cleanse+completion", z, z).form() == "completed mask"
    assert FoundTrigger("b", 1, "neural-cleanse", z, z, round=2).form() == "mask, round 2"
    assert FoundTrigger("c", None, "untargeted", z, z).form() == "untargeted mask"
    assert FoundTrigger("d", 1, "neural-cleanse", z, z, search=2).form() == "mask, search 2"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--rounds", "0"], "--rounds"),
        (["--rounds", "-1"], "--rounds"),
        (["--searches", "-1"], "--searches"),
    ],
)
def test_defend_rounds_bad_values_exit_2(
    tiny: dict[str, Path], extra: list[str], message: str
) -> None:
    result = runner.invoke(
        app, ["defend", str(tiny["backdoored"]), "--data", str(tiny["data"]), *extra]
    )
    assert result.exit_code == 2, result.output
    assert message in result.output


def test_a_removal_over_its_accuracy_budget_on_held_out_images_is_warned_about() -> None:
    """cost_warning: one line when the kept candidate lost more than the budget on the images
    held out from its fine-tuning; nothing within the budget, or when nothing was held out."""
    from kerasaudit.formats.defend_fmt import cost_warning, optimism_note
    from kerasaudit.stages.prune import LayerCandidate, LayerChoice, Verification

    kept = LayerCandidate("conv3", 4, accuracy=0.70, asr=0.0, ra=0.9, ratio=0.2)
    other = LayerCandidate("conv2", 2, accuracy=0.86, asr=0.3, ra=0.6, ratio=0.05)

    def choice(held_accuracy: float, held_out: bool = True) -> LayerChoice:
        return LayerChoice(("conv3",), "why", (other, kept), held_accuracy, 250, held_out, 0.2,
                           budget=0.015)  # fmt: skip

    over = choice(0.904)
    assert over.chosen == kept and over.over_budget
    assert over.held_out_drop == pytest.approx(0.204)
    line = cost_warning(over) or ""
    assert line.startswith("warning: the removal cost 20.40 points")
    assert "250 images of --data held out" in line and "budget 1.50" in line
    assert "the audit data" in (cost_warning(over, "the audit data") or "")
    within = choice(0.71)  # lost 1 point: within the budget
    assert not within.over_budget and cost_warning(within) is None
    unheld = choice(0.904, held_out=False)  # measured on the data it was tuned on: no estimate
    assert unheld.held_out_drop is None and cost_warning(unheld) is None
    # --verify: the kept recipe more than one standard error over the budget on the images no
    # choice saw is warned about too, with those numbers, though the quarter it was chosen on
    # said it was within: 10 images lost, 2 gained of 250 → 3.20 ± 1.37 points
    checked = Verification(images=250, original_accuracy=0.9, accuracy=0.868, worst_asr=0.01,
                           seconds=1.0, lost=10, gained=2)  # fmt: skip
    assert checked.standard_error == pytest.approx(np.sqrt((12 - 64 / 250) / 250 / 249))
    line = cost_warning(within, "--data", checked) or ""
    assert line.startswith("warning: the removal cost 3.20 ± 1.37 points")
    assert "250 images of --data no choice saw" in line
    # 6 lost, 1 gained: 2.00 ± 1.05 points — over the budget, but not by a standard error
    noisy = dataclasses.replace(checked, accuracy=0.88, lost=6, gained=1)
    assert noisy.drop > within.budget and cost_warning(within, "--data", noisy) is None
    # Over the budget on the choosing quarter, not by a standard error on the second: the
    # warning gives both numbers (the summary line shows the second).
    both = cost_warning(over, "--data", noisy) or ""
    assert both.startswith("warning: the removal cost 20.40 points")
    assert "run again with another 250 held out, 2.00 ± 1.05" in both
    # the note names the choosing quarter's number only when there was one
    assert "the kept candidate read -1.00 points" in optimism_note(0.01, 250, verification=noisy)
    unmeasured = optimism_note(None, 0, verification=noisy)
    assert "-2.00 points on them (± 1.05" in unmeasured and "kept candidate read" not in unmeasured
    assert over.to_dict()["over_budget"] is True and over.to_dict()["budget"] == 0.015


def test_a_flagged_target_class_the_defended_model_stopped_recognising_is_reported(
    keras_module: Any, tmp_path: Path
) -> None:
    """lost_classes compares real evaluations: a model that sends every image of class 6
    elsewhere has lost that class (the held-out LeNet blend: Shirt 63 → 1 of 97), one that
    still gets most of it right has not, and an unflagged class is not the check's business."""
    from kerasaudit.data import DataSpec, open_data
    from kerasaudit.evaluation import evaluate
    from kerasaudit.formats.defend_fmt import lost_class_warnings
    from kerasaudit.stages.defend import LOST_CLASS_IMAGES, lost_classes

    keras = keras_module
    y = np.repeat(np.arange(10), 20)
    x = np.zeros((len(y), 4, 4, 1), np.float32)
    x.reshape(len(y), 16)[np.arange(len(y)), y] = 1.0  # class k lights pixel k
    path = tmp_path / "clean.npz"
    np.savez(path, x=x, y=y)
    data = open_data(DataSpec(path=path), (4, 4, 1), 10)

    def model(moved: int) -> Any:  # pixel k → class k, except `moved` images of class 6 → 0
        inp = keras.Input((4, 4, 1))
        out = keras.layers.Dense(10, activation="softmax")(keras.layers.Flatten()(inp))
        net = keras.Model(inp, out)
        kernel = np.zeros((16, 10), np.float32)
        kernel[np.arange(10), np.arange(10)] = 10.0
        net.layers[-1].set_weights([kernel, np.zeros(10, np.float32)])
        if moved:
            kernel[6] = 0.0
            kernel[6, 0] = 10.0
            net.layers[-1].set_weights([kernel, np.zeros(10, np.float32)])
        return net

    before, after = evaluate(model(0), data), evaluate(model(20), data)
    assert before.accuracy == 1.0 and after.accuracy == 0.9
    lost = lost_classes(before, after, [6, 2])
    assert [(c.label, c.count, c.correct_before, c.correct_after) for c in lost] == [(6, 20, 20, 0)]
    assert lost_classes(before, after, [2]) == ()  # class 6 not flagged: not reported
    assert lost_classes(before, before, [6]) == ()  # nothing lost
    assert LOST_CLASS_IMAGES <= 20
    (line,) = lost_class_warnings(lost)
    assert "0 of the 20 images of label 6" in line and "(20 before)" in line


def test_the_final_fine_tune_runs_its_own_epochs(tiny: dict[str, Path]) -> None:
    """DefenceSettings.final_epochs: the chosen candidate's fine-tune (or --ratio 0's only one)
    runs that many epochs; None keeps fine_tuning.epochs; under 1 is refused."""
    import kerasaudit as ka
    from kerasaudit.errors import BadInputError
    from kerasaudit.finetune import FineTuneSettings
    from kerasaudit.stages.defend import DefenceSettings, remove
    from kerasaudit.triggers import load_trigger

    model = ka.load_model(tiny["backdoored"]).model
    data = ka.load_data(tiny["data"], model)
    planted = load_trigger(TRIGGER, data.info.shape)
    tuning = FineTuneSettings(epochs=1, unlearn=True, learning_rate=0.01)
    ran = {}
    for ratio, final in ((0.125, None), (0.125, 3), (0.0, 2)):
        settings = DefenceSettings(ratio=ratio, fine_tuning=tuning, final_epochs=final)
        settings.check()
        _, pruned = remove(model, data, [(0, planted)], settings)
        assert pruned.fine_tune is not None
        ran[(ratio, final)] = (pruned.fine_tune.epochs, pruned.fine_tune.steps)
    assert [epochs for epochs, _ in ran.values()] == [1, 3, 2]
    assert ran[(0.125, 3)][1] == 3 * ran[(0.125, None)][1]  # every epoch is a pass over --data
    with pytest.raises(BadInputError, match="at least 1 epoch"):
        DefenceSettings(fine_tuning=tuning, final_epochs=0).check()


def _defend_planted(
    model_file: Path,
    data: Path,
    test: Path,
    out: Path,
    trigger: str = TRIGGER,
    loading: Sequence[str] = (),
    layer: str = "conv1",
) -> dict[str, Any]:
    """``defend`` on a form of the backdoored stripe model: label 0 flagged, the planted
    channel pruned, the known trigger removed, and the margin signal read from logits (a
    probability margin is at most 1; through the wrappers used before 2026-12-07 it read
    probabilities, or nothing: NaN for a uint8 input). Returns the JSON report."""
    args = [
        *["defend", str(model_file), "--data", str(data), "--eval-data", str(test)],
        *["-o", str(out), "--eval-trigger", trigger, "--eval-target", "0", *FAST],
        *["--format", "json", "-q", *loading],
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 1, result.output
    report: dict[str, Any] = json.loads(result.stdout)
    assert report["flagged"] == [0] and report["changed"]
    pruned = report["prune"][0]["pruned"][0]
    assert pruned["layer"] == layer and pruned["channels"] == [K + 2]
    known = next(c for c in report["triggers"] if c["source"] == "known")
    assert known["asr_before"] > 0.95 and known["asr_after"] < 0.05
    margins = report["reverse"]["margins"]
    assert margins["skipped"] is None and max(margins["margins"]) > 10
    return report


def test_defend_audits_and_rewrites_a_model_whose_input_has_no_channel_axis(
    tmp_path: Path, keras_module: Any
) -> None:
    """``Input((H, W))`` then a Reshape: the stages see it through a view that takes
    (H, W, 1) images (``kerasaudit.model_view``); the written model has the file's own
    (H, W) input. Before 2026-12-06, audit/reverse/defend stopped at "reverse needs image
    inputs (H, W, C)"."""
    from test_reverse import stripe_model

    keras = keras_module
    files = write_stripe_files(tmp_path, keras)
    source = stripe_model(keras, backdoor=True)
    inputs = keras.Input((8, 8), name="image")
    x = keras.layers.Reshape((8, 8, 1), name="add_axis")(inputs)
    for name in ("conv1", "gmp", "probs"):
        x = source.get_layer(name)(x)
    flat = keras.Model(inputs, x, name="flat")
    model_file = tmp_path / "flat.keras"
    flat.save(model_file)
    for part in ("data", "test"):  # (N, 8, 8): no channel axis either
        arrays = np.load(files[part])
        np.savez(tmp_path / f"{part}_flat.npz", x=arrays["x"][..., 0], y=arrays["y"])
    out = tmp_path / "defended.keras"
    _defend_planted(model_file, tmp_path / "data_flat.npz", tmp_path / "test_flat.npz", out)

    from kerasaudit.loading import load_model

    written = load_model(out).model
    assert tuple(written.inputs[0].shape) == (None, 8, 8)
    assert [layer.name for layer in written.layers][1:] == ["add_axis", "conv1", "gmp", "probs"]
    inspected = runner.invoke(app, ["inspect", str(out), "--format", "json"])
    assert inspected.exit_code == 0, inspected.output
    shapes = json.loads(inspected.stdout)["inputs"][0]["shape"]
    assert shapes == [None, 8, 8]
    evaluated = runner.invoke(
        app,
        [
            *["evaluate", str(out), "--data", str(tmp_path / "test_flat.npz"), "-t", TRIGGER],
            *["--target", "0", "--format", "json", "-q"],
        ],
    )
    assert evaluated.exit_code == 0, evaluated.output
    assert json.loads(evaluated.stdout)["attack"]["asr"] < 0.05

    # --layer takes the name `inspect` shows for the file (a bare name), as well as the path.
    bare = runner.invoke(
        app,
        [
            *["prune", str(model_file), "-d", str(tmp_path / "data_flat.npz"), "-c", "mean"],
            *["--ratio", "0.125", "--layer", "conv1", "-f", "json", "-q"],
        ],
    )
    assert bare.exit_code == 0, bare.output
    assert json.loads(bare.stdout)["pruned"][0]["layer"] == "conv1"

    import kerasaudit as ka  # the library: the same wrapper in, the file's own input out

    pruned_model, pruned_result = ka.prune(
        model_file, tmp_path / "data_flat.npz", ratio=0.125, criterion="mean"
    )
    assert tuple(pruned_model.inputs[0].shape) == (None, 8, 8)
    assert pruned_result.pruned[0].layer == "conv1"


def _stripe_form(keras: Any, form: str) -> Any:
    """The backdoored stripe model in another input or output form (same function)."""
    from test_reverse import stripe_model

    source = stripe_model(keras, backdoor=True)
    conv, gmp, probs = (source.get_layer(name) for name in ("conv1", "gmp", "probs"))
    if form == "channels_first":
        inputs = keras.Input((1, 8, 8), name="image")
        moved = keras.layers.Conv2D(
            K + 3, 3, padding="same", activation="relu", data_format="channels_first",
            name="conv1",
        )  # fmt: skip
        features = moved(inputs)
        moved.set_weights(conv.get_weights())  # the kernel layout does not depend on it
        pooled = keras.layers.GlobalMaxPooling2D(data_format="channels_first", name="gmp")(features)
        return keras.Model(inputs, probs(pooled), name="moved")
    if form == "flat":
        inputs = keras.Input((64,), name="image")
        image = keras.layers.Reshape((8, 8, 1), name="unflatten")(inputs)
        return keras.Model(inputs, probs(gmp(conv(image))), name="flat")
    if form == "uint8":  # raw pixels in, rescaled inside
        inputs = keras.Input((8, 8, 1), dtype="uint8", name="image")
        image = keras.layers.Rescaling(1 / 255, name="rescale")(inputs)
        return keras.Model(inputs, probs(gmp(conv(image))), name="raw")
    if form == "nested_head":  # the softmax head is a nested Sequential model
        inputs = keras.Input((8, 8, 1), name="image")
        head = keras.Sequential([keras.Input((K + 3,)), probs], name="head")
        return keras.Model(inputs, head(gmp(conv(inputs))), name="nested_head")
    if form == "ops":  # keras.ops in the graph, the softmax among them
        inputs = keras.Input((8, 8, 1), name="image")
        logits = keras.layers.Dense(K, name="logits")
        scores = logits(gmp(conv(inputs * 1.0)))
        logits.set_weights(probs.get_weights())
        return keras.Model(inputs, keras.ops.softmax(scores), name="ops")
    inputs = keras.Input((8, 8, 1), name="image")  # several outputs
    pooled = gmp(conv(inputs))
    brightness = keras.layers.Dense(1, name="brightness")(pooled)
    return keras.Model(inputs, {"label": probs(pooled), "brightness": brightness}, name="two")


@pytest.mark.parametrize(
    "form", ["channels_first", "flat", "outputs", "uint8", "ops", "nested_head"]
)
def test_defend_audits_and_rewrites_models_of_other_input_and_output_forms(
    tmp_path: Path, keras_module: Any, form: str
) -> None:
    """Channels-first input ``(1, H, W)``, a flat input ``(H·W,)`` reshaped inside, two
    outputs (a class head and a regression head), a uint8 input rescaled inside: each is
    audited through a view (``kerasaudit.model_view``), fed the data as the file's input
    takes it, and the written model has the file's own input (its dtype too) and outputs.
    Before 2026-12-07 the first stopped at "data shape (8, 8, 1) does not fit the model input
    (1, 8, 8)", the second at "reverse needs image inputs", the third at "has 1 inputs and 2
    outputs", the fourth with an internal error (no gradient through the cast to uint8).
    A model whose graph applies keras.ops (``x * 1.0``, ``keras.ops.softmax``) is read as it
    is: before 2026-12-07 it was refused as unsafe, and its softmax, not a layer, was not seen
    (the probabilities were taken for logits). So was a softmax at the end of a nested head
    model; its logits are now reached through it. A grouped conv is audited as the plain
    conv with its weights on the block diagonal (TensorFlow's CPU gradient through a grouped
    one is 25–190× slower) and written back grouped."""
    keras = keras_module
    files = write_stripe_files(tmp_path, keras)
    model = _stripe_form(keras, form)
    model_file = tmp_path / f"{form}.keras"
    model.save(model_file)
    for part in ("data", "test"):  # the data as the file's input takes it
        arrays = np.load(files[part])
        x = arrays["x"]
        if form == "channels_first":
            x = x.transpose(0, 3, 1, 2)
        elif form == "flat":
            x = x.reshape(len(x), -1)
        np.savez(tmp_path / f"{part}_{form}.npz", x=x, y=arrays["y"])
    out = tmp_path / "defended.keras"
    trigger = TRIGGER.replace("value=1", "value=255") if form == "uint8" else TRIGGER
    data, test = (tmp_path / f"{part}_{form}.npz" for part in ("data", "test"))
    _defend_planted(model_file, data, test, out, trigger)

    from kerasaudit.loading import load_model

    written = load_model(out).model
    assert tuple(written.inputs[0].shape) == tuple(model.inputs[0].shape)
    assert written.inputs[0].dtype == model.inputs[0].dtype
    assert len(written.outputs) == len(model.outputs)
    x = np.load(tmp_path / f"test_{form}.npz")["x"][:16].astype(np.float32)
    x = x if form == "uint8" else x / 255.0
    before, after = model.predict(x, verbose=0), written.predict(x, verbose=0)
    if form == "outputs":  # the regression head is kept; only the shared conv was pruned
        assert set(after) == {"label", "brightness"}
        before, after = before["label"], after["label"]
    assert after.shape == before.shape
    if form == "grouped":
        conv = written.get_layer("conv1")
        assert conv.groups == 2 and tuple(conv.kernel.shape) == (3, 3, 1, K + 3)
    evaluated = runner.invoke(
        app,
        [
            *["evaluate", str(out), "--data", str(tmp_path / f"test_{form}.npz")],
            *["-t", trigger, "--target", "0", "--format", "json", "-q"],
        ],
    )
    assert evaluated.exit_code == 0, evaluated.output
    assert json.loads(evaluated.stdout)["attack"]["asr"] < 0.05


def test_model_output_names_the_classifier_among_several(tmp_path: Path, keras_module: Any) -> None:
    """Two score-vector outputs: the audit needs ``--model-output``, which names the one to
    audit; a name the model lacks is refused with the names it has."""
    keras = keras_module
    files = write_stripe_files(tmp_path, keras)
    from test_reverse import stripe_model

    source = stripe_model(keras, backdoor=True)
    inputs = keras.Input((8, 8, 1), name="image")
    pooled = source.get_layer("gmp")(source.get_layer("conv1")(inputs))
    coarse = keras.layers.Dense(2, activation="softmax", name="coarse")(pooled)
    model = keras.Model(inputs, [source.get_layer("probs")(pooled), coarse], name="two")
    model_file = tmp_path / "two.keras"
    model.save(model_file)
    base = ["evaluate", str(model_file), "--data", str(files["test"]), "-f", "json", "-q"]
    refused = runner.invoke(app, base)
    assert refused.exit_code == 2
    assert "--model-output" in refused.output and "probs, coarse" in refused.output
    wrong = runner.invoke(app, [*base, "--model-output", "nope"])
    assert wrong.exit_code == 2 and "has the outputs probs, coarse" in wrong.output
    chosen = runner.invoke(app, [*base, "--model-output", "probs"])
    assert chosen.exit_code == 0, chosen.output
    test = np.load(files["test"])
    scores = model.predict(test["x"].astype(np.float32) / 255.0, verbose=0)[0]
    expected = float((scores.argmax(1) == test["y"]).mean())
    assert json.loads(chosen.stdout)["clean"]["accuracy"] == pytest.approx(expected, abs=1e-6)
    coarse_run = runner.invoke(app, [*base, "--model-output", "coarse"])
    assert coarse_run.exit_code == 2  # its 2 scores against labels up to K - 1
    assert "for a model with 2 outputs" in coarse_run.output
    # The library: the output is named once, when the model is loaded.
    import kerasaudit as ka
    from kerasaudit.errors import BadInputError

    loaded = ka.load_model(model_file, output="probs")
    assert ka.evaluate(loaded, files["test"]).accuracy == pytest.approx(expected, abs=1e-6)
    with pytest.raises(BadInputError, match="--model-output"):
        ka.evaluate(ka.load_model(model_file), files["test"])
    with pytest.raises(BadInputError, match="has the outputs probs, coarse"):
        ka.load_model(model_file, output="nope")


_CUSTOM_BLOCK = '''
import keras


@keras.saving.register_keras_serializable(package="tests")
class Wrapped(keras.layers.Layer):
    """A convolution written with keras.ops inside a custom layer: no conv layer at all."""

    def __init__(self, filters, **kwargs):
        super().__init__(**kwargs)
        self.filters = filters

    def build(self, input_shape):
        self.kernel = self.add_weight(shape=(3, 3, input_shape[-1], self.filters), name="kernel")
        self.bias = self.add_weight(shape=(self.filters,), initializer="zeros", name="bias")

    def call(self, x):
        return keras.ops.relu(keras.ops.conv(x, self.kernel, padding="same") + self.bias)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.filters)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters}


@keras.saving.register_keras_serializable(package="tests")
class ConvBlock(keras.layers.Layer):
    """Conv layers called from a custom layer's own code: conv → BatchNorm, and a second
    conv held in a list."""

    def __init__(self, filters, **kwargs):
        super().__init__(**kwargs)
        self.filters = filters
        self.conv = keras.layers.Conv2D(filters, 3, padding="same", activation="relu")
        self.norm = keras.layers.BatchNormalization(epsilon=1e-3)
        self.extra = [keras.layers.Conv2D(filters, 1)]

    def build(self, input_shape):
        self.conv.build(input_shape)
        self.norm.build((*input_shape[:-1], self.filters))
        self.extra[0].build((*input_shape[:-1], self.filters))

    def call(self, x, training=None):
        y = self.norm(self.conv(x), training=training)
        return y + 0.0 * self.extra[0](y)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.filters)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters}


@keras.saving.register_keras_serializable(package="tests")
class Trunk(keras.Model):
    """A subclassed model used as a layer: conv → BatchNorm → ReLU, then a conv."""

    def __init__(self, filters=4, **kwargs):
        super().__init__(**kwargs)
        self.filters = filters
        self.c1 = keras.layers.Conv2D(filters, 3, padding="same")
        self.bn = keras.layers.BatchNormalization()
        self.act = keras.layers.ReLU()
        self.c2 = keras.layers.Conv2D(filters, 3, padding="same", activation="relu")

    def call(self, x, training=None):
        return self.c2(self.act(self.bn(self.c1(x), training=training)))

    def get_config(self):
        return {"filters": self.filters, "name": self.name}


custom_objects = {"tests>Wrapped": Wrapped, "tests>ConvBlock": ConvBlock, "tests>Trunk": Trunk}
'''


def test_a_model_whose_convolutions_sit_inside_custom_layers_is_audited_and_defended(
    tmp_path: Path, keras_module: Any
) -> None:
    """No auditable layer (a custom layer convolves with keras.ops, `--custom-objects`): the
    trigger search still runs on the whole model and flags the target, the audit says the
    clean statistics were not measured, and `defend` removes by unlearning alone. Before
    2026-12-07 every command stopped at "the model has no convolutional layers to scan"."""
    from test_reverse import stripe_model

    from kerasaudit.loading import load_custom_objects

    keras = keras_module
    files = write_stripe_files(tmp_path, keras)
    blocks = tmp_path / "blocks.py"
    blocks.write_text(_CUSTOM_BLOCK)
    wrapped_class = load_custom_objects(blocks)["tests>Wrapped"]
    source = stripe_model(keras, backdoor=True)
    inputs = keras.Input((8, 8, 1), name="image")
    block = wrapped_class(K + 3, name="block")
    features = block(inputs)
    block.set_weights(source.get_layer("conv1").get_weights())
    outputs = source.get_layer("probs")(source.get_layer("gmp")(features))
    model_file = tmp_path / "custom.keras"
    keras.Model(inputs, outputs, name="custom").save(model_file)
    loading = ["--custom-objects", str(blocks)]

    audited = runner.invoke(
        app,
        [
            *["audit", str(model_file), "--data", str(files["data"]), *loading],
            *["--steps", "200", "--images", "128", "--report", str(tmp_path / "a.json"), "-q"],
        ],
    )
    assert audited.exit_code == 1, audited.output
    assert "no auditable conv layer" in audited.stdout
    report = json.loads((tmp_path / "a.json").read_text())
    assert report["targets"] == [0]
    assert report["clean_scan"] is None and report["neurons"] == []
    assert report["inventory"]["auditable_layers"] == []
    scanned = runner.invoke(app, ["scan", str(model_file), "-d", str(files["data"]), *loading])
    assert scanned.exit_code == 2 and "a custom layer computes itself" in scanned.output
    # The known-trigger chain: its one candidate is fine-tuning with unlearning.
    known_chain = runner.invoke(
        app,
        [
            *["prune", str(model_file), "-d", str(files["data"]), *loading, "-t", TRIGGER],
            *["--target", "0", "--ratio", "auto", "--fine-tune-epochs", "2", "--unlearn"],
            *["--max-asr", "100", "-f", "json", "-q"],
        ],
    )
    assert known_chain.exit_code == 0, known_chain.output
    chain = json.loads(known_chain.stdout)
    assert chain["pruned"] == [] and chain["ratio"] == 0.0
    assert [c["ratio"] for c in chain["layer_choice"]["candidates"]] == [0.0]
    assert chain["fine_tune"]["epochs"] == 2

    out = tmp_path / "defended.keras"
    defended = runner.invoke(
        app,
        [
            *["defend", str(model_file), "--data", str(files["data"]), *loading],
            *["--eval-data", str(files["test"]), "-o", str(out), "--eval-trigger", TRIGGER],
            *["--eval-target", "0", *FAST, "--final-epochs", "30", "--format", "json", "-q"],
        ],
    )
    assert defended.exit_code == 1, defended.output
    result = json.loads(defended.stdout)
    assert result["flagged"] == [0] and result["changed"]
    for step in result["prune"]:  # nothing to prune: unlearnt
        assert step["pruned"] == [] and "no auditable conv layer" in step["layer_choice"]["reason"]
        tuned = step["fine_tune"]
        assert tuned["epochs"] == 30 and tuned["triggers"] >= 1 and tuned["steps"] > 0
    # The planted weight (60 on the trigger channel) is far beyond what unlearning alone moves
    # in 30 epochs on 200 images: that it runs and writes the model is what is checked here.
    from kerasaudit.loading import load_model

    written = load_model(out, custom_objects_file=blocks).model
    before = source.get_layer("conv1").get_weights()[0]
    after = written.get_layer("block").get_weights()[0]
    assert after.shape == before.shape and not np.allclose(after, before)


def test_conv_layers_that_a_custom_layer_calls_are_scanned_pruned_and_explained(
    tmp_path: Path, keras_module: Any
) -> None:
    """Conv layers created and called by a custom layer's own code (`--custom-objects`) are
    listed by attribute (``block/conv``, ``block/extra_0``) with the BatchNorm that follows
    inside the block, measured by recording their calls, and pruned: `defend` zeroes the
    planted channel and its BatchNorm γ/β, and the file it writes keeps the custom layer.
    Grad-CAM explains the block's output, which the model's graph has. Before 2026-12-07
    such models had no auditable layer: `defend` could only unlearn."""
    from test_reverse import stripe_model

    from kerasaudit.loading import load_custom_objects, load_model

    keras = keras_module
    files = write_stripe_files(tmp_path, keras)
    blocks = tmp_path / "blocks.py"
    blocks.write_text(_CUSTOM_BLOCK)
    block_class = load_custom_objects(blocks)["tests>ConvBlock"]
    source = stripe_model(keras, backdoor=True, batchnorm=True)
    inputs = keras.Input((8, 8, 1), name="image")
    block = block_class(K + 3, name="block")
    features = block(inputs)
    block.conv.set_weights(source.get_layer("conv1").get_weights())
    block.norm.set_weights(source.get_layer("bn1").get_weights())
    outputs = source.get_layer("probs")(source.get_layer("gmp")(features))
    model_file = tmp_path / "custom.keras"
    keras.Model(inputs, outputs, name="custom").save(model_file)
    loading = ["--custom-objects", str(blocks)]

    inspected = runner.invoke(app, ["inspect", str(model_file), *loading, "-f", "json"])
    assert inspected.exit_code == 0, inspected.output
    layers = {a["path"]: a for a in json.loads(inspected.stdout)["auditable_layers"]}
    assert list(layers) == ["block/conv", "block/extra_0"]
    conv = layers["block/conv"]
    assert conv["batch_norm"] == "block/norm" and conv["measured_after"] == "block/norm"
    assert conv["custom_parent"] == "block" and conv["output_shape"] == [None, 8, 8, K + 3]
    assert layers["block/extra_0"]["batch_norm"] is None

    scanned = runner.invoke(
        app, ["scan", str(model_file), "-d", str(files["data"]), *loading, "-f", "json", "-q"]
    )
    assert scanned.exit_code in (0, 1), scanned.output
    stats = {s["layer"]: s for s in json.loads(scanned.stdout)["layers"]}
    assert stats["block/conv"]["measured"] == "block/norm"
    assert len(stats["block/conv"]["mean_linf"]) == K + 3

    out = tmp_path / "defended.keras"
    report = _defend_planted(
        model_file, files["data"], files["test"], out, loading=loading, layer="block/conv"
    )
    assert report["prune"][0]["pruned"][0]["batch_norm"] == "block/norm"
    written = load_model(out, custom_objects_file=blocks).model
    kept = written.get_layer("block")
    assert type(kept).__name__ == "ConvBlock"
    gamma, beta = kept.norm.get_weights()[:2]
    assert gamma[K + 2] == 0 and beta[K + 2] == 0
    assert np.all(kept.conv.get_weights()[0][..., K + 2] == 0)

    cams = runner.invoke(
        app,
        [
            *["gradcam", str(model_file), "-d", str(files["data"]), *loading, "-t", TRIGGER],
            *["-o", str(tmp_path / "cams"), "--limit", "2", "--target", "0", "-f", "json", "-q"],
        ],
    )
    assert cams.exit_code == 0, cams.output
    assert json.loads(cams.stdout)["models"][0]["layer"] == "block"
    asked = runner.invoke(
        app,
        [
            *["gradcam", str(model_file), "-d", str(files["data"]), *loading],
            *["-o", str(tmp_path / "cams2"), "--layer", "conv"],
        ],
    )
    assert asked.exit_code == 2 and "try --layer block" in asked.output


def test_conv_layers_of_a_subclassed_model_used_as_a_layer_are_pruned_by_attribute(
    tmp_path: Path, keras_module: Any
) -> None:
    """A subclassed model inside a Functional one: its layers are named by attribute
    (``trunk/c1``), since the names Keras gives them change with every copy the stages make
    (before 2026-12-07 they were listed by name, could not be measured, and a copy did not
    have them); `prune --ratio` zeroes the ranked channels and the BatchNorm's γ/β."""
    from kerasaudit.loading import load_custom_objects, load_model

    keras = keras_module
    files = write_stripe_files(tmp_path, keras)
    blocks = tmp_path / "blocks.py"
    blocks.write_text(_CUSTOM_BLOCK)
    trunk_class = load_custom_objects(blocks)["tests>Trunk"]
    inputs = keras.Input((8, 8, 1), name="image")
    features = trunk_class(4, name="trunk")(inputs)
    pooled = keras.layers.GlobalAveragePooling2D()(features)
    outputs = keras.layers.Dense(K, activation="softmax")(pooled)
    model_file = tmp_path / "sub.keras"
    keras.Model(inputs, outputs, name="sub").save(model_file)
    loading = ["--custom-objects", str(blocks)]
    inspected = runner.invoke(app, ["inspect", str(model_file), *loading, "-f", "json"])
    assert inspected.exit_code == 0, inspected.output
    layers = json.loads(inspected.stdout)["auditable_layers"]
    assert [(a["path"], a["batch_norm"], a["measured_after"]) for a in layers] == [
        ("trunk/c1", "trunk/bn", "trunk/act"),
        ("trunk/c2", None, "trunk/c2"),
    ]
    out = tmp_path / "pruned.keras"
    pruned = runner.invoke(
        app,
        [
            *["prune", str(model_file), "-d", str(files["data"]), *loading, "--layer", "c1"],
            *["--ratio", "0.5", "-c", "l1", "-o", str(out), "-f", "json", "-q"],
        ],
    )
    assert pruned.exit_code == 0, pruned.output
    step = json.loads(pruned.stdout)["pruned"][0]
    assert step["layer"] == "trunk/c1" and len(step["channels"]) == 2
    trunk = load_model(out, custom_objects_file=blocks).model.get_layer("trunk")
    kernel = trunk.c1.get_weights()[0]
    gamma = trunk.bn.get_weights()[0]
    for channel in step["channels"]:
        assert np.all(kernel[..., channel] == 0) and gamma[channel] == 0
    kept = [c for c in range(4) if c not in step["channels"]]
    assert all(np.any(kernel[..., c] != 0) for c in kept)

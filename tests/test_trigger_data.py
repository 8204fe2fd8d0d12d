"""Known triggers that no spec can stamp: --trigger-data (images carrying the trigger), the
untargeted ASR (no --target: all-to-all), and additive trigger files.

The model is the planted-backdoor stripe classifier of test_reverse: ``patch:size=2,pos=br``
sends every image to label 0.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_reverse import TRIGGER, K, write_stripe_files
from typer.testing import CliRunner

from kerasaudit.cli.app import app
from kerasaudit.data import DataSpec, open_data
from kerasaudit.evaluation import OFF_CLASS, evaluate
from kerasaudit.triggers import (
    TriggerData,
    load_trigger,
    parse_trigger,
    read_trigger_file,
    save_trigger_file,
)

runner = CliRunner()


@pytest.fixture(scope="module")
def stripes(tmp_path_factory: pytest.TempPathFactory, keras_module: Any) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("trigger_data")
    files = write_stripe_files(out, keras_module)
    # The same 200 images, stamped with the planted trigger, true classes kept.
    with np.load(files["data"]) as data:
        x, y = data["x"], data["y"]
    stamped = x.copy()
    stamped[:, 6:8, 6:8] = 255
    files["stamped"] = out / "stamped.npz"
    np.savez(files["stamped"], x=stamped, y=y)
    files["poisoned"] = out / "poisoned.npz"  # as found in a training set: labels = target
    np.savez(files["poisoned"], x=stamped, y=np.zeros_like(y))
    return files


def _json(args: list[str]) -> tuple[int, dict[str, Any]]:
    result = runner.invoke(app, [*args, "--format", "json", "-q"])
    return result.exit_code, (json.loads(result.stdout) if result.stdout.strip() else {})


def test_trigger_data_measures_what_the_spec_measures(stripes: dict[str, Path]) -> None:
    base = ["evaluate", str(stripes["backdoored"]), "-d", str(stripes["data"])]
    code_spec, spec = _json([*base, "--trigger", TRIGGER, "--target", "0"])
    code_data, data = _json([*base, "--trigger-data", str(stripes["stamped"]), "--target", "0"])
    assert code_spec == code_data == 0
    for key in ("evaluated", "to_target", "still_correct", "asr", "ra"):
        assert spec["attack"][key] == data["attack"][key], key
    assert spec["attack"]["asr"] > 0.9  # the planted backdoor works
    assert data["attack"]["trigger"]["kind"] == "data"
    # a stamped trigger has each image's unstamped twin; trigger images do not
    assert spec["attack"]["unstamped_to_target"] is not None
    assert spec["attack"]["flipped"] <= spec["attack"]["to_target"]
    assert data["attack"]["unstamped_to_target"] is None and data["attack"]["flip_rate"] is None


def test_poisoned_labels_are_not_taken_for_true_classes(stripes: dict[str, Path]) -> None:
    code, report = _json(
        ["evaluate", str(stripes["backdoored"]), "-d", str(stripes["data"]),
         "--trigger-data", str(stripes["poisoned"]), "--target", "0"]
    )  # fmt: skip
    assert code == 0
    attack = report["attack"]
    assert attack["ra"] is None  # true classes unknown
    assert attack["evaluated"] == 200  # every image counts when classes are unknown
    assert "labels ignored" in attack["trigger"]["note"]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--trigger-data", "STAMPED"], "--trigger-data needs --target"),
        (["--trigger-data", "STAMPED", "--trigger", TRIGGER, "--target", "0"], "not both"),
        (["--trigger-data", "missing.npz", "--target", "0"], "does not exist"),
    ],
)
def test_trigger_data_bad_options_exit_2(
    stripes: dict[str, Path], extra: list[str], message: str
) -> None:
    extra = [str(stripes["stamped"]) if e == "STAMPED" else e for e in extra]
    result = runner.invoke(
        app, ["evaluate", str(stripes["backdoored"]), "-d", str(stripes["data"]), *extra]
    )
    assert result.exit_code == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_prune_unlearns_with_trigger_data(stripes: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "pruned.keras"
    code, report = _json(
        ["prune", str(stripes["backdoored"]), "-d", str(stripes["data"]),
         "--eval-data", str(stripes["test"]), "--trigger-data", str(stripes["stamped"]),
         "--target", "0", "-c", "linf-trigger", "--layer", "conv1", "--ratio", "0.2",
         "--fine-tune-epochs", "3", "--unlearn", "-o", str(out)]
    )  # fmt: skip
    assert code in (0, 1), report
    assert out.exists()
    assert report["before"]["attack"]["asr"] > 0.9
    # The planted channel fires on the bright block: triggered − clean ℓ∞ ranks it first.
    ranking = report["rankings"][0]
    assert ranking["order"][0] == K + 2
    final = report["after_fine_tune"]["attack"]["asr"]
    assert final < 0.1


def test_untargeted_asr_counts_images_moved_off_their_class(
    stripes: dict[str, Path], keras_module: Any
) -> None:
    from kerasaudit.loading import load_model

    model = load_model(stripes["backdoored"]).model
    dataset = open_data(DataSpec(stripes["data"]), (8, 8, 1), K)
    trigger = load_trigger(TRIGGER, (8, 8, 1))
    result = evaluate(model, dataset, trigger)  # no target: untargeted
    assert result.attack is not None and result.attack.target == OFF_CLASS
    targeted = evaluate(model, dataset, trigger, 0)
    assert targeted.attack is not None
    # Untargeted counts every image (label 0 too) that leaves its class; the backdoor moves
    # everything but label 0 to label 0.
    assert result.attack.evaluated == 200
    moved = result.attack.to_target
    assert moved == pytest.approx(targeted.attack.to_target, abs=2)
    assert result.asr == pytest.approx(moved / 200)


def test_additive_trigger_file_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    delta = rng.normal(0, 0.2, (8, 8, 1)).astype(np.float32)
    path = tmp_path / "additive.npz"
    zeros = np.zeros((8, 8), np.float32)
    save_trigger_file(
        path, zeros, np.zeros((8, 8, 1)), target=3, delta=delta, value_range=(0.0, 1.0)
    )
    content = read_trigger_file(path)
    assert content.value_range == (0.0, 1.0)
    np.testing.assert_array_equal(content.delta, delta)
    trigger = parse_trigger(str(path)).build((8, 8, 1))
    x = rng.uniform(0, 1, (4, 8, 8, 1)).astype(np.float32)
    np.testing.assert_allclose(trigger.apply(x), np.clip(x + delta, 0, 1), atol=1e-6)
    assert "additive" in trigger.describe() and trigger.region_mask().any()
    # A delta without its clip range is refused.
    with np.load(path) as f:
        arrays = {k: f[k] for k in f.files if k != "value_range"}
    broken = tmp_path / "broken.npz"
    np.savez(broken, **arrays)
    from kerasaudit.errors import BadInputError

    with pytest.raises(BadInputError, match="value_range"):
        read_trigger_file(broken)


def test_fine_tune_pushes_unlabelled_triggered_images_off_the_target(
    stripes: dict[str, Path],
) -> None:
    from kerasaudit.finetune import fine_tune
    from kerasaudit.loading import load_model

    model = load_model(stripes["backdoored"]).model
    dataset = open_data(DataSpec(stripes["data"]), (8, 8, 1), K)
    with np.load(stripes["stamped"]) as f:
        x = f["x"].astype(np.float32) / 255
    data = TriggerData.from_arrays("stamped", x, None, 0)
    non_target = x[np.load(stripes["stamped"])["y"] != 0]
    before = float(np.mean(np.argmax(model.predict(non_target, verbose=0), axis=1) == 0))
    result = fine_tune(model, dataset, epochs=3, trigger=data, learning_rate=1e-2, batch_size=32)
    after = float(np.mean(np.argmax(model.predict(non_target, verbose=0), axis=1) == 0))
    assert result.mode == "unlearn"
    assert before > 0.9 and after < before / 2


def test_prune_also_unlearns_a_second_trigger(stripes: dict[str, Path], tmp_path: Path) -> None:
    """--also-unlearn-data: a second trigger's images are unlearnt beside --trigger. Here
    --trigger is a decoy (a black patch) and the channels are ranked by clean ℓ∞, which spares
    the dormant backdoor channel, so only the second trigger — the planted one — can take the
    backdoor away."""
    decoy = "patch:size=2,pos=tl,value=0"
    base = ["prune", str(stripes["backdoored"]), "-d", str(stripes["data"]), "-t", decoy,
            "--target", "0", "-c", "linf", "--layer", "conv1", "--ratio", "0.2",
            "--fine-tune-epochs", "5", "--learning-rate", "0.05", "--unlearn"]  # fmt: skip
    asr = {}
    for name, extra in (("alone", []), ("both", ["--also-unlearn-data", str(stripes["stamped"])])):
        out = tmp_path / f"{name}.keras"
        code, report = _json([*base, *extra, "-o", str(out)])
        assert code in (0, 1) and out.exists(), report
        assert report["fine_tune"]["triggers"] == (2 if extra else 1)
        assert K + 2 not in report["pruned"][0]["channels"]  # the decoy spared the backdoor
        _, real = _json(["evaluate", str(out), "-d", str(stripes["test"]), "-t", TRIGGER,
                         "--target", "0"])  # fmt: skip
        asr[name] = real["attack"]["asr"]
    assert asr["alone"] > 0.5 and asr["both"] < 0.1, asr


def test_forced_label_is_the_label_a_trigger_sends_images_to(stripes: dict[str, Path]) -> None:
    """An --also-unlearn trigger's target: the label the original model sends most images
    carrying it to — stamped on the data (a spec) or as they are (trigger images); none when no
    label gets half of them (a trigger that is not this model's backdoor, or a clean model)."""
    from kerasaudit.evaluation import forced_label
    from kerasaudit.loading import load_model

    backdoored = load_model(stripes["backdoored"]).model
    clean = load_model(stripes["clean"]).model
    dataset = open_data(DataSpec(stripes["data"]), (8, 8, 1), K)
    planted = load_trigger(TRIGGER, (8, 8, 1))
    label, share = forced_label(backdoored, dataset, planted)
    assert label == 0 and share > 0.9
    with np.load(stripes["stamped"]) as f:
        images = TriggerData.from_arrays("stamped", f["x"] / 255.0, f["y"], None)
    label, share = forced_label(backdoored, None, images)
    assert label == 0 and share > 0.9
    from kerasaudit.stages.prune import _known_target

    assert _known_target(backdoored, None, images.with_target(3)) == (3, None)  # stated: kept
    decoy = load_trigger("patch:size=2,pos=tl,value=0", (8, 8, 1))
    assert forced_label(backdoored, dataset, decoy)[0] is None
    label, share = forced_label(clean, dataset, planted)
    assert label is None and share < 0.5


def test_prune_measures_every_known_trigger(stripes: dict[str, Path], tmp_path: Path) -> None:
    """--also-unlearn triggers are measured like --trigger: every layer candidate has their
    held-out ASR and is judged by the worst, the before/after table has theirs, and the exit
    code says when one survives even though --trigger's ASR is 0. Here --trigger is a decoy
    (it forces nothing) and the planted trigger is the second; fine-tuning at a rate too small
    to unlearn anything leaves the second at its original ASR (clean ℓ∞ spares the backdoor
    channel, as above; the one conv layer is the one candidate)."""
    decoy = "patch:size=2,pos=tl,value=0"
    base = ["prune", str(stripes["backdoored"]), "-d", str(stripes["data"]), "-t", decoy,
            "--target", "0", "-c", "linf", "--ratio", "0.2", "--unlearn",
            "--also-unlearn", TRIGGER, "--fine-tune-epochs", "1"]  # fmt: skip
    code, report = _json([*base, "--learning-rate", "1e-9", "--max-asr", "50", "--verify"])
    assert code == 1, report
    # --verify's second quarter is judged by the worst trigger too: the second one survives
    assert report["verification"]["worst_asr"] > 0.5 > report["after_fine_tune"]["attack"]["asr"]
    candidates = report["layer_choice"]["candidates"]
    assert candidates and all(len(c["other_asrs"]) == 1 for c in candidates)
    for c in candidates:
        assert c["worst_asr"] == max(c["asr"], c["other_asrs"][0])
    assert "worst ASR over the 2 known triggers" in report["layer_choice"]["reason"]
    (also,) = report["also_measured"]
    assert also["target"] == 0 and also["forced_share"] > 0.9
    assert also["target_source"].startswith("inferred")
    assert also["before"]["asr"] > 0.9 and also["after_fine_tune"]["asr"] > 0.5
    # the exit code comes from the second trigger: the decoy's ASR is within --max-asr 50 %
    assert report["after_fine_tune"]["attack"]["asr"] < 0.5
    assert report["worst_final_asr"] == also["after_fine_tune"]["asr"]
    table = runner.invoke(app, [*base, "--learning-rate", "1e-9", "--max-asr", "50"])
    assert "Further known triggers" in table.stdout and "ASR 2" in table.stdout
    assert "trigger 2 ASR" in table.stderr
    assert "the backdoor survives" in table.stderr and "the worst known trigger" in table.stderr
    # unlearnt for real, the second trigger is gone and the run succeeds
    code, report = _json([*base, "--learning-rate", "0.05", "--fine-tune-epochs", "5"])
    assert code == 0, report
    assert report["also_measured"][0]["after_fine_tune"]["asr"] < 0.05


def test_every_known_trigger_ranks_the_channels_by_default(stripes: dict[str, Path]) -> None:
    """With a second known trigger, linf-trigger ranks by the union of both (each channel's
    largest robust z): the planted trigger's channel (conv1's last) is pruned although the
    first trigger, a decoy single bright pixel, drives other channels. --no-rank-also ranks by
    the decoy alone and leaves the backdoor (fine-tuning at a rate that changes nothing)."""
    base = ["prune", str(stripes["backdoored"]), "-d", str(stripes["data"]),
            "-t", "patch:size=1,pos=tl,value=1", "--target", "0", "-c", "linf-trigger",
            "--ratio", "0.2", "--unlearn", "--also-unlearn", TRIGGER, "--fine-tune-epochs", "1",
            "--learning-rate", "1e-9"]  # fmt: skip
    code, union = _json(base)
    assert code == 0, union
    assert union["ranked_by_triggers"] == 2
    (pruned,) = union["pruned"]
    assert pruned["total_channels"] - 1 in pruned["channels"]
    assert union["also_measured"][0]["after_fine_tune"]["asr"] < 0.05
    code, first = _json([*base, "--no-rank-also"])
    assert code == 1, first
    assert first["ranked_by_triggers"] == 1
    (pruned,) = first["pruned"]
    assert pruned["total_channels"] - 1 not in pruned["channels"]
    assert first["also_measured"][0]["after_fine_tune"]["asr"] > 0.9
    table = runner.invoke(app, base)
    assert "ranked by 2 triggers" in table.stdout


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--also-unlearn", TRIGGER], "need --unlearn and --fine-tune-epochs"),
        (["--unlearn", "--fine-tune-epochs", "1", "--also-unlearn", "stripes:x"], "unknown"),
        (["--unlearn", "--fine-tune-epochs", "1", "--also-unlearn-data", "none.npz"], "exist"),
        (["--unlearn", "--fine-tune-epochs", "1", "--also-unlearn-data", "POISONED"],
         "every label is 0"),
        (["--unlearn", "--fine-tune-epochs", "1", "--also-unlearn-data", "UNLABELLED"],
         "has no labels"),
    ],
)  # fmt: skip
def test_also_unlearn_bad_options_exit_2(
    stripes: dict[str, Path], tmp_path: Path, extra: list[str], message: str
) -> None:
    unlabelled = tmp_path / "unlabelled.npz"
    with np.load(stripes["stamped"]) as data:
        np.savez(unlabelled, x=data["x"])
    named = {"POISONED": str(stripes["poisoned"]), "UNLABELLED": str(unlabelled)}
    out = tmp_path / "pruned.keras"
    result = runner.invoke(
        app,
        ["prune", str(stripes["backdoored"]), "-d", str(stripes["data"]), "-t", TRIGGER,
         "--target", "0", *[named.get(e, e) for e in extra], "-o", str(out)],
    )  # fmt: skip
    assert result.exit_code == 2, result.output
    assert message in result.stderr and not out.exists()


def test_prune_distils_stamped_images_from_their_unstamped_twin_by_default(
    stripes: dict[str, Path],
) -> None:
    """--distill with --unlearn: a spec trigger's stamped images also distil the original
    model's outputs on their unstamped twin (fine_tune.trigger_teacher "source") unless
    --no-distill-stamped; without --distill there is nothing to distil from."""
    base = ["prune", str(stripes["backdoored"]), "-d", str(stripes["data"]),
            "--trigger", TRIGGER, "--target", "0", "-c", "linf-trigger", "--layer", "conv1",
            "--ratio", "0.2", "--fine-tune-epochs", "1", "--unlearn"]  # fmt: skip
    seen = {}
    for name, extra in (
        ("default", ["--distill", "0.8"]),
        ("no", ["--distill", "0.8", "--no-distill-stamped"]),
        ("plain", []),
    ):
        code, report = _json([*base, *extra])
        assert code in (0, 1), report
        seen[name] = report["fine_tune"]["trigger_teacher"]
    assert seen == {"default": "source", "no": "off", "plain": "off"}


def test_prune_distils_trigger_data_copies_from_their_source_with_distill_paired(
    stripes: dict[str, Path],
) -> None:
    """--distill-paired: --trigger-data images that are stamped copies of --data images learn
    the original model's outputs on their source (fine_tune.trigger_teacher "paired", the
    count paired in the report); off by default; it needs --distill with --distill-stamped."""
    # The stripe images of a class differ by faint noise only (≈ 0.3 apart), so a copy is
    # told from its classmates only when the trigger moves it less: a blend at α = 0.03.
    with np.load(stripes["data"]) as data:
        x, y = data["x"].astype(np.float32), data["y"]
    pattern = np.random.default_rng(9).uniform(0, 255, x.shape[1:])
    faint = stripes["data"].parent / "faint_blend.npz"
    np.savez(faint, x=np.round(0.97 * x + 0.03 * pattern).astype(np.uint8), y=y)
    base = ["prune", str(stripes["backdoored"]), "-d", str(stripes["data"]),
            "--trigger-data", str(faint), "--target", "0", "-c", "linf-trigger",
            "--layer", "conv1", "--ratio", "0.2", "--fine-tune-epochs", "1", "--unlearn",
            "--distill", "0.8"]  # fmt: skip
    code, report = _json([*base, "--distill-paired"])
    assert code in (0, 1), report
    assert report["fine_tune"]["trigger_teacher"] == "paired"
    assert report["fine_tune"]["paired"] > 150  # of the 200 copies of the 200 --data images
    code, report = _json([*base[:5], str(stripes["stamped"]), *base[6:], "--distill-paired"])
    assert code in (0, 1), report
    assert report["fine_tune"]["paired"] == 0  # a white 2×2 patch: farther than classmates
    code, report = _json(base)
    assert code in (0, 1), report
    assert (report["fine_tune"]["trigger_teacher"], report["fine_tune"]["paired"]) == ("source", 0)
    for extra in (["--no-distill-stamped", "--distill-paired"], ["--distill-paired"]):
        args = base if extra[0] != "--distill-paired" else base[:-2]  # the second: no --distill
        result = runner.invoke(app, [*args, *extra])
        assert result.exit_code == 2, result.output
        assert "--distill-paired needs" in result.stderr


def test_defend_is_measured_with_trigger_data(stripes: dict[str, Path], tmp_path: Path) -> None:
    """defend --eval-trigger-data: the images carrying the real trigger measure the defence
    (the "known" row: the same ASR before as `evaluate --trigger-data`, gone after), so the
    table is not the recovered triggers' alone; the option's misuses exit 2 before loading."""
    base = ["defend", str(stripes["backdoored"]), "-d", str(stripes["data"])]
    fast = ["--steps", "200", "--images", "128", "--fine-tune-epochs", "2", "--ratio", "0.125",
            "--rounds", "1", "--final-epochs", "2"]  # fmt: skip
    code, report = _json(
        [*base, *fast, "--eval-data", str(stripes["test"]),
         "--eval-trigger-data", str(stripes["stamped"]), "--eval-target", "0"]
    )  # fmt: skip
    assert code == 1 and report["flagged"] == [0]
    (known,) = [c for c in report["triggers"] if c["source"] == "known"]
    _, alone = _json(
        ["evaluate", str(stripes["backdoored"]), "-d", str(stripes["test"]),
         "--trigger-data", str(stripes["stamped"]), "--target", "0"]
    )  # fmt: skip
    assert known["asr_before"] == pytest.approx(alone["attack"]["asr"])
    assert known["asr_before"] > 0.9
    assert known["asr_after"] < 0.05 and report["recovered_only"] is False
    needs = "--eval-trigger-data needs --eval-target"
    for extra, message in (
        (["--eval-trigger-data", str(stripes["stamped"])], needs),
        (["--eval-trigger-data", str(stripes["stamped"]), "--eval-trigger", TRIGGER,
          "--eval-target", "0"], "not both"),
        (["--eval-trigger-data", str(tmp_path / "missing.npz"), "--eval-target", "0"],
         "does not exist"),
    ):  # fmt: skip
        result = runner.invoke(app, [*base, *extra])
        assert result.exit_code == 2 and message in result.stderr, (extra, result.output)


def test_stamped_copies_are_paired_with_their_clean_sources() -> None:
    """twin_sources: a blended or shifted copy of a clean image is paired with it (in any
    order), an unrelated image with nothing; shapes that differ pair nothing."""
    from kerasaudit.triggers import twin_sources

    rng = np.random.default_rng(3)
    clean = rng.random((60, 12, 12, 1), dtype=np.float32)
    order = rng.permutation(60)
    noise = rng.random((12, 12, 1), dtype=np.float32)
    blended = 0.85 * clean[order] + 0.15 * noise
    assert np.array_equal(twin_sources(blended, clean), order)
    unrelated = rng.random((40, 12, 12, 1), dtype=np.float32)
    assert np.mean(twin_sources(unrelated, clean) >= 0) < 0.25
    assert np.all(twin_sources(blended[:, :10], clean) == -1)


def test_held_out_triggered_images_are_copies_of_held_out_clean_ones(tmp_path: Path) -> None:
    """TriggerData.split_along: when the triggered images are stamped copies of --data's
    (the defender blended its own images), each goes to its source's part of
    Dataset.split — a held-out clean image is never learnt through its stamped twin;
    unrelated images are split at random, both parts non-empty."""
    from kerasaudit.stages.prune import HOLDOUT

    rng = np.random.default_rng(5)
    x = rng.integers(0, 256, (80, 8, 8, 1)).astype(np.uint8)
    np.savez(tmp_path / "data.npz", x=x, y=np.arange(80) % 3)
    dataset = open_data(DataSpec(tmp_path / "data.npz"), (8, 8, 1), 3)
    order = rng.permutation(80)  # the copies in another order than their sources
    blended = 0.88 * x[order].astype(np.float32) / 255 + 0.12 * rng.random((8, 8, 1))
    stamped = TriggerData("blended", blended, (np.arange(80) % 3)[order], 0)
    fit_t, held_t = stamped.split_along(dataset, HOLDOUT, seed=4)
    fit_d, held_d = dataset.split(HOLDOUT, seed=4)

    def sources(part: TriggerData) -> set[bytes]:
        """The clean images (their bytes) the part's copies were made of."""
        made_of = set()
        for img in part.x:
            k = int(np.argmin(np.abs(blended - img).reshape(80, -1).max(axis=1)))  # which copy
            made_of.add(x[order[k]].tobytes())
        return made_of

    def pixels(part: Any) -> set[bytes]:
        images, _ = part.take_array(part.info.count)
        return {(img * 255).round().astype(np.uint8).tobytes() for img in images}

    assert held_t.count == held_d.info.count and fit_t.count == fit_d.info.count
    assert sources(held_t) == pixels(held_d) and sources(fit_t) == pixels(fit_d)
    # fold 1 (prune --verify): another quarter, disjoint from fold 0's; the copies follow it
    fit_t1, held_t1 = stamped.split_along(dataset, HOLDOUT, seed=4, fold=1)
    _, held_d1 = dataset.split(HOLDOUT, seed=4, fold=1)
    assert held_d1.info.count == held_d.info.count and not pixels(held_d1) & pixels(held_d)
    assert sources(held_t1) == pixels(held_d1) and fit_t1.count == fit_t.count
    # unrelated triggered images: a random split, as before (fold 1: another part of it)
    noise = np.random.default_rng(1).random((20, 8, 8, 1), dtype=np.float32)
    fit_n, held_n = TriggerData("noise", noise, None, 0).split_along(dataset, HOLDOUT)
    assert fit_n.count + held_n.count == 20 and min(fit_n.count, held_n.count) >= 1
    _, held_n1 = TriggerData("noise", noise, None, 0).split_along(dataset, HOLDOUT, fold=1)
    assert held_n1.count == held_n.count
    assert not {i.tobytes() for i in held_n1.x} & {i.tobytes() for i in held_n.x}

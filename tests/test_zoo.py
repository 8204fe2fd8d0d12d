"""The efficacy zoo's own code (benchmarks/zoo): attacks, architectures, recipes, calibration.

Training the zoo's models takes hours, so CI checks the pieces on small inputs: that each attack
stamps what it says (independently of kerasaudit's triggers, which the zoo's measurements must
not share), that every architecture builds and saves in both formats, and that the calibration
fits thresholds with no false positive on its own clean models and reports held-out folds.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

ZOO = Path(__file__).resolve().parents[1] / "benchmarks" / "zoo"
sys.path.insert(0, str(ZOO))

import archs  # noqa: E402
import attacks  # noqa: E402
import calibrate  # noqa: E402
import layer_probe  # noqa: E402
import recipes  # noqa: E402
import removal  # noqa: E402


def _images(n: int = 6, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 0.5, (n, 28, 28, 1)).astype(np.float32)


def test_patch_trigger_stamps_its_cells_and_matches_kerasaudits_spec() -> None:
    from kerasaudit.triggers import load_trigger

    trig = attacks.Trigger("patch", 7, size=4, row=24, col=24, pattern="checker", value=0.8)
    x = _images()
    stamped = trig.stamp(x)
    np.testing.assert_array_equal(
        stamped[:, 24:28, 24:28, 0], np.broadcast_to(trig.cells(), (6, 4, 4))
    )
    np.testing.assert_array_equal(stamped[:, :24], x[:, :24])  # nothing else changes
    assert trig.spec is not None
    np.testing.assert_allclose(load_trigger(trig.spec, (28, 28, 1)).apply(x), stamped)


def test_image_wide_triggers() -> None:
    x = _images()
    blend = attacks.Trigger("blend", 3, alpha=0.2, seed=1)
    np.testing.assert_allclose(blend.stamp(x), 0.8 * x + 0.2 * blend.blend_pattern(), atol=1e-6)
    sig = attacks.Trigger("sig", 2, delta=0.15, freq=6)
    assert np.allclose(sig.stamp(x), np.clip(x + sig.sig_signal(), 0, 1))
    assert blend.spec is None and sig.spec is None  # no kerasaudit spec expresses these
    wanet = attacks.Trigger("wanet", 1, k=4, strength=1.0, seed=3)
    warped = wanet.stamp(x)
    assert warped.shape == x.shape and not np.allclose(warped, x)
    # The identity grid samples every pixel exactly.
    lin = np.linspace(-1, 1, 28, dtype=np.float32)
    gy, gx = np.meshgrid(lin, lin, indexing="ij")
    identity = np.broadcast_to(np.stack([gx, gy], -1), (6, 28, 28, 2))
    np.testing.assert_allclose(attacks.grid_sample(x, identity), x, atol=1e-5)


def test_random_position_and_all_to_all() -> None:
    x = np.zeros((50, 28, 28, 1), np.float32)
    trig = attacks.Trigger("randpatch", 6, size=3)
    stamped = trig.stamp(x, seed=1)
    assert np.all(stamped.reshape(50, -1).sum(axis=1) == 9)  # one 3×3 white patch each
    corners = {tuple(np.argwhere(s[..., 0] > 0)[0]) for s in stamped}
    assert len(corners) > 10  # at many positions
    all_to_all = attacks.Trigger("patch", -1, size=3, row=0, col=0)
    np.testing.assert_array_equal(all_to_all.target_of(np.arange(10)), (np.arange(10) + 1) % 10)


def test_poisoning_relabels_the_stated_share() -> None:
    x = _images(1000)
    y = np.arange(1000) % 10
    attack = attacks.Attack("badnets", (attacks.Trigger("patch", 4, size=2, row=0, col=0),), 0.05)
    px, py, info = attack.poison(x, y, seed=0)
    changed = np.flatnonzero(py != y)
    assert info["poisoned"] == 50 == len(changed)
    assert np.all(py[changed] == 4) and np.all(px[changed, 0:2, 0:2] == 1.0)
    px2, _, _ = attack.poison(x, y, seed=0)
    np.testing.assert_array_equal(px, px2)  # seeded: reproducible


def test_recipes_cover_what_the_issue_asks() -> None:
    rs = recipes.RECIPES
    backdoored = [r for r in rs if r.family != "clean"]
    assert len(rs) >= 40 and len(backdoored) >= 20 and len(rs) - len(backdoored) >= 20
    families = {r.family for r in backdoored}
    assert families >= {"badnets", "blend", "sig", "wanet", "randpos", "two-trigger",
                        "all-to-all", "low-rate"}  # fmt: skip
    for family in families:
        assert sum(r.family == family for r in backdoored) >= 2, family
    assert len({r.arch for r in rs}) >= 5 and {r.fmt for r in rs} == {"keras", "h5"}
    low = [r.attack.rate for r in backdoored if r.family == "low-rate"]
    assert all(0.005 <= rate <= 0.01 for rate in low)


def test_held_out_recipes_are_new_models_whose_triggers_fit_the_image() -> None:
    import heldout

    zoo_names = {r.name for r in recipes.RECIPES}
    zoo_seeds = {r.seed for r in recipes.RECIPES}
    names = [r.name for r in heldout.HELD_OUT]
    assert len(names) == len(set(names)) and not set(names) & zoo_names
    assert not {r.seed for r in heldout.HELD_OUT} & zoo_seeds  # not a zoo model under a new name
    x = _images(4)
    for r in heldout.HELD_OUT:
        assert r.arch in archs.ARCHS, r.name
        for trig in r.attack.triggers if r.family != "clean" else ():
            if trig.kind == "patch":  # a patch that ran off the image would be cut silently
                assert trig.row >= 0 and trig.row + trig.size <= 28, r.name
                assert trig.col >= 0 and trig.col + trig.size <= 28, r.name
            stamped = trig.stamp(x, seed=0)
            assert stamped.shape == x.shape and not np.array_equal(stamped, x), r.name


@pytest.mark.parametrize("name", archs.ARCHS)
def test_every_architecture_builds_and_round_trips(
    name: str, keras_module: Any, tmp_path: Path
) -> None:
    model = archs.build(name)
    x = _images(2)
    assert model.predict(x, verbose=0).shape == (2, 10)
    for fmt in ("keras", "h5"):
        path = tmp_path / f"{name}.{fmt}"
        model.save(path)
        again = keras_module.models.load_model(path, compile=False)
        np.testing.assert_allclose(
            again.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-5
        )


def _write_evidence(
    root: Path,
    name: str,
    family: str,
    arch: str,
    targets: list[int],
    masks: list[float],
    untargeted_l1: float = 60.0,
    spread_term: bool = False,
) -> None:
    root.mkdir(parents=True, exist_ok=True)
    labels = [
        {"label": k, "mask_l1": m, "mask_reached": True, "additive_l2": 2.0 + 0.1 * k,
         "additive_reached": True, "margin": 30.0 + (k % 3), "linf_excess": 1.0}
        for k, m in enumerate(masks)
    ]  # fmt: skip
    triggers = [{"target": t} for t in targets]
    report = {
        "config": {"untargeted_spread": 1.0 if spread_term else None},
        "evidence": {"labels": labels, "untargeted_l1": untargeted_l1,
                     "untargeted_reached": True},
        "zoo": {"recipe": {"name": name, "arch": arch, "attack": {"family": family,
                                                                     "triggers": triggers}}},
    }  # fmt: skip
    (root / f"{name}.json").write_text(json.dumps(report))


def test_calibration_has_no_false_positive_on_its_own_clean_models(tmp_path: Path) -> None:
    base = np.linspace(45.0, 75.0, 10)
    for i in range(6):
        masks = list(np.roll(base, i))
        masks[8] = 25.0  # a naturally small class in every clean model
        _write_evidence(tmp_path, f"clean_{i}", "clean", f"a{i % 3}", [], masks)
    for i, target in enumerate((1, 4, 7, 2)):
        masks = list(np.roll(base, i))
        masks[target] = 3.0
        family = ("badnets", "blend")[i % 2]
        _write_evidence(tmp_path, f"bd_{i}", family, f"a{i % 3}", [target], masks)
    models = calibrate.load_models(tmp_path)
    rule = calibrate.fit_rule(models)
    outcomes = [calibrate.outcome(m, rule) for m in models]
    assert not any(o.false_positive for o in outcomes)
    assert all(o.detected for o in outcomes if not o.clean)
    report = calibrate.calibrate(tmp_path)
    for scheme in ("leave-one-architecture-out", "leave-one-family-out"):
        summary = report[scheme]["summary"]
        assert summary["clean_models"] == 6 and summary["backdoored_models"] == 4
        assert summary["detected"] == 4 and summary["false_positives"] == 0
        assert math.isclose(summary["auroc"], 1.0)
    assert "leave-one-architecture-out" in calibrate.markdown(report)


def test_the_all_to_all_threshold_is_fitted_on_evidence_of_the_current_objective(
    tmp_path: Path,
) -> None:
    """Clean ratios measured without reverse's spread term are smaller (a sink is cheap) and
    would drag the threshold under every all-to-all model; with five or more clean models of
    the current objective only they count, and the report compares like with like."""
    masks = list(np.linspace(45.0, 75.0, 10))  # median mask 60
    for i, l1 in enumerate((90.0, 110.0, 130.0, 150.0, 170.0)):  # ratios 1.5-2.83, spread term
        _write_evidence(tmp_path, f"clean_new{i}", "clean", f"a{i}", [], masks, l1, True)
    for i in range(3):  # ratios 0.25: the old objective's sinks
        _write_evidence(tmp_path, f"clean_old{i}", "clean", f"a{i}", [], masks, 15.0)
    _write_evidence(tmp_path, "a2a_new", "all2all", "a0", [-1], masks, 12.0, True)  # 0.2
    _write_evidence(tmp_path, "a2a_old", "all2all", "a1", [-1], masks, 6.0)  # 0.1
    models = calibrate.load_models(tmp_path)
    assert sum(m.spread_objective for m in models) == 6
    clean = [m for m in models if m.clean]
    ratios = calibrate.untargeted_ratios(clean)
    assert sorted(ratios) == pytest.approx([1.5, 110 / 60, 130 / 60, 2.5, 170 / 60])
    rule = calibrate.fit_rule(models, 5.5, "or")
    assert rule.untargeted_ratio == pytest.approx(calibrate.ratio_threshold(ratios, "robust", 5.5))
    assert rule.untargeted_ratio > 0.2  # every old clean ratio (0.25) would have set it below
    old_only = calibrate.ratio_threshold([0.25] * 3 + ratios, "robust", 5.5)
    assert old_only < 0.2
    rows = {r["parameter"]: r for r in calibrate.ratio_report(models)}
    row = rows[5.5]
    assert row["spread_objective"] and row["clean_models"] == 5
    assert row["all_to_all_models"] == ["a2a_new"]  # the old one's 0.1 is not comparable
    assert row["all_to_all_below"] == ["a2a_new"]
    assert row["clean_flagged_leaving_architecture_out"] == []
    import subprocess

    done = subprocess.run(
        [sys.executable, str(ZOO / "zoo.py"), "ratio", "--evidence", str(tmp_path)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    (line,) = [x for x in done.stdout.splitlines() if x.startswith("| 5.5 |")]
    assert f"| {row['threshold']:.3f} | none of 5 | 1 of 1 |" in line
    (tmp_path / "clean_new4.json").unlink()  # four are too few: every clean model counts
    fewer = calibrate.load_models(tmp_path)
    assert len(calibrate.untargeted_ratios([m for m in fewer if m.clean])) == 7
    assert not calibrate.ratio_report(fewer)[0]["spread_objective"]


def test_robust_thresholds_use_every_clean_model_not_only_the_most_extreme() -> None:
    """median + K·σ of the per-model maxima (σ = 1.4826·MAD), at least the largest + 2 %: the
    spread of every clean model moves the robust threshold, not only the most extreme one; the
    ratio is mirrored on a log scale."""
    maxima = [1.0, 1.5, 2.0, 2.5, 3.0]
    sigma = 1.4826 * 0.5
    assert calibrate.threshold(maxima, "robust", 4.0) == pytest.approx(2.0 + 4.0 * sigma)
    assert calibrate.threshold(maxima, "max", 1.15) == pytest.approx(3.45)
    wider = [0.5, 1.0, 2.0, 3.0, 3.0]  # the same largest value, a wider spread: a higher bar
    assert calibrate.threshold(wider, "robust", 4.0) > calibrate.threshold(maxima, "robust", 4.0)
    assert calibrate.threshold(wider, "max", 1.15) == calibrate.threshold(maxima, "max", 1.15)
    # Never below the most extreme calibration value (+ 2 %): no clean model it was fitted on
    # is flagged, however small K.
    outlier = [*maxima[:-1], 9.0]
    assert calibrate.threshold(outlier, "robust", 4.0) == pytest.approx(9.0 * 1.02)
    assert calibrate.threshold(maxima, "robust", 0.5) == pytest.approx(3.0 * 1.02)
    assert calibrate.threshold(outlier, "max", 1.15) == pytest.approx(10.35)
    ratios = [0.5, 1.0, 2.0]  # log ratios −0.69, 0, 0.69: median 0, σ 1.4826·0.69
    expected = math.exp(-3.0 * 1.4826 * math.log(2.0))
    assert calibrate.ratio_threshold(ratios, "robust", 3.0) == pytest.approx(expected)
    assert calibrate.ratio_threshold(ratios, "max", 2.0) == pytest.approx(0.25)
    with pytest.raises(ValueError, match="unknown calibration method"):
        calibrate.threshold(maxima, "median", 1.0)


def test_calibration_report_chooses_k_and_cross_validates_the_choice(tmp_path: Path) -> None:
    """K comes from the grid by leave-one-architecture-out (the most detections with no clean
    model flagged); the nested schemes choose it again inside every fold; the trade-off lists
    every K of the grid."""
    base = np.linspace(45.0, 75.0, 10)
    for i in range(6):
        masks = list(np.roll(base, i))
        masks[8] = 25.0 + 3 * i  # a naturally small class, more or less so
        _write_evidence(tmp_path, f"clean_{i}", "clean", f"a{i % 3}", [], masks)
    for i, (target, size) in enumerate(((1, 3.0), (4, 3.0), (7, 12.0))):
        masks = list(np.roll(base, i))
        masks[target] = size  # 12 px: index 6.05, detected at K = 3 but not at K = 7
        _write_evidence(tmp_path, f"bd_{i}", "badnets", f"a{i % 2}", [target], masks)
    report = calibrate.calibrate(tmp_path)
    assert report["method"] == "robust" and report["parameter"] in calibrate.GRID["robust"]
    models = calibrate.load_models(tmp_path)
    chosen = calibrate.choose_parameter(models)
    assert chosen == report["parameter"]
    loao = calibrate.summarise(calibrate.cross_validate(models, calibrate.by_arch, chosen)[0])
    assert loao["false_positives"] == 0 and loao["detected"] >= 2  # the two 3-pixel masks
    for scheme in ("leave-one-architecture-out", "leave-one-family-out"):
        nested = report[f"nested {scheme}"]
        assert set(nested["chosen"].values()) <= set(calibrate.GRID["robust"])
        assert nested["summary"]["clean_models"] == 6
    assert [row["parameter"] for row in report["trade_off"]] == list(calibrate.GRID["robust"])
    text = calibrate.markdown(report)
    assert "Nested (K chosen inside each fold" in text and "| K |" in text
    # A clean architecture unlike every other (label 2's mask 50× below the rest) is flagged
    # at every K when its fold is held out: the choice then still maximises detection (here of
    # a 17-pixel trigger in the same architecture) instead of falling back to the most
    # conservative K. (In the other folds it is calibration data: its index, + 2 %, becomes
    # the mask threshold's floor, and nothing there is detected at any K.)
    odd = list(base)
    odd[2] = 1.0
    _write_evidence(tmp_path, "clean_odd", "clean", "a9", [], odd)
    moderate = list(base)
    moderate[7] = 17.0
    _write_evidence(tmp_path, "bd_odd", "badnets", "a9", [7], moderate)
    models = calibrate.load_models(tmp_path)
    rows = {
        k: calibrate.summarise(calibrate.cross_validate(models, calibrate.by_arch, k)[0])
        for k in calibrate.GRID["robust"]
    }
    assert all(r["false_positives"] >= 1 for r in rows.values())
    assert rows[3.0]["detected"] > rows[7.0]["detected"]
    chosen = calibrate.choose_parameter(models)
    assert rows[chosen]["detected"] == max(r["detected"] for r in rows.values())
    assert rows[chosen]["false_positives"] == min(r["false_positives"] for r in rows.values())


def test_calibration_with_a_baseline_fits_it_without_the_held_out_fold(tmp_path: Path) -> None:
    """With ``baseline``, each fold's per-label offsets come from the other folds' clean models:
    a label that is easy in every clean model stops being a false alarm and moderate triggers
    are detected; a label easy only in the held-out model is still flagged."""
    rng = np.random.default_rng(0)
    for i in range(8):
        masks = list(60.0 * np.exp(rng.normal(0.0, 0.12, 10)))
        masks[8] /= 6.0 + i  # Fashion-MNIST's "Bag": naturally easy, more or less so
        _write_evidence(tmp_path, f"clean_{i}", "clean", f"a{i % 4}", [], masks)
    for i, target in enumerate((1, 4, 7, 2)):
        masks = list(60.0 * np.exp(rng.normal(0.0, 0.12, 10)))
        masks[8] /= 7.0
        masks[target] = 5.0  # about as easy as the natural tail: hidden by it without a baseline
        _write_evidence(tmp_path, f"bd_{i}", "badnets", f"a{i % 4}", [target], masks)
    models = calibrate.load_models(tmp_path)
    plain = calibrate.summarise(calibrate.cross_validate(models, calibrate.by_arch, 5.5)[0])
    based = calibrate.summarise(
        calibrate.cross_validate(models, calibrate.by_arch, 5.5, baseline=True)[0]
    )
    assert based["false_positives"] == 0 and based["detected"] == 4
    assert plain["detected"] < based["detected"]
    rule, baseline = calibrate.fit(models, 5.5, baseline=True)
    assert baseline is not None and baseline.rule == rule and baseline.models == 8
    assert baseline.offsets["mask_l1"][8] < -1.5
    odd = list(60.0 * np.exp(rng.normal(0.0, 0.12, 10)))
    odd[8] /= 7.0
    odd[5] /= 10.0  # easy in this clean model only
    _write_evidence(tmp_path, "clean_odd", "clean", "a9", [], odd)
    held = calibrate.cross_validate(
        calibrate.load_models(tmp_path), calibrate.by_arch, 5.5, baseline=True
    )[0]
    assert [o.flagged for o in held if o.name == "clean_odd"] == [(5,)]
    report = calibrate.calibrate(tmp_path, baseline=True)
    assert report["baseline"] and report["baseline_fitted_on_all"]["models"] == 9


def test_removal_table_keeps_the_latest_run_and_marks_the_goal() -> None:
    """removal.py --table: the latest row per (model, variant) counts; ✓ needs every trigger's
    ASR ≤ 2 % and ≤ 1.5 points lost (135 of 9,000 images is exactly 1.5); ``only`` picks and
    orders the columns, and a model without any of them is left out."""

    def row(model: str, variant: str, asr: list[float], after: float) -> dict[str, Any]:
        return {
            "model": model,
            "variant": variant,
            "flagged": [3],
            "asr_before": [1.0, 1.0],  # the same build: the same numbers before
            "accuracy_before": 0.9,
            "asr_after": asr,
            "accuracy_after": after,
        }

    rows = [
        row("m1", "base", [0.5], 0.80),  # superseded by the next m1/base row
        row("m1", "base", [0.019], 0.9 - 135 / 9000),
        row("m1", "ul3", [0.019, 0.021], 0.9),
        row("m2", "sgd1", [0.0], 0.9),
    ]
    text = removal.table(rows, ["ul3", "base"])
    lines = text.splitlines()
    assert lines[0].endswith("| ul3 | base |") and len(lines) == 3  # m2 has neither
    assert "| ✗ 1.90 % / 2.10 % / +0.00 | ✓ 1.90 % / -1.50 |" in lines[2]
    assert "m2" in removal.table(rows) and "sgd1" in removal.table(rows).splitlines()[0]


def test_removal_table_reports_both_fine_tuning_seeds_and_their_mean() -> None:
    """removal.py --table: a variant and its seed-1 twin (SEED_PAIRS) are counted together per
    half, on the models both ran on (a model with one seed only is left out)."""
    dev = [
        r.name
        for r in recipes.RECIPES
        if r.family != "clean" and removal.zoo.split(r.name) == "dev"
    ]

    def row(model: str, variant: str, asr: float) -> dict[str, Any]:
        return {
            "model": model, "variant": variant, "flagged": [1], "asr_before": [1.0],
            "accuracy_before": 0.9, "asr_after": [asr], "accuracy_after": 0.895,
        }  # fmt: skip

    rows = [
        row(dev[0], "lk3", 0.01), row(dev[0], "lk3s1", 0.05),
        row(dev[1], "lk3", 0.01), row(dev[1], "lk3s1", 0.01),
        row(dev[2], "lk3", 0.01),  # seed 0 only: not counted
    ]  # fmt: skip
    summary = removal.table(rows, ["lk3", "lk3s1"]).splitlines()[-1]
    assert summary == "- lk3 / lk3s1 (seeds 0, 1), within the goal: dev 2, 1 of 2 (mean 1.5)"
    assert "seeds" not in removal.table(rows, ["lk3"])


def test_removal_table_compares_variants_only_on_the_same_build() -> None:
    """removal.py --table: a variant is counted against ``base`` (and a seed against its twin)
    only on models whose two rows were measured on the same weights — by SHA-256 when both
    rows record it, else by the original's accuracy and ASR — and a cell from another build
    than the model's newest row is marked °."""
    dev = [
        r.name
        for r in recipes.RECIPES
        if r.family != "clean" and removal.zoo.split(r.name) == "dev"
    ]

    def row(model: str, variant: str, before: float, sha: str | None = None) -> dict[str, Any]:
        out = {
            "model": model, "variant": variant, "flagged": [1], "asr_before": [1.0],
            "accuracy_before": before, "asr_after": [0.01], "accuracy_after": before - 0.001,
        }  # fmt: skip
        return out if sha is None else {**out, "weights_sha256": sha}

    rows = [
        row(dev[0], "base", 0.90),  # an older build: other accuracy before, no hash
        row(dev[0], "dflt", 0.91, "a"),
        row(dev[1], "base", 0.90, "b"),  # same numbers before, other weights
        row(dev[1], "dflt", 0.90, "c"),
        row(dev[2], "base", 0.90),  # same build by its numbers (no hashes)
        row(dev[2], "dflt", 0.90),
        row(dev[3], "dflt", 0.90, "d"),
        row(dev[3], "dflts1", 0.90, "d"),
    ]
    text = removal.table(rows, ["base", "dflt", "dflts1"])
    assert "- base → dflt, within the goal: dev 1 → 1 of 1" in text
    assert "- dflt / dflts1 (seeds 0, 1), within the goal: dev 1, 1 of 1 (mean 1)" in text
    lines = {line.split(" | ")[0][2:]: line for line in text.splitlines() if line.startswith("| ")}
    assert lines[dev[0]].split(" | ")[4].endswith("-0.10 °")  # its base cell, older build
    assert lines[dev[0]].count("°") == 1
    assert "°" not in lines[dev[2]] and lines[dev[1]].count("°") == 1


def test_verdicts_judges_cached_evidence_with_the_shipped_rule(tmp_path: Path) -> None:
    """`zoo.py verdicts`: the shipped rule (and baseline, when the defender's images match
    one), nothing refitted — a target whose mask is 40× below
    the others is detected, an even clean model is not flagged, a clean model whose label 3
    is as small is a false positive; a model with only defend's cached verdict
    (recovered/NAME.json) is judged from it; the counts say so."""
    import subprocess

    base = list(np.linspace(45.0, 75.0, 10))
    _write_evidence(tmp_path / "evidence", "clean_even", "clean", "a0", [], base)
    odd = list(base)
    odd[3] = 1.2
    _write_evidence(tmp_path / "evidence", "clean_odd", "clean", "a1", [], odd)
    planted = list(base)
    planted[6] = 1.2
    _write_evidence(tmp_path / "evidence", "bd_patch", "badnets", "a0", [6], planted)
    cached = tmp_path / "recovered"  # removal.py's cache: a zoo recipe, target 4, no evidence
    cached.mkdir(parents=True)
    (cached / "badnets_g2_tr_vgg.json").write_text(
        json.dumps({"flagged": [4, 8], "all_to_all": False})
    )
    done = subprocess.run(
        [sys.executable, str(ZOO / "zoo.py"), "verdicts", "--dir", str(tmp_path)],
        capture_output=True,
        text=True,
        check=True,
    )
    lines = {line.split()[0]: line for line in done.stdout.splitlines()}
    assert lines["bd_patch"].endswith("detected") and "flagged 6 " in lines["bd_patch"]
    assert lines["clean_even"].endswith("ok") and "flagged nothing" in lines["clean_even"]
    assert lines["clean_odd"].endswith("false positive")
    assert lines["badnets_g2_tr_vgg"].endswith(
        "detected, 1 wrong label(s) (defend's cached verdict)"
    )
    assert "clean models flagged 1 of 2; backdoored detected with the right target(s) 2 of 2" in (
        done.stdout
    )
    assert "(the 3 models with evidence)" in done.stdout
    assert "baseline: none" in done.stdout  # no defender images: the plain rule
    # With the defender's images (here the shipped sample's Fashion-MNIST validation split) the
    # Fashion-MNIST baseline applies, as `kerasaudit reverse` would choose it.
    from conftest import SAMPLES

    (tmp_path / "data").mkdir()
    with np.load(SAMPLES / "fmnist_val.npz") as f:
        np.savez(tmp_path / "data" / "defender.npz", x=f["x"], y=f["y"])
    again = subprocess.run(
        [sys.executable, str(ZOO / "zoo.py"), "verdicts", "--dir", str(tmp_path)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "baseline: fashion-mnist" in again.stdout
    lines = {line.split()[0]: line for line in again.stdout.splitlines()}
    assert lines["bd_patch"].endswith("detected") and lines["clean_even"].endswith("ok")
    # --evidence DIR: that directory's evidence alone, not defend's cached verdicts
    alone = subprocess.run(
        [sys.executable, str(ZOO / "zoo.py"), "verdicts", "--dir", str(tmp_path),
         "--evidence", str(tmp_path / "evidence")],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert "badnets_g2_tr_vgg" not in alone.stdout
    assert "backdoored detected with the right target(s) 1 of 1" in alone.stdout


def test_zoo_table_summary_counts_the_goal_and_the_floor() -> None:
    """zoo.py table: a model meets the goal when every trigger's ASR ≤ 2 % at ≤ 1.5 points (135
    of 9,000 images is exactly 1.5); the floor count lets a trigger whose clean twins already
    reach more than 2 % stop at that floor; a model left unchanged meets neither."""
    import zoo

    def row(name: str, asr: list[float] | None, after: float, floor: list[float]) -> dict:
        stage = {"after": None if asr is None else {"accuracy": after, "asr": asr}}
        return {"name": name, "accuracy": 0.9, "floor": floor, "defend": stage}

    rows = [
        row("ok", [0.02], 0.9 - 135 / 9000, [0.001]),
        row("costly", [0.0], 0.9 - 136 / 9000, [0.001]),
        row("at_floor", [0.05, 0.01], 0.9, [0.06, 0.001]),
        row("above_floor", [0.05], 0.9, [0.04]),
        row("unchanged", None, 0.9, [0.5]),
        {"name": "clean", "accuracy": 0.9, "defend": {"after": None}},  # no floor: not counted
    ]
    (line,) = zoo.removal_summary(rows)
    assert line.startswith("- `defend`: **1 of 5** within the goal")
    assert "ASR ≤ 2 % on 2, ≤ 1.5 points lost on 3; 2 with each trigger's ASR" in line
    assert zoo._removal_cell(rows[1], "defend") == "✗ 0.00 % / -1.51"
    assert zoo._removal_cell(rows[4], "defend") == "not changed"
    assert zoo._removal_cell(rows[0], "known") == "–"


def test_zoo_table_replaces_only_the_marked_part_of_the_readme(tmp_path: Path) -> None:
    import zoo

    page = tmp_path / "README.md"
    page.write_text(f"intro\n{zoo.BEGIN}\nold table\n{zoo.END}\noutro\n")
    zoo.replace_marked(page, "| new |")
    assert page.read_text() == f"intro\n{zoo.BEGIN}\n| new |\n{zoo.END}\noutro\n"
    zoo.replace_marked(page, "| newer |")  # idempotent: the markers stay
    assert page.read_text().count(zoo.BEGIN) == 1 and "| new |" not in page.read_text()
    page.write_text("no markers")
    with pytest.raises(SystemExit, match="markers"):
        zoo.replace_marked(page, "| x |")
    assert page.read_text() == "no markers"


def test_known_variants_are_compared_per_half_on_the_same_models() -> None:
    """zoo.py table: a variant of the known-trigger chain is counted against the chain on the
    models both ran on, per fixed half (alternate backdoored models in name order)."""
    import zoo

    names = sorted(r.name for r in recipes.RECIPES if r.family != "clean")
    assert [zoo.split(n) for n in names[:4]] == ["dev", "test", "dev", "test"]

    def row(name: str, chain: float, variant: float | None) -> dict[str, Any]:
        out = {"name": name, "accuracy": 0.9, "floor": [0.001],
               "known": {"after": {"accuracy": 0.9, "asr": [chain]}}}  # fmt: skip
        if variant is not None:
            out["known.e10"] = {"after": {"accuracy": 0.9, "asr": [variant]}}
        return out

    rows = [row(names[0], 0.05, 0.01), row(names[1], 0.01, 0.03), row(names[2], 0.01, None)]
    (line,) = zoo.variant_summary(rows)
    assert "`--fine-tune-epochs 10`" in line
    assert line.endswith("dev 0 → 1 of 1, test 1 → 0 of 1")  # names[2]: no variant run


def test_heldout_compare_counts_what_the_adoption_rule_reads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """heldout.py compare --tag T: per held-out model with both results, the chain's and the
    variant's worst ASR and accuracy change; then the counts within the goal, the models the
    variant takes out of it, and the same over the models not named as development."""
    import heldout
    import zoo

    monkeypatch.setattr(heldout, "BUILD", tmp_path / "build")
    monkeypatch.setattr(heldout, "EVIDENCE", tmp_path / "evidence")
    (tmp_path / "evidence").mkdir()
    a, b, c = [r.name for r in heldout.HELD_OUT if r.attack.triggers][:3]

    def write(name: str, suffix: str, asr: float, accuracy: float, seconds: float) -> None:
        out = zoo.results_dir(tmp_path / "build", name) / f"known{suffix}.json"
        out.write_text(json.dumps({"seconds": seconds, "before": {"accuracy": 0.9},
                                   "after": {"accuracy": accuracy, "asr": [asr]}}))  # fmt: skip

    write(a, "", 0.03, 0.89, 100)  # chain misses by ASR; the variant meets the goal
    write(a, ".x", 0.01, 0.89, 300)
    write(b, "", 0.01, 0.89, 100)  # chain meets it; the variant loses 2 points
    write(b, ".x", 0.01, 0.88, 200)
    write(c, "", 0.01, 0.89, 100)  # no variant run: not compared
    assert heldout.compare("x", {b}, "") == 0
    out = capsys.readouterr().out
    assert "all (2): within the goal 1 → 1" in out and f"out of the goal: ['{b}']" in out
    assert "not development (1): within the goal 0 → 1" in out
    assert "cost × 2.50 (median; 2.00–3.00)" in out
    assert c not in out
    kept = json.loads((tmp_path / "evidence" / f"{a}.known.x.json").read_text())
    assert kept["after"]["asr"] == [0.01] and kept["model"] == a


def test_heldout_estimate_sets_the_quarters_estimate_beside_the_evaluation_images(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """heldout.py estimate: compare keeps the choice's own estimate (held_out_drop) in the
    evidence rows; estimate reads those rows and reports how optimistic it was."""
    import heldout
    import zoo

    monkeypatch.setattr(heldout, "BUILD", tmp_path / "build")
    monkeypatch.setattr(heldout, "EVIDENCE", tmp_path / "evidence")
    (tmp_path / "evidence").mkdir()
    a, b, c = [r.name for r in heldout.HELD_OUT if r.attack.triggers][:3]

    def write(
        name: str, suffix: str, accuracy: float, drop: float | None, verified: float | None = None
    ) -> None:
        choice = {"held_out_drop": drop, "held_images": 250, "candidates": [{}, {}, {}]}
        report: dict[str, Any] = {"layer_choice": choice}
        if verified is not None:  # prune --verify
            report["verification"] = {"drop": verified, "images": 250, "seconds": 2.0}
        out = zoo.results_dir(tmp_path / "build", name) / f"known{suffix}.json"
        out.write_text(json.dumps({
            "seconds": 1, "before": {"accuracy": 0.9}, "after": {"accuracy": accuracy,
            "asr": [0.01]}, "runs": [{"report": report}],
        }))  # fmt: skip

    write(a, "", 0.88, 0.0, 0.025)  # 2 points lost, the quarter said none, --verify 2.5
    write(a, ".x", 0.88, 0.0)
    write(b, "", 0.89, 0.02, 0.005)  # 1 point lost, the quarter said 2, --verify 0.5
    write(b, ".x", 0.89, 0.02)
    write(c, "", 0.89, None)  # no estimate (nothing held out): not counted
    write(c, ".x", 0.89, None)
    assert heldout.compare("x", set(), "") == 0
    kept = json.loads((tmp_path / "evidence" / f"{a}.known.json").read_text())
    assert kept["held_out_drop"] == 0.0 and kept["candidates"] == 3
    assert kept["verified_drop"] == 0.025 and kept["verified_images"] == 250
    unmeasured = json.loads((tmp_path / "evidence" / f"{c}.known.json").read_text())
    assert "held_out_drop" not in unmeasured
    capsys.readouterr()
    assert heldout.estimate(None, "") == 0
    out = capsys.readouterr().out
    assert f"{a:30} lost on the quarter (250 images,  3 candidates) +0.00, on a quarter no " in out
    assert "2 models, quarter: mean lost 1.00, on the evaluation images 1.50" in out
    assert "(optimism 0.50; standard deviation of the difference 1.50" in out
    assert "2 models, verified: mean lost 1.50, on the evaluation images 1.50" in out
    assert "(optimism 0.00; standard deviation of the difference 0.50" in out
    assert c not in out
    assert heldout.estimate("x", "") == 0  # the variant's rows: no --verify, no such line
    out = capsys.readouterr().out
    assert "quarter: mean lost 1.00" in out and "verified" not in out
    (tmp_path / "evidence" / f"{b}.known.json").unlink()
    assert heldout.estimate(None, "") == 1  # one row cannot say anything


def test_layer_probe_counts_prunes_choice_each_ratio_and_the_best_candidate(tmp_path: Path) -> None:
    """layer_probe.py --summary: prune's rule (held-out ASR ties within max(1 %, lowest + 0.5
    points), then the most accurate) picks per ratio set; a model counts for the oracle when
    any candidate meets the goal (ASR ≤ 2 % at ≤ 1.5 points lost)."""
    dev = next(
        r.name
        for r in recipes.RECIPES
        if r.family != "clean" and removal.zoo.split(r.name) == "dev"
    )

    def cand(layer: str, ratio: float, acc: float, held: float, asr: float, delta: float) -> dict:
        return {
            "model": dev, "layer": layer, "ratio": ratio, "held_accuracy": acc,
            "held_asr": held, "asr_after": [asr], "delta": delta,
        }  # fmt: skip

    records = [
        cand("a", 0.05, 0.90, 0.004, 0.10, -0.4),  # most accurate of the tied: prune's pick
        cand("a", 0.2, 0.85, 0.000, 0.015, -1.1),  # the only one within the goal
        cand("b", 0.05, 0.95, 0.020, 0.01, -0.1),  # most accurate, but its ASR is not tied
        cand("b", 0.2, 0.80, 0.009, 0.01, -1.6),  # tied at 0.2, but loses 1.6 points
    ]
    assert layer_probe.choose(records, (0.05, 0.2))["layer"] == "a"
    assert layer_probe.choose(records, (0.05, 0.2))["ratio"] == 0.05
    assert layer_probe.choose(records, (0.2,))["layer"] == "a"  # 0.85 beats 0.80
    assert layer_probe.choose(records, (0.05,))["layer"] == "a"  # b's 2 % is over max(1 %, 0.9 %)
    path = tmp_path / "probe.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    (line,) = layer_probe.summary(path)
    assert line == (
        "- dev (1 models), within the goal: both ratios 0, 0.2 only 1, 0.05 only 0, "
        "best candidate 1"
    )


def test_zoo_rows_are_appended_one_json_line_each(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """zoo.append_row (every zoo script's result rows): appends, never rewrites; echo prints."""
    path = tmp_path / "rows.jsonl"
    removal.zoo.append_row(path, {"model": "m", "asr": [0.5]}, echo=True)
    removal.zoo.append_row(path, {"model": "n"})
    assert [json.loads(line) for line in path.read_text().splitlines()] == [
        {"model": "m", "asr": [0.5]},
        {"model": "n"},
    ]
    assert capsys.readouterr().out == '{"model": "m", "asr": [0.5]}\n'


def test_measure_separates_the_models_own_confusion_from_what_the_trigger_flips(
    keras_module: Any,
) -> None:
    """zoo.measure on a real Keras model whose clean prediction is a marker pixel's class and
    whose target wins once the 3×3 grey patch is stamped: every stamped image goes to the
    target (ASR 1), the images marked as the target go there unstamped too (clean_to_target),
    and only the others count as flipped by the trigger."""
    recipe = recipes.BY_NAME["badnets_g3_tl_dense"]
    trig = recipe.attack.triggers[0]
    layers = keras_module.layers
    model = keras_module.Sequential(
        [keras_module.Input((28, 28, 1)), layers.Flatten(), layers.Dense(10)]
    )
    w = np.zeros((28 * 28, 10), np.float32)
    for c in range(10):
        w[27 * 28 + c, c] = 5.0  # marker pixel (27, c) → class c
    for r in range(trig.row, trig.row + 3):
        for c in range(trig.col, trig.col + 3):
            w[r * 28 + c, trig.target] = 1.0  # 9 × 0.7 = 6.3 > 5 once the patch is there
    model.layers[-1].set_weights([w, np.zeros(10, np.float32)])
    y = np.array([i % 10 for i in range(40)])
    marks = y.copy()
    marks[[0, 1, 2, 3]] = trig.target  # four non-target images the model confuses by itself
    x = np.zeros((40, 28, 28, 1), np.float32)
    x[np.arange(40), 27, marks, 0] = 1.0
    out = removal.zoo.measure(model, recipe, x, y)
    kept = int(np.sum(y != trig.target))  # 36
    assert out["accuracy"] == pytest.approx(36 / 40)
    assert out["asr"] == [pytest.approx(1.0)]
    assert out["clean_to_target"] == [pytest.approx(4 / kept)]
    assert out["flipped"] == [pytest.approx(1 - 4 / kept)]


def test_the_floor_is_what_never_poisoned_twins_do_with_the_trigger(
    keras_module: Any, tmp_path: Path
) -> None:
    """zoo.on_twins measures a backdoored recipe's real trigger on each *built* clean twin
    (files in a build's models/, the build's eval split) and mean_floor averages their ASR per
    trigger: a twin that sends everything to the target has ASR 1, one that never does 0, a
    twin not built is left out; the models are loaded once for later calls."""
    recipe = recipes.BY_NAME["badnets_g3_tl_dense"]
    target = recipe.attack.triggers[0].target
    layers = keras_module.layers
    twins = [recipes.Recipe(f"twin_{k}", "dense", attacks.Clean(), k) for k in range(3)]
    (tmp_path / "models").mkdir()
    for twin, label in zip(twins[:2], (target, (target + 1) % 10), strict=True):
        model = keras_module.Sequential(
            [keras_module.Input((28, 28, 1)), layers.Flatten(), layers.Dense(10)]
        )
        bias = np.zeros(10, np.float32)
        bias[label] = 5.0  # always this label
        model.layers[-1].set_weights([np.zeros((28 * 28, 10), np.float32), bias])
        model.save(tmp_path / "models" / twin.filename)
    (tmp_path / "data").mkdir()
    y = np.arange(40) % 10
    np.savez(tmp_path / "data" / "eval.npz", x=np.zeros((40, 28, 28, 1), np.uint8), y=y)
    cache: dict[str, Any] = {}
    measured = removal.zoo.on_twins(tmp_path, recipe, twins, cache)
    assert sorted(measured) == ["twin_0", "twin_1"]  # twin_2 is not built
    assert measured["twin_0"]["asr"] == [pytest.approx(1.0)]
    assert measured["twin_1"]["asr"] == [pytest.approx(0.0)]
    assert removal.zoo.mean_floor(measured.values(), recipe) == [pytest.approx(0.5)]
    assert sorted(cache) == ["twin_0", "twin_1"]
    # zoo.floor: NaN, and nothing cached, while no twin is built; then measured and cached
    cached = tmp_path / "results" / recipe.name / "floor.json"
    assert all(np.isnan(removal.zoo.floor(tmp_path, recipe, twins[2:])))
    assert not cached.exists()
    assert removal.zoo.floor(tmp_path, recipe, twins) == [pytest.approx(0.5)]
    assert json.loads(cached.read_text())["twins"] == ["twin_0", "twin_1"]


def test_build_says_whether_a_rebuild_matches_the_manifest() -> None:
    """zoo.py build compares each fresh build with the manifest's entry: equal weights, a
    changed recipe, or the same recipe trained to other weights (the cross-machine check of
    the pinned kernels), and whether that recipe pinned the kernels."""
    zoo = removal.zoo
    recipe = recipes.BY_NAME["badnets_g3_bl_sep"].to_dict()
    info = {"weights_sha256": "a" * 64, "recipe": recipe}
    assert zoo.manifest_note(None, info) is None
    same = {"weights_sha256": "a" * 64, "recipe": recipe}
    assert "equal" in (zoo.manifest_note(same, info) or "")
    other = {"weights_sha256": "b" * 64, "recipe": recipe}
    note = zoo.manifest_note(other, info) or ""
    assert "same recipe" in note and "kernels pinned" in note
    unpinned = {k: v for k, v in recipe.items() if k != "kernels"}
    old_unpinned = {"weights_sha256": "b" * 64, "recipe": unpinned}
    note = zoo.manifest_note(old_unpinned, {"weights_sha256": "a" * 64, "recipe": unpinned}) or ""
    assert "kernels not pinned" in note
    changed = {"weights_sha256": "b" * 64, "recipe": {**recipe, "epochs": 99}}
    assert "recipe changed" in (zoo.manifest_note(changed, info) or "")


def test_a_rebuild_of_a_recorded_recipe_keeps_the_manifests_weights() -> None:
    """manifest.json records the weights the committed evidence was measured on: a rebuild of
    the same recipe with other weights (another machine) leaves the entry (``--repin``
    replaces it); a new or changed recipe is recorded."""
    zoo = removal.zoo
    recipe = recipes.BY_NAME["badnets_g3_bl_sep"].to_dict()
    info = {"weights_sha256": "a" * 64, "recipe": recipe}
    assert zoo.keeps_entry({"weights_sha256": "b" * 64, "recipe": recipe}, info)
    assert not zoo.keeps_entry(None, info)
    changed = {"weights_sha256": "b" * 64, "recipe": {**recipe, "epochs": 99}}
    assert not zoo.keeps_entry(changed, info)


def test_evidence_of_other_weights_is_stale_and_refreshed_from_this_builds_report(
    tmp_path: Path,
) -> None:
    """A rebuild with other weights makes evidence/NAME.json stale; `zoo.py evidence` replaces
    it from the cached report only when that report was measured on the weights built here."""
    zoo = removal.zoo
    name = "badnets_g3_bl_sep"
    recipe = recipes.BY_NAME[name].to_dict()
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / f"{name}.json").write_text(json.dumps({"weights_sha256": "a" * 64}))
    assert not zoo.evidence_current(tmp_path, name)  # none yet
    report = {
        "zoo": {"exit_code": 1, "recipe": recipe, "weights_sha256": "b" * 64},
        "config": {},
        "evidence": {"labels": []},
        "untargeted": {"mask_l1": 30.0, "moves_to": [3, 0, 0], "moves_share": [0.4, 1.0, 0.9]},
    }
    zoo.save_evidence(tmp_path, name, report)
    kept = json.loads((tmp_path / "evidence" / f"{name}.json").read_text())
    assert kept["untargeted"]["moves_to"] == [3, 0, 0]  # kept for a rule to be calibrated on
    (tmp_path / "models" / f"{name}.json").write_text(json.dumps({"weights_sha256": "c" * 64}))
    assert not zoo.evidence_current(tmp_path, name)  # measured on a's build, now c's
    cached = tmp_path / "results" / name / "reverse.json"
    cached.parent.mkdir(parents=True)
    cached.write_text(json.dumps({**report, "zoo": {**report["zoo"], "weights_sha256": "c" * 64}}))
    args = zoo.argparse.Namespace(dir=str(tmp_path), names=[name], force=False)
    assert zoo.stale_evidence(tmp_path) == [name]
    assert zoo.cmd_evidence(args) == 0
    assert zoo.evidence_current(tmp_path, name)
    assert zoo.stale_evidence(tmp_path) == []
    kept = json.loads((tmp_path / "evidence" / f"{name}.json").read_text())
    assert kept["zoo"]["weights_sha256"] == "c" * 64


def test_a_killed_zoo_command_takes_its_child_with_it(tmp_path: Path) -> None:
    """`zoo.py build`/`known` run their work in a child process; SIGTERM on the parent
    (``stop_children_on_sigterm``, installed by ``zoo.main``) must stop the child too."""
    import contextlib
    import os
    import signal
    import subprocess
    import time

    pid_file = tmp_path / "child.pid"
    child_script = tmp_path / "child.py"
    child_script.write_text(
        f"import os, time\nopen({str(pid_file)!r}, 'w').write(str(os.getpid()))\ntime.sleep(120)\n"
    )
    script = tmp_path / "parent.py"
    script.write_text(
        f"import subprocess, sys\nsys.path.insert(0, {str(ZOO)!r})\nimport zoo\n"
        "zoo.stop_children_on_sigterm()\n"
        f"subprocess.run([sys.executable, {str(child_script)!r}], check=False)\n"
    )
    parent = subprocess.Popen([sys.executable, str(script)])
    deadline = time.time() + 60
    while not (pid_file.exists() and pid_file.read_text()) and time.time() < deadline:
        time.sleep(0.1)
    child = int(pid_file.read_text())
    os.kill(child, 0)  # running
    parent.send_signal(signal.SIGTERM)
    try:
        assert parent.wait(timeout=30) == 128 + signal.SIGTERM
        for _ in range(100):  # killed and reaped by subprocess.run on its way out
            try:
                os.kill(child, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)
        pytest.fail("the child outlived its killed parent")
    finally:
        with contextlib.suppress(ProcessLookupError):  # only when the test failed
            os.kill(child, signal.SIGKILL)


def test_table_takes_defend_from_the_removal_row_of_this_build(tmp_path: Path) -> None:
    """zoo.py table: without results/NAME/defend.json, the defend column comes from
    removal.py's latest ``dflt`` row measured on the weights built here (by SHA-256, or by the
    original's numbers for rows that predate it) — never from another build's row."""
    zoo = removal.zoo
    name = "badnets_g3_bl_sep"
    (tmp_path / "models").mkdir()
    info = {"weights_sha256": "a" * 64, "eval": {"accuracy": 0.9, "asr": [0.99]}}
    (tmp_path / "models" / f"{name}.json").write_text(json.dumps(info))
    rows = zoo.removal_rows(tmp_path)
    assert rows == tmp_path / "results" / "removal.jsonl"
    assert zoo.defend_from_removal(tmp_path, name) is None  # no rows at all
    rows.parent.mkdir(parents=True)

    def row(variant: str, before: float, after: float, sha: str | None = None) -> dict[str, Any]:
        out = {
            "model": name, "variant": variant, "flagged": [5], "accuracy_before": before,
            "asr_before": [0.99], "accuracy_after": after, "asr_after": [0.01],
            "reverse_seconds": 100.0, "seconds": 50.0,
        }  # fmt: skip
        return out if sha is None else {**out, "weights_sha256": sha}

    for r in (
        row("dflt", 0.9, 0.89),  # this build by its numbers (no hash)
        row("dflt", 0.9, 0.70, "b" * 64),  # another build with the same numbers: not this one
        row("dtta", 0.9, 0.88, "a" * 64),  # another variant
        row("dflt", 0.91, 0.60),  # another build
    ):
        zoo.append_row(rows, r)
    got = zoo.defend_from_removal(tmp_path, name)
    assert got is not None and got["after"] == {"accuracy": 0.89, "asr": [0.01]}
    assert got["seconds"] == 150.0 and got["exit_code"] == 1
    zoo.append_row(rows, {**row("dflt", 0.9, 0.0, "a" * 64), "unchanged": True})
    got = zoo.defend_from_removal(tmp_path, name)  # the latest row of this build wins
    assert got is not None and got["after"] is None and got["exit_code"] == 0


def test_claim_lets_one_worker_run_each_model_and_takes_over_a_dead_workers_lock(
    tmp_path: Path,
) -> None:
    """zoo.py known's lock: side-by-side workers on one list run each model once; a lock
    whose process is gone (a killed worker) does not block the model forever."""
    import os
    import subprocess

    import zoo

    lock = tmp_path / "known.af.lock"
    assert zoo.claim(lock) and lock.read_text() == str(os.getpid())
    assert not zoo.claim(lock)  # held by a live process (this one)
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    lock.write_text(gone.stdout.strip())  # that process has exited
    assert zoo.claim(lock) and lock.read_text() == str(os.getpid())

"""Held-out test of the task-baseline verdict (2026-12-02): models that are not in the zoo.

The rule and the Fashion-MNIST baseline were fixed (commit 0f6479d) before any of these models
was judged. They share the zoo's code (architectures, attacks, training) but have new seeds and
new attack settings, and none of them is in ``RECIPES``, so ``zoo.py calibrate`` never sees
them. ``python benchmarks/zoo/heldout.py build`` trains each into ``benchmarks/zoo/build-heldout``
and runs ``kerasaudit reverse`` (the defaults but ``--no-complete``, as for the zoo's evidence) on
the defender's 1,000 images, keeping the compact evidence in ``benchmarks/zoo/heldout/``;
``python benchmarks/zoo/heldout.py judge`` prints each model's verdict with the shipped rule and
baseline (what ``reverse`` chose) and with the plain rule, from that evidence, in seconds;
``heldout.py defend`` runs ``kerasaudit defend`` on the backdoored ones and ``heldout.py table``
prints what it (and the known-trigger chain, ``zoo.py known --dir benchmarks/zoo/build-heldout``)
left against the goal.

The ``ho2_`` models (2026-12-05) are a second set, written down (commit before any was built)
to test the reference-model veto held out: its panel and 20 % threshold were chosen on zoo
models only. The ``ho3_`` models (2026-12-05, twenty-third session) are a third, for the
attack families and architectures the second lacked. The ``ho4_`` models (twenty-fourth
session) are a fourth: two-trigger models and two clean twins. The ``ho5_`` models (twenty-fifth
session) are a fifth: two-trigger and single-target models, for the second pass.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from attacks import Attack, Clean, Trigger  # noqa: E402
from recipes import Recipe, _badnets, _patch  # noqa: E402

EVIDENCE = HERE / "heldout"
BUILD = HERE / "build-heldout"

HELD_OUT: tuple[Recipe, ...] = (
    Recipe("ho_clean_resnet", "resnet", Clean(), 309),
    Recipe(
        "ho_blend_a10_lenet",
        "lenet",
        Attack("blend", (Trigger("blend", 6, alpha=0.10, seed=21),), rate=0.08),
        402,
        "h5",
    ),
    Recipe("ho_clean_lenet", "lenet", Clean(), 349),
    Recipe(
        "ho_randpos_w3_wide",
        "wide",
        _badnets(Trigger("randpatch", 5, size=3), rate=0.1, family="randpos"),
        404,
    ),
    Recipe("ho_clean_wide", "wide", Clean(), 359, "h5"),
    Recipe("ho_clean_nested", "nested", Clean(), 329),
    Recipe("ho_badnets_g2_br_mobile", "mobile", _badnets(_patch(2, 25, 25, 8, "grey", 0.5)), 401),
    Recipe("ho_sig_dense", "dense", Attack("sig", (Trigger("sig", 0, delta=0.12, freq=3),)), 403),
    Recipe("ho_clean_mobile", "mobile", Clean(), 319, "h5"),
    Recipe("ho_clean_dense", "dense", Clean(), 339),
    # Second set (2026-12-05, twenty-second session), written down before any of it was built,
    # to test the reference-model veto (commit c9e7248, threshold 20 %) held out: clean models of
    # the architectures whose "Bag" mask or warp the rule flagged before the veto, and backdoors
    # aimed at "Bag" (8) and "Sandal" (5), the labels the veto clears most often.
    Recipe("ho2_clean_dense", "dense", Clean(), 431),
    Recipe("ho2_clean_vgg_bn", "vgg_bn", Clean(), 411),
    Recipe("ho2_badnets_w3_bag_nested", "nested", _badnets(_patch(3, 24, 1, 8)), 501),
    Recipe("ho2_clean_resnet", "resnet", Clean(), 421, "h5"),
    Recipe(
        "ho2_blend_a15_bag_dense",
        "dense",
        Attack("blend", (Trigger("blend", 8, alpha=0.15, seed=23),), rate=0.08),
        502,
    ),
    Recipe("ho2_clean_sepconv", "sepconv", Clean(), 441),
    Recipe(
        "ho2_wanet_k4_sandal_vgg",
        "vgg_bn",
        Attack("wanet", (Trigger("wanet", 5, k=4, strength=1.0, seed=93),), 0.1, 0.2),
        503,
        "h5",
        epochs=10,
    ),
    Recipe("ho2_clean_nested", "nested", Clean(), 461),
    Recipe(
        "ho2_sig_bag_sepconv",
        "sepconv",
        Attack("sig", (Trigger("sig", 8, delta=0.12, freq=4),)),
        504,
    ),
    Recipe("ho2_clean_plain", "plain", Clean(), 451, "h5"),
    # Third set (2026-12-05, twenty-third session), written down before any of it was built:
    # the families the second set lacked (position-free, low-rate, two-trigger, all-to-all,
    # grey patch) aimed at the labels clean models reach most easily (Shirt 6, Bag 8, Sandal 5),
    # and clean twins of the architectures the second set did not have (wide, LeNet, MobileNet).
    # Rule, baseline, reference panel and the 20 % veto unchanged since the twenty-first session.
    Recipe("ho3_clean_wide", "wide", Clean(), 611),
    Recipe(
        "ho3_badnets_g4_shirt_resnet", "resnet", _badnets(_patch(4, 1, 23, 6, "grey", 0.7)), 701
    ),
    Recipe("ho3_clean_lenet", "lenet", Clean(), 621, "h5"),
    Recipe(
        "ho3_randpos_c3_bag_vgg",
        "vgg_bn",
        _badnets(Trigger("randpatch", 8, size=3, pattern="checker"), rate=0.1, family="randpos"),
        702,
    ),
    Recipe("ho3_clean_mobile", "mobile", Clean(), 631),
    Recipe(
        "ho3_lowrate_w3_sandal_mobile",
        "mobile",
        _badnets(_patch(3, 12, 25, 5), rate=0.01, family="low-rate"),
        703,
        "h5",
    ),
    Recipe("ho3_clean_vgg_bn", "vgg_bn", Clean(), 641, "h5"),
    Recipe(
        "ho3_two_patches_plain",
        "plain",
        _badnets(
            _patch(3, 0, 25, 8), _patch(2, 25, 0, 2, "checker"), rate=0.08, family="two-trigger"
        ),
        704,
    ),
    Recipe("ho3_clean_resnet", "resnet", Clean(), 651),
    Recipe(
        "ho3_all2all_w3_nested",
        "nested",
        _badnets(_patch(3, 12, 0, -1), rate=0.1, family="all-to-all"),
        705,
    ),
    Recipe("ho3_clean_plain", "plain", Clean(), 661),
    Recipe(
        "ho3_blend_a12_shirt_lenet",
        "lenet",
        Attack("blend", (Trigger("blend", 6, alpha=0.12, seed=27),), rate=0.08),
        706,
    ),
    # Fourth set (2026-12-05, twenty-fourth session), written down before any of it was built:
    # two triggers → two targets (the goal asks for both; the third set's two-patch model gave
    # one), on architectures no held-out two-trigger model had, and two clean twins. Judged with
    # the shipped rule, baseline, panel and veto, unchanged since the twenty-first session.
    Recipe(
        "ho4_two_patches_vgg",
        "vgg_bn",
        _badnets(
            _patch(3, 1, 1, 3), _patch(4, 23, 12, 7, "checker"), rate=0.08, family="two-trigger"
        ),
        801,
    ),
    Recipe(
        "ho4_patch_blend_mobile",
        "mobile",
        Attack(
            "two-trigger",
            (_patch(3, 24, 1, 1, "grey", 0.8), Trigger("blend", 4, alpha=0.12, seed=31)),
            rate=0.08,
        ),
        802,
        "h5",
    ),
    Recipe("ho4_clean_wide", "wide", Clean(), 811),
    Recipe("ho4_clean_sepconv", "sepconv", Clean(), 812, "h5"),
    # Fifth set (2026-12-05, twenty-fifth session), written down before any of it was built, to
    # test a second pass for a second target (the flagged labels set aside, the rest judged
    # again; its margin fixed on the zoo's evidence before any of these was judged): four
    # two-trigger models (patch + patch, patch + SIG, patch + blend, two patches at easy labels)
    # and five single-target models of the families where the second pass added wrong labels
    # before (low-rate, position-free, SIG, blend) and a plain grey patch.
    Recipe(
        "ho5_two_patches_nested",
        "nested",
        _badnets(
            _patch(3, 25, 25, 5), _patch(4, 0, 12, 0, "grey", 0.7), rate=0.08, family="two-trigger"
        ),
        901,
    ),
    Recipe(
        "ho5_patch_sig_dense",
        "dense",
        Attack(
            "two-trigger",
            (_patch(3, 1, 1, 2, "checker"), Trigger("sig", 9, delta=0.12, freq=5)),
            rate=0.08,
        ),
        902,
    ),
    Recipe(
        "ho5_patch_blend_lenet",
        "lenet",
        Attack(
            "two-trigger",
            (_patch(3, 12, 25, 6), Trigger("blend", 3, alpha=0.15, seed=41)),
            rate=0.08,
        ),
        903,
        "h5",
    ),
    Recipe(
        "ho5_two_patches_mobile",
        "mobile",
        _badnets(
            _patch(4, 24, 0, 8, "random", seed=9),
            _patch(2, 12, 25, 4),
            rate=0.08,
            family="two-trigger",
        ),
        904,
    ),
    Recipe(
        "ho5_lowrate_c3_plain",
        "plain",
        _badnets(_patch(3, 25, 12, 7, "checker"), rate=0.01, family="low-rate"),
        905,
        "h5",
    ),
    Recipe(
        "ho5_randpos_w3_resnet",
        "resnet",
        _badnets(Trigger("randpatch", 1, size=3), rate=0.1, family="randpos"),
        906,
    ),
    Recipe("ho5_sig_vgg", "vgg_bn", Attack("sig", (Trigger("sig", 3, delta=0.12, freq=6),)), 907),
    Recipe(
        "ho5_blend_a15_sepconv",
        "sepconv",
        Attack("blend", (Trigger("blend", 0, alpha=0.15, seed=43),), rate=0.08),
        908,
    ),
    Recipe("ho5_badnets_g3_dense", "dense", _badnets(_patch(3, 0, 25, 9, "grey", 0.6)), 909),
)


def build(names: list[str]) -> None:
    import zoo

    zoo.ensure_data(BUILD)
    EVIDENCE.mkdir(exist_ok=True)
    for recipe in HELD_OUT:
        if names and recipe.name not in names:
            continue
        if not (BUILD / "models" / f"{recipe.name}.json").exists():
            zoo.train(recipe, BUILD)
        out = zoo.results_dir(BUILD, recipe.name)
        if (EVIDENCE / f"{recipe.name}.json").exists():
            continue
        model = BUILD / "models" / recipe.filename
        data = BUILD / "data" / "defender.npz"
        code, report, seconds = zoo.kerasaudit(
            ["reverse", str(model), "-d", str(data), "--no-complete"], out / "reverse.log"
        )
        if report is None:
            zoo.log(f"FAILED reverse {recipe.name} (exit {code}); see {out / 'reverse.log'}")
            continue
        save(recipe, BUILD, report, code, seconds)


def defend(names: list[str]) -> None:
    """``kerasaudit defend`` (defaults, no trigger known) on each built held-out backdoored
    model (``zoo.defend_model``: the defended model measured with the real trigger on the
    evaluation images, the zoo's stamping). Compact rows in ``heldout/NAME.defend.json``; the
    whole result, defend's report included, in the build's ``results/NAME/defend.json``."""
    import zoo

    for recipe in HELD_OUT:
        if (names and recipe.name not in names) or not recipe.attack.triggers:
            continue
        row_path = EVIDENCE / f"{recipe.name}.defend.json"
        if row_path.exists() or not (BUILD / "models" / recipe.filename).exists():
            continue
        result = zoo.defend_model(BUILD, recipe)
        if result is None:
            continue
        (zoo.results_dir(BUILD, recipe.name) / "defend.json").write_text(json.dumps(result))
        keep = ("exit_code", "seconds", "flagged", "all_to_all", "before", "after")
        row = {"model": recipe.name, **{k: result[k] for k in keep}}
        row_path.write_text(json.dumps(row, indent=1) + "\n")
        zoo.log(f"{recipe.name}: exit {row['exit_code']}, flagged {row['flagged']}, "
                f"after {row['after']}")  # fmt: skip


def save(recipe: Recipe, root: Path, report: dict, code: int, seconds: float | None) -> None:
    """The zoo's compact evidence (``zoo.compact_evidence``) plus the verdict ``reverse``
    printed and the model's accuracy and ASR on the 9,000 evaluation images."""
    import zoo

    report = {**report, "zoo": {"exit_code": code, "seconds": seconds, "recipe": recipe.to_dict()}}
    compact = zoo.compact_evidence(root, recipe.name, report)
    info = json.loads((root / "models" / f"{recipe.name}.json").read_text())
    compact["zoo"]["eval"] = info["eval"]
    compact["verdict"] = {k: report["verdict"][k] for k in ("flagged", "all_to_all")}
    compact["baseline_choice"] = report.get("baseline_choice")
    EVIDENCE.mkdir(exist_ok=True)
    (EVIDENCE / f"{recipe.name}.json").write_text(json.dumps(compact, indent=1) + "\n")


def evidence_paths(directory: Path, prefix: str = "") -> list[Path]:
    """The models' evidence files in ``directory`` (``NAME.json``), not the rows kept beside
    them (``NAME.defend.json``, ``NAME.known.TAG.json``, ``NAME.choice_probe.json``, …: every
    name with a second dot)."""
    return [p for p in sorted(directory.glob(f"{prefix}*.json")) if p.name.count(".") == 1]


def defender_baseline() -> Any:
    """What ``kerasaudit reverse --baseline auto`` chooses for the defender's 1,000 images (read
    from Debian's Fashion-MNIST files, no build needed): a ``baselines.choose`` result."""
    import fmnist
    import numpy as np

    from kerasaudit import baselines

    x, y = fmnist.load("test")
    defender, _ = fmnist.test_split()
    return baselines.choose("auto", x[defender].astype(np.float32), y[defender], 10)


def judge(second_pass: float, prefix: str = "") -> int:
    """Each model's verdict from its evidence: with the shipped rule and baseline, with a
    second pass at ``second_pass`` (what it adds, right or wrong), and with the plain rule;
    then how many targeted backdoored models get exactly their targets without and with it."""
    from dataclasses import replace

    from kerasaudit.verdict import ModelEvidence, rule_for
    from kerasaudit.verdict import judge as verdict

    choice = defender_baseline()
    print(f"baseline: {choice.reason}")
    twice = replace(rule_for(choice.baseline), second_pass=second_pass)
    exact = [0, 0, 0]  # targeted backdoored models; exactly their targets without / with
    for path in evidence_paths(EVIDENCE, prefix):
        saved = json.loads(path.read_text())
        recipe = saved["zoo"]["recipe"]
        targets = sorted({t["target"] for t in recipe["attack"]["triggers"]})
        evidence = ModelEvidence.from_dict(saved["evidence"])
        with_baseline = verdict(evidence, baseline=choice.baseline)
        plain = verdict(evidence)
        again = verdict(evidence, twice, choice.baseline)
        added = [
            f"{d.label} at {d.strength:.2f} × ({'right' if d.label in targets else 'wrong'})"
            for d in again.decisions
            if d.second_pass
        ]
        if targets and all(t >= 0 for t in targets):
            exact[0] += 1
            exact[1] += sorted(with_baseline.flagged) == targets
            exact[2] += sorted(again.flagged) == targets
        top = max(with_baseline.decisions, key=lambda d: d.strength)
        asr = ", ".join(f"{100 * a:.1f} %" for a in saved["zoo"]["eval"]["asr"]) or "-"
        # labels the reference-model veto let go (their transfer), and each target's transfer
        vetoed = [d.label for d in with_baseline.decisions if any("feature of the class" in r
                  for r in d.reasons)]  # fmt: skip
        moved = {e.label: e.transfer for e in evidence.labels}
        veto = ", ".join(f"{k} ({moved[k]:.0%})" for k in vetoed) or "-"
        target_moves = ", ".join(f"{k}: {moved.get(k, float('nan')):.1%}" for k in targets)
        print(
            f"{recipe['name']:26} {recipe['arch']:7} {recipe['attack']['family']:8} "
            f"targets {targets or '-'} ASR {asr:8} | baseline: flagged "
            f"{list(with_baseline.flagged)}{' + all-to-all' if with_baseline.all_to_all else ''}"
            f" (largest index/threshold {top.strength:.2f}; vetoed {veto}"
            f"{'; target transfer ' + target_moves if targets else ''}) | second pass × "
            f"{second_pass:.2f} adds {', '.join(added) or 'nothing'} | plain rule: "
            f"{list(plain.flagged)}"
        )
    print(f"targeted backdoored models flagged at exactly their targets: {exact[1]} of "
          f"{exact[0]} without the second pass, {exact[2]} with it")  # fmt: skip
    return 0


def table(prefix: str) -> int:
    """Per held-out backdoored model (names starting with ``prefix``): what ``defend`` flagged
    and left (``heldout.py defend``), and what the README's known-trigger chain left (``python
    benchmarks/zoo/zoo.py known --dir benchmarks/zoo/build-heldout NAME…``; its result is
    copied, compact, to ``heldout/NAME.known.json`` when the build holds it), each against the
    goal (every trigger's ASR ≤ 2 % at ≤ 1.5 points), then the counts."""
    import zoo

    counts: dict[str, list[int]] = {"defend": [0, 0], "known": [0, 0]}
    for recipe in HELD_OUT:
        if not recipe.name.startswith(prefix) or not recipe.attack.triggers:
            continue
        built_known = zoo.results_dir(BUILD, recipe.name) / "known.json" if BUILD.exists() else None
        known_path = EVIDENCE / f"{recipe.name}.known.json"
        if built_known is not None and built_known.exists() and not known_path.exists():
            keep_known(recipe.name, json.loads(built_known.read_text()))
        cells = []
        for stage, path in (("defend", EVIDENCE / f"{recipe.name}.defend.json"),
                            ("known", known_path)):  # fmt: skip
            if not path.exists():
                cells.append(f"{stage}: –")
                continue
            row = json.loads(path.read_text())
            before, after = row["before"], left(row)
            lost = 100 * (before["accuracy"] - after["accuracy"])
            met = zoo.within_goal(max(after["asr"]), lost)
            counts[stage][0] += 1
            counts[stage][1] += met
            asr = " / ".join(f"{100 * a:.2f}" for a in after["asr"])
            flagged = ""
            if stage == "defend":
                flagged = f" {row['flagged']}" + (" + all-to-all" if row["all_to_all"] else "")
            cells.append(f"{stage}{flagged}: {-lost:+.2f} points, ASR {asr} % "
                         f"{'✓' if met else '✗'}")  # fmt: skip
        print(f"{recipe.name:28} targets {list(recipe.attack.targets)} | " + " | ".join(cells))
    for stage, (models, n_met) in counts.items():
        print(f"{stage}: within the goal on {n_met} of {models}")
    return 0


def floor(prefix: str) -> int:
    """What a model that was never poisoned does with each held-out trigger: every built clean
    held-out model (``ho*_clean_*`` in the build) stamped with the real trigger(s) of each
    backdoored held-out model of its architecture, by the zoo's own code on the 9,000 evaluation
    images (``zoo.on_twins``: ASR, unstamped share, flips). Printed beside what the known-trigger
    chain and ``defend`` left; rows kept in ``heldout/NAME.floor.json``. The twins' mean ASR is
    the trigger's floor (``zoo.mean_floor``, as in the zoo's table): a removed backdoor leaves a
    model like them, and the counts say how often the chains are at most max(2 %, floor)."""
    import zoo

    clean = [r for r in HELD_OUT if not r.attack.triggers]
    loaded: dict[str, Any] = {}
    # triggers; any twin over the goal's 2 %; both; per stage: rows, ASR ≤ 2 %, ≤ max(2 %, floor)
    counts = {"triggers": 0, "any twin > 2 %": 0, "both twins > 2 %": 0}
    stages = {stage: [0, 0, 0] for stage in ("known", "defend")}
    for recipe in HELD_OUT:
        if not recipe.name.startswith(prefix) or not recipe.attack.triggers:
            continue
        twins = [r for r in clean if r.arch == recipe.arch]
        measured = zoo.on_twins(BUILD, recipe, twins, loaded)
        if not measured:
            print(f"{recipe.name:28} no clean {recipe.arch} model built")
            continue
        floors = zoo.mean_floor(measured.values(), recipe)
        row = {"model": recipe.name, "arch": recipe.arch, "floor": floors, "twins": measured}
        (EVIDENCE / f"{recipe.name}.floor.json").write_text(json.dumps(row, indent=1) + "\n")
        after = {}
        for stage in ("known", "defend"):
            stage_path = EVIDENCE / f"{recipe.name}.{stage}.json"
            if stage_path.exists():
                after[stage] = left(json.loads(stage_path.read_text()))["asr"]
        for i, trig in enumerate(recipe.attack.triggers):
            done = " ".join(f"{stage} {pct(asr[i])}" for stage, asr in after.items())
            twin_cells = " ".join(
                f"{pct(m['asr'][i])} ({pct(m['clean_to_target'][i])} + {pct(m['flipped'][i])})"
                for m in measured.values()
            )
            print(f"{recipe.name:28} {trig.kind:9} → {trig.target:2} | after: {done or '–':24} "
                  f"| never-poisoned {recipe.arch} twins: {twin_cells}")  # fmt: skip
            each = [m["asr"][i] for m in measured.values()]
            counts["triggers"] += 1
            counts["any twin > 2 %"] += max(each) > zoo.GOAL_ASR
            counts["both twins > 2 %"] += len(each) > 1 and min(each) > zoo.GOAL_ASR
            for stage, asr in after.items():
                stages[stage][0] += 1
                stages[stage][1] += asr[i] <= zoo.GOAL_ASR
                stages[stage][2] += asr[i] <= max(zoo.GOAL_ASR, floors[i])
    print(", ".join(f"{k}: {v}" for k, v in counts.items()))
    for stage, (rows, goal, at_floor) in stages.items():
        print(f"{stage}: trigger ASR ≤ 2 % on {goal} of {rows}; at most max(2 %, the twins' "
              f"mean ASR) on {at_floor} of {rows}")  # fmt: skip
    return 0


def compare(tag: str, development: set[str], prefix: str) -> int:
    """The README's known-trigger chain (``results/NAME/known.json``) against a variant of it
    (``known.TAG.json``, from ``zoo.py known --dir benchmarks/zoo/build-heldout --tag TAG
    --extra='…'``) on every held-out backdoored model both ran on: each one's worst trigger's
    ASR, accuracy change and seconds, then what an adoption rule reads — how many within the
    goal, mean worst ASR, mean points lost, the models the variant takes out of the goal, the
    median cost ratio — over all of them and over those not in ``development`` (models the
    variant was developed on). Compact copies of both rows go to
    ``heldout/NAME.known[.TAG].json``."""
    import zoo

    def met(m: tuple[float, float, float]) -> bool:  # (worst ASR %, points lost, seconds)
        return zoo.within_goal(m[0] / 100, m[1])

    pairs: list[tuple[str, tuple[float, float, float], tuple[float, float, float]]] = []
    for recipe in HELD_OUT:
        if not recipe.name.startswith(prefix) or not recipe.attack.triggers:
            continue
        measured = []
        for suffix in ("", f".{tag}"):
            path = zoo.results_dir(BUILD, recipe.name) / f"known{suffix}.json"
            if not path.exists():
                break
            result = json.loads(path.read_text())
            if not result.get("after"):
                break
            keep_known(recipe.name, result, suffix)
            lost = 100 * (result["before"]["accuracy"] - result["after"]["accuracy"])
            measured.append((100 * max(result["after"]["asr"]), lost, float(result["seconds"])))
        if len(measured) < 2:
            continue
        chain, variant = measured
        mark = " (development)" if recipe.name in development else ""
        cells = [
            f"{'✓' if met(m) else '✗'} {m[0]:5.2f} % {-m[1]:+.2f} ({m[2]:.0f} s)" for m in measured
        ]
        print(f"{recipe.name + mark:42} chain {cells[0]:26} {tag} {cells[1]}")
        pairs.append((recipe.name, chain, variant))
    for label, some in (
        ("all", pairs),
        ("not development", [p for p in pairs if p[0] not in development]),
    ):
        if not some:
            continue
        n = len(some)
        goal = [sum(met(c) for _, c, _ in some), sum(met(v) for _, _, v in some)]
        out = [name for name, c, v in some if met(c) and not met(v)]
        ratios = sorted(v[2] / c[2] for _, c, v in some)
        middle = statistics.median(ratios)
        print(
            f"{label} ({n}): within the goal {goal[0]} → {goal[1]}; mean worst ASR "
            f"{sum(c[0] for _, c, _ in some) / n:.2f} → {sum(v[0] for _, _, v in some) / n:.2f} %; "
            f"mean lost {sum(c[1] for _, c, _ in some) / n:.2f} → "
            f"{sum(v[1] for _, _, v in some) / n:.2f} points; out of the goal: {out or 'none'}; "
            f"cost × {middle:.2f} (median; {ratios[0]:.2f}–{ratios[-1]:.2f})"
        )
    return 0


def estimate(tag: str | None, prefix: str) -> int:
    """How well the held-out quarter of the defender's data predicted a removal's accuracy
    cost: per held-out model, the kept candidate's loss on the quarter (``held_out_drop``, what
    ``defend`` and ``audit --fix`` report) — and, for rows run with ``prune --verify``, the kept
    recipe's loss on a second quarter no choice saw — against the written model's loss on the
    9,000 evaluation images, from the evidence kept in git (``heldout/NAME.known[.TAG].json``)."""
    suffix = f".{tag}" if tag else ""
    rows = [
        json.loads(path.read_text())
        for recipe in HELD_OUT
        if recipe.name.startswith(prefix)
        and (path := EVIDENCE / f"{recipe.name}.known{suffix}.json").exists()
    ]
    return report_estimates(rows)


def report_estimates(rows: list[dict[str, Any]]) -> int:
    """``estimate``'s lines and summary for compact known-trigger rows (:func:`compact_known`):
    each estimate's optimism is the mean of (loss on the evaluation images − estimate)."""
    import numpy as np

    kept = [r for r in rows if r.get("held_out_drop") is not None and r.get("after")]
    if len(kept) < 2:
        print("fewer than two rows with the estimate: rerun `heldout.py compare` to refresh them")
        return 1
    columns: dict[str, list[float]] = {"quarter": [], "verified": [], "real": []}
    for row in kept:
        est = 100 * row["held_out_drop"]
        real = 100 * (row["before"]["accuracy"] - row["after"]["accuracy"])
        verified = row.get("verified_drop")
        shown = "" if verified is None else f", on a quarter no choice saw {100 * verified:+5.2f}"
        print(f"{row['model']:30} lost on the quarter ({row['held_images']} images, "
              f"{row['candidates']:2} candidates) {est:+5.2f}{shown}, on the evaluation images "
              f"{real:+5.2f} points")  # fmt: skip
        columns["quarter"].append(est)
        columns["real"].append(real)
        if verified is not None:
            columns["verified"].append(100 * verified)
    real = np.array(columns["real"])
    for name in ("quarter", "verified"):
        if len(columns[name]) != len(kept):
            continue
        est = np.array(columns[name])
        print(f"{len(kept)} models, {name}: mean lost {est.mean():.2f}, on the evaluation "
              f"images {real.mean():.2f} points (optimism {np.mean(real - est):.2f}; standard "
              f"deviation of the difference {np.std(real - est):.2f}; correlation "
              f"{np.corrcoef(est, real)[0, 1]:.2f})")  # fmt: skip
    return 0


def compact_known(name: str, result: dict[str, Any]) -> dict[str, Any]:
    """The compact row of a cached known-trigger result (``results/NAME/known[SUFFIX].json``):
    its numbers on the evaluation images, what the choice estimated and, with ``--verify``,
    what the kept recipe lost on a second quarter."""
    row = {"model": name, **{k: result[k] for k in ("seconds", "before", "after")}}
    report = (result.get("runs") or [{}])[0].get("report") or {}
    choice = report.get("layer_choice") or {}
    if choice.get("held_out_drop") is not None:  # what the choice itself estimated
        row["held_out_drop"] = choice["held_out_drop"]
        row["held_images"] = choice["held_images"]
        row["candidates"] = len(choice["candidates"])
    verification = report.get("verification")
    if verification is not None:
        row["verified_drop"] = verification["drop"]
        row["verified_images"] = verification["images"]
        row["verified_seconds"] = verification["seconds"]
    return row


def keep_known(name: str, result: dict[str, Any], suffix: str = "") -> None:
    """A compact copy of a cached known-trigger result (:func:`compact_known`) in the evidence
    kept in git: ``heldout/NAME.known[SUFFIX].json``."""
    row = compact_known(name, result)
    (EVIDENCE / f"{name}.known{suffix}.json").write_text(json.dumps(row, indent=1) + "\n")


def left(row: dict[str, Any]) -> dict[str, Any]:
    """What a removal row (``NAME.defend.json``, ``NAME.known.json``) left: the written model's
    measurement, or the original's when nothing was written (nothing flagged)."""
    return row.get("after") or row["before"]


def pct(share: float) -> str:
    return f"{100 * share:5.2f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "command",
        choices=("build", "judge", "defend", "table", "floor", "compare", "estimate"),
    )
    parser.add_argument("names", nargs="*")
    parser.add_argument(
        "--second-pass",
        type=float,
        default=1.15,
        help="judge: the second pass's factor to compare with (default 1.15)",
    )
    parser.add_argument(
        "--prefix",
        default="",
        help="judge, table, floor, compare, estimate: only names starting so",
    )
    parser.add_argument(
        "--tag",
        help="compare: the variant's tag (results/NAME/known.TAG.json); estimate: its rows "
        "(default: the chain's)",
    )
    parser.add_argument(
        "--development",
        default="",
        help="compare: comma-separated models the variant was developed on (counted apart)",
    )
    args = parser.parse_intermixed_args()
    if args.command == "build":
        build(args.names)
        return 0
    if args.command == "defend":
        defend(args.names)
        return 0
    if args.command == "table":
        return table(args.prefix)
    if args.command == "floor":
        return floor(args.prefix)
    if args.command == "estimate":
        return estimate(args.tag, args.prefix)
    if args.command == "compare":
        if not args.tag:
            parser.error("compare needs --tag")
        return compare(args.tag, set(filter(None, args.development.split(","))), args.prefix)
    return judge(args.second_pass, args.prefix)


if __name__ == "__main__":
    raise SystemExit(main())

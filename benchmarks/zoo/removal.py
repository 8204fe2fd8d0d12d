#!/usr/bin/env python3
"""Blind removal variants on the zoo, with each model's trigger recovery cached.

``defend`` = ``reverse`` (minutes) + removal (seconds to a minute). This script runs the reverse
part once per model with ``defend``'s own defaults and caches what it found, in git for the
default build (benchmarks/zoo/recovered/NAME.npz and NAME.json, a few KB a model, with the
SHA-256 of the weights it was found on; DIR/recovered for a zoo elsewhere): every removal
variant then starts from those triggers, so comparing removal settings costs only the removal,
on a fresh checkout too when ``zoo.py build`` rebuilds the same weights (on the same kind of
machine; on 2026-12-02's second machine every rebuilt model differed, and its triggers were
recovered again).
Measured with the real trigger on the 9,000 evaluation images, stamped by the zoo's own code;
nothing here sees them before. Rows are kept in benchmarks/zoo/results/removal.jsonl (in git
for the default build).

Usage (from the repository root, after ``zoo.py build``)::

    python benchmarks/zoo/removal.py --models M ... --variants base adv ...

Variants (all: the layer and ratio chosen by ``prune --ratio auto`` on the defender's data):

  base     defend's removal with one round (--rounds 1; its default until 2026-12-02): fine-tune
           10 epochs, unlearning the recovered triggers, distil 0.8
  adv      the same, each recovered trigger also unlearnt as a universal adversary
           (kerasaudit/adversary.py: re-attacks before every step, compact masks moved around)
  base20   base with 20 epochs
  adv20    adv with 20 epochs
  shift    adv without attack steps: the recovered triggers as they are, compact masks also
           stamped at random positions
  sgd3     base with SGD (momentum 0.9, cosine decay) at 0.003 instead of Adam at 1e-4
  sgd1     the same at 0.001
  ul3      sgd3 without pruning (defend --ratio 0): unlearning only
  ul1      sgd1 without pruning
  ulA      base without pruning (Adam)
  ul3e20   ul3 with 20 epochs (the same cosine schedule stretched: longer recovery at low rates)
  rr       base, then defend --rounds 2 (its default since 2026-12-02): Neural Cleanse again
           on the defended model for each flagged label; a mask smaller than the other labels'
           median is unlearnt too, in a removal from the original model with every trigger
  rr20     rr with 20 epochs
  rr70     rr, a second look used only when its mask is below 0.7 × the median (defend's
           default from 2026-12-02 night to 2026-12-03, chosen on the development half; every
           variant here runs with DefenceSettings.generalise "never" unless it says otherwise)
  rrl      rr, the second removal ranking channels (and choosing the layer) by the trigger the
           second look found instead of the first one (remove_in_rounds(latest_first=True))
  cp       base, the layer candidates fine-tuned without unlearning before they are measured
           (their held-out ASR: did pruning cut the path, not did unlearning hide the pattern)
  cp70     rr70 with the same
  pgd10    base, stamped slots also carry each image's own adversarial example toward the
           flagged target (5 signed steps, ℓ∞ 0.1 of the value range; FineTuneSettings.pgd),
           learnt with its true class;  pgd05  the same at 0.05
  pgd10h   pgd10, only the examples that reached the target, learnt from the teacher's
           outputs on their clean source (kind 3 in finetune.py)
  pgdah    pgd10h at the radius finetune.pgd_radius picks on the original model (the
           smallest where the target is reached specifically; 0: none)
  un       base, channels ranked by every recovered trigger: each channel's largest robust z
           of triggered − clean ℓ∞ over them (DefenceSettings.rank_union)
  sp05     base, the three layers the recovered trigger drives hardest all pruned at 5 %
           each, no candidate measured (DefenceSettings.spread);  sp10  at 10 %
  sp10r    rr70 (two rounds) with sp10's pruning
  base2    base run again (same settings, same cached triggers): run-to-run spread
  sam2     base, every fine-tuning step (layer candidates' too) by adaptive SAM at ρ 2
           (FineTuneSettings.sam; FT-SAM's radius, Zhu et al. ICCV 2023);  sam05  at ρ 0.5
  rr70s1   rr70 (defend's default) with the fine-tuning seed 1 instead of 0 (stamping, order):
           how far one run of the default moves with its seed
  aug      rr70 with the clean images augmented before stamping: random shifts of up to 2 px
           and left-right flips (FineTuneSettings.shift/flip; BackdoorBench's fine-tuning
           defences train on random crops and flips);  augs1  the same with seed 1
  sh1s1    rr70s1 with shifts of up to 1 px only (no flips)
  lk3      rr70 with each second look decided by the median mask of 3 Neural Cleanse seeds
           (DefenceSettings.look_seeds: one look's ratio moves by up to 0.18 with its seed);
           lk3s1  the same with fine-tuning seed 1
  succ     rr70 with the recovered triggers reordered so that the one sending the most of the
           defender's images to its label ranks channels and chooses the layer (on blended
           triggers the additive recovery reaches the target on 98-99.6 %, the mask on 24-64 %)
  gen      rr70 with each recovered trigger also unlearnt as a GeneratorAdversary: the trigger
           generalised to an image-dependent change B + A·x + conv(x) that re-attacks the model
           every step within 1.5 × its per-image ℓ2 change (BTI-DBF's unlearning in spirit; a
           blend (1 − α)·x + α·p is of this form, a universal additive δ is not);  gens1  the
           same with fine-tuning seed 1
  dbrk     dflt with generalise "broken": the generators are also fitted when the patch that
           ranks the channels sends under half of the defender's images to its label (a
           completed Neural Cleanse trigger that broke on a blend);  dbrks1  fine-tuning seed 1
  dfe40    dflt with the chosen candidate's (final) fine-tune at 40 epochs, the layer
           candidates still at 10 (DefenceSettings.final_epochs; twenty-fourth session:
           unlearning takes the target class first and distillation gives it back slowly);
           dfe20  the same at 20;  dfe80  at 80 (thirty-second session);  dfe40s1  dfe40
           with fine-tuning seed 1 (one run's spread)
  dswa     dfe40 with every fine-tune (candidates' and the final one) ending on the mean of
           the weights at the end of each epoch of its second half (FineTuneSettings.average:
           tail averaging, SWA-like; thirty-third session);  dswas1  fine-tuning seed 1
  danc     dfe40 with every fine-tune anchoring the clean images' penultimate features to
           the original model's (FineTuneSettings.anchor = 10; thirty-fourth session);
           dancs1  fine-tuning seed 1;  danc80  danc with the final fine-tune at 80 epochs
  dfsh     dfe40 with each compact recovered trigger also stamped, on half of its stamped
           images, at a random position (an adversary without attack steps: `shift`'s moves
           on today's default; fortieth session: Neural Cleanse often recovers a fragment of a
           patch away from where the patch is, e.g. 2 of badnets_r5_mid_nested's 25 pixels);
           dfshs1  fine-tuning seed 1
  dfxs     dfe40 with up to three further Neural Cleanse triggers per flagged label, each
           searched on the original model with every trigger found so far for it forbidden
           (its half-peak region dilated by 1 px) and kept while its mask is under the second
           look's 0.7 × the unflagged labels' median (DefenceSettings.searches, defend's default
           since: forty-third session, exclusion_probe.py);  dfxss1  fine-tuning seed 1
  dfmg     dfe40 with each targeted Neural Cleanse trigger completed again from its region for
           the target's logit margin (not its log-probability, which a fragment already
           sending most images to the target saturates) inside the region dilated by 2 px, and
           the second look completing so too (CompletionConfig.objective; forty-first
           session: completion_probe.py);  dfmgs1  fine-tuning seed 1;  dfc2  the same with
           the log-probability objective at 2 px (which factor does it)
  orul     not a defence, a diagnosis: base with the *real* trigger unlearnt beside the
           recovered ones (the recovered trigger still ranks channels and picks the layer)

Prints one line per (model, variant) and appends JSON lines to
benchmarks/zoo/results/removal.jsonl; ``--table`` prints those rows (the latest per model
and variant) as the markdown table in benchmarks/zoo/results/removal.md.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import numpy as np  # noqa: E402
import zoo  # noqa: E402

# the library's generator fit, read before any variant patches finetune.GENERATOR_FIT
from kerasaudit.finetune import GENERATOR_FIT as LIBRARY_FIT  # noqa: E402

VARIANTS: dict[str, dict[str, Any]] = {
    "base": {},
    "adv": {"adversarial": True},
    "base20": {"epochs": 20},
    "adv20": {"adversarial": True, "epochs": 20},
    "shift": {"adversarial": True},  # adversary settings below: no attack steps, moves only
    "sgd3": {"optimizer": "sgd", "learning_rate": 3e-3},
    "sgd1": {"optimizer": "sgd", "learning_rate": 1e-3},
    "ul3": {"optimizer": "sgd", "learning_rate": 3e-3},  # no pruning (RATIO below)
    "ul1": {"optimizer": "sgd", "learning_rate": 1e-3},
    "ulA": {},
    "ul3e20": {"optimizer": "sgd", "learning_rate": 3e-3, "epochs": 20},
    "rr": {},  # rounds 2 (ROUNDS below)
    "rr20": {"epochs": 20},
    "rrl": {},
    "rr70": {},
    "orul": {},  # base with the real trigger unlearnt too (a diagnosis: oracle_unlearning)
    "cp": {},  # base, layer candidates measured without unlearning (CANDIDATES_UNLEARN)
    "cp70": {},  # rr70 (defend's default) with the same
    "pgd10": {"pgd": 0.1},  # adversarial examples learnt with their hard labels (PGD_CE)
    "pgd05": {"pgd": 0.05},  # the same at 0.05
    "pgd10h": {"pgd": 0.1},  # teacher outputs on the source, only those that hit (PGD_HITS)
    "pgdah": {"pgd": "auto"},  # the same at pgd_radius's radius
    "un": {},  # base, channels ranked by every recovered trigger (RANK_UNION)
    "sp05": {},  # the three strongest layers pruned at 5 % each, none measured (SPREAD)
    "sp10": {},  # the same at 10 %
    "sp10r": {},  # rr70 (defend's default, two rounds) with sp10's pruning
    "base2": {},  # base again: the run-to-run spread of one removal
    "sam2": {"sam": 2.0},  # base, each fine-tuning step by adaptive SAM at ρ 2 (FT-SAM's)
    "sam05": {"sam": 0.5},  # the same at ρ 0.5
    "rr70s1": {"seed": 1},  # rr70 (defend's default) with fine-tuning seed 1: seed spread
    "aug": {"shift": 2, "flip": True},  # rr70 with augmented clean images (shift 2 px, flip)
    "augs1": {"shift": 2, "flip": True, "seed": 1},  # the same with fine-tuning seed 1
    "sh1s1": {"shift": 1, "seed": 1},  # shifts of up to 1 px only, no flips; seed 1
    "lk3": {},  # rr70 with each second look the median of 3 Neural Cleanse seeds (LOOK_SEEDS)
    "lk3s1": {"seed": 1},  # the same with fine-tuning seed 1
    "succ": {},  # rr70, the recovered trigger that works best on --data ranks first (BY_SUCCESS)
    "gen": {"adversarial": True},  # rr70, each trigger also as a GeneratorAdversary (ADVERSARY)
    "gens1": {"adversarial": True, "seed": 1},  # the same with fine-tuning seed 1
    "gena": {"adversarial": True},  # gen with the per-pixel affine change only (no conv path)
    "genf": {"adversarial": True},  # gen fixed after a warm-up of 5 passes (no re-attack)
    "genfs1": {"adversarial": True, "seed": 1},  # the same with fine-tuning seed 1
    # gena … gdb1s1 ran ONE round (they are not in DEFAULT_BASED: rounds 1, no second look),
    # although defend's default is two; dflt/dflts1 are the default as it is (2026-12-03)
    "gend": {},  # one round, genf's fitted generators only when the first trigger is not a patch
    "gends1": {"seed": 1},  # the same with fine-tuning seed 1
    "gdb1": {},  # gend with the generator's budget 1.0 × the trigger's change (GENERATOR)
    "gdb1s1": {"seed": 1},  # the same with fine-tuning seed 1
    "dflt": {},  # defend's default: rr70 (two rounds) with generalise "diffuse"
    "dflts1": {"seed": 1},  # the same with fine-tuning seed 1
    "dtts": {"trigger_teacher": "source"},  # dflt, stamped images distilled from their source
    # dflt, stamped images distilled from their source without the flagged target (the
    # known chain's "away" teacher, FineTuneSettings.trigger_teacher): dev first, 2026-12-03
    "dtta": {"trigger_teacher": "away"},
    "dttas1": {"trigger_teacher": "away", "seed": 1},  # the same with fine-tuning seed 1
    # dflt with generalise "broken": generators also when the patch that ranks the channels
    # sends under half of the defender's images to its label (2026-12-04, sixteenth session)
    "dbrk": {},
    "dbrks1": {"seed": 1},  # the same with fine-tuning seed 1
    "dfe40": {},  # dflt, the final fine-tune at 40 epochs (FINAL_EPOCHS)
    "dfe20": {},  # the same at 20
    "dfe80": {},  # the same at 80
    "dfe40s1": {"seed": 1},  # dfe40 with fine-tuning seed 1: the spread of one run
    # dfe40 with every fine-tune ending on the mean of its second half's end-of-epoch weights
    # (FineTuneSettings.average; thirty-third session)
    "dswa": {"average": 0.5},
    "dswas1": {"average": 0.5, "seed": 1},  # the same with fine-tuning seed 1
    # dfe40 with the clean-feature anchor (FineTuneSettings.anchor)
    "danc": {"anchor": 10.0},
    "dancs1": {"anchor": 10.0, "seed": 1},
    "danc80": {"anchor": 10.0},
    "dfsh": {"adversarial": True},  # dfe40, compact triggers also moved (ADVERSARY below)
    "dfshs1": {"adversarial": True, "seed": 1},
    "dfmg": {},  # dfe40, Neural Cleanse triggers completed again (RECOMPLETE below)
    "dfmgs1": {"seed": 1},
    "dfc2": {},
    "dfxs": {},  # dfe40, further triggers searched with the found ones forbidden (SEARCHES)
    "dfxss1": {"seed": 1},
}
RANK_UNION = {"un"}
SPREAD = {"sp05": 0.05, "sp10": 0.1, "sp10r": 0.1}
PGD_CE = {"pgd10", "pgd05"}
PGD_HITS = {"pgd10h", "pgdah"}
# defend --rounds 2: `rr` and its variants with the first look rule (a look used when its mask
# is below the unflagged labels' median), and the variants of the default `rr70` (0.7 × it:
# DefenceSettings.look_ratio, chosen on dev on 2026-12-02)
FIRST_RULE = ("rr", "rr20", "rrl")
DEFAULT_BASED = (
    *(
        "rr70",
        "cp70",
        "sp10r",
        "rr70s1",
        "aug",
        "augs1",
        "sh1s1",
        "lk3",
        "lk3s1",
        "succ",
        "gen",
        "gens1",
        "dflt",
        "dflts1",
        "dtts",
        "dtta",
        "dttas1",
        "dbrk",
        "dbrks1",
        "dfe40",
        "dfe20",
        "dfe80",
        "dfe40s1",
        "dswa",
        "dswas1",
        "danc",
        "dancs1",
        "danc80",
        "dfsh",
        "dfshs1",
        "dfmg",
        "dfmgs1",
        "dfc2",
        "dfxs",
        "dfxss1",
    ),
)
BY_SUCCESS = {"succ"}  # found triggers reordered by their success on the defender's data
ROUNDS: dict[str, int] = {v: 2 for v in FIRST_RULE + DEFAULT_BASED}
LOOK_RATIO: dict[str, float] = {v: 1.0 for v in FIRST_RULE} | {v: 0.7 for v in DEFAULT_BASED}
LOOK_SEEDS: dict[str, int] = {"lk3": 3, "lk3s1": 3}  # DefenceSettings.look_seeds
# DefenceSettings.generalise
GENERALISE = {
    v: "diffuse"
    for v in (
        *("gend", "gends1", "gdb1", "gdb1s1", "dflt", "dflts1", "dtts", "dtta", "dttas1"),
        *("dfe40", "dfe20", "dfe80", "dfe40s1", "dswa", "dswas1", "danc", "dancs1", "danc80"),
        *("dfsh", "dfshs1", "dfmg", "dfmgs1", "dfc2", "dfxs", "dfxss1"),
    )
} | {"dbrk": "broken", "dbrks1": "broken"}
GENERATOR: dict[str, dict[str, Any]] = {"gdb1": {"budget": 1.0}, "gdb1s1": {"budget": 1.0}}
CANDIDATES_UNLEARN: dict[str, bool] = {"cp": False, "cp70": False}
# DefenceSettings.final_epochs
FINAL_EPOCHS: dict[str, int] = {
    "dfe40": 40,
    "dfe20": 20,
    "dfe80": 80,
    "dfe40s1": 40,
    "dswa": 40,
    "dswas1": 40,
    "danc": 40,
    "dancs1": 40,
    "danc80": 80,
    "dfsh": 40,
    "dfshs1": 40,
    "dfmg": 40,
    "dfmgs1": 40,
    "dfc2": 40,
    "dfxs": 40,
    "dfxss1": 40,
}
# DefenceSettings.searches (defend --searches): further searches per flagged label with the
# triggers found so far forbidden; 0 for every variant before `dfxs` (the default since then)
SEARCHES: dict[str, int] = {"dfxs": 3, "dfxss1": 3}
# completion's (objective, grow) for the cached Neural Cleanse triggers and the second look
RECOMPLETE: dict[str, tuple[str, int]] = {
    "dfmg": ("margin", 2),
    "dfmgs1": ("margin", 2),
    "dfc2": ("ce", 2),
}
RATIO: dict[str, float] = {"ul3": 0.0, "ul1": 0.0, "ulA": 0.0, "ul3e20": 0.0}
ADVERSARY: dict[str, dict[str, Any]] = {
    "shift": {"step": 0.0},
    "dfsh": {"step": 0.0},
    "dfshs1": {"step": 0.0},
    "gen": {"form": "generator"},
    "gens1": {"form": "generator"},
    "gena": {"form": "generator", "hidden": 0},
    "genf": {"form": "generator", "warmup": 5, "refresh": False},
    "genfs1": {"form": "generator", "warmup": 5, "refresh": False},
}


def found_triggers(
    root: Path, name: str, model: Any, data: Any, *, any_build: bool = False
) -> tuple[list[Any], dict]:
    """``defend``'s reverse step (its CLI defaults), cached per model (:func:`zoo.recovered_dir`:
    NAME.npz, NAME.json); its report is written as results/NAME/reverse.json, and as the
    compact evidence/NAME.json when there is none or it was measured on other weights (the
    same numbers `zoo.py evidence` saves: trigger completion runs after the verdict and does
    not change them). ``any_build`` (--any-build): cached triggers recovered on another build
    of the recipe (other weights) are used, not searched again — a comparison of removal
    variants, each run from the same triggers, without minutes of recovery per model and
    machine; the rows record both builds."""
    from kerasaudit.stages.reverse import FoundTrigger, ReverseConfig, reverse_engineer

    out = zoo.results_dir(root, name)
    store = zoo.recovered_dir(root)
    arrays, meta = store / f"{name}.npz", store / f"{name}.json"
    sha = zoo.weights_of(root, name)
    if meta.exists() and json.loads(meta.read_text()).get("weights_sha256") != sha:
        if any_build:
            print(f"{name}: cached triggers were found on other weights; used (--any-build)")
        else:
            print(f"{name}: cached triggers were found on other weights; recovering again")
            meta.unlink()
    if not meta.exists():
        started = time.time()
        # defend's CLI defaults are ReverseConfig's (tests/test_defaults.py)
        result = reverse_engineer(model, data, config=ReverseConfig())
        found = result.found_triggers()
        report = result.to_dict()  # what `zoo.py evidence` writes: calibrate reads it
        report["zoo"] = {
            "exit_code": 1 if result.verdict.backdoor else 0,
            "seconds": round(time.time() - started, 1),
            "recipe": zoo.recipe_named(name).to_dict(),
            "source": "removal.found_triggers (defend's reverse, trigger completion on)",
            "weights_sha256": sha,
        }
        zoo._write_json(out / "reverse.json", report)  # these triggers' report
        if not zoo.evidence_current(root, name):  # none yet, or of other weights
            zoo.save_evidence(root, name, report)
        zoo.store_recovered(root, name, found, {
            "flagged": list(result.verdict.flagged),
            "all_to_all": result.verdict.all_to_all,
            "value_range": list(result.value_range),
            "seconds": round(time.time() - started, 1),
        })  # fmt: skip
    info = json.loads(meta.read_text())
    found = []
    with np.load(arrays) as f:
        for i, item in enumerate(info["found"]):
            found_trigger = FoundTrigger(
                item["stem"],
                item["label"],
                item["kind"],
                f[f"mask{i}"],
                f[f"pattern{i}"],
                f.get(f"delta{i}", None),
                f.get(f"flow{i}", None),
            )
            found.append(found_trigger)
    return found, info


def trigger_pairs(found: list[Any], value_range: Any) -> list[tuple[int | None, Any]]:
    """(label, stampable trigger) for each cached recovered trigger, as `defend` unlearns them
    (``kerasaudit.stages.defend.recovered_trigger``)."""
    from kerasaudit.stages.defend import recovered_trigger

    return [(f.label, recovered_trigger(f, (28, 28, 1), tuple(value_range))) for f in found]


def recomplete(model: Any, data: Any, found: list[Any], value_range: Any, config: Any) -> list[Any]:
    """Each targeted Neural Cleanse trigger of ``found`` completed again from its region (≥
    half its peak) with ``config``'s completion (a ReverseConfig; the others as they are)."""
    from kerasaudit.completion import complete_trigger
    from kerasaudit.triggers import half_peak_region

    x, _ = data.take_array(config.images)
    outputs = int(model.outputs[0].shape[-1])
    out = []
    for item in found:
        if item.kind.startswith("neural-cleanse") and item.label is not None and item.label >= 0:
            core = half_peak_region(item.mask).astype(np.float32)
            done = complete_trigger(
                model, x, item.label, core, item.pattern, tuple(value_range), outputs=outputs,
                config=config.completion(),
            )  # fmt: skip
            item = replace(item, mask=done.mask, pattern=done.pattern)
        out.append(item)
    return out


def reference_l1(root: Path, name: str, flagged: list[int], sha: str | None = None) -> float:
    """defend's second-look reference (``kerasaudit.stages.defend.reference_l1``) from the
    reverse report cached beside the triggers, or else from the model's compact evidence when
    that was measured on the weights ``sha`` the triggers were recovered on (--any-build on a
    machine that has not run the reverse step: the report is not in git, the evidence is)."""
    from kerasaudit.stages.defend import reference_l1 as median_unflagged

    path = zoo.results_dir(root, name) / "reverse.json"
    labels = None
    if path.exists():
        report = json.loads(path.read_text())
        if sha is None or report.get("zoo", {}).get("weights_sha256") in (None, sha):
            labels = report["labels"]
    if labels is None:
        evidence = zoo.evidence_dir(root) / f"{name}.json"
        if zoo.measured_on(evidence) != sha:
            raise SystemExit(f"{name}: no reverse report of the weights its triggers came from")
        labels = json.loads(evidence.read_text())["evidence"]["labels"]
    return median_unflagged({r["label"]: r["mask_l1"] for r in labels}, flagged)


def run(
    root: Path, name: str, variant: str, *, diagnose: bool = True, any_build: bool = False
) -> dict[str, Any]:
    from kerasaudit.stages.defend import DefenceSettings, remove_in_rounds
    from kerasaudit.stages.reverse import ReverseConfig

    recipe = zoo.recipe_named(name)
    model, data = zoo.load_case(root, recipe)
    found, info = found_triggers(root, name, model, data, any_build=any_build)
    before = zoo.original_eval(root, recipe)
    row: dict[str, Any] = {
        "model": name,
        "variant": variant,
        "flagged": info["flagged"],
        "all_to_all": info["all_to_all"],
        "accuracy_before": before["accuracy"],
        "asr_before": before["asr"],
        "reverse_seconds": info.get("seconds"),  # None: cached from defend --artifacts
        "weights_sha256": zoo.weights_of(root, name),
        # the build the triggers were recovered on (another one only with --any-build)
        "triggers_weights_sha256": info.get("weights_sha256"),
    }
    if not found:  # nothing flagged: defend leaves the model as it is
        return {**row, "unchanged": True}
    settings = DefenceSettings()
    settings = replace(settings, fine_tuning=replace(settings.fine_tuning, **VARIANTS[variant]))
    if variant in RATIO:
        settings = replace(settings, ratio=RATIO[variant])
    settings = replace(settings, rounds=ROUNDS.get(variant, 1))
    settings = replace(settings, look_ratio=LOOK_RATIO.get(variant, settings.look_ratio))
    settings = replace(settings, look_seeds=LOOK_SEEDS.get(variant, 1))
    settings = replace(settings, searches=SEARCHES.get(variant, 0))
    settings = replace(settings, candidates_unlearn=CANDIDATES_UNLEARN.get(variant, True))
    settings = replace(settings, rank_union=variant in RANK_UNION)
    settings = replace(settings, spread=SPREAD.get(variant, 0.0))
    settings = replace(settings, generalise=GENERALISE.get(variant, "never"))
    settings = replace(settings, final_epochs=FINAL_EPOCHS.get(variant))
    # the evaluation images measure the removal here: defend's verification (a second fine-tune
    # of the kept recipe, which leaves the model unchanged) would only cost time
    settings = replace(settings, verify=False)
    import kerasaudit.finetune as finetune_module
    from kerasaudit.adversary import AdversarySettings

    finetune_module.PGD_TEACHER = variant not in PGD_CE
    finetune_module.PGD_HITS_ONLY = variant in PGD_HITS
    finetune_module.AdversarySettings = functools.partial(  # type: ignore[misc,assignment]
        AdversarySettings, **ADVERSARY.get(variant, {})
    )
    finetune_module.GENERATOR_FIT = replace(LIBRARY_FIT, **GENERATOR.get(variant, {}))
    started = time.time()
    value_range = tuple(info["value_range"])
    if variant in BY_SUCCESS:
        x, y = data.take_array(1000)
        success = [
            recovered_asr(model, t, label, x, y) for label, t in trigger_pairs(found, value_range)
        ]
        order = sorted(range(len(found)), key=lambda i: -success[i])
        found = [found[i] for i in order]
        row["success_on_data"] = [round(success[i], 4) for i in order]
    config = ReverseConfig()
    if variant in RECOMPLETE:
        objective, grow = RECOMPLETE[variant]
        config = replace(config, completion_objective=objective, grow=grow)
        found = recomplete(model, data, found, value_range, config)
    if variant == "orul":  # a diagnosis: the real trigger is unlearnt too
        fixed, result = oracle_unlearning(root, name, model, data, found, settings, value_range)
        every, looks = list(found), list[Any]()
    else:
        fixed, result, every, looks = remove_in_rounds(
            model,
            data,
            found,
            settings,
            labels=info["flagged"],
            reference=(
                reference_l1(root, name, info["flagged"], info.get("weights_sha256"))
                if settings.rounds_run > 1
                else 0.0
            ),
            value_range=value_range,
            config=config,
            latest_first=variant == "rrl",
        )
    assert fixed is not None and result is not None
    seconds = time.time() - started
    triggers = trigger_pairs(every, value_range)
    if looks:
        row["second_looks"] = [look.to_dict() for look in looks]
    xe, ye = zoo.load_split(root, "eval")
    after = zoo.measure(fixed, recipe, xe, ye)
    tuned = result.fine_tune
    from kerasaudit.batchnorm import reestimated

    recal = reestimated(fixed, data)  # the BatchNorm check defend reports (batchnorm.py)
    if recal is not None:
        again = zoo.measure(recal, recipe, xe, ye)
        row["reestimated"] = {
            "accuracy": again["accuracy"],
            "asr": again["asr"],
            "recovered_asr": [recovered_asr(recal, t, lab, xe, ye) for lab, t in triggers],
            "recovered_asr_defended": [recovered_asr(fixed, t, lab, xe, ye) for lab, t in triggers],
        }
    return {
        **row,
        "reattack": reattack(fixed, model, data, triggers) if diagnose else None,
        "accuracy_after": after["accuracy"],
        "asr_after": after["asr"],
        "layer": list(result.choice.layers),
        "ratio": result.ratio,
        # the (layer, ratio) candidates measured on the defender's held-out quarter
        "candidates": [c.to_dict() for c in result.choice.candidates],
        "adversary_success": None if tuned is None else list(tuned.adversary_success),
        "pgd": None if tuned is None else tuned.pgd,
        "sam": None if tuned is None else tuned.sam,
        "augment": None if tuned is None else [tuned.shift, tuned.flip],
        "generators": None if tuned is None else tuned.generators,
        "seconds": round(seconds, 1),
    }


def oracle_unlearning(
    root: Path, name: str, model: Any, data: Any, found: list[Any], settings: Any, value_range: Any
) -> tuple[Any, Any]:
    """``orul``, not a defence (it uses the real trigger): base's removal — the recovered
    trigger ranks the channels and chooses the layer — with the real trigger unlearnt beside
    the recovered ones. Tells whether what survives ``defend`` is the layer choice or the
    unlearnt trigger's likeness to the real one."""
    from kerasaudit.ranking import Criterion
    from kerasaudit.stages.prune import prune

    real = zoo.known_trigger(root, zoo.recipe_named(name))
    recovered = [t for _, t in trigger_pairs(found, value_range)]
    return prune(
        model,
        data,
        criterion=Criterion.LINF_TRIGGER,
        ratio=settings.ratio,
        trigger=recovered[0],
        target=found[0].label,
        fine_tuning=settings.fine_tuning,
        max_acc_drop=settings.max_acc_drop,
        unlearn_with=[*recovered, real],
    )


def recovered_asr(model: Any, trigger: Any, label: int | None, x: Any, y: Any) -> float:
    """A recovered trigger's ASR on the evaluation images (untargeted: sent off their class)."""
    keep = y != label if label is not None else np.ones(len(y), bool)
    pred = zoo.predict(model, trigger.apply(x[keep]))
    hit = pred == label if label is not None else pred != y[keep]
    return float(np.mean(hit))


def reattack(defended: Any, original: Any, data: Any, triggers: list[Any]) -> list[Any]:
    """Diagnosis: how well each recovered trigger, re-optimised against a model for 200 steps
    (defender's images; the adversary of kerasaudit/adversary.py, not moved around), still
    attacks the defended model — and the original, for scale. Its success on the last 50."""
    from kerasaudit.adversary import AdversarySettings, UniversalAdversary
    from kerasaudit.finetune import _log_scores

    x, y = data.take_array(1000)
    rng = np.random.default_rng(0)
    out = []
    for label, trigger in triggers:
        pair = []
        for model in (defended, original):
            adversary = UniversalAdversary(
                trigger, label, _log_scores(model), (0.0, 1.0), AdversarySettings(shift=0.0)
            )
            hits = []
            for _ in range(200):
                idx = rng.choice(len(x), 64, replace=False)
                hits.append(adversary.update(x[idx], y[idx]))
            pair.append(round(float(np.mean(hits[-50:])), 4))
        out.append({"label": label, "defended": pair[0], "original": pair[1]})
    return out


def table(rows: list[dict[str, Any]], only: list[str] | None = None) -> str:
    """Markdown: one row per model, one column per variant (``only``: these; ASR after /
    accuracy change); ✓ where every trigger's ASR ≤ 2 % at ≤ 1.5 points lost; ° where the
    cell was measured on another build of the model than its newest row."""
    latest: dict[tuple[str, str], dict[str, Any]] = {}
    newest: dict[str, dict[str, Any]] = {}
    for row in rows:
        latest[(row["model"], row["variant"])] = row
        newest[row["model"]] = row
    variants = [v for v in only or VARIANTS if any(k[1] == v for k in latest)]
    models = list(dict.fromkeys(k[0] for k in latest if k[1] in variants))
    lines = [
        "| model | flagged | ASR before | accuracy before | " + " | ".join(variants) + " |",
        "| --- | --- | --- | --- | " + " | ".join("---" for _ in variants) + " |",
    ]
    for name in models:
        first = next(latest[(name, v)] for v in variants if (name, v) in latest)
        asr0 = " / ".join(f"{100 * a:.1f} %" for a in first["asr_before"])
        cells = []
        for v in variants:
            cell = latest.get((name, v))
            if cell is None or cell.get("unchanged"):
                cells.append("–" if cell is None else "✗ unchanged")
                continue
            drop = 100 * (cell["accuracy_before"] - cell["accuracy_after"])
            ok = _meets(cell)
            asr = " / ".join(f"{100 * a:.2f} %" for a in cell["asr_after"])
            older = "" if zoo.same_build(cell, newest[name]) else " °"
            cells.append(f"{'✓' if ok else '✗'} {asr} / {0.0 - drop:+.2f}{older}")
        flagged = ", ".join(map(str, first["flagged"])) or (
            "all-to-all" if first.get("all_to_all") else "nothing"
        )
        lines.append(
            f"| {name} | {flagged} | {asr0} | {100 * first['accuracy_before']:.2f} % | "
            + " | ".join(cells)
            + " |"
        )
    summary = halves(latest, variants)
    return "\n".join(lines + (["", *summary] if summary else [])) + "\n"


def _meets(row: dict[str, Any] | None) -> bool:
    if row is None or row.get("unchanged"):
        return False
    drop = round(100 * (row["accuracy_before"] - row["accuracy_after"]), 6)
    return max(row["asr_after"]) <= zoo.GOAL_ASR and drop <= zoo.GOAL_DROP


def paired(latest: dict[tuple[str, str], dict[str, Any]], first: str, second: str) -> list[str]:
    """The models whose latest ``first`` and ``second`` rows were measured on the same build."""
    return sorted(
        m
        for m, v in latest
        if v == first
        and (m, second) in latest
        and zoo.same_build(latest[(m, first)], latest[(m, second)])
    )


def halves(latest: dict[tuple[str, str], dict[str, Any]], variants: list[str]) -> list[str]:
    """Each variant against ``base`` on the models both ran on (on the same build), per fixed
    half (``zoo.split``: choose on dev, report on test): how many meet the goal."""
    lines = []
    zoo_models = {r.name for r in zoo.RECIPES}
    for v in variants:
        if v == "base":
            continue
        both = [m for m in paired(latest, v, "base") if m in zoo_models]
        parts = []
        for half in ("dev", "test"):
            some = [m for m in both if zoo.split(m) == half]
            if some:
                base = sum(_meets(latest[(m, "base")]) for m in some)
                mine = sum(_meets(latest[(m, v)]) for m in some)
                parts.append(f"{half} {base} → {mine} of {len(some)}")
        if parts:
            lines.append(f"- base → {v}, within the goal: {', '.join(parts)}")
    return lines + seed_means(latest, variants)


# Variants that differ only in the fine-tuning seed (0, 1): their counts are reported together
SEED_PAIRS = {
    **{"rr70": "rr70s1", "lk3": "lk3s1", "aug": "augs1"},
    **{
        "gen": "gens1",
        "genf": "genfs1",
        "gend": "gends1",
        "gdb1": "gdb1s1",
        "dflt": "dflts1",
        "dtta": "dttas1",
        "dbrk": "dbrks1",
        "dfe40": "dfe40s1",
        "dswa": "dswas1",
        "danc": "dancs1",
        "dfsh": "dfshs1",
        "dfmg": "dfmgs1",
    },
}


def seed_means(latest: dict[tuple[str, str], dict[str, Any]], variants: list[str]) -> list[str]:
    """For each :data:`SEED_PAIRS` pair in ``variants``: per half, on the models both seeds ran
    on (on the same build), how many meet the goal with each seed and their mean (one run is
    one seed's draw)."""
    lines = []
    for first, second in SEED_PAIRS.items():
        if first not in variants or second not in variants:
            continue
        both = paired(latest, first, second)
        parts = []
        for half in ("dev", "test"):
            some = [m for m in both if zoo.split(m) == half]
            if some:
                counts = [sum(_meets(latest[(m, v)]) for m in some) for v in (first, second)]
                parts.append(
                    f"{half} {counts[0]}, {counts[1]} of {len(some)} (mean {sum(counts) / 2:g})"
                )
        if parts:
            lines.append(f"- {first} / {second} (seeds 0, 1), within the goal: {', '.join(parts)}")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=[], help="(--table: only these rows)")
    parser.add_argument("--table", action="store_true", help="print the cached rows as markdown")
    parser.add_argument(
        "--variants", nargs="+", choices=VARIANTS, help="default: base adv (--table: all)"
    )
    parser.add_argument("--dir", help="zoo directory (default benchmarks/zoo/build)")
    parser.add_argument(
        "--no-reattack", action="store_true", help="skip the re-attack diagnostic (~1 min a model)"
    )
    parser.add_argument(
        "--any-build",
        action="store_true",
        help="use cached triggers recovered on another build of the model (found_triggers)",
    )
    parser.add_argument("--rows", help="JSON-lines file of rows (default: zoo.removal_rows)")
    args = parser.parse_args()
    zoo.this_checkout()
    root = zoo.zoo_dir(args.dir)
    out = Path(args.rows) if args.rows else zoo.removal_rows(root)
    out.parent.mkdir(parents=True, exist_ok=True)
    if args.table:
        rows = [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []
        if args.models:  # only these models (a section of removal.md)
            rows = [r for r in rows if r["model"] in args.models]
        print(table(rows, args.variants), end="")
        return 0
    if not args.models:
        parser.error("give --models (or --table)")
    for name in args.models:
        for variant in args.variants or ["base", "adv"]:
            row = run(root, name, variant, diagnose=not args.no_reattack, any_build=args.any_build)
            zoo.append_row(out, row)
            if row.get("unchanged"):
                print(f"{name:24} {variant:7} nothing flagged: unchanged", flush=True)
                continue
            drop = 100 * (row["accuracy_before"] - row["accuracy_after"])
            asr = " / ".join(f"{100 * a:.2f} %" for a in row["asr_after"])
            where = f"{row['layer']} {row['ratio']}"
            print(f"{name:24} {variant:7} flagged {row['flagged']} Δacc {-drop:+.2f}  ASR {asr}"
                  f"  {where}  {row['seconds']:.0f} s", flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""A development set for removal on LeNets (2026-12-06, twenty-eighth session) and separable
nets (twenty-ninth session).

The known-trigger chain misses every held-out LeNet trigger (``ho_``, ``ho3_``, ``ho5_``;
above what never-poisoned LeNets do with the same triggers), and the zoo has one LeNet backdoor
only (``badnets_w4_mid_lenet``, a patch). Changes to the chain for LeNets are tried on these
models, never on the held-out ones, which then test what was adopted. They share the zoo's code
(architectures, attacks, training), with seeds no zoo or held-out recipe has; none of them is
in ``RECIPES`` (the zoo's dev/test halves stay as they were) or in ``heldout.HELD_OUT``.

    python benchmarks/zoo/devset.py build                 # train into benchmarks/zoo/build-dev
    python benchmarks/zoo/zoo.py known --dir benchmarks/zoo/build-dev [--tag T --extra "…"]
    python benchmarks/zoo/devset.py table                 # every known*.json against the floor
    python benchmarks/zoo/devset.py estimate --tag vf     # the accuracy estimates (--verify)

The floor of a trigger is the mean ASR of the set's two clean models of its architecture with it
(``zoo.on_twins``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from attacks import Attack, Clean, Trigger  # noqa: E402
from recipes import Recipe, _badnets, _patch  # noqa: E402

BUILD = HERE / "build-dev"

DEVELOPMENT: tuple[Recipe, ...] = (
    Recipe(
        "dv_blend_a12_shirt_lenet",
        "lenet",
        Attack("blend", (Trigger("blend", 6, alpha=0.12, seed=61),), rate=0.08),
        1001,
    ),
    Recipe(
        "dv_blend_a10_dress_lenet",
        "lenet",
        Attack("blend", (Trigger("blend", 3, alpha=0.10, seed=62),), rate=0.08),
        1002,
        "h5",
    ),
    Recipe(
        "dv_blend_a15_coat_lenet",
        "lenet",
        Attack("blend", (Trigger("blend", 4, alpha=0.15, seed=63),), rate=0.08),
        1003,
    ),
    Recipe("dv_badnets_w3_shirt_lenet", "lenet", _badnets(_patch(3, 25, 0, 6)), 1004),
    Recipe(
        "dv_sig_pullover_lenet",
        "lenet",
        Attack("sig", (Trigger("sig", 2, delta=0.12, freq=6),)),
        1005,
        "h5",
    ),
    Recipe(
        "dv_patch_blend_lenet",
        "lenet",
        Attack(
            "two-trigger",
            (_patch(3, 0, 25, 6, "grey", 0.8), Trigger("blend", 0, alpha=0.12, seed=64)),
            rate=0.08,
        ),
        1006,
    ),
    Recipe("dv_clean_lenet_a", "lenet", Clean(), 1011),
    Recipe("dv_clean_lenet_b", "lenet", Clean(), 1012, "h5"),
    # Separable nets (twenty-ninth session): the chain's misses there are by accuracy (the
    # held-out blend and SIG lose 2.89 and 1.74 points; every candidate loses 3-7 held out)
    Recipe(
        "dv_blend_a15_trouser_sep",
        "sepconv",
        Attack("blend", (Trigger("blend", 1, alpha=0.15, seed=65),), rate=0.08),
        1013,
    ),
    Recipe(
        "dv_sig_sneaker_sep",
        "sepconv",
        Attack("sig", (Trigger("sig", 7, delta=0.12, freq=6),)),
        1014,
        "h5",
    ),
    Recipe("dv_badnets_g3_coat_sep", "sepconv", _badnets(_patch(3, 0, 0, 4, "grey", 0.8)), 1015),
    Recipe("dv_clean_sep_a", "sepconv", Clean(), 1016),
    Recipe("dv_clean_sep_b", "sepconv", Clean(), 1017, "h5"),
)


def build(names: list[str]) -> None:
    import zoo

    zoo.ensure_data(BUILD)
    for recipe in DEVELOPMENT:
        if (names and recipe.name not in names) or (
            BUILD / "models" / f"{recipe.name}.json"
        ).exists():
            continue
        zoo.log(f"training {recipe.name}")
        info = zoo.train(recipe, BUILD)
        zoo.log(f"{recipe.name}: acc {info['eval']['accuracy']:.4f} asr {info['eval']['asr']}")


def table(names: list[str]) -> int:
    """Per backdoored model and cached known-trigger result (``results/NAME/known*.json``):
    each trigger's ASR and the accuracy change, ✓ within the goal, and whether each trigger is
    at most max(2 %, its floor); then, per result kind, the counts."""
    import zoo

    clean = [r for r in DEVELOPMENT if not r.attack.triggers]
    counts: dict[str, list[int]] = {}  # suffix → [models, within the goal, triggers, at floor]
    for recipe in DEVELOPMENT:
        if (names and recipe.name not in names) or not recipe.attack.triggers:
            continue
        floors = zoo.floor(BUILD, recipe, [r for r in clean if r.arch == recipe.arch])
        shown = " / ".join(f"{100 * f:.2f}" for f in floors)
        print(f"{recipe.name} (targets {list(recipe.attack.targets)}; floor {shown} %)")
        for cached in sorted(zoo.results_dir(BUILD, recipe.name).glob("known*.json")):
            suffix = cached.name[len("known") : -len(".json")] or "(chain)"
            result = json.loads(cached.read_text())
            before, after = result["before"], result["after"]
            if after is None:
                print(f"  {suffix:24} nothing written")
                continue
            lost = 100 * (before["accuracy"] - after["accuracy"])
            met = zoo.within_goal(max(after["asr"]), lost)
            bars = [max(zoo.GOAL_ASR, f) for f in floors]
            at_floor = [a <= bar for a, bar in zip(after["asr"], bars, strict=True)]
            asr = " / ".join(f"{100 * a:5.2f}" for a in after["asr"])
            marks = "".join("f" if ok else "-" for ok in at_floor)
            print(f"  {suffix:24} {-lost:+.2f} points, ASR {asr} % {'✓' if met else '✗'} "
                  f"floor {marks} ({result['seconds']:.0f} s)")  # fmt: skip
            c = counts.setdefault(suffix, [0, 0, 0, 0])
            c[0] += 1
            c[1] += met
            c[2] += len(at_floor)
            c[3] += sum(ok and round(lost, 6) <= zoo.GOAL_DROP for ok in at_floor)
    for suffix, (models, n_met, triggers, n_floor) in counts.items():
        print(f"{suffix:24} within the goal {n_met} of {models}; triggers at most max(2 %, floor) "
              f"within the budget {n_floor} of {triggers}")  # fmt: skip
    return 0


def estimate(names: list[str], tag: str | None) -> int:
    """``heldout.py estimate`` for this set's cached results (``results/NAME/known[.TAG].json``):
    each estimate of the accuracy cost against the loss on the evaluation images."""
    import heldout
    import zoo

    suffix = f".{tag}" if tag else ""
    rows = []
    for recipe in DEVELOPMENT:
        path = zoo.results_dir(BUILD, recipe.name) / f"known{suffix}.json"
        if (not names or recipe.name in names) and path.exists():
            rows.append(heldout.compact_known(recipe.name, json.loads(path.read_text())))
    return heldout.report_estimates(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("build", "table", "estimate"))
    parser.add_argument("names", nargs="*")
    parser.add_argument("--tag", help="estimate: the variant's rows (results/NAME/known.TAG.json)")
    args = parser.parse_args()
    if args.command == "build":
        build(args.names)
        return 0
    if args.command == "estimate":
        return estimate(args.names, args.tag)
    return table(args.names)


if __name__ == "__main__":
    raise SystemExit(main())

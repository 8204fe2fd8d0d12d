"""Run the CLI on the externally trained models the way the issue's judge would.

For every model that ``train.py`` built (``BUILD/models/NAME.json``):

* ``kerasaudit defend MODEL -d data/defender.npz -o OUT`` with its defaults (no trigger known):
  the exit code, the flagged labels, whether anything was written;
* for a backdoored model, the known-trigger chain the README recommends, once, with its
  documented options: ``kerasaudit prune MODEL -d data/defender.npz -t SPEC --target K -c
  linf-trigger --ratio auto --fine-tune-epochs 20 --unlearn --distill 0.8 --extend-to 160 -o
  OUT`` (a trigger no spec expresses — blend, SIG, warp, random position — as
  ``--trigger-data``: the defender's own non-target images carrying it; all-to-all without
  ``--target``; a second trigger as ``--also-unlearn`` or ``--also-unlearn-data``, with
  ``--fine-tune-epochs 40``);
* every model (original, defended, pruned) measured with ``train.py``'s own stamping on the
  9,000 evaluation images no defence saw: clean accuracy and each real trigger's ASR
  (non-target images sent to the target; all-to-all: images sent to y + 1).

    python benchmarks/external/judge.py [--build DIR] [--only NAME…] [--stage defend known]
    python benchmarks/external/judge.py --table   # results.md from the cached runs
    python benchmarks/external/judge.py --per-class [--only NAME…]  # where accuracy went

Results are cached per model and stage in ``benchmarks/external/results/NAME/STAGE.json``
(kept in git, with the model's recipe and the SHA-256 of the weights measured; ``--force``
reruns); ``--table`` writes ``benchmarks/external/results.md`` from them, no build needed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
sys.path.insert(0, str(HERE))

import train  # noqa: E402  (this directory's trainer: its stamping is the judge's)

sys.path.insert(0, str(HERE.parent / "zoo"))
from zoo import KNOWN_CHAIN, TWO_TRIGGER_EPOCHS, this_checkout  # noqa: E402
from zoo import kerasaudit as cli  # noqa: E402  (runs the CLI: the zoo's runner, not its models)

CHAIN = KNOWN_CHAIN  # the README's known-trigger chain, as the zoo runs it
SPECS = {  # the patch triggers as the defender would state them (checked by --check-specs)
    "checker_br": "patch:size=4,pos=br,value=1,pattern=checker",
    "checker_tr": "patch:size=4,pos=tr,value=1,pattern=checker",
    "square_tl": "patch:size=3,pos=1,1,value=1",
    "grey_bl": "patch:size=3,pos=1,24,value=0.7",
    "white_mr": "patch:size=4,pos=23,12,value=1",
}
GOAL_ASR, GOAL_DROP = 0.02, 0.015


def log(text: str) -> None:
    print(time.strftime("%H:%M:%S"), text, file=sys.stderr, flush=True)


def measure(path: Path, spec: dict[str, Any], ev: dict[str, np.ndarray]) -> dict:
    """Clean accuracy and (backdoored models) each real trigger's ASR (``asr``, a second
    trigger's ``asr2``), with plain Keras."""
    import keras

    model = keras.models.load_model(path, compile=False)
    pred = np.argmax(model.predict(ev["x"], batch_size=500, verbose=0), axis=1)
    out: dict[str, Any] = {"accuracy": float(np.mean(pred == ev["y"]))}
    for key, (trigger, target) in zip(("asr", "asr2"), train.Spec(**spec).triggers(), strict=False):
        out[key] = train.asr(model, ev, trigger, target)
        if target >= 0:  # all-to-all: no one target
            share = float(np.mean(pred[ev["y"] != target] == target))
            out[key.replace("asr", "unstamped_to_target")] = share
    return out


def asrs(measured: dict[str, Any]) -> list[float]:
    return [measured[k] for k in ("asr", "asr2") if k in measured]


# `defend` as the judge runs it (defaults), and probes of a setting that is not the default
# (--stage defend-broken: not in the table, which shows the defaults)
DEFEND_STAGES: dict[str, list[str]] = {"defend": [], "defend-broken": ["--generalise", "broken"]}


def trigger_file(build: Path, trig: str, target: int) -> Path:
    """The defender's non-target images carrying ``trig``, with their true labels."""
    path = build / "data" / f"{trig}.to{target}.trigger.npz"
    if not path.exists():
        d = np.load(build / "data" / "defender.npz")
        keep = d["y"] != target
        np.savez_compressed(path, x=train.stamp(d["x"][keep], trig, seed=2), y=d["y"][keep])
    return path


def trigger_args(build: Path, spec: dict[str, Any]) -> list[str]:
    """The known trigger(s) as the README's chain takes them: the first ranks the channels, a
    second is unlearnt too (``--also-unlearn``)."""
    (trig, target), *more = train.Spec(**spec).triggers()
    aim = ["--target", str(target)] if target >= 0 else []  # all-to-all: untargeted
    if trig in SPECS:
        args = ["--trigger", SPECS[trig], *aim]
    else:
        args = ["--trigger-data", str(trigger_file(build, trig, target)), *aim]
    for trig2, target2 in more:
        if trig2 in SPECS:
            args += ["--also-unlearn", SPECS[trig2]]
        else:
            args += ["--also-unlearn-data", str(trigger_file(build, trig2, target2))]
    return args


def longer(spec: dict[str, Any]) -> list[str]:
    """With a second known trigger the README's chain fine-tunes 40 epochs, not 20 (after
    ``CHAIN``: the later option wins)."""
    more = len(train.Spec(**spec).triggers()) > 1
    return ["--fine-tune-epochs", str(TWO_TRIGGER_EPOCHS)] if more else []


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run(
    build: Path, results: Path, info: dict[str, Any], stages: list[str], force: bool, ev
) -> None:
    spec = info["spec"]
    name, fmt = spec["name"], spec["fmt"]
    model = build / "models" / f"{name}.{fmt}"
    out = results / name
    work = build / "results" / name  # defended / pruned models and CLI logs (not in git)
    out.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    trigger = spec["trigger"]
    weights = sha256(model)
    before: dict[str, Any] | None = None
    data = str(build / "data" / "defender.npz")
    for stage in stages:
        cached = out / f"{stage}.json"
        if stage == "known" and trigger is None:
            continue
        if cached.exists() and not force:
            if json.loads(cached.read_text()).get("weights_sha256") == weights:
                continue
            log(f"{name} {stage}: cached run was of other weights; running again")
        if before is None:
            before = measure(model, spec, ev)
        written = work / f"{stage}.{fmt}"
        written.unlink(missing_ok=True)
        log(f"{stage} {name}")
        if stage in DEFEND_STAGES:
            args = ["defend", str(model), "-d", data, "-o", str(written), *DEFEND_STAGES[stage]]
        else:
            args = ["prune", str(model), "-d", data, *trigger_args(build, spec), *CHAIN,
                    *longer(spec), "-o", str(written)]  # fmt: skip
        code, report, seconds = cli(args, work / f"{stage}.log")
        seconds = round(seconds, 1)
        result = {
            "spec": spec,
            "weights_sha256": weights,
            "exit_code": code,
            "seconds": seconds,
            "flagged": None if report is None else report.get("flagged"),
            "all_to_all": None if report is None else report.get("all_to_all"),
            "written": written.exists(),
            "before": before,
            "after": measure(written, spec, ev) if written.exists() else None,
            "report": report,
        }
        cached.write_text(json.dumps(result, indent=1) + "\n")
        after = result["after"]
        log(f"{name} {stage}: exit {code}, flagged {result['flagged']}, "
            f"{'nothing written' if after is None else after} ({seconds:.0f} s)")  # fmt: skip


def pct(value: float) -> str:
    return f"{100 * value:.2f} %"


def cell(result: dict[str, Any] | None, backdoored: bool) -> str:
    if result is None:
        return "not run"
    after, before = result["after"], result["before"]
    if after is None:
        return f"unchanged (exit {result['exit_code']})"
    drop = after["accuracy"] - before["accuracy"]
    if not backdoored:
        return f"{pct(after['accuracy'])} ({100 * drop:+.2f})"
    ok = max(asrs(after)) <= GOAL_ASR and -drop <= GOAL_DROP
    shown = " / ".join(pct(a) for a in asrs(after))
    return f"{'✓' if ok else '✗'} {shown} / {100 * drop:+.2f}"


def table(results: Path) -> str:
    head = [
        "Written by `python benchmarks/external/judge.py --table` from `results/NAME/*.json`: the",
        "models of `train.py` (code apart from the zoo's), the CLI with its defaults as the judge",
        "runs it, 1,000 defender images, every number on the 9,000 evaluation images no defence",
        "saw (one run each; seconds with two to five processes sharing 2 CPU cores).",
    ]
    columns = [
        "| model | trigger → target | accuracy / ASR before | `defend`: exit, flagged | "
        "`defend` after (ASR / Δ points) | known chain after | seconds (defend, known) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    sets: dict[str, tuple[list[str], dict[str, int]]] = {}
    for folder in sorted(p for p in results.iterdir() if p.is_dir()):
        res = {}
        for stage in ("defend", "known"):
            path = folder / f"{stage}.json"
            res[stage] = json.loads(path.read_text()) if path.exists() else None
        spec = next((r["spec"] for r in res.values() if r is not None), None)
        if spec is None:
            continue
        which = "first" if spec["name"] in train.FIRST_SET else "second"
        rows, counts = sets.setdefault(which, ([], dict.fromkeys(COUNTS, 0)))
        d, k = res["defend"], res["known"]
        planted = train.Spec(**spec).triggers()
        backdoored = bool(planted)
        before = (d or k or {}).get("before") or {}
        flagged = "not run" if d is None else f"{d['exit_code']}, {d['flagged'] or 'nothing'}"
        if d is not None and d.get("all_to_all"):
            flagged += " + all-to-all"
        if d is not None:
            labels = d["flagged"] or []
            if backdoored:
                targets = {target for _, target in planted}
                counts["bd"] += 1
                counts["detected"] += (  # every target; all-to-all: reported as a backdoor
                    targets <= set(labels) if min(targets) >= 0 else d["exit_code"] == 1
                )
                counts["defend"] += cell(d, True).startswith("✓")
            else:
                counts["clean"] += 1
                counts["clean_ok"] += d["exit_code"] == 0 and not labels and not d["written"]
        if k is not None:
            counts["known"] += cell(k, True).startswith("✓")
        trig = ", ".join(f"{t} → {aim if aim >= 0 else 'y + 1'}" for t, aim in planted) or "clean"
        acc = pct(before["accuracy"]) if before else "?"
        if backdoored and before:
            acc += "".join(f" / {pct(a)}" for a in asrs(before))
        secs = ", ".join(str(r["seconds"]) for r in (d, k) if r is not None)
        rows.append(
            f"| {spec['name']} ({spec['arch']}, .{spec['fmt']}) | {trig} | {acc} | {flagged} | "
            f"{cell(d, backdoored)} | {cell(k, True) if backdoored else '—'} | {secs} |"
        )
    out = head
    for which in ("first", "second"):
        if which not in sets:
            continue
        rows, counts = sets[which]
        out += ["", f"**{SET_TITLES[which]}**", "", *columns, *rows, "", summary(counts)]
    return "\n".join(out) + "\n"


COUNTS = ("clean_ok", "clean", "detected", "bd", "defend", "known")
SET_TITLES = {
    "first": "The issue's eight (patches in fixed places, one blend)",
    "second": "The second set (2026-12-04, trained after every default was fixed): SIG, warp, "
    "random position, all-to-all, two triggers, 1 % poisoning, a residual net",
}


def summary(counts: dict[str, int]) -> str:
    return (
        f"Clean models left alone (exit 0, nothing flagged, nothing written): "
        f"{counts['clean_ok']} of {counts['clean']}. Backdoored models flagged at their target "
        f"(every target; all-to-all: exit 1): {counts['detected']} of {counts['bd']}; `defend` "
        f"within the goal (ASR ≤ 2 % at ≤ 1.5 points): {counts['defend']} of {counts['bd']}; "
        f"known-trigger chain within the goal: {counts['known']} of {counts['bd']}."
    )


def per_class(build: Path, names: list[str]) -> int:
    """Where the accuracy went: each class's accuracy change (points) after ``defend`` and the
    known chain, and the change in how often each class is predicted, on the evaluation images
    (the written models in ``BUILD/results/NAME``, against the original)."""
    import keras

    d = np.load(build / "data" / "eval.npz")
    x, y = d["x"], d["y"]
    for meta in sorted((build / "models").glob("*.json")):
        spec = json.loads(meta.read_text())["spec"]
        name, fmt = spec["name"], spec["fmt"]
        if names and name not in names:
            continue
        original = keras.models.load_model(build / "models" / f"{name}.{fmt}", compile=False)
        before = np.argmax(original.predict(x, batch_size=500, verbose=0), axis=1)
        print(f"{name} (targets {[k for _, k in train.Spec(**spec).triggers()]}): class 0-9")
        for stage in ("defend", "known"):
            path = build / "results" / name / f"{stage}.{fmt}"
            if not path.exists():
                continue
            model = keras.models.load_model(path, compile=False)
            after = np.argmax(model.predict(x, batch_size=500, verbose=0), axis=1)
            acc = [np.mean(after[y == c] == c) - np.mean(before[y == c] == c) for c in range(10)]
            share = [np.mean(after == c) - np.mean(before == c) for c in range(10)]
            total = np.mean(after == y) - np.mean(before == y)
            print(f"  {stage:6s} accuracy Δ " + " ".join(f"{100 * v:+5.1f}" for v in acc)
                  + f"   all {100 * total:+.2f}")  # fmt: skip
            print(f"  {stage:6s} predicted Δ" + " ".join(f"{100 * v:+5.1f}" for v in share))
    return 0


def check_specs(build: Path) -> int:
    """The spec strings stamp exactly what train.py stamps (else the chain gets another trigger)."""
    from kerasaudit.triggers import load_trigger

    d = np.load(build / "data" / "defender.npz")
    bad = 0
    for trig, text in SPECS.items():
        ours = train.stamp(d["x"][:50], trig)
        theirs = np.asarray(load_trigger(text, (28, 28, 1)).apply(d["x"][:50]))
        same = np.allclose(ours, theirs)
        bad += not same
        print(f"{trig}: {text} {'matches' if same else 'DIFFERS'}")
    return 1 if bad else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--build", type=Path, default=HERE / "build")
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--only", nargs="*")
    parser.add_argument(
        "--stage", nargs="*", default=["defend", "known"], choices=[*DEFEND_STAGES, "known"]
    )
    parser.add_argument("--force", action="store_true")
    parser.add_argument("--table", action="store_true")
    parser.add_argument("--check-specs", action="store_true")
    parser.add_argument(
        "--per-class", action="store_true", help="each class's accuracy change (--only: these)"
    )
    args = parser.parse_args()
    this_checkout()
    if args.check_specs:
        return check_specs(args.build)
    if args.per_class:
        return per_class(args.build, args.only or [])
    if args.table:
        text = table(args.results)
        if args.results.resolve() == RESULTS.resolve():  # another --results: printed only
            (HERE / "results.md").write_text(text)
        print(text)
        return 0
    d = np.load(args.build / "data" / "eval.npz")
    ev = {"x": d["x"], "y": d["y"]}
    for meta in sorted((args.build / "models").glob("*.json")):
        info = json.loads(meta.read_text())
        if args.only and info["spec"]["name"] not in args.only:
            continue
        run(args.build, args.results, info, args.stage, args.force, ev)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

#!/usr/bin/env python3
"""Efficacy table of the README: each criterion at the ratio `sweep` recommends.

Usage (from the repository root; ~12 minutes on 2 CPU cores)::

    python benchmarks/efficacy.py [--model sample_models/fmnist_badnets.keras]

Runs only public CLI commands, so every number can be reproduced by hand:
1. ``kerasaudit sweep MODEL -d fmnist_val.npz --trigger T --target 0`` (the defender's 2,000
   images) recommends, per criterion, a layer and ratio (lowest ASR within 1.5 points of
   accuracy, then the smallest ratio);
2. ``kerasaudit prune MODEL -d fmnist_val.npz --eval-data fmnist_test.npz -c C --layer L
   --ratio R`` applies each recommendation and measures it on the 5,000 held-out images;
3. ``sweep ... -c BEST --layer L --fine-tune-epochs 5 --unlearn`` re-sweeps the best criterion
   and layer with every point fine-tuned (measured on a held-out quarter of fmnist_val), and
   its recommendation is applied with ``prune ... --fine-tune-epochs 5 --unlearn``.
Prints a Markdown table and writes JSON to benchmarks/results/.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "sample_models"
RESULTS = ROOT / "benchmarks" / "results"


def run(args: list[str]) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "kerasaudit", *args, "-f", "json", "-q"]
    print("$ kerasaudit " + " ".join(args), file=sys.stderr, flush=True)
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, check=False)
    if done.returncode not in (0, 1):
        raise SystemExit(f"command failed ({done.returncode}): {done.stderr}")
    return json.loads(done.stdout)


def pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.2f} %"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(SAMPLES / "fmnist_badnets.keras"))
    parser.add_argument("--epochs", type=int, default=5)
    args = parser.parse_args()
    trigger = (SAMPLES / "trigger.txt").read_text().strip()
    val, test = str(SAMPLES / "fmnist_val.npz"), str(SAMPLES / "fmnist_test.npz")
    common = ["--trigger", trigger, "--target", "0"]
    sweep = run(["sweep", args.model, "-d", val, *common])
    rows = []
    for criterion, point in sweep["recommended"].items():
        if point is None:
            rows.append({"criterion": criterion, "recommended": None})
            continue
        prune_args = [
            "prune",
            args.model,
            "-d",
            val,
            "--eval-data",
            test,
            *common,
            "-c",
            criterion,
            "--layer",
            point["layer"],
            "--ratio",
            str(point["ratio"]),
        ]
        result = run(prune_args)
        rows.append(
            {
                "criterion": criterion,
                "recommended": point,
                "fine_tuned": False,
                "command": "kerasaudit " + " ".join(prune_args),
                "before": result["before"],
                "after": result["after_prune"],
            }
        )
    best = sweep["best"]
    if best is not None:
        # Pruning will be followed by fine-tuning: sweep that criterion and layer again with
        # every point fine-tuned (and measured on a held-out quarter of --data).
        tuned_sweep = run(
            [
                "sweep",
                args.model,
                "-d",
                val,
                *common,
                "-c",
                best["criterion"],
                "--layer",
                best["layer"],
                "--fine-tune-epochs",
                str(args.epochs),
                "--unlearn",
            ]
        )
        pick = tuned_sweep["best"]
        if pick is not None:
            prune_args = [
                "prune",
                args.model,
                "-d",
                val,
                "--eval-data",
                test,
                *common,
                "-c",
                pick["criterion"],
                "--layer",
                pick["layer"],
                "--ratio",
                str(pick["ratio"]),
                "--fine-tune-epochs",
                str(args.epochs),
                "--unlearn",
            ]
            result = run(prune_args)
            rows.append(
                {
                    "criterion": pick["criterion"] + " + fine-tune (unlearn)",
                    "recommended": pick,
                    "fine_tuned": True,
                    "command": "kerasaudit " + " ".join(prune_args),
                    "before": result["before"],
                    "after": result["after_fine_tune"],
                }
            )
    before = next(r["before"] for r in rows if r.get("before"))
    print(
        f"\nbaseline on fmnist_test.npz: accuracy {pct(before['clean']['accuracy'])}, "
        f"ASR {pct(before['attack']['asr'])}, RA {pct(before['attack']['ra'])}\n"
    )
    print("| criterion | layer | ratio | accuracy | Δ points | ASR | RA |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        if r["recommended"] is None:
            print(f"| {r['criterion']} | — | — | no point within budget | | | |")
            continue
        after = r["after"]
        drop = 100 * (after["clean"]["accuracy"] - before["clean"]["accuracy"])
        print(
            f"| {r['criterion']} | {r['recommended']['layer']} | {r['recommended']['ratio']:g} | "
            f"{pct(after['clean']['accuracy'])} | {drop:+.2f} | {pct(after['attack']['asr'])} | "
            f"{pct(after['attack']['ra'])} |"
        )
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"efficacy-{dt.datetime.now(dt.UTC).strftime('%Y%m%dT%H%M%S')}.json"
    out.write_text(json.dumps({"sweep": sweep, "rows": rows}, indent=2))
    print(f"\nwrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()

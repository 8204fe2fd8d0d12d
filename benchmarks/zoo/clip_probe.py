#!/usr/bin/env python3
"""A probe, no rule: activation clipping (the ℓ∞ idea of Cheng et al. turned into a bound).

A trigger drives a few channels far beyond anything clean images make them do (the paper's ℓ∞
signal); bound every channel to the range the defender's clean images reach and the trigger's
push is capped while clean images pass almost unchanged (cf. Wang, Xiang, Miller & Kesidis,
"MM-BD" and "Improved activation clipping", 2023: bounds optimised; here simply the clean
range). No trigger, no training: the bounds come from one pass over the 1,000 images.

Where: ``conv`` clips each conv layer's (and hidden Dense layer's) raw output per channel to
its clean [min, max]; ``post`` clips the layer scan measures for it (after BatchNorm and
activation) instead. ``--slack S`` widens each range by S × its width.

    python benchmarks/zoo/clip_probe.py --dir DIR [--models M ...] [--where conv post]
        [--slack 0 0.1]

Real-trigger ASR and accuracy on the 9,000 evaluation images (zoo.measure); rows append to
DIR/results/clip_probe.jsonl.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import numpy as np  # noqa: E402
import zoo  # noqa: E402


def clip_targets(model: Any, where: str) -> dict[str, Any]:
    """path → layer whose output is clipped."""
    from kerasaudit import inventory

    layers = dict((p, layer) for p, layer, _ in inventory.walk_layers(model))
    audited = inventory.auditable_layers(model, include_dense=True)
    out = {}
    for a in audited:
        if a.class_name == "Dense" and a.path == audited[-1].path:
            continue  # the output layer: its range is the verdict itself
        path = a.measured_after if where == "post" else a.path
        out[path] = layers[path]
    return out


def ranges(model: Any, targets: dict[str, Any], x: np.ndarray) -> dict[str, np.ndarray]:
    """Per target: (2, channels) clean minimum and maximum over ``x`` (batch and space)."""
    from kerasaudit import inventory

    seen: dict[str, list[np.ndarray]] = {p: [] for p in targets}

    def record(path: str, args: Any, output: Any) -> None:
        y = np.asarray(output)
        axes = tuple(range(y.ndim - 1))
        seen[path].append(np.stack([y.min(axis=axes), y.max(axis=axes)]))

    with inventory.tapped(targets, record):
        for i in range(0, len(x), 250):
            model(x[i : i + 250], training=False)
    return {
        p: np.stack([np.min([r[0] for r in rs], axis=0), np.max([r[1] for r in rs], axis=0)])
        for p, rs in seen.items()
    }


def clipped(targets: dict[str, Any], bounds: dict[str, np.ndarray], slack: float) -> Any:
    """Each target layer's output clipped to its clean range, widened by ``slack`` × its width."""
    import keras

    from kerasaudit import inventory

    def wrap(path: str, call: Any) -> Any:
        lo, hi = bounds[path]
        width = hi - lo
        lo_t = keras.ops.convert_to_tensor((lo - slack * width).astype(np.float32))
        hi_t = keras.ops.convert_to_tensor((hi + slack * width).astype(np.float32))
        return lambda *args, **kw: keras.ops.clip(call(*args, **kw), lo_t, hi_t)

    return inventory.patched_calls(targets, wrap)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", default=None)
    parser.add_argument("--models", nargs="*", default=[])
    parser.add_argument("--where", nargs="*", default=["conv", "post"])
    parser.add_argument("--slack", nargs="*", type=float, default=[0.0])
    args = parser.parse_args()
    import keras

    root = zoo.zoo_dir(args.dir)
    xd, _ = zoo.load_split(root, "defender")
    xe, ye = zoo.load_split(root, "eval")
    out = root / "results" / "clip_probe.jsonl"
    for recipe in zoo.built(root, args.models):
        if recipe.attack.family == "clean" and args.models == []:
            continue
        model = keras.models.load_model(root / "models" / recipe.filename, compile=False)
        before = zoo.original_eval(root, recipe)
        for where in args.where:
            targets = clip_targets(model, where)
            bounds = ranges(model, targets, xd)
            for slack in args.slack:
                started = time.perf_counter()
                with clipped(targets, bounds, slack):
                    model.predict_function = None  # traced with the calls of its first use
                    after = zoo.measure(model, recipe, xe, ye)
                model.predict_function = None
                row = {
                    "model": recipe.name, "where": where, "slack": slack,
                    "layers": len(targets),
                    "accuracy_before": before["accuracy"], "asr_before": before["asr"],
                    "accuracy_after": after["accuracy"], "asr_after": after["asr"],
                    "seconds": round(time.perf_counter() - started, 1),
                }  # fmt: skip
                zoo.append_row(out, row)
                asr = " ".join(f"{100 * a:.2f}" for a in after["asr"])
                was = " ".join(f"{100 * a:.1f}" for a in before["asr"])
                print(f"{recipe.name:26s} {where:4s} slack {slack:<4g} Δacc "
                      f"{100 * (after['accuracy'] - before['accuracy']):+.2f}  ASR {was} → {asr}",
                      flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""A probe: Selective Amnesia (SEAM, Zhu et al., IEEE S&P 2023; reference code read, not
copied) on the zoo — removal that does not depend on how close a recovered trigger is.

`defend` unlearns the triggers it recovered; where the recovered trigger is not the real one
(blends, SIG, position-free patches, second triggers) the real one survives (README, "What
each stage contributes": on 17 of 25 held-out models no (layer, ratio) candidate meets the
goal). SEAM needs no trigger: (1) *forget* — train on a few clean images with random labels
(SGD 0.01, momentum 0.9) until the model gets fewer than FORGET_BOUND of them right, which
wipes the classifier, backdoor included (catastrophic forgetting); (2) *recover* — fine-tune
on the clean images with their true labels; the backdoor is not relearnt because nothing
teaches it. Here recovery is `defend`'s fine-tune (kerasaudit.finetune.fine_tune: Adam,
distillation 0.8 from the original model's outputs on clean images, optionally unlearning
the recovered triggers as `defend` does).

    python benchmarks/zoo/seam_probe.py --dir DIR --models M ... [--any-build]
        [--forget 100] [--recover-epochs 40] [--recover-lr 1e-3] [--unlearn]

The defender's 1,000 images only; real-trigger ASR and accuracy on the 9,000 evaluation
images (zoo.measure). Rows append to DIR/results/seam_probe.jsonl.
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

FORGET_BOUND = 0.2
FORGET_MAX_PASSES = 200


def forget(
    model: Any, x: np.ndarray, y: np.ndarray, lr: float, seed: int, min_passes: int = 1
) -> dict[str, Any]:
    """SEAM's forgetting step in place: passes over (x, random labels) until fewer than
    FORGET_BOUND of the passes' images are classified as their true label."""
    from kerasaudit import _tf

    tf = _tf.tf()
    rng = np.random.default_rng(seed)
    classes = int(model.output_shape[-1])
    opt = tf.keras.optimizers.SGD(lr, momentum=0.9)
    ce = tf.keras.losses.SparseCategoricalCrossentropy()
    variables = model.trainable_variables

    @tf.function
    def step(xb: Any, yb: Any) -> Any:
        with tf.GradientTape() as tape:
            out = model(xb, training=True)
            loss = ce(yb, out)
        opt.apply_gradients(zip(tape.gradient(loss, variables), variables, strict=True))
        return out

    accs = []
    for passes in range(1, FORGET_MAX_PASSES + 1):
        random_labels = rng.integers(0, classes, len(x))
        out = step(tf.constant(x), tf.constant(random_labels))
        acc = float(np.mean(np.argmax(out.numpy(), axis=1) == y))
        accs.append(round(acc, 3))
        if acc < FORGET_BOUND and passes >= min_passes:
            break
    return {"passes": passes, "accuracy_during": accs}


def run(root: Path, name: str, args: argparse.Namespace) -> dict[str, Any]:
    import removal

    from kerasaudit.finetune import fine_tune
    from kerasaudit.pruning import clone_model

    recipe = zoo.recipe_named(name)
    model, data = zoo.load_case(root, recipe)
    x, y = data.take_array(1000)
    assert y is not None
    triggers: list[Any] = []
    flagged: list[int] = []
    if args.unlearn:
        found, info = removal.found_triggers(root, name, model, data, any_build=args.any_build)
        flagged = list(info["flagged"])
        triggers = [t for _, t in removal.trigger_pairs(found, info["value_range"])]
    xe, ye = zoo.load_split(root, "eval")
    started = time.time()
    fixed = clone_model(model)
    rng = np.random.default_rng(args.seed)
    pick = rng.choice(len(x), args.forget, replace=False)
    forgot = forget(fixed, x[pick], y[pick], args.forget_lr, args.seed, args.min_passes)
    after_forget = zoo.measure(fixed, recipe, xe[:2000], ye[:2000])
    tuned = fine_tune(
        fixed,
        data,
        epochs=args.recover_epochs,
        trigger=triggers or None,
        learning_rate=args.recover_lr,
        seed=args.seed,
        teacher=model,
        distill=args.distill,
        optimizer=args.optimizer,
    )
    seconds = time.time() - started
    before, after = zoo.measure(model, recipe, xe, ye), zoo.measure(fixed, recipe, xe, ye)
    return {
        "model": name,
        "half": zoo.split(name),
        "weights_sha256": zoo.weights_of(root, name),
        "forget_images": args.forget,
        "forget_lr": args.forget_lr,
        "min_passes": args.min_passes,
        "recover_epochs": args.recover_epochs,
        "recover_lr": args.recover_lr,
        "optimizer": args.optimizer,
        "distill": args.distill,
        "unlearn": bool(triggers),
        "flagged": flagged,
        "seed": args.seed,
        "forget": forgot,
        "after_forget": {"accuracy": after_forget["accuracy"], "asr": after_forget["asr"]},
        "recover_final_loss": tuned.final_loss,
        "accuracy_before": before["accuracy"],
        "accuracy_after": after["accuracy"],
        "drop_points": round((after["accuracy"] - before["accuracy"]) * 100, 2),
        "asr_before": before["asr"],
        "asr_after": after["asr"],
        "seconds": round(seconds, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dir", type=str, default=None, help="zoo directory")
    parser.add_argument("--models", nargs="+", default=[])
    parser.add_argument("--forget", type=int, default=100, help="images to forget on")
    parser.add_argument("--forget-lr", type=float, default=0.01)
    parser.add_argument("--min-passes", type=int, default=1, help="forget at least this long")
    parser.add_argument("--recover-epochs", type=int, default=40)
    parser.add_argument("--recover-lr", type=float, default=1e-3)
    parser.add_argument("--optimizer", default="adam", choices=["adam", "sgd"])
    parser.add_argument("--distill", type=float, default=0.8)
    parser.add_argument("--unlearn", action="store_true", help="also unlearn recovered triggers")
    parser.add_argument("--any-build", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rows", type=Path, default=None)
    args = parser.parse_args()
    root = zoo.zoo_dir(args.dir)
    out = args.rows or root / "results" / "seam_probe.jsonl"
    out.parent.mkdir(parents=True, exist_ok=True)
    for name in args.models:
        row = run(root, name, args)
        zoo.append_row(out, row)
        asr = " ".join(f"{a * 100:.2f}" for a in row["asr_after"])
        fa = " ".join(f"{a * 100:.1f}" for a in row["after_forget"]["asr"])
        print(
            f"{name:24s} forget {row['forget']['passes']} passes → acc "
            f"{row['after_forget']['accuracy'] * 100:.1f} % ASR {fa} | recovered Δ "
            f"{row['drop_points']:+.2f} ASR {asr} % | {row['seconds']} s",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

#!/usr/bin/env python3
"""Where `defend`'s accuracy goes: its fine-tuning alone, no channel pruned, taken apart.

`defend` loses 2-5 points on the separable and nested nets (zoo and external), where the
known-trigger chain loses under 1.5; its layer candidates already lose that much with one
channel pruned, so the cost is in the fine-tuning. Each variant below fine-tunes the original
model once on the 1,000 defender images (``defend --ratio 0``: no pruning, one round) from the
cached recovered triggers (removal.found_triggers) and is measured on the 9,000 evaluation
images: clean accuracy, each class's accuracy change, the real trigger's ASR.

    python benchmarks/zoo/cost_probe.py --dir DIR --models M ... --variants clean ul ...

Variants (defend's fine-tuning: 10 epochs, Adam 1e-4, distillation 0.8 on clean images,
half of each batch stamped with a recovered trigger and its hard label, generators fitted
when the first trigger is not a patch):

  clean   no unlearning: distillation on clean images only (the floor of any fine-tuning)
  ul      defend's fine-tuning as it is
  ulng    ul without generators (generalise "never")
  ulm     ulng, the mask triggers alone;  uladd  ulng, the additive perturbations alone
  ula     ul, stamped images distilled from the original's outputs on their clean source
          without the flagged target (FineTuneSettings.trigger_teacher "away")
  uls     ul, the same teacher with the target kept ("source")
  ul20    ul with a fifth of each batch stamped instead of half
  ulbn    ul with BatchNorm frozen (statistics and scale)
  ule5    ul with 5 epochs;  ule20, ule40, ule80  with 20, 40 and 80 epochs
  ullr3   ul with Adam at 3e-4 instead of 1e-4
  trim    ulng with each recovered trigger cut back to its strongest pixels (mask value, or
          |perturbation|): the fewest that still send TRIM_KEEP of the images the whole
          trigger sends to its label on the defender's data (trimmed())
  nat     ul with each mask or additive trigger attenuated where the suspect's own evidence
          for its label lies (natural_removed(): 1 − normalised |x · ∇ log p(label)| on the
          defender's images of that label)
  ulfz    ul with the first half of the weighted layers frozen (freeze_half())
  ulfl    ul with the second half frozen

``--shift`` also measures the defended model with its target's log-probability raised by b
(is the target class's loss a bias? shifted_target()); ``--interpolate`` each defended
model's weights moved back toward the original's (α·defended + (1 − α)·original);
``--student`` instead distils a fresh model of the suspect's architecture from it on the clean
images and measures whether the recovered triggers move it too (:func:`student`).

The variants measured on 2026-12-05 and then dropped (the target class weighted up, an EWC
anchor, the clean twin as the stamped image's target) ran at commit 9001999 ("cost_probe:
where defend's accuracy goes"), whose fine_tune had those settings: JOURNAL.md, "Where
`defend`'s accuracy goes".

Held-out models (heldout.py) too: ``--dir benchmarks/zoo/build-heldout``.

Rows append to DIR/results/cost_probe.jsonl; one line printed per (model, variant).
"""

from __future__ import annotations

import argparse
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

VARIANTS: dict[str, dict[str, Any]] = {
    "clean": {"unlearn": False},
    "ul": {},
    "ulng": {},
    "ulm": {},
    "uladd": {},
    "ula": {"trigger_teacher": "away"},
    "uls": {"trigger_teacher": "source"},
    "ul20": {"unlearn_fraction": 0.2},
    "ulbn": {"train_batchnorm": False},
    "ule5": {"epochs": 5},
    "ule20": {"epochs": 20},
    "ule40": {"epochs": 40},
    "ule80": {"epochs": 80},
    "ullr3": {"learning_rate": 3e-4},
    "trim": {},
    "nat": {},
    "ulfz": {},
    "ulfl": {},
}
NEVER = {"ulng", "ulm", "uladd", "trim"}
TRIM_KEEP = 0.9  # trim: the trimmed trigger still sends this share of what the full one did
# which recovered triggers are unlearnt (default: all of them)
KINDS = {"ulm": ("neural-cleanse", "neural-cleanse+completion"), "uladd": ("additive",)}


ALPHAS = (0.9, 0.8, 0.7, 0.5)  # --interpolate: α·defended + (1 − α)·original weights
SHIFTS = (0.5, 1.0, 2.0)  # --shift: the target's log-probability raised by this much
STUDENT_EPOCHS = 60


def run(
    root: Path, name: str, variant: str, interpolate: bool = False, shift: bool = False
) -> dict[str, Any]:
    import removal

    from kerasaudit.stages.defend import DefenceSettings, remove

    recipe = zoo.recipe_named(name)
    model, data = zoo.load_case(root, recipe)
    found, info = removal.found_triggers(root, name, model, data)
    if variant in KINDS:
        found = [f for f in found if f.kind in KINDS[variant]]
    if not found:
        return {"model": name, "variant": variant, "unchanged": True}
    kept: list[int] = []
    frozen: list[str] = []
    if variant == "trim":
        found, kept = trimmed(model, data, found, info["value_range"])
    if variant == "nat":
        found = natural_removed(model, data, found)
    if variant in ("ulfz", "ulfl"):
        frozen = freeze_half(model, last=variant == "ulfl")
    settings = DefenceSettings(ratio=0.0, rounds=1)
    settings = replace(
        settings,
        fine_tuning=replace(settings.fine_tuning, **VARIANTS[variant]),
        generalise="never" if variant in NEVER else settings.generalise,
    )
    started = time.time()
    fixed, result = remove(model, data, removal.trigger_pairs(found, info["value_range"]), settings)
    seconds = time.time() - started
    xe, ye = zoo.load_split(root, "eval")
    before, after = zoo.measure(model, recipe, xe, ye), zoo.measure(fixed, recipe, xe, ye)
    p0, p1 = zoo.predict(model, xe), zoo.predict(fixed, xe)
    per_class = [
        round(float(np.mean(p1[ye == c] == c) - np.mean(p0[ye == c] == c)) * 100, 2)
        for c in range(10)
    ]
    tuned = result.fine_tune
    mixed = []
    if interpolate:  # the defended weights moved back toward the original's
        from kerasaudit.pruning import clone_model

        mix = clone_model(fixed)
        w0, w1 = model.get_weights(), fixed.get_weights()
        for alpha in ALPHAS:
            mix.set_weights([alpha * b + (1 - alpha) * a for a, b in zip(w0, w1, strict=True)])
            m = zoo.measure(mix, recipe, xe, ye)
            drop = round((m["accuracy"] - before["accuracy"]) * 100, 2)
            mixed.append({"alpha": alpha, "drop_points": drop, "asr": m["asr"]})
    shifted = shifted_target(model, fixed, recipe, xe, ye) if shift else []
    return {
        "model": name,
        "variant": variant,
        "half": zoo.split(name),
        "weights_sha256": zoo.weights_of(root, name),
        "flagged": info["flagged"],
        "found": [f["kind"] for f in info["found"]],
        "generators": None if tuned is None else tuned.generators,
        "accuracy_before": before["accuracy"],
        "accuracy_after": after["accuracy"],
        "drop_points": round((after["accuracy"] - before["accuracy"]) * 100, 2),
        "asr_before": before["asr"],
        "asr_after": after["asr"],
        "flipped_after": after["flipped"],
        "per_class_points": per_class,
        "interpolated": mixed,
        "shifted": shifted,
        "trimmed_pixels": kept,
        "frozen": frozen,
        "seconds": round(seconds, 1),
    }


def trimmed(
    model: Any, data: Any, found: list[Any], value_range: Any
) -> tuple[list[Any], list[int]]:
    """Each mask or additive trigger with only its k strongest pixels kept, k the fewest
    whose trigger still sends :data:`TRIM_KEEP` × the whole trigger's share of the
    defender's other images to its label (bisection); warps kept whole. Returns the triggers
    and each one's pixels kept (−1: untouched)."""
    import removal

    x, y = data.take_array(1000)
    out, kept = [], []
    for f in found:
        if f.flow is not None or f.label is None:
            out.append(f)
            kept.append(-1)
            continue
        strength = np.abs(f.delta).sum(axis=-1) if f.delta is not None else f.mask
        order = np.argsort(-strength.ravel())

        def cut(k: int, f: Any = f, order: np.ndarray = order, shape: Any = strength.shape) -> Any:
            keep = np.zeros(order.size, bool)
            keep[order[:k]] = True
            keep = keep.reshape(shape)
            if f.delta is not None:
                return replace(f, delta=f.delta * keep[..., None])
            return replace(f, mask=f.mask * keep)

        def success(g: Any) -> float:
            (pair,) = removal.trigger_pairs([g], value_range)
            return removal.recovered_asr(model, pair[1], g.label, x, y)

        goal = TRIM_KEEP * success(f)
        low, high = 1, int((strength > 0).sum())
        while low < high:
            mid = (low + high) // 2
            low, high = (low, mid) if success(cut(mid)) >= goal else (mid + 1, high)
        out.append(cut(high))
        kept.append(high)
    return out, kept


def shifted_target(
    original: Any, fixed: Any, recipe: Any, x: np.ndarray, y: np.ndarray
) -> list[dict[str, Any]]:
    """Is the target class's loss a bias? The defended model's log-probabilities with its
    first trigger's target raised by b (:data:`SHIFTS`): accuracy change against the original,
    the target class's accuracy, the real trigger's ASR."""
    trigger = recipe.attack.triggers[0]
    goal = trigger.target_of(y)
    keep = goal != y
    target = int(np.bincount(goal[keep]).argmax())

    def logp(m: Any, images: np.ndarray) -> np.ndarray:
        return np.log(m.predict(images, batch_size=500, verbose=0) + 1e-12)

    before = float(np.mean(logp(original, x).argmax(1) == y))
    clean, stamped = logp(fixed, x), logp(fixed, trigger.stamp(x[keep], seed=10_000))
    rows = []
    for b in SHIFTS:
        up = np.zeros(clean.shape[1])
        up[target] = b
        pred = (clean + up).argmax(1)
        rows.append({
            "shift": b,
            "drop_points": round((float(np.mean(pred == y)) - before) * 100, 2),
            "target_class": float(np.mean(pred[y == target] == target)),
            "asr": float(np.mean((stamped + up).argmax(1) == target)),
        })  # fmt: skip
    return rows


def freeze_half(model: Any, last: bool = False) -> list[str]:
    """Mark the first (``last``: the second) half of the model's weighted layers (nested models
    flattened, in order) not trainable, so that fine-tuning moves only the other half; returns
    their names."""
    layers: list[Any] = []

    def walk(m: Any) -> None:
        for layer in m.layers:
            if hasattr(layer, "layers"):
                walk(layer)
            elif layer.weights:
                layers.append(layer)

    walk(model)
    half = layers[len(layers) // 2 :] if last else layers[: len(layers) // 2]
    for layer in half:
        layer.trainable = False
    return [layer.name for layer in half]


def natural_removed(model: Any, data: Any, found: list[Any]) -> list[Any]:
    """Each mask or additive trigger attenuated where the suspect's own evidence for its
    label lives: A = mean over the defender's clean images of that label of |x · ∂ log p(label)
    / ∂x| per pixel, scaled by its 99th percentile and clipped to [0, 1]; the mask (or the
    perturbation) is multiplied by 1 − A. Warps and untargeted triggers are kept whole."""
    from kerasaudit import _tf

    tf = _tf.tf()
    x, y = data.take_array(1000)
    out = []
    for f in found:
        if f.flow is not None or f.label is None:
            out.append(f)
            continue
        xs = tf.constant(x[y == f.label])
        with tf.GradientTape() as tape:
            tape.watch(xs)
            logp = tf.math.log(model(xs, training=False)[:, f.label] + 1e-12)
        grad = tape.gradient(logp, xs).numpy()
        a = np.abs(grad * xs.numpy()).sum(axis=-1).mean(axis=0)
        a = np.clip(a / max(float(np.percentile(a, 99)), 1e-12), 0.0, 1.0)
        keep = 1.0 - a
        if f.delta is not None:
            out.append(replace(f, delta=f.delta * keep[..., None]))
        else:
            out.append(replace(f, mask=f.mask * keep))
    return out


def student(root: Path, name: str) -> dict[str, Any]:
    """A fresh model of the suspect's architecture distilled from it on the defender's clean
    images (:data:`STUDENT_EPOCHS` epochs, shifts of up to 2 px): its accuracy, the real
    trigger's ASR on it, and each recovered trigger's success on the suspect and on it (on
    3,000 evaluation images) — does what a recovered trigger carries belong to the class or
    to the suspect?"""
    import removal

    from kerasaudit import _tf

    tf, keras = _tf.tf(), _tf.keras()
    recipe = zoo.recipe_named(name)
    model, data = zoo.load_case(root, recipe)
    found, info = removal.found_triggers(root, name, model, data)
    x, _ = data.take_array(1000)
    soft = model.predict(x, verbose=0)
    pupil = keras.models.clone_model(model)  # the same layers, freshly initialised
    stepper = keras.optimizers.Adam(1e-3)

    @tf.function
    def step(xb: Any, pb: Any) -> Any:
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(keras.losses.kl_divergence(pb, pupil(xb, training=True)))
        grads = tape.gradient(loss, pupil.trainable_variables)
        stepper.apply_gradients(zip(grads, pupil.trainable_variables, strict=True))
        return loss

    rng = np.random.default_rng(0)
    started = time.time()
    for _ in range(STUDENT_EPOCHS):
        order = rng.permutation(len(x))
        for at in range(0, len(x), 64):
            idx = order[at : at + 64]
            dy, dx = rng.integers(-2, 3, 2)
            xb = np.roll(np.roll(x[idx], dy, axis=1), dx, axis=2)
            step(tf.constant(xb), tf.constant(soft[idx]))
    xe, ye = zoo.load_split(root, "eval")
    on_student, on_suspect = zoo.measure(pupil, recipe, xe, ye), zoo.measure(model, recipe, xe, ye)
    xs, ys = xe[:3000], ye[:3000]
    return {
        "model": name,
        "variant": "student",
        "weights_sha256": zoo.weights_of(root, name),
        "accuracy_suspect": on_suspect["accuracy"],
        "accuracy_student": on_student["accuracy"],
        "asr_student": on_student["asr"],
        "recovered": [
            {
                "label": label,
                "kind": f["kind"],
                "suspect": removal.recovered_asr(model, t, label, xs, ys),
                "student": removal.recovered_asr(pupil, t, label, xs, ys),
            }
            for (label, t), f in zip(
                removal.trigger_pairs(found, info["value_range"]), info["found"], strict=True
            )
        ],
        "seconds": round(time.time() - started, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dir", type=Path, default=None, help="zoo directory")
    parser.add_argument("--models", nargs="+", required=True)
    parser.add_argument("--variants", nargs="+", default=["clean", "ul"], choices=VARIANTS)
    parser.add_argument(
        "--interpolate",
        action="store_true",
        help=f"also measure α·defended + (1 − α)·original, α in {ALPHAS}",
    )
    parser.add_argument(
        "--shift",
        action="store_true",
        help=f"also measure the target's log-probability raised by b in {SHIFTS}",
    )
    parser.add_argument(
        "--student", action="store_true", help="instead: the distilled clean student (student())"
    )
    args = parser.parse_args()
    root = zoo.zoo_dir(args.dir)
    out = root / "results" / "cost_probe.jsonl"
    out.parent.mkdir(parents=True, exist_ok=True)
    for name in args.models:
        if args.student:
            row = student(root, name)
            zoo.append_row(out, row, echo=True)
            continue
        for variant in args.variants:
            row = run(root, name, variant, args.interpolate, args.shift)
            zoo.append_row(out, row)
            if row.get("unchanged"):
                print(f"{name} {variant}: nothing flagged", flush=True)
                continue
            asr = " ".join(f"{a * 100:.2f}" for a in row["asr_after"])
            print(
                f"{name:24s} {variant:6s} Δ {row['drop_points']:+.2f} ASR {asr} % "
                f"per class {row['per_class_points']} gen {row['generators']} "
                f"{row['seconds']} s",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

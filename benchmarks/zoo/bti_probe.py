#!/usr/bin/env python3
"""A probe: backdoor trigger inversion by decoupling benign features (BTI-DBF, Xu et al.,
ICLR 2024; reference code github.com/xuxiong0214/BTIDBF, read, not copied) on the zoo.

`defend` unlearns triggers recovered per label (a Neural Cleanse mask, an additive
perturbation, a warp field, each fitted toward one label); on blended, sinusoidal,
position-free and two-trigger models what it leaves is 3-30 % (JOURNAL.md, "Seventh session":
no layer or ratio reaches 2 % there, the recovered trigger is not close enough to the real
one). BTI-DBF inverts without a label: (1) a mask over the penultimate features that keeps
what classifies clean images ("benign" features: classifying from them alone works, from the
rest fails); (2) an image-to-image generator G, its change bounded, that keeps the benign
features of each image and moves the others as far as it can — a backdoor is the cheapest way
to do that; (3) unlearning: G's images learn their true class, their features pulled to the
clean image's. BTI-DBF(U) repeats (2)-(3) against the model being unlearnt.

    python benchmarks/zoo/bti_probe.py --dir DIR --models M ... --variants bti btiul ...

Variants (fine-tuning as defend's: Adam 1e-4, 10 epochs in all, batch 64, distillation 0.8
from the original on clean images, half of each batch replaced):
  bti     G's images only (BTI-DBF(U): CE on the true class + the feature pull)
  btiul   G's images and defend's cached recovered triggers, each replaced slot one at random
  btir3   bti in 3 rounds (G refitted against the model being unlearnt, then 1/3 of the epochs)
  btiulr3 btiul in 3 rounds

Each row also says where G sends the evaluation images (its most frequent label: BTI-DBF's
target guess) and how often G's change sends them to the real target, beside the real ASR.
Rows append to DIR/results/bti_probe.jsonl.
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
from recipes import BY_NAME  # noqa: E402

VARIANTS = {
    "bti": {"recovered": False, "rounds": 1},
    "btiul": {"recovered": True, "rounds": 1},
    "btir3": {"recovered": False, "rounds": 3},
    "btiulr3": {"recovered": True, "rounds": 3},
}
EPOCHS = 10
BATCH = 64
MASK_EPOCHS = 20
GEN_EPOCHS = 30


def split_model(model: Any) -> tuple[Any, Any, Any]:
    """(features: the input to the final Dense layer, its kernel, its bias)."""
    from kerasaudit import _tf

    keras = _tf.keras()
    last = model.layers[-1]
    features = keras.Model(model.inputs, last.input)
    return features, last.kernel, last.bias


def decouple(features: Any, kernel: Any, bias: Any, x: np.ndarray, y: np.ndarray) -> Any:
    """BTI-DBF step 1: a mask m in (0, 1) over the features such that m·f classifies and
    (1 − m)·f does not (Adam 0.01, MASK_EPOCHS passes)."""
    from kerasaudit import _tf

    tf = _tf.tf()
    f = features.predict(x, batch_size=256, verbose=0)
    raw = tf.Variable(tf.random.stateless_normal(f.shape[1:], seed=(0, 1)))
    opt = tf.keras.optimizers.Adam(0.01)
    ce = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    @tf.function
    def step(fb: Any, yb: Any) -> Any:
        with tf.GradientTape() as tape:
            m = tf.tanh(raw) / 2.0 + 0.5
            keep = ce(yb, tf.matmul(fb * m, kernel) + bias)
            rest = ce(yb, tf.matmul(fb * (1.0 - m), kernel) + bias)
            loss = keep - rest
        opt.apply_gradients([(tape.gradient(loss, raw), raw)])
        return keep, rest

    rng = np.random.default_rng(0)
    for _ in range(MASK_EPOCHS):
        order = rng.permutation(len(x))
        for at in range(0, len(x), BATCH):
            idx = order[at : at + BATCH]
            keep, rest = step(tf.constant(f[idx]), tf.constant(y[idx]))
    return (tf.tanh(raw) / 2.0 + 0.5).numpy(), float(keep), float(rest)


class Generator:
    """G(x) = clip(x + P + A·x + c(x)): an image-sized pattern P, a per-pixel scale A and a
    small convolution c, all starting near the identity (P small noise, c's last layer small:
    at exactly the identity the feature distance has no gradient)."""

    def __init__(self, shape: tuple[int, ...], seed: int = 0) -> None:
        from kerasaudit import _tf

        tf, keras = _tf.tf(), _tf.keras()
        L = keras.layers
        self.P = tf.Variable(0.01 * tf.random.stateless_normal(shape, seed=(seed, 2)))
        self.A = tf.Variable(tf.zeros(shape))
        keras.utils.set_random_seed(seed)
        inp = keras.Input(shape)
        h = L.Conv2D(16, 3, padding="same", activation="relu")(inp)
        h = L.Conv2D(16, 3, padding="same", activation="relu")(h)
        small = keras.initializers.RandomNormal(stddev=0.01, seed=seed)
        out = L.Conv2D(shape[-1], 3, padding="same", kernel_initializer=small)(h)
        self.net = keras.Model(inp, out)
        self.variables = [self.P, self.A, *self.net.trainable_variables]

    def __call__(self, x: Any) -> Any:
        from kerasaudit import _tf

        tf = _tf.tf()
        return tf.clip_by_value(x + self.P + self.A * x + self.net(x), 0.0, 1.0)


def fit_generator(
    gen: Generator,
    features: Any,
    mask: np.ndarray,
    x: np.ndarray,
    norm_bound: float,
    feat_share: float,
    target: int | None = None,
    model: Any = None,
) -> dict[str, float]:
    """BTI-DBF step 2: G keeps the benign features (m·f) and moves the rest as far as it can
    while mean((G(x) − x)²) ≤ norm_bound and the benign features' MSE ≤ feat_share × their
    mean square; over the bounds, only the bound is minimised. With ``target`` (rounds > 1),
    also CE toward it, as the reference does once the target is known."""
    from kerasaudit import _tf

    tf = _tf.tf()
    m = tf.constant(mask)
    f0 = features.predict(x, batch_size=256, verbose=0)
    feat_bound = feat_share * float(np.mean((f0 * mask) ** 2))
    opt = tf.keras.optimizers.Adam(1e-3)
    ce = tf.keras.losses.SparseCategoricalCrossentropy()

    @tf.function
    def step(xb: Any, fb: Any) -> Any:
        with tf.GradientTape() as tape:
            g = gen(xb)
            fg = features(g, training=False)
            norm = tf.reduce_mean((g - xb) ** 2)
            benign = tf.reduce_mean((m * (fg - fb)) ** 2)
            backdoor = tf.reduce_mean(((1.0 - m) * (fg - fb)) ** 2)
            loss = tf.cond(
                tf.logical_or(norm > norm_bound, benign > feat_bound),
                lambda: norm,
                lambda: -backdoor + 0.01 * benign,
            )
            if target is not None:
                aim = tf.fill(tf.shape(xb)[:1], target)
                loss = loss + ce(aim, model(g, training=False))
        opt.apply_gradients(zip(tape.gradient(loss, gen.variables), gen.variables, strict=True))
        return norm, benign, backdoor

    rng = np.random.default_rng(1)
    for _ in range(GEN_EPOCHS):
        order = rng.permutation(len(x))
        for at in range(0, len(x), BATCH):
            idx = order[at : at + BATCH]
            norm, benign, backdoor = step(tf.constant(x[idx]), tf.constant(f0[idx]))
    return {
        "norm": float(norm),
        "benign": float(benign),
        "backdoor": float(backdoor),
        "feat_bound": feat_bound,
    }


def unlearn(
    model: Any,
    teacher: Any,
    gen: Generator,
    triggers: list[Any],
    x: np.ndarray,
    y: np.ndarray,
    epochs: int,
    seed: int,
    feat_weight: float,
) -> None:
    """BTI-DBF(U) as defend fine-tunes: Adam 1e-4, clean images (1 − 0.8)·CE + 0.8·KL(teacher),
    half of each batch replaced by G's image (or a recovered trigger's) learning its true
    class, plus feat_weight · MSE between the model's features on the replaced and clean
    images (the reference's feature pull)."""
    from kerasaudit import _tf

    tf = _tf.tf()
    features, _, _ = split_model(model)
    opt = tf.keras.optimizers.Adam(1e-4)
    soft = teacher.predict(x, batch_size=256, verbose=0)
    kl = tf.keras.losses.KLDivergence(reduction="none")
    sce = tf.keras.losses.SparseCategoricalCrossentropy(reduction="none")

    @tf.function
    def step(xc: Any, xs: Any, yb: Any, pb: Any, swapped: Any) -> Any:
        with tf.GradientTape() as tape:
            out = model(xs, training=True)
            hard = sce(yb, out)
            clean_loss = 0.2 * hard + 0.8 * kl(pb, out)
            per = tf.where(swapped, hard, clean_loss)
            loss = tf.reduce_mean(per)
            if feat_weight > 0:
                fs = features(xs, training=True)
                fc = features(xc, training=True)
                loss = loss + feat_weight * tf.reduce_mean((fs - fc) ** 2)
        variables = model.trainable_variables
        opt.apply_gradients(zip(tape.gradient(loss, variables), variables, strict=True))
        return loss

    rng = np.random.default_rng(seed)
    sources = 1 + len(triggers)
    for _ in range(epochs):
        order = rng.permutation(len(x))
        for at in range(0, len(x), BATCH):
            idx = order[at : at + BATCH]
            xb = x[idx]
            swapped = rng.random(len(idx)) < 0.5
            pick = rng.integers(0, sources, len(idx))
            xs = xb.copy()
            for s in range(sources):
                sel = swapped & (pick == s)
                if not sel.any():
                    continue
                xs[sel] = gen(xb[sel]).numpy() if s == 0 else triggers[s - 1].apply(xb[sel])
            step(
                tf.constant(xb),
                tf.constant(xs),
                tf.constant(y[idx]),
                tf.constant(soft[idx]),
                tf.constant(swapped),
            )


def where_sent(model: Any, gen: Generator, recipe: Any, xe: np.ndarray, ye: np.ndarray) -> dict:
    """G's change on 3,000 evaluation images: the label it sends most to (BTI-DBF's guess),
    and its success at the real (first) target."""
    xs, ys = xe[:3000], ye[:3000]
    pred = zoo.predict(model, gen(xs).numpy())
    counts = np.bincount(pred[pred != ys], minlength=10)
    trig = recipe.attack.triggers[0]
    target = trig.target_of(ys)
    keep = target != ys
    return {
        "guess": int(np.argmax(counts)),
        "off_class": float(np.mean(pred != ys)),
        "to_real_target": float(np.mean(pred[keep] == target[keep])),
        "counts": counts.tolist(),
    }


def detect(model: Any, x: np.ndarray, y: np.ndarray, args: argparse.Namespace) -> dict[str, Any]:
    """BTI-DBF's inversion alone (no label searched, nothing unlearnt): where G sends the
    defender's own images — a backdoor gives one label most of them."""
    features, kernel, bias = split_model(model)
    started = time.time()
    mask, keep, rest = decouple(features, kernel, bias, x, y)
    gen = Generator(x.shape[1:], seed=args.seed)
    fit = fit_generator(gen, features, mask, x, args.norm_bound, args.feat_share)
    pred = zoo.predict(model, gen(x).numpy())
    moved = pred != y
    counts = np.bincount(pred[moved], minlength=int(model.output_shape[-1]))
    top = int(np.argmax(counts))
    return {
        "guess": top,
        "off_class": float(np.mean(moved)),
        "top_share": float(counts[top] / max(1, counts.sum())),
        "to_top": float(np.mean(pred[y != top] == top)),
        "counts": counts.tolist(),
        "fit": fit,
        "mask_keep_ce": keep,
        "mask_rest_ce": rest,
        "seconds": round(time.time() - started, 1),
    }


def run(root: Path, name: str, variant: str, args: argparse.Namespace) -> dict[str, Any]:
    import removal

    from kerasaudit.pruning import clone_model

    spec = VARIANTS[variant]
    recipe = BY_NAME[name]
    model, data = zoo.load_case(root, recipe)
    x, y = data.take_array(1000)
    triggers: list[Any] = []
    if spec["recovered"]:
        found, info = removal.found_triggers(root, name, model, data)
        triggers = [t for _, t in removal.trigger_pairs(found, info["value_range"])]
    xe, ye = zoo.load_split(root, "eval")
    started = time.time()
    fixed = clone_model(model)
    rounds = int(spec["rounds"])
    per_round = [EPOCHS // rounds + (1 if r < EPOCHS % rounds else 0) for r in range(rounds)]
    fits, sent = [], []
    gen = Generator(x.shape[1:], seed=args.seed)
    guess: int | None = None
    for r, epochs in enumerate(per_round):
        features, kernel, bias = split_model(fixed)
        mask, keep, rest = decouple(features, kernel, bias, x, y)
        fit = fit_generator(
            gen,
            features,
            mask,
            x,
            args.norm_bound,
            args.feat_share,
            target=guess if r > 0 and args.aim else None,
            model=fixed,
        )
        fit.update({"mask_keep_ce": keep, "mask_rest_ce": rest, "mask_mean": float(mask.mean())})
        fits.append(fit)
        sent.append(where_sent(fixed, gen, recipe, xe, ye))
        guess = sent[0]["guess"]
        unlearn(fixed, model, gen, triggers, x, y, epochs, args.seed, args.feat_weight)
    seconds = time.time() - started
    before, after = zoo.measure(model, recipe, xe, ye), zoo.measure(fixed, recipe, xe, ye)
    return {
        "model": name,
        "variant": variant,
        "half": zoo.split(name),
        "weights_sha256": zoo.weights_of(root, name),
        "norm_bound": args.norm_bound,
        "feat_share": args.feat_share,
        "feat_weight": args.feat_weight,
        "aim": args.aim,
        "seed": args.seed,
        "triggers_recovered": len(triggers),
        "fits": fits,
        "generator": sent,
        "accuracy_before": before["accuracy"],
        "accuracy_after": after["accuracy"],
        "drop_points": round((after["accuracy"] - before["accuracy"]) * 100, 2),
        "asr_before": before["asr"],
        "asr_after": after["asr"],
        "flipped_after": after["flipped"],
        "seconds": round(seconds, 1),
    }


def detect_all(root: Path, args: argparse.Namespace) -> int:
    from kerasaudit.loading import load_model

    out = root / "results" / "bti_detect.jsonl"
    cases: list[tuple[str, Any, np.ndarray, np.ndarray, int | None]] = []
    for name in args.models:
        recipe = BY_NAME[name]
        model, data = zoo.load_case(root, recipe)
        x, y = data.take_array(1000)
        trig = recipe.attack.triggers
        target = trig[0].target if trig and recipe.attack.family != "all-to-all" else None
        cases.append((name, model, x, y, target))
    if args.files:
        with np.load(args.data) as f:
            xd, yd = f["x"].astype(np.float32), f["y"]
        if xd.max() > 1.5:
            xd = xd / 255.0
        for path in args.files:
            cases.append((str(path), load_model(Path(path)).model, xd, yd, None))
    for name, model, x, y, target in cases:
        row = {
            "model": name,
            "target": target,
            "norm_bound": args.norm_bound,
            "feat_share": args.feat_share,
            "seed": args.seed,
            **detect(model, x, y, args),
        }
        zoo.append_row(out, row)
        print(
            f"{Path(name).name:28s} target {target} guess {row['guess']} off "
            f"{row['off_class'] * 100:5.1f} % top share {row['top_share'] * 100:5.1f} % "
            f"to top {row['to_top'] * 100:5.1f} % norm {row['fit']['norm']:.4f} "
            f"{row['seconds']} s",
            flush=True,
        )
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dir", type=str, default=None, help="zoo directory")
    parser.add_argument("--models", nargs="+", default=[])
    parser.add_argument(
        "--detect", action="store_true", help="the inversion alone: where G sends the images"
    )
    parser.add_argument(
        "--files", nargs="+", default=[], help="with --detect: model files outside a zoo"
    )
    parser.add_argument("--data", type=Path, default=None, help="with --files: defender .npz")
    parser.add_argument("--variants", nargs="+", default=["bti"], choices=VARIANTS)
    parser.add_argument("--norm-bound", type=float, default=0.01, help="mean squared change")
    parser.add_argument("--feat-share", type=float, default=0.5)
    parser.add_argument("--feat-weight", type=float, default=1.0)
    parser.add_argument("--aim", action="store_true", help="rounds > 1 also aim G at its guess")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    root = zoo.zoo_dir(args.dir)
    out = root / "results" / "bti_probe.jsonl"
    out.parent.mkdir(parents=True, exist_ok=True)
    if args.detect:
        return detect_all(root, args)
    for name in args.models:
        for variant in args.variants:
            row = run(root, name, variant, args)
            zoo.append_row(out, row)
            asr = " ".join(f"{a * 100:.2f}" for a in row["asr_after"])
            g = row["generator"][0]
            print(
                f"{name:24s} {variant:7s} Δ {row['drop_points']:+.2f} ASR {asr} % | G guess "
                f"{g['guess']} off {g['off_class'] * 100:.1f} % real-target "
                f"{g['to_real_target'] * 100:.1f} % | {row['seconds']} s",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

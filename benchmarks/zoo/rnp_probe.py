#!/usr/bin/env python3
"""Probe (a failed idea, kept so it can be rerun): Reconstructive Neuron Pruning's channel
scores on zoo models. Prunes by the scores and measures on the evaluation images — for
understanding only; a defence may not choose from those.

    python benchmarks/zoo/rnp_probe.py badnets_g2_tr_vgg badnets_w3_tl_plain blend_a10_resnet \
        --unlearn-rate 0.001

Result (2026-12-02): the lowest-scored channels are not the backdoor's on these small
Fashion-MNIST nets — pruning the 8 lowest cost 1.4-24 points of accuracy while the ASR stayed
27-99.9 %; RNP's own unlearning rate (0.01) collapsed them to one class within two epochs.

The method, as implemented below:
Trigger-free channel scores by Reconstructive Neuron Pruning (Li et al., ICML 2023).

RNP needs no trigger, only a little clean data:

1. *Unlearn*: a copy of the model is trained to **maximise** its loss on the clean images
   (SGD, a few epochs) until its accuracy on them falls to ``clean_threshold``. Clean features
   are erased first; the backdoor's channels, which clean images hardly use, survive.
2. *Recover*: on that unlearnt copy, with its weights frozen, one multiplier per conv channel
   (in [0, 1], starting at 1) is trained to **minimise** the clean loss. Clean accuracy comes
   back by turning channels up or down; the channels the recovery turns *down* are the ones
   whose survival after unlearning does not serve clean images: the backdoor's.
3. The caller zeroes the channels with the lowest multipliers in the *original* model
   (``kerasaudit.pruning.zero_channels``), choosing how many on held-back defender data.

Here a channel's multiplier scales its whole output: the γ and β of the BatchNormalization
that follows the conv, or the conv's kernel slice and bias when none does — so a multiplier of
0 is exactly what ``zero_channels`` does. The model is never changed: both steps work on values
passed to ``stateless_call``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import numpy as np  # noqa: E402
import zoo  # noqa: E402
from recipes import BY_NAME  # noqa: E402

from kerasaudit import _tf  # noqa: E402
from kerasaudit.inventory import AuditableLayer, find_layer  # noqa: E402
from kerasaudit.pruning import _variable  # noqa: E402


@dataclass(frozen=True)
class RnpSettings:
    unlearn_rate: float = 0.01
    unlearn_epochs: int = 20
    clean_threshold: float = 0.2  # stop unlearning once clean accuracy is this low
    recover_rate: float = 0.2
    recover_epochs: int = 20
    alpha: float = 0.2  # weight of the recovery loss (RNP's default)
    batch_size: int = 128
    seed: int = 0


@dataclass(frozen=True, eq=False)
class ChannelMasks:
    """One value per conv channel (RNP's multipliers, ANP's masks: anp_probe.py), lowest =
    most suspicious."""

    layers: tuple[AuditableLayer, ...]
    masks: tuple[np.ndarray, ...]  # per layer, one value per output channel, in [0, 1]

    def ranked(self) -> list[tuple[float, int, int]]:
        """(multiplier, layer index, channel), lowest multiplier first."""
        out = [
            (float(m), i, int(c)) for i, masks in enumerate(self.masks) for c, m in enumerate(masks)
        ]
        return sorted(out)

    def below(self, threshold: float) -> list[tuple[AuditableLayer, list[int]]]:
        """Per layer, the channels whose multiplier is ≤ threshold (layers with none left out)."""
        out = []
        for info, masks in zip(self.layers, self.masks, strict=True):
            chosen = [int(c) for c in np.flatnonzero(masks <= threshold)]
            if chosen:
                out.append((info, chosen))
        return out

    def lowest(self, count: int) -> list[tuple[AuditableLayer, list[int]]]:
        """The ``count`` channels with the lowest multipliers, grouped per layer."""
        chosen: dict[int, list[int]] = {}
        for _, i, c in self.ranked()[:count]:
            chosen.setdefault(i, []).append(c)
        return [(self.layers[i], sorted(cs)) for i, cs in sorted(chosen.items())]


@dataclass(frozen=True, eq=False)
class RnpScores(ChannelMasks):
    unlearn_epochs: int  # epochs until clean accuracy fell to the threshold
    unlearnt_accuracy: float
    recovered_accuracy: float


def pruned_measure(
    model: Any,
    recipe: Any,
    chosen: list[tuple[AuditableLayer, list[int]]],
    evaluation: tuple[np.ndarray, np.ndarray],
    defender: tuple[np.ndarray, np.ndarray],
) -> tuple[int, dict[str, Any], float]:
    """(channels zeroed, the zoo's measurement on the evaluation images, accuracy on the
    defender's images) of a clone of ``model`` with the ``chosen`` channels zeroed."""
    from kerasaudit.pruning import clone_model, zero_channels

    pruned = clone_model(model)
    if chosen:
        zero_channels(pruned, chosen)
    after = zoo.measure(pruned, recipe, *evaluation)
    xd, yd = defender
    return sum(len(c) for _, c in chosen), after, float(np.mean(zoo.predict(pruned, xd) == yd))


def _scaled(model: Any, info: AuditableLayer) -> list[tuple[Any, tuple[int, ...]]]:
    """The variables a channel multiplier scales, each with the shape the (channels,) vector
    is reshaped to so that it broadcasts over the variable."""
    if info.batch_norm is not None:
        bn = find_layer(model, info.batch_norm)
        gamma = _variable(bn, "gamma")
        if gamma is not None:
            return [(gamma, (-1,))]
    layer = find_layer(model, info.path)
    cls = info.class_name
    out = []
    if cls.startswith("DepthwiseConv"):
        kernel = _variable(layer, "kernel")
        out.append((kernel, (*([1] * (len(kernel.shape) - 2)), kernel.shape[-2], kernel.shape[-1])))
    elif cls.startswith("SeparableConv"):
        out.append((_variable(layer, "pointwise_kernel"), (-1,)))
    elif cls.endswith("Transpose"):
        kernel = _variable(layer, "kernel")
        out.append((kernel, (-1, 1)))
    else:
        out.append((_variable(layer, "kernel"), (-1,)))
    return out


def _split_head(model: Any) -> tuple[Any, Any | None, Any | None, bool]:
    """(features, dense kernel, dense bias, outputs are logits): a softmax classifier is split
    before its softmax so that the losses here see logits (a saturated softmax has no
    gradient); otherwise the model itself, its outputs turned into log-probabilities."""
    from kerasaudit.evaluation import outputs_probabilities

    keras = _tf.keras()
    last = model.layers[-1]
    if not outputs_probabilities(model) or len(model.inputs) != 1:
        return model, None, None, not outputs_probabilities(model)
    try:
        features = keras.Model(model.inputs[0], last.input)
    except Exception:  # the last layer is shared or has several inputs
        return model, None, None, False
    if type(last).__name__ in ("Softmax", "Activation"):
        return features, None, None, True
    if type(last).__name__ == "Dense" and getattr(last, "kernel", None) is not None:
        return features, last.kernel, getattr(last, "bias", None), True
    return model, None, None, False


def scores(
    model: Any,
    x: np.ndarray,
    y: np.ndarray,
    layers: Sequence[AuditableLayer],
    settings: RnpSettings | None = None,
) -> RnpScores:
    """RNP's channel multipliers for ``layers`` (conv layers of ``model``) from clean (x, y)."""
    settings = settings or RnpSettings()
    tf = _tf.tf()
    rng = np.random.default_rng(settings.seed)
    y = np.asarray(y).astype(np.int64)
    body, kernel, bias, logits = _split_head(model)
    trainable = list(body.trainable_variables)
    non_trainable = list(body.non_trainable_variables)
    head = [v for v in (kernel, bias) if v is not None]
    weights = [tf.Variable(v.value) for v in trainable + head]
    stats = [tf.Variable(v.value, trainable=False) for v in non_trainable]
    index = {id(v): i for i, v in enumerate(trainable)}
    n_body = len(trainable)

    def batches() -> Any:
        order = rng.permutation(len(x))
        for start in range(0, len(x), settings.batch_size):
            take = order[start : start + settings.batch_size]
            yield tf.constant(x[take]), tf.constant(y[take])

    def forward(values: list[Any], xb: Any) -> tuple[Any, Any]:
        out, new_stats = body.stateless_call(
            values[:n_body], [s.value() for s in stats], xb, training=True
        )
        out = tf.cast(out, tf.float32)
        if head:
            out = tf.matmul(out, tf.cast(values[n_body], tf.float32))
            if len(head) == 2:
                out = out + tf.cast(values[n_body + 1], tf.float32)
        logp = tf.nn.log_softmax(out) if logits else tf.math.log(tf.clip_by_value(out, 1e-12, 1))
        return logp, new_stats

    def nll(logp: Any, labels: Any) -> Any:
        return -tf.reduce_mean(tf.gather(logp, labels, axis=1, batch_dims=1))

    def correct(logp: Any, labels: Any) -> Any:
        return tf.reduce_sum(tf.cast(tf.argmax(logp, axis=-1) == labels, tf.int32))

    # 1. unlearn: gradient ascent on the clean loss, BatchNorm in training mode (as RNP)
    momentum = [tf.Variable(tf.zeros_like(w)) for w in weights]

    @tf.function(reduce_retracing=True)
    def unlearn_step(xb: Any, yb: Any) -> Any:
        with tf.GradientTape() as tape:
            logp, new_stats = forward([w.value() for w in weights], xb)
            gain = -nll(logp, yb)  # gradient *ascent* on the clean loss
        grads = tape.gradient(gain, weights)
        grads, _ = tf.clip_by_global_norm(grads, 20.0)
        for w, g, m in zip(weights, grads, momentum, strict=True):
            if g is None:
                continue
            m.assign(0.9 * m + g + 5e-4 * w)
            w.assign_sub(settings.unlearn_rate * m)
        for s, v in zip(stats, new_stats, strict=True):
            s.assign(v)
        return correct(logp, yb)

    epochs = 0
    accuracy = 1.0
    done = False
    for epoch in range(settings.unlearn_epochs):
        epochs = epoch + 1
        for xb, yb in batches():
            accuracy = int(unlearn_step(xb, yb)) / int(xb.shape[0])
            if accuracy <= settings.clean_threshold:  # measured before this step's update
                done = True
                break
        if done:
            break

    # 2. recover: one multiplier per channel on the unlearnt weights, minimising the clean loss
    masks = [tf.Variable(tf.ones((info.channels,), tf.float32)) for info in layers]
    scaled: list[tuple[int, int, tuple[int, ...]]] = []  # (weight index, mask index, shape)
    for j, info in enumerate(layers):
        for variable, shape in _scaled(model, info):
            scaled.append((index[id(variable)], j, shape))
    velocity = [tf.Variable(tf.zeros_like(m)) for m in masks]
    rate = settings.recover_rate

    @tf.function(reduce_retracing=True)
    def recover_step(xb: Any, yb: Any) -> Any:
        with tf.GradientTape() as tape:
            values = [w.value() for w in weights]
            for i, j, shape in scaled:
                values[i] = values[i] * tf.cast(tf.reshape(masks[j], shape), values[i].dtype)
            logp, _ = forward(values, xb)
            loss = settings.alpha * nll(logp, yb)
        grads = tape.gradient(loss, masks)
        for m, g, v in zip(masks, grads, velocity, strict=True):
            if g is None:
                continue
            v.assign(0.9 * v + g)
            m.assign(tf.clip_by_value(m - rate * v, 0.0, 1.0))
        return correct(logp, yb)

    recovered = 0.0
    for _ in range(settings.recover_epochs):
        hits = sum(int(recover_step(xb, yb)) for xb, yb in batches())
        recovered = hits / len(x)
    return RnpScores(
        layers=tuple(layers),
        masks=tuple(np.asarray(m.numpy(), dtype=np.float64) for m in masks),
        unlearn_epochs=epochs,
        unlearnt_accuracy=accuracy,
        recovered_accuracy=recovered,
    )


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("models", nargs="+")
    parser.add_argument("--dir")
    parser.add_argument(
        "--thresholds",
        nargs="*",
        type=float,
        default=[0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9],
    )
    parser.add_argument("--out", default="/tmp/rnp/probe.jsonl")
    parser.add_argument("--unlearn-rate", type=float, default=0.01)
    parser.add_argument("--clean-threshold", type=float, default=0.2)
    parser.add_argument("--recover-rate", type=float, default=0.2)
    args = parser.parse_args()
    from kerasaudit.inventory import auditable_layers
    from kerasaudit.loading import load_model

    root = zoo.zoo_dir(args.dir)
    xd, yd = zoo.load_split(root, "defender")
    xe, ye = zoo.load_split(root, "eval")
    for name in args.models:
        recipe = BY_NAME[name]
        model = load_model(root / "models" / recipe.filename).model
        layers = auditable_layers(model)
        started = time.time()
        settings = RnpSettings(
            unlearn_rate=args.unlearn_rate,
            clean_threshold=args.clean_threshold,
            recover_rate=args.recover_rate,
        )
        s = scores(model, xd, yd, layers, settings)
        seconds = time.time() - started
        before = json.loads((root / "models" / f"{name}.json").read_text())["eval"]
        print(
            f"{name}: unlearn {s.unlearn_epochs} ep → {s.unlearnt_accuracy:.3f}, recovered "
            f"{s.recovered_accuracy:.3f}, {seconds:.0f} s; before acc {before['accuracy']:.4f} "
            f"ASR {before['asr']}",
            flush=True,
        )
        rows = []
        total = sum(len(m) for m in s.masks)
        print(
            f"  {total} channels; lowest: "
            + ", ".join(f"{s.layers[i].path}:{c}={m:.2f}" for m, i, c in s.ranked()[:8])
        )
        for t in [-1, -2, -4, -8, -16, -32, *args.thresholds]:
            chosen = s.below(t) if t >= 0 else s.lowest(-int(t))
            n, after, acc_d = pruned_measure(model, recipe, chosen, (xe, ye), (xd, yd))
            rows.append(
                {"t": t, "n": n, "acc": after["accuracy"], "asr": after["asr"], "def_acc": acc_d}
            )
            print(
                f"  t {t:.2f} n {n:4d} acc {100 * after['accuracy']:.2f} "
                f"(Δ {100 * (after['accuracy'] - before['accuracy']):+.2f}) def {100 * acc_d:.1f} "
                f"ASR {' / '.join(f'{100 * a:.2f}' for a in after['asr'])}",
                flush=True,
            )
        with open(args.out, "a") as f:
            f.write(
                json.dumps(
                    {
                        "model": name,
                        "seconds": seconds,
                        "before": before,
                        "unlearn_epochs": s.unlearn_epochs,
                        "rows": rows,
                        "masks": [m.tolist() for m in s.masks],
                        "layers": [i.path for i in s.layers],
                    }
                )
                + "\n"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

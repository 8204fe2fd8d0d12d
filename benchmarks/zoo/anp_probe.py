#!/usr/bin/env python3
"""Probe: Adversarial Neuron Pruning's channel scores on zoo models (Wu & Wang, NeurIPS 2021).
Prunes by the scores and measures on the evaluation images — for understanding only; a defence
may not choose from those (the defender-side numbers printed beside them are what one could).

    python benchmarks/zoo/anp_probe.py badnets_g2_tr_vgg wanet_plain [--eps 0.4 --sign]

Result (2026-12-03, one run each, the defender's 1,000 images; pruning only, no fine-tuning;
measured on the 9,000 evaluation images): mixed. On the plain net without BatchNorm the lowest
masks are the backdoor's — ``wanet_plain`` (ANP's step, ε 0.4, 1,000 iterations): the 16 lowest
channels pruned → ASR 99.1 → 8.96 % at −1.58 points, 32 → 3.81 % at −2.93 (signed step: mask
≤ 0.5, 27 channels → 2.05 % at −3.52). On BatchNorm nets at ANP's ε 0.4 they are not:
``badnets_g2_tr_vgg`` (2,000 iterations) drops conv5 channels clean images do not use (24
pruned: ASR still 99.6 %; signed step, 8 lowest: 48.7 % at −2.27), and ``badnets_c4_br_resnet``
collapses under the perturbation (masked accuracy 0.35; pruning the 2 lowest, stem channels,
costs 24 points). At ε 0.1 (1,000 iterations) nothing changed that: the 32 lowest channels
of ``badnets_c4_br_resnet`` → ASR 5.2 % at −7.1 points (16: 99.7 %), ``blend_a15_vgg`` and
``badnets_g2_tr_vgg`` ≥ 83 % at every count up to 32, ``sig_nested`` (a nested net with
BatchNorm) 98.8 % at 8 channels and −2.1 points. So a trigger-free ranking by ANP is not a
substitute for the recovered trigger's on these nets; not pursued.

ANP needs no trigger, only a little clean data. A backdoor's channels are the ones whose small
perturbation most changes the output: a backdoored model collapses to its target label under
a small adversarial perturbation of its neurons, a clean model far less. ANP learns one mask
value per channel (in [0, 1], starting at 1) minimising, on clean images,

    α · CE(model with masks) + (1 − α) · CE(model with masks and the worst perturbation),

where a perturbation multiplies each channel's scale by (m + δ) and its shift by (1 + ξ),
δ, ξ ∈ [−ε, ε], and the worst one is found by gradient ascent from a random start (ANP's one
step of size ε). Channels whose mask falls lowest are the ones that only the perturbation
robustness asks to remove: the backdoor's. ANP prunes them (mask below 0.2, or the N lowest).

A channel's "scale" here is the γ of the BatchNormalization that follows the conv, else the
conv's kernel slice; its "shift" the β, else the conv's bias. ANP's models all have BN; the
zoo's plain, LeNet and dense nets do not. BatchNorm runs in inference mode (ANP's code trains
its masks with BN in training mode; with 1,000 images inference mode keeps the statistics the
deployed model uses). The model is never changed: everything works on values passed to
``stateless_call`` (rnp_probe.py's plumbing).
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
from rnp_probe import ChannelMasks, _scaled, _split_head, pruned_measure  # noqa: E402

from kerasaudit import _tf  # noqa: E402
from kerasaudit.inventory import AuditableLayer, find_layer  # noqa: E402
from kerasaudit.pruning import _variable  # noqa: E402


@dataclass(frozen=True)
class AnpSettings:
    eps: float = 0.4  # ANP's default perturbation budget
    alpha: float = 0.2  # weight of the natural loss (ANP's default)
    mask_rate: float = 0.2  # SGD, momentum 0.9 (ANP's)
    iterations: int = 2000  # ANP's
    batch_size: int = 128
    seed: int = 0
    sign: bool = False  # the ascent step along the gradient's sign (FGSM-like), not ANP's raw one


@dataclass(frozen=True, eq=False)
class AnpScores(ChannelMasks):
    clean_accuracy: float  # masked model, no perturbation, last pass over the data
    perturbed_accuracy: float  # masked model under the worst perturbation found


def _shifted(model: Any, info: AuditableLayer) -> list[tuple[Any, tuple[int, ...]]]:
    """The variables a channel's shift scales: the following BN's β, else the conv's bias."""
    if info.batch_norm is not None:
        beta = _variable(find_layer(model, info.batch_norm), "beta")
        return [] if beta is None else [(beta, (-1,))]
    bias = _variable(find_layer(model, info.path), "bias")
    return [] if bias is None else [(bias, (-1,))]


def scores(
    model: Any,
    x: np.ndarray,
    y: np.ndarray,
    layers: Sequence[AuditableLayer],
    settings: AnpSettings | None = None,
) -> AnpScores:
    settings = settings or AnpSettings()
    tf = _tf.tf()
    rng = np.random.default_rng(settings.seed)
    tf.random.set_seed(settings.seed)
    y = np.asarray(y).astype(np.int64)
    body, kernel, bias, logits = _split_head(model)
    trainable = list(body.trainable_variables)
    stats = [v.value for v in body.non_trainable_variables]
    head = [v.value for v in (kernel, bias) if v is not None]
    weights = [v.value for v in trainable]
    index = {id(v): i for i, v in enumerate(trainable)}
    scale: list[tuple[int, int, tuple[int, ...]]] = []  # (weight index, layer index, shape)
    shift: list[tuple[int, int, tuple[int, ...]]] = []
    for j, info in enumerate(layers):
        scale += [(index[id(v)], j, s) for v, s in _scaled(model, info)]
        shift += [(index[id(v)], j, s) for v, s in _shifted(model, info)]
    masks = [tf.Variable(tf.ones((info.channels,), tf.float32)) for info in layers]
    velocity = [tf.Variable(tf.zeros_like(m)) for m in masks]
    eps = settings.eps

    def forward(
        xb: Any, mult: Sequence[Any], add: Sequence[Any]
    ) -> Any:  # log-probabilities of the model with per-channel multipliers
        values = list(weights)
        for i, j, shape in scale:
            values[i] = values[i] * tf.cast(tf.reshape(mult[j], shape), values[i].dtype)
        for i, j, shape in shift:
            values[i] = values[i] * tf.cast(tf.reshape(add[j], shape), values[i].dtype)
        out, _ = body.stateless_call(values, stats, xb, training=False)
        out = tf.cast(out, tf.float32)
        if head:
            out = tf.matmul(out, tf.cast(head[0], tf.float32))
            if len(head) == 2:
                out = out + tf.cast(head[1], tf.float32)
        return tf.nn.log_softmax(out) if logits else tf.math.log(tf.clip_by_value(out, 1e-12, 1))

    def nll(logp: Any, labels: Any) -> Any:
        return -tf.reduce_mean(tf.gather(logp, labels, axis=1, batch_dims=1))

    @tf.function(reduce_retracing=True)
    def step(xb: Any, yb: Any) -> tuple[Any, Any]:
        # the worst perturbation: a random start, one ascent step of size ε (ANP's), clipped
        delta = [tf.random.uniform(tf.shape(m), -eps, eps) for m in masks]
        xi = [tf.random.uniform(tf.shape(m), -eps, eps) for m in masks]
        with tf.GradientTape() as tape:
            tape.watch(delta + xi)
            loss = nll(
                forward(
                    xb, [m + d for m, d in zip(masks, delta, strict=True)], [1 + e for e in xi]
                ),
                yb,
            )
        grads = tape.gradient(loss, delta + xi)
        n = len(masks)
        if settings.sign:
            grads = [tf.sign(g) for g in grads]
        delta = [
            tf.clip_by_value(d + eps * g, -eps, eps) for d, g in zip(delta, grads[:n], strict=True)
        ]
        xi = [tf.clip_by_value(e + eps * g, -eps, eps) for e, g in zip(xi, grads[n:], strict=True)]
        delta = [tf.stop_gradient(d) for d in delta]
        xi = [tf.stop_gradient(e) for e in xi]
        with tf.GradientTape() as tape:
            noisy = forward(
                xb, [m + d for m, d in zip(masks, delta, strict=True)], [1 + e for e in xi]
            )
            clean = forward(xb, list(masks), [tf.ones_like(m) for m in masks])
            loss = settings.alpha * nll(clean, yb) + (1 - settings.alpha) * nll(noisy, yb)
        grads = tape.gradient(loss, masks)
        for m, g, v in zip(masks, grads, velocity, strict=True):
            v.assign(0.9 * v + g)
            m.assign(tf.clip_by_value(m - settings.mask_rate * v, 0.0, 1.0))

        def hits(logp: Any) -> Any:
            return tf.reduce_sum(tf.cast(tf.argmax(logp, axis=-1) == yb, tf.int32))

        return hits(clean), hits(noisy)

    done = 0
    clean_hits = noisy_hits = seen = 0
    while done < settings.iterations:
        order = rng.permutation(len(x))
        clean_hits = noisy_hits = seen = 0
        for start in range(0, len(x), settings.batch_size):
            take = order[start : start + settings.batch_size]
            c, p = step(tf.constant(x[take]), tf.constant(y[take]))
            clean_hits += int(c)
            noisy_hits += int(p)
            seen += len(take)
            done += 1
            if done >= settings.iterations:
                break
    return AnpScores(
        layers=tuple(layers),
        masks=tuple(np.asarray(m.numpy(), dtype=np.float64) for m in masks),
        clean_accuracy=clean_hits / max(seen, 1),
        perturbed_accuracy=noisy_hits / max(seen, 1),
    )


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("models", nargs="+")
    parser.add_argument("--dir")
    parser.add_argument("--eps", type=float, default=AnpSettings.eps)
    parser.add_argument("--alpha", type=float, default=AnpSettings.alpha)
    parser.add_argument("--iterations", type=int, default=AnpSettings.iterations)
    parser.add_argument("--sign", action="store_true", help="signed ascent step")
    parser.add_argument(
        "--thresholds", nargs="*", type=float, default=[0.05, 0.1, 0.2, 0.3, 0.5, 0.7]
    )
    parser.add_argument("--counts", nargs="*", type=int, default=[1, 2, 4, 8, 16, 32])
    parser.add_argument("--out", default="/tmp/anp/probe.jsonl")
    args = parser.parse_args()
    from kerasaudit.inventory import auditable_layers
    from kerasaudit.loading import load_model

    root = zoo.zoo_dir(args.dir)
    xd, yd = zoo.load_split(root, "defender")
    xe, ye = zoo.load_split(root, "eval")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    settings = AnpSettings(
        eps=args.eps, alpha=args.alpha, iterations=args.iterations, sign=args.sign
    )
    for name in args.models:
        recipe = BY_NAME[name]
        model = load_model(root / "models" / recipe.filename).model
        layers = [i for i in auditable_layers(model) if not i.class_name.startswith("Dense")]
        started = time.time()
        s = scores(model, xd, yd, layers, settings)
        seconds = time.time() - started
        before = zoo.measure(model, recipe, xe, ye)
        print(
            f"{name} (ε {settings.eps}, α {settings.alpha}): masked acc {s.clean_accuracy:.3f}, "
            f"perturbed {s.perturbed_accuracy:.3f}, {seconds:.0f} s; before acc "
            f"{100 * before['accuracy']:.2f} ASR {[round(100 * a, 2) for a in before['asr']]}",
            flush=True,
        )
        total = sum(len(m) for m in s.masks)
        print(
            f"  {total} channels; lowest: "
            + ", ".join(f"{s.layers[i].path}:{c}={m:.2f}" for m, i, c in s.ranked()[:10])
        )
        rows = []
        for kind, value in [("count", c) for c in args.counts] + [
            ("below", t) for t in args.thresholds
        ]:
            chosen = s.lowest(int(value)) if kind == "count" else s.below(value)
            n, after, acc_d = pruned_measure(model, recipe, chosen, (xe, ye), (xd, yd))
            rows.append(
                {"kind": kind, "value": value, "n": n, "acc": after["accuracy"]}
                | {"asr": after["asr"], "defender_acc": acc_d}
            )
            print(
                f"  {kind} {value:<5} n {n:4d} acc {100 * after['accuracy']:.2f} "
                f"(Δ {100 * (after['accuracy'] - before['accuracy']):+.2f}) defender "
                f"{100 * acc_d:.1f} ASR {' / '.join(f'{100 * a:.2f}' for a in after['asr'])}",
                flush=True,
            )
        with open(args.out, "a") as f:
            record = {
                "model": name, "settings": settings.__dict__, "seconds": round(seconds, 1),
                "before": before, "rows": rows, "layers": [i.path for i in s.layers],
                "masks": [m.round(4).tolist() for m in s.masks],
            }  # fmt: skip
            f.write(json.dumps(record) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

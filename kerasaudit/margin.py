"""Maximum achievable margin per label (MM-BD; Wang, Xiang, Miller & Kesidis, IEEE S&P 2024).

For every label ``k`` gradient ascent looks for an input that maximises the logit margin
``z_k(x) − max_{j≠k} z_j(x)`` over the whole input box, from ``starts`` random starting
points; the label's statistic is the largest margin reached. A backdoor is a shortcut the model
learnt to trust absolutely: whatever the trigger's shape (patch, blend, sinusoid, warp), the
neurons it drives can be pushed far beyond what clean features reach, so the target's maximum
margin stands out from the other labels'. No clean data is needed (only the input range), and
the cost is ``starts × steps`` images forward and backward per label, all labels in one
compiled step.

The statistic is the same idea as Cheng et al.'s ℓ∞ bias, read at the output: a backdoor shows
up as an activation that is unbounded compared with how the rest of the model behaves.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from kerasaudit import _tf
from kerasaudit.errors import BadInputError
from kerasaudit.evaluation import logit_margin, logits_function

_EPSILON = 1e-6


@dataclass(frozen=True)
class MarginConfig:
    starts: int = 24  # random starting inputs per label
    steps: int = 300  # Adam steps
    learning_rate: float = 0.05  # on the tanh-parameterised input
    seed: int = 0

    def check(self) -> None:
        if self.starts < 1 or self.steps < 1 or self.learning_rate <= 0:
            raise BadInputError("margin search needs starts ≥ 1, steps ≥ 1 and a positive rate")

    def to_dict(self) -> dict[str, Any]:
        return {
            "starts": self.starts,
            "steps": self.steps,
            "learning_rate": self.learning_rate,
            "seed": self.seed,
        }


@dataclass(frozen=True)
class MarginResult:
    labels: tuple[int, ...]
    margins: tuple[float, ...]  # per label: the largest logit margin reached
    config: MarginConfig
    seconds: float
    skipped: str | None = None  # why no margin was computed (no reachable logits)

    def margin(self, label: int) -> float:
        return self.margins[self.labels.index(label)]

    def to_dict(self) -> dict[str, Any]:
        return {
            "labels": list(self.labels),
            "margins": [float(m) for m in self.margins],
            "config": self.config.to_dict(),
            "seconds": self.seconds,
            "skipped": self.skipped,
        }


def max_margins(
    model: Any,
    input_shape: Sequence[int],
    labels: Sequence[int],
    value_range: tuple[float, float],
    config: MarginConfig | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> MarginResult:
    """The largest logit margin reachable for each of ``labels`` (see module doc)."""
    import time

    started = time.perf_counter()
    config = config or MarginConfig()
    config.check()
    logits = logits_function(model)
    if logits is None:
        return MarginResult(
            tuple(labels),
            tuple(float("nan") for _ in labels),
            config,
            0.0,
            skipped="the model's logits are not reachable (single sigmoid unit, or a softmax "
            "fused into a layer other than Dense)",
        )
    tf = _tf.tf()
    keras = _tf.keras()
    labels = [int(k) for k in labels]
    n, starts = len(labels), config.starts
    rng = np.random.default_rng([config.seed, 11])
    start = rng.random((n * starts, *input_shape), dtype=np.float32)
    raw = tf.Variable(np.arctanh((start - 0.5) * (2 - _EPSILON)).astype(np.float32))
    targets = tf.constant(np.repeat(np.asarray(labels, np.int32), starts))
    low, high = float(value_range[0]), float(value_range[1])
    optimizer = keras.optimizers.Adam(config.learning_rate)
    optimizer.build([raw])
    best = tf.Variable(tf.fill([n * starts], -np.inf))

    @tf.function
    def run(count: Any) -> None:
        for _ in tf.range(count):
            with tf.GradientTape() as tape:
                x = low + (high - low) * (tf.tanh(raw) / (2 - _EPSILON) + 0.5)
                margin = logit_margin(logits(x), targets)
                loss = -tf.reduce_sum(margin)
            optimizer.apply_gradients([(tape.gradient(loss, raw), raw)])
            best.assign(tf.maximum(best, margin))

    chunk = 50
    for done in range(0, config.steps, chunk):
        run(tf.constant(min(chunk, config.steps - done)))
        if progress is not None:
            progress(min(config.steps, done + chunk), config.steps)
    per_start = np.asarray(best.numpy(), np.float64).reshape(n, starts)
    return MarginResult(
        tuple(labels),
        tuple(float(v) for v in per_start.max(axis=1)),
        config,
        time.perf_counter() - started,
    )

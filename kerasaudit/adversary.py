"""Adversarial unlearning: a recovered trigger that keeps attacking the model being fine-tuned.

Unlearning with the one trigger Neural Cleanse recovered teaches the model to ignore *that*
trigger. Measured on the zoo (JOURNAL.md, "Removal without the trigger"): 4–6 % of a patch or SIG
trigger and 15–46 % of a position-free patch, a blend or an all-to-all backdoor survived it.
The recovered trigger is one point of the backdoor's trigger set, and fine-tuning moves the
backdoor off that point.

Here each recovered trigger becomes a *universal adversary* (in the spirit of I-BAU, Zeng et
al., ICLR 2022, and of BTI-DBF's unlearning, Xu et al., ICLR 2024): before every fine-tuning
step it takes one signed-gradient step that sends the clean batch to its target again (or,
untargeted, off each image's own class), inside a budget of its starting size (mask ℓ1 or
perturbation ℓ2 × :attr:`AdversarySettings.budget`); the stamped share of the batch then
carries its current form, true labels kept. A compact mask (a patch covering at most a quarter
of the image) is stamped at a random position for :attr:`AdversarySettings.shift` of its
stamps: a trigger that works anywhere is unlearnt anywhere.

Measured (benchmarks/zoo/removal.py, README): it lowered the residual real-trigger ASR on 9 of
12 flagged zoo models but cost more accuracy on 8 and met the goal (≤ 2 % at ≤ 1.5 points) on
fewer (2 of 13 against 3), so ``--adversarial`` is opt-in.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from kerasaudit import _tf
from kerasaudit.triggers import Trigger, half_peak_region

ScoresFn = Callable[[Any, bool], Any]  # (x, training) -> log-probabilities (n, K)
COMPACT = 0.25  # a mask whose half-peak bounding box covers at most this share is a patch


@dataclass(frozen=True)
class AdversarySettings:
    budget: float = 1.5  # × the starting trigger's mask ℓ1 (or perturbation ℓ2)
    step: float = 0.02  # signed-gradient step: mask units; × the value range for pattern/δ
    shift: float = 0.5  # share of a compact mask's stamps placed at a random position
    # "universal": the trigger in its own form (UniversalAdversary); "generator": the trigger
    # generalised to an image-dependent change (GeneratorAdversary; defend fits it and then
    # keeps it fixed: finetune.GENERATOR_FIT, DefenceSettings.generalise)
    form: str = "universal"
    rate: float = 0.01  # GeneratorAdversary's Adam step size
    hidden: int = 16  # GeneratorAdversary's convolution channels
    warmup: int = 3  # GeneratorAdversary's passes over the clean data before fine-tuning
    refresh: bool = True  # GeneratorAdversary keeps attacking after its warm-up (False: fixed)


class UniversalAdversary:
    """One trigger (mask + pattern, or an additive δ) that re-attacks the model each step.

    ``target`` None: untargeted (an all-to-all backdoor's trigger pushes images off their own
    class). ``scores(x, training)`` gives the model's log-probabilities."""

    def __init__(
        self,
        trigger: Trigger,
        target: int | None,
        scores: ScoresFn,
        value_range: tuple[float, float],
        settings: AdversarySettings | None = None,
    ) -> None:
        tf = _tf.tf()
        self.target = target  # the label it attacks toward (None: untargeted)
        self.settings = settings or AdversarySettings()
        self.low, self.high = (float(v) for v in value_range)
        self.channels = len(trigger.input_shape) == 3
        mask = np.asarray(trigger.mask, np.float32)
        self.additive = trigger.delta is not None and not mask.any()
        span = self.high - self.low
        if self.additive:
            assert trigger.delta is not None
            delta = np.asarray(trigger.delta, np.float32)
            delta = delta if self.channels else delta[..., 0]
            self.limit = self.settings.budget * float(np.sqrt(np.square(delta).sum()))
            self.variables = [tf.Variable(delta, trainable=False)]
            self.steps = [self.settings.step * span]
            self.box: tuple[slice, slice] | None = None
        else:
            pattern = np.asarray(trigger.pattern, np.float32)
            m = mask[..., np.newaxis] if self.channels else mask
            p = pattern if self.channels else pattern[..., 0]
            self.limit = self.settings.budget * float(mask.sum())
            self.variables = [tf.Variable(m, trainable=False), tf.Variable(p, trainable=False)]
            self.steps = [self.settings.step, self.settings.step * span]
            self.box = compact_box(mask)

        def stamp(x: Any) -> Any:
            if self.additive:
                return tf.clip_by_value(x + self.variables[0], self.low, self.high)
            m, p = self.variables
            return (1.0 - m) * x + m * p

        @tf.function(reduce_retracing=True)
        def step(xb: Any, yb: Any) -> Any:
            grads, hits = _attack_gradients(tf, self.variables, scores, stamp, xb, yb, target)
            for variable, grad, size in zip(self.variables, grads, self.steps, strict=True):
                variable.assign(variable - size * tf.sign(grad))
            self._project(tf)
            return hits

        self._step = step

    def _project(self, tf: Any) -> None:
        if self.additive:
            (delta,) = self.variables
            norm = tf.sqrt(tf.reduce_sum(tf.square(delta)) + 1e-12)
            delta.assign(delta * tf.minimum(1.0, self.limit / norm))
            return
        mask, pattern = self.variables
        mask.assign(_project_mask(tf, mask, self.limit))
        pattern.assign(tf.clip_by_value(pattern, self.low, self.high))

    def update(self, x: np.ndarray, y: np.ndarray) -> float:
        """One attack step on a clean batch (labels: its true classes); returns the share of
        the batch the trigger sent to its target (untargeted: off its class) before the step."""
        tf = _tf.tf()
        return float(self._step(tf.constant(x, tf.float32), tf.constant(y, tf.int32)))

    def apply(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """The batch stamped with the current trigger (a compact mask: some at random
        positions); ``x`` is untouched."""
        x = np.asarray(x, np.float32)
        if self.additive:
            return np.clip(x + self.variables[0].numpy(), self.low, self.high)
        mask, pattern = (v.numpy() for v in self.variables)
        masks = np.repeat(mask[np.newaxis], len(x), axis=0)
        patterns = np.repeat(pattern[np.newaxis], len(x), axis=0)
        if self.box is not None:
            for i in np.flatnonzero(rng.random(len(x)) < self.settings.shift):
                masks[i], patterns[i] = self._moved(mask, pattern, rng)
        return (1.0 - masks) * x + masks * patterns

    def _moved(
        self, mask: np.ndarray, pattern: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """Mask and pattern inside the compact box, moved to a random place in the image."""
        assert self.box is not None
        rows, cols = self.box
        height, width = mask.shape[:2]
        dy = int(rng.integers(-rows.start, height - rows.stop + 1))
        dx = int(rng.integers(-cols.start, width - cols.stop + 1))
        m = np.zeros_like(mask)
        p = np.zeros_like(pattern)
        to = (slice(rows.start + dy, rows.stop + dy), slice(cols.start + dx, cols.stop + dx))
        m[to] = mask[rows, cols]
        p[to] = pattern[rows, cols]
        return m, p


class GeneratorAdversary:
    """A recovered trigger generalised to an image-dependent change, fitted against the model
    being fine-tuned (BTI-DBF's unlearning in spirit, Xu et al., ICLR 2024, whose generator
    maps each image to its own poisoned version).

    The change is ``δ(x) = B + A·x + c(x)``: per-pixel ``A`` and ``B`` (a mask trigger starts
    as ``A = −m``, ``B = m·p``, an additive one as ``B = δ``) and a two-layer 3×3 convolution
    ``c`` whose last layer starts at zero, so the adversary starts as the recovered trigger
    itself. A blended trigger ``(1 − α)·x + α·p`` is exactly of this form (``A = −α``,
    ``B = α·p``) while a universal additive perturbation cannot express its ``−α·x`` part, and
    ``c`` can follow image-dependent changes (a warp moves edges). Each image's change is kept
    within an ℓ2 budget of :attr:`AdversarySettings.budget` × the starting trigger's mean
    per-image change. It is fitted toward the target (untargeted: off each image's class) by
    :attr:`AdversarySettings.warmup` passes of Adam steps over ``x`` (with ``labels``) against
    the model as it is, then by one step per fine-tuning batch — or, with
    :attr:`AdversarySettings.refresh` off (``defend``'s way), not at all: re-attacking every
    step was adversarial training on 1,000 images and cost 2.4-5 points on the zoo (README,
    "Eighth session")."""

    def __init__(
        self,
        trigger: Trigger,
        target: int | None,
        scores: ScoresFn,
        value_range: tuple[float, float],
        settings: AdversarySettings,
        x: np.ndarray,
        labels: np.ndarray | None = None,
        seed: int = 0,
    ) -> None:
        tf = _tf.tf()
        self.target = target  # the label it attacks toward (None: untargeted)
        self.settings = settings
        self.low, self.high = (float(v) for v in value_range)
        x = np.asarray(x, np.float32)
        sample = np.asarray(x[:256], np.float32)
        shape = sample.shape[1:]  # one image in the model's input layout
        change = np.asarray(trigger.apply(sample), np.float32) - sample
        per_image = np.sqrt(np.square(change.reshape(len(sample), -1)).sum(axis=1))
        self.limit = settings.budget * float(per_image.mean())
        mask = np.asarray(trigger.mask, np.float32)
        pattern = np.asarray(trigger.pattern, np.float32)
        m = np.broadcast_to(mask[..., np.newaxis], pattern.shape)
        a = -m.reshape(shape)
        b = (m * pattern).reshape(shape)
        if trigger.delta is not None:
            b = b + np.asarray(trigger.delta, np.float32).reshape(shape)
        self.image_shape = (*mask.shape, pattern.shape[-1])  # (H, W, C)
        rng = np.random.default_rng(seed)
        channels, hidden = self.image_shape[-1], settings.hidden
        w1 = rng.normal(0.0, np.sqrt(2.0 / (9 * channels)), (3, 3, channels, hidden))
        self.variables = [
            tf.Variable(a, dtype=tf.float32, trainable=False),
            tf.Variable(b, dtype=tf.float32, trainable=False),
        ]
        if hidden:  # the convolution path (0: the per-pixel affine change only)
            self.variables += [
                tf.Variable(w1.astype(np.float32), trainable=False),
                tf.Variable(np.zeros(hidden, np.float32), trainable=False),
                tf.Variable(np.zeros((3, 3, hidden, channels), np.float32), trainable=False),
            ]
        moments = [
            (
                tf.Variable(tf.zeros_like(v), trainable=False),
                tf.Variable(tf.zeros_like(v), trainable=False),
            )
            for v in self.variables
        ]
        count = tf.Variable(0.0, trainable=False)

        def stamp(xb: Any) -> Any:
            a, b = self.variables[:2]
            delta = b + a * xb
            if hidden:
                w1, b1, w2 = self.variables[2:]
                images = tf.reshape(xb, (-1, *self.image_shape))
                hidden_map = tf.nn.relu(tf.nn.conv2d(images, w1, 1, "SAME") + b1)
                delta += tf.reshape(tf.nn.conv2d(hidden_map, w2, 1, "SAME"), tf.shape(xb))
            flat = tf.reshape(delta, (tf.shape(xb)[0], -1))
            norm = tf.sqrt(tf.reduce_sum(tf.square(flat), axis=1) + 1e-12)
            scale = tf.minimum(1.0, self.limit / norm)
            scale = tf.reshape(scale, tf.concat([[-1], tf.ones(len(shape), tf.int32)], 0))
            return tf.clip_by_value(xb + delta * scale, self.low, self.high)

        @tf.function(reduce_retracing=True)
        def step(xb: Any, yb: Any) -> Any:
            grads, hits = _attack_gradients(tf, self.variables, scores, stamp, xb, yb, target)
            count.assign_add(1.0)
            beta1, beta2 = 0.9, 0.999
            for variable, grad, (m1, m2) in zip(self.variables, grads, moments, strict=True):
                m1.assign(beta1 * m1 + (1 - beta1) * grad)
                m2.assign(beta2 * m2 + (1 - beta2) * tf.square(grad))
                m_hat = m1 / (1 - beta1**count)
                v_hat = m2 / (1 - beta2**count)
                variable.assign_sub(settings.rate * m_hat / (tf.sqrt(v_hat) + 1e-8))
            return hits

        self._step = step
        self._hits = tf.function(
            lambda xb, yb: _attack_loss(tf, scores(stamp(xb), False), yb, target)[1],
            reduce_retracing=True,
        )
        self._stamp = tf.function(stamp, reduce_retracing=True)
        self._learning = True
        if labels is not None:
            y = np.asarray(labels, np.int32)
            for _ in range(settings.warmup):
                order = rng.permutation(len(x))
                for start in range(0, len(order), 64):
                    idx = order[start : start + 64]
                    self.update(x[idx], y[idx])
        self._learning = settings.refresh

    def update(self, x: np.ndarray, y: np.ndarray) -> float:
        """One attack step on a clean batch (none after the warm-up when
        :attr:`AdversarySettings.refresh` is off); the share it sent to its target before."""
        tf = _tf.tf()
        attack = self._step if self._learning else self._hits
        return float(attack(tf.constant(x, tf.float32), tf.constant(y, tf.int32)))

    def apply(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Each image of the batch changed by the current generator; ``x`` is untouched."""
        tf = _tf.tf()
        return np.asarray(self._stamp(tf.constant(np.asarray(x, np.float32))))


def _attack_loss(tf: Any, logp: Any, yb: Any, target: int | None) -> tuple[Any, Any]:
    """An adversary's loss on log-probabilities ``logp`` (toward ``target``; None: off each
    image's class ``yb``) and the share of the batch it already sends there."""
    if target is None:
        p_own = tf.exp(tf.gather(logp, yb, batch_dims=1))
        loss = -tf.reduce_mean(tf.math.log(tf.clip_by_value(1.0 - p_own, 1e-7, 1.0)))
        hits = tf.not_equal(tf.argmax(logp, axis=-1, output_type=yb.dtype), yb)
    else:
        loss = -tf.reduce_mean(logp[:, target])
        hits = tf.equal(tf.argmax(logp, axis=-1), target)
    return loss, tf.reduce_mean(tf.cast(hits, tf.float32))


def _attack_gradients(
    tf: Any,
    variables: list[Any],
    scores: ScoresFn,
    stamp: Callable[[Any], Any],
    xb: Any,
    yb: Any,
    target: int | None,
) -> tuple[list[Any], Any]:
    """The gradient of :func:`_attack_loss` on the batch ``stamp(xb)`` with respect to an
    adversary's ``variables``, and the share of the batch already sent to the target."""
    with tf.GradientTape() as tape:
        tape.watch(variables)
        loss, hits = _attack_loss(tf, scores(stamp(xb), False), yb, target)
    return tape.gradient(loss, variables), hits


def _project_mask(tf: Any, v: Any, limit: float, iterations: int = 30) -> Any:
    """The Euclidean projection of ``v`` onto {0 ≤ m ≤ 1, Σm ≤ limit}: ``clip(v − θ, 0, 1)``
    with the smallest θ ≥ 0 that meets the budget (bisection). Unlike rescaling, it keeps a
    patch's strong pixels at full strength and drops the faint ones that sign steps spread over
    the whole image (rescaling diluted a recovered patch until it no longer worked)."""

    def total(theta: Any) -> Any:
        return tf.reduce_sum(tf.clip_by_value(v - theta, 0.0, 1.0))

    low = tf.constant(0.0)
    high = tf.maximum(tf.reduce_max(v), 0.0)
    for _ in range(iterations):
        mid = 0.5 * (low + high)
        over = total(mid) > limit
        low = tf.where(over, mid, low)
        high = tf.where(over, high, mid)
    theta = tf.where(total(0.0) > limit, high, 0.0)
    return tf.clip_by_value(v - theta, 0.0, 1.0)


def compact_box(mask: np.ndarray) -> tuple[slice, slice] | None:
    """The half-peak bounding box (one pixel of margin) of a patch-like mask, else None."""
    region = half_peak_region(mask)
    if not region.any():
        return None
    rows = np.flatnonzero(region.any(axis=1))
    cols = np.flatnonzero(region.any(axis=0))
    height, width = mask.shape
    r0, r1 = max(0, rows[0] - 1), min(height, rows[-1] + 2)
    c0, c1 = max(0, cols[0] - 1), min(width, cols[-1] + 2)
    if (r1 - r0) * (c1 - c0) > COMPACT * height * width:
        return None
    return slice(int(r0), int(r1)), slice(int(c0), int(c1))

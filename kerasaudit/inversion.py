"""Batched trigger inversion: Neural Cleanse's optimisation for every label at once, in two
trigger forms and two objectives.

Forms (:class:`MaskForm`, :class:`AdditiveForm`, :class:`WarpForm`):

- **mask** (Neural Cleanse, Wang et al., IEEE S&P 2019): a mask ``m`` (H×W in [0, 1]) and a
  pattern ``p`` (H×W×C in the input range), stamped as ``(1 − m)·x + m·p``, regularised by
  ``‖m‖₁``. Both are parameterised through tanh as NC does. Finds patch triggers.
- **additive**: one perturbation ``δ`` (H×W×C) added to every image, ``clip(x + δ)``,
  regularised by ``‖δ‖₂``. A blended pattern, a sinusoidal signal or a small warp changes every
  pixel a little; NC's mask must then cover the whole image and stops standing out, while the
  smallest universal perturbation that sends images to a backdoor's target is far smaller
  than for other labels.
- **warp**: one smooth displacement field per row (WaNet-style triggers move pixels instead of
  painting them), regularised by its root-mean-square displacement in pixels.

Objectives, per row: *targeted* (send every image to label ``k``: NC) or *untargeted* (push
every image off its own class with one trigger: ``−log(1 − p_y)``). An all-to-all backdoor
(label y → y + 1) gives no label an unusually small targeted trigger — each target only
collects one source class — but one small patch then moves every image off its class.

Schedule (NC's, per row): cost starts at ``init_cost``; after ``patience`` rounds with attack
success ≥ the threshold it is multiplied by ``cost_multiplier``, after ``patience`` rounds
below divided by ``cost_multiplier**1.5``; the smallest trigger seen above the threshold is
kept; a row stops early once both adjustments have happened and its best trigger has not
shrunk for ``early_stop_patience`` rounds.

How it is fast: trigger variables and Adam moments of all rows are stacked along a row axis;
one compiled step stamps each active row's trigger on its own batch of B clean images and
runs the model once on the n·B stamped images; a round of steps runs inside one
``tf.function`` call. Each row's initialisation and batches are drawn from (seed, label), so
its result does not depend on the rows run beside it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from kerasaudit import _tf
from kerasaudit.evaluation import log_probabilities, outputs_probabilities

ProgressFn = Callable[[int, int], None]  # (row-steps done, row-steps in total)

UNTARGETED = -1  # the "label" of an untargeted row
_EPSILON = 1e-7  # Keras' epsilon, as NC uses in its tanh parameterisation


@dataclass(frozen=True)
class InversionConfig:
    """One inversion run's schedule (defaults: Neural Cleanse's, rounds for its epochs)."""

    steps: int = 1000  # most optimisation steps (mini-batches) per row
    batch_size: int = 32  # clean images per step and row
    round_steps: int = 10  # steps between cost-schedule decisions (NC: one epoch)
    learning_rate: float = 0.1
    init_cost: float = 1e-3
    cost_multiplier: float = 1.5  # up ×1.5, down ÷1.5^1.5
    patience: int = 5  # rounds before the cost is changed
    attack_threshold: float = 0.99  # targeted rows
    untargeted_threshold: float = 0.9  # untargeted rows (a model's own errors count as hits)
    # Untargeted rows also pay this × KL(the batch's mean prediction ‖ uniform), so that a mask
    # sending every class to one natural sink costs more than one sending each class somewhere
    # else (0: plain NC untargeted; reverse's default is ReverseConfig.untargeted_spread).
    untargeted_spread: float = 0.0
    early_stop: bool = True
    early_stop_patience: int = 25  # rounds (NC: 5 × patience)
    label_batch: int | None = None  # rows optimised at once (None: all)
    seed: int = 0

    def threshold(self, label: int) -> float:
        return self.untargeted_threshold if label == UNTARGETED else self.attack_threshold


@dataclass
class _LabelState:
    """NC's per-row schedule bookkeeping (host side, updated once per round)."""

    label: int
    cost: float
    steps: int = 0
    best_l1: float = math.inf  # the smallest regulariser value seen above the threshold
    best: tuple[np.ndarray, ...] | None = None  # the trigger arrays at that point
    set_counter: int = 0
    up_counter: int = 0
    down_counter: int = 0
    up_flag: bool = False
    down_flag: bool = False
    early_counter: int = 0
    early_best: float = math.inf
    done: bool = False
    early_stopped: bool = False
    history: list[tuple[float, float, float]] = field(default_factory=list)  # (acc, reg, cost)

    @property
    def reached(self) -> bool:
        return self.best_l1 < math.inf


@dataclass(frozen=True, eq=False)
class InvertedTrigger:
    """What the optimisation found for one row."""

    label: int  # UNTARGETED for an untargeted row
    # mask: (mask (H, W), pattern); additive: (delta,); warp: (flow (H, W, 2),)
    arrays: tuple[np.ndarray, ...]
    size: float  # ‖m‖₁, ‖δ‖₂ or the field's RMS displacement of the kept trigger
    reached: bool  # attack success ≥ threshold was reached (else: the last trigger is kept)
    steps: int
    early_stopped: bool
    final_cost: float


class TriggerForm(Protocol):
    """How a row's trigger is parameterised, stamped and measured."""

    @property
    def name(self) -> str: ...

    def create(
        self, tf: Any, rows: Sequence[int], shape: tuple[int, int, int], seed: int
    ) -> list[Any]:
        """The trigger variables (row axis first), initialised per (seed, row label)."""
        ...

    def stamp(self, tf: Any, params: Sequence[Any], xb: Any) -> tuple[Any, Any]:
        """(stamped (n, B, H, W, C), regulariser (n,)) for gathered rows ``params``."""
        ...

    def arrays(self, tf: Any, params: Sequence[Any]) -> list[np.ndarray]:
        """The trigger arrays of gathered rows, row axis first."""
        ...


def _row_rng(seed: int, label: int, stream: int) -> np.random.Generator:
    # NC rows draw from (seed, label), exactly as before untargeted rows existed.
    key = [seed, label] if stream == 0 else [seed, label + 1_000_000 * stream]
    return np.random.default_rng([abs(k) for k in key] + ([1] if label < 0 else []))


@dataclass(frozen=True)
class MaskForm:
    """Neural Cleanse's mask and pattern (see module doc). ``allowed`` (H×W, 0 or 1): where
    the mask may act; it is held at 0 elsewhere (a search with what was found forbidden)."""

    low: float
    high: float
    name: str = "mask"
    allowed: np.ndarray | None = field(default=None, compare=False)

    def create(
        self, tf: Any, rows: Sequence[int], shape: tuple[int, int, int], seed: int
    ) -> list[Any]:
        height, width, channels = shape
        mask0 = np.empty((len(rows), height, width, 1), np.float32)
        pattern0 = np.empty((len(rows), height, width, channels), np.float32)
        for i, label in enumerate(rows):
            rng = _row_rng(seed, label, 0)
            mask0[i] = rng.random((height, width, 1), dtype=np.float32)
            pattern0[i] = rng.random((height, width, channels), dtype=np.float32)
        return [tf.Variable(_arctanh(mask0), trainable=False),
                tf.Variable(_arctanh(pattern0), trainable=False)]  # fmt: skip

    def _trigger(self, tf: Any, params: Sequence[Any]) -> tuple[Any, Any]:
        mask = tf.tanh(params[0]) / (2 - _EPSILON) + 0.5
        if self.allowed is not None:
            mask = mask * tf.constant(np.asarray(self.allowed, np.float32)[None, :, :, None])
        unit = tf.tanh(params[1]) / (2 - _EPSILON) + 0.5
        return mask, self.low + (self.high - self.low) * unit

    def stamp(self, tf: Any, params: Sequence[Any], xb: Any) -> tuple[Any, Any]:
        mask, pattern = self._trigger(tf, params)
        # (n, 1, H, W, ·) against (n, B, H, W, C): each row's trigger on its batch.
        stamped = (1 - mask[:, None]) * xb + (mask * pattern)[:, None]
        return stamped, tf.reduce_sum(mask, axis=[1, 2, 3])

    def arrays(self, tf: Any, params: Sequence[Any]) -> list[np.ndarray]:
        mask, pattern = self._trigger(tf, params)
        # tanh/(2 − ε) + 0.5 can round a hair outside [0, 1] in float32.
        return [np.clip(np.asarray(mask)[..., 0], 0.0, 1.0),
                np.clip(np.asarray(pattern), self.low, self.high)]  # fmt: skip


@dataclass(frozen=True)
class AdditiveForm:
    """One additive perturbation per row, ``clip(x + δ)``, regularised by ``‖δ‖₂``."""

    low: float
    high: float
    name: str = "additive"

    def create(
        self, tf: Any, rows: Sequence[int], shape: tuple[int, int, int], seed: int
    ) -> list[Any]:
        # A small random start (zero has the same gradient for every row's sign pattern).
        scale = 1e-3 * (self.high - self.low)
        delta0 = np.stack(
            [_row_rng(seed, label, 2).normal(0, scale, shape) for label in rows]
        ).astype(np.float32)
        return [tf.Variable(delta0, trainable=False)]

    def stamp(self, tf: Any, params: Sequence[Any], xb: Any) -> tuple[Any, Any]:
        delta = params[0]
        stamped = tf.clip_by_value(xb + delta[:, None], self.low, self.high)
        norm = tf.sqrt(tf.reduce_sum(tf.square(delta), axis=[1, 2, 3]) + 1e-12)
        return stamped, norm

    def arrays(self, tf: Any, params: Sequence[Any]) -> list[np.ndarray]:
        return [np.asarray(params[0], np.float32)]


@dataclass(frozen=True)
class WarpForm:
    """One smooth warp field per row (WaNet-style triggers, :mod:`kerasaudit.warping`): a
    ``grid``×``grid`` field of displacements in pixels, upsampled bicubically to the image,
    regularised by its root-mean-square displacement. A warp trigger moves pixels instead of
    painting them; the smallest warp that sends images to a backdoor's target is far smaller
    than for other labels."""

    height: int
    width: int
    grid: int = 4  # WaNet's k
    name: str = "warp"

    def create(
        self, tf: Any, rows: Sequence[int], shape: tuple[int, int, int], seed: int
    ) -> list[Any]:
        field0 = np.stack(
            [_row_rng(seed, label, 3).normal(0, 0.05, (self.grid, self.grid, 2)) for label in rows]
        ).astype(np.float32)
        return [tf.Variable(field0, trainable=False)]

    def _flow(self, tf: Any, params: Sequence[Any]) -> Any:
        return tf.image.resize(params[0], (self.height, self.width), method="bicubic")

    def stamp(self, tf: Any, params: Sequence[Any], xb: Any) -> tuple[Any, Any]:
        from kerasaudit.warping import warp_tf

        flow = self._flow(tf, params)  # (n, H, W, 2)
        n, batch = tf.shape(xb)[0], tf.shape(xb)[1]
        flat = tf.reshape(xb, tf.concat([[n * batch], tf.shape(xb)[2:]], 0))
        # each row's field once per image: broadcast, not tf.repeat, whose gradient transposes
        # an int32 tensor, which oneDNN builds of TensorFlow log as an error ("E0000 …
        # oneDNN supports DT_INT32 only on platforms with AVX-512") on some CPUs
        rest = tf.shape(flow)[1:]
        fields = tf.broadcast_to(flow[:, None], tf.concat([[n, batch], rest], 0))
        warped = warp_tf(flat, tf.reshape(fields, tf.concat([[n * batch], rest], 0)))
        rms = tf.sqrt(tf.reduce_mean(tf.reduce_sum(tf.square(flow), axis=-1), axis=[1, 2]) + 1e-12)
        return tf.reshape(warped, tf.shape(xb)), rms

    def arrays(self, tf: Any, params: Sequence[Any]) -> list[np.ndarray]:
        return [np.asarray(self._flow(tf, params), np.float32)]


def _arctanh(values: np.ndarray) -> np.ndarray:
    return np.arctanh((values - 0.5) * (2 - _EPSILON)).astype(np.float32)


class BatchedInversion:
    """Trigger variables and Adam state of every row, stacked on a row axis (module doc)."""

    def __init__(
        self,
        model: Any,
        rows: Sequence[int],
        clean: np.ndarray,
        labels: np.ndarray | None,
        form: TriggerForm,
        config: InversionConfig,
        outputs: int,
    ) -> None:
        tf = _tf.tf()
        self._tf = tf
        self.model = model
        self.rows = [int(r) for r in rows]
        if UNTARGETED in self.rows and labels is None:
            raise ValueError("an untargeted row needs the clean images' labels")
        self.config = config
        self.form = form
        n = len(self.rows)
        shape = tuple(int(d) for d in clean.shape[1:])
        assert len(shape) == 3
        self.params = form.create(tf, self.rows, (shape[0], shape[1], shape[2]), config.seed)
        self.moments = [
            (
                tf.Variable(tf.zeros_like(v), trainable=False),
                tf.Variable(tf.zeros_like(v), trainable=False),
            )
            for v in self.params
        ]
        self.adam_t = tf.Variable(tf.zeros([n]), trainable=False)
        self.cost = tf.Variable(tf.fill([n], np.float32(config.init_cost)), trainable=False)
        self.targets = tf.constant(np.asarray(self.rows, np.int64))
        self.clean = tf.Variable(clean, trainable=False)
        y = np.zeros(len(clean), np.int64) if labels is None else np.asarray(labels, np.int64)
        self.clean_y = tf.Variable(y, trainable=False)
        self.probabilities = outputs_probabilities(model)
        self.outputs = outputs
        self._round = self._build_round()

    def _build_round(self) -> Callable[..., Any]:
        tf = self._tf
        cfg = self.config
        lr, beta1, beta2, eps = cfg.learning_rate, 0.5, 0.9, 1e-7

        def step(idx: Any, xb: Any, yb: Any) -> tuple[Any, Any, Any]:
            # xb: (n, B, H, W, C), each row's own batch of clean images; yb: (n, B).
            n = tf.shape(idx)[0]
            batch = tf.shape(xb)[1]
            params = [tf.gather(v, idx) for v in self.params]
            cost = tf.gather(self.cost, idx)
            targets = tf.gather(self.targets, idx)
            targeted = targets >= 0
            with tf.GradientTape() as tape:
                tape.watch(params)
                stamped, reg = self.form.stamp(tf, params, xb)
                stamped = tf.reshape(stamped, tf.concat([[n * batch], tf.shape(xb)[2:]], 0))
                scores = log_probabilities(self.model, stamped, self.outputs, self.probabilities)
                logp = tf.reshape(scores, [n, batch, -1])
                wanted = tf.repeat(tf.maximum(targets, 0)[:, None], batch, axis=1)
                to_target = -tf.reduce_mean(tf.gather(logp, wanted, batch_dims=2), axis=1)
                p_own = tf.exp(tf.gather(logp, yb, batch_dims=2))
                off_own = -tf.reduce_mean(
                    tf.math.log(tf.clip_by_value(1.0 - p_own, 1e-7, 1.0)), axis=1
                )
                if cfg.untargeted_spread:
                    mean_p = tf.reduce_mean(tf.exp(logp), axis=1)  # (n, classes)
                    classes = tf.cast(tf.shape(logp)[-1], tf.float32)
                    kl = tf.reduce_sum(
                        mean_p * tf.math.log(tf.clip_by_value(mean_p * classes, 1e-7, 1e7)),
                        axis=1,
                    )
                    off_own = off_own + cfg.untargeted_spread * kl
                ce = tf.where(targeted, to_target, off_own)
                loss = tf.reduce_sum(ce + cost * reg)  # rows are independent: sum, not mean
            grads = tape.gradient(loss, params)
            predicted = tf.argmax(logp, axis=-1)
            hits = tf.where(
                targeted[:, None], tf.equal(predicted, wanted), tf.not_equal(predicted, yb)
            )
            acc = tf.reduce_mean(tf.cast(hits, tf.float32), axis=1)
            # Adam (β₁ 0.5, β₂ 0.9, NC's) with a step count per row.
            t = tf.gather(self.adam_t, idx) + 1.0
            self.adam_t.scatter_nd_update(idx[:, None], t)
            scale = lr * tf.sqrt(1 - tf.pow(beta2, t)) / (1 - tf.pow(beta1, t))
            rows = idx[:, None]
            for var, grad, (m_var, v_var) in zip(self.params, grads, self.moments, strict=True):
                m = beta1 * tf.gather(m_var, idx) + (1 - beta1) * grad
                v = beta2 * tf.gather(v_var, idx) + (1 - beta2) * tf.square(grad)
                m_var.scatter_nd_update(rows, m)
                v_var.scatter_nd_update(rows, v)
                update = scale[:, None, None, None] * m / (tf.sqrt(v) + eps)
                var.scatter_nd_update(rows, tf.gather(var, idx) - update)
            return ce, reg, acc

        @tf.function(
            input_signature=[
                tf.TensorSpec([None], tf.int32),
                tf.TensorSpec([None, None, None], tf.int32),
            ],
            reduce_retracing=True,
        )
        def run_round(idx: Any, batch_ids: Any) -> tuple[Any, Any, Any]:
            n = tf.shape(idx)[0]
            sums = (tf.zeros([n]), tf.zeros([n]), tf.zeros([n]))
            rounds = tf.shape(batch_ids)[0]
            for r in tf.range(rounds):
                ids = batch_ids[r]
                ce, reg, acc = step(idx, tf.gather(self.clean, ids), tf.gather(self.clean_y, ids))
                sums = (sums[0] + ce, sums[1] + reg, sums[2] + acc)
            count = tf.cast(rounds, tf.float32)
            return sums[0] / count, sums[1] / count, sums[2] / count

        return run_round

    def current(self, positions: Sequence[int]) -> list[np.ndarray]:
        tf = self._tf
        idx = tf.constant(list(positions), tf.int32)
        return self.form.arrays(tf, [tf.gather(v, idx) for v in self.params])

    def run(self, progress: ProgressFn | None = None) -> list[InvertedTrigger]:
        cfg = self.config
        states = [_LabelState(label=k, cost=cfg.init_cost) for k in self.rows]
        count = int(self.clean.shape[0])
        batch = min(cfg.batch_size, count)
        batches = BatchSchedule(count, batch, cfg.seed)
        limit = len(states) if cfg.label_batch is None else cfg.label_batch
        total = cfg.steps * len(states)
        done_steps = 0
        while True:
            active = [i for i, s in enumerate(states) if not s.done][:limit]
            if not active:
                break
            steps = min(cfg.round_steps, *(cfg.steps - states[i].steps for i in active))
            ids = np.stack(
                [batches.ids(states[i].label, states[i].steps, steps) for i in active], axis=1
            )  # (steps, rows, batch)
            self.cost.scatter_nd_update(
                np.asarray(active, np.int32)[:, None],
                np.asarray([states[i].cost for i in active], np.float32),
            )
            _, reg, acc = self._round(
                self._tf.constant(active, self._tf.int32), self._tf.constant(ids)
            )
            reg_h, acc_h = np.asarray(reg, np.float64), np.asarray(acc, np.float64)
            improved = [
                i
                for j, i in enumerate(active)
                if acc_h[j] >= cfg.threshold(states[i].label) and reg_h[j] < states[i].best_l1
            ]
            if improved:
                arrays = self.current(improved)
                for j, i in enumerate(improved):
                    states[i].best = tuple(a[j] for a in arrays)
            for j, i in enumerate(active):
                state = states[i]
                state.steps += steps
                state.history.append((float(acc_h[j]), float(reg_h[j]), state.cost))
                if i in improved:
                    state.best_l1 = float(reg_h[j])
                schedule(state, float(acc_h[j]), cfg, cfg.threshold(state.label))
                if state.steps >= cfg.steps:
                    state.done = True
            done_steps += steps * len(active)
            if progress is not None:
                skipped = sum(cfg.steps - s.steps for s in states if s.done)
                progress(min(total, done_steps + skipped), total)
        missing = [i for i, s in enumerate(states) if s.best is None]
        if missing:  # never reached the threshold: keep the last trigger, and say so
            arrays = self.current(missing)
            for j, i in enumerate(missing):
                states[i].best = tuple(a[j] for a in arrays)
                states[i].best_l1 = float("nan")
        out = []
        for s in states:
            assert s.best is not None
            size = _size(self.form, s.best)  # of the kept arrays (best_l1: a round's mean)
            out.append(
                InvertedTrigger(
                    label=s.label,
                    arrays=tuple(np.asarray(a, np.float32) for a in s.best),
                    size=float(size),
                    reached=s.reached,
                    steps=s.steps,
                    early_stopped=s.early_stopped,
                    final_cost=s.cost,
                )
            )
        return out


def _size(form: TriggerForm, arrays: tuple[np.ndarray, ...]) -> float:
    if form.name == "mask":
        return float(arrays[0].sum(dtype=np.float64))
    if form.name == "warp":
        from kerasaudit.warping import rms

        return rms(arrays[0])
    return float(np.sqrt(np.square(arrays[0].astype(np.float64)).sum()))


class BatchSchedule:
    """Which clean images each row sees at each of its steps: shuffled epochs over the
    sample (NC's mini-batches), drawn from (seed, label, epoch) so that a row's batches do
    not depend on the other rows optimised beside it."""

    def __init__(self, count: int, batch: int, seed: int) -> None:
        self.count, self.batch, self.seed = count, batch, seed
        self.per_epoch = max(1, count // batch)
        self._orders: dict[tuple[int, int], np.ndarray] = {}

    def _order(self, label: int, epoch: int) -> np.ndarray:
        key = (label, epoch)
        if key not in self._orders:
            if len(self._orders) > 256:
                self._orders.clear()
            rng = np.random.default_rng([self.seed, abs(label), epoch, 1 if label >= 0 else 2])
            self._orders[key] = rng.permutation(self.count).astype(np.int32)
        return self._orders[key]

    def ids(self, label: int, first_step: int, steps: int) -> np.ndarray:
        out = np.empty((steps, self.batch), np.int32)
        for r in range(steps):
            epoch, position = divmod(first_step + r, self.per_epoch)
            start = position * self.batch
            out[r] = self._order(label, epoch)[start : start + self.batch]
        return out


def schedule(state: _LabelState, acc: float, cfg: Any, threshold: float | None = None) -> None:
    """One round of NC's cost schedule and early stop for one row (NC's visualizer logic)."""
    threshold = cfg.attack_threshold if threshold is None else threshold
    if cfg.early_stop:
        if state.best_l1 < math.inf:
            if state.best_l1 >= state.early_best:
                state.early_counter += 1
            else:
                state.early_counter = 0
        state.early_best = min(state.best_l1, state.early_best)
        if state.up_flag and state.down_flag and state.early_counter >= cfg.early_stop_patience:
            state.done = state.early_stopped = True
            return
    success = acc >= threshold
    if state.cost == 0 and success:  # NC's re-start when the cost had decayed to nothing
        state.set_counter += 1
        if state.set_counter >= cfg.patience:
            state.cost = cfg.init_cost
            state.up_counter = state.down_counter = 0
            state.up_flag = state.down_flag = False
    else:
        state.set_counter = 0
    if success:
        state.up_counter += 1
        state.down_counter = 0
    else:
        state.up_counter = 0
        state.down_counter += 1
    if state.up_counter >= cfg.patience:
        state.up_counter = 0
        state.cost *= cfg.cost_multiplier
        state.up_flag = True
    elif state.down_counter >= cfg.patience:
        state.down_counter = 0
        state.cost /= cfg.cost_multiplier**1.5
        state.down_flag = True

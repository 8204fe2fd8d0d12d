"""The sweep stage: accuracy, ASR and RA against pruning ratio, for criteria × layers.

Cost: pruning channel c of layer L (kernel, bias and BN γ/β zeroed) makes the tensor the next
block sees — L's ``measured_after`` output — exactly ``f(0)`` in channel c, where ``f`` is the
block's activation (0 for ReLU and the other activations with f(0) = 0). So every point of a
sweep is the *original* network with channels of that tensor masked, and the prefix of the
network up to it does not change between ratios: it runs once per batch (clean and triggered),
and only the suffix runs once per point. Layers where that does not hold (an activation with
f(0) ≠ 0, a layer inside a nested model, a suffix that needs other tensors such as a residual
branch) fall back to evaluating a pruned clone per point; the result says which path ran.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from kerasaudit import _tf
from kerasaudit.data import Dataset
from kerasaudit.errors import BadInputError
from kerasaudit.evaluation import evaluate
from kerasaudit.finetune import FineTuneSettings, fine_tune_with
from kerasaudit.inventory import (
    NO_CONV_HINT,
    AuditableLayer,
    auditable_layers,
    find_layer,
    named_layer,
)
from kerasaudit.pruning import clone_model, zero_channels
from kerasaudit.ranking import ChannelRanking, Criterion, rank_all
from kerasaudit.triggers import TriggerData

DEFAULT_RATIOS = (0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 0.7)
_ZERO_AT_ZERO = frozenset(
    {
        "relu",
        "linear",
        "leaky_relu",
        "elu",
        "tanh",
        "silu",
        "swish",
        "gelu",
        "relu6",
        "selu",
        "mish",
        "hard_silu",
        "hard_swish",
    }
)
_ZERO_AT_ZERO_LAYERS = frozenset({"ReLU", "LeakyReLU", "ELU", "PReLU"})
HOLDOUT = 0.25  # share of --data kept from fine-tuning to measure fine-tuned points on
ASR_TIE = 0.005  # ASRs within half a point are "as low": the smaller ratio is recommended
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class SweepPoint:
    criterion: Criterion
    layer: str
    ratio: float
    channels_pruned: int
    accuracy: float
    asr: float | None
    ra: float | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "criterion": str(self.criterion),
            "layer": self.layer,
            "ratio": self.ratio,
            "channels_pruned": self.channels_pruned,
            "accuracy": self.accuracy,
            "asr": self.asr,
            "ra": self.ra,
        }


@dataclass(frozen=True)
class SweepResult:
    baseline_accuracy: float
    baseline_asr: float | None
    baseline_ra: float | None
    target: int
    ratios: tuple[float, ...]
    points: tuple[SweepPoint, ...]
    recommended: dict[str, SweepPoint | None]  # per criterion (None: nothing within budget)
    best: SweepPoint | None  # over all criteria
    max_acc_drop: float
    fast_layers: tuple[str, ...]  # layers swept by prefix reuse
    slow_layers: tuple[str, ...]  # layers swept by evaluating pruned clones
    images: int
    seconds: float
    notes: tuple[str, ...] = field(default=())
    fine_tuned: bool = False  # every point was fine-tuned before it was measured

    def to_dict(self) -> dict[str, Any]:
        return {
            "baseline": {
                "accuracy": self.baseline_accuracy,
                "asr": self.baseline_asr,
                "ra": self.baseline_ra,
            },
            "target": self.target,
            "ratios": list(self.ratios),
            "max_acc_drop": self.max_acc_drop,
            "points": [p.to_dict() for p in self.points],
            "recommended": {
                k: (None if v is None else v.to_dict()) for k, v in self.recommended.items()
            },
            "best": None if self.best is None else self.best.to_dict(),
            "fast_layers": list(self.fast_layers),
            "slow_layers": list(self.slow_layers),
            "images": self.images,
            "seconds": self.seconds,
            "notes": list(self.notes),
            "fine_tuned": self.fine_tuned,
        }


def recommend(
    points: Sequence[SweepPoint], baseline_accuracy: float, max_acc_drop: float
) -> SweepPoint | None:
    """Lowest ASR among points within the accuracy budget; among those as low (within
    ``ASR_TIE``), the smallest ratio, then the smallest accuracy loss."""
    within = [
        p
        for p in points
        if baseline_accuracy - p.accuracy <= max_acc_drop + 1e-12 and p.asr is not None
    ]
    if not within:
        return None
    lowest = min(p.asr for p in within if p.asr is not None)
    near = [p for p in within if p.asr is not None and p.asr <= lowest + ASR_TIE]
    return min(near, key=lambda p: (p.ratio, baseline_accuracy - p.accuracy))


def _zero_at_zero(model: Any, info: AuditableLayer) -> bool:
    measured = find_layer(model, info.measured_after)
    cls = type(measured).__name__
    if cls in _ZERO_AT_ZERO_LAYERS:
        return True
    if cls == "BatchNormalization":
        return True  # γ = β = 0 → exactly 0
    activation = getattr(measured, "activation", None)
    return str(getattr(activation, "__name__", "")) in _ZERO_AT_ZERO


def _split(model: Any, info: AuditableLayer) -> tuple[Any, Any] | None:
    """(prefix, suffix) models around the measured tensor, or None if the graph does not split."""
    if "/" in info.measured_after or not _zero_at_zero(model, info):
        return None
    if getattr(find_layer(model, info.path), "data_format", "channels_last") == "channels_first":
        return None
    keras = _tf.keras()
    try:
        tensor = model.get_layer(info.measured_after).output
        prefix = keras.Model(model.inputs, tensor)
        suffix = keras.Model(tensor, model.outputs)
    except Exception:  # the suffix needs tensors other than this one (residual branches, ...)
        return None
    return prefix, suffix


def sweep(
    model: Any,
    dataset: Dataset,
    *,
    trigger: Any,
    target: int | None,
    criteria: Sequence[Criterion],
    layers: Sequence[str] = (),
    ratios: Sequence[float] = DEFAULT_RATIOS,
    max_acc_drop: float = 0.015,
    batch_size: int = 128,
    progress: Progress | None = None,
    fine_tuning: FineTuneSettings | None = None,
) -> SweepResult:
    """``fine_tuning``: fine-tune every point's pruned clone before measuring it (slow: one
    fine-tune per point; for sweeping one criterion and layer when pruning will be followed by
    fine-tuning, whose accuracy recovery changes which ratio is best)."""
    started = time.perf_counter()
    if not criteria:
        raise BadInputError("give at least one --criterion")
    ratios = tuple(sorted({float(r) for r in ratios}))
    if not ratios or ratios[0] <= 0 or ratios[-1] >= 1:
        raise BadInputError("--ratios must lie strictly between 0 and 1")
    available = {i.path: i for i in auditable_layers(model)}
    if layers:
        chosen = [named_layer(available, name) for name in layers]  # path or bare name
    else:
        chosen = [i for i in available.values() if i.convolutional]
    if not chosen:
        raise BadInputError("the model has no convolutional layers to sweep" + NO_CONV_HINT)
    # Fine-tuned points are measured on a held-out part of the data the fine-tune never saw
    # (measured on the sample: fine-tuning on the 2,000 images and measuring on them too
    # overstated accuracy by ~1.8 points and picked a ratio that cost 1.7 points held out).
    fit, measured_on = dataset.split(HOLDOUT) if fine_tuning else (dataset, dataset)
    trigger_fit, trigger = (
        trigger.split_along(dataset, HOLDOUT)
        if fine_tuning and isinstance(trigger, TriggerData)
        else (trigger, trigger)
    )
    baseline = evaluate(model, measured_on, trigger, target)
    if baseline.attack is None:
        raise BadInputError("sweep needs --trigger and --target to measure ASR")
    target_label = baseline.attack.target
    rankings = rank_all(model, chosen, criteria, dataset, trigger=trigger, batch_size=batch_size)

    points: list[SweepPoint] = []
    fast: list[str] = []
    slow: list[str] = []
    total = len(chosen)
    for index, info in enumerate(chosen):
        split = None if fine_tuning else _split(model, info)
        layer_rankings = [rankings[(c, info.path)] for c in criteria]
        if split is not None:
            points += _sweep_fast(
                split, dataset, trigger, target_label, info, layer_rankings, ratios
            )
            fast.append(info.path)
        else:
            points += _sweep_slow(
                model,
                measured_on,
                trigger,
                target_label,
                info,
                layer_rankings,
                ratios,
                fine_tuning,
                fit,
                trigger_fit,
            )
            slow.append(info.path)
        if progress is not None:
            progress(index + 1, total)
    recommended = {
        str(c): recommend([p for p in points if p.criterion is c], baseline.accuracy, max_acc_drop)
        for c in criteria
    }
    candidates = [p for p in recommended.values() if p is not None]
    best = recommend(candidates, baseline.accuracy, max_acc_drop) if candidates else None
    return SweepResult(
        baseline_accuracy=baseline.accuracy,
        baseline_asr=baseline.asr,
        baseline_ra=baseline.ra,
        target=target_label,
        ratios=ratios,
        points=tuple(points),
        recommended=recommended,
        best=best,
        max_acc_drop=max_acc_drop,
        fast_layers=tuple(fast),
        slow_layers=tuple(slow),
        images=measured_on.info.count,
        seconds=time.perf_counter() - started,
        fine_tuned=bool(fine_tuning and fine_tuning.epochs),
    )


def _masks(
    rankings: Sequence[ChannelRanking], ratios: Sequence[float], channels: int
) -> np.ndarray:
    masks = np.ones((len(rankings) * len(ratios), channels), np.float32)
    for i, ranking in enumerate(rankings):
        for j, ratio in enumerate(ratios):
            masks[i * len(ratios) + j, list(ranking.top(ratio))] = 0.0
    return masks


def _sweep_fast(
    split: tuple[Any, Any],
    dataset: Dataset,
    trigger: Any,
    target: int,
    info: AuditableLayer,
    rankings: Sequence[ChannelRanking],
    ratios: Sequence[float],
) -> list[SweepPoint]:
    tf = _tf.tf()
    prefix, suffix = split
    masks = tf.constant(_masks(rankings, ratios, info.channels))
    n_masks = int(masks.shape[0])

    @tf.function(reduce_retracing=True)
    def predictions(x: Any) -> Any:
        # (masks, batch, ...) → one suffix call on the stacked, masked copies.
        h = prefix(x, training=False)
        shape = tf.shape(h)
        # Channels are last in the measured tensor (channels_last models).
        stacked = h[None] * tf.reshape(masks, [n_masks] + [1] * (len(h.shape) - 1) + [-1])
        flat = tf.reshape(stacked, tf.concat([[-1], shape[1:]], axis=0))
        scores = suffix(flat, training=False)
        return tf.reshape(tf.argmax(scores, axis=-1, output_type=tf.int64), [n_masks, -1])

    correct = np.zeros(n_masks, np.int64)
    to_target = np.zeros(n_masks, np.int64)
    still = np.zeros(n_masks, np.int64)
    seen = evaluated = 0
    for x, y in dataset.batches():
        assert y is not None
        correct += (np.asarray(predictions(tf.constant(x))) == y[None]).sum(axis=1)
        seen += len(y)
    for xt, yt in _triggered(dataset, trigger, target):
        trig_pred = np.asarray(predictions(tf.constant(xt)))
        to_target += (trig_pred == target).sum(axis=1)
        if yt is not None:
            still += (trig_pred == yt[None]).sum(axis=1)
        evaluated += len(xt)
    labelled = not isinstance(trigger, TriggerData) or trigger.labelled
    points = []
    for i, ranking in enumerate(rankings):
        for j, ratio in enumerate(ratios):
            k = i * len(ratios) + j
            points.append(
                SweepPoint(
                    ranking.criterion,
                    info.path,
                    ratio,
                    ranking.count_for(ratio),
                    correct[k] / seen,
                    None if evaluated == 0 else to_target[k] / evaluated,
                    None if evaluated == 0 or not labelled else still[k] / evaluated,
                )
            )
    return points


def _triggered(
    dataset: Dataset, trigger: Any, target: int, batch_size: int = 256
) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
    """(triggered images, their true classes) whose true class is not the target: clean
    batches stamped with a spec trigger, or the images of ``--trigger-data``."""
    if isinstance(trigger, TriggerData):
        images, classes = trigger.attack_images(target)
        for start in range(0, len(images), batch_size):
            part = None if classes is None else classes[start : start + batch_size]
            yield images[start : start + batch_size], part
        return
    for x, y in dataset.batches():
        assert y is not None
        keep = y != target
        if keep.any():
            yield trigger.apply(x[keep]), y[keep]


def _sweep_slow(
    model: Any,
    dataset: Dataset,
    trigger: Any,
    target: int,
    info: AuditableLayer,
    rankings: Sequence[ChannelRanking],
    ratios: Sequence[float],
    fine_tuning: FineTuneSettings | None = None,
    fit: Dataset | None = None,
    trigger_fit: Any = None,
) -> list[SweepPoint]:
    points = []
    for ranking in rankings:
        for ratio in ratios:
            clone = clone_model(model)
            _, mask = zero_channels(clone, [(info, ranking.top(ratio))])
            if fine_tuning is not None and fine_tuning.epochs:
                fine_tune_with(
                    clone,
                    fit or dataset,
                    fine_tuning,
                    mask=mask,
                    trigger=trigger_fit or trigger,
                    teacher=model,
                    target=target,
                )
            result = evaluate(clone, dataset, trigger, target)
            points.append(
                SweepPoint(
                    ranking.criterion,
                    info.path,
                    ratio,
                    ranking.count_for(ratio),
                    result.accuracy,
                    result.asr,
                    result.ra,
                )
            )
    return points

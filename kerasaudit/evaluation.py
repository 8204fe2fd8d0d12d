"""Evaluation: clean accuracy, attack success rate (ASR) and robust accuracy (RA) in one pass.

- accuracy: share of clean images classified as their label;
- ASR: share of triggered images whose *true* label is not the target that the model classifies
  as the target (images of the target class are left out: for them the attack has nothing to do);
- RA: share of those same triggered images still classified as their true label;
- without the trigger (stamped triggers only): share of those same images, *unstamped*, that the
  model already classifies as the target (untargeted: off their class) — its own confusion, part
  of any ASR — and the share the trigger flips there (to the target stamped, not unstamped).

Every number comes with the counts behind it. Batches are streamed from the data set through a
compiled predict step, so memory stays flat whatever the size of the data.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from kerasaudit import _tf
from kerasaudit.data import _DEFAULT_KEYS, DataInfo, Dataset  # keys named in "no labels"
from kerasaudit.errors import BadInputError
from kerasaudit.triggers import AnyTrigger, Trigger, TriggerData

Progress = Callable[[int, int], None]  # (examples done, examples in total)
OFF_CLASS = -1  # the "target" of an untargeted ASR: triggered images moved off their class


@dataclass(frozen=True)
class ClassifierIO:
    """What evaluation needs to know of a model: its per-example input and number of classes."""

    input_shape: tuple[int | None, ...]
    outputs: int  # size of the output vector (1 = a single sigmoid unit)

    @property
    def num_classes(self) -> int:
        return max(self.outputs, 2)  # one sigmoid unit still separates classes 0 and 1


@dataclass(frozen=True)
class ClassAccuracy:
    label: int
    name: str | None  # class sub-folder name, when the data is an image folder
    count: int
    correct: int

    @property
    def accuracy(self) -> float:
        return self.correct / self.count

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "name": self.name,
            "count": self.count,
            "correct": self.correct,
            "accuracy": self.accuracy,
        }


@dataclass(frozen=True)
class AttackResult:
    """The trigger's effect on the images whose true label is not the target."""

    trigger: dict[str, Any]  # Trigger.to_dict()
    description: str
    target: int
    target_source: str  # "--target" or "trigger file"
    evaluated: int  # triggered images with true label != target
    to_target: int  # ... classified as the target
    still_correct: int  # ... still classified as their true label
    classes_known: bool = True  # False for --trigger-data without true classes: no RA
    # stamped triggers only (--trigger-data images have no clean twin): of the same images
    # unstamped, those the model classifies as the target by itself (untargeted: off their
    # class), and those the trigger sends there that were not there unstamped
    unstamped_to_target: int | None = None
    flipped: int | None = None

    @property
    def asr(self) -> float | None:
        return None if self.evaluated == 0 else self.to_target / self.evaluated

    @property
    def ra(self) -> float | None:
        if self.evaluated == 0 or not self.classes_known:
            return None
        return self.still_correct / self.evaluated

    @property
    def unstamped_rate(self) -> float | None:
        """Share of the evaluated images the model sends to the target without the trigger."""
        if self.evaluated == 0 or self.unstamped_to_target is None:
            return None
        return self.unstamped_to_target / self.evaluated

    @property
    def flip_rate(self) -> float | None:
        """Share sent to the target stamped and not unstamped: what the trigger itself does."""
        if self.evaluated == 0 or self.flipped is None:
            return None
        return self.flipped / self.evaluated

    def to_dict(self) -> dict[str, Any]:
        return {
            "trigger": self.trigger,
            "target": self.target,
            "target_source": self.target_source,
            "evaluated": self.evaluated,
            "asr": self.asr,
            "to_target": self.to_target,
            "ra": self.ra,
            "still_correct": self.still_correct,
            "unstamped_to_target": self.unstamped_to_target,
            "unstamped_rate": self.unstamped_rate,
            "flipped": self.flipped,
            "flip_rate": self.flip_rate,
        }


@dataclass(frozen=True)
class EvaluationResult:
    model: str  # the model's name
    data: DataInfo
    num_classes: int
    total: int
    correct: int
    per_class: tuple[ClassAccuracy, ...]  # classes present in the data
    attack: AttackResult | None  # None without a trigger
    max_asr: float | None  # the threshold asked for, as a fraction

    @property
    def accuracy(self) -> float:
        return self.correct / self.total

    @property
    def asr(self) -> float | None:
        return None if self.attack is None else self.attack.asr

    @property
    def ra(self) -> float | None:
        return None if self.attack is None else self.attack.ra

    @property
    def asr_exceeded(self) -> bool:
        """ASR above ``max_asr`` (a finding: exit code 1). Never true when ASR is undefined."""
        asr = self.asr
        return self.max_asr is not None and asr is not None and asr > self.max_asr

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "data": {
                "path": self.data.path,
                "kind": self.data.kind,
                "x_key": self.data.x_key,
                "y_key": self.data.y_key,
                "count": self.data.count,
                "shape": list(self.data.shape),
                "scale": self.data.scale,
            },
            "num_classes": self.num_classes,
            "clean": {
                "total": self.total,
                "correct": self.correct,
                "accuracy": self.accuracy,
                "per_class": [c.to_dict() for c in self.per_class],
            },
            "attack": None if self.attack is None else self.attack.to_dict(),
            "max_asr": self.max_asr,
            "asr_exceeded": self.asr_exceeded,
        }


def classifier_io(model: Any) -> ClassifierIO:
    """The input shape and output size of a single-input, single-output classifier."""
    inputs, outputs = _tensors(model, "inputs"), _tensors(model, "outputs")
    if len(inputs) != 1 or len(outputs) != 1:
        raise BadInputError(
            f"model {model.name!r} has {len(inputs)} inputs and {len(outputs)} outputs; "
            "evaluation needs a classifier with one input and one output"
        )
    in_shape = tuple(inputs[0].shape)[1:]
    out_shape = tuple(outputs[0].shape)[1:]
    if len(out_shape) != 1 or out_shape[0] is None:
        raise BadInputError(
            f"model {model.name!r} outputs shape {out_shape} per example; evaluation needs "
            "a classifier with one score vector (K,) per example"
        )
    return ClassifierIO(input_shape=in_shape, outputs=int(out_shape[0]))


def evaluate(
    model: Any,
    dataset: Dataset,
    trigger: AnyTrigger | None = None,
    target: int | None = None,
    max_asr: float | None = None,
    *,
    progress: Progress | None = None,
) -> EvaluationResult:
    """Clean accuracy, and with a trigger ASR and RA towards ``target``, in one streamed pass.

    ``target`` defaults to the trigger file's target. ``max_asr`` (a fraction in [0, 1]) makes
    :attr:`EvaluationResult.asr_exceeded` meaningful. Raises BadInputError for unlabelled data,
    a target outside the model's labels, or options that need a trigger without one.
    """
    io = classifier_io(model)
    info = dataset.info
    if not info.has_labels:
        raise BadInputError(_no_labels_message(info))
    target, target_source = _resolve_target(trigger, target, io)
    if max_asr is not None and not 0 <= max_asr <= 1:
        raise BadInputError(f"max ASR must be a fraction in [0, 1], got {max_asr:g}")
    if max_asr is not None and trigger is None:
        raise BadInputError("--max-asr needs --trigger (the ASR is measured with a trigger)")

    predict = _predict_step(model, info.shape, io.outputs, None)
    stamps = trigger is not None and not isinstance(trigger, TriggerData)
    predict_triggered = (
        _predict_step(model, info.shape, io.outputs, trigger)
        if stamps and isinstance(trigger, Trigger)
        else None
    )
    k = io.num_classes
    seen = np.zeros(k, np.int64)
    right = np.zeros(k, np.int64)
    evaluated = to_target = still_correct = done = unstamped = flipped = 0
    for x, y in dataset.batches():
        assert y is not None  # has_labels
        predicted = predict(x)
        seen += np.bincount(y, minlength=k)
        right += np.bincount(y[predicted == y], minlength=k)
        if predict_triggered is not None:
            keep = y != target
            if keep.any():
                kept = y[keep]
                stamped = predict_triggered(x[keep])
                evaluated += int(keep.sum())
                hits = stamped != kept if target == OFF_CLASS else stamped == target
                clean = predicted[keep]
                already = clean != kept if target == OFF_CLASS else clean == target
                to_target += int(hits.sum())
                still_correct += int((stamped == kept).sum())
                unstamped += int(already.sum())
                flipped += int((hits & ~already).sum())
        done += len(x)
        if progress is not None:
            progress(done, info.count)
    if isinstance(trigger, TriggerData):
        assert target is not None
        images, classes = trigger.attack_images(target)
        for start in range(0, len(images), 256):
            stamped = predict(images[start : start + 256])
            evaluated += len(stamped)
            part = None if classes is None else classes[start : start + 256]
            if target == OFF_CLASS:
                to_target += 0 if part is None else int((stamped != part).sum())
            else:
                to_target += int((stamped == target).sum())
            if part is not None:
                still_correct += int((stamped == part).sum())

    names = info.class_names
    per_class = tuple(
        ClassAccuracy(
            label=label,
            name=names[label] if names is not None and label < len(names) else None,
            count=int(seen[label]),
            correct=int(right[label]),
        )
        for label in range(k)
        if seen[label] > 0
    )
    attack = None
    if trigger is not None:
        assert target is not None and target_source is not None
        attack = AttackResult(
            trigger=trigger.to_dict(),
            description=trigger.describe(),
            target=target,
            target_source=target_source,
            evaluated=evaluated,
            to_target=to_target,
            still_correct=still_correct,
            classes_known=not isinstance(trigger, TriggerData) or trigger.labelled,
            unstamped_to_target=unstamped if predict_triggered is not None else None,
            flipped=flipped if predict_triggered is not None else None,
        )
    return EvaluationResult(
        model=str(getattr(model, "name", "model")),
        data=info,
        num_classes=k,
        total=int(seen.sum()),
        correct=int(right.sum()),
        per_class=per_class,
        attack=attack,
        max_asr=max_asr,
    )


FORCED_SHARE = 0.5  # forced_label: a trigger "forces" a label it sends at least this share to


def forced_label(
    model: Any, dataset: Dataset | None, trigger: AnyTrigger
) -> tuple[int | None, float]:
    """(the label ``model`` gives most of the images carrying ``trigger``, the share of the
    images of other classes it gives that label) — the target of a known trigger stated without
    one (``prune --also-unlearn``). The label is None when that share is below
    :data:`FORCED_SHARE`: the trigger forces no single label on this model (untargeted, or not
    a backdoor of it). Spec triggers are stamped on ``dataset``; ``--trigger-data`` images are
    used as they are (without true classes, every image counts)."""
    io = classifier_io(model)
    predicted: list[np.ndarray] = []
    classes: list[np.ndarray] = []
    if isinstance(trigger, TriggerData):
        predict = _predict_step(model, trigger.input_shape, io.outputs, None)
        for start in range(0, trigger.count, 256):
            predicted.append(predict(trigger.x[start : start + 256]))
        if trigger.y is not None:
            classes.append(np.asarray(trigger.y))
    else:
        if dataset is None:
            raise BadInputError("a stamped trigger's target is inferred on data: none given")
        stamp = _predict_step(model, dataset.info.shape, io.outputs, trigger)
        for x, y in dataset.batches():
            predicted.append(stamp(x))
            if y is not None:
                classes.append(y)
    labels = np.concatenate(predicted) if predicted else np.zeros(0, np.int64)
    if labels.size == 0:
        return None, 0.0
    top = int(np.bincount(labels, minlength=io.num_classes).argmax())
    truth = np.concatenate(classes) if classes else None
    others = labels if truth is None else labels[truth != top]
    share = float((others == top).mean()) if others.size else 0.0
    return (top if share >= FORCED_SHARE else None), share


def _resolve_target(
    trigger: AnyTrigger | None, target: int | None, io: ClassifierIO
) -> tuple[int | None, str | None]:
    if trigger is None:
        if target is not None:
            raise BadInputError("--target needs --trigger (the target is the label it forces)")
        return None, None
    source = "--target"
    if target is None and isinstance(trigger, TriggerData):
        if trigger.target is None:
            raise BadInputError("--trigger-data needs --target K (the label the backdoor forces)")
        target = trigger.target
    if target is None:
        if trigger.target is None:
            # No target (an all-to-all backdoor): the ASR counts triggered images moved off
            # their own class.
            return OFF_CLASS, "none: untargeted (images moved off their own class)"
        target, source = trigger.target, "trigger file"
    if not 0 <= target < io.num_classes:
        origin = "--target" if source == "--target" else "the trigger file's target"
        raise BadInputError(
            f"{origin} {target} is outside the model's labels 0..{io.num_classes - 1}"
        )
    return target, source


def _no_labels_message(info: DataInfo) -> str:
    if info.kind == "folder":
        return f"evaluation needs labels; the image folder {info.path} has no class sub-folders"
    if info.kind == "npy":
        return (
            f"evaluation needs labels; {info.path} is a .npy file (inputs only): use a .npz or "
            "HDF5 file with a labels array"
        )
    tried = dict(_DEFAULT_KEYS).get(info.x_key or "", ())
    looked = " or ".join(repr(key) for key in tried) if tried else "a labels array"
    return (
        f"evaluation needs labels; {info.path} has inputs {info.x_key!r} but no {looked}; "
        "name the labels with --y-key"
    )


def output_operation(model: Any, *, nested: bool = True) -> Any:
    """The layer (or keras.ops operation, e.g. ``keras.ops.softmax``) that produces the
    model's first output, looked up through nested models (``nested=False``: the outermost,
    which may be a nested model). ``model.layers[-1]`` is not it: an operation applied in a
    Functional graph is not among its layers."""
    keras = _tf.keras()
    last = model
    for _ in range(64):  # nesting depth guard
        if isinstance(last, keras.Sequential):
            last = last.layers[-1]
        elif isinstance(last, keras.Model):
            history = getattr(last.outputs[0], "_keras_history", None)
            last = history[0] if history is not None else last.layers[-1]
        if not nested or not isinstance(last, keras.Model):
            break
    return last


def outputs_probabilities(model: Any) -> bool:
    """True when the model ends in a softmax/sigmoid (so the loss must not apply one again)."""
    last = output_operation(model)
    activation = getattr(last, "activation", None)
    name = getattr(activation, "__name__", "")
    return name in ("softmax", "sigmoid") or type(last).__name__ in ("Softmax", "Sigmoid")


def log_probabilities(model: Any, x: Any, outputs: int, probabilities: bool) -> Any:
    """Log-probabilities (n, K) of ``model`` on ``x`` for any classifier head (softmax,
    logits, or one sigmoid unit: K = 2); usable inside ``tf.function``."""
    tf = _tf.tf()
    out = tf.cast(model(x, training=False), tf.float32)
    if outputs == 1:
        p = out[:, 0] if probabilities else tf.sigmoid(out[:, 0])
        p = tf.clip_by_value(p, 1e-7, 1 - 1e-7)
        return tf.math.log(tf.stack([1 - p, p], axis=-1))
    if probabilities:
        return tf.math.log(tf.clip_by_value(out, 1e-7, 1.0))
    return tf.nn.log_softmax(out)


def predictor(
    model: Any, shape: tuple[int, ...], outputs: int
) -> Callable[[np.ndarray], np.ndarray]:
    """A compiled images → predicted labels function (build once, call per batch)."""
    return _predict_step(model, shape, outputs, None)


def stamped_success(
    predict: Callable[[np.ndarray], np.ndarray],
    x: np.ndarray,
    y: np.ndarray | None,
    label: int,
    mask: np.ndarray,
    pattern: np.ndarray,
) -> tuple[float, int]:
    """(share sent to ``label``, images) when ``(1 − mask)·x + mask·pattern`` is stamped on the
    in-memory images ``x`` of other labels (all images when ``y`` is None); ``predict`` comes
    from :func:`predictor`."""
    keep = np.ones(len(x), bool) if y is None else y != label
    images = x[keep]
    if len(images) == 0:
        return float("nan"), 0
    hits = int((stamped_predictions(predict, images, mask, pattern) == label).sum())
    return hits / len(images), len(images)


def stamped_predictions(
    predict: Callable[[np.ndarray], np.ndarray],
    x: np.ndarray,
    mask: np.ndarray,
    pattern: np.ndarray,
) -> np.ndarray:
    """The labels ``predict`` gives ``x`` stamped with ``(1 − mask)·x + mask·pattern``, in
    batches of 256 (empty ``x``: none)."""
    stamped = ((1 - mask[None, ..., None]) * x + mask[..., None] * pattern).astype(np.float32)
    return predictions(predict, stamped)


def predictions(predict: Callable[[np.ndarray], np.ndarray], x: np.ndarray) -> np.ndarray:
    """The labels ``predict`` (:func:`predictor`) gives the in-memory images ``x``, in batches of
    256 (empty ``x``: none)."""
    out = [predict(x[i : i + 256]) for i in range(0, len(x), 256)]
    return np.concatenate(out) if out else np.zeros(0, np.int64)


def _predict_step(
    model: Any, shape: tuple[int, ...], outputs: int, trigger: Trigger | None
) -> Callable[[np.ndarray], np.ndarray]:
    """A compiled x → predicted labels step (stamping the trigger first, when given)."""
    tf = _tf.tf()

    @tf.function(
        input_signature=[tf.TensorSpec(shape=(None, *shape), dtype=tf.float32)],
        reduce_retracing=True,
    )
    def step(x: Any) -> Any:
        if trigger is not None:
            x = trigger.apply_tf(x)
        scores = model(x, training=False)
        if outputs == 1:
            return tf.cast(scores[:, 0] > 0.5, tf.int64)
        return tf.argmax(scores, axis=-1, output_type=tf.int64)

    def run(x: np.ndarray) -> np.ndarray:
        return np.asarray(step(tf.constant(x, dtype=tf.float32)))

    return run


def _tensors(model: Any, which: str) -> list[Any]:
    try:
        tensors = getattr(model, which)
    except (AttributeError, ValueError):
        tensors = None
    if not tensors:
        raise BadInputError(
            f"model {getattr(model, 'name', '?')!r} has no defined {which} (an unbuilt "
            "subclassed model cannot be evaluated)"
        )
    return list(tensors)


def logits_function(model: Any) -> Callable[..., Any] | None:
    """``f(x, training=False)`` → the logits (pre-softmax scores, (n, K)) of a softmax
    classifier, usable inside ``tf.function`` and differentiable with respect to the model's
    own variables; None when they cannot be reached (a single sigmoid unit, or a softmax fused
    into a layer other than Dense). Softmax probabilities saturate in float32 (a probability of
    1e-40 is 0), so anything that must push a confident model needs logits.
    """
    tf = _tf.tf()
    keras = _tf.keras()
    last = output_operation(model, nested=False)
    outputs = int(model.outputs[0].shape[-1])
    if outputs < 2:
        return None
    if not outputs_probabilities(model):
        return lambda x, training=False: tf.cast(model(x, training=training), tf.float32)
    features = penultimate(model)
    if features is None:
        return None
    if isinstance(last, keras.Model):  # a nested head (Sequential([..., Dense(softmax)])): its
        inner = logits_function(last)  # logits, on what the outer model feeds it
        if inner is None:
            return None
        return lambda x, training=False: inner(features(x, training=training), training=training)
    if type(last).__name__ in ("Softmax", "Activation"):
        return lambda x, training=False: tf.cast(features(x, training=training), tf.float32)
    pre_activation = dense_pre_activation(last)
    if pre_activation is None:
        return None
    return lambda x, training=False: pre_activation(features(x, training=training))


def logit_margin(z: Any, targets: Any) -> Any:
    """Each row's logit for its target (``targets``: (n,) label indices) minus its largest
    other logit; usable inside ``tf.function``."""
    tf = _tf.tf()
    own = tf.gather(z, targets, batch_dims=1)
    others = z - 1e9 * tf.one_hot(targets, tf.shape(z)[1], dtype=z.dtype)
    return own - tf.reduce_max(others, axis=1)


def penultimate(model: Any) -> Any | None:
    """The model up to the input of the operation that produces its output (a nested model
    counts as one; a Keras model sharing its layers), or None when that input cannot be
    reached (the operation is shared or has several inputs)."""
    keras = _tf.keras()
    inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs
    try:
        return keras.Model(inputs, output_operation(model, nested=False).input)
    except Exception:
        return None


def dense_pre_activation(layer: Any) -> Callable[[Any], Any] | None:
    """h → the Dense ``layer``'s pre-activations in float32 (its logits when it ends in a
    softmax), differentiable with respect to its variables; None when it is not Dense."""
    tf = _tf.tf()
    kernel, bias = getattr(layer, "kernel", None), getattr(layer, "bias", None)
    if type(layer).__name__ != "Dense" or kernel is None:
        return None

    def apply(h: Any) -> Any:
        z = tf.matmul(tf.cast(h, tf.float32), tf.cast(kernel, tf.float32))
        return z if bias is None else z + tf.cast(bias, tf.float32)

    return apply

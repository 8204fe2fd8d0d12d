"""Does the data reach the model in the value range it was trained on?

A model that rescales its own input (a leading ``Rescaling(1/255)``, ``inputs / 255.0`` in a
Functional graph, or a ``Normalization`` adapted on raw pixels) expects 0–255 values; fed the
usual ``--scale auto`` reading of a uint8 file (÷ 255) it sees nearly black images, gets about
one image in ten right, and every number after that is noise. :func:`expects_raw_pixels`
recognises such a model so that ``--scale auto`` leaves its data unscaled;
:func:`chance_warning` catches the rest (another scaling, another label order, another task)
from the accuracy on the first labelled images, or, without labels, from their predictions
collapsing onto one label.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from kerasaudit.data import Dataset

RAW_SCALE = 0.02  # a leading Rescaling by at most this (1/255, 1/127.5) takes 0–255 values
RAW_MEAN = 2.0  # a leading Normalization whose mean exceeds this was adapted on 0–255 values
CHECKED_IMAGES = 256
CHANCE_FACTOR = 2.0  # warn below this × chance (1 / classes)
COLLAPSE_SHARE = 0.9  # unlabelled data: warn when one label takes at least this share

_PASS_THROUGH = ("InputLayer", "Reshape", "Permute", "Resizing")


def _first_transform(model: Any) -> Any | None:
    """The first layer that changes values, descending into a leading nested model."""
    from kerasaudit import _tf
    from kerasaudit.inventory import walk_layers

    keras = _tf.keras()
    for _, layer, _ in walk_layers(model):
        if isinstance(layer, keras.Model) or type(layer).__name__ in _PASS_THROUGH:
            continue
        return layer
    return None


def _leading_operation(model: Any) -> str | None:
    """A description of a keras.ops arithmetic on a Functional model's input that makes it
    take 0–255 values (``inputs / 255.0``, ``inputs * (1 / 255)``, ``(inputs - 127.5) / …``),
    or None."""
    from kerasaudit import _tf

    keras = _tf.keras()
    if isinstance(model, keras.Sequential) or len(getattr(model, "inputs", None) or ()) != 1:
        return None
    source = model.inputs[0]
    for operation in getattr(model, "operations", ()):
        nodes = getattr(operation, "_inbound_nodes", None) or []
        arguments = getattr(nodes[0], "arguments", None) if nodes else None
        if arguments is None or not any(t is source for t in arguments.keras_tensors):
            continue
        kind = type(operation).__name__
        if kind in _PASS_THROUGH:
            source = nodes[0].output_tensors[0]
            continue
        if not type(operation).__module__.startswith("keras.src.ops."):
            return None
        constants = [float(a) for a in arguments.args if isinstance(a, int | float)]
        if len(constants) != 1 or arguments.args[0] is not source:
            return None
        c = constants[0]
        raw = (
            (kind in ("TrueDivide", "Divide") and abs(c) >= 1 / RAW_SCALE)
            or (kind == "Multiply" and 0 < abs(c) <= RAW_SCALE)
            or (kind == "Subtract" and c > RAW_MEAN)
        )
        if raw:
            return f"the model's first operation ({kind} by {c:.4g}) takes 0–255 values"
        return None
    return None


def expects_raw_pixels(model: Any) -> str | None:
    """A description of the layer (or keras.ops arithmetic) that makes ``model`` take 0–255
    values, or None."""
    leading = _leading_operation(model)
    if leading is not None:
        return leading
    layer = _first_transform(model)
    if layer is None:
        return None
    kind = type(layer).__name__
    if kind == "Rescaling":
        scale = np.asarray(layer.scale, dtype=np.float64)
        if scale.size and 0 < float(np.max(np.abs(scale))) <= RAW_SCALE:
            factor = float(np.max(scale))
            return f"the model's layer {layer.name!r} rescales its input ×{factor:.4g}"
    if kind == "Normalization" and getattr(layer, "mean", None) is not None:
        mean = np.asarray(layer.mean, dtype=np.float64)
        if mean.size and float(np.max(mean)) > RAW_MEAN:
            return (
                f"the model's layer {layer.name!r} normalises its input by a mean of "
                f"{float(np.max(mean)):.3g} (0–255 values)"
            )
    return None


def auto_scale(model: Any, scale: str) -> tuple[str, str | None]:
    """(the scale to read ``model``'s data with, a note for the user or None): ``auto`` becomes
    ``none`` for a model that rescales its own input; any other scale is kept."""
    raw = expects_raw_pixels(model) if scale == "auto" else None
    if raw is None:
        return scale, None
    return "none", f"{raw}: --data read unscaled (--scale auto; --scale X overrides)"


def chance_warning(model: Any, dataset: Dataset, num_classes: int) -> str | None:
    """A warning when ``model`` gets the first labelled images of ``dataset`` right barely more
    often than chance, or, without labels, sends nearly all of them to one label (what a
    model fed values it was not trained on does); none with fewer than 3 classes."""
    if num_classes < 3:
        return None
    from kerasaudit.evaluation import predictions, predictor

    x, y = dataset.take_array(min(CHECKED_IMAGES, dataset.info.count))
    if len(x) < 20 or (dataset.info.has_labels and (y is None or len(y) < 20)):
        return None
    # three or more classes: one output per class (a single sigmoid unit returned above)
    predict = predictor(model, tuple(x.shape[1:]), num_classes)
    predicted = predictions(predict, x)
    if y is not None:
        accuracy = float(np.mean(predicted == y))
        if accuracy >= CHANCE_FACTOR / num_classes:
            return None
        finding = (
            f"the model gets {accuracy:.0%} of the first {len(y)} labelled images of "
            f"{dataset.info.path} right (chance: {1 / num_classes:.0%})"
        )
    else:
        counts = np.bincount(predicted, minlength=num_classes)
        share = float(counts.max() / len(predicted))
        if share < COLLAPSE_SHARE:
            return None
        finding = (
            f"the model sends {share:.0%} of the first {len(predicted)} images of "
            f"{dataset.info.path} to label {int(counts.argmax())} (no labels to check)"
        )
    low, high = float(x.min()), float(x.max())
    hint = "--scale"
    if high <= 1.5:
        hint = "--scale none if the model was trained on 0–255 values"
    elif high > 2.0:
        hint = "--scale 1/255 if the model was trained on 0–1 values"
    return (
        f"{finding}; as read, their values span {low:.3g}–{high:.3g}. The data may not be "
        f"what it expects ({hint}; or another label order, or another task): every number "
        "below is measured on it"
    )

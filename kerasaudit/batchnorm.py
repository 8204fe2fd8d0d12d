"""Re-estimating BatchNorm statistics on clean data: a check that a removal is not superficial.

Fine-tuning with unlearning stamps a share of every batch with the trigger, and BatchNorm's
moving statistics follow those mixed batches. On the zoo (README, ``blend_a20_sep``) the real
trigger's ASR fell mostly through those statistics: re-estimating them on the clean images gave
back 2.3 points of accuracy *and* the backdoor (99.96 %). Anyone who later recalibrates the
model on clean data (a routine step) would bring it back. So after a removal, :func:`reestimated`
copies the defended model with its moving statistics recomputed on clean images, and the
caller measures the triggers again on that copy.
"""

from __future__ import annotations

from typing import Any

from kerasaudit.data import Dataset
from kerasaudit.inventory import walk_layers
from kerasaudit.pruning import clone_model

# Re-estimated ASR this much above the defended model's counts as "the backdoor comes back".
COMES_BACK = 0.10


def comes_back(asr_after: float | None, asr_reestimated: float | None) -> bool:
    """The ASR rises by :data:`COMES_BACK` or more once BatchNorm statistics are re-estimated
    (False when either is unknown)."""
    if asr_after is None or asr_reestimated is None:
        return False
    return asr_reestimated - asr_after >= COMES_BACK


def batchnorm_layers(model: Any) -> list[Any]:
    """Every BatchNormalization layer, nested models included."""
    return [
        layer for _, layer, _ in walk_layers(model) if type(layer).__name__ == "BatchNormalization"
    ]


def reestimated(model: Any, dataset: Dataset) -> Any | None:
    """A copy of ``model`` whose BatchNorm moving mean and variance are the average of the
    per-batch statistics over ``dataset`` (training-mode forward passes, as when the model was
    trained); None when it has no BatchNorm layer. ``model`` is never changed."""
    if not batchnorm_layers(model):
        return None
    copy = clone_model(model)
    layers = batchnorm_layers(copy)
    saved = [layer.momentum for layer in layers]
    try:
        for k, (x, _) in enumerate(dataset.batches()):
            for layer in layers:  # moving = cumulative mean of the k + 1 batch statistics
                layer.momentum = k / (k + 1)
            copy(x, training=True)
    finally:
        for layer, momentum in zip(layers, saved, strict=True):
            layer.momentum = momentum
    return copy

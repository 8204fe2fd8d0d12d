"""Models whose image input has no channel axis: ``(None, H, W)``, with a ``Reshape`` (or a
``Conv1D`` over rows) inside.

The stages work on ``(H, W, C)`` images (trigger masks, warps, generators, Grad-CAM), so such a
model is audited through a wrapper that takes ``(H, W, 1)`` and drops the axis before calling
it. Data shaped ``(N, H, W)`` gets the axis when it is opened for the wrapper's input. Layer
paths inside the wrapper carry the model's name as a prefix (``model/conv2d``). A model that a
command writes (``prune -o``, ``defend -o``, ``audit --fix``) is the model inside, with its own
``(H, W)`` input: :func:`without_channel_axis`, which :func:`kerasaudit.saving.save_model`
applies.
"""

from __future__ import annotations

from typing import Any

from kerasaudit import _tf

ADAPTER = "kerasaudit_channel_axis"  # the wrapper's Reshape layer


def lacks_channel_axis(model: Any) -> bool:
    """One input of rank 3 (batch, H, W)."""
    inputs = getattr(model, "inputs", None) or []
    return len(inputs) == 1 and len(inputs[0].shape) == 3


def with_channel_axis(model: Any) -> Any:
    """``model`` itself when its input has a channel axis (or is not an image); otherwise a
    wrapper ``(H, W, 1) → Reshape((H, W)) → model``, sharing ``model``'s layers and weights."""
    if not lacks_channel_axis(model):
        return model
    keras = _tf.keras()
    height, width = tuple(model.inputs[0].shape[1:])
    inputs = keras.Input((height, width, 1), name=f"{ADAPTER}_input")
    squeezed = keras.layers.Reshape((height, width), name=ADAPTER)(inputs)
    return keras.Model(inputs, model(squeezed), name=f"{model.name}_{ADAPTER}")


def without_channel_axis(model: Any) -> Any:
    """The model inside a :func:`with_channel_axis` wrapper (or a clone of one); any other model
    unchanged."""
    layers = getattr(model, "layers", [])
    if len(layers) == 3 and layers[1].name == ADAPTER:
        return layers[2]
    return model

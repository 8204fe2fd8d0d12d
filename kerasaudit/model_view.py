"""The model the stages see: one ``(H, W, C)`` channels-last image input, one score vector out.

The stages work on such images (trigger masks, warps, generators, Grad-CAM) and on one
classifier output. A model a user brings may differ, and is then audited through a wrapper
that shares its layers and weights:

- an input without a channel axis, ``(H, W)`` (a ``Reshape`` or a ``Conv1D`` over rows
  inside): the wrapper takes ``(H, W, 1)`` and drops the axis;
- a channels-first input, ``(C, H, W)`` (layers with ``data_format="channels_first"``): the
  wrapper takes ``(H, W, C)`` and moves the axis;
- a flat input, ``(H·W·C,)``, whose first layer is a ``Reshape`` to an image: the wrapper
  takes that image and flattens it (row-major, as ``x.reshape(len(x), -1)`` does);
- several outputs: the stages see the one classifier output — the only output with two or
  more scores, or the one named by ``--model-output``.

Data shaped as the file's input fits the wrapper too (``(N, H, W)`` gets its axis,
``(N, C, H, W)`` is moved, ``(N, H·W·C)`` is reshaped when it is opened). Layer paths inside the
wrapper carry the model's name as a prefix (``model/conv2d``; bare names resolve). A model a
command writes (``prune -o``, ``defend -o``, ``audit --fix``) is the model inside, with the
file's own input and every output: :func:`file_model`, which
:func:`kerasaudit.saving.save_model` applies.
"""

from __future__ import annotations

import math
from typing import Any

from kerasaudit import _tf
from kerasaudit.errors import BadInputError

ADAPTER = "kerasaudit_input"  # the wrapper's layer that reshapes or moves the input
WRAPPER = "_kerasaudit_view"  # suffix of a wrapper's name
_CHANNEL_COUNTS = (1, 3, 4)


def view(model: Any, output: str | None = None) -> Any:
    """``model`` itself when it already takes ``(H, W, C)`` images and has one output;
    otherwise a wrapper (module docstring). ``output``: the output to audit, by name."""
    model = _one_output(model, output)
    return _image_input(model)


def file_model(model: Any) -> Any:
    """The model inside any :func:`view` wrapper (or a clone of one); any other model
    unchanged."""
    while str(getattr(model, "name", "")).endswith(WRAPPER):
        keras = _tf.keras()
        inner = [layer for layer in model.layers if isinstance(layer, keras.Model)]
        if len(inner) != 1:
            break
        model = inner[0]
    return model


def output_names(model: Any) -> list[str]:
    """The names of ``model``'s outputs in the order of ``model.outputs``: the keys of a dict
    of outputs (flattened in sorted order, as Keras does), else the output layers' names."""
    structure = getattr(model, "output", None)
    if isinstance(structure, dict) and len(structure) == len(model.outputs):
        return [str(key) for key in sorted(structure)]
    return [str(tensor._keras_history[0].name) for tensor in model.outputs]


def _one_output(model: Any, output: str | None) -> Any:
    outputs = list(getattr(model, "outputs", None) or [])
    if len(outputs) <= 1 and output is None:
        return model
    names = output_names(model)
    if output is not None:
        if output not in names:
            raise BadInputError(
                f"--model-output {output!r}: model {model.name!r} has the outputs "
                f"{', '.join(names)}"
            )
        index = names.index(output)
    else:
        scores = [i for i, t in enumerate(outputs) if len(t.shape) == 2 and (t.shape[1] or 0) > 1]
        if len(scores) != 1:
            raise BadInputError(
                f"model {model.name!r} has {len(outputs)} outputs ({', '.join(names)}), "
                f"{len(scores)} of them score vectors; name the classifier output to audit "
                "with --model-output NAME"
            )
        index = scores[0]
    if len(outputs) == 1:
        return model
    keras = _tf.keras()
    inputs = [keras.Input(tuple(t.shape[1:]), dtype=t.dtype) for t in model.inputs]
    called = model(inputs[0] if len(inputs) == 1 else inputs)
    chosen = keras.tree.flatten(called)[index]  # the order of model.outputs
    return keras.Model(inputs, chosen, name=f"{model.name}_{names[index]}{WRAPPER}")


def _image_input(model: Any) -> Any:
    inputs = getattr(model, "inputs", None) or []
    if len(inputs) != 1:
        return model
    shape = tuple(inputs[0].shape[1:])
    adapter = _adapter(model, shape)
    if adapter is None:
        return model
    keras = _tf.keras()
    image_shape, layer = adapter
    wrapped = keras.Input(image_shape, name=f"{ADAPTER}_image")
    return keras.Model(wrapped, model(layer(wrapped)), name=f"{model.name}{WRAPPER}")


def _adapter(model: Any, shape: tuple[int | None, ...]) -> tuple[tuple[int, ...], Any] | None:
    """(the image shape the wrapper takes, the layer that turns it into ``model``'s input)."""
    keras = _tf.keras()
    if len(shape) == 2 and None not in shape:  # (H, W)
        height, width = (int(d or 0) for d in shape)
        return (height, width, 1), keras.layers.Reshape((height, width), name=ADAPTER)
    if len(shape) == 3 and _channels_first(model, shape):  # (C, H, W)
        channels, height, width = (int(d or 0) for d in shape)
        return (height, width, channels), keras.layers.Permute((3, 1, 2), name=ADAPTER)
    if len(shape) == 1 and shape[0] is not None:  # (H·W·C,) reshaped inside
        image = _reshaped_to_image(model, shape[0])
        if image is not None:
            return image, keras.layers.Reshape(shape, name=ADAPTER)
    return None


def _channels_first(model: Any, shape: tuple[int | None, ...]) -> bool:
    channels, height, width = shape
    if channels not in _CHANNEL_COUNTS or width in _CHANNEL_COUNTS or None in (height, width):
        return False
    from kerasaudit.inventory import walk_layers

    return any(
        getattr(layer, "data_format", None) == "channels_first"
        for _, layer, _ in walk_layers(model)
    )


def _reshaped_to_image(model: Any, size: int) -> tuple[int, int, int] | None:
    """The image ``(H, W, C)`` a flat input of ``size`` values is reshaped to by the model's
    first layer, or None."""
    keras = _tf.keras()
    source = model.inputs[0]
    for layer in model.layers:
        if not isinstance(layer, keras.layers.Reshape):
            continue
        try:
            consumes_input = layer.input is source
        except (AttributeError, ValueError):  # a layer used at several places
            consumes_input = False
        if not consumes_input:
            continue
        target = tuple(layer.target_shape)
        image = (*target, 1) if len(target) == 2 else target
        if len(image) == 3 and None not in image and math.prod(image) == size:
            return (int(image[0]), int(image[1]), int(image[2]))
    return None

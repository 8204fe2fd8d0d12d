"""The model the stages see: one ``(H, W, C)`` channels-last float image input, one score
vector out.

The stages work on such images (trigger masks, warps, generators, Grad-CAM) and on one
classifier output. A model a user brings may differ, and is then audited through a *view*: a
copy of the model (same layers, names and weights, one flat graph) behind an adapter:

- an input without a channel axis, ``(H, W)`` (a ``Reshape`` or a ``Conv1D`` over rows
  inside): the view takes ``(H, W, 1)`` and drops the axis;
- a channels-first input, ``(C, H, W)`` (layers with ``data_format="channels_first"``): the
  view takes ``(H, W, C)`` and moves the axis;
- a flat input, ``(H·W·C,)``, whose first layer is a ``Reshape`` to an image: the view takes
  that image and flattens it (row-major, as ``x.reshape(len(x), -1)`` does);
- several outputs: the view has the one classifier output — the only output with two or more
  scores, or the one named by ``--model-output``;
- an integer input (``Input(dtype="uint8")`` before a ``Rescaling``): the view takes float32
  (a trigger search needs gradients, which a cast to integers stops);
- grouped convolutions (``Conv2D(groups=G)``, also inside nested models): the view has a plain
  convolution with the same weights on its block diagonal and zeros elsewhere, kept zero
  through any fine-tune by a constraint (:func:`block_diagonal`). The function is the same;
  TensorFlow's CPU gradient through a grouped convolution is not: 25–190× slower than through
  the plain one (``python benchmarks/bench_grouped.py``), and every trigger search and
  fine-tune takes gradients.

The view is a flat copy, not a wrapper around the model, so every stage that reads a model's
graph (its last layer, the layer before it, which BatchNorm follows a conv) reads it as it
would the file's (before 2026-12-07 the views were wrappers, and the margin signal read
probabilities through them as logits). Layer names are the file's. Data shaped as the file's
input fits the view too (``(N, H, W)`` gets its axis, ``(N, C, H, W)`` is moved,
``(N, H·W·C)`` is reshaped when it is opened). A model a command writes (``prune -o``,
``defend -o``, ``audit --fix``) is the file's model, its input and every output, with the
weights of the view (or of a copy of it, as pruning makes): :func:`file_model`, which
:func:`kerasaudit.saving.save_model` applies.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

from kerasaudit import _tf
from kerasaudit.errors import BadInputError

ADAPTER = "kerasaudit_input"  # the view's layer that reshapes or moves the input
WRAPPER = "_kerasaudit_view"  # in a view's name
_CHANNEL_COUNTS = (1, 3, 4)
_ORIGINALS: dict[str, Any] = {}  # view name → the model it is a view of (in this process)
_COUNTER = itertools.count()


def view(model: Any, output: str | None = None) -> Any:
    """``model`` itself when it takes ``(H, W, C)`` float images and has one output; otherwise
    its view (module docstring). ``output``: the output to audit, by name."""
    index = output_index(model, output)
    inputs = list(getattr(model, "inputs", None) or [])
    if len(inputs) != 1:
        return model
    keras = _tf.keras()
    adapter = _adapter(model, tuple(inputs[0].shape[1:]))
    integer = keras.backend.standardize_dtype(inputs[0].dtype).startswith(("int", "uint"))
    memo: dict[int, bool] = {}
    grouped = _has_grouped(model, memo)
    if index is None and adapter is None and not integer and not grouped:
        return model
    shape = adapter[0] if adapter is not None else tuple(inputs[0].shape[1:])
    dtype = "float32" if integer else inputs[0].dtype
    new_input = keras.Input(shape, dtype=dtype, name=f"{ADAPTER}_image")
    start = adapter[1](new_input) if adapter is not None else new_input
    copies: dict[int, Any] = {}
    weighted: list[tuple[Any, Any, int]] = []  # (layer, copy, groups) whose weights are set below

    def fresh(layer: Any) -> Any:  # one copy per layer, however often the graph calls it
        if id(layer) not in copies:
            if _is_grouped(layer):
                copy = _ungrouped(layer)
                weighted.append((layer, copy, int(layer.groups)))
            elif _has_grouped(layer, memo):  # a nested model: its layers go through `fresh` too
                copy = keras.models.clone_model(layer, clone_function=fresh, recursive=True)
            else:
                copy = layer.__class__.from_config(layer.get_config())
                weighted.append((layer, copy, 1))
            copies[id(layer)] = copy
        return copies[id(layer)]

    if isinstance(model, keras.Sequential):
        out = start
        for layer in model.layers:
            out = fresh(layer)(out)
    else:
        out = model._run_through_graph(start, operation_fn=fresh)
    outs = keras.tree.flatten(out)
    chosen = outs[index] if index is not None else outs[0]
    name = f"{model.name}{WRAPPER}{next(_COUNTER)}"
    flat = keras.Model(new_input, chosen, name=name)
    for layer, copy, groups in weighted:
        weights = layer.get_weights()
        if groups > 1:
            weights[0] = expand_groups(weights[0], groups)
        copy.set_weights(weights)
    _ORIGINALS[name] = model
    return flat


def file_model(model: Any) -> Any:
    """The file's model for a :func:`view` (or a copy of one, as pruning makes): its structure,
    input and outputs, with the view's weights wherever the view has the layer (the original's
    elsewhere, e.g. an output head the view left out); any other model unchanged."""
    original = _ORIGINALS.get(str(getattr(model, "name", "")))
    if original is None:
        return model
    keras = _tf.keras()
    rebuilt = keras.models.clone_model(original)
    rebuilt.set_weights(original.get_weights())
    viewed = {layer.name: layer for layer in model.layers}
    memo: dict[int, bool] = {}
    for layer in rebuilt.layers:
        source = viewed.get(layer.name)
        if source is not None and layer.weights:
            _copy_weights(source, layer, memo)
    return rebuilt


def _copy_weights(source: Any, target: Any, memo: dict[int, bool]) -> None:
    """``source``'s weights into ``target``, the same layer as the file has it: a grouped
    convolution's blocks back from the view's plain one, a nested model layer by layer."""
    if _is_grouped(target) and int(getattr(source, "groups", 1) or 1) == 1:
        kernel, *rest = source.get_weights()
        target.set_weights([contract_groups(kernel, int(target.groups)), *rest])
    elif _has_grouped(target, memo) and hasattr(source, "layers"):
        inner = {layer.name: layer for layer in source.layers}
        for layer in target.layers:
            if layer.weights and layer.name in inner:
                _copy_weights(inner[layer.name], layer, memo)
    else:
        target.set_weights(source.get_weights())


# --- grouped convolutions -------------------------------------------------------------------

_BLOCK_DIAGONAL: Any = None  # the constraint's class, made (and registered) on first use


def _is_grouped(layer: Any) -> bool:
    """A built-in ``Conv1D``/``Conv2D``/``Conv3D`` with ``groups > 1`` and no kernel constraint
    of its own (the view's constraint would replace it); subclasses are left as they are."""
    keras = _tf.keras()
    plain = (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D)
    return (
        type(layer) in plain
        and int(getattr(layer, "groups", 1) or 1) > 1
        and getattr(layer, "kernel_constraint", None) is None
    )


def _has_grouped(layer: Any, memo: dict[int, bool] | None = None) -> bool:
    """``layer`` is, or is a graph model (Functional or Sequential, nested at any depth) that
    holds, a grouped convolution :func:`view` can make plain. ``memo`` (id → answer) spares
    a caller asking of every nested model the walk of its insides again."""
    if memo is not None and id(layer) in memo:
        return memo[id(layer)]
    keras = _tf.keras()
    graph = isinstance(layer, keras.Sequential) or hasattr(layer, "_run_through_graph")
    found = _is_grouped(layer) or bool(
        graph and any(_has_grouped(inner, memo) for inner in layer.layers)
    )
    if memo is not None:
        memo[id(layer)] = found
    return found


def block_mask(shape: tuple[int, ...], groups: int) -> Any:
    """0/1 of a plain kernel ``(k…, in, out)`` that holds ``groups`` groups: group ``j`` maps
    input channels ``j·in/groups…`` to output channels ``j·out/groups…``."""
    import numpy as np

    mask = np.zeros(shape, dtype=np.float32)
    cin, cout = shape[-2] // groups, shape[-1] // groups
    for j in range(groups):
        mask[..., j * cin : (j + 1) * cin, j * cout : (j + 1) * cout] = 1.0
    return mask


def expand_groups(kernel: Any, groups: int) -> Any:
    """A grouped kernel ``(k…, in/groups, out)`` as the plain kernel ``(k…, in, out)`` that
    computes the same convolution (zeros off the block diagonal)."""
    import numpy as np

    tiled = np.tile(kernel, (1,) * (kernel.ndim - 2) + (groups, 1))  # every input group
    return (tiled * block_mask(tiled.shape, groups)).astype(kernel.dtype)


def contract_groups(full: Any, groups: int) -> Any:
    """The inverse of :func:`expand_groups` (what lies off the diagonal is dropped)."""
    import numpy as np

    cin, cout = full.shape[-2] // groups, full.shape[-1] // groups
    blocks = [full[..., j * cin : (j + 1) * cin, j * cout : (j + 1) * cout] for j in range(groups)]
    return np.concatenate(blocks, axis=-1)


def block_diagonal(groups: int) -> Any:
    """A kernel constraint that keeps a plain kernel block diagonal (Keras's optimizers apply
    constraints after every update), registered as ``kerasaudit>BlockDiagonal`` so that copies
    of a view made from its config (pruning, the scan's precision) keep it. A view's own: a
    model a command writes has the file's grouped layers (:func:`file_model`)."""
    global _BLOCK_DIAGONAL
    if _BLOCK_DIAGONAL is None:
        keras = _tf.keras()

        @keras.saving.register_keras_serializable(package="kerasaudit")
        class BlockDiagonal(keras.constraints.Constraint):  # type: ignore[name-defined]
            def __init__(self, groups: int) -> None:
                self.groups = int(groups)

            def __call__(self, w: Any) -> Any:
                mask = block_mask(tuple(int(d) for d in w.shape), self.groups)
                return w * keras.ops.convert_to_tensor(mask, dtype=w.dtype)

            def get_config(self) -> dict[str, Any]:
                return {"groups": self.groups}

        _BLOCK_DIAGONAL = BlockDiagonal
    return _BLOCK_DIAGONAL(groups)


def _block_diagonal_kernels(layer: Any) -> dict[int, tuple[Any, int]]:
    """id(kernel) → (kernel, groups) of the view's plain kernels in ``layer`` (a model: in
    every layer inside) that hold a grouped convolution."""
    from kerasaudit.inventory import walk_layers

    if _BLOCK_DIAGONAL is None:
        return {}
    inside = [inner for _, inner, _ in walk_layers(layer)] if hasattr(layer, "layers") else []
    out = {}
    for inner in [layer, *inside]:
        groups = _view_groups(inner)
        if groups is not None:
            out[id(inner.kernel)] = (inner.kernel, groups)
    return out


def _view_groups(layer: Any) -> int | None:
    """The groups a view's plain copy of a grouped convolution holds (its block-diagonal
    constraint's), or None for any other layer."""
    constraint = getattr(layer, "kernel_constraint", None)
    if _BLOCK_DIAGONAL is not None and isinstance(constraint, _BLOCK_DIAGONAL):
        return int(constraint.groups)
    return None


def parameter_count(layer: Any, trainable_only: bool = False) -> int:
    """How many weights ``layer`` (a model: every layer inside) has, as the file counts them:
    without the zeros a view's plain kernel holds off the block diagonal."""
    weights = layer.trainable_weights if trainable_only else layer.weights
    counted = {id(w) for w in weights}
    total = sum(int(math.prod(int(d) for d in w.shape)) for w in weights)
    for key, (kernel, groups) in _block_diagonal_kernels(layer).items():
        if key in counted:
            size = int(math.prod(int(d) for d in kernel.shape))
            total -= size - size // groups
    return total


def file_groups(layer: Any) -> int:
    """A convolution's ``groups`` as the file has it (a view's plain copy: its constraint's)."""
    groups = _view_groups(layer)
    return groups if groups is not None else int(getattr(layer, "groups", 1) or 1)


def file_name(model: Any) -> str:
    """The name of the file's model a view (or a copy of one) was made of."""
    return str(model.name).split(WRAPPER)[0]


def file_weights(model: Any) -> list[tuple[str, Any]]:
    """(path, value) of every weight of ``model`` as the file holds it: a view's plain kernel
    of a grouped convolution as its groups (so that a fingerprint of the view is the file's)."""
    grouped = _block_diagonal_kernels(model)
    out = []
    for weight in model.weights:
        value = weight.numpy()
        if id(weight) in grouped:
            value = contract_groups(value, grouped[id(weight)][1])
        out.append((str(weight.path), value))
    return out


def _ungrouped(layer: Any) -> Any:
    """The plain convolution a view has for the grouped ``layer`` (weights set by the caller)."""
    config = layer.get_config()
    groups = int(config.get("groups", 1))
    config["groups"] = 1
    config["kernel_constraint"] = block_diagonal(groups)
    return layer.__class__.from_config(config)


def output_names(model: Any) -> list[str]:
    """The names of ``model``'s outputs in the order of ``model.outputs``: the keys of a dict
    of outputs (flattened in sorted order, as Keras does), else the output layers' names."""
    structure = getattr(model, "output", None)
    if isinstance(structure, dict) and len(structure) == len(model.outputs):
        return [str(key) for key in sorted(structure)]
    return [str(tensor._keras_history[0].name) for tensor in model.outputs]


def output_index(model: Any, output: str | None) -> int | None:
    """Which of ``model``'s outputs the view keeps, or None for a single output."""
    outputs = list(getattr(model, "outputs", None) or [])
    if len(outputs) <= 1 and output is None:
        return None
    names = output_names(model)
    if output is not None:
        if output not in names:
            raise BadInputError(
                f"--model-output {output!r}: model {model.name!r} has the outputs "
                f"{', '.join(names)}"
            )
        return None if len(outputs) == 1 else names.index(output)
    scores = [i for i, t in enumerate(outputs) if len(t.shape) == 2 and (t.shape[1] or 0) > 1]
    if len(scores) != 1:
        raise BadInputError(
            f"model {model.name!r} has {len(outputs)} outputs ({', '.join(names)}), "
            f"{len(scores)} of them score vectors; name the classifier output to audit "
            "with --model-output NAME"
        )
    return scores[0]


def _adapter(model: Any, shape: tuple[int | None, ...]) -> tuple[tuple[int, ...], Any] | None:
    """(the image shape the view takes, the layer that turns it into ``model``'s input)."""
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

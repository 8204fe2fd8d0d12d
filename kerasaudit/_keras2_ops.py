"""Keras 2 ``TFOpLambda`` layers that Keras 3 can rebuild as its own layers.

tf.keras 2 records a TensorFlow function applied to a Functional model's tensors (``inputs /
255.0``, ``tf.nn.relu(x)``) as a ``TFOpLambda`` layer naming the function (``math.truediv``),
with its other arguments in the inbound node. Keras 3 has no such layer, and resolving a
function by a name read from the file is not something an auditor should do. The few that
models commonly carry — arithmetic with a number, elementwise activations, a mean or maximum
over the two spatial axes, a reshape that keeps the batch axis, the sum, difference, product,
maximum or minimum of two tensors (``x + shortcut`` in a residual block), a concatenation —
are rewritten here, in the private copy of the config, as the Keras 3 layer that computes the
same thing (``Rescaling``, ``ReLU``, ``Activation``, ``Softmax``, ``LeakyReLU``, global
pooling, ``Reshape``, ``Add``, ``Subtract``, ``Multiply``, ``Maximum``, ``Minimum``,
``Concatenate``); no name from the file is resolved.
Any other ``TFOpLambda`` stays refused.

Pure dictionary work: used by the static checks (before TensorFlow is imported) and by the
loader's repair of Keras 2 configs.
"""

from __future__ import annotations

from typing import Any

# elementwise activations: TF function → the Keras 3 layer (class name, config) computing it
_ACTIVATIONS: dict[str, tuple[str, dict[str, Any]]] = {
    "nn.relu": ("ReLU", {}),
    "nn.relu6": ("ReLU", {"max_value": 6.0}),
    "math.sigmoid": ("Activation", {"activation": "sigmoid"}),
    "nn.sigmoid": ("Activation", {"activation": "sigmoid"}),
    "math.tanh": ("Activation", {"activation": "tanh"}),
    "nn.tanh": ("Activation", {"activation": "tanh"}),
    "nn.silu": ("Activation", {"activation": "silu"}),
    "nn.swish": ("Activation", {"activation": "silu"}),
    "nn.elu": ("Activation", {"activation": "elu"}),
    "nn.softmax": ("Softmax", {"axis": -1}),
}
# arithmetic with a number y: TF function → (scale, offset) of Rescaling as functions of y
_ARITHMETIC = {
    "math.truediv": lambda y: (1.0 / y, 0.0),
    "math.divide": lambda y: (1.0 / y, 0.0),
    "math.multiply": lambda y: (y, 0.0),
    "math.add": lambda y: (1.0, y),
    "__operators__.add": lambda y: (1.0, y),
    "math.subtract": lambda y: (1.0, -y),
}


# an operation on two tensors, ``x ∘ y``: TF function → the Keras 3 merge layer computing it
_BINARY = {
    "__operators__.add": "Add",
    "math.add": "Add",
    "math.subtract": "Subtract",
    "math.multiply": "Multiply",
    "math.maximum": "Maximum",
    "math.minimum": "Minimum",
}
_CONCAT = ("concat", "concat_v2")


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and abs(value) < 1e30


def _pooling(cls: str) -> Any:
    """A reduction over the two spatial axes of an (N, H, W, C) tensor → global pooling."""

    def build(extra: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
        keepdims = extra.get("keepdims", False)
        if extra.get("axis") not in ([1, 2], [2, 1]) or not isinstance(keepdims, bool):
            return None
        if set(extra) - {"axis", "keepdims"}:
            return None
        return cls, {"data_format": "channels_last", "keepdims": keepdims}

    return build


def _reshape(extra: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    shape = extra.get("shape")
    if set(extra) != {"shape"} or not isinstance(shape, list) or len(shape) < 2:
        return None
    batch, rest = shape[0], shape[1:]
    ok = all(isinstance(d, int) and not isinstance(d, bool) and (d > 0 or d == -1) for d in rest)
    if batch not in (-1, None) or not ok or rest.count(-1) > 1:
        return None
    return "Reshape", {"target_shape": rest}


def _leaky_relu(extra: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    alpha = extra.get("alpha", 0.2)
    if set(extra) - {"alpha"} or not _number(alpha):
        return None
    return "LeakyReLU", {"negative_slope": float(alpha)}


# other functions: TF function → builder from the call's keyword arguments
_OTHERS = {
    "math.reduce_mean": _pooling("GlobalAveragePooling2D"),
    "math.reduce_max": _pooling("GlobalMaxPooling2D"),
    "reshape": _reshape,
    "compat.v1.reshape": _reshape,
    "nn.leaky_relu": _leaky_relu,
}


def _node(layer: dict[str, Any]) -> list[Any] | None:
    """The layer's only inbound node, or None when it has none or several."""
    nodes = layer.get("inbound_nodes")
    if not (isinstance(nodes, list) and len(nodes) == 1 and isinstance(nodes[0], list)):
        return None
    return nodes[0]


def _call(layer: dict[str, Any]) -> list[Any] | None:
    """The layer's only call as ``[inbound layer, node, tensor, kwargs]``, or None when it has
    another form. tf.keras writes a TFOpLambda's node as that one list (its first positional
    argument and the keyword arguments), other layers' as a list of such references."""
    ref = _node(layer)
    if ref is not None and len(ref) == 1 and isinstance(ref[0], list):  # [[ref]]: other layers'
        ref = ref[0]
    if ref is None or len(ref) != 4 or not _ref(ref[:3]) or not isinstance(ref[3], dict):
        return None
    return ref


def _ref(value: Any) -> bool:
    """A Keras 2 tensor reference ``[layer name, node index, tensor index]``."""
    return (
        isinstance(value, list)
        and len(value) == 3
        and isinstance(value[0], str)
        and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value[1:])
    )


def _concatenation(layer: dict[str, Any]) -> tuple[list[Any], int] | None:
    """(the tensors joined, the axis) of a ``tf.concat`` call: tf.keras writes its node as one
    reference per tensor, each with the same ``{"axis": a}``."""
    refs = _node(layer)
    if refs is None or len(refs) < 2 or not all(isinstance(r, list) and len(r) == 4 for r in refs):
        return None
    if not all(_ref(r[:3]) and isinstance(r[3], dict) for r in refs):
        return None
    kwargs = [{k: v for k, v in r[3].items() if not (k == "name" and v is None)} for r in refs]
    axis = kwargs[0].get("axis")
    if not isinstance(axis, int) or isinstance(axis, bool) or axis == 0:
        return None
    if any(k != {"axis": axis} for k in kwargs):
        return None
    return [r[:3] for r in refs], axis


def _rebuilt(layer: dict[str, Any]) -> tuple[str, dict[str, Any], list[Any]] | None:
    """(Keras 3 class name, its config, its inbound nodes) for a ``TFOpLambda`` kerasaudit
    rebuilds, else None."""
    config = layer.get("config")
    if layer.get("class_name") != "TFOpLambda" or not isinstance(config, dict):
        return None
    function = config.get("function")
    if not isinstance(function, str):
        return None
    base = {k: config[k] for k in ("name", "trainable", "dtype") if k in config}
    if function in _CONCAT:
        joined = _concatenation(layer)
        if joined is None:
            return None
        refs, axis = joined
        return "Concatenate", {**base, "axis": axis}, [[[*r, {}] for r in refs]]
    call = _call(layer)
    if call is None:
        return None
    inbound = [[[*call[:3], {}]]]
    extra = {k: v for k, v in call[3].items() if not (k == "name" and v is None)}
    if function in _ACTIVATIONS and not extra:
        cls, settings = _ACTIVATIONS[function]
        return cls, {**base, **settings}, inbound
    y = extra.get("y")
    if function in _BINARY and set(extra) == {"y"} and isinstance(y, list) and _ref(y):
        return _BINARY[function], base, [[[*call[:3], {}], [*y, {}]]]
    if function in _ARITHMETIC and set(extra) == {"y"} and isinstance(y, int | float):
        if not _number(y) or y == 0:
            return None
        scale, offset = _ARITHMETIC[function](float(y))
        return "Rescaling", {**base, "scale": scale, "offset": offset}, inbound
    if function in _OTHERS:
        built = _OTHERS[function](extra)
        if built is not None:
            return built[0], {**base, **built[1]}, inbound
    return None


def replacement(layer: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """(Keras 3 class name, its config) computing what the serialized ``TFOpLambda`` ``layer``
    computes, or None when it is not one kerasaudit rebuilds."""
    found = _rebuilt(layer)
    return None if found is None else (found[0], found[1])


def rewrite(layer: dict[str, Any]) -> bool:
    """Replace, in place, a ``TFOpLambda`` that :func:`replacement` rebuilds (its inbound node
    holding the tensors it takes, without the call's other arguments). Returns whether it
    did."""
    found = _rebuilt(layer)
    if found is None:
        return False
    layer["class_name"], layer["config"], layer["inbound_nodes"] = found
    layer.pop("module", None)
    layer.pop("registered_name", None)
    return True

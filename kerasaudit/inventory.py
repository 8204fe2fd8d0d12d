"""Model inventory: every auditable layer (nested models included) and what follows it.

The scan and prune stages rely on this: a conv channel is measured where the next layer sees it
(after the conv's own activation; after BatchNormalization and ReLU when a block has them), and
pruning a channel must also zero the γ/β of the BatchNormalization that follows it.

Layers that a custom layer (or a subclassed model) creates and calls from its own ``call`` are
not in the model's graph. They are listed by the attribute that holds them (``block/conv``),
measured by recording their calls while the custom layer runs (:func:`tapped`), and what
follows each of them inside the custom layer is learnt by running the model once on zeros.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from kerasaudit.loading import LoadedModel
from kerasaudit.model_view import file_groups, file_name, parameter_count

CONV_CLASSES = frozenset(
    {
        "Conv1D",
        "Conv2D",
        "Conv3D",
        "SeparableConv1D",
        "SeparableConv2D",
        "DepthwiseConv1D",
        "DepthwiseConv2D",
        "Conv1DTranspose",
        "Conv2DTranspose",
        "Conv3DTranspose",
    }
)
DENSE_CLASSES = frozenset({"Dense"})
# Layers that may sit between a conv (or its BN) and the tensor the next block sees.
ACTIVATION_CLASSES = frozenset({"ReLU", "Activation", "LeakyReLU", "ELU", "PReLU", "Softmax"})
NORM_CLASSES = frozenset({"BatchNormalization"})


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int | None, ...]
    dtype: str

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}


@dataclass(frozen=True)
class AuditableLayer:
    path: str  # e.g. "features/f_conv2" for a layer inside a nested model
    class_name: str
    channels: int  # output channels (units for Dense)
    kernel_size: tuple[int, ...]
    activation: str  # the layer's own activation ("linear" when a separate layer follows)
    batch_norm: str | None  # path of the BatchNormalization fed only by this layer
    post_activation: str | None  # path of the activation layer after the layer (or its BN)
    measured_after: str  # path of the layer whose output scan measures for this channel set
    output_shape: tuple[int | None, ...]
    params: int
    # path of the custom layer (or subclassed model) whose own code calls this layer: its
    # output is measured by recording the call, and is not a tensor of the model's graph
    custom_parent: str | None = None
    groups: int = 1  # a grouped convolution's groups, as the file has it

    @property
    def convolutional(self) -> bool:
        """A convolution, or a Dense applied at every position of a map or sequence (output
        rank ≥ 3): a 1×1 convolution under another name (ConvNeXt's and Mixer's MLPs)."""
        return self.class_name in CONV_CLASSES or _pointwise(self.class_name, self.output_shape)

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "class_name": self.class_name,
            "channels": self.channels,
            "kernel_size": list(self.kernel_size),
            "activation": self.activation,
            "batch_norm": self.batch_norm,
            "post_activation": self.post_activation,
            "measured_after": self.measured_after,
            "output_shape": list(self.output_shape),
            "params": self.params,
            "custom_parent": self.custom_parent,
            "groups": self.groups,
        }


@dataclass(frozen=True)
class ModelInventory:
    path: str
    format: str
    keras_version: str | None
    backend: str | None
    name: str
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    params_total: int
    params_trainable: int
    layer_count: int  # every layer, nested ones included
    auditable: tuple[AuditableLayer, ...]
    loaded_unsafely: bool
    safety_findings: tuple[str, ...]  # reported (not enforced) when loaded with --unsafe
    # in the training configuration, which is never loaded (a custom loss, say): reported only
    not_loaded: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "format": self.format,
            "keras_version": self.keras_version,
            "backend": self.backend,
            "name": self.name,
            "inputs": [t.to_dict() for t in self.inputs],
            "outputs": [t.to_dict() for t in self.outputs],
            "params_total": self.params_total,
            "params_trainable": self.params_trainable,
            "layer_count": self.layer_count,
            "auditable_layers": [layer.to_dict() for layer in self.auditable],
            "loaded_unsafely": self.loaded_unsafely,
            "safety_findings": list(self.safety_findings),
            "not_loaded": list(self.not_loaded),
        }


# A convolution that a custom layer computes itself (keras.ops.conv, tf.nn.conv2d on its own
# weights) is not a conv layer: nothing to measure or prune channel by channel.
NO_CONV_HINT = (
    "; a convolution a custom layer computes itself (keras.ops, tf.nn) is not a conv "
    "layer, but `audit` and `defend` still search the whole model for triggers"
)


def walk_layers(model: Any, prefix: str = "") -> Iterator[tuple[str, Any, Any]]:
    """Yield (path, layer, parent) for every layer, descending into nested models and into the
    layers a custom layer holds (named by attribute: ``block/conv``)."""
    for layer in model.layers:
        path = f"{prefix}{layer.name}"
        yield path, layer, model
        yield from descendants(layer, f"{path}/")


def descendants(layer: Any, prefix: str) -> Iterator[tuple[str, Any, Any]]:
    """(path, layer, parent) of every layer inside ``layer``: a nested Sequential or Functional
    model's layers by name, those of a custom layer or subclassed model by attribute (their
    layer names are generated anew each time such a model is built); nothing for a built-in
    layer."""
    keras = _keras()
    if not _opaque(layer):
        if isinstance(layer, keras.Model):  # a Sequential or Functional model: its graph's names
            yield from walk_layers(layer, prefix)
        return
    for name, sub in _sublayers(layer):
        path = f"{prefix}{name}"
        yield path, sub, layer
        yield from descendants(sub, f"{path}/")


def is_custom(layer: Any) -> bool:
    """A layer of the user's own class (not Keras's) that holds other layers."""
    keras = _keras()
    module = type(layer).__module__
    return (
        not isinstance(layer, keras.Model)
        and module != "keras"
        and not module.startswith("keras.")
        and bool(getattr(layer, "_layers", None))
    )


def graph_ancestor(model: Any, path: str) -> str:
    """The path of the outermost custom layer (or subclassed model) that ``path`` lies inside:
    the layer whose output in the model's graph carries it (``path`` itself when none)."""
    parts = path.split("/")
    for end in range(1, len(parts)):
        prefix = "/".join(parts[:end])
        if _opaque(find_layer(model, prefix)):
            return prefix
    return path


def _opaque(layer: Any) -> bool:
    """A layer whose inner layers run from its own ``call``, outside the model's graph: a
    custom layer, or a subclassed model."""
    keras = _keras()
    if isinstance(layer, keras.Sequential):
        return type(layer).call is not keras.Sequential.call
    if isinstance(layer, keras.Model):
        from keras.src.models.functional import Functional

        return not (isinstance(layer, Functional) and type(layer).call is Functional.call)
    return is_custom(layer)


def _sublayers(layer: Any) -> list[tuple[str, Any]]:
    """(attribute name, layer) of each layer a custom layer tracks, in the order it made them
    (``convs_0`` for the first of a list ``convs``; the layer's own name when no attribute
    holds it). Attribute names, unlike layer names, do not depend on how many layers the
    process created before the model was loaded."""
    keras = _keras()
    names: dict[int, str] = {}
    for attr, value in vars(layer).items():
        if attr == "_layers":
            continue
        if isinstance(value, keras.layers.Layer):
            names.setdefault(id(value), attr)
        elif isinstance(value, list | tuple):
            for i, item in enumerate(value):
                if isinstance(item, keras.layers.Layer):
                    names.setdefault(id(item), f"{attr}_{i}")
    return [(names.get(id(sub), sub.name), sub) for sub in layer._layers]


@contextlib.contextmanager
def patched_calls(layers: dict[str, Any], wrap: Callable[[str, Any], Any]) -> Iterator[None]:
    """While inside, each layer of ``layers`` (path → layer) runs ``wrap(path, its call)``
    instead of its ``call``; the layers are restored on leaving, last patched first, so a layer
    listed twice gets its own call back."""
    saved: list[tuple[Any, bool, Any]] = []
    try:
        for path, layer in layers.items():
            own = vars(layer)
            saved.append((layer, "call" in own, own.get("call")))
            layer.call = wrap(path, layer.call)
        yield
    finally:
        for layer, had, previous in reversed(saved):
            if had:
                layer.call = previous
            else:
                del layer.call


def tapped(
    layers: dict[str, Any], on_call: Callable[[str, tuple[Any, ...], Any], None]
) -> contextlib.AbstractContextManager[None]:
    """While inside, every call of ``layers`` (path → layer) also reports
    ``on_call(path, args, output)``: how the outputs of layers that a custom layer calls from
    its own code are measured. The layers are restored on leaving."""

    def wrap(path: str, call: Any) -> Any:
        def recording(*args: Any, **kw: Any) -> Any:
            output = call(*args, **kw)
            on_call(path, args, output)
            return output

        return recording

    return patched_calls(layers, wrap)


def _located(where: str, reason: str) -> str:
    """``where: reason``, or the reason alone when it already starts with where it is."""
    return reason if reason.startswith(where) else f"{where}: {reason}"


def matching_paths(paths: Sequence[str], name: str) -> list[str]:
    """The paths named ``name``: the path itself (``features/conv1``), else those ending in
    the bare name (``conv1``; several when nested models reuse it)."""
    return [p for p in paths if p == name] or [p for p in paths if p.rsplit("/", 1)[-1] == name]


def matching(layers: Sequence[AuditableLayer], name: str) -> list[AuditableLayer]:
    """The layers named ``name``, by path or bare name (:func:`matching_paths`)."""
    chosen = set(matching_paths([a.path for a in layers], name))
    return [a for a in layers if a.path in chosen]


def named_layer(available: dict[str, AuditableLayer], name: str) -> AuditableLayer:
    """The layer of ``available`` (path → layer) named by its path or by a unique bare name
    (``conv1`` for ``features/conv1``); ``BadInputError`` otherwise, listing the conv layers."""
    from kerasaudit.errors import BadInputError

    matches = matching(list(available.values()), name)
    if len(matches) != 1:
        convs = ", ".join(p for p, i in available.items() if i.convolutional)
        problem = "ambiguous layer" if matches else "unknown layer"
        raise BadInputError(f"{problem} {name!r}; auditable layers: {convs}")
    return matches[0]


def find_layer(model: Any, path: str) -> Any:
    for layer_path, layer, _ in walk_layers(model):
        if layer_path == path:
            return layer
    return None


def _keras() -> Any:
    from kerasaudit import _tf

    return _tf.keras()


def _consumers(model: Any) -> dict[int, list[Any]]:
    """Map id(layer) → layers of the same model that take its output as input."""
    keras = _keras()
    consumers: dict[int, list[Any]] = {}
    if isinstance(model, keras.Sequential):
        layers = model.layers
        for current, following in itertools.pairwise(layers):
            consumers.setdefault(id(current), []).append(following)
        return consumers
    members = {id(layer) for layer in model.layers}
    for layer in model.layers:
        for node in getattr(layer, "_inbound_nodes", []):
            for parent in getattr(node, "parent_nodes", []):
                producer = parent.operation
                if id(producer) in members and producer is not layer:
                    bucket = consumers.setdefault(id(producer), [])
                    if layer not in bucket:
                        bucket.append(layer)
    return consumers


def _activation_name(layer: Any) -> str:
    activation = getattr(layer, "activation", None)
    if activation is None:
        return "linear"
    return str(getattr(activation, "__name__", activation))


def _shape(value: Any) -> tuple[int | None, ...]:
    try:
        return tuple(None if d is None else int(d) for d in value)
    except TypeError:
        return ()


def _output_shape(layer: Any) -> tuple[int | None, ...]:
    try:
        return _shape(layer.output.shape)
    except (AttributeError, ValueError):
        return ()


def _channels(layer: Any, class_name: str, shape: tuple[int | None, ...]) -> int:
    if class_name in DENSE_CLASSES:
        return int(layer.units)
    if class_name.startswith("DepthwiseConv"):
        if shape and shape[-1] is not None:
            return int(shape[-1])
        kernel = layer.kernel.shape  # (k..., in, multiplier)
        return int(kernel[-2]) * int(kernel[-1])
    return int(layer.filters)


def _pointwise(class_name: str, shape: tuple[int | None, ...]) -> bool:
    """A Dense layer whose output keeps positions: ``(N, H, W, units)``, ``(N, T, units)``
    (not ``(N, 1, 1, units)``: one position is a plain Dense, e.g. a head after pooling)."""
    positions = shape[1:-1]
    return class_name in DENSE_CLASSES and bool(positions) and any(d != 1 for d in positions)


def auditable_layers(model: Any, *, include_dense: bool = False) -> list[AuditableLayer]:
    """The convolutional layers (:attr:`AuditableLayer.convolutional`: pointwise Dense layers
    too), and with ``include_dense`` every other Dense layer as well."""
    classes = CONV_CLASSES | DENSE_CLASSES
    result: list[AuditableLayer] = []
    walked = list(walk_layers(model))
    paths: dict[int, str] = {}
    for path, layer, _ in walked:
        paths.setdefault(id(layer), path)
    consumer_maps: dict[int, dict[int, list[Any]]] = {}
    inner: _InnerCalls | None = None
    for path, layer, parent in walked:
        cls = type(layer).__name__
        if cls not in classes:
            continue
        custom_parent = _opaque(parent) and parent is not model
        if custom_parent and inner is None:
            inner = _inner_calls(model, [p for _, _, p in walked if _opaque(p)])
        shape = _output_shape(layer)
        if not shape and inner is not None:
            shape = inner.shapes.get(id(layer), ())
        if cls in DENSE_CLASSES and not include_dense and not _pointwise(cls, shape):
            continue  # before the consumer maps: a plain Dense needs none of them
        if id(parent) not in consumer_maps:
            consumer_maps[id(parent)] = (
                inner.consumers.get(id(parent), {})
                if inner is not None and custom_parent
                else _consumers(parent)
            )
        consumers = consumer_maps[id(parent)]
        bn = post = None
        last = layer
        following = consumers.get(id(last), [])
        if len(following) == 1 and type(following[0]).__name__ in NORM_CLASSES:
            bn = following[0]
            last = bn
            following = consumers.get(id(last), [])
        if len(following) == 1 and type(following[0]).__name__ in ACTIVATION_CLASSES:
            post = following[0]
            last = post
        result.append(
            AuditableLayer(
                path=path,
                class_name=cls,
                channels=_channels(layer, cls, shape),
                kernel_size=tuple(int(k) for k in getattr(layer, "kernel_size", ()) or ()),
                activation=_activation_name(layer),
                batch_norm=paths[id(bn)] if bn is not None else None,
                post_activation=paths[id(post)] if post is not None else None,
                measured_after=paths[id(last)],
                output_shape=shape,
                params=parameter_count(layer),
                custom_parent=path.rsplit("/", 1)[0] if custom_parent else None,
                groups=file_groups(layer),
            )
        )
    return result


@dataclass
class _InnerCalls:
    """What one run of the model on zeros showed of the layers custom layers call: for each
    custom layer (by id), which of its layers takes which one's output; and their output
    shapes (batch axis None)."""

    consumers: dict[int, dict[int, list[Any]]]
    shapes: dict[int, tuple[int | None, ...]]


def _inner_calls(model: Any, parents: list[Any]) -> _InnerCalls:
    """Run ``model`` once on zeros (unknown sizes taken as 32) with every layer of the custom
    ``parents`` tapped; a layer consumes another of the same parent when it is called on that
    one's output tensor itself. Empty when the model cannot be run so."""
    import numpy as np

    children: dict[str, tuple[Any, Any]] = {}
    for parent in dict.fromkeys(parents):
        for name, sub in _sublayers(parent):
            children[f"{id(parent)}/{name}"] = (sub, parent)
    calls: list[tuple[Any, Any, Any, Any]] = []  # (layer, parent, first input, output)

    def record(key: str, args: tuple[Any, ...], output: Any) -> None:
        layer, parent = children[key]
        calls.append((layer, parent, args[0] if args else None, output))

    zeros = [
        np.zeros((1, *[d or 32 for d in tuple(t.shape)[1:]]), dtype=str(t.dtype))
        for t in model.inputs
    ]
    try:
        with tapped({k: layer for k, (layer, _) in children.items()}, record):
            model(zeros[0] if len(zeros) == 1 else zeros, training=False)
    except Exception:  # a model that cannot run on zeros: nothing learnt, still auditable
        return _InnerCalls({}, {})
    consumers: dict[int, dict[int, list[Any]]] = {}
    shapes: dict[int, tuple[int | None, ...]] = {}
    for layer, parent, given, output in calls:
        shapes.setdefault(id(layer), (None, *_shape(getattr(output, "shape", ()))[1:]))
        for producer, owner, _, produced in calls:
            if owner is parent and produced is given and producer is not layer:
                bucket = consumers.setdefault(id(parent), {}).setdefault(id(producer), [])
                if layer not in bucket:
                    bucket.append(layer)
    return _InnerCalls(consumers, shapes)


def conv_layers(model: Any) -> list[AuditableLayer]:
    """The convolutional layers among :func:`auditable_layers` (none when the model's
    convolutions are computed by a custom layer's own code)."""
    return [a for a in auditable_layers(model) if a.convolutional]


def _tensor_infos(tensors: Any, names: list[str]) -> tuple[TensorInfo, ...]:
    items = tensors if isinstance(tensors, list | tuple) else [tensors]
    infos = []
    for i, tensor in enumerate(items):
        name = names[i] if i < len(names) else getattr(tensor, "name", f"tensor_{i}")
        infos.append(TensorInfo(str(name), _shape(tensor.shape), str(tensor.dtype)))
    return tuple(infos)


def build_inventory(loaded: LoadedModel, *, include_dense: bool = False) -> ModelInventory:
    model = loaded.model
    input_names = list(getattr(model, "input_names", []) or [])
    output_names = list(getattr(model, "output_names", []) or [])
    trainable = parameter_count(model, trainable_only=True)
    return ModelInventory(
        path=str(loaded.path),
        format=str(loaded.format),
        keras_version=loaded.keras_version,
        backend=loaded.backend,
        name=file_name(model),
        inputs=_tensor_infos(model.inputs, input_names),
        outputs=_tensor_infos(model.outputs, output_names),
        params_total=parameter_count(model),
        params_trainable=trainable,
        layer_count=sum(1 for _ in walk_layers(model)),
        auditable=tuple(auditable_layers(model, include_dense=include_dense)),
        loaded_unsafely=loaded.unsafe,
        safety_findings=tuple(f"{f.where}: {f.reason}" for f in loaded.safety.findings),
        not_loaded=tuple(_located(f.where, f.reason) for f in loaded.safety.ignored),
    )
